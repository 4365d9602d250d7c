//! ONNX Runtime for explaind: one process-wide runtime, models loaded from a repository
//! directory, and batched forward passes (inputs in the types models declare, float32 outputs).
//!
//! - [`OrtRuntime`] loads the ONNX Runtime shared library (`ort` with `load-dynamic`) once per
//!   process and decides the execution provider (`--device auto|cpu|cuda`).
//! - [`Model`] is one loaded `model.onnx` with its metadata, a small pool of sessions and an
//!   optional default background; [`Model::run_tensors`] runs a batch in chunks of bounded size.
//! - [`Tensor`] holds an input in any element type a model may declare (token ids are int64).
//! - [`Resident`] keeps arrays that many runs read (cached background activations) where the
//!   model's session reads them: on the GPU under CUDA, so they are copied there once.
//! - [`ModelRepository`] maps `models/<name>/<version>/` to loaded models and reloads them on
//!   request; requests can only name models, never paths.

mod model;
pub mod npy;
mod repository;
mod resident;
mod tensor;

pub use model::{Dim, ElementType, FLOAT, Model, ModelConfig, ModelError, RunStats, TensorSpec};
pub use repository::{ModelRepository, RepositoryError};
pub use resident::{Input, Resident};
pub use tensor::{DecodeError, RawError, Tensor, TensorView, element_size, element_type_name, is_supported_input_type};

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// SHA-256 (lower-case hex) over each array's rank, shape and little-endian float32 elements, in
/// order: how background sets are named, so equal data gets one cache entry whoever sends it.
pub fn digest_arrays(arrays: &[ndarray::ArrayD<f32>]) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    for array in arrays {
        hasher.update((array.ndim() as u64).to_le_bytes());
        for &d in array.shape() {
            hasher.update((d as u64).to_le_bytes());
        }
        for v in array.iter() {
            hasher.update(v.to_le_bytes());
        }
    }
    hex::encode(hasher.finalize())
}

/// SHA-256 (lower-case hex) over each tensor's ONNX element type, rank, shape and little-endian
/// elements, in order: the digest of a request's inputs in audit records.
pub fn digest_tensors(tensors: &[Tensor]) -> String {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    for tensor in tensors {
        hasher.update((tensor.element_type() as u32).to_le_bytes());
        hasher.update((tensor.shape().len() as u64).to_le_bytes());
        for &d in tensor.shape() {
            hasher.update((d as u64).to_le_bytes());
        }
        hasher.update(tensor.to_le_bytes());
    }
    hex::encode(hasher.finalize())
}

/// Which execution provider to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceChoice {
    /// CUDA when the loaded library has it and a GPU answers, otherwise the CPU.
    Auto,
    Cpu,
    /// CUDA or fail.
    Cuda,
}

impl std::str::FromStr for DeviceChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(DeviceChoice::Auto),
            "cpu" => Ok(DeviceChoice::Cpu),
            "cuda" => Ok(DeviceChoice::Cuda),
            other => Err(format!("unknown device {other:?}: expected auto, cpu or cuda")),
        }
    }
}

/// The execution provider a model actually runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutionProvider {
    Cpu,
    Cuda,
}

impl ExecutionProvider {
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionProvider::Cpu => "CPU",
            ExecutionProvider::Cuda => "CUDA",
        }
    }
}

/// Settings for sessions.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    pub device: DeviceChoice,
    /// Threads ONNX Runtime uses inside one operator (0: one per core).
    pub intra_threads: usize,
    /// Whether idle intra-op workers spin before sleeping (for milliseconds after each run):
    /// runs back to back start sooner, but the spinning takes a core from whatever runs next,
    /// a plugin's own sampling threads included. Off by default: on the 2-core benchmarks it
    /// gained nothing (BENCHMARKS.md, "Kernel SHAP and LIME").
    pub intra_op_spinning: bool,
    /// Sessions per model, i.e. how many forward passes of one model may run at once.
    pub sessions_per_model: usize,
    /// The most rows sent to ONNX Runtime in one call; larger batches are split.
    pub max_batch_rows: usize,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        RuntimeOptions {
            device: DeviceChoice::Auto,
            intra_threads: 0,
            intra_op_spinning: false,
            sessions_per_model: 1,
            max_batch_rows: 1024,
        }
    }
}

/// The process-wide ONNX Runtime.
pub struct OrtRuntime {
    pub library: PathBuf,
    pub options: RuntimeOptions,
    /// Whether the loaded library was built with the CUDA execution provider.
    pub cuda_compiled: bool,
    env: ort::environment::Environment,
}

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(
        "ONNX Runtime library not found at {0}: run `scripts/setup/setup.sh` to fetch it, or point ORT_DYLIB_PATH or --ort-lib at libonnxruntime.so"
    )]
    NotFound(PathBuf),
    #[error(
        "could not load ONNX Runtime from {path}: {reason}. Run `scripts/setup/setup.sh` to fetch the pinned library, or point ORT_DYLIB_PATH or --ort-lib at a libonnxruntime.so 1.31"
    )]
    Load { path: PathBuf, reason: String },
    #[error("ONNX Runtime is already initialised from {existing}; one process can load only one library (asked for {requested})")]
    AlreadyInitialised { existing: PathBuf, requested: PathBuf },
}

static RUNTIME: OnceLock<OrtRuntime> = OnceLock::new();

/// Held around everything that reaches the GPU through ONNX Runtime (creating a CUDA session,
/// running one, copying tensors to the device). With two such calls on different threads, ONNX
/// Runtime 1.31's CUDA provider failed with CUDA error 900 ("operation not permitted when
/// stream is capturing", from `cudaDeviceSynchronize` in session creation; onnxruntime issue
/// 18806) on the H100 of BENCHMARKS.md. One GPU runs one graph at a time anyway; what the lock
/// costs is overlapping one request's host work with another's kernels.
pub(crate) fn lock_gpu() -> std::sync::MutexGuard<'static, ()> {
    static GPU: std::sync::Mutex<()> = std::sync::Mutex::new(());
    GPU.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Where to look for the library: `--ort-lib`, then `ORT_DYLIB_PATH`, then `.ort/libonnxruntime.so`
/// in the current directory or any ancestor of the executable (where `scripts/setup/setup.sh` puts it).
pub fn find_library(flag: Option<&Path>) -> PathBuf {
    if let Some(p) = flag {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let relative = Path::new(".ort").join("libonnxruntime.so");
    let mut candidates = vec![relative.clone()];
    if let Ok(exe) = std::env::current_exe() {
        candidates.extend(exe.ancestors().skip(1).map(|dir| dir.join(&relative)));
    }
    candidates.iter().find(|p| p.is_file()).cloned().unwrap_or(relative)
}

impl OrtRuntime {
    /// Loads the library and builds the environment, once per process. A second call with the
    /// same library returns the existing runtime; with another library, an error.
    pub fn init(library: &Path, options: RuntimeOptions) -> Result<&'static OrtRuntime, InitError> {
        if let Some(rt) = RUNTIME.get() {
            if rt.library != library {
                return Err(InitError::AlreadyInitialised { existing: rt.library.clone(), requested: library.into() });
            }
            return Ok(rt);
        }
        if !library.is_file() {
            return Err(InitError::NotFound(library.to_path_buf()));
        }
        let load_err = |reason: String| InitError::Load { path: library.to_path_buf(), reason };
        // ort panics (rather than erroring) on some malformed libraries; keep that out of callers.
        let builder = std::panic::catch_unwind(|| ort::init_from(library))
            .map_err(|_| load_err("the library panicked while loading".into()))?
            .map_err(|e| load_err(format!("{e:?}")))?;
        // One intra-op thread pool for every session: the sessions an explanation alternates
        // between (activations, backward pass, forward) share its workers, so spinning workers
        // of one session never compete with another's (what made per-session spinning a loss).
        let pool = ort::environment::GlobalThreadPoolOptions::default()
            .with_intra_threads(options.intra_threads)
            .and_then(|p| p.with_spin_control(options.intra_op_spinning))
            .map_err(|e| load_err(e.to_string()))?;
        let env = builder.with_name("explaind").with_global_thread_pool(pool).build().map_err(|e| load_err(e.to_string()))?;
        use ort::ep::ExecutionProvider as _;
        let cuda_compiled = ort::ep::CUDA::is_available().unwrap_or(false);
        let rt = OrtRuntime { library: library.to_path_buf(), options, cuda_compiled, env };
        let _ = RUNTIME.set(rt);
        Ok(RUNTIME.get().expect("just set"))
    }

    /// The runtime, if [`OrtRuntime::init`] has run.
    pub fn get() -> Option<&'static OrtRuntime> {
        RUNTIME.get()
    }

    pub(crate) fn environment(&self) -> &ort::environment::Environment {
        &self.env
    }
}
