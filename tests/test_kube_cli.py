"""`canary-stream controller` as a process (kubeconfig of the RBAC-bound controller user, leader
election, Istio routing from the routers' factory) and `canary-stream promote|status` against it,
on the real kube-apiserver."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from canary_stream.kube.rest import DEPLOYMENTS, SERVICES, Kube
from kube_controller_helpers import (
    CANARIES,
    FakeKubelet,
    apply_rbac,
    canary_manifest,
    podinfo_deployment,
    set_image,
    wait_for,
    wait_phase,
)
from kube_fixtures import KubeCluster

pytestmark = pytest.mark.kube
ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "canary_stream.cli", *args]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT / "python")}


async def run_cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *cli(*args), env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


def canary_weight(vs: dict[str, Any]) -> int:
    route = vs["spec"]["http"][0]["route"]
    return next(int(r.get("weight", 0)) for r in route if r["destination"]["host"].endswith("-canary"))


async def test_controller_process_istio_promotion_by_cli(
    kube_cluster: KubeCluster, kube_api: Any, kube_namespace: str, tmp_path: Path
) -> None:
    admin = Kube(kube_api)
    ns = kube_namespace
    await apply_rbac(admin, "canary-controller")
    controller_kc = kube_cluster.kubeconfig(tmp_path / "controller.kubeconfig", kube_cluster.controller_token)
    admin_kc = kube_cluster.kubeconfig(tmp_path / "admin.kubeconfig")
    await admin.create(DEPLOYMENTS, ns, podinfo_deployment())
    # A long interval: only the manual promotion can finish this rollout within the test.
    manifest = canary_manifest(
        provider="istio", analysis={"interval": "60s", "threshold": 2, "maxWeight": 50, "stepWeight": 10}
    )
    await admin.create(CANARIES, ns, manifest)
    vs_path = f"/apis/networking.istio.io/v1/namespaces/{ns}/virtualservices/podinfo"
    ports = []
    for _ in range(2):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    api_port, ingest_port = ports
    async with FakeKubelet(admin, ns):
        proc = await asyncio.create_subprocess_exec(
            *cli("controller", "--kubeconfig", str(controller_kc), "-n", ns,
                 "--api", f"127.0.0.1:{api_port}", "--api-auth", "none", "--http", f"127.0.0.1:{ingest_port}",
                 "--lease-namespace", ns, "--lease-duration", "4", "--renew-deadline", "3",
                 "--retry-period", "1", "--log-level", "warning", "--finalise-delay", "1"),
            env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            await wait_phase(admin, ns, "podinfo", "Initialized", timeout=40)
            for svc in ("podinfo", "podinfo-primary", "podinfo-canary"):
                assert await admin.get(SERVICES, ns, svc) is not None, svc
            vs = await admin.request("GET", vs_path)
            assert canary_weight(vs) == 0
            await set_image(admin, ns, "podinfo", "ghcr.io/stefanprodan/podinfo:6.0.1")
            await wait_for(admin, ns, "podinfo", lambda c: (c.get("status") or {}).get("canaryWeight") == 10,
                           timeout=30, what="weight 10")  # fmt: skip
            assert canary_weight(await admin.request("GET", vs_path)) == 10
            code, out, err = await run_cli("promote", "podinfo", "-n", ns, "--kubeconfig", str(admin_kc))
            assert code == 0, err
            assert "promote requested" in out
            await wait_phase(admin, ns, "podinfo", "Succeeded", timeout=30)
            assert canary_weight(await admin.request("GET", vs_path)) == 0
            primary = await admin.get(DEPLOYMENTS, ns, "podinfo-primary")
            assert primary is not None
            assert primary["spec"]["template"]["spec"]["containers"][0]["image"].endswith(":6.0.1")
            # The verdict API runs in the same process, over the same Registry.
            body = await asyncio.to_thread(
                lambda: urllib.request.urlopen(
                    f"http://127.0.0.1:{api_port}/api/v1/canaries", timeout=10
                ).read()
            )
            listed = json.loads(body)
            ready = await asyncio.to_thread(
                lambda: urllib.request.urlopen(f"http://127.0.0.1:{api_port}/readyz", timeout=10).status
            )
            assert ready == 200  # the leader, with its aggregator and HTTP push source running
            assert "podinfo" in json.dumps(listed) and "Succeeded" in json.dumps(listed)
            code, out, err = await run_cli("status", "podinfo", "-n", ns, "--kubeconfig", str(admin_kc))
            assert code == 0, err
            assert "phase: Succeeded" in out and "condition Promoted=True" in out
            code, out, err = await run_cli("status", "nothere", "-n", ns, "--kubeconfig", str(admin_kc))
            assert code == 1 and "not found" in err
        finally:
            proc.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, stderr.decode()[-3000:]
    lease = await admin.request(
        "GET", f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/canary-stream-controller"
    )
    assert not lease["spec"].get("holderIdentity")  # released on SIGTERM
