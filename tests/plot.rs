//! Figures from the daemon (ExplainRequest.plot), the 28x28 digits model they were made for,
//! and the requests that cannot have a figure.
mod common;

use common::*;
use explaind::proto;
use std::collections::HashMap;
use std::path::Path;
use tonic::Code;

const MNIST: &str = "models/mnist-cnn/1";

fn png_size(bytes: &[u8]) -> (usize, usize) {
    let mut reader = png::Decoder::new(std::io::Cursor::new(bytes)).read_info().expect("a PNG header");
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).expect("the PNG data decodes");
    assert_eq!(info.color_type, png::ColorType::Rgb);
    (info.width as usize, info.height as usize)
}

fn plot(kind: &str) -> Option<proto::PlotOptions> {
    Some(proto::PlotOptions { png: true, kind: kind.into(), ..Default::default() })
}

fn all_targets() -> Option<proto::Targets> {
    Some(proto::Targets { selection: Some(proto::targets::Selection::All(proto::AllOutputs {})) })
}

fn explain(model_name: &str, explainer: &str, x: &ndarray::ArrayD<f32>) -> proto::ExplainRequest {
    proto::ExplainRequest {
        model: model(model_name),
        explainer: explainer.into(),
        inputs: vec![named("", x)],
        ..Default::default()
    }
}

#[tokio::test]
async fn the_mnist_model_predicts_what_the_training_script_recorded() {
    let server = TestServer::start(Default::default(), &[]).await;
    let x = read_npy(&format!("{MNIST}/samples.npy"));
    let recorded: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join(MNIST).join("expected_predictions.json")).unwrap())
            .unwrap();
    let samples = recorded["samples"].as_array().unwrap();
    assert_eq!(samples.len(), x.shape()[0]);
    let response = server
        .models()
        .await
        .predict(proto::PredictRequest { model: model("mnist-cnn"), inputs: vec![named("image", &x)] })
        .await
        .unwrap()
        .into_inner();
    let logits = floats(response.outputs[0].tensor.as_ref().unwrap());
    let mut wrong = 0;
    for (row, sample) in logits.chunks(10).zip(samples) {
        let predicted = row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0 as i64;
        assert_eq!(predicted, sample["predicted"].as_i64().unwrap(), "sample {}", sample["index"]);
        let expected: Vec<f32> = sample["logits"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap() as f32).collect();
        assert_close(row, &expected, 1e-4, 1e-4);
        if predicted != sample["label"].as_i64().unwrap() {
            wrong += 1;
        }
    }
    assert!(wrong >= 1, "the samples include digits the model gets wrong");
}

#[tokio::test]
async fn deep_shap_on_mnist_returns_a_figure_of_every_class() {
    let server = TestServer::start(Default::default(), &[]).await;
    let x = read_npy(&format!("{MNIST}/demo.npy"));
    let mut request = explain("mnist-cnn", "deep-shap", &x);
    request.targets = all_targets();
    request.plot = plot("");
    let response = server.explainer().await.explain(request.clone()).await.unwrap().into_inner();

    // Deep SHAP works on the exported graph: attributions sum to f(x) - E[f(x)].
    let attributions = response.attributions[0].values.as_ref().unwrap();
    assert_eq!(attributions.shape, vec![4, 10, 1, 28, 28]);
    let phi = floats(attributions);
    let base = floats(response.base_values.as_ref().unwrap());
    let logits = floats(response.outputs[0].tensor.as_ref().unwrap());
    let sums: Vec<f32> = phi.chunks(784).map(|c| c.iter().sum()).collect();
    let explained: Vec<f32> = logits.iter().zip(&base).map(|(f, b)| f - b).collect();
    assert!(explained.iter().any(|d| d.abs() > 1.0), "not comparing zeros");
    assert_close(&sums, &explained, 1e-3, 1e-3);

    // The figure: what the plot crate draws for the same result, 4 rows x (input + 10 classes).
    let (w, h) = png_size(&response.plot_png);
    let targets = ints(response.target_indices.as_ref().unwrap());
    let labels: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    let expected = explaind_plot::render(
        &explaind_plot::Explanation {
            input_shape: &[1, 28, 28],
            inputs: x.as_slice().unwrap(),
            attributions: &phi,
            targets: &targets,
            outputs: &logits,
            base_values: Some(&base),
            explained: None,
            labels: &labels,
            feature_names: &[],
            method: "deep-shap",
            title: "",
        },
        &Default::default(),
    )
    .unwrap();
    assert_eq!(expected.panels.len(), 4 * 11);
    assert_eq!((w, h), (expected.width, expected.height));

    // Without the option there is no figure.
    request.plot = None;
    let plain = server.explainer().await.explain(request).await.unwrap().into_inner();
    assert!(plain.plot_png.is_empty());
}

#[tokio::test]
async fn tabular_models_get_waterfalls_with_base_values_and_bars_without() {
    let server = TestServer::start(Default::default(), &[]).await;
    let mut client = server.explainer().await;
    let x = read_npy("models/wine-mlp/1/samples.npy");
    let x = x.slice(ndarray::s![..2, ..]).to_owned().into_dyn();

    let mut request = explain("wine-mlp", "deep-shap", &x);
    request.plot = plot("");
    let waterfall = client.explain(request.clone()).await.unwrap().into_inner();
    let (ww, wh) = png_size(&waterfall.plot_png);

    request.plot = plot("bars");
    let bars = client.explain(request.clone()).await.unwrap().into_inner();
    let (bw, bh) = png_size(&bars.plot_png);
    assert_ne!((ww, wh), (bw, bh), "auto picked the waterfall, not the bars");

    // Occlusion has no base values: a waterfall is refused, bars are drawn.
    let mut occlusion = explain("wine-mlp", "occlusion", &x);
    occlusion.parameters = HashMap::from([("window".to_string(), integers(&[1]))]);
    occlusion.plot = plot("waterfall");
    let status = client.explain(occlusion.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().starts_with("plot: a waterfall needs base values"), "{}", status.message());
    occlusion.plot = plot("");
    png_size(&client.explain(occlusion).await.unwrap().into_inner().plot_png);
}

#[tokio::test]
async fn requests_that_cannot_have_a_figure_say_why() {
    let server = TestServer::start(Default::default(), &[]).await;
    let mut client = server.explainer().await;

    // 12 digits x (input + 10 classes) = 132 panels; refused before any explaining.
    let x = read_npy(&format!("{MNIST}/samples.npy"));
    let mut request = explain("mnist-cnn", "deep-shap", &x);
    request.targets = indices(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
    request.plot = plot("");
    let status = client.explain(request.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("132 panels (12 inputs x 11 columns); at most 64"), "{}", status.message());
    // "All outputs": counted from the model's declared output shape.
    request.targets = all_targets();
    let status = client.explain(request.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("132 panels"), "{}", status.message());

    request.plot = plot("pie");
    let status = client.explain(request.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(status.message().contains("unknown plot kind \"pie\""), "{}", status.message());

    // An image input asked for bars.
    request.plot = plot("bars");
    request.targets = None;
    let status = client.explain(request).await.unwrap_err();
    assert!(status.message().contains("use \"image\""), "{}", status.message());
}

/// A model whose input is [batch, 2, 3]: neither an image nor a table row.
fn matrix_model(repository: &Path) {
    use explaind_onnx::proto::tensor_proto::DataType;
    use explaind_onnx::{Dim, GraphBuilder, ModelProto};
    let version = repository.join("matrix").join("1");
    std::fs::create_dir_all(&version).unwrap();
    let mut b = GraphBuilder::new("matrix");
    b.add_input("x", DataType::Float, [Dim::from("batch"), Dim::from(2), Dim::from(3)]);
    let y = b.add_node("Relu", &["x"], vec![]);
    b.add_output(&y, [Dim::from("batch"), Dim::from(2), Dim::from(3)]);
    ModelProto::new(b.finish(), &[("", 17)]).save(version.join("model.onnx")).unwrap();
}

#[tokio::test]
async fn an_input_that_is_neither_an_image_nor_a_table_row_has_no_layout() {
    let repository = tempfile::tempdir().unwrap();
    matrix_model(repository.path());
    let server = TestServer::start_on(repository.path(), 1 << 20).await;
    let x = ndarray::ArrayD::from_elem(vec![1, 2, 3], 0.5f32);
    let mut request = explain("matrix", "occlusion", &x);
    request.parameters = HashMap::from([("window".to_string(), integers(&[1, 1]))]);
    request.plot = plot("");
    let status = server.explainer().await.explain(request.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("no plot layout for an input of shape [2, 3] after the batch axis"),
        "{}",
        status.message()
    );
    // The same request without a figure is fine.
    request.plot = None;
    server.explainer().await.explain(request).await.unwrap();
}

#[test]
fn the_cli_writes_the_figure_or_says_why_not() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    const BIN: &str = env!("CARGO_BIN_EXE_explaind");
    let repository = tempfile::tempdir().unwrap();
    matrix_model(repository.path());
    let mnist = repository.path().join("mnist-cnn").join("1");
    std::fs::create_dir_all(&mnist).unwrap();
    for file in ["model.onnx", "config.toml", "background.npy"] {
        std::fs::copy(repo_root().join(MNIST).join(file), mnist.join(file)).unwrap();
    }
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--device", "cpu", "--models"])
        .arg(repository.path())
        .current_dir(repo_root())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
    let _guard = Kill(child);
    let addr = format!("http://{}", line.trim().strip_prefix("explaind listening on ").expect("the listening line"));

    let dir = tempfile::tempdir().unwrap();
    let figure = dir.path().join("digits.png");
    let output = Command::new(BIN)
        .args(["explain", "--addr", &addr, "--model", "mnist-cnn", "--explainer", "deep-shap", "--top-k", "3", "--input"])
        .arg(repo_root().join(MNIST).join("demo.npy"))
        .arg("--plot")
        .arg(&figure)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let bytes = std::fs::read(&figure).unwrap();
    assert_eq!(summary["bytes"], bytes.len());
    png_size(&bytes);

    let input = dir.path().join("matrix.json");
    std::fs::write(&input, r#"{"shape": [1, 2, 3], "data": [1, 2, 3, 4, 5, 6]}"#).unwrap();
    let output = Command::new(BIN)
        .args(["explain", "--addr", &addr, "--model", "matrix", "--explainer", "occlusion", "--param", "window=1,1", "--input"])
        .arg(&input)
        .arg("--plot")
        .arg(dir.path().join("matrix.png"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("InvalidArgument: plot: no plot layout for an input of shape [2, 3]"),
        "the error names the reason: {stderr}"
    );
    assert!(!dir.path().join("matrix.png").exists());
}
