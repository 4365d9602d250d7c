#!/usr/bin/env python3
"""Benchmark: cache-affinity routing in a fleet. Three release daemons behind nginx on loopback
(tests/python/fleet.py: the committed deploy/nginx/nginx.conf with loopback addresses), once
round-robin and once with consistent hashing on x-explaind-background, the same seeded load
each time on fresh replicas: REQUESTS Deep SHAP explanations of one sample from CLIENTS
concurrent clients, over BACKGROUNDS inline background sets of ROWS rows; each replica's
activation cache holds CACHE_SHARE of them (more than its share under hashing, which is
uneven with few keys; fewer than all). Then, with hashing, one replica is stopped with SIGTERM
a third of the way into a second load. Run for each model of MODELS: the wine MLP (where
request overhead dominates) and the MNIST CNN (where a background's activations cost real
work).

Prints, per run: per-replica cache hits and misses (from /metrics), the fleet's hit ratio,
request latency p50/p99 as the client sees it (through nginx), throughput, failed requests,
and for the removal how many backgrounds moved. Markdown, for BENCHMARKS.md.

Usage: cargo build --release --workspace && .venv/bin/python scripts/benchmarks/bench_fleet.py
"""
from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "python"))
os.environ.setdefault("EXPLAIND_BIN", str(REPO / "target" / "release" / "explaind"))

import fleet  # noqa: E402  (needs the path above)

MODELS = ["wine-mlp", "mnist-cnn"]
BACKGROUNDS = 20
ROWS = 100
REQUESTS = 600
CLIENTS = 8
CACHE_SHARE = 12.5


def measure_cache_bytes(workdir: Path, model: str) -> int:
    f = fleet.start_fleet(workdir, affinity=True, cache_bytes=1 << 30)
    try:
        fleet.run_load(f.address, fleet.backgrounds(1, ROWS, seed=99, model=model), requests=1, clients=1, seed=0,
                       model=model)
        return int(max(r.metrics().get("explaind_activation_cache_bytes", 0) for r in f.replicas) * CACHE_SHARE)
    finally:
        f.stop()


def report(name: str, f: fleet.Fleet, load: fleet.LoadResult, wall: float, before: dict) -> None:
    hits = misses = 0
    cells = []
    for r in f.replicas:
        if not r.daemon.alive():
            cells.append(f"{r.name}: stopped")
            continue
        h, m = r.cache_counts()
        h, m = h - before[r.name][0], m - before[r.name][1]
        hits, misses = hits + h, misses + m
        cells.append(f"{r.name}: {h}/{m}")
    ok = len(load.outcomes) - len(load.failures())
    print(f"| {name} | {'; '.join(cells)} | {hits / max(1, hits + misses):.2f} | "
          f"{load.percentile_ms(50):.1f} | {load.percentile_ms(99):.1f} | {ok / wall:.1f} | {len(load.failures())} |")


def main() -> None:
    if fleet.nginx_binary() is None:
        raise SystemExit("nginx is missing: scripts/setup/setup.sh installs it")
    work = Path(tempfile.mkdtemp(prefix="explaind-fleet-bench-"))
    for model in MODELS:
        bench_model(work / model, model)


def bench_model(work: Path, model: str) -> None:
    cache_bytes = measure_cache_bytes(work / "measure", model)
    sets = fleet.backgrounds(BACKGROUNDS, ROWS, model=model)
    print(f"\n### {model}: {REQUESTS} requests, {CLIENTS} clients, {BACKGROUNDS} backgrounds x {ROWS} rows, "
          f"activation cache {cache_bytes / 2**20:.1f} MiB per replica (~{CACHE_SHARE:g} backgrounds)\n")
    print("| routing | cache hits/misses per replica | hit ratio | p50 ms | p99 ms | requests/s | failed |")
    print("|---|---|---|---|---|---|---|")
    for name, affinity in [("round-robin", False), ("consistent hash", True)]:
        f = fleet.start_fleet(work / name.replace(" ", "-"), affinity=affinity, cache_bytes=cache_bytes)
        try:
            zero = {r.name: (0, 0) for r in f.replicas}
            began = time.monotonic()
            load = fleet.run_load(f.address, sets, requests=REQUESTS, clients=CLIENTS, seed=1, model=model)
            report(name, f, load, time.monotonic() - began, zero)
            if not affinity:
                continue
            owners = {b: next(iter(r)) for b, r in load.placement().items()}
            counts = {r.name: r.cache_counts() for r in f.replicas}
            victim = f.replicas[1]
            started = threading.Event()
            gone: list[float] = []

            def stop_victim():
                started.wait(600)
                victim.daemon.stop()
                gone.append(time.monotonic())

            threading.Thread(target=stop_victim, daemon=True).start()
            began = time.monotonic()
            during = fleet.run_load(f.address, sets, requests=REQUESTS, clients=CLIENTS, seed=2, model=model,
                                    on_progress=lambda done: done == REQUESTS // 3 and started.set())
            report(f"{name}, {victim.name} stopped at 1/3", f, during, time.monotonic() - began, counts)
            after = during.placement(since=gone[0]) if gone else {}
            moved = sorted(b for b, r in after.items() if r != {owners.get(b)})
            mine = sorted(b for b, o in owners.items() if o == victim.name)
            print(f"\nbackgrounds of {victim.name}: {mine}; moved after it stopped: {moved}")
        finally:
            f.stop()


if __name__ == "__main__":
    main()
