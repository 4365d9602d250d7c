//! Deep SHAP and DeepLIFT through gRPC: the plugins (ABI 1.1 host functions) against shap's and
//! captum's reference values, completeness everywhere, the background-activation cache, the
//! background registry, an unsupported operator, and a plugin built against ABI 1.0.
mod common;

use common::fixtures::*;
use common::*;
use explaind::proto;
use std::collections::HashMap;
use tonic::Code;

#[tokio::test]
async fn deep_shap_matches_shap_and_captum_and_is_complete_on_every_fixture() {
    let repository = fixture_repository();
    let server = TestServer::start_on(repository.path(), 256 << 20).await;
    let mut client = server.explainer().await;
    for name in ["mlp_tanh_sigmoid", "cnn_bn_pools", "residual", "softmax_mlp", "overlapping_maxpool", "digits_cnn"] {
        let c = case(name);
        let response = client.explain(explain_request(&c, "deep-shap", all_targets())).await.unwrap().into_inner();
        let values = floats(response.attributions[0].values.as_ref().unwrap());
        let (n, t) = (c.meta["N"].as_u64().unwrap() as usize, c.meta["T"].as_u64().unwrap() as usize);
        assert_eq!(response.attributions[0].values.as_ref().unwrap().shape[..2], [n as i64, t as i64]);

        // Completeness: Σφ = f(x) − E f(background), to 1e-4 of the output scale.
        let outputs = floats(response.outputs.iter().find(|o| o.name == c.meta["output_name"]).unwrap().tensor.as_ref().unwrap());
        let base = floats(response.base_values.as_ref().unwrap());
        let residual = floats(extra(&response, "completeness_residual"));
        let len = values.len() / (n * t);
        for i in 0..n {
            for j in 0..t {
                let sum: f64 = values[(i * t + j) * len..(i * t + j + 1) * len].iter().map(|&v| v as f64).sum();
                let gap = outputs[i * t + j] as f64 - base[i * t + j] as f64;
                let scale = (outputs[i * t + j] as f64).abs().max(1.0);
                assert!((sum - gap).abs() <= 1e-4 * scale, "{name}: input {i} target {j}: Σφ {sum} vs {gap}");
                assert!((residual[i * t + j] as f64 - (sum - gap)).abs() <= 1e-4 * scale, "{name}: reported residual");
            }
        }
        // The base values are the mean background output (computed by the reference script).
        let expected = read_npy(&format!("tests/data/deepshap/{name}/expected_value.npy"));
        for i in 0..n {
            assert_close(&base[i * t..(i + 1) * t], expected.as_slice().unwrap(), 1e-5, 1e-5);
        }
        // Against the references where the rules are the same (see the fixture's meta.json).
        if c.meta["compare_with_shap"] == true {
            let shap = read_npy(&format!("tests/data/deepshap/{name}/shap.npy"));
            assert_close(&values, shap.as_slice().unwrap(), 1e-4, 0.0);
        }
        if c.meta["compare_with_captum"] == true {
            let captum = read_npy(&format!("tests/data/deepshap/{name}/captum.npy"));
            assert_close(&values, captum.as_slice().unwrap(), 1e-4, 0.0);
        }
    }
    // Where the references are not additive (overlapping max-pool), explaind still is: shown above;
    // the fixture records how far off the references are.
    let overlapping = case("overlapping_maxpool");
    assert!(overlapping.meta["shap_completeness_max_abs_err"].as_f64().unwrap() > 1e-2);
}

#[tokio::test]
async fn the_background_cache_skips_the_background_pass_and_evicts_under_its_budget() {
    let repository = fixture_repository();
    let c = case("digits_cnn");
    let roomy = TestServer::start_on(repository.path(), 256 << 20).await;
    let mut client = roomy.explainer().await;
    let first = client.explain(explain_request(&c, "deep-shap", indices(&[3]))).await.unwrap().into_inner();
    assert_eq!(roomy.state.host.engine.cache_stats().misses, 1);
    let second = client.explain(explain_request(&c, "deep-shap", indices(&[3]))).await.unwrap().into_inner();
    let stats = roomy.state.host.engine.cache_stats();
    assert_eq!((stats.misses, stats.hits), (1, 1), "the second request reuses the background's activations");
    assert!(stats.bytes > 0);
    assert_eq!(first.attributions, second.attributions);
    // The background pass is K rows of the reference graph plus K of the model: the second
    // request ran neither, only the pass on the input and the attribution graph.
    let (t1, t2) = (first.timing.unwrap(), second.timing.unwrap());
    assert_eq!(t1.model_rows - t2.model_rows, 2 * 20);

    // A budget smaller than one entry: every request computes and evicts, results unchanged.
    let tight = TestServer::start_on(repository.path(), 1).await;
    let mut client = tight.explainer().await;
    for _ in 0..2 {
        let again = client.explain(explain_request(&c, "deep-shap", indices(&[3]))).await.unwrap().into_inner();
        assert_eq!(again.attributions, first.attributions);
    }
    let stats = tight.state.host.engine.cache_stats();
    assert_eq!((stats.misses, stats.evictions, stats.bytes), (2, 2, 0));
}

#[tokio::test]
async fn a_background_larger_than_the_chunk_bound_is_processed_in_chunks_with_the_same_result() {
    let repository = fixture_repository();
    let c = case("digits_cnn");
    let whole = TestServer::start_on(repository.path(), 256 << 20).await;
    let reference = whole.explainer().await.explain(explain_request(&c, "deep-shap", all_targets())).await.unwrap().into_inner();
    assert_eq!(whole.state.host.engine.cache_stats().misses, 1, "the 20 rows fit one chunk");

    // 200 KiB of working memory: cached chunks of 5 rows, runs of 2 (the last of each chunk
    // overlapping the one before it, so all have one shape).
    let overlapping = TestServer::start_on_with_chunks(repository.path(), 256 << 20, 200 << 10).await;
    let response =
        overlapping.explainer().await.explain(explain_request(&c, "deep-shap", all_targets())).await.unwrap().into_inner();
    assert_eq!(overlapping.state.host.engine.cache_stats().misses, 4, "20 rows in chunks of 5");
    assert_close(
        &floats(response.attributions[0].values.as_ref().unwrap()),
        &floats(reference.attributions[0].values.as_ref().unwrap()),
        1e-5,
        1e-4,
    );

    // 64 KiB of working memory: a few background rows per cached chunk, one per backward run.
    let chunked = TestServer::start_on_with_chunks(repository.path(), 256 << 20, 64 << 10).await;
    let mut client = chunked.explainer().await;
    let response = client.explain(explain_request(&c, "deep-shap", all_targets())).await.unwrap().into_inner();
    let chunks = chunked.state.host.engine.cache_stats().misses;
    assert!(chunks > 3, "the background should span several cached chunks, got {chunks}");
    assert_close(
        &floats(response.attributions[0].values.as_ref().unwrap()),
        &floats(reference.attributions[0].values.as_ref().unwrap()),
        1e-5,
        1e-4,
    );
    assert_close(&floats(response.base_values.as_ref().unwrap()), &floats(reference.base_values.as_ref().unwrap()), 1e-5, 1e-5);
    // Repeated: every chunk comes from the cache.
    client.explain(explain_request(&c, "deep-shap", all_targets())).await.unwrap();
    let stats = chunked.state.host.engine.cache_stats();
    assert_eq!((stats.misses, stats.hits), (chunks, chunks));
}

#[tokio::test]
async fn concurrent_cold_requests_compute_the_background_once() {
    let repository = fixture_repository();
    let server = TestServer::start_on(repository.path(), 256 << 20).await;
    let c = case("cnn_bn_pools");
    let mut calls = Vec::new();
    for _ in 0..6 {
        let mut client = server.explainer().await;
        let request = explain_request(&c, "deep-shap", None);
        calls.push(tokio::spawn(async move { client.explain(request).await.unwrap().into_inner() }));
    }
    let mut results = Vec::new();
    for call in calls {
        results.push(call.await.unwrap());
    }
    assert!(results.windows(2).all(|w| w[0].attributions == w[1].attributions));
    let stats = server.state.host.engine.cache_stats();
    assert_eq!((stats.misses, stats.hits), (1, 5));
}

#[tokio::test]
async fn registered_backgrounds_are_named_by_their_digest() {
    let server = TestServer::start(Default::default(), &[]).await;
    let mut client = server.explainer().await;
    let background = read_npy("models/wine-mlp/1/background.npy");
    let register = |rows: &ndarray::ArrayD<f32>, model_name: &str| proto::RegisterBackgroundRequest {
        model: model(model_name),
        rows: vec![named("", rows)],
    };
    let registered = client.register_background(register(&background, "wine-mlp")).await.unwrap().into_inner();
    assert_eq!(registered.rows, 50);
    assert_eq!(registered.background_id, explaind_runtime::digest_arrays(std::slice::from_ref(&background)));

    let x = read_npy("models/wine-mlp/1/samples.npy");
    let by_id = proto::ExplainRequest {
        model: model("wine-mlp"),
        explainer: "deep-shap".into(),
        inputs: vec![named("", &x)],
        targets: None,
        output: "probabilities".into(),
        parameters: HashMap::new(),
        background: vec![],
        background_id: registered.background_id.clone(),
        plot: None,
        explained_inputs: Vec::new(),
        evaluate: Vec::new(),
        evaluation_seed: 0,
    };
    let response = client.explain(by_id.clone()).await.unwrap().into_inner();
    // The model's default background is the same rows: the same answer, from the same cache entry.
    let mut by_default = by_id.clone();
    by_default.background_id.clear();
    let default = client.explain(by_default).await.unwrap().into_inner();
    assert_eq!(response.attributions, default.attributions);
    assert_eq!(server.state.host.engine.cache_stats().misses, 1);

    let mut unknown = by_id.clone();
    unknown.background_id = "0".repeat(64);
    let status = client.explain(unknown).await.unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert!(status.message().starts_with("background_id: no background"), "{}", status.message());

    let mut both = by_id.clone();
    both.background = vec![named("", &background)];
    assert_eq!(client.explain(both).await.unwrap_err().code(), Code::InvalidArgument);

    let digits_background = read_npy("models/digits-cnn/1/background.npy");
    let digits_id = client.register_background(register(&digits_background, "digits-cnn")).await.unwrap().into_inner();
    let mut wrong_model = by_id.clone();
    wrong_model.background_id = digits_id.background_id;
    let status = client.explain(wrong_model).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("registered for model digits-cnn"), "{}", status.message());

    let status = client.register_background(register(&background, "digits-cnn")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("rows[0].tensor.shape"), "{}", status.message());
}

#[tokio::test]
async fn deeplift_against_a_baseline_is_complete() {
    let server = TestServer::start(Default::default(), &[]).await;
    let mut client = server.explainer().await;
    let x = read_npy("models/digits-cnn/1/samples.npy");
    let request = proto::ExplainRequest {
        model: model("digits-cnn"),
        explainer: "deeplift".into(),
        inputs: vec![named("", &x)],
        targets: Some(proto::Targets { selection: Some(proto::targets::Selection::TopK(3)) }),
        output: String::new(),
        parameters: HashMap::from([(
            "baseline".to_string(),
            proto::ParamValue { kind: Some(proto::param_value::Kind::Number(0.1)) },
        )]),
        background: vec![],
        background_id: String::new(),
        plot: None,
        explained_inputs: Vec::new(),
        evaluate: Vec::new(),
        evaluation_seed: 0,
    };
    let response = client.explain(request).await.unwrap().into_inner();
    let residual = floats(extra(&response, "completeness_residual"));
    let outputs = floats(response.outputs[0].tensor.as_ref().unwrap());
    let scale = outputs.iter().fold(1f32, |m, v| m.max(v.abs()));
    assert!(residual.iter().all(|r| r.abs() <= 1e-4 * scale), "{residual:?}");
    // The base value is f(baseline): the same for every input.
    let base = floats(response.base_values.as_ref().unwrap());
    let targets = ints(response.target_indices.as_ref().unwrap());
    let mut models = server.models().await;
    let baseline = ndarray::ArrayD::from_elem(vec![1, 1, 8, 8], 0.1f32);
    let at_baseline = models
        .predict(proto::PredictRequest { model: model("digits-cnn"), inputs: vec![named("", &baseline)] })
        .await
        .unwrap()
        .into_inner();
    let f_b = floats(at_baseline.outputs[0].tensor.as_ref().unwrap());
    for (b, &t) in base.iter().zip(&targets) {
        assert!((b - f_b[t as usize]).abs() <= 1e-5);
    }
}

#[tokio::test]
async fn an_operator_without_a_rule_fails_clearly_and_the_daemon_keeps_serving() {
    use explaind_onnx::proto::tensor_proto::DataType;
    use explaind_onnx::{Dim, GraphBuilder, ModelProto};
    let repository = tempfile::tempdir().unwrap();
    // LpNormalization: an operator the compiler has no rule for (nor plans one).
    let version = repository.path().join("normed").join("1");
    std::fs::create_dir_all(&version).unwrap();
    let mut b = GraphBuilder::new("normed");
    b.add_input("x", DataType::Float, [Dim::from("batch"), Dim::from(3)]);
    let y = b.add_node("LpNormalization", &["x"], vec![]);
    b.add_output(&y, [Dim::from("batch"), Dim::from(3)]);
    ModelProto::new(b.finish(), &[("", 17)]).save(version.join("model.onnx")).unwrap();

    let server = TestServer::start_on(repository.path(), 1 << 20).await;
    // The metadata says so before anyone asks, with the operator named.
    let metadata = server.models().await.get_model(proto::GetModelRequest { model: model("normed") }).await.unwrap().into_inner();
    let explainability = metadata.explainability.unwrap();
    assert!(!explainability.gradients && !explainability.deeplift, "{explainability:?}");
    assert!(explainability.deeplift_refusal.contains("operator LpNormalization"), "{explainability:?}");
    assert!(explainability.explainers.contains(&"occlusion".to_string()), "{:?}", explainability.explainers);
    assert!(!explainability.explainers.contains(&"deep-shap".to_string()), "{:?}", explainability.explainers);
    let mut client = server.explainer().await;
    let x = ndarray::ArrayD::from_elem(vec![2, 3], 0.5f32);
    let request = proto::ExplainRequest {
        model: model("normed"),
        explainer: "deep-shap".into(),
        inputs: vec![named("", &x)],
        targets: None,
        output: String::new(),
        parameters: HashMap::new(),
        background: vec![named("", &ndarray::ArrayD::zeros(vec![4, 3]))],
        background_id: String::new(),
        plot: None,
        explained_inputs: Vec::new(),
        evaluate: Vec::new(),
        evaluation_seed: 0,
    };
    let status = client.explain(request.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    assert!(
        status.message().contains("operator LpNormalization (node \"LpNormalization\") has no gradient rule"),
        "{}",
        status.message()
    );
    // Occlusion needs no rule: the same model explains fine with it.
    let mut occlusion = request;
    occlusion.explainer = "occlusion".into();
    occlusion.parameters = HashMap::from([("window".to_string(), integers(&[1]))]);
    occlusion.background.clear();
    let response = client.explain(occlusion).await.unwrap().into_inner();
    assert_eq!(response.attributions[0].values.as_ref().unwrap().shape, vec![2, 1, 3]);
}

#[tokio::test]
async fn plugins_built_against_abi_1_0_to_1_4_still_load_explain_and_keep_to_the_budget() {
    // The frozen headers, and a C plugin compiled against each (`-I tests/c/abi-1.<minor>`).
    assert_eq!(explaind_abi::ABI_MINOR, 5, "the host is newer than every plugin here");
    for minor in [0u16, 1, 2] {
        let dir = tempfile::tempdir().unwrap();
        let include = repo_root().join(format!("tests/c/abi-1.{minor}"));
        let library =
            compile_c_plugin_against(&include, "tests/c/leave_one_out.c", &[], dir.path(), "explaind_plugin_leave_one_out_c");
        let header = std::fs::read_to_string(include.join("explaind_plugin.h")).unwrap();
        assert!(header.contains(&format!("#define EXPLAIND_ABI_MINOR {minor}")), "the fixture is the 1.{minor} header");

        // Older plugins have no estimate; the host still holds them to the row budget as they
        // run. Leave-one-out on 6 rows of 13 features runs 78 rows, over a budget of 20.
        let budget = explaind_host::RequestBudget { model_rows: 20, scratch_bytes: 0 };
        let limits = explaind::service::Limits { budget, ..Default::default() };
        let server = TestServer::start(limits, &[library]).await;
        let plugin = server.state.host.plugins.get("leave-one-out-c").unwrap();
        assert_eq!((plugin.abi_major, plugin.abi_minor), (1, minor));
        assert!(!plugin.has_estimate(), "ABI 1.{minor} has no estimate");
        let mut client = server.explainer().await;
        let x = read_npy("models/wine-mlp/1/samples.npy");
        let request = |rows: usize| proto::ExplainRequest {
            model: model("wine-mlp"),
            explainer: "leave-one-out-c".into(),
            inputs: vec![named("", &x.slice_axis(ndarray::Axis(0), (0..rows).into()).to_owned())],
            ..Default::default()
        };
        let refused = client.explain(request(6)).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");
        assert!(
            refused.message().contains("explainer budget") && refused.message().contains("limit of 20"),
            "{}",
            refused.message()
        );
        let response = client.explain(request(1)).await.unwrap().into_inner();
        assert_eq!(response.attributions[0].values.as_ref().unwrap().shape, vec![1, 1, 13]);
    }
    // Built against the frozen 1.3 and 1.4 headers: they have their estimate, and this host
    // runs them.
    for minor in [3u16, 4] {
        let dir = tempfile::tempdir().unwrap();
        let include = repo_root().join(format!("tests/c/abi-1.{minor}"));
        let header = std::fs::read_to_string(include.join("explaind_plugin.h")).unwrap();
        assert!(header.contains(&format!("#define EXPLAIND_ABI_MINOR {minor}")), "the fixture is the 1.{minor} header");
        let library =
            compile_c_plugin_against(&include, "tests/c/leave_one_out.c", &[], dir.path(), "explaind_plugin_leave_one_out_c");
        let server = TestServer::start(Default::default(), &[library]).await;
        let plugin = server.state.host.plugins.get("leave-one-out-c").unwrap();
        assert_eq!((plugin.abi_major, plugin.abi_minor), (1, minor));
        assert!(plugin.has_estimate(), "ABI 1.3 has estimate");
        let x = read_npy("models/wine-mlp/1/samples.npy");
        let request = proto::ExplainRequest {
            model: model("wine-mlp"),
            explainer: "leave-one-out-c".into(),
            inputs: vec![named("", &x.slice_axis(ndarray::Axis(0), (0..1).into()).to_owned())],
            ..Default::default()
        };
        let response = server.explainer().await.explain(request).await.unwrap().into_inner();
        assert_eq!(response.attributions[0].values.as_ref().unwrap().shape, vec![1, 1, 13]);
    }
}

#[tokio::test]
async fn the_bundled_models_compile_for_every_explainer_and_their_metadata_says_so() {
    let server = TestServer::start(Default::default(), &[]).await;
    // Every loaded explainer but those for tree ensembles, which these networks are not.
    let loaded: Vec<String> =
        server.state.host.plugins.list().iter().filter(|p| !p.needs_tree_ensemble()).map(|p| p.name.clone()).collect();
    assert!(server.state.host.plugins.list().iter().any(|p| p.name == "tree-shap"));
    let models = server.models().await.list_models(proto::ListModelsRequest {}).await.unwrap().into_inner().models;
    assert!(models.len() >= 3, "{models:?}");
    for m in models {
        let x = m.explainability.unwrap_or_else(|| panic!("{} has no explainability", m.name));
        assert!(x.gradients && x.deeplift, "{}: {x:?}", m.name);
        assert!(x.gradients_refusal.is_empty() && x.deeplift_refusal.is_empty(), "{}: {x:?}", m.name);
        let mut listed = x.explainers.clone();
        listed.sort();
        let mut expected = loaded.clone();
        expected.sort();
        assert_eq!(listed, expected, "{}: every loaded explainer can run", m.name);
    }
}
