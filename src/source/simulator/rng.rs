//! Seeded pseudo-random numbers and platform-independent math.
//!
//! The simulator promises the same bytes for the same seed on every platform, so it uses its own
//! generator (xoshiro256** seeded through SplitMix64) and its own `sin`/`cos`/`ln`: the standard
//! library's transcendental functions call the platform's libm, whose last bits differ between
//! systems, and one flipped bit can change a rounded pixel. Only IEEE-exact operations
//! (`+ - * /`, `sqrt`, `floor`, `round`) are used below.

use std::f64::consts::{FRAC_PI_2, LN_2, PI, TAU};

pub(crate) use crate::rng::splitmix64;

/// Derives an independent seed from a parent seed and a tag (clip index, frame, purpose...).
pub(crate) fn derive(seed: u64, tag: u64) -> u64 {
    let mut s = seed ^ tag.wrapping_mul(0xD1B5_4A32_D192_ED03);
    splitmix64(&mut s)
}

/// A uniform value in [0, 1) that depends only on `seed` and the lattice point `(x, y)`.
pub(crate) fn hash_unit(seed: u64, x: i64, y: i64) -> f32 {
    let h = derive(derive(seed, x as u64), y as u64);
    (h >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
}

/// The crate's xoshiro256** generator with the simulator's sampling helpers.
#[derive(Debug, Clone)]
pub(crate) struct Rng(crate::rng::Rng);

impl Rng {
    /// A generator whose whole stream is fixed by `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self(crate::rng::Rng::new(seed))
    }

    /// The next 64 random bits.
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// Uniform in [lo, hi).
    pub(crate) fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }

    /// Uniform integer in 0..n (n > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        debug_assert!(n > 0);
        (((self.next_u64() >> 32) * n as u64) >> 32) as usize
    }

    /// True with probability `p`.
    pub(crate) fn chance(&mut self, p: f32) -> bool {
        self.unit() < p
    }

    /// −1 or +1 with equal probability.
    pub(crate) fn sign(&mut self) -> f32 {
        if self.next_u64() >> 63 == 0 {
            -1.0
        } else {
            1.0
        }
    }

    /// Standard normal (Box–Muller with the platform-independent `ln` and `cos`).
    pub(crate) fn normal(&mut self) -> f32 {
        let u1 = ((self.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64);
        let u2 = (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        ((-2.0 * ln(u1)).sqrt() * cos(TAU * u2)) as f32
    }

    /// Approximately standard normal from one draw (Irwin–Hall sum of four uniforms); used for
    /// per-pixel sensor noise, where speed matters more than the far tails.
    pub(crate) fn fast_normal(&mut self) -> f32 {
        let v = self.next_u64();
        let sum = (v & 0xFFFF) + ((v >> 16) & 0xFFFF) + ((v >> 32) & 0xFFFF) + (v >> 48);
        (sum as f32 * (1.0 / 65536.0) - 2.0) * 1.732_050_8
    }

    /// Waiting time of a Poisson process with `rate` events per second.
    pub(crate) fn exp_interval(&mut self, rate: f32) -> f32 {
        let u = ((self.next_u64() >> 11) + 1) as f64 * (1.0 / (1u64 << 53) as f64);
        (-ln(u) / f64::from(rate.max(1e-6))) as f32
    }

    /// Picks an index with probability proportional to `weights`.
    pub(crate) fn weighted(&mut self, weights: &[f32]) -> usize {
        let total: f32 = weights.iter().sum();
        let mut r = self.unit() * total;
        for (i, w) in weights.iter().enumerate() {
            if r < *w {
                return i;
            }
            r -= w;
        }
        weights.len() - 1
    }

    /// Shuffles a slice in place (Fisher–Yates).
    pub(crate) fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// Sine from a Taylor polynomial after range reduction (error below 1e-9).
pub(crate) fn sin(x: f64) -> f64 {
    let k = (x / TAU).round();
    let mut r = x - k * TAU;
    if r > FRAC_PI_2 {
        r = PI - r;
    } else if r < -FRAC_PI_2 {
        r = -PI - r;
    }
    let r2 = r * r;
    r * (1.0
        + r2 * (-1.0 / 6.0
            + r2 * (1.0 / 120.0
                + r2 * (-1.0 / 5040.0
                    + r2 * (1.0 / 362_880.0 + r2 * (-1.0 / 39_916_800.0 + r2 / 6_227_020_800.0))))))
}

/// Cosine via [`sin`].
pub(crate) fn cos(x: f64) -> f64 {
    sin(x + FRAC_PI_2)
}

/// Natural logarithm of a positive normal number (atanh series on the mantissa).
pub(crate) fn ln(x: f64) -> f64 {
    debug_assert!(x > 0.0);
    let bits = x.to_bits();
    let mut e = ((bits >> 52) & 0x7FF) as i64 - 1023;
    let mut m = f64::from_bits((bits & 0x000F_FFFF_FFFF_FFFF) | (1023u64 << 52));
    if m > std::f64::consts::SQRT_2 {
        m /= 2.0;
        e += 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut term = s;
    let mut sum = 0.0;
    let mut n = 1.0;
    while n < 30.0 {
        sum += term / n;
        term *= s2;
        n += 2.0;
    }
    e as f64 * LN_2 + 2.0 * sum
}

/// A sine lookup table indexed in turns; fast enough for per-pixel waves.
#[derive(Debug, Clone)]
pub(crate) struct SinTable {
    t: Vec<f32>,
}

const SIN_STEPS: usize = 4096;

impl SinTable {
    /// Builds the table from [`sin`].
    pub(crate) fn new() -> Self {
        let t = (0..=SIN_STEPS)
            .map(|i| sin(TAU * i as f64 / SIN_STEPS as f64) as f32)
            .collect();
        Self { t }
    }

    /// sin(2π·`turns`), linearly interpolated.
    pub(crate) fn sin_turns(&self, turns: f32) -> f32 {
        let f = turns - turns.floor();
        let pos = f * SIN_STEPS as f32;
        let i = (pos as usize).min(SIN_STEPS - 1);
        let frac = pos - i as f32;
        self.t[i] + (self.t[i + 1] - self.t[i]) * frac
    }
}

/// Linear interpolation.
pub(crate) fn lerp(a: f32, b: f32, t: f32) -> f32 {
    a + (b - a) * t
}

/// Hermite step from 0 at `a` to 1 at `b`.
pub(crate) fn smoothstep(a: f32, b: f32, x: f32) -> f32 {
    let t = ((x - a) / (b - a)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// Smooth value noise in [0, 1) on a unit lattice.
pub(crate) fn value_noise(seed: u64, x: f32, y: f32) -> f32 {
    let (xf, yf) = (x.floor(), y.floor());
    let (xi, yi) = (xf as i64, yf as i64);
    let (tx, ty) = (x - xf, y - yf);
    let (sx, sy) = (tx * tx * (3.0 - 2.0 * tx), ty * ty * (3.0 - 2.0 * ty));
    let a = hash_unit(seed, xi, yi);
    let b = hash_unit(seed, xi + 1, yi);
    let c = hash_unit(seed, xi, yi + 1);
    let d = hash_unit(seed, xi + 1, yi + 1);
    lerp(lerp(a, b, sx), lerp(c, d, sx), sy)
}

/// Fractal (octave-summed) value noise in [0, 1).
pub(crate) fn fbm(seed: u64, x: f32, y: f32, octaves: u32) -> f32 {
    let (mut sum, mut amp, mut norm, mut f) = (0.0, 1.0, 0.0, 1.0);
    for o in 0..octaves {
        sum += amp * value_noise(derive(seed, u64::from(o)), x * f, y * f);
        norm += amp;
        amp *= 0.5;
        f *= 2.03;
    }
    sum / norm
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoshiro_stream_is_fixed_by_seed() {
        let a: Vec<u64> = {
            let mut r = Rng::new(7);
            (0..4).map(|_| r.next_u64()).collect()
        };
        let mut r = Rng::new(7);
        assert_eq!(a, (0..4).map(|_| r.next_u64()).collect::<Vec<_>>());
        assert_ne!(a[0], Rng::new(8).next_u64());
        // SplitMix64 reference value for state 0 (from the algorithm's published test vector).
        let mut s = 0u64;
        assert_eq!(splitmix64(&mut s), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn math_matches_std_closely() {
        for i in -200..200 {
            let x = f64::from(i) * 0.173;
            assert!((sin(x) - x.sin()).abs() < 1e-9, "sin {x}");
            assert!((cos(x) - x.cos()).abs() < 1e-9, "cos {x}");
        }
        for x in [1e-12, 0.001, 0.5, 1.0, 1.5, 2.0, 10.0, 12345.6] {
            assert!((ln(x) - x.ln()).abs() < 1e-12, "ln {x}");
        }
        let t = SinTable::new();
        for i in 0..100 {
            let turns = i as f32 * 0.0371 - 1.3;
            assert!((t.sin_turns(turns) - (turns * std::f32::consts::TAU).sin()).abs() < 1e-5);
        }
    }

    #[test]
    fn normals_have_unit_variance() {
        let mut r = Rng::new(3);
        let n = 20_000;
        for f in [Rng::normal as fn(&mut Rng) -> f32, Rng::fast_normal] {
            let v: Vec<f32> = (0..n).map(|_| f(&mut r)).collect();
            let mean = v.iter().sum::<f32>() / n as f32;
            let var = v.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>() / n as f32;
            assert!(
                mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
                "mean {mean} var {var}"
            );
        }
    }
}
