"""A load generator for the ALS benchmark: streams pre-encoded StreamAccessLogsMessages like Envoy sidecars,
one gRPC stream per file, all streams at once, from its own process (so the server's GIL is the server's).

    python benches/als_client.py HOST:PORT stream0.bin [stream1.bin ...]

Each file holds gRPC-framed messages (flag byte, big-endian u32 length, message); the first message of a
stream carries its identifier. Exits 0 when every stream is answered.
"""

from __future__ import annotations

import sys
import threading
from pathlib import Path

import grpc

METHOD = "/envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs"


def frames(data: bytes) -> list[bytes]:
    out = []
    i = 0
    while i < len(data):
        n = int.from_bytes(data[i + 1 : i + 5], "big")
        out.append(data[i + 5 : i + 5 + n])
        i += 5 + n
    return out


def main(target: str, files: list[str]) -> int:
    streams = [frames(Path(f).read_bytes()) for f in files]
    errors: list[BaseException] = []

    def send(messages: list[bytes]) -> None:
        try:
            with grpc.insecure_channel(target) as channel:
                call = channel.stream_unary(METHOD, request_serializer=None, response_deserializer=None)
                call(iter(messages), timeout=600)
        except BaseException as exc:  # reported by the exit code
            errors.append(exc)

    threads = [threading.Thread(target=send, args=(m,)) for m in streams]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for e in errors:
        print(f"als_client: {e!r}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1], sys.argv[2:]))
