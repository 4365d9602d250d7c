//! One loaded model: metadata, sessions, and chunked forward passes.

use crate::resident::{Input, Resident};
use crate::tensor::TensorView;
use crate::{DeviceChoice, ExecutionProvider, OrtRuntime};
use ndarray::{ArrayD, ArrayViewD, Axis};
use ort::session::Session;
use ort::session::{OutputSelector, RunOptions};
use ort::value::{TensorElementType, ValueType};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Element types, numbered as ONNX's `TensorProto.DataType` (and as the gRPC API's enum).
pub type ElementType = i32;
pub const FLOAT: ElementType = 1;

/// One axis of a declared tensor shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dim {
    Fixed(i64),
    Symbolic(String),
    Unknown,
}

/// A model input or output as the model declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub element_type: ElementType,
    pub shape: Vec<Dim>,
}

impl TensorSpec {
    /// Declared sizes with `-1` for symbolic and unknown axes.
    pub fn shape_i64(&self) -> Vec<i64> {
        self.shape.iter().map(|d| if let Dim::Fixed(n) = d { *n } else { -1 }).collect()
    }
}

/// The optional `config.toml` beside a model version.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    #[serde(default)]
    pub description: String,
    /// Names of the output elements (classes), index i naming output element i.
    #[serde(default)]
    pub labels: Vec<String>,
    /// A `.npy` file in the version directory holding the default background (single-input
    /// models): rows on the first axis.
    #[serde(default)]
    pub default_background: Option<String>,
    /// Names of the input features for tabular models.
    #[serde(default)]
    pub feature_names: Vec<String>,
    /// A text file in the version directory with one token per line, the line number being
    /// the token id (BERT's `vocab.txt`): how figures of token-id inputs show the tokens.
    #[serde(default)]
    pub vocabulary: Option<String>,
}

/// What one [`Model::run`] cost.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunStats {
    pub calls: u64,
    pub rows: u64,
    pub elapsed: Duration,
}

impl RunStats {
    pub fn add(&mut self, other: RunStats) {
        self.calls += other.calls;
        self.rows += other.rows;
        self.elapsed += other.elapsed;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },
    #[error("ONNX Runtime could not load {path}: {message}")]
    Session { path: PathBuf, message: String },
    #[error(
        "model {model} output {output:?} has element type {element_type}; explaind serves float32 outputs only, and the model has none"
    )]
    UnsupportedOutput { model: String, output: String, element_type: ElementType },
    #[error("ONNX Runtime failed running {model}: {message}")]
    Run { model: String, message: String },
}

/// A loaded model version.
pub struct Model {
    pub name: String,
    pub version: String,
    pub dir: PathBuf,
    /// Lower-case hex SHA-256 of `model.onnx`.
    pub sha256: String,
    pub execution_provider: ExecutionProvider,
    pub inputs: Vec<TensorSpec>,
    /// The float32 outputs, the ones explaind computes and serves.
    pub outputs: Vec<TensorSpec>,
    /// The model's other outputs (non-float32), which are never computed.
    pub unserved_outputs: Vec<TensorSpec>,
    /// Whether the file holds an ONNX-ML tree ensemble. For such a model a NaN input is a
    /// value it defines, a missing value (its nodes say which branch one takes); other models'
    /// inputs must be finite. Tree explainers run on such models only.
    pub has_tree_ensemble: bool,
    pub config: ModelConfig,
    /// The default background (from `config.default_background`): one array per model input,
    /// rows first. Shared, so requests that use it do not copy it.
    pub background: Option<std::sync::Arc<Vec<ArrayD<f32>>>>,
    /// [`crate::digest_arrays`] of the default background.
    pub background_digest: Option<String>,
    /// The token strings by id (`config.vocabulary`).
    pub vocabulary: Option<std::sync::Arc<Vec<String>>>,
    sessions: Vec<Mutex<Session>>,
    next_session: AtomicUsize,
    max_batch_rows: usize,
}

impl Drop for Model {
    fn drop(&mut self) {
        // A CUDA session's teardown frees device memory and cuDNN state: keep it out of other
        // threads' GPU work, like every other CUDA call (`crate::lock_gpu`).
        if self.execution_provider == ExecutionProvider::Cuda {
            let _gpu = crate::lock_gpu();
            self.sessions.clear();
        }
    }
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model").field("name", &self.name).field("version", &self.version).finish_non_exhaustive()
    }
}

fn element_type_code(t: TensorElementType) -> ElementType {
    use TensorElementType as T;
    match t {
        T::Float32 => 1,
        T::Uint8 => 2,
        T::Int8 => 3,
        T::Uint16 => 4,
        T::Int16 => 5,
        T::Int32 => 6,
        T::Int64 => 7,
        T::String => 8,
        T::Bool => 9,
        T::Float16 => 10,
        T::Float64 => 11,
        T::Uint32 => 12,
        T::Uint64 => 13,
        T::Bfloat16 => 16,
        _ => 0,
    }
}

fn spec_of(name: &str, ty: &ValueType) -> TensorSpec {
    match ty {
        ValueType::Tensor { ty, shape, dimension_symbols } => TensorSpec {
            name: name.to_string(),
            element_type: element_type_code(*ty),
            shape: shape
                .iter()
                .zip(dimension_symbols.iter())
                .map(|(&size, symbol)| match (size, symbol.as_str()) {
                    (n, _) if n >= 0 => Dim::Fixed(n),
                    (_, "") => Dim::Unknown,
                    (_, s) => Dim::Symbolic(s.to_string()),
                })
                .collect(),
        },
        _ => TensorSpec { name: name.to_string(), element_type: 0, shape: Vec::new() },
    }
}

impl Model {
    /// Loads `dir/model.onnx` (and `dir/config.toml` if present) as `name`/`version`.
    pub fn load(rt: &OrtRuntime, name: &str, version: &str, dir: &Path) -> Result<Model, ModelError> {
        let model_path = dir.join("model.onnx");
        let bytes = std::fs::read(&model_path).map_err(|source| ModelError::Io { path: model_path.clone(), source })?;

        let config_path = dir.join("config.toml");
        let config: ModelConfig = match std::fs::read_to_string(&config_path) {
            Ok(text) => {
                toml::from_str(&text).map_err(|e| ModelError::Config { path: config_path.clone(), message: e.to_string() })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ModelConfig::default(),
            Err(source) => return Err(ModelError::Io { path: config_path, source }),
        };
        let background = match &config.default_background {
            Some(file) => {
                let path = dir.join(file);
                Some(crate::npy::read_f32_file(&path).map_err(|e| ModelError::Config {
                    path: config_path.clone(),
                    message: format!("default_background {}: {e}", path.display()),
                })?)
            }
            None => None,
        };
        let vocabulary = match &config.vocabulary {
            Some(file) => {
                let path = dir.join(file);
                let text = std::fs::read_to_string(&path).map_err(|e| ModelError::Config {
                    path: config_path.clone(),
                    message: format!("vocabulary {}: {e}", path.display()),
                })?;
                Some(std::sync::Arc::new(text.lines().map(str::to_string).collect()))
            }
            None => None,
        };
        let mut model = Model::from_bytes(rt, name, version, &bytes, &model_path)?;
        model.vocabulary = vocabulary;
        model.has_tree_ensemble = has_tree_ensemble(&bytes);
        model.dir = dir.to_path_buf();
        model.config = config;
        let background = background.map(|b| std::sync::Arc::new(vec![b]));
        model.background_digest = background.as_deref().map(|rows| crate::digest_arrays(rows));
        model.background = background;
        Ok(model)
    }

    /// A model from ONNX bytes held in memory (a compiled attribution graph, say); `origin`
    /// names it in errors.
    pub fn from_bytes(rt: &OrtRuntime, name: &str, version: &str, bytes: &[u8], origin: &Path) -> Result<Model, ModelError> {
        let sha256 = hex::encode(Sha256::digest(bytes));
        let count = rt.options.sessions_per_model.max(1);
        let mut sessions = Vec::with_capacity(count);
        let mut execution_provider = ExecutionProvider::Cpu;
        for _ in 0..count {
            let (session, ep) = build_session(rt, bytes, origin)?;
            execution_provider = ep;
            sessions.push(Mutex::new(session));
        }
        let inputs = sessions[0].lock().unwrap().inputs().iter().map(|o| spec_of(o.name(), o.dtype())).collect();
        let declared: Vec<TensorSpec> =
            sessions[0].lock().unwrap().outputs().iter().map(|o| spec_of(o.name(), o.dtype())).collect();
        // explaind serves float32 outputs; the others (a classifier's int64 label beside its
        // probabilities) are never computed, and are named in `unserved_outputs`.
        let (outputs, unserved_outputs): (Vec<TensorSpec>, Vec<TensorSpec>) =
            declared.into_iter().partition(|o| o.element_type == FLOAT);
        if let (true, Some(first)) = (outputs.is_empty(), unserved_outputs.first()) {
            return Err(ModelError::UnsupportedOutput {
                model: format!("{name}/{version}"),
                output: first.name.clone(),
                element_type: first.element_type,
            });
        }
        Ok(Model {
            name: name.to_string(),
            version: version.to_string(),
            dir: origin.to_path_buf(),
            sha256,
            execution_provider,
            inputs,
            outputs,
            unserved_outputs,
            has_tree_ensemble: false,
            config: ModelConfig::default(),
            background: None,
            background_digest: None,
            vocabulary: None,
            sessions,
            next_session: AtomicUsize::new(0),
            max_batch_rows: rt.options.max_batch_rows.max(1),
        })
    }

    /// The same model sending at most `rows` rows per ONNX Runtime call.
    pub fn with_max_batch_rows(mut self, rows: usize) -> Self {
        self.max_batch_rows = rows.max(1);
        self
    }

    /// The most rows one ONNX Runtime call receives.
    pub fn max_batch_rows(&self) -> usize {
        self.max_batch_rows
    }

    /// Runs the model on float32 `inputs` (one per model input, in order, same batch size);
    /// see [`Model::run_tensors`].
    /// Blocking: call it from a blocking thread.
    pub fn run(&self, inputs: &[ArrayViewD<'_, f32>]) -> Result<(Vec<ArrayD<f32>>, RunStats), ModelError> {
        let views: Vec<TensorView> = inputs.iter().map(|a| TensorView::Float(a.view())).collect();
        self.run_tensors(&views)
    }

    /// Runs the model on `inputs` (one per model input, in order, each in the input's declared
    /// element type, same batch size) and returns every served output as float32, batch first.
    /// Batches larger than `max_batch_rows` run in chunks split along the first axis of every
    /// input.
    /// Blocking: call it from a blocking thread.
    pub fn run_tensors(&self, inputs: &[TensorView<'_>]) -> Result<(Vec<ArrayD<f32>>, RunStats), ModelError> {
        let rows = inputs.first().map(TensorView::rows).unwrap_or(0);
        if rows <= self.max_batch_rows {
            // One call, inputs as given (they need not share a first axis in this case; the
            // rows counted are the largest first axis).
            let inputs: Vec<Input> = inputs.iter().map(|a| Input::Typed(a.clone())).collect();
            return self.run_inputs(&inputs);
        }
        let mut stats = RunStats::default();
        let mut chunks: Vec<Vec<ArrayD<f32>>> = vec![Vec::new(); self.outputs.len()];
        let mut start = 0;
        loop {
            let end = (start + self.max_batch_rows).min(rows);
            let slice: Vec<Input> = inputs.iter().map(|a| Input::Typed(a.slice_rows(start..end))).collect();
            let began = Instant::now();
            let outputs = self.run_once(&slice)?;
            stats.add(RunStats { calls: 1, rows: (end - start) as u64, elapsed: began.elapsed() });
            for (slot, out) in chunks.iter_mut().zip(outputs) {
                slot.push(out);
            }
            start = end;
            if start >= rows {
                break;
            }
        }
        let outputs = chunks
            .into_iter()
            .map(|parts| {
                if parts.len() == 1 {
                    parts.into_iter().next().unwrap()
                } else {
                    let views: Vec<_> = parts.iter().map(|p| p.view()).collect();
                    ndarray::concatenate(Axis(0), &views).expect("chunks share trailing axes")
                }
            })
            .collect();
        Ok((outputs, stats))
    }

    /// Keeps `arrays` (rows first) where this model's sessions read them, for inputs that many
    /// [`Model::run_inputs`] calls share: device memory under CUDA (one upload now instead of a
    /// copy per run), host memory on the CPU (read in place anyway).
    pub fn keep_resident(&self, arrays: Vec<ArrayD<f32>>) -> Result<Resident, ModelError> {
        match self.execution_provider {
            ExecutionProvider::Cpu => Ok(Resident::host(arrays)),
            ExecutionProvider::Cuda => Resident::cuda(arrays, CUDA_DEVICE_ID).map_err(|e| ModelError::Run {
                model: format!("{}/{}", self.name, self.version),
                message: format!("copying tensors to the GPU: {e}"),
            }),
        }
    }

    /// Runs the model once on `inputs` (one per model input, in order; the caller bounds the
    /// rows) and returns every output as float32 on the host.
    /// Blocking: call it from a blocking thread.
    pub fn run_inputs(&self, inputs: &[Input<'_>]) -> Result<(Vec<ArrayD<f32>>, RunStats), ModelError> {
        let began = Instant::now();
        let outputs = self.run_once(inputs)?;
        let rows = inputs.iter().map(Input::rows).max().unwrap_or(0);
        Ok((outputs, RunStats { calls: 1, rows: rows as u64, elapsed: began.elapsed() }))
    }

    fn run_once(&self, inputs: &[Input<'_>]) -> Result<Vec<ArrayD<f32>>, ModelError> {
        let run_err = |message: String| ModelError::Run { model: format!("{}/{}", self.name, self.version), message };
        let views: Vec<Option<TensorView>> = inputs
            .iter()
            .map(|input| match input {
                Input::Host(a) => Some(TensorView::Float(a.view())),
                Input::Typed(view) => Some(view.reborrow()),
                Input::Resident { .. } => None,
            })
            .collect();
        let mut values = Vec::with_capacity(inputs.len());
        for ((spec, input), view) in self.inputs.iter().zip(inputs).zip(&views) {
            let value = match (input, view) {
                (_, Some(view)) => view.session_input(),
                (Input::Resident { set, index, rows }, None) => set.input(*index, rows.clone()),
                (_, None) => unreachable!("only resident inputs have no view"),
            };
            values.push((spec.name.as_str(), value.map_err(|e| run_err(e.to_string()))?));
        }
        let index = self.next_session.fetch_add(1, Ordering::Relaxed) % self.sessions.len();
        let mut session = self.sessions[index].lock().unwrap_or_else(|p| p.into_inner());
        let _gpu = (self.execution_provider == ExecutionProvider::Cuda).then(crate::lock_gpu);
        let selection = match self.unserved_outputs.is_empty() {
            true => None,
            false => {
                let selected = self.outputs.iter().fold(OutputSelector::no_default(), |s, o| s.with(o.name.as_str()));
                Some(RunOptions::new().map_err(|e| run_err(e.to_string()))?.with_outputs(selected))
            }
        };
        let outputs = match &selection {
            None => session.run(values),
            Some(options) => session.run_with_options(values, options),
        }
        .map_err(|e| run_err(e.to_string()))?;
        let mut result = Vec::with_capacity(self.outputs.len());
        for spec in &self.outputs {
            let value = outputs.get(&spec.name).ok_or_else(|| run_err(format!("no output {}", spec.name)))?;
            let array = value.try_extract_array::<f32>().map_err(|e| run_err(format!("output {}: {e}", spec.name)))?;
            result.push(array.to_owned());
        }
        Ok(result)
    }
}

/// Whether the ONNX file holds an ONNX-ML tree ensemble operator.
fn has_tree_ensemble(bytes: &[u8]) -> bool {
    let Ok(model) = explaind_onnx::ModelProto::from_bytes(bytes) else { return false };
    let graph = model.graph.as_ref().map(|g| g.node.as_slice()).unwrap_or_default();
    graph.iter().any(|n| n.domain() == "ai.onnx.ml" && n.op_type().starts_with("TreeEnsemble"))
}

/// The GPU that CUDA sessions run on (the execution provider's default).
const CUDA_DEVICE_ID: i32 = 0;

fn build_session(rt: &OrtRuntime, bytes: &[u8], path: &Path) -> Result<(Session, ExecutionProvider), ModelError> {
    let session_err = |e: ort::Error| ModelError::Session { path: path.to_path_buf(), message: e.to_string() };
    let builder = || -> Result<_, ort::Error> {
        // Threads come from the environment's global pool (`OrtRuntime::init`).
        Session::builder(rt.environment())
    };
    let with_cuda = || -> Result<Session, ort::Error> {
        // TF32 off: its 10-bit mantissas move attributions by up to 1e-1 on the demo CNN (the
        // rescale rule divides by small differences), far outside the 1e-4 completeness bound.
        let cuda = ort::ep::CUDA::default().with_tf32(false).build().error_on_failure();
        let _gpu = crate::lock_gpu();
        builder()?.with_execution_providers([cuda])?.commit_from_memory(bytes)
    };
    match rt.options.device {
        DeviceChoice::Cpu => {}
        DeviceChoice::Cuda => return with_cuda().map(|s| (s, ExecutionProvider::Cuda)).map_err(session_err),
        DeviceChoice::Auto if rt.cuda_compiled => match with_cuda() {
            Ok(s) => return Ok((s, ExecutionProvider::Cuda)),
            Err(e) => tracing::warn!(model = %path.display(), "CUDA execution provider unavailable, using the CPU: {e}"),
        },
        DeviceChoice::Auto => {}
    }
    let session = builder().and_then(|mut b| b.commit_from_memory(bytes)).map_err(session_err)?;
    Ok((session, ExecutionProvider::Cpu))
}
