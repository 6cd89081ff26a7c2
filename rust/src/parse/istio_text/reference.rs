//! The previous TEXT parser (searches per field: SWAR/SSE2 forward, `memrchr` and SWAR
//! backward), kept for tests only: a proptest checks that [`super::parse`] gives the same
//! result and the same record on every line, valid or not.

use memchr::memrchr;

use super::scan::{self, find};
use super::{
    end_of_quoted, expect, field_at, is_digit, is_digit_or_dash, is_quote, required, start_time_ms,
    token, Range,
};
use crate::flags::Flags;
use crate::malformed::Reason;
use crate::parse::num::{parse_status, parse_u64};
use crate::parse::time::parse_rfc3339_ms;
use crate::record::Record;

/// Parse one line; see the module docs of [`crate::parse`] for the contract.
pub fn parse<'a>(line: &'a str, rec: &mut Record<'a>) -> Result<(), Reason> {
    let b = line.as_bytes();

    // [START_TIME]: 24 bytes with ms (`2026-11-26T05:06:07.123Z`), else search.
    if b.first() != Some(&b'[') {
        return Err(Reason::BadSyntax);
    }
    let ts_end = if b.get(25) == Some(&b']') {
        25
    } else {
        find(b, 1, b']').ok_or(Reason::Truncated)?
    };
    let ts = b.get(1..ts_end).ok_or(Reason::BadSyntax)?;

    // "METHOD PATH PROTOCOL"
    let mut p = expect(b, ts_end + 1, b" \"")?;
    let method_end = find(b, p, b' ').ok_or(Reason::Truncated)?;
    if b.get(p..method_end) == Some(b"-") {
        return Err(Reason::NotHttp);
    }
    p = end_of_quoted(b, method_end + 1, is_digit_or_dash)?;
    p = expect(b, p, b" ")?;

    // Timestamp after the TCP check: TCP entries are skipped whatever their time.
    rec.ts_ms = Some(match ts {
        b"-" => return Err(Reason::MissingField),
        _ => match start_time_ms(ts) {
            Some(ms) => ms,
            None => parse_rfc3339_ms(ts).ok_or(Reason::BadTimestamp)?,
        },
    });

    // RESPONSE_CODE RESPONSE_FLAGS
    let (code, q) = token(b, p)?;
    rec.status = required(code, parse_status)?;
    let (flags, q) = token(b, q)?;
    rec.flags = Flags::parse(flags);

    let envoy_default = match b.get(q) {
        Some(c) if c.is_ascii_digit() => true,
        Some(b'"') => {
            // Istio 1.3–1.8: "MIXER_STATUS" "TRANSPORT_FAILURE"
            p = end_of_quoted(b, q + 1, is_quote)?;
            p = expect(b, p, b" \"")?;
            p = end_of_quoted(b, p, is_digit)?;
            p = expect(b, p, b" ")?;
            false
        }
        Some(_) => {
            // DETAILS TERM_DETAILS "TRANSPORT_FAILURE"
            let (_, r) = token(b, q)?;
            let (_, r) = token(b, r)?;
            p = expect(b, r, b"\"")?;
            // Usually `"-" ` then a digit: what `end_of_quoted` + `expect` would find.
            if b.get(p..p + 3) == Some(b"-\" ") && b.get(p + 3).is_some_and(u8::is_ascii_digit) {
                p += 3;
            } else {
                p = end_of_quoted(b, p, is_digit)?;
                p = expect(b, p, b" ")?;
            }
            false
        }
        None => return Err(Reason::Truncated),
    };
    if envoy_default {
        p = q;
    }

    // BYTES_RECEIVED BYTES_SENT DURATION UPSTREAM_SERVICE_TIME
    let (_, r) = token(b, p)?;
    let (_, r) = token(b, r)?;
    let (duration, r) = token(b, r)?;
    rec.latency_ms = Some(required(duration, parse_u64)? as f64);
    let (_, prefix_end) = token(b, r)?;
    // `prefix_end` is the opening quote of "XFF"; the suffix must lie after it.

    // Suffix, right to left.
    let suffix = suffix(b, prefix_end, envoy_default)?;
    let field = |r: Range| field_at(line, r);
    rec.upstream_cluster = field(suffix.cluster);
    rec.sni = field(suffix.sni);
    rec.upstream_host = field(suffix.host);
    rec.authority = field(suffix.authority);
    Ok(())
}

/// What the suffix gives, as byte ranges of the line.
struct Suffix {
    cluster: Range,
    sni: Range,
    host: Range,
    authority: Range,
}

/// The suffix, right to left: the upstream host's closing quote is the last quote of the
/// line (Istio; what follows is split into its six tokens) or its last byte (Envoy). Tells a
/// cut line (`Truncated`) from a foreign shape (`BadSyntax`).
///
/// (Tried and measured slower or equal, `speed_*` A/B on this machine: one backward walk
/// over spaces and quotes with SWAR, the same with a reverse `memchr2` iterator, and with
/// SSE2 64-byte masks. Two SIMD/SWAR sweeps with no per-token calls win.)
#[inline(always)]
fn suffix(b: &[u8], prefix_end: usize, envoy_default: bool) -> Result<Suffix, Reason> {
    let mut cluster = (0, 0);
    let mut sni = (0, 0);
    let host_close = if envoy_default {
        match b.last() {
            Some(b'"') => b.len() - 1,
            _ => return Err(Reason::Truncated),
        }
    } else {
        let host_close = memrchr(b'"', b).ok_or(Reason::Truncated)?;
        if host_close <= prefix_end {
            return Err(Reason::Truncated);
        }
        let tail = b.get(host_close + 1..).ok_or(Reason::Truncated)?;
        let [c, _up_local, _down_local, _down_remote, s, _route] = istio_tail(tail)?;
        let base = host_close + 1;
        cluster = (base + c.0, base + c.1);
        sni = (base + s.0, base + s.1);
        host_close
    };
    let host_open = scan::rfind(b, prefix_end + 1, host_close, b'"').ok_or(Reason::Truncated)?;
    // `"AUTHORITY" "UPSTREAM_HOST"`: the authority closes two bytes before.
    let auth_close = host_open.checked_sub(2).ok_or(Reason::Truncated)?;
    if b.get(auth_close..host_open) != Some(b"\" ") {
        return Err(Reason::BadSyntax);
    }
    let auth_open = scan::rfind(b, prefix_end + 1, auth_close, b'"').ok_or(Reason::Truncated)?;
    Ok(Suffix {
        cluster,
        sni,
        host: (host_open + 1, host_close),
        authority: (auth_open + 1, auth_close),
    })
}

/// Split ` CLUSTER UP_LOCAL DOWN_LOCAL DOWN_REMOTE SNI ROUTE` (after the upstream host's
/// closing quote) into its six tokens, as ranges relative to `tail`.
#[inline]
fn istio_tail(tail: &[u8]) -> Result<[(usize, usize); 6], Reason> {
    if tail.first() != Some(&b' ') {
        // The last quote of the line is not the upstream host's: the line is cut short
        // (inside the suffix's quoted fields or earlier).
        return Err(Reason::Truncated);
    }
    // Five separators after the leading space; positions relative to `tail[1..]`.
    let (sp, n, more) = scan::positions::<5>(tail.get(1..).unwrap_or_default(), b' ');
    if more {
        // More tokens than the format has.
        return Err(Reason::BadSyntax);
    }
    if n < 5 {
        return Err(Reason::Truncated);
    }
    let ends = [
        sp[0] + 1,
        sp[1] + 1,
        sp[2] + 1,
        sp[3] + 1,
        sp[4] + 1,
        tail.len(),
    ];
    let mut out = [(0usize, 0usize); 6];
    let mut start = 1;
    for (slot, end) in out.iter_mut().zip(ends) {
        if end == start {
            // An empty last token: the line stops after a separator (cut short).
            return Err(if end == tail.len() {
                Reason::Truncated
            } else {
                Reason::BadSyntax
            });
        }
        *slot = (start, end);
        start = end + 1;
    }
    Ok(out)
}
