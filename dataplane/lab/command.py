"""`dataplane lab up|status|down`: the lab from the command line."""

from __future__ import annotations

import argparse
import json
import textwrap

from dataplane.backends import UDP, VXLAN
from dataplane.errors import CommandError
from dataplane.lab import naming
from dataplane.lab.errors import LabError
from dataplane.lab.flannel import BACKENDS

HELP = "build, inspect and remove a cluster of nodes and pods in network namespaces"

SCHEME = textwrap.dedent("""\
    Naming and addressing (prefix P, node i, pod j; all 1-based):
      P-ul       underlay namespace: bridge br0, port n<i> per node
      P-n<i>     node i: eth0 10.99.0.<i>/24 on the underlay; pod subnet = the i-th /24
                 of the network (10.244.<i>.0/24 by default); cni0 = 10.244.<i>.1
      P-n<i>-p<j> pod j on node i: eth0 from the CNI bridge plugin, host-local address
      P-out      the outside host: eth0 10.99.0.249/24 on the underlay, no pod subnet and
                 no route to one (pods reach it through their node's NAT)
      --store etcd: etcd member k on 10.99.0.<254-k>:2379, an address of br0 in P-ul
    State (state.json, store, subnet.env, daemon logs, CNI data): /run/dataplane-lab/P/
    Run anything inside: ip netns exec P-n1-p1 <command>""")

BACKEND_HELP = textwrap.dedent(f"""\
    udp           our daemon, flannel's udp backend (TUN {UDP.device(1)}, port {UDP.port})
    vxlan         our daemon, kernel-compatible VXLAN (VNI 1, port {VXLAN.port})
    kernel-vxlan  the kernel's vxlan device, programmed exactly as flanneld does
    host-gw       plain routes <peer subnet> via <peer underlay IP>""")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = SCHEME
    sub = parser.add_subparsers(dest="lab_command", metavar="ACTION", required=True)

    up = sub.add_parser("up", help="build a lab", description="Build a lab: underlay, nodes, "
                        "the chosen backend on every node, and pods through the CNI plugins.",
                        formatter_class=argparse.RawDescriptionHelpFormatter,
                        epilog=f"Backends:\n{textwrap.indent(BACKEND_HELP, '  ')}\n\n{SCHEME}")
    _prefix(up)
    up.add_argument("--nodes", type=int, default=2, metavar="N", help="nodes (default 2)")
    up.add_argument("--pods", type=int, default=1, metavar="M",
                    help="pods per node (default 1)")
    up.add_argument("--backend", choices=BACKENDS, default="kernel-vxlan",
                    help="every node's backend (default kernel-vxlan; see below)")
    up.add_argument("--kernel-nodes", type=int, default=0, metavar="K",
                    help="mixed lab, with --backend vxlan only: the last K nodes are "
                         f"kernel-vxlan nodes ({VXLAN.device(1)}), the others run our vxlan daemon")
    up.add_argument("--fastpath", choices=("c", "python"),
                    help="our daemon's hot path implementation (default: the daemon's)")
    up.add_argument("--network", default="10.244.0.0/16",
                    help="pod network, split into one /24 per node (default 10.244.0.0/16)")
    up.add_argument("--underlay-mtu", type=int, default=1500, metavar="BYTES",
                    help="MTU of the underlay links (default 1500); overlays subtract "
                         "their overhead")
    up.add_argument("--port", type=int,
                    help=f"overlay UDP port (default {UDP.port} for udp, {VXLAN.port} for vxlan)")
    up.add_argument("--vni", type=int, default=1, help="VXLAN network identifier (default 1)")
    up.add_argument("--direct-routing", action="store_true",
                    help="vxlan labs: Backend.DirectRouting, so nodes on one underlay subnet "
                         "(all of the lab's) route pod traffic directly instead of tunnelling")
    up.add_argument("--no-ip-masq", dest="ip_masq", action="store_false",
                    help="FLANNEL_IPMASQ=false in subnet.env (kernel nodes; daemons are not "
                         "given --ip-masq), so the CNI bridge masquerades pod traffic leaving "
                         "the node's subnet (default: true, as kube-flannel runs flanneld with "
                         "--ip-masq, whose NAT the outside host P-out shows)")
    up.add_argument("--nftables", action="store_true",
                    help="\"EnableNFTables\": true in the network config: flanneld's NAT and "
                         "FORWARD rules (daemons and kernel nodes) in nftables' table ip "
                         "flannel-ipv4 instead of iptables chains")
    up.add_argument("--store", choices=("directory", "etcd"), default="directory",
                    help="subnet store: a directory in the lab's state dir (default), or a "
                         "real etcd in the underlay namespace (flannel's keys; daemons get "
                         "--etcd-endpoints, and `down` removes it)")
    up.add_argument("--etcd-members", type=int, default=1, metavar="N",
                    help="with --store etcd: members of the etcd cluster (default 1; 3 "
                         "survives losing one)")
    up.add_argument("--daemon-timeout", type=float, default=30.0, metavar="SECONDS",
                    help="how long to wait for each daemon's subnet.env (default 30)")
    up.add_argument("--keep-on-error", action="store_true",
                    help="if building fails, leave what was built for inspection")

    status = sub.add_parser("status", help="show nodes, daemons, pods and reachability",
                            description="Show a lab's nodes, daemons and pods, ping every "
                                        "pod from every other pod, and send one datagram "
                                        "down each kind of pod traffic (loopback, same node, "
                                        "other node, outside through the NAT), showing the "
                                        "source address the far end saw. Exit status 1 if "
                                        "any pair or path fails.")
    _prefix(status)
    status.add_argument("--no-ping", dest="ping", action="store_false",
                        help="skip the reachability matrix and the traffic paths")
    status.add_argument("--timeout", type=float, default=1.0, metavar="SECONDS",
                        help="ping reply timeout (default 1)")
    status.add_argument("--json", action="store_true", help="machine-readable output")

    down = sub.add_parser("down", help="remove a lab, also a crashed or half-built one",
                          description="Remove everything a lab created: daemons (SIGTERM, "
                                      "then SIGKILL), pods (CNI DEL), namespaces, state. "
                                      "Works after a crash and when nothing is left.")
    _prefix(down)


def _prefix(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prefix", default=naming.DEFAULT_PREFIX,
                        help=f"lab name, prefix of all its namespaces "
                             f"(default {naming.DEFAULT_PREFIX})")


def main(args: argparse.Namespace) -> int:

    try:
        return {"up": _up, "status": _status, "down": _down}[args.lab_command](args)
    except LabError as exc:
        raise CommandError(str(exc)) from exc


def _up(args: argparse.Namespace) -> int:
    from dataplane.lab.lab import Lab
    from dataplane.lab.status import render

    lab = Lab(args.prefix, nodes=args.nodes, pods=args.pods, backend=args.backend,
              kernel_nodes=args.kernel_nodes, fastpath=args.fastpath, network=args.network,
              underlay_mtu=args.underlay_mtu, ip_masq=args.ip_masq, vni=args.vni,
              port=args.port, daemon_timeout=args.daemon_timeout, store=args.store,
              etcd_members=args.etcd_members, direct_routing=args.direct_routing,
              nftables=args.nftables)
    lab.up(keep_on_error=args.keep_on_error)
    print(render(lab.status()))
    print(f"\ncheck:  dataplane lab status --prefix {lab.prefix}")
    if len(lab.pods) >= 2:
        a, b = lab.pods[0], lab.pods[-1]
        print(f"iperf3: ip netns exec {b.name} iperf3 -s -1 -B {b.ip} &\n"
              f"        ip netns exec {a.name} iperf3 -c {b.ip}")
    if lab.pods:
        print(f"NAT:    ip netns exec {lab.pods[0].name} ping -c 1 {naming.OUTSIDE_IP}   "
              f"(the outside host; tcpdump -ni eth0 in {lab.outside_ns} shows the node's address)")
    print(f"remove: dataplane lab down --prefix {lab.prefix}")
    return 0


def _status(args: argparse.Namespace) -> int:
    from dataplane.lab import paths as traffic_paths
    from dataplane.lab.lab import Lab
    from dataplane.lab.status import render

    lab = Lab.load(args.prefix)
    status = lab.status()
    matrix = lab.reachability(timeout=args.timeout) if args.ping else None
    kinds = ([p.to_dict() for p in traffic_paths.probe(lab, timeout=args.timeout)]
             if args.ping else None)
    if args.json:
        if matrix is not None:
            status["reachability"] = [{"from": s, "to": d, "ok": ok}
                                      for (s, d), ok in sorted(matrix.items())]
        if kinds is not None:
            status["paths"] = kinds
        print(json.dumps(status, indent=1))
    else:
        print(render(status, matrix, kinds))
    failed = (matrix and not all(matrix.values())) or any(
        not (p["seen"] and p["replied"]) for p in kinds or [])
    return 1 if failed else 0


def _down(args: argparse.Namespace) -> int:
    from dataplane.lab.cleanup import teardown

    removed = teardown(args.prefix)
    print(f"lab {args.prefix}: removed {len(removed)} namespaces" if removed
          else f"lab {args.prefix}: nothing to remove")
    return 0
