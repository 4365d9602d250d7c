//! Finite in, finite out: a NaN or an infinity never leaves the daemon in an OK answer.
//!
//! Inputs are checked when a request is decoded; whatever the model or a plugin computes from
//! them (a float32 overflow in a logit, an ∞ − ∞ in a DeepLIFT ratio) is checked here, and the
//! error names the response field and the element where the first bad value sits.

use crate::Failure;
use ndarray::ArrayViewD;

/// [`require_finite`] on every output of a model run, each named `outputs.<name>`.
pub fn require_finite_outputs(specs: &[explaind_runtime::TensorSpec], outputs: &[ndarray::ArrayD<f32>]) -> Result<(), Failure> {
    specs.iter().zip(outputs).try_for_each(|(spec, output)| require_finite(&format!("outputs.{}", spec.name), output.view()))
}

/// Fails with INVALID_ARGUMENT when `values` holds a NaN or an infinity, naming `field` and the
/// first such element's index.
pub fn require_finite(field: &str, values: ArrayViewD<'_, f32>) -> Result<(), Failure> {
    require_finite_or_cancel(field, values, &|| None)
}

/// [`require_finite`], asking `cancelled` between blocks of elements and failing with its answer.
pub fn require_finite_or_cancel(
    field: &str,
    values: ArrayViewD<'_, f32>,
    cancelled: &dyn Fn() -> Option<Failure>,
) -> Result<(), Failure> {
    const BLOCK: usize = 1 << 20;
    let found = match values.as_slice() {
        Some(flat) => {
            let mut found = None;
            for (b, block) in flat.chunks(BLOCK).enumerate() {
                if let Some(f) = cancelled() {
                    return Err(f);
                }
                if let Some(i) = block.iter().position(|v| !v.is_finite()) {
                    found = Some((b * BLOCK + i, block[i]));
                    break;
                }
            }
            found
        }
        None => values.iter().enumerate().find(|(_, v)| !v.is_finite()).map(|(i, v)| (i, *v)),
    };
    let Some((flat, value)) = found else { return Ok(()) };
    let index = unravel(flat, values.shape());
    Err(Failure::invalid_argument(format!(
        "{field}: {value} at {index:?}: the computation is not finite in float32 for this request (inputs or parameters too large?)"
    )))
}

/// The multi-index of the `flat`-th element (row-major) of an array of `shape`.
fn unravel(mut flat: usize, shape: &[usize]) -> Vec<usize> {
    let mut index = vec![0; shape.len()];
    for (slot, &dim) in index.iter_mut().zip(shape).rev() {
        *slot = flat % dim.max(1);
        flat /= dim.max(1);
    }
    index
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_field_and_the_first_bad_element() {
        let mut a = ndarray::ArrayD::<f32>::zeros(ndarray::IxDyn(&[2, 3]));
        assert!(require_finite("outputs.logits", a.view()).is_ok());
        a[[1, 2]] = f32::INFINITY;
        a[[1, 1]] = f32::NAN;
        let err = require_finite("outputs.logits", a.view()).unwrap_err();
        assert_eq!(err.code, explaind_abi::EXD_INVALID_ARGUMENT);
        assert!(err.message.starts_with("outputs.logits: NaN at [1, 1]"), "{}", err.message);
    }
}
