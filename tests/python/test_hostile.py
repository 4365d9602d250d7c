"""A hostile client: no request may take the daemon down, outlive its deadline, answer NaN with
OK, or go unaudited.

One daemon of this module's own (not the shared `server` fixture) runs under a memory cap
(`prlimit --as`), with an audit log, and gets:

1. the issue's corpus (`ISSUE_CASES`): the requests a hostile client found that aborted the
   daemon, kept it busy after DEADLINE_EXCEEDED, answered NaN with OK, or answered INTERNAL;
2. a second corpus in the same spirit (`DESIGNED_CASES`): targets, inputs, names, parameters,
   backgrounds and plots that a careless or malicious client could send, and requests with
   deadlines far too short for their work;
3. a fuzz of every parameter of every loaded explainer (`test_fuzz_parameters`), by the kind
   ListExplainers reports, with a fixed list of hostile values;
4. many concurrent slow requests, each with a short deadline.

Every answer must have an expected status (never INTERNAL, UNKNOWN or a dead daemon), name the
offending field when it refuses, and be finite when it is OK. After a DEADLINE_EXCEEDED the
daemon must go quiet. Then the checks after the corpus: the daemon is alive and SERVING, its log
has no panic, its memory is back near where it was after warm-up, it is idle, and every request
sent has exactly one audit record with the status the client got.
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import daemon_proc
from explaind_client import Client, from_tensor, indices, integers, named, number, pb
from paths import MODELS_DIR

C = grpc.StatusCode
OK, IA, RE, DE, NF = (C.OK, C.INVALID_ARGUMENT, C.RESOURCE_EXHAUSTED, C.DEADLINE_EXCEEDED,
                      C.NOT_FOUND)

# --------------------------------------------------------------------------------------------
# Bounds, and why
# --------------------------------------------------------------------------------------------

# The daemon's address-space cap (RLIMIT_AS, via prlimit). Measured with this module's daemon
# (debug build, --device cpu, 2 cores, the 11 bundled plugins, the three demo models): VmPeak
# 0.5 GiB idle, 1.6 GiB after the warm-up below, 2.2 GiB after the whole corpus (VmRSS 0.77 and
# 0.92 GiB). Most of the address space is reservations (thread stacks, glibc's per-thread
# malloc arenas of 64 MiB, ONNX Runtime's arenas), not memory in use. The fixed daemon may
# legitimately hold one request of up to --max-request-bytes (default 2 GiB) on top of its
# 2.2 GiB, so 6 GiB (2.2 + 2 + ~1.8 of headroom for concurrent requests) never refuses a legal
# request, yet turns the issue's 8-16 GB and 13 TB allocations into a failed allocation (an
# abort of the daemon, which the tests report) instead of an out-of-memory machine (24 GiB).
ADDRESS_SPACE_CAP = 6 << 30

# VmRSS after the corpus may exceed VmRSS after warm-up by at most this much. The warm-up runs
# the corpus's largest legitimate requests once (HEAVY_WARM_UP: a 60 MiB message, a 52 MB
# response, full 1024-row batches), so the allocator's and ONNX Runtime's arenas already hold
# what those need; the activation cache and registered backgrounds are capped at 64 MiB each
# (--cache-bytes, --background-bytes). What is left is what glibc keeps of a few more freed
# buffers of up to ~60 MB (measured: +150 MB). More than 300 MB is memory that requests left
# behind, or threads of cancelled requests still allocating (the issue's "grows memory").
RSS_GROWTH_BOUND = 300 << 20

# After a DEADLINE_EXCEEDED the request's threads stop at their next cancellation check. Every
# loop checks often (about every 100 ms of work); the longest stretch without a check is one
# ONNX Runtime run of a batch (up to --max-batch-rows rows), which the daemon cannot interrupt:
# about 0.1-0.2 s for the MNIST CNN's backward pass at 1024 rows on this 2-core machine, up to
# about twice that while the machine is busy with something else. So: after DE_SETTLE_S, the
# daemon may use at most DE_CPU_MAX_S of CPU over DE_WINDOW_S.
DE_SETTLE_S, DE_WINDOW_S, DE_CPU_MAX_S = 0.5, 0.5, 0.1
# After the whole corpus (and the concurrent burst): CPU over 1 s, after 1 s to settle.
IDLE_SETTLE_S, IDLE_WINDOW_S, IDLE_CPU_MAX_S = 1.0, 1.0, 0.2

# Time bounds, so that even a daemon that hangs on every request ends this module in bounded
# time: the default deadline of a corpus request, and the wall time the corpus may take in all
# (requests not sent once it is spent fail with "time budget spent").
DEFAULT_DEADLINE_S = 10.0
FUZZ_DEADLINE_S = 10.0
CORPUS_BUDGET_S = 300.0
WARM_UP_BUDGET_S = 120.0  # (about 8 s here)
FUZZ_WORKERS = 3

# Statuses that are never acceptable as an answer to a request.
NEVER = {C.INTERNAL, C.UNKNOWN, C.UNAVAILABLE, C.DATA_LOSS}
# Where a non-finite result must be named.
NONFINITE_NAMES = ("outputs.", "attributions.", "base_values", "extras.", "inputs")

F32_MAX = float(np.finfo(np.float32).max)  # 3.4028235e38

# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------

WINE = np.load(MODELS_DIR / "wine-mlp" / "1" / "samples.npy")[:1].astype(np.float32)  # [1, 13]
DIGITS = np.load(MODELS_DIR / "digits-cnn" / "1" / "samples.npy")[:1].astype(np.float32)  # [1,1,8,8]
MNIST = np.load(MODELS_DIR / "mnist-cnn" / "1" / "samples.npy")[:1].astype(np.float32)  # [1,1,28,28]
INPUT_NAME = {"wine-mlp": "features", "digits-cnn": "image", "mnist-cnn": "image"}
SAMPLE = {"wine-mlp": WINE, "digits-cnn": DIGITS, "mnist-cnn": MNIST}


def integer(v: int) -> pb.ParamValue:
    return pb.ParamValue(integer=v)


def text(v: str) -> pb.ParamValue:
    return pb.ParamValue(text=v)


def raw_tensor(element_type: int, shape: list[int], data: bytes) -> pb.Tensor:
    return pb.Tensor(element_type=element_type, shape=shape, data=data)


def predict_req(model: str, x=None, tensors: list | None = None) -> pb.PredictRequest:
    if tensors is None:
        tensors = [named(INPUT_NAME[model], SAMPLE[model] if x is None else x)]
    return pb.PredictRequest(model=pb.ModelRef(name=model), inputs=tensors)


# Cheap parameters per explainer and model: one input row, little work, so that what a case
# changes is what decides its cost.
CHEAP = {
    "occlusion": {"wine-mlp": {"window": integers(1)},
                  "digits-cnn": {"window": integers(1, 4, 4), "strides": integers(1, 4, 4)},
                  "mnist-cnn": {"window": integers(1, 14, 14), "strides": integers(1, 14, 14)}},
    "deep-shap": {},
    "deeplift": {},
    "expected-gradients": {"*": {"samples": integer(8)}},
    "grad-cam": {},
    "gradient-x-input": {},
    "integrated-gradients": {"*": {"steps": integer(8)}},
    "kernel-shap": {"wine-mlp": {"nsamples": integer(64)},
                    "digits-cnn": {"nsamples": integer(64), "patch": integers(4, 4)},
                    "mnist-cnn": {"nsamples": integer(64), "patch": integers(14, 14)}},
    "lime": {"*": {"num_samples": integer(64)}},
    "saliency": {},
    "smoothgrad": {"*": {"samples": integer(4), "steps": integer(4)}},
}
EXPLAINERS = sorted(CHEAP)  # the bundled explainers


def cheap(explainer: str, model: str) -> dict:
    per_model = CHEAP.get(explainer, {})
    return dict(per_model.get(model, per_model.get("*", {})))


def explain_req(model: str, explainer: str, x=None, *, params: dict | None = None,
                extra: dict | None = None, tensors: list | None = None, targets=None,
                output: str = "", background: list | None = None, background_id: str = "",
                plot: pb.PlotOptions | None = None) -> pb.ExplainRequest:
    """An explain request: `params` replaces the cheap parameters, `extra` is merged into them."""
    p = cheap(explainer, model) if params is None else dict(params)
    p.update(extra or {})
    if tensors is None:
        tensors = [named(INPUT_NAME.get(model, "image"), SAMPLE.get(model, DIGITS) if x is None else x)]
    return pb.ExplainRequest(
        model=pb.ModelRef(name=model), explainer=explainer, inputs=tensors, targets=targets,
        output=output, parameters=p, background=background or [], background_id=background_id,
        plot=plot,
    )


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------


@dataclass
class Case:
    id: str
    # "Predict", "Explain", or "raw:/package.Service/Method" (the request is then bytes).
    rpc: str
    # Builds the request when the case runs (big ones are not kept alive between cases).
    build: Callable[[], object]
    # Acceptable status codes.
    codes: frozenset
    # When the answer is INVALID_ARGUMENT or RESOURCE_EXHAUSTED, its message contains one of these.
    names: tuple = ()
    deadline: float = DEFAULT_DEADLINE_S


def case(id, rpc, build, codes, names=(), deadline=DEFAULT_DEADLINE_S):
    return Case(id, rpc, build, frozenset(codes), tuple([names] if isinstance(names, str) else names),
                deadline)


def ex(id, model, explainer, codes, names=(), deadline=DEFAULT_DEADLINE_S, **kw):
    return case(id, "Explain", lambda: explain_req(model, explainer, **kw), codes, names, deadline)


def pr(id, model, codes, names=(), **kw):
    return case(id, "Predict", lambda: predict_req(model, **kw), codes, names)


PREDICT_METHOD = "/explaind.v1.ModelService/Predict"
EXPLAIN_METHOD = "/explaind.v1.ExplainService/Explain"


def raw(id, method, payload: Callable[[], bytes], codes, names=()):
    return case(id, f"raw:{method}", payload, codes, names)


def _issue_cases() -> list[Case]:
    cases = []
    p = lambda name: (f"parameters.{name}",)  # noqa: E731
    # 1. Allocations sized by a parameter (13 TB, 8-16 GB).
    cases += [
        ex("lime-wine-num_samples-1e12", "wine-mlp", "lime", {IA, RE}, p("num_samples"),
           extra={"num_samples": integer(10**12)}),
        ex("ig-digits-steps-1e9", "digits-cnn", "integrated-gradients", {IA, RE}, p("steps"),
           extra={"steps": integer(10**9)}),
        ex("eg-digits-samples-1e9", "digits-cnn", "expected-gradients", {IA, RE}, p("samples"),
           extra={"samples": integer(10**9)}),
        ex("ig-wine-steps-1e9", "wine-mlp", "integrated-gradients", {IA, RE}, p("steps"),
           extra={"steps": integer(10**9)}),
        ex("eg-wine-samples-1e9", "wine-mlp", "expected-gradients", {IA, RE}, p("samples"),
           extra={"samples": integer(10**9)}),
    ]
    # 2. Work that outlived its deadline. The cost of kernel-shap 1e12 is known up front (a
    # budget refusal, not a deadline); IG with 1e6 steps is 1e6 model rows, inside the default
    # budget of 2e7, so it may run and must stop at its deadline.
    cases += [
        ex("kernel-shap-digits-nsamples-1e12", "digits-cnn", "kernel-shap", {IA, RE},
           p("nsamples"), deadline=5.0, params={"nsamples": integer(10**12)}),  # 64 groups
        ex("ig-digits-steps-1e6-deadline-2s", "digits-cnn", "integrated-gradients",
           {OK, IA, RE, DE}, p("steps"), deadline=2.0, extra={"steps": integer(10**6)}),
        ex("ig-digits-steps-1e6-riemann-deadline-2s", "digits-cnn", "integrated-gradients",
           {OK, IA, RE, DE}, p("steps"), deadline=2.0,
           extra={"steps": integer(10**6), "method": text("riemann_trapezoid")}),
    ]
    # 3. A kernel width that underflows to 0 in float32.
    cases += [
        ex("lime-wine-kernel_width-1e-300", "wine-mlp", "lime", {OK, IA, DE},
           p("kernel_width") + NONFINITE_NAMES, deadline=3.0,
           params={"kernel_width": number(1e-300)}),
    ]
    # 4. Finite inputs and parameters whose results are not finite.
    big = lambda m: np.full_like(SAMPLE[m], 3e38)  # noqa: E731
    for model in ("wine-mlp", "digits-cnn"):
        cases.append(pr(f"predict-{model}-3e38", model, {OK, IA}, NONFINITE_NAMES, x=big(model)))
        mixed = SAMPLE[model].copy().reshape(-1)
        mixed[::2] = 3e38
        mixed[1::2] = -3e38
        cases.append(pr(f"predict-{model}-pm3e38", model, {OK, IA}, NONFINITE_NAMES,
                        x=mixed.reshape(SAMPLE[model].shape)))
        cases.append(pr(f"predict-{model}-f32max", model, {OK, IA}, NONFINITE_NAMES,
                        x=np.full_like(SAMPLE[model], F32_MAX)))
        for explainer in EXPLAINERS:
            if explainer == "grad-cam" and model == "wine-mlp":
                continue  # no convolution to take a map from
            cases.append(ex(f"{explainer}-{model}-3e38", model, explainer, {OK, IA},
                            NONFINITE_NAMES, x=big(model)))
    cases += [
        ex("ig-digits-baseline-1e300", "digits-cnn", "integrated-gradients", {IA},
           p("baseline"), extra={"baseline": number(1e300)}),
        ex("deeplift-digits-baseline-3e38", "digits-cnn", "deeplift", {OK, IA},
           p("baseline") + NONFINITE_NAMES, extra={"baseline": number(3e38)}),
        ex("deeplift-wine-baseline-3e38", "wine-mlp", "deeplift", {OK, IA},
           p("baseline") + NONFINITE_NAMES, extra={"baseline": number(3e38)}),
        ex("eg-digits-local_smoothing-1e300", "digits-cnn", "expected-gradients", {IA},
           p("local_smoothing"), extra={"local_smoothing": number(1e300)}),
        ex("occlusion-digits-baseline-3e38", "digits-cnn", "occlusion", {OK, IA},
           p("baseline") + NONFINITE_NAMES, extra={"baseline": number(3e38)}),
    ]
    # 5. Counts near 2^62: INTERNAL with a panic in the log.
    cases += [
        ex("lime-wine-num_samples-2^62", "wine-mlp", "lime", {IA, RE}, p("num_samples"),
           extra={"num_samples": integer(2**62)}),
        ex("ig-digits-steps-2^62", "digits-cnn", "integrated-gradients", {IA, RE}, p("steps"),
           extra={"steps": integer(2**62)}),
        ex("eg-digits-samples-2^62", "digits-cnn", "expected-gradients", {IA, RE}, p("samples"),
           extra={"samples": integer(2**62)}),
    ]
    # 5. Payloads that are not protobuf, or are cut short: INVALID_ARGUMENT, not INTERNAL.
    good_predict = lambda: predict_req("wine-mlp").SerializeToString()  # noqa: E731
    good_explain = lambda: explain_req("wine-mlp", "occlusion").SerializeToString()  # noqa: E731
    for method, good, tag in ((PREDICT_METHOD, good_predict, "predict"),
                              (EXPLAIN_METHOD, good_explain, "explain")):
        cases += [
            raw(f"raw-{tag}-garbage", method, lambda: b"\xff" * 64, {IA}),
            raw(f"raw-{tag}-truncated", method, lambda g=good: g()[:-7], {IA}),
            raw(f"raw-{tag}-truncated-1", method, lambda g=good: g()[:-1], {IA}),
            raw(f"raw-{tag}-length-2^32", method, lambda: b"\x12\xff\xff\xff\xff\x0f\x00", {IA}),
            raw(f"raw-{tag}-wrong-wire-type", method, lambda: b"\x0a\x02\x08\x01\x08\x01", {IA}),
            raw(f"raw-{tag}-overlong-varint", method, lambda: b"\x08" + b"\xff" * 11, {IA}),
            raw(f"raw-{tag}-bad-utf8", method,
                lambda: b"\x0a\x04\x0a\x02\xff\xfe", {IA}),  # ModelRef.name = b"\xff\xfe"
            raw(f"raw-{tag}-nested-groups", method, lambda: b"\x7b" * 100_000, {IA}),
            raw(f"raw-{tag}-random", method,
                lambda: np.random.default_rng(7).bytes(4096), {IA}),
        ]
    # An over-size message (the default --max-message-bytes is 64 MiB).
    cases.append(raw("raw-predict-over-size", PREDICT_METHOD,
                     lambda: predict_req("wine-mlp", tensors=[pb.NamedTensor(
                         name="features", tensor=raw_tensor(pb.ELEMENT_TYPE_FLOAT, [1, 13],
                                                            b"\0" * ((64 << 20) + 4096)))]
                     ).SerializeToString(), {RE}))
    return cases


def _designed_cases() -> list[Case]:
    cases = []
    wine_t = lambda t, **kw: ex(kw.pop("id"), "wine-mlp", kw.pop("explainer", "occlusion"),  # noqa: E731
                                kw.pop("codes"), kw.pop("names", ("targets",)), targets=t, **kw)
    # Targets.
    cases += [
        wine_t(indices(3), id="targets-index-past-end", codes={IA}),
        wine_t(indices(-1), id="targets-index-negative", codes={IA}),
        wine_t(indices(2**63 - 1), id="targets-index-int64-max", codes={IA}),
        wine_t(indices(-(2**63)), id="targets-index-int64-min", codes={IA}),
        wine_t(pb.Targets(indices=pb.IndexList(values=[])), id="targets-empty-list",
               codes={OK, IA}),
        wine_t(pb.Targets(top_k=2**32 - 1), id="targets-top_k-u32-max", codes={OK, IA, RE}),
        wine_t(pb.Targets(top_k=0), id="targets-top_k-0", codes={OK, IA}),
        wine_t(pb.Targets(all=pb.AllOutputs()), id="targets-all", codes={OK}),
        ex("targets-1e6-indices-occlusion", "wine-mlp", "occlusion", {OK, IA, RE, DE},
           ("targets",), deadline=2.0, targets=pb.Targets(indices=pb.IndexList(values=[0] * 10**6))),
        ex("targets-1e6-indices-kernel-shap", "wine-mlp", "kernel-shap", {OK, IA, RE, DE},
           ("targets", "parameters.nsamples"), deadline=5.0,
           targets=pb.Targets(indices=pb.IndexList(values=[0] * 10**6))),
        ex("targets-1e6-indices-saliency", "digits-cnn", "saliency", {OK, IA, RE, DE},
           ("targets",), deadline=2.0,
           targets=pb.Targets(indices=pb.IndexList(values=[0] * 10**6))),
        ex("output-unknown", "wine-mlp", "occlusion", {IA, NF}, ("output",), output="nope"),
        ex("output-1e5-chars", "wine-mlp", "occlusion", {IA, NF}, ("output",),
           output="x" * 100_000),
        ex("output-nul", "wine-mlp", "occlusion", {IA, NF}, ("output",), output="logits\0"),
    ]
    # Inputs: Predict and Explain.
    f32 = pb.ELEMENT_TYPE_FLOAT
    wine_bytes = WINE.tobytes()
    for rpc in ("predict", "explain"):
        def mk(id, tensors, codes, names=("inputs",), rpc=rpc):
            if rpc == "predict":
                return case(f"{rpc}-{id}", "Predict", lambda: predict_req("wine-mlp", tensors=tensors()),
                            codes, names)
            return case(f"{rpc}-{id}", "Explain",
                        lambda: explain_req("wine-mlp", "occlusion", tensors=tensors()), codes, names)

        nt = lambda t, name="features": [pb.NamedTensor(name=name, tensor=t)]  # noqa: E731
        cases += [
            mk("no-inputs", lambda: [], {IA}),
            mk("scalar-shape", lambda: nt(raw_tensor(f32, [], wine_bytes[:4])), {IA}),
            mk("zero-rows", lambda: nt(raw_tensor(f32, [0, 13], b"")), {OK, IA}),
            mk("rows-2^62", lambda: nt(raw_tensor(f32, [2**62, 13], wine_bytes)), {IA, RE}),
            mk("shape-overflow-to-13", lambda: nt(raw_tensor(f32, [2**62 + 1, 13], wine_bytes)),
               {IA, RE}),
            mk("shape-wraps-to-zero", lambda: nt(raw_tensor(f32, [2**32, 2**32, 13], b"")),
               {IA, RE}),
            mk("negative-dim", lambda: nt(raw_tensor(f32, [-1, 13], wine_bytes)), {IA}),
            mk("rank-3", lambda: nt(raw_tensor(f32, [1, 13, 1], wine_bytes)), {IA}),
            mk("1000-dims", lambda: nt(raw_tensor(f32, [1] * 999 + [13], wine_bytes)), {IA}),
            mk("wrong-width", lambda: nt(raw_tensor(f32, [1, 12], wine_bytes[:48])), {IA}),
            mk("rows-5000", lambda: nt(to_t(np.repeat(WINE, 5000, axis=0))), {OK, IA, RE}),
            mk("dtype-double", lambda: nt(to_t(WINE.astype(np.float64))), {IA}),
            mk("dtype-int64", lambda: nt(to_t(WINE.astype(np.int64))), {IA}),
            mk("dtype-unspecified", lambda: nt(raw_tensor(0, [1, 13], wine_bytes)), {IA}),
            mk("dtype-999", lambda: nt(raw_tensor(999, [1, 13], wine_bytes)), {IA}),
            mk("dtype-string", lambda: nt(raw_tensor(pb.ELEMENT_TYPE_STRING, [1, 13], wine_bytes)),
               {IA}),
            mk("wrong-name", lambda: nt(to_t(WINE), name="nope"), {IA, NF}),
            mk("name-nul", lambda: nt(to_t(WINE), name="features\0"), {IA, NF}),
            mk("duplicate-input", lambda: nt(to_t(WINE)) * 2, {IA}),
            mk("nan", lambda: nt(to_t(np.where(np.arange(13) == 4, np.nan, WINE).astype(np.float32))),
               {IA}),
            mk("inf", lambda: nt(to_t(np.full_like(WINE, np.inf))), {IA}),
            mk("-inf", lambda: nt(to_t(np.full_like(WINE, -np.inf))), {IA}),
            mk("denormals", lambda: nt(to_t(np.full_like(WINE, 1e-45))), {OK, IA}),
            mk("data-too-long", lambda: nt(raw_tensor(f32, [1, 13], wine_bytes + b"\0")), {IA}),
            mk("tensor-unset", lambda: [pb.NamedTensor(name="features")], {IA}),
        ]
    # A message just under the 64 MiB limit, with more rows than a request may have.
    cases.append(pr("predict-60MiB-rows", "digits-cnn", {IA, RE}, ("inputs",),
                    x=np.zeros(((60 << 20) // 256, 1, 8, 8), np.float32)))
    # Names.
    cases += [
        case("model-name-1MB", "Predict", lambda: predict_req2("x" * 10**6), {IA, NF}),
        case("model-name-nul", "Predict", lambda: predict_req2("wine-mlp\0"), {IA, NF}),
        case("model-name-path", "Predict", lambda: predict_req2("../wine-mlp"), {IA, NF}),
        case("model-version-path", "Predict", lambda: predict_req2("wine-mlp", "../../1"), {IA, NF}),
        case("model-version-nul", "Predict", lambda: predict_req2("wine-mlp", "1\0"), {IA, NF}),
        case("model-unset", "Predict", lambda: pb.PredictRequest(inputs=[named("features", WINE)]),
             {IA, NF}),
        ex("explainer-empty", "wine-mlp", "", {IA, NF}, params={}),
        ex("explainer-1e5-chars", "wine-mlp", "x" * 100_000, {IA, NF}, params={}),
        ex("explainer-path", "wine-mlp", "../occlusion", {IA, NF}, params={}),
    ]
    # Parameters.
    cases += [
        ex("params-10000-unknown", "wine-mlp", "occlusion", {IA}, ("parameters.",),
           extra={f"p{i}": integer(i) for i in range(10_000)}),
        ex("param-name-1e5-chars", "wine-mlp", "occlusion", {IA}, ("parameters.",),
           extra={"x" * 100_000: integer(1)}),
        ex("param-name-nul", "wine-mlp", "occlusion", {IA}, ("parameters.",),
           extra={"window\0": integers(1)}),
        ex("param-text-1MB", "wine-mlp", "lime", {IA}, ("parameters.mode",),
           extra={"mode": text("x" * 10**6)}),
        ex("param-text-nul", "wine-mlp", "lime", {IA}, ("parameters.mode",),
           extra={"mode": text("tabular\0")}),
        ex("occlusion-window-1e9", "digits-cnn", "occlusion", {IA, RE}, ("parameters.window",),
           params={"window": integers(10**9, 10**9, 10**9)}),
        ex("occlusion-window-int64-max", "digits-cnn", "occlusion", {IA, RE},
           ("parameters.window",), params={"window": integers(*[2**63 - 1] * 3)}),
        ex("occlusion-strides-0", "digits-cnn", "occlusion", {IA}, ("parameters.strides",),
           params={"window": integers(1, 2, 2), "strides": integers(0, 0, 0)}),
        ex("occlusion-strides-negative", "digits-cnn", "occlusion", {IA},
           ("parameters.strides",), params={"window": integers(1, 2, 2), "strides": integers(-1, -1, -1)}),
        ex("occlusion-window-1e6-axes", "digits-cnn", "occlusion", {IA}, ("parameters.window",),
           params={"window": integers(*[1] * 10**6)}),
        ex("occlusion-mnist-window-1-all-rows", "mnist-cnn", "occlusion", {OK, IA, RE, DE},
           ("parameters.window", "inputs"), deadline=3.0,
           x=np.load(MODELS_DIR / "mnist-cnn" / "1" / "samples.npy"),
           params={"window": integers(1, 1, 1)}),
        ex("kernel-shap-mask-1e6", "wine-mlp", "kernel-shap", {IA}, ("parameters.mask",),
           extra={"mask": integers(*range(10**6))}),
        ex("kernel-shap-mask-huge-ids", "wine-mlp", "kernel-shap", {OK, IA, RE},
           ("parameters.mask",), extra={"mask": integers(*[2**62 - i for i in range(13)])}),
        ex("lime-segments-huge-ids", "digits-cnn", "lime", {OK, IA, RE}, ("parameters.segments",),
           extra={"segments": integers(*[2**62 - i for i in range(64)])}),
        ex("lime-digits-n_segments-2^62", "digits-cnn", "lime", {OK, IA, RE},
           ("parameters.n_segments",), extra={"n_segments": integer(2**62)}),
        ex("kernel-shap-patch-0", "digits-cnn", "kernel-shap", {IA}, ("parameters.patch",),
           extra={"patch": integers(0, 0)}),
        ex("smoothgrad-ig-1e6-rows", "digits-cnn", "smoothgrad", {OK, IA, RE, DE},
           ("parameters.samples", "parameters.steps"), deadline=1.5,
           params={"over": text("integrated_gradients"), "samples": integer(1000),
                   "steps": integer(1000), "method": text("riemann_trapezoid")}),
        ex("smoothgrad-ig-1e12-rows", "digits-cnn", "smoothgrad", {IA, RE},
           ("parameters.samples", "parameters.steps"),
           params={"over": text("integrated_gradients"), "samples": integer(10**6),
                   "steps": integer(10**6), "method": text("riemann_trapezoid")}),
    ]
    # Backgrounds.
    bg = lambda a: [named("features", a)]  # noqa: E731
    wine_bg = np.load(MODELS_DIR / "wine-mlp" / "1" / "background.npy").astype(np.float32)
    cases += [
        ex("kernel-shap-background-1e5-rows", "wine-mlp", "kernel-shap", {IA, RE},
           ("background", "parameters.nsamples"), params={},
           background=bg(np.repeat(wine_bg, 2000, axis=0))),
        ex("kernel-shap-background-0-rows", "wine-mlp", "kernel-shap", {IA}, ("background",),
           background=bg(np.zeros((0, 13), np.float32))),
        ex("kernel-shap-background-nan", "wine-mlp", "kernel-shap", {IA}, ("background",),
           background=bg(np.where(np.arange(13) == 2, np.nan, wine_bg).astype(np.float32))),
        ex("kernel-shap-background-3e38", "wine-mlp", "kernel-shap", {OK, IA},
           ("background",) + NONFINITE_NAMES, background=bg(np.full_like(wine_bg, 3e38))),
        ex("kernel-shap-background-wrong-width", "wine-mlp", "kernel-shap", {IA}, ("background",),
           background=bg(wine_bg[:, :12])),
        ex("deep-shap-background-4096-rows", "digits-cnn", "deep-shap", {OK, IA, RE, DE},
           ("background",), deadline=5.0,
           background=[named("image", np.zeros((4096, 1, 8, 8), np.float32))]),
        ex("deep-shap-background-3e38", "digits-cnn", "deep-shap", {OK, IA},
           ("background",) + NONFINITE_NAMES,
           background=[named("image", np.full((4, 1, 8, 8), 3e38, np.float32))]),
        ex("eg-background-1-row", "digits-cnn", "expected-gradients", {OK},
           background=[named("image", DIGITS)]),
        ex("background_id-unknown", "wine-mlp", "kernel-shap", {IA, NF}, ("background_id",),
           background_id="0" * 64),
        ex("background_id-1e5-chars", "wine-mlp", "kernel-shap", {IA, NF}, ("background_id",),
           background_id="x" * 100_000),
        ex("background-and-background_id", "wine-mlp", "kernel-shap", {IA},
           ("background", "background_id"), background=bg(wine_bg), background_id="0" * 64),
        ex("ig-baseline_row-past-end", "digits-cnn", "integrated-gradients", {IA},
           ("parameters.baseline_row",), extra={"baseline_row": integer(10**6)},
           background=[named("image", DIGITS)]),
    ]
    # Figures.
    cases += [
        ex("plot-kind-1000-chars", "wine-mlp", "occlusion", {IA}, ("plot",),
           plot=pb.PlotOptions(png=True, kind="x" * 1000)),
        ex("plot-top_k-u32-max", "wine-mlp", "occlusion", {OK, IA}, ("plot",),
           plot=pb.PlotOptions(png=True, top_k=2**32 - 1)),
        ex("plot-all-targets-1e6", "wine-mlp", "occlusion", {IA, RE}, ("plot", "targets"),
           targets=pb.Targets(indices=pb.IndexList(values=[0] * 10**6)),
           plot=pb.PlotOptions(png=True)),
    ]
    # Deadlines far too short for the work (each within the default budget, so it runs).
    dl = lambda id, model, explainer, deadline, **kw: ex(  # noqa: E731
        f"deadline-{id}", model, explainer, {DE}, (), deadline, **kw)
    cases += [
        dl("1ms-kernel-shap-digits-default", "digits-cnn", "kernel-shap", 0.001, params={}),
        dl("1ms-lime-digits-default", "digits-cnn", "lime", 0.001, params={}),
        dl("1ms-deep-shap-mnist", "mnist-cnn", "deep-shap", 0.001, params={}),
        dl("300ms-ig-digits-1e5-steps", "digits-cnn", "integrated-gradients", 0.3,
           params={"steps": integer(10**5), "method": text("riemann_trapezoid")}),
        dl("300ms-eg-digits-1e5-samples", "digits-cnn", "expected-gradients", 0.3,
           params={"samples": integer(10**5)}),
        dl("300ms-kernel-shap-digits-1e5", "digits-cnn", "kernel-shap", 0.3,
           params={"nsamples": integer(10**5)}),
        dl("300ms-lime-digits-1e5", "digits-cnn", "lime", 0.3,
           params={"num_samples": integer(10**5)}),
        dl("100ms-occlusion-mnist-1px", "mnist-cnn", "occlusion", 0.1,
           x=np.load(MODELS_DIR / "mnist-cnn" / "1" / "samples.npy"),
           params={"window": integers(1, 1, 1)}),
        dl("300ms-smoothgrad-mnist", "mnist-cnn", "smoothgrad", 0.3,
           params={"samples": integer(10**4)}),
    ]
    return cases


def to_t(a) -> pb.Tensor:
    return named("x", a).tensor


def predict_req2(name: str, version: str = "") -> pb.PredictRequest:
    return pb.PredictRequest(model=pb.ModelRef(name=name, version=version),
                             inputs=[named("features", WINE)])


ISSUE_CASES = _issue_cases()
DESIGNED_CASES = _designed_cases()


# --------------------------------------------------------------------------------------------
# The daemon, and running a case
# --------------------------------------------------------------------------------------------


@dataclass
class Sent:
    case: str
    rpc: str
    code: grpc.StatusCode
    deadline: float


@dataclass(repr=False)  # (pytest prints fixtures in tracebacks: keep that short)
class Hostile:
    daemon: daemon_proc.Daemon
    channel: grpc.Channel
    client: Client
    audit_dir: Path | None = None
    warm_rss: int = 0
    warm_vmpeak: int = 0
    started: float = 0.0
    sent: dict = field(default_factory=dict)  # x-request-id -> Sent
    rss_trace: list = field(default_factory=list)  # (case id, VmRSS after it)
    lock: threading.Lock = field(default_factory=threading.Lock)
    counter: int = 0

    def next_id(self, slug: str) -> str:
        with self.lock:
            self.counter += 1
            n = self.counter
        return f"hz-{n:05d}-{slug}"[:100]

    def budget_left(self) -> float:
        return CORPUS_BUDGET_S - (time.monotonic() - self.started)

    def dead(self) -> str | None:
        if self.daemon.alive():
            return None
        return (f"the daemon is dead (exit status {self.daemon.process.returncode}); stderr tail:\n"
                f"{self.daemon.stderr_tail()}")

    def call(self, rpc: str, request, deadline: float, request_id: str, case_id: str):
        """Sends one request; returns (code, details, response or None)."""
        md = (("x-request-id", request_id),)
        response, code, details = None, OK, ""
        try:
            if rpc == "Predict":
                response = self.client.models.Predict(request, timeout=deadline, metadata=md)
            elif rpc == "Explain":
                response = self.client.explain.Explain(request, timeout=deadline, metadata=md)
            elif rpc.startswith("raw:"):
                method = rpc[4:]
                call = self.channel.unary_unary(method, request_serializer=None,
                                                response_deserializer=None)
                data = call(request, timeout=deadline, metadata=md)
                kind = pb.PredictResponse if method == PREDICT_METHOD else pb.ExplainResponse
                response = kind.FromString(data)
            else:
                raise ValueError(rpc)
        except grpc.RpcError as e:
            code, details = e.code(), e.details() or ""
        with self.lock:
            self.sent[request_id] = Sent(case_id, rpc, code, deadline)
        return code, details, response


def nonfinite(response) -> list[str]:
    """Where an OK response has NaN or infinity (or a tensor whose bytes do not fit its shape)."""
    bad = []

    def check(where: str, t: pb.Tensor):
        if t.element_type not in (pb.ELEMENT_TYPE_FLOAT, pb.ELEMENT_TYPE_DOUBLE,
                                  pb.ELEMENT_TYPE_FLOAT16):
            return
        try:
            a = from_tensor(t)
        except (ValueError, TypeError) as e:
            bad.append(f"{where}: {e}")
            return
        n = int(a.size - np.count_nonzero(np.isfinite(a)))
        if n:
            bad.append(f"{where}: {n} of {a.size} elements are not finite")

    for o in response.outputs:
        check(f"outputs.{o.name}", o.tensor)
    if isinstance(response, pb.ExplainResponse):
        for a in response.attributions:
            check(f"attributions.{a.input_name}", a.values)
        if response.HasField("base_values"):
            check("base_values", response.base_values)
        for e in response.extras:
            check(f"extras.{e.name}", e.tensor)
    return bad


def judge(c: Case, code, details: str, response) -> list[str]:
    """What is wrong with the answer to case `c` (empty: nothing)."""
    problems = []
    if code not in c.codes or code in NEVER:
        problems.append(f"status {code.name} ({details[:300]!r}); expected one of "
                        f"{sorted(x.name for x in c.codes)}")
    elif code in (IA, RE) and c.names and not any(n in details for n in c.names):
        problems.append(f"{code.name} message {details[:300]!r} names none of {list(c.names)}")
    if code == OK and response is not None:
        problems += [f"OK with a non-finite result: {b}" for b in nonfinite(response)]
    return problems


def quiet_after_deadline(h: Hostile) -> list[str]:
    """After a DEADLINE_EXCEEDED: the request's threads must stop within ~100 ms."""
    time.sleep(DE_SETTLE_S)
    try:
        used = h.daemon.cpu_over(DE_WINDOW_S)
    except OSError:
        return []  # dead: reported elsewhere
    if used > DE_CPU_MAX_S:
        return [f"after DEADLINE_EXCEEDED the daemon kept working: {used:.2f} s of CPU in the "
                f"{DE_WINDOW_S} s starting {DE_SETTLE_S} s later (at most {DE_CPU_MAX_S} s)"]
    return []


def run_case(h: Hostile, c: Case, check_quiet: bool = True) -> list[str]:
    why = h.dead()
    if why:
        return [why]
    if h.budget_left() <= 0:
        return [f"not sent: the corpus's time budget of {CORPUS_BUDGET_S:.0f} s is spent"]
    request = c.build()
    rid = h.next_id(c.id)
    t0 = time.monotonic()
    code, details, response = h.call(c.rpc, request, c.deadline, rid, c.id)
    took = time.monotonic() - t0
    del request
    problems = judge(c, code, details, response)
    if code == DE and check_quiet:
        problems += quiet_after_deadline(h)
    why = h.dead()
    if why:
        problems.append(why)
    else:
        with h.lock:
            h.rss_trace.append((c.id, h.daemon.rss()))
    return [f"[{c.id} x-request-id={rid} {took:.2f}s] {p}" for p in problems]


def _warm_up(h: Hostile) -> None:
    """Runs every explainer on every model it applies to, at cheap and at full-batch sizes, so
    that ONNX Runtime sessions, compiled graphs and arenas exist before RSS is measured."""
    loaded = {e.name for e in h.client.list_explainers().explainers}
    reqs = []
    for model in ("wine-mlp", "digits-cnn", "mnist-cnn"):
        reqs.append(("Predict", predict_req(model)))
        reqs.append(("Predict", predict_req(model, x=np.repeat(SAMPLE[model], 64, axis=0))))
        for explainer in EXPLAINERS:
            if explainer == "grad-cam" and model == "wine-mlp":
                continue
            reqs.append(("Explain", explain_req(model, explainer)))
    # Full batches (--max-batch-rows defaults to 1024) through the forward and backward graphs.
    reqs += [
        ("Explain", explain_req("digits-cnn", "integrated-gradients", extra={"steps": integer(1024)})),
        ("Explain", explain_req("wine-mlp", "integrated-gradients", extra={"steps": integer(1024)})),
        ("Explain", explain_req("mnist-cnn", "integrated-gradients", extra={"steps": integer(1024)})),
        ("Explain", explain_req("digits-cnn", "kernel-shap", extra={"nsamples": integer(256)})),
        ("Explain", explain_req("wine-mlp", "kernel-shap", extra={"nsamples": integer(256)})),
    ]
    # (An explainer that is not loaded fails its own cases; the warm-up leaves it out.)
    reqs = [(rpc, req) for rpc, req in reqs if rpc == "Predict" or req.explainer in loaded]
    end = time.monotonic() + WARM_UP_BUDGET_S
    for i, (rpc, req) in enumerate(reqs):
        left = end - time.monotonic()
        if left <= 1:
            pytest.fail(f"the warm-up took more than {WARM_UP_BUDGET_S:.0f} s")
        code, details, response = h.call(rpc, req, left, f"hz-warmup-{i:03d}", "warm-up")
        if code != OK:
            pytest.fail(f"warm-up request {i} ({rpc} {getattr(req, 'explainer', '')} "
                        f"{req.model.name}) failed: {code.name} {details}\n"
                        f"{h.daemon.stderr_tail()}")
    # The largest legitimate requests of the corpus, once (any answer will do): the allocator's
    # and ONNX Runtime's high-water marks for them are reached before RSS is measured, so what
    # the RSS check sees after the corpus is memory left behind, not memory kept for reuse.
    heavy = [c for c in DESIGNED_CASES if c.id in HEAVY_WARM_UP]
    for i, c in enumerate(heavy):
        h.call(c.rpc, c.build(), 10.0, f"hz-warmup-heavy-{i:02d}", f"warm-up {c.id}")
        if not h.daemon.alive():
            pytest.fail(f"the daemon died in the warm-up, on {c.id}:\n{h.daemon.stderr_tail()}")


HEAVY_WARM_UP = {"targets-1e6-indices-occlusion", "occlusion-mnist-window-1-all-rows",
                 "deep-shap-background-4096-rows", "predict-60MiB-rows", "plot-all-targets-1e6"}


@pytest.fixture(scope="session")
def hostile(tmp_path_factory):
    if not daemon_proc.binary().is_file():
        pytest.fail(f"explaind binary not found at {daemon_proc.binary()}: build it "
                    "(cargo build --workspace) or set EXPLAIND_BIN")
    work = tmp_path_factory.mktemp("hostile")
    key = work / "audit.key"
    daemon_proc.keygen(key)
    audit_dir = work / "audit"
    audit_dir.mkdir()
    args = ["serve", "--listen", "127.0.0.1:0", "--models", str(MODELS_DIR), "--device", "cpu",
            "--audit-dir", str(audit_dir), "--audit-key", str(key),
            "--cache-bytes", str(64 << 20), "--background-bytes", str(64 << 20)]
    daemon = daemon_proc.start(args, work / "log", address_space_bytes=ADDRESS_SPACE_CAP)
    channel = grpc.insecure_channel(daemon.address, options=[
        ("grpc.max_receive_message_length", 512 << 20),
        ("grpc.max_send_message_length", 512 << 20),
    ])
    try:
        grpc.channel_ready_future(channel).result(timeout=20)
        h = Hostile(daemon=daemon, channel=channel, client=Client(channel, timeout=60))
        h.audit_dir = audit_dir
        _warm_up(h)
        time.sleep(0.5)
        status = daemon.proc_status()
        h.warm_rss, h.warm_vmpeak = status.get("VmRSS", 0), status.get("VmPeak", 0)
        h.started = time.monotonic()
        yield h
    finally:
        channel.close()
        daemon.stop()


# --------------------------------------------------------------------------------------------
# The corpus
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("c", ISSUE_CASES, ids=[c.id for c in ISSUE_CASES])
def test_issue_case(hostile, c):
    problems = run_case(hostile, c)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("c", DESIGNED_CASES, ids=[c.id for c in DESIGNED_CASES])
def test_designed_case(hostile, c):
    problems = run_case(hostile, c)
    assert not problems, "\n".join(problems)


# Hostile values per parameter kind. "strict": the answer must be INVALID_ARGUMENT naming the
# parameter; otherwise any of OK (finite), INVALID_ARGUMENT or RESOURCE_EXHAUSTED naming it.
INTEGER_VALUES = [-(2**63), -1, 0, 2**31, 2**62, 2**63 - 1]
NUMBER_VALUES = [(math.nan, True), (math.inf, True), (-math.inf, True), (1e300, True),
                 (-1e300, True), (3.5e38, True), (3e38, False), (-3e38, False),
                 (1e-300, False), (5e-324, False)]
TEXT_VALUES = ["", "\0", "auto\0", "x" * 100_000, "\u00e9" * 1000, "../../../../etc/passwd"]
INTEGERS_VALUES = [[], [-1], [0], [2**62], [2**63 - 1] * 4, [-(2**63)] * 4, [1] * 10**6]
NUMBERS_VALUES = [([math.nan], True), ([math.inf], True), ([1e300], True), ([], False),
                  ([3e38] * 4, False), ([0.5] * 10**6, False)]
# A value of another kind, for every kind (always refused: no conversion applies).
WRONG_KIND = {"integer": text("1"), "number": text("1.0"), "flag": text("true"),
              "text": number(1.0), "integers": text("1"), "numbers": text("1.0")}
FUZZ_MODELS = {"lime": ("digits-cnn", "wine-mlp"), "kernel-shap": ("wine-mlp", "digits-cnn")}
# Cheap parameters left out while another is fuzzed, because the two exclude each other.
EXCLUDES = {("kernel-shap", "mask"): ("patch",), ("kernel-shap", "patch"): ("mask",)}


def fuzz_values(spec) -> list[tuple[str, pb.ParamValue, bool]]:
    """(label, value, strict) for one ParameterSpec."""
    out = [("unset", pb.ParamValue(), True), ("wrong-kind", WRONG_KIND[spec.kind], True)]
    if spec.kind == "integer":
        out += [(str(v), integer(v), False) for v in INTEGER_VALUES]
    elif spec.kind == "number":
        out += [(repr(v), number(v), s) for v, s in NUMBER_VALUES]
    elif spec.kind == "text":
        out += [(f"text{i}", text(v), False) for i, v in enumerate(TEXT_VALUES)]
    elif spec.kind == "integers":
        out += [(f"ints{i}", pb.ParamValue(integers=pb.IntegerList(values=v)), False)
                for i, v in enumerate(INTEGERS_VALUES)]
    elif spec.kind == "numbers":
        out += [(f"nums{i}", pb.ParamValue(numbers=pb.NumberList(values=v)), s)
                for i, (v, s) in enumerate(NUMBERS_VALUES)]
    return out


FUZZ_TARGETS = [(e, m) for e in EXPLAINERS for m in FUZZ_MODELS.get(e, ("digits-cnn",))]


@pytest.mark.parametrize("explainer,model", FUZZ_TARGETS, ids=[f"{e}-{m}" for e, m in FUZZ_TARGETS])
def test_fuzz_parameters(hostile, explainer, model):
    """Every parameter ListExplainers reports for the explainer, with every hostile value of its
    kind, the others at their cheap settings; three requests in flight at a time."""
    h = hostile
    why = h.dead()
    if why:
        pytest.fail(why)
    infos = {e.name: e for e in h.client.list_explainers().explainers}
    if explainer not in infos:
        pytest.fail(f"explainer {explainer} is not loaded: {sorted(infos)}")
    cases = []
    for spec in infos[explainer].parameters:
        assert spec.kind in WRONG_KIND, f"{explainer}: parameter {spec.name} has kind {spec.kind!r}"
        for label, value, strict in fuzz_values(spec):
            names = (f"parameters.{spec.name}",)
            codes = {IA} if strict else {OK, IA, RE}
            if not strict:
                names += NONFINITE_NAMES
                if spec.kind == "text":
                    codes.add(NF)
            params = cheap(explainer, model)
            for other in EXCLUDES.get((explainer, spec.name), ()):
                params.pop(other, None)
            params[spec.name] = value
            cases.append(Case(f"fuzz-{explainer}-{model}-{spec.name}={label}"[:90], "Explain",
                              lambda p=params: explain_req(model, explainer, params=p),
                              frozenset(codes), names, FUZZ_DEADLINE_S))
    with ThreadPoolExecutor(FUZZ_WORKERS) as pool:
        results = list(pool.map(lambda c: run_case(h, c, check_quiet=False), cases))
    problems = [p for r in results for p in r]
    assert not problems, (f"{len(problems)} problems in {len(cases)} requests:\n"
                          + "\n".join(problems))


def test_concurrent_short_deadlines(hostile):
    """24 slow requests at once, each with a deadline of 300 ms: all are cut off at their
    deadline (or refused), and the daemon is idle soon after."""
    h = hostile
    why = h.dead()
    if why:
        pytest.fail(why)
    reqs = []
    for i in range(24):
        if i % 3 == 0:
            r = explain_req("digits-cnn", "kernel-shap", params={"nsamples": integer(10**5)})
        elif i % 3 == 1:
            r = explain_req("digits-cnn", "integrated-gradients",
                            params={"steps": integer(10**5), "method": text("riemann_trapezoid")})
        else:
            r = explain_req("digits-cnn", "lime", params={"num_samples": integer(10**5)})
        reqs.append(Case(f"concurrent-{i}", "Explain", lambda r=r: r, frozenset({DE, RE}),
                         (), 0.3))

    def one(c):
        rid = h.next_id(c.id)
        code, details, response = h.call(c.rpc, c.build(), c.deadline, rid, c.id)
        return [f"[{c.id} x-request-id={rid}] {p}" for p in judge(c, code, details, response)]

    with ThreadPoolExecutor(len(reqs)) as pool:
        problems = [p for r in pool.map(one, reqs) for p in r]
    time.sleep(IDLE_SETTLE_S)
    why = h.dead()
    if why:
        problems.append(why)
    else:
        used = h.daemon.cpu_over(IDLE_WINDOW_S)
        if used > IDLE_CPU_MAX_S:
            problems.append(f"{used:.2f} s of CPU in {IDLE_WINDOW_S} s, {IDLE_SETTLE_S} s after "
                            f"the last deadline (at most {IDLE_CPU_MAX_S} s)")
    assert not problems, "\n".join(problems)


def test_request_id_with_json_specials(hostile):
    """A request id with a quote and a backslash (printable ASCII, so valid metadata) is echoed
    and logged as it is; the audit check below finds it only if the log escapes it right."""
    h = hostile
    why = h.dead()
    if why:
        pytest.fail(why)
    rid = 'hz-json-"quoted"-back\\slash-{}'
    code, details, response = h.call("Predict", predict_req("wine-mlp"), 10.0, rid, "json-specials")
    assert code == OK, details
    assert not nonfinite(response)


# --------------------------------------------------------------------------------------------
# After the corpus
# --------------------------------------------------------------------------------------------


def test_after_corpus_alive_serving_no_panic(hostile):
    h = hostile
    why = h.dead()
    assert why is None, why
    health = health_pb2_grpc.HealthStub(h.channel)
    for service in ["", "explaind.v1.ModelService", "explaind.v1.ExplainService"]:
        resp = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert resp.status == health_pb2.HealthCheckResponse.SERVING, service
    # And it still answers real work correctly.
    resp = h.client.predict("wine-mlp", {"features": WINE})
    assert not nonfinite(resp)
    log = h.daemon.stderr_text()
    panics = [line for line in log.splitlines() if "panicked" in line]
    assert not panics, f"{len(panics)} panics in the daemon's log, e.g.:\n" + "\n".join(panics[:10])


def test_after_corpus_memory_back(hostile):
    h = hostile
    why = h.dead()
    assert why is None, why
    time.sleep(0.5)
    status = h.daemon.proc_status()
    rss = status.get("VmRSS", 0)
    mb = lambda b: f"{b / 2**20:.0f} MiB"  # noqa: E731
    # Where it grew (cases run concurrently in the fuzz, so a step is approximate there).
    steps, prev = [], h.warm_rss
    with h.lock:
        trace = list(h.rss_trace)
    for case_id, after in trace:
        steps.append((after - prev, case_id))
        prev = after
    growth = ", ".join(f"{cid} +{mb(d)}" for d, cid in sorted(steps, reverse=True)[:8] if d > 0)
    assert rss <= h.warm_rss + RSS_GROWTH_BOUND, (
        f"VmRSS {mb(rss)} after the corpus; {mb(h.warm_rss)} after warm-up; the bound is "
        f"warm-up + {mb(RSS_GROWTH_BOUND)} (VmPeak {mb(status.get('VmPeak', 0))}, after "
        f"warm-up {mb(h.warm_vmpeak)}; cap {mb(ADDRESS_SPACE_CAP)}; {h.daemon.threads()} "
        f"threads). Largest steps: {growth}")


def test_after_corpus_cpu_idle(hostile):
    h = hostile
    why = h.dead()
    assert why is None, why
    time.sleep(IDLE_SETTLE_S)
    used = h.daemon.cpu_over(IDLE_WINDOW_S)
    assert used <= IDLE_CPU_MAX_S, (
        f"the daemon used {used:.2f} s of CPU in {IDLE_WINDOW_S} s with no request in flight "
        f"(at most {IDLE_CPU_MAX_S} s): a request's work outlived it ({h.daemon.threads()} threads)")


# How long the audit records of answered requests may take to reach the file (failed requests'
# records are not bound to precede their answer; OK ones are).
AUDIT_WAIT_S = 5.0
# A request whose deadline is this short may expire in the client before it is sent, so the
# daemon never sees it: it may have no record (if it has one, it must be right).
MAY_BE_UNSENT_S = 0.01


def codes_agree(sent: Sent, record: dict) -> bool:
    """The record's status is the client's. A client's DEADLINE_EXCEEDED is decided by its own
    clock: the daemon sees the deadline (grpc-timeout) a little later, so the client's reset may
    arrive first; CANCELLED is accepted for it, and OK for a response that left within 50 ms of
    the deadline."""
    logged = record.get("status", {}).get("code")
    if logged == sent.code.value[0]:
        return True
    if sent.code == DE:
        if logged == C.CANCELLED.value[0]:
            return True
        if logged == 0 and record.get("duration_ms", 0) >= sent.deadline * 1000 - 50:
            return True
    return False


def test_after_corpus_every_request_audited_once(hostile):
    h = hostile
    with h.lock:
        sent = dict(h.sent)
    assert sent, "no requests were sent"
    deadline = time.monotonic() + AUDIT_WAIT_S
    while True:
        records, torn = daemon_proc.audit_records(h.audit_dir)
        by_id: dict[str, list[dict]] = {}
        for r in records:
            by_id.setdefault(r.get("request_id"), []).append(r)
        missing = [rid for rid in sent if rid not in by_id
                   and not (sent[rid].code == DE and sent[rid].deadline < MAY_BE_UNSENT_S)]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    duplicated = {rid: [r.get("status", {}).get("code") for r in by_id[rid]]
                  for rid in sent if len(by_id.get(rid, [])) > 1}
    wrong = []
    for rid, s in sent.items():
        recs = by_id.get(rid, [])
        if len(recs) == 1 and not codes_agree(s, recs[0]):
            st = recs[0].get("status") or {}
            wrong.append(f"{rid} ({s.rpc}): client got {s.code.name}, the log says code "
                         f"{st.get('code')} ({str(st.get('message'))[:160]!r})")
        if len(recs) == 1 and recs[0].get("rpc") not in ("Predict", "Explain"):
            wrong.append(f"{rid}: rpc {recs[0].get('rpc')!r}")
    missing_by_code: dict[str, int] = {}
    for rid in missing:
        missing_by_code[sent[rid].code.name] = missing_by_code.get(sent[rid].code.name, 0) + 1
    problems = []
    if missing:
        problems.append(f"{len(missing)} of {len(sent)} requests have no audit record (by the "
                        f"status the client got: {missing_by_code}), e.g.:\n  "
                        + "\n  ".join(f"{rid} ({sent[rid].case}: {sent[rid].code.name})"
                                      for rid in missing[:25]))
    if duplicated:
        problems.append(f"{len(duplicated)} requests have more than one record (their status "
                        f"codes): {dict(list(duplicated.items())[:10])}")
    if wrong:
        problems.append(f"{len(wrong)} records disagree with the client:\n  "
                        + "\n  ".join(wrong[:25]))
    assert not problems, (f"{len(records)} records in the log ({torn} torn lines); "
                          f"{len(sent)} requests sent\n" + "\n".join(problems))
