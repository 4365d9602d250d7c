//! What every predict and explain request leaves behind: Prometheus metrics and one audit
//! record. The services fill an [`Observation`] as they learn things (model, explainer, digests,
//! model work) and hand it to [`Observer::finish`] with their result; `finish` records the
//! metrics, writes the audit record and waits until it is durable, and only then lets the
//! response go out, so no result leaves the daemon unaudited (`crate::trail` records the requests
//! no service finished). Metric names:
//!
//! - `explaind_requests_total{rpc, model, explainer, code}`, `explaind_request_seconds{rpc, model, explainer}`
//! - `explaind_model_seconds{model}` (time in ONNX Runtime per request), `explaind_model_rows_total{model}`
//! - `explaind_plugin_errors_total{explainer, code}` (explain requests the plugin failed)
//! - the activation cache's `explaind_activation_cache_{hits,misses,evictions}_total` and
//!   `explaind_activation_cache_bytes` (from `explaind-attribution`), and the audit log's queue
//!   depth and write latency (from `explaind-audit`).

use crate::proto;
use crate::trail::RequestTrail;
use explaind_runtime::RunStats;
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tonic::Status;

/// What one request did, as far as the service got.
pub struct Observation {
    pub rpc: explaind_audit::Rpc,
    pub request_id: String,
    pub caller: String,
    pub arrived: SystemTime,
    pub began: Instant,
    pub model: Option<explaind_audit::ModelIdentity>,
    pub explainer: Option<explaind_audit::ExplainerIdentity>,
    pub parameters: serde_json::Value,
    pub input_digest: String,
    /// The request's input tensors (protobuf-encoded), kept only when the audit log stores inputs.
    pub inputs: Option<Vec<u8>>,
    pub stats: RunStats,
    /// Whether the failure (if any) came from the explainer plugin itself.
    pub plugin_failed: bool,
    /// Where `finish` leaves the audit event for the audit-trail layer to write.
    pub trail: Option<Arc<RequestTrail>>,
    /// The digest of the response, when the service computed it already (off the async threads).
    pub result_digest: Option<String>,
    /// The faithfulness metrics of the explanation, for the audit record.
    pub evaluation: Option<serde_json::Value>,
}

impl Observation {
    /// Starts an observation of `request`: its id and arrival come from its
    /// [`crate::trail::RequestTrail`] when the audit-trail layer gave it one (the server
    /// always does), else from its `x-request-id`; its caller from the access layer.
    pub fn start<T>(rpc: explaind_audit::Rpc, request: &tonic::Request<T>) -> Observation {
        let trail = request.extensions().get::<Arc<RequestTrail>>().cloned();
        let arrived = trail.as_ref().map_or_else(SystemTime::now, |t| t.arrived);
        let request_id = trail
            .as_ref()
            .map_or_else(|| crate::trail::request_id(request.metadata().as_ref(), arrived), |t| t.request_id.clone());
        let caller =
            request.extensions().get::<crate::access::Caller>().map(|c| c.name.clone()).unwrap_or_else(|| "unknown".into());
        Observation {
            rpc,
            request_id,
            caller,
            arrived,
            began: trail.as_ref().map_or_else(Instant::now, |t| t.began),
            model: None,
            explainer: None,
            parameters: serde_json::Value::Null,
            input_digest: String::new(),
            inputs: None,
            stats: RunStats::default(),
            plugin_failed: false,
            trail,
            result_digest: None,
            evaluation: None,
        }
    }
}

impl Observation {
    /// The inputs' digest (as `RegisterBackground` names rows: shapes and float32 data of every
    /// input), and the inputs themselves (their protobuf encoding) when the audit log keeps them.
    /// Only the audit record uses them: without an audit log, nothing is hashed or encoded.
    pub fn record_inputs(&mut self, observer: &Observer, inputs: &[explaind_runtime::Tensor], wire: &[proto::NamedTensor]) {
        use prost::Message;
        if observer.audit.is_none() {
            return;
        }
        self.input_digest = explaind_runtime::digest_tensors(inputs);
        if observer.stores_inputs() {
            self.inputs = Some(wire.iter().flat_map(|t| t.encode_length_delimited_to_vec()).collect());
        }
    }

    /// The explain request's parameters, for the audit record (and only when there is one).
    pub fn record_parameters(&mut self, observer: &Observer, request: &proto::ExplainRequest) {
        if observer.audit.is_some() {
            self.parameters = explain_parameters(request);
        }
    }
}

/// The audit identity of a served model.
pub fn model_identity(model: &explaind_runtime::Model) -> explaind_audit::ModelIdentity {
    explaind_audit::ModelIdentity { name: model.name.clone(), version: model.version.clone(), sha256: model.sha256.clone() }
}

/// The request's parameters as JSON (the audit record's `parameters`), with the targets,
/// output and background reference that shape the result.
fn explain_parameters(request: &proto::ExplainRequest) -> serde_json::Value {
    use proto::param_value::Kind;
    let mut params = serde_json::Map::new();
    for (name, value) in &request.parameters {
        let v = match &value.kind {
            Some(Kind::Number(n)) => serde_json::json!(n),
            Some(Kind::Integer(i)) => serde_json::json!(i),
            Some(Kind::Flag(b)) => serde_json::json!(b),
            Some(Kind::Text(t)) => serde_json::json!(t),
            Some(Kind::Numbers(l)) => audited_list(&l.values, |v| v.to_le_bytes()),
            Some(Kind::Integers(l)) => audited_list(&l.values, |v| v.to_le_bytes()),
            None => serde_json::Value::Null,
        };
        params.insert(name.clone(), v);
    }
    let targets = match request.targets.as_ref().and_then(|t| t.selection.as_ref()) {
        None | Some(proto::targets::Selection::Predicted(_)) => serde_json::json!("predicted"),
        Some(proto::targets::Selection::Indices(list)) => {
            serde_json::json!({ "indices": audited_list(&list.values, |v| v.to_le_bytes()) })
        }
        Some(proto::targets::Selection::All(_)) => serde_json::json!("all"),
        Some(proto::targets::Selection::TopK(k)) => serde_json::json!({ "top_k": k }),
    };
    let background = if !request.background_id.is_empty() {
        serde_json::json!({ "id": request.background_id })
    } else if !request.background.is_empty() {
        serde_json::json!("inline")
    } else {
        serde_json::json!("model default")
    };
    serde_json::json!({ "explainer": params, "targets": targets, "output": request.output, "background": background })
}

/// Lists longer than this are recorded by their length and digest, not element by element: a
/// client could otherwise make every record of the log megabytes long.
const MAX_AUDITED_LIST: usize = 64;

/// A parameter list as the audit record keeps it: the values, or for a long list
/// `{"count": n, "sha256": ...}` over the values' little-endian bytes.
fn audited_list<T: serde::Serialize, const N: usize>(values: &[T], bytes: impl Fn(&T) -> [u8; N]) -> serde_json::Value {
    if values.len() <= MAX_AUDITED_LIST {
        return serde_json::json!(values);
    }
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    for v in values {
        sha2::Digest::update(&mut hasher, bytes(v));
    }
    serde_json::json!({ "count": values.len(), "sha256": hex::encode(sha2::Digest::finalize(hasher)) })
}

/// Records metrics and audit records for finished requests.
pub struct Observer {
    pub audit: Option<explaind_audit::AuditLog>,
}

impl Observer {
    pub fn without_audit() -> Self {
        Observer { audit: None }
    }

    /// Whether the audit log keeps the requests' inputs.
    pub fn stores_inputs(&self) -> bool {
        self.audit.as_ref().is_some_and(|a| a.stores_inputs())
    }

    /// Records `observation` with the request's `result` and returns the response to send:
    /// the result with its `x-request-id`, or UNAVAILABLE when the audit log cannot take the
    /// record (a full queue under the "reject" policy, or a failed log).
    pub async fn finish<M: prost::Message>(
        &self,
        observation: Observation,
        result: Result<tonic::Response<M>, Status>,
    ) -> Result<tonic::Response<M>, Status> {
        let rpc = observation.rpc.as_str();
        let model = observation.model.as_ref().map(|m| m.name.clone()).unwrap_or_default();
        let explainer = observation.explainer.as_ref().map(|e| e.name.clone()).unwrap_or_default();
        let code = match &result {
            Ok(_) => tonic::Code::Ok,
            Err(status) => status.code(),
        };
        let elapsed = observation.began.elapsed();
        let labels = [("rpc", rpc.to_string()), ("model", model.clone()), ("explainer", explainer.clone())];
        metrics::counter!("explaind_requests_total", "rpc" => rpc, "model" => model.clone(), "explainer" => explainer.clone(), "code" => format!("{code:?}"))
            .increment(1);
        metrics::histogram!("explaind_request_seconds", &labels).record(elapsed.as_secs_f64());
        if !model.is_empty() {
            metrics::histogram!("explaind_model_seconds", "model" => model.clone())
                .record(observation.stats.elapsed.as_secs_f64());
            metrics::counter!("explaind_model_rows_total", "model" => model.clone()).increment(observation.stats.rows);
        }
        if observation.plugin_failed {
            metrics::counter!("explaind_plugin_errors_total", "explainer" => explainer, "code" => format!("{code:?}"))
                .increment(1);
        }

        let result = bounded_message(result);
        let Some(audit) = &self.audit else { return with_request_id(result, &observation.request_id) };
        // Requests that never named a loaded model (unknown model, malformed) leave a record too.
        let result_digest = match (&result, observation.result_digest) {
            (Ok(_), Some(digest)) => digest,
            (Ok(response), None) => result_digest(response.get_ref()),
            (Err(_), _) => String::new(),
        };
        let (status_code, message) = match &result {
            Ok(_) => (0, String::new()),
            Err(status) => (status.code() as i32, status.message().to_string()),
        };
        let event = explaind_audit::AuditEvent {
            time: observation.arrived,
            request_id: observation.request_id.clone(),
            caller: observation.caller,
            rpc: observation.rpc,
            model: observation.model.unwrap_or_default(),
            explainer: observation.explainer,
            parameters: observation.parameters,
            input_digest: observation.input_digest,
            result_digest,
            inputs: observation.inputs,
            status: explaind_audit::Outcome { code: status_code, message },
            duration: elapsed,
            model_calls: observation.stats.calls,
            model_rows: observation.stats.rows,
            evaluation: match &result {
                Ok(_) => observation.evaluation,
                Err(_) => None,
            },
        };
        match &observation.trail {
            // The audit-trail layer writes it, with the status the client actually gets (a
            // layer may still turn this answer into DEADLINE_EXCEEDED), before the answer leaves.
            Some(trail) => *trail.pending.lock().unwrap_or_else(|e| e.into_inner()) = Some(event),
            None => {
                if let Err(reason) = self.record(audit, event).await {
                    return Err(Status::unavailable(format!("audit log: {reason}; the request's result is withheld")));
                }
            }
        }
        with_request_id(result, &observation.request_id)
    }
}

/// The audit record's digest of a response: SHA-256 of its protobuf encoding, lower-case hex.
pub fn result_digest<M: prost::Message>(response: &M) -> String {
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(response.encode_to_vec()))
}

/// The longest status message a client gets (and the audit log keeps): messages echo request
/// values (names, lists), and a client's metadata limit (16 KiB in grpcio) turns a longer one
/// into a transport error.
const MAX_STATUS_MESSAGE: usize = 1024;

fn bounded_message<M>(result: Result<tonic::Response<M>, Status>) -> Result<tonic::Response<M>, Status> {
    match result {
        Err(status) if status.message().len() > MAX_STATUS_MESSAGE => {
            let message = status.message();
            let mut cut = MAX_STATUS_MESSAGE;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            let bounded = format!("{}... ({} bytes in all)", &message[..cut], message.len());
            Err(Status::with_metadata(status.code(), bounded, status.metadata().clone()))
        }
        other => other,
    }
}

impl Observer {
    /// Writes the record of one answered request (see [`crate::trail`]): the event its service
    /// left, or, for a request no service finished (refused by a layer, past its deadline, not
    /// decodable), one with what is known. `status` is the answer's status when it is an error.
    /// Returns once the record is durable.
    pub async fn record_answer(&self, trail: &RequestTrail, status: Option<explaind_audit::Outcome>) -> Result<(), String> {
        let pending = trail.pending.lock().unwrap_or_else(|e| e.into_inner()).take();
        if pending.is_none() {
            let rpc = trail.rpc.as_str();
            let code = status.as_ref().map_or(0, |s| s.code);
            metrics::counter!("explaind_requests_total", "rpc" => rpc, "model" => "", "explainer" => "", "code" => format!("{:?}", tonic::Code::from(code)))
                .increment(1);
        }
        let Some(audit) = &self.audit else { return Ok(()) };
        let mut event = pending.unwrap_or_else(|| explaind_audit::AuditEvent {
            time: trail.arrived,
            request_id: trail.request_id.clone(),
            caller: trail.caller(),
            rpc: trail.rpc,
            model: Default::default(),
            explainer: None,
            parameters: serde_json::Value::Null,
            input_digest: String::new(),
            result_digest: String::new(),
            inputs: None,
            status: explaind_audit::Outcome { code: tonic::Code::Unknown as i32, message: "answer without a status".into() },
            duration: trail.began.elapsed(),
            model_calls: 0,
            model_rows: 0,
            evaluation: None,
        });
        if let Some(status) = status
            && status.code != event.status.code
        {
            // A layer replaced the service's answer (its deadline passed while the record was
            // being prepared): the result did not leave, so the record holds no digest of it.
            event.result_digest.clear();
            event.status = status;
        }
        self.record(audit, event).await
    }

    /// Hands `event` to the audit log and waits until it is as durable as the fsync policy
    /// promises (written under group commit, synced under `fsync_every_ms = 0`).
    pub async fn record(&self, audit: &explaind_audit::AuditLog, event: explaind_audit::AuditEvent) -> Result<(), String> {
        // Queued without blocking when there is room (the common case); when the queue is full
        // under the "wait" policy, the wait happens on a blocking thread, not on the async workers.
        let receipt = match audit.try_submit_acked(event) {
            Ok(receipt) => receipt,
            Err(Err(e)) => return Err(e.to_string()),
            Err(Ok(event)) => {
                let log = audit.clone();
                match tokio::task::spawn_blocking(move || log.submit_acked(event)).await {
                    Ok(Ok(receipt)) => receipt,
                    Ok(Err(e)) => return Err(e.to_string()),
                    Err(e) => return Err(e.to_string()),
                }
            }
        };
        receipt.await.map_err(|e| e.to_string())
    }
}

fn with_request_id<M>(result: Result<tonic::Response<M>, Status>, id: &str) -> Result<tonic::Response<M>, Status> {
    let value = tonic::metadata::MetadataValue::try_from(id).ok();
    match result {
        Ok(mut response) => {
            if let Some(value) = value {
                response.metadata_mut().insert("x-request-id", value);
            }
            Ok(response)
        }
        Err(mut status) => {
            if let Some(value) = value {
                status.metadata_mut().insert("x-request-id", value);
            }
            Err(status)
        }
    }
}
