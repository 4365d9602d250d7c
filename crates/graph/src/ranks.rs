//! The rank of every value a graph computes, told from the file without running it.
//!
//! Exporters state shapes unevenly: the dynamo exporter writes a value-info for almost every
//! value, the TorchScript exporter for few, and a file passed through a simplifier may have
//! none. Rules that transpose or broadcast need ranks, not sizes, and ranks follow from the
//! operators alone almost everywhere, so they are propagated here from what the file states
//! (inputs, value-infos, outputs, initializers, `Constant`s) in graph order, one rule per
//! operator family in [`RANK_RULES`]. A stated rank always wins over an inferred one.
//!
//! Shape tensors (the 1-D int64 values that `Reshape`, `Expand` and `ConstantOfShape` read)
//! are followed too: their *length* gives the rank of what they shape, and it is told by
//! `Shape`, `Concat` of pieces, `Unsqueeze` of a scalar and constants, which is how exporters
//! build them.

use explaind_onnx::{GraphProto, NodeProto, is_default_domain};
use std::collections::HashMap;

/// What is known so far, by value name.
#[derive(Default)]
struct Facts {
    ranks: HashMap<String, usize>,
    /// Lengths of 1-D values (shape tensors, axis lists).
    lengths: HashMap<String, usize>,
    /// The values of small integer constants (initializers and `Constant`s): slice bounds.
    constants: HashMap<String, Vec<i64>>,
    /// For each `Shape` output, the value it is the shape of.
    shape_of: HashMap<String, String>,
}

impl Facts {
    fn rank(&self, name: &str) -> Option<usize> {
        self.ranks.get(name).copied()
    }

    fn length(&self, name: &str) -> Option<usize> {
        self.lengths.get(name).copied()
    }

    fn constant(&self, name: &str) -> Option<&[i64]> {
        self.constants.get(name).map(Vec::as_slice)
    }
}

/// Integer constants longer than this are not shape arithmetic: not kept.
const MAX_CONSTANT_LEN: usize = 64;

fn small_integers(tensor: &explaind_onnx::TensorProto) -> Option<Vec<i64>> {
    let (_, values) = tensor.to_i64().ok()?;
    (values.len() <= MAX_CONSTANT_LEN).then_some(values)
}

/// The rank of a node's outputs from the facts about its inputs.
type RankRule = fn(&NodeProto, &Facts) -> Option<usize>;

/// Operators whose output is the numpy broadcast of all their inputs.
pub(crate) const BROADCASTING: &[&str] = &[
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Max",
    "Min",
    "Sum",
    "Mean",
    "PRelu",
    "Where",
    "Equal",
    "Less",
    "LessOrEqual",
    "Greater",
    "GreaterOrEqual",
    "And",
    "Or",
    "Xor",
    "Mod",
    "BitShift",
];

/// The `Reduce*` operators: reduced axes given by `axes` (an attribute, or an input from opset
/// 18 on), kept or dropped by `keepdims`.
pub(crate) const REDUCTIONS: &[&str] = &[
    "ReduceSum",
    "ReduceMean",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceSumSquare",
];

/// Operator families and the rule for the rank of their outputs (every output alike).
const RANK_RULES: &[(&[&str], RankRule)] = &[
    (crate::layers::RANK_PRESERVING, same_as_first),
    (
        &[
            "Slice",
            "Tile",
            "Split",
            "GatherElements",
            "ScatterElements",
            "LayerNormalization",
            "RMSNormalization",
            "GroupNormalization",
            "Not",
            "IsNaN",
            "IsInf",
            "Sign",
            "Round",
            "Cos",
            "Sin",
            "Celu",
            "ThresholdedRelu",
            "CumSum",
            "TopK",
            "Trilu",
            "ReverseSequence",
        ],
        same_as_first,
    ),
    (BROADCASTING, largest),
    (&["Transpose"], same_as_first),
    (&["MatMul"], matmul),
    (&["Gemm", "Flatten", "NonZero"], |_, _| Some(2)),
    (&["Shape", "Range"], |_, _| Some(1)),
    (&["Size"], |_, _| Some(0)),
    (&["Reshape", "ConstantOfShape"], rank_from_shape_input),
    (&["Expand"], expand),
    (&["Unsqueeze"], unsqueeze),
    (&["Squeeze"], squeeze),
    (&["Gather"], gather),
    (REDUCTIONS, reduce),
    (&["ArgMax", "ArgMin"], reduce),
    (&["Einsum"], einsum),
];

/// The rank of every value whose rank can be told, by name.
pub fn infer(graph: &GraphProto) -> HashMap<String, usize> {
    let mut facts = Facts::default();
    for info in graph.input.iter().chain(&graph.value_info).chain(&graph.output) {
        if let Some(shape) = info.tensor_shape() {
            facts.ranks.insert(info.name().to_string(), shape.len());
            if let [Some(explaind_onnx::Dim::Value(length))] = shape.as_slice() {
                facts.lengths.insert(info.name().to_string(), *length as usize);
            }
        }
    }
    for init in &graph.initializer {
        facts.ranks.insert(init.name().to_string(), init.dims.len());
        if let [length] = init.dims.as_slice() {
            facts.lengths.insert(init.name().to_string(), *length as usize);
        }
        if let Some(values) = small_integers(init) {
            facts.constants.insert(init.name().to_string(), values);
        }
    }
    for node in &graph.node {
        if !is_default_domain(node.domain()) {
            continue;
        }
        let rank = if node.op_type() == "Constant" {
            node.attr_tensor("value").map(|t| t.dims.len()).or(Some(0).filter(|_| node.attr("value_int").is_some()))
        } else {
            RANK_RULES.iter().find(|(ops, _)| ops.contains(&node.op_type())).and_then(|(_, rule)| rule(node, &facts))
        };
        if let Some(rank) = rank {
            for out in node.output.iter().filter(|o| !o.is_empty()) {
                facts.ranks.entry(out.clone()).or_insert(rank);
            }
        }
        let Some(out) = node.output.first() else { continue };
        if let Some(length) = output_length(node, &facts) {
            facts.lengths.entry(out.clone()).or_insert(length);
        }
        match node.op_type() {
            "Constant" => {
                let values = match node.attr_tensor("value") {
                    Some(tensor) => small_integers(tensor),
                    None => {
                        node.attr_ints("value_ints").map(<[i64]>::to_vec).or_else(|| node.attr_int("value_int").map(|v| vec![v]))
                    }
                };
                if let Some(values) = values {
                    facts.constants.insert(out.clone(), values);
                }
            }
            "Shape" => {
                if let Some(x) = input(node, 0) {
                    facts.shape_of.insert(out.clone(), x.to_string());
                }
            }
            _ => {}
        }
    }
    facts.ranks
}

fn input(node: &NodeProto, index: usize) -> Option<&str> {
    node.input.get(index).map(String::as_str).filter(|name| !name.is_empty())
}

fn same_as_first(node: &NodeProto, facts: &Facts) -> Option<usize> {
    // A convolution's weight states the rank even when its input does not.
    if matches!(node.op_type(), "Conv" | "ConvTranspose")
        && let Some(rank) = input(node, 1).and_then(|w| facts.rank(w))
    {
        return Some(rank);
    }
    input(node, 0).and_then(|x| facts.rank(x))
}

/// Numpy broadcasting: the largest input rank.
fn largest(node: &NodeProto, facts: &Facts) -> Option<usize> {
    let ranks: Option<Vec<usize>> = node.input.iter().filter(|i| !i.is_empty()).map(|i| facts.rank(i)).collect();
    ranks?.into_iter().max()
}

/// numpy.matmul: 1-D operands lose their axis; the batch axes broadcast.
fn matmul(node: &NodeProto, facts: &Facts) -> Option<usize> {
    let (a, b) = (facts.rank(input(node, 0)?)?, facts.rank(input(node, 1)?)?);
    Some(match (a, b) {
        (1, 1) => 0,
        (1, b) => b - 1,
        (a, 1) => a - 1,
        (a, b) => a.max(b),
    })
}

fn rank_from_shape_input(node: &NodeProto, facts: &Facts) -> Option<usize> {
    let shape = if node.op_type() == "Reshape" { input(node, 1)? } else { input(node, 0)? };
    facts.length(shape)
}

fn expand(node: &NodeProto, facts: &Facts) -> Option<usize> {
    Some(facts.rank(input(node, 0)?)?.max(facts.length(input(node, 1)?)?))
}

/// How many axes a node names: its `axes` attribute, or its axes input (opset 13 and later).
fn axis_count(node: &NodeProto, facts: &Facts, input_index: usize) -> Option<usize> {
    match node.attr_ints("axes") {
        Some(axes) => Some(axes.len()),
        None => facts.length(input(node, input_index)?),
    }
}

fn unsqueeze(node: &NodeProto, facts: &Facts) -> Option<usize> {
    Some(facts.rank(input(node, 0)?)? + axis_count(node, facts, 1)?)
}

fn squeeze(node: &NodeProto, facts: &Facts) -> Option<usize> {
    // Without axes, every axis of size 1 goes: the sizes are not known here.
    let rank = facts.rank(input(node, 0)?)?;
    rank.checked_sub(axis_count(node, facts, 1)?)
}

fn gather(node: &NodeProto, facts: &Facts) -> Option<usize> {
    (facts.rank(input(node, 0)?)? + facts.rank(input(node, 1)?)?).checked_sub(1)
}

fn reduce(node: &NodeProto, facts: &Facts) -> Option<usize> {
    let rank = facts.rank(input(node, 0)?)?;
    if node.attr_int("keepdims").unwrap_or(1) != 0 {
        return Some(rank);
    }
    if matches!(node.op_type(), "ArgMax" | "ArgMin") {
        return rank.checked_sub(1);
    }
    match axis_count(node, facts, 1) {
        // No axes: every axis is reduced (unless noop_with_empty_axes, which keeps the rank).
        None if input(node, 1).is_none() && node.attr_int("noop_with_empty_axes").unwrap_or(0) == 0 => Some(0),
        None => None,
        Some(count) => rank.checked_sub(count),
    }
}

/// The output subscripts' count, when the equation names them ("...->" with an ellipsis is
/// left unknown).
fn einsum(node: &NodeProto, _facts: &Facts) -> Option<usize> {
    let equation = node.attr_string("equation")?;
    let (_, output) = equation.split_once("->")?;
    let output = output.trim();
    (!output.contains('.')).then(|| output.chars().filter(|c| c.is_ascii_alphabetic()).count())
}

/// The length of a 1-D value a node computes, where shape tensors are concerned.
fn output_length(node: &NodeProto, facts: &Facts) -> Option<usize> {
    match node.op_type() {
        "Constant" => match node.attr_tensor("value").map(|t| t.dims.as_slice()) {
            Some([length]) => Some(*length as usize),
            _ => node.attr_ints("value_ints").map(<[i64]>::len),
        },
        "Shape" => {
            let rank = facts.rank(input(node, 0)?)? as i64;
            let clamp = |i: i64| if i < 0 { (i + rank).max(0) } else { i.min(rank) };
            let start = clamp(node.attr_int("start").unwrap_or(0));
            let end = clamp(node.attr_int("end").unwrap_or(rank));
            Some((end - start).max(0) as usize)
        }
        "Unsqueeze" if facts.rank(input(node, 0)?)? == 0 => Some(1),
        "Concat" => node.input.iter().map(|i| facts.length(i)).sum(),
        "Cast" | "Identity" | "Neg" | "Abs" => facts.length(input(node, 0)?),
        "Gather" if facts.rank(input(node, 0)?)? == 1 => facts.length(input(node, 1)?),
        "Reshape" => match facts.constant(input(node, 1)?)? {
            [-1] => facts.length(input(node, 0)?),
            [length] if *length >= 0 => Some(*length as usize),
            _ => None,
        },
        // ConstantOfShape(Shape(v)) of a 1-D v: as long as v.
        "ConstantOfShape" => match facts.shape_of.get(input(node, 0)?) {
            Some(v) if facts.rank(v) == Some(1) => facts.length(v),
            _ => None,
        },
        "Slice" => slice_length(node, facts),
        "Add" | "Sub" | "Mul" | "Div" | "Max" | "Min" | "Where" | "Equal" | "Less" | "LessOrEqual" | "Greater"
        | "GreaterOrEqual" | "And" | "Or" | "Not" => {
            let lengths: Option<Vec<usize>> = node
                .input
                .iter()
                .map(|i| match facts.rank(i) {
                    Some(0) => Some(1),
                    _ => facts.length(i),
                })
                .collect();
            lengths?.into_iter().max()
        }
        _ => None,
    }
}

/// The length of a 1-D slice with constant bounds (opset 10 and later: bounds as inputs).
fn slice_length(node: &NodeProto, facts: &Facts) -> Option<usize> {
    let length = facts.length(input(node, 0)?)? as i64;
    let bound = |index: usize| input(node, index).and_then(|b| facts.constant(b)).and_then(|v| v.first().copied());
    let (start, end) = (bound(1)?, bound(2)?);
    if input(node, 3).is_some_and(|a| !matches!(facts.constant(a), Some([0] | [-1]))) {
        return None;
    }
    let step = match input(node, 4) {
        Some(_) => bound(4)?,
        None => 1,
    };
    if step != 1 {
        return None;
    }
    let clamp = |i: i64| if i < 0 { (i + length).max(0) } else { i.min(length) };
    Some((clamp(end) - clamp(start)).max(0) as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use explaind_onnx::proto::tensor_proto::DataType;
    use explaind_onnx::{AttributeProto, Dim, GraphBuilder, tensor_i64};

    /// The pattern exporters emit for an attention head split, with no value-infos: x [B, L, D]
    /// reshaped by a shape built from Shape, Gather, Unsqueeze and Concat, transposed, and
    /// multiplied by its own transpose.
    #[test]
    fn ranks_follow_through_an_exported_reshape_transpose_and_matmul() {
        let mut b = GraphBuilder::new("heads");
        b.add_input("x", DataType::Float, [Dim::Param("batch".into()), Dim::Value(6), Dim::Value(16)]);
        let shape = b.add_node("Shape", &["x"], vec![]);
        let zero = b.add_initializer(tensor_i64("zero", &[], &[0]));
        let batch = b.add_node("Gather", &[&shape, &zero], vec![]);
        let axes = b.add_initializer(tensor_i64("axes", &[1], &[0]));
        let batch_1d = b.add_node("Unsqueeze", &[&batch, &axes], vec![]);
        let rest = b.add_initializer(tensor_i64("rest", &[3], &[6, 2, 8]));
        let target = b.add_node("Concat", &[&batch_1d, &rest], vec![AttributeProto::int("axis", 0)]);
        let heads = b.add_node("Reshape", &["x", &target], vec![]);
        let transposed = b.add_node("Transpose", &[&heads], vec![AttributeProto::ints("perm", [0, 2, 1, 3])]);
        let keys = b.add_node("Transpose", &[&heads], vec![AttributeProto::ints("perm", [0, 2, 3, 1])]);
        let scores = b.add_node("MatMul", &[&transposed, &keys], vec![]);
        let pooled =
            b.add_node("ReduceMean", &[&scores], vec![AttributeProto::ints("axes", [2, 3]), AttributeProto::int("keepdims", 0)]);
        let ranks = infer(b.graph());
        assert_eq!(ranks.get(&batch), Some(&0));
        assert_eq!(ranks.get(&batch_1d), Some(&1));
        assert_eq!(ranks.get(&heads), Some(&4));
        assert_eq!(ranks.get(&transposed), Some(&4));
        assert_eq!(ranks.get(&scores), Some(&4));
        assert_eq!(ranks.get(&pooled), Some(&2));
    }

    #[test]
    fn stated_ranks_win_and_unknowable_ones_stay_unknown() {
        let mut b = GraphBuilder::new("unknown");
        b.add_input("x", DataType::Float, [Dim::Value(2), Dim::Value(3)]);
        b.add_input("shape", DataType::Int64, [Dim::Param("n".into())]);
        let reshaped = b.add_node("Reshape", &["x", "shape"], vec![]);
        let squeezed = b.add_node("Squeeze", &["x"], vec![]);
        let mut graph = b.finish();
        graph.value_info.push(explaind_onnx::tensor_value_info(&squeezed, DataType::Float, [Dim::Value(6)]));
        let ranks = infer(&graph);
        assert_eq!(ranks.get(&reshaped), None, "a shape of unknown length tells no rank");
        assert_eq!(ranks.get(&squeezed), Some(&1), "the value-info's rank");
    }
}
