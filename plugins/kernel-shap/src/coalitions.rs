//! Which coalitions Kernel SHAP evaluates, and their kernel weights: shap's KernelExplainer
//! scheme. Sizes are enumerated in full, smallest first (each with its complement size), while
//! the budget covers all their coalitions at their share of the Shapley kernel weight; the rest
//! of the budget is drawn at random (size from the leftover weight, then a uniform subset, with
//! its complement), and a repeated draw adds weight to the row it repeats instead of a new row.
//!
//! [`build`] asks its cancellation closure every [`CHECK_EVERY`] coalitions or draws, and
//! refuses budgets beyond [`MAX_BUDGET`] instead of sizing tables for them.

use crate::rng::Rng;

/// Coalitions (or draws) between two cancellation checks.
pub const CHECK_EVERY: usize = 4096;

/// The largest budget [`build`] takes: coalition indices are kept as u32, and 2^32 coalitions
/// would be hundreds of gigabytes of masks anyway (the plugin's estimate refuses far sooner).
pub const MAX_BUDGET: u64 = u32::MAX as u64 - 1;

/// Why [`build`] produced no coalitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The cancellation closure said stop.
    Cancelled,
    /// The budget is over [`MAX_BUDGET`].
    TooLarge,
}

/// Coalitions as bit sets over the M varying groups, `words` u64 per coalition.
pub struct Coalitions {
    pub m: usize,
    pub words: usize,
    pub bits: Vec<u64>,
    pub weights: Vec<f64>,
    /// The first `enumerated` coalitions were enumerated; the rest were sampled.
    pub enumerated: usize,
    /// Subset sizes (with their complements) that were enumerated in full.
    pub full_sizes: usize,
}

impl Coalitions {
    pub fn len(&self) -> usize {
        self.weights.len()
    }
    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }
    pub fn mask(&self, c: usize) -> &[u64] {
        &self.bits[c * self.words..(c + 1) * self.words]
    }
    pub fn has(&self, c: usize, j: usize) -> bool {
        self.bits[c * self.words + j / 64] >> (j % 64) & 1 == 1
    }
    fn push(&mut self, mask: &[u64], weight: f64) {
        self.bits.extend_from_slice(mask);
        self.weights.push(weight);
    }
}

/// shap's default budget, 2M + 2048, capped at every coalition but the empty and full ones.
pub fn default_budget(m: usize) -> u64 {
    (2 * m as u64 + 2048).min(max_coalitions(m))
}

/// 2^M − 2, saturating (M ≥ 64 never caps anything a request can ask for).
pub fn max_coalitions(m: usize) -> u64 {
    if m >= 63 { u64::MAX } else { (1u64 << m) - 2 }
}

pub fn binomial(n: usize, k: usize) -> f64 {
    let k = k.min(n - k);
    (0..k).fold(1.0, |acc, i| acc * (n - i) as f64 / (i + 1) as f64)
}

/// The Shapley kernel aggregated by coalition size, for sizes 1..=ceil((M−1)/2), each size's
/// weight counting its complement size too (doubled when the pair is two distinct sizes), and
/// normalised to sum to one.
pub fn size_weights(m: usize) -> Vec<f64> {
    let num_sizes = m.saturating_sub(1).div_ceil(2);
    let num_paired = m.saturating_sub(1) / 2;
    let mut w: Vec<f64> = (1..=num_sizes).map(|s| (m as f64 - 1.0) / (s as f64 * (m - s) as f64)).collect();
    for v in w.iter_mut().take(num_paired) {
        *v *= 2.0;
    }
    let total: f64 = w.iter().sum();
    w.iter_mut().for_each(|v| *v /= total);
    w
}

/// Builds the coalitions for M ≥ 2 varying groups and a budget already capped at 2^M − 2,
/// asking `cancelled` every [`CHECK_EVERY`] coalitions enumerated or draws made.
pub fn build(m: usize, budget: u64, rng: &mut Rng, cancelled: &dyn Fn() -> bool) -> Result<Coalitions, Stop> {
    if budget > MAX_BUDGET {
        return Err(Stop::TooLarge);
    }
    let words = m.div_ceil(64);
    let mut out = Coalitions { m, words, bits: Vec::new(), weights: Vec::new(), enumerated: 0, full_sizes: 0 };
    let weight_vector = size_weights(m);
    let num_sizes = weight_vector.len();
    let num_paired = m.saturating_sub(1) / 2;
    let mut mask = vec![0u64; words];
    let mut complement = vec![0u64; words];

    let mut left = budget as f64;
    let mut remaining = weight_vector.clone();
    // Combinations enumerated and draws made, for the cancellation checks.
    let mut work = 0usize;
    let mut combo = Vec::with_capacity(m);
    for size in 1..=num_sizes {
        let paired = size <= num_paired;
        let count = binomial(m, size) * if paired { 2.0 } else { 1.0 };
        // shap's test, tolerance included, so budgets land on the same sizes as shap's.
        if left * remaining[size - 1] / count < 1.0 - 1e-8 {
            break;
        }
        out.full_sizes += 1;
        left -= count;
        if remaining[size - 1] < 1.0 {
            let scale = 1.0 - remaining[size - 1];
            remaining.iter_mut().for_each(|v| *v /= scale);
        }
        let w = weight_vector[size - 1] / binomial(m, size) / if paired { 2.0 } else { 1.0 };
        // Lexicographic combinations of `size` out of `m`, as itertools.combinations.
        combo.clear();
        combo.extend(0..size);
        loop {
            work += 1;
            if work.is_multiple_of(CHECK_EVERY) && cancelled() {
                return Err(Stop::Cancelled);
            }
            set_bits(&mut mask, &combo);
            out.push(&mask, w);
            if paired {
                complement_into(&mask, m, &mut complement);
                out.push(&complement, w);
            }
            if !next_combination(&mut combo, m) {
                break;
            }
        }
    }
    out.enumerated = out.len();

    let mut samples_left = budget.saturating_sub(out.len() as u64) as usize;
    if out.full_sizes == num_sizes || samples_left == 0 {
        return Ok(out);
    }
    // Leftover sizes: paired sizes drawn once give two rows, so their weight is halved.
    let mut draw_weights: Vec<f64> = weight_vector.clone();
    for v in draw_weights.iter_mut().take(num_paired) {
        *v /= 2.0;
    }
    let draw_weights = &draw_weights[out.full_sizes..];
    let total: f64 = draw_weights.iter().sum();
    let mut cumulative = Vec::with_capacity(draw_weights.len());
    let mut acc = 0.0;
    for v in draw_weights {
        acc += v / total;
        cumulative.push(acc);
    }

    let mut seen = MaskSet::with_capacity(samples_left + 1, words);
    let mut perm: Vec<usize> = (0..m).collect();
    let first_sampled = out.len();
    // shap gives up after 4 draws per wanted row (the space may be almost exhausted).
    let mut attempts = samples_left.saturating_mul(4);
    while samples_left > 0 && attempts > 0 {
        work += 1;
        if work.is_multiple_of(CHECK_EVERY) && cancelled() {
            return Err(Stop::Cancelled);
        }
        attempts -= 1;
        let u = rng.uniform();
        let index = cumulative.iter().position(|&c| u < c).unwrap_or(cumulative.len() - 1);
        let size = index + out.full_sizes + 1;
        // Partial Fisher–Yates: the first `size` entries become a uniform random subset.
        for i in 0..size {
            let j = i + rng.below(m - i);
            perm.swap(i, j);
        }
        set_bits(&mut mask, &perm[..size]);
        let paired = size <= num_paired;
        match seen.find_or_insert(&mask, out.len(), &out.bits) {
            Some(existing) => {
                out.weights[existing] += 1.0;
                if paired {
                    out.weights[existing + 1] += 1.0;
                }
            }
            None => {
                out.push(&mask, 1.0);
                samples_left -= 1;
                if paired && samples_left > 0 {
                    complement_into(&mask, m, &mut complement);
                    out.push(&complement, 1.0);
                    samples_left -= 1;
                }
            }
        }
    }
    // The sampled rows share the kernel weight the enumerated sizes left over.
    let weight_left: f64 = weight_vector[out.full_sizes..].iter().sum();
    let sampled_total: f64 = out.weights[first_sampled..].iter().sum();
    if sampled_total > 0.0 {
        out.weights[first_sampled..].iter_mut().for_each(|w| *w *= weight_left / sampled_total);
    }
    Ok(out)
}

fn set_bits(mask: &mut [u64], members: &[usize]) {
    mask.iter_mut().for_each(|w| *w = 0);
    for &j in members {
        mask[j / 64] |= 1 << (j % 64);
    }
}

fn complement_into(mask: &[u64], m: usize, out: &mut [u64]) {
    for (i, (o, w)) in out.iter_mut().zip(mask).enumerate() {
        let bits_here = (m - i * 64).min(64);
        let valid = if bits_here == 64 { u64::MAX } else { (1u64 << bits_here) - 1 };
        *o = !w & valid;
    }
}

/// Advances `combo` (strictly increasing indices below `n`) to the next combination in
/// lexicographic order; false after the last.
pub fn next_combination(combo: &mut [usize], n: usize) -> bool {
    let k = combo.len();
    let mut i = k;
    while i > 0 {
        i -= 1;
        if combo[i] < n - k + i {
            combo[i] += 1;
            for j in i + 1..k {
                combo[j] = combo[j - 1] + 1;
            }
            return true;
        }
    }
    false
}

/// An open-addressing set of coalition indices, keyed by the masks stored in the coalition
/// list itself, so a draw costs no allocation.
struct MaskSet {
    slots: Vec<u32>,
    words: usize,
}

const EMPTY: u32 = u32::MAX;

impl MaskSet {
    fn with_capacity(n: usize, words: usize) -> Self {
        MaskSet { slots: vec![EMPTY; (2 * n).next_power_of_two().max(16)], words }
    }

    fn hash(mask: &[u64]) -> u64 {
        mask.iter().fold(0x243F_6A88_85A3_08D3u64, |h, &w| (h ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(29))
    }

    /// The index of an equal mask already stored, or None after recording `index` for it.
    fn find_or_insert(&mut self, mask: &[u64], index: usize, store: &[u64]) -> Option<usize> {
        let len = self.slots.len();
        let mut slot = (Self::hash(mask) as usize) & (len - 1);
        loop {
            let entry = self.slots[slot];
            if entry == EMPTY {
                self.slots[slot] = index as u32;
                return None;
            }
            let e = entry as usize;
            if &store[e * self.words..(e + 1) * self.words] == mask {
                return Some(e);
            }
            slot = (slot + 1) & (len - 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_weights_follow_the_shapley_kernel() {
        // M = 5: sizes 1, 2 (each paired with 4, 3); kernel (M-1)/(s(M-s)) = 1, 2/3; doubled.
        let w = size_weights(5);
        let raw = [2.0 * 1.0, 2.0 * (4.0 / 6.0)];
        let total: f64 = raw.iter().sum();
        assert_eq!(w.len(), 2);
        for (a, b) in w.iter().zip(raw) {
            assert!((a - b / total).abs() < 1e-15);
        }
        // M = 4: sizes 1 (paired with 3) and 2 (its own complement, not doubled).
        let w = size_weights(4);
        let raw = [2.0 * 3.0 / 3.0, 3.0 / 4.0];
        let total: f64 = raw.iter().sum();
        assert!((w[0] - raw[0] / total).abs() < 1e-15 && (w[1] - raw[1] / total).abs() < 1e-15);
    }

    #[test]
    fn full_budget_enumerates_every_coalition_once() {
        for m in 2..=11 {
            let c = build(m, max_coalitions(m), &mut Rng::new(0, 0), &|| false).unwrap();
            assert_eq!(c.len() as u64, max_coalitions(m), "M = {m}");
            assert_eq!(c.enumerated, c.len());
            let mut seen: Vec<u64> = (0..c.len()).map(|i| c.mask(i)[0]).collect();
            seen.sort();
            seen.dedup();
            assert_eq!(seen.len(), c.len(), "no duplicates for M = {m}");
            assert!(!seen.contains(&0) && !seen.contains(&((1 << m) - 1)));
            // Every coalition of size s has the Shapley kernel weight, up to a common scale.
            let kernel = |s: usize| (m as f64 - 1.0) / (binomial(m, s) * s as f64 * (m - s) as f64);
            let scale = c.weights[0] / kernel(c.mask(0)[0].count_ones() as usize);
            for i in 0..c.len() {
                let s = c.mask(i)[0].count_ones() as usize;
                assert!((c.weights[i] - scale * kernel(s)).abs() < 1e-12 * scale.abs(), "M = {m}, size {s}");
            }
            assert!((c.weights.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
    }

    #[test]
    fn enumeration_counts_match_shap_for_the_default_budget() {
        // M = 13, budget 2*13 + 2048 = 2074: sizes 1, 2, 3 (and complements) are enumerated:
        // 2*(13 + 78 + 286) = 754 rows; shap's rule stops at size 4 (2*715 rows too many).
        let c = build(13, default_budget(13), &mut Rng::new(3, 0), &|| false).unwrap();
        assert_eq!(c.full_sizes, 3);
        assert_eq!(c.enumerated, 754);
        assert_eq!(c.len(), 2074);
        assert!((c.weights.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        for i in c.enumerated..c.len() {
            let s = c.mask(i)[0].count_ones();
            assert!((4..=9).contains(&s), "sampled sizes are the ones not enumerated: {s}");
        }
    }

    #[test]
    fn sampled_pairs_are_complements_and_repeats_add_weight() {
        let c = build(20, 300, &mut Rng::new(11, 0), &|| false).unwrap();
        assert_eq!(c.len(), 300);
        let all = (1u64 << 20) - 1;
        let mut i = c.enumerated;
        while i < c.len() {
            let s = c.mask(i)[0].count_ones() as usize;
            if s <= 9 && i + 1 < c.len() {
                assert_eq!(c.mask(i + 1)[0], !c.mask(i)[0] & all);
                assert_eq!(c.weights[i], c.weights[i + 1]);
                i += 2;
            } else {
                i += 1;
            }
        }
        // Wide masks (over 64 groups) work the same way.
        let c = build(70, 500, &mut Rng::new(1, 0), &|| false).unwrap();
        assert_eq!(c.words, 2);
        assert_eq!(c.len(), 500);
    }

    #[test]
    fn building_stops_when_the_cancellation_closure_says_so() {
        use std::cell::Cell;
        let asked = Cell::new(0usize);
        let after = |n: usize| {
            let asked = &asked;
            move || {
                asked.set(asked.get() + 1);
                asked.get() > n
            }
        };
        // Sampling: M = 40, a budget of a million coalitions (sizes 1 and 2 enumerated, the
        // rest drawn). Cancelled at the third question: at most 3·4096 coalitions were built.
        let stop = after(2);
        let started = std::time::Instant::now();
        assert_eq!(build(40, 1_000_000, &mut Rng::new(0, 0), &stop).err(), Some(Stop::Cancelled));
        assert_eq!(asked.get(), 3);
        assert!(started.elapsed() < std::time::Duration::from_secs(5));
        // Enumeration: M = 24 with the full budget (every one of 2^24 − 2 coalitions).
        asked.set(0);
        let stop = after(0);
        assert_eq!(build(24, max_coalitions(24), &mut Rng::new(0, 0), &stop).err(), Some(Stop::Cancelled));
        assert_eq!(asked.get(), 1);
        // Never cancelled, the same small budget completes and the closure was still asked.
        asked.set(0);
        let never = after(usize::MAX);
        assert_eq!(build(40, 20_000, &mut Rng::new(0, 0), &never).unwrap().len(), 20_000);
        assert!(asked.get() >= 2, "asked {} times", asked.get());
    }

    #[test]
    fn budgets_past_the_index_width_are_refused_not_allocated() {
        // 2^62 (what nsamples = 2^62 asked for with M = 64) used to size a table of 2^63 slots.
        assert_eq!(build(64, 1 << 62, &mut Rng::new(0, 0), &|| false).err(), Some(Stop::TooLarge));
        assert_eq!(build(64, u64::MAX, &mut Rng::new(0, 0), &|| false).err(), Some(Stop::TooLarge));
    }

    #[test]
    fn combinations_are_lexicographic() {
        let mut combo = vec![0, 1];
        let mut all = vec![combo.clone()];
        while next_combination(&mut combo, 4) {
            all.push(combo.clone());
        }
        assert_eq!(all, vec![vec![0, 1], vec![0, 2], vec![0, 3], vec![1, 2], vec![1, 3], vec![2, 3]]);
    }
}
