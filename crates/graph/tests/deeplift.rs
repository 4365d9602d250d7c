//! DeepLIFT multipliers from the compiled graph are complete: for every input row x, every
//! reference row r and every output element t, Σ m · (x − r) = f_t(x) − f_t(r), on models with
//! every rule in play (rescale, two-player Shapley, decomposed softmax, overlapping max-pool).

mod common;

use common::*;
use explaind_graph::{DeepLiftRequest, compile_deeplift};
use explaind_onnx::{AttributeProto, GraphBuilder, ModelProto, NodeProto, tensor_f32};
use ndarray::{ArrayD, Axis, IxDyn};

/// Checks completeness for every (input row, reference row, output element) triple; returns
/// the largest error relative to max(1, |f_t(x) - f_t(r)|).
fn check_completeness(model: &ModelProto, output: &str, x: &[ArrayD<f32>], r: &[ArrayD<f32>]) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let graph = model.graph.as_ref().unwrap();
    let inputs: Vec<String> = graph.input.iter().map(|i| i.name().to_string()).collect();
    let output_index = graph.output.iter().position(|o| o.name() == output).unwrap();
    let compiled =
        compile_deeplift(model, &DeepLiftRequest { output: output.into(), inputs: inputs.clone(), ..Default::default() })
            .unwrap();
    let forward = load(model, &dir, "forward");
    let attribution = load(&compiled.model, &dir, "deeplift");

    let f = |rows: &[ArrayD<f32>]| {
        let views: Vec<_> = rows.iter().map(|a| a.view()).collect();
        let y = forward.run(&views).unwrap().0.swap_remove(output_index);
        let n = y.shape()[0];
        let len = y.len() / n;
        y.into_shape_with_order((n, len)).unwrap()
    };
    let (fx, fr) = (f(x), f(r));
    let (n, k, t) = (x[0].shape()[0], r[0].shape()[0], fx.shape()[1]);

    // Rows: every (input, reference, target) triple, the seed one-hot at the target.
    let rows = n * k * t;
    let pick = |arrays: &[ArrayD<f32>], index: &dyn Fn(usize) -> usize| -> Vec<ArrayD<f32>> {
        arrays.iter().map(|a| a.select(Axis(0), &(0..rows).map(index).collect::<Vec<_>>())).collect()
    };
    let xs = pick(x, &|row| row / (k * t));
    let rs = pick(r, &|row| (row / t) % k);
    let out_shape = forward_output_shape(&forward, x, output_index);
    let mut seed_shape = vec![rows];
    seed_shape.extend(&out_shape[1..]);
    let mut seed = ArrayD::<f32>::zeros(IxDyn(&seed_shape));
    for row in 0..rows {
        seed.as_slice_mut().unwrap()[row * t + row % t] = 1.0;
    }
    let mut feed: Vec<_> = xs.iter().map(|a| a.view()).collect();
    feed.extend(rs.iter().map(|a| a.view()));
    feed.push(seed.view());
    let results = attribution.run(&feed).unwrap().0;
    let n_outputs = graph.output.len();

    let mut worst = 0f64;
    for row in 0..rows {
        let (i, j, target) = (row / (k * t), (row / t) % k, row % t);
        let mut total = 0f64;
        for (input, (xa, ra)) in xs.iter().zip(&rs).enumerate() {
            let m = &results[n_outputs + input];
            let len = m.len() / rows;
            for e in 0..len {
                let flat = row * len + e;
                total += m.as_slice().unwrap()[flat] as f64
                    * (xa.as_slice().unwrap()[flat] as f64 - ra.as_slice().unwrap()[flat] as f64);
            }
        }
        let want = fx[[i, target]] as f64 - fr[[j, target]] as f64;
        let error = (total - want).abs() / want.abs().max(1.0);
        assert!(error <= 1e-4, "input {i}, reference {j}, output {target}: Σφ = {total}, f(x) − f(r) = {want}");
        worst = worst.max(error);
    }
    worst
}

fn forward_output_shape(forward: &explaind_runtime::Model, x: &[ArrayD<f32>], index: usize) -> Vec<usize> {
    let views: Vec<_> = x.iter().map(|a| a.view()).collect();
    forward.run(&views).unwrap().0[index].shape().to_vec()
}

/// `m` with the first axis of every input symbolic, so inputs and references may have any
/// number of rows.
fn any_batch(mut m: ModelProto) -> ModelProto {
    for input in &mut m.graph.as_mut().unwrap().input {
        if let Some(explaind_onnx::proto::type_proto::Value::TensorType(t)) = input.r#type.as_mut().unwrap().value.as_mut() {
            t.shape.as_mut().unwrap().dim[0] = explaind_onnx::Dim::from("batch").into();
        }
    }
    m
}

/// A model whose single float input is `x` with the given per-row shape.
fn single_input(row: &[usize], body: impl FnOnce(&mut GraphBuilder, &str) -> String) -> ModelProto {
    let mut shape = vec![1usize];
    shape.extend(row);
    any_batch(model(&[&shape], |b, x| body(b, &x[0])))
}

fn rows(n: usize, row: &[usize], seed: u64) -> ArrayD<f32> {
    let mut shape = vec![n];
    shape.extend(row);
    array(&shape, seed, 0.0)
}

#[test]
fn mlp_with_sigmoid_tanh_and_softmax_output() {
    let m = single_input(&[5], |b, x| {
        let w1 = constant(b, &[6, 5], 1);
        let b1 = constant(b, &[6], 2);
        let h = b.add_node("Gemm", &[x, &w1, &b1], vec![AttributeProto::int("transB", 1)]);
        let h = b.add_node("Sigmoid", &[&h], vec![]);
        let w2 = constant(b, &[6, 4], 3);
        let h = b.add_node("MatMul", &[&h, &w2], vec![]);
        let h = b.add_node("Tanh", &[&h], vec![]);
        let w3 = constant(b, &[4, 3], 4);
        let b3 = constant(b, &[3], 5);
        let logits = b.add_node("Gemm", &[&h, &w3, &b3], vec![AttributeProto::float("alpha", 3.0)]);
        b.add_node("Softmax", &[&logits], vec![AttributeProto::int("axis", 1)])
    });
    check_completeness(&m, &output_name(&m), &[rows(3, &[5], 10)], &[rows(4, &[5], 11)]);
}

/// Logits that are the same on both sides while the row's maximum moves: the centring's
/// change (−Δmax) at those elements must reach the inputs through the maximum. An elementwise
/// rescale from z to the centred logits lost it (Δz = 0 there): a class token that does not vary
/// lost its share of every attention row in ViTs this way (completeness off by 0.4 % on
/// ViT-B/16).
#[test]
fn softmax_logits_that_do_not_move_while_the_maximum_does() {
    let m = single_input(&[4], |b, x| b.add_node("Softmax", &[x], vec![AttributeProto::int("axis", 1)]));
    let x = ArrayD::from_shape_vec(IxDyn(&[2, 4]), vec![0.5, 2.0, -1.0, 0.3, 1.0, 1.0, 0.0, 4.0]).unwrap();
    // Row 0 against row 0: elements 0 and 3 unchanged, the maximum moves from 3 to 2; ties in
    // the second reference row's maximum; the last pair has x's maximum where r's is.
    let r = ArrayD::from_shape_vec(IxDyn(&[2, 4]), vec![0.5, -0.2, 3.0, 0.3, 1.0, 1.0, 0.0, -2.0]).unwrap();
    let worst = check_completeness(&m, &output_name(&m), &[x], &[r]);
    assert!(worst <= 1e-6, "{worst}");
}

/// Attention over a constant class token and varying patch tokens (a ViT's first layer): the
/// class token's score against itself does not move between input and reference.
#[test]
fn attention_with_a_constant_class_token_is_complete() {
    let m = single_input(&[3, 4], |b, x| {
        let class_token = constant(b, &[1, 1, 4], 150);
        let batch = b.add_node("Shape", &[x], vec![]);
        let start = b.add_initializer(explaind_onnx::tensor_i64("start", &[1], &[0]));
        let end = b.add_initializer(explaind_onnx::tensor_i64("end", &[1], &[1]));
        let batch = b.add_node("Slice", &[&batch, &start, &end], vec![]);
        let rest = b.add_initializer(explaind_onnx::tensor_i64("rest", &[2], &[1, 4]));
        let shape = b.add_node("Concat", &[&batch, &rest], vec![AttributeProto::int("axis", 0)]);
        let class_token = b.add_node("Expand", &[&class_token, &shape], vec![]);
        let tokens = b.add_node("Concat", &[&class_token, x], vec![AttributeProto::int("axis", 1)]);
        let (wq, wk, wv) = (constant(b, &[4, 4], 151), constant(b, &[4, 4], 152), constant(b, &[4, 4], 153));
        let q = b.add_node("MatMul", &[&tokens, &wq], vec![]);
        let k = b.add_node("MatMul", &[&tokens, &wk], vec![]);
        let v = b.add_node("MatMul", &[&tokens, &wv], vec![]);
        let perm = vec![AttributeProto::ints("perm", [0, 2, 1])];
        let kt = b.add_node("Transpose", &[&k], perm);
        let scores = b.add_node("MatMul", &[&q, &kt], vec![]);
        let three = b.add_initializer(tensor_f32("three", &[], &[3.0]));
        let scores = b.add_node("Mul", &[&scores, &three], vec![]);
        let weights = b.add_node("Softmax", &[&scores], vec![AttributeProto::int("axis", -1)]);
        b.add_node("MatMul", &[&weights, &v], vec![])
    });
    let worst = check_completeness(&m, &output_name(&m), &[rows(2, &[3, 4], 154)], &[rows(3, &[3, 4], 155)]);
    assert!(worst <= 1e-6, "{worst}");
}

#[test]
fn every_elementwise_rule_is_complete() {
    for op in ["Relu", "LeakyRelu", "Elu", "Sigmoid", "Tanh", "Softplus", "Exp", "Erf", "Sqrt", "Reciprocal", "Clip"] {
        let m = single_input(&[6], |b, x| {
            let w = constant(b, &[6, 6], 20);
            let z = b.add_node("MatMul", &[x, &w], vec![]);
            let z = match op {
                // Positive arguments where the op needs them.
                "Sqrt" | "Reciprocal" => {
                    let one = b.add_initializer(tensor_f32("one", &[], &[1.0]));
                    let sq = b.add_node("Mul", &[&z, &z], vec![]);
                    b.add_node("Add", &[&sq, &one], vec![])
                }
                _ => z,
            };
            let y = match op {
                "Clip" => {
                    let lo = b.add_initializer(tensor_f32("lo", &[], &[-0.3]));
                    let hi = b.add_initializer(tensor_f32("hi", &[], &[0.4]));
                    b.add_node("Clip", &[&z, &lo, &hi], vec![])
                }
                _ => b.add_node(op, &[&z], vec![]),
            };
            let v = constant(b, &[6, 2], 21);
            b.add_node("MatMul", &[&y, &v], vec![])
        });
        check_completeness(&m, &output_name(&m), &[rows(2, &[6], 22)], &[rows(3, &[6], 23)]);
    }
    // A reference equal to the input: every rescale falls back to the gradient, and Σφ = 0.
    let m = single_input(&[4], |b, x| b.add_node("Tanh", &[x], vec![]));
    let same = rows(2, &[4], 24);
    check_completeness(&m, &output_name(&m), std::slice::from_ref(&same), std::slice::from_ref(&same));
}

#[test]
fn slices_and_gathers_stay_complete() {
    let m = single_input(&[8], |b, x| {
        let w = constant(b, &[8, 8], 80);
        let h = b.add_node("MatMul", &[x, &w], vec![]);
        let h = b.add_node("Tanh", &[&h], vec![]);
        let starts = b.add_initializer(explaind_onnx::tensor_i64("starts", &[1], &[1]));
        let ends = b.add_initializer(explaind_onnx::tensor_i64("ends", &[1], &[8]));
        let axes = b.add_initializer(explaind_onnx::tensor_i64("axes", &[1], &[1]));
        let steps = b.add_initializer(explaind_onnx::tensor_i64("steps", &[1], &[2]));
        let sliced = b.add_node("Slice", &[&h, &starts, &ends, &axes, &steps], vec![]);
        let indices = b.add_initializer(explaind_onnx::tensor_i64("indices", &[5], &[0, 3, 3, 1, 2]));
        let gathered = b.add_node("Gather", &[&sliced, &indices], vec![AttributeProto::int("axis", 1)]);
        let g = b.add_node("Sigmoid", &[&gathered], vec![]);
        let v = constant(b, &[5, 2], 81);
        b.add_node("MatMul", &[&g, &v], vec![])
    });
    check_completeness(&m, &output_name(&m), &[rows(2, &[8], 82)], &[rows(3, &[8], 83)]);
}

#[test]
fn two_varying_operands_share_by_the_shapley_rule() {
    // Products, quotients and a matrix product of activations, with broadcasting.
    let m = any_batch(model(&[&[2, 3], &[2, 3], &[2, 1]], |b, x| {
        let one = b.add_initializer(tensor_f32("one", &[], &[1.5]));
        let p = b.add_node("Mul", &[&x[0], &x[1]], vec![]);
        let sq = b.add_node("Mul", &[&x[2], &x[2]], vec![]);
        let den = b.add_node("Add", &[&sq, &one], vec![]);
        let q = b.add_node("Div", &[&p, &den], vec![]);
        let only_den = b.add_node("Div", &[&one, &den], vec![]);
        let s = b.add_node("Add", &[&q, &only_den], vec![]);
        let w = constant(b, &[3, 2], 30);
        b.add_node("MatMul", &[&s, &w], vec![])
    }));
    let x = [rows(2, &[3], 31), rows(2, &[3], 32), rows(2, &[1], 33)];
    let r = [rows(3, &[3], 34), rows(3, &[3], 35), rows(3, &[1], 36)];
    check_completeness(&m, &output_name(&m), &x, &r);

    let m = any_batch(model(&[&[1, 2, 3], &[1, 3, 4]], |b, x| {
        let p = b.add_node("MatMul", &[&x[0], &x[1]], vec![]);
        b.add_node("Flatten", &[&p], vec![])
    }));
    check_completeness(
        &m,
        &output_name(&m),
        &[rows(2, &[2, 3], 37), rows(2, &[3, 4], 38)],
        &[rows(2, &[2, 3], 39), rows(2, &[3, 4], 40)],
    );
}

#[test]
fn cnn_with_batchnorm_overlapping_max_pool_residual_and_softmax() {
    let m = single_input(&[1, 6, 6], |b, x| {
        let w = constant(b, &[3, 1, 3, 3], 50);
        let bias = constant(b, &[3], 51);
        let c = b.add_node("Conv", &[x, &w, &bias], vec![AttributeProto::ints("pads", [1, 1, 1, 1])]);
        let scale = constant(b, &[3], 52);
        let shift = constant(b, &[3], 53);
        let mean = constant(b, &[3], 54);
        let var = b.add_initializer(tensor_f32("var", &[3], &[0.5, 1.0, 2.0]));
        let c = b.add_node("BatchNormalization", &[&c, &scale, &shift, &mean, &var], vec![]);
        let a = b.add_node("Relu", &[&c], vec![]);
        let overlapping = vec![
            AttributeProto::ints("kernel_shape", [3, 3]),
            AttributeProto::ints("strides", [1, 1]),
            AttributeProto::ints("pads", [1, 1, 1, 1]),
        ];
        let p = b.add_node("MaxPool", &[&a], overlapping);
        let residual = b.add_node("Add", &[&p, &c], vec![]);
        let avg = vec![AttributeProto::ints("kernel_shape", [2, 2]), AttributeProto::ints("strides", [2, 2])];
        let s = b.add_node("AveragePool", &[&residual], avg);
        let tiled = vec![AttributeProto::ints("kernel_shape", [3, 3]), AttributeProto::ints("strides", [3, 3])];
        let s = b.add_node("MaxPool", &[&s], tiled);
        let w2 = constant(b, &[4, 3, 1, 1], 55);
        let s = b.add_node("Conv", &[&s, &w2], vec![]);
        let s = b.add_node("GlobalAveragePool", &[&s], vec![]);
        let s = b.add_node("Flatten", &[&s], vec![]);
        let w3 = constant(b, &[3, 4], 56);
        let logits = b.add_node("Gemm", &[&s, &w3], vec![AttributeProto::int("transB", 1), AttributeProto::float("alpha", 4.0)]);
        b.add_node("Softmax", &[&logits], vec![])
    });
    check_completeness(&m, &output_name(&m), &[rows(3, &[1, 6, 6], 57)], &[rows(4, &[1, 6, 6], 58)]);
}

#[test]
fn demo_models_are_complete_against_their_backgrounds() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let read = |p: &str| explaind_runtime::npy::read_f32_file(&root.join(p)).unwrap();
    let digits = ModelProto::load(root.join("models/digits-cnn/1/model.onnx")).unwrap();
    let x = read("models/digits-cnn/1/samples.npy").slice_axis(Axis(0), (0..3).into()).to_owned();
    let r = read("models/digits-cnn/1/background.npy").slice_axis(Axis(0), (0..5).into()).to_owned();
    check_completeness(&digits, "logits", &[x], &[r]);

    let wine = ModelProto::load(root.join("models/wine-mlp/1/model.onnx")).unwrap();
    let x = read("models/wine-mlp/1/samples.npy").slice_axis(Axis(0), (0..3).into()).to_owned();
    let r = read("models/wine-mlp/1/background.npy").slice_axis(Axis(0), (0..5).into()).to_owned();
    check_completeness(&wine, "probabilities", std::slice::from_ref(&x), std::slice::from_ref(&r));
    check_completeness(&wine, "logits", &[x], &[r]);
}

/// The split models (activations, then the backward pass over T seeds × R references)
/// against the combined graph: first R explicit pairs with one seed each, then one input row
/// against all R references with `seeds` seeds each (seed-major rows) against the T·R explicit
/// pairs. Returns the backward model's nodes.
fn check_split_against_pairs(model: &ModelProto, output: &str, x: &ArrayD<f32>, r: &ArrayD<f32>, seeds: usize) -> Vec<NodeProto> {
    let input = model.graph.as_ref().unwrap().input[0].name().to_string();
    let compiled =
        compile_deeplift(model, &DeepLiftRequest { output: output.into(), inputs: vec![input.clone()], ..Default::default() })
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let combined = load(&compiled.model, &dir, "combined");
    let activation = load(&compiled.activation_model, &dir, "activation");
    let backward = load(&compiled.backward_model, &dir, "backward");
    let output_index = model.graph.as_ref().unwrap().output.iter().position(|o| o.name() == output).unwrap();
    let outputs =
        forward_output_shape(&load(model, &dir, "forward"), std::slice::from_ref(x), output_index)[1..].iter().product();
    let close = |a: &ArrayD<f32>, b: &ArrayD<f32>| {
        assert_eq!(a.shape(), b.shape());
        for (u, v) in a.iter().zip(b.iter()) {
            assert!((u - v).abs() <= 1e-5 * u.abs().max(1.0), "{u} vs {v}");
        }
    };
    let k = r.shape()[0];
    assert_eq!(x.shape()[0], k, "x has one row per reference");

    // R pairs, one seed each: the same through both.
    let seed = array(&[k, outputs], 70, 0.0);
    let together = combined.run(&[x.view(), r.view(), seed.view()]).unwrap().0;
    let x_side = activation.run(&[x.view()]).unwrap().0;
    let r_side = activation.run(&[r.view()]).unwrap().0;
    assert_eq!(x_side.len(), compiled.activations.len());
    let mut feed: Vec<_> = x_side.iter().map(|a| a.view()).collect();
    feed.extend(r_side.iter().map(|a| a.view()));
    feed.push(seed.view());
    let apart = backward.run(&feed).unwrap().0;
    let n_outputs = model.graph.as_ref().unwrap().output.len();
    assert_eq!(together.len() - n_outputs, apart.len());
    for (a, b) in together[n_outputs..].iter().zip(&apart) {
        close(a, b);
    }

    // One input row against all R references, `seeds` seeds each: the T·R explicit pairs.
    let one: Vec<_> = x_side.iter().map(|a| a.slice_axis(Axis(0), (1..2).into()).to_owned()).collect();
    let per_seed = array(&[seeds, outputs], 71, 0.0);
    let tiled_seeds = ndarray::Array2::from_shape_fn((seeds * k, outputs), |(row, e)| per_seed[[row / k, e]]).into_dyn();
    let mut feed: Vec<_> = one.iter().map(|a| a.view()).collect();
    feed.extend(r_side.iter().map(|a| a.view()));
    feed.push(tiled_seeds.view());
    let broadcast = backward.run(&feed).unwrap().0;
    let pairs_x = x.select(Axis(0), &vec![1; seeds * k]);
    let pairs_r = r.select(Axis(0), &(0..seeds * k).map(|row| row % k).collect::<Vec<_>>());
    let explicit = combined.run(&[pairs_x.view(), pairs_r.view(), tiled_seeds.view()]).unwrap().0;
    assert_eq!(broadcast[0].shape()[0], seeds * k);
    close(&broadcast[0], &explicit[n_outputs]);
    compiled.backward_model.graph.unwrap().node
}

#[test]
fn the_split_models_compute_what_the_combined_one_does() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let read = |p: &str| explaind_runtime::npy::read_f32_file(&root.join(p)).unwrap();
    let digits = ModelProto::load(root.join("models/digits-cnn/1/model.onnx")).unwrap();
    let compiled = compile_deeplift(
        &digits,
        &DeepLiftRequest { output: "logits".into(), inputs: vec!["image".into()], ..Default::default() },
    )
    .unwrap();
    // What the nonlinearities read (both ReLUs' inputs and outputs), and the argmax masks of
    // the two 2×2 max-pools.
    for read in ["conv1", "relu1", "conv2", "relu2"] {
        assert!(compiled.activations.contains(&read.to_string()), "{read} missing from {:?}", compiled.activations);
    }
    assert_eq!(compiled.activations.iter().filter(|a| a.contains("argmax")).count(), 2, "{:?}", compiled.activations);
    let x = read("models/digits-cnn/1/samples.npy").slice_axis(Axis(0), (0..4).into()).to_owned();
    let r = read("models/digits-cnn/1/background.npy").slice_axis(Axis(0), (0..4).into()).to_owned();
    let backward = check_split_against_pairs(&digits, "logits", &x, &r, 3);
    // The backward model recomputes no forward convolution (those are in the activation model
    // only): any Conv there is a gradient, with a flipped kernel rather than the model's own.
    let weights: Vec<&str> = digits.graph.as_ref().unwrap().initializer.iter().map(|t| t.name()).collect();
    let convs: Vec<&NodeProto> = backward.iter().filter(|n| n.op_type() == "Conv").collect();
    assert!(convs.iter().all(|n| !weights.contains(&n.input[1].as_str())), "{convs:?}");
}

#[test]
fn the_split_models_route_every_form_of_max_pool() {
    // Three pools: 2×2 windows tiling a declared 8×8 input (a nearest upsampling, nothing
    // padded); overlapping 3×3 windows of stride 1 (a scatter over every seed); 3×3 windows of
    // stride 3 on a 4×4 input (tiling, with a last row and column in no window: padded).
    let m = single_input(&[1, 8, 8], |b, x| {
        let w = constant(b, &[2, 1, 3, 3], 90);
        let c = b.add_node("Conv", &[x, &w], vec![AttributeProto::ints("pads", [1, 1, 1, 1])]);
        let a = b.add_node("Relu", &[&c], vec![]);
        let two = vec![AttributeProto::ints("kernel_shape", [2, 2]), AttributeProto::ints("strides", [2, 2])];
        let p = b.add_node("MaxPool", &[&a], two);
        let w = constant(b, &[3, 2, 3, 3], 91);
        let c = b.add_node("Conv", &[&p, &w], vec![AttributeProto::ints("pads", [1, 1, 1, 1])]);
        let a = b.add_node("Tanh", &[&c], vec![]);
        let overlapping = vec![
            AttributeProto::ints("kernel_shape", [3, 3]),
            AttributeProto::ints("strides", [1, 1]),
            AttributeProto::ints("pads", [1, 1, 1, 1]),
        ];
        let p = b.add_node("MaxPool", &[&a], overlapping);
        let three = vec![AttributeProto::ints("kernel_shape", [3, 3]), AttributeProto::ints("strides", [3, 3])];
        let p = b.add_node("MaxPool", &[&p], three);
        let f = b.add_node("Flatten", &[&p], vec![]);
        let w = constant(b, &[4, 3], 92);
        b.add_node("Gemm", &[&f, &w], vec![AttributeProto::int("transB", 1)])
    });
    let (x, r) = (rows(5, &[1, 8, 8], 93), rows(5, &[1, 8, 8], 94));
    let backward = check_split_against_pairs(&m, &output_name(&m), &x, &r, 3);
    // Each form took its own route. The two tiling pools: their argmax masks come with the
    // activations (no MaxPool recomputed for them), three upsamplings each (x's and r's part
    // of the routing weights, and the gradient), padded for the one whose windows leave a
    // margin. The overlapping pool: the argmax of both sides found over gathered windows
    // against the pool outputs the forward pass already has (no MaxPool recomputed anywhere),
    // and a scatter whose indices are the pair's offset per seed (an Add of offsets, then
    // flattened).
    let producer = |tensor: &str| backward.iter().find(|n| n.output.iter().any(|o| o == tensor));
    let count = |op: &str| backward.iter().filter(|n| n.op_type() == op).count();
    assert_eq!(count("MaxPool"), 0);
    assert_eq!(count("CumSum"), 2, "x's and r's first maxima in the overlapping windows");
    let upsampled: Vec<&str> = backward.iter().filter(|n| n.op_type() == "Resize").map(|n| n.output[0].as_str()).collect();
    assert_eq!(upsampled.len(), 6);
    let padded = upsampled.iter().filter(|u| backward.iter().any(|n| n.op_type() == "Pad" && n.input[0] == **u)).count();
    assert_eq!(padded, 3);
    let offset_scatters = backward
        .iter()
        .filter(|n| n.op_type() == "ScatterElements")
        .filter(|n| producer(&n.input[1]).and_then(|p| producer(&p.input[0])).is_some_and(|p| p.op_type() == "Add"))
        .count();
    assert_eq!(offset_scatters, 2, "x's and r's argmax positions");
    check_completeness(&m, &output_name(&m), &[x], &[r]);
}

/// `op` between two dense layers, on inputs and references spread wide enough to saturate it.
fn check_lowered_complete(row: &[usize], opset: i64, op: impl FnOnce(&mut GraphBuilder, &str) -> String) {
    check_lowered_model_complete(row, opset, false, op);
}

/// As [`check_lowered_complete`]; with `undeclared`, the input's shape is left out of the file.
fn check_lowered_model_complete(row: &[usize], opset: i64, undeclared: bool, op: impl FnOnce(&mut GraphBuilder, &str) -> String) {
    let width: usize = row.iter().product();
    let m = at_opset(
        single_input(row, |b, x| {
            let four = b.add_initializer(tensor_f32("four", &[], &[4.0]));
            let z = b.add_node("Mul", &[x, &four], vec![]);
            let y = op(b, &z);
            let flat = b.add_node("Flatten", &[&y], vec![]);
            let v = constant(b, &[width as i64, 3], 61);
            b.add_node("MatMul", &[&flat, &v], vec![])
        }),
        opset,
    );
    let m = if undeclared { without_input_shapes(m) } else { m };
    check_completeness(&m, &output_name(&m), &[rows(2, row, 62)], &[rows(3, row, 63)]);
}

#[test]
fn lowered_hard_sigmoid_and_hard_swish_are_complete() {
    check_lowered_complete(&[6], 17, |b, z| b.add_node("HardSigmoid", &[z], vec![]));
    check_lowered_complete(&[6], 17, |b, z| b.add_node("HardSwish", &[z], vec![]));
}

#[test]
fn lowered_layer_normalization_is_complete() {
    for opset in [17, 18] {
        // Axis 1 twice: on an input of declared rank, and on one whose rank is not declared.
        for (axis, undeclared) in [(-1, false), (1, false), (1, true)] {
            for bias in [false, true] {
                check_lowered_model_complete(&[3, 4], opset, undeclared, |b, z| {
                    let normalised: &[i64] = if axis == 1 { &[3, 4] } else { &[4] };
                    let scale = constant(b, normalised, 64);
                    let mut inputs = vec![z.to_string(), scale];
                    if bias {
                        inputs.push(constant(b, normalised, 65));
                    }
                    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                    b.add_node("LayerNormalization", &refs, vec![AttributeProto::int("axis", axis)])
                });
            }
        }
    }
}

/// A zero baseline after a bias-free linear layer leaves LayerNormalization a reference row
/// with no variance: its deviation is √ε. The normalisation's division then takes the
/// deviation's change first; the symmetric two-player split would carry terms of ±1/√ε that
/// cancel, which float32 cannot add up (errors of about 1e-3 of the output here, ConvNeXt's
/// ε 1e-6, before this rule).
#[test]
fn layer_normalization_is_complete_against_a_reference_row_without_variance() {
    let m = single_input(&[16], |b, x| {
        let w = constant(b, &[16, 16], 70);
        let h = b.add_node("MatMul", &[x, &w], vec![]);
        let scale = constant(b, &[16], 71);
        let attrs = vec![AttributeProto::int("axis", -1), AttributeProto::float("epsilon", 1e-6)];
        let normalised = b.add_node("LayerNormalization", &[&h, &scale], attrs);
        let v = constant(b, &[16, 3], 72);
        let logits = b.add_node("MatMul", &[&normalised, &v], vec![]);
        b.add_node("Tanh", &[&logits], vec![])
    });
    let x = [rows(3, &[16], 73) * 2.0];
    let zero = [ArrayD::<f32>::zeros(IxDyn(&[1, 16]))];
    let worst = check_completeness(&m, &output_name(&m), &x, &zero);
    assert!(worst <= 1e-5, "relative completeness error {worst}");
}

#[test]
fn lowered_gelu_is_complete() {
    for approximate in ["none", "tanh"] {
        check_lowered_complete(&[6], 20, |b, z| {
            b.add_node("Gelu", &[z], vec![AttributeProto::string("approximate", approximate)])
        });
    }
}

#[test]
fn more_elementwise_rules_are_complete() {
    for op in ["Abs", "Log", "Sin", "Cos", "Softsign", "Selu", "Celu", "PRelu", "Pow", "PowCube", "Max", "Min"] {
        let m = single_input(&[6], |b, x| {
            let w = constant(b, &[6, 6], 120);
            let z = b.add_node("MatMul", &[x, &w], vec![]);
            let positive = |b: &mut GraphBuilder, z: &str| {
                let one = b.add_initializer(tensor_f32("one", &[], &[1.0]));
                let sq = b.add_node("Mul", &[z, z], vec![]);
                b.add_node("Add", &[&sq, &one], vec![])
            };
            let y = match op {
                "Log" => {
                    let p = positive(b, &z);
                    b.add_node("Log", &[&p], vec![])
                }
                "Pow" => {
                    let p = positive(b, &z);
                    let c = b.add_initializer(tensor_f32("c", &[], &[1.5]));
                    b.add_node("Pow", &[&p, &c], vec![])
                }
                "PowCube" => {
                    let c = b.add_initializer(tensor_f32("c", &[1], &[3.0]));
                    b.add_node("Pow", &[&z, &c], vec![])
                }
                "PRelu" => {
                    let slope = constant(b, &[6], 121);
                    b.add_node("PRelu", &[&z, &slope], vec![])
                }
                "Max" | "Min" => {
                    let c = constant(b, &[6], 122);
                    b.add_node(op, &[&z, &c], vec![])
                }
                _ => b.add_node(op, &[&z], vec![]),
            };
            let v = constant(b, &[6, 2], 123);
            b.add_node("MatMul", &[&y, &v], vec![])
        });
        check_completeness(&m, &output_name(&m), &[rows(2, &[6], 124)], &[rows(3, &[6], 125)]);
    }
}

#[test]
fn min_and_max_of_two_varying_tensors_share_by_the_shapley_rule() {
    for op in ["Max", "Min"] {
        // Two varying operands (one broadcast) and a constant.
        let m = any_batch(model(&[&[1, 4], &[1, 1]], |b, x| {
            let w = constant(b, &[4, 4], 130);
            let h = b.add_node("MatMul", &[&x[0], &w], vec![]);
            let c = constant(b, &[4], 131);
            let y = b.add_node(op, &[&h, &x[1], &c], vec![]);
            let v = constant(b, &[4, 3], 132);
            b.add_node("MatMul", &[&y, &v], vec![])
        }));
        let x = [rows(2, &[4], 133), rows(2, &[1], 134)];
        let r = [rows(3, &[4], 135), rows(3, &[1], 136)];
        check_completeness(&m, &output_name(&m), &x, &r);
    }
}

/// Min/Max of three or more inputs are lowered into chains of binary ones, where each link
/// takes the rescale or two-player rule: complete through the chain.
#[test]
fn min_and_max_of_three_or_more_varying_tensors_are_complete() {
    for op in ["Max", "Min"] {
        // Three varying operands (one broadcast), then four with a constant among them.
        for with_constant in [false, true] {
            let m = any_batch(model(&[&[1, 4], &[1, 4], &[1, 1]], |b, x| {
                let w = constant(b, &[4, 4], 130);
                let h = b.add_node("MatMul", &[&x[0], &w], vec![]);
                let y = if with_constant {
                    let c = constant(b, &[4], 131);
                    b.add_node(op, &[&h, &c, &x[1], &x[2]], vec![])
                } else {
                    b.add_node(op, &[&h, &x[1], &x[2]], vec![])
                };
                let v = constant(b, &[4, 3], 132);
                b.add_node("MatMul", &[&y, &v], vec![])
            }));
            let x = [rows(2, &[4], 133), rows(2, &[4], 134), rows(2, &[1], 135)];
            let r = [rows(3, &[4], 136), rows(3, &[4], 137), rows(3, &[1], 138)];
            let worst = check_completeness(&m, &output_name(&m), &x, &r);
            assert!(worst <= 1e-5, "{op}: {worst}");
        }
    }
}

/// GatherElements with indices input and reference share (a constant, expanded over the rows
/// with the data's `Shape`) is linear in its data: its multiplier is its vector-Jacobian
/// product (repeated indices add up), and the Sigmoid after it is rescaled.
#[test]
fn gather_elements_with_shared_indices_is_complete() {
    let m = single_input(&[6], |b, x| {
        let w = constant(b, &[6, 6], 190);
        let h = b.add_node("MatMul", &[x, &w], vec![]);
        let h = b.add_node("Tanh", &[&h], vec![]);
        let picks = b.add_initializer(explaind_onnx::tensor_i64("picks", &[1, 8], &[0, 3, 3, 5, 1, 2, 0, 4]));
        let shape = b.add_node("Shape", &[&h], vec![]);
        let zero = b.add_initializer(explaind_onnx::tensor_i64("zero", &[1], &[0]));
        let one = b.add_initializer(explaind_onnx::tensor_i64("one", &[1], &[1]));
        let rows = b.add_node("Slice", &[&shape, &zero, &one], vec![]);
        let width = b.add_initializer(explaind_onnx::tensor_i64("width", &[1], &[8]));
        let target = b.add_node("Concat", &[&rows, &width], vec![AttributeProto::int("axis", 0)]);
        let indices = b.add_node("Expand", &[&picks, &target], vec![]);
        let gathered = b.add_node("GatherElements", &[&h, &indices], vec![AttributeProto::int("axis", 1)]);
        let g = b.add_node("Sigmoid", &[&gathered], vec![]);
        let v = constant(b, &[8, 2], 191);
        b.add_node("MatMul", &[&g, &v], vec![])
    });
    let worst = check_completeness(&m, &output_name(&m), &[rows(2, &[6], 192)], &[rows(3, &[6], 193)]);
    assert!(worst <= 1e-5, "{worst}");

    // Indices computed from the input (its row's argmax) pick other elements on the reference
    // side: refused, saying why.
    let m = single_input(&[6], |b, x| {
        let top = b.add_node("ArgMax", &[x], vec![AttributeProto::int("axis", 1), AttributeProto::int("keepdims", 1)]);
        let t = b.add_node("Tanh", &[x], vec![]);
        b.add_node("GatherElements", &[&t, &top], vec![AttributeProto::int("axis", 1)])
    });
    let err = compile_deeplift(&m, &DeepLiftRequest { output: output_name(&m), inputs: vec!["x0".into()], ..Default::default() })
        .unwrap_err();
    match err {
        explaind_graph::CompileError::UnsupportedForm { op_type, reason, .. } => {
            assert_eq!(op_type, "GatherElements");
            assert!(reason.contains("indices are computed from the attributed inputs"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn lowered_mish_and_normalizations_are_complete() {
    check_lowered_complete(&[6], 18, |b, z| b.add_node("Mish", &[z], vec![]));
    // x rows [3, 2, 2]: three channels, 2 × 2 positions.
    for undeclared in [false, true] {
        check_lowered_model_complete(&[3, 2, 2], 17, undeclared, |b, z| {
            let (scale, bias) = (constant(b, &[3], 64), constant(b, &[3], 65));
            b.add_node("InstanceNormalization", &[z, &scale, &bias], vec![])
        });
    }
    // x rows [4, 3]: four channels in two groups; scale and bias per group (18), per channel (21).
    for (opset, per) in [(18, 2), (21, 4)] {
        check_lowered_complete(&[4, 3], opset, |b, z| {
            let (scale, bias) = (constant(b, &[per], 66), constant(b, &[per], 67));
            b.add_node("GroupNormalization", &[z, &scale, &bias], vec![AttributeProto::int("num_groups", 2)])
        });
    }
    for axis in [-1, 1] {
        check_lowered_complete(&[3, 4], 23, |b, z| {
            let scale = constant(b, if axis == 1 { &[3, 4] } else { &[4] }, 68);
            b.add_node("RMSNormalization", &[z, &scale], vec![AttributeProto::int("axis", axis)])
        });
    }
}

/// Einsum lowered into transposes, reshapes and a `MatMul`: attention scores of two varying
/// operands (the Shapley rule on the 3-D product), and a contraction with a constant weight.
#[test]
fn lowered_einsum_is_complete() {
    let m = single_input(&[4, 3], |b, x| {
        let (wq, wk) = (constant(b, &[3, 2], 90), constant(b, &[3, 2], 91));
        let q = b.add_node("MatMul", &[x, &wq], vec![]);
        let k = b.add_node("MatMul", &[x, &wk], vec![]);
        let scores = b.add_node("Einsum", &[&q, &k], vec![AttributeProto::string("equation", "bqd,bkd->bqk")]);
        let weights = b.add_node("Softmax", &[&scores], vec![AttributeProto::int("axis", -1)]);
        let w = constant(b, &[5, 4], 92);
        b.add_node("Einsum", &[&weights, &w], vec![AttributeProto::string("equation", "bqk,ok->bqo")])
    });
    let worst = check_completeness(&m, &output_name(&m), &[rows(2, &[4, 3], 93)], &[rows(3, &[4, 3], 94)]);
    assert!(worst <= 1e-5, "{worst}");
}

#[test]
fn expand_tile_split_and_where_stay_complete() {
    let m = single_input(&[6], |b, x| {
        let w = constant(b, &[6, 6], 140);
        let h = b.add_node("MatMul", &[x, &w], vec![]);
        let h = b.add_node("Tanh", &[&h], vec![]);
        // Split into 2, 1 and 3 columns; the middle part is unused.
        let sizes = b.add_initializer(explaind_onnx::tensor_i64("sizes", &[3], &[2, 1, 3]));
        let parts = b.add_node_multi("Split", &[&h, &sizes], 3, vec![AttributeProto::int("axis", 1)]);
        let axes = b.add_initializer(explaind_onnx::tensor_i64("axes", &[1], &[1]));
        let a = b.add_node("Unsqueeze", &[&parts[0], &axes], vec![]);
        let shape = b.add_initializer(explaind_onnx::tensor_i64("shape", &[3], &[1, 3, 2]));
        let a = b.add_node("Expand", &[&a, &shape], vec![]);
        let a = b.add_node("Flatten", &[&a], vec![]);
        let repeats = b.add_initializer(explaind_onnx::tensor_i64("repeats", &[2], &[1, 2]));
        let c = b.add_node("Tile", &[&parts[2], &repeats], vec![]);
        let s = b.add_node("Sigmoid", &[&c], vec![]);
        let both = b.add_node("Add", &[&a, &s], vec![]);
        let k = constant(b, &[6], 141);
        let zero = b.add_initializer(tensor_f32("zero", &[], &[0.0]));
        let condition = b.add_node("Greater", &[&k, &zero], vec![]);
        let e = b.add_node("Exp", &[&both], vec![]);
        let chosen = b.add_node("Where", &[&condition, &both, &e], vec![]);
        let v = constant(b, &[6, 2], 142);
        b.add_node("MatMul", &[&chosen, &v], vec![])
    });
    check_completeness(&m, &output_name(&m), &[rows(2, &[6], 143)], &[rows(3, &[6], 144)]);

    // A condition computed from the input differs between input and reference: refused.
    let m = single_input(&[4], |b, x| {
        let zero = b.add_initializer(tensor_f32("zero", &[], &[0.0]));
        let condition = b.add_node("Greater", &[x, &zero], vec![]);
        let t = b.add_node("Tanh", &[x], vec![]);
        b.add_node("Where", &[&condition, x, &t], vec![])
    });
    let err = compile_deeplift(&m, &DeepLiftRequest { output: output_name(&m), inputs: vec!["x0".into()], ..Default::default() })
        .unwrap_err();
    assert!(matches!(&err, explaind_graph::CompileError::UnsupportedForm { op_type, .. } if op_type == "Where"), "{err}");
}

#[test]
fn lowered_sum_square_and_l2_reductions_are_complete() {
    for op in ["ReduceSumSquare", "ReduceL2"] {
        for opset in [17, 18] {
            let m = at_opset(
                single_input(&[3, 4], |b, x| {
                    let w = constant(b, &[4, 4], 150);
                    let z = b.add_node("MatMul", &[x, &w], vec![]);
                    let keep = AttributeProto::int("keepdims", 0);
                    let r = if opset >= 18 {
                        let axes = b.add_initializer(explaind_onnx::tensor_i64("axes", &[1], &[2]));
                        b.add_node(op, &[&z, &axes], vec![keep])
                    } else {
                        b.add_node(op, &[&z], vec![keep, AttributeProto::ints("axes", [2])])
                    };
                    let v = constant(b, &[3, 2], 151);
                    b.add_node("MatMul", &[&r, &v], vec![])
                }),
                opset,
            );
            check_completeness(&m, &output_name(&m), &[rows(2, &[3, 4], 152)], &[rows(3, &[3, 4], 153)]);
        }
    }
}

#[test]
fn reduce_max_min_and_log_sum_exp_are_complete() {
    for op in ["ReduceMax", "ReduceMin", "ReduceLogSumExp"] {
        for opset in [17, 18] {
            for (axis, keepdims) in [(2i64, 0i64), (-1, 1), (1, 0)] {
                let m = at_opset(
                    single_input(&[3, 4], |b, x| {
                        let w = constant(b, &[4, 4], 170);
                        let z = b.add_node("MatMul", &[x, &w], vec![]);
                        // ReLU zeros tie for the minimum: they share it.
                        let z = b.add_node("Relu", &[&z], vec![]);
                        let keep = AttributeProto::int("keepdims", keepdims);
                        let r = if opset >= 18 {
                            let axes = b.add_initializer(explaind_onnx::tensor_i64("axes", &[1], &[axis]));
                            b.add_node(op, &[&z, &axes], vec![keep])
                        } else {
                            b.add_node(op, &[&z], vec![keep, AttributeProto::ints("axes", [axis])])
                        };
                        b.add_node("Flatten", &[&r], vec![])
                    }),
                    opset,
                );
                check_completeness(&m, &output_name(&m), &[rows(2, &[3, 4], 171)], &[rows(3, &[3, 4], 172)]);
            }
        }
    }
}

#[test]
fn reductions_over_the_batch_are_refused() {
    let refused = |m: ModelProto, op: &str| {
        let err =
            compile_deeplift(&m, &DeepLiftRequest { output: output_name(&m), inputs: vec!["x0".into()], ..Default::default() })
                .unwrap_err();
        assert!(matches!(&err, explaind_graph::CompileError::UnsupportedForm { op_type, .. } if op_type == op), "{err}");
    };
    // Over every axis, the batch's too.
    refused(single_input(&[4], |b, x| b.add_node("ReduceMax", &[x], vec![])), "ReduceMax");
    refused(
        single_input(&[4], |b, x| b.add_node("ReduceLogSumExp", &[x], vec![AttributeProto::ints("axes", [-2])])),
        "ReduceLogSumExp",
    );
    refused(single_input(&[4], |b, x| b.add_node("ReduceMin", &[x], vec![AttributeProto::ints("axes", [0, 1])])), "ReduceMin");
}

#[test]
fn masks_of_the_inputs_are_refused_and_shape_paths_are_not() {
    // Tanh(x) · (x > 0): the mask differs between input and reference.
    let m = single_input(&[4], |b, x| {
        let zero = b.add_initializer(tensor_f32("zero", &[], &[0.0]));
        let positive = b.add_node("Greater", &[x, &zero], vec![]);
        let mask = b.add_node("Cast", &[&positive], vec![AttributeProto::int("to", 1)]);
        let t = b.add_node("Tanh", &[x], vec![]);
        b.add_node("Mul", &[&t, &mask], vec![])
    });
    let err = compile_deeplift(&m, &DeepLiftRequest { output: output_name(&m), inputs: vec!["x0".into()], ..Default::default() })
        .unwrap_err();
    assert!(matches!(&err, explaind_graph::CompileError::UnsupportedForm { op_type, .. } if op_type == "Mul"), "{err}");

    // Shapes of the inputs (through Shape, ConstantOfShape) are shared by input and reference.
    let m = single_input(&[4], |b, x| {
        let w = constant(b, &[4, 4], 160);
        let h = b.add_node("MatMul", &[x, &w], vec![]);
        let shape = b.add_node("Shape", &[&h], vec![]);
        let ones = b.add_node("ConstantOfShape", &[&shape], vec![AttributeProto::tensor("value", tensor_f32("", &[1], &[0.25]))]);
        let h = b.add_node("Add", &[&h, &ones], vec![]);
        let t = b.add_node("Sigmoid", &[&h], vec![]);
        // The row's width (a Size would count the rows too, which the test's batches change).
        let x_shape = b.add_node("Shape", &[x], vec![]);
        let last = b.add_initializer(explaind_onnx::tensor_i64("last", &[], &[-1]));
        let width = b.add_node("Gather", &[&x_shape, &last], vec![]);
        let size = b.add_node("Cast", &[&width], vec![AttributeProto::int("to", 1)]);
        let t = b.add_node("Div", &[&t, &size], vec![]);
        let v = constant(b, &[4, 2], 161);
        b.add_node("MatMul", &[&t, &v], vec![])
    });
    check_completeness(&m, &output_name(&m), &[rows(1, &[4], 162)], &[rows(1, &[4], 163)]);
}

#[test]
fn the_split_models_compute_the_new_rules_as_the_combined_one_does() {
    let m = at_opset(
        single_input(&[3, 4], |b, x| {
            let w = constant(b, &[4, 4], 180);
            let z = b.add_node("MatMul", &[x, &w], vec![]);
            let slope = constant(b, &[4], 181);
            let z = b.add_node("PRelu", &[&z, &slope], vec![]);
            let sizes = b.add_initializer(explaind_onnx::tensor_i64("sizes", &[2], &[1, 3]));
            let parts = b.add_node_multi("Split", &[&z, &sizes], 2, vec![AttributeProto::int("axis", -1)]);
            let repeats = b.add_initializer(explaind_onnx::tensor_i64("repeats", &[3], &[1, 1, 3]));
            let tiled = b.add_node("Tile", &[&parts[0], &repeats], vec![]);
            let both = b.add_node("Max", &[&tiled, &parts[1]], vec![]);
            let c = constant(b, &[3], 182);
            let low = b.add_node("Min", &[&both, &c], vec![]);
            let axes = b.add_initializer(explaind_onnx::tensor_i64("axes", &[1], &[-1]));
            let r = b.add_node("ReduceMax", &[&low, &axes], vec![AttributeProto::int("keepdims", 0)]);
            let lse = b.add_node("ReduceLogSumExp", &[&low, &axes], vec![AttributeProto::int("keepdims", 0)]);
            let r = b.add_node("Add", &[&r, &lse], vec![]);
            let s = b.add_node("Sin", &[&r], vec![]);
            let v = constant(b, &[3, 2], 183);
            b.add_node("MatMul", &[&s, &v], vec![])
        }),
        18,
    );
    let (x, r) = (rows(4, &[3, 4], 184), rows(4, &[3, 4], 185));
    check_split_against_pairs(&m, &output_name(&m), &x, &r, 3);
    check_completeness(&m, &output_name(&m), &[x], &[r]);
}

#[test]
fn resize_nearest_and_linear_are_complete() {
    let resize = |b: &mut GraphBuilder, x: &str, opset: i64, mode: &str, transform: &str, spatial: bool| {
        let mut attrs = vec![
            AttributeProto::string("mode", mode),
            AttributeProto::string("coordinate_transformation_mode", transform),
            AttributeProto::string("nearest_mode", "floor"),
        ];
        let inputs = if opset >= 18 && spatial {
            // Opset 18's axes, with sizes: a non-integer factor.
            attrs.push(AttributeProto::ints("axes", [2, 3]));
            let sizes = b.add_initializer(explaind_onnx::tensor_i64("sizes", &[2], &[5, 7]));
            vec![x.to_string(), String::new(), String::new(), sizes]
        } else {
            let scales = b.add_initializer(tensor_f32("scales", &[4], &[1.0, 1.0, 2.0, 2.0]));
            vec![x.to_string(), String::new(), scales]
        };
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        b.add_node("Resize", &refs, attrs)
    };
    let cases = [
        (13, "nearest", "asymmetric", false),
        (13, "linear", "half_pixel", false),
        (13, "linear", "pytorch_half_pixel", false),
        (18, "linear", "align_corners", true),
        (19, "linear", "asymmetric", true),
    ];
    for (opset, mode, transform, spatial) in cases {
        let m = at_opset(
            single_input(&[2, 3, 4], |b, x| {
                let y = resize(b, x, opset, mode, transform, spatial);
                let y = b.add_node("Relu", &[&y], vec![]);
                // A second resize after the first: its input's size is the first one's output.
                let y = resize(b, &y, 13, "nearest", "asymmetric", false);
                let flat = b.add_node("Flatten", &[&y], vec![]);
                let width = if spatial { 2 * 10 * 14 } else { 2 * 12 * 16 };
                let v = constant(b, &[width, 3], 61);
                b.add_node("MatMul", &[&flat, &v], vec![])
            }),
            opset,
        );
        check_completeness(&m, &output_name(&m), &[rows(2, &[2, 3, 4], 62)], &[rows(3, &[2, 3, 4], 63)]);
    }
}

/// `F.interpolate(x, size=skip.shape[2:])` (sizes computed from the shapes at run time, which
/// input and reference share) is linear: complete, with any number of rows.
#[test]
fn resize_to_a_size_computed_at_run_time_is_complete() {
    for opset in [13, 18] {
        let m = resize_to_skip_model(opset, "linear", "half_pixel", true, "batch".into());
        let worst = check_completeness(&m, &output_name(&m), &[rows(2, &[2, 3, 4], 64)], &[rows(3, &[2, 3, 4], 65)]);
        assert!(worst <= 1e-5, "opset {opset}: {worst}");
    }
}

/// A small attention block on x [batch, 4, 3]: Q, K, V linear in x, Q·Kᵀ/√d plus a constant
/// additive mask (`fill` at masked key positions: finfo(float32).min or −∞), Softmax, ·V.
pub fn masked_attention(fill: f32) -> ModelProto {
    single_input(&[4, 3], |b, x| {
        let (wq, wk, wv) = (constant(b, &[3, 2], 90), constant(b, &[3, 2], 91), constant(b, &[3, 2], 92));
        let q = b.add_node("MatMul", &[x, &wq], vec![]);
        let k = b.add_node("MatMul", &[x, &wk], vec![]);
        let v = b.add_node("MatMul", &[x, &wv], vec![]);
        let kt = b.add_node("Transpose", &[&k], vec![AttributeProto::ints("perm", [0, 2, 1])]);
        // The two products of varying operands need their operands' ranks declared.
        for (name, shape) in [(&q, [4i64, 2]), (&kt, [2, 4]), (&v, [4, 2])] {
            let dims = [explaind_onnx::Dim::from("batch"), shape[0].into(), shape[1].into()];
            let info = explaind_onnx::tensor_value_info(name.clone(), explaind_onnx::proto::tensor_proto::DataType::Float, dims);
            b.graph_mut().value_info.push(info);
        }
        let scores = b.add_node("MatMul", &[&q, &kt], vec![]);
        let root = b.add_initializer(tensor_f32("sqrt_d", &[], &[2f32.sqrt()]));
        let scores = b.add_node("Div", &[&scores, &root], vec![]);
        // Query i sees keys 0..=i (causal), and key 3 is padding for everyone.
        let mut mask = vec![0f32; 16];
        for i in 0..4 {
            for j in 0..4 {
                if j > i || j == 3 {
                    mask[i * 4 + j] = fill;
                }
            }
        }
        let mask = b.add_initializer(tensor_f32("mask", &[1, 4, 4], &mask));
        let masked = b.add_node("Add", &[&scores, &mask], vec![]);
        let weights = b.add_node("Softmax", &[&masked], vec![AttributeProto::int("axis", -1)]);
        let dims = [explaind_onnx::Dim::from("batch"), 4.into(), 4.into()];
        let info = explaind_onnx::tensor_value_info(weights.clone(), explaind_onnx::proto::tensor_proto::DataType::Float, dims);
        b.graph_mut().value_info.push(info);
        b.add_node("MatMul", &[&weights, &v], vec![])
    })
}

#[test]
fn attention_with_a_huge_negative_mask_is_complete_and_finite() {
    for fill in [f32::MIN, f32::NEG_INFINITY] {
        let m = masked_attention(fill);
        let worst = check_completeness(&m, &output_name(&m), &[rows(2, &[4, 3], 93)], &[rows(3, &[4, 3], 94)]);
        assert!(worst.is_finite() && worst <= 1e-4, "fill {fill}: {worst}");
    }
}

#[test]
fn masked_logits_get_multipliers_of_exactly_zero() {
    for fill in [f32::MIN, f32::NEG_INFINITY] {
        // Logits x [batch, 4, 4] plus the mask, Softmax, · a constant V.
        let masked_at = |i: usize, j: usize| j > i || j == 3;
        let m = single_input(&[4, 4], |b, x| {
            let mask: Vec<f32> = (0..16).map(|p| if masked_at(p / 4, p % 4) { fill } else { 0.0 }).collect();
            let mask = b.add_initializer(tensor_f32("mask", &[1, 4, 4], &mask));
            let z = b.add_node("Add", &[x, &mask], vec![]);
            let w = b.add_node("Softmax", &[&z], vec![]);
            let v = constant(b, &[4, 2], 95);
            b.add_node("MatMul", &[&w, &v], vec![])
        });
        check_completeness(&m, &output_name(&m), &[rows(2, &[4, 4], 96)], &[rows(3, &[4, 4], 97)]);
        let compiled =
            compile_deeplift(&m, &DeepLiftRequest { output: output_name(&m), inputs: vec!["x0".into()], ..Default::default() })
                .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let attribution = load(&compiled.model, &dir, "deeplift");
        let (x, r) = (rows(1, &[4, 4], 98) * 3.0, rows(1, &[4, 4], 99));
        let seed = ndarray::ArrayD::<f32>::ones(IxDyn(&[1, 4, 2]));
        let results = attribution.run(&[x.view(), r.view(), seed.view()]).unwrap().0;
        let multipliers = results.last().unwrap();
        assert_eq!(multipliers.shape(), &[1, 4, 4]);
        for (p, &v) in multipliers.iter().enumerate() {
            assert!(v.is_finite(), "fill {fill}: multiplier {p} is {v}");
            if masked_at(p / 4, p % 4) {
                assert_eq!(v, 0.0, "fill {fill}: masked position {p}");
            }
        }
    }
}

/// LogSoftmax as the logits minus their log-sum-exp: complete on random rows, and on rows
/// whose logits partly do not move while the maximum does.
#[test]
fn log_softmax_is_complete() {
    let m = single_input(&[5], |b, x| {
        let w = constant(b, &[4, 5], 160);
        let logits = b.add_node("Gemm", &[x, &w], vec![AttributeProto::int("transB", 1), AttributeProto::float("alpha", 3.0)]);
        b.add_node("LogSoftmax", &[&logits], vec![AttributeProto::int("axis", 1)])
    });
    let worst = check_completeness(&m, &output_name(&m), &[rows(3, &[5], 161)], &[rows(4, &[5], 162)]);
    assert!(worst <= 1e-6, "{worst}");
    let m = single_input(&[4], |b, x| b.add_node("LogSoftmax", &[x], vec![AttributeProto::int("axis", -1)]));
    let x = ArrayD::from_shape_vec(IxDyn(&[1, 4]), vec![0.5, 2.0, -1.0, 0.3]).unwrap();
    let r = ArrayD::from_shape_vec(IxDyn(&[2, 4]), vec![0.5, -0.2, 3.0, 0.3, 0.5, 2.0, -1.0, 0.3]).unwrap();
    let worst = check_completeness(&m, &output_name(&m), &[x], &[r]);
    assert!(worst <= 1e-6, "{worst}");
}

/// LogSoftmax over logits with a masked position (−∞ or finfo(float32).min added), its finite
/// outputs kept: complete, finite, and the masked logit's multiplier exactly 0.
#[test]
fn log_softmax_over_masked_logits_is_complete_and_masked_positions_get_zero() {
    for fill in [f32::MIN, f32::NEG_INFINITY] {
        let m = single_input(&[4], |b, x| {
            let mask = b.add_initializer(tensor_f32("mask", &[1, 4], &[0.0, 0.0, 0.0, fill]));
            let z = b.add_node("Add", &[x, &mask], vec![]);
            let y = b.add_node("LogSoftmax", &[&z], vec![AttributeProto::int("axis", 1)]);
            let (start, end) = (explaind_onnx::tensor_i64("start", &[1], &[0]), explaind_onnx::tensor_i64("end", &[1], &[3]));
            let (start, end) = (b.add_initializer(start), b.add_initializer(end));
            let axes = b.add_initializer(explaind_onnx::tensor_i64("axes", &[1], &[1]));
            b.add_node("Slice", &[&y, &start, &end, &axes], vec![])
        });
        let worst = check_completeness(&m, &output_name(&m), &[rows(2, &[4], 163)], &[rows(3, &[4], 164)]);
        assert!(worst <= 1e-6, "fill {fill}: {worst}");
        let compiled =
            compile_deeplift(&m, &DeepLiftRequest { output: output_name(&m), inputs: vec!["x0".into()], ..Default::default() })
                .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let attribution = load(&compiled.model, &dir, "deeplift");
        let (x, r) = (rows(1, &[4], 165) * 3.0, rows(1, &[4], 166));
        let seed = ndarray::ArrayD::<f32>::ones(IxDyn(&[1, 3]));
        let multipliers = attribution.run(&[x.view(), r.view(), seed.view()]).unwrap().0.pop().unwrap();
        assert!(multipliers.iter().all(|v| v.is_finite()), "fill {fill}: {multipliers:?}");
        assert_eq!(multipliers.as_slice().unwrap()[3], 0.0, "fill {fill}: the masked logit");
    }
}
