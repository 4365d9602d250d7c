//! What explaind's gradient explainer plugins (saliency, gradient × input, integrated gradients,
//! SmoothGrad, expected gradients, Grad-CAM) have in common, kept out of the plugins so each
//! stays a page of method-specific code and the arithmetic is unit-tested without a model.
//!
//! Every one of these methods evaluates the model's gradient at many points and combines the
//! results elementwise: for input n, target t and sample s (a path step, a noise draw, a
//! background row), a point `p(n, t, s)` goes in and `g = ∇ f_t(p)` comes out, and the
//! attribution accumulates `combine(n, t, s, g)`. [`GradientRows`] runs exactly that, with
//! every (n, t, s) row of a request in few host calls: rows are filled straight into the
//! chunk's input buffers, sent with one-hot seeds through the ABI's `gradient` function, and
//! combined into the result tensors, so memory stays at one chunk whatever N, T and S are.
//!
//! - [`quadrature`]: the path rules of integrated gradients (captum's five).
//! - [`gradcam`]: Grad-CAM maps and their upsampling.
//! - [`layer`]: attribution at an input's embedding (token ids), per position.
//! - [`Noise`]: seeded random draws addressable by (input, sample), so a request gives the
//!   same numbers however it is chunked.
//! - [`GradientRows::cost`] and the byte counts below: what the plugins' `estimate`s add up.

pub mod gradcam;
pub mod layer;
pub mod quadrature;

use explaind_plugin_sdk::{Context, Error, Request, TensorView};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Upper bound on the input rows of one gradient call, in bytes: the host runs the backward
/// graph on them (chunking further to its own batch limit), so this bounds what the plugin
/// builds, not the model's working memory.
pub const CHUNK_BYTES: usize = 32 << 20;

/// One row of a gradient batch: input `n`, its target number `t` (flat output index
/// `target`), sample `sample` of the method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Row {
    pub n: usize,
    pub t: usize,
    pub target: usize,
    pub sample: usize,
}

/// Runs gradients at `samples` points per (input, target) pair of a request.
pub struct GradientRows<'r, 'a> {
    request: &'r Request<'a>,
    samples: usize,
}

impl<'r, 'a> GradientRows<'r, 'a> {
    pub fn new(request: &'r Request<'a>, samples: usize) -> Self {
        GradientRows { request, samples }
    }

    /// For every row: `point(row, i, dst)` writes model input i's point into `dst`; after the
    /// gradient call, `combine(row, i, gradient, attribution)` folds input i's gradient into
    /// the attribution of (n, t): a slice of `results[i]` (from [`attribution_results`]).
    pub fn run(
        &self,
        ctx: &Context<'_>,
        results: &mut [&mut [f32]],
        mut point: impl FnMut(Row, usize, &mut [f32]),
        mut combine: impl FnMut(Row, usize, &[f32], &mut [f32]),
    ) -> Result<(), Error> {
        let request = self.request;
        let inputs = request.inputs();
        let (n, t, s) = (request.batch_size(), request.num_targets(), self.samples);
        let output_row = request.output_row_size();
        let total = n.checked_mul(t).and_then(|nt| nt.checked_mul(s)).ok_or_else(|| {
            Error::invalid_argument(format!("inputs: {n} inputs x {t} targets x {s} samples overflow a row count"))
        })?;
        let chunk = chunk_rows(request).min(total.max(1));
        let row_lens: Vec<usize> = inputs.iter().map(TensorView::row_len).collect();

        let mut buffers: Vec<Vec<f32>> = row_lens.iter().map(|&len| vec![0.0; chunk * len]).collect();
        let mut seeds = vec![0f32; chunk * output_row];
        let mut rows = Vec::with_capacity(chunk);
        let row_at = |index: usize| {
            let (pair, sample) = (index / s, index % s);
            let (n, t) = (pair / t, pair % t);
            Row { n, t, target: request.targets(n)[t] as usize, sample }
        };

        let point_elements = row_lens.iter().sum::<usize>() + output_row;
        let mut ticker = ctx.ticker();
        let mut first = 0;
        while first < total {
            ctx.check_cancelled()?;
            let count = chunk.min(total - first);
            rows.clear();
            rows.extend((first..first + count).map(row_at));
            seeds[..count * output_row].fill(0.0);
            for (r, row) in rows.iter().enumerate() {
                // A chunk's points can take a while (noise draws for every element).
                ticker.tick(point_elements)?;
                seeds[r * output_row + row.target] = 1.0;
                for (i, buffer) in buffers.iter_mut().enumerate() {
                    point(*row, i, &mut buffer[r * row_lens[i]..(r + 1) * row_lens[i]]);
                }
            }
            let shapes: Vec<Vec<i64>> = inputs
                .iter()
                .map(|x| {
                    let mut shape = x.shape.to_vec();
                    shape[0] = count as i64;
                    shape
                })
                .collect();
            let views: Vec<TensorView> = shapes
                .iter()
                .zip(&buffers)
                .zip(&row_lens)
                .map(|((shape, buffer), &len)| TensorView::new(shape, &buffer[..count * len]))
                .collect();
            let seed_shape = [count as i64, output_row as i64];
            let gradients = ctx.gradient(&views, TensorView::new(&seed_shape, &seeds[..count * output_row]))?;
            for (i, gradient) in gradients.iter().enumerate() {
                let (g, len) = (gradient.data(), row_lens[i]);
                for (r, row) in rows.iter().enumerate() {
                    ticker.tick(len)?;
                    let pair = row.n * t + row.t;
                    combine(*row, i, &g[r * len..(r + 1) * len], &mut results[i][pair * len..(pair + 1) * len]);
                }
            }
            first += count;
        }
        Ok(())
    }

    /// What [`GradientRows::run`] costs with `samples` points per (input, target) pair:
    /// N·T·samples rows through `gradient`, and the chunk it holds at once (the points of every
    /// model input, their one-hot seeds, the row table, and the host's gradients). Floating
    /// point, so that huge `samples` give huge numbers, never a wrapped-around small one.
    pub fn cost(request: &Request<'_>, samples: f64) -> (f64, f64) {
        let (n, t) = (request.batch_size() as f64, request.num_targets() as f64);
        let rows = n * t * samples;
        let chunk = (chunk_rows(request) as f64).min(rows.max(1.0));
        let per_row = 8.0 * sum_row_len(request) + 4.0 * request.output_row_size() as f64 + ROW_BYTES;
        (rows, chunk * per_row)
    }
}

/// Bytes of one [`Row`] in the row table.
const ROW_BYTES: f64 = std::mem::size_of::<Row>() as f64;

/// Elements of one row of every model input together (Σ row_len), as a float for estimates.
pub fn sum_row_len(request: &Request<'_>) -> f64 {
    request.inputs().iter().map(|x| x.row_len() as f64).sum()
}

/// Rows per host call for `request`: its batch limit, and at most [`CHUNK_BYTES`] of inputs.
pub fn chunk_rows(request: &Request<'_>) -> usize {
    let row_bytes: usize = request.inputs().iter().map(|x| x.row_len() * 4).sum::<usize>().max(1);
    request.max_batch_rows().min(CHUNK_BYTES / row_bytes).max(1)
}

/// The attribution tensor of every model input, [N, T, *input_shape] each, to fill.
pub fn attribution_results<'c>(ctx: &'c Context<'_>, request: &Request<'_>) -> Result<Vec<&'c mut [f32]>, Error> {
    (0..request.inputs().len()).map(|i| ctx.attributions(i)).collect()
}

/// Seeded random draws for sample `sample` of input `n`: the same (seed, n, sample) always
/// gives the same stream, independent of how rows are chunked or which target asks.
pub struct Noise {
    seed: u64,
}

impl Noise {
    pub fn new(seed: i64) -> Self {
        Noise { seed: seed as u64 }
    }

    /// The random stream of (n, sample).
    pub fn stream(&self, n: usize, sample: usize) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        // ChaCha's 64-bit stream id separates inputs; the word position separates samples
        // (2^32 words apart: far more than any draw uses).
        rng.set_stream(n as u64);
        rng.set_word_pos((sample as u128) << 32);
        rng
    }

    /// Fills `dst` with independent N(0, σ²) draws from `rng`.
    pub fn gaussian(rng: &mut ChaCha8Rng, sigma: f32, dst: &mut [f32]) {
        for v in dst {
            let z: f32 = rng.sample(rand_distr::StandardNormal);
            *v = sigma * z;
        }
    }
}

/// Reads an integer parameter that must be at least `min`.
pub fn integer_at_least(request: &Request<'_>, name: &str, min: i64) -> Result<usize, Error> {
    match request.integer(name)? {
        Some(v) if v >= min => Ok(v as usize),
        Some(v) => Err(Error::invalid_argument(format!("parameters.{name}: must be at least {min}, got {v}"))),
        None => Err(Error::invalid_argument(format!("parameters.{name}: required"))),
    }
}

/// Reads a text parameter that must be one of `choices`.
pub fn choice<'a>(request: &Request<'a>, name: &str, choices: &[&str]) -> Result<&'a str, Error> {
    let value = request.text(name)?.unwrap_or("");
    if choices.contains(&value) {
        Ok(value)
    } else {
        Err(Error::invalid_argument(format!("parameters.{name}: {value:?} is not one of {}", choices.join(", "))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_streams_depend_on_the_seed_input_and_sample_only() {
        let draw = |seed, n, s| {
            let mut v = [0f32; 4];
            Noise::gaussian(&mut Noise::new(seed).stream(n, s), 1.0, &mut v);
            v
        };
        assert_eq!(draw(7, 1, 2), draw(7, 1, 2));
        assert_ne!(draw(7, 1, 2), draw(7, 1, 3));
        assert_ne!(draw(7, 1, 2), draw(7, 2, 2));
        assert_ne!(draw(7, 1, 2), draw(8, 1, 2));
    }

    #[test]
    fn gaussian_draws_have_the_requested_spread() {
        let mut v = vec![0f32; 20000];
        Noise::gaussian(&mut Noise::new(1).stream(0, 0), 0.5, &mut v);
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / v.len() as f64;
        assert!(mean.abs() < 0.02, "{mean}");
        assert!((var.sqrt() - 0.5).abs() < 0.02, "{}", var.sqrt());
    }
}
