//! Deep SHAP at a layer, for inputs without a gradient of their own: token ids, attributed at
//! their embedding (captum's `LayerDeepLiftShap` at the word embedding).
//!
//! With E the layer and b_1..b_K the background rows (ids: [PAD] with [CLS] and [SEP] kept,
//! say), for input row n and target t:
//!   φ_layer = (1/K) Σ_k m_t(E(x_n), E(b_k)) · (E(x_n) − E(b_k)),
//!   base value = (1/K) Σ_k f_t(b_k),
//! where the multipliers come from DeepLIFT on the model cut at the layer (ABI 1.5
//! `layer_deeplift_at`), and every other input (the attention mask) keeps row n's values on
//! both sides of each pair and in the base value. So Σφ = f_t(x_n) − base, and the attribution
//! of position s is φ_layer summed over the embedding ([`explaind_gradient_methods::layer`]).
//!
//! Unlike Deep SHAP on float inputs, the background's activations are not cached across
//! requests: each request computes E(b_k) and the pairs afresh.

use explaind_gradient_methods::layer::{Embedding, HeldRows, as_parameter_error, layer_param, report_residual, with_rows};
use explaind_plugin_sdk::{Context, Error, Request, TensorView};

/// The most bytes of layer values (both sides) one batch of pairs holds.
pub const CHUNK_BYTES: usize = 32 << 20;

/// Model rows: the layer at the inputs and the background (N + K), the pairs (N·K·T), and the
/// base values (N·K).
pub fn model_rows(request: &Request<'_>, k: usize) -> f64 {
    let (n, t, k) = (request.batch_size() as f64, request.num_targets() as f64, k as f64);
    n + k + n * k * t + n * k
}

pub fn explain(ctx: &Context<'_>, request: &Request<'_>, explained: usize) -> Result<(), Error> {
    let inputs = request.inputs();
    let background =
        request.background().ok_or_else(|| Error::failed_precondition("background: Deep SHAP needs a background set"))?;
    let k_rows = background[explained].rows();
    let (layer, at_x) = ctx.layer_activation(inputs, layer_param(request)?).map_err(as_parameter_error)?;
    let (_, at_b) = ctx.layer_activation(background, Some(&layer))?;
    let (at_x, at_b) = (at_x.view(), at_b.view());
    let embedding = Embedding::of(&layer, at_x.shape, request.input_name(explained), inputs[explained].shape)?;
    let (n, t, out_row, layer_row) =
        (request.batch_size(), request.num_targets(), request.output_row_size(), embedding.layer_row);

    let results = ctx.attributions(explained)?;
    let mut layer_results = embedding.layer_results(ctx, request)?;
    // One row per (input row, background row, target); the background's rows change slowest
    // within an input row so that a batch shares its E(x) side.
    let total = n * k_rows * t;
    let chunk = request.max_batch_rows().min(CHUNK_BYTES / (8 * layer_row).max(1)).clamp(1, total.max(1));
    let (mut values, mut references, mut seeds, mut owners) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut held = HeldRows::new(request);
    let mut delta = vec![0f32; layer_row];
    let mut ticker = ctx.ticker();
    let weight = 1.0 / k_rows as f32;
    let mut first = 0;
    while first < total {
        ctx.check_cancelled()?;
        let rows = chunk.min(total - first);
        values.clear();
        references.clear();
        seeds.clear();
        owners.clear();
        held.clear();
        for r in first..first + rows {
            ticker.tick(2 * layer_row)?;
            let (i, rest) = (r / (k_rows * t), r % (k_rows * t));
            let (k, j) = (rest / t, rest % t);
            values.extend_from_slice(&at_x.data[i * layer_row..(i + 1) * layer_row]);
            references.extend_from_slice(&at_b.data[k * layer_row..(k + 1) * layer_row]);
            let seed_start = seeds.len();
            seeds.resize(seed_start + out_row, 0.0);
            seeds[seed_start + request.targets(i)[j] as usize] = 1.0;
            held.push(request, i);
            owners.push((i, k, j));
        }
        let layer_shape = with_rows(at_x.shape, rows);
        let seed_shape = [rows as i64, out_row as i64];
        let held_views = held.views();
        let multipliers = ctx.layer_deeplift_at(
            &held_views,
            &layer,
            TensorView::new(&layer_shape, &values),
            TensorView::new(&layer_shape, &references),
            TensorView::new(&seed_shape, &seeds),
        )?;
        let multipliers = multipliers.data();
        for (r, &(i, k, j)) in owners.iter().enumerate() {
            ticker.tick(2 * layer_row)?;
            let (x, b) = (&at_x.data[i * layer_row..(i + 1) * layer_row], &at_b.data[k * layer_row..(k + 1) * layer_row]);
            delta.iter_mut().zip(x.iter().zip(b)).for_each(|(d, (x, b))| *d = x - b);
            let pair = i * t + j;
            embedding.add_weighted(
                &mut results[pair * embedding.input_row..(pair + 1) * embedding.input_row],
                layer_results.as_deref_mut().map(|l| &mut l[pair * layer_row..(pair + 1) * layer_row]),
                &multipliers[r * layer_row..(r + 1) * layer_row],
                &delta,
                weight,
            );
        }
        first += rows;
    }
    // Base values: the mean output over the background rows, each with row n's held inputs.
    let mut base = vec![0f64; n * out_row];
    let explained_background = background[explained];
    for i in 0..n {
        ctx.check_cancelled()?;
        let sources = vec![i; k_rows];
        let outputs = ctx.forward_with_fixed(request, explained, explained_background, &sources)?;
        for (e, &v) in outputs.data().iter().enumerate() {
            base[i * out_row + e % out_row] += v as f64 / k_rows as f64;
        }
    }
    report_residual(ctx, request, results, |i, target| base[i * out_row + target], "completeness_residual")
}
