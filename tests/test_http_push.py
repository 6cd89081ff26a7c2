"""HTTP push source against its real server on 127.0.0.1 (httpx client): NDJSON, gzip, Fluent Bit
and Vector envelopes, limits and clear 4xx, backpressure (429 + Retry-After), nothing else lost."""

from __future__ import annotations

import asyncio
import gzip
import json
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import httpx
import pytest

from canary_stream import Aggregator, AggregatorConfig, generate
from canary_stream.core import Totals, Windowing
from canary_stream.sources.base import IngestQueue, fold_forever
from canary_stream.sources.http_push import HttpPushConfig, HttpPushSource

NDJSON = {"content-type": "application/x-ndjson"}
# The same generated lines are sent more than once: keep replays from counting as late.
REPLAYS = AggregatorConfig(windowing=Windowing(ring_secs=3600, allowed_lateness_ms=3_000_000))


@dataclass
class Server:
    source: HttpPushSource
    aggregator: Aggregator
    queue: IngestQueue
    client: httpx.AsyncClient
    fold: asyncio.Task[None] | None

    def start_folding(self) -> None:
        if self.fold is None:
            self.fold = asyncio.create_task(fold_forever(self.queue, self.aggregator))


@asynccontextmanager
async def serve(
    *, fold: bool = True, queue_bytes: int = 64 << 20, agg: AggregatorConfig | None = None, **cfg: object
) -> AsyncIterator[Server]:
    aggregator = Aggregator(agg or REPLAYS)
    queue = IngestQueue(max_bytes=queue_bytes)
    source = HttpPushSource(HttpPushConfig(port=0, **cfg))  # type: ignore[arg-type]
    run = asyncio.create_task(source.run(queue))
    await asyncio.wait_for(source.ready.wait(), 10)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{source.port}", timeout=30) as client:
        server = Server(source, aggregator, queue, client, None)
        if fold:
            server.start_folding()
        try:
            yield server
        finally:
            source.stop()
            await asyncio.wait_for(run, 30)
            if server.fold is not None:
                await asyncio.wait_for(queue.join(), 30)
                server.fold.cancel()


def reference(data: bytes, config: AggregatorConfig | None = None) -> Totals:
    agg = Aggregator(config or AggregatorConfig())
    agg.feed(data)
    agg.finish()
    return agg.totals()


def lines_of(data: bytes) -> Iterator[str]:
    for line in data.decode().splitlines():
        if line:
            yield line


async def test_ndjson_lines_are_folded_before_the_answer() -> None:
    data = generate("istio-json", lines=2000, seed=1)
    async with serve() as s:
        r = await s.client.post("/ingest", content=data, headers=NDJSON)
        assert r.status_code == 204
        # answered after the fold: the events are in the aggregator now
        assert s.aggregator.totals().accepted == reference(data).accepted == 2000
        assert s.source.stats.events == 2000 and s.source.stats.bytes == len(data)
        for ctype in ("application/json", "text/plain; charset=utf-8", "application/x-ndjson; charset=utf-8"):
            r = await s.client.post("/ingest", content=data, headers={"content-type": ctype})
            assert r.status_code == 204, r.text
        assert s.aggregator.totals().accepted == 4 * 2000
        stats = (await s.client.get("/stats")).json()
        assert stats["events"] == 8000 and stats["accepted"] == 4


async def test_text_lines_without_final_newline_and_other_formats() -> None:
    text = generate("istio-text", lines=500, seed=2)
    async with serve() as s:
        r = await s.client.post("/ingest", content=text.rstrip(b"\n"), headers={"content-type": "text/plain"})
        assert r.status_code == 204
        assert s.aggregator.totals().accepted == reference(text).accepted == 500


async def test_gzip_deflate_and_concatenated_members() -> None:
    data = generate("istio-json", lines=3000, seed=3)
    half = len(data) // 2
    cut = data.index(b"\n", half) + 1
    async with serve() as s:
        gz = {**NDJSON, "content-encoding": "gzip"}
        assert (await s.client.post("/ingest", content=gzip.compress(data), headers=gz)).status_code == 204
        multi = gzip.compress(data[:cut]) + gzip.compress(data[cut:])
        assert (await s.client.post("/ingest", content=multi, headers=gz)).status_code == 204
        zl = {**NDJSON, "content-encoding": "deflate"}
        assert (await s.client.post("/ingest", content=zlib.compress(data), headers=zl)).status_code == 204
        assert s.aggregator.totals().accepted == 3 * 3000


async def test_fluent_bit_json_lines_envelope() -> None:
    """Fluent Bit `format json_lines`: the date key first, the line under `log`."""
    data = generate("istio-text", lines=1000, seed=4)
    body = "".join(
        json.dumps({"date": 1764133567.123 + i, "log": line, "stream": "stdout"}) + "\n"
        for i, line in enumerate(lines_of(data))
    ).encode()
    async with serve(envelope_key="log") as s:
        gz = {"content-type": "application/json", "content-encoding": "gzip"}
        r = await s.client.post("/ingest", content=gzip.compress(body), headers=gz)
        assert r.status_code == 204
        assert s.aggregator.totals().accepted == 1000
        assert s.aggregator.totals().malformed_total == 0
        # spaced JSON, raw lines without the envelope, and the envelope's first line, mixed
        more = generate("istio-text", lines=300, seed=44)
        mixed = "".join(
            (json.dumps({"date": 1.0, "log": line}) if i % 3 == 0 else line) + "\n"
            for i, line in enumerate(lines_of(more))
        ).encode()
        assert mixed.startswith(b'{"date": 1.0, "log": "')
        assert (await s.client.post("/ingest", content=mixed, headers=NDJSON)).status_code == 204
        assert s.aggregator.totals().accepted == 1300


async def test_vector_message_envelope_ndjson_and_json_array() -> None:
    data = generate("istio-json", lines=800, seed=5)
    records = [
        {"message": line, "timestamp": "2026-11-26T05:06:07Z", "host": "n1"} for line in lines_of(data)
    ]
    ndjson = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode()
    array = json.dumps(records).encode()  # Vector `codec = "json"` default framing / Fluent Bit `format json`
    async with serve(envelope_key="message") as s:
        assert (await s.client.post("/ingest", content=ndjson, headers=NDJSON)).status_code == 204
        r = await s.client.post("/ingest", content=array, headers={"content-type": "application/json"})
        assert r.status_code == 204
        assert s.aggregator.totals().accepted == 1600


async def test_json_array_of_access_log_objects() -> None:
    data = generate("istio-json", lines=300, seed=6)
    array = json.dumps([json.loads(line) for line in lines_of(data)]).encode()
    async with serve() as s:
        r = await s.client.post("/ingest", content=array, headers={"content-type": "application/json"})
        assert r.status_code == 204
        assert s.aggregator.totals().accepted == 300


async def test_explicit_attribution_from_the_path() -> None:
    lines = b"".join(
        json.dumps(
            {"status": 200 if i % 10 else 503, "duration_ms": 5, "timestamp": 1764133567000 + i}
        ).encode()
        + b"\n"
        for i in range(100)
    )
    async with serve(agg=AggregatorConfig(format="ndjson")) as s:
        r = await s.client.post("/ingest/reviews/canary", content=lines, headers=NDJSON)
        assert r.status_code == 204
        (stats,) = s.aggregator.snapshot(None)
        assert (stats.target, stats.version, stats.requests, stats.failures) == ("reviews", "canary", 100, 10)


async def test_oversized_bodies_get_413_with_the_reason() -> None:
    async with serve(max_body_bytes=10_000, max_decoded_bytes=100_000) as s:
        r = await s.client.post("/ingest", content=b"x" * 10_001, headers=NDJSON)
        assert r.status_code == 413 and "limit of 10000" in r.text

        async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted while reading
            for _ in range(20):
                yield b"y" * 1000

        r = await s.client.post("/ingest", content=chunked(), headers=NDJSON)
        assert r.status_code == 413 and "exceeds the limit" in r.text
        bomb = gzip.compress(b"\n" * 10_000_000)  # ~10 kB that decompress to 10 MB
        assert len(bomb) < 10_000
        r = await s.client.post("/ingest", content=bomb, headers={**NDJSON, "content-encoding": "gzip"})
        assert r.status_code == 413 and "decompresses to more than 100000" in r.text
        assert s.source.rejected == {"body_too_large": 2, "decoded_too_large": 1}
        assert s.source.stats.malformed == {"http_body_too_large": 2, "http_decoded_too_large": 1}


async def test_bad_gzip_and_bad_json_get_400() -> None:
    data = generate("istio-json", lines=100, seed=7)
    async with serve() as s:
        gz = {**NDJSON, "content-encoding": "gzip"}
        r = await s.client.post("/ingest", content=b"not gzip at all", headers=gz)
        assert r.status_code == 400 and "invalid gzip body" in r.text
        r = await s.client.post("/ingest", content=gzip.compress(data)[:-20], headers=gz)
        assert r.status_code == 400 and "truncated gzip body" in r.text
        r = await s.client.post(
            "/ingest", content=b'[{"a": 1},', headers={"content-type": "application/json"}
        )
        assert r.status_code == 400 and "invalid JSON array" in r.text
        assert s.aggregator.totals().lines == 0  # nothing of a rejected body reached the core


async def test_wrong_content_type_or_encoding_gets_415() -> None:
    data = generate("istio-json", lines=10, seed=8)
    async with serve() as s:
        for ctype in ("application/msgpack", "application/x-www-form-urlencoded", "image/png"):
            r = await s.client.post("/ingest", content=data, headers={"content-type": ctype})
            assert r.status_code == 415 and "unsupported content type" in r.text
        r = await s.client.post("/ingest", content=data, headers={**NDJSON, "content-encoding": "br"})
        assert r.status_code == 415 and "unsupported content encoding 'br'" in r.text
        r = await s.client.get("/ingest")
        assert r.status_code == 405
        assert s.aggregator.totals().lines == 0


async def test_full_queue_answers_429_with_retry_after_then_accepts() -> None:
    data = generate("istio-json", lines=200, seed=9)
    async with serve(fold=False, queue_bytes=len(data) + 10, retry_after_s=2, ack="queued") as s:
        assert (await s.client.post("/ingest", content=data, headers=NDJSON)).status_code == 204
        r = await s.client.post("/ingest", content=data, headers=NDJSON)
        assert r.status_code == 429 and r.headers["retry-after"] == "2" and "queue full" in r.text
        assert s.source.stats.waits == 1 and s.source.rejected == {"busy": 1}
        s.start_folding()
        await asyncio.wait_for(s.queue.join(), 10)
        r = await s.client.post("/ingest", content=data, headers=NDJSON)  # the sender's retry
        assert r.status_code == 204
        await asyncio.wait_for(s.queue.join(), 10)
        assert s.aggregator.totals().accepted == 400  # the rejected body counted once, after its retry


async def test_folded_ack_waits_for_the_core_and_503_is_configurable() -> None:
    data = generate("istio-json", lines=200, seed=10)
    async with serve(fold=False, queue_bytes=len(data) + 10, busy_status=503) as s:
        first = asyncio.create_task(s.client.post("/ingest", content=data, headers=NDJSON))
        while s.queue.queued_bytes == 0:
            await asyncio.sleep(0.01)
        assert not first.done()  # queued, not folded: no answer yet
        r = await s.client.post("/ingest", content=data, headers=NDJSON)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        s.start_folding()
        assert (await asyncio.wait_for(first, 10)).status_code == 204
        assert s.aggregator.totals().accepted == 200


async def test_nothing_else_lost_around_bad_requests() -> None:
    good = [generate("istio-json", lines=500, seed=20 + i) for i in range(6)]
    assert all(len(b) < 1_000_000 for b in good)
    async with serve(max_body_bytes=1_000_000) as s:
        gz = {**NDJSON, "content-encoding": "gzip"}
        sent = []
        for i, body in enumerate(good):
            sent.append(s.client.post("/ingest", content=body, headers=NDJSON))
            sent.append(s.client.post("/ingest", content=b"\x1f\x8b garbage", headers=gz))
            sent.append(s.client.post("/ingest", content=b"z" * 1_000_001, headers=NDJSON))
            sent.append(
                s.client.post("/ingest", content=body, headers={"content-type": "application/msgpack"})
            )
            if i % 2:
                sent.append(s.client.post("/ingest", content=gzip.compress(body), headers=gz))
        answers = await asyncio.gather(*sent)
        codes = sorted(r.status_code for r in answers)
        assert codes.count(204) == 9 and codes.count(400) == 6 and codes.count(413) == 6
        assert codes.count(415) == 6
        expected = sum(reference(b).accepted for b in good) + sum(
            reference(good[i]).accepted for i in (1, 3, 5)
        )
        assert s.aggregator.totals().accepted == expected == 4500
        assert s.aggregator.totals().malformed_total == 0


async def test_stop_answers_requests_in_flight_after_their_fold() -> None:
    data = generate("istio-json", lines=8000, seed=30)
    async with serve() as s:
        posts = [
            asyncio.create_task(s.client.post("/ingest", content=data, headers=NDJSON)) for _ in range(4)
        ]
        while s.source.requests < 4:
            await asyncio.sleep(0.005)
        s.source.stop()
        answers = await asyncio.gather(*posts)
        assert [r.status_code for r in answers] == [204] * 4
        assert s.aggregator.totals().accepted == 32_000


def test_config_validation_names_the_field() -> None:
    for kwargs, field in [
        ({"port": 70000}, "http.port"),
        ({"path": "ingest"}, "http.path"),
        ({"max_body_bytes": 0}, "http.max_body_bytes"),
        ({"max_body_bytes": 10, "max_decoded_bytes": 5}, "http.max_decoded_bytes"),
        ({"ack": "never"}, "http.ack"),
        ({"read_timeout_s": 0}, "http.read_timeout_s"),
        ({"busy_status": 500}, "http.busy_status"),
        ({"envelope_key": 'a"b'}, "http.envelope_key"),
    ]:
        with pytest.raises(ValueError, match=field):
            HttpPushConfig(**kwargs)  # type: ignore[arg-type]
