//! The tamper-evident audit log of explaind.
//!
//! Every Predict and Explain request leaves one record. Records are hash-chained, and
//! checkpoints signed with Ed25519 vouch for the chain. A dedicated writer thread does the I/O
//! behind a bounded queue: a request handler enqueues ([`AuditLog::submit_acked`]) and waits
//! on the returned [`Receipt`] before it answers, so a request is never answered before its
//! record is as durable as the [`Fsync`] policy promises (see "Acknowledged records" below).
//! ([`AuditLog::submit`] only enqueues, and promises nothing about when the record is written.)
//!
//! # Acknowledged records
//!
//! The writer takes what is queued in batches (up to 256 records), appends their lines, and
//! ends each batch with one write(2) of all of them (more only when a batch exceeds the 64 KiB
//! buffer, or rotates a file). What happens next, and so what an `Ok` receipt means, depends
//! on [`AuditConfig::fsync`]:
//!
//! | policy | the receipt resolves `Ok` after | an acknowledged record survives |
//! |---|---|---|
//! | [`Fsync::EveryRecord`] (`fsync_every_ms = 0`) | the `fdatasync` that ends its batch (one per batch) | a crash of the process (`kill -9` included), of the kernel, and a power cut |
//! | [`Fsync::EveryMillis`]`(ms)` (`fsync_every_ms = ms`) | the write(2) that ends its batch; syncs follow at most `ms` after the first unsynced line | a crash of the process (`kill -9` included), since the kernel holds the data; **not** a power cut or kernel crash within `ms` of the write, which may lose the newest acknowledged records (the chain stays verifiable: the next open repairs a torn tail, and the lost records are simply absent) |
//!
//! A receipt resolves with [`AckError::Failed`] when the writer fails (a write, sync or
//! rotation error) or stops before that point; then the record must be treated as not logged
//! (the daemon withholds the result). After a failure the log accepts no more records. A
//! shutdown ([`AuditWriter::shutdown`]) writes and syncs everything queued before it, and
//! resolves those receipts `Ok`.
//!
//! # Start-up check
//!
//! [`AuditLog::open`] reads only the end of the log. [`AuditWriter::startup_check`] hands out a
//! [`StartupCheck`] of the log as it was at open, limited to its newest
//! [`AuditConfig::startup_verify_bytes`] (128 MiB by default: the active file and the newest
//! rotated one at the default file size), which [`StartupCheck::run`] verifies with
//! [`verify`]'s code on any thread, against the public key of the signing key. Older parts are
//! not read then; run `explaind audit verify` for the whole log.
//!
//! # File format (version 1)
//!
//! This section is the whole specification: a third party can verify a log with nothing else.
//!
//! ## Files
//!
//! - The active file is the configured path, e.g. `audit.log`.
//! - When a record would take it past the size limit, it is closed with a checkpoint and renamed
//!   to `audit.log.00000001`, `audit.log.00000002`, ... (8-digit index, oldest first), and a new
//!   `audit.log` begins. The chain runs through the files: concatenated in that order (rotated
//!   files by index, the active one last) they are one log.
//! - Beside them: `audit.log.lock` (held by the writing process), and
//!   `audit.log.torn-<seq>-<unix ms>`, torn tails moved aside after a crash (see below). Neither
//!   is part of the chain.
//!
//! ## Lines
//!
//! - Each file is JSON Lines: UTF-8, one JSON object per line, each line ending in `\n` (0x0A).
//!   A line never contains a raw newline; newlines inside strings are escaped.
//! - Each line is one *entry*. Its first member is `"kind"`, either `"record"` or
//!   `"checkpoint"`. Its last member is `"hash"`.
//!
//! **What is hashed.** Every line ends with the 75 bytes `,"hash":"` + 64 lowercase hex digits
//! + `"}`.
//! - Remove those 75 bytes and put back the closing `}`. The result is the entry without its
//!   hash member, byte for byte as written.
//! - `hash` is the lowercase hex SHA-256 of those bytes.
//! - Nothing is re-serialised or canonicalised: the verifier hashes the bytes that are in the
//!   file. So a JSON library's key order or number formatting does not matter.
//!
//! **The chain.**
//! - Every entry has `prev_hash`: the `hash` of the entry just before it, in the previous file
//!   if it is the first entry of a file.
//! - The very first entry of a log has 64 zeros.
//! - `prev_hash` is inside the hashed bytes. So changing, removing, inserting or reordering any
//!   entry breaks the chain from there on.
//!
//! ## Records (`"kind":"record"`)
//!
//! Members, in order:
//!
//! | member | type | meaning |
//! |---|---|---|
//! | `seq` | integer | 1, 2, 3, ... with no gaps over the whole log; checkpoints take no number |
//! | `time` | string | when the request arrived, RFC 3339 UTC with milliseconds |
//! | `request_id` | string | the daemon's request id |
//! | `replica` | string, absent when unnamed | the daemon that wrote the record, in a fleet (its `replica_id`) |
//! | `caller` | string | the caller's identity (certificate subject, token id, ...) |
//! | `rpc` | string | `"Predict"` or `"Explain"` |
//! | `model` | object | `name`, `version`, `sha256` of the model file |
//! | `explainer` | object, absent for Predict | `name`, `version`, `file_sha256` of the plugin library |
//! | `parameters` | JSON | the request's parameters |
//! | `input_digest` | string | digest of the inputs |
//! | `result_digest` | string | digest of the result (empty on failure) |
//! | `evaluation` | object, absent unless asked for | the faithfulness metrics of the explanation: `seed`, and per metric its `name`, `parameters` (defaults filled in) and `values` ([N][T]) |
//! | `inputs` | string, usually absent | the inputs themselves, standard base64; only when the log is configured to keep them |
//! | `status` | object | `code` (gRPC status code, 0 = OK) and `message` |
//! | `duration_ms` | number | time to answer |
//! | `model_calls`, `model_rows` | integers | forward passes the request caused, counting an explainer's internal ones (which are never logged as records of their own) |
//! | `prev_hash`, `hash` | strings | the chain, as above |
//!
//! ## Checkpoints (`"kind":"checkpoint"`)
//!
//! Members, in order:
//! - `seq`: the seq of the last record before the checkpoint (0 if there is none).
//! - `time`: RFC 3339 UTC with milliseconds.
//! - `reason`: `records` (every N records), `timer`, `rotation` (the last entry of a rotated
//!   file), `shutdown`, or `open` (on start, when the log ended in unsigned records or a torn
//!   tail was repaired).
//! - `replica`: optional; the daemon whose chain this is, as in its records.
//! - `note`: optional; e.g. which file a torn tail was moved to.
//! - `public_key`: 32-byte Ed25519 public key, hex.
//! - `signature`: 64-byte Ed25519 signature, hex.
//! - `prev_hash`, `hash`: the chain, as above.
//!
//! **What is signed.** The signature is Ed25519 (RFC 8032, pure, no prehash) over these UTF-8
//! bytes, where each `\n` is one 0x0A byte:
//!
//! ```text
//! explaind-audit checkpoint v1\nseq=<seq in decimal>\ntime=<time>\nhead=<prev_hash>\n
//! ```
//!
//! `head` is the checkpoint's `prev_hash`, the hash of the entry before it. That hash commits
//! to every earlier entry, so one valid signature vouches for the whole log up to that point.
//! `reason` and `note` are covered by the checkpoint's own hash, and so by the next
//! checkpoint's signature.
//!
//! ## Keys
//!
//! Key files hold one line of 64 lowercase hex digits:
//! - the secret file holds the 32-byte seed (the RFC 8032 private key);
//! - `<secret>.pub` holds the public key.
//!
//! [`generate_key_file`] writes both.
//!
//! ## Verifying
//!
//! For each line in order:
//! 1. Check the hash.
//! 2. Check `prev_hash` against the previous line's `hash`.
//! 3. For a record, check that `seq` is the previous record's plus one.
//! 4. For a checkpoint, check that `seq` equals the last record's seq, that `public_key` is
//!    the expected key, and that the signature verifies.
//!
//! Records after the last checkpoint are chained but not signed yet. A last line without its
//! `\n` is a write cut short by a crash. It is reported as a torn tail, and nothing before it
//! is affected. Removing whole lines from the end cannot be seen from the log alone. Keep
//! [`VerifySummary::head_hash`] (or a checkpoint) somewhere else to detect that.
//!
//! ## A fleet
//!
//! Each replica writes its own log and chain; `replica` names it in every entry. Verify each
//! chain on its own, then check that no two chains name the same replica and no chain names
//! two ([`verify_fleet`]). The chains are not linked to each other: a replica's records are
//! vouched for by its own checkpoints only.
//!
//! # Crashes
//!
//! Records are written whole, in order. A crash can leave only an incomplete last line (or,
//! after a power cut, complete lines that are not JSON). When [`AuditLog::open`] starts, it
//! does four things:
//! 1. It copies that tail to `audit.log.torn-<last good seq>-<unix ms>` and syncs the copy.
//! 2. It truncates the active file to the last good entry.
//! 3. It continues the chain from that entry.
//! 4. It writes an `open` checkpoint whose note names the copy.
//!
//! A complete line that *is* JSON but fails its hash was not written by a crash. In that case
//! open refuses to start ([`AuditError::Corrupt`]) and leaves the file alone.

mod ack;
mod find;
mod fleet;
mod format;
mod keys;
mod queue;
mod startup;
mod verify;
mod writer;

pub use ack::{AckError, Receipt};
pub use find::{MetricMatch, MetricQuery, find_metric};
pub use fleet::{Chain, ChainReport, FleetProblem, FleetReport, verify_fleet};
pub use startup::{StartupCheck, StartupReport};

pub use ed25519_dalek::{SigningKey, VerifyingKey};
pub use format::{
    AuditRecord, CHECKPOINT_DOMAIN, Checkpoint, Entry, ExplainerIdentity, GENESIS_HASH, Line, LineError, ModelIdentity, Outcome,
    Rpc, checkpoint_message, decode, encode, rfc3339, sha256_hex,
};
pub use keys::{KeyError, generate_key_file, load_signing_key, load_verifying_key, public_key_path};
pub use queue::{OnFull, SubmitError};
pub use verify::{Reason, TornLine, VerifyError, VerifyOptions, VerifySummary, verify, verify_with};
pub use writer::{
    AuditConfig, AuditError, AuditEvent, AuditLog, AuditWriter, Fsync, Opened, SyncError, TornTail, chain_files, rotated_path,
};

#[cfg(test)]
mod tests;
