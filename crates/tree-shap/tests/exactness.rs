//! The fast algorithms against brute-force Shapley values computed from the game definitions on random
//! ensembles (test-side trees and evaluator, serialized to ONNX-ML attributes and parsed).

#![allow(clippy::needless_range_loop)]

mod common;

use common::*;
use explaind_tree_shap::{
    OpKind, TreeEnsemble, TreeError, expected_value_cover, interventional_shap, path_dependent_interactions, path_dependent_shap,
};

const NEVER: &(dyn Fn() -> bool + Sync) = &|| false;

/// A random model in one of the supported encodings, parsed; covers in the parsed node order.
struct Case {
    model: TModel,
    ens: TreeEnsemble,
    covers: Vec<f64>,
    label: String,
}

fn random_case(seed: u64, max_features: usize) -> Case {
    let mut rng = Rng::new(seed);
    let form = seed % 5;
    let n_features = 1 + rng.below(max_features);
    let v5 = form >= 3;
    let classifier = form == 2;
    // Classifiers get 3+ classes here (the binary single-column case has its own test).
    let n_targets = if classifier {
        3 + rng.below(2)
    } else if rng.chance(0.5) {
        1
    } else {
        1 + rng.below(3)
    };
    let opts = GenOpts { max_depth: 1 + rng.below(6), n_features, n_targets, multi_vote: !v5, allow_member: v5, branch_root: v5 };
    let n_trees = 1 + rng.below(4);
    let average = !classifier && rng.chance(0.4);
    let mut model = gen_model(&mut rng, &opts, n_trees, average, !v5);
    let doubles = rng.chance(0.5);
    if !doubles {
        round_model(&mut model);
    }
    let (attrs, covers, op) = if v5 {
        let (a, c) = to_v5(&model, doubles);
        (a, c, "TreeEnsemble")
    } else {
        let o = V1Opts { classifier, doubles, shuffle: form == 1, hitrates: true };
        let (a, c) = to_v1(&model, &mut rng, &o);
        (a, c, if classifier { "TreeEnsembleClassifier" } else { "TreeEnsembleRegressor" })
    };
    let ens = attrs.parse(op).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
    let label = format!(
        "seed {seed} op {op} doubles {doubles} features {n_features} targets {n_targets} trees {n_trees} average {average}"
    );
    Case { model, ens, covers, label }
}

#[test]
fn predict_raw_matches_independent_evaluator() {
    for seed in 0..1000 {
        let c = random_case(seed, 8);
        let mut rng = Rng::new(seed ^ 0xABCD);
        let rows = gen_rows(&mut rng, 20, c.model.n_features);
        let mut out = vec![0.0; c.model.n_targets];
        for x in rows.chunks_exact(c.model.n_features) {
            c.ens.predict_raw(x, &mut out).unwrap();
            for (t, want) in margin(&c.model, x).into_iter().enumerate() {
                assert_close(out[t], want, &format!("{} target {t}", c.label));
            }
        }
    }
}

#[test]
fn interventional_matches_brute_force() {
    let mut nonzero = 0;
    for seed in 0..800 {
        let c = random_case(seed, if seed % 10 == 0 { 10 } else { 7 });
        let (nf, nt) = (c.model.n_features, c.model.n_targets);
        let mut rng = Rng::new(seed ^ 0x1234);
        let rows = gen_rows(&mut rng, 3, nf);
        let nb = 1 + rng.below(5);
        let bg = gen_rows(&mut rng, nb, nf);
        let got = interventional_shap(&c.ens, &rows, &bg, nf, 1 + (seed as usize % 3), NEVER).unwrap();

        let mut mean_bg = vec![0.0; nt];
        for b in bg.chunks_exact(nf) {
            for (m, v) in mean_bg.iter_mut().zip(margin(&c.model, b)) {
                *m += v / nb as f64;
            }
        }
        for t in 0..nt {
            assert_close(got.expected_value[t], mean_bg[t], &format!("{} expected value", c.label));
        }
        for (r, x) in rows.chunks_exact(nf).enumerate() {
            let v = game_table(nf, |s| interventional_game(&c.model, x, &bg, s));
            let want = brute_shapley(nf, nt, &v);
            let fx = margin(&c.model, x);
            for t in 0..nt {
                let mut sum = 0.0;
                for (i, want_i) in want.iter().enumerate() {
                    assert_close(got.get(r, i, t), want_i[t], &format!("{} row {r} feature {i} target {t}", c.label));
                    sum += got.get(r, i, t);
                    nonzero += (want_i[t].abs() > 1e-6) as usize;
                }
                assert_close(sum + got.expected_value[t], fx[t], &format!("{} efficiency row {r} target {t}", c.label));
            }
        }
    }
    // The comparison is not vacuous.
    assert!(nonzero > 500, "only {nonzero} non-zero reference values");
}

/// Background sets spanning several 128-row blocks (the interventional explainer's unit of work).
#[test]
fn interventional_large_background_matches_brute_force() {
    for (seed, nb) in [(5u64, 127usize), (6, 128), (7, 129), (8, 256), (9, 300), (13, 385)] {
        let c = random_case(seed, 6);
        let (nf, nt) = (c.model.n_features, c.model.n_targets);
        let mut rng = Rng::new(seed ^ 0x5678);
        let rows = gen_rows(&mut rng, 2, nf);
        let bg = gen_rows(&mut rng, nb, nf);
        let got = interventional_shap(&c.ens, &rows, &bg, nf, 2, NEVER).unwrap();
        for (r, x) in rows.chunks_exact(nf).enumerate() {
            let v = game_table(nf, |s| interventional_game(&c.model, x, &bg, s));
            let want = brute_shapley(nf, nt, &v);
            for t in 0..nt {
                for (i, want_i) in want.iter().enumerate() {
                    assert_close(got.get(r, i, t), want_i[t], &format!("{} background {nb} row {r} feature {i}", c.label));
                }
            }
        }
    }
}

#[test]
fn path_dependent_matches_brute_force() {
    let mut nonzero = 0;
    for seed in 0..800 {
        let c = random_case(seed, if seed % 10 == 0 { 10 } else { 7 });
        let (nf, nt) = (c.model.n_features, c.model.n_targets);
        let mut rng = Rng::new(seed ^ 0x5678);
        let rows = gen_rows(&mut rng, 4, nf);
        let got = path_dependent_shap(&c.ens, &c.covers, &rows, nf, 2, NEVER).unwrap();
        let empty = cover_game(&c.model, &rows[..nf], 0);
        for t in 0..nt {
            assert_close(got.expected_value[t], empty[t], &format!("{} E_cover", c.label));
        }
        for (r, x) in rows.chunks_exact(nf).enumerate() {
            let v = game_table(nf, |s| cover_game(&c.model, x, s));
            let want = brute_shapley(nf, nt, &v);
            let fx = margin(&c.model, x);
            for t in 0..nt {
                let mut sum = 0.0;
                for (i, want_i) in want.iter().enumerate() {
                    assert_close(got.get(r, i, t), want_i[t], &format!("{} row {r} feature {i} target {t}", c.label));
                    sum += got.get(r, i, t);
                    nonzero += (want_i[t].abs() > 1e-6) as usize;
                }
                assert_close(sum + got.expected_value[t], fx[t], &format!("{} efficiency row {r} target {t}", c.label));
            }
        }
    }
    assert!(nonzero > 500, "only {nonzero} non-zero reference values");
}

#[test]
fn path_dependent_with_hitrates_and_row_covers() {
    for seed in 0..60 {
        let c = random_case(seed, 6);
        let nf = c.model.n_features;
        match c.ens.kind() {
            OpKind::TreeEnsemble => assert!(c.ens.hitrate_covers().is_none()),
            // Hit rates travel as f32 attributes.
            _ => assert_eq!(
                c.ens.hitrate_covers().unwrap(),
                c.covers.iter().map(|&v| v as f32 as f64).collect::<Vec<_>>(),
                "{}",
                c.label
            ),
        }
        // Covers counted from rows, against a test-side count over the same rows.
        let mut rng = Rng::new(seed ^ 0x9999);
        let data = gen_rows(&mut rng, 25, nf);
        let counted = c.ens.covers_from_rows(&data, nf).unwrap();
        let mut model = c.model.clone();
        for tree in &mut model.trees {
            for node in &mut tree.nodes {
                node.cover = 0.0;
            }
            for x in data.chunks_exact(nf) {
                let mut i = 0;
                loop {
                    tree.nodes[i].cover += 1.0;
                    match &tree.nodes[i].kind {
                        TKind::Leaf(_) => break,
                        TKind::Branch { feature, threshold, mode, members, missing_true, t, f } => {
                            i = if branch_true(*mode, *threshold, members, *missing_true, x[*feature]) { *t } else { *f };
                        }
                    }
                }
            }
        }
        // Expected value with row covers is the plain mean of f over those rows (consistent covers).
        let ev = expected_value_cover(&c.ens, &counted).unwrap();
        for t in 0..model.n_targets {
            let mean: f64 = data.chunks_exact(nf).map(|x| margin(&model, x)[t]).sum::<f64>() / 25.0;
            assert_close(ev[t], mean, &format!("{} mean over cover rows", c.label));
        }
        let rows = gen_rows(&mut rng, 2, nf);
        let got = path_dependent_shap(&c.ens, &counted, &rows, nf, 1, NEVER).unwrap();
        for (r, x) in rows.chunks_exact(nf).enumerate() {
            let v = game_table(nf, |s| cover_game(&model, x, s));
            let want = brute_shapley(nf, model.n_targets, &v);
            for (i, want_i) in want.iter().enumerate() {
                for (t, w) in want_i.iter().enumerate() {
                    assert_close(got.get(r, i, t), *w, &format!("{} row covers row {r} feature {i}", c.label));
                }
            }
        }
    }
}

#[test]
fn interactions_match_brute_force() {
    for seed in 0..400 {
        let c = random_case(seed, 6);
        let (nf, nt) = (c.model.n_features, c.model.n_targets);
        if nf < 2 {
            continue;
        }
        let mut rng = Rng::new(seed ^ 0x4242);
        let rows = gen_rows(&mut rng, 2, nf);
        let got = path_dependent_interactions(&c.ens, &c.covers, &rows, nf, 2, NEVER).unwrap();
        let phi = path_dependent_shap(&c.ens, &c.covers, &rows, nf, 1, NEVER).unwrap();
        for (r, x) in rows.chunks_exact(nf).enumerate() {
            let v = game_table(nf, |s| cover_game(&c.model, x, s));
            let want = brute_interactions(nf, nt, &v);
            for i in 0..nf {
                for t in 0..nt {
                    let mut row_sum = 0.0;
                    for j in 0..nf {
                        let g = got.get(r, i, j, t);
                        assert_close(g, want[i][j][t], &format!("{} row {r} Φ[{i}][{j}] target {t}", c.label));
                        assert_close(g, got.get(r, j, i, t), &format!("{} symmetry", c.label));
                        row_sum += g;
                    }
                    assert_close(row_sum, phi.get(r, i, t), &format!("{} row sum = φ", c.label));
                }
            }
        }
    }
}

#[test]
fn threads_do_not_change_results() {
    let c = random_case(7, 8);
    let nf = c.model.n_features;
    let mut rng = Rng::new(77);
    let rows = gen_rows(&mut rng, 37, nf);
    let bg = gen_rows(&mut rng, 5, nf);
    let a = interventional_shap(&c.ens, &rows, &bg, nf, 1, NEVER).unwrap();
    let b = interventional_shap(&c.ens, &rows, &bg, nf, 4, NEVER).unwrap();
    let z = interventional_shap(&c.ens, &rows, &bg, nf, 0, NEVER).unwrap();
    assert_eq!(a, b);
    assert_eq!(a, z);
    let p1 = path_dependent_shap(&c.ens, &c.covers, &rows, nf, 1, NEVER).unwrap();
    let p5 = path_dependent_shap(&c.ens, &c.covers, &rows, nf, 5, NEVER).unwrap();
    assert_eq!(p1, p5);
}

#[test]
fn wider_rows_than_the_model_reads_get_zero_attribution() {
    let c = random_case(11, 4);
    let nf = c.model.n_features;
    let wide = nf + 3;
    let mut rng = Rng::new(5);
    let narrow_rows = gen_rows(&mut rng, 2, nf);
    let narrow_bg = gen_rows(&mut rng, 3, nf);
    let widen =
        |d: &[f32]| -> Vec<f32> { d.chunks_exact(nf).flat_map(|r| r.iter().copied().chain([9.0, f32::NAN, -3.0])).collect() };
    let a = interventional_shap(&c.ens, &narrow_rows, &narrow_bg, nf, 1, NEVER).unwrap();
    let b = interventional_shap(&c.ens, &widen(&narrow_rows), &widen(&narrow_bg), wide, 1, NEVER).unwrap();
    for r in 0..2 {
        for t in 0..c.model.n_targets {
            for i in 0..nf {
                assert_eq!(a.get(r, i, t), b.get(r, i, t));
            }
            for i in nf..wide {
                assert_eq!(b.get(r, i, t), 0.0);
            }
        }
    }
}

#[test]
fn cancellation_is_honoured() {
    let c = random_case(3, 6);
    let nf = c.model.n_features;
    let mut rng = Rng::new(1);
    let rows = gen_rows(&mut rng, 50, nf);
    let bg = gen_rows(&mut rng, 10, nf);
    let always: &(dyn Fn() -> bool + Sync) = &|| true;
    assert_eq!(interventional_shap(&c.ens, &rows, &bg, nf, 2, always), Err(TreeError::Cancelled));
    assert_eq!(path_dependent_shap(&c.ens, &c.covers, &rows, nf, 2, always), Err(TreeError::Cancelled));
    assert_eq!(path_dependent_interactions(&c.ens, &c.covers, &rows, nf, 2, always).map(|_| ()), Err(TreeError::Cancelled));
    // Cancelled part-way: after some polls.
    let polls = std::sync::atomic::AtomicUsize::new(0);
    let later = || polls.fetch_add(1, std::sync::atomic::Ordering::Relaxed) > 30;
    assert_eq!(interventional_shap(&c.ens, &rows, &bg, nf, 3, &later), Err(TreeError::Cancelled));
    // The interventional explainer polls once per (row, tree, block of 128 background rows) at least.
    let count = std::sync::atomic::AtomicUsize::new(0);
    let counting = || {
        count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        false
    };
    interventional_shap(&c.ens, &rows, &bg, nf, 2, &counting).unwrap();
    assert!(count.load(std::sync::atomic::Ordering::Relaxed) >= 50 * c.ens.n_trees());
}

/// Timing smoke test (not a benchmark): `cargo test -p explaind-tree-shap --release -- --ignored --nocapture`.
#[test]
#[ignore]
fn timing_smoke() {
    let mut rng = Rng::new(99);
    let o = GenOpts { max_depth: 8, n_features: 32, n_targets: 1, multi_vote: false, allow_member: false, branch_root: true };
    let model = gen_model(&mut rng, &o, 200, false, true);
    let (a, covers) = to_v1(&model, &mut rng, &V1Opts { classifier: false, doubles: true, shuffle: false, hitrates: true });
    let ens = a.parse("TreeEnsembleRegressor").unwrap();
    let rows = gen_rows(&mut rng, 200, 32);
    let bg = gen_rows(&mut rng, 100, 32);
    let t = std::time::Instant::now();
    let s = interventional_shap(&ens, &rows, &bg, 32, 0, NEVER).unwrap();
    println!("interventional: 200 rows x 100 background x {} nodes: {:?}", ens.nodes().len(), t.elapsed());
    let t = std::time::Instant::now();
    let p = path_dependent_shap(&ens, &covers, &rows, 32, 0, NEVER).unwrap();
    println!("path-dependent: 200 rows: {:?}", t.elapsed());
    let t = std::time::Instant::now();
    path_dependent_interactions(&ens, &covers, &rows[..10 * 32], 32, 0, NEVER).unwrap();
    println!("interactions: 10 rows: {:?}", t.elapsed());
    for r in 0..200 {
        let fx = margin(&model, &rows[r * 32..(r + 1) * 32])[0];
        let (si, sp): (f64, f64) = ((0..32).map(|i| s.get(r, i, 0)).sum(), (0..32).map(|i| p.get(r, i, 0)).sum());
        assert_close(si + s.expected_value[0], fx, "interventional efficiency");
        assert!((sp + p.expected_value[0] - fx).abs() < 1e-8 * fx.abs().max(1.0), "path-dependent efficiency");
    }
}
