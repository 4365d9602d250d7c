"""What the benchmark scripts share: gRPC stubs generated from proto/ at run time, and a
release daemon started on a free loopback port."""
from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def generate_stubs() -> None:
    """Compiles proto/ into a temporary directory and puts it on sys.path."""
    from grpc_tools import protoc

    out = Path(tempfile.mkdtemp(prefix="explaind-stubs-"))
    rc = protoc.main(["protoc", f"-I{REPO / 'proto'}", f"--python_out={out}",
                      f"--grpc_python_out={out}", "explaind/v1/explaind.proto"])
    if rc != 0:
        raise SystemExit("protoc failed")
    sys.path.insert(0, str(out))


def start_daemon(*extra: str) -> tuple[subprocess.Popen, str]:
    """Starts target/release/explaind serve (free port; CPU unless `extra` names a `--device`);
    returns the process and its address once it prints its listening line."""
    binary = REPO / "target" / "release" / "explaind"
    if not binary.exists():
        raise SystemExit(f"{binary} is missing: build it with `cargo build --release --workspace`")
    device = [] if "--device" in extra else ["--device", "cpu"]
    proc = subprocess.Popen([str(binary), "serve", "--listen", "127.0.0.1:0", *device, *extra],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline().strip()
    prefix = "explaind listening on "
    if not line.startswith(prefix):
        proc.kill()
        raise SystemExit(f"unexpected first line from the daemon: {line!r}")
    return proc, line[len(prefix):]
