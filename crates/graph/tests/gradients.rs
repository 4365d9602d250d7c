//! Plain gradients from the compiled graph equal central finite differences of the original
//! model, op by op (with broadcasting cases) and on the demo models. Both sides run in the
//! real ONNX Runtime.

mod common;

use common::*;
use explaind_graph::{CompileError, GradientRequest, compile_gradient};
use explaind_onnx::{AttributeProto, GraphBuilder, ModelProto, tensor_f32, tensor_i64};
use ndarray::{ArrayD, IxDyn};

/// Checks d(sum(seed · output))/d(input) for every model input against central differences.
///
/// Where the function has a kink within the step (a ReLU at zero, a max-pool tie), the forward
/// and backward differences disagree and no single gradient is right; such elements are skipped,
/// and at most `max_skipped` of them (a fraction) may be.
fn check_gradients_skipping(model: &ModelProto, output: &str, inputs: &[ArrayD<f32>], h: f32, max_skipped: f64) {
    let dir = tempfile::tempdir().unwrap();
    let graph = model.graph.as_ref().unwrap();
    let input_names: Vec<String> = graph.input.iter().map(|i| i.name().to_string()).collect();
    let output_index = graph.output.iter().position(|o| o.name() == output).unwrap();
    let forward = load(model, &dir, "forward");
    let views: Vec<_> = inputs.iter().map(|a| a.view()).collect();
    let y = forward.run(&views).unwrap().0.swap_remove(output_index);
    let seed = array(y.shape(), 99, 0.0);

    let request =
        GradientRequest { outputs: vec![output.into()], wrt: input_names.clone(), expose: vec![], ..Default::default() };
    let compiled = compile_gradient(model, &request).unwrap();
    let backward = load(&compiled.model, &dir, "backward");
    let mut with_seed = views.clone();
    with_seed.push(seed.view());
    let results = backward.run(&with_seed).unwrap().0;
    let n_outputs = graph.output.len();

    let objective = |inputs: &[ArrayD<f32>]| -> f64 {
        let views: Vec<_> = inputs.iter().map(|a| a.view()).collect();
        let y = forward.run(&views).unwrap().0.swap_remove(output_index);
        y.iter().zip(seed.iter()).map(|(a, b)| (*a as f64) * (*b as f64)).sum()
    };
    let at_inputs = objective(inputs);
    let (mut checked, mut skipped) = (0usize, 0usize);
    for (k, name) in input_names.iter().enumerate() {
        let grad = &results[n_outputs + k];
        assert_eq!(grad.shape(), inputs[k].shape(), "gradient of {name} has the wrong shape");
        for i in 0..inputs[k].len() {
            let mut plus = inputs.to_vec();
            plus[k].as_slice_mut().unwrap()[i] += h;
            let mut minus = inputs.to_vec();
            minus[k].as_slice_mut().unwrap()[i] -= h;
            let (f_plus, f_minus) = (objective(&plus), objective(&minus));
            let numeric = (f_plus - f_minus) / (2.0 * h as f64);
            let forward_diff = (f_plus - at_inputs) / h as f64;
            let backward_diff = (at_inputs - f_minus) / h as f64;
            let tolerance = 2e-3 + 1e-2 * numeric.abs();
            // A kink makes the one-sided differences disagree; the compiled gradient is then one
            // of them, half that disagreement away from the central difference.
            if max_skipped > 0.0 && (forward_diff - backward_diff).abs() > 2.0 * tolerance {
                skipped += 1;
                continue;
            }
            checked += 1;
            let analytic = grad.as_slice().unwrap()[i] as f64;
            assert!((analytic - numeric).abs() <= tolerance, "d/d{name}[{i}]: compiled {analytic}, finite difference {numeric}");
        }
    }
    let fraction = skipped as f64 / (checked + skipped) as f64;
    assert!(fraction <= max_skipped, "{skipped} of {} elements sit on kinks (allowed: {max_skipped})", checked + skipped);
}

/// As [`check_gradients_skipping`], for inputs chosen at least 0.1 away from every kink, so
/// that a step of 0.01 crosses none: every element is compared.
fn check_gradients(model: &ModelProto, output: &str, inputs: &[ArrayD<f32>]) {
    check_gradients_skipping(model, output, inputs, 1e-2, 0.0);
}

fn check(shapes: &[&[usize]], gap: f32, body: impl FnOnce(&mut GraphBuilder, &[String]) -> String) {
    let m = model(shapes, body);
    let inputs: Vec<_> = shapes.iter().enumerate().map(|(i, s)| array(s, i as u64 + 1, gap)).collect();
    check_gradients(&m, &output_name(&m), &inputs);
}

#[test]
fn arithmetic_with_broadcasting() {
    check(&[&[2, 3, 4], &[3, 1]], 0.0, |b, x| {
        let three = b.add_initializer(tensor_f32("three", &[], &[3.0]));
        let s = b.add_node("Add", &[&x[0], &x[1]], vec![]);
        let d = b.add_node("Sub", &[&s, &x[1]], vec![]);
        let p = b.add_node("Mul", &[&d, &x[0]], vec![]);
        let den = b.add_node("Add", &[&x[1], &three], vec![]);
        let q = b.add_node("Div", &[&p, &den], vec![]);
        let n = b.add_node("Neg", &[&q], vec![]);
        b.add_node("Sum", &[&n, &x[1], &x[0]], vec![])
    });
    // A constant broadcast over the varying input, as biases are.
    check(&[&[2, 5]], 0.0, |b, x| {
        let bias = constant(b, &[5], 7);
        b.add_node("Add", &[&bias, &x[0]], vec![])
    });
}

#[test]
fn elementwise_nonlinearities() {
    for op in ["Relu", "Sigmoid", "Tanh", "Softplus", "Exp", "Erf", "Elu", "LeakyRelu"] {
        let attrs = match op {
            "Elu" => vec![AttributeProto::float("alpha", 0.7)],
            "LeakyRelu" => vec![AttributeProto::float("alpha", 0.2)],
            _ => vec![],
        };
        check(&[&[3, 4]], 0.1, |b, x| b.add_node(op, &[&x[0]], attrs));
    }
    // Sqrt and Reciprocal on a positive argument.
    for op in ["Sqrt", "Reciprocal"] {
        check(&[&[3, 4]], 0.0, |b, x| {
            let one = b.add_initializer(tensor_f32("one", &[], &[1.0]));
            let sq = b.add_node("Mul", &[&x[0], &x[0]], vec![]);
            let pos = b.add_node("Add", &[&sq, &one], vec![]);
            b.add_node(op, &[&pos], vec![])
        });
    }
    check(&[&[4, 5]], 0.1, |b, x| {
        let lo = b.add_initializer(tensor_f32("lo", &[], &[-0.5]));
        let hi = b.add_initializer(tensor_f32("hi", &[], &[0.45]));
        b.add_node("Clip", &[&x[0], &lo, &hi], vec![])
    });
}

#[test]
fn softmax_and_log_softmax() {
    for axis in [1, -1, 0] {
        check(&[&[3, 4, 5]], 0.0, |b, x| b.add_node("Softmax", &[&x[0]], vec![AttributeProto::int("axis", axis)]));
        check(&[&[3, 4]], 0.0, |b, x| b.add_node("LogSoftmax", &[&x[0]], vec![AttributeProto::int("axis", axis.min(1))]));
    }
}

#[test]
fn matmul_and_gemm() {
    check(&[&[2, 3]], 0.0, |b, x| {
        let w = constant(b, &[3, 4], 3);
        b.add_node("MatMul", &[&x[0], &w], vec![])
    });
    check(&[&[2, 3, 4], &[4, 5]], 0.0, |b, x| b.add_node("MatMul", &[&x[0], &x[1]], vec![]));
    for (trans_a, trans_b) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
        let a_shape: &[usize] = if trans_a == 1 { &[3, 2] } else { &[2, 3] };
        let b_shape: &[usize] = if trans_b == 1 { &[4, 3] } else { &[3, 4] };
        check(&[a_shape, b_shape, &[4]], 0.0, |b, x| {
            let attrs = vec![
                AttributeProto::float("alpha", 0.5),
                AttributeProto::float("beta", 2.0),
                AttributeProto::int("transA", trans_a),
                AttributeProto::int("transB", trans_b),
            ];
            b.add_node("Gemm", &[&x[0], &x[1], &x[2]], attrs)
        });
    }
}

/// `m` with the spatial axes (2 on) of every input symbolic: the compiler then cannot size a
/// convolution's Jacobian and takes the convolution routes.
fn symbolic_spatial(mut m: ModelProto) -> ModelProto {
    for input in &mut m.graph.as_mut().unwrap().input {
        if let Some(explaind_onnx::proto::type_proto::Value::TensorType(t)) = input.r#type.as_mut().unwrap().value.as_mut() {
            for (axis, dim) in t.shape.as_mut().unwrap().dim.iter_mut().enumerate().skip(2) {
                *dim = explaind_onnx::Dim::from(format!("s{axis}").as_str()).into();
            }
        }
    }
    m
}

/// Checks a convolution's gradient both ways: with the declared (static) sizes, where a small
/// 2-D convolution's gradient is a product with its Jacobian (`MatMul`), and with symbolic
/// sizes, where it is `ConvTranspose` or, from 8 input channels at stride 1, a `Conv` with a
/// flipped kernel (`flipped`).
fn check_conv(shape: &[usize], flipped: bool, body: impl Fn(&mut GraphBuilder, &[String]) -> String) {
    let ops = |m: &ModelProto| -> Vec<String> {
        let request =
            GradientRequest { outputs: vec![output_name(m)], wrt: vec!["x0".into()], expose: vec![], ..Default::default() };
        let compiled = compile_gradient(m, &request).unwrap();
        let forward_nodes = m.graph.as_ref().unwrap().node.len();
        compiled.model.graph.unwrap().node[forward_nodes..].iter().map(|n| n.op_type().to_string()).collect()
    };
    let inputs = [array(shape, 1, 0.0)];
    let static_sizes = model(&[shape], &body);
    let has = |ops: &[String], op: &str| ops.iter().any(|o| o == op);
    if shape.len() == 4 {
        assert!(has(&ops(&static_sizes), "MatMul"), "{:?}", ops(&static_sizes));
    }
    check_gradients(&static_sizes, &output_name(&static_sizes), &inputs);
    let symbolic = symbolic_spatial(model(&[shape], &body));
    let symbolic_ops = ops(&symbolic);
    assert!(!has(&symbolic_ops, "MatMul"), "{symbolic_ops:?}");
    assert_eq!(has(&symbolic_ops, "Conv"), flipped, "{symbolic_ops:?}");
    check_gradients(&symbolic, &output_name(&symbolic), &inputs);
}

#[test]
fn convolutions() {
    // Strided, padded, and with a size the stride does not divide: the last row/column is
    // never read by the forward pass and gets zero gradient.
    check_conv(&[2, 2, 7, 7], false, |b, x| {
        let w = constant(b, &[3, 2, 3, 3], 5);
        let bias = constant(b, &[3], 6);
        let attrs = vec![AttributeProto::ints("pads", [1, 1, 1, 1]), AttributeProto::ints("strides", [2, 2])];
        b.add_node("Conv", &[&x[0], &w, &bias], attrs)
    });
    // The stem of MobileNet and EfficientNet: stride 2, padding 1, kernel 3 on an even size.
    // The last window still reads the last row and column, which the transposed
    // convolution's end trimming would drop (a zero gradient there until this case).
    check_conv(&[2, 3, 8, 8], false, |b, x| {
        let w = constant(b, &[4, 3, 3, 3], 12);
        let attrs = vec![AttributeProto::ints("pads", [1, 1, 1, 1]), AttributeProto::ints("strides", [2, 2])];
        b.add_node("Conv", &[&x[0], &w], attrs)
    });
    // Grouped and dilated.
    check_conv(&[1, 4, 6, 6], false, |b, x| {
        let w = constant(b, &[4, 2, 2, 2], 8);
        let attrs = vec![AttributeProto::int("group", 2), AttributeProto::ints("dilations", [2, 2])];
        b.add_node("Conv", &[&x[0], &w], attrs)
    });
    // Stride 1 and 16 input channels: the flipped-kernel route, with asymmetric pads.
    check_conv(&[2, 16, 5, 6], true, |b, x| {
        let w = constant(b, &[3, 16, 3, 2], 11);
        b.add_node("Conv", &[&x[0], &w], vec![AttributeProto::ints("pads", [1, 0, 2, 1])])
    });
    // One-dimensional: always ConvTranspose.
    check_conv(&[2, 3, 9], false, |b, x| {
        let w = constant(b, &[2, 3, 4], 9);
        b.add_node("Conv", &[&x[0], &w], vec![AttributeProto::ints("strides", [3])])
    });
    check(&[&[1, 2, 4, 4]], 0.0, |b, x| {
        let w = constant(b, &[2, 3, 3, 3], 10);
        let attrs = vec![AttributeProto::ints("pads", [1, 1, 1, 1]), AttributeProto::ints("strides", [2, 2])];
        b.add_node("ConvTranspose", &[&x[0], &w], attrs)
    });
}

/// Distinct values spaced well beyond the finite-difference step, so max-pool's argmax does
/// not change under perturbation.
fn spaced(shape: &[usize]) -> ArrayD<f32> {
    let count: usize = shape.iter().product();
    let mut order: Vec<usize> = (0..count).collect();
    // A fixed shuffle.
    for i in (1..count).rev() {
        order.swap(i, (i * 7919 + 13) % (i + 1));
    }
    ArrayD::from_shape_vec(IxDyn(shape), order.iter().map(|&k| k as f32 * 0.05 - 1.0).collect()).unwrap()
}

#[test]
fn pooling() {
    let overlapping = model(&[&[2, 2, 5, 5]], |b, x| {
        let attrs = vec![
            AttributeProto::ints("kernel_shape", [3, 3]),
            AttributeProto::ints("strides", [1, 1]),
            AttributeProto::ints("pads", [1, 1, 1, 1]),
        ];
        b.add_node("MaxPool", &[&x[0]], attrs)
    });
    check_gradients(&overlapping, &output_name(&overlapping), &[spaced(&[2, 2, 5, 5])]);
    let tiled = model(&[&[2, 3, 4, 4]], |b, x| {
        let attrs = vec![AttributeProto::ints("kernel_shape", [2, 2]), AttributeProto::ints("strides", [2, 2])];
        b.add_node("MaxPool", &[&x[0]], attrs)
    });
    check_gradients(&tiled, &output_name(&tiled), &[spaced(&[2, 3, 4, 4])]);

    check(&[&[2, 3, 5, 5]], 0.0, |b, x| {
        let attrs = vec![AttributeProto::ints("kernel_shape", [2, 2]), AttributeProto::ints("strides", [2, 2])];
        b.add_node("AveragePool", &[&x[0]], attrs)
    });
    check(&[&[1, 2, 5, 5]], 0.0, |b, x| {
        let attrs = vec![
            AttributeProto::ints("kernel_shape", [3, 3]),
            AttributeProto::ints("pads", [1, 1, 1, 1]),
            AttributeProto::int("count_include_pad", 1),
        ];
        b.add_node("AveragePool", &[&x[0]], attrs)
    });
    // Stride 2, padding 1, kernel 3 on an even size: the last window reads the last row.
    check(&[&[1, 2, 6, 6]], 0.0, |b, x| {
        let attrs = vec![
            AttributeProto::ints("kernel_shape", [3, 3]),
            AttributeProto::ints("strides", [2, 2]),
            AttributeProto::ints("pads", [1, 1, 1, 1]),
            AttributeProto::int("count_include_pad", 1),
        ];
        b.add_node("AveragePool", &[&x[0]], attrs)
    });
    check(&[&[2, 3, 4, 5]], 0.0, |b, x| b.add_node("GlobalAveragePool", &[&x[0]], vec![]));
}

#[test]
fn batch_normalization() {
    check(&[&[2, 3, 4, 4]], 0.0, |b, x| {
        let scale = constant(b, &[3], 11);
        let bias = constant(b, &[3], 12);
        let mean = constant(b, &[3], 13);
        let var = b.add_initializer(tensor_f32("var", &[3], &[0.5, 1.5, 2.0]));
        b.add_node("BatchNormalization", &[&x[0], &scale, &bias, &mean, &var], vec![AttributeProto::float("epsilon", 1e-3)])
    });
}

#[test]
fn shape_and_layout_ops() {
    check(&[&[2, 3, 4]], 0.0, |b, x| {
        let f = b.add_node("Flatten", &[&x[0]], vec![AttributeProto::int("axis", 1)]);
        let w = constant(b, &[12, 2], 14);
        b.add_node("MatMul", &[&f, &w], vec![])
    });
    check(&[&[2, 3, 4]], 0.0, |b, x| {
        let shape = b.add_initializer(tensor_i64("shape", &[3], &[4, 3, 2]));
        let r = b.add_node("Reshape", &[&x[0], &shape], vec![]);
        let axes = b.add_initializer(tensor_i64("axes", &[1], &[1]));
        let u = b.add_node("Unsqueeze", &[&r, &axes], vec![]);
        let t = b.add_node("Transpose", &[&u], vec![AttributeProto::ints("perm", [2, 0, 3, 1])]);
        let t = b.add_node("Transpose", &[&t], vec![]);
        let w = constant(b, &[1, 2, 1, 3], 15);
        let m = b.add_node("Mul", &[&t, &w], vec![]);
        let axes = b.add_initializer(tensor_i64("axes2", &[1], &[0]));
        b.add_node("Squeeze", &[&m, &axes], vec![])
    });
    check(&[&[2, 1, 3], &[2, 2, 3], &[2, 3, 3]], 0.0, |b, x| {
        let c = b.add_node("Concat", &[&x[0], &x[1], &x[2]], vec![AttributeProto::int("axis", 1)]);
        let w = constant(b, &[1, 6, 3], 16);
        b.add_node("Mul", &[&c, &w], vec![])
    });
    check(&[&[2, 3, 3]], 0.0, |b, x| {
        let pads = b.add_initializer(tensor_i64("pads", &[6], &[0, 1, 2, 0, 2, 1]));
        let value = b.add_initializer(tensor_f32("value", &[], &[0.5]));
        let p = b.add_node("Pad", &[&x[0], &pads, &value], vec![]);
        let w = constant(b, &[2, 6, 6], 17);
        b.add_node("Mul", &[&p, &w], vec![])
    });
}

#[test]
fn slicing_and_gathering() {
    check(&[&[3, 7, 4]], 0.0, |b, x| {
        let starts = b.add_initializer(tensor_i64("starts", &[2], &[1, -1]));
        let ends = b.add_initializer(tensor_i64("ends", &[2], &[i64::MAX, 0]));
        let axes = b.add_initializer(tensor_i64("axes", &[2], &[1, 2]));
        let steps = b.add_initializer(tensor_i64("steps", &[2], &[2, -2]));
        let s = b.add_node("Slice", &[&x[0], &starts, &ends, &axes, &steps], vec![]);
        let w = constant(b, &[1, 3, 2], 60);
        b.add_node("Mul", &[&s, &w], vec![])
    });
    // Repeated indices: their gradients add up.
    check(&[&[2, 5, 3]], 0.0, |b, x| {
        let indices = b.add_initializer(tensor_i64("indices", &[4], &[4, 0, 4, -2]));
        let g = b.add_node("Gather", &[&x[0], &indices], vec![AttributeProto::int("axis", 1)]);
        let w = constant(b, &[1, 4, 3], 61);
        b.add_node("Mul", &[&g, &w], vec![])
    });
}

#[test]
fn reductions() {
    for keepdims in [0, 1] {
        check(&[&[2, 3, 4]], 0.0, |b, x| {
            let w = constant(b, &[2, 3, 4], 18);
            let m = b.add_node("Mul", &[&x[0], &w], vec![]);
            let axes = b.add_initializer(tensor_i64("axes", &[2], &[1, -1]));
            b.add_node("ReduceSum", &[&m, &axes], vec![AttributeProto::int("keepdims", keepdims)])
        });
        check(&[&[2, 3, 4]], 0.0, |b, x| {
            let w = constant(b, &[2, 3, 4], 19);
            let m = b.add_node("Mul", &[&x[0], &w], vec![]);
            b.add_node("ReduceMean", &[&m], vec![AttributeProto::ints("axes", [2]), AttributeProto::int("keepdims", keepdims)])
        });
    }
}

#[test]
fn demo_models_end_to_end() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let digits = ModelProto::load(root.join("models/digits-cnn/1/model.onnx")).unwrap();
    // Real digits have flat regions whose equal activations tie in max-pool: kinks everywhere.
    // Random pixels in [0, 1) have none, bar chance; elements a step still crosses are skipped.
    let pixels = array(&[2, 1, 8, 8], 21, 0.0).mapv(|v| (v + 1.0) / 2.0);
    check_gradients_skipping(&digits, "logits", &[pixels], 1e-3, 0.1);

    let wine = ModelProto::load(root.join("models/wine-mlp/1/model.onnx")).unwrap();
    let rows = explaind_runtime::npy::read_f32_file(&root.join("models/wine-mlp/1/samples.npy")).unwrap();
    // Raw features range up to ~1000 (proline); finite differences of 0.01 are still fine.
    let two = rows.slice(ndarray::s![0..2, ..]).to_owned().into_dyn();
    check_gradients(&wine, "probabilities", std::slice::from_ref(&two));
    check_gradients(&wine, "logits", &[two]);
}

#[test]
fn intermediate_tensors_can_be_differentiated_and_exposed() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let digits = ModelProto::load(root.join("models/digits-cnn/1/model.onnx")).unwrap();
    let graph = digits.graph.as_ref().unwrap();
    let conv = graph.node.iter().rfind(|n| n.op_type() == "Conv").unwrap().output[0].clone();
    let request = GradientRequest {
        outputs: vec!["logits".into()],
        wrt: vec![conv.clone(), "image".into()],
        expose: vec![conv.clone()],
        ..Default::default()
    };
    let compiled = compile_gradient(&digits, &request).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let model = load(&compiled.model, &dir, "cam");
    let x = explaind_runtime::npy::read_f32_file(&root.join("models/digits-cnn/1/samples.npy")).unwrap();
    let mut seed = ArrayD::<f32>::zeros(IxDyn(&[8, 10]));
    seed.slice_mut(ndarray::s![.., 3]).fill(1.0);
    let outputs = model.run(&[x.view(), seed.view()]).unwrap().0;
    let names: Vec<&str> = compiled.model.graph.as_ref().unwrap().output.iter().map(|o| o.name()).collect();
    let grad_conv = &outputs[names.iter().position(|n| *n == compiled.gradients[0]).unwrap()];
    let activation = &outputs[names.iter().position(|n| *n == conv).unwrap()];
    assert_eq!(grad_conv.shape(), activation.shape());
    assert_eq!(activation.shape(), &[8, 16, 4, 4]);
    assert!(grad_conv.iter().any(|v| v.abs() > 1e-3), "the gradient at the last conv is not all zero");
}

#[test]
fn unsupported_operators_are_named() {
    let m = model(&[&[2, 3]], |b, x| b.add_node("Atan", &[&x[0]], vec![]));
    let request =
        GradientRequest { outputs: vec![output_name(&m)], wrt: vec!["x0".into()], expose: vec![], ..Default::default() };
    let err = compile_gradient(&m, &request).unwrap_err();
    assert_eq!(err, CompileError::UnsupportedOp { op_type: "Atan".into(), node: "Atan".into() });
    assert_eq!(err.to_string(), "operator Atan (node \"Atan\") has no gradient rule");

    let request = GradientRequest { outputs: vec!["nope".into()], wrt: vec!["x0".into()], expose: vec![], ..Default::default() };
    assert_eq!(compile_gradient(&m, &request).unwrap_err(), CompileError::NotAnOutput("nope".into()));
    let request =
        GradientRequest { outputs: vec![output_name(&m)], wrt: vec!["ghost".into()], expose: vec![], ..Default::default() };
    assert_eq!(compile_gradient(&m, &request).unwrap_err(), CompileError::UnknownTensor("ghost".into()));
}

/// A lowered operator (`explaind_graph::lower`) applied to `scale · x` (so that saturating ones
/// saturate); where `max_skipped` > 0, elements on a kink are skipped (see
/// [`check_gradients_skipping`]: only for piecewise linear operators, whose one-sided
/// differences agree off the kinks).
fn check_lowered(
    shapes: &[usize],
    opset: i64,
    scale: f32,
    max_skipped: f64,
    body: impl FnOnce(&mut GraphBuilder, &str) -> String,
) {
    check_lowered_model(shapes, opset, scale, max_skipped, false, body);
}

/// As [`check_lowered`]; with `undeclared`, the input's shape is left out of the file.
fn check_lowered_model(
    shapes: &[usize],
    opset: i64,
    scale: f32,
    max_skipped: f64,
    undeclared: bool,
    body: impl FnOnce(&mut GraphBuilder, &str) -> String,
) {
    let m = at_opset(
        model(&[shapes], |b, x| {
            let scale = b.add_initializer(tensor_f32("scale", &[], &[scale]));
            let scaled = b.add_node("Mul", &[&x[0], &scale], vec![]);
            body(b, &scaled)
        }),
        opset,
    );
    let m = if undeclared { without_input_shapes(m) } else { m };
    let inputs = [array(shapes, 1, 0.0)];
    check_gradients_skipping(&m, &output_name(&m), &inputs, 1e-2, max_skipped);
}

#[test]
fn hard_sigmoid_and_hard_swish_are_lowered() {
    check_lowered(&[4, 6], 17, 3.0, 0.3, |b, x| b.add_node("HardSigmoid", &[x], vec![]));
    check_lowered(&[4, 6], 17, 3.0, 0.3, |b, x| {
        b.add_node("HardSigmoid", &[x], vec![AttributeProto::float("alpha", 0.4), AttributeProto::float("beta", 0.6)])
    });
    // HardSwish is quadratic between its kinks at ±3: smooth on [-1, 1].
    check_lowered(&[4, 6], 17, 1.0, 0.0, |b, x| b.add_node("HardSwish", &[x], vec![]));
}

#[test]
fn layer_normalization_is_lowered() {
    for opset in [17, 18] {
        // Axis 1 twice: on an input of declared rank, and on one whose rank is not declared.
        for (axis, undeclared) in [(-1, false), (1, false), (1, true)] {
            for bias in [false, true] {
                check_lowered_model(&[2, 3, 4], opset, 3.0, 0.0, undeclared, |b, x| {
                    let normalised: &[i64] = if axis == 1 { &[3, 4] } else { &[4] };
                    let scale = constant(b, normalised, 5);
                    let mut inputs = vec![x.to_string(), scale];
                    if bias {
                        inputs.push(constant(b, normalised, 6));
                    }
                    let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
                    b.add_node("LayerNormalization", &refs, vec![AttributeProto::int("axis", axis)])
                });
            }
        }
    }
}

#[test]
fn gelu_is_lowered() {
    for approximate in ["none", "tanh"] {
        check_lowered(&[4, 6], 20, 2.0, 0.0, |b, x| {
            b.add_node("Gelu", &[x], vec![AttributeProto::string("approximate", approximate)])
        });
    }
}

#[test]
fn mish_and_instance_group_and_rms_normalization_are_lowered() {
    check_lowered(&[4, 6], 18, 2.0, 0.0, |b, x| b.add_node("Mish", &[x], vec![]));
    for undeclared in [false, true] {
        check_lowered_model(&[2, 3, 2, 2], 17, 2.0, 0.0, undeclared, |b, x| {
            let (scale, bias) = (constant(b, &[3], 5), constant(b, &[3], 6));
            b.add_node("InstanceNormalization", &[x, &scale, &bias], vec![])
        });
        // Scale and bias per group at opset 18, per channel at 21.
        for (opset, per) in [(18, 2), (21, 4)] {
            check_lowered_model(&[2, 4, 3], opset, 2.0, 0.0, undeclared, |b, x| {
                let (scale, bias) = (constant(b, &[per], 5), constant(b, &[per], 6));
                b.add_node("GroupNormalization", &[x, &scale, &bias], vec![AttributeProto::int("num_groups", 2)])
            });
        }
        check_lowered_model(&[2, 3, 4], 23, 2.0, 0.0, undeclared, |b, x| {
            let scale = constant(b, &[3, 4], 5);
            b.add_node("RMSNormalization", &[x, &scale], vec![AttributeProto::int("axis", 1)])
        });
    }
}

#[test]
fn einsum_is_lowered() {
    // Two varying operands (attention scores), a varying operand against a constant, one operand.
    check(&[&[2, 3, 4], &[2, 5, 4]], 0.0, |b, x| {
        b.add_node("Einsum", &[&x[0], &x[1]], vec![AttributeProto::string("equation", "bqd,bkd->bqk")])
    });
    check(&[&[2, 3, 4]], 0.0, |b, x| {
        let w = constant(b, &[5, 4], 7);
        b.add_node("Einsum", &[&x[0], &w], vec![AttributeProto::string("equation", "bqk,ok->bqo")])
    });
    check(&[&[2, 3, 4]], 0.0, |b, x| b.add_node("Einsum", &[&x[0]], vec![AttributeProto::string("equation", "bij->jb")]));
}

/// Values away from every kink of `Floor`, `Ceil`, `Round`, `Sign` and comparisons with 0, so
/// that a step of 0.01 changes no mask.
fn off_kinks(shape: &[usize], seed: u64) -> ArrayD<f32> {
    // |v| in [0.1, 0.4] or [0.6, 0.9]: 0.1 away from 0, ±0.5 and ±1.
    let count = shape.iter().product();
    let spread = values(count, seed, 0.0).into_iter().enumerate().map(|(i, v)| {
        let magnitude = 0.1 + 0.3 * v.abs() + if i % 3 == 0 { 0.5 } else { 0.0 };
        if v < 0.0 { -magnitude } else { magnitude }
    });
    ArrayD::from_shape_vec(IxDyn(shape), spread.collect()).unwrap()
}

#[test]
fn zero_gradient_ops_on_mask_and_shape_paths() {
    // Comparisons, logic, rounding and Sign on a mask path beside a differentiable one.
    let m = model(&[&[3, 4]], |b, x| {
        let zero = b.add_initializer(tensor_f32("zero", &[], &[0.0]));
        let half = b.add_initializer(tensor_f32("half", &[], &[0.5]));
        let low = b.add_initializer(tensor_f32("low", &[], &[-0.5]));
        let above = b.add_node("Greater", &[&x[0], &zero], vec![]);
        let below = b.add_node("LessOrEqual", &[&x[0], &half], vec![]);
        let middle = b.add_node("And", &[&above, &below], vec![]);
        let very_low = b.add_node("Less", &[&x[0], &low], vec![]);
        let not_low = b.add_node("Not", &[&very_low], vec![]);
        let at_least = b.add_node("GreaterOrEqual", &[&x[0], &low], vec![]);
        let both = b.add_node("Equal", &[&not_low, &at_least], vec![]);
        let mask = b.add_node("Or", &[&middle, &both], vec![]);
        let mask = b.add_node("Cast", &[&mask], vec![AttributeProto::int("to", 1)]);
        let t = b.add_node("Tanh", &[&x[0]], vec![]);
        let masked = b.add_node("Mul", &[&t, &mask], vec![]);
        // Sign, Floor, Ceil and Round: piecewise constant, multiplied with x.
        let mut total = masked;
        for op in ["Sign", "Floor", "Ceil", "Round"] {
            let step = b.add_node(op, &[&x[0]], vec![]);
            let p = b.add_node("Mul", &[&step, &x[0]], vec![]);
            total = b.add_node("Add", &[&total, &p], vec![]);
        }
        total
    });
    check_gradients(&m, &output_name(&m), &[off_kinks(&[3, 4], 3)]);

    // Shape, Size, ConstantOfShape, Range, NonZero and an integer Cast on a shape path.
    let m = model(&[&[3, 4]], |b, x| {
        let shape = b.add_node("Shape", &[&x[0]], vec![]);
        let ones = b.add_node("ConstantOfShape", &[&shape], vec![AttributeProto::tensor("value", tensor_f32("", &[1], &[1.5]))]);
        let square = b.add_node("Mul", &[&x[0], &x[0]], vec![]);
        let shifted = b.add_node("Add", &[&square, &ones], vec![]);
        let size = b.add_node("Size", &[&x[0]], vec![]);
        let start = b.add_initializer(tensor_i64("start", &[], &[0]));
        let step = b.add_initializer(tensor_i64("step", &[], &[1]));
        let positions = b.add_node("Range", &[&start, &size, &step], vec![]);
        let positions = b.add_node("Reshape", &[&positions, &shape], vec![]);
        let positions = b.add_node("Cast", &[&positions], vec![AttributeProto::int("to", 1)]);
        let weighted = b.add_node("Mul", &[&shifted, &positions], vec![]);
        // The number of positive elements, through NonZero and an integer Cast of x itself.
        let zero = b.add_initializer(tensor_f32("zero", &[], &[0.0]));
        let positive = b.add_node("Greater", &[&x[0], &zero], vec![]);
        let found = b.add_node("NonZero", &[&positive], vec![]);
        let found = b.add_node("Shape", &[&found], vec![]);
        let second = b.add_initializer(tensor_i64("second", &[], &[1]));
        let found = b.add_node("Gather", &[&found, &second], vec![]);
        let truncated = b.add_node("Cast", &[&x[0]], vec![AttributeProto::int("to", 7)]);
        let truncated = b.add_node("Cast", &[&truncated], vec![AttributeProto::int("to", 1)]);
        let found = b.add_node("Cast", &[&found], vec![AttributeProto::int("to", 1)]);
        let scaled = b.add_node("Mul", &[&weighted, &found], vec![]);
        b.add_node("Add", &[&scaled, &truncated], vec![])
    });
    check_gradients(&m, &output_name(&m), &[off_kinks(&[3, 4], 4)]);
}

#[test]
fn more_elementwise_nonlinearities() {
    for op in ["Abs", "Sin", "Cos", "Softsign", "Selu", "Celu", "Neg"] {
        let attrs = match op {
            "Celu" => vec![AttributeProto::float("alpha", 0.7)],
            "Selu" => vec![AttributeProto::float("alpha", 1.5), AttributeProto::float("gamma", 1.2)],
            _ => vec![],
        };
        check(&[&[3, 4]], 0.1, |b, x| b.add_node(op, &[&x[0]], attrs));
    }
    // Defaults of Selu and Celu.
    check(&[&[3, 4]], 0.1, |b, x| b.add_node("Selu", &[&x[0]], vec![]));
    check(&[&[3, 4]], 0.1, |b, x| b.add_node("Celu", &[&x[0]], vec![]));
    // Log of a positive argument.
    check(&[&[3, 4]], 0.0, |b, x| {
        let one = b.add_initializer(tensor_f32("one", &[], &[1.0]));
        let sq = b.add_node("Mul", &[&x[0], &x[0]], vec![]);
        let pos = b.add_node("Add", &[&sq, &one], vec![]);
        b.add_node("Log", &[&pos], vec![])
    });
    // PRelu: a slope per channel broadcast over [N, C, L], and a scalar slope.
    check(&[&[2, 3, 4]], 0.1, |b, x| {
        let slope = constant(b, &[3, 1], 30);
        b.add_node("PRelu", &[&x[0], &slope], vec![])
    });
    check(&[&[3, 4]], 0.1, |b, x| {
        let slope = b.add_initializer(tensor_f32("slope", &[1], &[0.25]));
        b.add_node("PRelu", &[&x[0], &slope], vec![])
    });
}

#[test]
fn pow_with_a_constant_exponent() {
    // Integer and fractional scalar exponents (on a positive base), an int64 exponent, and a
    // per-column exponent that broadcasts a smaller base.
    for exponent in [3.0f32, 1.5, -0.5] {
        check(&[&[3, 4]], 0.0, |b, x| {
            let one = b.add_initializer(tensor_f32("one", &[], &[1.0]));
            let sq = b.add_node("Mul", &[&x[0], &x[0]], vec![]);
            let pos = b.add_node("Add", &[&sq, &one], vec![]);
            let c = b.add_initializer(tensor_f32("c", &[], &[exponent]));
            b.add_node("Pow", &[&pos, &c], vec![])
        });
    }
    check(&[&[3, 4]], 0.0, |b, x| {
        let c = b.add_initializer(tensor_i64("c", &[], &[2]));
        b.add_node("Pow", &[&x[0], &c], vec![])
    });
    check(&[&[3, 1]], 0.0, |b, x| {
        let c = b.add_initializer(tensor_f32("c", &[4], &[1.0, 2.0, 3.0, 4.0]));
        b.add_node("Pow", &[&x[0], &c], vec![])
    });
    // A varying exponent is refused.
    let m = model(&[&[3, 4], &[3, 4]], |b, x| b.add_node("Pow", &[&x[0], &x[1]], vec![]));
    let request = GradientRequest {
        outputs: vec![output_name(&m)],
        wrt: vec!["x0".into(), "x1".into()],
        expose: vec![],
        ..Default::default()
    };
    let err = compile_gradient(&m, &request).unwrap_err();
    assert!(matches!(&err, CompileError::UnsupportedForm { op_type, .. } if op_type == "Pow"), "{err}");
}

#[test]
fn elementwise_min_and_max() {
    for op in ["Min", "Max"] {
        // Three varying inputs with broadcasting, one constant among them, and one input alone.
        check(&[&[2, 3, 4], &[3, 1], &[4]], 0.0, |b, x| b.add_node(op, &[&x[0], &x[1], &x[2]], vec![]));
        check(&[&[2, 3]], 0.0, |b, x| {
            let c = constant(b, &[3], 31);
            b.add_node(op, &[&c, &x[0]], vec![])
        });
        check(&[&[2, 3]], 0.0, |b, x| b.add_node(op, &[&x[0]], vec![]));
    }
}

#[test]
fn min_and_max_give_ties_to_the_first_input() {
    // Max(x, x): both inputs hold the maximum everywhere; the first gets the whole gradient.
    let m = model(&[&[2, 3]], |b, x| {
        let two = b.add_initializer(tensor_f32("two", &[], &[2.0]));
        let doubled = b.add_node("Mul", &[&x[0], &two], vec![]);
        b.add_node("Max", &[&x[0], &doubled, &x[0]], vec![])
    });
    let request =
        GradientRequest { outputs: vec![output_name(&m)], wrt: vec!["x0".into()], expose: vec![], ..Default::default() };
    let compiled = compile_gradient(&m, &request).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let backward = load(&compiled.model, &dir, "ties");
    let x = ArrayD::from_shape_vec(IxDyn(&[2, 3]), vec![-1.0f32, -2.0, 3.0, 0.5, -0.5, 1.0]).unwrap();
    let seed = ArrayD::from_elem(IxDyn(&[2, 3]), 1.0f32);
    let results = backward.run(&[x.view(), seed.view()]).unwrap().0;
    // Negative x: x itself is the maximum (twice: slope 1 once); positive: 2x (slope 2).
    let want = [1.0, 1.0, 2.0, 2.0, 1.0, 2.0];
    assert_eq!(results[1].as_slice().unwrap(), &want);
}

#[test]
fn expand_and_tile() {
    check(&[&[3, 1]], 0.0, |b, x| {
        let shape = b.add_initializer(tensor_i64("shape", &[3], &[2, 3, 4]));
        b.add_node("Expand", &[&x[0], &shape], vec![])
    });
    // Broadcasting both ways: the shape is smaller than the input on one axis.
    check(&[&[2, 1, 4]], 0.0, |b, x| {
        let shape = b.add_initializer(tensor_i64("shape", &[2], &[3, 1]));
        b.add_node("Expand", &[&x[0], &shape], vec![])
    });
    for repeats in [[2i64, 1], [3, 2], [1, 1]] {
        check(&[&[2, 3]], 0.0, |b, x| {
            let repeats = b.add_initializer(tensor_i64("repeats", &[2], &repeats));
            b.add_node("Tile", &[&x[0], &repeats], vec![])
        });
    }
    check(&[&[2, 1, 3]], 0.0, |b, x| {
        let repeats = b.add_initializer(tensor_i64("repeats", &[3], &[1, 2, 2]));
        b.add_node("Tile", &[&x[0], &repeats], vec![])
    });
}

/// `Split` of x0 into `parts` outputs (the extra inputs and attributes from `form`); the result
/// concatenates, per row, a weighted sum over axis 1 of `Tanh` of each output listed in `used`
/// (the others unused: their gradient is zero).
fn split_model(
    opset: i64,
    shape: &[usize],
    parts: usize,
    used: &[usize],
    form: impl FnOnce(&mut GraphBuilder, &str) -> (Vec<String>, Vec<AttributeProto>),
) -> ModelProto {
    at_opset(
        model(&[shape], |b, x| {
            let (extra, attrs) = form(b, &x[0]);
            let mut inputs = vec![x[0].clone()];
            inputs.extend(extra);
            let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
            let outputs = b.add_node_multi("Split", &refs, parts, attrs);
            let mut total: Option<String> = None;
            for (k, &i) in used.iter().enumerate() {
                let t = b.add_node("Tanh", &[&outputs[i]], vec![]);
                let w = b.add_initializer(tensor_f32("w", &[], &[1.0 + k as f32]));
                let t = b.add_node("Mul", &[&t, &w], vec![]);
                let axes = b.add_initializer(tensor_i64("axes", &[1], &[1]));
                let s = b.add_node("ReduceSum", &[&t, &axes], vec![]);
                total = Some(match total {
                    Some(total) => b.add_node("Concat", &[&total, &s], vec![AttributeProto::int("axis", 1)]),
                    None => s,
                });
            }
            total.unwrap()
        }),
        opset,
    )
}

#[test]
fn split_in_every_form() {
    let check_model = |m: ModelProto, shape: &[usize]| check_gradients(&m, &output_name(&m), &[array(shape, 5, 0.0)]);
    // Sizes as an input (opsets 13 and 18), every output used and only some.
    for opset in [13, 17, 18] {
        for used in [&[0usize, 1, 2][..], &[2, 0]] {
            let m = split_model(opset, &[2, 6, 3], 3, used, |b, _| {
                let sizes = b.add_initializer(tensor_i64("sizes", &[3], &[1, 3, 2]));
                (vec![sizes], vec![AttributeProto::int("axis", 1)])
            });
            check_model(m, &[2, 6, 3]);
        }
    }
    // Equal parts: by the number of outputs before 18, by num_outputs from 18 (uneven: 3, 3, 1).
    let m = split_model(17, &[2, 6, 3], 3, &[1], |_, _| (vec![], vec![AttributeProto::int("axis", 1)]));
    check_model(m, &[2, 6, 3]);
    let m = split_model(18, &[2, 7, 3], 3, &[0, 2], |_, _| {
        (vec![], vec![AttributeProto::int("axis", -2), AttributeProto::int("num_outputs", 3)])
    });
    check_model(m, &[2, 7, 3]);
}

#[test]
fn where_routes_by_its_condition() {
    // A constant condition broadcast over both varying branches (one broadcast itself).
    check(&[&[2, 3, 4], &[4]], 0.0, |b, x| {
        let c = constant(b, &[3, 1], 40);
        let zero = b.add_initializer(tensor_f32("zero", &[], &[0.0]));
        let condition = b.add_node("Greater", &[&c, &zero], vec![]);
        b.add_node("Where", &[&condition, &x[0], &x[1]], vec![])
    });
    // A condition computed from x itself (a mask path), one branch constant.
    check(&[&[3, 4]], 0.1, |b, x| {
        let zero = b.add_initializer(tensor_f32("zero", &[], &[0.0]));
        let condition = b.add_node("Greater", &[&x[0], &zero], vec![]);
        let t = b.add_node("Tanh", &[&x[0]], vec![]);
        let c = constant(b, &[4], 41);
        b.add_node("Where", &[&condition, &c, &t], vec![])
    });
}

#[test]
fn gather_elements_adds_repeated_indices() {
    for axis in [0i64, 1] {
        check(&[&[3, 4]], 0.0, |b, x| {
            let indices = b.add_initializer(tensor_i64("indices", &[2, 3], &[2, 0, 2, -1, 1, 0]));
            let picked = b.add_node("GatherElements", &[&x[0], &indices], vec![AttributeProto::int("axis", axis)]);
            let w = constant(b, &[2, 3], 42);
            b.add_node("Mul", &[&picked, &w], vec![])
        });
    }
}

/// A reduction of `x0` over `axes` (`None`: every axis), in the opset's form: the axes as an
/// attribute before 18, as an input from 18.
fn reduction(op: &str, opset: i64, shape: &[usize], axes: Option<&[i64]>, keepdims: i64) -> ModelProto {
    at_opset(
        model(&[shape], |b, x| {
            let mut attrs = vec![AttributeProto::int("keepdims", keepdims)];
            let mut inputs = vec![x[0].clone()];
            match axes {
                Some(axes) if opset >= 18 => inputs.push(b.add_initializer(tensor_i64("axes", &[axes.len() as i64], axes))),
                Some(axes) => attrs.push(AttributeProto::ints("axes", axes.to_vec())),
                None => {}
            }
            let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
            b.add_node(op, &refs, attrs)
        }),
        opset,
    )
}

#[test]
fn max_min_l2_sum_square_and_log_sum_exp_reductions() {
    for op in ["ReduceMax", "ReduceMin", "ReduceL2", "ReduceSumSquare", "ReduceLogSumExp"] {
        for opset in [17, 18] {
            for (axes, keepdims) in [(Some(&[1i64, -1][..]), 0), (Some(&[1][..]), 1), (None, 0), (None, 1)] {
                let m = reduction(op, opset, &[2, 3, 4], axes, keepdims);
                // Distinct values, spaced beyond the step, so that the extremes do not move.
                check_gradients(&m, &output_name(&m), &[spaced(&[2, 3, 4])]);
            }
        }
    }
}

#[test]
fn reduce_max_and_min_share_ties_equally() {
    for op in ["ReduceMax", "ReduceMin"] {
        let m = reduction(op, 18, &[2, 3], Some(&[1]), 1);
        let request =
            GradientRequest { outputs: vec![output_name(&m)], wrt: vec!["x0".into()], expose: vec![], ..Default::default() };
        let compiled = compile_gradient(&m, &request).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let backward = load(&compiled.model, &dir, "ties");
        // Row 0: the extreme is held twice; row 1: once.
        let x = if op == "ReduceMax" { [2.0f32, -1.0, 2.0, 0.5, 3.0, -2.0] } else { [-2.0f32, 1.0, -2.0, 0.5, -3.0, 2.0] };
        let x = ArrayD::from_shape_vec(IxDyn(&[2, 3]), x.to_vec()).unwrap();
        let seed = ArrayD::from_shape_vec(IxDyn(&[2, 1]), vec![1.0f32, 4.0]).unwrap();
        let results = backward.run(&[x.view(), seed.view()]).unwrap().0;
        assert_eq!(results[1].as_slice().unwrap(), &[0.5, 0.0, 0.5, 0.0, 4.0, 0.0], "{op}");
    }
}

#[test]
fn a_gradient_reaching_an_operator_without_one_stops_there() {
    // Gradients with respect to x and to Floor(x) itself: Floor passes nothing back to x.
    let m = model(&[&[2, 3]], |b, x| {
        let floor = b.add_node("Floor", &[&x[0]], vec![]);
        let t = b.add_node("Tanh", &[&x[0]], vec![]);
        b.add_node("Mul", &[&t, &floor], vec![])
    });
    let floor = m.graph.as_ref().unwrap().node[0].output[0].clone();
    let request =
        GradientRequest { outputs: vec![output_name(&m)], wrt: vec!["x0".into(), floor], expose: vec![], ..Default::default() };
    let compiled = compile_gradient(&m, &request).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let backward = load(&compiled.model, &dir, "floor");
    let x = off_kinks(&[2, 3], 6);
    let seed = ArrayD::from_elem(IxDyn(&[2, 3]), 1.0f32);
    let results = backward.run(&[x.view(), seed.view()]).unwrap().0;
    for (i, &v) in x.iter().enumerate() {
        let (dx, dfloor) = (results[1].as_slice().unwrap()[i], results[2].as_slice().unwrap()[i]);
        let want_dx = (1.0 - v.tanh().powi(2)) * v.floor();
        assert!((dx - want_dx).abs() < 1e-5, "d/dx[{i}]: {dx}, want {want_dx}");
        assert!((dfloor - v.tanh()).abs() < 1e-5, "d/dfloor[{i}]: {dfloor}");
    }
}

#[test]
fn an_operator_of_another_domain_on_the_path_is_refused_never_a_silent_zero_gradient() {
    // A contrib or custom operator named like a standard one: the rules cannot vouch for it.
    let m = model(&[&[2, 3]], |b, x| {
        let y = b.add_node("Relu", &[&x[0]], vec![]);
        let node = b.graph_mut().node.last_mut().unwrap();
        node.domain = Some("com.example".into());
        y
    });
    let request =
        GradientRequest { outputs: vec![output_name(&m)], wrt: vec!["x0".into()], expose: vec![], ..Default::default() };
    let err = compile_gradient(&m, &request).unwrap_err();
    assert!(err.to_string().contains("com.example:Relu"), "{err}");
    let deeplift = explaind_graph::DeepLiftRequest { output: output_name(&m), inputs: vec!["x0".into()], ..Default::default() };
    let err = explaind_graph::compile_deeplift(&m, &deeplift).unwrap_err();
    assert!(err.to_string().contains("com.example:Relu"), "{err}");
}

/// `Resize` of x [1, 2, 3, 4] at `opset`: `scales` (over all four axes, or the spatial ones
/// with opset 18's `axes`) or `sizes`, with the given attributes.
fn resize_model(opset: i64, scales: Option<&[f32]>, sizes: Option<&[i64]>, attrs: Vec<AttributeProto>) -> ModelProto {
    let m = model(&[&[1, 2, 3, 4]], |b, x| {
        let mut inputs = vec![x[0].clone(), String::new()];
        if let Some(scales) = scales {
            inputs.push(b.add_initializer(tensor_f32("scales", &[scales.len() as i64], scales)));
        } else {
            inputs.push(String::new());
        }
        if let Some(sizes) = sizes {
            inputs.push(b.add_initializer(tensor_i64("sizes", &[sizes.len() as i64], sizes)));
        }
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        let y = b.add_node("Resize", &refs, attrs);
        // Something after it, so the resized value is not the output itself.
        b.add_node("Tanh", &[&y], vec![])
    });
    at_opset(m, opset)
}

/// The `Resize` forms `torch.onnx` exports for `nn.Upsample` / `F.interpolate`.
pub fn resize_cases() -> Vec<(String, ModelProto)> {
    let mut cases = Vec::new();
    let nearest = |mode: &str, transform: &str| {
        vec![
            AttributeProto::string("mode", "nearest"),
            AttributeProto::string("coordinate_transformation_mode", transform),
            AttributeProto::string("nearest_mode", mode),
        ]
    };
    let linear = |transform: &str| {
        vec![AttributeProto::string("mode", "linear"), AttributeProto::string("coordinate_transformation_mode", transform)]
    };
    for opset in [13, 18] {
        let two: &[f32] = if opset == 13 { &[1.0, 1.0, 2.0, 2.0] } else { &[2.0, 2.0] };
        let five_seven: &[i64] = if opset == 13 { &[1, 2, 5, 7] } else { &[5, 7] };
        let axes = |mut attrs: Vec<AttributeProto>| {
            if opset >= 18 {
                attrs.push(AttributeProto::ints("axes", [2, 3]));
            }
            attrs
        };
        cases.push((
            format!("nearest floor asymmetric 2x, opset {opset}"),
            resize_model(opset, Some(two), None, axes(nearest("floor", "asymmetric"))),
        ));
        cases.push((format!("nearest default 5x7, opset {opset}"), resize_model(opset, None, Some(five_seven), axes(vec![]))));
        for transform in ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"] {
            cases.push((
                format!("linear {transform} 2x, opset {opset}"),
                resize_model(opset, Some(two), None, axes(linear(transform))),
            ));
            cases.push((
                format!("linear {transform} 5x7, opset {opset}"),
                resize_model(opset, None, Some(five_seven), axes(linear(transform))),
            ));
        }
    }
    // Opset 19's half_pixel_symmetric; a non-integer scale (3 × 1.5 = 4, 4 × 2.5 = 10).
    cases.push((
        "linear half_pixel_symmetric 5x7, opset 19".into(),
        resize_model(19, None, Some(&[1, 2, 5, 7]), linear("half_pixel_symmetric")),
    ));
    cases.push((
        "linear half_pixel 1.5x2.5, opset 13".into(),
        resize_model(13, Some(&[1.0, 1.0, 1.5, 2.5]), None, linear("half_pixel")),
    ));
    cases.push((
        "nearest round_prefer_ceil 1.5x2.5, opset 13".into(),
        resize_model(13, Some(&[1.0, 1.0, 1.5, 2.5]), None, nearest("round_prefer_ceil", "half_pixel")),
    ));
    cases
}

#[test]
fn resize_nearest_and_linear_in_every_exported_form() {
    for (name, m) in resize_cases() {
        eprintln!("{name}");
        let inputs = vec![array(&[1, 2, 3, 4], 5, 0.0)];
        check_gradients(&m, &output_name(&m), &inputs);
    }
}

#[test]
fn resize_refuses_what_it_cannot_build() {
    // A spatial size the file does not tell.
    let m = without_input_shapes(resize_model(13, Some(&[1.0, 1.0, 2.0, 2.0]), None, vec![]));
    let request =
        GradientRequest { outputs: vec![output_name(&m)], wrt: vec!["x0".into()], expose: vec![], ..Default::default() };
    let err = compile_gradient(&m, &request).unwrap_err();
    assert!(matches!(err, CompileError::UnsupportedForm { .. }) && err.to_string().contains("spatial size"), "{err}");
    // Cubic interpolation.
    let m = resize_model(13, Some(&[1.0, 1.0, 2.0, 2.0]), None, vec![AttributeProto::string("mode", "cubic")]);
    let request =
        GradientRequest { outputs: vec![output_name(&m)], wrt: vec!["x0".into()], expose: vec![], ..Default::default() };
    let err = compile_gradient(&m, &request).unwrap_err();
    assert!(err.to_string().contains("cubic"), "{err}");
}

/// `F.interpolate(x, size=skip.shape[2:])`: sizes computed at run time from the shapes, the
/// output's spatial size told by the file.
#[test]
fn resize_to_a_size_computed_at_run_time() {
    for opset in [13, 18] {
        for (mode, transform) in [("linear", "half_pixel"), ("linear", "align_corners"), ("nearest", "asymmetric")] {
            let m = resize_to_skip_model(opset, mode, transform, true, 1.into());
            check_gradients(&m, &output_name(&m), &[array(&[1, 2, 3, 4], 7, 0.0)]);
        }
    }
    // Without the output's shape in the file the interpolation cannot be built: refused, saying why.
    let m = resize_to_skip_model(13, "linear", "half_pixel", false, 1.into());
    let request =
        GradientRequest { outputs: vec![output_name(&m)], wrt: vec!["x0".into()], expose: vec![], ..Default::default() };
    let err = compile_gradient(&m, &request).unwrap_err();
    assert!(matches!(err, CompileError::UnsupportedForm { .. }) && err.to_string().contains("value_info"), "{err}");
    // Nor when the file does not tell that the batch and channel lengths are kept (all four
    // axes listed, the output's batch length named differently from the input's).
    let mut m = resize_to_skip_model(13, "linear", "half_pixel", true, "batch".into());
    let info = &mut m.graph.as_mut().unwrap().value_info[0];
    if let Some(explaind_onnx::proto::type_proto::Value::TensorType(t)) = info.r#type.as_mut().unwrap().value.as_mut() {
        t.shape.as_mut().unwrap().dim[0] = explaind_onnx::Dim::from("other").into();
    }
    let err = compile_gradient(&m, &request).unwrap_err();
    assert!(err.to_string().contains("batch and channel"), "{err}");
}

#[test]
fn attention_with_a_huge_negative_mask_has_finite_gradients() {
    for fill in [f32::MIN, f32::NEG_INFINITY] {
        // Logits from x [1, 4, 3] through Q, K linear in x; a causal mask with a padded key.
        let m = model(&[&[1, 4, 3]], |b, x| {
            let (wq, wk, wv) = (constant(b, &[3, 2], 90), constant(b, &[3, 2], 91), constant(b, &[3, 2], 92));
            let q = b.add_node("MatMul", &[&x[0], &wq], vec![]);
            let k = b.add_node("MatMul", &[&x[0], &wk], vec![]);
            let v = b.add_node("MatMul", &[&x[0], &wv], vec![]);
            let kt = b.add_node("Transpose", &[&k], vec![AttributeProto::ints("perm", [0, 2, 1])]);
            for (name, shape) in [(&q, [4i64, 2]), (&kt, [2, 4]), (&v, [4, 2])] {
                let dims = [1.into(), shape[0].into(), shape[1].into()];
                let info =
                    explaind_onnx::tensor_value_info(name.clone(), explaind_onnx::proto::tensor_proto::DataType::Float, dims);
                b.graph_mut().value_info.push(info);
            }
            let scores = b.add_node("MatMul", &[&q, &kt], vec![]);
            let mask: Vec<f32> = (0..16).map(|p| if p % 4 > p / 4 || p % 4 == 3 { fill } else { 0.0 }).collect();
            let mask = b.add_initializer(tensor_f32("mask", &[1, 4, 4], &mask));
            let z = b.add_node("Add", &[&scores, &mask], vec![]);
            let w = b.add_node("Softmax", &[&z], vec![]);
            let dims = [1.into(), 4.into(), 4.into()];
            let info = explaind_onnx::tensor_value_info(w.clone(), explaind_onnx::proto::tensor_proto::DataType::Float, dims);
            b.graph_mut().value_info.push(info);
            b.add_node("MatMul", &[&w, &v], vec![])
        });
        check_gradients(&m, &output_name(&m), &[array(&[1, 4, 3], 93, 0.0)]);
    }
}

#[test]
fn resize_as_torch_exports_it_with_constant_node_scales() {
    // torch.onnx's nn.Upsample(scale_factor=2) (nearest, asymmetric, floor) and
    // F.interpolate(mode="bilinear", align_corners=True), scales from Constant nodes, one after
    // the other (the second's input size follows the first's output).
    let m = model(&[&[1, 2, 3, 4]], |b, x| {
        let constant_scales = |b: &mut GraphBuilder| {
            let value = tensor_f32("scales", &[4], &[1.0, 1.0, 2.0, 2.0]);
            b.add_node("Constant", &[], vec![AttributeProto::tensor("value", value)])
        };
        let scales = constant_scales(b);
        let nearest = vec![
            AttributeProto::string("mode", "nearest"),
            AttributeProto::string("coordinate_transformation_mode", "asymmetric"),
            AttributeProto::string("nearest_mode", "floor"),
        ];
        let y = b.add_node("Resize", &[&x[0], "", &scales], nearest);
        let y = b.add_node("Tanh", &[&y], vec![]);
        let scales = constant_scales(b);
        let linear = vec![
            AttributeProto::string("mode", "linear"),
            AttributeProto::string("coordinate_transformation_mode", "align_corners"),
        ];
        b.add_node("Resize", &[&y, "", &scales], linear)
    });
    check_gradients(&m, &output_name(&m), &[array(&[1, 2, 3, 4], 6, 0.0)]);
}
