//! explaind's extension of the protocol: an explanation asked for and returned in ModelInfer's
//! own terms. The request's `parameters` name the explainer and what it should do; the answer
//! is named output tensors. README.md ("Open Inference Protocol") is the user's description;
//! this file is the one place that maps it.
//!
//! Request parameters (everything else in the map is a parameter of the explainer):
//!
//! | parameter | type | explaind's field |
//! |---|---|---|
//! | `explainer` | string | ExplainRequest.explainer: its presence makes the request an explanation |
//! | `targets` | string | `predicted` (default), `all`, or output indices `3,5` |
//! | `top_k` | int64 | the k highest-scoring outputs |
//! | `output` | string | the model output the targets index |
//! | `background_id` | string | a registered background |
//! | `explained_inputs` | string | comma-separated input names |
//! | `plot` | bool or string | a PNG figure (a string names its kind) |
//! | `plot_top_k` | int64 | features the figure shows |
//!
//! An explainer parameter is its InferParameter (int64, double, bool or string); a list is a
//! string holding a JSON array (`"window": "[1, 3, 3]"`). Inputs named `background/<input>`
//! are background rows for `<input>`.
//!
//! Outputs: the model's outputs by name, `attributions/<input>` (FP32 [N, T, ...]),
//! `target_indices` (INT64 [N, T]), `base_values` (FP32 [N, T], when the method has one),
//! `extras/<name>`, and `figure` (BYTES [1], a PNG) when a plot was asked for. The response
//! parameters carry `explainer`, `explainer_version`, `model_sha256` and the result's `info`
//! entries as `info.<key>`.

use super::parameter::{Parameter, Parameters};
use crate::convert::invalid;
use crate::proto;
use tonic::Status;

/// The parameters the protocol itself (or a client library) sets, never an explainer's.
const PROTOCOL_PARAMETERS: [&str; 7] =
    ["binary_data_output", "sequence_id", "sequence_start", "sequence_end", "priority", "timeout", "headers"];

/// The prefix of inputs that carry background rows.
pub const BACKGROUND_PREFIX: &str = "background/";

/// The request parameters of explaind's own (the table above).
const OWN: [&str; 8] = ["explainer", "targets", "top_k", "output", "background_id", "explained_inputs", "plot", "plot_top_k"];

/// The explainer a request names, if it asks for an explanation.
pub fn explainer(parameters: &Parameters) -> Result<Option<String>, Status> {
    parameters.get("explainer").map(|p| p.text("parameters.explainer")).transpose()
}

/// An ExplainRequest from a ModelInfer request's parts: `inputs` and `background` already as
/// explaind's tensors.
pub fn explain_request(
    model: proto::ModelRef,
    explainer: String,
    parameters: &Parameters,
    inputs: Vec<proto::NamedTensor>,
    background: Vec<proto::NamedTensor>,
) -> Result<proto::ExplainRequest, Status> {
    let text = |name: &str| parameters.get(name).map(|p| p.text(&format!("parameters.{name}"))).transpose();
    let integer = |name: &str| parameters.get(name).map(|p| p.integer(&format!("parameters.{name}"))).transpose();
    use proto::targets::Selection;
    let selection = match (text("targets")?, integer("top_k")?) {
        (Some(_), Some(_)) => return Err(invalid("parameters.targets, parameters.top_k: give one, not both")),
        (None, Some(k)) => {
            Selection::TopK(u32::try_from(k).map_err(|_| invalid(format!("parameters.top_k: {k} is not a count of outputs")))?)
        }
        (Some(t), None) => match t.trim() {
            "predicted" | "" => Selection::Predicted(proto::PredictedClass {}),
            "all" => Selection::All(proto::AllOutputs {}),
            list => Selection::Indices(proto::IndexList {
                values: list
                    .split(',')
                    .map(|v| {
                        v.trim().parse::<i64>().map_err(|_| {
                            invalid(format!(
                                "parameters.targets: {t:?} is not \"predicted\", \"all\" or comma-separated output indices"
                            ))
                        })
                    })
                    .collect::<Result<_, _>>()?,
            }),
        },
        (None, None) => Selection::Predicted(proto::PredictedClass {}),
    };
    let plot = match parameters.get("plot") {
        None => None,
        Some(Parameter::Bool(false)) => None,
        Some(Parameter::Bool(true)) => Some(String::new()),
        Some(Parameter::Text(kind)) => Some(kind.clone()),
        Some(_) => return Err(invalid("parameters.plot: a bool, or a string naming the figure's kind")),
    };
    let plot_top_k = integer("plot_top_k")?
        .map(|k| u32::try_from(k).map_err(|_| invalid(format!("parameters.plot_top_k: {k} is out of range"))))
        .transpose()?;
    let mut explainer_parameters = std::collections::HashMap::new();
    for (name, value) in parameters.iter() {
        if OWN.contains(&name.as_str()) || PROTOCOL_PARAMETERS.contains(&name.as_str()) {
            continue;
        }
        explainer_parameters.insert(name.clone(), value.to_param_value(&format!("parameters.{name}"))?);
    }
    Ok(proto::ExplainRequest {
        model: Some(model),
        explainer,
        inputs,
        targets: Some(proto::Targets { selection: Some(selection) }),
        output: text("output")?.unwrap_or_default(),
        parameters: explainer_parameters,
        background,
        background_id: text("background_id")?.unwrap_or_default(),
        explained_inputs: text("explained_inputs")?
            .map(|names| names.split(',').map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect())
            .unwrap_or_default(),
        plot: plot.map(|kind| proto::PlotOptions {
            png: true,
            kind,
            top_k: plot_top_k.unwrap_or_default(),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// A named output of an explanation: explaind's tensor, or the figure's PNG bytes.
pub enum Output {
    Tensor(String, proto::Tensor),
    Png(Vec<u8>),
}

/// The outputs and response parameters of an explanation (the module documentation's list).
pub fn explain_outputs(response: proto::ExplainResponse) -> (Vec<Output>, Parameters) {
    let mut outputs = Vec::new();
    for o in response.outputs {
        if let Some(t) = o.tensor {
            outputs.push(Output::Tensor(o.name, t));
        }
    }
    for a in response.attributions {
        if let Some(t) = a.values {
            outputs.push(Output::Tensor(format!("attributions/{}", a.input_name), t));
        }
    }
    if let Some(t) = response.target_indices {
        outputs.push(Output::Tensor("target_indices".into(), t));
    }
    if let Some(t) = response.base_values {
        outputs.push(Output::Tensor("base_values".into(), t));
    }
    for e in response.extras {
        if let Some(t) = e.tensor {
            outputs.push(Output::Tensor(format!("extras/{}", e.name), t));
        }
    }
    if !response.plot_png.is_empty() {
        outputs.push(Output::Png(response.plot_png));
    }
    let mut parameters = Parameters::default();
    parameters.insert("explainer", Parameter::Text(response.explainer_name));
    parameters.insert("explainer_version", Parameter::Text(response.explainer_version));
    parameters.insert("model_sha256", Parameter::Text(response.model_sha256));
    let mut info: Vec<_> = response.info.into_iter().collect();
    info.sort();
    for (key, value) in info {
        parameters.insert(&format!("info.{key}"), Parameter::Text(value));
    }
    (outputs, parameters)
}
