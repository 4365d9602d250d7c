//! The real `explaind` binary: start-up errors, the listening line, and the client commands.
mod common;

use common::repo_root;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_explaind");

fn serve_fails_with(args: &[&str]) -> String {
    let output = Command::new(BIN).arg("serve").args(["--listen", "127.0.0.1:0"]).args(args).output().unwrap();
    assert!(!output.status.success(), "serve should fail with {args:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap_or_default().to_string();
    assert!(last.starts_with("explaind: "), "the error is one line of its own: {stderr}");
    last
}

#[test]
fn a_missing_onnx_runtime_library_says_how_to_fix_it() {
    let line = serve_fails_with(&["--ort-lib", "/nonexistent/libonnxruntime.so"]);
    assert!(line.contains("not found at /nonexistent/libonnxruntime.so"), "{line}");
    assert!(line.contains("scripts/setup/setup.sh") && line.contains("ORT_DYLIB_PATH"), "{line}");
}

#[test]
fn a_library_that_is_not_onnx_runtime_says_how_to_fix_it() {
    // A real shared library, but not ONNX Runtime: the bundled occlusion plugin.
    let wrong = common::target_dir().join("libexplaind_plugin_occlusion.so");
    let line = serve_fails_with(&["--ort-lib", wrong.to_str().unwrap()]);
    assert!(line.contains("could not load ONNX Runtime from"), "{line}");
    assert!(line.contains("scripts/setup/setup.sh"), "{line}");
}

/// Starts `explaind serve` on a free port and returns the child and its address.
fn serve() -> (std::process::Child, String) {
    serve_with(&[])
}

/// [`serve`] with more flags (`--models DIR`).
fn serve_with(flags: &[&str]) -> (std::process::Child, String) {
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--device", "cpu"])
        .args(flags)
        .current_dir(repo_root())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("explaind listening on ").unwrap_or_else(|| panic!("unexpected first line {line:?}"));
    (child, format!("http://{addr}"))
}

struct Kill(std::process::Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn client(args: &[&str]) -> serde_json::Value {
    let output = Command::new(BIN).args(args).current_dir(repo_root()).output().unwrap();
    assert!(output.status.success(), "{args:?}: {}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn client_commands_against_the_default_daemon() {
    let (child, addr) = serve();
    let _guard = Kill(child);

    let models = client(&["models", "--addr", &addr]);
    let names: Vec<&str> = models.as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["digits-cnn", "mnist-cnn", "wine-mlp"]);
    assert_eq!(models[0]["execution_provider"], "CPU");

    // The bundled plugins load by default; test plugins beside them do not.
    let explainers = client(&["explainers", "--addr", &addr]);
    let names: Vec<&str> = explainers.as_array().unwrap().iter().map(|e| e["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "deep-shap",
            "deeplift",
            "expected-gradients",
            "grad-cam",
            "gradient-x-input",
            "integrated-gradients",
            "kernel-shap",
            "lime",
            "occlusion",
            "saliency",
            "smoothgrad",
            "tree-shap"
        ]
    );
    let occlusion = &explainers[names.iter().position(|n| *n == "occlusion").unwrap()];
    assert_eq!(occlusion["parameters"][2]["default"], 0.0);
    assert_eq!(explainers[0]["requires"], serde_json::json!(["background", "gradients"]));

    // Explain from a PNG: an 8x8 grey image written here, so the PNG path is exercised end to end.
    let dir = tempfile::tempdir().unwrap();
    let png_path = dir.path().join("digit.png");
    let pixels: Vec<u8> = (0..64).map(|i| if (i % 8) == 3 || (i % 8) == 4 { 255 } else { 0 }).collect();
    {
        let file = std::fs::File::create(&png_path).unwrap();
        let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), 8, 8);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.write_header().unwrap().write_image_data(&pixels).unwrap();
    }
    let out = dir.path().join("out.json");
    let explain_args = [
        "explain",
        "--addr",
        &addr,
        "--model",
        "digits-cnn",
        "--explainer",
        "occlusion",
        "--input",
        png_path.to_str().unwrap(),
        "--param",
        "window=1,2,2",
        "--top-k",
        "2",
        "--out",
        out.to_str().unwrap(),
    ];
    let status = Command::new(BIN).args(explain_args).status().unwrap();
    assert!(status.success());
    let result: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(result["attributions"]["image"]["shape"], serde_json::json!([1, 2, 1, 8, 8]));
    assert_eq!(result["target_indices"]["shape"], serde_json::json!([1, 2]));
    // top-k targets come highest first.
    let logits: Vec<f64> = result["outputs"]["logits"]["data"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    let top = result["target_indices"]["data"][0].as_i64().unwrap() as usize;
    assert!(logits.iter().all(|&l| l <= logits[top]));
    assert_eq!(result["timing"]["model_rows"], 1 + 49);

    // .npy output round-trips through the runtime's reader.
    let npy = dir.path().join("attr.npy");
    let mut npy_args = explain_args.to_vec();
    let last = npy_args.len() - 1;
    npy_args[last] = npy.to_str().unwrap();
    assert!(Command::new(BIN).args(&npy_args).status().unwrap().success());
    let array = explaind_runtime::npy::read_f32_file(&npy).unwrap();
    assert_eq!(array.shape(), &[1, 2, 1, 8, 8]);

    // Deep SHAP against the model's default background: the JSON carries the extras, and the
    // reported completeness residual is Σφ − (f(x) − base) computed from the JSON's own values.
    let samples = repo_root().join("models/digits-cnn/1/samples.npy");
    let deep_shap = [
        "explain",
        "--addr",
        &addr,
        "--model",
        "digits-cnn",
        "--explainer",
        "deep-shap",
        "--input",
        samples.to_str().unwrap(),
        "--all-targets",
    ];
    let result = client(&deep_shap);
    let floats =
        |v: &serde_json::Value| -> Vec<f64> { v["data"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect() };
    let (phi, outputs, base) =
        (floats(&result["attributions"]["image"]), floats(&result["outputs"]["logits"]), floats(&result["base_values"]));
    let residual = floats(&result["extras"]["completeness_residual"]);
    assert_eq!(residual.len(), base.len());
    let per_target = phi.len() / base.len();
    for (j, reported) in residual.iter().enumerate() {
        let sum: f64 = phi[j * per_target..(j + 1) * per_target].iter().sum();
        let gap = outputs[j] - base[j];
        assert!((sum - gap - reported).abs() <= 1e-3, "target {j}: Σφ {sum}, gap {gap}, reported {reported}");
        assert!(reported.abs() <= 1e-4 * outputs[j].abs().max(1.0), "target {j}: residual {reported}");
    }

    // Faithfulness metrics from the command line: the same residual as the metric's completeness,
    // and the seed given comes back.
    let metrics = ["--evaluate", "completeness", "--evaluate", "deletion:steps=4;baseline=0", "--evaluation-seed", "9"];
    let evaluated = client(&[&deep_shap[..], &metrics].concat());
    assert_eq!(evaluated["evaluation_seed"], 9);
    let completeness = floats(&evaluated["evaluation"]["completeness"]["values"]);
    for (metric, plugin) in completeness.iter().zip(&residual) {
        assert!((metric - plugin).abs() <= 1e-4, "{metric} vs {plugin}");
    }
    assert_eq!(evaluated["evaluation"]["deletion"]["extras"]["curve"]["shape"][2], 5);
}

#[test]
fn a_token_model_is_explained_and_drawn_from_the_command_line() {
    // The tiny BERT export with a vocabulary, as a user would give it one.
    let repository = common::fixtures::case_repository("tests/data/tokens", &["bert_tiny".to_string()]);
    let version = repository.path().join("bert_tiny").join("1");
    let words: Vec<String> =
        ["[PAD]", "[CLS]", "[SEP]"].into_iter().map(String::from).chain((3..100).map(|i| format!("word{i}"))).collect();
    std::fs::write(version.join("vocab.txt"), words.join("\n")).unwrap();
    std::fs::write(version.join("config.toml"), "vocabulary = \"vocab.txt\"\n").unwrap();
    let (child, addr) = serve_with(&["--models", repository.path().to_str().unwrap()]);
    let _guard = Kill(child);
    let ids = repo_root().join("tests/data/tokens/bert_tiny/input_ids.npy");
    let mask = repo_root().join("tests/data/tokens/bert_tiny/attention_mask.npy");
    let (ids, mask) = (format!("input_ids={}", ids.display()), format!("attention_mask={}", mask.display()));

    // .npy files of int64 ids go to the model as int64.
    let predicted = client(&["predict", "--addr", &addr, "--model", "bert_tiny", "--input", &ids, "--input", &mask]);
    assert_eq!(predicted["outputs"]["logits"]["shape"], serde_json::json!([2, 3]));

    let out = tempfile::tempdir().unwrap();
    let figure = out.path().join("tokens.png");
    let explained = client(&[
        "explain",
        "--addr",
        &addr,
        "--model",
        "bert_tiny",
        "--explainer",
        "occlusion",
        "--input",
        &ids,
        "--input",
        &mask,
        "--explain-input",
        "input_ids",
        "--param",
        "window=1",
        "--all-targets",
        "--plot",
        figure.to_str().unwrap(),
    ]);
    assert_eq!(explained["plot"], figure.to_str().unwrap());
    let everything = out.path().join("everything.json");
    let status = Command::new(BIN)
        .args([
            "explain",
            "--addr",
            &addr,
            "--model",
            "bert_tiny",
            "--explainer",
            "occlusion",
            "--input",
            &ids,
            "--input",
            &mask,
            "--explain-input",
            "input_ids",
            "--param",
            "window=1",
            "--out",
            everything.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let explained: serde_json::Value = serde_json::from_slice(&std::fs::read(&everything).unwrap()).unwrap();
    let attributions = explained["attributions"].as_object().unwrap();
    assert_eq!(attributions.keys().collect::<Vec<_>>(), ["input_ids"], "the mask is held");
    let png = std::fs::read(&figure).unwrap();
    assert_eq!(&png[1..4], b"PNG");

    // A single FILE for a model with two inputs says what to write instead.
    let output =
        Command::new(BIN).args(["predict", "--addr", &addr, "--model", "bert_tiny", "--input", "x.npy"]).output().unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("give NAME=FILE for each"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
