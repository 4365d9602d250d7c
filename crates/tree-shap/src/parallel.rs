//! Row-parallel driver shared by the explainers.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::TreeError;

/// Worker stack size: the recursions go up to `MAX_DEPTH` frames deep.
const STACK_SIZE: usize = 16 << 20;

/// The per-row work: `(state, row, out_row, stop)`.
pub(crate) type RowWork<'a, S> = dyn Fn(&mut S, usize, &mut [f64], &dyn Fn() -> bool) -> Result<(), TreeError> + Sync + 'a;

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
    let threads = if threads == 0 { std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1) } else { threads };
    let threads = threads.clamp(1, n_rows);
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
