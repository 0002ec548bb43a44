"""Fixtures for the kube subnet manager's tests: the stand-in API server (or a real cluster,
see cluster.py), and every async test on both asyncio and uvloop."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import uvloop

from tests.kube.cluster import Cluster, open_cluster


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """run(coro, timeout=15): the coroutine's result, on a fresh loop of the parametrized kind."""
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def run(coro: Awaitable[Any], timeout: float = 15.0) -> Any:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(asyncio.wait_for(coro, timeout))
    return run


@pytest.fixture
def cluster(tmp_path) -> Iterator[Cluster]:
    c = open_cluster(tmp_path)
    try:
        yield c
    finally:
        c.close()
