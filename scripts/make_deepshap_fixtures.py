#!/usr/bin/env python3
"""Reference Deep SHAP attributions from shap and captum, as test fixtures for explaind's Deep SHAP.

For each case below this writes tests/data/deepshap/<case>/:

  model.onnx          the model (IR version 10, opset 17). Built cases: input `x` float32 with a
                      symbolic batch dim `batch`, output `y`. The digits_cnn case is a verbatim copy
                      of models/digits-cnn/1/model.onnx (input `image`, output `logits`); meta.json
                      names the input and output of every case.
  x.npy               float32 [N, *input_shape], the inputs explained (N = 2 or 3)
  background.npy      float32 [K, *input_shape], the background (K between 10 and 20)
  shap.npy            float32 [N, T, *input_shape]: shap.DeepExplainer(model, background)
                      .shap_values(x) for all T outputs (shap returns (N, *input_shape, T); moved)
  captum.npy          float32 [N, T, *input_shape]: captum.attr.DeepLiftShap(model)
                      .attribute(x, baselines=background, target=t), stacked over t
  expected_value.npy  float32 [T], the mean model output over the background
  meta.json           description, N, K, T, the ONNX file's sha256, library versions, completeness
                      errors max|sum(phi) - (f(x) - E f(bg))| of shap and captum, max|shap - captum|,
                      and compare_with_shap / compare_with_captum: whether explaind's Deep SHAP is
                      expected to match that reference on this case.

The references are computed on a float64 copy of each PyTorch model (the float32 inputs upcast
exactly), so the fixtures carry the reference rules' result with little rounding noise; the
completeness errors are measured against the float64 model outputs. Before anything is written the
ONNX model's onnxruntime output is checked against the float32 PyTorch model on x and the
background (absolute 1e-5).

Deterministic: weights and data come from numpy generators with fixed seeds, torch runs on the CPU
with 2 threads.

Usage (from the repository root; see scripts/requirements-bench.txt for the pinned packages):
    python3 -m venv /tmp/bench-venv
    /tmp/bench-venv/bin/pip install -r scripts/requirements-bench.txt
    /tmp/bench-venv/bin/python scripts/make_deepshap_fixtures.py [case ...]

With no arguments every case is (re)generated.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import shutil
import sys
import warnings
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "2")

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

import captum
import shap
from captum.attr import DeepLiftShap

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "deepshap"
DIGITS = ROOT / "models" / "digits-cnn" / "1"

IR_VERSION = 10  # onnxruntime 1.31 refuses IR > 13 and onnx 1.23 writes 14 by default
OPSET = 17
ORT_TOL = 1e-5

torch.set_num_threads(2)
# (no torch.use_deterministic_algorithms: shap and captum use max_unpool, which has no "deterministic"
# implementation; on the CPU it runs sequentially within each plane, so the results are reproducible)


# ---------------------------------------------------------------- models


def init_params(model: nn.Module, rng: np.random.Generator) -> None:
    """Uniform(-1/sqrt(fan_in), 1/sqrt(fan_in)) for every weight and bias (torch's default scale),
    drawn from numpy so the weights do not depend on torch's RNG."""
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (nn.Linear, nn.Conv2d)):
                fan_in = int(np.prod(mod.weight.shape[1:]))
                b = 1.0 / np.sqrt(fan_in)
                mod.weight.copy_(torch.from_numpy(rng.uniform(-b, b, mod.weight.shape).astype(np.float32)))
                mod.bias.copy_(torch.from_numpy(rng.uniform(-b, b, mod.bias.shape).astype(np.float32)))
            elif isinstance(mod, nn.BatchNorm2d):
                c = mod.num_features
                mod.weight.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, c).astype(np.float32)))
                mod.bias.copy_(torch.from_numpy(rng.normal(0.0, 0.2, c).astype(np.float32)))
                mod.running_mean.copy_(torch.from_numpy(rng.normal(0.0, 0.3, c).astype(np.float32)))
                mod.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 2.0, c).astype(np.float32)))


class Clone(nn.Module):
    """x.clone(): a fresh tensor, so captum's hooks on the modules before and after it see
    different tensors (nn.Identity returns the same tensor and does not help)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clone()


def clone_before_maxpool(model: nn.Module) -> nn.Module | None:
    if not isinstance(model, nn.Sequential) or not any(isinstance(m, nn.MaxPool2d) for m in model):
        return None
    layers = []
    for m in model:
        if isinstance(m, nn.MaxPool2d):
            layers.append(Clone())
        layers.append(m)
    return nn.Sequential(*layers).eval()


class Residual(nn.Module):
    """h = ReLU(fc1(x)); y = fc2(h + x). The Add is the `+` operator: it is linear, so autograd's
    gradient is already the DeepLIFT multiplier, and neither shap nor captum needs to hook it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 6)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.fc1(x)) + x)


def digits_cnn() -> nn.Module:
    """PyTorch twin of models/digits-cnn/1/model.onnx, weights read from its initializers."""
    m = onnx.load(str(DIGITS / "model.onnx"))
    ops = [n.op_type for n in m.graph.node]
    assert ops == ["Conv", "Relu", "MaxPool", "Conv", "Relu", "MaxPool", "Flatten", "Gemm"], ops
    w = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64, 10),
    )
    with torch.no_grad():
        for mod, wn, bn in ((model[0], "W1", "b1"), (model[3], "W2", "b2"), (model[7], "W3", "b3")):
            assert tuple(mod.weight.shape) == w[wn].shape and tuple(mod.bias.shape) == w[bn].shape
            mod.weight.copy_(torch.from_numpy(w[wn].copy()))
            mod.bias.copy_(torch.from_numpy(w[bn].copy()))
    return model.eval()


# ---------------------------------------------------------------- cases


def _data(rng, n, k, shape, kind):
    if kind == "normal":
        draw = lambda m: rng.normal(0.0, 1.0, (m, *shape))
    else:  # image-like, in [0, 1]
        draw = lambda m: rng.uniform(0.0, 1.0, (m, *shape))
    return draw(n).astype(np.float32), draw(k).astype(np.float32)


CAPTUM_RELU_MAXPOOL = (
    "compare_with_captum is false: captum 0.9 is not additive here. Its hooks capture a module's "
    "output gradient with a tensor hook registered in the module's forward hook; a MaxPool whose "
    "input is a hooked ReLU's output registers its own gradient-rewriting hook on that same tensor "
    "later, so the ReLU reads the gradient before the MaxPool rule rewrites it (the plain max-pool "
    "gradient; captum issue #1104). With a module that clones the tensor between ReLU and MaxPool "
    "captum agrees with shap (see captum_clone_before_maxpool)"
)


def case_mlp_tanh_sigmoid():
    rng = np.random.default_rng(101)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 12), nn.Sigmoid(), nn.Linear(12, 4))
    init_params(model, rng)
    x, bg = _data(rng, 3, 16, (8,), "normal")
    return dict(
        description="Linear(8,16)-Tanh-Linear(16,12)-Sigmoid-Linear(12,4), random weights (numpy seed 101)",
        model=model, x=x, background=bg, compare_with_shap=True, compare_with_captum=True,
        seed=101,
    )


def case_cnn_bn_pools():
    rng = np.random.default_rng(102)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(6 * 2 * 2, 5),
    )
    init_params(model, rng)
    x, bg = _data(rng, 2, 12, (1, 8, 8), "uniform")
    return dict(
        description=(
            "Conv2d(1,4,3,pad1)-BatchNorm2d(4) (eval, hand-set running stats)-ReLU-MaxPool2d(2)-"
            "Conv2d(4,6,3,pad1)-ReLU-AvgPool2d(2)-Flatten-Linear(24,5); input [1,8,8] in [0,1]; "
            "random weights (numpy seed 102)"
        ),
        model=model, x=x, background=bg, compare_with_shap=True, compare_with_captum=False,
        note=CAPTUM_RELU_MAXPOOL,
        seed=102,
    )


def case_residual():
    rng = np.random.default_rng(103)
    model = Residual()
    init_params(model, rng)
    x, bg = _data(rng, 3, 10, (6,), "normal")
    return dict(
        description="h = ReLU(Linear(6,6)(x)); y = Linear(6,3)(h + x): a residual Add; random weights (numpy seed 103)",
        model=model, x=x, background=bg, compare_with_shap=True, compare_with_captum=True,
        seed=103,
    )


def case_softmax_mlp():
    rng = np.random.default_rng(104)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3), nn.Softmax(dim=1))
    init_params(model, rng)
    # larger logits than the default init gives, so the softmax is far from uniform
    with torch.no_grad():
        model[2].weight.mul_(3.0)
    x, bg = _data(rng, 3, 14, (5,), "normal")
    return dict(
        description=(
            "Linear(5,8)-ReLU-Linear(8,3)*3-Softmax(dim=1), random weights (numpy seed 104). "
            "shap rescales softmax elementwise (additive, but not the decomposed rule); captum's "
            "softmax handling breaks additivity: neither is a target for explaind"
        ),
        model=model, x=x, background=bg, compare_with_shap=False, compare_with_captum=False,
        seed=104,
    )


def case_overlapping_maxpool():
    rng = np.random.default_rng(105)
    model = nn.Sequential(
        nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, stride=1),
        nn.Flatten(), nn.Linear(3 * 6 * 6, 4),
    )
    init_params(model, rng)
    x, bg = _data(rng, 2, 12, (1, 8, 8), "uniform")
    return dict(
        description=(
            "Conv2d(1,3,3,pad1)-ReLU-MaxPool2d(3,stride=1)-Flatten-Linear(108,4); input [1,8,8] in "
            "[0,1]; random weights (numpy seed 105). Overlapping windows: shap and captum route the "
            "max-pool differences by overwriting instead of adding, so they lose contributions: "
            "neither is a target for explaind, which must stay additive"
        ),
        model=model, x=x, background=bg, compare_with_shap=False, compare_with_captum=False,
        seed=105,
    )


def case_digits_cnn():
    model = digits_cnn()
    x = np.load(DIGITS / "samples.npy")[:2].astype(np.float32)
    bg = np.load(DIGITS / "background.npy")[:20].astype(np.float32)
    return dict(
        description=(
            "the committed demo model models/digits-cnn/1/model.onnx (copied verbatim), explained "
            "with a PyTorch twin built from its initializers: Conv(1->8,3x3,pad1)-Relu-MaxPool2-"
            "Conv(8->16,3x3,pad1)-Relu-MaxPool2-Flatten-Gemm(64->10); x = samples.npy[:2], "
            "background = background.npy[:20]"
        ),
        model=model, x=x, background=bg, compare_with_shap=True, compare_with_captum=False,
        note=CAPTUM_RELU_MAXPOOL,
        onnx_source=DIGITS / "model.onnx", seed=None,
    )


CASES = {
    "mlp_tanh_sigmoid": case_mlp_tanh_sigmoid,
    "cnn_bn_pools": case_cnn_bn_pools,
    "residual": case_residual,
    "softmax_mlp": case_softmax_mlp,
    "overlapping_maxpool": case_overlapping_maxpool,
    "digits_cnn": case_digits_cnn,
}


# ---------------------------------------------------------------- ONNX


def export_onnx(model: nn.Module, example: np.ndarray) -> bytes:
    """Legacy TorchScript exporter, opset 17; BatchNormalization kept as its own node (PRESERVE and
    no constant folding: otherwise the exporter folds it into the Conv)."""
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (torch.from_numpy(example),), f, dynamo=False, opset_version=OPSET,
            input_names=["x"], output_names=["y"],
            dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
            training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False,
        )
    m = onnx.load_from_string(f.getvalue())
    # drop Identity nodes that only alias an initializer (the exporter emits them for equal constants)
    inits = {t.name: t for t in m.graph.initializer}
    for node in list(m.graph.node):
        if node.op_type == "Identity" and node.input[0] in inits:
            t = copy.deepcopy(inits[node.input[0]])
            t.name = node.output[0]
            m.graph.initializer.append(t)
            m.graph.node.remove(node)
    m.ir_version = IR_VERSION
    del m.opset_import[:]
    m.opset_import.append(onnx.helper.make_opsetid("", OPSET))
    onnx.checker.check_model(m, full_check=True)
    return m.SerializeToString()


def ort_run(model_bytes: bytes, x: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def io_names(model_bytes: bytes) -> tuple[str, str, list]:
    m = onnx.load_from_string(model_bytes)
    assert m.ir_version <= IR_VERSION, m.ir_version
    assert [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] == [OPSET]
    inits = {t.name for t in m.graph.initializer}
    (inp,) = [i for i in m.graph.input if i.name not in inits]
    (out,) = m.graph.output
    dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    assert dims[0] == "batch", dims
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    return inp.name, out.name, dims


# ---------------------------------------------------------------- references


def references(model: nn.Module, x: np.ndarray, bg: np.ndarray):
    m64 = copy.deepcopy(model).double().eval()
    x64 = torch.from_numpy(x.astype(np.float64))
    bg64 = torch.from_numpy(bg.astype(np.float64))
    with torch.no_grad():
        fx = m64(x64).numpy()
        fbg = m64(bg64).numpy()
    ev = fbg.mean(0)
    t_count = fx.shape[1]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expl = shap.DeepExplainer(copy.deepcopy(m64), bg64)
        sv = np.asarray(expl.shap_values(x64, check_additivity=False), dtype=np.float64)
    assert sv.shape == (x.shape[0], *x.shape[1:], t_count), sv.shape
    sv = np.moveaxis(sv, -1, 1)  # (N, *in, T) -> (N, T, *in)
    assert np.allclose(np.asarray(expl.expected_value, dtype=np.float64).reshape(-1), ev, atol=1e-12)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dls = DeepLiftShap(copy.deepcopy(m64))
        cv = np.stack(
            [dls.attribute(x64, baselines=bg64, target=t).detach().numpy() for t in range(t_count)],
            axis=1,
        )
    assert cv.shape == sv.shape, (cv.shape, sv.shape)

    delta = fx - ev[None, :]  # [N, T]
    red = tuple(range(2, sv.ndim))
    shap_err = float(np.abs(sv.sum(axis=red) - delta).max())
    captum_err = float(np.abs(cv.sum(axis=red) - delta).max())

    # diagnostic only (not saved as a fixture): captum with a Clone module before each MaxPool
    clone_diag = None
    m_clone = clone_before_maxpool(copy.deepcopy(m64))
    if m_clone is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dls = DeepLiftShap(m_clone)
            cc = np.stack(
                [dls.attribute(x64, baselines=bg64, target=t).detach().numpy() for t in range(t_count)],
                axis=1,
            )
        clone_diag = {
            "completeness_max_abs_err": float(np.abs(cc.sum(axis=red) - delta).max()),
            "vs_shap_max_abs_diff": float(np.abs(cc - sv).max()),
        }
    return dict(shap=sv, captum=cv, expected_value=ev, fx=fx, fbg=fbg,
                shap_err=shap_err, captum_err=captum_err,
                shap_captum=float(np.abs(sv - cv).max()), clone_diag=clone_diag)


# ---------------------------------------------------------------- main


def sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def build(name: str) -> dict:
    case = CASES[name]()
    model: nn.Module = case["model"].eval()
    x, bg = case["x"], case["background"]
    assert x.dtype == np.float32 and bg.dtype == np.float32
    assert 2 <= x.shape[0] <= 3 and 10 <= bg.shape[0] <= 20

    if case.get("onnx_source") is not None:
        model_bytes = Path(case["onnx_source"]).read_bytes()
        extra = np.load(DIGITS / "samples.npy").astype(np.float32)
    else:
        model_bytes = export_onnx(model, x)
        extra = None
    in_name, out_name, dims = io_names(model_bytes)
    assert dims[1:] == list(x.shape[1:]), (dims, x.shape)

    # onnxruntime == torch (float32) on x and the background (and, for digits, all its samples)
    ort_diff = 0.0
    for arr in [a for a in (x, bg, extra) if a is not None]:
        with torch.no_grad():
            want = model(torch.from_numpy(arr)).numpy()
        got = ort_run(model_bytes, arr)
        d = float(np.abs(got - want).max())
        assert d <= ORT_TOL, f"{name}: onnxruntime differs from torch by {d}"
        ort_diff = max(ort_diff, d)

    ref = references(model, x, bg)
    n, t_count = ref["fx"].shape
    out_scale = float(np.abs(np.concatenate([ref["fx"], ref["fbg"]])).max())

    d = OUT / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "model.onnx").write_bytes(model_bytes)
    np.save(d / "x.npy", x)
    np.save(d / "background.npy", bg)
    np.save(d / "shap.npy", ref["shap"].astype(np.float32))
    np.save(d / "captum.npy", ref["captum"].astype(np.float32))
    np.save(d / "expected_value.npy", ref["expected_value"].astype(np.float32))
    meta = {
        "case": name,
        "description": case["description"],
        "seed": case["seed"],
        "input_name": in_name,
        "output_name": out_name,
        "input_shape": list(x.shape[1:]),
        "N": int(n),
        "K": int(bg.shape[0]),
        "T": int(t_count),
        "onnx_sha256": sha256(model_bytes),
        "onnx_ir_version": onnx.load_from_string(model_bytes).ir_version,
        "onnx_opset": OPSET,
        "layout": "shap.npy and captum.npy: float32 [N, T, *input_shape]",
        "reference_dtype": "float64 (a float64 copy of the float32 model; the fixtures are rounded to float32)",
        "versions": {
            "torch": torch.__version__,
            "shap": shap.__version__,
            "captum": captum.__version__,
            "onnxruntime": ort.__version__,
            "onnx": onnx.__version__,
            "numpy": np.__version__,
        },
        "ort_vs_torch_max_abs_diff": ort_diff,
        "max_abs_output": out_scale,
        "shap_completeness_max_abs_err": ref["shap_err"],
        "captum_completeness_max_abs_err": ref["captum_err"],
        "shap_vs_captum_max_abs_diff": ref["shap_captum"],
        "compare_with_shap": case["compare_with_shap"],
        "compare_with_captum": case["compare_with_captum"],
    }
    if case.get("note"):
        meta["note"] = case["note"]
    if ref["clone_diag"] is not None:
        meta["captum_clone_before_maxpool"] = ref["clone_diag"]
    (d / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def main(argv: list[str]) -> int:
    names = argv or list(CASES)
    unknown = [a for a in names if a not in CASES]
    if unknown:
        print(f"unknown case(s): {unknown}; known: {list(CASES)}", file=sys.stderr)
        return 2
    print(f"{'case':22} {'shap err':>10} {'captum err':>10} {'|shap-captum|':>13} {'ort diff':>9}")
    for name in names:
        m = build(name)
        print(f"{name:22} {m['shap_completeness_max_abs_err']:10.3g} "
              f"{m['captum_completeness_max_abs_err']:10.3g} {m['shap_vs_captum_max_abs_diff']:13.3g} "
              f"{m['ort_vs_torch_max_abs_diff']:9.2g}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
