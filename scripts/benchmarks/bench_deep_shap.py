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
   started with --cache-bytes and --max-batch-rows (meant to keep it near 1 GiB); times, the rows
   sent through ONNX Runtime and the daemon's peak RSS (VmHWM). shap and captum run once per row
   count, each in a child process stopped after a minute (and not run for more rows once stopped).

Cases 1 and 2 also time one plain forward pass of the ONNX model over background rows x 10 rows
(onnxruntime's Python API): the backward pass does at least that many multiply-adds, so it is a
floor for any implementation on this runtime.

explaind's times are whole gRPC round trips from this Python client (encoding included) with a
registered background (`background_id`); shap's and captum's are in-process calls. shap's
explainer is built once per case (its constructor runs the background forward pass) and only
`shap_values(x, check_additivity=False)` is timed. captum gets the background as `baselines`; it is
timed both as one `attribute` call per class (its usual use) and as one call over the input
repeated 10 times with `target=[0..9]` (the same work in one batch of 10 x K rows). captum
0.9 is not additive on ReLU->MaxPool models (captum issue #1104, see make_deepshap_fixtures.py),
so it is given the model with a clone before each MaxPool, which fixes that (one copy of each
pre-pool activation).

Before timing, explaind's attributions are checked against shap's on the digits CNN (absolute
1e-3); the max |attribution difference| vs shap and captum and explaind's max completeness
residual are printed for every case.

`EXPLAIND_BENCH_SCALING=0` leaves out the scaling case. On a GPU (README.md, "On a GPU"), `EXPLAIND_BENCH_DEVICE=cuda` runs the daemon with `--device cuda`
(the CUDA build of ONNX Runtime named by ORT_DYLIB_PATH) and shap and captum on the same GPU
through PyTorch; the CPU floor table is then left out.

Needs a release build (`target/release/explaind`) and the reference libraries:
    cargo build --release --workspace
    python3 -m venv .venv-bench && .venv-bench/bin/pip install -r scripts/setup/requirements-bench.txt
    .venv-bench/bin/python scripts/benchmarks/bench_deep_shap.py

Prints a Markdown table for BENCHMARKS.md. About 7 minutes on a 2-core machine.
"""
from __future__ import annotations

import copy
import hashlib
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

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts" / "fixtures"))  # make_*_fixtures (the fixtures' models)
sys.path.insert(0, str(REPO / "scripts" / "benchmarks"))

from benchlib import generate_stubs, start_daemon  # noqa: E402

EXPLAIND_REPEATS = 10
REFERENCE_REPEATS = 5
REFERENCE_REPEATS_SLOW = 3  # where 5 runs would take more than REFERENCE_BUDGET_S
REFERENCE_BUDGET_S = 20.0
COLD_REPEATS = 5
SCALING_ROWS = (250, 500, 1000)
SCALING_SEED = 81
SCALING_CACHE_BYTES = 256 << 20
SCALING_CHUNK_BYTES = 128 << 20  # with the cache budget, keeps the daemon under 1 GiB at 1000 rows
SCALING_MAX_BATCH_ROWS = 256
REFERENCE_LIMIT_S = 60.0
CLASSES = 10
DEVICE = os.environ.get("EXPLAIND_BENCH_DEVICE", "cpu")
if DEVICE not in ("cpu", "cuda"):
    raise SystemExit(f"EXPLAIND_BENCH_DEVICE={DEVICE!r}: expected cpu or cuda")


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


def timed_reference(fn) -> list[float]:
    """REFERENCE_REPEATS timed runs after a warm-up, or REFERENCE_REPEATS_SLOW where the warm-up
    says that would take more than REFERENCE_BUDGET_S (keeps the whole run near 10 minutes)."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    repeats = REFERENCE_REPEATS if first * REFERENCE_REPEATS <= REFERENCE_BUDGET_S else REFERENCE_REPEATS_SLOW
    return timed(fn, repeats, warmup=False)


def exact_float32(torch) -> None:
    """No TF32 on the GPU (PyTorch allows it in cuDNN convolutions by default): explaind turns it
    off too, and the attributions are compared."""
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


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
        self.device = torch.device(DEVICE)
        self.bg = torch.from_numpy(background).to(self.device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.shap = shap.DeepExplainer(copy.deepcopy(model).to(self.device), self.bg)
        captum_model = clone_before_maxpool(copy.deepcopy(model)) or copy.deepcopy(model)
        self.captum = DeepLiftShap(captum_model.to(self.device))

    def tensor(self, x: np.ndarray):
        return self.torch.from_numpy(x).to(self.device)

    def shap_values(self, x: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sv = np.asarray(self.shap.shap_values(self.tensor(x), check_additivity=False))
        return np.moveaxis(sv, -1, 1)  # (N, *in, T) -> (N, T, *in)

    def captum_per_class(self, x: np.ndarray) -> np.ndarray:
        xt = self.tensor(x)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return np.stack([self.captum.attribute(xt, baselines=self.bg, target=t).detach().cpu().numpy()
                             for t in range(CLASSES)], axis=1)

    def captum_one_call(self, x: np.ndarray) -> np.ndarray:
        # one input: repeat it once per class, target = [0..9] (the batch is 10 x K rows)
        assert x.shape[0] == 1
        xt = self.tensor(np.repeat(x, CLASSES, axis=0))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = self.captum.attribute(xt, baselines=self.bg, target=list(range(CLASSES))).detach().cpu().numpy()
        return a[None]


# ---------------------------------------------------------------- cases


def forward_pass_time(model_path: Path, rows: np.ndarray) -> float:
    """Median time of one plain forward pass over `rows` through onnxruntime's Python API (the
    library explaind loads; workers not spinning, as in explaind)."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return statistics.median(timed(lambda: session.run(None, {name: rows}), EXPLAIND_REPEATS))


def compare_case(client: Client, name: str, model_name: str, input_name: str, output: str,
                 torch_model, x: np.ndarray, background: np.ndarray, check_shap_atol: float | None,
                 model_path: Path):
    """explaind (warm, registered background) against shap and captum, all 10 classes; and one
    forward pass over as many rows as the backward pass has (background rows x classes)."""
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
    s = statistics.median(timed_reference(lambda: refs.shap_values(x)))
    c = statistics.median(timed_reference(lambda: refs.captum_per_class(x)))
    c1 = statistics.median(timed_reference(lambda: refs.captum_one_call(x)))
    total_ms = statistics.median(t[0] for t in server)
    model_ms = statistics.median(t[1] for t in server)
    backward_rows = np.ascontiguousarray(np.repeat(background, 10, axis=0))
    forward = forward_pass_time(model_path, backward_rows) if DEVICE == "cpu" else None
    return dict(name=name, explaind=e, shap=s, captum=c, captum1=c1, total_ms=total_ms, forward=forward,
                backward_rows=len(backward_rows),
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


def scaling_data(k: int) -> np.ndarray:
    rng = np.random.default_rng(SCALING_SEED)
    return rng.uniform(0.0, 1.0, (max(SCALING_ROWS), 3, 32, 32)).astype(np.float32)[:k]


def mid_data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(80)
    x = rng.uniform(0.0, 1.0, (1, 3, 32, 32)).astype(np.float32)
    return x, rng.uniform(0.0, 1.0, (50, 3, 32, 32)).astype(np.float32)


def reference_worker(lib: str, k: int, out: str) -> None:
    """Child process for the scaling case: one shap or captum (per class) call on mid-cnn with k
    background rows, stopped after REFERENCE_LIMIT_S. Prints the time, or "timeout"."""
    import signal

    import torch

    torch.set_num_threads(2)
    exact_float32(torch)
    x, _ = mid_data()
    refs = References(mid_cnn(), scaling_data(k))
    fn = refs.shap_values if lib == "shap" else refs.captum_per_class

    def stop(signum, frame):
        raise TimeoutError

    signal.signal(signal.SIGALRM, stop)
    signal.alarm(int(REFERENCE_LIMIT_S))
    try:
        t0 = time.perf_counter()
        attributions = fn(x)
        elapsed = time.perf_counter() - t0
    except TimeoutError:
        print("timeout", flush=True)
        return
    signal.alarm(0)
    np.save(out, attributions)
    print(f"{elapsed:.6f}", flush=True)


def run_reference_worker(lib: str, k: int) -> tuple[float | None, np.ndarray | None]:
    out = Path(tempfile.mkdtemp(prefix="explaind-bench-ref-")) / "a.npy"
    try:
        proc = subprocess.run([sys.executable, __file__, "--reference-worker", lib, str(k), str(out)],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              timeout=REFERENCE_LIMIT_S + 180)
        last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        if proc.returncode != 0 or not last:
            raise SystemExit(f"reference worker {lib} {k} failed (exit {proc.returncode})")
        if last == "timeout":
            return None, None
        return float(last), np.load(out)
    except subprocess.TimeoutExpired:
        return None, None
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)


def scaling_case(repo: Path, x: np.ndarray):
    """mid-cnn, all classes, K background rows, one fresh bounded daemon per K. shap and captum
    run in a child process each (fresh memory, stopped after REFERENCE_LIMIT_S); once one of them
    is stopped it is not run for larger K."""
    out = []
    stopped: dict[str, int] = {}
    for k in SCALING_ROWS:
        bg = scaling_data(k)
        proc, addr = start_daemon("--models", str(repo), "--device", DEVICE, "--cache-bytes", str(SCALING_CACHE_BYTES),
                                  "--chunk-bytes", str(SCALING_CHUNK_BYTES),
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
                server.append((resp.timing.total_ms, resp.timing.model_ms, resp.timing.model_rows))

            warm = statistics.median(timed(run, 3 if cold < 5.0 else 1, warmup=False))
            rss = peak_rss_mib(proc.pid)
            client.channel.close()
        finally:
            proc.kill()
            proc.wait()
        row = dict(rows=k, cold=cold, warm=warm, rss=rss, residual=residual(first),
                   cold_rows=first.timing.model_rows, warm_rows=server[-1][2],
                   warm_total_ms=statistics.median(t[0] for t in server),
                   warm_model_ms=statistics.median(t[1] for t in server))
        ours = values(first.attributions[0].values)
        for lib in ("shap", "captum"):
            if lib in stopped:
                row[lib] = f"skipped (over {REFERENCE_LIMIT_S:.0f} s at {stopped[lib]} rows)"
                continue
            elapsed, theirs = run_reference_worker(lib, k)
            if elapsed is None:
                stopped[lib] = k
                row[lib] = f"stopped after {REFERENCE_LIMIT_S:.0f} s"
                continue
            row[lib] = f"{fmt_s(elapsed)} ({elapsed / warm:.1f}x)"
            row["d_" + lib] = float(np.abs(ours - theirs).max())
        print(f"# scaling {k} rows: {row}", file=sys.stderr)
        out.append(row)
    return out


# ---------------------------------------------------------------- main


def print_floor(results) -> None:
    print("A floor: the backward pass over the background rows x classes does at least the multiply-adds of one "
          "forward pass over as many rows (its transposed convolutions are the forward ones' adjoints). One "
          "plain forward pass over that many rows, through onnxruntime's Python API:\n")
    print("| case | rows | one forward pass | explaind / forward pass | shap / forward pass | captum per class / forward pass |")
    print("|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['name'].split(',')[0]} | {r['backward_rows']} | {fmt_s(r['forward'])} "
              f"| {r['explaind'] / r['forward']:.1f}x | {r['shap'] / r['forward']:.1f}x | {r['captum'] / r['forward']:.1f}x |")
    print()


def main() -> None:
    generate_stubs()
    import captum
    import onnxruntime as ort
    import shap
    import torch
    from make_deepshap_fixtures import digits_cnn

    torch.set_num_threads(2)
    exact_float32(torch)
    started = time.perf_counter()
    load_start = os.getloadavg()[0]

    digits_x = np.load(REPO / "models" / "digits-cnn" / "1" / "samples.npy")[:1].astype(np.float32)
    digits_bg = np.load(REPO / "models" / "digits-cnn" / "1" / "background.npy").astype(np.float32)
    assert digits_bg.shape[0] == 100, digits_bg.shape
    mid_x, mid_bg = mid_data()
    mid = mid_cnn()
    digits = digits_cnn()

    repo = Path(tempfile.mkdtemp(prefix="explaind-bench-models-"))
    try:
        build_repository(repo, mid, mid_x)
        proc, addr = start_daemon("--models", str(repo), "--device", DEVICE)
        try:
            client = Client(addr)
            results = [
                compare_case(client, "digits-cnn, 1 input, 10 classes, 100 background rows",
                             "digits-cnn", "image", "logits", digits, digits_x, digits_bg, 1e-3,
                             REPO / "models" / "digits-cnn" / "1" / "model.onnx"),
                compare_case(client, "mid-cnn, 1 input, 10 classes, 50 background rows",
                             "mid-cnn", "x", "y", mid, mid_x, mid_bg, None, repo / "mid-cnn" / "1" / "model.onnx"),
            ]
            cw = cold_warm_case(client, mid_x, mid_bg)
            client.channel.close()
        finally:
            proc.kill()
            proc.wait()
        scaling = scaling_case(repo, mid_x) if os.environ.get("EXPLAIND_BENCH_SCALING", "1") != "0" else []
    finally:
        shutil.rmtree(repo, ignore_errors=True)
    elapsed = time.perf_counter() - started

    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; "
          f"torch {torch.__version__} with {torch.get_num_threads()} threads, shap {shap.__version__}, "
          f"captum {captum.__version__}, onnxruntime {ort.__version__} "
          f"(explaind: {'CPU, default threads' if DEVICE == 'cpu' else 'CUDA'})")
    if DEVICE == "cuda":
        print(f"GPU: {torch.cuda.get_device_name(0)}; explaind with --device cuda "
              f"({os.environ.get('ORT_DYLIB_PATH', 'the default library')}); shap and captum on the same GPU through PyTorch")
    binary = REPO / "target" / "release" / "explaind"
    built = time.strftime("%Y-%m-%d %H:%M", time.localtime(binary.stat().st_mtime))
    digest = hashlib.sha256(binary.read_bytes()).hexdigest()[:12]
    print(f"Command: {Path(sys.executable).name} scripts/benchmarks/bench_deep_shap.py ({elapsed:.0f} s in all); "
          f"target/release/explaind built {built}, sha256 {digest}...")
    print(f"explaind: median of {EXPLAIND_REPEATS} gRPC round trips after one warm-up, registered "
          f"background, cache warm; shap and captum: median of {REFERENCE_REPEATS} "
          f"({REFERENCE_REPEATS_SLOW} where 5 would take over {REFERENCE_BUDGET_S:.0f} s) after one warm-up. "
          f"In server: the response's timing (total_ms / model_ms, medians).\n")
    print("| case | explaind (gRPC) | in server: total / model | shap DeepExplainer | captum, per class "
          "| captum, one call | shap / explaind | captum per class / explaind | captum one call / explaind |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['name']} | {fmt_s(r['explaind'])} | {r['total_ms']:.1f} / {r['model_ms']:.1f} ms "
              f"| {fmt_s(r['shap'])} | {fmt_s(r['captum'])} | {fmt_s(r['captum1'])} "
              f"| {r['shap'] / r['explaind']:.1f}x | {r['captum'] / r['explaind']:.1f}x "
              f"| {r['captum1'] / r['explaind']:.1f}x |")
    print()
    if DEVICE == "cpu":
        print_floor(results)
    print("Agreement and completeness (max absolute): "
          + "; ".join(f"{r['name'].split(',')[0]}: vs shap {r['d_shap']:.1g}, vs captum {r['d_captum']:.1g}, "
                      f"explaind completeness residual {r['residual']:.1g}, {r['calls']} ONNX Runtime calls "
                      f"over {r['rows']} rows per request" for r in results))
    print()
    print(f"New background against the same one (mid-cnn, 1 input, predicted class, 50 rows; "
          f"cold: median of {COLD_REPEATS} requests, each with a freshly registered background):\n")
    print("| case | explaind (gRPC) | in server: total / model |")
    print("|---|---|---|")
    print(f"| new background (cold cache) | {fmt_s(cw['cold'])} | {cw['cold_total_ms']:.1f} / {cw['cold_model_ms']:.1f} ms |")
    print(f"| same background (warm cache) | {fmt_s(cw['warm'])} | {cw['warm_total_ms']:.1f} / {cw['warm_model_ms']:.1f} ms |")
    print(f"| ratio cold / warm | {cw['cold'] / cw['warm']:.1f}x | |")
    print()
    if scaling:
        print(f"Scaling (mid-cnn, 1 input, 10 classes; a fresh daemon per row count, started with "
              f"`--cache-bytes {SCALING_CACHE_BYTES} --chunk-bytes {SCALING_CHUNK_BYTES} --max-batch-rows {SCALING_MAX_BATCH_ROWS}`; cold: the "
              f"first request; warm: the same request again (median of 3 where cold is under 5 s, else 1); "
              f"rows through ONNX Runtime (cold / warm; fewer when warm means the cache held the background); "
              f"peak RSS: the daemon's VmHWM after these requests; shap and captum (per class): one call each "
              f"in a child process, stopped after {REFERENCE_LIMIT_S:.0f} s; ratio to explaind warm):\n")
        print("| background rows | explaind cold | explaind warm | warm per row | in server (warm): total / model "
              "| rows through ORT | peak RSS | shap | captum, per class |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in scaling:
            print(f"| {r['rows']} | {fmt_s(r['cold'])} | {fmt_s(r['warm'])} | {r['warm'] / r['rows'] * 1e3:.1f} ms "
                  f"| {r['warm_total_ms']:.0f} / {r['warm_model_ms']:.0f} ms | {r['cold_rows']} / {r['warm_rows']} "
                  f"| {r['rss']:.0f} MiB | {r['shap']} | {r['captum']} |")
        print()
    print(f"Load average (1 min) at the start and the end: {load_start:.2f}, {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--reference-worker":
        reference_worker(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        main()
