//! Parser for the Linkerd proxy access log, `apache` format (inbound side only):
//!
//! ```text
//! client.addr client.id - [timestamp] "METHOD URI VERSION" STATUS
//! ```
//!
//! No latency (`latency_ms` stays `None`) and no size. `authority` is the host of an
//! absolute URI (HTTP/2 from meshed clients: `http://webapp:7000/authors` → `webapp:7000`),
//! else "" (path-only HTTP/1 URIs). `target`/`version` are left "": nothing in the line
//! names the serving pod; the reader attributes it from the log source.

use super::istio_text::{end_of_quoted, expect, find, is_digit, required, token};
use crate::malformed::Reason;
use crate::parse::num::parse_status;
use crate::parse::time::parse_rfc3339_ms;
use crate::record::Record;

/// Parse one line; see the module docs of [`crate::parse`] for the contract.
pub fn parse<'a>(line: &'a str, rec: &mut Record<'a>) -> Result<(), Reason> {
    let b = line.as_bytes();
    let (_client_addr, p) = token(b, 0)?;
    let (_client_id, p) = token(b, p)?;
    let p = expect(b, p, b"- [")?;
    let ts_end = find(b, p, b']').ok_or(Reason::Truncated)?;
    let ts = b.get(p..ts_end).ok_or(Reason::BadSyntax)?;
    let req_start = expect(b, ts_end, b"] \"")?;
    let req_end = end_of_quoted(b, req_start, is_digit)?;
    let status_start = expect(b, req_end, b" ")?;
    let status = b.get(status_start..).unwrap_or_default();
    if status.is_empty() {
        return Err(Reason::Truncated);
    }

    rec.ts_ms = Some(parse_rfc3339_ms(ts).ok_or(Reason::BadTimestamp)?);
    rec.status = required(status, parse_status)?;
    // "METHOD URI VERSION": the URI is the second word.
    let request = line.get(req_start..req_end - 1).unwrap_or_default();
    let mut words = request.splitn(3, ' ');
    let _method = words.next();
    let uri = words.next().ok_or(Reason::BadSyntax)?;
    rec.authority = uri_authority(uri);
    Ok(())
}

/// The authority of an absolute URI (`scheme://authority/...`), else "".
#[inline]
fn uri_authority(uri: &str) -> &str {
    let Some(scheme_end) = uri.find("://") else {
        return "";
    };
    // A scheme is letters (and `+-.`); a `://` later in a path or query is not one.
    let scheme = uri.get(..scheme_end).unwrap_or_default();
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
    {
        return "";
    }
    let rest = uri.get(scheme_end + 3..).unwrap_or_default();
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    rest.get(..end).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// §3 examples (Linkerd docs).
    pub(crate) const MESHED: &str = "10.42.0.63:51160 traffic.booksapp.serviceaccount.identity.linkerd.cluster.local - [2022-08-23T20:28:20.187706137Z] \"POST http://webapp:7000/authors HTTP/2.0\" 303";
    const PROBE: &str =
        "10.42.0.1:43682 - - [2022-08-23T20:28:23.049685223Z] \"GET /ping HTTP/1.1\" 200";

    fn err(line: &str) -> Reason {
        let mut rec = Record::default();
        parse(line, &mut rec).expect_err(line)
    }

    #[test]
    fn docs_examples() {
        let mut rec = Record::default();
        parse(MESHED, &mut rec).unwrap();
        assert_eq!(rec.ts_ms, parse_rfc3339_ms(b"2022-08-23T20:28:20.187Z"));
        assert_eq!(rec.status, 303);
        assert_eq!(rec.latency_ms, None);
        assert_eq!(rec.authority, "webapp:7000");
        assert_eq!((rec.target, rec.version, rec.upstream_host), ("", "", ""));

        let mut rec = Record::default();
        parse(PROBE, &mut rec).unwrap();
        assert_eq!(rec.status, 200);
        assert_eq!(rec.authority, "");
        assert_eq!(rec.latency_ms, None);
    }

    #[test]
    fn uri_forms() {
        assert_eq!(uri_authority("https://a.b:8443?x=1"), "a.b:8443");
        assert_eq!(uri_authority("http://webapp"), "webapp");
        assert_eq!(uri_authority("/x?u=http://y/"), "");
        assert_eq!(uri_authority("/books"), "");
        assert_eq!(uri_authority("*"), "");
    }

    #[test]
    fn bad_lines() {
        assert_eq!(err(&MESHED.replace("\" 303", "\" 3x3")), Reason::BadNumber);
        assert_eq!(
            err(&MESHED.replace("\" 303", "\" 303 12")),
            Reason::BadNumber
        );
        assert_eq!(
            err(&MESHED.replace("2022-08-23T", "2022-18-23T")),
            Reason::BadTimestamp
        );
        assert_eq!(err(&MESHED.replace(" - [", " x [")), Reason::BadSyntax);
        assert_eq!(
            err("10.42.0.1:43682 - - [2022-08-23T20:28:23Z] \"\" 200"),
            Reason::BadSyntax
        );
        for end in 0..=PROBE.len() - 3 {
            assert_eq!(err(&PROBE[..end]), Reason::Truncated, "{}", &PROBE[..end]);
        }
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_panic(s in any::<String>()) {
            let mut rec = Record::default();
            let _ = parse(&s, &mut rec);
        }

        #[test]
        fn cut_lines_never_panic(cut in 0usize..200, ch in any::<char>()) {
            let mut s = MESHED.to_string();
            let at = cut.min(s.len());
            s.insert(at, ch);
            let mut rec = Record::default();
            let _ = parse(&s, &mut rec);
            let _ = parse(&MESHED[..cut.min(MESHED.len())], &mut rec);
        }
    }
}
