"""The peers' ways of doing our job, shared by the benchmarks (and run as a script: the
one-core Polars worker).

Polars' thread pool is sized once, from POLARS_MAX_THREADS, when polars is imported, so
Polars on one core needs its own process: [`PolarsOneCore`] keeps one running that
times `polars_ndjson` on the same bytes whenever asked."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import polars as pl

INT_KEYS = {"response_code", "bytes_received", "bytes_sent", "duration"}
ISTIO_JSON_KEYS = [
    "start_time", "route_name", "method", "path", "protocol", "response_code", "response_flags",
    "response_code_details", "connection_termination_details", "bytes_received", "bytes_sent",
    "duration", "upstream_service_time", "x_forwarded_for", "user_agent", "request_id", "authority",
    "upstream_host", "upstream_cluster", "upstream_local_address", "downstream_local_address",
    "downstream_remote_address", "requested_server_name", "upstream_transport_failure_reason",
]  # fmt: skip
# The full schema, as a Polars user would give it (inference fails on columns that are
# null for the first rows).
ISTIO_JSON_SCHEMA = {k: (pl.Int64 if k in INT_KEYS else pl.String) for k in ISTIO_JSON_KEYS}


def polars_ndjson(data: bytes) -> pl.DataFrame:
    """The Polars way: read_ndjson, then group by cluster with success rate and quantiles."""
    df = pl.read_ndjson(io.BytesIO(data), schema=ISTIO_JSON_SCHEMA)
    return df.group_by("upstream_cluster").agg(
        pl.len().alias("requests"),
        (pl.col("response_code") < 500).mean().alias("success_rate"),
        pl.col("duration").quantile(0.5).alias("p50"),
        pl.col("duration").quantile(0.9).alias("p90"),
        pl.col("duration").quantile(0.99).alias("p99"),
    )


class PolarsOneCore:
    """A worker process running `polars_ndjson` with POLARS_MAX_THREADS=1 on `data`;
    [`run`](PolarsOneCore.run) times one call inside the worker (the pipe is not timed)."""

    def __init__(self, data: bytes) -> None:
        self._file = tempfile.NamedTemporaryFile(prefix="bench-polars-", suffix=".ndjson")  # noqa: SIM115
        self._file.write(data)
        self._file.flush()
        env = {**os.environ, "POLARS_MAX_THREADS": "1"}
        self._proc = subprocess.Popen(
            [sys.executable, str(Path(__file__)), self._file.name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )

    def run(self) -> tuple[float, int]:
        """One timed call in the worker: (seconds, requests counted)."""
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write("run\n")
        self._proc.stdin.flush()
        reply = self._proc.stdout.readline().split()
        if len(reply) != 2:
            raise RuntimeError(f"one-core Polars worker exited with {self._proc.wait()}")
        return float(reply[0]), int(reply[1])

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        self._proc.wait(timeout=30)
        self._file.close()

    def __enter__(self) -> PolarsOneCore:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _worker(path: str) -> None:
    """Serve `run` requests from stdin until it closes."""
    if pl.thread_pool_size() != 1:
        raise SystemExit(f"Polars has {pl.thread_pool_size()} threads, not 1")
    data = Path(path).read_bytes()
    for _ in sys.stdin:
        start = time.perf_counter()
        out = polars_ndjson(data)
        elapsed = time.perf_counter() - start
        print(elapsed, int(out["requests"].sum()), flush=True)


if __name__ == "__main__":
    _worker(sys.argv[1])
