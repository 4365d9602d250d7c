//! The explaind plugin ABI, mirrored in Rust.
//!
//! `include/explaind_plugin.h` is the source of truth; every type here copies one struct of it
//! field by field (`#[repr(C)]`), and the layout tests at the bottom of this file (and the C
//! layout program in `tests/c/layout_check.c`) keep the two in step. Read the header for the
//! ownership and lifetime of every pointer; the comments here only point back to it.
//!
//! Status codes and flags are plain integer constants rather than Rust enums: a plugin may send
//! a value this build does not know, and an unknown discriminant in a Rust enum is undefined
//! behaviour.
#![allow(non_camel_case_types, non_snake_case, non_upper_case_globals)]

use std::ffi::{c_char, c_void};

/// ABI major version this crate mirrors. The entry symbol carries it in its name.
pub const ABI_MAJOR: u16 = 1;
/// ABI minor version this crate mirrors. Grows when a struct gains appended fields.
pub const ABI_MINOR: u16 = 5;
/// Name of the single symbol a plugin exports (NUL-terminated for `dlsym`).
pub const ENTRY_SYMBOL_V1: &[u8] = b"explaind_plugin_v1\0";
/// Path of the C header, for tools and tests that compile C plugins.
pub const HEADER_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/include/explaind_plugin.h");

// ----- DLPack -----------------------------------------------------------------------------

pub const kDLCPU: i32 = 1;
pub const kDLCUDA: i32 = 2;
pub const kDLInt: u8 = 0;
pub const kDLUInt: u8 = 1;
pub const kDLFloat: u8 = 2;
pub const kDLBool: u8 = 6;

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DLDevice {
    pub device_type: i32,
    pub device_id: i32,
}

#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DLDataType {
    pub code: u8,
    pub bits: u8,
    pub lanes: u16,
}

impl DLDataType {
    pub const FLOAT32: DLDataType = DLDataType { code: kDLFloat, bits: 32, lanes: 1 };

    /// The DLPack type of an ONNX element type (`TensorProto.DataType`), for the types the
    /// host hands to plugins (ABI 1.5: the input types of EXD_CAP_TYPED_INPUTS).
    pub const fn of_onnx(element_type: i32) -> Option<DLDataType> {
        let (code, bits) = match element_type {
            1 => (kDLFloat, 32),
            2 => (kDLUInt, 8),
            3 => (kDLInt, 8),
            6 => (kDLInt, 32),
            7 => (kDLInt, 64),
            9 => (kDLBool, 8),
            10 => (kDLFloat, 16),
            11 => (kDLFloat, 64),
            _ => return None,
        };
        Some(DLDataType { code, bits, lanes: 1 })
    }

    /// The ONNX element type of this DLPack type, the inverse of [`DLDataType::of_onnx`].
    pub const fn to_onnx(self) -> Option<i32> {
        if self.lanes != 1 {
            return None;
        }
        Some(match (self.code, self.bits) {
            (kDLFloat, 32) => 1,
            (kDLUInt, 8) => 2,
            (kDLInt, 8) => 3,
            (kDLInt, 32) => 6,
            (kDLInt, 64) => 7,
            (kDLBool, 8) => 9,
            (kDLFloat, 16) => 10,
            (kDLFloat, 64) => 11,
            _ => return None,
        })
    }
}

#[repr(C)]
#[derive(Debug)]
pub struct DLTensor {
    pub data: *mut c_void,
    pub device: DLDevice,
    pub ndim: i32,
    pub dtype: DLDataType,
    pub shape: *mut i64,
    pub strides: *mut i64,
    pub byte_offset: u64,
}

// ----- Common pieces ----------------------------------------------------------------------

/// The frozen first member of every versioned struct.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExdStructHeader {
    pub struct_size: u32,
    pub abi_major: u16,
    pub abi_minor: u16,
}

impl ExdStructHeader {
    /// The header a writer built against this crate puts into a struct of type `T`.
    pub const fn current<T>() -> Self {
        ExdStructHeader { struct_size: std::mem::size_of::<T>() as u32, abi_major: ABI_MAJOR, abi_minor: ABI_MINOR }
    }
}

pub type ExdCode = i32;
pub const EXD_OK: ExdCode = 0;
pub const EXD_CANCELLED: ExdCode = 1;
pub const EXD_UNKNOWN: ExdCode = 2;
pub const EXD_INVALID_ARGUMENT: ExdCode = 3;
pub const EXD_DEADLINE_EXCEEDED: ExdCode = 4;
pub const EXD_NOT_FOUND: ExdCode = 5;
pub const EXD_RESOURCE_EXHAUSTED: ExdCode = 8;
pub const EXD_FAILED_PRECONDITION: ExdCode = 9;
pub const EXD_UNIMPLEMENTED: ExdCode = 12;
pub const EXD_INTERNAL: ExdCode = 13;
pub const EXD_PLUGIN_PANICKED: ExdCode = 1000;

/// Opaque error object; only the host creates one (see the header).
#[repr(C)]
pub struct ExdError {
    _opaque: [u8; 0],
}

pub type ExdLogLevel = i32;
pub const EXD_LOG_ERROR: ExdLogLevel = 1;
pub const EXD_LOG_WARN: ExdLogLevel = 2;
pub const EXD_LOG_INFO: ExdLogLevel = 3;
pub const EXD_LOG_DEBUG: ExdLogLevel = 4;

/// Opaque per-call context, created by the host.
#[repr(C)]
pub struct ExdContext {
    _opaque: [u8; 0],
}

/// Opaque plugin instance, created by the plugin.
#[repr(C)]
pub struct ExdInstance {
    _opaque: [u8; 0],
}

// ----- Parameters -------------------------------------------------------------------------

pub type ExdParamKind = i32;
pub const EXD_PARAM_NONE: ExdParamKind = 0;
pub const EXD_PARAM_NUMBER: ExdParamKind = 1;
pub const EXD_PARAM_INTEGER: ExdParamKind = 2;
pub const EXD_PARAM_FLAG: ExdParamKind = 3;
pub const EXD_PARAM_TEXT: ExdParamKind = 4;
pub const EXD_PARAM_NUMBERS: ExdParamKind = 5;
pub const EXD_PARAM_INTEGERS: ExdParamKind = 6;

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ExdParamValue {
    pub kind: ExdParamKind,
    pub reserved: i32,
    pub number: f64,
    pub integer: i64,
    pub text: *const c_char,
    pub numbers: *const f64,
    pub integers: *const i64,
    pub len: usize,
}

impl ExdParamValue {
    /// A value of kind 0: no value.
    pub const NONE: ExdParamValue = ExdParamValue {
        kind: EXD_PARAM_NONE,
        reserved: 0,
        number: 0.0,
        integer: 0,
        text: std::ptr::null(),
        numbers: std::ptr::null(),
        integers: std::ptr::null(),
        len: 0,
    };
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ExdParamSpec {
    pub name: *const c_char,
    pub description: *const c_char,
    pub kind: ExdParamKind,
    pub required: i32,
    pub default_value: ExdParamValue,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ExdParam {
    pub name: *const c_char,
    pub value: ExdParamValue,
}

// ----- Model and request ------------------------------------------------------------------

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ExdTensorInfo {
    pub name: *const c_char,
    pub element_type: i32,
    pub ndim: i32,
    pub shape: *const i64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ExdModelInfo {
    pub header: ExdStructHeader,
    pub name: *const c_char,
    pub version: *const c_char,
    pub sha256: *const c_char,
    pub num_inputs: usize,
    pub inputs: *const ExdTensorInfo,
    pub num_outputs: usize,
    pub outputs: *const ExdTensorInfo,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ExdExplainRequest {
    pub header: ExdStructHeader,
    pub model: *const ExdModelInfo,
    pub num_inputs: usize,
    pub inputs: *const DLTensor,
    pub output_index: usize,
    pub output_row_size: i64,
    pub num_targets: usize,
    pub targets: *const i64,
    pub outputs: *const DLTensor,
    pub num_params: usize,
    pub params: *const ExdParam,
    pub background: *const DLTensor,
    pub max_batch_rows: i64,
    // ABI 1.5
    pub explained_inputs: *const u8,
}

// ----- ABI 1.4: the model's structure ----------------------------------------------------

pub const EXD_ATTR_OTHER: i32 = 0;
pub const EXD_ATTR_FLOAT: i32 = 1;
pub const EXD_ATTR_INT: i32 = 2;
pub const EXD_ATTR_STRING: i32 = 3;
pub const EXD_ATTR_TENSOR: i32 = 4;
pub const EXD_ATTR_FLOATS: i32 = 6;
pub const EXD_ATTR_INTS: i32 = 7;
pub const EXD_ATTR_STRINGS: i32 = 8;

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ExdBytes {
    pub data: *const u8,
    pub len: usize,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ExdAttribute {
    pub name: *const c_char,
    pub kind: i32,
    pub element_type: i32,
    pub int_value: i64,
    pub float_value: f64,
    pub length: usize,
    pub data: *const std::ffi::c_void,
    pub ndim: i32,
    pub reserved: i32,
    pub shape: *const i64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ExdNode {
    pub op_type: *const c_char,
    pub domain: *const c_char,
    pub name: *const c_char,
    pub num_inputs: usize,
    pub inputs: *const *const c_char,
    pub num_outputs: usize,
    pub outputs: *const *const c_char,
    pub num_attributes: usize,
    pub attributes: *const ExdAttribute,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ExdOpsetImport {
    pub domain: *const c_char,
    pub version: i64,
}

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ExdGraph {
    pub header: ExdStructHeader,
    pub num_nodes: usize,
    pub nodes: *const ExdNode,
    pub num_initializers: usize,
    pub initializers: *const ExdAttribute,
    pub num_opsets: usize,
    pub opsets: *const ExdOpsetImport,
}

// ----- Function tables --------------------------------------------------------------------

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExdHostApi {
    pub header: ExdStructHeader,
    pub error_new: Option<unsafe extern "C" fn(code: ExdCode, message: *const c_char) -> *mut ExdError>,
    pub error_free: Option<unsafe extern "C" fn(error: *mut ExdError)>,
    pub error_code: Option<unsafe extern "C" fn(error: *const ExdError) -> ExdCode>,
    pub error_message: Option<unsafe extern "C" fn(error: *const ExdError) -> *const c_char>,
    pub log: Option<unsafe extern "C" fn(context: *mut ExdContext, level: ExdLogLevel, message: *const c_char)>,
    pub is_cancelled: Option<unsafe extern "C" fn(context: *mut ExdContext) -> i32>,
    pub model_info: Option<unsafe extern "C" fn(context: *mut ExdContext) -> *const ExdModelInfo>,
    pub forward: Option<
        unsafe extern "C" fn(
            context: *mut ExdContext,
            inputs: *const DLTensor,
            num_inputs: usize,
            out_output: *mut *mut DLTensor,
        ) -> *mut ExdError,
    >,
    pub tensor_alloc: Option<
        unsafe extern "C" fn(context: *mut ExdContext, shape: *const i64, ndim: i32, out: *mut *mut DLTensor) -> *mut ExdError,
    >,
    pub tensor_release: Option<unsafe extern "C" fn(context: *mut ExdContext, tensor: *mut DLTensor)>,
    pub result_attributions:
        Option<unsafe extern "C" fn(context: *mut ExdContext, input_index: usize, out: *mut *mut DLTensor) -> *mut ExdError>,
    pub result_base_values: Option<unsafe extern "C" fn(context: *mut ExdContext, out: *mut *mut DLTensor) -> *mut ExdError>,
    pub result_extra: Option<
        unsafe extern "C" fn(
            context: *mut ExdContext,
            name: *const c_char,
            shape: *const i64,
            ndim: i32,
            out: *mut *mut DLTensor,
        ) -> *mut ExdError,
    >,
    pub result_info:
        Option<unsafe extern "C" fn(context: *mut ExdContext, key: *const c_char, value: *const c_char) -> *mut ExdError>,
    // ---- ABI 1.1 ----
    pub gradient: Option<
        unsafe extern "C" fn(
            context: *mut ExdContext,
            inputs: *const DLTensor,
            num_inputs: usize,
            seeds: *const DLTensor,
            out_gradients: *mut *mut DLTensor,
        ) -> *mut ExdError,
    >,
    pub deeplift_multipliers: Option<
        unsafe extern "C" fn(
            context: *mut ExdContext,
            inputs: *const DLTensor,
            references: *const DLTensor,
            num_inputs: usize,
            seeds: *const DLTensor,
            out_multipliers: *mut *mut DLTensor,
        ) -> *mut ExdError,
    >,
    pub deep_shap: Option<
        unsafe extern "C" fn(
            context: *mut ExdContext,
            inputs: *const DLTensor,
            num_inputs: usize,
            seeds: *const DLTensor,
            out_attributions: *mut *mut DLTensor,
            out_expected: *mut *mut DLTensor,
        ) -> *mut ExdError,
    >,
    // ---- ABI 1.2 ----
    pub layer_gradient: Option<
        unsafe extern "C" fn(
            context: *mut ExdContext,
            inputs: *const DLTensor,
            num_inputs: usize,
            seeds: *const DLTensor,
            layer: *const c_char,
            out_layer: *mut *const c_char,
            out_activation: *mut *mut DLTensor,
            out_gradient: *mut *mut DLTensor,
        ) -> *mut ExdError,
    >,
    // ---- ABI 1.4 ----
    pub model_graph: Option<unsafe extern "C" fn(context: *mut ExdContext, out_graph: *mut *const ExdGraph) -> *mut ExdError>,
    // ---- ABI 1.5 ----
    pub layer_activation: Option<
        unsafe extern "C" fn(
            context: *mut ExdContext,
            inputs: *const DLTensor,
            num_inputs: usize,
            layer: *const c_char,
            out_layer: *mut *const c_char,
            out_activation: *mut *mut DLTensor,
        ) -> *mut ExdError,
    >,
    pub layer_gradient_at: Option<
        unsafe extern "C" fn(
            context: *mut ExdContext,
            inputs: *const DLTensor,
            num_inputs: usize,
            layer: *const c_char,
            layer_values: *const DLTensor,
            seeds: *const DLTensor,
            out_layer: *mut *const c_char,
            out_gradient: *mut *mut DLTensor,
        ) -> *mut ExdError,
    >,
    pub layer_deeplift_at: Option<
        unsafe extern "C" fn(
            context: *mut ExdContext,
            inputs: *const DLTensor,
            num_inputs: usize,
            layer: *const c_char,
            layer_values: *const DLTensor,
            layer_references: *const DLTensor,
            seeds: *const DLTensor,
            out_layer: *mut *const c_char,
            out_multipliers: *mut *mut DLTensor,
        ) -> *mut ExdError,
    >,
}

impl ExdHostApi {
    /// Whether a table of `struct_size` bytes holds the field ending at `end` (its offset plus
    /// its size): how a reader built against a newer minor version tells what an older writer
    /// filled in.
    pub fn has_field(struct_size: u32, end: usize) -> bool {
        struct_size as usize >= end
    }
}

pub const EXD_CAP_REENTRANT: u64 = 1 << 0;
pub const EXD_NEEDS_BACKGROUND: u64 = 1 << 1;
pub const EXD_NEEDS_GRADIENTS: u64 = 1 << 2;
pub const EXD_NEEDS_TREE_ENSEMBLE: u64 = 1 << 3;
pub const EXD_CAP_TYPED_INPUTS: u64 = 1 << 4;

#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ExdPluginInfo {
    pub header: ExdStructHeader,
    pub name: *const c_char,
    pub version: *const c_char,
    pub description: *const c_char,
    pub flags: u64,
    pub num_params: usize,
    pub params: *const ExdParamSpec,
    // ABI 1.3
    pub param_ranges: *const ExdParamRange,
}

/// ABI 1.3: the bounds of one parameter (see the header).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExdParamRange {
    pub min: f64,
    pub max: f64,
    pub max_len: u64,
}

impl ExdParamRange {
    /// No bounds at all.
    pub const UNBOUNDED: ExdParamRange = ExdParamRange { min: f64::NEG_INFINITY, max: f64::INFINITY, max_len: 0 };
}

/// ABI 1.3: what one `explain` call will cost (see the header).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExdCost {
    pub header: ExdStructHeader,
    pub model_rows: f64,
    pub scratch_bytes: f64,
    pub driver: i32,
    pub reserved: i32,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct ExdPluginApi {
    pub header: ExdStructHeader,
    pub info: *const ExdPluginInfo,
    pub create: Option<unsafe extern "C" fn(out_instance: *mut *mut ExdInstance) -> *mut ExdError>,
    pub destroy: Option<unsafe extern "C" fn(instance: *mut ExdInstance)>,
    pub explain: Option<
        unsafe extern "C" fn(
            instance: *mut ExdInstance,
            context: *mut ExdContext,
            request: *const ExdExplainRequest,
        ) -> *mut ExdError,
    >,
    // ABI 1.3
    pub estimate: Option<
        unsafe extern "C" fn(
            instance: *mut ExdInstance,
            context: *mut ExdContext,
            request: *const ExdExplainRequest,
            out_cost: *mut ExdCost,
        ) -> *mut ExdError,
    >,
}

/// Type of the `explaind_plugin_v1` entry point.
pub type ExdPluginEntryV1 = unsafe extern "C" fn(host: *const ExdHostApi, out_plugin: *mut *const ExdPluginApi) -> *mut ExdError;

// The tables and descriptions a plugin returns are STATIC and read-only; they hold raw pointers
// only to other STATIC data, so sharing them between threads is sound.
unsafe impl Sync for ExdPluginApi {}
unsafe impl Sync for ExdPluginInfo {}
unsafe impl Sync for ExdParamSpec {}
unsafe impl Sync for ExdHostApi {}
unsafe impl Sync for ExdParamRange {}

/// The sizes of the structs ABI 1.5 grew, as 1.4 (and every version before) defined them.
pub mod v1_4_sizes {
    pub const EXPLAIN_REQUEST: u32 = 104;
    pub const HOST_API: u32 = 160;
}

/// The sizes of the structs ABI 1.4 grew, as 1.3 defined them.
pub mod v1_3_sizes {
    pub const HOST_API: u32 = 152;
}

/// The sizes of the structs ABI 1.3 grew, as 1.2 (and every version before) defined them.
pub mod v1_2_sizes {
    pub const HOST_API: u32 = 152;
    pub const PLUGIN_INFO: u32 = 56;
    pub const PLUGIN_API: u32 = 40;
}

/// The size of the host table as ABI 1.1 defined it.
pub mod v1_1_sizes {
    pub const HOST_API: u32 = 144;
}

/// The size of each struct as ABI 1.0 defined it: the smallest `struct_size` a reader accepts.
pub mod v1_0_sizes {
    pub const MODEL_INFO: u32 = 64;
    pub const EXPLAIN_REQUEST: u32 = 104;
    pub const HOST_API: u32 = 120;
    pub const PLUGIN_INFO: u32 = 56;
    pub const PLUGIN_API: u32 = 40;
}

/// Field offsets and sizes of every struct, as `(struct.field, offset, size)` and
/// `(struct, size)`; the layout tests compare these with what a C compiler says of the header.
pub fn layout_table() -> Vec<(String, usize, usize)> {
    use std::mem::{offset_of, size_of};
    macro_rules! fields {
        ($out:ident, $ty:ident { $($field:ident : $fty:ty),* $(,)? }) => {
            $( $out.push((format!("{}.{}", stringify!($ty), stringify!($field)), offset_of!($ty, $field), size_of::<$fty>())); )*
            $out.push((stringify!($ty).to_string(), 0, size_of::<$ty>()));
        };
    }
    let mut out = Vec::new();
    fields!(out, DLDevice { device_type: i32, device_id: i32 });
    fields!(out, DLDataType { code: u8, bits: u8, lanes: u16 });
    fields!(out, ExdStructHeader { struct_size: u32, abi_major: u16, abi_minor: u16 });
    fields!(
        out,
        DLTensor { data: usize, device: DLDevice, ndim: i32, dtype: DLDataType, shape: usize, strides: usize, byte_offset: u64 }
    );
    fields!(
        out,
        ExdParamValue {
            kind: i32,
            reserved: i32,
            number: f64,
            integer: i64,
            text: usize,
            numbers: usize,
            integers: usize,
            len: usize
        }
    );
    fields!(out, ExdParamSpec { name: usize, description: usize, kind: i32, required: i32, default_value: ExdParamValue });
    fields!(out, ExdParam { name: usize, value: ExdParamValue });
    fields!(out, ExdTensorInfo { name: usize, element_type: i32, ndim: i32, shape: usize });
    fields!(
        out,
        ExdModelInfo {
            header: ExdStructHeader,
            name: usize,
            version: usize,
            sha256: usize,
            num_inputs: usize,
            inputs: usize,
            num_outputs: usize,
            outputs: usize
        }
    );
    fields!(
        out,
        ExdExplainRequest {
            header: ExdStructHeader,
            model: usize,
            num_inputs: usize,
            inputs: usize,
            output_index: usize,
            output_row_size: i64,
            num_targets: usize,
            targets: usize,
            outputs: usize,
            num_params: usize,
            params: usize,
            background: usize,
            max_batch_rows: i64,
            explained_inputs: usize
        }
    );
    fields!(
        out,
        ExdHostApi {
            header: ExdStructHeader,
            error_new: usize,
            error_free: usize,
            error_code: usize,
            error_message: usize,
            log: usize,
            is_cancelled: usize,
            model_info: usize,
            forward: usize,
            tensor_alloc: usize,
            tensor_release: usize,
            result_attributions: usize,
            result_base_values: usize,
            result_extra: usize,
            result_info: usize,
            gradient: usize,
            deeplift_multipliers: usize,
            deep_shap: usize,
            layer_gradient: usize,
            model_graph: usize,
            layer_activation: usize,
            layer_gradient_at: usize,
            layer_deeplift_at: usize
        }
    );
    fields!(out, ExdBytes { data: usize, len: usize });
    fields!(
        out,
        ExdAttribute {
            name: usize,
            kind: i32,
            element_type: i32,
            int_value: i64,
            float_value: f64,
            length: usize,
            data: usize,
            ndim: i32,
            reserved: i32,
            shape: usize
        }
    );
    fields!(
        out,
        ExdNode {
            op_type: usize,
            domain: usize,
            name: usize,
            num_inputs: usize,
            inputs: usize,
            num_outputs: usize,
            outputs: usize,
            num_attributes: usize,
            attributes: usize
        }
    );
    fields!(out, ExdOpsetImport { domain: usize, version: i64 });
    fields!(
        out,
        ExdGraph {
            header: ExdStructHeader,
            num_nodes: usize,
            nodes: usize,
            num_initializers: usize,
            initializers: usize,
            num_opsets: usize,
            opsets: usize
        }
    );
    fields!(out, ExdParamRange { min: f64, max: f64, max_len: u64 });
    fields!(out, ExdCost { header: ExdStructHeader, model_rows: f64, scratch_bytes: f64, driver: i32, reserved: i32 });
    fields!(
        out,
        ExdPluginInfo {
            header: ExdStructHeader,
            name: usize,
            version: usize,
            description: usize,
            flags: u64,
            num_params: usize,
            params: usize,
            param_ranges: usize
        }
    );
    fields!(
        out,
        ExdPluginApi { header: ExdStructHeader, info: usize, create: usize, destroy: usize, explain: usize, estimate: usize }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::size_of;

    #[test]
    fn v1_0_sizes_match_the_structs() {
        assert_eq!(size_of::<ExdModelInfo>() as u32, v1_0_sizes::MODEL_INFO);
        assert_eq!(std::mem::offset_of!(ExdExplainRequest, explained_inputs) as u32, v1_4_sizes::EXPLAIN_REQUEST, "1.5 appends");
        assert_eq!(v1_4_sizes::EXPLAIN_REQUEST, v1_0_sizes::EXPLAIN_REQUEST, "1.1 to 1.4 left ExdExplainRequest alone");
        assert_eq!(size_of::<ExdHostApi>(), 184);
        assert_eq!(std::mem::offset_of!(ExdHostApi, model_graph) as u32, v1_3_sizes::HOST_API, "1.4 appends after 1.3");
        assert_eq!(std::mem::offset_of!(ExdHostApi, layer_activation) as u32, v1_4_sizes::HOST_API, "1.5 appends after 1.4");
        assert_eq!(v1_3_sizes::HOST_API, v1_2_sizes::HOST_API, "1.3 left ExdHostApi alone");
        assert_eq!((size_of::<ExdAttribute>(), size_of::<ExdNode>(), size_of::<ExdGraph>()), (64, 72, 56));
        assert_eq!(std::mem::offset_of!(ExdHostApi, gradient) as u32, v1_0_sizes::HOST_API, "1.1 appends after 1.0");
        assert_eq!(std::mem::offset_of!(ExdHostApi, layer_gradient) as u32, v1_1_sizes::HOST_API, "1.2 appends after 1.1");
        assert_eq!(v1_2_sizes::PLUGIN_INFO, v1_0_sizes::PLUGIN_INFO, "1.1 and 1.2 left ExdPluginInfo alone");
        assert_eq!(v1_2_sizes::PLUGIN_API, v1_0_sizes::PLUGIN_API, "1.1 and 1.2 left ExdPluginApi alone");
        assert_eq!(std::mem::offset_of!(ExdPluginInfo, param_ranges) as u32, v1_2_sizes::PLUGIN_INFO, "1.3 appends");
        assert_eq!(std::mem::offset_of!(ExdPluginApi, estimate) as u32, v1_2_sizes::PLUGIN_API, "1.3 appends");
        assert_eq!(size_of::<ExdPluginInfo>(), 64);
        assert_eq!(size_of::<ExdPluginApi>(), 48);
        assert_eq!(size_of::<ExdParamRange>(), 24);
        assert_eq!(size_of::<ExdCost>(), 32);
        assert_eq!(size_of::<DLTensor>(), 48);
        assert_eq!(size_of::<ExdParamValue>(), 56);
    }
}
