//! Vector-Jacobian products, one rule per ONNX operator, emitted as ONNX nodes.
//!
//! Each rule receives the gradients of the node's outputs (`None` where no gradient flows) and
//! which inputs vary, and returns one gradient per input (`None` for inputs that do not vary).
//! Rules read shapes at run time (`Shape`) rather than assuming them, so symbolic batch sizes
//! and any spatial size work.

use crate::CompileError;
use explaind_onnx::proto::tensor_proto::DataType;
use explaind_onnx::{AttributeProto, GraphBuilder, GraphProto, NodeProto, tensor_f32, tensor_i64};
use std::collections::HashMap;

/// Emits nodes into the graph being compiled, with a few shared helpers.
pub struct Emitter<'a> {
    builder: &'a mut GraphBuilder,
    /// The default-domain opset of the graph being written.
    opset: i64,
    /// The original graph, for constants and declared shapes.
    source: &'a GraphProto,
    scalars: HashMap<u32, String>,
    int_lists: HashMap<Vec<i64>, String>,
    shapes: HashMap<String, String>,
    /// DeepLIFT's counterparts: for each value of the input side, the same value computed on
    /// the references. See [`PairLayout`].
    shape_source: HashMap<String, String>,
    /// Set while compiling DeepLIFT multipliers: how their rows are laid out.
    layout: Option<PairLayout>,
    /// Results of [`Emitter::per_pair`], by name: the gradient and the factor they multiplied.
    pair_products: HashMap<String, (String, String)>,
    /// The int64 scalars 0 and 1 that [`Emitter::range`] starts and steps by.
    range_bounds: Option<(String, String)>,
    /// Static spatial sizes of the source graph's values ([`crate::layers::spatial_sizes`]),
    /// computed when a rule first asks.
    spatial_sizes: Option<HashMap<String, Vec<i64>>>,
}

/// How DeepLIFT's graphs lay out their rows, so that what depends only on an (input,
/// reference) pair is computed once per pair rather than once per (pair, seed).
///
/// - The *pair stage* works on the forward values of both sides: the reference side has R rows
///   and the input side R rows or one row (which broadcasts). Rescale ratios, routing weights
///   and Shapley means are computed here, with R rows.
/// - The *gradient stage* carries the seeds backwards with T·R rows, seed-major (row t·R + r
///   holds seed t against reference r). It is linear in the seeds: every nonlinearity is a
///   multiplication by a pair-stage factor, broadcast over the T seeds by
///   [`Emitter::per_pair`].
///
/// The three names are 1-element int64 tensors the graph defines: T·R, R and T.
#[derive(Debug, Clone)]
pub struct PairLayout {
    pub gradient_rows: String,
    pub pair_rows: String,
    pub repeats: String,
}

impl<'a> Emitter<'a> {
    pub fn new(builder: &'a mut GraphBuilder, source: &'a GraphProto, opset: i64) -> Self {
        Emitter {
            builder,
            opset,
            source,
            scalars: HashMap::new(),
            int_lists: HashMap::new(),
            shapes: HashMap::new(),
            shape_source: HashMap::new(),
            layout: None,
            pair_products: HashMap::new(),
            spatial_sizes: None,
            range_bounds: None,
        }
    }

    pub fn builder(&mut self) -> &mut GraphBuilder {
        self.builder
    }

    pub fn node(&mut self, op: &str, inputs: &[&str], attributes: Vec<AttributeProto>) -> String {
        self.builder.add_node(op, inputs, attributes)
    }

    /// A float32 scalar constant (shared between uses).
    pub fn scalar(&mut self, value: f32) -> String {
        if let Some(name) = self.scalars.get(&value.to_bits()) {
            return name.clone();
        }
        let name = self.builder.add_initializer(tensor_f32("grad_const", &[], &[value]));
        self.scalars.insert(value.to_bits(), name.clone());
        name
    }

    /// A 1-D int64 constant (shared between uses).
    pub fn ints(&mut self, values: &[i64]) -> String {
        if let Some(name) = self.int_lists.get(values) {
            return name.clone();
        }
        let name = self.builder.add_initializer(tensor_i64("grad_ints", &[values.len() as i64], values));
        self.int_lists.insert(values.to_vec(), name.clone());
        name
    }

    /// Switches to DeepLIFT's row layout: `counterparts` maps each input-side value to its
    /// reference-side twin, whose shape (with T·R rows) the gradient stage takes.
    pub fn use_pair_layout(&mut self, counterparts: HashMap<String, String>, layout: PairLayout) {
        self.shape_source = counterparts;
        self.layout = Some(layout);
    }

    /// The gradient-stage shape of `tensor`: `Shape(tensor)`, or under a [`PairLayout`] its
    /// reference twin's shape with T·R rows. Emitted once per tensor.
    pub fn shape(&mut self, tensor: &str) -> String {
        if let Some(name) = self.shapes.get(tensor) {
            return name.clone();
        }
        let name = match (self.shape_source.get(tensor).cloned(), self.layout.clone()) {
            (Some(twin), Some(layout)) => {
                let twin_shape = self.pair_shape(&twin);
                let rest = self.after_first(&twin_shape);
                self.node("Concat", &[&layout.gradient_rows, &rest], vec![AttributeProto::int("axis", 0)])
            }
            _ => self.node("Shape", &[tensor], vec![]),
        };
        self.shapes.insert(tensor.to_string(), name.clone());
        name
    }

    /// The pair-stage shape of `tensor` (R rows under a [`PairLayout`]): its reference twin's.
    pub fn pair_shape(&mut self, tensor: &str) -> String {
        let source = self.shape_source.get(tensor).cloned().unwrap_or_else(|| tensor.to_string());
        let key = format!("{source}\u{0}pair");
        if let Some(name) = self.shapes.get(&key) {
            return name.clone();
        }
        let name = self.node("Shape", &[&source], vec![]);
        self.shapes.insert(key, name.clone());
        name
    }

    /// The element count of `tensor`'s gradient-stage shape, as an int64 scalar.
    pub fn size(&mut self, tensor: &str) -> String {
        let shape = self.shape(tensor);
        self.node("ReduceProd", &[&shape], vec![AttributeProto::int("keepdims", 0)])
    }

    /// `g · factor` for a gradient-stage `g` (T·R rows) and a pair-stage `factor` (R rows, or
    /// one): `g` is viewed as [T, R, ...] so the factor broadcasts over the seeds without
    /// being copied T times. Without a [`PairLayout`] a plain product.
    ///
    /// Factors in a row (a max-pool's routing weights, then the rescale factor of the ReLU
    /// before it) are multiplied together in the pair stage first, so the seeds' rows take one
    /// product rather than one per factor.
    pub fn per_pair(&mut self, g: &str, factor: &str) -> String {
        let Some(layout) = self.layout.clone() else { return self.node("Mul", &[g, factor], vec![]) };
        if let Some((inner, first)) = self.pair_products.get(g).cloned() {
            let both = self.node("Mul", &[&first, factor], vec![]);
            return self.per_pair(&inner, &both);
        }
        let (lifted, rest) = self.lift(g, &layout);
        // The factor broadcasts into g's shape, so the product has g's shape again.
        let product = self.node("Mul", &[&lifted, factor], vec![]);
        let flat_shape = self.node("Concat", &[&layout.gradient_rows, &rest], vec![AttributeProto::int("axis", 0)]);
        let result = self.node("Reshape", &[&product, &flat_shape], vec![]);
        self.pair_products.insert(result.clone(), (g.to_string(), factor.to_string()));
        result
    }

    /// The gradient-stage product of `g` with a pair-stage matrix: `g · factor`, or
    /// `factor · g` when `factor_first`, batched over the seeds like [`Emitter::per_pair`].
    pub fn per_pair_matmul(&mut self, g: &str, factor: &str, factor_first: bool) -> String {
        let operands =
            |g: &str| if factor_first { [factor.to_string(), g.to_string()] } else { [g.to_string(), factor.to_string()] };
        let Some(layout) = self.layout.clone() else {
            let [a, b] = operands(g);
            return self.node("MatMul", &[&a, &b], vec![]);
        };
        let (lifted, _) = self.lift(g, &layout);
        let [a, b] = operands(&lifted);
        let product = self.node("MatMul", &[&a, &b], vec![]);
        let product_shape = self.node("Shape", &[&product], vec![]);
        let start = self.ints(&[2]);
        let end = self.ints(&[i64::MAX]);
        let product_rest = self.node("Slice", &[&product_shape, &start, &end], vec![]);
        let flat_shape = self.node("Concat", &[&layout.gradient_rows, &product_rest], vec![AttributeProto::int("axis", 0)]);
        self.node("Reshape", &[&product, &flat_shape], vec![])
    }

    /// Under a [`PairLayout`], the flat offset of each seed's block in a gradient-stage tensor
    /// shaped like `tensor`, as [T, 1] int64 (t · R · row size); without one, `None`.
    pub fn seed_offsets(&mut self, tensor: &str) -> Option<String> {
        let layout = self.layout.clone()?;
        let pair_shape = self.pair_shape(tensor);
        let block = self.node("ReduceProd", &[&pair_shape], vec![AttributeProto::int("keepdims", 0)]);
        let axis0 = self.ints(&[0]);
        let seeds = self.node("Squeeze", &[&layout.repeats, &axis0], vec![]);
        let seeds = self.range(&seeds);
        let offsets = self.node("Mul", &[&seeds, &block], vec![]);
        let column = self.ints(&[-1, 1]);
        Some(self.node("Reshape", &[&offsets, &column], vec![]))
    }

    /// A gradient-stage `g` (T·R rows) viewed as [T, R, ...], and the shape of one of its rows.
    fn lift(&mut self, g: &str, layout: &PairLayout) -> (String, String) {
        let g_shape = self.node("Shape", &[g], vec![]);
        let rest = self.after_first(&g_shape);
        let lifted_shape =
            self.node("Concat", &[&layout.repeats, &layout.pair_rows, &rest], vec![AttributeProto::int("axis", 0)]);
        (self.node("Reshape", &[g, &lifted_shape], vec![]), rest)
    }

    /// `0, 1, ..., count − 1` as int64 (`count`: an int64 scalar), with the bounds as shared
    /// constants.
    pub fn range(&mut self, count: &str) -> String {
        let (zero, one) = match &self.range_bounds {
            Some(bounds) => bounds.clone(),
            None => {
                let zero = self.builder.add_initializer(tensor_i64("grad_zero", &[], &[0]));
                let one = self.builder.add_initializer(tensor_i64("grad_step", &[], &[1]));
                self.range_bounds.insert((zero, one)).clone()
            }
        };
        self.node("Range", &[&zero, count, &one], vec![])
    }

    /// Elements from index 1 on of a 1-D tensor.
    fn after_first(&mut self, shape: &str) -> String {
        let start = self.ints(&[1]);
        let end = self.ints(&[i64::MAX]);
        self.node("Slice", &[shape, &start, &end], vec![])
    }

    /// `condition ? a : b` elementwise, as `b + mask · (a − b)` with the condition cast to 0/1.
    /// ONNX Runtime's `Where` kernel is several times slower than these vectorised arithmetic
    /// kernels on large tensors (it dominated profiles of the DeepLIFT backward graph). Both
    /// branches must be finite, which every caller ensures.
    pub fn select(&mut self, condition: &str, a: &str, b: &str) -> String {
        let mask = self.float_mask(condition);
        self.blend(&mask, a, b)
    }

    /// A boolean tensor as float 0/1.
    pub fn float_mask(&mut self, condition: &str) -> String {
        self.node("Cast", &[condition], vec![AttributeProto::int("to", DataType::Float as i64)])
    }

    /// `b + mask · (a − b)` for a float 0/1 `mask`.
    pub fn blend(&mut self, mask: &str, a: &str, b: &str) -> String {
        let difference = self.node("Sub", &[a, b], vec![]);
        let chosen = self.node("Mul", &[mask, &difference], vec![]);
        self.node("Add", &[b, &chosen], vec![])
    }

    /// `g` where `condition` holds, else 0: one multiplication by the 0/1 mask.
    pub fn mask(&mut self, condition: &str, g: &str) -> String {
        let mask = self.float_mask(condition);
        self.node("Mul", &[g, &mask], vec![])
    }

    /// `ReduceMax` over `axes`, keeping them (the axes moved from attribute to input in opset 18).
    pub fn reduce_max(&mut self, tensor: &str, axes: &[i64]) -> String {
        let keep = AttributeProto::int("keepdims", 1);
        if self.opset >= 18 {
            let axes = self.ints(axes);
            self.node("ReduceMax", &[tensor, &axes], vec![keep])
        } else {
            self.node("ReduceMax", &[tensor], vec![keep, AttributeProto::ints("axes", axes.to_vec())])
        }
    }

    /// The sum of gradient contributions.
    pub fn sum(&mut self, parts: &[String]) -> String {
        match parts {
            [one] => one.clone(),
            many => {
                let refs: Vec<&str> = many.iter().map(String::as_str).collect();
                self.node("Sum", &refs, vec![])
            }
        }
    }

    /// Zeros in `tensor`'s (gradient-stage) shape.
    pub fn zeros_like(&mut self, tensor: &str) -> String {
        let shape = self.shape(tensor);
        self.node("ConstantOfShape", &[&shape], vec![AttributeProto::tensor("value", tensor_f32("", &[1], &[0.0]))])
    }

    /// A flat float tensor of `count` zeros (`count`: an int64 scalar).
    pub fn flat_zeros(&mut self, count: &str) -> String {
        let flat = self.ints(&[1]);
        let length = self.node("Reshape", &[count, &flat], vec![]);
        self.node("ConstantOfShape", &[&length], vec![AttributeProto::tensor("value", tensor_f32("", &[1], &[0.0]))])
    }

    /// Sums `grad` over the axes along which `target` was broadcast to produce it, and gives
    /// it `target`'s shape. Works at run time for any ranks (numpy broadcasting rules): first
    /// the leading axes `target` lacks are summed away, then the axes where it has size 1.
    pub fn unbroadcast(&mut self, grad: &str, target: &str) -> String {
        let target_shape = self.shape(target);
        let grad_shape = self.shape(grad);
        // Ranks as Shape(Shape(.)) rather than Size: ONNX Runtime's load-time data propagation
        // mis-evaluates Size of a shape and then warns about (or rejects) the graph.
        let grad_rank = self.node("Shape", &[&grad_shape], vec![]);
        let target_rank = self.node("Shape", &[&target_shape], vec![]);
        let extra = self.node("Sub", &[&grad_rank, &target_rank], vec![]);
        let axis0 = self.ints(&[0]);
        let extra = self.node("Squeeze", &[&extra, &axis0], vec![]);
        let leading = self.range(&extra);
        let keep_rank = vec![AttributeProto::int("keepdims", 0), AttributeProto::int("noop_with_empty_axes", 1)];
        let same_rank = self.node("ReduceSum", &[grad, &leading], keep_rank);
        let same_rank_shape = self.node("Shape", &[&same_rank], vec![]);
        let same = self.node("Equal", &[&same_rank_shape, &target_shape], vec![]);
        let differ = self.node("Not", &[&same], vec![]);
        let axes = self.node("NonZero", &[&differ], vec![]);
        let flat = self.ints(&[-1]);
        let axes = self.node("Reshape", &[&axes, &flat], vec![]);
        let reduced = self.node(
            "ReduceSum",
            &[&same_rank, &axes],
            vec![AttributeProto::int("keepdims", 1), AttributeProto::int("noop_with_empty_axes", 1)],
        );
        self.node("Reshape", &[&reduced, &target_shape], vec![])
    }

    /// The spatial size (the axes after N and C) of a value, when the file tells it statically.
    pub fn spatial_size(&mut self, name: &str) -> Option<Vec<i64>> {
        let source = self.source;
        self.spatial_sizes.get_or_insert_with(|| crate::layers::spatial_sizes(source)).get(name).cloned()
    }

    /// The value of a constant int64 tensor (an initializer or a `Constant` node's output).
    pub fn constant_ints(&self, name: &str) -> Option<Vec<i64>> {
        if let Some(t) = self.source.initializer(name) {
            return t.to_i64().ok().map(|(_, v)| v);
        }
        let (_, node) = self.source.producer(name)?;
        if node.op_type() == "Constant" {
            return node.attr_tensor("value").and_then(|t| t.to_i64().ok()).map(|(_, v)| v);
        }
        None
    }

    /// The shape and elements of a constant float tensor (an initializer or a `Constant`
    /// node's output).
    pub fn constant_f32(&self, name: &str) -> Option<(Vec<i64>, Vec<f32>)> {
        if let Some(t) = self.source.initializer(name) {
            return t.to_f32().ok();
        }
        let (_, node) = self.source.producer(name)?;
        if node.op_type() == "Constant" {
            return node.attr_tensor("value").and_then(|t| t.to_f32().ok());
        }
        None
    }

    /// The rank of a tensor when the model says it: initializers, declared inputs, outputs
    /// and value infos, `Constant` outputs.
    pub fn rank(&self, name: &str) -> Option<usize> {
        if let Some(t) = self.source.initializer(name) {
            return Some(t.dims.len());
        }
        if let Some(info) = self.source.find_value_info(name) {
            return info.tensor_shape().map(|s| s.len());
        }
        let (_, node) = self.source.producer(name)?;
        if node.op_type() == "Constant" {
            return node.attr_tensor("value").map(|t| t.dims.len());
        }
        None
    }

    /// `tensor` with its last two axes swapped; `like` is a tensor of the same rank whose rank
    /// the model declares.
    pub fn swap_last_two(&mut self, tensor: &str, like: &str, node: &NodeProto) -> Result<String, CompileError> {
        let rank = self.rank(like).ok_or_else(|| form(node, &format!("the rank of {like:?} is not declared")))?;
        if rank < 2 {
            return Err(form(node, "MatMul with a 1-D operand is not supported yet"));
        }
        let mut perm: Vec<i64> = (0..rank as i64).collect();
        perm.swap(rank - 2, rank - 1);
        Ok(self.node("Transpose", &[tensor], vec![AttributeProto::ints("perm", perm)]))
    }

    /// Pads `value` at the end of each axis with zeros up to `like`'s shape (same rank).
    pub fn pad_to(&mut self, value: &str, like: &str) -> String {
        let want = self.shape(like);
        self.pad_to_shape(value, &want)
    }

    /// Pads `value` at the end of each axis with zeros up to the shape `want` (a shape tensor).
    pub fn pad_to_shape(&mut self, value: &str, want: &str) -> String {
        let have = self.shape(value);
        let missing = self.node("Sub", &[want, &have], vec![]);
        let zero = self.node("Sub", &[&missing, &missing], vec![]);
        let pads = self.node("Concat", &[&zero, &missing], vec![AttributeProto::int("axis", 0)]);
        self.node("Pad", &[value, &pads], vec![])
    }

    /// Elements from axis 2 on of `shape` (the spatial sizes of an N, C, ... tensor).
    fn spatial(&mut self, shape: &str) -> String {
        let start = self.ints(&[2]);
        let end = self.ints(&[i64::MAX]);
        self.node("Slice", &[shape, &start, &end], vec![])
    }
}

pub(crate) fn form(node: &NodeProto, reason: &str) -> CompileError {
    CompileError::UnsupportedForm { op_type: node.op_type().to_string(), node: node.name().to_string(), reason: reason.into() }
}

/// Copies the named attributes that are present on `node`.
fn copy_attrs(node: &NodeProto, names: &[&str]) -> Vec<AttributeProto> {
    node.attribute.iter().filter(|a| names.contains(&a.name())).cloned().collect()
}

/// The attributes a backward rule repeats on a `MaxPool` it recomputes (for its indices), once
/// the node is of a form the rules support.
pub(crate) fn max_pool_attrs(node: &NodeProto) -> Result<Vec<AttributeProto>, CompileError> {
    require_explicit_padding(node)?;
    if node.attr_int("storage_order").unwrap_or(0) != 0 {
        return Err(form(node, "storage_order 1 is not supported"));
    }
    Ok(copy_attrs(node, &["ceil_mode", "dilations", "kernel_shape", "pads", "strides"]))
}

/// MaxPool's `Indices` output for `input` (positions flat over the whole tensor, batch and
/// channel included): on ties, the first maximum in row-major order, as ONNX Runtime's CPU
/// kernel and PyTorch pick it. ONNX leaves ties open, and ONNX Runtime's CUDA kernel scans
/// windows column by column, so its indices differ wherever a window holds its maximum twice
/// (a blank region of an image after a convolution with a bias: measured on the digits CNN,
/// where it moved gradients by up to 1.7 and Deep SHAP values by 0.1).
///
/// With the 2-D input's spatial size known (`spatial`), the windows are gathered explicitly and
/// the first maximum found with operators whose results the standard fixes (Gather, Equal,
/// CumSum, exact small-integer products), so every execution provider routes the same way.
/// Otherwise MaxPool's own `Indices`: exact on the CPU, column-major on ties under CUDA.
///
/// `maxima` is the pool's output on `input`, which the graph already computes (one row of it
/// may stand for all of `input`'s rows: it broadcasts).
pub fn max_pool_indices(
    builder: &mut GraphBuilder,
    node: &NodeProto,
    input: &str,
    maxima: &str,
    spatial: Option<&[i64]>,
) -> Result<String, CompileError> {
    let attrs = max_pool_attrs(node)?;
    let kernel = node.attr_ints("kernel_shape").ok_or_else(|| form(node, "kernel_shape is missing"))?.to_vec();
    let (Some(&[height, width]), 2) = (spatial, kernel.len()) else {
        return Ok(builder.add_node_multi("MaxPool", &[input], 2, attrs).swap_remove(1));
    };
    let pair = |name: &str, default: i64| node.attr_ints(name).map(|v| v.to_vec()).unwrap_or_else(|| vec![default; 2]);
    let (strides, dilations) = (pair("strides", 1), pair("dilations", 1));
    let pads = node.attr_ints("pads").map(|v| v.to_vec()).unwrap_or_else(|| vec![0; 4]);
    let ceil = node.attr_int("ceil_mode").unwrap_or(0) != 0;
    let size = [height, width];
    // Output size as ONNX Runtime computes it: in ceil mode, a window starting past the input
    // (and its leading padding) is dropped.
    let mut out = [0i64; 2];
    for a in 0..2 {
        let span = size[a] + pads[a] + pads[a + 2] - ((kernel[a] - 1) * dilations[a] + 1);
        let steps = if ceil { (span + strides[a] - 1).div_euclid(strides[a]) } else { span.div_euclid(strides[a]) };
        out[a] = steps + 1;
        if ceil && (out[a] - 1) * strides[a] >= size[a] + pads[a] {
            out[a] -= 1;
        }
    }
    // Padded so every window lies inside; padding is −∞ and never a window's first maximum.
    let padded: Vec<i64> = (0..2)
        .map(|a| (size[a] + pads[a] + pads[a + 2]).max((out[a] - 1) * strides[a] + (kernel[a] - 1) * dilations[a] + 1))
        .collect();
    let after: Vec<i64> = (0..2).map(|a| padded[a] - size[a] - pads[a]).collect();
    let mut x = input.to_string();
    if pads[0] != 0 || pads[1] != 0 || after.iter().any(|&p| p != 0) {
        let pad_amounts =
            builder.add_initializer(tensor_i64("maxpool_pads", &[8], &[0, 0, pads[0], pads[1], 0, 0, after[0], after[1]]));
        let lowest = builder.add_initializer(tensor_f32("maxpool_pad_value", &[], &[f32::NEG_INFINITY]));
        x = builder.add_node("Pad", &[&x, &pad_amounts, &lowest], vec![]);
    }
    let planes = builder.add_initializer(tensor_i64("maxpool_planes", &[3], &[0, 0, -1]));
    let x = builder.add_node("Reshape", &[&x, &planes], vec![]);
    // window_positions[i, j, k]: where window (i, j)'s k-th element (row-major) lies in the
    // padded plane; source_positions: the same element's position in the unpadded input.
    let window = kernel[0] * kernel[1];
    let mut window_positions = Vec::with_capacity((out[0] * out[1] * window) as usize);
    let mut source_positions = Vec::with_capacity(window_positions.capacity());
    for i in 0..out[0] {
        for j in 0..out[1] {
            for ki in 0..kernel[0] {
                for kj in 0..kernel[1] {
                    let (row, col) = (i * strides[0] + ki * dilations[0], j * strides[1] + kj * dilations[1]);
                    window_positions.push(row * padded[1] + col);
                    source_positions.push(((row - pads[0]) * width + col - pads[1]) as f32);
                }
            }
        }
    }
    let windows_shape = [out[0], out[1], window];
    let gather = builder.add_initializer(tensor_i64("maxpool_windows", &windows_shape, &window_positions));
    let windows = builder.add_node("Gather", &[&x, &gather], vec![AttributeProto::int("axis", 2)]);
    // Each window's maximum (the pool's output), then the first element equal to it: equal and
    // the first such in a running count.
    let column = builder.add_initializer(tensor_i64("maxpool_column", &[5], &[0, 0, 0, 0, 1]));
    let maxima = builder.add_node("Reshape", &[maxima, &column], vec![]);
    let equal = builder.add_node("Equal", &[&windows, &maxima], vec![]);
    let equal_f = builder.add_node("Cast", &[&equal], vec![AttributeProto::int("to", DataType::Float as i64)]);
    let last_axis = builder.add_initializer(tensor_i64("maxpool_last_axis", &[], &[-1]));
    let running = builder.add_node("CumSum", &[&equal_f, &last_axis], vec![]);
    let one = builder.add_initializer(tensor_f32("maxpool_one", &[], &[1.0]));
    let first_in_count = builder.add_node("Equal", &[&running, &one], vec![]);
    let first = builder.add_node("And", &[&equal, &first_in_count], vec![]);
    let first = builder.add_node("Cast", &[&first], vec![AttributeProto::int("to", DataType::Float as i64)]);
    // Its position: one nonzero term per window, so the float sum is exact below 2^24.
    let sources = builder.add_initializer(tensor_f32("maxpool_sources", &windows_shape, &source_positions));
    let picked = builder.add_node("Mul", &[&first, &sources], vec![]);
    let ones = builder.add_initializer(tensor_f32("maxpool_sum", &[window, 1], &vec![1.0; window as usize]));
    let position = builder.add_node("MatMul", &[&picked, &ones], vec![]);
    let position = builder.add_node("Cast", &[&position], vec![AttributeProto::int("to", DataType::Int64 as i64)]);
    let four_d = builder.add_initializer(tensor_i64("maxpool_four_d", &[4], &[0, 0, 0, 0]));
    let position = builder.add_node("Reshape", &[&position, &four_d], vec![]);
    // Plus the offset of each (row, channel) plane: plane index · H·W.
    let count = builder.add_node("Size", &[&position], vec![]);
    let per_plane = builder.add_initializer(tensor_i64("maxpool_per_plane", &[], &[out[0] * out[1]]));
    let plane_count = builder.add_node("Div", &[&count, &per_plane], vec![]);
    let zero = builder.add_initializer(tensor_i64("maxpool_zero", &[], &[0]));
    let step = builder.add_initializer(tensor_i64("maxpool_step", &[], &[1]));
    let plane = builder.add_node("Range", &[&zero, &plane_count, &step], vec![]);
    let plane_size = builder.add_initializer(tensor_i64("maxpool_plane_size", &[], &[height * width]));
    let offsets = builder.add_node("Mul", &[&plane, &plane_size], vec![]);
    let input_shape = builder.add_node("Shape", &[input], vec![]);
    let lead = builder.add_initializer(tensor_i64("maxpool_lead", &[1], &[2]));
    let start = builder.add_initializer(tensor_i64("maxpool_start", &[1], &[0]));
    let batch_and_channels = builder.add_node("Slice", &[&input_shape, &start, &lead], vec![]);
    let trailing = builder.add_initializer(tensor_i64("maxpool_trailing", &[2], &[1, 1]));
    let offsets_shape = builder.add_node("Concat", &[&batch_and_channels, &trailing], vec![AttributeProto::int("axis", 0)]);
    let offsets = builder.add_node("Reshape", &[&offsets, &offsets_shape], vec![]);
    Ok(builder.add_node("Add", &[&position, &offsets], vec![]))
}

fn require_explicit_padding(node: &NodeProto) -> Result<(), CompileError> {
    match node.attr_string("auto_pad") {
        None | Some("NOTSET") => Ok(()),
        Some(other) => Err(form(node, &format!("auto_pad {other} is not supported; export with explicit pads"))),
    }
}

/// The largest convolution Jacobian (output elements × input elements of one row) that
/// [`dense_conv_gradient`] builds: 64 Ki floats (256 KiB, within a core's L2 cache).
const DENSE_CONV_MAX_ENTRIES: i64 = 1 << 16;

/// The input gradient of a 2-D convolution on a small map as one matrix product: its Jacobian
/// (a constant, built here from the weights) applied to the flattened gradient. On maps of a
/// few pixels, ONNX Runtime's convolutions spend their time in set-up and layout reorders;
/// a GEMM does the same arithmetic (and the zeros) several times faster (the digits CNN's
/// DeepLIFT backward pass, 1000 rows: about 2.3 -> 1.5 ms). `None` unless the weights are
/// constant, the sizes static, padding explicit and the Jacobian within
/// [`DENSE_CONV_MAX_ENTRIES`].
fn dense_conv_gradient(e: &mut Emitter<'_>, node: &NodeProto, g: &str) -> Option<String> {
    let (dims, weights) = e.constant_f32(node.input.get(1)?)?;
    let [m, per_group, kh, kw] = dims[..] else { return None };
    let (&[h, w], &[oh, ow]) = (&e.spatial_size(&node.input[0])?[..], &e.spatial_size(&node.output[0])?[..]) else {
        return None;
    };
    let group = node.attr_int("group").unwrap_or(1);
    let c = per_group * group;
    let (rows, cols) = (m * oh * ow, c * h * w);
    if rows * cols > DENSE_CONV_MAX_ENTRIES || node.attr_string("auto_pad").is_some_and(|p| p != "NOTSET") {
        return None;
    }
    let pair = |name: &str, default: i64| node.attr_ints(name).map_or([default; 2], |v| [v[0], v[1]]);
    let (strides, dilations) = (pair("strides", 1), pair("dilations", 1));
    let pads = node.attr_ints("pads").map_or([0; 2], |p| [p[0], p[1]]);
    let mut jacobian = vec![0f32; (rows * cols) as usize];
    let outputs_per_group = m / group;
    for out_channel in 0..m {
        let first_channel = out_channel / outputs_per_group * per_group;
        for (oy, ox) in (0..oh).flat_map(|y| (0..ow).map(move |x| (y, x))) {
            let row = (out_channel * oh + oy) * ow + ox;
            for k in 0..per_group {
                for (ky, kx) in (0..kh).flat_map(|y| (0..kw).map(move |x| (y, x))) {
                    let iy = oy * strides[0] - pads[0] + ky * dilations[0];
                    let ix = ox * strides[1] - pads[1] + kx * dilations[1];
                    if (0..h).contains(&iy) && (0..w).contains(&ix) {
                        let col = ((first_channel + k) * h + iy) * w + ix;
                        jacobian[(row * cols + col) as usize] +=
                            weights[(((out_channel * per_group + k) * kh + ky) * kw + kx) as usize];
                    }
                }
            }
        }
    }
    let matrix = e.builder().add_initializer(tensor_f32("conv_grad_jacobian", &[rows, cols], &jacobian));
    let flat = e.ints(&[-1, rows]);
    let g_flat = e.node("Reshape", &[g, &flat], vec![]);
    let product = e.node("MatMul", &[&g_flat, &matrix], vec![]);
    let shape = e.ints(&[-1, c, h, w]);
    Some(e.node("Reshape", &[&product, &shape], vec![]))
}

/// Input channels from which a convolution's input gradient runs faster as a plain Conv with
/// the kernel flipped than as a ConvTranspose: ONNX Runtime's blocked convolution kernels win
/// from about 8 channels out (the digits CNN's 8→16 layer: its DeepLIFT backward pass over
/// 1000 rows went from 4.3 to 3.3 ms; 25–45 % on wider layers); with fewer channels (an RGB
/// or grey input layer) ConvTranspose is faster (`../shared/design/deep-shap.md`, measured
/// section; a 3-channel layer measured here agrees).
const FLIPPED_CONV_MIN_CHANNELS: i64 = 8;

/// The input gradient of a stride-1, undilated, ungrouped 2-D convolution with constant weights
/// as a plain convolution: the kernel flipped in space with its channel axes swapped, padded by
/// k − 1 − p on each side. `None` when the convolution does not have that form (the caller
/// uses ConvTranspose).
fn flipped_kernel_conv(e: &mut Emitter<'_>, node: &NodeProto, g: &str) -> Option<String> {
    let all_one = |name: &str| node.attr_ints(name).is_none_or(|v| v.iter().all(|&d| d == 1));
    if !all_one("strides") || !all_one("dilations") || node.attr_int("group").unwrap_or(1) != 1 {
        return None;
    }
    let (dims, weights) = e.constant_f32(node.input.get(1)?)?;
    let [m, c, kh, kw] = dims[..] else { return None };
    if c < FLIPPED_CONV_MIN_CHANNELS {
        return None;
    }
    let pads = node.attr_ints("pads").map(<[i64]>::to_vec).unwrap_or_else(|| vec![0; 4]);
    let flipped_pads = [kh - 1 - pads[0], kw - 1 - pads[1], kh - 1 - pads[2], kw - 1 - pads[3]];
    if flipped_pads.iter().any(|&p| p < 0) {
        return None;
    }
    let (m, c, kh, kw) = (m as usize, c as usize, kh as usize, kw as usize);
    let mut flipped = vec![0f32; weights.len()];
    for o in 0..m {
        for i in 0..c {
            for y in 0..kh {
                for x in 0..kw {
                    flipped[((i * m + o) * kh + (kh - 1 - y)) * kw + (kw - 1 - x)] = weights[((o * c + i) * kh + y) * kw + x];
                }
            }
        }
    }
    let shape = [c as i64, m as i64, kh as i64, kw as i64];
    let kernel = e.builder().add_initializer(tensor_f32("conv_grad_flipped_kernel", &shape, &flipped));
    Some(e.node("Conv", &[g, &kernel], vec![AttributeProto::ints("pads", flipped_pads)]))
}

/// The vector-Jacobian product of one node. `g[k]` is the gradient of output k, `varies[i]`
/// whether input i carries a gradient. Returns one entry per input.
pub fn vjp(
    e: &mut Emitter<'_>,
    node: &NodeProto,
    g: &[Option<String>],
    varies: &[bool],
) -> Result<Vec<Option<String>>, CompileError> {
    let n = node.input.len();
    let mut out: Vec<Option<String>> = vec![None; n];
    let x = |i: usize| node.input[i].as_str();
    let y = node.output.first().map(String::as_str).unwrap_or("");
    let Some(g0) = g.first().cloned().flatten() else {
        // Only secondary outputs (e.g. MaxPool indices, Dropout mask) have gradients: none flow.
        return Ok(out);
    };
    let g0 = g0.as_str();

    match node.op_type() {
        "Identity" | "Dropout" => out[0] = Some(g0.to_string()),
        "Cast" => {
            let to = node.attr_int("to").unwrap_or(0);
            if to == DataType::Float as i64 || to == DataType::Double as i64 || to == DataType::Float16 as i64 {
                out[0] = Some(g0.to_string());
            }
        }
        "Neg" => out[0] = Some(e.node("Neg", &[g0], vec![])),
        "Add" | "Sub" => {
            if varies[0] {
                out[0] = Some(e.unbroadcast(g0, x(0)));
            }
            if varies[1] {
                let g1 = if node.op_type() == "Sub" { e.node("Neg", &[g0], vec![]) } else { g0.to_string() };
                out[1] = Some(e.unbroadcast(&g1, x(1)));
            }
        }
        "Sum" => {
            for i in 0..n {
                if varies[i] {
                    out[i] = Some(e.unbroadcast(g0, x(i)));
                }
            }
        }
        "Mul" => {
            if varies[0] {
                let p = e.node("Mul", &[g0, x(1)], vec![]);
                out[0] = Some(e.unbroadcast(&p, x(0)));
            }
            if varies[1] {
                let p = e.node("Mul", &[g0, x(0)], vec![]);
                out[1] = Some(e.unbroadcast(&p, x(1)));
            }
        }
        "Div" => {
            if varies[0] {
                let p = e.node("Div", &[g0, x(1)], vec![]);
                out[0] = Some(e.unbroadcast(&p, x(0)));
            }
            if varies[1] {
                // d(a/b)/db = -a/b² = -y/b
                let p = e.node("Mul", &[g0, y], vec![]);
                let p = e.node("Div", &[&p, x(1)], vec![]);
                let p = e.node("Neg", &[&p], vec![]);
                out[1] = Some(e.unbroadcast(&p, x(1)));
            }
        }
        "Relu" => {
            let zero = e.scalar(0.0);
            let positive = e.node("Greater", &[x(0), &zero], vec![]);
            out[0] = Some(e.mask(&positive, g0));
        }
        "LeakyRelu" => {
            let alpha = e.scalar(node.attr_float("alpha").unwrap_or(0.01));
            let zero = e.scalar(0.0);
            let positive = e.node("Greater", &[x(0), &zero], vec![]);
            let scaled = e.node("Mul", &[g0, &alpha], vec![]);
            out[0] = Some(e.select(&positive, g0, &scaled));
        }
        "Elu" => {
            // For x <= 0: y = alpha (exp(x) - 1), so dy/dx = y + alpha.
            let alpha = e.scalar(node.attr_float("alpha").unwrap_or(1.0));
            let zero = e.scalar(0.0);
            let positive = e.node("Greater", &[x(0), &zero], vec![]);
            let slope = e.node("Add", &[y, &alpha], vec![]);
            let scaled = e.node("Mul", &[g0, &slope], vec![]);
            out[0] = Some(e.select(&positive, g0, &scaled));
        }
        "Sigmoid" => {
            let one = e.scalar(1.0);
            let rest = e.node("Sub", &[&one, y], vec![]);
            let slope = e.node("Mul", &[y, &rest], vec![]);
            out[0] = Some(e.node("Mul", &[g0, &slope], vec![]));
        }
        "Tanh" => {
            let one = e.scalar(1.0);
            let square = e.node("Mul", &[y, y], vec![]);
            let slope = e.node("Sub", &[&one, &square], vec![]);
            out[0] = Some(e.node("Mul", &[g0, &slope], vec![]));
        }
        "Exp" => out[0] = Some(e.node("Mul", &[g0, y], vec![])),
        "Softplus" => {
            let slope = e.node("Sigmoid", &[x(0)], vec![]);
            out[0] = Some(e.node("Mul", &[g0, &slope], vec![]));
        }
        "Erf" => {
            let c = e.scalar(2.0 / std::f32::consts::PI.sqrt());
            let square = e.node("Mul", &[x(0), x(0)], vec![]);
            let negated = e.node("Neg", &[&square], vec![]);
            let bell = e.node("Exp", &[&negated], vec![]);
            let slope = e.node("Mul", &[&bell, &c], vec![]);
            out[0] = Some(e.node("Mul", &[g0, &slope], vec![]));
        }
        "Sqrt" => {
            let half = e.scalar(0.5);
            let p = e.node("Mul", &[g0, &half], vec![]);
            out[0] = Some(e.node("Div", &[&p, y], vec![]));
        }
        "Reciprocal" => {
            let square = e.node("Mul", &[y, y], vec![]);
            let p = e.node("Mul", &[g0, &square], vec![]);
            out[0] = Some(e.node("Neg", &[&p], vec![]));
        }
        "Clip" => {
            let mut inside: Option<String> = None;
            if n > 1 && !x(1).is_empty() {
                inside = Some(e.node("GreaterOrEqual", &[x(0), x(1)], vec![]));
            }
            if n > 2 && !x(2).is_empty() {
                let below = e.node("LessOrEqual", &[x(0), x(2)], vec![]);
                inside = Some(match inside {
                    Some(above) => e.node("And", &[&above, &below], vec![]),
                    None => below,
                });
            }
            out[0] = Some(match inside {
                Some(mask) => e.mask(&mask, g0),
                None => g0.to_string(),
            });
        }
        "Softmax" => {
            let axis = node.attr_int("axis").unwrap_or(-1);
            let axes = e.ints(&[axis]);
            let gy = e.node("Mul", &[g0, y], vec![]);
            let total = e.node("ReduceSum", &[&gy, &axes], vec![AttributeProto::int("keepdims", 1)]);
            let centred = e.node("Sub", &[g0, &total], vec![]);
            out[0] = Some(e.node("Mul", &[y, &centred], vec![]));
        }
        "LogSoftmax" => {
            let axis = node.attr_int("axis").unwrap_or(-1);
            let axes = e.ints(&[axis]);
            let total = e.node("ReduceSum", &[g0, &axes], vec![AttributeProto::int("keepdims", 1)]);
            let p = e.node("Exp", &[y], vec![]);
            let p = e.node("Mul", &[&p, &total], vec![]);
            out[0] = Some(e.node("Sub", &[g0, &p], vec![]));
        }
        "MatMul" => {
            if varies[0] {
                let bt = e.swap_last_two(x(1), x(1), node)?;
                let p = e.node("MatMul", &[g0, &bt], vec![]);
                out[0] = Some(e.unbroadcast(&p, x(0)));
            }
            if varies[1] {
                let at = e.swap_last_two(x(0), x(0), node)?;
                let p = e.node("MatMul", &[&at, g0], vec![]);
                out[1] = Some(e.unbroadcast(&p, x(1)));
            }
        }
        "Gemm" => {
            // Y = alpha · A' · B' + beta · C, with A' = A or Aᵀ (transA), B' likewise.
            let alpha = node.attr_float("alpha").unwrap_or(1.0);
            let beta = node.attr_float("beta").unwrap_or(1.0);
            let trans_a = node.attr_int("transA").unwrap_or(0) != 0;
            let trans_b = node.attr_int("transB").unwrap_or(0) != 0;
            let gemm = |e: &mut Emitter<'_>, a: &str, b: &str, ta: bool, tb: bool| {
                e.node(
                    "Gemm",
                    &[a, b],
                    vec![
                        AttributeProto::float("alpha", alpha),
                        AttributeProto::int("transA", ta as i64),
                        AttributeProto::int("transB", tb as i64),
                    ],
                )
            };
            if varies[0] {
                // dA' = alpha · g · B'ᵀ; dA = dA'ᵀ = alpha · B' · gᵀ when transA.
                out[0] = Some(if trans_a { gemm(e, x(1), g0, trans_b, true) } else { gemm(e, g0, x(1), false, !trans_b) });
            }
            if varies[1] {
                // dB' = alpha · A'ᵀ · g; dB = dB'ᵀ = alpha · gᵀ · A' when transB.
                out[1] = Some(if trans_b { gemm(e, g0, x(0), true, trans_a) } else { gemm(e, x(0), g0, !trans_a, false) });
            }
            if n > 2 && varies[2] {
                let scaled = if beta == 1.0 {
                    g0.to_string()
                } else {
                    let beta = e.scalar(beta);
                    e.node("Mul", &[g0, &beta], vec![])
                };
                out[2] = Some(e.unbroadcast(&scaled, x(2)));
            }
        }
        "Conv" => {
            require_explicit_padding(node)?;
            if varies.get(1).copied().unwrap_or(false) || varies.get(2).copied().unwrap_or(false) {
                return Err(form(node, "gradients with respect to weights or bias are not supported"));
            }
            if let Some(back) = dense_conv_gradient(e, node, g0) {
                out[0] = Some(back);
            } else if let Some(back) = flipped_kernel_conv(e, node, g0) {
                out[0] = Some(back);
            } else {
                // The adjoint of a convolution is the transposed convolution with the same
                // weights; positions the forward pass never read (when strides do not divide
                // evenly) get 0.
                let attrs = copy_attrs(node, &["dilations", "group", "kernel_shape", "pads", "strides"]);
                let back = e.node("ConvTranspose", &[g0, x(1)], attrs);
                out[0] = Some(e.pad_to(&back, x(0)));
            }
        }
        "ConvTranspose" => {
            require_explicit_padding(node)?;
            if node.attr("output_shape").is_some() {
                return Err(form(node, "output_shape is not supported; export with explicit pads"));
            }
            if varies.get(1).copied().unwrap_or(false) || varies.get(2).copied().unwrap_or(false) {
                return Err(form(node, "gradients with respect to weights or bias are not supported"));
            }
            let attrs = copy_attrs(node, &["dilations", "group", "kernel_shape", "pads", "strides"]);
            out[0] = Some(e.node("Conv", &[g0, x(1)], attrs));
        }
        "MaxPool" => {
            // Route each output's gradient to the element it took (flat indices over the whole
            // tensor, batch included) and add, so overlapping windows sum their contributions.
            let spatial = e.spatial_size(x(0));
            let indices = max_pool_indices(e.builder(), node, x(0), &node.output[0], spatial.as_deref())?;
            let flat = e.ints(&[-1]);
            let indices = e.node("Reshape", &[&indices, &flat], vec![]);
            let values = e.node("Reshape", &[g0, &flat], vec![]);
            let flat_x = e.node("Reshape", &[x(0), &flat], vec![]);
            let zeros = e.zeros_like(&flat_x);
            let routed = e.node(
                "ScatterElements",
                &[&zeros, &indices, &values],
                vec![AttributeProto::int("axis", 0), AttributeProto::string("reduction", "add")],
            );
            let shape = e.shape(x(0));
            out[0] = Some(e.node("Reshape", &[&routed, &shape], vec![]));
        }
        "AveragePool" => {
            require_explicit_padding(node)?;
            let kernel = node.attr_ints("kernel_shape").ok_or_else(|| form(node, "kernel_shape is missing"))?.to_vec();
            let padded = node.attr_ints("pads").is_some_and(|p| p.iter().any(|&v| v != 0));
            if padded && node.attr_int("count_include_pad").unwrap_or(0) == 0 {
                return Err(form(node, "padding with count_include_pad 0 is not supported yet"));
            }
            if node.attr_int("ceil_mode").unwrap_or(0) != 0 {
                return Err(form(node, "ceil_mode 1 is not supported yet"));
            }
            // Every channel alone: [N, C, ...] -> [N·C, 1, ...], spread with a constant kernel.
            let count: i64 = kernel.iter().product();
            let mut dims = vec![1i64, 1];
            dims.extend(&kernel);
            let weights = vec![1.0 / count as f32; count as usize];
            let kernel_t = e.builder().add_initializer(tensor_f32("avgpool_grad_kernel", &dims, &weights));
            let g_shape = e.shape(g0);
            let g_spatial = e.spatial(&g_shape);
            let lead = e.ints(&[-1, 1]);
            let g_split = e.node("Concat", &[&lead, &g_spatial], vec![AttributeProto::int("axis", 0)]);
            let g_channels = e.node("Reshape", &[g0, &g_split], vec![]);
            let attrs = copy_attrs(node, &["pads", "strides", "kernel_shape"]);
            let spread = e.node("ConvTranspose", &[&g_channels, &kernel_t], attrs);
            let x_shape = e.shape(x(0));
            let x_spatial = e.spatial(&x_shape);
            let spread_shape = e.node("Shape", &[&spread], vec![]);
            let spread_spatial = e.spatial(&spread_shape);
            let missing = e.node("Sub", &[&x_spatial, &spread_spatial], vec![]);
            let none = e.node("Sub", &[&missing, &missing], vec![]);
            let lead_zeros = e.ints(&[0, 0]);
            let pads = e.node("Concat", &[&lead_zeros, &none, &lead_zeros, &missing], vec![AttributeProto::int("axis", 0)]);
            let padded = e.node("Pad", &[&spread, &pads], vec![]);
            out[0] = Some(e.node("Reshape", &[&padded, &x_shape], vec![]));
        }
        "GlobalAveragePool" => {
            let shape = e.shape(x(0));
            let spatial = e.spatial(&shape);
            let count = e.node("ReduceProd", &[&spatial], vec![AttributeProto::int("keepdims", 0)]);
            let count = e.node("Cast", &[&count], vec![AttributeProto::int("to", DataType::Float as i64)]);
            let spread = e.node("Expand", &[g0, &shape], vec![]);
            out[0] = Some(e.node("Div", &[&spread, &count], vec![]));
        }
        "BatchNormalization" => {
            if node.attr_int("training_mode").unwrap_or(0) != 0 {
                return Err(form(node, "training_mode 1 is not supported (export the model in eval mode)"));
            }
            if varies[1..].iter().any(|&v| v) {
                return Err(form(node, "scale, bias, mean and variance must be constants"));
            }
            // In inference BN is x · scale/√(var+ε) + const: the same op on g with zero bias and
            // zero mean computes g · scale/√(var+ε), broadcast on the channel axis for any rank.
            let zero_bias = e.zeros_like(x(2));
            let zero_mean = e.zeros_like(x(3));
            let attrs = copy_attrs(node, &["epsilon"]);
            out[0] = Some(e.node("BatchNormalization", &[g0, x(1), &zero_bias, &zero_mean, x(4)], attrs));
        }
        "Flatten" | "Reshape" | "Squeeze" | "Unsqueeze" => {
            let shape = e.shape(x(0));
            out[0] = Some(e.node("Reshape", &[g0, &shape], vec![]));
        }
        "Transpose" => {
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
        }
        "Concat" => {
            let axis = node.attr_int("axis").ok_or_else(|| form(node, "axis is missing"))?;
            let index = e.ints(&[axis]);
            let mut sizes = Vec::new();
            for i in 0..n {
                let shape = e.shape(x(i));
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
        }
        "Pad" => {
            if node.attr_string("mode").is_some_and(|m| m != "constant") {
                return Err(form(node, "only constant padding is supported"));
            }
            if n > 3 && !x(3).is_empty() {
                return Err(form(node, "the axes input is not supported yet"));
            }
            let pads = e.constant_ints(x(1)).ok_or_else(|| form(node, "pads must be a constant"))?;
            let begins = &pads[..pads.len() / 2];
            if pads.iter().any(|&p| p < 0) {
                return Err(form(node, "negative pads (cropping) are not supported yet"));
            }
            let starts = e.ints(begins);
            let shape = e.shape(x(0));
            let ends = e.node("Add", &[&starts, &shape], vec![]);
            out[0] = Some(e.node("Slice", &[g0, &starts, &ends], vec![]));
        }
        "ReduceSum" | "ReduceMean" => {
            let keepdims = node.attr_int("keepdims").unwrap_or(1) != 0;
            let axes = match node.attr_ints("axes") {
                Some(a) => Some(a.to_vec()),
                None if n > 1 && !x(1).is_empty() => {
                    Some(e.constant_ints(x(1)).ok_or_else(|| form(node, "axes must be a constant"))?)
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
            let shape = e.shape(x(0));
            let spread = e.node("Expand", &[&spread_from, &shape], vec![]);
            out[0] = Some(if node.op_type() == "ReduceMean" {
                let total = e.node("Size", &[x(0)], vec![]);
                let kept = e.node("Size", &[y], vec![]);
                let count = e.node("Div", &[&total, &kept], vec![]);
                let count = e.node("Cast", &[&count], vec![AttributeProto::int("to", DataType::Float as i64)]);
                e.node("Div", &[&spread, &count], vec![])
            } else {
                spread
            });
        }
        "Slice" | "Gather" => {
            // Apply the same Slice/Gather to a tensor of x's flat positions, then scatter-add the
            // gradient to those positions: exact for any starts, ends, steps, negative or
            // repeated indices, with no shape known in advance.
            let shape = e.shape(x(0));
            let count = e.size(x(0));
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
        }
        "Constant" => {}
        other => {
            return Err(CompileError::UnsupportedOp { op_type: other.to_string(), node: node.name().to_string() });
        }
    }
    Ok(out)
}
