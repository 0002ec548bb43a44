"""`Lab`: a cluster of nodes and pods on one Linux box, built from network namespaces.

    with Lab("t1", nodes=3, pods=2, backend="kernel-vxlan") as lab:
        a, b = lab.pod(1, 1), lab.pod(3, 2)
        assert lab.ping(a, b)
        lab.exec(b, ["iperf3", "-s", "-1", "-B", str(b.ip)])

Build order (`up`): underlay -> nodes -> etcd (`store="etcd"`, see labetcd) -> store config
and the leases the lab writes itself -> our daemons (waited for) -> kernel nodes' peers, learnt
from the store -> pods through CNI.
Everything is recorded in state.json before it is created; `down` (or `teardown(prefix)`
after a crash) undoes whatever exists, from the state file and a scan of `ip netns list`.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from dataplane.lab import cni, daemon, kernel_backends, naming, netns, traffic, underlay
from dataplane.lab.cleanup import existing_labs, teardown
from dataplane import subnetenv
from dataplane.lab.errors import LabError
from dataplane.lab.flannel import (BACKENDS, DAEMON_BACKENDS, DEFAULT_PORT, ENCAP_OVERHEAD,
                                   FLANNEL_TYPE, SubnetEnv, config_json, lease_attrs, net_conf)
from dataplane.lab.labetcd import LabEtcd
from dataplane.lab.labstore import EtcdLabStore, LabStore
from dataplane.lab.state import STATE_ROOT, LabState, LabNode, Pod
from dataplane.lab.traffic import TransferResult

__all__ = ["Lab", "LabError", "LabNode", "Pod", "STATE_ROOT", "TransferResult", "plan_backends",
           "preflight", "teardown"]

log = logging.getLogger(__name__)

FASTPATHS = ("c", "python")
STORES = ("directory", "etcd")
# Test-only crash injection: SIGKILL ourselves when `up` reaches this step (e.g. "pods",
# "pod:<name>"), to prove that `down` cleans up after a crash at any point.
FAILPOINT_ENV = "DATAPLANE_LAB_FAILPOINT"

NsLike = LabNode | Pod | str | None


def plan_backends(backend: str, nodes: int, kernel_nodes: int = 0,
                  node_backends: Sequence[str] | None = None) -> list[str]:
    """Each node's backend. A mixed lab is vxlan with some kernel-vxlan nodes: the last
    `kernel_nodes` nodes, or any explicit `node_backends` list drawn from one family."""
    if node_backends is not None:
        plan = list(node_backends)
        if len(plan) != nodes:
            raise LabError(f"{len(plan)} node backends given for {nodes} nodes")
    else:
        if backend not in BACKENDS:
            raise LabError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
        if kernel_nodes and backend != "vxlan":
            raise LabError("kernel nodes join only a vxlan lab (same VNI, same wire format)")
        if not 0 <= kernel_nodes <= nodes:
            raise LabError(f"--kernel-nodes must be between 0 and the number of nodes ({nodes})")
        plan = [backend] * (nodes - kernel_nodes) + ["kernel-vxlan"] * kernel_nodes
    unknown = sorted(set(plan) - set(BACKENDS))
    if unknown:
        raise LabError(f"unknown backend {unknown[0]!r}: choose one of {', '.join(BACKENDS)}")
    if len({FLANNEL_TYPE[b] for b in plan}) > 1:
        raise LabError(f"backends {sorted(set(plan))} cannot share a network: only vxlan and "
                       "kernel-vxlan nodes interoperate")
    return plan


class Lab:
    def __init__(self, prefix: str = naming.DEFAULT_PREFIX, nodes: int = 2, pods: int = 1,
                 backend: str = "kernel-vxlan", *, kernel_nodes: int = 0,
                 node_backends: Sequence[str] | None = None, fastpath: str | None = None,
                 network: str = "10.244.0.0/16", underlay_mtu: int = 1500,
                 ip_masq: bool = True, vni: int = 1, port: int | None = None,
                 daemon_args: Sequence[str] = (), daemon_program: Sequence[str] | None = None,
                 daemon_timeout: float = 30.0, state_root: Path | str = STATE_ROOT,
                 store: str = "directory", etcd_members: int = 1,
                 direct_routing: bool = False, nftables: bool = False) -> None:
        self.prefix = naming.check_prefix(prefix)
        if store not in STORES:
            raise LabError(f"unknown store {store!r}: choose one of {', '.join(STORES)}")
        if store != "etcd" and etcd_members != 1:
            raise LabError("--etcd-members applies to --store etcd")
        # etcd members take addresses from the top of the underlay: nodes must stay below.
        max_nodes = naming.MAX_NODES - (etcd_members if store == "etcd" else 0)
        if not 1 <= nodes <= max_nodes:
            raise LabError(f"--nodes must be between 1 and {max_nodes}")
        if pods < 0:
            raise LabError("--pods must not be negative")
        if fastpath is not None and fastpath not in FASTPATHS:
            raise LabError(f"unknown fastpath {fastpath!r}: choose one of {', '.join(FASTPATHS)}")
        if not 576 <= underlay_mtu <= 65535:
            raise LabError("--underlay-mtu must be between 576 and 65535")
        try:
            self.network = IPv4Network(network)
        except ValueError as exc:
            raise LabError(f"bad pod network {network!r}: {exc}") from exc
        self.backends = plan_backends(backend, nodes, kernel_nodes, node_backends)
        self.backend = backend
        self.flannel_type = FLANNEL_TYPE[self.backends[0]]
        if store == "etcd" and not self.uses_store:
            raise LabError(f"a {self.flannel_type} lab uses no subnet store: --store etcd "
                           "needs the udp, vxlan or kernel-vxlan backend")
        self.pods_per_node = pods
        self.fastpath = fastpath
        self.underlay_mtu = underlay_mtu
        self.ip_masq = ip_masq
        self.nftables = nftables        # EnableNFTables: flanneld's rules through nftables
        self.vni = vni
        if direct_routing and self.flannel_type != "vxlan":
            raise LabError("--direct-routing is a vxlan option (Backend.DirectRouting)")
        self.direct_routing = direct_routing
        self.port = port or DEFAULT_PORT.get(self.flannel_type)
        self.daemon_args = list(daemon_args)
        self.daemon_program = list(daemon_program) if daemon_program else None
        self.daemon_timeout = daemon_timeout
        self.state_root = Path(state_root)
        self.dir = self.state_root / self.prefix
        self.store_kind, self.etcd_members = store, etcd_members
        self.underlay_ns = naming.underlay_ns(self.prefix)
        self.outside_ns = naming.outside_ns(self.prefix)
        self.etcd: LabEtcd | None = None
        self.store: LabStore
        if store == "etcd":
            self.etcd = LabEtcd(self.underlay_ns, LabEtcd.plan(self.dir / "etcd", etcd_members),
                                on_change=self._save)
            self.store = EtcdLabStore(self.etcd.endpoints, self.underlay_ns)
        else:
            self.store = LabStore(self.dir / "store")
        self.nodes: list[LabNode] = [
            LabNode(name=naming.node_ns(self.prefix, i), index=i, backend=b,
                 underlay_ip=naming.underlay_ip(i), subnet=naming.node_subnet(self.network, i),
                 dir=self.dir / naming.node_ns(self.prefix, i))
            for i, b in enumerate(self.backends, start=1)]
        self.pods: list[Pod] = []
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._state = LabState(prefix=self.prefix, options=self._options(),
                               etcd=self.etcd.members if self.etcd else [])

    def _options(self) -> dict[str, Any]:
        return {"prefix": self.prefix, "nodes": len(self.nodes), "pods": self.pods_per_node,
                "backend": self.backend, "node_backends": self.backends,
                "fastpath": self.fastpath, "network": str(self.network),
                "underlay_mtu": self.underlay_mtu, "ip_masq": self.ip_masq, "vni": self.vni,
                "port": self.port, "daemon_args": self.daemon_args,
                "daemon_program": self.daemon_program,
                "daemon_timeout": self.daemon_timeout, "state_root": str(self.state_root),
                "store": self.store_kind, "etcd_members": self.etcd_members,
                "direct_routing": self.direct_routing, "nftables": self.nftables}

    # --- reattaching -----------------------------------------------------------------------

    @classmethod
    def load(cls, prefix: str = naming.DEFAULT_PREFIX,
             state_root: Path | str = STATE_ROOT) -> Lab:
        """The lab `up` built under this prefix, from its state.json (another process's too)."""
        path = Path(state_root) / naming.check_prefix(prefix) / "state.json"
        try:
            state = LabState.load(path)
        except FileNotFoundError:
            others = existing_labs(state_root)
            hint = f" (existing labs: {', '.join(others)})" if others else ""
            raise LabError(f"no lab {prefix!r}: {path} does not exist{hint}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise LabError(f"unreadable lab state {path}: {exc}; `dataplane lab down "
                           f"--prefix {prefix}` still removes it") from exc
        options = dict(state.options)
        node_backends = options.pop("node_backends")
        lab = cls(**{**options, "node_backends": node_backends})
        lab._state = state
        lab.nodes, lab.pods = state.nodes, state.pods
        if lab.etcd is not None and state.etcd:
            lab.etcd.members = state.etcd
        return lab

    @property
    def phase(self) -> str:
        """Where `up` got to: new, underlay, nodes, (etcd,) store, daemons, peers, pods, ready."""
        return self._state.phase

    # --- lookups -----------------------------------------------------------------------------

    def node(self, key: int | str) -> LabNode:
        for n in self.nodes:
            if key in (n.index, n.name):
                return n
        raise LabError(f"no node {key!r} in lab {self.prefix}")

    def pod(self, key: int | str, j: int | None = None) -> Pod:
        """`pod("dpl-n1-p2")` or `pod(1, 2)`: pod 2 on node 1."""
        name = naming.pod_ns(self.prefix, key, j) if j is not None else key
        for p in self.pods:
            if p.name == name:
                return p
        raise LabError(f"no pod {name!r} in lab {self.prefix}")

    def pods_on(self, node: LabNode | str | int) -> list[Pod]:
        name = node.name if isinstance(node, LabNode) else self.node(node).name
        return [p for p in self.pods if p.node == name]

    # --- building ----------------------------------------------------------------------------

    def __enter__(self) -> Lab:
        if self.phase != "ready":
            self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def up(self, *, keep_on_error: bool = False) -> Lab:
        """Build the whole lab. On any failure everything built so far is removed again,
        unless keep_on_error (then inspect it, and `down` it yourself)."""
        preflight(self.backends)
        if self.dir.exists() or any(naming.owned_namespace(self.prefix, n)
                                    for n in netns.list_netns()):
            raise LabError(f"lab {self.prefix!r} already exists; remove it with "
                           f"`dataplane lab down --prefix {self.prefix}` or pick another prefix")
        try:
            self._build()
        except BaseException as exc:
            if not keep_on_error:
                try:
                    self.down()
                except Exception as cleanup:     # report the first error, not this one
                    log.warning("cleanup after a failed up also failed: %s", cleanup)
            if isinstance(exc, LabError) or not isinstance(exc, Exception):
                raise
            raise LabError(f"building lab {self.prefix} failed: {exc!r}") from exc
        return self

    def _save(self) -> None:
        self._state.nodes, self._state.pods = self.nodes, self.pods
        self._state.etcd = self.etcd.members if self.etcd else []
        self._state.save(self.dir / "state.json")

    def _enter(self, phase: str) -> None:
        self._state.phase = phase
        self._save()
        _failpoint(phase)

    def _add_netns(self, name: str) -> None:
        if name not in self._state.namespaces:
            self._state.namespaces.append(name)
            self._save()               # recorded first: a crash now still gets it removed
        netns.add(name)

    def _build(self) -> None:
        try:
            self.dir.mkdir(parents=True)
        except FileNotFoundError:      # another lab's down removed the empty root meanwhile
            self.dir.mkdir(parents=True)
        self._enter("underlay")
        self._add_netns(self.underlay_ns)
        underlay.build(self.underlay_ns, self.underlay_mtu)

        self._enter("nodes")
        for node in self.nodes:
            self._add_netns(node.name)
            node.dir.mkdir(parents=True, exist_ok=True)
            underlay.attach(self.underlay_ns, node.name, node.index, node.underlay_ip,
                            self.underlay_mtu)
        self._add_netns(self.outside_ns)
        underlay.attach_outside(self.underlay_ns, self.outside_ns, self.underlay_mtu)

        if self.etcd is not None:
            self._enter("etcd")
            self.etcd.start()             # each member's pid is saved as soon as it is spawned

        self._enter("store")
        if self.uses_store:
            self.store.write_config(config_json(net_conf(self.network, self.flannel_type,
                                                         vni=self.vni, port=self.port,
                                                         direct_routing=self.direct_routing,
                                                         nftables=self.nftables)))
        for node in self.nodes:
            if not node.runs_daemon:
                self._program_kernel_node(node)
        self._save()

        self._enter("daemons")
        self._start_daemons()

        self._enter("peers")
        self.sync_peers()

        self._enter("pods")
        for node in self.nodes:
            self._add_pods(node)
        self._enter("ready")

    def _program_kernel_node(self, node: LabNode) -> None:
        """What flanneld does on start for a kernel node: device, lease, subnet.env."""
        mtu = self.underlay_mtu - ENCAP_OVERHEAD[self.flannel_type]
        if node.backend == "kernel-vxlan":
            assert self.port is not None          # a vxlan lab always has one (DEFAULT_PORT)
            node.vtep_mac = kernel_backends.create_vxlan_device(
                node.netns, vni=self.vni, port=self.port, local=node.underlay_ip,
                underlay_mtu=self.underlay_mtu, subnet=node.subnet)
        if self.uses_store:
            self.store.acquire(node.subnet, lease_attrs(node.underlay_ip, self.flannel_type,
                                                        vni=self.vni, vtep_mac=node.vtep_mac))
        kernel_backends.install_flannel_rules(node.netns, network=self.network,
                                              subnet=node.subnet, ip_masq=self.ip_masq,
                                              nftables=self.nftables)
        subnetenv.write(node.subnet_file, network=self.network, subnet=node.subnet, mtu=mtu,
                        ipmasq=self.ip_masq)

    def _start_daemons(self) -> None:
        started = {node.name: (node, self._spawn_daemon(node, self.fastpath))
                   for node in self.nodes if node.runs_daemon}
        daemon.wait_ready(started, self.daemon_timeout)
        if self.daemon_program is None:         # a stand-in serves no metrics
            daemon.wait_converged([n for n, _ in started.values()], len(self.nodes) - 1,
                                  self.daemon_timeout)

    def _spawn_daemon(self, node: LabNode, fastpath: str | None) -> subprocess.Popen[bytes]:
        proc = daemon.start(node, daemon.argv(node, self.store.daemon_args(),
                                              program=self.daemon_program, fastpath=fastpath,
                                              ip_masq=self.ip_masq, extra=self.daemon_args))
        self._procs[node.name] = proc
        node.pid, node.pid_start = proc.pid, netns.start_time(proc.pid)
        self._save()
        return proc

    def stop_daemon(self, node: LabNode | str | int) -> None:
        """SIGTERM one node's daemon (SIGKILL after 5 s); its lease stays in the store and
        its subnet.env in place, as flanneld leaves them (decommission() gives them back)."""
        n = node if isinstance(node, LabNode) else self.node(node)
        proc = self._procs.pop(n.name, None)
        if proc is not None:
            _stop([proc])
        elif n.pid is not None:
            netns.terminate([(n.pid, n.pid_start)])
        n.pid = n.pid_start = None
        self._save()

    def decommission(self, node: LabNode | str | int) -> str:
        """Stop one node's daemon and give its subnet back (`dataplane leases release
        --subnet-file`): the other nodes see it leave, and a later start_daemon is a new node
        to them. Returns what was done."""
        n = node if isinstance(node, LabNode) else self.node(node)
        self.stop_daemon(n)
        return daemon.decommission(n, self.store.daemon_args())

    def start_daemon(self, node: LabNode | str | int, *, fastpath: str | None = None,
                     wait: bool = True) -> int:
        """(Re)start one node's daemon, e.g. with another fast path, and (unless wait=False)
        wait until it is ready again; returns its pid. Kernel nodes keep what they learnt at
        `up`: call sync_peers() if the daemon came back with a new VtepMAC."""
        n = node if isinstance(node, LabNode) else self.node(node)
        if not n.runs_daemon:
            raise LabError(f"{n.name} is a {n.backend} node: it runs no daemon")
        if n.name in self.daemon_pids():
            raise LabError(f"the daemon on {n.name} is running (pid {n.pid}); stop it first")
        proc = self._spawn_daemon(n, fastpath or self.fastpath)
        if wait:
            daemon.wait_ready({n.name: (n, proc)}, self.daemon_timeout)
        return proc.pid

    @property
    def uses_store(self) -> bool:
        """host-gw labs have no store: dataplane.netconf refuses backends our daemon cannot run,
        and host-gw nodes need nothing but each other's underlay IPs, which the lab knows."""
        return self.flannel_type != "host-gw"

    def sync_peers(self) -> None:
        """Kernel nodes learn every other node from the store, as flanneld does at start; our
        daemons learn the kernel nodes' leases themselves (written before they started).
        Idempotent (every entry is a replace); `up` calls it once, there is no watch."""
        if not self.uses_store:
            for node in self.nodes:
                for peer in self.nodes:
                    if peer is not node:
                        kernel_backends.add_host_gw_peer(node.netns, subnet=peer.subnet,
                                                         public_ip=peer.underlay_ip)
            return
        leases = self.store.leases()
        for node in self.nodes:
            lease = leases.get(node.subnet)
            if node.runs_daemon and lease:
                node.vtep_mac = lease.vtep_mac
        for node in self.nodes:
            if node.runs_daemon:
                continue
            for peer in self.nodes:
                if peer is node:
                    continue
                lease = leases.get(peer.subnet)
                if lease is None:
                    raise LabError(f"no lease for {peer.name}'s subnet {peer.subnet} in "
                                   f"{self.store.location}: cannot program {node.name}")
                if lease.backend_type != "vxlan" or not lease.vtep_mac:
                    raise LabError(f"{peer.name}'s lease is no vxlan lease with a VtepMAC: "
                                   f"{lease.to_json().decode()}")
                kernel_backends.add_vxlan_peer(node.netns, vni=self.vni, subnet=peer.subnet,
                                               public_ip=IPv4Address(lease.public_ip),
                                               vtep_mac=lease.vtep_mac,
                                               direct_routing=self.direct_routing)
        self._save()

    def _add_pods(self, node: LabNode) -> None:
        env = SubnetEnv.read(node.subnet_file)
        delegate = cni.derive_delegate(cni.flannel_netconf(node.cni_dir / "ipam"), env)
        for j in range(1, self.pods_per_node + 1):
            pod = Pod(name=naming.pod_ns(self.prefix, node.index, j), node=node.name, index=j)
            self.pods.append(pod)
            self._add_netns(pod.name)
            address = cni.add_pod(node.netns, pod.netns, pod.container_id, delegate,
                                  node.cni_dir / f"{pod.container_id}.json")
            pod.ip = address.ip
            self._save()
            _failpoint(f"pod:{pod.name}")

    # --- tearing down ------------------------------------------------------------------------

    def down(self) -> list[str]:
        """Remove everything this lab created; returns the namespaces removed. Idempotent."""
        self._stop_own_daemons()
        removed = teardown(self.prefix, self.state_root)   # daemons, then etcd, then the rest
        if self.etcd is not None:
            self.etcd.reap()
        self._state.phase = "new"
        self.pods = []
        for node in self.nodes:
            node.pid = node.pid_start = node.vtep_mac = None
        return removed

    def _stop_own_daemons(self) -> None:
        """Daemons this process spawned: through their Popen, so they are reaped."""
        _stop(list(self._procs.values()))
        self._procs.clear()

    # --- running things in the lab -----------------------------------------------------------

    def exec(self, ns: NsLike, argv: Sequence[str], *, check: bool = True,
             timeout: float | None = 60.0, input: str | None = None,
             cpus: Iterable[int] | None = None, env: Mapping[str, str] | None = None
             ) -> subprocess.CompletedProcess[str]:
        """Run a command to completion in a node or pod namespace (None: the host), optionally
        pinned to CPUs; output captured as text. Raises LabError on failure if `check`."""
        return netns.run(netns.ns_argv(_ns_name(ns), argv, cpus), check=check, input=input,
                         timeout=timeout, env=netns.python_env(env))

    def popen(self, ns: NsLike, argv: Sequence[str], *, cpus: Iterable[int] | None = None,
              **kwargs: Any) -> subprocess.Popen[Any]:
        """Start a command in a namespace; its pid is the command's own (no wrapper remains),
        so `os.sched_setaffinity(p.pid, ...)` and signals reach it. `down` kills whatever is
        still running in the lab's namespaces."""
        kwargs.setdefault("env", netns.python_env())
        return subprocess.Popen(netns.ns_argv(_ns_name(ns), argv, cpus), **kwargs)

    @staticmethod
    def pin(pid: int, cpus: Iterable[int]) -> None:
        """Pin a running process, all its threads, to CPUs (e.g. a daemon from daemon_pids())."""
        netns.pin(pid, cpus)

    def daemon_pids(self) -> dict[str, int]:
        """Running daemons by node name (udp and vxlan nodes)."""
        return {n.name: n.pid for n in self.nodes
                if n.pid is not None and netns.alive(n.pid, n.pid_start)}

    def ping(self, src: Pod | str, dst: Pod | str | IPv4Address, *, count: int = 2,
             timeout: float = 1.0) -> bool:
        """ICMP echo from pod `src` to pod (or address) `dst`: any reply counts."""
        return traffic.ping(self, self._pod(src),
                            dst if isinstance(dst, IPv4Address) else self._pod(dst).ip,
                            count=count, timeout=timeout)

    def reachability(self, *, count: int = 2, timeout: float = 1.0
                     ) -> dict[tuple[str, str], bool]:
        """Ping every pod from every other pod: {(src name, dst name): reachable}."""
        return traffic.reachability(self, [p for p in self.pods if p.ip is not None],
                                    count=count, timeout=timeout)

    def tcp_check(self, src: Pod | str, dst: Pod | str, nbytes: int = 4 << 20, *,
                  port: int = 7777, seed: int = 1, timeout: float = 30.0) -> TransferResult:
        """Send `nbytes` pseudo-random bytes over TCP from pod `src` to pod `dst` and compare
        SHA-256 digests on both ends."""
        return traffic.tcp_check(self, self._pod(src), self._pod(dst), nbytes, port=port,
                                 seed=seed, timeout=timeout)

    def flow(self, src: Pod | str, dst: Pod | str, *, duration: float = 10.0,
             interval: float = 0.01) -> traffic.Flow:
        """Start ICMP echo from pod `src` to pod `dst` every `interval` seconds for `duration`
        seconds, and return once the first reply is in; `.result()` then says which requests
        went unanswered. For watching an event (etcd stopped, a daemon restarted) for loss."""
        return traffic.flow(self, self._pod(src), self._pod(dst), duration=duration,
                            interval=interval)

    def _pod(self, key: Pod | str) -> Pod:
        pod = key if isinstance(key, Pod) else self.pod(key)
        if pod.ip is None:
            raise LabError(f"pod {pod.name} has no address (its CNI ADD did not finish)")
        return pod

    def status(self) -> dict[str, Any]:
        """The lab as plain data: nodes (with daemon liveness and VtepMAC), pods, phase."""
        try:
            leases = self.store.leases() if self.uses_store else {}
        except LabError:
            leases = {}      # a lab that crashed before its store was written
        nodes = []
        for n in self.nodes:
            lease = leases.get(n.subnet)
            mac = n.vtep_mac or (lease.vtep_mac if lease else None)
            nodes.append({"name": n.name, "backend": n.backend,
                          "underlay_ip": str(n.underlay_ip), "subnet": str(n.subnet),
                          "vtep_mac": mac, "daemon_pid": n.pid,
                          "daemon_alive": (netns.alive(n.pid, n.pid_start)
                                           if n.pid is not None else None),
                          "log": str(n.log_file) if n.runs_daemon else None,
                          "netns_exists": netns.exists(n.name)})
        return {"prefix": self.prefix, "backend": self.backend, "phase": self.phase,
                "network": str(self.network), "state_dir": str(self.dir),
                "underlay_ns": self.underlay_ns, "store": self._store_status(), "nodes": nodes,
                "outside": {"ns": self.outside_ns, "ip": str(naming.OUTSIDE_IP),
                            "exists": netns.exists(self.outside_ns)},
                "pods": [{"name": p.name, "node": p.node,
                          "ip": str(p.ip) if p.ip else None} for p in self.pods]}

    def _store_status(self) -> dict[str, Any]:
        if not self.uses_store:
            return {"kind": "none"}
        if self.etcd is None:
            return {"kind": "directory", "location": self.store.location}
        return {"kind": "etcd", "location": self.store.location,
                "endpoints": self.etcd.endpoints, "members": self.etcd.status(),
                "etcdctl": self.etcd.operator_hint()}


def _stop(procs: list[subprocess.Popen[bytes]], grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds, and reap: our own children only."""
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    deadline = time.monotonic() + grace
    for proc in procs:
        try:
            proc.wait(max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _ns_name(ns: NsLike) -> str | None:
    return ns.netns if isinstance(ns, (LabNode, Pod)) else ns


def _failpoint(step: str) -> None:
    if os.environ.get(FAILPOINT_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)


def preflight(backends: Iterable[str]) -> None:
    """What `up` needs from the host, checked before anything is created."""
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, veth, bridges): run it as root")
    for tool in ("ip", "sysctl", "taskset"):
        if shutil.which(tool) is None:
            raise LabError(f"`{tool}` not found (apt-get install iproute2 procps util-linux)")
    cni.check_plugins()
    if set(backends) & set(DAEMON_BACKENDS) and not Path("/dev/net/tun").exists():
        raise LabError("/dev/net/tun is missing: our daemon needs the tun driver")
