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


def pytest_configure(config):
    _route_sanitizer_reports(config)


def _route_sanitizer_reports(config) -> None:
    """Under `make test-asan`, send AddressSanitizer/UBSan reports to the real stderr.

    pytest captures fd 2 into a temporary file while a test runs; a sanitizer error ends the
    process with _exit, so that file, and the report in it, would vanish and the run would
    stop with no word of why. The capture manager keeps a dup of the original fd 2.
    """
    import ctypes

    try:
        set_report_fd = ctypes.CDLL(None).__sanitizer_set_report_fd
    except AttributeError:
        return                                        # not a sanitizer run
    capture = config.pluginmanager.getplugin("capturemanager")
    err = getattr(getattr(capture, "_global_capturing", None), "err", None)
    fd = getattr(err, "targetfd_save", None)          # absent with -s / --capture=sys
    if fd is not None:
        set_report_fd(ctypes.c_void_p(os.dup(fd)))
