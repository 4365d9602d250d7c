//! Integrated gradients at a layer (captum's `LayerIntegratedGradients`), for inputs that have
//! no gradient themselves: token ids and category codes, attributed at their embedding.
//!
//! With E(x) the layer's value for input x (the word embedding of the ids) and b the baseline
//! input, the path runs between the two embeddings, not between ids:
//! φ_layer = (E(x) − E(b)) · ∫₀¹ ∇_E f(E(b) + α(E(x) − E(b))) dα, by the same quadrature rules
//! as input IG. The host evaluates the model cut at the layer (ABI 1.5 `layer_gradient_at`),
//! so path points need not be embeddings of any ids; every other input (the attention mask)
//! keeps the request's values. The result per input position is φ_layer summed over the
//! embedding ([`explaind_gradient_methods::layer`]). Completeness holds at the layer:
//! Σφ = f(x) − f(b) up to the quadrature's error, reported as `convergence_delta`.
//!
//! The baseline of an integer input is `baseline` (the pad id) at every position except where
//! the input holds one of `keep_ids` ([CLS] and [SEP], kept as captum's tutorials do), or a row
//! of the background (`baseline_row`). Each input row thus has its own baseline row.

use explaind_gradient_methods::layer::{Embedding, HeldRows, as_parameter_error, layer_param, report_residual, with_rows};
use explaind_plugin_sdk::{Context, Error, Request, TensorView};

/// The most bytes of layer values one gradient batch holds.
pub const CHUNK_BYTES: usize = 32 << 20;

/// Baseline rows of every model input, [N, row] each: the explained input's replaced (by
/// `baseline` except at `keep_ids`, or by a background row), the others the request's.
pub fn baselines(
    request: &Request<'_>,
    explained: usize,
    background_row: Option<usize>,
    baseline: f32,
) -> Result<Vec<Vec<f32>>, Error> {
    let x = request.inputs()[explained];
    if request.input_is_integer(explained) && baseline.fract() != 0.0 {
        return Err(Error::invalid_argument(format!(
            "parameters.baseline: input {:?} takes integers (token ids); the baseline is an id, got {baseline}",
            request.input_name(explained)
        )));
    }
    let keep_ids = request.integers("keep_ids")?.unwrap_or(&[]);
    let replaced: Vec<f32> = match background_row {
        Some(k) => {
            let row = request.background().expect("baseline_row is checked against the background")[explained].row(k);
            (0..x.rows()).flat_map(|_| row.iter().copied()).collect()
        }
        None => x.data.iter().map(|&v| if keep_ids.contains(&(v as i64)) { v } else { baseline }).collect(),
    };
    Ok(request
        .inputs()
        .iter()
        .enumerate()
        .map(|(i, input)| if i == explained { replaced.clone() } else { input.data.to_vec() })
        .collect())
}

/// Layer IG for every (input row, target): writes the attributions of the explained input, the
/// base values f(b), `convergence_delta`, and `layer_attributions` when asked.
pub fn explain(
    ctx: &Context<'_>,
    request: &Request<'_>,
    explained: usize,
    baselines: &[Vec<f32>],
    (alphas, weights): (&[f64], &[f64]),
) -> Result<(), Error> {
    let inputs = request.inputs();
    let baseline_views: Vec<TensorView> = inputs.iter().zip(baselines).map(|(x, b)| TensorView::new(x.shape, b)).collect();
    let (layer, at_x) = ctx.layer_activation(inputs, layer_param(request)?).map_err(as_parameter_error)?;
    let (_, at_b) = ctx.layer_activation(&baseline_views, Some(&layer))?;
    let (at_x, at_b) = (at_x.view(), at_b.view());
    let input = inputs[explained];
    let embedding = Embedding::of(&layer, at_x.shape, request.input_name(explained), input.shape)?;
    let delta: Vec<f32> = at_x.data.iter().zip(at_b.data).map(|(x, b)| x - b).collect();
    let (n, t, out_row, layer_row) =
        (request.batch_size(), request.num_targets(), request.output_row_size(), embedding.layer_row);

    let results = ctx.attributions(explained)?;
    let mut layer_results = embedding.layer_results(ctx, request)?;
    // One gradient row per (input row, target, path point), in batches bounded by rows and
    // bytes; every model input keeps its row's values.
    let steps = alphas.len();
    let total = n * t * steps;
    let chunk = request.max_batch_rows().min(CHUNK_BYTES / (8 * layer_row).max(1)).clamp(1, total.max(1));
    let (mut values, mut seeds, mut owners) = (Vec::new(), Vec::new(), Vec::new());
    let mut held = HeldRows::new(request);
    let mut ticker = ctx.ticker();
    let mut first = 0;
    while first < total {
        ctx.check_cancelled()?;
        let rows = chunk.min(total - first);
        values.clear();
        seeds.clear();
        owners.clear();
        held.clear();
        for r in first..first + rows {
            ticker.tick(layer_row)?;
            let (pair, s) = (r / steps, r % steps);
            let (i, j) = (pair / t, pair % t);
            let alpha = alphas[s] as f32;
            let span = i * layer_row..(i + 1) * layer_row;
            values.extend(at_b.data[span.clone()].iter().zip(&delta[span]).map(|(b, d)| b + alpha * d));
            let seed_start = seeds.len();
            seeds.resize(seed_start + out_row, 0.0);
            seeds[seed_start + request.targets(i)[j] as usize] = 1.0;
            held.push(request, i);
            owners.push((i, j, weights[s] as f32));
        }
        let value_shape = with_rows(at_x.shape, rows);
        let seed_shape = [rows as i64, out_row as i64];
        let held_views = held.views();
        let gradient = ctx.layer_gradient_at(
            &held_views,
            &layer,
            TensorView::new(&value_shape, &values),
            TensorView::new(&seed_shape, &seeds),
        )?;
        let gradient = gradient.data();
        for (r, &(i, j, w)) in owners.iter().enumerate() {
            ticker.tick(layer_row)?;
            let k = i * t + j;
            embedding.add_weighted(
                &mut results[k * embedding.input_row..(k + 1) * embedding.input_row],
                layer_results.as_deref_mut().map(|l| &mut l[k * layer_row..(k + 1) * layer_row]),
                &gradient[r * layer_row..(r + 1) * layer_row],
                &delta[i * layer_row..(i + 1) * layer_row],
                w,
            );
        }
        first += rows;
    }
    // Each row has its own baseline, so f(b) is per row.
    let at_baseline = ctx.forward(&baseline_views)?;
    let at_baseline = at_baseline.data();
    report_residual(ctx, request, results, |i, target| at_baseline[i * out_row + target] as f64, "convergence_delta")
}

/// Model rows of a layer-IG request: the layer at the inputs and at the baselines (2N), the
/// gradient rows (N·T·steps) and f(b) (N).
pub fn model_rows(request: &Request<'_>, steps: usize) -> f64 {
    let (n, t) = (request.batch_size() as f64, request.num_targets() as f64);
    3.0 * n + n * t * steps as f64
}
