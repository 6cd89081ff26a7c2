//! Parser for Istio's default TEXT access-log format (and Envoy's own shorter default).
//!
//! Istio (1.9+; `%UPSTREAM_CLUSTER_RAW%` since ~1.23, `%UPSTREAM_CLUSTER%` before, same
//! position and shape):
//!
//! ```text
//! [START_TIME] "METHOD PATH PROTOCOL" CODE FLAGS DETAILS TERM_DETAILS "TRANSPORT_FAILURE"
//! BYTES_RX BYTES_TX DURATION UPSTREAM_SVC_TIME "XFF" "UA" "REQUEST_ID" "AUTHORITY"
//! "UPSTREAM_HOST" UPSTREAM_CLUSTER UPSTREAM_LOCAL DOWNSTREAM_LOCAL DOWNSTREAM_REMOTE SNI ROUTE
//! ```
//!
//! Envoy does not escape quoted fields, so a `"` may appear inside XFF or User-Agent. The
//! fixed prefix is therefore read left to right (up to the upstream service time) and the
//! fixed suffix right to left from the end of the line (route name back to `"AUTHORITY"`);
//! the middle (`"XFF" "UA" "REQUEST_ID"`) is never scanned, which is also what makes the
//! parser fast. Delimiters come from the quote and space bit masks of 64-byte blocks
//! (`masks`), each block computed once, so a field boundary costs a bit scan; nothing
//! allocates. The parser is compiled twice: with the x86_64 baseline (SSE2 masks; [`parse`])
//! and with AVX2 enabled (AVX2 masks inlined; used through [`TextParser`] when the CPU has
//! it). (`reference` holds the previous per-field-search parser, for tests.)
//!
//! Variants, told apart by the token after `FLAGS` (no configuration needed):
//! - digit → Envoy's own default (no Istio, e.g. Contour): `FLAGS BYTES_RX BYTES_TX DURATION
//!   UPSTREAM_SVC_TIME "XFF" "UA" "REQUEST_ID" "AUTHORITY" "UPSTREAM_HOST"` and the line ends
//!   there; no cluster and no SNI (left "").
//! - `"` → Istio 1.3–1.8: one quoted `"%DYNAMIC_METADATA(istio.mixer:status)%"` instead of
//!   `DETAILS TERM_DETAILS`; the suffix is the same as today's.
//! - anything else → the current Istio default.
//!
//! `-` means absent and becomes "". TCP entries (method `-`) are `Err(NotHttp)`.
//! Errors: a delimiter missing before the end of the line (or fewer suffix tokens than the
//! format has) is `Truncated`; a required field written as `-` is `MissingField`; a
//! malformed number is `BadNumber`; an unparsable start time is `BadTimestamp`; any other
//! shape mismatch is `BadSyntax`.

use std::cell::Cell;

pub(crate) mod masks;
#[cfg(test)]
mod reference;
pub(crate) mod scan;
pub(crate) use scan::find;

#[cfg(target_arch = "x86_64")]
use masks::Avx2;
use masks::{Baseline, Bwd, Fwd, Simd};

use crate::flags::Flags;
use crate::malformed::Reason;
use crate::parse::num::parse_u64_at;
use crate::parse::time::{days_from_civil, parse_rfc3339_ms};
use crate::record::Record;

/// Parse one line; see the module docs of [`crate::parse`] for the contract.
pub fn parse<'a>(line: &'a str, rec: &mut Record<'a>) -> Result<(), Reason> {
    parse_with(Baseline, line, rec)
}

/// [`parse`] compiled with AVX2 enabled, so that the AVX2 block masks inline.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn parse_avx2<'a>(simd: Avx2, line: &'a str, rec: &mut Record<'a>) -> Result<(), Reason> {
    parse_with(simd, line, rec)
}

/// Which compilation of the parser to run: chosen once for the CPU (a pipeline keeps
/// one), so each line pays a predictable branch instead of a feature check.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TextParser {
    #[cfg(target_arch = "x86_64")]
    avx2: Option<Avx2>,
}

impl TextParser {
    /// The fastest parser this CPU runs (AVX2 when it has it).
    pub(crate) fn detect() -> Self {
        TextParser {
            #[cfg(target_arch = "x86_64")]
            avx2: Avx2::detect(),
        }
    }

    /// The baseline parser (SSE2 on x86_64), whatever the CPU.
    #[cfg(test)]
    pub(crate) fn baseline() -> Self {
        TextParser::default()
    }

    /// Whether this runs the AVX2 compilation.
    #[cfg(test)]
    pub(crate) fn is_avx2(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        return self.avx2.is_some();
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// [`parse`] with the chosen compilation; same results.
    #[inline(always)]
    pub(crate) fn parse<'a>(self, line: &'a str, rec: &mut Record<'a>) -> Result<(), Reason> {
        #[cfg(target_arch = "x86_64")]
        if let Some(simd) = self.avx2 {
            // SAFETY: an `Avx2` token exists only when `Avx2::detect` (a runtime
            // `is_x86_feature_detected!("avx2")`) found AVX2 on this CPU.
            return unsafe { parse_avx2(simd, line, rec) };
        }
        parse(line, rec)
    }
}

/// The parser, for either [`Simd`] token (inlined into [`parse`] and `parse_avx2`).
#[inline(always)]
fn parse_with<'a, S: Simd>(simd: S, line: &'a str, rec: &mut Record<'a>) -> Result<(), Reason> {
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
    // From here to the upstream service time, every boundary comes from the quote and
    // space masks of 64-byte blocks, computed once per block.
    let mut fwd = Fwd::new(simd, b, p);
    let method_end = fwd.space(p).ok_or(Reason::Truncated)?;
    if b.get(p..method_end) == Some(b"-") {
        return Err(Reason::NotHttp);
    }
    p = quoted_end(&mut fwd, b, method_end + 1, is_digit_or_dash)?;
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
    let (code, digits, q) = number_token(&mut fwd, b, p)?;
    if digits > 3 {
        return Err(Reason::BadNumber);
    }
    rec.status = code as u16;
    let (flags, q) = next_token(&mut fwd, b, q)?;
    // Most lines have no flag: skip the call.
    rec.flags = if flags == b"-" {
        Flags::NONE
    } else {
        Flags::parse(flags)
    };

    let envoy_default = match b.get(q) {
        Some(c) if c.is_ascii_digit() => true,
        Some(b'"') => {
            // Istio 1.3–1.8: "MIXER_STATUS" "TRANSPORT_FAILURE"
            p = quoted_end(&mut fwd, b, q + 1, is_quote)?;
            p = expect(b, p, b" \"")?;
            p = quoted_end(&mut fwd, b, p, is_digit)?;
            p = expect(b, p, b" ")?;
            false
        }
        Some(_) => {
            // DETAILS TERM_DETAILS "TRANSPORT_FAILURE"
            let r = skip_token(&mut fwd, q)?;
            let r = skip_token(&mut fwd, r)?;
            p = expect(b, r, b"\"")?;
            // Usually `"-" ` then a digit: what `quoted_end` + `expect` would find.
            if b.get(p..p + 3) == Some(b"-\" ") && b.get(p + 3).is_some_and(u8::is_ascii_digit) {
                p += 3;
            } else {
                p = quoted_end(&mut fwd, b, p, is_digit)?;
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
    let r = skip_token(&mut fwd, p)?;
    let r = skip_token(&mut fwd, r)?;
    let (duration, _, r) = number_token(&mut fwd, b, r)?;
    rec.latency_ms = Some(duration as f64);
    let prefix_end = skip_token(&mut fwd, r)?;
    // `prefix_end` is the opening quote of "XFF"; the suffix must lie after it.

    // Suffix, right to left.
    let suffix = suffix(simd, b, prefix_end, envoy_default)?;
    let field = |r: Range| field_at(line, r);
    rec.upstream_cluster = field(suffix.cluster);
    rec.sni = field(suffix.sni);
    rec.upstream_host = field(suffix.host);
    rec.authority = field(suffix.authority);
    Ok(())
}

/// Why a required number did not parse: `-` is `MissingField`, anything else `BadNumber`.
#[cold]
fn number_error(s: &[u8]) -> Reason {
    if s == b"-" {
        Reason::MissingField
    } else {
        Reason::BadNumber
    }
}

/// [`token`] with the block masks of `fwd`.
#[inline(always)]
fn next_token<'b, S: Simd>(
    fwd: &mut Fwd<'_, S>,
    b: &'b [u8],
    from: usize,
) -> Result<(&'b [u8], usize), Reason> {
    let end = fwd.space(from).ok_or(Reason::Truncated)?;
    Ok((b.get(from..end).ok_or(Reason::Truncated)?, end + 1))
}

/// The space-terminated decimal token at `from`: its value, its length and the position
/// after its space. Read with [`parse_u64_at`] (no digit loop).
#[inline(always)]
fn number_token<S: Simd>(
    fwd: &mut Fwd<'_, S>,
    b: &[u8],
    from: usize,
) -> Result<(u64, usize, usize), Reason> {
    let end = fwd.space(from).ok_or(Reason::Truncated)?;
    match parse_u64_at(b, from, end) {
        Some(v) => Ok((v, end - from, end + 1)),
        None => Err(number_error(b.get(from..end).unwrap_or_default())),
    }
}

/// [`next_token`] for a token whose value is not needed: no slice, no bounds checks.
#[inline(always)]
fn skip_token<S: Simd>(fwd: &mut Fwd<'_, S>, from: usize) -> Result<usize, Reason> {
    Ok(fwd.space(from).ok_or(Reason::Truncated)? + 1)
}

/// [`end_of_quoted`] with the block masks of `fwd`.
#[inline(always)]
fn quoted_end<S: Simd>(
    fwd: &mut Fwd<'_, S>,
    b: &[u8],
    from: usize,
    next_starts: fn(u8) -> bool,
) -> Result<usize, Reason> {
    let mut p = from;
    loop {
        let q = fwd.quote(p).ok_or(Reason::Truncated)?;
        match (b.get(q + 1), b.get(q + 2)) {
            (None, _) | (Some(b' '), None) => return Ok(q + 1),
            (Some(b' '), Some(&c)) if next_starts(c) => return Ok(q + 1),
            _ => p = q + 1,
        }
    }
}

/// Fast path for Envoy's `%START_TIME%` shape `YYYY-MM-DDTHH:MM:SS.mmmZ` (exactly 24
/// bytes): straight-line digit checks, no loops over optional parts. `None` for any other
/// shape or an out-of-range field; the caller then asks the general RFC 3339 parser, so the
/// result is always the same as [`parse_rfc3339_ms`].
#[inline(always)]
fn start_time_ms(ts: &[u8]) -> Option<i64> {
    let t: &[u8; 24] = ts.try_into().ok()?;
    if t[16] != b':' || t[19] != b'.' || t[23] != b'Z' {
        return None;
    }
    let d = |i: usize| t[i].wrapping_sub(b'0') as u32;
    // Any byte that is not a digit makes its `d` exceed 9.
    if d(17).max(d(18)).max(d(20)).max(d(21)).max(d(22)) > 9 {
        return None;
    }
    let sec = d(17) * 10 + d(18);
    if sec > 60 {
        return None;
    }
    let ms = (d(20) * 100 + d(21) * 10 + d(22)) as i64;
    // Consecutive lines almost always share `YYYY-MM-DDTHH:MM`: validate it and do the
    // date arithmetic once per distinct minute, keyed by its raw bytes.
    let key = u128::from_le_bytes(*t.first_chunk::<16>()?);
    let (cached, base) = LAST_MINUTE.get();
    let base = if cached == key {
        base
    } else {
        let base = minute_start_ms(t)?;
        LAST_MINUTE.set((key, base));
        base
    };
    Some(base + (sec * 1000) as i64 + ms)
}

thread_local! {
    /// The bytes of the last valid `YYYY-MM-DDTHH:MM` and ms at the start of that minute.
    /// `u128::MAX` (all 0xff bytes, never a valid prefix) means empty.
    static LAST_MINUTE: Cell<(u128, i64)> = const { Cell::new((u128::MAX, 0)) };
}

/// Ms since the epoch at the start of the minute `YYYY-MM-DDTHH:MM` in `t[..16]`, `None`
/// when that part is malformed or out of range.
#[inline(never)]
fn minute_start_ms(t: &[u8; 24]) -> Option<i64> {
    if t[4] != b'-' || t[7] != b'-' || t[10] != b'T' || t[13] != b':' {
        return None;
    }
    let d = |i: usize| t[i].wrapping_sub(b'0') as u32;
    // All digit positions at once: any byte that is not a digit makes this exceed 9.
    let worst = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15]
        .iter()
        .fold(0, |m, &i| m.max(d(i)));
    if worst > 9 {
        return None;
    }
    let year = (d(0) * 1000 + d(1) * 100 + d(2) * 10 + d(3)) as i64;
    let (mo, day) = (d(5) * 10 + d(6), d(8) * 10 + d(9));
    let (h, mi) = (d(11) * 10 + d(12), d(14) * 10 + d(15));
    if !(1..=12).contains(&mo) || !(1..=31).contains(&day) || h > 23 || mi > 59 {
        return None;
    }
    let days = days_from_civil(year, mo, day);
    Some((days * 86400 + (h * 3600 + mi * 60) as i64) * 1000)
}

type Range = (usize, usize);

/// What the suffix gives, as byte ranges of the line.
struct Suffix {
    cluster: Range,
    sni: Range,
    host: Range,
    authority: Range,
}

/// The suffix, right to left, from the quote and space masks of the line's last blocks:
/// the upstream host's closing quote is the last quote of the line (Istio; the six
/// space-separated tokens after it are collected on the way) or its last byte (Envoy).
/// Tells a cut line (`Truncated`) from a foreign shape (`BadSyntax`).
#[inline(always)]
fn suffix<S: Simd>(
    simd: S,
    b: &[u8],
    prefix_end: usize,
    envoy_default: bool,
) -> Result<Suffix, Reason> {
    let lo = prefix_end + 1;
    let mut bwd = Bwd::new(simd, b, b.len());
    let mut cluster = (0, 0);
    let mut sni = (0, 0);
    let host_close = if envoy_default {
        match b.last() {
            Some(b'"') => b.len() - 1,
            _ => return Err(Reason::Truncated),
        }
    } else {
        // ` CLUSTER UP_LOCAL DOWN_LOCAL DOWN_REMOTE SNI ROUTE`: six spaces after the
        // quote; a seventh means too many tokens.
        let (host_close, spaces, n) = bwd.last_quote_and_spaces::<7>(lo);
        let host_close = host_close.ok_or(Reason::Truncated)?;
        let [c, s] = istio_tail(b, host_close, spaces, n)?;
        (cluster, sni) = (c, s);
        host_close
    };
    let host_open = bwd.quote(lo, host_close).ok_or(Reason::Truncated)?;
    // `"AUTHORITY" "UPSTREAM_HOST"`: the authority closes two bytes before.
    let auth_close = host_open.checked_sub(2).ok_or(Reason::Truncated)?;
    if b.get(auth_close..host_open) != Some(b"\" ") {
        return Err(Reason::BadSyntax);
    }
    let auth_open = bwd.quote(lo, auth_close).ok_or(Reason::Truncated)?;
    Ok(Suffix {
        cluster,
        sni,
        host: (host_open + 1, host_close),
        authority: (auth_open + 1, auth_close),
    })
}

/// The cluster and SNI of ` CLUSTER UP_LOCAL DOWN_LOCAL DOWN_REMOTE SNI ROUTE` after the
/// upstream host's closing quote `host_close`, given the (up to 7) last spaces of the line
/// after it, highest first.
#[inline(always)]
fn istio_tail(
    b: &[u8],
    host_close: usize,
    spaces: [usize; 7],
    n: usize,
) -> Result<[Range; 2], Reason> {
    if b.get(host_close + 1) != Some(&b' ') {
        // The last quote of the line is not the upstream host's: the line is cut short
        // (inside the suffix's quoted fields or earlier).
        return Err(Reason::Truncated);
    }
    // The leading space is one of the `n`; the five separators are the others.
    match n {
        7 => return Err(Reason::BadSyntax), // more tokens than the format has
        6 => {}
        _ => return Err(Reason::Truncated),
    }
    let [s4, s3, s2, s1, s0, _leading] = spaces.first_chunk::<6>().copied().unwrap_or_default();
    let len = b.len();
    let ends = [s0, s1, s2, s3, s4, len];
    let mut out = [(0usize, 0usize); 6];
    let mut start = host_close + 2;
    for (slot, end) in out.iter_mut().zip(ends) {
        if end == start {
            // An empty last token: the line stops after a separator (cut short).
            return Err(if end == len {
                Reason::Truncated
            } else {
                Reason::BadSyntax
            });
        }
        *slot = (start, end);
        start = end + 1;
    }
    Ok([out[0], out[4]])
}

/// The suffix field at `s..e` of `line`, "" for `-`. The dash test is on the bytes, before
/// slicing: one compare instead of a string comparison after a checked slice.
#[inline(always)]
fn field_at(line: &str, (s, e): Range) -> &str {
    let b = line.as_bytes();
    if e == s + 1 && b.get(s) == Some(&b'-') {
        return "";
    }
    if s > e || e > b.len() {
        return "";
    }
    debug_assert!(line.is_char_boundary(s) && line.is_char_boundary(e));
    // SAFETY: in bounds (checked above), and both ends are char boundaries: `s` follows an
    // ASCII delimiter (a quote or a space) and `e` is one or the end of the line, and an
    // ASCII byte is never part of a multi-byte UTF-8 sequence, so the byte after it starts
    // a character. (The checked slice tested both boundaries again: ~35 instructions a line.)
    unsafe { line.get_unchecked(s..e) }
}

/// Envoy writes `-` for an absent value.
#[inline]
pub(crate) fn absent_if_dash(s: &str) -> &str {
    if s == "-" {
        ""
    } else {
        s
    }
}

/// A required numeric field: `-` is `MissingField`, anything unparsable `BadNumber`.
#[inline]
pub(crate) fn required<T>(s: &[u8], parse: impl Fn(&[u8]) -> Option<T>) -> Result<T, Reason> {
    match parse(s) {
        Some(v) => Ok(v),
        None if s == b"-" => Err(Reason::MissingField),
        None => Err(Reason::BadNumber),
    }
}

/// The space-terminated token at `from` and the position after its space.
/// Reaching the end of the line without a space means the line was cut.
#[inline(always)]
pub(crate) fn token(b: &[u8], from: usize) -> Result<(&[u8], usize), Reason> {
    let end = find(b, from, b' ').ok_or(Reason::Truncated)?;
    Ok((b.get(from..end).ok_or(Reason::Truncated)?, end + 1))
}

/// Require the bytes `lit` at `at`; returns the position after them. A line that stops
/// inside `lit` was cut short.
#[inline(always)]
pub(crate) fn expect(b: &[u8], at: usize, lit: &[u8]) -> Result<usize, Reason> {
    match b.get(at..at + lit.len()) {
        Some(s) if s == lit => Ok(at + lit.len()),
        Some(_) => Err(Reason::BadSyntax),
        None if lit.starts_with(b.get(at..).unwrap_or_default()) => Err(Reason::Truncated),
        None => Err(Reason::BadSyntax),
    }
}

/// Inside a quoted field starting at `from`: the position just after the closing quote,
/// taken as the first `"` followed by a space and a byte that `next_starts` accepts (the
/// start of the next field), or by the end of the line (which the caller's next `expect`
/// reports as truncation). Unescaped quotes inside the field are skipped that way.
#[inline]
pub(crate) fn end_of_quoted(
    b: &[u8],
    from: usize,
    next_starts: fn(u8) -> bool,
) -> Result<usize, Reason> {
    let mut p = from;
    loop {
        let q = find(b, p, b'"').ok_or(Reason::Truncated)?;
        match (b.get(q + 1), b.get(q + 2)) {
            (None, _) | (Some(b' '), None) => return Ok(q + 1),
            (Some(b' '), Some(&c)) if next_starts(c) => return Ok(q + 1),
            _ => p = q + 1,
        }
    }
}

#[inline]
pub(crate) fn is_digit(c: u8) -> bool {
    c.is_ascii_digit()
}

#[inline]
pub(crate) fn is_digit_or_dash(c: u8) -> bool {
    c.is_ascii_digit() || c == b'-'
}

#[inline]
pub(crate) fn is_quote(c: u8) -> bool {
    c == b'"'
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// §1.4 (a): client side, 200, primary subset.
    pub(crate) const LINE_A: &str = "[2026-11-26T05:06:07.123Z] \"GET /reviews/0 HTTP/1.1\" 200 - via_upstream - \"-\" 0 358 12 11 \"-\" \"Go-http-client/1.1\" \"9b1f3c2e-6d1a-9c4f-a1b2-3c4d5e6f7a8b\" \"reviews:9080\" \"10.244.1.17:9080\" outbound|9080|primary|reviews.default.svc.cluster.local 10.244.2.5:51234 10.96.41.10:9080 10.244.2.5:40112 - default";
    /// §1.4 (b): 503 UF,URX, canary subset, no upstream service time.
    const LINE_B: &str = "[2026-11-26T05:06:07.456Z] \"GET /reviews/1 HTTP/1.1\" 503 UF,URX upstream_reset_before_response_started{connection_failure} - \"-\" 0 91 62 - \"-\" \"Go-http-client/1.1\" \"c0ffee00-1111-2222-3333-444455556666\" \"reviews:9080\" \"10.244.3.22:9080\" outbound|9080|canary|reviews.default.svc.cluster.local - 10.96.41.10:9080 10.244.2.5:40114 - default";
    /// istio.io access-log task shape (418, curl, `%UPSTREAM_CLUSTER%` era), server-side SNI.
    const LINE_TASK: &str = "[2020-11-25T21:26:18.409Z] \"GET /status/418 HTTP/1.1\" 418 - via_upstream - \"-\" 0 135 4 4 \"-\" \"curl/7.73.0-DEV\" \"84961386-6d84-929d-98bd-c5aee93b5c88\" \"httpbin:8000\" \"10.44.1.27:80\" outbound|8000||httpbin.foo.svc.cluster.local 10.44.1.23:37652 10.0.45.184:8000 10.44.1.23:46520 - default";

    /// The record of `line` (both compilations of the parser give the same).
    fn ok(line: &str) -> Record<'_> {
        let mut rec = Record::default();
        parse(line, &mut rec).unwrap_or_else(|e| panic!("{e:?} for {line}"));
        let mut fast = Record::default();
        assert_eq!(
            TextParser::detect().parse(line, &mut fast),
            Ok(()),
            "{line}"
        );
        assert_eq!(fast, rec, "{line}");
        rec
    }

    /// Why `line` is refused (both compilations of the parser agree).
    fn err(line: &str) -> Reason {
        let mut rec = Record::default();
        let why = parse(line, &mut rec).expect_err(line);
        let mut fast = Record::default();
        assert_eq!(
            TextParser::detect().parse(line, &mut fast),
            Err(why),
            "{line}"
        );
        why
    }

    #[test]
    fn example_a() {
        let r = ok(LINE_A);
        assert_eq!(r.ts_ms, parse_rfc3339_ms(b"2026-11-26T05:06:07.123Z"));
        assert_eq!(r.status, 200);
        assert!(r.flags.is_empty());
        assert_eq!(r.latency_ms, Some(12.0));
        assert_eq!(r.upstream_host, "10.244.1.17:9080");
        assert_eq!(r.authority, "reviews:9080");
        assert_eq!(
            r.upstream_cluster,
            "outbound|9080|primary|reviews.default.svc.cluster.local"
        );
        assert_eq!(r.sni, "");
        assert_eq!(r.grpc_status, None);
        assert_eq!(r.target, "");
        assert_eq!(r.version, "");
    }

    #[test]
    fn example_b() {
        let r = ok(LINE_B);
        assert_eq!(r.status, 503);
        assert_eq!(r.flags.names().collect::<Vec<_>>(), vec!["UF", "URX"]);
        assert_eq!(r.latency_ms, Some(62.0));
        assert_eq!(r.upstream_host, "10.244.3.22:9080");
        assert_eq!(
            r.upstream_cluster,
            "outbound|9080|canary|reviews.default.svc.cluster.local"
        );
    }

    #[test]
    fn istio_task_line() {
        let r = ok(LINE_TASK);
        assert_eq!(r.status, 418);
        assert_eq!(r.latency_ms, Some(4.0));
        assert_eq!(
            r.upstream_cluster,
            "outbound|8000||httpbin.foo.svc.cluster.local"
        );
        assert_eq!(r.authority, "httpbin:8000");
        assert_eq!(r.upstream_host, "10.44.1.27:80");
    }

    #[test]
    fn server_side_sni_and_status_zero() {
        let line = "[2026-11-26T05:06:07.130Z] \"POST /api HTTP/2\" 0 DC downstream_remote_disconnect - \"-\" 12 0 1500 - \"10.0.0.9\" \"grpc-go/1.60\" \"id-1\" \"reviews.default.svc.cluster.local:9080\" \"10.244.3.22:9080\" inbound|9080|| 127.0.0.6:46243 10.244.3.22:9080 10.244.2.5:51234 outbound_.9080_.canary_.reviews.default.svc.cluster.local default";
        let r = ok(line);
        assert_eq!(r.status, 0);
        assert_eq!(r.flags.names().collect::<Vec<_>>(), vec!["DC"]);
        assert_eq!(r.latency_ms, Some(1500.0));
        assert_eq!(r.upstream_cluster, "inbound|9080||");
        assert_eq!(
            r.sni,
            "outbound_.9080_.canary_.reviews.default.svc.cluster.local"
        );
    }

    #[test]
    fn quotes_and_spaces_inside_fields() {
        // `"` inside the UA and XFF, spaces in the transport failure reason, `" ` in the UA.
        let line = "[2026-11-26T05:06:07.123Z] \"GET /x?q=1 HTTP/1.1\" 503 UF upstream_reset_before_response_started{connection_failure,TLS_error:_x} - \"TLS error: 268435581:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED\" 0 91 3 - \"1.2.3.4, \"5.6.7.8\"\" \"Mozilla/5.0 \"evil\" \"x\" y\" \"req\" \"reviews:9080\" \"10.244.3.22:9080\" outbound|9080|canary|reviews.default.svc.cluster.local - 10.96.41.10:9080 10.244.2.5:40114 - default";
        let r = ok(line);
        assert_eq!(r.status, 503);
        assert_eq!(r.latency_ms, Some(3.0));
        assert_eq!(r.authority, "reviews:9080");
        assert_eq!(r.upstream_host, "10.244.3.22:9080");
        assert_eq!(
            r.upstream_cluster,
            "outbound|9080|canary|reviews.default.svc.cluster.local"
        );
    }

    #[test]
    fn dashes_are_absent() {
        let line = "[2026-11-26T05:06:07.123Z] \"GET / HTTP/1.1\" 404 NR route_not_found - \"-\" 0 0 0 - \"-\" \"-\" \"-\" \"-\" \"-\" - - 10.96.0.1:80 10.0.0.1:1234 - -";
        let r = ok(line);
        assert_eq!(r.status, 404);
        assert_eq!(r.flags.names().collect::<Vec<_>>(), vec!["NR"]);
        assert_eq!(r.latency_ms, Some(0.0));
        assert_eq!(
            (r.authority, r.upstream_host, r.upstream_cluster, r.sni),
            ("", "", "", "")
        );
    }

    #[test]
    fn old_cluster_variant_and_other_timestamps() {
        // Same shape with `%UPSTREAM_CLUSTER%` (alt_stat_name-free value) and a ns timestamp.
        let line = LINE_A.replace("2026-11-26T05:06:07.123Z", "2026-11-26T05:06:07.123456Z");
        let r = ok(&line);
        assert_eq!(r.ts_ms, parse_rfc3339_ms(b"2026-11-26T05:06:07.123Z"));
        let line = LINE_A.replace("2026-11-26T05:06:07.123Z", "2026-11-26T05:06:07Z");
        assert_eq!(ok(&line).ts_ms, parse_rfc3339_ms(b"2026-11-26T05:06:07Z"));
    }

    #[test]
    fn istio_1_3_variant() {
        let line = "[2020-03-01T10:00:00.000Z] \"GET /productpage HTTP/1.1\" 200 - \"-\" \"-\" 0 5183 40 39 \"-\" \"curl/7.64\" \"abc\" \"productpage:9080\" \"10.1.1.5:9080\" outbound|9080|v1|productpage.default.svc.cluster.local - 10.0.0.20:9080 10.1.1.9:51000 - default";
        let r = ok(line);
        assert_eq!(r.status, 200);
        assert_eq!(r.latency_ms, Some(40.0));
        assert_eq!(
            r.upstream_cluster,
            "outbound|9080|v1|productpage.default.svc.cluster.local"
        );
        assert_eq!(r.upstream_host, "10.1.1.5:9080");
    }

    #[test]
    fn envoy_default_format() {
        let line = "[2026-11-26T05:06:07.123Z] \"GET /b \"q\" HTTP/1.1\" 200 - 0 17 5 4 \"-\" \"curl/8 \"x\" \" \"rid\" \"example.com\" \"10.0.0.7:8080\"";
        let r = ok(line);
        assert_eq!(r.status, 200);
        assert_eq!(r.latency_ms, Some(5.0));
        assert_eq!(r.authority, "example.com");
        assert_eq!(r.upstream_host, "10.0.0.7:8080");
        assert_eq!((r.upstream_cluster, r.sni), ("", ""));
        // Cut short or extended: not the Envoy default shape.
        assert_eq!(err(&line[..line.len() - 1]), Reason::Truncated);
    }

    #[test]
    fn tcp_entries_are_not_http() {
        let line = "[2026-11-26T05:06:07.123Z] \"- - -\" 0 - - - \"-\" 1234 5678 100 - \"-\" \"-\" \"-\" \"-\" \"10.0.0.1:3306\" outbound|3306||mysql.db.svc.cluster.local 10.0.0.2:40000 10.96.0.5:3306 10.0.0.2:39999 - -";
        assert_eq!(err(line), Reason::NotHttp);
        assert_eq!(
            err("[2026-11-26T05:06:07.123Z] \"- - -\" 0 UF"),
            Reason::NotHttp
        );
    }

    #[test]
    fn bad_fields() {
        assert_eq!(err(&LINE_A.replace(" 200 ", " 2x0 ")), Reason::BadNumber);
        assert_eq!(err(&LINE_A.replace(" 200 ", " 2000 ")), Reason::BadNumber);
        assert_eq!(err(&LINE_A.replace(" 200 ", " - ")), Reason::MissingField);
        assert_eq!(
            err(&LINE_A.replace(" 358 12 ", " 358 1.5 ")),
            Reason::BadNumber
        );
        assert_eq!(
            err(&LINE_A.replace(" 358 12 ", " 358 - ")),
            Reason::MissingField
        );
        assert_eq!(
            err(&LINE_A.replace("2026-11-26T05:06:07.123Z", "2026-13-26T05:06:07.123Z")),
            Reason::BadTimestamp
        );
        assert_eq!(
            err(&LINE_A.replace("2026-11-26T05:06:07.123Z", "yesterday")),
            Reason::BadTimestamp
        );
        assert_eq!(err(&format!("{LINE_A} extra")), Reason::BadSyntax);
        assert_eq!(
            err(&LINE_A.replace(" - default", "  default")),
            Reason::BadSyntax
        );
        assert_eq!(err(&LINE_A[1..]), Reason::BadSyntax);
        assert_eq!(err("hello world"), Reason::BadSyntax);
        assert_eq!(err(""), Reason::BadSyntax);
    }

    #[test]
    fn truncation_is_recognised() {
        for cut in [
            "[2026-11-26T05:06:07.1",
            "[2026-11-26T05:06:07.123Z]",
            "[2026-11-26T05:06:07.123Z] \"GET /rev",
            "[2026-11-26T05:06:07.123Z] \"GET /reviews/0 HTTP/1.1\" 200",
        ] {
            assert_eq!(err(cut), Reason::Truncated, "{cut}");
        }
        // Cut anywhere after the prefix, up to the route name (a route name cut short is
        // still a route name: not recognisable).
        let suffix_start = LINE_A.find(" \"-\" \"Go").unwrap();
        for end in suffix_start..=LINE_A.len() - "default".len() {
            let r = err(&LINE_A[..end]);
            assert_eq!(r, Reason::Truncated, "cut at {end}: {}", &LINE_A[..end]);
        }
    }

    #[test]
    fn every_prefix_of_every_example_is_refused() {
        for line in [LINE_A, LINE_B, LINE_TASK] {
            for end in 0..=line.len() - "default".len() {
                let mut rec = Record::default();
                assert!(parse(&line[..end], &mut rec).is_err(), "{}", &line[..end]);
            }
        }
    }

    /// Realistic, varied Istio TEXT lines (~350–500 B) for the speed test.
    pub(crate) fn varied_lines(target_bytes: usize) -> String {
        const UAS: [&str; 5] = [
            "Go-http-client/1.1",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
            "curl/8.5.0",
            "grpc-go/1.62.1",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) \"quoted\" Mobile/15E148",
        ];
        let mut out = String::with_capacity(target_bytes + 1024);
        let mut x: u64 = 0x9E3779B97F4A7C15;
        let mut i = 0u64;
        while out.len() < target_bytes {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            i += 1;
            let (code, flags, details, svc) = match x % 20 {
                0 => (
                    503,
                    "UF,URX",
                    "upstream_reset_before_response_started{connection_failure}",
                    "-".to_string(),
                ),
                1 => (0, "DC", "downstream_remote_disconnect", "-".to_string()),
                2 => (404, "NR", "route_not_found", "-".to_string()),
                _ => (200, "-", "via_upstream", format!("{}", x % 90)),
            };
            let subset = if x % 10 < 2 { "canary" } else { "primary" };
            let ms = (x >> 8) % 1000;
            let dur = (x >> 20) % 400;
            let ua = UAS[((x >> 30) % 5) as usize];
            let (cluster, sni) = if (x >> 33).is_multiple_of(3) {
                (
                    "inbound|9080||".to_string(),
                    format!("outbound_.9080_.{subset}_.reviews.default.svc.cluster.local"),
                )
            } else {
                (
                    format!("outbound|9080|{subset}|reviews.default.svc.cluster.local"),
                    "-".to_string(),
                )
            };
            use std::fmt::Write;
            let _ = writeln!(
                out,
                "[2026-11-26T05:{:02}:{:02}.{ms:03}Z] \"GET /reviews/{i} HTTP/1.1\" {code} {flags} {details} - \"-\" 0 {} {dur} {svc} \"10.0.{}.{}\" \"{ua}\" \"{:08x}-6d1a-9c4f-a1b2-{:012x}\" \"reviews:9080\" \"10.244.{}.{}:9080\" {cluster} 10.244.2.5:{} 10.96.41.10:9080 10.244.2.5:{} {sni} default",
                (i / 60) % 60,
                i % 60,
                (x >> 12) % 5000,
                (x >> 40) % 256,
                (x >> 48) % 256,
                x as u32,
                x >> 16,
                (x >> 24) % 8,
                (x >> 36) % 256,
                30000 + (x >> 44) % 30000,
                30000 + (x >> 50) % 30000,
            );
        }
        out
    }

    #[test]
    fn varied_lines_all_parse() {
        let text = varied_lines(200_000);
        for line in text.lines() {
            let r = ok(line);
            assert!(r.upstream_cluster.contains("|"));
            assert_eq!(r.authority, "reviews:9080");
        }
    }

    /// Parse the lines once each, not inlined, so that callgrind can count the parser
    /// alone: `valgrind --tool=callgrind --toggle-collect='*callgrind_parse_all*' <test
    /// binary> --ignored --exact parse::istio_text::tests::callgrind_istio_text`.
    #[inline(never)]
    fn callgrind_parse_all(lines: &[&str]) -> u64 {
        let parser = TextParser::detect();
        let mut sum = 0u64;
        for &line in lines {
            let mut rec = Record::default();
            if parser.parse(std::hint::black_box(line), &mut rec).is_ok() {
                sum += rec.status as u64 + rec.upstream_cluster.len() as u64;
            }
        }
        sum
    }

    /// Instructions per line under callgrind (see [`callgrind_parse_all`]): 20 K demo lines.
    #[test]
    #[ignore]
    fn callgrind_istio_text() {
        let mut cfg = crate::generator::GenConfig::demo(crate::parse::Format::IstioText);
        cfg.lines = 20_000;
        let (buf, _) = crate::generator::generate_vec(&cfg).expect("demo config");
        let text = std::str::from_utf8(&buf).expect("generated lines are UTF-8");
        let lines: Vec<&str> = text.lines().collect();
        println!("{} lines, {} B", lines.len(), text.len());
        std::hint::black_box(callgrind_parse_all(&lines));
    }

    #[test]
    #[ignore]
    fn speed_istio_text() {
        let text = varied_lines(50 << 20);
        let lines: Vec<&str> = text.lines().collect();
        let bytes = text.len() as f64;
        let mut best = f64::MAX;
        let mut checksum = 0u64;
        // Best of many passes: the machine is shared, the best pass is the parser's speed.
        let parser = TextParser::detect();
        for _ in 0..15 {
            let t = std::time::Instant::now();
            for line in &lines {
                let mut rec = Record::default();
                if parser.parse(line, &mut rec).is_ok() {
                    checksum = checksum
                        .wrapping_add(rec.status as u64)
                        .wrapping_add(rec.upstream_cluster.len() as u64);
                }
            }
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!(
            "speed_istio_text ({parser:?}): {} lines, {:.0} B/line avg: {:.0} MB/s, {:.2} M lines/s, {:.0} ns/line (best of 15 passes; checksum {checksum})",
            lines.len(),
            bytes / lines.len() as f64,
            bytes / best / 1e6,
            lines.len() as f64 / best / 1e6,
            best / lines.len() as f64 * 1e9
        );
    }

    /// The parser and the previous one (`reference`) agree on `line`: same result, and
    /// the same record when it parses.
    /// Both compilations of the parser (baseline and, on a CPU with AVX2, AVX2) agree
    /// with it too.
    fn same_as_reference(line: &str) -> Result<(), TestCaseError> {
        let mut old = Record::default();
        let want = reference::parse(line, &mut old);
        for parser in parsers() {
            let mut new = Record::default();
            let got = parser.parse(line, &mut new);
            prop_assert_eq!(got, want, "{:?}: {}", parser, line);
            if got.is_ok() {
                prop_assert_eq!(&new, &old, "{:?}: {}", parser, line);
            }
        }
        Ok(())
    }

    /// The baseline parser and the one [`TextParser::detect`] picks (AVX2 on x86_64 CPUs
    /// that have it).
    fn parsers() -> [TextParser; 2] {
        [TextParser::baseline(), TextParser::detect()]
    }

    #[test]
    fn detect_picks_avx2_when_the_cpu_has_it() {
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            TextParser::detect().is_avx2(),
            std::arch::is_x86_feature_detected!("avx2")
        );
        assert!(!TextParser::baseline().is_avx2());
    }

    #[test]
    fn both_compilations_give_the_same_records() {
        let text = varied_lines(200_000);
        let [base, fast] = parsers();
        for line in text.lines().chain([LINE_A, LINE_B, LINE_TASK]) {
            let (mut a, mut b) = (Record::default(), Record::default());
            assert_eq!(base.parse(line, &mut a), fast.parse(line, &mut b), "{line}");
            assert_eq!(a, b, "{line}");
        }
    }

    #[test]
    fn agrees_with_reference_on_examples_generated_and_cut_lines() {
        let mut cfg = crate::generator::GenConfig::demo(crate::parse::Format::IstioText);
        cfg.lines = 3000;
        cfg.malformed_rate = 0.2;
        cfg.tcp_rate = 0.05;
        let (buf, _) = crate::generator::generate_vec(&cfg).expect("demo config");
        // Malformed lines may hold invalid UTF-8; the parser only sees valid `&str`.
        let generated = String::from_utf8_lossy(&buf);
        let varied = varied_lines(100_000);
        let examples = [LINE_A, LINE_B, LINE_TASK];
        for line in generated.lines().chain(varied.lines()).chain(examples) {
            same_as_reference(line).unwrap();
        }
        for line in examples {
            for end in (0..=line.len()).filter(|&e| line.is_char_boundary(e)) {
                same_as_reference(&line[..end]).unwrap();
                same_as_reference(&line[end..]).unwrap();
            }
        }
    }

    /// Pieces that the suffix and prefix scans treat specially.
    fn piece() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(" ".to_string()),
            Just("\"".to_string()),
            Just("\" ".to_string()),
            Just(" \"".to_string()),
            Just("-".to_string()),
            Just("7".to_string()),
            Just("\" 1".to_string()),
            "[ -~]{0,70}",
            any::<String>(),
        ]
    }

    proptest! {
        #[test]
        fn edited_lines_agree_with_reference(which in 0usize..4, edits in proptest::collection::vec((0usize..600, 0usize..4, piece()), 1..4)) {
            let base = [LINE_A, LINE_B, LINE_TASK, "[2026-11-26T05:06:07.123Z] \"GET /b \"q\" HTTP/1.1\" 200 - 0 17 5 4 \"-\" \"curl/8 \"x\" \" \"rid\" \"example.com\" \"10.0.0.7:8080\""][which];
            let mut s = base.to_string();
            for (pos, del, text) in edits {
                let mut at = pos.min(s.len());
                while !s.is_char_boundary(at) {
                    at -= 1;
                }
                let mut end = (at + del).min(s.len());
                while !s.is_char_boundary(end) {
                    end += 1;
                }
                s.replace_range(at..end, &text);
            }
            same_as_reference(&s)?;
        }

        #[test]
        fn arbitrary_strings_agree_with_reference(s in any::<String>(), t in "[ -~]{0,400}") {
            same_as_reference(&s)?;
            same_as_reference(&t)?;
            same_as_reference(&format!("[2026-11-26T05:06:07.123Z] \"{t}"))?;
        }

        #[test]
        fn arbitrary_strings_never_panic(s in any::<String>()) {
            for parser in parsers() {
                let mut rec = Record::default();
                let _ = parser.parse(&s, &mut rec);
            }
        }

        #[test]
        fn fast_start_time_agrees_with_rfc3339(ts in "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z", junk in "[0-9/:.TZa ]{24}") {
            let fast = start_time_ms(ts.as_bytes());
            prop_assert_eq!(fast, parse_rfc3339_ms(ts.as_bytes()));
            // Whenever the fast path answers, it agrees; else it defers.
            if let Some(v) = start_time_ms(junk.as_bytes()) {
                prop_assert_eq!(Some(v), parse_rfc3339_ms(junk.as_bytes()));
            }
        }

        #[test]
        fn mutated_lines_never_panic(pos in 0usize..400, ch in any::<char>(), cut in 0usize..400) {
            let mut s: String = LINE_B.to_string();
            let pos = pos.min(s.len());
            if s.is_char_boundary(pos) {
                s.insert(pos, ch);
            }
            let new_len = s.len() - cut.min(s.len());
            if s.is_char_boundary(new_len) {
                s.truncate(new_len);
            }
            for parser in parsers() {
                let mut rec = Record::default();
                let _ = parser.parse(&s, &mut rec);
            }
        }

        #[test]
        fn any_ua_and_xff_roundtrip(ua in "[ -~]{0,80}", xff in "[ -~]{0,40}", status in 0u16..600, dur in 0u32..100000) {
            let line = format!("[2026-11-26T05:06:07.123Z] \"GET / HTTP/1.1\" {status} - via_upstream - \"-\" 0 1 {dur} - \"{xff}\" \"{ua}\" \"rid\" \"a:1\" \"10.0.0.1:80\" outbound|80|v2|a.b.svc.cluster.local - 10.96.0.1:80 10.0.0.2:1 - default");
            let r = ok(&line);
            prop_assert_eq!(r.status, status);
            prop_assert_eq!(r.latency_ms, Some(dur as f64));
            prop_assert_eq!(r.authority, "a:1");
            prop_assert_eq!(r.upstream_host, "10.0.0.1:80");
            prop_assert_eq!(r.upstream_cluster, "outbound|80|v2|a.b.svc.cluster.local");
        }
    }
}
