//! explaind: explains the predictions of ONNX models over gRPC.
//!
//! This crate is the server and the command line; the work happens in the crates it wires
//! together:
//! - `explaind-runtime`: ONNX Runtime, the model repository, forward passes;
//! - `explaind-host`: plugin loading through the C ABI and explain requests;
//! - `explaind-abi` / `explaind-plugin-sdk`: the ABI itself, and the Rust side of writing a plugin.
//!
//! [`service`] adapts gRPC messages to those crates, [`convert`] validates and converts tensors,
//! [`figure`] turns an explain result into a PNG with `explaind-plot`,
//! [`oip`] speaks the Open Inference Protocol (KServe v2) over gRPC and HTTP/JSON on top of the
//! same services, [`server`] builds the listening server (health, reflection, limits), and
//! [`cli`] is the command line. ARCHITECTURE.md walks one Explain request through all of it.

pub mod access;
pub mod cli;
pub mod config;
pub mod convert;
pub mod figure;
pub mod observe;
pub mod oip;
pub mod server;
pub mod service;
pub mod trail;

/// The generated API (`proto/explaind/v1/explaind.proto`).
pub mod proto {
    tonic::include_proto!("explaind.v1");
    /// Encoded descriptors of the API and of the Open Inference Protocol, served by reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/explaind_descriptor.bin"));
}

/// The generated Open Inference Protocol service (`proto/inference/grpc_service.proto`).
pub mod inference {
    tonic::include_proto!("inference");
}
