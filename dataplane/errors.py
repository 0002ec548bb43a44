"""Errors for the user, shared by every command. A leaf: it imports nothing of dataplane, so any
module may import it at the top without a cycle."""

from __future__ import annotations


class CommandError(Exception):
    """An error for the user: printed as one line, exit status 1, no traceback."""
