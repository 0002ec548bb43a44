"""What the run is doing and how long is left: one live status line on a terminal, plain
lines otherwise (CI logs, pipes).

The time left is the planned seconds still to run, scaled by how the run has kept to the
plan so far (tool start-up, lab builds and slow machines all show up in that factor).
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import TextIO


def fmt_seconds(seconds: float) -> str:
    seconds = max(int(round(seconds)), 0)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Progress:
    def __init__(self, planned_seconds: float, stream: TextIO | None = None,
                 tty: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self.planned = max(planned_seconds, 1e-9)
        self.done_planned = 0.0
        self.start = time.monotonic()
        self.where = ""
        self._live = False

    PRIOR = 10.0     # planned seconds assumed run at plan speed: early steps sway it less

    def left(self) -> float:
        elapsed = time.monotonic() - self.start
        pace = (elapsed + self.PRIOR) / (self.done_planned + self.PRIOR)
        return (self.planned - self.done_planned) * pace

    def status(self, where: str, what: str) -> None:
        """Now doing `what` (a test) within `where` (round and dataplane)."""
        self.where = where
        pct = 100 * self.done_planned / self.planned
        line = f"[{pct:3.0f}%] {where}: {what} (about {fmt_seconds(self.left())} left)"
        if self.tty:
            width = shutil.get_terminal_size((100, 20)).columns - 1
            self.stream.write("\r\x1b[K" + line[:width])
            self._live = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def advance(self, planned_seconds: float) -> None:
        self.done_planned = min(self.done_planned + planned_seconds, self.planned)

    def note(self, text: str) -> None:
        """A line that stays (a finished step's result, a warning)."""
        if self._live:
            self.stream.write("\r\x1b[K")
            self._live = False
        self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self._live:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._live = False
