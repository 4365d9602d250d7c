//! The Explain use case, whole: from a decoded request (inputs bound to the model, the
//! explainer, output, targets, parameters and background named as the client named them) to
//! the outcome. The gRPC service decodes into an [`ExplainRequest`], calls [`Host::explain`]
//! and encodes what comes back; tests call it directly.

use crate::Failure;
use crate::backgrounds::{BackgroundRegistry, Registered};
use crate::explain::{CancelToken, ExplainJob, ExplainOutcome, MemoryPool, ParamValue, RequestBudget, TargetSelection};
use crate::plugin::{Plugin, PluginRegistry};
use explaind_attribution::{AttributionEngine, Background};
use explaind_runtime::{Model, Tensor};
use ndarray::ArrayD;
use std::collections::BTreeMap;
use std::sync::Arc;

/// What every explain request shares: the plugins, the attribution engine, the registered
/// backgrounds, and the limits.
pub struct Host {
    pub plugins: Arc<PluginRegistry>,
    /// Compiled gradient and DeepLIFT graphs, and the background-activation cache.
    pub engine: Arc<AttributionEngine>,
    pub backgrounds: Arc<BackgroundRegistry>,
    /// What one request may use (model rows, scratch bytes).
    pub budget: RequestBudget,
    /// What the requests in flight may hold together.
    pub memory: Arc<MemoryPool>,
}

/// Where a request's background comes from.
#[derive(Debug, Clone, Default)]
pub enum BackgroundSource {
    /// The model's default background, if it has one.
    #[default]
    ModelDefault,
    /// Rows sent with the request: one array per model input, rows first, float32 values.
    Rows(Vec<ArrayD<f32>>),
    /// A background registered for the model, by its id.
    Registered(String),
}

/// An explain request, decoded: inputs bound to the model, the rest as the client named it.
pub struct ExplainRequest {
    pub model: Arc<Model>,
    pub explainer: Arc<Plugin>,
    /// One tensor per model input, in the model's order and declared types, batch first.
    pub inputs: Vec<Tensor>,
    /// Per model input, whether it is explained; empty: every input.
    pub explained_inputs: Vec<bool>,
    /// The model output the targets index into; empty: the first.
    pub output: String,
    pub targets: TargetSelection,
    pub params: BTreeMap<String, ParamValue>,
    pub background: BackgroundSource,
    pub cancel: CancelToken,
}

impl Host {
    /// The explainer named `name`, or NOT_FOUND listing the loaded ones.
    pub fn explainer(&self, name: &str) -> Result<Arc<Plugin>, Failure> {
        self.plugins.get(name).ok_or_else(|| {
            let names: Vec<String> = self.plugins.list().iter().map(|p| p.name.clone()).collect();
            Failure::not_found(format!("explainer: no explainer named {name:?} (loaded: {})", names.join(", ")))
        })
    }

    /// Runs `request`: resolves its output and background, then one plugin call
    /// ([`crate::explain::explain`]). Blocking: call it from a blocking thread.
    pub fn explain(&self, request: ExplainRequest) -> Result<ExplainOutcome, Failure> {
        let output_index = output_index(&request.model, &request.output)?;
        let background = self.background(&request.model, request.background)?;
        crate::explain::explain(ExplainJob {
            model: request.model,
            plugin: request.explainer,
            inputs: request.inputs,
            explained_inputs: request.explained_inputs,
            output_index,
            targets: request.targets,
            params: request.params,
            background,
            cancel: request.cancel,
            engine: self.engine.clone(),
            budget: self.budget,
            memory: self.memory.clone(),
        })
    }

    /// Keeps `rows` (one array per model input) as a background of `model`, named by their
    /// digest.
    pub fn register_background(&self, model: &Model, rows: Vec<ArrayD<f32>>) -> Result<Arc<Registered>, Failure> {
        self.backgrounds.register(&model.name, rows)
    }

    /// The background a request names: rows it sent (named by their digest), a registered
    /// one (NOT_FOUND, or INVALID_ARGUMENT when it was registered for other models), or
    /// `None` for the model's default, which [`crate::explain::explain`] takes.
    fn background(&self, model: &Model, source: BackgroundSource) -> Result<Option<Background>, Failure> {
        match source {
            BackgroundSource::ModelDefault => Ok(None),
            BackgroundSource::Rows(rows) => {
                Ok(Some(Background { digest: explaind_runtime::digest_arrays(&rows), rows: Arc::new(rows) }))
            }
            BackgroundSource::Registered(id) => match self.backgrounds.get(&model.name, &id) {
                Some(registered) => Ok(Some(registered.background.clone())),
                None => Err(match self.backgrounds.models_with(&id) {
                    others if others.is_empty() => {
                        Failure::not_found(format!("background_id: no background {id:?} is registered"))
                    }
                    others => Failure::invalid_argument(format!(
                        "background_id: {id:?} was registered for model {}, not {}; register it for {} too",
                        others.join(", "),
                        model.name,
                        model.name
                    )),
                }),
            },
        }
    }
}

/// The index of output `name` of `model` (empty: the first), or INVALID_ARGUMENT listing them.
pub fn output_index(model: &Model, name: &str) -> Result<usize, Failure> {
    if name.is_empty() {
        return Ok(0);
    }
    model.outputs.iter().position(|o| o.name == name).ok_or_else(|| {
        let names: Vec<&str> = model.outputs.iter().map(|o| o.name.as_str()).collect();
        Failure::invalid_argument(format!("output: {name:?} is not an output of {} (outputs: {})", model.name, names.join(", ")))
    })
}
