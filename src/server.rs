//! Building and running the gRPC server: the explaind services, `grpc.health.v1`, reflection
//! (v1 and v1alpha), and the message-size limit.

use crate::proto;
use crate::service::{AdminService, ExplainService, ModelService, State};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::TcpListenerStream;

/// Names of the services health checking reports on.
pub const SERVICE_NAMES: [&str; 3] = ["explaind.v1.ModelService", "explaind.v1.ExplainService", "explaind.v1.AdminService"];

/// Where the daemon listens: gRPC (explaind's API and the Open Inference Protocol) and,
/// optionally, the protocol's HTTP/JSON routes.
pub struct Listeners {
    pub grpc: TcpListener,
    pub http: Option<TcpListener>,
}

impl From<TcpListener> for Listeners {
    fn from(grpc: TcpListener) -> Self {
        Listeners { grpc, http: None }
    }
}

/// Serves `state` (over TLS when `tls` is given) until `shutdown` resolves: then health turns
/// NOT_SERVING, new requests are refused (HTTP/2 GOAWAY: clients see UNAVAILABLE) and the
/// requests in flight finish; it returns when they have.
pub async fn serve(
    listeners: impl Into<Listeners>,
    state: Arc<State>,
    tls: Option<tonic::transport::ServerTlsConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let Listeners { grpc: listener, http: http_listener } = listeners.into();
    let limit = state.limits.max_message_bytes;
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    for name in SERVICE_NAMES {
        health_reporter.set_service_status(name, tonic_health::ServingStatus::Serving).await;
    }
    health_reporter.set_service_status("", tonic_health::ServingStatus::Serving).await;
    // Each loaded model by name, so a client (or a proxy) can ask for the one it needs.
    let mut names: Vec<String> = state.repository.list().iter().map(|m| m.name.clone()).collect();
    names.sort();
    names.dedup();
    for name in &names {
        crate::service::report_model_health(&health_reporter, &state.repository, name).await;
    }
    let admin = Arc::new(AdminService { state: state.clone(), health: health_reporter.clone() });
    let shutdown = {
        let state = state.clone();
        async move {
            shutdown.await;
            state.start_draining();
            // Health first: a proxy or a Kubernetes probe that asks during the drain hears that
            // this replica is going away.
            let models = state.repository.list().iter().map(|m| crate::service::model_health_name(&m.name)).collect::<Vec<_>>();
            for name in SERVICE_NAMES.iter().map(|s| s.to_string()).chain([String::new()]).chain(models) {
                health_reporter.set_service_status(name, tonic_health::ServingStatus::NotServing).await;
            }
        }
    };

    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let routes = tonic::service::Routes::new(health_service)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?)
        .add_service(
            proto::model_service_server::ModelServiceServer::new(ModelService(state.clone()))
                .max_decoding_message_size(limit)
                .max_encoding_message_size(usize::MAX),
        )
        .add_service(
            proto::explain_service_server::ExplainServiceServer::new(ExplainService(state.clone()))
                .max_decoding_message_size(limit)
                .max_encoding_message_size(usize::MAX),
        )
        .add_service(proto::admin_service_server::AdminServiceServer::from_arc(admin.clone()).max_decoding_message_size(limit))
        .add_service(
            crate::inference::grpc_inference_service_server::GrpcInferenceServiceServer::new(
                crate::oip::grpc::InferenceService { state: state.clone(), admin },
            )
            .max_decoding_message_size(limit)
            .max_encoding_message_size(usize::MAX),
        );
    // Outermost first: every answer leaves its audit record; statuses follow gRPC's
    // conventions; every answer names the replica; then who may call what.
    let replica = http::HeaderValue::from_str(&state.replica).ok().filter(|v| !v.is_empty());
    let layers = tower::ServiceBuilder::new()
        .layer(crate::trail::AuditTrailLayer { observer: state.observer.clone() })
        .layer(tower::layer::layer_fn(|inner| StatusConventions { inner }))
        .layer(tower::util::MapResponseLayer::new(move |mut response: http::Response<tonic::body::Body>| {
            if let Some(value) = &replica {
                response.headers_mut().insert("x-explaind-replica", value.clone());
            }
            response
        }))
        .layer(crate::access::AccessLayer { policy: state.access.clone() });

    // The protocol's HTTP routes call the same stack in process.
    let http_in_flight = http_listener.map(|listener| {
        let stack = tower::util::BoxCloneSyncService::new(layers.clone().service(routes.clone()));
        let front = crate::oip::http::HttpFront::new(stack, state.clone());
        let in_flight = front.in_flight();
        tokio::spawn(front.serve(listener));
        in_flight
    });

    // tonic sets TCP_NODELAY only on sockets it accepts itself. Without it a small response
    // waits for the client's delayed ACK (about 40 ms on Linux) before it is sent.
    let incoming = TcpListenerStream::new(listener).map(|accepted| {
        if let Ok(stream) = &accepted {
            let _ = stream.set_nodelay(true);
        }
        accepted
    });
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    builder.layer(layers).add_routes(routes).serve_with_incoming_shutdown(incoming, shutdown).await?;
    // The HTTP front refuses new requests once draining; the ones it has finish too.
    if let Some(in_flight) = http_in_flight {
        while in_flight.load(std::sync::atomic::Ordering::Acquire) > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    Ok(())
}

/// tonic's statuses for requests it cannot read, turned into the ones gRPC clients in other
/// languages expect and that name the problem as the client's:
/// - a message over the size limit: tonic says OUT_OF_RANGE; gRPC's convention is
///   RESOURCE_EXHAUSTED;
/// - bytes that are not the request message (garbage, a truncated frame, a missing message):
///   tonic says INTERNAL, as if the server were at fault; it is INVALID_ARGUMENT.
#[derive(Clone)]
struct StatusConventions<S> {
    inner: S,
}

/// What tonic's decoder says when the request body is not a valid message.
const UNDECODABLE: [&str; 3] = ["failed to decode Protobuf message", "Unexpected EOF decoding stream", "Missing request message"];

impl<S, B, R> tower::Service<http::Request<B>> for StatusConventions<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let future = self.inner.call(request);
        Box::pin(async move {
            let mut response = future.await?;
            // An error answer carries its status in the headers (a result's comes after the body).
            let Some(status) = tonic::Status::from_header_map(response.headers()) else { return Ok(response) };
            let message = status.message();
            let conventional = match status.code() {
                tonic::Code::OutOfRange if message.contains("message length too large") => {
                    Some(tonic::Status::resource_exhausted(message))
                }
                tonic::Code::Internal if UNDECODABLE.iter().any(|m| message.contains(m)) => {
                    Some(tonic::Status::invalid_argument(format!("request: not a valid message of this RPC ({message})")))
                }
                _ => None,
            };
            if let Some(conventional) = conventional {
                // Replaces grpc-status and grpc-message (encoded as gRPC says).
                let _ = conventional.add_header(response.headers_mut());
            }
            Ok(response)
        })
    }
}

/// Finds `name` (a directory) in the current directory or beside an ancestor of the executable:
/// how a checkout finds its bundled `models/` whether run from the root or from `target/`.
pub fn find_bundled_dir(name: &str) -> Option<std::path::PathBuf> {
    let here = std::path::Path::new(name);
    if here.is_dir() {
        return Some(here.to_path_buf());
    }
    let exe = std::env::current_exe().ok()?;
    exe.ancestors().skip(1).map(|dir| dir.join(name)).find(|p| p.is_dir())
}

/// Sets up everything `serve` needs: ONNX Runtime, the model repository, the plugins.
/// Problems with single models or plugins are logged and skipped; a missing runtime is fatal.
/// Also opens the audit log when one is configured; its writer is returned for the caller to
/// shut down (flush, final checkpoint) after the server stops.
pub fn build_state(config: &crate::config::Config) -> Result<(Arc<State>, Option<explaind_audit::AuditWriter>), String> {
    use explaind_runtime::{ModelRepository, OrtRuntime, RuntimeOptions};
    let library = explaind_runtime::find_library(config.runtime.ort_lib.as_deref());
    let device = config.device()?;
    let options = RuntimeOptions {
        device,
        intra_threads: config.runtime.intra_threads,
        intra_op_spinning: config.runtime.intra_op_spinning,
        sessions_per_model: config.runtime.sessions_per_model,
        max_batch_rows: config.runtime.max_batch_rows,
    };
    let runtime = OrtRuntime::init(&library, options).map_err(|e| e.to_string())?;
    tracing::info!(
        library = %runtime.library.display(),
        cuda_in_library = runtime.cuda_compiled,
        device = ?device,
        "ONNX Runtime loaded"
    );

    let models_dir = match &config.models.dir {
        Some(dir) => dir.clone(),
        None => find_bundled_dir("models").ok_or("no --models given and no bundled models/ directory found")?,
    };
    let repository = Arc::new(ModelRepository::new(models_dir.clone(), runtime));
    let (loaded, failed) = repository.load_all().map_err(|e| e.to_string())?;
    for m in &loaded {
        tracing::info!(
            model = %m.name, version = %m.version, sha256 = %m.sha256,
            provider = m.execution_provider.as_str(), "model loaded"
        );
    }
    for e in &failed {
        tracing::error!("model not loaded: {e}");
    }
    tracing::info!(repository = %models_dir.display(), models = loaded.len(), "model repository ready");

    let plugins = Arc::new(explaind_host::PluginRegistry::new());
    if config.plugins.bundled {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let dir = exe.parent().ok_or("the executable has no directory")?;
        plugins.load_dir(dir, "explaind_plugin_");
    }
    for dir in &config.plugins.dirs {
        plugins.load_dir(dir, "");
    }
    let limits = crate::service::Limits {
        max_message_bytes: config.server.max_message_bytes,
        max_batch_rows: config.server.max_request_rows,
        budget: explaind_host::RequestBudget {
            model_rows: config.server.max_model_rows_per_request,
            scratch_bytes: config.server.max_request_bytes,
        },
        memory: explaind_host::MemoryPool::new(config.server.max_inflight_bytes),
    };
    let engine = Arc::new(
        explaind_attribution::AttributionEngine::new(runtime, config.cache.activation_bytes)
            .with_chunk_bytes(config.cache.chunk_bytes),
    );
    let backgrounds = Arc::new(explaind_host::BackgroundRegistry::new(config.cache.background_bytes));
    let access = Arc::new(crate::access::AccessPolicy::new(&config.auth, config.server.max_concurrent_per_caller));
    if config.auth.tokens.is_empty() && config.auth.clients.is_empty() {
        tracing::warn!("no tokens or client certificates configured: every caller has every role (development mode)");
    }
    let (observer, writer) = match config.audit_log()? {
        None => (crate::observe::Observer::without_audit(), None),
        Some(audit) => {
            let path = audit.path.clone();
            let (log, mut writer) = explaind_audit::AuditLog::open(audit).map_err(|e| format!("audit log: {e}"))?;
            tracing::info!(path = %path.display(), opened = ?writer.opened(), "audit log open");
            // The log as it was found is checked beside the serving, not before it: a large
            // log takes a while, and a warning is what a failure gets either way.
            if let Some(check) = writer.startup_check() {
                let shown = path.clone();
                std::thread::spawn(move || match check.run() {
                    Ok(report) => tracing::info!(path = %shown.display(), "existing audit log verifies: {report}"),
                    Err(e) => tracing::warn!(
                        path = %shown.display(),
                        "the existing audit log does NOT verify: {e}; run `explaind audit verify` on it"
                    ),
                });
            }
            (crate::observe::Observer { audit: Some(log) }, Some(writer))
        }
    };
    // What can explain each model is decided at load, so `ListModels` tells clients before they
    // ask (and the log says why a model is out of reach of the compiled explainers).
    for m in &loaded {
        let decided = engine.compilability(m);
        for (kind, result) in [("gradients", &decided.gradients), ("DeepLIFT", &decided.deeplift)] {
            if let Err(why) = result {
                tracing::warn!(model = %m.name, version = %m.version, "{kind} cannot be compiled: {why}");
            }
        }
    }
    let observer = Arc::new(observer);
    let state = State::new(repository, plugins, engine, backgrounds, limits, access, observer).with_replica(config.replica_id());
    tracing::info!(replica = %state.replica, "replica id");
    Ok((Arc::new(state), writer))
}

/// The TLS settings of `config`, read from their PEM files.
pub fn tls_config(config: &crate::config::Config) -> Result<Option<tonic::transport::ServerTlsConfig>, String> {
    let Some(tls) = &config.tls else { return Ok(None) };
    let read =
        |path: &std::path::Path, what: &str| std::fs::read(path).map_err(|e| format!("tls.{what} {}: {e}", path.display()));
    let identity = tonic::transport::Identity::from_pem(read(&tls.cert, "cert")?, read(&tls.key, "key")?);
    let mut server = tonic::transport::ServerTlsConfig::new().identity(identity);
    if let Some(ca) = &tls.client_ca {
        server = server.client_ca_root(tonic::transport::Certificate::from_pem(read(ca, "client_ca")?));
    }
    Ok(Some(server))
}

/// Installs the Prometheus recorder for the `metrics` crate (once per process) and returns the
/// handle that renders the text exposition.
pub fn install_metrics_recorder() -> Result<metrics_exporter_prometheus::PrometheusHandle, String> {
    // Request and model times span a millisecond to minutes.
    const SECONDS: [f64; 14] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 120.0];
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&SECONDS)
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| format!("metrics: {e}"))
}

/// Answers `GET /metrics` on `listener` with the Prometheus text exposition (HTTP/1.1, no TLS:
/// bind it to an address only the scraper reaches).
pub async fn serve_metrics(listener: TcpListener, handle: metrics_exporter_prometheus::PrometheusHandle) {
    use http_body_util::Full;
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let handle = handle.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request: http::Request<hyper::body::Incoming>| {
                let handle = handle.clone();
                async move {
                    let response = if request.method() == http::Method::GET && request.uri().path() == "/metrics" {
                        http::Response::builder()
                            .header(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")
                            .body(Full::new(bytes::Bytes::from(handle.render())))
                    } else {
                        http::Response::builder()
                            .status(http::StatusCode::NOT_FOUND)
                            .body(Full::new(bytes::Bytes::from_static(b"GET /metrics\n")))
                    };
                    Ok::<_, std::convert::Infallible>(response.expect("static response parts"))
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
        });
    }
}
