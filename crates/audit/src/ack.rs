//! Acknowledgements of submitted records: the writer resolves a [`Receipt`] once its record is
//! as durable as the [`crate::Fsync`] policy promises, or fails it.
//!
//! No async runtime is needed: a receipt is a slot behind a mutex, with a condvar for threads
//! that block on it and a [`Waker`] for a task that polls it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Why a [`Receipt`] did not resolve with success.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AckError {
    /// The writer failed, or stopped, before the record was written (or before the write was
    /// made as durable as the policy promises). The record must be treated as not logged.
    #[error("the audit record was not written: {0}")]
    Failed(String),
    /// Only from [`Receipt::wait`]: the timeout passed first. The record may still be written
    /// later; the receipt can be waited on again.
    #[error("timed out waiting for the audit writer")]
    Timeout,
}

/// What a writer that stops without resolving a receipt leaves in it (a panic, or a queue
/// emptied without a cause).
const STOPPED: &str = "the audit writer stopped before writing this record";

struct Slot {
    state: Mutex<SlotState>,
    resolved: Condvar,
}

#[derive(Default)]
struct SlotState {
    result: Option<Result<(), String>>,
    waker: Option<Waker>,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        // Every critical section is a plain assignment; a poisoned lock still holds a
        // consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The writer's end: resolves the receipt exactly once. Dropping it unresolved fails the
/// receipt, so no receipt waits for ever on a writer that is gone.
pub(crate) struct Acker {
    slot: Option<Arc<Slot>>,
}

/// The answer to an acknowledged submission ([`crate::AuditLog::submit_acked`]).
///
/// It resolves with `Ok(())` once the record is as durable as the log's
/// [`crate::Fsync`] policy promises (see the crate docs, "Acknowledged records"), and with
/// [`AckError::Failed`] when the writer fails or stops before that. Wait on it
///
/// - from async code, by awaiting it: it is a [`Future`] that never blocks the thread that
///   polls it, and needs no particular runtime;
/// - from a thread that may block, with [`Receipt::wait`].
///
/// Dropping a receipt does not withdraw the record: it is still written.
#[must_use = "a receipt says when the record is durable; dropping it gives that up"]
pub struct Receipt {
    slot: Arc<Slot>,
}

/// A connected writer end and receipt.
pub(crate) fn pair() -> (Acker, Receipt) {
    let slot = Arc::new(Slot { state: Mutex::new(SlotState::default()), resolved: Condvar::new() });
    (Acker { slot: Some(slot.clone()) }, Receipt { slot })
}

impl Acker {
    /// The record is as durable as promised.
    pub fn done(mut self) {
        self.resolve(Ok(()));
    }

    /// The record was not written (or not made durable); `reason` says why.
    pub fn fail(mut self, reason: &str) {
        self.resolve(Err(reason.to_owned()));
    }

    fn resolve(&mut self, result: Result<(), String>) {
        let Some(slot) = self.slot.take() else { return };
        let mut state = slot.lock();
        if state.result.is_none() {
            state.result = Some(result);
        }
        let waker = state.waker.take();
        drop(state);
        slot.resolved.notify_all();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

impl Drop for Acker {
    fn drop(&mut self) {
        self.resolve(Err(STOPPED.to_owned()));
    }
}

fn outcome(result: &Result<(), String>) -> Result<(), AckError> {
    result.clone().map_err(AckError::Failed)
}

impl Receipt {
    /// Blocks the calling thread until the receipt resolves, at most `timeout`. Returns
    /// [`AckError::Timeout`] if it has not resolved by then (the receipt stays usable).
    /// Do not call it on an async worker thread; await the receipt there instead.
    pub fn wait(&self, timeout: Duration) -> Result<(), AckError> {
        let deadline = Instant::now().checked_add(timeout);
        let mut state = self.slot.lock();
        loop {
            if let Some(result) = &state.result {
                return outcome(result);
            }
            let left = match deadline {
                Some(deadline) => match deadline.checked_duration_since(Instant::now()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return Err(AckError::Timeout),
                },
                // A timeout too large for an Instant: wait in long slices.
                None => Duration::from_secs(3600),
            };
            state = self.slot.resolved.wait_timeout(state, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// The outcome if the receipt has resolved, without waiting.
    pub fn try_result(&self) -> Option<Result<(), AckError>> {
        self.slot.lock().result.as_ref().map(outcome)
    }
}

impl Future for Receipt {
    type Output = Result<(), AckError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.slot.lock();
        if let Some(result) = &state.result {
            return Poll::Ready(outcome(result));
        }
        match &mut state.waker {
            Some(waker) => waker.clone_from(cx.waker()),
            None => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl std::fmt::Debug for Receipt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receipt").field("result", &self.slot.lock().result).finish()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    /// A waker that counts its wakes and unparks the thread that made it.
    pub(crate) struct ThreadWaker {
        pub thread: std::thread::Thread,
        pub wakes: AtomicUsize,
    }

    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.wakes.fetch_add(1, Ordering::SeqCst);
            self.thread.unpark();
        }
    }

    /// Polls `future` on this thread until it is ready, parking in between: enough of an
    /// executor to show a receipt needs no runtime.
    pub(crate) fn block_on<F: Future + Unpin>(mut future: F, timeout: Duration) -> Option<F::Output> {
        let waker = Arc::new(ThreadWaker { thread: std::thread::current(), wakes: AtomicUsize::new(0) });
        let task_waker = Waker::from(waker.clone());
        let mut cx = Context::from_waker(&task_waker);
        let deadline = Instant::now() + timeout;
        loop {
            if let Poll::Ready(output) = Pin::new(&mut future).poll(&mut cx) {
                return Some(output);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            std::thread::park_timeout(left);
        }
    }

    #[test]
    fn a_pending_receipt_wakes_its_task_once_resolved() {
        let (acker, mut receipt) = pair();
        let waker = Arc::new(ThreadWaker { thread: std::thread::current(), wakes: AtomicUsize::new(0) });
        let task_waker = Waker::from(waker.clone());
        let mut cx = Context::from_waker(&task_waker);
        assert_eq!(Pin::new(&mut receipt).poll(&mut cx), Poll::Pending);
        assert_eq!(receipt.try_result(), None);
        assert_eq!(waker.wakes.load(Ordering::SeqCst), 0);
        acker.done();
        assert_eq!(waker.wakes.load(Ordering::SeqCst), 1, "resolving must wake the polling task");
        assert_eq!(Pin::new(&mut receipt).poll(&mut cx), Poll::Ready(Ok(())));
        assert_eq!(receipt.wait(Duration::ZERO), Ok(()));
    }

    #[test]
    fn wait_blocks_until_another_thread_resolves() {
        let (acker, receipt) = pair();
        assert_eq!(receipt.wait(Duration::from_millis(50)), Err(AckError::Timeout));
        let resolver = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            acker.fail("disk full");
        });
        let began = Instant::now();
        assert_eq!(receipt.wait(Duration::from_secs(30)), Err(AckError::Failed("disk full".into())));
        assert!(began.elapsed() >= Duration::from_millis(50));
        resolver.join().unwrap();
    }

    #[test]
    fn an_acker_dropped_unresolved_fails_its_receipt() {
        let (acker, receipt) = pair();
        let dropper = std::thread::spawn(move || drop(acker));
        let result = block_on(receipt, Duration::from_secs(30)).expect("the receipt never resolved");
        assert_eq!(result, Err(AckError::Failed(STOPPED.into())));
        dropper.join().unwrap();
    }

    #[test]
    fn the_first_resolution_wins() {
        let (mut acker, receipt) = pair();
        acker.resolve(Ok(()));
        acker.resolve(Err("late".into()));
        drop(acker);
        assert_eq!(receipt.try_result(), Some(Ok(())));
    }
}
