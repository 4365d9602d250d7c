"""SIGTERM, as systemd and Kubernetes send it on every stop, drains the daemon.

A daemon with the audit log serves a slow explanation (integrated gradients with many steps,
a few seconds) when it gets SIGTERM: health turns NOT_SERVING, a new connection is refused,
the request in flight finishes OK, the daemon exits 0, and the audit log ends in a signed
checkpoint (`explaind audit verify` reports no unsigned records). A second signal stops at
once: the request in flight is cut short, the log is still closed and signed. SIGINT and
SIGQUIT drain the same way.
"""

from __future__ import annotations

import signal
import threading
import time

import grpc
import numpy as np
import pytest
from explaind_py import Client, ExplaindError

import daemon_proc
from paths import MODELS_DIR

DIGIT = np.load(MODELS_DIR / "mnist-cnn" / "1" / "demo.npy").astype(np.float32)[:1]
DRAIN_S = 20


def _slow_explain(client: Client, steps: int) -> None:
    """About 2.2 s per 8,000 steps on mnist-cnn in a debug build on 2 cores."""
    client.explain("mnist-cnn", DIGIT, "integrated-gradients", steps=steps,
                   method="riemann_trapezoid")


def _start(tmp_path):
    if not daemon_proc.binary().is_file():
        pytest.fail(f"explaind binary not found at {daemon_proc.binary()}: build it (cargo build --workspace)")
    key = tmp_path / "audit.key"
    public = daemon_proc.keygen(key)
    audit_dir = tmp_path / "audit"
    audit_dir.mkdir()
    args = ["serve", "--listen", "127.0.0.1:0", "--models", str(MODELS_DIR), "--device", "cpu",
            "--audit-dir", str(audit_dir), "--audit-key", str(key), "--drain-seconds", str(DRAIN_S)]
    return daemon_proc.start(args, tmp_path / "log"), audit_dir, public


def _in_flight(client: Client, steps: int):
    """Sends a slow explanation on a thread once the daemon has answered a warm-up; returns the
    thread and where its outcome lands ("OK" or the status name)."""
    _slow_explain(client, 10)  # sessions and compiled graphs, outside the timing
    outcome: list[str] = []

    def call():
        try:
            _slow_explain(client, steps)
            outcome.append("OK")
        except ExplaindError as e:
            outcome.append(e.code)

    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(1.0)  # the request is being explained
    return thread, outcome


def _health(address: str) -> str:
    """The overall health status, or the status code of a failed check."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        except grpc.RpcError as e:
            return e.code().name


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGQUIT], ids=lambda s: s.name)
def test_a_stop_signal_drains_in_flight_requests_and_signs_the_audit_log(tmp_path, sig):
    daemon, audit_dir, public = _start(tmp_path)
    try:
        assert _health(daemon.address) == "SERVING"
        with Client(daemon.address, timeout=120) as client:
            thread, outcome = _in_flight(client, 16000)
            daemon.process.send_signal(sig)
            time.sleep(0.5)
            # Draining: health says so to whoever asks, and nothing new is taken on.
            assert _health(daemon.address) in {"NOT_SERVING", "UNAVAILABLE"}
            assert daemon.alive(), "the daemon waits for the request in flight"
            thread.join(timeout=DRAIN_S)
            assert outcome == ["OK"], outcome
            assert daemon.process.wait(timeout=DRAIN_S) == 0
    finally:
        if daemon.alive():
            daemon.kill9()
    log = daemon.stderr_text()
    assert "draining" in log and "drained" in log, daemon.stderr_tail()
    records, torn = daemon_proc.audit_records(audit_dir)
    assert torn == 0 and len(records) == 2, records
    assert [r["status"]["code"] for r in records] == [0, 0], records
    res = daemon_proc.verify(audit_dir, public)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "after the last checkpoint" not in res.stdout, f"records left unsigned: {res.stdout}"


def test_a_second_signal_stops_at_once(tmp_path):
    daemon, audit_dir, public = _start(tmp_path)
    try:
        with Client(daemon.address, timeout=120) as client:
            thread, outcome = _in_flight(client, 100_000)  # about 30 s
            started = time.monotonic()
            daemon.process.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            daemon.process.send_signal(signal.SIGTERM)
            assert daemon.process.wait(timeout=DRAIN_S) == 0
            assert time.monotonic() - started < 10, "stopped without waiting for the request"
            thread.join(timeout=30)
            assert outcome and outcome != ["OK"], outcome
    finally:
        if daemon.alive():
            daemon.kill9()
    assert "second signal: stopping at once" in daemon.stderr_text(), daemon.stderr_tail()
    res = daemon_proc.verify(audit_dir, public)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "after the last checkpoint" not in res.stdout, f"records left unsigned: {res.stdout}"
