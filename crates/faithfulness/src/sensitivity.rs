//! Max-sensitivity (Yeh et al. 2019, as captum's `sensitivity_max` computes it with its default
//! perturbation): the explainer is run again on inputs perturbed by uniform noise in
//! [−`radius`, `radius`] per element, and the figure is the largest relative change of the
//! attributions over `samples` perturbations:
//!
//! ```text
//! sensitivity_max = max over samples of ‖φ(x + u) − φ(x)‖₂ / ‖φ(x)‖₂   (‖φ(x)‖₂ = 0: the numerator)
//! ```
//!
//! per input and target, with the targets held at the request's (a perturbation does not
//! change which output is explained). Perturbation `s` of row `n` takes the draws of the
//! metric's stream from `(n·samples + s)·F` on, one uniform per element.

use crate::{Evaluation, Explanation, Forward, Metric, MetricError, MetricInfo, ParamKind, ParamSpec, Params};
use explaind_plugin_math::rng::Rng;
use ndarray::Array2;

pub struct SensitivityMax;

const PARAMS: [ParamSpec; 3] = [
    ParamSpec {
        name: "samples",
        kind: ParamKind::Integer,
        default: 10.0,
        min: 1.0,
        max: 1000.0,
        description: "Perturbations per input (captum's n_perturb_samples)",
    },
    ParamSpec {
        name: "radius",
        kind: ParamKind::Number,
        default: 0.02,
        min: 0.0,
        max: 1e6,
        description: "Half-width of the uniform noise added to each element (captum's perturb_radius)",
    },
    ParamSpec {
        name: "return_perturbations",
        kind: ParamKind::Flag,
        default: 0.0,
        min: 0.0,
        max: 1.0,
        description: "Return the noise as the extra `perturbations` [N, samples, *F]",
    },
];

const INFO: MetricInfo = MetricInfo {
    name: "sensitivity_max",
    description: "captum's sensitivity_max: the largest relative change of the attributions under small uniform input perturbations",
    params: &PARAMS,
    stream: 5,
    continuous: true,
};

impl Metric for SensitivityMax {
    fn info(&self) -> &MetricInfo {
        &INFO
    }
    fn cost(&self, e: &Explanation<'_>, params: &Params) -> u64 {
        e.rows() as u64 * params.integer("samples") as u64 * e.rows_per_explanation.max(1)
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
        let radius = params.number("radius");
        let mut rng = Rng::new(seed, INFO.stream);
        let noise: Vec<f32> = (0..n * samples * f).map(|_| ((2.0 * rng.uniform() - 1.0) * radius) as f32).collect();
        // x + u for every row and sample, [N·samples, *F].
        let (perturbed, origin) = crate::perturbed_rows(e, samples, &noise, 1.0);
        // One row's perturbations at a time: a re-explanation holds [samples, T, *F].
        let mut values = Array2::<f32>::zeros((n, t));
        for r in 0..n {
            forward.check()?;
            let rows = perturbed.slice_axis(ndarray::Axis(0), (r * samples..(r + 1) * samples).into());
            let again = forward.explain(None, rows, &origin[r * samples..(r + 1) * samples])?;
            let again = again.as_standard_layout();
            let again = again.as_slice().expect("standard layout");
            for tt in 0..t {
                let phi = e.attribution(r, tt);
                let norm = phi.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
                let worst = (0..samples)
                    .map(|s| {
                        let other = &again[(s * t + tt) * f..][..f];
                        let diff = other.iter().zip(&phi).map(|(&a, &b)| (a as f64 - b as f64).powi(2)).sum::<f64>().sqrt();
                        if norm == 0.0 { diff } else { diff / norm }
                    })
                    .fold(0f64, f64::max);
                values[[r, tt]] = worst as f32;
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
    use crate::testing::linear_case;
    use std::collections::BTreeMap;

    #[test]
    fn sensitivity_of_a_linear_models_shap_values_is_the_relative_input_change() {
        // φ_t(x) = W_t ⊙ x, so φ_t(x + u) − φ_t(x) = W_t ⊙ u.
        let case = linear_case();
        let mut model = linear_case().model;
        let e = case.explanation(&case.phi);
        let given =
            BTreeMap::from([("samples".to_string(), Param::Integer(5)), ("return_perturbations".to_string(), Param::Flag(true))]);
        let params = crate::resolve_params(&SensitivityMax, &given).unwrap();
        let result = SensitivityMax.evaluate(&e, &params, 3, &mut model).unwrap();
        assert_eq!(model.explained, 2 * 5);
        let u = &result.extras[0].1;
        assert!(u.iter().all(|v| v.abs() <= 0.02 + 1e-7));
        for r in 0..2 {
            for t in 0..2 {
                let norm: f64 = (0..4).map(|i| (case.phi[[r, t, i]] as f64).powi(2)).sum::<f64>().sqrt();
                let expected = (0..5)
                    .map(|s| {
                        (0..4).map(|i| (case.model.w[[t, i]] as f64 * u[[r, s, i]] as f64).powi(2)).sum::<f64>().sqrt() / norm
                    })
                    .fold(0f64, f64::max);
                assert!((result.values[[r, t]] as f64 - expected).abs() < 1e-5 * expected.max(1e-3), "({r},{t})");
            }
        }
        let again = SensitivityMax.evaluate(&e, &params, 3, &mut model).unwrap();
        assert_eq!(again, result, "same seed, same figures");
    }
}
