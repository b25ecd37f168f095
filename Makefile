# One Makefile defines what CI runs (.ci/run calls `make test`).
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -ec
GO ?= go
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
# Everything except the namespace lab, which runs separately so its skip or pass is visible.
PKGS = $(shell $(GO) list ./... | grep -v /test/lab)

.PHONY: build demo test test-unit test-lab lint bench fuzz lab-deps clean dist deb image release test-dist

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/ ./agent/cmd/porthole-agent ./relay/cmd/porthole-relay

demo:
	$(GO) run ./internal/demo/cmd/porthole-demo

test: lint test-unit test-lab

test-unit:
	$(GO) test -race -shuffle=on -timeout 10m $(PKGS)
	cd tools/release && $(GO) test -race -shuffle=on -timeout 5m ./...
	$(GO) test -run='^$$' -bench=. -benchtime=1x -timeout 5m ./test/bench/...

# The lab needs root and Debian's miniupnpd-nftables (make lab-deps). -v so that a
# skip says LAB SKIPPED loudly; PORTHOLE_LAB=require (set by .ci/run) turns a skip into a failure.
test-lab:
	@echo "== namespace lab (test/lab) =="
	$(GO) test -race -v -timeout 8m ./test/lab/... 2>&1 | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|LAB SKIPPED|_test.go:'

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) mod tidy -diff
	cd tools/release && $(GO) vet ./... && $(GO) mod tidy -diff

# The figures of the issues, each beside a direct connection measured in the same run:
# real binaries as separate processes; throughput needs iperf3, the UDP buffer figure
# root (it changes net.core.rmem_max/wmem_max for a while and restores them).
# BENCH_ONLY=memory,latency runs some steps only (see test/bench/run.go Steps).
BENCH_ONLY ?=
bench:
	$(GO) run ./test/bench/cmd/benchreport -only '$(BENCH_ONLY)' | tee bench.out

# Every fuzz target for 60 s each (FUZZTIME=10s for a quick pass). Minimizing a new
# input is capped at 5 s: the default 60 s can eat a whole run with no new execs.
FUZZTIME ?= 60s
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg 2>/dev/null | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run='^$$' -fuzz="^$$f\$$" -fuzztime=$(FUZZTIME) -fuzzminimizetime=5s $$pkg || exit 1; \
	  done; done

lab-deps:
	bash test/lab/deps.sh

# Release artifacts under dist/ (tools/release, its own module: nfpm and
# go-containerregistry stay out of the daemons' dependencies). Every file's time
# is the last commit's, so the same commit gives the same archives.
#   dist:  porthole_$(VERSION)_linux_{amd64,arm64,armv7}.tar.gz and SHA256SUMS
#   deb:   porthole_$(VERSION)_{amd64,arm64,armhf}.deb
#   image: porthole-{agent,relay}_$(VERSION)_linux_{amd64,arm64,armv7}.oci.tar
# SHA256SUMS covers every artifact present. ARCH=amd64,arm64 limits the targets.
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
ARCH ?=
RELEASE = SOURCE_DATE_EPOCH=$(SOURCE_DATE_EPOCH) $(GO) run -C tools/release ./cmd/porthole-release \
	-root $(CURDIR) -out $(CURDIR)/dist -version '$(VERSION)' $(if $(ARCH),-arch $(ARCH))
dist:
	$(RELEASE) dist
deb:
	$(RELEASE) deb
image:
	$(RELEASE) image
release:
	$(RELEASE) dist deb image

# CI (.ci/run): build every artifact once, then test them: archives and
# checksums, images (binary runs -version), and as root with PORTHOLE_DEB set,
# dpkg -i / -r / --purge of the package on this machine.
test-dist: release
	cd tools/release && PORTHOLE_DIST=$(CURDIR)/dist PORTHOLE_VERSION='$(VERSION)' \
	  $(GO) test -count=1 -v -timeout 10m -run '^TestArtifact' ./... 2>&1 | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic)|SKIPPED|_test.go:'

clean:
	rm -rf bin bench.out dist
