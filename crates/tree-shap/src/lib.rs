//! Exact SHAP values for ONNX-ML tree ensembles.
//!
//! This crate has one job: given a tree ensemble exported to ONNX (`ai.onnx.ml` `TreeEnsembleRegressor` /
//! `TreeEnsembleClassifier` of opsets 1-3, as written by skl2onnx and onnxmltools for scikit-learn,
//! XGBoost and LightGBM, or opset 5's `TreeEnsemble`), compute exact Shapley values of its predictions
//! in polynomial time, the way shap's `TreeExplainer` does. It does not load ONNX files, run sessions or
//! talk to the daemon: callers hand it the node's attributes through the neutral [`AttrValue`] view.
//!
//! # What is explained
//!
//! The **raw margin** per target: the aggregated leaf values plus `base_values`, *before* `post_transform`
//! (as shap explains XGBoost/LightGBM margins rather than probabilities). For classifiers, targets are the
//! class indices of `class_ids`, except in ONNX Runtime's binary case (two class labels, every leaf vote
//! for the same class column, as exported for XGBoost/LightGBM/scikit-learn boosting): there the ensemble
//! has one target, the positive class's score (votes plus `base_values[1]`, or `base_values[0]` when only
//! one is given) to which ONNX Runtime applies `post_transform`. `base_values` must have 0 or `n_targets`
//! entries (ONNX Runtime silently ignores other lengths; this crate refuses them).
//! [`apply_post_transform`] is provided separately for callers who need probabilities.
//!
//! Tree traversal follows ONNX Runtime for float inputs: thresholds are compared as `f32`, a node's true
//! branch is taken when the comparison of its mode holds (`BRANCH_LEQ`: `x <= t`, ... `BRANCH_NEQ`:
//! `x != t`, `BRANCH_MEMBER`: `x` in the set) or when `x` is NaN and `missing_value_tracks_true` is set.
//! Leaf values are accumulated in `f64`.
//!
//! # What is exact
//!
//! * [`interventional_shap`]: Shapley values of the game `v(S) = mean_b f(x_S, b_S̄)` over a background
//!   set (shap's "interventional" / `tree_shap_indep`), exact for every row, in time linear in the number
//!   of background rows. Efficiency holds: `Σ_i φ_i = f(x) − mean_b f(b)` per target.
//! * [`path_dependent_shap`]: Lundberg et al.'s Algorithm 2, exact Shapley values of the game where absent
//!   features follow both branches weighted by node covers (from `nodes_hitrates`, or counted from rows
//!   with [`TreeEnsemble::covers_from_rows`]). `Σ_i φ_i = f(x) − E_cover[f]`.
//! * [`path_dependent_interactions`]: shap's SHAP interaction values for the same game (pairwise Shapley
//!   interaction index off the diagonal, `φ_i − Σ_{j≠i} Φ_ij` on it); rows sum to `φ`.
//!
//! Child cover fractions are `cover(child) / (cover(true child) + cover(false child))` (½ each when both
//! are zero), so inconsistent or constant hit rates still define a proper game.
//!
//! # What is refused
//!
//! * `MIN` / `MAX` aggregates: the margin is not a sum over trees, so the per-tree algorithms are not exact
//!   and an exact alternative is exponential; the explainers return [`TreeError::Unsupported`]
//!   ([`TreeEnsemble::predict_raw`] still evaluates them).
//! * Malformed models (cycles, shared nodes, out-of-range children, unknown modes, mismatched attribute
//!   lengths, trees deeper than [`MAX_DEPTH`]) fail to parse with an error naming the attribute.
//!
//! All explainers run rows in parallel with `std::thread::scope` (SHAP values for a few rows split each
//! row's trees across threads instead) and poll a caller-supplied cancellation callback.

mod ensemble;
mod interactions;
mod interventional;
mod parallel;
mod path_dependent;

pub use ensemble::{
    Aggregate, AttrValue, LeafValue, MAX_DEPTH, MAX_FEATURE, MAX_TARGETS, Mode, Node, OpKind, PostTransform, TensorData,
    TreeEnsemble, apply_post_transform,
};
pub use interactions::{InteractionValues, path_dependent_interactions};
pub use interventional::interventional_shap;
pub use path_dependent::{expected_value_cover, path_dependent_shap};

/// Errors from parsing an ensemble or explaining rows.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TreeError {
    #[error("unsupported operator `{0}` (expected TreeEnsembleRegressor, TreeEnsembleClassifier or TreeEnsemble)")]
    UnsupportedOperator(String),
    #[error("missing attribute `{0}`")]
    MissingAttribute(String),
    #[error("attribute `{name}`: {reason}")]
    InvalidAttribute { name: String, reason: String },
    #[error("attribute `{name}` has {got} entries, expected {expected} (the length of {of})")]
    LengthMismatch { name: String, got: usize, expected: usize, of: String },
    #[error("tree {tree} is deeper than {limit} levels")]
    TooDeep { tree: usize, limit: usize },
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("cancelled")]
    Cancelled,
}

/// SHAP values for a batch of rows: `values[(row * n_features + feature) * n_targets + target]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapValues {
    pub n_rows: usize,
    pub n_features: usize,
    pub n_targets: usize,
    pub values: Vec<f64>,
    /// The base value per target: `Σ_i φ_i + expected_value = f(x)` for every row.
    pub expected_value: Vec<f64>,
}

impl ShapValues {
    pub fn get(&self, row: usize, feature: usize, target: usize) -> f64 {
        self.values[(row * self.n_features + feature) * self.n_targets + target]
    }
}

/// Checks a row-major batch of rows of width `n_features` against the ensemble; returns the row count.
pub(crate) fn check_batch(ens: &TreeEnsemble, data: &[f32], n_features: usize, what: &str) -> Result<usize, TreeError> {
    if n_features < ens.n_features() {
        return Err(TreeError::InvalidInput(format!(
            "{what}: rows have {n_features} features, the ensemble reads feature index {}",
            ens.n_features() - 1
        )));
    }
    if n_features == 0 {
        return if data.is_empty() { Ok(0) } else { Err(TreeError::InvalidInput(format!("{what}: zero-width rows with data"))) };
    }
    if !data.len().is_multiple_of(n_features) {
        return Err(TreeError::InvalidInput(format!("{what}: {} values is not a multiple of {n_features} features", data.len())));
    }
    Ok(data.len() / n_features)
}

pub(crate) fn check_additive(ens: &TreeEnsemble) -> Result<(), TreeError> {
    match ens.aggregate() {
        Aggregate::Sum | Aggregate::Average => Ok(()),
        a => Err(TreeError::Unsupported(format!(
            "aggregate_function {a:?}: the margin is not a sum over trees, so tree SHAP is not exact for it"
        ))),
    }
}
