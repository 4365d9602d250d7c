//! The Deep SHAP fixture cases (`tests/data/deepshap/<case>`, made by
//! `scripts/fixtures/make_deepshap_fixtures.py`): their models as a repository, their inputs, and explain
//! requests for them. The gradient fixtures (`tests/data/gradients`) are for the same cases.

use super::{model, named, read_npy, repo_root};
use explaind::proto;
use std::collections::HashMap;

/// A model repository holding the fixture cases' models (`tests/data/deepshap/<case>`).
pub fn fixture_repository() -> tempfile::TempDir {
    case_repository("tests/data/deepshap", &case_names("tests/data/deepshap"))
}

/// The case directories under `data` (a path from the repository root), sorted.
pub fn case_names(data: &str) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(repo_root().join(data)).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    names
}

/// A model repository holding `data/<case>/model.onnx` of each case as the model `<case>`,
/// version 1.
pub fn case_repository(data: &str, cases: &[String]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for case in cases {
        let version = dir.path().join(case).join("1");
        std::fs::create_dir_all(&version).unwrap();
        std::fs::copy(repo_root().join(data).join(case).join("model.onnx"), version.join("model.onnx")).unwrap();
    }
    dir
}

pub struct Case {
    pub name: String,
    pub meta: serde_json::Value,
    pub x: ndarray::ArrayD<f32>,
    pub background: ndarray::ArrayD<f32>,
}

pub fn case(name: &str) -> Case {
    let dir = format!("tests/data/deepshap/{name}");
    let meta = serde_json::from_str(&std::fs::read_to_string(repo_root().join(&dir).join("meta.json")).unwrap()).unwrap();
    Case { name: name.into(), meta, x: read_npy(&format!("{dir}/x.npy")), background: read_npy(&format!("{dir}/background.npy")) }
}

pub fn explain_request(c: &Case, explainer: &str, targets: Option<proto::Targets>) -> proto::ExplainRequest {
    let input = c.meta["input_name"].as_str().unwrap();
    proto::ExplainRequest {
        model: model(&c.name),
        explainer: explainer.into(),
        inputs: vec![named(input, &c.x)],
        targets,
        output: c.meta["output_name"].as_str().unwrap().into(),
        parameters: HashMap::new(),
        background: vec![named(input, &c.background)],
        background_id: String::new(),
        plot: None,
        explained_inputs: Vec::new(),
        evaluate: Vec::new(),
        evaluation_seed: 0,
    }
}

pub fn all_targets() -> Option<proto::Targets> {
    Some(proto::Targets { selection: Some(proto::targets::Selection::All(proto::AllOutputs {})) })
}

pub fn extra<'a>(response: &'a proto::ExplainResponse, name: &str) -> &'a proto::Tensor {
    response.extras.iter().find(|e| e.name == name).and_then(|e| e.tensor.as_ref()).unwrap()
}
