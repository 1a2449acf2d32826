#!/usr/bin/env python3
"""The mesh console (issue 18): a controller and three agents on 127.0.0.2/3/4, with web
(host-a) calling api (host-b) calling db (host-c), traffic from the test, one call in
four to db answered 500.

- Agents report their traffic per edge; GET /v1/graph shows the three services and both
  edges with rates, the errors on api -> db, as counted by the caller's proxy.
- Reports are checked: a bad "traffic" is refused (400 naming the field) and changes
  nothing; a report without it (an older agent) is accepted.
- The console's files: embedded, strict headers, no external URL; the data needs the
  admin token.
- In headless Chromium (Selenium): the graph shows the three services and both edges with
  non-zero rates, the agents and certificates views fill; screenshots are kept in
  build/artifacts/."""
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading

from controllertest import TD, Controller, csr
from http_backend import HttpBackend
from httptest import Client
from meshtest import BUILD, BackendTest, free_port, main, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
ARTIFACTS = os.path.join(BUILD, "artifacts")
SYSTEM_PYTHON = "/usr/bin/python3"


def browser():
    """(chromium, chromedriver, None), or (None, None, why the browser part cannot run)."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium:
        return None, None, "no chromium (Debian package chromium)"
    if not driver:
        return None, None, "no chromedriver (Debian package chromium-driver)"
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return None, None, f"no {SYSTEM_PYTHON}"
    r = subprocess.run([SYSTEM_PYTHON, "-c", "import selenium; print(selenium.__version__)"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        return None, None, f"{SYSTEM_PYTHON} cannot import selenium (Debian python3-selenium)"
    if int(r.stdout.split(".")[0]) < 4:
        return None, None, f"selenium {r.stdout.strip()} is older than 4"
    return chromium, driver, None


class ConsoleFilesTest(BackendTest):
    """The controller alone: its console files, headers, and the checks of reports."""

    def setUp(self):
        super().setUp()
        self.ctl = Controller().start()
        self.addCleanup(shutil.rmtree, self.ctl.tmp, True)
        self.addCleanup(self.ctl.stop)

    def get(self, path, headers=None):
        status, h, body = self.ctl.exchange("GET", path, headers=headers)
        return status, {k.lower(): v for k, v in h.items()}, body

    def test_files_are_embedded_with_strict_headers_and_no_external_url(self):
        status, h, _ = self.get("/ui")
        self.assertEqual((status, h.get("location")), (308, "/ui/"))
        status, h, page = self.get("/ui/")
        self.assertEqual(status, 200, page)
        self.assertEqual(h["content-type"], "text/html; charset=utf-8")
        csp = h["content-security-policy"]
        self.assertIn("default-src 'self'", csp)
        self.assertIn("script-src 'self';", csp)  # no 'unsafe-inline', no other origin
        self.assertNotIn("unsafe", csp)
        self.assertIn("frame-ancestors 'none'", csp)
        self.assertEqual(h["x-content-type-options"], "nosniff")
        self.assertEqual(h["cache-control"], "no-cache")
        # An unchanged file is not sent again.
        status, _, body = self.get("/ui/", {"If-None-Match": h["etag"]})
        self.assertEqual((status, body), (304, b""))
        assets = re.findall(rb'(?:src|href)="([^"]+)"', page)
        self.assertEqual(sorted(assets), [b"console.css", b"console.js", b"favicon.svg"])
        for text in [page] + [self.get("/ui/" + a.decode())[2] for a in assets]:
            # The SVG namespace's name is a URL that nothing fetches; no other URL.
            text = text.replace(b'xmlns="http://www.w3.org/2000/svg"', b"")
            self.assertNotRegex(text, rb"https?:|//[a-z]", "a URL outside the controller")
            self.assertNotIn(b"<script>", text)  # no inline script: the CSP refuses it
        status, h, js = self.get("/ui/console.js")
        self.assertEqual((status, h["content-type"]), (200, "text/javascript; charset=utf-8"))
        self.assertEqual(self.get("/ui/favicon.svg")[1]["content-type"], "image/svg+xml")
        self.assertEqual(self.get("/ui/nope.js")[0], 404)
        self.assertEqual(self.get("/ui/../admin.token")[0], 404)
        self.assertEqual(self.ctl.exchange("POST", "/ui/", body="x")[0], 405)
        # The data behind it is the admin API's: no token, no graph.
        status, body = self.ctl.request("GET", "/v1/graph")
        self.assertEqual(status, 401, body)
        status, body = self.ctl.request("GET", "/v1/graph", admin=True)
        self.assertEqual(status, 200, body)
        self.assertEqual((body["nodes"], body["edges"]), ([], []))

    def enrolled(self, name):
        body = {"services": [f"spiffe://{TD}/ns/shop/*"], "node": name, "uses": 1}
        s, tok = self.ctl.request("POST", "/v1/tokens", body, admin=True)
        self.assertEqual(s, 201, tok)
        text, key = csr(self.ctl.tmp, name)
        s, doc = self.ctl.request("POST", "/v1/enroll", {"token": tok["token"], "node": name,
                                                          "csr": text})
        self.assertEqual(s, 200, doc)
        cert = os.path.join(self.ctl.tmp, f"{name}.crt")
        with open(cert, "w") as f:
            f.write(doc["certificate"])
        return cert, key

    def test_reports_traffic_is_checked_and_optional(self):
        cert, key = self.enrolled("host-x")
        svc = [{"namespace": "shop", "name": "web", "protocol": "http", "port": 8080,
                "labels": {}, "identity": f"spiffe://{TD}/ns/shop/sa/web", "health": "healthy"}]
        edge = {"reporter": "source", "protocol": "tcp", "source_namespace": "shop",
                "source_workload": "web", "destination_namespace": "shop",
                "destination_service": "db", "connections_opened": 2, "connections_closed": 1,
                "bytes_sent": 10, "bytes_received": 20}

        def report(**extra):
            body = {"address": "", "inbound_port": 15008, "services": svc}
            body.update(extra)
            return self.ctl.request("POST", "/v1/report", body, cert=cert, key=key)

        # An older agent says nothing of traffic: accepted.
        self.assertEqual(report()[0], 200)
        self.assertEqual(report(traffic=[edge])[0], 200)
        for bad, why in (
                ({"traffic": {}}, "traffic: expected an array of edges"),
                ({"traffic": [dict(edge, bytes_sent=-1)]}, "traffic[0]: bytes_sent: expected"),
                ({"traffic": [edge, dict(edge, source_workload="Web")]},
                 "traffic[1]: source_workload: expected a DNS label"),
                ({"traffic": [dict(edge, requests=1)]}, "traffic[0]: unknown key 'requests'"),
                ({"traffic": [edge] * 257}, "traffic: 257 edges, at most 256")):
            status, body = report(**bad)
            self.assertEqual(status, 400, body)
            self.assertIn(why, body["error"])
        # A refused report changed nothing: the node and its services are still there.
        status, g = self.ctl.request("GET", "/v1/graph", admin=True)
        self.assertEqual([n["id"] for n in g["nodes"] if n["in_mesh"]], ["shop/web"], g)
        self.assertEqual([n["agents"] for n in g["nodes"] if n["in_mesh"]], [["host-x"]])


class ConsoleMeshTest(BackendTest):
    """Three agents under traffic, the graph, and the console in Chromium."""

    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="mesh-console-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.ctl = Controller({"report_interval": "1s"}).start()
        self.addCleanup(shutil.rmtree, self.ctl.tmp, True)
        self.addCleanup(self.ctl.stop)
        r = self.ctl.meshctl("token", "create", "--services", f"spiffe://{TD}/ns/shop/*",
                             "--node", "host-*", "--uses", "10", "--addresses", "127.0.0.0/24")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.token = os.path.join(self.tmp, "join.token")
        with open(self.token, "w") as f:
            f.write(r.stdout.strip().splitlines()[-1] + "\n")
        self.stop = threading.Event()

    def host(self, name, ip, service, port, upstream=None):
        svc = {"name": service, "namespace": "shop", "protocol": "http", "port": port}
        if upstream:
            svc["upstreams"] = [{"service": upstream[0], "bind_port": upstream[1],
                                 "protocol": "http"}]
        a = self.agent(name=name, config={
            "node": {"name": name, "zone": "zone-a", "address": ip}, "trust_domain": TD,
            "identity": {"mode": "controller", "controller": f"https://127.0.0.1:{self.ctl.port}",
                         "controller_ca": self.ctl.ca, "join_token_file": self.token},
            "listeners": {"outbound_http": f"{ip}:{free_port()}", "inbound": f"{ip}:{free_port()}"},
            "registries": [{"type": "static", "name": "files", "poll_interval": "0"},
                           {"type": "controller", "name": "mesh"}]},
            services={f"{service}.json": {"service": svc}})
        a.config["registries"][0]["directory"] = a.services_dir
        return a

    def workload(self, name):
        b = HttpBackend(name).start()
        self.backends.append(b)
        return b

    def drive(self, port, host, every_fourth=None):
        """Calls through an upstream listener until the test ends (the apps' traffic)."""
        c, i = None, 0
        while not self.stop.is_set():
            i += 1
            path = every_fourth if every_fourth and i % 4 == 0 else "/"
            try:
                c = c or Client(port, host=host)
                c.request(path=path)
                self.stop.wait(0.01)  # some 50 calls a second: traffic, not a load test
            except OSError:
                if c:
                    c.close()
                c = None
                self.stop.wait(0.05)
        if c:
            c.close()

    def graph(self):
        status, g = self.ctl.request("GET", "/v1/graph", admin=True)
        self.assertEqual(status, 200, g)
        return g

    @staticmethod
    def edge(g, src, dst):
        for e in g["edges"]:
            if e["source"] == src and e["destination"] == dst:
                return e
        return None

    def test_graph_of_three_services_in_chromium(self):
        web, api, db = self.workload("web"), self.workload("api"), self.workload("db")
        to_api, to_db = free_port(), free_port()
        hosts = [self.host("host-a", "127.0.0.2", "web", web.port, ("api", to_api)),
                 self.host("host-b", "127.0.0.3", "api", api.port, ("db", to_db)),
                 self.host("host-c", "127.0.0.4", "db", db.port)]
        for h in hosts:
            h.start()
        threads = [threading.Thread(target=self.drive, args=(to_api, "api"), daemon=True),
                   threading.Thread(target=self.drive, args=(to_db, "db", "/?status=500"),
                                    daemon=True)]
        for t in threads:
            t.start()

        def stop_traffic():
            self.stop.set()
            for t in threads:
                t.join(timeout=30)
        self.addCleanup(stop_traffic)

        def busy():
            """Both edges with rates, as the callers' proxies count them (until a caller's
            agent has two reports, the callee's count stands in), and the calls web made
            before it knew of api (503s at the start) gone from the window of rates."""
            g = self.graph()
            a, b = self.edge(g, "shop/web", "shop/api"), self.edge(g, "shop/api", "shop/db")
            return (a and b and a.get("requests_per_s", 0) > 0 and b.get("errors_per_s", 0) > 0
                    and a["errors_per_s"] == 0 and 0.1 < b["error_ratio"] < 0.5
                    and a["reporter"] == b["reporter"] == "source"
                    and {"shop/web", "shop/api", "shop/db"} <= {n["id"] for n in g["nodes"]})
        wait_for(busy, timeout=60, what="both edges with rates in /v1/graph")
        g = self.graph()
        web_api, api_db = self.edge(g, "shop/web", "shop/api"), self.edge(g, "shop/api", "shop/db")
        self.assertEqual(web_api["protocol"], "http")
        self.assertTrue(0.1 < api_db["error_ratio"] < 0.5, api_db)  # one call in four
        self.assertGreater(api_db["latency_ms_p99"], 0)
        nodes = {n["id"]: n for n in g["nodes"]}
        self.assertEqual(nodes["shop/db"]["agents"], ["host-c"])
        self.assertEqual([n["health"] for n in nodes.values()], ["healthy"] * 3)
        self.assertGreater(nodes["shop/db"]["errors_per_s"], 0)  # its golden signals
        self.assertGreater(nodes["shop/api"]["requests_per_s"], 0)
        self.assertIsNone(self.edge(g, "shop/db", "shop/web"))

        chromium, chromedriver, why = browser()
        if why:
            print(f"test_console: browser part skipped: {why}", flush=True)
            self.skipTest(why)
        token_file = os.path.join(self.ctl.state_dir, "admin.token")
        r = subprocess.run([SYSTEM_PYTHON, os.path.join(HERE, "console_browser.py"),
                            f"https://127.0.0.1:{self.ctl.port}/ui/", token_file, ARTIFACTS,
                            chromium, chromedriver],
                           capture_output=True, text=True, timeout=300)
        try:
            seen = json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            self.fail(f"console_browser.py exited {r.returncode}:\n{r.stdout}\n{r.stderr}")
        for path in seen["screenshots"]:
            print(f"test_console: screenshot {os.path.abspath(path)}", flush=True)
        self.assertEqual(r.returncode, 0, f"{seen.get('timeout')}: {seen}\n{r.stderr}")
        # The graph, from the DOM: three services, both edges with rates, errors on one.
        ids = {n["id"] for n in seen["graph"]["nodes"]}
        self.assertLessEqual({"shop/web", "shop/api", "shop/db"}, ids)
        edges = {(e["source"], e["destination"]): e for e in seen["graph"]["edges"]}
        self.assertGreater(edges[("shop/web", "shop/api")]["requests_per_s"], 0)
        self.assertGreater(edges[("shop/api", "shop/db")]["requests_per_s"], 0)
        self.assertGreater(edges[("shop/api", "shop/db")]["error_ratio"], 0)
        self.assertIn("req/s", edges[("shop/api", "shop/db")]["label"])
        # Agents: the three nodes, reporting; certificates with their expiry.
        agents = {row[0]: row for row in seen["agents"]}
        self.assertEqual(sorted(agents), ["host-a", "host-b", "host-c"])
        for row in agents.values():
            self.assertIn(row[1], ("SYNCED", "STALE"), row)
        self.assertGreaterEqual(len(seen["certs"]), 3)
        self.assertTrue(any("spiffe://mesh.test/ns/shop/sa/db" in row[0]
                            for row in seen["certs"]), seen["certs"])
        self.assertTrue(all(t > 0 for t in seen["cert_not_after"]))
        services = {row[0]: row for row in seen["services"]}
        self.assertIn("shop/db", services)
        # Nothing but the controller was asked for, and the CSP refused nothing.
        origin = f"https://127.0.0.1:{self.ctl.port}/"
        self.assertTrue(all(u.startswith(origin) for u in seen["requests"]), seen["requests"])
        self.assertEqual(seen["console_errors"], [])
        self.assertTrue(os.path.getsize(os.path.join(ARTIFACTS, "console-graph.png")) > 1000)


if __name__ == "__main__":
    main()
