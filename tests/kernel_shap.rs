//! Kernel SHAP through gRPC. The reference is brute force computed here, independently of the
//! plugin: every coalition × background row goes through the model by `Predict`, and the
//! Shapley values come from the subset formula. Efficiency, sampling error against the budget,
//! seeds, feature groups on the digits CNN, and parameter errors.
mod common;

use common::*;
use explaind::proto;
use ndarray::{ArrayD, Axis, IxDyn, s};
use std::collections::HashMap;
use tonic::Code;

fn int(v: i64) -> proto::ParamValue {
    proto::ParamValue { kind: Some(proto::param_value::Kind::Integer(v)) }
}

fn all_targets() -> Option<proto::Targets> {
    Some(proto::Targets { selection: Some(proto::targets::Selection::All(proto::AllOutputs {})) })
}

fn extra(response: &proto::ExplainResponse, name: &str) -> Vec<f32> {
    floats(response.extras.iter().find(|e| e.name == name).and_then(|e| e.tensor.as_ref()).unwrap())
}

fn output(response: &proto::ExplainResponse, name: &str) -> Vec<f32> {
    floats(response.outputs.iter().find(|o| o.name == name).unwrap().tensor.as_ref().unwrap())
}

fn request(
    model_name: &str,
    output: &str,
    x: &ArrayD<f32>,
    background: &ArrayD<f32>,
    targets: Option<proto::Targets>,
    params: &[(&str, proto::ParamValue)],
) -> proto::ExplainRequest {
    proto::ExplainRequest {
        model: model(model_name),
        explainer: "kernel-shap".into(),
        inputs: vec![named("", x)],
        targets,
        output: output.into(),
        parameters: params.iter().map(|(k, v)| (k.to_string(), v.clone())).collect::<HashMap<_, _>>(),
        background: vec![named("", background)],
        // Fields added to the API later keep their defaults.
        ..Default::default()
    }
}

/// Wine inputs and a small background (8 rows keeps the brute force at 2^13 × 8 rows).
fn wine() -> (ArrayD<f32>, ArrayD<f32>) {
    let samples = read_npy("models/wine-mlp/1/samples.npy");
    let background = read_npy("models/wine-mlp/1/background.npy");
    (samples.slice(s![0..2, ..]).to_owned().into_dyn(), background.slice(s![0..8, ..]).to_owned().into_dyn())
}

/// Exact interventional Shapley values of `x` (one row of M features) for every output of
/// `output`, over `background`: v(S) = mean_k f(x on S, b_k elsewhere), by brute force.
/// Returns ([M, outputs] values, E f per output).
async fn brute_force(server: &TestServer, output: &str, x: &[f32], background: &ArrayD<f32>) -> (Vec<Vec<f64>>, Vec<f64>) {
    let m = x.len();
    let k = background.len_of(Axis(0));
    let subsets = 1usize << m;
    let mut rows = Vec::with_capacity(subsets * k * m);
    for subset in 0..subsets {
        for b in background.axis_iter(Axis(0)) {
            for (j, &bj) in b.iter().enumerate() {
                rows.push(if subset >> j & 1 == 1 { x[j] } else { bj });
            }
        }
    }
    let mut client = server.models().await;
    let mut outs = Vec::new();
    let per_call = 4096 / k * k; // within the server's rows-per-request limit
    for chunk in rows.chunks(per_call * m) {
        let array = ArrayD::from_shape_vec(IxDyn(&[chunk.len() / m, m]), chunk.to_vec()).unwrap();
        let response = client
            .predict(proto::PredictRequest { model: model("wine-mlp"), inputs: vec![named("", &array)] })
            .await
            .unwrap()
            .into_inner();
        let o = response.outputs.iter().find(|o| o.name == output).unwrap();
        outs.extend(floats(o.tensor.as_ref().unwrap()));
    }
    let d = outs.len() / (subsets * k);
    let mut v = vec![vec![0f64; d]; subsets];
    for subset in 0..subsets {
        for b in 0..k {
            for t in 0..d {
                v[subset][t] += outs[(subset * k + b) * d + t] as f64 / k as f64;
            }
        }
    }
    let factorial = |n: usize| (1..=n).fold(1f64, |a, i| a * i as f64);
    let mut phi = vec![vec![0f64; d]; m];
    for (i, phi_i) in phi.iter_mut().enumerate() {
        for subset in 0..subsets {
            if subset >> i & 1 == 1 {
                continue;
            }
            let size = subset.count_ones() as usize;
            let w = factorial(size) * factorial(m - size - 1) / factorial(m);
            for t in 0..d {
                phi_i[t] += w * (v[subset | 1 << i][t] - v[subset][t]);
            }
        }
    }
    (phi, v[0].clone())
}

fn sum_rows(values: &[f32], row_len: usize) -> Vec<f64> {
    values.chunks(row_len).map(|c| c.iter().map(|&v| v as f64).sum()).collect()
}

#[tokio::test]
async fn full_budget_equals_brute_force_shapley_values_on_wine() {
    let server = TestServer::start(Default::default(), &[]).await;
    let mut client = server.explainer().await;
    let (x, background) = wine();
    // 2^13 − 2 coalitions: every one is enumerated.
    let req = request("wine-mlp", "probabilities", &x, &background, all_targets(), &[("nsamples", int(1 << 13))]);
    let response = client.explain(req).await.unwrap().into_inner();
    let values = floats(response.attributions[0].values.as_ref().unwrap());
    assert_eq!(response.attributions[0].values.as_ref().unwrap().shape, vec![2, 3, 13]);
    assert_eq!(response.info["coalitions"], "8190,8190");
    assert_eq!(response.info["enumerated_coalitions"], "8190,8190");
    let base = floats(response.base_values.as_ref().unwrap());
    let outputs = output(&response, "probabilities");
    for n in 0..2 {
        let row: Vec<f32> = x.slice(s![n, ..]).iter().copied().collect();
        let (exact, e_f) = brute_force(&server, "probabilities", &row, &background).await;
        for t in 0..3 {
            let got = &values[(n * 3 + t) * 13..(n * 3 + t + 1) * 13];
            let want: Vec<f32> = exact.iter().map(|p| p[t] as f32).collect();
            assert_close(got, &want, 1e-5, 0.0);
            assert!((base[n * 3 + t] as f64 - e_f[t]).abs() < 1e-6);
        }
    }
    // Efficiency, exactly: Σφ = f(x) − E f, and the plugin's residual says the same.
    for (k, sum) in sum_rows(&values, 13).iter().enumerate() {
        assert!((sum - (outputs[k] as f64 - base[k] as f64)).abs() < 2e-6, "target {k}: {sum}");
    }
    assert!(extra(&response, "completeness_residual").iter().all(|r| r.abs() < 1e-6));
    // No sampling, so no sampling error.
    assert!(extra(&response, "standard_errors").iter().all(|&e| e == 0.0));
}

#[tokio::test]
async fn sampling_error_shrinks_as_the_budget_grows_and_efficiency_always_holds() {
    let server = TestServer::start(Default::default(), &[]).await;
    let mut client = server.explainer().await;
    let (x, background) = wine();
    let x = x.slice(s![0..1, ..]).to_owned().into_dyn();
    let row: Vec<f32> = x.iter().copied().collect();
    let (exact, _) = brute_force(&server, "probabilities", &row, &background).await;
    let targets = indices(&[0, 1, 2]);

    let mut rms = Vec::new();
    let mut mean_se = Vec::new();
    for budget in [60, 400, 3000] {
        let (mut sq, mut count, mut se_sum) = (0f64, 0usize, 0f64);
        for seed in 0..6 {
            let params = [("nsamples", int(budget)), ("seed", int(seed))];
            let req = request("wine-mlp", "probabilities", &x, &background, targets.clone(), &params);
            let response = client.explain(req).await.unwrap().into_inner();
            let values = floats(response.attributions[0].values.as_ref().unwrap());
            let base = floats(response.base_values.as_ref().unwrap());
            let outputs = output(&response, "probabilities");
            for t in 0..3 {
                let sum: f64 = values[t * 13..(t + 1) * 13].iter().map(|&v| v as f64).sum();
                assert!((sum - (outputs[t] - base[t]) as f64).abs() < 2e-6, "efficiency, budget {budget}");
                for j in 0..13 {
                    sq += (values[t * 13 + j] as f64 - exact[j][t]).powi(2);
                    count += 1;
                }
            }
            se_sum += extra(&response, "standard_errors").iter().map(|&e| e as f64).sum::<f64>();
        }
        rms.push((sq / count as f64).sqrt());
        mean_se.push(se_sum / count as f64);
    }
    assert!(rms[0] > rms[1] && rms[1] > rms[2], "RMS error vs exact by budget 60/400/3000: {rms:?}");
    assert!(rms[2] < rms[0] / 4.0, "{rms:?}");
    // The reported standard errors shrink too, and are of the size of the real error.
    assert!(mean_se[0] > mean_se[1] && mean_se[1] > mean_se[2], "{mean_se:?}");
    for (r, e) in rms.iter().zip(&mean_se) {
        assert!(*e > r / 10.0 && *e < r * 10.0, "standard error {e} vs RMS error {r}");
    }
}

#[tokio::test]
async fn efficiency_holds_with_logit_link_and_feature_selection() {
    let server = TestServer::start(Default::default(), &[]).await;
    let mut client = server.explainer().await;
    let (x, background) = wine();
    let logit = |p: f64| (p / (1.0 - p)).ln();
    let req =
        request("wine-mlp", "probabilities", &x, &background, all_targets(), &[("link", text("logit")), ("nsamples", int(300))]);
    let response = client.explain(req).await.unwrap().into_inner();
    let values = floats(response.attributions[0].values.as_ref().unwrap());
    let base = floats(response.base_values.as_ref().unwrap());
    let outputs = output(&response, "probabilities");
    let (_, e_f) = brute_force(&server, "probabilities", &x.iter().take(13).copied().collect::<Vec<_>>(), &background).await;
    for t in 0..3 {
        assert!((base[t] as f64 - logit(e_f[t])).abs() < 1e-4, "base value is logit(E f), not E logit(f)");
    }
    for (k, sum) in sum_rows(&values, 13).iter().enumerate() {
        let gap = logit(outputs[k] as f64) - base[k] as f64;
        assert!((sum - gap).abs() < 1e-5 * gap.abs().max(1.0), "logit link, target {k}: {sum} vs {gap}");
    }

    let req = request("wine-mlp", "probabilities", &x, &background, all_targets(), &[("num_features", int(4))]);
    let response = client.explain(req).await.unwrap().into_inner();
    let values = floats(response.attributions[0].values.as_ref().unwrap());
    let base = floats(response.base_values.as_ref().unwrap());
    let outputs = output(&response, "probabilities");
    for (k, chunk) in values.chunks(13).enumerate() {
        assert!(chunk.iter().filter(|v| **v != 0.0).count() <= 4, "num_features=4 keeps at most 4: {chunk:?}");
        let sum: f64 = chunk.iter().map(|&v| v as f64).sum();
        assert!((sum - (outputs[k] - base[k]) as f64).abs() < 2e-6);
    }
}

#[tokio::test]
async fn same_seed_same_values_and_a_different_seed_differs() {
    let server = TestServer::start(Default::default(), &[]).await;
    let mut client = server.explainer().await;
    let (x, background) = wine();
    let run = |seed: i64| request("wine-mlp", "logits", &x, &background, None, &[("seed", int(seed)), ("nsamples", int(500))]);
    let a = client.explain(run(5)).await.unwrap().into_inner();
    let b = client.explain(run(5)).await.unwrap().into_inner();
    let c = client.explain(run(6)).await.unwrap().into_inner();
    let values = |r: &proto::ExplainResponse| floats(r.attributions[0].values.as_ref().unwrap());
    assert_eq!(values(&a), values(&b));
    assert_ne!(values(&a), values(&c));
    // Batches of 7 rows (many forward calls) give the same values as the default batches.
    let mut small = run(5);
    small.parameters.insert("batch_rows".into(), int(7));
    let d = client.explain(small).await.unwrap().into_inner();
    assert_close(&values(&d), &values(&a), 1e-5, 1e-5);
    assert!(d.timing.unwrap().model_calls > a.timing.unwrap().model_calls);
}

#[tokio::test]
async fn patches_on_the_digits_cnn_are_efficient_and_a_constant_patch_gets_zero() {
    let server = TestServer::start(Default::default(), &[]).await;
    let mut client = server.explainer().await;
    let samples = read_npy("models/digits-cnn/1/samples.npy");
    let x = samples.slice(s![0..2, .., .., ..]).to_owned().into_dyn();
    // Background rows whose 2×2 patch `g` equals the first input's there: that patch does
    // not vary for input 0 (φ = 0, left out of M), but does for input 1 (which differs there).
    let g = (0..16)
        .find(|g| {
            let (r, c) = (g / 4 * 2, g % 4 * 2);
            [(r, c), (r, c + 1), (r + 1, c), (r + 1, c + 1)]
                .iter()
                .any(|&(i, j)| x[[0, 0, i, j]] != x[[1, 0, i, j]] && x[[0, 0, i, j]] != 0.0)
        })
        .unwrap();
    let (gr, gc) = (g / 4 * 2, g % 4 * 2);
    let patch_pixels = [gr * 8 + gc, gr * 8 + gc + 1, (gr + 1) * 8 + gc, (gr + 1) * 8 + gc + 1];
    let original = read_npy("models/digits-cnn/1/background.npy").slice(s![0..20, .., .., ..]).to_owned();
    let mut background = original.clone();
    for mut b in background.axis_iter_mut(Axis(0)) {
        for (i, j) in [(gr, gc), (gr, gc + 1), (gr + 1, gc), (gr + 1, gc + 1)] {
            b[[0, i, j]] = x[[0, 0, i, j]];
        }
    }
    let background = background.into_dyn();
    let req = request("digits-cnn", "logits", &x, &background, None, &[("patch", integers(&[2, 2]))]);
    let response = client.explain(req).await.unwrap().into_inner();
    let values = floats(response.attributions[0].values.as_ref().unwrap());
    assert_eq!(response.attributions[0].values.as_ref().unwrap().shape, vec![2, 1, 1, 8, 8]);
    let groups = extra(&response, "group_values");
    assert_eq!(groups.len(), 2 * 16);
    assert_eq!(groups[g], 0.0, "the patch that equals every background row gets 0");
    assert_ne!(groups[16 + g], 0.0, "the same patch varies for the other input");
    for p in patch_pixels {
        assert_eq!(values[p], 0.0);
    }
    assert_eq!(response.info["groups"], "16");
    let varying =
        |r: &proto::ExplainResponse| -> Vec<usize> { r.info["varying_groups"].split(',').map(|v| v.parse().unwrap()).collect() };
    let unmodified = client
        .explain(request("digits-cnn", "logits", &x, &original.into_dyn(), None, &[("patch", integers(&[2, 2]))]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(varying(&response)[0] + 1, varying(&unmodified)[0], "one patch fewer varies for input 0");
    // Each element carries its patch's value spread evenly: 4 equal elements per patch.
    for g in 0..16 {
        let (r, c) = (g / 4 * 2, g % 4 * 2);
        for n in 0..2 {
            let v = values[n * 64 + r * 8 + c];
            assert!((v * 4.0 - groups[n * 16 + g]).abs() < 1e-5);
            assert_eq!(values[n * 64 + (r + 1) * 8 + c + 1], v);
        }
    }
    // Efficiency at element level.
    let base = floats(response.base_values.as_ref().unwrap());
    let targets = ints(response.target_indices.as_ref().unwrap());
    let outputs = output(&response, "logits");
    for (n, sum) in sum_rows(&values, 64).iter().enumerate() {
        let gap = outputs[n * 10 + targets[n] as usize] as f64 - base[n] as f64;
        assert!((sum - gap).abs() < 1e-4 * gap.abs().max(1.0), "input {n}: Σφ {sum} vs {gap}");
    }
    // A mask with the same grid gives the same answer as `patch`.
    let mask: Vec<i64> = (0..64).map(|e| (e / 8 / 2 * 4 + e % 8 / 2) as i64).collect();
    let req = request("digits-cnn", "logits", &x, &background, None, &[("mask", integers(&mask))]);
    let masked = client.explain(req).await.unwrap().into_inner();
    assert_eq!(floats(masked.attributions[0].values.as_ref().unwrap()), values);
}

#[tokio::test]
async fn bad_parameters_are_invalid_argument_naming_the_parameter() {
    let server = TestServer::start(Default::default(), &[]).await;
    let mut client = server.explainer().await;
    let (x, background) = wine();
    let cases: Vec<(Vec<(&str, proto::ParamValue)>, &str)> = vec![
        (vec![("nsamples", int(0))], "parameters.nsamples"),
        (vec![("mask", integers(&[0, 1, 2]))], "parameters.mask"),
        (vec![("link", text("probit"))], "parameters.link"),
        (vec![("patch", integers(&[14]))], "parameters.patch"),
        (vec![("num_features", int(0))], "parameters.num_features"),
        (vec![("mask", integers(&[0; 13])), ("patch", integers(&[2]))], "parameters.patch"),
    ];
    for (params, name) in cases {
        let err = client.explain(request("wine-mlp", "probabilities", &x, &background, None, &params)).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "{name}: {err:?}");
        assert!(err.message().contains(name), "{name}: {}", err.message());
    }
    // Logit on raw logits (not probabilities) is refused the same way.
    let err = client.explain(request("wine-mlp", "logits", &x, &background, None, &[("link", text("logit"))])).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("parameters.link"), "{}", err.message());
}
