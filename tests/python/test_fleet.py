"""A fleet on loopback: three explaind replicas behind nginx (Debian's package, installed by
scripts/setup/setup.sh) running the committed deploy/nginx/nginx.conf (fleet.py says what a loopback
run changes in it).

Each replica's activation cache holds 12 of the 20 backgrounds of the load: more than its
share under hashing (which is uneven with few keys), less than all of them. The same seeded load runs twice on fresh replicas:
- round-robin (the config without its `hash` line): every replica sees every background, its
  cache thrashes, and the fleet computes a background's activations again and again;
- consistent hashing on x-explaind-background (the config as committed): each background is
  served by exactly one replica, which computes its activations once, so the fleet's cache
  hit ratio is higher than round-robin's.
Then, with hashing, one replica is stopped with SIGTERM in the middle of the load: no request
fails (nginx retries what the going-away replica refuses on the next replica of the ring), and
only the backgrounds of that replica move, to the others; every other background stays where
it was. Finally `explaind audit verify` takes the three replicas' audit logs at once and
reports three chains, each named by its replica and each ending in a signed checkpoint.

Speed figures (p50/p99, hit ratios at a larger load) are in BENCHMARKS.md, made by
scripts/benchmarks/bench_fleet.py with this harness; the test asserts only what must hold.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

import daemon_proc
import fleet

BACKGROUNDS = 20
ROWS = 64
REQUESTS = 120
CLIENTS = 4


def _cache_bytes(tmp_path) -> int:
    """A cache budget that holds 12 of the 20 backgrounds: one background's activations
    measured on a replica of its own."""
    f = fleet.start_fleet(tmp_path / "measure", affinity=True, cache_bytes=1 << 30)
    try:
        sets = fleet.backgrounds(1, ROWS, seed=99)
        fleet.run_load(f.address, sets, requests=1, clients=1, seed=0)
        used = max(r.metrics().get("explaind_activation_cache_bytes", 0) for r in f.replicas)
    finally:
        f.stop()
    assert used > 0, "the activation cache reports no bytes after a Deep SHAP request"
    return int(used * 12.5)


@pytest.fixture(scope="module")
def nginx():
    path = fleet.nginx_binary()
    if path is None:
        pytest.fail("nginx is not installed: scripts/setup/setup.sh installs it (apt-get install nginx as root)")
    return path


def _run(tmp_path, name, affinity, cache_bytes, sets):
    f = fleet.start_fleet(tmp_path / name, affinity=affinity, cache_bytes=cache_bytes)
    try:
        load = fleet.run_load(f.address, sets, requests=REQUESTS, clients=CLIENTS, seed=1)
        counts = {r.name: r.cache_counts() for r in f.replicas}
    except BaseException:
        f.stop()
        raise
    return f, load, counts


def _hit_ratio(counts):
    hits = sum(h for h, _ in counts.values())
    misses = sum(m for _, m in counts.values())
    return hits / max(1, hits + misses)


def test_affinity_routing_keeps_each_background_on_one_replica_and_survives_a_drain(tmp_path, nginx):
    cache_bytes = _cache_bytes(tmp_path)
    sets = fleet.backgrounds(BACKGROUNDS, ROWS)

    # Round-robin: every replica sees every background.
    rr, rr_load, rr_counts = _run(tmp_path, "round-robin", False, cache_bytes, sets)
    rr.stop()
    assert not rr_load.failures(), rr_load.failures()[:3]
    spread = rr_load.placement()
    assert sum(len(r) > 1 for r in spread.values()) >= BACKGROUNDS // 2, \
        f"round-robin should spread backgrounds over replicas: {spread}"

    # Consistent hashing: one replica per background.
    f, load, counts = _run(tmp_path, "affinity", True, cache_bytes, sets)
    try:
        assert not load.failures(), load.failures()[:3]
        before = load.placement()
        assert all(len(r) == 1 for r in before.values()), f"a background was served by two replicas: {before}"
        owners = {b: next(iter(r)) for b, r in before.items()}
        assert len(set(owners.values())) == 3, f"hashing left a replica without backgrounds: {owners}"
        print(f"cache hits/misses per replica: round-robin {rr_counts} ({_hit_ratio(rr_counts):.2f}), "
              f"hashing {counts} ({_hit_ratio(counts):.2f})")
        assert _hit_ratio(counts) > _hit_ratio(rr_counts) + 0.2, (counts, rr_counts)
        # Each replica computed each of its backgrounds about once.
        assert sum(m for _, m in counts.values()) <= BACKGROUNDS + 3, counts

        # A replica goes away in the middle of the load (SIGTERM: it drains and exits).
        victim = f.replicas[1]
        gone_at: list[float] = []
        progress = threading.Event()

        def on_progress(done):
            if done == REQUESTS // 3:
                progress.set()

        def stop_victim():
            progress.wait(120)
            assert victim.daemon.stop() == 0, victim.daemon.stderr_tail()
            gone_at.append(time.monotonic())

        stopper = threading.Thread(target=stop_victim)
        stopper.start()
        during = fleet.run_load(f.address, sets, requests=REQUESTS, clients=CLIENTS, seed=2,
                                on_progress=on_progress)
        stopper.join(120)
        assert gone_at, "the replica did not stop"
        assert not during.failures(), f"requests failed while a replica drained: {during.failures()[:3]}"
        after = during.placement(since=gone_at[0])
        assert after, "no request began after the replica stopped"
        for b, replicas in after.items():
            assert victim.name not in replicas, f"background {b} went to the stopped replica"
            if owners.get(b) != victim.name:
                assert replicas == {owners[b]}, f"background {b} moved from {owners[b]} to {replicas}"
            else:
                assert len(replicas) == 1, f"background {b} of the stopped replica went to {replicas}"
        moved = {b for b in after if owners.get(b) == victim.name}
        assert moved, f"none of {victim.name}'s backgrounds was requested after it stopped"
    finally:
        f.stop()

    # One audit trail per replica, verified together.
    dirs = [str(r.audit_dir) for r in f.replicas]
    res = daemon_proc.subprocess.run(
        [str(daemon_proc.binary()), "audit", "verify", "--public-key", str(f.public_key), *dirs],
        capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    report = json.loads(res.stdout)
    assert report["ok"] and not report["problems"], report
    assert [c["replicas"] for c in report["chains"]] == [[r.name] for r in f.replicas], report
    for chain in report["chains"]:
        assert chain["records"] > 0 and chain["unsigned_records"] == 0, chain


def test_a_registered_background_follows_when_its_replica_goes_away(tmp_path, nginx):
    """A background registered through the proxy is routed by its id, so it lands on the
    replica that its explanations reach. When that replica stops, the proxy sends the id to
    another replica, which has never seen it: the Python client registers it there again,
    once, and the explanation succeeds with the same values."""
    import numpy as np

    from explaind_py import Client

    f = fleet.start_fleet(tmp_path / "registered", affinity=True, cache_bytes=64 << 20)
    try:
        rows = fleet.backgrounds(1, 16, seed=5)[0]
        x = np.load(fleet.MODELS_DIR / fleet.MODEL / "1" / "samples.npy").astype(np.float32)[:2]
        with Client(f.address, timeout=60) as c:
            bid = c.register_background(fleet.MODEL, rows)
            first = c.explain(fleet.MODEL, x, "deep-shap", targets="all", background_id=bid)
            holder = next(r for r in f.replicas if r.name == first.replica)
            assert holder.daemon.stop() == 0
            second = c.explain(fleet.MODEL, x, "deep-shap", targets="all", background_id=bid)
        assert second.replica not in (None, first.replica), (first.replica, second.replica)
        np.testing.assert_allclose(second.values, first.values, rtol=0, atol=1e-6)
        np.testing.assert_allclose(second.base_values, first.base_values, rtol=0, atol=1e-6)
        # The new replica's audit log shows the detour: NOT_FOUND (5), then the retry's OK.
        new = next(r for r in f.replicas if r.name == second.replica)
        deadline = time.monotonic() + 10
        while True:
            records, _ = daemon_proc.audit_records(new.audit_dir)
            codes = [r["status"]["code"] for r in records if r["rpc"] == "Explain"]
            if len(codes) >= 2 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert codes == [5, 0], codes
    finally:
        f.stop()


def test_audit_verify_reports_a_replica_named_by_two_chains_and_a_broken_chain(tmp_path):
    """The fleet checks of `audit verify` fail when they should: the same log given twice
    names one replica twice; a chain with an altered line is reported broken while the other
    chain is still reported."""
    key = tmp_path / "audit.key"
    public = daemon_proc.keygen(key)
    dirs = []
    for name in ("explaind-0", "explaind-1"):
        audit_dir = tmp_path / name
        audit_dir.mkdir()
        d = daemon_proc.start(["serve", "--listen", "127.0.0.1:0", "--models", str(fleet.MODELS_DIR),
                               "--device", "cpu", "--replica-id", name, "--audit-dir", str(audit_dir),
                               "--audit-key", str(key)], tmp_path / f"{name}-log")
        try:
            from explaind_py import Client

            with Client(d.address, timeout=60) as c:
                c.predict(fleet.MODEL, fleet.backgrounds(1, 2)[0])
        finally:
            assert d.stop() == 0
        dirs.append(audit_dir)
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "audit.log").write_bytes((dirs[0] / "audit.log").read_bytes())

    def verify(*paths):
        res = daemon_proc.subprocess.run(
            [str(daemon_proc.binary()), "audit", "verify", "--public-key", str(public), *map(str, paths)],
            capture_output=True, text=True, timeout=60)
        return res.returncode, json.loads(res.stdout) if res.stdout.strip() else None

    code, report = verify(*dirs)
    assert code == 0 and report["ok"], report
    code, report = verify(dirs[0], dirs[1], copy)
    assert code != 0 and not report["ok"], report
    assert any("explaind-0" in p and "more than one chain" in p for p in report["problems"]), report

    log = dirs[1] / "audit.log"
    log.write_bytes(log.read_bytes().replace(b'"rpc":"Predict"', b'"rpc":"Explain"', 1))
    code, report = verify(*dirs)
    assert code != 0 and not report["ok"], report
    assert "error" not in report["chains"][0] and report["chains"][0]["replicas"] == ["explaind-0"], report
    assert "hash mismatch" in report["chains"][1]["error"], report



def test_the_envoy_config_routes_as_the_nginx_config_does():
    """No registry this project uses ships Envoy, so deploy/envoy/envoy.yaml is not run here
    (deploy/README.md says so). What can be checked without it: it parses, hashes the same
    header onto a ring, retries what nginx retries, health-checks over gRPC, and names the same
    replicas and port as deploy/nginx/nginx.conf, which the fleet test runs."""
    import re

    import yaml

    config = yaml.safe_load((fleet.REPO / "deploy" / "envoy" / "envoy.yaml").read_text())
    (listener,) = config["static_resources"]["listeners"]
    (manager,) = listener["filter_chains"][0]["filters"]
    (host,) = manager["typed_config"]["route_config"]["virtual_hosts"]
    (route,) = host["routes"]
    assert route["route"]["hash_policy"] == [{"header": {"header_name": "x-explaind-background"}}]
    retry_on = set(route["route"]["retry_policy"]["retry_on"].split(","))
    assert {"connect-failure", "refused-stream", "unavailable"} <= retry_on, retry_on
    (cluster,) = config["static_resources"]["clusters"]
    assert cluster["lb_policy"] == "RING_HASH"
    assert "http2_protocol_options" in str(cluster["typed_extension_protocol_options"])
    assert cluster["health_checks"][0]["grpc_health_check"] == {}
    endpoints = [e["endpoint"]["address"]["socket_address"] for e in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]]
    nginx = re.findall(r"^\s*server (\S+):(\d+) ", fleet.NGINX_CONF.read_text(), flags=re.M)
    assert [(e["address"], str(e["port_value"])) for e in endpoints] == nginx
    assert "hash $http_x_explaind_background consistent;" in fleet.NGINX_CONF.read_text()
