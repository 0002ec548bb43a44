"""Large TCP transfers through two daemons with offloads on, and with each offload refused:
the content must arrive intact whichever path the bytes took."""

from __future__ import annotations

import sys
import json
import struct
import subprocess

import pytest

from tests import netns
from tests.daemon.test_lifecycle import metrics

pytestmark = pytest.mark.netns

NBYTES = 24 << 20


def transfer(host, nbytes: int = NBYTES) -> tuple[dict, dict]:
    server = subprocess.Popen(
        ["ip", "netns", "exec", host.peer_ns, sys.executable, "-m", "dataplane.lab.probe",
         "tcp-serve", "10.244.2.0", "7001", "--timeout", "60"],
        stdout=subprocess.PIPE, text=True, env=netns.env())
    try:
        assert server.stdout.readline().strip() == "LISTENING"
        sent = _send(host, nbytes)
        received = json.loads(server.communicate(timeout=60)[0].splitlines()[-1])
    finally:
        server.kill()
        server.wait()
    return sent, received


def _send(host, nbytes: int):
    result = subprocess.run(
        ["ip", "netns", "exec", host.ns, sys.executable, "-m", "dataplane.lab.probe", "tcp-send",
         "10.244.2.0", "7001", str(nbytes), "--seed", "7", "--timeout", "60"],
        capture_output=True, text=True, env=netns.env())
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def start_pair(host, backend: str, *args: str, deny: str | None = None):
    """Nodes a and b on the real kernel; `deny`: offloads it plays having refused (an older
    kernel: dataplane.testing.oldkernel runs the daemon on a DenyingLinuxHost)."""
    # the daemon itself, or the same command line on the test host
    cmd = (netns.dataplane_cmd if deny is None else lambda *a: [
        sys.executable, "-m", "dataplane.testing.oldkernel", "--deny", deny, "--", *a])
    host.config(json.dumps({"Network": "10.244.0.0/16", "Backend": {"Type": backend}}))
    procs = []
    for side, ns, ip, subnet, port in (("a", host.ns, "10.99.0.1", "10.244.1.0/24", 9101),
                                       ("b", host.peer_ns, "10.99.0.2", "10.244.2.0/24", 9102)):
        # A stop leaves subnet.env (as flanneld): readiness is its being written anew.
        (host.tmp / f"{side}.env").unlink(missing_ok=True)
        argv = ["ip", "netns", "exec", ns, *cmd(
            "-v", "run", "--store-dir", str(host.store), "--public-ip", ip, "--subnet", subnet,
            "--subnet-file", str(host.tmp / f"{side}.env"), "--healthz-ip", "127.0.0.1",
            "--healthz-port", str(port), *args)]
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, env=netns.env()))
    for side, proc in zip("ab", procs):
        netns.wait_for(lambda: (host.tmp / f"{side}.env").exists() or proc.poll() is not None,
                       what=f"node {side}")
        assert proc.poll() is None, proc.stdout.read()
    netns.wait_for(lambda: metrics(host.ns, 9101)["dataplane_peers"] == 1, what="peers")
    netns.wait_for(lambda: metrics(host.peer_ns, 9102)["dataplane_peers"] == 1, what="peers")
    return procs


def stop(procs) -> str:
    out = ""
    for proc in procs:
        proc.terminate()
        out += proc.communicate(timeout=15)[0]
    return out


def counter(ns: str, port: int, name: str, direction: str | None = None) -> float:
    key = f'{name}{{direction="{direction}"}}' if direction else name
    return metrics(ns, port)[key]


@pytest.mark.parametrize("backend", ["udp", "vxlan"])
@pytest.mark.parametrize("workers", ["1", "2"])
def test_offloads_on(host, backend, workers):
    procs = start_pair(host, backend, "--workers", workers)
    try:
        sent, received = transfer(host)
        assert received["sha256"] == sent["sha256"] and received["bytes"] == NBYTES
        # the bytes went as super-packets: cut at the sender, coalesced at the receiver
        assert counter(host.ns, 9101, "dataplane_super_packets_total", "egress") > 0
        assert counter(host.peer_ns, 9102, "dataplane_super_packets_total", "ingress") > 0
        assert counter(host.ns, 9101, "dataplane_gso_fallbacks_total") == 0
    finally:
        log = stop(procs)
    assert "offloads: TUN csum,tso4" in log and "UDP_SEGMENT on, UDP_GRO on" in log


@pytest.mark.parametrize("backend,deny", [("vxlan", "tso"), ("vxlan", "gso"), ("vxlan", "gro"),
                                          ("udp", "gso-at-send"), ("vxlan", "gso-at-send"),
                                          ("vxlan", "tso,gso,gro")])
def test_refused_offloads_fall_back(host, backend, deny):
    procs = start_pair(host, backend, "--workers", "1", deny=deny)
    try:
        sent, received = transfer(host)
        assert received["sha256"] == sent["sha256"] and received["bytes"] == NBYTES
        super_egress = counter(host.ns, 9101, "dataplane_super_packets_total", "egress")
        fallbacks = counter(host.ns, 9101, "dataplane_gso_fallbacks_total")
        backoffs = counter(host.ns, 9101, "dataplane_gso_backoffs_total")
    finally:
        log = stop(procs)
    if "tso" in deny:
        assert super_egress == 0 and "offloads: TUN csum;" in log
    if deny == "gso-at-send":
        # each refusal pauses GSO to that peer (1 s, then doubling while retries fail): only
        # the messages of one round (at most two per super-packet, 16 super-packets) can be
        # refused per pause
        assert 1 <= backoffs <= 10 and 1 <= fallbacks <= 32 * backoffs, (fallbacks, backoffs)
    if "gso" in deny.split(","):
        assert "UDP_SEGMENT refused" in log


def test_offload_off_and_python_fast_path_move_the_same_bytes(host):
    for args in (["--offload", "off"], ["--fastpath", "python"]):
        procs = start_pair(host, "vxlan", *args)
        try:
            sent, received = transfer(host, 4 << 20)
            assert received["sha256"] == sent["sha256"]
            assert counter(host.ns, 9101, "dataplane_super_packets_total", "egress") == 0
        finally:
            stop(procs)


# ---- inner checksums as a kernel flannel.1 on veth leaves them ----------------------------

LISTEN = ("import socket,time; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, "
          "socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', 7100)); s.listen(8); "
          "print('LISTENING', flush=True); time.sleep(60)")
SEND = ("import socket,sys; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
        "s.bind(('10.99.0.2', 0)); "
        "[s.sendto(bytes.fromhex(h), ('10.99.0.1', 8472)) for h in sys.argv[1:]]")


def _folded(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def kernel_syn(sport: int, *, mangle: bool = False) -> bytes:
    """A SYN from a pod behind the peer to our node's 10.244.1.0:7100 as a kernel sender on veth
    leaves it: the TCP checksum field holds the folded pseudo-header sum (or, mangled, one
    bit off it: corruption)."""
    src, dst = bytes([10, 244, 2, 5]), bytes([10, 244, 1, 0])
    tcp = bytearray(struct.pack("!HHIIBBHHH", sport, 7100, 1, 0, 0x50, 0x02, 64240, 0, 0))
    psum = _folded(src + dst + struct.pack("!BBH", 0, 6, len(tcp)))
    struct.pack_into("!H", tcp, 16, psum ^ (1 if mangle else 0))
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0,
                               src, dst))
    struct.pack_into("!H", ip, 10, ~_folded(bytes(ip)) & 0xFFFF)
    return bytes(ip + tcp)


def vxlan_to_a(host, inner: bytes) -> bytes:
    leases = host.leases()
    ours = bytes.fromhex(leases["10.244.1.0-24"]["BackendData"]["VtepMAC"].replace(":", ""))
    theirs = bytes.fromhex(leases["10.244.2.0-24"]["BackendData"]["VtepMAC"].replace(":", ""))
    return struct.pack("!II", 0x08000000, 1 << 8) + ours + theirs + b"\x08\x00" + inner


def syn_recv(ns: str) -> str:
    return netns.run("ip", "netns", "exec", ns, "ss", "-Htn", "state", "syn-recv").stdout


@pytest.mark.parametrize("offload", ["on", "off"])
def test_partial_checksums_from_a_kernel_peer_reach_the_stack(host, offload):
    """Crafted as flannel.1 sends them over veth: the partial SYN reaches the listening
    socket (today's kernel stack would drop it as a checksum error), the mangled one is
    dropped by us and counted as bad-l4-checksum."""
    procs = start_pair(host, "vxlan", "--offload", offload)
    listener = subprocess.Popen(["ip", "netns", "exec", host.ns, sys.executable, "-c", LISTEN],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout.readline().strip() == "LISTENING"
        datagrams = [vxlan_to_a(host, kernel_syn(40001)),
                     vxlan_to_a(host, kernel_syn(40002, mangle=True))]
        netns.run("ip", "netns", "exec", host.peer_ns, sys.executable, "-c", SEND,
                  *[d.hex() for d in datagrams])
        netns.wait_for(lambda: "10.244.2.5:40001" in syn_recv(host.ns), what="SYN_RECV")
        key = 'dataplane_drops_total{direction="ingress",reason="bad-l4-checksum"}'
        netns.wait_for(lambda: metrics(host.ns, 9101).get(key) == 1, what="the drop counted")
        assert "10.244.2.5:40002" not in syn_recv(host.ns)
    finally:
        listener.kill()
        listener.wait()
        stop(procs)
