//! Compiles `proto/` into Rust (prost + tonic) with protox, a pure-Rust protobuf compiler, so
//! no system `protoc` is needed: explaind's own API and the Open Inference Protocol's gRPC
//! service. The encoded descriptor set is kept for server reflection.
use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile(["explaind/v1/explaind.proto", "inference/grpc_service.proto"], ["proto"])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("explaind_descriptor.bin"), descriptors.encode_to_vec())?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
