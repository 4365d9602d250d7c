//! The Explain use case, whole: from a decoded request (inputs bound to the model, the
//! explainer, output, targets, parameters and background named as the client named them) to
//! the outcome. The gRPC service decodes into an [`ExplainRequest`], calls [`Host::explain`]
//! and encodes what comes back; tests call it directly.

use crate::Failure;
use crate::backgrounds::{BackgroundRegistry, Registered};
use crate::explain::{CancelToken, ExplainJob, ExplainOutcome, MemoryPool, ParamValue, RequestBudget, TargetSelection};
use crate::plugin::{Plugin, PluginRegistry};
use explaind_attribution::{AttributionEngine, Background};
use explaind_runtime::{Model, RunStats, Tensor};
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
    /// Faithfulness metrics to compute on the explanation (`crate::evaluate`).
    pub evaluate: Vec<crate::evaluate::MetricRequest>,
    /// The metrics' seed; None: a fresh one (returned in the outcome).
    pub evaluation_seed: Option<u64>,
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
        // Checked before any work; run on the explanation once it is made.
        let metrics = crate::evaluate::check(&request.evaluate)?;
        // What the metrics need besides the outcome: the inputs, and the pieces of the job to
        // run the explainer again (sensitivity_max, rank_agreement).
        let again = (!metrics.is_empty())
            .then(|| (request.inputs.clone(), request.explainer.clone(), request.params.clone(), background.clone()));
        let mut outcome = crate::explain::explain(ExplainJob {
            model: request.model.clone(),
            plugin: request.explainer,
            inputs: request.inputs,
            explained_inputs: request.explained_inputs,
            output_index,
            targets: request.targets,
            params: request.params,
            background,
            cancel: request.cancel.clone(),
            engine: self.engine.clone(),
            budget: self.budget,
            memory: self.memory.clone(),
        })?;
        if let Some((inputs, plugin, params, background)) = again {
            let seed = request.evaluation_seed.unwrap_or_else(fresh_seed);
            let targets = outcome.target_indices.clone();
            let explained = outcome.attributions.first().map_or(0, |(i, _)| *i);
            let reexplain = |explainer: Option<&str>, rows: ndarray::ArrayViewD<'_, f32>, origin: &[usize], budget| {
                let (plugin, params) = match explainer {
                    None => (plugin.clone(), params.clone()),
                    Some(name) => (self.explainer(name)?, BTreeMap::new()),
                };
                let mut parts = Vec::new();
                let mut stats = RunStats::default();
                let mut start = 0;
                // One job per request row: each keeps that row's targets.
                while start < origin.len() {
                    let row = origin[start];
                    let end = start + origin[start..].iter().take_while(|&&o| o == row).count();
                    // The explained input's rows; the others held at the request row's values.
                    let job_inputs = inputs
                        .iter()
                        .enumerate()
                        .map(|(i, t)| match i == explained {
                            true => Tensor::from_f32_exact(
                                t.element_type(),
                                rows.slice_axis(ndarray::Axis(0), (start..end).into()).to_owned(),
                            )
                            .map_err(|(i, v)| {
                                Failure::internal(format!("re-explained value {v} at {i} is not of the input's type"))
                            }),
                            false => Ok(t.select_rows(&vec![row; end - start])),
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    let job = ExplainJob {
                        model: request.model.clone(),
                        plugin: plugin.clone(),
                        inputs: job_inputs,
                        explained_inputs: (0..inputs.len()).map(|i| i == explained).collect(),
                        output_index,
                        targets: TargetSelection::Indices(targets.row(row).to_vec()),
                        params: params.clone(),
                        background: background.clone(),
                        cancel: request.cancel.clone(),
                        engine: self.engine.clone(),
                        budget,
                        memory: self.memory.clone(),
                    };
                    let again = crate::explain::explain(job)?;
                    stats.add(again.stats);
                    let (_, attributions) = again.attributions.into_iter().next().ok_or_else(|| {
                        Failure::failed_precondition(format!("explainer {} returned no attributions", plugin.name))
                    })?;
                    parts.push(attributions);
                    start = end;
                }
                let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
                let joined = ndarray::concatenate(ndarray::Axis(0), &views).map_err(|e| Failure::internal(e.to_string()))?;
                Ok((joined, stats))
            };
            let subject = crate::evaluate::Subject {
                model: &request.model,
                inputs: &inputs,
                outcome: &outcome,
                budget: self.budget,
                cancel: &request.cancel,
                reexplain: &reexplain,
            };
            let (evaluations, stats) = crate::evaluate::run(&metrics, subject, seed)?;
            outcome.stats.add(stats);
            outcome.evaluations = evaluations;
            outcome.evaluation_seed = seed;
        }
        Ok(outcome)
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

/// A seed no earlier request of this process had: std's per-process random hash keys over a
/// counter.
fn fresh_seed() -> u64 {
    use std::hash::BuildHasher;
    static STATE: std::sync::OnceLock<std::collections::hash_map::RandomState> = std::sync::OnceLock::new();
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    STATE.get_or_init(Default::default).hash_one(n)
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
