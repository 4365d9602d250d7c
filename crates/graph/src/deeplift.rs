//! DeepLIFT multipliers (the rescale rule), compiled into an ONNX graph.
//!
//! The compiled model takes the inputs `x`, a reference row `r` per input row (paired row by
//! row), and a seed shaped like the explained output; it returns the model's outputs and, per
//! input, the multipliers `m` such that `Σ m · (x − r) = seed · (f(x) − f(r))` (completeness).
//! Deep SHAP averages `m · (x − r)` over the background rows as references.
//!
//! The rules follow `../shared/design/deep-shap.md`:
//! - linear operators keep their vector-Jacobian product (the plain rules in [`crate::rules`]);
//! - elementwise nonlinearities use the rescale rule `g · Δy / Δz`, falling back to the plain
//!   gradient at `x` where `|Δz| < 1e-6`;
//! - `Mul`, `Div` and `MatMul` with two varying operands give each operand half of its two
//!   marginal contributions (the two-player Shapley rule);
//! - `Softmax` is decomposed into centring, `Exp`, `ReduceSum` and `Div`, each with its rule;
//! - `MaxPool` routes each output's difference to the argmax positions of `x` and `r` and adds
//!   (scatter-add), so overlapping windows stay additive.

use crate::CompileError;
use crate::gradient::{Analysis, analyse, backward_sweep, check_opset, emit_sums_as_outputs, float_output};
use crate::rules::{Emitter, form, vjp};
use explaind_onnx::{AttributeProto, GraphBuilder, ModelProto, NodeProto, is_default_domain};
use std::collections::HashMap;

/// What to attribute.
#[derive(Debug, Clone, Default)]
pub struct DeepLiftRequest {
    /// The model output to explain.
    pub output: String,
    /// The model inputs to attribute to, each paired with a reference input.
    pub inputs: Vec<String>,
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
    ///   has T·R rows: seed row t·R + r pairs seed t with reference row r (the graph repeats the
    ///   reference rows itself). The input side has one row (explained against all of them) or
    ///   T·R rows (explicit pairs).
    pub activation_model: ModelProto,
    pub backward_model: ModelProto,
    /// Names of the activations (tensors of the original graph).
    pub activations: Vec<String>,
    /// Reference input per attributed input, in the request's order (`<input>__ref`).
    pub references: Vec<String>,
    /// The seed input, shaped like the explained output.
    pub seed: String,
    /// Multiplier output per attributed input, in the request's order.
    pub multipliers: Vec<String>,
}

/// Below this difference a rescale falls back to the gradient (as in the design note).
const RESCALE_EPSILON: f32 = 1e-6;
/// Below this difference a routed or Shapley contribution has no multiplier.
const ROUTE_EPSILON: f32 = 1e-7;

const ELEMENTWISE: &[&str] =
    &["Relu", "LeakyRelu", "Elu", "Sigmoid", "Tanh", "Softplus", "Exp", "Erf", "Sqrt", "Reciprocal", "Clip"];

pub fn compile_deeplift(model: &ModelProto, request: &DeepLiftRequest) -> Result<CompiledDeepLift, CompileError> {
    let graph = model.graph.as_ref().ok_or(CompileError::NoGraph)?;
    let opset = check_opset(model)?;
    let outputs = vec![request.output.clone()];
    let Analysis { varying, on_path } = analyse(graph, &request.inputs, &outputs, &[])?;
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
    let forward_nodes = graph.node.len();
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

    let info = graph.output.iter().find(|o| o.name() == request.output).expect("checked by analyse");
    let seed = builder.fresh_name(&format!("{}__seed", request.output));
    let mut seed_info = info.clone();
    seed_info.name = Some(seed.clone());
    builder.graph_mut().input.push(seed_info);

    let mut grads: HashMap<String, Vec<String>> = HashMap::from([(request.output.clone(), vec![seed.clone()])]);
    let mut emit = Emitter::new(&mut builder, graph, target_opset);
    // The backward model may get the input side as one row (see `split`): full shapes are read
    // from the reference side, which always has every row.
    emit.read_shapes_from(reference_of.clone());
    let reference = |name: &str| reference_of.get(name).cloned().unwrap_or_else(|| name.to_string());
    backward_sweep(&mut emit, graph, &on_path, &varying, &mut grads, &mut |emit, node, output_grads, varies| {
        multipliers(emit, node, output_grads, varies, &reference)
    })?;
    let multiplier_outputs = emit_sums_as_outputs(&mut emit, &request.inputs, &grads, "multiplier");

    let combined = builder.finish();
    let backward_start = forward_nodes + graph.node.iter().filter(|n| n.output.iter().any(|o| varying.contains(o))).count();
    let (activation_graph, backward_graph, activations) =
        split(&combined, graph, backward_start, &reference_of, &varying, &seed, &multiplier_outputs);
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
        model: with_graph(combined),
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
fn split(
    combined: &explaind_onnx::GraphProto,
    original: &explaind_onnx::GraphProto,
    backward_start: usize,
    reference_of: &HashMap<String, String>,
    varying: &std::collections::HashSet<String>,
    seed: &str,
    multipliers: &[String],
) -> (explaind_onnx::GraphProto, explaind_onnx::GraphProto, Vec<String>) {
    use std::collections::HashSet;
    let original_of: HashMap<&str, &str> = reference_of.iter().map(|(o, r)| (r.as_str(), o.as_str())).collect();
    let producer: HashMap<&str, usize> = combined
        .node
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), i)))
        .collect();
    let initializers: HashSet<&str> = combined.initializer.iter().map(|t| t.name()).collect();

    // Walk back from the backward nodes' inputs: a varying value (either side) becomes an
    // activation; anything else not at hand is recomputed by including its producer.
    let mut keep: Vec<bool> = (0..combined.node.len()).map(|i| i >= backward_start).collect();
    let mut activations: Vec<String> = Vec::new();
    let mut pending: Vec<String> = combined.node[backward_start..].iter().flat_map(|n| n.input.clone()).collect();
    let mut seen: HashSet<String> = HashSet::new();
    while let Some(tensor) = pending.pop() {
        if tensor.is_empty() || !seen.insert(tensor.clone()) || initializers.contains(tensor.as_str()) || tensor == seed {
            continue;
        }
        let original_name = original_of.get(tensor.as_str()).copied().unwrap_or(tensor.as_str());
        if varying.contains(original_name) {
            if !activations.iter().any(|a| a == original_name) {
                activations.push(original_name.to_string());
            }
            continue;
        }
        if let Some(&index) = producer.get(tensor.as_str()) {
            if !keep[index] {
                keep[index] = true;
                pending.extend(combined.node[index].input.iter().cloned());
            }
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

    // The backward model: what was kept, fed by both sides' activations and the seed. The
    // reference side comes as R rows and the seed as T·R rows (T seeds per reference row,
    // seed-major); the graph repeats the reference rows T times, and the input side (one row,
    // or T·R) broadcasts against them, so nothing is copied per (row, seed) pair.
    let mut backward_nodes: Vec<NodeProto> = Vec::new();
    let node = |op: &str, inputs: Vec<String>, output: String, attributes: Vec<explaind_onnx::AttributeProto>| NodeProto {
        input: inputs,
        output: vec![output.clone()],
        name: Some(format!("{output}__node")),
        op_type: Some(op.into()),
        attribute: attributes,
        ..Default::default()
    };
    let first_reference = activations.first().map(|a| format!("{}__input", reference_of.get(a).map(String::as_str).unwrap_or(a)));
    let mut constants = Vec::new();
    if let Some(first_reference) = &first_reference {
        // repeats = rows(seed) / rows(reference), as a 1-element int64 tensor.
        constants.push(explaind_onnx::tensor_i64("__deeplift_zero", &[1], &[0]));
        constants.push(explaind_onnx::tensor_i64("__deeplift_one", &[1], &[1]));
        constants.push(explaind_onnx::tensor_i64("__deeplift_minus_one", &[1], &[-1]));
        constants.push(explaind_onnx::tensor_i64("__deeplift_end", &[1], &[i64::MAX]));
        let first_dim = |b: &mut Vec<NodeProto>, tensor: &str, out: &str| {
            b.push(node("Shape", vec![tensor.into()], format!("{out}__shape"), vec![]));
            b.push(node(
                "Slice",
                vec![format!("{out}__shape"), "__deeplift_zero".into(), "__deeplift_one".into()],
                out.into(),
                vec![],
            ));
        };
        first_dim(&mut backward_nodes, seed, "__deeplift_seed_rows");
        first_dim(&mut backward_nodes, first_reference, "__deeplift_reference_rows");
        backward_nodes.push(node(
            "Div",
            vec!["__deeplift_seed_rows".into(), "__deeplift_reference_rows".into()],
            "__deeplift_repeats".into(),
            vec![],
        ));
    }
    for activation in &activations {
        let reference = reference_of.get(activation).map(String::as_str).unwrap_or(activation).to_string();
        let input = format!("{reference}__input");
        let shape = format!("{reference}__in_shape");
        backward_nodes.push(node("Shape", vec![input.clone()], shape.clone(), vec![]));
        backward_nodes.push(node(
            "Concat",
            vec!["__deeplift_repeats".into(), shape.clone()],
            format!("{reference}__tiled_shape"),
            vec![explaind_onnx::AttributeProto::int("axis", 0)],
        ));
        backward_nodes.push(node("Unsqueeze", vec![input, "__deeplift_zero".into()], format!("{reference}__lifted"), vec![]));
        backward_nodes.push(node(
            "Expand",
            vec![format!("{reference}__lifted"), format!("{reference}__tiled_shape")],
            format!("{reference}__tiled"),
            vec![],
        ));
        backward_nodes.push(node(
            "Slice",
            vec![shape, "__deeplift_one".into(), "__deeplift_end".into()],
            format!("{reference}__row_shape"),
            vec![],
        ));
        backward_nodes.push(node(
            "Concat",
            vec!["__deeplift_minus_one".into(), format!("{reference}__row_shape")],
            format!("{reference}__flat_shape"),
            vec![explaind_onnx::AttributeProto::int("axis", 0)],
        ));
        backward_nodes.push(node(
            "Reshape",
            vec![format!("{reference}__tiled"), format!("{reference}__flat_shape")],
            reference.clone(),
            vec![],
        ));
    }
    backward_nodes.extend(combined.node.iter().zip(&keep).filter(|(_, k)| **k).map(|(n, _)| n.clone()));
    // The input side goes in under its own names, one row or T·R rows: it broadcasts against
    // the reference side, whose shapes the rules read (see `Emitter::read_shapes_from`).
    let mut inputs: Vec<_> = activations.iter().map(|a| float_output(a)).collect();
    inputs.extend(
        activations
            .iter()
            .map(|a| float_output(&format!("{}__input", reference_of.get(a).map(String::as_str).unwrap_or(a)))),
    );
    inputs.extend(combined.input.iter().filter(|i| i.name() == seed).cloned());
    let mut backward_initializers = keep_initializers(&backward_nodes);
    backward_initializers.extend(constants);
    let backward_graph = explaind_onnx::GraphProto {
        name: Some(format!("{}_backward", original.name())),
        initializer: backward_initializers,
        node: backward_nodes,
        input: inputs,
        output: multipliers.iter().map(|m| float_output(m)).collect(),
        ..Default::default()
    };
    (activation_graph, backward_graph, activations)
}

/// `numerator / denominator` where `|denominator| >= epsilon`, else `fallback`.
fn guarded_ratio(e: &mut Emitter<'_>, numerator: &str, denominator: &str, epsilon: f32, fallback: &str) -> String {
    let magnitude = e.node("Abs", &[denominator], vec![]);
    let threshold = e.scalar(epsilon);
    let usable = e.node("GreaterOrEqual", &[&magnitude, &threshold], vec![]);
    // Where the denominator is too small it is replaced by 1 (so the ratio stays finite), and
    // the fallback is selected: arithmetic on a 0/1 mask, as `Emitter::select` explains.
    let one = e.scalar(1.0);
    let mask = e.float_mask(&usable);
    let unusable = e.node("Sub", &[&one, &mask], vec![]);
    let safe = e.node("Add", &[denominator, &unusable], vec![]);
    let ratio = e.node("Div", &[numerator, &safe], vec![]);
    e.blend(&mask, &ratio, fallback)
}

/// The DeepLIFT multipliers of one node (see the module documentation for the rules).
fn multipliers(
    e: &mut Emitter<'_>,
    node: &NodeProto,
    g: &[Option<String>],
    varies: &[bool],
    reference: &dyn Fn(&str) -> String,
) -> Result<Vec<Option<String>>, CompileError> {
    let Some(g0) = g.first().cloned().flatten() else { return Ok(vec![None; node.input.len()]) };
    let x = |i: usize| node.input[i].clone();
    let y = node.output[0].clone();
    let op = node.op_type();
    let mut out: Vec<Option<String>> = vec![None; node.input.len()];

    if ELEMENTWISE.contains(&op) || (op == "Div" && varies[1] && !varies[0]) {
        // Rescale: g · (y_x − y_r) / (z_x − z_r), the plain gradient at x where z barely moves.
        let z = if op == "Div" { 1 } else { 0 };
        let plain = if op == "Div" {
            // −g · y / b, on the output's shape like the rescaled value (summed over broadcast
            // axes only once, below).
            let p = e.node("Mul", &[&g0, &y], vec![]);
            let p = e.node("Div", &[&p, &x(1)], vec![]);
            e.node("Neg", &[&p], vec![])
        } else {
            vjp(e, node, g, varies)?.swap_remove(0).expect("the varying input has a gradient")
        };
        let dz = e.node("Sub", &[&x(z), &reference(&x(z))], vec![]);
        let dy = e.node("Sub", &[&y, &reference(&y)], vec![]);
        let scaled = e.node("Mul", &[&g0, &dy], vec![]);
        let m = guarded_ratio(e, &scaled, &dz, RESCALE_EPSILON, &plain);
        // For Div the multiplier lives on the output's shape; sum it over broadcast axes.
        out[z] = Some(if op == "Div" { e.unbroadcast(&m, &x(1)) } else { m });
        return Ok(out);
    }
    match op {
        "Mul" if varies[0] && varies[1] => {
            // Each operand's change, valued at the mean of the other's two values.
            let half = e.scalar(0.5);
            for (i, other) in [(0, 1), (1, 0)] {
                let sum = e.node("Add", &[&x(other), &reference(&x(other))], vec![]);
                let mean = e.node("Mul", &[&sum, &half], vec![]);
                let m = e.node("Mul", &[&g0, &mean], vec![]);
                out[i] = Some(e.unbroadcast(&m, &x(i)));
            }
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
            let m_a = e.node("Mul", &[&g0, &mean], vec![]);
            out[0] = Some(e.unbroadcast(&m_a, &x(0)));
            // b: (a_x + a_r) / 2 · (1/b_x − 1/b_r), divided by Δb.
            let a_sum = e.node("Add", &[&x(0), &reference(&x(0))], vec![]);
            let a_mean = e.node("Mul", &[&a_sum, &half], vec![]);
            let inv_diff = e.node("Sub", &[&inv_x, &inv_r], vec![]);
            let contribution = e.node("Mul", &[&a_mean, &inv_diff], vec![]);
            let contribution = e.node("Mul", &[&g0, &contribution], vec![]);
            let db = e.node("Sub", &[&bx, &br], vec![]);
            let zero = e.scalar(0.0);
            let zeros = e.node("Mul", &[&contribution, &zero], vec![]);
            let m_b = guarded_ratio(e, &contribution, &db, ROUTE_EPSILON, &zeros);
            out[1] = Some(e.unbroadcast(&m_b, &x(1)));
        }
        "MatMul" if varies[0] && varies[1] => {
            let half = e.scalar(0.5);
            let b_sum = e.node("Add", &[&x(1), &reference(&x(1))], vec![]);
            let b_mean = e.node("Mul", &[&b_sum, &half], vec![]);
            let b_t = e.swap_last_two(&b_mean, &x(1), node)?;
            let m_a = e.node("MatMul", &[&g0, &b_t], vec![]);
            out[0] = Some(e.unbroadcast(&m_a, &x(0)));
            let a_sum = e.node("Add", &[&x(0), &reference(&x(0))], vec![]);
            let a_mean = e.node("Mul", &[&a_sum, &half], vec![]);
            let a_t = e.swap_last_two(&a_mean, &x(0), node)?;
            let m_b = e.node("MatMul", &[&a_t, &g0], vec![]);
            out[1] = Some(e.unbroadcast(&m_b, &x(1)));
        }
        "Gemm" if varies[0] && varies[1] => {
            return Err(form(node, "Gemm with two varying operands has no DeepLIFT rule yet"));
        }
        "Softmax" => out[0] = Some(softmax(e, node, &g0, reference)?),
        "LogSoftmax" => return Err(form(node, "LogSoftmax has no DeepLIFT rule yet")),
        "MaxPool" => out[0] = Some(max_pool(e, node, &g0, reference)?),
        // Everything else that has a rule is linear in its varying inputs: the multiplier is the
        // vector-Jacobian product.
        _ => return vjp(e, node, g, varies),
    }
    Ok(out)
}

/// Softmax as centring, `Exp`, `ReduceSum` and `Div`, each piece with its DeepLIFT rule.
fn softmax(e: &mut Emitter<'_>, node: &NodeProto, g: &str, reference: &dyn Fn(&str) -> String) -> Result<String, CompileError> {
    let axis = node.attr_int("axis").unwrap_or(-1);
    let axes = e.ints(&[axis]);
    let (zx, zr) = (node.input[0].clone(), reference(&node.input[0]));
    let keep = || vec![AttributeProto::int("keepdims", 1)];
    let side = |e: &mut Emitter<'_>, z: &str| {
        let max = e.reduce_max(z, &[axis]);
        let centred = e.node("Sub", &[z, &max], vec![]);
        let exp = e.node("Exp", &[&centred], vec![]);
        let sum = e.node("ReduceSum", &[&exp, &axes], keep());
        (centred, exp, sum)
    };
    let (cx, ex, sx) = side(e, &zx);
    let (cr, er, sr) = side(e, &zr);
    let half = e.scalar(0.5);
    let one = e.scalar(1.0);
    let zero = e.scalar(0.0);

    // y = e / s, both varying (two-player Shapley rule).
    let inv_x = e.node("Div", &[&one, &sx], vec![]);
    let inv_r = e.node("Div", &[&one, &sr], vec![]);
    let inv_sum = e.node("Add", &[&inv_x, &inv_r], vec![]);
    let inv_mean = e.node("Mul", &[&inv_sum, &half], vec![]);
    let m_e = e.node("Mul", &[g, &inv_mean], vec![]);
    let e_sum = e.node("Add", &[&ex, &er], vec![]);
    let e_mean = e.node("Mul", &[&e_sum, &half], vec![]);
    let inv_diff = e.node("Sub", &[&inv_x, &inv_r], vec![]);
    let contribution = e.node("Mul", &[&e_mean, &inv_diff], vec![]);
    let contribution = e.node("Mul", &[g, &contribution], vec![]);
    let contribution = e.node("ReduceSum", &[&contribution, &axes], keep());
    let ds = e.node("Sub", &[&sx, &sr], vec![]);
    let no_multiplier = e.node("Mul", &[&contribution, &zero], vec![]);
    let m_s = guarded_ratio(e, &contribution, &ds, ROUTE_EPSILON, &no_multiplier);
    // s = ReduceSum(e) is linear: its multiplier spreads back over the axis.
    let m_e = e.node("Add", &[&m_e, &m_s], vec![]);
    // e = Exp(c): rescale, with the gradient e_x where c barely moves.
    let dc = e.node("Sub", &[&cx, &cr], vec![]);
    let de = e.node("Sub", &[&ex, &er], vec![]);
    let scaled = e.node("Mul", &[&m_e, &de], vec![]);
    let plain = e.node("Mul", &[&m_e, &ex], vec![]);
    let m_c = guarded_ratio(e, &scaled, &dc, RESCALE_EPSILON, &plain);
    // c = z − max(z): rescaled elementwise from z to c, as shap's TensorFlow backend does.
    let dz = e.node("Sub", &[&zx, &zr], vec![]);
    let scaled = e.node("Mul", &[&m_c, &dc], vec![]);
    Ok(guarded_ratio(e, &scaled, &dz, RESCALE_EPSILON, &m_c))
}

/// MaxPool: each output's difference goes to the argmax of x (the part above the reference's
/// maximum) and of r (the part below), added up at those positions, divided by Δx.
fn max_pool(e: &mut Emitter<'_>, node: &NodeProto, g: &str, reference: &dyn Fn(&str) -> String) -> Result<String, CompileError> {
    if node.attr_int("storage_order").unwrap_or(0) != 0 {
        return Err(form(node, "storage_order 1 is not supported"));
    }
    if node.attr_string("auto_pad").is_some_and(|p| p != "NOTSET") {
        return Err(form(node, "auto_pad is not supported; export with explicit pads"));
    }
    let attrs: Vec<AttributeProto> = node
        .attribute
        .iter()
        .filter(|a| ["ceil_mode", "dilations", "kernel_shape", "pads", "strides"].contains(&a.name()))
        .cloned()
        .collect();
    let (xx, xr) = (node.input[0].clone(), reference(&node.input[0]));
    let (yx, yr) = (node.output[0].clone(), reference(&node.output[0]));
    // Indices are flat over the whole batch, so the input side needs all its rows here.
    let full_shape = e.shape(&xx);
    let xx_full = e.node("Expand", &[&xx, &full_shape], vec![]);
    let index_x = e.builder().add_node_multi("MaxPool", &[&xx_full], 2, attrs.clone()).swap_remove(1);
    let index_r = e.builder().add_node_multi("MaxPool", &[&xr], 2, attrs).swap_remove(1);
    let top = e.node("Max", &[&yx, &yr], vec![]);
    let above = e.node("Sub", &[&top, &yr], vec![]);
    let below = e.node("Sub", &[&yx, &top], vec![]);
    let to_x = e.node("Mul", &[g, &above], vec![]);
    let to_r = e.node("Mul", &[g, &below], vec![]);
    let flat = e.ints(&[-1]);
    let count = e.size(&xx);
    let mut routed = e.flat_zeros(&count);
    for (indices, values) in [(index_x, to_x), (index_r, to_r)] {
        let indices = e.node("Reshape", &[&indices, &flat], vec![]);
        let values = e.node("Reshape", &[&values, &flat], vec![]);
        routed = e.node(
            "ScatterElements",
            &[&routed, &indices, &values],
            vec![AttributeProto::int("axis", 0), AttributeProto::string("reduction", "add")],
        );
    }
    let shape = e.shape(&xx);
    let routed = e.node("Reshape", &[&routed, &shape], vec![]);
    let dx = e.node("Sub", &[&xx, &xr], vec![]);
    let zeros = e.zeros_like(&routed);
    Ok(guarded_ratio(e, &routed, &dx, ROUTE_EPSILON, &zeros))
}
