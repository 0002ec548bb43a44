"""flanneld's NAT and FORWARD rules as data, and their two renderings (iptables, nftables).

The rules are flannel's (pkg/trafficmngr/iptables/iptables.go, masqRules and forwardRules), in
flannel's order. With N the pod network and S this node's subnet:

    nat/POSTROUTING  -j FLANNEL-POSTRTG                       (comment "flanneld masq")
    FLANNEL-POSTRTG  -m mark --mark 0x4000/0x4000     RETURN   kube-proxy's: it NATs them itself
                     -s S -d N                        RETURN   pod -> pod: keep the pod's address
                     -s N -d S                        RETURN
                     ! -s N -d S                      RETURN   outside -> our pods: keep theirs
                     -s N ! -d 224.0.0.0/4            MASQUERADE [--random-fully]   pod egress
                     ! -s N -d N                      MASQUERADE [--random-fully]   host -> pods
    filter/FORWARD   -j FLANNEL-FWD                           (comment "flanneld forward")
    FLANNEL-FWD      -s N ACCEPT; -d N ACCEPT

nftables gets the same rules, in tables and chains named as flannel names them (nftables.go):
table `ip flannel-ipv4`, base chains `postrtg` (nat, postrouting, srcnat) and `forward` (filter,
forward, filter). Two deliberate differences from flannel's nftables rules, so that both
backends behave alike: the kube-proxy mark is matched under its mask (flannel's nft rule
compares the whole mark with 0x4000, a TODO in its source), and the fourth rule is
`ip saddr != N ip daddr S return` as in iptables (flannel's nft rule reads `saddr != S
daddr N`, which makes its last rule unreachable).

Everything here is pure: no process is run, so it is tested without root.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import Any

KUBE_PROXY_MARK = 0x4000
MULTICAST = IPv4Network("224.0.0.0/4")

MASQ, FORWARD = "masq", "forward"

# iptables: table, our chain, the built-in chain that jumps to it, the comment on every rule
IPT_CHAINS = {
    MASQ: ("nat", "FLANNEL-POSTRTG", "POSTROUTING", "flanneld masq"),
    FORWARD: ("filter", "FLANNEL-FWD", "FORWARD", "flanneld forward"),
}

# nftables (flannel's names): one table per family, one base chain per part
NFT_FAMILY, NFT_TABLE = "ip", "flannel-ipv4"
NFT_TABLES = ((NFT_FAMILY, NFT_TABLE), ("ip6", "flannel-ipv6"))   # what flanneld may leave
NFT_CHAINS = {
    # name, type, hook, priority (srcnat = 100, filter = 0), flannel's comment
    MASQ: ("postrtg", "nat", "postrouting", 100,
           "chain to manage traffic masquerading by flannel"),
    FORWARD: ("forward", "filter", "forward", 0, "chain to accept flannel traffic"),
}


@dataclass(frozen=True)
class Match:
    what: str                       # "saddr" | "daddr" | "mark"
    value: IPv4Network | int
    negate: bool = False


@dataclass(frozen=True)
class Rule:
    matches: tuple[Match, ...]
    verdict: str                    # "RETURN" | "MASQUERADE" | "ACCEPT"
    random_fully: bool = False      # MASQUERADE only


@dataclass(frozen=True)
class RuleSet:
    """One part of what flanneld installs: the masquerade chain or the forward chain."""
    part: str                       # MASQ | FORWARD
    rules: tuple[Rule, ...]


def masq_rules(network: IPv4Network, subnet: IPv4Network, *, random_fully: bool) -> RuleSet:
    def src(net: IPv4Network, negate: bool = False) -> Match:
        return Match("saddr", net, negate)

    def dst(net: IPv4Network, negate: bool = False) -> Match:
        return Match("daddr", net, negate)

    return RuleSet(MASQ, (
        Rule((Match("mark", KUBE_PROXY_MARK),), "RETURN"),
        Rule((src(subnet), dst(network)), "RETURN"),
        Rule((src(network), dst(subnet)), "RETURN"),
        Rule((src(network, True), dst(subnet)), "RETURN"),
        Rule((src(network), dst(MULTICAST, True)), "MASQUERADE", random_fully),
        Rule((src(network, True), dst(network)), "MASQUERADE", random_fully),
    ))


def forward_rules(network: IPv4Network) -> RuleSet:
    return RuleSet(FORWARD, (Rule((Match("saddr", network),), "ACCEPT"),
                             Rule((Match("daddr", network),), "ACCEPT")))


# ---- iptables ---------------------------------------------------------------------------------

def ipt_jump(part: str) -> str:
    """The built-in chain's rule that jumps to ours, as iptables-save prints it."""
    _, chain, parent, comment = IPT_CHAINS[part]
    return f"-A {parent} -m comment --comment {_quote(comment)} -j {chain}"


def ipt_rules(ruleset: RuleSet) -> list[str]:
    """Our chain's rules, exactly as iptables-save prints them (addresses first, then the
    matches in the order given, then the target), so what is read back compares equal."""
    _, chain, _, comment = IPT_CHAINS[ruleset.part]
    lines = []
    for rule in ruleset.rules:
        words = [f"-A {chain}"]
        for m in rule.matches:
            if m.what in ("saddr", "daddr"):
                words.append(f"{'! ' if m.negate else ''}{'-s' if m.what == 'saddr' else '-d'} "
                             f"{m.value}")
        for m in rule.matches:
            if m.what == "mark":
                words.append(f"-m mark --mark {m.value:#x}/{m.value:#x}")
        words.append(f"-m comment --comment {_quote(comment)} -j {rule.verdict}")
        if rule.random_fully:
            words.append("--random-fully")
        lines.append(" ".join(words))
    return lines


def ipt_install_payload(ruleset: RuleSet, jumps_present: int) -> str:
    """iptables-restore --noflush input that leaves exactly our chain and one jump to it.

    Declaring the chain (`:NAME - [0:0]`) creates it or, under --noflush, empties it; every
    existing copy of the jump is deleted and one is appended, as flanneld's bootstrap does.
    One table, one COMMIT: the kernel sees the whole change or none of it."""
    table, chain, _, _ = IPT_CHAINS[ruleset.part]
    jump = ipt_jump(ruleset.part)
    return "\n".join([f"*{table}", f":{chain} - [0:0]",
                      *(["-D" + jump[2:]] * jumps_present), jump, *ipt_rules(ruleset),
                      "COMMIT", ""])


def ipt_remove_payload(part: str, references: list[str]) -> str:
    """Delete every rule that jumps to our chain (`references`, as iptables-save printed
    them), then empty and delete the chain."""
    table, chain, _, _ = IPT_CHAINS[part]
    return "\n".join([f"*{table}", *("-D" + ref[2:] for ref in references),
                      f"-F {chain}", f"-X {chain}", "COMMIT", ""])


def ipt_chain_state(save_output: str, part: str) -> tuple[bool, list[str], list[str], int]:
    """From `iptables-save -t <table>`: (our chain exists, its rules, every rule elsewhere that
    jumps to it, how many copies of our own jump there are)."""
    _, chain, _, _ = IPT_CHAINS[part]
    jump = ipt_jump(part)
    exists, rules, refs, jumps = False, [], [], 0
    for line in save_output.splitlines():
        if line.startswith(f":{chain} "):
            exists = True
        elif line.startswith(f"-A {chain} "):
            rules.append(line)
        elif line.startswith("-A "):
            words = shlex.split(line)
            if len(words) >= 2 and words[-1] == chain and words[-2] in ("-j", "-g", "--jump",
                                                                         "--goto"):
                refs.append(line)
                jumps += line == jump
    return exists, rules, refs, jumps


def _quote(text: str) -> str:
    return f'"{text}"'


# ---- nftables (libnftables' JSON API, as `nft -j` reads and prints it) ----------------------

def nft_rule_exprs(rule: Rule) -> list[dict[str, Any]]:
    """A rule's expressions in the normalized form `nft -j list` prints back."""
    exprs: list[dict[str, Any]] = []
    for m in rule.matches:
        if m.what == "mark":
            exprs.append({"match": {"op": "==", "left": {"&": [{"meta": {"key": "mark"}},
                                                                 m.value]}, "right": m.value}})
        else:
            assert isinstance(m.value, IPv4Network)        # saddr and daddr match networks
            exprs.append({"match": {
                "op": "!=" if m.negate else "==",
                "left": {"payload": {"protocol": "ip", "field": m.what}},
                "right": {"prefix": {"addr": str(m.value.network_address),
                                     "len": m.value.prefixlen}}}})
    if rule.verdict == "MASQUERADE":
        exprs.append({"masquerade": {"flags": "fully-random"} if rule.random_fully else None})
    else:
        exprs.append({rule.verdict.lower(): None})
    return exprs


def nft_chain(part: str, table: str = NFT_TABLE) -> dict[str, Any]:
    name, ctype, hook, prio, _ = NFT_CHAINS[part]
    return {"family": NFT_FAMILY, "table": table, "name": name, "type": ctype,
            "hook": hook, "prio": prio, "policy": "accept"}


def nft_install_commands(ruleset: RuleSet, table: str = NFT_TABLE) -> dict[str, Any]:
    """One nft transaction: table and base chain created if missing (with flannel's comments,
    which nft >= 1.0.8 keeps), the chain emptied, our rules added. Applied atomically."""
    chain = nft_chain(ruleset.part, table)
    cmds: list[dict[str, Any]] = [
        {"add": {"table": {"family": NFT_FAMILY, "name": table,
                           "comment": f"rules for {table}"}}},
        {"add": {"chain": {**chain, "comment": NFT_CHAINS[ruleset.part][4]}}},
        {"flush": {"chain": {"family": NFT_FAMILY, "table": table, "name": chain["name"]}}},
    ]
    for rule in ruleset.rules:
        cmds.append({"add": {"rule": {"family": NFT_FAMILY, "table": table,
                                      "chain": chain["name"], "expr": nft_rule_exprs(rule)}}})
    return {"nftables": cmds}


def nft_expected(ruleset: RuleSet) -> tuple[dict[str, Any], list[list[dict[str, Any]]]]:
    """(chain, rules' expressions) as `nft -j list table` should print them back."""
    return nft_chain(ruleset.part), [nft_rule_exprs(r) for r in ruleset.rules]


def nft_chain_state(listing: dict[str, Any], part: str
                    ) -> tuple[dict[str, Any] | None, list[list[dict[str, Any]]]]:
    """From `nft -j list table ip flannel-ipv4`: our chain (handles dropped) and its rules."""
    name = NFT_CHAINS[part][0]
    chain, rules = None, []
    for item in listing.get("nftables", []):
        if "chain" in item and item["chain"].get("name") == name:
            chain = {k: v for k, v in item["chain"].items() if k != "handle"}
        elif "rule" in item and item["rule"].get("chain") == name:
            rules.append(item["rule"].get("expr", []))
    return chain, rules


def nft_remove_commands(present: list[tuple[str, str]]) -> dict[str, Any]:
    return {"nftables": [{"delete": {"table": {"family": f, "name": n}}} for f, n in present]}


def nft_dumps(doc: dict[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"))
