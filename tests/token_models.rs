//! Integer-input models through gRPC, as users export them: a BERT-family text classifier
//! (`tests/data/tokens/bert_tiny`: int64 `input_ids` and `attention_mask`, made by
//! `scripts/fixtures/make_token_fixtures.py` with transformers and torch.onnx) and a tabular classifier
//! over int64 category codes (`tests/data/int_tabular`: scikit-learn's OneHotEncoder and
//! LogisticRegression through skl2onnx, `scripts/fixtures/make_int_tabular_fixtures.py`).
//!
//! A third model (`tests/data/dtypes/mixed`, `scripts/fixtures/make_dtype_fixtures.py`) takes double,
//! int32, bool, float16 and uint8 inputs at once.
//!
//! Predictions take the inputs in their declared types; occlusion and Kernel SHAP explain token
//! positions with a replacement id, the attention mask held at the request's values, against
//! brute force computed by the scripts with onnxruntime (every coalition of the 10 positions
//! for the Shapley values). And the refusals: wrong element types, explainers that read float32
//! only, explained inputs that do not exist, baselines that are not ids.
mod common;

use common::fixtures::case_repository;
use common::*;
use explaind::proto;
use proto::param_value::Kind;
use tonic::Code;

const TOKENS: &str = "tests/data/tokens";
const TABULAR: &str = "tests/data";

/// A repository with `bert_tiny` and `int_tabular`.
async fn server() -> (TestServer, [tempfile::TempDir; 2]) {
    let tokens = case_repository(TOKENS, &["bert_tiny".to_string()]);
    let tabular = case_repository(TABULAR, &["int_tabular".to_string()]);
    // One repository: move the tabular model beside the token model.
    std::fs::rename(tabular.path().join("int_tabular"), tokens.path().join("int_tabular")).unwrap();
    let server = TestServer::start_on(tokens.path(), 0).await;
    (server, [tokens, tabular])
}

/// An int64 tensor of the (integral) values of `array`, named `name`.
fn int64(name: &str, array: &ndarray::ArrayD<f32>) -> proto::NamedTensor {
    assert!(array.iter().all(|v| v.fract() == 0.0), "the fixture holds ids");
    let shape: Vec<usize> = array.shape().to_vec();
    proto::NamedTensor {
        name: name.to_string(),
        tensor: Some(explaind::convert::int_tensor(&shape, array.iter().map(|&v| v as i64))),
    }
}

fn bert(file: &str) -> ndarray::ArrayD<f32> {
    read_npy(&format!("{TOKENS}/bert_tiny/{file}"))
}

fn tabular(file: &str) -> ndarray::ArrayD<f32> {
    read_npy(&format!("{TABULAR}/int_tabular/{file}"))
}

fn rows(array: &ndarray::ArrayD<f32>, range: std::ops::Range<usize>) -> ndarray::ArrayD<f32> {
    array.slice_axis(ndarray::Axis(0), range.into()).to_owned()
}

fn number(v: f64) -> proto::ParamValue {
    proto::ParamValue { kind: Some(Kind::Number(v)) }
}

fn all() -> Option<proto::Targets> {
    Some(proto::Targets { selection: Some(proto::targets::Selection::All(proto::AllOutputs {})) })
}

/// An explain request on the token model's rows `range`, explaining `input_ids` with the mask
/// held, every class as a target.
fn token_request(
    explainer: &str,
    range: std::ops::Range<usize>,
    parameters: &[(&str, proto::ParamValue)],
) -> proto::ExplainRequest {
    proto::ExplainRequest {
        model: model("bert_tiny"),
        explainer: explainer.into(),
        inputs: vec![
            int64("input_ids", &rows(&bert("input_ids.npy"), range.clone())),
            int64("attention_mask", &rows(&bert("attention_mask.npy"), range)),
        ],
        targets: all(),
        parameters: parameters.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
        explained_inputs: vec!["input_ids".into()],
        ..Default::default()
    }
}

#[tokio::test]
async fn predict_feeds_int64_inputs_as_the_model_declares_them() {
    let (server, _dirs) = server().await;
    let mut client = server.models().await;
    let request = proto::PredictRequest {
        model: model("bert_tiny"),
        inputs: vec![int64("input_ids", &bert("input_ids.npy")), int64("attention_mask", &bert("attention_mask.npy"))],
    };
    let response = client.predict(request).await.unwrap().into_inner();
    assert_eq!(response.outputs.len(), 1);
    assert_eq!(response.outputs[0].name, "logits");
    assert_close(&floats(response.outputs[0].tensor.as_ref().unwrap()), bert("logits.npy").as_slice().unwrap(), 1e-6, 1e-4);

    // skl2onnx's classifier: int64 codes in, float probabilities served (its int64 label is not).
    let request = proto::PredictRequest { model: model("int_tabular"), inputs: vec![int64("codes", &tabular("x.npy"))] };
    let response = client.predict(request).await.unwrap().into_inner();
    let names: Vec<&str> = response.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["probabilities"]);
    assert_close(
        &floats(response.outputs[0].tensor.as_ref().unwrap()),
        tabular("probabilities.npy").as_slice().unwrap(),
        1e-6,
        1e-5,
    );

    // The metadata says what each input takes.
    let metadata = client.get_model(proto::GetModelRequest { model: model("bert_tiny") }).await.unwrap().into_inner();
    assert!(metadata.inputs.iter().all(|i| i.element_type == proto::ElementType::Int64 as i32), "{:?}", metadata.inputs);
}

#[tokio::test]
async fn occlusion_over_token_positions_matches_brute_force_with_the_mask_held() {
    let (server, _dirs) = server().await;
    let request = token_request("occlusion", 0..2, &[("window", integers(&[1])), ("baseline", number(0.0))]);
    let response = server.explainer().await.explain(request).await.unwrap().into_inner();
    // Only the explained input has attributions.
    assert_eq!(response.attributions.len(), 1);
    assert_eq!(response.attributions[0].input_name, "input_ids");
    let values = response.attributions[0].values.as_ref().unwrap();
    assert_eq!(values.shape, vec![2, 3, 10]);
    let got = floats(values);
    // The reference subtracts the same float32 logits: equal but for the summation order.
    assert_close(&got, bert("occlusion.npy").as_slice().unwrap(), 1e-8, 1e-4);
    // Padded positions of row 1 (mask 0 at positions 7..10) hold the replacement id already.
    for t in 0..3 {
        for p in 7..10 {
            assert_eq!(got[(3 + t) * 10 + p], 0.0, "target {t}, padded position {p}");
        }
    }
}

#[tokio::test]
async fn kernel_shap_over_ten_tokens_is_exact_at_full_budget() {
    let (server, _dirs) = server().await;
    let reference = bert("shapley.npy");
    let base = bert("shapley_base.npy");
    let mut client = server.explainer().await;
    // The reference's baseline differs per row (each keeps its own [CLS] and [SEP]): one
    // request per row, with that row as the background ([PAD] ids elsewhere).
    for n in 0..2 {
        let mut request =
            token_request("kernel-shap", n..n + 1, &[("nsamples", proto::ParamValue { kind: Some(Kind::Integer(1 << 20)) })]);
        request.background = vec![
            int64("input_ids", &rows(&bert("baseline_ids.npy"), n..n + 1)),
            // Held fixed: its background rows are not used, the request's mask is.
            int64("attention_mask", &rows(&bert("attention_mask.npy"), n..n + 1)),
        ];
        let response = client.explain(request).await.unwrap().into_inner();
        assert_eq!(response.attributions.len(), 1);
        let got = floats(response.attributions[0].values.as_ref().unwrap());
        let expected = rows(&reference, n..n + 1);
        // Values are about 1e-5 and the logits' float32 steps about 2e-9.
        assert_close(&got, expected.as_slice().unwrap(), 2e-9, 1e-4);
        let base_values = floats(response.base_values.as_ref().unwrap());
        assert_close(&base_values, rows(&base, n..n + 1).as_slice().unwrap(), 1e-8, 1e-6);
        let errors = floats(common::fixtures::extra(&response, "standard_errors"));
        assert!(errors.iter().all(|&e| e == 0.0), "every coalition enumerated: no sampling error");
    }
}

#[tokio::test]
async fn integer_codes_of_a_tabular_model_are_occluded_and_shapley_valued_exactly() {
    let (server, _dirs) = server().await;
    let mut client = server.explainer().await;
    let x = tabular("x.npy");
    let request = |explainer: &str, parameters: Vec<(&str, proto::ParamValue)>| proto::ExplainRequest {
        model: model("int_tabular"),
        explainer: explainer.into(),
        inputs: vec![int64("codes", &x)],
        targets: all(),
        output: "probabilities".into(),
        parameters: parameters.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        ..Default::default()
    };
    let response =
        client.explain(request("occlusion", vec![("window", integers(&[1])), ("baseline", number(0.0))])).await.unwrap();
    let got = floats(response.get_ref().attributions[0].values.as_ref().unwrap());
    assert_close(&got, tabular("occlusion.npy").as_slice().unwrap(), 1e-7, 1e-5);

    // Code 0 for absent features: the reference's all-zero baseline row.
    let response = client.explain(request("kernel-shap", vec![("baseline", number(0.0))])).await.unwrap().into_inner();
    let got = floats(response.attributions[0].values.as_ref().unwrap());
    assert_close(&got, tabular("shapley.npy").as_slice().unwrap(), 1e-6, 1e-5);
    let base_values = floats(response.base_values.as_ref().unwrap());
    assert_close(&base_values, tabular("shapley_base.npy").as_slice().unwrap(), 1e-6, 1e-6);
}

#[tokio::test]
async fn bad_types_and_requests_that_do_not_fit_are_refused_naming_the_field() {
    let (server, _dirs) = server().await;
    let mut models = server.models().await;
    let mut explainer = server.explainer().await;
    let ids = bert("input_ids.npy");
    let mask = bert("attention_mask.npy");

    // Token ids sent as float32.
    let request = proto::PredictRequest {
        model: model("bert_tiny"),
        inputs: vec![named("input_ids", &ids), int64("attention_mask", &mask)],
    };
    let err = models.predict(request).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with(
            "inputs[0].tensor.element_type: ELEMENT_TYPE_FLOAT, but model input \"input_ids\" takes ELEMENT_TYPE_INT64"
        ),
        "{}",
        err.message()
    );

    // A held input of the wrong shape.
    let short_mask = ids.slice_axis(ndarray::Axis(1), (0..9).into()).to_owned();
    let request = proto::PredictRequest {
        model: model("bert_tiny"),
        inputs: vec![int64("input_ids", &ids), int64("attention_mask", &short_mask)],
    };
    let err = models.predict(request).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("inputs[1].tensor.shape: model input \"attention_mask\" takes [batch, 10]"),
        "{}",
        err.message()
    );

    // Ids past the vocabulary: ONNX Runtime's Gather refuses them, and the daemon says so.
    let mut far = ids.clone();
    far[[0, 1]] = 5000.0;
    let request = proto::PredictRequest {
        model: model("bert_tiny"),
        inputs: vec![int64("input_ids", &far), int64("attention_mask", &mask)],
    };
    let err = models.predict(request).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(err.message().starts_with("inputs: "), "{}", err.message());

    // Gradient methods without a layer mode read float32 inputs only.
    let err = explainer.explain(token_request("saliency", 0..1, &[])).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("model input \"input_ids\" is int64, and explainer saliency reads float32 inputs only"),
        "{}",
        err.message()
    );
    // Integrated gradients attributes at a layer, which must be an embedding of the input.
    let err = explainer.explain(token_request("integrated-gradients", 0..1, &[("layer", text("logits"))])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("parameters.layer: \"logits\" has shape [3], which does not extend input \"input_ids\""),
        "{}",
        err.message()
    );
    let err =
        explainer.explain(token_request("integrated-gradients", 0..1, &[("layer", text("no_such_tensor"))])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("parameters.layer: model bert_tiny/1 has no tensor named \"no_such_tensor\""),
        "{}",
        err.message()
    );

    // An explained input the model does not have.
    let mut request = token_request("occlusion", 0..1, &[("window", integers(&[1]))]);
    request.explained_inputs = vec!["token_type_ids".into()];
    let err = explainer.explain(request).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(
        err.message().starts_with("explained_inputs[0]: \"token_type_ids\" is not an input of bert_tiny"),
        "{}",
        err.message()
    );

    // Occlusion perturbs one input; explaining both ids and mask is not that.
    let mut request = token_request("occlusion", 0..1, &[("window", integers(&[1]))]);
    request.explained_inputs.clear();
    let err = explainer.explain(request).await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
    assert!(err.message().starts_with("explained_inputs: occlusion explains one input at a time"), "{}", err.message());

    // A baseline that is not an id.
    let request = token_request("occlusion", 0..1, &[("window", integers(&[1])), ("baseline", number(0.5))]);
    let err = explainer.explain(request).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("parameters.baseline: input \"input_ids\" takes integers"), "{}", err.message());

    // Kernel SHAP needs something for absent tokens to take.
    let err = explainer.explain(token_request("kernel-shap", 0..1, &[])).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("needs background rows or a `baseline` value"), "{}", err.message());

    // Background ids past 2^24 cannot be kept as float32 rows.
    let mut request = token_request("kernel-shap", 0..1, &[]);
    let mut huge = rows(&ids, 0..1);
    huge[[0, 3]] = 16777217.0;
    request.background = vec![
        proto::NamedTensor {
            name: "input_ids".into(),
            tensor: Some(explaind::convert::int_tensor(
                &[1, 10],
                huge.iter().enumerate().map(|(i, &v)| if i == 3 { (1 << 24) + 1 } else { v as i64 }),
            )),
        },
        int64("attention_mask", &rows(&mask, 0..1)),
    ];
    let err = explainer.explain(request).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("background: element 3 of input \"input_ids\" is 16777217"), "{}", err.message());
}

#[tokio::test]
async fn a_plugin_built_against_abi_1_4_is_offered_float32_models_only() {
    let dir = tempfile::tempdir().unwrap();
    let include = repo_root().join("tests/c/abi-1.4");
    let header = std::fs::read_to_string(include.join("explaind_plugin.h")).unwrap();
    assert!(header.contains("#define EXPLAIND_ABI_MINOR 4"), "the fixture is the 1.4 header");
    let library =
        compile_c_plugin_against(&include, "tests/c/leave_one_out.c", &[], dir.path(), "explaind_plugin_leave_one_out_c");
    let tokens = case_repository(TOKENS, &["bert_tiny".to_string()]);
    let server = TestServer::start_on_with_plugins(tokens.path(), &[library]).await;
    let plugin = server.state.host.plugins.get("leave-one-out-c").unwrap();
    assert_eq!((plugin.abi_major, plugin.abi_minor), (1, 4));
    let mut request = token_request("leave-one-out-c", 0..1, &[]);
    request.explained_inputs.clear();
    let err = server.explainer().await.explain(request).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("explainer leave-one-out-c reads float32 inputs only"), "{}", err.message());
}

#[tokio::test]
async fn integrated_gradients_at_the_embedding_match_captums_layer_integrated_gradients() {
    let (server, _dirs) = server().await;
    // captum's setting (scripts/fixtures/make_token_fixtures.py): Gauss-Legendre, 32 steps, the baseline
    // [PAD] everywhere but [CLS] and [SEP].
    let parameters = [
        ("method", text("gausslegendre")),
        ("steps", proto::ParamValue { kind: Some(Kind::Integer(32)) }),
        ("baseline", number(0.0)),
        ("keep_ids", integers(&[1, 2])),
        ("layer_attributions", proto::ParamValue { kind: Some(Kind::Flag(true)) }),
    ];
    let request = token_request("integrated-gradients", 0..2, &parameters);
    let response = server.explainer().await.explain(request).await.unwrap().into_inner();
    assert_eq!(response.attributions.len(), 1);
    let values = response.attributions[0].values.as_ref().unwrap();
    assert_eq!(values.shape, vec![2, 3, 10]);
    let got = floats(values);
    let expected = bert("lig.npy");
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert_close(&got, expected.as_slice().unwrap(), 1e-4 * scale, 1e-4);
    let per_dimension = common::fixtures::extra(&response, "layer_attributions");
    assert_eq!(per_dimension.shape, vec![2, 3, 10, 32]);
    let expected = bert("lig_embedding.npy");
    let scale = expected.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert_close(&floats(per_dimension), expected.as_slice().unwrap(), 1e-4 * scale, 1e-4);
    // Padded positions: the same [PAD] embedding on both ends of the path.
    assert!(got[3 * 10..].chunks(10).all(|row| row[7..].iter().all(|&v| v == 0.0)), "{got:?}");
    // Completeness at the layer, as captum's delta says.
    let delta = floats(common::fixtures::extra(&response, "convergence_delta"));
    let logits = bert("logits.npy");
    let logit_scale = logits.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(delta.iter().all(|d| d.abs() <= 1e-4 * logit_scale), "{delta:?}");
}

#[tokio::test]
async fn deep_shap_at_the_embedding_is_complete_and_leaves_padding_at_zero() {
    let (server, _dirs) = server().await;
    let mut request =
        token_request("deep-shap", 0..2, &[("layer_attributions", proto::ParamValue { kind: Some(Kind::Flag(true)) })]);
    // Two background rows of ids ([PAD] but [CLS] and [SEP]); their mask is not read, each
    // input row's is.
    request.background =
        vec![int64("input_ids", &bert("baseline_ids.npy")), int64("attention_mask", &bert("attention_mask.npy"))];
    let response = server.explainer().await.explain(request).await.unwrap().into_inner();
    assert_eq!(response.attributions.len(), 1);
    let values = floats(response.attributions[0].values.as_ref().unwrap());
    assert_eq!(response.attributions[0].values.as_ref().unwrap().shape, vec![2, 3, 10]);
    let base = floats(response.base_values.as_ref().unwrap());
    let logits = floats(response.outputs[0].tensor.as_ref().unwrap());
    let scale = logits.iter().fold(0f32, |m, v| m.max(v.abs())) as f64;
    let residual = floats(common::fixtures::extra(&response, "completeness_residual"));
    for pair in 0..6 {
        let sum: f64 = values[pair * 10..(pair + 1) * 10].iter().map(|&v| v as f64).sum();
        let gap = logits[pair] as f64 - base[pair] as f64;
        // Σφ is about 5e-5 here and the logits about 1e-2: 1e-4 of the logits' size is 1e-6.
        assert!((sum - gap).abs() <= 1e-4 * scale, "pair {pair}: Σφ {sum:e} vs f(x) − base {gap:e}");
        assert!((residual[pair] as f64 - (sum - gap)).abs() <= 1e-6 * scale, "pair {pair}: reported residual");
        assert!(sum.abs() > 1e-6, "pair {pair}: the attributions are not all zero");
    }
    // Row 1's padded positions (mask 0 at 7..10) reach no logit, whatever the background holds
    // there.
    for t in 0..3 {
        assert!(values[(3 + t) * 10 + 7..(3 + t) * 10 + 10].iter().all(|&v| v == 0.0), "{values:?}");
    }
    // The per-dimension values sum to the per-position ones.
    let per_dimension = floats(common::fixtures::extra(&response, "layer_attributions"));
    for (position, chunk) in per_dimension.chunks(32).enumerate() {
        let sum: f32 = chunk.iter().sum();
        assert!((sum - values[position]).abs() <= 1e-6 * scale as f32, "position {position}");
    }
}

/// A vocabulary for the token model: [PAD], [CLS], [SEP], then words, every fifth a WordPiece
/// continuation ("##s7").
fn write_vocabulary(repository: &std::path::Path) {
    let version = repository.join("bert_tiny").join("1");
    let words: Vec<String> = (0..100)
        .map(|id| match id {
            0 => "[PAD]".to_string(),
            1 => "[CLS]".to_string(),
            2 => "[SEP]".to_string(),
            id if id % 5 == 0 => format!("##s{id}"),
            id => format!("word{id}"),
        })
        .collect();
    std::fs::write(version.join("vocab.txt"), words.join("\n") + "\n").unwrap();
    std::fs::write(
        version.join("config.toml"),
        "labels = [\"negative\", \"neutral\", \"positive\"]\nvocabulary = \"vocab.txt\"\n",
    )
    .unwrap();
}

/// Width and height of a PNG.
fn png_size(bytes: &[u8]) -> (u32, u32) {
    let reader = png::Decoder::new(std::io::Cursor::new(bytes)).read_info().unwrap();
    (reader.info().width, reader.info().height)
}

#[tokio::test]
async fn token_attributions_come_back_as_a_text_figure() {
    let repository = case_repository(TOKENS, &["bert_tiny".to_string()]);
    write_vocabulary(repository.path());
    let server = TestServer::start_on(repository.path(), 0).await;
    let mut client = server.explainer().await;
    let plot = |tokens: Vec<Vec<&str>>| proto::PlotOptions {
        png: true,
        tokens: tokens
            .into_iter()
            .map(|row| proto::TokenStrings { tokens: row.into_iter().map(str::to_string).collect() })
            .collect(),
        merge_wordpieces: true,
        ..Default::default()
    };
    // Tokens from the model's vocabulary: one panel per input row and class.
    let mut request = token_request("occlusion", 0..2, &[("window", integers(&[1])), ("baseline", number(0.0))]);
    request.plot = Some(plot(vec![]));
    let response = client.explain(request.clone()).await.unwrap().into_inner();
    let (width, height) = png_size(&response.plot_png);
    assert!((300..=1032).contains(&width) && height > 6 * 40, "{width} x {height}");
    // Tokens from the request instead; a long sequence of long tokens wraps onto more lines.
    let long: Vec<&str> = vec!["an-extraordinarily-long-token"; 10];
    request.plot = Some(plot(vec![long.clone(), long]));
    let response = client.explain(request.clone()).await.unwrap().into_inner();
    let (_, taller) = png_size(&response.plot_png);
    assert!(taller > height, "{taller} vs {height}");

    // Refusals before any explaining: the wrong number of token rows, a layout for floats.
    request.plot = Some(plot(vec![vec!["[CLS]"]]));
    let err = client.explain(request.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "plot.tokens: 1 rows for 2 inputs");
    request.plot = Some(proto::PlotOptions { png: true, kind: "bars".into(), ..Default::default() });
    let err = client.explain(request).await.unwrap_err();
    assert!(err.message().starts_with("plot.kind: input \"input_ids\" holds token ids"), "{}", err.message());
}

#[tokio::test]
async fn a_text_figure_needs_token_strings() {
    let (server, _dirs) = server().await;
    let mut request = token_request("occlusion", 0..1, &[("window", integers(&[1]))]);
    request.plot = Some(proto::PlotOptions { png: true, ..Default::default() });
    let err = server.explainer().await.explain(request).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().starts_with("plot.tokens: give the token strings"), "{}", err.message());
}

#[tokio::test]
async fn the_use_case_runs_without_grpc_and_agrees_with_it() {
    let (server, _dirs) = server().await;
    let model = server.state.repository.get("bert_tiny", "").unwrap();
    let ids = |file: &str| {
        let values = bert(file);
        explaind_runtime::Tensor::Int64(values.mapv(|v| v as i64))
    };
    let request = explaind_host::ExplainRequest {
        model,
        explainer: server.state.host.explainer("occlusion").unwrap(),
        inputs: vec![ids("input_ids.npy"), ids("attention_mask.npy")],
        explained_inputs: vec![true, false],
        output: String::new(),
        targets: explaind_host::TargetSelection::All,
        params: [("window".to_string(), explaind_host::ParamValue::Integers(vec![1]))].into(),
        background: explaind_host::BackgroundSource::ModelDefault,
        cancel: Default::default(),
        evaluate: Vec::new(),
        evaluation_seed: None,
    };
    let host = server.state.host.clone();
    let outcome = tokio::task::spawn_blocking(move || host.explain(request)).await.unwrap().unwrap();
    assert_eq!(outcome.attributions.len(), 1, "the mask is held, not explained");
    let (index, values) = &outcome.attributions[0];
    assert_eq!((*index, values.shape()), (0, &[2, 3, 10][..]));
    let over_grpc = token_request("occlusion", 0..2, &[("window", integers(&[1])), ("baseline", number(0.0))]);
    let response = server.explainer().await.explain(over_grpc).await.unwrap().into_inner();
    assert_eq!(values.iter().copied().collect::<Vec<f32>>(), floats(response.attributions[0].values.as_ref().unwrap()));

    // An unknown explainer or output is refused by the use case itself.
    let err = server.state.host.explainer("nope").unwrap_err();
    assert_eq!(err.code, explaind_abi::EXD_NOT_FOUND);
    assert!(err.message.starts_with("explainer: no explainer named \"nope\" (loaded: "), "{}", err.message);
}

/// A committed `.npy` file as a request tensor of `element_type`, its bytes as they are (NumPy
/// writes little-endian, C order): exact for every type.
fn raw_npy(relative: &str, element_type: proto::ElementType) -> proto::Tensor {
    let bytes = std::fs::read(repo_root().join(relative)).unwrap();
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + header_len]).unwrap();
    let shape_text = header.split("'shape': (").nth(1).unwrap().split(')').next().unwrap();
    let shape = shape_text.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| s.parse().unwrap()).collect();
    proto::Tensor { element_type: element_type as i32, shape, data: bytes[10 + header_len..].to_vec(), ..Default::default() }
}

#[tokio::test]
async fn inputs_of_every_type_reach_the_model_as_declared() {
    use proto::ElementType as E;
    let repository = case_repository("tests/data/dtypes", &["mixed".to_string()]);
    let server = TestServer::start_on(repository.path(), 0).await;
    let dir = "tests/data/dtypes/mixed";
    let types = [("x", E::Double), ("codes", E::Int32), ("mask", E::Bool), ("scale", E::Float16), ("level", E::Uint8)];
    let inputs: Vec<proto::NamedTensor> = types
        .iter()
        .map(|(name, t)| proto::NamedTensor { name: name.to_string(), tensor: Some(raw_npy(&format!("{dir}/{name}.npy"), *t)) })
        .collect();
    let metadata = server.models().await.get_model(proto::GetModelRequest { model: model("mixed") }).await.unwrap().into_inner();
    let declared: Vec<(String, i32)> = metadata.inputs.iter().map(|i| (i.name.clone(), i.element_type)).collect();
    assert_eq!(declared, types.iter().map(|(n, t)| (n.to_string(), *t as i32)).collect::<Vec<_>>());

    let response = server
        .models()
        .await
        .predict(proto::PredictRequest { model: model("mixed"), inputs: inputs.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_close(
        &floats(response.outputs[0].tensor.as_ref().unwrap()),
        read_npy(&format!("{dir}/y.npy")).as_slice().unwrap(),
        1e-6,
        1e-6,
    );

    // Occlusion over the int32 codes, the double, bool, float16 and uint8 inputs held.
    let request = proto::ExplainRequest {
        model: model("mixed"),
        explainer: "occlusion".into(),
        inputs: inputs.clone(),
        targets: all(),
        parameters: [("window".to_string(), integers(&[1])), ("baseline".to_string(), number(0.0))].into(),
        explained_inputs: vec!["codes".into()],
        ..Default::default()
    };
    let response = server.explainer().await.explain(request).await.unwrap().into_inner();
    assert_eq!(response.attributions[0].input_name, "codes");
    let expected = read_npy(&format!("{dir}/occlusion.npy"));
    assert_close(&floats(response.attributions[0].values.as_ref().unwrap()), expected.as_slice().unwrap(), 1e-6, 1e-5);

    // A bool byte that is neither 0 nor 1, and a float16 infinity, are refused naming the element.
    let mut bad = inputs.clone();
    bad[2].tensor.as_mut().unwrap().data[1] = 2;
    let err = server.models().await.predict(proto::PredictRequest { model: model("mixed"), inputs: bad }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "inputs[2].tensor.data: element 1 is the byte 2; a bool is 0 or 1");
    let mut bad = inputs;
    bad[3].tensor.as_mut().unwrap().data[..2].copy_from_slice(&0x7c00u16.to_le_bytes());
    let err = server.models().await.predict(proto::PredictRequest { model: model("mixed"), inputs: bad }).await.unwrap_err();
    assert_eq!(err.message(), "inputs[3].tensor.data: element 0 is inf; inputs must be finite");
}

#[tokio::test]
async fn faithfulness_metrics_on_token_ids_replace_them_and_refuse_noise() {
    let (server, _dirs) = server().await;
    let mut client = server.explainer().await;
    let metric = |name: &str, parameters: &[(&str, proto::ParamValue)]| proto::MetricRequest {
        name: name.into(),
        parameters: parameters.iter().map(|(k, v)| (k.to_string(), v.clone())).collect(),
    };
    // Deletion over token positions: ids replaced by [PAD] (0) in the order of |φ|, the mask
    // held at each row's values.
    let integer = |v: i64| proto::ParamValue { kind: Some(Kind::Integer(v)) };
    let request = proto::ExplainRequest {
        evaluate: vec![metric("deletion", &[("steps", integer(2)), ("baseline", number(0.0))])],
        ..token_request("occlusion", 0..2, &[("window", integers(&[1]))])
    };
    let response = client.explain(request).await.unwrap().into_inner();
    let phi = floats(response.attributions[0].values.as_ref().unwrap());
    let curve = response.evaluation[0].extras.iter().find(|e| e.name == "curve").unwrap().tensor.as_ref().unwrap();
    assert_eq!(curve.shape, vec![2, 3, 3]);
    let curve = floats(curve);
    let (ids, mask) = (bert("input_ids.npy"), bert("attention_mask.npy"));
    let mut models = server.models().await;
    for n in 0..2 {
        for t in 0..3 {
            let row: Vec<f32> = (0..10).map(|i| phi[(n * 3 + t) * 10 + i]).collect();
            let mut order: Vec<usize> = (0..10).collect();
            order.sort_by(|&a, &b| row[b].abs().total_cmp(&row[a].abs()));
            for k in 0..3 {
                let mut removed = rows(&ids, n..n + 1);
                // Step k of `steps` moves round(k·F/steps) positions, as the metric defines.
                let (features, steps) = (10, 2);
                for &i in &order[..(k * features + steps / 2) / steps] {
                    removed[[0, i]] = 0.0;
                }
                let logits = models
                    .predict(proto::PredictRequest {
                        model: model("bert_tiny"),
                        inputs: vec![int64("input_ids", &removed), int64("attention_mask", &rows(&mask, n..n + 1))],
                    })
                    .await
                    .unwrap()
                    .into_inner();
                let expected = floats(logits.outputs[0].tensor.as_ref().unwrap())[t];
                let got = curve[(n * 3 + t) * 3 + k];
                assert!((got - expected).abs() < 1e-5, "row {n}, target {t}, step {k}: {got} vs {expected}");
            }
        }
    }
    // A baseline that is no id, and noise on ids, are refused naming the metric.
    let request = proto::ExplainRequest {
        evaluate: vec![metric("deletion", &[("baseline", number(0.5))])],
        ..token_request("occlusion", 0..1, &[("window", integers(&[1]))])
    };
    let status = client.explain(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with("evaluate.deletion.baseline: 0.5 is not a value of input input_ids (int64)"),
        "{}",
        status.message()
    );
    let request = proto::ExplainRequest {
        evaluate: vec![metric("infidelity", &[])],
        model: model("int_tabular"),
        explainer: "occlusion".into(),
        inputs: vec![int64("codes", &tabular("x.npy"))],
        output: "probabilities".into(),
        parameters: [("window".to_string(), integers(&[1]))].into(),
        ..Default::default()
    };
    let status = client.explain(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(
        status.message().starts_with("evaluate.infidelity: adds noise to the input, and codes is int64"),
        "{}",
        status.message()
    );
}
