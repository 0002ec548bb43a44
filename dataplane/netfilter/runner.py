"""Running iptables-restore / nft: found on PATH (or in sbin, which a virtualenv's or a
service's PATH may lack), optionally inside a named network namespace (the lab, tests), with
failures as one-line NetfilterErrors."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence

SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")
PACKAGE = {"iptables": "iptables", "iptables-save": "iptables", "iptables-restore": "iptables",
           "nft": "nftables"}


class NetfilterError(RuntimeError):
    """The rules cannot be read or written. str() is one line that says what to do."""


class Runner:
    def __init__(self, netns: str | None = None) -> None:
        self.netns = netns

    def which(self, tool: str) -> str | None:
        path = os.pathsep.join([os.environ.get("PATH", ""), *SBIN])
        return shutil.which(tool, path=path)

    def need(self, tool: str, why: str) -> str:
        found = self.which(tool)
        if found is None:
            raise NetfilterError(f"{tool} not found, needed {why} (apt-get install "
                                 f"{PACKAGE.get(tool, tool)})")
        return found

    def run(self, tool: str, args: Sequence[str], *, why: str, input: str | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [self.need(tool, why), *args]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        try:
            proc = subprocess.run(argv, input=input, capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            raise NetfilterError(f"{tool} {' '.join(args)} did not finish within 30 s "
                                 f"({why})") from None
        if check and proc.returncode != 0:
            raise NetfilterError(f"{tool} {' '.join(args)} failed {why}: "
                                 f"{first_error(proc.stderr or proc.stdout)}")
        return proc


def first_error(text: str) -> str:
    """A tool's complaint on one line: nft's `Error:` line (it goes on to echo the input), or
    iptables-restore's lines up to its pointer to --help."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in lines:
        if "Error:" in line:
            return line
    lines = [line for line in lines if not line.startswith("Try `")]
    return "; ".join(lines[:3]) or "no message"
