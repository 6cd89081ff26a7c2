"""Structured logs: one strict JSON object per record with the rollout's context fields, and the
CLI flag that turns them on."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys

import pytest

from canary_stream.logs import JsonFormatter, configure


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    r = logging.LogRecord("canary_stream.rollout", logging.INFO, __file__, 1, msg, args, None)
    for k, v in extra.items():
        setattr(r, k, v)
    return r


def test_json_lines_carry_the_context_fields() -> None:
    f = JsonFormatter()
    line = f.format(
        record(
            "phase %s -> %s",
            "Progressing",
            "Failed",
            canary="podinfo",
            namespace="test",
            phase="Failed",
            verdict="fail",
            weight=0,
            other="not copied",
        )
    )
    d = json.loads(line)
    assert d["msg"] == "phase Progressing -> Failed"
    assert (d["canary"], d["namespace"], d["phase"], d["verdict"], d["weight"]) == (
        "podinfo",
        "test",
        "Failed",
        "fail",
        0,
    )
    assert d["level"] == "info" and d["logger"] == "canary_stream.rollout" and d["ts"].endswith("+00:00")
    assert "other" not in d
    # Only the fields that are set; strict JSON even for odd values.
    d = json.loads(f.format(record("x", weight=math.nan, canary=("a", math.inf))))
    assert d["weight"] is None and d["canary"] == ["a", None] and "phase" not in d


def test_exceptions_are_one_line_of_json() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        r = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    line = JsonFormatter().format(r)
    assert "\\n" in line and "\n" not in line
    assert "ValueError: boom" in json.loads(line)["exc"]


def test_configure_rejects_an_unknown_format(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CANARY_STREAM_LOG_FORMAT", "xml")
    with pytest.raises(ValueError, match="CANARY_STREAM_LOG_FORMAT"):
        configure()


def test_cli_flag_turns_json_logs_on() -> None:
    # In a child process: the flag configures the root logger of the whole process.
    code = (
        "import logging\n"
        "from canary_stream import cli\n"
        "from canary_stream.sim.demo import demo_spec_path\n"
        "cli.main(['--log-format', 'json', 'validate', demo_spec_path()])\n"
        "extra = {'canary': 'podinfo', 'verdict': 'fail'}\n"
        "logging.getLogger('canary_stream.api').warning('verdict', extra=extra)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    d = json.loads(out.stderr.strip().splitlines()[-1])
    assert d == {**d, "msg": "verdict", "canary": "podinfo", "verdict": "fail", "level": "warning"}
