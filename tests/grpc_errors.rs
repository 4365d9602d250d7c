//! Bad requests get a clear status naming the field, over real gRPC, and never hurt the daemon.
mod common;

use common::*;
use explaind::proto;
use explaind::service::Limits;
use std::collections::HashMap;
use tonic::Code;

fn occlusion(inputs: Vec<proto::NamedTensor>) -> proto::ExplainRequest {
    proto::ExplainRequest {
        model: model("digits-cnn"),
        explainer: "occlusion".into(),
        inputs,
        targets: None,
        output: String::new(),
        parameters: HashMap::from([("window".to_string(), integers(&[1, 2, 2]))]),
        background: vec![],
        background_id: String::new(),
        plot: None,
        explained_inputs: Vec::new(),
        evaluate: Vec::new(),
        evaluation_seed: 0,
    }
}

fn digits() -> ndarray::ArrayD<f32> {
    read_npy("models/digits-cnn/1/samples.npy")
}

async fn expect(
    client: &mut proto::explain_service_client::ExplainServiceClient<tonic::transport::Channel>,
    request: proto::ExplainRequest,
    code: Code,
    message_start: &str,
) {
    let status = client.explain(request).await.expect_err("request should fail");
    assert_eq!(status.code(), code, "{}", status.message());
    assert!(status.message().starts_with(message_start), "message {:?} should start with {message_start:?}", status.message());
}

#[tokio::test]
async fn unknown_names_are_not_found() {
    let server = TestServer::start(Default::default(), &[]).await;
    let mut client = server.explainer().await;
    let mut r = occlusion(vec![named("", &digits())]);
    r.model = model("no-such-model");
    expect(&mut client, r, Code::NotFound, "model: model \"no-such-model\" is not loaded").await;
    let mut r = occlusion(vec![named("", &digits())]);
    r.explainer = "no-such-explainer".into();
    expect(&mut client, r, Code::NotFound, "explainer: no explainer named \"no-such-explainer\"").await;
    let mut r = occlusion(vec![named("", &digits())]);
    r.model = Some(proto::ModelRef { name: "digits-cnn".into(), version: "7".into() });
    expect(&mut client, r, Code::NotFound, "model: model \"digits-cnn\" has no loaded version \"7\"").await;
}

#[tokio::test]
async fn malformed_tensors_name_the_field() {
    let server = TestServer::start(Default::default(), &[]).await;
    let mut client = server.explainer().await;

    let mut t = tensor(&digits());
    t.data.truncate(t.data.len() - 1);
    let r = occlusion(vec![proto::NamedTensor { name: "image".into(), tensor: Some(t) }]);
    expect(&mut client, r, Code::InvalidArgument, "inputs[0].tensor.data: expected 2048 bytes").await;

    let mut t = tensor(&digits());
    t.element_type = proto::ElementType::Double as i32;
    let r = occlusion(vec![proto::NamedTensor { name: "image".into(), tensor: Some(t) }]);
    expect(&mut client, r, Code::InvalidArgument, "inputs[0].tensor.element_type: ELEMENT_TYPE_DOUBLE").await;

    let mut x = digits();
    x[[2, 0, 3, 3]] = f32::NAN;
    expect(&mut client, occlusion(vec![named("image", &x)]), Code::InvalidArgument, "inputs[0].tensor.data: element").await;

    let wrong = ndarray::ArrayD::<f32>::zeros(vec![2, 1, 8, 7]);
    expect(
        &mut client,
        occlusion(vec![named("image", &wrong)]),
        Code::InvalidArgument,
        "inputs[0].tensor.shape: model input \"image\" takes [batch, 1, 8, 8]",
    )
    .await;

    expect(
        &mut client,
        occlusion(vec![named("pixels", &digits())]),
        Code::InvalidArgument,
        "inputs[0].name: \"pixels\" is not an input",
    )
    .await;
    expect(&mut client, occlusion(vec![]), Code::InvalidArgument, "inputs: give one tensor per model input").await;
}

#[tokio::test]
async fn bad_targets_and_parameters_name_the_field() {
    let server = TestServer::start(Default::default(), &[]).await;
    let mut client = server.explainer().await;
    let mut r = occlusion(vec![named("", &digits())]);
    r.targets = indices(&[3, 10]);
    expect(&mut client, r, Code::InvalidArgument, "targets.indices[1]: 10 is out of range").await;

    let mut r = occlusion(vec![named("", &digits())]);
    r.parameters.insert("stride".into(), integers(&[1, 1, 1]));
    expect(&mut client, r, Code::InvalidArgument, "parameters.stride: explainer occlusion has no such parameter").await;

    let mut r = occlusion(vec![named("", &digits())]);
    r.parameters.clear();
    expect(&mut client, r, Code::InvalidArgument, "parameters.window: required by explainer occlusion").await;

    let mut r = occlusion(vec![named("", &digits())]);
    r.parameters.insert("baseline".into(), text("zero"));
    expect(&mut client, r, Code::InvalidArgument, "parameters.baseline: expected number, got text").await;

    let mut r = occlusion(vec![named("", &digits())]);
    r.parameters.insert("window".into(), integers(&[1, 9, 9]));
    expect(&mut client, r, Code::InvalidArgument, "parameters.window[1]: 9 must be between 1 and the axis size 8").await;

    let mut r = occlusion(vec![named("", &digits())]);
    r.output = "probabilities".into();
    expect(&mut client, r, Code::InvalidArgument, "output: \"probabilities\" is not an output of digits-cnn").await;
}

#[tokio::test]
async fn oversized_messages_are_resource_exhausted_and_the_daemon_keeps_serving() {
    let limits = Limits { max_message_bytes: 4096, ..Default::default() };
    let server = TestServer::start(limits, &[]).await;
    let mut client = server.explainer().await;
    let big = ndarray::ArrayD::<f32>::zeros(vec![64, 1, 8, 8]); // 16 KiB of data
    let status = client.explain(occlusion(vec![named("", &big)])).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(status.message().contains("too large"), "{}", status.message());

    let too_many_rows = Limits { max_batch_rows: 4, ..Default::default() };
    let server2 = TestServer::start(too_many_rows, &[]).await;
    let mut client2 = server2.explainer().await;
    let status = client2.explain(occlusion(vec![named("", &digits())])).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted);
    assert!(status.message().starts_with("inputs: 8 rows exceed the server's limit of 4"), "{}", status.message());

    // Small requests still work on both.
    let one = digits().slice(ndarray::s![0..1, .., .., ..]).to_owned().into_dyn();
    let response = client.explain(occlusion(vec![named("", &one)])).await.unwrap().into_inner();
    assert_eq!(response.attributions[0].values.as_ref().unwrap().shape, vec![1, 1, 1, 8, 8]);
}
