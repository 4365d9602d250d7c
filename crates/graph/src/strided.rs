//! Strided views as torch's dynamo exporter writes them, turned back into transpositions.
//!
//! A `permute` (or `view`) the exporter cannot express directly becomes `aten::as_strided`,
//! which it exports as a `Gather` from the *flattened* tensor (batch axis included) with
//! indices `Σ_axis arange(size_axis) · stride_axis`, the batch term computed from a `Shape` at
//! run time (torchvision's ConvNeXt does this where its channel-last LayerNorm meets the
//! classifier). That graph is correct, but it makes rows depend on one another's positions:
//! DeepLIFT's backward pass, which lays rows out as (seed, reference) pairs, cannot run it.
//!
//! When the strides are a contiguous layout of the source tensor with its non-batch axes
//! permuted, and the batch stride is one row, the `Gather` is exactly a `Transpose` of the
//! source (or the source itself): it is rewritten so, node for node, before compiling. Every
//! other strided view (overlapping windows, offsets, strides that skip elements) is left alone
//! and keeps its `Gather` rule.

use explaind_onnx::{AttributeProto, GraphProto, ModelProto, NodeProto, is_default_domain};

/// `model` with every strided view that is a transposition rewritten, or `None` when it has
/// none.
pub(crate) fn rewrite_strided_views(model: &ModelProto) -> Option<ModelProto> {
    let graph = model.graph.as_ref()?;
    let rewrites: Vec<(usize, NodeProto)> =
        graph.node.iter().enumerate().filter_map(|(index, node)| as_transpose(graph, node).map(|n| (index, n))).collect();
    if rewrites.is_empty() {
        return None;
    }
    let mut rewritten = model.clone();
    let nodes = &mut rewritten.graph.as_mut().expect("checked above").node;
    for (index, node) in rewrites {
        nodes[index] = node;
    }
    Some(rewritten)
}

/// The `Transpose` (or `Identity`) that computes what `node` computes, when `node` is a
/// strided view that is a transposition of its source.
fn as_transpose(graph: &GraphProto, node: &NodeProto) -> Option<NodeProto> {
    if !is_default_domain(node.domain()) || node.op_type() != "Gather" || node.attr_int("axis").unwrap_or(0) != 0 {
        return None;
    }
    let (_, flatten) = graph.producer(node.input.first()?)?;
    if flatten.op_type() != "Reshape" || int_constant(graph, flatten.input.get(1)?)?.1 != [-1] {
        return None;
    }
    let source = flatten.input.first()?;
    let dims = static_row_dims(graph, source)?;
    let view = IndexSum::of(graph, node.input.get(1)?)?;
    let row_len: i64 = dims.iter().product();
    if view.batch_stride != Some(row_len) || view.shape.len() != dims.len() {
        return None;
    }
    let perm = transposition(&dims, &view)?;
    let mut rewritten = NodeProto {
        input: vec![source.clone()],
        output: node.output.clone(),
        name: node.name.clone(),
        op_type: Some("Identity".into()),
        ..Default::default()
    };
    if perm.iter().enumerate().any(|(axis, &p)| axis != p) {
        rewritten.op_type = Some("Transpose".into());
        let full: Vec<i64> = std::iter::once(0).chain(perm.iter().map(|&p| p as i64 + 1)).collect();
        rewritten.attribute = vec![AttributeProto::ints("perm", full)];
    }
    Some(rewritten)
}

/// The sizes of a value's axes after the first, when the file states them all.
fn static_row_dims(graph: &GraphProto, name: &str) -> Option<Vec<i64>> {
    let shape = graph.find_value_info(name)?.tensor_shape()?;
    shape.iter().skip(1).map(|d| if let Some(explaind_onnx::Dim::Value(v)) = d { Some(*v) } else { None }).collect()
}

/// An int64 constant: an initializer or a `Constant` node's value, as (dims, values).
fn int_constant(graph: &GraphProto, name: &str) -> Option<(Vec<i64>, Vec<i64>)> {
    graph.constant(name)?.to_i64().ok()
}

/// Indices of the form `Unsqueeze(arange(batch) · s) + c₁ + c₂ + …`: the batch stride `s`
/// and the constant terms summed, broadcast over the axes after the batch axis.
struct IndexSum {
    batch_stride: Option<i64>,
    /// The sizes of the view's axes after the batch axis.
    shape: Vec<i64>,
    /// Σ cₖ, row-major over `shape`.
    offsets: Vec<i64>,
}

/// Views with more elements per row than this are left alone (their index arithmetic is
/// checked element by element at compile time).
const MAX_TERM_ELEMENTS: usize = 1 << 20;

impl IndexSum {
    fn of(graph: &GraphProto, indices: &str) -> Option<IndexSum> {
        let mut batch: Option<(i64, usize)> = None;
        let mut constants = Vec::new();
        let mut pending = vec![indices.to_string()];
        while let Some(term) = pending.pop() {
            if let Some(constant) = int_constant(graph, &term) {
                constants.push(constant);
                continue;
            }
            let (_, producer) = graph.producer(&term)?;
            match producer.op_type() {
                "Add" => pending.extend(producer.input.iter().cloned()),
                "Unsqueeze" if batch.is_none() => batch = Some(batch_term(graph, producer)?),
                _ => return None,
            }
        }
        let (batch_stride, rank) = batch?;
        let mut sum = IndexSum { batch_stride: Some(batch_stride), shape: vec![1; rank - 1], offsets: vec![0] };
        for (dims, values) in constants {
            // A full-rank term's leading axis is the batch axis, of size 1; shorter terms
            // broadcast from the right.
            let dims = match dims.len() {
                n if n == rank && dims[0] == 1 => &dims[1..],
                n if n < rank => &dims[..],
                _ => return None,
            };
            sum.add_constant(dims, &values)?;
        }
        Some(sum)
    }

    /// Adds a constant term of `dims` (at most the view's rank after the batch axis),
    /// broadcasting both numpy's way.
    fn add_constant(&mut self, dims: &[i64], values: &[i64]) -> Option<()> {
        let rank = self.shape.len();
        let padded: Vec<i64> = std::iter::repeat_n(1, rank - dims.len()).chain(dims.iter().copied()).collect();
        let broadcast = |x: i64, y: i64| {
            if x == 1 {
                Some(y)
            } else if y == 1 || y == x {
                Some(x)
            } else {
                None
            }
        };
        let shape: Vec<i64> = self.shape.iter().zip(&padded).map(|(&x, &y)| broadcast(x, y)).collect::<Option<_>>()?;
        let count: i64 = shape.iter().product();
        if count as usize > MAX_TERM_ELEMENTS || values.len() as i64 != padded.iter().product::<i64>() {
            return None;
        }
        // The element of a (possibly broadcast) operand at a position of the result.
        let at = |dims: &[i64], values: &[i64], index: &[i64]| -> i64 {
            let flat = dims.iter().zip(index).fold(0, |acc, (&d, &i)| acc * d + if d == 1 { 0 } else { i });
            values[flat as usize]
        };
        let mut index = vec![0i64; rank];
        let mut offsets = Vec::with_capacity(count as usize);
        for _ in 0..count {
            offsets.push(at(&self.shape, &self.offsets, &index) + at(&padded, values, &index));
            advance(&mut index, &shape);
        }
        self.shape = shape;
        self.offsets = offsets;
        Some(())
    }
}

/// The next row-major position within `shape` (wrapping to all zeros after the last).
fn advance(index: &mut [i64], shape: &[i64]) {
    for axis in (0..index.len()).rev() {
        index[axis] += 1;
        if index[axis] < shape[axis] {
            return;
        }
        index[axis] = 0;
    }
}

/// `Unsqueeze(Mul(Range(0, n, 1), s), axes)` with the range landing on axis 0: the stride `s`
/// and the rank of the result.
fn batch_term(graph: &GraphProto, unsqueeze: &NodeProto) -> Option<(i64, usize)> {
    let axes = match unsqueeze.attr_ints("axes") {
        Some(axes) => axes.to_vec(),
        None => int_constant(graph, unsqueeze.input.get(1)?)?.1,
    };
    let rank = axes.len() + 1;
    let normalised: Vec<i64> = axes.iter().map(|&a| if a < 0 { a + rank as i64 } else { a }).collect();
    if normalised.contains(&0) {
        return None;
    }
    let (_, scaled) = graph.producer(unsqueeze.input.first()?)?;
    if scaled.op_type() != "Mul" {
        return None;
    }
    let [a, b] = &scaled.input[..] else { return None };
    let (range, stride) = match (int_constant(graph, a), int_constant(graph, b)) {
        (None, Some((_, s))) => (a, s),
        (Some((_, s)), None) => (b, s),
        _ => return None,
    };
    let [stride] = stride[..] else { return None };
    let (_, range) = graph.producer(range)?;
    if range.op_type() != "Range" {
        return None;
    }
    let scalar = |name: &str| int_constant(graph, name).and_then(|(_, v)| (v.len() == 1).then(|| v[0]));
    (scalar(range.input.first()?)? == 0 && scalar(range.input.get(2)?)? == 1 && is_batch_size(graph, range.input.get(1)?))
        .then_some((stride, rank))
}

/// Whether `name` is a value's first dimension: `Squeeze(Shape(v, start 0, end 1))` or
/// `Gather(Shape(v), 0)`.
fn is_batch_size(graph: &GraphProto, name: &str) -> bool {
    let Some((_, node)) = graph.producer(name) else { return false };
    let shape_of = |name: &str, first_only: bool| {
        graph.producer(name).is_some_and(|(_, s)| {
            s.op_type() == "Shape" && s.attr_int("start").unwrap_or(0) == 0 && (!first_only || s.attr_int("end") == Some(1))
        })
    };
    match node.op_type() {
        "Squeeze" => node.input.first().is_some_and(|s| shape_of(s, true)),
        "Gather" => {
            node.input.first().is_some_and(|s| shape_of(s, false))
                && node.input.get(1).and_then(|i| int_constant(graph, i)).is_some_and(|(_, v)| v == [0])
        }
        _ => false,
    }
}

/// The permutation `p` of the source's axes after the batch such that the view is the source
/// transposed by it: the view's sizes are the source's permuted and its offsets the source's
/// contiguous strides permuted. Axes of size 1 may carry any stride.
fn transposition(dims: &[i64], view: &IndexSum) -> Option<Vec<usize>> {
    let rank = dims.len();
    let mut strides = vec![1i64; rank];
    for axis in (0..rank.saturating_sub(1)).rev() {
        strides[axis] = strides[axis + 1] * dims[axis + 1];
    }
    let mut perm: Vec<usize> = (0..rank).collect();
    loop {
        if perm.iter().enumerate().all(|(axis, &p)| view.shape[axis] == dims[p]) && offsets_match(view, &perm, &strides) {
            return Some(perm);
        }
        if !next_permutation(&mut perm) {
            return None;
        }
    }
}

fn offsets_match(view: &IndexSum, perm: &[usize], strides: &[i64]) -> bool {
    let mut index = vec![0i64; view.shape.len()];
    for &offset in &view.offsets {
        let expected: i64 = index.iter().zip(perm).map(|(&i, &p)| i * strides[p]).sum();
        if offset != expected {
            return false;
        }
        advance(&mut index, &view.shape);
    }
    true
}

/// The next permutation in lexicographic order; false after the last.
fn next_permutation(perm: &mut [usize]) -> bool {
    let Some(i) = (1..perm.len()).rev().find(|&i| perm[i - 1] < perm[i]) else { return false };
    let j = (i..perm.len()).rev().find(|&j| perm[j] > perm[i - 1]).expect("perm[i] is larger");
    perm.swap(i - 1, j);
    perm[i..].reverse();
    true
}
