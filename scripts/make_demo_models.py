#!/usr/bin/env python3
"""Build the bundled demo model repository under models/.

Produces, deterministically (fixed seeds, numpy-only training):

  models/digits-cnn/1/   small CNN on scikit-learn's load_digits (8x8, 10 classes)
  models/wine-mlp/1/     MLP on scikit-learn's load_wine (13 features, 3 classes),
                         standardisation inside the ONNX graph

Each version directory gets model.onnx, background.npy, samples.npy,
samples.json and config.toml.

Usage (from the repository root):
    python3 -m venv /tmp/models-venv
    /tmp/models-venv/bin/pip install -r scripts/requirements-models.txt
    /tmp/models-venv/bin/python scripts/make_demo_models.py

No PyTorch: the models are tiny, so training is plain numpy with hand-written
backprop and the ONNX graphs are assembled with onnx.helper.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

# single-threaded BLAS: keeps training bit-reproducible and off the shared cores
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from sklearn.datasets import load_digits, load_wine
from sklearn.model_selection import train_test_split

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "models"
SCRIPT = "scripts/make_demo_models.py"

# onnx >= 1.23 defaults to IR version 14, which onnxruntime 1.31 rejects.
IR_VERSION = 10
OPSET = 17
SPLIT_SEED = 0
TEST_SIZE = 0.2


# --------------------------------------------------------------------------
# small numpy building blocks
# --------------------------------------------------------------------------

def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def xent_grad(logits: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    """Mean cross-entropy loss and its gradient w.r.t. logits."""
    p = softmax(logits)
    n = logits.shape[0]
    loss = -np.log(p[np.arange(n), y] + 1e-12).mean()
    g = p.copy()
    g[np.arange(n), y] -= 1.0
    return float(loss), g / n


class Adam:
    def __init__(self, params: dict[str, np.ndarray], lr: float, wd: float = 0.0):
        self.p = params
        self.lr = lr
        self.wd = wd
        self.m = {k: np.zeros_like(v) for k, v in params.items()}
        self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.t = 0

    def step(self, grads: dict[str, np.ndarray]) -> None:
        self.t += 1
        b1, b2, eps = 0.9, 0.999, 1e-8
        for k, g in grads.items():
            if self.wd and k.startswith("W"):
                g = g + self.wd * self.p[k]
            self.m[k] = b1 * self.m[k] + (1 - b1) * g
            self.v[k] = b2 * self.v[k] + (1 - b2) * g * g
            mh = self.m[k] / (1 - b1 ** self.t)
            vh = self.v[k] / (1 - b2 ** self.t)
            self.p[k] -= self.lr * mh / (np.sqrt(vh) + eps)


def im2col(x: np.ndarray, k: int = 3, pad: int = 1) -> np.ndarray:
    """x [N,C,H,W] -> patches [N,H,W,C*k*k] (stride 1, 'same' padding)."""
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    cols = np.empty((n, c, k, k, h, w), dtype=x.dtype)
    for i in range(k):
        for j in range(k):
            cols[:, :, i, j] = xp[:, :, i:i + h, j:j + w]
    return cols.transpose(0, 4, 5, 1, 2, 3).reshape(n, h, w, c * k * k)


def col2im(dcols: np.ndarray, shape: tuple, k: int = 3, pad: int = 1) -> np.ndarray:
    n, c, h, w = shape
    d = dcols.reshape(n, h, w, c, k, k).transpose(0, 3, 4, 5, 1, 2)
    dxp = np.zeros((n, c, h + 2 * pad, w + 2 * pad), dtype=dcols.dtype)
    for i in range(k):
        for j in range(k):
            dxp[:, :, i:i + h, j:j + w] += d[:, :, i, j]
    return dxp[:, :, pad:pad + h, pad:pad + w]


def conv_fwd(x, W, b):
    cols = im2col(x)                                   # [N,H,W,C*9]
    out = cols @ W.reshape(W.shape[0], -1).T + b       # [N,H,W,Cout]
    return out.transpose(0, 3, 1, 2), cols


def conv_bwd(dout, cols, W, x_shape):
    d = dout.transpose(0, 2, 3, 1)                     # [N,H,W,Cout]
    dW = np.einsum("nhwo,nhwk->ok", d, cols).reshape(W.shape)
    db = d.sum(axis=(0, 1, 2))
    dcols = d @ W.reshape(W.shape[0], -1)
    return col2im(dcols, x_shape), dW, db


def pool_fwd(x):
    """2x2 max pool, stride 2. Returns output and argmax index per window."""
    n, c, h, w = x.shape
    win = x.reshape(n, c, h // 2, 2, w // 2, 2).transpose(0, 1, 2, 4, 3, 5)
    win = win.reshape(n, c, h // 2, w // 2, 4)
    idx = win.argmax(axis=-1)
    return np.take_along_axis(win, idx[..., None], axis=-1)[..., 0], idx


def pool_bwd(dout, idx, x_shape):
    n, c, h, w = x_shape
    dwin = np.zeros((n, c, h // 2, w // 2, 4), dtype=dout.dtype)
    np.put_along_axis(dwin, idx[..., None], dout[..., None], axis=-1)
    dwin = dwin.reshape(n, c, h // 2, w // 2, 2, 2).transpose(0, 1, 2, 4, 3, 5)
    return dwin.reshape(n, c, h, w)


# --------------------------------------------------------------------------
# digits CNN
# --------------------------------------------------------------------------

def cnn_forward(p, x, cache=False):
    z1, c1 = conv_fwd(x, p["W1"], p["b1"])
    a1 = np.maximum(z1, 0)
    p1, i1 = pool_fwd(a1)
    z2, c2 = conv_fwd(p1, p["W2"], p["b2"])
    a2 = np.maximum(z2, 0)
    p2, i2 = pool_fwd(a2)
    f = p2.reshape(p2.shape[0], -1)                    # C,H,W order == ONNX Flatten
    logits = f @ p["W3"].T + p["b3"]
    if cache:
        return logits, (x, z1, c1, a1, p1, i1, z2, c2, a2, p2, i2, f)
    return logits


def cnn_backward(p, dlogits, cache):
    x, z1, c1, a1, p1, i1, z2, c2, a2, p2, i2, f = cache
    g = {}
    g["W3"] = dlogits.T @ f
    g["b3"] = dlogits.sum(axis=0)
    dp2 = (dlogits @ p["W3"]).reshape(p2.shape)
    da2 = pool_bwd(dp2, i2, a2.shape)
    dz2 = da2 * (z2 > 0)
    dp1, g["W2"], g["b2"] = conv_bwd(dz2, c2, p["W2"], p1.shape)
    da1 = pool_bwd(dp1, i1, a1.shape)
    dz1 = da1 * (z1 > 0)
    _, g["W1"], g["b1"] = conv_bwd(dz1, c1, p["W1"], x.shape)
    return g


def he(rng, shape, fan_in):
    return rng.normal(0.0, np.sqrt(2.0 / fan_in), size=shape)


def train_cnn(xtr, ytr, seed=1234, epochs=60, batch=32, lr=3e-3):
    rng = np.random.default_rng(seed)
    p = {
        "W1": he(rng, (8, 1, 3, 3), 9), "b1": np.zeros(8),
        "W2": he(rng, (16, 8, 3, 3), 72), "b2": np.zeros(16),
        "W3": he(rng, (10, 64), 64) * 0.5, "b3": np.zeros(10),
    }
    opt = Adam(p, lr=lr, wd=1e-4)
    n = xtr.shape[0]
    for ep in range(epochs):
        if ep == int(epochs * 0.7):
            opt.lr = lr * 0.3
        perm = rng.permutation(n)
        tot = 0.0
        for s in range(0, n, batch):
            b = perm[s:s + batch]
            logits, cache = cnn_forward(p, xtr[b], cache=True)
            loss, dl = xent_grad(logits, ytr[b])
            tot += loss * len(b)
            opt.step(cnn_backward(p, dl, cache))
        if ep % 10 == 0 or ep == epochs - 1:
            acc = (cnn_forward(p, xtr).argmax(1) == ytr).mean()
            print(f"  digits epoch {ep:3d} loss {tot / n:.4f} train acc {acc:.4f}")
    return p


def cnn_to_onnx(p32) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(v, name=k) for k, v in p32.items()]
    nodes = [
        helper.make_node("Conv", ["image", "W1", "b1"], ["conv1"],
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("Relu", ["conv1"], ["relu1"]),
        helper.make_node("MaxPool", ["relu1"], ["pool1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Conv", ["pool1", "W2", "b2"], ["conv2"],
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("Relu", ["conv2"], ["relu2"]),
        helper.make_node("MaxPool", ["relu2"], ["pool2"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["pool2"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "W3", "b3"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "digits_cnn",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])],
        initializer=inits,
    )
    return finish_model(graph, "8x8 digit classifier (scikit-learn load_digits), raw logits")


# --------------------------------------------------------------------------
# wine MLP
# --------------------------------------------------------------------------

def mlp_forward(p, x, cache=False):
    z1 = x @ p["W1"].T + p["b1"]
    a1 = np.maximum(z1, 0)
    z2 = a1 @ p["W2"].T + p["b2"]
    a2 = np.maximum(z2, 0)
    logits = a2 @ p["W3"].T + p["b3"]
    if cache:
        return logits, (x, z1, a1, z2, a2)
    return logits


def mlp_backward(p, dl, cache):
    x, z1, a1, z2, a2 = cache
    g = {"W3": dl.T @ a2, "b3": dl.sum(0)}
    dz2 = (dl @ p["W3"]) * (z2 > 0)
    g["W2"], g["b2"] = dz2.T @ a1, dz2.sum(0)
    dz1 = (dz2 @ p["W2"]) * (z1 > 0)
    g["W1"], g["b1"] = dz1.T @ x, dz1.sum(0)
    return g


def train_mlp(xtr, ytr, seed=4321, epochs=300, lr=3e-3):
    rng = np.random.default_rng(seed)
    p = {
        "W1": he(rng, (32, 13), 13), "b1": np.zeros(32),
        "W2": he(rng, (16, 32), 32), "b2": np.zeros(16),
        "W3": he(rng, (3, 16), 16) * 0.5, "b3": np.zeros(3),
    }
    opt = Adam(p, lr=lr, wd=1e-3)
    n = xtr.shape[0]
    for ep in range(epochs):
        perm = rng.permutation(n)
        for s in range(0, n, 32):
            b = perm[s:s + 32]
            logits, cache = mlp_forward(p, xtr[b], cache=True)
            _, dl = xent_grad(logits, ytr[b])
            opt.step(mlp_backward(p, dl, cache))
        if ep % 100 == 0 or ep == epochs - 1:
            loss, _ = xent_grad(mlp_forward(p, xtr), ytr)
            acc = (mlp_forward(p, xtr).argmax(1) == ytr).mean()
            print(f"  wine epoch {ep:3d} loss {loss:.4f} train acc {acc:.4f}")
    return p


def mlp_to_onnx(p32, mean32, std32) -> onnx.ModelProto:
    inits = [numpy_helper.from_array(mean32, name="feature_mean"),
             numpy_helper.from_array(std32, name="feature_std")]
    inits += [numpy_helper.from_array(v, name=k) for k, v in p32.items()]
    nodes = [
        helper.make_node("Sub", ["features", "feature_mean"], ["centered"]),
        helper.make_node("Div", ["centered", "feature_std"], ["standardized"]),
        helper.make_node("Gemm", ["standardized", "W1", "b1"], ["fc1"], transB=1),
        helper.make_node("Relu", ["fc1"], ["h1"]),
        helper.make_node("Gemm", ["h1", "W2", "b2"], ["fc2"], transB=1),
        helper.make_node("Relu", ["fc2"], ["h2"]),
        helper.make_node("Gemm", ["h2", "W3", "b3"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "wine_mlp",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 13])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 3]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3])],
        initializer=inits,
    )
    return finish_model(graph, "wine cultivar classifier (scikit-learn load_wine), "
                               "standardisation inside the graph")


def mlp_forward32(p32, mean32, std32, x32):
    """Float32 numpy forward of the exported wine graph (for verification)."""
    z = (x32 - mean32) / std32
    logits = mlp_forward(p32, z)
    return logits.astype(np.float32), softmax(logits.astype(np.float64)).astype(np.float32)


# --------------------------------------------------------------------------
# shared helpers
# --------------------------------------------------------------------------

def finish_model(graph, doc: str) -> onnx.ModelProto:
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="explaind " + SCRIPT,
        producer_version="1",
        doc_string=doc,
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model


def ort_session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def toml_str(s: str) -> str:
    # json string escaping is valid TOML basic-string escaping for our ASCII text
    return json.dumps(s, ensure_ascii=True)


def toml_list(items) -> str:
    return "[" + ", ".join(toml_str(str(i)) for i in items) + "]"


def write_config(d: Path, description: str, labels, feature_names=None) -> None:
    lines = [
        f"description = {toml_str(description)}",
        f"labels = {toml_list(labels)}",
        'default_background = "background.npy"',
    ]
    if feature_names is not None:
        lines.append(f"feature_names = {toml_list(feature_names)}")
    (d / "config.toml").write_text("\n".join(lines) + "\n")


def write_samples_json(d: Path, y_true, y_pred, label_names, test_indices, extra):
    samples = []
    for i, (t, pr, src) in enumerate(zip(y_true, y_pred, test_indices)):
        samples.append({
            "index": i,
            "dataset_index": int(src),
            "label": int(t),
            "label_name": str(label_names[int(t)]),
            "predicted": int(pr),
            "predicted_name": str(label_names[int(pr)]),
            "correct": bool(int(t) == int(pr)),
        })
    doc = {"file": "samples.npy", **extra, "samples": samples}
    (d / "samples.json").write_text(json.dumps(doc, indent=2) + "\n")


def pick_samples(y_test, pred_test, k):
    """First k held-out rows; if none of them is misclassified but some held-out
    row is, swap the first misclassified row in as the last sample."""
    idx = list(range(k))
    wrong = np.nonzero(pred_test != y_test)[0]
    if len(wrong) and not any(pred_test[i] != y_test[i] for i in idx):
        idx[-1] = int(wrong[0])
    return np.array(idx)


# --------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------

def build_digits() -> None:
    print("digits-cnn")
    ds = load_digits()
    x = (ds.images / 16.0).astype(np.float64)[:, None, :, :]   # [N,1,8,8]
    y = ds.target.astype(np.int64)
    all_idx = np.arange(len(y))
    xtr, xte, ytr, yte, itr, ite = train_test_split(
        x, y, all_idx, test_size=TEST_SIZE, stratify=y, random_state=SPLIT_SEED)
    p = train_cnn(xtr, ytr)
    p32 = {k: v.astype(np.float32) for k, v in p.items()}

    d = MODELS / "digits-cnn" / "1"
    d.mkdir(parents=True, exist_ok=True)
    onnx.save(cnn_to_onnx(p32), d / "model.onnx")
    sess = ort_session(d / "model.onnx")

    xte32 = xte.astype(np.float32)
    pred = sess.run(["logits"], {"image": xte32})[0].argmax(1)
    acc = float((pred == yte).mean())
    n_wrong = int((pred != yte).sum())
    print(f"  held-out accuracy (onnxruntime): {acc * 100:.2f}% on {len(yte)} images "
          f"({n_wrong} wrong)")

    sel = pick_samples(yte, pred, 8)
    samples = np.ascontiguousarray(xte32[sel])
    background = np.ascontiguousarray(xtr[:100].astype(np.float32))
    np.save(d / "samples.npy", samples)
    np.save(d / "background.npy", background)

    ort_logits = sess.run(["logits"], {"image": samples})[0]
    np_logits = cnn_forward(p32, samples).astype(np.float32)
    diff = float(np.abs(ort_logits - np_logits).max())
    print(f"  samples: onnxruntime vs numpy max |diff| logits = {diff:.3e}")
    # logits reach ~25 in magnitude, so allow float32 relative rounding on top of 1e-5
    assert np.allclose(ort_logits, np_logits, rtol=1e-5, atol=1e-5), diff
    spred = ort_logits.argmax(1)
    print(f"  samples true {yte[sel].tolist()} predicted {spred.tolist()}")

    labels = [str(i) for i in range(10)]
    write_samples_json(d, yte[sel], spred, labels, ite[sel], {
        "shape": list(samples.shape),
        "source": "held-out split of scikit-learn load_digits, pixels / 16",
        "predicted_by": "onnxruntime, output 'logits', argmax",
    })
    write_config(
        d,
        "Small CNN classifying 8x8 grey-scale handwritten digits (0-9). Data: "
        "scikit-learn load_digits (1797 images), pixels scaled to [0,1] by /16. "
        "Architecture: Conv(1->8,3x3,pad1)-Relu-MaxPool2-Conv(8->16,3x3,pad1)-Relu-"
        "MaxPool2-Flatten-Gemm(64->10); output is raw logits. Trained with numpy "
        f"(Adam) on a stratified 80% split (seed {SPLIT_SEED}); held-out accuracy "
        f"{acc * 100:.1f}% on {len(yte)} images. Made by {SCRIPT}.",
        labels,
    )


def build_wine() -> None:
    print("wine-mlp")
    ds = load_wine()
    x = ds.data.astype(np.float64)
    y = ds.target.astype(np.int64)
    all_idx = np.arange(len(y))
    xtr, xte, ytr, yte, itr, ite = train_test_split(
        x, y, all_idx, test_size=TEST_SIZE, stratify=y, random_state=SPLIT_SEED)
    mean32 = xtr.mean(axis=0).astype(np.float32)
    std32 = xtr.std(axis=0).astype(np.float32)
    ztr = (xtr - mean32.astype(np.float64)) / std32.astype(np.float64)
    p = train_mlp(ztr, ytr)
    p32 = {k: v.astype(np.float32) for k, v in p.items()}

    d = MODELS / "wine-mlp" / "1"
    d.mkdir(parents=True, exist_ok=True)
    onnx.save(mlp_to_onnx(p32, mean32, std32), d / "model.onnx")
    sess = ort_session(d / "model.onnx")

    xte32 = xte.astype(np.float32)
    pred = sess.run(["logits"], {"features": xte32})[0].argmax(1)
    acc = float((pred == yte).mean())
    n_wrong = int((pred != yte).sum())
    print(f"  held-out accuracy (onnxruntime): {acc * 100:.2f}% on {len(yte)} rows "
          f"({n_wrong} wrong)")

    sel = pick_samples(yte, pred, 6)
    samples = np.ascontiguousarray(xte32[sel])
    background = np.ascontiguousarray(xtr[:50].astype(np.float32))
    np.save(d / "samples.npy", samples)
    np.save(d / "background.npy", background)

    o_logits, o_probs = sess.run(["logits", "probabilities"], {"features": samples})
    n_logits, n_probs = mlp_forward32(p32, mean32, std32, samples)
    dl = float(np.abs(o_logits - n_logits).max())
    dp = float(np.abs(o_probs - n_probs).max())
    print(f"  samples: onnxruntime vs numpy max |diff| logits = {dl:.3e}, "
          f"probabilities = {dp:.3e}")
    assert np.allclose(o_logits, n_logits, rtol=1e-5, atol=1e-5), dl
    assert np.allclose(o_probs, n_probs, rtol=1e-5, atol=1e-5), dp
    spred = o_logits.argmax(1)
    print(f"  samples true {yte[sel].tolist()} predicted {spred.tolist()}")

    labels = [str(n) for n in ds.target_names]
    write_samples_json(d, yte[sel], spred, labels, ite[sel], {
        "shape": list(samples.shape),
        "source": "held-out split of scikit-learn load_wine, raw (unstandardised) features",
        "predicted_by": "onnxruntime, output 'logits', argmax",
    })
    write_config(
        d,
        "MLP classifying wine cultivar (3 classes) from 13 chemical measurements. "
        "Data: scikit-learn load_wine (178 rows). Raw features go in: standardisation "
        "(Sub training mean, Div training std) is inside the graph. Architecture: "
        "13->32 Relu->16 Relu->3; outputs 'logits' and 'probabilities' (Softmax). "
        f"Trained with numpy (Adam) on a stratified 80% split (seed {SPLIT_SEED}); "
        f"held-out accuracy {acc * 100:.1f}% on {len(yte)} rows. Made by {SCRIPT}.",
        labels,
        feature_names=list(ds.feature_names),
    )


def main() -> int:
    np.seterr(over="raise", invalid="raise")
    build_digits()
    build_wine()
    for f in sorted(MODELS.rglob("*")):
        if f.is_file():
            print(f"  {f.relative_to(ROOT)}  {f.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
