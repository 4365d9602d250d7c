//! The protocol's `parameters` maps, the same over gRPC (InferParameter) and HTTP (JSON
//! values), and their reading as explaind's parameters.

use crate::convert::invalid;
use crate::inference::InferParameter;
use crate::inference::infer_parameter::ParameterChoice;
use crate::proto;
use std::collections::{BTreeMap, HashMap};
use tonic::Status;

#[derive(Debug, Clone, PartialEq)]
pub enum Parameter {
    Bool(bool),
    Int(i64),
    Uint(u64),
    Double(f64),
    Text(String),
}

/// A `parameters` map, in name order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parameters(BTreeMap<String, Parameter>);

impl Parameters {
    pub fn get(&self, name: &str) -> Option<&Parameter> {
        self.0.get(name)
    }

    pub fn insert(&mut self, name: &str, value: Parameter) {
        self.0.insert(name.to_string(), value);
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Parameter)> {
        self.0.iter()
    }

    /// A gRPC map; a parameter without a value is INVALID_ARGUMENT naming `field.<name>`.
    pub fn from_grpc(map: &HashMap<String, InferParameter>, field: &str) -> Result<Parameters, Status> {
        let mut out = BTreeMap::new();
        for (name, p) in map {
            let value = match &p.parameter_choice {
                Some(ParameterChoice::BoolParam(b)) => Parameter::Bool(*b),
                Some(ParameterChoice::Int64Param(i)) => Parameter::Int(*i),
                Some(ParameterChoice::Uint64Param(u)) => Parameter::Uint(*u),
                Some(ParameterChoice::DoubleParam(d)) => Parameter::Double(*d),
                Some(ParameterChoice::StringParam(s)) => Parameter::Text(s.clone()),
                None => return Err(invalid(format!("{field}.{name}: no value"))),
            };
            out.insert(name.clone(), value);
        }
        Ok(Parameters(out))
    }

    pub fn to_grpc(&self) -> HashMap<String, InferParameter> {
        self.0
            .iter()
            .map(|(name, value)| {
                let choice = match value {
                    Parameter::Bool(b) => ParameterChoice::BoolParam(*b),
                    Parameter::Int(i) => ParameterChoice::Int64Param(*i),
                    Parameter::Uint(u) => ParameterChoice::Uint64Param(*u),
                    Parameter::Double(d) => ParameterChoice::DoubleParam(*d),
                    Parameter::Text(s) => ParameterChoice::StringParam(s.clone()),
                };
                (name.clone(), InferParameter { parameter_choice: Some(choice) })
            })
            .collect()
    }

    /// A JSON object's members: booleans, integers, numbers and strings.
    pub fn from_json(map: &serde_json::Map<String, serde_json::Value>, field: &str) -> Result<Parameters, Status> {
        use serde_json::Value;
        let mut out = BTreeMap::new();
        for (name, value) in map {
            let p = match value {
                Value::Bool(b) => Parameter::Bool(*b),
                Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
                    (Some(i), _, _) => Parameter::Int(i),
                    (None, Some(u), _) => Parameter::Uint(u),
                    (_, _, Some(d)) => Parameter::Double(d),
                    _ => return Err(invalid(format!("{field}.{name}: {n} is not a number explaind can read"))),
                },
                Value::String(s) => Parameter::Text(s.clone()),
                // Lists and objects travel as their JSON text: an explainer's window, the
                // metrics of `evaluate`.
                Value::Array(_) | Value::Object(_) => Parameter::Text(value.to_string()),
                Value::Null => return Err(invalid(format!("{field}.{name}: null is not a value"))),
            };
            out.insert(name.clone(), p);
        }
        Ok(Parameters(out))
    }

    pub fn to_json(&self) -> serde_json::Map<String, serde_json::Value> {
        self.0
            .iter()
            .map(|(name, value)| {
                let v = match value {
                    Parameter::Bool(b) => serde_json::json!(b),
                    Parameter::Int(i) => serde_json::json!(i),
                    Parameter::Uint(u) => serde_json::json!(u),
                    Parameter::Double(d) => serde_json::json!(d),
                    Parameter::Text(s) => serde_json::json!(s),
                };
                (name.clone(), v)
            })
            .collect()
    }
}

impl Parameter {
    pub fn text(&self, field: &str) -> Result<String, Status> {
        match self {
            Parameter::Text(s) => Ok(s.clone()),
            _ => Err(invalid(format!("{field}: expected a string"))),
        }
    }

    pub fn integer(&self, field: &str) -> Result<i64, Status> {
        match self {
            Parameter::Int(i) => Ok(*i),
            Parameter::Uint(u) => i64::try_from(*u).map_err(|_| invalid(format!("{field}: {u} is out of range"))),
            _ => Err(invalid(format!("{field}: expected an integer"))),
        }
    }

    /// As an explainer parameter: a string holding a JSON array is a list (integers when every
    /// element is one, else numbers).
    pub fn to_param_value(&self, field: &str) -> Result<proto::ParamValue, Status> {
        use proto::param_value::Kind;
        let kind = match self {
            Parameter::Bool(b) => Kind::Flag(*b),
            Parameter::Int(i) => Kind::Integer(*i),
            Parameter::Uint(_) => Kind::Integer(self.integer(field)?),
            Parameter::Double(d) => Kind::Number(*d),
            Parameter::Text(s) if s.trim_start().starts_with('[') => {
                let list: Vec<serde_json::Value> = serde_json::from_str(s)
                    .map_err(|e| invalid(format!("{field}: {s:?} starts like a JSON list but is not one ({e})")))?;
                if list.iter().all(|v| v.as_i64().is_some()) {
                    Kind::Integers(proto::IntegerList { values: list.iter().filter_map(|v| v.as_i64()).collect() })
                } else if list.iter().all(|v| v.as_f64().is_some()) {
                    Kind::Numbers(proto::NumberList { values: list.iter().filter_map(|v| v.as_f64()).collect() })
                } else {
                    return Err(invalid(format!("{field}: a list of numbers was expected, got {s}")));
                }
            }
            Parameter::Text(s) => Kind::Text(s.clone()),
        };
        Ok(proto::ParamValue { kind: Some(kind) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_in_strings_become_lists_and_scalars_keep_their_kind() {
        use proto::param_value::Kind;
        let kind = |p: Parameter| p.to_param_value("parameters.x").unwrap().kind.unwrap();
        assert_eq!(kind(Parameter::Text("[1, 3, 3]".into())), Kind::Integers(proto::IntegerList { values: vec![1, 3, 3] }));
        assert_eq!(kind(Parameter::Text("[0.5, 1]".into())), Kind::Numbers(proto::NumberList { values: vec![0.5, 1.0] }));
        assert_eq!(kind(Parameter::Text("riemann".into())), Kind::Text("riemann".into()));
        assert_eq!(kind(Parameter::Uint(7)), Kind::Integer(7));
        let err = Parameter::Text("[1, \"a\"]".into()).to_param_value("parameters.window").unwrap_err();
        assert!(err.message().starts_with("parameters.window: a list of numbers"), "{}", err.message());
        let err = Parameter::Uint(u64::MAX).to_param_value("parameters.steps").unwrap_err();
        assert!(err.message().contains("parameters.steps"), "{}", err.message());
    }

    #[test]
    fn json_and_grpc_maps_read_the_same() {
        let json: serde_json::Value = serde_json::json!({"explainer": "occlusion", "steps": 8, "alpha": 0.5, "plot": true});
        let from_json = Parameters::from_json(json.as_object().unwrap(), "parameters").unwrap();
        let from_grpc = Parameters::from_grpc(&from_json.to_grpc(), "parameters").unwrap();
        assert_eq!(from_json, from_grpc);
        assert_eq!(serde_json::Value::Object(from_json.to_json()), json);
    }
}
