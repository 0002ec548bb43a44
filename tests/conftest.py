"""Shared fixtures: every wire test runs against both hot-path implementations."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from dataplane import fastpath

# One profile for the whole suite: no deadline (the ASan build is several times slower and
# timing is not what these tests check), and examples sized so tests/wire stays well under a
# minute. HYPOTHESIS_PROFILE=thorough runs ten times as many for a long soak.
settings.register_profile(
    "wire", deadline=None, max_examples=100,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile(
    "thorough", parent=settings.get_profile("wire"), max_examples=1000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "wire"))


@pytest.fixture(scope="session", params=fastpath.IMPLEMENTATIONS)
def impl(request):
    """The module under test: the C library or the pure-Python reference, same API."""
    return fastpath.load(request.param)


@pytest.fixture(scope="session")
def cimpl():
    return fastpath.load("c")


@pytest.fixture(scope="session")
def pyimpl():
    return fastpath.load("python")
