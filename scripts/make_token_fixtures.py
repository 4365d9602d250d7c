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
  occlusion.npy        float32 [2, 3, 10]: occlusion by brute force, one token at a time:
                       logits(x)[n, t] - logits(x with input_ids[n, p] set to [PAD])[n, t], the
                       attention mask held at the input's (captum's Occlusion with a window of one
                       token and the baseline [PAD]; checked against it when captum is installed)
  shapley.npy          float64 [2, 3, 10]: exact Shapley values of the 10 token positions, every
                       one of the 2^10 coalitions S enumerated: v(S) = logits(input_ids on S,
                       baseline_ids elsewhere)[t], the attention mask held at the input's;
                       phi_i = sum_{S without i} |S|! (M - |S| - 1)! / M! (v(S + i) - v(S)), in
                       float64 from the float32 outputs of onnxruntime (CPUExecutionProvider)
  shapley_base.npy     float64 [2, 3]: v(empty set), the logits of the baseline row
  meta.json            ids of the special tokens, the settings, library versions

captum runs on a float64 copy of the model. Padded positions: captum's values there come from
the word embedding of [PAD] on both sides of the path (equal), so they are exactly 0.

occlusion.npy, shapley.npy and shapley_base.npy are computed by `references()` from the committed
model.onnx and .npy inputs alone (numpy and onnxruntime; no torch): it checks the model's sha256
against meta.json, asserts completeness (sum_i phi_i + base == v(full) within 1e-9) and that phi
is 0 (within 1e-12) where the input equals the baseline, and adds its keys to meta.json.

Usage (the packages of scripts/requirements-exporters.txt; CI needs none of them):
    /tmp/exp-venv/bin/python scripts/make_token_fixtures.py                     # everything
    /tmp/exp-venv/bin/python scripts/make_token_fixtures.py --references-only   # only the three
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
import warnings
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "2")

import numpy as np
import onnx
import onnxruntime as ort

from exact_shapley import check_shapley_from_values, shapley_from_values

REFERENCES_ONLY = "--references-only" in sys.argv[1:]
if not REFERENCES_ONLY:  # the export and captum; --references-only needs neither torch nor captum
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

SHAPLEY_COMPLETENESS_TOL = 1e-9
SHAPLEY_NULL_TOL = 1e-12

if not REFERENCES_ONLY:
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


def captum_occlusion(session: ort.InferenceSession, ids: np.ndarray, mask: np.ndarray) -> np.ndarray | None:
    """captum's Occlusion (window 1, baseline [PAD]) on a wrapper feeding onnxruntime, [N, T, S]; None
    without captum."""
    try:
        import torch
        from captum.attr import Occlusion
    except ImportError:
        return None

    def forward(input_ids, attention_mask):
        out = session.run(None, {"input_ids": input_ids.numpy().astype(np.int64),
                                 "attention_mask": attention_mask.numpy().astype(np.int64)})[0]
        return torch.from_numpy(out.astype(np.float64))

    occlusion = Occlusion(forward)
    per_target = [
        occlusion.attribute(torch.from_numpy(ids), sliding_window_shapes=(1,), strides=1, baselines=PAD,
                            target=t, additional_forward_args=(torch.from_numpy(mask),)).numpy()
        for t in range(3)
    ]
    return np.stack(per_target, axis=1)


def references() -> None:
    """occlusion.npy, shapley.npy and shapley_base.npy from the committed model.onnx and inputs."""
    path = OUT / "model.onnx"
    meta = json.loads((OUT / "meta.json").read_text())
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    if sha != meta["model_sha256"]:
        raise SystemExit(f"model.onnx sha256 {sha} is not meta.json's {meta['model_sha256']}")
    ids = np.load(OUT / "input_ids.npy")
    mask = np.load(OUT / "attention_mask.npy")
    baseline = np.load(OUT / "baseline_ids.npy")
    logits = np.load(OUT / "logits.npy")
    n, s = ids.shape
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def run(rows: np.ndarray, row_mask: np.ndarray) -> np.ndarray:
        masks = np.broadcast_to(row_mask, rows.shape).astype(np.int64)
        return session.run(["logits"], {"input_ids": rows.astype(np.int64), "attention_mask": masks})[0]

    # Occlusion: the input and its S occluded copies in one batch per row.
    occlusion = np.zeros((n, 3, s), dtype=np.float32)
    for row in range(n):
        rows = np.repeat(ids[row][None], s + 1, axis=0)
        rows[np.arange(1, s + 1), np.arange(s)] = PAD
        out = run(rows, mask[row])
        occlusion[row] = (out[0][:, None] - out[1:].T).astype(np.float32)  # [T, S]
    ours = np.abs(run(ids, mask) - logits).max()
    assert ours < 1e-5, f"onnxruntime's logits differ from logits.npy by {ours}"
    unchanged = ids == PAD
    occlusion_at_pad = float(np.abs(occlusion.transpose(0, 2, 1)[unchanged]).max())
    assert occlusion_at_pad == 0.0, f"occluding a [PAD] with [PAD] changed the logits by {occlusion_at_pad}"

    # Masked positions given another id (not a fixture, a fact to report): does the mask hide them?
    padded = mask == 0
    probe = ids.copy()
    probe[padded] = 57
    masked_effect = float(np.abs(run(probe, mask) - run(ids, mask)).max())

    # Exact Shapley values: the 2^S coalitions in one batch per row.
    coalitions = ((np.arange(2**s)[:, None] >> np.arange(s)) & 1).astype(bool)  # [2^S, S]
    shapley = np.zeros((n, 3, s))
    base = np.zeros((n, 3))
    completeness = 0.0
    for row in range(n):
        rows = np.where(coalitions, ids[row][None], baseline[row][None])
        v = run(rows, mask[row]).astype(np.float64)  # [2^S, T]
        shapley[row] = shapley_from_values(v, s)
        base[row] = v[0]
        completeness = max(completeness, float(np.abs(shapley[row].sum(axis=1) + v[0] - v[-1]).max()))
        assert np.abs(v[-1] - logits[row]).max() < 1e-5, "v(full) is not the input's logits"
    assert completeness < SHAPLEY_COMPLETENESS_TOL, f"completeness off by {completeness}"
    same = ids == baseline
    null_players = float(np.abs(shapley.transpose(0, 2, 1)[same]).max())
    assert null_players < SHAPLEY_NULL_TOL, f"phi where input == baseline is {null_players}, not 0"

    # captum's Occlusion on the same session, when available.
    theirs = captum_occlusion(session, ids, mask)
    captum_diff = None if theirs is None else float(np.abs(theirs - occlusion).max())
    if captum_diff is not None:
        assert captum_diff < 1e-5, f"captum's Occlusion differs from the brute force by {captum_diff}"

    np.save(OUT / "occlusion.npy", occlusion)
    np.save(OUT / "shapley.npy", shapley)
    np.save(OUT / "shapley_base.npy", base)
    meta["occlusion"] = {
        "file": "occlusion.npy", "replacement_id": PAD, "window": 1, "stride": 1,
        "attention_mask": "held at the input's",
        "definition": "logits(x)[n, t] - logits(x with input_ids[n, p] = replacement_id)[n, t], shape [N, T, S]",
        "at_pad_positions": occlusion_at_pad,
        "captum_occlusion_max_abs_diff": captum_diff,
    }
    meta["shapley"] = {
        "file": "shapley.npy", "base_file": "shapley_base.npy",
        "baseline": "baseline_ids.npy", "players": "the 10 token positions",
        "attention_mask": "held at the input's", "method": "exact enumeration of 1024 coalitions",
        "value": "v(S) = logits(input_ids on S, baseline_ids elsewhere)[t]; shape [N, T, S], base [N, T] = v(empty)",
        "dtype": "float64 from onnxruntime's float32 logits (CPUExecutionProvider)",
        "completeness_max_abs_error": completeness,
        "where_input_equals_baseline_max_abs": null_players,
    }
    meta["masked_positions_other_id_max_abs_logit_change"] = masked_effect
    meta.setdefault("versions", {})["onnxruntime"] = ort.__version__
    meta["versions"]["numpy"] = np.__version__
    (OUT / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"occlusion: max |.| {np.abs(occlusion).max():.4f}, 0 at [PAD] positions: {occlusion_at_pad}, "
          f"captum differs by {captum_diff}; shapley: completeness {completeness:.1e}, "
          f"where input == baseline {null_players:.1e}; masked positions given id 57 move the logits by "
          f"{masked_effect:.1e}")


if __name__ == "__main__":
    check_shapley_from_values()
    if not REFERENCES_ONLY:
        main()
    references()
