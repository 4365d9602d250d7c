"""Bad requests get the right gRPC status, name the offending field, and leave the daemon up."""

from __future__ import annotations

import grpc
import numpy as np
import pytest

from explaind_client import indices, integers, named, pb
from paths import MODELS_DIR

DIGITS_SAMPLES = MODELS_DIR / "digits-cnn" / "1" / "samples.npy"


def _status(fn, request, timeout=30):
    with pytest.raises(grpc.RpcError) as e:
        fn(request, timeout=timeout)
    return e.value.code(), e.value.details() or ""


def _predict_req(model: str, tensor: pb.Tensor, name: str = "image") -> pb.PredictRequest:
    return pb.PredictRequest(model=pb.ModelRef(name=model),
                             inputs=[pb.NamedTensor(name=name, tensor=tensor)])


def test_bad_input_status(client, daemon_alive):
    x = np.load(DIGITS_SAMPLES)[:1]  # [1, 1, 8, 8] float32
    good = named("image", x).tensor
    predict = client.models.Predict

    # Unknown model.
    code, details = _status(predict, _predict_req("no-such-model", good))
    assert code == grpc.StatusCode.NOT_FOUND, details
    assert "no-such-model" in details

    # Unknown version of a known model.
    req = _predict_req("digits-cnn", good)
    req.model.version = "999"
    code, details = _status(predict, req)
    assert code == grpc.StatusCode.NOT_FOUND, details

    # Wrong byte length: 255 bytes for 64 float32.
    short = pb.Tensor(element_type=pb.ELEMENT_TYPE_FLOAT, shape=[1, 1, 8, 8],
                      data=good.data[:-1])
    code, details = _status(predict, _predict_req("digits-cnn", short))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert "inputs[0].tensor.data" in details

    # NaN in the input.
    bad = x.copy()
    bad[0, 0, 3, 4] = np.nan
    code, details = _status(predict, _predict_req("digits-cnn", named("image", bad).tensor))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert "inputs[0]" in details

    # Element type DOUBLE (with a byte length right for doubles).
    dbl = named("image", x.astype(np.float64)).tensor
    assert dbl.element_type == pb.ELEMENT_TYPE_DOUBLE
    code, details = _status(predict, _predict_req("digits-cnn", dbl))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert "element_type" in details

    # Wrong shape for the model: [1, 1, 8, 7].
    code, details = _status(predict, _predict_req("digits-cnn", named("image", x[..., :7]).tensor))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert "inputs[0]" in details

    # The daemon is still up and serving.
    daemon_alive()
    names = {m.name for m in client.list_models().models}
    assert {"digits-cnn", "wine-mlp"} <= names
    resp = client.predict("digits-cnn", {"image": x})
    assert len(resp.outputs) == 1 and resp.outputs[0].name == "logits"


def test_explain_bad_requests(client, daemon_alive):
    x = np.load(DIGITS_SAMPLES)[:2]
    explain = client.explain.Explain

    def req(explainer="occlusion", params=None, targets=None):
        return pb.ExplainRequest(
            model=pb.ModelRef(name="digits-cnn"), explainer=explainer,
            inputs=[named("image", x)], targets=targets,
            parameters={"window": integers(1, 2, 2)} if params is None else params,
        )

    code, details = _status(explain, req(explainer="no-such-explainer"))
    assert code == grpc.StatusCode.NOT_FOUND, details
    assert "no-such-explainer" in details

    # A required parameter missing.
    code, details = _status(explain, req(params={}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert "window" in details

    # An unknown parameter.
    code, details = _status(explain, req(params={"window": integers(1, 2, 2),
                                                 "no_such_param": integers(1)}))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert "no_such_param" in details

    # A target index outside the output row (10 logits).
    code, details = _status(explain, req(targets=indices(10)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details

    daemon_alive()
    assert {m.name for m in client.list_models().models} >= {"digits-cnn"}
