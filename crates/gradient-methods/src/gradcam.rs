//! Grad-CAM maps (Selvaraju et al.; captum's `LayerGradCam`) and their upsampling to the input
//! (captum's `LayerAttribution.interpolate`, i.e. PyTorch's `interpolate`).

/// The Grad-CAM map of one row: channel weights are the spatial means of the gradient, the
/// map is Σ_c weight_c · activation_c. `activation` and `gradient` are [C, *spatial] row-major;
/// `map` receives the spatial product of elements.
pub fn cam(activation: &[f32], gradient: &[f32], channels: usize, relu: bool, map: &mut [f32]) {
    let spatial = map.len();
    debug_assert_eq!(activation.len(), channels * spatial);
    map.fill(0.0);
    for c in 0..channels {
        let plane = c * spatial..(c + 1) * spatial;
        let weight = gradient[plane.clone()].iter().map(|&g| g as f64).sum::<f64>() / spatial as f64;
        for (m, &a) in map.iter_mut().zip(&activation[plane]) {
            *m += (weight * a as f64) as f32;
        }
    }
    if relu {
        map.iter_mut().for_each(|m| *m = m.max(0.0));
    }
}

/// How a layer map is brought to the input's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Upsample {
    /// PyTorch's `nearest`: source index ⌊dst · in/out⌋.
    Nearest,
    /// PyTorch's `bilinear` with `align_corners=False`: half-pixel centres, edges clamped.
    Bilinear,
}

impl Upsample {
    pub const NAMES: &'static [&'static str] = &["nearest", "bilinear"];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "nearest" => Some(Upsample::Nearest),
            "bilinear" => Some(Upsample::Bilinear),
            _ => None,
        }
    }

    /// Resizes the [h, w] map `src` to [out_h, out_w] in `dst`.
    pub fn resize(self, src: &[f32], (h, w): (usize, usize), dst: &mut [f32], (out_h, out_w): (usize, usize)) {
        debug_assert_eq!(src.len(), h * w);
        debug_assert_eq!(dst.len(), out_h * out_w);
        match self {
            Upsample::Nearest => {
                let rows: Vec<usize> = (0..out_h).map(|y| nearest(y, h, out_h)).collect();
                let cols: Vec<usize> = (0..out_w).map(|x| nearest(x, w, out_w)).collect();
                for (y, &sy) in rows.iter().enumerate() {
                    for (x, &sx) in cols.iter().enumerate() {
                        dst[y * out_w + x] = src[sy * w + sx];
                    }
                }
            }
            Upsample::Bilinear => {
                let rows: Vec<(usize, usize, f32)> = (0..out_h).map(|y| linear(y, h, out_h)).collect();
                let cols: Vec<(usize, usize, f32)> = (0..out_w).map(|x| linear(x, w, out_w)).collect();
                for (y, &(y0, y1, ly)) in rows.iter().enumerate() {
                    for (x, &(x0, x1, lx)) in cols.iter().enumerate() {
                        let top = src[y0 * w + x0] * (1.0 - lx) + src[y0 * w + x1] * lx;
                        let bottom = src[y1 * w + x0] * (1.0 - lx) + src[y1 * w + x1] * lx;
                        dst[y * out_w + x] = top * (1.0 - ly) + bottom * ly;
                    }
                }
            }
        }
    }
}

fn nearest(dst: usize, size: usize, out: usize) -> usize {
    // PyTorch computes the scale in float32 and floors the product.
    let scale = size as f32 / out as f32;
    ((dst as f32 * scale).floor() as usize).min(size - 1)
}

/// The two source indices and the weight of the second for destination index `dst`.
fn linear(dst: usize, size: usize, out: usize) -> (usize, usize, f32) {
    let scale = size as f32 / out as f32;
    let src = ((dst as f32 + 0.5) * scale - 0.5).max(0.0);
    let lower = (src.floor() as usize).min(size - 1);
    let upper = (lower + 1).min(size - 1);
    (lower, upper, src - lower as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_map_weights_each_channel_by_its_mean_gradient() {
        // Two channels of 2 elements: weights 1 (mean of [0, 2]) and −0.5 (mean of [−1, 0]).
        let activation = [1.0, 2.0, 4.0, 8.0];
        let gradient = [0.0, 2.0, -1.0, 0.0];
        let mut map = [0.0; 2];
        cam(&activation, &gradient, 2, false, &mut map);
        assert_eq!(map, [1.0 - 2.0, 2.0 - 4.0]);
        cam(&activation, &gradient, 2, true, &mut map);
        assert_eq!(map, [0.0, 0.0]);
    }

    #[test]
    fn nearest_upsampling_repeats_and_bilinear_interpolates_with_half_pixel_centres() {
        let src = [0.0, 1.0, 2.0, 3.0]; // [[0, 1], [2, 3]]
        let mut dst = [0.0; 16];
        Upsample::Nearest.resize(&src, (2, 2), &mut dst, (4, 4));
        assert_eq!(&dst[..4], &[0.0, 0.0, 1.0, 1.0]);
        assert_eq!(&dst[12..], &[2.0, 2.0, 3.0, 3.0]);
        Upsample::Bilinear.resize(&src, (2, 2), &mut dst, (4, 4));
        // Row 0 maps to source row −0.25 → clamped to 0; columns 0.25 → between 0 and 1.
        // (torch.nn.functional.interpolate(t, size=(4, 4), mode="bilinear") gives the same.)
        assert_eq!(&dst[..4], &[0.0, 0.25, 0.75, 1.0]);
        assert_eq!(&dst[4..8], &[0.5, 0.75, 1.25, 1.5]);
        assert_eq!(&dst[12..], &[2.0, 2.25, 2.75, 3.0]);
    }
}
