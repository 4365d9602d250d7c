//! Figures for Explain responses: from an explain result and the model's metadata to the
//! arguments of `explaind_plot::render`, and its errors to INVALID_ARGUMENT.

use crate::convert::invalid;
use crate::proto;
use explaind_host::{ExplainOutcome, ExplainRequest, TargetSelection};
use explaind_runtime::{Model, Tensor};
use ndarray::ArrayD;
use tonic::Status;

fn plot_error(e: explaind_plot::PlotError) -> Status {
    invalid(format!("plot: {e}"))
}

/// The input a figure draws: the first explained input that holds token ids (a text figure),
/// else input 0.
pub fn subject(inputs: &[Tensor], explained: &[bool]) -> usize {
    let explained = |i: usize| explained.get(i).copied().unwrap_or(true);
    inputs.iter().enumerate().find(|(i, t)| explained(*i) && ids_of(t).is_some()).map_or(0, |(i, _)| i)
}

/// The elements of an integer tensor (token ids), or `None` for a float one.
fn ids_of(tensor: &Tensor) -> Option<Vec<i64>> {
    Some(match tensor {
        Tensor::Int64(a) => a.iter().copied().collect(),
        Tensor::Int32(a) => a.iter().map(|&v| v as i64).collect(),
        Tensor::Int8(a) => a.iter().map(|&v| v as i64).collect(),
        Tensor::Uint8(a) => a.iter().map(|&v| v as i64).collect(),
        Tensor::Bool(a) => a.iter().map(|&v| v as i64).collect(),
        Tensor::Float(_) | Tensor::Float16(_) | Tensor::Double(_) => return None,
    })
}

/// Checks, before any explaining is done, what can be known from the request alone: that a
/// layout fits the input's shape, that token strings are at hand for a text figure, and that
/// the figure will not have too many panels.
pub fn precheck(request: &ExplainRequest, options: &proto::PlotOptions) -> Result<(), Status> {
    let (model, inputs) = (&request.model, &request.inputs);
    let output_index = explaind_host::output_index(model, &request.output).map_err(crate::convert::status_of)?;
    let kind: explaind_plot::Kind = options.kind.parse().map_err(plot_error)?;
    let subject = subject(inputs, &request.explained_inputs);
    let input = &inputs[subject];
    let layout = if ids_of(input).is_some() {
        text_precheck(model, input, subject, kind, options)?
    } else {
        if inputs.len() != 1 {
            return Err(invalid(format!(
                "plot: figures are drawn for models with one input; {} has {}",
                model.name,
                inputs.len()
            )));
        }
        if input.as_f32().is_none() {
            return Err(invalid(format!(
                "plot: figures are drawn for float32 inputs and token ids; input {:?} is {}",
                model.inputs[0].name,
                explaind_runtime::element_type_name(input.element_type())
            )));
        }
        // Whether the explainer has base values is only known afterwards, so a waterfall is
        // assumed possible here and checked again on the result.
        explaind_plot::layout(&input.shape()[1..], kind, true).map_err(plot_error)?
    };
    let targets = match &request.targets {
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
        let rows = input.rows();
        let columns = if layout == explaind_plot::Kind::Image { t + 1 } else { t };
        if rows * columns > explaind_plot::MAX_PANELS {
            return Err(plot_error(explaind_plot::PlotError::TooManyPanels { panels: rows * columns, rows, columns }));
        }
    }
    Ok(())
}

/// A text figure of token ids: a sequence [N, S], and the strings of its tokens, from the
/// request or the model's vocabulary.
fn text_precheck(
    model: &Model,
    input: &Tensor,
    index: usize,
    kind: explaind_plot::Kind,
    options: &proto::PlotOptions,
) -> Result<explaind_plot::Kind, Status> {
    let name = &model.inputs[index].name;
    if !matches!(kind, explaind_plot::Kind::Auto | explaind_plot::Kind::Text) {
        return Err(invalid(format!("plot.kind: input {name:?} holds token ids; its figure is \"text\"")));
    }
    let shape = input.shape();
    if shape.len() != 2 {
        return Err(invalid(format!("plot: a text figure needs token ids of shape [N, S]; input {name:?} is {shape:?}")));
    }
    if options.tokens.is_empty() {
        if model.vocabulary.is_none() {
            return Err(invalid(format!(
                "plot.tokens: give the token strings of each input row, or a `vocabulary` in model {}'s config.toml",
                model.name
            )));
        }
    } else {
        if options.tokens.len() != shape[0] {
            return Err(invalid(format!("plot.tokens: {} rows for {} inputs", options.tokens.len(), shape[0])));
        }
        if let Some((n, row)) = options.tokens.iter().enumerate().find(|(_, row)| row.tokens.len() > shape[1]) {
            return Err(invalid(format!("plot.tokens[{n}]: {} tokens for {} positions", row.tokens.len(), shape[1])));
        }
    }
    Ok(explaind_plot::Kind::Text)
}

/// Renders the figure of an explain result as a PNG. `input` is the request's input `subject`
/// (see [`subject`]).
pub fn render(
    model: &Model,
    explainer: &str,
    (subject, input): (usize, &Tensor),
    outcome: &ExplainOutcome,
    options: &proto::PlotOptions,
) -> Result<Vec<u8>, Status> {
    let output_index = outcome.output_index;
    let kind = options.kind.parse().map_err(plot_error)?;
    let attributions = outcome
        .attributions
        .iter()
        .find(|(i, _)| *i == subject)
        .map(|(_, a)| a)
        .ok_or_else(|| Status::internal("plot: the explainer returned no attributions for the input"))?;
    let flat = |a: &ArrayD<f32>| a.as_standard_layout().iter().copied().collect::<Vec<f32>>();
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
    if let Some(ids) = ids_of(input) {
        let positions = input.shape()[1];
        let tokens = token_strings(model, &ids, positions, options);
        let text = explaind_plot::TextExplanation {
            tokens: &tokens,
            positions,
            attributions: &attributions,
            targets: &targets,
            outputs: &outputs,
            base_values: base_values.as_deref(),
            explained: explained.as_deref(),
            labels: &model.config.labels,
            merge_wordpieces: options.merge_wordpieces,
            method: explainer,
            title: &title,
        };
        return Ok(explaind_plot::render_text(&text).map_err(plot_error)?.png());
    }
    let input = input.as_f32().ok_or_else(|| Status::internal("plot: the prechecked input is float32"))?;
    let inputs = flat(input);
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

/// The token string of every position of every row: the request's, else the vocabulary's
/// (an id the vocabulary does not have is shown as "[id 1234]").
fn token_strings(model: &Model, ids: &[i64], positions: usize, options: &proto::PlotOptions) -> Vec<Vec<String>> {
    if !options.tokens.is_empty() {
        return options.tokens.iter().map(|row| row.tokens.clone()).collect();
    }
    let vocabulary = model.vocabulary.as_deref().map(Vec::as_slice).unwrap_or_default();
    ids.chunks(positions.max(1))
        .map(|row| {
            row.iter()
                .map(|&id| {
                    usize::try_from(id).ok().and_then(|i| vocabulary.get(i)).cloned().unwrap_or_else(|| format!("[id {id}]"))
                })
                .collect()
        })
        .collect()
}

/// The PNG of a metric's curves (deletion, insertion: the extra `curve` [N, T, points]), or
/// empty for a metric without curves.
pub fn metric_curves(
    model: &Model,
    evaluation: &explaind_faithfulness::Evaluation,
    targets: &ndarray::Array2<i64>,
) -> Result<Vec<u8>, Status> {
    let Some((_, curve)) = evaluation.extras.iter().find(|(name, _)| name == "curve") else { return Ok(Vec::new()) };
    let &[n, t, points] = curve.shape() else { return Ok(Vec::new()) };
    let curves: Vec<f32> = curve.iter().copied().collect();
    let areas: Vec<f32> = evaluation.values.iter().copied().collect();
    let targets: Vec<i64> = targets.iter().copied().collect();
    let figure = explaind_plot::render_curves(&explaind_plot::Curves {
        metric: evaluation.name,
        dims: (n, t, points),
        curves: &curves,
        areas: &areas,
        targets: &targets,
        labels: &model.config.labels,
    })
    .map_err(|e| invalid(format!("plot: evaluate.{}: {e}", evaluation.name)))?;
    Ok(figure.png())
}
