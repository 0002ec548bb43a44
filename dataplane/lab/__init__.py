"""The lab: a whole cluster of nodes and pods on one Linux box (`dataplane lab`).

    from dataplane.lab import Lab
    with Lab("t1", nodes=2, pods=1, backend="kernel-vxlan") as lab:
        assert lab.ping(lab.pod(1, 1), lab.pod(2, 1))

Names are resolved lazily so that `python3 -m dataplane.lab.probe`, which runs inside pod
namespaces on every reachability check, does not import pyroute2 and the builders.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Lab", "LabError", "LabNode", "Pod", "TransferResult", "teardown", "STATE_ROOT"]

_HOMES = {"Lab": "lab", "TransferResult": "traffic", "teardown": "cleanup",
          "STATE_ROOT": "state", "LabError": "errors", "LabNode": "state", "Pod": "state"}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
