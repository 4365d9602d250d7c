"""A Python client for explaind: predictions and explanations of ONNX models over gRPC.

    from explaind_py import Client
    e = Client("127.0.0.1:50051").explain("wine-mlp", x, "deep-shap", targets="all")
    e.attributions["features"], e.base_values      # [N, T, 13] and [N, T]

Arrays go in and come out as numpy arrays; the gRPC stubs are in explaind_py._proto.
"""

from ._client import (
    Client,
    ExplaindError,
    ExplainerInfo,
    Explanation,
    MetricResult,
    ModelInfo,
    ParameterInfo,
    TensorSpec,
    Timing,
)

__version__ = "0.1.0"

__all__ = [
    "Client",
    "ExplaindError",
    "ExplainerInfo",
    "Explanation",
    "MetricResult",
    "ModelInfo",
    "ParameterInfo",
    "TensorSpec",
    "Timing",
]
