# portbridge — the two commands that matter: `make dev` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X github.com/portbridge/portbridge/sidecar/version.Version=$(VERSION) -X github.com/portbridge/portbridge/sidecar/version.Commit=$(COMMIT)
# better-sqlite3 (the real Backstage test peer) compiles from source against these headers.
export npm_config_nodedir ?= /usr
# The contract as it landed: `buf breaking` compares the proto against it.
BREAKING_AGAINST ?= bf27eca8d0a26a82a7003492cd1c8ca61af9c376

.PHONY: help build generate check-generated lint breaking test test-go test-short fuzz test-module test-deploy bench bench-scale dev image clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*## "}{printf "  %-16s %s\n",$$1,$$2}'

build: ## build bin/portbridge
	go build -trimpath -ldflags '$(LDFLAGS)' -o bin/portbridge ./sidecar

generate: ## regenerate Go code from proto/ (buf, local plugins pinned in go.mod)
	go tool buf generate

check-generated: generate ## fail if regenerating changes committed code
	@git diff --exit-code -- proto/ || { echo "generated code is stale: run 'make generate' and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- proto/)" || { git status --porcelain -- proto/; echo "untracked generated files"; exit 1; }

lint: ## gofmt, go vet, staticcheck, buf lint
	@out=$$(gofmt -l $$(git ls-files '*.go')); test -z "$$out" || { echo "gofmt needed:"; echo "$$out"; exit 1; }
	go vet ./...
	go tool staticcheck ./...
	go tool buf lint

breaking: ## buf breaking against the landed contract
	go tool buf breaking --against '.git#ref=$(BREAKING_AGAINST)'

test: check-generated lint breaking test-go fuzz test-module test-deploy ## everything CI runs (real Backstage and jq included)

test-go: ## Go tests, including the real-Backstage and jq differential tests
	go test -count=1 -timeout 25m ./...

test-short: ## Go tests without the real Backstage peer and jq
	go test -short -count=1 ./...

FUZZTIME ?= 10s
fuzz: ## short fixed-time fuzzing: RPC validation, the real server -> state queue -> decode round trip, the mapping config loader
	go test -run='^$$' -fuzz='^FuzzValidate$$' -fuzztime=$(FUZZTIME) ./server
	go test -run='^$$' -fuzz='^FuzzLoad$$' -fuzztime=$(FUZZTIME) ./sidecar/mapping
	go test -run='^$$' -fuzz='^FuzzQueueRoundTrip$$' -fuzztime=$(FUZZTIME) ./sidecar

test-module: ## the Backstage module: npm ci, build, unit tests, the database listing against the real Backstage harness
	test/backstage/install.sh
	cd client/backstage && flock $${TMPDIR:-/tmp}/portbridge-client-backstage-npm.lock sh -c 'npm ci --no-audit --no-fund && npm run build' && npm test

test-deploy: ## render Helm/kustomize and validate against the Kubernetes API types
	go -C deploy test -count=1 ./...

bench: ## benchmarks and the side-by-side table (DESIGN §8)
	go run ./test/bench

bench-scale: ## the bridge alone at 100k and 1M entities: growth table and plots into docs/bench (takes a while)
	go run ./test/bench -scale 100000,1000000 -out docs/bench

dev: build ## the whole flow on this machine, no accounts (builds bin/portbridge first; Ctrl-C ends it with status 0)
	./bin/portbridge dev $(DEV_ARGS)

image: ## multi-arch OCI image with ko into dist/image (no registry, no Docker)
	go -C deploy run ./cmd/image --out ../dist/image --version $(VERSION) --commit $(COMMIT)

clean:
	rm -rf bin dist
