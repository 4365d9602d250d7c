//! Checking a log: every line's hash, every link, the seq order, and every checkpoint's
//! signature. Stops at the first broken entry and says which record it is.

use crate::format::{self, Entry, GENESIS_HASH, LineError};
use ed25519_dalek::{Signature, VerifyingKey};
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Accept a log whose first file does not start at record 1 (older files were deleted by
    /// retention): the first entry is trusted as the anchor. Off by default, because then
    /// deleting the first records would go unnoticed.
    pub allow_partial: bool,
}

/// What a successful verification saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifySummary {
    pub files: usize,
    pub records: u64,
    pub checkpoints: u64,
    /// Seq of the first record read (1 unless `allow_partial`), None for a log without records.
    pub first_seq: Option<u64>,
    /// Seq of the last record (0 for a log without records).
    pub last_seq: u64,
    /// Hash of the last entry: anchor it somewhere else to detect truncation later.
    pub head_hash: String,
    /// Seq covered by the last valid checkpoint, if any.
    pub last_signed_seq: Option<u64>,
    /// Records after the last checkpoint: chained but not yet signed.
    pub unsigned_records: u64,
    /// An incomplete last line (a write cut short by a crash), which the writer moves aside
    /// on its next open. Everything before it verified.
    pub torn_tail: Option<TornLine>,
    /// The replica names the entries carry, in order of first appearance: one for a fleet
    /// member's chain, none for a daemon that was not named (see [`crate::AuditConfig::replica`]).
    pub replicas: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornLine {
    pub file: PathBuf,
    /// Byte offset where the incomplete line begins.
    pub offset: u64,
    pub bytes: u64,
}

/// The first broken entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError {
    pub file: PathBuf,
    /// Line in `file`, from 1.
    pub line: u64,
    /// The record at fault: for a record line, the seq that belongs at this position; for a
    /// checkpoint, the seq of the record it follows.
    pub record: u64,
    /// Whether the broken line is a checkpoint (as far as it could be read).
    pub checkpoint: bool,
    pub reason: Reason,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    Io(String),
    /// An incomplete line anywhere but at the very end of the last file.
    TornLine,
    /// Not a line of this format (no hash member, bad JSON, unknown kind, ...).
    Malformed(String),
    /// The line's bytes do not hash to its `hash`: it was altered.
    HashMismatch {
        stored: String,
        computed: String,
    },
    /// The line's `prev_hash` is not the hash of the entry before it: an entry was removed,
    /// inserted or moved here, or the files are out of order.
    PrevHashMismatch {
        expected: String,
        found: String,
    },
    /// The record's seq is not the next one: a record was deleted, inserted or moved.
    SeqMismatch {
        expected: u64,
        found: u64,
    },
    /// A checkpoint claims a different last record than the one before it.
    CheckpointSeq {
        expected: u64,
        found: u64,
    },
    /// A checkpoint names another public key than the one given.
    WrongKey {
        found: String,
    },
    BadSignature,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Io(e) => write!(f, "cannot read: {e}"),
            Reason::TornLine => write!(f, "incomplete line (torn write) before the end of the log"),
            Reason::Malformed(e) => write!(f, "malformed line: {e}"),
            Reason::HashMismatch { stored, computed } => {
                write!(f, "hash mismatch (the line was altered): stored {stored}, computed {computed}")
            }
            Reason::PrevHashMismatch { expected, found } => write!(
                f,
                "prev_hash {found} is not the hash of the entry before ({expected}): an entry was removed, inserted or reordered"
            ),
            Reason::SeqMismatch { expected, found } => {
                write!(f, "expected record {expected}, found record {found}: a record was deleted, inserted or reordered")
            }
            Reason::CheckpointSeq { expected, found } => {
                write!(f, "checkpoint claims last record {found}, but the record before it is {expected}")
            }
            Reason::WrongKey { found } => write!(f, "checkpoint is signed by another key ({found})"),
            Reason::BadSignature => write!(f, "checkpoint signature does not verify"),
        }
    }
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what =
            if self.checkpoint { format!("checkpoint after record {}", self.record) } else { format!("record {}", self.record) };
        write!(f, "{} line {} ({what}): {}", self.file.display(), self.line, self.reason)
    }
}

impl std::error::Error for VerifyError {}

impl fmt::Display for VerifySummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OK: {} records", self.records)?;
        if let Some(first) = self.first_seq {
            write!(f, " ({first}..={})", self.last_seq)?;
        }
        write!(f, ", {} checkpoints in {} files; head {}", self.checkpoints, self.files, self.head_hash)?;
        if !self.replicas.is_empty() {
            write!(f, "; replica {}", self.replicas.join(", "))?;
        }
        match self.last_signed_seq {
            Some(seq) => write!(f, "; signed through record {seq}")?,
            None => write!(f, "; no checkpoint")?,
        }
        if self.unsigned_records > 0 {
            write!(f, ", {} records after the last checkpoint", self.unsigned_records)?;
        }
        if let Some(t) = &self.torn_tail {
            write!(f, "; torn last line of {} bytes at byte {} of {}", t.bytes, t.offset, t.file.display())?;
        }
        Ok(())
    }
}

/// Verifies `files`, in chain order (oldest first, the active file last; see
/// [`crate::chain_files`]), with the checkpoint public key.
pub fn verify<P: AsRef<Path>>(files: &[P], key: &VerifyingKey) -> Result<VerifySummary, VerifyError> {
    verify_with(files, key, &VerifyOptions::default())
}

pub fn verify_with<P: AsRef<Path>>(
    files: &[P],
    key: &VerifyingKey,
    options: &VerifyOptions,
) -> Result<VerifySummary, VerifyError> {
    let paths: Vec<&Path> = files.iter().map(AsRef::as_ref).collect();
    verify_sources(&paths, |i| File::open(paths[i]).map(BufReader::new), key, options)
}

/// Verifies the files `paths` names, reading each through what `open` returns for its index
/// (called once per file, in order, only when that file is reached). The names are for the
/// report only.
pub(crate) fn verify_sources<R: BufRead>(
    paths: &[&Path],
    mut open: impl FnMut(usize) -> io::Result<R>,
    key: &VerifyingKey,
    options: &VerifyOptions,
) -> Result<VerifySummary, VerifyError> {
    let key_hex = hex::encode(key.to_bytes());
    let mut prev = GENESIS_HASH.to_owned();
    let mut next_seq = 1u64;
    let mut anchored = !options.allow_partial;
    let mut summary = VerifySummary {
        files: paths.len(),
        records: 0,
        checkpoints: 0,
        first_seq: None,
        last_seq: 0,
        head_hash: GENESIS_HASH.to_owned(),
        last_signed_seq: None,
        unsigned_records: 0,
        torn_tail: None,
        replicas: Vec::new(),
    };
    for (index, &path) in paths.iter().enumerate() {
        let last_file = index + 1 == paths.len();
        let fail = |line: u64, record: u64, checkpoint: bool, reason: Reason| VerifyError {
            file: path.to_path_buf(),
            line,
            record,
            checkpoint,
            reason,
        };
        let mut reader = open(index).map_err(|e| fail(0, next_seq, false, Reason::Io(e.to_string())))?;
        let mut buf = Vec::new();
        let mut offset = 0u64;
        let mut line_no = 0u64;
        loop {
            buf.clear();
            let n =
                reader.read_until(b'\n', &mut buf).map_err(|e| fail(line_no + 1, next_seq, false, Reason::Io(e.to_string())))?;
            if n == 0 {
                break;
            }
            line_no += 1;
            if buf.last() != Some(&b'\n') {
                if last_file {
                    summary.torn_tail = Some(TornLine { file: path.to_path_buf(), offset, bytes: n as u64 });
                    break;
                }
                return Err(fail(line_no, next_seq, false, Reason::TornLine));
            }
            offset += n as u64;
            buf.pop();
            let line = match format::decode(&buf) {
                Ok(line) => line,
                Err(e) => {
                    // Say whether it looked like a checkpoint, for the message only.
                    const TAG: &[u8] = b"\"kind\":\"checkpoint\"";
                    let checkpoint = buf.windows(TAG.len()).any(|w| w == TAG);
                    let record = if checkpoint { next_seq - 1 } else { next_seq };
                    let reason = match e {
                        LineError::HashMismatch { stored, computed } => Reason::HashMismatch { stored, computed },
                        other => Reason::Malformed(other.to_string()),
                    };
                    return Err(fail(line_no, record, checkpoint, reason));
                }
            };
            let replica = match &line.entry {
                Entry::Record(r) => &r.replica,
                Entry::Checkpoint(c) => &c.replica,
            };
            if !replica.is_empty() && !summary.replicas.contains(replica) {
                summary.replicas.push(replica.clone());
            }
            if !anchored {
                // allow_partial: the first entry is taken as it is.
                prev = line.entry.prev_hash().to_owned();
                next_seq = match &line.entry {
                    Entry::Record(r) => r.seq,
                    Entry::Checkpoint(c) => c.seq + 1,
                };
                anchored = true;
            }
            match &line.entry {
                Entry::Record(r) => {
                    if r.seq != next_seq {
                        return Err(fail(line_no, next_seq, false, Reason::SeqMismatch { expected: next_seq, found: r.seq }));
                    }
                    if r.prev_hash != prev {
                        return Err(fail(
                            line_no,
                            next_seq,
                            false,
                            Reason::PrevHashMismatch { expected: prev, found: r.prev_hash.clone() },
                        ));
                    }
                    summary.first_seq.get_or_insert(r.seq);
                    summary.records += 1;
                    summary.unsigned_records += 1;
                    summary.last_seq = r.seq;
                    next_seq += 1;
                }
                Entry::Checkpoint(c) => {
                    let covered = next_seq - 1;
                    let bad = |reason| Err(fail(line_no, covered, true, reason));
                    if c.seq != covered {
                        return bad(Reason::CheckpointSeq { expected: covered, found: c.seq });
                    }
                    if c.prev_hash != prev {
                        return bad(Reason::PrevHashMismatch { expected: prev, found: c.prev_hash.clone() });
                    }
                    if c.public_key != key_hex {
                        return bad(Reason::WrongKey { found: c.public_key.clone() });
                    }
                    let mut signature = [0u8; 64];
                    if hex::decode_to_slice(&c.signature, &mut signature).is_err() {
                        return bad(Reason::BadSignature);
                    }
                    let message = format::checkpoint_message(c.seq, &c.time, &c.prev_hash);
                    if key.verify_strict(&message, &Signature::from_bytes(&signature)).is_err() {
                        return bad(Reason::BadSignature);
                    }
                    summary.checkpoints += 1;
                    summary.last_signed_seq = Some(c.seq);
                    summary.unsigned_records = 0;
                }
            }
            prev = line.hash;
        }
    }
    summary.head_hash = prev;
    Ok(summary)
}
