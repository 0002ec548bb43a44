# dataplane: every target installs what it needs, so each works on a fresh machine.
PYTHON ?= python3
PIP := PIP_ROOT_USER_ACTION=ignore $(PYTHON) -m pip --disable-pip-version-check --quiet
# Debian packages: the lab's CNI plugins, traffic tools, etcd for the cluster store; clang for
# the libFuzzer targets (tests/fuzz).
APT_PACKAGES := iproute2 iputils-ping ethtool containernetworking-plugins iperf3 sockperf etcd-server etcd-client tcpdump clang
ASAN_RT := $(shell gcc -print-file-name=libasan.so)

.PHONY: all deps apt-deps py-deps build test test-asan fuzz bench bench-quick bench-micro demo clean

all: build

apt-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

py-deps:
	$(PIP) install -e '.[test,bench]'

deps: apt-deps py-deps

# In-place build of the C hot path (pip install -e does the same through setup.py).
build:
	$(PYTHON) -m dataplane.fastpath._build_ffi

test: deps build
	$(PYTHON) -m pytest -q tests
	$(MAKE) test-asan

# The wire and offload suites again, against the C library built with AddressSanitizer and UBSan
# (tests/offload includes the offload drains over a fake TUN and loopback UDP_GRO/UDP_SEGMENT).
test-asan: build
	$(PYTHON) -m dataplane.fastpath._build_ffi --asan
	DATAPLANE_CMODULE=_dpc_asan LD_PRELOAD=$(ASAN_RT) ASAN_OPTIONS=detect_leaks=0 \
		UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
		$(PYTHON) -m pytest -q -p no:cacheprovider tests/wire tests/offload

# The libFuzzer targets of csrc/ (tests/fuzz), FUZZ_SECONDS each; corpora and crash reproducers
# are kept in build/fuzz/ (the next run starts from the corpus; `make clean` removes it).
FUZZ_SECONDS ?= 600
fuzz: deps
	$(PYTHON) -m tests.fuzz.fuzzing --seconds $(FUZZ_SECONDS) --out build/fuzz

# The comparison: every dataplane in one interleaved run; report, plots and raw JSON in
# bench/results/<UTC time>/, then the C vs Python micro-benchmarks.
bench: deps build
	$(PYTHON) -m dataplane bench
	$(MAKE) bench-micro

# The same, reduced: one round of 1 s tests (what CI runs through tests/bench).
bench-quick: deps build
	$(PYTHON) -m dataplane bench --quick

bench-micro: deps build
	$(PYTHON) -m pytest -q bench/micro --benchmark-only --benchmark-autosave \
		--benchmark-storage=bench/results/micro --benchmark-columns=min,median,mean,ops
	$(PYTHON) -m bench.micro.report

# A mixed cluster: two nodes on our userspace VXLAN, one on kernel VXLAN, two pods each;
# pod-to-pod pings across every pair, then everything is removed (also on failure).
demo: deps build
	$(PYTHON) -m dataplane explain --backend vxlan | tail -3
	@trap '$(PYTHON) -m dataplane lab down --prefix demo' EXIT; \
	$(PYTHON) -m dataplane lab up --prefix demo --nodes 3 --pods 2 --backend vxlan --kernel-nodes 1 && \
	$(PYTHON) -m dataplane lab status --prefix demo

clean:
	rm -rf build dist *.egg-info .pytest_cache .benchmarks
	rm -f dataplane/fastpath/_dpc*.so dataplane/fastpath/_dpc*.c dataplane/fastpath/_dpc*.o
