"""Canary spec: loading (Flagger manifests unchanged), field-path errors, strategy, schedule, validate."""

from __future__ import annotations

import copy
import itertools
import json
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from canary_stream.spec.duration import format_duration, parse_duration
from canary_stream.spec.errors import SpecError
from canary_stream.spec.load import load_canary, load_documents, parse_canary
from canary_stream.spec.model import Analysis, Canary, CanarySpec, Strategy
from canary_stream.spec.schedule import max_weight, next_step_weight, plan
from canary_stream.spec.validate_cmd import main

DATA = Path(__file__).parent / "data" / "canaries"
CRD = DATA / "_flagger-crd.yaml"


def base_doc(**analysis: Any) -> dict[str, Any]:
    """A minimal valid Flagger canary; `analysis` replaces the analysis block."""
    return {
        "apiVersion": "flagger.app/v1beta1",
        "kind": "Canary",
        "metadata": {"name": "podinfo", "namespace": "test"},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "podinfo"},
            "service": {"port": 9898},
            "analysis": analysis or {"interval": "1m", "threshold": 5, "stepWeight": 10, "maxWeight": 50},
        },
    }


def errors_of(doc: dict[str, Any]) -> dict[str, str]:
    """path -> message of every error `doc` has (empty when valid)."""
    try:
        parse_canary(doc)
    except SpecError as exc:
        return {e.path: e.message for e in exc.errors}
    return {}


# ---------------------------------------------------------------------------------------------
# durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("1m", 60), ("1h30m", 5400), ("1.5s", 1.5), ("250ms", 0.25), ("0", 0), ("2m30s", 150)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1 minute", "m", "10", "1d", "s1", "1m x"])
def test_unparsable_duration_raises(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [(90, "1m30s"), (5, "5s"), (3600, "1h"), (0.25, "250ms")])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


def test_short_intervals_are_kept_down_to_one_second() -> None:
    # Flagger would raise 5s to 10s; canary-stream keeps it, and only lifts sub-second values to 1s.
    assert Analysis(interval="5s", stepWeight=10).interval_seconds == 5.0
    assert Analysis(interval="500ms", stepWeight=10).interval_seconds == 1.0


def test_unparsable_interval_is_an_error_not_flaggers_silent_60s() -> None:
    errs = errors_of(base_doc(interval="one minute", stepWeight=10))
    assert "spec.analysis.interval" in errs
    assert "invalid duration" in errs["spec.analysis.interval"]


# ---------------------------------------------------------------------------------------------
# the CRD is the authority: every property under spec is accepted


def _crd_spec_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return schema


def _field_model(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside `X | None`, `list[X]`, `Annotated[X, ...]`, or None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _field_model(arg)
        if found is not None:
            return found
    return None


def _unaccepted(model: type[BaseModel], schema: dict[str, Any], path: str, seen: list[str]) -> list[str]:
    fields = {(f.alias or name): f for name, f in model.model_fields.items()}
    missing = []
    for prop, sub in schema.get("properties", {}).items():
        seen.append(f"{path}.{prop}")
        field = fields.get(prop)
        if field is None:
            missing.append(f"{path}.{prop}")
            continue
        nested = _field_model(field.annotation)
        sub_schema = sub.get("items", sub) if sub.get("type") == "array" else sub
        if nested is not None and "properties" in sub_schema:
            missing += _unaccepted(nested, sub_schema, f"{path}.{prop}", seen)
    return missing


def test_every_crd_spec_property_has_a_model_field() -> None:
    seen: list[str] = []
    assert _unaccepted(CanarySpec, _crd_spec_schema(), "spec", seen) == []
    # the walk really went through the CRD, down to nested typed objects
    assert {"spec.analysis.sessionAffinity.sameSite", "spec.service.unmanagedMetadata.labels"} <= set(seen)
    assert "spec.analysis.metrics.thresholdRange.min" in seen
    assert len(seen) > 80


def _synthesize(schema: dict[str, Any], name: str = "") -> Any:
    """A value for every property the schema declares (enums: first non-empty value; durations
    where the CRD has a duration pattern or the name is a timeout, which Istio reads as one)."""
    if "enum" in schema:
        return next(v for v in schema["enum"] if v != "")
    if schema.get("x-kubernetes-int-or-string"):
        return 8080
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        if "properties" in schema:
            return {k: _synthesize(v, k) for k, v in schema["properties"].items()}
        extra = schema.get("additionalProperties")
        return {"key": _synthesize(extra)} if isinstance(extra, dict) else {}
    if kind == "array":
        return [_synthesize(schema.get("items", {"type": "string"}))]
    if kind == "boolean":
        return True
    if kind in ("number", "integer"):
        return 1
    if ("pattern" in schema and "m|s" in schema["pattern"]) or name.lower().endswith("timeout"):
        return "30s"
    if schema.get("format") == "url":
        return "http://flagger-loadtester.test/"
    return "x"


def test_a_manifest_using_every_crd_property_validates() -> None:
    spec = _synthesize(_crd_spec_schema())
    doc = {"apiVersion": "flagger.app/v1beta1", "kind": "Canary", "metadata": {"name": "all"}, "spec": spec}
    canary = Canary.model_validate(doc)  # types, enums, ranges, durations of every field
    assert canary.spec.analysis is not None
    assert canary.spec.analysis.session_affinity is not None
    assert canary.spec.autoscaler_ref is not None and canary.spec.autoscaler_ref.primary_scaler_replicas
    assert canary.spec.service.target_port == 8080
    assert canary.spec.analysis.alerts[0].provider_ref.name == "x"


def test_unknown_field_is_reported_at_its_path() -> None:
    doc = base_doc(interval="1m", stepweight=10, stepWeight=10)
    assert "unknown field" in errors_of(doc)["spec.analysis.stepweight"]


# ---------------------------------------------------------------------------------------------
# Flagger's examples load unchanged


def test_podinfo_canary_with_step_weight() -> None:
    c = load_canary(DATA / "podinfo-stepweight.yaml")
    a = c.spec.analysis
    assert a is not None
    assert (c.name, c.namespace, c.api_version) == ("podinfo", "test", "flagger.app/v1beta1")
    assert (a.step_weight, a.max_weight, a.threshold, a.interval_seconds) == (10, 50, 5, 60.0)
    assert [m.name for m in a.metrics] == ["request-success-rate", "request-duration"]
    assert a.metrics[0].threshold_range is not None and a.metrics[0].threshold_range.min == 99
    assert a.metrics[1].interval_seconds == 30.0
    assert [(w.name, w.type) for w in a.webhooks] == [
        ("acceptance-test", "pre-rollout"),
        ("load-test", "rollout"),
    ]
    assert a.webhooks[0].timeout_seconds == 30.0
    assert c.spec.service.retries == {
        "attempts": 3,
        "perTryTimeout": "1s",
        "retryOn": "gateway-error,connect-failure,refused-stream",
    }
    assert c.spec.progress_deadline_seconds == 60
    assert c.strategy() is Strategy.CANARY
    assert plan(c).weights == [10, 20, 30, 40, 50]


def test_ab_testing_with_cookie_match() -> None:
    c = load_canary(DATA / "ab-testing-cookie.yaml")
    assert c.strategy() is Strategy.AB_TESTING
    assert c.spec.analysis is not None
    assert c.spec.analysis.match[1]["headers"]["cookie"]["regex"] == "^(.*?;)?(type=insider)(;.*)?$"
    s = plan(c)
    assert s.iterations == 10
    assert [st.route for st in s.steps] == ["match"] * 10
    assert s.weights == [100]


def test_blue_green_with_mirror() -> None:
    c = load_canary(DATA / "blue-green-mirror.yaml")
    assert c.strategy() is Strategy.BLUE_GREEN
    s = plan(c)
    assert s.mirror and s.mirror_weight == 100 and s.iterations == 10
    assert all(step.mirrored and step.canary_weight == 0 for step in s.steps[:10])
    assert s.steps[-1].canary_weight == 100 and not s.steps[-1].mirrored  # switch before promotion
    assert s.weights == [100]


def test_step_weights_ladder_and_promotion_steps() -> None:
    s = plan(load_canary(DATA / "step-weights.yaml"))
    assert s.weights == [1, 2, 10, 80]
    assert s.max_weight == 80
    assert s.promotion_weights == [50, 20, 0]  # stepWeightPromotion 30 from 80


def test_streaming_canary_and_template_in_one_file() -> None:
    docs = load_documents(DATA / "streaming.yaml")
    assert len(docs.canaries) == 1 and len(docs.templates) == 1
    c = docs.canaries[0]
    a = c.spec.analysis
    assert a is not None and c.api_version == "canary-stream.dev/v1beta1"
    assert (a.judge.false_rollback_rate, a.judge.promotion_error_rate, a.judge.min_requests) == (
        0.01,
        0.1,
        200,
    )
    assert a.interval_seconds == 5.0
    by_name = {m.name: m for m in a.metrics}
    template = docs.template_for(by_name["not-found-percentage"], c.namespace)
    assert template is not None and template.spec.stream is not None
    assert template.spec.stream.kind == "status-rate" and template.spec.stream.codes == [404]
    p90 = by_name["p90-latency"].stream
    assert p90 is not None and p90.quantile == 0.9
    assert by_name["upstream-failures"].no_data == "fail"
    assert by_name["p90-latency"].no_data == "insufficient"
    assert docs.warnings == []  # the template is in the file


def test_deprecated_canary_analysis_is_read_as_analysis() -> None:
    doc = base_doc()
    doc["spec"]["canaryAnalysis"] = doc["spec"].pop("analysis")
    canary, warnings = parse_canary(doc)
    assert canary.spec.analysis is not None and canary.spec.analysis.step_weight == 10
    assert [w.path for w in warnings] == ["spec.canaryAnalysis"]
    doc["spec"]["canaryAnalysis"]["stepWeight"] = 500
    assert "spec.canaryAnalysis.stepWeight" in errors_of(doc)  # the path the user wrote


def test_knative_target_needs_no_service_but_a_deployment_does() -> None:
    doc = base_doc()
    del doc["spec"]["service"]
    assert "spec.service" in errors_of(doc)
    doc["spec"]["targetRef"] = {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "podinfo"}
    doc["spec"]["provider"] = "knative"
    assert errors_of(doc) == {}


def test_models_are_frozen_with_snake_case_attributes() -> None:
    c = load_canary(DATA / "podinfo-stepweight.yaml")
    with pytest.raises(ValidationError):
        c.spec.suspend = True  # type: ignore[misc]
    assert c.spec.skip_analysis is False and c.spec.revert_on_deletion is False


def test_defaults() -> None:
    doc = base_doc(stepWeight=10)
    del doc["spec"]["analysis"]["stepWeight"]
    doc["spec"]["analysis"] = {"stepWeight": 10}
    c, _ = parse_canary(doc)
    a = c.spec.analysis
    assert a is not None
    assert (a.interval_seconds, a.max_failed_checks, a.primary_ready_threshold) == (60.0, 1, 100)
    assert c.spec.progress_deadline_seconds == 600
    assert (a.judge.false_rollback_rate, a.judge.promotion_error_rate, a.judge.enabled) == (0.01, 0.1, True)
    assert max_weight(a) == 100


def test_slo_error_rate_derived_from_success_rate_minimum() -> None:
    a = Analysis.model_validate(
        {"stepWeight": 10, "metrics": [{"name": "request-success-rate", "thresholdRange": {"min": 99}}]}
    )
    assert a.effective_slo_error_rate() == pytest.approx(0.01)
    explicit = Analysis.model_validate({"stepWeight": 10, "judge": {"sloErrorRate": 0.05}})
    assert explicit.effective_slo_error_rate() == 0.05
    assert Analysis(stepWeight=10).effective_slo_error_rate() is None


def test_empty_webhook_type_means_rollout() -> None:
    doc = base_doc(stepWeight=10, webhooks=[{"name": "load", "type": "", "url": "http://lt/"}])
    canary, _ = parse_canary(doc)
    assert canary.spec.analysis is not None and canary.spec.analysis.webhooks_of("rollout")[0].name == "load"


# ---------------------------------------------------------------------------------------------
# apiVersion


@pytest.mark.parametrize("api", ["flagger.app/v1beta1", "canary-stream.dev/v1beta1"])
def test_both_groups_are_accepted(api: str) -> None:
    doc = base_doc()
    doc["apiVersion"] = api
    assert errors_of(doc) == {}


@pytest.mark.parametrize("api", ["flagger.app/v1alpha3", "argoproj.io/v1alpha1", None])
def test_other_api_versions_are_rejected_naming_api_version(api: str | None) -> None:
    doc = base_doc()
    doc["apiVersion"] = api
    assert "apiVersion" in errors_of(doc)


def test_unknown_kind_in_a_file(tmp_path: Path) -> None:
    f = tmp_path / "rollout.yaml"
    f.write_text("apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata: {name: x}\n")
    with pytest.raises(SpecError) as exc:
        load_documents(f)
    assert {e.path for e in exc.value.errors} == {"kind", "apiVersion"}


# ---------------------------------------------------------------------------------------------
# validation: every error, each at its path


def test_invalid_example_lists_every_error() -> None:
    with pytest.raises(SpecError) as exc:
        load_canary(DATA / "invalid.yaml")
    paths = {e.path for e in exc.value.errors}
    assert paths == {
        "spec.analysis.interval",
        "spec.analysis.stepWeights",
        "spec.analysis.stepWeights[1]",
        "spec.analysis.maxWeight",
        "spec.analysis.mirrorWeight",
        "spec.analysis.sessionAffinity.primaryCookieName",
        "spec.analysis.metrics[0]",
        "spec.analysis.metrics[0].thresholdRange",
        "spec.analysis.webhooks[0].type",
        "spec.analysis.webhooks[0].url",
        "spec.analysis.webhooks[1].url",
    }
    assert "spec.analysis.stepWeights[1]" in str(exc.value)  # the message lists them too


RULES: list[tuple[dict[str, Any], str, str]] = [
    ({"interval": "1m", "threshold": 2}, "spec.analysis", "set one of iterations"),
    ({"iterations": 5, "stepWeight": 10}, "spec.analysis.stepWeight", "cannot be combined with iterations"),
    ({"stepWeights": [10, 10]}, "spec.analysis.stepWeights[1]", "must increase"),
    ({"stepWeights": []}, "spec.analysis.stepWeights", "at least one"),
    ({"stepWeight": 0}, "spec.analysis.stepWeight", "greater than or equal to 1"),
    ({"stepWeight": 101}, "spec.analysis.stepWeight", "less than or equal to 100"),
    ({"stepWeights": [10, 120]}, "spec.analysis.stepWeights[1]", "less than or equal to 100"),
    ({"stepWeight": 10, "maxWeight": 101}, "spec.analysis.maxWeight", "less than or equal to 100"),
    ({"stepWeight": 10, "mirror": True, "mirrorWeight": -1}, "spec.analysis.mirrorWeight", "greater than"),
    ({"iterations": 0}, "spec.analysis.iterations", "greater than or equal to 1"),
    (
        {"iterations": 5, "mirror": True, "match": [{"headers": {"x-canary": {"exact": "1"}}}]},
        "spec.analysis.mirror",
        "not with A/B testing",
    ),
    (
        {"stepWeight": 10, "sessionAffinity": {"cookieName": "c", "primaryCookieName": "c"}},
        "spec.analysis.sessionAffinity.primaryCookieName",
        "must differ",
    ),
    (
        {"stepWeight": 10, "webhooks": [{"name": "w", "type": "gate", "url": "http://x/"}]},
        "spec.analysis.webhooks[0].type",
        "confirm-rollout",
    ),
    ({"stepWeight": 10, "webhooks": [{"name": "w"}]}, "spec.analysis.webhooks[0].url", "required"),
    (
        {"stepWeight": 10, "webhooks": [{"name": "w", "url": "ftp://x/"}]},
        "spec.analysis.webhooks[0].url",
        "http(s)",
    ),
    (
        {"stepWeight": 10, "webhooks": [{"name": "w", "url": "http://x/", "timeout": "soon"}]},
        "spec.analysis.webhooks[0].timeout",
        "invalid duration",
    ),
    (
        {"stepWeight": 10, "metrics": [{"name": "my-rate"}]},
        "spec.analysis.metrics[0]",
        "set templateRef, query or stream",
    ),
    (
        {
            "stepWeight": 10,
            "metrics": [{"name": "request-success-rate", "thresholdRange": {"min": 99, "max": 90}}],
        },
        "spec.analysis.metrics[0].thresholdRange",
        "greater than max",
    ),
    (
        {"stepWeight": 10, "metrics": [{"name": "request-duration", "interval": "a minute"}]},
        "spec.analysis.metrics[0].interval",
        "invalid duration",
    ),
    (
        {
            "stepWeight": 10,
            "metrics": [{"name": "m", "query": "up", "stream": {"kind": "flag-rate", "flags": ["UF"]}}],
        },
        "spec.analysis.metrics[0].stream",
        "cannot be combined with query",
    ),
    (
        {"stepWeight": 10, "metrics": [{"name": "m", "stream": {"kind": "status-rate"}}]},
        "spec.analysis.metrics[0].stream.codes",
        "required for kind status-rate",
    ),
    (
        {"stepWeight": 10, "metrics": [{"name": "m", "stream": {"kind": "status-rate", "codes": ["6xx"]}}]},
        "spec.analysis.metrics[0].stream.codes[0]",
        "neither a status code",
    ),
    (
        {"stepWeight": 10, "metrics": [{"name": "m", "stream": {"kind": "latency-quantile"}}]},
        "spec.analysis.metrics[0].stream.quantile",
        "required",
    ),
    (
        {
            "stepWeight": 10,
            "metrics": [{"name": "m", "stream": {"kind": "latency-quantile", "quantile": 99}}],
        },
        "spec.analysis.metrics[0].stream.quantile",
        "less than 1",
    ),
    (
        {"stepWeight": 10, "metrics": [{"name": "m", "stream": {"kind": "p99"}}]},
        "spec.analysis.metrics[0].stream.kind",
        "status-rate",
    ),
    (
        {"stepWeight": 10, "judge": {"falseRollbackRate": 1.5}},
        "spec.analysis.judge.falseRollbackRate",
        "less than 1",
    ),
    ({"stepWeight": 10, "judge": {"noHarmRatio": 1}}, "spec.analysis.judge.noHarmRatio", "greater than 1"),
    (
        {"stepWeight": 10, "primaryReadyThreshold": 150},
        "spec.analysis.primaryReadyThreshold",
        "less than or equal to 100",
    ),
]


@pytest.mark.parametrize(("analysis", "path", "message"), RULES)
def test_each_rule_reports_its_path(analysis: dict[str, Any], path: str, message: str) -> None:
    errs = errors_of(base_doc(**analysis))
    assert path in errs, errs
    assert message in errs[path]


def test_all_rule_violations_are_reported_together() -> None:
    # Merge many independent mistakes into one spec: none may hide another.
    doc = base_doc(
        interval="soon",
        stepWeight=10,
        stepWeights=[5, 1],
        maxWeight=200,
        sessionAffinity={"cookieName": "c", "primaryCookieName": "c"},
        metrics=[{"name": "x"}, {"name": "request-duration", "thresholdRange": {"min": 5, "max": 1}}],
        webhooks=[{"name": "a", "type": "nope", "url": "http://x/"}, {"name": "b"}],
    )
    doc["spec"]["service"]["port"] = 0
    doc["spec"]["targetRef"]["kind"] = "StatefulSet"
    assert set(errors_of(doc)) == {
        "spec.targetRef.kind",
        "spec.service.port",
        "spec.analysis.interval",
        "spec.analysis.maxWeight",
        "spec.analysis.stepWeights",
        "spec.analysis.stepWeights[1]",
        "spec.analysis.sessionAffinity.primaryCookieName",
        "spec.analysis.metrics[0]",
        "spec.analysis.metrics[1].thresholdRange",
        "spec.analysis.webhooks[0].type",
        "spec.analysis.webhooks[1].url",
    }


def test_skip_analysis_waives_the_step_requirement() -> None:
    doc = base_doc(interval="1m", threshold=1)
    assert "spec.analysis" in errors_of(doc)
    doc["spec"]["skipAnalysis"] = True
    assert errors_of(doc) == {}
    s = plan(parse_canary(doc)[0])
    assert s.skip_analysis and s.steps == [] and s.weights == []


def test_errors_in_several_documents_carry_the_document_index(tmp_path: Path) -> None:
    good = yaml.safe_dump(base_doc())
    bad = copy.deepcopy(base_doc())
    bad["spec"]["analysis"]["stepWeight"] = 500
    template = {
        "apiVersion": "canary-stream.dev/v1beta1",
        "kind": "MetricTemplate",
        "metadata": {"name": "t"},
        "spec": {},
    }
    f = tmp_path / "multi.yaml"
    f.write_text("---\n".join([good, yaml.safe_dump(bad), yaml.safe_dump(template)]))
    with pytest.raises(SpecError) as exc:
        load_documents(f)
    assert {(e.document, e.path) for e in exc.value.errors} == {(1, "spec.analysis.stepWeight"), (2, "spec")}


def test_load_canary_wants_exactly_one_canary() -> None:
    two = yaml.safe_dump(base_doc()) + "---\n" + yaml.safe_dump(base_doc())
    assert len(load_documents(two).canaries) == 2
    with pytest.raises(SpecError, match="exactly one Canary"):
        load_canary(two)


def test_yaml_syntax_error_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="invalid YAML"):
        load_canary("spec: [unclosed\n")


def test_missing_template_is_a_warning_not_an_error() -> None:
    doc = base_doc(stepWeight=10, metrics=[{"name": "m", "templateRef": {"name": "elsewhere"}}])
    docs = load_documents(yaml.safe_dump(doc))
    assert [w.path for w in docs.warnings] == ["spec.analysis.metrics[0].templateRef"]


# ---------------------------------------------------------------------------------------------
# strategy and schedule (flagger-semantics §1.4, §1.13, §3.8)

MATCH = [{"headers": {"cookie": {"regex": "^(.*?;)?(canary=always)(;.*)?$"}}}]


@pytest.mark.parametrize(
    ("analysis", "provider", "strategy"),
    [
        ({"iterations": 10, "match": MATCH}, None, Strategy.AB_TESTING),
        ({"iterations": 10}, None, Strategy.BLUE_GREEN),
        ({"stepWeight": 10}, None, Strategy.CANARY),
        ({"stepWeights": [5, 50]}, None, Strategy.CANARY),
        ({"stepWeight": 10, "match": MATCH}, None, Strategy.CANARY),  # match without iterations
        ({"stepWeight": 10}, "kubernetes", Strategy.BLUE_GREEN),  # Flagger forces iterations 10
        ({"iterations": 3, "match": MATCH}, "kubernetes", Strategy.BLUE_GREEN),  # match dropped
    ],
)
def test_strategy_selection(analysis: dict[str, Any], provider: str | None, strategy: Strategy) -> None:
    doc = base_doc(**analysis)
    if provider:
        doc["spec"]["provider"] = provider
    canary, _ = parse_canary(doc)
    assert canary.strategy() is strategy
    assert plan(canary).strategy is strategy


def _plan(**analysis: Any) -> Any:
    return plan(parse_canary(base_doc(**analysis))[0])


def test_weights_from_flaggers_worked_examples() -> None:
    assert _plan(stepWeight=10, maxWeight=50).weights == [10, 20, 30, 40, 50]
    assert _plan(stepWeight=20, maxWeight=50).weights == [20, 40, 60]  # overshoot
    assert _plan(stepWeights=[1, 2, 10, 80]).weights == [1, 2, 10, 80]
    assert _plan(stepWeight=30).weights == [30, 60, 90, 100]  # clamped at 100, maxWeight default 100


def test_mirror_pre_stage_comes_first() -> None:
    s = _plan(stepWeight=5, maxWeight=50, mirror=True)
    assert s.steps[0].mirrored and s.steps[0].canary_weight == 0
    assert not any(step.mirrored for step in s.steps[1:])
    assert s.weights == list(range(5, 55, 5))
    assert s.mirror


def test_promotion_shift_in_steps() -> None:
    assert _plan(stepWeight=50, stepWeightPromotion=50).promotion_weights == [50, 0]
    assert _plan(stepWeight=20, maxWeight=50, stepWeightPromotion=25).promotion_weights == [35, 10, 0]
    assert _plan(stepWeight=10).promotion_weights == [0]  # unset: all at once


def test_blue_green_switches_to_canary_before_promotion() -> None:
    s = _plan(iterations=5)
    assert [st.canary_weight for st in s.steps] == [0, 0, 0, 0, 0, 100]
    assert [st.iteration for st in s.steps] == [1, 2, 3, 4, 5, None]
    assert s.iterations == 5 and s.weights == [100]


def test_kubernetes_provider_blue_green_has_no_traffic_steps() -> None:
    doc = base_doc(stepWeight=10, mirror=True)
    doc["spec"]["provider"] = "kubernetes"
    s = plan(parse_canary(doc)[0])
    assert s.iterations == 10 and s.weights == [] and s.promotion_weights == []
    assert not any(st.mirrored for st in s.steps)


def test_next_step_weight_off_the_ladder_jumps_to_100() -> None:
    a = Analysis(stepWeights=[5, 20, 60])
    assert [next_step_weight(a, w) for w in (0, 5, 20, 33)] == [5, 15, 40, 67]


@given(step=st.integers(1, 100), top=st.integers(1, 100))
def test_step_weight_schedule_properties(step: int, top: int) -> None:
    s = _plan(stepWeight=step, maxWeight=top)
    w = s.weights
    assert w[0] == step
    assert all(b - a == step or b == 100 for a, b in itertools.pairwise(w))
    assert w[-1] >= top or w[-1] == 100
    assert all(x < top for x in w[:-1])  # promotion comes right after the first weight >= max
    assert s.promotion_weights == [0]


@given(ladder=st.lists(st.integers(1, 100), min_size=1, max_size=8, unique=True).map(sorted))
def test_step_weights_schedule_is_the_ladder(ladder: list[int]) -> None:
    assert _plan(stepWeights=ladder).weights == ladder


# ---------------------------------------------------------------------------------------------
# canary-stream validate


def test_validate_prints_strategy_and_schedule(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(DATA / "step-weights.yaml")]) == 0
    out = capsys.readouterr().out
    assert "strategy: canary" in out
    assert "1% -> 2% -> 10% -> 80% -> promote" in out
    assert "canary 50% -> 20% -> 0%" in out


def test_validate_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(DATA / "ab-testing-cookie.yaml"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["strategy"] == "ab-testing"
    assert out["iterations"] == 10 and out["weights"] == [100] and out["mirror"] is False
    assert out["errors"] == []


def test_validate_json_mirror_canary(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(DATA / "streaming.yaml"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["strategy"], out["weights"], out["mirror"]) == ("canary", [10, 20, 30, 40, 50], True)
    assert out["steps"][0] == {"canary_weight": 0, "mirrored": True, "iteration": None, "route": "all"}


def test_validate_invalid_exits_non_zero_with_paths(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(DATA / "invalid.yaml")]) == 1
    err = capsys.readouterr().err
    assert "spec.analysis.stepWeights[1]" in err and "spec.analysis.webhooks[1].url" in err


def test_validate_invalid_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(DATA / "invalid.yaml"), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert (
        out["strategy"] is None and out["weights"] == [] and out["iterations"] == 0 and out["mirror"] is False
    )
    assert {"path": "spec.analysis.maxWeight", "message": "Input should be less than or equal to 100"} in out[
        "errors"
    ]
    assert len(out["errors"]) == 11


def test_validate_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_validate_several_canaries_json_is_a_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    second = base_doc(iterations=3)
    second["metadata"]["name"] = "other"
    f = tmp_path / "two.yaml"
    f.write_text(yaml.safe_dump(base_doc()) + "---\n" + yaml.safe_dump(second))
    assert main(["validate", str(f), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(o["name"], o["strategy"]) for o in out] == [("podinfo", "canary"), ("other", "blue-green")]


def test_validate_warnings_are_printed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "w.yaml"
    f.write_text(yaml.safe_dump(base_doc(stepWeights=[10, 50], maxWeight=30)))
    assert main(["validate", str(f)]) == 0
    assert "warning: spec.analysis.maxWeight: ignored with stepWeights" in capsys.readouterr().out


def test_provider_nginx_needs_the_ingress_to_copy() -> None:
    doc = base_doc(stepWeight=10, maxWeight=50)
    doc["spec"]["provider"] = "nginx"
    assert "spec.ingressRef" in errors_of(doc)
    doc["spec"]["ingressRef"] = {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "name": "podinfo"}
    assert parse_canary(doc)[0].spec.ingress_ref is not None
