"""Fixtures for the explaind client tests.

- Python gRPC stubs are generated from proto/ into tests/python/gen/ (git-ignored) when pytest
  starts, with grpcio-tools; nothing generated is committed.
- One daemon is started for the whole session: `$EXPLAIND_BIN` or target/debug/explaind,
  serving the repository's models/ with the bundled plugins (loaded by default from the binary's
  directory, libexplaind_plugin_* only) plus the
  C example plugin tests/c/leave_one_out.c, compiled here with `cc` when a C compiler exists
  (set EXPLAIND_TEST_NO_C_PLUGIN=1 to leave it out).
"""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paths import ABI_INCLUDE, C_DIR, GEN, MODELS_DIR, PROTO_DIR, REPO  # noqa: E402

C_PLUGIN_SRC = C_DIR / "leave_one_out.c"
C_PLUGIN_FILE = "libexplaind_plugin_leave_one_out_c.so"
LISTEN_RE = re.compile(r"^explaind listening on (127\.0\.0\.1:(\d+))$")
START_TIMEOUT_S = 60.0


def _generate_stubs() -> None:
    """Runs grpc_tools.protoc on every .proto under proto/ into a fresh gen/ directory."""
    protos = sorted(str(p.relative_to(PROTO_DIR)) for p in PROTO_DIR.rglob("*.proto"))
    if not protos:
        raise pytest.UsageError(f"no .proto files under {PROTO_DIR}")
    import grpc_tools

    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    tmp = GEN.with_name(f"gen.tmp.{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    cmd = [
        sys.executable, "-m", "grpc_tools.protoc",
        f"-I{PROTO_DIR}", f"-I{well_known}",
        f"--python_out={tmp}", f"--pyi_out={tmp}", f"--grpc_python_out={tmp}",
        *protos,
    ]
    res = subprocess.run(cmd, cwd=PROTO_DIR, capture_output=True, text=True)
    if res.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        raise pytest.UsageError(f"grpc_tools.protoc failed ({res.returncode}):\n{res.stderr}")
    shutil.rmtree(GEN, ignore_errors=True)
    tmp.rename(GEN)


def pytest_configure(config):
    # Before collection, so test modules (and explaind_client) can import the stubs.
    _generate_stubs()
    if str(GEN) not in sys.path:
        sys.path.insert(0, str(GEN))


# --------------------------------------------------------------------------------------------
# The C example plugin
# --------------------------------------------------------------------------------------------


@dataclass
class CPlugin:
    path: Path | None  # the compiled library, or None
    why_not: str  # why there is none


@pytest.fixture(scope="session")
def c_plugin(tmp_path_factory) -> CPlugin:
    if os.environ.get("EXPLAIND_TEST_NO_C_PLUGIN") == "1":
        return CPlugin(None, "EXPLAIND_TEST_NO_C_PLUGIN=1")
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        return CPlugin(None, "no C compiler (cc) found")
    out_dir = tmp_path_factory.mktemp("c-plugins")
    out = out_dir / C_PLUGIN_FILE
    cmd = [cc, "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
           f"-I{ABI_INCLUDE}", str(C_PLUGIN_SRC), "-o", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        pytest.fail(f"compiling {C_PLUGIN_SRC} failed:\n{' '.join(cmd)}\n{res.stderr}")
    return CPlugin(out, "")


# --------------------------------------------------------------------------------------------
# The daemon
# --------------------------------------------------------------------------------------------


@dataclass
class Server:
    address: str  # "127.0.0.1:PORT"
    port: int
    binary: Path
    plugin_dirs: list[Path]
    process: subprocess.Popen
    stderr_path: Path
    stdout_lines: list[str]

    def stderr_tail(self, n: int = 60) -> str:
        try:
            lines = self.stderr_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])


def _binary() -> Path:
    env = os.environ.get("EXPLAIND_BIN")
    return Path(env).resolve() if env else REPO / "target" / "debug" / "explaind"


@pytest.fixture(scope="session")
def server(tmp_path_factory, c_plugin: CPlugin):
    binary = _binary()
    if not binary.is_file():
        pytest.fail(
            f"explaind binary not found at {binary}: build it (cargo build) or set EXPLAIND_BIN"
        )
    plugin_dirs = []
    if c_plugin.path is not None:
        plugin_dirs.append(c_plugin.path.parent)
    cmd = [str(binary), "serve", "--listen", "127.0.0.1:0", "--models", str(MODELS_DIR)]
    for d in plugin_dirs:
        cmd += ["--plugins", str(d)]
    cmd += ["--device", "cpu"]

    log_dir = tmp_path_factory.mktemp("explaind")
    stderr_path = log_dir / "stderr.log"
    stderr_f = open(stderr_path, "wb")
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr_f,
        text=True, bufsize=1,
    )
    lines: queue.Queue = queue.Queue()
    stdout_lines: list[str] = []

    def pump():  # keeps draining stdout so the daemon never blocks on a full pipe
        for line in proc.stdout:
            line = line.rstrip("\n")
            stdout_lines.append(line)
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, name="explaind-stdout", daemon=True).start()

    def fail(why: str):
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        stderr_f.flush()
        tail = "\n".join(stderr_path.read_text(errors="replace").splitlines()[-60:])
        pytest.fail(f"{why}\ncommand: {' '.join(cmd)}\nexit: {proc.returncode}\n"
                    f"stdout: {stdout_lines}\nstderr (tail):\n{tail}")

    deadline = time.monotonic() + START_TIMEOUT_S
    first = None
    while first is None:
        left = deadline - time.monotonic()
        if left <= 0:
            fail(f"explaind printed no listening line within {START_TIMEOUT_S:.0f} s")
        try:
            first = lines.get(timeout=min(left, 1.0))
        except queue.Empty:
            continue
        if first is None:
            fail("explaind exited before printing its listening line")
    m = LISTEN_RE.match(first)
    if not m:
        fail(f"explaind's first stdout line is not 'explaind listening on 127.0.0.1:PORT': "
             f"{first!r}")

    srv = Server(address=m.group(1), port=int(m.group(2)), binary=binary,
                 plugin_dirs=plugin_dirs, process=proc, stderr_path=stderr_path,
                 stdout_lines=stdout_lines)
    try:
        yield srv
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        stderr_f.close()


@pytest.fixture(scope="session")
def channel(server: Server):
    import grpc

    ch = grpc.insecure_channel(server.address)
    grpc.channel_ready_future(ch).result(timeout=10)
    try:
        yield ch
    finally:
        ch.close()


@pytest.fixture(scope="session")
def client(channel):
    """Hand-built requests (tests/python/explaind_client.py), for what the project's client
    deliberately cannot send: malformed messages, wrong element types, raw byte lengths."""
    from explaind_client import Client

    return Client(channel)


@pytest.fixture(scope="session")
def py(server):
    """The project's Python client (clients/python, explaind_py) on the session's daemon: what
    the tests use for every request a user would make."""
    from explaind_py import Client

    with Client(server.address, timeout=60) as c:
        yield c


@pytest.fixture(scope="session")
def daemon_alive(server: Server):
    """Asserts, after a test, that the daemon is still running (no crash on bad input)."""

    def check():
        code = server.process.poll()
        assert code is None, f"explaind exited with {code}; stderr:\n{server.stderr_tail()}"

    return check
