//! The chain and its checks: what verify accepts, and that each kind of tampering is caught
//! at the right record.

mod common;

use common::*;
use explaind_audit::*;

fn fresh(n: u64) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(config(dir.path()), n);
    dir
}

fn expect_error(dir: &std::path::Path) -> VerifyError {
    match verify_log(dir) {
        Ok(summary) => panic!("tampering went unnoticed: {summary}"),
        Err(e) => e,
    }
}

#[test]
fn a_written_log_verifies() {
    let dir = fresh(25);
    let summary = verify_log(dir.path()).unwrap();
    assert_eq!(summary.records, 25);
    assert_eq!(summary.first_seq, Some(1));
    assert_eq!(summary.last_seq, 25);
    // Every 10 records, then the shutdown one.
    assert_eq!(summary.checkpoints, 3);
    assert_eq!((summary.last_signed_seq, summary.unsigned_records), (Some(25), 0));
    assert_eq!(summary.torn_tail, None);
    let lines = lines(&active(dir.path()));
    assert_eq!(lines.len(), 28);
    assert!(lines[0].ends_with(b"\n") && lines[0].starts_with(b"{\"kind\":\"record\",\"seq\":1,"));
    let last = decode(lines[27].strip_suffix(b"\n").unwrap()).unwrap();
    assert_eq!(summary.head_hash, last.hash);
    let Entry::Checkpoint(c) = last.entry else { panic!("the log does not end with a checkpoint") };
    assert_eq!((c.seq, c.reason.as_str()), (25, "shutdown"));
}

#[test]
fn flipping_any_byte_of_a_record_names_that_record() {
    let dir = fresh(25);
    let path = active(dir.path());
    let original = lines(&path);
    let at = line_of(&original, 7);
    // Every byte but the newline: the hash covers all of them, and the hash itself is checked.
    for i in 0..original[at].len() - 1 {
        let mut tampered = original.clone();
        tampered[at][i] ^= 0x01;
        put_lines(&path, &tampered);
        let e = expect_error(dir.path());
        assert_eq!((e.record, e.line, e.checkpoint), (7, at as u64 + 1, false), "byte {i}: {e}");
    }
    put_lines(&path, &original);
    verify_log(dir.path()).unwrap();
}

#[test]
fn flipping_a_byte_of_a_checkpoint_names_the_record_it_follows() {
    let dir = fresh(25);
    let path = active(dir.path());
    let mut lines = lines(&path);
    let at = line_of(&lines, 20) + 1;
    let sig = lines[at].windows(13).position(|w| w == b"\"signature\":\"").unwrap() + 20;
    lines[at][sig] ^= 0x01;
    put_lines(&path, &lines);
    let e = expect_error(dir.path());
    assert_eq!((e.record, e.checkpoint), (20, true), "{e}");
    assert!(matches!(e.reason, Reason::HashMismatch { .. }), "{e}");
}

#[test]
fn deleting_a_record_names_the_missing_one() {
    for victim in [1, 5, 11, 24] {
        let dir = fresh(25);
        let path = active(dir.path());
        let mut lines = lines(&path);
        lines.remove(line_of(&lines, victim));
        put_lines(&path, &lines);
        let e = expect_error(dir.path());
        assert_eq!(e.record, victim, "{e}");
        assert_eq!(e.reason, Reason::SeqMismatch { expected: victim, found: victim + 1 }, "{e}");
    }
}

#[test]
fn deleting_the_last_record_is_caught_by_the_checkpoint_after_it() {
    let dir = fresh(25);
    let path = active(dir.path());
    let mut lines = lines(&path);
    lines.remove(line_of(&lines, 25));
    put_lines(&path, &lines);
    let e = expect_error(dir.path());
    assert_eq!((e.record, e.checkpoint), (24, true), "{e}");
    assert_eq!(e.reason, Reason::CheckpointSeq { expected: 24, found: 25 });
}

#[test]
fn deleting_a_checkpoint_breaks_the_link_of_the_next_record() {
    let dir = fresh(25);
    let path = active(dir.path());
    let mut lines = lines(&path);
    lines.remove(line_of(&lines, 10) + 1);
    put_lines(&path, &lines);
    let e = expect_error(dir.path());
    assert_eq!((e.record, e.checkpoint), (11, false), "{e}");
    assert!(matches!(e.reason, Reason::PrevHashMismatch { .. }), "{e}");
}

#[test]
fn swapping_two_records_names_the_first_position() {
    for (a, b) in [(3, 4), (2, 9), (12, 13)] {
        let dir = fresh(25);
        let path = active(dir.path());
        let mut lines = lines(&path);
        let (i, j) = (line_of(&lines, a), line_of(&lines, b));
        lines.swap(i, j);
        put_lines(&path, &lines);
        let e = expect_error(dir.path());
        assert_eq!((e.record, e.line), (a, i as u64 + 1), "{e}");
        assert_eq!(e.reason, Reason::SeqMismatch { expected: a, found: b });
    }
}

/// Without the key, rewriting the chain consistently (fixing every later hash) is possible;
/// the next signed checkpoint is what catches it.
#[test]
fn a_consistently_rewritten_chain_fails_at_the_next_signature() {
    let dir = fresh(25);
    let path = active(dir.path());
    let mut lines = lines(&path);
    let at = line_of(&lines, 14);
    let mut prev = decode(lines[at - 1].strip_suffix(b"\n").unwrap()).unwrap().hash;
    // From the altered record on; lines before it stay byte for byte as written.
    for line in lines.iter_mut().skip(at) {
        let mut entry = decode(line.strip_suffix(b"\n").unwrap()).unwrap().entry;
        match &mut entry {
            Entry::Record(r) => {
                if r.seq == 14 {
                    r.caller = "cert:CN=someone-else".into();
                }
                r.prev_hash = prev.clone();
            }
            Entry::Checkpoint(c) => c.prev_hash = prev.clone(),
        }
        let (bytes, hash) = encode(&entry);
        *line = [bytes, b"\n".to_vec()].concat();
        prev = hash;
    }
    put_lines(&path, &lines);
    let e = expect_error(dir.path());
    assert_eq!((e.record, e.checkpoint, e.reason.clone()), (20, true, Reason::BadSignature), "{e}");
}

#[test]
fn a_checkpoint_signed_by_another_key_is_refused() {
    let dir = fresh(15);
    let path = active(dir.path());
    let mut lines = lines(&path);
    let at = line_of(&lines, 10) + 1;
    let Entry::Checkpoint(mut c) = decode(lines[at].strip_suffix(b"\n").unwrap()).unwrap().entry else {
        panic!("no checkpoint after record 10")
    };
    let other = SigningKey::from_bytes(&[9; 32]);
    let message = checkpoint_message(c.seq, &c.time, &c.prev_hash);
    use ed25519_dalek::Signer;
    // A valid signature by another key, with the real key's name on it: a bad signature.
    c.signature = hex::encode(other.sign(&message).to_bytes());
    let (bytes, _) = encode(&Entry::Checkpoint(c.clone()));
    let mut forged = lines.clone();
    forged[at] = [bytes, b"\n".to_vec()].concat();
    // The line's hash changed, so re-link the record after it to isolate the signature check.
    relink(&mut forged, at);
    put_lines(&path, &forged);
    let e = expect_error(dir.path());
    assert_eq!((e.record, e.checkpoint, e.reason.clone()), (10, true, Reason::BadSignature), "{e}");

    // And signed by another key under that key's name.
    c.public_key = hex::encode(other.verifying_key().to_bytes());
    let (bytes, _) = encode(&Entry::Checkpoint(c));
    lines[at] = [bytes, b"\n".to_vec()].concat();
    relink(&mut lines, at);
    put_lines(&path, &lines);
    let e = expect_error(dir.path());
    assert!(matches!(e.reason, Reason::WrongKey { .. }) && e.record == 10, "{e}");
}

/// Re-hashes the lines after `from` so that only the change at `from` is wrong.
fn relink(lines: &mut [Vec<u8>], from: usize) {
    let mut prev = decode(lines[from].strip_suffix(b"\n").unwrap()).unwrap().hash;
    for line in lines.iter_mut().skip(from + 1) {
        let mut entry = decode(line.strip_suffix(b"\n").unwrap()).unwrap().entry;
        match &mut entry {
            Entry::Record(r) => r.prev_hash = prev.clone(),
            Entry::Checkpoint(c) => c.prev_hash = prev.clone(),
        }
        let (bytes, hash) = encode(&entry);
        *line = [bytes, b"\n".to_vec()].concat();
        prev = hash;
    }
}

#[test]
fn verifying_with_another_key_fails_at_the_first_checkpoint() {
    let dir = fresh(15);
    let other = SigningKey::from_bytes(&[9; 32]).verifying_key();
    let e = verify(&chain_files(&active(dir.path())).unwrap(), &other).unwrap_err();
    assert_eq!((e.record, e.checkpoint), (10, true));
    assert!(matches!(e.reason, Reason::WrongKey { .. }), "{e}");
}

#[test]
fn reopening_continues_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(write(config(dir.path()), 12).next_seq, 1);
    let opened = write(config(dir.path()), 5);
    assert_eq!(opened.next_seq, 13);
    assert_eq!(opened.torn, None);
    let summary = verify_log(dir.path()).unwrap();
    assert_eq!((summary.records, summary.last_seq, summary.unsigned_records), (17, 17, 0));
    // The first run ended with a shutdown checkpoint, so the second had nothing to sign on open.
    let text = std::fs::read_to_string(active(dir.path())).unwrap();
    assert!(!text.contains("\"reason\":\"open\""));
}

#[test]
fn rotation_keeps_one_chain_across_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.max_file_bytes = 4096;
    cfg.checkpoint_every_records = 0;
    write(cfg.clone(), 60);
    let files = chain_files(&active(dir.path())).unwrap();
    assert!(files.len() >= 4, "expected several files, got {files:?}");
    assert_eq!(files[0], rotated_path(&active(dir.path()), 1));
    for rotated in &files[..files.len() - 1] {
        let size = std::fs::metadata(rotated).unwrap().len();
        // One record and the closing checkpoint may go past the limit, no more.
        assert!(size <= 4096 + 2048, "{} is {size} bytes", rotated.display());
        let last = lines(rotated).pop().unwrap();
        let Entry::Checkpoint(c) = decode(last.strip_suffix(b"\n").unwrap()).unwrap().entry else {
            panic!("{} does not end with a checkpoint", rotated.display())
        };
        assert_eq!(c.reason, "rotation");
    }
    let key = key().verifying_key();
    let summary = verify(&files, &key).unwrap();
    assert_eq!((summary.records, summary.files), (60, files.len()));

    // The second file on its own does not start the chain...
    let e = verify(&files[1..], &key).unwrap_err();
    assert_eq!((e.record, e.line, e.file.clone()), (1, 1, files[1].clone()), "{e}");
    // ...unless a partial log is asked for, and then it checks from there on.
    let partial = verify_with(&files[1..], &key, &VerifyOptions { allow_partial: true }).unwrap();
    assert!(partial.first_seq.unwrap() > 1 && partial.last_seq == 60);
    // Files out of order, or one missing from the middle, break the chain at a file's first line.
    let mut swapped = files.clone();
    swapped.swap(1, 2);
    let e = verify(&swapped, &key).unwrap_err();
    assert_eq!((e.file.clone(), e.line), (files[2].clone(), 1), "{e}");
    let mut missing = files.clone();
    missing.remove(1);
    let e = verify(&missing, &key).unwrap_err();
    assert_eq!((e.file.clone(), e.line), (files[2].clone(), 1), "{e}");

    // Reopened, it continues the chain and the numbering of rotated files.
    write(cfg, 30);
    let files = chain_files(&active(dir.path())).unwrap();
    let summary = verify(&files, &key).unwrap();
    assert_eq!(summary.records, 90);
}

#[test]
fn a_torn_tail_is_reported_then_moved_aside_and_the_chain_continues() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    write(cfg.clone(), 12);
    let path = active(dir.path());
    let intact = std::fs::read(&path).unwrap();
    // Half a record, as a crash in the middle of a write leaves it.
    let template = lines(&path)[0].clone();
    let torn = &template[..template.len() / 2];
    std::fs::write(&path, [intact.as_slice(), torn].concat()).unwrap();

    let summary = verify_log(dir.path()).unwrap();
    assert_eq!(summary.records, 12);
    let reported = summary.torn_tail.expect("the torn line was not reported");
    assert_eq!((reported.offset, reported.bytes), (intact.len() as u64, torn.len() as u64));

    let opened = write(cfg.clone(), 3);
    let moved = opened.torn.expect("open did not repair the torn tail");
    assert_eq!((opened.next_seq, moved.after_seq, moved.bytes), (13, 12, torn.len() as u64));
    assert_eq!(std::fs::read(&moved.moved_to).unwrap(), torn);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with(std::str::from_utf8(&intact).unwrap()), "the good part was changed");
    let summary = verify_log(dir.path()).unwrap();
    assert_eq!((summary.records, summary.torn_tail, summary.unsigned_records), (15, None, 0));
    let note = text.lines().find(|l| l.contains("\"reason\":\"open\"")).expect("no open checkpoint");
    assert!(note.contains(moved.moved_to.file_name().unwrap().to_str().unwrap()), "{note}");
}

#[test]
fn lines_of_zeros_after_a_power_cut_count_as_torn() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    write(cfg.clone(), 4);
    let path = active(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let good = bytes.len();
    bytes.extend_from_slice(&[0; 300]);
    bytes.push(b'\n');
    bytes.extend_from_slice(&[0; 100]);
    std::fs::write(&path, &bytes).unwrap();
    let opened = write(cfg, 1);
    assert_eq!(opened.torn.map(|t| t.bytes), Some((bytes.len() - good) as u64));
    assert_eq!(verify_log(dir.path()).unwrap().records, 5);
}

#[test]
fn an_altered_last_line_is_not_mistaken_for_a_torn_write() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    write(cfg.clone(), 4);
    let path = active(dir.path());
    let mut lines = lines(&path);
    let last = lines.last_mut().unwrap();
    let at = last.windows(9).position(|w| w == b"\"reason\":").unwrap() + 10;
    last[at] ^= 0x01;
    put_lines(&path, &lines);
    let before = std::fs::read(&path).unwrap();
    match AuditLog::open(cfg) {
        Err(AuditError::Corrupt { .. }) => {}
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("an altered log was opened and would have been repaired"),
    }
    assert_eq!(std::fs::read(&path).unwrap(), before, "open must leave an altered log alone");
}

#[test]
fn a_second_writer_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (_log, writer) = AuditLog::open(config(dir.path())).unwrap();
    assert!(matches!(AuditLog::open(config(dir.path())), Err(AuditError::Locked { .. })));
    writer.shutdown().unwrap();
    let (_log, writer) = AuditLog::open(config(dir.path())).unwrap();
    writer.shutdown().unwrap();
}

#[test]
fn sync_waits_for_the_disk_and_timer_checkpoints_sign_an_idle_tail() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.fsync = Fsync::EveryMillis(200);
    cfg.checkpoint_every_records = 0;
    cfg.checkpoint_interval = Some(std::time::Duration::from_millis(300));
    let (log, writer) = AuditLog::open(cfg).unwrap();
    for i in 1..=3 {
        log.submit(event(i)).unwrap();
    }
    log.sync(std::time::Duration::from_secs(10)).unwrap();
    assert_eq!(verify_log(dir.path()).unwrap().records, 3);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let summary = verify_log(dir.path()).unwrap();
        if summary.last_signed_seq == Some(3) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no timer checkpoint: {summary}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    writer.shutdown().unwrap();
}

#[test]
fn keys_from_files_sign_and_verify() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("audit.key");
    let public = generate_key_file(&secret).unwrap();
    let mut cfg = config(dir.path());
    cfg.signing_key = load_signing_key(&secret).unwrap();
    write(cfg, 3);
    let files = chain_files(&active(dir.path())).unwrap();
    let loaded = load_verifying_key(&public_key_path(&secret)).unwrap();
    assert_eq!(loaded, public);
    assert_eq!(verify(&files, &loaded).unwrap().last_signed_seq, Some(3));
    assert!(verify(&files, &key().verifying_key()).is_err());
}

/// A disk that refuses writes: every later submit fails loudly and nothing is dropped unseen.
#[cfg(target_os = "linux")]
#[test]
fn a_write_error_stops_the_log_and_every_caller_hears_of_it() {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink("/dev/full", active(dir.path())).unwrap();
    let mut cfg = config(dir.path());
    cfg.fsync = Fsync::EveryRecord;
    let (log, writer) = AuditLog::open(cfg).unwrap();
    log.submit(event(1)).unwrap();
    match log.sync(std::time::Duration::from_secs(10)) {
        Err(SyncError::Failed(message)) => assert!(message.contains("1 accepted records were not written"), "{message}"),
        other => panic!("sync after a failed write: {other:?}"),
    }
    assert!(matches!(log.submit(event(2)), Err(SubmitError::Failed(_))));
    assert!(matches!(writer.shutdown(), Err(AuditError::Failed(_))));
}
