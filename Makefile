# The two commands a newcomer needs (see README.md):
#   make serve   start the daemon with the bundled demo models and plugins (gRPC 127.0.0.1:50051,
#                the Open Inference Protocol's HTTP routes 127.0.0.1:8000)
#   make test    run the whole test suite (house style: rustfmt and clippy; Rust, C plugins,
#                Python gRPC client)
# Both set up what they need first: scripts/setup/setup.sh installs the pinned Python packages and the
# ONNX Runtime library (checksums verified); cargo builds the daemon and the plugins.

CARGO ?= cargo
LISTEN ?= 127.0.0.1:50051
HTTP_LISTEN ?= 127.0.0.1:8000

.PHONY: setup build serve test

setup:
	scripts/setup/setup.sh

build: setup
	$(CARGO) build --workspace

serve: build
	target/debug/explaind serve --listen $(LISTEN) --http-listen $(HTTP_LISTEN)

test: build
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) test --workspace
	.venv/bin/python -m pytest tests/python -q
