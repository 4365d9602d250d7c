//! Path-dependent TreeSHAP (Lundberg, Erion & Lee 2018, Algorithm 2), with the conditioning used for
//! interaction values.
//!
//! The game: `v(S)` is the expectation of the tree where a branch on a feature in `S` follows `x`, and a
//! branch on any other feature follows both children weighted by their cover fractions.

use crate::ensemble::{Mode, TreeEnsemble};
use crate::parallel::run_rows;
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

fn extend(p: &mut [PathElem], u: usize, zero: f64, one: f64, feature: u32) {
    p[u] = PathElem { feature, zero, one, weight: if u == 0 { 1.0 } else { 0.0 } };
    let d = (u + 1) as f64;
    for i in (0..u).rev() {
        p[i + 1].weight += one * p[i].weight * (i + 1) as f64 / d;
        p[i].weight = zero * p[i].weight * (u - i) as f64 / d;
    }
}

fn unwind(p: &mut [PathElem], u: usize, idx: usize) {
    let (one, zero) = (p[idx].one, p[idx].zero);
    let d = (u + 1) as f64;
    let mut next_one = p[u].weight;
    for i in (0..u).rev() {
        if one != 0.0 {
            let tmp = p[i].weight;
            p[i].weight = next_one * d / ((i + 1) as f64 * one);
            next_one = tmp - p[i].weight * zero * (u - i) as f64 / d;
        } else {
            p[i].weight = p[i].weight * d / (zero * (u - i) as f64);
        }
    }
    for i in idx..u {
        p[i].feature = p[i + 1].feature;
        p[i].zero = p[i + 1].zero;
        p[i].one = p[i + 1].one;
    }
}

/// Sum of the path weights after unwinding element `idx`, without modifying the path.
fn unwound_sum(p: &[PathElem], u: usize, idx: usize) -> f64 {
    let (one, zero) = (p[idx].one, p[idx].zero);
    let d = (u + 1) as f64;
    let mut next_one = p[u].weight;
    let mut total = 0.0;
    for i in (0..u).rev() {
        if one != 0.0 {
            let tmp = next_one * d / ((i + 1) as f64 * one);
            total += tmp;
            next_one = p[i].weight - tmp * zero * (u - i) as f64 / d;
        } else if zero != 0.0 {
            total += p[i].weight / zero * d / (u - i) as f64;
        }
    }
    total
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
    pub covers: &'a [f64],
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
        for &root in self.ens.roots() {
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
        if extending {
            extend(p, u, zero, one, parent_feature);
        }
        let n = &self.ens.nodes[node];
        if n.mode == Mode::Leaf {
            for i in 1..=u {
                let w = unwound_sum(p, u, i);
                let el = p[i];
                let c = w * (el.one - el.zero) * cond_fraction * self.scale;
                for lv in self.ens.leaf_values(node) {
                    phi[el.feature as usize * self.n_targets + lv.target as usize] += c * lv.weight;
                }
            }
            return;
        }
        let f = n.feature;
        let x_true = self.ens.goes_true(n, self.x[f as usize]);
        let (ft, ff) = self.ens.child_fractions(self.covers, node);
        let (hot, cold, hot_zero, cold_zero) =
            if x_true { (n.true_child, n.false_child, ft, ff) } else { (n.false_child, n.true_child, ff, ft) };
        let (mut in_zero, mut in_one) = (1.0, 1.0);
        if let Some(k) = (1..=u).find(|&k| p[k].feature == f) {
            in_zero = p[k].zero;
            in_one = p[k].one;
            unwind(p, u, k);
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
/// Rows run on up to `threads` threads (0 = all cores); `cancelled()` is polled before every (row, tree) pair.
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
    let init = || vec![PathElem::default(); arena_len(ens.max_depth())];
    let work = |arena: &mut Vec<PathElem>, row: usize, phi: &mut [f64], stop: &dyn Fn() -> bool| -> Result<(), TreeError> {
        let ctx = PathCtx {
            ens,
            covers,
            x: &x[row * n_features..(row + 1) * n_features],
            n_targets: t,
            scale,
            condition: Condition { cond: 0, feature: NO_FEATURE },
        };
        ctx.add_all_trees(arena, phi, stop)
    };
    let values = run_rows(n_rows, n_features * t, threads, cancelled, &init, &work)?;
    Ok(ShapValues { n_rows, n_features, n_targets: t, values, expected_value })
}
