#!/usr/bin/env python3
"""The controller as the mesh's registry (issue 15): a controller and three agents on
127.0.0.2/3/4, each with a `controller` registry and no file that names another host's
service. Agents report their local services (labels, port, identity, health); the controller
keeps them under a lease and serves the mesh-wide catalog as a blocking query.

- A service started on one host is callable from the others within a second.
- A 90/10 Route over versions living on two hosts lands 90/10.
- A host whose agent is killed: its endpoints are unhealthy within the grace period and
  callers stop using them; a clean stop removes them at once.
- Reports are checked: an identity the node's token does not allow, a bad label, an unknown
  key are refused."""
import json
import os
import shutil
import signal
import tempfile
import time

from controllertest import TD, Controller
from http_backend import HttpBackend
from httptest import Client
from meshtest import BackendTest, free_port, main, wait_for, within

GRACE = 3.0  # catalog_grace: three report intervals of 1 s


class MeshCatalogTest(BackendTest):
    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="mesh-catalog-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.ctl = Controller({"report_interval": "1s", "catalog_grace": f"{int(GRACE)}s",
                               "catalog_expiry": "30s"}).start()
        self.addCleanup(shutil.rmtree, self.ctl.tmp, True)
        self.addCleanup(self.ctl.stop)
        r = self.ctl.meshctl("token", "create", "--services", f"spiffe://{TD}/ns/shop/*",
                             "--node", "host-*", "--uses", "10", "--addresses", "127.0.0.0/24")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.token = os.path.join(self.tmp, "join.token")
        with open(self.token, "w") as f:
            f.write(r.stdout.strip().splitlines()[-1] + "\n")

    def host(self, name, ip, services=None):
        a = self.agent(name=name, config={
            "node": {"name": name, "zone": "zone-a", "address": ip}, "trust_domain": TD,
            "identity": {"mode": "controller", "controller": f"https://127.0.0.1:{self.ctl.port}",
                         "controller_ca": self.ctl.ca, "join_token_file": self.token},
            "listeners": {"outbound_http": f"{ip}:{free_port()}", "inbound": f"{ip}:{free_port()}"},
            "registries": [{"type": "static", "name": "files", "poll_interval": "0"},
                           {"type": "controller", "name": "mesh"}]},
            services=services)
        a.config["registries"][0]["directory"] = a.services_dir
        return a

    def caller(self, name="host-a", ip="127.0.0.2"):
        """A host whose 'web' calls 'api' (known only through the controller) on self.port."""
        self.port = free_port()
        return self.host(name, ip, services={"web.json": {"service": {
            "name": "web", "namespace": "shop", "port": free_port(),
            "upstreams": [{"service": "api", "bind_port": self.port, "protocol": "http"}]}}})

    @staticmethod
    def api(port, version=None):
        svc = {"name": "api", "namespace": "shop", "protocol": "http", "port": port}
        if version:
            svc["labels"] = {"version": version}
        return {"service": svc}

    def workload(self, name):
        b = HttpBackend(name).start()
        self.backends.append(b)
        return b

    def call(self, path="/"):
        c = Client(self.port, host="api")
        try:
            return c.echo(path)
        except OSError as e:
            return 0, {}, str(e)
        finally:
            c.close()

    def remote_endpoints(self, a):
        regs = a.json("/v1/status").get("registries", [])
        for r in regs:
            if r.get("name") == "mesh":
                return r.get("remote_endpoints", 0)
        return 0

    def catalog(self):
        status, body = self.ctl.request("GET", "/v1/catalog", admin=True)[:2]
        self.assertEqual(status, 200, body)
        return body if isinstance(body, dict) else json.loads(body)

    def api_endpoints(self):
        for s in self.catalog()["services"]:
            if s["namespace"] == "shop" and s["name"] == "api":
                return s["endpoints"]
        return []

    # -- a service started on one host is callable from the others --

    def test_service_started_on_one_host_is_callable_from_the_others_within_a_second(self):
        a = self.caller("host-a", "127.0.0.2")
        b = self.host("host-b", "127.0.0.3")
        c = self.host("host-c", "127.0.0.4", services={"web.json": {"service": {
            "name": "web", "namespace": "shop", "port": free_port(),
            "upstreams": [{"service": "api", "bind_port": free_port(), "protocol": "http"}]}}})
        for h in (a, b, c):
            h.start()
        self.assertEqual(self.call()[0] in (0, 503), True)  # no 'api' anywhere yet
        w = self.workload("api-b")
        t0 = time.monotonic()
        b.write_service("api.json", self.api(w.port, "v1"))
        wait_for(lambda: self.call()[0] == 200, timeout=10, what="'api' callable from host-a")
        within(self, t0, 1.0, "a new service on host-b reaching host-a")
        status, headers, echo = self.call()
        self.assertEqual(echo["backend"], "api-b")
        # host-c sees it too, through its own upstream listener.
        with open(os.path.join(c.services_dir, "web.json")) as f:
            c_bind = json.load(f)["service"]["upstreams"][0]["bind_port"]
        self.port, a_port = c_bind, self.port
        wait_for(lambda: self.call()[0] == 200, timeout=5, what="'api' callable from host-c")
        self.port = a_port
        # What the controller keeps: everything a caller needs.
        eps = self.api_endpoints()
        self.assertEqual(len(eps), 1, eps)
        ep = eps[0]
        self.assertEqual(ep["address"], "127.0.0.3")
        self.assertEqual(ep["port"], w.port)
        self.assertEqual(ep["node"], "host-b")
        self.assertEqual(ep["labels"], {"version": "v1"})
        self.assertEqual(ep["mesh_port"], int(b.config["listeners"]["inbound"].rsplit(":", 1)[1]))
        svc = [s for s in self.catalog()["services"] if s["name"] == "api"][0]
        self.assertEqual(svc["protocol"], "http")
        self.assertEqual(svc["identities"], [f"spiffe://{TD}/ns/shop/sa/api"])
        # host-b's own endpoint is not fed back to it as a remote one.
        self.assertEqual(self.remote_endpoints(b), 2)  # the two 'web's of a and c
        # The service goes away: gone from the callers too.
        t0 = time.monotonic()
        b.remove_service("api.json")
        wait_for(lambda: self.call()[0] != 200, timeout=10, what="'api' gone from host-a")
        within(self, t0, 1.0, "a removed service leaving host-a")

    def test_agents_hold_the_membership_and_learn_of_changes(self):
        """An agent names the membership it holds in its reports, so an unchanged one is not
        sent again (with 1,000 nodes, 70 KB per report); a node joining reaches it still."""
        a = self.host("host-a", "127.0.0.2")
        a.start()
        wait_for(lambda: self.ctl.metric("mesh_controller_report_answers_total",
                                         members="unchanged") >= 2,
                 timeout=15, what="host-a's reports answered without the unchanged membership")
        path = os.path.join(a.state_dir, "controller-members.json")
        b = self.host("host-b", "127.0.0.3")
        b.start()

        def a_knows_b():
            try:
                with open(path) as f:
                    return "127.0.0.3" in f.read()
            except OSError:
                return False
        wait_for(a_knows_b, timeout=10, what="host-b in host-a's membership")
        self.assertNotIn("report refused", a.logs())

    # -- a Route over versions on two hosts --

    def test_weighted_route_over_versions_on_two_hosts(self):
        a = self.caller()
        v1, v2 = self.workload("v1"), self.workload("v2")
        b = self.host("host-b", "127.0.0.3", services={"api.json": self.api(v1.port, "v1")})
        c = self.host("host-c", "127.0.0.4", services={"api.json": self.api(v2.port, "v2")})
        a.write_resource("route.json", {"kind": "Route", "name": "api", "namespace": "shop",
                                        "spec": {"rules": [{"destinations": [
                                            {"service": "api", "subset": {"version": "v1"},
                                             "weight": 90},
                                            {"service": "api", "subset": {"version": "v2"},
                                             "weight": 10}]}]}})
        for h in (b, c, a):
            h.start()
        wait_for(lambda: self.remote_endpoints(a) >= 2, timeout=10,
                 what="both versions at host-a")
        cl = Client(self.port, host="api")
        wait_for(lambda: cl.request("GET", "/warm")[0] == 200, timeout=10, what="a first call")
        n0 = v1.count() + v2.count()
        v1_0, v2_0 = v1.count(), v2.count()
        n = 2000
        for _ in range(n):
            self.assertEqual(cl.request("GET", "/")[0], 200)
        cl.close()
        got1, got2 = v1.count() - v1_0, v2.count() - v2_0
        share = got2 / n
        print(f"v2 share {share:.3f} over {n} requests across hosts (want 0.10 +- 0.03)")
        self.assertEqual(got1 + got2, n, (n0, got1, got2))
        self.assertLess(abs(share - 0.10), 0.03)

    # -- leases: a killed host, a clean stop --

    def two_hosts_serving(self):
        a = self.caller()
        self.w1 = w1 = self.workload("api-b")
        self.w2 = w2 = self.workload("api-c")
        b = self.host("host-b", "127.0.0.3", services={"api.json": self.api(w1.port)})
        c = self.host("host-c", "127.0.0.4", services={"api.json": self.api(w2.port)})
        for h in (b, c, a):
            h.start()
        wait_for(lambda: self.remote_endpoints(a) >= 2, timeout=10, what="both 'api's at host-a")
        return a, b, c

    def backends_answering(self, n=40):
        seen = set()
        c = Client(self.port, host="api")
        for i in range(n):
            status, _, echo = c.echo(f"/{i}")
            self.assertEqual(status, 200, echo)
            seen.add(echo["backend"])
        c.close()
        return seen

    def test_killed_host_is_unhealthy_within_the_grace_period_and_not_called(self):
        a, b, c = self.two_hosts_serving()
        self.assertEqual(self.backends_answering(), {"api-b", "api-c"})
        t0 = time.monotonic()
        c.kill()  # SIGKILL: no word to the controller
        c.expected_exit = -signal.SIGKILL

        def unhealthy():
            eps = {e["node"]: e for e in self.api_endpoints()}
            return eps.get("host-c", {}).get("health") == "unhealthy"
        wait_for(unhealthy, timeout=GRACE + 10, what="host-c's endpoint marked unhealthy")
        within(self, t0, GRACE + 1.5, "a killed host's endpoints marked unhealthy")
        self.assertEqual(self.ctl.metric("mesh_controller_catalog_nodes_lapsed"), 1)
        self.assertEqual(self.ctl.metric("mesh_controller_catalog_endpoints"), 3)
        # Callers stop using it: every call lands on host-b, none fails.
        wait_for(lambda: a.metric("mesh_proxy_endpoints_healthy", destination="shop/api") == 1,
                 timeout=5, what="host-a counting one healthy endpoint")
        self.assertEqual(self.backends_answering(), {"api-b"})

    def test_a_workload_down_is_reported_unhealthy_by_its_agents_own_check(self):
        a, b, c = self.two_hosts_serving()

        def health():
            return {e["node"]: e.get("health", "healthy") for e in self.api_endpoints()}
        port = self.w2.port
        self.w2.stop()  # host-c's agent runs; its workload does not
        t0 = time.monotonic()
        wait_for(lambda: health().get("host-c") == "unhealthy", timeout=15,
                 what="host-c's workload reported down")
        within(self, t0, 3.0, "a workload down reaching the registry")
        wait_for(lambda: a.metric("mesh_proxy_endpoints_healthy", destination="shop/api") == 1,
                 timeout=5, what="host-a counting one healthy endpoint")
        self.assertEqual(self.backends_answering(), {"api-b"})
        self.w2 = HttpBackend("api-c", port=port).start()
        self.backends.append(self.w2)
        wait_for(lambda: health().get("host-c") == "healthy", timeout=15,
                 what="host-c's workload healthy again")

    def test_clean_stop_removes_the_hosts_services_at_once(self):
        a, b, c = self.two_hosts_serving()
        t0 = time.monotonic()
        self.assertEqual(c.stop(), 0, c.logs())
        self.assertNotIn("host-c", {e["node"] for e in self.api_endpoints()})
        within(self, t0, 1.0, "a clean stop leaving the catalog")
        wait_for(lambda: self.remote_endpoints(a) == 1, timeout=5, what="host-a forgetting it")
        self.assertEqual(self.backends_answering(), {"api-b"})

    # -- several instances and versions of a service on one host --

    def test_instances_and_versions_on_one_host_are_each_reachable_through_mtls(self):
        a = self.caller()
        v1, v2a, v2b = self.workload("v1"), self.workload("v2a"), self.workload("v2b")
        b = self.host("host-b", "127.0.0.3", services={
            "api-v1.json": self.api(v1.port, "v1"),
            "api-v2a.json": self.api(v2a.port, "v2"),
            "api-v2b.json": self.api(v2b.port, "v2")})
        for h in (b, a):
            h.start()
        wait_for(lambda: self.remote_endpoints(a) >= 3, timeout=10, what="three 'api's at host-a")
        self.assertEqual(sorted(e["port"] for e in self.api_endpoints()),
                         sorted([v1.port, v2a.port, v2b.port]))

        def route(version):
            a.write_resource("route.json", {"kind": "Route", "name": "api", "namespace": "shop",
                                            "spec": {"rules": [{"destinations": [
                                                {"service": "api",
                                                 "subset": {"version": version}}]}]}})
        # All to v1: host-b's agent hands every call to the v1 instance, not its first one.
        route("v1")
        wait_for(lambda: self.backends_answering(6) == {"v1"}, timeout=10, what="only v1")
        self.assertEqual(self.backends_answering(40), {"v1"})
        # All to v2: both v2 instances, each reached by its port.
        route("v2")
        wait_for(lambda: "v1" not in self.backends_answering(6), timeout=10, what="only v2")
        self.assertEqual(self.backends_answering(40), {"v2a", "v2b"})

    # -- the watch answers changes only --

    def test_watch_answers_changes_only(self):
        b = self.host("host-b", "127.0.0.3", services={"api.json": self.api(free_port())})
        b.start()
        wait_for(lambda: self.api_endpoints(), timeout=10, what="host-b's report")
        whole = self.catalog()
        self.assertTrue(whole["full"])
        index = whole["index"]
        t0 = time.monotonic()
        b.write_service("db.json", {"service": {"name": "db", "namespace": "shop",
                                                "port": free_port()}})
        status, delta = self.ctl.request("GET", f"/v1/catalog?index={index}&wait=20s",
                                         admin=True)
        within(self, t0, 1.0, "a blocking query answered on a change")
        self.assertEqual(status, 200, delta)
        self.assertFalse(delta["full"])
        self.assertGreater(delta["index"], index)
        self.assertEqual([s["name"] for s in delta["services"]], ["db"])
        self.assertEqual(delta["removed"], [])
        b.remove_service("db.json")
        # Another change to db (its health, say) may come first: follow the changes until
        # the removal, then the answer since the first delta holds the removal only.
        since = delta["index"]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status, step = self.ctl.request("GET", f"/v1/catalog?index={since}&wait=20s",
                                            admin=True)
            self.assertEqual(status, 200, step)
            if "shop/db" in step["removed"]:
                break
            since = step["index"]
        status, delta2 = self.ctl.request("GET", f"/v1/catalog?index={delta['index']}&wait=20s",
                                          admin=True)
        self.assertEqual((delta2["services"], delta2["removed"]), ([], ["shop/db"]))
        # An index from before this controller's start gets the whole catalog.
        status, old = self.ctl.request("GET", "/v1/catalog?index=5&wait=20s", admin=True)
        self.assertTrue(old["full"])
        self.assertEqual([s["name"] for s in old["services"]], ["api"])

    # -- what a report may say --

    def test_reports_are_checked(self):
        b = self.host("host-b", "127.0.0.3", services={"api.json": self.api(free_port())})
        b.start()
        wait_for(lambda: self.api_endpoints(), timeout=10, what="host-b's report")
        cert = os.path.join(b.state_dir, "certs", "node.crt")
        key = os.path.join(b.state_dir, "certs", "node.key")
        good = {"namespace": "shop", "name": "api", "port": 8080,
                "identity": f"spiffe://{TD}/ns/shop/sa/api"}
        cases = [
            ({**good, "identity": f"spiffe://{TD}/ns/bank/sa/vault"}, "identity"),
            ({**good, "identity": f"spiffe://{TD}/node/host-c"}, "identity"),
            ({**good, "labels": {"version": "v 1"}}, "labels"),
            ({**good, "colour": "red"}, "unknown key 'colour'"),
            ({**good, "port": 0}, "port"),
            ({**good, "name": "API!"}, "name"),
        ]
        for svc, why in cases:
            status, body = self.ctl.request(
                "POST", "/v1/report", {"address": "127.0.0.3", "services": [svc]},
                cert=cert, key=key)[:2]
            self.assertEqual(status, 400, (svc, body))
            self.assertIn(why, json.dumps(body), svc)
        # A report at an address the node does not own is refused as before.
        status, body = self.ctl.request("POST", "/v1/report",
                                        {"address": "10.9.9.9", "services": [good]},
                                        cert=cert, key=key)[:2]
        self.assertEqual(status, 403, body)
        # The catalog still holds host-b's last good report.
        self.assertEqual([e["node"] for e in self.api_endpoints()], ["host-b"])


if __name__ == "__main__":
    main()
