"""Loading Canary and MetricTemplate manifests from YAML, with every error reported at once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from canary_stream.spec.checks import analysis_key, canary_rules, template_rules
from canary_stream.spec.errors import FieldError, SpecError, format_path
from canary_stream.spec.model import API_VERSIONS, Canary, Metric, MetricTemplate

KINDS = ("Canary", "MetricTemplate")


@dataclass(frozen=True)
class Documents:
    """What a (multi-document) YAML file holds. `warnings` are problems that do not stop a rollout."""

    canaries: list[Canary] = field(default_factory=list)
    templates: list[MetricTemplate] = field(default_factory=list)
    warnings: list[FieldError] = field(default_factory=list)
    # YAML document index of each canary (None in a single-document file), to match warnings.
    canary_documents: list[int | None] = field(default_factory=list)

    def warnings_for(self, index: int) -> list[FieldError]:
        """Warnings about `canaries[index]`."""
        doc = self.canary_documents[index] if index < len(self.canary_documents) else None
        return [w for w in self.warnings if w.document == doc]

    def template_for(self, metric: Metric, namespace: str) -> MetricTemplate | None:
        """The template `metric.templateRef` names, if it is in these documents."""
        return find_template(metric, self.templates, namespace)


def find_template(metric: Metric, templates: list[MetricTemplate], namespace: str) -> MetricTemplate | None:
    """The template a metric's `templateRef` names (namespace defaults to the canary's)."""
    ref = metric.template_ref
    if ref is None:
        return None
    ns = ref.namespace or namespace
    return next((t for t in templates if t.name == ref.name and t.namespace == ns), None)


def read_text(text_or_path: str | Path) -> str:
    """YAML text from a path (a `Path`, or a one-line string naming an existing file) or the text itself."""
    if isinstance(text_or_path, Path):
        return text_or_path.read_text(encoding="utf-8")
    if "\n" not in text_or_path and ":" not in text_or_path:
        path = Path(text_or_path)
        if path.is_file() or path.suffix in (".yaml", ".yml", ".json"):
            return path.read_text(encoding="utf-8")  # FileNotFoundError for a missing file
    return text_or_path


_FRIENDLY = {
    "Field required": "required",
    "Extra inputs are not permitted": "unknown field (neither Flagger's nor a canary-stream addition)",
}


def _pydantic_errors(exc: ValidationError, rename_analysis: bool) -> list[FieldError]:
    out = []
    for e in exc.errors():
        loc = list(e["loc"])
        if rename_analysis and loc[:2] == ["spec", "analysis"]:
            loc[1] = "canaryAnalysis"
        msg = e["msg"].removeprefix("Value error, ")
        out.append(FieldError(format_path(loc), _FRIENDLY.get(msg, msg)))
    return out


def _validate(
    model: type[BaseModel], doc: Mapping[str, Any], rename_analysis: bool
) -> tuple[Any, list[FieldError]]:
    try:
        return model.model_validate(doc), []
    except ValidationError as exc:
        return None, _pydantic_errors(exc, rename_analysis)


def _dedupe(errors: list[FieldError]) -> list[FieldError]:
    seen: set[tuple[str, str, int | None]] = set()
    out = []
    for e in errors:
        key = (e.path, e.message, e.document)
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out


def parse_canary(doc: Mapping[str, Any]) -> tuple[Canary, list[FieldError]]:
    """A Canary from one parsed YAML mapping, and its warnings; raises SpecError with every error."""
    spec = doc.get("spec")
    rename = isinstance(spec, Mapping) and analysis_key(spec) == "canaryAnalysis"
    canary, errors = _validate(Canary, doc, rename)
    rule_errors, warnings = canary_rules(doc)
    errors = _dedupe(errors + rule_errors)
    if errors:
        raise SpecError(errors)
    assert isinstance(canary, Canary)
    return canary, warnings


def parse_template(doc: Mapping[str, Any]) -> MetricTemplate:
    """A MetricTemplate from one parsed YAML mapping; raises SpecError with every error."""
    template, errors = _validate(MetricTemplate, doc, False)
    errors = _dedupe(errors + template_rules(doc))
    if errors:
        raise SpecError(errors)
    assert isinstance(template, MetricTemplate)
    return template


def _documents(text: str) -> list[Any]:
    try:
        return [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise SpecError([FieldError("", f"invalid YAML: {exc}")]) from exc


def _kind_errors(doc: Any) -> list[FieldError]:
    if not isinstance(doc, Mapping):
        return [FieldError("", f"expected a mapping (a Kubernetes object), got {type(doc).__name__}")]
    errors = []
    kind = doc.get("kind")
    if kind not in KINDS:
        errors.append(FieldError("kind", f"expected one of {', '.join(KINDS)}, got {kind!r}"))
        api = doc.get("apiVersion")
        if api not in API_VERSIONS:
            errors.append(FieldError("apiVersion", f"expected one of {', '.join(API_VERSIONS)}, got {api!r}"))
    return errors


def load_documents(text_or_path: str | Path) -> Documents:
    """Every Canary and MetricTemplate in a YAML file or string (`---`-separated documents).
    Raises SpecError listing every error of every document (with its index when there are several)."""
    docs = _documents(read_text(text_or_path))
    if not docs:
        raise SpecError([FieldError("", "no YAML document found")])
    several = len(docs) > 1
    canaries: list[Canary] = []
    canary_docs: list[int | None] = []
    templates: list[MetricTemplate] = []
    errors: list[FieldError] = []
    warnings: list[FieldError] = []

    def tag(items: list[FieldError], i: int) -> list[FieldError]:
        return [FieldError(e.path, e.message, i if several else None) for e in items]

    for i, doc in enumerate(docs):
        if kind_errors := _kind_errors(doc):
            errors += tag(kind_errors, i)
            continue
        try:
            if doc["kind"] == "Canary":
                canary, doc_warnings = parse_canary(doc)
                canaries.append(canary)
                canary_docs.append(i if several else None)
                warnings += tag(doc_warnings, i)
            else:
                templates.append(parse_template(doc))
        except SpecError as exc:
            errors += tag(exc.errors, i)
    if errors:
        raise SpecError(errors)
    for c, doc_index in zip(canaries, canary_docs, strict=True):
        warnings += [FieldError(w.path, w.message, doc_index) for w in _reference_warnings(c, templates)]
    return Documents(canaries, templates, warnings, canary_docs)


def _reference_warnings(canary: Canary, templates: list[MetricTemplate]) -> list[FieldError]:
    # A templateRef may point into the cluster, so a missing template is a warning, not an error.
    out = []
    analysis = canary.spec.analysis
    for i, m in enumerate(analysis.metrics if analysis else []):
        if m.template_ref is None:
            continue
        path = f"spec.analysis.metrics[{i}].templateRef"
        t = find_template(m, templates, canary.namespace)
        if t is None:
            out.append(FieldError(path, f"template {m.template_ref.name!r} is not in this file"))
        elif not t.is_streaming:
            msg = f"template {t.name!r} is a PromQL-style template, not evaluated on the stream"
            out.append(FieldError(path, msg))
    return out


def load_canary(text_or_path: str | Path) -> Canary:
    """The one Canary in a YAML file or string (MetricTemplate documents beside it are allowed;
    use `load_documents` to get them). Raises SpecError with every error."""
    docs = load_documents(text_or_path)
    if len(docs.canaries) != 1:
        raise SpecError([FieldError("", f"expected exactly one Canary, found {len(docs.canaries)}")])
    return docs.canaries[0]
