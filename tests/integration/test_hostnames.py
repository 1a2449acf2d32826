#!/usr/bin/env python3
"""Host names as endpoint addresses (issue 15), against the fake DNS server
(tests/fakes/fake_dns.py) named in the agent's dns.servers:

- a service file's endpoint "api.svc.test" that resolves to two loopback addresses sends
  traffic to both backends; when the answer changes, traffic follows once the TTL ran out;
- when the server fails (SERVFAIL, then no answer at all) the last answer keeps serving and
  the failure shows in a warning, in mesh_dns_resolutions_total and in /v1/status;
- a name that never resolved gives no endpoints and is reported; a malformed name is
  refused where the file is read;
- Consul instances whose Service.Address or Node.Address is a name resolve the same way,
  labels (Meta) kept."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fakes"))

from fake_consul import FakeConsul  # noqa: E402
from fake_dns import FakeDns  # noqa: E402
from http_backend import HttpBackend  # noqa: E402
from httptest import HttpTest  # noqa: E402
from meshtest import free_port, main, wait_for  # noqa: E402

NAME = "api.svc.test"


class HostnameTest(HttpTest):
    def setUp(self):
        super().setUp()
        self.dns = FakeDns().start()
        self.addCleanup(self.dns.stop)

    def backend_on(self, name, ip, port):
        b = HttpBackend(name, port=port)
        b.host = ip
        b.start()
        self.backends.append(b)
        return b

    def start(self, endpoints):
        return self.http_agent([], config={"dns": {"servers": [self.dns.server],
                                                   "timeout": "300ms"}},
                               extra={"api.json": {"service": {
                                   "name": "api", "protocol": "http",
                                   "endpoints": endpoints}}})

    def reached(self, n=20):
        """The backends that n requests reached (by name)."""
        c = self.client()
        seen = set()
        try:
            for _ in range(n):
                status, _, echo = c.echo("/")
                if status == 200:
                    seen.add(echo["backend"])
        finally:
            c.close()
        return seen

    def dns_name(self, a, name=NAME):
        for n in a.json("/v1/status")["dns"]["names"]:
            if n["name"] == name:
                return n
        return None

    def test_every_address_ttl_and_failures(self):
        port = free_port()
        self.backend_on("b2", "127.0.0.2", port)
        self.backend_on("b3", "127.0.0.3", port)
        self.backend_on("b4", "127.0.0.4", port)
        self.dns.set(NAME, ["127.0.0.2", "127.0.0.3"], ttl=1)
        a = self.start([{"address": NAME, "port": port, "labels": {"version": "v1"}}])

        # Both addresses of the answer are endpoints: traffic reaches both backends.
        wait_for(lambda: self.reached() == {"b2", "b3"}, timeout=10,
                 what="traffic on both addresses of the name")
        st = self.dns_name(a)
        self.assertEqual(st["state"], "ok")
        self.assertEqual(st["addresses"], ["127.0.0.2", "127.0.0.3"])
        self.assertEqual(st["ttl"], 1)
        self.assertGreaterEqual(self.dns.queries(NAME, 1), 1)   # A
        self.assertGreaterEqual(self.dns.queries(NAME, 28), 1)  # and AAAA
        # The catalog shows the addresses with the name they came from, labels kept.
        eps = a.json("/v1/services/default/api")["endpoints"]
        self.assertEqual(sorted(e["address"] for e in eps), ["127.0.0.2", "127.0.0.3"])
        self.assertTrue(all(e["host"] == NAME and e["labels"]["version"] == "v1" for e in eps),
                        eps)

        # The answer changes: after its TTL (1 s), traffic follows.
        self.dns.set(NAME, ["127.0.0.4"], ttl=1)
        wait_for(lambda: self.reached() == {"b4"}, timeout=10,
                 what="traffic following the new answer")

        # The server fails: the last answer keeps serving, the failure is reported.
        ok_before = a.metric("mesh_dns_resolutions_total", result="success")
        self.assertGreaterEqual(ok_before, 2)
        self.dns.fail("servfail")
        wait_for(lambda: (a.metric("mesh_dns_resolutions_total", result="failure") or 0) >= 2,
                 timeout=15, what="failed resolutions counted")
        self.assertEqual(self.reached(), {"b4"})
        st = self.dns_name(a)
        self.assertEqual(st["state"], "failing")
        self.assertEqual(st["addresses"], ["127.0.0.4"])
        self.assertTrue(st["error"])
        self.assertEqual(a.metric("mesh_dns_names", state="failing"), 1)
        warnings = [ln for ln in a.logs().splitlines()
                    if "cannot resolve host name 'api.svc.test'" in ln]
        self.assertEqual(len(warnings), 1, "one warning per change of state:\n" + a.logs())
        self.assertIn("keeping its 1 last addresses", warnings[0])

        # No answer at all (timeouts): still the last answer; a new error is news once.
        failed = a.metric("mesh_dns_resolutions_total", result="failure")
        self.dns.fail("timeout")
        wait_for(lambda: a.metric("mesh_dns_resolutions_total", result="failure") > failed,
                 timeout=30, what="a timed-out resolution counted")
        self.assertEqual(self.reached(), {"b4"})

        # The server answers again: the name recovers and says so.
        self.dns.fail(None)
        self.dns.set(NAME, ["127.0.0.2", "127.0.0.4"], ttl=1)
        wait_for(lambda: self.dns_name(a)["state"] == "ok", timeout=40, what="recovery")
        wait_for(lambda: self.reached() == {"b2", "b4"}, timeout=10, what="the new answer")
        self.assertIn("host name 'api.svc.test' resolves again", a.logs())

    def test_reload_keeps_the_answers(self):
        """A reload that restarts the registry (its old slot stops before the new one reports)
        finds the names' answers: no endpoint is lost while the DNS server is unreachable."""
        port = free_port()
        self.backend_on("b2", "127.0.0.2", port)
        self.dns.set(NAME, ["127.0.0.2"], ttl=300)
        a = self.start([{"address": NAME, "port": port}])
        wait_for(lambda: self.reached(5) == {"b2"}, timeout=10, what="traffic on the name")
        asked = self.dns.queries(NAME)
        self.dns.fail("timeout")
        a.config["registries"][0]["poll_interval"] = "1h"  # a new registry slot
        a.write_config()
        a.reload()
        wait_for(lambda: a.json("/v1/status")["registries"][0]["synced"], what="the new registry")
        self.assertEqual(self.reached(5), {"b2"})
        self.assertEqual(self.dns_name(a)["state"], "ok")
        self.assertEqual(self.dns.queries(NAME), asked)  # the TTL has not run out

    def test_restart_serves_the_last_answer(self):
        """After a restart with the DNS server unreachable, the last-known-good file's
        addresses of the name keep serving (and the name is reported failing)."""
        port = free_port()
        self.backend_on("b2", "127.0.0.2", port)
        self.backend_on("b3", "127.0.0.3", port)
        self.dns.set(NAME, ["127.0.0.2", "127.0.0.3"], ttl=300)
        a = self.start([{"address": NAME, "port": port}])
        wait_for(lambda: self.reached() == {"b2", "b3"}, timeout=10, what="traffic on the name")
        a.stop()
        self.dns.fail("timeout")
        a.start()
        self.assertEqual(self.reached(), {"b2", "b3"})
        wait_for(lambda: self.dns_name(a)["state"] == "failing", timeout=20,
                 what="the name reported failing")
        st = self.dns_name(a)
        self.assertEqual(st["addresses"], ["127.0.0.2", "127.0.0.3"])
        self.assertTrue(st["from_last_known_good"])
        self.assertEqual(self.reached(), {"b2", "b3"})

    def test_unresolved_name_gives_no_endpoints(self):
        port = free_port()
        self.backend_on("b1", "127.0.0.1", port)
        a = self.start([{"address": "missing.svc.test", "port": port},
                        {"address": "127.0.0.1", "port": port}])
        wait_for(lambda: self.reached(5) == {"b1"}, timeout=10, what="the address endpoint")
        wait_for(lambda: (self.dns_name(a, "missing.svc.test") or {}).get("state") ==
                 "unresolved", timeout=10, what="the name reported unresolved")
        self.assertEqual(a.metric("mesh_dns_names", state="unresolved"), 1)
        eps = a.json("/v1/services/default/api")["endpoints"]
        self.assertEqual([e["address"] for e in eps], ["127.0.0.1"])
        self.assertIn("cannot resolve host name 'missing.svc.test'", a.logs())
        self.assertIn("it has no endpoints until it resolves", a.logs())

    def test_malformed_name_is_refused_where_read(self):
        port = free_port()
        a = self.start([{"address": "bad_name.svc.test", "port": port}])
        wait_for(lambda: "bad_name.svc.test" in a.logs(), timeout=10, what="the file refused")
        log = a.logs()
        self.assertIn("api.json", log)
        self.assertIn("not an IPv4 or IPv6 address nor a host name", log)
        self.assertEqual(self.dns.queries(), 0)

    def test_consul_addresses_may_be_names(self):
        port = free_port()
        self.backend_on("b5", "127.0.0.5", port)
        self.backend_on("b6", "127.0.0.6", port)
        self.dns.set("web.consul.test", ["127.0.0.5"], ttl=1)
        self.dns.set("node-b.consul.test", ["127.0.0.6", "::1"], ttl=1)
        fake = FakeConsul().start()
        self.addCleanup(fake.stop)
        fake.add_instance("api", "web.consul.test", port, node="n1", meta={"version": "v2"})
        # No Service.Address: the node's, a name too.
        fake.add_instance("api", "", port, node="n2", node_address="node-b.consul.test")
        self.port = free_port()
        a = self.agent(config={"dns": {"servers": [self.dns.server], "timeout": "300ms"}},
                       services={"app.json": {"service": {
                           "name": "app", "port": free_port(), "upstreams": [
                               {"service": "api", "bind_port": self.port,
                                "protocol": "http"}]}}})
        a.config["registries"].append({"type": "consul", "name": "consul",
                                       "address": fake.address, "register": False,
                                       "min_interval": "20ms"})
        a.start()

        def addrs():
            svc = a.services().get("default/api") or {"endpoints": []}
            return sorted((e["address"], e.get("host")) for e in svc["endpoints"])
        wait_for(lambda: addrs() == [("127.0.0.5", "web.consul.test"),
                                     ("127.0.0.6", "node-b.consul.test"),
                                     ("::1", "node-b.consul.test")],
                 timeout=10, what="Consul's names resolved")
        eps = a.services()["default/api"]["endpoints"]
        self.assertEqual([e["labels"].get("version") for e in eps
                          if e["address"] == "127.0.0.5"], ["v2"])
        wait_for(lambda: self.listening(self.port), what="the upstream listener")
        # ::1 has no backend (a failed try moves on): both named hosts take traffic.
        wait_for(lambda: {"b5", "b6"} <= self.reached(), timeout=10,
                 what="traffic to both Consul instances")


if __name__ == "__main__":
    main()
