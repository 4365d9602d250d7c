//! Convolution and pooling: `Conv`, `ConvTranspose`, `MaxPool`, `AveragePool` and
//! `GlobalAveragePool`, with the faster exact forms of a convolution's input gradient (a dense
//! Jacobian product, a flipped-kernel `Conv`) and [`max_pool_indices`], the max-pool argmax
//! every execution provider computes alike.

use super::{Emitter, VjpResult, VjpRule, copy_attrs, form, input as x, no_gradients};
use crate::CompileError;
use explaind_onnx::proto::tensor_proto::DataType;
use explaind_onnx::{AttributeProto, GraphBuilder, NodeProto, tensor_f32, tensor_i64};

pub(crate) const RULES: &[(&str, VjpRule)] = &[
    ("Conv", conv),
    ("ConvTranspose", conv_transpose),
    ("MaxPool", max_pool),
    ("AveragePool", average_pool),
    ("GlobalAveragePool", global_average_pool),
];

fn conv(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, varies: &[bool]) -> VjpResult {
    let mut out = no_gradients(node);
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
        // weights. Its output is trimmed at the start only: trimming the end padding too
        // would drop the last input positions that a strided window still reads (stride 2,
        // kernel 3, padding 1 on an even size), so the end is cropped, or padded with the 0
        // of positions the forward pass never read, to the input's size instead.
        let mut attrs = copy_attrs(node, &["dilations", "group", "kernel_shape", "strides"]);
        attrs.extend(leading_pads_only(node));
        let back = e.node("ConvTranspose", &[g0, x(node, 1)], attrs);
        out[0] = Some(e.pad_to(&back, x(node, 0)));
    }
    Ok(out)
}

/// A convolution's `pads` with the end pads zeroed (absent when it has none).
fn leading_pads_only(node: &NodeProto) -> Option<AttributeProto> {
    let pads = node.attr_ints("pads")?;
    let spatial = pads.len() / 2;
    Some(AttributeProto::ints("pads", pads[..spatial].iter().copied().chain(std::iter::repeat_n(0, spatial))))
}

fn conv_transpose(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, varies: &[bool]) -> VjpResult {
    let mut out = no_gradients(node);
    require_explicit_padding(node)?;
    if node.attr("output_shape").is_some() {
        return Err(form(node, "output_shape is not supported; export with explicit pads"));
    }
    if varies.get(1).copied().unwrap_or(false) || varies.get(2).copied().unwrap_or(false) {
        return Err(form(node, "gradients with respect to weights or bias are not supported"));
    }
    let attrs = copy_attrs(node, &["dilations", "group", "kernel_shape", "pads", "strides"]);
    out[0] = Some(e.node("Conv", &[g0, x(node, 1)], attrs));
    Ok(out)
}

fn max_pool(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, _: &[bool]) -> VjpResult {
    let mut out = no_gradients(node);
    // Route each output's gradient to the element it took (flat indices over the whole
    // tensor, batch included) and add, so overlapping windows sum their contributions.
    let spatial = e.portable_spatial_size(x(node, 0));
    let indices = max_pool_indices(e.builder(), node, x(node, 0), &node.output[0], spatial.as_deref())?;
    let flat = e.ints(&[-1]);
    let indices = e.node("Reshape", &[&indices, &flat], vec![]);
    let values = e.node("Reshape", &[g0, &flat], vec![]);
    let flat_x = e.node("Reshape", &[x(node, 0), &flat], vec![]);
    let zeros = e.zeros_like(&flat_x);
    let routed = e.node(
        "ScatterElements",
        &[&zeros, &indices, &values],
        vec![AttributeProto::int("axis", 0), AttributeProto::string("reduction", "add")],
    );
    let shape = e.shape(x(node, 0));
    out[0] = Some(e.node("Reshape", &[&routed, &shape], vec![]));
    Ok(out)
}

fn average_pool(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, _: &[bool]) -> VjpResult {
    let mut out = no_gradients(node);
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
    // Trimmed at the start only, as a convolution's adjoint is (see `conv`).
    let mut attrs = copy_attrs(node, &["strides", "kernel_shape"]);
    attrs.extend(leading_pads_only(node));
    let spread = e.node("ConvTranspose", &[&g_channels, &kernel_t], attrs);
    let x_shape = e.shape(x(node, 0));
    let x_spatial = e.spatial(&x_shape);
    let spread_shape = e.node("Shape", &[&spread], vec![]);
    let spread_spatial = e.spatial(&spread_shape);
    let missing = e.node("Sub", &[&x_spatial, &spread_spatial], vec![]);
    let none = e.node("Sub", &[&missing, &missing], vec![]);
    let lead_zeros = e.ints(&[0, 0]);
    let pads = e.node("Concat", &[&lead_zeros, &none, &lead_zeros, &missing], vec![AttributeProto::int("axis", 0)]);
    let padded = e.node("Pad", &[&spread, &pads], vec![]);
    out[0] = Some(e.node("Reshape", &[&padded, &x_shape], vec![]));
    Ok(out)
}

fn global_average_pool(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, _: &[bool]) -> VjpResult {
    let mut out = no_gradients(node);
    let shape = e.shape(x(node, 0));
    let spatial = e.spatial(&shape);
    let count = e.node("ReduceProd", &[&spatial], vec![AttributeProto::int("keepdims", 0)]);
    let count = e.node("Cast", &[&count], vec![AttributeProto::int("to", DataType::Float as i64)]);
    let spread = e.node("Expand", &[g0, &shape], vec![]);
    out[0] = Some(e.node("Div", &[&spread, &count], vec![]));
    Ok(out)
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
/// or grey input layer) ConvTranspose is faster (measured on a 3-channel layer; BENCHMARKS.md
/// has the backward-pass timings).
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
