//! Occlusion through gRPC equals the committed brute-force reference
//! (`scripts/fixtures/reference_occlusion.py`, captum's semantics, one ONNX Runtime call per window).
mod common;

use common::*;
use explaind::proto;
use std::collections::HashMap;

fn reference(name: &str) -> (ndarray::ArrayD<f32>, serde_json::Value) {
    let array = read_npy(&format!("tests/data/{name}.npy"));
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join(format!("tests/data/{name}.json"))).unwrap()).unwrap();
    (array, meta)
}

fn request(
    model_name: &str,
    output: &str,
    input: &ndarray::ArrayD<f32>,
    targets: &[i64],
    meta: &serde_json::Value,
) -> proto::ExplainRequest {
    let ints = |key: &str| -> Vec<i64> { meta[key].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect() };
    let mut parameters = HashMap::new();
    parameters.insert("window".to_string(), integers(&ints("sliding_window_shape")));
    parameters.insert("strides".to_string(), integers(&ints("strides")));
    parameters.insert(
        "baseline".to_string(),
        proto::ParamValue { kind: Some(proto::param_value::Kind::Number(meta["baseline"].as_f64().unwrap())) },
    );
    proto::ExplainRequest {
        model: model(model_name),
        explainer: "occlusion".into(),
        inputs: vec![named("", input)],
        targets: indices(targets),
        output: output.into(),
        parameters,
        background: vec![],
        background_id: String::new(),
        plot: None,
        explained_inputs: Vec::new(),
        evaluate: Vec::new(),
        evaluation_seed: 0,
    }
}

#[tokio::test]
async fn occlusion_matches_brute_force_reference_on_digits_cnn() {
    let server = TestServer::start(Default::default(), &[]).await;
    let mut client = server.explainer().await;
    let (expected, meta) = reference("occlusion_digits_reference");
    let samples = read_npy("models/digits-cnn/1/samples.npy");
    let targets: Vec<Vec<i64>> = serde_json::from_value(meta["targets"].clone()).unwrap();
    assert_eq!(meta["model_sha256"], server.state.repository.get("digits-cnn", "").unwrap().sha256);

    for (n, t) in targets.iter().enumerate() {
        let input = samples.slice(ndarray::s![n..n + 1, .., .., ..]).to_owned().into_dyn();
        let response = client.explain(request("digits-cnn", "logits", &input, t, &meta)).await.unwrap().into_inner();
        let values = response.attributions[0].values.as_ref().unwrap();
        assert_eq!(values.shape, vec![1, t.len() as i64, 1, 8, 8]);
        assert_eq!(ints(response.target_indices.as_ref().unwrap()), *t);
        let want: Vec<f32> = expected.slice(ndarray::s![n, .., .., .., ..]).iter().copied().collect();
        assert_close(&floats(values), &want, 1e-5, 1e-5);
        // 16 windows in chunks of at most max_batch_rows rows, plus the pass on the input itself.
        let timing = response.timing.unwrap();
        assert_eq!(timing.model_rows, 1 + 16);
        assert_eq!(timing.model_calls, 2, "all 16 windows of one input go in one forward call");
    }
}

#[tokio::test]
async fn occlusion_matches_reference_on_wine_probabilities_in_one_batch() {
    let server = TestServer::start(Default::default(), &[]).await;
    let mut client = server.explainer().await;
    let (expected, meta) = reference("occlusion_wine_reference");
    let samples = read_npy("models/wine-mlp/1/samples.npy");
    let input = samples.slice(ndarray::s![0..3, ..]).to_owned().into_dyn();
    // Predicted class per input: the default target selection.
    let mut req = request("wine-mlp", "probabilities", &input, &[], &meta);
    req.targets = None;
    let response = client.explain(req).await.unwrap().into_inner();
    let want_targets: Vec<Vec<i64>> = serde_json::from_value(meta["targets"].clone()).unwrap();
    assert_eq!(ints(response.target_indices.as_ref().unwrap()), want_targets.concat());
    let values = response.attributions[0].values.as_ref().unwrap();
    assert_eq!(values.shape, vec![3, 1, 13]);
    assert_close(&floats(values), expected.as_slice().unwrap(), 1e-6, 1e-5);
    // The occluded rows of all three inputs share one model call (39 rows < max_batch_rows).
    let timing = response.timing.unwrap();
    assert_eq!((timing.model_calls, timing.model_rows), (2, 3 + 3 * 13));
}

#[tokio::test]
async fn occlusion_chunks_rows_under_the_batch_bound() {
    let (expected, meta) = reference("occlusion_wine_reference");
    let samples = read_npy("models/wine-mlp/1/samples.npy");
    let input = samples.slice(ndarray::s![0..3, ..]).to_owned().into_dyn();
    let mut req = request("wine-mlp", "probabilities", &input, &[], &meta);
    req.targets = None;
    // Models that send at most 5 rows per call: the plugin is told the same bound.
    let small_batches = TestServer::start_with_batch_rows(5).await;
    let mut client = small_batches.explainer().await;
    let response = client.explain(req).await.unwrap().into_inner();
    assert_close(&floats(response.attributions[0].values.as_ref().unwrap()), expected.as_slice().unwrap(), 1e-6, 1e-5);
    let timing = response.timing.unwrap();
    // 39 occluded rows in calls of at most 5 rows (8 calls), plus the pass on the 3 inputs.
    assert_eq!((timing.model_calls, timing.model_rows), (1 + 8, 3 + 39));
}
