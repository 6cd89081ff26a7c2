//! A small, fully specified PRNG and the distributions the generator draws from.
//!
//! Why hand-rolled: the generator promises byte-identical output for the same seed on
//! every platform and crate version. The `rand` crate does not promise stable streams
//! across versions, and `f64::ln`/`exp`/`cos` call the platform libm, whose last bit
//! differs between glibc, musl and macOS. Everything here uses only integer operations
//! and IEEE-754 `+ - * / sqrt` (correctly rounded, so identical everywhere; Rust never
//! fuses multiply-adds on its own).
//!
//! - Seeding: SplitMix64 (Steele, Lea, Flood 2014) expands the `u64` seed into state.
//! - Generator: xoshiro256** 1.0 (Blackman, Vigna 2018).
//! - Normals: Marsaglia's polar form of Box–Muller (needs `ln` and `sqrt`, no trigonometry).
//! - `ln`/`exp`: range reduction by powers of two plus a short series, accurate to a few ulp.

/// SplitMix64 step: used to expand seeds; also a fine stand-alone generator.
#[inline]
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// xoshiro256** generator.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// Seed through SplitMix64 (never yields the all-zero state).
    pub fn new(seed: u64) -> Rng {
        let mut sm = seed;
        let s = [
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
            splitmix64(&mut sm),
        ];
        Rng { s }
    }

    /// Next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    #[inline]
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }

    /// Uniform in `(0, 1]` (safe to take the logarithm of).
    #[inline]
    pub fn f64_open0(&mut self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }

    /// Uniform integer in `0..n` (Lemire's multiply-shift; `n == 0` gives 0).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    /// Uniform integer in `lo..=hi`.
    #[inline]
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    /// `true` with probability `p`.
    #[inline]
    pub fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }

    /// Standard normal N(0, 1), Marsaglia polar method.
    pub fn normal(&mut self) -> f64 {
        loop {
            let u = 2.0 * self.f64() - 1.0;
            let v = 2.0 * self.f64() - 1.0;
            let s = u * u + v * v;
            if s > 0.0 && s < 1.0 {
                return u * (-2.0 * ln(s) / s).sqrt();
            }
        }
    }

    /// Log-normal with the given median and shape `sigma`.
    #[inline]
    pub fn log_normal(&mut self, median: f64, sigma: f64) -> f64 {
        median * exp(sigma * self.normal())
    }

    /// Pareto (type I) with minimum `scale` and tail index `shape`.
    #[inline]
    pub fn pareto(&mut self, scale: f64, shape: f64) -> f64 {
        scale * exp(-ln(self.f64_open0()) / shape)
    }
}

// ln 2 split as in fdlibm: LN2_HI has its low 32 bits zero so `k * LN2_HI` is exact.
const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
const LOG2_E: f64 = std::f64::consts::LOG2_E;
const SQRT2: f64 = std::f64::consts::SQRT_2;

/// Natural logarithm from basic arithmetic only (platform-independent result).
pub fn ln(x: f64) -> f64 {
    if x.is_nan() || x < 0.0 {
        return f64::NAN;
    }
    if x == 0.0 {
        return f64::NEG_INFINITY;
    }
    if x.is_infinite() {
        return x;
    }
    let mut bits = x.to_bits();
    let mut exp_bias: i64 = -1023;
    if (bits >> 52) & 0x7ff == 0 {
        // Subnormal: scale by 2^54 into the normal range first.
        bits = (x * 18_014_398_509_481_984.0).to_bits();
        exp_bias -= 54;
    }
    let mut k = ((bits >> 52) & 0x7ff) as i64 + exp_bias;
    let mut m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | 0x3ff0_0000_0000_0000);
    if m > SQRT2 {
        m *= 0.5;
        k += 1;
    }
    // ln(m) = 2 atanh(s), s = (m-1)/(m+1), |s| <= 0.1716: 12 odd terms reach 1e-20.
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut term = s;
    let mut sum = s;
    let mut i = 3.0;
    while i < 27.0 {
        term *= s2;
        sum += term / i;
        i += 2.0;
    }
    let kf = k as f64;
    kf * LN2_HI + (kf * LN2_LO + 2.0 * sum)
}

/// Exponential from basic arithmetic only (platform-independent result).
pub fn exp(x: f64) -> f64 {
    if x.is_nan() {
        return x;
    }
    if x > 709.782 {
        return f64::INFINITY;
    }
    if x < -745.2 {
        return 0.0;
    }
    let kf = (x * LOG2_E + if x >= 0.0 { 0.5 } else { -0.5 }).trunc();
    let k = kf as i64;
    let r = (x - kf * LN2_HI) - kf * LN2_LO; // |r| <= 0.35
    let mut term = 1.0;
    let mut sum = 1.0;
    let mut i = 1.0;
    while i < 16.0 {
        term *= r / i;
        sum += term;
        i += 1.0;
    }
    // Scale by 2^k in two steps so that results near the subnormal range stay exact-ish.
    let k1 = k / 2;
    let k2 = k - k1;
    sum * pow2(k1) * pow2(k2)
}

#[inline]
fn pow2(k: i64) -> f64 {
    // k is within -540..=512 here, inside the normal exponent range.
    f64::from_bits(((k + 1023) as u64) << 52)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoshiro_reference_stream() {
        // First outputs of xoshiro256** for state [1, 2, 3, 4] (reference C implementation).
        let mut r = Rng { s: [1, 2, 3, 4] };
        let got: Vec<u64> = (0..4).map(|_| r.next_u64()).collect();
        assert_eq!(got, vec![11520, 0, 1509978240, 1215971899390074240]);
    }

    #[test]
    fn splitmix_reference_stream() {
        // SplitMix64 with seed 1234567 (reference values from the paper's C code).
        let mut s = 1234567u64;
        assert_eq!(splitmix64(&mut s), 6457827717110365317);
        assert_eq!(splitmix64(&mut s), 3203168211198807973);
    }

    #[test]
    fn ln_and_exp_match_std_closely() {
        let mut r = Rng::new(7);
        for _ in 0..20_000 {
            let x = exp_std_range(&mut r);
            let a = ln(x);
            let b = x.ln();
            assert!(
                (a - b).abs() <= 4.0 * f64::EPSILON * b.abs().max(1.0),
                "ln({x}) {a} vs {b}"
            );
            let y = r.f64() * 100.0 - 50.0;
            let (a, b) = (exp(y), y.exp());
            assert!(
                (a - b).abs() <= 4.0 * f64::EPSILON * b,
                "exp({y}) {a} vs {b}"
            );
        }
        assert_eq!(ln(1.0), 0.0);
        assert_eq!(exp(0.0), 1.0);
        assert!(ln(5e-324).is_finite() && (ln(5e-324) - (5e-324f64).ln()).abs() < 1e-12);
        assert_eq!(ln(0.0), f64::NEG_INFINITY);
        assert!(ln(-1.0).is_nan());
        assert_eq!(exp(1000.0), f64::INFINITY);
        assert_eq!(exp(-1000.0), 0.0);
    }

    fn exp_std_range(r: &mut Rng) -> f64 {
        // log-uniform over 1e-300..1e300
        10f64.powf(r.f64() * 600.0 - 300.0)
    }

    #[test]
    fn normal_moments() {
        let mut r = Rng::new(1);
        let n = 200_000;
        let xs: Vec<f64> = (0..n).map(|_| r.normal()).collect();
        let mean = xs.iter().sum::<f64>() / n as f64;
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.015, "var {var}");
    }

    #[test]
    fn below_stays_in_range() {
        let mut r = Rng::new(3);
        let mut seen = [false; 7];
        for _ in 0..1000 {
            let v = r.below(7) as usize;
            seen[v] = true;
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(r.below(0), 0);
        assert!((0..100).all(|_| (5..=9).contains(&r.range(5, 9))));
    }
}
