//! Figures for Explain responses: from an explain result and the model's metadata to the
//! arguments of `explaind_plot::render`, and its errors to INVALID_ARGUMENT.

use crate::convert::invalid;
use crate::proto;
use explaind_host::{ExplainOutcome, TargetSelection};
use explaind_runtime::Model;
use ndarray::ArrayD;
use tonic::Status;

fn plot_error(e: explaind_plot::PlotError) -> Status {
    invalid(format!("plot: {e}"))
}

/// Checks, before any explaining is done, what can be known from the request alone: that a
/// layout fits the input's shape, and that the figure will not have too many panels.
pub fn precheck(
    model: &Model,
    inputs: &[explaind_runtime::Tensor],
    output_index: usize,
    selection: &TargetSelection,
    options: &proto::PlotOptions,
) -> Result<(), Status> {
    let kind: explaind_plot::Kind = options.kind.parse().map_err(plot_error)?;
    if inputs.len() != 1 {
        return Err(invalid(format!("plot: figures are drawn for models with one input; {} has {}", model.name, inputs.len())));
    }
    if inputs[0].as_f32().is_none() {
        return Err(invalid(format!(
            "plot: figures are drawn for float32 inputs; input {:?} is {}",
            model.inputs[0].name,
            explaind_runtime::element_type_name(inputs[0].element_type())
        )));
    }
    let shape = &inputs[0].shape()[1..];
    // Whether the explainer has base values is only known afterwards, so a waterfall is assumed
    // possible here and checked again on the result.
    let layout = explaind_plot::layout(shape, kind, true).map_err(plot_error)?;
    let targets = match selection {
        TargetSelection::Indices(v) => Some(v.len()),
        TargetSelection::Predicted => Some(1),
        TargetSelection::TopK(k) => Some(*k),
        // Known when the model declares every axis after the batch; otherwise counted on the
        // result, after the run.
        TargetSelection::All => model.outputs[output_index].shape.iter().skip(1).try_fold(1usize, |acc, d| match d {
            explaind_runtime::Dim::Fixed(n) => Some(acc * *n as usize),
            _ => None,
        }),
    };
    if let Some(t) = targets {
        let rows = inputs[0].shape()[0];
        let columns = if layout == explaind_plot::Kind::Image { t + 1 } else { t };
        if rows * columns > explaind_plot::MAX_PANELS {
            return Err(plot_error(explaind_plot::PlotError::TooManyPanels { panels: rows * columns, rows, columns }));
        }
    }
    Ok(())
}

/// Renders the figure of an explain result as a PNG.
pub fn render(
    model: &Model,
    explainer: &str,
    input: &ArrayD<f32>,
    outcome: &ExplainOutcome,
    output_index: usize,
    options: &proto::PlotOptions,
) -> Result<Vec<u8>, Status> {
    let kind = options.kind.parse().map_err(plot_error)?;
    let attributions = outcome
        .attributions
        .iter()
        .find(|(i, _)| *i == 0)
        .map(|(_, a)| a)
        .ok_or_else(|| Status::internal("plot: the explainer returned no attributions for the input"))?;
    let flat = |a: &ArrayD<f32>| a.as_standard_layout().iter().copied().collect::<Vec<f32>>();
    let inputs = flat(input);
    let attributions = flat(attributions);
    let outputs = flat(&outcome.outputs[output_index]);
    let base_values = outcome.base_values.as_ref().map(flat);
    // An explainer that explains something other than the output (tree SHAP: the raw margin)
    // returns it as the extra `margin`, [N, T]; the waterfall ends there.
    let explained =
        outcome.extras.iter().find(|(name, a)| name == "margin" && a.len() == outcome.target_indices.len()).map(|(_, a)| flat(a));
    let targets: Vec<i64> = outcome.target_indices.iter().copied().collect();
    let output_name = &model.outputs[output_index].name;
    let title = format!("{} v{} - {explainer} - output '{output_name}'", model.name, model.version);
    let explanation = explaind_plot::Explanation {
        input_shape: &input.shape()[1..],
        inputs: &inputs,
        attributions: &attributions,
        targets: &targets,
        outputs: &outputs,
        base_values: base_values.as_deref(),
        explained: explained.as_deref(),
        labels: &model.config.labels,
        feature_names: &model.config.feature_names,
        method: explainer,
        title: &title,
    };
    let top_k = options.top_k as usize;
    let figure = explaind_plot::render(&explanation, &explaind_plot::Options { kind, top_k }).map_err(plot_error)?;
    Ok(figure.png())
}
