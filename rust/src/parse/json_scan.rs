//! A fast, allocation-free scanner over one flat JSON object (the shape of every JSON
//! access-log line).
//!
//! [`scan_object`] walks `{ "key": value, ... }` member by member and hands each
//! [`Member`] (key, value kind, raw value text) to a callback, which picks the few keys
//! it needs and ignores the rest. Nothing is decoded or copied: strings come back as the
//! raw text between their quotes plus a flag telling whether it held an escape.
//!
//! Speed: most of a JSON access-log line is key names and short strings, so string ends
//! are found 8 bytes at a time with a SWAR test for `"`/`\`, switching to `memchr2`
//! (SIMD) once a string proves long (user agents, paths).
//!
//! What is checked: the object structure, string escapes (`\"`, `\\`, `\/`, `\b`, `\f`,
//! `\n`, `\r`, `\t`, `\uXXXX`), the JSON number grammar and the literals. What is not:
//! raw control characters inside strings are accepted, and nested objects/arrays in
//! values are only skipped (brackets matched, strings respected, nesting at most
//! [`MAX_DEPTH`]), not validated inside.
//!
//! Keys are raw too: a key holding an escape is reported with `key_escaped = true` and
//! its raw text; the parsers in this crate never match such a key against a wanted name
//! (documented limitation: `"st\u0061tus"` is not `"status"`).

use memchr::memchr2;

/// Deepest nesting of objects/arrays inside a member value that is skipped.
pub const MAX_DEPTH: usize = 64;

/// Why a line is not one well-formed JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanError {
    /// The input ends before the object closes (no `}`, unterminated string, cut number).
    Truncated,
    /// Anything else malformed (wrong byte, bad escape, trailing junk, too deep).
    BadSyntax,
}

impl From<ScanError> for crate::malformed::Reason {
    fn from(e: ScanError) -> Self {
        match e {
            ScanError::Truncated => crate::malformed::Reason::Truncated,
            ScanError::BadSyntax => crate::malformed::Reason::BadSyntax,
        }
    }
}

/// One member value, borrowed from the line.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// A string: the raw text between the quotes (escapes not decoded) and whether it
    /// contains any `\` escape.
    Str { raw: &'a str, escaped: bool },
    /// A number, as written (grammar checked).
    Num(&'a str),
    /// `true` / `false`.
    Bool(bool),
    /// `null`.
    Null,
    /// A nested object or array, raw text including its brackets (skipped, not validated).
    Nested(&'a str),
}

/// One `"key": value` member of the object.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Member<'a> {
    /// Raw key text between the quotes.
    pub key: &'a str,
    /// The key holds an escape (its raw text is not its decoded name).
    pub key_escaped: bool,
    pub value: Value<'a>,
}

/// Walk the single JSON object in `line`, calling `on_member` for every member in order.
///
/// Leading and trailing whitespace is allowed; anything else after the closing `}` is
/// [`ScanError::BadSyntax`]. The whole object is checked even when the callback has
/// already seen everything it needs, so a cut line is always reported as
/// [`ScanError::Truncated`]. A callback error stops the walk and is returned as is.
#[inline]
pub fn scan_object<'a, E, F>(line: &'a str, mut on_member: F) -> Result<(), E>
where
    E: From<ScanError>,
    F: FnMut(Member<'a>) -> Result<(), E>,
{
    let s = line.as_bytes();
    let mut i = skip_ws(s, 0);
    match s.get(i) {
        Some(b'{') => i += 1,
        Some(_) => return Err(ScanError::BadSyntax.into()),
        None => return Err(ScanError::Truncated.into()),
    }
    i = skip_ws(s, i);
    if s.get(i) == Some(&b'}') {
        return finish(s, i + 1).map_err(E::from);
    }
    loop {
        // Key.
        match s.get(i) {
            Some(b'"') => {}
            Some(_) => return Err(ScanError::BadSyntax.into()),
            None => return Err(ScanError::Truncated.into()),
        }
        let key_start = i + 1;
        let (key_end, key_escaped) = scan_string(s, key_start)?;
        let key = sub(line, key_start, key_end)?;
        i = skip_ws(s, key_end + 1);
        match s.get(i) {
            Some(b':') => {}
            Some(_) => return Err(ScanError::BadSyntax.into()),
            None => return Err(ScanError::Truncated.into()),
        }
        i = skip_ws(s, i + 1);
        // Value.
        let (value, next) = scan_value(line, i)?;
        on_member(Member {
            key,
            key_escaped,
            value,
        })?;
        i = skip_ws(s, next);
        match s.get(i) {
            Some(b',') => i = skip_ws(s, i + 1),
            Some(b'}') => return finish(s, i + 1).map_err(E::from),
            Some(_) => return Err(ScanError::BadSyntax.into()),
            None => return Err(ScanError::Truncated.into()),
        }
    }
}

/// After the closing `}`: only whitespace may follow.
#[inline]
fn finish(s: &[u8], i: usize) -> Result<(), ScanError> {
    if skip_ws(s, i) == s.len() {
        Ok(())
    } else {
        Err(ScanError::BadSyntax)
    }
}

#[inline(always)]
fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// Index of the first non-whitespace byte at or after `i` (or `s.len()`).
#[inline(always)]
fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while let Some(&b) = s.get(i) {
        if !is_ws(b) {
            break;
        }
        i += 1;
    }
    i
}

/// `line[a..b]`; positions always sit next to ASCII delimiters, so this cannot fail on
/// scanner-produced positions, but it is checked rather than assumed.
#[inline(always)]
fn sub(line: &str, a: usize, b: usize) -> Result<&str, ScanError> {
    line.get(a..b).ok_or(ScanError::BadSyntax)
}

/// Scan one value starting at `i` (not whitespace). Returns it and the index after it.
#[inline(always)]
fn scan_value(line: &str, i: usize) -> Result<(Value<'_>, usize), ScanError> {
    let s = line.as_bytes();
    match s.get(i) {
        Some(b'"') => {
            let (end, escaped) = scan_string(s, i + 1)?;
            let raw = sub(line, i + 1, end)?;
            Ok((Value::Str { raw, escaped }, end + 1))
        }
        Some(b'-' | b'0'..=b'9') => {
            let end = scan_number(s, i)?;
            Ok((Value::Num(sub(line, i, end)?), end))
        }
        Some(b'n') => literal(s, i, b"null").map(|e| (Value::Null, e)),
        Some(b't') => literal(s, i, b"true").map(|e| (Value::Bool(true), e)),
        Some(b'f') => literal(s, i, b"false").map(|e| (Value::Bool(false), e)),
        Some(b'{' | b'[') => {
            let end = skip_nested(s, i)?;
            Ok((Value::Nested(sub(line, i, end)?), end))
        }
        Some(_) => Err(ScanError::BadSyntax),
        None => Err(ScanError::Truncated),
    }
}

/// Match the literal `word` at `i`; a cut-off prefix of it at the end is Truncated.
#[inline]
fn literal(s: &[u8], i: usize, word: &[u8]) -> Result<usize, ScanError> {
    let end = i + word.len();
    match s.get(i..end) {
        Some(w) if w == word => Ok(end),
        Some(_) => Err(ScanError::BadSyntax),
        None => {
            let rest = s.get(i..).unwrap_or(&[]);
            if word.starts_with(rest) {
                Err(ScanError::Truncated)
            } else {
                Err(ScanError::BadSyntax)
            }
        }
    }
}

/// Check a JSON number `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?` at `i`; returns
/// the index after it. Ending the input inside the grammar is Truncated.
#[inline]
fn scan_number(s: &[u8], mut i: usize) -> Result<usize, ScanError> {
    if s.get(i) == Some(&b'-') {
        i += 1;
    }
    // Integer part.
    match s.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = digits(s, i + 1),
        Some(_) => return Err(ScanError::BadSyntax),
        None => return Err(ScanError::Truncated),
    }
    if s.get(i) == Some(&b'.') {
        i += 1;
        i = required_digits(s, i)?;
    }
    if let Some(b'e' | b'E') = s.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = s.get(i) {
            i += 1;
        }
        i = required_digits(s, i)?;
    }
    Ok(i)
}

#[inline(always)]
fn digits(s: &[u8], mut i: usize) -> usize {
    while let Some(b'0'..=b'9') = s.get(i) {
        i += 1;
    }
    i
}

#[inline]
fn required_digits(s: &[u8], i: usize) -> Result<usize, ScanError> {
    match s.get(i) {
        Some(b'0'..=b'9') => Ok(digits(s, i + 1)),
        Some(_) => Err(ScanError::BadSyntax),
        None => Err(ScanError::Truncated),
    }
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// High bit set in each byte of `w` that is `"` or `\`. Exact for the lowest set byte
/// (the borrow trick can only give false positives above a true match), which is all
/// the callers use.
#[inline(always)]
fn quote_or_backslash(w: u64) -> u64 {
    let q = w ^ (LO * b'"' as u64);
    let b = w ^ (LO * b'\\' as u64);
    ((q.wrapping_sub(LO) & !q) | (b.wrapping_sub(LO) & !b)) & HI
}

/// How many bytes of a string are tested word by word before handing over to memchr2:
/// most keys and values are short, where a SIMD call costs more than it saves.
const SWAR_BYTES: usize = 24;

/// First `"` or `\` at or after `from`.
#[inline(always)]
fn find_quote_or_backslash(s: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i - from < SWAR_BYTES {
        let Some(chunk) = s.get(i..i + 8) else {
            // Fewer than 8 bytes left.
            let tail = s.get(i..)?;
            return tail
                .iter()
                .position(|&b| b == b'"' || b == b'\\')
                .map(|p| i + p);
        };
        let Ok(word) = <[u8; 8]>::try_from(chunk) else {
            return None;
        };
        let m = quote_or_backslash(u64::from_le_bytes(word));
        if m != 0 {
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    memchr2(b'"', b'\\', s.get(i..)?).map(|p| i + p)
}

/// Scan a string body starting at `from` (just after the opening quote). Returns the
/// index of the closing quote and whether an escape was seen.
#[inline(always)]
fn scan_string(s: &[u8], from: usize) -> Result<(usize, bool), ScanError> {
    let mut i = from;
    let mut escaped = false;
    loop {
        let Some(p) = find_quote_or_backslash(s, i) else {
            return Err(ScanError::Truncated);
        };
        match s.get(p) {
            Some(b'"') => return Ok((p, escaped)),
            _ => {
                escaped = true;
                i = skip_escape(s, p)?;
            }
        }
    }
}

/// `s[p]` is a backslash: check the escape and return the index after it.
#[cold]
fn skip_escape(s: &[u8], p: usize) -> Result<usize, ScanError> {
    match s.get(p + 1) {
        Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => Ok(p + 2),
        Some(b'u') => {
            for k in 0..4 {
                match s.get(p + 2 + k) {
                    Some(b) if b.is_ascii_hexdigit() => {}
                    Some(_) => return Err(ScanError::BadSyntax),
                    None => return Err(ScanError::Truncated),
                }
            }
            Ok(p + 6)
        }
        Some(_) => Err(ScanError::BadSyntax),
        None => Err(ScanError::Truncated),
    }
}

/// Skip a nested object or array starting at `i` (`{` or `[`): brackets are matched by
/// kind, strings are skipped so brackets inside them do not count. Returns the index
/// after the closing bracket.
#[cold]
fn skip_nested(s: &[u8], mut i: usize) -> Result<usize, ScanError> {
    // Bit d of `kinds` is 1 when nesting level d is an array.
    let mut kinds: u64 = 0;
    let mut depth: usize = 0;
    while let Some(&b) = s.get(i) {
        match b {
            b'{' | b'[' => {
                if depth >= MAX_DEPTH {
                    return Err(ScanError::BadSyntax);
                }
                let bit = 1u64 << depth;
                if b == b'[' {
                    kinds |= bit;
                } else {
                    kinds &= !bit;
                }
                depth += 1;
            }
            b'}' | b']' => {
                let Some(d) = depth.checked_sub(1) else {
                    return Err(ScanError::BadSyntax);
                };
                let is_array = kinds & (1u64 << d) != 0;
                if is_array != (b == b']') {
                    return Err(ScanError::BadSyntax);
                }
                depth = d;
                if depth == 0 {
                    return Ok(i + 1);
                }
            }
            b'"' => {
                let (end, _) = scan_string(s, i + 1)?;
                i = end;
            }
            _ => {}
        }
        i += 1;
    }
    Err(ScanError::Truncated)
}

// ---------------------------------------------------------------------------------
// Value conversions shared by the JSON access-log parsers.
// ---------------------------------------------------------------------------------

use crate::malformed::Reason;
use crate::parse::num;

impl<'a> Value<'a> {
    /// Text of a value for a string field of the Record: string (with `"-"` → ""),
    /// `null` → "", numbers and booleans as written. An escaped string is
    /// [`Reason::UnsupportedEscape`] (we do not decode); an object/array is
    /// [`Reason::BadSyntax`].
    #[inline]
    pub fn text_field(self) -> Result<&'a str, Reason> {
        match self {
            Value::Str { escaped: true, .. } => Err(Reason::UnsupportedEscape),
            Value::Str { raw: "-", .. } => Ok(""),
            Value::Str { raw, .. } => Ok(raw),
            Value::Null => Ok(""),
            Value::Num(raw) => Ok(raw),
            Value::Bool(true) => Ok("true"),
            Value::Bool(false) => Ok("false"),
            Value::Nested(_) => Err(Reason::BadSyntax),
        }
    }

    /// Text of a numeric value: `Ok(None)` for `null`, `"-"` or `""`, the digits for a
    /// number or a string, [`Reason::BadNumber`] for booleans and nested values, and
    /// [`Reason::UnsupportedEscape`] for an escaped string.
    #[inline]
    pub fn numeric_text(self) -> Result<Option<&'a str>, Reason> {
        match self {
            Value::Num(raw) => Ok(Some(raw)),
            Value::Str { escaped: true, .. } => Err(Reason::UnsupportedEscape),
            Value::Str { raw: "-" | "", .. } | Value::Null => Ok(None),
            Value::Str { raw, .. } => Ok(Some(raw)),
            Value::Bool(_) | Value::Nested(_) => Err(Reason::BadNumber),
        }
    }

    /// An HTTP status (0..=999) from a number or numeric string; `None` when absent.
    #[inline]
    pub fn status(self) -> Result<Option<u16>, Reason> {
        match self.numeric_text()? {
            None => Ok(None),
            Some(t) => num::parse_status(t.as_bytes())
                .map(Some)
                .ok_or(Reason::BadNumber),
        }
    }

    /// A non-negative finite number (integer or float) from a number or numeric
    /// string; `None` when absent.
    #[inline]
    pub fn non_negative_f64(self) -> Result<Option<f64>, Reason> {
        match self.numeric_text()? {
            None => Ok(None),
            Some(t) => num::parse_f64(t.as_bytes())
                .map(Some)
                .ok_or(Reason::BadNumber),
        }
    }

    /// A gRPC status: a number or numeric string that fits `u16`, or a canonical code
    /// name in Envoy's `%GRPC_STATUS%` spellings (`Unavailable`, `UNAVAILABLE`); `None`
    /// when absent. Anything else is [`Reason::BadNumber`].
    #[inline]
    pub fn grpc_status(self) -> Result<Option<u16>, Reason> {
        match self.numeric_text()? {
            None => Ok(None),
            Some(t) => {
                if let Some(v) = num::parse_u64(t.as_bytes()) {
                    return u16::try_from(v).map(Some).map_err(|_| Reason::BadNumber);
                }
                grpc_code_by_name(t).map(Some).ok_or(Reason::BadNumber)
            }
        }
    }
}

/// gRPC canonical codes by name, in the CamelCase (Envoy default `%GRPC_STATUS%`) and
/// UPPER_SNAKE spellings; both `Canceled` and `Cancelled`.
pub fn grpc_code_by_name(name: &str) -> Option<u16> {
    const NAMES: [(&str, &str, u16); 17] = [
        ("Ok", "OK", 0),
        ("Canceled", "CANCELLED", 1),
        ("Unknown", "UNKNOWN", 2),
        ("InvalidArgument", "INVALID_ARGUMENT", 3),
        ("DeadlineExceeded", "DEADLINE_EXCEEDED", 4),
        ("NotFound", "NOT_FOUND", 5),
        ("AlreadyExists", "ALREADY_EXISTS", 6),
        ("PermissionDenied", "PERMISSION_DENIED", 7),
        ("ResourceExhausted", "RESOURCE_EXHAUSTED", 8),
        ("FailedPrecondition", "FAILED_PRECONDITION", 9),
        ("Aborted", "ABORTED", 10),
        ("OutOfRange", "OUT_OF_RANGE", 11),
        ("Unimplemented", "UNIMPLEMENTED", 12),
        ("Internal", "INTERNAL", 13),
        ("Unavailable", "UNAVAILABLE", 14),
        ("DataLoss", "DATA_LOSS", 15),
        ("Unauthenticated", "UNAUTHENTICATED", 16),
    ];
    match name {
        "Cancelled" | "CANCELED" => return Some(1),
        _ => {}
    }
    NAMES
        .iter()
        .find(|(camel, snake, _)| *camel == name || *snake == name)
        .map(|(_, _, code)| *code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Collect members or the error.
    fn members(line: &str) -> Result<Vec<Member<'_>>, ScanError> {
        let mut out = Vec::new();
        scan_object(line, |m| {
            out.push(m);
            Ok::<(), ScanError>(())
        })?;
        Ok(out)
    }

    fn s(raw: &str) -> Value<'_> {
        Value::Str {
            raw,
            escaped: false,
        }
    }

    #[test]
    fn walks_all_value_kinds() {
        let line = r#" { "a" : "x" , "bb":12.5e-3,"c":true,"d":false,"e":null,"f":{"g":[1,"]}"]},"h":[],"i":-0 } "#;
        let m = members(line).unwrap();
        let got: Vec<(&str, Value)> = m.iter().map(|m| (m.key, m.value)).collect();
        assert_eq!(
            got,
            vec![
                ("a", s("x")),
                ("bb", Value::Num("12.5e-3")),
                ("c", Value::Bool(true)),
                ("d", Value::Bool(false)),
                ("e", Value::Null),
                ("f", Value::Nested(r#"{"g":[1,"]}"]}"#)),
                ("h", Value::Nested("[]")),
                ("i", Value::Num("-0")),
            ]
        );
        assert_eq!(members("{}").unwrap(), vec![]);
        assert_eq!(members(" {\t}\r\n").unwrap(), vec![]);
    }

    #[test]
    fn strings_with_escapes() {
        let line = r#"{"k\"ey":"a\\b\"c\u00e9\/","plain":"long string that goes past the word-at-a-time part into memchr2 territory"}"#;
        let m = members(line).unwrap();
        assert_eq!(m[0].key, r#"k\"ey"#);
        assert!(m[0].key_escaped);
        assert_eq!(
            m[0].value,
            Value::Str {
                raw: r#"a\\b\"c\u00e9\/"#,
                escaped: true
            }
        );
        assert!(!m[1].key_escaped);
        assert_eq!(
            m[1].value,
            s("long string that goes past the word-at-a-time part into memchr2 territory")
        );
        // Escape right at a word boundary and after the SWAR prefix.
        let long = format!(r#"{{"k":"{}\"{}"}}"#, "x".repeat(40), "y".repeat(7));
        let m = members(&long).unwrap();
        assert_eq!(m.len(), 1);
        assert!(matches!(m[0].value, Value::Str { escaped: true, .. }));
    }

    #[test]
    fn truncated_vs_bad_syntax() {
        use ScanError::*;
        for (line, want) in [
            ("", Truncated),
            ("   ", Truncated),
            ("{", Truncated),
            (r#"{"a"#, Truncated),
            (r#"{"a""#, Truncated),
            (r#"{"a":"#, Truncated),
            (r#"{"a":"x"#, Truncated),
            (r#"{"a":"x\"#, Truncated),
            (r#"{"a":"x\u00"#, Truncated),
            (r#"{"a":1"#, Truncated),
            (r#"{"a":1."#, Truncated),
            (r#"{"a":1e"#, Truncated),
            (r#"{"a":-"#, Truncated),
            (r#"{"a":tr"#, Truncated),
            (r#"{"a":nul"#, Truncated),
            (r#"{"a":1,"#, Truncated),
            (r#"{"a":{"b":[1,2"#, Truncated),
            (r#"{"a":1 "#, Truncated),
            ("x", BadSyntax),
            ("[1]", BadSyntax),
            (r#"{"a":1}x"#, BadSyntax),
            (r#"{"a":1}}"#, BadSyntax),
            (r#"{"a":1,}"#, BadSyntax),
            (r#"{a:1}"#, BadSyntax),
            (r#"{"a" 1}"#, BadSyntax),
            (r#"{"a":01}"#, BadSyntax),
            (r#"{"a":1.}"#, BadSyntax),
            (r#"{"a":+1}"#, BadSyntax),
            (r#"{"a":tru}"#, BadSyntax),
            (r#"{"a":"\x"}"#, BadSyntax),
            (r#"{"a":"\u12g4"}"#, BadSyntax),
            (r#"{"a":{"b":1]}"#, BadSyntax),
            (r#"{"a":1 "b":2}"#, BadSyntax),
            (r#"{"a":'x'}"#, BadSyntax),
        ] {
            assert_eq!(members(line).err(), Some(want), "{line}");
        }
        let deep = format!(r#"{{"a":{}{}}}"#, "[".repeat(65), "]".repeat(65));
        assert_eq!(members(&deep).err(), Some(BadSyntax));
        let ok = format!(r#"{{"a":{}{}}}"#, "[".repeat(64), "]".repeat(64));
        assert!(members(&ok).is_ok());
    }

    #[test]
    fn callback_error_stops_the_walk() {
        let mut seen = 0;
        let r = scan_object(r#"{"a":1,"b":2,"c":3}"#, |m| {
            seen += 1;
            if m.key == "b" {
                Err(Reason::BadNumber)
            } else {
                Ok(())
            }
        });
        assert_eq!(r, Err(Reason::BadNumber));
        assert_eq!(seen, 2);
    }

    #[test]
    fn value_conversions() {
        assert_eq!(s("-").text_field(), Ok(""));
        assert_eq!(Value::Null.text_field(), Ok(""));
        assert_eq!(Value::Num("7").text_field(), Ok("7"));
        assert_eq!(
            Value::Str {
                raw: "a\\n",
                escaped: true
            }
            .text_field(),
            Err(Reason::UnsupportedEscape)
        );
        assert_eq!(Value::Num("503").status(), Ok(Some(503)));
        assert_eq!(s("503").status(), Ok(Some(503)));
        assert_eq!(s("-").status(), Ok(None));
        assert_eq!(Value::Null.status(), Ok(None));
        assert_eq!(Value::Num("1000").status(), Err(Reason::BadNumber));
        assert_eq!(Value::Num("-1").status(), Err(Reason::BadNumber));
        assert_eq!(Value::Num("200.0").status(), Err(Reason::BadNumber));
        assert_eq!(s("abc").status(), Err(Reason::BadNumber));
        assert_eq!(Value::Bool(true).status(), Err(Reason::BadNumber));
        assert_eq!(Value::Num("12.5").non_negative_f64(), Ok(Some(12.5)));
        assert_eq!(Value::Num("1e400").non_negative_f64(), Err(Reason::BadNumber));
        assert_eq!(Value::Num("-3").non_negative_f64(), Err(Reason::BadNumber));
        assert_eq!(s("Unavailable").grpc_status(), Ok(Some(14)));
        assert_eq!(s("UNAVAILABLE").grpc_status(), Ok(Some(14)));
        assert_eq!(s("OK").grpc_status(), Ok(Some(0)));
        assert_eq!(s("Cancelled").grpc_status(), Ok(Some(1)));
        assert_eq!(Value::Num("14").grpc_status(), Ok(Some(14)));
        assert_eq!(Value::Num("70000").grpc_status(), Err(Reason::BadNumber));
        assert_eq!(s("Bogus").grpc_status(), Err(Reason::BadNumber));
        assert_eq!(s("-").grpc_status(), Ok(None));
    }

    #[test]
    fn swar_finds_the_first_match_only() {
        // A `"` right after a `"`/`\` pair must not be confused by borrow propagation.
        for w in [*b"ab\"\x01cdef", *b"\x00\"aaaaaa", *b"aaaaaaa\\", *b"\"\"\"\"\"\"\"\""] {
            let m = quote_or_backslash(u64::from_le_bytes(w));
            let first = w.iter().position(|&b| b == b'"' || b == b'\\').unwrap();
            assert_eq!((m.trailing_zeros() / 8) as usize, first);
        }
        assert_eq!(quote_or_backslash(u64::from_le_bytes(*b"abcdefgh")), 0);
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(line in ".{0,200}") {
            let _ = members(&line);
        }

        #[test]
        fn arbitrary_json_ish_text_never_panics(line in r#"[{}\[\]":,\\ a0-9.eE+\-tfnul]{0,80}"#) {
            let _ = members(&line);
        }

        #[test]
        fn every_cut_of_a_valid_object_is_an_error(
            keys in proptest::collection::vec("[a-z_]{1,12}", 1..8),
            vals in proptest::collection::vec(r#"("[ -!#-\[\]-~]{0,40}"|-?[1-9][0-9]{0,5}(\.[0-9]{1,3})?|true|null|\{"x":\[1,"}"\]\})"#, 8),
        ) {
            let body: Vec<String> = keys.iter().zip(vals.iter()).map(|(k, v)| format!("\"{k}\":{v}")).collect();
            let line = format!("{{{}}}", body.join(","));
            prop_assert_eq!(members(&line).map(|m| m.len()), Ok(keys.len()));
            for cut in 0..line.len() {
                // Every prefix of valid JSON is a valid prefix: always Truncated.
                let r = members(&line[..cut]);
                prop_assert_eq!(r, Err(ScanError::Truncated), "cut at {}: {:?}", cut, &line[..cut]);
            }
        }
    }
}
