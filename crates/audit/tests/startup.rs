//! The start-up check of the existing log ([`AuditWriter::startup_check`]).

mod common;

use common::*;
use explaind_audit::*;
use std::path::Path;

fn check(cfg: AuditConfig) -> (Result<StartupReport, VerifyError>, Opened) {
    let (log, mut writer) = AuditLog::open(cfg).unwrap();
    let opened = writer.opened().clone();
    let check = writer.startup_check().expect("the first call hands the check out");
    assert!(writer.startup_check().is_none(), "the check is handed out once");
    // Records written meanwhile are not part of the check, and do not disturb it.
    for i in 0..5 {
        log.submit_acked(event(opened.next_seq + i)).unwrap().wait(std::time::Duration::from_secs(20)).unwrap();
    }
    let result = std::thread::spawn(move || check.run()).join().unwrap();
    writer.shutdown().unwrap();
    (result, opened)
}

/// Flips one byte inside the request id of record `seq` in `file`.
fn tamper(file: &Path, seq: u64) -> usize {
    let mut all = lines(file);
    let at = line_of(&all, seq);
    let pos = all[at].windows(14).position(|w| w == b"\"request_id\":\"").unwrap() + 15;
    all[at][pos] ^= 0x01;
    put_lines(file, &all);
    at + 1
}

#[test]
fn a_good_small_log_verifies_whole() {
    let dir = tempfile::tempdir().unwrap();
    write(config(dir.path()), 25);
    let (result, opened) = check(config(dir.path()));
    let report = result.unwrap();
    assert!(report.whole_log, "{report}");
    assert_eq!((report.skipped_files, report.skipped_bytes, report.from_offset), (0, 0, 0));
    assert_eq!(report.files, vec![active(dir.path())]);
    // The log as it was at open: not the five records written after.
    assert_eq!((report.summary.first_seq, report.summary.last_seq), (Some(1), 25));
    assert_eq!(report.summary.head_hash, opened.head_hash);
    assert_eq!(report.summary.unsigned_records, 0);
}

#[test]
fn an_empty_log_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (result, _) = check(config(dir.path()));
    let report = result.unwrap();
    assert!(report.whole_log);
    assert_eq!((report.summary.records, report.summary.checkpoints), (0, 0));
}

#[test]
fn a_tampered_record_is_reported_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    write(config(dir.path()), 25);
    let line = tamper(&active(dir.path()), 7);
    // Open only reads the end of the log, so it starts; the check finds the record.
    let (result, _) = check(config(dir.path()));
    let e = result.expect_err("a tampered record went unnoticed");
    assert!(matches!(e.reason, Reason::HashMismatch { .. }), "{e}");
    assert_eq!((e.file, e.line, e.record, e.checkpoint), (active(dir.path()), line as u64, 7, false));
}

#[test]
fn a_log_signed_with_another_key_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    write(config(dir.path()), 5);
    let mut cfg = config(dir.path());
    cfg.signing_key = SigningKey::from_bytes(&[9; 32]);
    let (result, _) = check(cfg);
    let e = result.expect_err("checkpoints of another key went unnoticed");
    assert!(matches!(e.reason, Reason::WrongKey { .. }), "{e}");
    assert_eq!((e.record, e.checkpoint), (5, true));
}

fn rotated_log(dir: &Path) -> AuditConfig {
    let mut cfg = config(dir);
    cfg.max_file_bytes = 4 << 10;
    write(cfg.clone(), 120);
    assert!(rotated_path(&active(dir), 4).exists(), "expected at least four rotated files");
    cfg
}

#[test]
fn a_big_log_is_checked_only_from_its_newest_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = rotated_log(dir.path());
    let files = chain_files(&active(dir.path())).unwrap();
    let active_len = std::fs::metadata(active(dir.path())).unwrap().len();
    let newest_rotated = &files[files.len() - 2];
    let rotated_len = std::fs::metadata(newest_rotated).unwrap().len();
    // All of the active file and a part of the newest rotated one.
    cfg.startup_verify_bytes = active_len + rotated_len / 2;
    // A record in an older file, which the check does not read, is tampered with.
    let oldest_seq = match decode(lines(&files[0])[0].strip_suffix(b"\n").unwrap()).unwrap().entry {
        Entry::Record(r) => r.seq,
        Entry::Checkpoint(c) => c.seq + 1,
    };
    tamper(&files[0], oldest_seq);
    let (result, _) = check(cfg.clone());
    let report = result.unwrap();
    assert!(!report.whole_log);
    assert_eq!(report.files, vec![newest_rotated.clone(), active(dir.path())]);
    assert_eq!(report.skipped_files, files.len() - 2);
    assert!(report.from_offset >= rotated_len / 2 && report.from_offset < rotated_len, "{report}");
    // The check starts at a line.
    let newest_bytes = std::fs::read(newest_rotated).unwrap();
    assert_eq!(newest_bytes[report.from_offset as usize - 1], b'\n');
    let older: u64 = files[..files.len() - 2].iter().map(|f| std::fs::metadata(f).unwrap().len()).sum();
    assert_eq!(report.skipped_bytes, older + report.from_offset);
    assert_eq!(report.summary.last_seq, 120);
    assert!(report.summary.first_seq.unwrap() > 1);

    // A record in the part it reads is found, with its line in the whole file. (The records
    // `check` wrote may have rotated files: take the newest again.)
    let files = chain_files(&active(dir.path())).unwrap();
    let newest_rotated = &files[files.len() - 2];
    let active_len = std::fs::metadata(active(dir.path())).unwrap().len();
    cfg.startup_verify_bytes = active_len + std::fs::metadata(newest_rotated).unwrap().len() / 2;
    let newest_lines = lines(newest_rotated);
    let last_record = newest_lines
        .iter()
        .rev()
        .find_map(|l| match decode(l.strip_suffix(b"\n").unwrap()).unwrap().entry {
            Entry::Record(r) => Some(r.seq),
            Entry::Checkpoint(_) => None,
        })
        .unwrap();
    let line = tamper(newest_rotated, last_record);
    let (result, _) = check(cfg);
    let e = result.expect_err("a tampered record in the checked part went unnoticed");
    assert!(matches!(e.reason, Reason::HashMismatch { .. }), "{e}");
    assert_eq!((e.file.as_path(), e.line, e.record), (newest_rotated.as_path(), line as u64, last_record));
}

#[test]
fn a_zero_limit_reads_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = rotated_log(dir.path());
    cfg.startup_verify_bytes = 0;
    let (result, _) = check(cfg);
    let report = result.unwrap();
    assert_eq!(report.files, vec![active(dir.path())]);
    assert!(!report.whole_log);
    // Nothing of it was read: the summary is of an empty range.
    assert_eq!(report.summary.records, 0);
}
