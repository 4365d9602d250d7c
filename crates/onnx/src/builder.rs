//! Appending to a graph without name clashes.

use std::collections::{HashMap, HashSet};

use crate::proto::tensor_proto::DataType;
use crate::proto::{AttributeProto, GraphProto, NodeProto, TensorProto};
use crate::tensor::{Dim, tensor_value_info};

/// Appends nodes, initializers, inputs and outputs to a graph, inventing names that clash
/// with nothing already in it.
///
/// ONNX values are single-assignment: two nodes writing one name, or a new node reusing an
/// initializer's name, make a graph that ONNX Runtime rejects (or, worse, silently wires
/// differently). The builder therefore knows every name in the graph, subgraphs included
/// because their names share the scope, and hands out fresh ones.
///
/// Nodes are appended at the end, so each new node must only read values that exist
/// already: the graph stays topologically sorted as long as the caller builds forward.
#[derive(Debug, Clone)]
pub struct GraphBuilder {
    graph: GraphProto,
    used: HashSet<String>,
    /// The next suffix to try per prefix, so that many nodes of one op type do not make
    /// naming quadratic.
    next_suffix: HashMap<String, usize>,
}

impl GraphBuilder {
    pub fn new(name: impl Into<String>) -> Self {
        Self::from_graph(GraphProto { name: Some(name.into()), ..Default::default() })
    }

    /// Edit an existing graph (a decoded model's, say).
    pub fn from_graph(graph: GraphProto) -> Self {
        let mut used = HashSet::new();
        collect_names(&graph, &mut used);
        GraphBuilder { graph, used, next_suffix: HashMap::new() }
    }

    pub fn graph(&self) -> &GraphProto {
        &self.graph
    }

    /// Names put into the graph through this reference are not known to the builder; pass
    /// them to [`GraphBuilder::reserve`].
    pub fn graph_mut(&mut self) -> &mut GraphProto {
        &mut self.graph
    }

    pub fn finish(self) -> GraphProto {
        self.graph
    }

    /// Marks `name` as taken; false if it already was.
    pub fn reserve(&mut self, name: &str) -> bool {
        self.used.insert(name.to_string())
    }

    pub fn is_used(&self, name: &str) -> bool {
        self.used.contains(name)
    }

    /// A name not yet used in the graph, which is now reserved: `prefix` itself if free,
    /// else `prefix_1`, `prefix_2`, ...
    pub fn fresh_name(&mut self, prefix: &str) -> String {
        let prefix = if prefix.is_empty() { "t" } else { prefix };
        if self.reserve(prefix) {
            return prefix.to_string();
        }
        let next = self.next_suffix.entry(prefix.to_string()).or_insert(1);
        loop {
            let candidate = format!("{prefix}_{next}");
            *next += 1;
            if self.used.insert(candidate.clone()) {
                return candidate;
            }
        }
    }

    /// Appends a default-domain node with one output and returns the output's name.
    pub fn add_node(&mut self, op_type: &str, inputs: &[&str], attributes: Vec<AttributeProto>) -> String {
        self.add_node_multi(op_type, inputs, 1, attributes).pop().expect("one output")
    }

    /// Appends a default-domain node with `num_outputs` outputs and returns their names.
    pub fn add_node_multi(
        &mut self,
        op_type: &str,
        inputs: &[&str],
        num_outputs: usize,
        attributes: Vec<AttributeProto>,
    ) -> Vec<String> {
        let name = self.fresh_name(op_type);
        let output = match num_outputs {
            1 => vec![self.fresh_name(&format!("{name}_out"))],
            n => (0..n).map(|i| self.fresh_name(&format!("{name}_out{i}"))).collect(),
        };
        let node = NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: output.clone(),
            name: Some(name),
            op_type: Some(op_type.into()),
            attribute: attributes,
            ..Default::default()
        };
        self.graph.node.push(node);
        output
    }

    /// Appends `node` as given (any domain), except that its name and output names are
    /// used as prefixes for fresh names, so a caller can ask for readable names such as
    /// `grad_W1` and still never clash. An unnamed node is named after its op type. An empty
    /// output name (an optional output left out) stays empty. Returns the output names.
    pub fn push_node(&mut self, mut node: NodeProto) -> Vec<String> {
        let prefix = if node.name().is_empty() { node.op_type().to_string() } else { node.name().to_string() };
        node.name = Some(self.fresh_name(&prefix));
        for out in &mut node.output {
            if !out.is_empty() {
                *out = self.fresh_name(out);
            }
        }
        let output = node.output.clone();
        self.graph.node.push(node);
        output
    }

    /// Adds an initializer; its name is made fresh (kept when free) and returned.
    pub fn add_initializer(&mut self, mut tensor: TensorProto) -> String {
        let name = self.fresh_name(tensor.name());
        tensor.name = Some(name.clone());
        self.graph.initializer.push(tensor);
        name
    }

    /// Declares a graph input, which callers feed by this exact name.
    ///
    /// # Panics
    /// If `name` is already used in the graph: an input cannot be renamed behind the
    /// caller's back, and a duplicate would make the graph invalid.
    pub fn add_input(&mut self, name: &str, elem_type: DataType, shape: impl IntoIterator<Item = Dim>) {
        assert!(self.reserve(name), "graph input name {name:?} is already used in the graph");
        self.graph.input.push(tensor_value_info(name, elem_type, shape));
    }

    /// Declares the existing value `name` a float32 graph output of the given shape; a
    /// symbolic dimension (`Dim::from("batch")`) leaves that size to run time.
    pub fn add_output(&mut self, name: &str, shape: impl IntoIterator<Item = Dim>) {
        self.add_output_typed(name, DataType::Float, shape);
    }

    pub fn add_output_typed(&mut self, name: &str, elem_type: DataType, shape: impl IntoIterator<Item = Dim>) {
        self.reserve(name);
        self.graph.output.push(tensor_value_info(name, elem_type, shape));
    }
}

fn collect_names(graph: &GraphProto, used: &mut HashSet<String>) {
    let value_infos = graph.input.iter().chain(&graph.output).chain(&graph.value_info);
    used.extend(value_infos.map(|v| v.name().to_string()));
    used.extend(graph.initializer.iter().map(|t| t.name().to_string()));
    used.extend(graph.sparse_initializer.iter().filter_map(|s| s.values.as_ref()).map(|t| t.name().to_string()));
    for node in &graph.node {
        used.insert(node.name().to_string());
        used.extend(node.input.iter().chain(&node.output).cloned());
        for attr in &node.attribute {
            for sub in attr.g.iter().chain(&attr.graphs) {
                collect_names(sub, used);
            }
        }
    }
    // "" marks an omitted optional input or output, never a name.
    used.remove("");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor_f32;

    #[test]
    fn fresh_names_avoid_existing_and_earlier_ones() {
        let mut g = GraphProto::default();
        g.node.push(NodeProto {
            name: Some("Relu".into()),
            input: vec!["x".into()],
            output: vec!["Relu_out".into()],
            op_type: Some("Relu".into()),
            ..Default::default()
        });
        let mut b = GraphBuilder::from_graph(g);
        assert!(b.is_used("x") && b.is_used("Relu_out") && !b.is_used(""));
        let y = b.add_node("Relu", &["Relu_out"], vec![]);
        assert_eq!(y, "Relu_1_out");
        assert_eq!(b.graph().node[1].name(), "Relu_1");
        assert_eq!(b.fresh_name("x"), "x_1");
        b.reserve("x_2");
        assert_eq!(b.fresh_name("x"), "x_3");
        assert_eq!(b.fresh_name("new"), "new");
        assert_eq!(b.fresh_name(""), "t");
    }

    #[test]
    fn names_inside_subgraphs_are_taken() {
        let body =
            GraphProto { node: vec![NodeProto { output: vec!["inner".into()], ..Default::default() }], ..Default::default() };
        let mut g = GraphProto::default();
        let attr = AttributeProto { name: Some("then_branch".into()), g: Some(body), ..Default::default() };
        g.node.push(NodeProto { op_type: Some("If".into()), attribute: vec![attr], ..Default::default() });
        let mut b = GraphBuilder::from_graph(g);
        assert_eq!(b.fresh_name("inner"), "inner_1");
    }

    #[test]
    fn push_node_keeps_domain_and_empty_outputs() {
        let mut b = GraphBuilder::new("g");
        b.add_input("x", DataType::Float, [Dim::from(2)]);
        let node = NodeProto {
            op_type: Some("Dropout".into()),
            input: vec!["x".into()],
            output: vec!["x".into(), "".into()],
            domain: Some("com.example".into()),
            ..Default::default()
        };
        assert_eq!(b.push_node(node), vec!["x_1".to_string(), String::new()]);
        assert_eq!(b.graph().node[0].name(), "Dropout");
        assert_eq!(b.graph().node[0].domain(), "com.example");
    }

    #[test]
    fn initializers_keep_free_names() {
        let mut b = GraphBuilder::new("g");
        assert_eq!(b.add_initializer(tensor_f32("one", &[], &[1.0])), "one");
        assert_eq!(b.add_initializer(tensor_f32("one", &[], &[1.0])), "one_1");
        assert_eq!(b.graph().initializer[1].name(), "one_1");
    }

    #[test]
    #[should_panic(expected = "already used")]
    fn duplicate_input_panics() {
        let mut b = GraphBuilder::new("g");
        b.add_input("x", DataType::Float, []);
        b.add_input("x", DataType::Float, []);
    }
}
