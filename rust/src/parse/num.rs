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

/// `b[from..end]` as an unsigned decimal integer, the same answer as
/// `parse_u64(&b[from..end])`, without a loop for tokens of 1 to 8 bytes that end at
/// least 8 bytes into `b`: one 8-byte load ending at `end`, a digit check of the token's
/// bytes and three multiply-shift steps that combine pairs, quads and octets of digits.
/// A loop over the digits ends after a data-dependent number of steps, which a branch
/// predictor misses about once in every other line of an access log; this has no
/// data-dependent branch on valid input.
#[inline(always)]
pub fn parse_u64_at(b: &[u8], from: usize, end: usize) -> Option<u64> {
    let len = end.wrapping_sub(from);
    let word = match b.get(end.wrapping_sub(8)..end) {
        Some(w) if (1..=8).contains(&len) => w,
        _ => return parse_u64(b.get(from..end)?),
    };
    let w = u64::from_le_bytes(word.try_into().ok()?);
    // Little-endian: the token is the top `len` bytes of `w`, its first digit lowest.
    let keep = u64::MAX << (8 * (8 - len));
    let (w, zeros, high) = (
        w & keep,
        0x3030_3030_3030_3030 & keep,
        0xF0F0_F0F0_F0F0_F0F0,
    );
    // Each kept byte is 0x30..=0x39: high nibble 3, and adding 6 keeps it 3 (no carry
    // crosses a byte: every byte is at most 0x3F + 6 after the first test).
    let digits_ok = w & high == zeros && (w + (0x0606_0606_0606_0606 & keep)) & high == zeros;
    if !digits_ok {
        return None;
    }
    // The bytes below the token are zero: leading zeros of an 8-digit number.
    let v = w - zeros;
    let v = (v * 10 + (v >> 8)) & 0x00FF_00FF_00FF_00FF;
    let v = (v * 100 + (v >> 16)) & 0x0000_FFFF_0000_FFFF;
    Some((v * 10000 + (v >> 32)) & 0xFFFF_FFFF)
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
    use proptest::prelude::*;

    proptest! {
        /// Same answer as the loop for any token at any place, digits or not.
        #[test]
        fn parse_u64_at_matches_parse_u64(
            bytes in proptest::collection::vec(
                prop_oneof![4 => b'0'..=b'9', 1 => any::<u8>(), 1 => Just(b' ')], 0..40),
            from in 0usize..40,
            len in 0usize..24,
        ) {
            let end = from + len;
            let want = bytes.get(from..end).and_then(parse_u64);
            prop_assert_eq!(parse_u64_at(&bytes, from, end), want);
        }
    }

    #[test]
    fn parse_u64_at_edges() {
        let line = b"xxxxxxxx 0 12 99999999 100000000 12a :9 /9 ";
        let tok = |t: &[u8]| {
            let from = line.windows(t.len()).position(|w| w == t).unwrap();
            parse_u64_at(line, from, from + t.len())
        };
        assert_eq!(tok(b"0"), Some(0));
        assert_eq!(tok(b"12"), Some(12));
        assert_eq!(tok(b"99999999"), Some(99_999_999));
        assert_eq!(tok(b"100000000"), Some(100_000_000)); // 9 digits: the loop
        assert_eq!(tok(b"12a"), None);
        assert_eq!(tok(b":9"), None); // ':' is 0x3A, one above '9'
        assert_eq!(tok(b"/9"), None); // '/' is 0x2F, one below '0'
        assert_eq!(parse_u64_at(b"7", 0, 1), Some(7)); // too close to the start: the loop
        assert_eq!(parse_u64_at(line, 9, 9), None); // empty
    }

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
