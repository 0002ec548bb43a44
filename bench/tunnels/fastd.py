"""fastd in tun mode with the `null` method: no encryption, no authentication of the data.

fastd still authenticates its handshake with each side's key pair (it has no keyless
mode), so each node gets one from `fastd --generate-key`. Packets on the wire: IPv4, UDP, a
one-byte packet type, the pod's packet (measured: 29 bytes).
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from bench.tunnels.base import Tunnel, TunnelError, TunnelNode

PORT = 10000


def config(node: TunnelNode, secret: str, peer_public: str, mtu: int) -> str:
    """fastd.conf for one node: one static peer at the other node's underlay address."""
    return "\n".join([
        "log level warn;",
        "mode tun;",
        f'interface "{device_name(node)}";',
        'method "null";',
        f"bind {node.underlay_ip}:{PORT};",
        f"mtu {mtu};",
        f'secret "{secret}";',
        f'peer "{node.peer_name}" {{',
        f'  key "{peer_public}";',
        f"  remote {node.peer_ip}:{PORT};",
        "}",
        ""])


def device_name(node: TunnelNode) -> str:
    return "fastd0"


def parse_key_output(text: str) -> tuple[str, str]:
    """(secret, public) from `fastd --generate-key` (its 'Secret: ...'/'Public: ...' lines)."""
    keys = {}
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("Secret", "Public"):
            keys[name.strip()] = value.strip()
    if set(keys) != {"Secret", "Public"}:
        raise TunnelError(f"fastd --generate-key printed no key pair: {text.strip()!r}")
    return keys["Secret"], keys["Public"]


class Fastd(Tunnel):
    name = "fastd"
    slug = "fastd"
    package = "fastd"
    program = "fastd"
    mtu = 1471          # 1500 - IPv4 20 - UDP 8 - packet type 1: fits the underlay
    overhead = 29
    note = "fastd v22, tun mode, method null: no encryption, one process per node"
    method = ('fastd: `mode tun; method "null"; mtu 1471;` one static peer by underlay '
              "address, key pairs from `fastd --generate-key` (fastd authenticates the "
              "handshake even with the null method)")

    def device(self, node: TunnelNode) -> str:
        return device_name(node)

    def prepare(self, nodes: Sequence[TunnelNode]) -> None:
        pairs = {}
        for node in nodes:
            out = subprocess.run(["fastd", "--generate-key"], capture_output=True, text=True,
                                 timeout=20, check=False)
            pairs[node.index] = parse_key_output(out.stdout)
        for node in nodes:
            secret = pairs[node.index][0]
            peer_public = pairs[3 - node.index][1]
            path = node.workdir / "fastd.conf"
            path.write_text(config(node, secret, peer_public, self.mtu))
            path.chmod(0o600)

    def argv(self, node: TunnelNode) -> list[str]:
        return ["fastd", "--config", str(node.workdir / "fastd.conf")]
