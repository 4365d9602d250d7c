//! Parsing (well-formed and hostile attributes), hand-computed margins, aggregates and post-transforms.

#![allow(clippy::needless_range_loop)]

mod common;

use common::*;
use explaind_tree_shap::{
    Aggregate, MAX_DEPTH, PostTransform, TreeEnsemble, TreeError, apply_post_transform, interventional_shap,
    path_dependent_interactions, path_dependent_shap,
};

const NEVER: &(dyn Fn() -> bool + Sync) = &|| false;

/// Tree 0: n0 = x0 <= 0.5 ? n1 (leaf 1) : n2; n2 = x1 < 2 (NaN -> true) ? n3 (leaf 10) : n4 (leaf 100).
/// Tree 1: a single leaf 0.5. Base value 0.25.
fn small(aggregate: &str) -> Attrs {
    let mut a = Attrs::default();
    a.set("nodes_treeids", Own::Ints(vec![0, 0, 0, 0, 0, 1]));
    a.set("nodes_nodeids", Own::Ints(vec![0, 1, 2, 3, 4, 0]));
    a.set("nodes_featureids", Own::Ints(vec![0, 0, 1, 0, 0, 0]));
    a.set(
        "nodes_modes",
        Own::Strs(["BRANCH_LEQ", "LEAF", "BRANCH_LT", "LEAF", "LEAF", "LEAF"].iter().map(|s| s.as_bytes().to_vec()).collect()),
    );
    a.set("nodes_values", Own::Floats(vec![0.5, 0.0, 2.0, 0.0, 0.0, 0.0]));
    a.set("nodes_truenodeids", Own::Ints(vec![1, 0, 3, 0, 0, 0]));
    a.set("nodes_falsenodeids", Own::Ints(vec![2, 0, 4, 0, 0, 0]));
    a.set("nodes_missing_value_tracks_true", Own::Ints(vec![0, 0, 1, 0, 0, 0]));
    a.set("target_treeids", Own::Ints(vec![0, 0, 0, 1]));
    a.set("target_nodeids", Own::Ints(vec![1, 3, 4, 0]));
    a.set("target_ids", Own::Ints(vec![0, 0, 0, 0]));
    a.set("target_weights", Own::Floats(vec![1.0, 10.0, 100.0, 0.5]));
    a.set("n_targets", Own::Int(1));
    a.set("base_values", Own::Floats(vec![0.25]));
    a.set("aggregate_function", Own::Str(aggregate.as_bytes().to_vec()));
    a
}

fn margin_of(e: &TreeEnsemble, x: &[f32]) -> f64 {
    let mut out = [0.0];
    e.predict_raw(x, &mut out).unwrap();
    out[0]
}

#[test]
fn hand_computed_margins() {
    let e = small("SUM").parse("TreeEnsembleRegressor").unwrap();
    assert_eq!((e.n_trees(), e.n_features(), e.n_targets(), e.max_depth()), (2, 2, 1, 2));
    assert_eq!(margin_of(&e, &[0.5, f32::NAN]), 1.0 + 0.5 + 0.25); // tie at threshold: LEQ true
    assert_eq!(margin_of(&e, &[0.6, f32::NAN]), 10.0 + 0.5 + 0.25); // NaN tracks true
    assert_eq!(margin_of(&e, &[f32::NAN, 3.0]), 100.0 + 0.5 + 0.25); // NaN at a node without tracking: false
    assert_eq!(margin_of(&e, &[1.0, 2.0]), 100.0 + 0.5 + 0.25); // tie at LT threshold: false
    let avg = small("AVERAGE").parse("TreeEnsembleRegressor").unwrap();
    assert_eq!(margin_of(&avg, &[0.5, 0.0]), (1.0 + 0.5) / 2.0 + 0.25);
    let min = small("MIN").parse("TreeEnsembleRegressor").unwrap();
    assert_eq!(min.aggregate(), Aggregate::Min);
    assert_eq!(margin_of(&min, &[0.5, 0.0]), 0.5 + 0.25);
    assert_eq!(margin_of(&min, &[0.9, 0.0]), 0.5 + 0.25);
    let max = small("MAX").parse("TreeEnsembleRegressor").unwrap();
    assert_eq!(margin_of(&max, &[0.5, 0.0]), 1.0 + 0.25);
    assert_eq!(margin_of(&max, &[0.9, 9.0]), 100.0 + 0.25);
    // Short rows are an error, not a panic.
    let mut out = [0.0];
    assert!(matches!(e.predict_raw(&[0.0], &mut out), Err(TreeError::InvalidInput(_))));
}

#[test]
fn double_thresholds_are_compared_as_float() {
    let mut a = small("SUM");
    a.remove("nodes_values");
    a.set("nodes_values_as_tensor", Own::F64(vec![0.1, 0.0, 2.0, 0.0, 0.0, 0.0]));
    let e = a.parse("TreeEnsembleRegressor").unwrap();
    assert!(e.has_double_thresholds());
    assert_eq!(e.nodes()[0].threshold_f64, 0.1);
    // 0.1f32 > 0.1f64, but ONNX Runtime compares against the threshold cast to float: equal, so LEQ holds.
    assert_eq!(margin_of(&e, &[0.1f32, 0.0]), 1.0 + 0.5 + 0.25);
    // The same thresholds as plain doubles; weights as a double tensor.
    a.remove("nodes_values_as_tensor");
    a.set("nodes_values", Own::D(vec![0.1, 0.0, 2.0, 0.0, 0.0, 0.0]));
    a.remove("target_weights");
    a.set("target_weights_as_tensor", Own::F64(vec![1.0, 10.0, 100.0, 0.5]));
    let e = a.parse("TreeEnsembleRegressor").unwrap();
    assert!(e.has_double_thresholds());
    assert_eq!(margin_of(&e, &[0.1f32, 0.0]), 1.0 + 0.5 + 0.25);
    // Both forms at once is an error.
    a.set("target_weights", Own::Floats(vec![1.0, 10.0, 100.0, 0.5]));
    assert!(
        matches!(a.parse("TreeEnsembleRegressor"), Err(TreeError::InvalidAttribute { name, .. }) if name == "target_weights")
    );
}

#[test]
fn min_max_are_refused_by_explainers() {
    let e = small("MAX").parse("TreeEnsembleRegressor").unwrap();
    let x = [0.5f32, 1.0];
    let covers = vec![1.0; e.nodes().len()];
    assert!(matches!(interventional_shap(&e, &x, &x, 2, 1, NEVER), Err(TreeError::Unsupported(_))));
    assert!(matches!(path_dependent_shap(&e, &covers, &x, 2, 1, NEVER), Err(TreeError::Unsupported(_))));
    assert!(matches!(path_dependent_interactions(&e, &covers, &x, 2, 1, NEVER), Err(TreeError::Unsupported(_))));
}

#[test]
fn hand_computed_interventional_values() {
    // One background row b = [0.9, 3.0] and x = [0.5, 0.0]: f(x) = 1.75, f(b) = 100.75,
    // f(x0, b1) = f(0.5, 3) = 1.75, f(b0, x1) = f(0.9, 0) = 10.75.
    // φ0 = ½(1.75−100.75) + ½(1.75−10.75) = −54; φ1 = ½(10.75−100.75) + ½(1.75−1.75) = −45.
    let e = small("SUM").parse("TreeEnsembleRegressor").unwrap();
    let s = interventional_shap(&e, &[0.5, 0.0], &[0.9, 3.0], 2, 1, NEVER).unwrap();
    assert_eq!(s.expected_value, vec![100.75]);
    assert_eq!(s.get(0, 0, 0), -54.0);
    assert_eq!(s.get(0, 1, 0), -45.0);
    // x = [0.9, 0.0] vs b = [0.3, 3.0]: f(x)=10.75, f(b)=1.75, f(x0,b1)=100.75, f(b0,x1)=1.75.
    // φ0 = ½(100.75−1.75) + ½(10.75−1.75) = 54; φ1 = ½(1.75−1.75) + ½(10.75−100.75) = −45.
    let s = interventional_shap(&e, &[0.9, 0.0], &[0.3, 3.0], 2, 1, NEVER).unwrap();
    assert_eq!(s.get(0, 0, 0), 54.0);
    assert_eq!(s.get(0, 1, 0), -45.0);
}

#[test]
fn post_transforms() {
    let mut v = [0.0, 2.0f64.ln()];
    apply_post_transform(PostTransform::Logistic, &mut v);
    assert!((v[0] - 0.5).abs() < 1e-15 && (v[1] - 2.0 / 3.0).abs() < 1e-15);
    let mut v = [0.0, 3.0f64.ln()];
    apply_post_transform(PostTransform::Softmax, &mut v);
    assert!((v[0] - 0.25).abs() < 1e-15 && (v[1] - 0.75).abs() < 1e-15);
    let mut v = [0.0, 1.0, 1.0];
    apply_post_transform(PostTransform::SoftmaxZero, &mut v);
    assert_eq!(v, [0.0, 0.5, 0.5]);
    let mut v = [0.5, 0.841_344_746_068_543, 0.158_655_253_931_457];
    apply_post_transform(PostTransform::Probit, &mut v);
    assert!(v[0].abs() < 1e-12);
    assert!((v[1] - 1.0).abs() < 5e-3 && (v[2] + 1.0).abs() < 5e-3, "{v:?}");
    let mut v = [1.5];
    apply_post_transform(PostTransform::None, &mut v);
    assert_eq!(v, [1.5]);
}

#[test]
fn classifier_and_opset5_attributes() {
    let mut rng = Rng::new(42);
    let o = GenOpts { max_depth: 3, n_features: 3, n_targets: 3, multi_vote: false, allow_member: false, branch_root: true };
    let model = gen_model(&mut rng, &o, 2, false, false);
    let (mut a, _) = to_v5(&model, false);
    a.set("post_transform", Own::Int(2));
    let e = a.parse("TreeEnsemble").unwrap();
    assert_eq!(e.post_transform(), PostTransform::Logistic);
    assert_eq!(e.base_values(), &[0.0, 0.0, 0.0]);
    a.set("aggregate_function", Own::Int(3));
    assert_eq!(a.parse("TreeEnsemble").unwrap().aggregate(), Aggregate::Max);
    a.set("aggregate_function", Own::Int(7));
    assert!(matches!(a.parse("TreeEnsemble"), Err(TreeError::InvalidAttribute { name, .. }) if name == "aggregate_function"));
    let mut round = model.clone();
    round_model(&mut round);
    let (mut c, _) = to_v1(&round, &mut rng, &V1Opts { classifier: true, doubles: false, shuffle: true, hitrates: false });
    c.set("post_transform", Own::Str(b"SOFTMAX".to_vec()));
    let e = c.parse("TreeEnsembleClassifier").unwrap();
    assert_eq!((e.n_targets(), e.post_transform(), e.hitrate_covers()), (3, PostTransform::Softmax, None));
    c.remove("classlabels_int64s");
    c.set("classlabels_strings", Own::Strs(vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]));
    assert_eq!(c.parse("TreeEnsembleClassifier").unwrap().n_targets(), 3);
    c.remove("classlabels_strings");
    assert_eq!(c.parse("TreeEnsembleClassifier"), Err(TreeError::MissingAttribute("classlabels_int64s".into())));
}

#[test]
fn binary_single_column_classifier_has_one_target() {
    // Tree: x0 <= 0 ? leaf (class 0 vote 2.0) : leaf (class 0 vote -1.0); labels [0, 1].
    let mut a = Attrs::default();
    a.set("nodes_treeids", Own::Ints(vec![0, 0, 0]));
    a.set("nodes_nodeids", Own::Ints(vec![0, 1, 2]));
    a.set("nodes_featureids", Own::Ints(vec![0, 0, 0]));
    a.set("nodes_modes", Own::Strs(vec![b"BRANCH_LEQ".to_vec(), b"LEAF".to_vec(), b"LEAF".to_vec()]));
    a.set("nodes_values", Own::Floats(vec![0.0, 0.0, 0.0]));
    a.set("nodes_truenodeids", Own::Ints(vec![1, 0, 0]));
    a.set("nodes_falsenodeids", Own::Ints(vec![2, 0, 0]));
    a.set("class_treeids", Own::Ints(vec![0, 0]));
    a.set("class_nodeids", Own::Ints(vec![1, 2]));
    a.set("class_ids", Own::Ints(vec![0, 0]));
    a.set("class_weights", Own::Floats(vec![2.0, -1.0]));
    a.set("classlabels_int64s", Own::Ints(vec![0, 1]));
    a.set("post_transform", Own::Str(b"LOGISTIC".to_vec()));
    let e = a.parse("TreeEnsembleClassifier").unwrap();
    assert_eq!(e.n_targets(), 1);
    assert_eq!(margin_of(&e, &[-1.0]), 2.0);
    a.set("base_values", Own::Floats(vec![0.5]));
    assert_eq!(margin_of(&a.parse("TreeEnsembleClassifier").unwrap(), &[1.0]), -0.5);
    a.set("base_values", Own::Floats(vec![0.25, 0.75]));
    let e = a.parse("TreeEnsembleClassifier").unwrap();
    assert_eq!(margin_of(&e, &[1.0]), -0.25);
    let s = interventional_shap(&e, &[1.0], &[-1.0], 1, 1, NEVER).unwrap();
    assert_eq!((s.get(0, 0, 0), s.expected_value[0]), (-3.0, 2.75));
    a.set("base_values", Own::Floats(vec![0.25, 0.75, 1.0]));
    assert_eq!(err_names(&a, "TreeEnsembleClassifier"), "base_values");
    // Votes for both columns: two targets.
    a.set("class_ids", Own::Ints(vec![0, 1]));
    a.set("base_values", Own::Floats(vec![0.25, 0.75]));
    let e = a.parse("TreeEnsembleClassifier").unwrap();
    assert_eq!(e.n_targets(), 2);
    let mut out = [0.0; 2];
    e.predict_raw(&[1.0], &mut out).unwrap();
    assert_eq!(out, [0.25, -0.25]);
}

fn err_names(a: &Attrs, op: &str) -> String {
    match a.parse(op) {
        Ok(_) => panic!("hostile attributes parsed"),
        Err(TreeError::InvalidAttribute { name, .. }) | Err(TreeError::LengthMismatch { name, .. }) => name,
        Err(TreeError::MissingAttribute(name)) => name,
        Err(e) => format!("{e:?}"),
    }
}

#[test]
fn hostile_opset1_attributes_are_errors() {
    let op = "TreeEnsembleRegressor";
    // Cycle without a root: 0 -> 1 -> 0.
    let mut a = small("SUM");
    a.set("nodes_truenodeids", Own::Ints(vec![1, 0, 3, 0, 0, 0]));
    a.set(
        "nodes_modes",
        Own::Strs(
            ["BRANCH_LEQ", "BRANCH_LEQ", "BRANCH_LT", "LEAF", "LEAF", "LEAF"].iter().map(|s| s.as_bytes().to_vec()).collect(),
        ),
    );
    a.set("target_nodeids", Own::Ints(vec![3, 3, 4, 0]));
    a.set("nodes_falsenodeids", Own::Ints(vec![2, 0, 4, 0, 0, 0]));
    assert_eq!(err_names(&a, op), "nodes_treeids");
    // Self-loop at node 2 (node 3 is then nobody's child: a second root).
    let mut a = small("SUM");
    a.set("nodes_truenodeids", Own::Ints(vec![1, 0, 2, 0, 0, 0]));
    assert_eq!(err_names(&a, op), "nodes_treeids");
    // Shared node: both children of node 2 are node 3 (node 4 becomes a second root).
    let mut a = small("SUM");
    a.set("nodes_falsenodeids", Own::Ints(vec![2, 0, 3, 0, 0, 0]));
    assert_eq!(err_names(&a, op), "nodes_treeids");
    // Child out of range.
    let mut a = small("SUM");
    a.set("nodes_truenodeids", Own::Ints(vec![99, 0, 3, 0, 0, 0]));
    assert_eq!(err_names(&a, op), "nodes_truenodeids");
    let mut a = small("SUM");
    a.set("nodes_falsenodeids", Own::Ints(vec![-1, 0, 4, 0, 0, 0]));
    assert_eq!(err_names(&a, op), "nodes_falsenodeids");
    // Empty.
    let mut a = small("SUM");
    for n in [
        "nodes_treeids",
        "nodes_nodeids",
        "nodes_featureids",
        "nodes_truenodeids",
        "nodes_falsenodeids",
        "nodes_missing_value_tracks_true",
    ] {
        a.set(n, Own::Ints(vec![]));
    }
    a.set("nodes_modes", Own::Strs(vec![]));
    a.set("nodes_values", Own::Floats(vec![]));
    assert_eq!(err_names(&a, op), "nodes_treeids");
    assert_eq!(err_names(&Attrs::default(), op), "nodes_treeids");
    // Mismatched lengths.
    let mut a = small("SUM");
    a.set("nodes_featureids", Own::Ints(vec![0, 0, 1]));
    assert_eq!(err_names(&a, op), "nodes_featureids");
    let mut a = small("SUM");
    a.set("target_weights", Own::Floats(vec![1.0]));
    assert_eq!(err_names(&a, op), "target_weights");
    let mut a = small("SUM");
    a.set("base_values", Own::Floats(vec![1.0, 2.0]));
    assert_eq!(err_names(&a, op), "base_values");
    let mut a = small("SUM");
    a.set("nodes_hitrates", Own::Floats(vec![1.0]));
    assert_eq!(err_names(&a, op), "nodes_hitrates");
    // Unknown mode / aggregate / post_transform.
    let mut a = small("SUM");
    a.set(
        "nodes_modes",
        Own::Strs(["BRANCH_FOO", "LEAF", "BRANCH_LT", "LEAF", "LEAF", "LEAF"].iter().map(|s| s.as_bytes().to_vec()).collect()),
    );
    assert_eq!(err_names(&a, op), "nodes_modes");
    assert_eq!(err_names(&small("MEDIAN"), op), "aggregate_function");
    let mut a = small("SUM");
    a.set("post_transform", Own::Str(b"RELU".to_vec()));
    assert_eq!(err_names(&a, op), "post_transform");
    // Wrong attribute type.
    let mut a = small("SUM");
    a.set("nodes_nodeids", Own::Floats(vec![0.0; 6]));
    assert_eq!(err_names(&a, op), "nodes_nodeids");
    // Duplicate node id, negative feature, target on a branch, target id out of range, absurd n_targets.
    let mut a = small("SUM");
    a.set("nodes_nodeids", Own::Ints(vec![0, 1, 2, 3, 3, 0]));
    assert_eq!(err_names(&a, op), "nodes_nodeids");
    let mut a = small("SUM");
    a.set("nodes_featureids", Own::Ints(vec![-3, 0, 1, 0, 0, 0]));
    assert_eq!(err_names(&a, op), "nodes_featureids");
    let mut a = small("SUM");
    a.set("target_nodeids", Own::Ints(vec![1, 3, 2, 0]));
    assert_eq!(err_names(&a, op), "target_nodeids");
    let mut a = small("SUM");
    a.set("target_ids", Own::Ints(vec![0, 0, 5, 0]));
    assert_eq!(err_names(&a, op), "target_ids");
    let mut a = small("SUM");
    a.set("n_targets", Own::Int(1 << 40));
    assert_eq!(err_names(&a, op), "n_targets");
    let mut a = small("SUM");
    a.set("nodes_hitrates", Own::Floats(vec![1.0, -1.0, 1.0, 1.0, 1.0, 1.0]));
    assert_eq!(err_names(&a, op), "nodes_hitrates");
    // Unknown operator.
    assert!(matches!(small("SUM").parse("LinearRegressor"), Err(TreeError::UnsupportedOperator(_))));
}

#[test]
fn too_deep_trees_are_refused() {
    // A chain of MAX_DEPTH + 1 branches, each with a leaf on its true side.
    let depth = MAX_DEPTH + 1;
    let n = 2 * depth + 1;
    let mut a = Attrs::default();
    let mut modes = Vec::new();
    let (mut tids, mut fids) = (Vec::new(), Vec::new());
    for i in 0..n {
        if i < depth {
            modes.push(b"BRANCH_LEQ".to_vec());
            tids.push((depth + 1 + i) as i64);
            fids.push((i + 1) as i64);
        } else {
            modes.push(b"LEAF".to_vec());
            tids.push(0);
            fids.push(0);
        }
    }
    a.set("nodes_treeids", Own::Ints(vec![0; n]));
    a.set("nodes_nodeids", Own::Ints((0..n as i64).collect()));
    a.set("nodes_featureids", Own::Ints(vec![0; n]));
    a.set("nodes_modes", Own::Strs(modes));
    a.set("nodes_values", Own::Floats(vec![0.0; n]));
    a.set("nodes_truenodeids", Own::Ints(tids));
    a.set("nodes_falsenodeids", Own::Ints(fids));
    a.set("target_treeids", Own::Ints(vec![0]));
    a.set("target_nodeids", Own::Ints(vec![depth as i64]));
    a.set("target_ids", Own::Ints(vec![0]));
    a.set("target_weights", Own::Floats(vec![1.0]));
    assert_eq!(a.parse("TreeEnsembleRegressor"), Err(TreeError::TooDeep { tree: 0, limit: MAX_DEPTH }));
}

#[test]
fn hostile_opset5_attributes_are_errors() {
    let op = "TreeEnsemble";
    let mut rng = Rng::new(9);
    let o = GenOpts { max_depth: 3, n_features: 3, n_targets: 2, multi_vote: false, allow_member: false, branch_root: true };
    let model = gen_model(&mut rng, &o, 2, false, false);
    let (good, _) = to_v5(&model, true);
    good.parse(op).unwrap();
    let n = match good.0.get("nodes_featureids") {
        Some(Own::Ints(v)) => v.len(),
        _ => unreachable!(),
    };
    let set_first = |name: &str, v: i64| {
        let mut a = good.clone();
        if let Some(Own::Ints(x)) = a.0.get_mut(name) {
            x[0] = v;
        }
        a
    };
    // Root's true child pointing at itself (cycle), out of range, bad leaf flag.
    let mut a = set_first("nodes_truenodeids", 0);
    if let Some(Own::Ints(x)) = a.0.get_mut("nodes_trueleafs") {
        x[0] = 0;
    }
    assert_eq!(err_names(&a, op), "nodes_featureids");
    assert_eq!(err_names(&set_first("nodes_falsenodeids", 1000), op), "nodes_falsenodeids");
    assert_eq!(err_names(&set_first("nodes_trueleafs", 2), op), "nodes_trueleafs");
    assert_eq!(err_names(&set_first("tree_roots", n as i64), op), "tree_roots");
    assert_eq!(err_names(&set_first("leaf_targetids", 2), op), "leaf_targetids");
    let mut a = good.clone();
    a.set("nodes_modes", Own::U8(vec![9; n]));
    assert_eq!(err_names(&a, op), "nodes_modes");
    let mut a = good.clone();
    a.set("nodes_modes", Own::U8(vec![6; n]));
    a.set("membership_values", Own::F64(vec![]));
    assert_eq!(err_names(&a, op), "membership_values");
    let mut a = good.clone();
    a.set("nodes_splits", Own::F64(vec![0.0]));
    assert_eq!(err_names(&a, op), "nodes_splits");
    let mut a = good.clone();
    a.set("tree_roots", Own::Ints(vec![]));
    assert_eq!(err_names(&a, op), "nodes_featureids");
    let mut a = good.clone();
    a.remove("n_targets");
    assert_eq!(err_names(&a, op), "n_targets");
    let mut a = good.clone();
    a.set("leaf_weights", Own::F32(vec![1.0]));
    assert_eq!(err_names(&a, op), "leaf_weights");
    // Two trees sharing a root.
    let mut a = good.clone();
    a.set("tree_roots", Own::Ints(vec![0, 0]));
    assert_eq!(err_names(&a, op), "nodes_featureids");
}

#[test]
fn random_hostile_mutations_never_panic() {
    // Random corruption of valid attributes must give Ok or Err, never a panic or a hang.
    let mut rng = Rng::new(2024);
    for seed in 0..400 {
        let o = GenOpts {
            max_depth: 4,
            n_features: 3,
            n_targets: 2,
            multi_vote: seed % 2 == 0,
            allow_member: seed % 2 == 1,
            branch_root: true,
        };
        let model = gen_model(&mut rng, &o, 2, false, false);
        let (mut a, op) = if seed % 2 == 0 {
            (
                to_v1(&model, &mut rng, &V1Opts { classifier: false, doubles: false, shuffle: true, hitrates: true }).0,
                "TreeEnsembleRegressor",
            )
        } else {
            (to_v5(&model, false).0, "TreeEnsemble")
        };
        let names: Vec<String> = a.0.keys().cloned().collect();
        for _ in 0..3 {
            let name = &names[rng.below(names.len())];
            match a.0.get_mut(name) {
                Some(Own::Ints(v)) if !v.is_empty() => {
                    let i = rng.below(v.len());
                    v[i] = [-1, 0, 1, 2, 3, 1000, i64::MAX, i64::MIN][rng.below(8)];
                }
                Some(Own::Ints(v)) => v.push(1),
                Some(Own::U8(v)) if !v.is_empty() => {
                    let i = rng.below(v.len());
                    v[i] = rng.below(10) as u8;
                }
                Some(Own::Floats(v)) if !v.is_empty() => {
                    let i = rng.below(v.len());
                    v[i] = [f32::NAN, -1.0, f32::INFINITY][rng.below(3)];
                }
                Some(Own::Int(v)) => *v = [-1, 0, 5, i64::MAX][rng.below(4)],
                _ => {
                    a.0.remove(name);
                }
            }
        }
        if let Ok(e) = a.parse(op) {
            // Whatever parsed must evaluate and explain without panicking.
            let nf = e.n_features().max(1);
            let rows = gen_rows(&mut rng, 2, nf);
            let mut out = vec![0.0; e.n_targets()];
            e.predict_raw(&rows[..nf], &mut out).unwrap();
            let _ = interventional_shap(&e, &rows, &rows, nf, 1, NEVER);
            let covers = e.covers_from_rows(&rows, nf).unwrap();
            let _ = path_dependent_shap(&e, &covers, &rows, nf, 1, NEVER);
            if let Some(h) = e.hitrate_covers() {
                let _ = path_dependent_shap(&e, &h, &rows, nf, 1, NEVER);
            }
        }
    }
}
