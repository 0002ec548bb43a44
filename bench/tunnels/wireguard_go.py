"""wireguard-go, the userspace WireGuard, configured with `wg` as wg-quick would.

It ENCRYPTS (ChaCha20-Poly1305): the only rung here whose figures include a cipher. There
is no kernel WireGuard module on this machine, so wireguard-go runs on its own TUN device.
MTU 1420, wg-quick's default (room for an IPv6 underlay); on IPv4 each packet gains 60 bytes:
IPv4 20, UDP 8, WireGuard data header 16, Poly1305 tag 16 (plus padding to 16 bytes).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Sequence
from typing import Any

from bench.tunnels.base import Tunnel, TunnelError, TunnelNode

PORT = 51820
SOCKET_DIR = "/var/run/wireguard"     # wireguard-go's UAPI sockets: shared by all namespaces
SOCKET_TIMEOUT = 10.0


def setconf(private_key: str, peer_public: str, node: TunnelNode) -> str:
    """`wg setconf` text: our key and port, the peer at its underlay address, allowed to
    send from its pod subnet and its `<subnet>.0`."""
    return (f"[Interface]\nPrivateKey = {private_key}\nListenPort = {PORT}\n\n"
            f"[Peer]\nPublicKey = {peer_public}\nEndpoint = {node.peer_ip}:{PORT}\n"
            f"AllowedIPs = {node.peer_subnet}\n")


def device_name(node: TunnelNode) -> str:
    # Unique across namespaces: wireguard-go names its UAPI socket after the device.
    return f"wg{node.tag}{node.index}"[:15]


class WireguardGo(Tunnel):
    name = "wireguard-go"
    slug = "wireguard_go"
    package = "wireguard-go"
    program = "wireguard-go"
    mtu = 1420
    encrypts = True
    overhead = 60
    note = "wireguard-go + wg, MTU 1420: ENCRYPTS (ChaCha20-Poly1305), unlike the others"
    method = ("wireguard-go: `wireguard-go -f <dev>` (userspace TUN: no kernel module here), "
              "keys from `wg genkey`, `wg setconf` with ListenPort 51820, the peer's Endpoint "
              "and AllowedIPs = its pod subnet, MTU 1420 (wg-quick's default); it encrypts "
              "with ChaCha20-Poly1305")

    def available(self) -> str | None:
        from shutil import which
        if which("wireguard-go") is None:
            return "wireguard-go not installed"
        if which("wg") is None:
            return "wireguard-tools not installed"
        return None

    def device(self, node: TunnelNode) -> str:
        return device_name(node)

    def prepare(self, nodes: Sequence[TunnelNode]) -> None:
        keys = {}
        for node in nodes:
            private = subprocess.run(["wg", "genkey"], capture_output=True, text=True,
                                     check=True).stdout.strip()
            public = subprocess.run(["wg", "pubkey"], input=private, capture_output=True,
                                    text=True, check=True).stdout.strip()
            keys[node.index] = (private, public)
        for node in nodes:
            path = node.workdir / "wg.conf"
            path.write_text(setconf(keys[node.index][0], keys[3 - node.index][1], node))
            path.chmod(0o600)

    def argv(self, node: TunnelNode) -> list[str]:
        return ["wireguard-go", "-f", device_name(node)]

    def configure(self, node: TunnelNode, run: Any) -> None:
        # The TUN device appears before the UAPI socket; without the socket `wg` falls back
        # to the kernel's netlink family, which does not exist here.
        sock = os.path.join(SOCKET_DIR, device_name(node) + ".sock")
        deadline = time.monotonic() + SOCKET_TIMEOUT
        while not os.path.exists(sock):
            if time.monotonic() > deadline:
                raise TunnelError(f"wireguard-go made no socket {sock} in {SOCKET_TIMEOUT:g} s")
            time.sleep(0.05)
        run(node.netns, ["wg", "setconf", device_name(node), str(node.workdir / "wg.conf")])

    def cleanup(self, node: TunnelNode) -> None:
        for suffix in (".sock", ".name"):
            try:
                os.unlink(os.path.join(SOCKET_DIR, device_name(node) + suffix))
            except FileNotFoundError:
                pass
