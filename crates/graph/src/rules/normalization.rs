//! Normalisation: `BatchNormalization` (inference form), `Softmax` and `LogSoftmax`.
//! (`LayerNormalization` is lowered to primitives first: [`crate::lower`].)

use super::{Emitter, VjpResult, VjpRule, copy_attrs, form, input as x, no_gradients, output};
use explaind_onnx::{AttributeProto, NodeProto};

pub(crate) const RULES: &[(&str, VjpRule)] =
    &[("BatchNormalization", batch_normalization), ("Softmax", softmax), ("LogSoftmax", log_softmax)];

fn softmax(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, _: &[bool]) -> VjpResult {
    let mut out = no_gradients(node);
    let y = output(node);
    let axis = node.attr_int("axis").unwrap_or(-1);
    let axes = e.ints(&[axis]);
    let gy = e.node("Mul", &[g0, y], vec![]);
    let total = e.node("ReduceSum", &[&gy, &axes], vec![AttributeProto::int("keepdims", 1)]);
    let centred = e.node("Sub", &[g0, &total], vec![]);
    out[0] = Some(e.node("Mul", &[y, &centred], vec![]));
    Ok(out)
}

fn log_softmax(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, _: &[bool]) -> VjpResult {
    let mut out = no_gradients(node);
    let axis = node.attr_int("axis").unwrap_or(-1);
    let axes = e.ints(&[axis]);
    let total = e.node("ReduceSum", &[g0, &axes], vec![AttributeProto::int("keepdims", 1)]);
    let p = e.node("Exp", &[output(node)], vec![]);
    let p = e.node("Mul", &[&p, &total], vec![]);
    out[0] = Some(e.node("Sub", &[g0, &p], vec![]));
    Ok(out)
}

fn batch_normalization(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, varies: &[bool]) -> VjpResult {
    let mut out = no_gradients(node);
    if node.attr_int("training_mode").unwrap_or(0) != 0 {
        return Err(form(node, "training_mode 1 is not supported (export the model in eval mode)"));
    }
    if varies[1..].iter().any(|&v| v) {
        return Err(form(node, "scale, bias, mean and variance must be constants"));
    }
    // In inference BN is x · scale/√(var+ε) + const: the same op on g with zero bias and
    // zero mean computes g · scale/√(var+ε), broadcast on the channel axis for any rank.
    let zero_bias = e.zeros_like(x(node, 2));
    let zero_mean = e.zeros_like(x(node, 3));
    let attrs = copy_attrs(node, &["epsilon"]);
    out[0] = Some(e.node("BatchNormalization", &[g0, x(node, 1), &zero_bias, &zero_mean, x(node, 4)], attrs));
    Ok(out)
}
