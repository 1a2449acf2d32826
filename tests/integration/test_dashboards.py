#!/usr/bin/env python3
"""The Grafana dashboards shipped in packaging/dashboards/ (docs/metrics.md, Dashboards):
their JSON is checked for what Grafana needs, then every query of every panel runs against
a real Prometheus (Debian's `prometheus`) scraping a mesh under traffic from the test: a
controller and three agents in controller mode, over mTLS (web on host-a calls api on
host-b over HTTP and db on host-c over TCP; api calls web and db), with successes, 5xx
answers, a denial by an AuthorizationPolicy and a fault. The dashboards' template variables
are resolved the way Grafana resolves them (label_values() through Prometheus's series
API); each panel query must return at least one series with a number, carrying the labels
it groups by and shows in its legend, for some value of them."""
import glob
import json
import math
import os
import re
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

from backends import Backend
from controllertest import Controller
from http_backend import HttpBackend
from httptest import Client
from meshtest import SLOW, BackendTest, free_port, main, wait_for

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DASHBOARDS = os.path.join(SRC, "packaging", "dashboards")
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
TD = "mesh.test"
# Grafana's $__rate_interval is at least four scrape intervals; Prometheus scrapes every
# second here, so 15s holds enough samples for rate() even when a scrape is late.
BUILTINS = {"__rate_interval": "15s", "__interval": "5s", "__range": "5m",
            "__range_s": "300", "__interval_ms": "5000"}
EXPECTED = {"mesh-overview.json", "mesh-service.json", "mesh-workload.json",
            "mesh-agent.json", "mesh-controller.json"}


def spiffe(ns, name):
    return f"spiffe://{TD}/ns/{ns}/sa/{name}"


def dashboards():
    """{file name: dashboard JSON} of every dashboard shipped."""
    out = {}
    for path in sorted(glob.glob(os.path.join(DASHBOARDS, "*.json"))):
        with open(path) as f:
            out[os.path.basename(path)] = json.load(f)
    return out


def panels(dash):
    """Every panel, those inside collapsed rows included."""
    for p in dash["panels"]:
        yield p
        for q in p.get("panels", []):
            yield q


def listening(host, port):
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        return True
    except OSError:
        return False


class Prometheus:
    """A real prometheus process with static scrape targets on loopback, scraping every
    second, its storage in a temporary directory."""

    def __init__(self, agents, controller):
        self.tmp = tempfile.mkdtemp(prefix="mesh-prometheus-")
        self.port = free_port()
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                       "evaluation_interval": "1s"},
            "scrape_configs": [
                {"job_name": "mesh-agent", "metrics_path": "/metrics",
                 "static_configs": [{"targets": [f"127.0.0.1:{a.admin_port}"
                                                 for a in agents]}]},
                {"job_name": "mesh-controller", "metrics_path": "/metrics", "scheme": "https",
                 "tls_config": {"ca_file": controller.ca, "server_name": "127.0.0.1"},
                 "static_configs": [{"targets": [f"127.0.0.1:{controller.port}"]}]},
            ]}
        self.config_path = os.path.join(self.tmp, "prometheus.yml")
        with open(self.config_path, "w") as f:
            json.dump(config, f)  # JSON is YAML
        self.log_path = os.path.join(self.tmp, "prometheus.log")
        self.proc = None

    def start(self):
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [PROMETHEUS, f"--config.file={self.config_path}",
             f"--storage.tsdb.path={os.path.join(self.tmp, 'data')}",
             f"--web.listen-address=127.0.0.1:{self.port}",
             "--storage.tsdb.retention.time=1h", "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: self.up(), timeout=30, interval=0.2, what="prometheus ready")
        return self

    def up(self):
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited {self.proc.returncode}:\n{self.logs()}")
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
            return r.status == 200

    def logs(self):
        with open(self.log_path) as f:
            return f.read()

    def api(self, path, **params):
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?" + urllib.parse.urlencode(
            params, doseq=True)
        try:
            with urllib.request.urlopen(url, timeout=10 * SLOW) as r:
                doc = json.load(r)
        except urllib.error.HTTPError as e:
            doc = json.load(e)
        if doc.get("status") != "success":
            raise AssertionError(f"{path} {params}: {doc.get('errorType')}: {doc.get('error')}")
        return doc["data"]

    def targets_up(self):
        active = self.api("targets")["activeTargets"]
        return active and all(t["health"] == "up" for t in active), [
            (t["scrapeUrl"], t["health"], t["lastError"]) for t in active]

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "log", None):
            self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


class DashboardJsonTest(unittest.TestCase):
    """What Grafana needs of a dashboard file, and what these promise."""

    def test_files_are_what_the_generator_writes(self):
        r = subprocess.run([os.path.join(SRC, "scripts", "gen-dashboards"), "--check"],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_every_dashboard_is_shipped_and_well_formed(self):
        dash = dashboards()
        self.assertEqual(set(dash), EXPECTED)
        uids = set()
        for name, d in dash.items():
            with self.subTest(dashboard=name):
                self.assertIsInstance(d.get("title"), str)
                self.assertRegex(d.get("uid", ""), r"^[a-zA-Z0-9_-]{1,40}$")
                self.assertNotIn(d["uid"], uids, "dashboard uids are unique")
                uids.add(d["uid"])
                self.assertGreaterEqual(d.get("schemaVersion", 0), 36)
                self.assertIsNone(d.get("id"), "no id: Grafana gives one on import")
                variables = d["templating"]["list"]
                ds = [v for v in variables if v["type"] == "datasource"]
                self.assertEqual(len(ds), 1, "one datasource variable")
                self.assertEqual(ds[0]["name"], "datasource")
                self.assertEqual(ds[0]["query"], "prometheus")
                names = {v["name"] for v in variables}
                for v in variables:
                    if v["type"] == "query":
                        self.assertEqual(v["datasource"],
                                         {"type": "prometheus", "uid": "${datasource}"})
                        self.assertRegex(v["query"]["query"],
                                         r"^label_values\(.*, *[a-zA-Z_]+\)$")
                ids = set()
                for p in panels(d):
                    title = p.get("title")
                    self.assertTrue(title, f"panel {p.get('id')} has a title")
                    self.assertIsInstance(p.get("id"), int, title)
                    self.assertNotIn(p["id"], ids, f"panel ids are unique ({title})")
                    ids.add(p["id"])
                    g = p.get("gridPos", {})
                    for k in ("x", "y", "w", "h"):
                        self.assertIsInstance(g.get(k), int, f"{title}: gridPos.{k}")
                    self.assertLessEqual(g["x"] + g["w"], 24, f"{title}: within 24 columns")
                    self.assertGreater(g["w"] * g["h"], 0, title)
                    if p["type"] == "row":
                        continue
                    self.assertEqual(p.get("datasource"),
                                     {"type": "prometheus", "uid": "${datasource}"}, title)
                    self.assertTrue(p.get("targets"), f"{title} has targets")
                    refs = set()
                    for t in p["targets"]:
                        self.assertTrue(t.get("expr", "").strip(), f"{title}: a target's expr")
                        self.assertNotIn(t.get("refId"), refs, f"{title}: refIds unique")
                        refs.add(t.get("refId"))
                        self.assertEqual(t.get("datasource"),
                                         {"type": "prometheus", "uid": "${datasource}"}, title)
                        for ref in re.findall(r"\$\{?([a-zA-Z_]+)", t["expr"]):
                            self.assertIn(ref, names | set(BUILTINS),
                                          f"{title}: ${ref} is a variable of the dashboard")


def substitute(expr, values):
    """expr with Grafana's variables replaced: $name, ${name} and the built-in intervals."""
    allv = dict(BUILTINS, **values)
    out = re.sub(r"\$\{([a-zA-Z_]+)\}|\$([a-zA-Z_]+)",
                 lambda m: allv[m.group(1) or m.group(2)], expr)
    return out


class DashboardQueryTest(BackendTest):
    """Every panel of every dashboard against a real Prometheus scraping a mesh."""

    def setUp(self):
        super().setUp()
        if not os.access(PROMETHEUS, os.X_OK):
            print("SKIP: prometheus is not installed (scripts/install-deps installs it)")
            raise unittest.SkipTest("prometheus is not installed (scripts/install-deps)")
        self.tmp = tempfile.mkdtemp(prefix="mesh-dash-")
        self.stop_traffic = threading.Event()
        self.traffic_errors = []
        self.controller = None
        self.prom = None

    def tearDown(self):
        self.stop_traffic.set()
        if getattr(self, "traffic", None):
            self.traffic.join(timeout=30)
        if self.prom:
            self.prom.stop()
        try:
            super().tearDown()
        finally:
            if self.controller:
                self.controller.stop()

    def mesh(self):
        """A controller and three agents over mTLS with certificates from the controller:
        host-a (127.0.0.1) runs web, host-b (127.0.0.2) api, host-c (127.0.0.3) db (TCP).
        web calls api (HTTP; B's AuthorizationPolicy denies web /admin, A's route injects a
        fault on /fault) and db; api calls web (HTTP) and db."""
        ctl = self.controller = Controller({"trust_domain": TD, "report_interval": "1s"}).start()
        r = ctl.meshctl("token", "create", "--services", spiffe("shop", "*"), "--node",
                        "host-*", "--uses", "3", "--addresses", "127.0.0.2,127.0.0.3")
        self.assertEqual(r.returncode, 0, r.stderr)
        token = os.path.join(self.tmp, "join.token")
        with open(token, "w") as f:
            f.write(r.stdout.strip().splitlines()[-1] + "\n")
        identity = {"mode": "controller", "controller": f"https://127.0.0.1:{ctl.port}",
                    "controller_ca": ctl.ca, "join_token_file": token}
        web, api, db = HttpBackend("web-a").start(), HttpBackend("api-b").start(), \
            Backend("db-c").start()
        self.backends += [web, api, db]
        ip = {"a": "127.0.0.1", "b": "127.0.0.2", "c": "127.0.0.3"}
        inbound = {h: free_port() for h in ip}
        ports = {"a": {"api": free_port(), "db": free_port()},
                 "b": {"web": free_port(), "db": free_port()}}
        remote = {"web": ("a", web, "http"), "api": ("b", api, "http"), "db": ("c", db, "tcp")}

        def host(h, local):
            """An agent on host h running service local, with upstreams to ports[h]."""
            _, backend, proto = remote[local]
            services = {f"{local}.json": {"service": {
                "name": local, "namespace": "shop", "protocol": proto, "port": backend.port,
                "upstreams": [{"service": s, "bind_port": p, "protocol": remote[s][2]}
                              for s, p in ports.get(h, {}).items()]}}}
            for s in ports.get(h, {}):
                rh, rb, rproto = remote[s]
                services[f"{s}.json"] = {"service": {
                    "name": s, "namespace": "shop", "protocol": rproto, "endpoints": [
                        {"address": ip[rh], "port": rb.port, "mesh_port": inbound[rh]}]}}
            cfg = {"node": {"name": f"host-{h}", "zone": "zone-a", "address": ip[h]},
                   "trust_domain": TD, "identity": dict(identity),
                   "listeners": {"outbound_http": f"{ip[h]}:{free_port()}",
                                 "inbound": f"{ip[h]}:{inbound[h]}"}}
            return self.agent(name=f"host-{h}", config=cfg, services=services)

        a, b, c = host("a", "web"), host("b", "api"), host("c", "db")
        b.write_resource("authz.json", {"kind": "AuthorizationPolicy", "name": "api",
                                        "namespace": "shop", "spec": {"deny": [{
                                            "principals": [spiffe("shop", "web")],
                                            "match": [{"path": {"prefix": "/admin"}}]}]}})
        a.write_resource("route.json", {"kind": "Route", "name": "api", "namespace": "shop",
                                        "spec": {"rules": [
            {"name": "fault", "match": [{"path": {"prefix": "/fault"}}],
             "destinations": [{"service": "api"}], "fault": {"abort": {"status": 503}}},
            {"name": "main", "destinations": [{"service": "api"}]}]}})
        for ag in (a, b, c):
            ag.start()
        for h in ip:
            wait_for(lambda: listening(ip[h], inbound[h]), timeout=20,
                     what=f"host-{h}'s mTLS listener")
        for h in ports:
            for p in ports[h].values():
                wait_for(lambda: listening("127.0.0.1", p), what=f"host-{h}'s upstream {p}")
        self.ports = ports
        return ctl, (a, b, c)

    def one_round(self):
        """One of each kind of call: successes, a 5xx from the backend, a fault, a denial,
        TCP connections. Returns what went wrong, or None."""
        calls = [("a", "api", "/hello", 200), ("a", "api", "/x?status=500", 500),
                 ("a", "api", "/fault", 503), ("a", "api", "/admin/x", 403),
                 ("a", "api", "/slow?delay=20", 200), ("b", "web", "/", 200)]
        for h, svc, path, want in calls:
            c = Client(self.ports[h][svc], host=svc)
            try:
                status = c.request(path=path)[0]
            finally:
                c.close()
            if status != want:
                return f"host-{h} GET {svc}{path}: {status}, not {want}"
        for h in ("a", "b"):
            s = socket.create_connection(("127.0.0.1", self.ports[h]["db"]), timeout=5 * SLOW)
            try:
                f = s.makefile("rb")
                if f.readline() != b"db-c\n":
                    return f"host-{h}: db did not greet"
                s.sendall(b"ping\n")
                if f.readline() != b"ping\n":
                    return f"host-{h}: db did not echo"
                f.close()
            finally:
                s.close()
        return None

    def traffic_loop(self):
        while not self.stop_traffic.is_set():
            try:
                err = self.one_round()
            except Exception as e:  # noqa: BLE001 - reported by the test, not lost
                err = f"{type(e).__name__}: {e}"
            if err:
                self.traffic_errors.append(err)
            self.stop_traffic.wait(0.1)

    def test_every_panel_returns_data(self):
        ctl, agents = self.mesh()
        # The first round must go through whole: the mesh works before anything is measured.
        wait_for(lambda: self.one_round() is None, timeout=20, interval=0.2,
                 what="a round of calls through the mesh")
        self.traffic = threading.Thread(target=self.traffic_loop, daemon=True)
        self.traffic.start()
        if os.environ.get("MESH_DASHBOARDS_DUMP"):
            time.sleep(2)
            for ag in agents:
                print(ag.get("/metrics")[2].decode())
            print(ctl.exchange("GET", "/metrics")[2].decode())
        self.prom = Prometheus(agents, ctl).start()
        try:
            wait_for(lambda: self.prom.targets_up()[0], timeout=30, interval=0.2,
                     what="every scrape target up")
        except AssertionError:
            raise AssertionError(f"targets: {self.prom.targets_up()[1]}")
        self.check_dashboards()
        self.assertEqual(self.traffic_errors[:5], [])

    def resolve(self, dash):
        """Every combination of values of the dashboard's query variables, each variable's
        values asked of Prometheus in order (a later one may name an earlier one), as
        Grafana does with label_values(selector, label)."""
        combos = [{}]
        for v in dash["templating"]["list"]:
            if v["type"] != "query":
                continue
            m = re.fullmatch(r"label_values\((.*), *([a-zA-Z_]+)\)", v["query"]["query"])
            selector, label = m.group(1), m.group(2)
            nxt = []
            for values in combos:
                sel = substitute(selector, values)
                got = set()
                for s in self.prom.api("series", **{"match[]": sel, "start": time.time() - 300,
                                                    "end": time.time()}):
                    if label in s:
                        got.add(s[label])
                regex = v.get("regex")
                if regex:
                    got = {g for g in got if re.fullmatch(regex.strip("/"), g)}
                got.discard("unknown")  # calls with no route: no service to look at
                nxt += [dict(values, **{v["name"]: g}) for g in sorted(got)]
            self.assertTrue(nxt, f"{dash['title']}: variable ${v['name']} has no value "
                            f"({v['query']['query']})")
            combos = nxt
        return combos

    def series(self, expr):
        """The samples of an instant query that carry a number (not NaN)."""
        res = self.prom.api("query", query=expr)
        if res["resultType"] in ("scalar", "string"):
            return [res["result"]]
        return [r for r in res["result"] if not math.isnan(float(r["value"][1]))]

    @staticmethod
    def wanted_labels(target):
        """The labels a target's series must carry: those it groups by and those its legend
        shows. A misspelled one groups everything under an empty value and still returns
        data; this catches it."""
        labels = set(re.findall(r"\{\{ *([a-zA-Z_]+) *\}\}", target.get("legendFormat", "")))
        for group in re.findall(r"\bby \(([^)]*)\)", target["expr"]):
            labels |= {l.strip() for l in group.split(",")}
        return labels - {"le", ""}

    def returns_data(self, target, combos):
        """Why target returns no usable data for any of combos, or None when it does."""
        why = "no series with a number"
        for values in combos:
            got = self.series(substitute(target["expr"], values))
            if not got:
                continue
            missing = {l for l in self.wanted_labels(target)
                       if not any(isinstance(r, dict) and r["metric"].get(l) for r in got)}
            if not missing:
                return None
            why = f"series without the labels {sorted(missing)}"
        return why

    def check_dashboards(self):
        """Waits (bounded) until every panel target of every dashboard returns data for
        some value of the dashboard's variables; fails naming the ones that never do."""
        missing = None
        deadline = time.monotonic() + 40 * SLOW
        while time.monotonic() < deadline:
            missing = []
            checked = 0
            for name, dash in dashboards().items():
                combos = self.resolve(dash)
                for p in panels(dash):
                    for t in p.get("targets", []):
                        checked += 1
                        why = self.returns_data(t, combos)
                        if why:
                            missing.append(f"{name}: panel '{p['title']}' ({t['refId']}): "
                                           f"{why}: {t['expr']}  [variables: {combos}]")
            if not missing:
                print(f"dashboards: {checked} panel queries over {len(dashboards())} "
                      "dashboards returned data")
                return
            time.sleep(1)
        self.fail("panel queries without data:\n" + "\n".join(missing))


if __name__ == "__main__":
    main()
