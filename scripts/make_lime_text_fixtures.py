#!/usr/bin/env python3
"""Reference numbers from lime's `LimeTextExplainer` for tests/lime.rs (text mode), written to
tests/data/lime/text/bert_tiny.json.

The model is tests/data/tokens/bert_tiny (int64 `input_ids` and `attention_mask` [batch, 10],
`logits` [batch, 3]; [PAD] = 0, [CLS] = 1, [SEP] = 2), its two input rows explained for all
three logits, the attention mask held at the row's.

lime explains strings, so each row becomes one: token id i is the word "t<i>", words separated
by spaces. The settings make lime's features the plugin's:
- `split_expression` is a tokenizer that returns the words of the row's positions whose id is
  not the mask id ([PAD]): every other position is one feature, and positions already equal to
  the mask id are no features (lime's doc_size counts only the others), as in explaind;
- `bow=False`, so a feature is a position (a word repeated is two features), and
  `mask_string="t0"`: a hidden position becomes [PAD], the plugin's default `mask_id`;
- the classifier parses the perturbed string back into ids (10 per row) and runs onnxruntime.
Everything else is lime's default: kernel width 25 on the cosine distance x 100, 5000 samples,
10 features ('auto' selection: highest weights, so here every feature), ridge alpha 1.

lime's sampling cannot be reproduced outside numpy, so the references are its spread over 20
seeds: per row, label and position the mean and standard deviation of the coefficient (0 at
positions that are no features), of the intercept, the weighted R^2 (score) and the local
prediction, and per seed the positions ranked by |coefficient|.

Usage (lime 0.2.0.1 with onnxruntime and numpy: the packages of scripts/requirements-bench.txt,
as for scripts/make_lime_fixtures.py):
    /tmp/bench-venv/bin/python scripts/make_lime_text_fixtures.py
"""
from __future__ import annotations

import hashlib
import json
import re
from importlib.metadata import version
from pathlib import Path

import numpy as np
import onnxruntime as ort
import sklearn
from lime.lime_text import IndexedString, LimeTextExplainer

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "tests" / "data" / "tokens" / "bert_tiny"
OUT = REPO / "tests" / "data" / "lime" / "text"
SEEDS = range(20)
MASK_ID = 0  # [PAD]
NUM_SAMPLES = 5000
NUM_FEATURES = 10
KERNEL_WIDTH = 25.0


def summary(values) -> dict:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std())}


def main() -> None:
    path = MODEL / "model.onnx"
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ids = np.load(MODEL / "input_ids.npy")
    masks = np.load(MODEL / "attention_mask.npy")
    labels = tuple(range(sess.get_outputs()[0].shape[1]))

    rows = []
    for n in range(ids.shape[0]):
        row, mask = ids[n], masks[n]
        text = " ".join(f"t{i}" for i in row)
        features = [p for p in range(row.size) if row[p] != MASK_ID]

        def tokenizer(_text: str, row=row) -> list[str]:
            return [f"t{i}" for i in row if i != MASK_ID]

        def classifier(texts: list[str], mask=mask) -> np.ndarray:
            batch = np.array([[int(w[1:]) for w in t.split()] for t in texts], dtype=np.int64)
            assert batch.shape[1] == row.size
            held = np.repeat(mask[None, :], len(texts), axis=0)
            return sess.run(["logits"], {"input_ids": batch, "attention_mask": held})[0]

        coefs = {t: [[] for _ in range(row.size)] for t in labels}
        per = {t: {"intercept": [], "score": [], "local_prediction": [], "ranking": []} for t in labels}
        for seed in SEEDS:
            explainer = LimeTextExplainer(kernel_width=KERNEL_WIDTH, split_expression=tokenizer, bow=False,
                                          mask_string=f"t{MASK_ID}", random_state=seed)
            # explain_instance's own steps (lime_text.py), keeping every label's score and local
            # prediction (explain_instance keeps the last label's only): one neighbourhood per seed,
            # one local model per label on it.
            indexed = IndexedString(text, split_expression=tokenizer, bow=False, mask_string=f"t{MASK_ID}")
            assert indexed.inverse_vocab == [f"t{row[p]}" for p in features], indexed.inverse_vocab
            data, yss, distances = explainer._LimeTextExplainer__data_labels_distances(indexed, classifier, NUM_SAMPLES)
            for t in labels:
                intercept, local_exp, score, local_pred = explainer.base.explain_instance_with_data(
                    data, yss, distances, t, NUM_FEATURES, feature_selection="auto")
                by_position = {features[f]: float(w) for f, w in local_exp}
                for p in range(row.size):
                    coefs[t][p].append(by_position.get(p, 0.0))
                per[t]["intercept"].append(float(intercept))
                per[t]["score"].append(float(score))
                per[t]["local_prediction"].append(float(np.ravel(local_pred)[0]))
                per[t]["ranking"].append([features[f] for f, _ in local_exp])
        rows.append({
            "row": n,
            "input_ids": row.tolist(),
            "attention_mask": mask.tolist(),
            "features": features,
            "logits": classifier([text])[0].astype(np.float64).tolist(),
            "labels": [{
                "label": t,
                "coefficients": [summary(c) for c in coefs[t]],
                "intercept": summary(per[t]["intercept"]),
                "score": summary(per[t]["score"]),
                "local_prediction": summary(per[t]["local_prediction"]),
                "ranking_per_seed": per[t]["ranking"],
            } for t in labels],
        })

    data = {
        "lime_version": version("lime"),
        "numpy": np.__version__,
        "onnxruntime": ort.__version__,
        "scikit_learn": sklearn.__version__,
        "scipy": version("scipy"),
        "model": "tests/data/tokens/bert_tiny",
        "model_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "output": "logits",
        "explained_input": "input_ids",
        "held_inputs": ["attention_mask"],
        "settings": {
            "explainer": "LimeTextExplainer(bow=False, split_expression=<the row's non-mask tokens>, "
                         "mask_string='t0', kernel_width=25, random_state=seed)",
            "mask_id": MASK_ID,
            "num_samples": NUM_SAMPLES,
            "num_features": NUM_FEATURES,
            "feature_selection": "auto",
            "kernel_width": KERNEL_WIDTH,
            "distance": "cosine x 100",
        },
        "seeds": len(SEEDS),
        "rows": rows,
    }
    OUT.mkdir(parents=True, exist_ok=True)
    out = OUT / "bert_tiny.json"
    # Lists of numbers and the mean/std pairs on one line each: the file stays short to read.
    one_line = lambda m: re.sub(r"\s+", " ", m.group(0)).replace("[ ", "[").replace(" ]", "]").replace("{ ", "{").replace(" }", "}")
    text = re.sub(r"\[[-0-9.e,\s]*\]", one_line, json.dumps(data, indent=1))
    text = re.sub(r"\{\s*\"mean\": [^,]*,\s*\"std\": [^}\s]*\s*\}", one_line, text)
    out.write_text(text + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
