#!/usr/bin/env python3
"""Reference figures from captum's `infidelity` and `sensitivity_max` for the faithfulness
metrics of explaind's `evaluate` (tests/python/test_faithfulness.py), written to
tests/data/metrics/wine_deep_shap.json.

captum's metrics are given explaind's own inputs: the explanation (Deep SHAP of the wine MLP,
its default background, three sample rows, every target) and the perturbations explaind drew
under a fixed seed (`return_perturbations`). So the figures must agree to float precision; the
test asks the daemon for the same request and compares.

- infidelity: captum.metrics.infidelity with the forward function onnxruntime's, the
  perturbation function `infidelity_perturb_func_decorator(multiply_by_inputs)` over
  `inputs − ε` (ε: explaind's perturbations, in captum's row order, which repeats each input
  `n_perturb_samples` times), once per target, plain and `normalize=True`, and with
  `multiply_by_inputs` False;
- sensitivity_max: captum.metrics.sensitivity_max with `perturb_func` returning `inputs + u`
  (u: explaind's perturbations) and `explanation_func` asking explaind's Deep SHAP (over gRPC)
  for the perturbed rows, per target, norm 'fro'.

Usage (captum 0.9.0 with torch, onnxruntime, numpy and the project's Python client, as in
scripts/requirements-bench.txt plus `pip install ./clients/python`; a release daemon built):
    /tmp/bench-venv/bin/python scripts/make_metric_fixtures.py
"""
from __future__ import annotations

import json
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch
from captum.metrics import infidelity, infidelity_perturb_func_decorator, sensitivity_max
from explaind_py import Client

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import REPO, start_daemon  # noqa: E402

OUT = REPO / "tests" / "data" / "metrics" / "wine_deep_shap.json"
MODEL = "wine-mlp"
ROWS = 3
SEED = 20261205
INFIDELITY = [
    {"samples": 16, "noise_scale": 0.05, "normalize": False, "multiply_by_inputs": True},
    {"samples": 16, "noise_scale": 0.05, "normalize": True, "multiply_by_inputs": True},
    {"samples": 16, "noise_scale": 0.05, "normalize": False, "multiply_by_inputs": False},
]
SENSITIVITY = {"samples": 4, "radius": 0.05}


def main() -> None:
    torch.set_num_threads(2)
    x = np.load(REPO / "models" / MODEL / "1" / "samples.npy").astype(np.float32)[:ROWS]
    session = ort.InferenceSession(str(REPO / "models" / MODEL / "1" / "model.onnx"), providers=["CPUExecutionProvider"])

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(session.run(["logits"], {"features": inputs.detach().numpy().astype(np.float32)})[0])

    proc, address = start_daemon()
    out = {"model": MODEL, "rows": ROWS, "explainer": "deep-shap", "targets": "all", "seed": SEED,
           "captum": version("captum"), "torch": torch.__version__, "infidelity": [], "sensitivity_max": {}}
    try:
        with Client(address, timeout=600) as client:
            for params in INFIDELITY:
                e = client.explain(MODEL, x, "deep-shap", targets="all", evaluation_seed=SEED,
                                   evaluate={"infidelity": {**params, "return_perturbations": True}})
                eps = e.evaluation["infidelity"].extras["perturbations"]  # [N, S, 13]
                samples = params["samples"]
                flat_eps = torch.from_numpy(eps.reshape(ROWS * samples, -1))

                @infidelity_perturb_func_decorator(params["multiply_by_inputs"])
                def perturb(inputs):
                    return inputs - flat_eps

                figures = np.zeros(e.target_indices.shape)
                for t in range(e.target_indices.shape[1]):
                    figures[:, t] = infidelity(
                        forward, perturb, torch.from_numpy(x), torch.from_numpy(e.values[:, t].copy()),
                        target=e.target_indices[:, t].tolist(), n_perturb_samples=samples,
                        normalize=params["normalize"]).numpy()
                out["infidelity"].append({"parameters": params, "captum": figures.tolist(),
                                          "explaind": e.evaluation["infidelity"].values.tolist()})
                print("infidelity", params, "max |explaind - captum|",
                      float(np.abs(figures - e.evaluation["infidelity"].values).max()))

            e = client.explain(MODEL, x, "deep-shap", targets="all", evaluation_seed=SEED,
                               evaluate={"sensitivity_max": {**SENSITIVITY, "return_perturbations": True}})
            u = e.evaluation["sensitivity_max"].extras["perturbations"]
            flat_u = torch.from_numpy(u.reshape(ROWS * SENSITIVITY["samples"], -1))
            figures = np.zeros(e.target_indices.shape)
            for t in range(e.target_indices.shape[1]):
                def explain(inputs, target=None):
                    # captum passes a tuple of one tensor (and expects a tuple back), or the
                    # tensor itself, as its attribution methods do.
                    rows = (inputs[0] if isinstance(inputs, tuple) else inputs).detach().numpy()
                    if rows.shape[0] == ROWS:  # the unperturbed inputs
                        values = torch.from_numpy(e.values[:, t].copy())
                    else:
                        again = client.explain(MODEL, rows, "deep-shap", targets=[int(e.target_indices[0, t])])
                        values = torch.from_numpy(again.values[:, 0].copy())
                    return (values,) if isinstance(inputs, tuple) else values

                def perturb(inputs, perturb_radius: float) -> torch.Tensor:
                    return (inputs[0] if isinstance(inputs, tuple) else inputs) + flat_u

                assert len(set(e.target_indices[:, t].tolist())) == 1, "targets 'all': the same index on every row"
                figures[:, t] = sensitivity_max(explain, torch.from_numpy(x), perturb_func=perturb,
                                                perturb_radius=SENSITIVITY["radius"],
                                                n_perturb_samples=SENSITIVITY["samples"]).numpy()
            out["sensitivity_max"] = {"parameters": SENSITIVITY, "captum": figures.tolist(),
                                      "explaind": e.evaluation["sensitivity_max"].values.tolist()}
            print("sensitivity_max max |explaind - captum|",
                  float(np.abs(figures - e.evaluation["sensitivity_max"].values).max()))
    finally:
        proc.kill()
        proc.wait()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
