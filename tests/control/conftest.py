"""Fixtures for the control-plane tests: every async test runs on both asyncio and uvloop."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import uvloop

NET_CONF = '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}\n'


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """run(coro, timeout=10): the coroutine's result, on a fresh loop of the parametrized kind."""
    factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def run(coro: Awaitable[Any], timeout: float = 10.0) -> Any:
        with asyncio.Runner(loop_factory=factory) as runner:
            return runner.run(asyncio.wait_for(coro, timeout))
    return run


def make_store_dir(path: Path, config: str | None = NET_CONF) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    if config is not None:
        (path / "config").write_text(config)
    return path


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return make_store_dir(tmp_path / "store")


class FakeClock:
    """Wall time plus an offset tests push forward (never behind: see DirectoryStore)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()
