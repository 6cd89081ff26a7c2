//! Timestamp parsing without allocation: RFC 3339 (Envoy, Linkerd) and nginx `$time_local`.

/// Days since 1970-01-01 for a proleptic Gregorian date (Howard Hinnant's algorithm).
#[inline]
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

#[inline]
fn digits(s: &[u8], at: usize, n: usize) -> Option<u32> {
    let part = s.get(at..at + n)?;
    let mut v = 0u32;
    for &b in part {
        let d = b.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + d as u32;
    }
    Some(v)
}

fn check_date(mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Option<()> {
    if (1..=12).contains(&mo) && (1..=31).contains(&d) && h < 24 && mi < 60 && s <= 60 {
        Some(())
    } else {
        None
    }
}

/// Parse RFC 3339 / ISO 8601 such as `2026-11-26T05:06:07.123Z`,
/// `2022-08-23T20:33:42.436964052Z` or `2026-11-26T05:06:07+01:00` into ms since the epoch.
/// A space instead of `T` is accepted; a missing offset means UTC.
pub fn parse_rfc3339_ms(s: &[u8]) -> Option<i64> {
    if s.len() < 19 || s[4] != b'-' || s[7] != b'-' || s[13] != b':' || s[16] != b':' {
        return None;
    }
    if s[10] != b'T' && s[10] != b't' && s[10] != b' ' {
        return None;
    }
    let y = digits(s, 0, 4)? as i64;
    let mo = digits(s, 5, 2)?;
    let d = digits(s, 8, 2)?;
    let h = digits(s, 11, 2)?;
    let mi = digits(s, 14, 2)?;
    let sec = digits(s, 17, 2)?;
    check_date(mo, d, h, mi, sec)?;
    let mut i = 19;
    let mut ms: i64 = 0;
    if i < s.len() && (s[i] == b'.' || s[i] == b',') {
        i += 1;
        let start = i;
        while i < s.len() && s[i].is_ascii_digit() {
            if i - start < 3 {
                ms = ms * 10 + (s[i] - b'0') as i64;
            }
            i += 1;
        }
        let n = i - start;
        if n == 0 {
            return None;
        }
        for _ in n..3 {
            ms *= 10;
        }
    }
    let mut offset_s: i64 = 0;
    if i < s.len() {
        match s[i] {
            b'Z' | b'z' => i += 1,
            b'+' | b'-' => {
                let sign = if s[i] == b'-' { -1 } else { 1 };
                let oh = digits(s, i + 1, 2)? as i64;
                let om = if s.get(i + 3) == Some(&b':') {
                    let v = digits(s, i + 4, 2)? as i64;
                    i += 6;
                    v
                } else {
                    let v = digits(s, i + 3, 2)? as i64;
                    i += 5;
                    v
                };
                offset_s = sign * (oh * 3600 + om * 60);
            }
            _ => return None,
        }
    }
    if i != s.len() {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    let secs = days * 86400 + h as i64 * 3600 + mi as i64 * 60 + sec as i64 - offset_s;
    Some(secs * 1000 + ms)
}

/// Parse nginx `$time_local`: `25/Feb/2026:10:30:15 +0000` into ms since the epoch.
pub fn parse_nginx_time_ms(s: &[u8]) -> Option<i64> {
    if s.len() != 26 || s[2] != b'/' || s[6] != b'/' || s[11] != b':' || s[20] != b' ' {
        return None;
    }
    let d = digits(s, 0, 2)?;
    let mo = match &s[3..6] {
        b"Jan" => 1,
        b"Feb" => 2,
        b"Mar" => 3,
        b"Apr" => 4,
        b"May" => 5,
        b"Jun" => 6,
        b"Jul" => 7,
        b"Aug" => 8,
        b"Sep" => 9,
        b"Oct" => 10,
        b"Nov" => 11,
        b"Dec" => 12,
        _ => return None,
    };
    let y = digits(s, 7, 4)? as i64;
    let h = digits(s, 12, 2)?;
    let mi = digits(s, 15, 2)?;
    let sec = digits(s, 18, 2)?;
    check_date(mo, d, h, mi, sec)?;
    let sign: i64 = match s[21] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let oh = digits(s, 22, 2)? as i64;
    let om = digits(s, 24, 2)? as i64;
    let days = days_from_civil(y, mo, d);
    let secs =
        days * 86400 + h as i64 * 3600 + mi as i64 * 60 + sec as i64 - sign * (oh * 3600 + om * 60);
    Some(secs * 1000)
}

/// Format ms since the epoch as RFC 3339 UTC with milliseconds (`2026-11-26T05:06:07.123Z`).
pub fn format_rfc3339_ms(ms: i64, out: &mut Vec<u8>) {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86400);
    let sod = secs.rem_euclid(86400);
    let (y, m, d) = civil_from_days(days);
    use std::io::Write;
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        y,
        m,
        d,
        sod / 3600,
        (sod / 60) % 60,
        sod % 60,
        milli
    );
}

/// Inverse of [`days_from_civil`].
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_variants() {
        // 2026-11-26T05:06:07.123Z
        let base = parse_rfc3339_ms(b"2026-11-26T05:06:07Z").unwrap();
        assert_eq!(base % 1000, 0);
        assert_eq!(
            parse_rfc3339_ms(b"2026-11-26T05:06:07.123Z"),
            Some(base + 123)
        );
        assert_eq!(
            parse_rfc3339_ms(b"2026-11-26T05:06:07.1Z"),
            Some(base + 100)
        );
        assert_eq!(
            parse_rfc3339_ms(b"2026-11-26T05:06:07.436964052Z"),
            Some(base + 436)
        );
        assert_eq!(parse_rfc3339_ms(b"2026-11-26T06:06:07+01:00"), Some(base));
        assert_eq!(parse_rfc3339_ms(b"2026-11-26T05:06:07"), Some(base));
        assert_eq!(parse_rfc3339_ms(b"2026-13-26T05:06:07Z"), None);
        assert_eq!(parse_rfc3339_ms(b"2026-11-26T05:06:07.Z"), None);
        assert_eq!(parse_rfc3339_ms(b"2026-11-26T05:06:07Zjunk"), None);
        assert_eq!(parse_rfc3339_ms(b"1970-01-01T00:00:00Z"), Some(0));
    }

    #[test]
    fn nginx_time() {
        let a = parse_nginx_time_ms(b"25/Feb/2026:10:30:15 +0000").unwrap();
        let b = parse_rfc3339_ms(b"2026-02-25T10:30:15Z").unwrap();
        assert_eq!(a, b);
        let c = parse_nginx_time_ms(b"25/Feb/2026:11:30:15 +0100").unwrap();
        assert_eq!(c, b);
        assert_eq!(parse_nginx_time_ms(b"25/Foo/2026:10:30:15 +0000"), None);
    }

    #[test]
    fn format_roundtrip() {
        let ms = parse_rfc3339_ms(b"2026-11-26T05:06:07.123Z").unwrap();
        let mut out = Vec::new();
        format_rfc3339_ms(ms, &mut out);
        assert_eq!(out, b"2026-11-26T05:06:07.123Z");
    }
}
