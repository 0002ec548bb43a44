"""Test doubles for the node's machine, importable by any test (as wireguard-go's tun/tuntest
and conn/bindtest are):

    FakeHost / FakeNetwork   a node in this process, without root: a TUN whose queues are
                             datagram socketpairs, tunnel sockets on loopback, recorded address,
                             MTU, route and netfilter calls (fakehost.py)
    started(node)            run a Node until the block ends (nodes.py)
    DenyingLinuxHost         this kernel with some offloads refused: an older kernel, for the
                             fallbacks (oldkernel.py; `python -m dataplane.testing.oldkernel`
                             runs `dataplane` on it in a subprocess)
"""

from dataplane.testing.fakehost import FakeHost, FakeNetwork, FakeRoutes, FakeTun
from dataplane.testing.nodes import started
from dataplane.testing.oldkernel import DENIABLE, DenyingLinuxHost

__all__ = ["DENIABLE", "DenyingLinuxHost", "FakeHost", "FakeNetwork", "FakeRoutes", "FakeTun",
           "started"]
