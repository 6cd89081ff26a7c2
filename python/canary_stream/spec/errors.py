"""Spec errors: every problem found in a manifest, each with the field path the user wrote."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class FieldError:
    """One problem at `path` (camelCase, as in the YAML: `spec.analysis.metrics[0].thresholdRange`).
    `document` is the 0-based YAML document index when the file holds several documents."""

    path: str
    message: str
    document: int | None = None

    def __str__(self) -> str:
        where = f"document {self.document}: " if self.document is not None else ""
        return f"{where}{self.path or '<document>'}: {self.message}"

    def to_dict(self) -> dict[str, object]:
        """JSON form (`document` only when set)."""
        out: dict[str, object] = {"path": self.path, "message": self.message}
        if self.document is not None:
            out["document"] = self.document
        return out


class SpecError(ValueError):
    """A manifest that cannot be used; `errors` lists every problem found, not only the first."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors: list[FieldError] = list(errors)
        super().__init__(self._summary())

    def _summary(self) -> str:
        n = len(self.errors)
        head = f"{n} error{'s' if n != 1 else ''} in the canary spec"
        return "\n".join([head, *(f"  {e}" for e in self.errors)])


def format_path(loc: Iterable[str | int]) -> str:
    """`("spec", "analysis", "metrics", 0, "name")` -> `spec.analysis.metrics[0].name`."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else part
    return out
