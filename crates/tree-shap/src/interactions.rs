//! SHAP interaction values for the path-dependent game (shap's definition).
//!
//! Off the diagonal, `Φ_ij = (φ_i | j present − φ_i | j absent) / 2`, where `φ_i | j present` is feature
//! `i`'s Shapley value in the game on the other features with `j` always following `x`, and `| j absent`
//! with `j` always splitting by cover: this is the pairwise Shapley interaction index, symmetric in
//! `i, j`. On the diagonal, `Φ_ii = φ_i − Σ_{j≠i} Φ_ij`, so every row of `Φ` sums to `φ_i`.

use crate::ensemble::{Mode, TreeEnsemble};
use crate::parallel::run_rows;
use crate::path_dependent::{Condition, PathCtx, PathElem, PathTables, arena_len, expected_value_cover};
use crate::{TreeError, check_batch};

/// Interaction values: `values[((row * n_features + i) * n_features + j) * n_targets + target]`.
#[derive(Debug, Clone, PartialEq)]
pub struct InteractionValues {
    pub n_rows: usize,
    pub n_features: usize,
    pub n_targets: usize,
    pub values: Vec<f64>,
    /// `E_cover[f]` per target; `Σ_ij Φ_ij + expected_value = f(x)`.
    pub expected_value: Vec<f64>,
}

impl InteractionValues {
    pub fn get(&self, row: usize, i: usize, j: usize, target: usize) -> f64 {
        self.values[((row * self.n_features + i) * self.n_features + j) * self.n_targets + target]
    }
}

struct Scratch {
    arena: Vec<PathElem>,
    phi: Vec<f64>,
    on: Vec<f64>,
    off: Vec<f64>,
}

/// Exact path-dependent SHAP interaction values of the raw margin for the rows of `x` (row-major,
/// `n_features` wide) with node `covers` (see [`crate::path_dependent_shap`]). Costs about `2 × (number
/// of distinct features the ensemble splits on) + 1` path-dependent passes per row; the output has
/// `n_features² × n_targets` values per row. `cancelled()` is polled before every tree of every pass.
pub fn path_dependent_interactions(
    ens: &TreeEnsemble,
    covers: &[f64],
    x: &[f32],
    n_features: usize,
    threads: usize,
    cancelled: &(dyn Fn() -> bool + Sync),
) -> Result<InteractionValues, TreeError> {
    let expected_value = expected_value_cover(ens, covers)?;
    let n_rows = check_batch(ens, x, n_features, "rows")?;
    let t = ens.n_targets();
    let scale = ens.tree_scale();
    let tables = PathTables::new(ens, covers);
    let mut used: Vec<u32> = ens.nodes().iter().filter(|n| n.mode != Mode::Leaf).map(|n| n.feature).collect();
    used.sort_unstable();
    used.dedup();
    let per_row = n_features * n_features * t;
    let init = || Scratch {
        arena: vec![PathElem::default(); arena_len(ens.max_depth())],
        phi: vec![0.0; n_features * t],
        on: vec![0.0; n_features * t],
        off: vec![0.0; n_features * t],
    };
    let work = |s: &mut Scratch, row: usize, out: &mut [f64], stop: &dyn Fn() -> bool| -> Result<(), TreeError> {
        let xr = &x[row * n_features..(row + 1) * n_features];
        let ctx = |cond: i8, feature: u32| PathCtx {
            ens,
            tables: &tables,
            x: xr,
            n_targets: t,
            scale,
            condition: Condition { cond, feature },
        };
        s.phi.fill(0.0);
        ctx(0, u32::MAX).add_all_trees(&mut s.arena, &mut s.phi, stop)?;
        for &j in &used {
            let j = j as usize;
            s.on.fill(0.0);
            s.off.fill(0.0);
            ctx(1, j as u32).add_all_trees(&mut s.arena, &mut s.on, stop)?;
            ctx(-1, j as u32).add_all_trees(&mut s.arena, &mut s.off, stop)?;
            for i in 0..n_features {
                if i == j {
                    continue;
                }
                for k in 0..t {
                    out[(i * n_features + j) * t + k] = (s.on[i * t + k] - s.off[i * t + k]) / 2.0;
                }
            }
        }
        for i in 0..n_features {
            for k in 0..t {
                let off_diag: f64 = (0..n_features).filter(|&j| j != i).map(|j| out[(i * n_features + j) * t + k]).sum();
                out[(i * n_features + i) * t + k] = s.phi[i * t + k] - off_diag;
            }
        }
        Ok(())
    };
    let values = run_rows(n_rows, per_row, threads, cancelled, &init, &work)?;
    Ok(InteractionValues { n_rows, n_features, n_targets: t, values, expected_value })
}
