"""The one exception the lab raises for anything a user can act on."""

from __future__ import annotations


class LabError(RuntimeError):
    """A lab could not be built, inspected or removed; the message says why and what to do."""
