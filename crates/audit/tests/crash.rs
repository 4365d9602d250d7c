//! kill -9 during heavy writing, with a real child process: this test binary runs itself again
//! as the writer (the ignored test `child_writer`, selected by name) and kills it with SIGKILL.

mod common;

use common::*;
use explaind_audit::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_DIR: &str = "EXPLAIND_AUDIT_CRASH_CHILD_DIR";
const ROUNDS: u64 = 9;
/// More rounds, only while no kill has torn a line yet, so the repair of a real torn write is
/// always exercised.
const MAX_ROUNDS: u64 = 40;

fn child_config(dir: &Path) -> AuditConfig {
    let mut cfg = AuditConfig::new(active(dir), load_signing_key(&dir.join("audit.key")).unwrap());
    // Group commit with a buffer that fills mid-line: what makes torn lines likely.
    cfg.fsync = Fsync::EveryMillis(5);
    cfg.max_file_bytes = 4 << 20;
    cfg.checkpoint_every_records = 500;
    cfg.store_inputs = true;
    cfg.on_full = OnFull::Wait(Duration::from_secs(60));
    cfg
}

/// The child: writes records as fast as it can until it is killed.
#[test]
#[ignore = "run by kill_9_during_heavy_writing as its child process"]
fn child_writer() {
    let dir = std::env::var_os(CHILD_DIR).expect("run by kill_9_during_heavy_writing only");
    let (log, writer) = AuditLog::open(child_config(Path::new(&dir))).unwrap();
    let mut seq = writer.opened().next_seq;
    loop {
        let mut event = event(seq);
        // Every fourth record carries a large input (a 1 MiB image, stored because the config
        // says so). Its line goes to the file in one long write(2), and Linux stops a write at
        // a page boundary when SIGKILL arrives: that is how a kill tears a line. Whole small
        // lines are never torn by a kill, as the writer only ever writes whole lines.
        if seq % 4 == 0 {
            event.inputs = Some(vec![(seq % 255) as u8; 1 << 20]);
        }
        log.submit(event).unwrap();
        seq += 1;
    }
}

fn log_bytes(dir: &Path) -> u64 {
    chain_files(&active(dir)).unwrap_or_default().iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum()
}

/// Whether the file ends inside a line.
fn mid_line(path: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut file) = std::fs::File::open(path) else { return false };
    let mut last = [0u8];
    file.seek(SeekFrom::End(-1)).is_ok() && file.read_exact(&mut last).is_ok() && last[0] != b'\n'
}

#[test]
fn kill_9_during_heavy_writing() {
    let dir = tempfile::tempdir().unwrap();
    let public = generate_key_file(&dir.path().join("audit.key")).unwrap();
    let mut last_seq = 0;
    let mut torn_seen = Vec::new();
    let mut round = 0;
    while round < ROUNDS || (torn_seen.is_empty() && round < MAX_ROUNDS) {
        let start_bytes = log_bytes(dir.path());
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "child_writer", "--ignored", "--nocapture", "--test-threads=1"])
            .env(CHILD_DIR, dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        // Past at least two rotations, then a little more that varies
        // by round so the kill lands at different points of the write cycle.
        while log_bytes(dir.path()) < start_bytes + (12 << 20) {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("round {round}: the writer exited by itself: {status}");
            }
            assert!(Instant::now() < deadline, "round {round}: the writer made no progress");
            std::thread::sleep(Duration::from_millis(2));
        }
        if round % 3 != 2 {
            // Two rounds in three aim the kill at a write in progress: the file's last byte is not a
            // newline while write(2) is still copying a line in. The kill may still land just
            // after the write ends; then this round tears nothing.
            let hunt = Instant::now() + Duration::from_secs(5);
            while !mid_line(&active(dir.path())) && Instant::now() < hunt {
                std::thread::yield_now();
            }
        } else {
            // The others kill at whatever point a short, varying delay lands on (a sync, a
            // checkpoint, a rotation, between writes).
            std::thread::sleep(Duration::from_millis(round * 7 % 11));
        }
        // SIGKILL on Unix: no destructor, no flush, no final checkpoint.
        child.kill().unwrap();
        child.wait().unwrap();

        let files = chain_files(&active(dir.path())).unwrap();
        let summary = verify(&files, &public).unwrap_or_else(|e| panic!("round {round}: the killed log does not verify: {e}"));
        assert!(summary.last_seq > last_seq, "round {round}: the restarted writer did not continue the chain: {summary}");
        assert_eq!(summary.first_seq, Some(1));
        // Everything but an incomplete last line verified, so the log is good up to the last
        // complete record; the torn bytes are what the next open must move aside.
        if let Some(t) = &summary.torn_tail {
            assert_eq!(t.file, active(dir.path()), "a torn line can only be in the active file");
            torn_seen.push((summary.last_seq, t.bytes));
        }
        eprintln!("round {round}: {summary}");
        last_seq = summary.last_seq;
        round += 1;
    }
    eprintln!("torn tails: {} of {round} kills", torn_seen.len());
    assert!(!torn_seen.is_empty(), "no kill in {round} tore a line, so the torn-tail repair was not exercised");

    // The restarted daemon: repairs the tail left by the last kill and continues.
    let (log, writer) = AuditLog::open(child_config(dir.path())).unwrap();
    let opened = writer.opened().clone();
    assert_eq!(opened.next_seq, last_seq + 1);
    let last_torn = torn_seen.last().filter(|(seq, _)| *seq == last_seq).map(|(_, bytes)| *bytes);
    assert_eq!(opened.torn.as_ref().map(|t| t.bytes), last_torn);
    for i in 0..100 {
        log.submit(event(opened.next_seq + i)).unwrap();
    }
    writer.shutdown().unwrap();
    let summary = verify(&chain_files(&active(dir.path())).unwrap(), &public).unwrap();
    assert_eq!((summary.records, summary.last_seq), (last_seq + 100, last_seq + 100));
    assert_eq!((summary.torn_tail, summary.unsigned_records), (None, 0));

    // Each torn tail was moved aside exactly once, with its bytes, by the next open.
    let mut moved: Vec<(u64, u64)> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap())
        .filter_map(|e| {
            let name = e.file_name().into_string().unwrap();
            let rest = name.strip_prefix("audit.log.torn-")?;
            let seq = rest.split('-').next()?.parse().ok()?;
            Some((seq, e.metadata().unwrap().len()))
        })
        .collect();
    moved.sort();
    assert_eq!(moved, torn_seen);
}
