//! Expected gradients (Erion et al.; shap's `GradientExplainer`): integrated gradients with the
//! baseline drawn from the background and the path integral estimated by sampling. Each sample
//! of input x picks a background row r and a point α ~ U(0, 1), and contributes
//! ∇f(r + α(x − r)) · (x − r); the attribution is the mean over `samples` draws, so Σφ tends to
//! f(x) − E[f(background)] (the base value reported). Draws are seeded per (input, sample).
//! `local_smoothing` adds Gaussian noise of that standard deviation to x first, as shap does.
//!
//! Cost: N·T·samples gradient rows and one forward pass over the K background rows (the base
//! values); memory: one chunk of gradient rows and the background's outputs. A sample's
//! background row and path point are drawn again from its seeded stream wherever they are
//! needed, so nothing of size N·samples is kept.

use explaind_gradient_methods::{GradientRows, Noise, attribution_results, integer_at_least};
use explaind_plugin_sdk::{
    Context, Cost, Error, Explainer, ParamDefault, ParamKind, PluginInfo, Request, TensorView, export_plugin,
};
use rand::Rng;

pub struct ExpectedGradients;

/// Most draws per input.
pub const MAX_SAMPLES: usize = 100_000;
/// Most noise: a few standard deviations of it stay far below float32's 3.4e38.
pub const MAX_SMOOTHING: f64 = 1e30;

/// `samples` and `local_smoothing`, checked against their bounds, and the background rows.
fn checked(request: &Request<'_>) -> Result<(usize, f32, usize), Error> {
    let samples = integer_at_least(request, "samples", 1)?;
    if samples > MAX_SAMPLES {
        return Err(Error::invalid_argument(format!("parameters.samples: at most {MAX_SAMPLES}, got {samples}")));
    }
    let smoothing = request.number("local_smoothing")?;
    if !(0.0..=MAX_SMOOTHING).contains(&smoothing) {
        return Err(Error::invalid_argument(format!("parameters.local_smoothing: must be within 0 to 1e30, got {smoothing}")));
    }
    let background = request
        .background()
        .ok_or_else(|| Error::failed_precondition("background: expected gradients needs a background set"))?;
    let rows = background[0].rows();
    if rows == 0 {
        return Err(Error::invalid_argument("background: it has no rows"));
    }
    Ok((samples, smoothing as f32, rows))
}

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
            .param("samples", ParamKind::Integer, ParamDefault::Integer(200), "Draws per input (shap's nsamples), 1 to 100000.")
            .range(1.0, MAX_SAMPLES as f64)
            .param("seed", ParamKind::Integer, ParamDefault::Integer(0), "Seed of the draws.")
            .range(i64::MIN as f64, i64::MAX as f64)
            .param(
                "local_smoothing",
                ParamKind::Number,
                ParamDefault::Number(0.0),
                "Standard deviation of Gaussian noise added to the input (shap's local_smoothing), 0 to 1e30 \
                 (so that noisy inputs stay finite in float32).",
            )
            .range(0.0, MAX_SMOOTHING)
    }

    fn create() -> Result<Self, Error> {
        Ok(ExpectedGradients)
    }

    /// Rows: N·T·samples gradients and K forward rows (the background, for the base values).
    /// Memory: one chunk of gradient rows, two buffers of the longest input row, and the
    /// background's K output rows.
    fn estimate(&self, request: &Request<'_>) -> Result<Cost, Error> {
        let (samples, _, rows) = checked(request)?;
        let (gradient_rows, chunk_bytes) = GradientRows::cost(request, samples as f64);
        let longest = request.inputs().iter().map(TensorView::row_len).max().unwrap_or(0) as f64;
        let outputs = rows as f64 * request.output_row_size() as f64;
        let cost = Cost::new(gradient_rows + rows as f64, chunk_bytes + 8.0 * longest + 4.0 * outputs);
        let pairs = (request.batch_size() * request.num_targets()) as f64;
        Ok(if samples as f64 >= pairs { cost.driven_by("samples") } else { cost })
    }

    fn explain(&self, ctx: &Context<'_>, request: &Request<'_>) -> Result<(), Error> {
        let (samples, smoothing, rows) = checked(request)?;
        let background = request.background().expect("checked");
        let noise = &Noise::new(request.integer("seed")?.unwrap_or(0));
        let inputs = request.inputs();
        let (n, num_inputs) = (request.batch_size(), inputs.len());

        // Per (input row, sample): the background row and the point on the path, drawn from
        // their own stream whenever they are needed. Stream ids: (num_inputs + 1) per input
        // row, the first for these picks, the others for the noise of each model input.
        let streams = num_inputs + 1;
        let pick = |row_n: usize, s: usize| -> (usize, f32) {
            let mut rng = noise.stream(row_n * streams, s);
            (rng.random_range(0..rows), rng.random::<f32>())
        };
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
                let (k, a) = pick(row.n, row.sample);
                let x = &mut point_x[..dst.len()];
                noisy_input(row.n, i, row.sample, x);
                for ((d, &x), &r) in dst.iter_mut().zip(x.iter()).zip(background[i].row(k)) {
                    *d = r + a * (x - r);
                }
            },
            |row, i, gradient, out| {
                let (k, _) = pick(row.n, row.sample);
                let x = &mut combine_x[..out.len()];
                noisy_input(row.n, i, row.sample, x);
                for (((o, &g), &x), &r) in out.iter_mut().zip(gradient).zip(x.iter()).zip(background[i].row(k)) {
                    *o += scale * g * (x - r);
                }
            },
        )?;

        // Base values: the mean model output over the background.
        ctx.check_cancelled()?;
        let outputs = ctx.forward(background)?;
        let outputs = outputs.data();
        let width = request.output_row_size();
        let base = ctx.base_values()?;
        let t = request.num_targets();
        let mut ticker = ctx.ticker();
        for i in 0..n {
            for (j, &target) in request.targets(i).iter().enumerate() {
                ticker.tick(rows)?;
                let sum: f64 = (0..rows).map(|k| outputs[k * width + target as usize] as f64).sum();
                base[i * t + j] = (sum / rows as f64) as f32;
            }
        }
        Ok(())
    }
}

export_plugin!(ExpectedGradients);

#[cfg(test)]
mod tests {
    use explaind_plugin_sdk::testing::{FakeRequest, Value};

    #[test]
    fn every_parameter_is_bounded() {
        let plugin = explaind_plugin_sdk::plugin_under_test!();
        plugin.assert_every_parameter_is_bounded();
        assert_eq!(plugin.param("samples").range, (1.0, 100_000.0));
        assert_eq!(plugin.param("local_smoothing").range, (0.0, 1e30));
    }

    #[test]
    fn estimate_counts_every_draw_and_the_background_pass() {
        let plugin = explaind_plugin_sdk::plugin_under_test!();
        // N = 2 rows of 4, T = 3, samples = 50, K = 10 background rows: 2·3·50 = 300
        // gradient rows + 10 forward rows = 310. Memory: a chunk of 64 rows of 8·4 + 4·3 + 32
        // = 76 bytes (4864), two row buffers 8·4 = 32, background outputs 4·10·3 = 120.
        let request = FakeRequest::zeros(&[2, 4], 3).background_rows(10).param("samples", Value::Integer(50));
        let cost = plugin.estimate(&request).unwrap();
        assert_eq!((cost.model_rows, cost.scratch_bytes), (310.0, 5016.0));
        assert_eq!(cost.driver.as_deref(), Some("samples"));
        // No background: the same refusal as explain's.
        let err = plugin.estimate(&FakeRequest::zeros(&[2, 4], 3)).unwrap_err();
        assert_eq!(err.code, explaind_plugin_sdk::EXD_FAILED_PRECONDITION);
    }

    #[test]
    fn huge_parameters_give_huge_estimates_or_refusals_never_a_panic() {
        let plugin = explaind_plugin_sdk::plugin_under_test!();
        let request =
            |samples: i64| FakeRequest::zeros(&[1000, 4], 1000).background_rows(1).param("samples", Value::Integer(samples));
        // The range's top, 10^5 draws for 1000 inputs and 1000 targets: 10^11 rows + 1.
        assert_eq!(plugin.estimate(&request(100_000)).unwrap().model_rows, 1e11 + 1.0);
        // 10^9 draws used to allocate 16 GB of picks; 2^62 overflowed. Now: refused.
        for samples in [1_000_000_000, 1 << 62, i64::MAX] {
            let err = plugin.estimate(&request(samples)).unwrap_err();
            assert!(err.message.starts_with("parameters.samples:"), "{}", err.message);
        }
        let smoothing = FakeRequest::zeros(&[1, 4], 1).background_rows(1).param("local_smoothing", Value::Number(1e300));
        assert!(plugin.estimate(&smoothing).unwrap_err().message.starts_with("parameters.local_smoothing:"));
    }
}
