//! The normalised, borrowed view of one access-log line that every parser fills.

use crate::flags::Flags;

/// One parsed request. String fields borrow from the input line; an empty string
/// means "absent" (Envoy's `-` and JSON `null` are normalised to "").
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record<'a> {
    /// Event time: request start, milliseconds since the Unix epoch. `None` when the
    /// line has no timestamp; the pipeline then uses arrival time.
    pub ts_ms: Option<i64>,
    /// HTTP status; 0 = no response was sent (e.g. the downstream went away).
    pub status: u16,
    /// gRPC status when the format carries it (custom formats, NDJSON mapping, ALS).
    pub grpc_status: Option<u16>,
    /// Total request duration in milliseconds; `None` when the format has none
    /// (Linkerd `apache`).
    pub latency_ms: Option<f64>,
    /// Envoy response flags (UF, URX, UH, ...) as a bit set.
    pub flags: Flags,
    /// Envoy `upstream_cluster`, e.g. `outbound|9080|canary|reviews.default.svc.cluster.local`.
    pub upstream_cluster: &'a str,
    /// TLS SNI (`requested_server_name`), e.g. `outbound_.9080_.canary_.reviews.default.svc.cluster.local`.
    pub sni: &'a str,
    /// `upstream_host`, `ip:port` of the endpoint that served the request.
    pub upstream_host: &'a str,
    /// `:authority` / Host header.
    pub authority: &'a str,
    /// An explicit target from the line (NDJSON mapping; ingress-nginx `$proxy_upstream_name`).
    pub target: &'a str,
    /// An explicit version from the line (NDJSON mapping; ingress-nginx canary marker).
    pub version: &'a str,
}

impl Record<'_> {
    /// Reset for reuse without reallocating (records are reused across lines).
    #[inline]
    pub fn clear(&mut self) {
        *self = Record::default();
    }
}
