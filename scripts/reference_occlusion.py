#!/usr/bin/env python3
"""Independent brute-force reference for captum's Occlusion attribution.

Deliberately simple: every sliding-window position is occluded and evaluated
one at a time with onnxruntime (batch of 1). Nothing is vectorised. The output
is used as golden data for explaind's own occlusion explainer.

Semantics reproduced (captum.attr.Occlusion, which builds on FeatureAblation):

* The window shape and strides are given without the batch axis.
* Along an axis of length `dim`, with window `win` and stride `s`, captum makes
      count = ceil((dim - win) / s) + 1
  window positions, starting at 0, s, 2s, ...  The last window may therefore
  stick out past the end of the axis; it is CLIPPED to the axis (captum pads
  the ones-tensor with a negative right pad, which crops it). This guarantees
  every element is covered. captum asserts win <= dim, and s <= win unless
  win == dim.
* occluded = x * (1 - mask) + baseline * mask, mask = 1 inside the (clipped)
  window.
* delta_w = f(x)[target] - f(occluded_w)[target].
* attribution[e] = sum of delta_w over windows w covering e
                   / number of windows covering e.
  (captum divides without a guard; with the assertions above the count is
  never 0. We write 0 for an uncovered element, which cannot occur here.)

Usage (from the repository root, venv from scripts/requirements-models.txt):
    python scripts/reference_occlusion.py
Writes tests/data/occlusion_digits_reference.{npy,json} and
tests/data/occlusion_wine_reference.{npy,json}.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data"
EDGE_RULE = ("windows per axis = ceil((dim - window) / stride) + 1, starting at "
             "k*stride; a window extending past the end of the axis is clipped to it "
             "(captum.attr.Occlusion)")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def window_starts(dim: int, win: int, stride: int) -> list[int]:
    """Start positions of the sliding window along one axis (captum's rule)."""
    assert win <= dim, f"window {win} exceeds dimension {dim}"
    assert dim == win or stride <= win, f"stride {stride} larger than window {win}"
    count = math.ceil((dim - win) / stride) + 1
    return [k * stride for k in range(count)]


def all_windows(shape, window, strides):
    """List of windows; each window is a list of (start, stop) per axis, clipped."""
    per_axis = []
    for dim, win, st in zip(shape, window, strides):
        per_axis.append([(s, min(s + win, dim)) for s in window_starts(dim, win, st)])
    return [list(w) for w in itertools.product(*per_axis)]


def model_output(sess, input_name, output_name, x_single):
    """Run the model on one example (no batch axis); return the output row."""
    batch = x_single[np.newaxis].astype(np.float32)
    out = sess.run([output_name], {input_name: batch})[0]
    return out[0]


def occlusion_one(sess, input_name, output_name, x, target, window, strides, baseline):
    """Occlusion attribution for one example x (shape without batch axis)."""
    shape = x.shape
    assert len(window) == len(shape) and len(strides) == len(shape)
    f_x = float(model_output(sess, input_name, output_name, x)[target])

    total = np.zeros(shape, dtype=np.float64)
    count = np.zeros(shape, dtype=np.float64)
    for w in all_windows(shape, window, strides):
        mask = np.zeros(shape, dtype=np.float32)
        mask[tuple(slice(a, b) for a, b in w)] = 1.0
        occluded = x * (1.0 - mask) + np.float32(baseline) * mask
        f_occ = float(model_output(sess, input_name, output_name, occluded)[target])
        delta = f_x - f_occ
        total += delta * mask
        count += mask

    attr = np.zeros(shape, dtype=np.float64)
    covered = count > 0
    attr[covered] = total[covered] / count[covered]
    return attr


def run_reference(name, model_dir, input_name, output_name, n_samples, targets_fn,
                  window, strides, baseline, out_stem, note):
    model_path = model_dir / "model.onnx"
    samples_path = model_dir / "samples.npy"
    sess = session(model_path)
    samples = np.load(samples_path)[:n_samples].astype(np.float32)

    targets = []
    for i in range(n_samples):
        row = model_output(sess, input_name, output_name, samples[i])
        targets.append(targets_fn(int(np.argmax(row))))
    n_t = len(targets[0])

    result = np.zeros((n_samples, n_t) + samples.shape[1:], dtype=np.float64)
    for i in range(n_samples):
        for t in range(n_t):
            result[i, t] = occlusion_one(sess, input_name, output_name, samples[i],
                                         targets[i][t], window, strides, baseline)
    result32 = result.astype(np.float32)

    npy_path = OUT / f"{out_stem}.npy"
    np.save(npy_path, result32)
    windows = all_windows(samples.shape[1:], window, strides)
    meta = {
        "description": note,
        "method": "occlusion (captum.attr.Occlusion semantics), brute force, "
                  "one onnxruntime call per window, batch size 1",
        "generator": "scripts/reference_occlusion.py",
        "model": str(model_path.relative_to(ROOT)),
        "model_sha256": sha256(model_path),
        "input_name": input_name,
        "output_name": output_name,
        "samples_file": str(samples_path.relative_to(ROOT)),
        "samples_sha256": sha256(samples_path),
        "sample_indices": list(range(n_samples)),
        "input_shape": list(samples.shape[1:]),
        "sliding_window_shape": list(window),
        "strides": list(strides),
        "baseline": baseline,
        "window_edge_rule": EDGE_RULE,
        "windows_per_axis": [len(window_starts(d, w, s))
                             for d, w, s in zip(samples.shape[1:], window, strides)],
        "num_windows": len(windows),
        "target_rule": [
            "predicted class (argmax of the output on the unoccluded sample)"
            if k == 0 else f"fixed class {targets[0][k]}" for k in range(n_t)
        ],
        "targets": targets,
        "attribution_formula": "attr[e] = sum_{windows w covering e} (f(x)[t] - f(occlude_w(x))[t]) "
                               "/ #windows covering e; occlude_w(x) = x*(1-mask_w) + baseline*mask_w",
        "result_file": npy_path.name,
        "result_shape": list(result32.shape),
        "result_layout": "[N, T, *input_shape_without_batch]",
        "dtype": "float32 (accumulated in float64)",
        "onnxruntime_version": ort.__version__,
    }
    (OUT / f"{out_stem}.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"{name}: targets {targets}, {len(windows)} windows, result {result32.shape}, "
          f"max |attr| {np.abs(result32).max():.4f}")
    return result32


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    run_reference(
        "digits",
        ROOT / "models" / "digits-cnn" / "1", "image", "logits",
        n_samples=4,
        targets_fn=lambda pred: [pred, 3],
        window=(1, 3, 3), strides=(1, 2, 2), baseline=0.0,
        out_stem="occlusion_digits_reference",
        note="Occlusion of models/digits-cnn/1 on the first 4 samples, targets = "
             "[predicted class, class 3] per sample, logits output.",
    )
    run_reference(
        "wine",
        ROOT / "models" / "wine-mlp" / "1", "features", "probabilities",
        n_samples=3,
        targets_fn=lambda pred: [pred],
        window=(1,), strides=(1,), baseline=0.0,
        out_stem="occlusion_wine_reference",
        note="Occlusion of models/wine-mlp/1 on the first 3 samples, target = "
             "predicted class, probabilities output (raw features, baseline 0).",
    )


if __name__ == "__main__":
    main()
