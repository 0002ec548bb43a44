"""The libFuzzer targets of csrc/ (tests/fuzz/fuzz_*.c), each built with ASan and UBSan and run
for a bounded time: any crash, sanitizer report or broken invariant fails the test with the
path of its reproducer. `make fuzz` runs the same targets longer (FUZZ_SECONDS per target).

FUZZ_CI_SECONDS (default 8) sets the time per target here; the reproducers of bugs the
fuzzers found are replayed first, so a regression fails at once and deterministically."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.fuzz import fuzzing, seeds

SECONDS = int(os.environ.get("FUZZ_CI_SECONDS", "8"))

try:
    fuzzing.clang()
    CLANG = None
except fuzzing.FuzzUnavailable as exc:
    CLANG = str(exc)

pytestmark = pytest.mark.skipif(CLANG is not None, reason=f"{CLANG}: cannot build fuzz targets")


@pytest.fixture(scope="module")
def binaries(tmp_path_factory):
    return fuzzing.build(fuzzing.TARGETS, tmp_path_factory.mktemp("fuzz-bin"))


@pytest.mark.parametrize("target", fuzzing.TARGETS)
def test_fuzz_target_finds_nothing(target, binaries, tmp_path):
    binary = binaries[target]
    for name, data in seeds.REGRESSIONS.get(target, {}).items():
        case = tmp_path / f"regression-{name}"
        case.write_bytes(data)
        proc = subprocess.run([str(binary), str(case)], capture_output=True, text=True,
                              timeout=60)
        assert proc.returncode == 0, f"{target}: regression {name} ({case}) crashes again:\n" \
                                     + proc.stderr[-3000:]
    res = fuzzing.run(target, binary, SECONDS, tmp_path / "corpus", tmp_path / "crashes",
                      tmp_path / "seeds")
    print(res.summary())
    assert res.crash is None, f"{res.summary()}\n" + "\n".join(res.log.splitlines()[-60:])
    assert res.executions > 0 and res.coverage > 0, res.log[-3000:]


def test_a_crash_is_reported_with_its_reproducer(tmp_path):
    """The runner must notice a crash: a harness that aborts on a 4-byte prefix, found at once
    from a seed one mutation away."""
    src = tmp_path / "fuzz_selftest.c"
    src.write_text(
        '#include <stdint.h>\n#include <stdlib.h>\n#include <string.h>\n'
        'int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n)\n'
        '{ if (n >= 4 && memcmp(d, "DPFZ", 4) == 0) abort(); return 0; }\n')
    binary = tmp_path / "selftest"
    subprocess.run([fuzzing.clang(), fuzzing.SANITIZE, str(src), "-o", str(binary)], check=True)
    seed_dir = tmp_path / "seed"
    seed_dir.mkdir()
    (seed_dir / "near").write_bytes(b"DPFY")
    res = fuzzing.run("selftest", binary, 20, tmp_path / "corpus", tmp_path / "crashes", seed_dir)
    assert res.crash is not None and res.crash.exists()
    assert res.crash.read_bytes().startswith(b"DPFZ")
