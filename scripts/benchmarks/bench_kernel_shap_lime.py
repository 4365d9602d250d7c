#!/usr/bin/env python3
"""Benchmark: explaind's Kernel SHAP and LIME plugins (over gRPC) against shap's
KernelExplainer and lime's LimeTabularExplainer, on the same ONNX model, background, budgets
and inputs; plus Kernel SHAP on the digits CNN with 16 patches at the full budget.

shap and lime call the model through onnxruntime's Python API, so the model costs about the
same on both sides; explaind's time is a whole gRPC round trip from this Python client.

Cases (wine-mlp, 6 held-out rows, its 50-row default background):
- Kernel SHAP, every output (3), default budget 2M + 2048 = 2074 coalitions. shap runs with
  l1_reg=False (the same estimator as explaind's default; shap's own default adds a LARS
  feature selection, timed too).
- Kernel SHAP with the full budget 2^13 - 2: both are exact, so the script checks they agree.
- Kernel SHAP with a 10-row background (as after summarising one): the model costs little, so
  this shows what each side adds around it.
- LIME tabular, predicted class, lime's defaults (5000 samples, quartiles, 10 features).
- Kernel SHAP on digits-cnn (1 input, 20 background rows), 2x2 patches (16 groups), budget
  2^16 - 2 = 65534 coalitions: 1.3 M model rows. explaind only (shap has no patch masks in
  KernelExplainer); time and the daemon's peak RSS.

Needs a release build and the benchmark venv (scripts/setup/requirements-bench.txt):
    cargo build --release -p explaind -p explaind-plugin-kernel-shap -p explaind-plugin-lime
    /tmp/bench-venv/bin/python scripts/benchmarks/bench_kernel_shap_lime.py [DAEMON FLAGS...]
Flags after the script's name go to `explaind serve` (for example `--intra-op-spinning true`).

Prints Markdown for BENCHMARKS.md.
"""
from __future__ import annotations

import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts" / "benchmarks"))

from benchlib import generate_stubs, start_daemon  # noqa: E402


def timed(fn, repeats: int) -> tuple[float, object]:
    """Median wall time of `repeats` runs after one warm-up, and the last result."""
    result = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return -1


def main() -> None:
    generate_stubs()
    import grpc
    import lime
    import onnxruntime as ort
    import shap
    from explaind.v1 import explaind_pb2 as pb
    from explaind.v1 import explaind_pb2_grpc as pb_grpc
    from lime.lime_tabular import LimeTabularExplainer

    warnings.filterwarnings("ignore")
    wine = REPO / "models" / "wine-mlp" / "1"
    x = np.ascontiguousarray(np.load(wine / "samples.npy"), dtype=np.float32)
    background = np.ascontiguousarray(np.load(wine / "background.npy"), dtype=np.float32)
    session = ort.InferenceSession(str(wine / "model.onnx"), providers=["CPUExecutionProvider"])

    def predict(rows: np.ndarray) -> np.ndarray:
        return session.run(["probabilities"], {"features": np.asarray(rows, dtype=np.float32)})[0]

    def model_alone(count: int) -> float:
        """Median time of `count` rows through the model alone, in 8192-row calls of the session
        shap and lime use: what any explainer evaluating that many coalition rows must spend."""
        rows = np.ascontiguousarray(np.resize(background, (count, background.shape[1])))
        return timed(lambda: [predict(rows[i:i + 8192]) for i in range(0, count, 8192)], 5)[0]

    predicted = predict(x).argmax(axis=1)

    def tensor(a: np.ndarray):
        return pb.Tensor(element_type=pb.ELEMENT_TYPE_FLOAT, shape=list(a.shape), data=a.tobytes())

    def integer(v: int):
        return pb.ParamValue(integer=v)

    # Calls of up to 8192 rows (the default is 1024): fewer, larger ONNX Runtime calls, as shap
    # and lime make (shap sends 103,700 rows per input at once, lime 5000).
    proc, addr = start_daemon("--max-batch-rows", "8192", *sys.argv[1:])
    rows = []
    notes = []
    try:
        stub = pb_grpc.ExplainServiceStub(grpc.insecure_channel(addr, options=[
            ("grpc.max_receive_message_length", 1 << 30), ("grpc.max_send_message_length", 1 << 30)]))

        def explain(explainer, inputs, output, targets, params, bg=None, model="wine-mlp"):
            request = pb.ExplainRequest(
                model=pb.ModelRef(name=model), explainer=explainer, output=output,
                inputs=[pb.NamedTensor(name="", tensor=tensor(inputs))], targets=targets,
                parameters=params,
                background=[] if bg is None else [pb.NamedTensor(name="", tensor=tensor(bg))])
            return stub.Explain(request, timeout=600)

        def values(response) -> np.ndarray:
            v = response.attributions[0].values
            return np.frombuffer(v.data, dtype=np.float32).reshape(v.shape)

        all_targets = pb.Targets(all=pb.AllOutputs())
        predicted_target = pb.Targets(predicted=pb.PredictedClass())

        # --- Kernel SHAP, digits CNN, 16 patches, full budget (first, so that the daemon's peak
        # RSS before it is its start-up's) --------------------------------------------------
        digits = REPO / "models" / "digits-cnn" / "1"
        image = np.ascontiguousarray(np.load(digits / "samples.npy")[:1], dtype=np.float32)
        digits_bg = np.ascontiguousarray(np.load(digits / "background.npy")[:20], dtype=np.float32)
        rss_before = peak_rss_kib(proc.pid)
        t0 = time.perf_counter()
        resp = explain("kernel-shap", image, "logits", predicted_target,
                       {"patch": pb.ParamValue(integers=pb.IntegerList(values=[2, 2])),
                        "nsamples": integer(2 ** 16 - 2)}, digits_bg, model="digits-cnn")
        grouped_time = time.perf_counter() - t0
        rss_after = peak_rss_kib(proc.pid)
        residual = max(abs(v) for v in np.frombuffer(
            next(e for e in resp.extras if e.name == "completeness_residual").tensor.data, dtype=np.float32))
        grouped = (f"| Kernel SHAP, digits-cnn, 1 input, 2x2 patches (16 groups), 20 background rows, "
                   f"{resp.info['coalitions']} coalitions | {grouped_time:.2f} s | "
                   f"{resp.timing.total_ms / 1e3:.2f} / {resp.timing.model_ms / 1e3:.2f} s, "
                   f"{resp.timing.model_calls} calls, {resp.timing.model_rows} rows | "
                   f"{rss_before / 1024:.0f} MiB before, {rss_after / 1024:.0f} MiB after | {residual:.1e} |")
        # --- Kernel SHAP, full budget: both exact, so they must agree -------------------------
        full = 2 ** 13 - 2
        ours = values(explain("kernel-shap", x, "probabilities", all_targets, {"nsamples": integer(full)}, background))
        ks = shap.KernelExplainer(predict, background)
        theirs = np.stack([np.asarray(ks.shap_values(x[i:i + 1], nsamples=full, l1_reg=False, silent=True))
                           .reshape(13, 3).T for i in range(len(x))])
        agreement = float(np.abs(ours - theirs).max())
        notes.append(f"Kernel SHAP at the full budget (exact on both sides): max |explaind - shap| = {agreement:.1e}")

        # --- Kernel SHAP, default budget -------------------------------------------------------
        def explaind_kernel():
            return explain("kernel-shap", x, "probabilities", all_targets, {}, background)

        def shap_kernel(l1_reg):
            def run():
                return [ks.shap_values(x[i:i + 1], l1_reg=l1_reg, silent=True) for i in range(len(x))]
            return run

        e_time, e_resp = timed(explaind_kernel, 5)
        s_time, _ = timed(shap_kernel(False), 3)
        s_default_time, _ = timed(shap_kernel("num_features(10)"), 3)
        timing = e_resp.timing
        rows.append(("Kernel SHAP, wine-mlp, 6 inputs x 3 outputs, 50 background rows, 2074 coalitions",
                     e_time, s_time, f"shap KernelExplainer (l1_reg=False): {s_time:.2f} s; shap's default "
                     f"l1_reg: {s_default_time:.2f} s ({s_default_time / e_time:.0f}x)",
                     f"{timing.total_ms:.0f} / {timing.model_ms:.0f} ms, {timing.model_rows} rows"))
        alone = model_alone(timing.model_rows)
        notes.append(f"The model alone, 50-row background: its {timing.model_rows} rows (the rows shap evaluates "
                     f"too) through onnxruntime's Python API in 8192-row calls take {alone * 1e3:.0f} ms, so no "
                     f"implementation evaluating them can be more than {s_time / alone:.1f}x faster than shap here")

        # --- Kernel SHAP, small background (where the model costs little) --------------------
        small_bg = np.ascontiguousarray(background[:10])
        ks_small = shap.KernelExplainer(predict, small_bg)

        def explaind_kernel_small():
            return explain("kernel-shap", x, "probabilities", all_targets, {}, small_bg)

        def shap_kernel_small():
            return [ks_small.shap_values(x[i:i + 1], l1_reg=False, silent=True) for i in range(len(x))]

        e_time, e_resp = timed(explaind_kernel_small, 5)
        s_time, _ = timed(shap_kernel_small, 3)
        timing = e_resp.timing
        rows.append(("Kernel SHAP, as above with the first 10 background rows", e_time, s_time,
                     f"shap KernelExplainer (l1_reg=False): {s_time:.2f} s",
                     f"{timing.total_ms:.0f} / {timing.model_ms:.0f} ms, {timing.model_rows} rows"))
        alone = model_alone(timing.model_rows)
        notes.append(f"The model alone, 10-row background: {timing.model_rows} rows take {alone * 1e3:.0f} ms "
                     f"(at most {s_time / alone:.1f}x faster than shap)")

        # --- LIME tabular ----------------------------------------------------------------------
        def explaind_lime():
            return explain("lime", x, "probabilities", predicted_target, {"seed": integer(0)})

        def lime_tabular():
            out = []
            for i in range(len(x)):
                explainer = LimeTabularExplainer(background.astype(np.float64), discretize_continuous=True,
                                                 random_state=i)
                out.append(explainer.explain_instance(x[i].astype(np.float64), predict, labels=(int(predicted[i]),),
                                                      num_features=10, num_samples=5000))
            return out

        e_time, e_resp = timed(explaind_lime, 5)
        l_time, l_result = timed(lime_tabular, 3)
        ours = values(e_resp)[:, 0, :]
        theirs = np.zeros_like(ours)
        for i, exp in enumerate(l_result):
            for j, c in exp.local_exp[int(predicted[i])]:
                theirs[i, j] = c
        corr = float(np.corrcoef(ours.ravel(), theirs.ravel())[0, 1])
        top_agree = sum(int(np.argmax(np.abs(ours[i]))) == int(np.argmax(np.abs(theirs[i]))) for i in range(len(x)))
        notes.append(f"LIME: correlation of explaind's and lime's coefficients {corr:.3f} (different random "
                     f"streams, same distributions); same top feature for {top_agree} of {len(x)} inputs")
        timing = e_resp.timing
        rows.append(("LIME tabular, wine-mlp, 6 inputs, predicted class, 5000 samples, 10 features",
                     e_time, l_time, f"lime LimeTabularExplainer: {l_time:.2f} s",
                     f"{timing.total_ms:.0f} / {timing.model_ms:.0f} ms, {timing.model_rows} rows"))

    finally:
        proc.kill()
        proc.wait()

    load = os.getloadavg()
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; "
          f"shap {shap.__version__}, lime {getattr(lime, '__version__', '0.2.0.1')}, "
          f"onnxruntime {ort.__version__} (both sides on the CPU, default threads)")
    print(f"Load average at the end (1/5/15 min): {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")
    print("explaind: median of 5 gRPC round trips after one warm-up; shap and lime: median of 3 "
          f"after one warm-up. Daemon flags: --max-batch-rows 8192 {' '.join(sys.argv[1:])}\n")
    print("| case | explaind (gRPC) | reference | ratio | in server: total / model, rows |")
    print("|---|---|---|---|---|")
    for name, e, ref, ref_text, server in rows:
        print(f"| {name} | {e * 1e3:.0f} ms | {ref_text} | {ref / e:.0f}x | {server} |")
    print()
    print("| grouped case | explaind (gRPC) | in server: total / model | daemon peak RSS (VmHWM) | max completeness residual |")
    print("|---|---|---|---|---|")
    print(grouped)
    print()
    for note in notes:
        print(f"- {note}")


if __name__ == "__main__":
    main()
