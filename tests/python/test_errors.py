"""Bad requests get the right gRPC status, name the offending field, and leave the daemon up.

Requests go through the project's client (explaind_py), whose ExplaindError carries the status
name and the daemon's message; the few that the client cannot send are built by hand."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
import pytest
from explaind_py import ExplaindError

from explaind_client import named, pb
from paths import MODELS_DIR

DIGITS_SAMPLES = MODELS_DIR / "digits-cnn" / "1" / "samples.npy"



def _error(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[str, str]:
    """The status name and message of the ExplaindError that `fn(*args, **kwargs)` raises."""
    with pytest.raises(ExplaindError) as e:
        fn(*args, **kwargs)
    return e.value.code, e.value.message


def _status(fn, request, timeout=30):
    """The same for a hand-built request sent on a raw stub."""
    with pytest.raises(grpc.RpcError) as e:
        fn(request, timeout=timeout)
    return e.value.code(), e.value.details() or ""


def _predict_req(model: str, tensor: pb.Tensor, name: str = "image") -> pb.PredictRequest:
    return pb.PredictRequest(model=pb.ModelRef(name=model),
                             inputs=[pb.NamedTensor(name=name, tensor=tensor)])


def test_bad_input_status(py, client, daemon_alive):
    x = np.load(DIGITS_SAMPLES)[:1]  # [1, 1, 8, 8] float32
    good = named("image", x).tensor
    predict = client.models.Predict

    # Unknown model.
    code, details = _error(py.predict, "no-such-model", x)
    assert code == "NOT_FOUND", details
    assert "no-such-model" in details
    # Hand-built as well: the client asks GetModel first and never sends this Predict.
    code, details = _status(predict, _predict_req("no-such-model", good))
    assert code == grpc.StatusCode.NOT_FOUND, details
    assert "no-such-model" in details

    # Unknown version of a known model.
    code, details = _error(py.predict, "digits-cnn", x, version="999")
    assert code == "NOT_FOUND", details
    # Hand-built as well: the client asks GetModel first and never sends this Predict.
    req = _predict_req("digits-cnn", good)
    req.model.version = "999"
    code, details = _status(predict, req)
    assert code == grpc.StatusCode.NOT_FOUND, details

    # Wrong byte length: 255 bytes for 64 float32. Hand-built: the client sends whole arrays.
    short = pb.Tensor(element_type=pb.ELEMENT_TYPE_FLOAT, shape=[1, 1, 8, 8],
                      data=good.data[:-1])
    code, details = _status(predict, _predict_req("digits-cnn", short))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert "inputs[0].tensor.data" in details

    # NaN in the input.
    bad = x.copy()
    bad[0, 0, 3, 4] = np.nan
    code, details = _error(py.predict, "digits-cnn", {"image": bad})
    assert code == "INVALID_ARGUMENT", details
    assert "inputs[0]" in details

    # Element type DOUBLE (with a byte length right for doubles). Hand-built: the client would
    # cast float64 to the float32 the model declares.
    dbl = named("image", x.astype(np.float64)).tensor
    assert dbl.element_type == pb.ELEMENT_TYPE_DOUBLE
    code, details = _status(predict, _predict_req("digits-cnn", dbl))
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert "element_type" in details

    # Wrong shape for the model: [1, 1, 8, 7].
    code, details = _error(py.predict, "digits-cnn", {"image": x[..., :7]})
    assert code == "INVALID_ARGUMENT", details
    assert "inputs[0]" in details

    # The daemon is still up and serving.
    daemon_alive()
    names = {m.name for m in py.models()}
    assert {"digits-cnn", "wine-mlp"} <= names
    outputs = py.predict("digits-cnn", {"image": x})
    assert list(outputs) == ["logits"]


def test_explain_bad_requests(py, daemon_alive):
    x = np.load(DIGITS_SAMPLES)[:2]

    def explain(explainer="occlusion", params=None, targets=None):
        return py.explain("digits-cnn", {"image": x}, explainer, targets=targets,
                          params={"window": [1, 2, 2]} if params is None else params)

    code, details = _error(explain, explainer="no-such-explainer")
    assert code == "NOT_FOUND", details
    assert "no-such-explainer" in details

    # A required parameter missing.
    code, details = _error(explain, params={})
    assert code == "INVALID_ARGUMENT", details
    assert "window" in details

    # An unknown parameter.
    code, details = _error(explain, params={"window": [1, 2, 2], "no_such_param": [1]})
    assert code == "INVALID_ARGUMENT", details
    assert "no_such_param" in details

    # A target index outside the output row (10 logits).
    code, details = _error(explain, targets=[10])
    assert code == "INVALID_ARGUMENT", details

    daemon_alive()
    assert {m.name for m in py.models()} >= {"digits-cnn"}
