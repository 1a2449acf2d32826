"""A strict fake of Consul's HTTP API, the parts mesh-agent uses, written from Consul's API
reference (developer.hashicorp.com/consul/api-docs):

  GET  /v1/catalog/services              blocking; {name: [tags]}
  GET  /v1/health/service/<name>         blocking; ?passing ?tag; [{Node, Service, Checks}]
  GET  /v1/agent/services                {id: AgentService}
  GET  /v1/agent/service/<id>            AgentService, or 404
  PUT  /v1/agent/service/register        ?replace-existing-checks; body AgentServiceRegistration
  PUT  /v1/agent/service/deregister/<id> 404 when unknown
  PUT  /v1/agent/check/update/<id>       {"Status", "Output"}; TTL checks only

Blocking queries ("Blocking Queries" page, and agent/consul/rpc.go blockingQuery): X-Consul-Index
on every answer; with ?index=N the request waits until the index passes N or `wait` (default 5m,
at most 10m, plus up to wait/16 of random jitter) runs out; a query that times out answers with
the index it had, not advanced. A snapshot restore ends every waiting query at once with the
result it had before it waited (the old index); the next query with that index then waits its
full `wait` before its answer shows the lower index. Each service has its own index (writes to
its instances and their checks move it); the catalog's index moves only when an instance is
registered or deregistered (a check changing leaves /v1/catalog/services asleep), as in
Consul's state store.
ACLs as Consul behaves with default_policy "deny": a token Consul does not know gets 403
"ACL not found" everywhere; no token (anonymous) gets 403 "Permission denied" on writes and
an empty 200 answer with X-Consul-Results-Filtered-By-Acls: true on reads. The token is
read from X-Consul-Token (header names compared case-insensitively) or "Authorization:
Bearer"; a ?token= in the query string works as in Consul but is recorded, so tests can
assert that the agent never sends one.

Listeners: TCP on 127.0.0.1 (HTTP, or HTTPS with `tls` as Consul's https port, with any
certificate the test gives, e.g. one for a DNS name only), or a Unix socket (`unix_path`, as
Consul's `addresses { http = "unix:///..." }`). `add_agent(node)` starts another client agent
on its own node that shares the catalog, as every host runs its own Consul agent: the
/v1/agent/ endpoints act on the node of the listener they came in on.

Service Meta is validated as Consul's structs.ValidateServiceMetadata does (agent/structs/
structs.go): at most 64 pairs; keys 1 to 128 of [A-Za-z0-9_-], not starting with the
reserved "consul-"; values at most 512 characters; a refused registration is a 400 "Invalid
Service Meta: ...". Meta comes back as registered in /v1/health/service (Service.Meta) and
/v1/agent/services.

Namespaces and admin partitions are Consul Enterprise features: without `enterprise=True`
a request carrying ?ns= or ?partition= is refused with 400, as Consul's open-source
parseEntMeta does. With it, registrations land in the ?ns= namespace ("default" without one),
answers carry "Namespace", and reads see only the namespace they ask for.

Test hooks: add_instance, set_check, remove_instance, lose_agent_state (a Consul agent
restarted without its data dir), rewind_index (a snapshot restore: indexes go backwards),
index_header (what X-Consul-Index carries: MISSING, or a string sent as its value; never
provoked unless a test sets it, as Consul always sends the index), plus the request log, the
TLS server names (SNI) clients asked for, and connection counts.
"""
import json
import os
import random
import re
import socketserver
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_WAIT = 600.0
META_KEY = re.compile(r"^[a-zA-Z0-9_-]+$")
META_MAX_PAIRS, META_KEY_MAX, META_VALUE_MAX = 64, 128, 512
DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)$")
UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
MISSING = object()  # index_header: answer without X-Consul-Index


def parse_duration(s):
    """Go's time.ParseDuration for the single-unit forms Consul users write ("10s", "5m")."""
    total, rest = 0.0, s
    if not rest:
        raise ValueError("empty duration")
    while rest:
        m = re.match(r"^(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", rest)
        if not m:
            raise ValueError(f"time: invalid duration {s!r}")
        total += float(m.group(1)) * UNITS[m.group(2)]
        rest = rest[m.end():]
    return total


class HTTPError(Exception):
    def __init__(self, status, text):
        super().__init__(text)
        self.status, self.text = status, text


class FakeConsul:
    def __init__(self, node="fake-node", node_address="127.0.0.1", datacenter="dc1",
                 acl_tokens=None, port=0, tls=None, unix_path=None, enterprise=False):
        self.node, self.node_address, self.datacenter = node, node_address, datacenter
        # secret -> set of rights ("read", "write"); None: ACLs off.
        self.acl_tokens = acl_tokens
        self.cond = threading.Condition()
        self.index = 100
        self.abandoned = 0
        self.catalog_index = 100
        self.service_index = {}
        self.nodes = {node: {"Node": node, "Address": node_address, "Datacenter": datacenter,
                             "Meta": {}}}
        self.instances = {}  # (node, id) -> service dict (catalog)
        self.checks = {}     # (node, check id) -> check dict
        self.by_service = {}  # name -> {(node, id)}: the indexes Consul's state store keeps
        self.by_instance = {}  # (node, id) -> {(node, check id)}
        self.enterprise = enterprise
        self.agents = {node: {}}  # node -> {id: registration}: each node's client agent
        self.agent_services = self.agents[node]  # this fake's own (first) agent
        self.ttl_deadline = {}    # (node, check id) -> monotonic deadline
        self.requests = []        # (time, method, path, query dict, token given)
        self.token_in_query = 0
        self.open_conns = 0
        self.max_open_conns = 0
        self.total_conns = 0
        self.port = port
        self.tls = tls  # None, or (cert, key, client CA or None): HTTPS, as Consul's https port
        self.unix_path = unix_path  # listen on this Unix socket instead of TCP
        self.index_header = None  # None: the real index; MISSING; or a string sent instead
        self.server_names = []  # SNI names TLS clients sent (None: none sent)
        self.server = None
        self.more_servers = []  # (node, server) of the agents add_agent started
        self._stop = threading.Event()

    # -- lifecycle --

    def _handler(self, node):
        fake = self

        class Handler(_Handler):
            consul = fake
            agent_node = node

        return Handler

    def start(self):
        Handler = self._handler(self.node)

        if self.unix_path:
            if os.path.exists(self.unix_path):
                os.unlink(self.unix_path)
            self.server = _UnixServer(self.unix_path, Handler)
        else:
            self.server = _Server(("127.0.0.1", self.port), Handler)
        if self.tls:
            import ssl
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(self.tls[0], self.tls[1])
            if self.tls[2]:  # verify_incoming: a client certificate is required
                ctx.load_verify_locations(self.tls[2])
                ctx.verify_mode = ssl.CERT_REQUIRED

            def on_sni(sock, name, context):
                with self.cond:
                    self.server_names.append(name)

            ctx.sni_callback = on_sni
            self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        if not self.unix_path:
            self.port = self.server.server_address[1]
        self._stop.clear()
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        threading.Thread(target=self._ttl_loop, daemon=True).start()
        return self

    def add_agent(self, node, node_address="127.0.0.1"):
        """Another Consul client agent, on its own node, sharing this catalog (plain HTTP on
        127.0.0.1). Returns its address for a mesh-agent's `address`."""
        with self.cond:
            self.nodes[node] = {"Node": node, "Address": node_address,
                                "Datacenter": self.datacenter, "Meta": {}}
            self.agents.setdefault(node, {})
        server = _Server(("127.0.0.1", 0), self._handler(node))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.more_servers.append((node, server))
        return f"127.0.0.1:{server.server_address[1]}"

    def stop(self):
        self._stop.set()
        for _, server in self.more_servers:
            server.shutdown()
            server.server_close()
        self.more_servers = []
        if self.server:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
            if self.unix_path and os.path.exists(self.unix_path):
                os.unlink(self.unix_path)
        with self.cond:
            self.cond.notify_all()

    @property
    def address(self):
        return f"unix://{self.unix_path}" if self.unix_path else f"127.0.0.1:{self.port}"

    @property
    def url(self):
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    # -- state changes (tests) --

    def _bump(self, service, catalog=True):
        """A write: the raft index moves; watchers of `service` wake, and with `catalog` (an
        instance registered or deregistered, not a check changing) those of the catalog."""
        self.index += 1
        self.service_index[service] = self.index
        if catalog:
            self.catalog_index = self.index
        self.cond.notify_all()

    def _put_instance(self, node, svc):
        key = (node, svc["ID"])
        self.instances[key] = svc
        self.by_service.setdefault(svc["Service"], set()).add(key)
        self.by_instance.setdefault(key, set())

    def _put_check(self, node, check):
        key = (node, check["CheckID"])
        self.checks[key] = check
        self.by_instance.setdefault((node, check["ServiceID"]), set()).add(key)

    def _drop_instance(self, node, sid):
        svc = self.instances.pop((node, sid), None)
        for key in self.by_instance.pop((node, sid), set()):
            self.checks.pop(key, None)
            self.ttl_deadline.pop(key, None)
        if svc:
            self.by_service.get(svc["Service"], set()).discard((node, sid))
        return svc

    def add_instance(self, name, address, port, node=None, node_address=None, id=None,
                     tags=(), meta=None, status="passing", weights=None):
        node = node or self.node
        with self.cond:
            if node not in self.nodes:
                self.nodes[node] = {"Node": node, "Address": node_address or address,
                                    "Datacenter": self.datacenter, "Meta": {}}
            sid = id or f"{name}-{address}-{port}"
            self._put_instance(node, {
                "ID": sid, "Service": name, "Tags": list(tags), "Address": address,
                "Port": port, "Meta": dict(meta or {}),
                "Weights": weights or {"Passing": 1, "Warning": 1}})
            self._put_check(node, {
                "Node": node, "CheckID": f"service:{sid}", "Name": f"Service '{name}' check",
                "Status": status, "ServiceID": sid, "ServiceName": name, "Output": ""})
            self._bump(name)
        return sid

    def add_many(self, services, instances, start_port=20000):
        """services x instances, in one write (a big catalog, quickly)."""
        with self.cond:
            for s in range(services):
                name = f"svc-{s:05d}"
                for i in range(instances):
                    node = f"node-{i}"
                    addr = f"10.{(s >> 8) & 255}.{s & 255}.{i + 1}"
                    self.nodes.setdefault(node, {"Node": node, "Address": addr,
                                                 "Datacenter": self.datacenter, "Meta": {}})
                    sid = f"{name}-{i}"
                    self._put_instance(node, {
                        "ID": sid, "Service": name, "Tags": [], "Address": addr,
                        "Port": start_port, "Meta": {}, "Weights": {"Passing": 1, "Warning": 1}})
                    self._put_check(node, {
                        "Node": node, "CheckID": f"service:{sid}", "Name": "check",
                        "Status": "passing", "ServiceID": sid, "ServiceName": name,
                        "Output": ""})
                self.index += 1
                self.service_index[name] = self.index
            self.catalog_index = self.index
            self.cond.notify_all()

    def set_check(self, sid, status, node=None):
        node = node or self.node
        with self.cond:
            for key in self.by_instance.get((node, sid), ()):
                c = self.checks[key]
                c["Status"] = status
                self._bump(c["ServiceName"], catalog=False)
                return
        raise KeyError(sid)

    def remove_instance(self, sid, node=None):
        node = node or self.node
        with self.cond:
            svc = self._drop_instance(node, sid)
            self._bump(svc["Service"])

    def lose_agent_state(self, node=None):
        """The local Consul agent restarted without its data: what it registered is gone."""
        node = node or self.node
        with self.cond:
            for sid in list(self.agents[node]):
                self._deregister(sid, node)

    def rewind_index(self, to):
        """A snapshot restore: every index goes back to `to` (and moves on from there). As in
        Consul, the restore abandons the state store, which ends every blocking query."""
        with self.cond:
            self.abandoned += 1
            self.index = to
            self.catalog_index = to
            for k in self.service_index:
                self.service_index[k] = to
            self.cond.notify_all()

    def check_status(self, check_id, node=None):
        with self.cond:
            c = self.checks.get((node or self.node, check_id))
            return c and c["Status"]

    def requests_since(self, t0, path_prefix=""):
        with self.cond:
            return [r for r in self.requests if r[0] >= t0 and r[2].startswith(path_prefix)]

    # -- the API --

    def _ttl_loop(self):
        while not self._stop.wait(0.1):
            now = time.monotonic()
            with self.cond:
                for key, deadline in list(self.ttl_deadline.items()):
                    c = self.checks.get(key)
                    if c and now > deadline and c["Status"] != "critical":
                        c["Status"] = "critical"
                        c["Output"] = "TTL expired"
                        self._bump(c["ServiceName"], catalog=False)

    def _auth(self, token, write, what):
        """None when allowed; 'filtered' when a read must come back empty; raises 403."""
        if self.acl_tokens is None:
            return None
        if token is None or token == "":
            if write:
                raise HTTPError(403, "Permission denied: token with AccessorID "
                                "'00000000-0000-0000-0000-000000000002' lacks permission "
                                f"'service:write' on \"{what}\"")
            return "filtered"
        rights = self.acl_tokens.get(token)
        if rights is None:
            raise HTTPError(403, "ACL not found")
        if write and "write" not in rights:
            raise HTTPError(403, "Permission denied: token with AccessorID "
                            "'5a3c0e4f-0000-0000-0000-000000000001' lacks permission "
                            f"'service:write' on \"{what}\"")
        if not write and "read" not in rights and "write" not in rights:
            return "filtered"
        return None

    def _block(self, q, index_of, result_of):
        """Runs a query as Consul's blockingQuery does; returns (index, result). Without
        ?index, or when the index already passed it, at once. Otherwise it waits for a write
        that moves the index past it, or for `wait` plus up to wait/16 of jitter (then the
        answer carries the index it had), or for a snapshot restore (then the answer is the
        one from before the wait)."""
        wait = 300.0
        if "wait" in q:
            try:
                wait = parse_duration(q["wait"])
            except ValueError:
                raise HTTPError(400, "Invalid wait time")
            wait = min(wait, MAX_WAIT)
        want = 0
        if "index" in q:
            try:
                want = int(q["index"])
            except ValueError:
                raise HTTPError(400, "Invalid index")
            if want < 0:
                raise HTTPError(400, "Invalid index")
        deadline = time.monotonic() + wait + random.uniform(0, wait / 16)
        with self.cond:
            gen = self.abandoned
            while True:
                # "we return an index > 0 otherwise the client will never block"
                idx, out = max(index_of(), 1), result_of()
                left = deadline - time.monotonic()
                if want == 0 or idx > want or left <= 0 or self._stop.is_set():
                    return idx, out
                self.cond.wait(left)
                if gen != self.abandoned:
                    return idx, out

    def _namespace(self, q):
        """The namespace a request names, as Consul's parseEntMeta reads ?ns= and ?partition=:
        refused by open-source Consul, "default" when an Enterprise request names none."""
        for key, what in (("ns", "Namespaces"), ("partition", "Partitions")):
            if q.get(key) and not self.enterprise:
                raise HTTPError(400, f"Invalid query parameter: \"{key}\" - {what} are a "
                                "Consul Enterprise feature")
        return q.get("ns") or "default"

    def _in_ns(self, svc, ns):
        return not self.enterprise or svc.get("Namespace", "default") == ns

    def catalog_services(self, q, token):
        self._auth(token, False, "")
        ns = self._namespace(q)

        def result():
            out = {}
            for svc in self.instances.values():
                if not self._in_ns(svc, ns):
                    continue
                tags = out.setdefault(svc["Service"], [])
                for t in svc["Tags"]:
                    if t not in tags:
                        tags.append(t)
            return out

        idx, out = self._block(q, lambda: self.catalog_index, result)
        filt = self._auth(token, False, "")  # results are filtered as they are sent
        if filt:
            return 200, {}, idx, True
        return 200, out, idx, False

    def health_service(self, name, q, token):
        self._auth(token, False, name)
        passing = "passing" in q and q["passing"] not in ("0", "false")
        tag = q.get("tag")
        ns = self._namespace(q)

        def result():
            out = []
            for node, sid in sorted(self.by_service.get(name, ())):
                svc = self.instances[(node, sid)]
                if (tag and tag not in svc["Tags"]) or not self._in_ns(svc, ns):
                    continue
                keys = sorted(self.by_instance.get((node, sid), set()) |
                              self.by_instance.get((node, ""), set()))  # node checks too
                checks = [dict(self.checks[k]) for k in keys]
                if passing and any(c["Status"] != "passing" for c in checks):
                    continue
                n = self.nodes[node]
                out.append({"Node": {"ID": "", "Node": node, "Address": n["Address"],
                                     "Datacenter": self.datacenter, "Meta": n["Meta"],
                                     "TaggedAddresses": {}},
                            "Service": dict(svc, TaggedAddresses={}, EnableTagOverride=False),
                            "Checks": checks})
            return out

        idx, out = self._block(q, lambda: self.service_index.get(name, self.catalog_index),
                               result)
        filt = self._auth(token, False, name)
        if filt:
            return 200, [], idx, True
        return 200, out, idx, False

    def _deregister(self, sid, node):
        self.agents[node].pop(sid, None)
        svc = self._drop_instance(node, sid)
        if svc:
            self._bump(svc["Service"])

    @staticmethod
    def validate_service_meta(meta):
        """Consul's structs.ValidateServiceMetadata for a typical service (allowConsulPrefix
        false): None when valid, else the reason Consul gives."""
        if len(meta) > META_MAX_PAIRS:
            return f"Node metadata cannot contain more than {META_MAX_PAIRS} key/value pairs"
        for k, v in meta.items():
            why = None
            if k == "":
                why = "Key cannot be blank"
            elif not META_KEY.match(k):
                why = "Key contains invalid characters"
            elif len(k) > META_KEY_MAX:
                why = f"Key is too long (limit: {META_KEY_MAX} characters)"
            elif k.startswith("consul-"):
                why = "Key prefix 'consul-' is reserved for internal use"
            elif len(v) > META_VALUE_MAX:
                why = f"Value is too long (limit: {META_VALUE_MAX} characters)"
            if why:
                return f"Couldn't load metadata pair ('{k}', '{v}'): {why}"
        return None

    def register(self, body, q, token, node=None):
        node = node or self.node
        try:
            reg = json.loads(body or b"null")
        except ValueError:
            raise HTTPError(400, "Request decode failed: invalid character")
        if not isinstance(reg, dict):
            raise HTTPError(400, "Request decode failed: expected an object")
        name = reg.get("Name")
        if not isinstance(name, str) or not name:
            raise HTTPError(400, "Missing service name")
        self._auth(token, True, name)
        known = {"ID", "Name", "Tags", "Address", "Port", "Meta", "Check", "Checks", "Weights",
                 "EnableTagOverride", "Kind", "TaggedAddresses", "Proxy", "Connect"}
        for k in reg:
            if k not in known:
                raise HTTPError(400, f"Request decode failed: json: unknown field \"{k}\"")
        port = reg.get("Port", 0)
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise HTTPError(400, "Request decode failed: invalid Port")
        meta = reg.get("Meta") or {}
        if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
            raise HTTPError(400, "Request decode failed: json: cannot unmarshal into Go struct "
                            "field of type map[string]string")
        why = self.validate_service_meta(meta)
        if why:
            raise HTTPError(400, f"Invalid Service Meta: {why}")
        ns = self._namespace(q)
        check = reg.get("Check")
        if check:
            kinds = [k for k in ("TTL", "TCP", "HTTP") if check.get(k)]
            if len(kinds) != 1:
                raise HTTPError(400, "Invalid check: exactly one of TTL, TCP, HTTP needed")
            if not check.get("TTL") and not check.get("Interval"):
                raise HTTPError(400, "Invalid check: TCP and HTTP checks need an Interval")
            for key in ("TTL", "Interval", "DeregisterCriticalServiceAfter"):
                if check.get(key):
                    try:
                        parse_duration(check[key])
                    except ValueError as e:
                        raise HTTPError(400, f"Request decode failed: {e}")
        sid = reg.get("ID") or name
        with self.cond:
            if "replace-existing-checks" in q:
                self._deregister(sid, node)
            self.agents[node][sid] = reg
            inst = {"ID": sid, "Service": name, "Tags": list(reg.get("Tags") or []),
                    "Address": reg.get("Address", ""), "Port": port, "Meta": dict(meta),
                    "Weights": reg.get("Weights") or {"Passing": 1, "Warning": 1}}
            if self.enterprise:
                inst["Namespace"] = ns
            self._put_instance(node, inst)
            if check:
                ttl = check.get("TTL")
                cid = check.get("CheckID") or f"service:{sid}"
                self._put_check(node, {
                    "Node": node, "CheckID": cid, "Name": check.get("Name", ""),
                    "Status": check.get("Status", "critical"), "ServiceID": sid,
                    "ServiceName": name, "Output": "", "TTL": ttl or "",
                    "Definition": dict(check)})
                if ttl:
                    self.ttl_deadline[(node, cid)] = time.monotonic() + parse_duration(ttl)
            self._bump(name)
        return 200, None

    def deregister(self, sid, q, token, node=None):
        node = node or self.node
        self._namespace(q)
        with self.cond:
            reg = self.agents[node].get(sid)
            self._auth(token, True, reg["Name"] if reg else sid)
            if not reg:
                raise HTTPError(404, f"Unknown service ID \"{sid}\". Ensure that the service "
                                "ID is passed, not the service name.")
            self._deregister(sid, node)
        return 200, None

    def check_update(self, cid, body, q, token, node=None):
        node = node or self.node
        self._namespace(q)
        try:
            upd = json.loads(body or b"{}")
        except ValueError:
            raise HTTPError(400, "Request decode failed")
        with self.cond:
            c = self.checks.get((node, cid))
            self._auth(token, True, c["ServiceName"] if c else cid)
            if not c:
                raise HTTPError(404, f"Unknown check ID \"{cid}\". Ensure that the check ID "
                                "is passed, not the check name.")
            if not c.get("TTL"):
                raise HTTPError(500, f"CheckID \"{cid}\" does not have associated TTL")
            status = upd.get("Status")
            if status not in ("passing", "warning", "critical"):
                raise HTTPError(400, "Invalid 'Status' specified. Must be one of \"passing\", "
                                "\"warning\", or \"critical\".")
            self.ttl_deadline[(node, cid)] = time.monotonic() + parse_duration(c["TTL"])
            changed = c["Status"] != status or c["Output"] != upd.get("Output", "")
            c["Status"], c["Output"] = status, upd.get("Output", "")
            if changed:
                self._bump(c["ServiceName"], catalog=False)
        return 200, None

    def agent_service_view(self, sid, reg):
        return {"ID": sid, "Service": reg["Name"], "Tags": reg.get("Tags") or [],
                "Meta": reg.get("Meta") or {}, "Port": reg.get("Port", 0),
                "Address": reg.get("Address", ""), "Weights": {"Passing": 1, "Warning": 1},
                "EnableTagOverride": False, "Datacenter": self.datacenter}

    def agent_services_list(self, q, token, node=None):
        node = node or self.node
        self._namespace(q)
        filt = self._auth(token, False, "")
        with self.cond:
            out = {sid: self.agent_service_view(sid, reg)
                   for sid, reg in self.agents[node].items()}
        return 200, ({} if filt else out), self.index, bool(filt)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # the listen backlog: agents open many connections at once
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], OSError):  # TLS refusals, resets: expected
            super().handle_error(request, client_address)


class _UnixServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """Consul's HTTP API on a Unix socket (`addresses { http = "unix:///..." }`)."""
    daemon_threads = True
    request_queue_size = 1024

    def handle_error(self, request, client_address):
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    consul = None
    agent_node = None  # the node whose client agent this listener is

    def log_message(self, *args):
        pass

    def setup(self):
        super().setup()
        c = self.consul
        with c.cond:
            c.open_conns += 1
            c.total_conns += 1
            c.max_open_conns = max(c.max_open_conns, c.open_conns)

    def finish(self):
        c = self.consul
        with c.cond:
            c.open_conns -= 1
        super().finish()

    def _token(self, q):
        t = self.headers.get("X-Consul-Token")  # case-insensitive, as Go's net/http
        if t is None:
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Bearer "):
                t = auth[7:]
        if "token" in q:
            self.consul.token_in_query += 1
            t = t or q["token"]
        return t

    def _send(self, status, body, index=None, filtered=False):
        data = b"" if body is None else (body if isinstance(body, bytes) else
                                         json.dumps(body).encode())
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if status == 200 else
                         "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if index is not None and self.consul.index_header is not None:
            index = self.consul.index_header  # provoked by a test: never from Consul itself
        if index is not None and index is not MISSING:
            self.send_header("X-Consul-Index", str(index))
        if index is not None:
            self.send_header("X-Consul-KnownLeader", "true")
            self.send_header("X-Consul-LastContact", "0")
        if filtered:
            self.send_header("X-Consul-Results-Filtered-By-Acls", "true")
        try:
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client went away (it stopped, or cancelled)

    def _handle(self, method):
        url = urllib.parse.urlsplit(self.path)
        q = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        c = self.consul
        token = self._token(q)
        with c.cond:
            c.requests.append((time.monotonic(), method, url.path, q, token is not None))
        path = url.path
        try:
            if method == "GET" and path == "/v1/catalog/services":
                status, out, idx, filt = c.catalog_services(q, token)
                return self._send(status, out, idx, filt)
            if method == "GET" and path.startswith("/v1/health/service/"):
                name = urllib.parse.unquote(path[len("/v1/health/service/"):])
                status, out, idx, filt = c.health_service(name, q, token)
                return self._send(status, out, idx, filt)
            node = self.agent_node
            if method == "GET" and path == "/v1/agent/services":
                status, out, idx, filt = c.agent_services_list(q, token, node)
                return self._send(status, out, idx, filt)
            if method == "GET" and path.startswith("/v1/agent/service/"):
                sid = urllib.parse.unquote(path[len("/v1/agent/service/"):])
                c._namespace(q)
                c._auth(token, False, sid)
                with c.cond:
                    reg = c.agents[node].get(sid)
                    if not reg:
                        raise HTTPError(404, f"unknown service ID: {sid}")
                    return self._send(200, c.agent_service_view(sid, reg), c.index)
            writes = {"/v1/agent/service/register": None,
                      "/v1/agent/service/deregister/": None, "/v1/agent/check/update/": None}
            if any(path.startswith(p) for p in writes) and method != "PUT":
                raise HTTPError(405, f"method {method} not allowed")
            if path == "/v1/agent/service/register":
                return self._send(*c.register(body, q, token, node))
            if path.startswith("/v1/agent/service/deregister/"):
                sid = urllib.parse.unquote(path[len("/v1/agent/service/deregister/"):])
                return self._send(*c.deregister(sid, q, token, node))
            if path.startswith("/v1/agent/check/update/"):
                cid = urllib.parse.unquote(path[len("/v1/agent/check/update/"):])
                return self._send(*c.check_update(cid, body, q, token, node))
            raise HTTPError(404, "")
        except HTTPError as e:
            self._send(e.status, e.text.encode())

    def do_GET(self):
        self._handle("GET")

    def do_PUT(self):
        self._handle("PUT")

    def do_POST(self):
        self._handle("POST")

    def do_DELETE(self):
        self._handle("DELETE")


if __name__ == "__main__":
    import argparse
    ap = argparse.ArgumentParser(description="Run the fake Consul HTTP API.")
    ap.add_argument("--port", type=int, default=8500)
    ap.add_argument("--services", type=int, default=0)
    ap.add_argument("--instances", type=int, default=1)
    a = ap.parse_args()
    fake = FakeConsul(port=a.port).start()
    fake.add_many(a.services, a.instances)
    print(f"fake consul on {fake.address}", file=sys.stderr)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        fake.stop()
