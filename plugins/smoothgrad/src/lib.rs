//! SmoothGrad (Smilkov et al.; captum's `NoiseTunnel` with `smoothgrad`): the mean of saliency
//! or of integrated gradients over copies of the input with Gaussian noise added. The noise's
//! standard deviation is `noise_level` × (max − min) of each input row, as in the paper, or
//! `stdev` when given. Draws are seeded per (input, sample), so a request is reproducible
//! whatever its batch; every noisy point (and for integrated gradients every path point of it)
//! goes through the host's graph-compiled gradient (ABI 1.1) in few batched runs.
//!
//! Cost: N·T·samples gradient rows (times `steps` over integrated gradients); memory: one chunk
//! of them and a noise buffer per row element.

use explaind_gradient_methods::quadrature::{MAX_STEPS, path_rule};
use explaind_gradient_methods::{GradientRows, Noise, attribution_results, choice, integer_at_least};
use explaind_plugin_sdk::{Context, Cost, Error, Explainer, ParamDefault, ParamKind, PluginInfo, Request, export_plugin};

pub struct SmoothGrad;

/// Most noisy copies per input.
pub const MAX_SAMPLES: usize = 100_000;
/// Most noise as a fraction of a row's range.
pub const MAX_NOISE_LEVEL: f64 = 100.0;
/// Most absolute noise: a few standard deviations of it stay far below float32's 3.4e38.
pub const MAX_STDEV: f64 = 1e30;
/// Baseline values are kept within ±1e30 so that path points stay finite in float32.
pub const MAX_BASELINE: f64 = 1e30;

/// The smoothed method: `None` for saliency, the path rule and steps for integrated gradients.
fn smoothed(request: &Request<'_>) -> Result<Option<(explaind_gradient_methods::quadrature::PathMethod, usize)>, Error> {
    if choice(request, "over", &["saliency", "integrated_gradients"])? == "saliency" {
        return Ok(None);
    }
    path_rule(request).map(Some)
}

/// `samples`, checked against its bounds.
fn samples(request: &Request<'_>) -> Result<usize, Error> {
    let samples = integer_at_least(request, "samples", 1)?;
    if samples > MAX_SAMPLES {
        return Err(Error::invalid_argument(format!("parameters.samples: at most {MAX_SAMPLES}, got {samples}")));
    }
    Ok(samples)
}

impl Explainer for SmoothGrad {
    fn info() -> PluginInfo {
        PluginInfo::new("smoothgrad", env!("CARGO_PKG_VERSION"))
            .description(
                "SmoothGrad: saliency or integrated gradients averaged over noisy copies of the input \
                 (captum's NoiseTunnel, smoothgrad). Seeded and reproducible.",
            )
            .reentrant()
            .needs_gradients()
            .param(
                "over",
                ParamKind::Text,
                ParamDefault::Text("saliency".into()),
                "The smoothed method: saliency or integrated_gradients.",
            )
            .max_len(32)
            .param("samples", ParamKind::Integer, ParamDefault::Integer(50), "Noisy copies per input, 1 to 100000.")
            .range(1.0, MAX_SAMPLES as f64)
            .param(
                "noise_level",
                ParamKind::Number,
                ParamDefault::Number(0.15),
                "Noise standard deviation as a fraction of each input row's range (max - min), 0 to 100 \
                 (beyond that the copies are noise alone).",
            )
            .range(0.0, MAX_NOISE_LEVEL)
            .param(
                "stdev",
                ParamKind::Number,
                ParamDefault::Optional,
                "Absolute noise standard deviation (overrides noise_level), 0 to 1e30 (so that noisy inputs \
                 stay finite in float32).",
            )
            .range(0.0, MAX_STDEV)
            .param("seed", ParamKind::Integer, ParamDefault::Integer(0), "Seed of the noise.")
            .range(i64::MIN as f64, i64::MAX as f64)
            .param("abs", ParamKind::Flag, ParamDefault::Flag(true), "Saliency: average |gradient| (captum's default).")
            .param(
                "steps",
                ParamKind::Integer,
                ParamDefault::Integer(50),
                "Integrated gradients: points on the path, 1 to 100000 (gausslegendre at most 2048).",
            )
            .range(1.0, MAX_STEPS as f64)
            .param(
                "method",
                ParamKind::Text,
                ParamDefault::Text("gausslegendre".into()),
                "Integrated gradients: gausslegendre, riemann_left, riemann_right, riemann_middle or riemann_trapezoid.",
            )
            .max_len(32)
            .param(
                "baseline",
                ParamKind::Number,
                ParamDefault::Number(0.0),
                "Integrated gradients: value of every baseline element, within +-1e30.",
            )
            .range(-MAX_BASELINE, MAX_BASELINE)
    }

    fn create() -> Result<Self, Error> {
        Ok(SmoothGrad)
    }

    /// Rows: N·T·samples gradients, times `steps` over integrated gradients. Memory: one chunk
    /// of gradient rows, two noise buffers of the longest input row, a noise level per (input
    /// row, model input), and over integrated gradients the rule's points (16 bytes a step).
    fn estimate(&self, request: &Request<'_>) -> Result<Cost, Error> {
        let rule = smoothed(request)?;
        let samples = samples(request)? as f64;
        noise_parameters(request)?;
        let steps = rule.map_or(1.0, |(_, steps)| steps as f64);
        let (rows, chunk_bytes) = GradientRows::cost(request, samples * steps);
        let inputs = request.inputs();
        let longest = inputs.iter().map(|x| x.row_len()).max().unwrap_or(0) as f64;
        let sigmas = (request.batch_size() * inputs.len()) as f64;
        let points = if rule.is_some() { 16.0 * steps } else { 0.0 };
        let cost = Cost::new(rows, chunk_bytes + 8.0 * longest + 4.0 * sigmas + points);
        let pairs = (request.batch_size() * request.num_targets()) as f64;
        Ok(if samples.max(steps) < pairs {
            cost
        } else if samples >= steps {
            cost.driven_by("samples")
        } else {
            cost.driven_by("steps")
        })
    }

    fn explain(&self, ctx: &Context<'_>, request: &Request<'_>) -> Result<(), Error> {
        let rule = smoothed(request)?;
        let samples = samples(request)?;
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
        let Some((method, steps)) = rule else {
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
        };

        let baseline = request.number("baseline")?;
        if !(-MAX_BASELINE..=MAX_BASELINE).contains(&baseline) {
            return Err(Error::invalid_argument(format!("parameters.baseline: must be within +-1e30, got {baseline}")));
        }
        let baseline = baseline as f32;
        let (alphas, weights) = method.points(steps, &|| ctx.is_cancelled())?;
        let rows_per_pair = samples
            .checked_mul(steps)
            .ok_or_else(|| Error::invalid_argument(format!("parameters.samples: {samples} samples x {steps} steps overflow")))?;
        // Sample index = noise sample × steps + path step.
        GradientRows::new(request, rows_per_pair).run(
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

/// `stdev` (None when unset) and `noise_level`, checked against their bounds.
fn noise_parameters(request: &Request<'_>) -> Result<(Option<f64>, f64), Error> {
    let stdev = match request.param("stdev") {
        explaind_plugin_sdk::ParamValue::None => None,
        _ => Some(request.number("stdev")?),
    };
    if let Some(stdev) = stdev.filter(|s| !(0.0..=MAX_STDEV).contains(s)) {
        return Err(Error::invalid_argument(format!("parameters.stdev: must be within 0 to 1e30, got {stdev}")));
    }
    let level = request.number("noise_level")?;
    if !(0.0..=MAX_NOISE_LEVEL).contains(&level) {
        return Err(Error::invalid_argument(format!("parameters.noise_level: must be within 0 to 100, got {level}")));
    }
    Ok((stdev, level))
}

/// The noise standard deviation per (input row n, model input i), flattened n-major.
fn noise_sigmas(request: &Request<'_>) -> Result<Vec<f32>, Error> {
    let inputs = request.inputs();
    let (stdev, level) = noise_parameters(request)?;
    if let Some(stdev) = stdev {
        return Ok(vec![stdev as f32; request.batch_size() * inputs.len()]);
    }
    let mut sigmas = Vec::with_capacity(request.batch_size() * inputs.len());
    for n in 0..request.batch_size() {
        for x in inputs {
            let row = x.row(n);
            let (lo, hi) = row.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            let sigma = if row.is_empty() { 0.0 } else { level as f32 * (hi - lo) };
            if !sigma.is_finite() {
                return Err(Error::invalid_argument(format!(
                    "parameters.noise_level: {level} times input row {n}'s range ({lo} to {hi}) is beyond float32; give stdev instead"
                )));
            }
            sigmas.push(sigma);
        }
    }
    Ok(sigmas)
}

export_plugin!(SmoothGrad);

#[cfg(test)]
mod tests {
    use explaind_plugin_sdk::testing::{FakeRequest, Value};

    #[test]
    fn every_parameter_is_bounded() {
        let plugin = explaind_plugin_sdk::plugin_under_test!();
        plugin.assert_every_parameter_is_bounded();
        assert_eq!(plugin.param("stdev").range, (0.0, 1e30));
        assert_eq!(plugin.param("noise_level").range, (0.0, 100.0));
        assert_eq!(plugin.param("samples").range, (1.0, 100_000.0));
    }

    #[test]
    fn estimate_counts_every_noisy_copy_and_path_point() {
        let plugin = explaind_plugin_sdk::plugin_under_test!();
        // Saliency, N = 2 rows of 4, T = 3, samples = 10: 2·3·10 = 60 rows, one chunk of 60
        // rows of 8·4 + 4·3 + 32 = 76 bytes (4560), noise buffers 8·4 = 32, levels 4·2 = 8.
        let request = FakeRequest::zeros(&[2, 4], 3).param("samples", Value::Integer(10));
        let cost = plugin.estimate(&request).unwrap();
        assert_eq!((cost.model_rows, cost.scratch_bytes), (60.0, 4600.0));
        assert_eq!(cost.driver.as_deref(), Some("samples"));
        // Over integrated gradients with 7 riemann steps: 2·3·10·7 = 420 rows; chunks of 64
        // rows (4864 bytes), noise 32, levels 8, points 16·7 = 112.
        let ig = request
            .param("over", Value::Text("integrated_gradients".into()))
            .param("method", Value::Text("riemann_left".into()))
            .param("steps", Value::Integer(7));
        let cost = plugin.estimate(&ig).unwrap();
        assert_eq!((cost.model_rows, cost.scratch_bytes), (420.0, 5016.0));
    }

    #[test]
    fn huge_parameters_give_huge_estimates_or_refusals_never_a_panic() {
        let plugin = explaind_plugin_sdk::plugin_under_test!();
        let ig = |samples: i64, steps: i64| {
            FakeRequest::zeros(&[64, 4], 10)
                .param("over", Value::Text("integrated_gradients".into()))
                .param("method", Value::Text("riemann_middle".into()))
                .param("samples", Value::Integer(samples))
                .param("steps", Value::Integer(steps))
        };
        // The largest values the ranges allow: 64·10·10^5·10^5 = 6.4e12 rows, for the host's
        // budget to refuse.
        let cost = plugin.estimate(&ig(100_000, 100_000)).unwrap();
        assert_eq!(cost.model_rows, 6.4e12);
        assert!(cost.model_rows > 1e12);
        // Past the ranges (2^62 overflowed usize before): refused, naming the parameter.
        for (samples, steps, name) in [(1 << 62, 50, "samples"), (50, 1 << 62, "steps"), (i64::MAX, i64::MAX, "steps")] {
            let err = plugin.estimate(&ig(samples, steps)).unwrap_err();
            assert!(err.message.starts_with(&format!("parameters.{name}:")), "{}", err.message);
        }
        for (name, value) in [("stdev", -1.0), ("stdev", f64::INFINITY), ("noise_level", 1e300), ("noise_level", f64::NAN)] {
            let err = plugin.estimate(&FakeRequest::zeros(&[1, 4], 1).param(name, Value::Number(value))).unwrap_err();
            assert!(err.message.starts_with(&format!("parameters.{name}:")), "{}", err.message);
        }
    }
}
