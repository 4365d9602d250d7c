//! Gradient × input (Shrikumar et al.; captum's `InputXGradient`): each input element times the
//! gradient of the target with respect to it. For a model that is linear in its input, the
//! attributions sum to f(x) − f(0). The host compiles the model's graph into a gradient graph
//! (ABI 1.1 `gradient`).

use explaind_gradient_methods::{GradientRows, attribution_results};
use explaind_plugin_sdk::{Context, Error, Explainer, PluginInfo, Request, export_plugin};

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
