"""`dataplane manifest`: the Kubernetes manifest validated offline against the Kubernetes OpenAPI
schemas (kubernetes-validate), read back as YAML, with arguments the daemon really parses; the
systemd unit checked by systemd-analyze (when installed) and by its keys; the Containerfile."""

from __future__ import annotations

import argparse
import configparser
import json
import re
import shutil
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from dataplane import manifest, subnetenv
from dataplane.deploy.yamltext import dump, dump_all
from dataplane.netconf import parse_network_config
from dataplane.store.directory import DEFAULT_STORE_DIR
from tests import netns

ROOT = Path(__file__).resolve().parents[2]
# The Kubernetes release the schemas are pinned to (kubernetes-validate carries it, and every
# later one: the newest is checked too).
K8S_VERSION = "1.31.0"


def cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dataplane", "manifest", *argv],
                          capture_output=True, text=True, env=netns.env(), cwd=ROOT, timeout=60)


def documents(*argv: str) -> list[dict[str, Any]]:
    result = cli("kubernetes", *argv)
    assert result.returncode == 0, result.stderr
    return list(yaml.safe_load_all(result.stdout))


def by_kind(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in docs}


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return by_kind(docs)["DaemonSet"]["spec"]["template"]["spec"]


# -- Kubernetes ----------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    [],
    ["--backend", "udp", "--network", "10.50.0.0/16", "--namespace", "pod-net",
     "--image", "registry.example:5000/net/dataplane:1.2", "--healthz-port", "9099",
     "--cni-plugin-image", "ghcr.io/flannel-io/flannel-cni-plugin:v1.9.1-flannel3"],
])
def test_manifest_validates_against_the_kubernetes_schemas(argv: list[str]) -> None:
    docs = documents(*argv)
    assert [d["kind"] for d in docs] == ["Namespace", "ClusterRole", "ClusterRoleBinding",
                                         "ServiceAccount", "ConfigMap", "DaemonSet"]
    for version in (K8S_VERSION, kubernetes_validate.latest_version()):
        for doc in docs:
            kubernetes_validate.validate(doc, version, strict=True)


def test_the_validation_can_fail() -> None:
    """A misspelt field or a wrong type is caught: strict validation is really on."""
    daemonset = by_kind(documents())["DaemonSet"]
    daemonset["spec"]["template"]["spec"]["hostNetwrok"] = True
    with pytest.raises(kubernetes_validate.ValidationError, match="hostNetwrok"):
        kubernetes_validate.validate(daemonset, K8S_VERSION, strict=True)
    daemonset = by_kind(documents())["DaemonSet"]
    daemonset["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "x"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(daemonset, K8S_VERSION, strict=True)


def test_the_printed_yaml_is_the_data() -> None:
    text = cli("kubernetes", "--backend", "udp").stdout
    assert text.startswith("---\n")
    assert list(yaml.safe_load_all(text)) == manifest.kubernetes(backend="udp")


def test_rbac_is_what_the_kube_subnet_manager_uses() -> None:
    """flannel's ClusterRole, rule for rule: nothing more (annotations and the condition are
    patched through nodes/status, as flanneld does)."""
    docs = by_kind(documents("--namespace", "pod-net"))
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): sorted(r["verbs"])
             for r in docs["ClusterRole"]["rules"]}
    assert rules == {(("",), ("pods",)): ["get"],
                     (("",), ("nodes",)): ["get", "list", "watch"],
                     (("",), ("nodes/status",)): ["patch"]}
    assert len(docs["ClusterRole"]["rules"]) == 3
    binding = docs["ClusterRoleBinding"]
    assert binding["roleRef"]["name"] == docs["ClusterRole"]["metadata"]["name"]
    account = docs["ServiceAccount"]["metadata"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["name"],
                                    "namespace": "pod-net"}]
    assert pod_spec(list(docs.values()))["serviceAccountName"] == account["name"]
    for kind in ("ServiceAccount", "ConfigMap", "DaemonSet"):
        assert docs[kind]["metadata"]["namespace"] == "pod-net"
    assert docs["Namespace"]["metadata"]["name"] == "pod-net"
    assert docs["Namespace"]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == \
        "privileged"


@pytest.mark.parametrize("backend", ["udp", "vxlan"])
def test_the_config_map(backend: str) -> None:
    data = by_kind(documents("--backend", backend, "--network", "10.60.0.0/16"))["ConfigMap"][
        "data"]
    config = parse_network_config(data["net-conf.json"], source="ConfigMap net-conf.json")
    assert (str(config.network), config.backend_type) == ("10.60.0.0/16", backend)
    cni = json.loads(data["cni-conf.json"])
    assert [p["type"] for p in cni["plugins"]] == ["flannel", "portmap"]
    assert cni["plugins"][1]["capabilities"] == {"portMappings": True}


def test_the_daemonset_pod() -> None:
    docs = documents("--healthz-port", "9099", "--image", "example/dp:1")
    spec = pod_spec(docs)
    assert spec["hostNetwork"] is True
    assert spec["priorityClassName"] == "system-node-critical"
    assert spec["tolerations"] == [{"operator": "Exists", "effect": "NoSchedule"}]
    (container,) = spec["containers"]
    assert container["image"] == "example/dp:1"
    assert container["securityContext"]["capabilities"]["add"] == ["NET_ADMIN", "NET_RAW"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"].rstrip("/"): m["name"] for m in container["volumeMounts"]}
    assert volumes[mounts["/dev/net/tun"]]["hostPath"] == {"path": "/dev/net/tun",
                                                           "type": "CharDevice"}
    assert volumes[mounts["/run/flannel"]]["hostPath"]["path"] == "/run/flannel"
    assert volumes[mounts["/etc/kube-flannel"]]["configMap"]["name"] == \
        by_kind(docs)["ConfigMap"]["metadata"]["name"]
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in container["env"]}
    assert env == {"NODE_NAME": "spec.nodeName", "POD_NAME": "metadata.name",
                   "POD_NAMESPACE": "metadata.namespace"}
    assert container["ports"] == [{"name": "healthz", "containerPort": 9099, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] == "healthz"
        assert container[probe]["httpGet"]["host"] == "127.0.0.1"
    # the init container installs kube-flannel's conflist into the host's CNI config dir
    (init,) = spec["initContainers"]
    init_mounts = {m["name"]: m["mountPath"] for m in init["volumeMounts"]}
    assert volumes["cni"]["hostPath"]["path"] == init_mounts["cni"] == "/etc/cni/net.d"
    script = init["command"][-1]
    assert "/etc/kube-flannel/cni-conf.json" in script
    assert script.endswith("/etc/cni/net.d/10-flannel.conflist")


def test_the_cni_plugin_step_is_optional() -> None:
    spec = pod_spec(documents("--cni-plugin-image", "plugin:1"))
    assert [c["name"] for c in spec["initContainers"]] == ["install-cni-plugin", "install-cni"]
    assert spec["initContainers"][0]["args"] == ["-f", "/flannel", "/opt/cni/bin/flannel"]


# flanneld's names for the kube subnet manager's flags, added by the kube work package. Until
# that is merged `dataplane run` may lack them: the check below then parses the other flags
# strictly and these only once the parser has them, so it tightens by itself after the merge.
KUBE_FLAGS = ("--kube-subnet-mgr", "--net-config-path")


def run_parser() -> argparse.ArgumentParser:
    """`dataplane run`'s own parser, as the CLI configures it."""
    from dataplane.daemon import command
    parser = argparse.ArgumentParser(prog="dataplane run")
    command.configure(parser)
    return parser


def test_the_container_runs_flags_the_daemon_parses() -> None:
    (container,) = pod_spec(documents("--healthz-port", "9099"))["containers"]
    assert container["command"] == ["dataplane", "run"]
    args = container["args"]
    parser = run_parser()
    known = set(parser._option_string_actions)
    kube_ready = all(flag in known for flag in KUBE_FLAGS)
    if not kube_ready:
        args = [a for a in args if a.split("=")[0] not in KUBE_FLAGS]
    parsed = parser.parse_args(args)          # SystemExit on a flag it does not know
    assert parsed.ip_masq is True
    assert (parsed.healthz_ip, parsed.healthz_port) == ("127.0.0.1", 9099)
    if kube_ready:
        assert parsed.kube_subnet_mgr is True
        assert parsed.net_config_path == manifest.NET_CONF_PATH
    # every flag is spelt as the daemon spells it, kube ones included once they exist
    for arg in container["args"]:
        flag = arg.split("=")[0]
        assert flag in known or (flag in KUBE_FLAGS and not kube_ready), flag


def test_the_env_is_what_the_kube_store_reads() -> None:
    """NODE_NAME, POD_NAME, POD_NAMESPACE are the names the kube store reads (checked once the
    kube work package's dataplane/store/kube*.py is merged; until then, flanneld's names)."""
    sources = [p.read_text() for p in (ROOT / "dataplane" / "store").glob("kube*.py")]
    (container,) = pod_spec(documents())["containers"]
    names = [e["name"] for e in container["env"]]
    assert names == ["NODE_NAME", "POD_NAME", "POD_NAMESPACE"]
    if sources:
        for name in names:
            assert any(name in text for text in sources), name


@pytest.mark.parametrize("argv, error", [
    (["kubernetes", "--network", "10.244.0.1/16"], "--network: not an IPv4 network"),
    (["kubernetes", "--namespace", "Kube_Flannel"], "a namespace is a DNS label"),
    (["kubernetes", "--backend", "wireguard"], "invalid choice: 'wireguard'"),
    (["kubernetes", "--healthz-port", "0"], "a port from 1 to 65535"),
    (["systemd", "--python", "python3"], "--python 'python3': an absolute path"),
])
def test_bad_options_are_one_line(argv: list[str], error: str) -> None:
    result = cli(*argv)
    assert result.returncode in (1, 2)
    assert error in result.stderr and "Traceback" not in result.stderr, result.stderr


# -- the YAML writer ---------------------------------------------------------------------------

_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                     st.text(max_size=30),
                     st.sampled_from(["yes", "No", "on", "null", "~", "1e3", "0x1f", "08",
                                      "- a", "a: b", "#x", "'q'", '"q"', "a\nb\n", "x\n\ny",
                                      " lead", "trail ", "@at", "*ref", "&anchor", "!tag",
                                      "%p", "1.0", ".inf", "10.244.0.0/16", "a:b", ""]))
_keys = st.text(min_size=1, max_size=12)
_data = st.recursive(_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(_keys, inner, max_size=4)), max_leaves=20)


@settings(max_examples=200, deadline=None)
@given(_data)
def test_yaml_reads_back_as_written(value: Any) -> None:
    assert yaml.safe_load(dump(value)) == value


def test_yaml_multiline_strings_are_literal_blocks() -> None:
    text = dump_all([{"data": {"net-conf.json": '{\n  "Network": "10.244.0.0/16"\n}\n'}}])
    assert 'net-conf.json: |\n    {\n      "Network": "10.244.0.0/16"\n    }\n' in text


# -- systemd -----------------------------------------------------------------------------------

def unit_sections(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True,
                                       comment_prefixes=("#", ";"), delimiters=("=",))
    parser.optionxform = str          # systemd's keys are case-sensitive
    parser.read_string(text)
    return parser


def test_the_unit_file() -> None:
    result = cli("systemd", "--python", "/opt/venv/bin/python3")
    assert result.returncode == 0, result.stderr
    unit = unit_sections(result.stdout)
    assert unit.sections() == ["Unit", "Service", "Install"]
    svc = unit["Service"]
    assert svc["Type"] == "notify"
    assert svc["ExecStart"] == "/opt/venv/bin/python3 -m dataplane run"
    assert svc["Restart"] == "on-failure"
    assert int(svc["WatchdogSec"]) > 0
    assert svc["CapabilityBoundingSet"].split() == ["CAP_NET_ADMIN", "CAP_NET_RAW"]
    assert svc["ProtectSystem"] == "strict"
    for key in ("ProtectHome", "PrivateTmp", "NoNewPrivileges"):
        assert svc[key] == "yes", key
    assert svc["DeviceAllow"] == "/dev/net/tun rw" and svc["DevicePolicy"] == "closed"
    assert svc["EnvironmentFile"].lstrip("-").startswith("/etc/dataplane/")
    writable = svc["ReadWritePaths"].split()
    for path in (str(Path(subnetenv.DEFAULT_PATH).parent), DEFAULT_STORE_DIR):
        assert any(path == w or path.startswith(w + "/") for w in writable), path
    assert unit["Install"]["WantedBy"] == "multi-user.target"
    assert unit_sections(manifest.unit_text())["Service"]["ExecStart"] == \
        f"{manifest.UNIT_PYTHON} -m dataplane run"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                    reason="systemd-analyze is not installed (apt-get install systemd)")
def test_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = tmp_path / "dataplane.service"
    unit.write_text(cli("systemd", "--python", sys.executable).stdout)
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=60)
    complaints = [line for line in (result.stdout + result.stderr).splitlines()
                  if "dataplane.service" in line]
    assert result.returncode == 0 and not complaints, result.stdout + result.stderr
    # ... and it does complain about a bad unit
    unit.write_text(unit.read_text().replace("ProtectSystem=strict", "ProtectSystem=sturdy"))
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True,
                            text=True, timeout=60)
    assert "dataplane.service:" in result.stderr and "sturdy" in result.stderr


# -- the Containerfile -------------------------------------------------------------------------

def test_package_data_ships_the_deploy_files() -> None:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    shipped = data["tool"]["setuptools"]["package-data"]["dataplane.deploy"]
    for name in ("dataplane.service", "Containerfile"):
        assert name in shipped
        assert resources.files("dataplane.deploy").joinpath(name).is_file()


def test_the_containerfile_copies_what_exists() -> None:
    text = resources.files("dataplane.deploy").joinpath("Containerfile").read_text()
    assert "UNTESTED" in text
    sources = [word for line in text.splitlines() if line.startswith("COPY ")
               and "--from=" not in line for word in line.split()[1:-1]]
    assert sources, "no COPY from the build context"
    for source in sources:
        assert (ROOT / source).exists(), source
    assert re.search(r'^ENTRYPOINT \["dataplane"\]$', text, re.M)
