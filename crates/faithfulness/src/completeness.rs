//! Completeness: Σφ − (f(x) − base) for each input and target, the residual of the efficiency
//! property (SHAP, DeepLIFT's summation-to-delta, integrated gradients' convergence delta).
//! `base` is the explainer's base values when it returns them (Deep SHAP, Kernel SHAP, tree
//! SHAP, expected gradients); otherwise the model at the input with every feature set to
//! `baseline` (integrated gradients and DeepLIFT against that constant baseline).

use crate::{Evaluation, Explanation, Forward, Metric, MetricError, MetricInfo, ParamKind, ParamSpec, Params};
use ndarray::{Array2, ArrayD};

pub struct Completeness;

const PARAMS: [ParamSpec; 1] = [ParamSpec {
    name: "baseline",
    kind: ParamKind::Number,
    default: 0.0,
    min: f64::MIN,
    max: f64::MAX,
    description: "The constant input that defines base = f(baseline) when the explainer returns no base values",
}];

const INFO: MetricInfo = MetricInfo {
    name: "completeness",
    description: "Σφ − (f(x) − base): how far the attributions are from summing to the output's change",
    params: &PARAMS,
    stream: 1,
    continuous: false,
};

impl Metric for Completeness {
    fn info(&self) -> &MetricInfo {
        &INFO
    }
    fn cost(&self, e: &Explanation<'_>, _: &Params) -> u64 {
        if e.base_values.is_some() { 0 } else { e.rows() as u64 }
    }

    fn evaluate(
        &self,
        e: &Explanation<'_>,
        params: &Params,
        _seed: u64,
        forward: &mut dyn Forward,
    ) -> Result<Evaluation, MetricError> {
        let (n, t) = (e.rows(), e.targets_per_row());
        let base = match e.base_values {
            Some(base) => base.to_owned(),
            None => {
                let baseline = ArrayD::from_elem(e.inputs.shape(), params.number("baseline") as f32);
                let origin: Vec<usize> = (0..n).collect();
                let outputs = crate::output_rows(forward, baseline.view(), &origin, crate::BATCH_ROWS)?;
                Array2::from_shape_fn((n, t), |(r, tt)| outputs[[r, e.target(r, tt)]])
            }
        };
        let values = Array2::from_shape_fn((n, t), |(r, tt)| {
            let sum: f64 = e.attribution(r, tt).iter().map(|&v| v as f64).sum();
            (sum - (e.outputs[[r, e.target(r, tt)]] as f64 - base[[r, tt]] as f64)) as f32
        });
        Ok(Evaluation { name: self.name(), values, parameters: params.0.clone(), extras: Vec::new() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{LinearCase, linear_case};

    #[test]
    fn exact_shapley_values_of_a_linear_model_are_complete() {
        let case = linear_case();
        let LinearCase { mut model, phi, targets, base, outputs, .. } = linear_case();
        let e = case.explanation(&phi);
        let params = crate::resolve_params(&Completeness, &Default::default()).unwrap();
        let with_base = Completeness.evaluate(&e, &params, 0, &mut model).unwrap();
        assert!(with_base.values.iter().all(|v| v.abs() < 1e-5), "{:?}", with_base.values);
        assert_eq!(model.calls, 0, "base values given: no forward pass");
        let e = Explanation { base_values: None, ..e };
        let computed = Completeness.evaluate(&e, &params, 0, &mut model).unwrap();
        assert!(computed.values.iter().all(|v| v.abs() < 1e-5), "{:?}", computed.values);
        assert!(model.calls >= 2);
        // Halving the attributions leaves half the change unexplained.
        let half = phi.mapv(|v| v / 2.0);
        let e = Explanation { attributions: half.view(), ..e };
        let off = Completeness.evaluate(&e, &params, 0, &mut model).unwrap();
        let change = &outputs - &base;
        for ((r, t), v) in off.values.indexed_iter() {
            let expected = -(change[[r, targets[[r, t]] as usize]]) / 2.0;
            assert!((v - expected).abs() < 1e-5, "({r}, {t}): {v} vs {expected}");
        }
    }
}
