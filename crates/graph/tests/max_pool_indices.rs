//! `rules::max_pool_indices`, the max-pool argmax that every execution provider computes alike,
//! against ONNX Runtime's CPU MaxPool `Indices` (row-major first maximum on ties) on inputs full
//! of ties, for every window form the compiler accepts, and against a hand-worked window.

mod common;

use common::*;
use explaind_graph::rules::max_pool_indices;
use explaind_onnx::proto::tensor_proto::DataType;
use explaind_onnx::{AttributeProto, GraphBuilder, ModelProto, NodeProto};
use ndarray::{ArrayD, IxDyn};

fn pool(attributes: Vec<AttributeProto>) -> NodeProto {
    NodeProto { op_type: Some("MaxPool".into()), attribute: attributes, ..Default::default() }
}

fn as_float(b: &mut GraphBuilder, indices: &str) -> String {
    b.add_node("Cast", &[indices], vec![AttributeProto::int("to", DataType::Float as i64)])
}

/// Runs `ours − MaxPool's Indices` (as floats) on `x`, or `ours` alone.
fn run(node: &NodeProto, x: &ArrayD<f32>, against_max_pool: bool) -> Vec<f32> {
    let shape: Vec<usize> = x.shape().to_vec();
    let spatial = [shape[2] as i64, shape[3] as i64];
    let m: ModelProto = model(&[&shape], |b, names| {
        let maxima = b.add_node("MaxPool", &[&names[0]], node.attribute.clone());
        let ours = max_pool_indices(b, node, &names[0], &maxima, Some(&spatial)).unwrap();
        let ours = as_float(b, &ours);
        if !against_max_pool {
            return ours;
        }
        let attrs = node.attribute.clone();
        let theirs = b.add_node_multi("MaxPool", &[&names[0]], 2, attrs).swap_remove(1);
        let theirs = as_float(b, &theirs);
        b.add_node("Sub", &[&ours, &theirs], vec![])
    });
    let graph = m.graph.as_ref().unwrap();
    assert!(
        !against_max_pool || graph.node.iter().filter(|n| n.op_type() == "MaxPool" && n.output.len() == 2).count() == 1,
        "the construction itself reads no MaxPool indices"
    );
    let dir = tempfile::tempdir().unwrap();
    let (outputs, _) = load(&m, &dir, "indices").run(&[x.view()]).unwrap();
    outputs[0].iter().copied().collect()
}

#[test]
fn indices_equal_onnx_runtime_cpu_maxpool_on_inputs_full_of_ties() {
    let forms: Vec<(&str, Vec<AttributeProto>, [usize; 2])> = vec![
        ("2x2 tiling", vec![AttributeProto::ints("kernel_shape", [2, 2]), AttributeProto::ints("strides", [2, 2])], [8, 8]),
        (
            "2x2 tiling with a margin",
            vec![AttributeProto::ints("kernel_shape", [2, 2]), AttributeProto::ints("strides", [2, 2])],
            [7, 9],
        ),
        (
            "3x3 stride 2 padded",
            vec![
                AttributeProto::ints("kernel_shape", [3, 3]),
                AttributeProto::ints("strides", [2, 2]),
                AttributeProto::ints("pads", [1, 1, 1, 1]),
            ],
            [8, 8],
        ),
        ("3x3 stride 1 (overlapping)", vec![AttributeProto::ints("kernel_shape", [3, 3])], [6, 7]),
        (
            "asymmetric pads, 2x3 kernel, strides 1x2",
            vec![
                AttributeProto::ints("kernel_shape", [2, 3]),
                AttributeProto::ints("strides", [1, 2]),
                AttributeProto::ints("pads", [0, 1, 1, 0]),
            ],
            [6, 8],
        ),
        ("dilated", vec![AttributeProto::ints("kernel_shape", [2, 2]), AttributeProto::ints("dilations", [2, 2])], [7, 7]),
        (
            "ceil mode",
            vec![
                AttributeProto::ints("kernel_shape", [3, 3]),
                AttributeProto::ints("strides", [2, 2]),
                AttributeProto::int("ceil_mode", 1),
            ],
            [8, 8],
        ),
    ];
    for (name, attributes, [h, w]) in forms {
        // Three levels only, so most windows hold their maximum more than once.
        let x = array(&[3, 2, h, w], 7, 0.0).mapv(|v| (v * 1.5).round());
        let differences = run(&pool(attributes), &x, true);
        assert!(!differences.is_empty(), "{name}");
        assert!(differences.iter().all(|&d| d == 0.0), "{name}: {differences:?}");
    }
}

#[test]
fn ties_go_to_the_first_maximum_in_row_major_order() {
    // One 2x2 window [[0, 1], [1, 0]] per (row, channel): the maximum is at (0, 1) first in
    // row-major order (flat 1 in its plane) and at (1, 0) first in column-major order (flat 2).
    let window = [0f32, 1.0, 1.0, 0.0];
    let x = ArrayD::from_shape_fn(IxDyn(&[2, 3, 2, 2]), |i| window[i[2] * 2 + i[3]]);
    let attributes = vec![AttributeProto::ints("kernel_shape", [2, 2]), AttributeProto::ints("strides", [2, 2])];
    let indices = run(&pool(attributes), &x, false);
    let expected: Vec<f32> = (0..6).map(|plane| (plane * 4 + 1) as f32).collect();
    assert_eq!(indices, expected);
}

/// Gradients and DeepLIFT multipliers compiled with the CPU kernel's own indices
/// (`MaxPoolIndices::CpuKernel`) equal the portable construction's exactly, ties included, on
/// overlapping and tiling windows; and only the portable graphs build the windows.
#[test]
fn compiling_with_the_cpu_kernels_indices_changes_nothing_on_the_cpu() {
    use explaind_graph::{DeepLiftRequest, GradientRequest, MaxPoolIndices, compile_deeplift, compile_gradient};
    let dir = tempfile::tempdir().unwrap();
    // Stride-2 windows of 3 with padding (ResNet's stem), then 2×2 tiling windows.
    let m = model(&[&[1, 2, 8, 8]], |b, x| {
        let stem = vec![
            AttributeProto::ints("kernel_shape", [3, 3]),
            AttributeProto::ints("strides", [2, 2]),
            AttributeProto::ints("pads", [1, 1, 1, 1]),
        ];
        let y = b.add_node("MaxPool", &[&x[0]], stem);
        let tiled = vec![AttributeProto::ints("kernel_shape", [2, 2]), AttributeProto::ints("strides", [2, 2])];
        b.add_node("MaxPool", &[&y], tiled)
    });
    let output = output_name(&m);
    // Values in steps of 0.5: most windows hold their maximum more than once.
    let rounded = |seed: u64| array(&[1, 2, 8, 8], seed, 0.0).mapv(|v| (v * 2.0).round() / 2.0);
    let (x, r) = (rounded(170), rounded(171));
    let seed = array(&[1, 2, 2, 2], 172, 0.0);
    let mut results = Vec::new();
    for (i, choice) in [MaxPoolIndices::Portable, MaxPoolIndices::CpuKernel].into_iter().enumerate() {
        let gradient = GradientRequest {
            outputs: vec![output.clone()],
            wrt: vec!["x0".into()],
            max_pool_indices: choice,
            ..Default::default()
        };
        let gradient = compile_gradient(&m, &gradient).unwrap().model;
        let deeplift = DeepLiftRequest { output: output.clone(), inputs: vec!["x0".into()], max_pool_indices: choice };
        let deeplift = compile_deeplift(&m, &deeplift).unwrap().model;
        let builds_windows = |m: &ModelProto| m.graph.as_ref().unwrap().node.iter().any(|n| n.op_type() == "CumSum");
        assert_eq!(builds_windows(&gradient), choice == MaxPoolIndices::Portable, "{choice:?}");
        assert_eq!(builds_windows(&deeplift), choice == MaxPoolIndices::Portable, "{choice:?}");
        let gradient = load(&gradient, &dir, &format!("gradient{i}")).run(&[x.view(), seed.view()]).unwrap().0;
        let deeplift = load(&deeplift, &dir, &format!("deeplift{i}")).run(&[x.view(), r.view(), seed.view()]).unwrap().0;
        results.push((gradient.last().unwrap().clone(), deeplift.last().unwrap().clone()));
    }
    assert!(results[0].0.iter().any(|&g| g != 0.0));
    assert_eq!(results[0], results[1]);
}
