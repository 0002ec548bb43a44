"""One dataplane's lab as the harness sees it: two nodes, one pod on each, the client pod on
node 1 and the server pod on node 2. The only module that talks to `dataplane.lab`.

Lab prefixes carry the harness's pid (`b<pid><letter>`), so labs left behind by a harness
that was killed outright can be recognised and removed by the next run. The harness keeps its
labs' state under a root of its own, apart from the labs people build by hand, so that
cleaning up one set never touches the other.
"""

from __future__ import annotations

import functools
import os
import re
import string
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from bench.ladder import Dataplane
from bench.parsers import LinkCounters, ip_link_stats

PREFIX_RE = re.compile(r"^b(\d+)[a-z]$")
UNDERLAY_MTU = 1500
STATE_ROOT = "/run/dataplane-bench/labs"


def lab_module():
    """dataplane.lab, or None when this build has no lab (the command then says so)."""
    try:
        import dataplane.lab as lab
        lab.Lab           # noqa: B018  (resolves the lazy name: fails here if incomplete)
        return lab
    except (ImportError, AttributeError):
        return None


def available(dp: Dataplane) -> str | None:
    """Why this dataplane cannot run in this build, or None if it can."""
    lab = lab_module()
    if lab is None:
        return "no dataplane.lab in this build"
    from dataplane.lab.flannel import BACKENDS
    if dp.backend not in BACKENDS:
        return f"the lab has no {dp.backend} backend"
    if dp.tunnel is not None:
        return dp.tunnel.available()
    if dp.runs_daemon:
        try:
            import dataplane.daemon.node  # noqa: F401  (the daemon and all it imports)
        except ImportError as exc:
            return f"the node daemon does not import in this build: {exc}"
    if dp.needs_run_flag and dp.needs_run_flag not in run_flags():
        return f"`dataplane run` has no {dp.needs_run_flag} in this build"
    return None


@functools.cache
def run_flags() -> frozenset[str]:
    """The long flags `python3 -m dataplane run --help` lists (asked once per process)."""
    proc = subprocess.run([sys.executable, "-m", "dataplane", "run", "--help"],
                          capture_output=True, text=True, timeout=60, check=False)
    return frozenset(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", proc.stdout))


def prefixes(count: int, pid: int | None = None) -> list[str]:
    pid = os.getpid() if pid is None else pid
    if count > len(string.ascii_lowercase):
        raise ValueError(f"at most {len(string.ascii_lowercase)} dataplanes in one run")
    return [f"b{pid}{string.ascii_lowercase[i]}" for i in range(count)]


def remove_stale_labs() -> list[str]:
    """Tear down labs of earlier harness runs whose process no longer exists."""
    lab = lab_module()
    if lab is None:
        return []
    if not os.path.isdir(STATE_ROOT):
        return []
    removed = []
    for prefix in sorted(os.listdir(STATE_ROOT)):
        m = PREFIX_RE.match(prefix)
        if m and int(m.group(1)) != os.getpid() and not os.path.exists(f"/proc/{m.group(1)}"):
            lab.teardown(prefix, STATE_ROOT)
            removed.append(prefix)
    return removed


@dataclass
class Endpoint:
    netns: str
    ip: str
    node_netns: str


class Topology:
    def __init__(self, dp: Dataplane, prefix: str) -> None:
        lab = lab_module()
        self.dp = dp
        self.prefix = prefix
        self.lab = lab.Lab(prefix, nodes=2, pods=1, backend=dp.backend, fastpath=dp.fastpath,
                           daemon_args=list(dp.daemon_args), underlay_mtu=UNDERLAY_MTU,
                           direct_routing=dp.direct_routing,
                           state_root=STATE_ROOT)
        self.client: Endpoint | None = None
        self.server: Endpoint | None = None
        self.tunnel = None          # bench.tunnels.base.Running, once a tunnel rung is up

    def up(self) -> None:
        self.lab.up()
        if self.dp.tunnel is not None:
            from bench.tunnels.base import Running, bring_up
            self.tunnel = Running(self.dp.tunnel, [])
            bring_up(self.dp.tunnel, self.lab, self.prefix, self.tunnel)
        c, s = self.lab.pod(1, 1), self.lab.pod(2, 1)
        self.client = Endpoint(c.netns, str(c.ip), self.lab.node(1).netns)
        self.server = Endpoint(s.netns, str(s.ip), self.lab.node(2).netns)

    def down(self) -> None:
        try:
            if self.tunnel is not None:
                self.tunnel.down()
        finally:
            self.lab.down()

    @property
    def underlay_mtu(self) -> int:
        return UNDERLAY_MTU

    @property
    def pod_mtu(self) -> int:
        return self.dp.pod_mtu(UNDERLAY_MTU)

    @property
    def underlay_netns(self) -> str:
        return self.lab.underlay_ns

    @property
    def underlay_bridge(self) -> str:
        from dataplane.lab import naming
        return naming.UNDERLAY_BRIDGE

    def daemon_pids(self) -> list[int]:
        """Our daemons (or a tunnel's processes), node 1's first; empty for the kernel
        dataplanes."""
        if self.tunnel is not None:
            return self.tunnel.pids()
        pids = self.lab.daemon_pids()
        return [pids[n.name] for n in self.lab.nodes if n.name in pids]

    def pin(self, pid: int, cpus: set[int]) -> None:
        """Every thread of a running process onto `cpus`."""
        self.lab.pin(pid, cpus)

    def run(self, netns: str, argv: Sequence[str], *, cpus: set[int] | None = None,
            timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        return self.lab.exec(netns, argv, cpus=cpus, timeout=timeout, check=False)

    def popen(self, netns: str, argv: Sequence[str], *, cpus: set[int] | None = None,
              **kwargs) -> subprocess.Popen:
        return self.lab.popen(netns, argv, cpus=cpus, **kwargs)

    def link_counters(self, netns: str, ifname: str = "eth0") -> LinkCounters:
        """Interface counters: a pod's eth0, or a node's uplink (also eth0 in the lab)."""
        proc = self.lab.exec(None, ["ip", "-n", netns, "-j", "-s", "link", "show", "dev", ifname])
        return ip_link_stats(proc.stdout)
