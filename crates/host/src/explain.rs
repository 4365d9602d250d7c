//! One explain request, from validated inputs to collected results.

use crate::Failure;
use crate::host_api::{BorrowedTensor, CallContext, Results};
use crate::plugin::{Plugin, kind_name};
use explaind_abi as abi;
use explaind_runtime::{Model, RunStats, Tensor, TensorView};
use ndarray::{Array2, ArrayD, ArrayViewD};
use std::collections::BTreeMap;
use std::ffi::CString;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A parameter value as a request gives it (before conversion to the declared kind).
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    Number(f64),
    Integer(i64),
    Flag(bool),
    Text(String),
    Numbers(Vec<f64>),
    Integers(Vec<i64>),
}

impl ParamValue {
    pub fn kind(&self) -> abi::ExdParamKind {
        match self {
            ParamValue::Number(_) => abi::EXD_PARAM_NUMBER,
            ParamValue::Integer(_) => abi::EXD_PARAM_INTEGER,
            ParamValue::Flag(_) => abi::EXD_PARAM_FLAG,
            ParamValue::Text(_) => abi::EXD_PARAM_TEXT,
            ParamValue::Numbers(_) => abi::EXD_PARAM_NUMBERS,
            ParamValue::Integers(_) => abi::EXD_PARAM_INTEGERS,
        }
    }
    pub fn kind_name(&self) -> &'static str {
        kind_name(self.kind())
    }

    /// Converts to `kind` where that loses nothing (integer to number, integers to numbers, one
    /// value to a list of one).
    fn convert(self, kind: abi::ExdParamKind, field: &str) -> Result<ParamValue, Failure> {
        let converted = match (self, kind) {
            (v, k) if v.kind() == k => v,
            (ParamValue::Integer(i), abi::EXD_PARAM_NUMBER) => ParamValue::Number(i as f64),
            (ParamValue::Integers(v), abi::EXD_PARAM_NUMBERS) => ParamValue::Numbers(v.into_iter().map(|i| i as f64).collect()),
            // A single value where a list is declared is a list of one.
            (ParamValue::Integer(i), abi::EXD_PARAM_INTEGERS) => ParamValue::Integers(vec![i]),
            (ParamValue::Integer(i), abi::EXD_PARAM_NUMBERS) => ParamValue::Numbers(vec![i as f64]),
            (ParamValue::Number(x), abi::EXD_PARAM_NUMBERS) => ParamValue::Numbers(vec![x]),
            (v, k) => {
                return Err(Failure::invalid_argument(format!("{field}: expected {}, got {}", kind_name(k), v.kind_name())));
            }
        };
        // Plugins compute in float32 where the model does: a number past float32's range is
        // infinite there, however finite it is as a double.
        let fits_f32 = |x: &f64| x.is_finite() && x.abs() <= f32::MAX as f64;
        let bad = match &converted {
            ParamValue::Number(x) => (!fits_f32(x)).then(|| (field.to_string(), *x)),
            ParamValue::Numbers(xs) => xs.iter().position(|x| !fits_f32(x)).map(|i| (format!("{field}[{i}]"), xs[i])),
            _ => None,
        };
        if let Some((at, x)) = bad {
            return Err(Failure::invalid_argument(format!(
                "{at}: must be finite as a float32 (no NaN or infinity, magnitude at most {:e}), got {}",
                f32::MAX,
                crate::plugin::number_text(x)
            )));
        }
        Ok(converted)
    }
}

/// Which outputs to explain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSelection {
    /// The same flat output indices for every input.
    Indices(Vec<i64>),
    /// The highest-scoring index per input.
    Predicted,
    /// Every element of the output row.
    All,
    /// The k highest-scoring indices per input, highest first.
    TopK(usize),
}

/// Cancellation: a deadline and a flag the server sets when the client goes away.
#[derive(Debug, Clone, Default)]
pub struct CancelToken {
    pub deadline: Option<Instant>,
    pub cancelled: Arc<AtomicBool>,
}

impl CancelToken {
    pub fn is_cancelled(&self) -> bool {
        self.failure().is_some()
    }
    /// The failure to report if the request should stop now.
    pub fn failure(&self) -> Option<Failure> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Some(Failure::new(abi::EXD_CANCELLED, "the request was cancelled"));
        }
        match self.deadline {
            Some(d) if Instant::now() >= d => Some(Failure::new(abi::EXD_DEADLINE_EXCEEDED, "the request's deadline passed")),
            _ => None,
        }
    }
}

/// What one explain request may use, checked against the plugin's estimate before it runs and
/// against its host calls while it runs (0: no limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestBudget {
    /// Rows through the model and its compiled graphs (`--max-model-rows-per-request`).
    pub model_rows: u64,
    /// Scratch memory besides the request and its results (`--max-request-bytes`).
    pub scratch_bytes: u64,
}

/// Scratch memory reserved by the explain requests in flight, against one limit for the whole
/// process: each request's budget bounds it alone, this bounds them together. A request
/// reserves what it will hold (its plugin's estimate and its result tensors) before it
/// allocates, and gives it back when it ends.
#[derive(Debug)]
pub struct MemoryPool {
    limit: u64,
    used: AtomicU64,
}

impl MemoryPool {
    /// A pool of `limit` bytes (0: no limit).
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(MemoryPool { limit, used: AtomicU64::new(0) })
    }

    /// Bytes reserved by the requests in flight.
    pub fn in_use(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Reserves `bytes` until the returned reservation is dropped, or fails without reserving
    /// with RESOURCE_EXHAUSTED: the request is fine, the server is busy with others.
    pub fn reserve(self: &Arc<Self>, bytes: f64) -> Result<Reservation, Failure> {
        let whole = bytes.max(0.0).ceil();
        let amount = if whole >= u64::MAX as f64 { u64::MAX } else { whole as u64 };
        let before = self.used.fetch_add(amount, Ordering::Relaxed);
        let total = before as u128 + amount as u128;
        if self.limit > 0 && total > self.limit as u128 {
            self.used.fetch_sub(amount, Ordering::Relaxed);
            return Err(Failure::new(
                abi::EXD_RESOURCE_EXHAUSTED,
                format!(
                    "server memory: this request needs about {bytes:.3e} bytes and the requests in flight hold {before} of \
                     the server's {} (--max-inflight-bytes); retry later",
                    self.limit
                ),
            ));
        }
        Ok(Reservation { pool: self.clone(), bytes: amount })
    }
}

/// Bytes of a [`MemoryPool`] held by one request; given back when dropped.
#[derive(Debug)]
pub struct Reservation {
    pool: Arc<MemoryPool>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.pool.used.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// A validated explain request: inputs match the model, the output exists, the background is
/// resolved ([`crate::Host::explain`] makes it).
pub(crate) struct ExplainJob {
    pub model: Arc<Model>,
    pub plugin: Arc<Plugin>,
    /// One tensor per model input, in the model's order and declared element types, batch
    /// first, standard layout.
    pub inputs: Vec<Tensor>,
    /// Per model input, whether the request explains it (the others are held at the
    /// request's values); empty: every input.
    pub explained_inputs: Vec<bool>,
    pub output_index: usize,
    pub targets: TargetSelection,
    pub params: BTreeMap<String, ParamValue>,
    /// The background (one array per model input, rows first); `None`: the model's default,
    /// if it has one.
    pub background: Option<explaind_attribution::Background>,
    pub cancel: CancelToken,
    /// Compiles and runs gradient and DeepLIFT graphs for the ABI 1.1 host functions.
    pub engine: Arc<explaind_attribution::AttributionEngine>,
    /// What the request may use. A plugin's estimate over it refuses the request before the
    /// plugin runs; past it, host functions fail with RESOURCE_EXHAUSTED before running.
    pub budget: RequestBudget,
    /// The memory every request in flight reserves from.
    pub memory: Arc<MemoryPool>,
}

pub struct ExplainOutcome {
    /// The model output the targets index into.
    pub output_index: usize,
    /// Per model input index that the plugin wrote: [N, T, *input_shape_without_batch].
    pub attributions: Vec<(usize, ArrayD<f32>)>,
    /// [N, T]
    pub target_indices: Array2<i64>,
    /// Every model output for the inputs.
    pub outputs: Vec<ArrayD<f32>>,
    pub base_values: Option<ArrayD<f32>>,
    pub extras: Vec<(String, ArrayD<f32>)>,
    pub info: BTreeMap<String, String>,
    /// Forward passes, including the one on the inputs and the metrics'.
    pub stats: RunStats,
    /// The faithfulness metrics the request asked for, in its order.
    pub evaluations: Vec<explaind_faithfulness::Evaluation>,
    /// The seed they drew from (0 when none ran).
    pub evaluation_seed: u64,
}

/// Resolves `selection` against the model's output rows `[N, row]`.
pub fn resolve_targets(selection: &TargetSelection, rows: ArrayViewD<'_, f32>) -> Result<Array2<i64>, Failure> {
    let n = rows.shape()[0];
    let row_len = rows.len() / n.max(1);
    let rows = rows.to_shape((n, row_len)).expect("output is standard layout");
    let ranked = |r: usize| {
        let mut order: Vec<usize> = (0..row_len).collect();
        // Highest first; ties keep the lower index first (stable sort).
        order.sort_by(|&a, &b| rows[[r, b]].total_cmp(&rows[[r, a]]));
        order
    };
    let table = match selection {
        TargetSelection::Indices(indices) => {
            if indices.is_empty() {
                return Err(Failure::invalid_argument("targets.indices: give at least one index"));
            }
            for (i, &t) in indices.iter().enumerate() {
                if t < 0 || t as usize >= row_len {
                    return Err(Failure::invalid_argument(format!(
                        "targets.indices[{i}]: {t} is out of range for an output row of {row_len} elements"
                    )));
                }
            }
            Array2::from_shape_fn((n, indices.len()), |(_, t)| indices[t])
        }
        TargetSelection::Predicted => Array2::from_shape_fn((n, 1), |(r, _)| ranked(r)[0] as i64),
        TargetSelection::All => Array2::from_shape_fn((n, row_len), |(_, t)| t as i64),
        TargetSelection::TopK(k) => {
            if *k == 0 || *k > row_len {
                return Err(Failure::invalid_argument(format!(
                    "targets.top_k: {k} must be between 1 and the output row size {row_len}"
                )));
            }
            let mut table = Array2::zeros((n, *k));
            for r in 0..n {
                for (t, idx) in ranked(r).into_iter().take(*k).enumerate() {
                    table[[r, t]] = idx as i64;
                }
            }
            table
        }
    };
    Ok(table)
}

/// Owned storage behind the `ExdParam` array handed to the plugin: the raw entries point
/// into `names`, `texts` and `values`, which never change after construction.
struct ParamStorage {
    _names: Vec<CString>,
    _texts: Vec<Option<CString>>,
    _values: Vec<Option<ParamValue>>,
    raw: Vec<abi::ExdParam>,
}

/// Checks request parameters against the plugin's declarations and fills in defaults.
fn bind_params(plugin: &Plugin, mut given: BTreeMap<String, ParamValue>) -> Result<ParamStorage, Failure> {
    if let Some(unknown) = given.keys().find(|k| !plugin.params.iter().any(|p| &p.name == *k)) {
        let known: Vec<&str> = plugin.params.iter().map(|p| p.name.as_str()).collect();
        return Err(Failure::invalid_argument(format!(
            "parameters.{unknown}: explainer {} has no such parameter (it takes: {})",
            plugin.name,
            if known.is_empty() { "none".to_string() } else { known.join(", ") }
        )));
    }
    let mut names = Vec::new();
    let mut texts = Vec::new();
    let mut values = Vec::new();
    for spec in &plugin.params {
        let field = format!("parameters.{}", spec.name);
        let value = match given.remove(&spec.name) {
            Some(v) => {
                let v = v.convert(spec.kind, &field)?;
                spec.check_range(&v, &field)?;
                Some(v)
            }
            None if spec.required => {
                return Err(Failure::invalid_argument(format!("{field}: required by explainer {}", plugin.name)));
            }
            None => spec.default.clone(),
        };
        let text = match &value {
            Some(ParamValue::Text(t)) => Some(
                CString::new(t.clone())
                    .map_err(|_| Failure::invalid_argument(format!("{field}: text contains a NUL character")))?,
            ),
            _ => None,
        };
        names.push(CString::new(spec.name.clone()).expect("validated at load"));
        texts.push(text);
        values.push(value);
    }
    let raw = names
        .iter()
        .zip(&texts)
        .zip(&values)
        .map(|((name, text), value)| {
            let mut v = abi::ExdParamValue::NONE;
            match value {
                None => {}
                Some(ParamValue::Number(x)) => {
                    v.kind = abi::EXD_PARAM_NUMBER;
                    v.number = *x;
                }
                Some(ParamValue::Integer(x)) => {
                    v.kind = abi::EXD_PARAM_INTEGER;
                    v.integer = *x;
                }
                Some(ParamValue::Flag(x)) => {
                    v.kind = abi::EXD_PARAM_FLAG;
                    v.integer = *x as i64;
                }
                Some(ParamValue::Text(_)) => {
                    v.kind = abi::EXD_PARAM_TEXT;
                    v.text = text.as_ref().expect("text stored").as_ptr();
                }
                Some(ParamValue::Numbers(xs)) => {
                    v.kind = abi::EXD_PARAM_NUMBERS;
                    v.numbers = xs.as_ptr();
                    v.len = xs.len();
                }
                Some(ParamValue::Integers(xs)) => {
                    v.kind = abi::EXD_PARAM_INTEGERS;
                    v.integers = xs.as_ptr();
                    v.len = xs.len();
                }
            }
            abi::ExdParam { name: name.as_ptr(), value: v }
        })
        .collect();
    Ok(ParamStorage { _names: names, _texts: texts, _values: values, raw })
}

/// Runs `job`: a forward pass on the inputs, target resolution, then the plugin.
/// Blocking: call it from a blocking thread.
pub(crate) fn explain(job: ExplainJob) -> Result<ExplainOutcome, Failure> {
    let ExplainJob {
        model,
        plugin,
        inputs,
        explained_inputs,
        output_index,
        targets,
        params,
        background,
        cancel,
        engine,
        budget,
        memory,
    } = job;
    let params = bind_params(&plugin, params)?;
    let explained_inputs = check_explained_inputs(&plugin, &model, &inputs, explained_inputs)?;

    // A model's default background is read as float32 for float32 models only.
    let typed_input = model.inputs.iter().any(|spec| spec.element_type != explaind_runtime::FLOAT);
    let background = match (background, typed_input) {
        (Some(b), _) => Some(b),
        (None, true) => None,
        (None, false) => match (&model.background, &model.background_digest) {
            (Some(rows), Some(digest)) if model.inputs.len() == 1 => {
                Some(explaind_attribution::Background { digest: digest.clone(), rows: rows.clone() })
            }
            _ => None,
        },
    };
    if plugin.needs_background() && background.is_none() {
        return Err(Failure::failed_precondition(format!(
            "background: explainer {} needs a background set, and the request has none (nor does model {})",
            plugin.name, model.name
        )));
    }

    let views: Vec<TensorView> = inputs.iter().map(Tensor::view).collect();
    let (outputs, mut stats) = model.run_tensors(&views).map_err(|e| Failure::invalid_argument(format!("inputs: {e}")))?;
    crate::finite::require_finite_outputs(&model.outputs, &outputs)?;
    let n = inputs[0].rows();
    let explained = &outputs[output_index];
    let output_row_size = explained.len() / n.max(1);
    // The target table and the result tensors grow with the number of targets: cost them
    // before allocating either.
    let requested_targets = match &targets {
        TargetSelection::Indices(indices) => indices.len(),
        TargetSelection::Predicted => 1,
        TargetSelection::All => output_row_size,
        TargetSelection::TopK(k) => (*k).min(output_row_size),
    };
    let result_bytes = check_result_size(&inputs, requested_targets, budget)?;
    let target_indices = resolve_targets(&targets, explained.view())?;
    let num_targets = target_indices.ncols();

    let explained_rows = explained.as_standard_layout().into_owned();
    let input_tensors: Vec<BorrowedTensor> = inputs.iter().map(BorrowedTensor::of_tensor).collect();
    let input_dl: Vec<abi::DLTensor> = input_tensors.iter().map(|t| copy_dl(&t.dl)).collect();
    let output_tensor = BorrowedTensor::of(&explained_rows);
    let background_tensors: Vec<BorrowedTensor> = background.iter().flat_map(|b| b.rows.iter()).map(BorrowedTensor::of).collect();
    let background_dl: Vec<abi::DLTensor> = background_tensors.iter().map(|t| copy_dl(&t.dl)).collect();
    let targets_flat: Vec<i64> = target_indices.iter().copied().collect();

    let model_info = ModelInfoStorage::new(&model);
    let request = abi::ExdExplainRequest {
        header: abi::ExdStructHeader::current::<abi::ExdExplainRequest>(),
        model: &model_info.raw,
        num_inputs: input_dl.len(),
        inputs: input_dl.as_ptr(),
        output_index,
        output_row_size: output_row_size as i64,
        num_targets,
        targets: targets_flat.as_ptr(),
        outputs: &output_tensor.dl,
        num_params: params.raw.len(),
        params: params.raw.as_ptr(),
        background: if background_dl.is_empty() { std::ptr::null() } else { background_dl.as_ptr() },
        max_batch_rows: model.max_batch_rows() as i64,
        explained_inputs: explained_inputs.as_ptr(),
    };

    let attribution_shapes = inputs
        .iter()
        .map(|a| {
            let mut shape = vec![n as i64, num_targets as i64];
            shape.extend(a.shape().iter().skip(1).map(|&d| d as i64));
            shape
        })
        .collect();
    let context = CallContext {
        plugin_name: plugin.name.clone(),
        model_info: &model_info.raw,
        model: model.clone(),
        output_index,
        output_row_size,
        attribution_shapes,
        base_value_shape: vec![n as i64, num_targets as i64],
        cancel: cancel.clone(),
        engine,
        background,
        stats: Mutex::new(RunStats::default()),
        scratch: Mutex::new(Default::default()),
        strings: Mutex::new(Vec::new()),
        explained_inputs: explained_inputs.clone(),
        graph: Mutex::new(None),
        budget: crate::host_api::Budget::new(budget),
        results: Mutex::new(Results::default()),
    };

    if let Some(f) = cancel.failure() {
        return Err(f);
    }
    let scratch_bytes = match plugin.call_estimate(context.as_raw(), &request)? {
        Some(cost) => {
            check_cost(&plugin, &cost, &params.raw, budget)?;
            cost.scratch_bytes
        }
        None => 0.0,
    };
    let _reserved = memory.reserve(result_bytes + scratch_bytes)?;
    let outcome = plugin.call_explain(context.as_raw(), &request);
    // A plugin that saw the deadline pass reports CANCELLED; say which it was.
    if let Err(f) = outcome {
        return Err(match (f.code, cancel.failure()) {
            (abi::EXD_CANCELLED, Some(reason)) => reason,
            _ => f,
        });
    }
    stats.add(*context.stats.lock().unwrap());
    let results = std::mem::take(&mut *context.results.lock().unwrap());
    if !results.attributions.keys().any(|&i| explained_inputs.get(i) == Some(&1)) {
        return Err(Failure::internal(format!("explainer {} returned no attributions", plugin.name)));
    }
    // Keep the input buffers alive until the plugin is done with them.
    drop((input_tensors, background_tensors, output_tensor, params, model_info));
    let outcome = ExplainOutcome {
        output_index,
        // Inputs held fixed have no attributions, whatever the plugin wrote for them.
        attributions: results
            .attributions
            .into_iter()
            .filter(|(i, _)| explained_inputs.get(*i) == Some(&1))
            .map(|(i, t)| (i, t.into_array()))
            .collect(),
        target_indices,
        outputs,
        base_values: results.base_values.map(|t| t.into_array()),
        extras: results.extras.into_iter().map(|(k, t)| (k, t.into_array())).collect(),
        info: results.info,
        stats,
        evaluations: Vec::new(),
        evaluation_seed: 0,
    };
    // Results can be large (a million targets): the scan stops with the request.
    let cancelled = || cancel.failure();
    for (i, a) in &outcome.attributions {
        crate::finite::require_finite_or_cancel(&format!("attributions.{}", model.inputs[*i].name), a.view(), &cancelled)?;
    }
    if let Some(b) = &outcome.base_values {
        crate::finite::require_finite_or_cancel("base_values", b.view(), &cancelled)?;
    }
    for (name, e) in &outcome.extras {
        crate::finite::require_finite_or_cancel(&format!("extras.{name}"), e.view(), &cancelled)?;
    }
    Ok(outcome)
}

/// Refuses a request whose result tensors (attributions of every input for every target) would
/// pass the scratch budget: the host allocates them before the plugin runs.
/// Returns their size in bytes.
fn check_result_size(inputs: &[Tensor], num_targets: usize, budget: RequestBudget) -> Result<f64, Failure> {
    let elements: f64 = inputs.iter().map(|a| a.len() as f64).sum::<f64>() * num_targets as f64;
    let table = inputs.first().map_or(0.0, |a| a.rows() as f64) * num_targets as f64;
    let bytes = elements * 4.0 + table * 8.0;
    if budget.scratch_bytes > 0 && bytes > budget.scratch_bytes as f64 {
        return Err(Failure::new(
            abi::EXD_RESOURCE_EXHAUSTED,
            format!(
                "targets: {num_targets} targets for these inputs make {bytes:.3e} bytes of attributions, over the limit of {} \
                 (--max-request-bytes)",
                budget.scratch_bytes
            ),
        ));
    }
    Ok(bytes)
}

/// Which inputs the plugin is told to explain (`ExdExplainRequest.explained_inputs`), after the
/// refusals that keep older plugins on what they were built for: a plugin without
/// EXD_CAP_TYPED_INPUTS sees float32 inputs only, and one built before ABI 1.5 cannot read
/// which inputs are held fixed, so it explains them all.
fn check_explained_inputs(plugin: &Plugin, model: &Model, inputs: &[Tensor], explained: Vec<bool>) -> Result<Vec<u8>, Failure> {
    if !plugin.typed_inputs()
        && let Some((tensor, spec)) = inputs.iter().zip(&model.inputs).find(|(t, _)| t.element_type() != explaind_runtime::FLOAT)
    {
        return Err(Failure::failed_precondition(format!(
            "inputs: model input {:?} is {}, and explainer {} reads float32 inputs only (it does not declare \
             EXD_CAP_TYPED_INPUTS)",
            spec.name,
            explaind_runtime::element_type_name(tensor.element_type()),
            plugin.name
        )));
    }
    if explained.is_empty() {
        return Ok(vec![1; inputs.len()]);
    }
    if explained.len() != inputs.len() {
        return Err(Failure::internal(format!("{} explained-input flags for {} inputs", explained.len(), inputs.len())));
    }
    if !explained.iter().any(|&e| e) {
        return Err(Failure::invalid_argument("explained_inputs: names no input; explain at least one"));
    }
    let reads_the_field = (plugin.abi_major, plugin.abi_minor) >= (1, 5);
    if !reads_the_field && explained.iter().any(|&e| !e) {
        return Err(Failure::failed_precondition(format!(
            "explained_inputs: explainer {} (ABI {}.{}) explains every input; holding inputs fixed needs ABI 1.5",
            plugin.name, plugin.abi_major, plugin.abi_minor
        )));
    }
    Ok(explained.into_iter().map(u8::from).collect())
}

/// Refuses a request whose predicted cost is over its budget, naming what drives the cost.
fn check_cost(plugin: &Plugin, cost: &abi::ExdCost, params: &[abi::ExdParam], budget: RequestBudget) -> Result<(), Failure> {
    let driver = usize::try_from(cost.driver)
        .ok()
        .and_then(|i| params.get(i))
        .map(|p| format!("parameters.{}", unsafe { std::ffi::CStr::from_ptr(p.name) }.to_string_lossy()))
        .unwrap_or_else(|| "inputs and targets".to_string());
    let over = |what: &str, amount: f64, limit: u64, flag: &str| -> Result<(), Failure> {
        if amount.is_nan() || amount < 0.0 {
            let mut f = Failure::internal(format!("explainer {} estimated {amount} {what}, which is not a cost", plugin.name));
            f.from_plugin = true;
            return Err(f);
        }
        if limit > 0 && amount > limit as f64 {
            return Err(Failure::new(
                abi::EXD_RESOURCE_EXHAUSTED,
                format!(
                    "{driver}: explainer {} would need about {amount:.3e} {what} for this request, over the limit of {limit} ({flag})",
                    plugin.name
                ),
            ));
        }
        Ok(())
    };
    over("model rows", cost.model_rows, budget.model_rows, "--max-model-rows-per-request")?;
    over("bytes of scratch memory", cost.scratch_bytes, budget.scratch_bytes, "--max-request-bytes")
}

fn copy_dl(t: &abi::DLTensor) -> abi::DLTensor {
    abi::DLTensor { ..*t }
}

/// Owned storage behind the `ExdModelInfo` handed to the plugin.
struct ModelInfoStorage {
    _strings: Vec<CString>,
    _shapes: Vec<Vec<i64>>,
    _inputs: Vec<abi::ExdTensorInfo>,
    _outputs: Vec<abi::ExdTensorInfo>,
    raw: abi::ExdModelInfo,
}

impl ModelInfoStorage {
    fn new(model: &Model) -> Box<Self> {
        let mut strings = Vec::new();
        let mut shapes = Vec::new();
        let mut cstr = |s: &str| {
            let c = CString::new(s.replace('\0', " ")).unwrap();
            let p = c.as_ptr();
            strings.push(c);
            p
        };
        let mut infos = |specs: &[explaind_runtime::TensorSpec], strings: &mut dyn FnMut(&str) -> *const std::ffi::c_char| {
            specs
                .iter()
                .map(|s| {
                    let shape = s.shape_i64();
                    let info = abi::ExdTensorInfo {
                        name: strings(&s.name),
                        element_type: s.element_type,
                        ndim: shape.len() as i32,
                        shape: shape.as_ptr(),
                    };
                    shapes.push(shape);
                    info
                })
                .collect::<Vec<_>>()
        };
        let inputs = infos(&model.inputs, &mut cstr);
        let outputs = infos(&model.outputs, &mut cstr);
        let raw = abi::ExdModelInfo {
            header: abi::ExdStructHeader::current::<abi::ExdModelInfo>(),
            name: cstr(&model.name),
            version: cstr(&model.version),
            sha256: cstr(&model.sha256),
            num_inputs: inputs.len(),
            inputs: inputs.as_ptr(),
            num_outputs: outputs.len(),
            outputs: outputs.as_ptr(),
        };
        Box::new(ModelInfoStorage { _strings: strings, _shapes: shapes, _inputs: inputs, _outputs: outputs, raw })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lossless_conversions_only() {
        let f = "parameters.p";
        assert_eq!(ParamValue::Integer(3).convert(abi::EXD_PARAM_NUMBER, f).unwrap(), ParamValue::Number(3.0));
        assert_eq!(ParamValue::Integer(3).convert(abi::EXD_PARAM_INTEGERS, f).unwrap(), ParamValue::Integers(vec![3]));
        assert_eq!(ParamValue::Number(0.5).convert(abi::EXD_PARAM_NUMBERS, f).unwrap(), ParamValue::Numbers(vec![0.5]));
        assert_eq!(
            ParamValue::Integers(vec![1, 2]).convert(abi::EXD_PARAM_NUMBERS, f).unwrap(),
            ParamValue::Numbers(vec![1.0, 2.0])
        );
        let err = ParamValue::Number(0.5).convert(abi::EXD_PARAM_INTEGER, f).unwrap_err();
        assert_eq!(err.message, "parameters.p: expected integer, got number");
        let err = ParamValue::Number(f64::NAN).convert(abi::EXD_PARAM_NUMBER, f).unwrap_err();
        assert!(err.message.contains("finite"), "{}", err.message);
        // Numbers far from 1 are shown in exponent form, not spelt out digit by digit.
        let err = ParamValue::Number(1e300).convert(abi::EXD_PARAM_NUMBER, f).unwrap_err();
        assert!(err.message.ends_with("got 1e300"), "{}", err.message);
        let bounded = crate::ParamInfo {
            name: "p".into(),
            description: String::new(),
            kind: abi::EXD_PARAM_NUMBER,
            required: false,
            default: None,
            range: Some(abi::ExdParamRange { min: 1e-6, max: 1e6, max_len: 0 }),
        };
        let err = bounded.check_range(&ParamValue::Number(1e-300), f).unwrap_err();
        assert_eq!(err.message, "parameters.p: must be between 1e-6 and 1000000, got 1e-300");
    }

    #[test]
    fn the_memory_pool_refuses_what_does_not_fit_beside_the_requests_in_flight() {
        let pool = MemoryPool::new(1000);
        let first = pool.reserve(600.0).unwrap();
        let err = pool.reserve(500.0).unwrap_err();
        assert_eq!(err.code, abi::EXD_RESOURCE_EXHAUSTED);
        assert!(err.message.contains("hold 600 of the server's 1000"), "{}", err.message);
        assert_eq!(pool.in_use(), 600, "a refusal reserves nothing");
        let second = pool.reserve(400.0).unwrap();
        assert_eq!(pool.in_use(), 1000);
        drop(first);
        drop(second);
        assert_eq!(pool.in_use(), 0, "dropped reservations are given back");
        assert!(pool.reserve(f64::INFINITY).is_err(), "an infinite estimate never fits");
        assert!(MemoryPool::new(0).reserve(1e30).is_ok(), "0: no limit");
    }

    #[test]
    fn targets_resolve_against_output_rows() {
        let rows = ndarray::arr2(&[[0.1f32, 0.7, 0.2], [0.5, 0.1, 0.4]]).into_dyn();
        let t = resolve_targets(&TargetSelection::Predicted, rows.view()).unwrap();
        assert_eq!(t, ndarray::arr2(&[[1], [0]]));
        let t = resolve_targets(&TargetSelection::TopK(2), rows.view()).unwrap();
        assert_eq!(t, ndarray::arr2(&[[1, 2], [0, 2]]));
        let t = resolve_targets(&TargetSelection::All, rows.view()).unwrap();
        assert_eq!(t, ndarray::arr2(&[[0, 1, 2], [0, 1, 2]]));
        let err = resolve_targets(&TargetSelection::TopK(4), rows.view()).unwrap_err();
        assert!(err.message.starts_with("targets.top_k: 4"), "{}", err.message);
    }
}
