//! Container-runtime wrappers around log lines: CRI (`<time> stdout F <line>`) and
//! Docker json-file (`{"log":"<line>\n","stream":"stdout","time":"..."}`).
//!
//! CRI and plain lines are returned borrowed (no allocation, no copy). A Docker envelope
//! holds a JSON-escaped string, so it is decoded into a caller-owned `String` that the
//! caller reuses across lines.
//!
//! Split lines: CRI writes a long line as several `P` (partial) records ended by one `F`
//! record, and Docker writes chunks of a long line without the trailing `\n`. This module
//! reports that (`partial`), it does not reassemble: reassembly needs a buffer that spans
//! lines and belongs to the reader.

/// How lines are wrapped.
///
/// `Cri` and `Docker` were added next to `Auto`/`None`: when the reader knows the wrapper
/// (a `/var/log/pods` path is CRI), forcing it skips the other check and avoids a false
/// positive of `Auto` on an NDJSON payload whose first key happens to be `log`.
/// A line that does not have the forced wrapper passes through unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrapping {
    /// Decide per line: CRI prefix or Docker JSON envelope when present, else raw.
    Auto,
    /// Lines are the access log itself.
    None,
    /// CRI log files (`/var/log/pods/...`): strip the `<time> <stream> <tag> ` prefix.
    Cri,
    /// Docker json-file logs: decode the `log` value of the envelope.
    Docker,
}

/// The payload of one line after unwrapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unwrapped<'a> {
    /// The payload is a slice of the line (plain line or CRI). `partial` is CRI's `P` tag.
    Borrowed { payload: &'a str, partial: bool },
    /// The payload was decoded into the caller's `out`. `partial`: the `log` value did
    /// not end with a newline (Docker splits lines longer than 16 KiB that way).
    Decoded { partial: bool },
}

/// Unwrap `line` according to `wrapping`. Allocation-free except for growing `out`
/// (cleared first) when a Docker envelope is decoded.
#[inline]
pub fn unwrap_line<'a>(line: &'a str, wrapping: Wrapping, out: &mut String) -> Unwrapped<'a> {
    let try_cri = matches!(wrapping, Wrapping::Auto | Wrapping::Cri);
    let try_docker = matches!(wrapping, Wrapping::Auto | Wrapping::Docker);
    if try_cri {
        if let Some(cri) = parse_cri(line) {
            return Unwrapped::Borrowed {
                payload: cri.payload,
                partial: cri.partial,
            };
        }
    }
    if try_docker {
        if let Some(partial) = decode_docker(line, out) {
            return Unwrapped::Decoded { partial };
        }
    }
    Unwrapped::Borrowed {
        payload: line,
        partial: false,
    }
}

/// The parts of a CRI log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CriLine<'a> {
    /// The runtime's receive time (RFC 3339 with ns), unparsed.
    pub time: &'a str,
    /// `true` for stderr, `false` for stdout.
    pub stderr: bool,
    /// Tag `P`: this is a fragment of a longer line.
    pub partial: bool,
    /// The container's output line.
    pub payload: &'a str,
}

/// Split a CRI line `2026-08-13T10:00:00.123456789Z stdout F <payload>`; `None` when the
/// line does not have that shape. Cheap: a few byte checks before one short search.
#[inline]
pub fn parse_cri(line: &str) -> Option<CriLine<'_>> {
    let b = line.as_bytes();
    // `YYYY-MM-DDT`: digit first, dashes at 4 and 7, `T` at 10.
    if !b.first()?.is_ascii_digit()
        || b.get(4) != Some(&b'-')
        || b.get(7) != Some(&b'-')
        || b.get(10) != Some(&b'T')
    {
        return None;
    }
    // The timestamp is at most ~35 bytes (ns + offset); bound the search.
    let window = b.get(..b.len().min(48))?;
    let sp = memchr::memchr(b' ', window)?;
    let rest = b.get(sp + 1..)?;
    let stderr = match rest.get(..7)? {
        b"stdout " => false,
        b"stderr " => true,
        _ => return None,
    };
    let partial = match rest.get(7)? {
        b'F' => false,
        b'P' => true,
        _ => return None,
    };
    // After the tag: a space then the payload, or end of line (empty payload).
    let payload_start = match rest.get(8) {
        None => b.len(),
        Some(b' ') => sp + 1 + 9,
        Some(_) => return None,
    };
    Some(CriLine {
        // All split points are ASCII bytes, so these are char boundaries.
        time: line.get(..sp)?,
        stderr,
        partial,
        payload: line.get(payload_start..)?,
    })
}

/// The access-log payload of a CRI line, borrowed; the line itself when it is not CRI.
#[inline]
pub fn unwrap_cri(line: &str) -> &str {
    match parse_cri(line) {
        Some(cri) => cri.payload,
        None => line,
    }
}

/// Decode a Docker json-file envelope's `log` value into `out` (cleared first), without
/// its trailing newline. Returns false if `line` is not such an envelope.
pub fn unwrap_docker_into(line: &str, out: &mut String) -> bool {
    decode_docker(line, out).is_some()
}

const DOCKER_PREFIX: &[u8] = b"{\"log\":\"";

/// Cheap test for a Docker json-file envelope (`{"log":"` first, as Docker writes it).
#[inline]
pub fn is_docker_envelope(line: &str) -> bool {
    line.as_bytes().starts_with(DOCKER_PREFIX)
}

/// Decode the `log` string; `Some(partial)` on success. `out` is cleared first and may hold
/// garbage on failure.
fn decode_docker(line: &str, out: &mut String) -> Option<bool> {
    if !is_docker_envelope(line) {
        return None;
    }
    out.clear();
    let body = line.get(DOCKER_PREFIX.len()..)?;
    let end = decode_json_string(body, out)?;
    // The string must be followed by the next member or the end of the object.
    match body.as_bytes().get(end) {
        Some(b',') | Some(b'}') => {}
        _ => return None,
    }
    let partial = !out.ends_with('\n');
    if !partial {
        out.pop();
        if out.ends_with('\r') {
            out.pop();
        }
    }
    Some(partial)
}

/// Decode the JSON string body `s` (after the opening quote) into `out`; returns the index
/// just past the closing quote. `None` on an unterminated string or a bad escape.
pub fn decode_json_string(s: &str, out: &mut String) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    loop {
        let rel = memchr::memchr2(b'"', b'\\', b.get(i..)?)?;
        let stop = i + rel;
        // Copy the unescaped run; `"` and `\` are ASCII so `stop` is a char boundary.
        out.push_str(s.get(i..stop)?);
        if b[stop] == b'"' {
            return Some(stop + 1);
        }
        let esc = *b.get(stop + 1)?;
        i = stop + 2;
        let c = match esc {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let hi = hex4(b.get(i..i + 4)?)?;
                i += 4;
                if (0xD800..0xDC00).contains(&hi) {
                    // High surrogate: combine with a following `\uDC00`-`\uDFFF`.
                    let lo = match (b.get(i..i + 2), b.get(i + 2..i + 6)) {
                        (Some(b"\\u"), Some(h)) => hex4(h).filter(|v| (0xDC00..0xE000).contains(v)),
                        _ => None,
                    };
                    match lo {
                        Some(lo) => {
                            i += 6;
                            let cp = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                            char::from_u32(cp).unwrap_or('\u{FFFD}')
                        }
                        None => '\u{FFFD}', // lone high surrogate
                    }
                } else {
                    // Lone low surrogates are not chars: replaced.
                    char::from_u32(hi).unwrap_or('\u{FFFD}')
                }
            }
            _ => return None,
        };
        out.push(c);
    }
}

#[inline]
fn hex4(h: &[u8]) -> Option<u32> {
    let mut v = 0u32;
    for &c in h.get(..4)? {
        let d = (c as char).to_digit(16)?;
        v = v * 16 + d;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const CRI: &str =
        "2026-08-13T10:00:00.123456789Z stdout F [2026-11-26T05:06:07.123Z] \"GET / HTTP/1.1\" 200";

    #[test]
    fn cri_full_and_partial() {
        let c = parse_cri(CRI).unwrap();
        assert_eq!(c.time, "2026-08-13T10:00:00.123456789Z");
        assert!(!c.stderr && !c.partial);
        assert_eq!(
            c.payload,
            "[2026-11-26T05:06:07.123Z] \"GET / HTTP/1.1\" 200"
        );
        let p = parse_cri("2026-08-13T10:00:00+02:00 stderr P abc").unwrap();
        assert!(p.stderr && p.partial);
        assert_eq!(p.payload, "abc");
        assert_eq!(unwrap_cri("2026-08-13T10:00:00Z stdout F"), "");
        // Not CRI: passes through.
        for s in [
            "2026-08-13T10:00:00Z stdin F x",
            "2026-08-13T10:00:00Z stdout X x",
            "2026-08-13T10:00:00Z stdout Fx",
            "2026-08-13 10:00:00Z stdout F x",
            "10.0.0.1 - - [25/Feb/2026:10:30:15 +0000] \"GET / HTTP/1.1\" 200",
            "",
        ] {
            assert_eq!(parse_cri(s), None, "{s}");
            assert_eq!(unwrap_cri(s), s);
        }
    }

    #[test]
    fn docker_decodes_escapes() {
        let line = r#"{"log":"[2026-11-26T05:06:07.123Z] \"GET /a\\b HTTP/1.1\" \u003cx\u003e \ud83d\ude00 \u00e9\t/\/\n","stream":"stdout","time":"2026-08-13T10:00:00.1Z"}"#;
        let mut out = String::new();
        assert!(unwrap_docker_into(line, &mut out));
        assert_eq!(
            out,
            "[2026-11-26T05:06:07.123Z] \"GET /a\\b HTTP/1.1\" <x> 😀 é\t//"
        );
        match unwrap_line(line, Wrapping::Auto, &mut out) {
            Unwrapped::Decoded { partial } => assert!(!partial),
            other => panic!("{other:?}"),
        }
        // No trailing newline: a partial chunk.
        let chunk = r#"{"log":"abc","stream":"stdout","time":"t"}"#;
        assert_eq!(
            unwrap_line(chunk, Wrapping::Docker, &mut out),
            Unwrapped::Decoded { partial: true }
        );
        assert_eq!(out, "abc");
        // Lone surrogates become U+FFFD; reuse clears `out`.
        assert!(unwrap_docker_into(r#"{"log":"\ud800x\udc00\n"}"#, &mut out));
        assert_eq!(out, "\u{FFFD}x\u{FFFD}");
        // Malformed envelopes are refused.
        for bad in [
            r#"{"log":"abc"#,
            r#"{"log":"a\qb\n"}"#,
            r#"{"log":"a\u12"}"#,
            r#"{"log":"abc" x"#,
            r#"{"stream":"stdout","log":"x"}"#,
        ] {
            assert!(!unwrap_docker_into(bad, &mut out), "{bad}");
        }
    }

    #[test]
    fn wrapping_modes() {
        let mut out = String::new();
        let plain = "[2026-11-26T05:06:07.123Z] \"GET / HTTP/1.1\" 200";
        for w in [
            Wrapping::Auto,
            Wrapping::None,
            Wrapping::Cri,
            Wrapping::Docker,
        ] {
            assert_eq!(
                unwrap_line(plain, w, &mut out),
                Unwrapped::Borrowed {
                    payload: plain,
                    partial: false
                }
            );
        }
        assert_eq!(
            unwrap_line(CRI, Wrapping::None, &mut out),
            Unwrapped::Borrowed {
                payload: CRI,
                partial: false
            }
        );
        assert_eq!(
            unwrap_line(CRI, Wrapping::Docker, &mut out),
            Unwrapped::Borrowed {
                payload: CRI,
                partial: false
            }
        );
        assert_eq!(
            unwrap_line(CRI, Wrapping::Cri, &mut out),
            Unwrapped::Borrowed {
                payload: plain,
                partial: false
            }
        );
        let docker = r#"{"log":"x\n"}"#;
        assert!(matches!(
            unwrap_line(docker, Wrapping::Cri, &mut out),
            Unwrapped::Borrowed { .. }
        ));
    }

    proptest! {
        #[test]
        fn never_panics(s in any::<String>()) {
            let mut out = String::new();
            let _ = unwrap_line(&s, Wrapping::Auto, &mut out);
            let cri = format!("2026-08-13T10:00:00Z stdout F {s}");
            prop_assert_eq!(unwrap_cri(&cri), s.as_str());
            let _ = unwrap_docker_into(&format!("{{\"log\":\"{s}"), &mut out);
        }

        #[test]
        fn docker_roundtrip(s in any::<String>()) {
            // Escape like a JSON encoder would (\u for controls), then decode.
            let mut esc = String::new();
            for c in s.chars() {
                match c {
                    '"' => esc.push_str("\\\""),
                    '\\' => esc.push_str("\\\\"),
                    c if (c as u32) < 0x20 => esc.push_str(&format!("\\u{:04x}", c as u32)),
                    c if (c as u32) > 0xFFFF => {
                        let v = c as u32 - 0x10000;
                        esc.push_str(&format!("\\u{:04x}\\u{:04x}", 0xD800 + (v >> 10), 0xDC00 + (v & 0x3FF)));
                    }
                    c => esc.push(c),
                }
            }
            let line = format!("{{\"log\":\"{esc}\\n\",\"stream\":\"stdout\"}}");
            let mut out = String::new();
            prop_assert!(unwrap_docker_into(&line, &mut out));
            prop_assert_eq!(out.trim_end_matches('\r'), s.trim_end_matches('\r'));
        }
    }
}
