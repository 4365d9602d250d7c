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
//! ONNX nodes, or is first rewritten into operators that have one ([`lower`]), so that no rule
//! (and no DeepLIFT rule) is needed for it:
//!
//! | Operator | How |
//! |---|---|
//! | `Identity`, `Dropout`, `Cast`, `Neg`, `Add`, `Sub`, `Sum`, `Mul`, `Div` | rule ([`rules::elementwise`]) |
//! | `Relu`, `LeakyRelu`, `PRelu` (slope not varying), `Elu`, `Selu`, `Celu`, `Sigmoid`, `Tanh`, `Exp`, `Log`, `Softplus`, `Softsign`, `Erf`, `Sqrt`, `Reciprocal`, `Abs`, `Sin`, `Cos`, `Clip` | rule ([`rules::elementwise`]); DeepLIFT: rescale |
//! | `Pow` (exponent not varying; a varying one is refused) | rule ([`rules::elementwise`]); DeepLIFT: rescale (a single-element exponent) |
//! | `Min`, `Max` (one or two inputs, broadcasting; ties: the first input holding the extreme) | rule ([`rules::elementwise`]); DeepLIFT: rescale with one varying input, two-player Shapley with two |
//! | `Min`, `Max` with three or more inputs | lowered: a chain of binary ones, `Max(Max(a, b), c)`... (the same tie rule; DeepLIFT's rule at each link) |
//! | `MatMul`, `Gemm` | rule ([`rules::linalg`]) |
//! | `Conv`, `ConvTranspose`, `MaxPool`, `AveragePool`, `GlobalAveragePool` | rule ([`rules::conv`]) |
//! | `BatchNormalization`, `Softmax`, `LogSoftmax` | rule ([`rules::normalization`]); DeepLIFT: `Softmax` decomposed into centring by the row's maximum (routed as `ReduceMax` is), `Exp`, `ReduceSum` and `Div` (logits masked with −∞ or finfo(float32).min get multipliers of exactly 0); `LogSoftmax` as the logits minus their log-sum-exp (the batch axis must not be the softmax axis) |
//! | `Flatten`, `Reshape`, `Squeeze`, `Unsqueeze`, `Transpose`, `Concat`, `Pad`, `Slice`, `Gather`, `Constant` | rule ([`rules::shape`]) |
//! | `Expand`, `Tile`, `Split` (sizes as an input, equal parts, `num_outputs`) | rule ([`rules::shape`]) |
//! | `Where` (the condition carries no gradient) | rule ([`rules::shape`]); DeepLIFT: refused when the condition is computed from the attributed inputs |
//! | `GatherElements` | rule ([`rules::shape`]); DeepLIFT: linear (its vector-Jacobian product) when the indices are not computed from the attributed inputs, refused when they are |
//! | `ReduceSum`, `ReduceMean` | rule ([`rules::reduce`]) |
//! | `Resize` on NCHW tensors over H and W: `nearest` (any `nearest_mode`) and `linear`, coordinate modes `half_pixel`, `pytorch_half_pixel`, `align_corners`, `asymmetric`, `half_pixel_symmetric` (and `tf_half_pixel_for_nn` with `nearest`); constant scales or sizes (opset 18's `axes` too), a spatial size the file tells, or sizes computed at run time (`F.interpolate(x, size=skip.shape[2:])`) with the output's spatial size told by the file; no `antialias` | rule ([`rules::resize`]): the transposed interpolation matrices, two `MatMul`s with constants |
//! | `ReduceMax`, `ReduceMin` (ties share the gradient equally) | rule ([`rules::reduce`]); DeepLIFT: routed as `MaxPool` is (the batch axis must be kept) |
//! | `ReduceLogSumExp` | rule ([`rules::reduce`]); DeepLIFT: `Exp`, `ReduceSum`, `Log` with a per-pair shift, each rescaled or linear (the batch axis must be kept) |
//! | `ReduceSumSquare` | lowered: `ReduceSum(Mul(x, x))` |
//! | `ReduceL2` | lowered: `Sqrt(ReduceSum(Mul(x, x)))` |
//! | `HardSigmoid` | lowered: `Clip(Add(Mul(x, alpha), beta), 0, 1)` |
//! | `HardSwish` | lowered: `Mul(x, HardSigmoid(x))`, alpha 1/6, beta 0.5 |
//! | `LayerNormalization` (output `Y` only) | lowered: `ReduceMean`, `Sub`, `Mul(d, d)`, `ReduceMean`, `Add` ε, `Sqrt`, `Div`, `Mul` scale, `Add` bias; DeepLIFT: the `Div` by the deviation takes the deviation's change first (as for every normalisation below; see `deeplift.rs`) |
//! | `Mish` | lowered: `Mul(x, Tanh(Softplus(x)))` |
//! | `InstanceNormalization` | lowered: x viewed as [N, C, rest], normalised over the last axis as `LayerNormalization` is, `Mul` scale and `Add` B as [C, 1], viewed in x's shape |
//! | `GroupNormalization` (opset 18: scale and bias per group; 21: per channel) | lowered: x viewed as [N, G, rest], normalised over the last axis, scale and bias as columns of that view (18) or of the view [N, C, rest] (21), viewed in x's shape |
//! | `RMSNormalization` (opset 23) | lowered: `Div(x, Sqrt(ReduceMean(Mul(x, x)) + ε))`, `Mul` scale |
//! | `Einsum` with one or two operands, no index repeated within one, no ellipsis (others refused) | lowered: `ReduceSum` of indices one operand alone has, `Transpose`s and `Reshape`s to [B, M, K] and [B, K, N], `MatMul`, `Reshape` and `Transpose` to the output's order |
//! | `Gelu` (`none`, `tanh`) | lowered: `0.5 · x · (1 + Erf(x / √2))`, or with `Tanh(√(2/π) · (x + 0.044715 · x³))` |
//! | `Shape`, `Size`, `ConstantOfShape`, `Range`, `NonZero`, `ArgMax`, `ArgMin`, comparisons (`Equal`, `Less`, `LessOrEqual`, `Greater`, `GreaterOrEqual`), `And`, `Or`, `Xor`, `Not`, `Sign`, `Floor`, `Ceil`, `Round`, `IsNaN`, `IsInf`, `Cast` to an integer or boolean type | no gradient: their outputs carry none (a gradient reaching them is zero), and what is computed from them alone is left alone |
//!
//! Rules marked with no DeepLIFT treatment are linear in their varying inputs: DeepLIFT's
//! multiplier is their vector-Jacobian product. DeepLIFT refuses an arithmetic operand computed
//! from the attributed inputs through an operator without a gradient (a mask such as
//! `Cast(Greater(x, 0))`): the reference's would differ, so it is not a constant. Values
//! computed from the inputs' shapes alone are fine.
//!
//! Two rewrites run before lowering, so that the batch axis stays the first axis of every
//! value (which DeepLIFT's row layout needs): a linear layer that folds the batch into rows
//! (`Reshape` to [-1, H], `Gemm`, `Reshape` back, as GPT-2's `Conv1D` and torch's dynamo
//! exporter write `nn.Linear`) becomes a `MatMul` on the unfolded input (`folded.rs`), and a
//! strided view that is a transposition (torch's `as_strided`, exported as a `Gather` from the
//! flattened tensor) becomes a `Transpose` (`strided.rs`). Ranks are inferred from what the file
//! states through every operator family (`ranks.rs`), since exporters state few.
//!
//! Shapes are read at run time (`Shape` nodes) wherever a rule needs one, so models
//! with symbolic batch sizes compile without shape inference. Values that cannot carry a
//! gradient (shapes, indices, anything computed from constants alone) are found first and left
//! alone. An operator on the gradient path without a rule is an error naming the operator and
//! the node (every such operator, each with one node, when there are several): never a silent
//! wrong answer.
//!
//! [`layers`] tells which intermediate tensors are image-like layers (rank 4) and which one a
//! layer method such as Grad-CAM defaults to, and the static spatial sizes a file tells (which
//! let a rule pick a faster exact form, such as a small convolution's gradient as one matrix
//! product with its Jacobian).
//!
//! [`compile_deeplift`] builds on the same rules for DeepLIFT multipliers against reference
//! inputs (rescale, two-player Shapley, decomposed softmax, routed max-pool); see the module
//! documentation of `deeplift.rs` and ARCHITECTURE.md. Its backward pass computes the nonlinear rules once per
//! (input, reference) pair and carries the seeds through products with them
//! ([`rules::PairLayout`]).

mod deeplift;
mod fed;
mod folded;
mod gradient;
pub mod layers;
pub mod lower;
mod ranks;
pub mod rules;
mod shapes;
mod strided;

pub use deeplift::{CompiledDeepLift, DeepLiftRequest, compile_deeplift};
pub use fed::{expose_layer, feed_layer};
pub use gradient::{CompiledGradient, GradientRequest, compile_gradient};

/// How compiled graphs find the element each max-pool window takes (its first maximum in
/// row-major order, as PyTorch and ONNX Runtime's CPU kernel pick it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MaxPoolIndices {
    /// Explicit windows and a running count ([`rules::max_pool_indices`]): the same on every
    /// execution provider, where the pool's input has a spatial size the file tells.
    #[default]
    Portable,
    /// `MaxPool`'s own `Indices` output: the same on ONNX Runtime's CPU execution provider and
    /// several times faster (the portable form was a quarter of ResNet-18's gradient pass);
    /// under CUDA ties go column-major, so use it for graphs run on the CPU only.
    CpuKernel,
}

/// Why a model could not be compiled.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CompileError {
    #[error("the model has no graph")]
    NoGraph,
    /// The one operator on the gradient path without a rule, with the (first) node of it.
    #[error("operator {op_type} (node {node:?}) has no gradient rule")]
    UnsupportedOp { op_type: String, node: String },
    /// Several operators on the gradient path without a rule, each with one node of it, in
    /// graph order.
    #[error("operators without a gradient rule: {}", describe_ops(.0))]
    UnsupportedOps(Vec<UnsupportedNode>),
    #[error("operator {op_type} (node {node:?}): {reason}")]
    UnsupportedForm { op_type: String, node: String, reason: String },
    #[error("no tensor named {0:?} in the model")]
    UnknownTensor(String),
    #[error("{0:?} is not an output of the model")]
    NotAnOutput(String),
    #[error("the model's default-domain opset is {0}; the compiler needs 13 or newer")]
    OldOpset(i64),
}

/// An operator without a rule and one node of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsupportedNode {
    pub op_type: String,
    pub node: String,
}

fn describe_ops(ops: &[UnsupportedNode]) -> String {
    ops.iter().map(|op| format!("{} (node {:?})", op.op_type, op.node)).collect::<Vec<_>>().join(", ")
}
