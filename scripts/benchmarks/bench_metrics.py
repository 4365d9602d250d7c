#!/usr/bin/env python3
"""Benchmark: what each faithfulness metric costs beside the explanation it is about, in
explaind, and against captum's `infidelity` and `sensitivity_max` on the same explanation in
the same run.

Models: the wine MLP (13 features) and the digits CNN (8x8 images), 64 rows each (the samples repeated), each
explained by Deep SHAP over its default background for the predicted class. For each model:
- explaind: the explanation alone, then with each metric (its default parameters, a fixed
  seed); a metric's cost is the difference of the medians, also as a ratio to the explanation;
- captum 0.9.0, given explaind's attributions: `infidelity` with onnxruntime as the forward
  function (the same engine explaind runs) and explaind's default perturbation (Gaussian,
  sigma 0.1, 10 samples, multiply_by_inputs), and `sensitivity_max` with the explanation
  function asking explaind's Deep SHAP over gRPC (captum orchestrates, explaind explains;
  10 samples, radius 0.02). The figures differ only by their random draws.

Times: one untimed call, then the median of REPEATS, as a gRPC round trip for explaind and an
in-process call for captum. Markdown for BENCHMARKS.md.

Usage (scripts/setup/requirements-bench.txt plus `pip install ./clients/python`):
    cargo build --release --workspace && /tmp/bench-venv/bin/python scripts/benchmarks/bench_metrics.py
"""
from __future__ import annotations

import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from captum.metrics import infidelity, infidelity_perturb_func_decorator, sensitivity_max
from explaind_py import Client

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO, start_daemon  # noqa: E402

REPEATS = 9
ROWS = 64
METRICS = ["completeness", "infidelity", "deletion", "insertion", "sensitivity_max"]


def median_seconds(call) -> float:
    call()
    times = []
    for _ in range(REPEATS):
        began = time.perf_counter()
        call()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def bench(client: Client, model: str, input_name: str, output: str) -> None:
    directory = REPO / "models" / model / "1"
    samples = np.load(directory / "samples.npy").astype(np.float32)
    x = samples[np.arange(ROWS) % len(samples)]
    session = ort.InferenceSession(str(directory / "model.onnx"), providers=["CPUExecutionProvider"])

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run([output], {input_name: inputs.detach().numpy().astype(np.float32)})[0])

    def explain(**kwargs):
        return client.explain(model, x, "deep-shap", evaluation_seed=7, **kwargs)

    alone = median_seconds(explain)
    print(f"\n### {model}: Deep SHAP of {ROWS} rows, predicted class\n")
    print(f"Explanation alone: {alone * 1e3:.1f} ms\n")
    print("| metric | explaind: metric's cost (ms) | / explanation | captum (ms) | captum / explaind |")
    print("|---|---|---|---|---|")
    e = explain()
    attributions = torch.from_numpy(e.values[:, 0].copy())
    targets = e.target_indices[:, 0].tolist()
    captum_calls = {}

    @infidelity_perturb_func_decorator(True)
    def gaussian(inputs):
        return inputs - torch.randn_like(inputs) * 0.1

    captum_calls["infidelity"] = lambda: infidelity(forward, gaussian, torch.from_numpy(x), attributions,
                                                     target=targets, n_perturb_samples=10)

    def explanation_func(inputs, target):
        # captum passes each row's target (repeated per perturbation); explaind takes one list
        # of indices per request, so one request per distinct target, with its rows only.
        rows = (inputs[0] if isinstance(inputs, tuple) else inputs).detach().numpy()
        per_row = np.asarray(target)
        out = np.zeros_like(rows)
        for t in np.unique(per_row):
            chosen = per_row == t
            out[chosen] = client.explain(model, rows[chosen], "deep-shap", targets=[int(t)]).values[:, 0]
        out = torch.from_numpy(out)
        return (out,) if isinstance(inputs, tuple) else out

    captum_calls["sensitivity_max"] = lambda: sensitivity_max(explanation_func, torch.from_numpy(x),
                                                               n_perturb_samples=10, target=targets)
    for metric in METRICS:
        with_metric = median_seconds(lambda: explain(evaluate=[metric]))
        cost = with_metric - alone
        cell = ""
        if metric in captum_calls:
            theirs = median_seconds(captum_calls[metric])
            cell = f"{theirs * 1e3:.1f} | {theirs / max(cost, 1e-9):.2f}x"
        else:
            cell = "— | —"
        print(f"| {metric} | {cost * 1e3:.1f} | {cost / alone:.2f} | {cell} |")


def main() -> None:
    torch.set_num_threads(2)
    print(f"{platform.machine()}, {platform.processor() or 'cpu'}, torch {torch.__version__} (2 threads), "
          f"onnxruntime {ort.__version__}; median of {REPEATS} after one warm-up")
    proc, address = start_daemon("--intra-threads", "2")
    try:
        with Client(address, timeout=600) as client:
            bench(client, "wine-mlp", "features", "logits")
            bench(client, "digits-cnn", "image", "logits")
    finally:
        proc.kill()
        proc.wait()


if __name__ == "__main__":
    main()
