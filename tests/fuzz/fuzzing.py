"""Build and run the libFuzzer targets (tests/fuzz/fuzz_*.c) against csrc/.

Each target is one harness file linked with the hot-path sources, all compiled by clang with
-fsanitize=fuzzer,address,undefined (coverage-guided, and any overread, overflow or undefined
behaviour is a crash). test_fuzz.py runs every target for a short bounded time; `make fuzz`
runs them longer through this module:

    python3 -m tests.fuzz.fuzzing [--seconds 600] [--out build/fuzz] [TARGET...]

The corpus each run grows is kept in OUT/corpus/<target> (the next run starts from it), a
crash's reproducer in OUT/crashes/<target>/; replay one with `OUT/bin/<target> <file>`.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from dataplane.fastpath._build_ffi import SOURCES      # the hot path, as the extension has it
from tests.fuzz import seeds

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CSRC = ROOT / "csrc"

TARGETS = tuple(seeds.TARGETS)
SANITIZE = "-fsanitize=fuzzer,address,undefined"
CFLAGS = ["-g", "-O1", "-std=gnu11", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined",
          "-Wall", "-Wextra", "-Wno-unused-parameter", f"-I{CSRC}", f"-I{HERE}"]
MAX_LEN = 70_000                 # a 64 KiB packet with its headers and the harness's own bytes


class FuzzUnavailable(RuntimeError):
    pass


def clang() -> str:
    cc = shutil.which(os.environ.get("CLANG", "clang"))
    if not cc:
        raise FuzzUnavailable("clang is not installed (make apt-deps installs it)")
    return cc


def _cc(args: list[str], what: str) -> None:
    proc = subprocess.run([clang(), SANITIZE, *CFLAGS, *args], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"building {what} failed:\n{proc.stderr[-4000:]}")


def build(targets: list[str] | tuple[str, ...], out: Path) -> dict[str, Path]:
    """Compile the hot path once and link each target against it: {target: out/<target>}."""
    objdir = out / "obj"
    objdir.mkdir(parents=True, exist_ok=True)
    objects = []
    for name in SOURCES:
        obj = objdir / (Path(name).stem + ".o")
        _cc(["-c", str(CSRC / name), "-o", str(obj)], f"csrc/{name}")
        objects.append(str(obj))
    binaries = {}
    for target in targets:
        binaries[target] = out / target
        _cc([str(HERE / f"fuzz_{target}.c"), *objects, "-o", str(binaries[target])],
            f"fuzz target {target}")
    return binaries


@dataclasses.dataclass
class Result:
    target: str
    seconds: float
    executions: int
    per_second: int
    coverage: int
    crash: Path | None           # the reproducer, if the run crashed
    log: str

    def summary(self) -> str:
        what = f"CRASH, reproducer {self.crash}" if self.crash else "no crash"
        return (f"{self.target}: {self.executions} executions in {self.seconds:.0f} s "
                f"({self.per_second}/s), coverage {self.coverage} edges, {what}")


def run(target: str, binary: Path, seconds: int, corpus: Path, crashes: Path,
        seed_dir: Path | None = None) -> Result:
    """Fuzz for `seconds`; new inputs go to corpus, a crash's input to crashes/."""
    corpus.mkdir(parents=True, exist_ok=True)
    crashes.mkdir(parents=True, exist_ok=True)
    if seed_dir is None:
        seed_dir = corpus.parent / f"{corpus.name}.seeds"
    if target in seeds.TARGETS:
        seeds.write(target, seed_dir)
    cmd = [str(binary), f"-max_total_time={seconds}", f"-max_len={MAX_LEN}", "-timeout=20",
           "-rss_limit_mb=2048", "-print_final_stats=1", f"-artifact_prefix={crashes}/",
           str(corpus), str(seed_dir)]
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0",
               UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1")
    start = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                          timeout=seconds + 120)
    elapsed = time.monotonic() - start
    log = proc.stderr
    crash = None
    m = re.search(r"Test unit written to (\S+)", log)
    if m:
        crash = Path(m.group(1))
    elif proc.returncode:
        crash = crashes / "(none written: see the log)"
    return Result(target, elapsed, _stat(log, "number_of_executed_units"),
                  _stat(log, "average_exec_per_sec"), _coverage(log), crash, log)


def _stat(log: str, name: str) -> int:
    m = re.search(rf"stat::{name}:\s+(\d+)", log)
    return int(m.group(1)) if m else 0


def _coverage(log: str) -> int:
    found = re.findall(r"\bcov: (\d+)", log)
    return int(found[-1]) if found else 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python3 -m tests.fuzz.fuzzing",
                                 description="Build and run the libFuzzer targets of csrc/.")
    ap.add_argument("targets", nargs="*", metavar="TARGET",
                    help=f"targets to run (default: all of {', '.join(TARGETS)})")
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("FUZZ_SECONDS", 600)),
                    help="fuzzing time per target (default: $FUZZ_SECONDS or 600)")
    ap.add_argument("--out", type=Path, default=ROOT / "build" / "fuzz",
                    help="binaries, corpora and crash reproducers (default: build/fuzz)")
    args = ap.parse_args(argv)
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        ap.error(f"unknown target {unknown[0]!r}: choose from {', '.join(TARGETS)}")
    if args.seconds < 1:
        ap.error("--seconds must be at least 1")
    try:
        clang()
    except FuzzUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failed = 0
    targets = args.targets or TARGETS
    binaries = build(targets, args.out / "bin")
    for target in targets:
        res = run(target, binaries[target], args.seconds, args.out / "corpus" / target,
                  args.out / "crashes" / target, args.out / "seeds" / target)
        print(res.summary(), flush=True)
        if res.crash:
            failed += 1
            print("\n".join(res.log.splitlines()[-60:]), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
