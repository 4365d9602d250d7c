//! Quadrature rules for the path integral of integrated gradients, as captum defines them:
//! `IG = (x − b) · Σ_k w_k ∇f(b + α_k (x − b))` with points α_k in [0, 1] and weights w_k that
//! sum to 1.

use explaind_plugin_sdk::{Error, Request};

/// Most path steps any rule takes: far beyond what a path integral needs (captum's default is
/// 50), and small enough that the points themselves are a few megabytes.
pub const MAX_STEPS: usize = 100_000;

/// Most Gauss–Legendre nodes: computing them costs O(steps²) (Newton's method on the Legendre
/// polynomial, whose evaluation is a recurrence over every degree), about 2 ms for 2048 nodes
/// optimised and 50 ms in a debug build. 2048 nodes integrate polynomials of degree 4095
/// exactly; more would be noise in float32.
pub const MAX_GAUSS_LEGENDRE_STEPS: usize = 2048;

/// A rule for the integral over α ∈ [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathMethod {
    /// Gauss–Legendre nodes mapped to [0, 1]: exact for polynomials of degree 2n − 1.
    GaussLegendre,
    RiemannLeft,
    RiemannRight,
    RiemannMiddle,
    RiemannTrapezoid,
}

impl PathMethod {
    /// The names captum uses for its `method` argument.
    pub const NAMES: &'static [&'static str] =
        &["gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"];

    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "gausslegendre" => PathMethod::GaussLegendre,
            "riemann_left" => PathMethod::RiemannLeft,
            "riemann_right" => PathMethod::RiemannRight,
            "riemann_middle" => PathMethod::RiemannMiddle,
            "riemann_trapezoid" => PathMethod::RiemannTrapezoid,
            _ => return None,
        })
    }

    /// The rule's name, as captum spells it.
    pub fn name(self) -> &'static str {
        match self {
            PathMethod::GaussLegendre => "gausslegendre",
            PathMethod::RiemannLeft => "riemann_left",
            PathMethod::RiemannRight => "riemann_right",
            PathMethod::RiemannMiddle => "riemann_middle",
            PathMethod::RiemannTrapezoid => "riemann_trapezoid",
        }
    }

    /// The smallest number of steps the rule is defined for.
    pub fn min_steps(self) -> usize {
        if self == PathMethod::RiemannTrapezoid { 2 } else { 1 }
    }

    /// The largest number of steps the rule takes (see [`MAX_GAUSS_LEGENDRE_STEPS`]).
    pub fn max_steps(self) -> usize {
        if self == PathMethod::GaussLegendre { MAX_GAUSS_LEGENDRE_STEPS } else { MAX_STEPS }
    }

    /// `steps` checked against the rule's bounds; the error names `parameters.<name>`.
    pub fn check_steps(self, name: &str, steps: i64) -> Result<usize, Error> {
        let (min, max) = (self.min_steps(), self.max_steps());
        if steps < min as i64 || steps > max as i64 {
            let why = if self == PathMethod::GaussLegendre && steps > max as i64 {
                " (its nodes cost O(steps²) to compute; a riemann_* rule takes more steps)"
            } else {
                ""
            };
            return Err(Error::invalid_argument(format!(
                "parameters.{name}: {} takes {min} to {max} steps{why}, got {steps}",
                self.name()
            )));
        }
        Ok(steps as usize)
    }

    /// `steps` points α_k and weights w_k (captum's `alphas` and `step_sizes`). `steps` must
    /// be within [`PathMethod::check_steps`]'s bounds; `cancelled` is asked while the
    /// Gauss–Legendre nodes are computed.
    pub fn points(self, steps: usize, cancelled: &dyn Fn() -> bool) -> Result<(Vec<f64>, Vec<f64>), Error> {
        self.check_steps("steps", steps.try_into().unwrap_or(i64::MAX))?;
        let n = steps as f64;
        Ok(match self {
            PathMethod::GaussLegendre => {
                let (nodes, weights) = gauss_legendre(steps, cancelled).ok_or_else(Error::cancelled)?;
                (nodes.iter().map(|x| 0.5 * (1.0 + x)).collect(), weights.iter().map(|w| 0.5 * w).collect())
            }
            PathMethod::RiemannLeft => ((0..steps).map(|k| k as f64 / n).collect(), vec![1.0 / n; steps]),
            PathMethod::RiemannRight => ((1..=steps).map(|k| k as f64 / n).collect(), vec![1.0 / n; steps]),
            PathMethod::RiemannMiddle => ((0..steps).map(|k| (k as f64 + 0.5) / n).collect(), vec![1.0 / n; steps]),
            PathMethod::RiemannTrapezoid => {
                let h = 1.0 / (n - 1.0);
                let alphas = (0..steps).map(|k| k as f64 * h).collect();
                let mut weights = vec![h; steps];
                weights[0] = h / 2.0;
                weights[steps - 1] = h / 2.0;
                (alphas, weights)
            }
        })
    }
}

/// The rule and step count of a request: text parameter `method` and integer parameter
/// `steps`, checked against the rule's bounds (INVALID_ARGUMENT naming the parameter).
pub fn path_rule(request: &Request<'_>) -> Result<(PathMethod, usize), Error> {
    let method = PathMethod::parse(crate::choice(request, "method", PathMethod::NAMES)?).expect("checked");
    let steps = request.integer("steps")?.ok_or_else(|| Error::invalid_argument("parameters.steps: required"))?;
    Ok((method, method.check_steps("steps", steps)?))
}

/// Roots refined together: their recurrences are independent, so the CPU overlaps them.
const LANES: usize = 8;

/// Newton steps per root at most; from the asymptotic first guesses 2 to 4 are needed.
const NEWTON_STEPS: usize = 100;

/// Nodes (ascending) and weights of the n-point Gauss–Legendre rule on [−1, 1], by Newton's
/// method on the Legendre polynomial P_n from the usual asymptotic first guesses; `None` when
/// `cancelled` said stop (it is asked once per [`LANES`] roots).
pub fn gauss_legendre(n: usize, cancelled: &dyn Fn() -> bool) -> Option<(Vec<f64>, Vec<f64>)> {
    if n == 0 {
        return Some((Vec::new(), Vec::new()));
    }
    if n == 1 {
        return Some((vec![0.0], vec![2.0]));
    }
    let mut nodes = vec![0.0; n];
    let mut weights = vec![0.0; n];
    // P_k = a_k · x · P_{k−1} − b_k · P_{k−2}, with a_k = (2k − 1)/k and b_k = (k − 1)/k.
    let coefficients: Vec<(f64, f64)> = (2..=n)
        .map(|k| {
            let k = k as f64;
            ((2.0 * k - 1.0) / k, (k - 1.0) / k)
        })
        .collect();
    let half = n.div_ceil(2);
    let mut first = 0;
    while first < half {
        if cancelled() {
            return None;
        }
        let lanes = LANES.min(half - first);
        let mut x = [0.0f64; LANES];
        let mut derivative = [0.0f64; LANES];
        let mut done = [true; LANES];
        for l in 0..lanes {
            x[l] = (std::f64::consts::PI * ((first + l) as f64 + 0.75) / (n as f64 + 0.5)).cos();
            done[l] = false;
        }
        for _ in 0..NEWTON_STEPS {
            // P_n(x) and P_{n−1}(x) by the three-term recurrence, every lane at once.
            let (mut p0, mut p1) = ([1.0f64; LANES], x);
            for &(a, b) in &coefficients {
                for l in 0..LANES {
                    (p0[l], p1[l]) = (p1[l], a * x[l] * p1[l] - b * p0[l]);
                }
            }
            for l in 0..lanes {
                if done[l] {
                    continue;
                }
                derivative[l] = n as f64 * (x[l] * p1[l] - p0[l]) / (x[l] * x[l] - 1.0);
                let step = p1[l] / derivative[l];
                x[l] -= step;
                done[l] = step.abs() < 1e-15;
            }
            if done.iter().all(|&d| d) {
                break;
            }
        }
        for l in 0..lanes {
            let (i, x) = (first + l, x[l]);
            let w = 2.0 / ((1.0 - x * x) * derivative[l] * derivative[l]);
            // Roots come in ± pairs; the first guesses run from the largest root down.
            nodes[n - 1 - i] = x;
            nodes[i] = -x;
            weights[n - 1 - i] = w;
            weights[i] = w;
        }
        first += lanes;
    }
    if n % 2 == 1 {
        nodes[n / 2] = 0.0; // the middle root is 0 exactly (its guess converges to ±1e-17)
    }
    Some((nodes, weights))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauss_legendre_matches_the_tabulated_three_point_rule() {
        // Abramowitz & Stegun 25.4.29: ±sqrt(3/5) with weight 5/9, 0 with weight 8/9.
        let (x, w) = gauss_legendre(3, &|| false).unwrap();
        let r = (3.0f64 / 5.0).sqrt();
        for (got, want) in x.iter().zip([-r, 0.0, r]) {
            assert!((got - want).abs() < 1e-14, "{x:?}");
        }
        for (got, want) in w.iter().zip([5.0 / 9.0, 8.0 / 9.0, 5.0 / 9.0]) {
            assert!((got - want).abs() < 1e-14, "{w:?}");
        }
    }

    #[test]
    fn gauss_legendre_integrates_polynomials_up_to_degree_2n_minus_1_exactly() {
        for n in [1, 2, 5, 50] {
            let (x, w) = gauss_legendre(n, &|| false).unwrap();
            assert!((w.iter().sum::<f64>() - 2.0).abs() < 1e-12, "n={n}");
            for degree in 0..2 * n {
                let integral: f64 = x.iter().zip(&w).map(|(x, w)| w * x.powi(degree as i32)).sum();
                // ∫_{-1}^{1} x^d dx = 2/(d+1) for even d, 0 for odd d.
                let exact = if degree % 2 == 0 { 2.0 / (degree as f64 + 1.0) } else { 0.0 };
                assert!((integral - exact).abs() < 1e-11, "n={n} degree={degree}: {integral} vs {exact}");
            }
        }
    }

    #[test]
    fn the_largest_gauss_legendre_rule_is_still_exact_and_cancellable() {
        let n = MAX_GAUSS_LEGENDRE_STEPS;
        let (x, w) = gauss_legendre(n, &|| false).unwrap();
        assert!((w.iter().sum::<f64>() - 2.0).abs() < 1e-12);
        assert!(x.windows(2).all(|p| p[0] < p[1]), "ascending, distinct nodes");
        for degree in [2, 10, 40] {
            let integral: f64 = x.iter().zip(&w).map(|(x, w)| w * x.powi(degree)).sum();
            assert!((integral - 2.0 / (degree as f64 + 1.0)).abs() < 1e-12, "degree {degree}: {integral}");
        }
        // Cancelled: stops at the first question, before any root is refined.
        let asked = std::cell::Cell::new(0);
        let stop = || {
            asked.set(asked.get() + 1);
            true
        };
        assert!(gauss_legendre(n, &stop).is_none());
        assert_eq!(asked.get(), 1);
        let err = PathMethod::GaussLegendre.points(n, &|| true).unwrap_err();
        assert_eq!(err.code, explaind_plugin_sdk::EXD_CANCELLED);
    }

    #[test]
    fn steps_outside_a_rules_bounds_are_refused_naming_the_parameter() {
        let gl = PathMethod::GaussLegendre;
        assert_eq!(gl.check_steps("steps", 50).unwrap(), 50);
        let err = gl.check_steps("steps", MAX_GAUSS_LEGENDRE_STEPS as i64 + 1).unwrap_err();
        assert!(err.message.starts_with("parameters.steps: gausslegendre takes 1 to 2048 steps"), "{}", err.message);
        assert!(PathMethod::RiemannMiddle.check_steps("steps", 100_000).is_ok());
        assert!(PathMethod::RiemannMiddle.check_steps("steps", 100_001).is_err());
        assert!(PathMethod::RiemannTrapezoid.check_steps("steps", 1).is_err());
        assert!(PathMethod::RiemannLeft.check_steps("steps", i64::MAX).is_err());
        assert!(PathMethod::RiemannLeft.check_steps("steps", 0).is_err());
        // points() checks too, so no caller can make it allocate 2^62 weights.
        assert!(PathMethod::RiemannLeft.points(1 << 62, &|| false).is_err());
    }

    #[test]
    fn every_rule_integrates_a_linear_path_exactly_and_riemann_sums_converge() {
        for name in PathMethod::NAMES {
            assert_eq!(PathMethod::parse(name).unwrap().name(), *name);
        }
        // ∫_0^1 α dα = 1/2 for every rule but left and right Riemann, whose error is ±1/(2n).
        for method in PathMethod::NAMES.iter().map(|n| PathMethod::parse(n).unwrap()) {
            let (a, w) = method.points(8, &|| false).unwrap();
            assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12, "{method:?}");
            let integral: f64 = a.iter().zip(&w).map(|(a, w)| a * w).sum();
            let expected = match method {
                PathMethod::RiemannLeft => 0.5 - 1.0 / 16.0,
                PathMethod::RiemannRight => 0.5 + 1.0 / 16.0,
                _ => 0.5,
            };
            assert!((integral - expected).abs() < 1e-12, "{method:?}: {integral}");
        }
        // ∫_0^1 e^α dα = e − 1: the error falls as the steps grow.
        let error = |m: PathMethod, n| {
            let (a, w) = m.points(n, &|| false).unwrap();
            (a.iter().zip(&w).map(|(a, w)| a.exp() * w).sum::<f64>() - (std::f64::consts::E - 1.0)).abs()
        };
        for m in [PathMethod::RiemannMiddle, PathMethod::RiemannTrapezoid, PathMethod::RiemannLeft] {
            assert!(error(m, 64) < error(m, 8) / 4.0, "{m:?}");
        }
        assert!(error(PathMethod::GaussLegendre, 5) < 1e-10);
    }
}
