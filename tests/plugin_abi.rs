//! The plugin ABI's promises, tested against real shared libraries: the C header and the Rust
//! mirror agree on every layout; broken plugins are refused with the reason and the daemon keeps
//! serving; a plugin's panic becomes an error status; a plugin written in C answers over gRPC.
mod common;

use common::*;
use explaind::proto;
use explaind_host::LoadError;
use std::collections::{BTreeMap, HashMap};
use tonic::Code;

#[test]
fn c_header_and_rust_mirror_have_the_same_layout() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("layout_check");
    let include = std::path::Path::new(explaind_abi::HEADER_PATH).parent().unwrap();
    let status = std::process::Command::new("cc")
        .args(["-std=c11", "-Wall", "-Werror", "-I"])
        .arg(include)
        .arg(repo_root().join("tests/c/layout_check.c"))
        .arg("-o")
        .arg(&exe)
        .status()
        .unwrap();
    assert!(status.success());
    let output = String::from_utf8(std::process::Command::new(&exe).output().unwrap().stdout).unwrap();
    let mut c_side = BTreeMap::new();
    for line in output.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let entry = match parts.as_slice() {
            [name, "size", size] => (name.to_string(), (0usize, size.parse::<usize>().unwrap())),
            [name, offset, size] => (name.to_string(), (offset.parse().unwrap(), size.parse().unwrap())),
            _ => panic!("unexpected line {line:?}"),
        };
        c_side.insert(entry.0, entry.1);
    }
    let rust_side: BTreeMap<String, (usize, usize)> =
        explaind_abi::layout_table().into_iter().map(|(name, offset, size)| (name, (offset, size))).collect();
    assert_eq!(rust_side, c_side, "the Rust mirror and the C header disagree");
    assert!(c_side.len() > 80, "the C program printed too little: {c_side:?}");
}

/// Compiles `tests/c/bad_plugin.c` with `defect`, tries to load it into a running server, and
/// checks that the daemon still lists and explains with the good plugins afterwards.
async fn refused(defect: &str) -> LoadError {
    let server = TestServer::start(Default::default(), &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let library = compile_c_plugin("tests/c/bad_plugin.c", &[defect], dir.path(), &defect.to_lowercase());
    let err = server.state.host.plugins.load_file(&library).expect_err("a broken plugin must be refused");

    let mut explainers = server.explainer().await;
    let names: Vec<String> = explainers
        .list_explainers(proto::ListExplainersRequest {})
        .await
        .unwrap()
        .into_inner()
        .explainers
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(names.iter().all(|n| !n.starts_with("bad-")), "{names:?}");
    assert!(names.contains(&"occlusion".to_string()), "{names:?}");
    let samples = read_npy("models/wine-mlp/1/samples.npy");
    let response = explainers.explain(echo_request(&samples, "echo")).await.unwrap().into_inner();
    assert_eq!(response.attributions[0].values.as_ref().unwrap().shape, vec![6, 2, 13]);
    err
}

#[tokio::test]
async fn missing_entry_symbol_is_refused() {
    let err = refused("BAD_MISSING_ENTRY").await;
    assert!(matches!(err, LoadError::MissingEntry { .. }), "{err}");
    assert!(err.to_string().contains("no `explaind_plugin_v1` symbol"), "{err}");
}

#[tokio::test]
async fn wrong_major_version_is_refused() {
    let err = refused("BAD_WRONG_MAJOR").await;
    assert!(matches!(err, LoadError::WrongMajor { found: 2, .. }), "{err}");
    assert!(err.to_string().contains("ABI major version 2; this host speaks 1"), "{err}");
}

#[tokio::test]
async fn null_required_function_is_refused() {
    let err = refused("BAD_NULL_EXPLAIN").await;
    assert!(matches!(err, LoadError::NullRequired { what: "ExdPluginApi.explain", .. }), "{err}");
}

#[tokio::test]
async fn too_small_struct_size_is_refused() {
    let err = refused("BAD_SHORT_STRUCT").await;
    assert!(matches!(err, LoadError::ShortStruct { found: 8, minimum: 40, .. }), "{err}");
}

#[tokio::test]
async fn an_entry_point_error_is_refused_with_its_message() {
    let err = refused("BAD_ENTRY_ERROR").await;
    match &err {
        LoadError::EntryFailed { message, .. } => assert_eq!(message, "refusing to load: test"),
        other => panic!("expected EntryFailed, got {other}"),
    }
}

fn echo_request(input: &ndarray::ArrayD<f32>, mode: &str) -> proto::ExplainRequest {
    proto::ExplainRequest {
        model: model("wine-mlp"),
        explainer: "misbehaving".into(),
        inputs: vec![named("features", input)],
        targets: indices(&[0, 2]),
        output: String::new(),
        parameters: HashMap::from([("mode".to_string(), text(mode))]),
        background: vec![],
        background_id: String::new(),
        plot: None,
        explained_inputs: Vec::new(),
        evaluate: Vec::new(),
        evaluation_seed: 0,
    }
}

#[tokio::test]
async fn a_panicking_plugin_fails_the_request_not_the_daemon() {
    let server = TestServer::start(Default::default(), &[]).await;
    let mut client = server.explainer().await;
    let samples = read_npy("models/wine-mlp/1/samples.npy");

    let status = client.explain(echo_request(&samples, "panic")).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal);
    assert!(status.message().contains("panicked in explain"), "{}", status.message());
    assert!(status.message().contains("on purpose"), "the panic message reaches the client: {}", status.message());

    // The poisoned instance was replaced: the same plugin answers the next request correctly.
    let response = client.explain(echo_request(&samples, "echo")).await.unwrap().into_inner();
    let values = response.attributions[0].values.as_ref().unwrap();
    assert_eq!(values.shape, vec![6, 2, 13]);
    let got = floats(values);
    for n in 0..6 {
        for t in 0..2 {
            assert_eq!(&got[(n * 2 + t) * 13..(n * 2 + t + 1) * 13], samples.slice(ndarray::s![n, ..]).as_slice().unwrap());
        }
    }
}

#[tokio::test]
async fn plugin_errors_keep_their_code_and_message() {
    let server = TestServer::start(Default::default(), &[]).await;
    let mut client = server.explainer().await;
    let samples = read_npy("models/wine-mlp/1/samples.npy");
    let status = client.explain(echo_request(&samples, "error")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(status.message(), "parameters.mode: asked to fail");
}

#[tokio::test]
async fn the_sdk_never_hands_out_one_result_slice_twice() {
    let server = TestServer::start(Default::default(), &[]).await;
    let mut client = server.explainer().await;
    let samples = read_npy("models/wine-mlp/1/samples.npy");
    let status = client.explain(echo_request(&samples, "alias")).await.unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert!(status.message().contains("attributions[0] twice"), "{}", status.message());
}

#[tokio::test]
async fn a_passed_deadline_stops_the_plugin_through_the_cancellation_check() {
    let server = TestServer::start(Default::default(), &[]).await;
    let mut client = server.explainer().await;
    let samples = read_npy("models/wine-mlp/1/samples.npy");
    let mut request = tonic::Request::new(echo_request(&samples, "wait"));
    request.set_timeout(std::time::Duration::from_millis(300));
    let status = client.explain(request).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");

    // The waiting plugin (it would wait 60 s) must have been told to stop and have returned.
    let began = std::time::Instant::now();
    loop {
        let response = client.explain(echo_request(&samples, "echo")).await.unwrap().into_inner();
        if response.info["waiting"] == "0" {
            break;
        }
        assert!(began.elapsed() < std::time::Duration::from_secs(10), "the plugin is still working after its deadline");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_plugin_written_in_c_explains_over_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let library = compile_c_plugin("tests/c/leave_one_out.c", &[], dir.path(), "explaind_plugin_leave_one_out_c");
    let server = TestServer::start(Default::default(), &[library]).await;
    let mut explainer = server.explainer().await;
    let mut models = server.models().await;

    let info = explainer.list_explainers(proto::ListExplainersRequest {}).await.unwrap().into_inner();
    let c_plugin = info.explainers.iter().find(|e| e.name == "leave-one-out-c").expect("C plugin listed");
    assert_eq!(c_plugin.abi_version, format!("1.{}", explaind_abi::ABI_MINOR), "built against the current header");

    let samples = read_npy("models/wine-mlp/1/samples.npy");
    let x = samples.slice(ndarray::s![0..2, ..]).to_owned().into_dyn();
    let response = explainer
        .explain(proto::ExplainRequest {
            model: model("wine-mlp"),
            explainer: "leave-one-out-c".into(),
            inputs: vec![named("features", &x)],
            targets: indices(&[1]),
            output: "probabilities".into(),
            parameters: HashMap::new(),
            background: vec![],
            background_id: String::new(),
            plot: None,
            explained_inputs: Vec::new(),
            evaluate: Vec::new(),
            evaluation_seed: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let got = floats(response.attributions[0].values.as_ref().unwrap());

    // Brute force through Predict: every feature set to the default baseline 0, one at a time.
    for n in 0..2 {
        let mut rows = ndarray::Array2::<f32>::zeros((14, 13));
        for r in 0..14 {
            rows.row_mut(r).assign(&x.slice(ndarray::s![n, ..]));
            if r > 0 {
                rows[[r, r - 1]] = 0.0;
            }
        }
        let predicted = models
            .predict(proto::PredictRequest { model: model("wine-mlp"), inputs: vec![named("features", &rows.into_dyn())] })
            .await
            .unwrap()
            .into_inner();
        let probabilities = floats(predicted.outputs[1].tensor.as_ref().unwrap());
        let want: Vec<f32> = (1..14).map(|r| probabilities[1] - probabilities[r * 3 + 1]).collect();
        assert_close(&got[n * 13..(n + 1) * 13], &want, 1e-6, 0.0);
    }
}

#[tokio::test]
async fn a_c_plugin_reads_the_models_structure_through_abi_1_4() {
    let dir = tempfile::tempdir().unwrap();
    let library = compile_c_plugin("tests/c/graph_census.c", &[], dir.path(), "explaind_plugin_graph_census_c");
    let server = TestServer::start(Default::default(), &[library]).await;
    let samples = read_npy("models/wine-mlp/1/samples.npy");
    let x = samples.slice(ndarray::s![0..1, ..]).to_owned().into_dyn();
    let request = proto::ExplainRequest {
        model: model("wine-mlp"),
        explainer: "graph-census-c".into(),
        inputs: vec![named("features", &x)],
        ..Default::default()
    };
    let response = server.explainer().await.explain(request).await.unwrap().into_inner();

    // The same facts, read from the ONNX file here.
    let file = explaind_onnx::ModelProto::load(repo_root().join("models/wine-mlp/1/model.onnx")).unwrap();
    let graph = file.graph.as_ref().unwrap();
    let ops: Vec<&str> = graph.node.iter().map(|n| n.op_type()).collect();
    assert_eq!(response.info["ops"], ops.join(","));
    assert_eq!(response.info["nodes"], graph.node.len().to_string());
    assert_eq!(response.info["initializers"], graph.initializer.len().to_string());
    let weights: f64 = graph.initializer.iter().filter_map(|t| t.to_f32().ok()).flat_map(|(_, v)| v).map(|v| v as f64).sum();
    let reported: f64 = response.info["weights"].parse().unwrap();
    assert!((reported - weights).abs() <= 1e-6 * weights.abs().max(1.0), "{reported} vs {weights}");
    assert_eq!(response.info["opset"], file.default_opset().unwrap().to_string());
}
