"""kill -9 under load loses no audit record of an answered request.

The daemon writes the record of an OK response before the response leaves, so every request a
client saw answered OK is in the log, even when the daemon is killed with SIGKILL a moment
later. 32 client threads send a mix of Predict and cheap Explain requests, each with its own
x-request-id, for about KILL_AFTER_S seconds; then the daemon is killed mid-load and the log
is read (a torn last line, a write cut short by the kill, is skipped). Then the daemon is
started once more on the same log, which moves the torn tail aside and continues the chain,
and `explaind audit verify` must accept the whole log. Last, one record is changed by hand: the
next start-up still serves, and warns that the existing log does not verify.
"""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest

import daemon_proc
from explaind_client import integers, named, pb
from paths import MODELS_DIR

CLIENT_THREADS = 32
CHANNELS = 4  # HTTP/2 connections the threads share
KILL_AFTER_S = 3.0  # load before the kill
CALL_TIMEOUT_S = 5.0
JOIN_TIMEOUT_S = 15.0
MIN_OK = 50  # fewer OK answers before the kill would make the test meaningless

WINE = np.load(MODELS_DIR / "wine-mlp" / "1" / "samples.npy").astype(np.float32)
DIGITS = np.load(MODELS_DIR / "digits-cnn" / "1" / "samples.npy").astype(np.float32)


def _requests():
    """(rpc, request) pairs, all cheap: one or two rows, few model rows each."""
    return [
        ("Predict", pb.PredictRequest(model=pb.ModelRef(name="wine-mlp"),
                                      inputs=[named("features", WINE[:2])])),
        ("Predict", pb.PredictRequest(model=pb.ModelRef(name="digits-cnn"),
                                      inputs=[named("image", DIGITS[:1])])),
        ("Explain", pb.ExplainRequest(model=pb.ModelRef(name="wine-mlp"), explainer="occlusion",
                                      inputs=[named("features", WINE[:1])],
                                      parameters={"window": integers(1)})),
        ("Explain", pb.ExplainRequest(model=pb.ModelRef(name="digits-cnn"), explainer="saliency",
                                      inputs=[named("image", DIGITS[:1])])),
        ("Explain", pb.ExplainRequest(model=pb.ModelRef(name="digits-cnn"), explainer="occlusion",
                                      inputs=[named("image", DIGITS[:1])],
                                      parameters={"window": integers(1, 4, 4),
                                                  "strides": integers(1, 4, 4)})),
    ]


def test_kill9_under_load_loses_no_ok_record(tmp_path):
    if not daemon_proc.binary().is_file():
        pytest.fail(f"explaind binary not found at {daemon_proc.binary()}: build it "
                    "(cargo build --workspace) or set EXPLAIND_BIN")
    key = tmp_path / "audit.key"
    public = daemon_proc.keygen(key)
    audit_dir = tmp_path / "audit"
    audit_dir.mkdir()
    args = ["serve", "--listen", "127.0.0.1:0", "--models", str(MODELS_DIR), "--device", "cpu",
            "--audit-dir", str(audit_dir), "--audit-key", str(key)]
    daemon = daemon_proc.start(args, tmp_path / "log1")
    try:
        _load_then_kill(daemon, audit_dir, public, args, tmp_path)
    finally:
        if daemon.alive():
            daemon.kill9()


def _load_then_kill(daemon, audit_dir, public, args, tmp_path):
    from explaind.v1 import explaind_pb2_grpc as pb_grpc

    channels = [grpc.insecure_channel(daemon.address) for _ in range(CHANNELS)]
    for ch in channels:
        grpc.channel_ready_future(ch).result(timeout=20)
    stubs = [(pb_grpc.ModelServiceStub(ch), pb_grpc.ExplainServiceStub(ch)) for ch in channels]
    requests = _requests()
    # Warm up every request kind once (sessions, compiled graphs), outside the count.
    models, explain = stubs[0]
    for i, (rpc, req) in enumerate(requests):
        fn = models.Predict if rpc == "Predict" else explain.Explain
        fn(req, timeout=60, metadata=(("x-request-id", f"kill-warmup-{i}"),))

    stop = threading.Event()
    lock = threading.Lock()
    ok_ids: list[str] = []
    failed: dict[str, int] = {}  # status name -> count
    sent = [0]
    thread_errors: list[str] = []

    def client(t: int):
        models, explain = stubs[t % CHANNELS]
        i = 0
        try:
            while not stop.is_set() and i < 100_000:  # bounded in count as well as time
                rpc, req = requests[(t + i) % len(requests)]
                rid = f"kill-{t:02d}-{i:05d}"
                i += 1
                fn = models.Predict if rpc == "Predict" else explain.Explain
                try:
                    fn(req, timeout=CALL_TIMEOUT_S, metadata=(("x-request-id", rid),))
                    code = "OK"
                except grpc.RpcError as e:
                    code = e.code().name
                with lock:
                    sent[0] += 1
                    if code == "OK":
                        ok_ids.append(rid)
                    else:
                        failed[code] = failed.get(code, 0) + 1
        except Exception as e:  # noqa: BLE001  (reported below, not swallowed)
            with lock:
                thread_errors.append(f"thread {t}: {e!r}")

    threads = [threading.Thread(target=client, args=(t,), name=f"audit-kill-{t}", daemon=True)
               for t in range(CLIENT_THREADS)]
    for th in threads:
        th.start()
    time.sleep(KILL_AFTER_S)
    with lock:
        ok_before_kill = len(ok_ids)
    daemon.kill9()  # mid-load: requests are in flight on every thread
    stop.set()
    for th in threads:
        th.join(timeout=JOIN_TIMEOUT_S)
    alive = [th.name for th in threads if th.is_alive()]
    for ch in channels:
        ch.close()
    assert not alive, f"client threads still running {JOIN_TIMEOUT_S} s after the kill: {alive}"
    assert not thread_errors, "\n".join(thread_errors)

    records, torn = daemon_proc.audit_records(audit_dir)
    logged: dict[str, list[dict]] = {}
    for r in records:
        logged.setdefault(r.get("request_id"), []).append(r)
    missing = [rid for rid in ok_ids if rid not in logged]
    not_ok = [rid for rid in ok_ids if rid in logged
              and any(r.get("status", {}).get("code") != 0 for r in logged[rid])]
    duplicated = [rid for rid, rs in logged.items() if len(rs) > 1]
    summary = (f"{sent[0]} requests sent by {CLIENT_THREADS} threads; {len(ok_ids)} answered OK "
               f"({ok_before_kill} before the kill); failed: {failed}; {len(records)} records in "
               f"the log, {torn} torn line(s) skipped")
    assert len(ok_ids) >= MIN_OK, f"too few OK answers to test anything: {summary}"
    assert not missing, (f"{len(missing)} of {len(ok_ids)} OK-answered requests have no audit "
                         f"record after kill -9: {summary}; e.g. {missing[:20]}")
    assert not not_ok, f"{len(not_ok)} OK-answered requests logged with another status: {not_ok[:20]}"
    assert not duplicated, f"{len(duplicated)} request ids logged more than once: {duplicated[:20]}"

    # Start once more on the same log: the torn tail is moved aside and the chain continues;
    # a clean shutdown signs it. Then the whole log verifies, and nothing answered is lost.
    again = daemon_proc.start(args, tmp_path / "log2")
    again.interrupt()
    res = daemon_proc.verify(audit_dir, public)
    assert res.returncode == 0, (f"explaind audit verify failed after the restart "
                                 f"({res.returncode}):\n{res.stdout}\n{res.stderr}")
    records_after, torn_after = daemon_proc.audit_records(audit_dir)
    assert torn_after == 0, f"{torn_after} torn lines left in the chain after the restart"
    ids_after = {r.get("request_id") for r in records_after}
    lost = [rid for rid in ok_ids if rid not in ids_after]
    assert not lost, f"{len(lost)} OK-answered records lost by the restart's repair: {lost[:20]}"

    # Tamper with one answered record (a different status code, the line otherwise intact) and
    # start again: the daemon still serves, and says at start-up that the log does not verify.
    log = daemon_proc.audit_files(audit_dir)[-1]
    lines = log.read_bytes().split(b"\n")
    victim = next(i for i, line in enumerate(lines) if b'"kind":"record"' in line and b'"code":0' in line)
    lines[victim] = lines[victim].replace(b'"code":0', b'"code":5', 1)
    log.write_bytes(b"\n".join(lines))
    tampered = daemon_proc.start(args, tmp_path / "log3")
    warned = ""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and "does NOT verify" not in warned:
        time.sleep(0.2)
        warned = tampered.stderr_text()
    alive = tampered.alive()
    tampered.interrupt()
    assert alive, "the daemon stopped on a log that does not verify (it should warn and serve)"
    assert "does NOT verify" in warned, f"no start-up warning about the tampered log:\n{warned}"
