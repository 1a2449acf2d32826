"""The Consul registry adapter against the strict fake Consul API (tests/fakes/fake_consul.py):
discovery through blocking queries, health, index resets, ACL behaviour, registration of
this host's services, and merging with the static registry."""
import os
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fakes"))

from fake_consul import MISSING, FakeConsul  # noqa: E402
from meshtest import (within, AGENT, AgentTest, check_promtool, free_port, main,  # noqa: E402
                      wait_for)
from pki import Pki  # noqa: E402

TOKEN = "8f2d8e4c-6b0a-4f7e-9a55-3a9d1c2b7e10"


def endpoints(agent, name, ns="default"):
    s = agent.services().get(f"{ns}/{name}")
    return sorted((e["address"], e["port"]) for e in s["endpoints"]) if s else []


class ConsulTest(AgentTest):
    def setUp(self):
        super().setUp()
        self.fakes = []

    def tearDown(self):
        super().tearDown()
        for f in self.fakes:
            f.stop()
        for f in self.fakes:
            self.assertEqual(f.token_in_query, 0, "a token was sent in a query string")

    def consul(self, **kw):
        f = FakeConsul(**kw).start()
        self.fakes.append(f)
        return f

    def consul_agent(self, fake, services=None, static=True, env=None, **reg):
        entry = {"type": "consul", "name": "consul", "address": fake.address,
                 "min_interval": "20ms", "register": False}
        entry.update(reg)
        a = self.agent(services=services, env=env, name="host-a")
        a.config["registries"] = (a.config["registries"] if static else []) + [entry]
        a.config["readiness"] = {"registry_sync_timeout": "3s"}
        return a

    # -- discovery --

    def test_services_and_health_changes_reach_the_catalog_quickly(self):
        fake = self.consul()
        fake.add_instance("web", "10.0.0.1", 8080, node="n1", meta={"zone": "z1", "version": "v1"})
        web2 = fake.add_instance("web", "10.0.0.2", 8080, node="n2")
        a = self.consul_agent(fake).start()
        wait_for(lambda: endpoints(a, "web") == [("10.0.0.1", 8080), ("10.0.0.2", 8080)],
                 what="web's two instances")
        e = {x["address"]: x for x in a.services()["default/web"]["endpoints"]}
        self.assertEqual(e["10.0.0.1"]["zone"], "z1")
        self.assertEqual(e["10.0.0.1"]["node"], "n1")
        self.assertEqual(e["10.0.0.1"]["labels"]["version"], "v1")
        self.assertEqual(a.json("/v1/status")["registries"][-1]["synced"], True)

        # A failing check removes the endpoint, a passing one restores it: each within 200 ms.
        for status, want in (("critical", [("10.0.0.1", 8080)]),
                             ("passing", [("10.0.0.1", 8080), ("10.0.0.2", 8080)])):
            t0 = time.monotonic()
            fake.set_check(web2, status, node="n2")
            wait_for(lambda: endpoints(a, "web") == want, interval=0.005,
                     what=f"the check turning {status}")
            within(self, t0, 0.5, f"the check turning {status}")
        # A new service, and one that leaves.
        t0 = time.monotonic()
        db = fake.add_instance("db", "10.0.1.1", 5432)
        wait_for(lambda: endpoints(a, "db") == [("10.0.1.1", 5432)], interval=0.005,
                 what="a new service")
        within(self, t0, 0.5, "a new service")
        fake.remove_instance(db)
        wait_for(lambda: "default/db" not in a.services(), what="the service leaving")
        self.assertEqual(a.metric("mesh_consul_watched_services", registry="consul"), 1)
        # Blocking queries: an idle second costs no request beyond the ones waiting.
        t0 = time.monotonic()
        time.sleep(1)
        self.assertLessEqual(len(fake.requests_since(t0)), 2)

    def test_warning_instances_count_only_when_asked(self):
        fake = self.consul()
        fake.add_instance("api", "10.0.0.1", 80, node="n1")
        fake.add_instance("api", "10.0.0.2", 80, node="n2", status="warning")
        a = self.consul_agent(fake).start()
        wait_for(lambda: endpoints(a, "api") == [("10.0.0.1", 80)], what="passing only")
        b = self.consul_agent(fake, include_warning=True).start()
        wait_for(lambda: endpoints(b, "api") == [("10.0.0.1", 80), ("10.0.0.2", 80)],
                 what="warning instances too")

    def test_index_going_backwards_is_reset(self):
        fake = self.consul()
        fake.add_instance("web", "10.0.0.1", 80)
        # A query that starts after the restore, with the old higher index, waits its full
        # `wait` before its answer shows the index went back (as with Consul): keep it short.
        a = self.consul_agent(fake, wait="2s").start()
        wait_for(lambda: endpoints(a, "web") == [("10.0.0.1", 80)], what="web")
        fake.rewind_index(5)  # a snapshot restore
        fake.add_instance("web", "10.0.0.2", 80, node="n2")
        wait_for(lambda: endpoints(a, "web") == [("10.0.0.1", 80), ("10.0.0.2", 80)],
                 timeout=10, what="a change after the index went backwards")
        self.assertGreaterEqual(a.metric("mesh_consul_index_resets_total", registry="consul"), 1)
        # And no tight loop after it: the watches block again.
        time.sleep(0.3)
        t0 = time.monotonic()
        time.sleep(1)
        self.assertLessEqual(len(fake.requests_since(t0)), 3)

    def test_restart_keeps_the_catalog_until_consul_answers(self):
        fake = self.consul()
        fake.add_instance("web", "10.0.0.1", 80)
        a = self.consul_agent(fake).start()
        wait_for(lambda: endpoints(a, "web") == [("10.0.0.1", 80)], what="web")
        a.stop()
        fake.stop()  # Consul is down while the agent restarts
        a.start()
        # Served from the last-known-good catalog, not dropped.
        self.assertEqual(endpoints(a, "web"), [("10.0.0.1", 80)])
        time.sleep(1)
        self.assertEqual(endpoints(a, "web"), [("10.0.0.1", 80)])
        self.assertGreaterEqual(a.metric("mesh_consul_errors_total", registry="consul",
                                         kind="connect"), 1)
        fake.start()
        fake.remove_instance("web-10.0.0.1-80")
        fake.add_instance("api", "10.0.0.9", 80)
        wait_for(lambda: endpoints(a, "api") == [("10.0.0.9", 80)], timeout=10,
                 what="Consul back")
        wait_for(lambda: "default/web" not in a.services(), what="the full sync reaping web")

    def health_requests(self, fake, t0, name="web"):
        return len(fake.requests_since(t0, f"/v1/health/service/{name}"))

    def test_an_index_that_does_not_advance_is_rate_limited(self):
        # Nothing changes and each blocking query times out after `wait` with its index
        # unchanged, as Consul answers it. The token bucket (burst 2, then one per 15 s) lets
        # two such answers drive a new query at once, then no more than one per 15 s.
        fake = self.consul()
        fake.add_instance("web", "10.0.0.1", 80)
        t0 = time.monotonic()
        a = self.consul_agent(fake, wait="1s").start()
        wait_for(lambda: endpoints(a, "web") == [("10.0.0.1", 80)], what="web")
        # The first answer, then one query for each token of the burst.
        wait_for(lambda: self.health_requests(fake, t0) >= 4, timeout=10,
                 what="the first queries")
        t1 = time.monotonic()
        time.sleep(4)
        self.assertLessEqual(self.health_requests(fake, t1), 1,
                             "unchanged answers drove queries faster than the token bucket")
        self.assertLessEqual(len(fake.requests_since(t1, "/v1/catalog/services")), 1)
        self.assertGreaterEqual(a.metric("mesh_consul_rate_limited_total", registry="consul"), 1)

    def test_unchanged_answers_under_churn_are_rate_limited(self):
        # Churn that does not change what the agent reads: an instance that keeps failing is
        # registered and deregistered again and again. Each write moves the service's and
        # the catalog's index, so every blocking query returns, with the same passing
        # instances and the same service names.
        fake = self.consul()
        fake.add_instance("web", "10.0.0.1", 80)
        a = self.consul_agent(fake, unchanged_interval="5s").start()
        wait_for(lambda: endpoints(a, "web") == [("10.0.0.1", 80)], what="web")
        stop = threading.Event()

        def churn():
            while not stop.wait(0.05):
                sid = fake.add_instance("web", "10.0.0.2", 80, node="n2", status="critical")
                fake.remove_instance(sid, node="n2")

        t = threading.Thread(target=churn, daemon=True)
        self.addCleanup(t.join)
        self.addCleanup(stop.set)
        t0 = time.monotonic()
        t.start()
        wait_for(lambda: self.health_requests(fake, t0) >= 2, what="the burst")
        t1 = time.monotonic()
        time.sleep(4)
        self.assertLessEqual(self.health_requests(fake, t1), 2,
                             "unchanged answers drove queries faster than the token bucket")
        self.assertLessEqual(len(fake.requests_since(t1, "/v1/catalog/services")), 2)
        # A real change during the churn still arrives, within about unchanged_interval.
        fake.add_instance("web", "10.0.0.3", 80, node="n3")
        wait_for(lambda: endpoints(a, "web") == [("10.0.0.1", 80), ("10.0.0.3", 80)],
                 timeout=15, what="a change during the churn")
        stop.set()
        t.join()

    def test_answers_without_a_valid_index_are_errors_with_backoff(self):
        fake = self.consul()
        fake.add_instance("web", "10.0.0.1", 80)
        a = self.consul_agent(fake).start()
        wait_for(lambda: endpoints(a, "web") == [("10.0.0.1", 80)], what="web")
        for n, (header, words) in enumerate(((MISSING, "no X-Consul-Index"),
                                             ("12abc", "'12abc'"))):
            fake.index_header = header
            fake.add_instance("web", f"10.0.0.{n + 2}", 80, node=f"n{n + 2}")  # wakes the watches
            wait_for(lambda: words in a.logs(), what=f"the bad index reported ({words})")
            # An error, not an answer: the last good endpoints stay, and the watch backs off
            # (1 s, then 2 s, ...) instead of querying again with index 0 or 1 in a loop.
            t0 = time.monotonic()
            time.sleep(3)
            self.assertLessEqual(self.health_requests(fake, t0), 3)
            self.assertLessEqual(len(fake.requests_since(t0, "/v1/catalog/services")), 3)
            self.assertEqual(endpoints(a, "web"), [("10.0.0.1", 80)] if n == 0 else
                             [("10.0.0.1", 80), ("10.0.0.2", 80)])
            self.assertIn("X-Consul-Index", a.json("/v1/status")["registries"][-1]["last_error"])
            fake.index_header = None
            # The next retry, after at most four failures' backoff, takes the change.
            wait_for(lambda: ("10.0.0.%d" % (n + 2), 80) in endpoints(a, "web"), timeout=20,
                     what="the change once the index is back")
        self.assertGreaterEqual(a.metric("mesh_consul_errors_total", registry="consul",
                                         kind="decode"), 2)

    # -- ACLs --

    def test_acl_tokens_behave_as_consul_does(self):
        fake = self.consul(acl_tokens={TOKEN: {"read", "write"}})
        fake.add_instance("web", "10.0.0.1", 80)
        tokfile = os.path.join(self.agents[0].tmp if self.agents else "/tmp", "x")
        a = self.consul_agent(fake, env={"CONSUL_HTTP_TOKEN": TOKEN}).start()
        wait_for(lambda: endpoints(a, "web") == [("10.0.0.1", 80)], what="read with the token")
        self.assertTrue(all(r[4] for r in fake.requests), "every request carried the token")
        # The token file in the config wins over the environment; a wrong one gets 403.
        a.stop()
        tokfile = os.path.join(a.tmp, "consul.token")
        with open(tokfile, "w") as f:
            f.write("not-a-known-token\n")
        a.config["registries"][-1]["token_file"] = tokfile
        a.start()
        wait_for(lambda: "ACL not found" in a.logs(), what="the 403 in the log")
        self.assertIn("Consul does not know the token", a.logs())
        self.assertIn("token_file", a.logs())
        # The last good catalog stays, and the agent backs off instead of looping.
        self.assertEqual(endpoints(a, "web"), [("10.0.0.1", 80)])
        t0 = time.monotonic()
        time.sleep(3)
        self.assertLessEqual(len(fake.requests_since(t0)), 8)
        # A rotated token file (a new file renamed in) counts at the next attempt.
        with open(tokfile + ".new", "w") as f:
            f.write(TOKEN + "\n")
        os.rename(tokfile + ".new", tokfile)
        fake.add_instance("db", "10.0.1.1", 5432)
        wait_for(lambda: endpoints(a, "db") == [("10.0.1.1", 5432)], timeout=15,
                 what="the rotated token accepted")

    def test_an_answer_emptied_by_acls_keeps_the_catalog(self):
        fake = self.consul()
        fake.add_instance("web", "10.0.0.1", 80)
        a = self.consul_agent(fake).start()
        wait_for(lambda: endpoints(a, "web") == [("10.0.0.1", 80)], what="web")
        # ACLs switched on with default deny; the agent has no token: reads come back empty
        # with X-Consul-Results-Filtered-By-Acls. That is "not authorized", not "all gone".
        fake.acl_tokens = {TOKEN: {"read"}}
        fake.add_instance("web", "10.0.0.2", 80, node="n2")  # wakes the watches
        wait_for(lambda: "not authorized" in a.logs(), what="the filtered answer reported")
        self.assertEqual(endpoints(a, "web"), [("10.0.0.1", 80)])
        self.assertGreaterEqual(a.metric("mesh_consul_errors_total", registry="consul",
                                         kind="acl"), 1)
        self.assertIn("not authorized", a.json("/v1/status")["registries"][-1]["last_error"])

    # -- scale --

    def test_many_services_hold_a_bounded_number_of_connections(self):
        fake = self.consul()
        fake.add_many(1000, 2)
        a = self.consul_agent(fake, max_watches=40, rotation_wait="1s").start()
        wait_for(lambda: len(a.services()) == 1000, timeout=30, what="1000 services")
        self.assertLessEqual(fake.max_open_conns, 40 + 4)
        self.assertLessEqual(fake.total_conns, 40 + 8, "connections are reused")
        # A change in a service whose watch waits in the queue still arrives.
        fake.add_instance("svc-00999", "10.9.9.9", 20000, node="n-new")
        wait_for(lambda: ("10.9.9.9", 20000) in endpoints(a, "svc-00999"), timeout=60,
                 what="a change to a queued service")

    # -- registration --

    def test_registers_local_services_with_a_ttl_check(self):
        fake = self.consul()
        workload = socket.socket()
        workload.bind(("127.0.0.1", 0))
        workload.listen(16)
        port = workload.getsockname()[1]
        a = self.consul_agent(fake, services={"api.json": {"service": {
            "name": "api", "port": port, "protocol": "http"}}}, register=True, check_ttl="3s")
        a.config["node"]["address"] = "127.0.0.1"
        a.start()
        wait_for(lambda: fake.check_status("mesh-default-api:workload") == "passing",
                 what="the TTL check passing")
        reg = fake.agent_services["mesh-default-api"]
        self.assertEqual(reg["Name"], "api")
        self.assertEqual(reg["Port"], port)
        self.assertEqual(reg["Meta"]["mesh-managed-by"], "mesh-agent/host-a")
        self.assertEqual(reg["Meta"]["protocol"], "http")
        self.assertIn("DeregisterCriticalServiceAfter", reg["Check"])
        # Seen from Consul and from the files: one endpoint, merged (docs/catalog.md rule 2).
        wait_for(lambda: sorted(a.services()["default/api"]["registries"]) == ["consul", "files"],
                 what="the service from both registries")
        self.assertEqual(endpoints(a, "api"), [("127.0.0.1", port)])
        # The workload goes away: the agent's own probe fails the check.
        workload.close()
        wait_for(lambda: fake.check_status("mesh-default-api:workload") == "critical",
                 timeout=5, what="the check failing with the workload gone")
        self.assertGreaterEqual(a.metric("mesh_consul_check_updates_total", registry="consul"), 2)
        # Consul loses its state (an agent restart): the service is registered again.
        first = a.metric("mesh_consul_registrations_total", registry="consul")
        fake.lose_agent_state()
        wait_for(lambda: "mesh-default-api" in fake.agent_services, timeout=5,
                 what="re-registration after Consul forgot it")
        # Counted when Consul's answer comes back, a moment after the fake has stored it.
        wait_for(lambda: a.metric("mesh_consul_registrations_total", registry="consul") > first,
                 what="the registration counted")
        # A service it did not register is never touched; its own go on a clean stop.
        other = fake.add_instance("other", "127.0.0.1", 9)
        fake.agent_services[other] = {"Name": "other", "Meta": {}}
        a.stop()
        self.assertNotIn("mesh-default-api", fake.agent_services)
        self.assertIn(other, fake.agent_services)
        deregs = [r for r in fake.requests if r[2].startswith("/v1/agent/service/deregister/")]
        self.assertEqual([r[2] for r in deregs], ["/v1/agent/service/deregister/mesh-default-api"])

    def test_stale_registrations_of_an_earlier_run_are_removed(self):
        fake = self.consul()
        a = self.consul_agent(fake, services={"api.json": {"service": {"name": "api", "port": free_port()}}},
                              register=True)
        a.start()
        wait_for(lambda: "mesh-default-api" in fake.agent_services, what="api registered")
        a.kill()  # no clean stop: the registration stays behind
        a.exits.append(0)
        a.close()
        a.remove_service("api.json")
        a.write_service("db.json", {"service": {"name": "db", "port": free_port()}})
        a.start()
        wait_for(lambda: "mesh-default-db" in fake.agent_services, what="db registered")
        wait_for(lambda: "mesh-default-api" not in fake.agent_services, timeout=10,
                 what="the stale api registration removed")

    def test_missing_token_on_writes_is_refused_with_a_clear_error(self):
        fake = self.consul(acl_tokens={TOKEN: {"read"}})
        a = self.consul_agent(fake, services={"api.json": {"service": {"name": "api", "port": free_port()}}},
                              register=True, token=TOKEN)
        a.start()
        wait_for(lambda: "Permission denied" in a.logs(), what="the 403 on register")
        self.assertIn("registering service 'api' with Consul: not authorized", a.logs())
        t0 = time.monotonic()
        time.sleep(3)
        regs = fake.requests_since(t0, "/v1/agent/service/register")
        self.assertLessEqual(len(regs), 3, "backs off")

    # -- configuration --

    def test_environment_and_config_precedence(self):
        fake = self.consul(acl_tokens={TOKEN: {"read"}})
        fake.add_instance("web", "10.0.0.1", 80)
        # CONSUL_HTTP_ADDR gives the address when the config does not; a token file from the
        # environment wins over a token value from it.
        tmp = self.agent().tmp
        tokfile = os.path.join(tmp, "tok")
        with open(tokfile, "w") as f:
            f.write(TOKEN)
        a = self.consul_agent(fake, env={"CONSUL_HTTP_ADDR": f"http://{fake.address}",
                                         "CONSUL_HTTP_TOKEN": "wrong",
                                         "CONSUL_HTTP_TOKEN_FILE": tokfile})
        a.config["registries"][-1]["address"] = ""
        a.start()
        wait_for(lambda: endpoints(a, "web") == [("10.0.0.1", 80)], what="web")
        st = a.json("/v1/status")["registries"][-1]
        self.assertEqual(st["token_from"], "CONSUL_HTTP_TOKEN_FILE")
        self.assertEqual(st["address"], f"http://{fake.address}")

    def test_https_with_a_ca_and_a_client_certificate(self):
        pki = Pki(os.path.join(self.agent().tmp, "pki"), name="consul-ca")
        srv = pki.leaf("server", [], sans=["IP:127.0.0.1"])
        cli = pki.leaf("client", [])
        fake = self.consul(tls=(srv[0], srv[1], pki.cert))
        fake.add_instance("web", "10.0.0.1", 80)
        # As a Consul user sets it: the environment gives the CA and the client certificate.
        a = self.consul_agent(fake, env={"CONSUL_CACERT": pki.cert, "CONSUL_CLIENT_CERT": cli[0],
                                         "CONSUL_CLIENT_KEY": cli[1]})
        a.config["registries"][-1]["address"] = fake.url
        a.start()
        wait_for(lambda: endpoints(a, "web") == [("10.0.0.1", 80)], what="web over HTTPS")
        # A CA that did not sign Consul's certificate: a clear error, nothing learned.
        other = Pki(os.path.join(a.tmp, "other"), name="other-ca")
        b = self.consul_agent(fake, env={"CONSUL_CLIENT_CERT": cli[0],
                                         "CONSUL_CLIENT_KEY": cli[1]}, ca_file=other.cert)
        b.config["registries"][-1]["address"] = "127.0.0.1:%d" % fake.port
        b.config["registries"][-1]["tls"] = True
        b.start()
        wait_for(lambda: "certificate" in b.logs() and "does not answer" in b.logs(),
                 what="the TLS failure reported")
        self.assertEqual(endpoints(b, "web"), [])

    def test_tls_server_name_verifies_a_certificate_for_a_name(self):
        # Consul reached by IP, with a certificate for its name only (as Consul's own
        # "server.<dc>.<domain>" certificates are): CONSUL_TLS_SERVER_NAME is the name sent
        # (SNI) and verified, as Consul's CLI uses it.
        pki = Pki(os.path.join(self.agent().tmp, "pki"), name="consul-ca")
        srv = pki.leaf("server", [], sans=["DNS:server.dc1.consul"])
        fake = self.consul(tls=(srv[0], srv[1], None))
        fake.add_instance("web", "10.0.0.1", 80)
        a = self.consul_agent(fake, env={"CONSUL_CACERT": pki.cert,
                                         "CONSUL_TLS_SERVER_NAME": "server.dc1.consul"})
        a.config["registries"][-1]["address"] = fake.url
        a.start()
        wait_for(lambda: endpoints(a, "web") == [("10.0.0.1", 80)], timeout=10,
                 what="web over HTTPS, verified by name")
        self.assertIn("server.dc1.consul", fake.server_names)
        # The config key wins over the variable; a port in it is dropped, as Consul does.
        b = self.consul_agent(fake, env={"CONSUL_CACERT": pki.cert,
                                         "CONSUL_TLS_SERVER_NAME": "other.dc1.consul"},
                              tls_server_name="server.dc1.consul:8501")
        b.config["registries"][-1]["address"] = fake.url
        b.start()
        wait_for(lambda: endpoints(b, "web") == [("10.0.0.1", 80)], timeout=10,
                 what="web with the config's server name")
        # A name the certificate does not carry is refused.
        c = self.consul_agent(fake, env={"CONSUL_CACERT": pki.cert,
                                         "CONSUL_TLS_SERVER_NAME": "other.dc1.consul"})
        c.config["registries"][-1]["address"] = fake.url
        c.start()
        wait_for(lambda: "does not answer" in c.logs(), what="the wrong name refused")
        self.assertEqual(endpoints(c, "web"), [])

    def test_unix_socket_addresses(self):
        tmp = self.agent().tmp
        fake = self.consul(unix_path=os.path.join(tmp, "consul.sock"))
        fake.add_instance("web", "10.0.0.1", 80)
        # CONSUL_HTTP_ADDR=unix:///..., as the Consul CLI takes it; registration too.
        a = self.consul_agent(fake, services={"api.json": {"service": {
            "name": "api", "port": free_port()}}}, register=True,
            env={"CONSUL_HTTP_ADDR": fake.address})
        a.config["registries"][-1]["address"] = ""
        a.start()
        wait_for(lambda: endpoints(a, "web") == [("10.0.0.1", 80)], what="web over the socket")
        wait_for(lambda: "mesh-default-api" in fake.agent_services, what="api registered")
        self.assertEqual(a.json("/v1/status")["registries"][-1]["address"], fake.address)
        # The same in the config's address key.
        b = self.consul_agent(fake)
        b.start()
        wait_for(lambda: endpoints(b, "web") == [("10.0.0.1", 80)], what="the config's address")
        # A socket nobody listens on is a connection error, with the path in it.
        gone = f"unix://{tmp}/nobody.sock"
        c = self.consul_agent(fake, address=gone)
        c.start()
        wait_for(lambda: f"Consul at {gone} does not answer" in c.logs(),
                 what="the missing socket reported")

    def test_static_and_consul_merge_by_the_catalog_rules(self):
        fake = self.consul()
        fake.add_instance("api", "10.0.0.1", 80, node="n1", weights={"Passing": 7, "Warning": 1},
                          meta={"zone": "consul-zone"})
        fake.add_instance("api", "10.0.0.2", 80, node="n2")
        a = self.consul_agent(fake, services={"api.json": {"service": {
            "name": "api", "endpoints": [{"address": "10.0.0.1", "port": 80, "weight": 3,
                                          "zone": "file-zone"},
                                         {"address": "10.0.0.3", "port": 80}]}}})
        a.start()
        wait_for(lambda: len(endpoints(a, "api")) == 3, what="the union of both registries")
        s = a.services()["default/api"]
        self.assertEqual(s["registries"], ["files", "consul"])
        e = {x["address"]: x for x in s["endpoints"]}
        # The same address:port is one endpoint, its details from static (higher precedence).
        self.assertEqual((e["10.0.0.1"]["weight"], e["10.0.0.1"]["zone"]), (3, "file-zone"))
        self.assertEqual(e["10.0.0.1"]["labels"]["mesh/registry"], "files")
        self.assertEqual(e["10.0.0.2"]["labels"]["mesh/registry"], "consul")
        # merge: false on the Consul registry keeps the two apart: static wins the name alone.
        a.config["registries"][-1]["merge"] = False
        a.write_config()
        a.reload()
        wait_for(lambda: a.services()["default/api"]["merged"] is False, what="no merge")
        self.assertEqual(endpoints(a, "api"), [("10.0.0.1", 80), ("10.0.0.3", 80)])

    def test_metrics_pass_promtool(self):
        fake = self.consul()
        fake.add_instance("web", "10.0.0.1", 80)
        a = self.consul_agent(fake).start()
        wait_for(lambda: endpoints(a, "web"), what="web")
        body = a.get("/metrics")[2]
        for needle in [b'mesh_consul_watched_services{registry="consul"} 1',
                       b'mesh_consul_errors_total{registry="consul",kind="acl"} 0',
                       b'mesh_registry_synced{registry="consul",type="consul"} 1']:
            self.assertIn(needle, body)
        check_promtool(self, body)

    def test_validate_names_bad_settings(self):
        a = self.agent()
        a.config["registries"].append({"type": "consul", "address": "unix://x", "wait": "20m",
                                       "token_file": "/nonexistent/token", "consistncy": "x"})
        a.write_config()
        r = subprocess.run([AGENT, "validate", "--config", a.config_path],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn("$.registries[1].wait", r.stderr)
        self.assertIn("did you mean 'consistency'", r.stderr)
        r2 = subprocess.run([AGENT, "validate", "--config", a.config_path],
                            capture_output=True, text=True,
                            env=dict(os.environ, CONSUL_HTTP_SSL="maybe"))
        self.assertEqual(r2.returncode, 1)


if __name__ == "__main__":
    main()
