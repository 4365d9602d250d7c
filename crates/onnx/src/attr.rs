//! Typed access to node attributes, and constructors for them.

use crate::proto::attribute_proto::AttributeType;
use crate::proto::{AttributeProto, NodeProto, TensorProto};

impl AttributeProto {
    pub fn int(name: impl Into<String>, v: i64) -> Self {
        Self::typed(name, AttributeType::Int, |a| a.i = Some(v))
    }

    pub fn ints(name: impl Into<String>, v: impl IntoIterator<Item = i64>) -> Self {
        Self::typed(name, AttributeType::Ints, |a| a.ints = v.into_iter().collect())
    }

    pub fn float(name: impl Into<String>, v: f32) -> Self {
        Self::typed(name, AttributeType::Float, |a| a.f = Some(v))
    }

    pub fn floats(name: impl Into<String>, v: impl IntoIterator<Item = f32>) -> Self {
        Self::typed(name, AttributeType::Floats, |a| a.floats = v.into_iter().collect())
    }

    pub fn string(name: impl Into<String>, v: &str) -> Self {
        Self::typed(name, AttributeType::String, |a| a.s = Some(v.as_bytes().to_vec()))
    }

    pub fn tensor(name: impl Into<String>, v: TensorProto) -> Self {
        Self::typed(name, AttributeType::Tensor, |a| a.t = Some(v))
    }

    /// `type` must always be set: IR ≥ 2 readers, ONNX Runtime among them, go by it rather
    /// than by which value field is present.
    fn typed(name: impl Into<String>, ty: AttributeType, set: impl FnOnce(&mut Self)) -> Self {
        let mut a = AttributeProto { name: Some(name.into()), r#type: Some(ty as i32), ..Default::default() };
        set(&mut a);
        a
    }

    /// Whether this attribute holds a value of type `ty`. Files older than IR 2 have no
    /// `type`; for those the value field's presence decides, and an empty list (which
    /// leaves no trace on the wire) is taken to be of whichever list type is asked for.
    fn is(&self, ty: AttributeType) -> bool {
        if self.r#type.is_some() {
            return self.r#type() == ty;
        }
        let no_scalar = self.f.is_none() && self.i.is_none() && self.s.is_none() && self.t.is_none();
        match ty {
            AttributeType::Float => self.f.is_some(),
            AttributeType::Int => self.i.is_some(),
            AttributeType::String => self.s.is_some(),
            AttributeType::Tensor => self.t.is_some(),
            AttributeType::Floats => no_scalar && self.ints.is_empty(),
            AttributeType::Ints => no_scalar && self.floats.is_empty(),
            _ => false,
        }
    }
}

/// Each getter returns `None` when the attribute is absent *or* has another type, so that a
/// caller falls back to the operator's default only where ONNX would.
impl NodeProto {
    pub fn attr(&self, name: &str) -> Option<&AttributeProto> {
        self.attribute.iter().find(|a| a.name() == name)
    }

    pub fn attr_int(&self, name: &str) -> Option<i64> {
        self.attr(name).filter(|a| a.is(AttributeType::Int)).map(|a| a.i())
    }

    pub fn attr_ints(&self, name: &str) -> Option<&[i64]> {
        self.attr(name).filter(|a| a.is(AttributeType::Ints)).map(|a| &a.ints[..])
    }

    pub fn attr_float(&self, name: &str) -> Option<f32> {
        self.attr(name).filter(|a| a.is(AttributeType::Float)).map(|a| a.f())
    }

    pub fn attr_floats(&self, name: &str) -> Option<&[f32]> {
        self.attr(name).filter(|a| a.is(AttributeType::Floats)).map(|a| &a.floats[..])
    }

    /// `None` also when the bytes are not UTF-8, which ONNX requires of string attributes.
    pub fn attr_string(&self, name: &str) -> Option<&str> {
        self.attr(name).filter(|a| a.is(AttributeType::String)).and_then(|a| std::str::from_utf8(a.s()).ok())
    }

    pub fn attr_tensor(&self, name: &str) -> Option<&TensorProto> {
        self.attr(name).filter(|a| a.is(AttributeType::Tensor)).and_then(|a| a.t.as_ref())
    }

    /// Adds `attr`, replacing an attribute of the same name (ONNX allows one per name).
    pub fn set_attr(&mut self, attr: AttributeProto) {
        match self.attribute.iter_mut().find(|a| a.name == attr.name) {
            Some(slot) => *slot = attr,
            None => self.attribute.push(attr),
        }
    }

    /// True for a node of the default ONNX domain (`""` or `ai.onnx`) with this op type.
    pub fn is_op(&self, op_type: &str) -> bool {
        self.op_type() == op_type && crate::is_default_domain(self.domain())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor_f32;

    fn node(attrs: Vec<AttributeProto>) -> NodeProto {
        NodeProto { op_type: Some("Conv".into()), attribute: attrs, ..Default::default() }
    }

    #[test]
    fn getters_return_what_constructors_set() {
        let t = tensor_f32("value", &[1], &[2.0]);
        let n = node(vec![
            AttributeProto::int("group", 2),
            AttributeProto::ints("pads", [1, 1, 0, 0]),
            AttributeProto::float("alpha", 0.5),
            AttributeProto::floats("scales", vec![1.0, 2.0]),
            AttributeProto::string("auto_pad", "SAME_UPPER"),
            AttributeProto::tensor("value", t.clone()),
        ]);
        assert_eq!(n.attr_int("group"), Some(2));
        assert_eq!(n.attr_ints("pads"), Some(&[1, 1, 0, 0][..]));
        assert_eq!(n.attr_float("alpha"), Some(0.5));
        assert_eq!(n.attr_floats("scales"), Some(&[1.0, 2.0][..]));
        assert_eq!(n.attr_string("auto_pad"), Some("SAME_UPPER"));
        assert_eq!(n.attr_tensor("value"), Some(&t));
        assert_eq!(n.attr("pads").unwrap().r#type(), AttributeType::Ints);
    }

    #[test]
    fn absent_or_mistyped_is_none() {
        let n = node(vec![AttributeProto::int("axis", 1), AttributeProto::ints("empty", [])]);
        assert_eq!(n.attr_int("missing"), None);
        assert_eq!(n.attr_float("axis"), None);
        assert_eq!(n.attr_ints("axis"), None);
        assert_eq!(n.attr_ints("empty"), Some(&[][..]));
    }

    #[test]
    fn untyped_attributes_of_old_files_still_read() {
        let a = AttributeProto { name: Some("axis".into()), i: Some(3), ..Default::default() };
        let n = node(vec![a]);
        assert_eq!(n.attr_int("axis"), Some(3));
        assert_eq!(n.attr_float("axis"), None);
        assert_eq!(n.attr_ints("axis"), None);
        let a = AttributeProto { name: Some("pads".into()), ints: vec![1, 2], ..Default::default() };
        let n = node(vec![a]);
        assert_eq!(n.attr_ints("pads"), Some(&[1, 2][..]));
        assert_eq!(n.attr_floats("pads"), None);
    }

    #[test]
    fn set_attr_replaces_by_name() {
        let mut n = node(vec![AttributeProto::int("axis", 1)]);
        n.set_attr(AttributeProto::int("axis", 0));
        n.set_attr(AttributeProto::int("keepdims", 0));
        assert_eq!(n.attribute.len(), 2);
        assert_eq!(n.attr_int("axis"), Some(0));
    }
}
