//! Grad-CAM (Selvaraju et al.; captum's `LayerGradCam`): at a convolutional layer, each
//! channel's weight is the spatial mean of the target's gradient there, and the map is the
//! weighted sum of the layer's channels, optionally through a ReLU. The layer is named by its
//! ONNX tensor; by default the host picks the last 2-D convolution's output. The host compiles a
//! graph that returns both the layer and its gradient (ABI 1.2 `layer_gradient`).
//!
//! Results: the extra `layer_map` [N, T, *layer_spatial_shape] is the map itself (captum's
//! `LayerGradCam` output without its channel axis); the attributions bring it to each 4-D
//! input's [H, W] (nearest or bilinear, as PyTorch's `interpolate`) and repeat it over the
//! input's channels. The chosen layer and its shape are reported in the response's info.
//!
//! Cost: N·T layer-gradient rows, in chunks; memory: a chunk's inputs, seeds, and the layer's
//! activation and gradient the host returns for it, and the `layer_map` extra.

use explaind_gradient_methods::gradcam::{Upsample, cam};
use explaind_gradient_methods::{choice, chunk_rows, sum_row_len};
use explaind_plugin_sdk::{
    Context, Cost, Error, Explainer, ParamDefault, ParamKind, PluginInfo, Request, TensorView, export_plugin,
};

pub struct GradCam;

/// The layer's size is unknown until the host has compiled the graph, so the estimate assumes
/// an activation of at most this many input rows' elements per row (convolution stacks trade
/// space for channels: the last one of a ResNet or VGG on 224×224×3 images holds 100352
/// elements to the input's 150528), and a spatial map no larger than an input row.
pub const LAYER_ROWS: f64 = 4.0;

/// Rows (input, target pairs) between two cancellation checks while maps are computed.
const CHECK_PAIRS: usize = 16;

/// The host and the SDK report a bad layer as `layer: ...`; the client set it as
/// `parameters.layer`, so that is the name its refusal carries.
fn name_the_layer(e: Error) -> Error {
    match e.message.strip_prefix("layer:") {
        Some(rest) => Error::new(e.code, format!("parameters.layer:{rest}")),
        None => e,
    }
}

/// The options a request chose: (upsample, normalize to max |value|).
fn options(request: &Request<'_>) -> Result<(Upsample, bool), Error> {
    let upsample = Upsample::parse(choice(request, "upsample", Upsample::NAMES)?).expect("checked");
    let normalize = choice(request, "normalize", &["none", "max_abs"])? == "max_abs";
    Ok((upsample, normalize))
}

impl Explainer for GradCam {
    fn info() -> PluginInfo {
        PluginInfo::new("grad-cam", env!("CARGO_PKG_VERSION"))
            .description(
                "Grad-CAM (captum's LayerGradCam): a layer's channels weighted by the spatial mean of \
                 the target's gradient. The extra `layer_map` [N, T, h, w] is the map at the layer; \
                 attributions are the map upsampled to each 4-D input and repeated over its channels. \
                 info[\"layer\"] names the layer used.",
            )
            .reentrant()
            .needs_gradients()
            .param(
                "layer",
                ParamKind::Text,
                ParamDefault::Optional,
                "ONNX tensor name of the layer; default: the output of the last 2-D convolution.",
            )
            .max_len(4096)
            .param(
                "relu",
                ParamKind::Flag,
                ParamDefault::Flag(true),
                "Keep only positive evidence (the paper's ReLU; captum's relu_attributions).",
            )
            .param(
                "upsample",
                ParamKind::Text,
                ParamDefault::Text("nearest".into()),
                "How the map reaches the input's size: nearest or bilinear.",
            )
            .max_len(32)
            .param(
                "normalize",
                ParamKind::Text,
                ParamDefault::Text("none".into()),
                "none, or max_abs: divide each map by its largest magnitude.",
            )
            .max_len(32)
    }

    fn create() -> Result<Self, Error> {
        Ok(GradCam)
    }

    /// Rows: N·T (`layer_gradient`, a chunk at a time). Memory: a chunk's tiled inputs and
    /// seeds, the layer's activation and gradient for it (see [`LAYER_ROWS`]), the `layer_map`
    /// extra [N, T, *spatial] and one upsampled map.
    fn estimate(&self, request: &Request<'_>) -> Result<Cost, Error> {
        options(request)?;
        let pairs = (request.batch_size() * request.num_targets()) as f64;
        let chunk = (chunk_rows(request) as f64).min(pairs.max(1.0));
        let row = sum_row_len(request);
        let per_row = 4.0 * row + 4.0 * request.output_row_size() as f64 + 2.0 * 4.0 * LAYER_ROWS * row;
        Ok(Cost::new(pairs, chunk * per_row + 4.0 * pairs * row + 4.0 * row))
    }

    fn explain(&self, ctx: &Context<'_>, request: &Request<'_>) -> Result<(), Error> {
        let relu = request.flag("relu")?;
        let (upsample, normalize) = options(request)?;
        let mut layer: Option<String> = request.text("layer")?.filter(|l| !l.is_empty()).map(str::to_string);
        let inputs = request.inputs();
        let (n, t) = (request.batch_size(), request.num_targets());
        let output_row = request.output_row_size();
        let chunk = chunk_rows(request);

        // Filled after the first call, when the layer's shape is known.
        let mut maps: Option<(&mut [f32], Vec<i64>)> = None;
        let mut first = 0;
        while first < n * t {
            ctx.check_cancelled()?;
            let count = chunk.min(n * t - first);
            // Rows: (input, target) pairs; each input row repeated per target.
            let mut tiled: Vec<(Vec<i64>, Vec<f32>)> = inputs
                .iter()
                .map(|x| {
                    let mut shape = x.shape.to_vec();
                    shape[0] = count as i64;
                    (shape, Vec::with_capacity(count * x.row_len()))
                })
                .collect();
            let mut seeds = vec![0f32; count * output_row];
            for r in 0..count {
                let pair = first + r;
                for (x, (_, data)) in inputs.iter().zip(&mut tiled) {
                    data.extend_from_slice(x.row(pair / t));
                }
                seeds[r * output_row + request.targets(pair / t)[pair % t] as usize] = 1.0;
            }
            let views: Vec<TensorView> = tiled.iter().map(|(s, d)| TensorView::new(s, d)).collect();
            let seed_shape = [count as i64, output_row as i64];
            let result =
                ctx.layer_gradient(&views, TensorView::new(&seed_shape, &seeds), layer.as_deref()).map_err(name_the_layer)?;
            let shape = result.activation.shape().to_vec();
            if maps.is_none() {
                if shape.len() < 3 {
                    return Err(Error::invalid_argument(format!(
                        "parameters.layer: {} has shape {:?} per batch; Grad-CAM needs channels and spatial axes ([B, C, H, W])",
                        result.layer, shape
                    )));
                }
                let mut map_shape = vec![n as i64, t as i64];
                map_shape.extend(&shape[2..]);
                ctx.info("layer", &result.layer)?;
                ctx.info("layer_shape", &format!("{:?}", &shape[1..]))?;
                maps = Some((ctx.extra("layer_map", &map_shape)?, map_shape));
                layer = Some(result.layer.clone());
            }
            let (map_out, _) = maps.as_mut().expect("set above");
            let channels = shape[1] as usize;
            let spatial: usize = shape[2..].iter().product::<i64>() as usize;
            let (activation, gradient) = (result.activation.data(), result.gradient.data());
            for r in 0..count {
                if r % CHECK_PAIRS == CHECK_PAIRS - 1 {
                    ctx.check_cancelled()?;
                }
                let pair = first + r;
                let plane = r * channels * spatial..(r + 1) * channels * spatial;
                let map = &mut map_out[pair * spatial..(pair + 1) * spatial];
                cam(&activation[plane.clone()], &gradient[plane], channels, relu, map);
                if normalize {
                    let scale = map.iter().fold(0f32, |m, v| m.max(v.abs()));
                    if scale > 0.0 {
                        map.iter_mut().for_each(|v| *v /= scale);
                    }
                }
            }
            first += count;
        }

        // Bring the maps to every 4-D input: [N, T, C, H, W], the map repeated over C.
        let Some((map_out, map_shape)) = maps else { return Ok(()) };
        if map_shape.len() != 4 {
            ctx.info("attributions", "zero: the layer is not 4-D, so its map has no image to be drawn over")?;
            return Ok(());
        }
        let (h, w) = (map_shape[2] as usize, map_shape[3] as usize);
        for (i, x) in inputs.iter().enumerate() {
            if x.shape.len() != 4 {
                continue;
            }
            let (c, big_h, big_w) = (x.shape[1] as usize, x.shape[2] as usize, x.shape[3] as usize);
            let out = ctx.attributions(i)?;
            let mut resized = vec![0f32; big_h * big_w];
            for pair in 0..n * t {
                if pair % CHECK_PAIRS == CHECK_PAIRS - 1 {
                    ctx.check_cancelled()?;
                }
                upsample.resize(&map_out[pair * h * w..(pair + 1) * h * w], (h, w), &mut resized, (big_h, big_w));
                for channel in 0..c {
                    let start = (pair * c + channel) * big_h * big_w;
                    out[start..start + big_h * big_w].copy_from_slice(&resized);
                }
            }
        }
        Ok(())
    }
}

export_plugin!(GradCam);

#[cfg(test)]
mod tests {
    use explaind_plugin_sdk::testing::{FakeRequest, Value};

    #[test]
    fn every_parameter_is_bounded() {
        explaind_plugin_sdk::plugin_under_test!().assert_every_parameter_is_bounded();
    }

    #[test]
    fn estimate_is_one_layer_gradient_row_per_input_and_target() {
        let plugin = explaind_plugin_sdk::plugin_under_test!();
        // N = 2 images [1, 8, 8] (64 elements), T = 10 targets: 20 rows, one chunk of 20.
        // Per chunk row: input 4·64 + seed 4·10 + activation and gradient 2·4·(4·64) = 2344;
        // 20 rows = 46880; the layer map at most 4·20·64 = 5120; one upsampled map 256.
        let cost = plugin.estimate(&FakeRequest::zeros(&[2, 1, 8, 8], 10)).unwrap();
        assert_eq!((cost.model_rows, cost.scratch_bytes, cost.driver), (20.0, 52256.0, None));
        let bad = FakeRequest::zeros(&[2, 1, 8, 8], 10).param("upsample", Value::Text("cubic".into()));
        assert!(plugin.estimate(&bad).unwrap_err().message.starts_with("parameters.upsample:"));
    }

    #[test]
    fn a_bad_layer_is_refused_under_its_parameter_name() {
        let host = explaind_plugin_sdk::Error::invalid_argument("layer: model m has no tensor named \"x\"");
        let named = super::name_the_layer(host);
        assert_eq!(named.message, "parameters.layer: model m has no tensor named \"x\"");
        assert_eq!(named.code, explaind_plugin_sdk::EXD_INVALID_ARGUMENT);
        let other = super::name_the_layer(explaind_plugin_sdk::Error::internal("gradient: out of memory"));
        assert_eq!(other.message, "gradient: out of memory");
    }
}
