"""Pure logic of the Kubernetes controller: primary derivation, config tracking, readiness rules,
revisions, manual annotations, status merge patches, the Canary CRD files."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from canary_stream.controller.manual import ACTION, SET_WEIGHT, annotations_for, parse_manual
from canary_stream.controller.scheduler import Command
from canary_stream.kube.objects import CanaryRef
from canary_stream.kube.rest import DEPLOYMENTS, LEASES, PODS
from canary_stream.kube.status import merge_diff
from canary_stream.workload.kubernetes import (
    config_refs,
    deployment_readiness,
    is_tracked,
    primary_config,
    primary_deployment,
    revision_of,
    rewrite_config_refs,
    selector_label,
)

OWNER = CanaryRef("canary-stream.dev", "test", "podinfo", "uid-1")
ROOT = Path(__file__).resolve().parent.parent


def target(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": "podinfo",
            "namespace": "test",
            "labels": {"app": "podinfo", "team": "a"},
            "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}", "keep": "me"},
        },
        "spec": {
            "replicas": 3,
            "minReadySeconds": 5,
            "selector": {"matchLabels": {"app": "podinfo"}},
            "template": {
                "metadata": {"labels": {"app": "podinfo", "tier": "web"}},
                "spec": {
                    "containers": [
                        {
                            "name": "podinfo",
                            "image": "podinfo:6.0.0",
                            "envFrom": [{"configMapRef": {"name": "env"}}],
                            "env": [
                                {"name": "T", "valueFrom": {"secretKeyRef": {"name": "tok", "key": "t"}}}
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "c", "configMap": {"name": "files"}},
                        {"name": "s", "secret": {"secretName": "certs"}},
                        {"name": "p", "projected": {"sources": [{"configMap": {"name": "proj"}}]}},
                    ],
                },
            },
            **spec,
        },
    }


def test_selector_label_prefers_app_then_name_then_k8s_name() -> None:
    assert selector_label(target()) == ("app", "podinfo")
    d = target()
    d["spec"]["selector"]["matchLabels"] = {"app.kubernetes.io/name": "x", "name": "y"}
    assert selector_label(d) == ("name", "y")
    d["spec"]["selector"]["matchLabels"] = {"other": "z"}
    with pytest.raises(ValueError, match="matchLabels must contain one of app, name"):
        selector_label(d)


def test_config_refs_finds_every_reference_kind() -> None:
    refs = config_refs(target()["spec"]["template"]["spec"])
    assert refs == {
        ("configmap", "env"),
        ("secret", "tok"),
        ("configmap", "files"),
        ("secret", "certs"),
        ("configmap", "proj"),
    }


def test_rewrite_config_refs_renames_only_tracked_and_leaves_input_alone() -> None:
    spec = target()["spec"]["template"]["spec"]
    before = copy.deepcopy(spec)
    out = rewrite_config_refs(spec, {("configmap", "env"), ("secret", "certs")})
    assert spec == before
    assert out["containers"][0]["envFrom"][0]["configMapRef"]["name"] == "env-primary"
    assert out["volumes"][1]["secret"]["secretName"] == "certs-primary"
    assert out["volumes"][0]["configMap"]["name"] == "files"  # not tracked
    assert out["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "tok"


def test_primary_deployment_rewrites_selector_labels_and_owner() -> None:
    d = primary_deployment(target(), OWNER, {("configmap", "env")}, 60)
    meta, spec = d["metadata"], d["spec"]
    assert meta["name"] == "podinfo-primary"
    assert meta["labels"] == {"app": "podinfo-primary", "team": "a"}
    assert meta["annotations"] == {"keep": "me"}
    assert meta["ownerReferences"] == [
        {
            "apiVersion": "canary-stream.dev/v1beta1",
            "kind": "Canary",
            "name": "podinfo",
            "uid": "uid-1",
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    assert spec["selector"] == {"matchLabels": {"app": "podinfo-primary"}}
    assert spec["template"]["metadata"]["labels"] == {"app": "podinfo-primary", "tier": "web"}
    assert spec["replicas"] == 3 and spec["minReadySeconds"] == 5 and spec["progressDeadlineSeconds"] == 60
    env_from = spec["template"]["spec"]["containers"][0]["envFrom"][0]
    assert env_from["configMapRef"]["name"] == "env-primary"


def test_primary_deployment_of_a_target_at_zero_replicas_gets_one() -> None:
    assert primary_deployment(target(replicas=0), OWNER, set(), 600)["spec"]["replicas"] == 1


def test_primary_config_copies_data_and_type() -> None:
    secret = {
        "kind": "Secret",
        "metadata": {"name": "tok", "namespace": "test", "labels": {"a": "b"}},
        "type": "Opaque",
        "data": {"t": "eA=="},
    }
    out = primary_config(secret, OWNER)
    assert out["kind"] == "Secret" and out["type"] == "Opaque" and out["data"] == {"t": "eA=="}
    assert out["metadata"]["name"] == "tok-primary" and out["metadata"]["labels"] == {"a": "b"}


def test_config_tracking_can_be_disabled_by_annotation() -> None:
    assert is_tracked({"metadata": {}})
    assert not is_tracked({"metadata": {"annotations": {"flagger.app/config-tracking": "disabled"}}})


def test_revision_changes_with_template_and_config_data_only() -> None:
    t = target()["spec"]["template"]
    base = revision_of(t, {})
    assert revision_of(copy.deepcopy(t), {}) == base
    t2 = copy.deepcopy(t)
    t2["spec"]["containers"][0]["image"] = "podinfo:6.0.1"
    assert revision_of(t2, {}) != base
    assert revision_of(t, {"configmap/env": "a"}) != revision_of(t, {"configmap/env": "b"})
    assert revision_of(t, {"configmap/env": "a", "secret/x": "b"}) == revision_of(
        t, {"secret/x": "b", "configmap/env": "a"}
    )


def dep_status(
    generation: int = 2,
    observed: int = 2,
    replicas: int = 2,
    updated: int = 2,
    available: int = 2,
    total: int | None = None,
    conditions: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "metadata": {"name": "podinfo", "generation": generation},
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": observed,
            "replicas": updated if total is None else total,
            "updatedReplicas": updated,
            "availableReplicas": available,
            "conditions": conditions or [],
        },
    }


NOW = 1_800_000_000.0


def test_readiness_rules_in_flaggers_order() -> None:
    assert deployment_readiness(dep_status(), 600, 100, NOW).ready
    r = deployment_readiness(dep_status(observed=1), 600, 100, NOW)
    assert not r.ready and r.retriable and "observed deployment generation" in r.message
    r = deployment_readiness(dep_status(updated=1), 600, 100, NOW)
    assert not r.ready and r.retriable and "1 out of 2 new replicas" in r.message
    r = deployment_readiness(dep_status(total=3), 600, 100, NOW)
    assert not r.ready and "1 old replicas are pending termination" in r.message
    r = deployment_readiness(dep_status(available=1), 600, 100, NOW)
    assert not r.ready and r.retriable and "1 of 2 (readyThreshold 100%)" in r.message
    # 50 % threshold: one of two available is enough
    assert deployment_readiness(dep_status(available=1), 600, 50, NOW).ready


def test_progress_deadline_exceeded_is_final() -> None:
    cond = [{"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]
    r = deployment_readiness(dep_status(available=0, conditions=cond), 600, 100, NOW)
    assert not r.ready and not r.retriable and "exceeded its progress deadline" in r.message


def test_unavailable_past_the_deadline_is_final() -> None:
    def conds(age: float) -> list[dict[str, Any]]:
        from canary_stream.kube.objects import micro_time

        return [
            {"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"},
            {
                "type": "Available",
                "status": "False",
                "reason": "MinimumReplicasUnavailable",
                "lastUpdateTime": micro_time(NOW - age),
            },
        ]

    young = deployment_readiness(dep_status(available=0, conditions=conds(30)), 60, 100, NOW)
    old = deployment_readiness(dep_status(available=0, conditions=conds(90)), 60, 100, NOW)
    assert not young.ready and young.retriable
    assert not old.ready and not old.retriable


def test_manual_annotations_parse_and_round_trip() -> None:
    assert parse_manual({}) == []
    cmds = parse_manual({ACTION: "Promote", SET_WEIGHT: "30"})
    assert [(c.command, c.weight) for c in cmds] == [(Command.SET_WEIGHT, 30), (Command.PROMOTE, None)]
    bad = parse_manual({ACTION: "explode", SET_WEIGHT: "130"})
    assert [c.command for c in bad] == [None, None]
    assert "set-weight" in bad[0].error and "explode" in bad[1].error
    for cmd in (Command.PROMOTE, Command.ABORT, Command.PAUSE, Command.RESUME):
        assert [c.command for c in parse_manual(annotations_for(cmd))] == [cmd]
    assert parse_manual(annotations_for(Command.SET_WEIGHT, 5))[0].weight == 5
    with pytest.raises(ValueError):
        annotations_for(Command.SET_WEIGHT, None)


def test_merge_diff_sends_changes_and_nulls_for_removed_keys() -> None:
    old = {
        "phase": "Progressing",
        "canaryWeight": 10,
        "trackedConfigs": {"configmap/a": "1", "secret/b": "2"},
    }
    new = {
        "phase": "Progressing",
        "canaryWeight": 20,
        "trackedConfigs": {"configmap/a": "1"},
        "iterations": 0,
    }
    assert merge_diff(old, new) == {"canaryWeight": 20, "trackedConfigs": {"secret/b": None}, "iterations": 0}
    assert merge_diff(new, new) == {}


def test_resource_paths() -> None:
    assert DEPLOYMENTS.path("ns", "d", "status") == "/apis/apps/v1/namespaces/ns/deployments/d/status"
    assert PODS.path() == "/api/v1/pods"
    assert LEASES.path("ns") == "/apis/coordination.k8s.io/v1/namespaces/ns/leases"
    assert (
        OWNER.resource.path("test", "podinfo")
        == "/apis/canary-stream.dev/v1beta1/namespaces/test/canaries/podinfo"
    )


def test_crd_files_match_the_generator_and_carry_our_additions() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen_crds", ROOT / "deploy" / "gen_crds.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    flagger = {
        d["spec"]["names"]["plural"]: d for d in yaml.safe_load_all(gen.DEFAULT_SOURCE.read_text()) if d
    }
    on_disk = yaml.safe_load((ROOT / "deploy" / "crds" / "canaries.yaml").read_text())
    assert on_disk == gen.canaries(flagger["canaries"])
    version = on_disk["spec"]["versions"][0]
    assert on_disk["spec"]["group"] == "canary-stream.dev" and version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"] if "priority" not in c] == [
        "Status",
        "Weight",
        "FailedChecks",
        "LastTransitionTime",
    ]
    analysis = version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["analysis"][
        "properties"
    ]
    assert "judge" in analysis
    assert {"stream", "noData"} <= set(analysis["metrics"]["items"]["properties"])
    for plural in ("metrictemplates", "alertproviders"):
        generated = getattr(gen, plural)(flagger[plural])
        assert yaml.safe_load((ROOT / "deploy" / "crds" / f"{plural}.yaml").read_text()) == generated
        assert generated["spec"]["group"] == "canary-stream.dev"


class _Stream:
    """A raw watch response: the given lines, then EOF."""

    def __init__(self, lines: list[dict[str, Any]]) -> None:
        import json

        self.lines = [json.dumps(x).encode() + b"\n" for x in lines]
        self.content = self

    async def readline(self) -> bytes:
        return self.lines.pop(0) if self.lines else b""

    def release(self) -> None:
        pass


class _ScriptedKube:
    """Lists and watch streams handed out in order (the 410 path cannot be provoked on a fresh
    apiserver: a watch from an old resourceVersion is served from etcd until it compacts)."""

    def __init__(self, lists: list[dict[str, Any]], watches: list[list[dict[str, Any]]]) -> None:
        self.lists = lists
        self.watches = watches
        self.watch_rvs: list[str] = []

    async def list(self, res: Any, namespace: Any = None, **query: Any) -> dict[str, Any]:
        return self.lists.pop(0)

    async def raw(self, method: str, path: str, *, query: dict[str, Any], timeout: float) -> _Stream:
        self.watch_rvs.append(query["resourceVersion"])
        if not self.watches:
            await asyncio.sleep(3600)
        return _Stream(self.watches.pop(0))


def _cm(name: str, rv: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv}}


async def test_informer_relists_on_410_and_reports_the_difference() -> None:
    from canary_stream.kube.rest import CONFIGMAPS
    from canary_stream.kube.watch import Informer

    def cm_list(rv: str, *items: dict[str, Any]) -> dict[str, Any]:
        return {"kind": "ConfigMapList", "metadata": {"resourceVersion": rv}, "items": list(items)}

    gone = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old"}
    kube = _ScriptedKube(
        lists=[cm_list("10", _cm("a", "5"), _cm("b", "6")), cm_list("20", _cm("a", "15"), _cm("c", "16"))],
        watches=[
            [
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}},
                {"type": "ERROR", "object": gone},
            ],
        ],
    )
    inf = Informer(kube, CONFIGMAPS, "ns")  # type: ignore[arg-type]
    seen: list[tuple[str, str]] = []

    async def consume() -> None:
        async for ev in inf.events():
            seen.append((ev.type, ev.object["metadata"]["name"]))

    task = asyncio.create_task(consume())
    for _ in range(100):
        if len(kube.watch_rvs) >= 2:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    assert seen == [("ADDED", "a"), ("ADDED", "b"), ("DELETED", "b"), ("MODIFIED", "a"), ("ADDED", "c")]
    assert kube.watch_rvs == ["10", "20"]  # the bookmark moved the RV; after 410 the new list's RV
    assert inf.relists == 2 and set(inf.cache) == {("ns", "a"), ("ns", "c")}


def test_controller_flags_and_environment(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from canary_stream.cli import build_parser
    from canary_stream.controller_cmd import controller_config

    monkeypatch.setenv("CANARY_STREAM_NAMESPACES", "a, b")
    args = build_parser().parse_args(["controller", "--flagger", "--identity", "me", "--finalise-delay", "2"])
    cfg = controller_config(args)
    assert cfg.namespaces == ("a", "b")
    assert cfg.groups == ("canary-stream.dev", "flagger.app")
    assert cfg.lease is not None and cfg.lease.identity == "me" and cfg.lease.namespace == "canary-stream"
    assert cfg.options.finalise_delay_s == 2.0 and cfg.mesh_provider == "istio"
    args = build_parser().parse_args(["controller", "-n", "x", "--no-leader-election"])
    cfg = controller_config(args)
    assert cfg.namespaces == ("x",) and cfg.lease is None and cfg.options.finalise_delay_s is None
    bad = build_parser().parse_args(["controller", "--lease-duration", "1", "--renew-deadline", "2"])
    assert bad.func(bad) == 2
    assert "lease: need leaseDuration > renewDeadline > retryPeriod" in capsys.readouterr().err


def test_global_notifier_flags_are_flaggers(monkeypatch: pytest.MonkeyPatch) -> None:
    from canary_stream.cli import build_parser
    from canary_stream.controller_cmd import controller_config

    def parse(argv: list[str]) -> Any:
        return build_parser().parse_args(argv)  # the environment is read when the parser is built

    assert controller_config(parse(["controller", "--no-leader-election"])).global_notifier is None
    monkeypatch.setenv("CANARY_STREAM_SLACK_URL", "https://hooks.slack.test/T0/B0/x")
    cfg = controller_config(
        parse(
            ["controller", "--no-leader-election", "--slack-channel", "deploys", "--cluster-name", "prod-eu"]
        )
    )
    n = cfg.global_notifier
    assert (n.type, n.address, n.channel, n.username) == (
        "slack",
        "https://hooks.slack.test/T0/B0/x",
        "deploys",
        "flagger",
    )
    assert cfg.cluster_name == "prod-eu"
    monkeypatch.delenv("CANARY_STREAM_SLACK_URL")
    teams = controller_config(
        parse(["controller", "--no-leader-election", "--msteams-url", "https://teams.test/h"])
    )
    assert teams.global_notifier.type == "msteams"
    with pytest.raises(ValueError, match="--slack-url"):
        controller_config(parse(["controller", "--no-leader-election", "--slack-url", "hooks.slack.test/x"]))


def test_controller_builds_every_source_kind_run_has(monkeypatch: pytest.MonkeyPatch) -> None:
    """The controller reuses `run`'s source builders: every source flag `run` knows must exist on
    `controller` too (a missing one is an AttributeError at start-up)."""
    from canary_stream.cli import build_parser
    from canary_stream.run_cmd import build_sources

    monkeypatch.setenv("CANARY_STREAM_ALS", "127.0.0.1:0")
    args = build_parser().parse_args(["controller", "--http", "127.0.0.1:0"])
    names = sorted(type(s).__name__ for s in build_sources(args))
    assert names == ["EnvoyAlsSource", "HttpPushSource"]
