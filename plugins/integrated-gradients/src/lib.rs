//! Integrated gradients (Sundararajan et al.; captum's `IntegratedGradients`):
//! φ = (x − b) · ∫₀¹ ∇f(b + α(x − b)) dα, by one of captum's quadrature rules. Every path point
//! of every (input, target) pair goes through the host's graph-compiled gradient (ABI 1.1) in
//! few batched runs. Returns f(b) as the base value and, per input and target, the convergence
//! delta Σφ − (f(x) − f(b)), which shrinks as the steps grow.

use explaind_gradient_methods::quadrature::PathMethod;
use explaind_gradient_methods::{GradientRows, attribution_results, choice, integer_at_least};
use explaind_plugin_sdk::{Context, Error, Explainer, ParamDefault, ParamKind, PluginInfo, Request, export_plugin};

pub struct IntegratedGradients;

impl Explainer for IntegratedGradients {
    fn info() -> PluginInfo {
        PluginInfo::new("integrated-gradients", env!("CARGO_PKG_VERSION"))
            .description(
                "Integrated gradients (captum's IntegratedGradients): the gradient averaged along the \
                 straight path from a baseline to the input, times (input - baseline). Base values \
                 are f(baseline); the extra `convergence_delta` [N, T] is sum(attributions) - \
                 (f(x) - f(baseline)).",
            )
            .reentrant()
            .needs_gradients()
            .param("steps", ParamKind::Integer, ParamDefault::Integer(50), "Points on the path.")
            .param(
                "method",
                ParamKind::Text,
                ParamDefault::Text("gausslegendre".into()),
                "Quadrature: gausslegendre, riemann_left, riemann_right, riemann_middle or riemann_trapezoid.",
            )
            .param("baseline", ParamKind::Number, ParamDefault::Number(0.0), "Value of every baseline element.")
            .param(
                "baseline_row",
                ParamKind::Integer,
                ParamDefault::Optional,
                "Use this row of the request's background as the baseline instead.",
            )
    }

    fn create() -> Result<Self, Error> {
        Ok(IntegratedGradients)
    }

    fn explain(&self, ctx: &Context<'_>, request: &Request<'_>) -> Result<(), Error> {
        let method = PathMethod::parse(choice(request, "method", PathMethod::NAMES)?).expect("checked");
        let steps = integer_at_least(request, "steps", method.min_steps() as i64)?;
        let baselines = baselines(request)?;
        let (alphas, weights) = method.points(steps);
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

/// The baseline row per model input: a background row, or every element `baseline`.
fn baselines(request: &Request<'_>) -> Result<Vec<Vec<f32>>, Error> {
    match request.integer("baseline_row")? {
        None => {
            let value = request.number("baseline")? as f32;
            Ok(request.inputs().iter().map(|x| vec![value; x.row_len()]).collect())
        }
        Some(k) => {
            let background = request.background().ok_or_else(|| {
                Error::invalid_argument("parameters.baseline_row: the request has no background to take the row from")
            })?;
            let rows = background[0].rows() as i64;
            if !(0..rows).contains(&k) {
                return Err(Error::invalid_argument(format!("parameters.baseline_row: {k} is not a row of the {rows}-row background")));
            }
            Ok(background.iter().map(|b| b.row(k as usize).to_vec()).collect())
        }
    }
}

/// Base values f(b) and convergence deltas Σφ − (f(x) − f(b)) for every (input, target).
fn report_base_and_delta(ctx: &Context<'_>, request: &Request<'_>, baselines: &[Vec<f32>], results: &[&mut [f32]]) -> Result<(), Error> {
    let pairs = request.batch_size() * request.num_targets();
    let mut sums = vec![0f64; pairs];
    for attributions in results {
        let len = attributions.len() / pairs.max(1);
        for (k, sum) in sums.iter_mut().enumerate() {
            *sum += attributions[k * len..(k + 1) * len].iter().map(|&v| v as f64).sum::<f64>();
        }
    }
    let baselines: Vec<&[f32]> = baselines.iter().map(Vec::as_slice).collect();
    ctx.report_against_baseline(request, &baselines, &sums, "convergence_delta")
}

export_plugin!(IntegratedGradients);
