"""`dataplane manifest`: how to deploy the node daemon, printed.

    dataplane manifest kubernetes [--image IMAGE] [--backend udp|vxlan] [--network CIDR] ...
    dataplane manifest systemd [--python PATH]

kubernetes: the objects kube-flannel.yml has, for our daemon in --kube-subnet-mgr mode: a
Namespace, a ServiceAccount, a ClusterRole and its binding with exactly what the kube subnet
manager uses (flannel's own rules: read pods, read and watch nodes, patch nodes/status, which
also carries the annotation patches), the ConfigMap with net-conf.json and cni-conf.json, and the
DaemonSet. The pods of a node are wired by flannel's CNI plugin reading our subnet.env, so an
init container installs kube-flannel's conflist (10-flannel.conflist: the `flannel` and `portmap`
plugins); the `flannel` CNI binary itself is the cluster's (kube-flannel's install-cni-plugin
init container, or the distribution's package): --cni-plugin-image adds kube-flannel's step.

systemd: the unit shipped in dataplane/deploy/dataplane.service, with ExecStart's interpreter
set to the one running this command (or --python).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import sys
from importlib import resources
from typing import Any

from dataplane.errors import CommandError

HELP = "print deployment files: a Kubernetes DaemonSet manifest, the systemd unit"

DEFAULT_IMAGE = "localhost/dataplane:0.1.0"
DEFAULT_NAMESPACE = "kube-flannel"
DEFAULT_NETWORK = "10.244.0.0/16"
DEFAULT_HEALTHZ_PORT = 8081
NAME = "dataplane"
NET_CONF_DIR = "/etc/kube-flannel"
NET_CONF_PATH = f"{NET_CONF_DIR}/net-conf.json"     # flanneld's --net-config-path default
CNI_CONF_DIR = "/etc/cni/net.d"
CNI_CONFLIST = "10-flannel.conflist"                # kube-flannel's name for it
UNIT_PYTHON = "/usr/bin/python3"                    # the interpreter the shipped unit names


def configure(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = ("Examples:\n"
                "  dataplane manifest kubernetes --image registry.example/dataplane:0.1.0 "
                "| kubectl apply -f -\n"
                "  dataplane manifest systemd > /etc/systemd/system/dataplane.service\n"
                "The image is yours to build: see the Containerfile in the package "
                "(dataplane/deploy/Containerfile).")
    sub = p.add_subparsers(dest="target", metavar="TARGET", required=True)
    kube = sub.add_parser("kubernetes", help="Namespace, RBAC, ConfigMap and DaemonSet for "
                          "--kube-subnet-mgr, as kube-flannel.yml has them",
                          description="Print the manifest (YAML, several documents) for "
                          "kubectl apply -f -.")
    kube.add_argument("--image", default=DEFAULT_IMAGE,
                      help="the daemon's image, built from dataplane/deploy/Containerfile "
                           "(default %(default)s)")
    kube.add_argument("--backend", choices=("udp", "vxlan"), default="vxlan",
                      help="Backend.Type of net-conf.json (default %(default)s)")
    kube.add_argument("--network", default=DEFAULT_NETWORK, type=_network, metavar="CIDR",
                      help="the pod network, net-conf.json's Network; the cluster's "
                           "--cluster-cidr (default %(default)s)")
    kube.add_argument("--namespace", default=DEFAULT_NAMESPACE, type=_dns_label,
                      help="namespace of the daemon's objects (default %(default)s)")
    kube.add_argument("--healthz-port", type=_port, default=DEFAULT_HEALTHZ_PORT,
                      metavar="PORT", help="port of /healthz and /readyz for the probes, on "
                                           "127.0.0.1 of each node (default %(default)s)")
    kube.add_argument("--cni-plugin-image", metavar="IMAGE",
                      help="also install the flannel CNI plugin binary into /opt/cni/bin from "
                           "this image, as kube-flannel does (e.g. "
                           "ghcr.io/flannel-io/flannel-cni-plugin:v1.9.1-flannel3); default: "
                           "the node has it already")
    unit = sub.add_parser("systemd", help="the systemd unit (Type=notify, hardened)",
                          description="Print dataplane.service; settings go in "
                          "/etc/dataplane/dataplane.env as FLANNELD_* variables.")
    unit.add_argument("--python", default=sys.executable, metavar="PATH",
                      help="interpreter for ExecStart, one that has this package installed "
                           "(default: this one, %(default)s)")


def main(args: argparse.Namespace) -> int:
    if args.target == "kubernetes":
        from dataplane.deploy.yamltext import dump_all
        sys.stdout.write(dump_all(kubernetes(
            image=args.image, backend=args.backend, network=args.network,
            namespace=args.namespace, healthz_port=args.healthz_port,
            cni_plugin_image=args.cni_plugin_image)))
    else:
        sys.stdout.write(systemd_unit(args.python))
    return 0


# -- kubernetes --------------------------------------------------------------------------------

def net_conf(network: str, backend: str) -> str:
    return json.dumps({"Network": network, "Backend": {"Type": backend}}, indent=2) + "\n"


def cni_conf() -> str:
    """kube-flannel's cni-conf.json: flannel's CNI plugin (reading our subnet.env) and portmap."""
    return json.dumps({
        "name": "cbr0",
        "cniVersion": "0.3.1",
        "plugins": [
            {"type": "flannel", "delegate": {"hairpinMode": True, "isDefaultGateway": True}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }, indent=2) + "\n"


def daemon_args(healthz_port: int) -> list[str]:
    """The container's arguments after `dataplane run`: flanneld's flag names, as kube-flannel
    passes them, plus where our probes listen."""
    return ["--kube-subnet-mgr", f"--net-config-path={NET_CONF_PATH}", "--ip-masq",
            "--healthz-ip=127.0.0.1", f"--healthz-port={healthz_port}"]


def kubernetes(*, image: str = DEFAULT_IMAGE, backend: str = "vxlan",
               network: str = DEFAULT_NETWORK, namespace: str = DEFAULT_NAMESPACE,
               healthz_port: int = DEFAULT_HEALTHZ_PORT,
               cni_plugin_image: str | None = None) -> list[dict[str, Any]]:
    """The manifest's documents, as data."""
    labels = {"tier": "node", "app": NAME, "k8s-app": NAME}
    meta = {"name": NAME, "namespace": namespace, "labels": {"k8s-app": NAME}}
    namespace_doc = {
        "apiVersion": "v1", "kind": "Namespace",
        # hostNetwork, hostPath and NET_ADMIN: only the privileged Pod Security level allows them
        "metadata": {"name": namespace, "labels": {"k8s-app": NAME,
                                                    "pod-security.kubernetes.io/enforce":
                                                        "privileged"}},
    }
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": NAME, "labels": {"k8s-app": NAME}},
        "rules": [
            # the node name from POD_NAME/POD_NAMESPACE when NODE_NAME is not set
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
            # our podCIDR, and every peer from a list+watch of Nodes
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
            # our annotations and the NetworkUnavailable condition, both through the
            # status subresource, as flanneld patches them
            {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]},
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": NAME, "labels": {"k8s-app": NAME}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                    "name": NAME},
        "subjects": [{"kind": "ServiceAccount", "name": NAME, "namespace": namespace}],
    }
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta}
    config_map = {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": f"{NAME}-cfg", "namespace": namespace, "labels": labels},
        "data": {"cni-conf.json": cni_conf(), "net-conf.json": net_conf(network, backend)},
    }
    cfg_mount = {"name": "cfg", "mountPath": NET_CONF_DIR + "/"}
    conflist = f"{CNI_CONF_DIR}/{CNI_CONFLIST}"
    init = [{
        "name": "install-cni",
        "image": image,
        # written beside and renamed, so that the kubelet never reads half a file
        "command": ["/bin/sh", "-c",
                    f"cp -f {NET_CONF_DIR}/cni-conf.json {conflist}.tmp && "
                    f"mv -f {conflist}.tmp {conflist}"],
        "volumeMounts": [{"name": "cni", "mountPath": CNI_CONF_DIR}, cfg_mount],
    }]
    volumes: list[dict[str, Any]] = [
        {"name": "run", "hostPath": {"path": "/run/flannel", "type": "DirectoryOrCreate"}},
        {"name": "cni", "hostPath": {"path": CNI_CONF_DIR, "type": "DirectoryOrCreate"}},
        {"name": "tun", "hostPath": {"path": "/dev/net/tun", "type": "CharDevice"}},
        {"name": "cfg", "configMap": {"name": f"{NAME}-cfg"}},
        {"name": "xtables-lock", "hostPath": {"path": "/run/xtables.lock",
                                              "type": "FileOrCreate"}},
    ]
    if cni_plugin_image:
        init.insert(0, {"name": "install-cni-plugin", "image": cni_plugin_image,
                        "command": ["cp"], "args": ["-f", "/flannel", "/opt/cni/bin/flannel"],
                        "volumeMounts": [{"name": "cni-plugin", "mountPath": "/opt/cni/bin"}]})
        volumes.append({"name": "cni-plugin", "hostPath": {"path": "/opt/cni/bin"}})
    probe = {"host": "127.0.0.1", "port": "healthz"}
    container = {
        "name": NAME,
        "image": image,
        "command": ["dataplane", "run"],
        "args": daemon_args(healthz_port),
        "ports": [{"name": "healthz", "containerPort": healthz_port, "protocol": "TCP"}],
        "livenessProbe": {"httpGet": {"path": "/healthz", **probe},
                          "initialDelaySeconds": 10, "periodSeconds": 30},
        "readinessProbe": {"httpGet": {"path": "/readyz", **probe},
                           "initialDelaySeconds": 5, "periodSeconds": 10},
        "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}},
        "securityContext": {"privileged": False,
                            "capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}},
        "env": [
            {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NAMESPACE",
             "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        ],
        "volumeMounts": [
            {"name": "run", "mountPath": "/run/flannel"},
            {"name": "tun", "mountPath": "/dev/net/tun"},
            cfg_mount,
            {"name": "xtables-lock", "mountPath": "/run/xtables.lock"},
        ],
    }
    daemonset = {
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": f"{NAME}-ds", "namespace": namespace, "labels": labels},
        "spec": {
            "selector": {"matchLabels": {"app": NAME}},
            "template": {
                "metadata": {"labels": {"tier": "node", "app": NAME}},
                "spec": {
                    "affinity": {"nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [{"matchExpressions": [
                                {"key": "kubernetes.io/os", "operator": "In",
                                 "values": ["linux"]}]}]}}},
                    "hostNetwork": True,
                    "priorityClassName": "system-node-critical",
                    "tolerations": [{"operator": "Exists", "effect": "NoSchedule"}],
                    "serviceAccountName": NAME,
                    "initContainers": init,
                    "containers": [container],
                    "volumes": volumes,
                },
            },
        },
    }
    return [namespace_doc, role, binding, account, config_map, daemonset]


# -- systemd -----------------------------------------------------------------------------------

def unit_text() -> str:
    """dataplane.service as shipped."""
    return resources.files("dataplane.deploy").joinpath("dataplane.service").read_text()


def systemd_unit(python: str = UNIT_PYTHON) -> str:
    text = unit_text()
    start = f"ExecStart={UNIT_PYTHON} -m dataplane run"
    if start not in text:
        raise CommandError("the shipped dataplane.service has no ExecStart to adapt")
    if not python.startswith("/") or any(c.isspace() for c in python):
        raise CommandError(f"--python {python!r}: an absolute path without blanks, as "
                           "systemd's ExecStart needs")
    return text.replace(start, f"ExecStart={python} -m dataplane run")


# -- argument types ----------------------------------------------------------------------------

def _network(value: str) -> str:
    try:
        return str(ipaddress.IPv4Network(value, strict=True))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an IPv4 network: {exc}") from None


def _dns_label(value: str) -> str:
    import re
    if not re.fullmatch(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", value):
        raise argparse.ArgumentTypeError(f"{value!r}: a namespace is a DNS label (lower-case "
                                         "letters, digits and '-', at most 63)")
    return value


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r}: a port from 1 to 65535")
    return port
