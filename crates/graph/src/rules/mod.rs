//! Vector-Jacobian products, one rule per ONNX operator, emitted as ONNX nodes.
//!
//! Each rule receives the gradient of the node's first output and which inputs vary, and
//! returns one gradient per input (`None` for inputs that do not vary). Rules read shapes at
//! run time (`Shape`) rather than assuming them, so symbolic batch sizes and any spatial size
//! work.
//!
//! The rules live in one module per operator family, each with a table of `(operator, rule)`
//! pairs; [`rule_for`] looks an operator up in them. A new operator is one function and one
//! table entry:
//! - [`elementwise`]: unary activations and functions, arithmetic, `Pow`, `Min`, `Max`, `Cast`,
//!   `Clip`;
//! - [`linalg`]: `MatMul`, `Gemm`;
//! - [`conv`]: convolutions and pooling, with [`max_pool_indices`];
//! - [`normalization`]: `BatchNormalization`, `Softmax`, `LogSoftmax`;
//! - [`shape`]: reshaping, transposing, concatenating, splitting, padding, slicing, gathering,
//!   expanding, tiling, `Where`, `Constant`;
//! - [`reduce`]: `ReduceSum`, `ReduceMean`, `ReduceMax`, `ReduceMin`, `ReduceL2`,
//!   `ReduceSumSquare`, `ReduceLogSumExp`;
//! - [`resize`]: `Resize` (nearest and linear, over the spatial axes of NCHW tensors).
//!
//! Composite operators without a rule of their own (`HardSigmoid`, `LayerNormalization`...)
//! are rewritten into these before the rules run ([`crate::lower`]).

pub mod conv;
pub mod elementwise;
pub mod linalg;
pub mod normalization;
pub mod reduce;
pub mod resize;
pub mod shape;

pub(crate) use conv::max_pool_attrs;
pub use conv::max_pool_indices;

use crate::CompileError;
use explaind_onnx::proto::tensor_proto::DataType;
use explaind_onnx::{AttributeProto, GraphBuilder, GraphProto, NodeProto, tensor_f32, tensor_i64};
use std::collections::HashMap;

/// Emits nodes into the graph being compiled, with a few shared helpers.
pub struct Emitter<'a> {
    builder: &'a mut GraphBuilder,
    /// The default-domain opset of the graph being written.
    opset: i64,
    /// The original graph, for constants and declared shapes.
    source: &'a GraphProto,
    scalars: HashMap<u32, String>,
    int_lists: HashMap<Vec<i64>, String>,
    shapes: HashMap<String, String>,
    /// DeepLIFT's counterparts: for each value of the input side, the same value computed on
    /// the references. See [`PairLayout`].
    shape_source: HashMap<String, String>,
    /// Set while compiling DeepLIFT multipliers: how their rows are laid out.
    layout: Option<PairLayout>,
    /// Results of [`Emitter::per_pair`], by name: the gradient and the factor they multiplied.
    pair_products: HashMap<String, (String, String)>,
    /// The int64 scalars 0 and 1 that [`Emitter::range`] starts and steps by.
    range_bounds: Option<(String, String)>,
    /// Static spatial sizes of the source graph's values ([`crate::layers::spatial_sizes`]),
    /// computed when a rule first asks.
    spatial_sizes: Option<HashMap<String, Vec<i64>>>,
    /// Ranks of the source graph's values ([`crate::ranks::infer`]).
    ranks: HashMap<String, usize>,
    /// Which of the source graph's values provably share a shape ([`crate::shapes`]).
    shape_facts: crate::shapes::ShapeFacts,
    max_pool_indices: crate::MaxPoolIndices,
}

/// How DeepLIFT's graphs lay out their rows, so that what depends only on an (input,
/// reference) pair is computed once per pair rather than once per (pair, seed).
///
/// - The *pair stage* works on the forward values of both sides: the reference side has R rows
///   and the input side R rows or one row (which broadcasts). Rescale ratios, routing weights
///   and Shapley means are computed here, with R rows.
/// - The *gradient stage* carries the seeds backwards with T·R rows, seed-major (row t·R + r
///   holds seed t against reference r). It is linear in the seeds: every nonlinearity is a
///   multiplication by a pair-stage factor, broadcast over the T seeds by
///   [`Emitter::per_pair`].
///
/// The three names are 1-element int64 tensors the graph defines: T·R, R and T.
#[derive(Debug, Clone)]
pub struct PairLayout {
    pub gradient_rows: String,
    pub pair_rows: String,
    pub repeats: String,
}

impl<'a> Emitter<'a> {
    pub fn new(builder: &'a mut GraphBuilder, source: &'a GraphProto, opset: i64) -> Self {
        let ranks = crate::ranks::infer(source);
        Emitter {
            builder,
            opset,
            source,
            scalars: HashMap::new(),
            int_lists: HashMap::new(),
            shapes: HashMap::new(),
            shape_source: HashMap::new(),
            layout: None,
            pair_products: HashMap::new(),
            spatial_sizes: None,
            range_bounds: None,
            shape_facts: crate::shapes::ShapeFacts::infer(source, &ranks),
            max_pool_indices: crate::MaxPoolIndices::Portable,
            ranks,
        }
    }

    /// The graph being compiled (before the backward pass was added).
    pub fn source_graph(&self) -> &'a GraphProto {
        self.source
    }

    pub fn builder(&mut self) -> &mut GraphBuilder {
        self.builder
    }

    pub fn node(&mut self, op: &str, inputs: &[&str], attributes: Vec<AttributeProto>) -> String {
        self.builder.add_node(op, inputs, attributes)
    }

    /// A float32 scalar constant (shared between uses).
    pub fn scalar(&mut self, value: f32) -> String {
        if let Some(name) = self.scalars.get(&value.to_bits()) {
            return name.clone();
        }
        let name = self.builder.add_initializer(tensor_f32("grad_const", &[], &[value]));
        self.scalars.insert(value.to_bits(), name.clone());
        name
    }

    /// A 1-D int64 constant (shared between uses).
    pub fn ints(&mut self, values: &[i64]) -> String {
        if let Some(name) = self.int_lists.get(values) {
            return name.clone();
        }
        let name = self.builder.add_initializer(tensor_i64("grad_ints", &[values.len() as i64], values));
        self.int_lists.insert(values.to_vec(), name.clone());
        name
    }

    /// Switches to DeepLIFT's row layout: `counterparts` maps each input-side value to its
    /// reference-side twin, whose shape (with T·R rows) the gradient stage takes.
    pub fn use_pair_layout(&mut self, counterparts: HashMap<String, String>, layout: PairLayout) {
        self.shape_source = counterparts;
        self.layout = Some(layout);
    }

    /// The gradient-stage shape of `tensor`: `Shape(tensor)`, or under a [`PairLayout`] its
    /// reference twin's shape with T·R rows. Emitted once per tensor.
    pub fn shape(&mut self, tensor: &str) -> String {
        if let Some(name) = self.shapes.get(tensor) {
            return name.clone();
        }
        let name = match (self.shape_source.get(tensor).cloned(), self.layout.clone()) {
            (Some(twin), Some(layout)) => {
                let twin_shape = self.pair_shape(&twin);
                let rest = self.after_first(&twin_shape);
                self.node("Concat", &[&layout.gradient_rows, &rest], vec![AttributeProto::int("axis", 0)])
            }
            _ => self.node("Shape", &[tensor], vec![]),
        };
        self.shapes.insert(tensor.to_string(), name.clone());
        name
    }

    /// The pair-stage shape of `tensor` (R rows under a [`PairLayout`]): its reference twin's.
    pub fn pair_shape(&mut self, tensor: &str) -> String {
        let source = self.shape_source.get(tensor).cloned().unwrap_or_else(|| tensor.to_string());
        let key = format!("{source}\u{0}pair");
        if let Some(name) = self.shapes.get(&key) {
            return name.clone();
        }
        let name = self.node("Shape", &[&source], vec![]);
        self.shapes.insert(key, name.clone());
        name
    }

    /// The element count of `tensor`'s gradient-stage shape, as an int64 scalar.
    pub fn size(&mut self, tensor: &str) -> String {
        let shape = self.shape(tensor);
        self.node("ReduceProd", &[&shape], vec![AttributeProto::int("keepdims", 0)])
    }

    /// `g · factor` for a gradient-stage `g` (T·R rows) and a pair-stage `factor` (R rows, or
    /// one): `g` is viewed as [T, R, ...] so the factor broadcasts over the seeds without
    /// being copied T times. Without a [`PairLayout`] a plain product.
    ///
    /// Factors in a row (a max-pool's routing weights, then the rescale factor of the ReLU
    /// before it) are multiplied together in the pair stage first, so the seeds' rows take one
    /// product rather than one per factor.
    pub fn per_pair(&mut self, g: &str, factor: &str) -> String {
        let Some(layout) = self.layout.clone() else { return self.node("Mul", &[g, factor], vec![]) };
        if let Some((inner, first)) = self.pair_products.get(g).cloned() {
            let both = self.node("Mul", &[&first, factor], vec![]);
            return self.per_pair(&inner, &both);
        }
        let (lifted, rest) = self.lift(g, &layout);
        // The factor broadcasts into g's shape, so the product has g's shape again.
        let product = self.node("Mul", &[&lifted, factor], vec![]);
        let flat_shape = self.node("Concat", &[&layout.gradient_rows, &rest], vec![AttributeProto::int("axis", 0)]);
        let result = self.node("Reshape", &[&product, &flat_shape], vec![]);
        self.pair_products.insert(result.clone(), (g.to_string(), factor.to_string()));
        result
    }

    /// The gradient-stage product of `g` with a pair-stage matrix: `g · factor`, or
    /// `factor · g` when `factor_first`, batched over the seeds like [`Emitter::per_pair`].
    pub fn per_pair_matmul(&mut self, g: &str, factor: &str, factor_first: bool) -> String {
        let operands =
            |g: &str| if factor_first { [factor.to_string(), g.to_string()] } else { [g.to_string(), factor.to_string()] };
        let Some(layout) = self.layout.clone() else {
            let [a, b] = operands(g);
            return self.node("MatMul", &[&a, &b], vec![]);
        };
        let (lifted, _) = self.lift(g, &layout);
        let [a, b] = operands(&lifted);
        let product = self.node("MatMul", &[&a, &b], vec![]);
        let product_shape = self.node("Shape", &[&product], vec![]);
        let start = self.ints(&[2]);
        let end = self.ints(&[i64::MAX]);
        let product_rest = self.node("Slice", &[&product_shape, &start, &end], vec![]);
        let flat_shape = self.node("Concat", &[&layout.gradient_rows, &product_rest], vec![AttributeProto::int("axis", 0)]);
        self.node("Reshape", &[&product, &flat_shape], vec![])
    }

    /// Under a [`PairLayout`], the flat offset of each seed's block in a gradient-stage tensor
    /// shaped like `tensor`, as [T, 1] int64 (t · R · row size); without one, `None`.
    pub fn seed_offsets(&mut self, tensor: &str) -> Option<String> {
        let layout = self.layout.clone()?;
        let pair_shape = self.pair_shape(tensor);
        let block = self.node("ReduceProd", &[&pair_shape], vec![AttributeProto::int("keepdims", 0)]);
        let axis0 = self.ints(&[0]);
        let seeds = self.node("Squeeze", &[&layout.repeats, &axis0], vec![]);
        let seeds = self.range(&seeds);
        let offsets = self.node("Mul", &[&seeds, &block], vec![]);
        let column = self.ints(&[-1, 1]);
        Some(self.node("Reshape", &[&offsets, &column], vec![]))
    }

    /// A gradient-stage `g` (T·R rows) viewed as [T, R, ...], and the shape of one of its rows.
    fn lift(&mut self, g: &str, layout: &PairLayout) -> (String, String) {
        let g_shape = self.node("Shape", &[g], vec![]);
        let rest = self.after_first(&g_shape);
        let lifted_shape =
            self.node("Concat", &[&layout.repeats, &layout.pair_rows, &rest], vec![AttributeProto::int("axis", 0)]);
        (self.node("Reshape", &[g, &lifted_shape], vec![]), rest)
    }

    /// `0, 1, ..., count − 1` as int64 (`count`: an int64 scalar), with the bounds as shared
    /// constants.
    pub fn range(&mut self, count: &str) -> String {
        let (zero, one) = match &self.range_bounds {
            Some(bounds) => bounds.clone(),
            None => {
                let zero = self.builder.add_initializer(tensor_i64("grad_zero", &[], &[0]));
                let one = self.builder.add_initializer(tensor_i64("grad_step", &[], &[1]));
                self.range_bounds.insert((zero, one)).clone()
            }
        };
        self.node("Range", &[&zero, count, &one], vec![])
    }

    /// Elements from index 1 on of a 1-D tensor.
    fn after_first(&mut self, shape: &str) -> String {
        let start = self.ints(&[1]);
        let end = self.ints(&[i64::MAX]);
        self.node("Slice", &[shape, &start, &end], vec![])
    }

    /// `condition ? a : b` elementwise, as `b + mask · (a − b)` with the condition cast to 0/1.
    /// ONNX Runtime's `Where` kernel is several times slower than these vectorised arithmetic
    /// kernels on large tensors (it dominated profiles of the DeepLIFT backward graph). Both
    /// branches must be finite, which every caller ensures.
    pub fn select(&mut self, condition: &str, a: &str, b: &str) -> String {
        let mask = self.float_mask(condition);
        self.blend(&mask, a, b)
    }

    /// A boolean tensor as float 0/1.
    pub fn float_mask(&mut self, condition: &str) -> String {
        self.node("Cast", &[condition], vec![AttributeProto::int("to", DataType::Float as i64)])
    }

    /// `b + mask · (a − b)` for a float 0/1 `mask`.
    pub fn blend(&mut self, mask: &str, a: &str, b: &str) -> String {
        let difference = self.node("Sub", &[a, b], vec![]);
        let chosen = self.node("Mul", &[mask, &difference], vec![]);
        self.node("Add", &[b, &chosen], vec![])
    }

    /// `g` where `condition` holds, else 0: one multiplication by the 0/1 mask.
    pub fn mask(&mut self, condition: &str, g: &str) -> String {
        let mask = self.float_mask(condition);
        self.node("Mul", &[g, &mask], vec![])
    }

    /// `ReduceMax` over `axes`, keeping them (the axes moved from attribute to input in opset 18).
    pub fn reduce_max(&mut self, tensor: &str, axes: &[i64]) -> String {
        let keep = AttributeProto::int("keepdims", 1);
        if self.opset >= 18 {
            let axes = self.ints(axes);
            self.node("ReduceMax", &[tensor, &axes], vec![keep])
        } else {
            self.node("ReduceMax", &[tensor], vec![keep, AttributeProto::ints("axes", axes.to_vec())])
        }
    }

    /// The sum of gradient contributions.
    pub fn sum(&mut self, parts: &[String]) -> String {
        match parts {
            [one] => one.clone(),
            many => {
                let refs: Vec<&str> = many.iter().map(String::as_str).collect();
                self.node("Sum", &refs, vec![])
            }
        }
    }

    /// Zeros in `tensor`'s (gradient-stage) shape.
    pub fn zeros_like(&mut self, tensor: &str) -> String {
        let shape = self.shape(tensor);
        self.node("ConstantOfShape", &[&shape], vec![AttributeProto::tensor("value", tensor_f32("", &[1], &[0.0]))])
    }

    /// A flat float tensor of `count` zeros (`count`: an int64 scalar).
    pub fn flat_zeros(&mut self, count: &str) -> String {
        let flat = self.ints(&[1]);
        let length = self.node("Reshape", &[count, &flat], vec![]);
        self.node("ConstantOfShape", &[&length], vec![AttributeProto::tensor("value", tensor_f32("", &[1], &[0.0]))])
    }

    /// Sums `grad` over the axes along which `target` was broadcast to produce it, and gives
    /// it `target`'s shape. Works at run time for any ranks (numpy broadcasting rules): first
    /// the leading axes `target` lacks are summed away, then the axes where it has size 1.
    pub fn unbroadcast(&mut self, grad: &str, target: &str) -> String {
        let target_shape = self.shape(target);
        let grad_shape = self.shape(grad);
        // Ranks as Shape(Shape(.)) rather than Size: ONNX Runtime's load-time data propagation
        // mis-evaluates Size of a shape and then warns about (or rejects) the graph.
        let grad_rank = self.node("Shape", &[&grad_shape], vec![]);
        let target_rank = self.node("Shape", &[&target_shape], vec![]);
        let extra = self.node("Sub", &[&grad_rank, &target_rank], vec![]);
        let axis0 = self.ints(&[0]);
        let extra = self.node("Squeeze", &[&extra, &axis0], vec![]);
        let leading = self.range(&extra);
        let keep_rank = vec![AttributeProto::int("keepdims", 0), AttributeProto::int("noop_with_empty_axes", 1)];
        let same_rank = self.node("ReduceSum", &[grad, &leading], keep_rank);
        let same_rank_shape = self.node("Shape", &[&same_rank], vec![]);
        let same = self.node("Equal", &[&same_rank_shape, &target_shape], vec![]);
        let differ = self.node("Not", &[&same], vec![]);
        let axes = self.node("NonZero", &[&differ], vec![]);
        let flat = self.ints(&[-1]);
        let axes = self.node("Reshape", &[&axes, &flat], vec![]);
        let reduced = self.node(
            "ReduceSum",
            &[&same_rank, &axes],
            vec![AttributeProto::int("keepdims", 1), AttributeProto::int("noop_with_empty_axes", 1)],
        );
        self.node("Reshape", &[&reduced, &target_shape], vec![])
    }

    /// `grad`, shaped like the output of the broadcasting `node` (`Add`, `Mul`, `Where`...),
    /// summed to the shape of its input `i` ([`Emitter::unbroadcast`]); or `grad` itself where
    /// the file proves that input has the output's shape ([`crate::shapes`]), which saves the
    /// run-time reductions' copies of the whole gradient.
    pub fn unbroadcast_to_input(&mut self, grad: &str, node: &NodeProto, i: usize) -> String {
        if self.shape_facts.output_has_shape_of_input(node, i) {
            return grad.to_string();
        }
        self.unbroadcast(grad, &node.input[i])
    }

    /// `MatMul`'s gradient for its operand `i` (`g · otherᵀ` or `otherᵀ · g`, batched over the
    /// broadcast batch axes), summed to that operand's shape; or itself where the file proves
    /// the other operand's batch axes broadcast into the operand's ([`crate::shapes`]).
    pub fn unbroadcast_matmul_operand(&mut self, grad: &str, node: &NodeProto, i: usize) -> String {
        if self.shape_facts.matmul_keeps_batch_of(node, i) {
            return grad.to_string();
        }
        self.unbroadcast(grad, &node.input[i])
    }

    pub fn set_max_pool_indices(&mut self, choice: crate::MaxPoolIndices) {
        self.max_pool_indices = choice;
    }

    /// The spatial size a max-pool rule passes to [`max_pool_indices`]: the value's, under
    /// [`crate::MaxPoolIndices::Portable`]; `None` (the pool's own indices) otherwise.
    pub fn portable_spatial_size(&mut self, name: &str) -> Option<Vec<i64>> {
        match self.max_pool_indices {
            crate::MaxPoolIndices::Portable => self.spatial_size(name),
            crate::MaxPoolIndices::CpuKernel => None,
        }
    }

    /// The spatial size (the axes after N and C) of a value, when the file tells it statically.
    pub fn spatial_size(&mut self, name: &str) -> Option<Vec<i64>> {
        let source = self.source;
        self.spatial_sizes.get_or_insert_with(|| crate::layers::spatial_sizes(source)).get(name).cloned()
    }

    /// The value of a constant int64 tensor (an initializer or a `Constant` node's output).
    pub fn constant_ints(&self, name: &str) -> Option<Vec<i64>> {
        self.source.constant(name)?.to_i64().ok().map(|(_, v)| v)
    }

    /// The shape and elements of a constant float tensor (an initializer or a `Constant`
    /// node's output).
    pub fn constant_f32(&self, name: &str) -> Option<(Vec<i64>, Vec<f32>)> {
        self.source.constant(name)?.to_f32().ok()
    }

    /// The rank of a tensor of the source graph when the model states it or it follows from
    /// what the model states ([`crate::ranks`]).
    pub fn rank(&self, name: &str) -> Option<usize> {
        self.ranks.get(name).copied()
    }

    /// `tensor` with its last two axes swapped; `like` is a tensor of the same rank whose rank
    /// the model declares.
    pub fn swap_last_two(&mut self, tensor: &str, like: &str, node: &NodeProto) -> Result<String, CompileError> {
        let rank = self.rank(like).ok_or_else(|| form(node, &format!("the rank of {like:?} is not declared")))?;
        if rank < 2 {
            return Err(form(node, "MatMul with a 1-D operand is not supported yet"));
        }
        let mut perm: Vec<i64> = (0..rank as i64).collect();
        perm.swap(rank - 2, rank - 1);
        Ok(self.node("Transpose", &[tensor], vec![AttributeProto::ints("perm", perm)]))
    }

    /// Pads `value` at the end of each axis with zeros up to `like`'s shape (same rank), or
    /// crops it there where it is longer (ONNX `Pad` takes negative pads).
    pub fn pad_to(&mut self, value: &str, like: &str) -> String {
        let want = self.shape(like);
        self.pad_to_shape(value, &want)
    }

    /// Pads (or crops) `value` at the end of each axis to the shape `want` (a shape tensor).
    pub fn pad_to_shape(&mut self, value: &str, want: &str) -> String {
        let have = self.shape(value);
        let missing = self.node("Sub", &[want, &have], vec![]);
        let zero = self.node("Sub", &[&missing, &missing], vec![]);
        let pads = self.node("Concat", &[&zero, &missing], vec![AttributeProto::int("axis", 0)]);
        self.node("Pad", &[value, &pads], vec![])
    }

    /// Elements from axis 2 on of `shape` (the spatial sizes of an N, C, ... tensor).
    pub(crate) fn spatial(&mut self, shape: &str) -> String {
        let start = self.ints(&[2]);
        let end = self.ints(&[i64::MAX]);
        self.node("Slice", &[shape, &start, &end], vec![])
    }
}

pub(crate) fn form(node: &NodeProto, reason: &str) -> CompileError {
    CompileError::UnsupportedForm { op_type: node.op_type().to_string(), node: node.name().to_string(), reason: reason.into() }
}

/// Copies the named attributes that are present on `node`.
pub(crate) fn copy_attrs(node: &NodeProto, names: &[&str]) -> Vec<AttributeProto> {
    node.attribute.iter().filter(|a| names.contains(&a.name())).cloned().collect()
}

/// The result of a rule: one gradient per input of the node (`None` where none flows).
pub type VjpResult = Result<Vec<Option<String>>, CompileError>;

/// The vector-Jacobian rule of one operator: given the node, the gradient of its first output
/// (`g`) and which inputs vary (`varies[i]`), one gradient per input.
pub type VjpRule = fn(e: &mut Emitter<'_>, node: &NodeProto, g: &str, varies: &[bool]) -> VjpResult;

/// Every family's table of rules, searched in order.
const TABLES: &[&[(&str, VjpRule)]] =
    &[elementwise::RULES, linalg::RULES, conv::RULES, normalization::RULES, shape::RULES, reduce::RULES, resize::RULES];

/// The rule for an operator of the default domain, if it has one.
pub fn rule_for(op_type: &str) -> Option<VjpRule> {
    TABLES.iter().flat_map(|table| table.iter()).find(|(op, _)| *op == op_type).map(|(_, rule)| *rule)
}

/// The vector-Jacobian product of one node. `g[k]` is the gradient of output k, `varies[i]`
/// whether input i carries a gradient. Returns one entry per input.
pub fn vjp(e: &mut Emitter<'_>, node: &NodeProto, g: &[Option<String>], varies: &[bool]) -> VjpResult {
    if !explaind_onnx::is_default_domain(node.domain()) {
        // The rules are the default domain's operators: a namesake in another domain (a
        // runtime's contrib op, a custom op) may compute something else.
        return Err(CompileError::UnsupportedOp {
            op_type: format!("{}:{}", node.domain(), node.op_type()),
            node: node.name().to_string(),
        });
    }
    if node.op_type() == "Split" {
        // Every output's gradient, not the first one's alone.
        return shape::split(e, node, g, varies);
    }
    let Some(g0) = g.first().cloned().flatten() else {
        // Only secondary outputs (e.g. MaxPool indices, Dropout mask) have gradients: none flow.
        return Ok(vec![None; node.input.len()]);
    };
    let rule = rule_for(node.op_type())
        .ok_or_else(|| CompileError::UnsupportedOp { op_type: node.op_type().to_string(), node: node.name().to_string() })?;
    rule(e, node, &g0, varies)
}

/// No gradient for any input of `node` yet: what a rule fills in.
pub(crate) fn no_gradients(node: &NodeProto) -> Vec<Option<String>> {
    vec![None; node.input.len()]
}

/// Input `i` of `node`.
pub(crate) fn input(node: &NodeProto, i: usize) -> &str {
    node.input[i].as_str()
}

/// The first output of `node`.
pub(crate) fn output(node: &NodeProto) -> &str {
    node.output.first().map(String::as_str).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::TABLES;

    #[test]
    fn no_operator_has_two_rules() {
        let mut seen = std::collections::HashSet::new();
        for (op, _) in TABLES.iter().flat_map(|table| table.iter()) {
            assert!(seen.insert(*op), "{op} is in two tables");
        }
        assert!(seen.len() >= 42, "{} rules", seen.len());
    }
}
