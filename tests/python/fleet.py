"""Three explaind replicas behind nginx on loopback: the harness of the fleet test
(test_fleet.py) and of the fleet benchmark (scripts/benchmarks/bench_fleet.py).

nginx runs the committed deploy/nginx/nginx.conf with only what a loopback run must change:
its three `server` lines point at the daemons, it listens on a free port, keeps its pid and
temporary files in a temporary directory, and runs one worker. `affinity=False` also drops the
`hash` line, which leaves nginx's default, round-robin. Every daemon has its own audit log
(one chain per replica, named by its replica id) signed with one key, as a fleet shares it.

The load: clients explain a sample of a model (the wine MLP unless told) with Deep SHAP against
one of several background sets, sent inline; the Python client puts each background's id in
x-explaind-background, and each answer names its replica (x-explaind-replica). Cache hits and
misses are read per replica from /metrics.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import daemon_proc
from explaind_py import Client, ExplaindError
from paths import MODELS_DIR, REPO

NGINX_CONF = REPO / "deploy" / "nginx" / "nginx.conf"
MODEL = "wine-mlp"
METRICS_RE = re.compile(r"^explaind metrics on http://(127\.0\.0\.1:\d+)/metrics$")


def nginx_binary() -> str | None:
    return shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loopback_nginx_conf(upstreams: list[str], port: int, workdir: Path, affinity: bool) -> str:
    """deploy/nginx/nginx.conf with the loopback changes (module docstring). Fails loudly when
    the committed file no longer has the lines it rewrites."""
    text = NGINX_CONF.read_text()
    servers = re.findall(r"^(\s*)server (\S+):50051 (.*);$", text, flags=re.M)
    assert len(servers) == 3, f"{NGINX_CONF}: expected three `server ...:50051 ...;` lines"
    indent, _, options = servers[0]
    block = "".join(f"{indent}server {u} {options};\n" for u in upstreams)
    text = re.sub(r"(^\s*server \S+:50051 .*;\n)+", block, text, count=1, flags=re.M)
    for pattern, replacement in [
        (r"^worker_processes .*;$", "worker_processes 1;"),
        (r"^pid .*;$", f"pid {workdir}/nginx.pid;"),
        (r"^(\s*)listen \d+ http2;$", rf"\g<1>listen 127.0.0.1:{port} http2;"),
    ]:
        text, n = re.subn(pattern, replacement, text, flags=re.M)
        assert n == 1, f"{NGINX_CONF}: no line matches {pattern!r}"
    if not affinity:
        text, n = re.subn(r"^\s*hash \$http_x_explaind_background consistent;\n", "", text, flags=re.M)
        assert n == 1, f"{NGINX_CONF}: the hash line is gone"
    # nginx's temporary files (request bodies) go where an unprivileged run may write.
    temp = "".join(f"    {d}_temp_path {workdir}/{d};\n"
                   for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return text.replace("http {\n", "http {\n" + temp, 1)


@dataclass
class Replica:
    name: str
    daemon: daemon_proc.Daemon
    metrics_url: str
    audit_dir: Path

    def metrics(self) -> dict[str, float]:
        with urllib.request.urlopen(self.metrics_url, timeout=10) as r:
            text = r.read().decode()
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def cache_counts(self) -> tuple[int, int]:
        m = self.metrics()
        return (int(m.get("explaind_activation_cache_hits_total", 0)),
                int(m.get("explaind_activation_cache_misses_total", 0)))


@dataclass
class Fleet:
    workdir: Path
    replicas: list[Replica]
    nginx: subprocess.Popen
    address: str
    public_key: Path

    def stop(self) -> None:
        if self.nginx.poll() is None:
            self.nginx.terminate()
            self.nginx.wait(timeout=15)
        for r in self.replicas:
            r.daemon.stop()


def start_fleet(workdir: Path, *, affinity: bool, cache_bytes: int, drain_seconds: int = 20) -> Fleet:
    workdir.mkdir(parents=True, exist_ok=True)
    key = workdir / "audit.key"
    public = daemon_proc.keygen(key)
    replicas = []
    try:
        for i in range(3):
            name = f"explaind-{i}"
            audit_dir = workdir / name / "audit"
            audit_dir.mkdir(parents=True)
            d = daemon_proc.start(
                ["serve", "--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
                 "--models", str(MODELS_DIR), "--device", "cpu", "--intra-threads", "1",
                 "--replica-id", name, "--cache-bytes", str(cache_bytes),
                 "--drain-seconds", str(drain_seconds),
                 "--audit-dir", str(audit_dir), "--audit-key", str(key)],
                workdir / name / "log")
            deadline = time.monotonic() + 30
            while not any(METRICS_RE.match(line) for line in d.stdout_lines):
                if time.monotonic() > deadline or not d.alive():
                    raise RuntimeError(f"{name} printed no metrics address: {d.stdout_lines}")
                time.sleep(0.05)
            metrics = next(METRICS_RE.match(line).group(1) for line in d.stdout_lines if METRICS_RE.match(line))
            replicas.append(Replica(name, d, f"http://{metrics}/metrics", audit_dir))
        port = free_port()
        conf = workdir / "nginx.conf"
        conf.write_text(loopback_nginx_conf([r.daemon.address for r in replicas], port, workdir, affinity))
        nginx = subprocess.Popen([nginx_binary(), "-e", "stderr", "-p", str(workdir), "-c", str(conf),
                                  "-g", "daemon off;"],
                                 stdout=subprocess.DEVNULL, stderr=open(workdir / "nginx.log", "ab"))
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if nginx.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"nginx did not start:\n{(workdir / 'nginx.log').read_text()}")
                time.sleep(0.05)
    except BaseException:
        for r in replicas:
            r.daemon.stop()
        raise
    return Fleet(workdir, replicas, nginx, f"127.0.0.1:{port}", public)


def backgrounds(count: int, rows: int, seed: int = 0, model: str = MODEL) -> list[np.ndarray]:
    """`count` distinct background sets for `model`: rows of its bundled background.npy with
    seeded noise."""
    pool = np.load(MODELS_DIR / model / "1" / "background.npy").astype(np.float32)
    rng = np.random.default_rng(seed)
    return [(pool[rng.integers(0, len(pool), rows)] + rng.normal(0, 0.05, (rows, *pool.shape[1:]))).astype(np.float32)
            for _ in range(count)]


@dataclass
class Outcome:
    background: int
    replica: str | None
    seconds: float
    error: str | None = None
    began: float = 0.0


@dataclass
class LoadResult:
    outcomes: list[Outcome] = field(default_factory=list)

    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.error is not None]

    def percentile_ms(self, q: float) -> float:
        ok = [o.seconds for o in self.outcomes if o.error is None]
        return float(np.percentile(ok, q) * 1e3) if ok else float("nan")

    def placement(self, since: float = 0.0, until: float = float("inf")) -> dict[int, set[str]]:
        """Which replicas served each background, among requests begun in [since, until)."""
        out: dict[int, set[str]] = {}
        for o in self.outcomes:
            if o.error is None and since <= o.began < until:
                out.setdefault(o.background, set()).add(o.replica)
        return out


def run_load(address: str, sets: list[np.ndarray], *, requests: int, clients: int, seed: int,
             on_progress=None, model: str = MODEL) -> LoadResult:
    """`requests` Deep SHAP explanations of one sample of `model` over `clients` threads (one
    channel each), backgrounds drawn uniformly with `seed`. `on_progress(done)` is called after
    each request."""
    x = np.load(MODELS_DIR / model / "1" / "samples.npy").astype(np.float32)[:1]
    order = np.random.default_rng(seed).integers(0, len(sets), requests)
    result = LoadResult()
    lock = threading.Lock()
    local = threading.local()
    connections: list[Client] = []

    def one(b: int) -> None:
        if not hasattr(local, "client"):
            local.client = Client(address, timeout=60)
            with lock:
                connections.append(local.client)
        began = time.monotonic()
        try:
            e = local.client.explain(model, x, "deep-shap", targets="predicted", background=sets[b])
            outcome = Outcome(int(b), e.replica, time.monotonic() - began, began=began)
        except ExplaindError as err:
            outcome = Outcome(int(b), None, time.monotonic() - began, f"{err.code}: {err.message}", began)
        with lock:
            result.outcomes.append(outcome)
            if on_progress is not None:
                on_progress(len(result.outcomes))

    try:
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(one, order))
    finally:
        for c in connections:
            c.close()
    return result
