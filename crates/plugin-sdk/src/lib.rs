//! Safe Rust SDK for explaind explainer plugins.
//!
//! A plugin implements [`Explainer`] and exports it with [`export_plugin!`]:
//!
//! ```ignore
//! use explaind_plugin_sdk::*;
//!
//! #[derive(Default)]
//! struct Twice;
//! impl Explainer for Twice {
//!     fn info() -> PluginInfo {
//!         PluginInfo::new("twice", env!("CARGO_PKG_VERSION")).reentrant()
//!     }
//!     fn create() -> Result<Self, Error> { Ok(Twice) }
//!     fn estimate(&self, request: &Request<'_>) -> Result<Cost, Error> {
//!         Ok(Cost::nothing())  // no model calls, no scratch memory
//!     }
//!     fn explain(&self, ctx: &Context<'_>, request: &Request<'_>) -> Result<(), Error> {
//!         let input = &request.inputs()[0];
//!         let out = ctx.attributions(0)?;
//!         // ... fill `out` ...
//!         Ok(())
//!     }
//! }
//! export_plugin!(Twice);
//! ```
//!
//! The macro writes the one C entry point (`explaind_plugin_v1`) and the function table. Every
//! call from the host runs inside `catch_unwind`: a panic becomes an `EXD_PLUGIN_PANICKED`
//! error, the instance is marked poisoned and refuses further calls, and the host replaces it.
//! Nothing unwinds across the C boundary.
//!
//! With the `testing` feature (in a plugin's dev-dependencies), [`testing`] is a fake host that
//! calls the plugin's `estimate` through its own C entry point, for the plugin's unit tests.

pub use explaind_abi as abi;

pub mod graph;
#[cfg(feature = "testing")]
pub mod testing;
mod typed;
use std::ffi::{CStr, CString};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

pub use abi::{
    EXD_CANCELLED, EXD_FAILED_PRECONDITION, EXD_INTERNAL, EXD_INVALID_ARGUMENT, EXD_NOT_FOUND, EXD_RESOURCE_EXHAUSTED,
    EXD_UNIMPLEMENTED, ExdCode,
};

// ----- Errors -----------------------------------------------------------------------------

/// An error a plugin returns; it becomes a gRPC status with the same code.
#[derive(Debug, Clone, PartialEq)]
pub struct Error {
    pub code: ExdCode,
    pub message: String,
}

impl Error {
    pub fn new(code: ExdCode, message: impl Into<String>) -> Self {
        Error { code, message: message.into() }
    }
    /// A bad parameter or input; the message should name it.
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(EXD_INVALID_ARGUMENT, message)
    }
    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new(EXD_FAILED_PRECONDITION, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(EXD_INTERNAL, message)
    }
    pub fn cancelled() -> Self {
        Self::new(EXD_CANCELLED, "the request was cancelled")
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {})", self.message, self.code)
    }
}

impl std::error::Error for Error {}

// ----- Plugin description -----------------------------------------------------------------

/// The kind and default of a declared parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamDefault {
    /// The request must set the parameter.
    Required,
    /// Optional; absent unless the request sets it.
    Optional,
    Number(f64),
    Integer(i64),
    Flag(bool),
    Text(String),
    Numbers(Vec<f64>),
    Integers(Vec<i64>),
}

/// Kinds of parameters, as in the header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    Number,
    Integer,
    Flag,
    Text,
    Numbers,
    Integers,
}

impl ParamKind {
    fn code(self) -> abi::ExdParamKind {
        match self {
            ParamKind::Number => abi::EXD_PARAM_NUMBER,
            ParamKind::Integer => abi::EXD_PARAM_INTEGER,
            ParamKind::Flag => abi::EXD_PARAM_FLAG,
            ParamKind::Text => abi::EXD_PARAM_TEXT,
            ParamKind::Numbers => abi::EXD_PARAM_NUMBERS,
            ParamKind::Integers => abi::EXD_PARAM_INTEGERS,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ParamSpec {
    pub name: &'static str,
    pub description: &'static str,
    pub kind: ParamKind,
    pub default: ParamDefault,
    /// Inclusive bounds of the value (of every element, for lists), checked by the host.
    pub range: Option<(f64, f64)>,
    /// Most elements of a list, or bytes of a text, checked by the host.
    pub max_len: Option<u64>,
}

/// What a plugin says about itself. Built once, when the library is loaded.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    pub name: &'static str,
    pub version: &'static str,
    pub description: &'static str,
    pub flags: u64,
    pub params: Vec<ParamSpec>,
}

impl PluginInfo {
    pub fn new(name: &'static str, version: &'static str) -> Self {
        PluginInfo { name, version, description: "", flags: 0, params: Vec::new() }
    }
    pub fn description(mut self, description: &'static str) -> Self {
        self.description = description;
        self
    }
    /// `explain` may run concurrently on one instance.
    pub fn reentrant(mut self) -> Self {
        self.flags |= abi::EXD_CAP_REENTRANT;
        self
    }
    /// The host refuses requests that bring no background.
    pub fn needs_background(mut self) -> Self {
        self.flags |= abi::EXD_NEEDS_BACKGROUND;
        self
    }
    /// Uses the ABI 1.1 attribution host functions (gradients, DeepLIFT).
    pub fn needs_gradients(mut self) -> Self {
        self.flags |= abi::EXD_NEEDS_GRADIENTS;
        self
    }
    /// Explains only models holding an ONNX-ML tree ensemble (ABI 1.4): the host lists the
    /// plugin for those models only.
    pub fn needs_tree_ensemble(mut self) -> Self {
        self.flags |= abi::EXD_NEEDS_TREE_ENSEMBLE;
        self
    }
    /// Explains models whose inputs are of any element type (ABI 1.5): token ids, categorical
    /// codes, masks. The plugin still reads float32 values ([`Request::inputs`]) and builds
    /// float32 rows for [`Context::forward`]; the SDK converts both ways exactly (see the
    /// `typed` module), so declare it only if the plugin copies input values and never computes
    /// new ones (a perturbation explainer, not a gradient one).
    pub fn typed_inputs(mut self) -> Self {
        self.flags |= abi::EXD_CAP_TYPED_INPUTS;
        self
    }
    pub fn param(mut self, name: &'static str, kind: ParamKind, default: ParamDefault, description: &'static str) -> Self {
        self.params.push(ParamSpec { name, description, kind, default, range: None, max_len: None });
        self
    }
    /// Bounds the parameter declared last: the host refuses values outside `[min, max]`
    /// (every element, for lists) with INVALID_ARGUMENT before the plugin is called.
    pub fn range(mut self, min: f64, max: f64) -> Self {
        self.params.last_mut().expect("range() follows a param()").range = Some((min, max));
        self
    }
    /// Bounds the length of the list or text declared last.
    pub fn max_len(mut self, max_len: u64) -> Self {
        self.params.last_mut().expect("max_len() follows a param()").max_len = Some(max_len);
        self
    }
}

// ----- Cancellation ------------------------------------------------------------------------

/// Elements of plain work (copies, sums, noise draws) between two cancellation checks of a
/// [`Ticker`]: well under a millisecond optimised, a few milliseconds in a debug build.
pub const TICK_ELEMENTS: usize = 1 << 16;

/// Asks the host whether the request was cancelled about once per [`TICK_ELEMENTS`] elements of
/// work, for loops whose length the request sets (targets, samples, windows, rows of results),
/// without a host call per iteration.
pub struct Ticker<'c, 'a> {
    ctx: &'c Context<'a>,
    left: usize,
}

impl<'c, 'a> Ticker<'c, 'a> {
    pub fn new(ctx: &'c Context<'a>) -> Self {
        Ticker { ctx, left: TICK_ELEMENTS }
    }

    /// Books `elements` of work; Err(cancelled) once the request is cancelled.
    pub fn tick(&mut self, elements: usize) -> Result<(), Error> {
        if elements < self.left {
            self.left -= elements;
            return Ok(());
        }
        self.left = TICK_ELEMENTS;
        self.ctx.check_cancelled()
    }
}

// ----- Cost -------------------------------------------------------------------------------

/// What one `explain` call will cost (the header's `ExdCost`). Floating point on purpose:
/// products of huge parameters become huge numbers (or infinity), never wrap around.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cost {
    /// Rows through the model and the compiled graphs, as the host's row budget counts them.
    pub model_rows: f64,
    /// The most bytes held at once besides the request and the result tensors.
    pub scratch_bytes: f64,
    /// The parameter that drives the cost most (its name), or `None` for the inputs and
    /// targets. The host names it when it refuses the request.
    pub driver: Option<&'static str>,
}

impl Cost {
    /// No model work and no scratch memory.
    pub fn nothing() -> Self {
        Cost { model_rows: 0.0, scratch_bytes: 0.0, driver: None }
    }
    pub fn new(model_rows: f64, scratch_bytes: f64) -> Self {
        Cost { model_rows, scratch_bytes, driver: None }
    }
    /// Names the parameter that drives the cost.
    pub fn driven_by(mut self, parameter: &'static str) -> Self {
        self.driver = Some(parameter);
        self
    }
}

// ----- The trait --------------------------------------------------------------------------

/// An explainer. One instance is created per plugin load (and again after a panic).
pub trait Explainer: Sized + Send + Sync + 'static {
    fn info() -> PluginInfo;
    fn create() -> Result<Self, Error>;
    /// What [`Explainer::explain`] will cost on `request`, from its shapes and parameters
    /// alone, before anything is allocated (ABI 1.3 `estimate`). The host refuses the request
    /// when the cost is over its budget. Return INVALID_ARGUMENT here for parameter
    /// combinations that make no sense.
    fn estimate(&self, request: &Request<'_>) -> Result<Cost, Error>;
    /// Explains `request.inputs()` and writes the results through `ctx`.
    fn explain(&self, ctx: &Context<'_>, request: &Request<'_>) -> Result<(), Error>;
}

// ----- Tensors ----------------------------------------------------------------------------

/// A borrowed float32 tensor: a shape and its row-major elements.
#[derive(Debug, Clone, Copy)]
pub struct TensorView<'a> {
    pub shape: &'a [i64],
    pub data: &'a [f32],
}

impl<'a> TensorView<'a> {
    pub fn new(shape: &'a [i64], data: &'a [f32]) -> Self {
        TensorView { shape, data }
    }
    /// Size of the first (batch) axis.
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(1) as usize
    }
    /// Elements per row (product of the axes after the first).
    pub fn row_len(&self) -> usize {
        self.shape.iter().skip(1).product::<i64>() as usize
    }
    pub fn row(&self, n: usize) -> &'a [f32] {
        let len = self.row_len();
        &self.data[n * len..(n + 1) * len]
    }

    /// # Safety
    /// `t` must be a valid dense float32 CPU DLTensor that outlives `'a`.
    unsafe fn from_dl(t: &'a abi::DLTensor) -> Result<Self, Error> {
        if t.dtype != abi::DLDataType::FLOAT32 || !t.strides.is_null() || t.device.device_type != abi::kDLCPU {
            return Err(Error::internal("host passed a tensor that is not dense float32 on the CPU"));
        }
        let ndim = t.ndim.max(0) as usize;
        let shape: &[i64] = if ndim == 0 { &[] } else { unsafe { std::slice::from_raw_parts(t.shape, ndim) } };
        let len = shape.iter().product::<i64>().max(0) as usize;
        let base = unsafe { (t.data as *const u8).add(t.byte_offset as usize) as *const f32 };
        let data = if len == 0 { &[][..] } else { unsafe { std::slice::from_raw_parts(base, len) } };
        Ok(TensorView { shape, data })
    }
}

/// What [`Context::layer_gradient`] returns.
pub struct LayerGradient<'c> {
    /// The layer's ONNX tensor name.
    pub layer: String,
    /// The layer's value for every row: [B, *layer_shape_without_batch].
    pub activation: HostTensor<'c>,
    /// The gradient at the layer, shaped like `activation`.
    pub gradient: HostTensor<'c>,
}

/// A tensor owned by the host (a forward output or scratch space), released when dropped.
pub struct HostTensor<'c> {
    host: &'c abi::ExdHostApi,
    ctx: *mut abi::ExdContext,
    raw: *mut abi::DLTensor,
}

impl<'c> HostTensor<'c> {
    pub fn view(&self) -> TensorView<'_> {
        // SAFETY: the host keeps the tensor alive until released (on drop) or the call ends.
        unsafe { TensorView::from_dl(&*self.raw).expect("host tensors are float32") }
    }
    pub fn shape(&self) -> &[i64] {
        self.view().shape
    }
    pub fn data(&self) -> &[f32] {
        self.view().data
    }
}

impl Drop for HostTensor<'_> {
    fn drop(&mut self) {
        if let Some(release) = self.host.tensor_release {
            unsafe { release(self.ctx, self.raw) };
        }
    }
}

// ----- Request ----------------------------------------------------------------------------

/// A parameter value as the host passes it (already converted to the declared kind).
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue<'a> {
    None,
    Number(f64),
    Integer(i64),
    Flag(bool),
    Text(&'a str),
    Numbers(&'a [f64]),
    Integers(&'a [i64]),
}

/// Float32 copies of the request's inputs that are of other types (ABI 1.5 typed inputs),
/// made before the [`Request`] that views them.
struct InputValues {
    copies: Vec<Option<Vec<f32>>>,
}

impl InputValues {
    /// # Safety
    /// `raw` must be a valid request from the host.
    unsafe fn of(raw: &abi::ExdExplainRequest) -> Result<Self, Error> {
        let mut copies = Vec::with_capacity(raw.num_inputs);
        for i in 0..raw.num_inputs {
            let t = unsafe { &*raw.inputs.add(i) };
            if t.dtype == abi::DLDataType::FLOAT32 {
                copies.push(None);
                continue;
            }
            let element_type = t.dtype.to_onnx().ok_or_else(|| Error::internal("host passed an input of an unknown dtype"))?;
            let ndim = t.ndim.max(0) as usize;
            let shape: &[i64] = if ndim == 0 { &[] } else { unsafe { std::slice::from_raw_parts(t.shape, ndim) } };
            let count = shape.iter().product::<i64>().max(0) as usize;
            let data = unsafe { (t.data as *const u8).add(t.byte_offset as usize) };
            let name = request_input_name(raw, i);
            let values = match explained(raw, i) {
                true => unsafe { typed::values_of(element_type, data, count, &format!("inputs.{name}")) }?,
                // A held input is never rebuilt from these values (forward_with_fixed copies its
                // own bytes), so they may be rounded.
                false => unsafe { typed::rounded_values_of(element_type, data, count) },
            };
            copies.push(Some(values));
        }
        Ok(InputValues { copies })
    }
}

/// Whether the request explains input `index` (ABI 1.5; every input before it).
fn explained(raw: &abi::ExdExplainRequest, index: usize) -> bool {
    let end = std::mem::offset_of!(abi::ExdExplainRequest, explained_inputs) + std::mem::size_of::<*const u8>();
    if (raw.header.struct_size as usize) < end || raw.explained_inputs.is_null() {
        return true;
    }
    // SAFETY: the host passes `num_inputs` flags, alive until `explain` returns.
    index < raw.num_inputs && unsafe { *raw.explained_inputs.add(index) } != 0
}

fn request_input_name(raw: &abi::ExdExplainRequest, index: usize) -> String {
    // SAFETY: the host's model info and its names live until `explain` returns.
    unsafe {
        match raw.model.as_ref() {
            Some(m) if index < m.num_inputs && !m.inputs.is_null() && !(*m.inputs.add(index)).name.is_null() => {
                CStr::from_ptr((*m.inputs.add(index)).name).to_string_lossy().into_owned()
            }
            _ => index.to_string(),
        }
    }
}

/// The request, borrowed for one `explain` call.
pub struct Request<'a> {
    raw: &'a abi::ExdExplainRequest,
    inputs: Vec<TensorView<'a>>,
    background: Option<Vec<TensorView<'a>>>,
    outputs: TensorView<'a>,
}

impl<'a> Request<'a> {
    /// # Safety
    /// `raw` must be a valid request from the host, and `values` made from it.
    unsafe fn from_raw(raw: &'a abi::ExdExplainRequest, values: &'a InputValues) -> Result<Self, Error> {
        if raw.header.struct_size < abi::v1_0_sizes::EXPLAIN_REQUEST {
            return Err(Error::internal("explain request struct is smaller than ABI 1.0's"));
        }
        let views = |ptr: *const abi::DLTensor| -> Result<Vec<TensorView<'a>>, Error> {
            (0..raw.num_inputs).map(|i| unsafe { TensorView::from_dl(&*ptr.add(i)) }).collect()
        };
        let inputs = (0..raw.num_inputs)
            .map(|i| {
                let t = unsafe { &*raw.inputs.add(i) };
                match values.copies.get(i) {
                    Some(Some(copy)) => {
                        let ndim = t.ndim.max(0) as usize;
                        let shape: &'a [i64] = if ndim == 0 { &[] } else { unsafe { std::slice::from_raw_parts(t.shape, ndim) } };
                        Ok(TensorView { shape, data: copy })
                    }
                    _ => unsafe { TensorView::from_dl(t) },
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let background = if raw.background.is_null() { None } else { Some(views(raw.background)?) };
        let outputs = unsafe { TensorView::from_dl(&*raw.outputs)? };
        Ok(Request { raw, inputs, background, outputs })
    }

    /// One tensor per model input, batch first, as float32 values. An explained input of
    /// another type (only for plugins that declare [`PluginInfo::typed_inputs`]) is an exact
    /// float32 copy; a held one is rounded to float32 where it must be (a double), and
    /// [`Context::forward_with_fixed`] passes its own bytes, not these values.
    pub fn inputs(&self) -> &[TensorView<'a>] {
        &self.inputs
    }
    /// Whether the request explains model input `index` (ABI 1.5); an input it does not
    /// explain is held at the request's values in every row the plugin builds.
    pub fn is_explained(&self, index: usize) -> bool {
        explained(self.raw, index)
    }
    /// The one input the request explains, for explainers that perturb a single input and
    /// hold the others (an attention mask) at the request's values; or the error that says
    /// why the request does not fit that, naming `explainer`.
    pub fn single_explained_input(&self, explainer: &str) -> Result<usize, Error> {
        let explained: Vec<usize> = (0..self.inputs.len()).filter(|&i| self.is_explained(i)).collect();
        match explained.as_slice() {
            [one] => Ok(*one),
            _ => Err(Error::new(
                EXD_UNIMPLEMENTED,
                format!(
                    "explained_inputs: {explainer} explains one input at a time, and this request explains {} of the \
                     model's {} ({}); name one in explained_inputs",
                    explained.len(),
                    self.inputs.len(),
                    explained.iter().map(|&i| self.input_name(i)).collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }
    /// The host's DLTensor of input `index`.
    fn raw_input(&self, index: usize) -> &'a abi::DLTensor {
        // SAFETY: the host passes `num_inputs` tensors, alive until `explain` returns.
        unsafe { &*self.raw.inputs.add(index) }
    }

    /// Rows `sources` of input `index` as the request sent them (its own element type), in
    /// storage aligned for any element type.
    ///
    /// # Safety
    /// Every source must be a row of the input.
    unsafe fn gather_raw_rows(&self, index: usize, sources: &[usize]) -> Vec<u64> {
        let t = self.raw_input(index);
        let element_bytes = (t.dtype.bits as usize).div_ceil(8) * t.dtype.lanes.max(1) as usize;
        let row_bytes = self.inputs[index].row_len() * element_bytes;
        let base = unsafe { (t.data as *const u8).add(t.byte_offset as usize) };
        let mut out = vec![0u64; (sources.len() * row_bytes).div_ceil(8)];
        let bytes: &mut [u8] = unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<u8>(), out.len() * 8) };
        for (r, &n) in sources.iter().enumerate() {
            let row = unsafe { std::slice::from_raw_parts(base.add(n * row_bytes), row_bytes) };
            bytes[r * row_bytes..(r + 1) * row_bytes].copy_from_slice(row);
        }
        out
    }

    /// The ONNX element type model input `index` declares (1 = float32, 7 = int64, ...).
    pub fn input_element_type(&self, index: usize) -> i32 {
        // SAFETY: the host's model info lives until `explain` returns.
        unsafe {
            match self.raw.model.as_ref() {
                Some(m) if index < m.num_inputs && !m.inputs.is_null() => (*m.inputs.add(index)).element_type,
                _ => 1,
            }
        }
    }
    /// Whether model input `index` takes integers (or bools): token ids, codes, masks. A value
    /// a plugin writes into such an input must be a whole number.
    pub fn input_is_integer(&self, index: usize) -> bool {
        matches!(self.input_element_type(index), 2 | 3 | 4 | 5 | 6 | 7 | 9 | 12 | 13)
    }
    /// Batch size N.
    pub fn batch_size(&self) -> usize {
        self.inputs.first().map(|t| t.rows()).unwrap_or(0)
    }
    /// Number of targets per input, T.
    pub fn num_targets(&self) -> usize {
        self.raw.num_targets
    }
    /// The T flat output indices to explain for input `n`.
    pub fn targets(&self, n: usize) -> &'a [i64] {
        let t = self.raw.num_targets;
        if t == 0 {
            return &[];
        }
        unsafe { std::slice::from_raw_parts(self.raw.targets.add(n * t), t) }
    }
    /// The explained output for the inputs, [N, output_row_size].
    pub fn outputs(&self) -> TensorView<'a> {
        self.outputs
    }
    pub fn output_row_size(&self) -> usize {
        self.raw.output_row_size as usize
    }
    /// The name of the explained output, as the model declares it.
    pub fn output_name(&self) -> &'a str {
        self.tensor_info(|m| (m.outputs, m.num_outputs), self.raw.output_index)
    }
    /// The SHA-256 of the model file (lower-case hex): a key for what a plugin caches per model.
    pub fn model_sha256(&self) -> &'a str {
        // SAFETY: the host's model info and its strings live until `explain` returns.
        unsafe {
            match self.raw.model.as_ref() {
                Some(model) if !model.sha256.is_null() => CStr::from_ptr(model.sha256).to_str().unwrap_or(""),
                _ => "",
            }
        }
    }
    /// The name of model input `index`.
    pub fn input_name(&self, index: usize) -> &'a str {
        self.tensor_info(|m| (m.inputs, m.num_inputs), index)
    }
    fn tensor_info(&self, list: impl Fn(&abi::ExdModelInfo) -> (*const abi::ExdTensorInfo, usize), index: usize) -> &'a str {
        // SAFETY: the host's model info and its names live until `explain` returns.
        unsafe {
            let Some(model) = self.raw.model.as_ref() else { return "" };
            let (infos, len) = list(model);
            if index >= len || infos.is_null() {
                return "";
            }
            let name = (*infos.add(index)).name;
            if name.is_null() { "" } else { CStr::from_ptr(name).to_str().unwrap_or("") }
        }
    }
    /// Background rows per model input, if the request has a background.
    pub fn background(&self) -> Option<&[TensorView<'a>]> {
        self.background.as_deref()
    }
    /// One-hot seeds for the targets, row-major [N, T, output_row_size]: seed (n, t) selects
    /// target t of input n. What the ABI 1.1 attribution functions take to explain targets.
    pub fn one_hot_seeds(&self) -> Vec<f32> {
        let (n, t, row) = (self.batch_size(), self.num_targets(), self.output_row_size());
        let mut seeds = vec![0f32; n * t * row];
        for i in 0..n {
            for (j, &target) in self.targets(i).iter().enumerate() {
                seeds[(i * t + j) * row + target as usize] = 1.0;
            }
        }
        seeds
    }

    pub fn max_batch_rows(&self) -> usize {
        self.raw.max_batch_rows.max(1) as usize
    }

    /// The value of a declared parameter (defaults already applied by the host).
    pub fn param(&self, name: &str) -> ParamValue<'a> {
        let params = if self.raw.num_params == 0 {
            &[][..]
        } else {
            unsafe { std::slice::from_raw_parts(self.raw.params, self.raw.num_params) }
        };
        for p in params {
            let pname = unsafe { CStr::from_ptr(p.name) };
            if pname.to_bytes() != name.as_bytes() {
                continue;
            }
            let v = &p.value;
            return unsafe {
                match v.kind {
                    abi::EXD_PARAM_NUMBER => ParamValue::Number(v.number),
                    abi::EXD_PARAM_INTEGER => ParamValue::Integer(v.integer),
                    abi::EXD_PARAM_FLAG => ParamValue::Flag(v.integer != 0),
                    abi::EXD_PARAM_TEXT => ParamValue::Text(CStr::from_ptr(v.text).to_str().unwrap_or("")),
                    abi::EXD_PARAM_NUMBERS => ParamValue::Numbers(slice_or_empty(v.numbers, v.len)),
                    abi::EXD_PARAM_INTEGERS => ParamValue::Integers(slice_or_empty(v.integers, v.len)),
                    _ => ParamValue::None,
                }
            };
        }
        ParamValue::None
    }

    pub fn number(&self, name: &str) -> Result<f64, Error> {
        match self.param(name) {
            ParamValue::Number(v) => Ok(v),
            ParamValue::Integer(v) => Ok(v as f64),
            other => Err(Error::invalid_argument(format!("parameters.{name}: expected a number, got {other:?}"))),
        }
    }
    /// An integer parameter; `None` when it is optional and unset.
    pub fn integer(&self, name: &str) -> Result<Option<i64>, Error> {
        match self.param(name) {
            ParamValue::Integer(v) => Ok(Some(v)),
            ParamValue::None => Ok(None),
            other => Err(Error::invalid_argument(format!("parameters.{name}: expected an integer, got {other:?}"))),
        }
    }
    pub fn flag(&self, name: &str) -> Result<bool, Error> {
        match self.param(name) {
            ParamValue::Flag(v) => Ok(v),
            other => Err(Error::invalid_argument(format!("parameters.{name}: expected true or false, got {other:?}"))),
        }
    }
    /// A text parameter; `None` when it is optional and unset.
    pub fn text(&self, name: &str) -> Result<Option<&'a str>, Error> {
        match self.param(name) {
            ParamValue::Text(v) => Ok(Some(v)),
            ParamValue::None => Ok(None),
            other => Err(Error::invalid_argument(format!("parameters.{name}: expected text, got {other:?}"))),
        }
    }
    pub fn integers(&self, name: &str) -> Result<Option<&'a [i64]>, Error> {
        match self.param(name) {
            ParamValue::Integers(v) => Ok(Some(v)),
            ParamValue::None => Ok(None),
            other => Err(Error::invalid_argument(format!("parameters.{name}: expected integers, got {other:?}"))),
        }
    }
}

/// A layer name for the host ("" asks for the default).
fn layer_name(layer: Option<&str>) -> Result<CString, Error> {
    CString::new(layer.unwrap_or("")).map_err(|_| Error::invalid_argument("layer: the name contains a NUL byte"))
}

unsafe fn slice_or_empty<'a, T>(ptr: *const T, len: usize) -> &'a [T] {
    if ptr.is_null() || len == 0 { &[] } else { unsafe { std::slice::from_raw_parts(ptr, len) } }
}

// ----- Context ----------------------------------------------------------------------------

/// The host's services for one `explain` call.
pub struct Context<'a> {
    host: &'a abi::ExdHostApi,
    raw: *mut abi::ExdContext,
    /// The result tensors already handed out as `&mut [f32]`: the host returns the same
    /// tensor for the same name, so a second slice would alias the first.
    handed_out: std::sync::Mutex<std::collections::HashSet<String>>,
}

// SAFETY: the header promises every host function is thread-safe during the call.
unsafe impl Sync for Context<'_> {}
unsafe impl Send for Context<'_> {}

impl<'a> Context<'a> {
    fn take_error(&self, err: *mut abi::ExdError) -> Error {
        take_host_error(self.host, err)
    }

    /// Whether the request was cancelled or its deadline passed.
    pub fn is_cancelled(&self) -> bool {
        self.host.is_cancelled.map(|f| unsafe { f(self.raw) } != 0).unwrap_or(false)
    }

    /// `Err(cancelled)` once the request is cancelled: call it between chunks of work.
    pub fn check_cancelled(&self) -> Result<(), Error> {
        if self.is_cancelled() { Err(Error::cancelled()) } else { Ok(()) }
    }

    /// A [`Ticker`] that asks this context about cancellation.
    pub fn ticker(&self) -> Ticker<'_, 'a> {
        Ticker::new(self)
    }

    pub fn log(&self, level: abi::ExdLogLevel, message: &str) {
        if let (Some(log), Ok(msg)) = (self.host.log, CString::new(message.replace('\0', " "))) {
            unsafe { log(self.raw, level, msg.as_ptr()) };
        }
    }

    /// Runs the model on a batch (one tensor per model input, same number of rows) and returns
    /// the explained output, [rows, output_row_size].
    ///
    /// Rows for a model input of another type than float32 (a plugin that declares
    /// [`PluginInfo::typed_inputs`]) are converted to that type here, exactly: a value the type
    /// does not hold (1.5 for token ids) is an INVALID_ARGUMENT naming the input.
    pub fn forward(&self, inputs: &[TensorView<'_>]) -> Result<HostTensor<'_>, Error> {
        let forward = self.host.forward.ok_or_else(|| Error::internal("host has no forward"))?;
        let (dl, _converted) = self.model_inputs(inputs, "forward")?;
        let mut out: *mut abi::DLTensor = std::ptr::null_mut();
        let err = unsafe { forward(self.raw, dl.as_ptr(), dl.len(), &mut out) };
        if !err.is_null() {
            return Err(self.take_error(err));
        }
        Ok(HostTensor { host: self.host, ctx: self.raw, raw: out })
    }

    /// Runs the model on `batch`, rows the plugin built for input `explained`, with every other
    /// model input held fixed: for batch row r it takes row `sources[r]` of the request's
    /// value of that input (the attention mask of the row being explained). Returns the
    /// explained output, as [`Context::forward`].
    pub fn forward_with_fixed(
        &self,
        request: &Request<'_>,
        explained: usize,
        batch: TensorView<'_>,
        sources: &[usize],
    ) -> Result<HostTensor<'_>, Error> {
        let inputs = request.inputs();
        if inputs.len() == 1 {
            return self.forward(&[batch]);
        }
        if sources.len() != batch.rows() {
            return Err(Error::internal(format!("{} source rows for a batch of {}", sources.len(), batch.rows())));
        }
        let forward = self.host.forward.ok_or_else(|| Error::internal("host has no forward"))?;
        // The explained rows are converted to the input's type; the held inputs are copied
        // row by row in their own type (their bytes as the request sent them), so a double
        // or an id past 2^24 is held exactly.
        let declared = self.input_types();
        let (explained_dl, _converted) = convert_input(&batch, declared.get(explained), explained, "forward")?;
        let mut shapes: Vec<Vec<i64>> = Vec::with_capacity(inputs.len());
        let mut held: Vec<Vec<u64>> = Vec::with_capacity(inputs.len());
        for (i, input) in inputs.iter().enumerate() {
            let mut shape = input.shape.to_vec();
            shape[0] = sources.len() as i64;
            shapes.push(shape);
            held.push(if i == explained { Vec::new() } else { unsafe { request.gather_raw_rows(i, sources) } });
        }
        let tensors: Vec<abi::DLTensor> = (0..inputs.len())
            .map(|i| match i == explained {
                true => abi::DLTensor { ..explained_dl },
                false => abi::DLTensor {
                    data: held[i].as_ptr() as *mut _,
                    device: abi::DLDevice { device_type: abi::kDLCPU, device_id: 0 },
                    ndim: shapes[i].len() as i32,
                    dtype: request.raw_input(i).dtype,
                    shape: shapes[i].as_ptr() as *mut i64,
                    strides: std::ptr::null_mut(),
                    byte_offset: 0,
                },
            })
            .collect();
        let mut out: *mut abi::DLTensor = std::ptr::null_mut();
        let err = unsafe { forward(self.raw, tensors.as_ptr(), tensors.len(), &mut out) };
        if !err.is_null() {
            return Err(self.take_error(err));
        }
        Ok(HostTensor { host: self.host, ctx: self.raw, raw: out })
    }

    /// DLTensors of `inputs` for the host, each in its model input's declared type: float32
    /// views as they are, the others converted (exactly, or refused naming the input), with
    /// the converted elements the tensors point into. `what` names the host function.
    fn model_inputs(&self, inputs: &[TensorView<'_>], what: &str) -> Result<(Vec<abi::DLTensor>, Vec<typed::Elements>), Error> {
        let declared = self.input_types();
        let mut converted = Vec::new();
        let mut dl = Vec::with_capacity(inputs.len());
        for (i, view) in inputs.iter().enumerate() {
            let (tensor, elements) = convert_input(view, declared.get(i), i, what)?;
            dl.push(tensor);
            converted.extend(elements);
        }
        Ok((dl, converted))
    }

    /// The value of tensor `layer` (ABI 1.5; `None`: the embedding of the first explained
    /// integer input, else the last 2-D convolution) for the rows of `inputs`, one per model
    /// input as [`Context::forward`] takes them. Returns the layer's name and its value,
    /// [B, *layer_shape].
    pub fn layer_activation(&self, inputs: &[TensorView<'_>], layer: Option<&str>) -> Result<(String, HostTensor<'_>), Error> {
        let end = std::mem::offset_of!(abi::ExdHostApi, layer_activation) + std::mem::size_of::<usize>();
        let f = self.host.layer_activation.filter(|_| self.host_has(end)).ok_or_else(unsupported_host)?;
        let layer = layer_name(layer)?;
        let (dl, _converted) = self.model_inputs(inputs, "layer_activation")?;
        let mut name: *const std::os::raw::c_char = std::ptr::null();
        let mut activation = std::ptr::null_mut();
        let err = unsafe { f(self.raw, dl.as_ptr(), dl.len(), layer.as_ptr(), &mut name, &mut activation) };
        if !err.is_null() {
            return Err(self.take_error(err));
        }
        // SAFETY: the host owns the name until `explain` returns, which outlives this context.
        let name = unsafe { std::ffi::CStr::from_ptr(name) }.to_string_lossy().into_owned();
        Ok((name, HostTensor { host: self.host, ctx: self.raw, raw: activation }))
    }

    /// The gradient of `seeds` · (explained output) at tensor `layer` (ABI 1.5), with the
    /// layer's value replaced by `values` [B, *layer_shape]: points that no input produces,
    /// such as the straight path between two embeddings. The rest of the model reads `inputs`
    /// (B rows each). `seeds` is [B, output_row_size].
    pub fn layer_gradient_at(
        &self,
        inputs: &[TensorView<'_>],
        layer: &str,
        values: TensorView<'_>,
        seeds: TensorView<'_>,
    ) -> Result<HostTensor<'_>, Error> {
        let end = std::mem::offset_of!(abi::ExdHostApi, layer_gradient_at) + std::mem::size_of::<usize>();
        let f = self.host.layer_gradient_at.filter(|_| self.host_has(end)).ok_or_else(unsupported_host)?;
        let layer = layer_name(Some(layer))?;
        let (dl, _converted) = self.model_inputs(inputs, "layer_gradient_at")?;
        let (values, seeds) = (dl_borrow(&values), dl_borrow(&seeds));
        let mut gradient = std::ptr::null_mut();
        let err =
            unsafe { f(self.raw, dl.as_ptr(), dl.len(), layer.as_ptr(), &values, &seeds, std::ptr::null_mut(), &mut gradient) };
        if !err.is_null() {
            return Err(self.take_error(err));
        }
        Ok(HostTensor { host: self.host, ctx: self.raw, raw: gradient })
    }

    /// DeepLIFT multipliers at tensor `layer` (ABI 1.5) for paired rows: its value replaced by
    /// `values` on one side and by `references` on the other (both [B, *layer_shape]), the rest
    /// of the model reading `inputs` on both (B rows each). Σ m · (values − references) =
    /// seeds · (f(values) − f(references)) per row.
    pub fn layer_deeplift_at(
        &self,
        inputs: &[TensorView<'_>],
        layer: &str,
        values: TensorView<'_>,
        references: TensorView<'_>,
        seeds: TensorView<'_>,
    ) -> Result<HostTensor<'_>, Error> {
        let end = std::mem::offset_of!(abi::ExdHostApi, layer_deeplift_at) + std::mem::size_of::<usize>();
        let f = self.host.layer_deeplift_at.filter(|_| self.host_has(end)).ok_or_else(unsupported_host)?;
        let layer = layer_name(Some(layer))?;
        let (dl, _converted) = self.model_inputs(inputs, "layer_deeplift_at")?;
        let (values, references, seeds) = (dl_borrow(&values), dl_borrow(&references), dl_borrow(&seeds));
        let mut multipliers = std::ptr::null_mut();
        let err = unsafe {
            f(
                self.raw,
                dl.as_ptr(),
                dl.len(),
                layer.as_ptr(),
                &values,
                &references,
                &seeds,
                std::ptr::null_mut(),
                &mut multipliers,
            )
        };
        if !err.is_null() {
            return Err(self.take_error(err));
        }
        Ok(HostTensor { host: self.host, ctx: self.raw, raw: multipliers })
    }

    /// Each model input's ONNX element type and name, from the host's model info.
    fn input_types(&self) -> Vec<(i32, String)> {
        let Some(model_info) = self.host.model_info else { return Vec::new() };
        // SAFETY: the host's model info and its strings live until `explain` returns.
        unsafe {
            let Some(model) = model_info(self.raw).as_ref() else { return Vec::new() };
            if model.inputs.is_null() {
                return Vec::new();
            }
            (0..model.num_inputs)
                .map(|i| {
                    let info = &*model.inputs.add(i);
                    let name = if info.name.is_null() {
                        String::new()
                    } else {
                        CStr::from_ptr(info.name).to_string_lossy().into_owned()
                    };
                    (info.element_type, name)
                })
                .collect()
        }
    }

    /// Whether the host fills in the field of its table that ends at byte `end` (ABI 1.1 and
    /// later functions are absent from older hosts).
    fn host_has(&self, end: usize) -> bool {
        abi::ExdHostApi::has_field(self.host.header.struct_size, end)
    }

    fn host_tensors(&self, raw: Vec<*mut abi::DLTensor>) -> Vec<HostTensor<'_>> {
        raw.into_iter().map(|raw| HostTensor { host: self.host, ctx: self.raw, raw }).collect()
    }

    /// Plain gradients of `seeds` · (explained output) with respect to every model input
    /// (ABI 1.1). `seeds` is [B, output_row_size]; one gradient per input, shaped like it.
    pub fn gradient(&self, inputs: &[TensorView<'_>], seeds: TensorView<'_>) -> Result<Vec<HostTensor<'_>>, Error> {
        let end = std::mem::offset_of!(abi::ExdHostApi, gradient) + std::mem::size_of::<usize>();
        let f = self.host.gradient.filter(|_| self.host_has(end)).ok_or_else(unsupported_host)?;
        let dl: Vec<abi::DLTensor> = inputs.iter().map(dl_borrow).collect();
        let seeds = dl_borrow(&seeds);
        let mut out = vec![std::ptr::null_mut(); dl.len()];
        let err = unsafe { f(self.raw, dl.as_ptr(), dl.len(), &seeds, out.as_mut_ptr()) };
        if !err.is_null() {
            return Err(self.take_error(err));
        }
        Ok(self.host_tensors(out))
    }

    /// DeepLIFT multipliers of `inputs` row b against `references` row b, seeded by `seeds`
    /// row b (ABI 1.1). One multiplier tensor per input, shaped like it.
    pub fn deeplift_multipliers(
        &self,
        inputs: &[TensorView<'_>],
        references: &[TensorView<'_>],
        seeds: TensorView<'_>,
    ) -> Result<Vec<HostTensor<'_>>, Error> {
        let end = std::mem::offset_of!(abi::ExdHostApi, deeplift_multipliers) + std::mem::size_of::<usize>();
        let f = self.host.deeplift_multipliers.filter(|_| self.host_has(end)).ok_or_else(unsupported_host)?;
        let dl: Vec<abi::DLTensor> = inputs.iter().map(dl_borrow).collect();
        let refs: Vec<abi::DLTensor> = references.iter().map(dl_borrow).collect();
        let seeds = dl_borrow(&seeds);
        let mut out = vec![std::ptr::null_mut(); dl.len()];
        let err = unsafe { f(self.raw, dl.as_ptr(), refs.as_ptr(), dl.len(), &seeds, out.as_mut_ptr()) };
        if !err.is_null() {
            return Err(self.take_error(err));
        }
        Ok(self.host_tensors(out))
    }

    /// Deep SHAP against the request's background (ABI 1.1): `seeds` is [N, S, output_row_size];
    /// returns per input [N, S, *input_shape_without_batch], and the expected values [N, S].
    pub fn deep_shap(
        &self,
        inputs: &[TensorView<'_>],
        seeds: TensorView<'_>,
    ) -> Result<(Vec<HostTensor<'_>>, HostTensor<'_>), Error> {
        let end = std::mem::offset_of!(abi::ExdHostApi, deep_shap) + std::mem::size_of::<usize>();
        let f = self.host.deep_shap.filter(|_| self.host_has(end)).ok_or_else(unsupported_host)?;
        let dl: Vec<abi::DLTensor> = inputs.iter().map(dl_borrow).collect();
        let seeds = dl_borrow(&seeds);
        let mut out = vec![std::ptr::null_mut(); dl.len()];
        let mut expected = std::ptr::null_mut();
        let err = unsafe { f(self.raw, dl.as_ptr(), dl.len(), &seeds, out.as_mut_ptr(), &mut expected) };
        if !err.is_null() {
            return Err(self.take_error(err));
        }
        Ok((self.host_tensors(out), HostTensor { host: self.host, ctx: self.raw, raw: expected }))
    }

    /// An intermediate tensor of the model and the gradient of `seeds` · (explained output) with
    /// respect to it (ABI 1.2), for the rows of `inputs`. `layer` names the ONNX tensor; `None`
    /// lets the host pick the last 2-D convolution's output. Returns the layer's name (the chosen
    /// one), its activation and its gradient, both [B, *layer_shape_without_batch].
    pub fn layer_gradient(
        &self,
        inputs: &[TensorView<'_>],
        seeds: TensorView<'_>,
        layer: Option<&str>,
    ) -> Result<LayerGradient<'_>, Error> {
        let end = std::mem::offset_of!(abi::ExdHostApi, layer_gradient) + std::mem::size_of::<usize>();
        let f = self.host.layer_gradient.filter(|_| self.host_has(end)).ok_or_else(unsupported_host)?;
        let layer = layer_name(layer)?;
        let dl: Vec<abi::DLTensor> = inputs.iter().map(dl_borrow).collect();
        let seeds = dl_borrow(&seeds);
        let mut name: *const std::os::raw::c_char = std::ptr::null();
        let (mut activation, mut gradient) = (std::ptr::null_mut(), std::ptr::null_mut());
        let err =
            unsafe { f(self.raw, dl.as_ptr(), dl.len(), &seeds, layer.as_ptr(), &mut name, &mut activation, &mut gradient) };
        if !err.is_null() {
            return Err(self.take_error(err));
        }
        // SAFETY: the host owns the name until `explain` returns, which outlives this context.
        let name = unsafe { std::ffi::CStr::from_ptr(name) }.to_string_lossy().into_owned();
        Ok(LayerGradient {
            layer: name,
            activation: HostTensor { host: self.host, ctx: self.raw, raw: activation },
            gradient: HostTensor { host: self.host, ctx: self.raw, raw: gradient },
        })
    }

    /// The model's structure (ABI 1.4): its nodes, attributes, initializers and operator sets,
    /// read-only, for explainers that read the model instead of (or besides) running it. Costs
    /// no model rows.
    pub fn model_graph(&self) -> Result<graph::Graph<'_>, Error> {
        let end = std::mem::offset_of!(abi::ExdHostApi, model_graph) + std::mem::size_of::<usize>();
        let f = self.host.model_graph.filter(|_| self.host_has(end)).ok_or_else(unsupported_host)?;
        let mut raw: *const abi::ExdGraph = std::ptr::null();
        let err = unsafe { f(self.raw, &mut raw) };
        if !err.is_null() {
            return Err(self.take_error(err));
        }
        if raw.is_null() {
            return Err(Error::internal("the host returned no graph"));
        }
        // SAFETY: the host owns the view until `explain` returns, which outlives this context.
        Ok(unsafe { graph::Graph::from_raw(&*raw) })
    }

    /// Records that the result `key` is handed out; a second request for it is an error (the
    /// slice would alias the first), which is what makes the `&self -> &mut` accessors below
    /// sound.
    fn hand_out_once(&self, key: String) -> Result<(), Error> {
        let mut handed_out = self.handed_out.lock().unwrap_or_else(|e| e.into_inner());
        if handed_out.insert(key.clone()) {
            Ok(())
        } else {
            Err(Error::internal(format!("the plugin asked for the result {key} twice; keep the slice it got the first time")))
        }
    }

    /// The attributions for model input `input_index`: [N, T, *input_shape_without_batch],
    /// zero-filled, to be written by the plugin. Each result is handed out once per call.
    #[allow(clippy::mut_from_ref)] // sound: `hand_out_once`
    pub fn attributions(&self, input_index: usize) -> Result<&mut [f32], Error> {
        let f = self.host.result_attributions.ok_or_else(|| Error::internal("host has no result_attributions"))?;
        self.hand_out_once(format!("attributions[{input_index}]"))?;
        let mut out = std::ptr::null_mut();
        let err = unsafe { f(self.raw, input_index, &mut out) };
        self.result_slice(err, out)
    }

    /// The base values, [N, T]. Handed out once per call.
    #[allow(clippy::mut_from_ref)] // sound: `hand_out_once`
    pub fn base_values(&self) -> Result<&mut [f32], Error> {
        let f = self.host.result_base_values.ok_or_else(|| Error::internal("host has no result_base_values"))?;
        self.hand_out_once("base_values".into())?;
        let mut out = std::ptr::null_mut();
        let err = unsafe { f(self.raw, &mut out) };
        self.result_slice(err, out)
    }

    /// A named extra result of any shape. Each name is handed out once per call.
    #[allow(clippy::mut_from_ref)] // sound: `hand_out_once`
    pub fn extra(&self, name: &str, shape: &[i64]) -> Result<&mut [f32], Error> {
        let f = self.host.result_extra.ok_or_else(|| Error::internal("host has no result_extra"))?;
        self.hand_out_once(format!("extra {name:?}"))?;
        let cname = CString::new(name).map_err(|_| Error::internal("extra name has a NUL byte"))?;
        let mut out = std::ptr::null_mut();
        let err = unsafe { f(self.raw, cname.as_ptr(), shape.as_ptr(), shape.len() as i32, &mut out) };
        self.result_slice(err, out)
    }

    /// For methods that attribute f(x) − f(b) against one baseline row per model input
    /// (DeepLIFT, integrated gradients): runs the model on the baseline, writes f(b) as the
    /// base values, and the extra `name` [N, T] = sums[n, t] − (f(x) − f(b)), where `sums` holds
    /// Σ attributions per (input row, target), row-major.
    pub fn report_against_baseline(
        &self,
        request: &Request<'_>,
        baseline: &[&[f32]],
        sums: &[f64],
        name: &str,
    ) -> Result<(), Error> {
        let (n, t) = (request.batch_size(), request.num_targets());
        let shapes: Vec<Vec<i64>> = request
            .inputs()
            .iter()
            .map(|x| {
                let mut shape = x.shape.to_vec();
                shape[0] = 1;
                shape
            })
            .collect();
        let views: Vec<TensorView> = shapes.iter().zip(baseline).map(|(s, d)| TensorView::new(s, d)).collect();
        let at_baseline = self.forward(&views)?;
        let at_baseline = at_baseline.data();
        let base = self.base_values()?;
        let residual = self.extra(name, &[n as i64, t as i64])?;
        for i in 0..n {
            for (j, &target) in request.targets(i).iter().enumerate() {
                let k = i * t + j;
                base[k] = at_baseline[target as usize];
                let gap = request.outputs().row(i)[target as usize] as f64 - base[k] as f64;
                residual[k] = (sums[k] - gap) as f32;
            }
        }
        Ok(())
    }

    /// A fact to report in the response.
    pub fn info(&self, key: &str, value: &str) -> Result<(), Error> {
        let f = self.host.result_info.ok_or_else(|| Error::internal("host has no result_info"))?;
        let (k, v) = (CString::new(key.replace('\0', " ")).unwrap(), CString::new(value.replace('\0', " ")).unwrap());
        let err = unsafe { f(self.raw, k.as_ptr(), v.as_ptr()) };
        if err.is_null() { Ok(()) } else { Err(self.take_error(err)) }
    }

    #[allow(clippy::mut_from_ref)] // callers hand each result out once (`hand_out_once`)
    fn result_slice(&self, err: *mut abi::ExdError, out: *mut abi::DLTensor) -> Result<&mut [f32], Error> {
        if !err.is_null() {
            return Err(self.take_error(err));
        }
        let t = unsafe { &*out };
        let view = unsafe { TensorView::from_dl(t)? };
        let len = view.data.len();
        if len == 0 {
            return Ok(&mut []);
        }
        Ok(unsafe { std::slice::from_raw_parts_mut(t.data as *mut f32, len) })
    }
}

fn unsupported_host() -> Error {
    Error::new(abi::EXD_UNIMPLEMENTED, "the host's ABI is older than 1.1 and cannot compute gradients or DeepLIFT")
}

/// A DLTensor that borrows a view (the host only reads it during the call).
/// The DLTensor of `view`, float32 values for model input `index` (declared as `declared`:
/// its element type and name): as it is for a float32 input, else converted (exactly, or
/// refused naming the input), with the converted elements the tensor points into.
fn convert_input(
    view: &TensorView<'_>,
    declared: Option<&(i32, String)>,
    index: usize,
    what: &str,
) -> Result<(abi::DLTensor, Option<typed::Elements>), Error> {
    let mut tensor = dl_borrow(view);
    let Some(&(element_type, ref name)) = declared.filter(|(t, _)| *t != 1) else { return Ok((tensor, None)) };
    let elements = typed::elements_of(view.data, element_type, &format!("{what} input {index} ({name})"))?;
    tensor.data = elements.as_ptr() as *mut _;
    tensor.dtype = abi::DLDataType::of_onnx(element_type)
        .ok_or_else(|| Error::internal(format!("model input {name} has element type {element_type}")))?;
    Ok((tensor, Some(elements)))
}

fn dl_borrow(v: &TensorView<'_>) -> abi::DLTensor {
    abi::DLTensor {
        data: v.data.as_ptr() as *mut _,
        device: abi::DLDevice { device_type: abi::kDLCPU, device_id: 0 },
        ndim: v.shape.len() as i32,
        dtype: abi::DLDataType::FLOAT32,
        shape: v.shape.as_ptr() as *mut i64,
        strides: std::ptr::null_mut(),
        byte_offset: 0,
    }
}

fn take_host_error(host: &abi::ExdHostApi, err: *mut abi::ExdError) -> Error {
    unsafe {
        let code = host.error_code.map(|f| f(err)).unwrap_or(abi::EXD_INTERNAL);
        let message = host.error_message.map(|f| CStr::from_ptr(f(err)).to_string_lossy().into_owned()).unwrap_or_default();
        if let Some(free) = host.error_free {
            free(err);
        }
        Error { code, message }
    }
}

// ----- What export_plugin! expands to -------------------------------------------------------

#[doc(hidden)]
pub mod __private {
    use super::*;

    /// The C-side description of a plugin, built once and kept for the life of the process.
    pub struct Statics {
        pub api: abi::ExdPluginApi,
        pub info: abi::ExdPluginInfo,
        _strings: Vec<CString>,
        _params: Vec<abi::ExdParamSpec>,
        _ranges: Vec<abi::ExdParamRange>,
        _numbers: Vec<Vec<f64>>,
        _integers: Vec<Vec<i64>>,
    }
    // SAFETY: read-only after construction; the raw pointers point into the owned vectors.
    unsafe impl Sync for Statics {}
    unsafe impl Send for Statics {}

    /// The host table, kept by the plugin (STATIC per the header).
    pub struct HostRef(pub &'static abi::ExdHostApi);
    unsafe impl Sync for HostRef {}
    unsafe impl Send for HostRef {}

    /// A live instance: the explainer and whether it panicked.
    pub struct Instance<T> {
        pub explainer: T,
        pub poisoned: AtomicBool,
    }

    pub fn build_statics(
        info: PluginInfo,
        create: Option<unsafe extern "C" fn(*mut *mut abi::ExdInstance) -> *mut abi::ExdError>,
        destroy: Option<unsafe extern "C" fn(*mut abi::ExdInstance)>,
        explain: Option<
            unsafe extern "C" fn(
                *mut abi::ExdInstance,
                *mut abi::ExdContext,
                *const abi::ExdExplainRequest,
            ) -> *mut abi::ExdError,
        >,
        estimate: Option<
            unsafe extern "C" fn(
                *mut abi::ExdInstance,
                *mut abi::ExdContext,
                *const abi::ExdExplainRequest,
                *mut abi::ExdCost,
            ) -> *mut abi::ExdError,
        >,
    ) -> Box<Statics> {
        let mut strings = Vec::new();
        let mut cstr = |s: &str| {
            let c = CString::new(s.replace('\0', " ")).unwrap();
            let p = c.as_ptr();
            strings.push(c);
            p
        };
        let mut numbers = Vec::new();
        let mut integers = Vec::new();
        let mut params = Vec::new();
        for p in &info.params {
            let mut default_value = abi::ExdParamValue::NONE;
            let mut required = 0;
            match &p.default {
                ParamDefault::Required => required = 1,
                ParamDefault::Optional => {}
                ParamDefault::Number(v) => {
                    default_value.kind = abi::EXD_PARAM_NUMBER;
                    default_value.number = *v;
                }
                ParamDefault::Integer(v) => {
                    default_value.kind = abi::EXD_PARAM_INTEGER;
                    default_value.integer = *v;
                }
                ParamDefault::Flag(v) => {
                    default_value.kind = abi::EXD_PARAM_FLAG;
                    default_value.integer = *v as i64;
                }
                ParamDefault::Text(v) => {
                    default_value.kind = abi::EXD_PARAM_TEXT;
                    default_value.text = cstr(v);
                }
                ParamDefault::Numbers(v) => {
                    default_value.kind = abi::EXD_PARAM_NUMBERS;
                    default_value.len = v.len();
                    numbers.push(v.clone());
                    default_value.numbers = numbers.last().unwrap().as_ptr();
                }
                ParamDefault::Integers(v) => {
                    default_value.kind = abi::EXD_PARAM_INTEGERS;
                    integers.push(v.clone());
                    default_value.integers = integers.last().unwrap().as_ptr();
                    default_value.len = v.len();
                }
            }
            params.push(abi::ExdParamSpec {
                name: cstr(p.name),
                description: cstr(p.description),
                kind: p.kind.code(),
                required,
                default_value,
            });
        }
        let ranges: Vec<abi::ExdParamRange> = info
            .params
            .iter()
            .map(|p| {
                let (min, max) = p.range.unwrap_or((f64::NEG_INFINITY, f64::INFINITY));
                abi::ExdParamRange { min, max, max_len: p.max_len.unwrap_or(0) }
            })
            .collect();
        let info_c = abi::ExdPluginInfo {
            header: abi::ExdStructHeader::current::<abi::ExdPluginInfo>(),
            name: cstr(info.name),
            version: cstr(info.version),
            description: cstr(info.description),
            flags: info.flags,
            num_params: params.len(),
            params: params.as_ptr(),
            param_ranges: ranges.as_ptr(),
        };
        let mut statics = Box::new(Statics {
            api: abi::ExdPluginApi {
                header: abi::ExdStructHeader::current::<abi::ExdPluginApi>(),
                info: std::ptr::null(),
                create,
                destroy,
                explain,
                estimate,
            },
            info: info_c,
            _strings: strings,
            _params: params,
            _ranges: ranges,
            _numbers: numbers,
            _integers: integers,
        });
        statics.api.info = &statics.info;
        statics
    }

    fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
        if let Some(s) = payload.downcast_ref::<&str>() {
            s.to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "unknown panic payload".to_string()
        }
    }

    fn host_error(host: &abi::ExdHostApi, code: ExdCode, message: &str) -> *mut abi::ExdError {
        let msg = CString::new(message.replace('\0', " ")).unwrap();
        match host.error_new {
            Some(f) => unsafe { f(code, msg.as_ptr()) },
            None => std::ptr::null_mut(),
        }
    }

    pub unsafe fn entry<T: Explainer>(
        host: *const abi::ExdHostApi,
        out: *mut *const abi::ExdPluginApi,
        host_slot: &'static OnceLock<HostRef>,
        statics: &'static OnceLock<Box<Statics>>,
        make: fn() -> Box<Statics>,
    ) -> *mut abi::ExdError {
        if host.is_null() || out.is_null() {
            return std::ptr::null_mut();
        }
        let host: &'static abi::ExdHostApi = unsafe { &*host };
        if host.header.abi_major != abi::ABI_MAJOR || host.header.struct_size < abi::v1_0_sizes::HOST_API {
            // Cannot even make an error object safely with an unknown table; refuse silently.
            return std::ptr::null_mut();
        }
        let _ = host_slot.set(HostRef(host));
        match catch_unwind(AssertUnwindSafe(|| statics.get_or_init(make).as_ref() as *const Statics)) {
            Ok(s) => {
                unsafe { *out = &(*s).api };
                std::ptr::null_mut()
            }
            Err(p) => host_error(host, abi::EXD_PLUGIN_PANICKED, &format!("plugin panicked while loading: {}", panic_message(p))),
        }
    }

    pub unsafe fn create<T: Explainer>(
        host_slot: &'static OnceLock<HostRef>,
        out: *mut *mut abi::ExdInstance,
    ) -> *mut abi::ExdError {
        let Some(HostRef(host)) = host_slot.get() else { return std::ptr::null_mut() };
        match catch_unwind(T::create) {
            Ok(Ok(explainer)) => {
                let boxed = Box::new(Instance { explainer, poisoned: AtomicBool::new(false) });
                unsafe { *out = Box::into_raw(boxed) as *mut abi::ExdInstance };
                std::ptr::null_mut()
            }
            Ok(Err(e)) => host_error(host, e.code, &e.message),
            Err(p) => host_error(host, abi::EXD_PLUGIN_PANICKED, &format!("plugin panicked in create: {}", panic_message(p))),
        }
    }

    pub unsafe fn destroy<T: Explainer>(instance: *mut abi::ExdInstance) {
        if instance.is_null() {
            return;
        }
        let boxed = unsafe { Box::from_raw(instance as *mut Instance<T>) };
        // A panicking Drop must not unwind into the host; the instance is gone either way.
        let _ = catch_unwind(AssertUnwindSafe(move || drop(boxed)));
    }

    pub unsafe fn explain<T: Explainer>(
        host_slot: &'static OnceLock<HostRef>,
        instance: *mut abi::ExdInstance,
        context: *mut abi::ExdContext,
        request: *const abi::ExdExplainRequest,
    ) -> *mut abi::ExdError {
        let Some(HostRef(host)) = host_slot.get() else { return std::ptr::null_mut() };
        if instance.is_null() || request.is_null() {
            return host_error(host, abi::EXD_INTERNAL, "explain called without an instance or request");
        }
        let inst = unsafe { &*(instance as *const Instance<T>) };
        if inst.poisoned.load(Ordering::Acquire) {
            return host_error(host, abi::EXD_PLUGIN_PANICKED, "instance is poisoned by an earlier panic");
        }
        let result = catch_unwind(AssertUnwindSafe(|| {
            let values = unsafe { InputValues::of(&*request) }?;
            let request = unsafe { Request::from_raw(&*request, &values) }?;
            let ctx = Context { host, raw: context, handed_out: Default::default() };
            inst.explainer.explain(&ctx, &request)
        }));
        match result {
            Ok(Ok(())) => std::ptr::null_mut(),
            Ok(Err(e)) => host_error(host, e.code, &e.message),
            Err(p) => {
                inst.poisoned.store(true, Ordering::Release);
                host_error(host, abi::EXD_PLUGIN_PANICKED, &format!("plugin panicked in explain: {}", panic_message(p)))
            }
        }
    }

    pub unsafe fn estimate<T: Explainer>(
        host_slot: &'static OnceLock<HostRef>,
        instance: *mut abi::ExdInstance,
        request: *const abi::ExdExplainRequest,
        out_cost: *mut abi::ExdCost,
    ) -> *mut abi::ExdError {
        let Some(HostRef(host)) = host_slot.get() else { return std::ptr::null_mut() };
        if instance.is_null() || request.is_null() || out_cost.is_null() {
            return host_error(host, abi::EXD_INTERNAL, "estimate called without an instance, request or cost");
        }
        let inst = unsafe { &*(instance as *const Instance<T>) };
        if inst.poisoned.load(Ordering::Acquire) {
            return host_error(host, abi::EXD_PLUGIN_PANICKED, "instance is poisoned by an earlier panic");
        }
        let raw_request = unsafe { &*request };
        let result = catch_unwind(AssertUnwindSafe(|| {
            let values = unsafe { InputValues::of(raw_request) }?;
            let request = unsafe { Request::from_raw(raw_request, &values) }?;
            inst.explainer.estimate(&request)
        }));
        match result {
            Ok(Ok(cost)) => {
                let driver = cost.driver.and_then(|name| {
                    let params = if raw_request.num_params == 0 || raw_request.params.is_null() {
                        &[][..]
                    } else {
                        unsafe { std::slice::from_raw_parts(raw_request.params, raw_request.num_params) }
                    };
                    params
                        .iter()
                        .position(|p| !p.name.is_null() && unsafe { CStr::from_ptr(p.name) }.to_bytes() == name.as_bytes())
                });
                let out = unsafe { &mut *out_cost };
                // Write only the fields the host's struct has (it may be older than this SDK).
                let size = out.header.struct_size as usize;
                let fits = |end: usize| size >= end;
                if fits(std::mem::offset_of!(abi::ExdCost, model_rows) + 8) {
                    out.model_rows = cost.model_rows;
                }
                if fits(std::mem::offset_of!(abi::ExdCost, scratch_bytes) + 8) {
                    out.scratch_bytes = cost.scratch_bytes;
                }
                if fits(std::mem::offset_of!(abi::ExdCost, driver) + 4) {
                    out.driver = driver.map_or(-1, |i| i as i32);
                }
                std::ptr::null_mut()
            }
            Ok(Err(e)) => host_error(host, e.code, &e.message),
            Err(p) => {
                inst.poisoned.store(true, Ordering::Release);
                host_error(host, abi::EXD_PLUGIN_PANICKED, &format!("plugin panicked in estimate: {}", panic_message(p)))
            }
        }
    }
}

/// Exports `$ty` (an [`Explainer`]) as an explaind plugin: defines the `explaind_plugin_v1`
/// entry symbol and the function table behind it. Use once per library.
#[macro_export]
macro_rules! export_plugin {
    ($ty:ty) => {
        const _: () = {
            use $crate::__private as p;
            static HOST: ::std::sync::OnceLock<p::HostRef> = ::std::sync::OnceLock::new();
            static STATICS: ::std::sync::OnceLock<::std::boxed::Box<p::Statics>> = ::std::sync::OnceLock::new();

            unsafe extern "C" fn create(out: *mut *mut $crate::abi::ExdInstance) -> *mut $crate::abi::ExdError {
                unsafe { p::create::<$ty>(&HOST, out) }
            }
            unsafe extern "C" fn destroy(instance: *mut $crate::abi::ExdInstance) {
                unsafe { p::destroy::<$ty>(instance) }
            }
            unsafe extern "C" fn explain(
                instance: *mut $crate::abi::ExdInstance,
                context: *mut $crate::abi::ExdContext,
                request: *const $crate::abi::ExdExplainRequest,
            ) -> *mut $crate::abi::ExdError {
                unsafe { p::explain::<$ty>(&HOST, instance, context, request) }
            }
            unsafe extern "C" fn estimate(
                instance: *mut $crate::abi::ExdInstance,
                _context: *mut $crate::abi::ExdContext,
                request: *const $crate::abi::ExdExplainRequest,
                out_cost: *mut $crate::abi::ExdCost,
            ) -> *mut $crate::abi::ExdError {
                unsafe { p::estimate::<$ty>(&HOST, instance, request, out_cost) }
            }
            fn make() -> ::std::boxed::Box<p::Statics> {
                p::build_statics(<$ty as $crate::Explainer>::info(), Some(create), Some(destroy), Some(explain), Some(estimate))
            }

            #[unsafe(no_mangle)]
            pub unsafe extern "C" fn explaind_plugin_v1(
                host: *const $crate::abi::ExdHostApi,
                out: *mut *const $crate::abi::ExdPluginApi,
            ) -> *mut $crate::abi::ExdError {
                unsafe { p::entry::<$ty>(host, out, &HOST, &STATICS, make) }
            }
        };
    };
}
