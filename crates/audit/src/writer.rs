//! The log itself: opening (with torn-tail repair), the writer thread, rotation, checkpoints.

use crate::ack::{self, Acker, Receipt};
use crate::format::{
    self, AuditRecord, Checkpoint, Entry, ExplainerIdentity, GENESIS_HASH, Line, ModelIdentity, Outcome, Rpc, rfc3339,
};
use crate::queue::{OnFull, Queue, SubmitError};
use crate::startup::StartupCheck;
use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// When written records reach the disk, and so when an acknowledged record's [`Receipt`]
/// resolves. The crate docs ("Acknowledged records") say what each one guarantees.
///
/// Either way the writer takes records in batches (everything queued, up to 256 at a time)
/// and ends each batch with one write(2) of all its lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// `fdatasync` at the end of every batch, before its receipts resolve: no acknowledged
    /// record is lost to a crash of the process or of the machine, or to a power cut.
    EveryRecord,
    /// Group commit: each batch is written to the file (write(2)) before its receipts resolve,
    /// and synced at most this many milliseconds after the first unsynced line. An acknowledged
    /// record survives the process being killed (`kill -9` included); a power cut or kernel
    /// crash may lose the acknowledged records of that window (and leave a torn last line that
    /// the next open repairs).
    EveryMillis(u64),
}

/// How the log is opened. [`AuditConfig::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// The active file, e.g. `/var/lib/explaind/audit.log`. Rotated files, the lock file and
    /// moved-aside torn tails are created beside it.
    pub path: PathBuf,
    /// Signs the checkpoints ([`crate::load_signing_key`]).
    pub signing_key: SigningKey,
    pub fsync: Fsync,
    /// Records waiting for the writer, at most.
    pub queue_capacity: usize,
    pub on_full: OnFull,
    /// A record that would take the active file past this size goes to a fresh file instead.
    /// A file can still exceed it by one record (when a single record is larger) plus the
    /// checkpoint that closes it.
    pub max_file_bytes: u64,
    /// A checkpoint after this many records (0: never by count).
    pub checkpoint_every_records: u64,
    /// A checkpoint when records have been waiting unsigned this long (None: never by time).
    pub checkpoint_interval: Option<Duration>,
    /// Write the request inputs ([`AuditEvent::inputs`]) into records. Off by default: inputs
    /// may be personal data; their digest is always written.
    pub store_inputs: bool,
    /// How much of the existing log [`AuditWriter::startup_check`] verifies, at most: the
    /// newest this many bytes (the active file first, then rotated files from the newest
    /// back). The default, 128 MiB, covers the active file and the newest rotated one at the
    /// default file size.
    pub startup_verify_bytes: u64,
    /// The daemon's name in a fleet, written into every record and checkpoint (empty: none),
    /// so that logs gathered from several replicas say whose chain each one is.
    pub replica: String,
}

impl AuditConfig {
    pub fn new(path: impl Into<PathBuf>, signing_key: SigningKey) -> Self {
        AuditConfig {
            path: path.into(),
            signing_key,
            fsync: Fsync::EveryMillis(50),
            queue_capacity: 4096,
            on_full: OnFull::Wait(Duration::from_millis(500)),
            max_file_bytes: 64 << 20,
            checkpoint_every_records: 1000,
            checkpoint_interval: Some(Duration::from_secs(60)),
            store_inputs: false,
            startup_verify_bytes: 128 << 20,
            replica: String::new(),
        }
    }
}

/// What the daemon hands over for one Predict or Explain request. The writer adds seq,
/// hashes and the chain link.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    /// When the request arrived.
    pub time: SystemTime,
    pub request_id: String,
    pub caller: String,
    pub rpc: Rpc,
    pub model: ModelIdentity,
    pub explainer: Option<ExplainerIdentity>,
    pub parameters: serde_json::Value,
    pub input_digest: String,
    pub result_digest: String,
    /// The request's inputs in whatever encoding the daemon chose; written (base64) only when
    /// [`AuditConfig::store_inputs`] is set, so check [`AuditLog::stores_inputs`] before
    /// building them.
    pub inputs: Option<Vec<u8>>,
    pub status: Outcome,
    pub duration: Duration,
    pub model_calls: u64,
    pub model_rows: u64,
    /// The faithfulness metrics computed on the explanation (their parameters, seed and
    /// figures), when the request asked for any.
    pub evaluation: Option<serde_json::Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}: the audit log is in use by another process", path.display())]
    Locked { path: PathBuf },
    /// Found on open; the log needs a human (run verify), so it is left untouched.
    #[error("{}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error("the audit writer failed: {0}")]
    Failed(String),
    #[error("the audit writer thread panicked")]
    Panicked,
}

fn at(path: &Path) -> impl FnOnce(io::Error) -> AuditError + '_ {
    move |source| AuditError::Io { path: path.to_path_buf(), source }
}

/// A torn tail found on open and moved aside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The seq of the last good record before it.
    pub after_seq: u64,
    pub bytes: u64,
    /// Where its bytes were copied before the active file was truncated.
    pub moved_to: PathBuf,
}

/// What open found.
#[derive(Debug, Clone)]
pub struct Opened {
    /// Seq the next record will get.
    pub next_seq: u64,
    pub head_hash: String,
    pub torn: Option<TornTail>,
}

/// Handle for submitting records; cheap to clone into every service.
#[derive(Clone)]
pub struct AuditLog {
    shared: Arc<Shared>,
}

/// Owns the writer thread. [`AuditWriter::shutdown`] (or dropping it) drains the queue, writes
/// a final checkpoint and syncs.
pub struct AuditWriter {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<Result<(), AuditError>>>,
    opened: Opened,
    startup_check: Option<StartupCheck>,
}

struct Shared {
    queue: Queue<Pending>,
    on_full: OnFull,
    store_inputs: bool,
    durable: Mutex<Durable>,
    durable_changed: Condvar,
    /// How many times the writer synced the file; for tests of group commit.
    #[cfg(test)]
    syncs: std::sync::atomic::AtomicU64,
}

/// A queued record, and whom to tell once it is durable.
struct Pending {
    event: AuditEvent,
    ack: Option<Acker>,
}

#[derive(Default)]
struct Durable {
    /// Every item with a ticket up to this one is on disk and synced.
    ticket: u64,
    failed: Option<String>,
    finished: bool,
}

/// Rotated files are `<active name>.<8-digit index>`, oldest first.
pub fn rotated_path(active: &Path, index: u64) -> PathBuf {
    let mut name = active.as_os_str().to_owned();
    name.push(format!(".{index:08}"));
    PathBuf::from(name)
}

fn sibling(active: &Path, suffix: &str) -> PathBuf {
    let mut name = active.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// The files of a log in chain order: the rotated ones by index, then the active file. This
/// is the list to give [`crate::verify`].
pub fn chain_files(active: &Path) -> io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = rotated_files(active)?.into_iter().map(|(_, p)| p).collect();
    if active.exists() {
        files.push(active.to_path_buf());
    }
    Ok(files)
}

fn rotated_files(active: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let dir = parent_dir(active);
    let Some(base) = active.file_name().and_then(|n| n.to_str()) else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "the audit log path needs a UTF-8 file name"));
    };
    let prefix = format!("{base}.");
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else { continue };
        let Some(rest) = name.strip_prefix(&prefix) else { continue };
        if !rest.is_empty()
            && rest.bytes().all(|b| b.is_ascii_digit())
            && let Ok(index) = rest.parse::<u64>()
        {
            found.push((index, dir.join(&name)));
        }
    }
    found.sort();
    Ok(found)
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Makes a rename or a new file in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The end of a file: the last line that is a valid entry, and where the torn part begins.
struct Tail {
    last: Option<Line>,
    /// Offset just past the last valid line's newline; everything from here on is torn.
    good_len: u64,
}

/// Reads backwards from the end until it finds a complete line that is a valid entry.
/// Bytes after the last newline are a torn write. Complete lines that are not JSON at all
/// (blocks of zeros after a power cut) are torn too. A complete line that *is* JSON but fails
/// its hash was not written by a crash, so it is an error, and nothing is repaired.
fn scan_tail(file: &mut File, path: &Path) -> Result<Tail, AuditError> {
    let len = file.metadata().map_err(at(path))?.len();
    let mut window: u64 = 64 << 10;
    loop {
        let start = len.saturating_sub(window);
        let mut buf = Vec::with_capacity((len - start) as usize);
        file.seek(SeekFrom::Start(start)).map_err(at(path))?;
        Read::by_ref(file).take(len - start).read_to_end(&mut buf).map_err(at(path))?;
        // Newline positions; a line ends at each. The first line in the buffer is only whole
        // when the buffer starts at the beginning of the file.
        let newlines: Vec<usize> = buf.iter().enumerate().filter(|(_, b)| **b == b'\n').map(|(i, _)| i).collect();
        for k in (0..newlines.len()).rev() {
            let line_start = if k == 0 {
                if start > 0 {
                    break;
                }
                0
            } else {
                newlines[k - 1] + 1
            };
            let line = &buf[line_start..newlines[k]];
            match format::decode(line) {
                Ok(parsed) => return Ok(Tail { last: Some(parsed), good_len: start + newlines[k] as u64 + 1 }),
                Err(e) if serde_json::from_slice::<serde_json::Value>(line).is_ok() => {
                    return Err(AuditError::Corrupt {
                        path: path.to_path_buf(),
                        reason: format!(
                            "the complete line at byte {} is not a valid entry ({e}); this is not a torn write, \
                             run `explaind audit verify`",
                            start + line_start as u64
                        ),
                    });
                }
                Err(_) => {}
            }
        }
        if start == 0 {
            return Ok(Tail { last: None, good_len: 0 });
        }
        window = window.saturating_mul(4);
    }
}

fn first_line(path: &Path) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    BufReader::new(File::open(path)?).read_until(b'\n', &mut line)?;
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    Ok(line)
}

impl AuditLog {
    /// Opens (or creates) the log, repairs a torn tail, and starts the writer thread.
    ///
    /// On open: the lock file `<path>.lock` is taken (a second writer fails with
    /// [`AuditError::Locked`]); the chain head is read from the end of the active file, or
    /// from the newest rotated file when the active one is empty; a torn tail is copied to
    /// `<path>.torn-<last good seq>-<unix ms>`, synced, and cut off; and when the log ends in
    /// records that no checkpoint covers, or a tail was repaired, a checkpoint with reason
    /// `open` (and a note naming the moved-aside file) is written before any new record.
    /// Only the tail is checked here; [`crate::verify`] checks everything.
    pub fn open(config: AuditConfig) -> Result<(AuditLog, AuditWriter), AuditError> {
        let path = config.path.clone();
        let dir = parent_dir(&path);
        std::fs::create_dir_all(&dir).map_err(at(&dir))?;
        let lock_path = sibling(&path, ".lock");
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(at(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(AuditError::Locked { path }),
            Err(std::fs::TryLockError::Error(e)) => return Err(AuditError::Io { path: lock_path, source: e }),
        }

        let rotated = rotated_files(&path).map_err(at(&dir))?;
        let next_index = rotated.last().map_or(1, |(i, _)| i + 1);
        // The head of the rotated files: they were synced before being renamed, so their end
        // must be a valid entry.
        let mut head: Option<Line> = None;
        if let Some((_, newest)) = rotated.last() {
            let mut file = File::open(newest).map_err(at(newest))?;
            let tail = scan_tail(&mut file, newest)?;
            let file_len = file.metadata().map_err(at(newest))?.len();
            match tail.last {
                Some(line) if tail.good_len == file_len => head = Some(line),
                _ => {
                    return Err(AuditError::Corrupt {
                        path: newest.clone(),
                        reason: "a rotated file does not end with a complete entry".into(),
                    });
                }
            }
        }

        let mut torn = None;
        let mut file = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(at(&path))?;
        let tail = scan_tail(&mut file, &path)?;
        let file_len = file.metadata().map_err(at(&path))?.len();
        if tail.last.is_some() && !rotated.is_empty() {
            let first = first_line(&path).map_err(at(&path))?;
            let link = format::decode(&first).map(|l| l.entry.prev_hash().to_owned());
            let rotated_head = &head.as_ref().expect("set above").hash;
            if link.as_ref().ok() != Some(rotated_head) {
                return Err(AuditError::Corrupt {
                    path: path.clone(),
                    reason: format!("its first entry does not continue the chain of {}", rotated.last().unwrap().1.display()),
                });
            }
        }
        if tail.last.is_some() {
            head = tail.last;
        }
        let after_seq = head.as_ref().map_or(0, |l| l.entry.seq());
        if tail.good_len < file_len {
            let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis();
            let moved_to = sibling(&path, &format!(".torn-{after_seq}-{unix_ms}"));
            let mut bytes = Vec::new();
            file.seek(SeekFrom::Start(tail.good_len)).map_err(at(&path))?;
            file.read_to_end(&mut bytes).map_err(at(&path))?;
            let mut aside = OpenOptions::new().write(true).create_new(true).open(&moved_to).map_err(at(&moved_to))?;
            aside.write_all(&bytes).map_err(at(&moved_to))?;
            aside.sync_all().map_err(at(&moved_to))?;
            file.set_len(tail.good_len).map_err(at(&path))?;
            file.sync_all().map_err(at(&path))?;
            sync_dir(&dir).map_err(at(&dir))?;
            metrics::counter!("explaind_audit_torn_tails_total").increment(1);
            torn = Some(TornTail { after_seq, bytes: bytes.len() as u64, moved_to });
        }
        drop(file);
        let file = OpenOptions::new().append(true).open(&path).map_err(at(&path))?;
        sync_dir(&dir).map_err(at(&dir))?;
        let good_len = tail.good_len;

        let head_hash = head.as_ref().map_or_else(|| GENESIS_HASH.to_owned(), |l| l.hash.clone());
        let unsigned = matches!(head.as_ref().map(|l| &l.entry), Some(Entry::Record(_)));
        let opened = Opened { next_seq: after_seq + 1, head_hash: head_hash.clone(), torn: torn.clone() };
        let shared = Arc::new(Shared {
            queue: Queue::new(config.queue_capacity),
            on_full: config.on_full,
            store_inputs: config.store_inputs,
            durable: Mutex::new(Durable::default()),
            durable_changed: Condvar::new(),
            #[cfg(test)]
            syncs: std::sync::atomic::AtomicU64::new(0),
        });
        let public_key = hex::encode(config.signing_key.verifying_key().to_bytes());
        let mut writer = Writer {
            shared: shared.clone(),
            file: BufWriter::with_capacity(WRITE_BUFFER, file),
            file_len: good_len,
            file_entries: u64::from(good_len > 0),
            dir,
            next_index,
            next_seq: after_seq + 1,
            head: head_hash,
            records_since_checkpoint: u64::from(unsigned),
            last_checkpoint: Instant::now(),
            unsynced_since: None,
            acks: Vec::new(),
            public_key,
            config,
            _lock: lock,
        };
        if unsigned || torn.is_some() {
            let note = torn.as_ref().map(|t| {
                format!("torn tail of {} bytes after record {} moved to {}", t.bytes, t.after_seq, t.moved_to.display())
            });
            writer.checkpoint("open", note).and_then(|()| writer.sync()).map_err(at(&path))?;
        }
        // Everything up to `file_len` is whole lines on disk now, and nothing writes until the
        // thread starts.
        let startup_check = StartupCheck::snapshot(
            &path,
            writer.file_len,
            &rotated,
            writer.config.signing_key.verifying_key(),
            writer.config.startup_verify_bytes,
        );
        let thread = std::thread::Builder::new()
            .name("explaind-audit".into())
            .spawn(move || writer.run())
            .map_err(|e| AuditError::Io { path: path.clone(), source: e })?;
        Ok((
            AuditLog { shared: shared.clone() },
            AuditWriter { shared, thread: Some(thread), opened, startup_check: Some(startup_check) },
        ))
    }

    /// Queues one record. Returns once it is queued, not once it is written: a crash can
    /// still lose it. Use [`AuditLog::submit_acked`] to learn when it is written (or
    /// [`AuditLog::sync`]). Fails, and never drops silently, when the queue is full (per
    /// [`AuditConfig::on_full`]), after shutdown, or after a write error.
    pub fn submit(&self, event: AuditEvent) -> Result<(), SubmitError> {
        let (_, depth) = self.shared.queue.push(Pending { event, ack: None }, self.shared.on_full).map_err(refused)?;
        queued(depth);
        Ok(())
    }

    /// Queues one record if there is room now, never blocking. When the queue is full and the
    /// policy is to wait, the event comes back (`Err(Ok(event))`) for the caller to
    /// [`AuditLog::submit`] from a thread that may block; any other failure is final
    /// (`Err(Err(reason))`).
    // The event comes back whole, without a box, to be submitted as it is.
    #[allow(clippy::result_large_err)]
    pub fn try_submit(&self, event: AuditEvent) -> Result<(), Result<AuditEvent, SubmitError>> {
        match self.shared.queue.try_push(Pending { event, ack: None }) {
            Ok((_, depth)) => {
                queued(depth);
                Ok(())
            }
            Err((SubmitError::Full, pending)) if matches!(self.shared.on_full, OnFull::Wait(_)) => Err(Ok(pending.event)),
            Err((error, _)) => Err(Err(refused(error))),
        }
    }

    /// Queues one record, like [`AuditLog::submit`] (blocking per [`AuditConfig::on_full`]
    /// when the queue is full), and returns a [`Receipt`] that resolves once the record is as
    /// durable as [`AuditConfig::fsync`] promises: written to the file under
    /// [`Fsync::EveryMillis`], written and synced under [`Fsync::EveryRecord`]. Send a
    /// request's response only after its receipt resolved `Ok`.
    ///
    /// A receipt resolves with an error when the writer fails (or stops) before that point; a
    /// shutdown still writes every record queued before it, and resolves their receipts.
    pub fn submit_acked(&self, event: AuditEvent) -> Result<Receipt, SubmitError> {
        let (ack, receipt) = ack::pair();
        match self.shared.queue.push(Pending { event, ack: Some(ack) }, self.shared.on_full) {
            Ok((_, depth)) => {
                queued(depth);
                Ok(receipt)
            }
            Err(e) => Err(refused(e)),
        }
    }

    /// [`AuditLog::submit_acked`] without ever blocking, as [`AuditLog::try_submit`]: when the
    /// queue is full and the policy is to wait, the event comes back (`Err(Ok(event))`) for the
    /// caller to [`AuditLog::submit_acked`] from a thread that may block; any other failure is
    /// final (`Err(Err(reason))`).
    #[allow(clippy::result_large_err)]
    pub fn try_submit_acked(&self, event: AuditEvent) -> Result<Receipt, Result<AuditEvent, SubmitError>> {
        let (ack, receipt) = ack::pair();
        match self.shared.queue.try_push(Pending { event, ack: Some(ack) }) {
            Ok((_, depth)) => {
                queued(depth);
                Ok(receipt)
            }
            Err((SubmitError::Full, pending)) if matches!(self.shared.on_full, OnFull::Wait(_)) => Err(Ok(pending.event)),
            Err((error, _)) => Err(Err(refused(error))),
        }
    }

    /// Whether records keep the inputs; when not, the daemon need not encode them.
    pub fn stores_inputs(&self) -> bool {
        self.shared.store_inputs
    }

    pub fn queue_depth(&self) -> usize {
        self.shared.queue.depth()
    }

    /// Waits until every record submitted before this call is written and synced (with
    /// `fdatasync`, whatever the policy).
    pub fn sync(&self, timeout: Duration) -> Result<(), SyncError> {
        let target = self.shared.queue.accepted();
        let deadline = Instant::now() + timeout;
        let mut durable = self.shared.durable.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if durable.ticket >= target {
                return Ok(());
            }
            if let Some(failed) = &durable.failed {
                return Err(SyncError::Failed(failed.clone()));
            }
            if durable.finished {
                return Err(SyncError::Failed("the writer stopped before these records were written".into()));
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else {
                return Err(SyncError::Timeout);
            };
            durable = self.shared.durable_changed.wait_timeout(durable, left).unwrap_or_else(|e| e.into_inner()).0;
        }
    }

    /// Holds the writer so the queue fills; for tests of the full-queue policies.
    #[cfg(test)]
    pub(crate) fn pause_writer(&self, paused: bool) {
        self.shared.queue.set_paused(paused);
    }

    /// How many times the writer has synced the file.
    #[cfg(test)]
    pub(crate) fn syncs(&self) -> u64 {
        self.shared.syncs.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// Exports the queue depth after a record was queued.
fn queued(depth: usize) {
    metrics::gauge!("explaind_audit_queue_depth").set(depth as f64);
}

/// Counts a refused record by its reason, and passes the reason on.
fn refused(error: SubmitError) -> SubmitError {
    let reason = match error {
        SubmitError::Full => "full",
        SubmitError::Closed => "closed",
        SubmitError::Failed(_) => "failed",
    };
    metrics::counter!("explaind_audit_rejected_total", "reason" => reason).increment(1);
    error
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SyncError {
    #[error("timed out waiting for the audit writer")]
    Timeout,
    #[error("{0}")]
    Failed(String),
}

impl AuditWriter {
    pub fn opened(&self) -> &Opened {
        &self.opened
    }

    /// The check of the log as it was at open, to verify on any thread (it reads up to
    /// [`AuditConfig::startup_verify_bytes`], and so takes a moment: about a second for the
    /// default 128 MiB on a small machine). The daemon should warn when [`StartupCheck::run`]
    /// reports a problem: open itself only checks the last entry. The first call returns the
    /// check; later ones `None`.
    pub fn startup_check(&mut self) -> Option<StartupCheck> {
        self.startup_check.take()
    }

    /// Stops accepting records, writes everything queued, a final checkpoint, and syncs.
    pub fn shutdown(mut self) -> Result<(), AuditError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), AuditError> {
        self.shared.queue.stop(SubmitError::Closed);
        match self.thread.take() {
            Some(thread) => thread.join().map_err(|_| AuditError::Panicked)?,
            None => Ok(()),
        }
    }
}

impl Drop for AuditWriter {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Stops the queue when the writer thread ends, however it ends, and fails what is left.
struct StopOnExit(Arc<Shared>);

impl Drop for StopOnExit {
    fn drop(&mut self) {
        // After a normal end the queue is stopped and empty already: nothing changes.
        self.0.queue.stop(SubmitError::Failed("the audit writer thread stopped".into()));
        for pending in self.0.queue.discard() {
            if let Some(ack) = pending.ack {
                ack.fail("the audit writer thread stopped before writing this record");
            }
        }
        let mut durable = self.0.durable.lock().unwrap_or_else(|e| e.into_inner());
        if !durable.finished {
            durable.finished = true;
            durable.failed.get_or_insert_with(|| "the audit writer thread stopped".into());
        }
        drop(durable);
        self.0.durable_changed.notify_all();
    }
}

const WRITE_BUFFER: usize = 64 << 10;
const MAX_BATCH: usize = 256;

struct Writer {
    shared: Arc<Shared>,
    config: AuditConfig,
    file: BufWriter<File>,
    file_len: u64,
    /// Whether the active file has entries, so a rotation never leaves an empty file behind.
    file_entries: u64,
    dir: PathBuf,
    next_index: u64,
    next_seq: u64,
    head: String,
    records_since_checkpoint: u64,
    last_checkpoint: Instant,
    unsynced_since: Option<Instant>,
    /// Receipts of the records of the current batch, resolved at its end.
    acks: Vec<Acker>,
    public_key: String,
    /// Held for the writer's lifetime; the OS drops the lock when the process dies.
    _lock: File,
}

impl Writer {
    fn run(mut self) -> Result<(), AuditError> {
        // However the thread ends (a panic included), nothing stays queued, unwritten, with a
        // receipt nobody will resolve, and no `sync` waits for ever.
        let _stopped = StopOnExit(self.shared.clone());
        let mut unwritten = 0;
        let result = self.run_inner(&mut unwritten).map_err(|e| {
            // Stop the queue first, so nothing can be accepted after the count below.
            let cause = format!("{}: {e}", self.config.path.display());
            self.shared.queue.stop(SubmitError::Failed(cause.clone()));
            let discarded = self.shared.queue.discard();
            let lost = unwritten + discarded.len() as u64;
            metrics::counter!("explaind_audit_records_lost_total").increment(lost);
            let reason = format!("the audit writer failed: {cause}");
            for ack in self.acks.drain(..).chain(discarded.into_iter().filter_map(|p| p.ack)) {
                ack.fail(&reason);
            }
            AuditError::Failed(format!(
                "{cause}; {lost} accepted records were not written, and records since the last sync may not be on disk"
            ))
        });
        let mut durable = self.shared.durable.lock().unwrap_or_else(|e| e.into_inner());
        durable.finished = true;
        if let Err(e) = &result {
            durable.failed = Some(e.to_string());
        }
        drop(durable);
        self.shared.durable_changed.notify_all();
        result
    }

    /// On an error, `unwritten` is how many records of the current batch were not known to be
    /// written: those not acknowledged yet.
    fn run_inner(&mut self, unwritten: &mut u64) -> io::Result<()> {
        loop {
            let mut batch = self.shared.queue.pop_batch(MAX_BATCH, self.deadline());
            metrics::gauge!("explaind_audit_queue_depth").set(self.shared.queue.depth() as f64);
            *unwritten = batch.items.len() as u64;
            // All of the batch's receipts first, so a failure halfway fails them with its cause.
            self.acks.extend(batch.items.iter_mut().filter_map(|p| p.ack.take()));
            for pending in batch.items {
                self.write_record(pending.event)?;
            }
            self.finish_batch(batch.last_ticket, batch.finished, unwritten)?;
            if batch.finished {
                return Ok(());
            }
        }
    }

    /// Ends a batch: due checkpoints, one write(2) of the batch's lines, the sync the policy
    /// asks for, and the batch's receipts, each as soon as its record is as durable as
    /// promised.
    fn finish_batch(&mut self, last_ticket: u64, finished: bool, unwritten: &mut u64) -> io::Result<()> {
        if let Some(interval) = self.config.checkpoint_interval
            && self.records_since_checkpoint > 0
            && self.last_checkpoint.elapsed() >= interval
        {
            self.checkpoint("timer", None)?;
        }
        if finished && self.records_since_checkpoint > 0 {
            self.checkpoint("shutdown", None)?;
        }
        self.file.flush()?;
        match self.config.fsync {
            Fsync::EveryRecord => {
                self.sync_through(last_ticket)?;
                self.acknowledge(unwritten);
            }
            Fsync::EveryMillis(ms) => {
                // Written: the records survive the process now; the sync keeps its schedule.
                self.acknowledge(unwritten);
                let due = self.unsynced_since.is_some_and(|since| since.elapsed() >= Duration::from_millis(ms));
                if due || finished {
                    self.sync_through(last_ticket)?;
                }
            }
        }
        Ok(())
    }

    fn acknowledge(&mut self, unwritten: &mut u64) {
        *unwritten = 0;
        for ack in self.acks.drain(..) {
            ack.done();
        }
    }

    /// When the writer must wake without new records: to sync, or to sign waiting records.
    fn deadline(&self) -> Option<Instant> {
        let sync = match (self.config.fsync, self.unsynced_since) {
            (Fsync::EveryMillis(ms), Some(since)) => Some(since + Duration::from_millis(ms)),
            _ => None,
        };
        let sign = match self.config.checkpoint_interval {
            Some(interval) if self.records_since_checkpoint > 0 => Some(self.last_checkpoint + interval),
            _ => None,
        };
        match (sync, sign) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn write_record(&mut self, event: AuditEvent) -> io::Result<()> {
        let record = AuditRecord {
            seq: self.next_seq,
            time: rfc3339(event.time),
            request_id: event.request_id,
            replica: self.config.replica.clone(),
            caller: event.caller,
            rpc: event.rpc,
            model: event.model,
            explainer: event.explainer,
            parameters: event.parameters,
            input_digest: event.input_digest,
            result_digest: event.result_digest,
            evaluation: event.evaluation,
            inputs: match (self.config.store_inputs, event.inputs) {
                (true, Some(bytes)) => Some(base64::engine::general_purpose::STANDARD.encode(bytes)),
                _ => None,
            },
            status: event.status,
            // Whole microseconds, so the number prints as at most three decimals of milliseconds.
            duration_ms: event.duration.as_micros() as f64 / 1e3,
            model_calls: event.model_calls,
            model_rows: event.model_rows,
            prev_hash: self.head.clone(),
        };
        let mut entry = Entry::Record(record);
        let (mut line, mut hash) = format::encode(&entry);
        if self.file_entries > 0 && self.file_len + line.len() as u64 + 1 > self.config.max_file_bytes {
            self.rotate()?;
            // The checkpoint that closed the old file is the new head.
            if let Entry::Record(r) = &mut entry {
                r.prev_hash = self.head.clone();
            }
            (line, hash) = format::encode(&entry);
        }
        self.append_line(line, hash)?;
        self.next_seq += 1;
        self.records_since_checkpoint += 1;
        metrics::counter!("explaind_audit_records_total").increment(1);
        if self.config.checkpoint_every_records > 0 && self.records_since_checkpoint >= self.config.checkpoint_every_records {
            self.checkpoint("records", None)?;
        }
        Ok(())
    }

    fn append_line(&mut self, mut line: Vec<u8>, hash: String) -> io::Result<()> {
        // One write of the line with its newline: a line longer than the buffer goes straight
        // to the file, and splitting it from its newline would leave a window in which a kill
        // leaves a complete-looking line without its end.
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.file_len += line.len() as u64;
        self.file_entries += 1;
        self.head = hash;
        self.unsynced_since.get_or_insert_with(Instant::now);
        Ok(())
    }

    fn checkpoint(&mut self, reason: &str, note: Option<String>) -> io::Result<()> {
        let seq = self.next_seq - 1;
        let time = rfc3339(SystemTime::now());
        let signature = self.config.signing_key.sign(&format::checkpoint_message(seq, &time, &self.head));
        let entry = Entry::Checkpoint(Checkpoint {
            seq,
            time,
            reason: reason.to_owned(),
            replica: self.config.replica.clone(),
            note,
            public_key: self.public_key.clone(),
            signature: hex::encode(signature.to_bytes()),
            prev_hash: self.head.clone(),
        });
        let (line, hash) = format::encode(&entry);
        self.append_line(line, hash)?;
        self.records_since_checkpoint = 0;
        self.last_checkpoint = Instant::now();
        metrics::counter!("explaind_audit_checkpoints_total").increment(1);
        Ok(())
    }

    fn sync(&mut self) -> io::Result<()> {
        if self.unsynced_since.is_none() {
            return Ok(());
        }
        let began = Instant::now();
        self.file.flush()?;
        self.file.get_ref().sync_data()?;
        #[cfg(test)]
        self.shared.syncs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        metrics::histogram!("explaind_audit_write_seconds").record(began.elapsed().as_secs_f64());
        self.unsynced_since = None;
        Ok(())
    }

    /// Syncs, then tells waiters that everything up to `ticket` is durable.
    fn sync_through(&mut self, ticket: u64) -> io::Result<()> {
        self.sync()?;
        let mut durable = self.shared.durable.lock().unwrap_or_else(|e| e.into_inner());
        durable.ticket = durable.ticket.max(ticket);
        drop(durable);
        self.shared.durable_changed.notify_all();
        Ok(())
    }

    /// Closes the active file with a checkpoint, renames it to the next index and starts a new
    /// one. Each step is synced before the next, so a crash anywhere leaves either the old
    /// file in place or a complete rotated file and an empty or missing active one, which
    /// open handles.
    fn rotate(&mut self) -> io::Result<()> {
        if self.records_since_checkpoint > 0 {
            self.checkpoint("rotation", None)?;
        }
        self.sync()?;
        let target = rotated_path(&self.config.path, self.next_index);
        if target.exists() {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} already exists", target.display())));
        }
        std::fs::rename(&self.config.path, &target)?;
        sync_dir(&self.dir)?;
        self.next_index += 1;
        let file = OpenOptions::new().append(true).create_new(true).open(&self.config.path)?;
        sync_dir(&self.dir)?;
        self.file = BufWriter::with_capacity(WRITE_BUFFER, file);
        self.file_len = 0;
        self.file_entries = 0;
        metrics::counter!("explaind_audit_rotations_total").increment(1);
        Ok(())
    }
}
