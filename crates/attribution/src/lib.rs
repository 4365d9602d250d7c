//! Runs compiled attribution graphs: plain gradients and DeepLIFT multipliers of a served model,
//! and Deep SHAP over a background whose activations are cached.
//!
//! [`AttributionEngine`] compiles each model once per (model digest, output, kind) with
//! `explaind-graph`, loads the result into ONNX Runtime next to the model (same execution
//! provider), and keeps it. For Deep SHAP, the background's half of the DeepLIFT graph (its
//! forward activations) is computed once per (model digest, output, background digest) and kept
//! in a [`BoundedCache`] under a memory budget.
//!
//! All work on many rows is chunked to the model's `max_batch_rows`, so memory stays bounded
//! whatever the number of inputs, background rows and targets.

pub mod cache;

pub use cache::{BoundedCache, CacheStats};

use explaind_graph::{CompileError, DeepLiftRequest, GradientRequest, MaxPoolIndices, compile_deeplift, compile_gradient};
use explaind_onnx::ModelProto;
use explaind_runtime::{ExecutionProvider, Input, Model, ModelError, OrtRuntime, Resident, RunStats, TensorView};
use ndarray::{Array2, ArrayD, ArrayViewD, Axis, IxDyn};
use std::sync::{Arc, OnceLock};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AttributionError {
    /// The model has an operator (or form) the compiler has no rule for.
    #[error("model {model} cannot be compiled for {kind}: {error}")]
    Unsupported { model: String, kind: &'static str, error: CompileError },
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    Internal(String),
    #[error("the request was cancelled")]
    Cancelled,
}

fn internal(e: ModelError) -> AttributionError {
    AttributionError::Internal(e.to_string())
}

/// A background set as the engine sees it: rows per model input, and a digest naming it.
#[derive(Debug, Clone)]
pub struct Background {
    /// [`background_digest`] of the rows.
    pub digest: String,
    /// Shared: the registry, the model and every request using it hold the same arrays.
    pub rows: std::sync::Arc<Vec<ArrayD<f32>>>,
}

pub use explaind_runtime::digest_arrays as background_digest;

/// Deep SHAP results for N inputs and S seeds each.
#[derive(Debug, Clone)]
pub struct DeepShap {
    /// Per model input: [N, S, *input_shape_without_batch].
    pub attributions: Vec<ArrayD<f32>>,
    /// [N, S]: seed · mean over the background of the model's output.
    pub expected: Array2<f32>,
    pub stats: RunStats,
    /// Where the background's cached activations live: the GPU (CUDA) or host memory.
    pub background_location: ExecutionProvider,
}

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
enum Kind {
    Gradient,
    DeepLift,
    /// The gradient at a named intermediate tensor, and the tensor itself.
    Layer(String),
    /// The model with a named tensor as an extra output.
    Activation(String),
    /// The gradient with respect to a named tensor fed as an input (the model cut there).
    FedLayer(String),
    /// DeepLIFT multipliers at a named tensor fed as an input, against a fed reference.
    FedDeepLift(String),
}

#[derive(Clone, PartialEq, Eq, Hash, Debug)]
struct CompiledKey {
    model_sha256: String,
    output: usize,
    kind: Kind,
}

// One per (model, output, kind), a handful per model: boxing the variants would buy nothing.
#[allow(clippy::large_enum_variant)]
enum Compiled {
    Gradient {
        model: Model,
    },
    /// Outputs `activation` and `gradient` of `model` are the layer and its gradient.
    Layer {
        model: Model,
        activation: usize,
        gradient: usize,
    },
    /// Output `activation` of `model` is the layer.
    Activation {
        model: Model,
        activation: usize,
    },
    /// `model` takes the layer as an input and returns the gradient there as output
    /// `gradient`.
    FedLayer {
        model: Model,
        gradient: usize,
        seed: String,
    },
    /// `model` takes the layer, its reference (`reference`) and the seed (`seed`), and returns
    /// the multipliers at the layer as its last output.
    FedDeepLift {
        model: Model,
        reference: String,
        seed: String,
    },
    /// `activations`: the forward pass returning what the backward pass reads; `backward`:
    /// both sides' activations and the seed in, multipliers out; `pairs`: everything in one
    /// graph, for explicit (input, reference) pairs; `background`: sessions of their own for
    /// the background's forward passes, under CUDA.
    DeepLift {
        activations: Model,
        backward: Model,
        pairs: Model,
        background: Option<Box<BackgroundSessions>>,
    },
}

/// The activation graph and the served model loaded a second time, for the background's rows
/// only. Under CUDA a session whose input shape changes re-runs cuDNN's algorithm search for
/// every convolution, and a cold request would switch the shared sessions between its own
/// rows and a background chunk's, twice. On the CPU the switch costs little, and the shared
/// sessions save the second copy of the weights.
struct BackgroundSessions {
    activations: Model,
    outputs: Model,
}

/// Cached activations of a chunk of background rows, and the sum of the model's output over
/// those rows. The activations are resident where the backward graph runs (on the GPU under
/// CUDA), so warm requests copy none of them.
struct Activations {
    arrays: Resident,
    output_sum: Vec<f64>,
}

/// A compiled graph, compiled once by whichever request asks first.
type CompiledSlot = Arc<OnceLock<Result<Arc<Compiled>, AttributionError>>>;

/// Whether a model's graph compiles for each family of compiled explainers; the error is the
/// compiler's refusal (every operator without a rule, with an example node).
#[derive(Debug, Clone, PartialEq)]
pub struct Compilability {
    pub gradients: Result<(), String>,
    pub deeplift: Result<(), String>,
}

pub struct AttributionEngine {
    runtime: &'static OrtRuntime,
    /// Bound on the working memory of one backward run (both sides' activations for all its
    /// rows); a cached chunk of background activations takes at most a quarter of it.
    chunk_bytes: u64,
    compiled: dashmap::DashMap<CompiledKey, CompiledSlot>,
    /// Keyed by (model digest, output, background digest, first row, end row).
    activations: BoundedCache<(String, usize, String, usize, usize), Activations>,
    /// Per model digest: the tensors a layer method may name.
    layer_indexes: dashmap::DashMap<String, Arc<LayerIndex>>,
    /// Per model digest: whether its graph compiles for gradients and for DeepLIFT.
    compilability: dashmap::DashMap<String, Arc<Compilability>>,
}

impl AttributionEngine {
    /// `cache_budget_bytes` bounds the cached background activations.
    pub fn new(runtime: &'static OrtRuntime, cache_budget_bytes: u64) -> Self {
        AttributionEngine {
            runtime,
            chunk_bytes: 256 << 20,
            compiled: Default::default(),
            activations: BoundedCache::new(cache_budget_bytes),
            layer_indexes: Default::default(),
            compilability: Default::default(),
        }
    }

    /// Bounds the memory of one chunk of backward rows (default 256 MiB).
    pub fn with_chunk_bytes(mut self, bytes: u64) -> Self {
        self.chunk_bytes = bytes.max(1);
        self
    }

    /// Whether `model`'s graph compiles for the gradient explainers and for DeepLIFT / Deep
    /// SHAP, for its first output: the graph compiler alone, nothing is loaded into ONNX
    /// Runtime. Decided once per model file (call it at load, so clients are told before they
    /// ask); a refusal names every operator without a rule.
    pub fn compilability(&self, model: &Model) -> Arc<Compilability> {
        if let Some(known) = self.compilability.get(&model.sha256) {
            return known.clone();
        }
        let decided = Arc::new(match read_proto(model) {
            Err(e) => Compilability { gradients: Err(e.to_string()), deeplift: Err(e.to_string()) },
            Ok(proto) => {
                let output = model.outputs.first().map(|o| o.name.clone()).unwrap_or_default();
                let inputs: Vec<String> = model.inputs.iter().map(|i| i.name.clone()).collect();
                let gradient = GradientRequest { outputs: vec![output.clone()], wrt: inputs.clone(), ..Default::default() };
                Compilability {
                    gradients: compile_gradient(&proto, &gradient).map(drop).map_err(|e| e.to_string()),
                    deeplift: compile_deeplift(&proto, &DeepLiftRequest { output, inputs, ..Default::default() })
                        .map(drop)
                        .map_err(|e| e.to_string()),
                }
            }
        });
        self.compilability.insert(model.sha256.clone(), decided.clone());
        decided
    }

    pub fn cache_stats(&self) -> CacheStats {
        self.activations.stats()
    }

    fn compiled(&self, model: &Model, output: usize, kind: Kind) -> Result<Arc<Compiled>, AttributionError> {
        let key = CompiledKey { model_sha256: model.sha256.clone(), output, kind: kind.clone() };
        let cell = self.compiled.entry(key).or_default().clone();
        cell.get_or_init(|| self.compile(model, output, kind).map(Arc::new)).clone()
    }

    fn compile(&self, model: &Model, output: usize, kind: Kind) -> Result<Compiled, AttributionError> {
        let path = model.dir.join("model.onnx");
        let proto = read_proto(model)?;
        let output_name = model.outputs[output].name.clone();
        let inputs: Vec<String> = model.inputs.iter().map(|i| i.name.clone()).collect();
        let unsupported =
            |kind, error| AttributionError::Unsupported { model: format!("{}/{}", model.name, model.version), kind, error };
        let load = |m: &ModelProto, suffix: &str| -> Result<Model, AttributionError> {
            Model::from_bytes(self.runtime, &format!("{}#{suffix}", model.name), &model.version, &m.to_bytes(), &path)
                .map(|m| m.with_max_batch_rows(model.max_batch_rows()))
                .map_err(internal)
        };
        // The compiled graphs run where the model runs. On the CPU, MaxPool's own indices take
        // each window's first maximum, as the portable form does, at a fraction of the cost.
        let max_pool_indices = match model.execution_provider {
            ExecutionProvider::Cpu => MaxPoolIndices::CpuKernel,
            ExecutionProvider::Cuda => MaxPoolIndices::Portable,
        };
        let began = std::time::Instant::now();
        let compiled = match kind {
            Kind::Gradient => {
                let request = GradientRequest { outputs: vec![output_name], wrt: inputs, expose: vec![], max_pool_indices };
                let compiled = compile_gradient(&proto, &request).map_err(|e| unsupported("gradients", e))?;
                Compiled::Gradient { model: load(&compiled.model, "gradient")? }
            }
            Kind::Layer(ref layer) => {
                let request = GradientRequest {
                    outputs: vec![output_name],
                    wrt: vec![layer.clone()],
                    expose: vec![layer.clone()],
                    max_pool_indices,
                };
                let compiled = compile_gradient(&proto, &request).map_err(|e| unsupported("gradients", e))?;
                let graph = load(&compiled.model, &format!("layer-gradient:{layer}"))?;
                let position = |name: &str| graph.outputs.iter().position(|o| o.name == name);
                let (Some(activation), Some(gradient)) = (position(layer), position(&compiled.gradients[0])) else {
                    return Err(AttributionError::Internal(format!("the compiled graph lacks the outputs for layer {layer:?}")));
                };
                Compiled::Layer { model: graph, activation, gradient }
            }
            Kind::Activation(ref layer) => {
                let exposed = explaind_graph::expose_layer(&proto, layer).map_err(|e| unsupported("layer values", e))?;
                let graph = load(&exposed, &format!("layer-activation:{layer}"))?;
                let Some(activation) = graph.outputs.iter().position(|o| &o.name == layer) else {
                    return Err(AttributionError::Internal(format!("layer {layer:?} is not a float32 tensor")));
                };
                Compiled::Activation { model: graph, activation }
            }
            Kind::FedLayer(ref layer) => {
                let fed = explaind_graph::feed_layer(&proto, layer).map_err(|e| unsupported("gradients", e))?;
                let request =
                    GradientRequest { outputs: vec![output_name], wrt: vec![layer.clone()], expose: vec![], max_pool_indices };
                let compiled = compile_gradient(&fed, &request).map_err(|e| unsupported("gradients", e))?;
                let graph = load(&compiled.model, &format!("fed-layer-gradient:{layer}"))?;
                let Some(gradient) = graph.outputs.iter().position(|o| o.name == compiled.gradients[0]) else {
                    return Err(AttributionError::Internal(format!("the compiled graph lacks the gradient at layer {layer:?}")));
                };
                Compiled::FedLayer { model: graph, gradient, seed: compiled.seeds[0].clone() }
            }
            Kind::FedDeepLift(ref layer) => {
                let fed = explaind_graph::feed_layer(&proto, layer).map_err(|e| unsupported("DeepLIFT", e))?;
                let request = DeepLiftRequest { output: output_name, inputs: vec![layer.clone()], max_pool_indices };
                let compiled = compile_deeplift(&fed, &request).map_err(|e| unsupported("DeepLIFT", e))?;
                let graph = load(&compiled.model, &format!("fed-layer-deeplift:{layer}"))?;
                Compiled::FedDeepLift { model: graph, reference: compiled.references[0].clone(), seed: compiled.seed }
            }
            Kind::DeepLift => {
                let request = DeepLiftRequest { output: output_name, inputs, max_pool_indices };
                let compiled = compile_deeplift(&proto, &request).map_err(|e| unsupported("DeepLIFT", e))?;
                let background = match model.execution_provider {
                    ExecutionProvider::Cuda => Some(Box::new(BackgroundSessions {
                        activations: load(&compiled.activation_model, "deeplift-background-activations")?,
                        outputs: load(&proto, "background-outputs")?,
                    })),
                    ExecutionProvider::Cpu => None,
                };
                Compiled::DeepLift {
                    activations: load(&compiled.activation_model, "deeplift-activations")?,
                    backward: load(&compiled.backward_model, "deeplift-backward")?,
                    pairs: load(&compiled.model, "deeplift-pairs")?,
                    background,
                }
            }
        };
        tracing::info!(model = %model.name, version = %model.version, kind = ?kind, output, elapsed_ms = began.elapsed().as_millis() as u64, "compiled attribution graph");
        Ok(compiled)
    }

    /// Plain gradients d(seedᵀ · output)/d(input) for every model input. `seeds` is
    /// [B, output_row_size]; inputs are [B, ...].
    pub fn gradient(
        &self,
        model: &Model,
        output: usize,
        inputs: &[ArrayViewD<'_, f32>],
        seeds: ArrayViewD<'_, f32>,
    ) -> Result<(Vec<ArrayD<f32>>, RunStats), AttributionError> {
        let Compiled::Gradient { model: graph } = &*self.compiled(model, output, Kind::Gradient)? else { unreachable!() };
        let (mut outputs, stats) = run_seeded(graph, model, output, inputs, seeds)?;
        Ok((outputs.split_off(model.outputs.len()), stats))
    }

    /// The layer a request names (`None`: the last 2-D convolution's output), checked against
    /// the model: an unknown name or a model without a default is an invalid argument that
    /// names the `layer` parameter and lists the model's 4-D tensors.
    pub fn resolve_layer(&self, model: &Model, layer: Option<&str>) -> Result<String, AttributionError> {
        let index = self.layer_index(model)?;
        let (name, version, candidates) = (&model.name, &model.version, || index.candidates());
        match layer.filter(|l| !l.is_empty()) {
            None => index.default.clone().ok_or_else(|| {
                AttributionError::InvalidArgument(format!(
                    "layer: model {name}/{version} has no 2-D convolution to default to; name a layer (its 4-D tensors: {})",
                    candidates()
                ))
            }),
            Some(layer) if index.names.contains(layer) => Ok(layer.to_string()),
            Some(layer) => Err(AttributionError::InvalidArgument(format!(
                "layer: model {name}/{version} has no tensor named {layer:?} (its 4-D tensors: {})",
                candidates()
            ))),
        }
    }

    /// A layer's value and the gradient d(seedᵀ · output)/d(layer) for the rows of `inputs`;
    /// `layer` must come from [`AttributionEngine::resolve_layer`].
    pub fn layer_gradient(
        &self,
        model: &Model,
        output: usize,
        layer: &str,
        inputs: &[ArrayViewD<'_, f32>],
        seeds: ArrayViewD<'_, f32>,
    ) -> Result<(ArrayD<f32>, ArrayD<f32>, RunStats), AttributionError> {
        let compiled = self.compiled(model, output, Kind::Layer(layer.to_string()))?;
        let Compiled::Layer { model: graph, activation, gradient } = &*compiled else { unreachable!() };
        let (mut outputs, stats) = run_seeded(graph, model, output, inputs, seeds)?;
        let gradient = std::mem::take(&mut outputs[*gradient]);
        let activation = std::mem::take(&mut outputs[*activation]);
        Ok((activation, gradient, stats))
    }

    /// The default layer for attribution at the embedding of integer input `input` (token
    /// ids): the output of the `Gather` that looks its rows up in a table (through `Cast`s of
    /// the ids); an invalid argument naming `layer` when the model has none.
    pub fn embedding_of(&self, model: &Model, input: &str) -> Result<String, AttributionError> {
        let index = self.layer_index(model)?;
        index.embeddings.iter().find(|(i, _)| i == input).map(|(_, layer)| layer.clone()).ok_or_else(|| {
            AttributionError::InvalidArgument(format!(
                "layer: model {}/{} has no embedding lookup (a Gather from a table) of input {input:?}; name a layer",
                model.name, model.version
            ))
        })
    }

    /// Checks that `layer` names a tensor of the model (any input or node output): an invalid
    /// argument naming `layer` otherwise.
    pub fn check_tensor(&self, model: &Model, layer: &str) -> Result<(), AttributionError> {
        match self.layer_index(model)?.names.contains(layer) {
            true => Ok(()),
            false => Err(AttributionError::InvalidArgument(format!(
                "layer: model {}/{} has no tensor named {layer:?}",
                model.name, model.version
            ))),
        }
    }

    /// The value of tensor `layer` (checked with [`AttributionEngine::check_tensor`]) for the
    /// rows of `inputs` (one per model input, in its declared type).
    pub fn layer_activation(
        &self,
        model: &Model,
        layer: &str,
        inputs: &[TensorView<'_>],
    ) -> Result<(ArrayD<f32>, RunStats), AttributionError> {
        // Output 0 only keys the cache: the graph computes every output.
        let compiled = self.compiled(model, 0, Kind::Activation(layer.to_string()))?;
        let Compiled::Activation { model: graph, activation } = &*compiled else { unreachable!() };
        let (mut outputs, stats) = graph.run_tensors(inputs).map_err(internal)?;
        Ok((std::mem::take(&mut outputs[*activation]), stats))
    }

    /// The gradient d(seedᵀ · output)/d(layer) with the layer's value replaced by `values`
    /// ([B, *layer_shape]); the rest of the model reads `inputs` (one per model input, B rows;
    /// those only the layer's computation read are ignored).
    pub fn layer_gradient_at(
        &self,
        model: &Model,
        output: usize,
        layer: &str,
        inputs: &[TensorView<'_>],
        values: ArrayViewD<'_, f32>,
        seeds: ArrayViewD<'_, f32>,
    ) -> Result<(ArrayD<f32>, RunStats), AttributionError> {
        let compiled = self.compiled(model, output, Kind::FedLayer(layer.to_string()))?;
        let Compiled::FedLayer { model: graph, gradient, seed } = &*compiled else { unreachable!() };
        let seeds = shaped_seeds(model, output, seeds)?;
        let fed = [(layer, values), (seed.as_str(), seeds.view())];
        let (mut outputs, stats) = graph.run_tensors(&cut_feed(graph, model, inputs, &fed)?).map_err(internal)?;
        Ok((std::mem::take(&mut outputs[*gradient]), stats))
    }

    /// DeepLIFT multipliers at `layer` for paired rows: the layer's value replaced by
    /// `values` on one side and by `references` on the other (both [B, *layer_shape]), the rest
    /// of the model reading `inputs` on both sides (B rows each: held, not attributed). With
    /// them Σ m · (values − references) = seed · (f(values) − f(references)).
    #[allow(clippy::too_many_arguments)]
    pub fn layer_deeplift_at(
        &self,
        model: &Model,
        output: usize,
        layer: &str,
        inputs: &[TensorView<'_>],
        values: ArrayViewD<'_, f32>,
        references: ArrayViewD<'_, f32>,
        seeds: ArrayViewD<'_, f32>,
    ) -> Result<(ArrayD<f32>, RunStats), AttributionError> {
        let compiled = self.compiled(model, output, Kind::FedDeepLift(layer.to_string()))?;
        let Compiled::FedDeepLift { model: graph, reference, seed } = &*compiled else { unreachable!() };
        let seeds = shaped_seeds(model, output, seeds)?;
        let fed = [(layer, values), (reference.as_str(), references), (seed.as_str(), seeds.view())];
        let (mut outputs, stats) = graph.run_tensors(&cut_feed(graph, model, inputs, &fed)?).map_err(internal)?;
        let multipliers = outputs.pop().ok_or_else(|| AttributionError::Internal("the DeepLIFT graph has no outputs".into()))?;
        Ok((multipliers, stats))
    }

    fn layer_index(&self, model: &Model) -> Result<Arc<LayerIndex>, AttributionError> {
        if let Some(index) = self.layer_indexes.get(&model.sha256) {
            return Ok(index.clone());
        }
        let index = Arc::new(LayerIndex::of(&read_proto(model)?));
        self.layer_indexes.insert(model.sha256.clone(), index.clone());
        Ok(index)
    }

    /// DeepLIFT multipliers for paired rows: `inputs[i][b]` against `references[i][b]`, seeded
    /// by `seeds[b]` ([B, output_row_size]).
    pub fn deeplift_pairs(
        &self,
        model: &Model,
        output: usize,
        inputs: &[ArrayViewD<'_, f32>],
        references: &[ArrayViewD<'_, f32>],
        seeds: ArrayViewD<'_, f32>,
    ) -> Result<(Vec<ArrayD<f32>>, RunStats), AttributionError> {
        let Compiled::DeepLift { pairs, .. } = &*self.compiled(model, output, Kind::DeepLift)? else { unreachable!() };
        let feed: Vec<ArrayViewD<f32>> = inputs.iter().chain(references).cloned().collect();
        let (mut outputs, stats) = run_seeded(pairs, model, output, &feed, seeds)?;
        Ok((outputs.split_off(model.outputs.len()), stats))
    }

    /// Deep SHAP: for input row n and seed s (`seeds` is [N, S, output_row_size]),
    /// `mean_k m(x_n, r_k; seed_ns) · (x_n − r_k)` over the background rows r_k. The background's
    /// activations come from the cache when the same model and background were seen before.
    pub fn deep_shap(
        &self,
        model: &Model,
        output: usize,
        inputs: &[ArrayViewD<'_, f32>],
        seeds: ArrayViewD<'_, f32>,
        background: &Background,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<DeepShap, AttributionError> {
        let compiled = self.compiled(model, output, Kind::DeepLift)?;
        let Compiled::DeepLift { activations: forward, backward, background: sessions, .. } = &*compiled else { unreachable!() };
        let (background_forward, background_model) = match sessions {
            Some(own) => (&own.activations, &own.outputs),
            None => (forward, model),
        };
        let (n, s) = (seeds.shape()[0], seeds.shape()[1]);
        let k = background.rows.first().map(|r| r.shape()[0]).unwrap_or(0);
        if k == 0 {
            return Err(AttributionError::InvalidArgument("background: it has no rows".into()));
        }
        let row = seeds.len() / (n * s).max(1);
        let mut stats = RunStats::default();

        // The inputs' activations: once per request. Their size per row also sizes the chunks.
        let (input_activations, run) = forward.run(inputs).map_err(internal)?;
        stats.add(run);
        let bytes_per_row: u64 = input_activations
            .iter()
            .map(|a| (a.len() / a.shape().first().copied().unwrap_or(1).max(1)) as u64 * 4)
            .sum::<u64>()
            .max(1);
        // The background is cached in chunks of rows whose activations take at most a quarter of
        // the chunk bound, so neither computing nor keeping it needs the whole background's
        // activations at once; the chunk size depends on the model only, so every request with
        // this background shares the entries.
        let cache_rows = ((self.chunk_bytes / 4 / bytes_per_row) as usize).clamp(1, model.max_batch_rows().max(1));
        // Chunks of (nearly) equal rows, so the last is not a small remainder.
        let cache_rows = k.div_ceil(k.div_ceil(cache_rows));
        let last_chunk_rows = k - (k.div_ceil(cache_rows) - 1) * cache_rows;
        // Rows per backward run. Its pair stage holds about one row's activations per
        // background row, its gradient stage (S seeds per row) about 0.4 of that per seed and
        // row (ONNX Runtime's peak, measured on the mid-size CNN of BENCHMARKS.md): budget
        // 2 + S/2 activation rows per background row.
        let per_run_row = bytes_per_row * (2 + (s as u64).div_ceil(2));
        let run_rows = ((self.chunk_bytes / per_run_row) as usize).clamp(1, model.max_batch_rows().max(1));
        // Runs of one size for the whole request: the fewest runs within the bound, rows shared
        // out evenly, and no longer than the shortest chunk. ONNX Runtime re-plans a graph
        // whose input shapes changed since its last run, and under CUDA that re-runs cuDNN's
        // algorithm search for every convolution: on the H100 of BENCHMARKS.md, runs of 35
        // then 15 rows took 86 ms per request, 25 and 25 took 9 ms.
        let run_size = k.div_ceil(k.div_ceil(run_rows)).min(last_chunk_rows);

        let seeds = seeds.to_shape((n, s, row)).map_err(|e| AttributionError::InvalidArgument(format!("seeds: {e}")))?;
        let mut attributions: Vec<ArrayD<f32>> = inputs
            .iter()
            .map(|x| {
                let mut shape = vec![n, s];
                shape.extend(&x.shape()[1..]);
                ArrayD::zeros(IxDyn(&shape))
            })
            .collect();
        let input_rows: Vec<ndarray::CowArray<f32, IxDyn>> = inputs.iter().map(|x| x.as_standard_layout()).collect();
        let background_rows: Vec<ndarray::CowArray<f32, IxDyn>> =
            background.rows.iter().map(|r| r.as_standard_layout()).collect();
        let mut seed_shape = vec![0];
        seed_shape.extend(&model_output_shape(model, output, row)[1..]);
        let mut output_sum = vec![0f64; row];
        let mut background_location = ExecutionProvider::Cpu;

        for chunk_start in (0..k).step_by(cache_rows) {
            let chunk_end = (chunk_start + cache_rows).min(k);
            let key = (model.sha256.clone(), output, background.digest.clone(), chunk_start, chunk_end);
            let cached = self.activations.get_or_compute(&key, || {
                let views: Vec<_> =
                    background.rows.iter().map(|a| a.slice_axis(Axis(0), (chunk_start..chunk_end).into())).collect();
                let (arrays, run) = background_forward.run(&views).map_err(internal)?;
                stats.add(run);
                let (outputs, run) = background_model.run(&views).map_err(internal)?;
                stats.add(run);
                let explained = &outputs[output];
                let rows = chunk_end - chunk_start;
                let output_sum: Vec<f64> = explained
                    .to_shape((rows, explained.len() / rows))
                    .expect("rows first")
                    .sum_axis(Axis(0))
                    .iter()
                    .map(|&v| v as f64)
                    .collect();
                let arrays = backward.keep_resident(arrays).map_err(internal)?;
                let bytes = arrays.bytes() + output_sum.len() as u64 * 8;
                Ok::<_, AttributionError>((Activations { arrays, output_sum }, bytes))
            })?;
            background_location = cached.arrays.location();
            for (total, part) in output_sum.iter_mut().zip(&cached.output_sum) {
                *total += part;
            }
            // One input row at a time against runs of this chunk's rows, all S seeds in one run:
            // the backward graph repeats the cached activations per seed and expands the input's
            // to match, so the activations go in as views and nothing is copied per pair.
            // Every run of this chunk has the same rows; the last one ends at the chunk's end,
            // overlapping rows already done (their results are not added twice).
            let chunk_rows = chunk_end - chunk_start;
            let rows = run_size.min(chunk_rows);
            seed_shape[0] = s * rows;
            for i in 0..n {
                let x_side: Vec<Input> =
                    input_activations.iter().map(|a| Input::Host(a.slice_axis(Axis(0), (i..i + 1).into()))).collect();
                let seed_rows = ndarray::Array2::from_shape_fn((s * rows, row), |(r, e)| seeds[[i, r / rows, e]])
                    .into_shape_with_order(IxDyn(&seed_shape))
                    .expect("same length");
                for (local, already_done) in runs(chunk_rows, rows) {
                    if cancelled() {
                        return Err(AttributionError::Cancelled);
                    }
                    let mut feed: Vec<Input> = x_side.iter().map(Input::reborrow).collect();
                    feed.extend((0..cached.arrays.len()).map(|index| Input::Resident {
                        set: &cached.arrays,
                        index,
                        rows: local..local + rows,
                    }));
                    feed.push(Input::Host(seed_rows.view()));
                    let (multipliers, run) = backward.run_inputs(&feed).map_err(internal)?;
                    stats.add(run);
                    let first = chunk_start + local;
                    for (input, m) in multipliers.iter().enumerate() {
                        let len = m.len() / (s * rows);
                        let m = m.as_standard_layout();
                        let m = m.as_slice().expect("standard layout");
                        let x = &input_rows[input].as_slice().expect("standard layout")[i * len..(i + 1) * len];
                        let r = background_rows[input].as_slice().expect("standard layout");
                        let out = attributions[input].as_slice_mut().expect("fresh array");
                        for j in 0..s {
                            let dst = &mut out[(i * s + j) * len..(i * s + j + 1) * len];
                            for p in already_done..rows {
                                let m = &m[(j * rows + p) * len..(j * rows + p + 1) * len];
                                let r = &r[(first + p) * len..(first + p + 1) * len];
                                for e in 0..len {
                                    dst[e] += m[e] * (x[e] - r[e]) / k as f32;
                                }
                            }
                        }
                    }
                }
            }
        }

        let mean_output: Vec<f64> = output_sum.iter().map(|v| v / k as f64).collect();
        let mut expected = Array2::<f32>::zeros((n, s));
        for ((i, j), value) in expected.indexed_iter_mut() {
            *value = seeds.slice(ndarray::s![i, j, ..]).iter().zip(&mean_output).map(|(a, b)| *a as f64 * b).sum::<f64>() as f32;
        }
        Ok(DeepShap { attributions, expected, stats, background_location })
    }
}

/// The runs over `chunk_rows` rows, `rows` at a time (`rows` ≤ `chunk_rows`): each run's first
/// row and how many of its rows an earlier run already covered. The last run ends at the
/// chunk's end, so every run has the same shape.
fn runs(chunk_rows: usize, rows: usize) -> impl Iterator<Item = (usize, usize)> {
    debug_assert!(rows >= 1 && rows <= chunk_rows);
    (0..chunk_rows.div_ceil(rows)).map(move |run| {
        let done = run * rows;
        let first = done.min(chunk_rows - rows);
        (first, done - first)
    })
}

/// What layer methods need to know of a model's tensors, kept per model digest.
struct LayerIndex {
    /// Every value a layer may name: the model's inputs and every node output.
    names: std::collections::HashSet<String>,
    /// Rank-4 node outputs, in graph order: the candidates an error lists.
    four_d: Vec<String>,
    /// The last 2-D convolution's output.
    default: Option<String>,
    /// (model input, the output of the `Gather` that embeds it), for integer inputs.
    embeddings: Vec<(String, String)>,
}

impl LayerIndex {
    fn of(proto: &ModelProto) -> Self {
        let mut names = std::collections::HashSet::new();
        if let Some(graph) = &proto.graph {
            names.extend(graph.input.iter().map(|i| i.name().to_string()));
            names.extend(graph.node.iter().flat_map(|n| n.output.iter()).filter(|o| !o.is_empty()).cloned());
        }
        LayerIndex {
            names,
            four_d: explaind_graph::layers::four_d_layers(proto),
            default: explaind_graph::layers::last_conv2d_output(proto),
            embeddings: explaind_graph::layers::embedding_lookups(proto),
        }
    }

    /// The 4-D tensors, for an error message.
    fn candidates(&self) -> String {
        if self.four_d.is_empty() { "none".to_string() } else { self.four_d.join(", ") }
    }
}

/// The inputs of a graph compiled from `model` cut at a layer, by name: the float32 values
/// `fed` names (the layer, its reference, the seed), and the model inputs the cut graph still
/// reads, from `inputs` (one per model input).
fn cut_feed<'v>(
    graph: &Model,
    model: &Model,
    inputs: &'v [TensorView<'_>],
    fed: &'v [(&str, ArrayViewD<'_, f32>)],
) -> Result<Vec<TensorView<'v>>, AttributionError> {
    graph
        .inputs
        .iter()
        .map(|spec| {
            if let Some((_, values)) = fed.iter().find(|(name, _)| *name == spec.name) {
                return Ok(TensorView::Float(values.view()));
            }
            match model.inputs.iter().position(|i| i.name == spec.name) {
                Some(i) => Ok(inputs[i].reborrow()),
                None => Err(AttributionError::Internal(format!("the cut graph takes an unknown input {:?}", spec.name))),
            }
        })
        .collect()
}

/// The served model's ONNX graph, read from its file.
fn read_proto(model: &Model) -> Result<ModelProto, AttributionError> {
    let path = model.dir.join("model.onnx");
    let bytes = std::fs::read(&path).map_err(|e| AttributionError::Internal(format!("{}: {e}", path.display())))?;
    ModelProto::from_bytes(&bytes).map_err(|e| AttributionError::Internal(format!("{}: {e}", path.display())))
}

/// Runs a compiled graph on `feed` followed by the seeds (shaped as `model`'s output batch);
/// returns all of the graph's outputs, the model's own first.
fn run_seeded(
    graph: &Model,
    model: &Model,
    output: usize,
    feed: &[ArrayViewD<'_, f32>],
    seeds: ArrayViewD<'_, f32>,
) -> Result<(Vec<ArrayD<f32>>, RunStats), AttributionError> {
    let seeds = shaped_seeds(model, output, seeds)?;
    let mut feed: Vec<ArrayViewD<f32>> = feed.iter().map(|v| v.view()).collect();
    feed.push(seeds.view());
    graph.run(&feed).map_err(internal)
}

/// The seed shaped as the model's output batch: [B, *output_shape_without_batch].
fn shaped_seeds(model: &Model, output: usize, seeds: ArrayViewD<'_, f32>) -> Result<ArrayD<f32>, AttributionError> {
    let b = seeds.shape()[0];
    let row = seeds.len() / b.max(1);
    let mut shape = vec![b];
    shape.extend(&model_output_shape(model, output, row)[1..]);
    seeds
        .as_standard_layout()
        .into_owned()
        .into_shape_with_order(IxDyn(&shape))
        .map_err(|e| AttributionError::InvalidArgument(format!("seeds: {e}")))
}

/// The explained output's shape with a batch axis of 1: declared sizes, or one flat axis of
/// `row` elements when the model leaves some unknown.
fn model_output_shape(model: &Model, output: usize, row: usize) -> Vec<usize> {
    let declared = model.outputs[output].shape_i64();
    let trailing: Vec<usize> = declared.iter().skip(1).map(|&d| d.max(0) as usize).collect();
    if !trailing.is_empty() && trailing.iter().all(|&d| d > 0) && trailing.iter().product::<usize>() == row {
        let mut shape = vec![1];
        shape.extend(trailing);
        shape
    } else {
        vec![1, row]
    }
}

#[cfg(test)]
mod tests {
    use super::runs;

    #[test]
    fn runs_have_one_size_and_cover_every_row_once() {
        assert_eq!(runs(4, 2).collect::<Vec<_>>(), [(0, 0), (2, 0)]);
        assert_eq!(runs(5, 2).collect::<Vec<_>>(), [(0, 0), (2, 0), (3, 1)]);
        assert_eq!(runs(3, 3).collect::<Vec<_>>(), [(0, 0)]);
        for chunk_rows in 1..40 {
            for rows in 1..=chunk_rows {
                let mut covered = vec![0; chunk_rows];
                for (first, skip) in runs(chunk_rows, rows) {
                    assert!(first + rows <= chunk_rows);
                    for count in &mut covered[first + skip..first + rows] {
                        *count += 1;
                    }
                }
                assert!(covered.iter().all(|&c| c == 1), "{chunk_rows} rows, runs of {rows}: {covered:?}");
            }
        }
    }
}
