//! Integrated gradients (Sundararajan et al.; captum's `IntegratedGradients`):
//! φ = (x − b) · ∫₀¹ ∇f(b + α(x − b)) dα, by one of captum's quadrature rules. Every path point
//! of every (input, target) pair goes through the host's graph-compiled gradient (ABI 1.1) in
//! few batched runs. Returns f(b) as the base value and, per input and target, the convergence
//! delta Σφ − (f(x) − f(b)), which shrinks as the steps grow.
//!
//! Cost: N·T·steps gradient rows and one forward row (f(b)); memory: one chunk of gradient
//! rows and the rule's points.
//!
//! Token ids and other integer inputs have no gradient: for them (or any input, with a `layer`
//! parameter) the path runs between two values of a layer, the ids' embedding by default
//! ([`layer`], captum's `LayerIntegratedGradients`).

pub mod layer;

use explaind_gradient_methods::quadrature::{MAX_STEPS, path_rule};
use explaind_gradient_methods::{GradientRows, attribution_results, sum_row_len};
use explaind_plugin_sdk::{Context, Cost, Error, Explainer, ParamDefault, ParamKind, PluginInfo, Request, export_plugin};

pub struct IntegratedGradients;

/// Baseline values are kept within ±1e30 so that b + α(x − b) stays finite in float32.
pub const MAX_BASELINE: f64 = 1e30;

impl Explainer for IntegratedGradients {
    fn info() -> PluginInfo {
        let info = PluginInfo::new("integrated-gradients", env!("CARGO_PKG_VERSION"))
            .description(
                "Integrated gradients (captum's IntegratedGradients): the gradient averaged along the \
                 straight path from a baseline to the input, times (input - baseline). Base values \
                 are f(baseline); the extra `convergence_delta` [N, T] is sum(attributions) - \
                 (f(x) - f(baseline)).",
            )
            .reentrant()
            .needs_gradients()
            .typed_inputs()
            .param(
                "steps",
                ParamKind::Integer,
                ParamDefault::Integer(50),
                "Points on the path, 1 to 100000 (riemann_trapezoid needs 2; gausslegendre takes at most \
                 2048, as its nodes cost O(steps^2) to compute).",
            )
            .range(1.0, MAX_STEPS as f64)
            .param(
                "method",
                ParamKind::Text,
                ParamDefault::Text("gausslegendre".into()),
                "Quadrature: gausslegendre, riemann_left, riemann_right, riemann_middle or riemann_trapezoid.",
            )
            .max_len(32)
            .param(
                "baseline",
                ParamKind::Number,
                ParamDefault::Number(0.0),
                "Value of every baseline element, within +-1e30 (so that path points stay finite in float32).",
            )
            .range(-MAX_BASELINE, MAX_BASELINE)
            .param(
                "baseline_row",
                ParamKind::Integer,
                ParamDefault::Optional,
                "Use this row (0-based) of the request's background as the baseline instead.",
            )
            .range(0.0, i64::MAX as f64);
        explaind_gradient_methods::layer::declare_params(info)
            .param(
                "keep_ids",
                ParamKind::Integers,
                ParamDefault::Optional,
                "For an integer input: ids kept at their positions in the baseline (e.g. [CLS] and [SEP]); \
                 every other position takes `baseline` (the pad id).",
            )
            .range(i64::MIN as f64, i64::MAX as f64)
            .max_len(1024)
    }

    fn create() -> Result<Self, Error> {
        Ok(IntegratedGradients)
    }

    /// Rows: N·T·steps gradients and 1 forward (f(b)). Memory: one chunk of gradient rows, the
    /// rule's points and weights (16 bytes a step), the baseline row, and per (input, target)
    /// the sum of its attributions.
    fn estimate(&self, request: &Request<'_>) -> Result<Cost, Error> {
        let (_, steps) = path_rule(request)?;
        baseline_row(request)?;
        if explaind_gradient_methods::layer::wanted(request, "integrated-gradients")?.is_some() {
            // The layer values themselves are host tensors, charged as the host hands them
            // out; the plugin holds one batch of path points of at most layer::CHUNK_BYTES.
            let bytes = layer::CHUNK_BYTES as f64 + 16.0 * steps as f64 + 4.0 * sum_row_len(request);
            return Ok(Cost::new(layer::model_rows(request, steps), bytes).driven_by("steps"));
        }
        let steps = steps as f64;
        let (gradient_rows, chunk_bytes) = GradientRows::cost(request, steps);
        let pairs = (request.batch_size() * request.num_targets()) as f64;
        let bytes =
            chunk_bytes + 16.0 * steps + 4.0 * sum_row_len(request) + 8.0 * pairs + 4.0 * request.output_row_size() as f64;
        let cost = Cost::new(gradient_rows + 1.0, bytes);
        Ok(if steps >= pairs { cost.driven_by("steps") } else { cost })
    }

    fn explain(&self, ctx: &Context<'_>, request: &Request<'_>) -> Result<(), Error> {
        let (method, steps) = path_rule(request)?;
        let (alphas, weights) = method.points(steps, &|| ctx.is_cancelled())?;
        if let Some(explained) = explaind_gradient_methods::layer::wanted(request, "integrated-gradients")? {
            let baselines = layer::baselines(request, explained, baseline_row(request)?, baseline_value(request)?)?;
            return layer::explain(ctx, request, explained, &baselines, (&alphas, &weights));
        }
        let baselines = baselines(request)?;
        let inputs = request.inputs();

        let mut results = attribution_results(ctx, request)?;
        GradientRows::new(request, steps).run(
            ctx,
            &mut results,
            |row, i, dst| {
                let (x, b, a) = (inputs[i].row(row.n), &baselines[i], alphas[row.sample] as f32);
                for ((d, &x), &b) in dst.iter_mut().zip(x).zip(b) {
                    *d = b + a * (x - b);
                }
            },
            |row, i, gradient, out| {
                let (x, b, w) = (inputs[i].row(row.n), &baselines[i], weights[row.sample] as f32);
                for (((o, &g), &x), &b) in out.iter_mut().zip(gradient).zip(x).zip(b) {
                    *o += w * g * (x - b);
                }
            },
        )?;
        report_base_and_delta(ctx, request, &baselines, &results)
    }
}

/// The background row asked for as the baseline, checked against the background.
fn baseline_row(request: &Request<'_>) -> Result<Option<usize>, Error> {
    let Some(k) = request.integer("baseline_row")? else { return Ok(None) };
    let background = request
        .background()
        .ok_or_else(|| Error::invalid_argument("parameters.baseline_row: the request has no background to take the row from"))?;
    let rows = background[0].rows() as i64;
    if !(0..rows).contains(&k) {
        return Err(Error::invalid_argument(format!("parameters.baseline_row: {k} is not a row of the {rows}-row background")));
    }
    Ok(Some(k as usize))
}

/// The baseline row per model input: a background row, or every element `baseline`.
fn baselines(request: &Request<'_>) -> Result<Vec<Vec<f32>>, Error> {
    match baseline_row(request)? {
        None => {
            let value = baseline_value(request)?;
            Ok(request.inputs().iter().map(|x| vec![value; x.row_len()]).collect())
        }
        Some(k) => Ok(request.background().expect("checked").iter().map(|b| b.row(k).to_vec()).collect()),
    }
}

/// The `baseline` parameter, checked.
fn baseline_value(request: &Request<'_>) -> Result<f32, Error> {
    let value = request.number("baseline")?;
    if !(-MAX_BASELINE..=MAX_BASELINE).contains(&value) {
        return Err(Error::invalid_argument(format!("parameters.baseline: must be within +-1e30, got {value}")));
    }
    Ok(value as f32)
}

/// Base values f(b) and convergence deltas Σφ − (f(x) − f(b)) for every (input, target).
fn report_base_and_delta(
    ctx: &Context<'_>,
    request: &Request<'_>,
    baselines: &[Vec<f32>],
    results: &[&mut [f32]],
) -> Result<(), Error> {
    let pairs = request.batch_size() * request.num_targets();
    let mut sums = vec![0f64; pairs];
    let mut ticker = ctx.ticker();
    for attributions in results {
        let len = attributions.len() / pairs.max(1);
        for (k, sum) in sums.iter_mut().enumerate() {
            ticker.tick(len + 1)?;
            *sum += attributions[k * len..(k + 1) * len].iter().map(|&v| v as f64).sum::<f64>();
        }
    }
    let baselines: Vec<&[f32]> = baselines.iter().map(Vec::as_slice).collect();
    ctx.report_against_baseline(request, &baselines, &sums, "convergence_delta")
}

export_plugin!(IntegratedGradients);

#[cfg(test)]
mod tests {
    use explaind_plugin_sdk::testing::{FakeRequest, Value};

    #[test]
    fn every_parameter_is_bounded() {
        let plugin = explaind_plugin_sdk::plugin_under_test!();
        plugin.assert_every_parameter_is_bounded();
        assert_eq!(plugin.param("steps").range, (1.0, 100_000.0));
        assert_eq!(plugin.param("baseline").range, (-1e30, 1e30));
    }

    #[test]
    fn estimate_counts_every_path_point_and_the_baseline() {
        let plugin = explaind_plugin_sdk::plugin_under_test!();
        // N = 2 rows of 4 elements, T = 3 targets (output row of 3), steps = 50:
        // 2·3·50 = 300 gradient rows, plus 1 forward row for f(baseline) = 301.
        let request = FakeRequest::zeros(&[2, 4], 3).param("steps", Value::Integer(50));
        let cost = plugin.estimate(&request).unwrap();
        assert_eq!(cost.model_rows, 301.0);
        // Chunk: min(64 batch rows, 300) = 64 rows of 8·4 (points and gradients) + 4·3 (seeds)
        // + 32 (row table) bytes = 4864; points 16·50 = 800; baseline 16; sums 8·6 = 48;
        // f(b) 4·3 = 12: 5740 bytes.
        assert_eq!(cost.scratch_bytes, 5740.0);
        assert_eq!(cost.driver.as_deref(), Some("steps"));
        // The default (gausslegendre, 50 steps) is the same count.
        assert_eq!(plugin.estimate(&FakeRequest::zeros(&[2, 4], 3)).unwrap().model_rows, 301.0);
    }

    #[test]
    fn huge_steps_give_huge_estimates_or_a_refusal_never_a_panic() {
        let plugin = explaind_plugin_sdk::plugin_under_test!();
        let riemann = |steps: i64| {
            FakeRequest::zeros(&[2, 4], 3)
                .param("method", Value::Text("riemann_middle".into()))
                .param("steps", Value::Integer(steps))
        };
        // Within the declared range: 2·3·10^5 + 1 rows.
        assert_eq!(plugin.estimate(&riemann(100_000)).unwrap().model_rows, 600_001.0);
        // Past it (a host that skipped the range check): refused, naming the parameter.
        for steps in [1_000_000_000, 1 << 62, i64::MAX, 0, -5] {
            let err = plugin.estimate(&riemann(steps)).unwrap_err();
            assert_eq!(err.code, explaind_plugin_sdk::EXD_INVALID_ARGUMENT, "{steps}: {err:?}");
            assert!(err.message.starts_with("parameters.steps:"), "{}", err.message);
        }
        // Gauss-Legendre stops at 2048 nodes.
        let gl = FakeRequest::zeros(&[1, 4], 1).param("steps", Value::Integer(2049));
        let err = plugin.estimate(&gl).unwrap_err();
        assert!(err.message.contains("1 to 2048 steps"), "{}", err.message);
    }

    #[test]
    fn a_baseline_row_must_exist() {
        let plugin = explaind_plugin_sdk::plugin_under_test!();
        let no_background = FakeRequest::zeros(&[1, 4], 1).param("baseline_row", Value::Integer(0));
        assert!(plugin.estimate(&no_background).unwrap_err().message.starts_with("parameters.baseline_row:"));
        let three_rows = no_background.background_rows(3);
        assert!(plugin.estimate(&three_rows).is_ok());
        let err = plugin.estimate(&three_rows.param("baseline_row", Value::Integer(3))).unwrap_err();
        assert!(err.message.contains("not a row of the 3-row background"), "{}", err.message);
    }
}
