"""The lab's etcd (`dataplane lab up --store etcd`): real etcd members on the underlay.

    <prefix>-ul:  br0 10.99.0.254/24  etcd m0  client :2379, peer :2380
                      10.99.0.253/24  etcd m1  (--etcd-members 3)
                      10.99.0.252/24  etcd m2

Every member runs in the underlay namespace, on an address of the bridge itself, so the nodes
reach it over their uplinks like any machine on their segment (`--etcd-endpoints
http://10.99.0.254:2379,...`) and nothing is exposed outside the lab. The lab process reaches
it from a thread that joins the underlay namespace (nsthread); an operator does it with
`ip netns exec <prefix>-ul etcdctl --endpoints http://10.99.0.254:2379 get --prefix /`.

Data directories and logs live in the lab's state dir (<state>/etcd/m0, m0.log), so `down`
removes them with the rest; a member's pid is recorded as soon as it is spawned, and teardown
stops members after the daemons (they release their leases on the way out) and before the
namespaces go. etcd runs with its default timing (heartbeat 100 ms, election 1 s): a loaded
two-core box must not see spurious elections.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from dataplane.lab import naming, netns
from dataplane.lab.errors import LabError
from dataplane.lab.netlink import iproute
from dataplane.lab.nsthread import call_in_netns
from dataplane.lab.state import EtcdMember
from dataplane.store.etcd_server import (INSTALL_HINT, EtcdServer, EtcdServerError,
                                         find_etcd)

ETCDCTL = "etcdctl"
START_TIMEOUT = 20.0


class _MemberServer(EtcdServer):
    """An EtcdServer whose process and health checks live in the underlay namespace."""

    def __init__(self, ns: str, member: EtcdMember, initial_cluster: str) -> None:
        super().__init__(member.data_dir, host=str(member.ip),
                         client_port=naming.ETCD_CLIENT_PORT, peer_port=naming.ETCD_PEER_PORT,
                         name=member.name, initial_cluster=initial_cluster,
                         log_path=member.log_file)
        self.ns = ns

    def argv(self, etcd: str) -> list[str]:
        return netns.ns_argv(self.ns, super().argv(etcd))   # ip netns exec execs: pid is etcd's

    def healthy(self) -> bool:
        try:
            return call_in_netns(self.ns, super().healthy)
        except LabError:
            return False                                    # no namespace, no etcd


class LabEtcd:
    def __init__(self, underlay_ns: str, members: list[EtcdMember],
                 on_change: Callable[[], None] = lambda: None) -> None:
        """members: as planned (plan()) or as recorded in state.json; on_change() is called
        whenever a pid changes, to record it."""
        self.ns = underlay_ns
        self.members = members
        self.on_change = on_change
        self._servers: dict[str, _MemberServer] = {}     # members this process spawned

    @staticmethod
    def plan(base_dir: Path, count: int) -> list[EtcdMember]:
        if not 1 <= count <= naming.MAX_ETCD_MEMBERS:
            raise LabError(f"--etcd-members must be between 1 and {naming.MAX_ETCD_MEMBERS}")
        return [EtcdMember(naming.etcd_member(k), naming.etcd_ip(k),
                           base_dir / naming.etcd_member(k)) for k in range(count)]

    @property
    def endpoints(self) -> str:
        """What the daemons are given: --etcd-endpoints."""
        return ",".join(m.client_url for m in self.members)

    @property
    def initial_cluster(self) -> str:
        return ",".join(f"{m.name}={m.peer_url}" for m in self.members)

    def member(self, key: int | str) -> EtcdMember:
        for k, m in enumerate(self.members):
            if key in (k, m.name):
                return m
        raise LabError(f"no etcd member {key!r} (members: "
                       f"{', '.join(m.name for m in self.members)})")

    # --- running ---------------------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Addresses on br0, every member spawned, then all of them healthy (a cluster's
        members must all be up before any of them can elect a leader)."""
        if find_etcd() is None:
            raise LabError(f"etcd is not installed ({INSTALL_HINT})")
        with iproute(self.ns) as ipr:
            bridge = ipr.link_lookup(ifname=naming.UNDERLAY_BRIDGE)[0]
            have = {a.get_attr("IFA_ADDRESS") for a in ipr.get_addr(index=bridge)}
            for m in self.members:
                if str(m.ip) not in have:
                    ipr.addr("add", index=bridge, address=str(m.ip),
                             prefixlen=naming.UNDERLAY_NETWORK.prefixlen)
        for m in self.members:
            self._spawn(m)
        for m in self.members:
            self._wait(m, timeout)

    def start_member(self, key: int | str, timeout: float = START_TIMEOUT) -> int:
        """(Re)start one stopped member on its data dir and wait until it is healthy (in a
        cluster: until it has rejoined); returns its pid."""
        m = self.member(key)
        if self.alive(m):
            raise LabError(f"etcd {m.name} is running (pid {m.pid}); stop it first")
        self._spawn(m)
        self._wait(m, timeout)
        return m.pid                                        # type: ignore[return-value]

    def stop_member(self, key: int | str) -> None:
        """SIGTERM (SIGKILL after 5 s): etcd shuts down cleanly, its data stays."""
        self._end(self.member(key), kill=False)

    def kill_member(self, key: int | str) -> None:
        """SIGKILL: a crash."""
        self._end(self.member(key), kill=True)

    def reap(self) -> None:
        """After teardown ended every member by pid: collect those this process spawned."""
        for server in self._servers.values():
            server.stop()
        self._servers.clear()
        for m in self.members:
            m.pid = m.pid_start = None

    def _spawn(self, m: EtcdMember) -> None:
        server = _MemberServer(self.ns, m, self.initial_cluster)
        try:
            server.start(wait=False)
        except EtcdServerError as exc:
            raise LabError(str(exc)) from exc
        self._servers[m.name] = server
        assert server.proc is not None
        m.pid, m.pid_start = server.proc.pid, netns.start_time(server.proc.pid)
        self.on_change()

    def _wait(self, m: EtcdMember, timeout: float) -> None:
        server = self._servers[m.name]
        try:
            server.wait_healthy(timeout)
        except EtcdServerError as exc:
            raise LabError(f"{exc}\n(log: {m.log_file})") from exc

    def _end(self, m: EtcdMember, *, kill: bool) -> None:
        server = self._servers.pop(m.name, None)
        if server is not None:                  # ours: through its Popen, so it is reaped
            server.kill() if kill else server.stop()
        elif m.pid is not None and kill:
            if netns.alive(m.pid, m.pid_start):
                os.kill(m.pid, signal.SIGKILL)
        elif m.pid is not None:
            netns.terminate([(m.pid, m.pid_start)])
        if m.pid is not None:
            m.pid = m.pid_start = None
            self.on_change()

    # --- looking -----------------------------------------------------------------------------

    def alive(self, m: EtcdMember) -> bool:
        return m.pid is not None and netns.alive(m.pid, m.pid_start)

    def healthy(self, m: EtcdMember) -> bool:
        return _MemberServer(self.ns, m, self.initial_cluster).healthy()

    def statuses(self) -> dict[str, dict[str, Any] | None]:
        """Each member's /v3/maintenance/status (None: no answer), asked from inside."""
        from dataplane.store.etcd_client import EtcdClient, EtcdError

        async def one(url: str) -> dict[str, Any] | None:
            client = EtcdClient(url, timeout=1.0)
            try:
                return await client.status()
            except EtcdError:
                return None
            finally:
                await client.close()

        async def every() -> list[dict[str, Any] | None]:
            return await asyncio.gather(*(one(m.client_url) for m in self.members))
        found = call_in_netns(self.ns, lambda: asyncio.run(every()))
        return {m.name: s for m, s in zip(self.members, found)}

    def leader(self) -> EtcdMember | None:
        """The member that is leader now, as a member that answers sees it."""
        statuses = self.statuses()
        ids = {m.name: int(s["header"]["member_id"]) for m in self.members
               if (s := statuses[m.name])}
        leader_ids = {int(s["leader"]) for s in statuses.values() if s and s.get("leader")}
        for m in self.members:
            if m.name in ids and ids[m.name] in leader_ids:
                return m
        return None

    def etcdctl(self, *args: str, endpoints: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        """etcdctl (API v3) against every member (or `endpoints`), run inside the underlay
        namespace."""
        argv = [ETCDCTL, "--endpoints", endpoints or self.endpoints, "--dial-timeout", "2s",
                "--command-timeout", "5s", *args]
        return netns.run(netns.ns_argv(self.ns, argv), check=check,
                         env=netns.python_env({"ETCDCTL_API": "3"}))

    def operator_hint(self) -> str:
        return f"ip netns exec {self.ns} etcdctl --endpoints {self.endpoints} get --prefix /"

    def status(self) -> list[dict[str, Any]]:
        """Every member as plain data, for `lab status`."""
        try:
            statuses = self.statuses() if any(self.alive(m) for m in self.members) else {}
        except LabError:                  # the underlay namespace is gone (a broken lab)
            statuses = {}
        leader = None
        for s in statuses.values():
            if s and s.get("leader"):
                leader = int(s["leader"])
        out = []
        for m in self.members:
            s = statuses.get(m.name)
            out.append({"name": m.name, "client_url": m.client_url, "pid": m.pid,
                        "alive": self.alive(m) if m.pid is not None else None,
                        "healthy": bool(s and s.get("leader")),     # answers, has a leader
                        "leader": s is not None and int(s["header"]["member_id"]) == leader,
                        "data_dir": str(m.data_dir), "log": str(m.log_file)})
        return out


def terminate_members(members: Sequence[EtcdMember], grace: float = 1.0) -> None:
    """For teardown: whatever member is still running, by recorded pid. A cluster told to stop
    all at once can spend seconds handing over leadership to members that are going too, and
    its data is about to be removed: SIGKILL after a short grace."""
    netns.terminate(((m.pid, m.pid_start) for m in members if m.pid is not None), grace)
