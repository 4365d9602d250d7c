#!/usr/bin/env python3
"""Soak test (a benchmark, not a CI test): thousands of concurrent small explain requests against a
release daemon with the audit log on, over loopback.

Checks, and prints as a Markdown section for BENCHMARKS.md:
  - no request fails;
  - the audit log verifies (`explaind audit verify`) and holds exactly one record per answered
    request, matched by the x-request-id each request sent (a request the audit queue could not
    take is answered UNAVAILABLE and has no record: counted as an error);
  - the daemon's resident memory stays flat: RSS after each wave of requests.

Usage (from the repository root; release build first):
    cargo build --release --workspace
    /tmp/bench-venv/bin/python scripts/benchmarks/soak.py [--requests 5000] [--concurrency 200]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts" / "benchmarks"))

from benchlib import generate_stubs, start_daemon  # noqa: E402

BIN = REPO / "target" / "release" / "explaind"


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS")


async def run(addr: str, total: int, concurrency: int, waves: int, pid: int):
    import grpc
    from explaind.v1 import explaind_pb2 as pb
    from explaind.v1 import explaind_pb2_grpc as pb_grpc

    x = np.load(REPO / "models" / "wine-mlp" / "1" / "samples.npy")[:1].astype("<f4")
    tensor = pb.Tensor(element_type=pb.ELEMENT_TYPE_FLOAT, shape=list(x.shape), data=x.tobytes())
    request = pb.ExplainRequest(model=pb.ModelRef(name="wine-mlp"), explainer="occlusion",
                                inputs=[pb.NamedTensor(name="features", tensor=tensor)],
                                parameters={"window": pb.ParamValue(integers=pb.IntegerList(values=[1]))})
    errors: list[str] = []
    sent: list[str] = []
    rss = [("start", rss_mib(pid))]
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = pb_grpc.ExplainServiceStub(channel)
        semaphore = asyncio.Semaphore(concurrency)

        async def one(i: int):
            rid = f"soak-{i}"
            async with semaphore:
                try:
                    await stub.Explain(request, metadata=(("x-request-id", rid),), timeout=120)
                    sent.append(rid)
                except grpc.aio.AioRpcError as e:
                    errors.append(f"{rid}: {e.code()} {e.details()}")

        per_wave = total // waves
        began = time.perf_counter()
        for w in range(waves):
            await asyncio.gather(*(one(w * per_wave + i) for i in range(per_wave)))
            rss.append((f"after {(w + 1) * per_wave}", rss_mib(pid)))
        elapsed = time.perf_counter() - began
    return sent, errors, rss, elapsed


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=200)
    parser.add_argument("--waves", type=int, default=5)
    parser.add_argument("--fsync-every-ms", type=int, default=0, help="0: every record synced before its answer")
    parser.add_argument("--no-audit", action="store_true", help="for comparison: the daemon without an audit log")
    args = parser.parse_args()
    generate_stubs()
    with tempfile.TemporaryDirectory(prefix="explaind-soak-") as tmp:
        key = Path(tmp) / "audit.key"
        subprocess.run([str(BIN), "audit", "keygen", str(key)], check=True, capture_output=True)
        log = Path(tmp) / "audit"
        config = Path(tmp) / "soak.toml"
        config.write_text(f"[audit]\nfsync_every_ms = {args.fsync_every_ms}\n")
        audit = [] if args.no_audit else ["--config", str(config), "--audit-dir", str(log), "--audit-key", str(key)]
        proc, addr = start_daemon(*audit)
        try:
            sent, errors, rss, elapsed = asyncio.run(run(addr, args.requests, args.concurrency, args.waves, proc.pid))
        finally:
            proc.send_signal(2)  # SIGINT: graceful stop, final checkpoint
            proc.wait(timeout=30)
        if args.no_audit:
            print(f"{len(errors)} errors, {elapsed:.1f} s; RSS (MiB): " + ", ".join(f"{l}: {v:.0f}" for l, v in rss))
            return 0 if not errors else 1
        verify = subprocess.run([str(BIN), "audit", "verify", "--public-key", f"{key}.pub", str(log)],
                                capture_output=True, text=True)
        summary = json.loads(verify.stdout) if verify.returncode == 0 else {"error": verify.stderr.strip()}
        ids = []
        for path in sorted(log.glob("audit.log*")):
            if ".torn-" in path.name or path.name.endswith(".lock"):
                continue
            for line in path.read_text().splitlines():
                entry = json.loads(line)
                if entry["kind"] == "record":
                    ids.append(entry["request_id"])
    once = len(ids) == len(set(ids)) and sorted(ids) == sorted(sent)

    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.platform()}; "
          f"load average before the run {os.getloadavg()[0]:.2f}")
    print(f"Command: `python scripts/benchmarks/soak.py --requests {args.requests} --concurrency {args.concurrency} "
          f"--waves {args.waves} --fsync-every-ms {args.fsync_every_ms}` (release build; occlusion on wine-mlp, "
          "one row, 13 windows; audit log on: "
          f"{'each batch fdatasync-ed before its answers' if args.fsync_every_ms == 0 else f'each batch written before its answers, synced every {args.fsync_every_ms} ms'})\n")
    print("| requests | concurrency | errors | wall time | requests/s | audit records | each answered request audited once | verify |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {args.requests} | {args.concurrency} | {len(errors)} | {elapsed:.1f} s | {args.requests / elapsed:.0f} | "
          f"{len(ids)} | {'yes' if once else 'NO'} | {'ok' if 'error' not in summary else summary['error']} |")
    print("\nDaemon RSS (MiB): " + ", ".join(f"{label}: {value:.0f}" for label, value in rss))
    if errors:
        print("\nFirst errors:\n" + "\n".join(errors[:5]))
    return 0 if not errors and once and "error" not in summary else 1


if __name__ == "__main__":
    sys.exit(main())
