//! Finding, checking and loading plugin libraries.
//!
//! A library is loaded at most once and never unloaded (unloading is unreliable on several
//! platforms, and a plugin may have started threads or registered destructors). Every check the
//! ABI promises happens here, before the plugin is offered to anyone: the entry symbol, the
//! major version, the struct sizes, the required functions, the parameter declarations.

use crate::Failure;
use crate::host_api::{HOST_API, take_error};
use explaind_abi as abi;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashSet};
use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{path}: cannot open the library: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("{path}: no `explaind_plugin_v1` symbol: not an explaind plugin, or built for another ABI major version")]
    MissingEntry { path: PathBuf },
    #[error("{path}: the plugin refused to load: {message}")]
    EntryFailed { path: PathBuf, message: String },
    #[error("{path}: {what} has ABI major version {found}; this host speaks {}", abi::ABI_MAJOR)]
    WrongMajor { path: PathBuf, what: &'static str, found: u16 },
    #[error("{path}: {what} declares struct_size {found}, smaller than ABI 1.0's {minimum}")]
    ShortStruct { path: PathBuf, what: &'static str, found: u32, minimum: u32 },
    #[error("{path}: required {what} is NULL")]
    NullRequired { path: PathBuf, what: &'static str },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error("{path}: a plugin named {name:?} is already loaded from {other}")]
    Duplicate { path: PathBuf, name: String, other: PathBuf },
}

/// A declared parameter, copied out of the plugin's static description.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamInfo {
    pub name: String,
    pub description: String,
    pub kind: abi::ExdParamKind,
    pub required: bool,
    pub default: Option<crate::ParamValue>,
    /// The bounds the plugin declared (ABI 1.3); `None` for plugins built against 1.0–1.2.
    pub range: Option<abi::ExdParamRange>,
}

impl ParamInfo {
    /// Checks a request's value (already converted to the declared kind) against the declared
    /// bounds, naming `field` in the error.
    pub fn check_range(&self, value: &crate::ParamValue, field: &str) -> Result<(), Failure> {
        use crate::ParamValue as P;
        let Some(range) = self.range else { return Ok(()) };
        let bounds = || match (range.min.is_finite(), range.max.is_finite()) {
            (true, true) => format!("between {} and {}", number_text(range.min), number_text(range.max)),
            (true, false) => format!("at least {}", number_text(range.min)),
            (false, true) => format!("at most {}", number_text(range.max)),
            (false, false) => "any value".to_string(),
        };
        let within = |x: f64| x >= range.min && x <= range.max;
        let too_long = |len: usize| range.max_len > 0 && len as u64 > range.max_len;
        match value {
            P::Number(x) if !within(*x) => {
                Err(Failure::invalid_argument(format!("{field}: must be {}, got {}", bounds(), number_text(*x))))
            }
            P::Integer(i) if !within(*i as f64) => {
                Err(Failure::invalid_argument(format!("{field}: must be {}, got {i}", bounds())))
            }
            P::Numbers(xs) if too_long(xs.len()) => {
                Err(Failure::invalid_argument(format!("{field}: at most {} values, got {}", range.max_len, xs.len())))
            }
            P::Integers(xs) if too_long(xs.len()) => {
                Err(Failure::invalid_argument(format!("{field}: at most {} values, got {}", range.max_len, xs.len())))
            }
            P::Text(t) if too_long(t.len()) => {
                Err(Failure::invalid_argument(format!("{field}: at most {} bytes, got {}", range.max_len, t.len())))
            }
            P::Numbers(xs) => match xs.iter().position(|x| !within(*x)) {
                Some(i) => {
                    Err(Failure::invalid_argument(format!("{field}[{i}]: must be {}, got {}", bounds(), number_text(xs[i]))))
                }
                None => Ok(()),
            },
            P::Integers(xs) => match xs.iter().position(|x| !within(*x as f64)) {
                Some(i) => Err(Failure::invalid_argument(format!("{field}[{i}]: must be {}, got {}", bounds(), xs[i]))),
                None => Ok(()),
            },
            _ => Ok(()),
        }
    }
}

/// A number as an error message shows it: as written where that is short, in exponent form far
/// from 1 (Display would spell 1e300 with 301 digits).
pub(crate) fn number_text(x: f64) -> String {
    if x == 0.0 || !x.is_finite() || (1e-4..1e15).contains(&x.abs()) { x.to_string() } else { format!("{x:e}") }
}

pub fn kind_name(kind: abi::ExdParamKind) -> &'static str {
    match kind {
        abi::EXD_PARAM_NUMBER => "number",
        abi::EXD_PARAM_INTEGER => "integer",
        abi::EXD_PARAM_FLAG => "flag",
        abi::EXD_PARAM_TEXT => "text",
        abi::EXD_PARAM_NUMBERS => "numbers",
        abi::EXD_PARAM_INTEGERS => "integers",
        _ => "unknown",
    }
}

/// The plugin's instance pointer. Raw, so wrapped to say who may touch it.
struct InstancePtr(*mut abi::ExdInstance);
// SAFETY: the ABI lets the host call a plugin from any thread; concurrent calls are limited by
// `Plugin::serial` for plugins that are not re-entrant.
unsafe impl Send for InstancePtr {}
unsafe impl Sync for InstancePtr {}

/// A loaded plugin.
pub struct Plugin {
    pub name: String,
    pub version: String,
    pub description: String,
    /// ABI version the plugin was built against.
    pub abi_major: u16,
    pub abi_minor: u16,
    pub flags: u64,
    pub params: Vec<ParamInfo>,
    pub path: PathBuf,
    /// Lower-case hex SHA-256 of the library file.
    pub file_sha256: String,
    api: &'static abi::ExdPluginApi,
    /// Read-locked by calls, write-locked to replace an instance after a panic.
    instance: RwLock<InstancePtr>,
    /// Held during `explain` when the plugin is not re-entrant.
    serial: Mutex<()>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("name", &self.name).field("version", &self.version).finish_non_exhaustive()
    }
}

impl Plugin {
    pub fn reentrant(&self) -> bool {
        self.flags & abi::EXD_CAP_REENTRANT != 0
    }
    pub fn needs_background(&self) -> bool {
        self.flags & abi::EXD_NEEDS_BACKGROUND != 0
    }
    pub fn needs_gradients(&self) -> bool {
        self.flags & abi::EXD_NEEDS_GRADIENTS != 0
    }

    /// Explains only models holding an ONNX-ML tree ensemble (ABI 1.4).
    /// Whether the plugin reads inputs of every element type (ABI 1.5), not float32 only.
    pub fn typed_inputs(&self) -> bool {
        self.flags & abi::EXD_CAP_TYPED_INPUTS != 0
    }
    pub fn needs_tree_ensemble(&self) -> bool {
        self.flags & abi::EXD_NEEDS_TREE_ENSEMBLE != 0
    }

    /// Whether the plugin predicts its cost (ABI 1.3 `estimate`).
    pub fn has_estimate(&self) -> bool {
        self.estimate_fn().is_some()
    }

    fn estimate_fn(
        &self,
    ) -> Option<
        unsafe extern "C" fn(
            *mut abi::ExdInstance,
            *mut abi::ExdContext,
            *const abi::ExdExplainRequest,
            *mut abi::ExdCost,
        ) -> *mut abi::ExdError,
    > {
        let end = std::mem::offset_of!(abi::ExdPluginApi, estimate) + size_of::<usize>();
        if (self.api.header.struct_size as usize) < end { None } else { self.api.estimate }
    }

    /// Asks the plugin what `explain` will cost on `request` (ABI 1.3); `Ok(None)` for plugins
    /// that predate `estimate`. A panic is handled as in [`Plugin::call_explain`].
    pub(crate) fn call_estimate(
        &self,
        context: *mut abi::ExdContext,
        request: &abi::ExdExplainRequest,
    ) -> Result<Option<abi::ExdCost>, Failure> {
        let Some(estimate) = self.estimate_fn() else { return Ok(None) };
        let mut cost = abi::ExdCost {
            header: abi::ExdStructHeader::current::<abi::ExdCost>(),
            model_rows: f64::NAN,
            scratch_bytes: f64::NAN,
            driver: -1,
            reserved: 0,
        };
        let err = {
            let _serial = if self.reentrant() { None } else { Some(self.serial.lock().unwrap_or_else(|p| p.into_inner())) };
            let instance = self.instance.read().unwrap_or_else(|p| p.into_inner());
            unsafe { estimate(instance.0, context, request, &mut cost) }
        };
        if err.is_null() {
            return Ok(Some(cost));
        }
        Err(self.plugin_failure(take_error(err)))
    }

    /// A plugin's error as the request's failure; after a panic the instance is replaced.
    fn plugin_failure(&self, failure: Failure) -> Failure {
        if failure.code == abi::EXD_PLUGIN_PANICKED {
            tracing::error!(plugin = %self.name, "plugin panicked; replacing its instance: {}", failure.message);
            self.replace_instance();
            let mut panicked = Failure::internal(format!("explainer {} failed: {}", self.name, failure.message));
            panicked.from_plugin = true;
            return panicked;
        }
        failure
    }

    /// Calls the plugin's `explain`. After a panic the instance is replaced before returning.
    pub(crate) fn call_explain(&self, context: *mut abi::ExdContext, request: &abi::ExdExplainRequest) -> Result<(), Failure> {
        let explain = self.api.explain.expect("checked at load");
        let err = {
            let _serial = if self.reentrant() { None } else { Some(self.serial.lock().unwrap_or_else(|p| p.into_inner())) };
            let instance = self.instance.read().unwrap_or_else(|p| p.into_inner());
            unsafe { explain(instance.0, context, request) }
        };
        if err.is_null() {
            return Ok(());
        }
        Err(self.plugin_failure(take_error(err)))
    }

    fn replace_instance(&self) {
        let mut instance = self.instance.write().unwrap_or_else(|p| p.into_inner());
        if let Some(destroy) = self.api.destroy {
            unsafe { destroy(instance.0) };
        }
        instance.0 = std::ptr::null_mut();
        match create_instance(self.api) {
            Ok(fresh) => instance.0 = fresh,
            Err(message) => tracing::error!(plugin = %self.name, "could not create a fresh instance: {message}"),
        }
    }
}

fn create_instance(api: &abi::ExdPluginApi) -> Result<*mut abi::ExdInstance, String> {
    let Some(create) = api.create else { return Ok(std::ptr::null_mut()) };
    let mut out = std::ptr::null_mut();
    let err = unsafe { create(&mut out) };
    if err.is_null() { Ok(out) } else { Err(take_error(err).message) }
}

/// Reads a NUL-terminated static string; NULL reads as empty.
unsafe fn static_str(p: *const std::ffi::c_char) -> String {
    if p.is_null() { String::new() } else { unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned() }
}

fn valid_name(name: &str, extra: &[char]) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || extra.contains(&c))
}

/// Copies a declared default out of the plugin's memory.
unsafe fn param_value(v: &abi::ExdParamValue) -> Option<crate::ParamValue> {
    use crate::ParamValue as P;
    Some(match v.kind {
        abi::EXD_PARAM_NUMBER => P::Number(v.number),
        abi::EXD_PARAM_INTEGER => P::Integer(v.integer),
        abi::EXD_PARAM_FLAG => P::Flag(v.integer != 0),
        abi::EXD_PARAM_TEXT if !v.text.is_null() => P::Text(unsafe { static_str(v.text) }),
        abi::EXD_PARAM_NUMBERS if !v.numbers.is_null() || v.len == 0 => {
            P::Numbers(if v.len == 0 { vec![] } else { unsafe { std::slice::from_raw_parts(v.numbers, v.len) }.to_vec() })
        }
        abi::EXD_PARAM_INTEGERS if !v.integers.is_null() || v.len == 0 => {
            P::Integers(if v.len == 0 { vec![] } else { unsafe { std::slice::from_raw_parts(v.integers, v.len) }.to_vec() })
        }
        _ => return None,
    })
}

/// Opens `path` and checks everything the ABI promises. The library is leaked on success and
/// on failures after `dlopen` alike: unloading code that may have run is not safe.
fn load_library(path: &Path) -> Result<Plugin, LoadError> {
    let bytes = std::fs::read(path).map_err(|e| LoadError::Open { path: path.into(), reason: e.to_string() })?;
    let file_sha256 = hex::encode(Sha256::digest(&bytes));
    let lib =
        unsafe { libloading::Library::new(path) }.map_err(|e| LoadError::Open { path: path.into(), reason: e.to_string() })?;
    let lib: &'static libloading::Library = Box::leak(Box::new(lib));
    let entry: abi::ExdPluginEntryV1 = unsafe { lib.get::<abi::ExdPluginEntryV1>(abi::ENTRY_SYMBOL_V1) }
        .map(|sym| *sym)
        .map_err(|_| LoadError::MissingEntry { path: path.into() })?;

    let mut api_ptr: *const abi::ExdPluginApi = std::ptr::null();
    let err = unsafe { entry(&HOST_API, &mut api_ptr) };
    if !err.is_null() {
        return Err(LoadError::EntryFailed { path: path.into(), message: take_error(err).message });
    }
    if api_ptr.is_null() {
        return Err(LoadError::NullRequired { path: path.into(), what: "plugin table (entry returned NULL)" });
    }
    let api: &'static abi::ExdPluginApi = unsafe { &*api_ptr };
    check_header(path, "ExdPluginApi", &api.header, abi::v1_0_sizes::PLUGIN_API)?;
    if api.info.is_null() {
        return Err(LoadError::NullRequired { path: path.into(), what: "ExdPluginApi.info" });
    }
    if api.explain.is_none() {
        return Err(LoadError::NullRequired { path: path.into(), what: "ExdPluginApi.explain" });
    }
    let info: &'static abi::ExdPluginInfo = unsafe { &*api.info };
    check_header(path, "ExdPluginInfo", &info.header, abi::v1_0_sizes::PLUGIN_INFO)?;

    let invalid = |message: String| LoadError::Invalid { path: path.into(), message };
    let name = unsafe { static_str(info.name) };
    if !valid_name(&name, &['-']) {
        return Err(invalid(format!("plugin name {name:?} must be non-empty [a-z0-9_-]")));
    }
    if info.num_params > 0 && info.params.is_null() {
        return Err(LoadError::NullRequired { path: path.into(), what: "ExdPluginInfo.params" });
    }
    let raw_params =
        if info.num_params == 0 { &[][..] } else { unsafe { std::slice::from_raw_parts(info.params, info.num_params) } };
    let ranges_end = std::mem::offset_of!(abi::ExdPluginInfo, param_ranges) + size_of::<usize>();
    let raw_ranges = if (info.header.struct_size as usize) < ranges_end || info.param_ranges.is_null() || info.num_params == 0 {
        None
    } else {
        Some(unsafe { std::slice::from_raw_parts(info.param_ranges, info.num_params) })
    };
    let mut params = Vec::new();
    for (i, p) in raw_params.iter().enumerate() {
        let pname = unsafe { static_str(p.name) };
        if !valid_name(&pname, &[]) {
            return Err(invalid(format!("parameter {i} has an invalid name {pname:?} (want [a-z0-9_]+)")));
        }
        if kind_name(p.kind) == "unknown" {
            return Err(invalid(format!("parameter {pname} has unknown kind {}", p.kind)));
        }
        let default = unsafe { param_value(&p.default_value) };
        if let Some(d) = &default
            && d.kind() != p.kind
        {
            return Err(invalid(format!("parameter {pname}: default is a {}, declared {}", d.kind_name(), kind_name(p.kind))));
        }
        let range = raw_ranges.map(|r| r[i]);
        if let Some(r) = range
            && (r.min.is_nan() || r.max.is_nan() || r.min > r.max)
        {
            return Err(invalid(format!("parameter {pname}: bounds [{}, {}] are not a range", r.min, r.max)));
        }
        params.push(ParamInfo {
            name: pname,
            description: unsafe { static_str(p.description) },
            kind: p.kind,
            required: p.required != 0,
            default,
            range,
        });
    }

    let instance = create_instance(api).map_err(|message| LoadError::EntryFailed { path: path.into(), message })?;
    Ok(Plugin {
        name,
        version: unsafe { static_str(info.version) },
        description: unsafe { static_str(info.description) },
        abi_major: api.header.abi_major,
        abi_minor: api.header.abi_minor,
        flags: info.flags,
        params,
        path: path.to_path_buf(),
        file_sha256,
        api,
        instance: RwLock::new(InstancePtr(instance)),
        serial: Mutex::new(()),
    })
}

fn check_header(path: &Path, what: &'static str, header: &abi::ExdStructHeader, minimum: u32) -> Result<(), LoadError> {
    if header.abi_major != abi::ABI_MAJOR {
        return Err(LoadError::WrongMajor { path: path.into(), what, found: header.abi_major });
    }
    if header.struct_size < minimum {
        return Err(LoadError::ShortStruct { path: path.into(), what, found: header.struct_size, minimum });
    }
    Ok(())
}

/// The loaded plugins, by name.
#[derive(Default)]
pub struct PluginRegistry {
    plugins: RwLock<BTreeMap<String, Arc<Plugin>>>,
    /// Canonical paths already opened (successfully or not): a path is loaded at most once.
    seen: Mutex<HashSet<PathBuf>>,
}

impl PluginRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads one library. Each outcome is logged: success with name, versions and digest;
    /// refusal with the reason. A refused plugin never affects the ones already loaded.
    pub fn load_file(&self, path: &Path) -> Result<Arc<Plugin>, LoadError> {
        let canonical = path.canonicalize().map_err(|e| LoadError::Open { path: path.into(), reason: e.to_string() })?;
        if !self.seen.lock().unwrap().insert(canonical.clone()) {
            let existing = self.plugins.read().unwrap().values().find(|p| p.path == canonical).cloned();
            return existing.ok_or_else(|| LoadError::Invalid {
                path: canonical.clone(),
                message: "was refused before; a path is tried once".into(),
            });
        }
        let result = load_library(&canonical).and_then(|plugin| {
            let mut plugins = self.plugins.write().unwrap();
            if let Some(other) = plugins.get(&plugin.name) {
                return Err(LoadError::Duplicate {
                    path: canonical.clone(),
                    name: plugin.name.clone(),
                    other: other.path.clone(),
                });
            }
            let plugin = Arc::new(plugin);
            plugins.insert(plugin.name.clone(), plugin.clone());
            Ok(plugin)
        });
        match &result {
            Ok(p) => tracing::info!(
                plugin = %p.name,
                version = %p.version,
                abi = %format!("{}.{}", p.abi_major, p.abi_minor),
                sha256 = %p.file_sha256,
                path = %p.path.display(),
                "loaded explainer plugin"
            ),
            Err(e) => tracing::error!("refused plugin: {e}"),
        }
        result
    }

    /// Loads every shared library in `dir` whose file name starts with `prefix` (empty: all).
    pub fn load_dir(&self, dir: &Path, prefix: &str) -> Vec<Result<Arc<Plugin>, LoadError>> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) => return vec![Err(LoadError::Open { path: dir.into(), reason: e.to_string() })],
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && p.extension().and_then(|e| e.to_str()) == Some(std::env::consts::DLL_EXTENSION)
                    && p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.strip_prefix(std::env::consts::DLL_PREFIX).unwrap_or(n).starts_with(prefix))
            })
            .collect();
        paths.sort();
        paths.iter().map(|p| self.load_file(p)).collect()
    }

    pub fn get(&self, name: &str) -> Option<Arc<Plugin>> {
        self.plugins.read().unwrap().get(name).cloned()
    }

    pub fn list(&self) -> Vec<Arc<Plugin>> {
        self.plugins.read().unwrap().values().cloned().collect()
    }
}
