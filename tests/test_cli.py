"""The ``canary-stream`` command as a user runs it: files, gzip, stdin, JSON, windows."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from canary_stream import generate
from canary_stream.cli import bundled_sample, main

CLI = [sys.executable, "-m", "canary_stream.cli"]


def run(args: list[str], stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([*CLI, *args], input=stdin, capture_output=True, timeout=120, check=False)


def analyze_json(args: list[str], stdin: bytes | None = None) -> dict[str, Any]:
    res = run(["analyze", "--json", *args], stdin)
    assert res.returncode == 0, res.stderr.decode()
    out: dict[str, Any] = json.loads(res.stdout)
    return out


def test_default_run_analyzes_the_bundled_sample_rollout() -> None:
    assert Path(bundled_sample()).is_file()
    out = analyze_json([])
    assert out["format"] == "istio-text"
    versions = {(v["target"], v["version"]): v for v in out["versions"]}
    assert set(versions) == {("podinfo.test", "primary"), ("podinfo.test", "canary")}
    for v in versions.values():
        for key in ("target", "version", "requests", "success_rate", "p50_ms", "p90_ms", "p99_ms"):
            assert key in v
    # The sample's canary is slower and less reliable than its primary.
    [cmp] = out["comparisons"]
    assert (cmp["baseline"], cmp["candidate"]) == ("primary", "canary")
    assert cmp["success_rate_delta_pp"] < 0
    assert cmp["p99_ratio"] > 1
    assert out["lines"] == 20_000
    assert sum(out["malformed"].values()) > 0  # the sample carries a few bad lines, counted
    assert out["accepted"] + sum(out["malformed"].values()) + sum(out["skipped"].values()) == out["lines"]


def test_table_output_names_versions_and_comparison() -> None:
    res = run(["analyze", "--no-progress"])
    assert res.returncode == 0, res.stderr.decode()
    text = res.stdout.decode()
    assert "podinfo.test" in text and "canary vs primary" in text and "malformed" in text


def test_plain_gzip_and_stdin_agree(tmp_path: Path) -> None:
    data = generate("istio-json", lines=3_000, seed=4)
    plain = tmp_path / "a.log"
    plain.write_bytes(data)
    gz = tmp_path / "a.log.gz"
    gz.write_bytes(gzip.compress(data))
    a = analyze_json([str(plain)])
    b = analyze_json([str(gz)])
    c = analyze_json(["-"], stdin=gzip.compress(data))
    d = analyze_json(["--format", "istio-json", "-"], stdin=data)
    assert a["versions"] == b["versions"] == c["versions"] == d["versions"]
    assert a["lines"] == 3_000


def test_several_files_are_one_input(tmp_path: Path) -> None:
    data = generate("nginx", lines=4_000, seed=8)
    lines = data.splitlines(keepends=True)
    (tmp_path / "1.log").write_bytes(b"".join(lines[:1500]))
    (tmp_path / "2.log").write_bytes(b"".join(lines[1500:]))
    whole = tmp_path / "all.log"
    whole.write_bytes(data)
    assert (
        analyze_json([str(tmp_path / "1.log"), str(tmp_path / "2.log")])["versions"]
        == analyze_json([str(whole)])["versions"]
    )


def test_windows_partition_the_input(tmp_path: Path) -> None:
    data = generate("istio-text", lines=6_000, seed=2, rps=100.0)  # 60 s of traffic
    f = tmp_path / "w.log"
    f.write_bytes(data)
    out = analyze_json(["--window", "10", str(f)])
    windows = out["windows"]
    assert 6 <= len(windows) <= 7
    for w in windows:
        assert w["end_ms"] - w["start_ms"] == 10_000
    assert sum(v["requests"] for w in windows for v in w["versions"]) == out["accepted"]


def test_explicit_format_and_malformed_counts(tmp_path: Path) -> None:
    f = tmp_path / "bad.log"
    f.write_bytes(generate("istio-text", lines=2_000, seed=6, malformed_rate=0.05))
    out = analyze_json(["--format", "istio-text", str(f)])
    assert set(out["malformed"]) <= {"truncated", "not_utf8", "bad_number", "bad_syntax", "missing_field"}
    assert sum(out["malformed"].values()) > 0


def test_no_attributable_data_exits_1(tmp_path: Path) -> None:
    f = tmp_path / "junk.log"
    f.write_bytes(b"this is not an access log\n" * 10)
    res = run(["analyze", "--format", "istio-text", str(f)])
    assert res.returncode == 1
    assert b"no data is not a pass" in res.stderr


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    assert run(["analyze", "--format", "bogus"]).returncode == 2
    res = run(["analyze", str(tmp_path / "missing.log")])
    assert res.returncode == 2 and b"missing.log" in res.stderr


def test_generate_command_writes_gzip(tmp_path: Path) -> None:
    out = tmp_path / "g.log.gz"
    assert main(["generate", "--format", "linkerd-json", "--lines", "100", "-o", str(out)]) == 0
    lines = gzip.decompress(out.read_bytes()).splitlines()
    assert len(lines) == 100 and lines[0].startswith(b"{")


@pytest.mark.parametrize("fmt", ["istio-text", "istio-json", "nginx", "ndjson", "linkerd-json"])
def test_auto_detection_in_cli(tmp_path: Path, fmt: str) -> None:
    f = tmp_path / "x.log"
    f.write_bytes(generate(fmt, lines=500, seed=1))
    res = run(["analyze", "--json", str(f)])
    # Linkerd lines carry no version: without a pod path they are unattributable (exit 1).
    if fmt == "linkerd-json":
        assert res.returncode == 1
        assert json.loads(res.stdout)["malformed"] == {"unattributable_version": 500}
    else:
        assert res.returncode == 0, res.stderr.decode()
        assert json.loads(res.stdout)["format"] == fmt


def test_linkerd_versions_from_kubelet_log_paths(tmp_path: Path) -> None:
    files = []
    for pod, version in (
        ("podinfo-primary-5d8f7c6b9d-x2x4z", "primary"),
        ("podinfo-7f9c8d6b5-abcde", "canary"),
    ):
        d = tmp_path / "var" / "log" / "pods" / f"test_{pod}_0b1c2d" / "linkerd-proxy"
        d.mkdir(parents=True)
        service = {"name": "podinfo", "namespace": "test", "port": 9898, "versions": [{"name": version}]}
        (d / "0.log").write_bytes(generate("linkerd-json", lines=300, seed=1, services=[service]))
        files.append(str(d / "0.log"))
    out = analyze_json(files)
    assert {(v["target"], v["version"], v["requests"]) for v in out["versions"]} == {
        ("podinfo.test", "primary", 300),
        ("podinfo.test", "canary", 300),
    }


def test_ndjson_field_mapping_from_the_command_line(tmp_path: Path) -> None:
    f = tmp_path / "custom.ndjson"
    f.write_text(
        '{"code": 200, "took_s": 0.25, "svc": "api", "ver": "canary", "at": "2026-11-26T05:00:00Z"}\n'
        '{"code": 503, "took_s": 0.5, "svc": "api", "ver": "primary", "at": "2026-11-26T05:00:01Z"}\n'
    )
    out = analyze_json(
        [
            "--format", "ndjson",
            "--field", "status=code", "--field", "duration=took_s", "--field", "duration_unit=s",
            "--field", "target=svc", "--field", "version=ver", "--field", "timestamp=at",
            str(f),
        ]
    )  # fmt: skip
    got = {v["version"]: (v["requests"], v["success_rate"], v["p50_ms"]) for v in out["versions"]}
    assert got == {"canary": (1, 100.0, 250.0), "primary": (1, 0.0, 500.0)}
    assert run(["analyze", "--field", "nope=x"]).returncode == 2
