//! Against the committed demo models, which the `onnx` Python package wrote: what a real
//! exporter produces is the format this crate has to agree with.

use std::path::PathBuf;

use explaind_onnx::proto::tensor_proto::DataType;
use explaind_onnx::{Dim, GraphProto, ModelProto, ValueInfoProto};

fn model_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models").join(name).join("1/model.onnx")
}

fn load(name: &str) -> (Vec<u8>, ModelProto) {
    let bytes = std::fs::read(model_path(name)).unwrap();
    let model = ModelProto::from_bytes(&bytes).unwrap();
    (bytes, model)
}

fn op_types(g: &GraphProto) -> Vec<&str> {
    g.node.iter().map(|n| n.op_type()).collect()
}

fn init_shapes(g: &GraphProto) -> Vec<(&str, Vec<i64>)> {
    g.initializer.iter().map(|t| (t.name(), t.dims.clone())).collect()
}

fn batch_shape(rest: &[i64]) -> Vec<Option<Dim>> {
    std::iter::once(Some(Dim::from("batch"))).chain(rest.iter().map(|&d| Some(Dim::Value(d)))).collect()
}

fn assert_float_value(v: &ValueInfoProto, name: &str, rest: &[i64]) {
    assert_eq!(v.name(), name);
    assert_eq!(v.tensor_type().unwrap().elem_type, Some(DataType::Float as i32));
    assert_eq!(v.tensor_shape().unwrap(), batch_shape(rest));
}

#[test]
fn digits_cnn_decodes() {
    let (_, m) = load("digits-cnn");
    assert_eq!(m.ir_version, Some(10));
    assert_eq!(m.default_opset(), Some(17));
    let g = m.graph.as_ref().unwrap();
    assert_eq!(op_types(g), ["Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool", "Flatten", "Gemm"]);
    assert_eq!(
        init_shapes(g),
        [
            ("W1", vec![8, 1, 3, 3]),
            ("b1", vec![8]),
            ("W2", vec![16, 8, 3, 3]),
            ("b2", vec![16]),
            ("W3", vec![10, 64]),
            ("b3", vec![10]),
        ]
    );
    assert_eq!(g.input.len(), 1);
    assert_float_value(&g.input[0], "image", &[1, 8, 8]);
    assert_eq!(g.output.len(), 1);
    assert_float_value(&g.output[0], "logits", &[10]);

    let conv = &g.node[0];
    assert_eq!(conv.input, ["image", "W1", "b1"]);
    assert_eq!(conv.attr_ints("kernel_shape"), Some(&[3, 3][..]));
    assert_eq!(conv.attr_ints("pads"), Some(&[1, 1, 1, 1][..]));
    assert_eq!(conv.attr_int("group"), None);
    assert_eq!(g.node[6].attr_int("axis"), Some(1));
    assert_eq!(g.node[7].attr_int("transB"), Some(1));

    let (dims, w1) = g.initializer("W1").unwrap().to_f32().unwrap();
    assert_eq!((dims, w1.len()), (vec![8, 1, 3, 3], 72));
    assert!(w1.iter().all(|v| v.is_finite()) && w1.iter().any(|&v| v != 0.0));
}

#[test]
fn digits_cnn_lookups() {
    let (_, m) = load("digits-cnn");
    let g = m.graph.as_ref().unwrap();
    let (i, relu) = g.producer("relu1").unwrap();
    assert_eq!((i, relu.op_type()), (1, "Relu"));
    assert!(g.producer("image").is_none(), "graph inputs have no producer");
    assert!(g.producer("W1").is_none(), "initializers have no producer");
    let consumers: Vec<_> = g.consumers("conv1").iter().map(|(i, n)| (*i, n.op_type())).collect();
    assert_eq!(consumers, [(1, "Relu")]);
    assert_eq!(g.consumers("W2").len(), 1);
    assert!(g.consumers("logits").is_empty());
    assert!(g.initializer("conv1").is_none());
    assert_eq!(g.runtime_inputs().map(|v| v.name()).collect::<Vec<_>>(), ["image"]);
}

#[test]
fn wine_mlp_decodes() {
    let (_, m) = load("wine-mlp");
    assert_eq!(m.ir_version, Some(10));
    assert_eq!(m.default_opset(), Some(17));
    let g = m.graph.as_ref().unwrap();
    assert_eq!(op_types(g), ["Sub", "Div", "Gemm", "Relu", "Gemm", "Relu", "Gemm", "Softmax"]);
    let mut shapes = init_shapes(g);
    shapes.sort();
    assert_eq!(
        shapes,
        [
            ("W1", vec![32, 13]),
            ("W2", vec![16, 32]),
            ("W3", vec![3, 16]),
            ("b1", vec![32]),
            ("b2", vec![16]),
            ("b3", vec![3]),
            ("feature_mean", vec![13]),
            ("feature_std", vec![13]),
        ]
    );
    assert_float_value(&g.input[0], "features", &[13]);
    assert_eq!(g.output.len(), 2);
    assert_float_value(&g.output[0], "logits", &[3]);
    assert_float_value(&g.output[1], "probabilities", &[3]);
    assert_eq!(g.node[7].attr_int("axis"), Some(1));

    let (_, std) = g.initializer("feature_std").unwrap().to_f32().unwrap();
    assert!(std.iter().all(|&s| s > 0.0), "standard deviations are positive: {std:?}");
}

#[test]
fn round_trip_is_lossless_and_byte_identical() {
    for name in ["digits-cnn", "wine-mlp"] {
        let (bytes, m) = load(name);
        let encoded = m.to_bytes();
        assert_eq!(ModelProto::from_bytes(&encoded).unwrap(), m, "{name}: decoded messages differ");
        assert!(encoded == bytes, "{name}: re-encoded bytes differ from the file");
    }
}

#[test]
fn edits_survive_a_round_trip() {
    let (_, mut m) = load("wine-mlp");
    let g = m.graph.take().unwrap();
    let mut b = explaind_onnx::GraphBuilder::from_graph(g);
    let out = b.add_node("Neg", &["logits"], vec![]);
    b.add_output(&out, [Dim::from("batch"), Dim::from(3)]);
    assert_eq!(out, "Neg_out");
    m.graph = Some(b.finish());
    let back = ModelProto::from_bytes(&m.to_bytes()).unwrap();
    assert_eq!(back, m);
    let g = back.graph.as_ref().unwrap();
    assert_eq!(g.consumers("logits").len(), 2);
    assert_eq!(g.output[2].tensor_shape().unwrap(), batch_shape(&[3]));
}
