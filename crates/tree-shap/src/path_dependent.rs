//! Path-dependent TreeSHAP (Lundberg, Erion & Lee 2018, Algorithm 2), with the conditioning used for
//! interaction values.
//!
//! The game: `v(S)` is the expectation of the tree where a branch on a feature in `S` follows `x`, and a
//! branch on any other feature follows both children weighted by their cover fractions.
//!
//! Cost: O(leaves × depth²) per (row, tree), as Algorithm 2, but only the path elements whose `one`
//! fraction is non-zero (features every split of which on the leaf's path follows `x`) pay O(depth) at
//! a leaf: for the others the unwound sum is one shared O(depth) sum divided by their `zero` fraction,
//! so their contribution `−zero × sum / zero` is that shared sum. Cover fractions and reciprocals are
//! tabled per request, so the loops multiply instead of divide.

use crate::ensemble::{Mode, TreeEnsemble};
use crate::parallel::run_rows_trees;
use crate::{ShapValues, TreeError, check_additive, check_batch};

/// Path element; `feature == NO_FEATURE` marks the root's placeholder.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PathElem {
    feature: u32,
    zero: f64,
    one: f64,
    weight: f64,
}

const NO_FEATURE: u32 = u32::MAX;

impl TreeEnsemble {
    /// Covers counted from rows (row-major, `n_features` wide): for every node, how many rows pass through
    /// it. Use as the `covers` of the path-dependent explainers when the model has no hit rates (e.g. pass
    /// the training set or a background sample).
    pub fn covers_from_rows(&self, rows: &[f32], n_features: usize) -> Result<Vec<f64>, TreeError> {
        check_batch(self, rows, n_features, "cover rows")?;
        let mut covers = vec![0.0; self.nodes.len()];
        if n_features == 0 {
            return Ok(covers);
        }
        for x in rows.chunks_exact(n_features) {
            for &root in &self.roots {
                let mut i = root as usize;
                loop {
                    covers[i] += 1.0;
                    let n = &self.nodes[i];
                    if n.mode == Mode::Leaf {
                        break;
                    }
                    i = if self.goes_true(n, x[n.feature as usize]) { n.true_child } else { n.false_child } as usize;
                }
            }
        }
        Ok(covers)
    }

    /// Fractions of a branch's cover going to its (true, false) children.
    #[inline]
    pub(crate) fn child_fractions(&self, covers: &[f64], node: usize) -> (f64, f64) {
        let n = &self.nodes[node];
        let (ct, cf) = (covers[n.true_child as usize], covers[n.false_child as usize]);
        let s = ct + cf;
        if s > 0.0 { (ct / s, cf / s) } else { (0.5, 0.5) }
    }

    pub(crate) fn check_covers(&self, covers: &[f64]) -> Result<(), TreeError> {
        if covers.len() != self.nodes.len() {
            return Err(TreeError::InvalidInput(format!("{} covers for {} nodes", covers.len(), self.nodes.len())));
        }
        if let Some(i) = covers.iter().position(|c| !c.is_finite() || *c < 0.0) {
            return Err(TreeError::InvalidInput(format!("cover of node {i} is {}, not a finite non-negative number", covers[i])));
        }
        Ok(())
    }
}

/// The cover-weighted expected margin per target, `E_cover[f]`: base values plus (scaled) each tree's
/// leaf values weighted by the probability of reaching them when every branch splits by cover fractions.
/// This is the `expected_value` of the path-dependent explainers.
pub fn expected_value_cover(ens: &TreeEnsemble, covers: &[f64]) -> Result<Vec<f64>, TreeError> {
    check_additive(ens)?;
    ens.check_covers(covers)?;
    let scale = ens.tree_scale();
    let mut out = vec![0.0; ens.n_targets()];
    let mut stack: Vec<(usize, f64)> = Vec::new();
    for &root in ens.roots() {
        stack.push((root as usize, 1.0));
        while let Some((i, p)) = stack.pop() {
            let n = &ens.nodes[i];
            if n.mode == Mode::Leaf {
                for lv in ens.leaf_values(i) {
                    out[lv.target as usize] += p * lv.weight * scale;
                }
                continue;
            }
            let (ft, ff) = ens.child_fractions(covers, i);
            stack.push((n.true_child as usize, p * ft));
            stack.push((n.false_child as usize, p * ff));
        }
    }
    for (o, b) in out.iter_mut().zip(ens.base_values()) {
        *o += b;
    }
    Ok(out)
}

/// Per-request tables of the path-dependent recursions, so that the hot loops multiply instead of divide
/// (a division's latency sits on the loop-carried chain of `unwind` and of the leaf sums).
pub(crate) struct PathTables {
    /// Per node: fractions of its cover going to its (true, false) children (unused for leaves).
    pub fractions: Vec<[f64; 2]>,
    /// `recip[k] = 1 / k` for `k ≤ max_depth + 2` (`recip[0]` unused).
    pub recip: Vec<f64>,
}

impl PathTables {
    pub(crate) fn new(ens: &TreeEnsemble, covers: &[f64]) -> PathTables {
        let fractions = (0..ens.nodes.len())
            .map(|i| {
                if ens.nodes[i].mode == Mode::Leaf {
                    [0.0; 2]
                } else {
                    let (t, f) = ens.child_fractions(covers, i);
                    [t, f]
                }
            })
            .collect();
        let recip = (0..ens.max_depth() + 3).map(|k| 1.0 / k as f64).collect();
        PathTables { fractions, recip }
    }
}

#[inline]
fn extend(p: &mut [PathElem], recip: &[f64], u: usize, zero: f64, one: f64, feature: u32) {
    p[u] = PathElem { feature, zero, one, weight: if u == 0 { 1.0 } else { 0.0 } };
    let inv_d = recip[u + 1];
    for i in (0..u).rev() {
        let w = p[i].weight;
        p[i + 1].weight += one * w * ((i + 1) as f64 * inv_d);
        p[i].weight = zero * w * ((u - i) as f64 * inv_d);
    }
}

#[inline]
fn unwind(p: &mut [PathElem], recip: &[f64], u: usize, idx: usize) {
    let (one, zero) = (p[idx].one, p[idx].zero);
    let d = (u + 1) as f64;
    if one != 0.0 {
        let k = d / one;
        let zd = zero * recip[u + 1];
        let mut next_one = p[u].weight;
        for i in (0..u).rev() {
            let tmp = p[i].weight;
            let w = next_one * k * recip[i + 1];
            p[i].weight = w;
            next_one = tmp - w * zd * (u - i) as f64;
        }
    } else {
        let k = d / zero;
        for i in 0..u {
            p[i].weight *= k * recip[u - i];
        }
    }
    for i in idx..u {
        p[i].feature = p[i + 1].feature;
        p[i].zero = p[i + 1].zero;
        p[i].one = p[i + 1].one;
    }
}

/// Sum of the path weights after unwinding an element with fractions (`zero`, `one ≠ 0`), without
/// modifying the path. (For `one = 0` the sum is `cold_sum / zero`, shared by every such element.)
#[inline]
fn unwound_sum_hot(p: &[PathElem], recip: &[f64], u: usize, zero: f64, one: f64) -> f64 {
    let k = (u + 1) as f64 / one;
    let zd = zero * recip[u + 1];
    let mut next_one = p[u].weight;
    let mut total = 0.0;
    for i in (0..u).rev() {
        let tmp = next_one * k * recip[i + 1];
        total += tmp;
        next_one = p[i].weight - tmp * zd * (u - i) as f64;
    }
    total
}

/// `zero ×` the sum of the path weights after unwinding any element with `one = 0`: that sum is
/// `(u + 1) / zero · Σ_{i<u} w_i / (u − i)`, so such an element contributes `−cold_sum` whatever its `zero`.
#[inline]
fn cold_sum(p: &[PathElem], recip: &[f64], u: usize) -> f64 {
    let mut s = 0.0;
    for i in 0..u {
        s += p[i].weight * recip[u - i];
    }
    s * (u + 1) as f64
}

/// Conditioning for interaction values: `cond > 0` = feature `cond_feature` present, `< 0` = absent,
/// `0` = none.
#[derive(Clone, Copy)]
pub(crate) struct Condition {
    pub cond: i8,
    pub feature: u32,
}

pub(crate) struct PathCtx<'a> {
    pub ens: &'a TreeEnsemble,
    pub tables: &'a PathTables,
    pub x: &'a [f32],
    pub n_targets: usize,
    pub scale: f64,
    pub condition: Condition,
}

impl PathCtx<'_> {
    /// Adds this row's path-dependent SHAP values for every tree into `phi` (`[feature][target]`),
    /// polling `stop()` before every tree.
    pub(crate) fn add_all_trees(
        &self,
        arena: &mut [PathElem],
        phi: &mut [f64],
        stop: &dyn Fn() -> bool,
    ) -> Result<(), TreeError> {
        self.add_trees(arena, phi, 0..self.ens.n_trees(), stop)
    }

    /// [`Self::add_all_trees`] for the trees of range `trees` only.
    pub(crate) fn add_trees(
        &self,
        arena: &mut [PathElem],
        phi: &mut [f64],
        trees: std::ops::Range<usize>,
        stop: &dyn Fn() -> bool,
    ) -> Result<(), TreeError> {
        for &root in &self.ens.roots()[trees] {
            if stop() {
                return Err(TreeError::Cancelled);
            }
            self.recurse(arena, phi, root as usize, 0, 0, 0, 1.0, 1.0, NO_FEATURE, 1.0);
        }
        Ok(())
    }

    /// `poff`: the parent's path; `off`: this call's path; `u`: this call's unique depth (index of the
    /// element it adds).
    #[allow(clippy::too_many_arguments)]
    fn recurse(
        &self,
        arena: &mut [PathElem],
        phi: &mut [f64],
        node: usize,
        poff: usize,
        off: usize,
        u_in: usize,
        zero: f64,
        one: f64,
        parent_feature: u32,
        cond_fraction: f64,
    ) {
        if cond_fraction == 0.0 {
            return;
        }
        let Condition { cond, feature: cond_feature } = self.condition;
        let mut u = u_in;
        let extending = cond == 0 || cond_feature != parent_feature;
        let copy = if extending { u } else { u + 1 };
        if off != poff {
            arena.copy_within(poff..poff + copy, off);
        }
        let p = &mut arena[off..];
        let recip = &self.tables.recip[..];
        if extending {
            extend(p, recip, u, zero, one, parent_feature);
        }
        let n = &self.ens.nodes[node];
        if n.mode == Mode::Leaf {
            let values = self.ens.leaf_values(node);
            let cold = cold_sum(p, recip, u);
            let scale = cond_fraction * self.scale;
            for el in &p[1..=u] {
                let w = if el.one != 0.0 {
                    unwound_sum_hot(p, recip, u, el.zero, el.one) * (el.one - el.zero)
                } else if el.zero != 0.0 {
                    -cold
                } else {
                    0.0
                };
                let c = w * scale;
                for lv in values {
                    phi[el.feature as usize * self.n_targets + lv.target as usize] += c * lv.weight;
                }
            }
            return;
        }
        let f = n.feature;
        let x_true = self.ens.goes_true(n, self.x[f as usize]);
        let [ft, ff] = self.tables.fractions[node];
        let (hot, cold, hot_zero, cold_zero) =
            if x_true { (n.true_child, n.false_child, ft, ff) } else { (n.false_child, n.true_child, ff, ft) };
        let (mut in_zero, mut in_one) = (1.0, 1.0);
        if let Some(k) = (1..=u).find(|&k| p[k].feature == f) {
            in_zero = p[k].zero;
            in_one = p[k].one;
            unwind(p, recip, u, k);
            u -= 1;
        }
        let (mut hot_cf, mut cold_cf) = (cond_fraction, cond_fraction);
        let mut child_u = u + 1;
        let conditioned = cond != 0 && f == cond_feature;
        if conditioned {
            if cond > 0 {
                cold_cf = 0.0;
            } else {
                hot_cf *= hot_zero;
                cold_cf *= cold_zero;
            }
            child_u = u;
        }
        let next = off + u_in + 1;
        let (hz, cz) = (hot_zero * in_zero, cold_zero * in_zero);
        // A child entered with zero and one fractions both 0 contributes nothing (all path weights vanish);
        // skipping it also avoids dividing by those zeros when unwinding below it.
        if conditioned || hz != 0.0 || in_one != 0.0 {
            self.recurse(arena, phi, hot as usize, off, next, child_u, hz, in_one, f, hot_cf);
        }
        if conditioned || cz != 0.0 {
            self.recurse(arena, phi, cold as usize, off, next, child_u, cz, 0.0, f, cold_cf);
        }
    }
}

/// Size of the path arena for trees of depth at most `depth`.
pub(crate) fn arena_len(depth: usize) -> usize {
    (depth + 3) * (depth + 4) / 2
}

/// Exact path-dependent SHAP values (Lundberg et al. 2018, Algorithm 2) of the raw margin for the rows of
/// `x` (row-major, `n_features` wide), with node `covers` (one per [`TreeEnsemble::nodes`] entry: from
/// [`TreeEnsemble::hitrate_covers`] or [`TreeEnsemble::covers_from_rows`]). `expected_value` is
/// [`expected_value_cover`]; `Σ_i φ_i = f(x) − expected_value` per target.
///
/// Rows (or, for few rows, ranges of trees) run on up to `threads` threads (0 = all cores); `cancelled()`
/// is polled before every (row, tree) pair.
pub fn path_dependent_shap(
    ens: &TreeEnsemble,
    covers: &[f64],
    x: &[f32],
    n_features: usize,
    threads: usize,
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<ShapValues, TreeError> {
    let expected_value = expected_value_cover(ens, covers)?;
    let n_rows = check_batch(ens, x, n_features, "rows")?;
    let t = ens.n_targets();
    let scale = ens.tree_scale();
    let tables = PathTables::new(ens, covers);
    let init = || vec![PathElem::default(); arena_len(ens.max_depth())];
    let work =
        |arena: &mut Vec<PathElem>, row: usize, trees: std::ops::Range<usize>, phi: &mut [f64], stop: &dyn Fn() -> bool| {
            let ctx = PathCtx {
                ens,
                tables: &tables,
                x: &x[row * n_features..(row + 1) * n_features],
                n_targets: t,
                scale,
                condition: Condition { cond: 0, feature: NO_FEATURE },
            };
            ctx.add_trees(arena, phi, trees, stop)
        };
    let values = run_rows_trees(n_rows, ens.n_trees(), n_features * t, threads, cancelled, &init, &work)?;
    Ok(ShapValues { n_rows, n_features, n_targets: t, values, expected_value })
}
