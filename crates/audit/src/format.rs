//! Line encoding, the hash rule, the checkpoint message and UTC timestamps. Everything a third
//! party needs to re-implement is here and in the crate documentation.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::time::{SystemTime, UNIX_EPOCH};

/// `prev_hash` of the first entry of a log: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Every line ends with this, then 64 hex digits, then [`HASH_SUFFIX_END`].
const HASH_SUFFIX_START: &[u8] = b",\"hash\":\"";
const HASH_SUFFIX_END: &[u8] = b"\"}";
const HASH_SUFFIX_LEN: usize = HASH_SUFFIX_START.len() + 64 + HASH_SUFFIX_END.len();

/// Domain separation for checkpoint signatures, so a signature can never be replayed as a
/// signature over anything else the same key might sign.
pub const CHECKPOINT_DOMAIN: &str = "explaind-audit checkpoint v1";

/// Which RPC a record is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rpc {
    Predict,
    Explain,
}

impl Rpc {
    /// The RPC's name, as records and metrics write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Rpc::Predict => "Predict",
            Rpc::Explain => "Explain",
        }
    }
}

/// The model that served the request (all empty when the request never named a loaded model).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModelIdentity {
    pub name: String,
    pub version: String,
    /// SHA-256 of the model file, hex.
    pub sha256: String,
}

/// The explainer plugin that served an Explain request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExplainerIdentity {
    pub name: String,
    pub version: String,
    /// SHA-256 of the plugin's shared library, hex.
    pub file_sha256: String,
}

/// How the request ended: the gRPC status code (0 = OK) and its message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub code: i32,
    pub message: String,
}

/// One request, as written to the log (`"kind": "record"`). Field order is the line's order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// 1, 2, 3, ... over the whole chain, across rotated files.
    pub seq: u64,
    /// When the request arrived, RFC 3339 UTC with milliseconds (`2025-01-31T12:00:00.123Z`).
    pub time: String,
    pub request_id: String,
    /// The daemon that wrote the record, in a fleet (`server.replica_id`); absent when unnamed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub replica: String,
    /// Who called, as the daemon identified them (certificate subject, token id, ...).
    pub caller: String,
    pub rpc: Rpc,
    pub model: ModelIdentity,
    /// Absent for Predict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explainer: Option<ExplainerIdentity>,
    /// The request's parameters after defaults, as JSON.
    pub parameters: serde_json::Value,
    /// Digest of the request's inputs, as computed by the daemon.
    pub input_digest: String,
    /// Digest of the response's result; empty when the request failed.
    pub result_digest: String,
    /// The faithfulness metrics of the explanation: `{"seed", "metrics": [{"name",
    /// "parameters", "values"}]}`; absent when none were asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluation: Option<serde_json::Value>,
    /// The inputs themselves, base64, only when the log is configured to store them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inputs: Option<String>,
    pub status: Outcome,
    pub duration_ms: f64,
    /// Forward passes the request caused, including an explainer's internal perturbation runs
    /// (those are counted here and never logged as Predict records of their own).
    pub model_calls: u64,
    pub model_rows: u64,
    pub prev_hash: String,
}

/// A signed statement over the chain head (`"kind": "checkpoint"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Seq of the last record before this checkpoint (0 when there is none yet).
    pub seq: u64,
    /// When the checkpoint was written, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// Why it was written: `records`, `timer`, `rotation`, `shutdown` or `open`.
    pub reason: String,
    /// The daemon whose chain this is, as its records name it; absent when unnamed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub replica: String,
    /// What the writer found on open, e.g. a torn tail it moved aside. Hashed, not signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The Ed25519 public key that signed, hex (32 bytes).
    pub public_key: String,
    /// Ed25519 signature over [`checkpoint_message`], hex (64 bytes).
    pub signature: String,
    /// Hash of the entry before this one: the chain head being signed.
    pub prev_hash: String,
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[allow(clippy::large_enum_variant, reason = "entries are built and written one at a time; boxing buys nothing")]
pub enum Entry {
    Record(AuditRecord),
    Checkpoint(Checkpoint),
}

impl Entry {
    pub fn prev_hash(&self) -> &str {
        match self {
            Entry::Record(r) => &r.prev_hash,
            Entry::Checkpoint(c) => &c.prev_hash,
        }
    }

    /// The record's seq, or for a checkpoint the seq of the last record it covers.
    pub fn seq(&self) -> u64 {
        match self {
            Entry::Record(r) => r.seq,
            Entry::Checkpoint(c) => c.seq,
        }
    }
}

/// A parsed line whose hash has been checked against its bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub entry: Entry,
    pub hash: String,
}

/// Why a line could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    #[error("the line does not end with a \"hash\" member of 64 lowercase hex digits")]
    NoHash,
    #[error("hash mismatch: the line says {stored}, its bytes hash to {computed}")]
    HashMismatch { stored: String, computed: String },
    #[error("not a valid entry: {0}")]
    Json(String),
}

/// Serialises `entry` and appends its hash: the complete line, without the newline.
pub fn encode(entry: &Entry) -> (Vec<u8>, String) {
    let mut bytes = serde_json::to_vec(entry).expect("entries are plain data and always serialise");
    debug_assert_eq!(bytes.last(), Some(&b'}'));
    let hash = hex::encode(Sha256::digest(&bytes));
    bytes.pop();
    bytes.extend_from_slice(HASH_SUFFIX_START);
    bytes.extend_from_slice(hash.as_bytes());
    bytes.extend_from_slice(HASH_SUFFIX_END);
    (bytes, hash)
}

/// The SHA-256 of a line as the format defines it: over the line with its trailing
/// `,"hash":"<64 hex>"` member removed (so the bytes end in `}`). Returns the stored hash too.
pub fn line_hash(line: &[u8]) -> Result<(String, String), LineError> {
    if line.len() < HASH_SUFFIX_LEN + 1 {
        return Err(LineError::NoHash);
    }
    let split = line.len() - HASH_SUFFIX_LEN;
    let (body, suffix) = line.split_at(split);
    let stored = &suffix[HASH_SUFFIX_START.len()..HASH_SUFFIX_START.len() + 64];
    if !suffix.starts_with(HASH_SUFFIX_START)
        || !suffix.ends_with(HASH_SUFFIX_END)
        || !stored.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b))
    {
        return Err(LineError::NoHash);
    }
    let mut hasher = Sha256::new();
    hasher.update(body);
    hasher.update(b"}");
    let computed = hex::encode(hasher.finalize());
    Ok((String::from_utf8(stored.to_vec()).expect("checked ASCII"), computed))
}

/// Checks a line's hash, then parses it.
pub fn decode(line: &[u8]) -> Result<Line, LineError> {
    let (stored, computed) = line_hash(line)?;
    if stored != computed {
        return Err(LineError::HashMismatch { stored, computed });
    }
    let entry: Entry = serde_json::from_slice(line).map_err(|e| LineError::Json(e.to_string()))?;
    Ok(Line { entry, hash: stored })
}

/// The bytes a checkpoint's signature is over (UTF-8, each field on its own line):
///
/// ```text
/// explaind-audit checkpoint v1\nseq=<seq>\ntime=<time>\nhead=<prev_hash>\n
/// ```
pub fn checkpoint_message(seq: u64, time: &str, head: &str) -> Vec<u8> {
    format!("{CHECKPOINT_DOMAIN}\nseq={seq}\ntime={time}\nhead={head}\n").into_bytes()
}

/// RFC 3339 UTC with milliseconds. Times before 1970 are written as the epoch: a daemon clock
/// that far off is not worth a calendar library.
pub fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Lowercase hex SHA-256, for the daemon's input and result digests.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn record(seq: u64) -> Entry {
        Entry::Record(AuditRecord {
            seq,
            time: "2025-01-31T12:00:00.123Z".into(),
            request_id: "r1".into(),
            replica: "explaind-0".into(),
            caller: "cert:CN=alice".into(),
            rpc: Rpc::Explain,
            model: ModelIdentity { name: "m".into(), version: "1".into(), sha256: "ab".repeat(32) },
            explainer: Some(ExplainerIdentity { name: "occlusion".into(), version: "0.1".into(), file_sha256: "cd".repeat(32) }),
            parameters: serde_json::json!({"window": [1, 3, 3], "note": "a \"quoted\"\nline"}),
            input_digest: "00".repeat(32),
            result_digest: "11".repeat(32),
            evaluation: None,
            inputs: None,
            status: Outcome { code: 0, message: String::new() },
            duration_ms: 1.5,
            model_calls: 10,
            model_rows: 640,
            prev_hash: GENESIS_HASH.into(),
        })
    }

    #[test]
    fn a_line_round_trips_and_its_hash_is_over_the_line_without_the_hash_member() {
        let entry = record(1);
        let (line, hash) = encode(&entry);
        assert!(!line.contains(&b'\n'), "a newline inside a string must be escaped");
        let text = std::str::from_utf8(&line).unwrap();
        assert!(text.starts_with("{\"kind\":\"record\",\"seq\":1,"), "{text}");
        let without = format!("{}}}", text.strip_suffix(&format!(",\"hash\":\"{hash}\"}}")).unwrap());
        assert_eq!(sha256_hex(without.as_bytes()), hash);
        assert_eq!(decode(&line).unwrap(), Line { entry, hash });
    }

    #[test]
    fn any_changed_byte_is_caught() {
        let (line, _) = encode(&record(7));
        for i in 0..line.len() {
            let mut bad = line.clone();
            bad[i] ^= 0x01;
            assert!(decode(&bad).is_err(), "flipping byte {i} went unnoticed");
        }
    }

    #[test]
    fn timestamps_are_utc_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // 2024-02-29T23:59:59.999Z: a leap day, checked against `date -u -d @1709251199`.
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_millis(1_709_251_199_999)), "2024-02-29T23:59:59.999Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00.000Z");
    }
}
