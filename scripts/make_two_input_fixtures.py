#!/usr/bin/env python3
"""Two models for the faithfulness metrics' tests (tests/python/test_faithfulness.py), as
torch.onnx exports them: one with two float32 inputs, for metrics on one input while the other
is held at each row's values, and a linear one, whose exact Shapley values are the constructed
perfect explanation.

The model (torch, fixed weights from torch.manual_seed(11)) scores 3 classes from
  image  float32 [batch, 6]   the explained features
  meta   float32 [batch, 2]   side information, held
as logits = W2 relu(W1 [image, meta] + b1) + b2 (hidden 8). Exported with
torch.onnx.export(dynamo=False, opset 17), batch axis dynamic.

This writes the model repository tests/data/two_inputs/:
  two_inputs/1/model.onnx, image.npy, meta.npy (float32 [4, 6] and [4, 2], seeded normal
                      draws), meta.json (the settings and versions)
  linear/1/model.onnx  logits = W x + b, x float32 [batch, 5], 2 outputs (torch.nn.Linear,
                      torch.manual_seed(12)), and x.npy [3, 5]

Usage (torch and onnxruntime, as in scripts/requirements-bench.txt; CI needs none of them):
    /tmp/bench-venv/bin/python scripts/make_two_input_fixtures.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

REPOSITORY = Path(__file__).resolve().parent.parent / "tests" / "data" / "two_inputs"
OUT = REPOSITORY / "two_inputs" / "1"


class TwoInputs(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = torch.nn.Linear(8, 8)
        self.out = torch.nn.Linear(8, 3)

    def forward(self, image: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(self.hidden(torch.cat([image, meta], dim=1))))


def main() -> None:
    torch.manual_seed(11)
    model = TwoInputs().eval()
    rng = np.random.default_rng(11)
    image = rng.normal(size=(4, 6)).astype(np.float32)
    meta = rng.normal(size=(4, 2)).astype(np.float32)
    OUT.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, (torch.from_numpy(image), torch.from_numpy(meta)), str(OUT / "model.onnx"),
                      input_names=["image", "meta"], output_names=["logits"], opset_version=17, dynamo=False,
                      dynamic_axes={"image": {0: "batch"}, "meta": {0: "batch"}, "logits": {0: "batch"}})
    with torch.no_grad():
        expected = model(torch.from_numpy(image), torch.from_numpy(meta)).numpy()
    session = ort.InferenceSession(str(OUT / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"image": image, "meta": meta})[0]
    assert np.allclose(got, expected, atol=1e-5), "onnxruntime disagrees with torch"
    np.save(OUT / "image.npy", image)
    np.save(OUT / "meta.npy", meta)
    (OUT / "meta.json").write_text(json.dumps({"torch": torch.__version__, "onnxruntime": ort.__version__,
                                               "seed": 11, "opset": 17}, indent=1) + "\n")
    print("wrote", OUT)

    torch.manual_seed(12)
    linear = torch.nn.Linear(5, 2).eval()
    x = np.random.default_rng(12).normal(size=(3, 5)).astype(np.float32)
    out = REPOSITORY / "linear" / "1"
    out.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(linear, (torch.from_numpy(x),), str(out / "model.onnx"), input_names=["x"], output_names=["logits"],
                      opset_version=17, dynamo=False, dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}})
    np.save(out / "x.npy", x)
    print("wrote", out)


if __name__ == "__main__":
    main()
