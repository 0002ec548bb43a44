# dataplane: every target installs what it needs, so each works on a fresh machine.
#
# Everything Python runs in a virtual environment of its own (.venv beside this file), made from
# the interpreter named by PYTHON: the distribution's python3 is externally managed (PEP 668)
# and is never installed into. `make PYTHON=python3.12 test` picks another interpreter.
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
PIP := PIP_ROOT_USER_ACTION=ignore $(VPY) -m pip --disable-pip-version-check --quiet
# Debian packages: the lab's CNI plugins, traffic tools, etcd for the cluster store;
# iptables and nftables for flanneld's NAT and FORWARD rules (the daemon runs their tools);
# clang for the libFuzzer targets (tests/fuzz).
APT_PACKAGES := iproute2 iputils-ping ethtool containernetworking-plugins iperf3 sockperf etcd-server etcd-client tcpdump iptables nftables clang
# Only for `make bench`: the userspace tunnels it compares us with (bench/tunnels; a rung whose
# package is missing is listed as unavailable, never a failure), and perf for the report's
# "where the CPU goes" profile.
BENCH_APT_PACKAGES := fastd openvpn tinc wireguard-go wireguard-tools linux-perf
# (= not :=: gcc may only be installed by the toolchain step)
ASAN_RT = $(shell gcc -print-file-name=libasan.so)

.PHONY: all deps apt-deps bench-apt-deps toolchain venv py-deps build lint test test-asan fuzz bench bench-quick bench-micro demo clean

all: build

apt-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

bench-apt-deps:
	@$(MAKE) --no-print-directory apt-deps APT_PACKAGES="$(BENCH_APT_PACKAGES)"

# The toolchain the venv and the C build need: gcc, and for an interpreter of the distribution
# its venv module (python3-venv: ensurepip) and headers (python3-dev: Python.h).
toolchain:
	@missing=""; command -v gcc >/dev/null 2>&1 || missing="gcc"; \
	$(PYTHON) -c 'import ensurepip' >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	$(PYTHON) -c 'import os, sysconfig; raise SystemExit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
		|| missing="$$missing python3-dev"; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(VPY): | toolchain
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

venv: $(VPY)

# Installed again only when the declared dependencies change.
$(VENV)/.installed: pyproject.toml setup.py | $(VPY)
	$(PIP) install -e '.[test,bench]'
	touch $@

py-deps: $(VENV)/.installed

deps: apt-deps py-deps

# In-place build of the C hot path (pip install -e does the same through setup.py).
build: py-deps
	$(VPY) -m dataplane.fastpath._build_ffi

# Style and bug rules on all Python ([tool.ruff]), types strict on dataplane/ ([tool.mypy]).
lint: py-deps
	$(VPY) -m ruff check dataplane bench tests
	$(VPY) -m mypy

test: lint deps build
	$(VPY) -m pytest -q --durations=30 tests
	$(MAKE) test-asan

# The wire and offload suites again, against the C library built with AddressSanitizer and UBSan
# (tests/offload includes the offload drains over a fake TUN and loopback UDP_GRO/UDP_SEGMENT).
test-asan: build
	$(VPY) -m dataplane.fastpath._build_ffi --asan
	DATAPLANE_CMODULE=_dpc_asan LD_PRELOAD=$(ASAN_RT) ASAN_OPTIONS=detect_leaks=0 \
		UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		$(VPY) -m pytest -q -p no:cacheprovider tests/wire tests/offload

# The libFuzzer targets of csrc/ (tests/fuzz), FUZZ_SECONDS each; corpora and crash reproducers
# are kept in build/fuzz/ (the next run starts from the corpus; `make clean` removes it).
FUZZ_SECONDS ?= 600
fuzz: deps
	$(VPY) -m tests.fuzz.fuzzing --seconds $(FUZZ_SECONDS) --out build/fuzz

# The comparison: every dataplane in one interleaved run; report, plots and raw JSON in
# bench/results/<UTC time>/, then the C vs Python micro-benchmarks.
bench: deps bench-apt-deps build
	$(VPY) -m dataplane bench
	$(MAKE) bench-micro

# The same, reduced: one round of 1 s tests (what CI runs through tests/bench).
bench-quick: deps build
	$(VPY) -m dataplane bench --quick

bench-micro: deps build
	$(VPY) -m pytest -q bench/micro --benchmark-only --benchmark-autosave \
		--benchmark-storage=bench/results/micro --benchmark-columns=min,median,mean,ops
	$(VPY) -m bench.micro.report

# A mixed cluster: two nodes on our userspace VXLAN, one on kernel VXLAN, two pods each;
# pod-to-pod pings across every pair, then everything is removed (also on failure).
demo: deps build
	$(VPY) -m dataplane explain --backend vxlan | tail -3
	@trap '$(VPY) -m dataplane lab down --prefix demo' EXIT; \
	$(VPY) -m dataplane lab up --prefix demo --nodes 3 --pods 2 --backend vxlan --kernel-nodes 1 && \
	$(VPY) -m dataplane lab status --prefix demo

clean:
	rm -rf build dist *.egg-info .pytest_cache .benchmarks $(VENV)
	rm -f dataplane/fastpath/_dpc*.so dataplane/fastpath/_dpc*.c dataplane/fastpath/_dpc*.o
