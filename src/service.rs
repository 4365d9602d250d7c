//! The gRPC services: thin adapters from wire messages to the host and runtime crates.

use crate::convert::{self, invalid, status_of};
use crate::observe::{self, Observation};
use crate::proto;
use explaind_audit::Rpc;
use explaind_host::{CancelToken, ExplainRequest, Host, PluginRegistry};
use explaind_runtime::{Model, ModelRepository, RepositoryError, RunStats};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tonic::{Request, Response, Status};

/// Limits applied to every request.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest accepted request message, bytes.
    pub max_message_bytes: usize,
    /// Most rows in one request's batch (inputs or background).
    pub max_batch_rows: usize,
    /// What one explain request may use (model rows, scratch bytes).
    pub budget: explaind_host::RequestBudget,
    /// What the explain requests in flight may hold together (`--max-inflight-bytes`).
    pub memory: Arc<explaind_host::MemoryPool>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: 64 << 20,
            max_batch_rows: 4096,
            budget: explaind_host::RequestBudget {
                model_rows: crate::config::DEFAULT_MAX_MODEL_ROWS_PER_REQUEST,
                scratch_bytes: crate::config::DEFAULT_MAX_REQUEST_BYTES,
            },
            memory: explaind_host::MemoryPool::new(crate::config::DEFAULT_MAX_INFLIGHT_BYTES),
        }
    }
}

/// What every service shares.
pub struct State {
    pub repository: Arc<ModelRepository>,
    /// The Explain use case: plugins, attribution engine, registered backgrounds, budgets.
    pub host: Arc<Host>,
    pub limits: Limits,
    /// Who may call what, and how many requests each caller may have in flight.
    pub access: Arc<crate::access::AccessPolicy>,
    /// Metrics and the audit log of every predict and explain request.
    pub observer: Arc<crate::observe::Observer>,
    /// This daemon's name in a fleet (`server.replica_id`), sent back on every response.
    pub replica: String,
    /// Set when a stop signal starts the drain: readiness answers false from then on.
    draining: std::sync::atomic::AtomicBool,
}

fn repository_status(e: RepositoryError) -> Status {
    match e {
        RepositoryError::InvalidName { .. } => invalid(e.to_string()),
        RepositoryError::ModelNotFound(_) | RepositoryError::VersionNotFound { .. } | RepositoryError::NotInRepository { .. } => {
            Status::not_found(e.to_string())
        }
        RepositoryError::Model(_) | RepositoryError::Io { .. } => Status::failed_precondition(e.to_string()),
    }
}

impl State {
    /// The shared state of a server over `repository` and `plugins`, explaining within
    /// `limits`.
    pub fn new(
        repository: Arc<ModelRepository>,
        plugins: Arc<PluginRegistry>,
        engine: Arc<explaind_attribution::AttributionEngine>,
        backgrounds: Arc<explaind_host::BackgroundRegistry>,
        limits: Limits,
        access: Arc<crate::access::AccessPolicy>,
        observer: Arc<crate::observe::Observer>,
    ) -> State {
        let host = Host { plugins, engine, backgrounds, budget: limits.budget, memory: limits.memory.clone() };
        State { repository, host: Arc::new(host), limits, access, observer, replica: String::new(), draining: Default::default() }
    }

    /// Marks the start of the drain (see [`crate::server::serve`]).
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// Names this daemon in a fleet: responses carry `replica` in `x-explaind-replica`.
    pub fn with_replica(mut self, replica: String) -> State {
        self.replica = replica;
        self
    }

    /// A model's metadata, with what can explain it. The compilability is decided once per
    /// model file (at load) and cached.
    pub fn metadata(&self, model: &Model) -> proto::ModelMetadata {
        convert::model_metadata(model, &self.host.engine.compilability(model), &self.host.plugins.list())
    }

    pub fn model(&self, model: Option<&proto::ModelRef>) -> Result<Arc<Model>, Status> {
        let model = model.ok_or_else(|| invalid("model: missing"))?;
        if model.name.is_empty() {
            return Err(invalid("model.name: empty"));
        }
        self.repository.get(&model.name, &model.version).map_err(|e| {
            let listed: Vec<String> = self.repository.list().iter().map(|m| format!("{}/{}", m.name, m.version)).collect();
            Status::not_found(format!("model: {e} (loaded: {})", listed.join(", ")))
        })
    }
}

fn timing(total: Duration, stats: RunStats) -> proto::Timing {
    proto::Timing {
        total_ms: total.as_secs_f64() * 1e3,
        model_ms: stats.elapsed.as_secs_f64() * 1e3,
        model_calls: stats.calls,
        model_rows: stats.rows,
    }
}

/// Runs blocking work off the async threads. If the request future is dropped (the client went
/// away), the token's flag is raised so plugins stop at their next cancellation check.
async fn run_blocking<T: Send + 'static>(
    cancel: &CancelToken,
    work: impl FnOnce() -> Result<T, Status> + Send + 'static,
) -> Result<T, Status> {
    struct RaiseOnDrop(Arc<std::sync::atomic::AtomicBool>, bool);
    impl Drop for RaiseOnDrop {
        fn drop(&mut self) {
            if !self.1 {
                self.0.store(true, Ordering::Relaxed);
            }
        }
    }
    let mut guard = RaiseOnDrop(cancel.cancelled.clone(), false);
    let result = tokio::task::spawn_blocking(work).await.map_err(|e| Status::internal(format!("worker failed: {e}")))?;
    guard.1 = true;
    result
}

/// The request's cancellation token: its deadline comes from the access layer, which read the
/// client's `grpc-timeout`.
fn cancel_token<T>(request: &Request<T>) -> CancelToken {
    let deadline = request.extensions().get::<crate::access::Deadline>().map(|d| d.0);
    CancelToken { deadline, cancelled: Default::default() }
}

// ----- ModelService -----------------------------------------------------------------------

pub struct ModelService(pub Arc<State>);

#[tonic::async_trait]
impl proto::model_service_server::ModelService for ModelService {
    async fn list_models(&self, _: Request<proto::ListModelsRequest>) -> Result<Response<proto::ListModelsResponse>, Status> {
        let models = self.0.repository.list().iter().map(|m| self.0.metadata(m)).collect();
        Ok(Response::new(proto::ListModelsResponse { models }))
    }

    async fn get_model(&self, request: Request<proto::GetModelRequest>) -> Result<Response<proto::ModelMetadata>, Status> {
        let model = self.0.model(request.get_ref().model.as_ref())?;
        Ok(Response::new(self.0.metadata(&model)))
    }

    async fn predict(&self, request: Request<proto::PredictRequest>) -> Result<Response<proto::PredictResponse>, Status> {
        let mut observation = Observation::start(Rpc::Predict, &request);
        let result = self.predict_observed(request, &mut observation).await;
        self.0.observer.finish(observation, result).await
    }
}

impl ModelService {
    async fn predict_observed(
        &self,
        request: Request<proto::PredictRequest>,
        observation: &mut Observation,
    ) -> Result<Response<proto::PredictResponse>, Status> {
        let began = Instant::now();
        let cancel = cancel_token(&request);
        let request = request.into_inner();
        let model = self.0.model(request.model.as_ref())?;
        observation.model = Some(observe::model_identity(&model));
        let (inputs, _) = convert::bind_inputs(&model, &request.inputs, "inputs", self.0.limits.max_batch_rows)?;
        observation.record_inputs(&self.0.observer, &inputs, &request.inputs);
        let run_model = model.clone();
        let (outputs, stats) = run_blocking(&cancel, move || {
            let views: Vec<_> = inputs.iter().map(|a| a.view()).collect();
            run_model.run_tensors(&views).map_err(|e| invalid(format!("inputs: {e}")))
        })
        .await?;
        observation.stats = stats;
        explaind_host::finite::require_finite_outputs(&model.outputs, &outputs).map_err(status_of)?;
        let outputs = model
            .outputs
            .iter()
            .zip(&outputs)
            .map(|(spec, a)| proto::NamedTensor { name: spec.name.clone(), tensor: Some(convert::array_to_tensor(a)) })
            .collect();
        Ok(Response::new(proto::PredictResponse {
            outputs,
            model_name: model.name.clone(),
            model_version: model.version.clone(),
            model_sha256: model.sha256.clone(),
            timing: Some(timing(began.elapsed(), stats)),
        }))
    }
}

// ----- AdminService -----------------------------------------------------------------------

pub struct AdminService {
    pub state: Arc<State>,
    /// Where each model's health (`explaind.v1.ModelService/<model>`) follows its loading.
    pub health: tonic_health::server::HealthReporter,
}

/// The health service name of a model: `explaind.v1.ModelService/<model>`, SERVING while some
/// version of it is loaded.
pub fn model_health_name(model: &str) -> String {
    format!("explaind.v1.ModelService/{model}")
}

/// Sets the health of model `name` from the repository: SERVING while a version is loaded.
pub async fn report_model_health(health: &tonic_health::server::HealthReporter, repository: &ModelRepository, name: &str) {
    let status = match repository.list().iter().any(|m| m.name == name) {
        true => tonic_health::ServingStatus::Serving,
        false => tonic_health::ServingStatus::NotServing,
    };
    health.set_service_status(model_health_name(name), status).await;
}

#[tonic::async_trait]
impl proto::admin_service_server::AdminService for AdminService {
    async fn load_model(&self, request: Request<proto::LoadModelRequest>) -> Result<Response<proto::LoadModelResponse>, Status> {
        let request = request.into_inner();
        let state = self.state.clone();
        let name = request.name.clone();
        // Loading and deciding what can explain the model both read and compile its graph.
        let (loaded, metadata) = tokio::task::spawn_blocking(move || {
            let loaded = state.repository.load(&request.name, &request.version)?;
            let metadata: Vec<proto::ModelMetadata> = loaded.iter().map(|m| state.metadata(m)).collect();
            Ok::<_, RepositoryError>((loaded, metadata))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(repository_status)?;
        for m in &loaded {
            tracing::info!(model = %m.name, version = %m.version, sha256 = %m.sha256, provider = m.execution_provider.as_str(), "model loaded by admin request");
        }
        report_model_health(&self.health, &self.state.repository, &name).await;
        Ok(Response::new(proto::LoadModelResponse { loaded: metadata }))
    }

    async fn unload_model(
        &self,
        request: Request<proto::UnloadModelRequest>,
    ) -> Result<Response<proto::UnloadModelResponse>, Status> {
        let request = request.into_inner();
        let unloaded_versions = self.state.repository.unload(&request.name, &request.version).map_err(repository_status)?;
        tracing::info!(model = %request.name, versions = ?unloaded_versions, "model unloaded by admin request");
        report_model_health(&self.health, &self.state.repository, &request.name).await;
        Ok(Response::new(proto::UnloadModelResponse { unloaded_versions }))
    }
}

// ----- ExplainService ---------------------------------------------------------------------

pub struct ExplainService(pub Arc<State>);

pub fn explainer_info(p: &explaind_host::Plugin) -> proto::ExplainerInfo {
    let mut requires = Vec::new();
    if p.needs_background() {
        requires.push("background".to_string());
    }
    if p.needs_gradients() {
        requires.push("gradients".to_string());
    }
    if p.needs_tree_ensemble() {
        requires.push("tree ensemble".to_string());
    }
    proto::ExplainerInfo {
        name: p.name.clone(),
        version: p.version.clone(),
        abi_version: format!("{}.{}", p.abi_major, p.abi_minor),
        description: p.description.clone(),
        parameters: p
            .params
            .iter()
            .map(|s| proto::ParameterSpec {
                name: s.name.clone(),
                kind: explaind_host::plugin::kind_name(s.kind).to_string(),
                description: s.description.clone(),
                required: s.required,
                default_value: s.default.as_ref().map(convert::param_to_proto),
                minimum: s.range.map(|r| r.min).filter(|m| m.is_finite()),
                maximum: s.range.map(|r| r.max).filter(|m| m.is_finite()),
                max_length: s.range.map(|r| r.max_len).filter(|&n| n > 0),
            })
            .collect(),
        requires,
        file_sha256: p.file_sha256.clone(),
        typed_inputs: p.typed_inputs(),
    }
}

#[tonic::async_trait]
impl proto::explain_service_server::ExplainService for ExplainService {
    async fn list_explainers(
        &self,
        _: Request<proto::ListExplainersRequest>,
    ) -> Result<Response<proto::ListExplainersResponse>, Status> {
        let explainers = self.0.host.plugins.list().iter().map(|p| explainer_info(p)).collect();
        Ok(Response::new(proto::ListExplainersResponse { explainers }))
    }

    async fn register_background(
        &self,
        request: Request<proto::RegisterBackgroundRequest>,
    ) -> Result<Response<proto::RegisterBackgroundResponse>, Status> {
        let request = request.into_inner();
        let model = self.0.model(request.model.as_ref())?;
        let (rows, count) = convert::bind_float_inputs(&model, &request.rows, "rows", self.0.limits.max_batch_rows)?;
        let registered = self.0.host.register_background(&model, rows).map_err(status_of)?;
        tracing::info!(model = %model.name, id = %registered.background.digest, rows = count, "background registered");
        Ok(Response::new(proto::RegisterBackgroundResponse {
            background_id: registered.background.digest.clone(),
            rows: count as u64,
        }))
    }

    async fn explain(&self, request: Request<proto::ExplainRequest>) -> Result<Response<proto::ExplainResponse>, Status> {
        let mut observation = Observation::start(Rpc::Explain, &request);
        let result = self.explain_observed(request, &mut observation).await;
        self.0.observer.finish(observation, result).await
    }
}

impl ExplainService {
    /// Decodes the request, runs [`Host::explain`] off the async threads (with the figure, if
    /// asked for), and encodes the outcome.
    async fn explain_observed(
        &self,
        request: Request<proto::ExplainRequest>,
        observation: &mut Observation,
    ) -> Result<Response<proto::ExplainResponse>, Status> {
        let began = Instant::now();
        let cancel = cancel_token(&request);
        let request = request.into_inner();
        let state = &self.0;
        let model = state.model(request.model.as_ref())?;
        observation.model = Some(observe::model_identity(&model));
        let plugin = state.host.explainer(&request.explainer).map_err(status_of)?;
        observation.explainer = Some(explaind_audit::ExplainerIdentity {
            name: plugin.name.clone(),
            version: plugin.version.clone(),
            file_sha256: plugin.file_sha256.clone(),
        });
        observation.record_parameters(&state.observer, &request);
        let (inputs, _) = convert::bind_inputs(&model, &request.inputs, "inputs", state.limits.max_batch_rows)?;
        observation.record_inputs(&state.observer, &inputs, &request.inputs);
        let explain_request = ExplainRequest {
            model: model.clone(),
            explainer: plugin.clone(),
            explained_inputs: convert::explained_inputs(&model, &request.explained_inputs)?,
            output: request.output.clone(),
            targets: convert::targets(request.targets.as_ref())?,
            params: convert::params(&request.parameters)?,
            background: convert::background_source(&model, &request, state.limits.max_batch_rows)?,
            cancel: cancel.clone(),
            inputs,
            evaluate: convert::metric_requests(&request.evaluate)?,
            evaluation_seed: (request.evaluation_seed != 0).then_some(request.evaluation_seed),
        };
        let plot = request.plot.filter(|p| p.png);
        if let Some(options) = &plot {
            crate::figure::precheck(&explain_request, options)?;
        }
        let plot_input = plot.as_ref().map(|_| {
            let subject = crate::figure::subject(&explain_request.inputs, &explain_request.explained_inputs);
            (subject, explain_request.inputs[subject].clone())
        });
        let host = state.host.clone();
        let plugin_failed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = plugin_failed.clone();
        let digest_wanted = state.observer.audit.is_some();
        let worker_cancel = cancel.clone();
        let result = run_blocking(&cancel, move || {
            let outcome = host.explain(explain_request).map_err(|failure| {
                flag.store(failure.from_plugin, Ordering::Relaxed);
                status_of(failure)
            })?;
            let png = match (&plot, &plot_input) {
                (Some(options), Some((subject, input))) => {
                    crate::figure::render(&model, &plugin.name, (*subject, input), &outcome, options)?
                }
                _ => Vec::new(),
            };
            // Beside the figure: the curves of the metrics that have them.
            let curve_pngs = match plot {
                Some(_) => outcome
                    .evaluations
                    .iter()
                    .map(|e| crate::figure::metric_curves(&model, e, &outcome.target_indices))
                    .collect::<Result<Vec<_>, _>>()?,
                None => vec![Vec::new(); outcome.evaluations.len()],
            };
            // Encoding (and hashing, for the audit record) a large result takes a while: it
            // happens here, off the async threads, and stops with the request.
            let stopped = || worker_cancel.failure().map(status_of);
            if let Some(status) = stopped() {
                return Err(status);
            }
            let stats = outcome.stats;
            let evaluation = match digest_wanted && !outcome.evaluations.is_empty() {
                true => Some(convert::evaluation_json(outcome.evaluation_seed, &outcome.evaluations)),
                false => None,
            };
            let response = explain_response(&model, &plugin, outcome, (png, curve_pngs), began, &stopped)?;
            let digest = match digest_wanted {
                true => Some(observe::result_digest(&response)),
                false => None,
            };
            Ok((response, digest, stats, evaluation))
        })
        .await;
        observation.plugin_failed = plugin_failed.load(Ordering::Relaxed);
        let (response, digest, stats, evaluation) = result?;
        observation.stats = stats;
        observation.result_digest = digest;
        observation.evaluation = evaluation;
        Ok(Response::new(response))
    }
}

/// The wire form of an explain result, with the timing up to now. `stopped` is asked between
/// tensors, so a request past its deadline stops encoding.
fn explain_response(
    model: &Model,
    plugin: &explaind_host::Plugin,
    outcome: explaind_host::ExplainOutcome,
    (plot_png, curve_pngs): (Vec<u8>, Vec<Vec<u8>>),
    began: Instant,
    stopped: &dyn Fn() -> Option<Status>,
) -> Result<proto::ExplainResponse, Status> {
    let encode = |a: &ndarray::ArrayD<f32>| match stopped() {
        Some(status) => Err(status),
        None => Ok(convert::array_to_tensor(a)),
    };
    let mut attributions = Vec::with_capacity(outcome.attributions.len());
    for (i, a) in &outcome.attributions {
        attributions.push(proto::Attribution { input_name: model.inputs[*i].name.clone(), values: Some(encode(a)?) });
    }
    let mut outputs = Vec::with_capacity(outcome.outputs.len());
    for (spec, a) in model.outputs.iter().zip(&outcome.outputs) {
        outputs.push(proto::NamedTensor { name: spec.name.clone(), tensor: Some(encode(a)?) });
    }
    let mut extras = Vec::with_capacity(outcome.extras.len());
    for (name, a) in &outcome.extras {
        extras.push(proto::NamedTensor { name: name.clone(), tensor: Some(encode(a)?) });
    }
    let table = &outcome.target_indices;
    Ok(proto::ExplainResponse {
        attributions,
        target_indices: Some(convert::int_tensor(table.shape(), table.iter().copied())),
        outputs,
        base_values: outcome.base_values.as_ref().map(encode).transpose()?,
        extras,
        info: outcome.info.into_iter().collect(),
        model_name: model.name.clone(),
        model_version: model.version.clone(),
        model_sha256: model.sha256.clone(),
        explainer_name: plugin.name.clone(),
        explainer_version: plugin.version.clone(),
        explainer_file_sha256: plugin.file_sha256.clone(),
        timing: Some(timing(began.elapsed(), outcome.stats)),
        plot_png,
        evaluation: outcome.evaluations.iter().zip(curve_pngs).map(|(e, png)| convert::metric_result(e, png)).collect(),
        evaluation_seed: outcome.evaluation_seed,
    })
}
