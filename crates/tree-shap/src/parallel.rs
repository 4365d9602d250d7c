//! Row-parallel driver shared by the explainers.

use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::TreeError;

/// Worker stack size: the recursions go up to `MAX_DEPTH` frames deep.
const STACK_SIZE: usize = 16 << 20;

/// The per-row work: `(state, row, out_row, stop)`.
pub(crate) type RowWork<'a, S> = dyn Fn(&mut S, usize, &mut [f64], &dyn Fn() -> bool) -> Result<(), TreeError> + Sync + 'a;

/// The per-(row, range of trees) work: `(state, row, trees, out_row, stop)`, adding into `out_row`.
pub(crate) type TreeWork<'a, S> =
    dyn Fn(&mut S, usize, Range<usize>, &mut [f64], &dyn Fn() -> bool) -> Result<(), TreeError> + Sync + 'a;

/// Resolves a thread count (0 = available parallelism).
pub(crate) fn thread_count(threads: usize) -> usize {
    if threads == 0 { std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) } else { threads }
}

/// Like [`run_rows`], for work that is a sum over trees: when there are too few rows to keep every thread
/// busy (fewer than 4 per thread), each row's trees are split into ranges run as separate units (so a
/// 1-row request uses every core), and the ranges' outputs are summed per row.
pub(crate) fn run_rows_trees<S>(
    n_rows: usize,
    n_trees: usize,
    out_per_row: usize,
    threads: usize,
    cancelled: &(dyn Fn() -> bool + Sync),
    init: &(dyn Fn() -> S + Sync),
    work: &TreeWork<'_, S>,
) -> Result<Vec<f64>, TreeError> {
    let threads = thread_count(threads);
    let split = if n_rows == 0 || n_rows >= 4 * threads { 1 } else { (4 * threads).div_ceil(n_rows).min(n_trees).max(1) };
    if split == 1 {
        return run_rows(n_rows, out_per_row, threads, cancelled, init, &|s, row, out, stop| work(s, row, 0..n_trees, out, stop));
    }
    let per = n_trees.div_ceil(split);
    let parts = run_rows(n_rows * split, out_per_row, threads, cancelled, init, &|s, unit, out, stop| {
        let part = unit % split;
        work(s, unit / split, (part * per).min(n_trees)..((part + 1) * per).min(n_trees), out, stop)
    })?;
    let mut out = vec![0.0; n_rows * out_per_row];
    for (row, o) in out.chunks_exact_mut(out_per_row).enumerate() {
        for p in parts[row * split * out_per_row..(row + 1) * split * out_per_row].chunks_exact(out_per_row) {
            for (a, b) in o.iter_mut().zip(p) {
                *a += b;
            }
        }
    }
    Ok(out)
}

/// Runs `work(state, row, out_row, stop)` for every row in `0..n_rows` on up to `threads` scoped threads
/// (0 = available parallelism), each with its own `init()` state, writing into rows of `out_per_row`
/// values. `stop()` returns true once the caller's `cancelled()` did or another row failed; workers must
/// poll it and return [`TreeError::Cancelled`].
pub(crate) fn run_rows<S>(
    n_rows: usize,
    out_per_row: usize,
    threads: usize,
    cancelled: &(dyn Fn() -> bool + Sync),
    init: &(dyn Fn() -> S + Sync),
    work: &RowWork<'_, S>,
) -> Result<Vec<f64>, TreeError> {
    let mut out = vec![0.0; n_rows * out_per_row];
    if n_rows == 0 || out_per_row == 0 {
        return if cancelled() { Err(TreeError::Cancelled) } else { Ok(out) };
    }
    let threads = thread_count(threads).clamp(1, n_rows);
    let rows_per = n_rows.div_ceil(threads);
    let abort = AtomicBool::new(false);
    let first_error: Mutex<Option<TreeError>> = Mutex::new(None);
    let stop = || abort.load(Ordering::Relaxed) || cancelled();
    std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for (chunk_index, chunk) in out.chunks_mut(rows_per * out_per_row).enumerate() {
            let (abort, first_error, stop) = (&abort, &first_error, &stop);
            let run = move || {
                let mut state = init();
                let first_row = chunk_index * rows_per;
                let rows = chunk.len() / out_per_row;
                for r in 0..rows {
                    let row_out = &mut chunk[r * out_per_row..(r + 1) * out_per_row];
                    let result = if stop() { Err(TreeError::Cancelled) } else { work(&mut state, first_row + r, row_out, stop) };
                    if let Err(e) = result {
                        abort.store(true, Ordering::Relaxed);
                        let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
                        // Keep a real error over the cancellations it causes in other workers.
                        if slot.is_none() || (*slot == Some(TreeError::Cancelled) && e != TreeError::Cancelled) {
                            *slot = Some(e);
                        }
                        return;
                    }
                }
            };
            match std::thread::Builder::new().stack_size(STACK_SIZE).spawn_scoped(scope, run) {
                Ok(h) => handles.push(h),
                Err(e) => {
                    abort.store(true, Ordering::Relaxed);
                    let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
                    slot.get_or_insert(TreeError::InvalidInput(format!("cannot spawn a worker thread: {e}")));
                    break;
                }
            }
        }
        for h in handles {
            if h.join().is_err() {
                let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
                slot.get_or_insert(TreeError::InvalidInput("a worker thread panicked".into()));
            }
        }
    });
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(out),
    }
}
