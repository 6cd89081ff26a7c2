//! Generic NDJSON with a caller-supplied field mapping.

use crate::flags::Flags;
use crate::malformed::Reason;
use crate::parse::json_scan::{ObjectScanner, Value};
use crate::parse::num;
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

/// Parse one line with `mapping`.
///
/// Only top-level keys are looked at; an empty key name in the mapping is unmapped, and
/// one key may feed several fields. `status` is required ([`Reason::MissingField`] when
/// absent, `null` or `"-"`); the duration (number or numeric string, in
/// `duration_unit`) becomes `latency_ms`, `None` when absent. The timestamp is an RFC
/// 3339 string or a number of `timestamp_unit`s since the epoch (integers are converted
/// exactly, fractions rounded to the nearest ms). String fields take strings, numbers
/// and booleans as written; `null` and `"-"` become "". JSON escapes in a mapped string
/// field are [`Reason::UnsupportedEscape`]; keys written with escapes never match.
pub fn parse<'a>(mapping: &Mapping, line: &'a str, rec: &mut Record<'a>) -> Result<(), Reason> {
    let mut status = None;
    let mut scanner = ObjectScanner::new(line.as_bytes());
    while let Some(m) = scanner.next_member()? {
        if m.key_escaped {
            continue;
        }
        let (k, v) = (m.key, m.value);
        if is(k, &mapping.status) {
            status = v.status()?;
        }
        if is(k, &mapping.duration) {
            let factor = mapping.duration_unit.to_ms_factor();
            rec.latency_ms = v.non_negative_f64()?.map(|d| d * factor);
        }
        if is(k, &mapping.timestamp) {
            rec.ts_ms = timestamp_ms(v, mapping.timestamp_unit)?;
        }
        if is(k, &mapping.target) {
            rec.target = v.text_field(line)?;
        }
        if is(k, &mapping.version) {
            rec.version = v.text_field(line)?;
        }
        if is(k, &mapping.grpc_status) {
            rec.grpc_status = v.grpc_status()?;
        }
        if is(k, &mapping.flags) {
            rec.flags = Flags::parse(v.text_field(line)?.as_bytes());
        }
        if is(k, &mapping.upstream_cluster) {
            rec.upstream_cluster = v.text_field(line)?;
        }
        if is(k, &mapping.sni) {
            rec.sni = v.text_field(line)?;
        }
        if is(k, &mapping.upstream_host) {
            rec.upstream_host = v.text_field(line)?;
        }
        if is(k, &mapping.authority) {
            rec.authority = v.text_field(line)?;
        }
    }
    rec.status = status.ok_or(Reason::MissingField)?;
    Ok(())
}

/// The key matches a mapped (non-empty) name.
#[inline]
fn is(key: &[u8], name: &str) -> bool {
    !name.is_empty() && key == name.as_bytes()
}

/// Event time: RFC 3339 string, or a non-negative number of `unit`s since the epoch.
fn timestamp_ms(v: Value<'_>, unit: Unit) -> Result<Option<i64>, Reason> {
    let Value::Num(raw) = v else {
        return v.rfc3339_ms();
    };
    if let Some(n) = num::parse_u64(raw) {
        // Integers: exact conversion.
        let ms = match unit {
            Unit::Ns => Some(n / 1_000_000),
            Unit::Us => Some(n / 1_000),
            Unit::Ms => Some(n),
            Unit::S => n.checked_mul(1_000),
        };
        return ms
            .and_then(|ms| i64::try_from(ms).ok())
            .map(Some)
            .ok_or(Reason::BadTimestamp);
    }
    let ms = num::parse_f64(raw).ok_or(Reason::BadTimestamp)? * unit.to_ms_factor();
    if ms < i64::MAX as f64 {
        Ok(Some(ms.round() as i64))
    } else {
        Err(Reason::BadTimestamp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::time::parse_rfc3339_ms;
    use proptest::prelude::*;

    fn run<'a>(mapping: &Mapping, line: &'a str) -> Result<Record<'a>, Reason> {
        let mut rec = Record::default();
        parse(mapping, line, &mut rec).map(|()| rec)
    }

    #[test]
    fn default_mapping() {
        let m = Mapping::default();
        let line = r#"{"timestamp":1764133567130,"status":503,"duration_ms":12.5,"target":"reviews","version":"v2","grpc_status":"UNAVAILABLE","other":{"x":[1]}}"#;
        let r = run(&m, line).unwrap();
        assert_eq!(r.ts_ms, Some(1764133567130));
        assert_eq!(r.status, 503);
        assert_eq!(r.latency_ms, Some(12.5));
        assert_eq!(r.target, "reviews");
        assert_eq!(r.version, "v2");
        assert_eq!(r.grpc_status, Some(14));
        // Unmapped by default.
        assert_eq!(r.upstream_cluster, "");
        let r = run(
            &m,
            r#"{"status":"200","timestamp":"2026-11-26T05:06:07.130Z"}"#,
        )
        .unwrap();
        assert_eq!(r.ts_ms, parse_rfc3339_ms(b"2026-11-26T05:06:07.130Z"));
        assert_eq!(r.latency_ms, None);
        // Numbers as string fields are kept as written.
        assert_eq!(
            run(&m, r#"{"status":200,"version":2}"#).unwrap().version,
            "2"
        );
    }

    #[test]
    fn custom_mapping_and_units() {
        let m = Mapping {
            status: "code".into(),
            duration: "took".into(),
            duration_unit: Unit::S,
            timestamp: "ts".into(),
            timestamp_unit: Unit::Ns,
            target: "svc".into(),
            version: "ver".into(),
            grpc_status: String::new(),
            flags: "flags".into(),
            upstream_cluster: "svc".into(),
            sni: "sni".into(),
            upstream_host: "peer".into(),
            authority: "host".into(),
        };
        let line = r#"{"code":201,"took":"0.25","ts":1764133567130999999,"svc":"outbound|80|canary|x","ver":null,"flags":"UF,URX","sni":"-","peer":"10.0.0.1:80","host":"x:80","status":999}"#;
        let r = run(&m, line).unwrap();
        assert_eq!(r.status, 201);
        assert_eq!(r.latency_ms, Some(250.0));
        assert_eq!(r.ts_ms, Some(1764133567130));
        assert_eq!(r.target, "outbound|80|canary|x");
        assert_eq!(r.upstream_cluster, "outbound|80|canary|x");
        assert_eq!(r.version, "");
        assert_eq!(r.flags, Flags::parse(b"UF,URX"));
        assert_eq!(
            (r.sni, r.upstream_host, r.authority),
            ("", "10.0.0.1:80", "x:80")
        );
        let m = Mapping {
            timestamp_unit: Unit::S,
            ..Mapping::default()
        };
        assert_eq!(
            run(&m, r#"{"status":200,"timestamp":1764133567.1304}"#)
                .unwrap()
                .ts_ms,
            Some(1764133567130)
        );
        assert_eq!(
            run(&m, r#"{"status":200,"timestamp":1764133567}"#)
                .unwrap()
                .ts_ms,
            Some(1764133567000)
        );
        assert_eq!(
            run(&m, r#"{"status":200,"timestamp":99999999999999999999}"#),
            Err(Reason::BadTimestamp)
        );
        assert_eq!(
            run(&m, r#"{"status":200,"timestamp":1e300}"#),
            Err(Reason::BadTimestamp)
        );
    }

    #[test]
    fn rejects() {
        let m = Mapping::default();
        assert_eq!(run(&m, r#"{"duration_ms":3}"#), Err(Reason::MissingField));
        assert_eq!(run(&m, r#"{"status":"-"}"#), Err(Reason::MissingField));
        assert_eq!(run(&m, r#"{"status":-1}"#), Err(Reason::BadNumber));
        assert_eq!(
            run(&m, r#"{"status":200,"duration_ms":-1}"#),
            Err(Reason::BadNumber)
        );
        assert_eq!(
            run(&m, r#"{"status":200,"timestamp":-5}"#),
            Err(Reason::BadTimestamp)
        );
        assert_eq!(
            run(&m, r#"{"status":200,"timestamp":true}"#),
            Err(Reason::BadTimestamp)
        );
        assert_eq!(
            run(&m, r#"{"status":200,"version":"v\u0032"}"#),
            Err(Reason::UnsupportedEscape)
        );
        assert_eq!(
            run(&m, r#"{"status":200,"target":{"a":1}}"#),
            Err(Reason::BadSyntax)
        );
        assert_eq!(run(&m, r#"{"status":200"#), Err(Reason::Truncated));
        assert_eq!(run(&m, r#"[{"status":200}]"#), Err(Reason::BadSyntax));
        // Nested keys are not top-level keys; escaped keys never match.
        assert_eq!(
            run(&m, r#"{"x":{"status":200}}"#),
            Err(Reason::MissingField)
        );
        assert_eq!(run(&m, r#"{"st\u0061tus":200}"#), Err(Reason::MissingField));
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(line in ".{0,300}") {
            let _ = run(&Mapping::default(), &line);
        }

        #[test]
        fn every_truncation_is_an_error(status in 100u16..600, dur in 0u32..100_000, ver in "[a-z0-9]{0,8}") {
            let line = format!(r#"{{"status":{status},"duration_ms":{dur},"version":"{ver}","target":"t"}}"#);
            let m = Mapping::default();
            let r = run(&m, &line).unwrap();
            prop_assert_eq!((r.status, r.latency_ms, r.version), (status, Some(dur as f64), ver.as_str()));
            for cut in 0..line.len() {
                prop_assert_eq!(run(&m, &line[..cut]).err(), Some(Reason::Truncated));
            }
        }
    }
}
