//! DeepLIFT (rescale rule) against one baseline: φ_t(x) = m_t(x, b) · (x − b), with
//! Σ φ_t = f_t(x) − f_t(b). The baseline is every element set to `baseline` (default 0).
//! The host compiles the model's graph into a DeepLIFT graph (`deeplift_multipliers`, ABI 1.1).

use explaind_plugin_sdk::{Context, Error, Explainer, ParamDefault, ParamKind, PluginInfo, Request, TensorView, export_plugin};

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
            .param("baseline", ParamKind::Number, ParamDefault::Number(0.0), "Value of every baseline element.")
    }

    fn create() -> Result<Self, Error> {
        Ok(DeepLift)
    }

    fn explain(&self, ctx: &Context<'_>, request: &Request<'_>) -> Result<(), Error> {
        let baseline = request.number("baseline")? as f32;
        let (n, t, row) = (request.batch_size(), request.num_targets(), request.output_row_size());
        // Rows: every (input, target) pair, input repeated T times, against the baseline.
        let inputs = request.inputs();
        let mut tiled: Vec<(Vec<i64>, Vec<f32>)> = Vec::new();
        let mut references: Vec<(Vec<i64>, Vec<f32>)> = Vec::new();
        for input in inputs {
            let mut shape = input.shape.to_vec();
            shape[0] = (n * t) as i64;
            let mut data = Vec::with_capacity(n * t * input.row_len());
            for i in 0..n {
                for _ in 0..t {
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
        let multipliers = ctx.deeplift_multipliers(&x_views, &r_views, TensorView::new(&seed_shape, &seeds))?;

        let mut sums = vec![0f64; n * t];
        for (index, m) in multipliers.iter().enumerate() {
            let m = m.data();
            let x = &tiled[index].1;
            let out = ctx.attributions(index)?;
            let len = m.len() / (n * t).max(1);
            for k in 0..n * t {
                for e in k * len..(k + 1) * len {
                    out[e] = m[e] * (x[e] - baseline);
                    sums[k] += out[e] as f64;
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
