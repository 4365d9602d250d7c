//! Models cut at a layer: the layer's value given from outside instead of computed.
//!
//! Attribution at a layer along a path between two of its values (captum's
//! `LayerIntegratedGradients`: the path runs between the embeddings of two token sequences)
//! needs the model evaluated at layer values that no input produces. [`feed_layer`] makes the
//! layer a graph input: its producing node now writes a value nobody reads, and everything
//! that only served to compute it (the embedding lookup, and the token-id input when nothing
//! else reads it) is pruned, so the cut model's inputs are the layer and the inputs the rest of
//! the model still reads (an attention mask). [`expose_layer`] is the other half: the
//! unchanged model with the layer as an extra output, to read a layer's value for given inputs.

use crate::CompileError;
use explaind_onnx::proto::tensor_proto::DataType;
use explaind_onnx::{ModelProto, ValueInfoProto};
use std::collections::HashSet;

/// `model` with tensor `layer` as a float32 graph input (declared with the rank the file
/// tells, when it tells one), and the nodes and inputs that only computed it removed. The
/// other graph inputs keep their order; the layer comes last.
pub fn feed_layer(model: &ModelProto, layer: &str) -> Result<ModelProto, CompileError> {
    let mut model = model.clone();
    let graph = model.graph.as_mut().ok_or(CompileError::NoGraph)?;
    if graph.input.iter().any(|i| i.name() == layer) {
        return Ok(model);
    }
    let ranks = crate::layers::tensor_ranks(graph);
    let producer = graph.node.iter_mut().find(|n| n.output.iter().any(|o| o == layer));
    let Some(producer) = producer else { return Err(CompileError::UnknownTensor(layer.to_string())) };
    // The producer keeps running only if something else reads its other outputs; its write of
    // the layer goes nowhere.
    for output in producer.output.iter_mut().filter(|o| o.as_str() == layer) {
        output.clear();
    }
    let shape = ranks.get(layer).map(|&rank| (0..rank).map(|axis| format!("{layer}_axis{axis}").into()).collect::<Vec<_>>());
    graph.input.push(match shape {
        Some(shape) => explaind_onnx::tensor_value_info(layer, DataType::Float, shape),
        None => float_of_unknown_rank(layer),
    });
    prune(graph);
    Ok(model)
}

/// `model` with tensor `layer` added to its outputs (float32), to read its value.
pub fn expose_layer(model: &ModelProto, layer: &str) -> Result<ModelProto, CompileError> {
    let mut model = model.clone();
    let graph = model.graph.as_mut().ok_or(CompileError::NoGraph)?;
    let known = graph.input.iter().any(|i| i.name() == layer) || graph.node.iter().any(|n| n.output.iter().any(|o| o == layer));
    if !known {
        return Err(CompileError::UnknownTensor(layer.to_string()));
    }
    if !graph.output.iter().any(|o| o.name() == layer) {
        graph.output.push(float_of_unknown_rank(layer));
    }
    Ok(model)
}

fn float_of_unknown_rank(name: &str) -> ValueInfoProto {
    let mut info = explaind_onnx::tensor_value_info(name, DataType::Float, std::iter::empty());
    if let Some(explaind_onnx::proto::type_proto::Value::TensorType(tensor)) = info.r#type.as_mut().and_then(|t| t.value.as_mut())
    {
        tensor.shape = None;
    }
    info
}

/// Removes the nodes no graph output depends on, and the graph inputs no remaining node
/// reads.
fn prune(graph: &mut explaind_onnx::GraphProto) {
    let mut live: HashSet<String> = graph.output.iter().map(|o| o.name().to_string()).collect();
    let mut keep = vec![false; graph.node.len()];
    for (i, node) in graph.node.iter().enumerate().rev() {
        if node.output.iter().any(|o| !o.is_empty() && live.contains(o)) {
            keep[i] = true;
            live.extend(node.input.iter().filter(|n| !n.is_empty()).cloned());
        }
    }
    let mut kept = keep.into_iter();
    graph.node.retain(|_| kept.next().unwrap_or(false));
    graph.input.retain(|i| live.contains(i.name()));
    graph.initializer.retain(|t| live.contains(t.name()));
}

#[cfg(test)]
mod tests {
    use super::*;
    use explaind_onnx::{Dim, GraphBuilder};

    /// ids [B, 3] -> Gather(table) -> emb [B, 3, 2] -> Mul by mask -> ReduceSum -> y
    fn embedding_model() -> ModelProto {
        let mut b = GraphBuilder::new("embed");
        b.add_input("ids", DataType::Int64, [Dim::from("batch"), Dim::Value(3)]);
        b.add_input("mask", DataType::Float, [Dim::from("batch"), Dim::Value(3), Dim::Value(1)]);
        let table = b.add_initializer(explaind_onnx::tensor_f32("table", &[4, 2], &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]));
        let emb = b.add_node("Gather", &[table.as_str(), "ids"], vec![]);
        let masked = b.add_node("Mul", &[emb.as_str(), "mask"], vec![]);
        let y = b.add_node("ReduceSum", &[masked.as_str()], vec![explaind_onnx::AttributeProto::int("keepdims", 0)]);
        b.add_output(&y, [Dim::from("batch")]);
        ModelProto::new(b.finish(), &[("", 17)])
    }

    #[test]
    fn the_fed_model_reads_the_layer_and_not_what_computed_it() {
        let model = embedding_model();
        let emb = model.graph.as_ref().unwrap().node[0].output[0].clone();
        let fed = feed_layer(&model, &emb).unwrap();
        let graph = fed.graph.as_ref().unwrap();
        let inputs: Vec<&str> = graph.input.iter().map(|i| i.name()).collect();
        assert_eq!(inputs, ["mask", emb.as_str()], "ids only fed the lookup; the layer comes last");
        assert!(graph.node.iter().all(|n| n.op_type() != "Gather"), "the lookup is pruned");
        assert!(graph.initializer.is_empty(), "and its table");
        assert_eq!(graph.input[1].tensor_shape().map(|s| s.len()), Some(3), "the rank the file tells");

        let exposed = expose_layer(&model, &emb).unwrap();
        let outputs: Vec<&str> = exposed.graph.as_ref().unwrap().output.iter().map(|o| o.name()).collect();
        assert_eq!(outputs.last(), Some(&emb.as_str()));

        assert_eq!(feed_layer(&model, "nothing"), Err(CompileError::UnknownTensor("nothing".into())));
        assert_eq!(expose_layer(&model, "nothing"), Err(CompileError::UnknownTensor("nothing".into())));
    }
}
