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

# The Kubernetes target's tests run a real kube-apiserver and etcd, built from
# the separate module in tools/kubetest (a few minutes the first time, then
# cached by Go's build cache).
KUBETEST_BIN := $(CURDIR)/bin/kubetest
KUBETEST_SRC := tools/kubetest/go.mod tools/kubetest/go.sum $(wildcard tools/kubetest/cmd/*/main.go)

$(KUBETEST_BIN)/kube-apiserver: $(KUBETEST_SRC)
	cd tools/kubetest && CGO_ENABLED=0 GOFLAGS= $(GO) build -trimpath -o $(KUBETEST_BIN)/ ./cmd/etcd ./cmd/kube-apiserver

test: $(KUBETEST_BIN)/kube-apiserver
	SIGNALBOX_KUBETEST_BIN=$(KUBETEST_BIN) $(GO) test -race -count=1 -timeout 12m ./...

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
