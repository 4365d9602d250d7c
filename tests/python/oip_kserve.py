"""Drives explaind with kserve's own clients (InferenceGRPCClient and InferenceRESTClient, v2):
readiness, liveness, inference and an explanation through the protocol's request parameters,
with no explaind-specific code beyond those parameters.

Run by tests/python/test_oip.py in .venv-oip (kserve's and tritonclient's generated protos
share the package name `inference`, so each client runs in a process of its own), never
imported by the tests:

    .venv-oip/bin/python tests/python/oip_kserve.py GRPC_ADDR HTTP_ADDR MODEL INPUT_NAME INPUTS.npy OUT_DIR

Writes OUT_DIR/results.json and OUT_DIR/arrays.npz, as oip_tritonclient.py does. kserve's
clients have no model-metadata call, so the test passes the input's name.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

EXPLAIN = {"explainer": "occlusion", "window": "[1]", "targets": "all"}


def request(model: str, input_name: str, x: np.ndarray, parameters=None) -> InferRequest:
    tensor = InferInput(name=input_name, shape=list(x.shape), datatype="FP32")
    tensor.set_data_from_numpy(x, binary_data=False)
    return InferRequest(model_name=model, infer_inputs=[tensor], request_id="kserve-1", parameters=parameters)


def by_name(response, name: str) -> np.ndarray:
    (output,) = [o for o in response.outputs if o.name == name]
    return output.as_numpy()


async def main() -> None:
    grpc_addr, http_addr, model, input_name, inputs_path, out_dir = sys.argv[1:7]
    x = np.load(inputs_path)
    arrays: dict = {}
    results: dict = {}

    grpc = InferenceGRPCClient(url=grpc_addr, retries=0)
    results["grpc"] = {
        "live": await grpc.is_server_live(),
        "ready": await grpc.is_server_ready(),
        "model_ready": await grpc.is_model_ready(model),
    }
    response = await grpc.infer(request(model, input_name, x))
    results["grpc"]["outputs"] = [o.name for o in response.outputs]
    arrays["grpc_predict"] = response.outputs[0].as_numpy()
    response = await grpc.infer(request(model, input_name, x, EXPLAIN))
    arrays["grpc_attributions"] = by_name(response, f"attributions/{input_name}")
    await grpc.close()

    base = f"http://{http_addr}"
    rest = InferenceRESTClient(RESTConfig(protocol="v2", retries=0))
    results["http"] = {
        "live": await rest.is_server_live(base),
        "ready": await rest.is_server_ready(base),
        "model_ready": await rest.is_model_ready(base, model),
    }
    response = await rest.infer(base, request(model, input_name, x), model_name=model)
    results["http"]["outputs"] = [o.name for o in response.outputs]
    arrays["http_predict"] = response.outputs[0].as_numpy()
    response = await rest.infer(base, request(model, input_name, x, EXPLAIN), model_name=model)
    arrays["http_attributions"] = by_name(response, f"attributions/{input_name}")
    await rest.close()

    out = Path(out_dir)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str))
    np.savez(out / "arrays.npz", **arrays)


if __name__ == "__main__":
    asyncio.run(main())
