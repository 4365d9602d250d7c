//! A model made with the builder must be one ONNX Runtime loads and runs: that is the only
//! judge of the files the graph compiler will write.
//!
//! Needs the ONNX Runtime library that `scripts/setup/setup.sh` puts at `.ort/libonnxruntime.so`
//! (or `ORT_DYLIB_PATH`); without it the test says so and passes, as `cargo test` on a
//! machine that was never set up should not fail here.

use std::path::PathBuf;

use explaind_onnx::proto::tensor_proto::DataType;
use explaind_onnx::{Dim, GraphBuilder, ModelProto, tensor_f32};
use ort::session::Session;
use ort::value::TensorRef;

fn ort_library() -> Option<PathBuf> {
    let path = std::env::var_os("ORT_DYLIB_PATH")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.ort/libonnxruntime.so"));
    path.is_file().then_some(path)
}

/// y = Relu(x · W + b) with x: [batch, 3], W: [3, 2], b: [2].
fn relu_linear() -> ModelProto {
    let mut b = GraphBuilder::new("relu_linear");
    b.add_input("x", DataType::Float, [Dim::from("batch"), Dim::from(3)]);
    let w = b.add_initializer(tensor_f32("W", &[3, 2], &[1.0, -1.0, 2.0, 0.5, -3.0, 0.0]));
    let bias = b.add_initializer(tensor_f32("b", &[2], &[0.5, -0.25]));
    let xw = b.add_node("MatMul", &["x", &w], vec![]);
    let z = b.add_node("Add", &[&xw, &bias], vec![]);
    let y = b.add_node("Relu", &[&z], vec![]);
    b.add_output(&y, [Dim::from("batch"), Dim::from(2)]);
    let mut model = ModelProto::new(b.finish(), &[("", 17)]);
    model.producer_name = Some("explaind-onnx test".into());
    model
}

#[test]
fn builder_model_runs_in_onnx_runtime() {
    let library = ort_library().expect("no ONNX Runtime library: run scripts/setup/setup.sh or set ORT_DYLIB_PATH");
    let model = relu_linear();
    assert_eq!(model.ir_version, Some(10));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relu_linear.onnx");
    model.save(&path).unwrap();
    assert_eq!(ModelProto::load(&path).unwrap(), model);

    let env = ort::init_from(&library).unwrap().with_name("explaind-onnx-test").build().unwrap();
    let mut session = Session::builder(&env).unwrap().commit_from_file(&path).unwrap();
    assert_eq!(session.inputs().len(), 1);

    let x = [1.0f32, 2.0, 3.0, -1.0, 0.0, 1.0];
    let outputs = session.run(ort::inputs!["x" => TensorRef::from_array_view(([2usize, 3], &x[..])).unwrap()]).unwrap();
    let y_name = model.graph.as_ref().unwrap().output[0].name();
    let (shape, y) = outputs[y_name].try_extract_tensor::<f32>().unwrap();
    assert_eq!(&shape[..], &[2, 2]);
    // Row 1: [1,2,3]·W = [1+4-9, -1+1+0] = [-4, 0]; + b = [-3.5, -0.25]; Relu -> [0, 0].
    // Row 2: [-1,0,1]·W = [-1-3, 1+0] = [-4, 1]; + b = [-3.5, 0.75]; Relu -> [0, 0.75].
    assert_eq!(y, &[0.0, 0.0, 0.0, 0.75]);
}
