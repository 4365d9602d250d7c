#!/usr/bin/env python3
"""Benchmark: explaining a BERT-base text classifier per token, explaind (gRPC, ONNX Runtime on the
CPU) against captum (PyTorch, 2 threads), in one run.

The model is transformers' BertForSequenceClassification with the BERT-base configuration (hidden
768, 12 layers, 12 heads, MLP 3072, vocabulary 30522), random weights (torch.manual_seed(0)),
2 labels, attn_implementation="eager", exported by this script to a temporary model repository
(never committed) as scripts/fixtures/make_token_fixtures.py exports its tiny twin: torch.onnx.export
(dynamo=False, opset 17), inputs input_ids and attention_mask (int64 [batch, sequence]), output
logits. onnxruntime's logits are checked against torch's (absolute 1e-3). The release daemon
serves it with `--intra-threads 2` (as torch.set_num_threads(2)) and `--max-batch-rows 10` (as
captum's internal_batch_size=10).

One input: SEQUENCE (128) positions, [CLS], seeded random ids, [SEP], the last PADDING positions
[PAD] (attention mask 0); the target is the class torch scores highest. Methods, same settings on
both sides:
  integrated gradients at the word embedding   50 steps, Gauss-Legendre, baseline [PAD] with [CLS]
                                               and [SEP] kept; explaind `integrated-gradients`
                                               (keep_ids=[101, 102]) vs captum
                                               LayerIntegratedGradients(word_embeddings,
                                               internal_batch_size=10), float32
  occlusion over positions                     window 1, replacement [PAD]; explaind `occlusion`
                                               vs captum Occlusion on the ids (a forward that
                                               holds the mask), perturbations_per_eval=10

Agreement is checked before timing: IG per position within 1e-2 of the largest |attribution|
(float32 on both sides, the same points and weights), occlusion within 1e-4 of its largest.

Times: one untimed call (explaind compiles its graphs there), then the median of REPEATS (3).
explaind's time is a whole gRPC round trip from this client; captum's are in-process calls.

Usage (from the repository root; release build first; a few minutes on 2 cores):
    cargo build --release --workspace
    /tmp/exp-venv/bin/python scripts/benchmarks/bench_tokens.py
"""
from __future__ import annotations

import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "2")

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts" / "benchmarks"))

from benchlib import generate_stubs, start_daemon  # noqa: E402

THREADS = 2
REPEATS = int(os.environ.get("EXPLAIND_BENCH_REPEATS", "3"))
IG_STEPS = 50
BATCH = 10
SEQUENCE = 128
PADDING = 28
PAD, CLS, SEP = 0, 101, 102


def fmt_s(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 1.0 else f"{seconds * 1e3:.0f} ms"


def timed(fn) -> float:
    fn()  # untimed: compiles graphs, warms caches
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def build():
    import torch
    import transformers

    class Classifier(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    torch.manual_seed(0)
    config = transformers.BertConfig(num_labels=2, pad_token_id=PAD, attn_implementation="eager")
    return Classifier(transformers.BertForSequenceClassification(config)).eval()


def inputs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    length = SEQUENCE - PADDING
    ids = np.full((1, SEQUENCE), PAD, dtype=np.int64)
    ids[0, 0], ids[0, length - 1] = CLS, SEP
    ids[0, 1 : length - 1] = rng.integers(1000, 30000, size=length - 2)
    mask = (np.arange(SEQUENCE) < length).astype(np.int64)[None, :]
    baseline = np.where((ids == CLS) | (ids == SEP), ids, PAD)
    return ids, mask, baseline


def main() -> int:
    import captum
    import onnxruntime as ort
    import torch
    import transformers
    from captum.attr import LayerIntegratedGradients, Occlusion

    torch.set_num_threads(THREADS)
    generate_stubs()
    import grpc
    from explaind.v1 import explaind_pb2 as pb
    from explaind.v1 import explaind_pb2_grpc as pb_grpc

    model = build()
    ids, mask, baseline = inputs()
    t_ids, t_mask, t_baseline = (torch.from_numpy(a) for a in (ids, mask, baseline))
    with torch.no_grad():
        logits = model(t_ids, t_mask).numpy()
    target = int(logits.argmax(1)[0])
    repo = Path(tempfile.mkdtemp(prefix="explaind-bench-tokens-"))
    rows = []
    try:
        path = repo / "bert-base" / "1" / "model.onnx"
        path.parent.mkdir(parents=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (t_ids, t_mask), str(path), dynamo=False, opset_version=17,
                              input_names=["input_ids", "attention_mask"], output_names=["logits"],
                              dynamic_axes={"input_ids": {0: "batch"}, "attention_mask": {0: "batch"},
                                            "logits": {0: "batch"}})
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        if np.abs(got - logits).max() > 1e-3:
            raise SystemExit(f"onnxruntime differs from torch by {np.abs(got - logits).max()}")
        del session
        print(f"# exported {path.stat().st_size / 2**20:.0f} MiB; target class {target}", file=sys.stderr)

        proc, addr = start_daemon("--models", str(repo), "--intra-threads", str(THREADS),
                                  "--max-batch-rows", str(BATCH))
        try:
            channel = grpc.insecure_channel(addr, options=[("grpc.max_receive_message_length", 256 << 20)])
            stub = pb_grpc.ExplainServiceStub(channel)

            def tensor(a):
                return pb.Tensor(element_type=pb.ELEMENT_TYPE_INT64, shape=list(a.shape),
                                 data=np.ascontiguousarray(a, dtype="<i8").tobytes())

            def request(method, params):
                return pb.ExplainRequest(
                    model=pb.ModelRef(name="bert-base"), explainer=method,
                    inputs=[pb.NamedTensor(name="input_ids", tensor=tensor(ids)),
                            pb.NamedTensor(name="attention_mask", tensor=tensor(mask))],
                    explained_inputs=["input_ids"], targets=pb.Targets(indices=pb.IndexList(values=[target])),
                    parameters=params)

            def attributions(response):
                a = response.attributions[0].values
                return np.frombuffer(a.data, dtype="<f4").reshape([int(d) for d in a.shape])[0, 0]

            # Integrated gradients at the word embedding.
            ig_params = {"steps": pb.ParamValue(integer=IG_STEPS), "method": pb.ParamValue(text="gausslegendre"),
                         "baseline": pb.ParamValue(number=PAD),
                         "keep_ids": pb.ParamValue(integers=pb.IntegerList(values=[CLS, SEP]))}
            ig_request = request("integrated-gradients", ig_params)
            ours = attributions(stub.Explain(ig_request, timeout=900))
            lig = LayerIntegratedGradients(model, model.model.bert.embeddings.word_embeddings)

            def captum_ig():
                return lig.attribute(t_ids, baselines=t_baseline, target=target, additional_forward_args=(t_mask,),
                                     n_steps=IG_STEPS, method="gausslegendre", internal_batch_size=BATCH)

            theirs = captum_ig().sum(-1)[0].detach().numpy()
            gap = float(np.abs(ours - theirs).max() / np.abs(theirs).max())
            if gap > 1e-2:
                raise SystemExit(f"IG disagrees with captum: {gap:.2e} of the largest attribution")
            rows.append(("integrated gradients at the embedding", timed(lambda: stub.Explain(ig_request, timeout=900)),
                         "captum LayerIntegratedGradients", timed(captum_ig), f"{gap:.1e}"))

            # Occlusion over positions.
            occ_request = request("occlusion", {"window": pb.ParamValue(integers=pb.IntegerList(values=[1])),
                                                "baseline": pb.ParamValue(number=PAD)})
            ours = attributions(stub.Explain(occ_request, timeout=900))
            occlusion = Occlusion(lambda x: model(x, t_mask.expand(x.shape[0], -1)))

            def captum_occlusion():
                with torch.no_grad():
                    return occlusion.attribute(t_ids, sliding_window_shapes=(1,), baselines=PAD, target=target,
                                               perturbations_per_eval=BATCH)

            theirs = captum_occlusion()[0].numpy()
            gap = float(np.abs(ours - theirs).max() / np.abs(theirs).max())
            if gap > 1e-4:
                raise SystemExit(f"occlusion disagrees with captum: {gap:.2e} of the largest attribution")
            rows.append(("occlusion, window 1", timed(lambda: stub.Explain(occ_request, timeout=900)),
                         "captum Occlusion", timed(captum_occlusion), f"{gap:.1e}"))
            channel.close()
        finally:
            proc.kill()
            proc.wait()
    finally:
        shutil.rmtree(repo, ignore_errors=True)

    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), transformers {transformers.__version__}, captum {captum.__version__}, "
          f"onnxruntime {ort.__version__}; explaind --intra-threads {THREADS} --max-batch-rows {BATCH}")
    print(f"Command: {Path(sys.executable).name} scripts/benchmarks/bench_tokens.py; BERT-base, {SEQUENCE} positions "
          f"({PADDING} padding), one input, target class {target}; median of {REPEATS} after one untimed call\n")
    print("| method | explaind (gRPC) | reference | reference time | reference / explaind | max gap / max |φ| |")
    print("|---|---|---|---|---|---|")
    for method, ours_s, ref, ref_s, gap in rows:
        print(f"| {method} | {fmt_s(ours_s)} | {ref} | {fmt_s(ref_s)} | {ref_s / ours_s:.2f}x | {gap} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
