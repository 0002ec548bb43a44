"""The iptables backend: whole chains through `iptables-restore --noflush`, read back with
`iptables-save -t <table>`. One table per transaction, so a chain is never seen half-written,
and no other rule of the table is touched."""

from __future__ import annotations

import re

from dataplane.netfilter import rules as R
from dataplane.netfilter.runner import NetfilterError, Runner

WAIT_SINCE = (1, 6, 2)     # iptables-restore --wait (and MASQUERADE --random-fully) from 1.6.2


class IptablesBackend:
    name = "iptables"

    def __init__(self, runner: Runner | None = None) -> None:
        self.runner = runner or Runner()
        self._version: tuple[int, int, int] | None = None
        self._seen: dict[str, tuple[list[str], int]] = {}   # part -> state after our install

    def available(self) -> bool:
        return all(self.runner.which(t) for t in ("iptables", "iptables-save",
                                                  "iptables-restore"))

    def version(self) -> tuple[int, int, int]:
        if self._version is None:
            out = self.runner.run("iptables", ["--version"], why="to learn its version").stdout
            found = re.search(r"v(\d+)\.(\d+)\.(\d+)", out)
            if not found:
                raise NetfilterError(f"cannot read the iptables version from {out.strip()!r}")
            major, minor, patch = (int(g) for g in found.groups())
            self._version = (major, minor, patch)
        return self._version

    def random_fully(self) -> bool:
        """As go-iptables' HasRandomFully: iptables 1.6.2 or later."""
        return self.version() >= WAIT_SINCE

    def _save(self, part: str, why: str) -> str:
        table = R.IPT_CHAINS[part][0]
        return self.runner.run("iptables-save", ["-t", table], why=why).stdout

    def _restore(self, payload: str, why: str) -> None:
        args = ["--noflush"] + (["--wait"] if self.version() >= WAIT_SINCE else [])
        self.runner.run("iptables-restore", args, input=payload, why=why)

    def install(self, ruleset: R.RuleSet) -> None:
        why = f"to install {R.IPT_CHAINS[ruleset.part][1]}"
        _, _, _, jumps = R.ipt_chain_state(self._save(ruleset.part, why), ruleset.part)
        self._restore(R.ipt_install_payload(ruleset, jumps), why)
        _, now, _, count = R.ipt_chain_state(self._save(ruleset.part, why), ruleset.part)
        self._seen[ruleset.part] = (now, count)

    def in_sync(self, ruleset: R.RuleSet) -> bool:
        """Our chain holds exactly what we installed (as iptables printed it back then, else
        as rendered) and the built-in chain jumps to it exactly once."""
        exists, now, _, jumps = R.ipt_chain_state(
            self._save(ruleset.part, "to check the rules"), ruleset.part)
        want = self._seen.get(ruleset.part, (R.ipt_rules(ruleset), 1))
        return exists and (now, jumps) == want

    def remove(self) -> list[str]:
        """Delete both chains and every jump to them; returns the chains removed."""
        removed = []
        for part in (R.MASQ, R.FORWARD):
            chain = R.IPT_CHAINS[part][1]
            exists, _, refs, _ = R.ipt_chain_state(self._save(part, f"to remove {chain}"), part)
            if exists:
                self._restore(R.ipt_remove_payload(part, refs), f"to remove {chain}")
                removed.append(f"{R.IPT_CHAINS[part][0]}/{chain}")
            self._seen.pop(part, None)
        return removed

    def show(self) -> str:
        out = []
        for part in (R.MASQ, R.FORWARD):
            table, chain, _, _ = R.IPT_CHAINS[part]
            exists, rules, refs, _ = R.ipt_chain_state(self._save(part, "to list"), part)
            out.append(f"# {table}/{chain}: " + ("present" if exists else "absent"))
            out += refs + rules
        return "\n".join(out)
