//! SmoothGrad (Smilkov et al.; captum's `NoiseTunnel` with `smoothgrad`): the mean of saliency
//! or of integrated gradients over copies of the input with Gaussian noise added. The noise's
//! standard deviation is `noise_level` × (max − min) of each input row, as in the paper, or
//! `stdev` when given. Draws are seeded per (input, sample), so a request is reproducible
//! whatever its batch; every noisy point (and for integrated gradients every path point of it)
//! goes through the host's graph-compiled gradient (ABI 1.1) in few batched runs.

use explaind_gradient_methods::quadrature::PathMethod;
use explaind_gradient_methods::{GradientRows, Noise, attribution_results, choice, integer_at_least};
use explaind_plugin_sdk::{Context, Error, Explainer, ParamDefault, ParamKind, PluginInfo, Request, export_plugin};

pub struct SmoothGrad;

impl Explainer for SmoothGrad {
    fn info() -> PluginInfo {
        PluginInfo::new("smoothgrad", env!("CARGO_PKG_VERSION"))
            .description(
                "SmoothGrad: saliency or integrated gradients averaged over noisy copies of the input \
                 (captum's NoiseTunnel, smoothgrad). Seeded and reproducible.",
            )
            .reentrant()
            .needs_gradients()
            .param("over", ParamKind::Text, ParamDefault::Text("saliency".into()), "The smoothed method: saliency or integrated_gradients.")
            .param("samples", ParamKind::Integer, ParamDefault::Integer(50), "Noisy copies per input.")
            .param(
                "noise_level",
                ParamKind::Number,
                ParamDefault::Number(0.15),
                "Noise standard deviation as a fraction of each input row's range (max - min).",
            )
            .param("stdev", ParamKind::Number, ParamDefault::Optional, "Absolute noise standard deviation (overrides noise_level).")
            .param("seed", ParamKind::Integer, ParamDefault::Integer(0), "Seed of the noise.")
            .param("abs", ParamKind::Flag, ParamDefault::Flag(true), "Saliency: average |gradient| (captum's default).")
            .param("steps", ParamKind::Integer, ParamDefault::Integer(50), "Integrated gradients: points on the path.")
            .param(
                "method",
                ParamKind::Text,
                ParamDefault::Text("gausslegendre".into()),
                "Integrated gradients: gausslegendre, riemann_left, riemann_right, riemann_middle or riemann_trapezoid.",
            )
            .param("baseline", ParamKind::Number, ParamDefault::Number(0.0), "Integrated gradients: value of every baseline element.")
    }

    fn create() -> Result<Self, Error> {
        Ok(SmoothGrad)
    }

    fn explain(&self, ctx: &Context<'_>, request: &Request<'_>) -> Result<(), Error> {
        let over_ig = choice(request, "over", &["saliency", "integrated_gradients"])? == "integrated_gradients";
        let samples = integer_at_least(request, "samples", 1)?;
        let noise = Noise::new(request.integer("seed")?.unwrap_or(0));
        let sigmas = noise_sigmas(request)?;
        let inputs = request.inputs();
        let num_inputs = inputs.len();
        // Noise of model input i for input row n and sample s: its own stream.
        let draw = move |n: usize, i: usize, s: usize, dst: &mut [f32]| {
            Noise::gaussian(&mut noise.stream(n * num_inputs + i, s), sigmas[n * num_inputs + i], dst)
        };
        let max_len = inputs.iter().map(|x| x.row_len()).max().unwrap_or(0);
        let (mut point_noise, mut combine_noise) = (vec![0f32; max_len], vec![0f32; max_len]);

        let mut results = attribution_results(ctx, request)?;
        if !over_ig {
            let abs = request.flag("abs")?;
            let scale = 1.0 / samples as f32;
            return GradientRows::new(request, samples).run(
                ctx,
                &mut results,
                |row, i, dst| {
                    let eps = &mut point_noise[..dst.len()];
                    draw(row.n, i, row.sample, eps);
                    for ((d, &x), &e) in dst.iter_mut().zip(inputs[i].row(row.n)).zip(eps.iter()) {
                        *d = x + e;
                    }
                },
                |_, _, gradient, out| {
                    for (o, &g) in out.iter_mut().zip(gradient) {
                        *o += scale * if abs { g.abs() } else { g };
                    }
                },
            );
        }

        let method = PathMethod::parse(choice(request, "method", PathMethod::NAMES)?).expect("checked");
        let steps = integer_at_least(request, "steps", method.min_steps() as i64)?;
        let baseline = request.number("baseline")? as f32;
        let (alphas, weights) = method.points(steps);
        // Sample index = noise sample × steps + path step.
        GradientRows::new(request, samples * steps).run(
            ctx,
            &mut results,
            |row, i, dst| {
                let (s, a) = (row.sample / steps, alphas[row.sample % steps] as f32);
                let eps = &mut point_noise[..dst.len()];
                draw(row.n, i, s, eps);
                for ((d, &x), &e) in dst.iter_mut().zip(inputs[i].row(row.n)).zip(eps.iter()) {
                    *d = baseline + a * (x + e - baseline);
                }
            },
            |row, i, gradient, out| {
                let (s, w) = (row.sample / steps, weights[row.sample % steps] as f32 / samples as f32);
                let eps = &mut combine_noise[..out.len()];
                draw(row.n, i, s, eps);
                for (((o, &g), &x), &e) in out.iter_mut().zip(gradient).zip(inputs[i].row(row.n)).zip(eps.iter()) {
                    *o += w * g * (x + e - baseline);
                }
            },
        )
    }
}

/// The noise standard deviation per (input row n, model input i), flattened n-major.
fn noise_sigmas(request: &Request<'_>) -> Result<Vec<f32>, Error> {
    let inputs = request.inputs();
    if let Some(stdev) = match request.param("stdev") {
        explaind_plugin_sdk::ParamValue::None => None,
        _ => Some(request.number("stdev")?),
    } {
        if !(stdev >= 0.0 && stdev.is_finite()) {
            return Err(Error::invalid_argument(format!("parameters.stdev: must be a finite number >= 0, got {stdev}")));
        }
        return Ok(vec![stdev as f32; request.batch_size() * inputs.len()]);
    }
    let level = request.number("noise_level")?;
    if !(level >= 0.0 && level.is_finite()) {
        return Err(Error::invalid_argument(format!("parameters.noise_level: must be a finite number >= 0, got {level}")));
    }
    let mut sigmas = Vec::with_capacity(request.batch_size() * inputs.len());
    for n in 0..request.batch_size() {
        for x in inputs {
            let row = x.row(n);
            let (lo, hi) = row.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            sigmas.push(if row.is_empty() { 0.0 } else { level as f32 * (hi - lo) });
        }
    }
    Ok(sigmas)
}

export_plugin!(SmoothGrad);
