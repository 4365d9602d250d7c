//! The plugin's seeded random numbers (shared with the Kernel SHAP plugin), and the standard
//! normal CDF and its inverse, for lime's truncated-normal sampling.

pub use explaind_plugin_math::Rng;

/// N(mean, std²) truncated to [lo, hi] (in data units), sampled by inverting the CDF. The CDF
/// at both ends is computed once, so a draw costs one uniform and one quantile. An interval
/// in the upper tail is mirrored into the lower one, where the CDF keeps its relative precision.
/// A draw takes exactly one uniform (so samples can be generated independently; see
/// [`Rng::seek`]).
#[derive(Clone, Debug)]
pub struct TruncatedNormal {
    mean: f64,
    std: f64,
    lo: f64,
    hi: f64,
    /// Standardised ends, after mirroring.
    a: f64,
    b: f64,
    sign: f64,
    pa: f64,
    width: f64,
}

impl TruncatedNormal {
    pub fn new(mean: f64, std: f64, lo: f64, hi: f64) -> Self {
        let (a, b) = ((lo - mean) / std, (hi - mean) / std);
        let (a, b, sign) = if a > 0.0 { (-b, -a, -1.0) } else { (a, b, 1.0) };
        let (pa, pb) = (normal_cdf(a), normal_cdf(b));
        TruncatedNormal { mean, std, lo, hi, a, b, sign, pa, width: pb - pa }
    }

    /// The draw for a uniform `u` in [0, 1).
    pub fn sample(&self, u: f64) -> f64 {
        let z = if self.width > 0.0 {
            let u = self.pa + u * self.width;
            normal_quantile(u.max(f64::MIN_POSITIVE)).clamp(self.a, self.b)
        } else {
            // Both ends beyond the CDF's resolution: the interval is a point at this scale.
            0.5 * (self.a + self.b)
        };
        (self.mean + self.std * self.sign * z).clamp(self.lo, self.hi)
    }
}

/// Φ(x) through erfc, with relative error about 1e-7 in the lower tail (Numerical Recipes'
/// Chebyshev fit of erfc).
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.26551223
        + t * (1.00002368
            + t * (0.37409196
                + t * (0.09678418
                    + t * (-0.18628806
                        + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))));
    let r = t * poly.exp();
    if x >= 0.0 { r } else { 2.0 - r }
}

/// Φ⁻¹(p) by Acklam's rational approximation (relative error below 1.2e-9).
#[allow(clippy::excessive_precision)] // the coefficients as Acklam published them
pub fn normal_quantile(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969683028665376e1,
        2.209460984245205e2,
        -2.759285104469687e2,
        1.383577518672690e2,
        -3.066479806614716e1,
        2.506628277459239,
    ];
    const B: [f64; 5] =
        [-5.447609879822406e1, 1.615858368580409e2, -1.556989798598866e2, 6.680131188771972e1, -1.328068155288572e1];
    const C: [f64; 6] = [
        -7.784894002430293e-3,
        -3.223964580411365e-1,
        -2.400758277161838,
        -2.549732539343734,
        4.374664141464968,
        2.938163982698783,
    ];
    const D: [f64; 4] = [7.784695709041462e-3, 3.224671290700398e-1, 2.445134137142996, 3.754408661907416];
    let low = 0.02425;
    if p < low {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - low {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        let q = (-2.0 * (1.0 - p).ln()).sqrt();
        -(((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_cdf_and_quantile_invert_each_other() {
        for &x in &[-6.0, -2.5, -1.0, 0.0, 0.3, 1.7, 4.0] {
            let p = normal_cdf(x);
            assert!((normal_quantile(p) - x).abs() < 1e-5, "{x}");
        }
        assert!((normal_cdf(1.959963984540054) - 0.975).abs() < 1e-7);
    }

    #[test]
    fn truncated_normal_stays_in_its_interval_with_the_right_mean() {
        let mut r = Rng::new(2, 0);
        // N(0, 1) on [0, inf-ish): mean sqrt(2/pi) = 0.7979.
        let draws: Vec<f64> = (0..40_000).map(|_| TruncatedNormal::new(0.0, 1.0, 0.0, 50.0).sample(r.uniform())).collect();
        assert!(draws.iter().all(|&d| (0.0..=50.0).contains(&d)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((mean - 0.7979).abs() < 0.02, "{mean}");
        // Far in the upper tail: stays inside.
        for _ in 0..100 {
            let d = TruncatedNormal::new(0.0, 1.0, 7.0, 7.5).sample(r.uniform());
            assert!((7.0..=7.5).contains(&d));
        }
    }
}
