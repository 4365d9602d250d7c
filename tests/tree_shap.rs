//! The tree-shap plugin through gRPC, on tree ensembles as users export them
//! (`tests/data/trees/<case>`, made by `scripts/fixtures/make_tree_fixtures.py`: scikit-learn, XGBoost
//! and LightGBM models through skl2onnx and onnxmltools), against shap's TreeExplainer on the
//! original library models: interventional values over the background, path-dependent values
//! with covers counted from the training rows, interaction values; NaN inputs as missing
//! values; efficiency on the margin; refusals that name what is wrong.
mod common;

use common::fixtures::{case_names, case_repository};
use common::*;
use explaind::proto;
use explaind::proto::param_value::Kind;
use tonic::Code;

const DATA: &str = "tests/data/trees";

struct Case {
    name: String,
    meta: serde_json::Value,
}

fn cases() -> Vec<Case> {
    let names = case_names(DATA);
    assert!(names.len() >= 9, "{names:?}");
    names
        .into_iter()
        .map(|name| {
            let meta = std::fs::read_to_string(repo_root().join(DATA).join(&name).join("meta.json")).unwrap();
            Case { meta: serde_json::from_str(&meta).unwrap(), name }
        })
        .collect()
}

fn repository(cases: &[Case]) -> tempfile::TempDir {
    case_repository(DATA, &cases.iter().map(|c| c.name.clone()).collect::<Vec<_>>())
}

fn array(c: &Case, file: &str) -> ndarray::ArrayD<f32> {
    read_npy(&format!("{DATA}/{}/{file}", c.name))
}

fn request(c: &Case, background: &str, parameters: &[(&str, Kind)]) -> proto::ExplainRequest {
    let input = c.meta["onnx_input"].as_str().unwrap();
    proto::ExplainRequest {
        model: model(&c.name),
        explainer: "tree-shap".into(),
        inputs: vec![named(input, &array(c, "x.npy"))],
        targets: Some(proto::Targets { selection: Some(proto::targets::Selection::All(proto::AllOutputs {})) }),
        output: c.meta["onnx_output_file"].as_str().unwrap().into(),
        parameters: parameters.iter().map(|(k, v)| (k.to_string(), proto::ParamValue { kind: Some(v.clone()) })).collect(),
        background: vec![named(input, &array(c, background))],
        background_id: String::new(),
        plot: None,
        explained_inputs: Vec::new(),
        evaluate: Vec::new(),
        evaluation_seed: 0,
    }
}

fn floats_of(response: &proto::ExplainResponse) -> Vec<f32> {
    floats(response.attributions[0].values.as_ref().unwrap())
}

fn extra_of(response: &proto::ExplainResponse, name: &str) -> Vec<f32> {
    floats(response.extras.iter().find(|e| e.name == name).unwrap().tensor.as_ref().unwrap())
}

/// shap's values [N, F, K] (K ensemble targets) as explaind lays out the request's targets,
/// [N, T, F]: a binary classifier's one margin is class 1's, negated for class 0.
fn expected_layout(c: &Case, values: &ndarray::ArrayD<f32>, targets: usize) -> Vec<f32> {
    let (n, f, k) = (values.shape()[0], values.shape()[1], values.shape()[2]);
    let mut out = Vec::with_capacity(n * targets * f);
    for row in 0..n {
        for t in 0..targets {
            let (target, sign) = if k == 1 && targets == 2 { (0, if t == 1 { 1.0 } else { -1.0 }) } else { (t, 1.0) };
            out.extend((0..f).map(|feature| sign * values[[row, feature, target]]));
        }
    }
    assert_eq!(c.meta["case"].as_str().unwrap(), c.name);
    out
}

/// Σφ = margin − base value for every (input, target), to 1e-5 of the margin's scale.
fn assert_efficient(c: &Case, response: &proto::ExplainResponse) {
    let values = floats_of(response);
    let base = floats(response.base_values.as_ref().unwrap());
    let margins = extra_of(response, "margin");
    let features = values.len() / margins.len();
    for (pair, (&m, &b)) in margins.iter().zip(&base).enumerate() {
        let sum: f64 = values[pair * features..(pair + 1) * features].iter().map(|&v| v as f64).sum();
        let gap = m as f64 - b as f64;
        assert!(
            (sum - gap).abs() <= 1e-5 * (m as f64).abs().max(1.0),
            "{}: pair {pair}: Σφ {sum} vs margin − base {gap}",
            c.name
        );
    }
}

#[tokio::test]
async fn interventional_tree_shap_matches_shap_on_every_exported_ensemble() {
    let cases = cases();
    let repository = repository(&cases);
    let server = TestServer::start_on(repository.path(), 64 << 20).await;
    let mut client = server.explainer().await;
    // The metadata says what runs: tree SHAP, and no gradient method (no graph to compile).
    let models = server.models().await.list_models(proto::ListModelsRequest {}).await.unwrap().into_inner().models;
    for m in &models {
        let x = m.explainability.as_ref().unwrap();
        assert!(x.explainers.iter().any(|e| e == "tree-shap") && x.explainers.iter().any(|e| e == "kernel-shap"), "{x:?}");
        assert!(!x.gradients && !x.explainers.iter().any(|e| e == "saliency"), "{}: {x:?}", m.name);
    }
    for c in &cases {
        let response = client.explain(request(c, "background.npy", &[])).await;
        let response = response.unwrap_or_else(|s| panic!("{}: {s:?}", c.name)).into_inner();
        let targets = response.attributions[0].values.as_ref().unwrap().shape[1] as usize;
        let shap = array(c, "interventional_shap.npy");
        assert_close(&floats_of(&response), &expected_layout(c, &shap, targets), 1e-5, 1e-5);
        let expected = array(c, "interventional_expected.npy");
        let base = floats(response.base_values.as_ref().unwrap());
        for (pair, &b) in base.iter().enumerate() {
            let t = pair % targets;
            let want =
                if expected.len() == 1 && targets == 2 { if t == 1 { expected[0] } else { -expected[0] } } else { expected[t] };
            assert!((b - want).abs() <= 1e-5, "{}: base value {b} vs shap's {want}", c.name);
        }
        assert_efficient(c, &response);
        assert_eq!(response.info.get("method").map(String::as_str), Some("interventional"));
    }
}

#[tokio::test]
async fn path_dependent_values_and_interactions_match_shap_with_covers_from_the_training_rows() {
    let cases = cases();
    let repository = repository(&cases);
    let server = TestServer::start_on(repository.path(), 64 << 20).await;
    let mut client = server.explainer().await;
    let mut compared = 0;
    for c in cases.iter().filter(|c| c.meta["shap_covers_equal_train_counts"] == true) {
        let interactions = std::path::Path::new(&repo_root().join(DATA).join(&c.name).join("interactions.npy")).exists();
        let parameters = [("method", Kind::Text("path_dependent".into())), ("interactions", Kind::Flag(interactions))];
        let response = client.explain(request(c, "train.npy", &parameters)).await;
        let response = response.unwrap_or_else(|s| panic!("{}: {s:?}", c.name)).into_inner();
        let targets = response.attributions[0].values.as_ref().unwrap().shape[1] as usize;
        let shap = array(c, "path_dependent_shap.npy");
        assert_close(&floats_of(&response), &expected_layout(c, &shap, targets), 1e-5, 1e-5);
        assert_efficient(c, &response);
        // The exporters' hit rates are 1 everywhere: not counts, so auto took the background's.
        assert_eq!(response.info.get("covers").map(String::as_str), Some("the background's routing counts"), "{}", c.name);
        if interactions {
            let want = array(c, "interactions.npy"); // [N, F, F, K]
            let got = extra_of(&response, "interactions"); // [N, T, F, F]
            let (n, f, k) = (want.shape()[0], want.shape()[1], want.shape()[3]);
            for row in 0..n {
                for t in 0..targets {
                    let (target, sign) = if k == 1 && targets == 2 { (0, if t == 1 { 1.0 } else { -1.0 }) } else { (t, 1.0) };
                    for a in 0..f {
                        for b in 0..f {
                            let g = got[((row * targets + t) * f + a) * f + b];
                            let w = sign * want[[row, a, b, target]];
                            assert!((g - w).abs() <= 1e-5, "{}: interaction ({a}, {b}) {g} vs shap's {w}", c.name);
                        }
                    }
                }
            }
        }
        compared += 1;
    }
    assert!(compared >= 5, "the cases whose training counts are shap's covers");
}

#[tokio::test]
async fn missing_values_follow_the_trees_and_only_tree_models_accept_nan() {
    let cases: Vec<Case> = cases().into_iter().filter(|c| c.name == "xgb_classifier").collect();
    let repository = repository(&cases);
    let server = TestServer::start_on(repository.path(), 64 << 20).await;
    let c = &cases[0];
    let x = array(c, "x.npy");
    assert!(x.iter().any(|v| v.is_nan()), "the fixture has missing values");
    // Predict with NaN: the model's own answer, as the library computed it.
    let predicted =
        server.models().await.predict(proto::PredictRequest { model: model(&c.name), inputs: vec![named("input", &x)] }).await;
    let predicted = predicted.unwrap().into_inner();
    let probabilities = predicted.outputs.iter().find(|o| o.name == "probabilities").expect("the float output is served");
    assert_close(&floats(probabilities.tensor.as_ref().unwrap()), array(c, "onnx_output.npy").as_slice().unwrap(), 1e-6, 0.0);
    assert!(predicted.outputs.iter().all(|o| o.name != "label"), "the int64 label output is not served");

    // An infinity is still refused, naming the element.
    let mut bad = x.clone();
    bad[[0, 1]] = f32::INFINITY;
    let mut explain = request(c, "background.npy", &[]);
    explain.inputs = vec![named("input", &bad)];
    let refused = server.explainer().await.explain(explain).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("element 1 is inf") && refused.message().contains("NaN (a missing value)"),
        "{}",
        refused.message()
    );

    // A network's inputs must stay finite.
    let mnist = TestServer::start(Default::default(), &[]).await;
    let mut rows = read_npy("models/wine-mlp/1/samples.npy");
    rows[[0, 0]] = f32::NAN;
    let refused = mnist
        .models()
        .await
        .predict(proto::PredictRequest { model: model("wine-mlp"), inputs: vec![named("", &rows)] })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("inputs must be finite"), "{}", refused.message());
}

#[tokio::test]
async fn refusals_name_what_is_wrong() {
    let cases: Vec<Case> = cases().into_iter().filter(|c| c.name == "sklearn_gbr").collect();
    let repository = repository(&cases);
    let server = TestServer::start_on(repository.path(), 64 << 20).await;
    let mut client = server.explainer().await;
    let c = &cases[0];
    let mut no_background = request(c, "background.npy", &[]);
    no_background.background.clear();
    let refused = client.explain(no_background).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("background"), "{}", refused.message());

    // The exporters' placeholder hit rates are no covers.
    let parameters = [("method", Kind::Text("path_dependent".into())), ("covers", Kind::Text("model".into()))];
    let refused = client.explain(request(c, "background.npy", &parameters)).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().starts_with("covers:") || refused.message().contains("covers:"), "{}", refused.message());

    let refused = client.explain(request(c, "background.npy", &[("method", Kind::Text("exact".into()))])).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("parameters.method"), "{}", refused.message());

    // A network is no tree ensemble.
    let server = TestServer::start(Default::default(), &[]).await;
    let rows = read_npy("models/wine-mlp/1/samples.npy");
    let request = proto::ExplainRequest {
        model: model("wine-mlp"),
        explainer: "tree-shap".into(),
        inputs: vec![named("", &rows.slice_axis(ndarray::Axis(0), (0..1).into()).to_owned())],
        background: vec![named("", &rows)],
        ..Default::default()
    };
    let refused = server.explainer().await.explain(request).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unimplemented);
    assert!(refused.message().contains("tree ensemble"), "{}", refused.message());
}

/// Exact Shapley values of v(S) = mean_b f(x_S, b_rest), every subset enumerated, with f read
/// through Predict: the definition, independent of any tree algorithm. `f` is a regressor's
/// output (its margin: post_transform NONE).
async fn brute_force_from_predict(server: &TestServer, c: &Case, row: &[f32], background: &ndarray::ArrayD<f32>) -> Vec<f64> {
    let (k, f) = (background.shape()[0], background.shape()[1]);
    let subsets = 1usize << f;
    let mut hybrids = Vec::with_capacity(subsets * k * f);
    for mask in 0..subsets {
        for b in background.outer_iter() {
            hybrids.extend((0..f).map(|i| if mask >> i & 1 == 1 { row[i] } else { b[i] }));
        }
    }
    let input = c.meta["onnx_input"].as_str().unwrap();
    let mut y = Vec::with_capacity(subsets * k);
    // Within the server's rows per request.
    for chunk in hybrids.chunks(2048 * f) {
        let rows = ndarray::ArrayD::from_shape_vec(ndarray::IxDyn(&[chunk.len() / f, f]), chunk.to_vec()).unwrap();
        let request = proto::PredictRequest { model: model(&c.name), inputs: vec![named(input, &rows)] };
        let response = server.models().await.predict(request).await.unwrap().into_inner();
        let output = response.outputs.iter().find(|o| o.name == c.meta["onnx_output_file"]).unwrap();
        y.extend(floats(output.tensor.as_ref().unwrap()));
    }
    let v: Vec<f64> = (0..subsets).map(|s| y[s * k..(s + 1) * k].iter().map(|&v| v as f64).sum::<f64>() / k as f64).collect();
    let factorial = |n: usize| (1..=n).map(|i| i as f64).product::<f64>();
    (0..f)
        .map(|i| {
            (0..subsets)
                .filter(|s| s >> i & 1 == 0)
                .map(|s| {
                    let size = s.count_ones() as usize;
                    factorial(size) * factorial(f - size - 1) / factorial(f) * (v[s | 1 << i] - v[s])
                })
                .sum()
        })
        .collect()
}

#[tokio::test]
async fn tree_shap_is_the_brute_force_shapley_value_through_predict_and_kernel_shap_at_full_budget_agrees() {
    let cases: Vec<Case> =
        cases().into_iter().filter(|c| ["sklearn_gbr", "lgbm_regressor", "sklearn_rfr"].contains(&c.name.as_str())).collect();
    assert_eq!(cases.len(), 3);
    let repository = repository(&cases);
    let server = TestServer::start_on(repository.path(), 64 << 20).await;
    let mut client = server.explainer().await;
    for c in &cases {
        let x = array(c, "x.npy");
        let background = array(c, "background.npy");
        let tree = client.explain(request(c, "background.npy", &[])).await.unwrap().into_inner();
        let tree_values = floats_of(&tree);
        let f = x.shape()[1];
        for (row, x_row) in x.outer_iter().take(2).enumerate() {
            let want = brute_force_from_predict(&server, c, x_row.as_slice().unwrap(), &background).await;
            for (i, w) in want.iter().enumerate() {
                let got = tree_values[row * f + i] as f64;
                assert!((got - w).abs() <= 1e-5 * w.abs().max(1.0), "{} row {row} feature {i}: {got} vs brute force {w}", c.name);
            }
        }
        // Kernel SHAP with a budget that enumerates every coalition solves the same game exactly.
        let mut kernel = request(c, "background.npy", &[("nsamples", Kind::Integer(1 << 12))]);
        kernel.explainer = "kernel-shap".into();
        let kernel = client.explain(kernel).await.unwrap().into_inner();
        assert_close(&floats_of(&kernel), &tree_values, 1e-4, 1e-4);
    }
}

#[tokio::test]
async fn the_tabular_figure_draws_tree_shap_values() {
    // A LOGISTIC classifier: the waterfall runs to the margin (the extra `margin`), not to the
    // probability output.
    let cases: Vec<Case> = cases().into_iter().filter(|c| c.name == "sklearn_gbc").collect();
    let repository = repository(&cases);
    let server = TestServer::start_on(repository.path(), 64 << 20).await;
    let mut r = request(&cases[0], "background.npy", &[]);
    r.plot = Some(proto::PlotOptions { png: true, ..Default::default() });
    let png = server.explainer().await.explain(r).await.unwrap().into_inner().plot_png;
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 1000, "{} bytes", png.len());
}
