//! Exact interventional TreeSHAP (shap's `tree_shap_indep`).
//!
//! For one foreground row `x`, one background row `r` and one tree, the game `v(S) = tree(x_S, r_S̄)` is a
//! sum over leaves of `value · [A ⊆ S] · [B ∩ S = ∅]`, where `A` (`B`) are the features whose split on the
//! leaf's path is decided by `x` (by `r`) because `x` and `r` go different ways there. The Shapley value of
//! one such term is `value · (|A|−1)! |B|! / (|A|+|B|)!` for each feature of `A` and
//! `−value · |A|! (|B|−1)! / (|A|+|B|)!` for each feature of `B`. A single recursion visits exactly the
//! leaves with a non-empty such term: it follows one child where `x` and `r` agree (or where the feature
//! already has a side), and both where they disagree on a new feature.
//!
//! The recursion runs for one row `x` and a whole block of up to 128 background rows at once, carrying the
//! set (a `u128` mask) of the block's rows that reach the current node with the current sides: at a split
//! on an unsided feature the rows that agree with `x` continue unchanged and the others branch as above;
//! at a split on a feature sided `r` the set divides by each row's own direction. Rows that share a path
//! share its work, and a leaf adds its terms once, times the number of rows that reach it. The rows'
//! directions at every node are decided once per request (a nodes × blocks table of masks).

use crate::ensemble::{Mode, TreeEnsemble};
use std::ops::Range;

use crate::parallel::{run_rows_trees, thread_count};
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

/// Background rows are processed in blocks of [`BLOCK`], a set of rows being a `u128` bit mask.
const BLOCK: usize = 128;

/// Per-request table: `masks[block * n_nodes + node]` has bit `k` set when background row
/// `block * BLOCK + k` goes to the node's true child (0 for leaves).
struct BackgroundMasks {
    n_nodes: usize,
    masks: Vec<u128>,
    /// Per block, the mask of its rows.
    full: Vec<u128>,
}

impl BackgroundMasks {
    /// Builds the table on up to `threads` threads (over ranges of nodes): it costs background rows ×
    /// nodes comparisons, as much as the recursions of a few rows.
    fn new(ens: &TreeEnsemble, background: &[f32], n_features: usize, threads: usize) -> Self {
        let n_bg = background.len() / n_features;
        let n_nodes = ens.nodes.len();
        let blocks = n_bg.div_ceil(BLOCK);
        let mut masks = vec![0u128; blocks * n_nodes];
        let mut full = Vec::with_capacity(blocks);
        let per_thread = n_nodes.div_ceil(threads.max(1)).max(1);
        for (block, out) in masks.chunks_mut(n_nodes).enumerate() {
            let rows = &background[block * BLOCK * n_features..n_bg.min((block + 1) * BLOCK) * n_features];
            let k_len = rows.len() / n_features;
            full.push(if k_len == BLOCK { u128::MAX } else { (1u128 << k_len) - 1 });
            // Column-major copy of the block, so that one node's comparisons read contiguous values.
            let mut by_feature = vec![0f32; n_features * k_len];
            for (k, r) in rows.chunks_exact(n_features).enumerate() {
                for (f, &v) in r.iter().enumerate() {
                    by_feature[f * k_len + k] = v;
                }
            }
            let by_feature = &by_feature;
            let fill = move |first: usize, out: &mut [u128]| {
                for (o, n) in out.iter_mut().zip(&ens.nodes[first..]) {
                    if n.mode == Mode::Leaf {
                        continue;
                    }
                    let f = n.feature as usize;
                    let column = &by_feature[f * k_len..(f + 1) * k_len];
                    let mut m = 0u128;
                    if n.mode == Mode::Leq && !n.missing_tracks_true {
                        // The common case, branch-free.
                        for (k, &v) in column.iter().enumerate() {
                            m |= ((v <= n.threshold) as u128) << k;
                        }
                    } else {
                        for (k, &v) in column.iter().enumerate() {
                            m |= (ens.goes_true(n, v) as u128) << k;
                        }
                    }
                    *o = m;
                }
            };
            if threads <= 1 || n_nodes < 4096 {
                fill(0, out);
            } else {
                std::thread::scope(|scope| {
                    for (i, chunk) in out.chunks_mut(per_thread).enumerate() {
                        scope.spawn(move || fill(i * per_thread, chunk));
                    }
                });
            }
        }
        BackgroundMasks { n_nodes, masks, full }
    }
}

struct State {
    side: Vec<u8>,
    path: Vec<(u32, bool)>,
}

/// One (row, background block) pair: the recursion carries the set of the block's background rows that
/// take the current path with the current sides, so rows sharing a path share the work.
struct Ctx<'a> {
    ens: &'a TreeEnsemble,
    weights: &'a ShapleyWeights,
    x: &'a [f32],
    /// The block's background masks, indexed by node.
    r_true: &'a [u128],
    n_targets: usize,
    /// Tree scale (AVERAGE) divided by the number of background rows.
    scale: f64,
}

impl Ctx<'_> {
    fn recurse(&self, st: &mut State, phi: &mut [f64], node: usize, alive: u128, a: usize, b: usize) {
        let n = &self.ens.nodes[node];
        if n.mode == Mode::Leaf {
            if a + b == 0 {
                return;
            }
            let w_pos = if a > 0 { self.weights.get(a - 1, b) } else { 0.0 };
            let w_neg = if b > 0 { -self.weights.get(a, b - 1) } else { 0.0 };
            let count = alive.count_ones() as f64 * self.scale;
            for lv in self.ens.leaf_values(node) {
                let v = lv.weight * count;
                let (pos, neg) = (v * w_pos, v * w_neg);
                for &(f, from_x) in &st.path {
                    phi[f as usize * self.n_targets + lv.target as usize] += if from_x { pos } else { neg };
                }
            }
            return;
        }
        let f = n.feature as usize;
        let x_true = self.ens.goes_true(n, self.x[f]);
        let r_true = self.r_true[node];
        let child = |t: bool| if t { n.true_child } else { n.false_child } as usize;
        match st.side[f] {
            FROM_X => self.recurse(st, phi, child(x_true), alive, a, b),
            FROM_R => {
                let (t, fl) = (alive & r_true, alive & !r_true);
                if t != 0 {
                    self.recurse(st, phi, n.true_child as usize, t, a, b);
                }
                if fl != 0 {
                    self.recurse(st, phi, n.false_child as usize, fl, a, b);
                }
            }
            _ => {
                let agree = if x_true { alive & r_true } else { alive & !r_true };
                let differ = alive & !agree;
                if agree != 0 {
                    self.recurse(st, phi, child(x_true), agree, a, b);
                }
                if differ != 0 {
                    st.side[f] = FROM_X;
                    st.path.push((f as u32, true));
                    self.recurse(st, phi, child(x_true), differ, a + 1, b);
                    st.path.pop();
                    st.side[f] = FROM_R;
                    st.path.push((f as u32, false));
                    self.recurse(st, phi, child(!x_true), differ, a, b + 1);
                    st.path.pop();
                    st.side[f] = UNSET;
                }
            }
        }
    }
}

/// Exact interventional SHAP values of the raw margin for the rows of `x` (row-major, `n_features` wide)
/// against the background rows of `background` (same width): `φ_i(x)` is the Shapley value of feature
/// `i` in the game `v(S) = mean_b f(x_S, b_S̄)`, per target. `expected_value` is `mean_b f(b)`.
///
/// Cost: O(background rows × nodes) for the direction table, then O(rows × Σ_trees (node, sides)
/// pairs visited × depth), at most O(rows × background rows × Σ_trees leaves-visited × depth) and far
/// less when background rows share paths. Rows (or, for few rows, ranges of trees) run on up to
/// `threads` threads (0 = all cores); `cancelled()` is polled before every (row, tree, block of 128
/// background rows) and, once it returns true, the call returns [`TreeError::Cancelled`]. MIN/MAX
/// aggregates are refused.
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
    let bg = BackgroundMasks::new(ens, background, n_features, thread_count(threads));
    let init = || State { side: vec![UNSET; n_features], path: Vec::with_capacity(ens.max_depth() + 1) };
    let work = |st: &mut State, row: usize, trees: Range<usize>, phi: &mut [f64], stop: &dyn Fn() -> bool| {
        let xr = &x[row * n_features..(row + 1) * n_features];
        for (block, &full) in bg.full.iter().enumerate() {
            let r_true = &bg.masks[block * bg.n_nodes..(block + 1) * bg.n_nodes];
            let ctx = Ctx { ens, weights: &weights, x: xr, r_true, n_targets: t, scale };
            for &root in &ens.roots()[trees.clone()] {
                if stop() {
                    return Err(TreeError::Cancelled);
                }
                ctx.recurse(st, phi, root as usize, full, 0, 0);
            }
        }
        Ok(())
    };
    let values = run_rows_trees(n_rows, ens.n_trees(), n_features * t, threads, cancelled, &init, &work)?;
    Ok(ShapValues { n_rows, n_features, n_targets: t, values, expected_value: expected })
}
