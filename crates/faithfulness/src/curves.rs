//! Deletion and insertion curves (Petsiuk et al., RISE, 2018): features are moved, in the
//! order of |φ| (largest first; ties by position), from the input to `baseline` (deletion) or
//! from `baseline` to the input (insertion), in `steps` equal fractions of the feature count
//! (step k moves round(k·F/steps) features). The curve is the explained target's output after
//! each step, k = 0..=steps; the figure is its area over [0, 1] (trapezoid rule). A faithful
//! explanation makes deletion fall fast (small area) and insertion rise fast (large area).
//! The curves come back as the extra `curve` [N, T, steps + 1].

use crate::{Evaluation, Explanation, Forward, Metric, MetricError, MetricInfo, ParamKind, ParamSpec, Params};
use ndarray::{Array2, Array3, ArrayD, IxDyn};

const PARAMS: [ParamSpec; 2] = [
    ParamSpec {
        name: "steps",
        kind: ParamKind::Integer,
        default: 10.0,
        min: 1.0,
        max: 10_000.0,
        description: "Points of the curve after the first: each moves 1/steps of the features",
    },
    ParamSpec {
        name: "baseline",
        kind: ParamKind::Number,
        default: 0.0,
        min: f64::MIN,
        max: f64::MAX,
        description: "The value a removed feature takes (deletion) or every feature starts at (insertion)",
    },
];

/// Which way features move.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Delete,
    Insert,
}

/// Feature positions by |φ|, largest first; ties keep the lower position first.
fn order(phi: &[f32]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..phi.len()).collect();
    order.sort_by(|&a, &b| phi[b].abs().total_cmp(&phi[a].abs()));
    order
}

fn evaluate(
    name: &'static str,
    direction: Direction,
    e: &Explanation<'_>,
    params: &Params,
    forward: &mut dyn Forward,
) -> Result<Evaluation, MetricError> {
    let (n, t, f) = (e.rows(), e.targets_per_row(), e.features());
    let steps = params.integer("steps") as usize;
    let baseline = params.number("baseline") as f32;
    let points = steps + 1;
    let mut shape = vec![n * t * points];
    shape.extend_from_slice(&e.inputs.shape()[1..]);
    let mut rows = ArrayD::zeros(IxDyn(&shape));
    let mut origin = Vec::with_capacity(n * t * points);
    let mut targets = Vec::with_capacity(n * t * points);
    {
        let flat = rows.as_slice_mut().expect("fresh array");
        for r in 0..n {
            let x = e.input(r);
            for tt in 0..t {
                let ranked = order(&e.attribution(r, tt));
                for k in 0..points {
                    let moved = (k * f + steps / 2) / steps;
                    let row = &mut flat[((r * t + tt) * points + k) * f..][..f];
                    match direction {
                        Direction::Delete => {
                            row.copy_from_slice(&x);
                            ranked[..moved].iter().for_each(|&i| row[i] = baseline);
                        }
                        Direction::Insert => {
                            row.fill(baseline);
                            ranked[..moved].iter().for_each(|&i| row[i] = x[i]);
                        }
                    }
                    origin.push(r);
                    targets.push(e.target(r, tt));
                }
            }
        }
    }
    let values = crate::target_values(forward, rows.view(), &origin, &targets, crate::BATCH_ROWS)?;
    let curve = Array3::from_shape_vec((n, t, points), values).expect("sized above");
    let area = Array2::from_shape_fn((n, t), |(r, tt)| {
        let c = curve.slice(ndarray::s![r, tt, ..]);
        let sum: f64 = (0..steps).map(|k| (c[k] as f64 + c[k + 1] as f64) / 2.0).sum();
        (sum / steps as f64) as f32
    });
    Ok(Evaluation { name, values: area, parameters: params.0.clone(), extras: vec![("curve".to_string(), curve.into_dyn())] })
}

/// Deletion or insertion: one metric type, two directions.
pub struct CurveMetric {
    info: MetricInfo,
    direction: Direction,
}

/// Features leave for the baseline, largest |φ| first.
pub static DELETION: CurveMetric = CurveMetric {
    info: MetricInfo {
        name: "deletion",
        description: "Area under the target's output as the most important features are removed first (smaller is more faithful)",
        params: &PARAMS,
        stream: 3,
        continuous: false,
    },
    direction: Direction::Delete,
};

/// Features arrive from the baseline, largest |φ| first.
pub static INSERTION: CurveMetric = CurveMetric {
    info: MetricInfo {
        name: "insertion",
        description: "Area under the target's output as the most important features are added first (larger is more faithful)",
        params: &PARAMS,
        stream: 4,
        continuous: false,
    },
    direction: Direction::Insert,
};

impl Metric for CurveMetric {
    fn info(&self) -> &MetricInfo {
        &self.info
    }
    fn cost(&self, e: &Explanation<'_>, params: &Params) -> u64 {
        (e.rows() * e.targets_per_row()) as u64 * (params.integer("steps") as u64 + 1)
    }
    fn evaluate(
        &self,
        e: &Explanation<'_>,
        params: &Params,
        _seed: u64,
        forward: &mut dyn Forward,
    ) -> Result<Evaluation, MetricError> {
        evaluate(self.info.name, self.direction, e, params, forward)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Param;
    use crate::testing::{LinearCase, linear_case};
    use std::collections::BTreeMap;

    #[test]
    fn curves_of_a_linear_model_follow_the_removed_terms() {
        let case = linear_case();
        let LinearCase { mut model, phi, targets, base, outputs, .. } = linear_case();
        let e = case.explanation(&phi);
        let given = BTreeMap::from([("steps".to_string(), Param::Integer(4))]);
        let params = crate::resolve_params(&DELETION, &given).unwrap();
        let deletion = DELETION.evaluate(&e, &params, 0, &mut model).unwrap();
        let insertion = INSERTION.evaluate(&e, &params, 0, &mut model).unwrap();
        let (dc, ic) = (&deletion.extras[0].1, &insertion.extras[0].1);
        assert_eq!(dc.shape(), &[2, 2, 5]);
        for r in 0..2 {
            for t in 0..2 {
                // With 4 features and 4 steps each step moves one feature: removing the k
                // largest |φ| terms of f = Σ φ_i + b leaves b plus the rest.
                let terms: Vec<f32> = (0..4).map(|i| phi[[r, t, i]]).collect();
                let ranked = order(&terms);
                let full = outputs[[r, targets[[r, t]] as usize]];
                for k in 0..5 {
                    let removed: f32 = ranked[..k].iter().map(|&i| terms[i]).sum();
                    assert!((dc[[r, t, k]] - (full - removed)).abs() < 1e-5, "deletion ({r},{t},{k})");
                    assert!((ic[[r, t, k]] - (base[[r, t]] + removed)).abs() < 1e-5, "insertion ({r},{t},{k})");
                }
                let area: f32 = (0..4).map(|k| (dc[[r, t, k]] + dc[[r, t, k + 1]]) / 2.0).sum::<f32>() / 4.0;
                assert!((deletion.values[[r, t]] - area).abs() < 1e-5);
            }
        }
        assert_eq!(model.calls, 2 * 2 * 2 * 5);
    }

    #[test]
    fn steps_that_do_not_divide_the_features_round_to_the_nearest() {
        // 4 features in 3 steps: 0, 1 (1.33), 3 (2.67), 4 features moved.
        assert_eq!((0..4).map(|k| (k * 4 + 3 / 2) / 3).collect::<Vec<_>>(), vec![0, 1, 3, 4]);
    }
}
