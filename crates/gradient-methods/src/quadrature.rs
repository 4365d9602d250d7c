//! Quadrature rules for the path integral of integrated gradients, as captum defines them:
//! `IG = (x − b) · Σ_k w_k ∇f(b + α_k (x − b))` with points α_k in [0, 1] and weights w_k that
//! sum to 1.

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

    /// The smallest number of steps the rule is defined for.
    pub fn min_steps(self) -> usize {
        if self == PathMethod::RiemannTrapezoid { 2 } else { 1 }
    }

    /// `steps` points α_k and weights w_k (captum's `alphas` and `step_sizes`).
    pub fn points(self, steps: usize) -> (Vec<f64>, Vec<f64>) {
        assert!(steps >= self.min_steps(), "{self:?} needs at least {} steps", self.min_steps());
        let n = steps as f64;
        match self {
            PathMethod::GaussLegendre => {
                let (nodes, weights) = gauss_legendre(steps);
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
        }
    }
}

/// Nodes (ascending) and weights of the n-point Gauss–Legendre rule on [−1, 1], by Newton's
/// method on the Legendre polynomial P_n from the usual asymptotic first guesses.
pub fn gauss_legendre(n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut nodes = vec![0.0; n];
    let mut weights = vec![0.0; n];
    for i in 0..n.div_ceil(2) {
        let mut x = (std::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
        let mut derivative = 0.0;
        for _ in 0..100 {
            // P_n(x) and P_n'(x) by the three-term recurrence.
            let (mut p0, mut p1) = (1.0, x);
            for k in 2..=n {
                let k = k as f64;
                (p0, p1) = (p1, ((2.0 * k - 1.0) * x * p1 - (k - 1.0) * p0) / k);
            }
            let (pn, pn_1) = if n == 1 { (x, 1.0) } else { (p1, p0) };
            derivative = n as f64 * (x * pn - pn_1) / (x * x - 1.0);
            let step = pn / derivative;
            x -= step;
            if step.abs() < 1e-15 {
                break;
            }
        }
        if n == 1 {
            derivative = 1.0;
            x = 0.0;
        }
        let w = 2.0 / ((1.0 - x * x) * derivative * derivative);
        // Roots come in ± pairs; the first guesses run from the largest root down.
        nodes[n - 1 - i] = x;
        nodes[i] = -x;
        weights[n - 1 - i] = w;
        weights[i] = w;
    }
    (nodes, weights)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauss_legendre_matches_the_tabulated_three_point_rule() {
        // Abramowitz & Stegun 25.4.29: ±sqrt(3/5) with weight 5/9, 0 with weight 8/9.
        let (x, w) = gauss_legendre(3);
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
            let (x, w) = gauss_legendre(n);
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
    fn every_rule_integrates_a_linear_path_exactly_and_riemann_sums_converge() {
        // ∫_0^1 α dα = 1/2 for every rule but left and right Riemann, whose error is ±1/(2n).
        for method in PathMethod::NAMES.iter().map(|n| PathMethod::parse(n).unwrap()) {
            let (a, w) = method.points(8);
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
            let (a, w) = m.points(n);
            (a.iter().zip(&w).map(|(a, w)| a.exp() * w).sum::<f64>() - (std::f64::consts::E - 1.0)).abs()
        };
        for m in [PathMethod::RiemannMiddle, PathMethod::RiemannTrapezoid, PathMethod::RiemannLeft] {
            assert!(error(m, 64) < error(m, 8) / 4.0, "{m:?}");
        }
        assert!(error(PathMethod::GaussLegendre, 5) < 1e-10);
    }
}
