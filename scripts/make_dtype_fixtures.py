#!/usr/bin/env python3
"""A model whose inputs are of the element types explaind accepts besides float32 and int64, as
torch.onnx exports them from the example inputs' dtypes: the fixture for Predict and explain
requests in every input type.

The model (torch, fixed weights from torch.manual_seed(7)) scores 3 classes from
  x       float64 [batch, 4]     features in double precision
  codes   int32   [batch, 3]     category codes 0..4, embedded by a table
  mask    bool    [batch, 3]     which codes count (a masked code contributes nothing)
  scale   float16 [batch, 1]     a per-row scale of the logits
  level   uint8   [batch, 1]     an ordinal level, 0..9
and returns `y` float32 [batch, 3]. Exported with torch.onnx.export(dynamo=False, opset 17).

This writes tests/data/dtypes/mixed/:
  model.onnx
  x.npy (float64 [2, 4]), codes.npy (int32 [2, 3]), mask.npy (bool [2, 3]), scale.npy (float16 [2, 1]),
  level.npy (uint8 [2, 1])   the inputs
  y.npy          float32 [2, 3]: onnxruntime's output (checked against torch's to 1e-5)
  occlusion.npy  float32 [2, 3, 3]: y(x)[n, t] - y(codes[n, j] set to 0)[n, t], the other inputs held
  meta.json      the settings and versions

Usage (the packages of scripts/requirements-exporters.txt; CI needs none of them):
    /tmp/exp-venv/bin/python scripts/make_dtype_fixtures.py
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "2")

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "dtypes" / "mixed"
INPUTS = ["x", "codes", "mask", "scale", "level"]


class Mixed(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Linear(4, 3)
        self.table = nn.Embedding(5, 3)
        self.levels = nn.Linear(1, 3)

    def forward(self, x, codes, mask, scale, level):
        dense = self.features(x.float())
        embedded = (self.table(codes.long()) * mask.unsqueeze(-1).float()).sum(1)
        ordinal = self.levels(level.float() / 9.0)
        return (dense + embedded + ordinal) * scale.float()


def main() -> None:
    torch.manual_seed(7)
    model = Mixed().eval()
    rng = np.random.default_rng(7)
    inputs = {
        "x": rng.normal(size=(2, 4)).astype(np.float64),
        "codes": rng.integers(1, 5, size=(2, 3)).astype(np.int32),
        "mask": np.array([[True, True, False], [True, False, True]]),
        "scale": np.array([[1.5], [0.75]], dtype=np.float16),
        "level": np.array([[3], [8]], dtype=np.uint8),
    }
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "model.onnx"
    args = tuple(torch.from_numpy(inputs[k]) for k in INPUTS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, str(path), dynamo=False, opset_version=17, input_names=INPUTS, output_names=["y"],
                          dynamic_axes={**{k: {0: "batch"} for k in INPUTS}, "y": {0: "batch"}})
    onnx.checker.check_model(onnx.load(str(path)))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    declared = {i.name: i.type for i in session.get_inputs()}
    assert declared == {"x": "tensor(double)", "codes": "tensor(int32)", "mask": "tensor(bool)",
                        "scale": "tensor(float16)", "level": "tensor(uint8)"}, declared
    y = session.run(None, inputs)[0]
    with torch.no_grad():
        want = model(*args).numpy()
    assert np.abs(y - want).max() < 1e-5, np.abs(y - want).max()
    occlusion = np.zeros((2, 3, 3), dtype=np.float32)
    for j in range(3):
        occluded = dict(inputs, codes=inputs["codes"].copy())
        occluded["codes"][:, j] = 0
        occlusion[:, :, j] = y - session.run(None, occluded)[0]
    for k in INPUTS:
        np.save(OUT / f"{k}.npy", inputs[k])
    np.save(OUT / "y.npy", y.astype(np.float32))
    np.save(OUT / "occlusion.npy", occlusion)
    meta = {
        "inputs": {k: f"{inputs[k].dtype} {list(inputs[k].shape)}" for k in INPUTS},
        "output": "y float32 [batch, 3]",
        "occlusion": "y(x)[n, t] - y(codes[n, j] = 0)[n, t], window 1 over codes, the other inputs held",
        "versions": {"torch": torch.__version__, "onnx": onnx.__version__, "onnxruntime": ort.__version__,
                     "numpy": np.__version__},
    }
    (OUT / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"y {y.tolist()}; |occlusion| max {np.abs(occlusion).max():.3g}")


if __name__ == "__main__":
    main()
