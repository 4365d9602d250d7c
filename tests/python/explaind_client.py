"""Small helpers for talking to explaind from the Python tests.

The gRPC stubs are generated at test time (see conftest.py) into tests/python/gen/, which
conftest puts on sys.path before any test module imports this one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import grpc
import numpy as np

from explaind.v1 import explaind_pb2 as pb  # noqa: E402  (generated at test time)
from explaind.v1 import explaind_pb2_grpc as pb_grpc  # noqa: E402

# ElementType value -> numpy dtype (little-endian), for the types numpy can hold.
_DTYPES = {
    pb.ELEMENT_TYPE_FLOAT: np.dtype("<f4"),
    pb.ELEMENT_TYPE_UINT8: np.dtype("u1"),
    pb.ELEMENT_TYPE_INT8: np.dtype("i1"),
    pb.ELEMENT_TYPE_UINT16: np.dtype("<u2"),
    pb.ELEMENT_TYPE_INT16: np.dtype("<i2"),
    pb.ELEMENT_TYPE_INT32: np.dtype("<i4"),
    pb.ELEMENT_TYPE_INT64: np.dtype("<i8"),
    pb.ELEMENT_TYPE_BOOL: np.dtype("?"),
    pb.ELEMENT_TYPE_FLOAT16: np.dtype("<f2"),
    pb.ELEMENT_TYPE_DOUBLE: np.dtype("<f8"),
    pb.ELEMENT_TYPE_UINT32: np.dtype("<u4"),
    pb.ELEMENT_TYPE_UINT64: np.dtype("<u8"),
}
_ELEMENT_TYPES = {dt.newbyteorder("<"): et for et, dt in _DTYPES.items()}


def to_tensor(array) -> pb.Tensor:
    """A numpy array as a Tensor message (little-endian, row-major)."""
    a = np.asarray(array)
    dt = a.dtype.newbyteorder("<")
    try:
        et = _ELEMENT_TYPES[dt]
    except KeyError:
        raise TypeError(f"no ElementType for numpy dtype {a.dtype}") from None
    data = np.ascontiguousarray(a, dtype=dt).tobytes(order="C")
    return pb.Tensor(element_type=et, shape=list(a.shape), data=data)


def from_tensor(tensor: pb.Tensor) -> np.ndarray:
    """A Tensor message as a numpy array; checks that the byte length matches the shape."""
    try:
        dt = _DTYPES[tensor.element_type]
    except KeyError:
        raise TypeError(f"no numpy dtype for ElementType {tensor.element_type}") from None
    shape = tuple(int(d) for d in tensor.shape)
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    if len(tensor.data) != count * dt.itemsize:
        raise ValueError(
            f"tensor data has {len(tensor.data)} bytes; shape {shape} of {dt} needs "
            f"{count * dt.itemsize}"
        )
    return np.frombuffer(tensor.data, dtype=dt).reshape(shape).copy()


def named(name: str, array) -> pb.NamedTensor:
    return pb.NamedTensor(name=name, tensor=to_tensor(array))


def outputs_dict(named_tensors) -> dict[str, np.ndarray]:
    """Repeated NamedTensor -> {name: array}, refusing duplicate names."""
    out: dict[str, np.ndarray] = {}
    for nt in named_tensors:
        assert nt.name not in out, f"duplicate output name {nt.name!r}"
        out[nt.name] = from_tensor(nt.tensor)
    return out


def dims(tensor_info) -> list:
    """TensorInfo.shape as a list: int for a fixed size, str for a symbol, None if unknown."""
    out = []
    for d in tensor_info.shape:
        which = d.WhichOneof("value")
        out.append(d.size if which == "size" else d.symbol if which == "symbol" else None)
    return out


def integers(*values: int) -> pb.ParamValue:
    return pb.ParamValue(integers=pb.IntegerList(values=list(values)))


def number(value: float) -> pb.ParamValue:
    return pb.ParamValue(number=float(value))


def indices(*values: int) -> pb.Targets:
    return pb.Targets(indices=pb.IndexList(values=list(values)))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Client:
    """Stubs for the three explaind services on one channel."""

    def __init__(self, channel: grpc.Channel, timeout: float = 60.0):
        self.channel = channel
        self.timeout = timeout
        self.models = pb_grpc.ModelServiceStub(channel)
        self.explain = pb_grpc.ExplainServiceStub(channel)
        self.admin = pb_grpc.AdminServiceStub(channel)

    def list_models(self) -> pb.ListModelsResponse:
        return self.models.ListModels(pb.ListModelsRequest(), timeout=self.timeout)

    def predict(self, model: str, inputs: dict, version: str = "") -> pb.PredictResponse:
        req = pb.PredictRequest(
            model=pb.ModelRef(name=model, version=version),
            inputs=[named(k, v) for k, v in inputs.items()],
        )
        return self.models.Predict(req, timeout=self.timeout)

    def explain_request(self, request: pb.ExplainRequest) -> pb.ExplainResponse:
        return self.explain.Explain(request, timeout=self.timeout)

    def list_explainers(self) -> pb.ListExplainersResponse:
        return self.explain.ListExplainers(pb.ListExplainersRequest(), timeout=self.timeout)
