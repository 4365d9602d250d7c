//! Metric parameters: declared per metric ([`ParamSpec`]), checked and defaulted once
//! ([`resolve`]), read by name ([`Params`]).

use crate::MetricError;
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq)]
pub enum Param {
    Number(f64),
    Integer(i64),
    Flag(bool),
    Text(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    Number,
    Integer,
    Flag,
    /// Text has no default: a declared text parameter is required.
    Text,
}

impl ParamKind {
    pub fn name(self) -> &'static str {
        match self {
            ParamKind::Number => "number",
            ParamKind::Integer => "integer",
            ParamKind::Flag => "flag",
            ParamKind::Text => "text",
        }
    }

    fn with_article(self) -> &'static str {
        match self {
            ParamKind::Number => "a number",
            ParamKind::Integer => "an integer",
            ParamKind::Flag => "a flag",
            ParamKind::Text => "text",
        }
    }
}

/// One declared parameter: its kind, default and accepted range (inclusive).
#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    pub name: &'static str,
    pub kind: ParamKind,
    pub default: f64,
    pub min: f64,
    pub max: f64,
    pub description: &'static str,
}

/// The parameters a metric runs with, every declared one present.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Params(pub BTreeMap<String, Param>);

impl Params {
    pub fn number(&self, name: &str) -> f64 {
        match self.0.get(name) {
            Some(Param::Number(v)) => *v,
            Some(Param::Integer(v)) => *v as f64,
            other => panic!("parameter {name} is not a declared number: {other:?}"),
        }
    }

    pub fn integer(&self, name: &str) -> i64 {
        match self.0.get(name) {
            Some(Param::Integer(v)) => *v,
            other => panic!("parameter {name} is not a declared integer: {other:?}"),
        }
    }

    pub fn flag(&self, name: &str) -> bool {
        match self.0.get(name) {
            Some(Param::Flag(v)) => *v,
            other => panic!("parameter {name} is not a declared flag: {other:?}"),
        }
    }

    pub fn text(&self, name: &str) -> &str {
        match self.0.get(name) {
            Some(Param::Text(v)) => v,
            other => panic!("parameter {name} is not a declared text: {other:?}"),
        }
    }
}

pub(crate) fn resolve(metric: &str, specs: &[ParamSpec], given: &BTreeMap<String, Param>) -> Result<Params, MetricError> {
    let field = |name: &str| format!("evaluate.{metric}.{name}");
    if let Some(unknown) = given.keys().find(|k| !specs.iter().any(|s| s.name == k.as_str())) {
        let known: Vec<&str> = specs.iter().map(|s| s.name).collect();
        return Err(MetricError::Invalid(format!(
            "{}: not a parameter of {metric} (its parameters: {})",
            field(unknown),
            if known.is_empty() { "none".to_string() } else { known.join(", ") }
        )));
    }
    let mut out = BTreeMap::new();
    for spec in specs {
        let value = match (spec.kind, given.get(spec.name)) {
            (ParamKind::Number, None) => Param::Number(spec.default),
            (ParamKind::Integer, None) => Param::Integer(spec.default as i64),
            (ParamKind::Flag, None) => Param::Flag(spec.default != 0.0),
            (ParamKind::Text, None) => return Err(MetricError::Invalid(format!("{}: required", field(spec.name)))),
            (ParamKind::Text, Some(Param::Text(v))) => Param::Text(v.clone()),
            (ParamKind::Number, Some(Param::Number(v))) => Param::Number(*v),
            (ParamKind::Number, Some(Param::Integer(v))) => Param::Number(*v as f64),
            (ParamKind::Integer, Some(Param::Integer(v))) => Param::Integer(*v),
            (ParamKind::Flag, Some(Param::Flag(v))) => Param::Flag(*v),
            (kind, Some(other)) => {
                return Err(MetricError::Invalid(format!(
                    "{}: expected {}, got {other:?}",
                    field(spec.name),
                    kind.with_article()
                )));
            }
        };
        let number = match value {
            Param::Number(v) => Some(v),
            Param::Integer(v) => Some(v as f64),
            Param::Flag(_) | Param::Text(_) => None,
        };
        if let Some(v) = number
            && (!v.is_finite() || v < spec.min || v > spec.max)
        {
            return Err(MetricError::Invalid(format!("{}: {v} is outside [{}, {}]", field(spec.name), spec.min, spec.max)));
        }
        out.insert(spec.name.to_string(), value);
    }
    Ok(Params(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: [ParamSpec; 2] = [
        ParamSpec { name: "samples", kind: ParamKind::Integer, default: 10.0, min: 1.0, max: 100.0, description: "" },
        ParamSpec { name: "scale", kind: ParamKind::Number, default: 0.1, min: 0.0, max: 1.0, description: "" },
    ];

    #[test]
    fn defaults_fill_in_and_bad_values_name_the_field() {
        let p = resolve("m", &SPECS, &BTreeMap::new()).unwrap();
        assert_eq!((p.integer("samples"), p.number("scale")), (10, 0.1));
        let given = |k: &str, v: Param| BTreeMap::from([(k.to_string(), v)]);
        let p = resolve("m", &SPECS, &given("scale", Param::Integer(1))).unwrap();
        assert_eq!(p.number("scale"), 1.0);
        let err = resolve("m", &SPECS, &given("samples", Param::Integer(0))).unwrap_err().to_string();
        assert_eq!(err, "evaluate.m.samples: 0 is outside [1, 100]");
        let err = resolve("m", &SPECS, &given("samples", Param::Number(2.5))).unwrap_err().to_string();
        assert!(err.starts_with("evaluate.m.samples: expected an integer"), "{err}");
        let err = resolve("m", &SPECS, &given("sigma", Param::Number(1.0))).unwrap_err().to_string();
        assert_eq!(err, "evaluate.m.sigma: not a parameter of m (its parameters: samples, scale)");
        let err = resolve("m", &SPECS, &given("scale", Param::Number(f64::NAN))).unwrap_err().to_string();
        assert!(err.contains("NaN is outside"), "{err}");
    }
}
