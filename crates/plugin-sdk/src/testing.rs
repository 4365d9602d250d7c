//! A fake host for plugin unit tests: loads the plugin under test through its own C entry
//! point (`explaind_plugin_v1`, which `export_plugin!` defines in the test binary too) and
//! calls its `estimate` on a request built here, with the parameter defaults filled in as the
//! host fills them. This goes through exactly the code the daemon calls (the SDK's argument
//! reading, `catch_unwind`, the cost written into `ExdCost`), so a panic shows up as
//! `EXD_PLUGIN_PANICKED` and a driver that names no parameter as `None`.
//!
//! ```ignore
//! let plugin = explaind_plugin_sdk::plugin_under_test!();
//! let request = FakeRequest::new(&[(vec![2, 4], vec![0.0; 8])], 3).param("steps", Value::Integer(50));
//! let cost = plugin.estimate(&request).unwrap();
//! ```
//!
//! Only `estimate` and the declarations: nothing here runs a model.

use crate::Error;
use std::ffi::{CStr, CString, c_char};

/// The plugin entry point's type.
pub type Entry = unsafe extern "C" fn(*const abi::ExdHostApi, *mut *const abi::ExdPluginApi) -> *mut abi::ExdError;

/// Loads the plugin of the crate under test (its `export_plugin!`'s entry point).
#[macro_export]
macro_rules! plugin_under_test {
    () => {{
        unsafe extern "C" {
            fn explaind_plugin_v1(
                host: *const $crate::testing::abi::ExdHostApi,
                out: *mut *const $crate::testing::abi::ExdPluginApi,
            ) -> *mut $crate::testing::abi::ExdError;
        }
        $crate::testing::Plugin::load(explaind_plugin_v1)
    }};
}

pub use crate::abi;

struct FakeError {
    code: abi::ExdCode,
    message: CString,
}

unsafe extern "C" fn error_new(code: abi::ExdCode, message: *const c_char) -> *mut abi::ExdError {
    let message = if message.is_null() { CString::default() } else { unsafe { CStr::from_ptr(message) }.to_owned() };
    Box::into_raw(Box::new(FakeError { code, message })) as *mut abi::ExdError
}
unsafe extern "C" fn error_free(error: *mut abi::ExdError) {
    if !error.is_null() {
        drop(unsafe { Box::from_raw(error as *mut FakeError) });
    }
}
unsafe extern "C" fn error_code(error: *const abi::ExdError) -> abi::ExdCode {
    unsafe { (*(error as *const FakeError)).code }
}
unsafe extern "C" fn error_message(error: *const abi::ExdError) -> *const c_char {
    unsafe { (*(error as *const FakeError)).message.as_ptr() }
}
unsafe extern "C" fn is_cancelled(_: *mut abi::ExdContext) -> i32 {
    0
}

/// Errors and `is_cancelled`; nothing that runs a model.
static HOST: abi::ExdHostApi = abi::ExdHostApi {
    header: abi::ExdStructHeader::current::<abi::ExdHostApi>(),
    error_new: Some(error_new),
    error_free: Some(error_free),
    error_code: Some(error_code),
    error_message: Some(error_message),
    log: None,
    is_cancelled: Some(is_cancelled),
    model_info: None,
    forward: None,
    tensor_alloc: None,
    tensor_release: None,
    result_attributions: None,
    result_base_values: None,
    result_extra: None,
    result_info: None,
    gradient: None,
    deeplift_multipliers: None,
    deep_shap: None,
    layer_gradient: None,
    model_graph: None,
    layer_activation: None,
    layer_gradient_at: None,
    layer_deeplift_at: None,
};

fn take_error(err: *mut abi::ExdError) -> Error {
    let boxed = unsafe { Box::from_raw(err as *mut FakeError) };
    Error::new(boxed.code, boxed.message.to_string_lossy().into_owned())
}

/// A parameter value as a client sets it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Number(f64),
    Integer(i64),
    Flag(bool),
    Text(String),
    Numbers(Vec<f64>),
    Integers(Vec<i64>),
}

/// A declared parameter: its name, kind and host-checked bounds.
#[derive(Debug, Clone, PartialEq)]
pub struct Declared {
    pub name: String,
    pub kind: abi::ExdParamKind,
    pub required: bool,
    /// (min, max); (−inf, inf) when unbounded.
    pub range: (f64, f64),
    /// 0: no limit.
    pub max_len: u64,
    /// The default's number, integer or list elements, for checking against the range.
    pub default_numbers: Vec<f64>,
}

/// What `estimate` said.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    pub model_rows: f64,
    pub scratch_bytes: f64,
    pub driver: Option<String>,
}

/// The plugin under test, with one instance.
pub struct Plugin {
    api: &'static abi::ExdPluginApi,
    instance: *mut abi::ExdInstance,
}

impl Plugin {
    pub fn load(entry: Entry) -> Plugin {
        let mut api: *const abi::ExdPluginApi = std::ptr::null();
        let err = unsafe { entry(&HOST, &mut api) };
        assert!(err.is_null(), "the entry point failed: {}", take_error(err));
        let api: &'static abi::ExdPluginApi = unsafe { &*api };
        let mut instance = std::ptr::null_mut();
        if let Some(create) = api.create {
            let err = unsafe { create(&mut instance) };
            assert!(err.is_null(), "create failed: {}", take_error(err));
        }
        Plugin { api, instance }
    }

    fn info(&self) -> &'static abi::ExdPluginInfo {
        unsafe { &*self.api.info }
    }

    /// Every declared parameter with its bounds, in declaration order.
    pub fn declared(&self) -> Vec<Declared> {
        let info = self.info();
        let specs = unsafe { std::slice::from_raw_parts(info.params, info.num_params) };
        let ranges = if info.param_ranges.is_null() {
            &[][..]
        } else {
            unsafe { std::slice::from_raw_parts(info.param_ranges, info.num_params) }
        };
        specs
            .iter()
            .enumerate()
            .map(|(i, spec)| {
                let range = ranges.get(i).map_or((f64::NEG_INFINITY, f64::INFINITY), |r| (r.min, r.max));
                let v = &spec.default_value;
                let default_numbers = match v.kind {
                    abi::EXD_PARAM_NUMBER => vec![v.number],
                    abi::EXD_PARAM_INTEGER => vec![v.integer as f64],
                    abi::EXD_PARAM_NUMBERS => unsafe { slice(v.numbers, v.len) }.to_vec(),
                    abi::EXD_PARAM_INTEGERS => unsafe { slice(v.integers, v.len) }.iter().map(|&x| x as f64).collect(),
                    _ => Vec::new(),
                };
                Declared {
                    name: unsafe { CStr::from_ptr(spec.name) }.to_string_lossy().into_owned(),
                    kind: spec.kind,
                    required: spec.required != 0,
                    range,
                    max_len: ranges.get(i).map_or(0, |r| r.max_len),
                    default_numbers,
                }
            })
            .collect()
    }

    /// The declaration of parameter `name` (panics when there is none).
    pub fn param(&self, name: &str) -> Declared {
        self.declared().into_iter().find(|d| d.name == name).unwrap_or_else(|| panic!("no parameter {name}"))
    }

    /// Checks what every plugin's declarations must satisfy: every number, integer and list
    /// has a range, every text and list a length bound, and every default lies within its
    /// range (the host does not check defaults against ranges).
    pub fn assert_every_parameter_is_bounded(&self) {
        for d in self.declared() {
            let numeric = matches!(
                d.kind,
                abi::EXD_PARAM_NUMBER | abi::EXD_PARAM_INTEGER | abi::EXD_PARAM_NUMBERS | abi::EXD_PARAM_INTEGERS
            );
            let listed = matches!(d.kind, abi::EXD_PARAM_TEXT | abi::EXD_PARAM_NUMBERS | abi::EXD_PARAM_INTEGERS);
            if numeric {
                assert!(d.range.0 <= d.range.1, "{}: empty range {:?}", d.name, d.range);
                let (lo, hi) = d.range;
                if d.kind == abi::EXD_PARAM_NUMBER || d.kind == abi::EXD_PARAM_NUMBERS {
                    assert!(lo.is_finite() && hi.is_finite(), "{}: numbers need finite bounds, got {:?}", d.name, d.range);
                } else {
                    // Integers: i64 is bounded already; a seed may take all of it.
                    assert!(lo > f64::NEG_INFINITY && hi < f64::INFINITY, "{}: unbounded {:?}", d.name, d.range);
                }
                for v in &d.default_numbers {
                    assert!((lo..=hi).contains(v), "{}: default {v} outside {:?}", d.name, d.range);
                }
            }
            if listed {
                assert!(d.max_len > 0, "{}: lists and texts need max_len", d.name);
                assert!(d.default_numbers.len() as u64 <= d.max_len, "{}: default longer than max_len", d.name);
            }
        }
    }

    /// Calls `estimate` through the C table, as the host does.
    pub fn estimate(&self, request: &FakeRequest) -> Result<Estimate, Error> {
        let estimate = self.api.estimate.expect("ABI 1.3 plugins have estimate");
        let built = request.build(self);
        let mut cost = abi::ExdCost {
            header: abi::ExdStructHeader::current::<abi::ExdCost>(),
            model_rows: f64::NAN,
            scratch_bytes: f64::NAN,
            driver: -2,
            reserved: 0,
        };
        let err = unsafe { estimate(self.instance, std::ptr::null_mut(), &built.raw, &mut cost) };
        if !err.is_null() {
            return Err(take_error(err));
        }
        let driver = match cost.driver {
            -1 => None,
            i if i >= 0 && (i as usize) < built.names.len() => Some(built.names[i as usize].to_string_lossy().into_owned()),
            other => panic!("estimate wrote driver {other}, not an index into the request's parameters nor -1"),
        };
        Ok(Estimate { model_rows: cost.model_rows, scratch_bytes: cost.scratch_bytes, driver })
    }
}

unsafe fn slice<'a, T>(ptr: *const T, len: usize) -> &'a [T] {
    if ptr.is_null() || len == 0 { &[] } else { unsafe { std::slice::from_raw_parts(ptr, len) } }
}

/// A request: model inputs (shape and data, batch first), optional background, the targets,
/// the output row size and parameters. Defaults for every parameter not set are filled from the
/// plugin's declarations when the request is built, as the host does.
pub struct FakeRequest {
    pub inputs: Vec<(Vec<i64>, Vec<f32>)>,
    pub background: Option<Vec<(Vec<i64>, Vec<f32>)>>,
    /// Targets per input row.
    pub num_targets: usize,
    pub output_row_size: usize,
    pub max_batch_rows: i64,
    pub params: Vec<(String, Value)>,
}

impl FakeRequest {
    /// Inputs (one per model input), T targets per row (targets 0..T), an output row of T
    /// elements, 64 rows per batch, and no background or parameters.
    pub fn new(inputs: &[(Vec<i64>, Vec<f32>)], num_targets: usize) -> Self {
        FakeRequest {
            inputs: inputs.to_vec(),
            background: None,
            num_targets,
            output_row_size: num_targets.max(1),
            max_batch_rows: 64,
            params: Vec::new(),
        }
    }
    /// Zeros of `shape` (batch first) as the one model input.
    pub fn zeros(shape: &[i64], num_targets: usize) -> Self {
        let len = shape.iter().product::<i64>() as usize;
        Self::new(&[(shape.to_vec(), vec![0.0; len])], num_targets)
    }
    /// `rows` background rows of zeros per model input.
    pub fn background_rows(mut self, rows: i64) -> Self {
        self.background = Some(
            self.inputs
                .iter()
                .map(|(shape, _)| {
                    let mut shape = shape.clone();
                    shape[0] = rows;
                    let len = shape.iter().product::<i64>() as usize;
                    (shape, vec![0.0; len])
                })
                .collect(),
        );
        self
    }
    pub fn output_row_size(mut self, size: usize) -> Self {
        self.output_row_size = size;
        self
    }
    pub fn max_batch_rows(mut self, rows: i64) -> Self {
        self.max_batch_rows = rows;
        self
    }
    pub fn param(mut self, name: &str, value: Value) -> Self {
        self.params.retain(|(n, _)| n != name);
        self.params.push((name.to_string(), value));
        self
    }

    fn build(&self, plugin: &Plugin) -> Built {
        let info = plugin.info();
        let specs = unsafe { std::slice::from_raw_parts(info.params, info.num_params) };
        let n = self.inputs[0].0[0];
        let mut b = Built {
            raw: unsafe { std::mem::zeroed() },
            shapes: self.inputs.iter().map(|(s, _)| s.clone()).collect(),
            background_shapes: self.background.iter().flatten().map(|(s, _)| s.clone()).collect(),
            tensors: Vec::new(),
            background: Vec::new(),
            outputs_shape: vec![n, self.output_row_size as i64],
            outputs: vec![0.0; n as usize * self.output_row_size],
            outputs_tensor: Box::new(dl(std::ptr::null(), std::ptr::null())),
            targets: (0..n).flat_map(|_| 0..self.num_targets as i64).collect(),
            names: Vec::new(),
            texts: Vec::new(),
            params: Vec::new(),
        };
        b.tensors = self.inputs.iter().zip(&b.shapes).map(|((_, d), s)| dl(d.as_ptr(), s)).collect();
        if let Some(background) = &self.background {
            b.background = background.iter().zip(&b.background_shapes).map(|((_, d), s)| dl(d.as_ptr(), s)).collect();
        }
        b.outputs_tensor = Box::new(dl(b.outputs.as_ptr(), &b.outputs_shape));
        // Every declared parameter, set or defaulted, in declaration order (as the host does);
        // then any undeclared ones the test sets (the host would refuse those).
        let mut values: Vec<(CString, abi::ExdParamValue)> = Vec::new();
        for spec in specs {
            let name = unsafe { CStr::from_ptr(spec.name) };
            let given = self.params.iter().find(|(n, _)| n.as_bytes() == name.to_bytes());
            let value = match given {
                Some((_, v)) => self.value(v, &mut b.texts),
                None => spec.default_value,
            };
            values.push((name.to_owned(), value));
        }
        for (name, v) in &self.params {
            if !values.iter().any(|(n, _)| n.as_bytes() == name.as_bytes()) {
                let value = self.value(v, &mut b.texts);
                values.push((CString::new(name.as_str()).unwrap(), value));
            }
        }
        b.names = values.iter().map(|(n, _)| n.clone()).collect();
        b.params = b.names.iter().zip(&values).map(|(n, (_, value))| abi::ExdParam { name: n.as_ptr(), value: *value }).collect();
        b.raw = abi::ExdExplainRequest {
            header: abi::ExdStructHeader::current::<abi::ExdExplainRequest>(),
            model: std::ptr::null(),
            num_inputs: b.tensors.len(),
            inputs: b.tensors.as_ptr(),
            output_index: 0,
            output_row_size: self.output_row_size as i64,
            num_targets: self.num_targets,
            targets: b.targets.as_ptr(),
            outputs: &*b.outputs_tensor,
            num_params: b.params.len(),
            params: b.params.as_ptr(),
            background: if self.background.is_some() { b.background.as_ptr() } else { std::ptr::null() },
            max_batch_rows: self.max_batch_rows,
            explained_inputs: std::ptr::null(),
        };
        b
    }

    /// The C value of `v`; texts are kept alive in `texts`, lists point into `self`.
    fn value(&self, v: &Value, texts: &mut Vec<CString>) -> abi::ExdParamValue {
        let mut out = abi::ExdParamValue {
            kind: abi::EXD_PARAM_NONE,
            reserved: 0,
            number: 0.0,
            integer: 0,
            text: std::ptr::null(),
            numbers: std::ptr::null(),
            integers: std::ptr::null(),
            len: 0,
        };
        match v {
            Value::Number(x) => (out.kind, out.number) = (abi::EXD_PARAM_NUMBER, *x),
            Value::Integer(x) => (out.kind, out.integer) = (abi::EXD_PARAM_INTEGER, *x),
            Value::Flag(x) => (out.kind, out.integer) = (abi::EXD_PARAM_FLAG, *x as i64),
            Value::Text(x) => {
                texts.push(CString::new(x.as_str()).unwrap());
                (out.kind, out.text) = (abi::EXD_PARAM_TEXT, texts.last().unwrap().as_ptr());
            }
            Value::Numbers(x) => (out.kind, out.numbers, out.len) = (abi::EXD_PARAM_NUMBERS, x.as_ptr(), x.len()),
            Value::Integers(x) => (out.kind, out.integers, out.len) = (abi::EXD_PARAM_INTEGERS, x.as_ptr(), x.len()),
        }
        out
    }
}

/// A request's C structures and everything they point to (moving a `CString` or `Vec` does not
/// move its heap buffer, so the pointers stay valid while this lives).
struct Built {
    raw: abi::ExdExplainRequest,
    shapes: Vec<Vec<i64>>,
    background_shapes: Vec<Vec<i64>>,
    tensors: Vec<abi::DLTensor>,
    background: Vec<abi::DLTensor>,
    outputs_shape: Vec<i64>,
    outputs: Vec<f32>,
    /// Boxed: `raw.outputs` points at it, and `Built` moves.
    outputs_tensor: Box<abi::DLTensor>,
    targets: Vec<i64>,
    names: Vec<CString>,
    texts: Vec<CString>,
    params: Vec<abi::ExdParam>,
}

fn dl(data: *const f32, shape: *const Vec<i64>) -> abi::DLTensor {
    let (ptr, ndim) = if shape.is_null() {
        (std::ptr::null_mut(), 0)
    } else {
        unsafe { ((*shape).as_ptr() as *mut i64, (*shape).len() as i32) }
    };
    abi::DLTensor {
        data: data as *mut _,
        device: abi::DLDevice { device_type: abi::kDLCPU, device_id: 0 },
        ndim,
        dtype: abi::DLDataType::FLOAT32,
        shape: ptr,
        strides: std::ptr::null_mut(),
        byte_offset: 0,
    }
}
