"""OpenVPN 2.6 point-to-point over UDP, tun device, with no cipher and no HMAC.

No TLS and no static key: the peers are fixed by address (`--remote`), and 2.6 needs the
cipher refused in both its places (`--cipher none`, `--data-ciphers none`). `--fast-io`
writes to the UDP socket without polling for writability first. Packets on the wire: IPv4,
UDP, the pod's packet: without TLS or a key there is no opcode byte either (measured: 28
bytes).
"""

from __future__ import annotations

from bench.tunnels.base import Tunnel, TunnelNode

PORT = 1194


def argv(node: TunnelNode, mtu: int) -> list[str]:
    return ["openvpn", "--dev", device_name(node), "--dev-type", "tun",
            "--proto", "udp", "--local", str(node.underlay_ip), "--lport", str(PORT),
            "--remote", str(node.peer_ip), "--rport", str(PORT),
            "--cipher", "none", "--data-ciphers", "none", "--auth", "none",
            "--fast-io", "--tun-mtu", str(mtu), "--mssfix", "0",
            "--ping", "10", "--ping-restart", "60", "--verb", "3"]


def device_name(node: TunnelNode) -> str:
    return "ovpn0"


class OpenVPN(Tunnel):
    name = "openvpn"
    slug = "openvpn"
    package = "openvpn"
    program = "openvpn"
    mtu = 1472          # 1500 - IPv4 20 - UDP 8: without crypto a data packet has no opcode
    overhead = 28
    note = "OpenVPN 2.6 p2p, UDP, tun, --cipher none --auth none --fast-io: no encryption"
    method = ("OpenVPN: `--dev-type tun --proto udp --local A --remote B --cipher none "
              "--data-ciphers none --auth none --fast-io --tun-mtu 1472 --mssfix 0` (p2p, no "
              "TLS, no static key; the tun MTU fits the underlay, so no --mssfix clamp is "
              "needed)")

    def device(self, node: TunnelNode) -> str:
        return device_name(node)

    def argv(self, node: TunnelNode) -> list[str]:
        return argv(node, self.mtu)
