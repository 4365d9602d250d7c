//! Exact SHAP values for tree ensembles, read from the model itself.
//!
//! A model whose explained output comes straight from an ONNX-ML tree ensemble
//! (`TreeEnsembleRegressor`, `TreeEnsembleClassifier`, opset 5's `TreeEnsemble`; as skl2onnx
//! and onnxmltools export scikit-learn, XGBoost and LightGBM models) is explained without a
//! single forward pass: the plugin reads the trees through the host's view of the model's
//! structure (ABI 1.4 `model_graph`) and runs the polynomial TreeSHAP algorithms of
//! `explaind-tree-shap`:
//! - `method = interventional` (default): exact Shapley values of E_b[f(x_S, b_S̄)] over the
//!   request's background (the game Kernel SHAP estimates; shap's `interventional`);
//! - `method = path_dependent`: Lundberg et al.'s algorithm with node covers from the model's
//!   `nodes_hitrates` (`covers = model`) or counted by routing the background
//!   (`covers = background`); `interactions = true` adds SHAP interaction values.
//!
//! What is explained is the ensemble's **raw margin** before `post_transform` (as shap's
//! TreeExplainer does): per class for multi-class models; for a binary classifier whose trees
//! score one class, the margin m of class 1, and −m for class 0 (the probabilities are
//! sigmoid(m) and sigmoid(−m) under LOGISTIC). So Σφ = margin(x) − base value, exactly; the
//! margins are returned as the extra `margin` [N, T].
//!
//! Cost: interventional charges N·K model rows (one ensemble evaluation per input and
//! background row, as Kernel SHAP would), path-dependent N.

use explaind_plugin_sdk::graph::{AttributeValue, Elements, Graph, Node};
use explaind_plugin_sdk::{
    Context, Cost, EXD_FAILED_PRECONDITION, EXD_UNIMPLEMENTED, Error, Explainer, ParamDefault, ParamKind, PluginInfo, Request,
    export_plugin,
};
use explaind_tree_shap::{AttrValue, TensorData, TreeEnsemble, TreeError};
use std::borrow::Cow;
use std::sync::{Arc, Mutex};

/// The domain of the tree ensemble operators.
const ML_DOMAIN: &str = "ai.onnx.ml";
const ENSEMBLES: [&str; 3] = ["TreeEnsembleRegressor", "TreeEnsembleClassifier", "TreeEnsemble"];

/// The plugin's instance: what it keeps between requests. Parsing a large ensemble and
/// counting covers over many rows cost more than explaining one row, so both are kept for the
/// last model (and background rows) seen.
#[derive(Default)]
pub struct TreeShap {
    ensemble: Mutex<Option<(String, Arc<TreeEnsemble>)>>,
    covers: Mutex<Option<CountedCovers>>,
}

/// Covers counted from rows: for which model and rows.
struct CountedCovers {
    model: String,
    rows: Vec<f32>,
    covers: Arc<Vec<f64>>,
}

impl TreeShap {
    /// The ensemble behind the request's output, parsed once per model file and output.
    fn ensemble(&self, ctx: &Context<'_>, request: &Request<'_>) -> Result<Arc<TreeEnsemble>, Error> {
        let key = format!("{}/{}", request.model_sha256(), request.output_name());
        if let Some((model, trees)) = self.ensemble.lock().unwrap_or_else(|e| e.into_inner()).as_ref()
            && *model == key
        {
            return Ok(trees.clone());
        }
        let graph = ctx.model_graph()?;
        let trees = Arc::new(parse(&find_ensemble(&graph, request)?)?);
        *self.ensemble.lock().unwrap_or_else(|e| e.into_inner()) = Some((key, trees.clone()));
        Ok(trees)
    }

    /// Covers counted by routing `rows`, kept for the same model and rows.
    fn counted_covers(
        &self,
        trees: &TreeEnsemble,
        model: &str,
        rows: &[f32],
        features: usize,
    ) -> Result<Arc<Vec<f64>>, TreeError> {
        if let Some(kept) = self.covers.lock().unwrap_or_else(|e| e.into_inner()).as_ref()
            && kept.model == model
            && kept.rows == rows
        {
            return Ok(kept.covers.clone());
        }
        let covers = Arc::new(trees.covers_from_rows(rows, features)?);
        let kept = CountedCovers { model: model.to_string(), rows: rows.to_vec(), covers: covers.clone() };
        *self.covers.lock().unwrap_or_else(|e| e.into_inner()) = Some(kept);
        Ok(covers)
    }
}

impl Explainer for TreeShap {
    fn info() -> PluginInfo {
        PluginInfo::new("tree-shap", env!("CARGO_PKG_VERSION"))
            .description(
                "Exact TreeSHAP for ONNX-ML tree ensembles (scikit-learn, XGBoost, LightGBM exports), read from \
                 the model's structure, no forward passes. Explains the raw margin before post_transform, as \
                 shap's TreeExplainer does; base values are the expected margin; the extra `margin` [N, T] \
                 is the explained margin, so sum(attributions) = margin - base value.",
            )
            .reentrant()
            .needs_tree_ensemble()
            .param(
                "method",
                ParamKind::Text,
                ParamDefault::Text("interventional".into()),
                "interventional (over the background: shap's feature_perturbation=interventional) or \
                 path_dependent (node covers: shap's tree_path_dependent).",
            )
            .max_len(32)
            .param(
                "covers",
                ParamKind::Text,
                ParamDefault::Text("auto".into()),
                "For path_dependent: model (the file's nodes_hitrates), background (counted by routing the \
                 request's background rows, e.g. the training set), or auto: the model's when they carry \
                 counts, else the background's. skl2onnx and onnxmltools write hit rates of 1 everywhere, a \
                 placeholder: such a model has none.",
            )
            .max_len(32)
            .param(
                "interactions",
                ParamKind::Flag,
                ParamDefault::Flag(false),
                "For path_dependent: also return SHAP interaction values as the extra `interactions` [N, T, F, F].",
            )
    }

    fn create() -> Result<Self, Error> {
        Ok(TreeShap::default())
    }

    /// Rows: N·K ensemble evaluations (interventional) or N (path-dependent). Memory: the
    /// values in f64 per (input, feature, target) and, with interactions, per feature pair.
    fn estimate(&self, request: &Request<'_>) -> Result<Cost, Error> {
        let settings = Settings::of(request)?;
        let n = request.batch_size() as f64;
        let features = request.inputs().first().map_or(0, |x| x.row_len()) as f64;
        let targets = request.output_row_size() as f64;
        let per_row = 8.0 * features * targets * if settings.interactions { features + 1.0 } else { 1.0 };
        let rows = match settings.method {
            Method::Interventional => n * request.background().and_then(|b| b.first()).map_or(0, |b| b.rows()) as f64,
            Method::PathDependent => n,
        };
        Ok(Cost::new(rows, n * per_row * 2.0))
    }

    fn explain(&self, ctx: &Context<'_>, request: &Request<'_>) -> Result<(), Error> {
        let settings = Settings::of(request)?;
        if request.inputs().len() != 1 {
            return Err(unimplemented("tree-shap explains models with one input (the feature rows)"));
        }
        let trees = self.ensemble(ctx, request)?;
        let trees = trees.as_ref();
        let x = request.inputs()[0];
        let features = x.row_len();
        if features < trees.n_features() {
            return Err(Error::invalid_argument(format!(
                "inputs: rows of {features} features, but the trees read feature {}",
                trees.n_features() - 1
            )));
        }
        let targets = target_map(trees, request)?;
        let cancelled = || ctx.is_cancelled();
        let (values, expected, interactions) = match settings.method {
            Method::Interventional => {
                let background = request.background().and_then(|b| b.first()).ok_or_else(|| {
                    Error::failed_precondition(
                        "background: interventional tree SHAP needs background rows (the values that stand for an \
                         absent feature); give a background, or use method=path_dependent",
                    )
                })?;
                let shap = explaind_tree_shap::interventional_shap(trees, x.data, background.data, features, 0, &cancelled)
                    .map_err(|e| tree_error(e, ctx))?;
                (shap.values, shap.expected_value, None)
            }
            Method::PathDependent => {
                let from_model = counted_hit_rates(trees);
                let (covers, source) = match (settings.covers, from_model) {
                    (Covers::Model | Covers::Auto, Some(covers)) => (Arc::new(covers), "the model's nodes_hitrates"),
                    (Covers::Model, None) => {
                        return Err(Error::failed_precondition(
                            "covers: the model carries no node counts (nodes_hitrates absent, or 1 everywhere as \
                             exporters write them); use covers=background with rows such as the training set",
                        ));
                    }
                    (Covers::Background | Covers::Auto, _) => {
                        let rows = request.background().and_then(|b| b.first()).ok_or_else(|| {
                            Error::failed_precondition(
                                "background: path-dependent tree SHAP needs node covers, and the model carries no \
                                 counts: give background rows (such as the training set) to count them from",
                            )
                        })?;
                        (
                            self.counted_covers(trees, request.model_sha256(), rows.data, features)
                                .map_err(|e| tree_error(e, ctx))?,
                            "the background's routing counts",
                        )
                    }
                };
                ctx.info("covers", source)?;
                let shap = explaind_tree_shap::path_dependent_shap(trees, &covers, x.data, features, 0, &cancelled)
                    .map_err(|e| tree_error(e, ctx))?;
                let interactions = match settings.interactions {
                    true => Some(
                        explaind_tree_shap::path_dependent_interactions(trees, &covers, x.data, features, 0, &cancelled)
                            .map_err(|e| tree_error(e, ctx))?,
                    ),
                    false => None,
                };
                (shap.values, shap.expected_value, interactions)
            }
        };
        write_results(ctx, request, trees, &targets, &values, &expected, interactions.as_ref())?;
        ctx.info("explained", &describe_margin(trees))?;
        ctx.info("method", settings.method.name())
    }
}

export_plugin!(TreeShap);

#[derive(Clone, Copy, PartialEq)]
enum Method {
    Interventional,
    PathDependent,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Interventional => "interventional",
            Method::PathDependent => "path_dependent",
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Covers {
    Auto,
    Model,
    Background,
}

struct Settings {
    method: Method,
    covers: Covers,
    interactions: bool,
}

impl Settings {
    fn of(request: &Request<'_>) -> Result<Settings, Error> {
        let method = match request.text("method")?.unwrap_or("interventional") {
            "interventional" => Method::Interventional,
            "path_dependent" => Method::PathDependent,
            other => {
                return Err(Error::invalid_argument(format!(
                    "parameters.method: {other:?} is not a method; use interventional or path_dependent"
                )));
            }
        };
        let covers = match request.text("covers")?.unwrap_or("auto") {
            "auto" => Covers::Auto,
            "model" => Covers::Model,
            "background" => Covers::Background,
            other => {
                return Err(Error::invalid_argument(format!("parameters.covers: {other:?}; use auto, model or background")));
            }
        };
        let interactions = request.flag("interactions")?;
        if interactions && method != Method::PathDependent {
            return Err(Error::invalid_argument(
                "parameters.interactions: interaction values are computed for method=path_dependent only (as in shap)",
            ));
        }
        Ok(Settings { method, covers, interactions })
    }
}

fn unimplemented(message: impl Into<String>) -> Error {
    Error::new(EXD_UNIMPLEMENTED, message)
}

fn tree_error(error: TreeError, ctx: &Context<'_>) -> Error {
    match error {
        TreeError::Cancelled => Error::cancelled(),
        TreeError::Unsupported(_) | TreeError::UnsupportedOperator(_) => unimplemented(format!("model: {error}")),
        TreeError::InvalidInput(_) => Error::invalid_argument(format!("inputs: {error}")),
        _ if ctx.is_cancelled() => Error::cancelled(),
        _ => Error::new(EXD_FAILED_PRECONDITION, format!("model: the tree ensemble is malformed: {error}")),
    }
}

/// The ensemble node that computes the explained output: followed back through `Identity` and
/// `Cast`, a tree ensemble whose input is (through the same) the model's input. Anything else
/// in between (a pipeline's scaler, a second model) would make the trees' SHAP values not the
/// model's.
fn find_ensemble<'a>(graph: &Graph<'a>, request: &Request<'_>) -> Result<Node<'a>, Error> {
    let through = |mut value: &'a str| -> Option<(Node<'a>, &'a str)> {
        loop {
            let node = graph.producer(value)?;
            if node.domain().is_empty() && matches!(node.op_type(), "Identity" | "Cast") {
                value = node.inputs().next()?;
                continue;
            }
            return Some((node, value));
        }
    };
    let refuse = || {
        unimplemented(format!(
            "output {:?}: tree-shap explains an output computed by one ONNX-ML tree ensemble (TreeEnsembleRegressor, \
             TreeEnsembleClassifier, TreeEnsemble) straight from the model's input",
            request.output_name()
        ))
    };
    let output = graph.nodes().flat_map(|n| n.outputs()).find(|&o| o == request.output_name()).ok_or_else(refuse)?;
    let (node, value) = through(output).ok_or_else(refuse)?;
    if node.domain() != ML_DOMAIN || !ENSEMBLES.contains(&node.op_type()) {
        return Err(refuse());
    }
    // A classifier's scores are its second output; its first is the label, which is not a float.
    let scores = if node.op_type() == "TreeEnsembleClassifier" { 1 } else { 0 };
    if node.outputs().nth(scores) != Some(value) {
        return Err(refuse());
    }
    let mut feed = node.inputs().next().ok_or_else(refuse)?;
    while let Some(n) = graph.producer(feed) {
        if !(n.domain().is_empty() && matches!(n.op_type(), "Identity" | "Cast")) {
            return Err(refuse());
        }
        feed = n.inputs().next().ok_or_else(refuse)?;
    }
    if feed != request.input_name(0) {
        return Err(refuse());
    }
    Ok(node)
}

/// The ensemble from the node's attributes, through the crate's neutral attribute view.
fn parse(node: &Node<'_>) -> Result<TreeEnsemble, Error> {
    let attributes: Vec<_> = node.attributes().collect();
    let lookup = |name: &str| -> Option<AttrValue<'_>> {
        let value = &attributes.iter().find(|a| a.name == name)?.value;
        Some(match value {
            AttributeValue::Int(v) => AttrValue::Int(*v),
            AttributeValue::Ints(v) => AttrValue::Ints(v),
            AttributeValue::Float(v) => AttrValue::Float(*v),
            AttributeValue::Floats(v) => AttrValue::Floats(v),
            AttributeValue::String(v) => AttrValue::String(v),
            AttributeValue::Strings(v) => AttrValue::Strings(v.clone()),
            AttributeValue::Tensor(t) => AttrValue::Tensor(match &t.elements {
                Elements::F32(v) => TensorData::F32(Cow::Borrowed(v)),
                Elements::F64(v) => TensorData::F64(Cow::Borrowed(v)),
                Elements::I64(v) => TensorData::I64(Cow::Borrowed(v)),
                Elements::U8(v) => TensorData::U8(Cow::Borrowed(v)),
                Elements::I32(v) => TensorData::I64(Cow::Owned(v.iter().map(|&e| e as i64).collect())),
                _ => return None,
            }),
            AttributeValue::Other => return None,
        })
    };
    TreeEnsemble::from_attributes(node.op_type(), lookup)
        .map_err(|e| Error::new(EXD_FAILED_PRECONDITION, format!("model: the tree ensemble is malformed: {e}")))
}

/// Per request target (a flat index into the explained output row): the ensemble target it
/// is, and the sign of its margin.
fn target_map(trees: &TreeEnsemble, request: &Request<'_>) -> Result<Vec<Vec<(usize, f64)>>, Error> {
    let (row, ensemble_targets) = (request.output_row_size(), trees.n_targets());
    let binary = ensemble_targets == 1 && row == 2;
    if !(binary || ensemble_targets == row) {
        return Err(unimplemented(format!(
            "output {:?}: rows of {row} values, but the trees score {ensemble_targets} target(s)",
            request.output_name()
        )));
    }
    Ok((0..request.batch_size())
        .map(|n| {
            request
                .targets(n)
                .iter()
                .map(|&t| match binary {
                    true => (0, if t == 1 { 1.0 } else { -1.0 }),
                    false => (t as usize, 1.0),
                })
                .collect()
        })
        .collect())
}

/// Attributions [N, T, F], base values [N, T], the margins [N, T], and the interactions
/// [N, T, F, F] when computed, each for the request's targets with their signs.
fn write_results(
    ctx: &Context<'_>,
    request: &Request<'_>,
    trees: &TreeEnsemble,
    targets: &[Vec<(usize, f64)>],
    values: &[f64],
    expected: &[f64],
    interactions: Option<&explaind_tree_shap::InteractionValues>,
) -> Result<(), Error> {
    let x = request.inputs()[0];
    let (n, t, features) = (request.batch_size(), request.num_targets(), x.row_len());
    let k = trees.n_targets();
    let attributions = ctx.attributions(0)?;
    let base = ctx.base_values()?;
    let margins = ctx.extra("margin", &[n as i64, t as i64])?;
    let mut raw = vec![0f64; k];
    for (row, picks) in targets.iter().enumerate() {
        trees.predict_raw(x.row(row), &mut raw).map_err(|e| Error::invalid_argument(format!("inputs: {e}")))?;
        for (j, &(target, sign)) in picks.iter().enumerate() {
            let pair = row * t + j;
            for f in 0..features {
                attributions[pair * features + f] = (sign * values[(row * features + f) * k + target]) as f32;
            }
            base[pair] = (sign * expected[target]) as f32;
            margins[pair] = (sign * raw[target]) as f32;
        }
    }
    if let Some(interactions) = interactions {
        let out = ctx.extra("interactions", &[n as i64, t as i64, features as i64, features as i64])?;
        for (row, picks) in targets.iter().enumerate() {
            for (j, &(target, sign)) in picks.iter().enumerate() {
                let at = (row * t + j) * features * features;
                for a in 0..features {
                    for b in 0..features {
                        out[at + a * features + b] = (sign * interactions.get(row, a, b, target)) as f32;
                    }
                }
            }
        }
    }
    Ok(())
}

/// The model's hit rates as covers, when they are counts: exporters write 1 for every node
/// (a placeholder), which would weigh every split ½/½.
fn counted_hit_rates(trees: &TreeEnsemble) -> Option<Vec<f64>> {
    let covers = trees.hitrate_covers()?;
    let first = *covers.first()?;
    covers.iter().any(|&c| c != first).then_some(covers)
}

fn describe_margin(trees: &TreeEnsemble) -> String {
    format!("the raw margin before post_transform {:?} (base values: the expected margin)", trees.post_transform())
}

#[cfg(test)]
mod tests {
    use explaind_plugin_sdk::testing::{FakeRequest, Value};

    #[test]
    fn every_parameter_is_bounded() {
        explaind_plugin_sdk::plugin_under_test!().assert_every_parameter_is_bounded();
    }

    #[test]
    fn estimate_charges_one_evaluation_per_input_and_background_row() {
        let plugin = explaind_plugin_sdk::plugin_under_test!();
        // N = 3 rows of 5 features, an output row of 2, K = 100 background rows: 300 rows;
        // memory 2 · 3 · 8 · 5 · 2 = 480 bytes.
        let cost = plugin.estimate(&FakeRequest::zeros(&[3, 5], 2).output_row_size(2).background_rows(100)).unwrap();
        assert_eq!((cost.model_rows, cost.scratch_bytes), (300.0, 480.0));
        let path = FakeRequest::zeros(&[3, 5], 2).output_row_size(2).param("method", Value::Text("path_dependent".into()));
        assert_eq!(plugin.estimate(&path).unwrap().model_rows, 3.0);
    }

    #[test]
    fn bad_settings_name_the_parameter() {
        let plugin = explaind_plugin_sdk::plugin_under_test!();
        let bad = FakeRequest::zeros(&[1, 2], 1).param("method", Value::Text("exact".into()));
        assert!(plugin.estimate(&bad).unwrap_err().message.starts_with("parameters.method"));
        let interventional_interactions = FakeRequest::zeros(&[1, 2], 1).param("interactions", Value::Flag(true));
        assert!(plugin.estimate(&interventional_interactions).unwrap_err().message.starts_with("parameters.interactions"));
    }
}
