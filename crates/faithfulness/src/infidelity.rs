//! Infidelity (Yeh et al. 2019, as captum's `infidelity` computes it): for perturbations I of
//! the input, how well Iᵀφ predicts the change of the output f(x) − f(x − I):
//!
//! ```text
//! infidelity = mean over samples of (Iᵀφ − (f(x) − f(x − I)))²
//! normalize:   β = Σ Iᵀφ·Δf / Σ (Iᵀφ)²,  infidelity = mean of (β·Iᵀφ − Δf)²
//! ```
//!
//! The perturbed input is x̃ = x − ε with ε Gaussian noise, each element N(0, `noise_scale`²),
//! drawn per input row (the same perturbations serve every target of that row, as in captum,
//! where one call explains one target). I is what captum's `infidelity_perturb_func_decorator`
//! makes of it: with `multiply_by_inputs` (the default, for attributions that are multiplied by
//! the input's difference from a baseline: SHAP values, integrated gradients, DeepLIFT,
//! gradient × input), I = ε / (x − `baseline`), element by element, so that Iᵀφ is the
//! first-order change; where x equals the baseline, I = ε there (captum's `safe_div` with its
//! default denominator of 1).
//! Without it (saliency and other plain gradients), I = ε. Perturbation `s` of row `n` takes the draws of the metric's stream from
//! `(n·samples + s)·F` on, two uniforms per normal (Box–Muller), so a row's figure does not
//! depend on the other rows of the request. With `return_perturbations`, the noise comes back
//! as the extra `perturbations` [N, samples, *F] for an independent check.

use crate::{Evaluation, Explanation, Forward, Metric, MetricError, MetricInfo, ParamKind, ParamSpec, Params};
use explaind_plugin_math::rng::Rng;
use ndarray::Array2;

pub struct Infidelity;

const PARAMS: [ParamSpec; 6] = [
    ParamSpec {
        name: "samples",
        kind: ParamKind::Integer,
        default: 10.0,
        min: 1.0,
        max: 10_000.0,
        description: "Perturbations per input (captum's n_perturb_samples)",
    },
    ParamSpec {
        name: "noise_scale",
        kind: ParamKind::Number,
        default: 0.1,
        min: 0.0,
        max: 1e6,
        description: "Standard deviation of the Gaussian perturbation of each element",
    },
    ParamSpec {
        name: "normalize",
        kind: ParamKind::Flag,
        default: 0.0,
        min: 0.0,
        max: 1.0,
        description: "Scale the attributions by the β that minimises the figure (captum's normalize)",
    },
    ParamSpec {
        name: "multiply_by_inputs",
        kind: ParamKind::Flag,
        default: 1.0,
        min: 0.0,
        max: 1.0,
        description: "The attributions are multiplied by (x − baseline): I = ε / (x − baseline) (captum's default)",
    },
    ParamSpec {
        name: "baseline",
        kind: ParamKind::Number,
        default: 0.0,
        min: f64::MIN,
        max: f64::MAX,
        description: "The baseline the attributions are measured from, with multiply_by_inputs",
    },
    ParamSpec {
        name: "return_perturbations",
        kind: ParamKind::Flag,
        default: 0.0,
        min: 0.0,
        max: 1.0,
        description: "Return the perturbations as the extra `perturbations` [N, samples, *F]",
    },
];

const INFO: MetricInfo = MetricInfo {
    name: "infidelity",
    description: "captum's infidelity: the mean squared error of Iᵀφ as a predictor of f(x) − f(x − I) under Gaussian perturbations I",
    params: &PARAMS,
    stream: 2,
    continuous: true,
};

/// A standard normal from two uniforms (Box–Muller, the cosine branch).
fn normal(rng: &mut Rng) -> f64 {
    let (u1, u2) = (rng.uniform(), rng.uniform());
    (-2.0 * (1.0 - u1).ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

impl Metric for Infidelity {
    fn info(&self) -> &MetricInfo {
        &INFO
    }
    fn cost(&self, e: &Explanation<'_>, params: &Params) -> u64 {
        e.rows() as u64 * params.integer("samples") as u64
    }

    fn evaluate(
        &self,
        e: &Explanation<'_>,
        params: &Params,
        seed: u64,
        forward: &mut dyn Forward,
    ) -> Result<Evaluation, MetricError> {
        let (n, t, f) = (e.rows(), e.targets_per_row(), e.features());
        let samples = params.integer("samples") as usize;
        let scale = params.number("noise_scale");
        let mut rng = Rng::new(seed, INFO.stream);
        // Two draws per normal, in order: element i takes draws 2i and 2i + 1.
        let noise: Vec<f32> = (0..n * samples * f).map(|_| (normal(&mut rng) * scale) as f32).collect();
        // x − ε for every row and sample, [N·samples, *F].
        let (perturbed, origin) = crate::perturbed_rows(e, samples, &noise, -1.0);
        let outputs = crate::output_rows(forward, perturbed.view(), &origin, crate::BATCH_ROWS)?;
        let normalize = params.flag("normalize");
        // I per row and sample: ε, or ε / (x − baseline) element by element.
        let perturbation: Vec<f64> = if params.flag("multiply_by_inputs") {
            let baseline = params.number("baseline");
            let inputs = e.inputs.as_standard_layout();
            let x = inputs.as_slice().expect("standard layout");
            (0..n * samples * f)
                .map(|k| {
                    let (r, i) = (k / (samples * f), k % f);
                    let span = x[r * f + i] as f64 - baseline;
                    noise[k] as f64 / if span == 0.0 { 1.0 } else { span }
                })
                .collect()
        } else {
            noise.iter().map(|&v| v as f64).collect()
        };
        let mut values = Array2::zeros((n, t));
        for r in 0..n {
            for tt in 0..t {
                let target = e.target(r, tt);
                let phi = e.attribution(r, tt);
                let fx = e.outputs[[r, target]] as f64;
                // Sums over samples of (Iᵀφ)², Iᵀφ·Δf and Δf², in f64.
                let (mut aa, mut ad, mut dd) = (0f64, 0f64, 0f64);
                for s in 0..samples {
                    let at = (r * samples + s) * f;
                    let dot: f64 = (0..f).map(|i| perturbation[at + i] * phi[i] as f64).sum();
                    let delta = fx - outputs[[r * samples + s, target]] as f64;
                    aa += dot * dot;
                    ad += dot * delta;
                    dd += delta * delta;
                }
                let figure = if normalize {
                    let beta = if aa == 0.0 { 0.0 } else { ad / aa };
                    beta * beta * aa - 2.0 * beta * ad + dd
                } else {
                    aa - 2.0 * ad + dd
                };
                values[[r, tt]] = (figure / samples as f64) as f32;
            }
        }
        let extras = crate::perturbations_extra(e, params, samples, noise);
        Ok(Evaluation { name: self.name(), values, parameters: params.0.clone(), extras })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Param;
    use crate::testing::{LinearCase, linear_case};
    use std::collections::BTreeMap;

    fn params(pairs: &[(&str, Param)]) -> Params {
        let given: BTreeMap<String, Param> = pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
        crate::resolve_params(&Infidelity, &given).unwrap()
    }

    #[test]
    fn a_linear_models_exact_attributions_have_zero_infidelity() {
        // For f(x) = W x + b, f(x) − f(x − ε) = W_t ε. Exact SHAP values against zero,
        // φ = W_t ⊙ x, with I = ε / x give Iᵀφ = W_t ε; so does the gradient φ = W_t with I = ε.
        let case = linear_case();
        let LinearCase { mut model, phi: shap, .. } = linear_case();
        let gradient = ndarray::Array::from_shape_fn(ndarray::IxDyn(&[2, 2, 4]), |ix| model.w[[ix[1], ix[2]]]);
        for (phi, multiply) in [(&shap, true), (&gradient, false)] {
            let e = case.explanation(phi);
            let p = params(&[
                ("samples", Param::Integer(50)),
                ("multiply_by_inputs", Param::Flag(multiply)),
                ("return_perturbations", Param::Flag(true)),
            ]);
            model.calls = 0;
            let result = Infidelity.evaluate(&e, &p, 42, &mut model).unwrap();
            assert!(result.values.iter().all(|v| v.abs() < 1e-8), "multiply_by_inputs={multiply}: {:?}", result.values);
            assert_eq!(model.calls, 2 * 50);
            let (name, noise) = &result.extras[0];
            assert_eq!((name.as_str(), noise.shape()), ("perturbations", &[2, 50, 4][..]));
            let std = (noise.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / noise.len() as f64).sqrt();
            assert!((std - 0.1).abs() < 0.02, "noise std {std}");
        }
    }

    #[test]
    fn the_figure_matches_a_direct_computation_and_repeats_bit_for_bit() {
        let case = linear_case();
        let LinearCase { mut model, phi, targets, .. } = linear_case();
        let e = case.explanation(&phi);
        for normalize in [false, true] {
            let p = params(&[
                ("return_perturbations", Param::Flag(true)),
                ("normalize", Param::Flag(normalize)),
                ("multiply_by_inputs", Param::Flag(false)),
            ]);
            let a = Infidelity.evaluate(&e, &p, 7, &mut model).unwrap();
            let b = Infidelity.evaluate(&e, &p, 7, &mut model).unwrap();
            assert_eq!(a, b, "same seed, same figures");
            let other = Infidelity.evaluate(&e, &p, 8, &mut model).unwrap();
            assert_ne!(a.values, other.values);
            let noise = &a.extras[0].1;
            for r in 0..2 {
                for t in 0..2 {
                    let target = targets[[r, t]] as usize;
                    let (mut dots, mut deltas) = (Vec::new(), Vec::new());
                    for s in 0..10 {
                        let i: Vec<f64> = (0..4).map(|k| noise[[r, s, k]] as f64).collect();
                        dots.push((0..4).map(|k| i[k] * phi[[r, t, k]] as f64).sum::<f64>());
                        deltas.push((0..4).map(|k| i[k] * model.w[[target, k]] as f64).sum::<f64>());
                    }
                    let beta = if normalize {
                        dots.iter().zip(&deltas).map(|(a, d)| a * d).sum::<f64>() / dots.iter().map(|a| a * a).sum::<f64>()
                    } else {
                        1.0
                    };
                    let expected = dots.iter().zip(&deltas).map(|(a, d)| (beta * a - d).powi(2)).sum::<f64>() / 10.0;
                    let got = a.values[[r, t]] as f64;
                    assert!((got - expected).abs() <= 1e-4 * expected.abs().max(1e-3), "({r},{t}) {got} vs {expected}");
                }
            }
        }
    }
}
