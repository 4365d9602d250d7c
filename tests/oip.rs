//! The Open Inference Protocol's gRPC service over real gRPC, against the native API of the
//! same server: ModelInfer predicts and explains what Predict and Explain do (bit for bit),
//! with typed contents or raw bytes; background rows ride as `background/<input>` inputs; the
//! figure is one BYTES element; requested outputs are filtered; roles apply (an explanation
//! needs `explain`, the repository extension `admin`, liveness nothing). tritonclient's own
//! view is tests/python/test_oip.py.
mod common;

use common::*;
use explaind::access::AccessPolicy;
use explaind::config::{AuthConfig, TokenEntry};
use explaind::inference::{self as oip, grpc_inference_service_client::GrpcInferenceServiceClient};
use explaind::proto;
use explaind::service::Limits;
use std::collections::HashMap;
use tonic::Code;
use tonic::transport::Channel;

fn parameter(value: oip::infer_parameter::ParameterChoice) -> oip::InferParameter {
    oip::InferParameter { parameter_choice: Some(value) }
}

fn string(value: &str) -> oip::InferParameter {
    parameter(oip::infer_parameter::ParameterChoice::StringParam(value.into()))
}

fn wine() -> ndarray::ArrayD<f32> {
    read_npy("models/wine-mlp/1/samples.npy")
}

/// An FP32 input with its elements as typed contents.
fn fp32_input(name: &str, array: &ndarray::ArrayD<f32>) -> oip::model_infer_request::InferInputTensor {
    oip::model_infer_request::InferInputTensor {
        name: name.into(),
        datatype: "FP32".into(),
        shape: array.shape().iter().map(|&d| d as i64).collect(),
        contents: Some(oip::InferTensorContents { fp32_contents: array.iter().copied().collect(), ..Default::default() }),
        ..Default::default()
    }
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

async fn client(server: &TestServer) -> GrpcInferenceServiceClient<Channel> {
    GrpcInferenceServiceClient::new(server.channel().await).max_decoding_message_size(1 << 30)
}

fn output<'a>(response: &'a oip::ModelInferResponse, name: &str) -> (&'a oip::model_infer_response::InferOutputTensor, &'a [u8]) {
    let at = response.outputs.iter().position(|o| o.name == name).unwrap_or_else(|| panic!("no output {name}"));
    (&response.outputs[at], &response.raw_output_contents[at])
}

#[tokio::test]
async fn model_infer_predicts_what_predict_does_from_contents_or_raw_bytes() {
    let server = TestServer::start(Limits::default(), &[]).await;
    let mut oip = client(&server).await;
    let x = wine();
    let native = server
        .models()
        .await
        .predict(proto::PredictRequest { model: model("wine-mlp"), inputs: vec![named("features", &x)] })
        .await
        .unwrap()
        .into_inner();
    let from_contents = oip
        .model_infer(oip::ModelInferRequest {
            model_name: "wine-mlp".into(),
            id: "req-7".into(),
            inputs: vec![fp32_input("features", &x)],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(from_contents.id, "req-7");
    assert_eq!(from_contents.model_version, "1");
    assert_eq!(from_contents.outputs.len(), native.outputs.len());
    for (o, n) in from_contents.outputs.iter().zip(&native.outputs) {
        let (header, bytes) = output(&from_contents, &o.name);
        let t = n.tensor.as_ref().unwrap();
        assert_eq!((header.name.as_str(), header.datatype.as_str(), &header.shape), (n.name.as_str(), "FP32", &t.shape));
        assert_eq!(bytes, &t.data[..], "output {} differs from Predict's", n.name);
    }
    // The same request with raw bytes, asking for the second output only.
    let mut raw_input = fp32_input("features", &x);
    raw_input.contents = None;
    let raw = x.iter().flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>();
    let second = native.outputs[1].name.clone();
    let from_raw = oip
        .model_infer(oip::ModelInferRequest {
            model_name: "wine-mlp".into(),
            inputs: vec![raw_input],
            raw_input_contents: vec![raw],
            outputs: vec![oip::model_infer_request::InferRequestedOutputTensor { name: second.clone(), ..Default::default() }],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(from_raw.outputs.len(), 1);
    assert_eq!(from_raw.raw_output_contents[0], native.outputs[1].tensor.as_ref().unwrap().data);
}

#[tokio::test]
async fn model_infer_explains_what_explain_does_with_background_rows_and_a_figure() {
    let server = TestServer::start(Limits::default(), &[]).await;
    let mut oip = client(&server).await;
    let x = wine();
    let background = read_npy("models/wine-mlp/1/background.npy");
    let native = server
        .explainer()
        .await
        .explain(proto::ExplainRequest {
            model: model("wine-mlp"),
            explainer: "deep-shap".into(),
            inputs: vec![named("features", &x)],
            targets: Some(proto::Targets { selection: Some(proto::targets::Selection::All(proto::AllOutputs {})) }),
            background: vec![named("features", &background)],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let response = oip
        .model_infer(oip::ModelInferRequest {
            model_name: "wine-mlp".into(),
            parameters: HashMap::from([
                ("explainer".to_string(), string("deep-shap")),
                ("targets".to_string(), string("all")),
                ("plot".to_string(), parameter(oip::infer_parameter::ParameterChoice::BoolParam(true))),
            ]),
            inputs: vec![fp32_input("features", &x), fp32_input("background/features", &background)],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (header, bytes) = output(&response, "attributions/features");
    let expected = native.attributions[0].values.as_ref().unwrap();
    assert_eq!(header.shape, expected.shape);
    assert_eq!(f32s(bytes), floats(expected), "attributions differ from Explain's");
    let (header, bytes) = output(&response, "base_values");
    assert_eq!(header.datatype, "FP32");
    assert_eq!(f32s(bytes), floats(native.base_values.as_ref().unwrap()));
    let (header, bytes) = output(&response, "target_indices");
    assert_eq!(header.datatype, "INT64");
    assert_eq!(bytes, &native.target_indices.as_ref().unwrap().data[..]);
    let (header, _) = output(&response, "extras/completeness_residual");
    assert_eq!(header.datatype, "FP32");
    let (header, bytes) = output(&response, "figure");
    assert_eq!((header.datatype.as_str(), &header.shape[..]), ("BYTES", &[1i64][..]));
    let length = u32::from_le_bytes(bytes[..4].try_into().unwrap()) as usize;
    assert_eq!(length + 4, bytes.len());
    assert_eq!(&bytes[4..12], b"\x89PNG\r\n\x1a\n", "the figure is a PNG");
    let explainer = &response.parameters["explainer"];
    assert_eq!(explainer.parameter_choice, Some(oip::infer_parameter::ParameterChoice::StringParam("deep-shap".into())));
}

#[tokio::test]
async fn bad_requests_are_invalid_argument_naming_the_protocols_field() {
    let server = TestServer::start(Limits::default(), &[]).await;
    let mut oip = client(&server).await;
    let x = wine();
    let base = || oip::ModelInferRequest {
        model_name: "wine-mlp".into(),
        inputs: vec![fp32_input("features", &x)],
        ..Default::default()
    };
    let cases: Vec<(oip::ModelInferRequest, &str)> = vec![
        (
            oip::ModelInferRequest { raw_input_contents: vec![vec![], vec![]], ..base() },
            "raw_input_contents: 2 entries for 1 inputs",
        ),
        (
            oip::ModelInferRequest {
                outputs: vec![oip::model_infer_request::InferRequestedOutputTensor { name: "nope".into(), ..Default::default() }],
                ..base()
            },
            "outputs[0].name: \"nope\"",
        ),
        (
            oip::ModelInferRequest { parameters: HashMap::from([("targets".to_string(), string("1,x"))]), ..base() },
            // Without an explainer, targets are not read: a prediction ignores them.
            "",
        ),
        (
            oip::ModelInferRequest {
                parameters: HashMap::from([
                    ("explainer".to_string(), string("occlusion")),
                    ("targets".to_string(), string("1,x")),
                ]),
                ..base()
            },
            "parameters.targets: \"1,x\" is not",
        ),
        (
            oip::ModelInferRequest {
                parameters: HashMap::from([
                    ("explainer".to_string(), string("occlusion")),
                    ("window".to_string(), string("[1, \"a\"]")),
                ]),
                ..base()
            },
            "parameters.window: a list of numbers",
        ),
        (
            oip::ModelInferRequest { inputs: vec![fp32_input("background/features", &x), fp32_input("features", &x)], ..base() },
            "inputs: background/* inputs are background rows",
        ),
    ];
    for (request, expected) in cases {
        if expected.is_empty() {
            oip.model_infer(request).await.unwrap();
            continue;
        }
        let status = oip.model_infer(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().starts_with(expected), "{:?} does not start with {expected:?}", status.message());
    }
    let status = oip
        .model_infer(oip::ModelInferRequest {
            model_name: "no-such".into(),
            inputs: vec![fp32_input("features", &x)],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    // An RPC of the protocol that explaind does not serve.
    let mut grpc = tonic::client::Grpc::new(server.channel().await);
    grpc.ready().await.unwrap();
    let status = grpc
        .unary::<_, oip::ServerLiveResponse, _>(
            tonic::Request::new(oip::ServerLiveRequest {}),
            "/inference.GRPCInferenceService/ModelStatistics".parse().unwrap(),
            tonic_prost::ProstCodec::default(),
        )
        .await;
    assert_eq!(status.unwrap_err().code(), Code::Unimplemented);
}

#[tokio::test]
async fn roles_apply_to_the_protocol_as_to_the_native_api() {
    let token = |name: &str, roles: &[&str]| TokenEntry {
        name: name.into(),
        sha256: explaind_audit::sha256_hex(name.as_bytes()),
        roles: roles.iter().map(|r| r.to_string()).collect(),
    };
    let auth = AuthConfig { tokens: vec![token("scorer", &["predict"]), token("analyst", &["explain"])], clients: vec![] };
    let server = TestServer::start_secure(Limits::default(), AccessPolicy::new(&auth, 0), None).await;
    let mut oip = client(&server).await;
    let with = |secret: Option<&str>, request: oip::ModelInferRequest| {
        let mut r = tonic::Request::new(request);
        if let Some(secret) = secret {
            r.metadata_mut().insert("authorization", format!("Bearer {secret}").parse().unwrap());
        }
        r
    };
    let x = wine();
    let predict = || oip::ModelInferRequest {
        model_name: "wine-mlp".into(),
        inputs: vec![fp32_input("features", &x)],
        ..Default::default()
    };
    let explain = || oip::ModelInferRequest {
        parameters: HashMap::from([("explainer".to_string(), string("occlusion")), ("window".to_string(), string("[1]"))]),
        ..predict()
    };
    oip.model_infer(with(Some("scorer"), predict())).await.unwrap();
    let status = oip.model_infer(with(Some("scorer"), explain())).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("explain role that ModelInfer with parameters.explainer needs"), "{}", status.message());
    oip.model_infer(with(Some("analyst"), explain())).await.unwrap();
    let status = oip.model_infer(with(Some("analyst"), predict())).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let status = oip.model_infer(with(None, predict())).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let load = oip::RepositoryModelLoadRequest { model_name: "wine-mlp".into(), ..Default::default() };
    let mut request = tonic::Request::new(load);
    request.metadata_mut().insert("authorization", "Bearer analyst".parse().unwrap());
    let status = oip.repository_model_load(request).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    // Liveness and readiness are open, as health checks are.
    assert!(oip.server_live(oip::ServerLiveRequest {}).await.unwrap().into_inner().live);
    assert!(oip.server_ready(oip::ServerReadyRequest {}).await.unwrap().into_inner().ready);
}

#[tokio::test]
async fn faithfulness_metrics_ride_on_model_infer() {
    let server = TestServer::start(Limits::default(), &[]).await;
    let mut oip = client(&server).await;
    let x = wine();
    let request = |evaluate: &str| oip::ModelInferRequest {
        model_name: "wine-mlp".into(),
        parameters: HashMap::from([
            ("explainer".to_string(), string("deep-shap")),
            ("targets".to_string(), string("all")),
            ("evaluate".to_string(), string(evaluate)),
            ("evaluation_seed".to_string(), parameter(oip::infer_parameter::ParameterChoice::Int64Param(5))),
            ("plot".to_string(), parameter(oip::infer_parameter::ParameterChoice::BoolParam(true))),
        ]),
        inputs: vec![fp32_input("features", &x)],
        ..Default::default()
    };
    let response = oip.model_infer(request(r#"{"deletion": {"steps": 4}, "completeness": null}"#)).await.unwrap().into_inner();
    let native = server
        .explainer()
        .await
        .explain(proto::ExplainRequest {
            model: model("wine-mlp"),
            explainer: "deep-shap".into(),
            inputs: vec![named("features", &x)],
            targets: Some(proto::Targets { selection: Some(proto::targets::Selection::All(proto::AllOutputs {})) }),
            evaluate: vec![proto::MetricRequest {
                name: "deletion".into(),
                parameters: [("steps".to_string(), proto::ParamValue { kind: Some(proto::param_value::Kind::Integer(4)) })]
                    .into(),
            }],
            evaluation_seed: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (header, bytes) = output(&response, "evaluation/deletion");
    assert_eq!((header.datatype.as_str(), &header.shape[..]), ("FP32", &[6i64, 3][..]));
    assert_eq!(f32s(bytes), floats(native.evaluation[0].values.as_ref().unwrap()), "the native API's figures");
    let (header, _) = output(&response, "evaluation/deletion/curve");
    assert_eq!(header.shape, vec![6, 3, 5]);
    let (header, bytes) = output(&response, "evaluation/deletion/figure");
    assert_eq!(header.datatype, "BYTES");
    assert_eq!(&bytes[4..8], b"\x89PNG");
    let (_, completeness) = output(&response, "evaluation/completeness");
    assert!(f32s(completeness).iter().all(|v| v.abs() < 1e-3), "Deep SHAP is complete");
    assert_eq!(
        response.parameters["evaluation_seed"].parameter_choice,
        Some(oip::infer_parameter::ParameterChoice::Uint64Param(5))
    );
    // Names alone, and a bad one named in the protocol's field.
    let response = oip.model_infer(request("infidelity, insertion")).await.unwrap().into_inner();
    output(&response, "evaluation/infidelity");
    output(&response, "evaluation/insertion");
    let status = oip.model_infer(request("fidelity")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("evaluate[0].name: no metric named \"fidelity\""), "{}", status.message());
    let status = oip.model_infer(request("{\"deletion\": 3}")).await.unwrap_err();
    assert!(status.message().starts_with("parameters.evaluate.deletion: expected an object"), "{}", status.message());
}
