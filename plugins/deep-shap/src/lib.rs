//! Deep SHAP: the DeepLIFT rescale rule averaged over a background distribution.
//!
//! For input x, background rows r_1..r_K and target t:
//!   φ_t(x) = (1/K) Σ_k m_t(x, r_k) · (x − r_k),   base value E_t = mean_k f_t(r_k),
//! so that Σ φ_t = f_t(x) − E_t (completeness). The host compiles the model's graph into a
//! DeepLIFT graph, caches the background's activations, and does the averaging
//! (`deep_shap`, ABI 1.1); this plugin chooses the seeds (one-hot per target), and reports the
//! base values and the completeness residual of every (input, target).
//!
//! Cost: the host's `deep_shap` charges N·T·K rows (every seed against every background row);
//! memory: the seeds and the host's results, all at once.
//!
//! Token ids and other integer inputs are attributed at their embedding ([`layer`]).

pub mod layer;

use explaind_gradient_methods::sum_row_len;
use explaind_plugin_sdk::{Context, Cost, Error, Explainer, PluginInfo, Request, TensorView, export_plugin};

pub struct DeepShap;

impl Explainer for DeepShap {
    fn info() -> PluginInfo {
        let info = PluginInfo::new("deep-shap", env!("CARGO_PKG_VERSION"))
            .description(
                "Deep SHAP: DeepLIFT multipliers (rescale rule, exact on the ONNX graph) averaged over \
                 a background set. Base values are the mean background output; the extra \
                 `completeness_residual` [N, T] is sum(attributions) - (f(x) - base value).",
            )
            .reentrant()
            .needs_background()
            .needs_gradients()
            .typed_inputs();
        explaind_gradient_methods::layer::declare_params(info)
    }

    fn create() -> Result<Self, Error> {
        Ok(DeepShap)
    }

    /// Rows: N·T·K (one `deep_shap` call, K background rows). Memory: the one-hot seeds
    /// [N, T, R], the host's attributions [N, T, *row] and expected values [N, T], the sums
    /// and the `completeness_residual` extra.
    fn estimate(&self, request: &Request<'_>) -> Result<Cost, Error> {
        let background =
            request.background().ok_or_else(|| Error::failed_precondition("background: Deep SHAP needs a background set"))?;
        if let Some(explained) = explaind_gradient_methods::layer::wanted(request, "deep-shap")? {
            let k = background[explained].rows();
            // The layer values are host tensors, charged as the host hands them out; the
            // plugin holds one batch of pairs of at most layer::CHUNK_BYTES.
            return Ok(Cost::new(layer::model_rows(request, k), layer::CHUNK_BYTES as f64 + 4.0 * sum_row_len(request)));
        }
        let k = background.first().map_or(0, |b| b.rows()) as f64;
        let pairs = (request.batch_size() * request.num_targets()) as f64;
        let r = request.output_row_size() as f64;
        let bytes = pairs * (4.0 * r + 4.0 * sum_row_len(request) + 4.0 + 8.0 + 4.0);
        Ok(Cost::new(pairs * k, bytes))
    }

    fn explain(&self, ctx: &Context<'_>, request: &Request<'_>) -> Result<(), Error> {
        if let Some(explained) = explaind_gradient_methods::layer::wanted(request, "deep-shap")? {
            return layer::explain(ctx, request, explained);
        }
        let (n, t, row) = (request.batch_size(), request.num_targets(), request.output_row_size());
        let seeds = request.one_hot_seeds();
        let seed_shape = [n as i64, t as i64, row as i64];
        let (attributions, expected) = ctx.deep_shap(request.inputs(), TensorView::new(&seed_shape, &seeds))?;

        let mut sums = vec![0f64; n * t];
        let mut ticker = ctx.ticker();
        for (input, values) in attributions.iter().enumerate() {
            let values = values.data();
            let out = ctx.attributions(input)?;
            out.copy_from_slice(values);
            let len = values.len() / (n * t).max(1);
            for (k, sum) in sums.iter_mut().enumerate() {
                ticker.tick(len + 1)?;
                *sum += values[k * len..(k + 1) * len].iter().map(|&v| v as f64).sum::<f64>();
            }
        }
        let expected = expected.data();
        ctx.base_values()?.copy_from_slice(expected);
        let residual = ctx.extra("completeness_residual", &[n as i64, t as i64])?;
        let outputs = request.outputs();
        for i in 0..n {
            for (j, &target) in request.targets(i).iter().enumerate() {
                let k = i * t + j;
                let gap = outputs.row(i)[target as usize] as f64 - expected[k] as f64;
                residual[k] = (sums[k] - gap) as f32;
            }
        }
        Ok(())
    }
}

export_plugin!(DeepShap);

#[cfg(test)]
mod tests {
    use explaind_plugin_sdk::testing::FakeRequest;

    #[test]
    fn every_parameter_is_bounded() {
        explaind_plugin_sdk::plugin_under_test!().assert_every_parameter_is_bounded();
    }

    #[test]
    fn estimate_charges_every_seed_against_every_background_row() {
        let plugin = explaind_plugin_sdk::plugin_under_test!();
        // N = 3 rows of 5, T = 2 targets in an output row of 10, K = 100 background rows:
        // 3·2·100 = 600 rows. Memory per (input, target): seed 4·10, attributions 4·5,
        // expected 4, sum 8, residual 4 = 76 bytes, 6 pairs: 456.
        let request = FakeRequest::zeros(&[3, 5], 2).output_row_size(10).background_rows(100);
        let cost = plugin.estimate(&request).unwrap();
        assert_eq!((cost.model_rows, cost.scratch_bytes, cost.driver), (600.0, 456.0, None));
        let err = plugin.estimate(&FakeRequest::zeros(&[3, 5], 2)).unwrap_err();
        assert_eq!(err.code, explaind_plugin_sdk::EXD_FAILED_PRECONDITION);
    }
}
