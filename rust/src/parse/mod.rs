//! One parser per access-log format. Every parser has the same shape:
//!
//! ```ignore
//! pub fn parse<'a>(line: &'a str, rec: &mut Record<'a>) -> Result<(), Reason>
//! ```
//!
//! `line` is one line without its `\n`/`\r\n`, already checked for UTF-8, length and
//! blankness by the pipeline. `rec` arrives cleared. A parser never panics and never
//! allocates per line.

pub mod detect;
pub mod istio_json;
pub mod istio_text;
pub mod json_scan;
pub mod linkerd_apache;
pub mod linkerd_json;
pub mod ndjson;
pub mod nginx;
pub mod num;
pub mod time;
pub mod unwrap;

use crate::malformed::Reason;
use crate::record::Record;

/// Access-log formats the core understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Istio/Envoy JSON encoding (typed values or all-string values with `"-"`).
    IstioJson,
    /// Istio/Envoy default TEXT format (`%UPSTREAM_CLUSTER_RAW%` or `%UPSTREAM_CLUSTER%`).
    IstioText,
    /// Linkerd proxy access log, `json` format.
    LinkerdJson,
    /// Linkerd proxy access log, `apache` format (no latency).
    LinkerdApache,
    /// ingress-nginx default `log-format-upstream`.
    Nginx,
    /// Generic NDJSON with a field mapping ([`ndjson::Mapping`]).
    Ndjson,
}

impl Format {
    pub const ALL: [Format; 6] = [
        Format::IstioJson,
        Format::IstioText,
        Format::LinkerdJson,
        Format::LinkerdApache,
        Format::Nginx,
        Format::Ndjson,
    ];

    /// CLI / API name.
    pub fn name(self) -> &'static str {
        match self {
            Format::IstioJson => "istio-json",
            Format::IstioText => "istio-text",
            Format::LinkerdJson => "linkerd-json",
            Format::LinkerdApache => "linkerd-apache",
            Format::Nginx => "nginx",
            Format::Ndjson => "ndjson",
        }
    }

    pub fn from_name(name: &str) -> Option<Format> {
        Format::ALL.iter().copied().find(|f| f.name() == name)
    }
}

/// Parse one line in `format`. `mapping` is used by [`Format::Ndjson`] only.
#[inline]
pub fn parse_line<'a>(
    format: Format,
    mapping: &ndjson::Mapping,
    line: &'a str,
    rec: &mut Record<'a>,
) -> Result<(), Reason> {
    match format {
        Format::IstioJson => istio_json::parse(line, rec),
        Format::IstioText => istio_text::parse(line, rec),
        Format::LinkerdJson => linkerd_json::parse(line, rec),
        Format::LinkerdApache => linkerd_apache::parse(line, rec),
        Format::Nginx => nginx::parse(line, rec),
        Format::Ndjson => ndjson::parse(mapping, line, rec),
    }
}
