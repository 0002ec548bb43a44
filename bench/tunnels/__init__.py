"""The userspace tunnels people run instead of a pod dataplane, as benchmark rungs, and
`cmd:PATH` for one of your own. Each is a host-gw lab whose pod routes go through the tunnel
(bench.tunnels.base); the tool's own setup is in its module."""

from __future__ import annotations

from bench.tunnels.base import Tunnel, TunnelError
from bench.tunnels.command import PREFIX as CMD_PREFIX
from bench.tunnels.command import CommandTunnel, ask_overhead, check_path
from bench.tunnels.fastd import Fastd
from bench.tunnels.openvpn import OpenVPN
from bench.tunnels.tinc import Tinc
from bench.tunnels.wireguard_go import WireguardGo

__all__ = ["CMD_PREFIX", "TOOLS", "Tunnel", "TunnelError", "command_tunnel"]

TOOLS: tuple[Tunnel, ...] = (Fastd(), OpenVPN(), Tinc(), WireguardGo())


def command_tunnel(spec: str) -> CommandTunnel:
    """The tunnel of a `cmd:PATH` entry; TunnelError (one line) if PATH cannot be one."""
    path = spec[len(CMD_PREFIX):]
    reason = check_path(path)
    if reason is not None:
        raise TunnelError(reason)
    return CommandTunnel(path, ask_overhead(path))
