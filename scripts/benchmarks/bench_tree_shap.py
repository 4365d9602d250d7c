#!/usr/bin/env python3
"""Benchmark: explaind's tree-shap plugin (over gRPC) against shap's TreeExplainer on the same
tree ensembles, in one run; and against explaind's own Kernel SHAP on the same game.

Models (random data from a numpy seed, 30 features, trained here, exported with skl2onnx; never
committed):
  forest   scikit-learn RandomForestRegressor, 300 trees, max_depth 8
  boosted  scikit-learn GradientBoostingRegressor, 500 rounds, max_depth 4
Background: 100 rows. Explained: 1 row and 1,000 rows.

Methods:
  interventional  explaind method=interventional vs shap.TreeExplainer(data=background,
                  feature_perturbation="interventional")
  path-dependent  explaind method=path_dependent, covers counted from the training rows
                  (the background of that request) vs shap.TreeExplainer(feature_perturbation=
                  "tree_path_dependent"), whose covers are the same training counts for these
                  models (no bootstrap: the forest is trained with bootstrap=False)
  kernel shap     explaind's kernel-shap, default budget (2M + 2048 coalitions), 1 row
Before timing, both sides' values are compared (max abs difference printed; the script stops
when they differ by more than 1e-4) on the rows that the ONNX model's float32 thresholds route
as scikit-learn's float64 ones do at every split (the count of the others is printed: a value
within a float32 rounding of a threshold goes the other way there, so the two libraries explain
slightly different models on that row; explaind follows onnxruntime). explaind's time is a whole gRPC round trip from Python;
shap runs in this process (its C++ extension, single-threaded).

Needs a release build and scripts/setup/requirements-trees.txt in a venv:
    cargo build --release --workspace
    /tmp/tree-venv/bin/pip install -r scripts/setup/requirements-trees.txt grpcio==1.85.1 grpcio-tools==1.85.1
    /tmp/tree-venv/bin/python scripts/benchmarks/bench_tree_shap.py
Prints Markdown for BENCHMARKS.md.
"""
from __future__ import annotations

import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts" / "benchmarks"))

from benchlib import generate_stubs, start_daemon  # noqa: E402

FEATURES, TRAIN, BACKGROUND = 30, 2000, 100


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median wall time of `repeats` runs after one warm-up, and the last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def data():
    rng = np.random.default_rng(19)
    X = rng.normal(size=(TRAIN + 1000, FEATURES)).astype(np.float32)
    y = X[:, 0] * 2 - X[:, 1] ** 2 + np.sin(3 * X[:, 2]) + X[:, 3] * X[:, 4] + 0.1 * rng.normal(size=len(X))
    return X[:TRAIN], y[:TRAIN], X[TRAIN:]


def models(train, target):
    from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor

    forest = RandomForestRegressor(n_estimators=300, max_depth=8, bootstrap=False, max_features=0.5, random_state=0, n_jobs=2)
    boosted = GradientBoostingRegressor(n_estimators=500, max_depth=4, random_state=0)
    return {"forest (300 trees)": forest.fit(train, target), "boosted (500 rounds)": boosted.fit(train, target)}


def export(model, train, directory: Path, name: str) -> None:
    from skl2onnx import to_onnx

    onx = to_onnx(model, train[:1], target_opset={"": 17, "ai.onnx.ml": 3})
    version = directory / name / "1"
    version.mkdir(parents=True)
    (version / "model.onnx").write_bytes(onx.SerializeToString())


def routed_alike(model, x) -> np.ndarray:
    """Per row: whether every split routes it the same with the threshold rounded to float32 (as
    ONNX stores it and onnxruntime compares it) as with scikit-learn's float64 threshold. A row
    within a rounding of a threshold goes the other way in one of them."""
    trees = np.ravel(model.estimators_)
    alike = np.ones(len(x), dtype=bool)
    for tree in trees:
        t = tree.tree_
        split = t.feature >= 0
        feature, threshold = t.feature[split], t.threshold[split]
        values = x[:, feature]  # [rows, splits], float32
        as_onnx = values <= threshold.astype(np.float32)
        as_sklearn = values.astype(np.float64) <= threshold
        alike &= (as_onnx == as_sklearn).all(axis=1)
    return alike


def main() -> None:
    generate_stubs()
    import grpc
    import shap
    import sklearn
    from explaind.v1 import explaind_pb2 as pb
    from explaind.v1 import explaind_pb2_grpc as pb_grpc

    warnings.filterwarnings("ignore")
    train, target, rows = data()
    background = train[:BACKGROUND]
    fitted = models(train, target)
    repository = Path(tempfile.mkdtemp(prefix="explaind-trees-"))
    names = {}
    for i, (label, model) in enumerate(fitted.items()):
        names[label] = f"tree{i}"
        export(model, train, repository, names[label])

    proc, addr = start_daemon("--models", str(repository), "--max-request-rows", "100000")
    try:
        channel = grpc.insecure_channel(addr, options=[("grpc.max_receive_message_length", 1 << 30),
                                                       ("grpc.max_send_message_length", 1 << 30)])
        stub = pb_grpc.ExplainServiceStub(channel)

        def tensor(a):
            a = np.ascontiguousarray(a, dtype=np.float32)
            return pb.Tensor(element_type=pb.ELEMENT_TYPE_FLOAT, shape=list(a.shape), data=a.tobytes())

        def explain(model, x, bg, explainer="tree-shap", **params):
            values = {}
            for k, v in params.items():
                values[k] = pb.ParamValue(text=v) if isinstance(v, str) else pb.ParamValue(integer=v)
            request = pb.ExplainRequest(model=pb.ModelRef(name=model), explainer=explainer,
                                        inputs=[pb.NamedTensor(name="X", tensor=tensor(x))],
                                        background=[pb.NamedTensor(name="X", tensor=tensor(bg))],
                                        targets=pb.Targets(indices=pb.IndexList(values=[0])),
                                        output="variable", parameters=values)
            response = stub.Explain(request, timeout=3600)
            a = response.attributions[0].values
            return np.frombuffer(a.data, dtype=np.float32).reshape(list(a.shape))[:, 0, :]

        table = []
        for label, model in fitted.items():
            name = names[label]
            iv = shap.TreeExplainer(model, data=background.astype(np.float64), feature_perturbation="interventional")
            pd = shap.TreeExplainer(model, feature_perturbation="tree_path_dependent")
            for n in (1, 1000):
                x = rows[:n]
                repeats = 5 if n == 1 else 2
                for method, ours, theirs in (
                    ("interventional", lambda: explain(name, x, background),
                     lambda: iv.shap_values(x.astype(np.float64), check_additivity=False)),
                    ("path-dependent", lambda: explain(name, x, train, method="path_dependent", covers="background"),
                     lambda: pd.shap_values(x.astype(np.float64), check_additivity=False)),
                ):
                    t_ours, v_ours = timed(ours, repeats)
                    t_shap, v_shap = timed(theirs, repeats)
                    # Rows that a float32 threshold routes differently from scikit-learn's
                    # float64 one: there the ONNX model (what explaind explains) and shap's
                    # model differ, so their values may too. Compared on the other rows.
                    same = routed_alike(model, x)
                    diff = float(np.max(np.abs(v_ours - np.asarray(v_shap).reshape(v_ours.shape))[same]))
                    if diff > 1e-4:
                        raise SystemExit(f"{label} {method} n={n}: explaind and shap differ by {diff}")
                    table.append((label, method, n, t_ours, t_shap, f"{diff:.1e} ({n - int(same.sum())} rows routed apart)"))
            t_kernel, v_kernel = timed(lambda: explain(name, rows[:1], background, explainer="kernel-shap"), 1)
            t_tree, v_tree = timed(lambda: explain(name, rows[:1], background), 5)
            kernel_diff = float(np.max(np.abs(v_kernel - v_tree)))
            table.append((label, "kernel-shap (explaind, default budget) vs tree-shap", 1, t_tree, t_kernel, f"{kernel_diff:.1e}"))

        print(f"\nMachine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
              f"shap {shap.__version__}, scikit-learn {sklearn.__version__}\n")
        print("| model | method | rows | explaind tree-shap (s) | reference (s) | speed-up | max abs diff |")
        print("|---|---|---:|---:|---:|---:|---:|")
        for label, method, n, t_ours, t_ref, diff in table:
            print(f"| {label} | {method} | {n} | {t_ours:.4f} | {t_ref:.4f} | {t_ref / t_ours:.1f}x | {diff} |")
    finally:
        proc.kill()


if __name__ == "__main__":
    main()
