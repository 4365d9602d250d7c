//! The lowering pass: each lowered operator's primitives compute what ONNX Runtime's own
//! kernel of the operator computes (the independent reference for the rewrite's semantics),
//! and a graph with several operators without a rule is refused naming them all.

mod common;

use common::*;
use explaind_graph::lower::lower;
use explaind_graph::{CompileError, DeepLiftRequest, GradientRequest, UnsupportedNode, compile_deeplift, compile_gradient};
use explaind_onnx::{AttributeProto, GraphBuilder, ModelProto, tensor_f32, tensor_i64};

/// Runs the single-operator model and its lowered form on the same inputs (scaled by
/// `spread`, so saturating operators are seen saturating) and compares their outputs to 1e-5.
fn check_lowering(m: &ModelProto, op: &str, shapes: &[&[usize]], spread: f32) {
    let lowered = lower(m).unwrap().expect("the model has an operator to lower");
    let nodes = &lowered.graph.as_ref().unwrap().node;
    assert!(nodes.iter().all(|n| n.op_type() != op), "{op} is still in the lowered graph");
    let names: std::collections::HashSet<&str> = nodes.iter().map(|n| n.name()).collect();
    assert_eq!(names.len(), nodes.len(), "node names are unique");
    let dir = tempfile::tempdir().unwrap();
    let original = load(m, &dir, "original");
    let rewritten = load(&lowered, &dir, "lowered");
    let inputs: Vec<_> = shapes.iter().enumerate().map(|(i, s)| array(s, 40 + i as u64, 0.0) * spread).collect();
    let views: Vec<_> = inputs.iter().map(|a| a.view()).collect();
    let want = original.run(&views).unwrap().0;
    let got = rewritten.run(&views).unwrap().0;
    assert_eq!(want.len(), got.len());
    for (w, g) in want.iter().zip(&got) {
        assert_eq!(w.shape(), g.shape());
        for (a, b) in w.iter().zip(g.iter()) {
            assert!((a - b).abs() <= 1e-5 * a.abs().max(1.0), "{op}: ONNX Runtime {a}, lowered {b}");
        }
    }
}

#[test]
fn hard_sigmoid_and_hard_swish_match_onnx_runtime() {
    for attrs in [vec![], vec![AttributeProto::float("alpha", 0.3), AttributeProto::float("beta", 0.4)]] {
        let m = model(&[&[3, 5]], |b, x| b.add_node("HardSigmoid", &[&x[0]], attrs));
        check_lowering(&m, "HardSigmoid", &[&[3, 5]], 6.0);
    }
    let m = model(&[&[3, 5]], |b, x| b.add_node("HardSwish", &[&x[0]], vec![]));
    check_lowering(&m, "HardSwish", &[&[3, 5]], 5.0);
}

/// LayerNormalization on x [2, 3, 4] with a constant scale (and bias), over `axis`.
pub fn layer_norm_model(axis: i64, bias: bool, opset: i64) -> ModelProto {
    let m = model(&[&[2, 3, 4]], |b, x| {
        let normalised: &[i64] = if axis == 1 || axis == -2 { &[3, 4] } else { &[4] };
        let scale = constant(b, normalised, 5);
        let mut inputs = vec![x[0].clone(), scale];
        if bias {
            inputs.push(constant(b, normalised, 6));
        }
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        b.add_node("LayerNormalization", &refs, vec![AttributeProto::int("axis", axis)])
    });
    at_opset(m, opset)
}

#[test]
fn layer_normalization_matches_onnx_runtime() {
    for opset in [17, 18] {
        for axis in [-1, 1, -2, 2] {
            for bias in [false, true] {
                check_lowering(&layer_norm_model(axis, bias, opset), "LayerNormalization", &[&[2, 3, 4]], 3.0);
                // A non-negative axis on an input whose rank the file does not tell.
                if axis >= 0 {
                    let m = without_input_shapes(layer_norm_model(axis, bias, opset));
                    let lowered = lower(&m).unwrap().unwrap();
                    let reshapes = lowered.graph.as_ref().unwrap().node.iter().filter(|n| n.op_type() == "Reshape").count();
                    assert_eq!(reshapes, 2, "normalised as a view of its leading axes and the rest");
                    check_lowering(&m, "LayerNormalization", &[&[2, 3, 4]], 3.0);
                }
            }
        }
    }
}

#[test]
fn gelu_matches_onnx_runtime() {
    for approximate in ["none", "tanh"] {
        let m = at_opset(
            model(&[&[4, 6]], |b, x| b.add_node("Gelu", &[&x[0]], vec![AttributeProto::string("approximate", approximate)])),
            20,
        );
        check_lowering(&m, "Gelu", &[&[4, 6]], 4.0);
    }
}

#[test]
fn layer_normalization_with_its_statistics_read_is_refused_on_the_gradient_path_only() {
    // y = tanh(a) + (LayerNormalization(b) + its Mean): the statistics are read, and the
    // lowering keeps that node as it is.
    let mut g = GraphBuilder::new("stats");
    for input in ["a", "b"] {
        g.add_input(input, explaind_onnx::proto::tensor_proto::DataType::Float, dims(&[2, 4]));
    }
    let scale = g.add_initializer(tensor_f32("scale", &[4], &[1.0; 4]));
    let outs = g.add_node_multi("LayerNormalization", &["b", &scale], 2, vec![]);
    let stats = g.add_node("Add", &[&outs[0], &outs[1]], vec![]);
    let t = g.add_node("Tanh", &["a"], vec![]);
    let y = g.add_node("Add", &[&t, &stats], vec![]);
    g.add_output(&y, dims(&[2, 4]));
    let m = ModelProto::new(g.finish(), &[("", 17)]);
    assert!(matches!(lower(&m), Err(CompileError::UnsupportedForm { .. })));

    // With respect to a: the node is off the path, and the model compiles and runs.
    let request = GradientRequest { outputs: vec![y.clone()], wrt: vec!["a".into()], expose: vec![] };
    let compiled = compile_gradient(&m, &request).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (array(&[2, 4], 1, 0.0), array(&[2, 4], 2, 0.0));
    let seed = array(&[2, 4], 3, 0.0);
    let results = load(&compiled.model, &dir, "off_path").run(&[a.view(), b.view(), seed.view()]).unwrap().0;
    for ((grad, a), s) in results[1].iter().zip(a.iter()).zip(seed.iter()) {
        assert!((grad - s * (1.0 - a.tanh().powi(2))).abs() <= 1e-5);
    }
    compile_deeplift(&m, &DeepLiftRequest { output: y.clone(), inputs: vec!["a".into()] }).unwrap();

    // With respect to b: refused, saying why.
    let request = GradientRequest { outputs: vec![y.clone()], wrt: vec!["b".into()], expose: vec![] };
    for err in [
        compile_gradient(&m, &request).unwrap_err(),
        compile_deeplift(&m, &DeepLiftRequest { output: y, inputs: vec!["b".into()] }).unwrap_err(),
    ] {
        match err {
            CompileError::UnsupportedForm { op_type, reason, .. } => {
                assert_eq!(op_type, "LayerNormalization");
                assert!(reason.contains("Mean"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn every_operator_without_a_rule_is_named_at_once() {
    // x → Mish → Flatten → TopK → Atan: three operators without a rule on the gradient path.
    let mut b = GraphBuilder::new("many");
    b.add_input("x", explaind_onnx::proto::tensor_proto::DataType::Float, dims(&[1, 1, 4, 4]));
    let up = b.add_node("Mish", &["x"], vec![]);
    let flat = b.add_node("Flatten", &[&up], vec![]);
    let k = b.add_initializer(tensor_i64("k", &[1], &[3]));
    let top = b.add_node_multi("TopK", &[&flat, &k], 2, vec![]);
    let s = b.add_node("Atan", &[&top[0]], vec![]);
    b.add_output(&s, dims(&[1, 3]));
    let m = ModelProto::new(b.finish(), &[("", 17)]);
    let want = CompileError::UnsupportedOps(vec![
        UnsupportedNode { op_type: "Mish".into(), node: "Mish".into() },
        UnsupportedNode { op_type: "TopK".into(), node: "TopK".into() },
        UnsupportedNode { op_type: "Atan".into(), node: "Atan".into() },
    ]);
    let request = GradientRequest { outputs: vec![s.clone()], wrt: vec!["x".into()], expose: vec![] };
    let err = compile_gradient(&m, &request).unwrap_err();
    assert_eq!(err, want);
    assert_eq!(
        err.to_string(),
        "operators without a gradient rule: Mish (node \"Mish\"), TopK (node \"TopK\"), Atan (node \"Atan\")"
    );
    let err = compile_deeplift(&m, &DeepLiftRequest { output: s, inputs: vec!["x".into()] }).unwrap_err();
    assert_eq!(err, want);
}

#[test]
fn lowered_names_never_collide_with_the_graphs_own() {
    // The graph already uses the names the lowering would choose first (node, value and
    // constant names derived from the node's), and a second LayerNormalization of the same
    // name prefix follows: everything added is fresh, and the model still runs as before.
    let m = model(&[&[2, 4]], |b, x| {
        let taken = b.add_initializer(tensor_f32("LayerNormalization__const", &[], &[2.0]));
        let x = b.add_node("Mul", &[&x[0], &taken], vec![]);
        let scale = constant(b, &[4], 7);
        let first = b.add_node("LayerNormalization", &[&x, &scale], vec![]);
        let clash = b.push_node(explaind_onnx::NodeProto {
            input: vec![first],
            output: vec!["LayerNormalization__Sub".into()],
            name: Some("LayerNormalization__Sub".into()),
            op_type: Some("Tanh".into()),
            ..Default::default()
        });
        let second = b.add_node("LayerNormalization", &[&clash[0], &scale], vec![]);
        b.add_node("HardSwish", &[&second], vec![])
    });
    let lowered = lower(&m).unwrap().unwrap();
    let graph = lowered.graph.as_ref().unwrap();
    let mut written: Vec<&str> = graph.node.iter().flat_map(|n| n.output.iter().map(String::as_str)).collect();
    written.extend(graph.initializer.iter().map(|t| t.name()));
    written.extend(graph.input.iter().map(|i| i.name()));
    let distinct: std::collections::HashSet<&str> = written.iter().copied().collect();
    assert_eq!(distinct.len(), written.len(), "a value is written twice: {written:?}");
    check_lowering(&m, "LayerNormalization", &[&[2, 4]], 3.0);
}

#[test]
fn every_operator_has_one_rule_and_lowered_ones_have_none() {
    use explaind_graph::rules::rule_for;
    for op in ["Relu", "Clip", "MatMul", "Gemm", "Conv", "MaxPool", "Softmax", "Concat", "Gather", "ReduceMean", "Constant"] {
        assert!(rule_for(op).is_some(), "{op} has no rule");
    }
    for op in ["HardSigmoid", "HardSwish", "LayerNormalization", "Gelu"] {
        assert!(explaind_graph::lower::is_lowered(op));
        assert!(rule_for(op).is_none(), "{op} is lowered and has a rule too");
    }
    assert!(rule_for("Resize").is_some());
}

#[test]
fn sum_square_and_l2_reductions_match_onnx_runtime() {
    for op in ["ReduceSumSquare", "ReduceL2"] {
        for opset in [13, 17, 18] {
            for (axes, keepdims) in [(Some(vec![1i64, -1]), 0), (Some(vec![0]), 1), (None, 1), (None, 0)] {
                let m = at_opset(
                    model(&[&[2, 3, 4]], |b, x| {
                        let mut attrs = vec![AttributeProto::int("keepdims", keepdims)];
                        let mut inputs = vec![x[0].clone()];
                        match &axes {
                            Some(axes) if opset >= 18 => {
                                inputs.push(b.add_initializer(tensor_i64("axes", &[axes.len() as i64], axes)))
                            }
                            Some(axes) => attrs.push(AttributeProto::ints("axes", axes.clone())),
                            None => {}
                        }
                        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                        b.add_node(op, &refs, attrs)
                    }),
                    opset,
                );
                check_lowering(&m, op, &[&[2, 3, 4]], 3.0);
            }
        }
    }
}

/// The interpolation matrices the `Resize` rule transposes, applied forwards (`A · x · Bᵀ` per
/// plane), equal ONNX Runtime's own Resize, and the compiled gradient model keeps its output.
#[test]
fn resize_interpolation_matrices_match_onnx_runtime() {
    use explaind_graph::rules::resize::interpolation;
    let (h, w) = (3usize, 4usize);
    // (opset, mode, coordinate mode, nearest mode, output size, scales or else sizes)
    type Case = (i64, &'static str, &'static str, &'static str, [usize; 2], Option<[f32; 2]>);
    let cases: &[Case] = &[
        (13, "nearest", "asymmetric", "floor", [6, 8], Some([2.0, 2.0])),
        (13, "nearest", "half_pixel", "round_prefer_floor", [5, 7], None),
        (13, "nearest", "half_pixel", "round_prefer_ceil", [4, 10], Some([1.5, 2.5])),
        (13, "linear", "half_pixel", "", [6, 8], Some([2.0, 2.0])),
        (13, "linear", "half_pixel", "", [4, 10], Some([1.5, 2.5])),
        (13, "linear", "pytorch_half_pixel", "", [5, 7], None),
        (13, "linear", "align_corners", "", [5, 7], None),
        (13, "linear", "asymmetric", "", [5, 7], None),
        (18, "linear", "half_pixel", "", [5, 7], None),
        (19, "linear", "half_pixel_symmetric", "", [5, 7], None),
        (19, "linear", "half_pixel_symmetric", "", [6, 8], Some([2.0, 2.0])),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (k, &(opset, mode, transform, nearest, [oh, ow], scales)) in cases.iter().enumerate() {
        let m = at_opset(
            model(&[&[1, 2, h, w]], |b, x| {
                let mut attrs = vec![
                    AttributeProto::string("mode", mode),
                    AttributeProto::string("coordinate_transformation_mode", transform),
                ];
                if !nearest.is_empty() {
                    attrs.push(AttributeProto::string("nearest_mode", nearest));
                }
                let inputs = match scales {
                    Some([sh, sw]) => {
                        vec![x[0].clone(), String::new(), b.add_initializer(tensor_f32("scales", &[4], &[1.0, 1.0, sh, sw]))]
                    }
                    None => {
                        let sizes = tensor_i64("sizes", &[4], &[1, 2, oh as i64, ow as i64]);
                        vec![x[0].clone(), String::new(), String::new(), b.add_initializer(sizes)]
                    }
                };
                let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                b.add_node("Resize", &refs, attrs)
            }),
            opset,
        );
        let [sh, sw] = scales.unwrap_or([oh as f32 / h as f32, ow as f32 / w as f32]);
        let a = interpolation(mode, transform, nearest, h as i64, oh as i64, sh);
        let bm = interpolation(mode, transform, nearest, w as i64, ow as i64, sw);
        let x = array(&[1, 2, h, w], 70 + k as u64, 0.0);
        let original = load(&m, &dir, &format!("resize{k}"));
        let want = original.run(&[x.view()]).unwrap().0.swap_remove(0);
        assert_eq!(want.shape(), &[1, 2, oh, ow], "case {k}");
        let request = GradientRequest { outputs: vec![output_name(&m)], wrt: vec!["x0".into()], expose: vec![] };
        let compiled = load(&compile_gradient(&m, &request).unwrap().model, &dir, &format!("compiled{k}"));
        let seed = array(&[1, 2, oh, ow], 80, 0.0);
        let kept = compiled.run(&[x.view(), seed.view()]).unwrap().0.swap_remove(0);
        assert_eq!(kept, want, "case {k}: the compiled model's output");
        let xs = x.as_slice().unwrap();
        for c in 0..2 {
            for i in 0..oh {
                for j in 0..ow {
                    let mut value = 0f64;
                    for p in 0..h {
                        for q in 0..w {
                            value += (a[i * h + p] * bm[j * w + q]) as f64 * xs[(c * h + p) * w + q] as f64;
                        }
                    }
                    let got = want[[0, c, i, j]] as f64;
                    assert!(
                        (value - got).abs() < 1e-5,
                        "case {k} ({mode} {transform}): [{c}, {i}, {j}] ONNX Runtime {got}, matrices {value}"
                    );
                }
            }
        }
    }
}
