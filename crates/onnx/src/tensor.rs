//! Dense float32 and int64 tensors to and from [`TensorProto`].

use crate::proto::tensor_proto::{DataLocation, DataType};
use crate::proto::{TensorProto, TensorShapeProto, TypeProto, ValueInfoProto};
use crate::proto::{tensor_shape_proto, type_proto};

/// Why a [`TensorProto`] could not be read as the requested element type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TensorError {
    #[error("tensor {name:?} has element type {found}, expected {expected:?}")]
    WrongType { name: String, expected: DataType, found: i32 },
    #[error("tensor {name:?} keeps its data in an external file, which is not supported")]
    External { name: String },
    #[error("tensor {name:?} has an invalid shape {dims:?}")]
    BadShape { name: String, dims: Vec<i64> },
    #[error("tensor {name:?} of shape {dims:?} needs {expected} elements, its data holds {found}")]
    WrongLength { name: String, dims: Vec<i64>, expected: usize, found: usize },
    #[error("tensor {name:?}: raw_data of {len} bytes is not a whole number of {width}-byte elements")]
    RaggedRawData { name: String, len: usize, width: usize },
}

/// The number of elements of a tensor of shape `dims` (1 for a scalar), or `None` when a
/// dimension is negative or the product overflows.
pub fn element_count(dims: &[i64]) -> Option<usize> {
    dims.iter().try_fold(1usize, |n, &d| n.checked_mul(usize::try_from(d).ok()?))
}

/// A float32 initializer or constant. The data goes to `raw_data`, as `onnx.numpy_helper`
/// writes it: it is the compact form, and ONNX Runtime reads it without conversion.
///
/// # Panics
/// If `data.len()` is not the element count of `dims`: that is a bug in the caller, and a
/// tensor with the wrong length would only fail later, inside ONNX Runtime.
pub fn tensor_f32(name: impl Into<String>, dims: &[i64], data: &[f32]) -> TensorProto {
    check_len(dims, data.len());
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Float as i32),
        raw_data: Some(data.iter().flat_map(|v| v.to_le_bytes()).collect()),
        ..Default::default()
    }
}

/// An int64 initializer or constant (shapes, axes, indices), stored like [`tensor_f32`].
///
/// # Panics
/// If `data.len()` is not the element count of `dims`.
pub fn tensor_i64(name: impl Into<String>, dims: &[i64], data: &[i64]) -> TensorProto {
    check_len(dims, data.len());
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Int64 as i32),
        raw_data: Some(data.iter().flat_map(|v| v.to_le_bytes()).collect()),
        ..Default::default()
    }
}

fn check_len(dims: &[i64], len: usize) {
    let n = element_count(dims).unwrap_or_else(|| panic!("invalid tensor shape {dims:?}"));
    assert_eq!(n, len, "tensor of shape {dims:?} needs {n} elements, got {len}");
}

impl TensorProto {
    /// The shape and float32 elements, from `raw_data` (little-endian) if set, else from
    /// `float_data`.
    pub fn to_f32(&self) -> Result<(Vec<i64>, Vec<f32>), TensorError> {
        let n = self.checked_len(DataType::Float)?;
        let data = match &self.raw_data {
            Some(raw) => self.decode_raw(raw, f32::from_le_bytes)?,
            None => self.float_data.clone(),
        };
        self.check_found(n, data.len())?;
        Ok((self.dims.clone(), data))
    }

    /// The shape and int64 elements, from `raw_data` (little-endian) if set, else from
    /// `int64_data`.
    pub fn to_i64(&self) -> Result<(Vec<i64>, Vec<i64>), TensorError> {
        let n = self.checked_len(DataType::Int64)?;
        let data = match &self.raw_data {
            Some(raw) => self.decode_raw(raw, i64::from_le_bytes)?,
            None => self.int64_data.clone(),
        };
        self.check_found(n, data.len())?;
        Ok((self.dims.clone(), data))
    }

    fn checked_len(&self, expected: DataType) -> Result<usize, TensorError> {
        let name = || self.name().to_string();
        if self.data_type() != expected as i32 {
            return Err(TensorError::WrongType { name: name(), expected, found: self.data_type() });
        }
        if self.data_location() == DataLocation::External {
            return Err(TensorError::External { name: name() });
        }
        element_count(&self.dims).ok_or_else(|| TensorError::BadShape { name: name(), dims: self.dims.clone() })
    }

    fn decode_raw<T, const W: usize>(&self, raw: &[u8], convert: fn([u8; W]) -> T) -> Result<Vec<T>, TensorError> {
        let (chunks, rest) = raw.as_chunks::<W>();
        if !rest.is_empty() {
            return Err(TensorError::RaggedRawData { name: self.name().to_string(), len: raw.len(), width: W });
        }
        Ok(chunks.iter().map(|c| convert(*c)).collect())
    }

    fn check_found(&self, expected: usize, found: usize) -> Result<(), TensorError> {
        if expected == found {
            return Ok(());
        }
        Err(TensorError::WrongLength { name: self.name().to_string(), dims: self.dims.clone(), expected, found })
    }
}

/// One dimension of a declared shape: a size, or a name such as `batch` that ONNX Runtime
/// binds at run time.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Dim {
    Value(i64),
    Param(String),
}

impl From<i64> for Dim {
    fn from(v: i64) -> Self {
        Dim::Value(v)
    }
}

impl From<&str> for Dim {
    fn from(s: &str) -> Self {
        Dim::Param(s.to_string())
    }
}

impl From<String> for Dim {
    fn from(s: String) -> Self {
        Dim::Param(s)
    }
}

impl Dim {
    /// `None` for a dimension that is neither a size nor a name (unknown).
    pub fn from_proto(d: &tensor_shape_proto::Dimension) -> Option<Dim> {
        match &d.value {
            Some(tensor_shape_proto::dimension::Value::DimValue(v)) => Some(Dim::Value(*v)),
            Some(tensor_shape_proto::dimension::Value::DimParam(p)) => Some(Dim::Param(p.clone())),
            None => None,
        }
    }
}

impl From<Dim> for tensor_shape_proto::Dimension {
    fn from(d: Dim) -> Self {
        let value = match d {
            Dim::Value(v) => tensor_shape_proto::dimension::Value::DimValue(v),
            Dim::Param(p) => tensor_shape_proto::dimension::Value::DimParam(p),
        };
        tensor_shape_proto::Dimension { value: Some(value), denotation: None }
    }
}

/// A graph input, output or value_info entry for a dense tensor of element type `elem_type`
/// (a [`DataType`]) and the given shape.
pub fn tensor_value_info(name: impl Into<String>, elem_type: DataType, shape: impl IntoIterator<Item = Dim>) -> ValueInfoProto {
    let tensor = type_proto::Tensor {
        elem_type: Some(elem_type as i32),
        shape: Some(TensorShapeProto { dim: shape.into_iter().map(Into::into).collect() }),
    };
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto { value: Some(type_proto::Value::TensorType(tensor)), denotation: None }),
        ..Default::default()
    }
}

impl ValueInfoProto {
    /// The tensor type, if this value is a dense tensor.
    pub fn tensor_type(&self) -> Option<&type_proto::Tensor> {
        match self.r#type.as_ref()?.value.as_ref()? {
            type_proto::Value::TensorType(t) => Some(t),
            _ => None,
        }
    }

    /// The declared shape of a dense tensor; `None` when the value is not a tensor or its
    /// rank is unknown. An unknown dimension inside a known rank is `None` in the vector.
    pub fn tensor_shape(&self) -> Option<Vec<Option<Dim>>> {
        let shape = self.tensor_type()?.shape.as_ref()?;
        Some(shape.dim.iter().map(Dim::from_proto).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn f32_round_trips_through_raw_data() {
        let t = tensor_f32("w", &[2, 3], &[1.0, -2.5, 0.0, 3.25, f32::MAX, -0.0]);
        assert_eq!(t.raw_data.as_ref().unwrap().len(), 24);
        assert_eq!(&t.raw_data.as_ref().unwrap()[4..8], &(-2.5f32).to_le_bytes());
        let (dims, data) = t.to_f32().unwrap();
        assert_eq!(dims, vec![2, 3]);
        assert_eq!(data, vec![1.0, -2.5, 0.0, 3.25, f32::MAX, -0.0]);
    }

    #[test]
    fn f32_reads_float_data_when_raw_data_is_unset() {
        let t = TensorProto {
            dims: vec![3],
            data_type: Some(DataType::Float as i32),
            float_data: vec![1.0, 2.0, 3.0],
            ..Default::default()
        };
        assert_eq!(t.to_f32().unwrap(), (vec![3], vec![1.0, 2.0, 3.0]));
    }

    #[test]
    fn i64_round_trips_both_ways() {
        let t = tensor_i64("shape", &[2], &[-1, 1 << 40]);
        assert_eq!(t.to_i64().unwrap(), (vec![2], vec![-1, 1 << 40]));
        let t =
            TensorProto { dims: vec![2], data_type: Some(DataType::Int64 as i32), int64_data: vec![7, -7], ..Default::default() };
        assert_eq!(t.to_i64().unwrap(), (vec![2], vec![7, -7]));
    }

    #[test]
    fn scalar_has_one_element() {
        let t = tensor_f32("s", &[], &[4.0]);
        assert_eq!(t.to_f32().unwrap(), (vec![], vec![4.0]));
        assert_eq!(element_count(&[2, 0, 3]), Some(0));
        assert_eq!(element_count(&[2, -1]), None);
    }

    #[test]
    fn errors_name_the_tensor() {
        let t = tensor_i64("ax", &[1], &[0]);
        assert_eq!(t.to_f32().unwrap_err(), TensorError::WrongType { name: "ax".into(), expected: DataType::Float, found: 7 });
        let mut t = tensor_f32("w", &[2], &[1.0, 2.0]);
        t.dims = vec![3];
        assert!(matches!(t.to_f32(), Err(TensorError::WrongLength { expected: 3, found: 2, .. })));
        t.raw_data.as_mut().unwrap().push(0);
        assert!(matches!(t.to_f32(), Err(TensorError::RaggedRawData { len: 9, width: 4, .. })));
        let mut t = tensor_f32("w", &[1], &[1.0]);
        t.data_location = Some(DataLocation::External as i32);
        assert!(matches!(t.to_f32(), Err(TensorError::External { .. })));
    }

    #[test]
    #[should_panic(expected = "needs 6 elements")]
    fn constructor_rejects_wrong_length() {
        tensor_f32("w", &[2, 3], &[1.0]);
    }

    #[test]
    fn proto2_packing_matches_onnx_proto() {
        // dims is a plain proto2 repeated field (one tag per element); float_data is
        // [packed = true] (one tag, one length). Getting this wrong would still decode, but
        // would break byte-identical round trips of files written by the onnx package.
        let t = TensorProto { dims: vec![2, 3], float_data: vec![1.0], ..Default::default() };
        let mut expected = vec![0x08, 2, 0x08, 3, 0x22, 4];
        expected.extend_from_slice(&1.0f32.to_le_bytes());
        assert_eq!(t.encode_to_vec(), expected);
    }

    #[test]
    fn value_info_shape_keeps_symbolic_dims() {
        let vi = tensor_value_info("y", DataType::Float, [Dim::from("batch"), Dim::from(10)]);
        assert_eq!(vi.tensor_type().unwrap().elem_type, Some(DataType::Float as i32));
        assert_eq!(vi.tensor_shape().unwrap(), vec![Some(Dim::Param("batch".into())), Some(Dim::Value(10))]);
    }
}
