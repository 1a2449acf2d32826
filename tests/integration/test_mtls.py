#!/usr/bin/env python3
"""Agent-to-agent mTLS on loopback: two agents ("hosts" 127.0.0.1 and 127.0.0.2) with
SPIFFE identities from a shared local CA; a service on A calls a service on B through both
agents; authorization by caller identity; refusals of bad peers; rotation under load."""
import json
import os
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import unittest

from backends import Backend
from http_backend import HttpBackend
from httptest import Client
from meshtest import SLOW, AgentTest, free_port, main, wait_for
from pki import Pki

TD = "mesh.test"


def spiffe(ns, name):
    return f"spiffe://{TD}/ns/{ns}/svc/{name}"


class MtlsTest(AgentTest):
    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="mesh-pki-")
        self.pki = Pki(self.tmp)
        self.backends = []

    def tearDown(self):
        for b in self.backends:
            b.stop()
        super().tearDown()

    def identity(self, **kw):
        idn = {"mode": "standalone", "ca_cert": self.pki.cert, "ca_key": self.pki.key}
        idn.update(kw)
        return idn

    def pair(self, protocol="http", identity_a=None, identity_b=None, authz=None,
             access_log=True):
        """Agent B hosts 'api' (a real backend); agent A hosts 'web', which calls api on
        self.port. Returns (a, b, backend)."""
        if protocol == "http":
            backend = HttpBackend("api-b").start()
        else:
            backend = Backend("api-b").start()
        self.backends.append(backend)
        self.b_inbound = free_port()
        b_cfg = {"trust_domain": TD, "identity": identity_b or self.identity(),
                 "listeners": {"outbound_http": f"127.0.0.2:{free_port()}",
                               "inbound": f"127.0.0.2:{self.b_inbound}"}}
        if access_log:
            b_cfg["proxy"] = {"workers": 2, "access_log": "stdout"}
        b = self.agent(name="host-b", config=b_cfg, services={
            "api.json": {"service": {"name": "api", "namespace": "shop", "protocol": protocol,
                                     "port": backend.port}}})
        if authz:
            b.write_resource("authz.json", {"kind": "AuthorizationPolicy", "name": "api",
                                            "namespace": "shop", "spec": authz})
        self.port = free_port()
        a_cfg = {"trust_domain": TD, "identity": identity_a or self.identity(),
                 "listeners": {"outbound_http": f"127.0.0.1:{free_port()}",
                               "inbound": f"127.0.0.1:{free_port()}"}}
        a = self.agent(name="host-a", config=a_cfg, services={
            "web.json": {"service": {"name": "web", "namespace": "shop", "port": free_port(),
                                     "upstreams": [{"service": "api", "bind_port": self.port,
                                                    "protocol": protocol}]}},
            "api.json": {"service": {"name": "api", "namespace": "shop", "protocol": protocol,
                                     "endpoints": [{"address": "127.0.0.2",
                                                    "port": backend.port,
                                                    "mesh_port": self.b_inbound}]}}})
        b.start()
        a.start()
        wait_for(lambda: listening("127.0.0.2", self.b_inbound), what="B's mTLS listener")
        wait_for(lambda: listening("127.0.0.1", self.port), what="A's upstream listener")
        return a, b, backend

    def test_http_call_crosses_mtls_with_identities(self):
        a, b, backend = self.pair()
        c = Client(self.port, host="api")
        for i in range(20):
            status, _, echo = c.echo(f"/hello/{i}")
            self.assertEqual(status, 200)
            self.assertEqual(echo["backend"], "api-b")
        # B saw A's service identity, in its access log and its handshake counter.
        wait_for(lambda: spiffe("shop", "web") in b.logs(), what="B's access log line")
        line = [json.loads(l) for l in b.logs().splitlines()
                if l.startswith("{") and '"downstream_identity"' in l][-1]
        self.assertEqual(line["downstream_identity"], spiffe("shop", "web"))
        self.assertGreaterEqual(b.metric("mesh_proxy_tls_handshakes_total", direction="inbound",
                                         result="ok"), 1)
        self.assertGreaterEqual(a.metric("mesh_proxy_tls_handshakes_total",
                                         direction="outbound", result="ok"), 1)
        # Keep-alive: 20 requests, not 20 handshakes.
        self.assertLessEqual(a.metric("mesh_proxy_tls_handshakes_total", direction="outbound",
                                      result="ok"), 2)
        # Keys stay on the host, 0600; the identity API and the expiry gauge show them.
        certs = os.path.join(a.state_dir, "certs")
        for f in os.listdir(certs):
            if f.endswith(".key"):
                self.assertEqual(os.stat(os.path.join(certs, f)).st_mode & 0o777, 0o600)
        ids = [c["id"] for c in a.json("/v1/identity")["certificates"]]
        self.assertIn(spiffe("shop", "web"), ids)
        self.assertIn(f"spiffe://{TD}/node/host-a", ids)
        self.assertGreater(a.metric("mesh_cert_seconds_left"), 3600)

    def test_tcp_call_crosses_mtls(self):
        a, b, backend = self.pair(protocol="tcp")
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5 * SLOW)
        f = s.makefile("rb")
        self.assertEqual(f.readline(), b"api-b\n")
        s.sendall(b"ping\n")
        self.assertEqual(f.readline(), b"ping\n")
        # Half-close crosses the TLS hop: the backend sees EOF and closes back.
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(f.read(), b"")
        s.close()
        self.assertGreaterEqual(b.metric("mesh_proxy_tls_handshakes_total", direction="inbound",
                                         result="ok"), 1)

    def test_deny_rule_blocks_http_with_403(self):
        a, b, _ = self.pair(authz={"deny": [{"principals": [spiffe("shop", "web")],
                                             "match": [{"path": {"prefix": "/admin"}}]}]})
        c = Client(self.port, host="api")
        self.assertEqual(c.echo("/public")[0], 200)
        status, _, body = c.request(path="/admin/x")
        self.assertEqual(status, 403)
        self.assertIn(b"RBAC", body)
        self.assertEqual(b.metric("mesh_proxy_authz_denied_total",
                                  destination="inbound:shop/api"), 1)

    def test_deny_rule_closes_tcp(self):
        a, b, backend = self.pair(protocol="tcp",
                                  authz={"allow": [{"namespaces": ["billing"]}]})
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5 * SLOW)
        self.assertEqual(s.recv(100), b"")  # closed without a byte from the backend
        s.close()
        wait_for(lambda: "denied " + spiffe("shop", "web") in b.logs(), what="the denial log")
        # (pair()'s readiness probe of A's port made a denied connection too)
        self.assertGreaterEqual(b.metric("mesh_proxy_authz_denied_total",
                                         destination="inbound:shop/api"), 1)
        self.assertEqual(backend.accepted, 0)


def listening(host, port):
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        return True
    except OSError:
        return False


if __name__ == "__main__":
    main()
