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
//! | `evaluate` | string | faithfulness metrics: names (`"infidelity,deletion"`) or a JSON object of name to parameters (`{"infidelity": {"samples": 50}}`) |
//! | `evaluation_seed` | int64 or uint64 | the metrics' seed |
//!
//! An explainer parameter is its InferParameter (int64, double, bool or string); a list is a
//! string holding a JSON array (`"window": "[1, 3, 3]"`). Inputs named `background/<input>`
//! are background rows for `<input>`.
//!
//! Outputs: the model's outputs by name, `attributions/<input>` (FP32 [N, T, ...]),
//! `target_indices` (INT64 [N, T]), `base_values` (FP32 [N, T], when the method has one),
//! `extras/<name>`, and `figure` (BYTES [1], a PNG) when a plot was asked for; per metric,
//! `evaluation/<metric>` (FP32 [N, T]), its extras `evaluation/<metric>/<name>` and, with a
//! plot, `evaluation/<metric>/figure`. The response parameters carry `explainer`,
//! `explainer_version`, `model_sha256`, `evaluation_seed` when metrics ran, and the result's
//! `info` entries as `info.<key>`.

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
const OWN: [&str; 10] = [
    "explainer",
    "targets",
    "top_k",
    "output",
    "background_id",
    "explained_inputs",
    "plot",
    "plot_top_k",
    "evaluate",
    "evaluation_seed",
];

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
    let evaluate = match parameters.get("evaluate") {
        None => Vec::new(),
        Some(p) => metric_requests(&p.text("parameters.evaluate")?)?,
    };
    let evaluation_seed = parameters
        .get("evaluation_seed")
        .map(|p| match p {
            Parameter::Uint(u) => Ok(*u),
            other => other
                .integer("parameters.evaluation_seed")
                .and_then(|i| u64::try_from(i).map_err(|_| invalid(format!("parameters.evaluation_seed: {i} is negative")))),
        })
        .transpose()?
        .unwrap_or(0);
    Ok(proto::ExplainRequest {
        model: Some(model),
        evaluate,
        evaluation_seed,
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
    })
}

/// The `evaluate` parameter: comma-separated metric names, or a JSON object of metric names
/// to their parameters (lists of numbers are not metric parameters).
fn metric_requests(text: &str) -> Result<Vec<proto::MetricRequest>, Status> {
    let field = "parameters.evaluate";
    if !text.trim_start().starts_with('{') {
        return Ok(text
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|name| proto::MetricRequest { name: name.to_string(), ..Default::default() })
            .collect());
    }
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|e| invalid(format!("{field}: not a JSON object of metrics ({e})")))?;
    object
        .into_iter()
        .map(|(name, params)| {
            let params = match params {
                serde_json::Value::Object(map) => Parameters::from_json(&map, &format!("{field}.{name}"))?,
                serde_json::Value::Null => Parameters::default(),
                other => return Err(invalid(format!("{field}.{name}: expected an object of parameters, got {other}"))),
            };
            let parameters = params
                .iter()
                .map(|(k, v)| Ok((k.clone(), v.to_param_value(&format!("{field}.{name}.{k}"))?)))
                .collect::<Result<_, Status>>()?;
            Ok(proto::MetricRequest { name, parameters })
        })
        .collect()
}

/// A named output of an explanation: explaind's tensor, or a figure's PNG bytes.
pub enum Output {
    Tensor(String, proto::Tensor),
    Png(String, Vec<u8>),
}

impl Output {
    pub fn name(&self) -> &str {
        match self {
            Output::Tensor(name, _) | Output::Png(name, _) => name,
        }
    }
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
        outputs.push(Output::Png("figure".into(), response.plot_png));
    }
    for m in response.evaluation {
        let prefix = format!("evaluation/{}", m.name);
        for e in m.extras {
            if let Some(t) = e.tensor {
                outputs.push(Output::Tensor(format!("{prefix}/{}", e.name), t));
            }
        }
        if !m.figure_png.is_empty() {
            outputs.push(Output::Png(format!("{prefix}/figure"), m.figure_png));
        }
        if let Some(t) = m.values {
            outputs.push(Output::Tensor(prefix, t));
        }
    }
    let mut parameters = Parameters::default();
    parameters.insert("explainer", Parameter::Text(response.explainer_name));
    parameters.insert("explainer_version", Parameter::Text(response.explainer_version));
    parameters.insert("model_sha256", Parameter::Text(response.model_sha256));
    if response.evaluation_seed != 0 {
        parameters.insert("evaluation_seed", Parameter::Uint(response.evaluation_seed));
    }
    let mut info: Vec<_> = response.info.into_iter().collect();
    info.sort();
    for (key, value) in info {
        parameters.insert(&format!("info.{key}"), Parameter::Text(value));
    }
    (outputs, parameters)
}
