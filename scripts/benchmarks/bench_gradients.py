#!/usr/bin/env python3
"""Benchmark: explaind's gradient explainers through gRPC against captum (PyTorch, 2 threads) on the
same models and inputs, in one run. Prints a Markdown table for BENCHMARKS.md.

Cases, each for one input and all 10 classes:
  models/digits-cnn (8x8, two convs) and the mid-size CNN of bench_deep_shap.py (3x32x32, four
  3x3 convs of 32-64 channels, two max-pools, two dense layers; weights from a numpy seed);
  methods: saliency, gradient x input, integrated gradients (Gauss-Legendre, 50 steps),
  Grad-CAM at the last convolution, SmoothGrad over saliency (20 samples).
captum is called the fast way: the input repeated once per class with target=[0..9] in one call
(IntegratedGradients and NoiseTunnel batch all their steps/samples into one forward-backward).
Before timing, the attributions of both sides are compared (deterministic methods: max abs
difference printed and checked against 1e-3).

Usage (from the repository root; release build first):
    cargo build --release --workspace
    /tmp/bench-venv/bin/python scripts/benchmarks/bench_gradients.py
"""
from __future__ import annotations

import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "2")

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts" / "benchmarks"))

from bench_deep_shap import Client, build_repository, fmt_s, mid_cnn, mid_data, timed, values  # noqa: E402
from benchlib import generate_stubs, start_daemon  # noqa: E402

REPEATS = 10
CLASSES = 10
IG_STEPS = 50
SMOOTHGRAD_SAMPLES = 20


def digits_torch():
    sys.path.insert(0, str(REPO / "scripts" / "fixtures"))
    from make_deepshap_fixtures import digits_cnn
    return digits_cnn()


def captum_methods(model, last_conv):
    """method -> fn(x repeated per class, targets) -> attributions [T, *in] (float32 numpy)."""
    from captum.attr import (InputXGradient, IntegratedGradients, LayerAttribution, LayerGradCam, NoiseTunnel,
                             Saliency)

    sal, ixg, ig = Saliency(model), InputXGradient(model), IntegratedGradients(model)
    gc, nt = LayerGradCam(model, last_conv), NoiseTunnel(Saliency(model))

    def gradcam(x, t):
        maps = gc.attribute(x, target=t, relu_attributions=True)
        return LayerAttribution.interpolate(maps, tuple(x.shape[2:]), "nearest").expand_as(x)

    return {
        "saliency": lambda x, t: sal.attribute(x, target=t, abs=True),
        "gradient-x-input": lambda x, t: ixg.attribute(x, target=t),
        "integrated-gradients": lambda x, t: ig.attribute(x, target=t, n_steps=IG_STEPS, method="gausslegendre"),
        "grad-cam": gradcam,
        "smoothgrad": lambda x, t: nt.attribute(x, nt_type="smoothgrad", nt_samples=SMOOTHGRAD_SAMPLES,
                                                stdevs=0.15, target=t, abs=True),
    }


def explaind_request(client: Client, model: str, input_name: str, output: str, x: np.ndarray, method: str):
    pb = client.pb
    params = {}
    if method == "integrated-gradients":
        params = {"steps": pb.ParamValue(integer=IG_STEPS)}
    elif method == "smoothgrad":
        params = {"samples": pb.ParamValue(integer=SMOOTHGRAD_SAMPLES), "stdev": pb.ParamValue(number=0.15)}
    return pb.ExplainRequest(model=pb.ModelRef(name=model), explainer=method, output=output,
                             inputs=[pb.NamedTensor(name=input_name, tensor=client.tensor(x))],
                             targets=pb.Targets(all=pb.AllOutputs()), parameters=params)


def run_case(client: Client, name: str, model_name: str, input_name: str, output: str, torch_model, last_conv,
             x: np.ndarray) -> list[dict]:
    import torch

    rows = []
    xt = torch.from_numpy(np.repeat(x, CLASSES, axis=0))
    targets = list(range(CLASSES))
    methods = captum_methods(torch_model, last_conv)
    for method, fn in methods.items():
        req = explaind_request(client, model_name, input_name, output, x, method)
        ours = values(client.explain(req).attributions[0].values)[0]  # compiles the graph
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = fn(xt, targets).detach().numpy()
        diff = float(np.abs(ours - theirs).max())
        if method != "smoothgrad":  # random noise on both sides: not comparable element by element
            assert diff <= 1e-3, f"{name} {method}: explaind and captum differ by {diff}"

        def captum_run():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fn(xt, targets)

        e = statistics.median(timed(lambda: client.explain(req), REPEATS))
        c = statistics.median(timed(captum_run, REPEATS))
        rows.append(dict(case=name, method=method, explaind=e, captum=c, diff=diff))
        print(f"# {name} {method}: explaind {fmt_s(e)}, captum {fmt_s(c)}, max|diff| {diff:.2g}", file=sys.stderr)
    return rows


def main() -> int:
    import torch

    torch.set_num_threads(2)
    generate_stubs()
    x_mid, _ = mid_data()
    mid = mid_cnn()
    digits = digits_torch()
    x_digits = np.load(REPO / "models" / "digits-cnn" / "1" / "samples.npy")[:1].astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="explaind-bench-") as tmp:
        repo = Path(tmp)
        build_repository(repo, mid, x_mid)
        proc, addr = start_daemon("--models", str(repo))
        try:
            client = Client(addr)
            rows = run_case(client, "digits CNN (1x8x8)", "digits-cnn", "image", "logits", digits, digits[3], x_digits)
            rows += run_case(client, "mid-size CNN (3x32x32)", "mid-cnn", "x", "y", mid, mid[7], x_mid)
        finally:
            proc.kill()
            shutil.rmtree(repo, ignore_errors=True)

    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; "
          f"load average before the run {os.getloadavg()[0]:.2f}")
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads); median of {REPEATS} warm runs each; "
          "one input, all 10 classes.\n")
    print("| case | method | explaind | captum | captum / explaind | max abs diff |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {r['method']} | {fmt_s(r['explaind'])} | {fmt_s(r['captum'])} | "
              f"{r['captum'] / r['explaind']:.1f}x | {r['diff']:.1g} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
