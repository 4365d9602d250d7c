//! A model cut at its embedding (`feed_layer`), on the committed BERT-family export
//! (`tests/data/tokens/bert_tiny`): fed the embedding its own lookup computes, the cut model
//! gives the original logits, and its compiled gradient at the embedding matches central finite
//! differences of the cut model itself; DeepLIFT on the cut model is complete at the embedding.

mod common;

use common::*;
use explaind_graph::layers::embedding_lookups;
use explaind_graph::{GradientRequest, compile_gradient, expose_layer, feed_layer};
use explaind_onnx::ModelProto;
use explaind_runtime::{Tensor, TensorView};
use ndarray::{ArrayD, IxDyn};

fn bert() -> ModelProto {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/tokens/bert_tiny/model.onnx");
    ModelProto::load(path).unwrap()
}

fn ids(rows: &[[i64; 10]]) -> Tensor {
    Tensor::Int64(ArrayD::from_shape_vec(IxDyn(&[rows.len(), 10]), rows.iter().flatten().copied().collect()).unwrap())
}

#[test]
fn the_cut_model_fed_its_own_embedding_gives_the_logits_and_exact_gradients() {
    let model = bert();
    let lookups = embedding_lookups(&model);
    let layer = lookups.iter().find(|(input, _)| input == "input_ids").map(|(_, layer)| layer.clone());
    let layer = layer.expect("the word embedding of input_ids is found");
    assert!(lookups.iter().all(|(input, _)| input != "attention_mask"), "{lookups:?}");

    let dir = tempfile::tempdir().unwrap();
    let exposed = load(&expose_layer(&model, &layer).unwrap(), &dir, "exposed");
    let cut = feed_layer(&model, &layer).unwrap();
    let graph = cut.graph.as_ref().unwrap();
    let cut_inputs: Vec<&str> = graph.input.iter().map(|i| i.name()).collect();
    assert_eq!(cut_inputs, ["input_ids", "attention_mask", layer.as_str()], "the layer comes last");
    // The export still reads the ids' shape (for the position ids), and nothing else of them.
    let readers: Vec<&str> =
        graph.node.iter().filter(|n| n.input.iter().any(|i| i == "input_ids")).map(|n| n.op_type()).collect();
    assert!(!readers.is_empty() && readers.iter().all(|&op| op == "Shape"), "{readers:?}");
    let fed = load(&cut, &dir, "fed");

    let input_ids = ids(&[[1, 89, 41, 23, 72, 87, 30, 38, 11, 2], [1, 96, 97, 70, 57, 57, 2, 0, 0, 0]]);
    let mask = ids(&[[1; 10], [1, 1, 1, 1, 1, 1, 1, 0, 0, 0]]);
    let (outputs, _) = exposed.run_tensors(&[input_ids.view(), mask.view()]).unwrap();
    let (logits, embedding) = (&outputs[0], &outputs[1]);
    assert_eq!(embedding.shape(), &[2, 10, 32]);
    let (again, _) = fed.run_tensors(&[input_ids.view(), mask.view(), TensorView::Float(embedding.view())]).unwrap();
    assert_eq!(&again[0], logits, "the same computation, from the same embedding");

    // The gradient of logit 1 at the embedding, against central differences of the cut model.
    let request =
        GradientRequest { outputs: vec![output_name(&model)], wrt: vec![layer.clone()], expose: vec![], ..Default::default() };
    let compiled = compile_gradient(&cut, &request).unwrap();
    let backward = load(&compiled.model, &dir, "backward");
    let mut seeds = ArrayD::<f32>::zeros(IxDyn(&[2, 3]));
    seeds[[0, 1]] = 1.0;
    seeds[[1, 1]] = 1.0;
    let feed = [input_ids.view(), mask.view(), TensorView::Float(embedding.view()), TensorView::Float(seeds.view())];
    let (results, _) = backward.run_tensors(&feed).unwrap();
    let gradient = &results[1];
    assert_eq!(gradient.shape(), embedding.shape());
    let h = 1e-2f32;
    for &(n, s, k) in &[(0usize, 1usize, 0usize), (0, 4, 7), (1, 2, 31), (1, 5, 3)] {
        let shifted = |delta: f32| {
            let mut e = embedding.clone();
            e[[n, s, k]] += delta;
            let (out, _) = fed.run_tensors(&[input_ids.view(), mask.view(), TensorView::Float(e.view())]).unwrap();
            out[0][[n, 1]] as f64
        };
        let numeric = (shifted(h) - shifted(-h)) / (2.0 * h as f64);
        let analytic = gradient[[n, s, k]] as f64;
        assert!((numeric - analytic).abs() <= 2e-3 * analytic.abs().max(1e-3), "({n}, {s}, {k}): {numeric} vs {analytic}");
    }
    // A padded position does not reach the logits: its gradient is zero.
    assert!(gradient.slice(ndarray::s![1, 7.., ..]).iter().all(|&g| g.abs() < 1e-9));
}

#[test]
fn deeplift_on_the_cut_model_is_complete_at_the_embedding() {
    let model = bert();
    let layer = embedding_lookups(&model).into_iter().find(|(i, _)| i == "input_ids").unwrap().1;
    let dir = tempfile::tempdir().unwrap();
    let exposed = load(&expose_layer(&model, &layer).unwrap(), &dir, "exposed");
    let cut = feed_layer(&model, &layer).unwrap();
    let request =
        explaind_graph::DeepLiftRequest { output: output_name(&model), inputs: vec![layer.clone()], ..Default::default() };
    let compiled = explaind_graph::compile_deeplift(&cut, &request).unwrap();
    let pairs = load(&compiled.model, &dir, "pairs");
    let names: Vec<&str> = pairs.inputs.iter().map(|i| i.name.as_str()).collect();
    // The mask is read once, by both sides of every pair: it is held, not attributed.
    assert_eq!(names.len(), 5, "{names:?}");

    let input_ids = ids(&[[1, 89, 41, 23, 72, 87, 30, 38, 11, 2], [1, 96, 97, 70, 57, 57, 2, 0, 0, 0]]);
    let baseline = ids(&[[1, 0, 0, 0, 0, 0, 0, 0, 0, 2], [1, 0, 0, 0, 0, 0, 2, 0, 0, 0]]);
    let mask = ids(&[[1; 10], [1, 1, 1, 1, 1, 1, 1, 0, 0, 0]]);
    let (x_out, _) = exposed.run_tensors(&[input_ids.view(), mask.view()]).unwrap();
    let (r_out, _) = exposed.run_tensors(&[baseline.view(), mask.view()]).unwrap();
    let (ex, er) = (&x_out[1], &r_out[1]);
    for target in 0..3 {
        let mut seeds = ArrayD::<f32>::zeros(IxDyn(&[2, 3]));
        seeds[[0, target]] = 1.0;
        seeds[[1, target]] = 1.0;
        let feed: Vec<TensorView> = names
            .iter()
            .map(|&name| match name {
                "input_ids" => input_ids.view(),
                "attention_mask" => mask.view(),
                n if n == layer => TensorView::Float(ex.view()),
                n if n == compiled.references[0] => TensorView::Float(er.view()),
                n if n == compiled.seed => TensorView::Float(seeds.view()),
                other => panic!("unexpected input {other}"),
            })
            .collect();
        let (results, _) = pairs.run_tensors(&feed).unwrap();
        let m = results.last().unwrap();
        for n in 0..2 {
            let (m, x, r) = (m.slice(ndarray::s![n, .., ..]), ex.slice(ndarray::s![n, .., ..]), er.slice(ndarray::s![n, .., ..]));
            let sum: f64 = m.iter().zip(x.iter().zip(r.iter())).map(|(m, (x, r))| *m as f64 * (*x - *r) as f64).sum();
            let (fx, fr) = (x_out[0][[n, target]] as f64, r_out[0][[n, target]] as f64);
            // To 1e-4 of the logits' size (about 1e-2 here: the differences are about 5e-5, so a
            // multiplier 10% off fails this).
            let scale = fx.abs().max(fr.abs());
            assert!((sum - (fx - fr)).abs() <= 1e-4 * scale, "target {target}, row {n}: Σ m·Δ {sum:e} vs {:e}", fx - fr);
        }
    }
}
