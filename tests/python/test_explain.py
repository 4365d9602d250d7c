"""ExplainService: explanations checked against independent brute force in Python, asked for
with the project's client (explaind_py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from explaind_py import ExplainerInfo

import brute_force
from explaind_client import sha256_file
from paths import DATA_DIR, MODELS_DIR

DIGITS = MODELS_DIR / "digits-cnn" / "1"
WINE = MODELS_DIR / "wine-mlp" / "1"



def _abi_version(client, name: str) -> str:
    # Raw ListExplainers: the client's ExplainerInfo leaves out the plugin's ABI version.
    return {e.name: e for e in client.list_explainers().explainers}[name].abi_version


def test_list_explainers_occlusion(py, client, server):
    exps: dict[str, ExplainerInfo] = py.explainers()
    assert "occlusion" in exps, sorted(exps)
    occ = exps["occlusion"]
    assert _abi_version(client, "occlusion") == "1.5"
    assert occ.typed_inputs, "occlusion perturbs token ids as well as pixels"
    assert occ.version
    params = {p.name: p for p in occ.parameters}
    assert [p.name for p in occ.parameters] == ["window", "strides", "baseline"]
    assert params["window"].kind == "integers" and params["window"].required
    assert params["window"].default is None
    assert params["strides"].kind == "integers" and not params["strides"].required
    assert params["baseline"].kind == "number" and not params["baseline"].required
    assert type(params["baseline"].default) is float  # a number, not an integer or a flag
    assert params["baseline"].default == 0.0
    assert list(occ.requires) == []
    libs = sorted(server.binary.parent.glob("libexplaind_plugin_occlusion*.so"))
    assert libs, f"no bundled occlusion plugin beside {server.binary}"
    assert occ.file_sha256 == sha256_file(libs[0])


def test_explain_occlusion(py):
    x = np.load(DIGITS / "samples.npy")[:4]
    e = py.explain("digits-cnn", x, "occlusion", targets=[3], window=[1, 3, 3],
                   strides=[1, 2, 2])

    assert e.model == "digits-cnn" and e.model_version == "1"
    assert e.model_sha256 == sha256_file(DIGITS / "model.onnx")
    assert e.explainer == "occlusion"
    assert list(e.attributions) == ["image"]
    attr = e.attributions["image"]
    assert attr.dtype == np.float32
    assert attr.shape == (4, 1, 1, 8, 8)
    tgt = e.target_indices
    assert tgt.dtype == np.int64
    assert tgt.tolist() == [[3]] * 4

    sess = brute_force.session(DIGITS / "model.onnx")
    want_logits = sess.run(["logits"], {"image": x})[0]
    np.testing.assert_allclose(e.outputs["logits"], want_logits, rtol=1e-6, atol=1e-6)

    want = brute_force.occlusion(sess, "image", "logits", x, window=(1, 3, 3),
                                 strides=(1, 2, 2), baseline=0.0, targets=[[3]] * 4)
    assert np.abs(want).max() > 0.1  # the comparison below is not between two zero arrays
    np.testing.assert_allclose(attr, want, rtol=1e-5, atol=1e-5)

    # 16 windows per input (4 x 4 start positions); the host counts the rows it ran.
    assert e.timing.model_rows >= 4 * 16
    assert e.timing.model_calls >= 1


def test_explain_occlusion_wine_probabilities_predicted(py):
    """Default targets (the predicted class) and a non-first output, with strides defaulted."""
    x = np.load(WINE / "samples.npy")[:3]
    e = py.explain("wine-mlp", x, "occlusion", output="probabilities", window=[2], baseline=0.5)
    sess = brute_force.session(WINE / "model.onnx")
    probs = sess.run(["probabilities"], {"features": x})[0]
    predicted = probs.argmax(axis=1)[:, None]
    assert e.target_indices.tolist() == predicted.tolist()
    attr = e.values
    assert attr.shape == (3, 1, 13)
    want = brute_force.occlusion(sess, "features", "probabilities", x, window=(2,), strides=(1,),
                                 baseline=0.5, targets=predicted)
    assert np.abs(want).max() > 1e-4
    np.testing.assert_allclose(attr, want, rtol=1e-5, atol=1e-5)


def test_bruteforce_matches_committed_reference():
    """The brute force above agrees with tests/data's reference (made by another script)."""
    meta = json.loads((DATA_DIR / "occlusion_digits_reference.json").read_text())
    if meta["model_sha256"] != sha256_file(DIGITS / "model.onnx"):
        pytest.skip("tests/data reference was computed for another digits-cnn model")
    ref = np.load(DATA_DIR / meta["result_file"])
    x = np.load(DIGITS / "samples.npy")[meta["sample_indices"]]
    sess = brute_force.session(DIGITS / "model.onnx")
    got = brute_force.occlusion(sess, "image", "logits", x, window=meta["sliding_window_shape"],
                                strides=meta["strides"], baseline=meta["baseline"],
                                targets=meta["targets"])
    assert ref.shape == got.shape
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------
# The C plugin tests/c/leave_one_out.c, loaded from a second --plugins directory
# --------------------------------------------------------------------------------------------


@pytest.fixture
def c_plugin_loaded(c_plugin):
    if c_plugin.path is None:
        pytest.skip(f"C plugin not built: {c_plugin.why_not}")
    return c_plugin.path


def test_list_explainers_c_plugin(py, client, c_plugin_loaded):
    exps = py.explainers()
    assert "leave-one-out-c" in exps, sorted(exps)
    e = exps["leave-one-out-c"]
    assert e.version == "1.0.0"
    assert _abi_version(client, "leave-one-out-c") == "1.5"
    assert not e.typed_inputs, "it reads float32 inputs only"
    assert e.file_sha256 == sha256_file(c_plugin_loaded)
    assert [p.name for p in e.parameters] == ["baseline"]
    p = e.parameters[0]
    assert p.kind == "number" and not p.required
    assert type(p.default) is float and p.default == 0.0
    assert list(e.requires) == []


@pytest.mark.parametrize(
    "model,input_name,output,n,targets,baseline",
    [
        ("wine-mlp", "features", "logits", 6, "all", None),
        ("digits-cnn", "image", "logits", 3, [3, 7], 0.25),
    ],
    ids=["wine-all-targets", "digits-indices-baseline"],
)
def test_explain_leave_one_out_c(py, c_plugin_loaded, model, input_name, output, n, targets,
                                 baseline):
    mdir = MODELS_DIR / model / "1"
    x = np.load(mdir / "samples.npy")[:n]
    params = {} if baseline is None else {"baseline": float(baseline)}
    e = py.explain(model, {input_name: x}, "leave-one-out-c", targets=targets, output=output,
                   **params)
    assert e.explainer == "leave-one-out-c" and e.explainer_version == "1.0.0"
    tgt = e.target_indices
    sess = brute_force.session(mdir / "model.onnx")
    row = sess.run([output], {input_name: x})[0].reshape(n, -1).shape[1]
    if targets == "all":
        assert tgt.tolist() == [list(range(row))] * n
    else:
        assert tgt.tolist() == [list(targets)] * n
    attr = e.attributions[input_name]
    assert attr.shape == (n, tgt.shape[1]) + x.shape[1:]
    want = brute_force.leave_one_out(sess, input_name, output, x,
                                     baseline=0.0 if baseline is None else baseline, targets=tgt)
    assert np.abs(want).max() > 1e-3
    np.testing.assert_allclose(attr, want, rtol=1e-5, atol=1e-5)
    # One perturbed row per input element, per input.
    assert e.timing.model_rows >= n * int(np.prod(x.shape[1:]))
