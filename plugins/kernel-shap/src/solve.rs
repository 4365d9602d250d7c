//! The Kernel SHAP regression: weighted least squares without intercept, with the efficiency
//! constraint Σφ = total enforced exactly by eliminating the last feature (shap's `solve`),
//! through a hand-written Cholesky factorisation of the (M−1)×(M−1) normal equations.
//!
//! [`fit`] asks its cancellation closure as it goes (see [`Pace`]), and its factorisation
//! gives up rather than loop when the normal equations cannot be factored.

use explaind_plugin_math::{CholeskyError, Pace, cholesky, cholesky_solve};
use ndarray::{Array1, Array2, s};

/// Rows of A⁻¹ per block of the sandwich product (a cancellation check between blocks).
const BLOCK: usize = 64;

/// The design of one explanation: the 0/1 coalition matrix restricted to the `active`
/// features, with the last active feature eliminated. `x_row` fills row c of X:
/// X[c, j] = z[c, active[j]] − z[c, active[last]].
pub struct Design<'a, Z: Fn(usize, usize) -> bool> {
    pub z: &'a Z,
    pub rows: usize,
    pub weights: &'a [f64],
    pub active: &'a [usize],
}

impl<Z: Fn(usize, usize) -> bool> Design<'_, Z> {
    fn x_row(&self, c: usize, out: &mut [f64]) -> f64 {
        let last = *self.active.last().unwrap();
        let z_last = if (self.z)(c, last) { 1.0 } else { 0.0 };
        for (o, &j) in out.iter_mut().zip(self.active) {
            *o = if (self.z)(c, j) { 1.0 } else { 0.0 } - z_last;
        }
        z_last
    }
}

/// φ and standard errors for every target of one input, and the ridge that had to be added
/// (0 unless the normal equations were singular).
pub struct Fit {
    pub phi: Vec<Array1<f64>>,
    pub se: Vec<Array1<f64>>,
    pub jitter: f64,
}

/// φ for the active features (the rest are 0) with Σφ = `totals[t]` exactly, for every target
/// t at once: `ys[t][c]` is link(value of coalition c) − link(E f) for target t. The targets
/// share the design, so the normal matrix is built and factored once and each coalition's row
/// of X is formed twice in all (once for the fit, once for the errors), whatever T is.
///
/// The standard errors are the sandwich (HC0) estimate over the *sampled* rows only
/// (`sampled_from` on): enumerated coalitions are not random, so a budget that enumerates
/// everything has zero sampling error.
///
/// Fails with [`CholeskyError::Cancelled`] when `cancelled` says stop, and with the other
/// errors when the normal equations have non-finite entries or cannot be factored.
#[allow(clippy::needless_range_loop)] // rows c index every target's y and the design alike
pub fn fit<Z: Fn(usize, usize) -> bool>(
    design: &Design<'_, Z>,
    ys: &[&[f64]],
    totals: &[f64],
    sampled_from: usize,
    cancelled: &dyn Fn() -> bool,
) -> Result<Fit, CholeskyError> {
    let p = design.active.len() - 1;
    let targets = ys.len();
    let mut pace = Pace::new(cancelled);
    let mut stop = |work: usize| if pace.stop(work) { Err(CholeskyError::Cancelled) } else { Ok(()) };
    // Lower triangles accumulate in flat buffers: the inner loops are plain slice zips.
    let mut lower = vec![0.0; p * p];
    let mut beta = vec![0.0; targets * p];
    let mut x = vec![0.0; p];
    for c in 0..design.rows {
        stop(p * p / 2 + targets * p + 1)?;
        let z_last = design.x_row(c, &mut x);
        let w = design.weights[c];
        for i in 0..p {
            let wx = w * x[i];
            if wx != 0.0 {
                for (a, xj) in lower[i * p..i * p + i + 1].iter_mut().zip(&x) {
                    *a += wx * xj;
                }
            }
        }
        for t in 0..targets {
            let wy = w * (ys[t][c] - z_last * totals[t]);
            for (b, xi) in beta[t * p..(t + 1) * p].iter_mut().zip(&x) {
                *b += wy * xi;
            }
        }
    }
    let a = symmetric(&lower, p);
    let (l, jitter) = cholesky(&a, cancelled)?;
    let mut phi = Vec::with_capacity(targets);
    for t in 0..targets {
        stop(p * p + 1)?;
        let b = &mut beta[t * p..(t + 1) * p];
        cholesky_solve(&l, b);
        let mut values = Array1::<f64>::zeros(p + 1);
        for i in 0..p {
            values[i] = b[i];
        }
        values[p] = totals[t] - b.iter().sum::<f64>();
        phi.push(values);
    }

    // Sandwich: V = A⁻¹ (Σ w² r² x xᵀ) A⁻¹ over the sampled rows.
    let mut meats = vec![0.0; targets * p * p];
    let mut any = vec![false; targets];
    for c in sampled_from..design.rows {
        stop(targets * (p * p / 2 + p) + 1)?;
        let z_last = design.x_row(c, &mut x);
        for t in 0..targets {
            let fitted: f64 = x.iter().zip(&beta[t * p..(t + 1) * p]).map(|(a, b)| a * b).sum();
            let g = design.weights[c] * (ys[t][c] - z_last * totals[t] - fitted);
            if g == 0.0 {
                continue;
            }
            any[t] = true;
            let meat = &mut meats[t * p * p..(t + 1) * p * p];
            for i in 0..p {
                let gx = g * g * x[i];
                if gx != 0.0 {
                    for (m, xj) in meat[i * p..i * p + i + 1].iter_mut().zip(&x) {
                        *m += gx * xj;
                    }
                }
            }
        }
    }
    let mut se = vec![Array1::<f64>::zeros(p + 1); targets];
    if any.iter().any(|&a| a) {
        // A⁻¹ column by column, once for every target.
        let mut inv = Array2::<f64>::zeros((p, p));
        let mut col = vec![0.0; p];
        for j in 0..p {
            stop(p * p + 1)?;
            col.iter_mut().enumerate().for_each(|(i, v)| *v = if i == j { 1.0 } else { 0.0 });
            cholesky_solve(&l, &mut col);
            for i in 0..p {
                inv[[i, j]] = col[i];
            }
        }
        // Only diag(V) and Σ V are needed: V's rows come BLOCK at a time, as
        // (A⁻¹ S)[rows] · A⁻¹, so the O(p³) product can stop between blocks.
        let ones_through_inv: Array1<f64> = inv.sum_axis(ndarray::Axis(1));
        for t in (0..targets).filter(|&t| any[t]) {
            let meat = symmetric(&meats[t * p * p..(t + 1) * p * p], p);
            let mut var_last = 0.0;
            for first in (0..p).step_by(BLOCK) {
                let last = (first + BLOCK).min(p);
                stop(2 * (last - first) * p * p + 1)?;
                let w = inv.slice(s![first..last, ..]).dot(&meat);
                for (r, i) in (first..last).enumerate() {
                    let row = w.row(r);
                    se[t][i] = row.dot(&inv.column(i)).max(0.0).sqrt();
                    var_last += row.dot(&ones_through_inv);
                }
            }
            se[t][p] = var_last.max(0.0).sqrt();
        }
    }
    Ok(Fit { phi, se, jitter })
}

fn symmetric(lower: &[f64], p: usize) -> Array2<f64> {
    Array2::from_shape_fn((p, p), |(i, j)| if j <= i { lower[i * p + j] } else { lower[j * p + i] })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solves_a_known_system() {
        let a = ndarray::arr2(&[[4.0, 2.0, 0.6], [2.0, 5.0, 1.0], [0.6, 1.0, 3.0]]);
        let (l, jitter) = cholesky(&a, &|| false).unwrap();
        assert_eq!(jitter, 0.0);
        let want = [1.0, -2.0, 0.5];
        let mut b: Vec<f64> = (0..3).map(|i| (0..3).map(|j| a[[i, j]] * want[j]).sum()).collect();
        cholesky_solve(&l, &mut b);
        for (x, w) in b.iter().zip(want) {
            assert!((x - w).abs() < 1e-12);
        }
    }

    #[test]
    fn singular_systems_get_a_small_ridge_instead_of_failing() {
        let a = ndarray::arr2(&[[1.0, 1.0], [1.0, 1.0]]);
        let (l, jitter) = cholesky(&a, &|| false).unwrap();
        assert!(jitter > 0.0 && jitter < 1e-6);
        let mut b = vec![2.0, 2.0];
        cholesky_solve(&l, &mut b);
        assert!((b[0] + b[1] - 2.0).abs() < 1e-6, "the min-norm-like solution splits evenly: {b:?}");
    }

    /// An additive game v(S) = Σ_{j∈S} a_j: any coalitions with positive weights recover a
    /// exactly, the constraint holds, and the fit has no residual (zero standard errors).
    #[test]
    fn constrained_wls_recovers_an_additive_game_exactly() {
        let a = [0.5, -1.25, 2.0, 0.0, 0.75];
        let masks: Vec<u32> = vec![0b00001, 0b00110, 0b11000, 0b10101, 0b01110, 0b11011, 0b00111, 0b01000];
        let weights = vec![0.3, 0.1, 0.2, 0.05, 0.15, 0.1, 0.05, 0.05];
        let y: Vec<f64> = masks.iter().map(|m| (0..5).filter(|j| m >> j & 1 == 1).map(|j| a[j]).sum()).collect();
        let z = |c: usize, j: usize| masks[c] >> j & 1 == 1;
        let active: Vec<usize> = (0..5).collect();
        let d = Design { z: &z, rows: masks.len(), weights: &weights, active: &active };
        let total: f64 = a.iter().sum();
        let f = fit(&d, &[&y], &[total], 4, &|| false).unwrap();
        let (phi, se) = (&f.phi[0], &f.se[0]);
        for j in 0..5 {
            assert!((phi[j] - a[j]).abs() < 1e-12, "{phi:?}");
            assert!(se[j].abs() < 1e-9);
        }
        assert!((phi.sum() - total).abs() < 1e-12);
    }

    /// A non-additive game with a constraint that disagrees with the data: Σφ is still the
    /// constraint exactly, and φ is the constrained minimiser (checked against perturbations).
    #[test]
    fn constraint_is_exact_and_solution_is_the_constrained_minimum() {
        let masks: Vec<u32> = (1..15).collect();
        let weights: Vec<f64> = masks.iter().map(|m| 1.0 + (*m as f64) * 0.1).collect();
        let y: Vec<f64> = masks.iter().map(|&m| (m as f64).sin() + (m.count_ones() as f64).powi(2) * 0.3).collect();
        let z = |c: usize, j: usize| masks[c] >> j & 1 == 1;
        let active: Vec<usize> = (0..4).collect();
        let d = Design { z: &z, rows: masks.len(), weights: &weights, active: &active };
        let total = 3.0;
        // A second target fitted alongside must not change the first.
        let other: Vec<f64> = y.iter().map(|v| v * 2.0 - 1.0).collect();
        let f = fit(&d, &[&y, &other], &[total, -1.0], masks.len(), &|| false).unwrap();
        let phi = &f.phi[0];
        assert!((f.phi[1].sum() + 1.0).abs() < 1e-12);
        assert_eq!(fit(&d, &[&y], &[total], masks.len(), &|| false).unwrap().phi[0], *phi);
        assert!((phi.sum() - total).abs() < 1e-12);
        let loss = |p: &[f64]| -> f64 {
            (0..masks.len())
                .map(|c| {
                    let pred: f64 = (0..4).filter(|&j| z(c, j)).map(|j| p[j]).sum();
                    weights[c] * (y[c] - pred).powi(2)
                })
                .sum()
        };
        let best = loss(phi.as_slice().unwrap());
        for i in 0..4 {
            for j in 0..4 {
                if i == j {
                    continue;
                }
                let mut p = phi.to_vec();
                p[i] += 1e-3;
                p[j] -= 1e-3; // stays on the constraint
                assert!(loss(&p) > best);
            }
        }
    }

    /// The sandwich errors computed a block of rows at a time equal the full product's.
    #[test]
    fn standard_errors_match_the_full_sandwich_product() {
        let m = 80; // p = 79: two blocks of 64 rows
        // Pseudo-random 0/1 rows: a well-conditioned design (no ridge), so both ways agree
        // to rounding.
        let bit = |c: usize, j: usize| {
            let h = (c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (j as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
            h.wrapping_mul(0x1656_67B1_9E37_79F9) >> 63 == 1
        };
        let masks: Vec<Vec<bool>> = (0..400).map(|c| (0..m).map(|j| bit(c, j)).collect()).collect();
        let weights: Vec<f64> = (0..400).map(|c| 1.0 + (c % 7) as f64 * 0.1).collect();
        let y: Vec<f64> =
            (0..400).map(|c| (c as f64 * 0.37).sin() + masks[c].iter().filter(|&&b| b).count() as f64 * 0.05).collect();
        let z = |c: usize, j: usize| masks[c][j];
        let active: Vec<usize> = (0..m).collect();
        let d = Design { z: &z, rows: 400, weights: &weights, active: &active };
        let f = fit(&d, &[&y], &[1.0], 0, &|| false).unwrap();
        assert_eq!(f.jitter, 0.0);
        // The same quantities from V = A⁻¹ S A⁻¹ built in full.
        let p = m - 1;
        let (mut a, mut meat) = (Array2::<f64>::zeros((p, p)), Array2::<f64>::zeros((p, p)));
        let mut x = vec![0.0; p];
        let mut b = vec![0.0; p];
        for c in 0..400 {
            let z_last = d.x_row(c, &mut x);
            for i in 0..p {
                b[i] += weights[c] * (y[c] - z_last) * x[i];
                for j in 0..p {
                    a[[i, j]] += weights[c] * x[i] * x[j];
                }
            }
        }
        let (l, _) = cholesky(&a, &|| false).unwrap();
        let mut beta = b.clone();
        cholesky_solve(&l, &mut beta);
        for c in 0..400 {
            let z_last = d.x_row(c, &mut x);
            let g = weights[c] * (y[c] - z_last - x.iter().zip(&beta).map(|(a, b)| a * b).sum::<f64>());
            for i in 0..p {
                for j in 0..p {
                    meat[[i, j]] += g * g * x[i] * x[j];
                }
            }
        }
        let mut inv = Array2::<f64>::zeros((p, p));
        for j in 0..p {
            let mut col: Vec<f64> = (0..p).map(|i| if i == j { 1.0 } else { 0.0 }).collect();
            cholesky_solve(&l, &mut col);
            for i in 0..p {
                inv[[i, j]] = col[i];
            }
        }
        let v = inv.dot(&meat).dot(&inv);
        for i in 0..p {
            assert!(
                (f.se[0][i] - v[[i, i]].max(0.0).sqrt()).abs() < 1e-9 * (1.0 + f.se[0][i]),
                "se[{i}]: {} vs {} (jitter {})",
                f.se[0][i],
                v[[i, i]].max(0.0).sqrt(),
                f.jitter
            );
        }
        assert!((f.se[0][p] - v.sum().max(0.0).sqrt()).abs() < 1e-9 * (1.0 + f.se[0][p]));
        assert!(f.se[0].iter().any(|&e| e > 0.0), "a noisy fit has errors");
    }

    #[test]
    fn a_fit_stops_when_cancelled() {
        let m = 300;
        let masks: Vec<Vec<bool>> = (0..2000).map(|c| (0..m).map(|j| (c * 31 + j * 17 + c * j) % 3 == 0).collect()).collect();
        let weights = vec![1.0; 2000];
        let y: Vec<f64> = (0..2000).map(|c| c as f64).collect();
        let z = |c: usize, j: usize| masks[c][j];
        let active: Vec<usize> = (0..m).collect();
        let d = Design { z: &z, rows: 2000, weights: &weights, active: &active };
        let asked = std::cell::Cell::new(0);
        let stop = || {
            asked.set(asked.get() + 1);
            true
        };
        assert_eq!(fit(&d, &[&y], &[0.0], 0, &stop).err(), Some(CholeskyError::Cancelled));
        assert_eq!(asked.get(), 1, "stopped at the first question");
    }
}
