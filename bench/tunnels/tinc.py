"""tinc 1.0 in router mode with `Cipher = none` and `Digest = none`.

Each node is a tinc host with its pod subnet as its `Subnet`; node 1 connects to node 2 (the
meta connection is TCP, the data UDP). tinc 1.0 still exchanges RSA keys on the meta
connection, so each node gets a key pair (`tincd -K`). Packets on the wire: IPv4, UDP, a
4-byte sequence number, then the frame tinc carries with its 14-byte Ethernet header even in
router mode (measured: 46 bytes).
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from bench.tunnels.base import Tunnel, TunnelNode

PORT = 655


def tinc_conf(node: TunnelNode) -> str:
    lines = [f"Name = {node.name}", "Mode = router", f"Interface = {device_name(node)}",
             "AddressFamily = ipv4", f"BindToAddress = {node.underlay_ip}", f"Port = {PORT}"]
    if node.index == 1:
        lines.append(f"ConnectTo = {node.peer_name}")
    return "\n".join(lines) + "\n"


def host_file(name_ip: str, subnet: str, public_key: str) -> str:
    """hosts/<name>: where that host is, what it routes, its key; the data unencrypted."""
    return (f"Address = {name_ip} {PORT}\nSubnet = {subnet}\nCipher = none\nDigest = none\n"
            f"\n{public_key.strip()}\n")


def device_name(node: TunnelNode) -> str:
    return "tinc0"


class Tinc(Tunnel):
    name = "tinc"
    slug = "tinc"
    package = "tinc"
    program = "tincd"
    mtu = 1454          # 1500 - IPv4 20 - UDP 8 - seqno 4 - Ethernet 14: fits the underlay
    overhead = 46
    note = "tinc 1.0, router mode, Cipher = none, Digest = none: no encryption"
    method = ("tinc 1.0: `Mode = router`, `Cipher = none`, `Digest = none` in both host "
              "files, each node's pod subnet as its `Subnet`, node 1 `ConnectTo` node 2; "
              "defaults otherwise (PMTUDiscovery, ClampMSS); the device MTU set to 1454")

    def device(self, node: TunnelNode) -> str:
        return device_name(node)

    def prepare(self, nodes: Sequence[TunnelNode]) -> None:
        hosts = {}
        for node in nodes:
            (node.workdir / "hosts").mkdir(exist_ok=True)
            (node.workdir / "tinc.conf").write_text(tinc_conf(node))
            subprocess.run(["tincd", "-c", str(node.workdir), "-K2048"], capture_output=True,
                           stdin=subprocess.DEVNULL, timeout=60, check=True)
            # With a tinc.conf naming the host, -K puts the public key in hosts/<Name>.
            public = (node.workdir / "hosts" / node.name).read_text()
            hosts[node.name] = host_file(str(node.underlay_ip), str(node.subnet), public)
        for node in nodes:
            for name, text in hosts.items():
                (node.workdir / "hosts" / name).write_text(text)

    def argv(self, node: TunnelNode) -> list[str]:
        return ["tincd", "-c", str(node.workdir), "-D", "-d1",
                f"--pidfile={node.workdir / 'tinc.pid'}"]
