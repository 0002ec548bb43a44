"""The hot path, in two implementations with one API.

    from dataplane import fastpath
    fp = fastpath.load("c")        # or "python": the pure-Python reference
    fwd = fp.Forwarder(config)

`c` (csrc/ compiled by cffi) is the default; `python` (pyref/) is the oracle the property tests
compare C against and the per-packet bottom rung of the benchmark ladder. Everything else in
the project gets its implementation from load(), nowhere else.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, cast

from dataplane.fastpath.api import Fastpath

if TYPE_CHECKING:
    # mypy proves each module satisfies the protocol; tests/wire/test_api.py checks the
    # signatures match at run time, member for member.
    from dataplane.fastpath import cnative, pyref

    _C: Fastpath = cnative
    _PYTHON: Fastpath = pyref

IMPLEMENTATIONS = ("c", "python")
DEFAULT = "c"

_MODULES = {"c": "dataplane.fastpath.cnative", "python": "dataplane.fastpath.pyref"}


class FastpathUnavailable(RuntimeError):
    pass


def load(name: str = DEFAULT) -> Fastpath:
    if name not in _MODULES:
        raise ValueError(f"unknown fastpath {name!r}: choose one of {', '.join(IMPLEMENTATIONS)}")
    try:
        return cast(Fastpath, importlib.import_module(_MODULES[name]))
    except ImportError as exc:
        if name == "c":
            raise FastpathUnavailable(
                "the C fast path is not built (run `make build` or `pip install -e .`), "
                f"or use --fastpath python: {exc}") from exc
        raise
