"""The daemon's logic between two in-process nodes (FakeHost, one directory store, no root):
peers joining and leaving without a restart, forged datagrams counted by reason and dropped,
and what the network config sets (MTU, MacPrefix, unknown options). Each runs for both
backends and both fast paths where the namespace tests did."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct

import pytest

from dataplane.daemon.decommission import decommission
from dataplane.daemon.node import vtep_mac
from dataplane.fastpath import pyref
from dataplane.store.directory import DirectoryStore
from tests.daemon.inprocess import in_cluster, leases, metrics, until
from tests.wire.pkts import inner_udp

BACKENDS = ["udp", "vxlan"]
FASTPATHS = ["c", "python"]
both = pytest.mark.parametrize("backend,fastpath", [(b, f) for b in BACKENDS for f in FASTPATHS],
                               ids=lambda p: p)


async def ping(src_tun, dst_tun, src: str, dst: str) -> bool:
    """One datagram from a pod behind src_tun to dst: True if it reaches dst_tun intact."""
    sent = inner_udp(src=src, dst=dst)
    src_tun.send(sent)
    try:
        got = await asyncio.to_thread(dst_tun.recv, 2.0)
    except TimeoutError:
        return False
    return got[12:] == sent[12:]


async def release(cluster, side: str) -> list[str]:
    """Decommission a stopped node, as `dataplane leases release --subnet-file` does (the host
    clean-up steps, netfilter and routes, are the namespace tests' business)."""
    store = DirectoryStore(cluster.store)
    try:
        job = await decommission(store, subnet_file=str(cluster.env_file(side)), steps=[])
    finally:
        await store.close()
    assert any("released lease" in line for line in job.done), job.done
    return job.done


@both
def test_join_and_leave_without_restart(tmp_path, backend, fastpath):
    async def test(cluster):
        a = await cluster.start("a")
        assert metrics(a)["dataplane_peers"] == 0
        b = await cluster.start("b")
        await until(lambda: metrics(a)["dataplane_peers"] == 1, "b joins")
        tun_a, tun_b = a.host.tun(), b.host.tun()
        assert await ping(tun_a, tun_b, "10.244.1.5", "10.244.2.0")
        await cluster.stop("b")
        # A stopped node keeps its lease: a restart is not a leave (its pods keep their subnet).
        await asyncio.sleep(1.5)                          # three polls of the directory store
        assert metrics(a)["dataplane_peers"] == 1
        await release(cluster, "b")
        await until(lambda: metrics(a)["dataplane_peers"] == 0, "b leaves")
        # nowhere to send it now: a answers its own pod with ICMP net unreachable
        tun_a.send(inner_udp(src="10.244.1.5", dst="10.244.2.0"))
        reply = await asyncio.to_thread(tun_a.recv)
        assert reply[9] == 1 and reply[20:22] == b"\x03\x00", reply.hex()
    in_cluster(tmp_path, test, backend=backend, fastpath=fastpath)


def _ipv4(src: str, dst: str, payload: bytes = b"x" * 8, proto: int = 17) -> bytes:
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0, 64, proto,
                                0, socket.inet_aton(src), socket.inet_aton(dst)))
    struct.pack_into("!H", hdr, 10, pyref.checksum(bytes(hdr)))
    return bytes(hdr) + payload


@both
def test_forged_datagrams_are_counted_and_dropped(tmp_path, backend, fastpath):
    async def test(cluster):
        a = await cluster.start("a")
        b = await cluster.start("b")
        await until(lambda: metrics(a)["dataplane_peers"] == 1, "b joins")
        tun_a, tun_b = a.host.tun(), b.host.tun()
        assert await ping(tun_a, tun_b, "10.244.1.5", "10.244.2.0")
        ip_a, ip_b = a.underlay.address, b.underlay.address
        stranger = cluster.net.address(3)                 # an address that holds no lease
        port = 8285 if backend == "udp" else 8472
        mac_a, mac_b = vtep_mac(ip_a, 1), vtep_mac(ip_b, 1)

        def wrap(inner: bytes) -> bytes:
            return inner if backend == "udp" else pyref.vxlan_encap(inner, 1, mac_a, mac_b)

        forged = [
            (stranger, wrap(_ipv4("10.244.2.5", "10.244.1.5")), "unknown-peer"),
            (ip_b, wrap(_ipv4("10.244.9.5", "10.244.1.5")), "spoofed-source"),
            (ip_b, wrap(_ipv4("10.244.2.5", "10.244.3.5")), "not-local"),
            (ip_b, wrap(_ipv4("10.244.2.5", "10.244.1.5")[:2] + b"\x00\x0a" + os.urandom(28)),
             "bad-ip-header"),                                # total length 10 < header 20
            (ip_b, wrap(b"\x60" + os.urandom(40)), "bad-ip-version"),
            (ip_b, b"", "truncated"),
        ]
        if backend == "vxlan":
            forged += [(ip_b, pyref.vxlan_encap(_ipv4("10.244.2.5", "10.244.1.5"), 2, mac_a,
                                                mac_b), "wrong-vni"),
                       (ip_b, pyref.vxlan_encap(_ipv4("10.244.2.5", "10.244.1.5"), 1,
                                                b"\x02" * 6, mac_b), "wrong-inner-mac")]
        before = metrics(a)
        for src, data, _ in forged:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind((src, 0))
                s.sendto(data, (ip_a, port))
        for _src, _data, reason in forged:
            key = f'dataplane_drops_total{{direction="ingress",reason="{reason}"}}'
            await until(lambda key=key: metrics(a).get(key, 0) > before.get(key, 0),
                        f"a drop counted as {reason}", timeout=5)
        # and the node still forwards
        received = metrics(a)['dataplane_packets_total{direction="ingress"}']
        assert await ping(tun_b, tun_a, "10.244.2.5", "10.244.1.0")
        assert metrics(a)['dataplane_packets_total{direction="ingress"}'] > received
    in_cluster(tmp_path, test, backend=backend, fastpath=fastpath)


def vxlan_config(**backend) -> dict:
    return {"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", **backend}}


def test_mtu_option_sets_the_tun_mtu_and_subnet_env(tmp_path):
    async def test(cluster):
        a = await cluster.start("a")
        assert a.host.links["flannel.1"].mtu == 1350
        assert "FLANNEL_MTU=1350" in cluster.env_file("a").read_text()
    in_cluster(tmp_path, test, config=vxlan_config(MTU=1400))


def test_mac_prefix_sets_the_published_vtep_mac(tmp_path):
    async def test(cluster):
        a = await cluster.start("a")
        lease = leases(cluster.store)["10.244.1.0-24"]
        ip = bytes(int(o) for o in a.underlay.address.split("."))
        assert lease["BackendData"]["VtepMAC"] == "0e:2a:" + ":".join(f"{o:02x}" for o in ip)
    in_cluster(tmp_path, test, config=vxlan_config(MacPrefix="0E-2A"))


def test_unknown_option_is_logged_by_name(tmp_path, caplog):
    caplog.set_level(logging.INFO)

    async def test(cluster):
        await cluster.start("a")
        await cluster.stop("a")
    in_cluster(tmp_path, test, config=vxlan_config(DirectRoute=True))
    assert "Backend.DirectRoute: unknown option, ignored" in caplog.text


def test_blackhole_route_and_netfilter_rules_are_asked_of_the_host(tmp_path):
    """--ip-blackhole-route and --ip-masq reach the host for our subnet (the kernel's side of
    them: tests/daemon/test_netfilter.py, in a namespace)."""
    async def test(cluster):
        a = await cluster.start("a", blackhole_route=True, ip_masq=True)
        await until(lambda: a.host.blackholes == {"10.244.1.0/24"}, "the blackhole route")
        (rules,) = a.host.traffic
        assert (str(rules.network), str(rules.subnet), rules.ip_masq) == (
            "10.244.0.0/16", "10.244.1.0/24", True)
    in_cluster(tmp_path, test)


def test_unknown_offload_refusal_is_refused(capsys):
    from dataplane.testing import DenyingLinuxHost
    from dataplane.testing.oldkernel import main
    with pytest.raises(ValueError, match="cannot deny tsx"):
        DenyingLinuxHost({"tso", "tsx"})
    with pytest.raises(SystemExit):
        main(["--deny", "tsx", "--", "run"])
    assert "cannot deny tsx" in capsys.readouterr().err
