"""Turn a saved pytest-benchmark JSON into ns per packet, C against Python.

    python -m bench.micro.report [RESULT.json]     # default: the newest under bench/results/micro

Each benchmark carries extra_info {impl, op, packets} (bench/micro/conftest.py). The median of
each is divided by its packet count; the ratio is Python time over C time, so 10 means C does
a packet in a tenth of the time. "c-core" is the C batch call alone, without the Python API.
"""

from __future__ import annotations

import json
import pathlib
import sys

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results" / "micro"
TARGET = 10.0      # the bar: C at least 10x faster per packet on 1400-byte packets


def newest() -> pathlib.Path:
    files = sorted(RESULTS.glob("**/*.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        sys.exit(f"no results under {RESULTS}: run `make bench-micro` first")
    return files[-1]


def per_packet(path: pathlib.Path) -> dict[str, dict[str, float]]:
    """op -> impl -> median ns per packet."""
    table: dict[str, dict[str, float]] = {}
    for b in json.loads(path.read_text())["benchmarks"]:
        info = b.get("extra_info", {})
        if "op" not in info:
            continue
        ns = b["stats"]["median"] * 1e9 / info.get("packets", 1)
        table.setdefault(info["op"], {})[info["impl"]] = ns
    return table


def fmt(ns: float | None) -> str:
    return "" if ns is None else f"{ns:,.0f}" if ns >= 100 else f"{ns:.1f}"


def ratio(slow: float | None, fast: float | None) -> str:
    return "" if not slow or not fast else f"{slow / fast:.1f}x"


def render(table: dict[str, dict[str, float]]) -> str:
    head = ["operation", "C ns/pkt", "C core ns/pkt", "Python ns/pkt", "Python/C",
            "Python/C core", f"best C >= {TARGET:.0f}x"]
    rows = [head, ["---"] * len(head)]
    for op in sorted(table):
        t = table[op]
        c, core, py = t.get("c"), t.get("c-core"), t.get("python")
        best = min(x for x in (c, core) if x) if (c or core) else None
        met = "" if not (py and best) else ("yes" if py / best >= TARGET else "no")
        rows.append([op, fmt(c), fmt(core), fmt(py), ratio(py, c), ratio(py, core), met])
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def main(argv: list[str]) -> int:
    path = pathlib.Path(argv[0]) if argv else newest()
    print(f"{path}\n")
    print(render(per_packet(path)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
