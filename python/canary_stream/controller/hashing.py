"""Revision hashes: FNV-32a over a deterministic dump, as Flagger hashes pod templates."""

from __future__ import annotations

import json
from typing import Any

_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' SafeEncodeString alphabet


def fnv32a(data: bytes) -> int:
    """32-bit FNV-1a."""
    h = 0x811C9DC5
    for b in data:
        h ^= b
        h = (h * 0x01000193) & 0xFFFFFFFF
    return h


def spec_hash(obj: Any) -> str:
    """Short, safe-encoded hash of `obj` (sorted-key JSON), like `"85d557f47b"`."""
    dump = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    digits = str(fnv32a(dump))
    return "".join(_ALPHABET[int(c) % len(_ALPHABET)] for c in digits)


def checksum(last_applied_spec: str, tracked_configs: dict[str, str]) -> str:
    """The webhook `checksum`: hash of {trackedConfigs, lastAppliedSpec}."""
    return spec_hash({"trackedConfigs": tracked_configs, "lastAppliedSpec": last_applied_spec})
