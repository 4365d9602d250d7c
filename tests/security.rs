//! Access control over real gRPC: bearer tokens mapped to roles, TLS and mutual TLS with
//! certificates made here (rcgen), per-caller concurrency limits and the explainer budget.
mod common;

use common::*;
use explaind::access::AccessPolicy;
use explaind::config::{AuthConfig, ClientEntry, TokenEntry};
use explaind::proto;
use explaind::service::Limits;
use explaind_host::RequestBudget;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity, ServerTlsConfig};

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn token(name: &str, secret: &str, roles: &[&str]) -> TokenEntry {
    TokenEntry { name: name.into(), sha256: sha256_hex(secret.as_bytes()), roles: roles.iter().map(|r| r.to_string()).collect() }
}

fn with_token<T>(message: T, secret: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(secret) = secret {
        request.metadata_mut().insert("authorization", format!("Bearer {secret}").parse().unwrap());
    }
    request
}

fn occlusion_request() -> proto::ExplainRequest {
    proto::ExplainRequest {
        model: model("wine-mlp"),
        explainer: "occlusion".into(),
        inputs: vec![named("features", &read_npy("models/wine-mlp/1/samples.npy"))],
        parameters: HashMap::from([("window".to_string(), integers(&[13]))]),
        ..Default::default()
    }
}

#[tokio::test]
async fn tokens_grant_roles_and_everything_else_is_refused_with_the_right_status() {
    let auth = AuthConfig {
        tokens: vec![
            token("analyst", "s3cret-analyst", &["predict", "explain"]),
            token("scorer", "s3cret-scorer", &["predict"]),
            token("ops", "s3cret-ops", &["admin"]),
        ],
        clients: vec![],
    };
    let server = TestServer::start_secure(Limits::default(), AccessPolicy::new(&auth, 0), None).await;
    let mut explain = server.explainer().await;
    let mut admin = proto::admin_service_client::AdminServiceClient::new(server.channel().await);
    let mut models = server.models().await;

    let status = explain.explain(with_token(occlusion_request(), None)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("missing bearer token"), "{}", status.message());
    let status = explain.explain(with_token(occlusion_request(), Some("guess"))).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("not recognised"), "{}", status.message());

    explain.explain(with_token(occlusion_request(), Some("s3cret-analyst"))).await.unwrap();
    let status = explain.explain(with_token(occlusion_request(), Some("s3cret-scorer"))).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("explain role"), "{}", status.message());

    // Admin RPCs need the admin role: the analyst is denied, ops gets through to the handler
    // (which then reports the unknown model).
    let unload = || proto::UnloadModelRequest { name: "no-such-model".into(), version: String::new() };
    let status = admin.unload_model(with_token(unload(), Some("s3cret-analyst"))).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("admin role"), "{}", status.message());
    let status = admin.unload_model(with_token(unload(), Some("s3cret-ops"))).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");

    // Listing models needs some role; health checks need none.
    models.list_models(with_token(proto::ListModelsRequest {}, Some("s3cret-scorer"))).await.unwrap();
    let status = models.list_models(with_token(proto::ListModelsRequest {}, None)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let mut health = tonic_health::pb::health_client::HealthClient::new(server.channel().await);
    health.check(tonic_health::pb::HealthCheckRequest { service: String::new() }).await.unwrap();
}

/// A CA, a server certificate for `localhost` and a client certificate, both signed by it.
struct Pki {
    ca_pem: String,
    server: (String, String),
    client: (String, String),
    client_der: Vec<u8>,
}

fn pki() -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names).unwrap().signed_by(&key, &ca).unwrap();
        (cert, key)
    };
    let (server_cert, server_key) = leaf(vec!["localhost".into()]);
    let (client_cert, client_key) = leaf(vec!["risk-batch.example".into()]);
    Pki {
        ca_pem: ca.pem(),
        server: (server_cert.pem(), server_key.serialize_pem()),
        client: (client_cert.pem(), client_key.serialize_pem()),
        client_der: client_cert.der().to_vec(),
    }
}

async fn tls_channel(addr: &str, ca_pem: &str, identity: Option<(&str, &str)>) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca_pem)).domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(addr.to_string()).unwrap().tls_config(tls)?.connect().await
}

#[tokio::test]
async fn mutual_tls_admits_listed_client_certificates_only() {
    let pki = pki();
    let stranger = pki_stranger();
    let auth = AuthConfig {
        tokens: vec![token("analyst", "s3cret-analyst", &["explain"])],
        clients: vec![ClientEntry {
            name: "risk-batch".into(),
            cert_sha256: sha256_hex(&pki.client_der),
            roles: vec!["explain".into()],
        }],
    };
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(&pki.server.0, &pki.server.1))
        .client_ca_root(Certificate::from_pem(&pki.ca_pem));
    let server = TestServer::start_secure(Limits::default(), AccessPolicy::new(&auth, 0), Some(tls)).await;
    assert!(server.addr.starts_with("https://"));

    // The listed client certificate is the caller's identity: no token needed.
    let channel = tls_channel(&server.addr, &pki.ca_pem, Some((&pki.client.0, &pki.client.1))).await.unwrap();
    let mut client = proto::explain_service_client::ExplainServiceClient::new(channel);
    client.explain(occlusion_request()).await.unwrap();

    // Without a client certificate, or with one from another CA, the server ends the TLS
    // handshake with an alert: the call never reaches a service. (Under TLS 1.3 the client
    // learns it on its first call; tonic reports that as UNKNOWN "transport error", C-core
    // clients as UNAVAILABLE.)
    for identity in [None, Some((stranger.0.as_str(), stranger.1.as_str()))] {
        let result = match tls_channel(&server.addr, &pki.ca_pem, identity).await {
            Err(e) => Err(format!("connect: {e:?}")),
            Ok(channel) => proto::explain_service_client::ExplainServiceClient::new(channel)
                .explain(occlusion_request())
                .await
                .map(|_| ())
                .map_err(|s| format!("{:?}: {s:?}", s.code())),
        };
        let error = result.expect_err("the call must fail");
        assert!(error.contains("received fatal alert"), "{error}");
    }

    // Plain text to a TLS port fails too.
    let plain = Channel::from_shared(server.addr.replace("https://", "http://")).unwrap().connect().await;
    if let Ok(channel) = plain {
        let status =
            proto::explain_service_client::ExplainServiceClient::new(channel).explain(occlusion_request()).await.unwrap_err();
        assert_ne!(status.code(), Code::Ok);
    }
}

/// A self-signed certificate no CA of the server's vouches for.
fn pki_stranger() -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["stranger.example".to_string()]).unwrap().self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[tokio::test]
async fn a_caller_over_its_concurrency_limit_is_refused_while_others_are_served() {
    let auth = AuthConfig {
        tokens: vec![token("busy", "s3cret-busy", &["explain"]), token("other", "s3cret-other", &["explain"])],
        clients: vec![],
    };
    let server = TestServer::start_secure(Limits::default(), AccessPolicy::new(&auth, 1), None).await;
    let samples = read_npy("models/wine-mlp/1/samples.npy");
    let waiting = |mode: &str| proto::ExplainRequest {
        model: model("wine-mlp"),
        explainer: "misbehaving".into(),
        inputs: vec![named("features", &samples)],
        parameters: HashMap::from([("mode".to_string(), text(mode))]),
        ..Default::default()
    };
    // One request of "busy" waits (the test plugin waits until cancelled) ...
    let mut slow = server.explainer().await;
    let mut first = with_token(waiting("wait"), Some("s3cret-busy"));
    first.set_timeout(std::time::Duration::from_secs(3));
    let in_flight = tokio::spawn(async move { slow.explain(first).await });
    let mut client = server.explainer().await;
    let mut refused = None;
    for _ in 0..100 {
        match client.explain(with_token(waiting("echo"), Some("s3cret-busy"))).await {
            Err(status) => {
                refused = Some(status);
                break;
            }
            // The waiting call has not been admitted yet.
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
    // ... so its second is refused, while another caller is served.
    let refused = refused.expect("the second concurrent request was refused");
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("\"busy\"") && refused.message().contains("in flight"), "{}", refused.message());
    client.explain(with_token(waiting("echo"), Some("s3cret-other"))).await.unwrap();

    // When the first ends (its deadline), "busy" is admitted again.
    let first = in_flight.await.unwrap().unwrap_err();
    assert_eq!(first.code(), Code::DeadlineExceeded);
    client.explain(with_token(waiting("echo"), Some("s3cret-busy"))).await.unwrap();
}

#[tokio::test]
async fn the_explainer_budget_refuses_a_request_whose_estimate_is_over_it_before_any_work() {
    let limits = Limits { budget: RequestBudget { model_rows: 20, scratch_bytes: 0 }, ..Default::default() };
    let server = TestServer::start_secure(limits, AccessPolicy::new(&Default::default(), 0), None).await;
    let mut client = server.explainer().await;
    // Occlusion of 6 rows with 13 one-feature windows: 78 model rows by its estimate, over the
    // budget; refused naming the parameter that drives the cost, and no model row runs.
    let mut request = occlusion_request();
    request.parameters = HashMap::from([("window".to_string(), integers(&[1]))]);
    let status = client.explain(request).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().starts_with("parameters.window: explainer occlusion would need about 7.8"), "{}", status.message());
    assert!(status.message().contains("limit of 20 (--max-model-rows-per-request)"), "{}", status.message());
    // A request within the budget runs: one input, a window covering all 13 features.
    let mut small = occlusion_request();
    small.inputs = vec![named(
        "features",
        &read_npy("models/wine-mlp/1/samples.npy").slice_axis(ndarray::Axis(0), (0..1).into()).to_owned(),
    )];
    client.explain(small).await.unwrap();
}

#[tokio::test]
async fn requests_in_flight_share_one_memory_pool_and_give_it_back() {
    // A pool too small for LIME's samples (hundreds of kilobytes on wine-mlp) but big enough
    // for occlusion's few kilobytes.
    let limits = Limits { memory: explaind_host::MemoryPool::new(64 << 10), ..Default::default() };
    let pool = limits.memory.clone();
    let server = TestServer::start_secure(limits, AccessPolicy::new(&Default::default(), 0), None).await;
    let mut client = server.explainer().await;
    let mut lime = occlusion_request();
    lime.explainer = "lime".into();
    lime.parameters.clear();
    let status = client.explain(lime).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().starts_with("server memory:") && status.message().contains("retry later"), "{}", status.message());
    client.explain(occlusion_request()).await.unwrap();
    assert_eq!(pool.in_use(), 0, "every request gave its reservation back");
}

#[tokio::test]
async fn the_scratch_budget_refuses_a_request_whose_estimate_is_over_it() {
    // LIME on wine-mlp keeps every sample's binary representation and its model rows: 5000
    // samples of 13 features for 6 inputs is well over 64 KiB.
    let limits = Limits { budget: RequestBudget { model_rows: 0, scratch_bytes: 64 << 10 }, ..Default::default() };
    let server = TestServer::start_secure(limits, AccessPolicy::new(&Default::default(), 0), None).await;
    let mut client = server.explainer().await;
    let mut request = occlusion_request();
    request.explainer = "lime".into();
    request.parameters.clear();
    let status = client.explain(request).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("bytes of scratch memory") && status.message().contains("--max-request-bytes"),
        "{}",
        status.message()
    );
}
