//! Where the quotes and spaces of a line are, 64 bytes at a time, as two bit masks.
//!
//! A TEXT line is a sequence of space-separated tokens and quoted fields, so once a 64-byte
//! block's masks are known every field boundary in it costs a `trailing_zeros` /
//! `leading_zeros` and a shift, instead of one search per field. [`Fwd`] walks the prefix
//! left to right, [`Bwd`] the suffix right to left; each computes a block's masks once,
//! with the instructions a [`Simd`] token names: [`Baseline`] (SSE2 on x86_64, a byte loop
//! elsewhere) or [`Avx2`] (two 32-byte compares per byte class instead of four 16-byte
//! ones), which exists only on a CPU that has AVX2.

/// How a block's masks are computed. The parser is generic over it and compiled once per
/// token, so that the AVX2 compares inline into an AVX2 copy of the whole parser (a call
/// per block into AVX2 code cost as much as it saved).
pub(crate) trait Simd: Copy {
    /// The masks of one whole block.
    fn chunk_masks(self, chunk: &[u8; BLOCK]) -> Masks;
}

/// The instructions every CPU of the target has: SSE2 on x86_64, a byte loop elsewhere.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Baseline;

impl Simd for Baseline {
    #[inline(always)]
    fn chunk_masks(self, chunk: &[u8; BLOCK]) -> Masks {
        chunk_masks(chunk)
    }
}

/// Proof that the CPU has AVX2: only [`Avx2::detect`] makes one.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Debug)]
pub(crate) struct Avx2(());

#[cfg(target_arch = "x86_64")]
impl Avx2 {
    /// `Some` when the CPU running this has AVX2 (std caches the answer).
    #[inline]
    pub(crate) fn detect() -> Option<Avx2> {
        std::arch::is_x86_feature_detected!("avx2").then_some(Avx2(()))
    }
}

#[cfg(target_arch = "x86_64")]
impl Simd for Avx2 {
    #[inline(always)]
    fn chunk_masks(self, chunk: &[u8; BLOCK]) -> Masks {
        // SAFETY: `self` exists, so `Avx2::detect` saw AVX2 on this CPU. Inlined into a
        // function compiled with AVX2 enabled (`parse_avx2`), this call inlines too.
        unsafe { chunk_masks_avx2(chunk) }
    }
}

/// [`chunk_masks`] with AVX2: two 32-byte loads, one compare and `movemask` per half and
/// byte class.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn chunk_masks_avx2(chunk: &[u8; BLOCK]) -> Masks {
    use core::arch::x86_64::{
        __m256i, _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_movemask_epi8, _mm256_set1_epi8,
    };
    let p = chunk.as_ptr().cast::<__m256i>();
    // SAFETY: two unaligned 32-byte loads at offsets 0 and 32 of the 64-byte `chunk`,
    // both in bounds; AVX2 is enabled for this function.
    let (lo, hi) = unsafe { (_mm256_loadu_si256(p), _mm256_loadu_si256(p.add(1))) };
    let quote = _mm256_set1_epi8(b'"' as i8);
    let space = _mm256_set1_epi8(b' ' as i8);
    let bits = |v: __m256i, c: __m256i| _mm256_movemask_epi8(_mm256_cmpeq_epi8(v, c)) as u32 as u64;
    Masks {
        quote: bits(lo, quote) | bits(hi, quote) << 32,
        space: bits(lo, space) | bits(hi, space) << 32,
    }
}

/// Bit `k` of `quote` (`space`) is set when byte `k` of the block is `"` (a space).
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub(crate) struct Masks {
    pub(crate) quote: u64,
    pub(crate) space: u64,
}

pub(crate) const BLOCK: usize = 64;

/// The masks of `b[at..at + 64]`; bytes past the end of `b` count as neither.
#[inline(always)]
pub(crate) fn block_masks<S: Simd>(simd: S, b: &[u8], at: usize) -> Masks {
    if let Some(chunk) = b.get(at..).and_then(|r| r.first_chunk::<BLOCK>()) {
        return simd.chunk_masks(chunk);
    }
    if at >= b.len() {
        return Masks::default();
    }
    // The block runs past the end: take the last whole block and shift off the bytes
    // before `at` (zeros come in at the top, for the bytes past the end).
    if let Some(last) = b.last_chunk::<BLOCK>() {
        let shift = at - (b.len() - BLOCK);
        let m = simd.chunk_masks(last);
        return Masks {
            quote: m.quote >> shift,
            space: m.space >> shift,
        };
    }
    short_line_masks(simd, b, at)
}

/// A line shorter than a block: copy it into a zero-padded block (cold: no valid line
/// is that short).
#[cold]
#[inline(never)]
fn short_line_masks<S: Simd>(simd: S, b: &[u8], at: usize) -> Masks {
    let mut pad = [0u8; BLOCK];
    let rest = b.get(at..).unwrap_or_default();
    let n = rest.len().min(BLOCK);
    pad[..n].copy_from_slice(&rest[..n]);
    simd.chunk_masks(&pad)
}

/// The masks of one whole block, SSE2.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(crate) fn chunk_masks(chunk: &[u8; BLOCK]) -> Masks {
    use core::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
    };
    // SAFETY: SSE2 is part of the x86_64 baseline (rustc enables it for every x86_64
    // target), so the intrinsics are always available. Each unaligned load reads 16 bytes
    // at offset 0, 16, 32 or 48 of the 64-byte array `chunk`, all in bounds. The
    // `masks_agree` proptest checks this against `scalar_chunk_masks` on arbitrary bytes.
    unsafe {
        let p = chunk.as_ptr().cast::<__m128i>();
        let quote = _mm_set1_epi8(b'"' as i8);
        let space = _mm_set1_epi8(b' ' as i8);
        let mut m = Masks::default();
        for i in 0..4 {
            let v = _mm_loadu_si128(p.add(i));
            let q = _mm_movemask_epi8(_mm_cmpeq_epi8(v, quote)) as u32 as u64;
            let s = _mm_movemask_epi8(_mm_cmpeq_epi8(v, space)) as u32 as u64;
            m.quote |= (q & 0xffff) << (16 * i);
            m.space |= (s & 0xffff) << (16 * i);
        }
        m
    }
}

/// The masks of one whole block, a byte at a time (the reference for the SIMD version).
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline]
pub(crate) fn scalar_chunk_masks(chunk: &[u8; BLOCK]) -> Masks {
    let mut m = Masks::default();
    for (i, &c) in chunk.iter().enumerate() {
        m.quote |= u64::from(c == b'"') << i;
        m.space |= u64::from(c == b' ') << i;
    }
    m
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
pub(crate) fn chunk_masks(chunk: &[u8; BLOCK]) -> Masks {
    scalar_chunk_masks(chunk)
}

/// Bits `0..n` set, for `n` in `1..=64`: one shift, no branch (callers never ask for 0).
#[inline(always)]
fn low_bits(n: usize) -> u64 {
    debug_assert!((1..=64).contains(&n));
    u64::MAX.wrapping_shr(64u32.wrapping_sub(n as u32))
}

/// Forward search over a line for quotes and spaces, keeping the masks of the current
/// block. Searches may start anywhere; increasing starts (the parser's case) reuse the
/// block.
pub(crate) struct Fwd<'a, S: Simd> {
    simd: S,
    b: &'a [u8],
    base: usize,
    m: Masks,
}

impl<'a, S: Simd> Fwd<'a, S> {
    /// A cursor whose first block starts at `at`.
    #[inline(always)]
    pub(crate) fn new(simd: S, b: &'a [u8], at: usize) -> Self {
        Fwd {
            simd,
            b,
            base: at,
            m: block_masks(simd, b, at),
        }
    }

    /// Position of the first space at or after `from`.
    #[inline(always)]
    pub(crate) fn space(&mut self, from: usize) -> Option<usize> {
        self.find(from, |m| m.space)
    }

    /// Position of the first `"` at or after `from`.
    #[inline(always)]
    pub(crate) fn quote(&mut self, from: usize) -> Option<usize> {
        self.find(from, |m| m.quote)
    }

    #[inline(always)]
    fn find(&mut self, from: usize, pick: fn(&Masks) -> u64) -> Option<usize> {
        let mut off = from.wrapping_sub(self.base);
        if off >= BLOCK {
            // Outside the current block (either side): start a block at `from`.
            if from >= self.b.len() {
                return None;
            }
            self.base = from;
            self.m = block_masks(self.simd, self.b, from);
            off = 0;
        }
        let m = pick(&self.m) >> off;
        if m != 0 {
            return Some(from + m.trailing_zeros() as usize);
        }
        loop {
            let next = self.base + BLOCK;
            if next >= self.b.len() {
                return None;
            }
            self.base = next;
            self.m = block_masks(self.simd, self.b, next);
            let m = pick(&self.m);
            if m != 0 {
                return Some(next + m.trailing_zeros() as usize);
            }
        }
    }
}

/// Backward search over a line for quotes and spaces, keeping the masks of the current
/// block `base..top` (at most 64 bytes; masks cleared from `top` up, so that a block
/// overlaps none of the ones above it).
pub(crate) struct Bwd<'a, S: Simd> {
    simd: S,
    b: &'a [u8],
    base: usize,
    top: usize,
    m: Masks,
}

impl<'a, S: Simd> Bwd<'a, S> {
    /// A cursor whose first block ends at `end` (at most `b.len()`).
    #[inline(always)]
    pub(crate) fn new(simd: S, b: &'a [u8], end: usize) -> Self {
        let mut c = Bwd {
            simd,
            b,
            base: 0,
            top: 0,
            m: Masks::default(),
        };
        c.load_ending_at(end);
        c
    }

    #[inline(always)]
    fn load_ending_at(&mut self, end: usize) {
        self.base = end.saturating_sub(BLOCK);
        self.top = end;
        if end == 0 {
            self.m = Masks::default();
            return;
        }
        let m = block_masks(self.simd, self.b, self.base);
        let keep = low_bits(end - self.base);
        self.m = Masks {
            quote: m.quote & keep,
            space: m.space & keep,
        };
    }

    /// Step to the block below the current one; `false` at the start of the line.
    #[inline(always)]
    fn step_down(&mut self) -> bool {
        if self.base == 0 {
            return false;
        }
        self.load_ending_at(self.base);
        true
    }

    /// Position of the last `"` in `lo..end`.
    #[inline(always)]
    pub(crate) fn quote(&mut self, lo: usize, end: usize) -> Option<usize> {
        if end == 0 {
            return None;
        }
        if end <= self.base || end > self.top {
            self.load_ending_at(end.min(self.b.len()));
        }
        // Here `base < end <= top <= base + 64`.
        let mut m = self.m.quote & low_bits(end - self.base);
        while m == 0 {
            if self.base <= lo || !self.step_down() {
                return None;
            }
            m = self.m.quote;
        }
        let at = self.base + 63 - m.leading_zeros() as usize;
        (at >= lo).then_some(at)
    }

    /// From the end of the cursor's first block down: the last `"` at or after `lo` and
    /// the positions of the (up to `N`) last spaces after it, highest first, with their
    /// count. A count of `N` means "`N` or more".
    #[inline(always)]
    pub(crate) fn last_quote_and_spaces<const N: usize>(
        &mut self,
        lo: usize,
    ) -> (Option<usize>, [usize; N], usize) {
        let mut spaces = [0usize; N];
        let mut n = 0;
        loop {
            let q = self.m.quote;
            // Spaces above the block's last quote (all of them if it has none).
            let mut s = if q == 0 {
                self.m.space
            } else {
                self.m.space & (u64::MAX << (63 - q.leading_zeros()) << 1)
            };
            while s != 0 {
                let Some(slot) = spaces.get_mut(n) else {
                    break;
                };
                let bit = 63 - s.leading_zeros() as usize;
                *slot = self.base + bit;
                n += 1;
                s ^= 1 << bit;
            }
            if q != 0 {
                let at = self.base + 63 - q.leading_zeros() as usize;
                return ((at >= lo).then_some(at), spaces, n);
            }
            if self.base <= lo || !self.step_down() {
                return (None, spaces, n);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn naive(b: &[u8], c: u8) -> Vec<usize> {
        b.iter()
            .enumerate()
            .filter(|&(_, &x)| x == c)
            .map(|(i, _)| i)
            .collect()
    }

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(
            prop_oneof![Just(b' '), Just(b'"'), Just(b'a'), any::<u8>()],
            0..300,
        )
    }

    fn check_block_masks<S: Simd>(simd: S, b: &[u8], at: usize) -> Result<(), TestCaseError> {
        let m = block_masks(simd, b, at);
        for k in 0..BLOCK {
            let c = b.get(at + k).copied();
            prop_assert_eq!(m.quote >> k & 1 == 1, c == Some(b'"'));
            prop_assert_eq!(m.space >> k & 1 == 1, c == Some(b' '));
        }
        Ok(())
    }

    fn check_fwd<S: Simd>(simd: S, b: &[u8], starts: &[usize]) -> Result<(), TestCaseError> {
        let (q, s) = (naive(b, b'"'), naive(b, b' '));
        let mut cur = Fwd::new(simd, b, starts[0]);
        for &from in starts {
            prop_assert_eq!(cur.quote(from), q.iter().copied().find(|&p| p >= from));
            prop_assert_eq!(cur.space(from), s.iter().copied().find(|&p| p >= from));
        }
        Ok(())
    }

    fn check_bwd<S: Simd>(
        simd: S,
        b: &[u8],
        lo: usize,
        ends: &[usize],
    ) -> Result<(), TestCaseError> {
        let q = naive(b, b'"');
        let mut cur = Bwd::new(simd, b, b.len());
        for &end in ends {
            let end = end.min(b.len());
            prop_assert_eq!(
                cur.quote(lo, end),
                q.iter().copied().rev().find(|&p| p >= lo && p < end)
            );
        }
        let s = naive(b, b' ');
        let mut cur = Bwd::new(simd, b, b.len());
        let (last, sp, n) = cur.last_quote_and_spaces::<7>(lo);
        let want_q = q.last().copied();
        prop_assert_eq!(last, want_q.filter(|&p| p >= lo));
        // The spaces after the last quote, highest first, up to 7 — at least those
        // down to `lo`'s block when no quote was found.
        let after: Vec<usize> = s
            .iter()
            .copied()
            .rev()
            .filter(|&p| want_q.is_none_or(|qq| p > qq))
            .collect();
        if last.is_some() {
            prop_assert_eq!(&sp[..n], &after[..after.len().min(7)]);
        } else {
            prop_assert!(after.starts_with(&sp[..n]));
        }
        Ok(())
    }

    /// The AVX2 token when this CPU has AVX2 (else the AVX2 checks are skipped: say so).
    #[cfg(target_arch = "x86_64")]
    fn avx2() -> Option<Avx2> {
        let t = Avx2::detect();
        if t.is_none() {
            eprintln!("no AVX2 on this CPU: the AVX2 masks are not tested");
        }
        t
    }

    proptest! {
        #[test]
        fn masks_agree(chunk in proptest::collection::vec(any::<u8>(), BLOCK), c2 in proptest::collection::vec(prop_oneof![Just(b' '), Just(b'"'), Just(b'"' | 0x80), any::<u8>()], BLOCK)) {
            for c in [chunk, c2] {
                let arr: &[u8; BLOCK] = c.as_slice().try_into().unwrap();
                prop_assert_eq!(chunk_masks(arr), scalar_chunk_masks(arr));
                #[cfg(target_arch = "x86_64")]
                if let Some(t) = avx2() {
                    prop_assert_eq!(t.chunk_masks(arr), scalar_chunk_masks(arr));
                }
            }
        }

        #[test]
        fn block_masks_match_bytes(b in bytes(), at in 0usize..320) {
            check_block_masks(Baseline, &b, at)?;
            #[cfg(target_arch = "x86_64")]
            if let Some(t) = avx2() {
                check_block_masks(t, &b, at)?;
            }
        }

        #[test]
        fn fwd_finds_like_naive(b in bytes(), starts in proptest::collection::vec(0usize..320, 1..8)) {
            check_fwd(Baseline, &b, &starts)?;
            #[cfg(target_arch = "x86_64")]
            if let Some(t) = avx2() {
                check_fwd(t, &b, &starts)?;
            }
        }

        #[test]
        fn bwd_finds_like_naive(b in bytes(), lo in 0usize..320, ends in proptest::collection::vec(0usize..320, 1..8)) {
            check_bwd(Baseline, &b, lo, &ends)?;
            #[cfg(target_arch = "x86_64")]
            if let Some(t) = avx2() {
                check_bwd(t, &b, lo, &ends)?;
            }
        }
    }
}
