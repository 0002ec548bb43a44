"""The pure-Python reference of the hot path.

Every function here has a twin in csrc/ with the same name and meaning (exposed through
cnative.py), and every module a twin C file, to be read side by side:

    checksums.py   csum.c, csum64.c      packet.py      packet.c, l4csum.c
    routes.py      routes.c              gso.py         gso.c
    gro.py         gro.c                 forward.py     forward.c (state: peers, counters, ICMP)
    egress.py      egress.c              ingress.py     ingress.c (the decisions and the loops)
    tun_adapter.py tun_adapter.c         udp_adapter.py udp_adapter.c (the syscalls)

The property tests hold the two to identical bytes and identical drop reasons, and
`--fastpath python` runs the daemon on this package, one packet per syscall: the bottom rung of
the benchmark ladder and the behaviour of flannel's own proxy. It never offloads; the offload
drains of C are held to compositions of gso_segment, Forwarder.egress/ingress and gro_coalesce
(tests/offload/drain_rig.py).
"""

from __future__ import annotations

from dataplane.fastpath.pyref.checksums import (
    checksum,
    csum_copy,
    csum_fold,
    csum_partial,
    csum_update16,
)
from dataplane.fastpath.pyref.egress import Egress as _Egress
from dataplane.fastpath.pyref.gro import gro_coalesce
from dataplane.fastpath.pyref.gso import gso_segment
from dataplane.fastpath.pyref.ingress import Ingress as _Ingress
from dataplane.fastpath.pyref.packet import (
    flow_hash,
    flow_sport,
    icmp_net_unreachable,
    ipv4_validate,
    l4_csum,
    l4_csum_complete,
    outer_udp4,
    super_gso,
    super_vnet,
    ttl_decrement,
    udp_decap,
    vxlan_check,
    vxlan_decap,
    vxlan_encap,
    vxlan_header,
)
from dataplane.fastpath.pyref.routes import RouteTable
from dataplane.fastpath.types import URING_OFF, ip_to_int

NAME = "python"


class Forwarder(_Egress, _Ingress):
    """One node's hot path: the state of forward.py, the flows of egress.py and ingress.py."""

    impl = NAME

    def tun_uring(self, tun_fd: int, max_mode: int) -> int:
        """csrc/tun_adapter.c:dp_fwd_tun_uring: the twin keeps plain reads and writes (the
        packets moved are the same either way; only the syscalls differ)."""
        return URING_OFF

    def tun_wait_fd(self, tun_fd: int) -> int:
        """csrc/tun_adapter.c:dp_fwd_tun_wait_fd: the TUN itself, as with --tun-uring off."""
        return tun_fd


__all__ = [
    "NAME", "Forwarder", "RouteTable", "checksum", "csum_copy", "csum_fold",
    "csum_partial", "csum_update16", "flow_hash", "flow_sport", "gro_coalesce", "gso_segment",
    "icmp_net_unreachable", "ip_to_int", "ipv4_validate", "l4_csum", "l4_csum_complete",
    "outer_udp4", "super_gso", "super_vnet", "ttl_decrement", "udp_decap", "vxlan_check",
    "vxlan_decap", "vxlan_encap", "vxlan_header",
]
