"""Envoy ALS messages encoded by the official protobuf runtime, for the tests: the vendored proto
subset in tests/proto/ is compiled with grpcio-tools into a temporary directory once per process
(nothing generated is committed), so the test side never shares code with the Rust decoder."""

from __future__ import annotations

import atexit
import functools
import importlib
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

PROTO_DIR = Path(__file__).parent / "proto"
FILES = (
    "envoy/config/core/v3/address.proto",
    "envoy/config/core/v3/base.proto",
    "envoy/data/accesslog/v3/accesslog.proto",
    "envoy/service/accesslog/v3/als.proto",
)


@dataclass(frozen=True)
class Protos:
    als: ModuleType  # envoy.service.accesslog.v3.als_pb2
    als_grpc: ModuleType  # envoy.service.accesslog.v3.als_pb2_grpc
    accesslog: ModuleType  # envoy.data.accesslog.v3.accesslog_pb2
    base: ModuleType  # envoy.config.core.v3.base_pb2
    address: ModuleType  # envoy.config.core.v3.address_pb2


@functools.cache
def protos() -> Protos:
    """Compile (once) and import the generated modules."""
    import grpc_tools
    from grpc_tools import protoc

    out = Path(tempfile.mkdtemp(prefix="als-proto-"))
    atexit.register(shutil.rmtree, out, True)
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"-I{well_known}",
        f"--python_out={out}",
        f"--grpc_python_out={out}",
        *(str(PROTO_DIR / f) for f in FILES),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    sys.path.insert(0, str(out))
    try:
        return Protos(
            als=importlib.import_module("envoy.service.accesslog.v3.als_pb2"),
            als_grpc=importlib.import_module("envoy.service.accesslog.v3.als_pb2_grpc"),
            accesslog=importlib.import_module("envoy.data.accesslog.v3.accesslog_pb2"),
            base=importlib.import_module("envoy.config.core.v3.base_pb2"),
            address=importlib.import_module("envoy.config.core.v3.address_pb2"),
        )
    finally:
        sys.path.remove(str(out))


T0_S = 1_795_669_200  # 2026-11-26T...Z


def istio_node(pod: str, namespace: str, workload: str, labels: dict[str, str]) -> Any:
    """An Istio sidecar's Envoy node as pilot-agent fills it (id and metadata)."""
    p = protos()
    node = p.base.Node(id=f"sidecar~10.244.1.7~{pod}.{namespace}~{namespace}.svc.cluster.local")
    node.cluster = f"{workload}.{namespace}"
    node.metadata.update(
        {
            "NAME": pod,
            "NAMESPACE": namespace,
            "WORKLOAD_NAME": workload,
            "LABELS": labels,
            "ISTIO_VERSION": "1.28.0",
        }
    )
    return node


def http_entry(
    *,
    cluster: str,
    code: int | None = 200,
    latency_ms: float = 10.0,
    start_s: float = T0_S,
    peer: dict[str, Any] | None = None,
    downstream_peer: dict[str, Any] | None = None,
    grpc_status: str | None = None,
    flags: tuple[str, ...] = (),
    sni: str = "",
    upstream: tuple[str, int] = ("10.244.3.22", 9080),
    authority: str = "reviews:9080",
    intermediate: bool = False,
) -> Any:
    """One HTTPAccessLogEntry as Envoy's http_grpc logger fills it."""
    p = protos()
    from google.protobuf import any_pb2, struct_pb2

    e = p.accesslog.HTTPAccessLogEntry(protocol_version=p.accesslog.HTTPAccessLogEntry.HTTP11)
    c = e.common_properties
    c.start_time.FromNanoseconds(int(start_s * 1e9))
    c.time_to_last_rx_byte.FromNanoseconds(100_000)
    c.time_to_last_upstream_rx_byte.FromNanoseconds(int(latency_ms * 0.9e6))
    c.time_to_last_downstream_tx_byte.FromNanoseconds(int(latency_ms * 1e6))
    c.duration.FromNanoseconds(int(latency_ms * 1e6))
    c.upstream_cluster = cluster
    c.route_name = "default"
    c.upstream_remote_address.socket_address.address = upstream[0]
    c.upstream_remote_address.socket_address.port_value = upstream[1]
    c.downstream_remote_address.socket_address.address = "10.244.2.5"
    c.downstream_remote_address.socket_address.port_value = 51234
    c.intermediate_log_entry = intermediate
    if sni:
        c.tls_properties.tls_sni_hostname = sni
        c.tls_properties.tls_version = p.accesslog.TLSProperties.TLSv1_3
    for flag in flags:
        setattr(c.response_flags, flag, True)
    for key, value in (("upstream_peer", peer), ("downstream_peer", downstream_peer)):
        if value is not None:
            s = struct_pb2.Struct()
            s.update(value)
            a = any_pb2.Any()
            a.Pack(s)
            c.filter_state_objects[key].CopyFrom(a)
    e.request.request_method = p.base.GET
    e.request.authority = authority
    e.request.path = "/reviews/0"
    e.request.request_id = "9b1f3c2e-6d1a-9c4f-a1b2-3c4d5e6f7a8b"
    if code is not None:
        e.response.response_code.value = code
    e.response.response_body_bytes = 358
    if grpc_status is not None:
        e.response.response_trailers["grpc-status"] = grpc_status
    return e


def message(entries: list[Any], node: Any | None = None, log_name: str = "canary") -> Any:
    """A StreamAccessLogsMessage: the identifier only when `node` is given (first message)."""
    p = protos()
    m = p.als.StreamAccessLogsMessage()
    if node is not None:
        m.identifier.node.CopyFrom(node)
        m.identifier.log_name = log_name
    m.http_logs.log_entry.extend(entries)
    return m
