//! Saliency (Simonyan et al.; captum's `Saliency`): the gradient of the target output with
//! respect to each input element, by default its absolute value. The host compiles the model's
//! graph into a gradient graph (ABI 1.1 `gradient`); every (input, target) row of a request goes
//! through it in few batched runs.

use explaind_gradient_methods::{GradientRows, attribution_results};
use explaind_plugin_sdk::{Context, Error, Explainer, ParamDefault, ParamKind, PluginInfo, Request, export_plugin};

pub struct Saliency;

impl Explainer for Saliency {
    fn info() -> PluginInfo {
        PluginInfo::new("saliency", env!("CARGO_PKG_VERSION"))
            .description(
                "Saliency: the gradient of the target with respect to the input (captum's Saliency), \
                 computed by the host's graph-compiled backward pass.",
            )
            .reentrant()
            .needs_gradients()
            .param("abs", ParamKind::Flag, ParamDefault::Flag(true), "Return |gradient| (captum's default) instead of the signed gradient.")
    }

    fn create() -> Result<Self, Error> {
        Ok(Saliency)
    }

    fn explain(&self, ctx: &Context<'_>, request: &Request<'_>) -> Result<(), Error> {
        let abs = request.flag("abs")?;
        let mut results = attribution_results(ctx, request)?;
        GradientRows::new(request, 1).run(
            ctx,
            &mut results,
            |row, i, dst| dst.copy_from_slice(request.inputs()[i].row(row.n)),
            |_, _, gradient, out| {
                for (o, &g) in out.iter_mut().zip(gradient) {
                    *o = if abs { g.abs() } else { g };
                }
            },
        )
    }
}

export_plugin!(Saliency);
