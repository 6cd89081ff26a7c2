"""The verdict API: REST + SSE over the Registry, Flagger and Argo Rollouts interop, Prometheus
metrics, bearer-token / Kubernetes authorization."""

from canary_stream.api.app import create_app
from canary_stream.api.config import ApiConfig, ApiConfigError
from canary_stream.api.server import serve

__all__ = ["ApiConfig", "ApiConfigError", "create_app", "serve"]
