//! Numerical pieces shared by the sampling explainer plugins (`kernel-shap`, `lime`): seeded
//! random streams and the Cholesky solve of their regressions. Plain Rust, unit-tested here.

pub mod linalg;
pub mod rng;

pub use linalg::{cholesky, cholesky_solve};
pub use rng::Rng;
