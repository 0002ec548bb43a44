"""Two Nodes in one process, over FakeHost and one directory store: a packet a pod of each sends
reaches the other's TUN, through the real forwarders and loopback UDP. No root, no namespace
(as wireguard-go's genTestPair)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from ipaddress import IPv4Network

import pytest

from dataplane.daemon.node import Node, NodeOptions
from dataplane.store.directory import DirectoryStore
from dataplane.testing import FakeNetwork, started
from tests.daemon.inprocess import until
from tests.wire.pkts import inner_udp


@contextlib.asynccontextmanager
async def pair(tmp_path, backend: str = "udp", fastpath: str = "c", **options):
    """Nodes a (10.244.1.0/24) and b (10.244.2.0/24), each aware of the other."""
    (tmp_path / "store").mkdir(exist_ok=True)
    (tmp_path / "store" / "config").write_text(json.dumps(
        {"Network": "10.244.0.0/16", "Backend": {"Type": backend}}))
    net = FakeNetwork()
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(net.close)
        nodes = []
        for i in (1, 2):
            store = DirectoryStore(tmp_path / "store")
            stack.push_async_callback(store.close)
            node = Node(NodeOptions(store=store, subnet=IPv4Network(f"10.244.{i}.0/24"),
                                    subnet_file=str(tmp_path / f"{i}.env"), fastpath=fastpath,
                                    host=net.host(), **options))
            await stack.enter_async_context(started(node))
            nodes.append(node)
        for node in nodes:
            await until(lambda n=node: len(n.peers) == 1, "the peer's lease")
        yield nodes


@pytest.mark.parametrize("fastpath", ["c", "python"])
@pytest.mark.parametrize("backend", ["udp", "vxlan"])
def test_two_nodes_forward_both_ways(tmp_path, backend, fastpath):
    async def main():
        async with pair(tmp_path, backend, fastpath, workers=2) as (a, b):
            tun_a, tun_b = a.host.tun(), b.host.tun()
            for here, there, src, dst in ((tun_a, tun_b, "10.244.1.5", "10.244.2.7"),
                                          (tun_b, tun_a, "10.244.2.5", "10.244.1.7")):
                sent = inner_udp(src=src, dst=dst)
                here.send(sent)
                got = await asyncio.to_thread(there.recv)
                assert got[12:] == sent[12:]          # addresses and payload, as sent
                # flannel's udp routes (each node takes one off the TTL); VXLAN bridges
                assert got[8] == sent[8] - (2 if backend == "udp" else 0)
            assert a.host.links[a.tun_name].address == "10.244.1.0"
            assert b.host.links[b.tun_name].mtu == 1500 - (28 if backend == "udp" else 50)
        assert tun_a.closed and tun_b.closed
    asyncio.run(main())
