//! Reading, editing and writing ONNX model files, in plain Rust.
//!
//! This is the ground floor of explaind's graph compiler, which turns an inference graph into
//! a graph that also computes gradients and hands it to ONNX Runtime. The compiler needs to
//! read a model, look things up in it (which node makes a value, who reads it, what an
//! initializer holds), append nodes without name clashes, and write a file ONNX Runtime
//! accepts. Nothing here runs a model.
//!
//! - [`proto`]: the ONNX IR (version 10) as prost messages, written by hand because no crate
//!   ships current prost types for it. A model written by the `onnx` Python package decodes
//!   and re-encodes to the same bytes; see the module for the little that is not modelled.
//! - [`ModelProto::load`] / [`ModelProto::save`], [`ModelProto::from_bytes`] /
//!   [`ModelProto::to_bytes`].
//! - Tensors: [`tensor_f32`], [`tensor_i64`], [`TensorProto::to_f32`], [`TensorProto::to_i64`].
//! - Attributes: `node.attr_int("axis")` and friends; `AttributeProto::ints("pads", ...)`.
//! - Lookups: [`GraphProto::initializer`], [`GraphProto::producer`],
//!   [`GraphProto::consumers`], [`ModelProto::default_opset`].
//! - [`GraphBuilder`]: appends nodes, initializers, inputs and outputs under fresh names.
//!
//! ```
//! use explaind_onnx::{AttributeProto, Dim, GraphBuilder, ModelProto, tensor_f32};
//! use explaind_onnx::proto::tensor_proto::DataType;
//!
//! let mut b = GraphBuilder::new("scale");
//! b.add_input("x", DataType::Float, [Dim::from("batch"), Dim::from(4)]);
//! let two = b.add_initializer(tensor_f32("two", &[], &[2.0]));
//! let y = b.add_node("Mul", &["x", &two], vec![]);
//! let y = b.add_node("Softmax", &[&y], vec![AttributeProto::int("axis", 1)]);
//! b.add_output(&y, [Dim::from("batch"), Dim::from(4)]);
//! let model = ModelProto::new(b.finish(), &[("", 17)]);
//!
//! let back = ModelProto::from_bytes(&model.to_bytes()).unwrap();
//! let graph = back.graph.as_ref().unwrap();
//! assert_eq!(graph.producer(&y).unwrap().1.attr_int("axis"), Some(1));
//! assert_eq!(back.default_opset(), Some(17));
//! ```

mod attr;
mod builder;
mod graph;
pub mod proto;
mod tensor;

pub use builder::GraphBuilder;
pub use graph::{ModelFileError, is_default_domain};
pub use proto::{
    AttributeProto, FunctionProto, GraphProto, IR_VERSION, ModelProto, NodeProto, OperatorSetIdProto, SparseTensorProto,
    StringStringEntryProto, TensorProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
pub use tensor::{Dim, TensorError, element_count, tensor_f32, tensor_i64, tensor_value_info};
