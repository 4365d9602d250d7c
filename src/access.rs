//! Who is calling, what they may do, and how long they may take: one tower layer in front of
//! every service.
//!
//! - **Identity.** A bearer token (`authorization: Bearer <token>`, looked up by its SHA-256) or,
//!   under mutual TLS, the client certificate (by the SHA-256 of its DER encoding). With no
//!   tokens and no clients configured the daemon is open (development): every caller has every
//!   role and is named by its address.
//! - **Roles.** `predict` for ModelService/Predict, `explain` for ExplainService, `admin` for
//!   AdminService; listing models needs any role. Health checks and reflection are open. The
//!   Open Inference Protocol maps onto the same roles (see `required_role`).
//!   Missing or unknown credentials: UNAUTHENTICATED; a known caller without the role:
//!   PERMISSION_DENIED.
//! - **Concurrency.** At most `max_concurrent_per_caller` requests in flight per caller;
//!   more: RESOURCE_EXHAUSTED.
//! - **Deadlines.** tonic answers an expired `grpc-timeout` with CANCELLED; gRPC's contract is
//!   DEADLINE_EXCEEDED. This layer answers first (tonic's timer layer polls the inner service
//!   before its own timer, and this layer's deadline is a little earlier), and dropping
//!   the request's future raises its cancellation flag, which stops the plugin at its next
//!   check.
//!
//! The caller is put in the request's extensions as a [`Caller`] for the services (audit
//! records name it).

use crate::config::AuthConfig;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tonic::Status;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};

pub const ROLES: [&str; 3] = ["predict", "explain", "admin"];

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The configured name, or `address:<ip>` when the daemon is open.
    pub name: String,
    /// How the caller was identified: "token", "certificate" or "open".
    pub via: &'static str,
    roles: Vec<String>,
}

/// When the client's deadline passes (from `grpc-timeout`).
#[derive(Debug, Clone, Copy)]
pub struct Deadline(pub Instant);

struct Principal {
    name: String,
    roles: Vec<String>,
}

pub struct AccessPolicy {
    tokens: HashMap<String, Principal>,
    clients: HashMap<String, Principal>,
    max_concurrent: usize,
    in_flight: dashmap::DashMap<String, Arc<tokio::sync::Semaphore>>,
}

/// The role an RPC needs: `None` for open services, `Some(None)` for any role.
fn required_role(path: &str) -> Option<Option<&'static str>> {
    let (service, method) = path.trim_start_matches('/').split_once('/')?;
    match service {
        "explaind.v1.ModelService" if method == "Predict" => Some(Some("predict")),
        "explaind.v1.ModelService" => Some(None),
        "explaind.v1.ExplainService" => Some(Some("explain")),
        "explaind.v1.AdminService" => Some(Some("admin")),
        // The Open Inference Protocol: liveness and readiness are open, as gRPC health is;
        // ModelInfer needs `predict`, or `explain` when it explains, which only the service can
        // tell from the request (see `Caller::require`); the repository extension is admin.
        crate::oip::SERVICE if matches!(method, "ServerLive" | "ServerReady") => None,
        crate::oip::SERVICE if method.starts_with("Repository") => Some(Some("admin")),
        crate::oip::SERVICE => Some(None),
        _ => None,
    }
}

impl Caller {
    /// PERMISSION_DENIED unless the caller has `role`, which `what` needs. Requests that pass
    /// the layer without a caller (open services) have none to check.
    pub fn require(caller: Option<&Caller>, role: &str, what: &str) -> Result<(), Status> {
        match caller {
            Some(c) if !c.roles.iter().any(|r| r == role) => Err(Status::permission_denied(format!(
                "caller {:?} lacks the {role} role that {what} needs (it has: {})",
                c.name,
                if c.roles.is_empty() { "none".to_string() } else { c.roles.join(", ") }
            ))),
            _ => Ok(()),
        }
    }
}

impl AccessPolicy {
    pub fn new(auth: &AuthConfig, max_concurrent_per_caller: usize) -> Self {
        let principal = |name: &str, roles: &[String]| Principal { name: name.to_string(), roles: roles.to_vec() };
        AccessPolicy {
            tokens: auth.tokens.iter().map(|t| (t.sha256.clone(), principal(&t.name, &t.roles))).collect(),
            clients: auth.clients.iter().map(|c| (c.cert_sha256.clone(), principal(&c.name, &c.roles))).collect(),
            max_concurrent: max_concurrent_per_caller,
            in_flight: Default::default(),
        }
    }

    fn open(&self) -> bool {
        self.tokens.is_empty() && self.clients.is_empty()
    }

    /// Identifies the caller of `request` and checks it may call `path`.
    fn authorize<B>(&self, path: &str, request: &http::Request<B>) -> Result<Option<Caller>, Status> {
        let Some(role) = required_role(path) else { return Ok(None) };
        let method = path.trim_start_matches("/explaind.v1.");
        let caller = self.identify(request)?;
        if let Some(role) = role {
            Caller::require(Some(&caller), role, method)?;
        } else if caller.roles.is_empty() {
            return Err(Status::permission_denied(format!("caller {:?} has no role, and {method} needs one", caller.name)));
        }
        Ok(Some(caller))
    }

    fn identify<B>(&self, request: &http::Request<B>) -> Result<Caller, Status> {
        let certificate = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(|info| info.peer_certs())
            .and_then(|certs| certs.first().map(|c| hex::encode(Sha256::digest(c.as_ref()))));
        if self.open() {
            let address = request
                .extensions()
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|i| i.get_ref().remote_addr())
                .or_else(|| request.extensions().get::<TcpConnectInfo>().and_then(|i| i.remote_addr()));
            let name = match (certificate, address) {
                (Some(cert), _) => format!("certificate:{cert}"),
                (None, Some(address)) => format!("address:{}", address.ip()),
                (None, None) => "anonymous".into(),
            };
            return Ok(Caller { name, via: "open", roles: ROLES.iter().map(|r| r.to_string()).collect() });
        }
        if let Some(header) = request.headers().get(http::header::AUTHORIZATION) {
            let token = header
                .to_str()
                .ok()
                .and_then(|h| h.strip_prefix("Bearer "))
                .ok_or_else(|| Status::unauthenticated("authorization: expected \"Bearer <token>\""))?;
            let digest = hex::encode(Sha256::digest(token.trim().as_bytes()));
            let principal = self
                .tokens
                .get(&digest)
                .ok_or_else(|| Status::unauthenticated("authorization: the bearer token is not recognised"))?;
            return Ok(Caller { name: principal.name.clone(), via: "token", roles: principal.roles.clone() });
        }
        if let Some(principal) = certificate.as_ref().and_then(|c| self.clients.get(c)) {
            return Ok(Caller { name: principal.name.clone(), via: "certificate", roles: principal.roles.clone() });
        }
        Err(Status::unauthenticated(match certificate {
            Some(cert) => format!("authorization: no bearer token, and client certificate sha256:{cert} is not listed"),
            None => "authorization: missing bearer token".into(),
        }))
    }

    /// A permit for one more request of `caller`, or RESOURCE_EXHAUSTED.
    fn admit(&self, caller: &str) -> Result<Option<tokio::sync::OwnedSemaphorePermit>, Status> {
        if self.max_concurrent == 0 {
            return Ok(None);
        }
        let semaphore = self
            .in_flight
            .entry(caller.to_string())
            .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(self.max_concurrent)))
            .clone();
        semaphore.try_acquire_owned().map(Some).map_err(|_| {
            Status::resource_exhausted(format!(
                "caller {caller:?} already has {} requests in flight (the limit per caller)",
                self.max_concurrent
            ))
        })
    }
}

/// The tower layer: see the module documentation.
#[derive(Clone)]
pub struct AccessLayer {
    pub policy: Arc<AccessPolicy>,
}

impl<S> tower::Layer<S> for AccessLayer {
    type Service = Access<S>;
    fn layer(&self, inner: S) -> Access<S> {
        Access { inner, policy: self.policy.clone() }
    }
}

#[derive(Clone)]
pub struct Access<S> {
    inner: S,
    policy: Arc<AccessPolicy>,
}

/// How much before the client's deadline this layer answers: early enough that the answer
/// beats tonic's server timer (started a moment earlier) and reaches a client whose own timer
/// (tonic's, say) started before the request was sent; 2 % of the timeout, within 5–50 ms.
fn deadline_margin(timeout: std::time::Duration) -> std::time::Duration {
    use std::time::Duration;
    (timeout / 50).clamp(Duration::from_millis(5), Duration::from_millis(50)).min(timeout / 2)
}

impl<S, B, R> tower::Service<http::Request<B>> for Access<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        let path = request.uri().path().to_string();
        let trail = request.extensions().get::<Arc<crate::trail::RequestTrail>>().cloned();
        let caller = match self.policy.authorize(&path, &request) {
            Ok(caller) => caller,
            Err(status) => return Box::pin(async move { Ok(status.into_http()) }),
        };
        let permit = match caller.as_ref().map(|c| self.policy.admit(&c.name)).transpose() {
            Ok(permit) => permit.flatten(),
            Err(status) => return Box::pin(async move { Ok(status.into_http()) }),
        };
        let deadline = request
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(crate::convert::parse_grpc_timeout)
            .map(|timeout| Instant::now() + timeout - deadline_margin(timeout));
        if let Some(deadline) = deadline {
            request.extensions_mut().insert(Deadline(deadline));
        }
        if let Some(caller) = caller {
            if let Some(trail) = &trail {
                *trail.caller.lock().unwrap_or_else(|e| e.into_inner()) = Some(caller.name.clone());
            }
            request.extensions_mut().insert(caller);
        }
        let future = self.inner.call(request);
        Box::pin(async move {
            let _permit = permit;
            match deadline {
                None => future.await,
                Some(deadline) => match tokio::time::timeout_at(deadline.into(), future).await {
                    Ok(response) => response,
                    Err(_) => {
                        Ok(Status::deadline_exceeded(format!("the client's deadline passed after {path} started")).into_http())
                    }
                },
            }
        })
    }
}
