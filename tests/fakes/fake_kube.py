"""A strict fake of the Kubernetes API server, the parts mesh-agent reads, written from the
API reference (kubernetes.io/docs/reference/using-api/api-concepts/):

  GET /apis/discovery.k8s.io/v1[/namespaces/<ns>]/endpointslices
  GET /api/v1[/namespaces/<ns>]/services
  GET /api/v1[/namespaces/<ns>]/pods

HTTPS only, bearer-token authentication (a wrong or missing token: 401 with a Status
object), optional RBAC per token (403). Lists: `limit` and `continue` pagination (an
expired continue token: 410 Expired), `labelSelector` (key, key=value, key!=value) and
`fieldSelector` (=, ==, != on the fields each kind registers: metadata.name and
metadata.namespace for all, and for Pods spec.nodeName, spec.serviceAccountName,
status.phase, status.podIP and the rest of PodToSelectableFields; any other field, e.g.
spec.nodeName on Services, is a 400 "field label not supported", as the real server answers). Watches
(`watch=1`): chunked transfer encoding, one JSON event per line; `resourceVersion` to start
after; `allowWatchBookmarks` (BOOKMARK events every `bookmark_interval` seconds);
`timeoutSeconds` ends the stream cleanly; a resourceVersion older than the last compaction
gets an ERROR event with a 410 Status, as the real server sends it. Throttling: 429
TooManyRequests (API priority and fairness) or a 5xx, with a `Retry-After` header in
seconds and `details.retryAfterSeconds`, as the real server answers.

History: like the API server's watch cache, the fake keeps `history_seconds` of events
(None: all). A watch that starts from, or falls behind to, a version older than that gets an
ERROR event with a 410 Status and ends, as a watcher too slow for the cache does.

Test hooks: put/delete objects (events for watchers), put_prepared (an object serialized
ahead, for benches that must measure the agent rather than the fake's JSON encoder), compact
(old versions gone), expire_watches (410 to every open watch, or those of one resource),
cut_streams (close mid-object), refuse_next (throttle the next requests), list_delay (a slow
server: each list page waits), stop/start on the same port (a restart), tokens, the request
log, and `delivered` (per resource, the last version written to a watcher: how far the
fake keeps up).
"""
import base64
import bisect
import collections
import json
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KINDS = {
    "endpointslices": ("/apis/discovery.k8s.io/v1", "EndpointSlice", "discovery.k8s.io/v1"),
    "services": ("/api/v1", "Service", "v1"),
    "pods": ("/api/v1", "Pod", "v1"),
}


def status(code, reason, message):
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


class HTTPError(Exception):
    def __init__(self, code, reason, message):
        super().__init__(message)
        self.code, self.body = code, status(code, reason, message)


def get_path(obj, dotted):
    for part in dotted.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def label_match(obj, selector):
    labels = obj.get("metadata", {}).get("labels") or {}
    for term in filter(None, selector.split(",")):
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k) == v:
                return False
        elif "=" in term:
            k, v = term.split("=", 1)
            if labels.get(k.rstrip("=")) != v:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


# The fields each kind can be selected by, as the API server registers them: every kind has
# metadata.name and metadata.namespace (the generic registry's DefaultClusterScopedAttr /
# DefaultNamespaceScopedAttr); Pods add those of PodToSelectableFields
# (pkg/registry/core/pod/strategy.go). Any other field is refused with 400 "field label not
# supported: <field>", as the server's conversion funcs answer.
SELECTABLE = {
    "endpointslices": {"metadata.name", "metadata.namespace"},
    "services": {"metadata.name", "metadata.namespace"},
    "pods": {"metadata.name", "metadata.namespace", "spec.nodeName", "spec.restartPolicy",
             "spec.schedulerName", "spec.serviceAccountName", "spec.hostNetwork",
             "status.phase", "status.podIP", "status.nominatedNodeName"},
}


def parse_field_selector(plural, selector):
    """fields.ParseSelector: comma-separated terms key=value, key==value or key!=value;
    returns [(key, equal, value)], or raises the 400 the server answers."""
    terms = []
    for term in filter(None, selector.split(",")):
        for op, equal in (("!=", False), ("==", True), ("=", True)):
            if op in term:
                k, v = term.split(op, 1)
                break
        else:
            raise HTTPError(400, "BadRequest",
                            f"invalid selector: '{selector}'; can't understand '{term}'")
        if k not in SELECTABLE[plural]:
            raise HTTPError(400, "BadRequest", f"field label not supported: {k}")
        terms.append((k, equal, v))
    return terms


def field_match(obj, terms):
    for k, equal, v in terms:
        got = get_path(obj, k)
        got = ("true" if got else "false") if isinstance(got, bool) else (got or "")
        if (got == v) != equal:
            return False
    return True


class FakeKube:
    def __init__(self, cert, key, tokens=("good-token",), port=0, bookmark_interval=1.0,
                 history_seconds=None):
        self.cert, self.key = cert, key
        self.tokens = set(tokens)
        self.forbidden = {}  # token -> set of plurals it may not read
        self.port = port
        self.bookmark_interval = bookmark_interval
        self.cond = threading.Condition()
        self.rv = 1000
        self.compacted = 0
        self.objects = {k: {} for k in KINDS}  # plural -> "ns/name" -> object
        self.log = []  # (rv, plural, type, object)
        self.requests = []  # (time, path, query, authorized)
        self.log_times = collections.deque()  # (time, rv), for history_seconds
        self.trimmed = 0  # versions up to this one fell out of the history window
        self.watch_generation = 0  # bumped to end every watch (expire/cut)
        self.cut_mode = None
        self.cut_plural = None  # the resource whose watches a cut ends (None: all)
        self.open_watches = 0
        self.history_seconds = history_seconds
        self.list_delay = 0.0  # seconds before each list page is answered (a slow server)
        self.refusals = []  # (code, retry_after): the next requests' answers (throttling)
        self.delivered = {k: 0 for k in KINDS}  # plural -> last version written to a watcher
        self.server = None

    # -- lifecycle --

    def start(self):
        fake = self

        class Handler(_Handler):
            kube = fake

        self.server = _Server(("127.0.0.1", self.port), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self):
        """Stops listening and ends every watch at once (a crashed or restarting server)."""
        if self.server:
            with self.cond:
                self.cut_mode = "close"
                self.cut_plural = None
                self.watch_generation += 1
                self.cond.notify_all()
            self.server.shutdown()
            self.server.server_close()
            self.server = None
            time.sleep(0.1)
            with self.cond:
                self.cut_mode = None

    @property
    def url(self):
        return f"https://127.0.0.1:{self.port}"

    # -- state (tests) --

    def _write(self, plural, typ, obj):
        self.rv += 1
        obj = json.loads(json.dumps(obj))
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.rv)
        key = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
        if typ == "DELETED":
            self.objects[plural].pop(key, None)
        else:
            self.objects[plural][key] = obj
        # Serialized once, when written: watchers only copy bytes.
        line = json.dumps({"type": typ, "object": obj}).encode() + b"\n"
        self.log.append((self.rv, plural, typ, obj, line))
        self._trim()
        self.cond.notify_all()

    def _trim(self):
        """Drops the history older than history_seconds (the watch cache's window)."""
        if self.history_seconds is None:
            return
        now = time.monotonic()
        self.log_times.append((now, self.rv))
        cut = 0
        while self.log_times and self.log_times[0][0] < now - self.history_seconds:
            cut = self.log_times.popleft()[1]
        if cut:
            self.trimmed = max(self.trimmed, cut)
            first = bisect.bisect_right(self.log, cut, key=lambda e: e[0])
            if first:
                del self.log[:first]

    def prepare(self, plural, obj):
        """An object serialized ahead for put_prepared; its resourceVersion is set when put."""
        obj = json.loads(json.dumps(obj))
        obj.setdefault("metadata", {})["resourceVersion"] = "@RV@"
        m = obj["metadata"]
        return (plural, f"{m['namespace']}/{m['name']}", obj,
                json.dumps({"type": "MODIFIED", "object": obj}).encode() + b"\n")

    def put_prepared(self, prepared):
        """Puts objects made by prepare() (as MODIFIED or ADDED events) without encoding them
        again: what this costs is independent of the object's size."""
        with self.cond:
            for plural, key, obj, line in prepared:
                self.rv += 1
                rv = str(self.rv)
                o = dict(obj)
                o["metadata"] = dict(obj["metadata"], resourceVersion=rv)
                typ = "MODIFIED" if key in self.objects[plural] else "ADDED"
                self.objects[plural][key] = o
                data = line.replace(b'"@RV@"', b'"%s"' % rv.encode())
                if typ == "ADDED":
                    data = data.replace(b'"MODIFIED"', b'"ADDED"', 1)
                self.log.append((self.rv, plural, typ, o, data))
            self._trim()
            self.cond.notify_all()

    def put(self, plural, obj):
        with self.cond:
            m = obj["metadata"]
            typ = "MODIFIED" if f"{m['namespace']}/{m['name']}" in self.objects[plural] else "ADDED"
            self._write(plural, typ, obj)

    def delete(self, plural, ns, name):
        with self.cond:
            obj = self.objects[plural].get(f"{ns}/{name}")
            if obj:
                self._write(plural, "DELETED", obj)

    def put_many(self, plural, objs):
        with self.cond:
            for obj in objs:
                m = obj["metadata"]
                key = f"{m['namespace']}/{m['name']}"
                self._write(plural, "MODIFIED" if key in self.objects[plural] else "ADDED", obj)

    def compact(self):
        """Versions up to now are compacted away: watching or continuing from them is 410."""
        with self.cond:
            self.compacted = self.rv
            self.log = []

    def expire_watches(self, plural=None):
        """Every open watch (of `plural` only, when given) gets an ERROR 410 (its version was
        compacted) and ends."""
        with self.cond:
            self.compact()
            self.cut_mode = "expire"
            self.cut_plural = plural
            self.watch_generation += 1
            self.cond.notify_all()

    def cut_streams(self):
        """Every open watch is closed in the middle of an object."""
        with self.cond:
            self.cut_mode = "cut"
            self.cut_plural = None
            self.watch_generation += 1
            self.cond.notify_all()

    def refuse_next(self, n, code=429, retry_after=1):
        """The next n requests get `code` (429 TooManyRequests as API priority and fairness
        sends it, or a 5xx) with a Retry-After header of `retry_after` seconds (None: none)."""
        with self.cond:
            self.refusals.extend([(code, retry_after)] * n)

    def requests_since(self, t0, contains=""):
        with self.cond:
            return [r for r in self.requests if r[0] >= t0 and contains in r[1]]

    # -- the API --

    def auth(self, headers, plural):
        h = headers.get("Authorization", "")
        token = h[7:] if h.startswith("Bearer ") else None
        if token not in self.tokens:
            raise HTTPError(401, "Unauthorized", "Unauthorized")
        if plural in self.forbidden.get(token, ()):
            group = "discovery.k8s.io" if plural == "endpointslices" else ""
            raise HTTPError(403, "Forbidden",
                            f'{plural}{"." + group if group else ""} is forbidden: User '
                            f'"system:serviceaccount:mesh-system:mesh-agent" cannot list '
                            f'resource "{plural}" in API group "{group}" at the cluster scope')

    def selected(self, plural, ns, q):
        out = []
        for key in sorted(self.objects[plural]):
            obj = self.objects[plural][key]
            if ns and obj["metadata"]["namespace"] != ns:
                continue
            if "labelSelector" in q and not label_match(obj, q["labelSelector"]):
                continue
            if "fieldSelector" in q and not field_match(
                    obj, parse_field_selector(plural, q["fieldSelector"])):
                continue
            out.append(obj)
        return out

    def list(self, plural, ns, q):
        limit = q.get("limit")
        try:
            limit = int(limit) if limit else 0
        except ValueError:
            raise HTTPError(400, "BadRequest", f"invalid limit: {limit!r}")
        if limit < 0:
            raise HTTPError(400, "BadRequest", "limit must be non-negative")
        after = ""
        with self.cond:
            if q.get("continue"):
                try:
                    c = json.loads(base64.urlsafe_b64decode(q["continue"]))
                    list_rv, after = int(c["rv"]), c["start"]
                except (ValueError, KeyError, TypeError):
                    raise HTTPError(400, "BadRequest", "continue key is not valid")
                if list_rv <= self.compacted:
                    raise HTTPError(410, "Expired",
                                    "The provided continue parameter is too old to display a "
                                    "consistent list result. You can start a new list without "
                                    "the continue parameter.")
            else:
                list_rv = self.rv
            items = [o for o in self.selected(plural, ns, q)
                     if f"{o['metadata']['namespace']}/{o['metadata']['name']}" > after]
            meta = {"resourceVersion": str(self.rv)}
            if limit and len(items) > limit:
                items = items[:limit]
                last = items[-1]["metadata"]
                meta["continue"] = base64.urlsafe_b64encode(json.dumps(
                    {"rv": list_rv, "start": f"{last['namespace']}/{last['name']}"}).encode()
                ).decode()
                meta["remainingItemCount"] = 1
        prefix, kind, api = KINDS[plural]
        return {"kind": kind + "List", "apiVersion": api, "metadata": meta, "items": items}


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    kube = None

    def log_message(self, *args):
        pass

    def _json(self, code, body, retry_after=None):
        data = json.dumps(body).encode()
        self.send_response(code)
        if retry_after is not None:
            self.send_header("Retry-After", str(retry_after))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _route(self, path):
        for plural, (prefix, _, _) in KINDS.items():
            if path == f"{prefix}/{plural}":
                return plural, None
            if path.startswith(f"{prefix}/namespaces/") and path.endswith(f"/{plural}"):
                ns = path[len(f"{prefix}/namespaces/"):-len(plural) - 1]
                if ns and "/" not in ns:
                    return plural, ns
        raise HTTPError(404, "NotFound", "the server could not find the requested resource")

    def do_GET(self):
        url = urllib.parse.urlsplit(self.path)
        q = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
        k = self.kube
        try:
            plural, ns = self._route(url.path)
            authorized = False
            try:
                k.auth(self.headers, plural)
                authorized = True
            finally:
                with k.cond:
                    k.requests.append((time.monotonic(), url.path + "?" + url.query, q,
                                       authorized))
            with k.cond:
                refusal = k.refusals.pop(0) if k.refusals else None
            if refusal:
                code, after = refusal
                reason = {429: "TooManyRequests", 503: "ServiceUnavailable"}.get(
                    code, "InternalError")
                msg = ("Too many requests, please try again later." if code == 429
                       else "the server is currently unable to handle the request")
                return self._json(code, dict(status(code, reason, msg),
                                             details={"retryAfterSeconds": after or 0}),
                                  retry_after=after)
            if "fieldSelector" in q:  # refused up front, list or watch alike
                parse_field_selector(plural, q["fieldSelector"])
            if q.get("watch") in ("1", "true"):
                return self._watch(plural, ns, q)
            if k.list_delay:
                time.sleep(k.list_delay)
            if "watch" in q and q["watch"] not in ("0", "false", ""):
                raise HTTPError(400, "BadRequest", f"invalid watch: {q['watch']!r}")
            return self._json(200, k.list(plural, ns, q))
        except HTTPError as e:
            try:
                self._json(e.code, e.body)
            except OSError:
                pass
        except OSError:
            self.close_connection = True

    def _client_gone(self):
        """True once the client closed its end (a watcher then stops at once instead of
        filtering events for nobody until its timeout). A watch client sends nothing after
        its request, so anything readable is its close (EOF or TLS close_notify)."""
        import select
        try:
            return bool(select.select([self.connection], [], [], 0)[0])
        except (OSError, ValueError):
            return True

    def _chunk(self, data):
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _watch(self, plural, ns, q):
        k = self.kube
        try:
            timeout = float(q.get("timeoutSeconds") or 1800)
        except ValueError:
            raise HTTPError(400, "BadRequest", "invalid timeoutSeconds")
        bookmarks = q.get("allowWatchBookmarks") in ("1", "true")
        try:
            since = int(q.get("resourceVersion") or 0)
        except ValueError:
            raise HTTPError(400, "BadRequest", "invalid resourceVersion")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.close_connection = True
        deadline = time.monotonic() + timeout
        next_bookmark = time.monotonic() + k.bookmark_interval
        with k.cond:
            gen = k.watch_generation
            k.open_watches += 1
            if since and since < max(k.compacted, k.trimmed):
                expired = True
            else:
                expired = False
                if not since:  # no version: the current state first, as ADDED events
                    pending = [(k.rv, "ADDED", o, None) for o in k.selected(plural, ns, q)]
                else:
                    pending = []
                cursor = since or k.rv
        try:
            if expired:
                self._chunk(json.dumps({"type": "ERROR", "object": status(
                    410, "Expired", f"too old resource version: {since} ({k.compacted})")}
                ).encode() + b"\n")
                return self._chunk(b"")
            while True:
                lines = [line or json.dumps({"type": t, "object": o}).encode() + b"\n"
                         for _, t, o, line in pending]
                if lines:
                    self.wfile.write(b"".join(b"%x\r\n%s\r\n" % (len(x), x) for x in lines))
                    self.wfile.flush()
                    with k.cond:
                        k.delivered[plural] = max(k.delivered[plural], pending[-1][0])
                with k.cond:
                    while True:
                        now = time.monotonic()
                        if self._client_gone():
                            return
                        if gen != k.watch_generation:
                            if k.cut_plural and k.cut_plural != plural:
                                gen = k.watch_generation  # meant for other watches
                                continue
                            mode = k.cut_mode
                            break
                        if cursor < k.trimmed:
                            mode = "expire"  # fell behind the history window
                            break
                        first = bisect.bisect_right(k.log, cursor, key=lambda e: e[0])
                        news = [e for e in k.log[first:] if e[1] == plural and
                                (not ns or e[3]["metadata"]["namespace"] == ns) and
                                ("labelSelector" not in q or label_match(e[3], q["labelSelector"]))
                                and ("fieldSelector" not in q or field_match(
                                    e[3], parse_field_selector(plural, q["fieldSelector"])))]
                        if k.log and k.log[-1][0] > cursor:
                            cursor = k.log[-1][0]
                        if news:
                            mode = None
                            break
                        if now >= deadline:
                            mode = "timeout"
                            break
                        if bookmarks and now >= next_bookmark:
                            mode = "bookmark"
                            break
                        k.cond.wait(min(deadline, next_bookmark if bookmarks else deadline) - now)
                    rv = cursor
                if mode is None:
                    pending = [(r, t, o, line) for r, _, t, o, line in news]
                    continue
                if mode == "bookmark":
                    next_bookmark = time.monotonic() + k.bookmark_interval
                    pending = [(rv, "BOOKMARK", {"kind": KINDS[plural][1],
                                                 "apiVersion": KINDS[plural][2],
                                                 "metadata": {"resourceVersion": str(rv)}}, None)]
                    continue
                if mode == "expire":
                    self._chunk(json.dumps({"type": "ERROR", "object": status(
                        410, "Expired", "too old resource version")}).encode() + b"\n")
                    return self._chunk(b"")
                if mode == "cut":  # half an event, then the connection goes
                    self._chunk(b'{"type":"MODIFIED","object":{"metadata":{"na')
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if mode == "close":
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                return self._chunk(b"")  # timeoutSeconds: the stream ends cleanly
        except OSError:
            pass
        finally:
            with k.cond:
                k.open_watches -= 1


def slice_obj(ns, name, service, endpoints, ports=(("http", 8080, "http"),)):
    """An EndpointSlice; endpoints are (ip, node, zone, conditions dict or None, pod)."""
    return {
        "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
        "metadata": {"name": name, "namespace": ns,
                     "labels": {"kubernetes.io/service-name": service,
                                "endpointslice.kubernetes.io/managed-by":
                                    "endpointslice-controller.k8s.io"}},
        "addressType": "IPv4",
        "endpoints": [dict({"addresses": [ip], "conditions": cond or
                            {"ready": True, "serving": True, "terminating": False},
                            "nodeName": node, "zone": zone},
                           **({"targetRef": {"kind": "Pod", "namespace": ns, "name": pod}}
                              if pod else {}))
                      for ip, node, zone, cond, pod in endpoints],
        "ports": [{"name": n, "port": p, "protocol": "TCP", **({"appProtocol": a} if a else {})}
                  for n, p, a in ports],
    }


def service_obj(ns, name, ports=(("http", 80, 8080),), annotations=None, cluster_ip=None):
    """cluster_ip: the Service's ClusterIP ("None": headless), set in spec.clusterIP and
    spec.clusterIPs as the API server does; None leaves both out."""
    spec = {"ports": [{"name": n, "port": p, "targetPort": t, "protocol": "TCP"}
                      for n, p, t in ports]}
    if cluster_ip is not None:
        spec.update({"type": "ClusterIP", "clusterIP": cluster_ip, "clusterIPs": [cluster_ip]})
    return {"kind": "Service", "apiVersion": "v1",
            "metadata": {"name": name, "namespace": ns, "annotations": annotations or {}},
            "spec": spec}


def pod_obj(ns, name, node, sa="default", ip="10.0.0.1", phase="Running", host_network=False,
            host_ip=None, deleting=False):
    """A Pod. host_network: spec.hostNetwork (its podIP is then the node's, status.hostIP);
    host_ip: status.hostIP and status.hostIPs; deleting: metadata.deletionTimestamp set, as
    the API server sets it when a graceful delete begins."""
    meta = {"name": name, "namespace": ns}
    if deleting:
        meta.update({"deletionTimestamp": "2024-01-01T00:00:00Z",
                     "deletionGracePeriodSeconds": 30})
    spec = {"nodeName": node, "serviceAccountName": sa}
    if host_network:
        spec["hostNetwork"] = True
    status = {"phase": phase, "podIP": ip, "podIPs": [{"ip": ip}]}
    if host_ip:
        status.update({"hostIP": host_ip, "hostIPs": [{"ip": host_ip}]})
    return {"kind": "Pod", "apiVersion": "v1", "metadata": meta, "spec": spec,
            "status": status}
