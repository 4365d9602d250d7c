//! Test support: a seeded RNG, random trees in a test-side representation, an independent evaluator,
//! serializers to ONNX-ML attributes, and brute-force Shapley values from the game definitions.
#![allow(dead_code, clippy::needless_range_loop)]

use std::collections::HashMap;

use explaind_tree_shap::{AttrValue, TensorData, TreeEnsemble, TreeError};

/// SplitMix64.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
}

/// Threshold grid; rows draw from the same grid (ties) plus NaN.
pub const GRID: [f32; 5] = [-1.0, -0.5, 0.0, 0.5, 1.0];

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum TMode {
    Leq,
    Lt,
    Gte,
    Gt,
    Eq,
    Neq,
    Member,
}

#[derive(Clone, Debug)]
pub enum TKind {
    Leaf(Vec<(usize, f64)>),
    Branch { feature: usize, threshold: f32, mode: TMode, members: Vec<f32>, missing_true: bool, t: usize, f: usize },
}

#[derive(Clone, Debug)]
pub struct TNode {
    pub kind: TKind,
    pub cover: f64,
}

/// A tree; node 0 is the root, children are indices into `nodes`.
#[derive(Clone, Debug)]
pub struct TTree {
    pub nodes: Vec<TNode>,
}

#[derive(Clone, Debug)]
pub struct TModel {
    pub trees: Vec<TTree>,
    pub n_features: usize,
    pub n_targets: usize,
    pub base: Vec<f64>,
    pub average: bool,
}

pub struct GenOpts {
    pub max_depth: usize,
    pub n_features: usize,
    pub n_targets: usize,
    /// Leaves may carry several (target, weight) votes (opsets 1-3); otherwise exactly one (opset 5).
    pub multi_vote: bool,
    pub allow_member: bool,
    /// Root is always a branch (opset 5 cannot express a leaf root).
    pub branch_root: bool,
}

fn gen_node(rng: &mut Rng, o: &GenOpts, depth: usize, nodes: &mut Vec<TNode>) -> usize {
    let idx = nodes.len();
    let cover = if rng.chance(0.1) { 0.0 } else { rng.range(0.1, 10.0) };
    let leaf = depth == o.max_depth || (depth > 0 && rng.chance(0.25)) || (depth == 0 && !o.branch_root && rng.chance(0.1));
    if leaf {
        let votes = if o.multi_vote { 1 + rng.below(3) } else { 1 };
        let v = (0..votes).map(|_| (rng.below(o.n_targets), rng.range(-5.0, 5.0))).collect();
        nodes.push(TNode { kind: TKind::Leaf(v), cover });
        return idx;
    }
    let modes = if o.allow_member { 7 } else { 6 };
    let mode = [TMode::Leq, TMode::Lt, TMode::Gte, TMode::Gt, TMode::Eq, TMode::Neq, TMode::Member][rng.below(modes)];
    let members =
        if mode == TMode::Member { (0..1 + rng.below(3)).map(|_| GRID[rng.below(GRID.len())]).collect() } else { Vec::new() };
    nodes.push(TNode { kind: TKind::Leaf(Vec::new()), cover });
    let feature = rng.below(o.n_features);
    let threshold = GRID[rng.below(GRID.len())];
    let missing_true = rng.chance(0.5);
    let t = gen_node(rng, o, depth + 1, nodes);
    let f = gen_node(rng, o, depth + 1, nodes);
    nodes[idx].kind = TKind::Branch { feature, threshold, mode, members, missing_true, t, f };
    idx
}

pub fn gen_tree(rng: &mut Rng, o: &GenOpts) -> TTree {
    let mut nodes = Vec::new();
    gen_node(rng, o, 0, &mut nodes);
    TTree { nodes }
}

pub fn gen_model(rng: &mut Rng, o: &GenOpts, n_trees: usize, average: bool, with_base: bool) -> TModel {
    let trees = (0..n_trees).map(|_| gen_tree(rng, o)).collect();
    let base = if with_base { (0..o.n_targets).map(|_| rng.range(-2.0, 2.0)).collect() } else { vec![0.0; o.n_targets] };
    TModel { trees, n_features: o.n_features, n_targets: o.n_targets, base, average }
}

pub fn gen_rows(rng: &mut Rng, n: usize, n_features: usize) -> Vec<f32> {
    (0..n * n_features)
        .map(|_| {
            if rng.chance(0.15) {
                f32::NAN
            } else if rng.chance(0.2) {
                0.25
            } else {
                GRID[rng.below(GRID.len())]
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------------
// Independent evaluation (ONNX Runtime float semantics, re-implemented here).

pub fn branch_true(mode: TMode, threshold: f32, members: &[f32], missing_true: bool, v: f32) -> bool {
    let r = match mode {
        TMode::Leq => v <= threshold,
        TMode::Lt => v < threshold,
        TMode::Gte => v >= threshold,
        TMode::Gt => v > threshold,
        TMode::Eq => v == threshold,
        TMode::Neq => v != threshold,
        TMode::Member => members.contains(&v),
    };
    r || (missing_true && v.is_nan())
}

pub fn tree_leaf(tree: &TTree, x: &[f32]) -> usize {
    let mut i = 0;
    loop {
        match &tree.nodes[i].kind {
            TKind::Leaf(_) => return i,
            TKind::Branch { feature, threshold, mode, members, missing_true, t, f } => {
                i = if branch_true(*mode, *threshold, members, *missing_true, x[*feature]) { *t } else { *f };
            }
        }
    }
}

fn leaf_votes(tree: &TTree, i: usize) -> &[(usize, f64)] {
    match &tree.nodes[i].kind {
        TKind::Leaf(v) => v,
        _ => unreachable!(),
    }
}

fn finish_margin(m: &TModel, mut acc: Vec<f64>) -> Vec<f64> {
    let scale = if m.average { 1.0 / m.trees.len() as f64 } else { 1.0 };
    for (a, b) in acc.iter_mut().zip(&m.base) {
        *a = *a * scale + b;
    }
    acc
}

/// The margin f(x) per target.
pub fn margin(m: &TModel, x: &[f32]) -> Vec<f64> {
    let mut acc = vec![0.0; m.n_targets];
    for tree in &m.trees {
        for &(t, w) in leaf_votes(tree, tree_leaf(tree, x)) {
            acc[t] += w;
        }
    }
    finish_margin(m, acc)
}

fn fractions(tree: &TTree, t: usize, f: usize) -> (f64, f64) {
    let (ct, cf) = (tree.nodes[t].cover, tree.nodes[f].cover);
    if ct + cf > 0.0 { (ct / (ct + cf), cf / (ct + cf)) } else { (0.5, 0.5) }
}

/// Path-dependent game: features in `mask` follow x; others follow both children weighted by cover.
pub fn cover_game(m: &TModel, x: &[f32], mask: u32) -> Vec<f64> {
    fn rec(tree: &TTree, i: usize, x: &[f32], mask: u32, p: f64, acc: &mut [f64]) {
        match &tree.nodes[i].kind {
            TKind::Leaf(v) => {
                for &(t, w) in v {
                    acc[t] += p * w;
                }
            }
            TKind::Branch { feature, threshold, mode, members, missing_true, t, f } => {
                if mask & (1 << feature) != 0 {
                    let go = if branch_true(*mode, *threshold, members, *missing_true, x[*feature]) { *t } else { *f };
                    rec(tree, go, x, mask, p, acc);
                } else {
                    let (ft, ff) = fractions(tree, *t, *f);
                    rec(tree, *t, x, mask, p * ft, acc);
                    rec(tree, *f, x, mask, p * ff, acc);
                }
            }
        }
    }
    let mut acc = vec![0.0; m.n_targets];
    for tree in &m.trees {
        rec(tree, 0, x, mask, 1.0, &mut acc);
    }
    finish_margin(m, acc)
}

/// Interventional game: mean over background rows of f on the hybrid row (x on `mask`, b elsewhere).
pub fn interventional_game(m: &TModel, x: &[f32], background: &[f32], mask: u32) -> Vec<f64> {
    let nf = m.n_features;
    let nb = background.len() / nf;
    let mut acc = vec![0.0; m.n_targets];
    for b in background.chunks_exact(nf) {
        let h: Vec<f32> = (0..nf).map(|i| if mask & (1 << i) != 0 { x[i] } else { b[i] }).collect();
        for (a, v) in acc.iter_mut().zip(margin(m, &h)) {
            *a += v / nb as f64;
        }
    }
    acc
}

fn fact(n: usize) -> f64 {
    (1..=n).map(|k| k as f64).product()
}

/// All game values, indexed by subset mask.
pub fn game_table(n: usize, game: impl Fn(u32) -> Vec<f64>) -> Vec<Vec<f64>> {
    (0..1u32 << n).map(game).collect()
}

/// Brute-force Shapley values `[feature][target]` by enumerating all subsets.
pub fn brute_shapley(n: usize, n_targets: usize, v: &[Vec<f64>]) -> Vec<Vec<f64>> {
    let mut phi = vec![vec![0.0; n_targets]; n];
    for (i, phi_i) in phi.iter_mut().enumerate() {
        for s in 0..1u32 << n {
            if s & (1 << i) != 0 {
                continue;
            }
            let k = s.count_ones() as usize;
            let w = fact(k) * fact(n - k - 1) / fact(n);
            for t in 0..n_targets {
                phi_i[t] += w * (v[(s | (1 << i)) as usize][t] - v[s as usize][t]);
            }
        }
    }
    phi
}

/// Brute-force Shapley interaction index `[i][j][target]` for i ≠ j, with shap's diagonal
/// `φ_i − Σ_{j≠i} Φ_ij`.
pub fn brute_interactions(n: usize, n_targets: usize, v: &[Vec<f64>]) -> Vec<Vec<Vec<f64>>> {
    let phi = brute_shapley(n, n_targets, v);
    let mut out = vec![vec![vec![0.0; n_targets]; n]; n];
    for i in 0..n {
        for j in 0..n {
            if i == j {
                continue;
            }
            for s in 0..1u32 << n {
                if s & ((1 << i) | (1 << j)) != 0 {
                    continue;
                }
                let k = s.count_ones() as usize;
                let w = fact(k) * fact(n - k - 2) / (2.0 * fact(n - 1));
                let (si, sj, sij) = (s | (1 << i), s | (1 << j), s | (1 << i) | (1 << j));
                for t in 0..n_targets {
                    out[i][j][t] += w * (v[sij as usize][t] - v[si as usize][t] - v[sj as usize][t] + v[s as usize][t]);
                }
            }
        }
        for t in 0..n_targets {
            let off: f64 = (0..n).filter(|&j| j != i).map(|j| out[i][j][t]).sum();
            out[i][i][t] = phi[i][t] - off;
        }
    }
    out
}

pub fn assert_close(got: f64, want: f64, what: &str) {
    let tol = 1e-9 * want.abs().max(1.0);
    assert!((got - want).abs() <= tol, "{what}: got {got}, want {want} (diff {})", (got - want).abs());
}

// ---------------------------------------------------------------------------------------------------
// Attribute storage and serializers.

#[derive(Clone, Debug)]
pub enum Own {
    Int(i64),
    Ints(Vec<i64>),
    Floats(Vec<f32>),
    Str(Vec<u8>),
    Strs(Vec<Vec<u8>>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    /// Plain doubles (`AttrValue::Doubles`).
    D(Vec<f64>),
    U8(Vec<u8>),
}

#[derive(Clone, Debug, Default)]
pub struct Attrs(pub HashMap<String, Own>);

impl Attrs {
    pub fn set(&mut self, name: &str, v: Own) {
        self.0.insert(name.to_string(), v);
    }
    pub fn remove(&mut self, name: &str) {
        self.0.remove(name);
    }
    pub fn view(&self, name: &str) -> Option<AttrValue<'_>> {
        Some(match self.0.get(name)? {
            Own::Int(v) => AttrValue::Int(*v),
            Own::Ints(v) => AttrValue::Ints(v),
            Own::Floats(v) => AttrValue::Floats(v),
            Own::Str(v) => AttrValue::String(v),
            Own::Strs(v) => AttrValue::Strings(v.iter().map(|s| s.as_slice()).collect()),
            Own::F32(v) => AttrValue::Tensor(TensorData::F32(v.as_slice().into())),
            Own::F64(v) => AttrValue::Tensor(TensorData::F64(v.as_slice().into())),
            Own::U8(v) => AttrValue::Tensor(TensorData::U8(v.as_slice().into())),
            Own::D(v) => AttrValue::Doubles(v),
        })
    }
    pub fn parse(&self, op: &str) -> Result<TreeEnsemble, TreeError> {
        TreeEnsemble::from_attributes(op, |n| self.view(n))
    }
}

fn mode_str(m: TMode) -> &'static str {
    match m {
        TMode::Leq => "BRANCH_LEQ",
        TMode::Lt => "BRANCH_LT",
        TMode::Gte => "BRANCH_GTE",
        TMode::Gt => "BRANCH_GT",
        TMode::Eq => "BRANCH_EQ",
        TMode::Neq => "BRANCH_NEQ",
        TMode::Member => panic!("no member mode before opset 5"),
    }
}

pub struct V1Opts {
    pub classifier: bool,
    pub doubles: bool,
    /// Shuffle the node arrays and use non-contiguous tree ids.
    pub shuffle: bool,
    pub hitrates: bool,
}

/// Serializes to opsets 1-3 attributes; also returns the covers in the parsed ensemble's node order
/// (the order of the node arrays).
pub fn to_v1(m: &TModel, rng: &mut Rng, o: &V1Opts) -> (Attrs, Vec<f64>) {
    // (tree, node) pairs in array order.
    let mut order: Vec<(usize, usize)> =
        m.trees.iter().enumerate().flat_map(|(t, tr)| (0..tr.nodes.len()).map(move |n| (t, n))).collect();
    if o.shuffle {
        for i in (1..order.len()).rev() {
            let j = rng.below(i + 1);
            order.swap(i, j);
        }
    }
    let tree_id = |t: usize| if o.shuffle { (t as i64) * 7 + 3 } else { t as i64 };
    let (mut treeids, mut nodeids, mut featureids, mut modes, mut values, mut tids, mut fids, mut missing, mut hit) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut vt, mut vn, mut vi, mut vw) = (vec![], vec![], vec![], vec![]);
    for &(t, n) in &order {
        let node = &m.trees[t].nodes[n];
        treeids.push(tree_id(t));
        nodeids.push(n as i64);
        hit.push(node.cover);
        match &node.kind {
            TKind::Leaf(votes) => {
                featureids.push(0);
                modes.push(b"LEAF".to_vec());
                values.push(0.0);
                tids.push(0);
                fids.push(0);
                missing.push(0);
                for &(k, w) in votes {
                    vt.push(tree_id(t));
                    vn.push(n as i64);
                    vi.push(k as i64);
                    vw.push(w);
                }
            }
            TKind::Branch { feature, threshold, mode, missing_true, t: tc, f: fc, .. } => {
                featureids.push(*feature as i64);
                modes.push(mode_str(*mode).as_bytes().to_vec());
                values.push(*threshold as f64);
                tids.push(*tc as i64);
                fids.push(*fc as i64);
                missing.push(*missing_true as i64);
            }
        }
    }
    let mut a = Attrs::default();
    a.set("nodes_treeids", Own::Ints(treeids));
    a.set("nodes_nodeids", Own::Ints(nodeids));
    a.set("nodes_featureids", Own::Ints(featureids));
    a.set("nodes_modes", Own::Strs(modes));
    if o.doubles {
        a.set("nodes_values_as_tensor", Own::F64(values));
    } else {
        a.set("nodes_values", Own::Floats(values.iter().map(|&v| v as f32).collect()));
    }
    a.set("nodes_truenodeids", Own::Ints(tids));
    a.set("nodes_falsenodeids", Own::Ints(fids));
    a.set("nodes_missing_value_tracks_true", Own::Ints(missing));
    if o.hitrates {
        a.set("nodes_hitrates", Own::Floats(hit.iter().map(|&v| v as f32).collect()));
    }
    let p = if o.classifier { "class" } else { "target" };
    a.set(&format!("{p}_treeids"), Own::Ints(vt));
    a.set(&format!("{p}_nodeids"), Own::Ints(vn));
    a.set(&format!("{p}_ids"), Own::Ints(vi));
    if o.doubles {
        a.set(&format!("{p}_weights_as_tensor"), Own::F64(vw));
        a.set("base_values_as_tensor", Own::F64(m.base.clone()));
    } else {
        // Weights must survive the f32 trip exactly for the comparison: the model is rounded in `round_model`.
        a.set(&format!("{p}_weights"), Own::Floats(vw.iter().map(|&v| v as f32).collect()));
        a.set("base_values", Own::Floats(m.base.iter().map(|&v| v as f32).collect()));
    }
    if o.classifier {
        a.set("classlabels_int64s", Own::Ints((0..m.n_targets as i64).map(|k| k * 10).collect()));
    } else {
        a.set("n_targets", Own::Int(m.n_targets as i64));
        a.set("aggregate_function", Own::Str(if m.average { b"AVERAGE".to_vec() } else { b"SUM".to_vec() }));
    }
    let covers = order.iter().map(|&(t, n)| m.trees[t].nodes[n].cover).collect();
    (a, covers)
}

/// Rounds every leaf weight, base value and cover to f32 so float attributes carry them exactly.
pub fn round_model(m: &mut TModel) {
    for tree in &mut m.trees {
        for node in &mut tree.nodes {
            node.cover = node.cover as f32 as f64;
            if let TKind::Leaf(v) = &mut node.kind {
                for (_, w) in v.iter_mut() {
                    *w = *w as f32 as f64;
                }
            }
        }
    }
    for b in &mut m.base {
        *b = *b as f32 as f64;
    }
}

/// Serializes to opset 5 `TreeEnsemble` (needs branch roots, one vote per leaf, zero base values);
/// returns the covers in the parsed ensemble's node order (interior nodes, then leaves).
pub fn to_v5(m: &TModel, doubles: bool) -> (Attrs, Vec<f64>) {
    let mut interior: Vec<(usize, usize)> = Vec::new();
    let mut leaves: Vec<(usize, usize)> = Vec::new();
    let mut pos: HashMap<(usize, usize), (bool, usize)> = HashMap::new();
    for (t, tree) in m.trees.iter().enumerate() {
        for (n, node) in tree.nodes.iter().enumerate() {
            match node.kind {
                TKind::Leaf(_) => {
                    pos.insert((t, n), (true, leaves.len()));
                    leaves.push((t, n));
                }
                TKind::Branch { .. } => {
                    pos.insert((t, n), (false, interior.len()));
                    interior.push((t, n));
                }
            }
        }
    }
    let (mut feats, mut splits, mut modes, mut tids, mut tleaf, mut fids, mut fleaf, mut missing, mut members) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    for &(t, n) in &interior {
        let TKind::Branch { feature, threshold, mode, members: set, missing_true, t: tc, f: fc } = &m.trees[t].nodes[n].kind
        else {
            unreachable!()
        };
        feats.push(*feature as i64);
        splits.push(*threshold as f64);
        modes.push(*mode as u8);
        let (tl, ti) = pos[&(t, *tc)];
        let (fl, fi) = pos[&(t, *fc)];
        tids.push(ti as i64);
        tleaf.push(tl as i64);
        fids.push(fi as i64);
        fleaf.push(fl as i64);
        missing.push(*missing_true as i64);
        if *mode == TMode::Member {
            members.extend_from_slice(set);
            members.push(f32::NAN);
        }
    }
    let (mut ltarget, mut lweight) = (vec![], vec![]);
    for &(t, n) in &leaves {
        let TKind::Leaf(v) = &m.trees[t].nodes[n].kind else { unreachable!() };
        assert_eq!(v.len(), 1);
        ltarget.push(v[0].0 as i64);
        lweight.push(v[0].1);
    }
    let roots = (0..m.trees.len()).map(|t| pos[&(t, 0)].1 as i64).collect();
    let mut a = Attrs::default();
    a.set("nodes_featureids", Own::Ints(feats));
    if doubles {
        a.set("nodes_splits", Own::F64(splits));
        a.set("leaf_weights", Own::F64(lweight));
        a.set("membership_values", Own::F64(members.iter().map(|&v| v as f64).collect()));
    } else {
        a.set("nodes_splits", Own::F32(splits.iter().map(|&v| v as f32).collect()));
        a.set("leaf_weights", Own::F32(lweight.iter().map(|&v| v as f32).collect()));
        a.set("membership_values", Own::F32(members));
    }
    a.set("nodes_modes", Own::U8(modes));
    a.set("nodes_truenodeids", Own::Ints(tids));
    a.set("nodes_trueleafs", Own::Ints(tleaf));
    a.set("nodes_falsenodeids", Own::Ints(fids));
    a.set("nodes_falseleafs", Own::Ints(fleaf));
    a.set("nodes_missing_value_tracks_true", Own::Ints(missing));
    a.set("tree_roots", Own::Ints(roots));
    a.set("leaf_targetids", Own::Ints(ltarget));
    a.set("n_targets", Own::Int(m.n_targets as i64));
    a.set("aggregate_function", Own::Int(if m.average { 0 } else { 1 }));
    a.set("post_transform", Own::Int(0));
    let covers = interior.iter().chain(&leaves).map(|&(t, n)| m.trees[t].nodes[n].cover).collect();
    (a, covers)
}
