//! Faithfulness metrics on an explanation the plugin just made (`explaind_faithfulness`): the
//! request's metrics are checked before the plugin runs ([`check`]), costed against what is
//! left of the request's model-row budget once it has returned, and run with batched forward
//! passes of the model ([`run`]), stopping when the request is cancelled.

use crate::Failure;
use crate::explain::{CancelToken, ExplainOutcome, RequestBudget};
use explaind_faithfulness::{Evaluation, Explanation, Forward, Metric, MetricError, Param, Params};
use explaind_runtime::{Model, RunStats, Tensor, TensorView};
use ndarray::{Array2, ArrayD, ArrayViewD};
use std::collections::BTreeMap;

/// One metric the request asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRequest {
    pub name: String,
    pub params: BTreeMap<String, Param>,
}

/// A metric with its checked parameters.
pub struct Resolved {
    metric: &'static (dyn Metric + Sync),
    params: Params,
}

/// The metrics of a request, by name, with their parameters checked and defaulted; an unknown
/// name or bad parameter is INVALID_ARGUMENT naming it.
pub fn check(requests: &[MetricRequest]) -> Result<Vec<Resolved>, Failure> {
    let mut out = Vec::with_capacity(requests.len());
    for (i, request) in requests.iter().enumerate() {
        let metric = explaind_faithfulness::metric(&request.name).ok_or_else(|| {
            Failure::invalid_argument(format!(
                "evaluate[{i}].name: no metric named {:?} (metrics: {})",
                request.name,
                explaind_faithfulness::names().join(", ")
            ))
        })?;
        if requests[..i].iter().any(|r| r.name == request.name) {
            return Err(Failure::invalid_argument(format!("evaluate[{i}].name: {} is asked for twice", request.name)));
        }
        let params = explaind_faithfulness::resolve_params(metric, &request.params)
            .map_err(|e| Failure::invalid_argument(e.to_string()))?;
        out.push(Resolved { metric, params });
    }
    Ok(out)
}

/// Runs an explainer again on rows of the explained input (None: the request's explainer and
/// parameters; a name: that explainer with its defaults), each row for the targets of the
/// request row it came from, within `RequestBudget`: the attributions [B, T, *F].
pub type Reexplain<'a> =
    dyn Fn(Option<&str>, ArrayViewD<'_, f32>, &[usize], RequestBudget) -> Result<(ArrayD<f32>, RunStats), Failure> + 'a;

/// What the metrics run against.
pub struct Subject<'a> {
    pub model: &'a Model,
    pub inputs: &'a [Tensor],
    pub outcome: &'a ExplainOutcome,
    pub budget: RequestBudget,
    pub cancel: &'a CancelToken,
    pub reexplain: &'a Reexplain<'a>,
}

/// Runs `metrics` on the explanation, after checking their cost against the rows the request
/// has left. Returns the evaluations and the forward passes they made.
pub fn run(metrics: &[Resolved], subject: Subject<'_>, seed: u64) -> Result<(Vec<Evaluation>, RunStats), Failure> {
    if metrics.is_empty() {
        return Ok((Vec::new(), RunStats::default()));
    }
    let Subject { model, inputs, outcome, budget, cancel, reexplain } = subject;
    let (index, attributions) = match outcome.attributions.as_slice() {
        [(index, attributions)] => (*index, attributions),
        other => {
            return Err(Failure::failed_precondition(format!(
                "evaluate: the explanation has attributions for {} inputs; metrics take exactly one",
                other.len()
            )));
        }
    };
    // Integer inputs (token ids, category codes) as float32 values, exactly (up to 2^24).
    let input = &inputs[index];
    let name = &model.inputs[index].name;
    let element_type = input.element_type();
    let explained = input.to_f32_exact().map_err(|(i, v)| {
        Failure::failed_precondition(format!(
            "evaluate: input {name} holds {v} at element {i}, which the metrics cannot carry exactly"
        ))
    })?;
    if element_type != explaind_runtime::FLOAT {
        let kind = explaind_runtime::element_type_name(element_type);
        for r in metrics {
            let info = r.metric.info();
            if info.continuous {
                return Err(Failure::failed_precondition(format!(
                    "evaluate.{}: adds noise to the input, and {name} is {kind} (token ids or codes): \
                     use deletion, insertion, completeness or rank_agreement, which replace values",
                    info.name
                )));
            }
            if let Some(explaind_faithfulness::Param::Number(b)) = r.params.0.get("baseline") {
                let one = ndarray::ArrayD::from_elem(ndarray::IxDyn(&[1]), *b as f32);
                if (*b as f32) as f64 != *b || Tensor::from_f32_exact(element_type, one).is_err() {
                    return Err(Failure::invalid_argument(format!(
                        "evaluate.{}.baseline: {b} is not a value of input {name} ({kind})",
                        info.name
                    )));
                }
            }
        }
    }
    if attributions.shape()[2..] != explained.shape()[1..] {
        return Err(Failure::failed_precondition(format!(
            "evaluate: the attributions {:?} are not over the input {:?} (attributions at a layer cannot be evaluated yet)",
            attributions.shape(),
            explained.shape()
        )));
    }
    let output = &outcome.outputs[outcome.output_index];
    let rows = output.shape()[0];
    let outputs = output.to_shape((rows, output.len() / rows.max(1))).map_err(|e| Failure::internal(e.to_string()))?;
    let base_values = match &outcome.base_values {
        Some(b) => {
            Some(b.view().into_dimensionality::<ndarray::Ix2>().map_err(|e| Failure::internal(format!("base values: {e}")))?)
        }
        None => None,
    };
    let explanation = Explanation {
        inputs: explained.view(),
        attributions: attributions.view(),
        targets: outcome.target_indices.view(),
        base_values,
        outputs: outputs.view(),
        rows_per_explanation: outcome.stats.rows / rows.max(1) as u64,
    };

    let left = budget.model_rows.saturating_sub(outcome.stats.rows);
    let mut total = 0u64;
    for r in metrics {
        let rows = r.metric.cost(&explanation, &r.params);
        // A metric holds its perturbed rows and their noise at once (float32 each): bounded by
        // the request's scratch budget, like a plugin's estimate.
        let bytes = rows.saturating_mul(explanation.features() as u64).saturating_mul(8);
        if budget.scratch_bytes > 0 && bytes > budget.scratch_bytes {
            return Err(Failure::new(
                explaind_abi::EXD_RESOURCE_EXHAUSTED,
                format!(
                    "evaluate.{}: would hold about {bytes} bytes of perturbed inputs, over the limit of {} (--max-request-bytes)",
                    r.metric.name(),
                    budget.scratch_bytes
                ),
            ));
        }
        total = total.saturating_add(rows);
        if budget.model_rows > 0 && total > left {
            return Err(Failure::new(
                explaind_abi::EXD_RESOURCE_EXHAUSTED,
                format!(
                    "evaluate.{}: the metrics would need {total} more model rows, over the {left} this request has left \
                     (--max-model-rows-per-request {})",
                    r.metric.name(),
                    budget.model_rows
                ),
            ));
        }
    }

    let mut forward = ModelForward {
        model,
        inputs,
        explained: index,
        element_type,
        output_index: outcome.output_index,
        cancel,
        stats: RunStats::default(),
        reexplain,
        budget,
        spent_before: outcome.stats.rows,
    };
    let mut evaluations = Vec::with_capacity(metrics.len());
    for r in metrics {
        let evaluation = r.metric.evaluate(&explanation, &r.params, seed, &mut forward).map_err(|e| match e {
            MetricError::Invalid(m) => Failure::invalid_argument(m),
            MetricError::Stopped(m) => {
                cancel.failure().unwrap_or_else(|| Failure::internal(format!("evaluate.{}: {m}", r.metric.name())))
            }
            MetricError::Refused { code, message } => Failure::new(code, format!("evaluate.{}: {message}", r.metric.name())),
        })?;
        crate::finite::require_finite(&format!("evaluate.{}", r.metric.name()), evaluation.values.view().into_dyn())?;
        evaluations.push(evaluation);
    }
    Ok((evaluations, forward.stats))
}

/// The model's explained output for rows of its explained input, and explanations of them.
struct ModelForward<'a> {
    model: &'a Model,
    /// The request's inputs: the ones not explained are held at their row's values.
    inputs: &'a [Tensor],
    /// The explained input, whose values the metrics set, and its element type.
    explained: usize,
    element_type: explaind_runtime::ElementType,
    output_index: usize,
    cancel: &'a CancelToken,
    stats: RunStats,
    reexplain: &'a Reexplain<'a>,
    budget: RequestBudget,
    /// Model rows the request had used before the metrics.
    spent_before: u64,
}

impl Forward for ModelForward<'_> {
    fn forward(&mut self, rows: ArrayViewD<'_, f32>, origin: &[usize]) -> Result<Array2<f32>, MetricError> {
        // Every other input at the values of the row each perturbed row came from.
        let held: Vec<Option<Tensor>> =
            (0..self.inputs.len()).map(|i| (i != self.explained).then(|| self.inputs[i].select_rows(origin))).collect();
        // Integer inputs go back to their type (every value a metric sets is one of it).
        let typed = match self.element_type {
            explaind_runtime::FLOAT => None,
            other => Some(
                Tensor::from_f32_exact(other, rows.to_owned())
                    .map_err(|(i, v)| MetricError::Stopped(format!("value {v} at element {i} is not one of the input's type")))?,
            ),
        };
        let views: Vec<TensorView<'_>> = held
            .iter()
            .map(|h| match (h, &typed) {
                (Some(t), _) => t.view(),
                (None, Some(t)) => t.view(),
                (None, None) => TensorView::from(rows.view()),
            })
            .collect();
        let (outputs, stats) = self.model.run_tensors(&views).map_err(|e| MetricError::Stopped(e.to_string()))?;
        self.stats.add(stats);
        let output = &outputs[self.output_index];
        let n = output.shape()[0];
        output.to_shape((n, output.len() / n.max(1))).map(|a| a.to_owned()).map_err(|e| MetricError::Stopped(e.to_string()))
    }

    fn check(&mut self) -> Result<(), MetricError> {
        match self.cancel.failure() {
            Some(f) => Err(MetricError::Stopped(f.message)),
            None => Ok(()),
        }
    }
    fn explain(
        &mut self,
        explainer: Option<&str>,
        rows: ArrayViewD<'_, f32>,
        origin: &[usize],
    ) -> Result<ArrayD<f32>, MetricError> {
        // A re-run may use what the request has left, no more.
        let budget = match self.budget.model_rows {
            0 => self.budget,
            limit => {
                RequestBudget { model_rows: limit.saturating_sub(self.spent_before + self.stats.rows).max(1), ..self.budget }
            }
        };
        let (attributions, stats) = (self.reexplain)(explainer, rows, origin, budget)
            .map_err(|f| MetricError::Refused { code: f.code, message: f.message })?;
        self.stats.add(stats);
        Ok(attributions)
    }
}
