//! Small dense linear algebra for the regressions of the sampling explainers (Kernel SHAP's
//! constrained least squares, LIME's ridge): a Cholesky factorisation that adds a growing ridge
//! when the normal equations are singular, and the triangular solves. The systems have one
//! row per feature (tens to a few thousand), so a plain O(n³) factorisation is enough and
//! keeps LAPACK out of the plugins.

use ndarray::Array2;

/// Cholesky factor L (lower) of a symmetric positive definite matrix. If a pivot is not
/// clearly positive (a budget too small to pin every feature down), a tiny ridge is added,
/// growing until it factors; the second value says how much was added (0 when none).
pub fn cholesky(a: &Array2<f64>) -> (Array2<f64>, f64) {
    let n = a.nrows();
    let scale = (0..n).map(|i| a[[i, i]].abs()).fold(0.0, f64::max).max(f64::MIN_POSITIVE);
    let mut jitter = 0.0;
    loop {
        if let Some(l) = try_cholesky(a, jitter, scale * 1e-13) {
            return (l, jitter);
        }
        jitter = if jitter == 0.0 { scale * 1e-12 } else { jitter * 100.0 };
    }
}

fn try_cholesky(a: &Array2<f64>, jitter: f64, tiny: f64) -> Option<Array2<f64>> {
    let n = a.nrows();
    let mut l = Array2::<f64>::zeros((n, n));
    for j in 0..n {
        let mut d = a[[j, j]] + jitter;
        for k in 0..j {
            d -= l[[j, k]] * l[[j, k]];
        }
        if !(d > tiny) {
            return None;
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
    Some(l)
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
