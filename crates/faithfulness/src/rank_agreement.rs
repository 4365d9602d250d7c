//! Rank agreement between the explanation and another explainer's on the same inputs and
//! targets, for reviewers who compare methods: the figure is Spearman's rank correlation of
//! the two attributions over the features (signed values; tied values share their mean rank),
//! and the extra `top_k_overlap` [N, T] is the share of the `top_k` features by |φ| that both
//! put first. The other explainer (`explainer`) runs with its default parameters.

use crate::{Evaluation, Explanation, Forward, Metric, MetricError, MetricInfo, ParamKind, ParamSpec, Params};
use ndarray::Array2;

pub struct RankAgreement;

const PARAMS: [ParamSpec; 2] = [
    ParamSpec {
        name: "explainer",
        kind: ParamKind::Text,
        default: 0.0,
        min: 0.0,
        max: 0.0,
        description: "The explainer to compare with (required)",
    },
    ParamSpec {
        name: "top_k",
        kind: ParamKind::Integer,
        default: 5.0,
        min: 1.0,
        max: 1e9,
        description: "Features counted in the top-k overlap",
    },
];

const INFO: MetricInfo = MetricInfo {
    name: "rank_agreement",
    description: "Spearman's rank correlation with another explainer's attributions, and their top-k overlap",
    params: &PARAMS,
    stream: 6,
    continuous: false,
};

/// Ranks from 1, ties sharing their mean rank.
fn ranks(values: &[f32]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut out = vec![0f64; values.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && values[order[j + 1]] == values[order[i]] {
            j += 1;
        }
        let mean = (i + j) as f64 / 2.0 + 1.0;
        order[i..=j].iter().for_each(|&k| out[k] = mean);
        i = j + 1;
    }
    out
}

/// Pearson correlation of the ranks; 0 when either side is constant.
pub fn spearman(a: &[f32], b: &[f32]) -> f64 {
    let (ra, rb) = (ranks(a), ranks(b));
    let n = ra.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let cov: f64 = ra.iter().zip(&rb).map(|(x, y)| (x - ma) * (y - mb)).sum();
    let (va, vb): (f64, f64) = (ra.iter().map(|x| (x - ma).powi(2)).sum(), rb.iter().map(|y| (y - mb).powi(2)).sum());
    if va == 0.0 || vb == 0.0 { 0.0 } else { cov / (va * vb).sqrt() }
}

fn top(values: &[f32], k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[b].abs().total_cmp(&values[a].abs()));
    order.truncate(k);
    order
}

impl Metric for RankAgreement {
    fn info(&self) -> &MetricInfo {
        &INFO
    }
    fn cost(&self, e: &Explanation<'_>, _: &Params) -> u64 {
        // The other explainer's own estimate is checked when it runs; this is the order of it.
        e.rows() as u64 * e.rows_per_explanation.max(1)
    }

    fn evaluate(
        &self,
        e: &Explanation<'_>,
        params: &Params,
        _seed: u64,
        forward: &mut dyn Forward,
    ) -> Result<Evaluation, MetricError> {
        let (n, t, f) = (e.rows(), e.targets_per_row(), e.features());
        let k = (params.integer("top_k") as usize).min(f);
        let origin: Vec<usize> = (0..n).collect();
        let other = forward.explain(Some(params.text("explainer")), e.inputs.view(), &origin)?;
        if other.shape()[..2] != [n, t] || other.len() != n * t * f {
            return Err(MetricError::Invalid(format!(
                "evaluate.rank_agreement.explainer: {} gave attributions of shape {:?}, not over the same input and targets",
                params.text("explainer"),
                other.shape()
            )));
        }
        let other = other.as_standard_layout();
        let other = other.as_slice().expect("standard layout");
        let mut values = Array2::zeros((n, t));
        let mut overlap = Array2::zeros((n, t));
        for r in 0..n {
            for tt in 0..t {
                let mine = e.attribution(r, tt);
                let theirs = &other[(r * t + tt) * f..][..f];
                values[[r, tt]] = spearman(&mine, theirs) as f32;
                let (a, b) = (top(&mine, k), top(theirs, k));
                overlap[[r, tt]] = a.iter().filter(|i| b.contains(i)).count() as f32 / k.max(1) as f32;
            }
        }
        let extras = vec![("top_k_overlap".to_string(), overlap.into_dyn())];
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
    fn spearman_of_known_orders() {
        assert!((spearman(&[1.0, 2.0, 3.0, 4.0], &[10.0, 20.0, 30.0, 40.0]) - 1.0).abs() < 1e-12);
        assert!((spearman(&[1.0, 2.0, 3.0, 4.0], &[4.0, 3.0, 2.0, 1.0]) + 1.0).abs() < 1e-12);
        // scipy.stats.spearmanr([1, 2, 2, 3], [1, 3, 2, 4]).statistic = 0.9486832980505138
        assert!((spearman(&[1.0, 2.0, 2.0, 3.0], &[1.0, 3.0, 2.0, 4.0]) - 0.9486832980505138).abs() < 1e-12);
        assert_eq!(spearman(&[1.0, 1.0], &[1.0, 2.0]), 0.0);
    }

    #[test]
    fn agreement_with_the_gradient_of_a_linear_model() {
        let case = linear_case();
        let mut model = linear_case().model;
        let e = case.explanation(&case.phi);
        let given =
            BTreeMap::from([("explainer".to_string(), Param::Text("saliency".into())), ("top_k".to_string(), Param::Integer(2))]);
        let params = crate::resolve_params(&RankAgreement, &given).unwrap();
        let result = RankAgreement.evaluate(&e, &params, 0, &mut model).unwrap();
        for r in 0..2 {
            for t in 0..2 {
                let mine: Vec<f32> = (0..4).map(|i| case.phi[[r, t, i]]).collect();
                let grad: Vec<f32> = (0..4).map(|i| case.model.w[[t, i]]).collect();
                assert!((result.values[[r, t]] as f64 - spearman(&mine, &grad)).abs() < 1e-6);
            }
        }
        let err = crate::resolve_params(&RankAgreement, &BTreeMap::new()).unwrap_err().to_string();
        assert_eq!(err, "evaluate.rank_agreement.explainer: required");
    }
}
