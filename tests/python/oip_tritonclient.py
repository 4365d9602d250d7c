"""Drives explaind with tritonclient, the Open Inference Protocol's official Python client, over
gRPC and HTTP: the calls a Triton or KServe user makes, with no explaind-specific code beyond
the request parameters of explaind's explain extension.

Run by tests/python/test_oip.py in .venv-oip (tritonclient needs protobuf < 7, see
scripts/setup/requirements-oip.txt), never imported by the tests:

    .venv-oip/bin/python tests/python/oip_tritonclient.py GRPC_ADDR HTTP_ADDR MODEL INPUTS.npy OUT_DIR

Writes OUT_DIR/results.json (health, metadata, errors, the shapes it saw) and OUT_DIR/arrays.npz
(every output it received), which the test compares with explaind's native API.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from google.protobuf.json_format import MessageToDict
from tritonclient.utils import InferenceServerException

EXPLAIN = {"explainer": "occlusion", "window": "[1]", "targets": "all"}


def error(call) -> dict:
    try:
        call()
    except InferenceServerException as e:
        return {"status": str(e.status()), "message": e.message()}
    return {"status": "no error"}


def drive(kind: str, client, module, model: str, x: np.ndarray, arrays: dict) -> dict:
    out: dict = {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "model_ready": client.is_model_ready(model),
        "missing_model_ready": client.is_model_ready("no-such-model"),
    }
    server = client.get_server_metadata()
    metadata = client.get_model_metadata(model)
    if kind == "grpc":
        server = MessageToDict(server, preserving_proto_field_name=True)
        metadata = MessageToDict(metadata, preserving_proto_field_name=True)
    out["server_metadata"] = server
    out["model_metadata"] = metadata
    input_name = metadata["inputs"][0]["name"]
    output_name = metadata["outputs"][0]["name"]

    def inputs(data=x, datatype="FP32", shape=None, binary=True):
        tensor = module.InferInput(input_name, list(shape or data.shape), datatype)
        if kind == "http":
            tensor.set_data_from_numpy(data, binary_data=binary)
        else:
            tensor.set_data_from_numpy(data)
        return [tensor]

    # Inference, as any Triton user runs it (binary tensors on HTTP, tritonclient's default).
    result = client.infer(model, inputs())
    arrays[f"{kind}_predict"] = result.as_numpy(output_name)
    if kind == "http":
        # The same with JSON tensors both ways.
        json_out = [httpclient.InferRequestedOutput(output_name, binary_data=False)]
        result = client.infer(model, inputs(binary=False), outputs=json_out)
        arrays["http_json_predict"] = result.as_numpy(output_name)

    # An explanation: explaind's extension, through the protocol's request parameters.
    result = client.infer(model, inputs(), parameters=EXPLAIN)
    arrays[f"{kind}_attributions"] = result.as_numpy(f"attributions/{input_name}")
    arrays[f"{kind}_target_indices"] = result.as_numpy("target_indices")
    response = result.get_response()
    if kind == "grpc":
        response = MessageToDict(response, preserving_proto_field_name=True)
    out["explain_parameters"] = response.get("parameters", {})
    out["explain_outputs"] = [o["name"] for o in response["outputs"]]

    # Errors in the protocol's form.
    out["errors"] = {
        "unknown_model": error(lambda: client.infer("no-such-model", inputs())),
        "bad_datatype": error(lambda: client.infer(model, inputs(x.astype(np.float64), "FP64"))),
        "shape_mismatch": error(lambda: client.infer(model, inputs(x[:, :-1]))),
        "unknown_explainer": error(lambda: client.infer(model, inputs(), parameters={"explainer": "no-such"})),
        "bad_explainer_parameter": error(
            lambda: client.infer(model, inputs(), parameters={"explainer": "occlusion", "window": "[0]"})),
    }
    return out


def main() -> None:
    grpc_addr, http_addr, model, inputs_path, out_dir = sys.argv[1:6]
    x = np.load(inputs_path)
    arrays: dict = {}
    results = {
        "grpc": drive("grpc", grpcclient.InferenceServerClient(url=grpc_addr), grpcclient, model, x, arrays),
        "http": drive("http", httpclient.InferenceServerClient(url=http_addr), httpclient, model, x, arrays),
    }
    out = Path(out_dir)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    np.savez(out / "arrays.npz", **arrays)


if __name__ == "__main__":
    main()
