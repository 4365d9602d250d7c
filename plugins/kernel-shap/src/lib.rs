//! Kernel SHAP explainer plugin: shap's `KernelExplainer` estimator, minus its default feature
//! selection, with the efficiency constraint enforced exactly.
//!
//! For an input x, background rows b_1..b_K and M feature groups:
//! - E[f] is the mean model output over the background; the base value is link(E[f]).
//! - Groups whose elements equal x's in every background row do not vary: φ = 0, and they
//!   are left out of M (as in shap).
//! - The budget (`nsamples`, default 2M + 2048) is capped at 2^M − 2. Coalition sizes are
//!   enumerated in full, smallest first, while the budget covers them; the rest is sampled in
//!   complement pairs, and a repeated draw adds weight instead of a row ([`coalitions`]).
//! - The value of a coalition S is the mean over the background of f(x on S, b_k elsewhere),
//!   with the link (identity or logit) applied after averaging.
//! - φ is the weighted least-squares fit of the Shapley kernel without intercept, with
//!   Σφ = link(f(x)) − link(E[f]) enforced exactly by eliminating one variable ([`solve`]).
//!   When the budget enumerates every coalition, φ are the exact (interventional) Shapley
//!   values over the background.
//!
//! Groups: by default every element of an input row is a feature. `mask` (one integer per
//! element of a row) groups elements by id; `patch=[h, w]` cuts the last axes into a grid
//! (channels share a patch). A group's φ is spread evenly over its elements, so the
//! attributions (shape [N, T, *row]) still sum to link(f(x)) − link(E[f]); the extra
//! `group_values` [N, T, G] has the values per group, and `groups` (the row's shape) the group
//! of each element.
//!
//! Error estimate: the extra `standard_errors` [N, T, G], a sandwich (HC0) estimate over the
//! randomly sampled coalitions of the regression (enumerated coalitions carry no sampling
//! error, so a full enumeration reports 0).
//!
//! Feature selection is off by default. `num_features=k` keeps the k groups with the largest
//! |φ| of the full fit and refits with the others at 0 (efficiency still exact). This differs
//! from shap's `l1_reg="num_features(k)"`, which picks them along a LARS path.
//!
//! Baseline instead of a background: `baseline=v` replaces absent features with the value v
//! (one background row of v everywhere), which is how token models are explained: v is the
//! pad or mask id, and the players are the token positions. Integer inputs (token ids,
//! categorical codes) are read and written exactly (the SDK's typed inputs).
//!
//! Models with several inputs: the request explains one of them (`explained_inputs`), and the
//! others (an attention mask) keep the request's values in every row; E[f] is then taken per
//! input row, with that row's fixed inputs. Sampling is seeded by `seed` and split per input,
//! so results are reproducible.

pub mod coalitions;
pub mod groups;
pub mod rng;
pub mod solve;

use explaind_plugin_math::{CholeskyError, Pace};
use explaind_plugin_sdk::{
    Context, Cost, Error, Explainer, ParamDefault, ParamKind, ParamValue, PluginInfo, Request, TensorView, export_plugin,
};
use groups::Groups;
use rng::Rng;

pub struct KernelShap;

/// Most coalitions a request may ask for: 2^40, far past any budget a model can evaluate, and
/// far past 2^M − 2 for the M up to 40 where a client may ask for "everything" this way.
pub const MAX_NSAMPLES: f64 = (1u64 << 40) as f64;

/// Most rows per forward call the plugin builds.
pub const MAX_BATCH_ROWS: usize = 1 << 20;

/// Model rows and bytes of the host's default per-request budget, used only to tell which of
/// the two a request strains more (for the driver the host names when it refuses).
const DEFAULT_BUDGET: (f64, f64) = (20e6, 2.0 * (1u64 << 30) as f64);

/// What absent features take: background rows, or one row of a constant (`baseline`).
enum Replacement<'a> {
    Rows(TensorView<'a>),
    Constant { shape: [i64; 2], row: Vec<f32> },
}

impl Replacement<'_> {
    fn view(&self) -> TensorView<'_> {
        match self {
            Replacement::Rows(view) => *view,
            Replacement::Constant { shape, row } => TensorView::new(shape, row),
        }
    }
}

/// What a request asks for, checked: the estimate and the explanation read the same.
struct Settings<'a> {
    /// The model input the request explains; any other is held at the request's values.
    explained: usize,
    input: TensorView<'a>,
    background: Replacement<'a>,
    link: Link,
    nsamples: Option<i64>,
    seed: u64,
    num_features: Option<i64>,
    batch_rows: usize,
    groups: Groups,
}

fn settings<'a>(request: &Request<'a>) -> Result<Settings<'a>, Error> {
    let explained = request.single_explained_input("kernel-shap")?;
    let input = request.inputs()[explained];
    let item_shape: Vec<usize> = input.shape[1..].iter().map(|&d| d as usize).collect();
    let row_len = input.row_len();
    let baseline_value = match request.param("baseline") {
        ParamValue::None => None,
        _ => Some(request.number("baseline")?),
    };
    let background = match (baseline_value, request.background()) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid_argument("parameters.baseline: give a background or a baseline, not both"));
        }
        (Some(value), None) => {
            Replacement::Constant { shape: [1, row_len as i64], row: vec![baseline(request, explained, value)?; row_len] }
        }
        (None, background) => {
            Replacement::Rows(background.and_then(|b| b.get(explained).copied()).filter(|b| b.rows() > 0).ok_or_else(|| {
                Error::failed_precondition("background: kernel-shap needs background rows or a `baseline` value")
            })?)
        }
    };

    let link = Link::parse(request.text("link")?.unwrap_or(""))?;
    let nsamples = request.integer("nsamples")?;
    if let Some(v) = nsamples.filter(|&v| v < 1 || v as f64 > MAX_NSAMPLES) {
        return Err(Error::invalid_argument(format!("parameters.nsamples: the budget must be 1 to 2^40, got {v}")));
    }
    let seed = request.integer("seed")?.unwrap_or(0) as u64;
    let num_features = request.integer("num_features")?;
    if let Some(k) = num_features.filter(|&k| k < 1) {
        return Err(Error::invalid_argument(format!("parameters.num_features: must be at least 1, got {k}")));
    }
    let batch_rows = match request.integer("batch_rows")?.unwrap_or(0) {
        v if v < 0 || v as usize > MAX_BATCH_ROWS => {
            return Err(Error::invalid_argument(format!("parameters.batch_rows: must be 0 to 2^20, got {v}")));
        }
        0 => request.max_batch_rows(),
        v => v as usize,
    };
    let groups = match (request.integers("mask")?, request.integers("patch")?) {
        (Some(_), Some(_)) => {
            return Err(Error::invalid_argument("parameters.patch: give mask or patch, not both"));
        }
        (Some(mask), None) => Groups::from_mask(mask, row_len, &item_shape)?,
        (None, Some(patch)) => Groups::from_patch(patch, &item_shape)?,
        (None, None) => Groups::singletons(row_len),
    };
    Ok(Settings { explained, input, background, link, nsamples, seed, num_features, batch_rows, groups })
}

/// The `baseline` value, checked: within float32's exact range, and a whole number for an
/// integer input (a token id, a category code).
fn baseline(request: &Request<'_>, explained: usize, value: f64) -> Result<f32, Error> {
    if !(-1e30..=1e30).contains(&value) {
        return Err(Error::invalid_argument(format!("parameters.baseline: must be within +-1e30, got {value}")));
    }
    if request.input_is_integer(explained) && (value.fract() != 0.0 || value.abs() > (1 << 24) as f64) {
        return Err(Error::invalid_argument(format!(
            "parameters.baseline: input {:?} takes integers (token ids, codes); the baseline is the id absent features \
             take, a whole number up to 2^24, got {value}",
            request.input_name(explained)
        )));
    }
    Ok(value as f32)
}

/// Err(cancelled) when the request is cancelled, asked about once per stretch of work in the
/// loops over groups, rows, targets and results (their lengths are the request's).
fn pace_results(pace: &mut Pace<'_>, work: usize) -> Result<(), Error> {
    if pace.stop(work) { Err(Error::cancelled()) } else { Ok(()) }
}

/// A coalition-building or regression failure as the plugin reports it.
fn stopped(what: &str, e: CholeskyError) -> Error {
    match e {
        CholeskyError::Cancelled => Error::cancelled(),
        other => Error::failed_precondition(format!(
            "{what}: {other} (the model's outputs over the coalitions are not finite, or the budget is far too small)"
        )),
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
pub enum Link {
    Identity,
    Logit,
}

impl Link {
    pub fn parse(name: &str) -> Result<Self, Error> {
        match name {
            "identity" => Ok(Link::Identity),
            "logit" => Ok(Link::Logit),
            other => Err(Error::invalid_argument(format!("parameters.link: expected \"identity\" or \"logit\", got {other:?}"))),
        }
    }
    fn apply(self, v: f64) -> Result<f64, Error> {
        match self {
            Link::Identity => Ok(v),
            Link::Logit if v > 0.0 && v < 1.0 => Ok((v / (1.0 - v)).ln()),
            Link::Logit => Err(Error::invalid_argument(format!(
                "parameters.link: logit needs model outputs strictly between 0 and 1 (probabilities), got {v}"
            ))),
        }
    }
}

/// One input's work: its varying groups and coalitions, and the summed outputs per coalition.
struct Job {
    varying: Vec<usize>,
    coalitions: Option<coalitions::Coalitions>,
    sums: Vec<f64>,
}

impl Explainer for KernelShap {
    fn info() -> PluginInfo {
        PluginInfo::new("kernel-shap", env!("CARGO_PKG_VERSION"))
            .description(
                "Kernel SHAP (shap's KernelExplainer estimator) over the request's background: Shapley \
                 kernel weights, full enumeration of the sizes the budget covers then paired sampling, \
                 weighted least squares with the efficiency constraint exact. Base values are \
                 link(E f); extras: `standard_errors` and `group_values` [N, T, G], `groups` (group \
                 of each element), `completeness_residual` [N, T]. A group's value is spread evenly \
                 over its elements.",
            )
            .reentrant()
            .typed_inputs()
            .param(
                "baseline",
                ParamKind::Number,
                ParamDefault::Optional,
                "Instead of a background: the value absent features take (one background row of it), \
                 within +-1e30; for token ids, the pad or mask id.",
            )
            .range(-1e30, 1e30)
            .param(
                "nsamples",
                ParamKind::Integer,
                ParamDefault::Optional,
                "Coalitions to evaluate (the budget), 1 to 2^40; default 2M + 2048, capped at 2^M - 2 \
                 (which enumerates every coalition and gives exact Shapley values).",
            )
            .range(1.0, MAX_NSAMPLES)
            .param(
                "link",
                ParamKind::Text,
                ParamDefault::Text("identity".into()),
                "\"identity\" or \"logit\", applied after averaging over the background.",
            )
            .max_len(32)
            .param("seed", ParamKind::Integer, ParamDefault::Integer(0), "Seed of the coalition sampling.")
            .range(i64::MIN as f64, i64::MAX as f64)
            .param(
                "mask",
                ParamKind::Integers,
                ParamDefault::Optional,
                "Group id (>= 0) of every element of one input row, row-major: elements with the same \
                 id are switched together (column groups, superpixels).",
            )
            .range(0.0, i64::MAX as f64)
            .max_len(1 << 26)
            .param(
                "patch",
                ParamKind::Integers,
                ParamDefault::Optional,
                "Grid patches over the last axes, e.g. [2, 2] for an image: each patch (all channels) is one group.",
            )
            .range(1.0, i32::MAX as f64)
            .max_len(32)
            .param(
                "num_features",
                ParamKind::Integer,
                ParamDefault::Optional,
                "Keep only the k groups with the largest |value| of the full fit and refit; default: no selection.",
            )
            .range(1.0, i32::MAX as f64)
            .param(
                "batch_rows",
                ParamKind::Integer,
                ParamDefault::Integer(0),
                "Rows per forward call the plugin builds (bounds its memory), 0 to 2^20; 0: the server's max batch rows.",
            )
            .range(0.0, MAX_BATCH_ROWS as f64)
    }

    fn create() -> Result<Self, Error> {
        Ok(KernelShap)
    }

    /// Upper bounds, with every group taken to vary (M = G groups) and B = min(nsamples or
    /// 2G + 2048, 2^G − 2) coalitions per input (none when G < 2):
    /// - rows: K (E f over the background) + N·B·K (every coalition against every background row);
    /// - memory: the coalitions of all N inputs (mask words, weight, T sums each), the tables of
    ///   one build, a batch of rows, the regression's (7 + T)·(G − 1)² matrices of one input,
    ///   and the per-group results.
    fn estimate(&self, request: &Request<'_>) -> Result<Cost, Error> {
        let s = settings(request)?;
        let (n, t, r) = (request.batch_size() as f64, request.num_targets() as f64, request.output_row_size() as f64);
        let (k, row, g) = (s.background.view().rows() as f64, s.input.row_len() as f64, s.groups.count() as f64);
        let budget = if g < 2.0 { 0.0 } else { s.nsamples.map_or(2.0 * g + 2048.0, |v| v as f64).min(2f64.powf(g) - 2.0) };
        // E f once, or once per input row when other inputs are held at each row's values.
        let null_rows = if request.inputs().len() > 1 { n * k } else { k };
        let rows = null_rows + n * budget * k;
        let chunk = (s.batch_rows as f64).min(rows).max(1.0);
        let words = (g / 64.0).ceil();
        let coalitions = n * budget * (8.0 * words + 8.0 + 8.0 * t) + budget * (8.0 * words + 8.0 + 16.0) + 8.0 * g;
        let batch = chunk * (4.0 * row + 16.0 + 4.0 * r) + 8.0 * row;
        let p = (g - 1.0).max(0.0);
        // The regression's matrices: 7 of (G − 1)² for the groups alone, one per target more.
        let groups_only = 8.0 * 7.0 * p * p;
        let regression = groups_only + 8.0 * t * p * p + 8.0 * t * budget;
        let fixed = 8.0 * r + 24.0 * row + 16.0 * n * t * (g + 1.0);
        let bytes = coalitions + batch + regression + fixed;
        let cost = Cost::new(rows, bytes);
        let rows_strain = rows / DEFAULT_BUDGET.0;
        let bytes_strain = bytes / DEFAULT_BUDGET.1;
        let groups_param = if request.integers("mask")?.is_some() { "mask" } else { "patch" };
        Ok(if bytes_strain > rows_strain && groups_only > bytes / 2.0 {
            cost.driven_by(groups_param)
        } else {
            // The budget is the knob for the rows, set or defaulted (it grows with the groups).
            cost.driven_by("nsamples")
        })
    }

    fn explain(&self, ctx: &Context<'_>, request: &Request<'_>) -> Result<(), Error> {
        let Settings { explained, input, background, link, nsamples, seed, num_features, batch_rows, groups } =
            settings(request)?;
        let background = background.view();
        let row_len = input.row_len();
        let g_count = groups.count();

        let (n_inputs, n_targets, out_row) = (request.batch_size(), request.num_targets(), request.output_row_size());
        let k_rows = background.rows();

        // E[f] over the background, every output element: once, or per input row when the
        // model's other inputs are held at that row's values.
        let per_row = request.inputs().len() > 1;
        let mut fnull = vec![0f64; if per_row { n_inputs * out_row } else { out_row }];
        let mut batch_shape = input.shape.to_vec();
        for n in 0..if per_row { n_inputs } else { 1 } {
            let mut first = 0;
            while first < k_rows {
                ctx.check_cancelled()?;
                let rows = batch_rows.min(k_rows - first);
                batch_shape[0] = rows as i64;
                let rows_of_background =
                    TensorView::new(&batch_shape, &background.data[first * row_len..(first + rows) * row_len]);
                let out = ctx.forward_with_fixed(request, explained, rows_of_background, &vec![n; rows])?;
                for (i, v) in out.data().iter().enumerate() {
                    fnull[n * out_row + i % out_row] += *v as f64;
                }
                first += rows;
            }
        }
        fnull.iter_mut().for_each(|v| *v /= k_rows as f64);
        let fnull_of = |n: usize| if per_row { &fnull[n * out_row..(n + 1) * out_row] } else { &fnull[..] };

        // Coalitions per input (the varying groups depend on x).
        let cancelled = || ctx.is_cancelled();
        let mut pace = Pace::new(&cancelled);
        let mut jobs = Vec::with_capacity(n_inputs);
        for n in 0..n_inputs {
            let x = input.row(n);
            let mut varying = Vec::new();
            for g in 0..g_count {
                pace_results(&mut pace, groups.members(g).len() * k_rows)?;
                if groups.members(g).iter().any(|&e| (0..k_rows).any(|k| background.row(k)[e] != x[e])) {
                    varying.push(g);
                }
            }
            let m = varying.len();
            let coalitions = if m >= 2 {
                let budget = nsamples.map_or(coalitions::default_budget(m), |v| v as u64).min(coalitions::max_coalitions(m));
                let built = coalitions::build(m, budget, &mut Rng::new(seed, n as u64), &cancelled);
                Some(built.map_err(|e| match e {
                    coalitions::Stop::Cancelled => Error::cancelled(),
                    coalitions::Stop::TooLarge => Error::invalid_argument(format!(
                        "parameters.nsamples: {budget} coalitions for input {n} is more than this plugin can index"
                    )),
                })?)
            } else {
                None
            };
            let count = coalitions.as_ref().map_or(0, |c| c.len());
            let sums = count
                .checked_mul(n_targets)
                .ok_or_else(|| Error::invalid_argument("parameters.nsamples: too many coalitions"))?;
            jobs.push(Job { varying, coalitions, sums: vec![0.0; sums] });
        }

        // Every (input, coalition, background row) is one model row; rows of different inputs
        // share batches. A cursor walks them so filling a batch allocates nothing.
        let total_rows = jobs
            .iter()
            .try_fold(0usize, |acc, j| {
                j.coalitions.as_ref().map_or(0, |c| c.len()).checked_mul(k_rows).and_then(|r| acc.checked_add(r))
            })
            .ok_or_else(|| Error::invalid_argument("parameters.nsamples: coalitions x background rows overflow"))?;
        let chunk = batch_rows.min(total_rows).max(1);
        let mut batch = vec![0f32; chunk * row_len];
        let mut owners = vec![(0usize, 0usize); chunk];
        let mut sources = vec![0usize; chunk];
        let mut from_x: Vec<usize> = Vec::with_capacity(row_len);
        let mut cursor = (0usize, 0usize, 0usize); // (input, coalition, background row)
        let mut done = 0;
        while done < total_rows {
            ctx.check_cancelled()?;
            let rows = chunk.min(total_rows - done);
            for r in 0..rows {
                pace_results(&mut pace, row_len)?;
                while jobs[cursor.0].coalitions.as_ref().is_none_or(|c| cursor.1 >= c.len()) {
                    cursor = (cursor.0 + 1, 0, 0);
                }
                let (n, c, k) = cursor;
                if k == 0 {
                    // The elements a coalition takes from x, once for its K rows.
                    let job = &jobs[n];
                    let co = job.coalitions.as_ref().unwrap();
                    from_x.clear();
                    for (w, &word) in co.mask(c).iter().enumerate() {
                        let mut bits = word;
                        while bits != 0 {
                            let j = w * 64 + bits.trailing_zeros() as usize;
                            bits &= bits - 1;
                            from_x.extend_from_slice(groups.members(job.varying[j]));
                        }
                    }
                }
                let row = &mut batch[r * row_len..(r + 1) * row_len];
                row.copy_from_slice(background.row(k));
                let x = input.row(n);
                for &e in &from_x {
                    row[e] = x[e];
                }
                owners[r] = (n, c);
                sources[r] = n;
                cursor = if k + 1 < k_rows { (n, c, k + 1) } else { (n, c + 1, 0) };
            }
            batch_shape[0] = rows as i64;
            let coalition_rows = TensorView::new(&batch_shape, &batch[..rows * row_len]);
            let out = ctx.forward_with_fixed(request, explained, coalition_rows, &sources[..rows])?;
            let out = out.data();
            for (r, &(n, c)) in owners[..rows].iter().enumerate() {
                let targets = request.targets(n);
                let sums = &mut jobs[n].sums[c * n_targets..(c + 1) * n_targets];
                for (s, &t) in sums.iter_mut().zip(targets) {
                    *s += out[r * out_row + t as usize] as f64;
                }
            }
            done += rows;
        }

        // Regressions, then results.
        let mut group_values = vec![0f64; n_inputs * n_targets * g_count];
        let mut standard_errors = vec![0f64; n_inputs * n_targets * g_count];
        let mut base = vec![0f64; n_inputs * n_targets];
        let mut residual = vec![0f64; n_inputs * n_targets];
        let mut regularized = false;
        for (n, job) in jobs.iter().enumerate() {
            ctx.check_cancelled()?;
            let m = job.varying.len();
            let targets = request.targets(n);
            // Per target: link(E f), link(f(x)) − link(E f), and the regression's y.
            let mut totals = Vec::with_capacity(n_targets);
            for (t, &target) in targets.iter().enumerate() {
                let e_f = link.apply(fnull_of(n)[target as usize])?;
                base[n * n_targets + t] = e_f;
                totals.push(link.apply(request.outputs().row(n)[target as usize] as f64)? - e_f);
            }
            let Some(co) = &job.coalitions else {
                // Zero or one varying group: that group gets everything.
                if let Some(&g) = job.varying.first() {
                    for (t, total) in totals.iter().enumerate() {
                        group_values[(n * n_targets + t) * g_count + g] = *total;
                    }
                }
                continue;
            };
            let mut ys = vec![0f64; n_targets * co.len()];
            for t in 0..n_targets {
                pace_results(&mut pace, co.len())?;
                let e_f = base[n * n_targets + t];
                for c in 0..co.len() {
                    ys[t * co.len() + c] = link.apply(job.sums[c * n_targets + t] / k_rows as f64)? - e_f;
                }
            }
            let y_of = |t: usize| &ys[t * co.len()..(t + 1) * co.len()];
            let z = |c: usize, j: usize| co.has(c, j);
            let all: Vec<usize> = (0..m).collect();
            let design = solve::Design { z: &z, rows: co.len(), weights: &co.weights, active: &all };
            let y_refs: Vec<&[f64]> = (0..n_targets).map(y_of).collect();
            let full = solve::fit(&design, &y_refs, &totals, co.enumerated, &cancelled).map_err(|e| stopped("regression", e))?;
            regularized |= full.jitter > 0.0;
            // A refit on `keep` groups costs about coalitions × keep² multiply-adds.
            let refit_work = num_features.map_or(0, |keep| (keep as usize).min(m).pow(2) * (co.len() + keep as usize));
            for (t, &total) in totals.iter().enumerate() {
                pace_results(&mut pace, 4 * m + refit_work)?;
                let k = n * n_targets + t;
                let (mut phi, mut se, mut active) = (full.phi[t].clone(), full.se[t].clone(), all.clone());
                if let Some(keep) = num_features.map(|v| v as usize).filter(|&v| v < m) {
                    let mut order = all.clone();
                    order.sort_by(|&a, &b| phi[b].abs().total_cmp(&phi[a].abs()).then(a.cmp(&b)));
                    active = order[..keep].to_vec();
                    active.sort_unstable();
                    if active.len() == 1 {
                        phi = ndarray::Array1::from_elem(1, total);
                        se = ndarray::Array1::zeros(1);
                    } else {
                        let design = solve::Design { z: &z, rows: co.len(), weights: &co.weights, active: &active };
                        let refit = solve::fit(&design, &[y_of(t)], &[total], co.enumerated, &cancelled)
                            .map_err(|e| stopped("parameters.num_features: the refit", e))?;
                        regularized |= refit.jitter > 0.0;
                        (phi, se) = (refit.phi[0].clone(), refit.se[0].clone());
                    }
                }
                for (i, &j) in active.iter().enumerate() {
                    group_values[k * g_count + job.varying[j]] = phi[i];
                    standard_errors[k * g_count + job.varying[j]] = se[i];
                }
            }
        }
        for (k, r) in residual.iter_mut().enumerate() {
            pace_results(&mut pace, g_count)?;
            let n = k / n_targets;
            let total = request.outputs().row(n)[request.targets(n)[k % n_targets] as usize] as f64;
            *r = group_values[k * g_count..(k + 1) * g_count].iter().sum::<f64>() - (link.apply(total)? - base[k]);
        }

        let attributions = ctx.attributions(explained)?;
        for (k, out) in attributions.chunks_exact_mut(row_len).enumerate() {
            pace_results(&mut pace, row_len)?;
            for (e, v) in out.iter_mut().enumerate() {
                let g = groups.of_element[e];
                *v = (group_values[k * g_count + g] / groups.members(g).len() as f64) as f32;
            }
        }
        for (o, v) in ctx.base_values()?.iter_mut().zip(&base) {
            *o = *v as f32;
        }
        let nt_g = [n_inputs as i64, n_targets as i64, g_count as i64];
        for (o, v) in ctx.extra("group_values", &nt_g)?.iter_mut().zip(&group_values) {
            *o = *v as f32;
        }
        for (o, v) in ctx.extra("standard_errors", &nt_g)?.iter_mut().zip(&standard_errors) {
            *o = *v as f32;
        }
        for (o, v) in ctx.extra("completeness_residual", &[n_inputs as i64, n_targets as i64])?.iter_mut().zip(&residual) {
            *o = *v as f32;
        }
        for (o, &g) in ctx.extra("groups", &input.shape[1..])?.iter_mut().zip(&groups.of_element) {
            *o = g as f32;
        }
        let list = |f: &dyn Fn(&Job) -> usize| jobs.iter().map(f).map(|v| v.to_string()).collect::<Vec<_>>().join(",");
        ctx.info("groups", &g_count.to_string())?;
        ctx.info("varying_groups", &list(&|j| j.varying.len()))?;
        ctx.info("coalitions", &list(&|j| j.coalitions.as_ref().map_or(0, |c| c.len())))?;
        ctx.info("enumerated_coalitions", &list(&|j| j.coalitions.as_ref().map_or(0, |c| c.enumerated)))?;
        ctx.info("link", if link == Link::Logit { "logit" } else { "identity" })?;
        if regularized {
            ctx.info("regularized", "the normal equations were singular (budget too small?): a tiny ridge was added")?;
        }
        Ok(())
    }
}

export_plugin!(KernelShap);

#[cfg(test)]
mod tests {
    use explaind_plugin_sdk::testing::{FakeRequest, Value};

    #[test]
    fn every_parameter_is_bounded() {
        let plugin = explaind_plugin_sdk::plugin_under_test!();
        plugin.assert_every_parameter_is_bounded();
        assert_eq!(plugin.param("nsamples").range, (1.0, (1u64 << 40) as f64));
    }

    #[test]
    fn estimate_counts_every_coalition_against_every_background_row() {
        let plugin = explaind_plugin_sdk::plugin_under_test!();
        // N = 2 rows of 4 features (G = 4), T = 1, K = 3 background rows. Default budget:
        // min(2·4 + 2048, 2^4 − 2) = 14 coalitions per input. Rows: 3 (E f) + 2·14·3 = 87.
        // Memory: coalitions 2·14·(8 + 8 + 8) + one build 14·(8 + 8 + 16) + 8·4 = 1152;
        // a batch of min(64, 87) rows of 4·4 + 16 + 4·1 = 2304, + 8·4 = 2336; regression
        // 8·(7 + 1)·3² + 8·14 = 688; fixed 8·1 + 24·4 + 16·2·1·5 = 264. Total 4440.
        let request = FakeRequest::zeros(&[2, 4], 1).background_rows(3);
        let cost = plugin.estimate(&request).unwrap();
        assert_eq!((cost.model_rows, cost.scratch_bytes), (87.0, 4440.0));
        assert_eq!(cost.driver.as_deref(), Some("nsamples"), "the budget's knob, even when defaulted");
        // nsamples = 10: 3 + 2·10·3 = 63 rows, driven by nsamples.
        let cost = plugin.estimate(&request.param("nsamples", Value::Integer(10))).unwrap();
        assert_eq!(cost.model_rows, 63.0);
        assert_eq!(cost.driver.as_deref(), Some("nsamples"));
    }

    #[test]
    fn huge_budgets_give_huge_estimates_or_refusals_never_a_panic() {
        let plugin = explaind_plugin_sdk::plugin_under_test!();
        // 64 features: 2^64 − 2 coalitions exist, so nsamples = 2^40 is taken at its word:
        // 100 + 1·2^40·100 rows.
        let wide = FakeRequest::zeros(&[1, 64], 1).background_rows(100);
        let cost = plugin.estimate(&wide.param("nsamples", Value::Integer(1 << 40))).unwrap();
        assert_eq!(cost.model_rows, 100.0 + (1u64 << 40) as f64 * 100.0);
        assert!(cost.model_rows > 1e12 && cost.scratch_bytes > 1e12);
        // 13 features: 10^12 is capped at every coalition, 2^13 − 2 = 8190: cheap and exact.
        let narrow = FakeRequest::zeros(&[1, 13], 1).background_rows(100).param("nsamples", Value::Integer(1_000_000_000_000));
        assert_eq!(plugin.estimate(&narrow).unwrap().model_rows, 100.0 + 8190.0 * 100.0);
        // Past the range: refused, naming the parameter.
        for v in [i64::MAX, 1 << 62, 0] {
            let err = plugin
                .estimate(&FakeRequest::zeros(&[1, 64], 1).background_rows(1).param("nsamples", Value::Integer(v)))
                .unwrap_err();
            assert!(err.message.starts_with("parameters.nsamples:"), "{}", err.message);
        }
        // 4096 singleton features: the regression's matrices, not the model rows, are the cost.
        let cost = plugin.estimate(&FakeRequest::zeros(&[1, 4096], 1).background_rows(1)).unwrap();
        assert!(cost.scratch_bytes > 1e9, "{}", cost.scratch_bytes);
        assert_eq!(cost.driver.as_deref(), Some("patch"));
    }

    #[test]
    fn estimate_refuses_what_explain_would() {
        let plugin = explaind_plugin_sdk::plugin_under_test!();
        let err = plugin.estimate(&FakeRequest::zeros(&[2, 4], 1)).unwrap_err();
        assert_eq!(err.code, explaind_plugin_sdk::EXD_FAILED_PRECONDITION);
        let both = FakeRequest::zeros(&[2, 4], 1)
            .background_rows(2)
            .param("mask", Value::Integers(vec![0, 0, 1, 1]))
            .param("patch", Value::Integers(vec![2]));
        assert!(plugin.estimate(&both).unwrap_err().message.starts_with("parameters.patch:"));
        let batch = FakeRequest::zeros(&[2, 4], 1).background_rows(2).param("batch_rows", Value::Integer(1 << 40));
        assert!(plugin.estimate(&batch).unwrap_err().message.starts_with("parameters.batch_rows:"));
    }
}
