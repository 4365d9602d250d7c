//! The host's side of the ABI: the function table plugins call, and the per-call context.
//!
//! Every function here is `extern "C"`, checks its pointers, and never unwinds: the bodies
//! that could panic run inside `catch_unwind` and turn a panic into an `EXD_INTERNAL` error.

use crate::Failure;
use crate::explain::CancelToken;
use explaind_abi as abi;
use explaind_runtime::{Model, RunStats, Tensor, TensorView, element_type_name};
use ndarray::{ArrayD, ArrayViewD, IxDyn};
use std::collections::{BTreeMap, HashMap};
use std::ffi::{CStr, CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex};

// ----- Errors -----------------------------------------------------------------------------

/// What an `ExdError*` points to.
struct HostError {
    code: abi::ExdCode,
    message: CString,
}

pub(crate) fn new_error(code: abi::ExdCode, message: &str) -> *mut abi::ExdError {
    let message = CString::new(message.replace('\0', " ")).expect("NULs replaced");
    Box::into_raw(Box::new(HostError { code, message })) as *mut abi::ExdError
}

/// Takes ownership of an error a plugin returned.
pub(crate) fn take_error(err: *mut abi::ExdError) -> Failure {
    let boxed = unsafe { Box::from_raw(err as *mut HostError) };
    Failure { code: boxed.code, message: boxed.message.to_string_lossy().into_owned(), from_plugin: true }
}

unsafe extern "C" fn error_new(code: abi::ExdCode, message: *const c_char) -> *mut abi::ExdError {
    let text = if message.is_null() { "(no message)".into() } else { unsafe { CStr::from_ptr(message) }.to_string_lossy() };
    new_error(code, &text)
}

unsafe extern "C" fn error_free(error: *mut abi::ExdError) {
    if !error.is_null() {
        drop(unsafe { Box::from_raw(error as *mut HostError) });
    }
}

unsafe extern "C" fn error_code(error: *const abi::ExdError) -> abi::ExdCode {
    if error.is_null() { abi::EXD_OK } else { unsafe { (*(error as *const HostError)).code } }
}

unsafe extern "C" fn error_message(error: *const abi::ExdError) -> *const c_char {
    if error.is_null() { c"".as_ptr() } else { unsafe { (*(error as *const HostError)).message.as_ptr() } }
}

// ----- Tensors the host owns --------------------------------------------------------------

/// A float32 tensor whose `DLTensor` view is handed to a plugin. Boxed so that the view's
/// pointers stay put while the tensor lives.
pub(crate) struct OwnedTensor {
    pub data: Vec<f32>,
    pub shape: Vec<i64>,
    pub dl: abi::DLTensor,
}

// SAFETY: the raw pointers in `dl` point into the tensor's own vectors.
unsafe impl Send for OwnedTensor {}

impl OwnedTensor {
    pub fn new(shape: Vec<i64>, data: Vec<f32>) -> Box<Self> {
        let mut t = Box::new(OwnedTensor {
            data,
            shape,
            dl: abi::DLTensor {
                data: std::ptr::null_mut(),
                device: abi::DLDevice { device_type: abi::kDLCPU, device_id: 0 },
                ndim: 0,
                dtype: abi::DLDataType::FLOAT32,
                shape: std::ptr::null_mut(),
                strides: std::ptr::null_mut(),
                byte_offset: 0,
            },
        });
        t.dl.data = t.data.as_mut_ptr() as *mut _;
        t.dl.ndim = t.shape.len() as i32;
        t.dl.shape = t.shape.as_mut_ptr();
        t
    }

    pub fn zeros(shape: Vec<i64>) -> Box<Self> {
        let len = shape.iter().product::<i64>().max(0) as usize;
        Self::new(shape, vec![0.0; len])
    }

    pub fn into_array(self) -> ArrayD<f32> {
        let shape: Vec<usize> = self.shape.iter().map(|&d| d as usize).collect();
        ArrayD::from_shape_vec(IxDyn(&shape), self.data).expect("shape matches data")
    }
}

/// A read-only `DLTensor` over memory the host keeps alive for the call (inputs, outputs,
/// background). The shape vector is kept beside it.
pub(crate) struct BorrowedTensor {
    _shape: Box<[i64]>,
    pub dl: abi::DLTensor,
}

impl BorrowedTensor {
    /// # Safety of use
    /// The returned view borrows `array`'s memory; `array` must outlive every use of `dl`.
    pub fn of(array: &ArrayD<f32>) -> Self {
        assert!(array.is_standard_layout(), "host tensors are row-major");
        Self::raw(array.as_ptr().cast(), array.shape(), abi::DLDataType::FLOAT32)
    }

    /// [`BorrowedTensor::of`] for a tensor of any input type, with its DLPack dtype.
    pub fn of_tensor(tensor: &Tensor) -> Self {
        let dtype = abi::DLDataType::of_onnx(tensor.element_type()).expect("every input type has a DLPack type");
        Self::raw(tensor.as_ptr(), tensor.shape(), dtype)
    }

    fn raw(data: *const u8, shape: &[usize], dtype: abi::DLDataType) -> Self {
        let mut shape: Box<[i64]> = shape.iter().map(|&d| d as i64).collect();
        let dl = abi::DLTensor {
            data: data as *mut _,
            device: abi::DLDevice { device_type: abi::kDLCPU, device_id: 0 },
            ndim: shape.len() as i32,
            dtype,
            shape: shape.as_mut_ptr(),
            strides: std::ptr::null_mut(),
            byte_offset: 0,
        };
        BorrowedTensor { _shape: shape, dl }
    }
}

// ----- The per-call context ---------------------------------------------------------------

/// Results a plugin writes during one call.
#[derive(Default)]
pub(crate) struct Results {
    pub attributions: BTreeMap<usize, Box<OwnedTensor>>,
    pub base_values: Option<Box<OwnedTensor>>,
    pub extras: BTreeMap<String, Box<OwnedTensor>>,
    pub info: BTreeMap<String, String>,
}

/// What an `ExdContext*` points to during one `explain` call.
pub(crate) struct CallContext {
    pub plugin_name: String,
    /// The `ExdModelInfo` of the request, kept alive by the caller for the whole call.
    pub model_info: *const abi::ExdModelInfo,
    pub model: Arc<Model>,
    pub output_index: usize,
    pub output_row_size: usize,
    /// Shapes of the attribution tensors, per model input: [N, T, *input_shape_without_batch].
    pub attribution_shapes: Vec<Vec<i64>>,
    /// [N, T]
    pub base_value_shape: Vec<i64>,
    pub cancel: CancelToken,
    /// Compiles and runs gradient and DeepLIFT graphs (ABI 1.1 functions).
    pub engine: Arc<explaind_attribution::AttributionEngine>,
    /// The request's background, if it has one.
    pub background: Option<explaind_attribution::Background>,
    pub stats: Mutex<RunStats>,
    /// Scratch and forward-output tensors, by the address of their DLTensor.
    pub scratch: Mutex<HashMap<usize, Box<OwnedTensor>>>,
    /// Strings handed to the plugin (layer names), kept until the call ends.
    pub strings: Mutex<Vec<CString>>,
    /// Per model input, 1 when the request explains it (ABI 1.5 `explained_inputs`).
    pub explained_inputs: Vec<u8>,
    /// The model's graph view once the plugin asked for it (ABI 1.4), held until the call ends.
    pub graph: Mutex<Option<Arc<crate::graph_view::GraphView>>>,
    pub budget: Budget,
    pub results: Mutex<Results>,
}

/// What a request may still use: rows through the model and its compiled graphs, and bytes of
/// scratch tensors the plugin asked the host for.
pub(crate) struct Budget {
    limits: crate::RequestBudget,
    rows: std::sync::atomic::AtomicU64,
    bytes: std::sync::atomic::AtomicU64,
}

impl Budget {
    pub fn new(limits: crate::RequestBudget) -> Self {
        Budget { limits, rows: Default::default(), bytes: Default::default() }
    }

    /// Books `rows` more rows for `what`, or fails without booking them.
    fn charge(&self, rows: u64, what: &str) -> Result<(), Failure> {
        Self::book(&self.rows, self.limits.model_rows, rows).map_err(|total| {
            Failure::new(
                abi::EXD_RESOURCE_EXHAUSTED,
                format!(
                    "explainer budget: {what} would bring this request to {total} model rows, over the limit of {} \
                     (--max-model-rows-per-request)",
                    self.limits.model_rows
                ),
            )
        })
    }

    /// Books `bytes` of scratch memory for `what`, or fails without booking them.
    fn charge_bytes(&self, bytes: u64, what: &str) -> Result<(), Failure> {
        Self::book(&self.bytes, self.limits.scratch_bytes, bytes).map_err(|total| {
            Failure::new(
                abi::EXD_RESOURCE_EXHAUSTED,
                format!(
                    "explainer budget: {what} would bring this request to {total} bytes of scratch tensors, over the \
                     limit of {} (--max-request-bytes)",
                    self.limits.scratch_bytes
                ),
            )
        })
    }

    /// Gives back scratch bytes booked earlier (a released tensor).
    fn release_bytes(&self, bytes: u64) {
        self.bytes.fetch_sub(bytes, std::sync::atomic::Ordering::Relaxed);
    }

    /// Adds `amount` to `used` unless that passes `limit` (0: no limit); on refusal returns the
    /// total it would have reached.
    fn book(used: &std::sync::atomic::AtomicU64, limit: u64, amount: u64) -> Result<(), u128> {
        use std::sync::atomic::Ordering;
        let before = used.fetch_add(amount, Ordering::Relaxed);
        let total = before as u128 + amount as u128;
        if limit > 0 && total > limit as u128 {
            used.fetch_sub(amount, Ordering::Relaxed);
            return Err(total);
        }
        Ok(())
    }
}

impl CallContext {
    pub fn as_raw(&self) -> *mut abi::ExdContext {
        self as *const CallContext as *mut abi::ExdContext
    }
}

/// Runs `body` on the context behind `context`, turning a NULL context and any panic into an
/// error for the plugin.
fn with_context(context: *mut abi::ExdContext, body: impl FnOnce(&CallContext) -> Result<(), Failure>) -> *mut abi::ExdError {
    if context.is_null() {
        return new_error(abi::EXD_INVALID_ARGUMENT, "context is NULL");
    }
    let ctx = unsafe { &*(context as *const CallContext) };
    match catch_unwind(AssertUnwindSafe(|| body(ctx))) {
        Ok(Ok(())) => std::ptr::null_mut(),
        Ok(Err(f)) => new_error(f.code, &f.message),
        Err(_) => new_error(abi::EXD_INTERNAL, "internal error in the host (a bug: please report it)"),
    }
}

fn shape_from_raw(shape: *const i64, ndim: i32) -> Result<Vec<i64>, Failure> {
    if ndim < 0 || (ndim > 0 && shape.is_null()) {
        return Err(Failure::invalid_argument("shape is NULL or ndim is negative"));
    }
    let shape = if ndim == 0 { Vec::new() } else { unsafe { std::slice::from_raw_parts(shape, ndim as usize) }.to_vec() };
    if shape.iter().any(|&d| d < 0) {
        return Err(Failure::invalid_argument(format!("shape {shape:?} has a negative size")));
    }
    let elements = shape.iter().try_fold(1i64, |acc, &d| acc.checked_mul(d));
    match elements {
        Some(n) if n <= (1i64 << 34) => Ok(shape),
        _ => Err(Failure::new(abi::EXD_RESOURCE_EXHAUSTED, format!("tensor of shape {shape:?} is too large"))),
    }
}

/// Checks a plugin-supplied float32 tensor and views it as an array.
///
/// # Safety
/// `t` must point to a DLTensor whose data stays valid for `'a`.
unsafe fn view_input<'a>(t: &'a abi::DLTensor, what: &str) -> Result<ArrayViewD<'a, f32>, Failure> {
    if t.dtype != abi::DLDataType::FLOAT32 {
        return Err(Failure::invalid_argument(format!("{what}: element type must be float32")));
    }
    match unsafe { view_tensor(t, what) }? {
        TensorView::Float(view) => Ok(view),
        _ => unreachable!("the dtype is float32"),
    }
}

/// Checks a plugin-supplied tensor of any input type and views it.
///
/// # Safety
/// `t` must point to a DLTensor whose data stays valid for `'a`.
unsafe fn view_tensor<'a>(t: &'a abi::DLTensor, what: &str) -> Result<TensorView<'a>, Failure> {
    let element_type = t.dtype.to_onnx().ok_or_else(|| {
        Failure::invalid_argument(format!(
            "{what}: DLPack dtype (code {}, bits {}, lanes {}) is not an input type",
            t.dtype.code, t.dtype.bits, t.dtype.lanes
        ))
    })?;
    if t.device.device_type != abi::kDLCPU {
        return Err(Failure::invalid_argument(format!("{what}: tensors must be in CPU memory in ABI 1.x")));
    }
    if !t.strides.is_null() {
        return Err(Failure::invalid_argument(format!("{what}: strided tensors are not supported; pass dense row-major data")));
    }
    let shape = shape_from_raw(t.shape, t.ndim)?;
    if shape.is_empty() {
        return Err(Failure::invalid_argument(format!("{what}: needs a batch axis")));
    }
    let dims: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
    let base = if t.data.is_null() { std::ptr::null() } else { unsafe { (t.data as *const u8).add(t.byte_offset as usize) } };
    // SAFETY: the plugin vouches for the data (the function's contract); the view checks
    // NULL, alignment and bool bytes itself.
    unsafe { TensorView::from_raw(element_type, base, &dims) }.map_err(|e| Failure::invalid_argument(format!("{what}: {e}")))
}

// ----- Host functions ---------------------------------------------------------------------

unsafe extern "C" fn log(context: *mut abi::ExdContext, level: abi::ExdLogLevel, message: *const c_char) {
    if message.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let text = unsafe { CStr::from_ptr(message) }.to_string_lossy();
        let plugin =
            if context.is_null() { "?".to_string() } else { unsafe { &*(context as *const CallContext) }.plugin_name.clone() };
        match level {
            abi::EXD_LOG_ERROR => tracing::error!(plugin, "{text}"),
            abi::EXD_LOG_WARN => tracing::warn!(plugin, "{text}"),
            abi::EXD_LOG_INFO => tracing::info!(plugin, "{text}"),
            _ => tracing::debug!(plugin, "{text}"),
        }
    }));
}

unsafe extern "C" fn is_cancelled(context: *mut abi::ExdContext) -> i32 {
    if context.is_null() {
        return 0;
    }
    unsafe { &*(context as *const CallContext) }.cancel.is_cancelled() as i32
}

unsafe extern "C" fn model_info(context: *mut abi::ExdContext) -> *const abi::ExdModelInfo {
    if context.is_null() {
        return std::ptr::null();
    }
    unsafe { &*(context as *const CallContext) }.model_info
}

/// Checks `num_inputs` DLTensors from a plugin against the model and views them as arrays
/// with a common batch size.
///
/// # Safety
/// `inputs` must point to `num_inputs` DLTensors valid for `'a`.
unsafe fn model_inputs<'a>(
    ctx: &CallContext,
    inputs: *const abi::DLTensor,
    num_inputs: usize,
    what: &str,
) -> Result<Vec<TensorView<'a>>, Failure> {
    if num_inputs > 0 && inputs.is_null() {
        return Err(Failure::invalid_argument(format!("{what}: inputs is NULL")));
    }
    if num_inputs != ctx.model.inputs.len() {
        return Err(Failure::invalid_argument(format!(
            "{what}: the model takes {} inputs, got {num_inputs}",
            ctx.model.inputs.len()
        )));
    }
    let raw = unsafe { std::slice::from_raw_parts(inputs, num_inputs) };
    let views = raw
        .iter()
        .enumerate()
        .map(|(i, t)| unsafe { view_tensor(t, &format!("{what} input {i}")) })
        .collect::<Result<Vec<_>, _>>()?;
    for (i, (view, spec)) in views.iter().zip(&ctx.model.inputs).enumerate() {
        if view.element_type() != spec.element_type {
            return Err(Failure::invalid_argument(format!(
                "{what} input {i}: element type {}, but model input {:?} takes {}",
                element_type_name(view.element_type()),
                spec.name,
                element_type_name(spec.element_type)
            )));
        }
    }
    let rows = views[0].rows();
    if views.iter().any(|v| v.shape().first() != Some(&rows)) {
        return Err(Failure::invalid_argument(format!("{what}: inputs have different batch sizes")));
    }
    Ok(views)
}

/// Hands `arrays` to the plugin as host-owned scratch tensors, written to `out[0..]`. They count
/// against the request's scratch bytes until the plugin releases them.
fn hand_out(ctx: &CallContext, arrays: Vec<ArrayD<f32>>, out: *mut *mut abi::DLTensor) -> Result<(), Failure> {
    let bytes = arrays.iter().map(|a| a.len() as u64 * 4).sum();
    ctx.budget.charge_bytes(bytes, "the tensors handed back")?;
    let mut scratch = ctx.scratch.lock().unwrap();
    for (i, array) in arrays.into_iter().enumerate() {
        let shape: Vec<i64> = array.shape().iter().map(|&d| d as i64).collect();
        let data = array.as_standard_layout().into_owned().into_raw_vec_and_offset().0;
        let mut tensor = OwnedTensor::new(shape, data);
        let ptr = &mut tensor.dl as *mut abi::DLTensor;
        scratch.insert(ptr as usize, tensor);
        unsafe { *out.add(i) = ptr };
    }
    Ok(())
}

fn attribution_failure(ctx: &CallContext, e: explaind_attribution::AttributionError) -> Failure {
    use explaind_attribution::AttributionError as E;
    match e {
        E::Unsupported { .. } => Failure::new(abi::EXD_UNIMPLEMENTED, e.to_string()),
        E::InvalidArgument(m) => Failure::invalid_argument(m),
        E::Internal(m) => Failure::internal(m),
        E::Cancelled => ctx.cancel.failure().unwrap_or_else(|| Failure::new(abi::EXD_CANCELLED, "cancelled")),
    }
}

/// Views a seeds tensor and checks its trailing size is the explained output's row.
unsafe fn seeds_view<'a>(ctx: &CallContext, seeds: *const abi::DLTensor, what: &str) -> Result<ArrayViewD<'a, f32>, Failure> {
    if seeds.is_null() {
        return Err(Failure::invalid_argument(format!("{what}: seeds is NULL")));
    }
    let view = unsafe { view_input(&*seeds, &format!("{what} seeds")) }?;
    let trailing: usize = view.shape().last().copied().unwrap_or(0);
    if trailing != ctx.output_row_size {
        return Err(Failure::invalid_argument(format!(
            "{what}: seeds end in {trailing} elements; the explained output's row has {}",
            ctx.output_row_size
        )));
    }
    Ok(view)
}

/// The checks every host function that runs the model makes first, in one order: each
/// output pointer it writes is given, the request is not cancelled, and the inputs are the
/// model's (count, type, shape, one batch size). Returns the input views.
///
/// # Safety
/// `inputs` must point to `num_inputs` DLTensors valid for `'a`.
unsafe fn model_call<'a>(
    ctx: &CallContext,
    what: &str,
    outputs: &[(bool, &str)],
    inputs: *const abi::DLTensor,
    num_inputs: usize,
) -> Result<Vec<TensorView<'a>>, Failure> {
    if let Some((_, name)) = outputs.iter().find(|(is_null, _)| *is_null) {
        return Err(Failure::invalid_argument(format!("{what}: {name} is NULL")));
    }
    if let Some(f) = ctx.cancel.failure() {
        return Err(f);
    }
    unsafe { model_inputs(ctx, inputs, num_inputs, what) }
}

/// The float32 arrays of `views`: the attribution graphs differentiate with respect to every
/// model input, so they take models whose inputs are all float32.
fn float_inputs<'a>(ctx: &CallContext, views: Vec<TensorView<'a>>, what: &str) -> Result<Vec<ArrayViewD<'a, f32>>, Failure> {
    views
        .into_iter()
        .zip(&ctx.model.inputs)
        .map(|(view, spec)| match view {
            TensorView::Float(array) => Ok(array),
            other => Err(Failure::failed_precondition(format!(
                "{what}: model input {:?} is {}; gradients and DeepLIFT need float32 inputs",
                spec.name,
                element_type_name(other.element_type())
            ))),
        })
        .collect()
}

/// [`model_call`] for the functions that also take seeds: the seeds' view, one seed row per
/// input row (the explained output's row size last, checked by [`seeds_view`]).
///
/// # Safety
/// As [`model_call`]; `seeds` must be NULL or a DLTensor valid for `'a`.
unsafe fn seeded_call<'a>(
    ctx: &CallContext,
    what: &str,
    outputs: &[(bool, &str)],
    inputs: *const abi::DLTensor,
    num_inputs: usize,
    seeds: *const abi::DLTensor,
) -> Result<(Vec<ArrayViewD<'a, f32>>, ArrayViewD<'a, f32>), Failure> {
    let views = float_inputs(ctx, unsafe { model_call(ctx, what, outputs, inputs, num_inputs) }?, what)?;
    let seeds = unsafe { seeds_view(ctx, seeds, what) }?;
    if seeds.shape()[0] != views[0].shape()[0] {
        return Err(Failure::invalid_argument(format!("{what}: seeds need one row per input row")));
    }
    Ok((views, seeds))
}

unsafe extern "C" fn gradient(
    context: *mut abi::ExdContext,
    inputs: *const abi::DLTensor,
    num_inputs: usize,
    seeds: *const abi::DLTensor,
    out_gradients: *mut *mut abi::DLTensor,
) -> *mut abi::ExdError {
    with_context(context, |ctx| {
        let outputs = [(out_gradients.is_null(), "out_gradients")];
        let (views, seeds) = unsafe { seeded_call(ctx, "gradient", &outputs, inputs, num_inputs, seeds) }?;
        ctx.budget.charge(views[0].shape()[0] as u64, "gradient")?;
        let (grads, stats) =
            ctx.engine.gradient(&ctx.model, ctx.output_index, &views, seeds).map_err(|e| attribution_failure(ctx, e))?;
        ctx.stats.lock().unwrap().add(stats);
        hand_out(ctx, grads, out_gradients)?;
        Ok(())
    })
}

unsafe extern "C" fn deeplift_multipliers(
    context: *mut abi::ExdContext,
    inputs: *const abi::DLTensor,
    references: *const abi::DLTensor,
    num_inputs: usize,
    seeds: *const abi::DLTensor,
    out_multipliers: *mut *mut abi::DLTensor,
) -> *mut abi::ExdError {
    with_context(context, |ctx| {
        let outputs = [(out_multipliers.is_null(), "out_multipliers")];
        let (views, seeds) = unsafe { seeded_call(ctx, "deeplift_multipliers", &outputs, inputs, num_inputs, seeds) }?;
        let what = "deeplift_multipliers references";
        let refs = float_inputs(ctx, unsafe { model_inputs(ctx, references, num_inputs, what) }?, what)?;
        let rows = views[0].shape()[0];
        if refs[0].shape()[0] != rows {
            return Err(Failure::invalid_argument("deeplift_multipliers: inputs, references and seeds need the same rows"));
        }
        ctx.budget.charge(rows as u64, "deeplift_multipliers")?;
        let (m, stats) = ctx
            .engine
            .deeplift_pairs(&ctx.model, ctx.output_index, &views, &refs, seeds)
            .map_err(|e| attribution_failure(ctx, e))?;
        ctx.stats.lock().unwrap().add(stats);
        hand_out(ctx, m, out_multipliers)?;
        Ok(())
    })
}

unsafe extern "C" fn deep_shap(
    context: *mut abi::ExdContext,
    inputs: *const abi::DLTensor,
    num_inputs: usize,
    seeds: *const abi::DLTensor,
    out_attributions: *mut *mut abi::DLTensor,
    out_expected: *mut *mut abi::DLTensor,
) -> *mut abi::ExdError {
    with_context(context, |ctx| {
        let outputs = [(out_attributions.is_null(), "out_attributions")];
        let (views, seeds) = unsafe { seeded_call(ctx, "deep_shap", &outputs, inputs, num_inputs, seeds) }?;
        let background = ctx.background.as_ref().ok_or_else(|| {
            Failure::failed_precondition("background: Deep SHAP needs a background set, and the request has none")
        })?;
        if seeds.ndim() != 3 {
            return Err(Failure::invalid_argument("deep_shap: seeds must be [N, S, output_row_size] for N input rows"));
        }
        let background_rows = background.rows.first().map(|r| r.shape()[0]).unwrap_or(0) as u64;
        ctx.budget.charge(
            (seeds.shape()[0] as u64).saturating_mul(seeds.shape()[1] as u64).saturating_mul(background_rows),
            "deep_shap",
        )?;
        let cancelled = || ctx.cancel.is_cancelled();
        let result = ctx
            .engine
            .deep_shap(&ctx.model, ctx.output_index, &views, seeds, background, &cancelled)
            .map_err(|e| attribution_failure(ctx, e))?;
        ctx.stats.lock().unwrap().add(result.stats);
        hand_out(ctx, result.attributions, out_attributions)?;
        if !out_expected.is_null() {
            hand_out(ctx, vec![result.expected.into_dyn()], out_expected)?;
        }
        Ok(())
    })
}

unsafe extern "C" fn layer_gradient(
    context: *mut abi::ExdContext,
    inputs: *const abi::DLTensor,
    num_inputs: usize,
    seeds: *const abi::DLTensor,
    layer: *const c_char,
    out_layer: *mut *const c_char,
    out_activation: *mut *mut abi::DLTensor,
    out_gradient: *mut *mut abi::DLTensor,
) -> *mut abi::ExdError {
    with_context(context, |ctx| {
        let outputs = [(out_activation.is_null(), "out_activation"), (out_gradient.is_null(), "out_gradient")];
        let (views, seeds) = unsafe { seeded_call(ctx, "layer_gradient", &outputs, inputs, num_inputs, seeds) }?;
        let requested = if layer.is_null() { None } else { Some(unsafe { CStr::from_ptr(layer) }.to_string_lossy()) };
        let layer = ctx.engine.resolve_layer(&ctx.model, requested.as_deref()).map_err(|e| attribution_failure(ctx, e))?;
        ctx.budget.charge(views[0].shape()[0] as u64, "layer_gradient")?;
        let (activation, gradient, stats) = ctx
            .engine
            .layer_gradient(&ctx.model, ctx.output_index, &layer, &views, seeds)
            .map_err(|e| attribution_failure(ctx, e))?;
        ctx.stats.lock().unwrap().add(stats);
        hand_out(ctx, vec![activation], out_activation)?;
        hand_out(ctx, vec![gradient], out_gradient)?;
        unsafe { hand_out_name(ctx, layer, out_layer) };
        Ok(())
    })
}

/// Writes `name` to `*out` (when `out` is not NULL), kept alive until the call ends.
///
/// # Safety
/// `out` must be NULL or valid for a write.
unsafe fn hand_out_name(ctx: &CallContext, name: String, out: *mut *const c_char) {
    if out.is_null() {
        return;
    }
    let name = CString::new(name).expect("ONNX names hold no NUL");
    let mut strings = ctx.strings.lock().unwrap();
    // The CString's buffer stays put when the Vec grows: the pointer lives until the call ends.
    unsafe { *out = name.as_ptr() };
    strings.push(name);
}

/// The layer an ABI 1.5 layer function names, or the default: the embedding of the first
/// explained integer input (token ids), else the last 2-D convolution's output.
///
/// # Safety
/// `layer` must be NULL or a NUL-terminated string.
unsafe fn layer_of(ctx: &CallContext, layer: *const c_char) -> Result<String, Failure> {
    let requested = if layer.is_null() { None } else { Some(unsafe { CStr::from_ptr(layer) }.to_string_lossy()) };
    let failure = |e| attribution_failure(ctx, e);
    match requested.filter(|l| !l.is_empty()) {
        Some(name) => ctx.engine.check_tensor(&ctx.model, &name).map(|()| name.into_owned()).map_err(failure),
        None => {
            let explained_integer = ctx
                .model
                .inputs
                .iter()
                .zip(&ctx.explained_inputs)
                .find(|(spec, explained)| **explained == 1 && spec.element_type != explaind_runtime::FLOAT);
            match explained_integer {
                Some((spec, _)) => ctx.engine.embedding_of(&ctx.model, &spec.name).map_err(failure),
                None => ctx.engine.resolve_layer(&ctx.model, None).map_err(failure),
            }
        }
    }
}

unsafe extern "C" fn layer_activation(
    context: *mut abi::ExdContext,
    inputs: *const abi::DLTensor,
    num_inputs: usize,
    layer: *const c_char,
    out_layer: *mut *const c_char,
    out_activation: *mut *mut abi::DLTensor,
) -> *mut abi::ExdError {
    with_context(context, |ctx| {
        let outputs = [(out_activation.is_null(), "out_activation")];
        let views = unsafe { model_call(ctx, "layer_activation", &outputs, inputs, num_inputs) }?;
        let layer = unsafe { layer_of(ctx, layer) }?;
        ctx.budget.charge(views[0].rows() as u64, "layer_activation")?;
        let (activation, stats) =
            ctx.engine.layer_activation(&ctx.model, &layer, &views).map_err(|e| attribution_failure(ctx, e))?;
        ctx.stats.lock().unwrap().add(stats);
        hand_out(ctx, vec![activation], out_activation)?;
        unsafe { hand_out_name(ctx, layer, out_layer) };
        Ok(())
    })
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn layer_deeplift_at(
    context: *mut abi::ExdContext,
    inputs: *const abi::DLTensor,
    num_inputs: usize,
    layer: *const c_char,
    layer_values: *const abi::DLTensor,
    layer_references: *const abi::DLTensor,
    seeds: *const abi::DLTensor,
    out_layer: *mut *const c_char,
    out_multipliers: *mut *mut abi::DLTensor,
) -> *mut abi::ExdError {
    with_context(context, |ctx| {
        let what = "layer_deeplift_at";
        let views = unsafe { model_call(ctx, what, &[(out_multipliers.is_null(), "out_multipliers")], inputs, num_inputs) }?;
        let (values, references) = unsafe { layer_pair(what, layer_values, layer_references) }?;
        let seeds = unsafe { seeds_view(ctx, seeds, what) }?;
        let rows = views[0].rows();
        if values.shape()[0] != rows || seeds.shape()[0] != rows {
            return Err(Failure::invalid_argument(format!("{what}: inputs, layer values and seeds need the same rows")));
        }
        let layer = unsafe { layer_of(ctx, layer) }?;
        ctx.budget.charge(rows as u64, what)?;
        let (multipliers, stats) = ctx
            .engine
            .layer_deeplift_at(&ctx.model, ctx.output_index, &layer, &views, values.view(), references, seeds)
            .map_err(|e| attribution_failure(ctx, e))?;
        ctx.stats.lock().unwrap().add(stats);
        if multipliers.shape() != values.shape() {
            return Err(Failure::invalid_argument(format!(
                "{what}: layer values have shape {:?}, and layer {layer:?} has shape {:?} for these inputs",
                values.shape(),
                multipliers.shape()
            )));
        }
        hand_out(ctx, vec![multipliers], out_multipliers)?;
        unsafe { hand_out_name(ctx, layer, out_layer) };
        Ok(())
    })
}

/// The layer values and their references of `layer_deeplift_at`, checked to be float32 of one
/// shape.
///
/// # Safety
/// Each pointer must be NULL or a DLTensor valid for `'a`.
unsafe fn layer_pair<'a>(
    what: &str,
    values: *const abi::DLTensor,
    references: *const abi::DLTensor,
) -> Result<(ArrayViewD<'a, f32>, ArrayViewD<'a, f32>), Failure> {
    if values.is_null() || references.is_null() {
        return Err(Failure::invalid_argument(format!("{what}: layer_values and layer_references must not be NULL")));
    }
    let values = unsafe { view_input(&*values, &format!("{what} layer_values")) }?;
    let references = unsafe { view_input(&*references, &format!("{what} layer_references")) }?;
    if values.shape() != references.shape() {
        return Err(Failure::invalid_argument(format!(
            "{what}: layer_values {:?} and layer_references {:?} differ in shape",
            values.shape(),
            references.shape()
        )));
    }
    Ok((values, references))
}

#[allow(clippy::too_many_arguments)]
unsafe extern "C" fn layer_gradient_at(
    context: *mut abi::ExdContext,
    inputs: *const abi::DLTensor,
    num_inputs: usize,
    layer: *const c_char,
    layer_values: *const abi::DLTensor,
    seeds: *const abi::DLTensor,
    out_layer: *mut *const c_char,
    out_gradient: *mut *mut abi::DLTensor,
) -> *mut abi::ExdError {
    with_context(context, |ctx| {
        let what = "layer_gradient_at";
        let views = unsafe { model_call(ctx, what, &[(out_gradient.is_null(), "out_gradient")], inputs, num_inputs) }?;
        if layer_values.is_null() {
            return Err(Failure::invalid_argument(format!("{what}: layer_values is NULL")));
        }
        let values = unsafe { view_input(&*layer_values, &format!("{what} layer_values")) }?;
        let seeds = unsafe { seeds_view(ctx, seeds, what) }?;
        let rows = views[0].rows();
        if values.shape()[0] != rows || seeds.shape()[0] != rows {
            return Err(Failure::invalid_argument(format!("{what}: inputs, layer_values and seeds need the same rows")));
        }
        let layer = unsafe { layer_of(ctx, layer) }?;
        ctx.budget.charge(rows as u64, what)?;
        let (gradient, stats) = ctx
            .engine
            .layer_gradient_at(&ctx.model, ctx.output_index, &layer, &views, values.view(), seeds)
            .map_err(|e| attribution_failure(ctx, e))?;
        ctx.stats.lock().unwrap().add(stats);
        if gradient.shape() != values.shape() {
            return Err(Failure::invalid_argument(format!(
                "{what}: layer_values have shape {:?}, and layer {layer:?} has shape {:?} for these inputs",
                values.shape(),
                gradient.shape()
            )));
        }
        hand_out(ctx, vec![gradient], out_gradient)?;
        unsafe { hand_out_name(ctx, layer, out_layer) };
        Ok(())
    })
}

unsafe extern "C" fn forward(
    context: *mut abi::ExdContext,
    inputs: *const abi::DLTensor,
    num_inputs: usize,
    out_output: *mut *mut abi::DLTensor,
) -> *mut abi::ExdError {
    with_context(context, |ctx| {
        let views = unsafe { model_call(ctx, "forward", &[(out_output.is_null(), "out_output")], inputs, num_inputs) }?;
        let rows = views[0].rows();
        ctx.budget.charge(rows as u64, "forward")?;
        // In the model's own batch size, asking for cancellation between batches: a plugin may
        // hand over any number of rows at once.
        let step = ctx.model.max_batch_rows().max(1);
        let mut parts = Vec::with_capacity(rows.div_ceil(step));
        for start in (0..rows.max(1)).step_by(step) {
            if let Some(f) = ctx.cancel.failure() {
                return Err(f);
            }
            let end = (start + step).min(rows);
            let batch: Vec<TensorView> = views.iter().map(|v| v.slice_rows(start..end)).collect();
            let (outputs, stats) =
                ctx.model.run_tensors(&batch).map_err(|e| Failure::invalid_argument(format!("forward: {e}")))?;
            ctx.stats.lock().unwrap().add(stats);
            parts.push(outputs.into_iter().nth(ctx.output_index).expect("output index checked at request time"));
        }
        let output = match parts.len() {
            1 => parts.pop().expect("one part"),
            _ => {
                let part_views: Vec<_> = parts.iter().map(|p| p.view()).collect();
                ndarray::concatenate(ndarray::Axis(0), &part_views)
                    .map_err(|e| Failure::internal(format!("forward: the model's output batches do not line up: {e}")))?
            }
        };
        // A NaN here would only come back as NaN attributions (or a solver that cannot
        // converge); say where it started instead.
        let name = &ctx.model.outputs[ctx.output_index].name;
        crate::finite::require_finite(&format!("outputs.{name}"), output.view()).map_err(|f| {
            Failure::invalid_argument(format!(
                "{} (on a row the explainer built from the request's inputs and background)",
                f.message
            ))
        })?;
        if output.len() != rows * ctx.output_row_size {
            return Err(Failure::internal(format!(
                "forward: the model's output has shape {:?} for {rows} rows, not rows of {} elements as for the request",
                output.shape(),
                ctx.output_row_size
            )));
        }
        let rows_shape = output.as_standard_layout().into_owned().into_shape_with_order(IxDyn(&[rows, ctx.output_row_size]));
        hand_out(ctx, vec![rows_shape.expect("length checked above")], out_output)?;
        Ok(())
    })
}

unsafe extern "C" fn tensor_alloc(
    context: *mut abi::ExdContext,
    shape: *const i64,
    ndim: i32,
    out: *mut *mut abi::DLTensor,
) -> *mut abi::ExdError {
    with_context(context, |ctx| {
        if out.is_null() {
            return Err(Failure::invalid_argument("tensor_alloc: out is NULL"));
        }
        let shape = shape_from_raw(shape, ndim)?;
        ctx.budget.charge_bytes(tensor_bytes(&shape), "tensor_alloc")?;
        let mut tensor = OwnedTensor::zeros(shape);
        let ptr = &mut tensor.dl as *mut abi::DLTensor;
        ctx.scratch.lock().unwrap().insert(ptr as usize, tensor);
        unsafe { *out = ptr };
        Ok(())
    })
}

unsafe extern "C" fn tensor_release(context: *mut abi::ExdContext, tensor: *mut abi::DLTensor) {
    if context.is_null() || tensor.is_null() {
        return;
    }
    let ctx = unsafe { &*(context as *const CallContext) };
    let _ = catch_unwind(AssertUnwindSafe(|| {
        if let Some(released) = ctx.scratch.lock().unwrap().remove(&(tensor as usize)) {
            ctx.budget.release_bytes(tensor_bytes(&released.shape));
        }
    }));
}

/// Bytes of a float32 tensor of `shape` (already checked by `shape_from_raw`).
fn tensor_bytes(shape: &[i64]) -> u64 {
    shape.iter().map(|&d| d as u64).product::<u64>().saturating_mul(4)
}

/// Hands out the result tensor in `slot`, allocating it zero-filled on first use.
fn result_slot(slot: &mut Option<Box<OwnedTensor>>, shape: &[i64], out: *mut *mut abi::DLTensor) {
    let tensor = slot.get_or_insert_with(|| OwnedTensor::zeros(shape.to_vec()));
    unsafe { *out = &mut tensor.dl };
}

unsafe extern "C" fn result_attributions(
    context: *mut abi::ExdContext,
    input_index: usize,
    out: *mut *mut abi::DLTensor,
) -> *mut abi::ExdError {
    with_context(context, |ctx| {
        if out.is_null() {
            return Err(Failure::invalid_argument("result_attributions: out is NULL"));
        }
        let shape = ctx.attribution_shapes.get(input_index).ok_or_else(|| {
            Failure::invalid_argument(format!(
                "result_attributions: input_index {input_index} is out of range (the model has {} inputs)",
                ctx.attribution_shapes.len()
            ))
        })?;
        let mut results = ctx.results.lock().unwrap();
        let mut slot = results.attributions.remove(&input_index);
        result_slot(&mut slot, shape, out);
        results.attributions.insert(input_index, slot.expect("filled"));
        Ok(())
    })
}

unsafe extern "C" fn result_base_values(context: *mut abi::ExdContext, out: *mut *mut abi::DLTensor) -> *mut abi::ExdError {
    with_context(context, |ctx| {
        if out.is_null() {
            return Err(Failure::invalid_argument("result_base_values: out is NULL"));
        }
        let mut results = ctx.results.lock().unwrap();
        result_slot(&mut results.base_values, &ctx.base_value_shape, out);
        Ok(())
    })
}

unsafe extern "C" fn result_extra(
    context: *mut abi::ExdContext,
    name: *const c_char,
    shape: *const i64,
    ndim: i32,
    out: *mut *mut abi::DLTensor,
) -> *mut abi::ExdError {
    with_context(context, |ctx| {
        if out.is_null() || name.is_null() {
            return Err(Failure::invalid_argument("result_extra: name or out is NULL"));
        }
        let name = unsafe { CStr::from_ptr(name) }.to_string_lossy().into_owned();
        let shape = shape_from_raw(shape, ndim)?;
        let mut results = ctx.results.lock().unwrap();
        if !results.extras.contains_key(&name) {
            ctx.budget.charge_bytes(tensor_bytes(&shape), &format!("result_extra {name:?}"))?;
        }
        let tensor = results.extras.entry(name.clone()).or_insert_with(|| OwnedTensor::zeros(shape.clone()));
        if tensor.shape != shape {
            return Err(Failure::invalid_argument(format!(
                "result_extra: {name:?} was first allocated with shape {:?}, now asked for {shape:?}",
                tensor.shape
            )));
        }
        unsafe { *out = &mut tensor.dl };
        Ok(())
    })
}

unsafe extern "C" fn result_info(context: *mut abi::ExdContext, key: *const c_char, value: *const c_char) -> *mut abi::ExdError {
    with_context(context, |ctx| {
        if key.is_null() || value.is_null() {
            return Err(Failure::invalid_argument("result_info: key or value is NULL"));
        }
        let key = unsafe { CStr::from_ptr(key) }.to_string_lossy().into_owned();
        let value = unsafe { CStr::from_ptr(value) }.to_string_lossy().into_owned();
        ctx.results.lock().unwrap().info.insert(key, value);
        Ok(())
    })
}

unsafe extern "C" fn model_graph(context: *mut abi::ExdContext, out_graph: *mut *const abi::ExdGraph) -> *mut abi::ExdError {
    with_context(context, |ctx| {
        if out_graph.is_null() {
            return Err(Failure::invalid_argument("model_graph: out_graph must not be NULL"));
        }
        let mut held = ctx.graph.lock().unwrap();
        if held.is_none() {
            let path = ctx.model.dir.join("model.onnx");
            let view = crate::graph_view::view_of(&ctx.model.sha256, &path)
                .map_err(|e| Failure::new(abi::EXD_INTERNAL, format!("model_graph: {e}")))?;
            *held = Some(view);
        }
        unsafe { *out_graph = held.as_ref().expect("set above").graph() };
        Ok(())
    })
}

/// The table every plugin receives. STATIC: it lives for the whole process.
pub static HOST_API: abi::ExdHostApi = abi::ExdHostApi {
    header: abi::ExdStructHeader::current::<abi::ExdHostApi>(),
    error_new: Some(error_new),
    error_free: Some(error_free),
    error_code: Some(error_code),
    error_message: Some(error_message),
    log: Some(log),
    is_cancelled: Some(is_cancelled),
    model_info: Some(model_info),
    forward: Some(forward),
    tensor_alloc: Some(tensor_alloc),
    tensor_release: Some(tensor_release),
    result_attributions: Some(result_attributions),
    result_base_values: Some(result_base_values),
    result_extra: Some(result_extra),
    result_info: Some(result_info),
    gradient: Some(gradient),
    deeplift_multipliers: Some(deeplift_multipliers),
    deep_shap: Some(deep_shap),
    layer_gradient: Some(layer_gradient),
    model_graph: Some(model_graph),
    layer_activation: Some(layer_activation),
    layer_gradient_at: Some(layer_gradient_at),
    layer_deeplift_at: Some(layer_deeplift_at),
};
