//! The diverging colour map, the figure-wide limit, and number formatting.

use crate::canvas::Rgb;

/// The positive half of the map, from white at zero to dark red at the limit (the red side of
/// ColorBrewer's RdBu). The negative half is the same ramp with red and blue swapped, so equal
/// magnitudes of opposite sign get mirrored colours by construction.
const RED_RAMP: [Rgb; 4] = [[255, 255, 255], [244, 165, 130], [214, 96, 77], [178, 24, 43]];

/// The colour of attribution `value` on a scale whose ends are `-limit` and `+limit`; values
/// beyond the limit take the end colour.
pub fn diverging(value: f32, limit: f32) -> Rgb {
    let t = if limit > 0.0 && value.is_finite() { (value.abs() / limit).min(1.0) } else { 0.0 };
    let segments = (RED_RAMP.len() - 1) as f32;
    let pos = t * segments;
    let i = (pos.floor() as usize).min(RED_RAMP.len() - 2);
    let f = pos - i as f32;
    let (a, b) = (RED_RAMP[i], RED_RAMP[i + 1]);
    let mix = |k: usize| (a[k] as f32 + (b[k] as f32 - a[k] as f32) * f).round() as u8;
    let red = [mix(0), mix(1), mix(2)];
    if value < 0.0 { [red[2], red[1], red[0]] } else { red }
}

/// The colour of full-strength bars of either sign.
pub fn bar(positive: bool) -> Rgb {
    diverging(if positive { 0.8 } else { -0.8 }, 1.0)
}

/// The `q` quantile (0..=1) of `values`, interpolating linearly between order statistics (as
/// numpy's default does). NaN is skipped; an empty slice gives 0.
pub fn quantile(values: impl IntoIterator<Item = f32>, q: f64) -> f32 {
    let mut v: Vec<f32> = values.into_iter().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f32::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (v.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    let frac = (pos - lo as f64) as f32;
    v[lo] + (v[hi] - v[lo]) * frac
}

/// The symmetric limit of a figure's colour scale: the 99.9th percentile of |attribution|, so a
/// handful of extreme values do not wash out every other panel. Never zero.
pub fn symmetric_limit(values: impl IntoIterator<Item = f32>) -> f32 {
    let lim = quantile(values.into_iter().map(f32::abs), 0.999);
    if lim > 0.0 && lim.is_finite() { lim } else { 1.0 }
}

/// Probabilities for each output row: the row itself when it already is a distribution
/// (non-negative, summing to 1), else its softmax. The flag says whether softmax was applied.
pub fn probabilities(outputs: &[f32], row_len: usize) -> (Vec<f32>, bool) {
    if row_len == 0 {
        return (Vec::new(), false);
    }
    let is_distribution = outputs.chunks(row_len).all(|row| {
        row.iter().all(|&p| (0.0..=1.0).contains(&p)) && (row.iter().map(|&p| p as f64).sum::<f64>() - 1.0).abs() < 1e-3
    });
    if is_distribution {
        return (outputs.to_vec(), false);
    }
    let mut out = Vec::with_capacity(outputs.len());
    for row in outputs.chunks(row_len) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let exps: Vec<f64> = row.iter().map(|&z| ((z - max) as f64).exp()).collect();
        let sum: f64 = exps.iter().sum();
        out.extend(exps.iter().map(|e| (e / sum) as f32));
    }
    (out, true)
}

/// A number in at most about five characters of precision, for ticks and labels.
pub fn number(v: f32) -> String {
    let a = v.abs();
    if v == 0.0 {
        "0".into()
    } else if !(1e-3..1e5).contains(&a) {
        format!("{v:.1e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// A signed number ("+0.12", "-3.4").
pub fn signed(v: f32) -> String {
    if v >= 0.0 { format!("+{}", number(v)) } else { number(v) }
}

/// A probability for a panel title.
pub fn probability(p: f32) -> String {
    if p > 0.0 && p < 0.001 { "p<0.001".into() } else { format!("p={p:.3}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_interpolates_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(v, 0.0), 1.0);
        assert_eq!(quantile(v, 1.0), 4.0);
        assert_eq!(quantile(v, 0.5), 2.5);
        // 1000 values 1..=1000: numpy.percentile(v, 99.9) = 999.001.
        let big: Vec<f32> = (1..=1000).map(|i| i as f32).collect();
        assert!((quantile(big, 0.999) - 999.001).abs() < 1e-3);
    }

    #[test]
    fn the_limit_ignores_the_sign_and_is_never_zero() {
        assert_eq!(symmetric_limit([-5.0, 1.0, 2.0]), quantile([5.0, 1.0, 2.0], 0.999));
        assert_eq!(symmetric_limit([0.0, 0.0]), 1.0);
    }

    #[test]
    fn softmax_only_for_logits() {
        let (p, soft) = probabilities(&[0.2, 0.8, 0.5, 0.5], 2);
        assert!(!soft);
        assert_eq!(p, [0.2, 0.8, 0.5, 0.5]);
        let (p, soft) = probabilities(&[0.0, 2.0f32.ln()], 2);
        assert!(soft);
        assert!((p[0] - 1.0 / 3.0).abs() < 1e-6 && (p[1] - 2.0 / 3.0).abs() < 1e-6);
    }

    #[test]
    fn the_map_is_white_at_zero_and_saturates_at_the_limit() {
        assert_eq!(diverging(0.0, 1.0), [255, 255, 255]);
        assert_eq!(diverging(1.0, 1.0), RED_RAMP[3]);
        assert_eq!(diverging(5.0, 1.0), RED_RAMP[3]);
        assert_eq!(diverging(-5.0, 1.0), [RED_RAMP[3][2], RED_RAMP[3][1], RED_RAMP[3][0]]);
    }
}
