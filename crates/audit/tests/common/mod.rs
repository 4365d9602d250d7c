#![allow(dead_code)]

use explaind_audit::*;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

pub fn key() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

/// A request record with a size that varies with `i`, so lines do not all have one length.
pub fn event(i: u64) -> AuditEvent {
    let explain = !i.is_multiple_of(3);
    AuditEvent {
        time: SystemTime::now(),
        request_id: format!("req-{i}"),
        caller: "cert:CN=client-a".into(),
        rpc: if explain { Rpc::Explain } else { Rpc::Predict },
        model: ModelIdentity { name: "digits-cnn".into(), version: "1".into(), sha256: "ab".repeat(32) },
        explainer: explain.then(|| ExplainerIdentity {
            name: "occlusion".into(),
            version: "0.1.0".into(),
            file_sha256: "cd".repeat(32),
        }),
        parameters: serde_json::json!({"window": [1, 3, 3], "i": i}),
        input_digest: sha256_hex(&i.to_le_bytes()),
        result_digest: sha256_hex(format!("result {i}").as_bytes()),
        inputs: Some(vec![(i % 251) as u8; (i % 97) as usize]),
        status: Outcome { code: if i.is_multiple_of(11) { 3 } else { 0 }, message: String::new() },
        duration: Duration::from_micros(1000 + i),
        model_calls: 1 + i % 40,
        model_rows: 64 * (1 + i % 40),
        evaluation: None,
    }
}

pub fn config(dir: &Path) -> AuditConfig {
    let mut config = AuditConfig::new(dir.join("audit.log"), key());
    config.fsync = Fsync::EveryMillis(5);
    config.checkpoint_every_records = 10;
    config.checkpoint_interval = None;
    config
}

/// Writes `n` records and shuts down.
pub fn write(config: AuditConfig, n: u64) -> Opened {
    let (log, writer) = AuditLog::open(config).unwrap();
    let opened = writer.opened().clone();
    for i in 0..n {
        log.submit(event(opened.next_seq + i)).unwrap();
    }
    writer.shutdown().unwrap();
    opened
}

pub fn active(dir: &Path) -> PathBuf {
    dir.join("audit.log")
}

pub fn lines(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    bytes.split_inclusive(|b| *b == b'\n').map(<[u8]>::to_vec).collect()
}

pub fn put_lines(path: &Path, lines: &[Vec<u8>]) {
    std::fs::write(path, lines.concat()).unwrap();
}

/// Index (from 0) of the line holding record `seq`.
pub fn line_of(lines: &[Vec<u8>], seq: u64) -> usize {
    let needle = format!("{{\"kind\":\"record\",\"seq\":{seq},");
    lines.iter().position(|l| l.starts_with(needle.as_bytes())).unwrap_or_else(|| panic!("no record {seq}"))
}

pub fn verify_log(dir: &Path) -> Result<VerifySummary, VerifyError> {
    verify(&chain_files(&active(dir)).unwrap(), &key().verifying_key())
}
