//! Writes the DeepLIFT activation and backward models of an ONNX model, for inspection and
//! profiling: `cargo run -p explaind-graph --example compile_deeplift -- MODEL OUTPUT DIR`.
use explaind_graph::{DeepLiftRequest, compile_deeplift};
use explaind_onnx::ModelProto;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, model, output, dir] = args.as_slice() else {
        eprintln!("usage: compile_deeplift MODEL.onnx OUTPUT_NAME OUT_DIR");
        std::process::exit(2);
    };
    let model = ModelProto::load(model).expect("readable model");
    let inputs = model.graph.as_ref().unwrap().input.iter().map(|i| i.name().to_string()).collect();
    let compiled = compile_deeplift(&model, &DeepLiftRequest { output: output.clone(), inputs, ..Default::default() })
        .unwrap_or_else(|e| panic!("{e}"));
    let dir = std::path::Path::new(dir);
    compiled.activation_model.save(dir.join("activation.onnx")).unwrap();
    compiled.backward_model.save(dir.join("backward.onnx")).unwrap();
    println!("{} activations, {} backward nodes", compiled.activations.len(), compiled.backward_model.graph.unwrap().node.len());
}
