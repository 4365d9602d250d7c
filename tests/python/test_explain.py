"""ExplainService: explanations checked against independent brute force in Python."""

from __future__ import annotations

import json

import numpy as np
import pytest

import brute_force
from explaind_client import (
    from_tensor, indices, integers, named, number, outputs_dict, pb, sha256_file,
)
from paths import DATA_DIR, MODELS_DIR

DIGITS = MODELS_DIR / "digits-cnn" / "1"
WINE = MODELS_DIR / "wine-mlp" / "1"


def _explainers(client) -> dict:
    return {e.name: e for e in client.list_explainers().explainers}


def test_list_explainers_occlusion(client, server):
    exps = _explainers(client)
    assert "occlusion" in exps, sorted(exps)
    occ = exps["occlusion"]
    assert occ.abi_version == "1.5"
    assert occ.typed_inputs, "occlusion perturbs token ids as well as pixels"
    assert occ.version
    params = {p.name: p for p in occ.parameters}
    assert [p.name for p in occ.parameters] == ["window", "strides", "baseline"]
    assert params["window"].kind == "integers" and params["window"].required
    assert not params["window"].HasField("default_value")
    assert params["strides"].kind == "integers" and not params["strides"].required
    assert params["baseline"].kind == "number" and not params["baseline"].required
    assert params["baseline"].default_value.WhichOneof("kind") == "number"
    assert params["baseline"].default_value.number == 0.0
    assert list(occ.requires) == []
    libs = sorted(server.binary.parent.glob("libexplaind_plugin_occlusion*.so"))
    assert libs, f"no bundled occlusion plugin beside {server.binary}"
    assert occ.file_sha256 == sha256_file(libs[0])


def test_explain_occlusion(client):
    x = np.load(DIGITS / "samples.npy")[:4]
    req = pb.ExplainRequest(
        model=pb.ModelRef(name="digits-cnn"),
        explainer="occlusion",
        inputs=[named("image", x)],
        targets=indices(3),
        parameters={"window": integers(1, 3, 3), "strides": integers(1, 2, 2)},
    )
    resp = client.explain_request(req)

    assert resp.model_name == "digits-cnn" and resp.model_version == "1"
    assert resp.model_sha256 == sha256_file(DIGITS / "model.onnx")
    assert resp.explainer_name == "occlusion"
    assert len(resp.attributions) == 1
    assert resp.attributions[0].input_name == "image"
    attr = from_tensor(resp.attributions[0].values)
    assert attr.dtype == np.float32
    assert attr.shape == (4, 1, 1, 8, 8)
    tgt = from_tensor(resp.target_indices)
    assert tgt.dtype == np.int64
    assert tgt.tolist() == [[3]] * 4

    sess = brute_force.session(DIGITS / "model.onnx")
    want_logits = sess.run(["logits"], {"image": x})[0]
    outs = outputs_dict(resp.outputs)
    np.testing.assert_allclose(outs["logits"], want_logits, rtol=1e-6, atol=1e-6)

    want = brute_force.occlusion(sess, "image", "logits", x, window=(1, 3, 3),
                                 strides=(1, 2, 2), baseline=0.0, targets=[[3]] * 4)
    assert np.abs(want).max() > 0.1  # the comparison below is not between two zero arrays
    np.testing.assert_allclose(attr, want, rtol=1e-5, atol=1e-5)

    # 16 windows per input (4 x 4 start positions); the host counts the rows it ran.
    assert resp.timing.model_rows >= 4 * 16
    assert resp.timing.model_calls >= 1


def test_explain_occlusion_wine_probabilities_predicted(client):
    """Default targets (the predicted class) and a non-first output, with strides defaulted."""
    x = np.load(WINE / "samples.npy")[:3]
    req = pb.ExplainRequest(
        model=pb.ModelRef(name="wine-mlp"),
        explainer="occlusion",
        inputs=[named("features", x)],
        output="probabilities",
        parameters={"window": integers(2), "baseline": number(0.5)},
    )
    resp = client.explain_request(req)
    sess = brute_force.session(WINE / "model.onnx")
    probs = sess.run(["probabilities"], {"features": x})[0]
    predicted = probs.argmax(axis=1)[:, None]
    assert from_tensor(resp.target_indices).tolist() == predicted.tolist()
    attr = from_tensor(resp.attributions[0].values)
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


def test_list_explainers_c_plugin(client, c_plugin_loaded):
    exps = _explainers(client)
    assert "leave-one-out-c" in exps, sorted(exps)
    e = exps["leave-one-out-c"]
    assert e.version == "1.0.0"
    assert e.abi_version == "1.5"
    assert not e.typed_inputs, "it reads float32 inputs only"
    assert e.file_sha256 == sha256_file(c_plugin_loaded)
    assert [p.name for p in e.parameters] == ["baseline"]
    p = e.parameters[0]
    assert p.kind == "number" and not p.required
    assert p.default_value.WhichOneof("kind") == "number" and p.default_value.number == 0.0
    assert list(e.requires) == []


@pytest.mark.parametrize(
    "model,input_name,output,n,targets,baseline",
    [
        ("wine-mlp", "features", "logits", 6, pb.Targets(all=pb.AllOutputs()), None),
        ("digits-cnn", "image", "logits", 3, indices(3, 7), 0.25),
    ],
    ids=["wine-all-targets", "digits-indices-baseline"],
)
def test_explain_leave_one_out_c(client, c_plugin_loaded, model, input_name, output, n, targets,
                                 baseline):
    mdir = MODELS_DIR / model / "1"
    x = np.load(mdir / "samples.npy")[:n]
    params = {} if baseline is None else {"baseline": number(baseline)}
    req = pb.ExplainRequest(model=pb.ModelRef(name=model), explainer="leave-one-out-c",
                            inputs=[named(input_name, x)], targets=targets, output=output,
                            parameters=params)
    resp = client.explain_request(req)
    assert resp.explainer_name == "leave-one-out-c" and resp.explainer_version == "1.0.0"
    tgt = from_tensor(resp.target_indices)
    sess = brute_force.session(mdir / "model.onnx")
    row = sess.run([output], {input_name: x})[0].reshape(n, -1).shape[1]
    if targets.WhichOneof("selection") == "all":
        assert tgt.tolist() == [list(range(row))] * n
    else:
        assert tgt.tolist() == [list(targets.indices.values)] * n
    attr = from_tensor(resp.attributions[0].values)
    assert attr.shape == (n, tgt.shape[1]) + x.shape[1:]
    want = brute_force.leave_one_out(sess, input_name, output, x,
                                     baseline=0.0 if baseline is None else baseline, targets=tgt)
    assert np.abs(want).max() > 1e-3
    np.testing.assert_allclose(attr, want, rtol=1e-5, atol=1e-5)
    # One perturbed row per input element, per input.
    assert resp.timing.model_rows >= n * int(np.prod(x.shape[1:]))
