# workflow_runs_exporter — build, test and lint.
#
#   make build   the binary, version stamped from git
#   make test    every test of both Go modules (the exporter and deploy/):
#                unit, end-to-end, fuzzing, deploy kit, real Prometheus
#                (installs promtool, prometheus and helm itself)
#   make lint    go vet + staticcheck, both modules
#   make bench   the benchmarks of the README's performance section
#   make docker  the container image $(IMAGE):$(VERSION) (needs a Docker engine)

GO        ?= go
BINARY    := workflow_runs_exporter
PKG       := ./cmd/workflow_runs_exporter
# VERSION is the one source of the release version: the binary's version,
# the image tag, the chart's appVersion and the kustomize image tag (a test
# in deploy/ keeps them equal; the release workflow refuses a git tag that
# is not v$(VERSION)). The revision tells builds of one version apart.
VERSION   ?= $(shell cat VERSION)
IMAGE     ?= ghcr.io/workflow-runs-exporter/workflow_runs_exporter
REVISION  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
BRANCH    ?= $(shell git rev-parse --abbrev-ref HEAD 2>/dev/null || echo unknown)
BUILDDATE ?= $(shell date -u +%Y%m%d-%H:%M:%S)
VERSIONPKG := github.com/prometheus/common/version
LDFLAGS   := -s -w -X $(VERSIONPKG).Version=$(VERSION) -X $(VERSIONPKG).Revision=$(REVISION) \
             -X $(VERSIONPKG).Branch=$(BRANCH) -X $(VERSIONPKG).BuildUser=make -X $(VERSIONPKG).BuildDate=$(BUILDDATE)
FUZZTIME  ?= 5s
STATICCHECK_VERSION := v0.8.2
HELM_VERSION := v3.22.0

# Tools built from the Go module proxy land here, not in the user's GOPATH.
TOOLS_BIN := $(CURDIR)/.build/bin
export PATH := $(TOOLS_BIN):$(PATH)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all build test test-go fuzz lint bench tools docker clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BINARY) $(PKG)

# prometheus and promtool from Debian's prometheus package; helm built from
# the Go module proxy into .build/bin.
tools:
	@command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1 || { \
		echo ">> installing prometheus and promtool (Debian package prometheus)"; \
		$(SUDO) apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
	@command -v helm >/dev/null 2>&1 || { \
		echo ">> building helm $(HELM_VERSION) from the Go module proxy"; \
		GOBIN=$(TOOLS_BIN) $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION); }
	@promtool --version | head -n 1
	@helm version --short

# deploy/ is a Go module of its own (Kubernetes and kustomize packages stay
# out of the exporter's dependencies): `go test ./...` at the top does not
# reach it, so every target runs both.
test: tools
	$(GO) vet ./...
	$(GO) test -race -count=1 ./...
	cd deploy && $(GO) vet ./... && $(GO) run ./cmd/genrules -check && $(GO) test -race -count=1 ./...
	$(MAKE) fuzz

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeRun$$' -fuzztime $(FUZZTIME) ./internal/api
	$(GO) test -run '^$$' -fuzz '^FuzzExposition$$' -fuzztime $(FUZZTIME) ./collector
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./internal/config
	$(GO) test -run '^$$' -fuzz '^FuzzDecodeState$$' -fuzztime $(FUZZTIME) ./internal/statestore
	$(GO) test -run '^$$' -fuzz '^FuzzStateRoundTrip$$' -fuzztime $(FUZZTIME) ./internal/statestore

lint:
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...
	cd deploy && $(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem ./collector ./internal/api ./internal/poller ./internal/statestore
	$(GO) test -run '^$$' -bench . -benchtime 1x ./cmd/workflow_runs_exporter

# The image for this machine's platform, tagged as the chart and the
# manifests expect it. The release workflow builds amd64 and arm64 from the
# same Dockerfile. Load it into a cluster: README "Deployment".
docker:
	docker build --build-arg VERSION=$(VERSION) --build-arg REVISION=$(REVISION) \
		--build-arg BRANCH=$(BRANCH) --build-arg BUILDDATE=$(BUILDDATE) -t $(IMAGE):$(VERSION) .

clean:
	rm -rf $(BINARY) .build
