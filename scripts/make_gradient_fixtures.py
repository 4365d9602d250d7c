#!/usr/bin/env python3
"""Reference attributions from captum's gradient methods, as test fixtures for explaind's gradient
explainer plugins (saliency, gradient-x-input, integrated-gradients, grad-cam).

The models, inputs and backgrounds are those of the Deep SHAP fixtures (tests/data/deepshap/<case>/,
made by scripts/make_deepshap_fixtures.py, whose PyTorch models this script rebuilds: same numpy
seeds, same weights). Before anything is written, each rebuilt model is checked against the
committed ONNX file with onnxruntime (absolute 1e-5), so the references are for the very model the
tests load.

For each case this writes tests/data/gradients/<case>/ (all float32, T = every output):

  saliency.npy             [N, T, *in]  captum Saliency(abs=True)
  saliency_signed.npy      [N, T, *in]  captum Saliency(abs=False)
  input_x_gradient.npy     [N, T, *in]  captum InputXGradient
  ig_<method>.npy          [N, T, *in]  captum IntegratedGradients, baseline 0, n_steps=50, for
                                        method in gausslegendre, riemann_left, riemann_right,
                                        riemann_middle, riemann_trapezoid
  ig_<method>_delta.npy    [N, T]       its convergence delta
  gradcam_<tag>_map.npy    [N, T, h, w] captum LayerGradCam at the layer (channel axis dropped)
  gradcam_<tag>_<mode>.npy [N, T, H, W] that map through LayerAttribution.interpolate to the
                                        input's size (mode nearest or bilinear)
  meta.json                the files, the Grad-CAM layers (ONNX tensor name, captum module,
                           relu_attributions) and the library versions

captum's riemann_trapezoid puts weights 1/n (halved at the two ends) on n points 1/(n - 1) apart, so
they sum to (n - 1)/n; explaind uses the trapezoid rule's weights 1/(n - 1), and the tests scale the
fixture by n/(n - 1) (exact: every weight differs by the same factor) and skip its delta.

captum runs on a float64 copy of each model (inputs upcast exactly), so the references carry little
rounding noise; the fixtures are rounded to float32.

Usage (from the repository root; the packages are pinned in scripts/requirements-bench.txt):
    /tmp/bench-venv/bin/python scripts/make_gradient_fixtures.py
"""

from __future__ import annotations

import copy
import json
import os
import sys
import warnings
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "2")

import numpy as np
import onnxruntime as ort
import torch

import captum
from captum.attr import InputXGradient, IntegratedGradients, LayerAttribution, LayerGradCam, Saliency

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_deepshap_fixtures as deepshap  # noqa: E402  (the fixture models and their data)

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "tests" / "data" / "deepshap"
OUT = ROOT / "tests" / "data" / "gradients"
IG_METHODS = ["gausslegendre", "riemann_left", "riemann_right", "riemann_middle", "riemann_trapezoid"]
IG_STEPS = 50

# Grad-CAM layers per case: tag -> (ONNX tensor name, index of the module in the nn.Sequential
# whose output that tensor is, relu_attributions). The first of each case is the last 2-D
# convolution's output, the layer explaind picks by default.
GRADCAM_LAYERS = {
    "cnn_bn_pools": {
        "last_conv": ("/4/Conv_output_0", 4, True),
        "relu1_no_relu": ("/2/Relu_output_0", 2, False),
    },
    "overlapping_maxpool": {
        "last_conv": ("/0/Conv_output_0", 0, True),
    },
    "digits_cnn": {
        "last_conv": ("conv2", 3, True),
        "relu1_no_relu": ("relu1", 1, False),
    },
}


def ort_run(path: Path, x: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def per_target(fn, t_count: int) -> np.ndarray:
    """Stacks fn(t) over targets on axis 1: [N, T, ...]."""
    return np.stack([fn(t) for t in range(t_count)], axis=1)


def build(name: str) -> dict:
    case = deepshap.CASES[name]()
    model = case["model"].eval()
    x = np.load(SOURCE / name / "x.npy")
    assert np.array_equal(x, case["x"]), f"{name}: x.npy is not what the case builds"
    onnx_path = SOURCE / name / "model.onnx"
    with torch.no_grad():
        want = model(torch.from_numpy(x)).numpy()
    diff = float(np.abs(ort_run(onnx_path, x) - want).max())
    assert diff <= 1e-5, f"{name}: the rebuilt model differs from model.onnx by {diff}"

    m64 = copy.deepcopy(model).double().eval()
    x64 = torch.from_numpy(x.astype(np.float64))
    with torch.no_grad():
        t_count = m64(x64).shape[1]
    out = OUT / name
    out.mkdir(parents=True, exist_ok=True)
    files = {}

    def save(file: str, array: np.ndarray, what: str) -> None:
        np.save(out / file, array.astype(np.float32))
        files[file] = what

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sal = Saliency(m64)
        save("saliency.npy", per_target(lambda t: sal.attribute(x64, target=t, abs=True).detach().numpy(), t_count),
             "Saliency(abs=True)")
        save("saliency_signed.npy",
             per_target(lambda t: sal.attribute(x64, target=t, abs=False).detach().numpy(), t_count),
             "Saliency(abs=False)")
        ixg = InputXGradient(m64)
        save("input_x_gradient.npy", per_target(lambda t: ixg.attribute(x64, target=t).detach().numpy(), t_count),
             "InputXGradient")
        ig = IntegratedGradients(m64)
        for method in IG_METHODS:
            attrs, deltas = [], []
            for t in range(t_count):
                a, d = ig.attribute(x64, target=t, n_steps=IG_STEPS, method=method, return_convergence_delta=True)
                attrs.append(a.detach().numpy())
                deltas.append(d.detach().numpy())
            save(f"ig_{method}.npy", np.stack(attrs, axis=1), f"IntegratedGradients(n_steps={IG_STEPS}, method={method!r})")
            save(f"ig_{method}_delta.npy", np.stack(deltas, axis=1), "its convergence delta [N, T]")

        layers = {}
        for tag, (tensor, index, relu) in GRADCAM_LAYERS.get(name, {}).items():
            gc = LayerGradCam(m64, m64[index])
            maps = per_target(
                lambda t: gc.attribute(x64, target=t, relu_attributions=relu).detach().numpy()[:, 0], t_count
            )
            save(f"gradcam_{tag}_map.npy", maps, f"LayerGradCam at {tensor} (module {index}), relu_attributions={relu}")
            for mode in ("nearest", "bilinear"):
                up = np.stack(
                    [
                        LayerAttribution.interpolate(torch.from_numpy(maps[:, t : t + 1]), tuple(x.shape[2:]), mode)
                        .numpy()[:, 0]
                        for t in range(t_count)
                    ],
                    axis=1,
                )
                save(f"gradcam_{tag}_{mode}.npy", up, f"gradcam_{tag}_map through LayerAttribution.interpolate({mode!r})")
            layers[tag] = {"tensor": tensor, "module_index": index, "relu_attributions": relu}

    meta = {
        "case": name,
        "source": f"tests/data/deepshap/{name} (model.onnx and x.npy)",
        "T": int(t_count),
        "ig_steps": IG_STEPS,
        "ig_baseline": "zeros",
        "gradcam_layers": layers,
        "files": files,
        "reference_dtype": "float64 (a float64 copy of the float32 model; the fixtures are rounded to float32)",
        "ort_vs_torch_max_abs_diff": diff,
        "versions": {"torch": torch.__version__, "captum": captum.__version__, "onnxruntime": ort.__version__,
                     "numpy": np.__version__},
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def main(argv: list[str]) -> int:
    names = argv or list(deepshap.CASES)
    for name in names:
        meta = build(name)
        print(f"{name:22} T={meta['T']} files={len(meta['files'])} gradcam={list(meta['gradcam_layers'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
