#!/usr/bin/env python3
"""Benchmark: explaind's Deep SHAP (over gRPC) against shap's DeepExplainer and captum's
DeepLiftShap, same models, inputs and backgrounds, in the same run.

explaind runs the ONNX model (its DeepLIFT graph) through ONNX Runtime on the CPU; shap and captum
run the PyTorch twin of the same model (same weights) with 2 threads. Cases:

1. digits-cnn (the committed model), one input, all 10 classes, 100 background rows
   (models/digits-cnn/1/background.npy).
2. mid-cnn, built here with seeded random weights (3x32x32 input, conv32-relu-conv32-relu-pool-
   conv64-relu-conv64-relu-pool-flatten-linear(4096,128)-relu-linear(128,10)), one input, all 10
   classes, 50 background rows (seeded uniform data).
3. mid-cnn, predicted class only: the first request with a new background (a freshly registered
   background, so the server-side activation cache is cold) against the same request repeated
   (cache warm).
4. scaling: mid-cnn, all 10 classes, 250, 500 and 1000 background rows, each on a fresh daemon
   started with --cache-bytes and --max-batch-rows so that it stays near 1 GiB; time and the
   daemon's peak RSS (VmHWM). shap and captum run once per row count where their time, estimated
   from case 2, is at most a minute.

explaind's times are whole gRPC round trips from this Python client (encoding included) with a
registered background (`background_id`); shap's and captum's are in-process calls. shap's
explainer is built once per case (its constructor runs the background forward pass) and only
`shap_values(x, check_additivity=False)` is timed. captum gets the background as `baselines`; it is
timed both as one `attribute` call per class (its usual use) and as one call over the input
repeated 10 times with `target=[0..9]` (the same work in one batch, its fastest setting). captum
0.9 is not additive on ReLU->MaxPool models (captum issue #1104, see make_deepshap_fixtures.py),
so it is given the model with a clone before each MaxPool, which fixes that at no measurable cost.

Before timing, explaind's attributions are checked against shap's on the digits CNN (absolute
1e-3); the max |attribution difference| vs shap and captum and explaind's max completeness
residual are printed for every case.

Needs a release build (`target/release/explaind`) and the reference libraries:
    cargo build --release --workspace
    python3 -m venv .venv-bench && .venv-bench/bin/pip install -r scripts/requirements-bench.txt
    .venv-bench/bin/python scripts/bench_deep_shap.py

Prints a Markdown table for BENCHMARKS.md. About 5 minutes on a 2-core machine.
"""
from __future__ import annotations

import copy
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "2")

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

EXPLAIND_REPEATS = 10
REFERENCE_REPEATS = 5
COLD_REPEATS = 5
SCALING_ROWS = (250, 500, 1000)
SCALING_CACHE_BYTES = 512 << 20
SCALING_MAX_BATCH_ROWS = 256
REFERENCE_LIMIT_S = 60.0
CLASSES = 10


def generate_stubs() -> None:
    from grpc_tools import protoc

    out = Path(tempfile.mkdtemp(prefix="explaind-stubs-"))
    rc = protoc.main(["protoc", f"-I{REPO / 'proto'}", f"--python_out={out}",
                      f"--grpc_python_out={out}", "explaind/v1/explaind.proto"])
    if rc != 0:
        raise SystemExit("protoc failed")
    sys.path.insert(0, str(out))


def start_daemon(models: Path, *extra: str) -> tuple[subprocess.Popen, str]:
    binary = REPO / "target" / "release" / "explaind"
    if not binary.exists():
        raise SystemExit(f"{binary} is missing: build it with `cargo build --release --workspace`")
    proc = subprocess.Popen([str(binary), "serve", "--listen", "127.0.0.1:0", "--device", "cpu",
                             "--models", str(models), *extra],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline().strip()
    prefix = "explaind listening on "
    if not line.startswith(prefix):
        proc.kill()
        raise SystemExit(f"unexpected first line from the daemon: {line!r}")
    return proc, line[len(prefix):]


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmHWM in /proc status")


def timed(fn, repeats: int, warmup: bool = True) -> list[float]:
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def fmt_s(seconds: float) -> str:
    if seconds >= 1.0:
        return f"{seconds:.2f} s"
    return f"{seconds * 1e3:.1f} ms"


# ---------------------------------------------------------------- models


def mid_cnn():
    import torch
    from torch import nn
    from make_deepshap_fixtures import init_params

    model = nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 8 * 8, 128), nn.ReLU(), nn.Linear(128, CLASSES),
    )
    init_params(model, np.random.default_rng(8))
    torch.manual_seed(0)
    return model.eval()


def build_repository(root: Path, mid_model, mid_example: np.ndarray) -> None:
    import onnxruntime as ort
    import torch
    from make_deepshap_fixtures import export_onnx

    shutil.copytree(REPO / "models" / "digits-cnn", root / "digits-cnn")
    model_bytes = export_onnx(mid_model, mid_example)
    (root / "mid-cnn" / "1").mkdir(parents=True)
    (root / "mid-cnn" / "1" / "model.onnx").write_bytes(model_bytes)
    sess = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    with torch.no_grad():
        want = mid_model(torch.from_numpy(mid_example)).numpy()
    got = sess.run(None, {"x": mid_example})[0]
    assert np.abs(got - want).max() <= 1e-4, np.abs(got - want).max()


# ---------------------------------------------------------------- explaind client


class Client:
    def __init__(self, addr: str):
        import grpc
        from explaind.v1 import explaind_pb2 as pb
        from explaind.v1 import explaind_pb2_grpc as pb_grpc

        self.pb = pb
        opts = [("grpc.max_send_message_length", 256 << 20), ("grpc.max_receive_message_length", 256 << 20)]
        self.channel = grpc.insecure_channel(addr, options=opts)
        self.stub = pb_grpc.ExplainServiceStub(self.channel)

    def tensor(self, a: np.ndarray):
        a = np.ascontiguousarray(a, dtype="<f4")
        return self.pb.Tensor(element_type=self.pb.ELEMENT_TYPE_FLOAT, shape=list(a.shape), data=a.tobytes())

    def register(self, model: str, input_name: str, rows: np.ndarray) -> str:
        pb = self.pb
        resp = self.stub.RegisterBackground(pb.RegisterBackgroundRequest(
            model=pb.ModelRef(name=model), rows=[pb.NamedTensor(name=input_name, tensor=self.tensor(rows))]))
        return resp.background_id

    def request(self, model: str, input_name: str, output: str, x: np.ndarray, background_id: str,
                all_classes: bool):
        pb = self.pb
        targets = pb.Targets(all=pb.AllOutputs()) if all_classes else pb.Targets(predicted=pb.PredictedClass())
        return pb.ExplainRequest(
            model=pb.ModelRef(name=model), explainer="deep-shap", output=output,
            inputs=[pb.NamedTensor(name=input_name, tensor=self.tensor(x))],
            targets=targets, background_id=background_id)

    def explain(self, request):
        return self.stub.Explain(request, timeout=600)


def values(tensor) -> np.ndarray:
    return np.frombuffer(tensor.data, dtype="<f4").reshape([int(d) for d in tensor.shape])


def residual(resp) -> float:
    (extra,) = [e for e in resp.extras if e.name == "completeness_residual"]
    return float(np.abs(values(extra.tensor)).max())


# ---------------------------------------------------------------- references


class References:
    """shap's DeepExplainer and captum's DeepLiftShap on one PyTorch model and background."""

    def __init__(self, model, background: np.ndarray):
        import shap
        import torch
        from captum.attr import DeepLiftShap
        from make_deepshap_fixtures import clone_before_maxpool

        self.torch = torch
        self.bg = torch.from_numpy(background)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.shap = shap.DeepExplainer(copy.deepcopy(model), self.bg)
        captum_model = clone_before_maxpool(copy.deepcopy(model)) or copy.deepcopy(model)
        self.captum = DeepLiftShap(captum_model)

    def shap_values(self, x: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sv = np.asarray(self.shap.shap_values(self.torch.from_numpy(x), check_additivity=False))
        return np.moveaxis(sv, -1, 1)  # (N, *in, T) -> (N, T, *in)

    def captum_per_class(self, x: np.ndarray) -> np.ndarray:
        xt = self.torch.from_numpy(x)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.stack([self.captum.attribute(xt, baselines=self.bg, target=t).detach().numpy()
                             for t in range(CLASSES)], axis=1)

    def captum_one_call(self, x: np.ndarray) -> np.ndarray:
        # one input: repeat it once per class, target = [0..9] (the batch is 10 x K rows)
        assert x.shape[0] == 1
        xt = self.torch.from_numpy(np.repeat(x, CLASSES, axis=0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = self.captum.attribute(xt, baselines=self.bg, target=list(range(CLASSES))).detach().numpy()
        return a[None]


# ---------------------------------------------------------------- cases


def compare_case(client: Client, name: str, model_name: str, input_name: str, output: str,
                 torch_model, x: np.ndarray, background: np.ndarray, check_shap_atol: float | None):
    """explaind (warm, registered background) against shap and captum, all 10 classes."""
    bg_id = client.register(model_name, input_name, background)
    req = client.request(model_name, input_name, output, x, bg_id, all_classes=True)
    first = client.explain(req)  # compiles the graph and fills the cache
    ours = values(first.attributions[0].values)
    refs = References(torch_model, background)
    theirs_shap = refs.shap_values(x)
    theirs_captum = refs.captum_per_class(x)
    theirs_captum1 = refs.captum_one_call(x)
    assert ours.shape == theirs_shap.shape == theirs_captum.shape, (ours.shape, theirs_shap.shape)
    d_shap = float(np.abs(ours - theirs_shap).max())
    d_captum = float(np.abs(ours - theirs_captum).max())
    d_captum1 = float(np.abs(theirs_captum1 - theirs_captum).max())
    if check_shap_atol is not None:
        np.testing.assert_allclose(ours, theirs_shap, rtol=0, atol=check_shap_atol)
    print(f"# {name}: max|explaind - shap| {d_shap:.2g}, max|explaind - captum| {d_captum:.2g}, "
          f"captum one call vs per class {d_captum1:.2g}, explaind max completeness residual "
          f"{residual(first):.2g}", file=sys.stderr)

    server = []

    def run_explaind():
        resp = client.explain(req)
        server.append((resp.timing.total_ms, resp.timing.model_ms, resp.timing.model_calls, resp.timing.model_rows))

    e = statistics.median(timed(run_explaind, EXPLAIND_REPEATS))
    server = server[1:]  # drop the warm-up
    s = statistics.median(timed(lambda: refs.shap_values(x), REFERENCE_REPEATS))
    c = statistics.median(timed(lambda: refs.captum_per_class(x), REFERENCE_REPEATS))
    c1 = statistics.median(timed(lambda: refs.captum_one_call(x), REFERENCE_REPEATS))
    total_ms = statistics.median(t[0] for t in server)
    model_ms = statistics.median(t[1] for t in server)
    return dict(name=name, explaind=e, shap=s, captum=c, captum1=c1, total_ms=total_ms,
                model_ms=model_ms, calls=server[0][2], rows=server[0][3], residual=residual(first),
                d_shap=d_shap, d_captum=d_captum)


def cold_warm_case(client: Client, x: np.ndarray, background: np.ndarray):
    """mid-cnn, predicted class: a new background each time (cold) against the same one (warm)."""
    # compile the attribution graph first, so cold measures the background's forward pass only
    bg_id = client.register("mid-cnn", "x", background)
    req = client.request("mid-cnn", "x", "y", x, bg_id, all_classes=False)
    client.explain(req)

    cold, cold_server = [], []
    for i in range(COLD_REPEATS):
        bg = background.copy()
        bg.flat[i] += 1e-3  # a different digest: nothing cached for it
        cold_id = client.register("mid-cnn", "x", bg)
        cold_req = client.request("mid-cnn", "x", "y", x, cold_id, all_classes=False)
        t0 = time.perf_counter()
        resp = client.explain(cold_req)
        cold.append(time.perf_counter() - t0)
        cold_server.append((resp.timing.total_ms, resp.timing.model_ms))
    warm_server = []

    def run_warm():
        resp = client.explain(req)
        warm_server.append((resp.timing.total_ms, resp.timing.model_ms))

    warm = timed(run_warm, EXPLAIND_REPEATS)
    warm_server = warm_server[1:]
    return dict(cold=statistics.median(cold), warm=statistics.median(warm),
                cold_total_ms=statistics.median(t[0] for t in cold_server),
                cold_model_ms=statistics.median(t[1] for t in cold_server),
                warm_total_ms=statistics.median(t[0] for t in warm_server),
                warm_model_ms=statistics.median(t[1] for t in warm_server))


def scaling_case(repo: Path, torch_model, x: np.ndarray, per_row_refs: dict[str, float]):
    """mid-cnn, all classes, K background rows, one fresh bounded daemon per K."""
    out = []
    rng = np.random.default_rng(81)
    big = rng.uniform(0.0, 1.0, (max(SCALING_ROWS), 3, 32, 32)).astype(np.float32)
    for k in SCALING_ROWS:
        bg = big[:k]
        proc, addr = start_daemon(repo, "--cache-bytes", str(SCALING_CACHE_BYTES),
                                  "--max-batch-rows", str(SCALING_MAX_BATCH_ROWS))
        try:
            client = Client(addr)
            bg_id = client.register("mid-cnn", "x", bg)
            req = client.request("mid-cnn", "x", "y", x, bg_id, all_classes=True)
            t0 = time.perf_counter()
            first = client.explain(req)
            cold = time.perf_counter() - t0
            server = []

            def run():
                resp = client.explain(req)
                server.append((resp.timing.total_ms, resp.timing.model_ms))

            warm = statistics.median(timed(run, 3, warmup=False))
            rss = peak_rss_mib(proc.pid)
            client.channel.close()
        finally:
            proc.kill()
            proc.wait()
        row = dict(rows=k, cold=cold, warm=warm, rss=rss, residual=residual(first),
                   warm_total_ms=statistics.median(t[0] for t in server),
                   warm_model_ms=statistics.median(t[1] for t in server))
        ours = values(first.attributions[0].values)
        for lib, per_row in per_row_refs.items():
            estimate = per_row * k
            if estimate > REFERENCE_LIMIT_S:
                row[lib] = None
                row[lib + "_estimate"] = estimate
                continue
            refs = References(torch_model, bg)
            fn = refs.shap_values if lib == "shap" else refs.captum_per_class
            t0 = time.perf_counter()
            theirs = fn(x)
            row[lib] = time.perf_counter() - t0
            row["d_" + lib] = float(np.abs(ours - theirs).max())
        print(f"# scaling {k} rows: {row}", file=sys.stderr)
        out.append(row)
    return out


# ---------------------------------------------------------------- main


def main() -> None:
    generate_stubs()
    import captum
    import onnxruntime as ort
    import shap
    import torch
    from make_deepshap_fixtures import digits_cnn

    torch.set_num_threads(2)
    started = time.perf_counter()

    digits_x = np.load(REPO / "models" / "digits-cnn" / "1" / "samples.npy")[:1].astype(np.float32)
    digits_bg = np.load(REPO / "models" / "digits-cnn" / "1" / "background.npy").astype(np.float32)
    assert digits_bg.shape[0] == 100, digits_bg.shape
    rng = np.random.default_rng(80)
    mid_x = rng.uniform(0.0, 1.0, (1, 3, 32, 32)).astype(np.float32)
    mid_bg = rng.uniform(0.0, 1.0, (50, 3, 32, 32)).astype(np.float32)
    mid = mid_cnn()
    digits = digits_cnn()

    repo = Path(tempfile.mkdtemp(prefix="explaind-bench-models-"))
    try:
        build_repository(repo, mid, mid_x)
        proc, addr = start_daemon(repo)
        try:
            client = Client(addr)
            results = [
                compare_case(client, "digits-cnn, 1 input, 10 classes, 100 background rows",
                             "digits-cnn", "image", "logits", digits, digits_x, digits_bg, 1e-3),
                compare_case(client, "mid-cnn, 1 input, 10 classes, 50 background rows",
                             "mid-cnn", "x", "y", mid, mid_x, mid_bg, None),
            ]
            cw = cold_warm_case(client, mid_x, mid_bg)
            client.channel.close()
        finally:
            proc.kill()
            proc.wait()
        per_row = {"shap": results[1]["shap"] / 50, "captum": results[1]["captum"] / 50}
        scaling = scaling_case(repo, mid, mid_x, per_row)
    finally:
        shutil.rmtree(repo, ignore_errors=True)
    elapsed = time.perf_counter() - started

    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads, shap {shap.__version__}, "
          f"captum {captum.__version__}, onnxruntime {ort.__version__} (explaind: CPU, default threads)")
    print(f"Command: {Path(sys.executable).name} scripts/bench_deep_shap.py ({elapsed:.0f} s in all)")
    print(f"explaind: median of {EXPLAIND_REPEATS} gRPC round trips after one warm-up, registered "
          f"background, cache warm; shap and captum: median of {REFERENCE_REPEATS} after one warm-up.\n")
    print("| case | explaind (gRPC) | in server: total / model | shap DeepExplainer | captum, per class "
          "| captum, one call | shap / explaind | captum per class / explaind | captum one call / explaind |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['name']} | {fmt_s(r['explaind'])} | {r['total_ms']:.1f} / {r['model_ms']:.1f} ms "
              f"| {fmt_s(r['shap'])} | {fmt_s(r['captum'])} | {fmt_s(r['captum1'])} "
              f"| {r['shap'] / r['explaind']:.1f}x | {r['captum'] / r['explaind']:.1f}x "
              f"| {r['captum1'] / r['explaind']:.1f}x |")
    print()
    print("Agreement and completeness (max absolute): "
          + "; ".join(f"{r['name'].split(',')[0]}: vs shap {r['d_shap']:.1g}, vs captum {r['d_captum']:.1g}, "
                      f"completeness residual {r['residual']:.1g}" for r in results))
    print()
    print(f"New background against the same one (mid-cnn, 1 input, predicted class, 50 rows; "
          f"cold: median of {COLD_REPEATS} requests, each with a freshly registered background):\n")
    print("| case | explaind (gRPC) | in server: total / model |")
    print("|---|---|---|")
    print(f"| new background (cold cache) | {fmt_s(cw['cold'])} | {cw['cold_total_ms']:.1f} / {cw['cold_model_ms']:.1f} ms |")
    print(f"| same background (warm cache) | {fmt_s(cw['warm'])} | {cw['warm_total_ms']:.1f} / {cw['warm_model_ms']:.1f} ms |")
    print(f"| ratio cold / warm | {cw['cold'] / cw['warm']:.1f}x | |")
    print()
    print(f"Scaling (mid-cnn, 1 input, 10 classes; one daemon per row count with --cache-bytes "
          f"{SCALING_CACHE_BYTES} --max-batch-rows {SCALING_MAX_BATCH_ROWS}; warm: median of 3; "
          f"shap and captum (per class) once, skipped where the estimate from the 50-row case is over "
          f"{REFERENCE_LIMIT_S:.0f} s):\n")
    print("| background rows | explaind cold | explaind warm | warm per row | in server: total / model "
          "| peak RSS | shap | captum, per class |")
    print("|---|---|---|---|---|---|---|---|")
    for r in scaling:
        def ref(lib):
            if r[lib] is None:
                return f"skipped (~{r[lib + '_estimate']:.0f} s)"
            return f"{fmt_s(r[lib])} ({r[lib] / r['warm']:.0f}x)"
        print(f"| {r['rows']} | {fmt_s(r['cold'])} | {fmt_s(r['warm'])} | {r['warm'] / r['rows'] * 1e3:.2f} ms "
              f"| {r['warm_total_ms']:.0f} / {r['warm_model_ms']:.0f} ms | {r['rss']:.0f} MiB | {ref('shap')} "
              f"| {ref('captum')} |")


if __name__ == "__main__":
    main()
