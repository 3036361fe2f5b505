# portcullis — developer entry points. `make demo` and `make test` work on a fresh Debian
# machine: they install what they need (system packages, npm fixtures) first.

SHELL := /bin/bash
CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES_BUILD := cmake build-essential
APT_PACKAGES_TEST := redis-server redis-tools chromium
APT_PACKAGES_BENCH := wrk nginx-light

.PHONY: all build demo test test-deps demo-deps build-deps lint fmt bench clean

all: build

# Installs the Debian packages that are missing (apt-get update only when something is).
define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi
endef

build-deps:
	$(call apt_install,$(APT_PACKAGES_BUILD))

tests/fixtures/op/node_modules: tests/fixtures/op/package-lock.json
	cd tests/fixtures/op && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

tests/e2e/node_modules: tests/e2e/package-lock.json
	cd tests/e2e && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

demo-deps: build-deps tests/fixtures/op/node_modules

test-deps: build-deps tests/fixtures/op/node_modules tests/e2e/node_modules
	$(call apt_install,$(APT_PACKAGES_TEST))

build: build-deps
	$(CARGO) build

## Runs portcullis end to end: the local OP, a demo SPA + API, the memory session store.
demo: demo-deps build
	./deploy/demo/run.sh

## Runs the whole test suite (unit, integration against real redis-server, the oidc-provider
## fixture and headless Chromium).
test: test-deps
	$(CARGO) build --all-targets
	$(CARGO) test --all-targets -- --test-threads=4

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

## Throughput and latency of an authenticated GET through portcullis against the same upstream
## direct; records numbers, asserts nothing.
bench: build-deps tests/fixtures/op/node_modules
	$(call apt_install,$(APT_PACKAGES_TEST) $(APT_PACKAGES_BENCH))
	$(CARGO) build --release
	./deploy/bench/run.sh

clean:
	$(CARGO) clean
