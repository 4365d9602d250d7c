//! The Open Inference Protocol (KServe "v2", Triton's protocol): the serving ecosystem's API,
//! beside explaind's own.
//!
//! - [`grpc`]: `inference.GRPCInferenceService` on the gRPC port, each RPC a translation onto
//!   the native services (so roles, limits, audit records and metrics are theirs);
//! - [`http`]: the protocol's REST routes and JSON tensors on `--http-listen`, each route sent
//!   in process through the gRPC stack;
//! - [`explain`]: explaind's extension, explanations asked for and returned in the protocol's
//!   own terms (request parameters, named output tensors);
//! - [`tensor`] and [`parameter`]: the protocol's datatypes and parameter maps.

pub mod explain;
pub mod grpc;
pub mod http;
pub mod parameter;
pub mod tensor;

/// The protocol's gRPC service name.
pub const SERVICE: &str = "inference.GRPCInferenceService";
