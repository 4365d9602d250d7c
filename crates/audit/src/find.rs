//! Finding the explanations whose faithfulness metric crosses a threshold: the records whose
//! `evaluation` has the metric with some value above `above` (or below `below`). For a
//! reviewer's question such as "which explanations had an infidelity above 0.1". It reads
//! lines and checks each one's hash, but not the chain: run [`crate::verify`] for that.

use crate::format::{self, Entry};
use std::io::{self, BufRead, BufReader};
use std::path::{Path, PathBuf};

/// Which records to find.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricQuery {
    pub metric: String,
    /// Some value greater than this.
    pub above: Option<f64>,
    /// Some value less than this.
    pub below: Option<f64>,
}

/// A record that matched, with the metric's most extreme values.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricMatch {
    pub file: PathBuf,
    pub seq: u64,
    pub time: String,
    pub request_id: String,
    pub caller: String,
    pub replica: String,
    pub model: String,
    pub explainer: String,
    pub max: f64,
    pub min: f64,
}

/// The metric's values in a record's `evaluation`, flattened; None when it has no such metric.
fn metric_values(evaluation: &serde_json::Value, metric: &str) -> Option<Vec<f64>> {
    let entry = evaluation.get("metrics")?.as_array()?.iter().find(|m| m.get("name").and_then(|n| n.as_str()) == Some(metric))?;
    let mut out = Vec::new();
    for row in entry.get("values")?.as_array()? {
        for v in row.as_array()? {
            out.push(v.as_f64()?);
        }
    }
    Some(out)
}

/// The records of `files` (one chain's, in order) that match `query`. A line that is not a
/// valid entry is an error naming the file and line, except a torn last line.
pub fn find_metric<P: AsRef<Path>>(files: &[P], query: &MetricQuery) -> io::Result<Vec<MetricMatch>> {
    let mut out = Vec::new();
    for path in files {
        let path = path.as_ref();
        let reader = BufReader::new(std::fs::File::open(path)?);
        for (index, line) in reader.split(b'\n').enumerate() {
            let line = line?;
            if line.is_empty() {
                continue;
            }
            let entry = match format::decode(&line) {
                Ok(l) => l.entry,
                // A torn last line has no hash member: nothing to read in it.
                Err(format::LineError::NoHash) => continue,
                Err(e) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{} line {}: {e}", path.display(), index + 1),
                    ));
                }
            };
            let Entry::Record(record) = entry else { continue };
            let Some(values) = record.evaluation.as_ref().and_then(|e| metric_values(e, &query.metric)) else { continue };
            let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let min = values.iter().copied().fold(f64::INFINITY, f64::min);
            let hit = query.above.is_some_and(|a| max > a) || query.below.is_some_and(|b| min < b);
            if hit {
                out.push(MetricMatch {
                    file: path.to_path_buf(),
                    seq: record.seq,
                    time: record.time,
                    request_id: record.request_id,
                    caller: record.caller,
                    replica: record.replica,
                    model: record.model.name,
                    explainer: record.explainer.map(|e| e.name).unwrap_or_default(),
                    max,
                    min,
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{AuditRecord, ExplainerIdentity, GENESIS_HASH, ModelIdentity, Outcome, Rpc, encode};

    fn record(seq: u64, evaluation: Option<serde_json::Value>) -> Vec<u8> {
        let (mut line, _) = encode(&Entry::Record(AuditRecord {
            seq,
            time: "2026-12-05T00:00:00.000Z".into(),
            request_id: format!("r{seq}"),
            replica: String::new(),
            caller: "alice".into(),
            rpc: Rpc::Explain,
            model: ModelIdentity { name: "m".into(), version: "1".into(), sha256: String::new() },
            explainer: Some(ExplainerIdentity { name: "deep-shap".into(), version: "1".into(), file_sha256: String::new() }),
            parameters: serde_json::Value::Null,
            input_digest: String::new(),
            result_digest: String::new(),
            evaluation,
            inputs: None,
            status: Outcome { code: 0, message: String::new() },
            duration_ms: 1.0,
            model_calls: 1,
            model_rows: 1,
            prev_hash: GENESIS_HASH.into(),
        }));
        line.push(b'\n');
        line
    }

    #[test]
    fn records_whose_metric_crosses_the_threshold_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let metric =
            |v: f64| serde_json::json!({"seed": 1, "metrics": [{"name": "infidelity", "parameters": {}, "values": [[0.01, v]]}]});
        let mut bytes = record(1, Some(metric(0.5)));
        bytes.extend(record(2, Some(metric(0.05))));
        bytes.extend(record(3, None));
        bytes.extend(b"{\"kind\":\"record\",\"seq\":4"); // a torn tail
        std::fs::write(&path, bytes).unwrap();
        let query = |above, below| MetricQuery { metric: "infidelity".into(), above, below };
        let found = find_metric(&[&path], &query(Some(0.1), None)).unwrap();
        assert_eq!(found.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![1]);
        assert_eq!((found[0].max, found[0].min, found[0].explainer.as_str()), (0.5, 0.01, "deep-shap"));
        let found = find_metric(&[&path], &query(None, Some(0.02))).unwrap();
        assert_eq!(found.len(), 2, "both have a value of 0.01");
        let none = find_metric(&[&path], &MetricQuery { metric: "deletion".into(), above: Some(0.0), below: None }).unwrap();
        assert!(none.is_empty());
        let mut altered = std::fs::read(&path).unwrap();
        let at = altered.windows(3).position(|w| w == b"0.5").unwrap();
        altered[at + 2] = b'9';
        std::fs::write(&path, altered).unwrap();
        let err = find_metric(&[&path], &query(Some(0.1), None)).unwrap_err().to_string();
        assert!(err.contains("line 1") && err.contains("hash mismatch"), "{err}");
    }
}
