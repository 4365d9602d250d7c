//! Which intermediate tensors of a model are image-like layers, for layer methods (Grad-CAM).
//!
//! ONNX files rarely carry shapes for intermediate values, and running shape inference would
//! mean reimplementing it op by op. A layer method only needs the *rank* of a tensor, and the
//! rank survives almost every operator in a convolutional network unchanged, so it is
//! propagated here from what the file does state (input, value-info and initializer shapes)
//! through the operators that keep or combine ranks. Anything else has an unknown rank and is
//! simply not offered as a candidate.

use explaind_onnx::{GraphProto, ModelProto, NodeProto, is_default_domain};
use std::collections::HashMap;

/// Operators whose first output has the rank of their first input.
const RANK_PRESERVING: &[&str] = &[
    "Abs", "AveragePool", "BatchNormalization", "Cast", "Ceil", "Clip", "Conv", "ConvTranspose",
    "Dropout", "Elu", "Erf", "Exp", "Floor", "Gelu", "GlobalAveragePool", "GlobalLpPool", "GlobalMaxPool",
    "HardSigmoid", "HardSwish", "Identity", "InstanceNormalization", "LRN", "LeakyRelu", "Log",
    "LogSoftmax", "LpNormalization", "LpPool", "MaxPool", "Mish", "Neg", "PRelu", "Pad", "Reciprocal",
    "Relu", "Resize", "Selu", "Sigmoid", "Softmax", "Softplus", "Softsign", "Sqrt", "Tanh", "Upsample",
    "Concat",
];

/// Elementwise operators with numpy broadcasting: the result has the largest input rank.
const BROADCASTING: &[&str] = &["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Where"];

/// The rank of every value whose rank can be told, by name.
pub fn tensor_ranks(graph: &GraphProto) -> HashMap<String, usize> {
    let mut ranks: HashMap<String, usize> = HashMap::new();
    for info in graph.input.iter().chain(&graph.value_info).chain(&graph.output) {
        if let Some(shape) = info.tensor_shape() {
            ranks.insert(info.name().to_string(), shape.len());
        }
    }
    for init in &graph.initializer {
        ranks.insert(init.name().to_string(), init.dims.len());
    }
    for node in &graph.node {
        if let Some(rank) = node_output_rank(node, &ranks)
            && let Some(out) = node.output.first().filter(|o| !o.is_empty())
        {
            ranks.entry(out.clone()).or_insert(rank);
        }
    }
    ranks
}

fn node_output_rank(node: &NodeProto, ranks: &HashMap<String, usize>) -> Option<usize> {
    if !is_default_domain(node.domain()) {
        return None;
    }
    let rank_of = |name: &String| ranks.get(name).copied();
    let op = node.op_type();
    if RANK_PRESERVING.contains(&op) {
        // A convolution's weight states the rank even when its input does not.
        if matches!(op, "Conv" | "ConvTranspose")
            && let Some(rank) = node.input.get(1).and_then(rank_of)
        {
            return Some(rank);
        }
        return node.input.first().and_then(rank_of);
    }
    if BROADCASTING.contains(&op) {
        let known: Option<Vec<usize>> = node.input.iter().filter(|i| !i.is_empty()).map(rank_of).collect();
        return known.and_then(|r| r.into_iter().max());
    }
    None
}

/// The values of rank 4 that nodes compute (not the model's inputs or constants), in graph
/// order: the layers a Grad-CAM request can name.
pub fn four_d_layers(model: &ModelProto) -> Vec<String> {
    let Some(graph) = model.graph.as_ref() else { return vec![] };
    let ranks = tensor_ranks(graph);
    graph
        .node
        .iter()
        .flat_map(|n| n.output.iter())
        .filter(|o| !o.is_empty() && ranks.get(*o) == Some(&4))
        .cloned()
        .collect()
}

/// The output of the last 2-D convolution (a Conv whose weight is 4-D) in graph order: the
/// conventional Grad-CAM layer.
pub fn last_conv2d_output(model: &ModelProto) -> Option<String> {
    let graph = model.graph.as_ref()?;
    let ranks = tensor_ranks(graph);
    graph
        .node
        .iter()
        .rev()
        .find(|n| {
            is_default_domain(n.domain())
                && n.op_type() == "Conv"
                && n.input.get(1).and_then(|w| ranks.get(w)) == Some(&4)
        })
        .and_then(|n| n.output.first().cloned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use explaind_onnx::proto::tensor_proto::DataType;
    use explaind_onnx::{AttributeProto, Dim, GraphBuilder, tensor_f32};

    /// x [batch,1,4,4] -> Conv -> Relu -> Conv -> Add(bias [1]) -> Flatten -> Gemm.
    fn small_cnn() -> ModelProto {
        let mut b = GraphBuilder::new("cnn");
        b.add_input("x", DataType::Float, [Dim::from("batch"), Dim::from(1), Dim::from(4), Dim::from(4)]);
        let w1 = b.add_initializer(tensor_f32("w1", &[2, 1, 3, 3], &[0.1; 18]));
        let w2 = b.add_initializer(tensor_f32("w2", &[2, 2, 1, 1], &[0.5; 4]));
        let bias = b.add_initializer(tensor_f32("bias", &[1], &[1.0]));
        let wd = b.add_initializer(tensor_f32("wd", &[8, 3], &[0.2; 24]));
        let pads = AttributeProto::ints("pads", [0i64; 4]);
        let c1 = b.add_node("Conv", &["x", &w1], vec![pads]);
        let r1 = b.add_node("Relu", &[&c1], vec![]);
        let c2 = b.add_node("Conv", &[&r1, &w2], vec![]);
        let added = b.add_node("Add", &[&c2, &bias], vec![]);
        let flat = b.add_node("Flatten", &[&added], vec![]);
        let y = b.add_node("Gemm", &[&flat, &wd], vec![]);
        b.add_output(&y, [Dim::from("batch"), Dim::from(3)]);
        ModelProto::new(b.finish(), &[("", 17)])
    }

    #[test]
    fn ranks_flow_through_convolutions_activations_and_broadcasts() {
        let model = small_cnn();
        let layers = four_d_layers(&model);
        let graph = model.graph.as_ref().unwrap();
        let outputs: Vec<&str> = graph.node.iter().map(|n| n.output[0].as_str()).collect();
        // Conv, Relu, Conv, Add are 4-D; Flatten and Gemm are not (and not guessed).
        assert_eq!(layers, outputs[..4].iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(last_conv2d_output(&model).as_deref(), Some(outputs[2]));
    }

    #[test]
    fn a_model_without_convolutions_has_no_default_layer() {
        let mut b = GraphBuilder::new("mlp");
        b.add_input("x", DataType::Float, [Dim::from("batch"), Dim::from(3)]);
        let w = b.add_initializer(tensor_f32("w", &[3, 2], &[1.0; 6]));
        let y = b.add_node("MatMul", &["x", &w], vec![]);
        b.add_output(&y, [Dim::from("batch"), Dim::from(2)]);
        let model = ModelProto::new(b.finish(), &[("", 17)]);
        assert!(four_d_layers(&model).is_empty());
        assert_eq!(last_conv2d_output(&model), None);
    }
}
