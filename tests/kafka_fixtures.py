"""pytest plugin: a real Apache Kafka 4.x broker (infra/kafka_broker.py) for integration tests.

Load it with ``pytest_plugins = ("kafka_fixtures",)`` (a test module, or tests/conftest.py).

Fixtures:
  kafka_broker          one broker for the whole session (built from Maven Central jars on first
                        use, cached in ~/.cache/canary-stream or $CANARY_STREAM_CACHE)
  private_kafka_broker  a broker of the test's own, for tests that kill or restart it

Every test that uses one of them is marked ``kafka`` (so ``-m "not kafka"`` skips them), and a
failing one gets the tail of the broker's log in its report.

PYTEST_DONT_REWRITE (no asserts here; test modules may import it before pytest_plugins loads it)
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

_INFRA = str(Path(__file__).resolve().parent.parent / "infra")
if _INFRA not in sys.path:
    sys.path.insert(0, _INFRA)

from kafka_broker import KafkaBroker, KafkaInfraError, metadata  # noqa: E402

__all__ = ["KafkaBroker", "KafkaInfraError", "metadata", "unique"]

KAFKA_FIXTURES = ("kafka_broker", "private_kafka_broker")


def unique(prefix: str) -> str:
    """A topic or group name no other test uses (the session broker is shared)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "kafka: needs a real Kafka broker (Java 17 + Maven on first use)")


@pytest.hookimpl(tryfirst=True)  # before the -m deselection
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if any(name in getattr(item, "fixturenames", ()) for name in KAFKA_FIXTURES):
            item.add_marker("kafka")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        funcargs = getattr(item, "funcargs", {})
        for name in KAFKA_FIXTURES:
            broker = funcargs.get(name)
            if isinstance(broker, KafkaBroker):
                report.sections.append((f"{name} log (tail, {broker.log_path})", broker.log_tail(60)))
    return report


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    with KafkaBroker(workdir=tmp_path_factory.mktemp("kafka")) as broker:
        yield broker


@pytest.fixture
def private_kafka_broker(tmp_path: Path) -> Iterator[KafkaBroker]:
    with KafkaBroker(workdir=tmp_path / "kafka") as broker:
        yield broker
