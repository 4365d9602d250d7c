//! The model's structure (ABI 1.4 `model_graph`) as borrowed Rust types: nodes in graph order,
//! their attributes, the initializers and the operator sets, read-only. Everything borrows from
//! the host's view, which lives until `explain` returns.

use explaind_abi as abi;
use std::ffi::{CStr, c_char};

/// The model's main graph.
#[derive(Clone, Copy)]
pub struct Graph<'a> {
    raw: &'a abi::ExdGraph,
}

/// One node.
#[derive(Clone, Copy)]
pub struct Node<'a> {
    raw: &'a abi::ExdNode,
}

/// One attribute (or initializer, as a tensor named after it).
#[derive(Clone, Debug)]
pub struct Attribute<'a> {
    pub name: &'a str,
    pub value: AttributeValue<'a>,
}

#[derive(Clone, Debug)]
pub enum AttributeValue<'a> {
    Float(f32),
    Int(i64),
    /// Bytes, as ONNX stores strings.
    String(&'a [u8]),
    Floats(&'a [f32]),
    Ints(&'a [i64]),
    Strings(Vec<&'a [u8]>),
    Tensor(Tensor<'a>),
    /// A kind the ABI does not expose (a subgraph), or tensor data the file keeps elsewhere.
    Other,
}

#[derive(Clone, Debug)]
pub struct Tensor<'a> {
    /// ONNX `TensorProto.DataType`.
    pub element_type: i32,
    pub shape: &'a [i64],
    pub elements: Elements<'a>,
}

/// A tensor's elements, typed by its element type.
#[derive(Clone, Debug)]
pub enum Elements<'a> {
    F32(&'a [f32]),
    F64(&'a [f64]),
    I64(&'a [i64]),
    I32(&'a [i32]),
    U8(&'a [u8]),
    I8(&'a [i8]),
    /// 0 or 1 per element.
    Bool(&'a [u8]),
    /// Any other type (float16 bits, 16-bit and unsigned 32/64-bit integers), as raw bytes.
    Bytes(&'a [u8]),
}

fn text<'a>(p: *const c_char) -> &'a str {
    if p.is_null() {
        return "";
    }
    // SAFETY: the host's strings are NUL-terminated and live as long as the view.
    unsafe { CStr::from_ptr(p) }.to_str().unwrap_or("")
}

/// `len` items at `data` (an empty slice for a NULL pointer).
///
/// # Safety
/// `data` must point to `len` valid items living for `'a`.
unsafe fn items<'a, T>(data: *const T, len: usize) -> &'a [T] {
    if data.is_null() || len == 0 { &[] } else { unsafe { std::slice::from_raw_parts(data, len) } }
}

impl<'a> Graph<'a> {
    /// # Safety
    /// `raw` must be a view the host handed out, valid for `'a`.
    pub(crate) unsafe fn from_raw(raw: &'a abi::ExdGraph) -> Graph<'a> {
        Graph { raw }
    }

    pub fn nodes(self) -> impl Iterator<Item = Node<'a>> + 'a {
        // SAFETY: the host's view holds num_nodes nodes.
        unsafe { items(self.raw.nodes, self.raw.num_nodes) }.iter().map(|raw| Node { raw })
    }

    /// The node that writes `value`, if any.
    pub fn producer(self, value: &str) -> Option<Node<'a>> {
        self.nodes().find(|n| n.outputs().any(|o| o == value))
    }

    /// The initializer named `name`.
    pub fn initializer(self, name: &str) -> Option<Attribute<'a>> {
        // SAFETY: the host's view holds num_initializers attributes.
        unsafe { items(self.raw.initializers, self.raw.num_initializers) }.iter().map(attribute).find(|a| a.name == name)
    }

    /// The version of the operator set imported for `domain` ("" for the default ONNX domain).
    pub fn opset(self, domain: &str) -> Option<i64> {
        // SAFETY: the host's view holds num_opsets entries.
        unsafe { items(self.raw.opsets, self.raw.num_opsets) }.iter().find(|o| text(o.domain) == domain).map(|o| o.version)
    }
}

impl<'a> Node<'a> {
    pub fn op_type(self) -> &'a str {
        text(self.raw.op_type)
    }

    /// "" for the default ONNX domain.
    pub fn domain(self) -> &'a str {
        text(self.raw.domain)
    }

    pub fn name(self) -> &'a str {
        text(self.raw.name)
    }

    pub fn inputs(self) -> impl Iterator<Item = &'a str> + 'a {
        // SAFETY: the host's node holds num_inputs names.
        unsafe { items(self.raw.inputs, self.raw.num_inputs) }.iter().map(|&p| text(p))
    }

    pub fn outputs(self) -> impl Iterator<Item = &'a str> + 'a {
        // SAFETY: the host's node holds num_outputs names.
        unsafe { items(self.raw.outputs, self.raw.num_outputs) }.iter().map(|&p| text(p))
    }

    pub fn attributes(self) -> impl Iterator<Item = Attribute<'a>> + 'a {
        // SAFETY: the host's node holds num_attributes attributes.
        unsafe { items(self.raw.attributes, self.raw.num_attributes) }.iter().map(attribute)
    }

    /// The value of the attribute named `name`.
    pub fn attribute(self, name: &str) -> Option<AttributeValue<'a>> {
        self.attributes().find(|a| a.name == name).map(|a| a.value)
    }
}

fn attribute<'a>(raw: &'a abi::ExdAttribute) -> Attribute<'a> {
    let data = raw.data;
    let len = raw.length;
    // SAFETY (every arm): the header states what `data` holds for each kind, `length` items.
    let value = unsafe {
        match raw.kind {
            abi::EXD_ATTR_FLOAT => AttributeValue::Float(raw.float_value as f32),
            abi::EXD_ATTR_INT => AttributeValue::Int(raw.int_value),
            abi::EXD_ATTR_STRING => AttributeValue::String(items(data as *const u8, len)),
            abi::EXD_ATTR_FLOATS => AttributeValue::Floats(items(data as *const f32, len)),
            abi::EXD_ATTR_INTS => AttributeValue::Ints(items(data as *const i64, len)),
            abi::EXD_ATTR_STRINGS => {
                AttributeValue::Strings(items(data as *const abi::ExdBytes, len).iter().map(|b| items(b.data, b.len)).collect())
            }
            abi::EXD_ATTR_TENSOR => {
                let shape = items(raw.shape, raw.ndim.max(0) as usize);
                let elements = match raw.element_type {
                    1 => Elements::F32(items(data as *const f32, len)),
                    11 => Elements::F64(items(data as *const f64, len)),
                    7 => Elements::I64(items(data as *const i64, len)),
                    6 => Elements::I32(items(data as *const i32, len)),
                    2 => Elements::U8(items(data as *const u8, len)),
                    3 => Elements::I8(items(data as *const i8, len)),
                    9 => Elements::Bool(items(data as *const u8, len)),
                    other => {
                        let width = match other {
                            4 | 5 | 10 | 16 => 2,
                            12 => 4,
                            13 => 8,
                            _ => 0,
                        };
                        Elements::Bytes(items(data as *const u8, len * width))
                    }
                };
                AttributeValue::Tensor(Tensor { element_type: raw.element_type, shape, elements })
            }
            _ => AttributeValue::Other,
        }
    };
    Attribute { name: text(raw.name), value }
}
