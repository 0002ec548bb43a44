"""flanneld's flags for its NAT and FORWARD rules, as `dataplane run` takes them."""

from __future__ import annotations

import argparse

from dataplane.cli import go_bool
from dataplane.netfilter import NetfilterOptions


def _seconds(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"{value!r}: a whole number of seconds, at least 1")
    return number


def add_netfilter_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "NAT and forwarding rules (flanneld's)",
        "iptables chains nat/FLANNEL-POSTRTG and filter/FLANNEL-FWD, or, with\n"
        "\"EnableNFTables\": true in the network config, the nftables table ip flannel-ipv4.\n"
        "A stop leaves them in place (pods keep their NAT while the daemon restarts); a\n"
        "restart rewrites them without duplicates. Decommissioning the node removes them:\n"
        "dataplane leases release --subnet-file PATH")
    g.add_argument("--ip-masq", nargs="?", const=True, default=False, type=go_bool,
                   metavar="BOOL",
                   help="masquerade pod traffic leaving the pod network (flannel's "
                        "FLANNEL-POSTRTG rules) and write FLANNEL_IPMASQ=true to subnet.env, so "
                        "the CNI bridge does not masquerade too. Without it the bridge plugin "
                        "masquerades, pod-to-pod traffic included")
    g.add_argument("--ip-masq-fully-random-disable", nargs="?", const=True, default=False,
                   type=go_bool, metavar="BOOL",
                   help="MASQUERADE without --random-fully (used where supported by default)")
    g.add_argument("--iptables-forward-rules", nargs="?", const=True, default=True,
                   type=go_bool, metavar="BOOL",
                   help="accept the pod network both ways in FORWARD (FLANNEL-FWD), for hosts "
                        "whose FORWARD policy is DROP, as Docker sets it (default true; "
                        "--iptables-forward-rules=false to leave FORWARD alone)")
    g.add_argument("--iptables-resync", type=_seconds, default=5, metavar="SECONDS",
                   help="put changed or deleted rules back every SECONDS (default %(default)s)")
    g.add_argument("--ip-blackhole-route", nargs="?", const=True, default=False, type=go_bool,
                   metavar="BOOL",
                   help="keep a blackhole route to our subnet (metric 4096, behind cni0's), so "
                        "traffic to its unused addresses ends here rather than following the "
                        "default route; put back every --iptables-resync seconds")


def netfilter_options(args: argparse.Namespace) -> NetfilterOptions:
    return NetfilterOptions(forward_rules=args.iptables_forward_rules,
                            resync=float(args.iptables_resync),
                            random_fully=not args.ip_masq_fully_random_disable)
