"""Generate deploy/crds/{canaries,metrictemplates,alertproviders}.yaml from Flagger's v1beta1 CRD
(the vendored tests/crds/upstream/flagger copy, or the file given as argument): same spec shape, group
canary-stream.dev, plus canary-stream's additions (analysis.judge, metrics[].stream / noData, the
streaming MetricTemplate), status.observedGeneration, and printer columns phase / weight / failed
checks / last transition. Run: python deploy/gen_crds.py [flagger-crds.yaml]"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

GROUP = "canary-stream.dev"
HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = HERE.parent / "tests" / "crds" / "upstream" / "flagger" / "flagger.app.crds.yaml"

STREAM_METRIC: dict[str, Any] = {
    "description": "canary-stream: a metric computed on the access-log stream",
    "type": "object",
    "required": ["kind"],
    "properties": {
        "kind": {
            "type": "string",
            "enum": ["status-rate", "latency-quantile", "flag-rate", "exceedance-rate"],
        },
        "codes": {"type": "array", "items": {"x-kubernetes-int-or-string": True}},
        "quantile": {
            "type": "number",
            "exclusiveMinimum": True,
            "minimum": 0,
            "exclusiveMaximum": True,
            "maximum": 1,
        },
        "flags": {"type": "array", "items": {"type": "string"}},
        "thresholdMs": {"type": "number", "exclusiveMinimum": True, "minimum": 0},
        "version": {"type": "string", "enum": ["canary", "primary"]},
    },
}

JUDGE: dict[str, Any] = {
    "description": "canary-stream: sequential canary-vs-primary tests (see spec/model.py Judge)",
    "type": "object",
    "properties": {
        "falseRollbackRate": {"type": "number"},
        "promotionErrorRate": {"type": "number"},
        "noHarmRatio": {"type": "number"},
        "sloErrorRate": {"type": "number"},
        "minRequests": {"type": "integer", "minimum": 0},
        "latencyQuantile": {"type": "number"},
        "srm": {"type": "boolean"},
        "enabled": {"type": "boolean"},
        "lowTrafficPromotion": {"type": "integer", "minimum": 1},
    },
}

COLUMNS = [
    {"name": "Status", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Weight", "type": "integer", "jsonPath": ".status.canaryWeight"},
    {"name": "FailedChecks", "type": "integer", "jsonPath": ".status.failedChecks"},
    {"name": "Suspended", "type": "boolean", "jsonPath": ".spec.suspend", "priority": 1},
    {"name": "Interval", "type": "string", "jsonPath": ".spec.analysis.interval", "priority": 1},
    {"name": "StepWeight", "type": "string", "jsonPath": ".spec.analysis.stepWeight", "priority": 1},
    {"name": "MaxWeight", "type": "string", "jsonPath": ".spec.analysis.maxWeight", "priority": 1},
    {"name": "LastTransitionTime", "type": "string", "jsonPath": ".status.lastTransitionTime"},
]


def _rename(crd: dict[str, Any], plural: str) -> dict[str, Any]:
    crd = copy.deepcopy(crd)
    crd["metadata"] = {"name": f"{plural}.{GROUP}"}
    crd["spec"]["group"] = GROUP
    crd["spec"]["names"]["categories"] = ["canary-stream"]
    return crd


def canaries(flagger: dict[str, Any]) -> dict[str, Any]:
    crd = _rename(flagger, "canaries")
    version = crd["spec"]["versions"][0]
    version["additionalPrinterColumns"] = COLUMNS
    props = version["schema"]["openAPIV3Schema"]["properties"]
    analysis = props["spec"]["properties"]["analysis"]
    analysis["properties"]["judge"] = JUDGE
    metric = analysis["properties"]["metrics"]["items"]["properties"]
    metric["stream"] = STREAM_METRIC
    metric["noData"] = {
        "description": "canary-stream: a window without data is 'insufficient' (default) or a failed check",
        "type": "string",
        "enum": ["insufficient", "fail"],
    }
    # The deprecated canaryAnalysis takes the same additions.
    if "canaryAnalysis" in props["spec"]["properties"]:
        props["spec"]["properties"]["canaryAnalysis"] = copy.deepcopy(analysis)
    status = props["status"]["properties"]
    status["observedGeneration"] = {"description": "metadata.generation last reconciled", "type": "integer"}
    return crd


def metrictemplates(flagger: dict[str, Any]) -> dict[str, Any]:
    crd = _rename(flagger, "metrictemplates")
    version = crd["spec"]["versions"][0]
    version["additionalPrinterColumns"] = [
        {"name": "Provider", "type": "string", "jsonPath": ".spec.provider.type"},
        {"name": "Stream", "type": "string", "jsonPath": ".spec.stream.kind"},
    ]
    spec = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    spec.pop("required", None)  # either stream, or provider + query
    spec["properties"]["stream"] = STREAM_METRIC
    spec["oneOf"] = [{"required": ["stream"]}, {"required": ["provider", "query"]}]
    return crd


def alertproviders(flagger: dict[str, Any]) -> dict[str, Any]:
    """Flagger's AlertProvider as it is, in our group (controller/alerts.py sends to it)."""
    return _rename(flagger, "alertproviders")


def main(argv: list[str]) -> None:
    source = Path(argv[1]) if len(argv) > 1 else DEFAULT_SOURCE
    docs = {d["spec"]["names"]["plural"]: d for d in yaml.safe_load_all(source.read_text()) if d}
    header = f"# Generated by deploy/gen_crds.py from Flagger v1beta1 ({source.name}); edit the generator.\n"
    for name, crd in (
        ("canaries", canaries(docs["canaries"])),
        ("metrictemplates", metrictemplates(docs["metrictemplates"])),
        ("alertproviders", alertproviders(docs["alertproviders"])),
    ):
        out = HERE / "crds" / f"{name}.yaml"
        out.write_text(header + yaml.safe_dump(crd, sort_keys=False, width=120))
        print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv)
