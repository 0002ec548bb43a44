"""Where the kube subnet manager finds its API server and credentials (in-cluster, kubeconfig
files, --kube-api-url), over TLS with the stand-in, and the flags that choose the store."""

from __future__ import annotations

import argparse
import base64
import json
from pathlib import Path

import pytest

from dataplane.errors import CommandError
from dataplane.store import command as leases_command
from dataplane.store import kube as kube_store
from dataplane.store import kube_annotations, kube_client, options
from dataplane.store.base import StoreError, StoreUnavailable
from dataplane.store.kube import KubeStore
from dataplane.store.kube_client import KubeConfigError, load_config
from tests.kube.certs import make_pki
from tests.kube.cluster import NET_CONF, flanneld_annotations, write_kubeconfig
from tests.kube.standin_apiserver import StandinApiServer


@pytest.fixture
def tls_api(tmp_path):
    pki = make_pki(tmp_path)
    api = StandinApiServer(tls=pki.server_context()).start()
    api.add_node("n1", "10.250.1.0/24",
                 annotations=flanneld_annotations("10.99.0.1", "0a:00:00:00:00:01"))
    try:
        yield api, pki
    finally:
        api.stop()


async def listed(store: KubeStore) -> list[str]:
    async with store:
        return [str(l.subnet) for l in (await store.list_leases())[0]]


def kubeconfig(path: Path, cluster: dict, user: dict, yaml: bool = False) -> Path:
    doc = {"apiVersion": "v1", "kind": "Config", "current-context": "ctx",
           "contexts": [{"name": "ctx", "context": {"cluster": "c", "user": "u"}}],
           "clusters": [{"name": "c", "cluster": cluster}],
           "users": [{"name": "u", "user": user}]}
    if yaml:
        import yaml as pyyaml
        path.write_text(pyyaml.safe_dump(doc))
    else:
        path.write_text(json.dumps(doc))
    return path


def test_in_cluster_config(run, tls_api, tmp_path, monkeypatch) -> None:
    api, pki = tls_api
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text(api.token + "\n")
    (sa / "ca.crt").write_bytes(pki.ca.read_bytes())
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(api.port),
           kube_client.SERVICE_ACCOUNT_ENV: str(sa), "NODE_NAME": "n1"}
    assert run(listed(KubeStore(env=env))) == ["10.250.1.0/24"]
    # a rotated token is read again
    monkeypatch.setattr(kube_client, "TOKEN_REREAD", 0.0)
    api.token = "rotated"
    (sa / "token").write_text("rotated")
    assert run(listed(KubeStore(env=env))) == ["10.250.1.0/24"]
    assert api.requests[-1].auth == "Bearer rotated"


def test_not_in_a_cluster(run, tmp_path) -> None:
    with pytest.raises(KubeConfigError, match="not running in a pod.*--kubeconfig-file"):
        load_config(env={})
    env = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443",
           kube_client.SERVICE_ACCOUNT_ENV: str(tmp_path)}
    with pytest.raises(KubeConfigError, match="no service account token at"):
        load_config(env=env)

    async def go():
        with pytest.raises(StoreError, match="not running in a pod") as err:
            await listed(KubeStore(env={}))
        assert not isinstance(err.value, StoreUnavailable)
    run(go())


def test_kubeconfig_yaml_with_files_and_client_certificate(run, tls_api, tmp_path) -> None:
    api, pki = tls_api
    # relative paths are relative to the kubeconfig's directory
    path = kubeconfig(tmp_path / "config.yaml",
                      {"server": api.url, "certificate-authority": "ca.crt"},
                      {"client-certificate": "client.crt", "client-key": "client.key"},
                      yaml=True)
    assert run(listed(KubeStore(kubeconfig=str(path)))) == ["10.250.1.0/24"]
    assert api.requests[-1].auth == ""                # the certificate, not a token


def test_kubeconfig_inline_data(run, tls_api, tmp_path) -> None:
    api, pki = tls_api
    def b64(p: Path) -> str:
        return base64.b64encode(p.read_bytes()).decode()

    path = kubeconfig(tmp_path / "config",
                      {"server": api.url, "certificate-authority-data": b64(pki.ca)},
                      {"client-certificate-data": b64(pki.client_cert),
                       "client-key-data": b64(pki.client_key)})
    assert run(listed(KubeStore(kubeconfig=str(path)))) == ["10.250.1.0/24"]
    token_file = tmp_path / "token"
    token_file.write_text(api.token)
    path = kubeconfig(tmp_path / "config2",
                      {"server": api.url, "certificate-authority-data": b64(pki.ca)},
                      {"tokenFile": str(token_file)})
    assert run(listed(KubeStore(kubeconfig=str(path)))) == ["10.250.1.0/24"]
    assert api.requests[-1].auth == f"Bearer {api.token}"


def test_wrong_ca_is_retryable_and_says_why(run, tls_api, tmp_path) -> None:
    api, _ = tls_api
    (tmp_path / "other").mkdir()
    other = make_pki(tmp_path / "other")
    path = kubeconfig(tmp_path / "config", {"server": api.url,
                                            "certificate-authority": str(other.ca)},
                      {"token": api.token})

    async def go():
        with pytest.raises(StoreUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            await listed(KubeStore(kubeconfig=str(path)))
    run(go())


def test_api_url_replaces_the_kubeconfig_server(run, tmp_path) -> None:
    api = StandinApiServer().start()
    try:
        api.add_node("n1", "10.250.1.0/24", annotations=flanneld_annotations("10.99.0.1", None))
        path = write_kubeconfig(tmp_path / "kc", "http://127.0.0.1:1", api.token)
        store = KubeStore(kubeconfig=str(path), api_url=api.url)
        assert run(listed(store)) == ["10.250.1.0/24"]
        assert load_config(api.url).token is None         # --kube-api-url alone: no credentials
    finally:
        api.stop()


@pytest.mark.parametrize("user, message", [
    ({"exec": {"command": "aws"}}, "'exec', which is not supported"),
    ({"client-certificate-data": "!!"}, "client-certificate-data is not base64"),
])
def test_kubeconfig_errors(tmp_path, user, message) -> None:
    path = kubeconfig(tmp_path / "kc", {"server": "https://10.0.0.1:6443"}, user)
    with pytest.raises(KubeConfigError, match=message):
        load_config(None, str(path))


def test_kubeconfig_file_errors(tmp_path) -> None:
    with pytest.raises(KubeConfigError, match="--kubeconfig-file .*nope: No such file"):
        load_config(None, str(tmp_path / "nope"))
    (tmp_path / "empty").write_text("{}")
    with pytest.raises(KubeConfigError, match="no current-context"):
        load_config(None, str(tmp_path / "empty"))
    (tmp_path / "bad").write_text("a: [")
    with pytest.raises(KubeConfigError, match="bad: not a kubeconfig"):
        load_config(None, str(tmp_path / "bad"))
    with pytest.raises(KubeConfigError, match="--kube-api-url 'ftp://x'"):
        load_config("ftp://x")


# -- flags -----------------------------------------------------------------------------------

def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    options.add_store_arguments(parser)
    return parser.parse_args(list(argv))


def test_flags_and_their_defaults() -> None:
    assert options.DEFAULT_KUBE_PREFIX == kube_annotations.DEFAULT_PREFIX
    assert options.DEFAULT_NET_CONF == kube_store.DEFAULT_NET_CONF
    store = options.open_store(parse("--kube-subnet-mgr"))
    assert isinstance(store, KubeStore)
    assert (store.net_config_path, store.set_node_network_unavailable, store.ann.public_ip) == \
        ("/etc/kube-flannel/net-conf.json", True, "flannel.alpha.coreos.com/public-ip")
    store = options.open_store(parse(
        "--kube-subnet-mgr", "--kube-api-url", "https://10.0.0.1:6443", "--kubeconfig-file",
        "/k", "--kube-annotation-prefix", "example.com/x", "--net-config-path", "/n.json",
        "--set-node-network-unavailable=false"))
    assert (store.api_url, store.kubeconfig, store.net_config_path,
            store.set_node_network_unavailable, store.ann.public_ip) == \
        ("https://10.0.0.1:6443", "/k", "/n.json", False, "example.com/x-public-ip")
    assert options.open_store(parse("--kube-subnet-mgr", "--set-node-network-unavailable")
                              ).set_node_network_unavailable is True


def test_flag_errors(capsys) -> None:
    with pytest.raises(CommandError, match="--kube-api-url applies to the Kubernetes API store"):
        options.open_store(parse("--kube-api-url", "https://x"))
    with pytest.raises(CommandError, match="--net-config-path applies"):
        options.open_store(parse("--etcd-endpoints", "http://127.0.0.1:2379",
                                 "--net-config-path", "/x"))
    with pytest.raises(CommandError, match="at most a single slash"):
        options.open_store(parse("--kube-subnet-mgr", "--kube-annotation-prefix", "a/b/c"))
    with pytest.raises(CommandError, match="--etcd-prefix applies to the etcd store"):
        options.open_store(parse("--kube-subnet-mgr", "--etcd-prefix", "/x"))
    for argv in (["--kube-subnet-mgr", "--store-dir", "/x"],
                 ["--kube-subnet-mgr", "--set-node-network-unavailable=maybe"]):
        with pytest.raises(SystemExit):
            parse(*argv)
    err = capsys.readouterr().err
    assert "not allowed with argument" in err and "'maybe': true or false" in err


def test_leases_command_lists_the_nodes(tmp_path, capsys) -> None:
    api = StandinApiServer().start()
    try:
        api.add_node("n1", "10.250.1.0/24",
                     annotations=flanneld_annotations("10.99.0.1", "0a:00:00:00:00:01"))
        api.add_node("n2", "10.250.2.0/24", annotations=flanneld_annotations("10.99.0.2", None))
        kc = write_kubeconfig(tmp_path / "kc", api.url, api.token)
        net_conf = tmp_path / "net-conf.json"
        net_conf.write_text(NET_CONF)
        parser = argparse.ArgumentParser()
        leases_command.configure(parser)
        args = parser.parse_args(["--kube-subnet-mgr", "--kubeconfig-file", str(kc)])
        assert leases_command.main(args) == 0
    finally:
        api.stop()
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["10.250.1.0/24", "10.99.0.1", "vxlan", "0a:00:00:00:00:01",
                                "never"]
    assert lines[2].split() == ["10.250.2.0/24", "10.99.0.2", "udp", "-", "never"]


def test_other_stores_do_not_load_the_kubernetes_client(tmp_path) -> None:
    """httpx and the kube modules cost RSS: a directory or etcd daemon never imports them,
    and a kube daemon only once it talks to the API."""
    import subprocess
    import sys
    code = (
        "import sys, argparse\n"
        "from dataplane.daemon import command, node\n"
        "from dataplane.store import options\n"
        "p = argparse.ArgumentParser(); options.add_store_arguments(p)\n"
        f"options.open_store(p.parse_args(['--store-dir', {str(tmp_path)!r}]))\n"
        "options.open_store(p.parse_args(['--etcd-endpoints', 'http://127.0.0.1:1']))\n"
        "loaded = [m for m in sys.modules\n"
        "          if m == 'httpx' or m.startswith('dataplane.store.kube')]\n"
        "assert not loaded, loaded\n"
        "options.open_store(p.parse_args(['--kube-subnet-mgr']))\n"
        "assert 'httpx' not in sys.modules and 'yaml' not in sys.modules\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "ok", out.stderr
