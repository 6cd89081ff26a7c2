"""How the controller reaches the API server: in-cluster service account when running in a pod,
else a kubeconfig (`--kubeconfig`, `$KUBECONFIG`, `~/.kube/config`)."""

from __future__ import annotations

import os

from kubernetes_asyncio import config as kube_config
from kubernetes_asyncio.client import ApiClient, Configuration

#: Concurrent connections to the API server; every watch holds one for its lifetime.
POOL_SIZE = 64


def in_cluster() -> bool:
    """Running in a pod with a service account mounted."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and os.path.exists(
        "/var/run/secrets/kubernetes.io/serviceaccount/token"
    )


async def load_client(
    kubeconfig: str | None = None, context: str | None = None, pool_size: int = POOL_SIZE
) -> ApiClient:
    """An ApiClient: the kubeconfig when given (or `$KUBECONFIG`), else the in-cluster service
    account, else `~/.kube/config`."""
    cfg = Configuration()
    path = kubeconfig or os.environ.get("KUBECONFIG")
    if path:
        await kube_config.load_kube_config(
            config_file=path.split(os.pathsep)[0],
            context=context,
            client_configuration=cfg,
            persist_config=False,
        )
    elif in_cluster():
        kube_config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    else:
        await kube_config.load_kube_config(context=context, client_configuration=cfg, persist_config=False)
    cfg.connection_pool_maxsize = pool_size
    return ApiClient(configuration=cfg)


def client_for(url: str, token: str, ca_file: str | None = None, pool_size: int = POOL_SIZE) -> ApiClient:
    """An ApiClient for `url` with a bearer token (tests, and `--server/--token`)."""
    cfg = Configuration(host=url)
    cfg.api_key = {"authorization": token}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    if ca_file:
        cfg.ssl_ca_cert = ca_file
    else:
        cfg.verify_ssl = False
    cfg.connection_pool_maxsize = pool_size
    return ApiClient(configuration=cfg)
