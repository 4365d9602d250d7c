//! The audit log and the metrics endpoint of the real `explaind` binary: every predict and explain
//! request leaves exactly one record, `explaind audit verify` checks the chain and signatures, a
//! `kill -9` under load leaves a log that verifies up to its last complete record and the
//! restarted daemon continues the chain, and `GET /metrics` shows the counters moving.
mod common;

use common::*;
use explaind::proto;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_explaind");

struct Daemon {
    child: Child,
    addr: String,
    metrics: Option<String>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `explaind serve` with an audit log in `dir`, signed with `key`; `extra` flags appended.
fn start(dir: &Path, key: &Path, extra: &[&str]) -> Daemon {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--device", "cpu", "--audit-dir"])
        .arg(dir)
        .arg("--audit-key")
        .arg(key)
        .args(extra)
        .current_dir(repo_root())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("explaind listening on ").unwrap_or_else(|| panic!("first line {line:?}")).to_string();
    let metrics = extra.contains(&"--metrics-listen").then(|| {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        line.trim().strip_prefix("explaind metrics on ").unwrap_or_else(|| panic!("second line {line:?}")).to_string()
    });
    Daemon { child, addr: format!("http://{addr}"), metrics }
}

fn keygen(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let key = dir.join("audit.key");
    let out = Command::new(BIN).args(["audit", "keygen"]).arg(&key).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    (key.clone(), dir.join("audit.key.pub"))
}

/// `explaind audit verify`: Ok(summary JSON) or Err(its error line).
fn verify(public: &Path, log_dir: &Path) -> Result<serde_json::Value, String> {
    let out = Command::new(BIN).args(["audit", "verify", "--public-key"]).arg(public).arg(log_dir).output().unwrap();
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).unwrap())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

async fn clients(
    addr: &str,
) -> (
    proto::model_service_client::ModelServiceClient<tonic::transport::Channel>,
    proto::explain_service_client::ExplainServiceClient<tonic::transport::Channel>,
) {
    let channel = tonic::transport::Channel::from_shared(addr.to_string()).unwrap().connect().await.unwrap();
    (
        proto::model_service_client::ModelServiceClient::new(channel.clone()),
        proto::explain_service_client::ExplainServiceClient::new(channel),
    )
}

fn predict_request() -> proto::PredictRequest {
    proto::PredictRequest {
        model: model("wine-mlp"),
        inputs: vec![named("features", &read_npy("models/wine-mlp/1/samples.npy"))],
    }
}

fn explain_request() -> proto::ExplainRequest {
    proto::ExplainRequest {
        model: model("wine-mlp"),
        explainer: "occlusion".into(),
        inputs: vec![named("features", &read_npy("models/wine-mlp/1/samples.npy"))],
        parameters: HashMap::from([("window".to_string(), integers(&[2]))]),
        ..Default::default()
    }
}

/// The audit records (not checkpoints) of a log directory's active file, as JSON.
fn records(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("audit.log"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "record")
        .collect()
}

fn scrape(addr: &str) -> String {
    let host = addr.trim_start_matches("http://").trim_end_matches("/metrics");
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    assert!(body.starts_with("HTTP/1.1 200"), "{}", &body[..body.len().min(200)]);
    body
}

/// The value of the first sample line that starts with `series`.
fn sample(text: &str, series: &str) -> f64 {
    text.lines().find(|l| l.starts_with(series)).and_then(|l| l.rsplit(' ').next()).and_then(|v| v.parse().ok()).unwrap_or(0.0)
}

#[tokio::test]
async fn every_request_is_audited_once_and_the_metrics_move() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path());
    let log_dir = dir.path().join("log");
    let daemon = start(&log_dir, &key, &["--metrics-listen", "127.0.0.1:0"]);
    let (mut models, mut explain) = clients(&daemon.addr).await;

    let mut request = tonic::Request::new(predict_request());
    request.metadata_mut().insert("x-request-id", "case-42".parse().unwrap());
    let response = models.predict(request).await.unwrap();
    assert_eq!(response.metadata().get("x-request-id").unwrap(), "case-42");
    let explained = explain.explain(explain_request()).await.unwrap();
    assert!(explained.metadata().get("x-request-id").is_some(), "a request id is made when the client sends none");
    let mut bad = explain_request();
    bad.parameters.clear();
    assert_eq!(explain.explain(bad).await.unwrap_err().code(), tonic::Code::InvalidArgument);
    let metrics = daemon.metrics.clone().unwrap();
    let before = scrape(&metrics);
    explain.explain(explain_request()).await.unwrap();
    let after = scrape(&metrics);
    let series = "explaind_requests_total{rpc=\"Explain\",model=\"wine-mlp\",explainer=\"occlusion\",code=\"Ok\"}";
    assert_eq!(sample(&after, series), sample(&before, series) + 1.0, "{after}");
    assert!(after.contains("explaind_request_seconds_bucket{rpc=\"Explain\""), "latency histogram");
    assert!(after.contains("explaind_model_rows_total{model=\"wine-mlp\"}"));
    assert!(after.contains("explaind_audit_queue_depth"));

    // Stop gracefully (final checkpoint), then check the log.
    drop((models, explain));
    let pid = daemon.child.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let mut daemon = daemon;
    daemon.child.wait().unwrap();
    let summary = verify(&public, &log_dir).unwrap();
    assert_eq!(summary["records"], 4, "{summary}");
    assert_eq!(summary["unsigned_records"], 0, "the shutdown checkpoint signs them all");
    let records = records(&log_dir);
    assert_eq!(records[0]["request_id"], "case-42");
    assert_eq!(records[0]["rpc"], "Predict");
    assert_eq!(records[1]["explainer"]["name"], "occlusion");
    assert_eq!(records[1]["model"]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(records[1]["parameters"]["explainer"]["window"], serde_json::json!([2]));
    assert!(records[1]["model_rows"].as_u64().unwrap() > 6, "the perturbation rows are counted in the record");
    assert_eq!(records[2]["status"]["code"], 3);
    assert!(records[2]["status"]["message"].as_str().unwrap().contains("parameters.window"));
    // Inputs are kept only when configured; their digest always.
    assert!(records.iter().all(|r| r.get("inputs").is_none() && r["input_digest"].as_str().unwrap().len() == 64));

    // Tampering is found, with the record number.
    let path = log_dir.join("audit.log");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replacen("\"case-42\"", "\"case-43\"", 1)).unwrap();
    let error = verify(&public, &log_dir).unwrap_err();
    assert!(error.contains("record 1"), "{error}");
}

#[tokio::test]
async fn kill_9_under_load_leaves_a_verifiable_log_that_the_restarted_daemon_continues() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path());
    let log_dir = dir.path().join("log");
    // Group commit every 5 ms: a crash may lose the last few milliseconds and tear a line.
    let daemon = start(&log_dir, &key, &["--config", "tests/data/audit-group-commit.toml"]);
    let (models, _) = clients(&daemon.addr).await;
    let mut load = Vec::new();
    for _ in 0..8 {
        let mut client = models.clone();
        load.push(tokio::spawn(async move {
            let mut ok = 0u64;
            while client.predict(predict_request()).await.is_ok() {
                ok += 1;
            }
            ok
        }));
    }
    // Let the log grow, then kill the daemon mid-write.
    let active = log_dir.join("audit.log");
    while std::fs::metadata(&active).map(|m| m.len()).unwrap_or(0) < 200_000 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let mut daemon = daemon;
    daemon.child.kill().unwrap();
    daemon.child.wait().unwrap();
    let answered: u64 = futures_sum(load).await;

    // Everything up to the last complete record verifies (a torn last line is reported, not
    // an error), and no record is missing from before it.
    let crashed = verify(&public, &log_dir).unwrap();
    let complete = crashed["last_seq"].as_u64().unwrap();
    assert!(complete > 100, "{crashed}");
    // Each record is one request, written before its answer: at most the 8 requests in flight
    // at the kill have records without answers.
    assert!(complete <= answered + 8, "{complete} records for {answered} answered requests");

    // The restarted daemon repairs the tail and continues the chain from the last good record.
    let daemon = start(&log_dir, &key, &["--config", "tests/data/audit-group-commit.toml"]);
    let (mut models, _) = clients(&daemon.addr).await;
    for _ in 0..5 {
        models.predict(predict_request()).await.unwrap();
    }
    drop(models);
    let pid = daemon.child.id().to_string();
    assert!(Command::new("kill").args(["-INT", &pid]).status().unwrap().success());
    let mut daemon = daemon;
    daemon.child.wait().unwrap();
    let resumed = verify(&public, &log_dir).unwrap();
    assert_eq!(resumed["last_seq"].as_u64().unwrap(), complete + 5, "{resumed}");
    assert_eq!(resumed["torn_tail"], serde_json::Value::Null);
}

async fn futures_sum(handles: Vec<tokio::task::JoinHandle<u64>>) -> u64 {
    let mut total = 0;
    for handle in handles {
        total += handle.await.unwrap();
    }
    total
}
