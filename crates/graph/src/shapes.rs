//! Which values provably have the same shape, told from the file without running it.
//!
//! A gradient flowing back through a broadcasting operator (`Add`, `Mul`, `Where`...) is
//! summed over the axes along which each operand was broadcast. Where sizes are unknown that
//! is decided at run time ([`crate::rules::Emitter::unbroadcast`]), by reductions that copy the
//! whole gradient even when nothing was broadcast, which in a transformer is almost every
//! time: a bias added, a scalar multiplied, the two factors of GELU. Those copies were a fifth
//! of a ViT's backward pass. This pass proves the common cases where an operand's shape is the
//! output's, so the rules skip the reduction:
//!
//! - sizes the file states (inputs, value-infos, outputs, initializers, `Constant`s), carried
//!   through elementwise operators, broadcasting, `MatMul`, `Gemm` and `Transpose`;
//! - values that share a shape through elementwise operators: an operator's output has the
//!   shape of an operand when every other operand broadcasts into that operand without
//!   changing it (a size-1 or equal size on every axis it has, or the same shape already).
//!
//! Sizes the file does not state are symbols: a value's unknown axis gets a fresh one, which
//! the rules above carry (a reduction keeps the symbols of the axes it keeps, an elementwise
//! operator passes them on), so that a mean taken over the last axis provably broadcasts back
//! into the tensor it was taken from whatever its batch size. An axis is proven only by equal
//! sizes or equal symbols, never guessed: a symbol may stand for 1 at run time, and two
//! different symbols may be equal without it being proven.

use explaind_onnx::{Dim, GraphProto, NodeProto, is_default_domain};
use std::collections::HashMap;

/// Operators whose first output has the shape of their first input (elementwise ones, and the
/// normalisations). Convolutions and pools keep the rank, not the shape: not here.
const SHAPE_PRESERVING: &[&str] = &[
    "Abs",
    "BatchNormalization",
    "Cast",
    "Ceil",
    "Celu",
    "Clip",
    "Cos",
    "CumSum",
    "Dropout",
    "Elu",
    "Erf",
    "Exp",
    "Floor",
    "Gelu",
    "GroupNormalization",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "InstanceNormalization",
    "IsInf",
    "IsNaN",
    "LRN",
    "LayerNormalization",
    "LeakyRelu",
    "Log",
    "LogSoftmax",
    "Mish",
    "Neg",
    "Not",
    "RMSNormalization",
    "Reciprocal",
    "Relu",
    "Round",
    "Selu",
    "Sigmoid",
    "Sign",
    "Sin",
    "Softmax",
    "Softplus",
    "Softsign",
    "Sqrt",
    "Tanh",
    "ThresholdedRelu",
];

/// The size of one axis: known, or a symbol standing for a size fixed at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Size {
    Known(i64),
    Symbol(u32),
}

const ONE: Size = Size::Known(1);

/// What the file tells about shapes (see the module documentation).
#[derive(Debug, Default)]
pub struct ShapeFacts {
    /// Sizes per axis, for values whose rank is known.
    sizes: HashMap<String, Vec<Size>>,
    /// Union-find over value names: values in one class have one shape.
    parent: HashMap<String, String>,
    symbols: u32,
}

impl ShapeFacts {
    /// The facts about `graph`, whose values' ranks are `ranks` ([`crate::ranks::infer`]).
    pub fn infer(graph: &GraphProto, ranks: &HashMap<String, usize>) -> ShapeFacts {
        let mut facts = ShapeFacts::default();
        for info in graph.input.iter().chain(&graph.value_info).chain(&graph.output) {
            if let Some(shape) = info.tensor_shape() {
                let sizes = shape
                    .iter()
                    .map(|d| match d {
                        Some(Dim::Value(v)) => Size::Known(*v),
                        _ => facts.symbol(),
                    })
                    .collect();
                facts.sizes.insert(info.name().to_string(), sizes);
            }
        }
        for init in &graph.initializer {
            facts.sizes.insert(init.name().to_string(), init.dims.iter().map(|&d| Size::Known(d)).collect());
        }
        for node in graph.node.iter().filter(|n| is_default_domain(n.domain())) {
            facts.learn(node, graph);
            // What no rule tells: a fresh symbol per axis of a value of known rank.
            for out in node.output.iter().filter(|o| !o.is_empty()) {
                if !facts.sizes.contains_key(out)
                    && let Some(&rank) = ranks.get(out)
                {
                    let sizes = (0..rank).map(|_| facts.symbol()).collect();
                    facts.sizes.insert(out.clone(), sizes);
                }
            }
        }
        facts
    }

    /// Whether `a` and `b` provably have the same shape.
    pub fn same_shape(&self, a: &str, b: &str) -> bool {
        self.class(a) == self.class(b) || matches!((self.sizes.get(a), self.sizes.get(b)), (Some(x), Some(y)) if x == y)
    }

    /// Whether a broadcasting `node`'s output provably has the shape of its input `i`.
    pub fn output_has_shape_of_input(&self, node: &NodeProto, i: usize) -> bool {
        node.output.first().is_some_and(|out| node.input.get(i).is_some_and(|input| self.same_shape(out, input)))
    }

    /// Whether `MatMul` `node`'s operand `i` has batch axes (all but the last two) into which
    /// the other operand's broadcast, so that the product's batch axes, and the operand's
    /// gradient, have the operand's shape. A 2-D other operand has none.
    pub fn matmul_keeps_batch_of(&self, node: &NodeProto, i: usize) -> bool {
        let sizes = |j: usize| node.input.get(j).and_then(|name| self.sizes.get(name));
        let (Some(own), Some(other)) = (sizes(i), sizes(1 - i)) else { return false };
        own.len() >= 2 && other.len() >= 2 && fits(&other[..other.len() - 2], &own[..own.len() - 2])
    }

    fn symbol(&mut self) -> Size {
        self.symbols += 1;
        Size::Symbol(self.symbols)
    }

    fn learn(&mut self, node: &NodeProto, graph: &GraphProto) {
        let Some(out) = node.output.first().filter(|o| !o.is_empty()).cloned() else { return };
        let op = node.op_type();
        let operands: Vec<&str> = node.input.iter().map(String::as_str).filter(|i| !i.is_empty()).collect();
        let sizes_of = |i: usize| operands.get(i).and_then(|name| self.sizes.get(*name));
        let sizes = match op {
            "Constant" => match node.attr_tensor("value") {
                Some(tensor) => Some(tensor.dims.iter().map(|&d| Size::Known(d)).collect()),
                None => (node.attr("value_float").is_some() || node.attr("value_int").is_some()).then(Vec::new),
            },
            _ if SHAPE_PRESERVING.contains(&op) => sizes_of(0).cloned(),
            _ if crate::ranks::BROADCASTING.contains(&op) => {
                let all: Option<Vec<Vec<Size>>> = (0..operands.len()).map(|i| sizes_of(i).cloned()).collect();
                all.map(|all| self.broadcast(&all.iter().collect::<Vec<_>>()))
            }
            "MatMul" => match (sizes_of(0), sizes_of(1)) {
                (Some(a), Some(b)) if a.len() >= 2 && b.len() >= 2 => {
                    let (a, b) = (a.clone(), b.clone());
                    let mut sizes = self.broadcast(&[&a[..a.len() - 2].to_vec(), &b[..b.len() - 2].to_vec()]);
                    sizes.extend([a[a.len() - 2], b[b.len() - 1]]);
                    Some(sizes)
                }
                _ => None,
            },
            "Gemm" => {
                let axis = |i: usize, transposed: &str, axis: usize| {
                    let flip = node.attr_int(transposed).unwrap_or(0) != 0;
                    sizes_of(i).filter(|s| s.len() == 2).map(|s| s[if flip { 1 - axis } else { axis }])
                };
                axis(0, "transA", 0).zip(axis(1, "transB", 1)).map(|(rows, columns)| vec![rows, columns])
            }
            "Transpose" => sizes_of(0).map(|sizes| match node.attr_ints("perm") {
                Some(perm) => perm.iter().filter_map(|&p| sizes.get(p as usize).copied()).collect(),
                None => sizes.iter().rev().copied().collect(),
            }),
            _ if crate::ranks::REDUCTIONS.contains(&op) => reduced(node, graph, sizes_of(0)),
            _ => None,
        };
        if let Some(sizes) = sizes {
            self.sizes.entry(out.clone()).or_insert(sizes);
        }
        if SHAPE_PRESERVING.contains(&op) {
            if let Some(&input) = operands.first() {
                self.union(&out, input);
            }
        } else if crate::ranks::BROADCASTING.contains(&op) {
            for (i, &operand) in operands.iter().enumerate() {
                if operands.iter().enumerate().all(|(j, other)| j == i || self.fits_into(other, operand)) {
                    self.union(&out, operand);
                }
            }
        }
    }

    /// The numpy broadcast of `operands`' sizes, axis by axis (aligned from the last): a known
    /// size other than 1 where one operand has it (the others must have 1 or the same), 1 where
    /// every operand has 1 or lacks the axis, the symbol where every other operand has that
    /// symbol or 1, and a fresh symbol otherwise.
    fn broadcast(&mut self, operands: &[&Vec<Size>]) -> Vec<Size> {
        let rank = operands.iter().map(|s| s.len()).max().unwrap_or(0);
        let mut sizes = Vec::with_capacity(rank);
        for axis in 0..rank {
            let present: Vec<Size> =
                operands.iter().filter_map(|s| (axis + s.len()).checked_sub(rank).map(|i| s[i])).filter(|&s| s != ONE).collect();
            sizes.push(match present.as_slice() {
                [] => ONE,
                _ if present.iter().any(|s| matches!(s, Size::Known(_))) => {
                    *present.iter().find(|s| matches!(s, Size::Known(_))).expect("checked")
                }
                [first, rest @ ..] if rest.iter().all(|s| s == first) => *first,
                _ => self.symbol(),
            });
        }
        sizes
    }

    /// Whether `other` broadcasts into `target` without changing `target`'s shape: the same
    /// shape, or no more axes and, on each axis it has (aligned from the last), size 1 or the
    /// size (or symbol) `target` has there.
    fn fits_into(&self, other: &str, target: &str) -> bool {
        if self.same_shape(other, target) {
            return true;
        }
        let (Some(other), Some(target)) = (self.sizes.get(other), self.sizes.get(target)) else { return false };
        fits(other, target)
    }

    fn class(&self, name: &str) -> String {
        let mut name = name.to_string();
        while let Some(parent) = self.parent.get(&name) {
            name = parent.clone();
        }
        name
    }

    fn union(&mut self, a: &str, b: &str) {
        let (a, b) = (self.class(a), self.class(b));
        if a != b {
            self.parent.insert(a, b);
        }
    }
}

/// Whether sizes `other` broadcast into `target` unchanged: no more axes, and on each (aligned
/// from the last) 1 or `target`'s size or symbol.
fn fits(other: &[Size], target: &[Size]) -> bool {
    other.len() <= target.len() && other.iter().rev().zip(target.iter().rev()).all(|(o, t)| *o == ONE || o == t)
}

/// A reduction's output sizes, when its axes are constant: kept axes keep their sizes, reduced
/// ones become 1 (`keepdims`) or go.
fn reduced(node: &NodeProto, graph: &GraphProto, input: Option<&Vec<Size>>) -> Option<Vec<Size>> {
    let input = input?;
    let rank = input.len() as i64;
    let axes = match node.attr_ints("axes") {
        Some(axes) => axes.to_vec(),
        None => {
            let name = node.input.get(1).filter(|n| !n.is_empty())?;
            graph.constant(name)?.to_i64().ok()?.1
        }
    };
    let axes: Vec<i64> = axes.iter().map(|&a| if a < 0 { a + rank } else { a }).collect();
    if axes.is_empty() || axes.iter().any(|&a| !(0..rank).contains(&a)) {
        return None;
    }
    let keep = node.attr_int("keepdims").unwrap_or(1) != 0;
    let sizes = input.iter().enumerate().filter_map(|(axis, &size)| match axes.contains(&(axis as i64)) {
        true => keep.then_some(ONE),
        false => Some(size),
    });
    Some(sizes.collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use explaind_onnx::proto::tensor_proto::DataType;
    use explaind_onnx::{AttributeProto, GraphBuilder, tensor_f32, tensor_i64};

    fn facts(graph: &GraphProto) -> ShapeFacts {
        ShapeFacts::infer(graph, &crate::ranks::infer(graph))
    }

    fn producer<'g>(graph: &'g GraphProto, out: &str) -> &'g NodeProto {
        graph.node.iter().find(|n| n.output[0] == out).unwrap()
    }

    /// x [batch, 4, 3] · W [3, 5] + b [5], GELU's pieces, a layer norm's centring, and a
    /// residual whose operand's sizes the file does not tell.
    #[test]
    fn operands_that_broadcast_without_changing_a_shape_share_it() {
        let mut b = GraphBuilder::new("g");
        b.add_input("x", DataType::Float, [Dim::from("batch"), 4.into(), 3.into()]);
        b.add_input("h", DataType::Float, [Dim::from("batch"), Dim::from("seq"), 5.into()]);
        let w = b.add_initializer(tensor_f32("w", &[3, 5], &[0.0; 15]));
        let bias = b.add_initializer(tensor_f32("bias", &[5], &[0.0; 5]));
        let column = b.add_initializer(tensor_f32("column", &[4, 1], &[0.0; 4]));
        let wide = b.add_initializer(tensor_f32("wide", &[2, 1, 1, 1], &[0.0; 2]));
        let half = b.add_initializer(tensor_f32("half", &[], &[0.5]));
        let last = b.add_initializer(tensor_i64("last", &[1], &[-1]));
        let product = b.add_node("MatMul", &["x", &w], vec![]);
        let biased = b.add_node("Add", &[&product, &bias], vec![]);
        let scaled = b.add_node("Div", &[&biased, &half], vec![]);
        let erf = b.add_node("Erf", &[&scaled], vec![]);
        let gelu = b.add_node("Mul", &[&biased, &erf], vec![]);
        let residual = b.add_node("Add", &["h", &gelu], vec![]);
        let per_row = b.add_node("Mul", &[&gelu, &column], vec![]);
        let widened = b.add_node("Mul", &[&gelu, &wide], vec![]);
        let transposed = b.add_node("Transpose", &[&gelu], vec![AttributeProto::ints("perm", [0, 2, 1])]);
        let mean = b.add_node("ReduceMean", &[&gelu, &last], vec![]);
        let centred = b.add_node("Sub", &[&gelu, &mean], vec![]);
        let graph = b.finish();
        let facts = facts(&graph);
        let proven = |out: &str, i: usize| facts.output_has_shape_of_input(producer(&graph, out), i);
        // The bias fits the product's known last axis; the scalar fits anything.
        assert!(proven(&biased, 0));
        assert!(proven(&scaled, 0));
        assert!(facts.same_shape(&erf, &product));
        // GELU's two varying factors are provably one shape.
        assert!(proven(&gelu, 0) && proven(&gelu, 1));
        // [4, 1] fits [batch, 4, 5]; [2, 1, 1, 1] adds an axis.
        assert!(proven(&per_row, 0));
        assert!(!proven(&widened, 0));
        // A mean over the last axis broadcasts back into its input (the same batch symbol);
        // the mean itself is broadcast.
        assert!(proven(&centred, 0));
        assert!(!proven(&centred, 1));
        // The residual's other operand has a sequence axis of its own symbol: nothing proven.
        assert!(!proven(&residual, 0) && !proven(&residual, 1));
        // The bias's own gradient must still be summed over the batch and rows.
        assert!(!proven(&biased, 1));
        assert!(!facts.same_shape(&transposed, &gelu));
        assert_eq!(facts.sizes[transposed.as_str()][1..], [Size::Known(5), Size::Known(4)]);
    }

    #[test]
    fn a_size_one_axis_of_the_operand_is_not_assumed() {
        // x [batch, 1] + c [3]: the output is [batch, 3], not x's shape; x [batch, n] + c [3]:
        // n may be 1.
        for width in [Dim::from(1), Dim::from("n")] {
            let mut b = GraphBuilder::new("g");
            b.add_input("x", DataType::Float, [Dim::from("batch"), width]);
            let c = b.add_initializer(tensor_f32("c", &[3], &[0.0; 3]));
            let y = b.add_node("Add", &["x", &c], vec![]);
            let graph = b.finish();
            let facts = facts(&graph);
            assert!(!facts.output_has_shape_of_input(&graph.node[0], 0));
            assert_eq!(facts.sizes[y.as_str()][1], Size::Known(3));
        }
    }
}
