//! Shape and indexing: `Flatten`, `Reshape`, `Squeeze`, `Unsqueeze`, `Transpose`, `Concat`,
//! `Split`, `Pad` (constant mode), `Slice`, `Gather`, `GatherElements`, `Expand`, `Tile`,
//! `Where` (the condition carries no gradient), and `Constant` (which carries no gradient).

use super::{Emitter, VjpResult, VjpRule, copy_attrs, form, input as x, no_gradients};
use explaind_onnx::{AttributeProto, NodeProto};

pub(crate) const RULES: &[(&str, VjpRule)] = &[
    ("Flatten", reshape),
    ("Reshape", reshape),
    ("Squeeze", reshape),
    ("Unsqueeze", reshape),
    ("Transpose", transpose),
    ("Concat", concat),
    ("Pad", pad),
    ("Slice", slice_gather),
    ("Gather", slice_gather),
    ("GatherElements", slice_gather),
    ("Expand", expand),
    ("Tile", tile),
    ("Split", split_first),
    ("Where", where_),
    ("Constant", constant),
];

fn reshape(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, _: &[bool]) -> VjpResult {
    let mut out = no_gradients(node);
    let shape = e.shape(x(node, 0));
    out[0] = Some(e.node("Reshape", &[g0, &shape], vec![]));
    Ok(out)
}

fn transpose(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, _: &[bool]) -> VjpResult {
    let mut out = no_gradients(node);
    let attrs = match node.attr_ints("perm") {
        Some(perm) => {
            let mut inverse = vec![0i64; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inverse[p as usize] = i as i64;
            }
            vec![AttributeProto::ints("perm", inverse)]
        }
        // Without perm the axes are reversed, which is its own inverse.
        None => vec![],
    };
    out[0] = Some(e.node("Transpose", &[g0], attrs));
    Ok(out)
}

fn concat(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, varies: &[bool]) -> VjpResult {
    let mut out = no_gradients(node);
    let n = node.input.len();
    let axis = node.attr_int("axis").ok_or_else(|| form(node, "axis is missing"))?;
    let index = e.ints(&[axis]);
    let mut sizes = Vec::new();
    for i in 0..n {
        let shape = e.shape(x(node, i));
        sizes.push(e.node("Gather", &[&shape, &index], vec![AttributeProto::int("axis", 0)]));
    }
    let refs: Vec<&str> = sizes.iter().map(String::as_str).collect();
    let split = e.node("Concat", &refs, vec![AttributeProto::int("axis", 0)]);
    let parts = e.builder().add_node_multi("Split", &[g0, &split], n, vec![AttributeProto::int("axis", axis)]);
    for (i, part) in parts.into_iter().enumerate() {
        if varies[i] {
            out[i] = Some(part);
        }
    }
    Ok(out)
}

fn pad(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, _: &[bool]) -> VjpResult {
    let mut out = no_gradients(node);
    if node.attr_string("mode").is_some_and(|m| m != "constant") {
        return Err(form(node, "only constant padding is supported"));
    }
    if node.input.len() > 3 && !x(node, 3).is_empty() {
        return Err(form(node, "the axes input is not supported yet"));
    }
    let pads = e.constant_ints(x(node, 1)).ok_or_else(|| form(node, "pads must be a constant"))?;
    let begins = &pads[..pads.len() / 2];
    if pads.iter().any(|&p| p < 0) {
        return Err(form(node, "negative pads (cropping) are not supported yet"));
    }
    let starts = e.ints(begins);
    let shape = e.shape(x(node, 0));
    let ends = e.node("Add", &[&starts, &shape], vec![]);
    out[0] = Some(e.node("Slice", &[g0, &starts, &ends], vec![]));
    Ok(out)
}

fn slice_gather(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, _: &[bool]) -> VjpResult {
    let mut out = no_gradients(node);
    // Apply the same Slice/Gather to a tensor of x's flat positions, then scatter-add the
    // gradient to those positions: exact for any starts, ends, steps, negative or
    // repeated indices, with no shape known in advance.
    let shape = e.shape(x(node, 0));
    let count = e.size(x(node, 0));
    let positions = e.range(&count);
    let positions = e.node("Reshape", &[&positions, &shape], vec![]);
    let mut inputs: Vec<&str> = vec![&positions];
    inputs.extend(node.input[1..].iter().map(String::as_str));
    let picked = e.node(node.op_type(), &inputs, copy_attrs(node, &["axis"]));
    let flat = e.ints(&[-1]);
    let picked = e.node("Reshape", &[&picked, &flat], vec![]);
    let values = e.node("Reshape", &[g0, &flat], vec![]);
    let zeros = e.flat_zeros(&count);
    let routed = e.node(
        "ScatterElements",
        &[&zeros, &picked, &values],
        vec![AttributeProto::int("axis", 0), AttributeProto::string("reduction", "add")],
    );
    out[0] = Some(e.node("Reshape", &[&routed, &shape], vec![]));
    Ok(out)
}

fn constant(_: &mut Emitter<'_>, node: &NodeProto, _: &str, _: &[bool]) -> VjpResult {
    Ok(no_gradients(node))
}

fn expand(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, _: &[bool]) -> VjpResult {
    let mut out = no_gradients(node);
    out[0] = Some(e.unbroadcast(g0, x(node, 0)));
    Ok(out)
}

/// The sum of the tiles: the gradient viewed as [r0, d0, r1, d1, ...] (repeats interleaved
/// with x's sizes) and summed over the repeat axes.
fn tile(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, _: &[bool]) -> VjpResult {
    let mut out = no_gradients(node);
    let rank = e
        .constant_ints(x(node, 1))
        .map(|r| r.len())
        .or_else(|| e.rank(x(node, 0)))
        .ok_or_else(|| form(node, "the repeats are not constant and the rank of the input is not declared"))?;
    let shape = e.shape(x(node, 0));
    let column = e.ints(&[1]);
    let repeats = e.node("Unsqueeze", &[x(node, 1), &column], vec![]);
    let sizes = e.node("Unsqueeze", &[&shape, &column], vec![]);
    let pairs = e.node("Concat", &[&repeats, &sizes], vec![AttributeProto::int("axis", 1)]);
    let flat = e.ints(&[-1]);
    let interleaved = e.node("Reshape", &[&pairs, &flat], vec![]);
    let viewed = e.node("Reshape", &[g0, &interleaved], vec![]);
    let axes: Vec<i64> = (0..rank as i64).map(|a| 2 * a).collect();
    let axes = e.ints(&axes);
    out[0] = Some(e.node("ReduceSum", &[&viewed, &axes], vec![AttributeProto::int("keepdims", 0)]));
    Ok(out)
}

/// `Split` through the table (the first output's gradient alone); [`super::vjp`] calls
/// [`split`] with every output's.
fn split_first(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, varies: &[bool]) -> VjpResult {
    let mut g = vec![None; node.output.len()];
    g[0] = Some(g0.to_string());
    split(e, node, &g, varies)
}

/// `Split` (sizes as an input, or equal parts by the number of outputs or `num_outputs`): the
/// output gradients concatenated along the axis, zeros for outputs no gradient reached.
pub(crate) fn split(e: &mut Emitter<'_>, node: &NodeProto, g: &[Option<String>], _: &[bool]) -> VjpResult {
    let mut out = no_gradients(node);
    if g.iter().all(Option::is_none) {
        return Ok(out);
    }
    let axis = node.attr_int("axis").unwrap_or(0);
    let mut parts = Vec::new();
    for (k, name) in node.output.iter().enumerate() {
        parts.push(match g.get(k).cloned().flatten() {
            Some(grad) => grad,
            None => e.zeros_like(name),
        });
    }
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    out[0] = Some(e.node("Concat", &refs, vec![AttributeProto::int("axis", axis)]));
    Ok(out)
}

/// `Where(condition, a, b)`: the gradient goes to `a` where the condition holds and to `b`
/// elsewhere (the condition, a boolean, carries none), summed over broadcast axes.
fn where_(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, varies: &[bool]) -> VjpResult {
    let mut out = no_gradients(node);
    let mask = e.float_mask(x(node, 0));
    if varies[1] {
        let p = e.node("Mul", &[g0, &mask], vec![]);
        // The gradient has the output's shape, which the condition broadcasts into.
        out[1] = Some(e.unbroadcast_to_input(&p, node, 1));
    }
    if varies[2] {
        let one = e.scalar(1.0);
        let other = e.node("Sub", &[&one, &mask], vec![]);
        let p = e.node("Mul", &[g0, &other], vec![]);
        out[2] = Some(e.unbroadcast_to_input(&p, node, 2));
    }
    Ok(out)
}
