"""The nftables backend: libnftables' JSON API through `nft -j -f -` (one transaction per
change: table and chain created if missing, chain flushed, rules added), read back with
`nft -j list table`. The nft CLI is libnftables' own front end, so this is the JSON API
without a Python binding (Debian's python3-nftables cannot be imported from a virtualenv)."""

from __future__ import annotations

import json
from typing import Any

from dataplane.netfilter import rules as R
from dataplane.netfilter.runner import NetfilterError, Runner

PROBE_TABLE = "flannel-masq-probe"


class NftablesBackend:
    name = "nftables"

    def __init__(self, runner: Runner | None = None) -> None:
        self.runner = runner or Runner()
        self._random_fully: bool | None = None
        self._seen: dict[str, tuple[Any, Any]] = {}

    def available(self) -> bool:
        return self.runner.which("nft") is not None

    def _apply(self, doc: dict[str, Any], why: str, *, check_only: bool = False) -> None:
        args = ["-j"] + (["-c"] if check_only else []) + ["-f", "-"]
        self.runner.run("nft", args, input=R.nft_dumps(doc), why=why)

    def random_fully(self) -> bool:
        """Whether the kernel takes `masquerade fully-random`, asked with `nft --check` (a
        dry run: nothing is committed), as flannel's checkRandomfully does."""
        if self._random_fully is None:
            probe = R.RuleSet(R.MASQ, (R.Rule((), "MASQUERADE", True),))
            doc = R.nft_install_commands(probe, table=PROBE_TABLE)
            try:
                self._apply(doc, "to test masquerade fully-random", check_only=True)
                self._random_fully = True
            except NetfilterError as exc:
                if "not found" in str(exc):
                    raise
                self._random_fully = False
        return self._random_fully

    def tables(self) -> list[tuple[str, str]]:
        """flannel's tables that exist here."""
        listing = json.loads(self.runner.run("nft", ["-j", "list", "tables"],
                                             why="to list tables").stdout or "{}")
        present = {(t["table"]["family"], t["table"]["name"])
                   for t in listing.get("nftables", []) if "table" in t}
        return [t for t in R.NFT_TABLES if t in present]

    def _listing(self, why: str) -> dict[str, Any] | None:
        if (R.NFT_FAMILY, R.NFT_TABLE) not in self.tables():
            return None
        out = self.runner.run("nft", ["-j", "list", "table", R.NFT_FAMILY, R.NFT_TABLE],
                              why=why).stdout
        doc: dict[str, Any] = json.loads(out)
        return doc

    def install(self, ruleset: R.RuleSet) -> None:
        why = f"to install table {R.NFT_FAMILY} {R.NFT_TABLE} chain {R.NFT_CHAINS[ruleset.part][0]}"
        self._apply(R.nft_install_commands(ruleset), why)
        listing = self._listing(why)
        self._seen[ruleset.part] = R.nft_chain_state(listing or {}, ruleset.part)

    def in_sync(self, ruleset: R.RuleSet) -> bool:
        listing = self._listing("to check the rules")
        if listing is None:
            return False
        return R.nft_chain_state(listing, ruleset.part) == self._seen.get(
            ruleset.part, R.nft_expected(ruleset))

    def remove(self) -> list[str]:
        present = self.tables()
        if present:
            self._apply(R.nft_remove_commands(present), "to remove flannel's tables")
        self._seen.clear()
        return [f"table {f} {n}" for f, n in present]

    def show(self) -> str:
        present = self.tables()
        if not present:
            return f"# table {R.NFT_FAMILY} {R.NFT_TABLE}: absent"
        return "\n".join(self.runner.run("nft", ["list", "table", f, n], why="to list").stdout
                         for f, n in present)
