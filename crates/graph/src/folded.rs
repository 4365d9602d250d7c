//! Linear layers that fold the batch into rows, unfolded.
//!
//! Hugging Face's GPT-2 (`Conv1D`: `addmm(bias, x.view(-1, H), W)`) and torch's dynamo exporter
//! (every `nn.Linear` on a 3-D input) write a linear layer on x [N, S, H] as
//! `Reshape(x, [-1, H])`, `Gemm`, `Reshape(·, [N, S, O])`. The values in between have N·S rows,
//! so the batch axis is no longer the first axis; DeepLIFT's backward pass, which lays rows
//! out as (seed, reference) pairs along axis 0, cannot run through them. The same layer is
//! `MatMul(x, W) + bias` on x itself, which keeps the batch axis first: each such `Gemm` is
//! rewritten so (its output then already has the shape the second `Reshape` asks for, which
//! becomes a no-op).
//!
//! The rewrite is made only where the file shows it is exact: the first `Reshape` takes x to
//! [-1, last axis of x], and every reader of the `Gemm` reshapes it back to x's leading axes
//! and the `Gemm`'s columns (as constants equal to x's stated sizes, or as x's own `Shape`).

use explaind_onnx::{AttributeProto, GraphProto, ModelProto, NodeProto, is_default_domain};
use std::collections::HashMap;

/// `model` with every batch-folding linear layer unfolded, or `None` when it has none.
pub(crate) fn unfold_linear_layers(model: &ModelProto) -> Option<ModelProto> {
    let graph = model.graph.as_ref()?;
    let ranks = crate::ranks::infer(graph);
    let folded: Vec<(usize, Unfolded)> =
        graph.node.iter().enumerate().filter_map(|(i, node)| unfolded_input(graph, &ranks, node).map(|x| (i, x))).collect();
    if folded.is_empty() {
        return None;
    }
    let mut rewritten = model.clone();
    let graph = rewritten.graph.as_mut().expect("checked above");
    let mut nodes = Vec::with_capacity(graph.node.len() + 3 * folded.len());
    let mut stale = std::collections::HashSet::new();
    let mut folded = folded.into_iter().peekable();
    for (index, node) in std::mem::take(&mut graph.node).into_iter().enumerate() {
        match folded.next_if(|(i, _)| *i == index) {
            Some((_, input)) => {
                stale.insert(node.output[0].clone());
                nodes.extend(as_matmul(&node, &input));
            }
            None => nodes.push(node),
        }
    }
    graph.node = nodes;
    // The Gemm outputs' stated (folded) shapes no longer hold.
    graph.value_info.retain(|v| !stale.contains(v.name()));
    Some(rewritten)
}

/// What a folded `Gemm` reads, unfolded: x, seen as `view` first when the fold also merged
/// trailing axes of x (attention heads) into the `Gemm`'s columns.
struct Unfolded {
    x: String,
    view: Option<Vec<i64>>,
}

/// For a `Gemm` on a batch folded into rows (see the module documentation): its input,
/// unfolded.
fn unfolded_input(graph: &GraphProto, ranks: &HashMap<String, usize>, gemm: &NodeProto) -> Option<Unfolded> {
    if !is_default_domain(gemm.domain()) || gemm.op_type() != "Gemm" || gemm.attr_int("transA").unwrap_or(0) != 0 {
        return None;
    }
    let (_, flatten) = graph.producer(gemm.input.first()?)?;
    if flatten.op_type() != "Reshape" {
        return None;
    }
    let x = flatten.input.first()?;
    let output = gemm.output.first()?;
    let readers: Vec<&NodeProto> = graph.consumers(output).into_iter().map(|(_, r)| r).collect();
    if readers.is_empty() || graph.output.iter().any(|o| o.name() == output) || readers.iter().any(|r| r.op_type() != "Reshape") {
        return None;
    }
    let rank = *ranks.get(x)?;
    // x [N, ..., H] → [-1, H]: the readers restore x's leading axes.
    if rank >= 3
        && is_minus_one_then_last_axis(graph, flatten.input.get(1)?, x)
        && readers.iter().all(|r| restores_leading_axes(graph, r.input.get(1), x, rank))
    {
        return Some(Unfolded { x: x.clone(), view: None });
    }
    // x [N, S, a, b] → [-1, a·b] (heads merged): constant shapes only, checked against x's
    // stated sizes; x is viewed as [-1, S, a·b] first.
    let row = static_dims(graph, x)?.get(1..)?.iter().copied().collect::<Option<Vec<i64>>>()?;
    let [-1, columns] = int_values(graph, flatten.input.get(1)?)?[..] else { return None };
    let targets: Vec<Vec<i64>> = readers.iter().map(|r| int_values(graph, r.input.get(1)?)).collect::<Option<_>>()?;
    let kept = targets.first()?.len().checked_sub(2)?;
    let agrees = |t: &Vec<i64>| t.len() == kept + 2 && t[0] == -1 && t[1..=kept] == row[..kept];
    let merged: i64 = row.get(kept..)?.iter().product();
    (kept >= 1 && kept + 1 < row.len() && merged == columns && targets.iter().all(agrees)).then(|| {
        let view = std::iter::once(-1).chain(row[..kept].iter().copied()).chain(std::iter::once(columns)).collect();
        Unfolded { x: x.clone(), view: Some(view) }
    })
}

/// Whether the 1-D `shape` is [-1, x's last axis]: a constant, or `Concat([-1], x.shape[-1])`.
fn is_minus_one_then_last_axis(graph: &GraphProto, shape: &str, x: &str) -> bool {
    if let Some(values) = int_values(graph, shape) {
        return matches!((values.as_slice(), last_static_dim(graph, x)), ([-1, h], Some(last)) if *h == last);
    }
    let Some((_, concat)) = graph.producer(shape) else { return false };
    concat.op_type() == "Concat"
        && concat.input.len() == 2
        && int_values(graph, &concat.input[0]).is_some_and(|v| v == [-1])
        && is_last_axis_of(graph, &concat.input[1], x)
}

/// Whether `shape` is x's leading axes (rank − 1 of them) then one more: a constant whose
/// leading entries are -1 (first only) or x's stated sizes, or a `Concat` of x's own sizes.
fn restores_leading_axes(graph: &GraphProto, shape: Option<&String>, x: &str, rank: usize) -> bool {
    let Some(shape) = shape else { return false };
    let dims = static_dims(graph, x);
    if let Some(values) = int_values(graph, shape) {
        return values.len() == rank
            && values[..rank - 1]
                .iter()
                .enumerate()
                .all(|(axis, &v)| (axis == 0 && v == -1) || dims.as_ref().and_then(|d| d[axis]).is_some_and(|d| d == v));
    }
    let Some((_, concat)) = graph.producer(shape) else { return false };
    concat.op_type() == "Concat"
        && concat.input.len() == rank
        && concat.input[..rank - 1].iter().enumerate().all(|(axis, piece)| is_axis_of(graph, piece, x, axis as i64))
}

/// `Unsqueeze(Gather(Shape(x), axis))` (or `Slice(Shape(x), axis, axis + 1)`): x's size on `axis`.
fn is_axis_of(graph: &GraphProto, piece: &str, x: &str, axis: i64) -> bool {
    let Some((_, node)) = graph.producer(piece) else { return false };
    let shape_of_x = |name: &str| {
        graph.producer(name).is_some_and(|(_, s)| s.op_type() == "Shape" && s.input[0] == x && s.attr("start").is_none())
    };
    match node.op_type() {
        "Unsqueeze" => graph.producer(&node.input[0]).is_some_and(|(_, g)| {
            g.op_type() == "Gather" && shape_of_x(&g.input[0]) && int_values(graph, &g.input[1]).is_some_and(|v| v == [axis])
        }),
        "Slice" => {
            shape_of_x(&node.input[0])
                && node.input.get(1).and_then(|s| int_values(graph, s)).is_some_and(|v| v == [axis])
                && node.input.get(2).and_then(|e| int_values(graph, e)).is_some_and(|v| v == [axis + 1])
        }
        _ => false,
    }
}

/// `Unsqueeze(Squeeze(Slice(Shape(x), -1, ∞)))` or `Slice(Shape(x), -1, ∞)`: x's last size.
fn is_last_axis_of(graph: &GraphProto, piece: &str, x: &str) -> bool {
    let mut name = piece.to_string();
    while let Some((_, node)) = graph.producer(&name) {
        match node.op_type() {
            "Unsqueeze" | "Squeeze" => name = node.input[0].clone(),
            "Slice" => {
                let from_end = node.input.get(1).and_then(|s| int_values(graph, s)).is_some_and(|v| v == [-1]);
                let to_end = node
                    .input
                    .get(2)
                    .and_then(|e| int_values(graph, e))
                    .is_some_and(|v| v.len() == 1 && v[0] >= i64::from(i32::MAX));
                let shape_of_x = graph
                    .producer(&node.input[0])
                    .is_some_and(|(_, s)| s.op_type() == "Shape" && s.input[0] == x && s.attr("start").is_none());
                return from_end && to_end && shape_of_x;
            }
            _ => return false,
        }
    }
    false
}

fn static_dims(graph: &GraphProto, name: &str) -> Option<Vec<Option<i64>>> {
    let shape = graph.find_value_info(name)?.tensor_shape()?;
    Some(shape.iter().map(|d| if let Some(explaind_onnx::Dim::Value(v)) = d { Some(*v) } else { None }).collect())
}

fn last_static_dim(graph: &GraphProto, name: &str) -> Option<i64> {
    static_dims(graph, name)?.last().copied().flatten()
}

/// The values of an int64 constant (initializer or `Constant`).
fn int_values(graph: &GraphProto, name: &str) -> Option<Vec<i64>> {
    graph.constant(name)?.to_i64().ok().map(|(_, values)| values)
}

/// The nodes computing `gemm`'s result on its unfolded input: `MatMul(x, B or Bᵀ)`, scaled by
/// alpha, plus beta · C, under the `Gemm`'s own output name.
fn as_matmul(gemm: &NodeProto, input: &Unfolded) -> Vec<NodeProto> {
    let prefix = if gemm.name().is_empty() { "Gemm" } else { gemm.name() };
    let mut out = Nodes { prefix: format!("{prefix}__unfolded"), nodes: Vec::new() };
    let x = match &input.view {
        Some(view) => {
            let shape = explaind_onnx::tensor_i64("value", &[view.len() as i64], view);
            let shape = out.push("Constant", &[], vec![AttributeProto::tensor("value", shape)], None);
            out.push("Reshape", &[&input.x, &shape], vec![], None)
        }
        None => input.x.clone(),
    };
    let x = x.as_str();
    let output = gemm.output[0].as_str();
    let alpha = gemm.attr_float("alpha").unwrap_or(1.0);
    let beta = gemm.attr_float("beta").unwrap_or(1.0);
    let bias = gemm.input.get(2).filter(|c| !c.is_empty() && beta != 0.0);
    let mut weights = gemm.input[1].clone();
    if gemm.attr_int("transB").unwrap_or(0) != 0 {
        weights = out.push("Transpose", &[&weights], vec![AttributeProto::ints("perm", [1, 0])], None);
    }
    // Each step writes the Gemm's output when it is the last.
    let product_is_last = bias.is_none() && alpha == 1.0;
    let mut product = out.push("MatMul", &[x, &weights], vec![], product_is_last.then_some(output));
    if alpha != 1.0 {
        product = out.scale(&product, alpha, bias.is_none().then_some(output));
    }
    if let Some(bias) = bias {
        let bias = if beta == 1.0 { bias.clone() } else { out.scale(bias, beta, None) };
        out.push("Add", &[&product, &bias], vec![], Some(output));
    }
    out.nodes
}

/// Nodes being written in place of one, under names derived from its.
struct Nodes {
    prefix: String,
    nodes: Vec<NodeProto>,
}

impl Nodes {
    /// Appends a node; its output is `output`, or a fresh name.
    fn push(&mut self, op: &str, inputs: &[&str], attributes: Vec<AttributeProto>, output: Option<&str>) -> String {
        let name = format!("{}_{}", self.prefix, self.nodes.len());
        let output = output.map_or_else(|| name.clone(), str::to_string);
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|i| i.to_string()).collect(),
            output: vec![output.clone()],
            name: Some(name),
            op_type: Some(op.into()),
            attribute: attributes,
            ..Default::default()
        });
        output
    }

    /// `value · factor` for a float32 constant factor.
    fn scale(&mut self, value: &str, factor: f32, output: Option<&str>) -> String {
        let constant = explaind_onnx::tensor_f32("value", &[], &[factor]);
        let factor = self.push("Constant", &[], vec![AttributeProto::tensor("value", constant)], None);
        self.push("Mul", &[value, &factor], vec![], output)
    }
}
