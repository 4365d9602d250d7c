//! Lookups in a graph and a model, and reading and writing model files.

use std::path::{Path, PathBuf};

use prost::Message;

use crate::proto::{GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, ValueInfoProto};

/// A model file that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ModelFileError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{} is not an ONNX model: {source}", path.display())]
    Decode { path: PathBuf, source: prost::DecodeError },
}

/// Whether `domain` names the default ONNX operator set, which has two spellings.
pub fn is_default_domain(domain: &str) -> bool {
    domain.is_empty() || domain == "ai.onnx"
}

impl ModelProto {
    /// A model of IR version [`crate::IR_VERSION`] around `graph`, importing `opsets` as
    /// `(domain, version)` pairs (`""` is the default domain).
    pub fn new(graph: GraphProto, opsets: &[(&str, i64)]) -> Self {
        let opset_import = opsets
            .iter()
            .map(|&(domain, version)| OperatorSetIdProto { domain: Some(domain.into()), version: Some(version) })
            .collect();
        ModelProto { ir_version: Some(crate::IR_VERSION), opset_import, graph: Some(graph), ..Default::default() }
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, prost::DecodeError> {
        Self::decode(bytes)
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    pub fn load(path: impl AsRef<Path>) -> Result<Self, ModelFileError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| ModelFileError::Read { path: path.into(), source })?;
        Self::from_bytes(&bytes).map_err(|source| ModelFileError::Decode { path: path.into(), source })
    }

    pub fn save(&self, path: impl AsRef<Path>) -> Result<(), ModelFileError> {
        let path = path.as_ref();
        std::fs::write(path, self.to_bytes()).map_err(|source| ModelFileError::Write { path: path.into(), source })
    }

    /// The version imported for `domain`; `""` and `"ai.onnx"` both mean the default domain.
    pub fn opset_version(&self, domain: &str) -> Option<i64> {
        let wanted = |d: &str| if is_default_domain(domain) { is_default_domain(d) } else { d == domain };
        self.opset_import.iter().filter(|o| wanted(o.domain())).map(|o| o.version()).max()
    }

    /// The version of the default ONNX operator set, which decides the semantics of every
    /// standard operator in the graph.
    pub fn default_opset(&self) -> Option<i64> {
        self.opset_version("")
    }
}

/// These look at the graph's own nodes only: a name that a subgraph (the body of an `If`
/// or `Loop`) uses from the outer scope does not make that node a consumer.
impl GraphProto {
    pub fn initializer(&self, name: &str) -> Option<&TensorProto> {
        self.initializer.iter().find(|t| t.name() == name)
    }

    pub fn initializer_mut(&mut self, name: &str) -> Option<&mut TensorProto> {
        self.initializer.iter_mut().find(|t| t.name() == name)
    }

    /// The value of a constant: an initializer, or the `value` of the `Constant` node that
    /// produces `name`.
    pub fn constant(&self, name: &str) -> Option<&TensorProto> {
        if let Some(t) = self.initializer(name) {
            return Some(t);
        }
        let (_, producer) = self.producer(name)?;
        if producer.op_type() == "Constant" { producer.attr_tensor("value") } else { None }
    }

    /// The node that produces `tensor`, with its index in `node`; `None` for graph inputs,
    /// initializers and unknown names.
    pub fn producer(&self, tensor: &str) -> Option<(usize, &NodeProto)> {
        if tensor.is_empty() {
            return None;
        }
        self.node.iter().enumerate().find(|(_, n)| n.output.iter().any(|o| o == tensor))
    }

    /// The nodes that read `tensor`, with their indices, in graph order. A node that reads
    /// it at several input positions appears once.
    pub fn consumers(&self, tensor: &str) -> Vec<(usize, &NodeProto)> {
        if tensor.is_empty() {
            return Vec::new();
        }
        self.node.iter().enumerate().filter(|(_, n)| n.input.iter().any(|i| i == tensor)).collect()
    }

    pub fn input_info(&self, name: &str) -> Option<&ValueInfoProto> {
        self.input.iter().find(|v| v.name() == name)
    }

    pub fn output_info(&self, name: &str) -> Option<&ValueInfoProto> {
        self.output.iter().find(|v| v.name() == name)
    }

    /// The declared type of `name`, from the inputs, outputs or `value_info`, in that order.
    pub fn find_value_info(&self, name: &str) -> Option<&ValueInfoProto> {
        self.input.iter().chain(&self.output).chain(&self.value_info).find(|v| v.name() == name)
    }

    /// Graph inputs that are not initializers: what a caller must feed. Before IR 4 every
    /// initializer was also listed as an input, and some exporters still do that.
    pub fn runtime_inputs(&self) -> impl Iterator<Item = &ValueInfoProto> {
        self.input.iter().filter(|v| self.initializer(v.name()).is_none())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opset_lookup_treats_both_default_spellings_alike() {
        let mut m = ModelProto::new(GraphProto::default(), &[("", 17), ("com.microsoft", 1)]);
        assert_eq!(m.default_opset(), Some(17));
        assert_eq!(m.opset_version("ai.onnx"), Some(17));
        assert_eq!(m.opset_version("com.microsoft"), Some(1));
        assert_eq!(m.opset_version("ai.onnx.ml"), None);
        m.opset_import[0].domain = Some("ai.onnx".into());
        assert_eq!(m.default_opset(), Some(17));
        m.opset_import[0].domain = None;
        assert_eq!(m.default_opset(), Some(17));
    }

    #[test]
    fn load_reports_the_path() {
        let err = ModelProto::load("/nonexistent/model.onnx").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/model.onnx"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("garbage.onnx");
        std::fs::write(&path, [0xff, 0xff, 0xff]).unwrap();
        assert!(matches!(ModelProto::load(&path), Err(ModelFileError::Decode { .. })));
    }
}
