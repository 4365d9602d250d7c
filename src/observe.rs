//! What every predict and explain request leaves behind: Prometheus metrics and one audit
//! record. The services fill an [`Observation`] as they learn things (model, explainer, digests,
//! model work) and hand it to [`Observer::finish`] with their result; `finish` records the
//! metrics, writes the audit record, and only then lets the response go out, so no result leaves
//! the daemon unaudited. Metric names:
//!
//! - `explaind_requests_total{rpc, model, explainer, code}`, `explaind_request_seconds{rpc, model, explainer}`
//! - `explaind_model_seconds{model}` (time in ONNX Runtime per request), `explaind_model_rows_total{model}`
//! - `explaind_plugin_errors_total{explainer, code}` (explain requests the plugin failed)
//! - the activation cache's `explaind_activation_cache_{hits,misses,evictions}_total` and
//!   `explaind_activation_cache_bytes` (from `explaind-attribution`), and the audit log's queue
//!   depth and write latency (from `explaind-audit`).

use crate::proto;
use explaind_runtime::RunStats;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
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
}

static REQUEST_COUNTER: AtomicU64 = AtomicU64::new(0);

impl Observation {
    /// Starts an observation of `request`: its id (the client's `x-request-id`, or a fresh
    /// one) and its caller (set by the access layer).
    pub fn start<T>(rpc: explaind_audit::Rpc, request: &tonic::Request<T>) -> Observation {
        let arrived = SystemTime::now();
        let request_id = request
            .metadata()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty() && v.len() <= 128)
            .map(str::to_string)
            .unwrap_or_else(|| {
                let nanos = arrived.duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
                format!("{nanos:x}-{:x}", REQUEST_COUNTER.fetch_add(1, Ordering::Relaxed))
            });
        let caller = request.extensions().get::<crate::access::Caller>().map(|c| c.name.clone()).unwrap_or_else(|| "unknown".into());
        Observation {
            rpc,
            request_id,
            caller,
            arrived,
            began: Instant::now(),
            model: None,
            explainer: None,
            parameters: serde_json::Value::Null,
            input_digest: String::new(),
            inputs: None,
            stats: RunStats::default(),
            plugin_failed: false,
        }
    }
}

impl Observation {
    /// The inputs' digest (as `RegisterBackground` names rows: shapes and float32 data of every
    /// input), and the inputs themselves (their protobuf encoding) when the audit log keeps them.
    /// Only the audit record uses them: without an audit log, nothing is hashed or encoded.
    pub fn record_inputs(&mut self, observer: &Observer, inputs: &[ndarray::ArrayD<f32>], wire: &[proto::NamedTensor]) {
        use prost::Message;
        if observer.audit.is_none() {
            return;
        }
        self.input_digest = explaind_runtime::digest_arrays(inputs);
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
            Some(Kind::Numbers(l)) => serde_json::json!(l.values),
            Some(Kind::Integers(l)) => serde_json::json!(l.values),
            None => serde_json::Value::Null,
        };
        params.insert(name.clone(), v);
    }
    let targets = match request.targets.as_ref().and_then(|t| t.selection.as_ref()) {
        None | Some(proto::targets::Selection::Predicted(_)) => serde_json::json!("predicted"),
        Some(proto::targets::Selection::Indices(list)) => serde_json::json!({ "indices": list.values }),
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
        let rpc = match observation.rpc {
            explaind_audit::Rpc::Predict => "Predict",
            explaind_audit::Rpc::Explain => "Explain",
        };
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
            metrics::histogram!("explaind_model_seconds", "model" => model.clone()).record(observation.stats.elapsed.as_secs_f64());
            metrics::counter!("explaind_model_rows_total", "model" => model.clone()).increment(observation.stats.rows);
        }
        if observation.plugin_failed {
            metrics::counter!("explaind_plugin_errors_total", "explainer" => explainer, "code" => format!("{code:?}")).increment(1);
        }

        let Some(audit) = &self.audit else { return with_request_id(result, &observation.request_id) };
        // Requests that never named a loaded model (unknown model, malformed) leave a record too.
        let result_digest = match &result {
            Ok(response) => hex::encode(<sha2::Sha256 as sha2::Digest>::digest(response.get_ref().encode_to_vec())),
            Err(_) => String::new(),
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
            model: observation.model.unwrap_or_else(|| explaind_audit::ModelIdentity {
                name: String::new(),
                version: String::new(),
                sha256: String::new(),
            }),
            explainer: observation.explainer,
            parameters: observation.parameters,
            input_digest: observation.input_digest,
            result_digest,
            inputs: observation.inputs,
            status: explaind_audit::Outcome { code: status_code, message },
            duration: elapsed,
            model_calls: observation.stats.calls,
            model_rows: observation.stats.rows,
        };
        // Without blocking when the queue has room (the common case); when it is full under the
        // "wait" policy, the wait happens on a blocking thread, not on the async workers.
        let refused = match audit.try_submit(event) {
            Ok(()) => None,
            Err(Err(e)) => Some(e.to_string()),
            Err(Ok(event)) => {
                let log = audit.clone();
                match tokio::task::spawn_blocking(move || log.submit(event)).await {
                    Ok(Ok(())) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(e) => Some(e.to_string()),
                }
            }
        };
        if let Some(reason) = refused {
            return Err(Status::unavailable(format!("audit log: {reason}; the request's result is withheld")));
        }
        with_request_id(result, &observation.request_id)
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
