//! Deep SHAP: the DeepLIFT rescale rule averaged over a background distribution.
//!
//! For input x, background rows r_1..r_K and target t:
//!   φ_t(x) = (1/K) Σ_k m_t(x, r_k) · (x − r_k),   base value E_t = mean_k f_t(r_k),
//! so that Σ φ_t = f_t(x) − E_t (completeness). The host compiles the model's graph into a
//! DeepLIFT graph, caches the background's activations, and does the averaging
//! (`deep_shap`, ABI 1.1); this plugin chooses the seeds (one-hot per target), and reports the
//! base values and the completeness residual of every (input, target).

use explaind_plugin_sdk::{Context, Error, Explainer, PluginInfo, Request, TensorView, export_plugin};

pub struct DeepShap;

impl Explainer for DeepShap {
    fn info() -> PluginInfo {
        PluginInfo::new("deep-shap", env!("CARGO_PKG_VERSION"))
            .description(
                "Deep SHAP: DeepLIFT multipliers (rescale rule, exact on the ONNX graph) averaged over \
                 a background set. Base values are the mean background output; the extra \
                 `completeness_residual` [N, T] is sum(attributions) - (f(x) - base value).",
            )
            .reentrant()
            .needs_background()
            .needs_gradients()
    }

    fn create() -> Result<Self, Error> {
        Ok(DeepShap)
    }

    fn explain(&self, ctx: &Context<'_>, request: &Request<'_>) -> Result<(), Error> {
        let (n, t, row) = (request.batch_size(), request.num_targets(), request.output_row_size());
        let seeds = request.one_hot_seeds();
        let seed_shape = [n as i64, t as i64, row as i64];
        let (attributions, expected) = ctx.deep_shap(request.inputs(), TensorView::new(&seed_shape, &seeds))?;

        let mut sums = vec![0f64; n * t];
        for (input, values) in attributions.iter().enumerate() {
            let values = values.data();
            let out = ctx.attributions(input)?;
            out.copy_from_slice(values);
            let len = values.len() / (n * t).max(1);
            for (k, sum) in sums.iter_mut().enumerate() {
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
