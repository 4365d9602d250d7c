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

use explaind_gradient_methods::gradcam::{Upsample, cam};
use explaind_gradient_methods::{choice, chunk_rows};
use explaind_plugin_sdk::{Context, Error, Explainer, ParamDefault, ParamKind, PluginInfo, Request, TensorView, export_plugin};

pub struct GradCam;

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
            .param("relu", ParamKind::Flag, ParamDefault::Flag(true), "Keep only positive evidence (the paper's ReLU; captum's relu_attributions).")
            .param("upsample", ParamKind::Text, ParamDefault::Text("nearest".into()), "How the map reaches the input's size: nearest or bilinear.")
            .param(
                "normalize",
                ParamKind::Text,
                ParamDefault::Text("none".into()),
                "none, or max_abs: divide each map by its largest magnitude.",
            )
    }

    fn create() -> Result<Self, Error> {
        Ok(GradCam)
    }

    fn explain(&self, ctx: &Context<'_>, request: &Request<'_>) -> Result<(), Error> {
        let relu = request.flag("relu")?;
        let upsample = Upsample::parse(choice(request, "upsample", Upsample::NAMES)?).expect("checked");
        let normalize = choice(request, "normalize", &["none", "max_abs"])? == "max_abs";
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
            let result = ctx.layer_gradient(&views, TensorView::new(&seed_shape, &seeds), layer.as_deref())?;
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
