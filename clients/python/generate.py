#!/usr/bin/env python3
"""Regenerates the gRPC stubs inside the package from proto/explaind/v1/explaind.proto.

    .venv/bin/python clients/python/generate.py            # rewrite src/explaind_py/_proto/
    .venv/bin/python clients/python/generate.py --out DIR  # write them to DIR instead

Run it after every change to the proto; tests/python/test_client_package.py fails while the
committed stubs differ from what this writes. It needs grpcio-tools (pinned in
scripts/setup/requirements.txt, so the output depends only on the proto and that pin).

protoc names the module after the proto's path (explaind.v1.explaind_pb2), and
explaind_pb2_grpc.py imports it by that absolute name. The stubs live in
explaind_py._proto instead, so that import is rewritten as a relative one. The descriptor keeps
its file name, explaind/v1/explaind.proto, so the package and stubs generated elsewhere from
the same proto can share one process.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO_DIR = HERE.parents[1] / "proto"
PROTO = "explaind/v1/explaind.proto"
OUT = HERE / "src" / "explaind_py" / "_proto"
FILES = ("explaind_pb2.py", "explaind_pb2.pyi", "explaind_pb2_grpc.py")
ABSOLUTE_IMPORT = "from explaind.v1 import explaind_pb2 as"
RELATIVE_IMPORT = "from . import explaind_pb2 as"


def generate(out: Path) -> list[Path]:
    """Writes the three stub files to `out` (created if missing); returns their paths."""
    import grpc_tools

    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable, "-m", "grpc_tools.protoc",
            f"-I{PROTO_DIR}", f"-I{well_known}",
            f"--python_out={tmp}", f"--pyi_out={tmp}", f"--grpc_python_out={tmp}",
            PROTO,
        ]
        res = subprocess.run(cmd, cwd=PROTO_DIR, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"grpc_tools.protoc failed ({res.returncode}):\n{res.stderr}")
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for name in FILES:
            text = (Path(tmp) / "explaind" / "v1" / name).read_text()
            if name.endswith("_grpc.py"):
                if text.count(ABSOLUTE_IMPORT) != 1:
                    raise RuntimeError(f"{name}: expected one line starting {ABSOLUTE_IMPORT!r}")
                text = text.replace(ABSOLUTE_IMPORT, RELATIVE_IMPORT)
            path = out / name
            path.write_text(text)
            written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help=f"output directory (default {OUT})")
    args = parser.parse_args()
    for path in generate(args.out):
        print(path)


if __name__ == "__main__":
    main()
