//! The admin RPCs load, reload and unload models from the repository, and only from it.
mod common;

use common::*;
use explaind::proto;
use explaind::proto::admin_service_client::AdminServiceClient;
use tonic::Code;

#[tokio::test]
async fn unload_then_load_again_from_the_repository() {
    let server = TestServer::start(Default::default(), &[]).await;
    let mut admin = AdminServiceClient::new(server.channel().await);
    let mut models = server.models().await;

    let unloaded = admin
        .unload_model(proto::UnloadModelRequest { name: "wine-mlp".into(), version: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unloaded.unloaded_versions, vec!["1"]);
    let status = models.get_model(proto::GetModelRequest { model: model("wine-mlp") }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);

    let loaded =
        admin.load_model(proto::LoadModelRequest { name: "wine-mlp".into(), version: "1".into() }).await.unwrap().into_inner();
    assert_eq!(loaded.loaded.len(), 1);
    let expected_sha = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(std::fs::read(repo_root().join("models/wine-mlp/1/model.onnx")).unwrap()))
    };
    assert_eq!(loaded.loaded[0].sha256, expected_sha);
    let meta = models.get_model(proto::GetModelRequest { model: model("wine-mlp") }).await.unwrap().into_inner();
    assert_eq!(meta.outputs.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), ["logits", "probabilities"]);

    // Reloading a loaded model replaces it in place.
    let reloaded = admin
        .load_model(proto::LoadModelRequest { name: "digits-cnn".into(), version: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(reloaded.loaded[0].version, "1");
    assert_eq!(
        models.list_models(proto::ListModelsRequest {}).await.unwrap().into_inner().models.len(),
        3,
        "digits-cnn, mnist-cnn, wine-mlp"
    );
}

#[tokio::test]
async fn requests_cannot_name_paths() {
    let server = TestServer::start(Default::default(), &[]).await;
    let mut admin = AdminServiceClient::new(server.channel().await);
    for name in ["../models/digits-cnn", "/etc", "digits-cnn/1", ".."] {
        let status = admin.load_model(proto::LoadModelRequest { name: name.into(), version: String::new() }).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
        assert!(status.message().starts_with("name: "), "{}", status.message());
    }
    let status = admin
        .load_model(proto::LoadModelRequest { name: "digits-cnn".into(), version: "../../wine-mlp/1".into() })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("version: "), "{}", status.message());

    let status =
        admin.load_model(proto::LoadModelRequest { name: "not-there".into(), version: String::new() }).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
}

#[tokio::test]
async fn each_model_has_a_health_name_that_follows_its_loading() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let server = TestServer::start(Default::default(), &[]).await;
    let mut health = HealthClient::new(server.channel().await);
    let mut admin = AdminServiceClient::new(server.channel().await);
    let status = |reply: tonic::Response<tonic_health::pb::HealthCheckResponse>| reply.into_inner().status;
    let check = |service: &str| HealthCheckRequest { service: service.to_string() };

    for model in ["digits-cnn", "mnist-cnn", "wine-mlp"] {
        let reply = health.check(check(&format!("explaind.v1.ModelService/{model}"))).await.unwrap();
        assert_eq!(status(reply), ServingStatus::Serving as i32, "{model}");
    }
    let unknown = health.check(check("explaind.v1.ModelService/no-such-model")).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);

    admin.unload_model(proto::UnloadModelRequest { name: "wine-mlp".into(), version: String::new() }).await.unwrap();
    let reply = health.check(check("explaind.v1.ModelService/wine-mlp")).await.unwrap();
    assert_eq!(status(reply), ServingStatus::NotServing as i32, "unloaded");
    let reply = health.check(check("")).await.unwrap();
    assert_eq!(status(reply), ServingStatus::Serving as i32, "the server still serves the others");
    admin.load_model(proto::LoadModelRequest { name: "wine-mlp".into(), version: String::new() }).await.unwrap();
    let reply = health.check(check("explaind.v1.ModelService/wine-mlp")).await.unwrap();
    assert_eq!(status(reply), ServingStatus::Serving as i32, "loaded again");
}
