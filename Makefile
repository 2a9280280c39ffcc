# signalbox — see README.md.
GO      ?= go
BIN     := bin/signalbox
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
STATICCHECK_VERSION := v0.8.2

.PHONY: all build run test bench lint fmt clean

all: build

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/signalbox

# Runs the gateway with the demo config in examples/demo and a receiver that
# prints what it gets. See scripts/run-demo.sh.
run: build
	./scripts/run-demo.sh

test:
	$(GO) test -race -count=1 -timeout 12m ./...

# Load test against a private redis-server; prints ratios to raw XADD.
bench: build
	./scripts/bench.sh

lint:
	$(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf bin data
