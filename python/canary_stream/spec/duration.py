"""Go duration strings ("30s", "1m", "1h30m", "1.5s", "250ms") as seconds.

Flagger reads `interval`, `metrics[].interval` and `webhooks[].timeout` with Go's `time.ParseDuration`
and silently falls back to a default when parsing fails; canary-stream rejects unparsable durations
instead, so a typo never turns into a surprise 60 s interval."""

from __future__ import annotations

import re

_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # micro sign
    "μs": 1e-6,  # greek mu, both accepted by Go
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
# Longest units first so "ms" is not read as "m" followed by garbage.
_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Seconds in a Go duration (sign allowed, "0" alone allowed); raises ValueError otherwise."""
    s = text.strip() if isinstance(text, str) else ""
    body = s[1:] if s[:1] in ("+", "-") else s
    sign = -1.0 if s[:1] == "-" else 1.0
    if body == "0":
        return 0.0
    if not body:
        raise ValueError(f"invalid duration {text!r}: expected e.g. 30s, 1m, 1h30m")
    pos, total = 0, 0.0
    while pos < len(body):
        m = _PART.match(body, pos)
        if m is None:
            raise ValueError(f"invalid duration {text!r}: expected e.g. 30s, 1m, 1h30m")
        total += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
        pos = m.end()
    return sign * total


def format_duration(seconds: float) -> str:
    """Short human form of a duration ("90s" -> "1m30s"), for schedule output."""
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    whole = int(seconds)
    frac = seconds - whole
    h, rest = divmod(whole, 3600)
    m, s = divmod(rest, 60)
    out = (f"{h}h" if h else "") + (f"{m}m" if m else "")
    if s or frac or not out:
        out += f"{s + frac:g}s"
    return out
