//! Numerical pieces shared by the sampling explainer plugins (`kernel-shap`, `lime`): seeded
//! random streams, the Cholesky solve of their regressions, and the pacing of cancellation
//! checks in long loops. Plain Rust, unit-tested here.

pub mod linalg;
pub mod pace;
pub mod rng;

pub use linalg::{CholeskyError, cholesky, cholesky_solve};
pub use pace::Pace;
pub use rng::Rng;
