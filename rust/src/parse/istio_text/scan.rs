//! Byte search for the text parsers, tuned for log fields: most fields are a few bytes
//! long, where a `memchr` call costs more than the search itself (dispatch, setup). So the
//! first bytes are searched eight at a time in a `u64` (SWAR, inlined, no branches per
//! byte), and only a field longer than that falls back to SIMD `memchr`/`memrchr`.

use memchr::{memchr, memrchr};

const LO: u64 = 0x0101_0101_0101_0101;
const LO7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
const HI: u64 = 0x8080_8080_8080_8080;
/// Bytes searched with SWAR before handing over to `memchr`.
const SWAR_SPAN: usize = 32;

/// High bit set in each byte of `w` that equals the byte splatted in `splat`. Exact (no
/// false positives from borrows): `(x & 0x7f) + 0x7f` sets the high bit of every non-zero
/// 7-bit part without carrying into the next byte.
#[inline(always)]
fn eq_mask(w: u64, splat: u64) -> u64 {
    let x = w ^ splat;
    !(((x & LO7).wrapping_add(LO7)) | x) & HI
}

#[inline(always)]
fn word(b: &[u8], at: usize) -> Option<u64> {
    let bytes: [u8; 8] = b.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// Position of the first `needle` at or after `from`.
#[inline(always)]
pub(crate) fn find(b: &[u8], from: usize, needle: u8) -> Option<usize> {
    let splat = LO * needle as u64;
    let mut i = from;
    while let Some(w) = word(b, i) {
        let m = eq_mask(w, splat);
        if m != 0 {
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
        if i - from >= SWAR_SPAN {
            return memchr(needle, b.get(i..)?).map(|p| i + p);
        }
    }
    b.get(i..)?.iter().position(|&c| c == needle).map(|p| i + p)
}

/// Position of the last `needle` in `b[lo..end]`.
#[inline(always)]
pub(crate) fn rfind(b: &[u8], lo: usize, end: usize, needle: u8) -> Option<usize> {
    let splat = LO * needle as u64;
    let mut e = end;
    while e >= lo + 8 {
        let w = word(b, e - 8)?;
        let m = eq_mask(w, splat);
        if m != 0 {
            return Some(e - 8 + ((63 - m.leading_zeros()) / 8) as usize);
        }
        e -= 8;
        if end - e >= SWAR_SPAN {
            return memrchr(needle, b.get(lo..e)?).map(|p| lo + p);
        }
    }
    b.get(lo..e)?
        .iter()
        .rposition(|&c| c == needle)
        .map(|p| lo + p)
}

/// Positions of the first `N` bytes equal to `needle` in `hay`, and whether there are more
/// than `N`. `None` in the array where there are fewer.
#[inline(always)]
pub(crate) fn positions<const N: usize>(hay: &[u8], needle: u8) -> ([usize; N], usize, bool) {
    let splat = LO * needle as u64;
    let mut out = [0usize; N];
    let mut n = 0;
    let mut i = 0;
    while let Some(w) = word(hay, i) {
        let mut m = eq_mask(w, splat);
        while m != 0 {
            if n == N {
                return (out, n, true);
            }
            out[n] = i + (m.trailing_zeros() / 8) as usize;
            n += 1;
            m &= m - 1;
        }
        i += 8;
    }
    for (j, &c) in hay.get(i..).unwrap_or_default().iter().enumerate() {
        if c == needle {
            if n == N {
                return (out, n, true);
            }
            out[n] = i + j;
            n += 1;
        }
    }
    (out, n, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn same_as_naive(hay in proptest::collection::vec(prop_oneof![Just(b' '), Just(b'"'), Just(b'!'), Just(0x80u8), Just(0xa0u8), any::<u8>()], 0..120), from in 0usize..130, to in 0usize..130) {
            for needle in [b' ', b'"', 0xa0] {
                let naive = hay.get(from..).and_then(|h| h.iter().position(|&c| c == needle)).map(|p| p + from);
                prop_assert_eq!(find(&hay, from, needle), naive);
                let end = to.min(hay.len());
                let lo = from.min(end);
                let naive_r = hay[lo..end].iter().rposition(|&c| c == needle).map(|p| p + lo);
                prop_assert_eq!(rfind(&hay, lo, end, needle), naive_r);
                let all: Vec<usize> = hay.iter().enumerate().filter(|(_, &c)| c == needle).map(|(i, _)| i).collect();
                let (pos, n, more) = positions::<5>(&hay, needle);
                prop_assert_eq!(&pos[..n], &all[..all.len().min(5)]);
                prop_assert_eq!(more, all.len() > 5);
            }
            // Out-of-range starts are None, never a panic.
            prop_assert_eq!(find(&hay, hay.len() + 1, b' '), None);
            prop_assert_eq!(rfind(&hay, 5, 2, b' '), None);
        }
    }
}
