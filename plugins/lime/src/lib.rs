//! LIME explainer plugin, with the defaults of the `lime` package's `LimeTabularExplainer` and
//! `LimeImageExplainer`.
//!
//! **Tabular** (rows of rank 1, or `mode=tabular`). The training data lime needs is the
//! request's background (inline rows, a registered `background_id`, or the model's default
//! background). Every feature is discretised into quartiles of the training data
//! ([`discretize`]). A sample draws, per feature, a bin with the training bins' frequencies
//! and then a value inside the bin (truncated normal with the bin's training mean and standard
//! deviation); its interpretable representation is 1 where the drawn bin is x's bin. The first
//! sample is x itself. 5000 samples; distance: Euclidean on the binary representation; kernel
//! sqrt(exp(-d²/w²)) with w = 0.75·√M.
//!
//! **Image** (rows [C, H, W] or [H, W], or `mode=image`). Superpixels come from a native SLIC
//! ([`segment`]; lime uses quickshift), or from `segments` (an id per pixel). A sample switches
//! each superpixel off with probability 1/2; hidden superpixels take their mean colour per
//! channel, or `hide_color`. 1000 samples; cosine distance, kernel width 0.25.
//!
//! **The local model** ([`regression`]): lime's feature selection ('auto': forward selection
//! for at most 6 features, else the highest weights of a ridge fit), then ridge regression
//! (alpha 1, with intercept, kernel weights as sample weights) on the binary representation.
//! Attributions are the coefficients: per feature for tables, and for images every element
//! of a superpixel carries that superpixel's coefficient. Extras: `intercept`, `score`
//! (weighted R²), `local_prediction` [N, T]; `top_features` [N, T, k] (features by |coefficient|,
//! -1 where fewer); tabular: `quartiles` [M, 3], `bin_frequencies`, `bin_means`, `bin_stds`
//! [M, 4] (0 past the last bin) and `instance_bins` [N, M]; image: `segments` [N, H, W].
//!
//! Sampling is seeded (`seed`, split per input). Models with more than one input are refused
//! (INVALID_ARGUMENT). Perturbed rows are sampled on every core in waves of up to 32 MiB and
//! go to the model `batch_rows` at a time (default: the server's bound), rows of several
//! inputs sharing a batch; the result does not depend on either.

pub mod discretize;
pub mod regression;
pub mod rng;
pub mod segment;

use explaind_plugin_sdk::{
    Context, Error, Explainer, ParamDefault, ParamKind, ParamValue, PluginInfo, Request, TensorView, export_plugin,
};
use regression::Selection;
use rng::Rng;

pub struct Lime;


fn number(request: &Request<'_>, name: &str) -> Result<Option<f64>, Error> {
    match request.param(name) {
        ParamValue::Number(v) => Ok(Some(v)),
        ParamValue::Integer(v) => Ok(Some(v as f64)),
        ParamValue::None => Ok(None),
        other => Err(Error::invalid_argument(format!("parameters.{name}: expected a number, got {other:?}"))),
    }
}


fn at_least(name: &str, value: Option<i64>, min: i64) -> Result<Option<usize>, Error> {
    match value {
        Some(v) if v < min => {
            Err(Error::invalid_argument(format!("parameters.{name}: must be at least {min}, got {v}")))
        }
        v => Ok(v.map(|v| v as usize)),
    }
}

/// One input's perturbations: writes sample `i`'s binary representation and model row.
///
/// Every perturbed sample takes the same number of draws from the input's random stream, so
/// sample i's start at (i − 1) · `draws_per_sample` (sample 0 is x itself): any run of samples
/// can be generated on its own thread and the result does not depend on how rows are split
/// into batches or threads.
trait Sampler: Sync {
    fn features(&self) -> usize;
    fn draws_per_sample(&self) -> u64;
    fn fill(&self, i: usize, rng: &mut Rng, z: &mut [u8], row: &mut [f32]);
    fn distance(&self, z: &[u8]) -> f64;
}

struct Tabular<'a> {
    x: &'a [f32],
    stats: &'a [discretize::Feature],
    x_bins: Vec<usize>,
}

impl Sampler for Tabular<'_> {
    fn features(&self) -> usize {
        self.x.len()
    }
    fn draws_per_sample(&self) -> u64 {
        2 * self.x.len() as u64
    }
    fn fill(&self, i: usize, rng: &mut Rng, z: &mut [u8], row: &mut [f32]) {
        if i == 0 {
            z.fill(1);
            row.copy_from_slice(self.x);
            return;
        }
        for (j, f) in self.stats.iter().enumerate() {
            let b = f.draw_bin(rng.uniform());
            z[j] = (b == self.x_bins[j]) as u8;
            row[j] = f.draw_value(b, rng.uniform()) as f32;
        }
    }
    fn distance(&self, z: &[u8]) -> f64 {
        (z.iter().filter(|&&v| v == 0).count() as f64).sqrt()
    }
}

struct Image<'a> {
    x: &'a [f32],
    /// Pixels (h·W + w) of each superpixel.
    members: Vec<Vec<usize>>,
    /// The image with every superpixel hidden.
    hidden: Vec<f32>,
    pixels: usize,
    channels: usize,
}

impl Sampler for Image<'_> {
    fn features(&self) -> usize {
        self.members.len()
    }
    fn draws_per_sample(&self) -> u64 {
        self.members.len().div_ceil(64) as u64
    }
    fn fill(&self, i: usize, rng: &mut Rng, z: &mut [u8], row: &mut [f32]) {
        row.copy_from_slice(self.x);
        if i == 0 {
            z.fill(1);
            return;
        }
        let mut bits = 0u64;
        for (s, zs) in z.iter_mut().enumerate() {
            if s % 64 == 0 {
                bits = rng.next_u64();
            }
            *zs = (bits >> (s % 64) & 1) as u8;
            if *zs == 0 {
                for &p in &self.members[s] {
                    for c in 0..self.channels {
                        let e = c * self.pixels + p;
                        row[e] = self.hidden[e];
                    }
                }
            }
        }
    }
    fn distance(&self, z: &[u8]) -> f64 {
        // Cosine distance to the all-ones instance; an all-zero row is at distance 1 (sklearn).
        let m = z.len().max(1) as f64;
        let on = z.iter().filter(|&&v| v == 1).count() as f64;
        1.0 - (on / m).sqrt()
    }
}

/// Every input's samples, input-major: sample row g is sample g % S of input g / S, and its
/// binary representation sits at `offsets[n] + i · widths[n]` of one flat buffer (so a run of
/// rows owns a contiguous part of it).
struct Samples<'s, 'a> {
    samplers: &'s [Box<dyn Sampler + 'a>],
    seed: u64,
    per_input: usize,
    widths: &'s [usize],
    offsets: Vec<usize>,
}

impl Samples<'_, '_> {
    /// Where row `row`'s binary representation starts (the buffer's length for one past the
    /// last row).
    fn binary_offset(&self, row: usize) -> usize {
        let (n, i) = (row / self.per_input, row % self.per_input);
        match self.offsets.get(n) {
            Some(offset) => offset + i * self.widths[n],
            None => self.offsets.last().map_or(0, |last| last + self.per_input * self.widths[n - 1]),
        }
    }

    /// Fills rows `first..first + count`: their binary representations into `binary` (which
    /// starts at row `first`'s) and their model rows into `batch`.
    fn fill(&self, first: usize, count: usize, binary: &mut [u8], batch: &mut [f32]) {
        let row_len = batch.len() / count.max(1);
        let mut rng: Option<(usize, Rng)> = None;
        let mut at = 0;
        for (r, row) in batch.chunks_exact_mut(row_len).enumerate().take(count) {
            let (n, i) = ((first + r) / self.per_input, (first + r) % self.per_input);
            let sampler = &self.samplers[n];
            if rng.as_ref().is_none_or(|(owner, _)| *owner != n) {
                let mut fresh = Rng::new(self.seed, n as u64);
                fresh.seek(i.saturating_sub(1) as u64 * sampler.draws_per_sample());
                rng = Some((n, fresh));
            }
            let (_, rng) = rng.as_mut().expect("set above");
            let m = self.widths[n];
            sampler.fill(i, rng, &mut binary[at..at + m], row);
            at += m;
        }
    }

    /// [`Samples::fill`] split over `threads` threads in contiguous runs of rows.
    fn fill_parallel(&self, first: usize, count: usize, binary: &mut [u8], batch: &mut [f32], threads: usize) {
        let row_len = batch.len() / count.max(1);
        let parts = threads.min(count / MIN_ROWS_PER_THREAD).max(1);
        if parts == 1 {
            return self.fill(first, count, binary, batch);
        }
        std::thread::scope(|scope| {
            let (mut binary, mut batch) = (binary, batch);
            let mut start = 0;
            for part in 0..parts {
                let end = count * (part + 1) / parts;
                let split = self.binary_offset(first + end) - self.binary_offset(first + start);
                let (own_binary, rest_binary) = std::mem::take(&mut binary).split_at_mut(split);
                let (own_batch, rest_batch) = std::mem::take(&mut batch).split_at_mut((end - start) * row_len);
                (binary, batch) = (rest_binary, rest_batch);
                let rows = (first + start, end - start);
                scope.spawn(move || self.fill(rows.0, rows.1, own_binary, own_batch));
                start = end;
            }
        });
    }
}

/// How far ahead of the model calls the plugin samples (bounds its memory with `batch_rows`).
const SAMPLE_AHEAD_BYTES: usize = 32 << 20;

/// Below this many rows per thread, sampling stays on the calling thread.
const MIN_ROWS_PER_THREAD: usize = 256;

/// Threads for the plugin's own loops (sampling, the local models): the machine's cores, at
/// most 8.
fn worker_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get()).min(8)
}

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Tabular,
    Image { channels: usize, height: usize, width: usize },
}

impl Explainer for Lime {
    fn info() -> PluginInfo {
        PluginInfo::new("lime", env!("CARGO_PKG_VERSION"))
            .description(
                "LIME (the lime package's defaults): a weighted ridge model on binary perturbations \
                 around the input. Tabular: quartile bins of the background rows (lime's training \
                 data), 5000 samples, kernel width 0.75*sqrt(M). Image: SLIC superpixels, 1000 \
                 samples, cosine kernel width 0.25. Attributions are the coefficients; extras \
                 `intercept`, `score` (weighted R^2), `local_prediction`, `top_features`.",
            )
            .reentrant()
            .param(
                "mode",
                ParamKind::Text,
                ParamDefault::Text("auto".into()),
                "\"tabular\", \"image\", or \"auto\": rows of rank 1 are tabular, [C, H, W] or [H, W] rows images.",
            )
            .param("seed", ParamKind::Integer, ParamDefault::Integer(0), "Seed of the sampling.")
            .param(
                "num_samples",
                ParamKind::Integer,
                ParamDefault::Optional,
                "Perturbed samples; default 5000 (tabular), 1000 (image).",
            )
            .param(
                "num_features",
                ParamKind::Integer,
                ParamDefault::Optional,
                "Features in the explanation (top k); default 10 (tabular), every superpixel (image).",
            )
            .param(
                "feature_selection",
                ParamKind::Text,
                ParamDefault::Text("auto".into()),
                "\"auto\", \"none\", \"highest_weights\" or \"forward_selection\" (lime's).",
            )
            .param(
                "kernel_width",
                ParamKind::Number,
                ParamDefault::Optional,
                "Kernel width; default 0.75*sqrt(M) (tabular), 0.25 (image).",
            )
            .param(
                "hide_color",
                ParamKind::Number,
                ParamDefault::Optional,
                "Image: value of hidden superpixels; default their mean colour.",
            )
            .param(
                "segments",
                ParamKind::Integers,
                ParamDefault::Optional,
                "Image: superpixel id (>= 0) of every pixel (H*W, row-major) instead of SLIC.",
            )
            .param(
                "n_segments",
                ParamKind::Integer,
                ParamDefault::Integer(100),
                "Image: SLIC's approximate number of superpixels.",
            )
            .param(
                "compactness",
                ParamKind::Number,
                ParamDefault::Number(10.0),
                "Image: SLIC's balance of space against colour (colour scaled to 0..100).",
            )
            .param(
                "batch_rows",
                ParamKind::Integer,
                ParamDefault::Integer(0),
                "Rows per forward call; 0: the server's max batch rows. The plugin samples up to 32 MiB of rows ahead of the calls.",
            )
    }

    fn create() -> Result<Self, Error> {
        Ok(Lime)
    }

    fn explain(&self, ctx: &Context<'_>, request: &Request<'_>) -> Result<(), Error> {
        if request.inputs().len() != 1 {
            return Err(Error::invalid_argument(format!(
                "inputs: lime explains models with one input; this model has {}",
                request.inputs().len()
            )));
        }
        let input = request.inputs()[0];
        let item: Vec<usize> = input.shape[1..].iter().map(|&d| d as usize).collect();
        let mode = match (request.text("mode")?.unwrap_or(""), item.len()) {
            ("tabular", _) | ("auto", 1) => Mode::Tabular,
            ("image" | "auto", 3) => Mode::Image { channels: item[0], height: item[1], width: item[2] },
            ("image" | "auto", 2) => Mode::Image { channels: 1, height: item[0], width: item[1] },
            ("image" | "auto", _) => {
                return Err(Error::invalid_argument(format!(
                    "parameters.mode: rows of shape {item:?} are neither tabular (rank 1) nor an image ([C, H, W] or [H, W]); set mode=tabular to treat them as flat rows"
                )));
            }
            (other, _) => {
                return Err(Error::invalid_argument(format!(
                    "parameters.mode: expected \"auto\", \"tabular\" or \"image\", got {other:?}"
                )));
            }
        };
        let seed = request.integer("seed")?.unwrap_or(0) as u64;
        let num_samples = at_least("num_samples", request.integer("num_samples")?, 2)?
            .unwrap_or(if mode == Mode::Tabular { 5000 } else { 1000 });
        let num_features = at_least("num_features", request.integer("num_features")?, 1)?;
        let selection = match request.text("feature_selection")?.unwrap_or("") {
            "auto" => Selection::Auto,
            "none" => Selection::None,
            "highest_weights" => Selection::HighestWeights,
            "forward_selection" => Selection::ForwardSelection,
            other => {
                return Err(Error::invalid_argument(format!(
                    "parameters.feature_selection: expected \"auto\", \"none\", \"highest_weights\" or \"forward_selection\", got {other:?}"
                )));
            }
        };
        let kernel_width = number(request, "kernel_width")?;
        if let Some(w) = kernel_width.filter(|w| !(*w > 0.0)) {
            return Err(Error::invalid_argument(format!("parameters.kernel_width: must be positive, got {w}")));
        }
        let batch_rows = match request.integer("batch_rows")?.unwrap_or(0) {
            v if v < 0 => return Err(Error::invalid_argument(format!("parameters.batch_rows: must be >= 0, got {v}"))),
            0 => request.max_batch_rows(),
            v => v as usize,
        };
        let n_inputs = request.batch_size();
        let row_len = input.row_len();

        // Per-mode set-up: the samplers, and what the extras report.
        let stats: Vec<discretize::Feature>;
        let mut segment_maps: Vec<Vec<usize>> = Vec::new();
        let mut samplers: Vec<Box<dyn Sampler + '_>> = Vec::with_capacity(n_inputs);
        match mode {
            Mode::Tabular => {
                let background = request
                    .background()
                    .and_then(|b| b.first().copied())
                    .filter(|b| b.rows() > 0)
                    .ok_or_else(|| {
                        Error::failed_precondition(
                            "background: lime's tabular mode takes its training data from the background; give background rows or a background_id (or use a model with a default background)",
                        )
                    })?;
                stats = (0..row_len)
                    .map(|j| {
                        let column: Vec<f64> = (0..background.rows()).map(|k| background.row(k)[j] as f64).collect();
                        discretize::Feature::fit(&column)
                    })
                    .collect();
                for n in 0..n_inputs {
                    let x = input.row(n);
                    let x_bins = stats.iter().zip(x).map(|(f, &v)| f.bin(v as f64)).collect();
                    samplers.push(Box::new(Tabular { x, stats: &stats, x_bins }));
                }
            }
            Mode::Image { channels, height, width } => {
                stats = Vec::new();
                let pixels = height * width;
                let given = request.integers("segments")?;
                if let Some(s) = given {
                    if s.len() != pixels {
                        return Err(Error::invalid_argument(format!(
                            "parameters.segments: expected {pixels} superpixel ids (one per pixel of a {height}x{width} image), got {}",
                            s.len()
                        )));
                    }
                    if let Some(bad) = s.iter().position(|&v| v < 0) {
                        return Err(Error::invalid_argument(format!(
                            "parameters.segments[{bad}]: ids must be >= 0, got {}",
                            s[bad]
                        )));
                    }
                }
                let n_segments = at_least("n_segments", request.integer("n_segments")?, 1)?.unwrap_or(100);
                let compactness = number(request, "compactness")?.unwrap_or(10.0);
                if !(compactness > 0.0) {
                    return Err(Error::invalid_argument(format!(
                        "parameters.compactness: must be positive, got {compactness}"
                    )));
                }
                let hide_color = number(request, "hide_color")?;
                for n in 0..n_inputs {
                    let x = input.row(n);
                    let labels = match given {
                        Some(s) => {
                            let mut ids: Vec<i64> = s.to_vec();
                            ids.sort_unstable();
                            ids.dedup();
                            s.iter().map(|v| ids.binary_search(v).unwrap()).collect()
                        }
                        None => segment::slic(x, channels, height, width, n_segments, compactness, 10).0,
                    };
                    let count = labels.iter().copied().max().map_or(0, |m| m + 1);
                    let mut members = vec![Vec::new(); count];
                    for (p, &l) in labels.iter().enumerate() {
                        members[l].push(p);
                    }
                    let mut hidden = vec![0f32; row_len];
                    for pixels_of in &members {
                        for c in 0..channels {
                            let value = hide_color.map(|v| v as f32).unwrap_or_else(|| {
                                let sum: f64 = pixels_of.iter().map(|&p| x[c * pixels + p] as f64).sum();
                                (sum / pixels_of.len() as f64) as f32
                            });
                            for &p in pixels_of {
                                hidden[c * pixels + p] = value;
                            }
                        }
                    }
                    segment_maps.push(labels);
                    samplers.push(Box::new(Image { x, members, hidden, pixels, channels }));
                }
            }
        }

        // Samples of every input through the model, in shared batches, sampled on every core.
        let n_targets = request.num_targets();
        let out_row = request.output_row_size();
        let widths: Vec<usize> = samplers.iter().map(|s| s.features()).collect();
        let offsets: Vec<usize> = widths.iter().scan(0, |at, &m| Some(std::mem::replace(at, *at + num_samples * m))).collect();
        let mut binary = vec![0u8; widths.iter().sum::<usize>() * num_samples];
        let samples = Samples { samplers: &samplers, seed, per_input: num_samples, widths: &widths, offsets };
        let threads = worker_threads();
        let mut labels: Vec<Vec<f64>> = (0..n_inputs).map(|_| vec![0f64; num_samples * n_targets]).collect();
        let total = n_inputs * num_samples;
        let chunk = batch_rows.min(total).max(1);
        // Rows are sampled in waves of up to SAMPLE_AHEAD_BYTES and then sent to the model a
        // batch at a time, back to back: sampling does not alternate with model calls (after
        // which ONNX Runtime's workers, where they spin, would still hold a core).
        let wave = (SAMPLE_AHEAD_BYTES / (4 * row_len.max(1))).max(chunk).min(total);
        let mut rows_buffer = vec![0f32; wave * row_len];
        let mut batch_shape = input.shape.to_vec();
        let mut done = 0;
        while done < total {
            ctx.check_cancelled()?;
            let rows = wave.min(total - done);
            let (from, to) = (samples.binary_offset(done), samples.binary_offset(done + rows));
            samples.fill_parallel(done, rows, &mut binary[from..to], &mut rows_buffer[..rows * row_len], threads);
            for first in (0..rows).step_by(chunk) {
                let count = chunk.min(rows - first);
                batch_shape[0] = count as i64;
                let out = ctx.forward(&[TensorView::new(&batch_shape, &rows_buffer[first * row_len..(first + count) * row_len])])?;
                let out = out.data();
                for r in 0..count {
                    let (n, i) = ((done + first + r) / num_samples, (done + first + r) % num_samples);
                    for (t, &target) in request.targets(n).iter().enumerate() {
                        labels[n][i * n_targets + t] = out[r * out_row + target as usize] as f64;
                    }
                }
            }
            done += rows;
        }

        // Local models, inputs spread over the cores.
        ctx.check_cancelled()?;
        let fit_input = |n: usize| -> Vec<regression::Fit> {
            let m = widths[n];
            let width = kernel_width.unwrap_or(match mode {
                Mode::Tabular => 0.75 * (m as f64).sqrt(),
                Mode::Image { .. } => 0.25,
            });
            let z = &binary[samples.offsets[n]..samples.offsets[n] + num_samples * m];
            let weights: Vec<f64> = (0..num_samples)
                .map(|i| {
                    let d = samplers[n].distance(&z[i * m..(i + 1) * m]);
                    (-(d * d) / (width * width)).exp().sqrt()
                })
                .collect();
            let row = |i: usize, out: &mut [f64]| {
                for (o, &v) in out.iter_mut().zip(&z[i * m..(i + 1) * m]) {
                    *o = v as f64;
                }
            };
            let gram = regression::gram(num_samples, m, &weights, &row);
            let k = num_features.unwrap_or(if mode == Mode::Tabular { 10 } else { 100_000 });
            let mut y = vec![0f64; num_samples];
            (0..n_targets)
                .map(|t| {
                    for (i, v) in y.iter_mut().enumerate() {
                        *v = labels[n][i * n_targets + t];
                    }
                    let target = regression::target(&gram, &weights, &y, &row);
                    let used = regression::select(&gram, &target, k, selection);
                    regression::ridge(&gram, &target, &used, 1.0)
                })
                .collect()
        };
        let per_thread = n_inputs.div_ceil(threads.min(n_inputs).max(1)).max(1);
        let fits: Vec<regression::Fit> = if per_thread >= n_inputs {
            (0..n_inputs).flat_map(fit_input).collect()
        } else {
            std::thread::scope(|scope| {
                let fit_input = &fit_input;
                let handles: Vec<_> = (0..n_inputs)
                    .step_by(per_thread)
                    .map(|first| scope.spawn(move || (first..(first + per_thread).min(n_inputs)).flat_map(fit_input).collect::<Vec<_>>()))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().map_err(|_| Error::internal("lime: a local-model thread panicked")))
                    .collect::<Result<Vec<_>, Error>>()
            })?
            .into_iter()
            .flatten()
            .collect()
        };

        // Results.
        let attributions = ctx.attributions(0)?;
        for (k, (out, fit)) in attributions.chunks_exact_mut(row_len).zip(&fits).enumerate() {
            let n = k / n_targets;
            match mode {
                Mode::Tabular => {
                    for (&f, &c) in fit.features.iter().zip(&fit.coef) {
                        out[f] = c as f32;
                    }
                }
                Mode::Image { channels, height, width } => {
                    let pixels = height * width;
                    let mut coef_of = vec![0f64; widths[n]];
                    for (&f, &c) in fit.features.iter().zip(&fit.coef) {
                        coef_of[f] = c;
                    }
                    for c in 0..channels {
                        for (p, &l) in segment_maps[n].iter().enumerate() {
                            out[c * pixels + p] = coef_of[l] as f32;
                        }
                    }
                }
            }
        }
        let k_max = fits.iter().map(|f| f.features.len()).max().unwrap_or(0);
        let nt = [n_inputs as i64, n_targets as i64];
        let intercept = ctx.extra("intercept", &nt)?;
        for (o, f) in intercept.iter_mut().zip(&fits) {
            *o = f.intercept as f32;
        }
        let score = ctx.extra("score", &nt)?;
        for (o, f) in score.iter_mut().zip(&fits) {
            *o = f.score as f32;
        }
        let local = ctx.extra("local_prediction", &nt)?;
        for (o, f) in local.iter_mut().zip(&fits) {
            *o = f.prediction_at_ones() as f32;
        }
        let top = ctx.extra("top_features", &[n_inputs as i64, n_targets as i64, k_max as i64])?;
        for (chunk, f) in top.chunks_exact_mut(k_max.max(1)).zip(&fits) {
            let mut order: Vec<usize> = (0..f.features.len()).collect();
            order.sort_by(|&a, &b| f.coef[b].abs().total_cmp(&f.coef[a].abs()));
            for (slot, o) in chunk.iter_mut().enumerate() {
                *o = order.get(slot).map_or(-1.0, |&i| f.features[i] as f32);
            }
        }
        match mode {
            Mode::Tabular => {
                let m = row_len as i64;
                for (o, f) in ctx.extra("quartiles", &[m, 3])?.chunks_exact_mut(3).zip(&stats) {
                    for (a, b) in o.iter_mut().zip(f.quartiles) {
                        *a = b as f32;
                    }
                }
                let per_bin = |values: fn(&discretize::Feature) -> &Vec<f64>, out: &mut [f32]| {
                    for (o, f) in out.chunks_exact_mut(discretize::MAX_BINS).zip(&stats) {
                        for (a, b) in o.iter_mut().zip(values(f)) {
                            *a = *b as f32;
                        }
                    }
                };
                per_bin(|f| &f.frequencies, ctx.extra("bin_frequencies", &[m, 4])?);
                per_bin(|f| &f.means, ctx.extra("bin_means", &[m, 4])?);
                per_bin(|f| &f.stds, ctx.extra("bin_stds", &[m, 4])?);
                let bins = ctx.extra("instance_bins", &[n_inputs as i64, m])?;
                for (o, (e, &v)) in bins.iter_mut().zip((0..n_inputs).flat_map(|n| input.row(n).iter().enumerate())) {
                    *o = stats[e].bin(v as f64) as f32;
                }
            }
            Mode::Image { height, width, .. } => {
                let maps = ctx.extra("segments", &[n_inputs as i64, height as i64, width as i64])?;
                for (o, l) in maps.iter_mut().zip(segment_maps.iter().flatten()) {
                    *o = *l as f32;
                }
                let counts: Vec<String> = widths.iter().map(|m| m.to_string()).collect();
                ctx.info("segments_per_input", &counts.join(","))?;
            }
        }
        ctx.info("mode", if mode == Mode::Tabular { "tabular" } else { "image" })?;
        ctx.info("num_samples", &num_samples.to_string())?;
        Ok(())
    }
}

export_plugin!(Lime);
