# cargo-cache: `make run` starts the proxy, `make test` runs the whole suite.
# Both create the virtualenv (.venv, Python >= 3.12) and install what they need on first use.

HOST    ?= 127.0.0.1
PORT    ?= 8080
PROXIES ?= proxies.yaml
ARGS    ?=
PYTEST_ARGS ?=

VENV    := .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed

.PHONY: run test test-deps ca clean help

help:
	@echo "make run   [HOST=127.0.0.1] [PORT=8080] [PROXIES=proxies.yaml] [ARGS=...]  start the proxy"
	@echo "make test  [PYTEST_ARGS=...]                                          run the test suite"
	@echo "make ca                                                               create the CA and Cargo's CA bundle"

$(STAMP): requirements.txt requirements-dev.txt
	@test -x $(PY) || "$$(scripts/find-python)" -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

ca: $(STAMP)
	$(PY) scripts/ca_bundle.py certs

run: $(STAMP) ca
	$(VENV)/bin/mitmdump -s addon/cargo_cache.py \
	  --listen-host $(HOST) --listen-port $(PORT) \
	  --set confdir=$(CURDIR)/certs \
	  --set cargo_proxies=$(abspath $(PROXIES)) \
	  --set flow_detail=0 $(ARGS)

test-deps:
	@scripts/install-test-deps

test: $(STAMP) test-deps
	$(PY) -m pytest tests $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
