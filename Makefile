# cargo-cache: `make run` starts the proxy, `make test` runs the whole suite.
# Both create the virtualenv (.venv, Python >= 3.12) and install what they need on first use.

HOST    ?= 127.0.0.1
PORT    ?= 8080
PROXIES ?= proxies.yaml
WORKERS ?= $(shell nproc 2>/dev/null || echo 1)
STATUS_PORT ?= 8081
ARGS    ?=
PYTEST_ARGS ?=

VENV    := .venv
PY      := $(VENV)/bin/python
# One stamp per level: `make run` installs what running needs (requirements.txt), `make test` adds the test tools.
STAMP   := $(VENV)/.installed-run
TEST_STAMP := $(VENV)/.installed-test

LOCKFILE ?=
BUNDLE  ?=
TOOLCHAIN ?=
TOOLCHAIN_FILE ?=
TARGETS ?=
PROFILE ?=
COMPONENTS ?=
CLI     := PYTHONPATH=addon $(PY) -m cratecache --proxies $(abspath $(PROXIES))

.PHONY: run test test-deps ca clean help stage export import audit cache-ls cache-stats cache-verify cache-purge seaweedfs

help:
	@echo "make run   [HOST=127.0.0.1] [PORT=8080] [WORKERS=nproc] [STATUS_PORT=8081] [PROXIES=proxies.yaml] [ARGS=...]"
	@echo "                                                                        start the proxy"
	@echo "make test  [PYTEST_ARGS=...]                                          run the test suite"
	@echo "make bench [BENCH_ARGS=--quick]                                       benchmarks -> BENCHMARKS.md (about 1 h)"
	@echo "make ca                                                               create the CA and Cargo's CA bundle"
	@echo "make stage LOCKFILE='a/Cargo.lock dir/'  fetch what the lockfiles need into the cache"
	@echo "make stage TOOLCHAIN='stable 1.94.0' [TARGETS='x86_64-unknown-linux-gnu wasm32-unknown-unknown'] [PROFILE=minimal]"
	@echo "           [COMPONENTS='clippy rust-src'] | TOOLCHAIN_FILE=rust-toolchain.toml   stage rustup toolchains"
	@echo "make export BUNDLE=file [LOCKFILE=...]   write the cache (or a lockfile's subset) to a bundle"
	@echo "make import BUNDLE=file                  verify a bundle and load it into the cache"
	@echo "make audit LOCKFILE='a/Cargo.lock dir/'  list locked crates the policy would hide or deny (exit 1: denied)"
	@echo "make cache-ls | cache-stats | cache-purge ARGS='--crate NAME | --older-than 30d | --all'"
	@echo "make cache-verify [ARGS=--repair]        re-hash every cached entry (exit 1 if any is bad); --repair evicts them"
	@echo "make seaweedfs [S3_PORT=8333]            a local S3 server to try the s3 backend (fleet)"
	@echo "all of them: $(CLI) --help"

$(STAMP): requirements.txt
	@test -x $(PY) || "$$(scripts/find-python)" -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $@

$(TEST_STAMP): $(STAMP) requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

ca: $(STAMP)
	@PYTHONPATH=addon $(PY) -m cratecache.operations.ca certs

MITMDUMP_ARGS = -s addon/cargo_cache.py --listen-host $(HOST) --set confdir=$(CURDIR)/certs \
  --set cargo_proxies=$(abspath $(PROXIES)) --set flow_detail=0

# WORKERS=1: one mitmdump; more: that many sharing PORT (SO_REUSEPORT), worker i's status page on STATUS_PORT+i.
# The launcher passes each option once, ARGS winning (mitmproxy drops all of an addon's options given twice),
# and refuses a PORT or STATUS_PORT already in use.
run: $(STAMP) ca
	@PYTHONPATH=addon exec $(PY) -m cratecache.operations.workers --workers $(WORKERS) --port $(PORT) --status-port $(STATUS_PORT) \
	  -- $(MITMDUMP_ARGS) $(ARGS)

test-deps:
	@scripts/install-test-deps

test: $(TEST_STAMP) test-deps
	$(PY) -m pytest tests $(PYTEST_ARGS)

# Never part of `make test`: runs every scenario of bench/run.py on loopback and writes BENCHMARKS.md.
.PHONY: bench
BENCH_ARGS ?=
bench: $(TEST_STAMP) test-deps
	$(PY) -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	@bench/install-deps
	$(PY) -m bench.run $(BENCH_ARGS)

stage: $(STAMP)
	@test -n "$(LOCKFILE)$(TOOLCHAIN)$(TOOLCHAIN_FILE)" || { echo "usage: make stage LOCKFILE=path/to/Cargo.lock [LOCKFILE='a b dir/'] | TOOLCHAIN='stable 1.94.0' [TARGETS=...] [PROFILE=minimal] [COMPONENTS=...] | TOOLCHAIN_FILE=rust-toolchain.toml"; exit 2; }
	@$(CLI) stage $(LOCKFILE) $(foreach t,$(TOOLCHAIN),--toolchain $(t)) $(foreach f,$(TOOLCHAIN_FILE),--toolchain-file $(f)) \
	  $(foreach t,$(TARGETS),--target $(t)) $(if $(PROFILE),--profile $(PROFILE)) $(foreach c,$(COMPONENTS),--component $(c)) $(ARGS)

export: $(STAMP)
	@test -n "$(BUNDLE)" || { echo "usage: make export BUNDLE=file [LOCKFILE=...]"; exit 2; }
	@$(CLI) export $(BUNDLE) $(foreach l,$(LOCKFILE),--lockfile $(l)) $(ARGS)

import: $(STAMP)
	@test -n "$(BUNDLE)" || { echo "usage: make import BUNDLE=file"; exit 2; }
	@$(CLI) import $(BUNDLE)

audit: $(STAMP)
	@test -n "$(LOCKFILE)" || { echo "usage: make audit LOCKFILE=path/to/Cargo.lock [LOCKFILE='a b dir/']"; exit 2; }
	@$(CLI) audit $(LOCKFILE) $(ARGS)

# The commands' own output only (no echo of the command line): `make cache-ls ARGS=--json | jq` works.
cache-ls: $(STAMP)
	@$(CLI) ls $(ARGS)

cache-stats: $(STAMP)
	@$(CLI) stats $(ARGS)

cache-verify: $(STAMP)
	@$(CLI) verify $(ARGS)

cache-purge: $(STAMP)
	@test -n "$(ARGS)" || { echo "usage: make cache-purge ARGS='--crate NAME | --older-than 30d | --all'"; exit 2; }
	@$(CLI) purge $(ARGS)

# A local S3 server for trying the s3 backend (SeaweedFS from requirements-dev.txt), on 127.0.0.1 only.
S3_PORT ?= 8333
seaweedfs: $(TEST_STAMP)
	@echo "S3 on http://127.0.0.1:$(S3_PORT), bucket cargo-cache, keys from S3_KEY/S3_SECRET (data in .seaweedfs/)"
	@mkdir -p .seaweedfs
	AWS_ACCESS_KEY_ID="$${S3_KEY:-dev-key}" AWS_SECRET_ACCESS_KEY="$${S3_SECRET:-dev-secret}" \
	  $(VENV)/bin/weed mini -dir=.seaweedfs -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.port=$(S3_PORT) \
	  -admin.ui=false -webdav=false -bucket=cargo-cache

clean:
	rm -rf $(VENV) .pytest_cache
