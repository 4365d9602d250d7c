//! Expected gradients (Erion et al.; shap's `GradientExplainer`): integrated gradients with the
//! baseline drawn from the background and the path integral estimated by sampling. Each sample
//! of input x picks a background row r and a point α ~ U(0, 1), and contributes
//! ∇f(r + α(x − r)) · (x − r); the attribution is the mean over `samples` draws, so Σφ tends to
//! f(x) − E[f(background)] (the base value reported). Draws are seeded per (input, sample).
//! `local_smoothing` adds Gaussian noise of that standard deviation to x first, as shap does.

use explaind_gradient_methods::{GradientRows, Noise, attribution_results, integer_at_least};
use explaind_plugin_sdk::{Context, Error, Explainer, ParamDefault, ParamKind, PluginInfo, Request, TensorView, export_plugin};
use rand::Rng;

pub struct ExpectedGradients;

impl Explainer for ExpectedGradients {
    fn info() -> PluginInfo {
        PluginInfo::new("expected-gradients", env!("CARGO_PKG_VERSION"))
            .description(
                "Expected gradients (shap's GradientExplainer): gradients at random points between \
                 background rows and the input, times (input - background row), averaged. Base values \
                 are the mean model output over the background. Seeded and reproducible.",
            )
            .reentrant()
            .needs_gradients()
            .needs_background()
            .param("samples", ParamKind::Integer, ParamDefault::Integer(200), "Draws per input (shap's nsamples).")
            .param("seed", ParamKind::Integer, ParamDefault::Integer(0), "Seed of the draws.")
            .param(
                "local_smoothing",
                ParamKind::Number,
                ParamDefault::Number(0.0),
                "Standard deviation of Gaussian noise added to the input (shap's local_smoothing).",
            )
    }

    fn create() -> Result<Self, Error> {
        Ok(ExpectedGradients)
    }

    fn explain(&self, ctx: &Context<'_>, request: &Request<'_>) -> Result<(), Error> {
        let samples = integer_at_least(request, "samples", 1)?;
        let smoothing = request.number("local_smoothing")?;
        if !(smoothing >= 0.0 && smoothing.is_finite()) {
            return Err(Error::invalid_argument(format!("parameters.local_smoothing: must be a finite number >= 0, got {smoothing}")));
        }
        let smoothing = smoothing as f32;
        let background = request
            .background()
            .ok_or_else(|| Error::failed_precondition("background: expected gradients needs a background set"))?;
        let rows = background[0].rows();
        if rows == 0 {
            return Err(Error::invalid_argument("background: it has no rows"));
        }
        let noise = Noise::new(request.integer("seed")?.unwrap_or(0));
        let inputs = request.inputs();
        let (n, num_inputs) = (request.batch_size(), inputs.len());

        // Per (input row, sample): the background row and the point on the path. Stream ids:
        // (num_inputs + 1) per input row, the first for these picks, the others for the noise
        // of each model input.
        let streams = num_inputs + 1;
        let picks: Vec<(usize, f32)> = (0..n * samples)
            .map(|k| {
                let mut rng = noise.stream((k / samples) * streams, k % samples);
                (rng.random_range(0..rows), rng.random::<f32>())
            })
            .collect();
        // The (possibly noisy) input row into `dst`.
        let noisy_input = move |row_n: usize, i: usize, s: usize, dst: &mut [f32]| {
            if smoothing > 0.0 {
                Noise::gaussian(&mut noise.stream(row_n * streams + i + 1, s), smoothing, dst);
                dst.iter_mut().zip(inputs[i].row(row_n)).for_each(|(d, &x)| *d += x);
            } else {
                dst.copy_from_slice(inputs[i].row(row_n));
            }
        };
        let max_len = inputs.iter().map(TensorView::row_len).max().unwrap_or(0);
        let (mut point_x, mut combine_x) = (vec![0f32; max_len], vec![0f32; max_len]);
        let scale = 1.0 / samples as f32;

        let mut results = attribution_results(ctx, request)?;
        GradientRows::new(request, samples).run(
            ctx,
            &mut results,
            |row, i, dst| {
                let (k, a) = picks[row.n * samples + row.sample];
                let x = &mut point_x[..dst.len()];
                noisy_input(row.n, i, row.sample, x);
                for ((d, &x), &r) in dst.iter_mut().zip(x.iter()).zip(background[i].row(k)) {
                    *d = r + a * (x - r);
                }
            },
            |row, i, gradient, out| {
                let (k, _) = picks[row.n * samples + row.sample];
                let x = &mut combine_x[..out.len()];
                noisy_input(row.n, i, row.sample, x);
                for (((o, &g), &x), &r) in out.iter_mut().zip(gradient).zip(x.iter()).zip(background[i].row(k)) {
                    *o += scale * g * (x - r);
                }
            },
        )?;

        // Base values: the mean model output over the background.
        let outputs = ctx.forward(background)?;
        let outputs = outputs.data();
        let width = request.output_row_size();
        let base = ctx.base_values()?;
        let t = request.num_targets();
        for i in 0..n {
            for (j, &target) in request.targets(i).iter().enumerate() {
                let sum: f64 = (0..rows).map(|k| outputs[k * width + target as usize] as f64).sum();
                base[i * t + j] = (sum / rows as f64) as f32;
            }
        }
        Ok(())
    }
}

export_plugin!(ExpectedGradients);
