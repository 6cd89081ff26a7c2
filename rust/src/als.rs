//! Envoy gRPC Access Log Service (`envoy.service.accesslog.v3.AccessLogService/StreamAccessLogs`):
//! decode `StreamAccessLogsMessage` bytes and fold each HTTP entry into a [`Pipeline`].
//!
//! Field numbers are upstream's (envoy `api/envoy/service/accesslog/v3/als.proto`,
//! `api/envoy/data/accesslog/v3/accesslog.proto`, `api/envoy/config/core/v3/{base,address}.proto`,
//! google's well-known types). The envelope and each entry are walked by hand over borrowed
//! slices ([`EntryView`]: no allocation per entry; unknown fields skipped), so a bad entry is
//! counted as [`Reason::BadProtobuf`] and the entries around it are kept. prost derive structs
//! declare the same subset: they decode the stream identifier and peer-metadata Structs, encode
//! in tests, and are the reference the hand decoder is tested against.
//!
//! Which version served an entry (telemetry-formats.md §1.5):
//! * **inbound** entries (`upstream_cluster` `inbound|…` / `InboundPassthrough…`) were served
//!   by the pod whose Envoy sent the stream: its identity comes from the stream's
//!   `identifier.node` (Istio node metadata `NAME`, `NAMESPACE`, `LABELS`, or `node.id`
//!   `sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local`) and becomes the entries'
//!   [`SourceContext`] — the same as a sidecar log file of that pod: target from the pod's
//!   workload, version from its `version` label (the `field` rule), else SNI, host map, and
//!   the `pod` rule on the workload name (`-primary` / `-canary`).
//! * **outbound** entries were served by the upstream: Istio's peer metadata
//!   `filter_state_objects["upstream_peer"]` (a `google.protobuf.Struct`; `version` = the app
//!   version label, `revision` = the canonical revision) gives the record's version when it
//!   has one; otherwise the cluster rules (subset, `-canary` Service) decide as for log lines.
//!   `downstream_peer` is the caller, never the serving version, so it is not read.
//!
//! A canonical revision of `latest` is Istio's default for pods without a version label and
//! says nothing, so it is ignored.

use std::collections::HashMap;

use prost::Message;

use crate::attribution::SourceContext;
use crate::flags::{Flags, FLAG_NAMES};
use crate::malformed::Reason;
use crate::pipeline::{FeedStats, Pipeline};
use crate::record::Record;

// ---------------------------------------------------------------- wire types (subset)

/// `google.protobuf.Timestamp` / `google.protobuf.Duration` (same wire shape).
#[derive(Clone, Copy, PartialEq, Message)]
pub struct Time {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `google.protobuf.UInt32Value`.
#[derive(Clone, Copy, PartialEq, Message)]
pub struct UInt32Value {
    #[prost(uint32, tag = "1")]
    pub value: u32,
}

/// `google.protobuf.Any`.
#[derive(Clone, PartialEq, Message)]
pub struct Any {
    #[prost(string, tag = "1")]
    pub type_url: String,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

/// `google.protobuf.Struct`.
#[derive(Clone, PartialEq, Message)]
pub struct Struct {
    #[prost(map = "string, message", tag = "1")]
    pub fields: HashMap<String, Value>,
}

/// `google.protobuf.Value`.
#[derive(Clone, PartialEq, Message)]
pub struct Value {
    #[prost(oneof = "Kind", tags = "1, 2, 3, 4, 5, 6")]
    pub kind: Option<Kind>,
}

/// `google.protobuf.Value.kind`.
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Kind {
    #[prost(int32, tag = "1")]
    NullValue(i32),
    #[prost(double, tag = "2")]
    NumberValue(f64),
    #[prost(string, tag = "3")]
    StringValue(String),
    #[prost(bool, tag = "4")]
    BoolValue(bool),
    #[prost(message, tag = "5")]
    StructValue(Struct),
    #[prost(message, tag = "6")]
    ListValue(ListValue),
}

/// `google.protobuf.ListValue`.
#[derive(Clone, PartialEq, Message)]
pub struct ListValue {
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<Value>,
}

impl Struct {
    /// The string value of `key`, "" when absent or not a string.
    pub fn str(&self, key: &str) -> &str {
        match self.fields.get(key).and_then(|v| v.kind.as_ref()) {
            Some(Kind::StringValue(s)) => s,
            _ => "",
        }
    }

    /// The struct value of `key`.
    pub fn sub(&self, key: &str) -> Option<&Struct> {
        match self.fields.get(key).and_then(|v| v.kind.as_ref()) {
            Some(Kind::StructValue(s)) => Some(s),
            _ => None,
        }
    }
}

/// `envoy.config.core.v3.Node` (id, cluster, metadata).
#[derive(Clone, PartialEq, Message)]
pub struct Node {
    #[prost(string, tag = "1")]
    pub id: String,
    #[prost(string, tag = "2")]
    pub cluster: String,
    #[prost(message, optional, tag = "3")]
    pub metadata: Option<Struct>,
}

/// `StreamAccessLogsMessage.Identifier`.
#[derive(Clone, PartialEq, Message)]
pub struct Identifier {
    #[prost(message, optional, tag = "1")]
    pub node: Option<Node>,
    #[prost(string, tag = "2")]
    pub log_name: String,
}

/// `envoy.config.core.v3.SocketAddress` (address, port_value).
#[derive(Clone, PartialEq, Message)]
pub struct SocketAddress {
    #[prost(string, tag = "2")]
    pub address: String,
    #[prost(uint32, tag = "3")]
    pub port_value: u32,
}

/// `envoy.config.core.v3.Address` (the `socket_address` member of its oneof).
#[derive(Clone, PartialEq, Message)]
pub struct Address {
    #[prost(message, optional, tag = "1")]
    pub socket_address: Option<SocketAddress>,
}

/// `envoy.data.accesslog.v3.TLSProperties` (SNI only).
#[derive(Clone, PartialEq, Message)]
pub struct TlsProperties {
    #[prost(string, tag = "3")]
    pub tls_sni_hostname: String,
}

/// `ResponseFlags.Unauthorized`.
#[derive(Clone, Copy, PartialEq, Message)]
pub struct Unauthorized {
    #[prost(int32, tag = "1")]
    pub reason: i32,
}

/// `envoy.data.accesslog.v3.ResponseFlags`: one bool per flag.
#[derive(Clone, Copy, PartialEq, Message)]
pub struct ResponseFlags {
    #[prost(bool, tag = "1")]
    pub failed_local_healthcheck: bool,
    #[prost(bool, tag = "2")]
    pub no_healthy_upstream: bool,
    #[prost(bool, tag = "3")]
    pub upstream_request_timeout: bool,
    #[prost(bool, tag = "4")]
    pub local_reset: bool,
    #[prost(bool, tag = "5")]
    pub upstream_remote_reset: bool,
    #[prost(bool, tag = "6")]
    pub upstream_connection_failure: bool,
    #[prost(bool, tag = "7")]
    pub upstream_connection_termination: bool,
    #[prost(bool, tag = "8")]
    pub upstream_overflow: bool,
    #[prost(bool, tag = "9")]
    pub no_route_found: bool,
    #[prost(bool, tag = "10")]
    pub delay_injected: bool,
    #[prost(bool, tag = "11")]
    pub fault_injected: bool,
    #[prost(bool, tag = "12")]
    pub rate_limited: bool,
    #[prost(message, optional, tag = "13")]
    pub unauthorized_details: Option<Unauthorized>,
    #[prost(bool, tag = "14")]
    pub rate_limit_service_error: bool,
    #[prost(bool, tag = "15")]
    pub downstream_connection_termination: bool,
    #[prost(bool, tag = "16")]
    pub upstream_retry_limit_exceeded: bool,
    #[prost(bool, tag = "17")]
    pub stream_idle_timeout: bool,
    #[prost(bool, tag = "18")]
    pub invalid_envoy_request_headers: bool,
    #[prost(bool, tag = "19")]
    pub downstream_protocol_error: bool,
    #[prost(bool, tag = "20")]
    pub upstream_max_stream_duration_reached: bool,
    #[prost(bool, tag = "21")]
    pub response_from_cache_filter: bool,
    #[prost(bool, tag = "22")]
    pub no_filter_config_found: bool,
    #[prost(bool, tag = "23")]
    pub duration_timeout: bool,
    #[prost(bool, tag = "24")]
    pub upstream_protocol_error: bool,
    #[prost(bool, tag = "25")]
    pub no_cluster_found: bool,
    #[prost(bool, tag = "26")]
    pub overload_manager: bool,
    #[prost(bool, tag = "27")]
    pub dns_resolution_failure: bool,
}

/// `envoy.data.accesslog.v3.AccessLogCommon` (the fields the aggregator reads).
#[derive(Clone, PartialEq, Message)]
pub struct AccessLogCommon {
    #[prost(message, optional, tag = "4")]
    pub tls_properties: Option<TlsProperties>,
    #[prost(message, optional, tag = "5")]
    pub start_time: Option<Time>,
    #[prost(message, optional, tag = "10")]
    pub time_to_last_upstream_rx_byte: Option<Time>,
    #[prost(message, optional, tag = "12")]
    pub time_to_last_downstream_tx_byte: Option<Time>,
    #[prost(message, optional, tag = "13")]
    pub upstream_remote_address: Option<Address>,
    #[prost(string, tag = "15")]
    pub upstream_cluster: String,
    #[prost(message, optional, tag = "16")]
    pub response_flags: Option<ResponseFlags>,
    #[prost(string, tag = "19")]
    pub route_name: String,
    #[prost(map = "string, message", tag = "21")]
    pub filter_state_objects: HashMap<String, Any>,
    #[prost(message, optional, tag = "23")]
    pub duration: Option<Time>,
    #[prost(bool, tag = "26")]
    pub intermediate_log_entry: bool,
}

/// `envoy.data.accesslog.v3.HTTPRequestProperties` (authority only).
#[derive(Clone, PartialEq, Message)]
pub struct HttpRequestProperties {
    #[prost(string, tag = "3")]
    pub authority: String,
}

/// `envoy.data.accesslog.v3.HTTPResponseProperties`.
#[derive(Clone, PartialEq, Message)]
pub struct HttpResponseProperties {
    #[prost(message, optional, tag = "1")]
    pub response_code: Option<UInt32Value>,
    #[prost(map = "string, string", tag = "4")]
    pub response_headers: HashMap<String, String>,
    #[prost(map = "string, string", tag = "5")]
    pub response_trailers: HashMap<String, String>,
}

/// `envoy.data.accesslog.v3.HTTPAccessLogEntry`.
#[derive(Clone, PartialEq, Message)]
pub struct HttpAccessLogEntry {
    #[prost(message, optional, tag = "1")]
    pub common_properties: Option<AccessLogCommon>,
    #[prost(message, optional, tag = "3")]
    pub request: Option<HttpRequestProperties>,
    #[prost(message, optional, tag = "4")]
    pub response: Option<HttpResponseProperties>,
}

/// `StreamAccessLogsMessage` as prost would decode it whole (tests and encoders; the fold
/// path walks the envelope by hand, see [`AlsStream::feed_message`]).
#[derive(Clone, PartialEq, Message)]
pub struct StreamAccessLogsMessage {
    #[prost(message, optional, tag = "1")]
    pub identifier: Option<Identifier>,
    #[prost(message, optional, tag = "2")]
    pub http_logs: Option<HttpEntries>,
    #[prost(message, optional, tag = "3")]
    pub tcp_logs: Option<TcpEntries>,
}

/// `StreamAccessLogsMessage.HTTPAccessLogEntries`.
#[derive(Clone, PartialEq, Message)]
pub struct HttpEntries {
    #[prost(message, repeated, tag = "1")]
    pub log_entry: Vec<HttpAccessLogEntry>,
}

/// `StreamAccessLogsMessage.TCPAccessLogEntries` (entries kept opaque: only counted).
#[derive(Clone, PartialEq, Message)]
pub struct TcpEntries {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub log_entry: Vec<Vec<u8>>,
}

// ---------------------------------------------------------------- envelope walk

/// Fields of one message: `(field number, wire type, payload)`; for length-delimited
/// fields the payload is the content, for others the raw value bytes.
struct Fields<'a> {
    rest: &'a [u8],
    failed: bool,
    /// Hand out the available prefix of a length-delimited field that runs past the end
    /// (the envelope of a cut message: its complete entries are still read).
    partial: bool,
}

const LEN: u8 = 2;

fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..10 {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        v |= u64::from(b & 0x7f) << (7 * i);
        if b < 0x80 {
            return Some(v);
        }
    }
    None
}

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Fields {
            rest: buf,
            failed: false,
            partial: false,
        }
    }

    fn partial(buf: &'a [u8]) -> Self {
        Fields {
            partial: true,
            ..Fields::new(buf)
        }
    }

    fn step(&mut self) -> Option<(u64, u8, &'a [u8])> {
        if self.rest.is_empty() {
            return None;
        }
        let mut buf = self.rest;
        let key = varint(&mut buf)?;
        let (field, wire) = (key >> 3, (key & 7) as u8);
        if field == 0 {
            return None;
        }
        let value: &'a [u8];
        match wire {
            0 => {
                let start = buf;
                varint(&mut buf)?;
                value = start.get(..start.len() - buf.len())?;
            }
            1 | 5 => {
                let n = if wire == 1 { 8 } else { 4 };
                value = buf.get(..n)?;
                buf = buf.get(n..)?;
            }
            LEN => {
                let n = usize::try_from(varint(&mut buf)?).unwrap_or(usize::MAX);
                if n > buf.len() && self.partial && !buf.is_empty() {
                    // Cut short: hand out what is there, then stop as failed.
                    value = buf;
                    self.rest = &[];
                    self.failed = true;
                    return Some((field, wire, value));
                }
                value = buf.get(..n)?;
                buf = buf.get(n..)?;
            }
            _ => return None, // groups (3, 4) are not used by these messages
        }
        self.rest = buf;
        Some((field, wire, value))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = (u64, u8, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let item = self.step();
        if self.failed {
            return item; // the cut-short prefix; nothing after it
        }
        if item.is_none() && !self.rest.is_empty() {
            self.failed = true;
        }
        item
    }
}

// ---------------------------------------------------------------- borrowed entry decoder

/// The fields of one `HTTPAccessLogEntry` the aggregator reads, borrowed from the message
/// bytes: no allocation per entry. [`HttpAccessLogEntry`] (prost) is the reference it is
/// tested against; the two agree on every message prost encodes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EntryView<'a> {
    pub start_time: Option<Time>,
    pub duration: Option<Time>,
    pub time_to_last_downstream_tx_byte: Option<Time>,
    pub time_to_last_upstream_rx_byte: Option<Time>,
    pub upstream_cluster: &'a str,
    pub route_name: &'a str,
    pub sni: &'a str,
    /// `upstream_remote_address.socket_address` (address, port_value).
    pub upstream_address: Option<(&'a str, u32)>,
    pub flags: Flags,
    pub intermediate: bool,
    /// `filter_state_objects["upstream_peer"]` as (type_url, value).
    pub upstream_peer: Option<(&'a str, &'a [u8])>,
    pub authority: &'a str,
    pub has_response: bool,
    pub response_code: Option<u32>,
    pub grpc_status_trailer: Option<&'a str>,
    pub grpc_status_header: Option<&'a str>,
}

const VARINT: u8 = 0;

fn utf8(v: &[u8]) -> Option<&str> {
    simdutf8::basic::from_utf8(v).ok()
}

fn varint_value(mut v: &[u8]) -> Option<u64> {
    varint(&mut v)
}

/// `Timestamp` / `Duration`: int64 seconds, int32 nanos (truncated like prost).
fn time_of(buf: &[u8]) -> Option<Time> {
    let mut t = Time::default();
    let mut fields = Fields::new(buf);
    for (f, w, v) in fields.by_ref() {
        match (f, w) {
            (1, VARINT) => t.seconds = varint_value(v)? as i64,
            (2, VARINT) => t.nanos = varint_value(v)? as i32,
            (1 | 2, _) => return None,
            _ => {}
        }
    }
    (!fields.failed).then_some(t)
}

/// The flag of each `ResponseFlags` field number (13, `unauthorized_details`, is a message).
const FLAG_OF_FIELD: [&str; 28] = [
    "", "LH", "UH", "UT", "LR", "UR", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "UAEX", "RLSE",
    "DC", "URX", "SI", "IH", "DPE", "UMSDR", "", "NFCF", "DT", "UPE", "NC", "OM", "DF",
];

fn flags_of(buf: &[u8]) -> Option<Flags> {
    let mut bits = 0u32;
    let mut fields = Fields::new(buf);
    for (f, w, v) in fields.by_ref() {
        let Some(name) = usize::try_from(f).ok().and_then(|i| FLAG_OF_FIELD.get(i)) else {
            continue; // a flag newer than this list
        };
        let set = match (f, w) {
            (13, LEN) => true,
            (13, _) => return None,
            (_, VARINT) => varint_value(v)? != 0,
            _ => return None,
        };
        if set {
            bits |= flag(name);
        }
    }
    (!fields.failed).then_some(Flags(bits))
}

/// One map entry `{1: key, 2: value}` as raw slices.
fn map_entry(buf: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let (mut key, mut value) = (&[][..], None);
    let mut fields = Fields::new(buf);
    for (f, w, v) in fields.by_ref() {
        match (f, w) {
            (1, LEN) => key = v,
            (2, LEN) => value = Some(v),
            (1 | 2, _) => return None,
            _ => {}
        }
    }
    (!fields.failed).then_some((key, value))
}

/// `google.protobuf.Any` → (type_url, value).
fn any_of(buf: &[u8]) -> Option<(&str, &[u8])> {
    let (mut url, mut value) = ("", &[][..]);
    let mut fields = Fields::new(buf);
    for (f, w, v) in fields.by_ref() {
        match (f, w) {
            (1, LEN) => url = utf8(v)?,
            (2, LEN) => value = v,
            (1 | 2, _) => return None,
            _ => {}
        }
    }
    (!fields.failed).then_some((url, value))
}

/// A string field of a sub-message (`TLSProperties.tls_sni_hostname`, `authority`).
fn string_field(buf: &[u8], field: u64) -> Option<&str> {
    let mut out = "";
    let mut fields = Fields::new(buf);
    for (f, w, v) in fields.by_ref() {
        if f == field {
            if w != LEN {
                return None;
            }
            out = utf8(v)?;
        }
    }
    (!fields.failed).then_some(out)
}

fn socket_address_of(buf: &[u8]) -> Option<Option<(&str, u32)>> {
    let mut out = None;
    let mut fields = Fields::new(buf);
    for (f, w, v) in fields.by_ref() {
        match (f, w) {
            (1, LEN) => {
                let (mut addr, mut port) = ("", 0u32);
                let mut sa = Fields::new(v);
                for (f, w, v) in sa.by_ref() {
                    match (f, w) {
                        (2, LEN) => addr = utf8(v)?,
                        (3, VARINT) => port = varint_value(v)? as u32,
                        (2 | 3, _) => return None,
                        _ => {}
                    }
                }
                if sa.failed {
                    return None;
                }
                out = Some((addr, port));
            }
            (1, _) => return None,
            _ => {}
        }
    }
    (!fields.failed).then_some(out)
}

impl<'a> EntryView<'a> {
    /// Decode an `HTTPAccessLogEntry`; `None` when it is not a valid message of that type.
    pub fn decode(buf: &'a [u8]) -> Option<EntryView<'a>> {
        let mut e = EntryView::default();
        let mut fields = Fields::new(buf);
        for (f, w, v) in fields.by_ref() {
            match (f, w) {
                (1, LEN) => e.common(v)?,
                (3, LEN) => e.authority = string_field(v, 3)?,
                (4, LEN) => e.response(v)?,
                (2, VARINT) => {}
                (1..=4, _) => return None,
                _ => {}
            }
        }
        (!fields.failed).then_some(e)
    }

    fn common(&mut self, buf: &'a [u8]) -> Option<()> {
        let mut fields = Fields::new(buf);
        for (f, w, v) in fields.by_ref() {
            match (f, w) {
                (4, LEN) => self.sni = string_field(v, 3)?,
                (5, LEN) => self.start_time = Some(time_of(v)?),
                (10, LEN) => self.time_to_last_upstream_rx_byte = Some(time_of(v)?),
                (12, LEN) => self.time_to_last_downstream_tx_byte = Some(time_of(v)?),
                (13, LEN) => self.upstream_address = socket_address_of(v)?,
                (15, LEN) => self.upstream_cluster = utf8(v)?,
                (16, LEN) => self.flags = flags_of(v)?,
                (19, LEN) => self.route_name = utf8(v)?,
                (21, LEN) => {
                    let (key, value) = map_entry(v)?;
                    let any = match value {
                        Some(a) => any_of(a)?,
                        None => ("", &[][..]),
                    };
                    if utf8(key)? == "upstream_peer" {
                        self.upstream_peer = Some(any);
                    }
                }
                (23, LEN) => self.duration = Some(time_of(v)?),
                (26, VARINT) => self.intermediate = varint_value(v)? != 0,
                (4 | 5 | 10 | 12 | 13 | 15 | 16 | 19 | 21 | 23 | 26, _) => return None,
                _ => {}
            }
        }
        (!fields.failed).then_some(())
    }

    fn response(&mut self, buf: &'a [u8]) -> Option<()> {
        self.has_response = true;
        let mut fields = Fields::new(buf);
        for (f, w, v) in fields.by_ref() {
            match (f, w) {
                (1, LEN) => {
                    let mut code = 0u32;
                    let mut inner = Fields::new(v);
                    for (f, w, v) in inner.by_ref() {
                        match (f, w) {
                            (1, VARINT) => code = varint_value(v)? as u32,
                            (1, _) => return None,
                            _ => {}
                        }
                    }
                    if inner.failed {
                        return None;
                    }
                    self.response_code = Some(code);
                }
                (4 | 5, LEN) => {
                    let (key, value) = map_entry(v)?;
                    let value = utf8(value.unwrap_or_default())?;
                    if utf8(key)? == "grpc-status" {
                        if f == 5 {
                            self.grpc_status_trailer = Some(value);
                        } else {
                            self.grpc_status_header = Some(value);
                        }
                    }
                }
                (1 | 4 | 5, _) => return None,
                _ => {}
            }
        }
        (!fields.failed).then_some(())
    }
}

// ---------------------------------------------------------------- stream state

/// Who sent a stream: the serving identity of its inbound entries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeIdentity {
    pub node_id: String,
    pub log_name: String,
    pub pod: String,
    pub namespace: String,
    pub workload: String,
    /// The pod's version label (`version`, `app.kubernetes.io/version`, else a canonical
    /// revision other than `latest`); "" when it has none.
    pub version: String,
}

/// A version from Istio's labels / peer metadata, ignoring the `latest` placeholder.
fn meaningful(revision: &str) -> &str {
    if revision == "latest" {
        ""
    } else {
        revision
    }
}

impl NodeIdentity {
    /// From an Envoy node: Istio metadata first, then the node id.
    pub fn from_node(node: &Node, log_name: &str) -> NodeIdentity {
        let mut id = NodeIdentity {
            node_id: node.id.clone(),
            log_name: log_name.to_string(),
            ..NodeIdentity::default()
        };
        if let Some(md) = &node.metadata {
            id.pod = md.str("NAME").to_string();
            id.namespace = md.str("NAMESPACE").to_string();
            id.workload = md.str("WORKLOAD_NAME").to_string();
            if let Some(labels) = md.sub("LABELS") {
                let v = [
                    labels.str("version"),
                    labels.str("app.kubernetes.io/version"),
                    meaningful(labels.str("service.istio.io/canonical-revision")),
                ]
                .into_iter()
                .find(|v| !v.is_empty())
                .unwrap_or("");
                id.version = v.to_string();
            }
        }
        // `sidecar~10.244.1.17~reviews-v2-5d8f7c6b9d-x2x4z.default~default.svc.cluster.local`
        let mut parts = node.id.split('~');
        if let (Some(_kind), Some(_ip), Some(pod_ns)) = (parts.next(), parts.next(), parts.next()) {
            let (pod, ns) = pod_ns.split_once('.').unwrap_or((pod_ns, ""));
            if id.pod.is_empty() {
                id.pod = pod.to_string();
            }
            if id.namespace.is_empty() {
                id.namespace = ns.to_string();
            }
        }
        id
    }

    fn context(&self) -> SourceContext {
        SourceContext {
            pod: self.pod.clone(),
            namespace: self.namespace.clone(),
            target: String::new(),
            version: self.version.clone(),
        }
    }
}

/// Per-stream state: the node identity from the first message, and a one-entry cache of
/// the last upstream peer's version (a stream names the same few peers over and over).
#[derive(Debug, Default)]
pub struct AlsStream {
    identity: Option<NodeIdentity>,
    inbound: SourceContext,
    outbound: SourceContext,
    peer_raw: Vec<u8>,
    peer_version: String,
    /// Messages and entries taken in so far.
    pub messages: u64,
    pub entries: u64,
}

fn time_ms(t: &Time) -> Option<f64> {
    if t.seconds < 0 || !(0..1_000_000_000).contains(&t.nanos) {
        return None;
    }
    Some(t.seconds as f64 * 1000.0 + f64::from(t.nanos) / 1e6)
}

fn timestamp_ms(t: &Time) -> Option<i64> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return None;
    }
    t.seconds
        .checked_mul(1000)?
        .checked_add(i64::from(t.nanos / 1_000_000))
}

/// Bit of a flag name in [`FLAG_NAMES`].
fn flag(name: &str) -> u32 {
    FLAG_NAMES
        .iter()
        .position(|n| *n == name)
        .map_or(0, |i| 1u32 << i)
}

/// The `ResponseFlags` booleans as the `%RESPONSE_FLAGS%` bit set.
pub fn response_flags(f: &ResponseFlags) -> Flags {
    let pairs = [
        (f.failed_local_healthcheck, "LH"),
        (f.no_healthy_upstream, "UH"),
        (f.upstream_request_timeout, "UT"),
        (f.local_reset, "LR"),
        (f.upstream_remote_reset, "UR"),
        (f.upstream_connection_failure, "UF"),
        (f.upstream_connection_termination, "UC"),
        (f.upstream_overflow, "UO"),
        (f.no_route_found, "NR"),
        (f.delay_injected, "DI"),
        (f.fault_injected, "FI"),
        (f.rate_limited, "RL"),
        (f.unauthorized_details.is_some(), "UAEX"),
        (f.rate_limit_service_error, "RLSE"),
        (f.downstream_connection_termination, "DC"),
        (f.upstream_retry_limit_exceeded, "URX"),
        (f.stream_idle_timeout, "SI"),
        (f.invalid_envoy_request_headers, "IH"),
        (f.downstream_protocol_error, "DPE"),
        (f.upstream_max_stream_duration_reached, "UMSDR"),
        (f.no_filter_config_found, "NFCF"),
        (f.duration_timeout, "DT"),
        (f.upstream_protocol_error, "UPE"),
        (f.no_cluster_found, "NC"),
        (f.overload_manager, "OM"),
        (f.dns_resolution_failure, "DF"),
    ];
    Flags(
        pairs
            .iter()
            .filter(|(set, _)| *set)
            .fold(0, |bits, (_, name)| bits | flag(name)),
    )
}

/// Whether the entry was logged by the listener that received the request for the local
/// workload (Istio's `inbound|port||` clusters and the inbound passthrough clusters).
fn is_inbound(cluster: &str) -> bool {
    cluster.starts_with("inbound|") || cluster.starts_with("InboundPassthrough")
}

/// The version in an Istio peer-metadata Struct: its app version, else its canonical revision.
fn peer_version(peer: &Struct) -> &str {
    let v = peer.str("version");
    if v.is_empty() {
        meaningful(peer.str("revision"))
    } else {
        v
    }
}

/// One gRPC frame: `[compressed: u8][length: u32 BE][message]`.
pub const FRAME_HEADER: usize = 5;

impl AlsStream {
    pub fn new() -> Self {
        AlsStream::default()
    }

    /// The identity from the stream's identifier (`None` before it arrived).
    pub fn identity(&self) -> Option<&NodeIdentity> {
        self.identity.as_ref()
    }

    fn set_identifier(&mut self, raw: &[u8]) -> bool {
        let Ok(ident) = Identifier::decode(raw) else {
            return false;
        };
        let id = ident
            .node
            .as_ref()
            .map(|n| NodeIdentity::from_node(n, &ident.log_name))
            .unwrap_or_else(|| NodeIdentity {
                log_name: ident.log_name.clone(),
                ..NodeIdentity::default()
            });
        self.inbound = id.context();
        self.identity = Some(id);
        true
    }

    /// Bring `peer_version` up to date with the entry's upstream peer (decoding the Struct
    /// only when its bytes changed); false when the entry names no upstream peer.
    fn refresh_peer(&mut self, peer: Option<(&str, &[u8])>) -> bool {
        let Some((type_url, value)) = peer else {
            return false;
        };
        if value != self.peer_raw.as_slice() {
            self.peer_raw.clear();
            self.peer_raw.extend_from_slice(value);
            self.peer_version.clear();
            if type_url.ends_with("google.protobuf.Struct") {
                if let Ok(s) = Struct::decode(value) {
                    self.peer_version.push_str(peer_version(&s));
                }
            }
        }
        true
    }

    /// Fold a buffer of gRPC-framed messages (the HTTP/2 DATA framing: a flag byte, a
    /// big-endian u32 length, the message). A compressed frame or a truncated tail counts
    /// as one [`Reason::BadProtobuf`].
    pub fn feed_framed(&mut self, p: &mut Pipeline, buf: &[u8], now_ms: i64) -> FeedStats {
        let before = (p.totals().lines, p.totals().accepted);
        let mut rest = buf;
        while !rest.is_empty() {
            let header = rest.get(..FRAME_HEADER).and_then(|h| {
                let len = u32::from_be_bytes([h[1], h[2], h[3], h[4]]) as usize;
                Some((
                    h[0],
                    rest.get(FRAME_HEADER..FRAME_HEADER.checked_add(len)?)?,
                ))
            });
            match header {
                Some((0, msg)) => {
                    p.add_bytes(FRAME_HEADER);
                    self.feed_message(p, msg, now_ms);
                    rest = &rest[FRAME_HEADER + msg.len()..];
                }
                Some((_, msg)) => {
                    p.add_bytes(FRAME_HEADER + msg.len());
                    p.count(Err(Reason::BadProtobuf));
                    rest = &rest[FRAME_HEADER + msg.len()..];
                }
                None => {
                    p.add_bytes(rest.len());
                    p.count(Err(Reason::BadProtobuf));
                    break;
                }
            }
        }
        let t = p.totals();
        FeedStats {
            lines: t.lines - before.0,
            accepted: t.accepted - before.1,
        }
    }

    /// Fold one `StreamAccessLogsMessage`. Every entry is counted once (accepted or under a
    /// reason); a message whose envelope breaks off keeps the entries before the break and
    /// counts one [`Reason::BadProtobuf`].
    pub fn feed_message(&mut self, p: &mut Pipeline, msg: &[u8], now_ms: i64) -> FeedStats {
        let before = (p.totals().lines, p.totals().accepted);
        p.add_bytes(msg.len());
        self.messages += 1;
        let mut fields = Fields::partial(msg);
        let mut broken = false;
        // The contexts belong to this stream (and its identity may change below).
        p.new_context();
        for (field, wire, value) in fields.by_ref() {
            match (field, wire) {
                (1, LEN) => {
                    if !self.set_identifier(value) {
                        broken = true;
                    }
                    p.new_context();
                }
                (2 | 3, LEN) => {
                    let mut entries = Fields::new(value);
                    for (f, w, entry) in entries.by_ref() {
                        if (f, w) != (1, LEN) {
                            continue; // unknown field of the wrapper
                        }
                        self.entries += 1;
                        if field == 3 {
                            p.count(Err(Reason::NotHttp));
                            continue;
                        }
                        match EntryView::decode(entry) {
                            Some(e) => self.fold_entry(p, &e, now_ms),
                            None => {
                                p.count(Err(Reason::BadProtobuf));
                            }
                        }
                    }
                    broken |= entries.failed;
                }
                _ => {} // unknown field: skipped like prost would
            }
        }
        if broken || fields.failed {
            p.count(Err(Reason::BadProtobuf));
        }
        let t = p.totals();
        FeedStats {
            lines: t.lines - before.0,
            accepted: t.accepted - before.1,
        }
    }

    fn fold_entry(&mut self, p: &mut Pipeline, e: &EntryView<'_>, now_ms: i64) {
        if e.intermediate {
            p.count(Err(Reason::IntermediateEntry));
            return;
        }
        let mut rec = Record::default();
        if e.has_response {
            match u16::try_from(e.response_code.unwrap_or(0)) {
                Ok(c) if c <= 999 => rec.status = c,
                _ => {
                    p.count(Err(Reason::BadNumber));
                    return;
                }
            }
            if let Some(g) = e.grpc_status_trailer.or(e.grpc_status_header) {
                match g.trim().parse::<u16>() {
                    Ok(v) => rec.grpc_status = Some(v),
                    Err(_) => {
                        p.count(Err(Reason::BadNumber));
                        return;
                    }
                }
            }
        }
        if let Some(t) = &e.start_time {
            match timestamp_ms(t) {
                Some(ms) => rec.ts_ms = Some(ms),
                None => {
                    p.count(Err(Reason::BadTimestamp));
                    return;
                }
            }
        }
        let latency = e
            .duration
            .as_ref()
            .or(e.time_to_last_downstream_tx_byte.as_ref())
            .or(e.time_to_last_upstream_rx_byte.as_ref());
        if let Some(d) = latency {
            match time_ms(d) {
                Some(ms) => rec.latency_ms = Some(ms),
                None => {
                    p.count(Err(Reason::BadNumber));
                    return;
                }
            }
        }
        rec.flags = e.flags;
        rec.upstream_cluster = e.upstream_cluster;
        rec.sni = e.sni;
        rec.authority = e.authority;
        let host;
        if p.attributor().uses_upstream_host() {
            if let Some((address, port)) = e.upstream_address {
                host = if port == 0 {
                    address.to_string()
                } else if address.contains(':') {
                    format!("[{address}]:{port}")
                } else {
                    format!("{address}:{port}")
                };
                rec.upstream_host = &host;
            }
        }
        // Inbound and outbound entries have their own source context and key cache.
        if is_inbound(e.upstream_cluster) {
            p.fold_record(&rec, &self.inbound, 1, now_ms);
        } else {
            if self.refresh_peer(e.upstream_peer) {
                rec.version = &self.peer_version;
            }
            // The key cache compares `rec.version` too, so the context stays valid.
            p.fold_record(&rec, &self.outbound, 0, now_ms);
        }
    }
}

/// Frame messages the way [`AlsStream::feed_framed`] reads them.
pub fn frame(messages: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(messages.iter().map(|m| m.len() + FRAME_HEADER).sum());
    for m in messages {
        out.push(0);
        out.extend_from_slice(&(m.len() as u32).to_be_bytes());
        out.extend_from_slice(m);
    }
    out
}

#[cfg(test)]
mod tests;
