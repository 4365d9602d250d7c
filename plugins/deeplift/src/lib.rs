//! DeepLIFT (rescale rule) against one baseline: φ_t(x) = m_t(x, b) · (x − b), with
//! Σ φ_t = f_t(x) − f_t(b). The baseline is every element set to `baseline` (default 0).
//! The host compiles the model's graph into a DeepLIFT graph (`deeplift_multipliers`, ABI 1.1).
//!
//! Cost: N·T multiplier rows and one forward row (f(b)); memory: every (input, target) row's
//! input, reference and multipliers at once (one host call).

use explaind_gradient_methods::sum_row_len;
use explaind_plugin_sdk::{
    Context, Cost, Error, Explainer, ParamDefault, ParamKind, PluginInfo, Request, TensorView, export_plugin,
};

/// Baseline values are kept within ±1e30 so that x − b stays finite in float32.
pub const MAX_BASELINE: f64 = 1e30;

fn baseline(request: &Request<'_>) -> Result<f32, Error> {
    let value = request.number("baseline")?;
    if !(-MAX_BASELINE..=MAX_BASELINE).contains(&value) {
        return Err(Error::invalid_argument(format!("parameters.baseline: must be within +-1e30, got {value}")));
    }
    Ok(value as f32)
}

pub struct DeepLift;

impl Explainer for DeepLift {
    fn info() -> PluginInfo {
        PluginInfo::new("deeplift", env!("CARGO_PKG_VERSION"))
            .description(
                "DeepLIFT (rescale rule, exact on the ONNX graph) against a constant baseline. Base \
                 values are f(baseline); the extra `completeness_residual` [N, T] is \
                 sum(attributions) - (f(x) - f(baseline)).",
            )
            .reentrant()
            .needs_gradients()
            .param(
                "baseline",
                ParamKind::Number,
                ParamDefault::Number(0.0),
                "Value of every baseline element, within +-1e30 (so that x - baseline stays finite in float32).",
            )
            .range(-MAX_BASELINE, MAX_BASELINE)
    }

    fn create() -> Result<Self, Error> {
        Ok(DeepLift)
    }

    /// Rows: N·T multipliers (one call) and 1 forward (f(b)). Memory per (input, target): the
    /// tiled input, the reference and the host's multipliers (4 bytes an element each), the
    /// seed (4·R), the sum and the residual; plus the baseline row and f(b).
    fn estimate(&self, request: &Request<'_>) -> Result<Cost, Error> {
        baseline(request)?;
        let pairs = (request.batch_size() * request.num_targets()) as f64;
        let (row, r) = (sum_row_len(request), request.output_row_size() as f64);
        let bytes = pairs * (12.0 * row + 4.0 * r + 8.0 + 4.0) + 4.0 * row + 4.0 * r;
        Ok(Cost::new(pairs + 1.0, bytes))
    }

    fn explain(&self, ctx: &Context<'_>, request: &Request<'_>) -> Result<(), Error> {
        let baseline = baseline(request)?;
        let (n, t, row) = (request.batch_size(), request.num_targets(), request.output_row_size());
        // Rows: every (input, target) pair, input repeated T times, against the baseline.
        let inputs = request.inputs();
        let mut tiled: Vec<(Vec<i64>, Vec<f32>)> = Vec::new();
        let mut references: Vec<(Vec<i64>, Vec<f32>)> = Vec::new();
        let mut ticker = ctx.ticker();
        for input in inputs {
            let mut shape = input.shape.to_vec();
            shape[0] = (n * t) as i64;
            let mut data = Vec::with_capacity(n * t * input.row_len());
            for i in 0..n {
                for _ in 0..t {
                    ticker.tick(input.row_len() + 1)?;
                    data.extend_from_slice(input.row(i));
                }
            }
            references.push((shape.clone(), vec![baseline; data.len()]));
            tiled.push((shape, data));
        }
        // Row i·T + j of the tiled inputs is seeded for target j of input i.
        let seeds = request.one_hot_seeds();
        let seed_shape = [(n * t) as i64, row as i64];
        let x_views: Vec<TensorView> = tiled.iter().map(|(s, d)| TensorView::new(s, d)).collect();
        let r_views: Vec<TensorView> = references.iter().map(|(s, d)| TensorView::new(s, d)).collect();
        ctx.check_cancelled()?;
        let multipliers = ctx.deeplift_multipliers(&x_views, &r_views, TensorView::new(&seed_shape, &seeds))?;

        let mut sums = vec![0f64; n * t];
        for (index, m) in multipliers.iter().enumerate() {
            let m = m.data();
            let x = &tiled[index].1;
            let out = ctx.attributions(index)?;
            let len = m.len() / (n * t).max(1);
            for (k, sum) in sums.iter_mut().enumerate() {
                ticker.tick(len + 1)?;
                for e in k * len..(k + 1) * len {
                    out[e] = m[e] * (x[e] - baseline);
                    *sum += out[e] as f64;
                }
            }
        }
        let baseline_rows: Vec<Vec<f32>> = inputs.iter().map(|x| vec![baseline; x.row_len()]).collect();
        let baseline_rows: Vec<&[f32]> = baseline_rows.iter().map(Vec::as_slice).collect();
        ctx.report_against_baseline(request, &baseline_rows, &sums, "completeness_residual")?;
        Ok(())
    }
}

export_plugin!(DeepLift);

#[cfg(test)]
mod tests {
    use explaind_plugin_sdk::testing::{FakeRequest, Value};

    #[test]
    fn every_parameter_is_bounded() {
        let plugin = explaind_plugin_sdk::plugin_under_test!();
        plugin.assert_every_parameter_is_bounded();
        assert_eq!(plugin.param("baseline").range, (-1e30, 1e30));
    }

    #[test]
    fn estimate_is_one_row_per_input_and_target_and_the_baseline() {
        let plugin = explaind_plugin_sdk::plugin_under_test!();
        // N = 3 rows of 5, T = 2 in an output row of 2: 3·2 = 6 multiplier rows + 1 forward.
        // Memory per pair: 12·5 + 4·2 + 8 + 4 = 80, 6 pairs = 480; baseline row 20, f(b) 8.
        let cost = plugin.estimate(&FakeRequest::zeros(&[3, 5], 2)).unwrap();
        assert_eq!((cost.model_rows, cost.scratch_bytes, cost.driver), (7.0, 508.0, None));
        let far = FakeRequest::zeros(&[3, 5], 2).param("baseline", Value::Number(-1e300));
        assert!(plugin.estimate(&far).unwrap_err().message.starts_with("parameters.baseline:"));
    }
}
