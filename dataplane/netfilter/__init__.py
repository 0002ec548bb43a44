"""flanneld's NAT and FORWARD rules on this node: install, keep, remove.

    manager = TrafficManager.start(network, subnet, ip_masq=True, nftables=False)
    await manager.keep()          # every --iptables-resync seconds: put back what was changed
    remove_rules()                # decommissioning: every chain and table of ours, both backends

As flanneld (main.go): at start the other backend's rules are removed (a switch between
iptables and nftables leaves nothing behind), the masquerade rules installed with --ip-masq
(a failure stops the start), the FORWARD accept rules unless --iptables-forward-rules=false
(a failure is logged and start goes on). A stop leaves every rule in place, so the node keeps
NATing its pods while the daemon restarts; the next start rewrites them, never duplicating.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import Any

from dataplane.netfilter import rules
from dataplane.netfilter.iptables import IptablesBackend
from dataplane.netfilter.nftables import NftablesBackend
from dataplane.netfilter.runner import NetfilterError, Runner

__all__ = ["NetfilterError", "NetfilterOptions", "TrafficManager", "backend", "remove_rules"]

log = logging.getLogger(__name__)

BACKENDS = ("iptables", "nftables")


@dataclass(frozen=True)
class NetfilterOptions:
    forward_rules: bool = True      # --iptables-forward-rules
    resync: float = 5.0             # --iptables-resync, seconds
    random_fully: bool = True       # off with --ip-masq-fully-random-disable


def backend(name: str, netns: str | None = None) -> IptablesBackend | NftablesBackend:
    """A backend by name; `netns` runs its tools inside that named namespace (lab, tests)."""
    runner = Runner(netns)
    if name == "iptables":
        return IptablesBackend(runner)
    if name == "nftables":
        return NftablesBackend(runner)
    raise ValueError(f"unknown netfilter backend {name!r}: {' or '.join(BACKENDS)}")


def remove_rules(backend_name: str | None = None, netns: str | None = None) -> list[str]:
    """Remove every rule, chain and table of ours (and flanneld's, which are the same), from
    both backends or just the one named; a backend whose tools are missing holds nothing to
    remove. Returns what was removed. For decommissioning a node: a plain stop keeps them."""
    removed = []
    for name in (backend_name,) if backend_name else BACKENDS:
        be = backend(name, netns)
        if be.available():
            removed += [f"{name}: {what}" for what in be.remove()]
    return removed


class TrafficManager:
    """The rules of one node, for one network and subnet, on one backend."""

    def __init__(self, network: IPv4Network, subnet: IPv4Network, *, ip_masq: bool,
                 nftables: bool = False, options: NetfilterOptions = NetfilterOptions(),
                 netns: str | None = None) -> None:
        self.network, self.subnet = network, subnet
        self.options = options
        self.backend = backend("nftables" if nftables else "iptables", netns)
        self.other = backend("iptables" if nftables else "nftables", netns)
        self.ip_masq = ip_masq
        self.parts: list[rules.RuleSet] = []      # what we installed and keep
        self._last_error: str | None = None
        # A daemon reports on its own node; a lab or test driving another namespace, quietly.
        self._info = log.debug if netns else log.info

    @classmethod
    def start(cls, network: IPv4Network, subnet: IPv4Network, **kwargs: Any) -> TrafficManager:
        manager = cls(network, subnet, **kwargs)
        manager.setup()
        return manager

    def setup(self) -> None:
        be = self.backend
        if self.other.available():
            try:
                gone = self.other.remove()
                if gone:
                    self._info("removed the %s rules of an earlier run: %s",
                               self.other.name, ", ".join(gone))
            except NetfilterError as exc:
                log.debug("could not clean up %s rules: %s", self.other.name, exc)
        if self.ip_masq:
            try:
                masq = rules.masq_rules(self.network, self.subnet, random_fully=(
                    self.options.random_fully and be.random_fully()))
                be.install(masq)
            except NetfilterError as exc:
                raise NetfilterError(f"--ip-masq: cannot install the masquerade rules with "
                                     f"{be.name}: {exc}") from None
            self.parts.append(masq)
            self._info("%s: masquerading pod traffic leaving %s (%s)", be.name, self.network,
                       "fully-random" if masq.rules[-1].random_fully else "without fully-random")
        if self.options.forward_rules:
            fwd = rules.forward_rules(self.network)
            try:
                be.install(fwd)
                self._info("%s: FORWARD accepts %s both ways", be.name, self.network)
            except NetfilterError as exc:
                log.warning("cannot install the FORWARD accept rules with %s: %s "
                            "(--iptables-forward-rules=false turns them off)", be.name, exc)
            self.parts.append(fwd)      # kept trying: the resync may get them in later

    def ensure(self) -> list[str]:
        """Re-install every part someone changed or removed; returns the parts restored."""
        restored = []
        for part in self.parts:
            if not self.backend.in_sync(part):
                self.backend.install(part)
                restored.append(part.part)
        return restored

    async def keep(self) -> None:
        """Resync forever, every options.resync seconds (flanneld's --iptables-resync)."""
        while True:
            await asyncio.sleep(self.options.resync)
            try:
                restored = await asyncio.to_thread(self.ensure)
            except (NetfilterError, ValueError, OSError) as exc:   # never the daemon's end
                if str(exc) != self._last_error:        # once per kind of failure
                    log.warning("netfilter resync failed: %s", exc)
                self._last_error = str(exc)
                continue
            if self._last_error is not None:
                log.info("netfilter resync works again")
                self._last_error = None
            for part in restored:
                log.warning("%s: the %s rules had been changed or removed; restored",
                            self.backend.name, part)
