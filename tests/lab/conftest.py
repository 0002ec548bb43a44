"""Lab tests: real namespaces, each test under its own random prefix, always torn down."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from lab_helpers import NETNS_UNAVAILABLE, leftovers

from dataplane.lab.lab import teardown


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if NETNS_UNAVAILABLE:
        skip = pytest.mark.skip(reason=NETNS_UNAVAILABLE)
        here = Path(__file__).parent
        for item in items:
            if "netns" in item.keywords and here in item.path.parents:
                item.add_marker(skip)


@pytest.fixture
def prefix() -> Iterator[str]:
    """A fresh lab prefix; whatever the test did or failed to do, the lab is removed after,
    and the test fails if anything of it survives."""
    name = "t" + secrets.token_hex(4)
    try:
        yield name
    finally:
        teardown(name)
        assert leftovers(name) == []
