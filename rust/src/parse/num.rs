//! Small allocation-free number parsers for log fields.

/// Parse an unsigned decimal integer (no sign, no spaces). `None` on any other byte,
/// on empty input or on overflow.
#[inline]
pub fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in s {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + d as u64;
    }
    Some(v)
}

/// Parse an HTTP status code (0..=999).
#[inline]
pub fn parse_status(s: &[u8]) -> Option<u16> {
    if s.is_empty() || s.len() > 3 {
        return None;
    }
    parse_u64(s).map(|v| v as u16)
}

/// Parse a non-negative decimal number such as `12`, `0.032` or `1e3`.
/// Integers take the fast path; anything else goes to the standard library parser.
#[inline]
pub fn parse_f64(s: &[u8]) -> Option<f64> {
    if let Some(v) = parse_u64(s) {
        return Some(v as f64);
    }
    let text = std::str::from_utf8(s).ok()?;
    let v: f64 = text.parse().ok()?;
    if v.is_finite() && v >= 0.0 {
        Some(v)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_and_floats() {
        assert_eq!(parse_u64(b"0"), Some(0));
        assert_eq!(parse_u64(b"18446744073709551615"), None); // 20 digits: refused
        assert_eq!(parse_u64(b"12a"), None);
        assert_eq!(parse_u64(b""), None);
        assert_eq!(parse_status(b"503"), Some(503));
        assert_eq!(parse_status(b"5030"), None);
        assert_eq!(parse_f64(b"0.032"), Some(0.032));
        assert_eq!(parse_f64(b"-1"), None);
        assert_eq!(parse_f64(b"NaN"), None);
        assert_eq!(parse_f64(b"inf"), None);
    }
}
