//! Every audited request leaves a record, including the ones no service handler finished: a
//! request refused by the access layer, one whose deadline passed, one whose message could not
//! be decoded or was too large. This tower layer is the outermost one, so it sees every answer
//! as the client will see it.
//!
//! - On the way in it gives each Predict and Explain request a [`RequestTrail`] (its request id,
//!   arrival time, and later its caller) in the request's extensions. The access layer fills in
//!   the caller; the services' [`crate::observe::Observation`] takes its request id from it.
//! - A service that answers leaves its audit event in the trail (`Observer::finish`): model,
//!   explainer, parameters, digests.
//! - On the way out, this layer writes exactly one record per request: the service's event, or,
//!   for a request no service finished, one with what is known (rpc, caller, status, message);
//!   either way with the status the client gets, which a layer may have changed after the
//!   service answered (a deadline passing). A result leaves only once its record is durable.
//!   An error answer waits for its record too, but at most until just before tonic's own
//!   deadline timer (outside every layer of ours) would replace the answer with CANCELLED; the
//!   record is written all the same, by a task that outlives the request.
//! - A request whose client goes away before the answer (hyper then drops this layer's future)
//!   is recorded as CANCELLED, by a task the drop starts.

use crate::observe::Observer;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// What the layers and the service know of one audited request.
#[derive(Debug)]
pub struct RequestTrail {
    pub rpc: explaind_audit::Rpc,
    pub request_id: String,
    pub arrived: SystemTime,
    pub began: Instant,
    /// Set by the access layer once it has identified the caller.
    pub caller: Mutex<Option<String>>,
    /// The audit event of the service that answered, if one did.
    pub pending: Mutex<Option<explaind_audit::AuditEvent>>,
    /// When the client's `grpc-timeout` runs out (tonic then answers CANCELLED itself).
    pub client_deadline: Option<Instant>,
}

impl RequestTrail {
    pub fn caller(&self) -> String {
        self.caller.lock().unwrap_or_else(|e| e.into_inner()).clone().unwrap_or_else(|| "unknown".into())
    }
}

static REQUEST_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The request id of a request: the client's `x-request-id` when it is usable, else a fresh one.
pub fn request_id(headers: &http::HeaderMap, arrived: SystemTime) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_string)
        .unwrap_or_else(|| {
            let nanos = arrived.duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
            format!("{nanos:x}-{:x}", REQUEST_COUNTER.fetch_add(1, Ordering::Relaxed))
        })
}

/// The audited RPC a path names, if any.
fn audited_rpc(path: &str) -> Option<explaind_audit::Rpc> {
    match path {
        "/explaind.v1.ModelService/Predict" => Some(explaind_audit::Rpc::Predict),
        "/explaind.v1.ExplainService/Explain" => Some(explaind_audit::Rpc::Explain),
        // Predict or Explain, as the request's parameters say: the service records which (this
        // is what a request that never reached it is recorded as).
        "/inference.GRPCInferenceService/ModelInfer" => Some(explaind_audit::Rpc::Predict),
        _ => None,
    }
}

#[derive(Clone)]
pub struct AuditTrailLayer {
    pub observer: Arc<Observer>,
}

impl<S> tower::Layer<S> for AuditTrailLayer {
    type Service = AuditTrail<S>;
    fn layer(&self, inner: S) -> AuditTrail<S> {
        AuditTrail { inner, observer: self.observer.clone() }
    }
}

#[derive(Clone)]
pub struct AuditTrail<S> {
    inner: S,
    observer: Arc<Observer>,
}

impl<S, B, R> tower::Service<http::Request<B>> for AuditTrail<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let Some(rpc) = audited_rpc(request.uri().path()) else { return Box::pin(self.inner.call(request)) };
        let arrived = SystemTime::now();
        let client_deadline = request
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(crate::convert::parse_grpc_timeout)
            .and_then(|timeout| Instant::now().checked_add(timeout));
        let trail = Arc::new(RequestTrail {
            rpc,
            request_id: request_id(request.headers(), arrived),
            arrived,
            began: Instant::now(),
            caller: Mutex::new(None),
            pending: Mutex::new(None),
            client_deadline,
        });
        request.extensions_mut().insert(trail.clone());
        let future = self.inner.call(request);
        let observer = self.observer.clone();
        Box::pin(async move {
            // If the connection drops this future first (the client's own deadline passed, or
            // it cancelled, while the answer was still being made), the guard records that.
            let mut unanswered = GoneGuard { trail: Some(trail.clone()), observer: observer.clone() };
            let mut response = future.await?;
            unanswered.trail = None;
            let error = error_outcome(response.headers());
            let is_result = error.is_none();
            let record = {
                let trail = trail.clone();
                tokio::spawn(async move { observer.record_answer(&trail, error).await })
            };
            let recorded = match (is_result, trail.client_deadline) {
                (false, Some(deadline)) => {
                    let before_tonic = deadline.checked_sub(Duration::from_millis(1)).unwrap_or(deadline);
                    // Not acknowledged in time: the task still writes it.
                    tokio::time::timeout_at(before_tonic.into(), record).await.unwrap_or(Ok(Ok(())))
                }
                _ => record.await,
            };
            let refused = match recorded {
                Ok(Ok(())) => None,
                Ok(Err(reason)) => Some(reason),
                Err(e) => Some(format!("the audit task failed: {e}")),
            };
            if let Some(reason) = refused {
                tracing::error!(request_id = %trail.request_id, "audit log refused a record: {reason}");
                response =
                    tonic::Status::unavailable(format!("audit log: {reason}; the request's result is withheld")).into_http();
            }
            if let Ok(value) = http::HeaderValue::from_str(&trail.request_id) {
                response.headers_mut().insert("x-request-id", value);
            }
            Ok(response)
        })
    }
}

/// Records, when dropped armed, that the client went away before its answer.
struct GoneGuard {
    trail: Option<Arc<RequestTrail>>,
    observer: Arc<Observer>,
}

impl Drop for GoneGuard {
    fn drop(&mut self) {
        let Some(trail) = self.trail.take() else { return };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let observer = self.observer.clone();
        runtime.spawn(async move {
            let gone = explaind_audit::Outcome {
                code: tonic::Code::Cancelled as i32,
                message: "the client went away before the answer (it cancelled, or its deadline passed)".into(),
            };
            if let Err(reason) = observer.record_answer(&trail, Some(gone)).await {
                tracing::error!(request_id = %trail.request_id, "audit log refused a record: {reason}");
            }
        });
    }
}

/// The status of an error answer, which gRPC carries in the headers (its message
/// percent-encoded); `None` for a result, whose status comes in the trailers after the body.
fn error_outcome(headers: &http::HeaderMap) -> Option<explaind_audit::Outcome> {
    tonic::Status::from_header_map(headers)
        .map(|status| explaind_audit::Outcome { code: status.code() as i32, message: status.message().to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_messages_are_percent_decoded() {
        let message = |encoded: &'static str| {
            let mut headers = http::HeaderMap::new();
            headers.insert("grpc-status", http::HeaderValue::from_static("3"));
            headers.insert("grpc-message", http::HeaderValue::from_static(encoded));
            error_outcome(&headers).map(|o| (o.code, o.message))
        };
        assert_eq!(
            message("failed%20to%20decode%20Protobuf%20message%3A%20x"),
            Some((3, "failed to decode Protobuf message: x".into()))
        );
        assert_eq!(message("100%"), Some((3, "100%".into())));
        assert_eq!(message("%e2%9c%93 ok"), Some((3, "\u{2713} ok".into())));
        assert_eq!(error_outcome(&http::HeaderMap::new()), None, "a result's headers carry no status");
    }
}
