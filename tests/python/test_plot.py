"""Figures over gRPC (ExplainRequest.plot -> ExplainResponse.plot_png; the client's `plot=`
-> `Explanation.figure_png`), and the 28x28 digits model they were made for. The PNG is decoded
here with the standard library (zlib + struct), since the test environment has no image
package."""

from __future__ import annotations

import json
import struct
import zlib

import numpy as np
import pytest
from explaind_py import ExplaindError

from paths import MODELS_DIR

MNIST = MODELS_DIR / "mnist-cnn" / "1"



def decode_png(data: bytes) -> np.ndarray:
    """Decodes a non-interlaced 8-bit RGB PNG into an [H, W, 3] uint8 array."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "PNG signature"
    pos, ihdr, idat = 8, None, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body), f"CRC of {kind!r}"
        if kind == b"IHDR":
            ihdr = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
        pos += 12 + length
    assert ihdr is not None, "IHDR chunk"
    width, height, depth, colour, _, _, interlace = ihdr
    assert (depth, colour, interlace) == (8, 2, 0), ihdr  # 8-bit RGB, not interlaced
    raw = zlib.decompress(idat)
    stride = width * 3
    assert len(raw) == height * (stride + 1)
    out = np.zeros((height, stride), dtype=np.int32)
    prev = np.zeros(stride, dtype=np.int32)
    for y in range(height):
        line = raw[y * (stride + 1):(y + 1) * (stride + 1)]
        ftype, cur = line[0], np.frombuffer(line[1:], dtype=np.uint8).astype(np.int32)
        row = np.zeros(stride, dtype=np.int32)
        if ftype in (0, 2):
            row = (cur + (prev if ftype == 2 else 0)) % 256
        else:  # Sub, Average and Paeth depend on the pixel to the left: go byte by byte
            for i in range(stride):
                a = row[i - 3] if i >= 3 else 0
                b = prev[i]
                c = prev[i - 3] if i >= 3 else 0
                if ftype == 1:
                    pred = a
                elif ftype == 3:
                    pred = (a + b) // 2
                elif ftype == 4:
                    p = a + b - c
                    pa, pb_, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb_ and pa <= pc else (b if pb_ <= pc else c)
                else:
                    raise AssertionError(f"filter type {ftype}")
                row[i] = (cur[i] + pred) % 256
        out[y] = row
        prev = row
    return out.reshape(height, width, 3).astype(np.uint8)


def test_mnist_predictions_match_what_the_training_script_recorded(py):
    x = np.load(MNIST / "samples.npy")
    recorded = json.loads((MNIST / "expected_predictions.json").read_text())["samples"]
    logits = py.predict("mnist-cnn", {"image": x})["logits"]
    predicted = logits.argmax(axis=1)
    assert predicted.tolist() == [s["predicted"] for s in recorded]
    np.testing.assert_allclose(logits, [s["logits"] for s in recorded], atol=1e-4, rtol=1e-4)
    labels = np.array([s["label"] for s in recorded])
    assert (predicted != labels).sum() >= 1, "the samples include digits the model gets wrong"


def test_deep_shap_figure_over_grpc(py):
    x = np.load(MNIST / "demo.npy")
    e = py.explain("mnist-cnn", {"image": x}, "deep-shap", targets="all", plot=True)
    assert e.attributions["image"].shape == (4, 10, 1, 28, 28)
    img = decode_png(e.figure_png)
    h, w, _ = img.shape
    # 4 rows of 28x28 digits, 11 columns (input + 10 classes), each panel >= 112 pixels a side.
    assert w >= 11 * 112 and h >= 4 * 112, (w, h)
    r, g, b = (img[..., k].astype(int) for k in range(3))
    red = ((r > b + 80) & (r > g + 40)).sum()
    blue = ((b > r + 80) & (b > g + 40)).sum()
    white = ((r > 250) & (g > 250) & (b > 250)).mean()
    assert red > 1000 and blue > 1000, (red, blue)
    assert white > 0.3, white  # the background of the figure and of the heat maps

    # A tabular model: a waterfall (Deep SHAP has base values), drawn as a PNG too.
    wine = np.load(MODELS_DIR / "wine-mlp" / "1" / "samples.npy")[:2]
    decode_png(py.explain("wine-mlp", {"features": wine}, "deep-shap", plot="waterfall",
                          plot_top_k=5).figure_png)

    # No option, no figure (an empty plot_png is figure_png None).
    assert py.explain("wine-mlp", {"features": wine}, "deep-shap").figure_png is None


def test_too_many_panels_is_invalid_argument(py, daemon_alive):
    x = np.load(MNIST / "samples.npy")  # 12 digits x (input + 10 classes) = 132 panels
    with pytest.raises(ExplaindError) as e:
        py.explain("mnist-cnn", {"image": x}, "deep-shap", targets="all", plot=True)
    assert e.value.code == "INVALID_ARGUMENT"
    assert "132 panels" in e.value.message and "at most 64" in e.value.message, e.value.message
    daemon_alive()
