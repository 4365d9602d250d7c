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
use std::collections::HashMap;

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
];

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

/// Lowers every node it can (see [`Lowered`]).
pub(crate) fn lower_leniently(model: &ModelProto) -> Result<Lowered, CompileError> {
    let graph = model.graph.as_ref().ok_or(CompileError::NoGraph)?;
    let lowering_of = |node: &NodeProto| {
        is_default_domain(node.domain())
            .then(|| LOWERINGS.iter().find(|(op, _)| *op == node.op_type()).map(|(_, l)| *l))
            .flatten()
    };
    if !graph.node.iter().any(|n| lowering_of(n).is_some()) {
        return Ok(Lowered { model: None, refused: Vec::new() });
    }
    let opset = model.default_opset().unwrap_or(0);
    let mut builder = GraphBuilder::from_graph(graph.clone());
    let nodes = std::mem::take(&mut builder.graph_mut().node);
    let ranks = crate::layers::tensor_ranks(graph);
    let mut lowerer = Lowerer { builder, source: graph, ranks, opset, prefix: String::new() };
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
        return Ok(Lowered { model: None, refused });
    }
    let mut lowered = model.clone();
    lowered.graph = Some(lowerer.builder.finish());
    Ok(Lowered { model: Some(lowered), refused })
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
}

impl Lowerer<'_> {
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

/// LayerNormalization (opset 17) over the axes [axis, rank): with d = X − mean(X),
/// Y = d / √(mean(d · d) + ε) · Scale + B. `d · d` is a product of a varying tensor with
/// itself and the division one of two varying tensors (Shapley rules); the square root is
/// rescaled. A negative axis needs no rank ([axis, −1]); a non-negative one takes the input's
/// rank where the file tells it ([`crate::layers::tensor_ranks`]), and otherwise normalises the
/// input viewed as [d0, ..., d(axis−1), rest] (two `Reshape`s, linear). The optional outputs Mean and InvStdDev are refused when read.
/// `(x − mean(x)) / √(mean((x − mean(x))²) + ε)`, the means over `axes` (negative).
fn normalise(l: &mut Lowerer<'_>, x: &str, axes: &[i64], epsilon: f32) -> String {
    let mean = l.reduce_mean(x, axes);
    let centred = l.node("Sub", &[x, &mean], vec![]);
    let square = l.node("Mul", &[&centred, &centred], vec![]);
    let variance = l.reduce_mean(&square, axes);
    let epsilon = l.scalar(epsilon);
    let shifted = l.node("Add", &[&variance, &epsilon], vec![]);
    let deviation = l.node("Sqrt", &[&shifted], vec![]);
    l.node("Div", &[&centred, &deviation], vec![])
}

fn layer_normalization(l: &mut Lowerer<'_>, node: &NodeProto) -> Result<(), CompileError> {
    if node.output.iter().skip(1).any(|o| l.is_read(o)) {
        return Err(form(node, "the Mean and InvStdDev outputs are not supported"));
    }
    let x = &node.input[0];
    let scale = node.input.get(1).filter(|s| !s.is_empty()).ok_or_else(|| form(node, "Scale is missing"))?;
    let bias = node.input.get(2).filter(|b| !b.is_empty());
    let axis = node.attr_int("axis").unwrap_or(-1);
    let epsilon = node.attr_float("epsilon").unwrap_or(1e-5);
    let normalised = match (axis, l.rank(x)) {
        (axis, _) if axis < 0 => normalise(l, x, &(axis..0).collect::<Vec<_>>(), epsilon),
        (axis, Some(rank)) if axis < rank as i64 => normalise(l, x, &(axis - rank as i64..0).collect::<Vec<_>>(), epsilon),
        (_, Some(_)) => return Err(form(node, "axis is out of range")),
        (axis, None) => {
            // The rank is unknown: x viewed as [d0, ..., d(axis−1), rest] (Reshape's 0 keeps an
            // axis), normalised over its last axis, and viewed in its own shape again.
            let mut view = vec![0i64; axis as usize];
            view.push(-1);
            let view = l.ints(&view);
            let flat = l.node("Reshape", &[x, &view], vec![]);
            let normalised = normalise(l, &flat, &[-1], epsilon);
            let shape = l.node("Shape", &[x], vec![]);
            l.node("Reshape", &[&normalised, &shape], vec![])
        }
    };
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
