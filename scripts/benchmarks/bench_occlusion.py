#!/usr/bin/env python3
"""Benchmark: explaind's occlusion plugin (over gRPC) against captum's Occlusion, same model.

Both sides run the same ONNX model through ONNX Runtime on the CPU: captum gets a forward
function that calls onnxruntime's Python API, so the model costs the same on both sides and the
difference is what each does around the model calls. captum is run with its default
(perturbations_per_eval=1: one model call per window, each over the whole input batch) and with
perturbations_per_eval equal to the number of windows (every window of every input in one call),
which is the fastest setting it has.

Needs a release build and a Python with the reference libraries (not part of the test set-up):
    cargo build --release --workspace
    python3 -m venv .venv-bench && .venv-bench/bin/pip install -r scripts/setup/requirements-bench.txt
    .venv-bench/bin/python scripts/benchmarks/bench_occlusion.py

Prints a Markdown table for BENCHMARKS.md.
"""
from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "python"))
sys.path.insert(0, str(REPO / "scripts" / "benchmarks"))

from benchlib import generate_stubs, start_daemon  # noqa: E402

REPEATS = 30


def best_and_median(fn) -> tuple[float, float]:
    fn()  # warm-up
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def main() -> None:
    generate_stubs()
    import grpc
    import onnxruntime as ort
    import torch
    from captum.attr import Occlusion
    from explaind.v1 import explaind_pb2 as pb
    from explaind.v1 import explaind_pb2_grpc as pb_grpc

    torch.set_num_threads(2)
    cases = [
        # (model, input name, output, samples, window, strides)
        ("digits-cnn", "image", "logits", 8, (1, 2, 2), (1, 1, 1)),
        ("digits-cnn", "image", "logits", 64, (1, 3, 3), (1, 1, 1)),
        ("wine-mlp", "features", "probabilities", 6, (1,), (1,)),
    ]
    proc, addr = start_daemon()
    rows = []
    try:
        channel = grpc.insecure_channel(addr)
        stub = pb_grpc.ExplainServiceStub(channel)
        for model, input_name, output, count, window, strides in cases:
            version_dir = REPO / "models" / model / "1"
            samples = np.load(version_dir / "samples.npy")
            if model == "digits-cnn":
                background = np.load(version_dir / "background.npy")
                samples = np.concatenate([samples, background])[:count]
            else:
                samples = samples[:count]
            samples = np.ascontiguousarray(samples, dtype=np.float32)
            session = ort.InferenceSession(str(version_dir / "model.onnx"), providers=["CPUExecutionProvider"])
            output_index = [o.name for o in session.get_outputs()].index(output)
            predicted = session.run(None, {input_name: samples})[output_index].argmax(axis=1)

            def forward(x: torch.Tensor) -> torch.Tensor:
                out = session.run(None, {input_name: x.detach().numpy().astype(np.float32)})[output_index]
                return torch.from_numpy(out)

            occlusion = Occlusion(forward)
            x_torch = torch.from_numpy(samples)
            target = torch.from_numpy(predicted)
            windows = int(np.prod([
                int(np.ceil((d - w) / s)) + 1 for d, w, s in zip(samples.shape[1:], window, strides)
            ]))

            def captum_default():
                return occlusion.attribute(x_torch, sliding_window_shapes=window, strides=strides,
                                           target=target, baselines=0.0)

            def captum_batched():
                return occlusion.attribute(x_torch, sliding_window_shapes=window, strides=strides,
                                           target=target, baselines=0.0, perturbations_per_eval=windows)

            request = pb.ExplainRequest(
                model=pb.ModelRef(name=model), explainer="occlusion", output=output,
                inputs=[pb.NamedTensor(name=input_name, tensor=pb.Tensor(
                    element_type=pb.ELEMENT_TYPE_FLOAT, shape=list(samples.shape), data=samples.tobytes()))],
                targets=pb.Targets(predicted=pb.PredictedClass()),
                parameters={
                    "window": pb.ParamValue(integers=pb.IntegerList(values=list(window))),
                    "strides": pb.ParamValue(integers=pb.IntegerList(values=list(strides))),
                },
            )

            def explaind():
                return stub.Explain(request)

            # Same answers before timing anything.
            ours = np.frombuffer(explaind().attributions[0].values.data, dtype=np.float32)
            theirs = captum_batched().numpy().reshape(-1)
            np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)

            e_best, e_med = best_and_median(explaind)
            c1_best, c1_med = best_and_median(captum_default)
            cb_best, cb_med = best_and_median(captum_batched)
            rows.append((f"{model}, {count} inputs, window {window}, {windows} windows each",
                         e_med, c1_med, cb_med))
    finally:
        proc.kill()
        proc.wait()

    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; "
          f"torch {torch.__version__} with 2 threads, onnxruntime {ort.__version__}")
    print(f"Median of {REPEATS} runs after one warm-up.\n")
    print("| case | explaind (gRPC) | captum default | captum, all windows in one call | ratio vs default | ratio vs one call |")
    print("|---|---|---|---|---|---|")
    for name, e, c1, cb in rows:
        print(f"| {name} | {e * 1e3:.1f} ms | {c1 * 1e3:.1f} ms | {cb * 1e3:.1f} ms | {c1 / e:.1f}x | {cb / e:.1f}x |")


if __name__ == "__main__":
    main()
