#!/usr/bin/env python3
"""A real kube-apiserver + etcd for tests and local use, built from the Go module proxy.

No Docker, kind, k3s or binary download: ``infra/kube/`` is a small Go module that requires
``k8s.io/kubernetes`` (each staging module replaced by its published ``v0.x.y`` twin) and the etcd
server at the version Kubernetes pins.

* ``ensure_binaries()`` runs ``infra/kube/build.sh`` once and caches ``kube-apiserver`` and ``etcd`` in
  ``$CANARY_STREAM_CACHE/kube-<version>/bin`` (default cache root ``~/.cache/canary-stream``). The
  stamp file written last holds the digest of go.mod/go.sum, so an interrupted build or a changed
  module is rebuilt; otherwise the call is a quick no-op. The first build takes 15-25 min on 2 cores.
* ``KubeCluster`` starts etcd (``--unsafe-no-fsync``, data on /dev/shm when possible) and
  kube-apiserver on free ports of 127.0.0.1 with static token authentication and RBAC authorization,
  waits for ``/readyz`` and namespace ``default``, and offers ``url``, ``ca_file``, ``admin_token``
  (group ``system:masters``), ``controller_token`` (user ``canary-controller``, no groups: RBAC
  applies), ``kubeconfig()``, ``api_client()`` and ``apply_crds()``.

There is no controller-manager, scheduler or kubelet: Deployments get no ReplicaSets and no status
(tests patch ``deployments/status``), namespaces never finish deleting, nothing garbage-collects.

Command line::

    python infra/kube_apiserver.py build    # build/cache the binaries, print the bin dir
    python infra/kube_apiserver.py start    # run a cluster in the foreground, print the kubeconfig path
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, cast

KUBE_MODULE = Path(__file__).resolve().parent / "kube"
BUILD_SCRIPT = KUBE_MODULE / "build.sh"
STAMP_NAME = ".complete"
BINARIES = ("kube-apiserver", "etcd")

ADMIN_USER = "canary-admin"
CONTROLLER_USER = "canary-controller"


class KubeInfraError(RuntimeError):
    """The binaries could not be built, or etcd / kube-apiserver did not start or answer."""


# --------------------------------------------------------------------------------------------
# Building the binaries


def kube_version() -> str:
    """The ``k8s.io/kubernetes`` version pinned by ``infra/kube/go.mod`` (e.g. ``v1.34.4``)."""
    text = (KUBE_MODULE / "go.mod").read_text()
    match = re.search(r"^\s*k8s\.io/kubernetes (v\S+)", text, re.MULTILINE)
    if match is None:
        raise KubeInfraError(f"{KUBE_MODULE / 'go.mod'} does not require k8s.io/kubernetes")
    return match.group(1)


def cache_root() -> Path:
    """``$CANARY_STREAM_CACHE`` or ``~/.cache/canary-stream``."""
    env = os.environ.get("CANARY_STREAM_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "canary-stream"


def bin_dir(version: str | None = None) -> Path:
    """Where the binaries for ``version`` (default: the pinned one) are cached."""
    return cache_root() / f"kube-{version or kube_version()}" / "bin"


def _module_digest() -> str:
    # Same digest as build.sh: sha256 of go.mod followed by go.sum.
    data = (KUBE_MODULE / "go.mod").read_bytes() + (KUBE_MODULE / "go.sum").read_bytes()
    return hashlib.sha256(data).hexdigest()


def _binaries_complete(directory: Path) -> bool:
    stamp = directory / STAMP_NAME
    if not stamp.is_file() or any(not os.access(directory / name, os.X_OK) for name in BINARIES):
        return False
    return stamp.read_text().strip() == _module_digest()


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text.splitlines()[-lines:])


def ensure_binaries(*, quiet: bool = True) -> Path:
    """Return the directory holding ``kube-apiserver`` and ``etcd``, building them on first use.

    ``build.sh`` holds a file lock while it builds (concurrent callers wait, then reuse the result)
    and writes the stamp after the binaries are in place (an interrupted build is redone). Needs
    ``go`` on PATH only when a build is due.
    """
    directory = bin_dir()
    if _binaries_complete(directory):
        return directory
    if shutil.which("go") is None:
        raise KubeInfraError("go not found on PATH: Go is needed once to build kube-apiserver and etcd")
    directory.parent.mkdir(parents=True, exist_ok=True)
    log = directory.parent / "build.log"
    if not quiet:
        print(f"building kube-apiserver + etcd (Go, first use only; log {log})...", file=sys.stderr)
    started = time.monotonic()
    with open(log, "a") as out:
        rc = subprocess.run(
            ["bash", str(BUILD_SCRIPT)], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        ).returncode
    if rc != 0 or not _binaries_complete(directory):
        raise KubeInfraError(f"{BUILD_SCRIPT} failed ({rc}); log {log}:\n{_tail(log)}")
    if not quiet:
        print(f"ready in {time.monotonic() - started:.0f}s", file=sys.stderr)
    return directory


# --------------------------------------------------------------------------------------------
# The cluster


def free_ports(count: int) -> list[int]:
    """Ports the kernel hands out on 127.0.0.1 (all held open together, so they differ)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def _scratch_parent() -> str | None:
    """/dev/shm when usable (etcd's data on tmpfs is fast), else the default temp dir."""
    shm = Path("/dev/shm")
    return str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None


_live: weakref.WeakSet[KubeCluster] = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:  # the control plane must never outlive the Python process
    for cluster in list(_live):
        cluster.stop(timeout=2.0)


class KubeCluster:
    """etcd + kube-apiserver on 127.0.0.1. Use as a context manager, or ``start()`` / ``stop()``."""

    def __init__(
        self,
        *,
        workdir: Path | str | None = None,
        port: int | None = None,
        startup_timeout: float = 120.0,
        extra_apiserver_args: Sequence[str] = (),
    ) -> None:
        ports = free_ports(3)
        self.port = port if port is not None else ports[0]
        self.etcd_port, self.etcd_peer_port = ports[1], ports[2]
        self.url = f"https://127.0.0.1:{self.port}"
        self.startup_timeout = startup_timeout
        self.extra_apiserver_args = tuple(extra_apiserver_args)
        self.admin_token = "admin-" + os.urandom(16).hex()
        self.controller_token = "ctrl-" + os.urandom(16).hex()
        self._own_workdir = workdir is None
        self.workdir = (
            Path(workdir)
            if workdir is not None
            else Path(tempfile.mkdtemp(prefix="kube-", dir=_scratch_parent()))
        )
        self.ca_file = self.workdir / "certs" / "apiserver.crt"
        self.etcd_log_path = self.workdir / "etcd.log"
        self.log_path = self.workdir / "kube-apiserver.log"
        self.start_seconds: float | None = None
        self._etcd: subprocess.Popen[bytes] | None = None
        self._apiserver: subprocess.Popen[bytes] | None = None
        self._ssl: ssl.SSLContext | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> KubeCluster:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> KubeCluster:
        """Build (first use), start etcd then kube-apiserver, wait until both are ready."""
        try:
            binaries = ensure_binaries(quiet=False)
        except BaseException:
            self.stop()  # nothing ran yet: no log worth keeping
            raise
        started = time.monotonic()
        deadline = started + self.startup_timeout
        _live.add(self)
        try:
            self._write_secrets()
            self._etcd = self._spawn([str(binaries / "etcd"), *self._etcd_args()], self.etcd_log_path)
            self._wait_etcd(deadline)
            self._apiserver = self._spawn(
                [str(binaries / "kube-apiserver"), *self._apiserver_args()], self.log_path
            )
            self._wait_apiserver(deadline)
        except BaseException:
            # Keep the logs for the report, drop etcd's data (its WAL preallocates 64 MB, on tmpfs).
            self.stop(keep_workdir=True)
            shutil.rmtree(self.workdir / "etcd", ignore_errors=True)
            raise
        self.start_seconds = time.monotonic() - started
        return self

    def stop(self, timeout: float = 15.0, *, keep_workdir: bool = False) -> None:
        """SIGTERM kube-apiserver then etcd (SIGKILL after ``timeout``); remove the temp dir."""
        for attr in ("_apiserver", "_etcd"):
            proc: subprocess.Popen[bytes] | None = getattr(self, attr)
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            setattr(self, attr, None)
        _live.discard(self)
        if self._own_workdir and not keep_workdir and not os.environ.get("CANARY_STREAM_KEEP_KUBE"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def running(self) -> bool:
        """Both processes are alive."""
        return all(p is not None and p.poll() is None for p in (self._etcd, self._apiserver))

    def pids(self) -> dict[str, int]:
        """Process ids of the running components (for RSS measurements)."""
        return {
            name: proc.pid
            for name, proc in (("etcd", self._etcd), ("kube-apiserver", self._apiserver))
            if proc is not None and proc.poll() is None
        }

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the apiserver's and etcd's logs (for failure reports)."""
        return (
            f"--- kube-apiserver ({self.log_path})\n{_tail(self.log_path, lines)}\n"
            f"--- etcd ({self.etcd_log_path})\n{_tail(self.etcd_log_path, lines // 2)}"
        )

    # -- start-up ----------------------------------------------------------------------------

    def _write_secrets(self) -> None:
        (self.workdir / "certs").mkdir(parents=True, exist_ok=True)
        sa_key = self.workdir / "sa.key"
        if not sa_key.exists():
            rc = subprocess.run(
                ["openssl", "genrsa", "-out", str(sa_key), "2048"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                stdin=subprocess.DEVNULL,
            )
            if rc.returncode != 0:
                raise KubeInfraError(f"openssl genrsa failed: {rc.stderr.decode(errors='replace')}")
        # token,user,uid[,"group1,group2"]
        (self.workdir / "tokens.csv").write_text(
            f'{self.admin_token},{ADMIN_USER},1,"system:masters"\n{self.controller_token},{CONTROLLER_USER},2\n'
        )

    def _etcd_args(self) -> list[str]:
        client = f"http://127.0.0.1:{self.etcd_port}"
        peer = f"http://127.0.0.1:{self.etcd_peer_port}"
        return [
            "--name=default",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            "--unsafe-no-fsync",
            "--log-level=warn",
        ]

    def _apiserver_args(self) -> list[str]:
        sa_key = self.workdir / "sa.key"
        return [
            f"--etcd-servers=http://127.0.0.1:{self.etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={self.port}",
            f"--cert-dir={self.workdir / 'certs'}",
            f"--service-account-issuer={self.url}",
            f"--service-account-key-file={sa_key}",
            f"--service-account-signing-key-file={sa_key}",
            "--service-cluster-ip-range=10.0.0.0/24",
            "--endpoint-reconciler-type=none",
            "--authorization-mode=RBAC",
            f"--token-auth-file={self.workdir / 'tokens.csv'}",
            "--disable-admission-plugins=ServiceAccount",
            "--allow-privileged=true",
            "--profiling=false",
            "--enable-priority-and-fairness=false",
            *self.extra_apiserver_args,
        ]

    def _spawn(self, cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
        with open(log, "ab") as out:
            return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def _check_alive(self, proc: subprocess.Popen[bytes] | None, name: str) -> None:
        if proc is None or proc.poll() is not None:
            code = None if proc is None else proc.returncode
            raise KubeInfraError(f"{name} exited ({code}) during start-up\n{self.log_tail()}")

    def _wait_etcd(self, deadline: float) -> None:
        url = f"http://127.0.0.1:{self.etcd_port}/health"
        while True:
            self._check_alive(self._etcd, "etcd")
            try:
                with urllib.request.urlopen(url, timeout=2) as resp:
                    if json.loads(resp.read()).get("health") == "true":
                        return
            except (OSError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise KubeInfraError(f"etcd not healthy at {url} in time\n{self.log_tail()}")
            time.sleep(0.05)

    def _wait_apiserver(self, deadline: float) -> None:
        # 1. /readyz answers 200 (needs the self-signed serving cert, written at start-up)
        last = "no answer"
        while True:
            self._check_alive(self._apiserver, "kube-apiserver")
            if self.ca_file.is_file():
                try:
                    status, body = self.request("GET", "/readyz")
                    if status == 200:
                        break
                    last = f"{status} {body[:300]!r}"
                except (OSError, ssl.SSLError) as exc:
                    last = repr(exc)
                    self._ssl = None  # the cert file may have been read half-written
            if time.monotonic() > deadline:
                raise KubeInfraError(f"kube-apiserver /readyz not ready: {last}\n{self.log_tail()}")
            time.sleep(0.1)
        # 2. namespace default exists (the apiserver's own bootstrap controller creates it)
        while self.request("GET", "/api/v1/namespaces/default")[0] != 200:
            self._check_alive(self._apiserver, "kube-apiserver")
            if time.monotonic() > deadline:
                raise KubeInfraError(f"namespace default never appeared\n{self.log_tail()}")
            time.sleep(0.1)

    # -- clients -----------------------------------------------------------------------------

    def ssl_context(self) -> ssl.SSLContext:
        """Verifies the apiserver's self-signed serving certificate (``ca_file``)."""
        if self._ssl is None:
            self._ssl = ssl.create_default_context(cafile=str(self.ca_file))
        return self._ssl

    def request(
        self, method: str, path: str, body: Any = None, *, token: str | None = None, timeout: float = 10.0
    ) -> tuple[int, bytes]:
        """A plain synchronous HTTPS request (JSON body) as admin or ``token``; returns (status, body)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {token or self.admin_token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.ssl_context()) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def kubeconfig(self, path: Path | str, token: str | None = None) -> Path:
        """Write a kubeconfig for this cluster (admin unless ``token`` is given); returns its path."""
        user = "admin" if token is None or token == self.admin_token else "user"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "canary-stream",
                    "cluster": {"server": self.url, "certificate-authority": str(self.ca_file)},
                }
            ],
            "users": [{"name": user, "user": {"token": token or self.admin_token}}],
            "contexts": [{"name": "canary-stream", "context": {"cluster": "canary-stream", "user": user}}],
            "current-context": "canary-stream",
        }
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(config, indent=2) + "\n")  # JSON is YAML
        target.chmod(0o600)
        return target

    def client_configuration(self, token: str | None = None) -> Any:
        """A ``kubernetes_asyncio.client.Configuration`` for this cluster (admin unless ``token``)."""
        from kubernetes_asyncio import client

        conf = client.Configuration(host=self.url)
        conf.ssl_ca_cert = str(self.ca_file)
        conf.verify_ssl = True
        conf.api_key = {"BearerToken": token or self.admin_token}
        conf.api_key_prefix = {"BearerToken": "Bearer"}
        return conf

    def api_client(self, token: str | None = None) -> Any:
        """A ``kubernetes_asyncio.client.ApiClient`` (admin unless ``token``); close it after use."""
        from kubernetes_asyncio import client

        return client.ApiClient(configuration=self.client_configuration(token))

    async def apply_crds(self, paths: Iterable[Path | str], *, timeout: float = 60.0) -> list[str]:
        """Create (or replace) every CustomResourceDefinition in the YAML files through the API, then
        wait until each is Established. Returns the CRD names. Documents of other kinds are ignored."""
        import yaml
        from kubernetes_asyncio import client

        # libyaml's loader: the pure-Python one takes seconds for the 1.2 MB of upstream CRDs.
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        docs: list[dict[str, Any]] = []
        for path in paths:
            with open(path) as fh:
                docs.extend(
                    d
                    for d in yaml.load_all(fh, Loader=loader)
                    if isinstance(d, dict) and d.get("kind") == "CustomResourceDefinition"
                )
        names: list[str] = []
        async with self.api_client() as api:
            ext = client.ApiextensionsV1Api(api)

            # Raw JSON answers (_preload_content=False): turning a 400 KB CRD into client models
            # costs about a second of CPU each time.
            async def read(name: str) -> dict[str, Any]:
                resp: Any = await ext.read_custom_resource_definition(name, _preload_content=False)
                return cast(dict[str, Any], json.loads(await resp.read()))

            for doc in docs:
                name = doc["metadata"]["name"]
                names.append(name)
                try:
                    # A dict body is sent as is.
                    await ext.create_custom_resource_definition(cast(Any, doc), _preload_content=False)
                except client.ApiException as exc:
                    if exc.status != 409:
                        raise KubeInfraError(f"creating CRD {name}: {exc.status} {exc.body!r}") from exc
                    current = await read(name)
                    body = {
                        **doc,
                        "metadata": {
                            **doc["metadata"],
                            "resourceVersion": current["metadata"]["resourceVersion"],
                        },
                    }
                    await ext.replace_custom_resource_definition(
                        name, cast(Any, body), _preload_content=False
                    )
            deadline = time.monotonic() + timeout
            for name in names:
                while True:
                    conditions = (await read(name)).get("status", {}).get("conditions") or []
                    if any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions):
                        break
                    if time.monotonic() > deadline:
                        raise KubeInfraError(f"CRD {name} not Established after {timeout}s: {conditions}")
                    await asyncio.sleep(0.05)
        return names


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB (from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# --------------------------------------------------------------------------------------------
# Command line


def main(argv: list[str] | None = None) -> int:
    """``build``: print the bin dir; ``start``: run a cluster until Ctrl-C, print its kubeconfig."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("build", help="build/cache kube-apiserver and etcd, print the bin directory")
    start = sub.add_parser("start", help="run a cluster in the foreground (Ctrl-C stops)")
    start.add_argument("--port", type=int, default=None, help="apiserver port (default: a free one)")
    start.add_argument(
        "--crds", nargs="*", default=None, help="CRD YAML files to apply (default: tests/crds + deploy/crds)"
    )
    start.add_argument("--kubeconfig", default=None, help="where to write the admin kubeconfig")
    args = parser.parse_args(argv)
    if args.command == "build":
        print(ensure_binaries(quiet=False))
        return 0
    if args.command not in (None, "start"):
        parser.error(f"unknown command {args.command}")
    port = getattr(args, "port", None)
    crds = getattr(args, "crds", None)
    if crds is None:
        root = Path(__file__).resolve().parent.parent
        crds = sorted(map(str, (root / "tests" / "crds" / "upstream").rglob("*.yaml")))
        crds += sorted(map(str, (root / "deploy" / "crds").glob("*.yaml")))
    # SIGTERM stops the cluster like Ctrl-C does (atexit hooks do not run on a signal death).
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    with KubeCluster(port=port) as cluster:
        names = asyncio.run(cluster.apply_crds(crds))
        path = cluster.kubeconfig(getattr(args, "kubeconfig", None) or cluster.workdir / "kubeconfig")
        ctrl = cluster.kubeconfig(cluster.workdir / "kubeconfig-controller", token=cluster.controller_token)
        pids = cluster.pids()
        print(f"kube-apiserver {kube_version()} at {cluster.url} (started in {cluster.start_seconds:.1f}s)")
        print(
            f"{len(names)} CRDs established; RSS "
            + ", ".join(f"{n} {rss_kib(p) // 1024} MiB" for n, p in pids.items())
        )
        print(f"controller kubeconfig (user {CONTROLLER_USER}, RBAC applies): {ctrl}")
        print(f"admin kubeconfig: {path}")
        print(f"export KUBECONFIG={path}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while cluster.running:
                time.sleep(0.5)
        if not cluster.running:
            print(cluster.log_tail(), file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
