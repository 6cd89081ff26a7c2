//! Allocation-free formatting into a `Vec<u8>`: integers, fixed-point decimals,
//! timestamps, IPv4 addresses, hex and UUIDs.

use crate::parse::time::civil_from_days;

const HEX: &[u8; 16] = b"0123456789abcdef";
const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// Append an unsigned decimal integer.
#[inline]
pub fn push_u64(out: &mut Vec<u8>, mut v: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    out.extend_from_slice(&buf[i..]);
}

/// Append `v` zero-padded to `width` digits (`v` must fit).
#[inline]
pub fn push_padded(out: &mut Vec<u8>, v: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let mut x = v;
    for i in (0..width.min(20)).rev() {
        buf[i] = b'0' + (x % 10) as u8;
        x /= 10;
    }
    out.extend_from_slice(&buf[..width.min(20)]);
}

/// Append `thousandths / 1000` with exactly three decimals (`12345` → `12.345`).
#[inline]
pub fn push_milli(out: &mut Vec<u8>, thousandths: u64) {
    push_u64(out, thousandths / 1000);
    out.push(b'.');
    push_padded(out, thousandths % 1000, 3);
}

/// Append `n` random-looking lowercase hex digits taken from `bits` (up to 16).
#[inline]
pub fn push_hex(out: &mut Vec<u8>, bits: u64, n: usize) {
    for i in (0..n.min(16)).rev() {
        out.push(HEX[((bits >> (i * 4)) & 0xf) as usize]);
    }
}

/// Append a version-4 UUID (`8-4-4-4-12` lowercase hex) built from 128 random bits.
pub fn push_uuid(out: &mut Vec<u8>, hi: u64, lo: u64) {
    let hi = (hi & !0xf000) | 0x4000; // version nibble
    let lo = (lo & !(0xc << 60)) | (0x8 << 60); // RFC 4122 variant
    push_hex(out, hi >> 32, 8);
    out.push(b'-');
    push_hex(out, hi >> 16, 4);
    out.push(b'-');
    push_hex(out, hi, 4);
    out.push(b'-');
    push_hex(out, lo >> 48, 4);
    out.push(b'-');
    push_hex(out, lo, 12);
}

/// Append a dotted IPv4 address.
#[inline]
pub fn push_ip(out: &mut Vec<u8>, ip: [u8; 4]) {
    for (i, octet) in ip.iter().enumerate() {
        if i > 0 {
            out.push(b'.');
        }
        push_u64(out, *octet as u64);
    }
}

/// Append `ip:port`.
#[inline]
pub fn push_addr(out: &mut Vec<u8>, ip: [u8; 4], port: u16) {
    push_ip(out, ip);
    out.push(b':');
    push_u64(out, port as u64);
}

/// Caches the date-and-time text of the last second formatted (consecutive lines
/// share their second almost always).
#[derive(Debug, Clone)]
pub struct Clock {
    sec: i64,
    /// `YYYY-MM-DDTHH:MM:SS`
    rfc: [u8; 19],
    /// `DD/Mon/YYYY:HH:MM:SS`
    nginx: [u8; 20],
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            sec: i64::MIN,
            rfc: [0; 19],
            nginx: [0; 20],
        }
    }
}

impl Clock {
    fn set(&mut self, sec: i64) {
        if sec == self.sec {
            return;
        }
        self.sec = sec;
        let (y, mo, d) = civil_from_days(sec.div_euclid(86_400));
        let sod = sec.rem_euclid(86_400) as u64;
        let (h, mi, s) = (sod / 3600, (sod / 60) % 60, sod % 60);
        let y = y.clamp(0, 9999) as u64;
        let (mo, d) = (mo as u64, d as u64);
        let r = &mut self.rfc;
        put(r, 0, y, 4);
        r[4] = b'-';
        put(r, 5, mo, 2);
        r[7] = b'-';
        put(r, 8, d, 2);
        r[10] = b'T';
        put_hms(r, 11, h, mi, s);
        let n = &mut self.nginx;
        put(n, 0, d, 2);
        n[2] = b'/';
        n[3..6].copy_from_slice(MONTHS[(mo as usize).clamp(1, 12) - 1]);
        n[6] = b'/';
        put(n, 7, y, 4);
        n[11] = b':';
        put_hms(n, 12, h, mi, s);
    }

    /// RFC 3339 UTC with milliseconds: `2026-11-26T05:06:07.123Z` (Envoy `%START_TIME%`).
    pub fn push_rfc3339_ms(&mut self, out: &mut Vec<u8>, ms: i64) {
        self.set(ms.div_euclid(1000));
        out.extend_from_slice(&self.rfc);
        out.push(b'.');
        push_padded(out, ms.rem_euclid(1000) as u64, 3);
        out.push(b'Z');
    }

    /// RFC 3339 UTC with nanoseconds: `2022-08-23T20:33:42.436964052Z` (Linkerd).
    pub fn push_rfc3339_ns(&mut self, out: &mut Vec<u8>, ms: i64, sub_ms_ns: u32) {
        self.set(ms.div_euclid(1000));
        out.extend_from_slice(&self.rfc);
        out.push(b'.');
        push_padded(out, ms.rem_euclid(1000) as u64, 3);
        push_padded(out, (sub_ms_ns % 1_000_000) as u64, 6);
        out.push(b'Z');
    }

    /// nginx `$time_local` in UTC: `25/Feb/2026:10:30:15 +0000` (second resolution).
    pub fn push_nginx(&mut self, out: &mut Vec<u8>, ms: i64) {
        self.set(ms.div_euclid(1000));
        out.extend_from_slice(&self.nginx);
        out.extend_from_slice(b" +0000");
    }
}

/// Write `v` zero-padded to `width` digits at `buf[at..]` (fixed positions only).
fn put(buf: &mut [u8], at: usize, mut v: u64, width: usize) {
    for i in (at..at + width).rev() {
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
    }
}

/// `HH:MM:SS` at `buf[at..at + 8]`.
fn put_hms(buf: &mut [u8], at: usize, h: u64, mi: u64, s: u64) {
    put(buf, at, h, 2);
    buf[at + 2] = b':';
    put(buf, at + 3, mi, 2);
    buf[at + 5] = b':';
    put(buf, at + 6, s, 2);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::time::{parse_nginx_time_ms, parse_rfc3339_ms};

    fn s(f: impl FnOnce(&mut Vec<u8>)) -> String {
        let mut v = Vec::new();
        f(&mut v);
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn numbers() {
        assert_eq!(s(|v| push_u64(v, 0)), "0");
        assert_eq!(s(|v| push_u64(v, u64::MAX)), u64::MAX.to_string());
        assert_eq!(s(|v| push_padded(v, 7, 3)), "007");
        assert_eq!(s(|v| push_milli(v, 12_345)), "12.345");
        assert_eq!(s(|v| push_milli(v, 32)), "0.032");
        assert_eq!(s(|v| push_hex(v, 0xabc, 4)), "0abc");
        assert_eq!(
            s(|v| push_addr(v, [10, 244, 1, 17], 9080)),
            "10.244.1.17:9080"
        );
    }

    #[test]
    fn uuid_shape() {
        let u = s(|v| push_uuid(v, u64::MAX, 0));
        assert_eq!(u, "ffffffff-ffff-4fff-8000-000000000000");
        let u = s(|v| push_uuid(v, 0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210));
        assert_eq!(u, "01234567-89ab-4def-bedc-ba9876543210");
    }

    #[test]
    fn timestamps_round_trip_through_the_shared_parsers() {
        let mut c = Clock::default();
        for ms in [0i64, 1_764_133_567_123, 1_772_015_415_000, 951_782_400_999] {
            let t = s(|v| c.push_rfc3339_ms(v, ms));
            assert_eq!(parse_rfc3339_ms(t.as_bytes()), Some(ms), "{t}");
            let t = s(|v| c.push_rfc3339_ns(v, ms, 964_052));
            assert_eq!(t.len(), 30);
            assert_eq!(parse_rfc3339_ms(t.as_bytes()), Some(ms), "{t}");
            let t = s(|v| c.push_nginx(v, ms));
            assert_eq!(
                parse_nginx_time_ms(t.as_bytes()),
                Some(ms / 1000 * 1000),
                "{t}"
            );
        }
        assert_eq!(
            s(|v| c.push_rfc3339_ms(v, 1_764_133_567_123)),
            "2025-11-26T05:06:07.123Z"
        );
        assert_eq!(
            s(|v| c.push_nginx(v, 1_772_015_415_000)),
            "25/Feb/2026:10:30:15 +0000"
        );
    }
}
