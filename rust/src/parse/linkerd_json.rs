//! Parser for the Linkerd proxy `json` access log (reference §3).
//!
//! Keys read (by name, any order; everything else such as `client.addr`, `uri` or the
//! HTTP `version` is skipped):
//! - `timestamp`: RFC 3339 with ns → `ts_ms`; absent → `None`; unparsable →
//!   [`Reason::BadTimestamp`].
//! - `status`: number or numeric string; required ([`Reason::MissingField`]).
//! - `total_ns`: nanoseconds as a string (what the proxy writes) or a number →
//!   `latency_ms = total_ns / 1e6`; absent → `None` (the line is kept).
//! - `host` → `authority`, and `target` = the host without its `:port`.
//!
//! String fields with JSON escapes are [`Reason::UnsupportedEscape`], as in
//! [`crate::parse::istio_json`].

use crate::malformed::Reason;
use crate::parse::json_scan::ObjectScanner;
use crate::record::Record;

/// Parse one line; see the module docs of [`crate::parse`] for the contract.
pub fn parse<'a>(line: &'a str, rec: &mut Record<'a>) -> Result<(), Reason> {
    let mut status = None;
    let mut scanner = ObjectScanner::new(line.as_bytes());
    while let Some(m) = scanner.next_member()? {
        if m.key_escaped {
            continue;
        }
        let v = m.value;
        match m.key {
            b"timestamp" => rec.ts_ms = v.rfc3339_ms()?,
            b"status" => status = v.status()?,
            b"total_ns" => rec.latency_ms = v.non_negative_f64()?.map(|ns| ns / 1e6),
            b"host" => {
                let host = v.text_field(line)?;
                rec.authority = host;
                rec.target = host_without_port(host);
            }
            _ => {}
        }
    }
    rec.status = status.ok_or(Reason::MissingField)?;
    Ok(())
}

/// `webapp:7000` → `webapp`; `[fd00::1]:80` → `[fd00::1]`; a bare IPv6 address or a
/// host without port is returned as is.
fn host_without_port(host: &str) -> &str {
    let Some(colon) = host.rfind(':') else {
        return host;
    };
    let (name, port) = (
        host.get(..colon).unwrap_or(""),
        host.get(colon + 1..).unwrap_or(""),
    );
    let port_ok = !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit());
    let name_ok = !name.contains(':') || (name.starts_with('[') && name.ends_with(']'));
    if port_ok && name_ok && !name.is_empty() {
        name
    } else {
        host
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::time::parse_rfc3339_ms;
    use proptest::prelude::*;

    /// Reference §3 example line (Linkerd docs).
    const EXAMPLE: &str = r#"{"client.addr":"10.42.0.70:32996","client.id":"traffic.booksapp.serviceaccount.identity.linkerd.cluster.local","host":"webapp:7000","method":"POST","processing_ns":"30036","request_bytes":"33","response_bytes":"0","status":303,"timestamp":"2022-08-23T20:33:42.436964052Z","total_ns":"14122403","trace_id":"","uri":"http://webapp:7000/authors","user_agent":"Go-http-client/1.1","version":"HTTP/2.0"}"#;

    fn run(line: &str) -> Result<Record<'_>, Reason> {
        let mut rec = Record::default();
        parse(line, &mut rec).map(|()| rec)
    }

    #[test]
    fn reference_example() {
        let r = run(EXAMPLE).unwrap();
        assert_eq!(r.status, 303);
        assert_eq!(r.ts_ms, parse_rfc3339_ms(b"2022-08-23T20:33:42.436Z"));
        assert_eq!(r.latency_ms, Some(14.122403));
        assert_eq!(r.authority, "webapp:7000");
        assert_eq!(r.target, "webapp");
        // The HTTP version is not the serving version.
        assert_eq!(r.version, "");
        assert_eq!(r.grpc_status, None);
    }

    #[test]
    fn variants() {
        let r = run(r#"{"status":"200","total_ns":5000000,"host":"books"}"#).unwrap();
        assert_eq!(
            (r.status, r.latency_ms, r.target, r.ts_ms),
            (200, Some(5.0), "books", None)
        );
        let r = run(r#"{"status":200}"#).unwrap();
        assert_eq!(r.latency_ms, None);
        assert_eq!(r.authority, "");
        assert_eq!(run(r#"{"total_ns":"1"}"#), Err(Reason::MissingField));
        assert_eq!(run(r#"{"status":null}"#), Err(Reason::MissingField));
        assert_eq!(run(r#"{"status":"abc"}"#), Err(Reason::BadNumber));
        assert_eq!(
            run(r#"{"status":200,"total_ns":"-5"}"#),
            Err(Reason::BadNumber)
        );
        assert_eq!(
            run(r#"{"status":200,"timestamp":"now"}"#),
            Err(Reason::BadTimestamp)
        );
        assert_eq!(
            run(r#"{"status":200,"host":"a\u0062c:80"}"#),
            Err(Reason::UnsupportedEscape)
        );
        assert_eq!(
            run(r#"{"status":200,"user_agent":"x \"y\" z"}"#).map(|r| r.status),
            Ok(200)
        );
    }

    #[test]
    fn hosts() {
        assert_eq!(host_without_port("webapp:7000"), "webapp");
        assert_eq!(host_without_port("webapp"), "webapp");
        assert_eq!(host_without_port("[fd00::1]:80"), "[fd00::1]");
        assert_eq!(host_without_port("fd00::1"), "fd00::1");
        assert_eq!(host_without_port("webapp:"), "webapp:");
        assert_eq!(host_without_port(":80"), ":80");
    }

    #[test]
    fn every_truncation_is_an_error() {
        for cut in 0..EXAMPLE.len() {
            assert!(
                matches!(
                    run(&EXAMPLE[..cut]),
                    Err(Reason::Truncated | Reason::BadSyntax | Reason::BadTimestamp)
                ),
                "cut {cut}"
            );
        }
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(line in ".{0,300}") {
            let _ = run(&line);
        }

        #[test]
        fn arbitrary_host_never_panics(host in ".{0,40}") {
            let _ = host_without_port(&host);
        }
    }
}
