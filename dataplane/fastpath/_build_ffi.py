"""cffi builder for the C hot path (API mode, out-of-line).

setuptools runs it through `cffi_modules` (setup.py) and produces dataplane/fastpath/_dpc*.so.
`python -m dataplane.fastpath._build_ffi [--asan]` builds the same extension in place, which is
what `make build` and the sanitizer test target use.
"""

from __future__ import annotations

import os
import pathlib
import sys

from cffi import FFI

# Paths handed to set_source are relative to the project root, where setup.py runs.
ROOT = pathlib.Path(__file__).resolve().parents[2]
CSRC = "csrc"
SOURCES = ["csum.c", "packet.c", "routes.c", "forward.c",
           "egress.c", "ingress.c", "tun_adapter.c", "udp_adapter.c",   # the two directions
           "csum64.c", "gso.c", "gro.c",   # offloads: GSO and GRO
           "l4csum.c",                      # ingress: partial and bad TCP/UDP checksums
           "tun_uring.c"]                   # the TUN through io_uring

CFLAGS = ["-O3", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter", "-fno-strict-aliasing"]
ASAN_FLAGS = ["-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer",
              "-fno-sanitize-recover=undefined"]


def make_builder(asan: bool = False) -> FFI:
    ffi = FFI()
    ffi.cdef((ROOT / CSRC / "dp_api.h").read_text())
    flags = list(CFLAGS)
    link = []
    if asan:
        flags += ASAN_FLAGS
        link += ["-fsanitize=address,undefined"]
    # The sanitizer build is a module of its own so both can sit side by side in the tree;
    # DATAPLANE_CMODULE=_dpc_asan makes cnative.py load it.
    ffi.set_source(
        "dataplane.fastpath._dpc_asan" if asan else "dataplane.fastpath._dpc",
        '#include "dp.h"',
        sources=[f"{CSRC}/{name}" for name in SOURCES],
        include_dirs=[CSRC],
        extra_compile_args=flags,
        extra_link_args=link,
    )
    return ffi


ffibuilder = make_builder()

if __name__ == "__main__":
    asan = "--asan" in sys.argv
    os.chdir(ROOT)
    make_builder(asan=asan).compile(tmpdir=".", verbose=False)
