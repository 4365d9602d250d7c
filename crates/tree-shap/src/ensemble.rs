//! The flat tree-ensemble representation, its parser from ONNX-ML attributes, and margin evaluation.

use std::borrow::Cow;
use std::collections::HashMap;

use crate::TreeError;

/// Deepest tree accepted (number of branch nodes on a root-to-leaf path). Deeper trees are refused at
/// parse time: the SHAP recursions use stack and path memory proportional to the depth (squared for the
/// path-dependent algorithm), and no real converter output comes near this.
pub const MAX_DEPTH: usize = 512;

/// Largest number of targets (or classes) accepted; outputs are allocated per target.
pub const MAX_TARGETS: usize = 1 << 16;

/// Largest feature index accepted.
pub const MAX_FEATURE: i64 = (1 << 24) - 1;

/// A tensor attribute's data, already decoded into native values by the caller (protobuf `raw_data`
/// is little-endian bytes with no alignment guarantee, hence `Cow`).
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData<'a> {
    F32(Cow<'a, [f32]>),
    F64(Cow<'a, [f64]>),
    U8(Cow<'a, [u8]>),
    I64(Cow<'a, [i64]>),
}

/// A neutral, read-only view of one ONNX attribute value, so that both an ONNX protobuf node and the
/// plugin ABI's attribute view can feed [`TreeEnsemble::from_attributes`].
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue<'a> {
    Int(i64),
    Ints(&'a [i64]),
    Float(f32),
    Floats(&'a [f32]),
    /// Doubles given directly (equivalent to a double tensor).
    Doubles(&'a [f64]),
    String(&'a [u8]),
    Strings(Vec<&'a [u8]>),
    Tensor(TensorData<'a>),
}

/// How a branch node compares the feature value `x` with its threshold `t` (true branch when the
/// comparison holds). `Member` is opset 5's set membership. `Leaf` marks leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    Leq,
    Lt,
    Gte,
    Gt,
    Eq,
    Neq,
    Member,
    Leaf,
}

/// The transform ONNX applies to the aggregated scores. This crate explains the margin before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostTransform {
    None,
    Softmax,
    Logistic,
    SoftmaxZero,
    Probit,
}

/// How tree outputs are combined per target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregate {
    Sum,
    Average,
    Min,
    Max,
}

/// Which ONNX operator the ensemble came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// `ai.onnx.ml.TreeEnsembleRegressor` (opsets 1-3).
    Regressor,
    /// `ai.onnx.ml.TreeEnsembleClassifier` (opsets 1-3); targets are class indices.
    Classifier,
    /// `ai.onnx.ml.TreeEnsemble` (opset 5).
    TreeEnsemble,
}

/// One node (branch or leaf) of the flat node array.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Node {
    /// Feature index compared by a branch (0 for leaves).
    pub feature: u32,
    /// Threshold as ONNX Runtime compares it for float inputs.
    pub threshold: f32,
    /// Threshold at double precision (exact when the model gave doubles, else widened from `threshold`).
    pub threshold_f64: f64,
    pub mode: Mode,
    /// A NaN feature value goes to the true child when set (for every mode).
    pub missing_tracks_true: bool,
    /// Index into [`TreeEnsemble::nodes`] of the true child (branches only).
    pub true_child: u32,
    /// Index into [`TreeEnsemble::nodes`] of the false child (branches only).
    pub false_child: u32,
    /// Leaves: range into [`TreeEnsemble::leaf_values`]. `Member` branches: range into the member set array.
    pub start: u32,
    pub len: u32,
}

/// One (target, weight) vote of a leaf.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LeafValue {
    pub target: u32,
    pub weight: f64,
}

/// A validated tree ensemble in flat arrays: every tree is a proper tree (no cycles, no shared nodes),
/// every child index is in range, depth is at most [`MAX_DEPTH`].
#[derive(Debug, Clone, PartialEq)]
pub struct TreeEnsemble {
    pub(crate) kind: OpKind,
    pub(crate) nodes: Vec<Node>,
    pub(crate) roots: Vec<u32>,
    pub(crate) leaf_values: Vec<LeafValue>,
    pub(crate) members: Vec<f32>,
    pub(crate) hitrates: Option<Vec<f64>>,
    pub(crate) n_targets: usize,
    pub(crate) n_features: usize,
    pub(crate) base_values: Vec<f64>,
    pub(crate) post_transform: PostTransform,
    pub(crate) aggregate: Aggregate,
    pub(crate) max_depth: usize,
    pub(crate) double_thresholds: bool,
}

fn bad(name: &str, reason: impl Into<String>) -> TreeError {
    TreeError::InvalidAttribute { name: name.to_string(), reason: reason.into() }
}

struct Attrs<F> {
    get: F,
}

impl<'a, F: Fn(&str) -> Option<AttrValue<'a>>> Attrs<F> {
    fn ints(&self, name: &str) -> Result<Option<Cow<'a, [i64]>>, TreeError> {
        match (self.get)(name) {
            None => Ok(None),
            Some(AttrValue::Ints(v)) => Ok(Some(Cow::Borrowed(v))),
            Some(AttrValue::Tensor(TensorData::I64(v))) => Ok(Some(v)),
            Some(other) => Err(bad(name, format!("expected a list of ints, got {}", kind_name(&other)))),
        }
    }
    fn req_ints(&self, name: &str) -> Result<Cow<'a, [i64]>, TreeError> {
        self.ints(name)?.ok_or_else(|| TreeError::MissingAttribute(name.to_string()))
    }
    fn int(&self, name: &str) -> Result<Option<i64>, TreeError> {
        match (self.get)(name) {
            None => Ok(None),
            Some(AttrValue::Int(v)) => Ok(Some(v)),
            Some(other) => Err(bad(name, format!("expected an int, got {}", kind_name(&other)))),
        }
    }
    fn string(&self, name: &str) -> Result<Option<&'a [u8]>, TreeError> {
        match (self.get)(name) {
            None => Ok(None),
            Some(AttrValue::String(v)) => Ok(Some(v)),
            Some(other) => Err(bad(name, format!("expected a string, got {}", kind_name(&other)))),
        }
    }
    fn strings(&self, name: &str) -> Result<Option<Vec<&'a [u8]>>, TreeError> {
        match (self.get)(name) {
            None => Ok(None),
            Some(AttrValue::Strings(v)) => Ok(Some(v)),
            Some(other) => Err(bad(name, format!("expected a list of strings, got {}", kind_name(&other)))),
        }
    }
    /// A float list given either as `name` (floats) or `name_as_tensor` (double tensor); the bool says
    /// whether the values came at double precision.
    fn reals(&self, name: &str, tensor_name: Option<&str>) -> Result<Option<(Vec<f64>, bool)>, TreeError> {
        let conv = |n: &str, v: AttrValue<'a>| -> Result<(Vec<f64>, bool), TreeError> {
            match v {
                AttrValue::Floats(f) => Ok((f.iter().map(|&x| x as f64).collect(), false)),
                AttrValue::Tensor(TensorData::F32(f)) => Ok((f.iter().map(|&x| x as f64).collect(), false)),
                AttrValue::Tensor(TensorData::F64(d)) => Ok((d.into_owned(), true)),
                AttrValue::Doubles(d) => Ok((d.to_vec(), true)),
                other => Err(bad(n, format!("expected floats or a float/double tensor, got {}", kind_name(&other)))),
            }
        };
        let plain = (self.get)(name);
        let tensor = tensor_name.and_then(|t| (self.get)(t));
        match (plain, tensor) {
            (Some(_), Some(_)) => Err(bad(name, format!("both `{name}` and `{}` are set", tensor_name.unwrap_or("")))),
            (Some(v), None) => conv(name, v).map(Some),
            (None, Some(v)) => conv(tensor_name.unwrap_or(name), v).map(Some),
            (None, None) => Ok(None),
        }
    }
}

fn kind_name(v: &AttrValue<'_>) -> &'static str {
    match v {
        AttrValue::Int(_) => "an int",
        AttrValue::Ints(_) => "a list of ints",
        AttrValue::Float(_) => "a float",
        AttrValue::Floats(_) => "a list of floats",
        AttrValue::Doubles(_) => "a list of doubles",
        AttrValue::String(_) => "a string",
        AttrValue::Strings(_) => "a list of strings",
        AttrValue::Tensor(TensorData::F32(_)) => "a float tensor",
        AttrValue::Tensor(TensorData::F64(_)) => "a double tensor",
        AttrValue::Tensor(TensorData::U8(_)) => "a uint8 tensor",
        AttrValue::Tensor(TensorData::I64(_)) => "an int64 tensor",
    }
}

fn check_len(name: &str, got: usize, expected: usize, of: &str) -> Result<(), TreeError> {
    if got != expected {
        return Err(TreeError::LengthMismatch { name: name.to_string(), got, expected, of: of.to_string() });
    }
    Ok(())
}

fn feature_index(name: &str, i: usize, f: i64) -> Result<u32, TreeError> {
    if !(0..=MAX_FEATURE).contains(&f) {
        return Err(bad(name, format!("entry {i}: feature index {f} outside 0..={MAX_FEATURE}")));
    }
    Ok(f as u32)
}

fn parse_post_transform_str(s: &[u8]) -> Result<PostTransform, TreeError> {
    Ok(match s {
        b"NONE" => PostTransform::None,
        b"SOFTMAX" => PostTransform::Softmax,
        b"LOGISTIC" => PostTransform::Logistic,
        b"SOFTMAX_ZERO" => PostTransform::SoftmaxZero,
        b"PROBIT" => PostTransform::Probit,
        other => return Err(bad("post_transform", format!("unknown value {:?}", String::from_utf8_lossy(other)))),
    })
}

fn parse_aggregate_str(s: &[u8]) -> Result<Aggregate, TreeError> {
    Ok(match s {
        b"SUM" => Aggregate::Sum,
        b"AVERAGE" => Aggregate::Average,
        b"MIN" => Aggregate::Min,
        b"MAX" => Aggregate::Max,
        other => return Err(bad("aggregate_function", format!("unknown value {:?}", String::from_utf8_lossy(other)))),
    })
}

fn parse_mode_str(i: usize, s: &[u8]) -> Result<Mode, TreeError> {
    Ok(match s {
        b"BRANCH_LEQ" => Mode::Leq,
        b"BRANCH_LT" => Mode::Lt,
        b"BRANCH_GTE" => Mode::Gte,
        b"BRANCH_GT" => Mode::Gt,
        b"BRANCH_EQ" => Mode::Eq,
        b"BRANCH_NEQ" => Mode::Neq,
        b"LEAF" => Mode::Leaf,
        other => return Err(bad("nodes_modes", format!("entry {i}: unknown mode {:?}", String::from_utf8_lossy(other)))),
    })
}

impl TreeEnsemble {
    /// Parses an `ai.onnx.ml` `TreeEnsembleRegressor` / `TreeEnsembleClassifier` (opsets 1-3) or
    /// `TreeEnsemble` (opset 5) node from its attributes; `attr(name)` returns `None` for an absent
    /// attribute. Malformed input (missing or mistyped attributes, mismatched lengths, child ids out of
    /// range, cycles, shared nodes, unknown modes, trees deeper than [`MAX_DEPTH`]) gives an error.
    pub fn from_attributes<'a>(op_type: &str, attr: impl Fn(&str) -> Option<AttrValue<'a>>) -> Result<TreeEnsemble, TreeError> {
        let attrs = Attrs { get: attr };
        match op_type {
            "TreeEnsembleRegressor" => parse_v1(&attrs, OpKind::Regressor),
            "TreeEnsembleClassifier" => parse_v1(&attrs, OpKind::Classifier),
            "TreeEnsemble" => parse_v5(&attrs),
            other => Err(TreeError::UnsupportedOperator(other.to_string())),
        }
    }

    pub fn kind(&self) -> OpKind {
        self.kind
    }
    /// All nodes (branches and leaves) of all trees.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }
    /// Index into [`Self::nodes`] of each tree's root.
    pub fn roots(&self) -> &[u32] {
        &self.roots
    }
    pub fn n_trees(&self) -> usize {
        self.roots.len()
    }
    /// The (target, weight) votes of a leaf node.
    pub fn leaf_values(&self, node: usize) -> &[LeafValue] {
        let n = &self.nodes[node];
        if n.mode != Mode::Leaf {
            return &[];
        }
        &self.leaf_values[n.start as usize..(n.start + n.len) as usize]
    }
    /// The set of a `Member` node.
    pub fn member_set(&self, node: usize) -> &[f32] {
        let n = &self.nodes[node];
        if n.mode != Mode::Member {
            return &[];
        }
        &self.members[n.start as usize..(n.start + n.len) as usize]
    }
    pub fn n_targets(&self) -> usize {
        self.n_targets
    }
    /// One more than the largest feature index any branch reads (input rows need at least this many columns).
    pub fn n_features(&self) -> usize {
        self.n_features
    }
    /// Per-target offsets added after aggregation (zeros when the model gave none).
    pub fn base_values(&self) -> &[f64] {
        &self.base_values
    }
    pub fn post_transform(&self) -> PostTransform {
        self.post_transform
    }
    pub fn aggregate(&self) -> Aggregate {
        self.aggregate
    }
    /// Largest number of branch nodes on any root-to-leaf path.
    pub fn max_depth(&self) -> usize {
        self.max_depth
    }
    /// Whether thresholds were given at double precision (`nodes_values_as_tensor` or a double `nodes_splits`).
    pub fn has_double_thresholds(&self) -> bool {
        self.double_thresholds
    }
    /// The covers given by `nodes_hitrates` (opsets 1-3), one per node of [`Self::nodes`]; `None` when the
    /// model has none (always for opset 5, whose leaves carry no hit rate).
    pub fn hitrate_covers(&self) -> Option<Vec<f64>> {
        self.hitrates.clone()
    }

    /// Multiplier applied to each tree's leaf values in the aggregated margin (1, or 1/#trees for AVERAGE).
    pub(crate) fn tree_scale(&self) -> f64 {
        match self.aggregate {
            Aggregate::Average if !self.roots.is_empty() => 1.0 / self.roots.len() as f64,
            _ => 1.0,
        }
    }

    /// Whether a branch sends value `v` to its true child, as ONNX Runtime decides for float inputs.
    #[inline]
    pub fn goes_true(&self, node: &Node, v: f32) -> bool {
        let t = node.threshold;
        let r = match node.mode {
            Mode::Leq => v <= t,
            Mode::Lt => v < t,
            Mode::Gte => v >= t,
            Mode::Gt => v > t,
            Mode::Eq => v == t,
            Mode::Neq => v != t,
            Mode::Member => self.members[node.start as usize..(node.start + node.len) as usize].contains(&v),
            Mode::Leaf => false,
        };
        r || (node.missing_tracks_true && v.is_nan())
    }

    /// The leaf node index that row `x` reaches in tree `tree`. Panics if `x` has fewer than [`Self::n_features`]
    /// values or `tree` is out of range (see [`Self::predict_raw`] for the checked path).
    #[inline]
    pub fn leaf_index(&self, tree: usize, x: &[f32]) -> usize {
        let mut i = self.roots[tree] as usize;
        loop {
            let n = &self.nodes[i];
            if n.mode == Mode::Leaf {
                return i;
            }
            i = if self.goes_true(n, x[n.feature as usize]) { n.true_child } else { n.false_child } as usize;
        }
    }

    pub(crate) fn check_row(&self, x: &[f32]) -> Result<(), TreeError> {
        if x.len() < self.n_features {
            return Err(TreeError::InvalidInput(format!(
                "row has {} features, the ensemble reads feature index {}",
                x.len(),
                self.n_features - 1
            )));
        }
        Ok(())
    }

    /// The raw margin (aggregated scores plus base values, before `post_transform`) for one row, as ONNX
    /// Runtime computes it for float inputs (but accumulated in f64). `out` must have [`Self::n_targets`] entries.
    pub fn predict_raw(&self, x: &[f32], out: &mut [f64]) -> Result<(), TreeError> {
        self.check_row(x)?;
        if out.len() != self.n_targets {
            return Err(TreeError::InvalidInput(format!("output has {} entries, expected {}", out.len(), self.n_targets)));
        }
        match self.aggregate {
            Aggregate::Sum | Aggregate::Average => {
                out.fill(0.0);
                for t in 0..self.roots.len() {
                    for lv in self.leaf_values(self.leaf_index(t, x)) {
                        out[lv.target as usize] += lv.weight;
                    }
                }
                let s = self.tree_scale();
                for (o, b) in out.iter_mut().zip(&self.base_values) {
                    *o = *o * s + b;
                }
            }
            Aggregate::Min | Aggregate::Max => {
                let mut has = vec![false; self.n_targets];
                out.fill(0.0);
                let is_min = self.aggregate == Aggregate::Min;
                for t in 0..self.roots.len() {
                    for lv in self.leaf_values(self.leaf_index(t, x)) {
                        let k = lv.target as usize;
                        let better = if is_min { lv.weight < out[k] } else { lv.weight > out[k] };
                        if !has[k] || better {
                            out[k] = lv.weight;
                            has[k] = true;
                        }
                    }
                }
                for (o, b) in out.iter_mut().zip(&self.base_values) {
                    *o += b;
                }
            }
        }
        Ok(())
    }
}

/// Applies an ONNX `post_transform` to one row's scores in place (ONNX Runtime's definitions; PROBIT uses
/// the same closed-form inverse-erf approximation as ONNX Runtime).
pub fn apply_post_transform(transform: PostTransform, scores: &mut [f64]) {
    match transform {
        PostTransform::None => {}
        PostTransform::Logistic => {
            for s in scores.iter_mut() {
                *s = 1.0 / (1.0 + (-*s).exp());
            }
        }
        PostTransform::Softmax => {
            let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let mut sum = 0.0;
            for s in scores.iter_mut() {
                *s = (*s - m).exp();
                sum += *s;
            }
            for s in scores.iter_mut() {
                *s /= sum;
            }
        }
        PostTransform::SoftmaxZero => {
            let m = scores.iter().cloned().filter(|&s| s != 0.0).fold(f64::NEG_INFINITY, f64::max);
            let mut sum = 0.0;
            for s in scores.iter_mut() {
                if *s != 0.0 {
                    *s = (*s - m).exp();
                    sum += *s;
                }
            }
            if sum > 0.0 {
                for s in scores.iter_mut() {
                    *s /= sum;
                }
            }
        }
        PostTransform::Probit => {
            for s in scores.iter_mut() {
                *s = std::f64::consts::SQRT_2 * erf_inv(2.0 * *s - 1.0);
            }
        }
    }
}

/// Winitzki's closed-form approximation of the inverse error function (a = 0.147).
fn erf_inv(x: f64) -> f64 {
    let sgn = if x < 0.0 { -1.0 } else { 1.0 };
    let l = ((1.0 - x) * (1.0 + x)).ln();
    let a = 0.147;
    let v = 2.0 / (std::f64::consts::PI * a) + 0.5 * l;
    let v2 = l / a;
    sgn * ((v * v - v2).sqrt() - v).sqrt()
}

/// A node under construction: children as indices into the node list being built.
struct Proto {
    feature: u32,
    threshold: f64,
    mode: Mode,
    missing_tracks_true: bool,
    true_child: usize,
    false_child: usize,
    leaf: Vec<LeafValue>,
    members: Vec<f32>,
}

/// Walks every tree from its root with an explicit stack: rejects nodes reached twice (cycles or shared
/// nodes) and trees deeper than [`MAX_DEPTH`]; returns the maximum depth.
fn check_trees(protos: &[Proto], roots: &[usize], what: &str) -> Result<usize, TreeError> {
    let mut seen = vec![false; protos.len()];
    let mut max_depth = 0;
    let mut stack: Vec<(usize, usize)> = Vec::new();
    for (t, &r) in roots.iter().enumerate() {
        stack.push((r, 0));
        while let Some((i, d)) = stack.pop() {
            if seen[i] {
                return Err(bad(what, format!("tree {t}: node {i} is reached twice (a cycle or a shared node)")));
            }
            seen[i] = true;
            let p = &protos[i];
            if p.mode == Mode::Leaf {
                max_depth = max_depth.max(d);
                continue;
            }
            if d + 1 > MAX_DEPTH {
                return Err(TreeError::TooDeep { tree: t, limit: MAX_DEPTH });
            }
            stack.push((p.true_child, d + 1));
            stack.push((p.false_child, d + 1));
        }
    }
    Ok(max_depth)
}

#[allow(clippy::too_many_arguments)]
fn finish(
    kind: OpKind,
    protos: Vec<Proto>,
    roots: Vec<usize>,
    hitrates: Option<Vec<f64>>,
    n_targets: usize,
    base_values: Vec<f64>,
    post_transform: PostTransform,
    aggregate: Aggregate,
    double_thresholds: bool,
    what: &str,
) -> Result<TreeEnsemble, TreeError> {
    if roots.is_empty() {
        return Err(bad(what, "the ensemble has no trees"));
    }
    let max_depth = check_trees(&protos, &roots, what)?;
    let mut nodes = Vec::with_capacity(protos.len());
    let mut leaf_values = Vec::new();
    let mut members = Vec::new();
    let mut n_features = 0usize;
    for p in protos {
        let (start, len) = match p.mode {
            Mode::Leaf => {
                let s = leaf_values.len();
                leaf_values.extend_from_slice(&p.leaf);
                (s, p.leaf.len())
            }
            Mode::Member => {
                let s = members.len();
                members.extend_from_slice(&p.members);
                (s, p.members.len())
            }
            _ => (0, 0),
        };
        if p.mode != Mode::Leaf {
            n_features = n_features.max(p.feature as usize + 1);
        }
        let (start, len) = (u32::try_from(start), u32::try_from(len));
        let (Ok(start), Ok(len)) = (start, len) else {
            return Err(bad(what, "too many leaf values"));
        };
        nodes.push(Node {
            feature: p.feature,
            threshold: p.threshold as f32,
            threshold_f64: p.threshold,
            mode: p.mode,
            missing_tracks_true: p.missing_tracks_true,
            true_child: p.true_child as u32,
            false_child: p.false_child as u32,
            start,
            len,
        });
    }
    if let Some(h) = &hitrates
        && let Some(i) = h.iter().position(|v| !v.is_finite() || *v < 0.0)
    {
        return Err(bad("nodes_hitrates", format!("entry {i}: hit rate {} is not a finite non-negative number", h[i])));
    }
    Ok(TreeEnsemble {
        kind,
        nodes,
        roots: roots.into_iter().map(|r| r as u32).collect(),
        leaf_values,
        members,
        hitrates,
        n_targets,
        n_features,
        base_values,
        post_transform,
        aggregate,
        max_depth,
        double_thresholds,
    })
}

fn check_count(name: &str, n: usize) -> Result<(), TreeError> {
    if n > u32::MAX as usize / 2 {
        return Err(bad(name, "too many entries"));
    }
    Ok(())
}

fn parse_targets_count(name: &str, n: i64) -> Result<usize, TreeError> {
    if n < 1 || n as u64 > MAX_TARGETS as u64 {
        return Err(bad(name, format!("{n} is outside 1..={MAX_TARGETS}")));
    }
    Ok(n as usize)
}

fn parse_base_values<'a, F: Fn(&str) -> Option<AttrValue<'a>>>(
    attrs: &Attrs<F>,
    n_targets: usize,
) -> Result<Vec<f64>, TreeError> {
    match attrs.reals("base_values", Some("base_values_as_tensor"))? {
        None => Ok(vec![0.0; n_targets]),
        Some((v, _)) if v.is_empty() => Ok(vec![0.0; n_targets]),
        Some((v, _)) => {
            check_len("base_values", v.len(), n_targets, "the number of targets")?;
            Ok(v)
        }
    }
}

fn parse_v1<'a, F: Fn(&str) -> Option<AttrValue<'a>>>(attrs: &Attrs<F>, kind: OpKind) -> Result<TreeEnsemble, TreeError> {
    const W: &str = "nodes_treeids";
    let tree_ids = attrs.req_ints("nodes_treeids")?;
    let n = tree_ids.len();
    check_count(W, n)?;
    if n == 0 {
        return Err(bad(W, "the ensemble has no nodes"));
    }
    let node_ids = attrs.req_ints("nodes_nodeids")?;
    check_len("nodes_nodeids", node_ids.len(), n, W)?;
    let feature_ids = attrs.req_ints("nodes_featureids")?;
    check_len("nodes_featureids", feature_ids.len(), n, W)?;
    let modes = attrs.strings("nodes_modes")?.ok_or_else(|| TreeError::MissingAttribute("nodes_modes".into()))?;
    check_len("nodes_modes", modes.len(), n, W)?;
    let (values, double_thresholds) = attrs
        .reals("nodes_values", Some("nodes_values_as_tensor"))?
        .ok_or_else(|| TreeError::MissingAttribute("nodes_values".into()))?;
    check_len("nodes_values", values.len(), n, W)?;
    let true_ids = attrs.req_ints("nodes_truenodeids")?;
    check_len("nodes_truenodeids", true_ids.len(), n, W)?;
    let false_ids = attrs.req_ints("nodes_falsenodeids")?;
    check_len("nodes_falsenodeids", false_ids.len(), n, W)?;
    let missing = attrs.ints("nodes_missing_value_tracks_true")?;
    if let Some(m) = &missing
        && !m.is_empty()
    {
        check_len("nodes_missing_value_tracks_true", m.len(), n, W)?;
    }
    let hitrates = match attrs.reals("nodes_hitrates", Some("nodes_hitrates_as_tensor"))? {
        Some((h, _)) if !h.is_empty() => {
            check_len("nodes_hitrates", h.len(), n, W)?;
            Some(h)
        }
        _ => None,
    };

    // (tree id, node id) -> index.
    let mut index: HashMap<(i64, i64), usize> = HashMap::with_capacity(n);
    for i in 0..n {
        if index.insert((tree_ids[i], node_ids[i]), i).is_some() {
            return Err(bad(
                "nodes_nodeids",
                format!("entry {i}: node id {} appears twice in tree {}", node_ids[i], tree_ids[i]),
            ));
        }
    }
    let mut protos = Vec::with_capacity(n);
    let mut referenced = vec![false; n];
    for i in 0..n {
        let mode = parse_mode_str(i, modes[i])?;
        let mut p = Proto {
            feature: 0,
            threshold: values[i],
            mode,
            missing_tracks_true: missing.as_ref().is_some_and(|m| !m.is_empty() && m[i] != 0),
            true_child: 0,
            false_child: 0,
            leaf: Vec::new(),
            members: Vec::new(),
        };
        if mode != Mode::Leaf {
            p.feature = feature_index("nodes_featureids", i, feature_ids[i])?;
            let look = |name: &str, id: i64| {
                index
                    .get(&(tree_ids[i], id))
                    .copied()
                    .ok_or_else(|| bad(name, format!("entry {i}: child node id {id} does not exist in tree {}", tree_ids[i])))
            };
            p.true_child = look("nodes_truenodeids", true_ids[i])?;
            p.false_child = look("nodes_falsenodeids", false_ids[i])?;
            referenced[p.true_child] = true;
            referenced[p.false_child] = true;
        }
        protos.push(p);
    }
    // One root per tree id: the node no branch points to. Trees are ordered by tree id.
    let mut root_of: HashMap<i64, usize> = HashMap::new();
    for i in 0..n {
        if !referenced[i] && root_of.insert(tree_ids[i], i).is_some() {
            return Err(bad(W, format!("tree {} has more than one root (nodes no branch points to)", tree_ids[i])));
        }
    }
    let mut tree_set: Vec<i64> = tree_ids.to_vec();
    tree_set.sort_unstable();
    tree_set.dedup();
    let mut roots = Vec::with_capacity(tree_set.len());
    for t in &tree_set {
        match root_of.get(t) {
            Some(&r) => roots.push(r),
            None => return Err(bad(W, format!("tree {t} has no root (every node is some branch's child: a cycle)"))),
        }
    }

    // Leaf votes.
    let (prefix, n_targets) = match kind {
        OpKind::Classifier => {
            let n_int = attrs.ints("classlabels_int64s")?.map(|v| v.len()).unwrap_or(0);
            let n_str = attrs.strings("classlabels_strings")?.map(|v| v.len()).unwrap_or(0);
            let n_classes = match (n_int, n_str) {
                (0, 0) => return Err(TreeError::MissingAttribute("classlabels_int64s".into())),
                (a, 0) => a,
                (0, b) => b,
                _ => return Err(bad("classlabels_int64s", "both classlabels_int64s and classlabels_strings are set")),
            };
            ("class", parse_targets_count("classlabels_int64s", n_classes as i64)?)
        }
        _ => ("target", 0),
    };
    let tname = |s: &str| format!("{prefix}_{s}");
    let v_tree = attrs.req_ints(&tname("treeids"))?;
    let m = v_tree.len();
    check_count(&tname("treeids"), m)?;
    let v_node = attrs.req_ints(&tname("nodeids"))?;
    check_len(&tname("nodeids"), v_node.len(), m, &tname("treeids"))?;
    let v_id = attrs.req_ints(&tname("ids"))?;
    check_len(&tname("ids"), v_id.len(), m, &tname("treeids"))?;
    let (v_w, _) = attrs
        .reals(&tname("weights"), Some(&tname("weights_as_tensor")))?
        .ok_or_else(|| TreeError::MissingAttribute(tname("weights")))?;
    check_len(&tname("weights"), v_w.len(), m, &tname("treeids"))?;
    let n_targets = if kind == OpKind::Classifier {
        n_targets
    } else {
        match attrs.int("n_targets")? {
            Some(k) => parse_targets_count("n_targets", k)?,
            None => {
                let mx = v_id.iter().copied().max().unwrap_or(0);
                parse_targets_count("target_ids", mx.saturating_add(1))?
            }
        }
    };
    for j in 0..m {
        let i = *index.get(&(v_tree[j], v_node[j])).ok_or_else(|| {
            bad(&tname("nodeids"), format!("entry {j}: node {} of tree {} does not exist", v_node[j], v_tree[j]))
        })?;
        if protos[i].mode != Mode::Leaf {
            return Err(bad(&tname("nodeids"), format!("entry {j}: node {} of tree {} is not a LEAF", v_node[j], v_tree[j])));
        }
        let t = v_id[j];
        if t < 0 || t as u64 >= n_targets as u64 {
            return Err(bad(&tname("ids"), format!("entry {j}: target {t} outside 0..{n_targets}")));
        }
        protos[i].leaf.push(LeafValue { target: t as u32, weight: v_w[j] });
    }
    // ONNX Runtime's binary case: two class labels and every vote for one class column. Its score is
    // the positive class's (label index 1) margin whatever the column, with base_values[1] (two base
    // values) or base_values[0] (one) added; the model then has a single target.
    let first_class = protos.iter().flat_map(|p| p.leaf.iter()).map(|v| v.target).next();
    let single_column = first_class.is_some_and(|c| protos.iter().flat_map(|p| p.leaf.iter()).all(|v| v.target == c));
    let (n_targets, base_values) = if kind == OpKind::Classifier && n_targets == 2 && single_column {
        for p in &mut protos {
            for v in &mut p.leaf {
                v.target = 0;
            }
        }
        let base = match attrs.reals("base_values", Some("base_values_as_tensor"))? {
            None => 0.0,
            Some((v, _)) => match v.len() {
                0 => 0.0,
                1 => v[0],
                2 => v[1],
                k => {
                    return Err(TreeError::LengthMismatch {
                        name: "base_values".into(),
                        got: k,
                        expected: 2,
                        of: "the class labels".into(),
                    });
                }
            },
        };
        (1, vec![base])
    } else {
        (n_targets, parse_base_values(attrs, n_targets)?)
    };
    let post_transform = match attrs.string("post_transform")? {
        Some(s) => parse_post_transform_str(s)?,
        None => PostTransform::None,
    };
    let aggregate = match (kind, attrs.string("aggregate_function")?) {
        (OpKind::Regressor, Some(s)) => parse_aggregate_str(s)?,
        _ => Aggregate::Sum,
    };
    finish(kind, protos, roots, hitrates, n_targets, base_values, post_transform, aggregate, double_thresholds, W)
}

fn parse_v5<'a, F: Fn(&str) -> Option<AttrValue<'a>>>(attrs: &Attrs<F>) -> Result<TreeEnsemble, TreeError> {
    const W: &str = "nodes_featureids";
    let features = attrs.req_ints("nodes_featureids")?;
    let n = features.len();
    check_count(W, n)?;
    let (splits, double_thresholds) = match (attrs.get)("nodes_splits") {
        None => return Err(TreeError::MissingAttribute("nodes_splits".into())),
        Some(AttrValue::Tensor(TensorData::F32(v))) => (v.iter().map(|&x| x as f64).collect::<Vec<_>>(), false),
        Some(AttrValue::Tensor(TensorData::F64(v))) => (v.into_owned(), true),
        Some(AttrValue::Doubles(v)) => (v.to_vec(), true),
        Some(AttrValue::Floats(v)) => (v.iter().map(|&x| x as f64).collect(), false),
        Some(other) => return Err(bad("nodes_splits", format!("expected a float or double tensor, got {}", kind_name(&other)))),
    };
    check_len("nodes_splits", splits.len(), n, W)?;
    let modes: Vec<u8> = match (attrs.get)("nodes_modes") {
        None => return Err(TreeError::MissingAttribute("nodes_modes".into())),
        Some(AttrValue::Tensor(TensorData::U8(v))) => v.into_owned(),
        Some(AttrValue::Ints(v)) => v.iter().map(|&m| if (0..=255).contains(&m) { m as u8 } else { 255 }).collect(),
        Some(other) => return Err(bad("nodes_modes", format!("expected a uint8 tensor, got {}", kind_name(&other)))),
    };
    check_len("nodes_modes", modes.len(), n, W)?;
    let true_ids = attrs.req_ints("nodes_truenodeids")?;
    check_len("nodes_truenodeids", true_ids.len(), n, W)?;
    let true_leafs = attrs.req_ints("nodes_trueleafs")?;
    check_len("nodes_trueleafs", true_leafs.len(), n, W)?;
    let false_ids = attrs.req_ints("nodes_falsenodeids")?;
    check_len("nodes_falsenodeids", false_ids.len(), n, W)?;
    let false_leafs = attrs.req_ints("nodes_falseleafs")?;
    check_len("nodes_falseleafs", false_leafs.len(), n, W)?;
    let missing = attrs.ints("nodes_missing_value_tracks_true")?;
    if let Some(m) = &missing
        && !m.is_empty()
    {
        check_len("nodes_missing_value_tracks_true", m.len(), n, W)?;
    }
    let tree_roots = attrs.req_ints("tree_roots")?;
    let leaf_targets = attrs.req_ints("leaf_targetids")?;
    let n_leaves = leaf_targets.len();
    check_count("leaf_targetids", n_leaves)?;
    let (leaf_weights, _) =
        attrs.reals("leaf_weights", None)?.ok_or_else(|| TreeError::MissingAttribute("leaf_weights".into()))?;
    check_len("leaf_weights", leaf_weights.len(), n_leaves, "leaf_targetids")?;
    let n_targets = parse_targets_count(
        "n_targets",
        attrs.int("n_targets")?.ok_or_else(|| TreeError::MissingAttribute("n_targets".into()))?,
    )?;
    let aggregate = match attrs.int("aggregate_function")?.unwrap_or(1) {
        0 => Aggregate::Average,
        1 => Aggregate::Sum,
        2 => Aggregate::Min,
        3 => Aggregate::Max,
        v => return Err(bad("aggregate_function", format!("unknown value {v}"))),
    };
    let post_transform = match attrs.int("post_transform")?.unwrap_or(0) {
        0 => PostTransform::None,
        1 => PostTransform::Softmax,
        2 => PostTransform::Logistic,
        3 => PostTransform::SoftmaxZero,
        4 => PostTransform::Probit,
        v => return Err(bad("post_transform", format!("unknown value {v}"))),
    };
    let member_values: Vec<f32> = match (attrs.get)("membership_values") {
        None => Vec::new(),
        Some(AttrValue::Tensor(TensorData::F32(v))) => v.into_owned(),
        Some(AttrValue::Tensor(TensorData::F64(v))) => v.iter().map(|&x| x as f32).collect(),
        Some(AttrValue::Doubles(v)) => v.iter().map(|&x| x as f32).collect(),
        Some(AttrValue::Floats(v)) => v.to_vec(),
        Some(other) => return Err(bad("membership_values", format!("expected a float tensor, got {}", kind_name(&other)))),
    };
    let mut member_sets = member_values.split(|v| v.is_nan());

    // Interior nodes first (0..n), then leaves (n..n+n_leaves).
    let mut protos = Vec::with_capacity(n + n_leaves);
    for i in 0..n {
        let mode = match modes[i] {
            0 => Mode::Leq,
            1 => Mode::Lt,
            2 => Mode::Gte,
            3 => Mode::Gt,
            4 => Mode::Eq,
            5 => Mode::Neq,
            6 => Mode::Member,
            m => return Err(bad("nodes_modes", format!("entry {i}: unknown mode {m}"))),
        };
        let child = |name: &str, leafs_name: &str, id: i64, is_leaf: i64| -> Result<usize, TreeError> {
            match is_leaf {
                0 if (0..n as i64).contains(&id) => Ok(id as usize),
                1 if (0..n_leaves as i64).contains(&id) => Ok(n + id as usize),
                0 | 1 => Err(bad(name, format!("entry {i}: child index {id} out of range"))),
                v => Err(bad(leafs_name, format!("entry {i}: expected 0 or 1, got {v}"))),
            }
        };
        let members = if mode == Mode::Member {
            member_sets
                .next()
                .ok_or_else(|| bad("membership_values", format!("entry {i}: no set left for this BRANCH_MEMBER node")))?
                .to_vec()
        } else {
            Vec::new()
        };
        protos.push(Proto {
            feature: feature_index("nodes_featureids", i, features[i])?,
            threshold: splits[i],
            mode,
            missing_tracks_true: missing.as_ref().is_some_and(|m| !m.is_empty() && m[i] != 0),
            true_child: child("nodes_truenodeids", "nodes_trueleafs", true_ids[i], true_leafs[i])?,
            false_child: child("nodes_falsenodeids", "nodes_falseleafs", false_ids[i], false_leafs[i])?,
            leaf: Vec::new(),
            members,
        });
    }
    for j in 0..n_leaves {
        let t = leaf_targets[j];
        if t < 0 || t as u64 >= n_targets as u64 {
            return Err(bad("leaf_targetids", format!("entry {j}: target {t} outside 0..{n_targets}")));
        }
        protos.push(Proto {
            feature: 0,
            threshold: 0.0,
            mode: Mode::Leaf,
            missing_tracks_true: false,
            true_child: 0,
            false_child: 0,
            leaf: vec![LeafValue { target: t as u32, weight: leaf_weights[j] }],
            members: Vec::new(),
        });
    }
    let mut roots = Vec::with_capacity(tree_roots.len());
    for (k, &r) in tree_roots.iter().enumerate() {
        if !(0..n as i64).contains(&r) {
            return Err(bad("tree_roots", format!("entry {k}: root {r} out of range 0..{n}")));
        }
        roots.push(r as usize);
    }
    finish(
        OpKind::TreeEnsemble,
        protos,
        roots,
        None,
        n_targets,
        vec![0.0; n_targets],
        post_transform,
        aggregate,
        double_thresholds,
        W,
    )
}
