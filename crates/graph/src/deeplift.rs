//! DeepLIFT multipliers (the rescale rule), compiled into an ONNX graph.
//!
//! The compiled model takes the inputs `x`, a reference row `r` per input row (paired row by
//! row), and a seed shaped like the explained output; it returns the model's outputs and, per
//! input, the multipliers `m` such that `Σ m · (x − r) = seed · (f(x) − f(r))` (completeness).
//! Deep SHAP averages `m · (x − r)` over the background rows as references.
//!
//! The rules (those of shap's DeepExplainer and captum's DeepLift, made exact):
//! - linear operators keep their vector-Jacobian product (the plain rules in [`crate::rules`]);
//! - elementwise nonlinearities use the rescale rule `g · Δy / Δz`, falling back to the plain
//!   gradient at `x` where `|Δz| < 1e-6`;
//! - `Mul`, `Div` and `MatMul` with two varying operands give each operand half of its two
//!   marginal contributions (the two-player Shapley rule); except the division by which a
//!   lowered normalisation divides a tensor by its own deviation, where the deviation's change
//!   counts first and the numerator's at the input's deviation (also exact; the symmetric
//!   split carries terms of ±1/√ε that cancel when a reference row has no variance, which
//!   float32 cannot add up);
//! - `Softmax` is decomposed into centring by the row's maximum (a `Sub` and a `ReduceMax`),
//!   `Exp`, `ReduceSum` and `Div`, each with its rule; `LogSoftmax` as `z` minus its
//!   log-sum-exp; logits masked with −∞ or finfo(float32).min (an additive attention mask)
//!   get finite multipliers, exactly 0;
//! - `Min`/`Max` with one varying input are rescaled, with two take the two-player Shapley
//!   rule (with more inputs they are lowered into chains of two first);
//! - `GatherElements` is linear in its data when its indices do not depend on the attributed
//!   inputs, and refused when they do;
//! - `ReduceMax`/`ReduceMin` route each output's difference to the extreme elements of `x` and
//!   `r`, as `MaxPool` does; `ReduceLogSumExp` is decomposed into `Exp`, `ReduceSum` and `Log`,
//!   each with its rule;
//! - `MaxPool` routes each output's difference to the argmax positions of `x` and `r` and adds
//!   (scatter-add), so overlapping windows stay additive; windows that tile the input use
//!   argmax masks computed with the activations instead.
//!
//! Composite operators (`HardSwish`, `LayerNormalization`, `Gelu`...) are lowered into these
//! first ([`crate::lower`]), so the rules above stay exact through them.
//!
//! The backward pass has a pair stage and a gradient stage ([`crate::rules::PairLayout`]): the
//! rules above evaluate their nonlinear parts once per (input, reference) pair, and the seeds
//! only flow through products with them.

use crate::gradient::{Analysis, analyse, backward_sweep, check_opset, emit_sums_as_outputs, float_output};
use crate::rules::{Emitter, PairLayout, form, max_pool_attrs, max_pool_indices, vjp};
use crate::{CompileError, MaxPoolIndices};
use explaind_onnx::{AttributeProto, GraphBuilder, ModelProto, NodeProto, is_default_domain};
use std::collections::HashMap;

/// What to attribute.
#[derive(Debug, Clone, Default)]
pub struct DeepLiftRequest {
    /// The model output to explain.
    pub output: String,
    /// The model inputs to attribute to, each paired with a reference input.
    pub inputs: Vec<String>,
    /// How max-pool rules find each window's maximum on either side.
    pub max_pool_indices: MaxPoolIndices,
}

#[derive(Debug, Clone)]
pub struct CompiledDeepLift {
    /// Everything in one graph: inputs, references and seed in; outputs and multipliers out.
    pub model: ModelProto,
    /// The same computation split at the activations the backward pass reads, so that each
    /// forward pass runs once per row rather than once per (input, reference, target) triple,
    /// and a background's can be cached:
    /// - `activation_model` takes the model's inputs and returns the activations (in the order
    ///   of `activations`); run it on input rows and on reference rows alike;
    /// - `backward_model` takes the input side's activations, then the reference side's (both in
    ///   that order), then the seed, and returns the multipliers. With R reference rows the seed
    ///   has T·R rows: seed row t·R + r pairs seed t with reference row r. The input side has
    ///   one row (explained against every reference) or R rows (pairs). What depends on the
    ///   pair alone is computed for the R pairs and broadcast over the T seeds
    ///   ([`crate::rules::PairLayout`]).
    pub activation_model: ModelProto,
    pub backward_model: ModelProto,
    /// Names of the activations: tensors of the original graph, and values derived from one
    /// side's row alone (max-pool argmax masks), which are computed and cached with them.
    pub activations: Vec<String>,
    /// Reference input per attributed input, in the request's order (`<input>__ref`).
    pub references: Vec<String>,
    /// The seed input, shaped like the explained output.
    pub seed: String,
    /// Multiplier output per attributed input, in the request's order.
    pub multipliers: Vec<String>,
}

/// Operators whose every input is data the output is computed from, or indices that pick it
/// (`Gather`). DeepLIFT refuses them when an input depends on the attributed inputs without
/// varying (a mask or indices computed from them, which differ on the reference side).
const DATA_OPERANDS: &[&str] =
    &["Add", "Sub", "Mul", "Div", "Sum", "Min", "Max", "Pow", "PRelu", "Where", "MatMul", "Gemm", "Clip", "Gather"];

/// Below this difference a rescale falls back to the gradient (as in the design note).
const RESCALE_EPSILON: f32 = 1e-6;
/// The centred logits of DeepLIFT's softmax are raised to this: Exp gives 0 below it in
/// float32 (from about −104), as at −∞ (see `softmax`).
const SOFTMAX_FLOOR: f32 = -1e4;
/// Below this difference a routed or Shapley contribution has no multiplier.
const ROUTE_EPSILON: f32 = 1e-7;

const ELEMENTWISE: &[&str] = &[
    "Relu",
    "LeakyRelu",
    "PRelu",
    "Elu",
    "Selu",
    "Celu",
    "Sigmoid",
    "Tanh",
    "Softplus",
    "Softsign",
    "Exp",
    "Log",
    "Erf",
    "Sqrt",
    "Reciprocal",
    "Clip",
    "Abs",
    "Sin",
    "Cos",
    "Pow",
];

pub fn compile_deeplift(model: &ModelProto, request: &DeepLiftRequest) -> Result<CompiledDeepLift, CompileError> {
    let lowered = crate::lower::lower_leniently(model)?;
    let model = lowered.model.as_ref().unwrap_or(model);
    let graph = model.graph.as_ref().ok_or(CompileError::NoGraph)?;
    let opset = check_opset(model)?;
    let outputs = vec![request.output.clone()];
    let Analysis { mut varying, on_path } = analyse(graph, &request.inputs, &outputs, &[])?;
    lowered.check(&on_path)?;
    let target_opset = opset.max(17);
    let mut builder = GraphBuilder::from_graph(graph.clone());

    // Reference inputs, typed like the inputs they pair with.
    let mut reference_of: HashMap<String, String> = HashMap::new();
    let mut references = Vec::new();
    for input in &request.inputs {
        let info = graph.input.iter().find(|i| i.name() == input).ok_or_else(|| CompileError::UnknownTensor(input.clone()))?;
        let name = builder.fresh_name(&format!("{input}__ref"));
        let mut reference = info.clone();
        reference.name = Some(name.clone());
        builder.graph_mut().input.push(reference);
        reference_of.insert(input.clone(), name.clone());
        references.push(name);
    }

    // The forward pass again, on the references: every node that computes a varying value.
    for node in &graph.node {
        if !node.output.iter().any(|o| varying.contains(o)) {
            continue;
        }
        let mut copy = node.clone();
        for input in &mut copy.input {
            if let Some(r) = reference_of.get(input.as_str()) {
                *input = r.clone();
            }
        }
        for output in &mut copy.output {
            if !output.is_empty() {
                let fresh = builder.fresh_name(&format!("{output}__ref"));
                reference_of.insert(output.clone(), fresh.clone());
                *output = fresh;
            }
        }
        copy.name = Some(builder.fresh_name(&format!("{}__ref", node.name())));
        builder.graph_mut().node.push(copy);
    }

    // Values the backward pass reads that depend on one side's row alone are computed with the
    // activations (once per row, and cached with the background's): the argmax positions of
    // the max-pools whose windows tile their input, as 0/1 masks shaped like the pool's input.
    let mut derived_nodes = Vec::new();
    let mut argmax_masks: HashMap<String, String> = HashMap::new();
    let spatial_sizes = crate::layers::spatial_sizes(graph);
    for (node, _) in graph.node.iter().zip(&on_path).filter(|(n, on)| **on && n.op_type() == "MaxPool") {
        if tiling_window(node).is_none() || !varying.contains(&node.input[0]) {
            continue;
        }
        let input = node.input[0].clone();
        let spatial =
            spatial_sizes.get(&input).map(Vec::as_slice).filter(|_| request.max_pool_indices == MaxPoolIndices::Portable);
        let output = &node.output[0];
        let (mask, nodes) = argmax_mask(&mut builder, node, &input, output, spatial)?;
        let (mask_ref, _) = argmax_mask(&mut builder, node, &reference_of[&input], &reference_of[output], spatial)?;
        reference_of.insert(mask.clone(), mask_ref);
        derived_nodes.extend(nodes);
        varying.insert(mask.clone());
        argmax_masks.insert(node.output[0].clone(), mask);
    }
    let backward_start = builder.graph_mut().node.len();

    let info = graph.output.iter().find(|o| o.name() == request.output).expect("checked by analyse");
    let seed = builder.fresh_name(&format!("{}__seed", request.output));
    let mut seed_info = info.clone();
    seed_info.name = Some(seed.clone());
    builder.graph_mut().input.push(seed_info);

    // The row counts of the pair layout. The backward model defines them afresh (see `split`).
    let layout = PairLayout { gradient_rows: GRADIENT_ROWS.into(), pair_rows: PAIR_ROWS.into(), repeats: REPEATS.into() };
    builder.graph_mut().node.extend(layout_nodes(&seed, references.first().map(String::as_str)));
    builder.graph_mut().initializer.extend(layout_constants());

    let mut grads: HashMap<String, Vec<String>> = HashMap::from([(request.output.clone(), vec![seed.clone()])]);
    let mut emit = Emitter::new(&mut builder, graph, target_opset);
    emit.set_max_pool_indices(request.max_pool_indices);
    emit.use_pair_layout(reference_of.clone(), layout);
    let reference = |name: &str| reference_of.get(name).cloned().unwrap_or_else(|| name.to_string());
    // Every value computed from the attributed inputs' values, through any operator (but not
    // from their shapes alone, which input and reference share): a mask computed from them
    // differs between the input and the reference.
    let mut dependent: std::collections::HashSet<String> = request.inputs.iter().cloned().collect();
    for node in &graph.node {
        let shape_only = matches!(node.op_type(), "Shape" | "Size");
        if !shape_only && node.input.iter().any(|i| dependent.contains(i)) {
            dependent.extend(node.output.iter().filter(|o| !o.is_empty()).cloned());
        }
    }
    let sides = Sides {
        reference: &reference,
        argmax_masks: &argmax_masks,
        dependent: &dependent,
        normalising_divisions: &lowered.normalising_divisions,
    };
    backward_sweep(&mut emit, graph, &on_path, &varying, &mut grads, &mut |emit, node, output_grads, varies| {
        multipliers(emit, node, output_grads, varies, &sides)
    })?;
    let multiplier_outputs = emit_sums_as_outputs(&mut emit, &request.inputs, &grads, "multiplier");

    let combined = builder.finish();
    let (activation_graph, backward_graph, activations) =
        split(&combined, graph, &derived_nodes, backward_start, &reference_of, &varying, &seed, &multiplier_outputs);
    let with_graph = |g: explaind_onnx::GraphProto| {
        let mut m = model.clone();
        m.graph = Some(g);
        for import in &mut m.opset_import {
            if is_default_domain(import.domain()) {
                import.version = Some(target_opset);
            }
        }
        m
    };
    Ok(CompiledDeepLift {
        model: with_graph({
            // Fused factors (see `Emitter::per_pair`) leave the unfused products unused.
            let mut pruned = combined;
            prune_unused_nodes(&mut pruned);
            pruned
        }),
        activation_model: with_graph(activation_graph),
        backward_model: with_graph(backward_graph),
        activations,
        references,
        seed,
        multipliers: multiplier_outputs,
    })
}

/// Splits the combined graph into an activation model (the forward pass, returning what the
/// backward pass reads) and a backward model (activations of both sides and the seed in,
/// multipliers out). Nodes before `backward_start` are the two forward passes.
#[allow(clippy::too_many_arguments)]
fn split(
    combined: &explaind_onnx::GraphProto,
    original: &explaind_onnx::GraphProto,
    derived: &[NodeProto],
    backward_start: usize,
    reference_of: &HashMap<String, String>,
    varying: &std::collections::HashSet<String>,
    seed: &str,
    multipliers: &[String],
) -> (explaind_onnx::GraphProto, explaind_onnx::GraphProto, Vec<String>) {
    use std::collections::HashSet;
    let original_of: HashMap<&str, &str> = reference_of.iter().map(|(o, r)| (r.as_str(), o.as_str())).collect();
    let producer: HashMap<&str, usize> =
        combined.node.iter().enumerate().flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), i))).collect();
    let initializers: HashSet<&str> = combined.initializer.iter().map(|t| t.name()).collect();

    // Walk back from the backward nodes' inputs: a varying value (either side) becomes an
    // activation; anything else not at hand is recomputed by including its producer.
    // The layout's row counts are defined afresh below, from the backward model's own inputs.
    let is_layout = |n: &NodeProto| n.name().starts_with(LAYOUT_NODE_PREFIX);
    let mut keep: Vec<bool> = combined.node.iter().enumerate().map(|(i, n)| i >= backward_start && !is_layout(n)).collect();
    let mut activations: Vec<String> = Vec::new();
    let mut pending: Vec<String> =
        combined.node[backward_start..].iter().filter(|n| !is_layout(n)).flat_map(|n| n.input.clone()).collect();
    let mut seen: HashSet<String> = HashSet::new();
    while let Some(tensor) = pending.pop() {
        if tensor.is_empty()
            || !seen.insert(tensor.clone())
            || initializers.contains(tensor.as_str())
            || tensor == seed
            || [GRADIENT_ROWS, PAIR_ROWS, REPEATS].contains(&tensor.as_str())
        {
            continue;
        }
        let original_name = original_of.get(tensor.as_str()).copied().unwrap_or(tensor.as_str());
        if varying.contains(original_name) {
            if !activations.iter().any(|a| a == original_name) {
                activations.push(original_name.to_string());
            }
            continue;
        }
        if let Some(&index) = producer.get(tensor.as_str())
            && !keep[index]
        {
            keep[index] = true;
            pending.extend(combined.node[index].input.iter().cloned());
        }
    }
    activations.sort();

    let keep_initializers = |nodes: &[NodeProto]| {
        let used: HashSet<&str> = nodes.iter().flat_map(|n| n.input.iter().map(String::as_str)).collect();
        combined.initializer.iter().filter(|t| used.contains(t.name())).cloned().collect::<Vec<_>>()
    };

    // The activation model: the original forward pass, returning the activations (through
    // Identity nodes, since a model input cannot be returned as an output by name everywhere).
    let mut forward_nodes = original.node.clone();
    forward_nodes.extend(derived.iter().cloned());
    let mut forward_outputs = Vec::new();
    for activation in &activations {
        let out = format!("{activation}__activation");
        forward_nodes.push(NodeProto {
            input: vec![activation.clone()],
            output: vec![out.clone()],
            name: Some(format!("{activation}__activation_identity")),
            op_type: Some("Identity".into()),
            ..Default::default()
        });
        forward_outputs.push(float_output(&out));
    }
    let activation_graph = explaind_onnx::GraphProto {
        name: Some(format!("{}_activations", original.name())),
        initializer: keep_initializers(&forward_nodes),
        node: forward_nodes,
        input: original.input.clone(),
        output: forward_outputs,
        ..Default::default()
    };

    // The backward model: what was kept, fed by both sides' activations (the input side's under
    // the original names, one row or R; the reference side's under their twins' names, R rows)
    // and the seed (T·R rows), with the layout's row counts read from those.
    let first_reference = activations.first().map(|a| reference_of.get(a).cloned().unwrap_or_else(|| a.clone()));
    let mut backward_nodes = layout_nodes(seed, first_reference.as_deref());
    backward_nodes.extend(combined.node.iter().zip(&keep).filter(|(_, k)| **k).map(|(n, _)| n.clone()));
    let mut inputs: Vec<_> = activations.iter().map(|a| float_output(a)).collect();
    inputs.extend(activations.iter().map(|a| float_output(reference_of.get(a).map(String::as_str).unwrap_or(a))));
    inputs.extend(combined.input.iter().filter(|i| i.name() == seed).cloned());
    let backward_initializers = keep_initializers(&backward_nodes);
    let mut backward_graph = explaind_onnx::GraphProto {
        name: Some(format!("{}_backward", original.name())),
        initializer: backward_initializers,
        node: backward_nodes,
        input: inputs,
        output: multipliers.iter().map(|m| float_output(m)).collect(),
        ..Default::default()
    };
    prune_unused_nodes(&mut backward_graph);
    (activation_graph, backward_graph, activations)
}

/// Removes the nodes no graph output depends on (walking back from the outputs).
fn prune_unused_nodes(graph: &mut explaind_onnx::GraphProto) {
    let mut needed: std::collections::HashSet<String> = graph.output.iter().map(|o| o.name().to_string()).collect();
    let mut keep = vec![false; graph.node.len()];
    for (index, node) in graph.node.iter().enumerate().rev() {
        if node.output.iter().any(|o| needed.contains(o)) {
            keep[index] = true;
            needed.extend(node.input.iter().filter(|i| !i.is_empty()).cloned());
        }
    }
    let mut index = 0;
    graph.node.retain(|_| {
        index += 1;
        keep[index - 1]
    });
}

/// The layout's row counts (see [`PairLayout`]): T·R, R and T as 1-element int64 tensors.
const GRADIENT_ROWS: &str = "__deeplift_gradient_rows";
const PAIR_ROWS: &str = "__deeplift_pair_rows";
const REPEATS: &str = "__deeplift_repeats";
const LAYOUT_NODE_PREFIX: &str = "__deeplift_layout";

/// Nodes defining the layout's row counts: T·R from the seed's rows, R from a reference-side
/// tensor's (the seed's when there is none: T = 1).
fn layout_nodes(seed: &str, reference: Option<&str>) -> Vec<NodeProto> {
    let node = |op: &str, inputs: &[&str], output: &str| NodeProto {
        input: inputs.iter().map(|i| i.to_string()).collect(),
        output: vec![output.to_string()],
        name: Some(format!("{LAYOUT_NODE_PREFIX}_{output}")),
        op_type: Some(op.into()),
        ..Default::default()
    };
    let first = |tensor: &str, out: &str| {
        let shape = format!("{out}__shape");
        vec![node("Shape", &[tensor], &shape), node("Slice", &[&shape, "__deeplift_zero", "__deeplift_one"], out)]
    };
    let mut nodes = first(seed, GRADIENT_ROWS);
    nodes.extend(first(reference.unwrap_or(seed), PAIR_ROWS));
    nodes.push(node("Div", &[GRADIENT_ROWS, PAIR_ROWS], REPEATS));
    nodes
}

fn layout_constants() -> Vec<explaind_onnx::TensorProto> {
    vec![explaind_onnx::tensor_i64("__deeplift_zero", &[1], &[0]), explaind_onnx::tensor_i64("__deeplift_one", &[1], &[1])]
}

/// The pair-stage pieces of a guarded division by `denominator`: a 0/1 mask of where
/// `|denominator| >= epsilon`, and `1 / denominator` there (0 elsewhere).
fn guarded_inverse(e: &mut Emitter<'_>, denominator: &str, epsilon: f32) -> (String, String) {
    let magnitude = e.node("Abs", &[denominator], vec![]);
    let threshold = e.scalar(epsilon);
    let usable = e.node("GreaterOrEqual", &[&magnitude, &threshold], vec![]);
    // Arithmetic on a 0/1 mask rather than `Where` (see `Emitter::select`): where the
    // denominator is too small it is replaced by 1, so the inverse stays finite, and masked.
    let mask = e.float_mask(&usable);
    let one = e.scalar(1.0);
    let unusable = e.node("Sub", &[&one, &mask], vec![]);
    let safe = e.node("Add", &[denominator, &unusable], vec![]);
    let inverse = e.node("Div", &[&mask, &safe], vec![]);
    (mask, inverse)
}

/// The rescale factor `Δy / Δz`, or `slope` (the derivative at x) where `|Δz| < ε`: one
/// pair-stage tensor, so the multiplier is the gradient times it.
fn rescale_factor(e: &mut Emitter<'_>, dy: &str, dz: &str, slope: &str) -> String {
    let (mask, inverse) = guarded_inverse(e, dz, RESCALE_EPSILON);
    let ratio = e.node("Mul", &[dy, &inverse], vec![]);
    let one = e.scalar(1.0);
    let unusable = e.node("Sub", &[&one, &mask], vec![]);
    let fallback = e.node("Mul", &[&unusable, slope], vec![]);
    e.node("Add", &[&ratio, &fallback], vec![])
}

/// What the rules read about the two sides besides the node itself.
struct Sides<'a> {
    /// Each varying value's twin on the reference side.
    reference: &'a dyn Fn(&str) -> String,
    /// The argmax masks computed with the activations, by max-pool output.
    argmax_masks: &'a HashMap<String, String>,
    /// Values computed from the attributed inputs' values (see `compile_deeplift`).
    dependent: &'a std::collections::HashSet<String>,
    /// Divisions of a tensor by its own deviation ([`crate::lower::Lowered`]).
    normalising_divisions: &'a std::collections::HashSet<String>,
}

/// The DeepLIFT multipliers of one node (see the module documentation for the rules). What
/// depends on the forward values is computed in the pair stage; the gradient is multiplied by
/// it ([`Emitter::per_pair`]), so the seeds' rows only carry linear work.
fn multipliers(
    e: &mut Emitter<'_>,
    node: &NodeProto,
    g: &[Option<String>],
    varies: &[bool],
    sides: &Sides<'_>,
) -> Result<Vec<Option<String>>, CompileError> {
    let Sides { reference, argmax_masks, dependent, normalising_divisions } = *sides;
    if node.op_type() == "Split" || !is_default_domain(node.domain()) {
        // Split: linear, and fed by every output's multipliers (not only the first one's).
        // Another domain's operator: refused by `vjp`, whatever its name.
        return vjp(e, node, g, varies);
    }
    let Some(g0) = g.first().cloned().flatten() else { return Ok(vec![None; node.input.len()]) };
    if DATA_OPERANDS.contains(&node.op_type()) && node.input.iter().zip(varies).any(|(input, &v)| !v && dependent.contains(input))
    {
        // A mask or a rounded value of the inputs: treating it as a constant would break
        // completeness, since the reference side's differs.
        return Err(form(
            node,
            "an operand is computed from the attributed inputs through an operator without a gradient \
             (a comparison, rounding, an integer cast): DeepLIFT cannot treat it as a constant",
        ));
    }
    let x = |i: usize| node.input[i].clone();
    let y = node.output[0].clone();
    let op = node.op_type();
    let mut out: Vec<Option<String>> = vec![None; node.input.len()];

    if op == "Pow" && !crate::rules::elementwise::pow_keeps_shape(e, node, 1) {
        return Err(form(node, "DeepLIFT needs a single-element exponent that does not broadcast the base"));
    }
    if matches!(op, "Min" | "Max") {
        return min_max(e, node, &g0, varies, reference);
    }
    if ELEMENTWISE.contains(&op) || (op == "Div" && varies[1] && !varies[0]) {
        // Rescale: g · (y_x − y_r) / (z_x − z_r), the plain gradient at x where z barely moves.
        let z = if op == "Div" { 1 } else { 0 };
        let slope = if op == "Div" {
            // d(a/b)/db = −y / b, on the output's shape like the rescaled value.
            let p = e.node("Div", &[&y, &x(1)], vec![]);
            e.node("Neg", &[&p], vec![])
        } else {
            // The rule's vector-Jacobian product of a unit gradient: the derivative at x.
            let one = e.scalar(1.0);
            let unit = vec![Some(one)];
            vjp(e, node, &unit, varies)?.swap_remove(0).expect("the varying input has a gradient")
        };
        let dz = e.node("Sub", &[&x(z), &reference(&x(z))], vec![]);
        let dy = e.node("Sub", &[&y, &reference(&y)], vec![]);
        let factor = rescale_factor(e, &dy, &dz, &slope);
        let m = e.per_pair(&g0, &factor);
        // For Div the multiplier lives on the output's shape; sum it over broadcast axes.
        out[z] = Some(if op == "Div" { e.unbroadcast_to_input(&m, node, 1) } else { m });
        return Ok(out);
    }
    match op {
        "Mul" if varies[0] && varies[1] => {
            // Each operand's change, valued at the mean of the other's two values.
            let half = e.scalar(0.5);
            for (i, other) in [(0, 1), (1, 0)] {
                let sum = e.node("Add", &[&x(other), &reference(&x(other))], vec![]);
                let mean = e.node("Mul", &[&sum, &half], vec![]);
                let m = e.per_pair(&g0, &mean);
                out[i] = Some(e.unbroadcast_to_input(&m, node, i));
            }
        }
        "Div" if varies[0] && varies[1] && normalising_divisions.contains(&y) => {
            // A normalisation a / b, b the deviation of a: the deviation's change first, then
            // the numerator's at the input's deviation. The symmetric split below would value
            // Δa at 1/b_r too, which is 1/√ε when the reference has no variance (a constant
            // row, as a zero baseline gives after a bias-free layer): exact in theory, but
            // terms of ±1/√ε that cancel lose float32's precision.
            let one = e.scalar(1.0);
            let (bx, br) = (x(1), reference(&x(1)));
            let inv_x = e.node("Div", &[&one, &bx], vec![]);
            let inv_r = e.node("Div", &[&one, &br], vec![]);
            // a: Δa / b_x
            let m_a = e.per_pair(&g0, &inv_x);
            out[0] = Some(e.unbroadcast_to_input(&m_a, node, 0));
            // b: a_r · (1/b_x − 1/b_r), divided by Δb (no multiplier where Δb ≈ 0).
            let inv_diff = e.node("Sub", &[&inv_x, &inv_r], vec![]);
            let contribution = e.node("Mul", &[&reference(&x(0)), &inv_diff], vec![]);
            let db = e.node("Sub", &[&bx, &br], vec![]);
            let (_, inverse) = guarded_inverse(e, &db, ROUTE_EPSILON);
            let factor = e.node("Mul", &[&contribution, &inverse], vec![]);
            let m_b = e.per_pair(&g0, &factor);
            out[1] = Some(e.unbroadcast_to_input(&m_b, node, 1));
        }
        "Div" if varies[0] && varies[1] => {
            let half = e.scalar(0.5);
            let one = e.scalar(1.0);
            let (bx, br) = (x(1), reference(&x(1)));
            let inv_x = e.node("Div", &[&one, &bx], vec![]);
            let inv_r = e.node("Div", &[&one, &br], vec![]);
            // a: Δa · (1/b_x + 1/b_r) / 2
            let sum = e.node("Add", &[&inv_x, &inv_r], vec![]);
            let mean = e.node("Mul", &[&sum, &half], vec![]);
            let m_a = e.per_pair(&g0, &mean);
            out[0] = Some(e.unbroadcast_to_input(&m_a, node, 0));
            // b: (a_x + a_r) / 2 · (1/b_x − 1/b_r), divided by Δb (no multiplier where Δb ≈ 0).
            let a_sum = e.node("Add", &[&x(0), &reference(&x(0))], vec![]);
            let a_mean = e.node("Mul", &[&a_sum, &half], vec![]);
            let inv_diff = e.node("Sub", &[&inv_x, &inv_r], vec![]);
            let contribution = e.node("Mul", &[&a_mean, &inv_diff], vec![]);
            let db = e.node("Sub", &[&bx, &br], vec![]);
            let (_, inverse) = guarded_inverse(e, &db, ROUTE_EPSILON);
            let factor = e.node("Mul", &[&contribution, &inverse], vec![]);
            let m_b = e.per_pair(&g0, &factor);
            out[1] = Some(e.unbroadcast_to_input(&m_b, node, 1));
        }
        "MatMul" if varies[0] && varies[1] => {
            if e.rank(&x(0)).is_none_or(|r| r < 3) || e.rank(&x(1)).is_none_or(|r| r < 3) {
                return Err(form(node, "MatMul with two varying operands needs declared ranks of 3 or more (a batch axis)"));
            }
            let half = e.scalar(0.5);
            let b_sum = e.node("Add", &[&x(1), &reference(&x(1))], vec![]);
            let b_mean = e.node("Mul", &[&b_sum, &half], vec![]);
            let b_t = e.swap_last_two(&b_mean, &x(1), node)?;
            let m_a = e.per_pair_matmul(&g0, &b_t, false);
            out[0] = Some(e.unbroadcast_matmul_operand(&m_a, node, 0));
            let a_sum = e.node("Add", &[&x(0), &reference(&x(0))], vec![]);
            let a_mean = e.node("Mul", &[&a_sum, &half], vec![]);
            let a_t = e.swap_last_two(&a_mean, &x(0), node)?;
            let m_b = e.per_pair_matmul(&g0, &a_t, true);
            out[1] = Some(e.unbroadcast_matmul_operand(&m_b, node, 1));
        }
        "Gemm" if varies[0] && varies[1] => {
            return Err(form(node, "Gemm with two varying operands has no DeepLIFT rule yet"));
        }
        "Softmax" => out[0] = Some(softmax(e, node, &g0, reference)?),
        "LogSoftmax" => out[0] = Some(log_softmax(e, node, &g0, reference)?),
        "MaxPool" => out[0] = Some(max_pool(e, node, &g0, reference, argmax_masks)?),
        // With indices that input and reference share (constants, or computed from shapes and
        // constants), GatherElements picks the same elements on both sides: linear in its data,
        // so the multiplier is the vector-Jacobian product. Indices computed from the attributed
        // inputs pick different elements on the reference side: no multiplier makes that exact.
        "GatherElements" if dependent.contains(&x(1)) => {
            return Err(form(
                node,
                "the indices are computed from the attributed inputs: they pick other elements on the reference side, \
                 so GatherElements is not linear in its data there",
            ));
        }
        "ReduceMax" | "ReduceMin" => out[0] = Some(reduce_extreme(e, node, &g0, reference)?),
        "ReduceLogSumExp" => out[0] = Some(reduce_log_sum_exp(e, node, &g0, reference)?),
        // Everything else that has a rule is linear in its varying inputs: the multiplier is the
        // vector-Jacobian product.
        _ => return vjp(e, node, g, varies),
    }
    Ok(out)
}

/// Elementwise `Min`/`Max`. With one varying input (the others constant) the rescale rule,
/// `g · Δy / Δx` per output element, summed over the axes x was broadcast along, with the
/// selection mask (ties: the first input) where x barely moves. With two varying inputs the
/// two-player Shapley rule: each input's contribution is the mean of its two marginal
/// contributions, `φ_a = ½ [(f(a_x, b_r) − f(a_r, b_r)) + (f(a_x, b_x) − f(a_r, b_x))]`, divided
/// by Δa (no multiplier where |Δa| < 1e-7, where φ_a vanishes too). Min/Max with three or more
/// inputs never reach here: they are lowered into chains of binary ones, each link taking one
/// of these rules, which keeps the chain complete.
fn min_max(
    e: &mut Emitter<'_>,
    node: &NodeProto,
    g: &str,
    varies: &[bool],
    reference: &dyn Fn(&str) -> String,
) -> Result<Vec<Option<String>>, CompileError> {
    let op = node.op_type();
    let x = |i: usize| node.input[i].clone();
    let y = node.output[0].clone();
    let mut out: Vec<Option<String>> = vec![None; node.input.len()];
    let varying: Vec<usize> = (0..node.input.len()).filter(|&i| varies[i]).collect();
    match varying.as_slice() {
        [z] => {
            let z = *z;
            let masks = crate::rules::elementwise::min_max_masks(e, node);
            let dz = e.node("Sub", &[&x(z), &reference(&x(z))], vec![]);
            let dy = e.node("Sub", &[&y, &reference(&y)], vec![]);
            let factor = rescale_factor(e, &dy, &dz, &masks[z]);
            let m = e.per_pair(g, &factor);
            out[z] = Some(e.unbroadcast_to_input(&m, node, z));
        }
        [a, b] => {
            let (a, b) = (*a, *b);
            // Two inputs, both varying (more are lowered into chains of two).
            let f = |e: &mut Emitter<'_>, u: &str, v: &str| e.node(op, &[u, v], vec![]);
            let half = e.scalar(0.5);
            let (ax, ar, bx, br) = (x(a), reference(&x(a)), x(b), reference(&x(b)));
            let both_x = f(e, &ax, &bx);
            let both_r = f(e, &ar, &br);
            let a_only = f(e, &ax, &br);
            let b_only = f(e, &ar, &bx);
            for (i, own, other_first, other_last, d_from) in [(a, &ax, &a_only, &b_only, &ar), (b, &bx, &b_only, &a_only, &br)] {
                // Own change with the other at its reference, then with the other at x.
                let first = e.node("Sub", &[other_first, &both_r], vec![]);
                let last = e.node("Sub", &[&both_x, other_last], vec![]);
                let total = e.node("Add", &[&first, &last], vec![]);
                let phi = e.node("Mul", &[&total, &half], vec![]);
                let d = e.node("Sub", &[own, d_from], vec![]);
                let (_, inverse) = guarded_inverse(e, &d, ROUTE_EPSILON);
                let factor = e.node("Mul", &[&phi, &inverse], vec![]);
                let m = e.per_pair(g, &factor);
                out[i] = Some(e.unbroadcast_to_input(&m, node, i));
            }
        }
        // No varying input: no multipliers.
        [] => {}
        // Three or more inputs are lowered into chains of two ([`crate::lower`]).
        _ => unreachable!("Min/Max reach DeepLIFT with at most two inputs"),
    }
    Ok(out)
}

/// `ReduceMax`/`ReduceMin`, routed as `MaxPool` is ([`routing_weights`]). The batch axis must
/// not be reduced.
fn reduce_extreme(
    e: &mut Emitter<'_>,
    node: &NodeProto,
    g: &str,
    reference: &dyn Fn(&str) -> String,
) -> Result<String, CompileError> {
    use crate::rules::reduce::{sum_over_reduced, with_kept_axes};
    // Pair stage.
    let Reduction { xx, xr, yx, yr } = reduction_pair(e, node, reference)?;
    let extreme = if node.op_type() == "ReduceMax" { "Max" } else { "Min" };
    let weights = routing_weights(e, [&xx, &xr], [&yx, &yr], extreme, &|e, mask| sum_over_reduced(e, node, mask))?;
    // Gradient stage: each output's gradient over its reduced elements, then the weights.
    let (kept, _) = with_kept_axes(e, node, g)?;
    Ok(spread_weighted(e, &kept, &xx, &weights))
}

/// The pair-stage weights that route a max (or min) reduction's difference `y_x − y_r` to its
/// inputs (`Max` or `Min` in `extreme`): the part beyond the reference's extreme
/// (`ext(y_x, y_r) − y_r`) goes to x's extreme elements, the rest (`y_x − ext(y_x, y_r)`) to
/// r's, shared equally between tied elements (`count_ties` sums a 0/1 mask over the reduced
/// axes, keeping them), and divided by Δx there. That divisor is never near zero where a part
/// is not zero: at x's extreme, x lies beyond r's extreme and so beyond r; likewise at r's. So
/// every weight lies in [0, 1], and Σ weight · Δx = Δy.
fn routing_weights(
    e: &mut Emitter<'_>,
    [xx, xr]: [&str; 2],
    [yx, yr]: [&str; 2],
    extreme: &str,
    count_ties: &dyn Fn(&mut Emitter<'_>, &str) -> Result<String, CompileError>,
) -> Result<String, CompileError> {
    let top = e.node(extreme, &[yx, yr], vec![]);
    let beyond = e.node("Sub", &[&top, yr], vec![]);
    let rest = e.node("Sub", &[yx, &top], vec![]);
    let mut parts = Vec::new();
    for (side, y, part) in [(xx, yx, &beyond), (xr, yr, &rest)] {
        let hit = e.node("Equal", &[side, y], vec![]);
        let mask = e.float_mask(&hit);
        let ties = count_ties(e, &mask)?;
        let share = e.node("Div", &[&mask, &ties], vec![]);
        parts.push(e.node("Mul", &[&share, part], vec![]));
    }
    let weights = e.node("Add", &[&parts[0], &parts[1]], vec![]);
    let dx = e.node("Sub", &[xx, xr], vec![]);
    let (_, inv_dx) = guarded_inverse(e, &dx, ROUTE_EPSILON);
    Ok(e.node("Mul", &[&weights, &inv_dx], vec![]))
}

/// A reduction's input and output on both sides of the pair, the outputs with the reduced axes
/// kept (so they broadcast against the inputs).
struct Reduction {
    xx: String,
    xr: String,
    yx: String,
    yr: String,
}

/// What every reduction DeepLIFT evaluates per pair starts with: the batch axis kept, and
/// [`Reduction`]'s four tensors.
fn reduction_pair(e: &mut Emitter<'_>, node: &NodeProto, reference: &dyn Fn(&str) -> String) -> Result<Reduction, CompileError> {
    use crate::rules::reduce::with_kept_axes;
    check_batch_kept(e, node)?;
    let (xx, xr) = (node.input[0].clone(), reference(&node.input[0]));
    let (yx, noop) = with_kept_axes(e, node, &node.output[0])?;
    if noop {
        return Err(form(node, "noop_with_empty_axes with no axes is not supported"));
    }
    let (yr, _) = with_kept_axes(e, node, &reference(&node.output[0]))?;
    Ok(Reduction { xx, xr, yx, yr })
}

/// The reduced axes of a reduction DeepLIFT evaluates per pair: refused when they include the
/// batch axis (0), or are every axis.
fn check_batch_kept(e: &Emitter<'_>, node: &NodeProto) -> Result<(), CompileError> {
    let rank = e.rank(&node.input[0]).or_else(|| crate::layers::tensor_ranks(e.source_graph()).get(&node.input[0]).copied());
    let axes = crate::rules::reduce::reduced_axes(e, node)?.filter(|a| !a.is_empty());
    let reduces_batch = match &axes {
        None => true,
        Some(axes) => axes.iter().any(|&a| a == 0 || rank.is_some_and(|r| a + r as i64 == 0)),
    };
    if reduces_batch {
        return Err(form(node, "DeepLIFT needs the batch axis (0) kept: list the reduced axes"));
    }
    Ok(())
}

/// `ReduceLogSumExp`: each output's multiplier spread over its reduced elements, times the
/// weights of [`log_sum_exp_weights`]. The batch axis must not be reduced.
fn reduce_log_sum_exp(
    e: &mut Emitter<'_>,
    node: &NodeProto,
    g: &str,
    reference: &dyn Fn(&str) -> String,
) -> Result<String, CompileError> {
    use crate::rules::reduce::with_kept_axes;
    let Reduction { xx, xr, yx, yr } = reduction_pair(e, node, reference)?;
    let weights = log_sum_exp_weights(e, [&xx, &xr], [&yx, &yr]);
    // Gradient stage.
    let (kept, _) = with_kept_axes(e, node, g)?;
    Ok(spread_weighted(e, &kept, &xx, &weights))
}

/// A gradient-stage multiplier of a reduction's output (the reduced axes kept, size 1) spread
/// over the elements each output reduced, shaped like `input`, times the pair-stage `weights`
/// that route each output's change to them.
fn spread_weighted(e: &mut Emitter<'_>, kept: &str, input: &str, weights: &str) -> String {
    let shape = e.shape(input);
    let spread = e.node("Expand", &[kept, &shape], vec![]);
    e.per_pair(&spread, weights)
}

/// One side's logits raised to the lowest finite float (so that logits masked with −∞ give
/// finite differences), their maximum over `axis` (kept) and the logits centred by it.
fn centred_by_row_maximum(e: &mut Emitter<'_>, z: &str, axis: i64) -> (String, String, String) {
    let lowest = e.scalar(f32::MIN);
    let z = e.node("Max", &[z, &lowest], vec![]);
    let max = e.reduce_max(&z, &[axis]);
    let centred = e.node("Sub", &[&z, &max], vec![]);
    (z, max, centred)
}

/// The pair-stage weights `w` of a log-sum-exp `y = log Σ exp(x)` (outputs with the reduced
/// axes kept), with `Σ w · Δx = Δy`: `Exp` rescaled elementwise after a shift common to both
/// sides (the larger of their results, so every exponential is at most 1), the sum linear, and
/// `Log` rescaled, whose change is the outputs' own over that of the sums (`exp(y − shift)`), or
/// `1 / exp(y_x − shift)` where those barely differ.
fn log_sum_exp_weights(e: &mut Emitter<'_>, [xx, xr]: [&str; 2], [yx, yr]: [&str; 2]) -> String {
    let shift = e.node("Max", &[yx, yr], vec![]);
    let exp_of = |e: &mut Emitter<'_>, v: &str| {
        let centred = e.node("Sub", &[v, &shift], vec![]);
        e.node("Exp", &[&centred], vec![])
    };
    let (ex, er) = (exp_of(e, xx), exp_of(e, xr));
    let de = e.node("Sub", &[&ex, &er], vec![]);
    let dx = e.node("Sub", &[xx, xr], vec![]);
    let exp_factor = rescale_factor(e, &de, &dx, &ex);
    let (sx, sr) = (exp_of(e, yx), exp_of(e, yr));
    let ds = e.node("Sub", &[&sx, &sr], vec![]);
    let dy = e.node("Sub", &[yx, yr], vec![]);
    let one = e.scalar(1.0);
    let log_slope = e.node("Div", &[&one, &sx], vec![]);
    let log_factor = rescale_factor(e, &dy, &ds, &log_slope);
    e.node("Mul", &[&exp_factor, &log_factor], vec![])
}

/// `LogSoftmax` as `z − log Σ exp(z)`: `z` gets the multiplier directly, and minus its sum over
/// the axis through the log-sum-exp ([`log_sum_exp_weights`]). Logits masked with −∞ are raised
/// to the lowest finite float first, so every difference is finite and a masked position gets
/// a multiplier of exactly 0 from the log-sum-exp. The batch axis must not be the softmax axis.
fn log_softmax(
    e: &mut Emitter<'_>,
    node: &NodeProto,
    g: &str,
    reference: &dyn Fn(&str) -> String,
) -> Result<String, CompileError> {
    let axis = node.attr_int("axis").unwrap_or(-1);
    let rank = e.rank(&node.input[0]);
    if axis == 0 || rank.is_some_and(|r| axis + r as i64 == 0) {
        return Err(form(node, "DeepLIFT needs the batch axis (0) kept: the softmax axis must be another"));
    }
    let axes = e.ints(&[axis]);
    // Pair stage: each side's logits and log-sum-exp (computed centred by the row's maximum).
    let side = |e: &mut Emitter<'_>, z: &str| {
        let (z, max, centred) = centred_by_row_maximum(e, z, axis);
        let exp = e.node("Exp", &[&centred], vec![]);
        let sum = e.node("ReduceSum", &[&exp, &axes], vec![AttributeProto::int("keepdims", 1)]);
        let log = e.node("Log", &[&sum], vec![]);
        let log_sum_exp = e.node("Add", &[&max, &log], vec![]);
        (z, log_sum_exp)
    };
    let (zx, lse_x) = side(e, &node.input[0]);
    let (zr, lse_r) = side(e, &reference(&node.input[0]));
    let weights = log_sum_exp_weights(e, [&zx, &zr], [&lse_x, &lse_r]);
    // Gradient stage.
    let total = e.node("ReduceSum", &[g, &axes], vec![AttributeProto::int("keepdims", 1)]);
    let through_sum = spread_weighted(e, &total, &node.input[0], &weights);
    Ok(e.node("Sub", &[g, &through_sum], vec![]))
}

/// Softmax as centring by the row's maximum, `Exp`, `ReduceSum` and `Div`, each piece with its
/// DeepLIFT rule.
///
/// Each side is centred by its own maximum, `c = z − max(z)`, so every exponential is at most
/// 1 and every sum at least 1 on both sides, and the Shapley terms of the division stay
/// bounded. The centring is a difference of `z` and a `ReduceMax` of it, and takes their rules:
/// `c`'s multiplier reaches `z` directly, and minus its sum over the row reaches `z` through the
/// maximum, routed as `ReduceMax` is ([`routing_weights`]). (Rescaling `Δc / Δz` element by
/// element, as shap's TensorFlow backend does, is not exact: an element whose logit is the same
/// on both sides, such as a class token's score against itself when that token does not vary,
/// has Δz = 0 but Δc = −Δmax, and its share of the output's change is lost.)
fn softmax(e: &mut Emitter<'_>, node: &NodeProto, g: &str, reference: &dyn Fn(&str) -> String) -> Result<String, CompileError> {
    let axis = node.attr_int("axis").unwrap_or(-1);
    let axes = e.ints(&[axis]);
    let keep = || vec![AttributeProto::int("keepdims", 1)];
    // An additive attention mask puts −∞ or finfo(float32).min in both sides' logits at the
    // same positions, where the differences below would be −∞ − (−∞) = NaN or rounded to
    // nothing. The logits are raised to the lowest finite float and the centred ones to
    // SOFTMAX_FLOOR, where Exp is 0 as at −∞: the softmax is unchanged, every difference
    // finite, and a masked position (no change in z, c or e) gets a multiplier of exactly 0.
    let floor = e.scalar(SOFTMAX_FLOOR);
    let side = |e: &mut Emitter<'_>, z: &str| {
        let (z, max, centred) = centred_by_row_maximum(e, z, axis);
        let floored = e.node("Max", &[&centred, &floor], vec![]);
        let exp = e.node("Exp", &[&floored], vec![]);
        let sum = e.node("ReduceSum", &[&exp, &axes], keep());
        SoftmaxSide { z, max, centred, floored, exp, sum }
    };
    // Pair stage.
    let x = side(e, &node.input[0]);
    let r = side(e, &reference(&node.input[0]));
    let half = e.scalar(0.5);
    let one = e.scalar(1.0);
    let inv_x = e.node("Div", &[&one, &x.sum], vec![]);
    let inv_r = e.node("Div", &[&one, &r.sum], vec![]);
    let inv_sum = e.node("Add", &[&inv_x, &inv_r], vec![]);
    let inv_mean = e.node("Mul", &[&inv_sum, &half], vec![]);
    let e_sum = e.node("Add", &[&x.exp, &r.exp], vec![]);
    let e_mean = e.node("Mul", &[&e_sum, &half], vec![]);
    let inv_diff = e.node("Sub", &[&inv_x, &inv_r], vec![]);
    let to_sum = e.node("Mul", &[&e_mean, &inv_diff], vec![]);
    let ds = e.node("Sub", &[&x.sum, &r.sum], vec![]);
    let (_, inv_ds) = guarded_inverse(e, &ds, ROUTE_EPSILON);
    let df = e.node("Sub", &[&x.floored, &r.floored], vec![]);
    let de = e.node("Sub", &[&x.exp, &r.exp], vec![]);
    let exp_factor = rescale_factor(e, &de, &df, &x.exp);
    // The floor is elementwise and 1-Lipschitz: rescaled, with slope 1 above it.
    let dc = e.node("Sub", &[&x.centred, &r.centred], vec![]);
    let above = e.node("Greater", &[&x.centred, &floor], vec![]);
    let above = e.float_mask(&above);
    let floor_factor = rescale_factor(e, &df, &dc, &above);
    let routing = routing_weights(e, [&x.z, &r.z], [&x.max, &r.max], "Max", &|e, mask| {
        Ok(e.node("ReduceSum", &[mask, &axes], vec![AttributeProto::int("keepdims", 1)]))
    })?;

    // Gradient stage. y = e / s, both varying (two-player Shapley rule): e gets g at the mean of
    // 1/s, s gets Σ g · mean(e) · Δ(1/s), divided by Δs.
    let m_e = e.per_pair(g, &inv_mean);
    let contribution = e.per_pair(g, &to_sum);
    let contribution = e.node("ReduceSum", &[&contribution, &axes], keep());
    let m_s = e.per_pair(&contribution, &inv_ds);
    // s = ReduceSum(e) is linear: its multiplier spreads back over the axis.
    let m_e = e.node("Add", &[&m_e, &m_s], vec![]);
    // e = Exp(floor(c)): rescale factors.
    let both = e.node("Mul", &[&exp_factor, &floor_factor], vec![]);
    let m_c = e.per_pair(&m_e, &both);
    // c = z − max(z): z directly, and through the maximum.
    let m_max = e.node("ReduceSum", &[&m_c, &axes], keep());
    let through_max = spread_weighted(e, &m_max, &node.input[0], &routing);
    Ok(e.node("Sub", &[&m_c, &through_max], vec![]))
}

/// One side's values in DeepLIFT's softmax: the logits raised to the lowest finite float, their
/// maximum, the centred and floored logits, their exponentials and the exponentials' sum.
struct SoftmaxSide {
    z: String,
    max: String,
    centred: String,
    floored: String,
    exp: String,
    sum: String,
}

/// MaxPool: each output's difference goes to the argmax of x (the part above the reference's
/// maximum) and of r (the part below), added up at those positions, divided by Δx.
///
/// The routing weights are pair-stage values. Windows that tile the input without overlap
/// (stride = kernel, no padding or dilation: the common 2×2 pool) give each input position
/// one weight, read from the argmax masks computed with the activations (`argmax_masks`, by
/// pool output), so the gradient stage is a nearest upsampling and a product; other windows
/// scatter-add every seed's values at the pair's argmax positions.
fn max_pool(
    e: &mut Emitter<'_>,
    node: &NodeProto,
    g: &str,
    reference: &dyn Fn(&str) -> String,
    argmax_masks: &HashMap<String, String>,
) -> Result<String, CompileError> {
    max_pool_attrs(node)?; // refuses the forms no route below handles
    let (xx, xr) = (node.input[0].clone(), reference(&node.input[0]));
    let (yx, yr) = (node.output[0].clone(), reference(&node.output[0]));

    // Pair stage: the part of each output's difference above the reference's maximum goes to
    // x's argmax, the part below to r's.
    let dx = e.node("Sub", &[&xx, &xr], vec![]);
    let (_, inv_dx) = guarded_inverse(e, &dx, ROUTE_EPSILON);

    if let (Some(kernel), Some(mask_x)) = (tiling_window(node), argmax_masks.get(&yx)) {
        // One weight per input position: its window's `above` where x takes its maximum there,
        // its `below` where r does (the 0/1 masks come with the activations), over Δx. At x's
        // argmax the window's maximum is x itself, so `above` = relu(x − y_r) there, and
        // likewise `below` = −relu(r − y_x) at r's: each side needs only the other's maxima
        // spread over the windows.
        let mask_r = reference(mask_x);
        let divides = e.spatial_size(&xx).is_some_and(|size| size.iter().zip(&kernel).all(|(s, k)| s % k == 0));
        let mut parts = Vec::new();
        for (own, other_max, other_input, mask) in [(&xx, &yr, &xr, mask_x), (&xr, &yx, &xx, &mask_r)] {
            let spread = spread_over_windows(e, other_max, &kernel);
            let spread = if divides {
                spread
            } else {
                let other_shape = e.node("Shape", &[other_input], vec![]);
                e.pad_to_shape(&spread, &other_shape)
            };
            let excess = e.node("Sub", &[own, &spread], vec![]);
            let excess = e.node("Relu", &[&excess], vec![]);
            parts.push(e.node("Mul", &[&excess, mask], vec![]));
        }
        let weights = e.node("Sub", &[&parts[0], &parts[1]], vec![]);
        let weights = e.node("Mul", &[&weights, &inv_dx], vec![]);
        // Gradient stage: each output's gradient to its whole window, then the weights.
        let spread = spread_over_windows(e, g, &kernel);
        // Positions past the last whole window (floor mode) belong to none: zeros, unless the
        // file tells that the windows divide the input (the padding would copy the tensor).
        let spread = if divides { spread } else { e.pad_to(&spread, &xx) };
        return Ok(e.per_pair(&spread, &weights));
    }

    // Pair stage, any windows: the parts above and below, and the argmax positions of both
    // sides. Indices are flat over the whole batch, so the input side gets all R rows.
    let top = e.node("Max", &[&yx, &yr], vec![]);
    let above = e.node("Sub", &[&top, &yr], vec![]);
    let below = e.node("Sub", &[&yx, &top], vec![]);
    let pair_shape = e.pair_shape(&xx);
    let xx_rows = e.node("Expand", &[&xx, &pair_shape], vec![]);
    let spatial = e.portable_spatial_size(&xx);
    let index_x = max_pool_indices(e.builder(), node, &xx_rows, &yx, spatial.as_deref())?;
    let index_r = max_pool_indices(e.builder(), node, &xr, &yr, spatial.as_deref())?;
    let flat = e.ints(&[-1]);

    // Gradient stage, any windows: every seed's values go to the pair's argmax positions,
    // offset by the seed's block of the flat gradient tensor.
    let count = e.size(&xx);
    let mut routed = e.flat_zeros(&count);
    for (indices, weight) in [(index_x, above), (index_r, below)] {
        let values = e.per_pair(g, &weight);
        let values = e.node("Reshape", &[&values, &flat], vec![]);
        let pair_indices = e.node("Reshape", &[&indices, &flat], vec![]);
        let indices = match e.seed_offsets(&xx) {
            Some(offsets) => {
                let row = e.ints(&[1, -1]);
                let pair_indices = e.node("Reshape", &[&pair_indices, &row], vec![]);
                let all = e.node("Add", &[&pair_indices, &offsets], vec![]);
                e.node("Reshape", &[&all, &flat], vec![])
            }
            None => pair_indices,
        };
        routed = e.node(
            "ScatterElements",
            &[&routed, &indices, &values],
            vec![AttributeProto::int("axis", 0), AttributeProto::string("reduction", "add")],
        );
    }
    let shape = e.shape(&xx);
    let routed = e.node("Reshape", &[&routed, &shape], vec![]);
    Ok(e.per_pair(&routed, &inv_dx))
}

/// Each value of `t` ([N, C, h, w]) repeated over its window (nearest upsampling by the kernel).
fn spread_over_windows(e: &mut Emitter<'_>, t: &str, kernel: &[i64]) -> String {
    let mut scales = vec![1.0f32, 1.0];
    scales.extend(kernel.iter().map(|&k| k as f32));
    let scales = e.builder().add_initializer(explaind_onnx::tensor_f32("maxpool_scales", &[scales.len() as i64], &scales));
    e.node(
        "Resize",
        &[t, "", &scales],
        vec![
            AttributeProto::string("mode", "nearest"),
            AttributeProto::string("coordinate_transformation_mode", "asymmetric"),
            AttributeProto::string("nearest_mode", "floor"),
        ],
    )
}

/// Adds nodes computing a 0/1 mask shaped like `input` with a 1 where `pool` (whose result on
/// `input` is `output`) takes each window's maximum (its first in row-major order when several
/// tie, on every execution provider: [`max_pool_indices`]). Returns the mask's name and the
/// nodes added.
fn argmax_mask(
    builder: &mut GraphBuilder,
    pool: &NodeProto,
    input: &str,
    output: &str,
    spatial: Option<&[i64]>,
) -> Result<(String, Vec<NodeProto>), CompileError> {
    let first_node = builder.graph_mut().node.len();
    let flat = builder.add_initializer(explaind_onnx::tensor_i64("argmax_flat", &[1], &[-1]));
    let filled = |value: f32| vec![AttributeProto::tensor("value", explaind_onnx::tensor_f32("", &[1], &[value]))];
    let indices = max_pool_indices(builder, pool, input, output, spatial)?;
    let indices = builder.add_node("Reshape", &[&indices, &flat], vec![]);
    let count = builder.add_node("Shape", &[&indices], vec![]);
    let ones = builder.add_node("ConstantOfShape", &[&count], filled(1.0));
    let shape = builder.add_node("Shape", &[input], vec![]);
    let zeros = builder.add_node("ConstantOfShape", &[&shape], filled(0.0));
    let zeros = builder.add_node("Reshape", &[&zeros, &flat], vec![]);
    let scattered = builder.add_node("ScatterElements", &[&zeros, &indices, &ones], vec![AttributeProto::int("axis", 0)]);
    // Named after its input, so the activations it joins say what it is.
    let mask = builder
        .push_node(NodeProto {
            input: vec![scattered, shape],
            output: vec![format!("{input}__argmax")],
            name: Some(format!("{input}__argmax")),
            op_type: Some("Reshape".into()),
            ..Default::default()
        })
        .remove(0);
    Ok((mask, builder.graph_mut().node[first_node..].to_vec()))
}

/// The kernel of a 2-D max-pool whose windows tile its input without overlap or gaps between
/// them (strides equal to the kernel, no padding, no dilation, floor mode); `None` otherwise.
fn tiling_window(node: &NodeProto) -> Option<Vec<i64>> {
    let kernel = node.attr_ints("kernel_shape")?.to_vec();
    let strides = node.attr_ints("strides").map(<[i64]>::to_vec).unwrap_or_else(|| vec![1; kernel.len()]);
    let untouched = |name: &str, neutral: i64| node.attr_ints(name).is_none_or(|v| v.iter().all(|&d| d == neutral));
    let tiles = kernel.len() == 2
        && strides == kernel
        && untouched("pads", 0)
        && untouched("dilations", 1)
        && node.attr_int("ceil_mode").unwrap_or(0) == 0;
    tiles.then_some(kernel)
}
