#!/usr/bin/env python3
"""A text classifier as users export it, with captum's token attributions: the fixture for
explaining integer-input (token id) models.

The model is a small BERT-family classifier (`transformers.BertForSequenceClassification`,
random weights, 2 layers, hidden 32, vocabulary 100, 3 labels), exported with
`torch.onnx.export(..., dynamo=False, opset_version=17)` with the inputs users feed it:
`input_ids` and `attention_mask`, both int64 [batch, sequence], and the output `logits`.

This writes tests/data/tokens/bert_tiny/:

  model.onnx           inputs input_ids, attention_mask (int64 [batch, 10]); output logits [batch, 3]
  input_ids.npy        int64 [2, 10]: [CLS] tokens... [SEP] [PAD]..., the second row padded
  attention_mask.npy   int64 [2, 10]: 1 on tokens, 0 on padding
  baseline_ids.npy     int64 [2, 10]: the [PAD] id everywhere except [CLS] and [SEP], kept
                       (captum's tutorial baseline)
  logits.npy           float32 [2, 3]: the model's logits (onnxruntime checked against torch)
  lig.npy              float32 [2, 3, 10]: captum LayerIntegratedGradients on the word embedding
                       layer (`bert.embeddings.word_embeddings`), baseline_ids as the baseline,
                       the attention mask held at the input's, gausslegendre, n_steps=IG_STEPS,
                       per target class, summed over the embedding axis (per token)
  lig_embedding.npy    float32 [2, 3, 10, 32]: the same before summing
  lig_delta.npy        float32 [2, 3]: captum's convergence delta (completeness at the layer)
  meta.json            ids of the special tokens, the settings, library versions

captum runs on a float64 copy of the model. Padded positions: captum's values there come from
the word embedding of [PAD] on both sides of the path (equal), so they are exactly 0.

Usage (the packages of scripts/requirements-exporters.txt; CI needs none of them):
    /tmp/exp-venv/bin/python scripts/make_token_fixtures.py
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import warnings
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "2")

import numpy as np
import onnx
import onnxruntime as ort
import torch
import transformers
from torch import nn

import captum
from captum.attr import LayerIntegratedGradients

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "tokens" / "bert_tiny"
PAD, CLS, SEP = 0, 1, 2
SEQUENCE = 10
IG_STEPS = 32

torch.set_num_threads(2)


class Classifier(nn.Module):
    """The logits, as the one output users read."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def build() -> Classifier:
    torch.manual_seed(18)
    config = transformers.BertConfig(
        vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        max_position_embeddings=32, num_labels=3, pad_token_id=PAD, attn_implementation="eager",
    )
    return Classifier(transformers.BertForSequenceClassification(config)).eval()


def inputs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(18)
    ids = np.full((2, SEQUENCE), PAD, dtype=np.int64)
    mask = np.zeros((2, SEQUENCE), dtype=np.int64)
    for row, length in enumerate((SEQUENCE, 7)):
        ids[row, 0] = CLS
        ids[row, 1 : length - 1] = rng.integers(3, 100, size=length - 2)
        ids[row, length - 1] = SEP
        mask[row, :length] = 1
    baseline = np.where((ids == CLS) | (ids == SEP), ids, PAD)
    return ids, mask, baseline


def main() -> None:
    model = build()
    ids, mask, baseline = inputs()
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model, (torch.from_numpy(ids), torch.from_numpy(mask)), str(path), dynamo=False, opset_version=17,
            input_names=["input_ids", "attention_mask"], output_names=["logits"],
            dynamic_axes={"input_ids": {0: "batch"}, "attention_mask": {0: "batch"}, "logits": {0: "batch"}},
        )
    onnx.checker.check_model(onnx.load(str(path)))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
    with torch.no_grad():
        want = model(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()
    if np.abs(logits - want).max() > 1e-4:
        raise SystemExit(f"onnxruntime differs from torch by {np.abs(logits - want).max()}")

    m64 = copy.deepcopy(model).double()
    layer = m64.model.bert.embeddings.word_embeddings
    lig = LayerIntegratedGradients(m64, layer)
    per_dimension, deltas = [], []
    for target in range(3):
        attributions, delta = lig.attribute(
            torch.from_numpy(ids), baselines=torch.from_numpy(baseline), target=target,
            additional_forward_args=(torch.from_numpy(mask),), n_steps=IG_STEPS, method="gausslegendre",
            return_convergence_delta=True,
        )
        per_dimension.append(attributions.detach().numpy())
        deltas.append(delta.detach().numpy())
    per_dimension = np.stack(per_dimension, axis=1)  # [N, T, S, E]
    np.save(OUT / "input_ids.npy", ids)
    np.save(OUT / "attention_mask.npy", mask)
    np.save(OUT / "baseline_ids.npy", baseline)
    np.save(OUT / "logits.npy", logits.astype(np.float32))
    np.save(OUT / "lig.npy", per_dimension.sum(axis=3).astype(np.float32))
    np.save(OUT / "lig_embedding.npy", per_dimension.astype(np.float32))
    np.save(OUT / "lig_delta.npy", np.stack(deltas, axis=1).astype(np.float32))
    meta = {
        "model": "BertForSequenceClassification (random weights): 2 layers, hidden 32, 2 heads, vocabulary 100, 3 labels",
        "inputs": {"input_ids": "int64 [batch, 10]", "attention_mask": "int64 [batch, 10]"},
        "output": "logits",
        "special_tokens": {"pad": PAD, "cls": CLS, "sep": SEP},
        "layer": "the word embedding (the Gather of input_ids in the graph)",
        "ig": {"method": "gausslegendre", "steps": IG_STEPS, "baseline": "baseline_ids.npy"},
        "padded_positions_attribution": float(np.abs(per_dimension[1, :, 7:]).max()),
        "model_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "captum": captum.__version__,
                     "onnx": onnx.__version__, "onnxruntime": ort.__version__},
    }
    (OUT / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    ops = sorted({n.op_type for n in onnx.load(str(path)).graph.node})
    print(f"{path.stat().st_size / 1024:.0f} KiB; max |delta| {np.abs(deltas).max():.2e}; ops {ops}")


if __name__ == "__main__":
    main()
