"""The offload tests compare the C library (DATAPLANE_CMODULE picks the ASan build) with the
pure-Python reference; hypothesis budgets keep the directory under ~40 s."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile(
    "offload", deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                     HealthCheck.data_too_large])
settings.load_profile("offload")
