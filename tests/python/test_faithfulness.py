"""Faithfulness metrics on explanations (`evaluate`), against an independent implementation:
NumPy for the arithmetic and onnxruntime's Python API for the model, given the same
perturbations (the daemon returns them on request). The wine MLP, Deep SHAP over its default
background, every target.

- completeness: Σφ − (f(x) − base) from the returned attributions and base values;
- infidelity: captum's definition with its default `multiply_by_inputs` perturbation
  (I = ε / x) and without it, plain and normalized;
- deletion and insertion: the curves rebuilt by ranking |φ| and moving features to or from the
  baseline, and their areas;
- sensitivity_max: the explanations of the returned perturbed inputs, asked for separately;
- rank_agreement: Spearman's correlation and the top-k overlap with another explainer's
  attributions, asked for separately;
- infidelity and sensitivity_max agree with captum's own functions to 1e-4, given the same
  explanation and perturbations (tests/data/metrics, made by scripts/fixtures/make_metric_fixtures.py);
- with a figure asked for, deletion and insertion come with their curves drawn;
- the figures repeat bit for bit under the returned seed, and bad metric names and parameters
  are INVALID_ARGUMENT naming them; the audit record carries the figures.
"""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
from explaind_py import Client, ExplaindError

import daemon_proc
from paths import DATA_DIR, MODELS_DIR

MODEL = "wine-mlp"
X = np.load(MODELS_DIR / MODEL / "1" / "samples.npy").astype(np.float32)[:3]


@pytest.fixture(scope="module")
def session():
    return ort.InferenceSession(str(MODELS_DIR / MODEL / "1" / "model.onnx"), providers=["CPUExecutionProvider"])


def logits(session, rows: np.ndarray) -> np.ndarray:
    return session.run(["logits"], {"features": rows.astype(np.float32)})[0].astype(np.float64)


def explain(py, **evaluate_kwargs):
    return py.explain(MODEL, X, "deep-shap", targets="all", **evaluate_kwargs)


def test_completeness_is_the_sum_rule_residual(py, session):
    e = explain(py, evaluate=["completeness"])
    m = e.evaluation["completeness"]
    fx = logits(session, X)
    expected = e.values.astype(np.float64).sum(axis=2) - (np.take_along_axis(fx, e.target_indices, 1) - e.base_values)
    np.testing.assert_allclose(m.values, expected, rtol=0, atol=1e-5)
    # Deep SHAP reports the same residual itself.
    np.testing.assert_allclose(m.values, e.extras["completeness_residual"], rtol=0, atol=1e-5)
    assert m.parameters == {"baseline": 0.0}


@pytest.mark.parametrize("multiply, normalize", [(True, False), (True, True), (False, False)])
def test_infidelity_matches_numpy_and_onnxruntime_on_the_same_perturbations(py, session, multiply, normalize):
    params = {"samples": 16, "noise_scale": 0.05, "normalize": normalize, "multiply_by_inputs": multiply,
              "return_perturbations": True}
    e = explain(py, evaluate={"infidelity": params})
    m = e.evaluation["infidelity"]
    eps = m.extras["perturbations"].astype(np.float64)  # [N, samples, 13]
    assert eps.shape == (3, 16, 13)
    fx = logits(session, X)
    expected = np.zeros(e.target_indices.shape)
    for n in range(3):
        perturbed = logits(session, X[n] - eps[n])  # f(x − ε), [samples, 3]
        if multiply:
            span = X[n].astype(np.float64)
            i_eff = eps[n] / np.where(span != 0, span, 1.0)  # captum's safe_div
        else:
            i_eff = eps[n]
        for t, target in enumerate(e.target_indices[n]):
            dots = i_eff @ e.values[n, t].astype(np.float64)
            deltas = fx[n, target] - perturbed[:, target]
            beta = (dots @ deltas) / (dots @ dots) if normalize else 1.0
            expected[n, t] = np.mean((beta * dots - deltas) ** 2)
    np.testing.assert_allclose(m.values, expected, rtol=1e-3, atol=1e-7)
    assert m.parameters == {**params, "baseline": 0.0}


@pytest.mark.parametrize("name", ["deletion", "insertion"])
def test_deletion_and_insertion_curves_match_numpy_and_onnxruntime(py, session, name):
    steps = 6
    e = explain(py, evaluate={name: {"steps": steps, "baseline": 0.5}})
    m = e.evaluation[name]
    curve = m.extras["curve"]
    assert curve.shape == (3, 3, steps + 1)
    features = X.shape[1]
    for n in range(3):
        for t, target in enumerate(e.target_indices[n]):
            order = np.argsort(-np.abs(e.values[n, t]), kind="stable")
            rows = []
            for k in range(steps + 1):
                moved = order[: (k * features + steps // 2) // steps]
                row = X[n].copy() if name == "deletion" else np.full(features, 0.5, np.float32)
                row[moved] = 0.5 if name == "deletion" else X[n][moved]
                rows.append(row)
            expected = logits(session, np.stack(rows))[:, target]
            np.testing.assert_allclose(curve[n, t], expected, rtol=1e-5, atol=1e-5)
            area = np.mean((expected[:-1] + expected[1:]) / 2)
            assert abs(m.values[n, t] - area) < 1e-4, (n, t)


def test_sensitivity_max_matches_re_explaining_the_perturbed_inputs(py):
    """The daemon's figure against explanations of x + u asked for separately, with the same
    explainer, parameters and targets, and the ratio computed here."""
    e = py.explain(MODEL, X, "occlusion", window=[1], targets="all",
                   evaluate={"sensitivity_max": {"samples": 4, "radius": 0.05, "return_perturbations": True}})
    m = e.evaluation["sensitivity_max"]
    u = m.extras["perturbations"]
    assert u.shape == (3, 4, 13) and np.abs(u).max() <= 0.05
    for n in range(3):
        again = py.explain(MODEL, X[n] + u[n], "occlusion", window=[1], targets=e.target_indices[n].tolist()).values
        for t in range(3):
            phi = e.values[n, t].astype(np.float64)
            ratios = np.linalg.norm(again[:, t].astype(np.float64) - phi, axis=1) / np.linalg.norm(phi)
            assert abs(m.values[n, t] - ratios.max()) <= 1e-4 * max(ratios.max(), 1e-3), (n, t)


def rank(values: np.ndarray) -> np.ndarray:
    """Ranks from 1, ties sharing their mean rank (scipy.stats.rankdata's default)."""
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(1, len(values) + 1)
    for v in np.unique(values):
        ranks[values == v] = ranks[values == v].mean()
    return ranks


def test_rank_agreement_with_another_explainer(py):
    e = explain(py, evaluate={"rank_agreement": {"explainer": "kernel-shap", "top_k": 3}})
    m = e.evaluation["rank_agreement"]
    other = py.explain(MODEL, X, "kernel-shap", targets=[0, 1, 2]).values
    for n in range(3):
        for t in range(3):
            a, b = e.values[n, t], other[n, t]
            expected = np.corrcoef(rank(a), rank(b))[0, 1]
            assert abs(m.values[n, t] - expected) < 1e-5, (n, t)
            top = lambda v: set(np.argsort(-np.abs(v), kind="stable")[:3])
            assert m.extras["top_k_overlap"][n, t] == pytest.approx(len(top(a) & top(b)) / 3)
    # Deep SHAP and Kernel SHAP estimate the same Shapley values: they agree, if not exactly.
    assert m.values.mean() > 0.5, m.values
    assert m.parameters == {"explainer": "kernel-shap", "top_k": 3}


def test_the_same_seed_gives_the_same_figures_bit_for_bit(py):
    metrics = {"infidelity": {"samples": 8, "return_perturbations": True}, "deletion": {}}
    first = explain(py, evaluate=metrics)
    assert first.evaluation_seed != 0, "the daemon draws a seed and returns it"
    again = explain(py, evaluate=metrics, evaluation_seed=first.evaluation_seed)
    assert again.evaluation_seed == first.evaluation_seed
    for name in metrics:
        assert first.evaluation[name].values.tobytes() == again.evaluation[name].values.tobytes(), name
    other = explain(py, evaluate=metrics, evaluation_seed=first.evaluation_seed + 1)
    assert other.evaluation["infidelity"].values.tobytes() != first.evaluation["infidelity"].values.tobytes()
    assert list(first.evaluation) == ["infidelity", "deletion"], "the request's order"


@pytest.mark.parametrize("evaluate, message", [
    (["fidelity"], "evaluate[0].name: no metric named \"fidelity\" (metrics: completeness, infidelity, deletion, "
                   "insertion, sensitivity_max, rank_agreement)"),
    ({"infidelity": {"samples": 0}}, "evaluate.infidelity.samples: 0 is outside [1, 10000]"),
    ({"infidelity": {"sigma": 1.0}}, "evaluate.infidelity.sigma: not a parameter of infidelity"),
    ({"deletion": {"steps": 2.5}}, "evaluate.deletion.steps: expected an integer"),
    ({"deletion": {"steps": "ten"}}, "evaluate.deletion.steps: expected an integer"),
    ({"deletion": {"steps": [1, 2]}}, "evaluate[0].parameters.steps: a number, integer, flag or text"),
    ({"rank_agreement": {}}, "evaluate.rank_agreement.explainer: required"),
    (["deletion", "deletion"], "evaluate[1].name: deletion is asked for twice"),
])
def test_bad_metrics_are_invalid_argument_naming_them(py, evaluate, message):
    with pytest.raises(ExplaindError) as err:
        explain(py, evaluate=evaluate)
    assert err.value.code == "INVALID_ARGUMENT", err.value
    assert err.value.message.startswith(message), err.value.message


def test_metrics_over_the_row_budget_are_refused_before_they_run(tmp_path):
    d = daemon_proc.start(["serve", "--listen", "127.0.0.1:0", "--models", str(MODELS_DIR), "--device", "cpu",
                           "--max-model-rows-per-request", "20000"], tmp_path / "log")
    try:
        with Client(d.address, timeout=60) as c:
            with pytest.raises(ExplaindError) as err:
                c.explain(MODEL, X, "occlusion", window=[1], evaluate={"infidelity": {"samples": 10000}})
        assert err.value.code == "RESOURCE_EXHAUSTED", err.value
        assert err.value.message.startswith("evaluate.infidelity: the metrics would need 30000 more model rows"), err.value
    finally:
        assert d.stop() == 0


def test_metrics_over_the_memory_budget_are_refused_before_they_allocate(tmp_path):
    # 3 rows x 10000 samples x 13 features x 8 bytes = 3.12 MB of perturbed inputs and noise.
    d = daemon_proc.start(["serve", "--listen", "127.0.0.1:0", "--models", str(MODELS_DIR), "--device", "cpu",
                           "--max-request-bytes", "1000000"], tmp_path / "log")
    try:
        with Client(d.address, timeout=60) as c:
            with pytest.raises(ExplaindError) as err:
                c.explain(MODEL, X, "occlusion", window=[1], evaluate={"infidelity": {"samples": 10000}})
            assert err.value.code == "RESOURCE_EXHAUSTED", err.value
            assert err.value.message.startswith("evaluate.infidelity: would hold about 3120000 bytes"), err.value
            # Within the budget, the same request runs.
            c.explain(MODEL, X, "occlusion", window=[1], evaluate={"infidelity": {"samples": 100}})
    finally:
        assert d.stop() == 0


def test_the_audit_record_carries_the_metrics(tmp_path):
    key = tmp_path / "audit.key"
    daemon_proc.keygen(key)
    audit_dir = tmp_path / "audit"
    audit_dir.mkdir()
    d = daemon_proc.start(["serve", "--listen", "127.0.0.1:0", "--models", str(MODELS_DIR), "--device", "cpu",
                           "--audit-dir", str(audit_dir), "--audit-key", str(key)], tmp_path / "log")
    try:
        with Client(d.address, timeout=60) as c:
            e = c.explain(MODEL, X, "deep-shap", targets="all", evaluation_seed=99,
                          evaluate={"infidelity": {"samples": 4}, "completeness": {}})
    finally:
        assert d.stop() == 0
    records, _ = daemon_proc.audit_records(audit_dir)
    (record,) = [r for r in records if r["rpc"] == "Explain"]
    evaluation = record["evaluation"]
    assert evaluation["seed"] == 99
    assert [m["name"] for m in evaluation["metrics"]] == ["infidelity", "completeness"]
    assert evaluation["metrics"][0]["parameters"]["samples"] == 4
    np.testing.assert_array_equal(np.asarray(evaluation["metrics"][0]["values"], np.float32),
                                  e.evaluation["infidelity"].values)

    # `explaind audit find` lists the records whose metric crosses a threshold.
    def find(*flags):
        res = daemon_proc.subprocess.run([str(daemon_proc.binary()), "audit", "find", "--metric", "infidelity",
                                          *flags, str(audit_dir)], capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, res.stderr
        return [json.loads(line) for line in res.stdout.splitlines()]

    worst = float(e.evaluation["infidelity"].values.max())
    (hit,) = find("--above", str(worst / 2))
    assert (hit["seq"], hit["request_id"], hit["explainer"]) == (record["seq"], record["request_id"], "deep-shap")
    assert hit["max"] == pytest.approx(worst)
    assert find("--above", str(worst * 2)) == []


def test_infidelity_and_sensitivity_max_agree_with_captum(py):
    """captum's own `infidelity` and `sensitivity_max`, given explaind's explanation and
    perturbations (scripts/fixtures/make_metric_fixtures.py wrote tests/data/metrics/wine_deep_shap.json):
    the daemon repeats its figures under the same seed, and they must be captum's."""
    reference = json.loads((DATA_DIR / "metrics" / "wine_deep_shap.json").read_text())
    x = np.load(MODELS_DIR / MODEL / "1" / "samples.npy").astype(np.float32)[: reference["rows"]]

    def figures(metric, params):
        e = py.explain(MODEL, x, reference["explainer"], targets=reference["targets"],
                       evaluation_seed=reference["seed"], evaluate={metric: params})
        return e.evaluation[metric].values

    for case in reference["infidelity"]:
        np.testing.assert_allclose(figures("infidelity", case["parameters"]), case["captum"], rtol=1e-4, atol=1e-9,
                                   err_msg=str(case["parameters"]))
    case = reference["sensitivity_max"]
    np.testing.assert_allclose(figures("sensitivity_max", case["parameters"]), case["captum"], rtol=1e-4, atol=1e-9)


def test_with_a_figure_the_curves_are_drawn_beside_it(py):
    import struct

    e = explain(py, plot=True, evaluate={"deletion": {"steps": 4}, "infidelity": {}})
    assert e.figure_png is not None
    png = e.evaluation["deletion"].figure_png
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    # One panel per input (3) and target (3).
    assert (width, height) == (3 * (56 + 220 + 20) + 20, 3 * (30 + 120 + 30) + 20), (width, height)
    assert e.evaluation["infidelity"].figure_png is None, "no curves, no figure"
    assert explain(py, evaluate=["deletion"]).evaluation["deletion"].figure_png is None, "no plot asked for"


def test_metrics_on_one_input_hold_the_others_at_each_rows_values(tmp_path):
    """A model with two float inputs (scripts/fixtures/make_two_input_fixtures.py): `image` explained,
    `meta` held. Every perturbed row must reach the model with its own row's `meta`, in the
    forward passes (infidelity, deletion) and in the re-explanations (sensitivity_max)."""
    repository = DATA_DIR / "two_inputs"
    directory = repository / "two_inputs" / "1"
    image, meta = np.load(directory / "image.npy"), np.load(directory / "meta.npy")
    session = ort.InferenceSession(str(directory / "model.onnx"), providers=["CPUExecutionProvider"])

    def model(rows: np.ndarray, held: np.ndarray) -> np.ndarray:
        return session.run(["logits"], {"image": rows.astype(np.float32), "meta": held.astype(np.float32)})[0].astype(np.float64)

    d = daemon_proc.start(["serve", "--listen", "127.0.0.1:0", "--models", str(repository), "--device", "cpu"],
                          tmp_path / "log")
    try:
        with Client(d.address, timeout=60) as c:
            inputs = {"image": image, "meta": meta}
            e = c.explain("two_inputs", inputs, "occlusion", window=[1], targets="all", explained_inputs=["image"],
                          evaluate={"infidelity": {"samples": 5, "multiply_by_inputs": False, "return_perturbations": True},
                                    "deletion": {"steps": 3},
                                    "sensitivity_max": {"samples": 2, "return_perturbations": True}})
            assert list(e.attributions) == ["image"]
            phi = e.attributions["image"]
            # sensitivity_max, from explanations of the perturbed rows with meta held.
            u = e.evaluation["sensitivity_max"].extras["perturbations"]
            for n in range(len(image)):
                again = c.explain("two_inputs", {"image": image[n] + u[n], "meta": np.repeat(meta[n:n + 1], 2, 0)},
                                  "occlusion", window=[1], targets=[0, 1, 2], explained_inputs=["image"])
                for t in range(3):
                    ratios = np.linalg.norm(again.attributions["image"][:, t] - phi[n, t], axis=1) / np.linalg.norm(phi[n, t])
                    assert abs(e.evaluation["sensitivity_max"].values[n, t] - ratios.max()) <= 1e-4 * max(ratios.max(), 1e-3)
    finally:
        assert d.stop() == 0
    fx = model(image, meta)
    eps = e.evaluation["infidelity"].extras["perturbations"]
    for n in range(len(image)):
        perturbed = model(image[n] - eps[n], np.repeat(meta[n:n + 1], 5, 0))
        for t in range(3):
            expected = np.mean((eps[n] @ phi[n, t] - (fx[n, t] - perturbed[:, t])) ** 2)
            assert abs(e.evaluation["infidelity"].values[n, t] - expected) <= 1e-4 * max(expected, 1e-6), (n, t)
        for t in range(3):
            order = np.argsort(-np.abs(phi[n, t]), kind="stable")
            rows = []
            for k in range(4):
                row = image[n].copy()
                row[order[: (k * 6 + 1) // 3]] = 0.0
                rows.append(row)
            expected = model(np.stack(rows), np.repeat(meta[n:n + 1], 4, 0))[:, t]
            np.testing.assert_allclose(e.evaluation["deletion"].extras["curve"][n, t], expected, rtol=1e-5, atol=1e-5)


def test_a_linear_models_exact_shapley_values_are_complete_and_have_no_infidelity(tmp_path):
    """The constructed perfect explanation, end to end: Kernel SHAP against a zero baseline is
    exact on a linear model (5 features: every coalition enumerated), so φ = W ⊙ x; then
    Σφ = f(x) − f(0) and Iᵀφ = f(x) − f(x − ε) for I = ε / x."""
    d = daemon_proc.start(["serve", "--listen", "127.0.0.1:0", "--models", str(DATA_DIR / "two_inputs"), "--device", "cpu"],
                          tmp_path / "log")
    try:
        x = np.load(DATA_DIR / "two_inputs" / "linear" / "1" / "x.npy")
        with Client(d.address, timeout=60) as c:
            e = c.explain("linear", x, "kernel-shap", targets="all", baseline=0.0,
                          evaluate={"completeness": {}, "infidelity": {"samples": 20}})
    finally:
        assert d.stop() == 0
    assert np.abs(e.evaluation["completeness"].values).max() < 1e-5, e.evaluation["completeness"].values
    assert np.abs(e.evaluation["infidelity"].values).max() < 1e-9, e.evaluation["infidelity"].values
