//! Generic NDJSON with a caller-supplied field mapping.

use crate::malformed::Reason;
use crate::record::Record;

/// Unit of a numeric duration or timestamp field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Ns,
    Us,
    Ms,
    S,
}

impl Unit {
    /// Multiply a value in this unit by this to get milliseconds.
    pub fn to_ms_factor(self) -> f64 {
        match self {
            Unit::Ns => 1e-6,
            Unit::Us => 1e-3,
            Unit::Ms => 1.0,
            Unit::S => 1e3,
        }
    }

    pub fn from_name(s: &str) -> Option<Unit> {
        match s {
            "ns" => Some(Unit::Ns),
            "us" | "µs" => Some(Unit::Us),
            "ms" => Some(Unit::Ms),
            "s" => Some(Unit::S),
            _ => None,
        }
    }
}

/// Which top-level keys of the NDJSON object hold what. Empty key name = not mapped.
#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    /// HTTP status (number or numeric string). Required.
    pub status: String,
    /// Request duration (number or numeric string) in `duration_unit`.
    pub duration: String,
    pub duration_unit: Unit,
    /// Event time: an RFC 3339 string, or a number in `timestamp_unit` since the epoch.
    pub timestamp: String,
    pub timestamp_unit: Unit,
    /// Explicit target and version fields.
    pub target: String,
    pub version: String,
    /// Optional extra fields.
    pub grpc_status: String,
    pub flags: String,
    pub upstream_cluster: String,
    pub sni: String,
    pub upstream_host: String,
    pub authority: String,
}

impl Default for Mapping {
    fn default() -> Self {
        Mapping {
            status: "status".into(),
            duration: "duration_ms".into(),
            duration_unit: Unit::Ms,
            timestamp: "timestamp".into(),
            timestamp_unit: Unit::Ms,
            target: "target".into(),
            version: "version".into(),
            grpc_status: "grpc_status".into(),
            flags: String::new(),
            upstream_cluster: String::new(),
            sni: String::new(),
            upstream_host: String::new(),
            authority: String::new(),
        }
    }
}

/// Parse one line with `mapping`. (stub: being implemented)
pub fn parse<'a>(_mapping: &Mapping, _line: &'a str, _rec: &mut Record<'a>) -> Result<(), Reason> {
    Err(Reason::BadSyntax)
}
