//! LIME explainer plugin, with the defaults of the `lime` package's `LimeTabularExplainer`,
//! `LimeImageExplainer` and `LimeTextExplainer`.
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
//! **Text** (an integer explained input such as token ids, or `mode=text`): lime's
//! `LimeTextExplainer` with `bow=False`, a feature per position of the explained input. A hidden
//! position takes the id `mask_id` (default 0, [PAD] in BERT's vocabularies; lime writes its
//! `mask_string`). Positions whose id already is `mask_id` are no features, since hiding them
//! changes nothing: they get exactly 0 and the number of features d (lime's doc_size) counts the
//! others only. The first sample is x itself; every other one draws a count uniformly from 1..=d
//! and hides that many distinct features, chosen uniformly. Cosine distance × 100 on the binary
//! representation, kernel width 25, 5000 samples, 10 features. A model's other inputs (the
//! attention mask) keep the request's values in every sample: the request names the one input
//! it explains (`explained_inputs`). A row whose every position is `mask_id` has no features:
//! its local model is the constant f(x) (intercept f(x), score 1, no coefficients).
//!
//! **The local model** ([`regression`]): lime's feature selection ('auto': forward selection
//! for at most 6 features, else the highest weights of a ridge fit), then ridge regression
//! (alpha 1, with intercept, kernel weights as sample weights) on the binary representation.
//! Attributions are the coefficients: per feature for tables, per position for text (0 at
//! positions that are no features), and for images every element of a superpixel carries that
//! superpixel's coefficient. Extras: `intercept`, `score` (weighted R²), `local_prediction`
//! [N, T]; `top_features` [N, T, k] (features by |coefficient|, -1 where fewer; for text the
//! positions); tabular: `quartiles` [M, 3], `bin_frequencies`, `bin_means`, `bin_stds` [M, 4]
//! (0 past the last bin) and `instance_bins` [N, M]; image: `segments` [N, H, W].
//!
//! Sampling is seeded (`seed`, split per input). The tabular and image modes explain models
//! with one float input; others are refused (INVALID_ARGUMENT). Perturbed rows are sampled on
//! every core in waves of up to 32 MiB and go to the model `batch_rows` at a time (default: the
//! server's bound), rows of several inputs sharing a batch; the result does not depend on
//! either.
//!
//! Cost: N·num_samples model rows. Memory: every sample's binary representation and labels,
//! a wave of sampled rows, and per thread one local model's O(M²) Gram and factor matrices.
//! Sampling threads, SLIC, the regressions and their threads all stop soon after the request
//! is cancelled or its deadline passes.

pub mod discretize;
pub mod regression;
pub mod rng;
pub mod segment;

use explaind_plugin_math::{CholeskyError, Pace};
use explaind_plugin_sdk::{
    Context, Cost, Error, Explainer, ParamDefault, ParamKind, ParamValue, PluginInfo, Request, TensorView, export_plugin,
};
use regression::Selection;
use rng::Rng;

pub struct Lime;

/// Most perturbed samples per input.
pub const MAX_SAMPLES: usize = 100_000_000;
/// Kernel widths outside [1e-6, 1e6] make every weight but the instance's underflow to 0
/// (or, below about 1e-154, make them 0/0), or all weights 1: nonsense either way.
pub const KERNEL_WIDTHS: (f64, f64) = (1e-6, 1e6);
/// SLIC's compactness: skimage's useful range is about 0.01 to 100.
pub const COMPACTNESS: (f64, f64) = (1e-6, 1e6);
/// Most SLIC superpixels asked for (the image's pixels bound what it gets anyway).
pub const MAX_SEGMENTS: usize = 1_000_000;
/// Hidden superpixels' colour stays within ±1e30, far inside float32.
pub const MAX_HIDE_COLOR: f64 = 1e30;
/// Most rows per forward call the plugin builds.
pub const MAX_BATCH_ROWS: usize = 1 << 20;
/// Text mode's `mask_id`: a whole number of magnitude up to 2^24 (float32 holds every such
/// integer exactly, and the plugin reads ids as float32).
pub const MAX_MASK_ID: f64 = (1u32 << 24) as f64;

/// Model rows and bytes of the host's default per-request budget, used only to tell which of
/// the two a request strains more (for the driver the host names when it refuses).
const DEFAULT_BUDGET: (f64, f64) = (20e6, 2.0 * (1u64 << 30) as f64);

/// Rows between two cancellation checks while samples are generated.
const CHECK_ROWS: usize = 64;

fn number(request: &Request<'_>, name: &str) -> Result<Option<f64>, Error> {
    match request.param(name) {
        ParamValue::Number(v) => Ok(Some(v)),
        ParamValue::Integer(v) => Ok(Some(v as f64)),
        ParamValue::None => Ok(None),
        other => Err(Error::invalid_argument(format!("parameters.{name}: expected a number, got {other:?}"))),
    }
}

fn at_least(name: &str, value: Option<i64>, min: i64, max: usize) -> Result<Option<usize>, Error> {
    match value {
        Some(v) if v < min => Err(Error::invalid_argument(format!("parameters.{name}: must be at least {min}, got {v}"))),
        Some(v) if v as u64 > max as u64 => {
            Err(Error::invalid_argument(format!("parameters.{name}: must be at most {max}, got {v}")))
        }
        v => Ok(v.map(|v| v as usize)),
    }
}

/// `name` within [lo, hi], or INVALID_ARGUMENT naming it.
fn within(name: &str, value: f64, (lo, hi): (f64, f64)) -> Result<f64, Error> {
    if value >= lo && value <= hi {
        Ok(value)
    } else {
        Err(Error::invalid_argument(format!("parameters.{name}: must be within {lo:e} to {hi:e}, got {value}")))
    }
}

/// `a · b`, or INVALID_ARGUMENT naming `name` when it overflows.
fn product(name: &str, a: usize, b: usize) -> Result<usize, Error> {
    a.checked_mul(b).ok_or_else(|| Error::invalid_argument(format!("parameters.{name}: {a} x {b} overflows")))
}

/// What a request asks for, checked: the estimate and the explanation read the same.
struct Settings<'a> {
    /// The input the request explains (the only one but in text mode) and its value.
    explained: usize,
    input: TensorView<'a>,
    mode: Mode,
    seed: u64,
    num_samples: usize,
    num_features: Option<usize>,
    selection: Selection,
    kernel_width: Option<f64>,
    batch_rows: usize,
    /// Image mode only: the given superpixel ids, SLIC's parameters, the hidden colour.
    segments: Option<&'a [i64]>,
    n_segments: usize,
    compactness: f64,
    hide_color: Option<f64>,
    /// Text mode only: the id hidden positions take.
    mask_id: f32,
}

/// The refusal of a tabular or image request on a model with several inputs.
fn one_input_only(request: &Request<'_>) -> Error {
    Error::invalid_argument(format!(
        "inputs: lime's tabular and image modes explain models with one input; this model has {} (mode=text \
         explains one input of several, named in explained_inputs, holding the others)",
        request.inputs().len()
    ))
}

fn settings<'a>(request: &Request<'a>) -> Result<Settings<'a>, Error> {
    let asked = request.text("mode")?.unwrap_or("");
    let several = request.inputs().len() != 1;
    if several && matches!(asked, "tabular" | "image") {
        return Err(one_input_only(request));
    }
    let explained = request.single_explained_input("lime")?;
    let input = request.inputs()[explained];
    let integer = request.input_is_integer(explained);
    let item: Vec<usize> = input.shape[1..].iter().map(|&d| d as usize).collect();
    let mode = match (asked, item.len()) {
        ("text", _) => Mode::Text,
        ("auto", _) if integer => Mode::Text,
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
                "parameters.mode: expected \"auto\", \"tabular\", \"image\" or \"text\", got {other:?}"
            )));
        }
    };
    if mode != Mode::Text {
        if several {
            return Err(one_input_only(request));
        }
        if integer {
            return Err(Error::invalid_argument(format!(
                "parameters.mode: input {:?} takes integers (token ids, codes), and lime's {} mode samples real \
                 values; mode=text (the default for such inputs) hides positions with mask_id",
                request.input_name(explained),
                mode.name()
            )));
        }
    }
    let seed = request.integer("seed")?.unwrap_or(0) as u64;
    let num_samples = at_least("num_samples", request.integer("num_samples")?, 2, MAX_SAMPLES)?
        .unwrap_or(if matches!(mode, Mode::Image { .. }) { 1000 } else { 5000 });
    let num_features = at_least("num_features", request.integer("num_features")?, 1, i32::MAX as usize)?;
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
    let kernel_width = number(request, "kernel_width")?.map(|w| within("kernel_width", w, KERNEL_WIDTHS)).transpose()?;
    let batch_rows = match request.integer("batch_rows")?.unwrap_or(0) {
        v if v < 0 || v as u64 > MAX_BATCH_ROWS as u64 => {
            return Err(Error::invalid_argument(format!("parameters.batch_rows: must be 0 to 2^20, got {v}")));
        }
        0 => request.max_batch_rows(),
        v => v as usize,
    };
    let mut out = Settings {
        explained,
        input,
        mode,
        seed,
        num_samples,
        num_features,
        selection,
        kernel_width,
        batch_rows,
        segments: None,
        n_segments: 100,
        compactness: 10.0,
        hide_color: None,
        mask_id: 0.0,
    };
    if let Mode::Image { height, width, .. } = mode {
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
                return Err(Error::invalid_argument(format!("parameters.segments[{bad}]: ids must be >= 0, got {}", s[bad])));
            }
        }
        out.segments = given;
        out.n_segments = at_least("n_segments", request.integer("n_segments")?, 1, MAX_SEGMENTS)?.unwrap_or(100);
        out.compactness = within("compactness", number(request, "compactness")?.unwrap_or(10.0), COMPACTNESS)?;
        out.hide_color =
            number(request, "hide_color")?.map(|v| within("hide_color", v, (-MAX_HIDE_COLOR, MAX_HIDE_COLOR))).transpose()?;
    }
    if mode == Mode::Text {
        if number(request, "hide_color")?.is_some() {
            return Err(Error::invalid_argument(
                "parameters.hide_color: image mode only; text mode hides positions with mask_id",
            ));
        }
        let value = number(request, "mask_id")?.unwrap_or(0.0);
        if value.fract() != 0.0 || value.abs() > MAX_MASK_ID {
            return Err(Error::invalid_argument(format!(
                "parameters.mask_id: the id written into hidden positions of input {:?} must be a whole number of \
                 magnitude up to 2^24, got {value}",
                request.input_name(explained)
            )));
        }
        out.mask_id = value as f32;
    }
    Ok(out)
}

/// The tabular mode's training rows: the request's background.
fn training_rows<'a>(request: &Request<'a>) -> Result<TensorView<'a>, Error> {
    request.background().and_then(|b| b.first().copied()).filter(|b| b.rows() > 0).ok_or_else(|| {
        Error::failed_precondition(
            "background: lime's tabular mode takes its training data from the background; give background rows or a background_id (or use a model with a default background)",
        )
    })
}

/// A local-model failure as the plugin reports it.
fn regression_error(e: CholeskyError, width: f64) -> Error {
    match e {
        CholeskyError::Cancelled => Error::cancelled(),
        CholeskyError::NotFinite => Error::invalid_argument(format!(
            "parameters.kernel_width: the local model's normal equations are not finite with kernel width {width} \
             (its kernel weights under- or overflow)"
        )),
        CholeskyError::NotPositiveDefinite { jitter } => Error::failed_precondition(format!(
            "parameters.kernel_width: the local model's normal equations could not be factored even with a ridge of \
             {jitter:e} (kernel width {width})"
        )),
    }
}

/// The local models of one input, one per target: lime's kernel weights from the distances of
/// its binary samples `z` (`m` features each), the weighted Gram matrix, then per target the
/// feature selection and the ridge fit on `labels` (sample-major, `n_targets` per sample).
#[allow(clippy::too_many_arguments)]
fn local_models(
    z: &[u8],
    m: usize,
    labels: &[f64],
    n_targets: usize,
    width: f64,
    distance: &dyn Fn(&[u8]) -> f64,
    k: usize,
    selection: Selection,
    cancelled: &dyn Fn() -> bool,
) -> Result<Vec<regression::Fit>, Error> {
    let num_samples = z.len() / m.max(1);
    let weights: Vec<f64> = (0..num_samples)
        .map(|i| {
            let d = distance(&z[i * m..(i + 1) * m]);
            (-(d * d) / (width * width)).exp().sqrt()
        })
        .collect();
    if let Some(bad) = weights.iter().find(|w| !w.is_finite()) {
        return Err(Error::invalid_argument(format!(
            "parameters.kernel_width: a kernel width of {width} gives a kernel weight of {bad}"
        )));
    }
    let row = |i: usize, out: &mut [f64]| {
        for (o, &v) in out.iter_mut().zip(&z[i * m..(i + 1) * m]) {
            *o = v as f64;
        }
    };
    let failed = |e| regression_error(e, width);
    if cancelled() {
        return Err(Error::cancelled());
    }
    let gram = regression::gram(num_samples, m, &weights, &row, cancelled).map_err(failed)?;
    let mut y = vec![0f64; num_samples];
    (0..n_targets)
        .map(|t| {
            // Each target's fits pace themselves; a question per target covers many small ones.
            if cancelled() {
                return Err(Error::cancelled());
            }
            for (i, v) in y.iter_mut().enumerate() {
                *v = labels[i * n_targets + t];
            }
            let target = regression::target(&gram, &weights, &y, &row, cancelled).map_err(failed)?;
            let used = regression::select(&gram, &target, k, selection, cancelled).map_err(failed)?;
            regression::ridge(&gram, &target, &used, 1.0, cancelled).map_err(failed)
        })
        .collect()
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

struct Text<'a> {
    x: &'a [f32],
    /// The positions that are features: those whose id is not the mask id.
    positions: &'a [usize],
    mask_id: f32,
}

impl Sampler for Text<'_> {
    fn features(&self) -> usize {
        self.positions.len()
    }
    fn draws_per_sample(&self) -> u64 {
        1 + self.positions.len() as u64
    }
    fn fill(&self, i: usize, rng: &mut Rng, z: &mut [u8], row: &mut [f32]) {
        row.copy_from_slice(self.x);
        z.fill(1);
        let d = self.positions.len();
        if i == 0 || d == 0 {
            return;
        }
        // lime's LimeTextExplainer: how many to hide uniformly in 1..=d, then which ones, a
        // uniform choice of that many distinct features. The choice is selection sampling
        // (Knuth's algorithm S): feature j is hidden with probability (still to hide) / (features
        // left), which draws every subset of that size with equal probability in one draw per
        // feature, so every sample takes 1 + d draws.
        let mut hide = 1 + ((rng.uniform() * d as f64) as usize).min(d - 1);
        for (j, (&p, zj)) in self.positions.iter().zip(z.iter_mut()).enumerate() {
            let u = rng.uniform();
            if hide > 0 && u * ((d - j) as f64) < hide as f64 {
                *zj = 0;
                row[p] = self.mask_id;
                hide -= 1;
            }
        }
    }
    fn distance(&self, z: &[u8]) -> f64 {
        // lime's: cosine distance to the all-ones instance, times 100.
        let m = z.len().max(1) as f64;
        let on = z.iter().filter(|&&v| v == 1).count() as f64;
        100.0 * (1.0 - (on / m).sqrt())
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
    /// starts at row `first`'s) and their model rows into `batch`. False when `cancelled` said
    /// stop before every row was filled.
    fn fill(
        &self,
        first: usize,
        count: usize,
        binary: &mut [u8],
        batch: &mut [f32],
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> bool {
        let row_len = batch.len() / count.max(1);
        let mut rng: Option<(usize, Rng)> = None;
        let mut at = 0;
        for (r, row) in batch.chunks_exact_mut(row_len).enumerate().take(count) {
            if r % CHECK_ROWS == CHECK_ROWS - 1 && cancelled() {
                return false;
            }
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
        true
    }

    /// [`Samples::fill`] split over `threads` threads in contiguous runs of rows; false when
    /// any of them was cancelled.
    fn fill_parallel(
        &self,
        first: usize,
        count: usize,
        binary: &mut [u8],
        batch: &mut [f32],
        threads: usize,
        cancelled: &(dyn Fn() -> bool + Sync),
    ) -> bool {
        let row_len = batch.len() / count.max(1);
        let parts = threads.min(count / MIN_ROWS_PER_THREAD).max(1);
        if parts == 1 {
            return self.fill(first, count, binary, batch, cancelled);
        }
        let stopped = &std::sync::atomic::AtomicBool::new(false);
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
                scope.spawn(move || {
                    if !self.fill(rows.0, rows.1, own_binary, own_batch, cancelled) {
                        stopped.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                });
                start = end;
            }
        });
        !stopped.load(std::sync::atomic::Ordering::Relaxed)
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
    Text,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Tabular => "tabular",
            Mode::Image { .. } => "image",
            Mode::Text => "text",
        }
    }
}

/// Text mode's features of row `x`: the positions whose id is not the mask id.
fn text_features(x: &[f32], mask_id: f32) -> Vec<usize> {
    (0..x.len()).filter(|&p| x[p] != mask_id).collect()
}

impl Explainer for Lime {
    fn info() -> PluginInfo {
        PluginInfo::new("lime", env!("CARGO_PKG_VERSION"))
            .description(
                "LIME (the lime package's defaults): a weighted ridge model on binary perturbations \
                 around the input. Tabular: quartile bins of the background rows (lime's training \
                 data), 5000 samples, kernel width 0.75*sqrt(M). Image: SLIC superpixels, 1000 \
                 samples, cosine kernel width 0.25. Text (token ids): a feature per position, hidden \
                 ones set to mask_id, the other inputs held, 5000 samples, cosine kernel width 25. \
                 Attributions are the coefficients; extras `intercept`, `score` (weighted R^2), \
                 `local_prediction`, `top_features`.",
            )
            .reentrant()
            .typed_inputs()
            .param(
                "mode",
                ParamKind::Text,
                ParamDefault::Text("auto".into()),
                "\"tabular\", \"image\", \"text\", or \"auto\": integer inputs (token ids) are text, rows of \
                 rank 1 tabular, [C, H, W] or [H, W] rows images.",
            )
            .max_len(32)
            .param("seed", ParamKind::Integer, ParamDefault::Integer(0), "Seed of the sampling.")
            .range(i64::MIN as f64, i64::MAX as f64)
            .param(
                "num_samples",
                ParamKind::Integer,
                ParamDefault::Optional,
                "Perturbed samples, 2 to 10^8; default 5000 (tabular, text), 1000 (image).",
            )
            .range(2.0, MAX_SAMPLES as f64)
            .param(
                "num_features",
                ParamKind::Integer,
                ParamDefault::Optional,
                "Features in the explanation (top k); default 10 (tabular, text), every superpixel (image).",
            )
            .range(1.0, i32::MAX as f64)
            .param(
                "feature_selection",
                ParamKind::Text,
                ParamDefault::Text("auto".into()),
                "\"auto\", \"none\", \"highest_weights\" or \"forward_selection\" (lime's).",
            )
            .max_len(32)
            .param(
                "kernel_width",
                ParamKind::Number,
                ParamDefault::Optional,
                "Kernel width, 1e-6 to 1e6 (narrower makes every weight but the instance's 0, wider makes \
                 them all 1); default 0.75*sqrt(M) (tabular), 0.25 (image), 25 (text).",
            )
            .range(KERNEL_WIDTHS.0, KERNEL_WIDTHS.1)
            .param(
                "hide_color",
                ParamKind::Number,
                ParamDefault::Optional,
                "Image: value of hidden superpixels, within +-1e30; default their mean colour.",
            )
            .range(-MAX_HIDE_COLOR, MAX_HIDE_COLOR)
            .param(
                "segments",
                ParamKind::Integers,
                ParamDefault::Optional,
                "Image: superpixel id (>= 0) of every pixel (H*W, row-major) instead of SLIC.",
            )
            .range(0.0, i64::MAX as f64)
            .max_len(1 << 26)
            .param(
                "n_segments",
                ParamKind::Integer,
                ParamDefault::Integer(100),
                "Image: SLIC's approximate number of superpixels, 1 to 10^6.",
            )
            .range(1.0, MAX_SEGMENTS as f64)
            .param(
                "compactness",
                ParamKind::Number,
                ParamDefault::Number(10.0),
                "Image: SLIC's balance of space against colour (colour scaled to 0..100), 1e-6 to 1e6.",
            )
            .range(COMPACTNESS.0, COMPACTNESS.1)
            .param(
                "mask_id",
                ParamKind::Number,
                ParamDefault::Number(0.0),
                "Text: the id hidden positions take (default 0, [PAD] in BERT's vocabularies), a whole number \
                 up to 2^24; positions already holding it are no features and get 0.",
            )
            .range(-MAX_MASK_ID, MAX_MASK_ID)
            .param(
                "batch_rows",
                ParamKind::Integer,
                ParamDefault::Integer(0),
                "Rows per forward call, 0 to 2^20; 0: the server's max batch rows. The plugin samples up to \
                 32 MiB of rows ahead of the calls.",
            )
            .range(0.0, MAX_BATCH_ROWS as f64)
    }

    fn create() -> Result<Self, Error> {
        Ok(Lime)
    }

    /// Rows: N·S (S = num_samples). Memory, with M features per input (tabular: the row
    /// length; text: the most positions of a row that are not the mask id; image: the given
    /// superpixels, or the most SLIC can return): the binary samples N·S·M bytes and labels
    /// N·S·T·8; a wave of sampled rows and a batch of outputs; the per-mode set-up (tabular: the
    /// quartile statistics; text: the feature positions; image: superpixel maps, hidden images,
    /// SLIC's buffers); and per local-model thread (at most min(cores, 8, N) at once) the Gram
    /// matrix and the ridge's matrix and factor, 24·M² bytes, with the fits' coefficients.
    fn estimate(&self, request: &Request<'_>) -> Result<Cost, Error> {
        let s = settings(request)?;
        let (n, t, r) = (request.batch_size() as f64, request.num_targets() as f64, request.output_row_size() as f64);
        let row = s.input.row_len() as f64;
        let samples = s.num_samples as f64;
        let (m, setup) = match s.mode {
            Mode::Tabular => {
                let k = training_rows(request)?.rows() as f64;
                (row, 800.0 * row + 16.0 * k + 8.0 * n * row)
            }
            Mode::Image { channels, height, width } => {
                let pixels = (height * width) as f64;
                let (m, work) = match s.segments {
                    Some(ids) => {
                        let mut distinct = ids.to_vec();
                        distinct.sort_unstable();
                        distinct.dedup();
                        (distinct.len() as f64, 8.0 * pixels)
                    }
                    None => {
                        let (rows, cols, _) = segment::grid(height, width, s.n_segments);
                        let centres = (rows * cols) as f64;
                        (
                            segment::max_segments(height, width, s.n_segments) as f64,
                            48.0 * pixels + 16.0 * centres * (2.0 + channels as f64),
                        )
                    }
                };
                (m, n * (16.0 * pixels + 24.0 * m + 4.0 * row) + work)
            }
            Mode::Text => {
                let rows = 0..request.batch_size();
                let m = rows.map(|k| s.input.row(k).iter().filter(|&&v| v != s.mask_id).count()).max().unwrap_or(0) as f64;
                (m, 8.0 * n * m)
            }
        };
        let rows = n * samples;
        let chunk = (s.batch_rows as f64).min(rows).max(1.0);
        let wave = (SAMPLE_AHEAD_BYTES as f64 / (4.0 * row.max(1.0))).floor().max(chunk).min(rows);
        let sampling = n * samples * (m + 8.0 * t) + wave * 4.0 * row + chunk * 4.0 * r;
        let threads = (worker_threads() as f64).min(n).max(1.0);
        let fits = threads * (24.0 * m * m + 16.0 * samples + 32.0 * m) + n * t * (16.0 * m + 64.0);
        let bytes = setup + sampling + fits;
        let cost = Cost::new(rows, bytes);
        Ok(if fits > setup + sampling && bytes / DEFAULT_BUDGET.1 > rows / DEFAULT_BUDGET.0 {
            match (s.mode, s.segments) {
                (Mode::Tabular | Mode::Text, _) => cost,
                (Mode::Image { .. }, Some(_)) => cost.driven_by("segments"),
                (Mode::Image { .. }, None) => cost.driven_by("n_segments"),
            }
        } else {
            cost.driven_by("num_samples")
        })
    }

    fn explain(&self, ctx: &Context<'_>, request: &Request<'_>) -> Result<(), Error> {
        let Settings {
            explained,
            input,
            mode,
            seed,
            num_samples,
            num_features,
            selection,
            kernel_width,
            batch_rows,
            segments: given,
            n_segments,
            compactness,
            hide_color,
            mask_id,
        } = settings(request)?;
        let cancelled = || ctx.is_cancelled();
        // Asks `cancelled` once per stretch of work in the loops below (whose lengths are the
        // request's: features, inputs, samples, targets).
        let mut pace = Pace::new(&cancelled);
        let mut step = |work: usize| if pace.stop(work) { Err(Error::cancelled()) } else { Ok(()) };
        let n_inputs = request.batch_size();
        let row_len = input.row_len();

        // Per-mode set-up: the samplers, and what the extras report.
        let stats: Vec<discretize::Feature>;
        let mut segment_maps: Vec<Vec<usize>> = Vec::new();
        // Text: each row's feature positions.
        let mut positions: Vec<Vec<usize>> = Vec::new();
        if mode == Mode::Text {
            for n in 0..n_inputs {
                step(row_len + 1)?;
                positions.push(text_features(input.row(n), mask_id));
            }
        }
        let mut samplers: Vec<Box<dyn Sampler + '_>> = Vec::with_capacity(n_inputs);
        match mode {
            Mode::Tabular => {
                let background = training_rows(request)?;
                let mut fitted = Vec::with_capacity(row_len);
                for j in 0..row_len {
                    // Fitting a feature sorts its column: about 16 K steps.
                    step(16 * background.rows() + 1)?;
                    let column: Vec<f64> = (0..background.rows()).map(|k| background.row(k)[j] as f64).collect();
                    fitted.push(discretize::Feature::fit(&column));
                }
                stats = fitted;
                for n in 0..n_inputs {
                    step(4 * row_len + 1)?;
                    let x = input.row(n);
                    let x_bins = stats.iter().zip(x).map(|(f, &v)| f.bin(v as f64)).collect();
                    samplers.push(Box::new(Tabular { x, stats: &stats, x_bins }));
                }
            }
            Mode::Image { channels, height, width } => {
                stats = Vec::new();
                let pixels = height * width;
                for n in 0..n_inputs {
                    ctx.check_cancelled()?;
                    let x = input.row(n);
                    let labels = match given {
                        Some(s) => {
                            let mut ids: Vec<i64> = s.to_vec();
                            ids.sort_unstable();
                            ids.dedup();
                            s.iter().map(|v| ids.binary_search(v).unwrap()).collect()
                        }
                        None => {
                            segment::slic(x, channels, height, width, n_segments, compactness, 10, &cancelled)
                                .ok_or_else(Error::cancelled)?
                                .0
                        }
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
            Mode::Text => {
                stats = Vec::new();
                for (n, positions) in positions.iter().enumerate() {
                    samplers.push(Box::new(Text { x: input.row(n), positions, mask_id }));
                }
            }
        }

        // Samples of every input through the model, in shared batches, sampled on every core.
        let n_targets = request.num_targets();
        let out_row = request.output_row_size();
        let widths: Vec<usize> = samplers.iter().map(|s| s.features()).collect();
        let per_input: Vec<usize> = widths.iter().map(|&m| product("num_samples", num_samples, m)).collect::<Result<_, _>>()?;
        let offsets: Vec<usize> = per_input.iter().scan(0usize, |at, &len| Some(std::mem::replace(at, *at + len))).collect();
        let binary_len = per_input.iter().try_fold(0usize, |acc, &len| acc.checked_add(len));
        let binary_len = binary_len.ok_or_else(|| Error::invalid_argument("parameters.num_samples: the samples overflow"))?;
        let mut binary = vec![0u8; binary_len];
        let samples = Samples { samplers: &samplers, seed, per_input: num_samples, widths: &widths, offsets };
        let threads = worker_threads();
        let labels_len = product("num_samples", num_samples, n_targets)?;
        let mut labels: Vec<Vec<f64>> = (0..n_inputs).map(|_| vec![0f64; labels_len]).collect();
        let total = product("num_samples", n_inputs, num_samples)?;
        let chunk = batch_rows.min(total).max(1);
        // Rows are sampled in waves of up to SAMPLE_AHEAD_BYTES and then sent to the model a
        // batch at a time, back to back: sampling does not alternate with model calls (after
        // which ONNX Runtime's workers, where they spin, would still hold a core).
        let wave = (SAMPLE_AHEAD_BYTES / (4 * row_len.max(1))).max(chunk).min(total);
        let mut rows_buffer = vec![0f32; wave * row_len];
        let mut batch_shape = input.shape.to_vec();
        // The request row each batch row was sampled from: other inputs keep its values.
        let mut sources = vec![0usize; chunk];
        let mut done = 0;
        while done < total {
            ctx.check_cancelled()?;
            let rows = wave.min(total - done);
            let (from, to) = (samples.binary_offset(done), samples.binary_offset(done + rows));
            if !samples.fill_parallel(done, rows, &mut binary[from..to], &mut rows_buffer[..rows * row_len], threads, &cancelled)
            {
                return Err(Error::cancelled());
            }
            for first in (0..rows).step_by(chunk) {
                ctx.check_cancelled()?;
                let count = chunk.min(rows - first);
                batch_shape[0] = count as i64;
                for (r, source) in sources[..count].iter_mut().enumerate() {
                    *source = (done + first + r) / num_samples;
                }
                let batch = TensorView::new(&batch_shape, &rows_buffer[first * row_len..(first + count) * row_len]);
                let out = ctx.forward_with_fixed(request, explained, batch, &sources[..count])?;
                let out = out.data();
                for r in 0..count {
                    step(n_targets + 1)?;
                    let (n, i) = ((done + first + r) / num_samples, (done + first + r) % num_samples);
                    for (t, &target) in request.targets(n).iter().enumerate() {
                        labels[n][i * n_targets + t] = out[r * out_row + target as usize] as f64;
                    }
                }
            }
            done += rows;
        }

        // Local models, inputs spread over the cores; every thread stops when cancelled.
        ctx.check_cancelled()?;
        let fit_input = |n: usize| -> Result<Vec<regression::Fit>, Error> {
            let m = widths[n];
            if m == 0 {
                // A text row whose every position is the mask id: nothing to hide, and every
                // sample is x. The local model is the constant f(x).
                let at_x = |t: usize| labels[n][t];
                return Ok((0..n_targets)
                    .map(|t| regression::Fit { features: Vec::new(), coef: Vec::new(), intercept: at_x(t), score: 1.0 })
                    .collect());
            }
            let width = kernel_width.unwrap_or(match mode {
                Mode::Tabular => 0.75 * (m as f64).sqrt(),
                Mode::Image { .. } => 0.25,
                Mode::Text => 25.0,
            });
            let z = &binary[samples.offsets[n]..samples.offsets[n] + num_samples * m];
            let k = num_features.unwrap_or(if matches!(mode, Mode::Image { .. }) { 100_000 } else { 10 });
            let distance = |z: &[u8]| samplers[n].distance(z);
            local_models(z, m, &labels[n], n_targets, width, &distance, k, selection, &cancelled)
        };
        let per_thread = n_inputs.div_ceil(threads.min(n_inputs).max(1)).max(1);
        let fits: Vec<regression::Fit> = if per_thread >= n_inputs {
            (0..n_inputs).map(fit_input).collect::<Result<Vec<_>, Error>>()?.into_iter().flatten().collect()
        } else {
            std::thread::scope(|scope| {
                let fit_input = &fit_input;
                let handles: Vec<_> = (0..n_inputs)
                    .step_by(per_thread)
                    .map(|first| {
                        scope.spawn(move || {
                            (first..(first + per_thread).min(n_inputs)).map(fit_input).collect::<Result<Vec<_>, Error>>()
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().map_err(|_| Error::internal("lime: a local-model thread panicked"))?)
                    .collect::<Result<Vec<_>, Error>>()
            })?
            .into_iter()
            .flatten()
            .flatten()
            .collect()
        };

        // Results.
        let attributions = ctx.attributions(explained)?;
        for (k, (out, fit)) in attributions.chunks_exact_mut(row_len).zip(&fits).enumerate() {
            step(row_len + fit.features.len())?;
            let n = k / n_targets;
            match mode {
                Mode::Tabular => {
                    for (&f, &c) in fit.features.iter().zip(&fit.coef) {
                        out[f] = c as f32;
                    }
                }
                Mode::Text => {
                    for (&f, &c) in fit.features.iter().zip(&fit.coef) {
                        out[positions[n][f]] = c as f32;
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
        for (k, (chunk, f)) in top.chunks_exact_mut(k_max.max(1)).zip(&fits).enumerate() {
            step(4 * f.features.len() + k_max)?;
            let mut order: Vec<usize> = (0..f.features.len()).collect();
            order.sort_by(|&a, &b| f.coef[b].abs().total_cmp(&f.coef[a].abs()));
            // Text names positions; the other modes' features are their own names.
            let name = |feature: usize| if mode == Mode::Text { positions[k / n_targets][feature] } else { feature };
            for (slot, o) in chunk.iter_mut().enumerate() {
                *o = order.get(slot).map_or(-1.0, |&i| name(f.features[i]) as f32);
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
            Mode::Text => {
                let counts: Vec<String> = widths.iter().map(|m| m.to_string()).collect();
                ctx.info("features_per_input", &counts.join(","))?;
            }
        }
        ctx.info("mode", mode.name())?;
        ctx.info("num_samples", &num_samples.to_string())?;
        Ok(())
    }
}

export_plugin!(Lime);

#[cfg(test)]
mod tests {
    use super::*;
    use explaind_plugin_sdk::testing::{FakeRequest, Value};

    #[test]
    fn every_parameter_is_bounded() {
        let plugin = explaind_plugin_sdk::plugin_under_test!();
        plugin.assert_every_parameter_is_bounded();
        assert_eq!(plugin.param("kernel_width").range, (1e-6, 1e6));
        assert_eq!(plugin.param("num_samples").range, (2.0, 1e8));
    }

    #[test]
    fn tabular_estimate() {
        let plugin = explaind_plugin_sdk::plugin_under_test!();
        // N = 2 rows of M = 3 features, T = 1, K = 4 training rows, S = 100 samples:
        // 2·100 = 200 model rows.
        // Memory: set-up 800·3 (statistics) + 16·4 (a column and its sorted copy) + 8·2·3
        // (instance bins) = 2512; sampling 2·100·(3 + 8) (binary rows and labels) + a wave of
        // all 200 rows 200·4·3 + a batch's outputs 64·4·1 = 4856; per local-model thread
        // 24·3² + 16·100 + 32·3 = 1912, and the fits 2·1·(16·3 + 64) = 224.
        let request = FakeRequest::zeros(&[2, 3], 1).background_rows(4).param("num_samples", Value::Integer(100));
        let cost = plugin.estimate(&request).unwrap();
        let threads = worker_threads().min(2) as f64;
        assert_eq!(cost.model_rows, 200.0);
        assert_eq!(cost.scratch_bytes, 2512.0 + 4856.0 + 1912.0 * threads + 224.0);
        assert_eq!(cost.driver.as_deref(), Some("num_samples"));
        // Tabular needs training rows, as explain does.
        let err = plugin.estimate(&FakeRequest::zeros(&[2, 3], 1)).unwrap_err();
        assert_eq!(err.code, explaind_plugin_sdk::EXD_FAILED_PRECONDITION);
    }

    #[test]
    fn image_estimate() {
        let plugin = explaind_plugin_sdk::plugin_under_test!();
        // One 8×8 image in 4 given quadrant superpixels (M = 4), T = 1, S = 1000 (the image
        // default): 1000 model rows.
        // Memory: set-up 16·64 + 24·4 + 4·64 (pixel lists, maps, hidden image) + 8·64 (the ids
        // sorted) = 1888; sampling 1000·(4 + 8) + 1000·4·64 + 64·4 = 268256; one thread's
        // model 24·16 + 16·1000 + 32·4 = 16512 and the fit 64 + 64 = 128.
        let quadrants: Vec<i64> = (0..64).map(|p| ((p / 8) / 4 * 2 + (p % 8) / 4) as i64).collect();
        let request = FakeRequest::zeros(&[1, 1, 8, 8], 1).param("segments", Value::Integers(quadrants));
        let cost = plugin.estimate(&request).unwrap();
        assert_eq!((cost.model_rows, cost.scratch_bytes), (1000.0, 1888.0 + 268256.0 + 16512.0 + 128.0));
        // SLIC with 4096 superpixels on a 64×64 image: up to 4096 features, whose local models
        // (24·4096² bytes a thread) are the cost, so n_segments is named.
        let fine = FakeRequest::zeros(&[1, 1, 64, 64], 1).param("n_segments", Value::Integer(4096));
        let cost = plugin.estimate(&fine).unwrap();
        assert!(cost.scratch_bytes > 24.0 * 4096.0 * 4096.0, "{}", cost.scratch_bytes);
        assert_eq!(cost.driver.as_deref(), Some("n_segments"));
    }

    #[test]
    fn text_estimate_and_refusals() {
        let plugin = explaind_plugin_sdk::plugin_under_test!();
        // Two rows of 10 ids, the second with 3 [PAD]s (mask_id 0): at most M = 10 features;
        // T = 3, S = 5000 (the text default): 10000 model rows.
        // Memory: set-up 8·2·10 (feature positions) = 160; sampling 2·5000·(10 + 24) + a wave of
        // all 10000 rows 10000·4·10 + a batch's outputs 64·4·3 = 740768; per local-model thread
        // 24·10² + 16·5000 + 32·10 = 82720, and the fits 2·3·(16·10 + 64) = 1344.
        let mut ids: Vec<f32> = (1..=10).map(|v| v as f32).collect();
        ids.extend([1.0, 5.0, 6.0, 7.0, 8.0, 9.0, 2.0, 0.0, 0.0, 0.0]);
        let request = || FakeRequest::new(&[(vec![2, 10], ids.clone())], 3).param("mode", Value::Text("text".into()));
        let cost = plugin.estimate(&request()).unwrap();
        let threads = worker_threads().min(2) as f64;
        assert_eq!(cost.model_rows, 10000.0);
        assert_eq!(cost.scratch_bytes, 160.0 + 740768.0 + 82720.0 * threads + 1344.0);
        assert_eq!(cost.driver.as_deref(), Some("num_samples"));
        // mask_id is an id: a whole number up to 2^24. hide_color is the image mode's.
        for (name, value) in [("mask_id", 0.5), ("mask_id", 1e9), ("mask_id", -16777217.0), ("hide_color", 0.0)] {
            let err = plugin.estimate(&request().param(name, Value::Number(value))).unwrap_err();
            assert_eq!(err.code, explaind_plugin_sdk::EXD_INVALID_ARGUMENT);
            assert!(err.message.starts_with(&format!("parameters.{name}:")), "{}", err.message);
        }
        assert!(plugin.estimate(&request().param("mask_id", Value::Number(16777216.0))).is_ok());
        // Two inputs: tabular and image modes refuse them; text needs the one it explains named.
        let two = |mode: &str| {
            FakeRequest::new(&[(vec![2, 10], ids.clone()), (vec![2, 10], vec![1.0; 20])], 3)
                .param("mode", Value::Text(mode.into()))
        };
        let err = plugin.estimate(&two("tabular")).unwrap_err();
        assert!(err.message.starts_with("inputs: lime's tabular and image modes"), "{}", err.message);
        let err = plugin.estimate(&two("text")).unwrap_err();
        assert!(err.message.starts_with("explained_inputs:"), "{}", err.message);
    }

    #[test]
    fn text_samples_hide_a_uniform_number_of_distinct_features_with_the_mask_id() {
        // Ten positions, two of which already hold the mask id 0: eight features.
        let x: Vec<f32> = vec![1.0, 5.0, 0.0, 7.0, 9.0, 0.0, 3.0, 4.0, 6.0, 2.0];
        let positions = text_features(&x, 0.0);
        assert_eq!(positions, [0, 1, 3, 4, 6, 7, 8, 9]);
        let samplers: Vec<Box<dyn Sampler>> = vec![Box::new(Text { x: &x, positions: &positions, mask_id: 0.0 })];
        let (rows, m) = (40_000, 8);
        let samples = Samples { samplers: &samplers, seed: 5, per_input: rows, widths: &[m], offsets: vec![0] };
        let (mut binary, mut batch) = (vec![0u8; rows * m], vec![0f32; rows * 10]);
        assert!(samples.fill_parallel(0, rows, &mut binary, &mut batch, 4, &|| false));
        // Sample 0 is x.
        assert!(binary[..m].iter().all(|&v| v == 1));
        assert_eq!(batch[..10], x[..]);
        let (mut by_count, mut by_feature) = ([0usize; 9], [0usize; 8]);
        for i in 1..rows {
            let (z, row) = (&binary[i * m..(i + 1) * m], &batch[i * 10..(i + 1) * 10]);
            by_count[z.iter().filter(|&&v| v == 0).count()] += 1;
            for (j, &p) in positions.iter().enumerate() {
                assert_eq!(row[p], if z[j] == 0 { 0.0 } else { x[p] }, "sample {i} position {p}");
                by_feature[j] += (z[j] == 0) as usize;
            }
            assert_eq!((row[2], row[5]), (0.0, 0.0));
        }
        // lime: 1 to 8 hidden, each count with probability 1/8 (Binomial: σ ≈ 66 of 5000), so a
        // feature is hidden with probability E[count]/8 = 0.5625 (σ ≈ 0.0025).
        assert_eq!(by_count[0], 0, "every sample but x hides at least one feature");
        let n = (rows - 1) as f64;
        for (count, &c) in by_count.iter().enumerate().skip(1) {
            assert!((c as f64 - n / 8.0).abs() < 5.0 * 66.0, "{count} hidden in {c} samples");
        }
        for (j, &c) in by_feature.iter().enumerate() {
            assert!((c as f64 / n - 0.5625).abs() < 0.01, "feature {j} hidden in {c} samples");
        }
        // One thread from sample 0 gives the same samples as four that seek to their parts.
        let (mut binary1, mut batch1) = (vec![0u8; rows * m], vec![0f32; rows * 10]);
        assert!(samples.fill(0, rows, &mut binary1, &mut batch1, &|| false));
        assert!(binary1 == binary && batch1 == batch);
        // lime's distance: cosine to the all-ones row, times 100.
        let text = Text { x: &x, positions: &positions, mask_id: 0.0 };
        assert_eq!(text.distance(&[1; 8]), 0.0);
        assert!((text.distance(&[1, 1, 0, 0, 1, 1, 0, 0]) - 100.0 * (1.0 - 0.5f64.sqrt())).abs() < 1e-12);
        assert_eq!(text.distance(&[0; 8]), 100.0);
    }

    #[test]
    fn huge_parameters_give_huge_estimates_or_refusals_never_a_panic() {
        let plugin = explaind_plugin_sdk::plugin_under_test!();
        // The top of the range over 20000 rows: 2·10^12 model rows, for the host to refuse.
        let many = FakeRequest::zeros(&[20_000, 1], 1).background_rows(2).param("num_samples", Value::Integer(100_000_000));
        let cost = plugin.estimate(&many).unwrap();
        assert_eq!(cost.model_rows, 2e12);
        assert!(cost.scratch_bytes > 1e12);
        // 10^12 (a 13 TB allocation once) and 2^62 (an overflow once): refused by name.
        for v in [1_000_000_000_000, 1 << 62, i64::MAX] {
            let request = FakeRequest::zeros(&[2, 3], 1).background_rows(4).param("num_samples", Value::Integer(v));
            let err = plugin.estimate(&request).unwrap_err();
            assert!(err.message.starts_with("parameters.num_samples:"), "{}", err.message);
        }
        for w in [1e-300, 0.0, -1.0, f64::INFINITY, f64::NAN] {
            let request = FakeRequest::zeros(&[2, 3], 1).background_rows(4).param("kernel_width", Value::Number(w));
            let err = plugin.estimate(&request).unwrap_err();
            assert!(err.message.starts_with("parameters.kernel_width:"), "{w}: {}", err.message);
        }
    }

    #[test]
    fn a_degenerate_kernel_width_ends_the_local_model_with_an_error() {
        // 6 samples of 3 binary features, the first the instance itself.
        let z: Vec<u8> = vec![1, 1, 1, 0, 1, 1, 1, 0, 1, 0, 0, 1, 1, 1, 0, 0, 0, 0];
        let labels = [1.0, 0.5, 0.25, 0.0, 0.75, 0.1];
        let distance = |z: &[u8]| (z.iter().filter(|&&v| v == 0).count() as f64).sqrt();
        let fits = local_models(&z, 3, &labels, 1, 0.75, &distance, 10, Selection::Auto, &|| false).unwrap();
        assert_eq!(fits.len(), 1);
        assert!(fits[0].coef.iter().all(|c| c.is_finite()));
        // 1e-300: every weight but the instance's is exp(−d²/0) = 0 and the instance's 0/0.
        let err = local_models(&z, 3, &labels, 1, 1e-300, &distance, 10, Selection::Auto, &|| false).unwrap_err();
        assert_eq!(err.code, explaind_plugin_sdk::EXD_INVALID_ARGUMENT);
        assert!(err.message.starts_with("parameters.kernel_width:"), "{}", err.message);
        // The smallest width the range allows stays finite.
        assert!(local_models(&z, 3, &labels, 1, 1e-6, &distance, 10, Selection::Auto, &|| false).is_ok());
    }

    #[test]
    fn sampling_threads_stop_when_cancelled() {
        let x = vec![0.5f32; 16];
        let image = Image { x: &x, members: (0..16).map(|p| vec![p]).collect(), hidden: vec![0.0; 16], pixels: 16, channels: 1 };
        let samplers: Vec<Box<dyn Sampler>> = vec![Box::new(image)];
        let (rows, m) = (20_000, 16);
        let samples = Samples { samplers: &samplers, seed: 1, per_input: rows, widths: &[m], offsets: vec![0] };
        let (mut binary, mut batch) = (vec![0u8; rows * m], vec![0f32; rows * 16]);
        let asked = std::sync::atomic::AtomicUsize::new(0);
        let stop = || {
            asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            true
        };
        assert!(!samples.fill_parallel(0, rows, &mut binary, &mut batch, 4, &stop));
        // Each of the 4 threads stopped at its first question (row 63 of its part): the last
        // rows of every part are untouched.
        assert_eq!(asked.load(std::sync::atomic::Ordering::Relaxed), 4);
        assert!(batch[(rows - 1) * 16..].iter().all(|&v| v == 0.0));
        assert!(samples.fill_parallel(0, rows, &mut binary, &mut batch, 4, &|| false));
        assert!(batch[(rows - 1) * 16..].iter().all(|&v| v == 0.5 || v == 0.0));
        assert!(binary[m..].contains(&0) && binary[m..].contains(&1), "samples were drawn");
    }
}
