#!/usr/bin/env python3
"""A real Apache Kafka 4.x broker for tests and local use, built from Maven Central jars.

One combined broker+controller node (KRaft, static quorum) on 127.0.0.1, no Docker, no
tarball download:

* ``ensure_kafka_libs(version)`` runs Maven once on ``infra/kafka/pom.xml`` and caches the
  broker's jars in ``$CANARY_STREAM_CACHE/kafka-<version>/lib`` (default cache root
  ``~/.cache/canary-stream``). A marker file is written last, so an interrupted build is redone;
  when the marker is there the call is a quick no-op.
* ``KafkaBroker`` formats a fresh data directory with a random cluster id, starts
  ``java -cp 'lib/*' kafka.Kafka server.properties`` on free ports, waits until the broker answers
  a Metadata request listing itself, and offers ``bootstrap``, ``create_topic``, ``stop``,
  ``kill`` (SIGKILL) and ``restart`` (same ports, same data).

Standard library only: readiness and topic creation speak the Kafka wire protocol directly
(ApiVersions v0, Metadata v4, FindCoordinator v1, CreateTopics v3: non-flexible versions that
Kafka 4.x still serves, checked against ApiVersions at start). Only the ``smoke`` command imports aiokafka.

Command line::

    python infra/kafka_broker.py build                 # build/cache the jars, print the lib dir
    python infra/kafka_broker.py start [--port 9092]   # run a broker in the foreground (Ctrl-C stops)
    python infra/kafka_broker.py smoke                 # start one, aiokafka round trip, stop
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import fcntl
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import weakref
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TypeVar

DEFAULT_KAFKA_VERSION = os.environ.get("CANARY_STREAM_KAFKA_VERSION", "4.4.0")
POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"
# Maven 3.8's built-in default for `dependency:` is the old 2.8 line: pin the plugin.
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
MARKER_NAME = "complete"
NODE_ID = 1
STARTED_LOG_LINE = "Kafka Server started"

# Small JVM for a 2-core test machine: C1 only (fast start), serial GC, small heap.
DEFAULT_HEAP = os.environ.get("CANARY_STREAM_KAFKA_HEAP", "384m")
JVM_FLAGS = (
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Xshare:auto",
    "-Djava.awt.headless=true",
    "-Djava.net.preferIPv4Stack=true",
)

LOG4J2_PROPERTIES = """\
status = warn
shutdownHook = disable
appender.stderr.type = Console
appender.stderr.name = STDERR
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.stderr.ref = STDERR
logger.kafkaserver.name = kafka.server.KafkaRaftServer
logger.kafkaserver.level = INFO
logger.kafka.name = org.apache.kafka
logger.kafka.level = WARN
"""


class KafkaInfraError(RuntimeError):
    """The jars could not be built, or the broker did not start / answer."""


# --------------------------------------------------------------------------------------------
# Building the lib/ directory


def cache_root() -> Path:
    env = os.environ.get("CANARY_STREAM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "canary-stream"


def kafka_home(version: str = DEFAULT_KAFKA_VERSION) -> Path:
    return cache_root() / f"kafka-{version}"


def _libs_complete(home: Path, version: str) -> bool:
    marker = home / MARKER_NAME
    return marker.is_file() and (home / "lib" / f"kafka_2.13-{version}.jar").is_file()


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def ensure_kafka_libs(version: str = DEFAULT_KAFKA_VERSION, *, quiet: bool = True) -> Path:
    """Return ``<cache>/kafka-<version>/lib``, building it with Maven on first use.

    Safe against concurrent callers (file lock) and interrupted builds (the marker file is
    written after the jars are in place, and a half-built directory is rebuilt).
    """
    home = kafka_home(version)
    lib = home / "lib"
    if _libs_complete(home, version):
        return lib
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _libs_complete(home, version):  # another process built it while we waited
            return lib
        mvn = shutil.which("mvn")
        if mvn is None:
            raise KafkaInfraError("mvn not found on PATH: Maven is needed once to fetch the Kafka jars")
        (home / MARKER_NAME).unlink(missing_ok=True)
        for stale in home.glob("lib.partial-*"):  # left by an interrupted build
            shutil.rmtree(stale, ignore_errors=True)
        staging = home / f"lib.partial-{os.getpid()}"
        log = home / "mvn.log"
        cmd = [
            mvn,
            "-B",
            "-q",
            "-Dstyle.color=never",
            "-f",
            str(POM),
            f"-Dkafka.version={version}",
            f"{DEPENDENCY_PLUGIN}:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={staging}",
        ]
        if not quiet:
            print(f"building Kafka {version} jars into {lib} (Maven, first use only)...", file=sys.stderr)
        started = time.monotonic()
        with open(log, "w") as out:
            rc = subprocess.run(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            ).returncode
        if rc != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise KafkaInfraError(
                f"Maven failed ({rc}) building Kafka {version} jars: {' '.join(cmd)}\n{_tail(log)}"
            )
        _check_jars(staging, version)
        shutil.rmtree(lib, ignore_errors=True)
        staging.rename(lib)
        jars = sorted(p.name for p in lib.glob("*.jar"))
        (home / MARKER_NAME).write_text(
            f"kafka {version}\nbuilt in {time.monotonic() - started:.1f}s\n" + "\n".join(jars) + "\n"
        )
        if not quiet:
            print(f"built {len(jars)} jars in {time.monotonic() - started:.1f}s", file=sys.stderr)
        return lib


def _check_jars(lib: Path, version: str) -> None:
    core = lib / f"kafka_2.13-{version}.jar"
    if not core.is_file():
        raise KafkaInfraError(f"Maven finished but {core} is missing")
    with zipfile.ZipFile(core) as jar:
        names = set(jar.namelist())
    for cls in ("kafka/Kafka.class", "kafka/tools/StorageTool$.class"):
        if cls not in names:
            raise KafkaInfraError(f"{core.name} has no {cls}: entry points moved in this Kafka version")


# --------------------------------------------------------------------------------------------
# A few requests of the Kafka wire protocol (non-flexible versions, request header v1)


API_METADATA, API_FIND_COORDINATOR, API_API_VERSIONS, API_CREATE_TOPICS = 3, 10, 18, 19
METADATA_VERSION, FIND_COORDINATOR_VERSION, CREATE_TOPICS_VERSION = 4, 1, 3
ERROR_TOPIC_ALREADY_EXISTS = 36

T = TypeVar("T")


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def _unpack(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self._data, self._pos)
        self._pos += struct.calcsize(fmt)
        return int(value)

    def int16(self) -> int:
        return self._unpack(">h")

    def int32(self) -> int:
        return self._unpack(">i")

    def boolean(self) -> bool:
        return self._unpack(">b") != 0

    def string(self) -> str | None:
        n = self.int16()
        if n < 0:
            return None
        raw = self._data[self._pos : self._pos + n]
        self._pos += n
        return raw.decode()

    def array(self, item: Callable[[_Reader], T]) -> list[T]:
        n = self.int32()
        return [item(self) for _ in range(max(n, 0))]


def _str(value: str | None) -> bytes:
    if value is None:
        return struct.pack(">h", -1)
    raw = value.encode()
    return struct.pack(">h", len(raw)) + raw


def _array(items: list[bytes] | None) -> bytes:
    if items is None:
        return struct.pack(">i", -1)
    return struct.pack(">i", len(items)) + b"".join(items)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        buf += chunk
    return bytes(buf)


def _request(address: tuple[str, int], api_key: int, version: int, body: bytes, timeout: float) -> _Reader:
    correlation = int.from_bytes(os.urandom(3), "big")
    message = struct.pack(">hhi", api_key, version, correlation) + _str("canary-stream-infra") + body
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(message)) + message)
        (size,) = struct.unpack(">i", _recv_exact(sock, 4))
        reader = _Reader(_recv_exact(sock, size))
    if reader.int32() != correlation:
        raise ConnectionError("correlation id mismatch")
    return reader


@dataclass
class TopicInfo:
    error_code: int
    leaders: dict[int, int]  # partition -> leader node id (-1: none yet)


@dataclass
class ClusterInfo:
    brokers: list[tuple[int, str, int]]
    cluster_id: str | None
    controller_id: int
    topics: dict[str, TopicInfo] = field(default_factory=dict)


def api_versions(address: tuple[str, int], timeout: float = 5.0) -> dict[int, tuple[int, int]]:
    reader = _request(address, API_API_VERSIONS, 0, b"", timeout)
    error = reader.int16()
    if error:
        raise KafkaInfraError(f"ApiVersions error {error}")
    ranges = reader.array(lambda r: (r.int16(), r.int16(), r.int16()))
    return {key: (low, high) for key, low, high in ranges}


def metadata(address: tuple[str, int], topics: list[str] | None = None, timeout: float = 5.0) -> ClusterInfo:
    """Metadata v4; ``topics=None`` asks for every topic."""
    body = _array(None if topics is None else [_str(t) for t in topics]) + struct.pack(">b", 0)
    reader = _request(address, API_METADATA, METADATA_VERSION, body, timeout)
    reader.int32()  # throttle_time_ms
    brokers = reader.array(lambda r: (r.int32(), r.string() or "", r.int32(), r.string())[:3])
    info = ClusterInfo(brokers=brokers, cluster_id=reader.string(), controller_id=reader.int32())

    def partition(r: _Reader) -> tuple[int, int]:
        r.int16()  # error_code
        index, leader = r.int32(), r.int32()
        r.array(_Reader.int32)  # replicas
        r.array(_Reader.int32)  # isr
        return index, leader

    def topic(r: _Reader) -> tuple[str, TopicInfo]:
        error = r.int16()
        name = r.string() or ""
        r.boolean()  # is_internal
        return name, TopicInfo(error, dict(r.array(partition)))

    info.topics = dict(reader.array(topic))
    return info


def find_group_coordinator(address: tuple[str, int], group: str, timeout: float = 5.0) -> int:
    """FindCoordinator v1 for a consumer group; returns the error code (0: found). The first call
    makes the broker create ``__consumer_offsets``."""
    body = _str(group) + struct.pack(">b", 0)  # key_type 0: group
    reader = _request(address, API_FIND_COORDINATOR, FIND_COORDINATOR_VERSION, body, timeout)
    reader.int32()  # throttle_time_ms
    return reader.int16()


def create_topics(
    address: tuple[str, int],
    topics: Mapping[str, int],
    *,
    configs: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> dict[str, tuple[int, str | None]]:
    """CreateTopics v3 (replication factor 1); returns ``{name: (error_code, message)}``."""
    config_items = [_str(k) + _str(v) for k, v in (configs or {}).items()]
    entries = [
        _str(name) + struct.pack(">ih", partitions, 1) + _array([]) + _array(config_items)
        for name, partitions in topics.items()
    ]
    body = _array(entries) + struct.pack(">ib", int(timeout * 1000), 0)
    reader = _request(address, API_CREATE_TOPICS, CREATE_TOPICS_VERSION, body, timeout + 5)
    reader.int32()  # throttle_time_ms
    results = reader.array(lambda r: (r.string() or "", r.int16(), r.string()))
    return {name: (code, message) for name, code, message in results}


# --------------------------------------------------------------------------------------------
# The broker


def free_ports(count: int) -> list[int]:
    """Ports the kernel hands out on 127.0.0.1 (all held open together, so they differ)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def random_cluster_id() -> str:
    """What ``StorageTool random-uuid`` prints: urlsafe base64 of 16 random bytes, no padding, and
    (like Kafka's ``Uuid.randomUuid``) never starting with ``-``, which the storage tool's argument
    parser would take for an option (1 start in 64 failed with "expected one argument")."""
    while True:
        cluster_id = base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):
            return cluster_id


def java_executable() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").is_file():
        return str(Path(java_home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise KafkaInfraError("java not found (Kafka 4.x brokers need Java 17+)")
    return java


_live: weakref.WeakSet[KafkaBroker] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:  # a broker must never outlive the Python process that started it
    for broker in list(_live):
        broker.kill()


class KafkaBroker:
    """One KRaft broker+controller node on 127.0.0.1. Use as a context manager, or call
    ``start()`` and ``close()``."""

    def __init__(
        self,
        *,
        version: str = DEFAULT_KAFKA_VERSION,
        port: int | None = None,
        controller_port: int | None = None,
        workdir: Path | str | None = None,
        heap: str = DEFAULT_HEAP,
        startup_timeout: float = 120.0,
        properties: Mapping[str, str] | None = None,
    ) -> None:
        self.version = version
        ports = free_ports(2)
        self.port = port if port is not None else ports[0]
        self.controller_port = controller_port if controller_port is not None else ports[1]
        if self.controller_port == self.port:
            self.controller_port = ports[1] if ports[1] != self.port else ports[0]
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="kafka-"))
        self.heap = heap
        self.startup_timeout = startup_timeout
        self.extra_properties = dict(properties or {})
        self.cluster_id: str | None = None
        self.timings: dict[str, float] = {}
        self.starts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._lib: Path | None = None

    # --- properties -------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def log_path(self) -> Path:
        return self.workdir / "broker.log"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def rss_bytes(self) -> int | None:
        """Resident set size of the broker JVM (Linux), or None when not running."""
        if not self.is_running() or self._proc is None:
            return None
        try:
            for line in Path(f"/proc/{self._proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def log_tail(self, lines: int = 40) -> str:
        return _tail(self.log_path, lines)

    def server_properties(self) -> dict[str, str]:
        props = {
            "process.roles": "broker,controller",
            "node.id": str(NODE_ID),
            "controller.quorum.voters": f"{NODE_ID}@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            # single node: every internal topic at replication factor 1
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "num.partitions": "1",
            # fast on a small machine
            "group.initial.rebalance.delay.ms": "0",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.num.partitions": "1",
            "num.network.threads": "2",
            "num.io.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            # after a SIGKILL the restarted broker waits out its old registration's session:
            # 9 s by default; 3 s brings a restart after a crash from ~15 s to ~7 s
            "broker.session.timeout.ms": "3000",
            "broker.heartbeat.interval.ms": "500",
            "log.cleaner.dedupe.buffer.size": str(16 * 1024 * 1024),  # default 128 MiB of a small heap
            # a typo in a topic name must fail, not create a topic
            "auto.create.topics.enable": "false",
        }
        props.update(self.extra_properties)
        return props

    # --- lifecycle --------------------------------------------------------------------------

    def _java(self, main: str, *args: str, heap: str) -> list[str]:
        assert self._lib is not None
        return [
            java_executable(),
            f"-Xmx{heap}",
            *JVM_FLAGS,
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            "-cp",
            f"{self._lib}/*",
            main,
            *args,
        ]

    def start(self) -> KafkaBroker:
        """Build the jars if needed, format storage on first start, run and wait until ready."""
        if self.is_running():
            return self
        t0 = time.monotonic()
        self._lib = ensure_kafka_libs(self.version)
        self.timings["libs"] = time.monotonic() - t0
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "log4j2.properties").write_text(LOG4J2_PROPERTIES)
        config = self.workdir / "server.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in self.server_properties().items()))
        if not (self.data_dir / "meta.properties").is_file():
            self._format(config)
        self._launch(config)
        return self

    def _format(self, config: Path) -> None:
        self.cluster_id = random_cluster_id()
        t0 = time.monotonic()
        args = ("format", "-t", self.cluster_id, "-c", str(config))
        cmd = self._java("kafka.tools.StorageTool", *args, heap="512m")
        result = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
        self.timings["format"] = time.monotonic() - t0
        if result.returncode != 0:
            raise KafkaInfraError(
                f"storage format failed ({result.returncode}): {' '.join(cmd)}\n"
                f"{result.stdout}\n{result.stderr}"
            )

    def _launch(self, config: Path) -> None:
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"===== canary-stream: broker start #{self.starts} =====\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self._java("kafka.Kafka", str(config), heap=self.heap),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in a terminal reaches us, and we stop it cleanly
            )
        _live.add(self)
        t0 = time.monotonic()
        try:
            self.wait_ready()
        except BaseException:
            self.kill()
            raise
        self.timings["start"] = time.monotonic() - t0

    def wait_ready(self, timeout: float | None = None) -> None:
        """Until the broker answers Metadata listing itself (so it is registered and unfenced) and
        its group coordinator is available."""
        deadline = time.monotonic() + (timeout if timeout is not None else self.startup_timeout)
        last_error: Exception | None = None
        checked_versions = False
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise KafkaInfraError(f"Kafka broker exited ({code}) during start-up\n{self.log_tail()}")
            try:
                if not checked_versions:
                    self._check_api_versions()
                    checked_versions = True
                info = metadata(self.address, topics=[], timeout=2.0)
                registered = any(node == NODE_ID for node, _, _ in info.brokers) and info.controller_id >= 0
                # the group coordinator answering means __consumer_offsets exists and is loaded, so
                # a test's first consumer group does not start with retries
                if registered and find_group_coordinator(self.address, "canary-stream-ready", 2.0) == 0:
                    self.cluster_id = info.cluster_id
                    return
            except (OSError, struct.error) as exc:
                last_error = exc
            time.sleep(0.2)
        raise KafkaInfraError(
            f"Kafka broker not ready on {self.bootstrap} after {self.startup_timeout:.0f}s "
            f"(last error: {last_error!r})\n{self.log_tail()}"
        )

    def _check_api_versions(self) -> None:
        ranges = api_versions(self.address, timeout=2.0)
        for key, version in (
            (API_METADATA, METADATA_VERSION),
            (API_FIND_COORDINATOR, FIND_COORDINATOR_VERSION),
            (API_CREATE_TOPICS, CREATE_TOPICS_VERSION),
        ):
            low, high = ranges.get(key, (1, 0))
            if not low <= version <= high:
                raise KafkaInfraError(f"broker serves api {key} at v{low}..v{high}, infra speaks v{version}")

    def stop(self, timeout: float = 20.0) -> None:
        """Clean shutdown (SIGTERM), SIGKILL after ``timeout`` seconds."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._proc = None
        _live.discard(self)

    def kill(self) -> None:
        """SIGKILL: a crash, no clean shutdown (the data dir is kept)."""
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        self._proc = None
        _live.discard(self)

    def restart(self, *, clean: bool = True) -> None:
        """Stop (or, with ``clean=False``, SIGKILL) if running, then start again on the same ports
        with the same data."""
        if clean:
            self.stop()
        else:
            self.kill()
        self.start()

    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        *,
        configs: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> None:
        """Create a topic (replication factor 1) and wait until every partition has a leader."""
        results = create_topics(self.address, {name: partitions}, configs=configs, timeout=timeout)
        code, message = results[name]
        if code == ERROR_TOPIC_ALREADY_EXISTS:
            raise KafkaInfraError(f"topic {name!r} already exists")
        if code != 0:
            raise KafkaInfraError(f"CreateTopics {name!r} failed: error {code} {message or ''}")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            topic = metadata(self.address, [name]).topics.get(name)
            leaders = topic.leaders if topic is not None and topic.error_code == 0 else {}
            if len(leaders) == partitions and all(leader >= 0 for leader in leaders.values()):
                return
            time.sleep(0.1)
        raise KafkaInfraError(f"topic {name!r} has no leader for every partition after {timeout}s")

    def topics(self) -> list[str]:
        return sorted(metadata(self.address).topics)

    def close(self) -> None:
        """Stop and, if the work dir was a temporary one, delete it."""
        self.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> KafkaBroker:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"pid {self.pid}" if self.is_running() else "stopped"
        return f"KafkaBroker({self.version}, {self.bootstrap}, {state}, {self.workdir})"


# --------------------------------------------------------------------------------------------
# Command line


async def _smoke(bootstrap: str, topic: str) -> list[str]:
    """aiokafka: produce, consume in a group, commit, a second consumer resumes after the commit."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    lines: list[str] = []
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i in range(10):
            await producer.send_and_wait(topic, f"m{i}".encode())
    finally:
        await producer.stop()

    def consumer() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id="smoke",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )

    first = consumer()
    await first.start()
    try:
        got: list[bytes] = []
        while len(got) < 4:
            batch = await first.getmany(timeout_ms=1000, max_records=4 - len(got))
            got += [m.value or b"" for messages in batch.values() for m in messages]
        await first.commit()
        lines.append(f"consumed {got} and committed")
    finally:
        await first.stop()
    second = consumer()
    await second.start()
    try:
        record = await second.getone()
        lines.append(f"second consumer resumed at offset {record.offset}: {record.value!r}")
        if record.offset != 4:
            raise KafkaInfraError(f"expected to resume at offset 4, got {record.offset}")
    finally:
        await second.stop()
    return lines


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", default=DEFAULT_KAFKA_VERSION, help="Kafka version (Maven Central)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build/cache the broker jars and print the lib directory")
    start = sub.add_parser("start", help="run a broker in the foreground until Ctrl-C")
    start.add_argument("--port", type=int, default=9092)
    start.add_argument("--controller-port", type=int, default=None)
    start.add_argument("--dir", type=Path, default=None, help="keep data here (default: a temp dir, deleted)")
    start.add_argument("--topic", action="append", default=[], help="create NAME or NAME:PARTITIONS")
    sub.add_parser("smoke", help="start a broker, run an aiokafka round trip, stop")
    args = parser.parse_args(argv)

    if args.command == "build":
        t0 = time.monotonic()
        print(ensure_kafka_libs(args.version, quiet=False))
        print(f"build: {time.monotonic() - t0:.1f}s", file=sys.stderr)
        return 0

    if args.command == "start":
        broker = KafkaBroker(
            version=args.version, port=args.port, controller_port=args.controller_port, workdir=args.dir
        )
        with _sigterm_as_exit(), broker:
            for spec in args.topic:
                name, _, parts = spec.partition(":")
                broker.create_topic(name, int(parts or 1))
            print(
                f"Kafka {broker.version} ready on {broker.bootstrap} (pid {broker.pid}, "
                f"start {broker.timings.get('start', 0):.1f}s, log {broker.log_path}); Ctrl-C stops it",
                flush=True,
            )
            try:
                while broker.is_running():
                    time.sleep(0.5)
                print(f"broker exited\n{broker.log_tail()}", file=sys.stderr)
                return 1
            except KeyboardInterrupt:
                print("stopping...", file=sys.stderr)
        return 0

    import asyncio

    t0 = time.monotonic()
    with KafkaBroker(version=args.version) as broker:
        print(f"broker up on {broker.bootstrap}: {broker.timings}", file=sys.stderr)
        broker.create_topic("smoke", 1)
        for line in asyncio.run(_smoke(broker.bootstrap, "smoke")):
            print(line)
        rss = broker.rss_bytes() or 0
        print(f"broker RSS {rss / 2**20:.0f} MiB", file=sys.stderr)
    print(f"smoke total: {time.monotonic() - t0:.1f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
