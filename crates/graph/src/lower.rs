//! Lowering: composite operators rewritten into primitives that have rules, before either
//! compile path analyses the graph.
//!
//! A lowered operator needs no rule of its own, neither a gradient rule nor a DeepLIFT one:
//! its pieces are elementwise nonlinearities (rescaled), linear operators, and products or
//! quotients of two varying tensors (the two-player Shapley rule), so DeepLIFT stays exact
//! (complete) through it with the existing rules. Each operator is one function in
//! the `LOWERINGS` table; it appends the primitive nodes, the last of which writes the original
//! node's output, so the rest of the graph is untouched. Added nodes, values and constants
//! (float32 scalar initializers) get fresh names derived from the node's.

use crate::CompileError;
use crate::rules::form;
use explaind_onnx::{AttributeProto, GraphBuilder, GraphProto, ModelProto, NodeProto, is_default_domain, tensor_f32};
use std::collections::{HashMap, HashSet};

/// Appends the primitives computing one node (see the module documentation).
type Lowering = fn(&mut Lowerer<'_>, &NodeProto) -> Result<(), CompileError>;

/// The lowered operators (default domain) and what each becomes.
const LOWERINGS: &[(&str, Lowering)] = &[
    ("HardSigmoid", hard_sigmoid),
    ("HardSwish", hard_swish),
    ("LayerNormalization", layer_normalization),
    ("Gelu", gelu),
    ("ReduceSumSquare", reduce_sum_square),
    ("ReduceL2", reduce_l2),
    ("Mish", mish),
    ("InstanceNormalization", instance_normalization),
    ("GroupNormalization", group_normalization),
    ("RMSNormalization", rms_normalization),
    ("Einsum", einsum),
];

/// `Min` and `Max` with three or more inputs become chains of binary ones
/// ([`min_max_chain`]); with one or two they have rules of their own and are left alone, so
/// they are not in [`LOWERINGS`] (nor does [`is_lowered`] name them).
fn chained_lowering(node: &NodeProto) -> Option<Lowering> {
    let operands = node.input.iter().filter(|i| !i.is_empty()).count();
    (matches!(node.op_type(), "Min" | "Max") && operands >= 3).then_some(min_max_chain as Lowering)
}

/// Whether `op_type` (default domain) is rewritten into primitives before compiling.
pub fn is_lowered(op_type: &str) -> bool {
    LOWERINGS.iter().any(|(op, _)| *op == op_type)
}

/// `model` with every lowered operator rewritten, or `None` when it has none. Both compile
/// paths lower first, leniently (a node in a refused form is kept, and is an error only on the
/// gradient path); this strict form, which fails on the first node it cannot rewrite, lets
/// tests hold the rewrite against ONNX Runtime's own kernels.
pub fn lower(model: &ModelProto) -> Result<Option<ModelProto>, CompileError> {
    let lowered = lower_leniently(model)?;
    match lowered.refused.into_iter().next() {
        Some((_, error)) => Err(error),
        None => Ok(lowered.model),
    }
}

/// The result of lowering a model for compiling.
pub(crate) struct Lowered {
    /// The rewritten model; `None` when nothing was rewritten.
    pub model: Option<ModelProto>,
    /// Nodes of a lowered operator in a form the lowering refuses (LayerNormalization with its
    /// statistics read), kept as they were: by index in the graph compiled (the rewritten one
    /// or the original), with why. Such a node is an error only on the gradient path
    /// ([`Lowered::check`]).
    pub refused: Vec<(usize, CompileError)>,
    /// Outputs of the `Div` nodes by which a normalisation (LayerNormalization,
    /// InstanceNormalization, GroupNormalization, RMSNormalization) divides a tensor by its own
    /// deviation. DeepLIFT gives these an ordered rule rather than the symmetric Shapley split
    /// (see `deeplift.rs`).
    pub normalising_divisions: HashSet<String>,
}

impl Lowered {
    /// The refusal of the first refused node on the gradient path (`on_path`, per node of
    /// the graph compiled), if any.
    pub fn check(&self, on_path: &[bool]) -> Result<(), CompileError> {
        match self.refused.iter().find(|(index, _)| on_path[*index]) {
            Some((_, error)) => Err(error.clone()),
            None => Ok(()),
        }
    }
}

/// Lowers every node it can (see [`Lowered`]), after unfolding linear layers that fold the
/// batch into rows ([`crate::folded`]) and rewriting strided views that are transpositions
/// ([`crate::strided`]): both keep the batch axis first, which DeepLIFT's row layout needs.
pub(crate) fn lower_leniently(model: &ModelProto) -> Result<Lowered, CompileError> {
    let unfolded = crate::folded::unfold_linear_layers(model);
    let source = unfolded.as_ref().unwrap_or(model);
    let views = crate::strided::rewrite_strided_views(source).or(unfolded);
    let mut lowered = lower_operators(views.as_ref().unwrap_or(model))?;
    if lowered.model.is_none() {
        lowered.model = views;
    }
    Ok(lowered)
}

fn lower_operators(model: &ModelProto) -> Result<Lowered, CompileError> {
    let graph = model.graph.as_ref().ok_or(CompileError::NoGraph)?;
    let lowering_of = |node: &NodeProto| {
        is_default_domain(node.domain())
            .then(|| LOWERINGS.iter().find(|(op, _)| *op == node.op_type()).map(|(_, l)| *l).or_else(|| chained_lowering(node)))
            .flatten()
    };
    if !graph.node.iter().any(|n| lowering_of(n).is_some()) {
        return Ok(Lowered { model: None, refused: Vec::new(), normalising_divisions: HashSet::new() });
    }
    let opset = model.default_opset().unwrap_or(0);
    let mut builder = GraphBuilder::from_graph(graph.clone());
    let nodes = std::mem::take(&mut builder.graph_mut().node);
    let ranks = crate::layers::tensor_ranks(graph);
    let mut lowerer =
        Lowerer { builder, source: graph, ranks, opset, prefix: String::new(), normalising_divisions: HashSet::new() };
    let mut refused = Vec::new();
    let mut rewritten = false;
    for node in &nodes {
        let Some(lowering) = lowering_of(node) else {
            lowerer.builder.graph_mut().node.push(node.clone());
            continue;
        };
        lowerer.prefix = if node.name().is_empty() { node.op_type().to_string() } else { node.name().to_string() };
        let (node_count, initializer_count) = (lowerer.builder.graph().node.len(), lowerer.builder.graph().initializer.len());
        if let Err(error) = lowering(&mut lowerer, node) {
            // Undone, and the node kept as it was.
            let graph = lowerer.builder.graph_mut();
            graph.node.truncate(node_count);
            graph.initializer.truncate(initializer_count);
            graph.node.push(node.clone());
            refused.push((node_count, error));
        } else {
            rewritten = true;
        }
    }
    if !rewritten {
        // Only refusals: the original graph, whose node indices the refusals name too.
        let indices = graph.node.iter().enumerate().filter(|(_, n)| lowering_of(n).is_some()).map(|(i, _)| i);
        let refused = indices.zip(refused).map(|(index, (_, error))| (index, error)).collect();
        return Ok(Lowered { model: None, refused, normalising_divisions: HashSet::new() });
    }
    let mut lowered = model.clone();
    lowered.graph = Some(lowerer.builder.finish());
    Ok(Lowered { model: Some(lowered), refused, normalising_divisions: lowerer.normalising_divisions })
}

/// Appends nodes in place of the node being lowered.
struct Lowerer<'a> {
    builder: GraphBuilder,
    /// The graph before lowering, for consumers.
    source: &'a GraphProto,
    /// Ranks the file states or that follow from them ([`crate::layers::tensor_ranks`]).
    ranks: HashMap<String, usize>,
    /// The model's default-domain opset.
    opset: i64,
    /// The lowered node's name, which the added names start with.
    prefix: String,
    /// See [`Lowered::normalising_divisions`].
    normalising_divisions: HashSet<String>,
}

impl Lowerer<'_> {
    /// `values / deviation`, recorded as a normalisation (see [`Lowered::normalising_divisions`]).
    fn normalising_division(&mut self, values: &str, deviation: &str) -> String {
        let quotient = self.node("Div", &[values, deviation], vec![]);
        self.normalising_divisions.insert(quotient.clone());
        quotient
    }

    /// A node with one output, under fresh names.
    fn node(&mut self, op: &str, inputs: &[&str], attributes: Vec<AttributeProto>) -> String {
        let node = NodeProto {
            input: inputs.iter().map(|i| i.to_string()).collect(),
            output: vec![format!("{}__{op}", self.prefix)],
            name: Some(format!("{}__{op}", self.prefix)),
            op_type: Some(op.into()),
            attribute: attributes,
            ..Default::default()
        };
        self.builder.push_node(node).remove(0)
    }

    /// The last node: it writes `output`, the lowered node's own output.
    fn last(&mut self, op: &str, inputs: &[&str], output: &str) {
        let name = self.builder.fresh_name(&format!("{}__{op}", self.prefix));
        self.builder.graph_mut().node.push(NodeProto {
            input: inputs.iter().map(|i| i.to_string()).collect(),
            output: vec![output.to_string()],
            name: Some(name),
            op_type: Some(op.into()),
            ..Default::default()
        });
    }

    /// Declares the rank of an added value (its sizes unknown) in the graph's value infos, with
    /// the element type of `like` where the file tells it: the `MatMul` rules read operand
    /// ranks from there ([`crate::rules::Emitter::rank`]).
    fn declare_rank(&mut self, value: &str, rank: usize, like: &str) {
        use explaind_onnx::proto::{tensor_shape_proto, type_proto};
        let elem_type = self
            .source
            .find_value_info(like)
            .and_then(|info| info.tensor_type())
            .and_then(|t| t.elem_type)
            .unwrap_or(explaind_onnx::proto::tensor_proto::DataType::Float as i32);
        let unknown = tensor_shape_proto::Dimension { value: None, denotation: None };
        let shape = explaind_onnx::proto::TensorShapeProto { dim: vec![unknown; rank] };
        let tensor = type_proto::Tensor { elem_type: Some(elem_type), shape: Some(shape) };
        self.builder.graph_mut().value_info.push(explaind_onnx::ValueInfoProto {
            name: Some(value.to_string()),
            r#type: Some(explaind_onnx::proto::TypeProto {
                value: Some(type_proto::Value::TensorType(tensor)),
                denotation: None,
            }),
            ..Default::default()
        });
    }

    /// Elements [start, end) of a 1-D tensor (a shape).
    fn slice(&mut self, tensor: &str, start: i64, end: i64) -> String {
        let starts = self.ints(&[start]);
        let ends = self.ints(&[end]);
        self.node("Slice", &[tensor, &starts, &ends], vec![])
    }

    /// A 1-D int64 initializer.
    fn ints(&mut self, values: &[i64]) -> String {
        let name = format!("{}__ints", self.prefix);
        self.builder.add_initializer(explaind_onnx::tensor_i64(name, &[values.len() as i64], values))
    }

    /// A float32 scalar initializer.
    fn scalar(&mut self, value: f32) -> String {
        let name = format!("{}__const", self.prefix);
        self.builder.add_initializer(tensor_f32(name, &[], &[value]))
    }

    /// `ReduceMean` over `axes`, keeping them, in the form of the model's opset (the axes moved
    /// from an attribute to an input in opset 18).
    fn reduce_mean(&mut self, tensor: &str, axes: &[i64]) -> String {
        let keep = AttributeProto::int("keepdims", 1);
        if self.opset >= 18 {
            let axes = self.ints(axes);
            self.node("ReduceMean", &[tensor, &axes], vec![keep])
        } else {
            self.node("ReduceMean", &[tensor], vec![keep, AttributeProto::ints("axes", axes.to_vec())])
        }
    }

    /// The rank of a value when the file tells it.
    fn rank(&self, name: &str) -> Option<usize> {
        self.ranks.get(name).copied()
    }

    /// Whether anything reads `tensor` (a node, or the graph's outputs).
    fn is_read(&self, tensor: &str) -> bool {
        !tensor.is_empty()
            && (self.source.output.iter().any(|o| o.name() == tensor)
                || self.source.node.iter().any(|n| n.input.iter().any(|i| i == tensor)))
    }
}

/// `alpha · x + beta`, clipped to [0, 1].
fn hard_sigmoid_of(l: &mut Lowerer<'_>, x: &str, alpha: f32, beta: f32, output: Option<&str>) -> String {
    let alpha = l.scalar(alpha);
    let beta = l.scalar(beta);
    let scaled = l.node("Mul", &[x, &alpha], vec![]);
    let shifted = l.node("Add", &[&scaled, &beta], vec![]);
    let zero = l.scalar(0.0);
    let one = l.scalar(1.0);
    match output {
        Some(y) => {
            l.last("Clip", &[&shifted, &zero, &one], y);
            y.to_string()
        }
        None => l.node("Clip", &[&shifted, &zero, &one], vec![]),
    }
}

/// HardSigmoid(x) = Clip(Add(Mul(x, alpha), beta), 0, 1), alpha 0.2 and beta 0.5 by default.
fn hard_sigmoid(l: &mut Lowerer<'_>, node: &NodeProto) -> Result<(), CompileError> {
    let alpha = node.attr_float("alpha").unwrap_or(0.2);
    let beta = node.attr_float("beta").unwrap_or(0.5);
    hard_sigmoid_of(l, &node.input[0], alpha, beta, Some(&node.output[0]));
    Ok(())
}

/// HardSwish(x) = Mul(x, HardSigmoid(x)) with alpha 1/6 and beta 0.5: a product of two varying
/// tensors (DeepLIFT's Shapley rule).
fn hard_swish(l: &mut Lowerer<'_>, node: &NodeProto) -> Result<(), CompileError> {
    let x = &node.input[0];
    let gate = hard_sigmoid_of(l, x, 1.0 / 6.0, 0.5, None);
    l.last("Mul", &[x, &gate], &node.output[0]);
    Ok(())
}

/// `(x − mean(x)) / √(mean((x − mean(x))²) + ε)`, the means over `axes` (negative).
fn normalise(l: &mut Lowerer<'_>, x: &str, axes: &[i64], epsilon: f32) -> String {
    let mean = l.reduce_mean(x, axes);
    let centred = l.node("Sub", &[x, &mean], vec![]);
    let square = l.node("Mul", &[&centred, &centred], vec![]);
    let variance = l.reduce_mean(&square, axes);
    let epsilon = l.scalar(epsilon);
    let shifted = l.node("Add", &[&variance, &epsilon], vec![]);
    let deviation = l.node("Sqrt", &[&shifted], vec![]);
    l.normalising_division(&centred, &deviation)
}

/// `reduce(x, axes)` over the axes [axis, rank) of `x`, as negative axes. A negative `axis`
/// needs no rank ([axis, −1]); a non-negative one takes the input's rank where the file tells
/// it ([`crate::layers::tensor_ranks`]), and otherwise works on `x` viewed as
/// [d0, ..., d(axis−1), rest] (Reshape's 0 keeps an axis) over its last axis, and views the
/// result in `x`'s own shape again (two `Reshape`s, linear).
fn over_trailing_axes(
    l: &mut Lowerer<'_>,
    node: &NodeProto,
    x: &str,
    axis: i64,
    reduce: impl Fn(&mut Lowerer<'_>, &str, &[i64]) -> String,
) -> Result<String, CompileError> {
    Ok(match (axis, l.rank(x)) {
        (axis, _) if axis < 0 => reduce(l, x, &(axis..0).collect::<Vec<_>>()),
        (axis, Some(rank)) if axis < rank as i64 => reduce(l, x, &(axis - rank as i64..0).collect::<Vec<_>>()),
        (_, Some(_)) => return Err(form(node, "axis is out of range")),
        (axis, None) => {
            let mut view = vec![0i64; axis as usize];
            view.push(-1);
            let view = l.ints(&view);
            let flat = l.node("Reshape", &[x, &view], vec![]);
            let reduced = reduce(l, &flat, &[-1]);
            let shape = l.node("Shape", &[x], vec![]);
            l.node("Reshape", &[&reduced, &shape], vec![])
        }
    })
}

/// LayerNormalization (opset 17) over the axes [axis, rank): with d = X − mean(X),
/// Y = d / √(mean(d · d) + ε) · Scale + B. `d · d` is a product of a varying tensor with
/// itself and the division one of two varying tensors (Shapley rules); the square root is
/// rescaled. The axes are handled by [`over_trailing_axes`]. The optional outputs Mean and InvStdDev are refused when read.
fn layer_normalization(l: &mut Lowerer<'_>, node: &NodeProto) -> Result<(), CompileError> {
    if node.output.iter().skip(1).any(|o| l.is_read(o)) {
        return Err(form(node, "the Mean and InvStdDev outputs are not supported"));
    }
    let x = &node.input[0];
    let scale = node.input.get(1).filter(|s| !s.is_empty()).ok_or_else(|| form(node, "Scale is missing"))?;
    let bias = node.input.get(2).filter(|b| !b.is_empty());
    let axis = node.attr_int("axis").unwrap_or(-1);
    let epsilon = node.attr_float("epsilon").unwrap_or(1e-5);
    let normalised = over_trailing_axes(l, node, x, axis, |l, x, axes| normalise(l, x, axes, epsilon))?;
    match bias {
        Some(bias) => {
            let scaled = l.node("Mul", &[&normalised, scale], vec![]);
            l.last("Add", &[&scaled, bias], &node.output[0]);
        }
        None => l.last("Mul", &[&normalised, scale], &node.output[0]),
    }
    Ok(())
}

/// Gelu (opset 20): approximate "none" is 0.5 · x · (1 + Erf(x / √2)); "tanh" is
/// 0.5 · x · (1 + Tanh(√(2/π) · (x + 0.044715 · x³))). The final product of two varying
/// tensors takes the Shapley rule, Erf and Tanh the rescale rule, x³ = (x · x) · x Shapley
/// rules again.
fn gelu(l: &mut Lowerer<'_>, node: &NodeProto) -> Result<(), CompileError> {
    let x = &node.input[0];
    let curve = match node.attr_string("approximate").unwrap_or("none") {
        "none" => {
            let inv_sqrt2 = l.scalar(std::f32::consts::FRAC_1_SQRT_2);
            let scaled = l.node("Mul", &[x, &inv_sqrt2], vec![]);
            l.node("Erf", &[&scaled], vec![])
        }
        "tanh" => {
            let square = l.node("Mul", &[x, x], vec![]);
            let cube = l.node("Mul", &[&square, x], vec![]);
            let coefficient = l.scalar(0.044715);
            let cubic = l.node("Mul", &[&cube, &coefficient], vec![]);
            let inner = l.node("Add", &[x, &cubic], vec![]);
            let factor = l.scalar((2.0 / std::f64::consts::PI).sqrt() as f32);
            let scaled = l.node("Mul", &[&inner, &factor], vec![]);
            l.node("Tanh", &[&scaled], vec![])
        }
        other => return Err(form(node, &format!("approximate {other:?} is not supported"))),
    };
    let one = l.scalar(1.0);
    let gate = l.node("Add", &[&curve, &one], vec![]);
    let half = l.scalar(0.5);
    let half_x = l.node("Mul", &[x, &half], vec![]);
    l.last("Mul", &[&half_x, &gate], &node.output[0]);
    Ok(())
}

/// `ReduceSum(Mul(x, x))` over the node's axes (an attribute before opset 18, an input from
/// 18; `ReduceSum` takes them as an input from 13), with its `keepdims`. The product of x with
/// itself takes the Shapley rule, exact for a square.
fn sum_of_squares(l: &mut Lowerer<'_>, node: &NodeProto) -> Result<String, CompileError> {
    let x = &node.input[0];
    let axes_input = node.input.get(1).filter(|a| !a.is_empty()).cloned();
    let axes_attr = node.attr_ints("axes").map(<[i64]>::to_vec);
    let no_axes = axes_input.is_none() && axes_attr.as_deref().is_none_or(|a| a.is_empty());
    if node.attr_int("noop_with_empty_axes").unwrap_or(0) != 0 && no_axes {
        return Err(form(node, "noop_with_empty_axes with no axes is not supported"));
    }
    let square = l.node("Mul", &[x, x], vec![]);
    let mut attrs = crate::rules::copy_attrs(node, &["keepdims"]);
    let mut inputs = vec![square];
    match (axes_input, axes_attr) {
        (Some(axes), _) => inputs.push(axes),
        (None, Some(axes)) if l.opset >= 13 => inputs.push(l.ints(&axes)),
        (None, Some(axes)) => attrs.push(AttributeProto::ints("axes", axes)),
        (None, None) => {}
    }
    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    Ok(l.node("ReduceSum", &refs, attrs))
}

/// ReduceSumSquare: `ReduceSum(Mul(x, x))`.
fn reduce_sum_square(l: &mut Lowerer<'_>, node: &NodeProto) -> Result<(), CompileError> {
    let sum = sum_of_squares(l, node)?;
    l.last("Identity", &[&sum], &node.output[0]);
    Ok(())
}

/// ReduceL2: `Sqrt(ReduceSum(Mul(x, x)))`, the square root rescaled.
fn reduce_l2(l: &mut Lowerer<'_>, node: &NodeProto) -> Result<(), CompileError> {
    let sum = sum_of_squares(l, node)?;
    l.last("Sqrt", &[&sum], &node.output[0]);
    Ok(())
}

/// Mish(x) = x · tanh(softplus(x)) (opset 18): `Softplus` and `Tanh` rescaled, the product of
/// two varying tensors the Shapley rule.
fn mish(l: &mut Lowerer<'_>, node: &NodeProto) -> Result<(), CompileError> {
    let x = &node.input[0];
    let softplus = l.node("Softplus", &[x], vec![]);
    let gate = l.node("Tanh", &[&softplus], vec![]);
    l.last("Mul", &[x, &gate], &node.output[0]);
    Ok(())
}

/// A required input of `node`, or a refusal naming it.
fn required<'n>(node: &'n NodeProto, index: usize, what: &str) -> Result<&'n str, CompileError> {
    node.input.get(index).filter(|i| !i.is_empty()).map(String::as_str).ok_or_else(|| form(node, &format!("{what} is missing")))
}

/// `normalised · scale + bias` with `scale` and `bias` (1-D, one value per axis-1 entry of
/// `normalised`, which is viewed as [N, K, rest]) reshaped to [K, 1]; then `normalised` is
/// viewed in `shape` (a shape tensor) and written to `output`.
fn scale_per_row_and_reshape(l: &mut Lowerer<'_>, normalised: &str, scale: &str, bias: &str, shape: &str, output: &str) {
    let column = l.ints(&[-1, 1]);
    let scale = l.node("Reshape", &[scale, &column], vec![]);
    let bias = l.node("Reshape", &[bias, &column], vec![]);
    let scaled = l.node("Mul", &[normalised, &scale], vec![]);
    let shifted = l.node("Add", &[&scaled, &bias], vec![]);
    l.last("Reshape", &[&shifted, shape], output);
}

/// InstanceNormalization (opset 6): x [N, C, spatial...] normalised over its spatial axes per
/// sample and channel (`normalise`: mean, variance, ε, `Sqrt`, `Div`), then
/// `· scale[c] + B[c]`. Computed on x viewed as [N, C, rest] (Reshape's 0 keeps N and C), so
/// any rank works without knowing it, with scale and B as [C, 1] columns; the result is viewed
/// in x's shape again. The reshapes are linear, the statistics' products and quotient take
/// the Shapley rules, as in LayerNormalization.
fn instance_normalization(l: &mut Lowerer<'_>, node: &NodeProto) -> Result<(), CompileError> {
    let x = &node.input[0];
    let scale = required(node, 1, "scale")?;
    let bias = required(node, 2, "B")?;
    let epsilon = node.attr_float("epsilon").unwrap_or(1e-5);
    let view = l.ints(&[0, 0, -1]);
    let flat = l.node("Reshape", &[x, &view], vec![]);
    let normalised = normalise(l, &flat, &[-1], epsilon);
    let shape = l.node("Shape", &[x], vec![]);
    scale_per_row_and_reshape(l, &normalised, scale, bias, &shape, &node.output[0]);
    Ok(())
}

/// GroupNormalization: x [N, C, spatial...] viewed as [N, G, rest] (G = `num_groups`),
/// normalised over its last axis (`normalise`), then scaled and shifted:
/// - opset 18 (deprecated by 21): scale and bias hold one value per group, applied in that
///   [N, G, rest] view, as the opset-18 function body's InstanceNormalization does;
/// - opset 21: they hold one value per channel, applied in the view [N, C, rest] (from x's
///   `Shape`, so symbolic sizes work).
///
/// The result is viewed in x's shape again. `stash_type` only sets the precision of the
/// statistics (float32 here either way).
fn group_normalization(l: &mut Lowerer<'_>, node: &NodeProto) -> Result<(), CompileError> {
    let x = &node.input[0];
    let scale = required(node, 1, "scale")?;
    let bias = required(node, 2, "bias")?;
    let groups = node.attr_int("num_groups").filter(|&g| g > 0).ok_or_else(|| form(node, "num_groups is missing"))?;
    let epsilon = node.attr_float("epsilon").unwrap_or(1e-5);
    let view = l.ints(&[0, groups, -1]);
    let grouped = l.node("Reshape", &[x, &view], vec![]);
    let normalised = normalise(l, &grouped, &[-1], epsilon);
    let shape = l.node("Shape", &[x], vec![]);
    if l.opset < 21 {
        scale_per_row_and_reshape(l, &normalised, scale, bias, &shape, &node.output[0]);
    } else {
        let batch_and_channels = l.slice(&shape, 0, 2);
        let rest = l.ints(&[-1]);
        let per_channel = l.node("Concat", &[&batch_and_channels, &rest], vec![AttributeProto::int("axis", 0)]);
        let channels = l.node("Reshape", &[&normalised, &per_channel], vec![]);
        scale_per_row_and_reshape(l, &channels, scale, bias, &shape, &node.output[0]);
    }
    Ok(())
}

/// RMSNormalization (opset 23): x / √(mean(x · x) + ε) · scale, the mean over the axes
/// [axis, rank) ([`over_trailing_axes`]). `x · x` and the quotient take the Shapley rules,
/// the square root is rescaled. `stash_type` only sets the precision of the statistics.
fn rms_normalization(l: &mut Lowerer<'_>, node: &NodeProto) -> Result<(), CompileError> {
    let x = &node.input[0];
    let scale = required(node, 1, "scale")?;
    let axis = node.attr_int("axis").unwrap_or(-1);
    let epsilon = node.attr_float("epsilon").unwrap_or(1e-5);
    let normalised = over_trailing_axes(l, node, x, axis, |l, x, axes| {
        let square = l.node("Mul", &[x, x], vec![]);
        let mean_square = l.reduce_mean(&square, axes);
        let epsilon = l.scalar(epsilon);
        let shifted = l.node("Add", &[&mean_square, &epsilon], vec![]);
        let root = l.node("Sqrt", &[&shifted], vec![]);
        l.normalising_division(x, &root)
    })?;
    l.last("Mul", &[&normalised, scale], &node.output[0]);
    Ok(())
}

/// `Min`/`Max` with three or more inputs as a chain of binary ones, `f(f(f(a, b), c), d)`.
/// The gradient's tie rule carries over (the first input holding the extreme gets it: an
/// earlier input wins every tie inside the chain), and DeepLIFT applies its one- or
/// two-player rule at each link, which keeps it complete through the chain.
fn min_max_chain(l: &mut Lowerer<'_>, node: &NodeProto) -> Result<(), CompileError> {
    let operands: Vec<&str> = node.input.iter().filter(|i| !i.is_empty()).map(String::as_str).collect();
    let op = node.op_type();
    let (last, rest) = operands.split_last().expect("three or more operands");
    let mut running = rest[0].to_string();
    for operand in &rest[1..] {
        running = l.node(op, &[&running, operand], vec![]);
    }
    l.last(op, &[&running, last], &node.output[0]);
    Ok(())
}

/// An Einsum equation's operands' and output's index letters.
struct EinsumEquation {
    operands: Vec<Vec<char>>,
    output: Vec<char>,
}

/// Parses an Einsum equation, refusing the forms [`einsum`] does not lower. Without "->" the
/// output holds the letters that occur once over all operands, in alphabetical order.
fn parse_einsum(node: &NodeProto, equation: &str) -> Result<EinsumEquation, CompileError> {
    let equation: String = equation.chars().filter(|c| !c.is_whitespace()).collect();
    if equation.contains("...") {
        return Err(form(node, "Einsum with an ellipsis (\"...\") is not lowered"));
    }
    let (inputs, output) = match equation.split_once("->") {
        Some((inputs, output)) => (inputs, Some(output)),
        None => (equation.as_str(), None),
    };
    let operands: Vec<Vec<char>> = inputs.split(',').map(|o| o.chars().collect()).collect();
    let mut letters = inputs.chars().filter(|&c| c != ',').chain(output.unwrap_or("").chars());
    if let Some(bad) = letters.find(|c| !c.is_ascii_alphabetic()) {
        return Err(form(node, &format!("Einsum equation {equation:?} has an unexpected character {bad:?}")));
    }
    for operand in &operands {
        if operand.iter().enumerate().any(|(i, c)| operand[..i].contains(c)) {
            return Err(form(node, "Einsum with a repeated index within one operand (a diagonal) is not lowered"));
        }
    }
    let output: Vec<char> = match output {
        Some(output) => output.chars().collect(),
        None => {
            let all: Vec<char> = operands.iter().flatten().copied().collect();
            let mut once: Vec<char> = all.iter().copied().filter(|c| all.iter().filter(|d| *d == c).count() == 1).collect();
            once.sort_unstable();
            once
        }
    };
    if output.iter().enumerate().any(|(i, c)| output[..i].contains(c)) {
        return Err(form(node, "Einsum's output repeats an index"));
    }
    if let Some(missing) = output.iter().find(|c| !operands.iter().flatten().any(|d| d == *c)) {
        return Err(form(node, &format!("Einsum's output index {missing:?} is in no operand")));
    }
    Ok(EinsumEquation { operands, output })
}

/// `ReduceSum` of `tensor` (indexed by `letters`) over the letters not in `keep`, dropping
/// those axes; returns the result and its letters.
fn sum_out(l: &mut Lowerer<'_>, tensor: &str, letters: &[char], keep: &dyn Fn(char) -> bool) -> (String, Vec<char>) {
    let summed: Vec<i64> = (0..letters.len()).filter(|&i| !keep(letters[i])).map(|i| i as i64).collect();
    if summed.is_empty() {
        return (tensor.to_string(), letters.to_vec());
    }
    let axes = l.ints(&summed);
    let reduced = l.node("ReduceSum", &[tensor, &axes], vec![AttributeProto::int("keepdims", 0)]);
    (reduced, letters.iter().copied().filter(|&c| keep(c)).collect())
}

/// `tensor` (indexed by `letters`) transposed to the order `want`; itself when already so.
fn transpose_to(l: &mut Lowerer<'_>, tensor: &str, letters: &[char], want: &[char]) -> String {
    let perm: Vec<i64> = want.iter().map(|c| letters.iter().position(|d| d == c).expect("same letters") as i64).collect();
    if perm.iter().enumerate().all(|(i, &p)| p == i as i64) {
        return tensor.to_string();
    }
    l.node("Transpose", &[tensor], vec![AttributeProto::ints("perm", perm)])
}

/// The product of the sizes of axes [start, end) of a shape tensor, as a 1-element tensor
/// (1 for no axes).
fn size_of_axes(l: &mut Lowerer<'_>, shape: &str, start: usize, end: usize) -> String {
    if start == end {
        return l.ints(&[1]);
    }
    let sizes = l.slice(shape, start as i64, end as i64);
    l.node("ReduceProd", &[&sizes], vec![AttributeProto::int("keepdims", 1)])
}

/// Einsum (opset 12) in the forms that are contractions: one or two operands, no index
/// repeated within an operand, no ellipsis (others are refused, saying which).
///
/// One operand: `ReduceSum` over the indices not in the output, then a `Transpose` to its
/// order. Two operands: each first sums out its own indices that are not in the output; the
/// indices left are batch (in both and the output), contracted (in both, not in the output) or
/// free (in one and the output). The left operand is transposed to [batch, free, contracted]
/// and viewed as [B, M, K], the right one to [batch, contracted, free] as [B, K, N] (sizes
/// from `Shape`, so symbolic sizes work), multiplied (`MatMul`, whose two-varying-operand
/// DeepLIFT rule is the Shapley one; the views' rank is declared for it), viewed as
/// [batch..., left free..., right free...] and transposed to the output's order. An operand's
/// first axis that the other lacks (a model's batch axis against a weight, "bqk,ok->bqo")
/// stays first: the views are [L, B, M, K] and [1, B, K, N] (or the other way round), the
/// `MatMul` broadcasting, so DeepLIFT's rows (axis 0) are never folded into M or N.
/// Everything but the product is linear.
fn einsum(l: &mut Lowerer<'_>, node: &NodeProto) -> Result<(), CompileError> {
    let equation = node.attr_string("equation").ok_or_else(|| form(node, "equation is missing"))?;
    let EinsumEquation { operands, output } = parse_einsum(node, equation)?;
    if operands.len() != node.input.len() {
        return Err(form(node, "Einsum's equation and inputs disagree on the number of operands"));
    }
    let out = &node.output[0];
    match operands.as_slice() {
        [only] => {
            let (summed, letters) = sum_out(l, &node.input[0], only, &|c| output.contains(&c));
            let result = transpose_to(l, &summed, &letters, &output);
            l.last("Identity", &[&result], out);
        }
        [left, right] => {
            let in_output = |c: char| output.contains(&c);
            let (a, a_letters) = sum_out(l, &node.input[0], left, &|c| in_output(c) || right.contains(&c));
            let (b, b_letters) = sum_out(l, &node.input[1], right, &|c| in_output(c) || left.contains(&c));
            let batch: Vec<char> = a_letters.iter().copied().filter(|c| b_letters.contains(c) && in_output(*c)).collect();
            let contracted: Vec<char> = a_letters.iter().copied().filter(|c| b_letters.contains(c) && !in_output(*c)).collect();
            // An operand's first axis, when only that operand has it, leads the views (and the
            // other operand broadcasts along it): DeepLIFT's rows are every varying tensor's
            // axis 0, so a model's batch axis must not be folded into M or N.
            let lead_left = a_letters.first().filter(|c| !b_letters.contains(c)).copied();
            let lead_right = b_letters.first().filter(|c| lead_left.is_none() && !a_letters.contains(c)).copied();
            let lead: Vec<char> = lead_left.into_iter().chain(lead_right).collect();
            let left_free: Vec<char> =
                a_letters.iter().copied().filter(|c| !b_letters.contains(c) && !lead.contains(c)).collect();
            let right_free: Vec<char> =
                b_letters.iter().copied().filter(|c| !a_letters.contains(c) && !lead.contains(c)).collect();
            let (la, lb) = (lead_left.is_some() as usize, lead_right.is_some() as usize);
            let a_order: Vec<char> = [&lead[..la], &batch, &left_free, &contracted].concat();
            let b_order: Vec<char> = [&lead[..lb], &batch, &contracted, &right_free].concat();
            let a = transpose_to(l, &a, &a_letters, &a_order);
            let b = transpose_to(l, &b, &b_letters, &b_order);
            let (nb, nl, nk) = (batch.len(), left_free.len(), contracted.len());
            let a_shape = l.node("Shape", &[&a], vec![]);
            let b_shape = l.node("Shape", &[&b], vec![]);
            let concat = |l: &mut Lowerer<'_>, parts: &[String]| {
                let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
                l.node("Concat", &parts, vec![AttributeProto::int("axis", 0)])
            };
            // [lead, B, M, K] and [lead, B, K, N], the lead 1 on the side without it, or
            // [B, M, K] and [B, K, N] with no lead.
            let mut a_view = Vec::new();
            let mut b_view = Vec::new();
            if !lead.is_empty() {
                a_view.push(size_of_axes(l, &a_shape, 0, la));
                b_view.push(size_of_axes(l, &b_shape, 0, lb));
            }
            let batch_size = size_of_axes(l, &a_shape, la, la + nb);
            let k = size_of_axes(l, &a_shape, la + nb + nl, a_order.len());
            a_view.extend([batch_size.clone(), size_of_axes(l, &a_shape, la + nb, la + nb + nl), k.clone()]);
            b_view.extend([batch_size, k, size_of_axes(l, &b_shape, lb + nb + nk, b_order.len())]);
            let (a_view, b_view) = (concat(l, &a_view), concat(l, &b_view));
            let a_matrix = l.node("Reshape", &[&a, &a_view], vec![]);
            let b_matrix = l.node("Reshape", &[&b, &b_view], vec![]);
            let view_rank = 3 + lead.len();
            l.declare_rank(&a_matrix, view_rank, &node.input[0]);
            l.declare_rank(&b_matrix, view_rank, &node.input[1]);
            let product = l.node("MatMul", &[&a_matrix, &b_matrix], vec![]);
            let lead_size = if la == 1 { l.slice(&a_shape, 0, 1) } else { l.slice(&b_shape, 0, lb as i64) };
            let left_sizes = l.slice(&a_shape, la as i64, (la + nb + nl) as i64);
            let right_sizes = l.slice(&b_shape, (lb + nb + nk) as i64, b_order.len() as i64);
            let result_shape = concat(l, &[lead_size, left_sizes, right_sizes]);
            let result = l.node("Reshape", &[&product, &result_shape], vec![]);
            let letters: Vec<char> = [&lead[..], &batch, &left_free, &right_free].concat();
            let result = transpose_to(l, &result, &letters, &output);
            l.last("Identity", &[&result], out);
        }
        _ => return Err(form(node, "Einsum with more than two operands is not lowered")),
    }
    Ok(())
}
