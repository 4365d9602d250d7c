"""A private explaind process for the robustness tests (test_hostile.py, test_audit_kill.py).

Unlike conftest's shared `server` fixture, these tests need a daemon of their own: one with an
audit log, under a memory cap, that they may kill. This module starts one, waits for its
"explaind listening on 127.0.0.1:PORT" line, and reads what the tests watch: /proc/<pid>
(memory, CPU time), its stderr log, and its audit log.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from paths import REPO

LISTEN_RE = re.compile(r"^explaind listening on (127\.0\.0\.1:(\d+))$")
START_TIMEOUT_S = 60.0
CLK_TCK = os.sysconf("SC_CLK_TCK")


def binary() -> Path:
    """`$EXPLAIND_BIN` or target/debug/explaind (as conftest's `server` fixture)."""
    env = os.environ.get("EXPLAIND_BIN")
    return Path(env).resolve() if env else REPO / "target" / "debug" / "explaind"


def keygen(key_path: Path) -> Path:
    """`explaind audit keygen KEY`; returns the public key's path (KEY.pub)."""
    res = subprocess.run([str(binary()), "audit", "keygen", str(key_path)],
                         capture_output=True, text=True, timeout=60)
    if res.returncode != 0:
        raise RuntimeError(f"explaind audit keygen failed ({res.returncode}):\n{res.stderr}")
    return key_path.with_name(key_path.name + ".pub")


def verify(audit_dir: Path, public_key: Path) -> subprocess.CompletedProcess:
    """`explaind audit verify --public-key PUB DIR`."""
    return subprocess.run(
        [str(binary()), "audit", "verify", "--public-key", str(public_key), str(audit_dir)],
        capture_output=True, text=True, timeout=120,
    )


@dataclass
class Daemon:
    cmd: list[str]
    process: subprocess.Popen
    address: str
    port: int
    stderr_path: Path
    stdout_lines: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""

    def stderr_tail(self, n: int = 40) -> str:
        return "\n".join(self.stderr_text().splitlines()[-n:])

    def proc_status(self) -> dict[str, int]:
        """The Vm* lines of /proc/<pid>/status, in bytes ({} when the process is gone)."""
        out = {}
        try:
            text = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return out
        for line in text.splitlines():
            key, _, value = line.partition(":")
            parts = value.split()
            if key.startswith("Vm") and len(parts) == 2 and parts[1] == "kB":
                out[key] = int(parts[0]) * 1024
        return out

    def rss(self) -> int:
        return self.proc_status().get("VmRSS", 0)

    def cpu_seconds(self) -> float:
        """User + system CPU time of every thread of the process so far, in seconds."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
        return (utime + stime) / CLK_TCK

    def cpu_over(self, window_s: float) -> float:
        """CPU seconds the daemon uses during the next `window_s` seconds of wall time."""
        before = self.cpu_seconds()
        time.sleep(window_s)
        return self.cpu_seconds() - before

    def threads(self) -> int:
        try:
            return len(os.listdir(f"/proc/{self.pid}/task"))
        except OSError:
            return 0

    def kill9(self) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def interrupt(self) -> int | None:
        """SIGINT (explaind's graceful shutdown: it signs the audit log's last records), then
        SIGKILL after 15 s; the exit status."""
        if self.alive():
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        return self.process.returncode

    def stop(self) -> int | None:
        """SIGTERM, then SIGKILL after 15 s; the exit status."""
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)
        return self.process.returncode


def start(args: list[str], log_dir: Path, *, address_space_bytes: int | None = None,
          env: dict | None = None) -> Daemon:
    """Starts `explaind ARGS` (ARGS after the binary, e.g. ["serve", "--listen", ...]).

    With `address_space_bytes`, under `prlimit --as=N` (RLIMIT_AS; prlimit sets it and execs
    explaind, so the child's pid is the daemon's): an allocation past the cap fails inside the
    daemon (Rust aborts), which the tests see as a dead daemon, not a machine out of memory.
    """
    cmd = [str(binary()), *args]
    if address_space_bytes is not None:
        prlimit = shutil.which("prlimit")
        if prlimit is None:
            raise RuntimeError("prlimit (util-linux) not found; it caps the daemon's memory")
        cmd = [prlimit, f"--as={address_space_bytes}", "--", *cmd]
    log_dir.mkdir(parents=True, exist_ok=True)
    stderr_path = log_dir / "stderr.log"
    stderr_f = open(stderr_path, "ab")
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr_f,
        text=True, bufsize=1, env=env,
    )
    stderr_f.close()  # the child holds its own descriptor
    lines: queue.Queue = queue.Queue()
    stdout_lines: list[str] = []

    def pump():  # keeps draining stdout so the daemon never blocks on a full pipe
        for line in proc.stdout:
            line = line.rstrip("\n")
            stdout_lines.append(line)
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, name=f"explaind-stdout-{proc.pid}", daemon=True).start()

    def fail(why: str):
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        tail = "\n".join(stderr_path.read_text(errors="replace").splitlines()[-40:])
        raise RuntimeError(f"{why}\ncommand: {' '.join(cmd)}\nexit: {proc.returncode}\n"
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
    return Daemon(cmd=cmd, process=proc, address=m.group(1), port=int(m.group(2)),
                  stderr_path=stderr_path, stdout_lines=stdout_lines)


# --------------------------------------------------------------------------------------------
# The audit log (format: crates/audit/src/lib.rs)
# --------------------------------------------------------------------------------------------

ROTATED_RE = re.compile(r"^audit\.log\.(\d{8})$")


def audit_files(audit_dir: Path) -> list[Path]:
    """The chain's files, oldest first: audit.log.00000001, ..., then audit.log."""
    rotated = sorted((p for p in audit_dir.iterdir() if ROTATED_RE.match(p.name)),
                     key=lambda p: int(ROTATED_RE.match(p.name).group(1)))
    active = audit_dir / "audit.log"
    return rotated + ([active] if active.exists() else [])


def audit_records(audit_dir: Path) -> tuple[list[dict], int]:
    """Every complete record ("kind":"record") in the log, in order, and the number of lines
    skipped: a last line without its newline (a write cut short by kill -9) or one that is not
    JSON. Torn tails moved aside (audit.log.torn-*) are not part of the chain and not read."""
    records, skipped = [], 0
    for path in audit_files(audit_dir):
        data = path.read_bytes()
        lines = data.split(b"\n")
        # The element after the last "\n" is b"" for a complete file, else a torn line.
        if lines and lines[-1] != b"":
            skipped += 1
        for raw in lines[:-1]:
            if not raw:
                continue
            try:
                entry = json.loads(raw)
            except ValueError:
                skipped += 1
                continue
            if entry.get("kind") == "record":
                records.append(entry)
    return records, skipped
