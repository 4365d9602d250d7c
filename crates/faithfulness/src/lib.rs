//! Faithfulness metrics of an explanation: evidence that the attributions reflect the model.
//!
//! A metric takes an explanation (inputs, attributions, targets, base values) and a way to run
//! the model on rows of the explained input ([`Forward`]), and returns one figure per input and
//! target ([`Evaluation`]), with the parameters it used (defaults filled in) and any curves as
//! extras. Each metric is one file and one entry of [`METRICS`]; a new metric adds both.
//!
//! | metric | figure per (input, target) | model rows |
//! |---|---|---|
//! | [`completeness`] | Σφ − (f(x) − base) | N (only without base values) |
//! | [`infidelity`] | captum's: mean over samples of (Iᵀφ − (f(x) − f(x − I)))², optionally with φ scaled by the best β | N·samples |
//! | [`deletion`](curves) | area under f(x with the top-|φ| features set to `baseline`), k = 0..steps fractions | N·T·(steps+1) |
//! | [`insertion`](curves) | area under f(baseline with the top-|φ| features set to x) | N·T·(steps+1) |
//! | [`sensitivity_max`](sensitivity) | captum's: max over perturbations of ‖φ(x̃) − φ(x)‖ / ‖φ(x)‖ | N·samples re-explanations |
//! | [`rank_agreement`](rank_agreement) | Spearman correlation of φ with another explainer's, and their top-k overlap | N re-explanations |
//!
//! Randomness comes from one documented stream: ChaCha8 seeded with the request's seed, on the
//! metric's own stream number ([`Metric::stream`]), standard normals by Box–Muller from pairs of
//! uniforms (`explaind_plugin_math::Rng::uniform`). The same request and seed give the same
//! figures bit for bit; the perturbations can be returned as an extra so that anyone can check
//! the figure independently.

pub mod completeness;
pub mod curves;
pub mod infidelity;
mod params;
pub mod rank_agreement;
pub mod sensitivity;

use ndarray::{Array2, ArrayD, ArrayView2, ArrayViewD};
pub use params::{Param, ParamKind, ParamSpec, Params};
use std::collections::BTreeMap;

pub use completeness::Completeness;
pub use curves::{CurveMetric, DELETION, INSERTION};
pub use infidelity::Infidelity;
pub use rank_agreement::RankAgreement;
pub use sensitivity::SensitivityMax;

/// Every metric, by name.
pub static METRICS: [&(dyn Metric + Sync); 6] =
    [&Completeness, &Infidelity, &DELETION, &INSERTION, &SensitivityMax, &RankAgreement];

/// The metric called `name`.
pub fn metric(name: &str) -> Option<&'static (dyn Metric + Sync)> {
    METRICS.iter().copied().find(|m| m.name() == name)
}

/// Names of every metric, for messages.
pub fn names() -> Vec<&'static str> {
    METRICS.iter().map(|m| m.name()).collect()
}

/// The explanation a metric is about. Shapes: `inputs` [N, *F] (the explained input),
/// `attributions` [N, T, *F], `targets` [N, T] (flat indices into the output row),
/// `base_values` [N, T], `outputs` [N, O] (the explained output row at the inputs).
pub struct Explanation<'a> {
    pub inputs: ArrayViewD<'a, f32>,
    pub attributions: ArrayViewD<'a, f32>,
    pub targets: ArrayView2<'a, i64>,
    pub base_values: Option<ArrayView2<'a, f32>>,
    pub outputs: ArrayView2<'a, f32>,
    /// Model rows the explanation took per input row: what re-running it costs.
    pub rows_per_explanation: u64,
}

impl Explanation<'_> {
    pub fn rows(&self) -> usize {
        self.inputs.shape()[0]
    }

    pub fn targets_per_row(&self) -> usize {
        self.targets.shape()[1]
    }

    /// Elements of one input row.
    pub fn features(&self) -> usize {
        self.inputs.len() / self.rows().max(1)
    }

    /// Attributions of row `n` for target `t`, flattened.
    fn attribution(&self, n: usize, t: usize) -> Vec<f32> {
        let f = self.features();
        let flat = self.attributions.as_standard_layout();
        let all = flat.as_slice().expect("standard layout");
        let start = (n * self.targets_per_row() + t) * f;
        all[start..start + f].to_vec()
    }

    /// Input row `n`, flattened.
    fn input(&self, n: usize) -> Vec<f32> {
        let f = self.features();
        let flat = self.inputs.as_standard_layout();
        flat.as_slice().expect("standard layout")[n * f..(n + 1) * f].to_vec()
    }

    fn target(&self, n: usize, t: usize) -> usize {
        self.targets[[n, t]] as usize
    }
}

/// Runs the model on rows of the explained input.
pub trait Forward {
    /// `rows` [B, *F] are values of the explained input; `origin[b]` is the request row that row
    /// `b` was made from (inputs held at the request's values are taken from it). Returns the
    /// explained output rows [B, O].
    fn forward(&mut self, rows: ArrayViewD<'_, f32>, origin: &[usize]) -> Result<Array2<f32>, MetricError>;

    /// Called between batches: an error stops the metric (a cancelled or expired request).
    fn check(&mut self) -> Result<(), MetricError>;

    /// Attributions [B, T, *F] for rows [B, *F] of the explained input, each for the targets of
    /// the request row it came from (`origin`), by `explainer` (None: the explainer being
    /// evaluated, with the request's parameters; a name: that explainer with its defaults).
    /// For metrics that compare explanations; the default has no explainer to run.
    fn explain(
        &mut self,
        explainer: Option<&str>,
        rows: ArrayViewD<'_, f32>,
        origin: &[usize],
    ) -> Result<ArrayD<f32>, MetricError> {
        let _ = (explainer, rows, origin);
        Err(MetricError::Invalid("evaluate: this metric re-runs an explainer, which is not available here".into()))
    }
}

/// A metric's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub name: &'static str,
    /// [N, T]
    pub values: Array2<f32>,
    /// The parameters it ran with, defaults filled in (for the response and the audit record).
    pub parameters: BTreeMap<String, Param>,
    /// Curves, perturbations: named arrays whose first two axes are [N, T] or [N, samples].
    pub extras: Vec<(String, ArrayD<f32>)>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MetricError {
    /// A parameter or the explanation does not suit the metric; the message names the field.
    #[error("{0}")]
    Invalid(String),
    /// The model run failed, or the request stopped.
    #[error("{0}")]
    Stopped(String),
    /// A re-run explainer refused or failed, with its status code (gRPC's numbering).
    #[error("{message}")]
    Refused { code: i32, message: String },
}

/// What identifies a metric: its name, what it measures, its parameters, and its random
/// stream number (see the crate documentation; distinct per metric).
#[derive(Debug)]
pub struct MetricInfo {
    pub name: &'static str,
    /// What it measures, one sentence.
    pub description: &'static str,
    pub params: &'static [ParamSpec],
    pub stream: u64,
    /// It adds noise to the input, so the input must take any value (a float input, not token
    /// ids or category codes, which only deletion-like replacement suits).
    pub continuous: bool,
}

/// One faithfulness metric. See the crate documentation for the list.
pub trait Metric {
    fn info(&self) -> &MetricInfo;
    /// Model rows it will run for `explanation` with `params`, before it runs any.
    fn cost(&self, explanation: &Explanation<'_>, params: &Params) -> u64;
    fn evaluate(
        &self,
        explanation: &Explanation<'_>,
        params: &Params,
        seed: u64,
        forward: &mut dyn Forward,
    ) -> Result<Evaluation, MetricError>;

    fn name(&self) -> &'static str {
        self.info().name
    }
}

/// Checks `given` against the metric's declared parameters and fills in defaults: unknown
/// names, wrong kinds and values out of range are [`MetricError::Invalid`] naming
/// `evaluate.<metric>.<parameter>`.
pub fn resolve_params(metric: &dyn Metric, given: &BTreeMap<String, Param>) -> Result<Params, MetricError> {
    params::resolve(metric.name(), metric.info().params, given)
}

/// Runs `rows` through `forward` in batches of at most `batch` rows, checking between batches:
/// the output rows [B, O].
pub(crate) fn output_rows(
    forward: &mut dyn Forward,
    rows: ArrayViewD<'_, f32>,
    origin: &[usize],
    batch: usize,
) -> Result<Array2<f32>, MetricError> {
    let total = rows.shape()[0];
    let mut parts = Vec::new();
    let mut start = 0;
    while start < total {
        forward.check()?;
        let end = (start + batch.max(1)).min(total);
        parts.push(forward.forward(rows.slice_axis(ndarray::Axis(0), (start..end).into()), &origin[start..end])?);
        start = end;
    }
    if parts.is_empty() {
        return Ok(Array2::zeros((0, 0)));
    }
    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
    ndarray::concatenate(ndarray::Axis(0), &views).map_err(|e| MetricError::Stopped(format!("model outputs: {e}")))
}

/// The target value of each row of `rows`: `output[b][targets[b]]`.
pub(crate) fn target_values(
    forward: &mut dyn Forward,
    rows: ArrayViewD<'_, f32>,
    origin: &[usize],
    targets: &[usize],
    batch: usize,
) -> Result<Vec<f32>, MetricError> {
    let outputs = output_rows(forward, rows, origin, batch)?;
    targets
        .iter()
        .enumerate()
        .map(|(b, &target)| {
            outputs
                .get([b, target])
                .copied()
                .ok_or_else(|| MetricError::Stopped(format!("target {target} is outside the output row")))
        })
        .collect()
}

/// Per-element noise of `samples` perturbations of every input row, row-major [N, samples, F]:
/// the inputs with the noise added (`sign` 1) or taken away (−1), as rows [N·samples, *F] in
/// that order, and the request row each comes from.
pub(crate) fn perturbed_rows(e: &Explanation<'_>, samples: usize, noise: &[f32], sign: f32) -> (ArrayD<f32>, Vec<usize>) {
    let (n, f) = (e.rows(), e.features());
    let mut shape = vec![n * samples];
    shape.extend_from_slice(&e.inputs.shape()[1..]);
    let mut perturbed = ArrayD::zeros(ndarray::IxDyn(&shape));
    let flat = perturbed.as_slice_mut().expect("fresh array");
    for r in 0..n {
        let x = e.input(r);
        for s in 0..samples {
            let at = (r * samples + s) * f;
            for i in 0..f {
                flat[at + i] = x[i] + sign * noise[at + i];
            }
        }
    }
    (perturbed, (0..n * samples).map(|k| k / samples).collect())
}

/// The extra `perturbations` [N, samples, *F] when `return_perturbations` is set.
pub(crate) fn perturbations_extra(
    e: &Explanation<'_>,
    params: &Params,
    samples: usize,
    noise: Vec<f32>,
) -> Vec<(String, ArrayD<f32>)> {
    if !params.flag("return_perturbations") {
        return Vec::new();
    }
    let mut shape = vec![e.rows(), samples];
    shape.extend_from_slice(&e.inputs.shape()[1..]);
    vec![("perturbations".to_string(), ArrayD::from_shape_vec(ndarray::IxDyn(&shape), noise).expect("sized by the caller"))]
}

/// Rows per forward batch inside a metric: bounds the memory of the perturbed copies.
pub(crate) const BATCH_ROWS: usize = 256;

#[cfg(test)]
pub(crate) mod testing {
    //! A linear model `f(x) = W x + b` and its exact Shapley values against a zero baseline,
    //! `φ_i = W_ti x_i`: the constructed perfect explanation.
    use super::*;
    use ndarray::{Array, IxDyn};

    pub struct Linear {
        pub w: Array2<f32>,
        pub b: Vec<f32>,
        pub calls: usize,
        pub explained: usize,
    }

    impl Forward for Linear {
        fn forward(&mut self, rows: ArrayViewD<'_, f32>, _: &[usize]) -> Result<Array2<f32>, MetricError> {
            self.calls += rows.shape()[0];
            let n = rows.shape()[0];
            let x = rows.to_shape((n, self.w.shape()[1])).unwrap().to_owned();
            Ok(x.dot(&self.w.t()) + &Array::from_vec(self.b.clone()))
        }
        fn check(&mut self) -> Result<(), MetricError> {
            Ok(())
        }
        /// Exact SHAP values against zero for targets 0 and 1 (None), or the gradient ("saliency").
        fn explain(
            &mut self,
            explainer: Option<&str>,
            rows: ArrayViewD<'_, f32>,
            _: &[usize],
        ) -> Result<ArrayD<f32>, MetricError> {
            let (n, f) = (rows.shape()[0], self.w.shape()[1]);
            let x = rows.to_shape((n, f)).unwrap();
            self.explained += n;
            Ok(Array::from_shape_fn(IxDyn(&[n, 2, f]), |ix| match explainer {
                None => self.w[[ix[1], ix[2]]] * x[[ix[0], ix[2]]],
                Some(_) => self.w[[ix[1], ix[2]]],
            }))
        }
    }

    /// The model, inputs [2, 4], exact attributions [2, 2, 4] against zero, both outputs as
    /// targets, base values f(0) = b, and the outputs at the inputs.
    pub struct LinearCase {
        pub model: Linear,
        pub x: ArrayD<f32>,
        pub phi: ArrayD<f32>,
        pub targets: Array2<i64>,
        pub base: Array2<f32>,
        pub outputs: Array2<f32>,
    }

    impl LinearCase {
        pub fn explanation<'a>(&'a self, phi: &'a ArrayD<f32>) -> Explanation<'a> {
            Explanation {
                inputs: self.x.view(),
                attributions: phi.view(),
                targets: self.targets.view(),
                base_values: Some(self.base.view()),
                outputs: self.outputs.view(),
                rows_per_explanation: 1,
            }
        }
    }

    pub fn linear_case() -> LinearCase {
        let w = ndarray::arr2(&[[1.0f32, -2.0, 0.5, 3.0], [0.0, 1.0, -1.0, 2.0]]);
        let b = vec![0.25f32, -1.0];
        let x = ndarray::arr2(&[[1.0f32, 2.0, -1.0, 0.5], [0.75, -1.5, 2.0, 1.0]]).into_dyn();
        let mut phi = Array::zeros(IxDyn(&[2, 2, 4]));
        for n in 0..2 {
            for t in 0..2 {
                for i in 0..4 {
                    phi[[n, t, i]] = w[[t, i]] * x[[n, i]];
                }
            }
        }
        let targets = ndarray::arr2(&[[0i64, 1], [0, 1]]);
        let mut model = Linear { w: w.clone(), b: b.clone(), calls: 0, explained: 0 };
        let outputs = model.forward(x.view(), &[0, 1]).unwrap();
        model.calls = 0;
        let base = ndarray::Array2::from_shape_fn((2, 2), |(_, t)| b[t]);
        LinearCase { model, x, phi, targets, base, outputs }
    }
}
