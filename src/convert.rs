//! Between wire messages and domain types, with the validation that names each bad field.

use crate::proto;
use explaind_host::{Failure, ParamValue, TargetSelection};
use explaind_runtime::{DecodeError, Dim, ElementType, FLOAT, Model, Tensor, TensorSpec, is_supported_input_type};
use ndarray::ArrayD;
use std::collections::BTreeMap;
use tonic::{Code, Status};

/// A gRPC status for a host failure (the codes are the same numbers).
pub fn status_of(failure: Failure) -> Status {
    let code = match failure.code {
        c if (0..=16).contains(&c) => Code::from(c),
        _ => Code::Internal,
    };
    Status::new(code, failure.message)
}

pub fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message)
}

fn element_type_name(code: i32) -> String {
    proto::ElementType::try_from(code).map(|t| t.as_str_name().to_string()).unwrap_or_else(|_| format!("{code}"))
}

/// Decodes a request tensor into float32, checking type, shape, byte length and finiteness.
pub fn tensor_to_array(tensor: Option<&proto::Tensor>, field: &str) -> Result<ArrayD<f32>, Status> {
    match decode_tensor(tensor, field, FLOAT, "", false)? {
        Tensor::Float(array) => Ok(array),
        _ => unreachable!("decoded as float32"),
    }
}

/// Decodes a request tensor of element type `expected` (that of model input `input`, named in
/// the error when the tensor has another), checking shape, byte length, bools, and that float
/// elements are finite; with `nan_is_missing` (a model with tree ensembles), NaN is accepted as
/// a missing value and only infinities are refused.
fn decode_tensor(
    tensor: Option<&proto::Tensor>,
    field: &str,
    expected: ElementType,
    input: &str,
    nan_is_missing: bool,
) -> Result<Tensor, Status> {
    let tensor = tensor.ok_or_else(|| invalid(format!("{field}: missing")))?;
    if tensor.element_type != expected {
        let takes = match input {
            "" => String::new(),
            name => format!(", but model input {name:?} takes {}", element_type_name(expected)),
        };
        return Err(invalid(format!(
            "{field}.element_type: {}{takes}; send {}",
            element_type_name(tensor.element_type),
            element_type_name(expected)
        )));
    }
    let mut dims = Vec::with_capacity(tensor.shape.len());
    for (i, &d) in tensor.shape.iter().enumerate() {
        if d < 0 {
            return Err(invalid(format!("{field}.shape[{i}]: {d} is negative")));
        }
        dims.push(d as usize);
    }
    let listed = listed_bytes(tensor, field)?;
    let bytes = listed.as_deref().unwrap_or(&tensor.data);
    let decoded = Tensor::from_le_bytes(expected, &dims, bytes).map_err(|e| match e {
        DecodeError::Length { count, .. } if listed.is_some() => {
            let given = tensor.values.len() + tensor.int_values.len() + tensor.bool_values.len();
            invalid(format!("{field}: {given} values for shape {:?}, which holds {count}", tensor.shape))
        }
        DecodeError::TooLarge => invalid(format!("{field}.shape: {:?} has too many elements", tensor.shape)),
        DecodeError::Length { expected: bytes, count, got } => invalid(format!(
            "{field}.data: expected {bytes} bytes ({count} {} for shape {:?}), got {got}",
            explaind_runtime::element_type_name(tensor.element_type),
            tensor.shape
        )),
        other => invalid(format!("{field}.data: {other}")),
    })?;
    let rule = if nan_is_missing { "inputs must be finite or NaN (a missing value)" } else { "inputs must be finite" };
    let refused = |i: usize, v: String| invalid(format!("{field}.data: element {i} is {v}; {rule}"));
    let accepted = |finite: bool, nan: bool| finite || nan_is_missing && nan;
    match &decoded {
        Tensor::Float(a) => match a.iter().position(|v| !accepted(v.is_finite(), v.is_nan())) {
            Some(i) => Err(refused(i, a.as_slice().expect("standard layout")[i].to_string())),
            None => Ok(decoded),
        },
        Tensor::Double(a) => match a.iter().position(|v| !accepted(v.is_finite(), v.is_nan())) {
            Some(i) => Err(refused(i, a.as_slice().expect("standard layout")[i].to_string())),
            None => Ok(decoded),
        },
        Tensor::Float16(a) => match a.iter().position(|v| !accepted(v.is_finite(), v.is_nan())) {
            Some(i) => Err(refused(i, a.as_slice().expect("standard layout")[i].to_string())),
            None => Ok(decoded),
        },
        _ => Ok(decoded),
    }
}

/// The little-endian bytes of a tensor's element list (`values`, `int_values` or
/// `bool_values`), when it has one instead of `data`: the readable form grpcurl and JSON clients
/// send. Each list belongs to a kind of element type; an integer must fit its type.
fn listed_bytes(tensor: &proto::Tensor, field: &str) -> Result<Option<Vec<u8>>, Status> {
    use proto::ElementType as E;
    let given = [!tensor.values.is_empty(), !tensor.int_values.is_empty(), !tensor.bool_values.is_empty()];
    match given.iter().filter(|&&g| g).count() + usize::from(!tensor.data.is_empty()) {
        0 => return Ok(None),
        1 if tensor.data.is_empty() => {}
        1 => return Ok(None),
        _ => return Err(invalid(format!("{field}: give data or one list of values, not several"))),
    }
    let kind = E::try_from(tensor.element_type).unwrap_or(E::Unspecified);
    let wrong = |list: &str| {
        invalid(format!(
            "{field}.{list}: {} takes {}",
            element_type_name(tensor.element_type),
            match kind {
                E::Float | E::Float16 | E::Double => "`values`",
                E::Bool => "`bool_values`",
                _ => "`int_values`",
            }
        ))
    };
    let mut out = Vec::new();
    if !tensor.values.is_empty() {
        match kind {
            E::Float => tensor.values.iter().for_each(|&v| out.extend((v as f32).to_le_bytes())),
            E::Double => tensor.values.iter().for_each(|&v| out.extend(v.to_le_bytes())),
            E::Float16 => tensor.values.iter().for_each(|&v| out.extend(half::f16::from_f64(v).to_le_bytes())),
            _ => return Err(wrong("values")),
        }
    } else if !tensor.int_values.is_empty() {
        let (width, range): (usize, std::ops::RangeInclusive<i64>) = match kind {
            E::Int64 => (8, i64::MIN..=i64::MAX),
            E::Int32 => (4, i32::MIN as i64..=i32::MAX as i64),
            E::Int8 => (1, -128..=127),
            E::Uint8 => (1, 0..=255),
            _ => return Err(wrong("int_values")),
        };
        for (i, &v) in tensor.int_values.iter().enumerate() {
            if !range.contains(&v) {
                return Err(invalid(format!(
                    "{field}.int_values[{i}]: {v} does not fit {}",
                    element_type_name(tensor.element_type)
                )));
            }
            out.extend(&v.to_le_bytes()[..width]);
        }
    } else {
        if kind != E::Bool {
            return Err(wrong("bool_values"));
        }
        out.extend(tensor.bool_values.iter().map(|&b| b as u8));
    }
    Ok(Some(out))
}

/// Encodes a float32 array.
pub fn array_to_tensor(array: &ArrayD<f32>) -> proto::Tensor {
    let data = match array.as_slice() {
        Some(values) => le_bytes_of_floats(values),
        None => le_bytes_of_floats(&array.iter().copied().collect::<Vec<f32>>()),
    };
    proto::Tensor { element_type: FLOAT, shape: array.shape().iter().map(|&d| d as i64).collect(), data, ..Default::default() }
}

/// The wire's little-endian bytes of `values`: one copy on little-endian machines (results run
/// to hundreds of megabytes, and a per-element loop would hold a core long after a deadline).
fn le_bytes_of_floats(values: &[f32]) -> Vec<u8> {
    if cfg!(target_endian = "little") {
        bytemuck::cast_slice(values).to_vec()
    } else {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }
}

/// `values` as a request tensor of ONNX element type `element_type`: exactly, or the element
/// that the type does not hold (a fraction for an integer type, an id past 2^24 read as float32).
pub fn typed_tensor(values: &ArrayD<f32>, element_type: i32) -> Result<proto::Tensor, String> {
    use ndarray::ArrayD as A;
    let whole = |range: std::ops::RangeInclusive<f64>| {
        move |(i, &v): (usize, &f32)| {
            let ok = v.fract() == 0.0 && range.contains(&(v as f64)) && (v as f64).abs() <= (1u64 << 24) as f64;
            if ok {
                Ok(v as i64)
            } else {
                Err(format!("element {i} is {v}, not a {} value", explaind_runtime::element_type_name(element_type)))
            }
        }
    };
    let ints = |range| values.iter().enumerate().map(whole(range)).collect::<Result<Vec<i64>, String>>();
    let shape = values.raw_dim();
    let tensor = match element_type {
        1 => Tensor::Float(values.clone()),
        11 => Tensor::Double(values.mapv(f64::from)),
        10 => Tensor::Float16(values.mapv(half::f16::from_f32)),
        7 => Tensor::Int64(A::from_shape_vec(shape, ints(i64::MIN as f64..=i64::MAX as f64)?).expect("same shape")),
        6 => Tensor::Int32(
            A::from_shape_vec(shape, ints(i32::MIN as f64..=i32::MAX as f64)?.into_iter().map(|v| v as i32).collect())
                .expect("same shape"),
        ),
        3 => Tensor::Int8(
            A::from_shape_vec(shape, ints(-128.0..=127.0)?.into_iter().map(|v| v as i8).collect()).expect("same shape"),
        ),
        2 => Tensor::Uint8(
            A::from_shape_vec(shape, ints(0.0..=255.0)?.into_iter().map(|v| v as u8).collect()).expect("same shape"),
        ),
        9 => Tensor::Bool(A::from_shape_vec(shape, ints(0.0..=1.0)?.into_iter().map(|v| v == 1).collect()).expect("same shape")),
        other => return Err(format!("the model's input type {} is not one explaind feeds", element_type_name(other))),
    };
    Ok(proto::Tensor {
        element_type,
        shape: tensor.shape().iter().map(|&d| d as i64).collect(),
        data: tensor.to_le_bytes(),
        ..Default::default()
    })
}

/// Encodes an int64 table.
pub fn int_tensor(shape: &[usize], values: impl Iterator<Item = i64>) -> proto::Tensor {
    let data = values.flat_map(|v| v.to_le_bytes()).collect();
    proto::Tensor {
        element_type: proto::ElementType::Int64 as i32,
        shape: shape.iter().map(|&d| d as i64).collect(),
        data,
        ..Default::default()
    }
}

fn describe_shape(spec: &TensorSpec) -> String {
    let dims: Vec<String> = spec
        .shape
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => n.to_string(),
            Dim::Symbolic(s) => s.clone(),
            Dim::Unknown => "?".into(),
        })
        .collect();
    format!("[{}]", dims.join(", "))
}

/// Binds named tensors to the model's inputs, in the model's order, and checks each against
/// the declared type and shape. `rows_must_match` is the batch size every tensor must have, if
/// one is imposed; the returned batch size is the common first axis.
pub fn bind_inputs(
    model: &Model,
    tensors: &[proto::NamedTensor],
    field: &str,
    max_rows: usize,
) -> Result<(Vec<Tensor>, usize), Status> {
    if tensors.is_empty() {
        return Err(invalid(format!("{field}: give one tensor per model input ({})", input_names(model))));
    }
    let mut bound: Vec<Option<Tensor>> = vec![None; model.inputs.len()];
    for (i, named) in tensors.iter().enumerate() {
        let item = format!("{field}[{i}]");
        let index = if named.name.is_empty() && model.inputs.len() == 1 && tensors.len() == 1 {
            0
        } else {
            model.inputs.iter().position(|s| s.name == named.name).ok_or_else(|| {
                invalid(format!(
                    "{item}.name: {:?} is not an input of {} (inputs: {})",
                    named.name,
                    model.name,
                    input_names(model)
                ))
            })?
        };
        if bound[index].is_some() {
            return Err(invalid(format!("{item}.name: input {:?} given twice", model.inputs[index].name)));
        }
        let spec = &model.inputs[index];
        if !is_supported_input_type(spec.element_type) {
            return Err(Status::unimplemented(format!(
                "model {} input {:?} takes {}; explaind feeds inputs of bool, int8, uint8, int32, int64, float16, float32 \
                 and double",
                model.name,
                spec.name,
                element_type_name(spec.element_type)
            )));
        }
        let field = format!("{item}.tensor");
        let array = decode_tensor(named.tensor.as_ref(), &field, spec.element_type, &spec.name, model.has_tree_ensemble)?;
        let fits = array.shape().len() == spec.shape.len()
            && !array.shape().is_empty()
            && spec.shape.iter().zip(array.shape()).skip(1).all(|(d, &n)| !matches!(d, Dim::Fixed(f) if *f as usize != n));
        if !fits {
            return Err(invalid(format!(
                "{item}.tensor.shape: model input {:?} takes {} (first axis: rows), got {:?}",
                spec.name,
                describe_shape(spec),
                array.shape()
            )));
        }
        bound[index] = Some(array);
    }
    if let Some(missing) = bound.iter().position(Option::is_none) {
        return Err(invalid(format!("{field}: no tensor for model input {:?}", model.inputs[missing].name)));
    }
    let arrays: Vec<Tensor> = bound.into_iter().map(Option::unwrap).collect();
    let rows = arrays[0].rows();
    if let Some(i) = arrays.iter().position(|a| a.rows() != rows) {
        return Err(invalid(format!(
            "{field}: every tensor needs the same number of rows; {:?} has {}, {:?} has {rows}",
            model.inputs[i].name,
            arrays[i].rows(),
            model.inputs[0].name
        )));
    }
    if rows == 0 {
        return Err(invalid(format!("{field}: the batch is empty")));
    }
    if rows > max_rows {
        return Err(Status::resource_exhausted(format!("{field}: {rows} rows exceed the server's limit of {max_rows}")));
    }
    Ok((arrays, rows))
}

/// [`bind_inputs`] for rows kept as float32 (backgrounds): the rows of an input of another
/// type (token ids, codes) become float32 values, exactly, or are refused naming the element.
pub fn bind_float_inputs(
    model: &Model,
    tensors: &[proto::NamedTensor],
    field: &str,
    max_rows: usize,
) -> Result<(Vec<ArrayD<f32>>, usize), Status> {
    let (tensors, rows) = bind_inputs(model, tensors, field, max_rows)?;
    let arrays = tensors
        .iter()
        .zip(&model.inputs)
        .map(|(t, spec)| {
            t.to_f32_exact().map_err(|(i, v)| {
                invalid(format!(
                    "{field}: element {i} of input {:?} is {v}; background rows are kept as float32, which holds integers up \
                     to 2^24 exactly",
                    spec.name
                ))
            })
        })
        .collect::<Result<_, _>>()?;
    Ok((arrays, rows))
}

/// Where the request's background comes from: rows it sent (float32 values, bound to the
/// model's inputs), a registered id, or the model's default; never both rows and an id.
pub fn background_source(
    model: &Model,
    request: &proto::ExplainRequest,
    max_rows: usize,
) -> Result<explaind_host::BackgroundSource, Status> {
    use explaind_host::BackgroundSource;
    match (request.background.is_empty(), request.background_id.is_empty()) {
        (true, true) => Ok(BackgroundSource::ModelDefault),
        (false, false) => Err(invalid("background_id: give background or background_id, not both")),
        (false, true) => Ok(BackgroundSource::Rows(bind_float_inputs(model, &request.background, "background", max_rows)?.0)),
        (true, false) => Ok(BackgroundSource::Registered(request.background_id.clone())),
    }
}

/// Resolves `explained_inputs` (input names) to one flag per model input; empty: all.
pub fn explained_inputs(model: &Model, names: &[String]) -> Result<Vec<bool>, Status> {
    let mut flags = vec![names.is_empty(); model.inputs.len()];
    for (i, name) in names.iter().enumerate() {
        let index = model.inputs.iter().position(|s| &s.name == name).ok_or_else(|| {
            invalid(format!("explained_inputs[{i}]: {name:?} is not an input of {} (inputs: {})", model.name, input_names(model)))
        })?;
        if flags[index] {
            return Err(invalid(format!("explained_inputs[{i}]: {name:?} is named twice")));
        }
        flags[index] = true;
    }
    Ok(flags)
}

fn input_names(model: &Model) -> String {
    model.inputs.iter().map(|s| s.name.as_str()).collect::<Vec<_>>().join(", ")
}

pub fn targets(targets: Option<&proto::Targets>) -> Result<TargetSelection, Status> {
    use proto::targets::Selection;
    Ok(match targets.and_then(|t| t.selection.as_ref()) {
        None | Some(Selection::Predicted(_)) => TargetSelection::Predicted,
        Some(Selection::Indices(list)) => TargetSelection::Indices(list.values.clone()),
        Some(Selection::All(_)) => TargetSelection::All,
        Some(Selection::TopK(k)) => TargetSelection::TopK(*k as usize),
    })
}

pub fn params(given: &std::collections::HashMap<String, proto::ParamValue>) -> Result<BTreeMap<String, ParamValue>, Status> {
    use proto::param_value::Kind;
    let mut out = BTreeMap::new();
    for (name, value) in given {
        let v = match &value.kind {
            None => return Err(invalid(format!("parameters.{name}: no value set"))),
            Some(Kind::Number(x)) => ParamValue::Number(*x),
            Some(Kind::Integer(x)) => ParamValue::Integer(*x),
            Some(Kind::Flag(x)) => ParamValue::Flag(*x),
            Some(Kind::Text(x)) => ParamValue::Text(x.clone()),
            Some(Kind::Numbers(x)) => ParamValue::Numbers(x.values.clone()),
            Some(Kind::Integers(x)) => ParamValue::Integers(x.values.clone()),
        };
        out.insert(name.clone(), v);
    }
    Ok(out)
}

/// The faithfulness metrics a request asks for. Their parameters are numbers, integers, flags or
/// text; a list is INVALID_ARGUMENT naming `evaluate[i].parameters.<name>`.
pub fn metric_requests(evaluate: &[proto::MetricRequest]) -> Result<Vec<explaind_host::evaluate::MetricRequest>, Status> {
    use explaind_faithfulness::Param;
    use proto::param_value::Kind;
    evaluate
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut params = std::collections::BTreeMap::new();
            for (name, value) in &m.parameters {
                let param = match &value.kind {
                    Some(Kind::Number(x)) => Param::Number(*x),
                    Some(Kind::Integer(x)) => Param::Integer(*x),
                    Some(Kind::Flag(x)) => Param::Flag(*x),
                    Some(Kind::Text(x)) => Param::Text(x.clone()),
                    _ => return Err(invalid(format!("evaluate[{i}].parameters.{name}: a number, integer, flag or text"))),
                };
                params.insert(name.clone(), param);
            }
            Ok(explaind_host::evaluate::MetricRequest { name: m.name.clone(), params })
        })
        .collect()
}

/// A metric's result on the wire, with the PNG of its curves (empty: none).
pub fn metric_result(evaluation: &explaind_faithfulness::Evaluation, figure_png: Vec<u8>) -> proto::MetricResult {
    use explaind_faithfulness::Param;
    use proto::param_value::Kind;
    proto::MetricResult {
        name: evaluation.name.to_string(),
        values: Some(array_to_tensor(&evaluation.values.clone().into_dyn())),
        parameters: evaluation
            .parameters
            .iter()
            .map(|(name, p)| {
                let kind = match p {
                    Param::Number(x) => Kind::Number(*x),
                    Param::Integer(x) => Kind::Integer(*x),
                    Param::Flag(x) => Kind::Flag(*x),
                    Param::Text(x) => Kind::Text(x.clone()),
                };
                (name.clone(), proto::ParamValue { kind: Some(kind) })
            })
            .collect(),
        extras: evaluation
            .extras
            .iter()
            .map(|(name, a)| proto::NamedTensor { name: name.clone(), tensor: Some(array_to_tensor(a)) })
            .collect(),
        figure_png,
    }
}

/// The audit record's `evaluation`: the seed, and each metric's name, parameters and figures.
pub fn evaluation_json(seed: u64, evaluations: &[explaind_faithfulness::Evaluation]) -> serde_json::Value {
    use explaind_faithfulness::Param;
    let metrics: Vec<serde_json::Value> = evaluations
        .iter()
        .map(|e| {
            let parameters: serde_json::Map<String, serde_json::Value> = e
                .parameters
                .iter()
                .map(|(k, p)| {
                    let v = match p {
                        Param::Number(x) => serde_json::json!(x),
                        Param::Integer(x) => serde_json::json!(x),
                        Param::Flag(x) => serde_json::json!(x),
                        Param::Text(x) => serde_json::json!(x),
                    };
                    (k.clone(), v)
                })
                .collect();
            let values: Vec<Vec<f32>> = e.values.outer_iter().map(|row| row.to_vec()).collect();
            serde_json::json!({ "name": e.name, "parameters": parameters, "values": values })
        })
        .collect();
    serde_json::json!({ "seed": seed, "metrics": metrics })
}

pub fn param_to_proto(value: &ParamValue) -> proto::ParamValue {
    use proto::param_value::Kind;
    let kind = match value {
        ParamValue::Number(x) => Kind::Number(*x),
        ParamValue::Integer(x) => Kind::Integer(*x),
        ParamValue::Flag(x) => Kind::Flag(*x),
        ParamValue::Text(x) => Kind::Text(x.clone()),
        ParamValue::Numbers(x) => Kind::Numbers(proto::NumberList { values: x.clone() }),
        ParamValue::Integers(x) => Kind::Integers(proto::IntegerList { values: x.clone() }),
    };
    proto::ParamValue { kind: Some(kind) }
}

pub fn tensor_info(spec: &TensorSpec) -> proto::TensorInfo {
    use proto::dimension::Value;
    proto::TensorInfo {
        name: spec.name.clone(),
        element_type: spec.element_type,
        shape: spec
            .shape
            .iter()
            .map(|d| proto::Dimension {
                value: match d {
                    Dim::Fixed(n) => Some(Value::Size(*n)),
                    Dim::Symbolic(s) => Some(Value::Symbol(s.clone())),
                    Dim::Unknown => None,
                },
            })
            .collect(),
    }
}

/// A model's metadata, with what can explain it (`compilability` from the attribution engine,
/// the loaded explainers).
pub fn model_metadata(
    model: &Model,
    compilability: &explaind_attribution::Compilability,
    explainers: &[std::sync::Arc<explaind_host::Plugin>],
) -> proto::ModelMetadata {
    let refusal = |r: &Result<(), String>| r.as_ref().err().cloned().unwrap_or_default();
    let compiles = compilability.gradients.is_ok() && compilability.deeplift.is_ok();
    let all_float32 = model.inputs.iter().all(|i| i.element_type == FLOAT);
    let explainability = proto::Explainability {
        gradients: compilability.gradients.is_ok(),
        gradients_refusal: refusal(&compilability.gradients),
        deeplift: compilability.deeplift.is_ok(),
        deeplift_refusal: refusal(&compilability.deeplift),
        explainers: explainers
            .iter()
            .filter(|p| {
                (compiles || !p.needs_gradients())
                    && (model.has_tree_ensemble || !p.needs_tree_ensemble())
                    && (all_float32 || p.typed_inputs())
            })
            .map(|p| p.name.clone())
            .collect(),
    };
    proto::ModelMetadata {
        explainability: Some(explainability),
        name: model.name.clone(),
        version: model.version.clone(),
        sha256: model.sha256.clone(),
        execution_provider: model.execution_provider.as_str().to_string(),
        inputs: model.inputs.iter().map(tensor_info).collect(),
        outputs: model.outputs.iter().map(tensor_info).collect(),
        labels: model.config.labels.clone(),
        description: model.config.description.clone(),
        has_default_background: model.background.is_some(),
        default_background_shape: model.background.iter().flat_map(|rows| rows[0].shape().iter().map(|&d| d as i64)).collect(),
    }
}

/// Parses a `grpc-timeout` header value ("100m", "5S", ...) into a duration.
pub fn parse_grpc_timeout(value: &str) -> Option<std::time::Duration> {
    use std::time::Duration;
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(shape: &[i64], values: &[f32]) -> proto::Tensor {
        proto::Tensor {
            element_type: FLOAT,
            shape: shape.to_vec(),
            data: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn decodes_little_endian_float32() {
        let a = tensor_to_array(Some(&tensor(&[2, 2], &[1.0, -2.5, 3.0, 0.25])), "x").unwrap();
        assert_eq!(a.shape(), &[2, 2]);
        assert_eq!(a.as_slice().unwrap(), &[1.0, -2.5, 3.0, 0.25]);
        assert_eq!(array_to_tensor(&a), tensor(&[2, 2], &[1.0, -2.5, 3.0, 0.25]));
    }

    #[test]
    fn each_defect_names_its_field() {
        let mut t = tensor(&[2], &[1.0, 2.0]);
        t.data.pop();
        let e = tensor_to_array(Some(&t), "inputs[0].tensor").unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().starts_with("inputs[0].tensor.data: expected 8 bytes"), "{}", e.message());

        let e = tensor_to_array(Some(&tensor(&[2], &[1.0, f32::NAN])), "inputs[0].tensor").unwrap_err();
        assert!(e.message().contains("element 1 is NaN"), "{}", e.message());

        let e = tensor_to_array(Some(&tensor(&[1], &[f32::INFINITY])), "x").unwrap_err();
        assert!(e.message().contains("element 0 is inf"), "{}", e.message());

        let mut t = tensor(&[1], &[1.0]);
        t.element_type = proto::ElementType::Double as i32;
        let e = tensor_to_array(Some(&t), "inputs[0].tensor").unwrap_err();
        assert!(e.message().starts_with("inputs[0].tensor.element_type: ELEMENT_TYPE_DOUBLE"), "{}", e.message());

        let e = tensor_to_array(Some(&tensor(&[-1], &[])), "x").unwrap_err();
        assert!(e.message().starts_with("x.shape[0]"), "{}", e.message());
    }

    #[test]
    fn readable_lists_decode_as_the_bytes_would() {
        use explaind_runtime::Tensor as T;
        let list = |element_type: proto::ElementType, shape: &[i64]| proto::Tensor {
            element_type: element_type as i32,
            shape: shape.to_vec(),
            ..Default::default()
        };
        let mut t = list(proto::ElementType::Float, &[2]);
        t.values = vec![0.1, -2.0];
        assert_eq!(tensor_to_array(Some(&t), "x").unwrap().as_slice().unwrap(), &[0.1f32, -2.0]);
        let mut t = list(proto::ElementType::Int64, &[1, 3]);
        t.int_values = vec![101, 1 << 40, -1];
        let decoded = decode_tensor(Some(&t), "x", 7, "input_ids", false).unwrap();
        assert_eq!(decoded, T::Int64(ndarray::arr2(&[[101i64, 1 << 40, -1]]).into_dyn()));
        let mut t = list(proto::ElementType::Bool, &[2]);
        t.bool_values = vec![true, false];
        assert_eq!(decode_tensor(Some(&t), "x", 9, "", false).unwrap(), T::Bool(ndarray::arr1(&[true, false]).into_dyn()));
        let mut t = list(proto::ElementType::Float16, &[1]);
        t.values = vec![0.5];
        assert_eq!(
            decode_tensor(Some(&t), "x", 10, "", false).unwrap(),
            T::Float16(ndarray::arr1(&[half::f16::from_f32(0.5)]).into_dyn())
        );

        // Each defect names the field.
        let mut t = list(proto::ElementType::Int32, &[1]);
        t.int_values = vec![1 << 40];
        let e = decode_tensor(Some(&t), "inputs[0].tensor", 6, "codes", false).unwrap_err();
        assert_eq!(e.message(), "inputs[0].tensor.int_values[0]: 1099511627776 does not fit ELEMENT_TYPE_INT32");
        let mut t = list(proto::ElementType::Int64, &[1]);
        t.values = vec![1.0];
        let e = decode_tensor(Some(&t), "x", 7, "", false).unwrap_err();
        assert_eq!(e.message(), "x.values: ELEMENT_TYPE_INT64 takes `int_values`");
        let mut t = list(proto::ElementType::Float, &[3]);
        t.values = vec![1.0, 2.0];
        let e = tensor_to_array(Some(&t), "x").unwrap_err();
        assert_eq!(e.message(), "x: 2 values for shape [3], which holds 3");
        t.data = vec![0; 12];
        let e = tensor_to_array(Some(&t), "x").unwrap_err();
        assert_eq!(e.message(), "x: give data or one list of values, not several");
        let mut t = list(proto::ElementType::Float, &[1]);
        t.values = vec![f64::NAN];
        assert!(tensor_to_array(Some(&t), "x").unwrap_err().message().contains("element 0 is NaN"));
    }

    #[test]
    fn grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("100m"), Some(std::time::Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2S"), Some(std::time::Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("x"), None);
        assert_eq!(parse_grpc_timeout(""), None);
    }
}
