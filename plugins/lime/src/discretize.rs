//! lime's `QuartileDiscretizer`, fitted on the training rows (here: the request's background).
//! Per feature: the 25/50/75 % percentiles (numpy's linear interpolation), deduplicated, are the
//! bin edges; a value's bin is the number of edges strictly below it (`np.searchsorted`, left);
//! each bin keeps the mean, population standard deviation (+1e-11) and frequency of its
//! training values, and its bounds are [min, edges..] / [edges.., max] of the training data.

use crate::rng::TruncatedNormal;

pub const MAX_BINS: usize = 4;

pub struct Feature {
    /// The three percentiles before deduplication (reported to clients).
    pub quartiles: [f64; 3],
    pub edges: Vec<f64>,
    pub means: Vec<f64>,
    pub stds: Vec<f64>,
    /// Share of the training rows in each bin.
    pub frequencies: Vec<f64>,
    /// Cumulative frequencies over the bins, for drawing a bin index.
    cumulative: Vec<f64>,
    pub mins: Vec<f64>,
    pub maxs: Vec<f64>,
    /// Each bin's value distribution (None: the bin is a single point, its bound).
    samplers: Vec<Option<TruncatedNormal>>,
}

/// numpy's `percentile(values, q)` with the default linear method, on sorted values.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    let position = q / 100.0 * (sorted.len() - 1) as f64;
    let lo = position.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    let t = position - lo as f64;
    let (a, b) = (sorted[lo], sorted[hi]);
    // numpy's _lerp: the form that is exact at both ends.
    if t >= 0.5 { b - (b - a) * (1.0 - t) } else { a + (b - a) * t }
}

impl Feature {
    pub fn fit(column: &[f64]) -> Self {
        let mut sorted = column.to_vec();
        sorted.sort_by(f64::total_cmp);
        let quartiles = [percentile(&sorted, 25.0), percentile(&sorted, 50.0), percentile(&sorted, 75.0)];
        let mut edges = quartiles.to_vec();
        edges.dedup();
        let bins = edges.len() + 1;
        let (mut sums, mut counts) = (vec![0f64; bins], vec![0usize; bins]);
        for &v in column {
            let b = bin_of(&edges, v);
            sums[b] += v;
            counts[b] += 1;
        }
        let means: Vec<f64> = (0..bins).map(|b| if counts[b] == 0 { 0.0 } else { sums[b] / counts[b] as f64 }).collect();
        let mut squares = vec![0f64; bins];
        for &v in column {
            let b = bin_of(&edges, v);
            squares[b] += (v - means[b]).powi(2);
        }
        let stds: Vec<f64> =
            (0..bins).map(|b| if counts[b] == 0 { 0.0 } else { (squares[b] / counts[b] as f64).sqrt() } + 1e-11).collect();
        let frequencies: Vec<f64> = counts.iter().map(|&c| c as f64 / column.len() as f64).collect();
        let mut acc = 0.0;
        let cumulative = frequencies
            .iter()
            .map(|f| {
                acc += f;
                acc
            })
            .collect();
        let mut mins = vec![sorted[0]];
        mins.extend(&edges);
        let mut maxs = edges.clone();
        maxs.push(*sorted.last().unwrap());
        let samplers =
            (0..bins).map(|b| (mins[b] != maxs[b]).then(|| TruncatedNormal::new(means[b], stds[b], mins[b], maxs[b]))).collect();
        Feature { quartiles, edges, means, stds, frequencies, cumulative, mins, maxs, samplers }
    }

    pub fn bin(&self, v: f64) -> usize {
        bin_of(&self.edges, v)
    }

    /// A bin drawn with the training frequencies (bins no training row fell in never come up).
    pub fn draw_bin(&self, u: f64) -> usize {
        let total = *self.cumulative.last().unwrap();
        self.cumulative.iter().position(|&c| u * total < c).unwrap_or(self.cumulative.len() - 1)
    }

    /// A value inside bin `b`: lime's truncated normal with the bin's mean and spread. Where
    /// the bin is a single point (its bounds are equal) the value is that point; lime returns
    /// the standardised bound there (0), which is a bug we do not copy.
    pub fn draw_value(&self, b: usize, u: f64) -> f64 {
        match &self.samplers[b] {
            Some(distribution) => distribution.sample(u),
            None => self.mins[b],
        }
    }
}

fn bin_of(edges: &[f64], v: f64) -> usize {
    edges.iter().take_while(|&&e| e < v).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_match_numpy_linear() {
        // numpy.percentile([1, 2, 3, 4, 10], [25, 50, 75]) == [2, 3, 4];
        // numpy.percentile([1, 2, 3, 4], [25, 50, 75]) == [1.75, 2.5, 3.25].
        let f = Feature::fit(&[3.0, 1.0, 10.0, 2.0, 4.0]);
        assert_eq!(f.quartiles, [2.0, 3.0, 4.0]);
        let f = Feature::fit(&[4.0, 2.0, 1.0, 3.0]);
        assert_eq!(f.quartiles, [1.75, 2.5, 3.25]);
        assert_eq!(f.frequencies, vec![0.25; 4]);
        assert_eq!(f.mins, vec![1.0, 1.75, 2.5, 3.25]);
        assert_eq!(f.maxs, vec![1.75, 2.5, 3.25, 4.0]);
    }

    #[test]
    fn bins_are_searchsorted_left_and_ties_collapse_edges() {
        let f = Feature::fit(&[0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0]);
        // Percentiles 0, 0, 1.25 → edges [0, 1.25]: three bins.
        assert_eq!(f.edges, vec![0.0, 1.25]);
        assert_eq!((f.bin(0.0), f.bin(0.5), f.bin(1.25), f.bin(2.0)), (0, 1, 1, 2));
        assert_eq!(f.frequencies, vec![5.0 / 8.0, 1.0 / 8.0, 2.0 / 8.0]);
        // Bin 0 is the single point 0: draws give exactly 0.
        let mut rng = crate::rng::Rng::new(0, 0);
        assert_eq!(f.draw_value(0, rng.uniform()), 0.0);
        for _ in 0..100 {
            let v = f.draw_value(2, rng.uniform());
            assert!(v > 1.25 - 1e-12 && v <= 3.0);
        }
        // Stds are population stds plus lime's 1e-11.
        assert!((f.stds[2] - 0.5 - 1e-11).abs() < 1e-15);
    }

    #[test]
    fn drawn_bins_follow_the_training_frequencies() {
        let f = Feature::fit(&[0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 2.0, 3.0]);
        let mut rng = crate::rng::Rng::new(4, 0);
        let mut counts = [0usize; 3];
        for _ in 0..80_000 {
            counts[f.draw_bin(rng.uniform())] += 1;
        }
        assert!((counts[0] as f64 / 80_000.0 - 0.625).abs() < 0.01, "{counts:?}");
        assert!((counts[1] as f64 / 80_000.0 - 0.125).abs() < 0.01, "{counts:?}");
    }
}
