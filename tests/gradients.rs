//! The gradient explainers (saliency, gradient-x-input, integrated-gradients, smoothgrad,
//! expected-gradients, grad-cam) through gRPC: captum's values on the Deep SHAP fixture models
//! (`tests/data/gradients`, made by `scripts/fixtures/make_gradient_fixtures.py`), integrated gradients'
//! convergence, seeded sampling methods converging to the exact expectation on a linear model,
//! and clear errors for bad layers and parameters.
mod common;

use common::fixtures::*;
use common::*;
use explaind::proto;
use explaind::proto::param_value::Kind;
use std::collections::HashMap;
use tonic::Code;

const CASES: [&str; 6] = ["mlp_tanh_sigmoid", "cnn_bn_pools", "residual", "softmax_mlp", "overlapping_maxpool", "digits_cnn"];
const IG_METHODS: [&str; 5] = ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"];

fn value(kind: Kind) -> proto::ParamValue {
    proto::ParamValue { kind: Some(kind) }
}

fn params(entries: &[(&str, Kind)]) -> HashMap<String, proto::ParamValue> {
    entries.iter().map(|(k, v)| (k.to_string(), value(v.clone()))).collect()
}

fn reference(name: &str, file: &str) -> Vec<f32> {
    read_npy(&format!("tests/data/gradients/{name}/{file}")).into_raw_vec_and_offset().0
}

fn attributions(response: &proto::ExplainResponse) -> Vec<f32> {
    floats(response.attributions[0].values.as_ref().unwrap())
}

#[tokio::test]
async fn gradient_methods_match_captum_on_every_fixture_model() {
    let repository = fixture_repository();
    let server = TestServer::start_on(repository.path(), 64 << 20).await;
    let mut client = server.explainer().await;
    for name in CASES {
        let c = case(name);
        let mut request = explain_request(&c, "saliency", all_targets());
        request.background.clear();
        let mut explain = async |explainer: &str, parameters: HashMap<String, proto::ParamValue>| {
            let mut request = request.clone();
            request.explainer = explainer.into();
            request.parameters = parameters;
            client.explain(request).await.unwrap_or_else(|s| panic!("{name} {explainer}: {s:?}")).into_inner()
        };

        let meta: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(repo_root().join(format!("tests/data/gradients/{name}/meta.json"))).unwrap(),
        )
        .unwrap();
        let saliency = explain("saliency", HashMap::new()).await;
        assert_close(&attributions(&saliency), &reference(name, "saliency.npy"), 1e-4, 1e-4);
        let signed = explain("saliency", params(&[("abs", Kind::Flag(false))])).await;
        assert_close(&attributions(&signed), &reference(name, "saliency_signed.npy"), 1e-4, 1e-4);
        let gxi = explain("gradient-x-input", HashMap::new()).await;
        assert_close(&attributions(&gxi), &reference(name, "input_x_gradient.npy"), 1e-4, 1e-4);

        for method in IG_METHODS {
            let ig = explain("integrated-gradients", params(&[("method", Kind::Text(method.into()))])).await;
            let mut expected = reference(name, &format!("ig_{method}.npy"));
            let delta = ig.extras.iter().find(|e| e.name == "convergence_delta").unwrap();
            if method == "riemann_trapezoid" {
                // captum's trapezoid weights are 1/n (halved at the ends) on points 1/(n − 1)
                // apart: they sum to (n − 1)/n, so its result is the trapezoid rule's scaled by
                // (n − 1)/n. explaind uses the rule's own weights, 1/(n − 1).
                let n = meta["ig_steps"].as_f64().unwrap() as f32;
                expected.iter_mut().for_each(|v| *v *= n / (n - 1.0));
            } else {
                assert_close(
                    &floats(delta.tensor.as_ref().unwrap()),
                    &reference(name, &format!("ig_{method}_delta.npy")),
                    1e-4,
                    1e-3,
                );
            }
            assert_close(&attributions(&ig), &expected, 1e-4, 1e-4);
        }

        for (tag, layer) in meta["gradcam_layers"].as_object().unwrap() {
            let tensor = layer["tensor"].as_str().unwrap();
            let relu = layer["relu_attributions"].as_bool().unwrap();
            for mode in ["nearest", "bilinear"] {
                // The last convolution is the default layer: name it only for the others.
                let mut p = vec![("relu", Kind::Flag(relu)), ("upsample", Kind::Text(mode.into()))];
                if tag != "last_conv" {
                    p.push(("layer", Kind::Text(tensor.into())));
                }
                let cam = explain("grad-cam", params(&p)).await;
                assert_eq!(cam.info.get("layer").map(String::as_str), Some(tensor), "{name} {tag}");
                let map = cam.extras.iter().find(|e| e.name == "layer_map").unwrap().tensor.as_ref().unwrap();
                assert_close(&floats(map), &reference(name, &format!("gradcam_{tag}_map.npy")), 1e-4, 1e-4);
                // Attributions: [N, T, 1, H, W] for these one-channel inputs.
                assert_close(&attributions(&cam), &reference(name, &format!("gradcam_{tag}_{mode}.npy")), 1e-4, 1e-4);
            }
        }
    }
}

#[tokio::test]
async fn integrated_gradients_converge_as_the_steps_grow() {
    let repository = fixture_repository();
    let server = TestServer::start_on(repository.path(), 64 << 20).await;
    let mut client = server.explainer().await;
    let c = case("cnn_bn_pools");
    let mut worst = Vec::new();
    for steps in [1, 4, 50] {
        let mut request = explain_request(&c, "integrated-gradients", all_targets());
        request.background.clear();
        request.parameters = params(&[("steps", Kind::Integer(steps))]);
        let response = client.explain(request).await.unwrap().into_inner();
        let delta = floats(response.extras.iter().find(|e| e.name == "convergence_delta").unwrap().tensor.as_ref().unwrap());
        worst.push(delta.iter().fold(0f32, |m, d| m.max(d.abs())));
    }
    // (Not monotone step by step: the model is piecewise linear, and a rule with few points can
    // land well by chance; over a decade of steps the error falls.)
    assert!(worst[1] < worst[0] && worst[2] < worst[1], "|delta| by steps 1, 4, 50: {worst:?}");
    assert!(worst[2] < 1e-3, "Gauss-Legendre with 50 steps: |delta| {}", worst[2]);
}

/// A repository with one linear model y = W x + c (x [batch, 4], y [batch, 2]), built here.
fn linear_repository(w: &[f32; 8], c: &[f32; 2]) -> tempfile::TempDir {
    use explaind_onnx::proto::tensor_proto::DataType;
    use explaind_onnx::{Dim, GraphBuilder, ModelProto, tensor_f32};
    let mut b = GraphBuilder::new("linear");
    b.add_input("x", DataType::Float, [Dim::from("batch"), Dim::from(4)]);
    let w = b.add_initializer(tensor_f32("w", &[4, 2], w));
    let c = b.add_initializer(tensor_f32("c", &[2], c));
    let xw = b.add_node("MatMul", &["x", &w], vec![]);
    let y = b.add_node("Add", &[&xw, &c], vec![]);
    b.add_output(&y, [Dim::from("batch"), Dim::from(2)]);
    let dir = tempfile::tempdir().unwrap();
    let version = dir.path().join("linear").join("1");
    std::fs::create_dir_all(&version).unwrap();
    ModelProto::new(b.finish(), &[("", 17)]).save(version.join("model.onnx")).unwrap();
    dir
}

#[tokio::test]
async fn sampling_methods_are_seeded_and_converge_to_the_exact_expectation_on_a_linear_model() {
    // W is [4, 2] row-major: output t's gradient is column t.
    let w = [1.0, -2.0, 0.5, 3.0, -1.5, 0.25, 2.0, -1.0];
    let repository = linear_repository(&w, &[0.5, -0.5]);
    let server = TestServer::start_on(repository.path(), 64 << 20).await;
    let mut client = server.explainer().await;
    let x = ndarray::arr2(&[[1.0f32, 2.0, -1.0, 0.5], [0.0, -1.0, 3.0, 2.0]]).into_dyn();
    let background = ndarray::Array2::from_shape_fn((30, 4), |(k, e)| ((k * 7 + e * 3) % 11) as f32 / 5.0 - 1.0);
    let mean_background: Vec<f32> = (0..4).map(|e| background.column(e).mean().unwrap()).collect();
    let background = background.into_dyn();
    let request = |explainer: &str, entries: &[(&str, Kind)]| proto::ExplainRequest {
        model: model("linear"),
        explainer: explainer.into(),
        inputs: vec![named("x", &x)],
        targets: Some(proto::Targets { selection: Some(proto::targets::Selection::All(proto::AllOutputs {})) }),
        parameters: params(entries),
        background: vec![named("x", &background)],
        ..Default::default()
    };
    // Exact expectations, by hand: φ[n, t, e] = W[e, t] · (x[n, e] − reference[e]).
    let exact = |reference: &[f32]| -> Vec<f32> {
        let mut out = Vec::new();
        for n in 0..2 {
            for t in 0..2 {
                for e in 0..4 {
                    out.push(w[e * 2 + t] * (x[[n, e]] - reference[e]));
                }
            }
        }
        out
    };
    let max_error = |a: &[f32], b: &[f32]| a.iter().zip(b).fold(0f32, |m, (a, b)| m.max((a - b).abs()));

    // Expected gradients: E over background rows of W · (x − r) = W · (x − mean background).
    let mut errors = Vec::new();
    for samples in [50, 5000] {
        let eg = client
            .explain(request("expected-gradients", &[("samples", Kind::Integer(samples)), ("seed", Kind::Integer(3))]))
            .await
            .unwrap()
            .into_inner();
        errors.push(max_error(&attributions(&eg), &exact(&mean_background)));
    }
    assert!(errors[1] < errors[0] / 3.0 && errors[1] < 0.1, "expected gradients error by samples 50, 5000: {errors:?}");
    let again = |seed| request("expected-gradients", &[("samples", Kind::Integer(50)), ("seed", Kind::Integer(seed))]);
    let first = attributions(&client.explain(again(3)).await.unwrap().into_inner());
    assert_eq!(first, attributions(&client.explain(again(3)).await.unwrap().into_inner()), "same seed, same draws");
    assert_ne!(first, attributions(&client.explain(again(4)).await.unwrap().into_inner()), "another seed, other draws");

    // SmoothGrad over integrated gradients: E over noise of W · (x + ε − 0) = W · x.
    let mut errors = Vec::new();
    for samples in [20, 2000] {
        let entries = [
            ("over", Kind::Text("integrated_gradients".into())),
            ("samples", Kind::Integer(samples)),
            ("steps", Kind::Integer(2)),
            ("stdev", Kind::Number(0.5)),
        ];
        errors.push(max_error(
            &attributions(&client.explain(request("smoothgrad", &entries)).await.unwrap().into_inner()),
            &exact(&[0.0; 4]),
        ));
    }
    assert!(errors[1] < errors[0] / 3.0 && errors[1] < 0.1, "smoothgrad (IG) error by samples 20, 2000: {errors:?}");
    // Over signed saliency the gradient is W wherever the noise lands: exact for any sample count.
    let entries = [("abs", Kind::Flag(false)), ("samples", Kind::Integer(7)), ("noise_level", Kind::Number(0.3))];
    let saliency = attributions(&client.explain(request("smoothgrad", &entries)).await.unwrap().into_inner());
    let gradient: Vec<f32> = (0..2).flat_map(|_| (0..2).flat_map(|t| (0..4).map(move |e| w[e * 2 + t]))).collect();
    assert_close(&saliency, &gradient, 1e-6, 1e-6);
    let seeded = |seed| {
        request(
            "smoothgrad",
            &[("over", Kind::Text("integrated_gradients".into())), ("samples", Kind::Integer(5)), ("seed", Kind::Integer(seed))],
        )
    };
    let first = attributions(&client.explain(seeded(1)).await.unwrap().into_inner());
    assert_eq!(first, attributions(&client.explain(seeded(1)).await.unwrap().into_inner()));
    assert_ne!(first, attributions(&client.explain(seeded(2)).await.unwrap().into_inner()));
}

#[tokio::test]
async fn bad_layers_and_parameters_are_invalid_arguments_that_name_them() {
    let repository = fixture_repository();
    let server = TestServer::start_on(repository.path(), 64 << 20).await;
    let mut client = server.explainer().await;
    let request = |name: &str, explainer: &str, entries: &[(&str, Kind)]| {
        let mut r = explain_request(&case(name), explainer, None);
        r.background.clear();
        r.parameters = params(entries);
        r
    };

    let status = client.explain(request("digits_cnn", "grad-cam", &[("layer", Kind::Text("conv9".into()))])).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    for expected in ["layer", "conv9", "conv1", "relu1", "pool1", "conv2", "relu2", "pool2"] {
        assert!(status.message().contains(expected), "{expected:?} in {:?}", status.message());
    }
    // No convolution and no 4-D tensor at all: the default has nothing to pick.
    let status = client.explain(request("mlp_tanh_sigmoid", "grad-cam", &[])).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("layer:") && status.message().contains("4-D tensors: none"), "{}", status.message());
    // A layer that exists but has no spatial axes.
    let status = client.explain(request("digits_cnn", "grad-cam", &[("layer", Kind::Text("flat".into()))])).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("parameters.layer"), "{}", status.message());

    for (explainer, entries, named) in [
        ("integrated-gradients", vec![("method", Kind::Text("simpson".into()))], "parameters.method"),
        ("integrated-gradients", vec![("steps", Kind::Integer(0))], "parameters.steps"),
        ("integrated-gradients", vec![("baseline_row", Kind::Integer(0))], "parameters.baseline_row"),
        ("grad-cam", vec![("upsample", Kind::Text("cubic".into()))], "parameters.upsample"),
        ("smoothgrad", vec![("samples", Kind::Integer(0))], "parameters.samples"),
        ("smoothgrad", vec![("over", Kind::Text("deeplift".into()))], "parameters.over"),
        ("smoothgrad", vec![("stdev", Kind::Number(-1.0))], "parameters.stdev"),
    ] {
        let status = client.explain(request("digits_cnn", explainer, &entries)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{explainer} {entries:?}");
        assert!(status.message().contains(named), "{named} in {:?}", status.message());
    }
    // The daemon keeps serving.
    client.explain(request("digits_cnn", "grad-cam", &[])).await.unwrap();
}

#[tokio::test]
async fn the_gradient_explainers_are_listed_with_their_parameters_and_needs() {
    let server = TestServer::start(Default::default(), &[]).await;
    let listed = server.explainer().await.list_explainers(proto::ListExplainersRequest {}).await.unwrap().into_inner();
    let find = |name: &str| listed.explainers.iter().find(|e| e.name == name).unwrap_or_else(|| panic!("{name} not listed"));
    for (name, parameters) in [
        ("saliency", vec!["abs"]),
        ("gradient-x-input", vec![]),
        ("integrated-gradients", vec!["steps", "method", "baseline", "baseline_row", "layer", "layer_attributions", "keep_ids"]),
        ("smoothgrad", vec!["over", "samples", "noise_level", "stdev", "seed", "abs", "steps", "method", "baseline"]),
        ("expected-gradients", vec!["samples", "seed", "local_smoothing"]),
        ("grad-cam", vec!["layer", "relu", "upsample", "normalize"]),
    ] {
        let info = find(name);
        assert_eq!(info.parameters.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), parameters, "{name}");
        assert!(info.requires.contains(&"gradients".to_string()), "{name}: {:?}", info.requires);
        assert_eq!(info.abi_version, format!("1.{}", explaind_abi::ABI_MINOR));
    }
    assert!(find("expected-gradients").requires.contains(&"background".to_string()));
    let steps = find("integrated-gradients").parameters.iter().find(|p| p.name == "steps").unwrap();
    assert_eq!(steps.default_value.as_ref().unwrap().kind, Some(Kind::Integer(50)));
    let method = find("integrated-gradients").parameters.iter().find(|p| p.name == "method").unwrap();
    assert_eq!(method.default_value.as_ref().unwrap().kind, Some(Kind::Text("gausslegendre".into())));
}
