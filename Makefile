# phxnats: Phoenix Channels on NATS. `make run` starts the whole chat on
# http://localhost:4000; `make test` runs every test. Both install what they
# need (Go modules, npm packages) on a fresh machine.

MODULES := proto svckit authsvc roomsvc gateway allinone chatctl loadtest faults
GO      ?= go
NPM     ?= npm
BIN     := bin
# Extra flags for go test, e.g. make test GOTESTFLAGS=-v
GOTESTFLAGS ?=

.PHONY: all run test build lint fmt assets e2e-deps browser-deps fuzz bench clean cluster faults

all: build

## run: the whole system in one process (embedded NATS + JetStream, authsvc, roomsvc, gateway) on :4000
run: assets
	$(GO) run ./allinone $(ARGS)

## assets: install phoenix.js for the chat page from npm (gateway/web/node_modules)
assets: gateway/web/node_modules/.package-lock.json

gateway/web/node_modules/.package-lock.json: gateway/web/package.json gateway/web/package-lock.json
	cd gateway/web && $(NPM) ci --no-audit --no-fund

## e2e-deps: install the phoenix.js, ws and playwright-core packages the end-to-end tests drive
e2e-deps: e2e/node_modules/.package-lock.json

e2e/node_modules/.package-lock.json: e2e/package.json e2e/package-lock.json
	cd e2e && $(NPM) ci --no-audit --no-fund

## browser-deps: install Debian's chromium for the browser test (never a downloaded browser)
CHROMIUM := /usr/bin/chromium
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser-deps: $(CHROMIUM)

$(CHROMIUM):
	$(SUDO) apt-get update
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium

## test: lint, then every module's tests (unit, integration on embedded NATS, phoenix.js and Chromium end to end)
test: assets e2e-deps browser-deps lint
	@set -e; for m in $(MODULES); do \
		echo "== go test $$m"; \
		(cd $$m && $(GO) test -race -count=1 -timeout 10m $(GOTESTFLAGS) ./...); \
	done

## build: one binary per service, and chatctl, in bin/
build:
	@mkdir -p $(BIN)
	cd allinone && $(GO) build -o ../$(BIN)/chat .
	cd gateway && $(GO) build -o ../$(BIN)/gateway ./cmd/gateway
	cd roomsvc && $(GO) build -o ../$(BIN)/roomsvc ./cmd/roomsvc
	cd authsvc && $(GO) build -o ../$(BIN)/authsvc ./cmd/authsvc
	cd chatctl && $(GO) build -o ../$(BIN)/chatctl .
	# nats-server itself, from the module the one-process default embeds
	cd allinone && $(GO) build -o ../$(BIN)/nats-server github.com/nats-io/nats-server/v2

## lint: gofmt and go vet on every module
lint:
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	@set -e; for m in $(MODULES); do (cd $$m && $(GO) vet ./...); done

fmt:
	gofmt -w $(MODULES)

## fuzz: run every fuzz target for FUZZTIME each (default 10s)
FUZZTIME ?= 10s
fuzz:
	@set -e; for m in $(MODULES); do \
		(cd $$m && for pkg in $$($(GO) list ./...); do \
			for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
				echo "== fuzz $$pkg $$f"; \
				$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
			done; \
		done); \
	done

## cluster: the split deployment as real processes: 3 NATS nodes (JetStream), gateways on :4001 and :4002, 2 roomsvc, 2 authsvc; Ctrl-C stops them
cluster: build assets
	bash deployments/local/cluster.sh

## faults: the fault tests alone, verbose (kill a NATS node, kill a roomsvc, drain a gateway under phoenix.js, restart the one-process chat)
faults: e2e-deps
	cd faults && $(GO) test -count=1 -v -timeout 5m $(GOTESTFLAGS) ./...

## bench: Go benchmarks of the hot paths, then a quick load suite (a few minutes) against a fresh allinone and the baseline server
bench:
	@set -e; for m in $(MODULES); do (cd $$m && $(GO) test -run '^$$' -bench . -benchmem ./...); done
	GO=$(GO) bash loadtest/bench.sh

clean:
	rm -rf $(BIN)
