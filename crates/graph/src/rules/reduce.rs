//! Reductions: `ReduceSum` and `ReduceMean` (axes as an attribute before opset 18, as a
//! constant input from 18; `ReduceSum`'s an input from 13), `ReduceMax` and `ReduceMin` (the
//! gradient spread equally over the elements that tie for the extreme), and `ReduceLogSumExp`
//! (the gradient times the softmax over the reduced axes). `ReduceSumSquare` and `ReduceL2` are
//! lowered ([`crate::lower`]).

use super::{Emitter, VjpResult, VjpRule, form, input as x, no_gradients, output};
use explaind_onnx::proto::tensor_proto::DataType;
use explaind_onnx::{AttributeProto, NodeProto};

pub(crate) const RULES: &[(&str, VjpRule)] = &[
    ("ReduceSum", reduce_sum_mean),
    ("ReduceMean", reduce_sum_mean),
    ("ReduceMax", reduce_max_min),
    ("ReduceMin", reduce_max_min),
    ("ReduceLogSumExp", reduce_log_sum_exp),
];

/// The reduced axes: the attribute (before opset 18), the constant input (from 18, or 13 for
/// `ReduceSum`), or `None` (every axis).
pub(crate) fn reduced_axes(e: &Emitter<'_>, node: &NodeProto) -> Result<Option<Vec<i64>>, crate::CompileError> {
    let n = node.input.len();
    Ok(match node.attr_ints("axes") {
        Some(a) => Some(a.to_vec()),
        None if n > 1 && !x(node, 1).is_empty() => {
            Some(e.constant_ints(x(node, 1)).ok_or_else(|| form(node, "axes must be a constant"))?)
        }
        None => None,
    })
}

/// A reduced value (the gradient, or the output) with the reduced axes kept (size 1), so that
/// it broadcasts against the input; and whether the node reduces nothing (empty axes with
/// `noop_with_empty_axes`).
pub(crate) fn with_kept_axes(e: &mut Emitter<'_>, node: &NodeProto, value: &str) -> Result<(String, bool), crate::CompileError> {
    let keepdims = node.attr_int("keepdims").unwrap_or(1) != 0;
    let axes = reduced_axes(e, node)?;
    let empty_is_noop = node.attr_int("noop_with_empty_axes").unwrap_or(0) != 0;
    if axes.as_deref().is_none_or(|a| a.is_empty()) && empty_is_noop {
        return Ok((value.to_string(), true));
    }
    if !keepdims && let Some(axes) = axes.as_ref().filter(|a| !a.is_empty()) {
        let axes = e.ints(axes);
        return Ok((e.node("Unsqueeze", &[value, &axes], vec![]), false));
    }
    // keepdims, or every axis reduced to a scalar (which broadcasts as it is).
    Ok((value.to_string(), false))
}

/// `ReduceSum` over the node's axes (every axis when it has none), keeping them.
pub(crate) fn sum_over_reduced(e: &mut Emitter<'_>, node: &NodeProto, value: &str) -> Result<String, crate::CompileError> {
    let keep = AttributeProto::int("keepdims", 1);
    Ok(match reduced_axes(e, node)?.filter(|a| !a.is_empty()) {
        Some(axes) => {
            let axes = e.ints(&axes);
            e.node("ReduceSum", &[value, &axes], vec![keep])
        }
        None => e.node("ReduceSum", &[value], vec![keep]),
    })
}

/// `ReduceMax`/`ReduceMin`: the gradient goes to the elements equal to the extreme, split
/// equally between them when several tie (the mean of the one-sided derivatives, and what
/// makes the rule symmetric in the tied elements).
fn reduce_max_min(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, _: &[bool]) -> VjpResult {
    let mut out = no_gradients(node);
    let (g, noop) = with_kept_axes(e, node, g0)?;
    if noop {
        out[0] = Some(g);
        return Ok(out);
    }
    let (y, _) = with_kept_axes(e, node, output(node))?;
    let hit = e.node("Equal", &[x(node, 0), &y], vec![]);
    let mask = e.float_mask(&hit);
    let ties = sum_over_reduced(e, node, &mask)?;
    let share = e.node("Div", &[&mask, &ties], vec![]);
    out[0] = Some(e.node("Mul", &[&g, &share], vec![]));
    Ok(out)
}

/// `ReduceLogSumExp`: y = log Σ exp(x), dy/dx = exp(x − y), the softmax over the reduced axes.
fn reduce_log_sum_exp(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, _: &[bool]) -> VjpResult {
    let mut out = no_gradients(node);
    let (g, noop) = with_kept_axes(e, node, g0)?;
    if noop {
        return Err(form(node, "noop_with_empty_axes with no axes is not supported"));
    }
    let (y, _) = with_kept_axes(e, node, output(node))?;
    let centred = e.node("Sub", &[x(node, 0), &y], vec![]);
    let softmax = e.node("Exp", &[&centred], vec![]);
    out[0] = Some(e.node("Mul", &[&g, &softmax], vec![]));
    Ok(out)
}

fn reduce_sum_mean(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, _: &[bool]) -> VjpResult {
    let mut out = no_gradients(node);
    let n = node.input.len();
    let keepdims = node.attr_int("keepdims").unwrap_or(1) != 0;
    let axes = match node.attr_ints("axes") {
        Some(a) => Some(a.to_vec()),
        None if n > 1 && !x(node, 1).is_empty() => {
            Some(e.constant_ints(x(node, 1)).ok_or_else(|| form(node, "axes must be a constant"))?)
        }
        None => None,
    };
    let empty_is_noop = node.attr_int("noop_with_empty_axes").unwrap_or(0) != 0;
    if axes.as_deref() == Some(&[]) && empty_is_noop {
        out[0] = Some(g0.to_string());
        return Ok(out);
    }
    let mut spread_from = g0.to_string();
    if !keepdims && let Some(axes) = axes.as_ref().filter(|a| !a.is_empty()) {
        let axes = e.ints(axes);
        spread_from = e.node("Unsqueeze", &[g0, &axes], vec![]);
    }
    let shape = e.shape(x(node, 0));
    let spread = e.node("Expand", &[&spread_from, &shape], vec![]);
    out[0] = Some(if node.op_type() == "ReduceMean" {
        let total = e.node("Size", &[x(node, 0)], vec![]);
        let kept = e.node("Size", &[output(node)], vec![]);
        let count = e.node("Div", &[&total, &kept], vec![]);
        let count = e.node("Cast", &[&count], vec![AttributeProto::int("to", DataType::Float as i64)]);
        e.node("Div", &[&spread, &count], vec![])
    } else {
        spread
    });
    Ok(out)
}
