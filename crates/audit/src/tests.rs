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
