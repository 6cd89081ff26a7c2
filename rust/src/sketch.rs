//! Latency sketch with a relative-error guarantee (DDSketch-style log buckets, α = 1 %),
//! mergeable and subtractable.
//!
//! Values are milliseconds (`f64`). Values below [`MIN_VALUE_MS`] (1 µs), including exact
//! zeros, negatives and NaN, go to a zero bin whose representative value is 0. Values above
//! [`MAX_VALUE_MS`] (≈ 31.7 years; also +∞) are clamped to it, which bounds a sketch at
//! ≈ 1,750 bins whatever the input.
//!
//! # Mapping: value → bin index, without `ln`
//!
//! DDSketch proper uses `ceil(ln x / ln γ)` with γ = (1+α)/(1−α). `ln` costs several ns on
//! the hot path, so this sketch uses the cubically interpolated mapping of DDSketch's Java
//! library, derived and checked here:
//!
//! Write x = 2^e · (1+s) with s ∈ [0, 1) (exponent and mantissa bits of the `f64`) and
//! approximate log2 x by f(x) = e + P(s), P(s) = A s³ + B s² + C s with A = 6/35, B = −3/5,
//! C = 10/7. P(0) = 0 and P(1) = A+B+C = 1, so f is continuous across powers of two, and
//! P'(s) ≥ P'(1) = 26/35 > 0, so f is strictly increasing. Bin i holds the values with
//! f(x)·M ∈ [i, i+1), i.e. a band of width w = 1/M in f-space.
//!
//! The band's width in true log2-space is at most w / min(df/dlog2x). With
//! df/dlog2x = P'(s)·(1+s)·ln 2 =: h(s)·ln 2 and h(s) = (18s³ − 24s² + 8s + 50)/35, whose
//! minimum on [0,1] is 10/7 (at s = 0 and s = 2/3; h' = 0 at s = 2/9 (max) and 2/3 (min);
//! h(1) = 52/35), the ratio hi/lo of a bin's bounds is at most γ when
//! w = (10/7)·ln γ, i.e. M = 7 / (10 ln γ) ≈ 35.0 bins per octave (the exact log mapping
//! has 34.66: about 1 % more bins). The representative of bin i is the harmonic mean
//! 2·lo·hi/(lo+hi) of its bounds (for the log mapping that is DDSketch's 2γ^i/(γ+1)); any x in
//! [lo, hi] is then within (hi−lo)/(hi+lo) ≤ (γ−1)/(γ+1) = α of it. `representative` finds
//! lo and hi by inverting P with Newton steps; only quantile queries pay for that.
//!
//! # Store
//!
//! Dense counters over [min index, max index], grown as needed and never collapsed, so
//! `merge` (bin-wise add) and `subtract` (bin-wise subtract) are exact. Counters are `u32`
//! for 1 s buckets (4·10⁹ events in one bin of one second is out of reach) and `u64` for
//! accumulators (cumulative totals over days); see [`Counter`].

use std::fmt::Debug;

/// Relative accuracy α of every quantile estimate.
pub const RELATIVE_ACCURACY: f64 = 0.01;
/// Values below this (1 µs in ms) are counted in the zero bin and reported as 0.
pub const MIN_VALUE_MS: f64 = 1e-3;
/// Values above this (ms) are clamped to it (keeps the dense store bounded).
pub const MAX_VALUE_MS: f64 = 1e12;

const A: f64 = 6.0 / 35.0;
const B: f64 = -3.0 / 5.0;
const C: f64 = 10.0 / 7.0;
/// Bin index offset added before truncation so that `as i32` acts as `floor` (f·M ≥ −350
/// for x ≥ 1 µs), avoiding a libm `floor` call on baseline x86-64.
const INDEX_BIAS: f64 = 4096.0;
const MANTISSA_MASK: u64 = (1u64 << 52) - 1;
const EXP_ONE_BITS: u64 = 0x3ff0_0000_0000_0000;
/// Bins grown beyond the needed index, so that a slowly widening range does not shift
/// the store on every new extreme.
const GROW_PAD: i32 = 8;
/// [`Sketch::clear_to_range`] leaves wider stores to grow on demand (memory stays bounded
/// by what the data needs, not by one outlier's width).
const MAX_PRESIZE_BINS: usize = 512;

/// γ = (1+α)/(1−α).
pub fn gamma() -> f64 {
    (1.0 + RELATIVE_ACCURACY) / (1.0 - RELATIVE_ACCURACY)
}

/// Bins per unit of approximate log2: M = 7 / (10 ln γ) (see module docs).
#[inline]
const fn multiplier() -> f64 {
    // ln γ for α = 1 %; computed once by the compiler-friendly constant below and checked
    // against `gamma().ln()` in the tests.
    7.0 / (10.0 * LN_GAMMA)
}

/// ln((1.01)/(0.99)).
const LN_GAMMA: f64 = 0.020_000_666_706_669_522;

/// The approximate log2 f(x) = e + P(s) for a positive normal `x` (reference form of
/// [`index_of`]; kept for the tests).
#[cfg(test)]
fn approx_log2(x: f64) -> f64 {
    let bits = x.to_bits();
    let e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let s = f64::from_bits((bits & MANTISSA_MASK) | EXP_ONE_BITS) - 1.0;
    e as f64 + ((A * s + B) * s + C) * s
}

/// Bin index of a value ≥ [`MIN_VALUE_MS`] (larger values are clamped).
///
/// Same value as `floor(approx_log2(x) · M)`, computed for a short dependency chain: M is
/// folded into the coefficients, the polynomial is evaluated Estrin-style
/// (M·P(s) = (A'·s + B')·s² + C'·s), and the exponent becomes a float through bit
/// operations (no int→float conversion), so the loop over a column can vectorise.
#[inline]
pub const fn index_of(x: f64) -> i32 {
    let x = if x > MAX_VALUE_MS { MAX_VALUE_MS } else { x };
    let bits = x.to_bits();
    // x > 0, so the sign bit is clear and `bits >> 52` is the biased exponent.
    let e = f64::from_bits(EXP_AS_FLOAT_BITS | (bits >> 52)) - EXP_AS_FLOAT_OFFSET;
    let s = f64::from_bits((bits & MANTISSA_MASK) | EXP_ONE_BITS) - 1.0;
    let m = multiplier();
    let s2 = s * s;
    let v = ((A * m) * s + B * m) * s2 + ((C * m) * s + (e * m + INDEX_BIAS));
    v as i32 - INDEX_BIAS as i32
}

/// [`index_of`] with a floor the compiler can vectorise (the saturating `as i32` cannot
/// be): same polynomial, same result for every value ≥ [`MIN_VALUE_MS`]. There the biased
/// index `v` lies in (0, 2^31), so adding 2^52 rounds it to the nearest integer exactly
/// (held in the low mantissa bits), and one compare turns rounding into the floor that
/// `as i32` (truncation of a positive value) gives.
#[inline(always)]
fn index_of_floor(x: f64) -> i32 {
    let x = if x > MAX_VALUE_MS { MAX_VALUE_MS } else { x };
    let bits = x.to_bits();
    let e = f64::from_bits(EXP_AS_FLOAT_BITS | (bits >> 52)) - EXP_AS_FLOAT_OFFSET;
    let s = f64::from_bits((bits & MANTISSA_MASK) | EXP_ONE_BITS) - 1.0;
    let m = multiplier();
    let s2 = s * s;
    let v = ((A * m) * s + B * m) * s2 + ((C * m) * s + (e * m + INDEX_BIAS));
    let t = v + TWO_POW_52;
    let nearest = t - TWO_POW_52;
    (t.to_bits() as i32) - (nearest > v) as i32 - INDEX_BIAS as i32
}

const TWO_POW_52: f64 = 4_503_599_627_370_496.0;

/// [`bin_of`] without branches (identical results for every input, NaN included), so a
/// loop computing the bins of a column can vectorise.
#[inline(always)]
pub fn bin_of_branchless(x: f64) -> i32 {
    let present = x >= MIN_VALUE_MS;
    let i = index_of_floor(if present { x } else { MIN_VALUE_MS });
    if present {
        i
    } else {
        ZERO_BIN
    }
}

/// `f64::from_bits(EXP_AS_FLOAT_BITS | k) = 2^52 + k` for a small integer k.
const EXP_AS_FLOAT_BITS: u64 = 0x4330_0000_0000_0000;
/// 2^52 + exponent bias.
const EXP_AS_FLOAT_OFFSET: f64 = 4_503_599_627_370_496.0 + 1023.0;

/// Bin of the zero bucket in [`bin_of`] / [`Sketch::insert_bin`].
pub const ZERO_BIN: i32 = i32::MIN;

/// Bin of any value: [`ZERO_BIN`] below [`MIN_VALUE_MS`] (and for NaN), else [`index_of`].
/// Lets a caller compute bins in a separate tight loop over a column.
#[inline]
pub fn bin_of(x: f64) -> i32 {
    if x >= MIN_VALUE_MS {
        index_of(x)
    } else {
        ZERO_BIN
    }
}

/// Whole milliseconds with a precomputed bin: 1 ..= `SMALL_BINS.len()`.
const SMALL_BINS_LEN: usize = 4096;

/// `index_of(ms)` for ms = 1, 2, …, 4096 (bins 0 … 420: `i16` keeps the table at 8 KiB),
/// computed by the compiler.
static SMALL_BINS: [i16; SMALL_BINS_LEN] = {
    let mut t = [0i16; SMALL_BINS_LEN];
    let mut i = 0;
    while i < SMALL_BINS_LEN {
        t[i] = index_of((i + 1) as f64) as i16;
        i += 1;
    }
    t
};

/// [`bin_of`] (same result for every input), looked up for a whole number of
/// milliseconds from 1 to 4096, which is what Envoy, Linkerd and most JSON access logs
/// write: a conversion, a compare and a load instead of the polynomial.
#[inline(always)]
pub fn bin_of_ms(x: f64) -> i32 {
    // Saturating, NaN → 0: only a value that converts back to itself is whole.
    let ms = x as u32;
    let slot = ms.wrapping_sub(1) as usize;
    match SMALL_BINS.get(slot) {
        Some(&bin) if ms as f64 == x => bin as i32,
        _ => bin_of(x),
    }
}

/// Inverse of the approximate log2: the x with f(x) = y.
fn inv_approx_log2(y: f64) -> f64 {
    let e = y.floor();
    let t = y - e;
    // Solve P(s) = t on [0, 1]: P is increasing with P' ≥ 26/35, Newton from s = t
    // converges in a handful of steps.
    let mut s = t;
    for _ in 0..12 {
        let p = ((A * s + B) * s + C) * s - t;
        let dp = (3.0 * A * s + 2.0 * B) * s + C;
        s = (s - p / dp).clamp(0.0, 1.0);
    }
    (1.0 + s) * 2f64.powi(e as i32)
}

/// Lower bound of bin `i` (values with index `i` are in [lower(i), lower(i+1))).
pub fn bin_lower(i: i32) -> f64 {
    inv_approx_log2(i as f64 / multiplier())
}

/// Representative value of bin `i`: harmonic mean of its bounds, within α of any value
/// of the bin.
pub fn representative(i: i32) -> f64 {
    let lo = bin_lower(i);
    let hi = bin_lower(i + 1);
    2.0 * lo * hi / (lo + hi)
}

/// Counter type of a store: `u32` for 1 s buckets, `u64` for accumulators.
pub trait Counter: Copy + Default + Eq + Ord + Debug + Send + Sync + 'static {
    /// As u64.
    fn get(self) -> u64;
    /// Saturating add.
    fn plus(self, n: u64) -> Self;
    /// Saturating subtract.
    fn minus(self, n: u64) -> Self;
    /// Is zero.
    fn is_zero(self) -> bool;
}

impl Counter for u32 {
    #[inline]
    fn get(self) -> u64 {
        self as u64
    }
    #[inline]
    fn plus(self, n: u64) -> Self {
        (self as u64).saturating_add(n).min(u32::MAX as u64) as u32
    }
    #[inline]
    fn minus(self, n: u64) -> Self {
        (self as u64).saturating_sub(n) as u32
    }
    #[inline]
    fn is_zero(self) -> bool {
        self == 0
    }
}

impl Counter for u64 {
    #[inline]
    fn get(self) -> u64 {
        self
    }
    #[inline]
    fn plus(self, n: u64) -> Self {
        self.saturating_add(n)
    }
    #[inline]
    fn minus(self, n: u64) -> Self {
        self.saturating_sub(n)
    }
    #[inline]
    fn is_zero(self) -> bool {
        self == 0
    }
}

/// A DDSketch-style quantile sketch with a dense, growing store.
#[derive(Debug, Clone, Default)]
pub struct Sketch<Cn: Counter = u32> {
    /// Counter of bin `offset + j` at position `j`.
    bins: Vec<Cn>,
    offset: i32,
    zero: Cn,
    count: Cn,
}

impl<Cn: Counter> PartialEq for Sketch<Cn> {
    /// Logical equality: same count per bin (store layout and padding ignored).
    fn eq(&self, other: &Self) -> bool {
        self.count == other.count
            && self.zero == other.zero
            && self.nonzero_bins().eq(other.nonzero_bins())
    }
}

/// Counters tested at once by [`first_nonzero`] / [`last_nonzero`].
const SCAN_CHUNK: usize = 16;

/// Index of the first non-zero counter. A 1 s bucket's store is sized for the key's whole
/// latency range but holds a few dozen values, so a snapshot scans mostly zeros: OR-ing
/// 16 counters per test (vectorised) instead of a branch per counter halved the time of a
/// whole-ring snapshot.
fn first_nonzero<C: Counter>(bins: &[C]) -> Option<usize> {
    let (chunks, rest) = bins.as_chunks::<SCAN_CHUNK>();
    for (i, chunk) in chunks.iter().enumerate() {
        if chunk.iter().fold(0, |acc, c| acc | c.get()) != 0 {
            return chunk
                .iter()
                .position(|c| !c.is_zero())
                .map(|j| i * SCAN_CHUNK + j);
        }
    }
    let done = chunks.len() * SCAN_CHUNK;
    rest.iter().position(|c| !c.is_zero()).map(|j| done + j)
}

/// Index of the last non-zero counter (see [`first_nonzero`]).
fn last_nonzero<C: Counter>(bins: &[C]) -> Option<usize> {
    let (rest, chunks) = bins.as_rchunks::<SCAN_CHUNK>();
    for (i, chunk) in chunks.iter().enumerate().rev() {
        if chunk.iter().fold(0, |acc, c| acc | c.get()) != 0 {
            return chunk
                .iter()
                .rposition(|c| !c.is_zero())
                .map(|j| rest.len() + i * SCAN_CHUNK + j);
        }
    }
    rest.iter().rposition(|c| !c.is_zero())
}

impl<Cn: Counter> Sketch<Cn> {
    /// Empty sketch (allocates nothing until the first non-zero value).
    pub fn new() -> Self {
        Sketch {
            bins: Vec::new(),
            offset: 0,
            zero: Cn::default(),
            count: Cn::default(),
        }
    }

    /// Forget all values but keep the allocation (bucket slots are recycled).
    pub fn clear(&mut self) {
        self.bins.clear();
        self.zero = Cn::default();
        self.count = Cn::default();
    }

    /// Forget all values and make the store cover `range` (`(first index, bins)`, from
    /// [`Sketch::store_range`] of a sibling sketch), zeroed. A recycled 1 s bucket of a key
    /// sees about the latencies its predecessor saw: sizing it once up front replaces the
    /// handful of `grow_to` calls (a reallocation and copy each) it would otherwise make.
    pub(crate) fn clear_to_range(&mut self, range: (i32, usize)) {
        self.clear();
        let (offset, len) = range;
        if len > 0 && len <= MAX_PRESIZE_BINS {
            self.offset = offset;
            self.bins.resize(len, Cn::default());
        }
    }

    /// `(first index, bins)` of the dense store (padding included), for
    /// [`Sketch::clear_to_range`].
    pub(crate) fn store_range(&self) -> (i32, usize) {
        (self.offset, self.bins.len())
    }

    /// Number of values.
    #[inline]
    pub fn count(&self) -> u64 {
        self.count.get()
    }

    /// No values.
    pub fn is_empty(&self) -> bool {
        self.count.is_zero()
    }

    /// Values in the zero bin.
    pub fn zero_count(&self) -> u64 {
        self.zero.get()
    }

    /// Add one value.
    #[inline]
    pub fn insert(&mut self, x: f64) {
        self.insert_n(x, 1);
    }

    /// Add `n` copies of a value.
    #[inline]
    pub fn insert_n(&mut self, x: f64, n: u64) {
        self.insert_bin(bin_of(x), n);
    }

    /// Count one value of bin `bin` in its bin but not in the total: a caller folding
    /// many values adds their number once with [`Sketch::add_to_count`] (together the
    /// same as [`Sketch::insert_bin`] for each).
    #[inline]
    pub(crate) fn insert_bin_uncounted(&mut self, bin: i32) {
        if bin == ZERO_BIN {
            self.zero = self.zero.plus(1);
        } else {
            self.add_at(bin, 1);
        }
    }

    /// Add `n` to the total count (see [`Sketch::insert_bin_uncounted`]).
    #[inline]
    pub(crate) fn add_to_count(&mut self, n: u64) {
        self.count = self.count.plus(n);
    }

    /// Add `n` values of bin `bin` (from [`bin_of`]).
    #[inline]
    pub fn insert_bin(&mut self, bin: i32, n: u64) {
        self.count = self.count.plus(n);
        if bin == ZERO_BIN {
            self.zero = self.zero.plus(n);
        } else {
            self.add_at(bin, n);
        }
    }

    #[inline(always)]
    fn add_at(&mut self, idx: i32, n: u64) {
        // A negative offset wraps to a huge usize and misses, like an index past the end.
        let pos = (idx as i64 - self.offset as i64) as usize;
        if let Some(c) = self.bins.get_mut(pos) {
            *c = c.plus(n);
            return;
        }
        self.grow_and_add(idx, n);
    }

    /// [`Sketch::add_at`] for an index outside the store: out of line, so the common
    /// case stays a few instructions inlined into the caller.
    #[cold]
    #[inline(never)]
    fn grow_and_add(&mut self, idx: i32, n: u64) {
        self.grow_to(idx);
        let pos = (idx as i64 - self.offset as i64) as usize;
        if let Some(c) = self.bins.get_mut(pos) {
            *c = c.plus(n);
        }
    }

    /// Make the store cover `idx`, padding on the side that grows.
    #[cold]
    fn grow_to(&mut self, idx: i32) {
        if self.bins.is_empty() {
            // Fresh (or recycled) store: centre a small window on the index.
            let lo = idx.saturating_sub(GROW_PAD);
            let len = (2 * GROW_PAD + 1) as usize;
            self.offset = lo;
            self.bins.resize(len, Cn::default());
            return;
        }
        let len = self.bins.len() as i64;
        let hi = self.offset as i64 + len - 1;
        if (idx as i64) > hi {
            let new_len = (idx as i64 + GROW_PAD as i64 - self.offset as i64 + 1) as usize;
            self.bins.reserve_exact(new_len - self.bins.len());
            self.bins.resize(new_len, Cn::default());
        } else if idx < self.offset {
            let shift = (self.offset as i64 - idx as i64 + GROW_PAD as i64) as usize;
            let old_len = self.bins.len();
            self.bins.reserve_exact(shift);
            self.bins.resize(old_len + shift, Cn::default());
            self.bins.copy_within(0..old_len, shift);
            self.bins[..shift].fill(Cn::default());
            self.offset = (self.offset as i64 - shift as i64) as i32;
        }
    }

    /// (bin index, count) of the non-empty bins, in increasing index order (zero bin excluded).
    pub fn nonzero_bins(&self) -> impl Iterator<Item = (i32, u64)> + '_ {
        let offset = self.offset;
        self.bins
            .iter()
            .enumerate()
            .filter(|(_, c)| !c.is_zero())
            .map(move |(j, c)| (offset + j as i32, c.get()))
    }

    /// Add every value of `other` (bin-wise add; exact).
    pub fn merge<D: Counter>(&mut self, other: &Sketch<D>) {
        if other.count.is_zero() {
            return;
        }
        self.count = self.count.plus(other.count.get());
        self.zero = self.zero.plus(other.zero.get());
        // Find the non-empty range of `other` so padding does not widen `self`.
        let first = first_nonzero(&other.bins);
        let last = last_nonzero(&other.bins);
        let (Some(first), Some(last)) = (first, last) else {
            return;
        };
        let lo = other.offset + first as i32;
        let hi = other.offset + last as i32;
        self.ensure_range(lo, hi);
        let start = (lo as i64 - self.offset as i64) as usize;
        if let (Some(dst), Some(src)) = (
            self.bins.get_mut(start..start + (last - first + 1)),
            other.bins.get(first..=last),
        ) {
            for (d, s) in dst.iter_mut().zip(src) {
                *d = d.plus(s.get());
            }
        }
    }

    fn ensure_range(&mut self, lo: i32, hi: i32) {
        if self.bins.is_empty() {
            self.offset = lo;
            self.bins.resize((hi - lo + 1) as usize, Cn::default());
            return;
        }
        if lo < self.offset {
            self.grow_to(lo);
        }
        if hi >= self.offset + self.bins.len() as i32 {
            self.grow_to(hi);
        }
    }

    /// Remove every value of `other`, which must have been merged in before. On a
    /// violated precondition (some bin of `other` exceeds ours) nothing changes and an
    /// error is returned.
    pub fn subtract<D: Counter>(&mut self, other: &Sketch<D>) -> Result<(), String> {
        if other.count.get() > self.count.get() || other.zero.get() > self.zero.get() {
            return Err("subtract: subtrahend has more values than the sketch".into());
        }
        for (i, c) in other.nonzero_bins() {
            let pos = (i as i64 - self.offset as i64) as usize;
            match self.bins.get(pos) {
                Some(mine) if mine.get() >= c => {}
                _ => return Err(format!("subtract: bin {i} of subtrahend exceeds sketch")),
            }
        }
        self.count = self.count.minus(other.count.get());
        self.zero = self.zero.minus(other.zero.get());
        for (i, c) in other.nonzero_bins() {
            let pos = (i as i64 - self.offset as i64) as usize;
            if let Some(mine) = self.bins.get_mut(pos) {
                *mine = mine.minus(c);
            }
        }
        Ok(())
    }

    /// Estimate of the value at rank floor(q·(n−1)) (0-based) in sorted order, within α
    /// relative (0 for the zero bin). `None` when empty or `q` is not in [0, 1].
    pub fn quantile(&self, q: f64) -> Option<f64> {
        if self.count.is_zero() || !(0.0..=1.0).contains(&q) {
            return None;
        }
        let n = self.count.get();
        let rank = ((q * (n - 1) as f64).floor() as u64).min(n - 1);
        let mut seen = self.zero.get();
        if seen > rank {
            return Some(0.0);
        }
        for (j, c) in self.bins.iter().enumerate() {
            seen += c.get();
            if seen > rank {
                return Some(representative(self.offset + j as i32));
            }
        }
        // Only reachable if counters saturated; answer with the top bin.
        self.nonzero_bins().last().map(|(i, _)| representative(i))
    }

    /// Heap and inline bytes held.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Self>() + self.bins.capacity() * std::mem::size_of::<Cn>()
    }

    /// Number of counters in the dense store.
    pub fn store_len(&self) -> usize {
        self.bins.len()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Small deterministic generator for test samples.
    pub(crate) struct Rng(u64);
    impl Rng {
        pub(crate) fn new(seed: u64) -> Self {
            Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
        }
        pub(crate) fn next_u64(&mut self) -> u64 {
            // splitmix64
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        /// Uniform in (0, 1).
        pub(crate) fn unit(&mut self) -> f64 {
            ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
        }
        pub(crate) fn normal(&mut self) -> f64 {
            let (u, v) = (self.unit(), self.unit());
            (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
        }
        pub(crate) fn lognormal(&mut self, median: f64, sigma: f64) -> f64 {
            median * (sigma * self.normal()).exp()
        }
    }

    /// CPU time of this thread in seconds (10 ms resolution), so speed figures survive a
    /// shared, loaded machine: events / CPU second instead of events / wall second.
    pub(crate) fn thread_cpu_secs() -> f64 {
        let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
        let after = stat.rsplit(')').next().unwrap_or("");
        let f: Vec<f64> = after
            .split_whitespace()
            .skip(11)
            .take(2)
            .filter_map(|x| x.parse().ok())
            .collect();
        f.iter().sum::<f64>() / 100.0
    }

    /// Run `f`, return (wall seconds, CPU seconds).
    pub(crate) fn timed<R>(f: impl FnOnce() -> R) -> (R, f64, f64) {
        let c = thread_cpu_secs();
        let t = std::time::Instant::now();
        let r = f();
        (r, t.elapsed().as_secs_f64(), thread_cpu_secs() - c)
    }

    fn exact_rank_value(sorted: &[f64], q: f64) -> f64 {
        let rank = (q * (sorted.len() - 1) as f64).floor() as usize;
        sorted[rank]
    }

    fn assert_quantiles_close(values: &[f64]) -> Result<(), TestCaseError> {
        let mut s = Sketch::<u32>::new();
        for &v in values {
            s.insert(v);
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(|a, b| a.partial_cmp(b).unwrap());
        for q in [0.0, 0.5, 0.9, 0.99, 0.999, 1.0] {
            let exact = exact_rank_value(&sorted, q);
            let est = s.quantile(q).unwrap();
            if exact < MIN_VALUE_MS {
                prop_assert_eq!(est, 0.0, "q={} exact={}", q, exact);
            } else {
                let rel = (est - exact).abs() / exact;
                prop_assert!(
                    rel <= RELATIVE_ACCURACY * (1.0 + 1e-9),
                    "q={} exact={} est={} rel={}",
                    q,
                    exact,
                    est,
                    rel
                );
            }
        }
        Ok(())
    }

    /// Samples of one of the test distributions.
    fn sample(kind: u8, seed: u64, n: usize) -> Vec<f64> {
        let mut r = Rng::new(seed);
        let c = 0.5 + (seed % 1000) as f64;
        (0..n)
            .map(|_| match kind {
                0 => r.lognormal(20.0, 0.8),
                1 => {
                    if r.unit() < 0.7 {
                        r.lognormal(5.0, 0.3)
                    } else {
                        r.lognormal(400.0, 0.5)
                    }
                }
                2 => 1.0 / r.unit().powf(1.0 / 1.2), // Pareto, x_m = 1, shape 1.2
                3 => c,
                _ => {
                    let u = r.unit();
                    if u < 0.2 {
                        0.0
                    } else {
                        u * u * 0.01 // 0 .. 10 µs, many below 1 µs
                    }
                }
            })
            .collect()
    }

    #[test]
    fn ln_gamma_constant_matches() {
        assert!((gamma().ln() - LN_GAMMA).abs() < 1e-15);
    }

    #[test]
    fn representative_within_alpha_on_dense_grid() {
        // Walk values over several octaves with a step far finer than a bin.
        let mut x = 0.001;
        let mut worst: f64 = 0.0;
        while x < 1e7 {
            let rep = representative(index_of(x));
            worst = worst.max((rep - x).abs() / x);
            x *= 1.000_37;
        }
        assert!(worst <= RELATIVE_ACCURACY * (1.0 + 1e-9), "worst {worst}");
        // The bound is tight (the mapping is not wasteful): worst case close to α.
        assert!(worst > 0.0099, "worst {worst}");
    }

    #[test]
    fn index_of_matches_reference_form() {
        let mut r = Rng::new(5);
        for _ in 0..200_000 {
            let x = MIN_VALUE_MS * (r.unit() * 40.0).exp2();
            let v = approx_log2(x) * multiplier();
            let i = index_of(x);
            // Equal, except where rounding straddles a bin boundary.
            let near_boundary = (v - v.round()).abs() < 1e-9;
            assert!(i == v.floor() as i32 || near_boundary, "x={x} v={v} i={i}");
        }
    }

    #[test]
    fn branchless_bin_equals_bin_of_at_bin_bounds() {
        for i in -400..1500 {
            let mut x = bin_lower(i).next_down().next_down();
            for _ in 0..5 {
                assert_eq!(bin_of_branchless(x), bin_of(x), "x={x}");
                x = x.next_up();
            }
        }
    }

    #[test]
    fn bins_are_monotone_and_contiguous() {
        let mut prev = index_of(MIN_VALUE_MS);
        let mut x = MIN_VALUE_MS;
        while x < 1e6 {
            let i = index_of(x);
            assert!(i == prev || i == prev + 1, "x={x} i={i} prev={prev}");
            prev = i;
            x *= 1.001;
        }
        // Bin bounds agree with index_of.
        for i in -300..900 {
            let lo = bin_lower(i);
            assert_eq!(index_of(lo * (1.0 + 1e-12)), i);
            assert_eq!(index_of(lo * (1.0 - 1e-12)), i - 1);
        }
    }

    #[test]
    fn zero_tiny_nan_and_huge() {
        let mut s = Sketch::<u32>::new();
        s.insert(0.0);
        s.insert(0.0005);
        s.insert(-3.0);
        s.insert(f64::NAN);
        assert_eq!(s.zero_count(), 4);
        assert_eq!(s.store_len(), 0);
        s.insert(f64::INFINITY);
        assert_eq!(s.count(), 5);
        let top = s.quantile(1.0).unwrap();
        assert!((top - MAX_VALUE_MS).abs() / MAX_VALUE_MS <= RELATIVE_ACCURACY);
        assert_eq!(s.quantile(0.5), Some(0.0));
        assert_eq!(s.quantile(1.5), None);
        assert_eq!(Sketch::<u32>::new().quantile(0.5), None);
    }

    #[test]
    fn store_stays_small_for_wide_range() {
        let mut s = Sketch::<u32>::new();
        s.insert(MIN_VALUE_MS);
        s.insert(f64::MAX);
        assert!(s.store_len() < 1_800, "{}", s.store_len());
    }

    #[test]
    fn subtract_refuses_what_was_not_merged() {
        let mut a = Sketch::<u64>::new();
        a.insert(5.0);
        let mut b = Sketch::<u32>::new();
        b.insert(7.0);
        let before = a.clone();
        assert!(a.subtract(&b).is_err());
        assert_eq!(a, before);
    }

    #[test]
    fn insert_n_equals_repeated_insert() {
        let mut a = Sketch::<u32>::new();
        let mut b = Sketch::<u32>::new();
        a.insert_n(12.5, 7);
        for _ in 0..7 {
            b.insert(12.5);
        }
        assert_eq!(a, b);
    }

    /// The table gives what the polynomial gives, for every whole millisecond it holds
    /// and around its edges; fractions, zero, NaN and huge values take the polynomial.
    #[test]
    fn bin_of_ms_matches_bin_of() {
        for ms in 0..=SMALL_BINS_LEN as u32 + 2 {
            let x = ms as f64;
            assert_eq!(bin_of_ms(x), bin_of(x), "{x}");
            assert_eq!(bin_of_ms(x + 0.5), bin_of(x + 0.5), "{x}.5");
        }
        for x in [
            0.0,
            -0.0,
            -1.0,
            0.001,
            0.5,
            f64::NAN,
            1e12,
            1e30,
            f64::INFINITY,
            4096.0001,
        ] {
            assert_eq!(bin_of_ms(x), bin_of(x), "{x}");
        }
        assert_eq!(SMALL_BINS[0], 0); // 1 ms
        assert!(SMALL_BINS[SMALL_BINS_LEN - 1] > 400); // 4096 ms: 12 octaves of ~35 bins
    }

    proptest! {
        #[test]
        fn bin_of_ms_matches_bin_of_anywhere(x in prop_oneof![0.0f64..5000.0, (0u32..5000).prop_map(f64::from)]) {
            prop_assert_eq!(bin_of_ms(x), bin_of(x));
        }

        /// The chunked scans find what a plain scan finds, at any length and position.
        #[test]
        fn nonzero_scans_match_plain_scans(
            bins in proptest::collection::vec(prop_oneof![8 => Just(0u32), 1 => 1u32..5], 0..80),
        ) {
            prop_assert_eq!(first_nonzero(&bins), bins.iter().position(|&c| c != 0));
            prop_assert_eq!(last_nonzero(&bins), bins.iter().rposition(|&c| c != 0));
        }

        #[test]
        fn quantiles_within_alpha(kind in 0u8..5, seed in any::<u64>(), n in 1usize..3000) {
            assert_quantiles_close(&sample(kind, seed, n))?;
        }

        #[test]
        fn merge_equals_sketch_of_concatenation(
            ka in 0u8..5, kb in 0u8..5, seed in any::<u64>(), na in 0usize..500, nb in 0usize..500
        ) {
            let a_vals = sample(ka, seed, na);
            let b_vals = sample(kb, seed.wrapping_add(1), nb);
            let mut a = Sketch::<u32>::new();
            a_vals.iter().for_each(|&v| a.insert(v));
            let mut b = Sketch::<u32>::new();
            b_vals.iter().for_each(|&v| b.insert(v));
            let mut all = Sketch::<u32>::new();
            a_vals.iter().chain(&b_vals).for_each(|&v| all.insert(v));
            let mut merged = a.clone();
            merged.merge(&b);
            prop_assert_eq!(&merged, &all);
            // Merging into a wide accumulator gives the same bins.
            let mut wide = Sketch::<u64>::new();
            wide.merge(&a);
            wide.merge(&b);
            prop_assert_eq!(wide.count(), all.count());
            prop_assert!(wide.nonzero_bins().eq(all.nonzero_bins()));
            // Merge then subtract gives back the original.
            merged.subtract(&b).unwrap();
            prop_assert_eq!(&merged, &a);
        }

        #[test]
        fn branchless_bin_equals_bin_of(bits in any::<u64>(), exp in -12.0f64..45.0, frac in 0.0f64..1.0) {
            // Any bit pattern (NaN, ±∞, subnormals, negatives) and log-uniform values
            // over the whole clamped range and beyond.
            let x = f64::from_bits(bits);
            prop_assert_eq!(bin_of_branchless(x), bin_of(x), "x={}", x);
            let y = (exp + frac).exp2();
            prop_assert_eq!(bin_of_branchless(y), bin_of(y), "y={}", y);
            for z in [y.next_up(), y.next_down(), MIN_VALUE_MS, MAX_VALUE_MS, MAX_VALUE_MS.next_up()] {
                prop_assert_eq!(bin_of_branchless(z), bin_of(z), "z={}", z);
            }
        }

        #[test]
        fn arbitrary_values_never_panic(vals in proptest::collection::vec(any::<f64>(), 0..200)) {
            let mut s = Sketch::<u32>::new();
            for v in &vals {
                s.insert(*v);
            }
            prop_assert_eq!(s.count(), vals.len() as u64);
            for q in [0.0, 0.5, 1.0] {
                prop_assert_eq!(s.quantile(q).is_some(), !vals.is_empty());
            }
            prop_assert!(s.store_len() < 1_800);
        }
    }

    #[test]
    #[ignore]
    fn speed_sketch_insert() {
        let mut r = Rng::new(1);
        let vals: Vec<f64> = (0..50_000_000).map(|_| r.lognormal(20.0, 0.8)).collect();
        let mut s = Sketch::<u32>::new();
        let ((), dt, cpu) = timed(|| vals.iter().for_each(|&v| s.insert(v)));
        // The mapping alone, and DDSketch's `ln` mapping for comparison.
        let (cubic, _, cpu_cubic) = timed(|| vals.iter().map(|&v| index_of(v) as i64).sum::<i64>());
        let (log, _, cpu_ln) = timed(|| {
            vals.iter()
                .map(|&v| (v.ln() / LN_GAMMA).ceil() as i64)
                .sum::<i64>()
        });
        let ns = |d: f64| d * 1e9 / vals.len() as f64;
        println!(
            "speed_sketch_insert: {:.1} M inserts/CPU-s ({:.2} ns/insert; wall {:.1} M/s), p99 {:?}; \
             index_of {:.2} ns, ln mapping {:.2} ns per CPU ({cubic} {log})",
            vals.len() as f64 / cpu / 1e6,
            ns(cpu),
            vals.len() as f64 / dt / 1e6,
            s.quantile(0.99),
            ns(cpu_cubic),
            ns(cpu_ln),
        );
    }
}
