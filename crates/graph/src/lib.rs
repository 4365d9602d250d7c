//! The graph compiler: turns an inference ONNX model into one that also computes gradients,
//! using standard ONNX operators only, so a stock ONNX Runtime build (and its CUDA execution
//! provider) runs the backward pass.
//!
//! [`compile_gradient`] takes a model, the outputs to differentiate and the tensors to
//! differentiate with respect to (model inputs or any intermediate value), and returns a model
//! with:
//! - every original input, plus one *seed* input per differentiated output, shaped like that
//!   output: the compiled graph computes the vector-Jacobian product `seedᵀ · ∂output/∂x`, so a
//!   one-hot seed gives the gradient of one class, and a batch of seeds gives many at once;
//! - every original output, plus one gradient output per requested tensor, and the requested
//!   tensors themselves when asked (Grad-CAM needs an activation and its gradient together).
//!
//! Each supported operator has a rule in [`rules`] that emits its vector-Jacobian product as
//! ONNX nodes. Shapes are read at run time (`Shape` nodes) wherever a rule needs one, so models
//! with symbolic batch sizes compile without shape inference. Values that cannot carry a
//! gradient (shapes, indices, anything computed from constants alone) are found first and left
//! alone. An operator on the gradient path without a rule is an error naming the operator and
//! the node: never a silent wrong answer.
//!
//! [`layers`] tells which intermediate tensors are image-like layers (rank 4) and which one a
//! layer method such as Grad-CAM defaults to, and the static spatial sizes a file tells (which
//! let a rule pick a faster exact form, such as a small convolution's gradient as one matrix
//! product with its Jacobian).
//!
//! [`compile_deeplift`] builds on the same rules for DeepLIFT multipliers against reference
//! inputs (rescale, two-player Shapley, decomposed softmax, routed max-pool); see
//! `../shared/design/deep-shap.md`. Its backward pass computes the nonlinear rules once per
//! (input, reference) pair and carries the seeds through products with them
//! ([`rules::PairLayout`]).

mod deeplift;
mod gradient;
pub mod layers;
pub mod rules;

pub use deeplift::{CompiledDeepLift, DeepLiftRequest, compile_deeplift};
pub use gradient::{CompiledGradient, GradientRequest, compile_gradient};

/// Why a model could not be compiled.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CompileError {
    #[error("the model has no graph")]
    NoGraph,
    #[error("operator {op_type} (node {node:?}) has no gradient rule")]
    UnsupportedOp { op_type: String, node: String },
    #[error("operator {op_type} (node {node:?}): {reason}")]
    UnsupportedForm { op_type: String, node: String, reason: String },
    #[error("no tensor named {0:?} in the model")]
    UnknownTensor(String),
    #[error("{0:?} is not an output of the model")]
    NotAnOutput(String),
    #[error("the model's default-domain opset is {0}; the compiler needs 13 or newer")]
    OldOpset(i64),
}
