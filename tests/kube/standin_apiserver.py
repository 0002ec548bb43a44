"""A STAND-IN for kube-apiserver, for tests only: no real API server can be installed here.

It implements, over real HTTP/1.1 (optionally TLS), only what dataplane's kube subnet manager
uses, with the API server's semantics where the subnet manager can tell:

    GET   /api/v1/nodes[?limit=N&continue=T]           list, metadata.resourceVersion, pages
    GET   /api/v1/nodes?watch=1&resourceVersion=RV     chunked stream of watch events, one
          [&allowWatchBookmarks=true&timeoutSeconds=N] JSON object a line: ADDED, MODIFIED,
                                                       DELETED, BOOKMARK; an RV older than the
                                                       retained history: ERROR 410 "too old
                                                       resource version" (or HTTP 410)
    GET   /api/v1/nodes/NAME
    POST  /api/v1/nodes, DELETE /api/v1/nodes/NAME     (for the tests' real-cluster mode)
    PATCH /api/v1/nodes/NAME[/status]                  strategic-merge (status.conditions
                                                       merged by type) or merge patch; /status
                                                       keeps spec, the main resource keeps status
    GET   /api/v1/namespaces/NS/pods/NAME              spec.nodeName (POD_NAME lookup)

Every request needs `Authorization: Bearer <token>` (401 otherwise), or a client certificate;
with `rbac` set, only those (resource, verb) pairs are allowed (403 otherwise). resourceVersion is
one counter for every change, as etcd's revision is. Controls for tests: add/modify/delete nodes,
force_gone() (history compacted: live watches get a 410 ERROR event), drop_connections(),
down()/up() (stop listening, come back on the same port). Requests and patch bodies are
recorded byte for byte.

The listening socket can be created inside a network namespace (`netns=`): sockets keep the
namespace they were made in, so the server's threads stay in the test process while daemons in
lab namespaces reach it over the lab's underlay.
"""

from __future__ import annotations

import copy
import json
import socket
import ssl
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

DEFAULT_TOKEN = "standin-token"


@dataclass
class Recorded:
    method: str
    path: str                # with the query string
    content_type: str
    body: bytes
    auth: str


class StandinApiServer:
    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, token: str = DEFAULT_TOKEN,
                 tls: ssl.SSLContext | None = None, netns: str | None = None,
                 bookmark_interval: float = 1.0, history: int = 10000,
                 gone_as: str = "event") -> None:
        self.host, self.port, self.token = host, port, token
        self.tls, self.netns = tls, netns
        self.bookmark_interval = bookmark_interval
        self.history_limit = history
        self.gone_as = gone_as            # "event": 200 + ERROR 410; "http": status 410
        self.cond = threading.Condition()
        self.rv = 100
        self.nodes: dict[str, dict[str, Any]] = {}
        self.pods: dict[tuple[str, str], dict[str, Any]] = {}
        self.history: list[tuple[int, str, dict[str, Any]]] = []
        self.oldest = 0                   # watching from an RV below this: 410 Gone
        self.gone_epoch = 0               # bumped by force_gone(): live watches end with 410
        self.requests: list[Recorded] = []
        self.snapshots: dict[str, tuple[int, list[dict[str, Any]]]] = {}   # continue tokens
        self.watches_served = 0
        self.fail_next: list[tuple[str, int]] = []   # (path prefix, status) injected errors
        self.rbac: set[tuple[str, str]] | None = None  # allowed (resource, verb); None: all
        self._conns: set[socket.socket] = set()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- running -------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    def start(self) -> StandinApiServer:
        self.up()
        return self

    def up(self) -> None:
        """Listen (again, on the same port after down())."""
        if self._httpd is not None:
            return
        sock = self._make_socket()
        self.port = sock.getsockname()[1]
        httpd = _Server((self.host, self.port), _Handler, bind_and_activate=False)
        httpd.socket.close()
        httpd.socket = sock
        httpd.standin = self
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="standin-apiserver", daemon=True)
        self._thread.start()

    def down(self) -> None:
        """Stop listening and drop every connection: the API server is unreachable."""
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        self.drop_connections()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    stop = down

    def __enter__(self) -> StandinApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.down()

    def _make_socket(self) -> socket.socket:
        def make() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self.port))
            sock.listen(64)
            return sock
        if self.netns is None:
            return make()
        from dataplane.lab.nsthread import call_in_netns
        return call_in_netns(self.netns, make)

    def drop_connections(self) -> None:
        """Cut every open connection (watches included) mid-stream, as a broken network does."""
        with self.cond:
            conns = list(self._conns)
            self.cond.notify_all()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # -- controls ------------------------------------------------------------------------------

    def add_node(self, name: str, pod_cidr: str | None = None, *,
                 annotations: dict[str, str] | None = None, address: str | None = None
                 ) -> dict[str, Any]:
        node = {
            "kind": "Node", "apiVersion": "v1",
            "metadata": {
                "name": name, "uid": str(uuid.uuid4()),
                "creationTimestamp": _now(),
                "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"},
                "annotations": {"node.alpha.kubernetes.io/ttl": "0",
                                "volumes.kubernetes.io/controller-managed-attach-detach": "true",
                                **(annotations or {})},
            },
            "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]} if pod_cidr else {},
            "status": {
                "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                "message": "kubelet is posting ready status",
                                "lastHeartbeatTime": _now(), "lastTransitionTime": _now()}],
                "addresses": ([{"type": "InternalIP", "address": address}] if address else [])
                + [{"type": "Hostname", "address": name}],
            },
        }
        with self.cond:
            if name in self.nodes:
                raise ValueError(f"node {name} exists")
            self._commit("ADDED", node)
            return copy.deepcopy(node)

    def modify_node(self, name: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        with self.cond:
            node = copy.deepcopy(self.nodes[name])
            change(node)
            self._commit("MODIFIED", node)
            return copy.deepcopy(node)

    def set_annotations(self, name: str, annotations: dict[str, str | None]) -> dict[str, Any]:
        def change(node: dict[str, Any]) -> None:
            ann = node["metadata"].setdefault("annotations", {})
            for k, v in annotations.items():
                if v is None:
                    ann.pop(k, None)
                else:
                    ann[k] = v
        return self.modify_node(name, change)

    def set_pod_cidr(self, name: str, pod_cidr: str | None) -> dict[str, Any]:
        def change(node: dict[str, Any]) -> None:
            node["spec"] = {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]} if pod_cidr else {}
        return self.modify_node(name, change)

    def heartbeat(self, name: str) -> dict[str, Any]:
        """What a kubelet does every few seconds: a status change that matters to no lease."""
        def change(node: dict[str, Any]) -> None:
            for cond in node["status"]["conditions"]:
                cond["lastHeartbeatTime"] = _now()
        return self.modify_node(name, change)

    def delete_node(self, name: str) -> None:
        with self.cond:
            node = copy.deepcopy(self.nodes[name])
            self._commit("DELETED", node)

    def node(self, name: str) -> dict[str, Any]:
        with self.cond:
            return copy.deepcopy(self.nodes[name])

    def add_pod(self, namespace: str, name: str, node_name: str) -> None:
        with self.cond:
            self.rv += 1
            self.pods[(namespace, name)] = {
                "kind": "Pod", "apiVersion": "v1",
                "metadata": {"name": name, "namespace": namespace,
                             "resourceVersion": str(self.rv)},
                "spec": {"nodeName": node_name, "containers": [{"name": "c", "image": "x"}]}}

    def force_gone(self) -> None:
        """Compact the history: every resourceVersion handed out so far is too old now, and
        live watches end with a 410 ERROR event, as after an etcd compaction."""
        with self.cond:
            self.rv += 1
            self.oldest = self.rv
            self.history.clear()
            self.snapshots.clear()                    # continue tokens expire too
            self.gone_epoch += 1
            self.cond.notify_all()

    def patches(self, path_suffix: str = "") -> list[Recorded]:
        with self.cond:
            return [r for r in self.requests
                    if r.method == "PATCH" and r.path.split("?")[0].endswith(path_suffix)]

    def _commit(self, kind: str, node: dict[str, Any]) -> None:
        """Under self.cond: a new resourceVersion for `node`, history, wake the watches."""
        self.rv += 1
        node["metadata"]["resourceVersion"] = str(self.rv)
        name = node["metadata"]["name"]
        if kind == "DELETED":
            self.nodes.pop(name, None)
        else:
            self.nodes[name] = node
        self.history.append((self.rv, kind, copy.deepcopy(node)))
        if len(self.history) > self.history_limit:
            drop = len(self.history) - self.history_limit
            self.oldest = self.history[drop][0] - 1
            del self.history[:drop]
        self.cond.notify_all()


DISCOVERY: dict[str, Any] = {
    "version": {"major": "1", "minor": "31", "gitVersion": "v1.31.0-standin"},
    "api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []},
    "apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": []},
    "api/v1": {"kind": "APIResourceList", "groupVersion": "v1", "resources": [
        {"name": "nodes", "singularName": "node", "namespaced": False, "kind": "Node",
         "verbs": ["get", "list", "watch", "patch"], "shortNames": ["no"]},
        {"name": "nodes/status", "singularName": "", "namespaced": False, "kind": "Node",
         "verbs": ["get", "patch"]},
        {"name": "pods", "singularName": "pod", "namespaced": True, "kind": "Pod",
         "verbs": ["get"], "shortNames": ["po"]}]},
}


def _authz_attributes(method: str, parts: list[str],
                      query: dict[str, list[str]]) -> tuple[str, str]:
    """(resource, verb) as the API server's RBAC sees a request: nodes/status is its own
    resource; a GET of a collection is list, or watch with ?watch."""
    if parts[:2] == ["api", "v1"] and len(parts) >= 3:
        rest = parts[2:]
        if rest[0] == "namespaces" and len(rest) >= 3:
            rest = rest[2:]
        resource = "/".join([rest[0]] + rest[2:3])
        named = len(rest) >= 2
    else:
        return "/".join(parts), "get"
    if method == "GET":
        verb = "get" if named else ("watch" if _go_bool(query.get("watch", ["0"])[0])
                                    else "list")
    else:
        verb = {"PATCH": "patch", "POST": "create", "DELETE": "delete"}[method]
    return resource, verb


def _go_bool(text: str) -> bool:
    return text in ("1", "t", "T", "true", "TRUE", "True")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    standin: StandinApiServer

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = self.socket.accept()
        if self.standin.tls is not None:
            conn = self.standin.tls.wrap_socket(conn, server_side=True,
                                                do_handshake_on_connect=False)
            conn.settimeout(10)
            try:
                conn.do_handshake()
            except (ssl.SSLError, OSError):
                conn.close()
                raise
            conn.settimeout(None)
        return conn, addr

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass                              # dropped connections are what tests do on purpose


class _Gone(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        with self.server.standin.cond:
            self.server.standin._conns.add(self.connection)

    def finish(self) -> None:
        with self.server.standin.cond:
            self.server.standin._conns.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    # -- plumbing ------------------------------------------------------------------------------

    @property
    def api(self) -> StandinApiServer:
        return self.server.standin

    def _send_json(self, code: int, doc: Any) -> None:
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _status(self, code: int, reason: str, message: str) -> None:
        self._send_json(code, {"kind": "Status", "apiVersion": "v1", "metadata": {},
                               "status": "Failure", "message": message, "reason": reason,
                               "code": code})

    def _begin(self, method: str) -> tuple[list[str], dict[str, list[str]], bytes] | None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        auth = self.headers.get("Authorization", "")
        with self.api.cond:
            self.api.requests.append(Recorded(method, self.path,
                                              self.headers.get("Content-Type", ""), body, auth))
            for i, (prefix, code) in enumerate(self.api.fail_next):
                if self.path.startswith(prefix):
                    del self.api.fail_next[i]
                    self._status(code, "InternalError" if code >= 500 else "Injected",
                                 f"injected failure {code}")
                    return None
        if self.api.token and auth != f"Bearer {self.api.token}" and not self._client_cert():
            self._status(401, "Unauthorized", "Unauthorized")
            return None
        url = urlsplit(self.path)
        parts, query = [p for p in url.path.split("/") if p], parse_qs(url.query)
        if self.api.rbac is not None:
            resource, verb = _authz_attributes(method, parts, query)
            if (resource, verb) not in self.api.rbac:
                self._status(403, "Forbidden", f'{resource} is forbidden: User "tester" cannot '
                                               f'{verb} resource "{resource}"')
                return None
        return parts, query, body

    def _client_cert(self) -> bool:
        """A client certificate the TLS layer verified against the server's CA."""
        getpeercert = getattr(self.connection, "getpeercert", None)
        return bool(getpeercert and getpeercert())

    # -- routes --------------------------------------------------------------------------------

    def do_GET(self) -> None:
        got = self._begin("GET")
        if got is None:
            return
        parts, query, _ = got
        if parts in (["version"], ["api"], ["apis"], ["api", "v1"]):
            self._send_json(200, DISCOVERY["/".join(parts)])     # what clients look up first
        elif parts[:3] == ["api", "v1", "nodes"] and len(parts) == 3:
            if _go_bool(query.get("watch", ["false"])[0]):
                self._watch(query)
            else:
                self._list(query)
        elif parts[:3] == ["api", "v1", "nodes"] and len(parts) == 4:
            with self.api.cond:
                node = copy.deepcopy(self.api.nodes.get(parts[3]))
            if node is None:
                self._status(404, "NotFound", f'nodes "{parts[3]}" not found')
            else:
                self._send_json(200, node)
        elif (parts[:3] == ["api", "v1", "namespaces"] and len(parts) == 6
              and parts[4] == "pods"):
            with self.api.cond:
                pod = copy.deepcopy(self.api.pods.get((parts[3], parts[5])))
            if pod is None:
                self._status(404, "NotFound", f'pods "{parts[5]}" not found')
            else:
                self._send_json(200, pod)
        else:
            self._status(404, "NotFound", "the server could not find the requested resource")

    def do_POST(self) -> None:
        """Create a Node (what a kubelet does when it registers)."""
        got = self._begin("POST")
        if got is None:
            return
        parts, _, body = got
        if parts != ["api", "v1", "nodes"]:
            self._status(404, "NotFound", "the server could not find the requested resource")
            return
        try:
            node = json.loads(body)
            name = node["metadata"]["name"]
        except (ValueError, KeyError, TypeError) as exc:
            self._status(400, "BadRequest", f"not a Node: {exc}")
            return
        with self.api.cond:
            if name in self.api.nodes:
                self._status(409, "AlreadyExists", f'nodes "{name}" already exists')
                return
            node.setdefault("kind", "Node")
            node.setdefault("apiVersion", "v1")
            node["metadata"].setdefault("uid", str(uuid.uuid4()))
            node.setdefault("spec", {})
            node.setdefault("status", {"conditions": []})
            self.api._commit("ADDED", node)
            result = copy.deepcopy(node)
        self._send_json(201, result)

    def do_DELETE(self) -> None:
        got = self._begin("DELETE")
        if got is None:
            return
        parts, _, _ = got
        if not (parts[:3] == ["api", "v1", "nodes"] and len(parts) == 4):
            self._status(404, "NotFound", "the server could not find the requested resource")
            return
        with self.api.cond:
            node = self.api.nodes.get(parts[3])
            if node is None:
                self._status(404, "NotFound", f'nodes "{parts[3]}" not found')
                return
            self.api._commit("DELETED", copy.deepcopy(node))
        self._send_json(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})

    def do_PATCH(self) -> None:
        got = self._begin("PATCH")
        if got is None:
            return
        parts, _, body = got
        if not (parts[:3] == ["api", "v1", "nodes"] and len(parts) in (4, 5)
                and (len(parts) == 4 or parts[4] == "status")):
            self._status(404, "NotFound", "the server could not find the requested resource")
            return
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip()
        if ctype not in ("application/strategic-merge-patch+json",
                         "application/merge-patch+json"):
            self._status(415, "UnsupportedMediaType",
                         f"the body of the request was in an unknown format: {ctype}")
            return
        try:
            patch = json.loads(body)
            if not isinstance(patch, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            self._status(400, "BadRequest", f"error decoding patch: {exc}")
            return
        name, status = parts[3], len(parts) == 5
        with self.api.cond:
            node = self.api.nodes.get(name)
            if node is None:
                self._status(404, "NotFound", f'nodes "{name}" not found')
                return
            new = merge(copy.deepcopy(node), patch,
                        strategic=ctype.startswith("application/strategic"))
            new["metadata"]["name"] = name
            new["metadata"]["uid"] = node["metadata"]["uid"]
            if status:
                new["spec"] = copy.deepcopy(node.get("spec", {}))       # status keeps spec
            else:
                new["status"] = copy.deepcopy(node.get("status", {}))   # and vice versa
            if new != node:
                self.api._commit("MODIFIED", new)
            result = copy.deepcopy(self.api.nodes[name])
        self._send_json(200, result)

    def _list(self, query: dict[str, list[str]]) -> None:
        """A list, in pages when asked (limit/continue): every page of one list comes from
        the same snapshot and carries its resourceVersion, as the API server's do."""
        api = self.api
        limit = int(query.get("limit", ["0"])[0] or 0)
        token = query.get("continue", [""])[0]
        with api.cond:
            if token:
                if token not in api.snapshots:
                    self._status(410, "Expired", "The provided continue parameter is too old "
                                                 "to display a consistent list result.")
                    return
                rv, items = api.snapshots.pop(token)
            else:
                rv = api.rv
                items = [copy.deepcopy(n) for _, n in sorted(api.nodes.items())]
            meta: dict[str, Any] = {"resourceVersion": str(rv)}
            if limit and len(items) > limit:
                items, rest = items[:limit], items[limit:]
                next_token = uuid.uuid4().hex
                api.snapshots[next_token] = (rv, rest)
                meta["continue"] = next_token
                meta["remainingItemCount"] = len(rest)
        self._send_json(200, {"kind": "NodeList", "apiVersion": "v1", "metadata": meta,
                              "items": items})

    def _watch(self, query: dict[str, list[str]]) -> None:
        api = self.api
        rv_text = query.get("resourceVersion", [""])[0]
        bookmarks = _go_bool(query.get("allowWatchBookmarks", ["false"])[0])
        timeout = float(query.get("timeoutSeconds", ["1800"])[0])
        with api.cond:
            api.watches_served += 1
            epoch = api.gone_epoch
            gone = False
            if rv_text in ("", "0"):
                # no RV: every current object as ADDED, then live events (the API's semantics)
                pending = [("ADDED", copy.deepcopy(n)) for _, n in sorted(api.nodes.items())]
                since = api.rv
            else:
                since = int(rv_text)
                pending = []
                gone = since < api.oldest
                if gone and api.gone_as == "http":
                    self._status(410, "Expired", f"too old resource version: {since} "
                                                 f"({api.oldest})")
                    return
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        deadline = time.monotonic() + timeout
        last_bookmark = time.monotonic()
        try:
            if gone:
                raise _Gone(since)
            for kind, obj in pending:
                self._chunk({"type": kind, "object": obj})
            while time.monotonic() < deadline:
                with api.cond:
                    if api.gone_epoch != epoch:
                        raise _Gone(since)
                    events = [(rv, k, o) for rv, k, o in api.history if rv > since]
                    if not events:
                        api.cond.wait(0.1)
                        if self.connection not in api._conns:
                            return
                        events = [(rv, k, o) for rv, k, o in api.history if rv > since]
                    current = api.rv
                    if api.gone_epoch != epoch:
                        raise _Gone(since)
                for rv, kind, obj in events:
                    self._chunk({"type": kind, "object": obj})
                    since = rv
                if bookmarks and time.monotonic() - last_bookmark >= api.bookmark_interval:
                    self._chunk({"type": "BOOKMARK", "object": {
                        "kind": "Node", "apiVersion": "v1",
                        "metadata": {"resourceVersion": str(max(since, current))}}})
                    since = max(since, current)
                    last_bookmark = time.monotonic()
            self._end_chunks()
        except _Gone as gone_exc:
            self._chunk({"type": "ERROR", "object": {
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": f"too old resource version: {gone_exc.args[0]} ({api.oldest})",
                "reason": "Expired", "code": 410}})
            self._end_chunks()
        except OSError:
            self.close_connection = True

    def _chunk(self, doc: Any) -> None:
        data = json.dumps(doc).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _end_chunks(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def merge(target: Any, patch: Any, *, strategic: bool, path: tuple[str, ...] = ()) -> Any:
    """A JSON merge patch (RFC 7386); with `strategic`, lists with a merge key (here
    status.conditions and status.addresses, keyed by "type", as in the Node's OpenAPI
    patchMergeKey) are merged element by element instead of replaced."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if not isinstance(target, dict):
        target = {}
    for key, value in patch.items():
        if key.startswith("$"):
            continue                                  # directives: none used here
        if value is None:
            target.pop(key, None)
        elif (strategic and path + (key,) in (("status", "conditions"), ("status", "addresses"))
              and isinstance(value, list)):
            by_type = {item.get("type"): item for item in target.get(key) or []
                       if isinstance(item, dict)}
            order = [item.get("type") for item in target.get(key) or [] if isinstance(item, dict)]
            for item in value:
                kind = item.get("type")
                if kind in by_type:
                    by_type[kind] = merge(by_type[kind], item, strategic=True)
                else:
                    by_type[kind] = copy.deepcopy(item)
                    order.append(kind)
            target[key] = [by_type[k] for k in order]
        else:
            target[key] = merge(target.get(key), value, strategic=strategic, path=path + (key,))
    return target
