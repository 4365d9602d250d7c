#!/usr/bin/env python3
"""A tabular classifier over integer categorical codes, as users export it with skl2onnx, with
brute-force occlusion and exact Shapley references: the fixture for explaining integer-input
models that are not token models.

The model is a scikit-learn Pipeline(OneHotEncoder(handle_unknown="ignore"),
LogisticRegression(max_iter=1000)) trained on a synthetic data set (fixed seed): 5 categorical
features with CARDINALITIES categories each (codes 0 .. k_j - 1, int64), 3 classes whose labels are
the argmax of a random table of per-code class scores plus Gumbel noise. It is converted with
`skl2onnx.convert_sklearn(initial_types=[("codes", Int64TensorType([None, 5]))],
target_opset={"": 17, "ai.onnx.ml": 3}, options={id(classifier): {"zipmap": False}})`, so the graph
reads int64 codes and has two outputs: `label` (int64 [N]) and `probabilities` (float32 [N, 3]).
The graph is renamed and its opsets sorted so that reruns give identical bytes.

This writes tests/data/int_tabular/:

  model.onnx          input codes (int64 [batch, 5]); outputs label (int64 [batch]) and
                      probabilities (float32 [batch, 3])
  x.npy               int64 [4, 5]: the explained rows, from the held-out part (two without any
                      code 0, two with some: there the input equals the replacement / baseline)
  probabilities.npy   float32 [4, 3]: onnxruntime's probabilities on x
  occlusion.npy       float32 [4, 3, 5]: probabilities(x)[n, t] - probabilities(x with feature j
                      set to the replacement code 0)[n, t], one feature at a time
  shapley.npy         float64 [4, 3, 5]: exact Shapley values of the 5 features, all 2^5 = 32
                      coalitions S enumerated: v(S) = probabilities(x on S, code 0 elsewhere)[t];
                      phi_j = sum_{S without j} |S|! (M - |S| - 1)! / M! (v(S + j) - v(S)), in
                      float64 from onnxruntime's float32 outputs (CPUExecutionProvider)
  shapley_base.npy    float64 [4, 3]: v(empty set), the probabilities of the all-zero row (the
                      same for every n)
  meta.json           description, inputs and outputs, the replacement code, the cardinalities,
                      the opsets and operators, library versions, the model's sha256, the checks

Before anything is written this asserts: onnxruntime's probabilities match scikit-learn's
predict_proba within 1e-5 (on x and on every held-out row) and its labels match predict; occlusion
is exactly 0 where x already holds code 0; Shapley completeness (sum_j phi_j + base == v(full))
within 1e-9; phi is 0 (within 1e-12) where x equals the baseline; the enumeration gives an additive
game's terms back. When shap is installed, shap.KernelExplainer (the all-zero row as its one
background row, all coalitions enumerated) is checked against the exact values.

Usage (from the repository root; scripts/requirements-trees.txt pins the packages):
    python3 -m venv /tmp/tree-venv
    /tmp/tree-venv/bin/pip install -r scripts/requirements-trees.txt
    /tmp/tree-venv/bin/python scripts/make_int_tabular_fixtures.py
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np
import onnx
import onnxruntime as ort

import skl2onnx
import sklearn
from skl2onnx import convert_sklearn
from skl2onnx.common.data_types import Int64TensorType
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder

from exact_shapley import check_shapley_from_values, shapley_from_values

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "int_tabular"
SEED = 23
CARDINALITIES = (3, 5, 6, 4, 3)  # categories per feature: codes 0 .. k - 1
N_CLASSES = 3
N_TRAIN, N_HELDOUT = 600, 40
REPLACEMENT = 0  # occlusion's replacement code and the Shapley baseline's code
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
TOL_PROBA = 1e-5
SHAPLEY_COMPLETENESS_TOL = 1e-9
SHAPLEY_NULL_TOL = 1e-12
GRAPH_NAME = "int_tabular"


def make_data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """int64 codes [N_TRAIN + N_HELDOUT, 5], labels, and the per-code class score tables (stacked)."""
    rng = np.random.default_rng(SEED)
    n = N_TRAIN + N_HELDOUT
    codes = np.stack([rng.integers(0, k, size=n) for k in CARDINALITIES], axis=1).astype(np.int64)
    tables = [rng.normal(size=(k, N_CLASSES)) for k in CARDINALITIES]
    scores = sum(table[codes[:, j]] for j, table in enumerate(tables))
    labels = np.argmax(scores + 0.5 * rng.gumbel(size=scores.shape), axis=1).astype(np.int64)
    return codes, labels, np.concatenate(tables)


def pick_rows(heldout: np.ndarray) -> np.ndarray:
    """Two held-out rows without any code 0, then two with at least one."""
    has_zero = (heldout == REPLACEMENT).any(axis=1)
    picked = list(np.nonzero(~has_zero)[0][:2]) + list(np.nonzero(has_zero)[0][:2])
    assert len(picked) == 4, "the held-out part lacks rows of one kind"
    return heldout[picked]


def to_onnx(pipeline: Pipeline) -> onnx.ModelProto:
    classifier = pipeline.steps[-1][1]
    onx = convert_sklearn(
        pipeline, initial_types=[("codes", Int64TensorType([None, len(CARDINALITIES)]))],
        target_opset=TARGET_OPSET, options={id(classifier): {"zipmap": False}},
    )
    # Byte-reproducible files: skl2onnx lists opsets from a set.
    onx.graph.name = GRAPH_NAME
    opsets = sorted((o.domain, o.version) for o in onx.opset_import)
    del onx.opset_import[:]
    for domain, version in opsets:
        onx.opset_import.add(domain=domain, version=version)
    onnx.checker.check_model(onx)
    return onx


def shap_kernel_check(predict, x: np.ndarray, shapley: np.ndarray) -> float | None:
    """shap.KernelExplainer with the all-zero row as its background, every coalition enumerated,
    against the exact values: the largest absolute difference (None without shap)."""
    try:
        import shap
    except ImportError:
        return None
    m = x.shape[1]
    background = np.full((1, m), REPLACEMENT, dtype=np.float64)
    explainer = shap.KernelExplainer(lambda rows: predict(np.rint(rows).astype(np.int64)).astype(np.float64),
                                     background)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        values = explainer.shap_values(x.astype(np.float64), nsamples=2**m, silent=True)
    values = np.asarray(values)  # [N, M, T]
    return float(np.abs(values.transpose(0, 2, 1) - shapley).max())


def main() -> None:
    check_shapley_from_values()
    codes, labels, _ = make_data()
    train_x, train_y = codes[:N_TRAIN], labels[:N_TRAIN]
    heldout_x, heldout_y = codes[N_TRAIN:], labels[N_TRAIN:]
    assert set(np.unique(train_y)) == set(range(N_CLASSES)), np.bincount(train_y)
    for j, k in enumerate(CARDINALITIES):
        assert set(np.unique(train_x[:, j])) == set(range(k)), f"feature {j} misses a code in training"

    pipeline = Pipeline([
        ("onehot", OneHotEncoder(handle_unknown="ignore")),
        ("logreg", LogisticRegression(max_iter=1000)),
    ]).fit(train_x, train_y)
    x = pick_rows(heldout_x)
    m = x.shape[1]

    onx = to_onnx(pipeline)
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "model.onnx"
    path.write_bytes(onx.SerializeToString())
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    assert outputs == ["label", "probabilities"], outputs
    assert [(i.name, i.type) for i in session.get_inputs()] == [("codes", "tensor(int64)")]

    def predict(rows: np.ndarray) -> np.ndarray:
        return session.run(["probabilities"], {"codes": rows.astype(np.int64)})[0]

    # onnxruntime against scikit-learn, on x and on every held-out row.
    for rows in (x, heldout_x):
        label, proba = session.run(None, {"codes": rows})
        assert proba.dtype == np.float32 and proba.shape == (len(rows), N_CLASSES)
        gap = np.abs(proba - pipeline.predict_proba(rows)).max()
        assert gap < TOL_PROBA, f"onnxruntime's probabilities differ from predict_proba by {gap}"
        assert (label == pipeline.predict(rows)).all(), "onnxruntime's labels differ from predict"
    probabilities = predict(x)
    proba_gap = float(np.abs(probabilities - pipeline.predict_proba(x)).max())

    # Occlusion: the row and its m occluded copies in one batch per row.
    occlusion = np.zeros((len(x), N_CLASSES, m), dtype=np.float32)
    for row in range(len(x)):
        rows = np.repeat(x[row][None], m + 1, axis=0)
        rows[np.arange(1, m + 1), np.arange(m)] = REPLACEMENT
        out = predict(rows)
        assert (out[0] == probabilities[row]).all(), "the batched row differs from probabilities.npy"
        occlusion[row] = (out[0][:, None] - out[1:].T).astype(np.float32)  # [T, M]
    same = x == REPLACEMENT
    occlusion_at_replacement = float(np.abs(occlusion.transpose(0, 2, 1)[same]).max())
    assert occlusion_at_replacement == 0.0, f"occluding code 0 with 0 gave {occlusion_at_replacement}"

    # Exact Shapley values: the 2^m coalitions in one batch per row.
    coalitions = ((np.arange(2**m)[:, None] >> np.arange(m)) & 1).astype(bool)  # [2^M, M]
    baseline = np.full(m, REPLACEMENT, dtype=np.int64)
    shapley = np.zeros((len(x), N_CLASSES, m))
    base = np.zeros((len(x), N_CLASSES))
    completeness = 0.0
    for row in range(len(x)):
        v = predict(np.where(coalitions, x[row][None], baseline[None])).astype(np.float64)  # [2^M, T]
        assert (v[-1] == probabilities[row]).all(), "v(full) differs from probabilities.npy"
        shapley[row] = shapley_from_values(v, m)
        base[row] = v[0]
        completeness = max(completeness, float(np.abs(shapley[row].sum(axis=1) + v[0] - v[-1]).max()))
    assert completeness < SHAPLEY_COMPLETENESS_TOL, f"completeness off by {completeness}"
    null_players = float(np.abs(shapley.transpose(0, 2, 1)[same]).max())
    assert null_players < SHAPLEY_NULL_TOL, f"phi where x equals the baseline is {null_players}, not 0"
    assert (base == base[0]).all(), "the all-zero row's probabilities differ between batches"

    kernel_gap = shap_kernel_check(predict, x, shapley)
    if kernel_gap is not None:
        assert kernel_gap < 1e-6, f"shap.KernelExplainer differs from the exact values by {kernel_gap}"

    np.save(OUT / "x.npy", x)
    np.save(OUT / "probabilities.npy", probabilities)
    np.save(OUT / "occlusion.npy", occlusion)
    np.save(OUT / "shapley.npy", shapley)
    np.save(OUT / "shapley_base.npy", base)

    versions = {"python": sys.version.split()[0], "numpy": np.__version__, "scikit-learn": sklearn.__version__,
                "skl2onnx": skl2onnx.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__}
    try:
        import shap
        versions["shap"] = shap.__version__
    except ImportError:
        pass
    meta = {
        "description": "Pipeline(OneHotEncoder(handle_unknown='ignore'), LogisticRegression(max_iter=1000)) over "
                       "5 int64 categorical codes, 3 classes (synthetic data), exported with skl2onnx, zipmap off",
        "inputs": {"codes": "int64 [batch, 5]"},
        "outputs": {"label": "int64 [batch]", "probabilities": "float32 [batch, 3]"},
        "explained_output": "probabilities",
        "cardinalities": list(CARDINALITIES),
        "codes": "feature j takes the codes 0 .. cardinalities[j] - 1 (all seen in training)",
        "classes": [int(c) for c in pipeline.classes_],
        "data": {"seed": SEED, "train_rows": N_TRAIN, "heldout_rows": N_HELDOUT,
                 "labels": "argmax over classes of sum_j table_j[code_j] + 0.5 * Gumbel noise",
                 "train_class_counts": np.bincount(train_y).tolist(),
                 "heldout_accuracy": float((pipeline.predict(heldout_x) == heldout_y).mean())},
        "x": "x.npy, 4 held-out rows: rows 0 and 1 have no code 0, rows 2 and 3 have some",
        "x_positions_equal_to_replacement": [[int(r), int(c)] for r, c in zip(*np.nonzero(same))],
        "replacement_code": REPLACEMENT,
        "occlusion": {
            "file": "occlusion.npy", "replacement_code": REPLACEMENT, "window": 1,
            "definition": "probabilities(x)[n, t] - probabilities(x with feature j = replacement_code)[n, t], "
                          "shape [N, T, M]",
            "where_x_equals_replacement": occlusion_at_replacement,
        },
        "shapley": {
            "file": "shapley.npy", "base_file": "shapley_base.npy",
            "baseline": "the all-zero row (code 0 for every feature)", "players": "the 5 features",
            "method": "exact enumeration of 32 coalitions",
            "value": "v(S) = probabilities(x on S, code 0 elsewhere)[t]; shape [N, T, M], base [N, T] = v(empty)",
            "dtype": "float64 from onnxruntime's float32 probabilities (CPUExecutionProvider)",
            "completeness_max_abs_error": completeness,
            "where_x_equals_baseline_max_abs": null_players,
            "shap_kernel_explainer_max_abs_diff": kernel_gap,
        },
        "onnxruntime_vs_predict_proba_max_abs": proba_gap,
        "onnx_opset": {(o.domain or "ai.onnx"): o.version for o in onx.opset_import},
        "operators": sorted({f"{n.domain + '.' if n.domain else ''}{n.op_type}" for n in onx.graph.node}),
        "model_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "versions": versions,
    }
    (OUT / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"{path.stat().st_size / 1024:.1f} KiB; ops {meta['operators']}; held-out accuracy "
          f"{meta['data']['heldout_accuracy']:.2f}; |occlusion| max {np.abs(occlusion).max():.3f}; completeness "
          f"{completeness:.1e}; where x == 0: occlusion {occlusion_at_replacement}, phi {null_players:.1e}; "
          f"shap.KernelExplainer differs by {kernel_gap}")


if __name__ == "__main__":
    main()
