//! Tensors in every element type a model may declare for an input.
//!
//! Most of explaind computes in float32 (outputs, attributions, gradients), but a model's inputs
//! are whatever its exporter declared: token ids and categorical codes are int64, masks are
//! int64 or bool, some exports take float16 or double. A request's input is kept in the model's
//! own type from the wire to ONNX Runtime, never rounded through float32 (an int64 id above 2^24
//! would change).
//!
//! One list of element types ([`for_each_element_type!`]) generates the enum variants, the
//! decoding from little-endian bytes and the session inputs, so supporting another type is one
//! line there.

use crate::model::ElementType;
use half::f16;
use ndarray::{ArrayD, ArrayViewD, Axis, IxDyn};
use ort::session::SessionInputValue;
use ort::value::TensorRef;

/// Calls `$callback!` with every supported input type as `Variant(rust type, ONNX code, name)`.
macro_rules! for_each_element_type {
    ($callback:ident) => {
        $callback! {
            Float(f32, 1, "float32"),
            Uint8(u8, 2, "uint8"),
            Int8(i8, 3, "int8"),
            Int32(i32, 6, "int32"),
            Int64(i64, 7, "int64"),
            Bool(bool, 9, "bool"),
            Float16(f16, 10, "float16"),
            Double(f64, 11, "double"),
        }
    };
}

macro_rules! define_tensors {
    ($($variant:ident($ty:ty, $code:literal, $name:literal)),* $(,)?) => {
        /// An owned tensor of one of the supported element types, standard layout.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Tensor {
            $($variant(ArrayD<$ty>),)*
        }

        /// A borrowed [`Tensor`] (or part of one).
        #[derive(Debug, Clone)]
        pub enum TensorView<'a> {
            $($variant(ArrayViewD<'a, $ty>),)*
        }

        $(impl From<ArrayD<$ty>> for Tensor {
            fn from(array: ArrayD<$ty>) -> Self {
                Tensor::$variant(array)
            }
        }
        impl<'a> From<ArrayViewD<'a, $ty>> for TensorView<'a> {
            fn from(view: ArrayViewD<'a, $ty>) -> Self {
                TensorView::$variant(view)
            }
        })*

        /// The name of an ONNX element type as explaind's messages write it ("int64").
        pub fn element_type_name(code: ElementType) -> String {
            match code {
                $($code => $name.to_string(),)*
                other => format!("element type {other}"),
            }
        }

        /// Whether [`Tensor`] can hold inputs of this ONNX element type.
        pub fn is_supported_input_type(code: ElementType) -> bool {
            matches!(code, $($code)|*)
        }

        /// Bytes per element of a supported type.
        pub fn element_size(code: ElementType) -> Option<usize> {
            match code {
                $($code => Some(std::mem::size_of::<$ty>()),)*
                _ => None,
            }
        }

        impl Tensor {
            /// The ONNX element type.
            pub fn element_type(&self) -> ElementType {
                match self {
                    $(Tensor::$variant(_) => $code,)*
                }
            }
            pub fn shape(&self) -> &[usize] {
                match self {
                    $(Tensor::$variant(a) => a.shape(),)*
                }
            }
            pub fn view(&self) -> TensorView<'_> {
                match self {
                    $(Tensor::$variant(a) => TensorView::$variant(a.view()),)*
                }
            }
            /// Base address of the elements (standard layout), for handing the tensor to C.
            pub fn as_ptr(&self) -> *const u8 {
                match self {
                    $(Tensor::$variant(a) => a.as_ptr().cast(),)*
                }
            }
            /// The rows `rows` (on the first axis, repeats allowed), in that order: a batch of
            /// other rows' held inputs, for instance.
            pub fn select_rows(&self, rows: &[usize]) -> Tensor {
                match self {
                    $(Tensor::$variant(a) => Tensor::$variant(a.select(ndarray::Axis(0), rows)),)*
                }
            }
            /// The elements as little-endian bytes, row-major (the wire's form).
            pub fn to_le_bytes(&self) -> Vec<u8> {
                match self {
                    $(Tensor::$variant(a) => {
                        let mut out = Vec::with_capacity(a.len() * std::mem::size_of::<$ty>());
                        a.iter().for_each(|v| v.encode(&mut out));
                        out
                    })*
                }
            }
            /// Decodes `product(shape)` little-endian elements of `element_type` from `bytes`.
            /// Bool elements must be 0 or 1.
            pub fn from_le_bytes(element_type: ElementType, shape: &[usize], bytes: &[u8]) -> Result<Tensor, DecodeError> {
                let count = element_count(shape).ok_or(DecodeError::TooLarge)?;
                let size = element_size(element_type).ok_or(DecodeError::Unsupported(element_type))?;
                let expected = count.checked_mul(size).ok_or(DecodeError::TooLarge)?;
                if bytes.len() != expected {
                    return Err(DecodeError::Length { expected, count, got: bytes.len() });
                }
                match element_type {
                    $($code => {
                        let values: Vec<$ty> = <$ty as LeBytes>::decode(bytes)?;
                        Ok(Tensor::$variant(ArrayD::from_shape_vec(IxDyn(shape), values).expect("length checked")))
                    })*
                    other => Err(DecodeError::Unsupported(other)),
                }
            }
        }

        impl<'a> TensorView<'a> {
            pub fn element_type(&self) -> ElementType {
                match self {
                    $(TensorView::$variant(_) => $code,)*
                }
            }
            pub fn shape(&self) -> &[usize] {
                match self {
                    $(TensorView::$variant(a) => a.shape(),)*
                }
            }
            /// The same view, borrowed again (views are invariant in their lifetime).
            pub fn reborrow(&self) -> TensorView<'_> {
                match self {
                    $(TensorView::$variant(a) => TensorView::$variant(a.view()),)*
                }
            }
            /// Rows `range` of the first axis.
            pub fn slice_rows(&self, range: std::ops::Range<usize>) -> TensorView<'a> {
                match self {
                    $(TensorView::$variant(a) => TensorView::$variant(a.clone().slice_axis_move(Axis(0), range.into())),)*
                }
            }
            /// Views `product(shape)` elements of `element_type` at `data` (row-major).
            ///
            /// # Safety
            /// `data` must point to that many initialised elements of the type, valid and
            /// unwritten for `'a` (bools are checked to be 0 or 1 here before they are viewed).
            pub unsafe fn from_raw(element_type: ElementType, data: *const u8, shape: &[usize]) -> Result<TensorView<'a>, RawError> {
                let len = element_count(shape).ok_or(RawError::TooLarge)?;
                let size = element_size(element_type).ok_or(RawError::Unsupported(element_type))?;
                if len > 0 && data.is_null() {
                    return Err(RawError::Null);
                }
                if len > 0 && (data as usize) % size != 0 {
                    return Err(RawError::Misaligned { alignment: size });
                }
                if element_type == 9 && len > 0 {
                    // SAFETY: the caller vouches for `len` readable bytes.
                    let bytes = unsafe { std::slice::from_raw_parts(data, len) };
                    if let Some(index) = bytes.iter().position(|&b| b > 1) {
                        return Err(RawError::NotABool { index, byte: bytes[index] });
                    }
                }
                match element_type {
                    $($code => {
                        let elements: &'a [$ty] = if len == 0 {
                            &[]
                        } else {
                            // SAFETY: non-null, aligned, `len` valid elements (the caller's word;
                            // bools checked above).
                            unsafe { std::slice::from_raw_parts(data.cast::<$ty>(), len) }
                        };
                        Ok(TensorView::$variant(ArrayViewD::from_shape(IxDyn(shape), elements).expect("length matches shape")))
                    })*
                    other => Err(RawError::Unsupported(other)),
                }
            }
            /// A session input reading (a standard-layout copy of) the view.
            pub(crate) fn session_input(&self) -> Result<SessionInputValue<'_>, ort::Error> {
                match self {
                    $(TensorView::$variant(a) => session_input(a),)*
                }
            }
        }
    };
}

for_each_element_type!(define_tensors);

/// Why bytes did not decode into a [`Tensor`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("{} is not an input type explaind feeds", element_type_name(*.0))]
    Unsupported(ElementType),
    #[error("the shape has too many elements")]
    TooLarge,
    #[error("expected {expected} bytes ({count} elements), got {got}")]
    Length { expected: usize, count: usize, got: usize },
    #[error("element {index} is the byte {byte}; a bool is 0 or 1")]
    NotABool { index: usize, byte: u8 },
}

/// The elements of `shape`, if an array of it can exist: ndarray also refuses shapes whose
/// non-zero axes multiply past `isize::MAX`, even when another axis is 0 and the array empty.
fn element_count(shape: &[usize]) -> Option<usize> {
    let nonzero = shape.iter().filter(|&&d| d != 0).try_fold(1usize, |n, &d| n.checked_mul(d))?;
    (nonzero <= isize::MAX as usize).then(|| if shape.contains(&0) { 0 } else { nonzero })
}

/// Why a plugin's raw tensor could not be viewed ([`TensorView::from_raw`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RawError {
    #[error("{} is not an input type explaind feeds", element_type_name(*.0))]
    Unsupported(ElementType),
    #[error("the shape has too many elements")]
    TooLarge,
    #[error("data is NULL")]
    Null,
    #[error("data is not aligned to {alignment} bytes")]
    Misaligned { alignment: usize },
    #[error("element {index} is the byte {byte}; a bool is 0 or 1")]
    NotABool { index: usize, byte: u8 },
}

/// Element types read from the wire's little-endian bytes (their length already checked).
trait LeBytes: Sized {
    fn decode(bytes: &[u8]) -> Result<Vec<Self>, DecodeError>;
    fn encode(&self, out: &mut Vec<u8>);
}

macro_rules! le_bytes_via_from_le {
    ($($ty:ty),*) => {$(
        impl LeBytes for $ty {
            fn decode(bytes: &[u8]) -> Result<Vec<Self>, DecodeError> {
                const SIZE: usize = std::mem::size_of::<$ty>();
                Ok(bytes.chunks_exact(SIZE).map(|c| <$ty>::from_le_bytes(c.try_into().expect("chunk size"))).collect())
            }
            fn encode(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_le_bytes());
            }
        }
    )*};
}
le_bytes_via_from_le!(f32, f64, f16, i64, i32, i8, u8);

impl LeBytes for bool {
    fn decode(bytes: &[u8]) -> Result<Vec<Self>, DecodeError> {
        bytes
            .iter()
            .enumerate()
            .map(|(index, &byte)| match byte {
                0 => Ok(false),
                1 => Ok(true),
                byte => Err(DecodeError::NotABool { index, byte }),
            })
            .collect()
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(*self as u8);
    }
}

/// ORT reads the caller's memory in place; slices along axis 0 of a standard-layout array are
/// contiguous, so `as_standard_layout` copies only views that are not.
fn session_input<'v, T>(view: &'v ArrayViewD<'_, T>) -> Result<SessionInputValue<'v>, ort::Error>
where
    T: ort::value::PrimitiveTensorElementType + Clone + std::fmt::Debug + 'static,
{
    let shape: Vec<i64> = view.shape().iter().map(|&d| d as i64).collect();
    match view.as_slice() {
        Some(data) => Ok(TensorRef::from_array_view((shape, data))?.into()),
        None => {
            let owned: Vec<T> = view.iter().cloned().collect();
            Ok(ort::value::Tensor::from_array((shape, owned))?.into())
        }
    }
}

impl Tensor {
    /// The number of rows (the first axis; 1 for a scalar).
    pub fn rows(&self) -> usize {
        self.shape().first().copied().unwrap_or(1)
    }
    /// The float32 array, if the tensor is one.
    pub fn as_f32(&self) -> Option<&ArrayD<f32>> {
        match self {
            Tensor::Float(a) => Some(a),
            _ => None,
        }
    }
    /// The values as float32 when each is exactly one (integers up to 2^24, every bool, int8,
    /// uint8 and float16, doubles that are floats); otherwise the index and value of the first
    /// that is not. Backgrounds are kept as float32 rows, whatever the input's type.
    pub fn to_f32_exact(&self) -> Result<ArrayD<f32>, (usize, String)> {
        fn exact<T: Copy + std::fmt::Display>(
            a: &ArrayD<T>,
            convert: impl Fn(T) -> Option<f32>,
        ) -> Result<ArrayD<f32>, (usize, String)> {
            let mut out = Vec::with_capacity(a.len());
            for (i, &v) in a.iter().enumerate() {
                out.push(convert(v).ok_or_else(|| (i, v.to_string()))?);
            }
            Ok(ArrayD::from_shape_vec(a.raw_dim(), out).expect("same length"))
        }
        const EXACT: i64 = 1 << 24;
        match self {
            Tensor::Float(a) => Ok(a.clone()),
            Tensor::Uint8(a) => exact(a, |v| Some(v as f32)),
            Tensor::Int8(a) => exact(a, |v| Some(v as f32)),
            Tensor::Bool(a) => exact(a, |v| Some(v as u8 as f32)),
            Tensor::Float16(a) => exact(a, |v| Some(v.to_f32())),
            Tensor::Int32(a) => exact(a, |v| ((v as i64).abs() <= EXACT).then_some(v as f32)),
            Tensor::Int64(a) => exact(a, |v| (v.abs() <= EXACT).then_some(v as f32)),
            Tensor::Double(a) => exact(a, |v| ((v as f32) as f64 == v).then_some(v as f32)),
        }
    }
    /// `values` as a tensor of `element_type`, when each value is one of that type exactly
    /// (an integral value in range for the integer types, 0 or 1 for bool); otherwise the index
    /// and value of the first that is not. The inverse of [`Tensor::to_f32_exact`].
    pub fn from_f32_exact(element_type: ElementType, values: ArrayD<f32>) -> Result<Tensor, (usize, f32)> {
        fn exact<T>(a: &ArrayD<f32>, convert: impl Fn(f32) -> Option<T>) -> Result<ArrayD<T>, (usize, f32)> {
            let mut out = Vec::with_capacity(a.len());
            for (i, &v) in a.iter().enumerate() {
                out.push(convert(v).ok_or((i, v))?);
            }
            Ok(ArrayD::from_shape_vec(a.raw_dim(), out).expect("same length"))
        }
        let integral = |v: f32, low: f64, high: f64| (v.fract() == 0.0 && (v as f64) >= low && (v as f64) <= high).then_some(v);
        Ok(match element_type {
            1 => Tensor::Float(values),
            2 => Tensor::Uint8(exact(&values, |v| integral(v, 0.0, 255.0).map(|v| v as u8))?),
            3 => Tensor::Int8(exact(&values, |v| integral(v, -128.0, 127.0).map(|v| v as i8))?),
            6 => Tensor::Int32(exact(&values, |v| integral(v, i32::MIN as f64, i32::MAX as f64).map(|v| v as i32))?),
            7 => Tensor::Int64(exact(&values, |v| integral(v, i64::MIN as f64, i64::MAX as f64).map(|v| v as i64))?),
            9 => Tensor::Bool(exact(&values, |v| (v == 0.0 || v == 1.0).then_some(v == 1.0))?),
            10 => Tensor::Float16(exact(&values, |v| {
                let h = half::f16::from_f32(v);
                (h.to_f32() == v).then_some(h)
            })?),
            11 => Tensor::Double(values.mapv(|v| v as f64)),
            _ => return Err((0, f32::NAN)),
        })
    }
    /// Elements in all.
    pub fn len(&self) -> usize {
        self.shape().iter().product()
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl TensorView<'_> {
    pub fn rows(&self) -> usize {
        self.shape().first().copied().unwrap_or(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float32_values_go_back_to_each_type_exactly_or_not_at_all() {
        let values = ndarray::arr1(&[0.0f32, 3.0, 101.0]).into_dyn();
        for t in [
            Tensor::Int64(ndarray::arr1(&[0i64, 3, 101]).into_dyn()),
            Tensor::Int32(ndarray::arr1(&[0i32, 3, 101]).into_dyn()),
            Tensor::Uint8(ndarray::arr1(&[0u8, 3, 101]).into_dyn()),
            Tensor::Int8(ndarray::arr1(&[0i8, 3, 101]).into_dyn()),
        ] {
            assert_eq!(Tensor::from_f32_exact(t.element_type(), values.clone()).unwrap(), t);
            assert_eq!(t.to_f32_exact().unwrap(), values, "the inverse");
        }
        let bad = ndarray::arr1(&[1.0f32, 2.5]).into_dyn();
        assert_eq!(Tensor::from_f32_exact(7, bad), Err((1, 2.5)));
        assert_eq!(Tensor::from_f32_exact(2, ndarray::arr1(&[256.0f32]).into_dyn()), Err((0, 256.0)));
        assert_eq!(Tensor::from_f32_exact(9, ndarray::arr1(&[1.0f32, 2.0]).into_dyn()), Err((1, 2.0)));
    }

    #[test]
    fn decodes_each_type_from_little_endian_bytes() {
        let ids: Vec<u8> = [7i64, -1, 1 << 40].iter().flat_map(|v| v.to_le_bytes()).collect();
        let t = Tensor::from_le_bytes(7, &[1, 3], &ids).unwrap();
        assert_eq!(t, Tensor::Int64(ndarray::arr2(&[[7i64, -1, 1 << 40]]).into_dyn()), "int64 is kept exactly, past 2^24");
        assert_eq!(t.element_type(), 7);
        assert_eq!(t.to_le_bytes(), ids, "encoding is decoding's inverse");

        let t = Tensor::from_le_bytes(9, &[2], &[1, 0]).unwrap();
        assert_eq!(t, Tensor::Bool(ndarray::arr1(&[true, false]).into_dyn()));
        assert_eq!(Tensor::from_le_bytes(9, &[2], &[1, 2]), Err(DecodeError::NotABool { index: 1, byte: 2 }));

        let half: Vec<u8> = [f16::from_f32(0.5), f16::from_f32(-2.0)].iter().flat_map(|v| v.to_le_bytes()).collect();
        let t = Tensor::from_le_bytes(10, &[2], &half).unwrap();
        assert_eq!(t, Tensor::Float16(ndarray::arr1(&[f16::from_f32(0.5), f16::from_f32(-2.0)]).into_dyn()));

        assert_eq!(Tensor::from_le_bytes(7, &[2], &[0; 15]), Err(DecodeError::Length { expected: 16, count: 2, got: 15 }));
        assert_eq!(Tensor::from_le_bytes(8, &[1], &[0]), Err(DecodeError::Unsupported(8)));
        assert_eq!(Tensor::from_le_bytes(7, &[usize::MAX, 2], &[]), Err(DecodeError::TooLarge));
        // Empty, but no array of that shape can exist.
        assert_eq!(Tensor::from_le_bytes(1, &[0, 1 << 62, 1 << 62], &[]), Err(DecodeError::TooLarge));
        assert_eq!(Tensor::from_le_bytes(1, &[0, 3], &[]).unwrap().shape(), &[0, 3]);
    }

    #[test]
    fn names_and_sizes_follow_onnx_codes() {
        assert_eq!(element_type_name(7), "int64");
        assert_eq!(element_type_name(8), "element type 8");
        assert_eq!(element_size(10), Some(2));
        assert!(is_supported_input_type(9) && !is_supported_input_type(12));
    }

    #[test]
    fn views_slice_rows() {
        let t = Tensor::Int32(ndarray::arr2(&[[1, 2], [3, 4], [5, 6]]).into_dyn());
        let rows = t.view().slice_rows(1..3);
        assert_eq!(rows.shape(), &[2, 2]);
        match rows {
            TensorView::Int32(v) => assert_eq!(v.iter().copied().collect::<Vec<_>>(), vec![3, 4, 5, 6]),
            other => panic!("{other:?}"),
        }
    }
}
