"""The Open Inference Protocol (KServe v2) on explaind, driven by clients nobody here wrote.

One daemon with the HTTP routes (`--http-listen`) and an audit log:
- tritonclient, the protocol's official client (gRPC and HTTP, run in .venv-oip by
  oip_tritonclient.py), checks health and metadata, runs inference (binary tensors, and JSON on
  HTTP) and an explanation through the protocol's request parameters: its outputs are the
  native API's, bit for bit, and its errors are the protocol's, naming the field;
- kserve's clients (InferenceGRPCClient, InferenceRESTClient v2; oip_kserve.py) do the same
  for readiness, inference and an explanation;
- proto/inference/grpc_service.proto is wire-identical to the descriptors tritonclient ships,
  message by message and field by field;
- every `curl` line of README.md runs as written;
- the HTTP routes answer errors with the protocol's status codes and `{"error": ...}`;
- explanations on ModelInfer are audited as Explain records, predictions as Predict.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest

import daemon_proc
from explaind_py import Client
from paths import MODELS_DIR, REPO

OIP_PYTHON = REPO / ".venv-oip" / "bin" / "python"
HTTP_RE = re.compile(r"^explaind http on http://(127\.0\.0\.1:\d+)$")
MODEL = "wine-mlp"
X = np.load(MODELS_DIR / MODEL / "1" / "samples.npy").astype(np.float32)[:2]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("oip")
    key = tmp / "audit.key"
    daemon_proc.keygen(key)
    audit_dir = tmp / "audit"
    audit_dir.mkdir()
    d = daemon_proc.start(["serve", "--listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0",
                           "--models", str(MODELS_DIR), "--device", "cpu",
                           "--audit-dir", str(audit_dir), "--audit-key", str(key)], tmp / "log")
    deadline = time.monotonic() + 30
    while not any(HTTP_RE.match(line) for line in d.stdout_lines):
        assert time.monotonic() < deadline and d.alive(), f"no http line: {d.stdout_lines}"
        time.sleep(0.05)
    http = next(HTTP_RE.match(line).group(1) for line in d.stdout_lines if HTTP_RE.match(line))
    d.http = http
    d.audit_dir = audit_dir
    d.tmp = tmp
    yield d
    assert d.stop() == 0


def _http(daemon, method: str, path: str, body=None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://{daemon.http}{path}", data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


@pytest.fixture(scope="module")
def tritonclient_run(daemon):
    if not OIP_PYTHON.exists():
        pytest.fail(f"{OIP_PYTHON} is missing: scripts/setup/setup.sh makes it (tritonclient)")
    out = daemon.tmp / "tritonclient"
    out.mkdir()
    np.save(out / "x.npy", X)
    res = subprocess.run([str(OIP_PYTHON), str(REPO / "tests" / "python" / "oip_tritonclient.py"),
                          daemon.address, daemon.http, MODEL, str(out / "x.npy"), str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads((out / "results.json").read_text()), dict(np.load(out / "arrays.npz"))


def test_tritonclient_gets_the_native_apis_predictions_and_explanations(daemon, tritonclient_run):
    results, arrays = tritonclient_run
    with Client(daemon.address, timeout=60) as c:
        native = c.predict(MODEL, X)
        explanation = c.explain(MODEL, X, "occlusion", targets="all", window=[1])
    output = next(iter(native.values()))  # the first output, as the driver takes it
    for key in ("grpc_predict", "http_predict", "http_json_predict"):
        np.testing.assert_array_equal(arrays[key], output, err_msg=key)
    for kind in ("grpc", "http"):
        np.testing.assert_array_equal(arrays[f"{kind}_attributions"], explanation.values)
        np.testing.assert_array_equal(arrays[f"{kind}_target_indices"], explanation.target_indices)
        r = results[kind]
        assert (r["live"], r["ready"], r["model_ready"], r["missing_model_ready"]) == (True, True, True, False), r
        assert r["server_metadata"]["name"] == "explaind"
        assert "model_repository" in r["server_metadata"]["extensions"]
        (inp,) = r["model_metadata"]["inputs"]
        assert inp["datatype"] == "FP32" and [int(d) for d in inp["shape"]][1:] == [13], inp
        assert r["model_metadata"]["platform"] == "onnxruntime_onnx"
        assert r["explain_parameters"]["explainer"] in ({"string_param": "occlusion"}, "occlusion"), r
        assert "target_indices" in r["explain_outputs"] and "base_values" not in r["explain_outputs"]


def test_kserves_clients_get_the_native_apis_predictions_and_explanations(daemon):
    """kserve's InferenceGRPCClient and InferenceRESTClient (v2), in .venv-oip."""
    out = daemon.tmp / "kserve"
    out.mkdir()
    np.save(out / "x.npy", X)
    res = subprocess.run([str(OIP_PYTHON), str(REPO / "tests" / "python" / "oip_kserve.py"),
                          daemon.address, daemon.http, MODEL, "features", str(out / "x.npy"), str(out)],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    results = json.loads((out / "results.json").read_text())
    arrays = dict(np.load(out / "arrays.npz"))
    with Client(daemon.address, timeout=60) as c:
        native = c.predict(MODEL, X)
        explanation = c.explain(MODEL, X, "occlusion", targets="all", window=[1])
    for kind in ("grpc", "http"):
        r = results[kind]
        assert (r["live"], r["ready"], r["model_ready"]) == (True, True, True), r
        assert r["outputs"] == list(native), r
        np.testing.assert_array_equal(arrays[f"{kind}_predict"], next(iter(native.values())))
        np.testing.assert_array_equal(arrays[f"{kind}_attributions"], explanation.values)


def test_tritonclient_sees_the_protocols_errors_naming_the_field(tritonclient_run):
    results, _ = tritonclient_run
    for kind in ("grpc", "http"):
        e = results[kind]["errors"]
        codes = {
            "grpc": {"unknown_model": "StatusCode.NOT_FOUND", "bad": "StatusCode.INVALID_ARGUMENT"},
            "http": {"unknown_model": "404", "bad": "400"},
        }[kind]
        assert e["unknown_model"]["status"] == codes["unknown_model"], e
        assert "no-such-model" in e["unknown_model"]["message"], e
        for name in ("bad_datatype", "shape_mismatch", "bad_explainer_parameter"):
            assert e[name]["status"] == codes["bad"], (kind, name, e[name])
        assert e["bad_datatype"]["message"].startswith("inputs[0].datatype: FP64, but model input"), e
        assert "takes FP32" in e["bad_datatype"]["message"], e
        assert "inputs" in e["shape_mismatch"]["message"], e
        assert "parameters.window" in e["bad_explainer_parameter"]["message"], e
        assert e["unknown_explainer"]["status"] in (codes["unknown_model"], codes["bad"]), e
        assert "no-such" in e["unknown_explainer"]["message"], e


DESCRIBE = """
import json, sys
from google.protobuf import descriptor_pool
mod = __import__(sys.argv[1], fromlist=["DESCRIPTOR"])
out = {}
def walk(message, prefix):
    out[prefix + message.name] = sorted(
        (f.name, f.number, f.type, f.is_repeated if hasattr(f, "is_repeated") else f.label == 3,
         f.message_type.full_name if f.message_type else "",
         f.containing_oneof.name if f.containing_oneof else "")
        for f in message.fields)
    for nested in message.nested_types:
        if not nested.GetOptions().map_entry:
            walk(nested, prefix + message.name + ".")
for message in mod.DESCRIPTOR.message_types_by_name.values():
    walk(message, "")
service = mod.DESCRIPTOR.services_by_name["GRPCInferenceService"]
out["#service"] = sorted((m.name, m.input_type.full_name, m.output_type.full_name,
                          m.client_streaming, m.server_streaming) for m in service.methods)
print(json.dumps(out))
"""


def test_our_proto_is_wire_identical_to_the_one_tritonclient_ships():
    """Every message and RPC of proto/inference/grpc_service.proto against tritonclient's own
    descriptors: names, numbers, types, labels and oneofs."""
    ours = json.loads(subprocess.run([sys.executable, "-c", DESCRIBE, "inference.grpc_service_pb2"],
                                     capture_output=True, text=True, check=True,
                                     cwd=REPO / "tests" / "python" / "gen").stdout)
    theirs = json.loads(subprocess.run([str(OIP_PYTHON), "-c", DESCRIBE, "tritonclient.grpc.service_pb2"],
                                       capture_output=True, text=True, check=True).stdout)
    assert len(ours) > 20
    for name, fields in ours.items():
        if name == "#service":
            continue
        assert name in theirs, f"{name} is not a message of the protocol"
        assert fields == theirs[name], f"{name} differs from the protocol's"
    their_methods = {m[0]: m for m in theirs["#service"]}
    for method in ours["#service"]:
        assert their_methods.get(method[0]) == method, method


def test_the_readme_curl_examples_run(daemon):
    readme = (REPO / "README.md").read_text()
    lines = [line for line in readme.splitlines() if line.startswith("curl ")]
    assert len(lines) >= 4, lines
    for line in lines:
        args = [a.replace("127.0.0.1:8000", daemon.http) for a in shlex.split(line)]
        res = subprocess.run([*args, "--silent", "--show-error", "--fail-with-body"],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, (line, res.stdout, res.stderr)
        doc = json.loads(res.stdout)
        if "/infer" in line:
            assert doc["outputs"][0]["datatype"] == "FP32", doc
        if "/explain" in line:
            names = [o["name"] for o in doc["outputs"]]
            assert any(n.startswith("attributions/") for n in names), names


def test_http_errors_have_the_protocols_status_and_name_the_field(daemon):
    good = {"name": "features", "shape": [1, 13], "datatype": "FP32", "data": X[0].tolist()}
    status, doc = _http(daemon, "GET", "/v2/models/no-such-model")
    assert status == 404 and "no-such-model" in doc["error"], doc
    status, doc = _http(daemon, "POST", "/v2/models/wine-mlp/infer",
                        {"inputs": [dict(good, datatype="FLOAT32")]})
    assert status == 400 and doc["error"].startswith("inputs[0].datatype: unknown datatype"), doc
    status, doc = _http(daemon, "POST", "/v2/models/wine-mlp/infer", {"inputs": [dict(good, shape=[1, 12])]})
    assert status == 400 and "inputs[0]" in doc["error"] and "12" in doc["error"], doc
    status, doc = _http(daemon, "POST", "/v2/models/wine-mlp/infer", {"inputs": [dict(good, data=["a"] * 13)]})
    assert status == 400 and doc["error"].startswith("inputs[0].data[0]"), doc
    status, doc = _http(daemon, "POST", "/v2/models/wine-mlp/explain", {"inputs": [good]})
    assert status == 400 and doc["error"].startswith("parameters.explainer"), doc
    status, doc = _http(daemon, "POST", "/v2/models/wine-mlp/infer",
                        {"inputs": [good], "outputs": [{"name": "nope"}]})
    assert status == 400 and doc["error"].startswith("outputs[0].name"), doc
    status, doc = _http(daemon, "GET", "/v2/nothing/here")
    assert status == 404 and "error" in doc, doc
    status, doc = _http(daemon, "GET", "/v2/models/wine-mlp/versions/9/ready")
    assert status == 400 and doc["ready"] is False, doc


def test_nested_data_and_every_route_of_the_protocol(daemon):
    nested = {"name": "features", "shape": [2, 13], "datatype": "FP32", "data": X.tolist()}
    status, doc = _http(daemon, "POST", "/v2/models/wine-mlp/versions/1/infer", {"id": "r-1", "inputs": [nested]})
    assert status == 200, doc
    assert doc["id"] == "r-1" and doc["model_version"] == "1"
    with Client(daemon.address, timeout=60) as c:
        native = next(iter(c.predict(MODEL, X).values()))
    np.testing.assert_array_equal(np.asarray(doc["outputs"][0]["data"], np.float32).reshape(native.shape), native)
    assert _http(daemon, "GET", "/v2/health/live") == (200, {"live": True})
    assert _http(daemon, "GET", "/v2/health/ready") == (200, {"ready": True})
    status, index = _http(daemon, "POST", "/v2/repository/index", {})
    assert status == 200 and {"name": "wine-mlp", "version": "1", "state": "READY", "reason": ""} in index, index
    assert _http(daemon, "POST", "/v2/repository/models/digits-cnn/unload", {})[0] == 200
    assert _http(daemon, "GET", "/v2/models/digits-cnn/ready")[0] == 400
    status, index = _http(daemon, "POST", "/v2/repository/index", {"ready": True})
    assert all(m["name"] != "digits-cnn" for m in index), index
    assert _http(daemon, "POST", "/v2/repository/models/digits-cnn/load", {})[0] == 200
    assert _http(daemon, "GET", "/v2/models/digits-cnn/ready")[0] == 200


def test_explanations_on_the_protocol_are_audited_as_explain(daemon):
    body = {"inputs": [{"name": "features", "shape": [1, 13], "datatype": "FP32", "data": X[0].tolist()}],
            "parameters": {"explainer": "occlusion", "window": [1]}}
    status, doc = _http(daemon, "POST", "/v2/models/wine-mlp/explain", body)
    assert status == 200, doc
    deadline = time.monotonic() + 10
    while True:
        records, _ = daemon_proc.audit_records(daemon.audit_dir)
        explains = [r for r in records if r["rpc"] == "Explain" and (r.get("explainer") or {}).get("name") == "occlusion"
                    and r["parameters"].get("explainer") == {"window": [1]}]
        if explains or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert explains, records[-3:]
    assert explains[-1]["model"]["name"] == "wine-mlp" and explains[-1]["status"]["code"] == 0
    assert explains[-1]["caller"] == "address:127.0.0.1", explains[-1]["caller"]
    assert any(r["rpc"] == "Predict" and r["model"]["name"] == "wine-mlp" for r in records)


def test_faithfulness_metrics_over_http_json(daemon):
    """`evaluate` as a JSON object in the request's parameters; the figures come back as
    `evaluation/<metric>` outputs, equal to the native API's under the same seed."""
    body = {"inputs": [{"name": "features", "shape": [2, 13], "datatype": "FP32", "data": X.tolist()}],
            "parameters": {"explainer": "deep-shap", "targets": "all", "evaluation_seed": 3,
                           "evaluate": {"infidelity": {"samples": 4}, "deletion": {"steps": 2}}}}
    status, doc = _http(daemon, "POST", "/v2/models/wine-mlp/explain", body)
    assert status == 200, doc
    outputs = {o["name"]: o for o in doc["outputs"]}
    assert doc["parameters"]["evaluation_seed"] == 3
    with Client(daemon.address, timeout=60) as c:
        native = c.explain(MODEL, X, "deep-shap", targets="all", evaluation_seed=3,
                           evaluate={"infidelity": {"samples": 4}, "deletion": {"steps": 2}})
    for metric in ("infidelity", "deletion"):
        got = np.asarray(outputs[f"evaluation/{metric}"]["data"], np.float32).reshape(2, 3)
        np.testing.assert_array_equal(got, native.evaluation[metric].values)
    assert outputs["evaluation/deletion/curve"]["shape"] == [2, 3, 3]
