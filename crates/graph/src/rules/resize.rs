//! `Resize` on 4-D NCHW tensors over the two spatial axes: the forms `torch.onnx` exports for
//! `nn.Upsample` and `F.interpolate` (`nearest` with any `nearest_mode`, `linear`), with
//! constant scales or sizes and a spatial size the file tells, or sizes computed at run time
//! (`F.interpolate(x, size=skip.shape[2:])`) where the file tells the output's spatial size.
//!
//! Resize is linear in X: along each spatial axis it is a matrix product with an interpolation
//! matrix A (output length × input length), so its vector-Jacobian product is `Aᵀ` along H and
//! `Bᵀ` along W, two `MatMul`s with constants built here the way ONNX Runtime's kernel picks
//! its source pixels and weights. DeepLIFT's multiplier is the same product.

use super::{Emitter, VjpResult, VjpRule, form, input as x, no_gradients, output};
use explaind_onnx::{NodeProto, tensor_f32};

pub(crate) const RULES: &[(&str, VjpRule)] = &[("Resize", resize)];

/// The largest interpolation matrix (output length × input length) built for one axis.
const MAX_MATRIX_ENTRIES: i64 = 1 << 24;

fn resize(e: &mut Emitter<'_>, node: &NodeProto, g0: &str, varies: &[bool]) -> VjpResult {
    let mut out = no_gradients(node);
    if varies.iter().skip(1).any(|&v| v) {
        return Err(form(node, "a varying roi, scales or sizes input is not supported"));
    }
    let mode = node.attr_string("mode").unwrap_or("nearest");
    if !matches!(mode, "nearest" | "linear") {
        return Err(form(node, &format!("mode {mode:?} is not supported (nearest and linear are)")));
    }
    let transform = node.attr_string("coordinate_transformation_mode").unwrap_or("half_pixel");
    let supported = ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "half_pixel_symmetric"];
    let nearest_only = mode == "nearest" && transform == "tf_half_pixel_for_nn";
    if !(supported.contains(&transform) || nearest_only) {
        return Err(form(node, &format!("coordinate_transformation_mode {transform:?} is not supported with mode {mode:?}")));
    }
    let nearest_mode = node.attr_string("nearest_mode").unwrap_or("round_prefer_floor");
    if !matches!(nearest_mode, "round_prefer_floor" | "round_prefer_ceil" | "floor" | "ceil") {
        return Err(form(node, &format!("nearest_mode {nearest_mode:?} is not supported")));
    }
    if node.attr_int("antialias").unwrap_or(0) != 0 {
        return Err(form(node, "antialias 1 is not supported"));
    }
    let Some(size) = e.spatial_size(x(node, 0)) else {
        return Err(form(node, "the input's spatial size must be static (declared in the file) to build the interpolation"));
    };
    let [h, w] = size[..] else { return Err(form(node, "only 4-D (NCHW) inputs are supported")) };
    // Which axes the scales or sizes list (opset 18's `axes`), as indices into [N, C, H, W].
    let axes: Vec<usize> = match node.attr_ints("axes") {
        Some(axes) => axes.iter().map(|&a| if a < 0 { a + 4 } else { a }).map(|a| a as usize).collect(),
        None => vec![0, 1, 2, 3],
    };
    if axes.iter().any(|&a| a > 3) {
        return Err(form(node, "axes out of range for a 4-D input"));
    }
    let named = |i: usize| node.input.get(i).map(String::as_str).filter(|n| !n.is_empty());
    // Per axis of [N, C, H, W]: the scale and the output length.
    let mut scales = [1f32; 4];
    let mut lengths = [None, None, Some(h), Some(w)];
    if let Some(sizes) = named(3) {
        if node.attr_string("keep_aspect_ratio_policy").is_some_and(|p| p != "stretch") {
            return Err(form(node, "keep_aspect_ratio_policy other than stretch is not supported"));
        }
        match e.constant_ints(sizes) {
            Some(sizes) => constant_sizes(e, node, &axes, &sizes, &size, &mut scales, &mut lengths)?,
            None => {
                // Computed at run time (torch's `F.interpolate(x, size=skip.shape[2:])` gives
                // Concat(Slice(Shape(skip)), ...)): the output's spatial size the file tells
                // stands in for them. ONNX Runtime's scale for a size is output / input.
                let resized = e.spatial_size(output(node)).ok_or_else(|| {
                    form(node, "sizes computed at run time need the output's spatial size declared in the file (value_info)")
                })?;
                if axes.iter().any(|&a| a < 2) && !keeps_batch_and_channels(e, node) {
                    return Err(form(
                        node,
                        "sizes computed at run time must keep the batch and channel lengths: declare them alike for \
                         the input and the output, or list axes 2 and 3 only",
                    ));
                }
                for axis in axes.iter().copied().filter(|&a| a >= 2) {
                    scales[axis] = resized[axis - 2] as f32 / size[axis - 2] as f32;
                    lengths[axis] = Some(resized[axis - 2]);
                }
            }
        }
    } else if let Some(name) = named(2) {
        let (_, values) = e.constant_f32(name).ok_or_else(|| form(node, "scales must be a constant"))?;
        if values.len() != axes.len() {
            return Err(form(node, "scales and axes differ in length"));
        }
        for (&axis, &s) in axes.iter().zip(&values) {
            if axis < 2 && s != 1.0 {
                return Err(form(node, "resizing the batch or channel axis is not supported"));
            }
            if s.is_nan() || s <= 0.0 {
                return Err(form(node, "scales must be positive"));
            }
            scales[axis] = s;
            if axis >= 2 {
                lengths[axis] = Some((size[axis - 2] as f32 * s).floor() as i64);
            }
        }
    } else {
        return Err(form(node, "neither scales nor sizes is given"));
    }
    let (big_h, big_w) = (lengths[2].unwrap_or(h), lengths[3].unwrap_or(w));
    if big_h < 1 || big_w < 1 || big_h * h > MAX_MATRIX_ENTRIES || big_w * w > MAX_MATRIX_ENTRIES {
        return Err(form(node, "the output size is empty or too large for an interpolation matrix"));
    }
    let axis_matrix =
        |input: i64, output: i64, scale: f32| -> Vec<f32> { interpolation(mode, transform, nearest_mode, input, output, scale) };
    // g [N, C, H, W] · B [W, w] -> [N, C, H, w]; then Aᵀ [h, H] · that -> [N, C, h, w].
    let b = axis_matrix(w, big_w, scales[3]);
    let b = e.builder().add_initializer(tensor_f32("resize_grad_columns", &[big_w, w], &b));
    let a = axis_matrix(h, big_h, scales[2]);
    let mut a_t = vec![0f32; a.len()];
    for row in 0..big_h as usize {
        for col in 0..h as usize {
            a_t[col * big_h as usize + row] = a[row * h as usize + col];
        }
    }
    let a_t = e.builder().add_initializer(tensor_f32("resize_grad_rows", &[h, big_h], &a_t));
    let columns = e.node("MatMul", &[g0, &b], vec![]);
    out[0] = Some(e.node("MatMul", &[&a_t, &columns], vec![]));
    Ok(out)
}

/// Scales and output lengths from constant `sizes` over `axes` (indices into [N, C, H, W]) of
/// an input of spatial size `size`: the batch or channel length listed must be the one the
/// file declares for X (only spatial resizing).
fn constant_sizes(
    e: &Emitter<'_>,
    node: &NodeProto,
    axes: &[usize],
    sizes: &[i64],
    size: &[i64],
    scales: &mut [f32; 4],
    lengths: &mut [Option<i64>; 4],
) -> Result<(), crate::CompileError> {
    if sizes.len() != axes.len() {
        return Err(form(node, "sizes and axes differ in length"));
    }
    for (&axis, &s) in axes.iter().zip(sizes) {
        if axis < 2 {
            // Only spatial resizing: the batch or channel length listed must be the one
            // the file declares for X.
            let declared = e.source_graph().find_value_info(x(node, 0)).and_then(|v| v.tensor_shape());
            let length = declared.and_then(|d| match d.get(axis) {
                Some(Some(explaind_onnx::Dim::Value(v))) => Some(*v),
                _ => None,
            });
            if length != Some(s) {
                return Err(form(
                    node,
                    "sizes must keep the batch and channel lengths (declared statically), or list axes 2 and 3 only",
                ));
            }
            continue;
        }
        scales[axis] = s as f32 / size[axis - 2] as f32;
        lengths[axis] = Some(s);
    }
    Ok(())
}

/// Whether the file declares the Resize's input and output with the same batch and channel
/// lengths (equal sizes or equal names).
fn keeps_batch_and_channels(e: &Emitter<'_>, node: &NodeProto) -> bool {
    let declared = |name: &str| e.source_graph().find_value_info(name).and_then(|v| v.tensor_shape());
    match (declared(x(node, 0)), declared(output(node))) {
        (Some(input), Some(resized)) if input.len() == 4 && resized.len() == 4 => {
            (0..2).all(|axis| input[axis].is_some() && input[axis] == resized[axis])
        }
        _ => false,
    }
}

/// The interpolation matrix of one axis, `output × input`, row-major: row i holds the weights
/// of the input elements output element i reads, as ONNX Runtime's CPU kernel computes them
/// (in float32, its coordinate formulas as written there).
pub fn interpolation(mode: &str, transform: &str, nearest_mode: &str, input: i64, output: i64, scale: f32) -> Vec<f32> {
    let (n_in, n_out) = (input as usize, output as usize);
    let mut matrix = vec![0f32; n_in * n_out];
    for i in 0..n_out {
        let xr = i as f32;
        let original = match transform {
            "half_pixel" => (xr + 0.5) / scale - 0.5,
            "pytorch_half_pixel" => {
                if output > 1 {
                    (xr + 0.5) / scale - 0.5
                } else {
                    0.0
                }
            }
            "align_corners" => {
                if output == 1 {
                    0.0
                } else {
                    xr * (input - 1) as f32 / (output - 1) as f32
                }
            }
            "asymmetric" => xr / scale,
            "tf_half_pixel_for_nn" => (xr + 0.5) / scale,
            // half_pixel_symmetric (opset 19).
            _ => {
                let adjustment = output as f32 / (scale * input as f32);
                let center = input as f32 / 2.0;
                let offset = center * (1.0 - adjustment);
                offset + (xr + 0.5) / scale - 0.5
            }
        };
        let row = &mut matrix[i * n_in..(i + 1) * n_in];
        if mode == "nearest" {
            let picked = match nearest_mode {
                "floor" => original.floor(),
                "ceil" => original.ceil(),
                "round_prefer_ceil" => original.round(),
                // round_prefer_floor: halves go down.
                _ => {
                    if original == original.trunc() + 0.5 {
                        original.floor()
                    } else {
                        original.round()
                    }
                }
            };
            let picked = (picked as i64).clamp(0, input - 1) as usize;
            row[picked] = 1.0;
        } else {
            let clamped = original.clamp(0.0, (input - 1) as f32);
            let first = (clamped as i64).min(input - 1);
            let second = (first + 1).min(input - 1);
            let (to_first, to_second) = ((clamped - first as f32).abs(), (clamped - second as f32).abs());
            if first == second {
                row[first as usize] += 1.0;
            } else {
                row[first as usize] += to_second;
                row[second as usize] += to_first;
            }
        }
    }
    matrix
}

#[cfg(test)]
mod tests {
    use super::interpolation;

    #[test]
    fn nearest_doubling_repeats_each_element() {
        let m = interpolation("nearest", "asymmetric", "floor", 2, 4, 2.0);
        assert_eq!(m, vec![1., 0., 1., 0., 0., 1., 0., 1.]);
    }

    #[test]
    fn linear_rows_sum_to_one() {
        for transform in ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric", "half_pixel_symmetric"] {
            let m = interpolation("linear", transform, "", 3, 7, 7.0 / 3.0);
            for row in m.chunks(3) {
                assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6, "{transform}: {row:?}");
            }
        }
    }
}
