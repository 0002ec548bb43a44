"""Pods through the real CNI plugins, configured as flannel's CNI plugin would configure them.

Debian's containernetworking-plugins ships `bridge`, `host-local` and `loopback` but not the
`flannel` meta-plugin, so the lab does its one job itself: read the node's subnet.env, derive
the `bridge` delegate config from it (flannel-io/cni-plugin, flannel_linux.go) and call
`bridge` with the CNI protocol (env + config on stdin), inside the node's namespace.
"""

from __future__ import annotations

import json
from ipaddress import IPv4Interface
from pathlib import Path
from typing import Any

from dataplane.lab import netns
from dataplane.lab.errors import LabError
from dataplane.lab.flannel import SubnetEnv, write_atomic

PLUGIN_DIR = Path("/usr/lib/cni")
REQUIRED_PLUGINS = ("bridge", "host-local", "loopback")
CNI_VERSION = "1.0.0"

LOOPBACK_CONF: dict[str, Any] = {"cniVersion": CNI_VERSION, "name": "lo", "type": "loopback"}


def check_plugins() -> None:
    missing = [p for p in REQUIRED_PLUGINS if not (PLUGIN_DIR / p).is_file()]
    if missing:
        raise LabError(f"CNI plugins missing from {PLUGIN_DIR}: {', '.join(missing)} "
                       "(apt-get install containernetworking-plugins)")


def flannel_netconf(ipam_data_dir: Path) -> dict[str, Any]:
    """kube-flannel's CNI config (its cni-conf.json), plus host-local's data dir kept inside the
    lab's state dir so labs never share or leak IP allocations."""
    return {
        "name": "cbr0",
        "cniVersion": CNI_VERSION,
        "type": "flannel",
        "delegate": {"hairpinMode": True, "isDefaultGateway": True},
        "ipam": {"dataDir": str(ipam_data_dir)},
    }


def derive_delegate(netconf: dict[str, Any], env: SubnetEnv) -> dict[str, Any]:
    """What flannel's CNI plugin hands its delegate, given its config and the subnet.env."""
    delegate = dict(netconf.get("delegate") or {})
    delegate["name"] = netconf["name"]
    delegate.setdefault("type", "bridge")      # the bridge plugin's own default name is cni0
    # If flanneld masquerades (FLANNEL_IPMASQ=true) the bridge must not, and vice versa.
    delegate.setdefault("ipMasq", not env.ipmasq)
    delegate.setdefault("mtu", env.mtu)
    if delegate["type"] == "bridge":
        delegate.setdefault("isGateway", True)
    if netconf.get("cniVersion"):
        delegate["cniVersion"] = netconf["cniVersion"]
    ipam = dict(netconf.get("ipam") or {})
    ipam.setdefault("type", "host-local")
    ipam["ranges"] = [[{"subnet": str(env.subnet.network)}]]
    ipam["routes"] = list(ipam.get("routes", [])) + [{"dst": str(env.network)}]
    delegate["ipam"] = ipam
    return delegate


def invoke(node_ns: str, plugin: str, command: str, *, container_id: str, pod_ns: str,
           ifname: str, conf: dict[str, Any]) -> dict[str, Any]:
    """Run one CNI plugin inside the node's namespace; returns its result (empty for DEL)."""
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": netns.netns_path(pod_ns),
        "CNI_IFNAME": ifname,
        "CNI_PATH": str(PLUGIN_DIR),
        "PATH": netns.SYSTEM_PATH,          # bridge runs iptables when ipMasq is on
    }
    proc = netns.run(netns.ns_argv(node_ns, [str(PLUGIN_DIR / plugin)]), check=False,
                     input=json.dumps(conf), env=env)
    if proc.returncode != 0:
        try:
            err = json.loads(proc.stdout)
            detail = f"{err.get('msg')}" + (f" ({err['details']})" if err.get("details") else "")
        except ValueError:
            detail = (proc.stderr or proc.stdout).strip()
        raise LabError(f"CNI {plugin} {command} for {container_id} in {node_ns} failed: {detail}")
    return json.loads(proc.stdout) if proc.stdout.strip() else {}


def add_pod(node_ns: str, pod_ns: str, container_id: str, delegate: dict[str, Any],
            scratch: Path) -> IPv4Interface:
    """ADD loopback and the bridge delegate; returns the pod's address on eth0.

    The delegate config is saved to `scratch` first, as flannel's plugin saves it in its
    dataDir, so DEL can replay exactly what ADD was given even after a crash mid-ADD."""
    invoke(node_ns, "loopback", "ADD", container_id=container_id, pod_ns=pod_ns, ifname="lo",
           conf=LOOPBACK_CONF)
    write_atomic(scratch, json.dumps(delegate, indent=1))
    result = invoke(node_ns, delegate["type"], "ADD", container_id=container_id, pod_ns=pod_ns,
                    ifname="eth0", conf=delegate)
    ips = result.get("ips") or []
    if not ips:
        raise LabError(f"CNI {delegate['type']} ADD for {container_id} returned no address: "
                       f"{result}")
    return IPv4Interface(ips[0]["address"])


def del_pod(node_ns: str, pod_ns: str, container_id: str, scratch: Path) -> None:
    """DEL with the config ADD was given; a missing scratch file means nothing to undo."""
    try:
        delegate = json.loads(scratch.read_text())
    except FileNotFoundError:
        return
    invoke(node_ns, delegate["type"], "DEL", container_id=container_id, pod_ns=pod_ns,
           ifname="eth0", conf=delegate)
    invoke(node_ns, "loopback", "DEL", container_id=container_id, pod_ns=pod_ns, ifname="lo",
           conf=LOOPBACK_CONF)
    scratch.unlink(missing_ok=True)
