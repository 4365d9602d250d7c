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
    // Min and Max of three or more inputs become chains of binary Min and Max.
    let rewritten = |n: &&explaind_onnx::NodeProto| n.op_type() != op || (matches!(op, "Min" | "Max") && n.input.len() == 2);
    assert!(nodes.iter().all(|n| rewritten(&n)), "{op} is still in the lowered graph");
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
    let request = GradientRequest { outputs: vec![y.clone()], wrt: vec!["a".into()], expose: vec![], ..Default::default() };
    let compiled = compile_gradient(&m, &request).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (array(&[2, 4], 1, 0.0), array(&[2, 4], 2, 0.0));
    let seed = array(&[2, 4], 3, 0.0);
    let results = load(&compiled.model, &dir, "off_path").run(&[a.view(), b.view(), seed.view()]).unwrap().0;
    for ((grad, a), s) in results[1].iter().zip(a.iter()).zip(seed.iter()) {
        assert!((grad - s * (1.0 - a.tanh().powi(2))).abs() <= 1e-5);
    }
    compile_deeplift(&m, &DeepLiftRequest { output: y.clone(), inputs: vec!["a".into()], ..Default::default() }).unwrap();

    // With respect to b: refused, saying why.
    let request = GradientRequest { outputs: vec![y.clone()], wrt: vec!["b".into()], expose: vec![], ..Default::default() };
    for err in [
        compile_gradient(&m, &request).unwrap_err(),
        compile_deeplift(&m, &DeepLiftRequest { output: y, inputs: vec!["b".into()], ..Default::default() }).unwrap_err(),
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
    // x → Asinh → Flatten → TopK → Atan: three operators without a rule on the gradient path.
    let mut b = GraphBuilder::new("many");
    b.add_input("x", explaind_onnx::proto::tensor_proto::DataType::Float, dims(&[1, 1, 4, 4]));
    let up = b.add_node("Asinh", &["x"], vec![]);
    let flat = b.add_node("Flatten", &[&up], vec![]);
    let k = b.add_initializer(tensor_i64("k", &[1], &[3]));
    let top = b.add_node_multi("TopK", &[&flat, &k], 2, vec![]);
    let s = b.add_node("Atan", &[&top[0]], vec![]);
    b.add_output(&s, dims(&[1, 3]));
    let m = ModelProto::new(b.finish(), &[("", 17)]);
    let want = CompileError::UnsupportedOps(vec![
        UnsupportedNode { op_type: "Asinh".into(), node: "Asinh".into() },
        UnsupportedNode { op_type: "TopK".into(), node: "TopK".into() },
        UnsupportedNode { op_type: "Atan".into(), node: "Atan".into() },
    ]);
    let request = GradientRequest { outputs: vec![s.clone()], wrt: vec!["x".into()], expose: vec![], ..Default::default() };
    let err = compile_gradient(&m, &request).unwrap_err();
    assert_eq!(err, want);
    assert_eq!(
        err.to_string(),
        "operators without a gradient rule: Asinh (node \"Asinh\"), TopK (node \"TopK\"), Atan (node \"Atan\")"
    );
    let err = compile_deeplift(&m, &DeepLiftRequest { output: s, inputs: vec!["x".into()], ..Default::default() }).unwrap_err();
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
    for op in [
        "HardSigmoid",
        "HardSwish",
        "LayerNormalization",
        "Gelu",
        "Mish",
        "InstanceNormalization",
        "GroupNormalization",
        "RMSNormalization",
        "Einsum",
    ] {
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
        let request =
            GradientRequest { outputs: vec![output_name(&m)], wrt: vec!["x0".into()], expose: vec![], ..Default::default() };
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

#[test]
fn mish_matches_onnx_runtime() {
    let m = at_opset(model(&[&[3, 5]], |b, x| b.add_node("Mish", &[&x[0]], vec![])), 18);
    check_lowering(&m, "Mish", &[&[3, 5]], 6.0);
}

#[test]
fn instance_normalization_matches_onnx_runtime() {
    // Ranks 3 and 4, the default ε and another, on inputs whose shapes the file tells or not.
    for shape in [&[2usize, 3, 5][..], &[2, 3, 4, 5]] {
        for epsilon in [None, Some(0.5f32)] {
            let m = model(&[shape], |b, x| {
                let scale = constant(b, &[3], 5);
                let bias = constant(b, &[3], 6);
                let attrs = epsilon.map(|e| vec![AttributeProto::float("epsilon", e)]).unwrap_or_default();
                b.add_node("InstanceNormalization", &[&x[0], &scale, &bias], attrs)
            });
            check_lowering(&m, "InstanceNormalization", &[shape], 3.0);
            check_lowering(&without_input_shapes(m), "InstanceNormalization", &[shape], 3.0);
        }
    }
}

/// GroupNormalization on x [2, 6, 3, 2] with `groups` groups: at opset 18 scale and bias hold
/// one value per group, at opset 21 one per channel (the ONNX specification of each). ONNX
/// Runtime 1.31 runs both forms, so both are checked against it.
fn group_norm_model(opset: i64, groups: i64, epsilon: Option<f32>) -> ModelProto {
    let m = model(&[&[2, 6, 3, 2]], |b, x| {
        let per = if opset >= 21 { 6 } else { groups };
        let scale = constant(b, &[per], 5);
        let bias = constant(b, &[per], 6);
        let mut attrs = vec![AttributeProto::int("num_groups", groups)];
        attrs.extend(epsilon.map(|e| AttributeProto::float("epsilon", e)));
        b.add_node("GroupNormalization", &[&x[0], &scale, &bias], attrs)
    });
    at_opset(m, opset)
}

#[test]
fn group_normalization_matches_onnx_runtime() {
    for opset in [18, 21] {
        for groups in [1, 2, 3, 6] {
            for epsilon in [None, Some(0.25f32)] {
                let m = group_norm_model(opset, groups, epsilon);
                check_lowering(&m, "GroupNormalization", &[&[2, 6, 3, 2]], 3.0);
                check_lowering(&without_input_shapes(m), "GroupNormalization", &[&[2, 6, 3, 2]], 3.0);
            }
        }
    }
}

/// RMSNormalization (opset 23) on x [2, 3, 4] over [axis, rank) with a constant scale. ONNX
/// Runtime 1.31 runs opset 23's RMSNormalization, so its kernel is the reference.
fn rms_norm_model(axis: Option<i64>, epsilon: Option<f32>) -> ModelProto {
    let m = model(&[&[2, 3, 4]], |b, x| {
        let normalised: &[i64] = match axis {
            Some(1 | -2) => &[3, 4],
            Some(0 | -3) => &[2, 3, 4],
            _ => &[4],
        };
        let scale = constant(b, normalised, 5);
        let mut attrs: Vec<_> = axis.map(|a| AttributeProto::int("axis", a)).into_iter().collect();
        attrs.extend(epsilon.map(|e| AttributeProto::float("epsilon", e)));
        b.add_node("RMSNormalization", &[&x[0], &scale], attrs)
    });
    at_opset(m, 23)
}

#[test]
fn rms_normalization_matches_onnx_runtime() {
    for axis in [None, Some(-1), Some(2), Some(1), Some(-2), Some(0)] {
        for epsilon in [None, Some(0.5f32)] {
            let m = rms_norm_model(axis, epsilon);
            check_lowering(&m, "RMSNormalization", &[&[2, 3, 4]], 3.0);
            if axis.is_some_and(|a| a >= 0) {
                check_lowering(&without_input_shapes(m), "RMSNormalization", &[&[2, 3, 4]], 3.0);
            }
        }
    }
}

#[test]
fn einsum_contractions_match_onnx_runtime() {
    let cases: &[(&str, &[&[usize]])] = &[
        ("bij,bjk->bik", &[&[2, 3, 4], &[2, 4, 5]]),
        ("bhqd,bhkd->bhqk", &[&[2, 3, 4, 5], &[2, 3, 6, 5]]),
        ("ij->ji", &[&[3, 4]]),
        ("ji", &[&[3, 4]]),
        ("bi,bi->b", &[&[3, 4], &[3, 4]]),
        ("ij,j->i", &[&[3, 4], &[4]]),
        ("bij->bj", &[&[2, 3, 4]]),
        ("bij->", &[&[2, 3, 4]]),
        ("ij,jk", &[&[3, 4], &[4, 5]]),
        ("ij,ij", &[&[3, 4], &[3, 4]]),
        // Outer product, an index summed out of one operand alone, an output order of its own.
        ("i,j->ij", &[&[3], &[4]]),
        ("bik,bjl->jbi", &[&[2, 3, 4], &[2, 5, 6]]),
        ("b i j, b k j -> k b i", &[&[2, 3, 4], &[2, 5, 4]]),
        // A first axis only one operand has leads the product's views (the other broadcasts).
        ("bqk,ok->bqo", &[&[2, 3, 4], &[5, 4]]),
        ("ok,bqk->bqo", &[&[5, 4], &[2, 3, 4]]),
        ("bi,bj->ij", &[&[3, 4], &[3, 5]]),
    ];
    for (equation, shapes) in cases {
        let m = model(shapes, |b, x| {
            let inputs: Vec<&str> = x.iter().map(String::as_str).collect();
            b.add_node("Einsum", &inputs, vec![AttributeProto::string("equation", equation)])
        });
        check_lowering(&m, "Einsum", shapes, 2.0);
        check_lowering(&without_input_shapes(m), "Einsum", shapes, 2.0);
    }
}

#[test]
fn einsum_forms_that_are_not_contractions_are_refused() {
    let cases: &[(&str, &[&[usize]], &str)] = &[
        ("ii->i", &[&[3, 3]], "diagonal"),
        ("bij,bjk->bik", &[&[2, 3, 4]], "number of operands"),
        ("...ij,...jk->...ik", &[&[2, 3, 4], &[2, 4, 5]], "ellipsis"),
        ("ij,jk,kl->il", &[&[2, 3], &[3, 4], &[4, 5]], "more than two operands"),
    ];
    for (equation, shapes, why) in cases {
        let m = model(shapes, |b, x| {
            let inputs: Vec<&str> = x.iter().map(String::as_str).collect();
            b.add_node("Einsum", &inputs, vec![AttributeProto::string("equation", equation)])
        });
        match lower(&m) {
            Err(CompileError::UnsupportedForm { op_type, reason, .. }) => {
                assert_eq!(op_type, "Einsum");
                assert!(reason.contains(why), "{equation}: {reason}");
            }
            other => panic!("{equation}: {other:?}"),
        }
    }
}

#[test]
fn min_and_max_of_three_or_more_inputs_match_onnx_runtime() {
    for op in ["Min", "Max"] {
        // Three and four inputs, broadcasting, and a constant among them.
        let shapes: &[&[usize]] = &[&[2, 3], &[3], &[2, 1]];
        let m = model(shapes, |b, x| b.add_node(op, &[&x[0], &x[1], &x[2]], vec![]));
        check_lowering(&m, op, shapes, 1.0);
        let m = model(shapes, |b, x| {
            let c = constant(b, &[1, 3], 9);
            b.add_node(op, &[&x[0], &c, &x[1], &x[2]], vec![])
        });
        check_lowering(&m, op, shapes, 1.0);
        // With two inputs the operator has its own rule and is left alone.
        let m = model(&[&[2, 3], &[3]], |b, x| b.add_node(op, &[&x[0], &x[1]], vec![]));
        assert!(lower(&m).unwrap().is_none(), "{op} of two inputs is not lowered");
    }
}

/// A linear layer on x [2, 3, ...] written as torch's dynamo exporter and GPT-2's `Conv1D`
/// write it: `Reshape(x, [-1, H])`, `Gemm`, `Reshape(·, [-1, 3, O])`, then `read`.
fn folded_linear(x_shape: &[usize], gemm_attrs: Vec<AttributeProto>, read: &'static str) -> ModelProto {
    let columns: usize = x_shape[2..].iter().product();
    model(&[x_shape], |b, x| {
        let flat = b.add_initializer(tensor_i64("flat", &[2], &[-1, columns as i64]));
        let rows = b.add_node("Reshape", &[&x[0], &flat], vec![]);
        let transposed = gemm_attrs.iter().any(|a| a.name() == "transB");
        let w_dims: &[i64] = if transposed { &[5, columns as i64] } else { &[columns as i64, 5] };
        let w = constant(b, w_dims, 7);
        let c = constant(b, &[5], 8);
        let product = b.add_node("Gemm", &[&rows, &w, &c], gemm_attrs);
        let back = b.add_initializer(tensor_i64("back", &[3], &[-1, 3, 5]));
        match read {
            "Reshape" => {
                let restored = b.add_node("Reshape", &[&product, &back], vec![]);
                b.add_node("Tanh", &[&restored], vec![])
            }
            _ => b.add_node(read, &[&product], vec![]),
        }
    })
}

#[test]
fn linear_layers_that_fold_the_batch_into_rows_are_unfolded() {
    let scaled =
        || vec![AttributeProto::int("transB", 1), AttributeProto::float("alpha", 0.5), AttributeProto::float("beta", 2.0)];
    for (shape, attrs) in [(&[2, 3, 4][..], vec![]), (&[2, 3, 4], scaled()), (&[2, 3, 2, 2], scaled())] {
        let m = folded_linear(shape, attrs, "Reshape");
        check_lowering(&m, "Gemm", &[shape], 1.0);
        let lowered = lower(&m).unwrap().unwrap();
        let graph = lowered.graph.as_ref().unwrap();
        assert!(graph.node.iter().any(|n| n.op_type() == "MatMul"), "{shape:?}: a MatMul on the unfolded input");
    }
    // A reader that does not restore x's leading axes: the Gemm stays.
    assert!(lower(&folded_linear(&[2, 3, 4], vec![], "Relu")).unwrap().is_none());
}

/// x [2, 3, 4] viewed through `as_strided` as torch's dynamo exporter writes it: a `Gather`
/// from the flattened x with indices `Unsqueeze(arange(N) · 12) + offsets`, the offsets a
/// [1, 4, 3] constant.
fn strided_view(offsets: &[i64]) -> ModelProto {
    model(&[&[2, 3, 4]], |b, x| {
        let minus_one = b.add_initializer(tensor_i64("minus_one", &[1], &[-1]));
        let flat = b.add_node("Reshape", &[&x[0], &minus_one], vec![]);
        let shape = b.add_node("Shape", &[&x[0]], vec![AttributeProto::int("start", 0), AttributeProto::int("end", 1)]);
        let batch = b.add_node("Squeeze", &[&shape], vec![]);
        let (zero, one) = (b.add_initializer(tensor_i64("zero", &[], &[0])), b.add_initializer(tensor_i64("one", &[], &[1])));
        let rows = b.add_node("Range", &[&zero, &batch, &one], vec![]);
        let row_len = b.add_initializer(tensor_i64("row_len", &[], &[12]));
        let starts = b.add_node("Mul", &[&rows, &row_len], vec![]);
        let axes = b.add_initializer(tensor_i64("axes", &[2], &[1, 2]));
        let starts = b.add_node("Unsqueeze", &[&starts, &axes], vec![]);
        let offsets = b.add_initializer(tensor_i64("offsets", &[1, 4, 3], offsets));
        let indices = b.add_node("Add", &[&starts, &offsets], vec![]);
        let view = b.add_node("Gather", &[&flat, &indices], vec![AttributeProto::int("axis", 0)]);
        b.add_node("Tanh", &[&view], vec![])
    })
}

#[test]
fn strided_views_that_are_transpositions_become_transposes() {
    // view[n, i, j] = x[n, j, i]: offsets i + 4j.
    let transposed: Vec<i64> = (0..4).flat_map(|i| (0..3).map(move |j| i + 4 * j)).collect();
    let m = strided_view(&transposed);
    check_lowering(&m, "Gather", &[&[2, 3, 4]], 1.0);
    let lowered = lower(&m).unwrap().unwrap();
    let transpose = lowered.graph.as_ref().unwrap().node.iter().find(|n| n.op_type() == "Transpose").expect("a Transpose");
    assert_eq!(transpose.attr_ints("perm"), Some(&[0i64, 2, 1][..]));
    // Overlapping windows (offsets i + j) are no transposition: the Gather stays.
    let windows: Vec<i64> = (0..4).flat_map(|i| (0..3).map(move |j| i + j)).collect();
    assert!(lower(&strided_view(&windows)).unwrap().is_none());
}
