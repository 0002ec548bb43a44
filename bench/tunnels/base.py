"""What every tunnel rung shares: the two nodes as a tunnel sees them, and bringing a tunnel
up on a built lab and down again.

A tunnel rung is a host-gw lab (nodes, pods, flanneld's rules) whose `<peer subnet> via
<peer>` routes are replaced by a layer-3 tunnel between the two nodes: the tool's device in
each node, `<own subnet>.0/32` on it (as flannel puts on flannel.1) and `<peer subnet> dev
<device>`. The pods get the tunnel device's MTU, as flannel gives pods its device's MTU.
"""

from __future__ import annotations

import logging
import os
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

UP_TIMEOUT = 20.0           # seconds for a tool's device to appear and carry a ping
LOG_TAIL = 6                # lines of a tool's log quoted when it fails


class TunnelError(RuntimeError):
    pass


@dataclass(frozen=True)
class TunnelNode:
    """One end of the tunnel: everything a tool's configuration is made from."""
    index: int                  # 1 or 2
    netns: str
    underlay_ip: IPv4Address
    subnet: IPv4Network         # this node's pods
    peer_ip: IPv4Address
    peer_subnet: IPv4Network
    workdir: Path               # config, keys and logs (inside the lab's state dir)
    tag: str = ""               # unique per lab: names shared across namespaces (sockets)

    @property
    def name(self) -> str:
        return f"node{self.index}"

    @property
    def peer_name(self) -> str:
        return f"node{3 - self.index}"

    @property
    def gateway(self) -> IPv4Address:
        """`<subnet>.0`: the address on the tunnel device, as on flannel.1."""
        return self.subnet.network_address


def pair(lab: Any, tag: str) -> list[TunnelNode]:
    """The lab's two nodes, each knowing the other."""
    a, b = lab.node(1), lab.node(2)
    out = []
    for me, peer in ((a, b), (b, a)):
        out.append(TunnelNode(me.index, me.netns, IPv4Address(me.underlay_ip),
                              IPv4Network(me.subnet), IPv4Address(peer.underlay_ip),
                              IPv4Network(peer.subnet), Path(me.dir) / "tunnel", tag))
    return out


class Tunnel:
    """A userspace tunnel tool. Subclasses say how it is configured and started."""
    name = ""                   # the rung's name
    package = ""                # its Debian package
    program = ""                # the binary whose presence means the package is installed
    mtu = 1500                  # the tunnel device's MTU (the pods get it)
    overhead = 0                # bytes each pod packet gains on the underlay (measured)
    note = ""
    method = ""                 # the options used, for the report's method section
    slug = "tunnel"             # file names in the node's work directory
    encrypts = False            # the report's rows say so for one that does

    def available(self) -> str | None:
        from shutil import which
        if which(self.program) is None:
            return f"{self.package} not installed"
        return None

    def device(self, node: TunnelNode) -> str:
        raise NotImplementedError

    def prepare(self, nodes: Sequence[TunnelNode]) -> None:
        """Keys and configuration files, in the host namespace (before anything starts)."""

    def argv(self, node: TunnelNode) -> list[str]:
        """The tool's daemon, run in the node's namespace, in the foreground."""
        raise NotImplementedError

    def start(self, node: TunnelNode, lab: Any, logfile: Path) -> subprocess.Popen[bytes] | None:
        """Start this node's end; a daemon returned is stopped by `Running.down`."""
        with open(logfile, "wb") as out:
            proc: subprocess.Popen[bytes] = lab.popen(
                node.netns, self.argv(node), stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=tunnel_env())
        return proc

    def stop(self, node: TunnelNode) -> None:
        """Undo `start` where stopping the daemon is not enough."""

    def pod_mtu(self, nodes: Sequence[TunnelNode]) -> int:
        return self.mtu

    routes_itself = False       # True: start() installs the device, address and routes

    def configure(self, node: TunnelNode, run: Any) -> None:
        """Anything after the device exists (wireguard-go: its peer through `wg`)."""

    def cleanup(self, node: TunnelNode) -> None:
        """Files a tool leaves outside the lab's state dir."""

    def daemon_pids(self, nodes: Sequence[TunnelNode]) -> list[int]:
        """Processes a start() that returned no daemon left running."""
        return []


def ns_run(netns: str, argv: Sequence[str], *, check: bool = True,
           input: str | None = None, timeout: float = 20.0
           ) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True,
                          input=input, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise TunnelError(f"{netns}: `{' '.join(argv)}` failed: "
                          f"{(proc.stderr or proc.stdout).strip()}")
    return proc


def log_tail(path: Path, lines: int = LOG_TAIL) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return " | ".join(text[-lines:]) or "(empty log)"


def device_exists(netns: str, dev: str) -> bool:
    return ns_run(netns, ["ip", "link", "show", "dev", dev], check=False).returncode == 0


def route_tunnel(node: TunnelNode, dev: str, mtu: int) -> None:
    """Device up with the node's gateway address, the peer's pod subnet through it (the
    host-gw route it replaces is deleted first, so no tunnel means no path)."""
    ns_run(node.netns, ["ip", "link", "set", "dev", dev, "mtu", str(mtu), "up"])
    ns_run(node.netns, ["ip", "addr", "replace", f"{node.gateway}/32", "dev", dev])
    ns_run(node.netns, ["ip", "route", "replace", str(node.peer_subnet), "dev", dev,
                        "src", str(node.gateway)])


def drop_host_gw_route(node: TunnelNode) -> None:
    ns_run(node.netns, ["ip", "route", "del", str(node.peer_subnet)], check=False)


def set_pod_mtu(lab: Any, mtu: int) -> None:
    """Every pod's eth0 gets the tunnel's MTU (what CNI does from subnet.env's FLANNEL_MTU)."""
    for pod in lab.pods:
        ns_run(pod.netns, ["ip", "link", "set", "dev", "eth0", "mtu", str(mtu)])


def wait_ping(node: TunnelNode, timeout: float, why: Any) -> None:
    """Until the peer's `<subnet>.0` answers through the tunnel."""
    deadline = time.monotonic() + timeout
    while True:
        proc = ns_run(node.netns, ["ping", "-c", "1", "-W", "1", "-I", str(node.gateway),
                                   str(node.peer_subnet.network_address)], check=False)
        if proc.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise TunnelError(f"no ping from {node.name} to {node.peer_subnet.network_address}"
                              f" through the tunnel after {timeout:g} s: {why()}")
        time.sleep(0.2)


@dataclass
class Running:
    """A tunnel brought up on a lab: its processes, for measuring and for stopping."""
    tunnel: Tunnel
    nodes: list[TunnelNode]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    logs: list[Path] = field(default_factory=list)
    started: list[TunnelNode] = field(default_factory=list)

    def pids(self) -> list[int]:
        """The tunnel's processes, node 1's first: what the bench measures as daemons."""
        own = [p.pid for p in self.procs if p.poll() is None]
        return own or self.tunnel.daemon_pids(self.nodes)

    def down(self) -> None:
        """Stop the tools (SIGTERM, SIGKILL after 5 s), also when `up` failed half-way."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 5.0
        for proc in self.procs:
            try:
                proc.wait(max(deadline - time.monotonic(), 0))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()
        for node in reversed(self.started):
            try:
                self.tunnel.stop(node)
            except (TunnelError, OSError, subprocess.SubprocessError) as exc:
                log.warning("%s: stopping %s failed: %s", node.netns, self.tunnel.name, exc)
        self.started.clear()
        for node in self.nodes:
            self.tunnel.cleanup(node)


def bring_up(tunnel: Tunnel, lab: Any, tag: str, running: Running | None = None) -> Running:
    """Start `tunnel` between the lab's two nodes and route the pods through it. On failure
    the caller's `running.down()` stops whatever was started."""
    nodes = pair(lab, tag)
    run = running or Running(tunnel, nodes)
    run.nodes = nodes
    for node in nodes:
        node.workdir.mkdir(parents=True, exist_ok=True)
        os.chmod(node.workdir, 0o700)
    tunnel.prepare(nodes)
    for node in nodes:
        drop_host_gw_route(node)
        logf = node.workdir / f"{tunnel.slug}.log"
        run.logs.append(logf)
        run.started.append(node)
        proc = tunnel.start(node, lab, logf)
        if proc is not None:
            run.procs.append(proc)

    def why() -> str:
        dead = [f"{tunnel.program} exited {p.returncode}" for p in run.procs
                if p.poll() is not None]
        return "; ".join(dead + [log_tail(f) for f in run.logs])

    deadline = time.monotonic() + UP_TIMEOUT
    for node in nodes:
        if tunnel.routes_itself:
            continue
        dev = tunnel.device(node)
        while not device_exists(node.netns, dev):
            if time.monotonic() > deadline or any(p.poll() is not None for p in run.procs):
                raise TunnelError(f"{tunnel.name}: no device {dev} in {node.netns}: {why()}")
            time.sleep(0.1)
        tunnel.configure(node, ns_run)
        route_tunnel(node, dev, tunnel.mtu)
    set_pod_mtu(lab, tunnel.pod_mtu(nodes))
    for node in nodes:
        wait_ping(node, max(deadline - time.monotonic(), 2.0), why)
    return run


def tunnel_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env["WG_PROCESS_FOREGROUND"] = "1"      # wireguard-go: stay attached (it is our child)
    return env
