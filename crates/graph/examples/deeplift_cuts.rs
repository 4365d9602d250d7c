//! Where does DeepLIFT lose completeness? Measures it at cuts through a model:
//! `cargo run --release -p explaind-graph --example deeplift_cuts -- MODEL X.npy R.npy TARGET [OPS]`.
//!
//! For the first row of X against the first row of R, and for each cut (the model's input, and
//! the input and output of every node whose operator is in OPS, a comma-separated list,
//! default `LayerNormalization`), the model is fed the cut's values on both sides
//! (`feed_layer`), compiled for DeepLIFT with respect to everything it is then fed, and
//! `Σ m · Δ − (f_TARGET(x) − f_TARGET(r))` is printed beside `Σ |m · Δ|`. A cut that is the only
//! way from the input to the output (one fed input, such as a transformer's residual stream
//! between blocks) isolates the rules after it: where the residual jumps between two such cuts,
//! a rule between them is not exact. This is how the softmax centring's lost share was found
//! (see `softmax` in `src/deeplift.rs`).
use explaind_graph::{DeepLiftRequest, compile_deeplift, expose_layer, feed_layer};
use explaind_onnx::ModelProto;
use explaind_runtime::{Model, OrtRuntime, RuntimeOptions};
use ndarray::{ArrayD, Axis};
use std::path::Path;

fn session(rt: &OrtRuntime, m: &ModelProto) -> Model {
    Model::from_bytes(rt, "cut", "1", &m.to_bytes(), Path::new("deeplift_cuts")).unwrap_or_else(|e| panic!("{e}"))
}

fn first_row(path: &str) -> ArrayD<f32> {
    let rows = explaind_runtime::npy::read_f32_file(Path::new(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
    rows.index_axis(Axis(0), 0).insert_axis(Axis(0)).to_owned()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(model), Some(x), Some(r), Some(target)) = (args.get(1), args.get(2), args.get(3), args.get(4)) else {
        eprintln!("usage: deeplift_cuts MODEL.onnx X.npy R.npy TARGET [OPS]");
        std::process::exit(2);
    };
    let model = ModelProto::load(model).expect("a readable model");
    let (x, r) = (first_row(x), first_row(r));
    let target: usize = target.parse().expect("TARGET: an index into the first output");
    let ops: Vec<&str> = args.get(5).map_or(vec!["LayerNormalization"], |ops| ops.split(',').collect());
    let options = RuntimeOptions { device: explaind_runtime::DeviceChoice::Cpu, intra_threads: 2, ..Default::default() };
    let rt = OrtRuntime::init(&explaind_runtime::find_library(None), options).expect("ONNX Runtime");

    let graph = model.graph.as_ref().expect("a graph");
    let input = graph.input[0].name().to_string();
    let output = graph.output[0].name().to_string();
    let mut cuts = vec![input.clone()];
    for node in graph.node.iter().filter(|n| ops.contains(&n.op_type())) {
        cuts.extend([node.input[0].clone(), node.output[0].clone()]);
    }
    for cut in cuts {
        let exposed = session(rt, &expose_layer(&model, &cut).unwrap());
        let layer = |a: &ArrayD<f32>| exposed.run(&[a.view()]).unwrap().0.pop().unwrap();
        let (hx, hr) = (layer(&x), layer(&r));
        let fed = if cut == input { model.clone() } else { feed_layer(&model, &cut).unwrap() };
        let fed_inputs: Vec<String> = fed.graph.as_ref().unwrap().input.iter().map(|i| i.name().to_string()).collect();
        let request = DeepLiftRequest { output: output.clone(), inputs: fed_inputs.clone(), ..Default::default() };
        let compiled = match compile_deeplift(&fed, &request) {
            Ok(compiled) => compiled,
            Err(e) => {
                println!("{cut}: {e}");
                continue;
            }
        };
        // What each fed input holds on the input side and on the reference side.
        let value = |name: &str, input_side: bool| -> &ArrayD<f32> {
            match (name == cut, input_side) {
                (true, true) => &hx,
                (true, false) => &hr,
                (false, true) if name == input => &x,
                (false, false) if name == input => &r,
                _ => panic!("the cut model reads {name}, which this tool does not feed"),
            }
        };
        let fed_forward = session(rt, &fed);
        let f = |input_side: bool| -> ArrayD<f32> {
            let views: Vec<_> = fed_inputs.iter().map(|n| value(n, input_side).view()).collect();
            fed_forward.run(&views).unwrap().0.swap_remove(0)
        };
        let (fx, fr) = (f(true), f(false));
        let want = fx.as_slice().unwrap()[target] as f64 - fr.as_slice().unwrap()[target] as f64;
        let mut seed = ArrayD::<f32>::zeros(fx.shape());
        seed.as_slice_mut().unwrap()[target] = 1.0;
        let mut feed: Vec<_> = fed_inputs.iter().map(|n| value(n, true).view()).collect();
        feed.extend(fed_inputs.iter().map(|n| value(n, false).view()));
        feed.push(seed.view());
        let outputs = session(rt, &compiled.model).run(&feed).unwrap().0;
        let names: Vec<&str> = compiled.model.graph.as_ref().unwrap().output.iter().map(|o| o.name()).collect();
        let (mut total, mut magnitude) = (0f64, 0f64);
        for (i, name) in fed_inputs.iter().enumerate() {
            let m = &outputs[names.iter().position(|n| *n == compiled.multipliers[i]).unwrap()];
            for ((m, a), b) in m.iter().zip(value(name, true)).zip(value(name, false)) {
                let contribution = *m as f64 * (*a as f64 - *b as f64);
                total += contribution;
                magnitude += contribution.abs();
            }
        }
        println!("{cut:60} fed {} residual {:+.3e}  Σ|m·Δ| {magnitude:.3e}", fed_inputs.len(), total - want);
    }
}
