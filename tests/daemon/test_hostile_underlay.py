"""Three daemons on one switch, and a bad day on the underlay (issue 9, items 1 and 2).

    a (10.99.0.1, 10.244.1.0/24) ─┐
    b (10.99.0.2, 10.244.2.0/24) ─┼─ bridge in a namespace of its own
    c (10.99.0.3, 10.244.3.0/24) ─┘  (+ 10.99.0.9 on c: an address that holds no lease)

- The path MTU from a to b falls below the segment stride, by a route (`mtu lock`) or by an
  ICMP "fragmentation needed" forged from c for our tunnel port: TCP from a to b keeps flowing,
  verified; the counters say that UDP_SEGMENT was refused for being too big and paused; a to c
  keeps using UDP_SEGMENT.
- 10.99.0.9 floods a with UDP_GRO runs of 128 segments while b sends to a: the transfer is
  verified and none of b's datagrams is dropped as oversize.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from scapy.layers.inet import ICMP, IP, UDP

from tests import netns
from tests.daemon.test_lifecycle import metrics

pytestmark = pytest.mark.netns

NBYTES = 8 << 20
SIDES = {"a": 1, "b": 2, "c": 3}


@dataclass
class Trio:
    ns: dict[str, str]
    dev: dict[str, str]
    store: Path
    tmp: Path

    def ip(self, *args: str) -> str:
        return netns.run("ip", *args).stdout


@pytest.fixture
def trio(tmp_path):
    netns.require_root()
    p = netns.prefix()
    names = {side: f"{p}-{side}" for side in (*SIDES, "sw")}
    try:
        for name in names.values():
            netns.netns_add(name)
        sw = names["sw"]
        netns.run("ip", "-n", sw, "link", "add", f"{p}br", "type", "bridge")
        netns.run("ip", "-n", sw, "link", "set", f"{p}br", "up")
        for side, n in SIDES.items():
            netns.run("ip", "link", "add", f"{p}{side}", "netns", names[side], "type", "veth",
                      "peer", "name", f"{p}{side}s", "netns", sw)
            netns.run("ip", "-n", sw, "link", "set", f"{p}{side}s", "master", f"{p}br", "up")
            netns.run("ip", "-n", names[side], "addr", "add", f"10.99.0.{n}/24", "dev",
                      f"{p}{side}")
            netns.run("ip", "-n", names[side], "link", "set", f"{p}{side}", "up")
        netns.run("ip", "-n", names["c"], "addr", "add", "10.99.0.9/24", "dev", f"{p}c")
        store = tmp_path / "store"
        store.mkdir()
        yield Trio(names, {side: f"{p}{side}" for side in SIDES}, store, tmp_path)
    finally:
        for name in names.values():
            netns.netns_del(name)


def start(trio: Trio, backend: str) -> list[subprocess.Popen]:
    (trio.store / "config").write_text(json.dumps({"Network": "10.244.0.0/16",
                                                   "Backend": {"Type": backend}}))
    procs = []
    try:
        for side, n in SIDES.items():
            argv = ["ip", "netns", "exec", trio.ns[side], *netns.dataplane_cmd(
                "-v", "run", "--store-dir", str(trio.store), "--public-ip", f"10.99.0.{n}",
                "--subnet", f"10.244.{n}.0/24", "--subnet-file", str(trio.tmp / f"{side}.env"),
                "--healthz-port", str(9200 + n), "--workers", "1")]
            procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE,
                                          stderr=subprocess.STDOUT, text=True, env=netns.env()))
        for side, proc in zip(SIDES, procs):
            netns.wait_for(lambda: (trio.tmp / f"{side}.env").exists() or proc.poll() is not None,
                           timeout=20, what=f"node {side}")
            assert proc.poll() is None, proc.stdout.read()
        for side, n in SIDES.items():
            netns.wait_for(lambda: metrics(trio.ns[side], 9200 + n)["dataplane_peers"] == 2,
                           timeout=20, what=f"peers of {side}")
    except BaseException:
        stop(procs)
        raise
    return procs


def stop(procs) -> str:
    out = ""
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            out += proc.communicate(timeout=15)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            out += proc.communicate()[0]
    return out


def transfer(trio: Trio, src: str, dst: str, nbytes: int = NBYTES) -> None:
    """A verified TCP transfer from a pod address of src to one of dst."""
    addr = f"10.244.{SIDES[dst]}.0"
    server = subprocess.Popen(
        ["ip", "netns", "exec", trio.ns[dst], "python3", "-m", "dataplane.lab.probe",
         "tcp-serve", addr, "7001", "--timeout", "90"],
        stdout=subprocess.PIPE, text=True, env=netns.env())
    try:
        assert server.stdout.readline().strip() == "LISTENING"
        sent = subprocess.run(
            ["ip", "netns", "exec", trio.ns[src], "python3", "-m", "dataplane.lab.probe",
             "tcp-send", addr, "7001", str(nbytes), "--seed", "9", "--timeout", "90"],
            capture_output=True, text=True, env=netns.env())
        assert sent.returncode == 0, sent.stderr
        got = json.loads(server.communicate(timeout=90)[0].splitlines()[-1])
        want = json.loads(sent.stdout)
        assert (got["sha256"], got["bytes"]) == (want["sha256"], nbytes)
    finally:
        server.kill()
        server.wait()


def counters(trio: Trio, side: str) -> dict[str, float]:
    m = metrics(trio.ns[side], 9200 + SIDES[side])
    return {
        "fallbacks": m["dataplane_gso_fallbacks_total"],
        "too_big": m["dataplane_gso_fallbacks_too_big_total"],
        "backoffs": m["dataplane_gso_backoffs_total"],
        "gso_sends": m["dataplane_gso_sends_total"],
        "egress_drops": sum(v for k, v in m.items()
                            if k.startswith('dataplane_drops_total{direction="egress"')),
        "oversize_in": m.get('dataplane_drops_total{direction="ingress",reason="oversize"}', 0),
        "unknown_in": m.get('dataplane_drops_total{direction="ingress",reason="unknown-peer"}',
                            0),
        "refused": m["dataplane_leases_refused"],
    }


def forge_frag_needed(trio: Trio, port: int, mtu: int) -> None:
    """From c: ICMP 'fragmentation needed, next-hop MTU mtu' to a, quoting a datagram a sent
    from our tunnel port to b's. Nothing checks that a ever sent it."""
    quoted = bytes(IP(src="10.99.0.1", dst="10.99.0.2", flags="DF", len=1500) /
                   UDP(sport=port, dport=port, len=1480))[:28]
    pkt = bytes(IP(src="10.99.0.3", dst="10.99.0.1") / ICMP(type=3, code=4, nexthopmtu=mtu) /
                quoted)
    code = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_RAW, "
            f"socket.IPPROTO_RAW); s.sendto(bytes.fromhex('{pkt.hex()}'), ('10.99.0.1', 0))")
    netns.run("ip", "netns", "exec", trio.ns["c"], "python3", "-c", code)


@pytest.mark.parametrize("how", ["route-mtu", "forged-icmp"])
def test_a_smaller_path_mtu_to_one_peer_does_not_black_hole_it(trio, how):
    backend = "udp" if how == "route-mtu" else "vxlan"
    procs = start(trio, backend)
    try:
        if how == "route-mtu":
            trio.ip("-n", trio.ns["a"], "route", "add", "10.99.0.2/32", "dev", trio.dev["a"],
                    "mtu", "lock", "1200")
        else:
            forge_frag_needed(trio, 8472, 1200)
            netns.wait_for(lambda: "mtu 1200" in trio.ip("-n", trio.ns["a"], "route", "get",
                                                          "10.99.0.2"),
                           what="the forged ICMP to lower a's path MTU to b")
        before = counters(trio, "a")
        transfer(trio, "a", "b")
        to_b = counters(trio, "a")
        assert to_b["fallbacks"] > before["fallbacks"] and to_b["too_big"] > before["too_big"]
        assert 1 <= to_b["backoffs"] <= 10                   # paused, retried now and then
        assert to_b["fallbacks"] <= 32 * to_b["backoffs"]    # one round's messages a pause
        assert to_b["egress_drops"] == 0
        transfer(trio, "a", "c")                             # the other peer keeps GSO
        to_c = counters(trio, "a")
        assert to_c["gso_sends"] - to_b["gso_sends"] > 100
        assert to_c["fallbacks"] == to_b["fallbacks"] and to_c["egress_drops"] == 0
    finally:
        stop(procs)


FLOOD = """
import socket, struct, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("10.99.0.9", 0))
run = b"\\x45" * (100 * 128)
cmsg = [(17, 103, struct.pack("H", 100))]        # UDP_SEGMENT: 128 segments of 100 bytes
print("FLOODING", flush=True)
while True:
    for _ in range(40):
        s.sendmsg([run], cmsg, 0, ("10.99.0.1", PORT))
    time.sleep(0.002)
"""


def test_an_unleased_flood_of_gro_runs_does_not_starve_a_leased_peer(trio):
    procs = start(trio, "vxlan")
    flood = subprocess.Popen(["ip", "netns", "exec", trio.ns["c"], "python3", "-c",
                              FLOOD.replace("PORT", "8472")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert flood.stdout.readline().strip() == "FLOODING", flood.stderr.read()
        netns.wait_for(lambda: counters(trio, "a")["unknown_in"] > 10_000, what="the flood")
        transfer(trio, "b", "a")
        after = counters(trio, "a")
        assert flood.poll() is None, flood.stderr.read()
        assert after["unknown_in"] > 10_000
        assert after["oversize_in"] == 0
    finally:
        flood.kill()
        flood.wait()
        stop(procs)


def test_a_lease_covering_ours_is_refused_by_every_node(trio):
    """A /16 left in the store (an older SubnetLen, or a forged lease): no node makes it a
    peer, each logs it once, and traffic between the real leases goes on."""
    procs = start(trio, "vxlan")
    try:
        (trio.store / "subnets" / "10.244.0.0-16").write_text(json.dumps(
            {"PublicIP": "10.99.0.9", "PublicIPv6": None, "BackendType": "vxlan",
             "BackendData": {"VNI": 1, "VtepMAC": "02:00:00:00:00:09"}}))
        for side, n in SIDES.items():
            netns.wait_for(lambda: counters(trio, side)["refused"] == 1, timeout=15,
                           what=f"{side} to refuse the /16")
            assert metrics(trio.ns[side], 9200 + n)["dataplane_peers"] == 2
        transfer(trio, "a", "b", 1 << 20)
    finally:
        log = stop(procs)
    assert log.count("refusing lease 10.244.0.0/16 of 10.99.0.9: it overlaps our own") == 3
