# Two commands on a fresh machine (see README):
#   make demo   install and run the main job on embedded defaults
#   make test   install everything and run every test and check
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev

.PHONY: demo test install install-dev check rust-test py-test fuzz bench clean sample kafka-libs kafka kube-bins kube

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# The extension is rebuilt by maturin (release profile) whenever this runs.
install: $(BIN)/python
	$(BIN)/pip install -q .

install-dev: $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'

demo: install
	$(BIN)/canary-stream demo

test: install-dev check rust-test py-test fuzz
	@echo "all checks and tests passed"

check:
	cargo fmt --all -- --check
	cargo clippy --all-targets -- -D warnings
	cargo clippy --all-targets --features python -- -D warnings
	$(BIN)/ruff check python tests benches infra
	$(BIN)/ruff format --check python tests benches infra
	$(BIN)/mypy --strict python/canary_stream
	$(BIN)/mypy --strict infra/kafka_broker.py infra/kube_apiserver.py

rust-test:
	cargo test

# The benchmarks run once each (timing off) so they cannot rot unnoticed.
py-test:
	$(BIN)/pytest -q
	BENCH_LINES=20000 BENCH_ROWS=200000 $(BIN)/pytest -q benches

# Short fuzzing runs: atheris through the bindings (mutation from generated seeds) and on the
# HTTP ingest server's request parsing (tests/fuzz_http_wire.py), and
# coverage-guided libFuzzer on the Rust parsers and pipeline with cargo-fuzz when a nightly
# toolchain is present (cargo-fuzz needs one; it is installed from crates.io on first use).
FUZZ_SECONDS ?= 30
fuzz:
	$(BIN)/python tests/fuzz_parsers.py -atheris_runs=20000
	$(BIN)/python tests/fuzz_http_wire.py -atheris_runs=20000
	@if rustup run nightly rustc --version >/dev/null 2>&1; then \
		command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked; \
		for t in parsers pipeline; do \
			cargo +nightly fuzz run --fuzz-dir fuzz $$t -- -max_total_time=$(FUZZ_SECONDS) -max_len=4096 || exit 1; \
		done; \
	else \
		echo "SKIPPED cargo-fuzz: no nightly toolchain (the atheris run above still fuzzed every parser)"; \
	fi

bench: install-dev
	mkdir -p .benchmarks
	$(BIN)/pytest benches -q --benchmark-enable --benchmark-only --benchmark-columns=min,median,ops \
		--benchmark-json=.benchmarks/latest.json
	$(BIN)/python benches/report.py .benchmarks/latest.json

sample: install-dev
	$(BIN)/python -m canary_stream.sample

clean:
	rm -rf $(VENV) target

# A real Kafka 4.x broker (KRaft, one node on 127.0.0.1) from Maven Central jars, cached under
# ~/.cache/canary-stream (the tests build it on first use; these targets are for local use).
kafka-libs: $(BIN)/python
	$(BIN)/python infra/kafka_broker.py build

kafka: kafka-libs
	$(BIN)/python infra/kafka_broker.py start --port 9092

# A real kube-apiserver + etcd (no kubelet) built from the Go module proxy by infra/kube/build.sh,
# cached under ~/.cache/canary-stream/kube-<version> (the tests build it on first use, 15-25 min once).
kube-bins: $(BIN)/python
	$(BIN)/python infra/kube_apiserver.py build

kube: kube-bins
	$(BIN)/python infra/kube_apiserver.py start
