//! The plugin host: loads explainer plugins through the C ABI and runs explain requests.
//!
//! - [`plugin`] finds, checks and loads plugin libraries (never unloading them) and keeps one
//!   instance per plugin, replaced after a panic.
//! - [`host_api`] is the host's side of the ABI: the function table handed to plugins and the
//!   per-call context behind it (forward passes, result tensors, cancellation).
//! - `graph_view` builds the read-only view of a model's graph that ABI 1.4's `model_graph`
//!   hands to plugins that read the model's structure (tree ensembles).
//! - [`backgrounds`] keeps the background sets clients register.
//! - [`Host`] owns the Explain use case: a decoded [`ExplainRequest`] (inputs bound to the
//!   model; explainer, output, background source and explained inputs as named) in, an
//!   [`ExplainOutcome`] out. It resolves the output and the background, then
//! - [`explain`] turns the validated request into one plugin call: it runs the model on the
//!   inputs, resolves targets, checks parameters against the plugin's declaration, and collects
//!   the results.
//!
//! Nothing here knows about gRPC: errors are [`Failure`]s carrying gRPC-compatible codes, which
//! the server maps to statuses.

pub mod backgrounds;
pub mod evaluate;
pub mod explain;
pub mod finite;
mod graph_view;
mod host;
pub mod host_api;
pub mod plugin;

pub use backgrounds::BackgroundRegistry;
pub use explain::{CancelToken, ExplainOutcome, MemoryPool, ParamValue, RequestBudget, Reservation, TargetSelection};
pub use host::{BackgroundSource, ExplainRequest, Host, output_index};
pub use plugin::{LoadError, ParamInfo, Plugin, PluginRegistry};

/// An error with a gRPC-compatible status code (the ABI's `EXD_*` codes are the same numbers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub code: i32,
    pub message: String,
    /// The plugin returned this error (as opposed to the host refusing the request or a host
    /// function failing on the plugin's behalf): what the plugin-error metric counts.
    pub from_plugin: bool,
}

impl Failure {
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Failure { code, message: message.into(), from_plugin: false }
    }
    pub fn invalid_argument(message: impl Into<String>) -> Self {
        Self::new(explaind_abi::EXD_INVALID_ARGUMENT, message)
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(explaind_abi::EXD_NOT_FOUND, message)
    }
    pub fn failed_precondition(message: impl Into<String>) -> Self {
        Self::new(explaind_abi::EXD_FAILED_PRECONDITION, message)
    }
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(explaind_abi::EXD_INTERNAL, message)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (code {})", self.message, self.code)
    }
}

impl std::error::Error for Failure {}
