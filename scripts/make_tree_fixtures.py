#!/usr/bin/env python3
"""Reference tree SHAP values from shap's TreeExplainer, as test fixtures for explaind-tree-shap.

For each case below this writes tests/data/trees/<case>/:

  model.onnx            the ensemble exported to ONNX: one TreeEnsembleRegressor or
                        TreeEnsembleClassifier node reading a float32 [batch, 8] input (`X` from
                        skl2onnx, `input` from onnxmltools). skl2onnx exports the scikit-learn models
                        (target_opset {"": 17, "ai.onnx.ml": 3}, classifiers with zipmap off),
                        onnxmltools the XGBoost and LightGBM ones (target_opset 15, its maximum).
                        Both converters write the lowest opsets the graph needs: ai.onnx.ml 1
                        everywhere (meta.json records them). The graph is renamed to the case and
                        the opsets sorted so that reruns give identical bytes.
  x.npy                 float32 [N=5, 8], the rows explained
  background.npy        float32 [K=20, 8], the background of the interventional explainer
  train.npy             float32 [200, 8], the training rows (for covers counted from rows)
  onnx_output.npy       float32, onnxruntime's regression / probability output on x (meta.json
                        names it: regressors `variable` [N, 1], classifiers `probabilities` [N, C])
  raw.npy               float64 [N, T], the library's raw margin on x (regressors: predict;
                        GradientBoostingClassifier: decision_function; RandomForestClassifier:
                        predict_proba; XGBoost: output_margin=True; LightGBM: raw_score=True)
  interventional_shap.npy       float64 [N, 8, T]: shap.TreeExplainer(model, data=background,
                                feature_perturbation="interventional", model_output="raw")
  interventional_expected.npy   float64 [T], that explainer's expected_value
  path_dependent_shap.npy       float64 [N, 8, T]: shap.TreeExplainer(model,
                                feature_perturbation="tree_path_dependent") (XGBoost and LightGBM:
                                shap delegates to the library's own pred_contribs / pred_contrib)
  path_dependent_expected.npy   float64 [T]
  shap_covers.npy       float64 [number of ONNX tree nodes]: the node covers shap's path-dependent
                        explainer uses (scikit-learn: weighted_n_node_samples; HistGradientBoosting:
                        count; XGBoost: cover, a sum of hessians; LightGBM: internal/leaf count),
                        laid out in the ONNX node arrays' order (matched by walking shap's trees
                        and the ONNX trees together, checking features and thresholds)
  interactions.npy      float64 [N, 8, 8, T]: shap_interaction_values (path-dependent), only for the
                        cases in INTERACTION_CASES
  meta.json             the case, library versions, operator and ai.onnx.ml opset, outputs and which is
                        which, post_transform, what shap's raw output means, whether the ONNX file
                        carries nodes_hitrates, additivity errors of shap's own values, whether
                        covers counted from train.npy equal shap's covers, and notes.

T is the number of explained targets: 1 for regressors and binary classifiers (the positive class's
log-odds), the number of classes for RandomForestClassifier (shap explains predict_proba per class).

Before anything is written, onnxruntime's output on x, the background and the training rows is
checked against the library's own prediction (absolute 2e-5 on regression outputs, 1e-5 on
probabilities; float32 ONNX thresholds could send a row down another branch than the library's
double thresholds: none does here), and shap's values are checked for additivity.

Deterministic: data from numpy generators with fixed seeds, every model with a fixed random_state
and one thread.

Usage (from the repository root; scripts/requirements-trees.txt pins the packages):
    python3 -m venv /tmp/tree-venv
    /tmp/tree-venv/bin/pip install -r scripts/requirements-trees.txt
    /tmp/tree-venv/bin/python scripts/make_tree_fixtures.py [case ...]

With no arguments every case is (re)generated.
"""

from __future__ import annotations

import json
import os
from math import factorial
import shutil
import sys
import warnings
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np
import onnx
import onnxruntime as ort

import lightgbm
import onnxmltools
import shap
import skl2onnx
import sklearn
import xgboost
from onnxmltools.convert.common.data_types import FloatTensorType as MLFloatTensorType
from sklearn.ensemble import (
    ExtraTreesRegressor,
    GradientBoostingClassifier,
    GradientBoostingRegressor,
    HistGradientBoostingRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "trees"
N_FEATURES = 8
N_TRAIN, N_X, N_BG = 200, 5, 20
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}  # skl2onnx
MLTOOLS_OPSET = 15  # onnxmltools 1.16 converts up to opset 15 (its ai.onnx.ml opset is then 3 or lower)
TOL_REG = 2e-5
TOL_PROBA = 1e-5
INTERACTION_CASES = {"sklearn_gbr", "sklearn_rfc", "xgb_classifier"}


def make_data(seed: int, task: str, nan_feature: int | None):
    """Training rows, explained rows, background rows (float32) and training labels."""
    rng = np.random.default_rng(seed)
    n = N_TRAIN + N_X + N_BG
    X = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    X[:, 5] = np.round(X[:, 5] * 2).astype(np.float32)  # a few repeated values (ties at thresholds)
    Xd = X.astype(np.float64)
    signal = (
        1.5 * Xd[:, 0]
        - 2.0 * (Xd[:, 1] > 0.3)
        + Xd[:, 2] * Xd[:, 3]
        + 0.5 * np.sin(2 * Xd[:, 4])
        + 0.3 * Xd[:, 5]
        + 0.1 * rng.normal(size=n)
    )
    if nan_feature is not None:
        miss = rng.random(n) < 0.15
        X[miss, nan_feature] = np.nan
        signal = signal + np.where(miss, 1.0, 0.0)
    if task == "regression":
        y = signal
    elif task == "binary":
        y = (signal > np.median(signal)).astype(np.int64)
    else:
        q = np.quantile(signal, [1 / 3, 2 / 3])
        y = np.digitize(signal, q).astype(np.int64)
    tr, xs, bg = X[:N_TRAIN], X[N_TRAIN : N_TRAIN + N_X], X[N_TRAIN + N_X :]
    if nan_feature is not None:  # make sure the explained rows and the background exercise NaN routing
        xs[1, nan_feature] = np.nan
        bg[0, nan_feature] = np.nan
        bg[7, nan_feature] = np.nan
    return tr, xs, bg, y[:N_TRAIN]


# name -> (library, task, seed, NaN feature, constructor)
CASES = {
    "sklearn_gbr": ("sklearn", "regression", 1, None,
                    lambda: GradientBoostingRegressor(n_estimators=10, max_depth=3, random_state=0)),
    "sklearn_rfr": ("sklearn", "regression", 2, None,
                    lambda: RandomForestRegressor(n_estimators=5, max_depth=4, random_state=0, n_jobs=1)),
    "sklearn_etr": ("sklearn", "regression", 3, None,
                    lambda: ExtraTreesRegressor(n_estimators=5, max_depth=4, random_state=0, n_jobs=1)),
    "sklearn_gbc": ("sklearn", "binary", 4, None,
                    lambda: GradientBoostingClassifier(n_estimators=10, max_depth=3, random_state=0)),
    "sklearn_rfc": ("sklearn", "multiclass", 5, None,
                    lambda: RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0, n_jobs=1)),
    "sklearn_hgbr": ("sklearn", "regression", 6, 2,
                     lambda: HistGradientBoostingRegressor(max_iter=10, max_depth=3, max_leaf_nodes=8,
                                                           early_stopping=False, random_state=0)),
    "xgb_regressor": ("xgboost", "regression", 7, None,
                      lambda: xgboost.XGBRegressor(n_estimators=10, max_depth=3, learning_rate=0.3,
                                                   random_state=0, n_jobs=1, tree_method="exact")),
    "xgb_classifier": ("xgboost", "binary", 8, 2,
                       lambda: xgboost.XGBClassifier(n_estimators=10, max_depth=3, learning_rate=0.3,
                                                     random_state=0, n_jobs=1, tree_method="exact")),
    "sklearn_gbc3": ("sklearn", "multiclass", 10, None,
                     lambda: GradientBoostingClassifier(n_estimators=6, max_depth=3, random_state=0)),
    "xgb_multiclass": ("xgboost", "multiclass", 11, 2,
                       lambda: xgboost.XGBClassifier(n_estimators=6, max_depth=3, learning_rate=0.3,
                                                     objective="multi:softprob", random_state=0, n_jobs=1,
                                                     tree_method="exact")),
    "lgbm_regressor": ("lightgbm", "regression", 9, 2,
                       lambda: lightgbm.LGBMRegressor(n_estimators=10, num_leaves=8, max_depth=3,
                                                      min_child_samples=5, learning_rate=0.3,
                                                      random_state=0, n_jobs=1, verbose=-1)),
}


def versions() -> dict:
    return {
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "skl2onnx": skl2onnx.__version__,
        "onnxmltools": onnxmltools.__version__,
        "xgboost": xgboost.__version__,
        "lightgbm": lightgbm.__version__,
        "shap": shap.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
    }


def _patch_skl2onnx_bool_attrs() -> None:
    """skl2onnx 1.20 passes HistGradientBoosting's numpy-bool missing_go_to_left flags straight into
    nodes_missing_value_tracks_true, which onnx.helper refuses ("Expected an int, got a boolean"):
    turn that one attribute into ints before the node is made."""
    from skl2onnx.common import _container

    if getattr(_container, "_explaind_patched", False):
        return
    inner = _container.make_node

    def make_node(op_type, inputs, outputs, name=None, **attrs):
        v = attrs.get("nodes_missing_value_tracks_true")
        if v is not None:
            attrs["nodes_missing_value_tracks_true"] = [int(b) for b in v]
        return inner(op_type, inputs, outputs, name=name, **attrs)

    _container.make_node = make_node
    _container._explaind_patched = True


def to_onnx(lib: str, model) -> onnx.ModelProto:
    if lib == "sklearn":
        from skl2onnx import to_onnx as skl_to_onnx

        _patch_skl2onnx_bool_attrs()

        proto = np.zeros((1, N_FEATURES), dtype=np.float32)
        opts = {"zipmap": False} if hasattr(model, "classes_") else None
        onx = skl_to_onnx(model, proto, target_opset=TARGET_OPSET, options=opts)
    elif lib == "xgboost":
        onx = onnxmltools.convert_xgboost(
            model, initial_types=[("input", MLFloatTensorType([None, N_FEATURES]))], target_opset=MLTOOLS_OPSET
        )
    else:
        onx = onnxmltools.convert_lightgbm(
            model, initial_types=[("input", MLFloatTensorType([None, N_FEATURES]))],
            target_opset=MLTOOLS_OPSET, zipmap=False,
        )
    return onx


def tree_node(onx: onnx.ModelProto):
    nodes = [n for n in onx.graph.node if n.op_type.startswith("TreeEnsemble")]
    if len(nodes) != 1:
        raise SystemExit(f"expected one TreeEnsemble* node, got {[n.op_type for n in onx.graph.node]}")
    return nodes[0]


def attrs_of(node) -> dict:
    out = {}
    for a in node.attribute:
        out[a.name] = onnx.helper.get_attribute_value(a)
    return out


def library_raw(lib: str, task: str, model, X: np.ndarray) -> np.ndarray:
    """The library's raw margin [N, T] (what shap's model_output="raw" explains)."""
    if lib == "sklearn":
        if isinstance(model, RandomForestClassifier):
            return model.predict_proba(X).astype(np.float64)
        if task in ("binary", "multiclass"):
            return model.decision_function(X).astype(np.float64).reshape(len(X), -1)
        return model.predict(X).astype(np.float64).reshape(-1, 1)
    if lib == "xgboost":
        return model.predict(X, output_margin=True).astype(np.float64).reshape(len(X), -1)
    return model.predict(X, raw_score=True).astype(np.float64).reshape(len(X), -1)


def library_output(task: str, model, X: np.ndarray) -> np.ndarray:
    """What the ONNX file's main output should hold: the prediction or the class probabilities."""
    if task == "regression":
        return model.predict(X).astype(np.float64).reshape(-1, 1)
    return model.predict_proba(X).astype(np.float64)


def brute_force_interventional(raw_fn, xs: np.ndarray, bg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shapley values of v(S) = mean_b raw(x_S, b_rest) from their definition, every subset S of
    the features enumerated: [N, F, T] and the base value E_b raw(b) [T]."""
    n, f = xs.shape
    masks = ((np.arange(2 ** f)[:, None] >> np.arange(f)) & 1).astype(bool)  # [2^F, F]
    weights = np.array([factorial(k) * factorial(f - k - 1) / factorial(f) for k in range(f)])
    base = raw_fn(bg).mean(axis=0)
    phi = np.zeros((n, f, base.shape[0]))
    for row, x in enumerate(xs):
        hybrids = np.where(masks[:, None, :], x[None, None, :], bg[None, :, :]).reshape(-1, f)
        v = raw_fn(hybrids.astype(np.float32)).reshape(2 ** f, len(bg), -1).mean(axis=1)  # [2^F, T]
        sizes = masks.sum(axis=1)
        for i in range(f):
            without = ~masks[:, i]
            s = np.nonzero(without)[0]
            phi[row, i] = (weights[sizes[s]][:, None] * (v[s | (1 << i)] - v[s])).sum(axis=0)
    return phi, base


def with_targets(a, n_rows: int, trailing: tuple) -> np.ndarray:
    """shap returns (N, *trailing) for one output and (N, *trailing, T) for several; always add T."""
    a = np.asarray(a, dtype=np.float64)
    if a.shape == (n_rows, *trailing):
        a = a[..., None]
    assert a.shape[: 1 + len(trailing)] == (n_rows, *trailing), a.shape
    return a


def onnx_trees(attrs: dict):
    """tree id -> (root entry, {entry: (true entry, false entry, feature, threshold, is_leaf)})."""
    tids, nids = list(attrs["nodes_treeids"]), list(attrs["nodes_nodeids"])
    index = {(t, n): i for i, (t, n) in enumerate(zip(tids, nids))}
    modes = [m.decode() if isinstance(m, bytes) else m for m in attrs["nodes_modes"]]
    info, referenced = {}, set()
    for i, (t, m) in enumerate(zip(tids, modes)):
        if m == "LEAF":
            info[i] = (None, None, None, None, True)
            continue
        tc, fc = index[(t, attrs["nodes_truenodeids"][i])], index[(t, attrs["nodes_falsenodeids"][i])]
        referenced.update((tc, fc))
        info[i] = (tc, fc, attrs["nodes_featureids"][i], attrs["nodes_values"][i], False)
    roots = {}
    for i, t in enumerate(tids):
        if i not in referenced:
            roots[t] = i
    return [roots[t] for t in sorted(roots)], info, modes


def map_covers(explainer, attrs: dict) -> tuple[np.ndarray, float]:
    """shap's node covers laid out in the ONNX node order; also the largest threshold difference.

    Walks each shap tree (left child = the branch taken when the test holds) and the ONNX tree with the
    same index (true child) together, checking the split features."""
    roots, info, _ = onnx_trees(attrs)
    trees = explainer.model.trees
    if len(trees) != len(roots):
        raise ValueError(f"shap has {len(trees)} trees, the ONNX file {len(roots)}")
    covers = np.full(len(attrs["nodes_treeids"]), np.nan)
    max_dt = 0.0
    for k, (tree, root) in enumerate(zip(trees, roots)):
        stack = [(0, root)]
        while stack:
            s, o = stack.pop()
            covers[o] = tree.node_sample_weight[s]
            tc, fc, feat, thr, leaf = info[o]
            s_leaf = tree.children_left[s] < 0
            if leaf != s_leaf:
                raise ValueError(f"tree {k}: leaf mismatch at shap node {s} / ONNX entry {o}")
            if leaf:
                continue
            if feat != tree.features[s]:
                raise ValueError(f"tree {k}: feature {feat} vs shap's {tree.features[s]} at shap node {s}")
            max_dt = max(max_dt, abs(float(thr) - float(tree.thresholds[s])))
            stack.append((tree.children_left[s], tc))
            stack.append((tree.children_right[s], fc))
    if np.isnan(covers).any():
        raise ValueError("some ONNX nodes were not reached from a root")
    return covers, max_dt


def covers_from_rows(attrs: dict, rows: np.ndarray) -> np.ndarray:
    """Rows through each ONNX node, routing as ONNX Runtime does for float inputs (float32 thresholds)."""
    roots, info, modes = onnx_trees(attrs)
    miss = list(attrs.get("nodes_missing_value_tracks_true", [])) or [0] * len(modes)
    covers = np.zeros(len(modes))
    for x in rows:
        for r in roots:
            i = r
            while True:
                covers[i] += 1
                tc, fc, feat, thr, leaf = info[i]
                if leaf:
                    break
                v, t = np.float32(x[feat]), np.float32(thr)
                m = modes[i]
                ok = {"BRANCH_LEQ": v <= t, "BRANCH_LT": v < t, "BRANCH_GTE": v >= t, "BRANCH_GT": v > t,
                      "BRANCH_EQ": v == t, "BRANCH_NEQ": v != t}[m]
                i = tc if (ok or (np.isnan(v) and miss[i])) else fc
    return covers


def make_case(name: str) -> None:
    lib, task, seed, nan_feature, ctor = CASES[name]
    tr, xs, bg, y = make_data(seed, task, nan_feature)
    model = ctor()
    model.fit(tr, y)

    onx = to_onnx(lib, model)
    # Byte-reproducible files: onnxmltools names graphs with a random uuid, skl2onnx lists opsets from a set.
    onx.graph.name = name
    opsets = sorted(((o.domain, o.version) for o in onx.opset_import))
    del onx.opset_import[:]
    for domain, version in opsets:
        onx.opset_import.add(domain=domain, version=version)
    node = tree_node(onx)
    attrs = attrs_of(node)
    ml_opset = {o.domain: o.version for o in onx.opset_import}.get("ai.onnx.ml")
    sess = ort.InferenceSession(onx.SerializeToString(), providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name
    out_names = [o.name for o in sess.get_outputs()]
    main_out = out_names[0] if task == "regression" else ("probabilities" if "probabilities" in out_names else out_names[1])

    # ONNX vs the library on every row we have.
    worst = 0.0
    for rows in (xs, bg, tr):
        got = sess.run([main_out], {in_name: rows})[0].astype(np.float64).reshape(len(rows), -1)
        want = library_output(task, model, rows)
        err = float(np.max(np.abs(got - want)))
        worst = max(worst, err)
        tol = TOL_REG if task == "regression" else TOL_PROBA
        if err > tol:
            raise SystemExit(f"{name}: onnxruntime differs from {lib} by {err:.3g} (> {tol})")
    onnx_out = sess.run([main_out], {in_name: xs})[0]

    raw = library_raw(lib, task, model, xs)
    T = raw.shape[1]

    reference = "shap.TreeExplainer"
    pd = pd_phi = pd_ev = inter = add_pd = add_int = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            iv = shap.TreeExplainer(model, data=bg.astype(np.float64), feature_perturbation="interventional",
                                    model_output="raw")
            iv_phi = with_targets(iv.shap_values(xs.astype(np.float64), check_additivity=False), N_X, (N_FEATURES,))
            iv_ev = np.atleast_1d(np.asarray(iv.expected_value, dtype=np.float64)).reshape(-1)
        add_iv = float(np.max(np.abs(iv_phi.sum(axis=1) + iv_ev - raw)))
        if add_iv > 1e-4:
            raise ValueError(f"shap's interventional values are not additive ({add_iv:.3g})")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pd = shap.TreeExplainer(model, feature_perturbation="tree_path_dependent")
            pd_phi = with_targets(pd.shap_values(xs.astype(np.float64), check_additivity=False), N_X, (N_FEATURES,))
            pd_ev = np.atleast_1d(np.asarray(pd.expected_value, dtype=np.float64)).reshape(-1)
            if name in INTERACTION_CASES:
                inter = with_targets(pd.shap_interaction_values(xs.astype(np.float64)), N_X, (N_FEATURES, N_FEATURES))
    except (shap.utils._exceptions.InvalidModelError, ValueError) as refused:
        # shap cannot explain this model exactly: the reference is the definition itself.
        reference = f"brute force over every feature subset on the library's raw margin ({refused})"
        iv_phi, iv_ev = brute_force_interventional(lambda rows: library_raw(lib, task, model, rows), xs, bg)
        add_iv = float(np.max(np.abs(iv_phi.sum(axis=1) + iv_ev - raw)))
        pd = pd_phi = pd_ev = inter = None
    assert iv_phi.shape == (N_X, N_FEATURES, T), (iv_phi.shape, T)
    if pd_phi is not None:
        add_pd = float(np.max(np.abs(pd_phi.sum(axis=1) + pd_ev - raw)))
    if inter is not None:
        add_int = float(np.max(np.abs(inter.sum(axis=2) - pd_phi)))
    for what, e in (("interventional", add_iv), ("path-dependent", add_pd), ("interaction row sums", add_int)):
        if e is not None and e > 1e-4:
            raise SystemExit(f"{name}: {what} values are not additive ({e:.3g})")

    if pd is not None:
        covers, max_dt = map_covers(pd, attrs)
        counts_match = bool(np.array_equal(covers_from_rows(attrs, tr), covers))
    else:
        covers, max_dt, counts_match = None, None, False
    hitrates = "nodes_hitrates" in attrs or "nodes_hitrates_as_tensor" in attrs
    hit_values = sorted({float(h) for h in attrs.get("nodes_hitrates", [])})

    raw_meaning = {
        ("sklearn", "regression"): "the regression prediction (sum of scaled trees plus the initial estimate)",
        ("sklearn", "binary"): "log-odds of class 1 (decision_function)",
        ("sklearn", "multiclass"): (
            "per-class probability (RandomForestClassifier's raw output is predict_proba: averaged leaf class fractions)"
            if isinstance(model, RandomForestClassifier)
            else "per-class margin (decision_function; softmax gives the probabilities)"
        ),
        ("xgboost", "multiclass"): "per-class margin (output_margin=True; softmax gives the probabilities)",
        ("xgboost", "regression"): "margin (output_margin=True), equal to the prediction for reg:squarederror",
        ("xgboost", "binary"): "log-odds margin (output_margin=True)",
        ("lightgbm", "regression"): "raw score (raw_score=True), equal to the prediction for regression",
    }[(lib, task)]
    notes = []
    if lib in ("xgboost", "lightgbm"):
        notes.append(f"shap's path-dependent values come from {lib}'s own TreeSHAP "
                     f"({'pred_contribs' if lib == 'xgboost' else 'pred_contrib'}), not shap's C++ code"
                     + ("; XGBoost accumulates them in float32" if lib == "xgboost" else ""))
    if lib == "xgboost":
        notes.append("XGBoost covers are sums of hessians: per-row 1 for squared error (so counts), "
                     "p(1-p) for logistic loss (not counts)")
    if isinstance(model, RandomForestRegressor | RandomForestClassifier):
        notes.append("random forests are trained on bootstrap samples: shap's covers "
                     "(weighted_n_node_samples) are bootstrap counts, not counts of train.npy")
    if hitrates and hit_values == [1.0]:
        notes.append("nodes_hitrates is present but every entry is 1.0 (the converter writes a placeholder, "
                     "not the training counts): as covers it splits every branch 1/2 : 1/2, which is not "
                     "shap's path-dependent game")
    if not hitrates:
        notes.append("the ONNX file carries no nodes_hitrates: the path-dependent game needs covers "
                      "from elsewhere (shap_covers.npy, or covers counted from rows)")
    post = attrs.get("post_transform", b"NONE")
    post = post.decode() if isinstance(post, bytes) else post
    meta = {
        "case": name,
        "library": lib,
        "model": type(model).__name__,
        "params": {k: (repr(v) if isinstance(v, float) and not np.isfinite(v) else v)
                   for k, v in model.get_params().items() if isinstance(v, int | float | str | bool | None)},
        "task": task,
        "versions": versions(),
        "operator": node.op_type,
        "onnx_opset": {o.domain or "ai.onnx": o.version for o in onx.opset_import},
        "ai_onnx_ml_opset": ml_opset,
        "onnx_input": in_name,
        "onnx_outputs": out_names,
        "onnx_output_file": main_out,
        "onnx_output_is": "the regression prediction (equal to the raw margin: post_transform NONE)"
        if task == "regression" else
        f"class probabilities [N, {onnx_out.shape[1]}] after post_transform {post}"
        + (" (the raw margin itself)" if post == "NONE" else " (the raw margin is not an output)"),
        "post_transform": post,
        "aggregate_function": (attrs.get("aggregate_function", b"SUM").decode()
                               if isinstance(attrs.get("aggregate_function", b"SUM"), bytes)
                               else attrs.get("aggregate_function")),
        "base_values": [float(v) for v in attrs.get("base_values", [])],
        "has_nodes_hitrates": hitrates,
        "nodes_hitrates_distinct_values": hit_values[:5],
        "missing_values": f"NaN in feature {nan_feature} (train, x row 1, background rows 0 and 7)"
        if nan_feature is not None else "none",
        "n_targets": T,
        "shap_raw_output": raw_meaning,
        "onnx_vs_library_max_abs": worst,
        "onnx_vs_library_tolerance": TOL_REG if task == "regression" else TOL_PROBA,
        "additivity_max_abs": {"interventional": add_iv, "path_dependent": add_pd, "interaction_row_sums": add_int},
        "interventional_reference": reference,
        "shap_covers": "node_sample_weight of shap's trees, in ONNX node order" if covers is not None else None,
        "shap_covers_equal_train_counts": counts_match,
        "max_abs_threshold_onnx_vs_shap": max_dt,
        "has_interactions": inter is not None,
        "notes": notes,
    }

    d = OUT / name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    onnx.save(onx, d / "model.onnx")
    np.save(d / "x.npy", xs)
    np.save(d / "background.npy", bg)
    np.save(d / "train.npy", tr)
    np.save(d / "onnx_output.npy", onnx_out.astype(np.float32))
    np.save(d / "raw.npy", raw)
    np.save(d / "interventional_shap.npy", iv_phi)
    np.save(d / "interventional_expected.npy", iv_ev)
    if pd_phi is not None:
        np.save(d / "path_dependent_shap.npy", pd_phi)
        np.save(d / "path_dependent_expected.npy", pd_ev)
        np.save(d / "shap_covers.npy", covers)
    if inter is not None:
        np.save(d / "interactions.npy", inter)
    (d / "meta.json").write_text(json.dumps(meta, indent=2, allow_nan=False) + "\n")
    size = sum(f.stat().st_size for f in d.iterdir())
    print(f"{name}: {node.op_type} T={T} post={post} onnx-vs-lib {worst:.2g} additivity iv {add_iv:.2g} "
          f"pd {add_pd} hitrates={hitrates} counts==covers {counts_match} {size / 1024:.0f} KiB")


def main() -> None:
    names = sys.argv[1:] or list(CASES)
    for n in names:
        if n not in CASES:
            raise SystemExit(f"unknown case {n}; known: {', '.join(CASES)}")
    for n in names:
        make_case(n)


if __name__ == "__main__":
    main()
