//! Occlusion explainer plugin, with captum's `Occlusion` semantics.
//!
//! A window of shape `window` (given without the batch axis) slides over each input with
//! `strides`. Along an axis of size `d`, windows start at `0, s, 2s, ...` and there are
//! `ceil((d - w) / s) + 1` of them, so the last one may be cut at the edge (as in captum).
//! The occluded input is `x * (1 - mask) + baseline * mask`. The attribution of an element is
//! the mean, over every window covering it, of `f(x)[t] - f(x_occluded)[t]`.
//!
//! Token ids and other integer inputs are occluded the same way, with `baseline` the
//! replacement id (pad or mask); a model's other inputs (the attention mask) are held at the
//! request's values when the request explains one input (`explained_inputs`).
//!
//! The occluded rows of all inputs go to the host's `forward` in chunks of `max_batch_rows`
//! rows, so a request costs `ceil(inputs × windows / max_batch_rows)` model calls and
//! inputs × windows model rows.

use explaind_plugin_sdk::{
    Context, Cost, Error, Explainer, ParamDefault, ParamKind, PluginInfo, Request, TensorView, export_plugin,
};

/// Baseline values are kept within ±1e30, far inside float32.
pub const MAX_BASELINE: f64 = 1e30;

/// The explained input (its index and tensor) and its window grid, or the error explain would
/// give.
fn grid<'a>(request: &Request<'a>) -> Result<(usize, TensorView<'a>, WindowGrid), Error> {
    let explained = request.single_explained_input("occlusion")?;
    let input = request.inputs()[explained];
    let item_shape: Vec<usize> = input.shape[1..].iter().map(|&d| d as usize).collect();
    let windows = WindowGrid::new(&item_shape, request.integers("window")?.unwrap_or(&[]), request.integers("strides")?)?;
    Ok((explained, input, windows))
}

fn baseline(request: &Request<'_>, explained: usize) -> Result<f32, Error> {
    let value = request.number("baseline")?;
    if !(-MAX_BASELINE..=MAX_BASELINE).contains(&value) {
        return Err(Error::invalid_argument(format!("parameters.baseline: must be within +-1e30, got {value}")));
    }
    if request.input_is_integer(explained) && (value.fract() != 0.0 || value.abs() > (1 << 24) as f64) {
        return Err(Error::invalid_argument(format!(
            "parameters.baseline: input {:?} takes integers (token ids, codes); the baseline is the id written into the \
             window, a whole number up to 2^24, got {value}",
            request.input_name(explained)
        )));
    }
    Ok(value as f32)
}

#[derive(Default)]
pub struct Occlusion;

impl Explainer for Occlusion {
    fn info() -> PluginInfo {
        PluginInfo::new("occlusion", env!("CARGO_PKG_VERSION"))
            .description(
                "Occlusion (captum semantics): the mean change of the target output when a sliding \
                 window around each element is replaced by a baseline value.",
            )
            .reentrant()
            .typed_inputs()
            .param(
                "window",
                ParamKind::Integers,
                ParamDefault::Required,
                "Window shape, without the batch axis (one size per input axis).",
            )
            .range(1.0, i32::MAX as f64)
            .max_len(32)
            .param(
                "strides",
                ParamKind::Integers,
                ParamDefault::Optional,
                "Step between window starts per axis; default 1 on every axis.",
            )
            .range(1.0, i32::MAX as f64)
            .max_len(32)
            .param(
                "baseline",
                ParamKind::Number,
                ParamDefault::Number(0.0),
                "Value written into the window, within +-1e30; for token ids, the replacement id (pad or mask).",
            )
            .range(-MAX_BASELINE, MAX_BASELINE)
    }

    fn create() -> Result<Self, Error> {
        Ok(Occlusion)
    }

    /// Rows: N·W (W windows per input). Memory: the coverage count per element, one window's
    /// element list, the per-(input, target) sums [N, T, row] in f64, one batch of occluded
    /// rows and its outputs.
    fn estimate(&self, request: &Request<'_>) -> Result<Cost, Error> {
        let (explained, input, windows) = grid(request)?;
        baseline(request, explained)?;
        let (n, t, row) = (request.batch_size() as f64, request.num_targets() as f64, input.row_len() as f64);
        let w = windows.counts.iter().map(|&c| c as f64).product::<f64>();
        let volume = windows.window.iter().map(|&v| v as f64).product::<f64>();
        let rows = n * w;
        let chunk = (request.max_batch_rows() as f64).min(rows).max(1.0);
        let bytes = 4.0 * row + 8.0 * volume + 8.0 * n * t * row + chunk * (4.0 * row + 4.0 * request.output_row_size() as f64);
        let cost = Cost::new(rows, bytes);
        Ok(if w < n {
            cost
        } else if request.integers("strides")?.is_some() {
            cost.driven_by("strides")
        } else {
            cost.driven_by("window")
        })
    }

    fn explain(&self, ctx: &Context<'_>, request: &Request<'_>) -> Result<(), Error> {
        let (explained, input, windows) = grid(request)?;
        let baseline = baseline(request, explained)?;

        let n_inputs = request.batch_size();
        let n_targets = request.num_targets();
        let row_len = input.row_len();
        let out_row = request.output_row_size();
        let total_rows = n_inputs
            .checked_mul(windows.count())
            .ok_or_else(|| Error::invalid_argument("parameters.window: inputs x windows overflow"))?;
        let chunk_rows = request.max_batch_rows().min(total_rows).max(1);

        // The loops below run over windows, rows, targets and elements, all of which the request
        // sets: they book their work and stop when the request is cancelled.
        let mut ticker = ctx.ticker();

        // How many windows cover each element: the same for every input.
        let mut coverage = vec![0u32; row_len];
        let mut window_elements = Vec::new();
        for w in 0..windows.count() {
            windows.elements(w, &mut window_elements);
            ticker.tick(window_elements.len())?;
            for &e in &window_elements {
                coverage[e] += 1;
            }
        }

        // Every (input, window) pair is one occluded row; rows of different inputs share
        // batches, so small inputs still fill `max_batch_rows`-row model calls.
        let mut sums = vec![0f64; n_inputs * n_targets * row_len];
        let mut batch = vec![0f32; chunk_rows * row_len];
        let mut batch_shape = input.shape.to_vec();
        let mut sources = vec![0usize; chunk_rows];
        let mut first = 0;
        while first < total_rows {
            ctx.check_cancelled()?;
            let rows = chunk_rows.min(total_rows - first);
            for r in 0..rows {
                ticker.tick(row_len)?;
                let (n, w) = ((first + r) / windows.count(), (first + r) % windows.count());
                sources[r] = n;
                let row = &mut batch[r * row_len..(r + 1) * row_len];
                row.copy_from_slice(input.row(n));
                windows.elements(w, &mut window_elements);
                for &e in &window_elements {
                    row[e] = baseline;
                }
            }
            batch_shape[0] = rows as i64;
            let occluded = TensorView::new(&batch_shape, &batch[..rows * row_len]);
            let out = ctx.forward_with_fixed(request, explained, occluded, &sources[..rows])?;
            let out = out.data();
            for r in 0..rows {
                let (n, w) = ((first + r) / windows.count(), (first + r) % windows.count());
                let original = request.outputs().row(n);
                windows.elements(w, &mut window_elements);
                for (t, &target) in request.targets(n).iter().enumerate() {
                    ticker.tick(window_elements.len() + 1)?;
                    let delta = (original[target as usize] - out[r * out_row + target as usize]) as f64;
                    let sum_t = &mut sums[(n * n_targets + t) * row_len..(n * n_targets + t + 1) * row_len];
                    for &e in &window_elements {
                        sum_t[e] += delta;
                    }
                }
            }
            first += rows;
        }

        let attributions = ctx.attributions(explained)?;
        for (values, sums) in attributions.chunks_mut(row_len.max(1)).zip(sums.chunks(row_len.max(1))) {
            ticker.tick(row_len)?;
            for ((value, sum), &covered) in values.iter_mut().zip(sums).zip(&coverage) {
                *value = if covered == 0 { 0.0 } else { (sum / covered as f64) as f32 };
            }
        }
        ctx.info("windows_per_input", &windows.count().to_string())?;
        Ok(())
    }
}

/// The windows over one input item (an input without its batch axis).
struct WindowGrid {
    shape: Vec<usize>,
    window: Vec<usize>,
    strides: Vec<usize>,
    /// Windows along each axis.
    counts: Vec<usize>,
}

impl WindowGrid {
    fn new(shape: &[usize], window: &[i64], strides: Option<&[i64]>) -> Result<Self, Error> {
        let rank = shape.len();
        if window.len() != rank {
            return Err(Error::invalid_argument(format!(
                "parameters.window: expected {rank} sizes (the input shape without the batch axis is {shape:?}), got {}",
                window.len()
            )));
        }
        let strides: Vec<i64> = match strides {
            Some(s) if s.len() != rank => {
                return Err(Error::invalid_argument(format!("parameters.strides: expected {rank} values, got {}", s.len())));
            }
            Some(s) => s.to_vec(),
            None => vec![1; rank],
        };
        let mut counts = Vec::with_capacity(rank);
        for axis in 0..rank {
            let (d, w, s) = (shape[axis] as i64, window[axis], strides[axis]);
            if w < 1 || w > d {
                return Err(Error::invalid_argument(format!(
                    "parameters.window[{axis}]: {w} must be between 1 and the axis size {d}"
                )));
            }
            // captum's own rule: a stride longer than the window would leave elements uncovered.
            if s < 1 || (s > w && w != d) {
                return Err(Error::invalid_argument(format!(
                    "parameters.strides[{axis}]: {s} must be between 1 and the window size {w}"
                )));
            }
            counts.push(((d - w) as usize).div_ceil(s as usize) + 1);
        }
        Ok(WindowGrid {
            shape: shape.to_vec(),
            window: window.iter().map(|&w| w as usize).collect(),
            strides: strides.iter().map(|&s| s as usize).collect(),
            counts,
        })
    }

    fn count(&self) -> usize {
        self.counts.iter().product()
    }

    /// Flat (row-major) indices of the elements window `index` covers, written into `out`.
    fn elements(&self, mut index: usize, out: &mut Vec<usize>) {
        let rank = self.shape.len();
        let mut start = vec![0usize; rank];
        let mut end = vec![0usize; rank];
        for axis in (0..rank).rev() {
            let k = index % self.counts[axis];
            index /= self.counts[axis];
            start[axis] = k * self.strides[axis];
            end[axis] = (start[axis] + self.window[axis]).min(self.shape[axis]);
        }
        out.clear();
        let mut pos = start.clone();
        loop {
            let flat = pos.iter().zip(&self.shape).fold(0, |acc, (&p, &d)| acc * d + p);
            out.push(flat);
            // Odometer step over the window's box, last axis fastest.
            let mut axis = rank;
            loop {
                if axis == 0 {
                    return;
                }
                axis -= 1;
                pos[axis] += 1;
                if pos[axis] < end[axis] {
                    break;
                }
                pos[axis] = start[axis];
            }
        }
    }
}

export_plugin!(Occlusion);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_counts_follow_captum_ceil_rule() {
        // 8 wide, window 3, stride 2: starts 0, 2, 4, 6; the last window is cut to 6..8.
        let g = WindowGrid::new(&[1, 8, 8], &[1, 3, 3], Some(&[1, 2, 2])).unwrap();
        assert_eq!(g.counts, vec![1, 4, 4]);
        let mut e = Vec::new();
        g.elements(3, &mut e); // row 0, column window 3 (start 6)
        assert_eq!(e, vec![6, 7, 14, 15, 22, 23]);
        g.elements(15, &mut e); // last window: rows 6..8, columns 6..8
        assert_eq!(e, vec![54, 55, 62, 63]);
    }

    #[test]
    fn every_element_is_covered_once_with_unit_windows() {
        let g = WindowGrid::new(&[13], &[1], None).unwrap();
        assert_eq!(g.count(), 13);
        let mut e = Vec::new();
        for i in 0..13 {
            g.elements(i, &mut e);
            assert_eq!(e, vec![i]);
        }
    }

    use explaind_plugin_sdk::testing::{FakeRequest, Value};

    #[test]
    fn every_parameter_is_bounded() {
        let plugin = explaind_plugin_sdk::plugin_under_test!();
        plugin.assert_every_parameter_is_bounded();
        assert_eq!(plugin.param("window").max_len, 32);
    }

    #[test]
    fn estimate_is_one_row_per_input_and_window() {
        let plugin = explaind_plugin_sdk::plugin_under_test!();
        // N = 3 images [1, 8, 8], T = 2, window [1, 3, 3] with strides [1, 2, 2]: 1·4·4 = 16
        // windows, 3·16 = 48 rows, in one batch of 48 (the limit is 64).
        // Memory: coverage 4·64 = 256, one window's elements 8·9 = 72, sums 8·3·2·64 = 3072,
        // the batch 48·(4·64 + 4·2) = 12672: 16072 bytes.
        let request = FakeRequest::zeros(&[3, 1, 8, 8], 2)
            .param("window", Value::Integers(vec![1, 3, 3]))
            .param("strides", Value::Integers(vec![1, 2, 2]));
        let cost = plugin.estimate(&request).unwrap();
        assert_eq!((cost.model_rows, cost.scratch_bytes), (48.0, 16072.0));
        assert_eq!(cost.driver.as_deref(), Some("strides"));
        // Unit windows: 64 windows per image, 192 rows.
        let unit = FakeRequest::zeros(&[3, 1, 8, 8], 2).param("window", Value::Integers(vec![1, 1, 1]));
        assert_eq!(plugin.estimate(&unit).unwrap().model_rows, 192.0);
        assert_eq!(plugin.estimate(&unit).unwrap().driver.as_deref(), Some("window"));
    }

    #[test]
    fn estimate_refuses_what_explain_would() {
        let plugin = explaind_plugin_sdk::plugin_under_test!();
        let request = FakeRequest::zeros(&[3, 1, 8, 8], 2);
        let err = plugin.estimate(&request).unwrap_err();
        assert!(err.message.starts_with("parameters.window:"), "{}", err.message);
        let huge = request.param("window", Value::Integers(vec![1, i64::MAX, 3]));
        assert!(plugin.estimate(&huge).unwrap_err().message.starts_with("parameters.window[1]"));
    }

    #[test]
    fn bad_window_names_the_parameter() {
        let err = WindowGrid::new(&[1, 8, 8], &[3, 3], None).err().unwrap();
        assert!(err.message.starts_with("parameters.window:"), "{}", err.message);
        let err = WindowGrid::new(&[1, 8, 8], &[1, 9, 3], None).err().unwrap();
        assert!(err.message.starts_with("parameters.window[1]"), "{}", err.message);
        let err = WindowGrid::new(&[1, 8, 8], &[1, 3, 3], Some(&[1, 0, 1])).err().unwrap();
        assert!(err.message.starts_with("parameters.strides[1]"), "{}", err.message);
        let err = WindowGrid::new(&[1, 8, 8], &[1, 3, 3], Some(&[1, 4, 1])).err().unwrap();
        assert!(err.message.starts_with("parameters.strides[1]"), "{}", err.message);
    }
}
