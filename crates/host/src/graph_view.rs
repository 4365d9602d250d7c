//! ABI 1.4's `model_graph`: a read-only C view of a model's main graph (nodes, attributes,
//! initializers, operator sets), built once per model file from its ONNX protobuf and shared
//! between calls.
//!
//! The view owns everything its pointers reach: names as `CString`s, lists of pointers, and
//! tensor data copied into 8-byte-aligned buffers (protobuf `raw_data` carries no alignment),
//! so a plugin can read every element type as a typed array. Built views are kept in a small
//! cache keyed by the model file's digest; a call holds its view by `Arc` until it returns.

use explaind_abi as abi;
use explaind_onnx::{AttributeProto, ModelProto, TensorProto, is_default_domain};
use std::collections::VecDeque;
use std::ffi::{CString, c_char};
use std::sync::{Arc, Mutex};

/// A model's graph as the ABI's `ExdGraph`, with the storage its pointers point into.
pub(crate) struct GraphView {
    graph: abi::ExdGraph,
    // Storage, never read from Rust: the pointers in `graph` point into it.
    _strings: Vec<CString>,
    _name_lists: Vec<Vec<*const c_char>>,
    _nodes: Vec<abi::ExdNode>,
    _attributes: Vec<Vec<abi::ExdAttribute>>,
    _initializers: Vec<abi::ExdAttribute>,
    _opsets: Vec<abi::ExdOpsetImport>,
    _buffers: Vec<Vec<u64>>,
    _shapes: Vec<Vec<i64>>,
    _byte_lists: Vec<Vec<abi::ExdBytes>>,
}

// The view is immutable once built and owns every allocation its raw pointers reach.
unsafe impl Send for GraphView {}
unsafe impl Sync for GraphView {}

impl GraphView {
    pub fn graph(&self) -> *const abi::ExdGraph {
        &self.graph
    }

    /// The view of `model`'s main graph.
    pub fn build(model: &ModelProto) -> Result<GraphView, String> {
        let source = model.graph.as_ref().ok_or("the model has no graph")?;
        let mut storage = Storage::default();
        let mut nodes = Vec::with_capacity(source.node.len());
        let mut attribute_lists = Vec::with_capacity(source.node.len());
        for node in &source.node {
            let attributes: Vec<abi::ExdAttribute> = node.attribute.iter().map(|a| storage.attribute(a)).collect();
            let domain = if is_default_domain(node.domain()) { "" } else { node.domain() };
            nodes.push(abi::ExdNode {
                op_type: storage.string(node.op_type()),
                domain: storage.string(domain),
                name: storage.string(node.name()),
                num_inputs: node.input.len(),
                inputs: storage.names(&node.input),
                num_outputs: node.output.len(),
                outputs: storage.names(&node.output),
                num_attributes: attributes.len(),
                attributes: attributes.as_ptr(),
            });
            // The Vec's heap buffer does not move when the Vec itself is moved into the list.
            attribute_lists.push(attributes);
        }
        let initializers: Vec<abi::ExdAttribute> = source.initializer.iter().map(|t| storage.tensor(t.name(), t)).collect();
        let opsets: Vec<abi::ExdOpsetImport> = model
            .opset_import
            .iter()
            .map(|o| {
                let domain = o.domain.as_deref().unwrap_or("");
                let domain = if is_default_domain(domain) { "" } else { domain };
                abi::ExdOpsetImport { domain: storage.string(domain), version: o.version.unwrap_or(0) }
            })
            .collect();
        let graph = abi::ExdGraph {
            header: abi::ExdStructHeader::current::<abi::ExdGraph>(),
            num_nodes: nodes.len(),
            nodes: nodes.as_ptr(),
            num_initializers: initializers.len(),
            initializers: initializers.as_ptr(),
            num_opsets: opsets.len(),
            opsets: opsets.as_ptr(),
        };
        Ok(GraphView {
            graph,
            _strings: storage.strings,
            _name_lists: storage.name_lists,
            _nodes: nodes,
            _attributes: attribute_lists,
            _initializers: initializers,
            _opsets: opsets,
            _buffers: storage.buffers,
            _shapes: storage.shapes,
            _byte_lists: storage.byte_lists,
        })
    }
}

/// The allocations a view's pointers reach, filled while it is built. Each `Vec` pushed here is
/// never resized afterwards, so pointers into its heap buffer stay valid.
#[derive(Default)]
struct Storage {
    strings: Vec<CString>,
    name_lists: Vec<Vec<*const c_char>>,
    buffers: Vec<Vec<u64>>,
    shapes: Vec<Vec<i64>>,
    byte_lists: Vec<Vec<abi::ExdBytes>>,
}

impl Storage {
    fn string(&mut self, text: &str) -> *const c_char {
        // ONNX strings in names hold no NUL; one that does is cut there rather than refused.
        let text = text.split('\0').next().unwrap_or("");
        let owned = CString::new(text).expect("no NUL left");
        let pointer = owned.as_ptr();
        self.strings.push(owned);
        pointer
    }

    fn names(&mut self, names: &[String]) -> *const *const c_char {
        let list: Vec<*const c_char> = names.iter().map(|n| self.string(n)).collect();
        let pointer = list.as_ptr();
        self.name_lists.push(list);
        pointer
    }

    /// `bytes` copied into an 8-byte-aligned buffer.
    fn aligned(&mut self, bytes: &[u8]) -> *const std::ffi::c_void {
        let mut buffer = vec![0u64; bytes.len().div_ceil(8)];
        // SAFETY: the buffer holds at least bytes.len() bytes.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), buffer.as_mut_ptr() as *mut u8, bytes.len()) };
        let pointer = buffer.as_ptr() as *const std::ffi::c_void;
        self.buffers.push(buffer);
        pointer
    }

    fn attribute(&mut self, a: &AttributeProto) -> abi::ExdAttribute {
        let mut out = empty(self.string(a.name()));
        match a.r#type.unwrap_or(0) {
            abi::EXD_ATTR_FLOAT => {
                out.kind = abi::EXD_ATTR_FLOAT;
                out.float_value = a.f.unwrap_or(0.0) as f64;
            }
            abi::EXD_ATTR_INT => {
                out.kind = abi::EXD_ATTR_INT;
                out.int_value = a.i.unwrap_or(0);
            }
            abi::EXD_ATTR_STRING => {
                let bytes = a.s.as_deref().unwrap_or(&[]);
                out.kind = abi::EXD_ATTR_STRING;
                out.length = bytes.len();
                out.data = self.aligned(bytes);
            }
            abi::EXD_ATTR_FLOATS => {
                out.kind = abi::EXD_ATTR_FLOATS;
                out.length = a.floats.len();
                out.data = self.aligned(&a.floats.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
            }
            abi::EXD_ATTR_INTS => {
                out.kind = abi::EXD_ATTR_INTS;
                out.length = a.ints.len();
                out.data = self.aligned(&a.ints.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>());
            }
            abi::EXD_ATTR_STRINGS => {
                let mut list = Vec::with_capacity(a.strings.len());
                for s in &a.strings {
                    let data = self.aligned(s) as *const u8;
                    list.push(abi::ExdBytes { data, len: s.len() });
                }
                out.kind = abi::EXD_ATTR_STRINGS;
                out.length = list.len();
                out.data = list.as_ptr() as *const std::ffi::c_void;
                self.byte_lists.push(list);
            }
            abi::EXD_ATTR_TENSOR => {
                if let Some(t) = &a.t {
                    let name = out.name;
                    out = self.tensor_named(name, t);
                }
            }
            _ => {}
        }
        out
    }

    fn tensor(&mut self, name: &str, t: &TensorProto) -> abi::ExdAttribute {
        let name = self.string(name);
        self.tensor_named(name, t)
    }

    /// A tensor as an attribute of kind TENSOR; of kind OTHER when its data lives outside the
    /// file or its type has no fixed-size elements (strings).
    fn tensor_named(&mut self, name: *const c_char, t: &TensorProto) -> abi::ExdAttribute {
        let mut out = empty(name);
        let element_type = t.data_type.unwrap_or(0);
        let external = t.data_location == Some(1);
        let Some(bytes) = (!external).then(|| element_bytes(t, element_type)).flatten() else { return out };
        let count: usize = t.dims.iter().map(|&d| d.max(0) as usize).product();
        let width = element_width(element_type).expect("element_bytes knows the width");
        if bytes.len() != count * width {
            return out;
        }
        let shape = t.dims.clone();
        out.kind = abi::EXD_ATTR_TENSOR;
        out.element_type = element_type;
        out.length = count;
        out.data = self.aligned(&bytes);
        out.ndim = shape.len() as i32;
        out.shape = shape.as_ptr();
        self.shapes.push(shape);
        out
    }
}

fn empty(name: *const c_char) -> abi::ExdAttribute {
    abi::ExdAttribute {
        name,
        kind: abi::EXD_ATTR_OTHER,
        element_type: 0,
        int_value: 0,
        float_value: 0.0,
        length: 0,
        data: std::ptr::null(),
        ndim: 0,
        reserved: 0,
        shape: std::ptr::null(),
    }
}

/// Bytes per element of the ONNX data types the view exposes.
fn element_width(element_type: i32) -> Option<usize> {
    Some(match element_type {
        2 | 3 | 9 => 1,       // uint8, int8, bool
        4 | 5 | 10 | 16 => 2, // uint16, int16, float16, bfloat16
        1 | 6 | 12 => 4,      // float32, int32, uint32
        7 | 11 | 13 => 8,     // int64, double, uint64
        _ => return None,
    })
}

/// A tensor's elements as little-endian bytes, from `raw_data` or the typed field ONNX stores
/// that type in.
fn element_bytes(t: &TensorProto, element_type: i32) -> Option<Vec<u8>> {
    let width = element_width(element_type)?;
    if let Some(raw) = t.raw_data.as_ref().filter(|r| !r.is_empty()) {
        return Some(raw.clone());
    }
    Some(match element_type {
        1 => t.float_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        7 => t.int64_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        11 => t.double_data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        12 | 13 => t.uint64_data.iter().flat_map(|v| v.to_le_bytes()[..width].to_vec()).collect(),
        // int32_data holds every narrower type, one element per entry.
        _ => t.int32_data.iter().flat_map(|v| v.to_le_bytes()[..width].to_vec()).collect(),
    })
}

/// How many built views are kept for reuse (by model digest).
const CACHED_VIEWS: usize = 4;

static CACHE: Mutex<VecDeque<(String, Arc<GraphView>)>> = Mutex::new(VecDeque::new());

/// The view of the model at `path` whose file digest is `sha256`, built on first use.
pub(crate) fn view_of(sha256: &str, path: &std::path::Path) -> Result<Arc<GraphView>, String> {
    if let Some((_, view)) = CACHE.lock().unwrap().iter().find(|(digest, _)| digest == sha256) {
        return Ok(view.clone());
    }
    let model = ModelProto::load(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let view = Arc::new(GraphView::build(&model)?);
    let mut cache = CACHE.lock().unwrap();
    if cache.len() >= CACHED_VIEWS {
        cache.pop_front();
    }
    cache.push_back((sha256.to_string(), view.clone()));
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::*;
    use explaind_onnx::proto::tensor_proto::DataType;
    use explaind_onnx::{Dim, GraphBuilder, tensor_f32, tensor_i64};
    use std::ffi::CStr;

    fn text(p: *const c_char) -> String {
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }

    #[test]
    fn the_view_shows_nodes_attributes_initializers_and_opsets_as_the_file_states_them() {
        let mut b = GraphBuilder::new("view");
        b.add_input("x", DataType::Float, [Dim::Value(1), Dim::Value(3)]);
        let w = b.add_initializer(tensor_f32("w", &[3, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]));
        let mut raw = tensor_i64("modes", &[3], &[0, 0, 0]);
        // A uint8 tensor as raw bytes (as opset 5's nodes_modes is stored).
        raw.data_type = Some(DataType::Uint8 as i32);
        raw.int64_data.clear();
        raw.raw_data = Some(vec![0, 4, 6]);
        let attrs = vec![
            AttributeProto::ints("perm", [1, 0]),
            AttributeProto::float("alpha", 0.5),
            AttributeProto::string("mode", "BRANCH_LEQ"),
            AttributeProto::tensor("modes", raw),
        ];
        let y = b.add_node("MatMul", &["x", &w], vec![]);
        let z = b.add_node("Transpose", &[&y], attrs);
        b.add_output(&z, [Dim::Value(2), Dim::Value(1)]);
        let model = ModelProto::new(b.finish(), &[("", 17), ("ai.onnx.ml", 3)]);
        let view = GraphView::build(&model).unwrap();
        let g = unsafe { &*view.graph() };
        assert_eq!(g.num_nodes, 2);
        let nodes = unsafe { std::slice::from_raw_parts(g.nodes, g.num_nodes) };
        assert_eq!((text(nodes[0].op_type), text(nodes[0].domain)), ("MatMul".into(), "".into()));
        let inputs = unsafe { std::slice::from_raw_parts(nodes[0].inputs, nodes[0].num_inputs) };
        assert_eq!(inputs.iter().map(|&p| text(p)).collect::<Vec<_>>(), ["x", w.as_str()]);
        let attrs = unsafe { std::slice::from_raw_parts(nodes[1].attributes, nodes[1].num_attributes) };
        assert_eq!(attrs[0].kind, abi::EXD_ATTR_INTS);
        assert_eq!(unsafe { std::slice::from_raw_parts(attrs[0].data as *const i64, attrs[0].length) }, [1, 0]);
        assert_eq!((attrs[1].kind, attrs[1].float_value), (abi::EXD_ATTR_FLOAT, 0.5));
        let mode = unsafe { std::slice::from_raw_parts(attrs[2].data as *const u8, attrs[2].length) };
        assert_eq!(mode, b"BRANCH_LEQ");
        assert_eq!((attrs[3].kind, attrs[3].element_type, attrs[3].length), (abi::EXD_ATTR_TENSOR, 2, 3));
        assert_eq!(unsafe { std::slice::from_raw_parts(attrs[3].data as *const u8, 3) }, [0, 4, 6]);
        let inits = unsafe { std::slice::from_raw_parts(g.initializers, g.num_initializers) };
        assert_eq!((text(inits[0].name), inits[0].element_type, inits[0].ndim), (w.clone(), 1, 2));
        let values = unsafe { std::slice::from_raw_parts(inits[0].data as *const f32, inits[0].length) };
        assert_eq!(values, [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let opsets = unsafe { std::slice::from_raw_parts(g.opsets, g.num_opsets) };
        assert_eq!(
            opsets.iter().map(|o| (text(o.domain), o.version)).collect::<Vec<_>>(),
            [("".into(), 17), ("ai.onnx.ml".into(), 3)]
        );
    }
}
