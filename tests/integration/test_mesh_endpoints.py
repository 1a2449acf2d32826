#!/usr/bin/env python3
"""Endpoints that live behind another host's agent (issue 25), with two agents on 127.0.0.1
("host A", the caller) and 127.0.0.2 ("host B", where 'api' runs), as test_mtls.py sets
them up. B's workload listens on 127.0.0.1 only: A cannot reach it except through B's agent,
as another host's workload could not be reached from outside it.

- Health of such an endpoint comes through its agent: A's checks ask B's agent over mTLS,
  and B checks its workload; never a probe from A to the workload's own address.
- When B's agent cannot reach its workload, its 503 is marked, so that A retries another
  endpoint (by default) and counts the failure against B's endpoint."""
import os
import shutil
import socket
import ssl
import tempfile

from http_backend import HttpBackend
from httptest import Client
from meshtest import BackendTest, free_port, main, wait_for
from pki import Pki

TD = "mesh.test"


class MeshEndpointTest(BackendTest):
    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="mesh-pki-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.pki = Pki(self.tmp)

    def identity(self):
        return {"mode": "standalone", "ca_cert": self.pki.cert, "ca_key": self.pki.key}

    def pair(self, policy=None, local_endpoint=False):
        """B hosts 'api' (self.workload); A's 'web' calls api on self.port. api's endpoints
        at A: B's (behind its agent) and, with local_endpoint, a plain one (self.local)."""
        self.workload = HttpBackend("api-b").start()
        self.backends.append(self.workload)
        self.b_inbound = free_port()
        b = self.agent(name="host-b", config={
            "trust_domain": TD, "identity": self.identity(),
            "node": {"name": "host-b", "zone": "zone-a", "address": "127.0.0.2"},
            "listeners": {"outbound_http": f"127.0.0.2:{free_port()}",
                          "inbound": f"127.0.0.2:{self.b_inbound}"}},
            services={"api.json": {"service": {"name": "api", "namespace": "shop",
                                               "protocol": "http",
                                               "port": self.workload.port}}})
        eps = [{"address": "127.0.0.2", "port": self.workload.port,
                "mesh_port": self.b_inbound}]
        if local_endpoint:
            self.local = HttpBackend("api-local").start()
            self.backends.append(self.local)
            eps.append({"address": "127.0.0.1", "port": self.local.port})
        self.port = free_port()
        a = self.agent(name="host-a", config={
            "trust_domain": TD, "identity": self.identity(),
            "node": {"name": "host-a", "zone": "zone-a", "address": "127.0.0.1"},
            "listeners": {"outbound_http": f"127.0.0.1:{free_port()}",
                          "inbound": f"127.0.0.1:{free_port()}"}},
            services={
                "web.json": {"service": {"name": "web", "namespace": "shop", "port": free_port(),
                                         "upstreams": [{"service": "api", "bind_port": self.port,
                                                        "protocol": "http"}]}},
                "api.json": {"service": {"name": "api", "namespace": "shop", "protocol": "http",
                                         "endpoints": eps}}})
        if policy:
            a.write_resource("policy.json", {"kind": "DestinationPolicy", "name": "api",
                                             "namespace": "shop", "spec": policy})
        b.start()
        a.start()
        wait_for(lambda: self.call()[0] == 200, timeout=10, what="a first call through both agents")
        return a, b

    def call(self, path="/"):
        c = Client(self.port, host="api")
        try:
            return c.echo(path)
        finally:
            c.close()

    def healthy(self, a):
        return a.metric("mesh_proxy_endpoints_healthy", destination="shop/api")

    def checks_done(self, a, n):
        """Waits until A made n more health checks."""
        start = a.metric("mesh_proxy_health_checks_total") or 0
        wait_for(lambda: (a.metric("mesh_proxy_health_checks_total") or 0) >= start + n,
                 timeout=20, what=f"{n} more health checks")

    # -- health through the agent --

    def test_tcp_check_goes_through_the_remote_agent(self):
        a, b = self.pair(policy={"health_check": {
            "interval": "1500ms", "timeout": "1s", "unhealthy_threshold": 1,
            "healthy_threshold": 1}})
        # B's workload is up: several checks later, A still counts the endpoint healthy
        # (before: A probed 127.0.0.2:<workload port>, where nothing listens, and failed).
        self.checks_done(a, 3)
        self.assertEqual(self.healthy(a), 1)
        self.assertEqual(self.call()[0], 200)
        # The workload stops: B says so, and A marks the endpoint down.
        port = self.workload.port
        self.workload.stop()
        wait_for(lambda: self.healthy(a) == 0, timeout=20, what="the endpoint marked unhealthy")
        # Back: healthy again.
        self.workload = HttpBackend("api-b", port=port).start()
        self.backends.append(self.workload)
        wait_for(lambda: self.healthy(a) == 1, timeout=20, what="the endpoint healthy again")
        self.assertGreaterEqual(b.metric("mesh_proxy_health_queries_total"), 5)

    def test_http_check_goes_through_the_remote_agent(self):
        a, b = self.pair(policy={"health_check": {
            "interval": "1500ms", "timeout": "1s", "unhealthy_threshold": 1,
            "healthy_threshold": 1, "http_path": "/health", "expected_statuses": "200-299"}})
        self.checks_done(a, 3)
        self.assertEqual(self.healthy(a), 1)
        checks = [r for r in self.workload.requests if r[1] == "/health"]
        self.assertTrue(checks, "B's agent asked its workload")
        self.assertEqual(checks[0][2]["host"], "api")
        self.workload.health_status = 503  # the workload says it is sick
        wait_for(lambda: self.healthy(a) == 0, timeout=20, what="the endpoint marked unhealthy")
        self.workload.health_status = 200
        wait_for(lambda: self.healthy(a) == 1, timeout=20, what="the endpoint healthy again")

    def ask(self, cert, key, path="/health", tcp=False):
        """A health query to B's mTLS port as `cert`; returns the status line."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_verify_locations(self.pki.cert)
        ctx.load_cert_chain(cert, key)
        ctx.set_alpn_protocols(["mesh-health"])
        raw = socket.create_connection(("127.0.0.2", self.b_inbound), timeout=5)
        with ctx.wrap_socket(raw, server_hostname="api.shop") as s:
            self.assertEqual(s.selected_alpn_protocol(), "mesh-health")
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: api\r\n".encode() +
                      (b"x-mesh-health-check: tcp\r\n" if tcp else b"") + b"\r\n")
            data = b""
            while b"\r\n" not in data:
                d = s.recv(1000)
                if not d:
                    break
                data += d
            return data.split(b"\r\n")[0].decode()

    def test_health_queries_only_from_agents_and_only_plain_paths(self):
        a, b = self.pair()
        node = self.pki.leaf("node-x", [f"spiffe://{TD}/node/host-x"])
        svc = self.pki.leaf("svc-x", [f"spiffe://{TD}/ns/shop/svc/evil"])
        self.assertTrue(self.ask(*node).startswith("HTTP/1.1 200"))
        self.assertTrue(self.ask(*node, tcp=True).startswith("HTTP/1.1 200"))
        # A workload's SVID may not make B's agent send GETs to its workload.
        self.assertTrue(self.ask(*svc).startswith("HTTP/1.1 403"))
        # Paths that normalization would change are refused, not forwarded.
        for path in ("/x/../admin", "//admin", "/./admin", "/%61dmin", "/a/.."):
            self.assertTrue(self.ask(*node, path=path).startswith("HTTP/1.1 400"), path)
        health = [r[1] for r in self.workload.requests if r[1] != "/"]
        self.assertEqual(health, ["/health"])

    # -- failures marked by the remote agent --

    def test_unreachable_workload_is_retried_elsewhere_and_counted(self):
        a, b = self.pair(local_endpoint=True, policy={
            "load_balancer": "round_robin",
            "outlier_detection": {"consecutive_5xx": 3, "base_ejection_time": "1h"}})
        self.workload.stop()  # B's agent is up; its workload is not
        c = Client(self.port, host="api")
        for i in range(20):
            status, headers, echo = c.echo(f"/{i}")
            self.assertEqual(status, 200, echo)  # retried on the other endpoint by default
            self.assertEqual(echo["backend"], "api-local")
            self.assertNotIn("x-mesh-upstream-failure", headers)
        c.close()
        # Counted against B's endpoint: ejected after 3 in a row.
        self.assertEqual(a.metric("mesh_proxy_ejections_total", destination="shop/api"), 1)

    def test_unreachable_workload_mark_never_reaches_the_client(self):
        a, b = self.pair(policy={"outlier_detection": {"enabled": False}})
        self.workload.stop()
        c = Client(self.port, host="api")
        status, headers, body = c.request(path="/", method="POST", body=b"x")
        self.assertEqual(status, 503, body)
        self.assertNotIn("x-mesh-upstream-failure", headers)
        # Nothing reached the workload, so even a POST was tried again (within attempts).
        self.assertGreaterEqual(a.metric("mesh_http_retries_total", destination="shop/api"), 2)
        c.close()


if __name__ == "__main__":
    main()
