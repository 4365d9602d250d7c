//! Tensors between the Open Inference Protocol and explaind's API: the protocol's datatype
//! names, its typed `contents` lists and raw little-endian bytes, to and from
//! [`proto::Tensor`] (whose element types are ONNX's codes).

use crate::convert::invalid;
use crate::inference::{InferTensorContents, model_infer_request::InferInputTensor};
use crate::proto;
use tonic::Status;

/// One datatype of the protocol: its name, the ONNX element type, and which `contents` list
/// carries it (None: only raw bytes).
struct Datatype {
    name: &'static str,
    onnx: i32,
    size: usize,
    list: Option<List>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum List {
    Bool,
    Int,
    Int64,
    Uint,
    Uint64,
    Fp32,
    Fp64,
}

impl List {
    fn field(self) -> &'static str {
        match self {
            List::Bool => "bool_contents",
            List::Int => "int_contents",
            List::Int64 => "int64_contents",
            List::Uint => "uint_contents",
            List::Uint64 => "uint64_contents",
            List::Fp32 => "fp32_contents",
            List::Fp64 => "fp64_contents",
        }
    }
}

/// The protocol's datatypes that ONNX models take and give. BYTES (strings) is not among them:
/// explaind's models take numbers.
const DATATYPES: [Datatype; 14] = [
    Datatype { name: "BOOL", onnx: 9, size: 1, list: Some(List::Bool) },
    Datatype { name: "UINT8", onnx: 2, size: 1, list: Some(List::Uint) },
    Datatype { name: "UINT16", onnx: 4, size: 2, list: Some(List::Uint) },
    Datatype { name: "UINT32", onnx: 12, size: 4, list: Some(List::Uint) },
    Datatype { name: "UINT64", onnx: 13, size: 8, list: Some(List::Uint64) },
    Datatype { name: "INT8", onnx: 3, size: 1, list: Some(List::Int) },
    Datatype { name: "INT16", onnx: 5, size: 2, list: Some(List::Int) },
    Datatype { name: "INT32", onnx: 6, size: 4, list: Some(List::Int) },
    Datatype { name: "INT64", onnx: 7, size: 8, list: Some(List::Int64) },
    Datatype { name: "FP16", onnx: 10, size: 2, list: None },
    Datatype { name: "FP32", onnx: 1, size: 4, list: Some(List::Fp32) },
    Datatype { name: "FP64", onnx: 11, size: 8, list: Some(List::Fp64) },
    Datatype { name: "BF16", onnx: 16, size: 2, list: None },
    Datatype { name: "BYTES", onnx: 8, size: 0, list: None },
];

fn by_name(name: &str) -> Option<&'static Datatype> {
    DATATYPES.iter().find(|d| d.name == name)
}

fn by_onnx(code: i32) -> Option<&'static Datatype> {
    DATATYPES.iter().find(|d| d.onnx == code)
}

/// The protocol's name of an ONNX element type ("FP32"), or the ONNX name when the protocol
/// has none.
pub fn datatype_name(onnx: i32) -> String {
    by_onnx(onnx).map_or_else(|| explaind_runtime::element_type_name(onnx), |d| d.name.to_string())
}

/// The ONNX element type of a protocol datatype name, or INVALID_ARGUMENT naming `field`.
pub fn onnx_type(name: &str, field: &str) -> Result<i32, Status> {
    match by_name(name) {
        Some(d) if d.size > 0 => Ok(d.onnx),
        Some(_) => Err(invalid(format!("{field}: {name} tensors are not supported: ONNX models here take numbers"))),
        None => {
            let names: Vec<&str> = DATATYPES.iter().filter(|d| d.size > 0).map(|d| d.name).collect();
            Err(invalid(format!("{field}: unknown datatype {name:?} (expected one of {})", names.join(", "))))
        }
    }
}

/// An input of a ModelInfer request as explaind's tensor: its elements from `raw` when the
/// request sent raw contents, else from its typed `contents` list. `field` names it in errors
/// (`inputs[0]`).
pub fn input_tensor(input: &InferInputTensor, raw: Option<Vec<u8>>, field: &str) -> Result<proto::Tensor, Status> {
    let datatype_field = format!("{field}.datatype");
    let onnx = onnx_type(&input.datatype, &datatype_field)?;
    let datatype = by_onnx(onnx).expect("onnx_type returns listed types");
    let mut count: u64 = 1;
    for (axis, &d) in input.shape.iter().enumerate() {
        if d < 0 {
            return Err(invalid(format!("{field}.shape[{axis}]: {d} is negative")));
        }
        count = count.checked_mul(d as u64).ok_or_else(|| invalid(format!("{field}.shape: the element count overflows")))?;
    }
    let data = match raw {
        Some(bytes) => {
            if input.contents.as_ref().is_some_and(has_elements) {
                return Err(invalid(format!("{field}.contents: give raw_input_contents or contents, not both")));
            }
            let expected = count.saturating_mul(datatype.size as u64);
            if bytes.len() as u64 != expected {
                return Err(invalid(format!(
                    "raw_input_contents for {field} ({:?}): {} bytes, but shape {:?} of {} needs {expected}",
                    input.name,
                    bytes.len(),
                    input.shape,
                    datatype.name
                )));
            }
            bytes
        }
        None => contents_bytes(input.contents.as_ref(), datatype, count, field)?,
    };
    Ok(proto::Tensor { element_type: onnx, shape: input.shape.clone(), data, ..Default::default() })
}

fn has_elements(c: &InferTensorContents) -> bool {
    let InferTensorContents {
        bool_contents,
        int_contents,
        int64_contents,
        uint_contents,
        uint64_contents,
        fp32_contents,
        fp64_contents,
        bytes_contents,
    } = c;
    !(bool_contents.is_empty()
        && int_contents.is_empty()
        && int64_contents.is_empty()
        && uint_contents.is_empty()
        && uint64_contents.is_empty()
        && fp32_contents.is_empty()
        && fp64_contents.is_empty()
        && bytes_contents.is_empty())
}

/// The little-endian bytes of a typed `contents` list: the one list the datatype takes, with
/// `count` elements, each fitting the datatype.
fn contents_bytes(
    contents: Option<&InferTensorContents>,
    datatype: &Datatype,
    count: u64,
    field: &str,
) -> Result<Vec<u8>, Status> {
    let Some(list) = datatype.list else {
        return Err(invalid(format!("{field}: {} elements come only as raw_input_contents", datatype.name)));
    };
    let empty = InferTensorContents::default();
    let c = contents.unwrap_or(&empty);
    let lengths = [
        (List::Bool, c.bool_contents.len()),
        (List::Int, c.int_contents.len()),
        (List::Int64, c.int64_contents.len()),
        (List::Uint, c.uint_contents.len()),
        (List::Uint64, c.uint64_contents.len()),
        (List::Fp32, c.fp32_contents.len()),
        (List::Fp64, c.fp64_contents.len()),
    ];
    if let Some((other, _)) = lengths.iter().find(|(l, n)| *l != list && *n > 0) {
        return Err(invalid(format!("{field}.contents.{}: a {} tensor takes {}", other.field(), datatype.name, list.field())));
    }
    let given = lengths.iter().find(|(l, _)| *l == list).map_or(0, |(_, n)| *n) as u64;
    if given != count {
        return Err(invalid(format!("{field}.contents.{}: {given} elements, but the shape holds {count}", list.field())));
    }
    let out_of_range = |i: usize, v: &dyn std::fmt::Display| {
        invalid(format!("{field}.contents.{}[{i}]: {v} does not fit {}", list.field(), datatype.name))
    };
    let mut out = Vec::with_capacity(count as usize * datatype.size);
    match list {
        List::Bool => out.extend(c.bool_contents.iter().map(|&b| b as u8)),
        List::Int64 => c.int64_contents.iter().for_each(|v| out.extend(v.to_le_bytes())),
        List::Uint64 => c.uint64_contents.iter().for_each(|v| out.extend(v.to_le_bytes())),
        List::Fp32 => c.fp32_contents.iter().for_each(|v| out.extend(v.to_le_bytes())),
        List::Fp64 => c.fp64_contents.iter().for_each(|v| out.extend(v.to_le_bytes())),
        List::Int => {
            let bits = datatype.size as u32 * 8;
            let (min, max) = (-(1i64 << (bits - 1)), (1i64 << (bits - 1)) - 1);
            for (i, &v) in c.int_contents.iter().enumerate() {
                if !(min..=max).contains(&(v as i64)) {
                    return Err(out_of_range(i, &v));
                }
                out.extend(&v.to_le_bytes()[..datatype.size]);
            }
        }
        List::Uint => {
            let max = if datatype.size == 4 { u32::MAX as u64 } else { (1u64 << (datatype.size * 8)) - 1 };
            for (i, &v) in c.uint_contents.iter().enumerate() {
                if v as u64 > max {
                    return Err(out_of_range(i, &v));
                }
                out.extend(&v.to_le_bytes()[..datatype.size]);
            }
        }
    }
    Ok(out)
}

/// The protocol's datatype name and shape of one of explaind's (response) tensors; its
/// elements are sent as they are, little-endian.
pub fn output_header(tensor: &proto::Tensor) -> (String, Vec<i64>) {
    (datatype_name(tensor.element_type), tensor.shape.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(datatype: &str, shape: &[i64], contents: InferTensorContents) -> InferInputTensor {
        InferInputTensor {
            name: "x".into(),
            datatype: datatype.into(),
            shape: shape.to_vec(),
            contents: Some(contents),
            ..Default::default()
        }
    }

    #[test]
    fn typed_contents_become_little_endian_bytes_of_the_datatype() {
        let t = input_tensor(
            &input("INT16", &[3], InferTensorContents { int_contents: vec![-2, 0, 300], ..Default::default() }),
            None,
            "inputs[0]",
        )
        .unwrap();
        assert_eq!(t.element_type, 5);
        assert_eq!(&t.data[..], &[0xfe, 0xff, 0, 0, 0x2c, 0x01]);
        let t = input_tensor(
            &input("FP32", &[1, 2], InferTensorContents { fp32_contents: vec![1.0, -0.5], ..Default::default() }),
            None,
            "inputs[0]",
        )
        .unwrap();
        assert_eq!(&t.data[..], [1.0f32.to_le_bytes(), (-0.5f32).to_le_bytes()].concat());
    }

    #[test]
    fn bad_datatypes_lists_lengths_and_ranges_name_the_field() {
        let err =
            |i: InferInputTensor, raw: Option<Vec<u8>>| input_tensor(&i, raw, "inputs[1]").unwrap_err().message().to_string();
        let fp = |v: Vec<f32>| InferTensorContents { fp32_contents: v, ..Default::default() };
        assert!(err(input("FLOAT32", &[1], fp(vec![1.0])), None).starts_with("inputs[1].datatype: unknown datatype \"FLOAT32\""));
        assert!(
            err(input("FP32", &[3], fp(vec![1.0])), None)
                .contains("inputs[1].contents.fp32_contents: 1 elements, but the shape holds 3")
        );
        let ints = InferTensorContents { int64_contents: vec![1], ..Default::default() };
        assert!(
            err(input("FP32", &[1], ints), None).contains("inputs[1].contents.int64_contents: a FP32 tensor takes fp32_contents")
        );
        let big = InferTensorContents { uint_contents: vec![256], ..Default::default() };
        assert!(err(input("UINT8", &[1], big), None).contains("inputs[1].contents.uint_contents[0]: 256 does not fit UINT8"));
        assert!(
            err(input("FP32", &[2], InferTensorContents::default()), Some(vec![0u8; 4]))
                .contains("4 bytes, but shape [2] of FP32 needs 8")
        );
        assert!(err(input("FP16", &[1], InferTensorContents::default()), None).contains("come only as raw_input_contents"));
        assert!(err(input("BYTES", &[1], InferTensorContents::default()), None).contains("BYTES tensors are not supported"));
        assert!(err(input("FP32", &[-1], fp(vec![])), None).contains("inputs[1].shape[0]: -1 is negative"));
    }
}
