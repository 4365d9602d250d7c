//! Reverse-mode differentiation of an ONNX graph.

use crate::rules::{Emitter, vjp};
use crate::{CompileError, UnsupportedNode};
use explaind_onnx::proto::tensor_proto::DataType;
use explaind_onnx::proto::{TypeProto, type_proto};
use explaind_onnx::{GraphBuilder, GraphProto, ModelProto, NodeProto, ValueInfoProto, is_default_domain};
use std::collections::{HashMap, HashSet};

/// What to differentiate.
#[derive(Debug, Clone, Default)]
pub struct GradientRequest {
    /// Model outputs to differentiate. Each gets a seed input named `<output>__seed`.
    pub outputs: Vec<String>,
    /// Tensors (model inputs or intermediate values) to differentiate with respect to. Each
    /// gradient becomes an output named `<tensor>__grad`.
    pub wrt: Vec<String>,
    /// Intermediate tensors to expose as outputs under their own names.
    pub expose: Vec<String>,
    /// How max-pool gradients find each window's maximum.
    pub max_pool_indices: crate::MaxPoolIndices,
}

/// A compiled gradient model and the names of what it added.
#[derive(Debug, Clone)]
pub struct CompiledGradient {
    pub model: ModelProto,
    /// Seed input per differentiated output, in the request's order.
    pub seeds: Vec<String>,
    /// Gradient output per `wrt` tensor, in the request's order.
    pub gradients: Vec<String>,
}

/// Operators whose outputs never carry a gradient (integer or shape results, comparisons).
const NON_DIFFERENTIABLE: &[&str] = &[
    "Shape",
    "Size",
    "ConstantOfShape",
    "Range",
    "NonZero",
    "ArgMax",
    "ArgMin",
    "Equal",
    "Greater",
    "GreaterOrEqual",
    "Less",
    "LessOrEqual",
    "Not",
    "And",
    "Or",
    "Xor",
    "IsNaN",
    "IsInf",
    "Sign",
    "Floor",
    "Ceil",
    "Round",
    "EyeLike",
    "RandomNormalLike",
    "RandomUniformLike",
];

/// Differentiates `model` as `request` asks. See the crate documentation for the result.
pub fn compile_gradient(model: &ModelProto, request: &GradientRequest) -> Result<CompiledGradient, CompileError> {
    let lowered = crate::lower::lower_leniently(model)?;
    let model = lowered.model.as_ref().unwrap_or(model);
    let graph = model.graph.as_ref().ok_or(CompileError::NoGraph)?;
    let opset = check_opset(model)?;
    let Analysis { varying, on_path } = analyse(graph, &request.wrt, &request.outputs, &request.expose)?;
    lowered.check(&on_path)?;

    let mut builder = GraphBuilder::from_graph(graph.clone());
    // The backward pass may use operators newer than the model's opset (ScatterElements with
    // reduction needs 16); the operators explaind compiles keep their meaning from 13 on.
    let target_opset = opset.max(17);

    // Seeds, shaped like their outputs.
    let mut seeds = Vec::new();
    let mut grads: HashMap<String, Vec<String>> = HashMap::new();
    for output in &request.outputs {
        let info = graph.output.iter().find(|o| o.name() == output).expect("checked above");
        let seed = builder.fresh_name(&format!("{output}__seed"));
        let mut seed_info = info.clone();
        seed_info.name = Some(seed.clone());
        builder.graph_mut().input.push(seed_info);
        grads.entry(output.clone()).or_default().push(seed.clone());
        seeds.push(seed);
    }

    let mut emit = Emitter::new(&mut builder, graph, target_opset);
    emit.set_max_pool_indices(request.max_pool_indices);
    backward_sweep(&mut emit, graph, &on_path, &varying, &mut grads, &mut |emit, node, output_grads, varies| {
        vjp(emit, node, output_grads, varies)
    })?;
    // Outputs: gradients (zeros where a tensor does not reach any differentiated output).
    let gradients = emit_sums_as_outputs(&mut emit, &request.wrt, &grads, "grad");
    for tensor in &request.expose {
        if !graph.output.iter().any(|o| o.name() == tensor) {
            emit.builder().graph_mut().output.push(float_output(tensor));
        }
    }

    let mut compiled = model.clone();
    compiled.graph = Some(builder.finish());
    for import in &mut compiled.opset_import {
        if is_default_domain(import.domain()) {
            import.version = Some(target_opset);
        }
    }
    Ok(CompiledGradient { model: compiled, seeds, gradients })
}

/// The vector-Jacobian rule of one node: given its output gradients and which inputs vary,
/// one gradient (or multiplier) per input.
pub(crate) type Rule<'r> =
    dyn FnMut(&mut Emitter<'_>, &NodeProto, &[Option<String>], &[bool]) -> Result<Vec<Option<String>>, CompileError> + 'r;

/// Walks the nodes on the path backwards, summing each value's incoming contributions and
/// applying `rule` to every node some gradient reaches; contributions to inputs accumulate in
/// `grads`.
///
/// An operator without a rule does not stop the walk: it is noted (one node per operator),
/// the walk goes on as if its inputs' gradients were zero, so that every operator without a
/// rule further up is found too, and the error names them all.
pub(crate) fn backward_sweep(
    emit: &mut Emitter<'_>,
    graph: &GraphProto,
    on_path: &[bool],
    varying: &HashSet<String>,
    grads: &mut HashMap<String, Vec<String>>,
    rule: &mut Rule<'_>,
) -> Result<(), CompileError> {
    let mut unsupported: Vec<UnsupportedNode> = Vec::new();
    for (index, node) in graph.node.iter().enumerate().rev() {
        if !on_path[index] {
            continue;
        }
        let output_grads: Vec<Option<String>> = node.output.iter().map(|o| grads.get(o).map(|parts| emit.sum(parts))).collect();
        if output_grads.iter().all(Option::is_none) {
            continue;
        }
        let varies: Vec<bool> = node.input.iter().map(|i| !i.is_empty() && varying.contains(i)).collect();
        let input_grads = match rule(emit, node, &output_grads, &varies) {
            Err(CompileError::UnsupportedOp { op_type, node: name }) => {
                if !unsupported.iter().any(|u| u.op_type == op_type) {
                    unsupported.push(UnsupportedNode { op_type, node: name });
                }
                // Stand-ins, so the walk reaches the nodes above; the graph is discarded.
                node.input.iter().zip(&varies).map(|(input, &v)| v.then(|| emit.zeros_like(input))).collect()
            }
            result => result?,
        };
        for ((input, grad), varies) in node.input.iter().zip(input_grads).zip(&varies) {
            if let (Some(grad), true) = (grad, varies) {
                grads.entry(input.clone()).or_default().push(grad);
            }
        }
    }
    // Found walking backwards: name them in graph order.
    unsupported.reverse();
    match unsupported.len() {
        0 => Ok(()),
        1 => {
            let UnsupportedNode { op_type, node } = unsupported.remove(0);
            Err(CompileError::UnsupportedOp { op_type, node })
        }
        _ => Err(CompileError::UnsupportedOps(unsupported)),
    }
}

/// Adds a graph output `<tensor>__<suffix>` per tensor holding the sum of its contributions
/// (zeros where none reached it); returns the output names.
pub(crate) fn emit_sums_as_outputs(
    emit: &mut Emitter<'_>,
    tensors: &[String],
    grads: &HashMap<String, Vec<String>>,
    suffix: &str,
) -> Vec<String> {
    let mut names = Vec::new();
    for tensor in tensors {
        let value = match grads.get(tensor) {
            Some(parts) => emit.sum(parts),
            None => emit.zeros_like(tensor),
        };
        let name = emit.builder().fresh_name(&format!("{tensor}__{suffix}"));
        let node_name = emit.builder().fresh_name(&format!("{suffix}_output"));
        emit.builder().graph_mut().node.push(NodeProto {
            input: vec![value],
            output: vec![name.clone()],
            name: Some(node_name),
            op_type: Some("Identity".into()),
            ..Default::default()
        });
        emit.builder().graph_mut().output.push(float_output(&name));
        names.push(name);
    }
    names
}

/// The model's default-domain opset, if the compiler can work with it.
pub(crate) fn check_opset(model: &ModelProto) -> Result<i64, CompileError> {
    let opset = model.default_opset().unwrap_or(0);
    if opset < 13 { Err(CompileError::OldOpset(opset)) } else { Ok(opset) }
}

/// Which values vary with the inputs of interest, and which nodes lie between them and the
/// outputs of interest.
pub(crate) struct Analysis {
    /// Values that depend on a `wrt` tensor through differentiable operators.
    pub varying: HashSet<String>,
    /// Per node: whether it lies on a path from a `wrt` tensor to one of the outputs.
    pub on_path: Vec<bool>,
}

pub(crate) fn analyse(
    graph: &GraphProto,
    wrt: &[String],
    outputs: &[String],
    expose: &[String],
) -> Result<Analysis, CompileError> {
    // Every tensor name the graph knows, to validate the request.
    let mut known: HashSet<&str> = graph.input.iter().map(|v| v.name()).collect();
    known.extend(graph.initializer.iter().map(|t| t.name()));
    for node in &graph.node {
        known.extend(node.output.iter().map(String::as_str));
    }
    for name in wrt.iter().chain(expose) {
        if !known.contains(name.as_str()) {
            return Err(CompileError::UnknownTensor(name.clone()));
        }
    }
    for name in outputs {
        if !graph.output.iter().any(|o| o.name() == name) {
            return Err(CompileError::NotAnOutput(name.clone()));
        }
    }

    let mut varying: HashSet<String> = wrt.iter().cloned().collect();
    for node in &graph.node {
        if passes_gradients(node) && node.input.iter().any(|i| varying.contains(i)) {
            // Shape-like outputs of multi-output ops (MaxPool's Indices) are cut by the rules.
            varying.extend(node.output.iter().filter(|o| !o.is_empty()).cloned());
        }
    }

    let mut wanted: HashSet<String> = outputs.iter().filter(|o| varying.contains(*o)).cloned().collect();
    let mut on_path = vec![false; graph.node.len()];
    for (index, node) in graph.node.iter().enumerate().rev() {
        // A gradient reaching an operator without one (a `wrt` tensor computed by `Floor`)
        // stops there: zero for its inputs.
        let gradient_free =
            is_default_domain(node.domain()) && (NON_DIFFERENTIABLE.contains(&node.op_type()) || casts_to_integer(node));
        if !gradient_free && node.output.iter().any(|o| wanted.contains(o)) && node.input.iter().any(|i| varying.contains(i)) {
            on_path[index] = true;
            wanted.extend(node.input.iter().filter(|i| varying.contains(*i)).cloned());
        }
    }
    Ok(Analysis { varying, on_path })
}

/// Whether gradients may flow through `node` from its outputs to its inputs: any operator but
/// the default domain's in [`NON_DIFFERENTIABLE`] and casts to an integer type. Another
/// domain's operators count as passing, so that one between the inputs and the outputs is on
/// the gradient path and refused there (it has no rule), never a silent zero gradient.
fn passes_gradients(node: &NodeProto) -> bool {
    !is_default_domain(node.domain()) || (!NON_DIFFERENTIABLE.contains(&node.op_type()) && !casts_to_integer(node))
}

/// Whether `node` is a `Cast` to a type that carries no gradient (integers, booleans): what
/// follows it is an integer path (indices, shapes, masks).
fn casts_to_integer(node: &NodeProto) -> bool {
    let float_types = [DataType::Float as i64, DataType::Double as i64, DataType::Float16 as i64, DataType::Bfloat16 as i64];
    node.op_type() == "Cast" && node.attr_int("to").is_some_and(|to| !float_types.contains(&to))
}

/// A float tensor output of unknown shape (ONNX Runtime fills it in at run time).
pub(crate) fn float_output(name: &str) -> ValueInfoProto {
    let tensor = type_proto::Tensor { elem_type: Some(DataType::Float as i32), shape: None };
    ValueInfoProto {
        name: Some(name.to_string()),
        r#type: Some(TypeProto { value: Some(type_proto::Value::TensorType(tensor)), denotation: None }),
        ..Default::default()
    }
}
