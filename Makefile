# baton's build. `make help` lists the targets.
export PATH := $(PATH):/usr/local/go/bin
GO       ?= go
PORT     ?= 8080
WORKERS  ?=
# A hang guard per package, not the suite's budget (docs/testing.md: under 20
# minutes on a fresh clone of a 2-core machine): a loaded machine must not
# turn a slow run into a panic.
TESTTIME ?= 25m
FUZZTIME ?= 30s
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: help deps build run test check fmt vet staticcheck fuzz bench bench-go clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-z-]+:.*## / {printf "  make %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

deps: ## install missing prerequisites (apt-get; idempotent)
	@contrib/dev/install-deps.sh

build: ## build bin/baton and bin/hello
	CGO_ENABLED=0 $(GO) build -o bin/baton ./cmd/baton
	$(GO) build -o bin/hello ./examples/hello

run: deps build ## start baton with the demo worker on 127.0.0.1:$(PORT), then say what to try
	@exec contrib/dev/run.sh $(PORT) $(WORKERS)

# contrib/kubernetes/check is a module of its own (Kubernetes' API types
# stay out of baton's go.mod), so ./... leaves it out: each target names it.
KUBECHECK := contrib/kubernetes/check

test: deps ## run the whole suite with -race (unit, integration, real systemd), then the Kubernetes example's check
	$(GO) test -race -count=1 -timeout $(TESTTIME) ./...
	cd $(KUBECHECK) && $(GO) test -count=1 ./...

fmt: ## fail if gofmt would change a file
	@out=$$(gofmt -l $$(git ls-files '*.go')); [ -z "$$out" ] || { echo "gofmt would change: $$out"; exit 1; }

vet: ## go vet
	$(GO) vet ./...
	cd $(KUBECHECK) && $(GO) vet ./...

staticcheck: ## staticcheck (fetched through the Go module proxy)
	$(GO) run $(STATICCHECK) ./...
	cd $(KUBECHECK) && $(GO) run $(STATICCHECK) ./...

check: fmt vet staticcheck test ## gofmt, vet, staticcheck and the tests with -race

# A short minimization per new input (default 60s) keeps a 30s run fuzzing.
fuzz: ## run each fuzz target for FUZZTIME (default 30s): control requests, notify datagrams, config files, round-robin's lines
	$(GO) test -run '^$$' -fuzz '^FuzzParseRequest$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 2s ./internal/supervisor
	$(GO) test -run '^$$' -fuzz '^FuzzParseNotify$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 2s ./internal/systemd
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 2s ./internal/config
	$(GO) test -run '^$$' -fuzz '^FuzzParseConn$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 2s ./internal/wire
	$(GO) test -run '^$$' -fuzz '^FuzzParseAnswer$$' -fuzztime $(FUZZTIME) -fuzzminimizetime 2s ./internal/wire

bench: deps build ## baton side by side with pm2, Node's cluster module, nginx and HAProxy, about 9 minutes: bench/results/ (BENCHMARKS.md)
	@contrib/dev/bench-deps.sh
	$(GO) run ./bench -out bench/results

bench-go: deps ## the Go benchmarks: reload and upgrade latency, notify flood (BENCHMARKS.md)
	$(GO) test -run '^$$' -bench . -benchtime 1x -timeout 30m ./...

clean: ## remove build output
	rm -rf bin
