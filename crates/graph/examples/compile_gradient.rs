//! Writes the gradient model of an ONNX model (seed input `<OUTPUT>__seed`, gradients of every
//! model input), for inspection and profiling:
//! `cargo run -p explaind-graph --example compile_gradient -- MODEL OUTPUT OUT.onnx`.
use explaind_graph::{GradientRequest, compile_gradient};
use explaind_onnx::ModelProto;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, model, output, out] = args.as_slice() else {
        eprintln!("usage: compile_gradient MODEL.onnx OUTPUT_NAME OUT.onnx");
        std::process::exit(2);
    };
    let model = ModelProto::load(model).expect("readable model");
    let wrt = model.graph.as_ref().unwrap().runtime_inputs().map(|i| i.name().to_string()).collect();
    let request = GradientRequest { outputs: vec![output.clone()], wrt, expose: vec![], ..Default::default() };
    let compiled = compile_gradient(&model, &request).unwrap_or_else(|e| panic!("{e}"));
    println!("{} nodes", compiled.model.graph.as_ref().unwrap().node.len());
    compiled.model.save(out).unwrap();
}
