#!/usr/bin/env python3
"""The architectures people deploy, exported the way their users export them, with captum's
reference attributions: test fixtures for the graph compiler on modern graphs.

Each case is a small configuration of a real architecture, built from the libraries' own classes
(Hugging Face `transformers` configurations, torchvision's model and block classes) with random
weights, so that the committed files stay small while the exported graphs hold the operators the
full-size models hold. Full-size models appear only in the benchmarks, which build them there.

Every case is exported twice, as users export it:
  opset17   torch.onnx.export(..., dynamo=False, opset_version=17), the TorchScript exporter
  dynamo    torch.onnx.export(..., dynamo=True, opset_version=DYNAMO_OPSET), the exporter torch
            uses by default, at the newest opset it exports (op forms differ: reduction axes and
            Split sizes as inputs, Gelu and LayerNormalization as single operators, ...)

For each case and export this writes tests/data/modern/<case>_<export>/:

  model.onnx               input `x` float32 [batch, ...], output `y` float32 [batch, T]
  x.npy                    float32 [N, ...] the inputs explained
  background.npy           float32 [K, ...] a background (Deep SHAP) drawn like x
  saliency.npy             [N, T, ...] captum Saliency(abs=False): the plain gradient
  input_x_gradient.npy     [N, T, ...] captum InputXGradient
  ig.npy                   [N, T, ...] captum IntegratedGradients, baseline 0, method
                           gausslegendre, n_steps=IG_STEPS
  shap_deep.npy            [N, T, ...] shap.DeepExplainer over background.npy, only where it runs
                           and is additive (meta.json's shap_deep_explainer says what happened)
  meta.json                the case, the export, the operators in the graph, N, K, T, the IG
                           settings, the library versions, the ONNX file's sha256

captum runs on a float64 copy of each PyTorch model (the float32 inputs upcast exactly), so the
references carry little rounding noise. Before anything is written the ONNX file's onnxruntime
outputs are checked against the float32 PyTorch model on x and the background (absolute 1e-4).

Tests must not depend on node names: they read only `x`, `y` and the arrays here.

Usage (from the repository root; a developer machine with the packages of
scripts/requirements-exporters.txt; CI needs none of them, the outputs are committed):
    python3 -m venv /tmp/exp-venv && /tmp/exp-venv/bin/pip install -r scripts/requirements-exporters.txt
    /tmp/exp-venv/bin/python scripts/make_modern_fixtures.py [case ...]
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import sys
import warnings
from collections import Counter
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "2")

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torchvision
import transformers
from torch import nn

import captum

warnings.filterwarnings("ignore", message="Input Tensor 0 did not already require gradients")
from captum.attr import InputXGradient, IntegratedGradients, Saliency

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "data" / "modern"
IG_STEPS = 16
DYNAMO_OPSET = 23
N_EXPLAINED = 2
N_BACKGROUND = 4

torch.set_num_threads(2)


# --- the architectures ------------------------------------------------------------------------


class Logits(nn.Module):
    """A Hugging Face model's logits, as the one output `y` (optionally of the last position)."""

    def __init__(self, model: nn.Module, last_position: bool = False, attention_mask: torch.Tensor | None = None):
        super().__init__()
        self.model = model
        self.last_position = last_position
        if attention_mask is not None:
            self.register_buffer("attention_mask", attention_mask)
        else:
            self.attention_mask = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.attention_mask is None:
            out = self.model(x) if not self._embeds() else self.model(inputs_embeds=x)
        else:
            mask = self.attention_mask.expand(x.shape[0], -1)
            out = self.model(inputs_embeds=x, attention_mask=mask)
        logits = out.logits
        return logits[:, -1, :] if self.last_position else logits

    def _embeds(self) -> bool:
        return not isinstance(self.model, transformers.ViTForImageClassification)


def vit():
    config = transformers.ViTConfig(
        image_size=16, patch_size=4, num_channels=3, hidden_size=16, num_hidden_layers=2,
        num_attention_heads=2, intermediate_size=32, num_labels=3, attn_implementation="eager",
    )
    return Logits(transformers.ViTForImageClassification(config)), (3, 16, 16), "image"


def bert_embeds():
    """A BERT-family encoder over `inputs_embeds` (token ids are issue 18's), with an attention
    mask baked in that pads the last two of eight positions, as a padded batch does."""
    config = transformers.BertConfig(
        vocab_size=30, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        max_position_embeddings=16, num_labels=3, attn_implementation="eager",
    )
    mask = torch.tensor([[1, 1, 1, 1, 1, 1, 0, 0]], dtype=torch.int64)
    return Logits(transformers.BertForSequenceClassification(config), attention_mask=mask), (8, 16), "embeds"


def gpt2_embeds():
    """GPT-2 (causal mask, tanh-form GELU) over `inputs_embeds`: the next-token logits."""
    config = transformers.GPT2Config(
        vocab_size=6, n_positions=16, n_embd=16, n_layer=2, n_head=2, attn_implementation="eager",
    )
    return Logits(transformers.GPT2LMHeadModel(config), last_position=True), (6, 16), "embeds"


def resnet():
    """torchvision's ResNet class with its BasicBlock, at 1 block per stage (ResNet's own widths,
    64 to 512 channels, would make a 20 MB file; the block structure is what matters here)."""
    from torchvision.models.resnet import BasicBlock, ResNet

    model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=3)
    # Narrow the stages: rebuild each layer at reduced width with the library's own blocks.
    widths = [8, 16, 16, 16]
    model.inplanes = 8
    model.conv1 = nn.Conv2d(3, 8, kernel_size=7, stride=2, padding=3, bias=False)
    model.bn1 = nn.BatchNorm2d(8)
    model.layer1 = model._make_layer(BasicBlock, widths[0], 1)
    model.layer2 = model._make_layer(BasicBlock, widths[1], 1, stride=2)
    model.layer3 = model._make_layer(BasicBlock, widths[2], 1, stride=2)
    model.layer4 = model._make_layer(BasicBlock, widths[3], 1, stride=2)
    model.fc = nn.Linear(widths[3], 3)
    return model, (3, 24, 24), "image"


def mobilenet_v3():
    """torchvision's MobileNetV3 (small) at width 0.25 and its first four blocks: depthwise
    convolutions, squeeze-excite with HardSigmoid, HardSwish."""
    from torchvision.models.mobilenetv3 import MobileNetV3, _mobilenet_v3_conf

    setting, last_channel = _mobilenet_v3_conf("mobilenet_v3_small", width_mult=0.25)
    setting = setting[:4]
    return MobileNetV3(setting, last_channel=32, num_classes=3), (3, 24, 24), "image"


def efficientnet():
    """torchvision's EfficientNet with two small MBConv stages: SiLU, squeeze-excite with
    Sigmoid, stochastic depth (the identity in eval)."""
    from functools import partial

    from torchvision.models.efficientnet import EfficientNet, MBConvConfig

    conf = partial(MBConvConfig, width_mult=0.25, depth_mult=0.5)
    setting = [conf(1, 3, 1, 32, 16, 1), conf(6, 3, 2, 16, 24, 2)]
    return EfficientNet(setting, dropout=0.2, num_classes=3, last_channel=32), (3, 24, 24), "image"


def convnext():
    """torchvision's ConvNeXt with two small stages: channel-last LayerNorm (LayerNorm2d),
    7x7 depthwise convolutions, GELU, layer scale."""
    from torchvision.models.convnext import CNBlockConfig, ConvNeXt

    setting = [CNBlockConfig(8, 16, 1), CNBlockConfig(16, None, 1)]
    return ConvNeXt(setting, stochastic_depth_prob=0.0, num_classes=3), (3, 24, 24), "image"


class UNet(nn.Module):
    """A U-Net-style encoder-decoder: max-pool down, ConvTranspose2d and bilinear Upsample up,
    skip connections joined with Concat; the segmentation logits' per-class means are `y`."""

    def __init__(self, classes: int = 3):
        super().__init__()

        def block(i, o):
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True))

        self.enc1, self.enc2, self.bottom = block(3, 8), block(8, 12), block(12, 16)
        self.pool = nn.MaxPool2d(2)
        self.up2 = nn.ConvTranspose2d(16, 12, 2, stride=2)
        self.dec2 = block(24, 12)
        self.up1 = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.dec1 = block(20, 8)
        self.head = nn.Conv2d(8, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        b = self.bottom(self.pool(e2))
        d2 = self.dec2(torch.cat([self.up2(b), e2], dim=1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], dim=1))
        return self.head(d1).mean(dim=(2, 3))


def unet():
    return UNet(), (3, 16, 16), "image"


CASES = {
    "vit": vit,
    "bert_embeds": bert_embeds,
    "gpt2_embeds": gpt2_embeds,
    "resnet": resnet,
    "mobilenet_v3": mobilenet_v3,
    "efficientnet": efficientnet,
    "convnext": convnext,
    "unet": unet,
}


# --- making a case ----------------------------------------------------------------------------


def randomise_batch_norm_statistics(model: nn.Module, rng: np.random.Generator) -> None:
    """Fresh BatchNorm layers normalise with mean 0 and variance 1, which hides their rule: give
    them statistics a trained network would have."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.from_numpy(rng.normal(0, 0.2, m.num_features)))
            m.running_var.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, m.num_features)))
            m.weight.data.copy_(torch.from_numpy(rng.uniform(0.5, 1.5, m.num_features)))
            m.bias.data.copy_(torch.from_numpy(rng.normal(0, 0.2, m.num_features)))


def build(name: str):
    torch.manual_seed(17)
    rng = np.random.default_rng(17)
    model, shape, kind = CASES[name]()
    model.eval()
    with torch.no_grad():
        randomise_batch_norm_statistics(model, rng)
    data = rng.normal(0.0, 1.0 if kind == "image" else 0.5, (N_EXPLAINED + N_BACKGROUND, *shape)).astype(np.float32)
    return model, data[:N_EXPLAINED], data[N_EXPLAINED:], kind


def export(model: nn.Module, x: np.ndarray, path: Path, exporter: str) -> None:
    example = (torch.from_numpy(x),)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if exporter == "opset17":
            torch.onnx.export(
                model, example, str(path), dynamo=False, opset_version=17, input_names=["x"], output_names=["y"],
                dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
            )
        else:
            batch = torch.export.Dim("batch", min=1, max=1024)
            program = torch.onnx.export(
                model, example, dynamo=True, opset_version=DYNAMO_OPSET, input_names=["x"], output_names=["y"],
                dynamic_shapes=({0: batch},), optimize=True, verbose=False,
            )
            program.save(str(path), external_data=False)
    m = onnx.load(str(path))
    # The dynamo exporter records each node's Python stack trace and scope in metadata: two thirds
    # of the file, and nothing ONNX Runtime or a user's tool reads. Dropped to keep the files small.
    for node in m.graph.node:
        del node.metadata_props[:]
        node.doc_string = ""
    for value in m.graph.value_info:
        del value.metadata_props[:]
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def ops_of(path: Path) -> dict[str, int]:
    m = onnx.load(str(path))
    counts: Counter[str] = Counter()

    def walk(graph):
        for node in graph.node:
            counts[(node.domain + ":" if node.domain not in ("", "ai.onnx") else "") + node.op_type] += 1
            for a in node.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    walk(a.g)

    walk(m.graph)
    return dict(sorted(counts.items()))


def references(model: nn.Module, x: np.ndarray, targets: int) -> dict[str, np.ndarray]:
    m64 = copy.deepcopy(model).double()
    inputs = torch.from_numpy(x.astype(np.float64))
    out: dict[str, list[np.ndarray]] = {"saliency": [], "input_x_gradient": [], "ig": []}
    for t in range(targets):
        out["saliency"].append(Saliency(m64).attribute(inputs, target=t, abs=False).detach().numpy())
        out["input_x_gradient"].append(InputXGradient(m64).attribute(inputs, target=t).detach().numpy())
        ig = IntegratedGradients(m64).attribute(
            inputs, baselines=torch.zeros_like(inputs), target=t, n_steps=IG_STEPS, method="gausslegendre"
        )
        out["ig"].append(ig.detach().numpy())
    # [T, N, ...] -> [N, T, ...]
    return {k: np.stack(v, axis=1).astype(np.float32) for k, v in out.items()}


def shap_deep_explainer(model: nn.Module, x: np.ndarray, background: np.ndarray) -> tuple[np.ndarray | None, str]:
    """shap's DeepExplainer on the float64 twin ([N, T, ...]) when it runs and is additive
    (1e-4), and what happened: shap's PyTorch explainer has no rules for LayerNorm, GELU or
    attention, and its hooks fail on several torchvision blocks, so this is mostly a record of
    where the reference library stops."""
    import shap

    m64 = copy.deepcopy(model).double()
    for module in m64.modules():
        if hasattr(module, "inplace"):
            module.inplace = False  # shap's backward hooks cannot see in-place activations
    try:
        explainer = shap.DeepExplainer(m64, torch.from_numpy(background.astype(np.float64)))
        values = np.asarray(explainer.shap_values(torch.from_numpy(x.astype(np.float64)), check_additivity=False))
    except Exception as error:  # noqa: BLE001 (any failure of the reference is the finding)
        return None, f"fails: {type(error).__name__}: {str(error).splitlines()[0][:200]}"
    values = np.moveaxis(values, -1, 1)  # shap: [N, ..., T] -> [N, T, ...]
    with torch.no_grad():
        fx = m64(torch.from_numpy(x.astype(np.float64))).numpy()
        base = m64(torch.from_numpy(background.astype(np.float64))).numpy().mean(axis=0)
    error = float(np.abs(values.reshape(*values.shape[:2], -1).sum(axis=2) - (fx - base)).max())
    if error > 1e-4:
        return None, f"not additive: max |sum(phi) - (f(x) - E f(bg))| = {error:.3g}"
    return values.astype(np.float32), f"additive ({error:.1e})"


def make(name: str, exporter: str) -> None:
    model, x, background, kind = build(name)
    case_dir = OUT / f"{name}_{exporter}"
    case_dir.mkdir(parents=True, exist_ok=True)
    path = case_dir / "model.onnx"
    export(model, x, path, exporter)

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        for data in (x, background):
            want = model(torch.from_numpy(data)).numpy()
            got = session.run(None, {"x": data})[0]
            err = float(np.abs(want - got).max())
            if err > 1e-4:
                raise SystemExit(f"{name} {exporter}: onnxruntime differs from torch by {err}")
    with torch.no_grad():
        targets = model(torch.from_numpy(x)).shape[1]
    refs = references(model, x, targets)
    shap_values, shap_outcome = shap_deep_explainer(model, x, background)
    if shap_values is not None:
        refs["shap_deep"] = shap_values
    np.save(case_dir / "x.npy", x)
    np.save(case_dir / "background.npy", background)
    for key, value in refs.items():
        np.save(case_dir / f"{key}.npy", value)
    meta = {
        "case": name,
        "description": (CASES[name].__doc__ or "").strip().replace("\n   ", "").replace("  ", " "),
        "exporter": exporter,
        "opset": onnx.load(str(path)).opset_import[0].version,
        "input": "x",
        "output": "y",
        "kind": kind,
        "n": int(x.shape[0]),
        "k": int(background.shape[0]),
        "targets": int(targets),
        "ig": {"method": "gausslegendre", "steps": IG_STEPS, "baseline": 0.0},
        "ops": ops_of(path),
        "shap_deep_explainer": shap_outcome,
        "model_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "versions": {
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "transformers": transformers.__version__,
            "captum": captum.__version__,
            "shap": __import__("shap").__version__,
            "onnx": onnx.__version__,
            "onnxruntime": ort.__version__,
        },
    }
    (case_dir / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    size = path.stat().st_size
    print(f"{name}_{exporter}: opset {meta['opset']}, {size / 1024:.0f} KiB, ops {sorted(meta['ops'])}")


def main(argv: list[str]) -> None:
    names = argv or list(CASES)
    for name in names:
        for exporter in ("opset17", "dynamo"):
            make(name, exporter)


if __name__ == "__main__":
    main(sys.argv[1:])
