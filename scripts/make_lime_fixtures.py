#!/usr/bin/env python3
"""Reference numbers from the `lime` package for tests/lime.rs, written to tests/data/lime/.

lime's sampling cannot be reproduced bit for bit outside numpy, so the references are what a
seeded run must agree with:
- the discretiser lime fits on wine-mlp's background (lime's `training_data`): quartiles, bin
  edges, per-bin frequencies, means and standard deviations, and the bins of the samples;
- explanations of wine samples with lime's defaults (5000 samples, quartile discretisation,
  kernel width 0.75*sqrt(13), 10 features, ridge), over 20 seeds: the top features and the
  mean and spread of every coefficient, intercept, weighted R^2 and local prediction;
- LimeImageExplainer on a digits image with four fixed quadrant superpixels (so the
  segmentation is out of the comparison), 1000 samples, mean-colour hiding, over 20 seeds.

Both models run through onnxruntime. Run with the benchmark venv:
    /tmp/bench-venv/bin/python scripts/make_lime_fixtures.py
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import lime
from lime.lime_image import LimeImageExplainer
from lime.lime_tabular import LimeTabularExplainer

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "data" / "lime"
SEEDS = range(20)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def session(model: str):
    path = REPO / "models" / model / "1" / "model.onnx"
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]), sha256(path)


def summary(values: list[float]) -> dict:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std())}


def tabular() -> dict:
    sess, model_sha = session("wine-mlp")
    version = REPO / "models" / "wine-mlp" / "1"
    background = np.load(version / "background.npy").astype(np.float64)
    samples = np.load(version / "samples.npy")

    def predict(rows: np.ndarray) -> np.ndarray:
        return sess.run(["probabilities"], {"features": rows.astype(np.float32)})[0]

    explainer = LimeTabularExplainer(background, discretize_continuous=True, random_state=0)
    disc = explainer.discretizer
    m = background.shape[1]
    quartiles = [np.percentile(background[:, j], [25, 50, 75]).tolist() for j in range(m)]
    edges = [disc.mins[j][1:] for j in range(m)]
    freqs = [explainer.feature_frequencies[j].tolist() for j in range(m)]
    values = [[int(v) for v in explainer.feature_values[j]] for j in range(m)]
    # Frequencies by bin index (bins with no training row are absent from lime's lists).
    freq_by_bin = []
    for j in range(m):
        row = [0.0] * (len(edges[j]) + 1)
        for v, f in zip(values[j], freqs[j]):
            row[v] = f
        freq_by_bin.append(row)
    # lime returns the standardised bound instead of a value for a bin whose bounds are equal;
    # none of wine's are, so both implementations sample the same distributions here.
    degenerate = [[j, b] for j in range(m) for b in range(len(edges[j]) + 1) if disc.mins[j][b] == disc.maxs[j][b]]

    cases = []
    for n in range(3):
        x = samples[n].astype(np.float64)
        label = int(predict(samples[n:n + 1]).argmax())
        coefs = {j: [] for j in range(m)}
        tops, intercepts, scores, local = [], [], [], []
        for seed in SEEDS:
            e = LimeTabularExplainer(background, discretize_continuous=True, random_state=seed)
            exp = e.explain_instance(x, predict, labels=(label,), num_features=10, num_samples=5000)
            pairs = exp.local_exp[label]
            tops.append([int(i) for i, _ in pairs])
            selected = dict(pairs)
            for j in range(m):
                coefs[j].append(float(selected.get(j, 0.0)))
            intercepts.append(float(exp.intercept[label]))
            scores.append(float(exp.score))
            local.append(float(np.ravel(exp.local_pred)[0]))
        cases.append({
            "sample": n,
            "label": label,
            "instance_bins": [int(v) for v in disc.discretize(x)],
            "top_features_per_seed": tops,
            "coefficients": [summary(coefs[j]) for j in range(m)],
            "intercept": summary(intercepts),
            "score": summary(scores),
            "local_prediction": summary(local),
        })
    return {
        "model": "wine-mlp",
        "output": "probabilities",
        "model_sha256": model_sha,
        "background_sha256": sha256(version / "background.npy"),
        "seeds": len(SEEDS),
        "kernel_width": float(np.sqrt(m) * 0.75),
        "quartiles": quartiles,
        "bin_edges": [[float(v) for v in e] for e in edges],
        "bin_frequencies": freq_by_bin,
        "bin_means": [[float(v) for v in disc.means[j]] for j in range(m)],
        "bin_stds": [[float(v) for v in disc.stds[j]] for j in range(m)],
        "degenerate_bins": degenerate,
        "cases": cases,
    }


def image() -> dict:
    sess, model_sha = session("digits-cnn")
    samples = np.load(REPO / "models" / "digits-cnn" / "1" / "samples.npy")
    x = samples[0, 0].astype(np.float64)  # [8, 8]
    segments = np.zeros((8, 8), dtype=np.int64)
    segments[:4, 4:] = 1
    segments[4:, :4] = 2
    segments[4:, 4:] = 3

    def predict(images: np.ndarray) -> np.ndarray:
        # lime hands RGB copies of the grey image; the model takes one channel.
        return sess.run(["logits"], {"image": images[..., :1].transpose(0, 3, 1, 2).astype(np.float32)})[0]

    label = int(predict(np.repeat(x[None, :, :, None], 3, axis=3)).argmax())
    coefs, intercepts, scores, local = [[] for _ in range(4)], [], [], []
    for seed in SEEDS:
        explainer = LimeImageExplainer(random_state=seed)
        exp = explainer.explain_instance(x, predict, labels=(label,), top_labels=None, hide_color=None,
                                         num_samples=1000, batch_size=1000,
                                         segmentation_fn=lambda image: segments, random_seed=seed)
        selected = dict(exp.local_exp[label])
        for s in range(4):
            coefs[s].append(float(selected.get(s, 0.0)))
        intercepts.append(float(exp.intercept[label]))
        scores.append(float(exp.score))
        local.append(float(np.ravel(exp.local_pred)[0]))
    return {
        "model": "digits-cnn",
        "output": "logits",
        "model_sha256": model_sha,
        "sample": 0,
        "label": label,
        "segments": segments.reshape(-1).tolist(),
        "seeds": len(SEEDS),
        "coefficients": [summary(c) for c in coefs],
        "intercept": summary(intercepts),
        "score": summary(scores),
        "local_prediction": summary(local),
    }


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    meta = {"lime_version": "0.2.0.1", "numpy": np.__version__, "onnxruntime": ort.__version__}
    for name, make in [("tabular_wine.json", tabular), ("image_digits.json", image)]:
        data = {**meta, **make()}
        (OUT / name).write_text(json.dumps(data, indent=1) + "\n")
        print(f"wrote {OUT / name}")


if __name__ == "__main__":
    main()
