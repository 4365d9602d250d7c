//! Small dense linear algebra for the regressions of the sampling explainers (Kernel SHAP's
//! constrained least squares, LIME's ridge): a Cholesky factorisation that adds a growing ridge
//! when the normal equations are singular, and the triangular solves. The systems have one
//! row per feature (tens to a few thousand), so a plain O(n³) factorisation is enough and
//! keeps LAPACK out of the plugins.
//!
//! The factorisation is bounded: it gives up after [`MAX_TRIES`] ridges (the last one as large
//! as the matrix's own diagonal) instead of growing the ridge forever, refuses a matrix with a
//! NaN or infinite entry at once, and asks its cancellation closure as it goes (see [`Pace`]).

use crate::Pace;
use ndarray::Array2;

/// Factorisations tried: without a ridge, then with ridges of 1e-12, 1e-10, ... 1e0 times the
/// largest diagonal element. A positive semi-definite matrix factors long before the last one
/// (rounding needs about n·1e-16 of it); a matrix that does not is not a normal matrix.
pub const MAX_TRIES: usize = 8;

/// Why [`cholesky`] produced no factor.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CholeskyError {
    /// The cancellation closure said stop.
    Cancelled,
    /// An entry of the matrix is NaN or infinite (its inputs were).
    NotFinite,
    /// Not positive definite even with the largest ridge tried (`jitter`): the matrix is not
    /// positive semi-definite, so it is not a Gram matrix of finite data.
    NotPositiveDefinite { jitter: f64 },
}

impl std::fmt::Display for CholeskyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CholeskyError::Cancelled => write!(f, "cancelled"),
            CholeskyError::NotFinite => write!(f, "the normal equations have a NaN or infinite entry"),
            CholeskyError::NotPositiveDefinite { jitter } => {
                write!(f, "the normal equations are not positive definite even with a ridge of {jitter:e}")
            }
        }
    }
}

impl std::error::Error for CholeskyError {}

/// Cholesky factor L (lower) of a symmetric positive definite matrix. If a pivot is not
/// clearly positive (a budget too small to pin every feature down), a tiny ridge is added,
/// growing (at most [`MAX_TRIES`] times) until it factors; the second value says how much was
/// added (0 when none). `cancelled` is asked about every [`crate::pace::EVERY`] multiply-adds.
pub fn cholesky(a: &Array2<f64>, cancelled: &dyn Fn() -> bool) -> Result<(Array2<f64>, f64), CholeskyError> {
    if a.iter().any(|v| !v.is_finite()) {
        return Err(CholeskyError::NotFinite);
    }
    let n = a.nrows();
    let scale = (0..n).map(|i| a[[i, i]].abs()).fold(0.0, f64::max).max(f64::MIN_POSITIVE);
    let mut pace = Pace::new(cancelled);
    let mut jitter = 0.0;
    for _ in 0..MAX_TRIES {
        if let Some(l) = try_cholesky(a, jitter, scale * 1e-13, &mut pace)? {
            return Ok((l, jitter));
        }
        jitter = if jitter == 0.0 { scale * 1e-12 } else { jitter * 100.0 };
    }
    Err(CholeskyError::NotPositiveDefinite { jitter: jitter / 100.0 })
}

fn try_cholesky(a: &Array2<f64>, jitter: f64, tiny: f64, pace: &mut Pace<'_>) -> Result<Option<Array2<f64>>, CholeskyError> {
    let n = a.nrows();
    let mut l = Array2::<f64>::zeros((n, n));
    for j in 0..n {
        // Column j costs about (n − j)·j multiply-adds.
        if pace.stop((n - j) * j.max(1)) {
            return Err(CholeskyError::Cancelled);
        }
        let mut d = a[[j, j]] + jitter;
        for k in 0..j {
            d -= l[[j, k]] * l[[j, k]];
        }
        if d.is_nan() || d <= tiny {
            return Ok(None);
        }
        let d = d.sqrt();
        l[[j, j]] = d;
        for i in j + 1..n {
            let mut s = a[[i, j]];
            for k in 0..j {
                s -= l[[i, k]] * l[[j, k]];
            }
            l[[i, j]] = s / d;
        }
    }
    Ok(Some(l))
}

/// Solves L Lᵀ x = b in place.
pub fn cholesky_solve(l: &Array2<f64>, b: &mut [f64]) {
    let n = l.nrows();
    for i in 0..n {
        let mut s = b[i];
        for k in 0..i {
            s -= l[[i, k]] * b[k];
        }
        b[i] = s / l[[i, i]];
    }
    for i in (0..n).rev() {
        let mut s = b[i];
        for k in i + 1..n {
            s -= l[[k, i]] * b[k];
        }
        b[i] = s / l[[i, i]];
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn a_well_conditioned_matrix_factors_without_a_ridge() {
        let a = ndarray::arr2(&[[4.0, 2.0], [2.0, 3.0]]);
        let (l, jitter) = cholesky(&a, &|| false).unwrap();
        assert_eq!(jitter, 0.0);
        // L = [[2, 0], [1, sqrt(2)]].
        assert_eq!(l[[0, 0]], 2.0);
        assert_eq!(l[[1, 0]], 1.0);
        assert!((l[[1, 1]] - 2f64.sqrt()).abs() < 1e-15);
    }

    #[test]
    fn the_ridge_loop_ends_with_an_error_on_matrices_no_ridge_can_fix() {
        // Indefinite: no ridge up to the diagonal's scale makes the second pivot positive.
        let indefinite = ndarray::arr2(&[[1.0, 0.0], [0.0, -1.0]]);
        match cholesky(&indefinite, &|| false) {
            Err(CholeskyError::NotPositiveDefinite { jitter }) => assert!((jitter - 1.0).abs() < 1e-12, "{jitter}"),
            other => panic!("{other:?}"),
        }
        // NaN (what a kernel width of 1e-300 made of LIME's weights): refused before any try;
        // the old loop grew its ridge to infinity and never ended.
        let nan = ndarray::arr2(&[[f64::NAN, 0.0], [0.0, 1.0]]);
        assert_eq!(cholesky(&nan, &|| false).unwrap_err(), CholeskyError::NotFinite);
        let inf = ndarray::arr2(&[[1.0, f64::INFINITY], [f64::INFINITY, 1.0]]);
        assert_eq!(cholesky(&inf, &|| false).unwrap_err(), CholeskyError::NotFinite);
    }

    #[test]
    fn a_large_factorisation_stops_when_cancelled() {
        let n = 300; // about n³/6 = 4.5·10^6 multiply-adds: several stretches of work
        let a = Array2::from_shape_fn((n, n), |(i, j)| if i == j { n as f64 } else { 1.0 });
        let asked = Cell::new(0);
        let stop_on_second = || {
            asked.set(asked.get() + 1);
            asked.get() >= 2
        };
        assert_eq!(cholesky(&a, &stop_on_second).unwrap_err(), CholeskyError::Cancelled);
        assert_eq!(asked.get(), 2, "asked again once the first stretch of work was done");
        // The same matrix factors when nobody cancels.
        assert!(cholesky(&a, &|| false).is_ok());
    }
}
