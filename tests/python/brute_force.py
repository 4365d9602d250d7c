"""Independent, deliberately naive reference explanations computed with onnxruntime in Python.

They share no code with the daemon or its plugins: one perturbed copy of the whole batch per
window (or element), run through an onnxruntime.InferenceSession, accumulated in float64.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import onnxruntime as ort


def session(model_path: Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(model_path), sess_options=opts,
                                providers=["CPUExecutionProvider"])


def _rows(sess: ort.InferenceSession, input_name: str, output_name: str, x: np.ndarray):
    (out,) = sess.run([output_name], {input_name: x.astype(np.float32, copy=False)})
    return out.reshape(out.shape[0], -1).astype(np.float64)


def occlusion(sess, input_name, output_name, x, window, strides, baseline, targets):
    """captum.attr.Occlusion semantics.

    Along an axis of size d with window w and stride s there are ceil((d - w) / s) + 1 windows,
    starting at k*s; a window reaching past the end of the axis is clipped to it. An element's
    attribution is the mean over the windows covering it of f(x)[t] - f(x_occluded)[t]
    (0 where no window covers it). x: [N, *shape]; targets: int [N, T].
    Returns float64 [N, T, *shape].
    """
    x = np.asarray(x, dtype=np.float32)
    shape = x.shape[1:]
    targets = np.asarray(targets, dtype=np.int64)
    n, t = targets.shape
    assert len(window) == len(shape) == len(strides)
    counts = []
    for d, w, s in zip(shape, window, strides):
        assert 1 <= w <= d and s >= 1
        counts.append(math.ceil((d - w) / s) + 1)

    base = _rows(sess, input_name, output_name, x)
    rows = np.arange(n)[:, None]
    f_base = base[rows, targets]  # [N, T]
    total = np.zeros((n, t) + shape, dtype=np.float64)
    cover = np.zeros(shape, dtype=np.int64)
    for starts in itertools.product(*[range(c) for c in counts]):
        region = tuple(
            slice(k * s, min(k * s + w, d)) for k, s, w, d in zip(starts, strides, window, shape)
        )
        xo = x.copy()
        xo[(slice(None),) + region] = baseline
        out = _rows(sess, input_name, output_name, xo)
        diff = f_base - out[rows, targets]  # [N, T]
        total[(slice(None), slice(None)) + region] += diff.reshape((n, t) + (1,) * len(shape))
        cover[region] += 1
    return np.where(cover > 0, total / np.maximum(cover, 1), 0.0)


def leave_one_out(sess, input_name, output_name, x, baseline, targets):
    """attribution[n, t, i] = f(x_n)[target] - f(x_n with element i set to baseline)[target]."""
    x = np.asarray(x, dtype=np.float32)
    shape = x.shape[1:]
    targets = np.asarray(targets, dtype=np.int64)
    n, t = targets.shape
    rows = np.arange(n)[:, None]
    base = _rows(sess, input_name, output_name, x)
    f_base = base[rows, targets]
    out = np.zeros((n, t) + shape, dtype=np.float64)
    for idx in np.ndindex(*shape):
        xo = x.copy()
        xo[(slice(None),) + idx] = baseline
        diff = f_base - _rows(sess, input_name, output_name, xo)[rows, targets]
        out[(slice(None), slice(None)) + idx] = diff
    return out
