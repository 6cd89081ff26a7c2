"""Which Canary resource an object is, and small helpers on plain-dict Kubernetes objects."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from canary_stream.kube.rest import Resource

OWN_GROUP = "canary-stream.dev"
FLAGGER_GROUP = "flagger.app"
VERSION = "v1beta1"
PLURAL = "canaries"


@dataclass(frozen=True)
class CanaryRef:
    """One Canary object: its group (ours or Flagger's), namespace, name and uid."""

    group: str
    namespace: str
    name: str
    uid: str = ""
    version: str = VERSION

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"

    @property
    def resource(self) -> Resource:
        """The canaries resource of this group."""
        return Resource(self.group, self.version, PLURAL)

    @classmethod
    def of(cls, obj: dict[str, Any]) -> CanaryRef:
        """The reference of a Canary dict."""
        meta = obj.get("metadata") or {}
        group, _, version = (obj.get("apiVersion") or f"{OWN_GROUP}/{VERSION}").partition("/")
        return cls(group, meta.get("namespace", ""), meta.get("name", ""), meta.get("uid", ""), version)

    def object_reference(self) -> dict[str, Any]:
        """An ObjectReference (events' `regarding`)."""
        return {
            "apiVersion": self.api_version,
            "kind": "Canary",
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
        }

    def owner_reference(self) -> dict[str, Any]:
        """An OwnerReference making the Canary the controller of a generated object."""
        return {
            "apiVersion": self.api_version,
            "kind": "Canary",
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


def micro_time(t: float) -> str:
    """A Kubernetes MicroTime (`2006-01-02T15:04:05.000000Z`)."""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str | None) -> float | None:
    """Seconds since the epoch of a Kubernetes Time / MicroTime, None when absent or unreadable."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
