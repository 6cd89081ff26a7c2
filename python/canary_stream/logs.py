"""Structured logs: one JSON object per line with the canary, namespace, phase and verdict of the
record when the caller gave them (``log.info("...", extra={"canary": ..., "phase": ...})``).

``configure("json")`` installs the formatter on the root logger (``canary-stream --log-format
json`` or ``CANARY_STREAM_LOG_FORMAT=json``); ``configure("text")`` keeps a plain format."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
from datetime import UTC, datetime
from typing import Any, Literal

#: Record attributes copied into the JSON object when present (``extra=`` keys).
CONTEXT_FIELDS = ("canary", "namespace", "phase", "verdict", "weight", "source", "command", "hook")

LogFormat = Literal["text", "json"]
ENV_FORMAT = "CANARY_STREAM_LOG_FORMAT"


def _plain(value: Any) -> Any:
    """A JSON-safe value: non-finite floats become null, unknown objects their str()."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)


class JsonFormatter(logging.Formatter):
    """One strict JSON object per record: ``ts`` (RFC 3339, UTC, ms), ``level``, ``logger``,
    ``msg``, the context fields that are set, and ``exc`` (the formatted traceback) if any."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key in CONTEXT_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                out[key] = _plain(value)
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def configure(fmt: LogFormat | None = None, level: int = logging.INFO) -> None:
    """Log to stderr in ``fmt`` (default: ``$CANARY_STREAM_LOG_FORMAT``, else text)."""
    chosen = fmt or os.environ.get(ENV_FORMAT, "text")
    if chosen not in ("text", "json"):
        raise ValueError(f"{ENV_FORMAT}: expected 'text' or 'json', got {chosen!r}")
    handler = logging.StreamHandler(sys.stderr)
    if chosen == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
