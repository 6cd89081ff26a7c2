//! Parser for ingress-nginx's default `log-format-upstream`:
//!
//! ```text
//! $remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent
//! "$http_referer" "$http_user_agent" $request_length $request_time [$proxy_upstream_name]
//! [$proxy_alternative_upstream_name] $upstream_addr $upstream_response_length
//! $upstream_response_time $upstream_status $req_id
//! ```
//!
//! The prefix (up to `$body_bytes_sent`) is read left to right, the suffix right to left
//! from `$req_id`, so referer and User-Agent (which may hold a raw `"` when a custom
//! `escape=none` is used) are never scanned.
//!
//! With retries / next-upstream the four `$upstream_*` variables are lists: `, ` between
//! attempts and ` : ` between upstream groups (internal redirect), e.g. `0.004, 0.012`;
//! so a list spans several space-separated tokens. Walking backwards, a token belongs to
//! the list when the token before it ends with `,` or is `:`.
//!
//! Record fields:
//! - `ts_ms` from `$time_local`, `status` = `$status` (what the client got);
//! - `latency_ms` = `$request_time` × 1000: the whole request as the client saw it, the
//!   counterpart of Envoy's `%DURATION%` and what Flagger's nginx `request-duration` metric
//!   measures (`nginx_ingress_controller_request_duration_seconds`); retries to another
//!   upstream are inside it. When `$request_time` is `-`, the sum of the
//!   `$upstream_response_time` elements (`-` elements skipped) is used instead;
//! - `target` = `$proxy_upstream_name`; `version` = `"canary"` when
//!   `$proxy_alternative_upstream_name` is non-empty (the balancer sets it only when the
//!   canary served the request), else `"primary"`;
//! - `upstream_host` = the last element of `$upstream_addr` (the attempt that answered).

use memchr::{memmem, memrchr};

use super::istio_text::{
    absent_if_dash, end_of_quoted, expect, find, is_digit_or_dash, required, token,
};
use crate::malformed::Reason;
use crate::parse::num::{parse_f64, parse_status};
use crate::parse::time::parse_nginx_time_ms;
use crate::record::Record;

/// Parse one line; see the module docs of [`crate::parse`] for the contract.
pub fn parse<'a>(line: &'a str, rec: &mut Record<'a>) -> Result<(), Reason> {
    let b = line.as_bytes();

    // $remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent
    let (_, p) = token(b, 0)?;
    let p = expect(b, p, b"- ")?;
    let (_, p) = token(b, p)?;
    let p = expect(b, p, b"[")?;
    let time_end = find(b, p, b']').ok_or(Reason::Truncated)?;
    let time = b.get(p..time_end).ok_or(Reason::BadSyntax)?;
    let p = expect(b, time_end, b"] \"")?;
    let p = end_of_quoted(b, p, is_digit_or_dash)?;
    let p = expect(b, p, b" ")?;
    let (status, p) = token(b, p)?;
    let (_, prefix_end) = token(b, p)?;

    rec.ts_ms = Some(parse_nginx_time_ms(time).ok_or(Reason::BadTimestamp)?);
    rec.status = required(status, parse_status)?;

    match suffix(line, prefix_end, rec) {
        Ok(()) => Ok(()),
        Err(Reason::BadSyntax) => Err(classify_bad_suffix(b, prefix_end)),
        Err(e) => Err(e),
    }
}

/// Fields from `$request_length` to `$req_id`, read right to left.
#[inline]
fn suffix<'a>(line: &'a str, prefix_end: usize, rec: &mut Record<'a>) -> Result<(), Reason> {
    let b = line.as_bytes();
    let mut back = Back {
        b,
        lo: prefix_end,
        end: b.len(),
    };
    let _req_id = back.list()?; // a single token; `list` refuses one ending in `,`
    let _upstream_status = back.list()?;
    let upstream_time = back.list()?;
    let _upstream_length = back.list()?;
    let upstream_addr = back.list()?;
    let alt = bracketed(line, back.token()?)?;
    let name = bracketed(line, back.token()?)?;
    let request_time = back.token()?;
    let request_length = back.token()?;
    // `$request_length` follows the User-Agent's closing quote.
    if request_length.0 < prefix_end + 2 || b.get(request_length.0 - 2) != Some(&b'"') {
        return Err(Reason::BadSyntax);
    }

    rec.target = name;
    rec.version = if alt.is_empty() { "primary" } else { "canary" };
    rec.upstream_host = absent_if_dash(last_element(line, upstream_addr));
    let request_ms = b
        .get(request_time.0..request_time.1)
        .filter(|t| *t != b"-")
        .map(|t| parse_f64(t).ok_or(Reason::BadNumber))
        .transpose()?;
    rec.latency_ms = Some(match request_ms {
        Some(s) => s * 1000.0,
        None => {
            let upstream = b.get(upstream_time.0..upstream_time.1).unwrap_or_default();
            sum_seconds(upstream)?.ok_or(Reason::MissingField)?
        }
    });
    Ok(())
}

/// A backward cursor over space-separated tokens; never moves left of `lo`.
struct Back<'a> {
    b: &'a [u8],
    lo: usize,
    end: usize,
}

impl Back<'_> {
    /// The token ending at the cursor, as a range. Running into `lo` (the prefix) means
    /// the line has fewer fields than the format: reported as BadSyntax and refined by
    /// [`classify_bad_suffix`].
    #[inline]
    fn token(&mut self) -> Result<(usize, usize), Reason> {
        let hay = self.b.get(self.lo..self.end).ok_or(Reason::BadSyntax)?;
        let sp = self.lo + memrchr(b' ', hay).ok_or(Reason::BadSyntax)?;
        let range = (sp + 1, self.end);
        if range.0 == range.1 {
            return Err(Reason::BadSyntax);
        }
        self.end = sp;
        Ok(range)
    }

    /// The token `b[s..e]` ends with a list separator (`,` or ` : `).
    #[inline]
    fn continues_list(&self, s: usize, e: usize) -> bool {
        let tok = self.b.get(s..e).unwrap_or_default();
        tok.ends_with(b",") || tok == b":"
    }

    /// A whole `$upstream_*` list (`a, b : c`) as one range.
    #[inline]
    fn list(&mut self) -> Result<(usize, usize), Reason> {
        let (mut start, end) = self.token()?;
        if self.continues_list(start, end) {
            // A list cannot end with a separator: the field after it is missing.
            return Err(Reason::BadSyntax);
        }
        // A token continues the list when the previous one ends with `,` or is `:`, and
        // the token before a `:` always belongs to it.
        let mut after_colon = false;
        loop {
            let saved = self.end;
            let Ok((s, e)) = self.token() else {
                self.end = saved;
                break;
            };
            if after_colon || self.continues_list(s, e) {
                start = s;
                after_colon = self.b.get(s..e) == Some(b":");
            } else {
                self.end = saved;
                break;
            }
        }
        Ok((start, end))
    }
}

/// The text inside `[...]`.
#[inline]
fn bracketed(line: &str, (s, e): (usize, usize)) -> Result<&str, Reason> {
    let b = line.as_bytes();
    if b.get(s) != Some(&b'[') || e < s + 2 || b.get(e - 1) != Some(&b']') {
        return Err(Reason::BadSyntax);
    }
    line.get(s + 1..e - 1).ok_or(Reason::BadSyntax)
}

/// The last element of a list range (the attempt that produced the response).
#[inline]
fn last_element(line: &str, (s, e): (usize, usize)) -> &str {
    let b = line.as_bytes();
    let hay = b.get(s..e).unwrap_or_default();
    let start = memrchr(b' ', hay).map_or(s, |i| s + i + 1);
    line.get(start..e).unwrap_or_default()
}

/// Sum of the seconds in a time list, in ms; `None` when no element has a time.
#[inline]
fn sum_seconds(list: &[u8]) -> Result<Option<f64>, Reason> {
    // Fast path: the usual single element.
    if !list.contains(&b' ') {
        return match list {
            b"-" => Ok(None),
            _ => parse_f64(list)
                .map(|v| Some(v * 1000.0))
                .ok_or(Reason::BadNumber),
        };
    }
    let mut total = None;
    for part in list.split(|&c| c == b' ') {
        let part = part.strip_suffix(b",").unwrap_or(part);
        match part {
            b"" | b":" | b"-" => {}
            _ => {
                let v = parse_f64(part).ok_or(Reason::BadNumber)?;
                total = Some(total.unwrap_or(0.0) + v * 1000.0);
            }
        }
    }
    Ok(total)
}

/// Cold path: the suffix did not have the expected shape. Call it `Truncated` when the
/// line stops early (no `[upstream] [alternative]` pair after the prefix, or fewer than
/// the five fields that follow it), else `BadSyntax`.
#[cold]
fn classify_bad_suffix(b: &[u8], prefix_end: usize) -> Reason {
    let rest = b.get(prefix_end..).unwrap_or_default();
    let Some(pair) = memmem::rfind(rest, b"] [") else {
        return Reason::Truncated;
    };
    let after_pair = rest.get(pair + 3..).unwrap_or_default();
    let Some(close) = memchr::memchr(b']', after_pair) else {
        return Reason::Truncated;
    };
    // Count the fields after the alternative upstream: list continuations do not count.
    let tail = after_pair.get(close + 1..).unwrap_or_default();
    let mut fields = 0;
    let mut continues = false;
    for tok in tail.split(|&c| c == b' ').filter(|t| !t.is_empty()) {
        if !continues && tok != b":" {
            fields += 1;
        }
        continues = tok.ends_with(b",") || tok == b":";
    }
    if fields < 5 {
        Reason::Truncated
    } else {
        Reason::BadSyntax
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::time::parse_rfc3339_ms;
    use proptest::prelude::*;

    /// §5 example: stable-served.
    pub(crate) const LINE: &str = "10.244.0.1 - - [25/Feb/2026:10:30:15 +0000] \"GET /api/v1/users HTTP/1.1\" 200 1234 \"https://example.com\" \"Mozilla/5.0\" 456 0.032 [default-myapp-svc-80] [] 192.168.22.1:8080 1234 0.031 200 abc123def456";
    const CANARY: &str = "10.244.0.1 - alice [25/Feb/2026:10:30:16 +0100] \"POST /api/v1/users?x=1 HTTP/2.0\" 201 10 \"-\" \"Mozilla/5.0 (X11; Linux x86_64) \\\"quoted\\\" [x] [y]\" 300 0.020 [default-myapp-80] [default-myapp-canary-80] 10.244.5.9:8080 10 0.019 201 7f3a9c0e1b2d4c5f8a9b0c1d2e3f4a5b";
    const RETRIED: &str = "10.244.0.1 - - [25/Feb/2026:10:30:17 +0000] \"GET /api HTTP/1.1\" 200 55 \"-\" \"curl/8.5.0\" 80 0.030 [default-myapp-80] [] 10.244.1.4:8080, 10.244.1.5:8080 0, 55 0.004, 0.012 502, 200 0123456789abcdef0123456789abcdef";

    fn ok(line: &str) -> Record<'_> {
        let mut rec = Record::default();
        parse(line, &mut rec).unwrap_or_else(|e| panic!("{e:?} for {line}"));
        rec
    }

    fn err(line: &str) -> Reason {
        let mut rec = Record::default();
        parse(line, &mut rec).expect_err(line)
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-9)
    }

    #[test]
    fn reference_example() {
        let r = ok(LINE);
        assert_eq!(r.ts_ms, parse_rfc3339_ms(b"2026-02-25T10:30:15Z"));
        assert_eq!(r.status, 200);
        assert!(close(r.latency_ms, 32.0), "{:?}", r.latency_ms);
        assert_eq!(r.target, "default-myapp-svc-80");
        assert_eq!(r.version, "primary");
        assert_eq!(r.upstream_host, "192.168.22.1:8080");
        assert_eq!((r.authority, r.upstream_cluster, r.sni), ("", "", ""));
    }

    #[test]
    fn canary_served_with_quote_in_ua() {
        let r = ok(CANARY);
        assert_eq!(r.ts_ms, parse_rfc3339_ms(b"2026-02-25T09:30:16Z"));
        assert_eq!(r.status, 201);
        assert!(close(r.latency_ms, 20.0));
        assert_eq!(r.target, "default-myapp-80");
        assert_eq!(r.version, "canary");
        assert_eq!(r.upstream_host, "10.244.5.9:8080");
    }

    #[test]
    fn retried_lists_are_walked() {
        let r = ok(RETRIED);
        assert_eq!(r.status, 200);
        // The client's time (`$request_time`) includes both attempts.
        assert!(close(r.latency_ms, 30.0), "{:?}", r.latency_ms);
        assert_eq!(r.upstream_host, "10.244.1.5:8080");
        assert_eq!(r.version, "primary");
        // Upstream groups after an internal redirect (` : `), IPv6 upstreams.
        let line = "::1 - - [25/Feb/2026:10:30:17 +0000] \"GET / HTTP/1.1\" 200 5 \"-\" \"ua\" 80 0.030 [ns-a-80] [ns-a-canary-80] [fd00::1]:8080, [fd00::2]:8080 : 10.0.0.3:80 0, 0 : 5 0.001, - : 0.002 502, 502 : 200 rid";
        let r = ok(line);
        assert!(close(r.latency_ms, 30.0), "{:?}", r.latency_ms);
        // Without `$request_time`, the upstream attempts are summed (`-` skipped).
        let no_request_time = line.replace(" 80 0.030 [", " 80 - [");
        let r = ok(&no_request_time);
        assert!(close(r.latency_ms, 3.0), "{:?}", r.latency_ms);
        assert_eq!(r.upstream_host, "10.0.0.3:80");
        assert_eq!(r.version, "canary");
    }

    #[test]
    fn no_upstream_uses_request_time() {
        let line = "10.0.0.1 - - [25/Feb/2026:10:30:17 +0000] \"GET /x HTTP/1.1\" 499 0 \"-\" \"ua\" 80 1.250 [default-myapp-80] [] - - - - rid";
        let r = ok(line);
        assert_eq!(r.status, 499);
        assert!(close(r.latency_ms, 1250.0));
        assert_eq!(r.upstream_host, "");
        // No upstream name at all (default backend not configured).
        let line = "10.0.0.1 - - [25/Feb/2026:10:30:17 +0000] \"\\x16\\x03\\x01\" 400 150 \"-\" \"-\" 0 0.001 [] [] - - - - rid";
        let r = ok(line);
        assert_eq!(r.status, 400);
        assert_eq!(r.target, "");
        assert!(close(r.latency_ms, 1.0));
    }

    #[test]
    fn bad_fields() {
        assert_eq!(
            err(&LINE.replace(" 200 1234 ", " 2x0 1234 ")),
            Reason::BadNumber
        );
        assert_eq!(err(&LINE.replace(" 0.032 ", " 0.0x2 ")), Reason::BadNumber);
        assert_eq!(
            err(&LINE.replace("25/Feb/2026", "25/Foo/2026")),
            Reason::BadTimestamp
        );
        assert_eq!(
            err(&LINE
                .replace(" 192.168.22.1:8080 1234 0.031 ", " - - - ")
                .replace(" 0.032 ", " x ")),
            Reason::BadNumber
        );
        assert_eq!(
            err(&format!("{LINE} extra fields here x y")),
            Reason::BadSyntax
        );
        assert_eq!(err("hello"), Reason::Truncated);
        assert_eq!(err("a b c d e f"), Reason::BadSyntax);
        assert_eq!(err(""), Reason::Truncated);
    }

    #[test]
    fn truncation_is_recognised() {
        // Every cut before the last field is refused; cuts after the prefix are Truncated.
        for line in [LINE, CANARY, RETRIED] {
            let last_field = line.rfind(' ').unwrap() + 1;
            for end in 0..=last_field {
                let cut = &line[..end];
                let mut rec = Record::default();
                let r = parse(cut, &mut rec);
                assert!(r.is_err(), "{cut}");
            }
            let after_brackets = line.find("] 10.").or(line.find("] 192")).unwrap() + 2;
            for end in after_brackets..=last_field {
                assert_eq!(err(&line[..end]), Reason::Truncated, "{}", &line[..end]);
            }
        }
    }

    proptest! {
        #[test]
        fn arbitrary_strings_never_panic(s in any::<String>()) {
            let mut rec = Record::default();
            let _ = parse(&s, &mut rec);
        }

        #[test]
        fn mutated_lines_never_panic(pos in 0usize..300, ch in any::<char>(), cut in 0usize..300) {
            let mut s = RETRIED.to_string();
            let pos = pos.min(s.len());
            if s.is_char_boundary(pos) {
                s.insert(pos, ch);
            }
            let new_len = s.len() - cut.min(s.len());
            if s.is_char_boundary(new_len) {
                s.truncate(new_len);
            }
            let mut rec = Record::default();
            let _ = parse(&s, &mut rec);
        }

        #[test]
        fn any_ua_roundtrip(ua in "[ -~]{0,80}", status in 100u16..600, ms in 0u32..100000) {
            let line = format!("10.0.0.1 - - [25/Feb/2026:10:30:17 +0000] \"GET / HTTP/1.1\" {status} 5 \"-\" \"{ua}\" 80 {}.{:03} [t-80] [] 10.0.0.2:80 5 9.999 {status} rid", ms / 1000, ms % 1000);
            let r = ok(&line);
            prop_assert_eq!(r.status, status);
            prop_assert!(close(r.latency_ms, ms as f64), "{:?} vs {}", r.latency_ms, ms);
            prop_assert_eq!(r.target, "t-80");
            prop_assert_eq!(r.upstream_host, "10.0.0.2:80");
        }
    }
}
