//! Tests that need to hold the writer still (full-queue policies); the rest are in `tests/`.

use crate::*;
use std::time::{Duration, Instant, SystemTime};

fn event(i: u64) -> AuditEvent {
    AuditEvent {
        time: SystemTime::now(),
        request_id: format!("req-{i}"),
        caller: "token:test".into(),
        rpc: Rpc::Predict,
        model: ModelIdentity { name: "m".into(), version: "1".into(), sha256: "ab".repeat(32) },
        explainer: None,
        parameters: serde_json::json!({}),
        input_digest: sha256_hex(&i.to_le_bytes()),
        result_digest: String::new(),
        inputs: Some(vec![1, 2, 3]),
        status: Outcome { code: 0, message: String::new() },
        duration: Duration::from_micros(1500),
        model_calls: 1,
        model_rows: 1,
        evaluation: None,
    }
}

fn open(dir: &std::path::Path, on_full: OnFull) -> (AuditLog, AuditWriter, SigningKey) {
    let key = SigningKey::from_bytes(&[7; 32]);
    let mut config = AuditConfig::new(dir.join("audit.log"), key.clone());
    config.queue_capacity = 2;
    config.on_full = on_full;
    config.fsync = Fsync::EveryRecord;
    let (log, writer) = AuditLog::open(config).unwrap();
    (log, writer, key)
}

#[test]
fn a_full_queue_with_reject_refuses_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (log, writer, key) = open(dir.path(), OnFull::Reject);
    log.pause_writer(true);
    log.submit(event(1)).unwrap();
    log.submit(event(2)).unwrap();
    let began = Instant::now();
    assert_eq!(log.submit(event(3)), Err(SubmitError::Full));
    assert!(began.elapsed() < Duration::from_millis(100), "Reject must not wait");
    assert_eq!(log.queue_depth(), 2);
    log.pause_writer(false);
    log.sync(Duration::from_secs(10)).unwrap();
    log.submit(event(3)).unwrap();
    writer.shutdown().unwrap();
    let summary = verify(&chain_files(&dir.path().join("audit.log")).unwrap(), &key.verifying_key()).unwrap();
    // Exactly the accepted ones: 1, 2 and the retried 3.
    assert_eq!((summary.records, summary.unsigned_records), (3, 0));
}

#[test]
fn a_full_queue_with_wait_blocks_until_the_writer_makes_room() {
    let dir = tempfile::tempdir().unwrap();
    let (log, writer, key) = open(dir.path(), OnFull::Wait(Duration::from_secs(20)));
    log.pause_writer(true);
    log.submit(event(1)).unwrap();
    log.submit(event(2)).unwrap();
    let resumer = {
        let log = log.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            log.pause_writer(false);
        })
    };
    let began = Instant::now();
    log.submit(event(3)).unwrap();
    assert!(began.elapsed() >= Duration::from_millis(250), "submit returned while the queue was still full");
    resumer.join().unwrap();
    writer.shutdown().unwrap();
    let summary = verify(&chain_files(&dir.path().join("audit.log")).unwrap(), &key.verifying_key()).unwrap();
    assert_eq!(summary.records, 3);
}

#[test]
fn a_full_queue_with_wait_gives_up_after_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (log, writer, _) = open(dir.path(), OnFull::Wait(Duration::from_millis(200)));
    log.pause_writer(true);
    log.submit(event(1)).unwrap();
    log.submit(event(2)).unwrap();
    let began = Instant::now();
    assert_eq!(log.submit(event(3)), Err(SubmitError::Full));
    assert!(began.elapsed() >= Duration::from_millis(200));
    log.pause_writer(false);
    writer.shutdown().unwrap();
    assert_eq!(log.submit(event(4)), Err(SubmitError::Closed));
}

#[test]
fn inputs_are_stored_only_when_configured() {
    for store in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let key = SigningKey::from_bytes(&[7; 32]);
        let mut config = AuditConfig::new(dir.path().join("audit.log"), key);
        config.store_inputs = store;
        let (log, writer) = AuditLog::open(config).unwrap();
        assert_eq!(log.stores_inputs(), store);
        log.submit(event(1)).unwrap();
        writer.shutdown().unwrap();
        let text = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
        let line = decode(text.lines().next().unwrap().as_bytes()).unwrap();
        let Entry::Record(record) = line.entry else { panic!("first line is not a record") };
        assert_eq!(record.inputs.as_deref(), store.then_some("AQID"), "store_inputs = {store}");
        assert_eq!(record.input_digest, sha256_hex(&1u64.to_le_bytes()));
    }
}

#[test]
fn try_submit_never_blocks_and_hands_the_event_back_only_to_a_waiting_policy() {
    let dir = tempfile::tempdir().unwrap();
    let (log, writer, key) = open(dir.path(), OnFull::Wait(Duration::from_secs(20)));
    log.pause_writer(true);
    log.try_submit(event(1)).unwrap();
    log.try_submit(event(2)).unwrap();
    let began = Instant::now();
    let returned = match log.try_submit(event(3)) {
        Err(Ok(returned)) => returned,
        other => panic!("expected the event back, got {:?}", other.map_err(|r| r.map(|e| e.request_id))),
    };
    assert!(began.elapsed() < Duration::from_millis(100), "try_submit must not wait");
    assert_eq!(returned.request_id, event(3).request_id);
    log.pause_writer(false);
    log.submit(returned).unwrap();
    writer.shutdown().unwrap();
    let summary = verify(&chain_files(&dir.path().join("audit.log")).unwrap(), &key.verifying_key()).unwrap();
    assert_eq!(summary.records, 3);

    let dir = tempfile::tempdir().unwrap();
    let (log, writer, _) = open(dir.path(), OnFull::Reject);
    log.pause_writer(true);
    log.try_submit(event(1)).unwrap();
    log.try_submit(event(2)).unwrap();
    assert!(matches!(log.try_submit(event(3)), Err(Err(SubmitError::Full))));
    log.pause_writer(false);
    writer.shutdown().unwrap();
}

fn open_acked(dir: &std::path::Path, fsync: Fsync, capacity: usize) -> (AuditLog, AuditWriter, SigningKey) {
    let key = SigningKey::from_bytes(&[7; 32]);
    let mut config = AuditConfig::new(dir.join("audit.log"), key.clone());
    config.queue_capacity = capacity;
    config.on_full = OnFull::Wait(Duration::from_secs(20));
    config.fsync = fsync;
    let (log, writer) = AuditLog::open(config).unwrap();
    (log, writer, key)
}

fn request_ids(dir: &std::path::Path) -> Vec<String> {
    let mut ids = Vec::new();
    for file in chain_files(&dir.join("audit.log")).unwrap() {
        for line in std::fs::read(file).unwrap().split_inclusive(|b| *b == b'\n') {
            let Some(line) = line.strip_suffix(b"\n") else { continue };
            if let Entry::Record(r) = decode(line).unwrap().entry {
                ids.push(r.request_id);
            }
        }
    }
    ids
}

#[test]
fn a_batch_under_every_record_is_synced_once_and_then_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (log, writer, key) = open_acked(dir.path(), Fsync::EveryRecord, 100);
    log.pause_writer(true);
    let receipts: Vec<Receipt> = (0..50).map(|i| log.submit_acked(event(i)).unwrap()).collect();
    std::thread::sleep(Duration::from_millis(50));
    assert!(receipts.iter().all(|r| r.try_result().is_none()), "acknowledged before the writer ran");
    assert_eq!(log.syncs(), 0);
    log.pause_writer(false);
    for r in &receipts {
        r.wait(Duration::from_secs(20)).unwrap();
    }
    // One batch of 50 records: one fdatasync before the first receipt resolved, none per record.
    assert_eq!(log.syncs(), 1);
    // And it was synced: everything submitted is durable, without waiting.
    log.sync(Duration::ZERO).unwrap();
    assert_eq!(request_ids(dir.path()), (0..50).map(|i| format!("req-{i}")).collect::<Vec<_>>());
    writer.shutdown().unwrap();
    let summary = verify(&chain_files(&dir.path().join("audit.log")).unwrap(), &key.verifying_key()).unwrap();
    assert_eq!((summary.records, summary.unsigned_records), (50, 0));
}

#[test]
fn under_group_commit_a_receipt_resolves_after_the_write_before_the_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (log, writer, _) = open_acked(dir.path(), Fsync::EveryMillis(60_000), 100);
    let receipt = log.submit_acked(event(1)).unwrap();
    receipt.wait(Duration::from_secs(20)).unwrap();
    assert_eq!(request_ids(dir.path()), vec!["req-1".to_owned()]);
    // Written, not synced: the sync is 60 s away.
    assert_eq!(log.syncs(), 0);
    assert_eq!(log.sync(Duration::ZERO), Err(SyncError::Timeout));
    writer.shutdown().unwrap();
    assert_eq!(log.syncs(), 1);
}

#[test]
fn a_receipt_is_a_future_that_resolves_without_a_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let (log, writer, _) = open_acked(dir.path(), Fsync::EveryRecord, 10);
    log.pause_writer(true);
    let receipt = log.submit_acked(event(1)).unwrap();
    let resumer = {
        let log = log.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            log.pause_writer(false);
        })
    };
    let began = Instant::now();
    let result = crate::ack::tests::block_on(receipt, Duration::from_secs(20)).expect("the receipt never resolved");
    assert_eq!(result, Ok(()));
    assert!(began.elapsed() >= Duration::from_millis(150), "resolved while the writer was held");
    assert_eq!(request_ids(dir.path()), vec!["req-1".to_owned()]);
    resumer.join().unwrap();
    writer.shutdown().unwrap();
}

#[test]
fn shutdown_writes_the_queued_acknowledged_records_and_resolves_their_receipts() {
    let dir = tempfile::tempdir().unwrap();
    let (log, writer, key) = open_acked(dir.path(), Fsync::EveryMillis(60_000), 100);
    log.pause_writer(true);
    let receipts: Vec<Receipt> = (0..20).map(|i| log.submit_acked(event(i)).unwrap()).collect();
    writer.shutdown().unwrap();
    for r in &receipts {
        assert_eq!(r.try_result(), Some(Ok(())));
    }
    assert_eq!(request_ids(dir.path()).len(), 20);
    assert_eq!(log.submit_acked(event(99)).map(|_| ()), Err(SubmitError::Closed));
    assert!(matches!(log.try_submit_acked(event(99)), Err(Err(SubmitError::Closed))));
    let summary = verify(&chain_files(&dir.path().join("audit.log")).unwrap(), &key.verifying_key()).unwrap();
    assert_eq!((summary.records, summary.unsigned_records), (20, 0));
}

#[test]
fn receipts_fail_with_the_cause_when_the_writer_fails_before_writing_them() {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::from_bytes(&[7; 32]);
    let mut config = AuditConfig::new(dir.path().join("audit.log"), key.clone());
    config.queue_capacity = 400;
    config.fsync = Fsync::EveryRecord;
    // Every record after the first goes to a new file, and the first rotation will fail.
    config.max_file_bytes = 1;
    let (log, writer) = AuditLog::open(config).unwrap();
    log.submit_acked(event(0)).unwrap().wait(Duration::from_secs(20)).unwrap();
    std::fs::write(rotated_path(&dir.path().join("audit.log"), 1), b"in the way\n").unwrap();
    log.pause_writer(true);
    // More than one batch (256): the first fails in the writer, the rest is still queued.
    let receipts: Vec<Receipt> = (1..=300).map(|i| log.submit_acked(event(i)).unwrap()).collect();
    log.pause_writer(false);
    for (i, r) in receipts.iter().enumerate() {
        match r.wait(Duration::from_secs(20)) {
            Err(AckError::Failed(reason)) => assert!(reason.contains("already exists"), "record {}: {reason}", i + 1),
            other => panic!("record {}: expected a failure, got {other:?}", i + 1),
        }
    }
    assert!(matches!(log.submit_acked(event(301)), Err(SubmitError::Failed(_))));
    assert!(matches!(log.sync(Duration::from_secs(1)), Err(SyncError::Failed(_))));
    match writer.shutdown() {
        Err(AuditError::Failed(reason)) => assert!(reason.contains("300 accepted records were not written"), "{reason}"),
        other => panic!("expected the writer's failure, got {other:?}"),
    }
    // Only the acknowledged one is in the log (the rotated file in the way is not ours).
    std::fs::remove_file(rotated_path(&dir.path().join("audit.log"), 1)).unwrap();
    assert_eq!(request_ids(dir.path()), vec!["req-0".to_owned()]);
}

#[test]
fn try_submit_acked_never_blocks_and_hands_the_event_back_only_to_a_waiting_policy() {
    let dir = tempfile::tempdir().unwrap();
    let (log, writer, _) = open(dir.path(), OnFull::Wait(Duration::from_secs(20)));
    log.pause_writer(true);
    let first = [log.try_submit_acked(event(1)).unwrap(), log.try_submit_acked(event(2)).unwrap()];
    let began = Instant::now();
    let returned = match log.try_submit_acked(event(3)) {
        Err(Ok(returned)) => returned,
        other => panic!("expected the event back, got {:?}", other.map_err(|r| r.map(|e| e.request_id))),
    };
    assert!(began.elapsed() < Duration::from_millis(100), "try_submit_acked must not wait");
    assert_eq!(returned.request_id, "req-3");
    log.pause_writer(false);
    let third = log.submit_acked(returned).unwrap();
    for r in first.iter().chain([&third]) {
        r.wait(Duration::from_secs(20)).unwrap();
    }
    assert_eq!(request_ids(dir.path()), ["req-1", "req-2", "req-3"]);
    writer.shutdown().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (log, writer, _) = open(dir.path(), OnFull::Reject);
    log.pause_writer(true);
    let _held = [log.try_submit_acked(event(1)).unwrap(), log.try_submit_acked(event(2)).unwrap()];
    assert!(matches!(log.try_submit_acked(event(3)), Err(Err(SubmitError::Full))));
    assert_eq!(log.submit_acked(event(3)).map(|_| ()), Err(SubmitError::Full));
    log.pause_writer(false);
    writer.shutdown().unwrap();
}
