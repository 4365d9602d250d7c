#!/usr/bin/env bash
# Fetches the CUDA build of ONNX Runtime (scripts/setup/requirements-gpu.txt, hash-checked) and puts its
# libraries in .ort-gpu/, idempotently:
#   .ort-gpu/libonnxruntime.so                      the library to load (ORT_DYLIB_PATH, --ort-lib)
#   .ort-gpu/libonnxruntime_providers_shared.so     loaded by it, from the same folder
#   .ort-gpu/libonnxruntime_providers_cuda.so       the CUDA execution provider (284 MB)
# CUDA 13 and cuDNN 9 must be on the library path already (see requirements-gpu.txt).
# Usage: scripts/setup/setup-gpu.sh [WHEEL]   (WHEEL: an already downloaded onnxruntime-gpu wheel)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
REQ="scripts/setup/requirements-gpu.txt"
DEST=".ort-gpu"

wheel="${1:-}"
if [[ -z "$wheel" ]]; then
  version="$(sed -n 's/^onnxruntime-gpu==\([^ \\]*\).*/\1/p' "$REQ" | head -n1)"
  if [[ -f "$DEST/.version" && "$(cat "$DEST/.version")" == "$version" ]]; then
    echo "ONNX Runtime $version (CUDA) library: $ROOT/$DEST/libonnxruntime.so"
    exit 0
  fi
  download="$(mktemp -d)"
  trap 'rm -rf "$download"' EXIT
  # The daemon loads the C libraries only, not the Python module, so any one wheel serves:
  # always the one whose hash requirements-gpu.txt pins, whatever this machine's Python is.
  PIP_DISABLE_PIP_VERSION_CHECK=1 "$PY" -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64 \
    --require-hashes -r "$REQ" -d "$download"
  wheel="$(ls "$download"/onnxruntime_gpu-*.whl)"
fi
version="$(basename "$wheel" | sed -n 's/^onnxruntime_gpu-\([^-]*\)-.*/\1/p')"

rm -rf "$DEST.tmp"
mkdir -p "$DEST.tmp"
"$PY" - "$wheel" "$DEST.tmp" "$version" <<'PYEOF'
import sys, zipfile
wheel, dest, version = sys.argv[1:]
wanted = {
    f"onnxruntime/capi/libonnxruntime.so.{version}": "libonnxruntime.so",
    "onnxruntime/capi/libonnxruntime_providers_shared.so": "libonnxruntime_providers_shared.so",
    "onnxruntime/capi/libonnxruntime_providers_cuda.so": "libonnxruntime_providers_cuda.so",
}
with zipfile.ZipFile(wheel) as z:
    for member, name in wanted.items():
        with z.open(member) as src, open(f"{dest}/{name}", "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
PYEOF
echo "$version" >"$DEST.tmp/.version"
rm -rf "$DEST"
mv "$DEST.tmp" "$DEST"
echo "ONNX Runtime $version (CUDA) library: $ROOT/$DEST/libonnxruntime.so"
