"""The field checks shared by the source configs: each bad value names `<section>.<field>`."""

from __future__ import annotations

import math
from typing import Any

import pytest

from canary_stream.sources.envoy_als import EnvoyAlsConfig
from canary_stream.sources.http_push import HttpPushConfig
from canary_stream.sources.kafka import KafkaConfig


@pytest.mark.parametrize(
    ("make", "kwargs", "message"),
    [
        (HttpPushConfig, {"host": ""}, r"http\.host: an address to listen on is required"),
        (HttpPushConfig, {"port": True}, r"http\.port: must be 0\.\.65535, got True"),
        (HttpPushConfig, {"port": -1}, r"http\.port: must be 0\.\.65535"),
        (HttpPushConfig, {"keep_alive_s": "5"}, r"http\.keep_alive_s: must be > 0, got '5'"),
        (HttpPushConfig, {"ack_timeout_s": math.nan}, r"http\.ack_timeout_s: must be > 0, got nan"),
        (HttpPushConfig, {"backlog": 1.5}, r"http\.backlog: must be a positive integer, got 1\.5"),
        (EnvoyAlsConfig, {"host": ""}, r"als\.host: an address"),
        (EnvoyAlsConfig, {"port": 65536}, r"als\.port: must be 0\.\.65535, got 65536"),
        (EnvoyAlsConfig, {"max_concurrent_streams": 0}, r"als\.max_concurrent_streams: must be a positive"),
        (EnvoyAlsConfig, {"flush_ms": False}, r"als\.flush_ms: must be > 0, got False"),
        (KafkaConfig, {"fetch_max_wait_ms": -1}, r"kafka\.fetch_max_wait_ms: must be an integer >= 0"),
        (KafkaConfig, {"max_records": 0}, r"kafka\.max_records: must be a positive integer, got 0"),
    ],
)
def test_bad_values_name_the_field(make: Any, kwargs: dict[str, Any], message: str) -> None:
    if make is KafkaConfig:
        kwargs = {"bootstrap_servers": "127.0.0.1:9092", "topics": ("t",), "group_id": "g", **kwargs}
    with pytest.raises(ValueError, match=message):
        make(**kwargs)


def test_edge_values_are_accepted() -> None:
    assert HttpPushConfig(port=0).port == 0  # an ephemeral port
    assert EnvoyAlsConfig(port=65535, max_concurrent_streams=None).port == 65535
    cfg = KafkaConfig(
        bootstrap_servers="127.0.0.1:9092",
        topics=("t",),
        group_id="g",
        fetch_max_wait_ms=0,
        commit_interval_ms=0,
    )
    assert cfg.commit_interval_ms == 0
