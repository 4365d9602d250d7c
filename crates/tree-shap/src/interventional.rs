//! Exact interventional TreeSHAP (shap's `tree_shap_indep`).
//!
//! For one foreground row `x`, one background row `r` and one tree, the game `v(S) = tree(x_S, r_S̄)` is a
//! sum over leaves of `value · [A ⊆ S] · [B ∩ S = ∅]`, where `A` (`B`) are the features whose split on the
//! leaf's path is decided by `x` (by `r`) because `x` and `r` go different ways there. The Shapley value of
//! one such term is `value · (|A|−1)! |B|! / (|A|+|B|)!` for each feature of `A` and
//! `−value · |A|! (|B|−1)! / (|A|+|B|)!` for each feature of `B`. A single recursion visits exactly the
//! leaves with a non-empty such term: it follows one child where `x` and `r` agree (or where the feature
//! already has a side), and both where they disagree on a new feature.

use crate::ensemble::{Mode, TreeEnsemble};
use crate::parallel::run_rows;
use crate::{ShapValues, TreeError, check_additive, check_batch};

/// Side of a feature on the current path.
const UNSET: u8 = 0;
const FROM_X: u8 = 1;
const FROM_R: u8 = 2;

/// `g(p, q) = p! q! / (p + q + 1)!` for `p, q ≤ n`, stored row-major with stride `n + 1`.
pub(crate) struct ShapleyWeights {
    n: usize,
    table: Vec<f64>,
}

impl ShapleyWeights {
    pub(crate) fn new(n: usize) -> Self {
        let mut table = vec![0.0; (n + 1) * (n + 1)];
        for p in 0..=n {
            // g(p, 0) = 1 / (p + 1); g(p, q) = g(p, q − 1) · q / (p + q + 1).
            let mut g = 1.0 / (p as f64 + 1.0);
            table[p * (n + 1)] = g;
            for q in 1..=n {
                g *= q as f64 / (p + q + 1) as f64;
                table[p * (n + 1) + q] = g;
            }
        }
        ShapleyWeights { n, table }
    }
    #[inline]
    pub(crate) fn get(&self, p: usize, q: usize) -> f64 {
        self.table[p * (self.n + 1) + q]
    }
}

struct State {
    side: Vec<u8>,
    path: Vec<(u32, bool)>,
}

struct Ctx<'a> {
    ens: &'a TreeEnsemble,
    weights: &'a ShapleyWeights,
    x: &'a [f32],
    r: &'a [f32],
    n_targets: usize,
    /// Tree scale (AVERAGE) divided by the number of background rows.
    scale: f64,
}

impl Ctx<'_> {
    fn recurse(&self, st: &mut State, phi: &mut [f64], node: usize, a: usize, b: usize) {
        let n = &self.ens.nodes[node];
        if n.mode == Mode::Leaf {
            if a + b == 0 {
                return;
            }
            let w_pos = if a > 0 { self.weights.get(a - 1, b) } else { 0.0 };
            let w_neg = if b > 0 { -self.weights.get(a, b - 1) } else { 0.0 };
            for lv in self.ens.leaf_values(node) {
                let v = lv.weight * self.scale;
                for &(f, from_x) in &st.path {
                    phi[f as usize * self.n_targets + lv.target as usize] += v * if from_x { w_pos } else { w_neg };
                }
            }
            return;
        }
        let f = n.feature as usize;
        let x_true = self.ens.goes_true(n, self.x[f]);
        let r_true = self.ens.goes_true(n, self.r[f]);
        let child = |t: bool| if t { n.true_child } else { n.false_child } as usize;
        if x_true == r_true {
            return self.recurse(st, phi, child(x_true), a, b);
        }
        match st.side[f] {
            FROM_X => self.recurse(st, phi, child(x_true), a, b),
            FROM_R => self.recurse(st, phi, child(r_true), a, b),
            _ => {
                st.side[f] = FROM_X;
                st.path.push((f as u32, true));
                self.recurse(st, phi, child(x_true), a + 1, b);
                st.path.pop();
                st.side[f] = FROM_R;
                st.path.push((f as u32, false));
                self.recurse(st, phi, child(r_true), a, b + 1);
                st.path.pop();
                st.side[f] = UNSET;
            }
        }
    }
}

/// Exact interventional SHAP values of the raw margin for the rows of `x` (row-major, `n_features` wide)
/// against the background rows of `background` (same width): `φ_i(x)` is the Shapley value of feature
/// `i` in the game `v(S) = mean_b f(x_S, b_S̄)`, per target. `expected_value` is `mean_b f(b)`.
///
/// Cost: O(rows × background rows × Σ_trees leaves-visited × depth). Rows run on up to `threads` threads
/// (0 = all cores); `cancelled()` is polled before every (row, background row) pair and, once it returns
/// true, the call returns [`TreeError::Cancelled`]. MIN/MAX aggregates are refused.
pub fn interventional_shap(
    ens: &TreeEnsemble,
    x: &[f32],
    background: &[f32],
    n_features: usize,
    threads: usize,
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<ShapValues, TreeError> {
    check_additive(ens)?;
    let n_rows = check_batch(ens, x, n_features, "rows")?;
    let n_bg = check_batch(ens, background, n_features, "background")?;
    if n_bg == 0 {
        return Err(TreeError::InvalidInput("the background set is empty".into()));
    }
    let t = ens.n_targets();
    // Expected value: mean margin over the background.
    let mut expected = vec![0.0; t];
    let mut buf = vec![0.0; t];
    for b in background.chunks_exact(n_features) {
        ens.predict_raw(b, &mut buf)?;
        for (e, v) in expected.iter_mut().zip(&buf) {
            *e += v;
        }
    }
    for e in &mut expected {
        *e /= n_bg as f64;
    }
    let weights = ShapleyWeights::new(ens.max_depth() + 1);
    let scale = ens.tree_scale() / n_bg as f64;
    let init = || State { side: vec![UNSET; n_features], path: Vec::with_capacity(ens.max_depth() + 1) };
    let work = |st: &mut State, row: usize, phi: &mut [f64], stop: &dyn Fn() -> bool| -> Result<(), TreeError> {
        let xr = &x[row * n_features..(row + 1) * n_features];
        for r in background.chunks_exact(n_features) {
            if stop() {
                return Err(TreeError::Cancelled);
            }
            let ctx = Ctx { ens, weights: &weights, x: xr, r, n_targets: t, scale };
            for &root in ens.roots() {
                ctx.recurse(st, phi, root as usize, 0, 0);
            }
        }
        Ok(())
    };
    let values = run_rows(n_rows, n_features * t, threads, cancelled, &init, &work)?;
    Ok(ShapValues { n_rows, n_features, n_targets: t, values, expected_value: expected })
}
