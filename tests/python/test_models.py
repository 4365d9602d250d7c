"""ModelService: metadata and predictions, asked for with the project's client (explaind_py) and
checked against the files and Python onnxruntime."""

from __future__ import annotations


import numpy as np
import pytest

from brute_force import session
from explaind_client import from_tensor, outputs_dict, pb, sha256_file
from paths import MODELS_DIR

DEMO_MODELS = ["digits-cnn", "wine-mlp"]



def model_file(name: str, version: str = "1"):
    return MODELS_DIR / name / version / "model.onnx"


def test_list_models(py, client):
    by_name = {m.name: m for m in py.models()}
    for name in DEMO_MODELS:
        assert name in by_name, f"{name} missing from ListModels: {sorted(by_name)}"

    expected = {
        "digits-cnn": {
            "inputs": [("image", ["batch", 1, 8, 8])],
            "outputs": [("logits", ["batch", 10])],
            "labels": [str(i) for i in range(10)],
            "background_shape": [100, 1, 8, 8],
        },
        "wine-mlp": {
            "inputs": [("features", ["batch", 13])],
            "outputs": [("logits", ["batch", 3]), ("probabilities", ["batch", 3])],
            "labels": ["class_0", "class_1", "class_2"],
            "background_shape": [50, 13],
        },
    }
    for name, want in expected.items():
        m = by_name[name]
        path = model_file(name)
        assert m.version == "1"
        assert m.sha256 == sha256_file(path)
        assert m.execution_provider == "CPU"
        assert [(t.name, list(t.shape)) for t in m.inputs] == want["inputs"]
        assert [(t.name, list(t.shape)) for t in m.outputs] == want["outputs"]
        for t in m.inputs + m.outputs:
            assert t.element_type == "float32" and t.dtype == np.float32, t
            # The batch axis is kept as the model's symbol, not turned into a size or -1.
            assert isinstance(t.shape[0], str)
            assert t.shape[0] == "batch"
        assert list(m.labels) == want["labels"]
        assert m.default_background_shape is not None
        assert list(m.default_background_shape) == want["background_shape"]
        assert m.description  # config.toml has one

        # The same shapes Python onnxruntime reads from the file.
        sess = session(path)
        assert [(i.name, list(i.shape)) for i in sess.get_inputs()] == [
            (t.name, list(t.shape)) for t in m.inputs
        ]
        assert [(o.name, list(o.shape)) for o in sess.get_outputs()] == [
            (t.name, list(t.shape)) for t in m.outputs
        ]

    # GetModel agrees with ListModels.
    assert py.model("wine-mlp") == by_name["wine-mlp"]
    # Raw messages as well: the client's ModelInfo leaves out Explainability's other fields.
    listed = {m.name: m for m in client.list_models().models}
    got = client.models.GetModel(
        pb.GetModelRequest(model=pb.ModelRef(name="wine-mlp")), timeout=client.timeout
    )
    assert got == listed["wine-mlp"]


@pytest.mark.parametrize("name", DEMO_MODELS)
def test_predict_matches_onnxruntime(py, client, name):
    path = model_file(name)
    x = np.load(path.parent / "samples.npy")
    assert x.dtype == np.float32 and x.shape[0] >= 2
    sess = session(path)
    input_name = sess.get_inputs()[0].name
    output_names = [o.name for o in sess.get_outputs()]
    expected = dict(zip(output_names, sess.run(None, {input_name: x})))

    got = py.predict(name, {input_name: x})
    assert list(got) == output_names  # every output, in the model's order
    for out_name, want in expected.items():
        assert got[out_name].dtype == np.float32
        assert got[out_name].shape == want.shape
        np.testing.assert_allclose(got[out_name], want, rtol=1e-6, atol=1e-6,
                                   err_msg=f"{name}:{out_name}")

    # Raw Predict: the client returns the outputs only, not the model's identity and timing.
    resp = client.predict(name, {input_name: x})
    assert resp.model_name == name
    assert resp.model_version == "1"
    assert resp.model_sha256 == sha256_file(path)
    assert [o.name for o in resp.outputs] == output_names  # each once, in the model's order
    assert resp.timing.model_calls >= 1
    assert resp.timing.model_rows == x.shape[0]
    assert resp.timing.total_ms >= resp.timing.model_ms >= 0.0

    # An explicit version works too.
    got1 = py.predict(name, x[:1], version="1")
    for out_name, want in expected.items():
        np.testing.assert_allclose(got1[out_name], want[:1], rtol=1e-6, atol=1e-6)
    assert got1[output_names[0]].shape[0] == 1

    # A single-input model binds an unnamed tensor to its input. Hand-built: the client always
    # names the input.
    resp2 = client.predict(name, {"": x[:1]}, version="1")
    got2 = outputs_dict(resp2.outputs)
    for out_name, want in expected.items():
        np.testing.assert_allclose(got2[out_name], want[:1], rtol=1e-6, atol=1e-6)
    assert from_tensor(resp2.outputs[0].tensor).shape[0] == 1
