//! lime's local models: sklearn `Ridge` (with intercept, sample weights) on a 0/1 design, its
//! weighted R² (`score`), and lime's feature selections. Everything works from the weighted,
//! centred Gram matrix of all features (built once per input, O(samples × M²)); a fit on any
//! subset of features is then a small solve on a sub-matrix, so forward selection costs no
//! further passes over the samples.
//!
//! Every function asks its cancellation closure as it goes ([`Pace`]), and fails with
//! [`CholeskyError`] when cancelled or when the normal equations cannot be factored (the
//! factorisation tries a bounded number of ridges, then gives up).

use explaind_plugin_math::{CholeskyError, Pace, cholesky, cholesky_solve};
use ndarray::{Array1, Array2};

fn stop(pace: &mut Pace<'_>, work: usize) -> Result<(), CholeskyError> {
    if pace.stop(work) { Err(CholeskyError::Cancelled) } else { Ok(()) }
}

/// Weighted sufficient statistics of (Z, y).
pub struct Gram {
    pub g: Array2<f64>,
    pub z_mean: Array1<f64>,
    pub w_sum: f64,
}

/// Σ w (z − z̄)(z − z̄)ᵀ for 0/1 rows; `row(i, out)` writes sample i's features.
pub fn gram<R: Fn(usize, &mut [f64])>(
    samples: usize,
    m: usize,
    weights: &[f64],
    row: &R,
    cancelled: &dyn Fn() -> bool,
) -> Result<Gram, CholeskyError> {
    let mut pace = Pace::new(cancelled);
    let w_sum: f64 = weights.iter().sum();
    let mut z = vec![0.0; m];
    let mut mean = Array1::<f64>::zeros(m);
    for (i, &w) in weights.iter().enumerate().take(samples) {
        stop(&mut pace, 2 * m + 1)?;
        row(i, &mut z);
        for j in 0..m {
            mean[j] += w * z[j];
        }
    }
    mean /= w_sum;
    // Lower triangle in a flat buffer: the inner loop is a plain slice zip.
    let mut lower = vec![0.0; m * m];
    for (i, &w) in weights.iter().enumerate().take(samples) {
        stop(&mut pace, m * m / 2 + 2 * m + 1)?;
        row(i, &mut z);
        for (v, mu) in z.iter_mut().zip(mean.iter()) {
            *v -= mu;
        }
        for a in 0..m {
            let wa = w * z[a];
            for (g, zb) in lower[a * m..a * m + a + 1].iter_mut().zip(&z) {
                *g += wa * zb;
            }
        }
    }
    let g = Array2::from_shape_fn((m, m), |(a, b)| if b <= a { lower[a * m + b] } else { lower[b * m + a] });
    Ok(Gram { g, z_mean: mean, w_sum })
}

/// Per target: Σ w (z − z̄)(y − ȳ), ȳ and Σ w (y − ȳ)².
pub struct Target {
    pub b: Array1<f64>,
    pub y_mean: f64,
    pub syy: f64,
}

pub fn target<R: Fn(usize, &mut [f64])>(
    gram: &Gram,
    weights: &[f64],
    y: &[f64],
    row: &R,
    cancelled: &dyn Fn() -> bool,
) -> Result<Target, CholeskyError> {
    let mut pace = Pace::new(cancelled);
    let m = gram.z_mean.len();
    let y_mean = weights.iter().zip(y).map(|(w, v)| w * v).sum::<f64>() / gram.w_sum;
    let mut b = Array1::<f64>::zeros(m);
    let mut syy = 0.0;
    let mut z = vec![0.0; m];
    for (i, (&w, &v)) in weights.iter().zip(y).enumerate() {
        stop(&mut pace, 2 * m + 1)?;
        let dy = v - y_mean;
        syy += w * dy * dy;
        row(i, &mut z);
        for j in 0..m {
            b[j] += w * (z[j] - gram.z_mean[j]) * dy;
        }
    }
    Ok(Target { b, y_mean, syy })
}

#[derive(Debug)]
pub struct Fit {
    pub features: Vec<usize>,
    pub coef: Vec<f64>,
    pub intercept: f64,
    /// Weighted R², sklearn's `score(X, y, sample_weight)`.
    pub score: f64,
}

impl Fit {
    /// The model's prediction for a row whose selected features are all 1 (the instance).
    pub fn prediction_at_ones(&self) -> f64 {
        self.intercept + self.coef.iter().sum::<f64>()
    }
}

/// Ridge with intercept on the features in `features`: (G_SS + αI) β = b_S.
pub fn ridge(
    gram: &Gram,
    t: &Target,
    features: &[usize],
    alpha: f64,
    cancelled: &dyn Fn() -> bool,
) -> Result<Fit, CholeskyError> {
    let p = features.len();
    let mut pace = Pace::new(cancelled);
    let mut a = Array2::<f64>::zeros((p, p));
    let mut beta = vec![0.0; p];
    for (i, &fi) in features.iter().enumerate() {
        stop(&mut pace, p)?;
        for (j, &fj) in features.iter().enumerate() {
            a[[i, j]] = gram.g[[fi, fj]];
        }
        a[[i, i]] += alpha;
        beta[i] = t.b[fi];
    }
    let (l, _) = cholesky(&a, cancelled)?;
    cholesky_solve(&l, &mut beta);
    // SSE = syy − 2 βᵀb + βᵀ G β (centred quantities; the intercept takes the means).
    let mut sse = t.syy;
    for i in 0..p {
        stop(&mut pace, p)?;
        sse -= 2.0 * beta[i] * t.b[features[i]];
        for j in 0..p {
            sse += beta[i] * gram.g[[features[i], features[j]]] * beta[j];
        }
    }
    let score = if t.syy > 0.0 {
        1.0 - sse.max(0.0) / t.syy
    } else if sse.abs() < 1e-12 {
        1.0
    } else {
        0.0
    };
    let intercept = t.y_mean - features.iter().zip(&beta).map(|(&f, b)| gram.z_mean[f] * b).sum::<f64>();
    Ok(Fit { features: features.to_vec(), coef: beta, intercept, score })
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Selection {
    Auto,
    None,
    HighestWeights,
    ForwardSelection,
}

/// lime's `feature_selection`: which features the final model uses, in lime's order.
pub fn select(
    gram: &Gram,
    t: &Target,
    k: usize,
    method: Selection,
    cancelled: &dyn Fn() -> bool,
) -> Result<Vec<usize>, CholeskyError> {
    let m = gram.z_mean.len();
    // lime decides 'auto' on the requested count (image explanations ask for 100000).
    if method == Selection::Auto {
        let method = if k <= 6 { Selection::ForwardSelection } else { Selection::HighestWeights };
        return select(gram, t, k, method, cancelled);
    }
    let k = k.min(m);
    Ok(match method {
        Selection::None => (0..m).collect(),
        Selection::Auto | Selection::HighestWeights => {
            // Ridge(alpha=0.01) on everything; rank by |coef × instance| and the instance is
            // all ones in the binary representation. Stable, as Python's sorted.
            let all: Vec<usize> = (0..m).collect();
            let fit = ridge(gram, t, &all, 0.01, cancelled)?;
            let mut order = all;
            order.sort_by(|&a, &b| fit.coef[b].abs().total_cmp(&fit.coef[a].abs()));
            order.truncate(k);
            order
        }
        Selection::ForwardSelection => {
            // Ridge(alpha=0), adding the feature with the best weighted R² each round; the
            // first of equal scores wins, as in lime's strict comparison.
            let mut used: Vec<usize> = Vec::with_capacity(k);
            let mut trial = Vec::with_capacity(k);
            let mut pace = Pace::new(cancelled);
            for _ in 0..k {
                let mut best = (f64::NEG_INFINITY, 0);
                for f in 0..m {
                    if used.contains(&f) {
                        continue;
                    }
                    // A trial fit costs about p³/3 + p² for p = used + 1 features.
                    let p = used.len() + 1;
                    stop(&mut pace, p * p * p / 3 + p * p + m)?;
                    trial.clear();
                    trial.extend_from_slice(&used);
                    trial.push(f);
                    let score = ridge(gram, t, &trial, 0.0, cancelled)?.score;
                    if score > best.0 {
                        best = (score, f);
                    }
                }
                used.push(best.1);
            }
            used
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small weighted 0/1 problem with an intercept to find.
    fn problem() -> (Vec<[f64; 3]>, Vec<f64>, Vec<f64>) {
        let z = vec![[1., 1., 0.], [1., 0., 1.], [0., 1., 1.], [1., 1., 1.], [0., 0., 1.], [1., 0., 0.]];
        (z, vec![3.0, 1.0, 2.0, 4.0, 0.5, 1.5], vec![1.0, 2.0, 1.0, 0.5, 1.0, 3.0])
    }

    /// The same fit by brute force: weighted normal equations on [1, Z] with the penalty on
    /// the slopes only, solved by Gaussian elimination.
    #[allow(clippy::needless_range_loop)]
    fn direct(z: &[[f64; 3]], y: &[f64], w: &[f64], alpha: f64) -> Vec<f64> {
        let mut a = [[0.0; 5]; 4];
        for i in 0..z.len() {
            let x = [1.0, z[i][0], z[i][1], z[i][2]];
            for r in 0..4 {
                for c in 0..4 {
                    a[r][c] += w[i] * x[r] * x[c];
                }
                a[r][4] += w[i] * x[r] * y[i];
            }
        }
        for r in 1..4 {
            a[r][r] += alpha;
        }
        for p in 0..4 {
            for r in 0..4 {
                if r != p {
                    let f = a[r][p] / a[p][p];
                    for c in 0..5 {
                        a[r][c] -= f * a[p][c];
                    }
                }
            }
        }
        (0..4).map(|r| a[r][4] / a[r][r]).collect()
    }

    #[test]
    fn weighted_ridge_with_intercept_matches_the_direct_solution() {
        let (z, y, w) = problem();
        let row = |i: usize, out: &mut [f64]| out.copy_from_slice(&z[i]);
        let g = gram(6, 3, &w, &row, &|| false).unwrap();
        let t = target(&g, &w, &y, &row, &|| false).unwrap();
        for alpha in [0.0, 0.01, 1.0] {
            let fit = ridge(&g, &t, &[0, 1, 2], alpha, &|| false).unwrap();
            let want = direct(&z, &y, &w, alpha);
            assert!((fit.intercept - want[0]).abs() < 1e-10, "alpha {alpha}");
            for j in 0..3 {
                assert!((fit.coef[j] - want[j + 1]).abs() < 1e-10, "alpha {alpha}");
            }
            // Weighted R² from its definition.
            let ybar: f64 = w.iter().zip(&y).map(|(a, b)| a * b).sum::<f64>() / w.iter().sum::<f64>();
            let (mut sse, mut sst) = (0.0, 0.0);
            for i in 0..6 {
                let pred = fit.intercept + (0..3).map(|j| fit.coef[j] * z[i][j]).sum::<f64>();
                sse += w[i] * (y[i] - pred).powi(2);
                sst += w[i] * (y[i] - ybar).powi(2);
            }
            assert!((fit.score - (1.0 - sse / sst)).abs() < 1e-10);
        }
    }

    #[test]
    fn forward_selection_picks_the_strongest_feature_first() {
        // y depends on feature 2 strongly, feature 0 weakly, feature 1 not at all.
        let z: Vec<[f64; 3]> = (0..16).map(|i| [(i & 1) as f64, (i >> 1 & 1) as f64, (i >> 2 & 1) as f64]).collect();
        let y: Vec<f64> = z.iter().enumerate().map(|(i, r)| 5.0 * r[2] + 0.7 * r[0] + 0.01 * (i as f64 % 3.0)).collect();
        let w = vec![1.0; 16];
        let row = |i: usize, out: &mut [f64]| out.copy_from_slice(&z[i]);
        let g = gram(16, 3, &w, &row, &|| false).unwrap();
        let t = target(&g, &w, &y, &row, &|| false).unwrap();
        let select = |k, method| select(&g, &t, k, method, &|| false).unwrap();
        assert_eq!(select(2, Selection::ForwardSelection), vec![2, 0]);
        assert_eq!(select(2, Selection::Auto), vec![2, 0]);
        assert_eq!(select(2, Selection::HighestWeights), vec![2, 0]);
        assert_eq!(select(2, Selection::None), vec![0, 1, 2]);
    }

    #[test]
    fn a_constant_feature_does_not_break_an_unpenalised_fit() {
        let z: Vec<[f64; 3]> = (0..8).map(|i| [1.0, (i & 1) as f64, (i >> 1 & 1) as f64]).collect();
        let y: Vec<f64> = z.iter().map(|r| 2.0 * r[1] - r[2]).collect();
        let w = vec![1.0; 8];
        let row = |i: usize, out: &mut [f64]| out.copy_from_slice(&z[i]);
        let g = gram(8, 3, &w, &row, &|| false).unwrap();
        let t = target(&g, &w, &y, &row, &|| false).unwrap();
        let fit = ridge(&g, &t, &[0, 1, 2], 0.0, &|| false).unwrap();
        assert!((fit.coef[1] - 2.0).abs() < 1e-6 && (fit.coef[2] + 1.0).abs() < 1e-6, "{:?}", fit.coef);
        assert!((fit.score - 1.0).abs() < 1e-9);
    }

    /// A kernel width of 1e-300 made every weight 0/0 = NaN; the ridge loop then grew its
    /// jitter to infinity and never ended. Now the fit ends with an error.
    #[test]
    fn a_degenerate_kernel_width_ends_the_fit_with_an_error() {
        let z: Vec<[f64; 3]> = (0..8).map(|i| [(i & 1) as f64, (i >> 1 & 1) as f64, (i >> 2 & 1) as f64]).collect();
        let y: Vec<f64> = (0..8).map(|i| i as f64).collect();
        let width = 1e-300f64;
        // lime's kernel: sqrt(exp(−d²/w²)), d = the number of features switched off, rooted.
        let w: Vec<f64> = z
            .iter()
            .map(|r| {
                let d2 = r.iter().filter(|&&v| v == 0.0).count() as f64;
                (-d2 / (width * width)).exp().sqrt()
            })
            .collect();
        assert!(w.iter().any(|v| v.is_nan()), "the weights this width gives: {w:?}");
        let row = |i: usize, out: &mut [f64]| out.copy_from_slice(&z[i]);
        let g = gram(8, 3, &w, &row, &|| false).unwrap();
        let t = target(&g, &w, &y, &row, &|| false).unwrap();
        for alpha in [0.0, 1.0] {
            assert_eq!(ridge(&g, &t, &[0, 1, 2], alpha, &|| false).unwrap_err(), CholeskyError::NotFinite);
        }
        assert_eq!(select(&g, &t, 2, Selection::HighestWeights, &|| false).unwrap_err(), CholeskyError::NotFinite);
    }

    #[test]
    fn the_gram_matrix_and_forward_selection_stop_when_cancelled() {
        let (m, samples) = (200, 2000);
        let z: Vec<Vec<f64>> = (0..samples).map(|i| (0..m).map(|j| ((i * 7 + j * 3 + i * j) % 2) as f64).collect()).collect();
        let w = vec![1.0; samples];
        let row = |i: usize, out: &mut [f64]| out.copy_from_slice(&z[i]);
        let asked = std::cell::Cell::new(0);
        let stop = || {
            asked.set(asked.get() + 1);
            true
        };
        // 2000 samples × 200² / 2 = 4·10^7 multiply-adds: stopped after the first stretch.
        assert_eq!(gram(samples, m, &w, &row, &stop).err().map(|e| e.to_string()), Some("cancelled".into()));
        assert_eq!(asked.get(), 1);
        let g = gram(samples, m, &w, &row, &|| false).unwrap();
        let y: Vec<f64> = (0..samples).map(|i| i as f64).collect();
        let t = target(&g, &w, &y, &row, &|| false).unwrap();
        asked.set(0);
        let err = select(&g, &t, 150, Selection::ForwardSelection, &stop).unwrap_err();
        assert_eq!(err, CholeskyError::Cancelled);
        assert_eq!(asked.get(), 1);
    }
}
