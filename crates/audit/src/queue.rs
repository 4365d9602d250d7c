//! The bounded queue between request handlers and the writer thread. A Mutex + Condvar rather
//! than `sync_channel` because the depth must be exported and `Wait` needs a timeout, which
//! `SyncSender` does not offer on stable.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What `submit` does when the queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    /// Wait for room, at most this long, then fail with [`SubmitError::Full`]. The caller's
    /// thread blocks meanwhile: call from a blocking context, or keep the timeout short.
    Wait(Duration),
    /// Fail with [`SubmitError::Full`] at once.
    Reject,
}

/// Why a record was not accepted. Nothing is ever dropped without one of these reaching the
/// caller; the daemon answers UNAVAILABLE for each of them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("the audit queue is full")]
    Full,
    #[error("the audit log is shut down")]
    Closed,
    #[error("the audit log failed and accepts no more records: {0}")]
    Failed(String),
}

pub(crate) struct Queue<T> {
    state: Mutex<State<T>>,
    /// The writer waits here for items or for shutdown.
    not_empty: Condvar,
    /// Submitters wait here for room.
    not_full: Condvar,
    capacity: usize,
}

struct State<T> {
    items: VecDeque<T>,
    /// Set by shutdown (`Closed`) or by a writer error (`Failed`).
    stopped: Option<SubmitError>,
    /// How many items were ever accepted; an item's ticket is the count after it.
    accepted: u64,
    #[cfg(test)]
    paused: bool,
}

pub(crate) struct Batch<T> {
    pub items: Vec<T>,
    /// Ticket of the last item in `items` (or of the last item ever taken, if none).
    pub last_ticket: u64,
    /// Shutdown was asked for and the queue is now empty.
    pub finished: bool,
}

impl<T> Queue<T> {
    pub fn new(capacity: usize) -> Self {
        Queue {
            state: Mutex::new(State {
                items: VecDeque::with_capacity(capacity.min(1 << 16)),
                stopped: None,
                accepted: 0,
                #[cfg(test)]
                paused: false,
            }),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding this lock can only come from a bug in this module; the state
        // is still consistent (every mutation is a single push/pop), so carry on.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Enqueues `item`; returns its ticket (for [`crate::AuditLog::sync`]) and the new depth.
    pub fn push(&self, item: T, on_full: OnFull) -> Result<(u64, usize), SubmitError> {
        let mut state = self.lock();
        let deadline = match on_full {
            OnFull::Wait(timeout) => Instant::now().checked_add(timeout),
            OnFull::Reject => None,
        };
        loop {
            if let Some(stopped) = &state.stopped {
                return Err(stopped.clone());
            }
            if state.items.len() < self.capacity {
                break;
            }
            let remaining = match (on_full, deadline) {
                (OnFull::Reject, _) => return Err(SubmitError::Full),
                (OnFull::Wait(_), Some(deadline)) => match deadline.checked_duration_since(Instant::now()) {
                    Some(d) if !d.is_zero() => d,
                    _ => return Err(SubmitError::Full),
                },
                // A timeout too large for an Instant: wait in long slices.
                (OnFull::Wait(_), None) => Duration::from_secs(3600),
            };
            state = self.not_full.wait_timeout(state, remaining).unwrap_or_else(|e| e.into_inner()).0;
        }
        Ok(self.enqueue(state, item))
    }

    /// Enqueues `item` if there is room now; otherwise hands it back with the reason, so the
    /// caller can wait for room somewhere it may block.
    pub fn try_push(&self, item: T) -> Result<(u64, usize), (SubmitError, T)> {
        let state = self.lock();
        if let Some(stopped) = &state.stopped {
            return Err((stopped.clone(), item));
        }
        if state.items.len() >= self.capacity {
            return Err((SubmitError::Full, item));
        }
        Ok(self.enqueue(state, item))
    }

    /// Appends `item` under the lock the caller holds (having checked there is room), then
    /// wakes the writer; returns its ticket and the new depth.
    fn enqueue(&self, mut state: MutexGuard<'_, State<T>>, item: T) -> (u64, usize) {
        state.items.push_back(item);
        state.accepted += 1;
        let result = (state.accepted, state.items.len());
        drop(state);
        self.not_empty.notify_one();
        result
    }

    /// Takes up to `max` items, waiting until `deadline` (or for ever) when there are none.
    pub fn pop_batch(&self, max: usize, deadline: Option<Instant>) -> Batch<T> {
        let mut state = self.lock();
        loop {
            #[cfg(test)]
            let paused = state.paused && state.stopped.is_none();
            #[cfg(not(test))]
            let paused = false;
            if !paused && (!state.items.is_empty() || state.stopped.is_some()) {
                break;
            }
            match deadline {
                None => state = self.not_empty.wait(state).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let Some(remaining) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else {
                        break;
                    };
                    state = self.not_empty.wait_timeout(state, remaining).unwrap_or_else(|e| e.into_inner()).0;
                }
            }
        }
        #[cfg(test)]
        if state.paused && state.stopped.is_none() {
            return Batch { items: Vec::new(), last_ticket: state.accepted - state.items.len() as u64, finished: false };
        }
        let n = state.items.len().min(max);
        let items: Vec<T> = state.items.drain(..n).collect();
        let last_ticket = state.accepted - state.items.len() as u64;
        let finished = state.stopped.is_some() && state.items.is_empty();
        drop(state);
        if n > 0 {
            self.not_full.notify_all();
        }
        Batch { items, last_ticket, finished }
    }

    pub fn depth(&self) -> usize {
        self.lock().items.len()
    }

    pub fn accepted(&self) -> u64 {
        self.lock().accepted
    }

    /// Stops accepting items. The first reason wins: a failure is not overwritten by a later
    /// shutdown. Returns how many items were still queued.
    pub fn stop(&self, reason: SubmitError) -> usize {
        let mut state = self.lock();
        if state.stopped.is_none() {
            state.stopped = Some(reason);
        }
        let left = state.items.len();
        drop(state);
        self.not_empty.notify_all();
        self.not_full.notify_all();
        left
    }

    /// After a writer failure: empties the queue and returns the items that were lost.
    pub fn discard(&self) -> VecDeque<T> {
        std::mem::take(&mut self.lock().items)
    }

    #[cfg(test)]
    pub fn set_paused(&self, paused: bool) {
        self.lock().paused = paused;
        self.not_empty.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn reject_fails_at_once_when_full() {
        let q = Queue::new(2);
        q.push(1, OnFull::Reject).unwrap();
        q.push(2, OnFull::Reject).unwrap();
        let began = Instant::now();
        assert_eq!(q.push(3, OnFull::Reject), Err(SubmitError::Full));
        assert!(began.elapsed() < Duration::from_millis(50));
        assert_eq!(q.depth(), 2);
    }

    #[test]
    fn wait_times_out_then_fails_when_nobody_takes() {
        let q = Queue::new(1);
        q.push(1, OnFull::Reject).unwrap();
        let began = Instant::now();
        assert_eq!(q.push(2, OnFull::Wait(Duration::from_millis(150))), Err(SubmitError::Full));
        assert!(began.elapsed() >= Duration::from_millis(150));
    }

    #[test]
    fn wait_blocks_until_room_then_succeeds() {
        let q = Arc::new(Queue::new(1));
        q.push(1, OnFull::Reject).unwrap();
        let taker = {
            let q = q.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                q.pop_batch(10, None).items
            })
        };
        let began = Instant::now();
        assert_eq!(q.push(2, OnFull::Wait(Duration::from_secs(10))), Ok((2, 1)));
        assert!(began.elapsed() >= Duration::from_millis(150), "push returned before there was room");
        assert_eq!(taker.join().unwrap(), vec![1]);
        let rest = q.pop_batch(10, Some(Instant::now()));
        assert_eq!((rest.items, rest.last_ticket), (vec![2], 2));
    }

    #[test]
    fn stop_wakes_waiters_and_the_queue_drains() {
        let q = Arc::new(Queue::new(1));
        q.push(1, OnFull::Reject).unwrap();
        let waiter = {
            let q = q.clone();
            std::thread::spawn(move || q.push(2, OnFull::Wait(Duration::from_secs(30))))
        };
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(q.stop(SubmitError::Closed), 1);
        assert_eq!(waiter.join().unwrap(), Err(SubmitError::Closed));
        let batch = q.pop_batch(10, None);
        assert_eq!((batch.items, batch.finished), (vec![1], true));
    }
}
