"""`canary-stream run`: files + HTTP push + stdin into one aggregator; SIGTERM stops cleanly with every
line folded (in-process and as a real subprocess)."""

from __future__ import annotations

import argparse
import asyncio
import gzip
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from canary_stream import Aggregator, AggregatorConfig, generate
from canary_stream.run_cmd import build_sources, register, run_pipeline
from canary_stream.sources.files import FileTailSource
from canary_stream.sources.http_push import HttpPushConfig, HttpPushSource

PYTHON_PATH = str(Path(__file__).resolve().parents[1] / "python")
NDJSON = {"content-type": "application/x-ndjson"}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["run", *argv])


def chunks(seed: int, n: int, lines: int = 1000) -> list[bytes]:
    """`n` consecutive slices of one generated stream (event time moves forward: nothing is late)."""
    data = generate("istio-json", lines=lines * n, seed=seed)
    rows = data.splitlines(keepends=True)
    return [b"".join(rows[i * lines : (i + 1) * lines]) for i in range(n)]


async def test_in_process_files_and_http_then_stop_folds_everything(tmp_path: Path) -> None:
    parts = chunks(1, 6)
    log = tmp_path / "a.log"
    log.write_bytes(parts[0])
    files = FileTailSource(
        str(tmp_path / "*.log"), start_at_end=False, poll_interval=0.02, rescan_interval=0.05
    )
    http = HttpPushSource(HttpPushConfig(port=0))
    agg = Aggregator(AggregatorConfig(format="istio-json"))
    stop = asyncio.Event()
    err = io.StringIO()
    run = asyncio.create_task(
        run_pipeline([files, http], agg, stop=stop, stats_interval=0.05, err=err, shutdown_timeout=20)
    )
    await asyncio.wait_for(http.ready.wait(), 10)
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http.port}") as client:
        assert (await client.post("/ingest", content=parts[1], headers=NDJSON)).status_code == 204
        with log.open("ab") as f:
            f.write(parts[2])
        gz = {**NDJSON, "content-encoding": "gzip"}
        assert (await client.post("/ingest", content=gzip.compress(parts[3]), headers=gz)).status_code == 204
        (tmp_path / "b.log").write_bytes(parts[4])  # a file that appears later
        assert (await client.post("/ingest", content=b"{bad", headers=gz)).status_code == 400
        assert (await client.post("/ingest", content=parts[5], headers=NDJSON)).status_code == 204
    deadline = time.monotonic() + 10
    while files.stats.events < 3000 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    stop.set()
    assert await asyncio.wait_for(run, 30) == 0
    assert agg.totals().accepted == 6000 and agg.totals().malformed_total == 0
    assert (files.stats.events, http.stats.events) == (3000, 3000)
    assert http.stats.malformed == {"http_bad_encoding": 1}
    out = err.getvalue()
    assert "listening on http://127.0.0.1:" in out and "final files:" in out and "http:" in out
    assert re.search(r"files: [\d,]+ ev/s [\d.]+ MB/s lag \d+ malformed", out)


async def test_sources_that_end_by_themselves_end_the_run(tmp_path: Path) -> None:
    class Once:
        """A source that queues one batch and ends (like stdin at EOF)."""

        def __init__(self, data: bytes) -> None:
            from canary_stream.sources.base import SourceStats

            self.data = data
            self.stats = SourceStats("once")

        async def run(self, queue: object) -> None:
            from canary_stream.core import Source
            from canary_stream.sources.base import Batch, IngestQueue

            assert isinstance(queue, IngestQueue)
            await queue.put(Batch(self.data, Source(), self.stats))

        def stop(self) -> None:
            pass

    agg = Aggregator()
    rc = await asyncio.wait_for(
        run_pipeline([Once(generate("istio-text", lines=700))], agg, stop=asyncio.Event(), stats_interval=0),
        20,
    )
    assert rc == 0 and agg.totals().accepted == 700


def test_build_sources_from_flags_and_yaml(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no source"):
        build_sources(parse([]))
    with pytest.raises(ValueError, match="--http"):
        build_sources(parse(["--http", "localhost:http"]))
    (http,) = build_sources(parse(["--http", "0.0.0.0:9000", "--http-envelope-key", "log"]))
    assert isinstance(http, HttpPushSource)
    assert (http.config.host, http.config.port, http.config.envelope_key) == ("0.0.0.0", 9000, "log")
    cfg = tmp_path / "run.yaml"
    cfg.write_text("http:\n  port: 9100\n  max_body_bytes: 1048576\n  ack: queued\n")
    (http,) = build_sources(parse(["--config", str(cfg), "--http-ack", "folded"]))
    assert isinstance(http, HttpPushSource)
    assert (http.config.port, http.config.max_body_bytes, http.config.ack) == (9100, 1048576, "folded")
    cfg.write_text("http:\n  prot: 1\n")
    with pytest.raises(ValueError, match=r"http: .*prot"):
        build_sources(parse(["--config", str(cfg)]))
    cfg.write_text("http:\n  port: 99999\n")
    with pytest.raises(ValueError, match=r"http\.port"):
        build_sources(parse(["--config", str(cfg)]))
    cfg.write_text("kafak: {}\n")
    with pytest.raises(ValueError, match="unknown section 'kafak'"):
        build_sources(parse(["--config", str(cfg)]))


def test_kafka_source_from_flags() -> None:
    pytest.importorskip("aiokafka")
    from canary_stream.sources.kafka import KafkaSource

    (src,) = build_sources(
        parse(["--kafka-bootstrap", "b1:9092,b2:9092", "--kafka-topic", "logs", "--kafka-from-earliest"])
    )
    assert isinstance(src, KafkaSource)
    assert src.config.bootstrap_servers == ["b1:9092", "b2:9092"]
    assert (src.config.topics, src.config.auto_offset_reset) == (("logs",), "earliest")


def _spawn(args: list[str], **kw: object) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": PYTHON_PATH}
    return subprocess.Popen(
        [sys.executable, "-m", "canary_stream.run_cmd", "run", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        **kw,  # type: ignore[arg-type]
    )


def test_subprocess_sigterm_clean_exit_with_all_lines_folded(tmp_path: Path) -> None:
    parts = chunks(2, 4, lines=2500)
    (tmp_path / "pod.log").write_bytes(parts[0])
    files = ["--file", str(tmp_path / "*.log"), "--from-start", "--format", "istio-json"]
    proc = _spawn([*files, "--http", "127.0.0.1:0", "--stats-interval", "0.2", "--json"])
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline().decode()
        m = re.search(r"listening on (http://127\.0\.0\.1:\d+)/ingest", line)
        assert m, line
        with httpx.Client(base_url=m.group(1), timeout=30) as client:
            assert client.post("/ingest", content=parts[1], headers=NDJSON).status_code == 204
            gz = {"content-type": "application/json", "content-encoding": "gzip"}
            assert client.post("/ingest", content=gzip.compress(parts[2]), headers=gz).status_code == 204
            assert (
                client.post("/ingest", content=b"x" * 100, headers={"content-type": "image/png"}).status_code
                == 415
            )
        with (tmp_path / "pod.log").open("ab") as f:
            f.write(parts[3])
        # wait until the file source has read the appended lines (stats lines on stderr)
        deadline = time.monotonic() + 20
        seen = ""
        while time.monotonic() < deadline:
            seen = proc.stderr.readline().decode()
            if re.search(r"files: [^|]* events 5,000 ", seen):
                break
        assert "events 5,000" in seen
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()
    report = json.loads(out)
    assert report["accepted"] == 10_000 and report["malformed"] == {}
    assert report["sources"]["files"]["events"] == 5000
    assert report["sources"]["http"]["events"] == 5000
    assert report["sources"]["http"]["malformed"] == {"http_unsupported_content_type": 1}
    assert "final files:" in err.decode()


def test_subprocess_stdin_ends_at_eof() -> None:
    data = generate("istio-text", lines=3000, seed=3)
    proc = _spawn(["--stdin", "--json", "--stats-interval", "0"], stdin=subprocess.PIPE)
    out, err = proc.communicate(data, timeout=60)
    assert proc.returncode == 0, err.decode()
    report = json.loads(out)
    assert report["accepted"] == 3000 and report["sources"]["stdin"]["events"] == 3000


def test_subprocess_sigint_while_idle_exits_zero(tmp_path: Path) -> None:
    proc = _spawn(["--http", "127.0.0.1:0", "--stats-interval", "0"])
    try:
        assert proc.stderr is not None
        assert "listening on" in proc.stderr.readline().decode()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()
    assert "malformed: none" in out.decode()


def test_event_loop_choice_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from canary_stream import eventloop

    async def loop_type() -> str:
        return type(asyncio.get_running_loop()).__module__

    monkeypatch.setenv("CANARY_STREAM_LOOP", "asyncio")
    assert eventloop.loop_factory() is None
    assert eventloop.run(loop_type()).startswith("asyncio")
    monkeypatch.setenv("CANARY_STREAM_LOOP", "auto")
    uvloop = pytest.importorskip("uvloop")
    assert eventloop.loop_factory() is uvloop.new_event_loop
    assert eventloop.run(loop_type()).startswith("uvloop")
