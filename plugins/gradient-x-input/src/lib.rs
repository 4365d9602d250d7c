//! Gradient × input (Shrikumar et al.; captum's `InputXGradient`): each input element times the
//! gradient of the target with respect to it. For a model that is linear in its input, the
//! attributions sum to f(x) − f(0). The host compiles the model's graph into a gradient graph
//! (ABI 1.1 `gradient`).

use explaind_gradient_methods::{GradientRows, attribution_results};
use explaind_plugin_sdk::{Context, Cost, Error, Explainer, PluginInfo, Request, export_plugin};

pub struct GradientXInput;

impl Explainer for GradientXInput {
    fn info() -> PluginInfo {
        PluginInfo::new("gradient-x-input", env!("CARGO_PKG_VERSION"))
            .description(
                "Gradient x input: input element times the target's gradient with respect to it \
                 (captum's InputXGradient), computed by the host's graph-compiled backward pass.",
            )
            .reentrant()
            .needs_gradients()
    }

    fn create() -> Result<Self, Error> {
        Ok(GradientXInput)
    }

    /// N·T gradient rows (one per input and target); memory: one chunk of them.
    fn estimate(&self, request: &Request<'_>) -> Result<Cost, Error> {
        let (rows, bytes) = GradientRows::cost(request, 1.0);
        Ok(Cost::new(rows, bytes))
    }

    fn explain(&self, ctx: &Context<'_>, request: &Request<'_>) -> Result<(), Error> {
        let inputs = request.inputs();
        let mut results = attribution_results(ctx, request)?;
        GradientRows::new(request, 1).run(
            ctx,
            &mut results,
            |row, i, dst| dst.copy_from_slice(inputs[i].row(row.n)),
            |row, i, gradient, out| {
                for ((o, &g), &x) in out.iter_mut().zip(gradient).zip(inputs[i].row(row.n)) {
                    *o = g * x;
                }
            },
        )
    }
}

export_plugin!(GradientXInput);

#[cfg(test)]
mod tests {
    use explaind_plugin_sdk::testing::FakeRequest;

    #[test]
    fn every_parameter_is_bounded() {
        explaind_plugin_sdk::plugin_under_test!().assert_every_parameter_is_bounded();
    }

    #[test]
    fn estimate_is_one_gradient_row_per_input_and_target() {
        let plugin = explaind_plugin_sdk::plugin_under_test!();
        // N = 5 rows of [2, 3] (6 elements), T = 4 targets: 5·4 = 20 rows in one chunk of
        // 20 rows, each 8·6 (point and gradient) + 4·4 (seed) + 32 (row table) = 96 bytes.
        let cost = plugin.estimate(&FakeRequest::zeros(&[5, 2, 3], 4)).unwrap();
        assert_eq!((cost.model_rows, cost.scratch_bytes, cost.driver), (20.0, 1920.0, None));
        // Chunks stop at the batch limit: 64 rows of 96 bytes for 100·4 = 400 rows.
        let cost = plugin.estimate(&FakeRequest::zeros(&[100, 2, 3], 4)).unwrap();
        assert_eq!((cost.model_rows, cost.scratch_bytes), (400.0, 6144.0));
    }
}
