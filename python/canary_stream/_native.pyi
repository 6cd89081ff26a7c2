"""Type stubs for the Rust extension (canary_stream._native). See rust/src/python.rs."""

from collections.abc import Mapping
from typing import Any

from typing_extensions import Buffer

FLAG_NAMES: list[str]
FORMATS: list[str]

class CorePanic(RuntimeError): ...

class Pipeline:
    def __init__(self, config: Mapping[str, Any] | None = None) -> None: ...
    def feed(
        self,
        data: Buffer,
        *,
        pod: str = "",
        namespace: str = "",
        target: str = "",
        version: str = "",
        now_ms: int | None = None,
    ) -> tuple[int, int]: ...
    def feed_als(self, data: bytes, stream: AlsStream, *, now_ms: int | None = None) -> tuple[int, int]: ...
    def finish(
        self,
        *,
        pod: str = "",
        namespace: str = "",
        target: str = "",
        version: str = "",
        now_ms: int | None = None,
    ) -> tuple[int, int]: ...
    # One dict per (target, version): the fields of KeySnapshot (rust/src/aggregate.rs),
    # with "flags" {name: count}, "status_codes" {code: count} (200 included, exact) and
    # "status_codes_overflow" (requests whose code is not listed).
    def snapshot(
        self,
        window_ms: int | None = None,
        *,
        end_ms: int | None = None,
        target: str | None = None,
        series: bool = False,
    ) -> list[dict[str, Any]]: ...
    def totals(self) -> dict[str, Any]: ...
    @property
    def format(self) -> str | None: ...
    @property
    def watermark_ms(self) -> int | None: ...
    def set_host(self, host: str, version: str) -> None: ...
    def remove_host(self, host: str) -> bool: ...
    def replace_hosts(self, hosts: Mapping[str, str]) -> None: ...
    def set_thresholds(self, target: str, thresholds_ms: list[float]) -> None: ...
    def evict_idle(self, now_ms: int) -> int: ...
    def memory(self) -> dict[str, Any]: ...
    def ingest_arrow(
        self, data: Any, mapping: Mapping[str, Any] | None = None, now_ms: int | None = None
    ) -> dict[str, Any]: ...

class AlsStream:
    def __init__(self) -> None: ...
    def identity(self) -> dict[str, str] | None: ...
    @property
    def messages(self) -> int: ...
    @property
    def entries(self) -> int: ...

class KafkaLines:
    """Lines decoded by KafkaFetcher (one (target, version) group of a partition fetch): a
    read-only bytes-like object (buffer protocol), read in place by Pipeline.feed."""

    def __len__(self) -> int: ...
    def __buffer__(self, flags: int, /) -> memoryview: ...

# (topic, partition, fetch_offset, error_code, next_offset, high_watermark, log_start_offset,
#  records, value_bytes, [(target, version, lines, records)], {skip reason: count}, partial_tail)
FetchedPartition = tuple[
    str, int, int, int, int, int, int, int, int, list[tuple[str, str, KafkaLines, int]], dict[str, int], bool
]

class KafkaFetcher:
    def __init__(
        self,
        *,
        client_id: str = "canary-stream",
        max_wait_ms: int = 100,
        max_bytes: int = 33554432,
        partition_max_bytes: int = 4194304,
        max_records: int = 50000,
        connect_timeout_ms: int = 5000,
        request_timeout_ms: int = 30000,
        check_crcs: bool = True,
        max_record_bytes: int = 4194304,
        target_header: str = "target",
        version_header: str = "version",
        key_attribution: bool = True,
        envelope_key: str | None = None,
        pipeline: bool = False,
    ) -> None: ...
    @property
    def pipelined(self) -> int: ...
    @property
    def discarded(self) -> int: ...
    @property
    def pooled_buffers(self) -> int: ...
    def fetch(
        self, nodes: list[tuple[str, int, list[tuple[str, int, int]]]]
    ) -> tuple[list[FetchedPartition], list[tuple[str, int, str]]]: ...
    def close(self) -> None: ...

def detect_format(sample: bytes) -> str | None: ...
def parse_lines(
    data: bytes, format: str, mapping: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]: ...
def reason_names() -> list[tuple[str, bool]]: ...
def generate(config: Mapping[str, Any]) -> bytes: ...
def generate_with_truth(config: Mapping[str, Any]) -> tuple[bytes, dict[str, list[Any]]]: ...
def _panic_for_test() -> None: ...
