//! Parser for Istio/Envoy JSON access logs (`accessLogEncoding: JSON`, reference §1.3).
//!
//! Keys are matched by name, never by position, so key order, extra vendor keys and
//! nested values in unknown keys do not matter. Both Envoy's typed output
//! (`"response_code":503`, `null`) and the all-string variant (`"503"`, `"-"`) work.
//!
//! Fields read (everything else is skipped):
//! - `start_time`: RFC 3339 → `ts_ms`; absent, `null`, `"-"` → `None`; unparsable →
//!   [`Reason::BadTimestamp`].
//! - `response_code`: number or numeric string; absent, `null`, `"-"` → 0 (no response);
//!   otherwise not 0..=999 → [`Reason::BadNumber`].
//! - `duration` (ms, may be a float): required; absent, `null`, `"-"` →
//!   [`Reason::MissingField`]; negative or not a finite number → [`Reason::BadNumber`].
//! - `response_flags` → [`Flags::parse`].
//! - `upstream_cluster`, `requested_server_name` (→ `sni`), `upstream_host`, `authority`,
//!   and the optional vendor keys `version` and `grpc_status`.
//!   `grpc_status` takes a number, a numeric string or a code name as Envoy's
//!   `%GRPC_STATUS%` prints it (`Unavailable` or `UNAVAILABLE`), see
//!   [`crate::parse::json_scan::grpc_code_by_name`]; other text is [`Reason::BadNumber`].
//!
//! String fields: `null` and `"-"` become "". A field we read that holds a JSON escape is
//! [`Reason::UnsupportedEscape`] (we borrow, never decode); escapes in fields we skip
//! (user agent, path, ...) are fine. A key written with escapes never matches.
//! When a key appears twice, the last one wins.

use std::cell::RefCell;

use crate::flags::Flags;
use crate::malformed::Reason;
#[cfg(target_arch = "x86_64")]
use crate::parse::istio_text::masks::Avx2;
use crate::parse::istio_text::masks::Baseline;
use crate::parse::json_scan::shape::{Miss, Shape, StringEnds};
use crate::parse::json_scan::{
    self, key_is, CompactScanner, Member, NotCompact, ObjectScanner, Value,
};
use crate::parse::num;
use crate::record::Record;

thread_local! {
    /// The member layout of the last line the compact path read on this thread: one
    /// Envoy writes every line with the same keys in the same order (see [`Shape`]).
    static SHAPE: RefCell<Shape<Field>> = const { RefCell::new(Shape::EMPTY) };
}

/// Parse one line; see the module docs of [`crate::parse`] for the contract.
#[inline]
pub fn parse<'a>(line: &'a str, rec: &mut Record<'a>) -> Result<(), Reason> {
    parse_with(Baseline, line, rec)
}

/// [`parse`] with the learned-layout path compiled with AVX2 (string ends searched 32
/// bytes at a time).
#[cfg(target_arch = "x86_64")]
fn parse_avx2<'a>(simd: Avx2, line: &'a str, rec: &mut Record<'a>) -> Result<(), Reason> {
    parse_with(simd, line, rec)
}

/// How the learned-layout path is compiled: inlined (baseline), or as a call to a copy
/// compiled with AVX2 (the thread-local access around it is a `std` function that does
/// not inline into AVX2 code, which would leave the AVX2 search a call per string).
trait ShapedPath: StringEnds {
    fn parse_shaped<'a>(
        self,
        shape: &mut Shape<Field>,
        line: &'a str,
        rec: &mut Record<'a>,
    ) -> Result<(), Miss>;
}

impl ShapedPath for Baseline {
    #[inline(always)]
    fn parse_shaped<'a>(
        self,
        shape: &mut Shape<Field>,
        line: &'a str,
        rec: &mut Record<'a>,
    ) -> Result<(), Miss> {
        parse_shaped(self, shape, line, rec)
    }
}

#[cfg(target_arch = "x86_64")]
impl ShapedPath for Avx2 {
    #[inline(always)]
    fn parse_shaped<'a>(
        self,
        shape: &mut Shape<Field>,
        line: &'a str,
        rec: &mut Record<'a>,
    ) -> Result<(), Miss> {
        // SAFETY: `self` exists, so `Avx2::detect` (a runtime
        // `is_x86_feature_detected!("avx2")`) saw AVX2 on this CPU.
        unsafe { parse_shaped_avx2(self, shape, line, rec) }
    }
}

/// [`parse_shaped`] compiled with AVX2 enabled.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn parse_shaped_avx2<'a>(
    simd: Avx2,
    shape: &mut Shape<Field>,
    line: &'a str,
    rec: &mut Record<'a>,
) -> Result<(), Miss> {
    parse_shaped(simd, shape, line, rec)
}

/// Which compilation of the parser to run: chosen once for the CPU (a pipeline keeps
/// one), so each line pays a predictable branch instead of a feature check.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct JsonParser {
    #[cfg(target_arch = "x86_64")]
    avx2: Option<Avx2>,
}

impl JsonParser {
    /// The fastest parser this CPU runs (AVX2 when it has it).
    pub(crate) fn detect() -> Self {
        JsonParser {
            #[cfg(target_arch = "x86_64")]
            avx2: Avx2::detect(),
        }
    }

    /// The baseline parser (SSE2 on x86_64), whatever the CPU.
    #[cfg(test)]
    pub(crate) fn baseline() -> Self {
        JsonParser::default()
    }

    /// [`parse`] with the chosen compilation; same results.
    #[inline(always)]
    pub(crate) fn parse<'a>(self, line: &'a str, rec: &mut Record<'a>) -> Result<(), Reason> {
        #[cfg(target_arch = "x86_64")]
        if let Some(simd) = self.avx2 {
            return parse_avx2(simd, line, rec);
        }
        parse(line, rec)
    }
}

/// The parser, searching string ends as `simd` does (inlined into [`parse`] and
/// `parse_avx2`).
#[inline(always)]
fn parse_with<'a, S: ShapedPath>(
    simd: S,
    line: &'a str,
    rec: &mut Record<'a>,
) -> Result<(), Reason> {
    // Three readers, fastest first: the learned layout of the previous lines, the compact
    // scanner (which learns the layout anew), the general scanner. A faster reader gives
    // up on any line it does not handle, including every error, and the next one re-reads
    // it from scratch, so results and error kinds are the general scanner's. `rec` needs
    // no restoring: up to where a faster reader gave up, all of them yield the same
    // members and `Field::store` stores the same values, so the next reader overwrites
    // every field the previous one set before it can fail or finish.
    let fast = SHAPE
        .try_with(|cell| match cell.try_borrow_mut() {
            Ok(mut shape) => {
                simd.parse_shaped(&mut shape, line, rec).is_ok()
                    || parse_compact_learning(line, rec, &mut shape).is_ok()
            }
            Err(_) => false,
        })
        .unwrap_or(false);
    if fast {
        return Ok(());
    }
    parse_general(line, rec)
}

/// The fastest path: a line with the learned layout. [`Miss`] for any other line (`rec`
/// then holds partial results).
#[inline(always)]
fn parse_shaped<'a, S: StringEnds>(
    simd: S,
    shape: &mut Shape<Field>,
    line: &'a str,
    rec: &mut Record<'a>,
) -> Result<(), Miss> {
    let mut duration: Option<f64> = None;
    shape.walk_with(
        simd,
        line.as_bytes(),
        // Inlined: as a call, saving registers and passing the value through memory
        // cost more than most stores.
        #[inline(always)]
        |field, value| field.store_shaped(value, rec, &mut duration),
    )?;
    rec.latency_ms = Some(duration.ok_or(Miss)?);
    Ok(())
}

/// [`parse_compact`], recording the line's layout in `shape` (forgotten if the line is
/// not read completely).
#[inline(never)]
fn parse_compact_learning<'a>(
    line: &'a str,
    rec: &mut Record<'a>,
    shape: &mut Shape<Field>,
) -> Result<(), NotCompact> {
    shape.start_learning();
    let result = parse_compact(line, rec, shape);
    shape.finish_learning(result.is_ok());
    result
}

/// The compact path: [`NotCompact`] for any line it does not accept (`rec` then holds
/// partial results). Values of keys we do not read are skipped, not built. Every key is
/// passed to `shape` to learn.
#[inline(always)]
fn parse_compact<'a>(
    line: &'a str,
    rec: &mut Record<'a>,
    shape: &mut Shape<Field>,
) -> Result<(), NotCompact> {
    let mut duration: Option<f64> = None;
    let mut scanner = CompactScanner::new(line.as_bytes())?;
    while let Some(key) = scanner.next_key()? {
        let field = Field::of(key);
        shape.learn_key(key, field);
        match field {
            Some(field) => {
                let value = scanner.value()?;
                field
                    .store(value, line, rec, &mut duration)
                    .map_err(|_| NotCompact)?;
            }
            None => scanner.skip_value()?,
        }
    }
    rec.latency_ms = Some(duration.ok_or(NotCompact)?);
    Ok(())
}

/// Any line, with the general scanner.
#[inline(never)]
fn parse_general<'a>(line: &'a str, rec: &mut Record<'a>) -> Result<(), Reason> {
    let mut duration: Option<f64> = None;
    let mut scanner = ObjectScanner::new(line.as_bytes());
    while let Some(m) = scanner.next_member()? {
        read_member(m, line, rec, &mut duration)?;
    }
    rec.latency_ms = Some(duration.ok_or(Reason::MissingField)?);
    Ok(())
}

/// Store member `m` in `rec` (or `duration`) when it is a key we read.
#[inline(always)]
fn read_member<'a>(
    m: Member<'a>,
    line: &'a str,
    rec: &mut Record<'a>,
    duration: &mut Option<f64>,
) -> Result<(), Reason> {
    if m.key_escaped {
        return Ok(());
    }
    match Field::of(m.key) {
        Some(field) => field.store(m.value, line, rec, duration),
        None => Ok(()),
    }
}

/// [`Value::text_field`] for a value of a shape walk (never escaped, never nested).
#[inline(always)]
fn shaped_text(v: Value<'_>) -> Result<&str, Miss> {
    Ok(match v {
        // A number is never `-`.
        Value::Str { raw, .. } | Value::Num(raw) => {
            if raw == b"-" {
                ""
            } else {
                // SAFETY: a shape walk over `line.as_bytes()` (a `&str`) hands out string
                // bodies (the bytes between two `"`) and numbers (from a `-` or digit to
                // a digit): slices of the line that start and end next to ASCII bytes,
                // so on char boundaries, hence UTF-8. `str_of` would check the boundaries
                // again; `fast_path_agrees_with_general` compares with it.
                unsafe { std::str::from_utf8_unchecked(raw) }
            }
        }
        Value::Null => "",
        Value::Bool(true) => "true",
        Value::Bool(false) => "false",
        Value::Nested(_) => return Err(Miss),
    })
}

/// The keys we read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Version,
    Duration,
    Authority,
    StartTime,
    GrpcStatus,
    ResponseCode,
    UpstreamHost,
    ResponseFlags,
    UpstreamCluster,
    RequestedServerName,
}

impl Field {
    /// The field named by the raw key `k`, if we read it.
    #[inline(always)]
    fn of(k: &[u8]) -> Option<Field> {
        // Dispatch on the length first: one compare rejects most of the 24 default keys.
        Some(match k.len() {
            7 if key_is(k, b"version") => Field::Version,
            8 if key_is(k, b"duration") => Field::Duration,
            9 if key_is(k, b"authority") => Field::Authority,
            10 if key_is(k, b"start_time") => Field::StartTime,
            11 if key_is(k, b"grpc_status") => Field::GrpcStatus,
            13 if key_is(k, b"response_code") => Field::ResponseCode,
            13 if key_is(k, b"upstream_host") => Field::UpstreamHost,
            14 if key_is(k, b"response_flags") => Field::ResponseFlags,
            16 if key_is(k, b"upstream_cluster") => Field::UpstreamCluster,
            21 if key_is(k, b"requested_server_name") => Field::RequestedServerName,
            _ => return None,
        })
    }

    /// [`store`](Self::store) for a value of a shape walk (never escaped, never
    /// nested): the same results, with the conversions written out per value kind, and
    /// any error a [`Miss`] (the general path then finds which).
    #[inline(always)]
    fn store_shaped<'a>(
        self,
        v: Value<'a>,
        rec: &mut Record<'a>,
        duration: &mut Option<f64>,
    ) -> Result<(), Miss> {
        match self {
            Field::Version => rec.version = shaped_text(v)?,
            Field::Duration => {
                *duration = match v {
                    Value::Num(t) => Some(num::parse_f64(t).ok_or(Miss)?),
                    _ => v.non_negative_f64().map_err(|_| Miss)?,
                }
            }
            Field::Authority => rec.authority = shaped_text(v)?,
            Field::StartTime => {
                rec.ts_ms = match v {
                    Value::Str { raw, .. } if raw.len() > 1 => {
                        Some(json_scan::rfc3339_ms(raw).ok_or(Miss)?)
                    }
                    _ => v.rfc3339_ms().map_err(|_| Miss)?,
                }
            }
            Field::GrpcStatus => rec.grpc_status = v.grpc_status().map_err(|_| Miss)?,
            Field::ResponseCode => {
                rec.status = match v {
                    Value::Num(t) => num::parse_status(t).ok_or(Miss)?,
                    _ => v.status().map_err(|_| Miss)?.unwrap_or(0),
                }
            }
            Field::UpstreamHost => rec.upstream_host = shaped_text(v)?,
            Field::ResponseFlags => rec.flags = Flags::parse(shaped_text(v)?.as_bytes()),
            Field::UpstreamCluster => rec.upstream_cluster = shaped_text(v)?,
            Field::RequestedServerName => rec.sni = shaped_text(v)?,
        }
        Ok(())
    }

    /// Store value `v` of this field in `rec` (or `duration`).
    #[inline(always)]
    fn store<'a>(
        self,
        v: Value<'a>,
        line: &'a str,
        rec: &mut Record<'a>,
        duration: &mut Option<f64>,
    ) -> Result<(), Reason> {
        match self {
            Field::Version => rec.version = v.text_field(line)?,
            Field::Duration => *duration = v.non_negative_f64()?,
            Field::Authority => rec.authority = v.text_field(line)?,
            Field::StartTime => rec.ts_ms = v.rfc3339_ms()?,
            Field::GrpcStatus => rec.grpc_status = v.grpc_status()?,
            Field::ResponseCode => rec.status = v.status()?.unwrap_or(0),
            Field::UpstreamHost => rec.upstream_host = v.text_field(line)?,
            Field::ResponseFlags => rec.flags = Flags::parse(v.text_field(line)?.as_bytes()),
            Field::UpstreamCluster => rec.upstream_cluster = v.text_field(line)?,
            Field::RequestedServerName => rec.sni = v.text_field(line)?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::json_scan::{self, Value};
    use crate::parse::time::parse_rfc3339_ms;
    use proptest::prelude::*;

    /// Reference §1.4 example (c): typed Envoy output, inbound on a canary pod.
    const EXAMPLE_C: &str = r#"{"start_time":"2026-11-26T05:06:07.130Z","route_name":"default","method":"GET","path":"/reviews/0","protocol":"HTTP/1.1","response_code":200,"response_flags":"-","response_code_details":"via_upstream","connection_termination_details":null,"bytes_received":0,"bytes_sent":358,"duration":4,"upstream_service_time":"3","x_forwarded_for":null,"user_agent":"Go-http-client/1.1","request_id":"9b1f3c2e-6d1a-9c4f-a1b2-3c4d5e6f7a8b","authority":"reviews:9080","upstream_host":"10.244.3.22:9080","upstream_cluster":"inbound|9080||","upstream_local_address":"127.0.0.6:46243","downstream_local_address":"10.244.3.22:9080","downstream_remote_address":"10.244.2.5:51234","requested_server_name":"outbound_.9080_.canary_.reviews.default.svc.cluster.local","upstream_transport_failure_reason":null}"#;

    /// The same request as the TEXT-encoded "JSON-looking" format writes it: all strings.
    const STRINGLY: &str = r#"{"start_time":"2026-11-26T05:06:07.130Z","route_name":"default","method":"GET","path":"/reviews/0","protocol":"HTTP/1.1","response_code":"200","response_flags":"-","response_code_details":"via_upstream","connection_termination_details":"-","bytes_received":"0","bytes_sent":"358","duration":"4","upstream_service_time":"3","x_forwarded_for":"-","user_agent":"Go-http-client/1.1","request_id":"9b1f3c2e-6d1a-9c4f-a1b2-3c4d5e6f7a8b","authority":"reviews:9080","upstream_host":"10.244.3.22:9080","upstream_cluster":"inbound|9080||","upstream_local_address":"127.0.0.6:46243","downstream_local_address":"10.244.3.22:9080","downstream_remote_address":"10.244.2.5:51234","requested_server_name":"outbound_.9080_.canary_.reviews.default.svc.cluster.local","upstream_transport_failure_reason":"-"}"#;

    /// The record of `line`; the AVX2 compilation (on a CPU with AVX2) gives the same.
    fn run(line: &str) -> Result<Record<'_>, Reason> {
        let mut rec = Record::default();
        let got = parse(line, &mut rec).map(|()| rec);
        let mut fast = Record::default();
        let fast = JsonParser::detect().parse(line, &mut fast).map(|()| fast);
        assert_eq!(fast, got, "{line}");
        got
    }

    #[test]
    fn both_compilations_give_the_same_records() {
        let lines = istio_lines(300_000);
        let [base, fast] = [JsonParser::baseline(), JsonParser::detect()];
        for line in lines
            .iter()
            .map(String::as_str)
            .chain([EXAMPLE_C, STRINGLY])
        {
            let (mut a, mut b) = (Record::default(), Record::default());
            assert_eq!(base.parse(line, &mut a), fast.parse(line, &mut b), "{line}");
            assert_eq!(a, b, "{line}");
        }
    }

    fn expected_c() -> Record<'static> {
        Record {
            ts_ms: parse_rfc3339_ms(b"2026-11-26T05:06:07.130Z"),
            status: 200,
            grpc_status: None,
            latency_ms: Some(4.0),
            flags: Flags::NONE,
            upstream_cluster: "inbound|9080||",
            sni: "outbound_.9080_.canary_.reviews.default.svc.cluster.local",
            upstream_host: "10.244.3.22:9080",
            authority: "reviews:9080",
            target: "",
            version: "",
        }
    }

    #[test]
    fn reference_example_c() {
        assert_eq!(run(EXAMPLE_C), Ok(expected_c()));
    }

    #[test]
    fn stringly_variant_gives_the_same_record() {
        assert_eq!(run(STRINGLY), Ok(expected_c()));
    }

    #[test]
    fn failure_line_with_nulls_and_flags() {
        let line = r#"{"start_time":"2026-11-26T05:06:07.456Z","response_code":503,"response_flags":"UF,URX","duration":62,"upstream_host":null,"upstream_cluster":"outbound|9080|canary|reviews.default.svc.cluster.local","authority":"reviews:9080","requested_server_name":null}"#;
        let r = run(line).unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(r.flags, Flags::parse(b"UF,URX"));
        assert_eq!(r.upstream_host, "");
        assert_eq!(r.sni, "");
        assert_eq!(
            r.upstream_cluster,
            "outbound|9080|canary|reviews.default.svc.cluster.local"
        );
        assert_eq!(r.latency_ms, Some(62.0));
    }

    #[test]
    fn absent_values() {
        // No response code, no start time: status 0, ts None.
        for line in [
            r#"{"duration":3,"response_code":null,"start_time":null}"#,
            r#"{"duration":3,"response_code":"-","start_time":"-"}"#,
            r#"{"duration":3}"#,
        ] {
            let r = run(line).unwrap();
            assert_eq!(
                (r.status, r.ts_ms, r.latency_ms),
                (0, None, Some(3.0)),
                "{line}"
            );
        }
        for line in [
            r#"{"response_code":200}"#,
            r#"{"response_code":200,"duration":null}"#,
            r#"{"response_code":200,"duration":"-"}"#,
        ] {
            assert_eq!(run(line), Err(Reason::MissingField), "{line}");
        }
    }

    #[test]
    fn numbers() {
        assert_eq!(run(r#"{"duration":12.5}"#).unwrap().latency_ms, Some(12.5));
        assert_eq!(
            run(r#"{"duration":"12.5"}"#).unwrap().latency_ms,
            Some(12.5)
        );
        assert_eq!(run(r#"{"duration":1e3}"#).unwrap().latency_ms, Some(1000.0));
        for line in [
            r#"{"duration":-1}"#,
            r#"{"duration":1e999}"#,
            r#"{"duration":"abc"}"#,
            r#"{"duration":true}"#,
            r#"{"duration":1,"response_code":-200}"#,
            r#"{"duration":1,"response_code":1000}"#,
            r#"{"duration":1,"response_code":99999999999999999999999}"#,
            r#"{"duration":1,"response_code":200.5}"#,
            r#"{"duration":1,"response_code":"OK"}"#,
            r#"{"duration":1,"grpc_status":70000}"#,
            r#"{"duration":1,"grpc_status":-1}"#,
            r#"{"duration":1,"grpc_status":"Nonsense"}"#,
        ] {
            assert_eq!(run(line), Err(Reason::BadNumber), "{line}");
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(
            run(r#"{"duration":1,"start_time":"yesterday"}"#),
            Err(Reason::BadTimestamp)
        );
        assert_eq!(
            run(r#"{"duration":1,"start_time":1764133567130}"#),
            Err(Reason::BadTimestamp)
        );
        let r = run(r#"{"duration":1,"start_time":"2026-11-26T06:06:07.130+01:00"}"#).unwrap();
        assert_eq!(r.ts_ms, parse_rfc3339_ms(b"2026-11-26T05:06:07.130Z"));
    }

    #[test]
    fn vendor_keys() {
        let line = r#"{"pod_name":"reviews-canary-7d9f","duration":2,"response_code":200,"grpc_status":"Unavailable","version":"v2","extra":{"nested":[1,{"x":"}"}]}}"#;
        let r = run(line).unwrap();
        assert_eq!(r.grpc_status, Some(14));
        assert_eq!(r.version, "v2");
        assert_eq!(
            run(r#"{"duration":2,"grpc_status":4}"#)
                .unwrap()
                .grpc_status,
            Some(4)
        );
        assert_eq!(
            run(r#"{"duration":2,"grpc_status":"4"}"#)
                .unwrap()
                .grpc_status,
            Some(4)
        );
        assert_eq!(
            run(r#"{"duration":2,"grpc_status":"-"}"#)
                .unwrap()
                .grpc_status,
            None
        );
        assert_eq!(
            run(r#"{"duration":2,"grpc_status":null}"#)
                .unwrap()
                .grpc_status,
            None
        );
    }

    #[test]
    fn escapes() {
        // In a field we skip: fine.
        let ua = EXAMPLE_C.replace(
            "Go-http-client/1.1",
            r#"Mozilla/5.0 \"quoted\" \\ back \u00e9 (X11; Linux)"#,
        );
        assert_eq!(run(&ua), Ok(expected_c()));
        // In a field we read: unsupported.
        let cluster = EXAMPLE_C.replace("inbound|9080||", r#"inbound|9080|\u0063anary|"#);
        assert_eq!(run(&cluster), Err(Reason::UnsupportedEscape));
        let sni = EXAMPLE_C.replace("outbound_.9080_", r#"outbound_.9080\/_"#);
        assert_eq!(run(&sni), Err(Reason::UnsupportedEscape));
        // A key with an escape is skipped, not matched.
        let key = EXAMPLE_C.replace(r#""upstream_cluster""#, r#""upstream\u005fcluster""#);
        assert_eq!(run(&key).unwrap().upstream_cluster, "");
    }

    /// Whether `line` is read by the learned layout (the fastest path).
    fn takes_shape(line: &str) -> bool {
        let mut rec = Record::default();
        SHAPE.with(|c| parse_shaped(Baseline, &mut c.borrow_mut(), line, &mut rec).is_ok())
    }

    #[test]
    fn layout_is_learned_and_relearned() {
        assert_eq!(run(EXAMPLE_C), Ok(expected_c()));
        assert!(takes_shape(EXAMPLE_C));
        assert!(takes_shape(STRINGLY));
        // The same layout with other values.
        let other = EXAMPLE_C
            .replace(":200,", ":503,")
            .replace("\"-\"", "\"UF,URX\"");
        assert!(takes_shape(&other));
        let r = run(&other).unwrap();
        assert_eq!((r.status, r.flags), (503, Flags::parse(b"UF,URX")));
        // An extra key: read by the compact scanner, which learns the new layout.
        let extra = EXAMPLE_C.replace("{", r#"{"pod_name":"reviews-v2-7d9f","#);
        assert!(!takes_shape(&extra));
        assert_eq!(run(&extra), Ok(expected_c()));
        assert!(takes_shape(&extra));
        assert!(!takes_shape(EXAMPLE_C));
        // A bad line in between: errors as before, and the layout is learned again.
        assert_eq!(run(r#"{"duration":4,"#), Err(Reason::Truncated));
        assert_eq!(run(EXAMPLE_C), Ok(expected_c()));
        assert!(takes_shape(EXAMPLE_C));
        // Errors in fields read by the layout path are the general path's.
        let bad = EXAMPLE_C.replace(":200,", ":2000,");
        assert_eq!(run(&bad), Err(Reason::BadNumber));
        let esc = EXAMPLE_C.replace("inbound|9080||", r#"inbound|9080|\u0063anary|"#);
        assert_eq!(run(EXAMPLE_C), Ok(expected_c()));
        assert_eq!(run(&esc), Err(Reason::UnsupportedEscape));
        let no_duration = EXAMPLE_C.replace(r#""duration":4"#, r#""duration":null"#);
        assert_eq!(run(EXAMPLE_C), Ok(expected_c()));
        assert_eq!(run(&no_duration), Err(Reason::MissingField));
    }

    #[test]
    fn whitespace_and_bad_lines() {
        let spaced = r#" { "duration" : 4 , "response_code" : 200 } "#;
        assert_eq!(run(spaced).unwrap().status, 200);
        assert_eq!(run(r#"{"duration":4}x"#), Err(Reason::BadSyntax));
        assert_eq!(run("not json"), Err(Reason::BadSyntax));
        assert_eq!(
            run(r#"{"duration":4,"upstream_cluster":{"a":1}}"#),
            Err(Reason::BadSyntax)
        );
        assert_eq!(run(r#"{"duration":4,"#), Err(Reason::Truncated));
    }

    #[test]
    fn every_truncation_is_an_error() {
        for line in [EXAMPLE_C, STRINGLY] {
            // With the layout learned, so that the cuts meet it.
            assert_eq!(run(line), Ok(expected_c()));
            for cut in 0..line.len() {
                let r = run(&line[..cut]);
                // A cut inside a field we read may also fail that field first.
                assert!(
                    matches!(
                        r,
                        Err(Reason::Truncated | Reason::BadSyntax | Reason::BadTimestamp)
                    ),
                    "cut {cut}: {r:?}"
                );
            }
        }
    }

    /// Split a flat object of scalar members into `"key":value` strings.
    fn members_of(line: &str) -> Vec<String> {
        let mut out = Vec::new();
        json_scan::scan_object(line.as_bytes(), |m| {
            let text = |r: &[u8]| String::from_utf8(r.to_vec()).unwrap();
            let v = match m.value {
                Value::Str { raw, .. } => format!("\"{}\"", text(raw)),
                Value::Num(r) | Value::Nested(r) => text(r),
                Value::Bool(b) => b.to_string(),
                Value::Null => "null".to_string(),
            };
            out.push(format!("\"{}\":{}", text(m.key), v));
            Ok::<(), json_scan::ScanError>(())
        })
        .unwrap();
        out
    }

    proptest! {
        #[test]
        fn key_order_does_not_matter(seed in any::<u64>(), stringly in any::<bool>()) {
            let base = if stringly { STRINGLY } else { EXAMPLE_C };
            let mut parts = members_of(base);
            // Fisher-Yates with a small LCG driven by the seed.
            let mut x = seed | 1;
            for i in (1..parts.len()).rev() {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                let j = ((x >> 33) as usize) % (i + 1);
                parts.swap(i, j);
            }
            let shuffled = format!("{{{}}}", parts.join(","));
            prop_assert_eq!(run(&shuffled), Ok(expected_c()));
        }

        #[test]
        fn arbitrary_text_never_panics(line in ".{0,300}") {
            let _ = run(&line);
        }

        /// The fast path changes nothing: on edited example lines (any byte replaced,
        /// inserted or cut), `parse` gives the general path's result and record.
        #[test]
        fn fast_path_agrees_with_general(
            pos in 0usize..1000,
            byte in prop_oneof![Just(b' '), Just(b'\\'), Just(b'"'), Just(b','), Just(b'}'), Just(b'0'), any::<u8>()],
            edit in 0u8..3,
            stringly in any::<bool>(),
        ) {
            let base = if stringly { STRINGLY } else { EXAMPLE_C };
            let mut bytes = base.as_bytes().to_vec();
            let p = pos % bytes.len();
            match edit {
                0 => bytes[p] = byte,
                1 => bytes.insert(p, byte),
                _ => bytes.truncate(p),
            }
            if let Ok(line) = std::str::from_utf8(&bytes) {
                // Learn the base line's layout first, so that the edited line meets it.
                prop_assert_eq!(run(base), Ok(expected_c()));
                let mut general = Record::default();
                let r_general = parse_general(line, &mut general);
                for parser in [JsonParser::baseline(), JsonParser::detect()] {
                    prop_assert_eq!(run(base), Ok(expected_c()));
                    let mut fast = Record::default();
                    let r_fast = parser.parse(line, &mut fast);
                    prop_assert_eq!(r_fast, r_general, "{:?}", parser);
                    prop_assert_eq!(&fast, &general, "{:?}", parser);
                }
            }
        }

        #[test]
        fn mutated_example_never_panics(pos in 0usize..1000, byte in any::<u8>()) {
            let mut bytes = EXAMPLE_C.as_bytes().to_vec();
            let p = pos % bytes.len();
            bytes[p] = byte;
            if let Ok(line) = std::str::from_utf8(&bytes) {
                let _ = run(line);
            }
        }
    }

    /// Realistic varied lines in the 24-key default shape with typed values.
    pub(crate) fn istio_lines(total_bytes: usize) -> Vec<String> {
        const UAS: [&str; 5] = [
            "Go-http-client/1.1",
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
            "curl/8.5.0",
            "python-requests/2.31.0",
            "grpc-go/1.60.1",
        ];
        const CODES: [u16; 8] = [200, 200, 200, 200, 201, 404, 503, 500];
        let mut out = Vec::new();
        let mut size = 0;
        let mut x: u64 = 0x9e3779b97f4a7c15;
        let mut ms: u64 = 0;
        while size < total_bytes {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let r = x >> 16;
            ms += r % 7;
            let code = CODES[(r % 8) as usize];
            let subset = if r % 10 < 2 { "canary" } else { "primary" };
            let duration = r % 1500;
            let flags = if code == 503 { "UF,URX" } else { "-" };
            let ua = UAS[((r >> 8) % 5) as usize];
            let line = format!(
                r#"{{"start_time":"2026-11-26T05:{:02}:{:02}.{:03}Z","route_name":"default","method":"GET","path":"/reviews/{}","protocol":"HTTP/1.1","response_code":{},"response_flags":"{}","response_code_details":"via_upstream","connection_termination_details":null,"bytes_received":0,"bytes_sent":{},"duration":{},"upstream_service_time":"{}","x_forwarded_for":null,"user_agent":"{}","request_id":"{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}","authority":"reviews:9080","upstream_host":"10.244.{}.{}:9080","upstream_cluster":"outbound|9080|{}|reviews.default.svc.cluster.local","upstream_local_address":"10.244.2.5:{}","downstream_local_address":"10.96.41.10:9080","downstream_remote_address":"10.244.2.5:40112","requested_server_name":null,"upstream_transport_failure_reason":null}}"#,
                (ms / 60000) % 60,
                (ms / 1000) % 60,
                ms % 1000,
                r % 100,
                code,
                flags,
                r % 5000,
                duration,
                duration.saturating_sub(1),
                ua,
                (x >> 32) as u32,
                (x >> 16) & 0xffff,
                (x >> 4) & 0xfff,
                (x >> 20) & 0xfff,
                x & 0xffff_ffff_ffff,
                (r >> 3) % 250,
                (r >> 11) % 250,
                subset,
                40000 + (r % 20000),
            );
            size += line.len() + 1;
            out.push(line);
        }
        out
    }

    /// CPU time of this thread in ns (Linux schedstat), so a busy shared machine does
    /// not count other processes' time against us; falls back to wall time.
    pub(crate) fn thread_cpu_ns() -> Option<u64> {
        let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
        s.split_whitespace().next()?.parse().ok()
    }

    /// Best-of-`runs` seconds for `f`, by thread CPU time when available.
    pub(crate) fn best_secs(runs: usize, mut f: impl FnMut()) -> f64 {
        let mut best = f64::MAX;
        for _ in 0..runs {
            let (c0, t0) = (thread_cpu_ns(), std::time::Instant::now());
            f();
            let wall = t0.elapsed().as_secs_f64();
            let secs = match (c0, thread_cpu_ns()) {
                (Some(a), Some(b)) if b > a => (b - a) as f64 / 1e9,
                _ => wall,
            };
            best = best.min(secs);
        }
        best
    }

    /// Parse every line of `buf` (lines split beforehand, as the pipeline hands them over).
    fn parse_all(buf: &str, spans: &[(usize, usize)]) -> u64 {
        let mut sum = 0u64;
        for &(a, b) in spans {
            let mut rec = Record::default();
            let line = std::hint::black_box(buf.get(a..b).unwrap_or(""));
            parse(line, &mut rec).expect("generated lines parse");
            sum += rec.status as u64 + rec.upstream_cluster.len() as u64;
        }
        sum
    }

    /// Parse the lines once each, not inlined, so that callgrind can count the parser
    /// alone: `valgrind --tool=callgrind --toggle-collect='*callgrind_parse_all*' <test
    /// binary> --ignored --exact parse::istio_json::tests::callgrind_istio_json`.
    #[inline(never)]
    fn callgrind_parse_all(lines: &[String]) -> u64 {
        let mut sum = 0u64;
        for line in lines {
            let mut rec = Record::default();
            parse(std::hint::black_box(line), &mut rec).expect("generated lines parse");
            sum += rec.status as u64 + rec.upstream_cluster.len() as u64;
        }
        sum
    }

    /// Instructions per line under callgrind (see [`callgrind_parse_all`]): 2 MB of lines.
    #[test]
    #[ignore]
    fn callgrind_istio_json() {
        let lines = istio_lines(2 << 20);
        println!("{} lines", lines.len());
        std::hint::black_box(callgrind_parse_all(&lines));
    }

    #[test]
    #[ignore]
    fn speed_istio_json() {
        // One contiguous buffer of newline-separated lines, like a read buffer.
        let buf = istio_lines(50 << 20).join("\n");
        let mut spans = Vec::new();
        let mut start = 0;
        for end in memchr::memchr_iter(b'\n', buf.as_bytes()).chain([buf.len()]) {
            spans.push((start, end));
            start = end + 1;
        }
        let bytes = buf.len() as f64;
        let lines = spans.len() as f64;
        println!("istio_json: {lines} lines, avg {:.0} B/line", bytes / lines);
        let secs = best_secs(7, || {
            std::hint::black_box(parse_all(&buf, &spans));
        });
        println!(
            "speed_istio_json (50 MB streamed from memory): {:.0} MB/s, {:.2} M lines/s",
            bytes / secs / 1e6,
            lines / secs / 1e6
        );
        // A 1 MB chunk parsed repeatedly: the data is in cache, as right after a read().
        let chunk = &spans[..1300];
        let chunk_bytes: usize = chunk.iter().map(|(a, b)| b - a + 1).sum();
        let secs = best_secs(7, || {
            for _ in 0..40 {
                std::hint::black_box(parse_all(&buf, chunk));
            }
        });
        println!(
            "speed_istio_json (1 MB chunk, in cache): {:.0} MB/s, {:.2} M lines/s",
            40.0 * chunk_bytes as f64 / secs / 1e6,
            40.0 * chunk.len() as f64 / secs / 1e6
        );
        println!("(best of 7 by thread CPU time; the machine is shared, so figures vary)");
    }
}
