//! Shared by the compiler's tests: models built in code, run in the real ONNX Runtime.
#![allow(dead_code)]

use explaind_onnx::proto::tensor_proto::DataType;
use explaind_onnx::{AttributeProto, Dim, GraphBuilder, ModelProto, tensor_f32};
use explaind_runtime::{Model, OrtRuntime, RuntimeOptions};
use ndarray::{ArrayD, IxDyn};

pub fn runtime() -> &'static OrtRuntime {
    let library = explaind_runtime::find_library(None);
    let options = RuntimeOptions { device: explaind_runtime::DeviceChoice::Cpu, intra_threads: 1, ..Default::default() };
    OrtRuntime::init(&library, options).unwrap_or_else(|e| panic!("{e}"))
}

pub fn load(model: &ModelProto, dir: &tempfile::TempDir, name: &str) -> Model {
    let version_dir = dir.path().join(name);
    std::fs::create_dir_all(&version_dir).unwrap();
    model.save(version_dir.join("model.onnx")).unwrap();
    Model::load(runtime(), name, "1", &version_dir).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Deterministic pseudo-random values in [-1, 1), kept at least `gap` away from 0 so that
/// piecewise ops are not probed across their kinks.
pub fn values(count: usize, seed: u64, gap: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..count)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let u = ((state >> 40) as f32) / (1u64 << 24) as f32; // [0, 1)
            let v = u * 2.0 - 1.0;
            if v.abs() < gap { v.signum() * gap + v } else { v }
        })
        .collect()
}

pub fn array(shape: &[usize], seed: u64, gap: f32) -> ArrayD<f32> {
    ArrayD::from_shape_vec(IxDyn(shape), values(shape.iter().product(), seed, gap)).unwrap()
}

pub fn dims(shape: &[usize]) -> Vec<Dim> {
    shape.iter().map(|&d| Dim::from(d as i64)).collect()
}

/// A model with float inputs `x0, x1, ...` of the given shapes and a body built by `body`,
/// whose returned value is the output `y`.
pub fn model(shapes: &[&[usize]], body: impl FnOnce(&mut GraphBuilder, &[String]) -> String) -> ModelProto {
    let mut b = GraphBuilder::new("case");
    let names: Vec<String> = (0..shapes.len()).map(|i| format!("x{i}")).collect();
    for (name, shape) in names.iter().zip(shapes) {
        b.add_input(name, DataType::Float, dims(shape));
    }
    let y = body(&mut b, &names);
    let out = b.add_node("Identity", &[&y], vec![]);
    b.graph_mut().output.push(explaind_onnx::tensor_value_info(out.clone(), DataType::Float, Vec::<Dim>::new()));
    // The declared output shape is a placeholder; clear it so ONNX Runtime does not check it.
    b.graph_mut().output[0].r#type.as_mut().unwrap().value =
        Some(explaind_onnx::proto::type_proto::Value::TensorType(explaind_onnx::proto::type_proto::Tensor {
            elem_type: Some(DataType::Float as i32),
            shape: None,
        }));
    let mut m = ModelProto::new(b.finish(), &[("", 17)]);
    m.graph.as_mut().unwrap().output[0].name = Some(out);
    m
}

pub fn output_name(m: &ModelProto) -> String {
    m.graph.as_ref().unwrap().output[0].name().to_string()
}

pub fn constant(b: &mut GraphBuilder, shape: &[i64], seed: u64) -> String {
    let count = shape.iter().product::<i64>() as usize;
    b.add_initializer(tensor_f32("c", shape, &values(count, seed, 0.0)))
}

/// `m` declared at another default-domain opset.
pub fn at_opset(mut m: ModelProto, opset: i64) -> ModelProto {
    for import in &mut m.opset_import {
        if import.domain().is_empty() || import.domain() == "ai.onnx" {
            import.version = Some(opset);
        }
    }
    m
}

/// `m` with its inputs' shapes (and so their ranks) left undeclared.
pub fn without_input_shapes(mut m: ModelProto) -> ModelProto {
    for input in &mut m.graph.as_mut().unwrap().input {
        if let Some(explaind_onnx::proto::type_proto::Value::TensorType(t)) = input.r#type.as_mut().unwrap().value.as_mut() {
            t.shape = None;
        }
    }
    m
}

/// torch's `F.interpolate(x, size=skip.shape[2:])` added to `skip`, then `Tanh`: x [b, 2, 3, 4],
/// skip = Pad(x) [b, 2, 5, 7], and the Resize's sizes computed at run time from the shapes,
/// `Concat(Shape(x)[0:2], Shape(skip)[2:4])` (or `Shape(skip)[2:4]` with opset 18's `axes`).
/// With `declared`, the file tells the Resize output's shape [b, 2, 5, 7] (value_info); `batch`
/// names or sizes b in the value_info and the input alike.
pub fn resize_to_skip_model(opset: i64, mode: &str, transform: &str, declared: bool, batch: Dim) -> ModelProto {
    let m = model(&[&[1, 2, 3, 4]], |b, x| {
        let x = &x[0];
        let pads = b.add_initializer(explaind_onnx::tensor_i64("pads", &[8], &[0, 0, 1, 1, 0, 0, 1, 2]));
        let skip = b.add_node("Pad", &[x, &pads], vec![]);
        let ints = |b: &mut GraphBuilder, v: i64| b.add_initializer(explaind_onnx::tensor_i64("i", &[1], &[v]));
        let (zero, two, four) = (ints(b, 0), ints(b, 2), ints(b, 4));
        let skip_shape = b.add_node("Shape", &[&skip], vec![]);
        let spatial = b.add_node("Slice", &[&skip_shape, &two, &four], vec![]);
        let mut attrs =
            vec![AttributeProto::string("mode", mode), AttributeProto::string("coordinate_transformation_mode", transform)];
        let sizes = if opset >= 18 {
            attrs.push(AttributeProto::ints("axes", [2, 3]));
            spatial
        } else {
            let x_shape = b.add_node("Shape", &[x], vec![]);
            let leading = b.add_node("Slice", &[&x_shape, &zero, &two], vec![]);
            b.add_node("Concat", &[&leading, &spatial], vec![AttributeProto::int("axis", 0)])
        };
        let y = b.add_node("Resize", &[x, "", "", &sizes], attrs);
        if declared {
            let dims = [batch.clone(), 2.into(), 5.into(), 7.into()];
            b.graph_mut().value_info.push(explaind_onnx::tensor_value_info(y.clone(), DataType::Float, dims));
        }
        let sum = b.add_node("Add", &[&y, &skip], vec![]);
        b.add_node("Tanh", &[&sum], vec![])
    });
    let mut m = at_opset(m, opset);
    if let Some(explaind_onnx::proto::type_proto::Value::TensorType(t)) =
        m.graph.as_mut().unwrap().input[0].r#type.as_mut().unwrap().value.as_mut()
    {
        t.shape.as_mut().unwrap().dim[0] = batch.into();
    }
    m
}
