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
pub(crate) const RANK_PRESERVING: &[&str] = &[
    "Abs",
    "AveragePool",
    "BatchNormalization",
    "Cast",
    "Ceil",
    "Clip",
    "Conv",
    "ConvTranspose",
    "Dropout",
    "Elu",
    "Erf",
    "Exp",
    "Floor",
    "Gelu",
    "GlobalAveragePool",
    "GlobalLpPool",
    "GlobalMaxPool",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "InstanceNormalization",
    "LRN",
    "LeakyRelu",
    "Log",
    "LogSoftmax",
    "LpNormalization",
    "LpPool",
    "MaxPool",
    "Mish",
    "Neg",
    "PRelu",
    "Pad",
    "Reciprocal",
    "Relu",
    "Resize",
    "Selu",
    "Sigmoid",
    "Softmax",
    "Softplus",
    "Softsign",
    "Sqrt",
    "Tanh",
    "Upsample",
    "Concat",
];

/// Elementwise operators with numpy broadcasting.
const BROADCASTING: &[&str] = &["Add", "Sub", "Mul", "Div", "Pow", "Max", "Min", "Sum", "Mean", "Where"];

/// The rank of every value whose rank can be told, by name ([`crate::ranks`]).
pub fn tensor_ranks(graph: &GraphProto) -> HashMap<String, usize> {
    crate::ranks::infer(graph)
}

/// Operators whose first output has the spatial size (and rank) of their first input.
const SIZE_PRESERVING: &[&str] = &[
    "Abs",
    "BatchNormalization",
    "Cast",
    "Clip",
    "Dropout",
    "Elu",
    "Erf",
    "Exp",
    "Identity",
    "LeakyRelu",
    "Neg",
    "Relu",
    "Sigmoid",
    "Softplus",
    "Tanh",
];

/// For each graph input read by an embedding lookup, the lookup's output: a `Gather` whose
/// data is an initializer (the table) and whose indices are the input, directly or through
/// `Cast`s. How the word embedding of a text model's `input_ids` is found.
pub fn embedding_lookups(model: &ModelProto) -> Vec<(String, String)> {
    let Some(graph) = &model.graph else { return Vec::new() };
    let tables: std::collections::HashSet<&str> = graph.initializer.iter().map(|t| t.name()).collect();
    // Each value that is a graph input or a Cast of one, mapped to that input.
    let mut source: HashMap<&str, &str> = graph.input.iter().map(|i| (i.name(), i.name())).collect();
    let mut found = Vec::new();
    for node in &graph.node {
        if !is_default_domain(node.domain()) {
            continue;
        }
        match (node.op_type(), node.input.as_slice(), node.output.first()) {
            ("Cast", [x], Some(out)) => {
                if let Some(&input) = source.get(x.as_str()) {
                    source.insert(out, input);
                }
            }
            ("Gather", [data, indices], Some(out))
                if tables.contains(data.as_str()) && !out.is_empty() && node.attr_int("axis").unwrap_or(0) == 0 =>
            {
                if let Some(&input) = source.get(indices.as_str())
                    && !found.iter().any(|(i, _): &(String, String)| i == input)
                {
                    found.push((input.to_string(), out.clone()));
                }
            }
            _ => {}
        }
    }
    found
}

/// The spatial size (the axes after N and C) of every rank-4 value whose size the file tells
/// statically: a declared input or value, then through convolutions, pools, elementwise
/// operators and broadcasts with constants. Used where a backward rule can choose a faster
/// form when it knows the size (a max-pool whose windows tile its input exactly).
pub fn spatial_sizes(graph: &GraphProto) -> HashMap<String, Vec<i64>> {
    let mut sizes: HashMap<String, Vec<i64>> = HashMap::new();
    for info in graph.input.iter().chain(&graph.value_info) {
        let Some(shape) = info.tensor_shape() else { continue };
        let spatial: Option<Vec<i64>> =
            shape.iter().skip(2).map(|d| if let Some(explaind_onnx::Dim::Value(v)) = d { Some(*v) } else { None }).collect();
        if let (4, Some(spatial)) = (shape.len(), spatial) {
            sizes.insert(info.name().to_string(), spatial);
        }
    }
    for node in &graph.node {
        if let Some(size) = node_output_size(graph, node, &sizes)
            && let Some(out) = node.output.first().filter(|o| !o.is_empty())
        {
            sizes.entry(out.clone()).or_insert(size);
        }
    }
    sizes
}

fn node_output_size(graph: &GraphProto, node: &NodeProto, sizes: &HashMap<String, Vec<i64>>) -> Option<Vec<i64>> {
    if !is_default_domain(node.domain()) {
        return None;
    }
    let input = sizes.get(node.input.first()?)?;
    let op = node.op_type();
    if SIZE_PRESERVING.contains(&op) {
        return Some(input.clone());
    }
    if matches!(op, "Conv" | "MaxPool" | "AveragePool") {
        if node.attr_int("ceil_mode").unwrap_or(0) != 0 {
            return None;
        }
        let w = Window::of(graph, node, input.len())?;
        return (0..w.kernel.len())
            .map(|i| {
                let span = w.dilations[i] * (w.kernel[i] - 1) + 1;
                let padded = input[i] + w.pads[i] + w.pads[i + w.kernel.len()];
                (padded >= span).then(|| (padded - span) / w.strides[i] + 1)
            })
            .collect();
    }
    if op == "Resize" {
        return resize_output_size(graph, node, input);
    }
    if op == "ConvTranspose" {
        return conv_transpose_output_size(graph, node, input);
    }
    if op == "Concat" {
        // Joined along the batch or channel axis, every input of the same spatial size.
        let axis = node.attr_int("axis")?;
        let same = node.input.iter().all(|i| sizes.get(i) == Some(input));
        return (same && matches!(axis, 0 | 1 | -4 | -3)).then(|| input.clone());
    }
    if BROADCASTING.contains(&op) {
        // Every other operand a known value of the same size, or a constant that broadcasts
        // over the spatial axes (size 1 there, or fewer axes).
        for other in node.input.iter().skip(1).filter(|i| !i.is_empty()) {
            if let Some(size) = sizes.get(other) {
                if size != input {
                    return None;
                }
            } else {
                let dims = &graph.initializer(other)?.dims;
                if dims.iter().rev().take(input.len()).any(|&d| d != 1) {
                    return None;
                }
            }
        }
        return Some(input.clone());
    }
    None
}

/// The window of a convolution or pool over `spatial` axes, from its attributes (the kernel
/// from the weight when the attribute is absent), with explicit padding only.
struct Window {
    kernel: Vec<i64>,
    strides: Vec<i64>,
    dilations: Vec<i64>,
    /// Begins then ends, as ONNX lists them.
    pads: Vec<i64>,
}

impl Window {
    fn of(graph: &GraphProto, node: &NodeProto, spatial: usize) -> Option<Window> {
        if node.attr_string("auto_pad").is_some_and(|p| p != "NOTSET") {
            return None;
        }
        let kernel: Vec<i64> = match node.attr_ints("kernel_shape") {
            Some(k) => k.to_vec(),
            None => graph.initializer(node.input.get(1)?)?.dims.get(2..)?.to_vec(),
        };
        let n = kernel.len();
        let or = |name: &str, default: i64, len: usize| {
            node.attr_ints(name).map(<[i64]>::to_vec).unwrap_or_else(|| vec![default; len])
        };
        let w = Window { strides: or("strides", 1, n), dilations: or("dilations", 1, n), pads: or("pads", 0, 2 * n), kernel };
        // A file whose attribute lengths disagree tells no size (ONNX Runtime refuses it anyway).
        (n == spatial && w.strides.len() == n && w.dilations.len() == n && w.pads.len() == 2 * n).then_some(w)
    }
}

/// A `ConvTranspose`'s output spatial size: stride·(in − 1) + output_padding +
/// dilation·(kernel − 1) + 1 − pads, with explicit padding (no `output_shape`).
fn conv_transpose_output_size(graph: &GraphProto, node: &NodeProto, input: &[i64]) -> Option<Vec<i64>> {
    if node.attr("output_shape").is_some() {
        return None;
    }
    let w = Window::of(graph, node, input.len())?;
    let n = w.kernel.len();
    let extra = node.attr_ints("output_padding").map(<[i64]>::to_vec).unwrap_or_else(|| vec![0; n]);
    if extra.len() != n {
        return None;
    }
    (0..n)
        .map(|i| {
            let size =
                w.strides[i] * (input[i] - 1) + extra[i] + w.dilations[i] * (w.kernel[i] - 1) + 1 - w.pads[i] - w.pads[i + n];
            (size > 0).then_some(size)
        })
        .collect()
}

/// A `Resize`'s output spatial size from constant scales or sizes over all four axes (or
/// opset 18's `axes` naming the spatial ones).
fn resize_output_size(graph: &GraphProto, node: &NodeProto, input: &[i64]) -> Option<Vec<i64>> {
    let constant = |name: &str| graph.constant(name);
    let spatial_axes = match node.attr_ints("axes") {
        None => 2,
        Some(axes) if axes.iter().map(|&a| if a < 0 { a + 4 } else { a }).eq([2, 3]) => 0,
        Some(_) => return None,
    };
    if let Some(sizes) = node.input.get(3).and_then(|n| constant(n)) {
        let (_, sizes) = sizes.to_i64().ok()?;
        return Some(sizes.get(spatial_axes..)?.to_vec()).filter(|s| s.len() == input.len());
    }
    let (_, scales) = constant(node.input.get(2)?)?.to_f32().ok()?;
    let scales = scales.get(spatial_axes..)?;
    (scales.len() == input.len()).then(|| input.iter().zip(scales).map(|(&d, &s)| (d as f32 * s).floor() as i64).collect())
}

/// The values of rank 4 that nodes compute (not the model's inputs or constants), in graph
/// order: the layers a Grad-CAM request can name.
pub fn four_d_layers(model: &ModelProto) -> Vec<String> {
    let Some(graph) = model.graph.as_ref() else { return vec![] };
    let ranks = tensor_ranks(graph);
    graph.node.iter().flat_map(|n| n.output.iter()).filter(|o| !o.is_empty() && ranks.get(*o) == Some(&4)).cloned().collect()
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
        .find(|n| is_default_domain(n.domain()) && n.op_type() == "Conv" && n.input.get(1).and_then(|w| ranks.get(w)) == Some(&4))
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
    fn spatial_sizes_follow_convolutions_activations_and_constant_broadcasts() {
        let model = small_cnn();
        let graph = model.graph.as_ref().unwrap();
        let sizes = spatial_sizes(graph);
        let size = |i: usize| sizes.get(&graph.node[i].output[0]).cloned();
        assert_eq!(sizes.get("x"), Some(&vec![4, 4]));
        // 4×4 through an unpadded 3×3 convolution is 2×2; then ReLU, a 1×1 convolution and a
        // broadcast of a one-element constant keep it; Flatten has no spatial size.
        assert_eq!(
            [size(0), size(1), size(2), size(3)],
            [Some(vec![2, 2]), Some(vec![2, 2]), Some(vec![2, 2]), Some(vec![2, 2])]
        );
        assert_eq!(size(4), None);
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
