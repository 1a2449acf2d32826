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
from controllertest import Controller
from http_backend import HttpBackend
from httptest import Client
from meshtest import LATITUDE, within, SLOW, BackendTest, free_port, main, wait_for
from pki import Pki

TD = "mesh.test"


def spiffe(ns, name):
    return f"spiffe://{TD}/ns/{ns}/sa/{name}"


class MtlsTest(BackendTest):
    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="mesh-pki-")
        self.pki = Pki(self.tmp)

    def controller_identity(self, ctl, uses):
        """A join token from ctl (for every shop service) and the identity config using it.
        Its nodes may report 127.0.0.2 too: B's address, though B calls from 127.0.0.1."""
        r = ctl.meshctl("token", "create", "--services", spiffe("shop", "*"), "--node",
                        "host-*", "--uses", str(uses), "--addresses", "127.0.0.2")
        self.assertEqual(r.returncode, 0, r.stderr)
        token = os.path.join(self.tmp, "join.token")
        with open(token, "w") as f:
            f.write(r.stdout.strip().splitlines()[-1] + "\n")
        return {"mode": "controller", "controller": f"https://127.0.0.1:{ctl.port}",
                "controller_ca": ctl.ca, "join_token_file": token}

    def identity(self, **kw):
        idn = {"mode": "standalone", "ca_cert": self.pki.cert, "ca_key": self.pki.key}
        idn.update(kw)
        return idn

    def pair(self, protocol="http", identity_a=None, identity_b=None, authz=None,
             access_log=True, membership=False):
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
        b_cfg["node"] = {"name": "host-b", "zone": "zone-a", "address": "127.0.0.2"}
        b = self.agent(name="host-b", config=b_cfg, services={
            "api.json": {"service": {"name": "api", "namespace": "shop", "protocol": protocol,
                                     "port": backend.port}}})
        if authz:
            b.write_resource("authz.json", {"kind": "AuthorizationPolicy", "name": "api",
                                            "namespace": "shop", "spec": authz})
        self.port = free_port()
        a_cfg = {"node": {"name": "host-a", "zone": "zone-a", "address": "127.0.0.1"},
                 "trust_domain": TD, "identity": identity_a or self.identity(),
                 "listeners": {"outbound_http": f"127.0.0.1:{free_port()}",
                               "inbound": f"127.0.0.1:{free_port()}"}}
        a = self.agent(name="host-a", config=a_cfg, services={
            "web.json": {"service": {"name": "web", "namespace": "shop", "port": free_port(),
                                     "upstreams": [{"service": "api", "bind_port": self.port,
                                                    "protocol": protocol}]}},
            "api.json": {"service": {"name": "api", "namespace": "shop", "protocol": protocol,
                                     "endpoints": [dict({"address": "127.0.0.2",
                                                         "port": backend.port},
                                                        **({} if membership else
                                                           {"mesh_port": self.b_inbound}))]}}})
        b.start()
        a.start()
        try:
            wait_for(lambda: listening("127.0.0.2", self.b_inbound), what="B's mTLS listener")
            wait_for(lambda: listening("127.0.0.1", self.port), what="A's upstream listener")
        except AssertionError:
            raise AssertionError(f"listeners not up; B's log:\n{b.logs()}\nA's log:\n{a.logs()}"
                                 f"\nB's listeners: {b.json('/v1/proxy')['listeners']}")
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
        # Later connections resume the session (TLS 1.3 tickets): no certificates sent.
        for _ in range(4):
            s = socket.create_connection(("127.0.0.1", self.port), timeout=5 * SLOW)
            self.assertEqual(s.makefile("rb").readline(), b"api-b\n")
            s.close()
        self.assertGreaterEqual(a.metric("mesh_proxy_tls_resumed_total", direction="outbound"), 1)
        self.assertGreaterEqual(b.metric("mesh_proxy_tls_resumed_total", direction="inbound"), 1)

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
        for _ in range(3):  # the later ones resume: the identity still comes with them
            s = socket.create_connection(("127.0.0.1", self.port), timeout=5 * SLOW)
            self.assertEqual(s.recv(100), b"")  # closed without a byte from the backend
            s.close()
        wait_for(lambda: b.logs().count("denied " + spiffe("shop", "web")) >= 3,
                 what="the denial logs")
        # (pair()'s readiness probe of A's port made a denied connection too)
        self.assertGreaterEqual(b.metric("mesh_proxy_authz_denied_total",
                                         destination="inbound:shop/api"), 1)
        self.assertEqual(backend.accepted, 0)

    # -- refusals at the inbound port, from a client that is not an agent --

    def tls_client(self, cert=None, key=None, sni="api.shop", ca=None):
        """Handshakes with B's mTLS port and sends a byte; returns the peer's URI SAN or
        raises the error the server's refusal produced."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_verify_locations(ca or self.pki.cert)
        if cert:
            ctx.load_cert_chain(cert, key)
        raw = socket.create_connection(("127.0.0.2", self.b_inbound), timeout=5 * SLOW)
        with ctx.wrap_socket(raw, server_hostname=sni) as s:
            uri = [v for k, v in s.getpeercert().get("subjectAltName", ()) if k == "URI"]
            # TLS 1.3: the server judges the client's certificate after the client's side is
            # done; its verdict arrives with the first read.
            s.sendall(b"GET / HTTP/1.1\r\nHost: api\r\n\r\n")
            data = s.recv(100)
            if not data:
                raise ConnectionError("closed without an answer")
            return uri

    def refused(self, b, what, **kw):
        before = b.metric("mesh_proxy_tls_handshakes_total", direction="inbound",
                          result="failed") or 0
        with self.assertRaises((ssl.SSLError, ConnectionError, OSError), msg=what):
            self.tls_client(**kw)
        wait_for(lambda: b.metric("mesh_proxy_tls_handshakes_total", direction="inbound",
                                  result="failed") == before + 1, what=f"{what}: counted")

    def test_refuses_bad_clients(self):
        a, b, _ = self.pair()
        ok = self.pki.leaf("good", [spiffe("shop", "probe")])
        # A correct SVID gets through, and the server presents the SNI's service identity.
        self.assertEqual(self.tls_client(*ok), [spiffe("shop", "api")])
        self.refused(b, "no client certificate")
        self.assertIn("refused an mTLS connection", b.logs())
        other = Pki(os.path.join(self.tmp, "other"), name="other")
        self.refused(b, "untrusted CA", cert=other.leaf("o", [spiffe("shop", "x")])[0],
                     key=os.path.join(other.dir, "o.key"))
        self.assertIn("unable to get local issuer certificate", b.logs())
        exp = self.pki.leaf("expired", [spiffe("shop", "probe")], expired=True)
        time.sleep(1.5)
        self.refused(b, "expired", cert=exp[0], key=exp[1])
        self.assertIn("certificate has expired", b.logs())
        two = self.pki.leaf("two", [spiffe("shop", "a"), spiffe("shop", "b")])
        self.refused(b, "two URI SANs", cert=two[0], key=two[1])
        self.assertIn("exactly one URI SAN", b.logs())
        ca = self.pki.leaf("ca-leaf", [spiffe("shop", "c")], ca=True,
                           key_usage="digitalSignature,keyCertSign")
        self.refused(b, "a CA as a leaf", cert=ca[0], key=ca[1])
        self.assertIn("must not be a CA", b.logs())
        foreign = self.pki.leaf("foreign", ["spiffe://elsewhere.test/ns/shop/svc/x"])
        self.refused(b, "another trust domain", cert=foreign[0], key=foreign[1])
        self.assertIn("another trust domain", b.logs())
        self.refused(b, "SNI naming no local service", cert=ok[0], key=ok[1], sni="nope.shop")
        self.assertIn("the SNI names no local service", b.logs())

    def test_refuses_an_agent_with_an_untrusted_certificate(self):
        other = Pki(os.path.join(self.tmp, "other"), name="other")
        a, b, backend = self.pair(identity_b={"mode": "standalone", "ca_cert": other.cert,
                                              "ca_key": other.key})
        status, _, _ = Client(self.port, host="api").request(path="/")
        self.assertEqual(status, 503)
        self.assertIn("mTLS to an agent of 'shop/api' failed", a.logs())
        self.assertGreaterEqual(a.metric("mesh_proxy_tls_handshakes_total",
                                         direction="outbound", result="failed"), 1)
        self.assertEqual(backend.requests, [])  # nothing reached the workload

    # -- identities from a mesh-controller --

    def test_controller_mode_enrolls_and_keeps_serving_without_it(self):
        ctl = Controller({"trust_domain": TD}).start()
        try:
            idn = self.controller_identity(ctl, uses=2)
            # B's endpoint does not say it runs an agent: the controller's membership will.
            a, b, _ = self.pair(identity_a=dict(idn), identity_b=dict(idn), membership=True)
            # Until A has the membership it calls B's workload directly, so each attempt
            # makes a new call: the first ones may not cross mTLS yet.
            def crossed_mtls():
                if Client(self.port, host="api").echo("/")[0] != 200:
                    return False
                return '"downstream_identity":"%s"' % spiffe("shop", "web") in b.logs()
            wait_for(crossed_mtls, timeout=15, interval=0.2,
                     what="a call over mTLS with controller-issued certificates, "
                     "named by its SPIFFE ID in B's access log")
            r = ctl.meshctl("status")
            self.assertRegex(r.stdout, r"host-a\s+(SYNCED|STALE)")
            self.assertRegex(r.stdout, r"host-b\s+(SYNCED|STALE)\s+\S+\s+\S+\s+127\.0\.0\.2")
            out = ctl.meshctl("certs").stdout
            for ident in (spiffe("shop", "web"), spiffe("shop", "api"),
                          f"spiffe://{TD}/node/host-a", f"spiffe://{TD}/node/host-b"):
                self.assertIn(ident, out)
            self.assertEqual(json.loads(ctl.meshctl("-o", "json", "token", "list").stdout)
                             ["tokens"][0]["uses_left"], 0)
            # A policy applied at the controller reaches the agents within a second.
            wait_for(lambda: b.json("/v1/identity")["controller"]["watching"], timeout=10,
                     what="B watching the controller's resources")
            deny = os.path.join(self.tmp, "deny.json")
            with open(deny, "w") as f:
                json.dump({"kind": "AuthorizationPolicy", "name": "api", "namespace": "shop",
                           "spec": {"deny": [{"principals": [spiffe("shop", "web")],
                                              "match": [{"path": {"prefix": "/admin"}}]}]}}, f)
            t0 = time.monotonic()
            r = ctl.meshctl("apply", "-f", deny)
            self.assertEqual(r.returncode, 0, r.stderr)
            c = Client(self.port, host="api")
            wait_for(lambda: c.request(path="/admin/x")[0] == 403, timeout=LATITUDE,
                     interval=0.02, what="the deny rule in effect on B")
            within(self, t0, 1.0, "the deny rule reaching B")
            self.assertEqual(c.echo("/other")[0], 200)
            r = ctl.meshctl("get", "AuthorizationPolicy")
            self.assertIn("shop/api", r.stdout)
            self.assertEqual(ctl.meshctl("delete", "AuthorizationPolicy", "api", "-n", "shop")
                             .returncode, 0)
            wait_for(lambda: c.request(path="/admin/x")[0] == 200, timeout=LATITUDE,
                     interval=0.02, what="the deny rule gone from B")
            # A route applied through meshctl reaches the calling side (A) within a second too.
            route = os.path.join(self.tmp, "route.json")
            with open(route, "w") as f:
                json.dump({"kind": "Route", "name": "api", "namespace": "shop", "spec": {
                    "rules": [{"match": [{"path": {"prefix": "/teapot"}}],
                               "direct_response": {"status": 418, "body": "short and stout\n"}},
                              {"destinations": [{"service": "api"}]}]}}, f)
            t0 = time.monotonic()
            self.assertEqual(ctl.meshctl("apply", "-f", route).returncode, 0)
            wait_for(lambda: c.request(path="/teapot")[0] == 418, timeout=LATITUDE,
                     interval=0.02, what="the route in effect on A")
            within(self, t0, 1.0, "the route reaching A")
            # Applied again: what the agents keep must still hold while the controller is away.
            self.assertEqual(ctl.meshctl("apply", "-f", deny).returncode, 0)
            wait_for(lambda: c.request(path="/admin/x")[0] == 403, timeout=1.0 * SLOW,
                     interval=0.02, what="the deny rule back on B")
            # The controller goes away; traffic goes on, also across restarts of both agents.
            wait_for(lambda: all(x["state"] == "SYNCED" for x in json.loads(
                ctl.meshctl("-o", "json", "status").stdout)["agents"]), timeout=10,
                what="both agents SYNCED with the config index")
            ctl.stop()
            c = Client(self.port, host="api")
            self.assertEqual(c.echo("/while-down")[0], 200)
            for ag in (a, b):
                ag.stop()
                ag.start()
            wait_for(lambda: listening("127.0.0.2", self.b_inbound), what="B's mTLS listener")
            wait_for(lambda: listening("127.0.0.1", self.port), what="A's listener")
            status, _, echo = Client(self.port, host="api").echo("/after-restart")
            self.assertEqual(status, 200)
            self.assertEqual(Client(self.port, host="api").request(path="/admin/x")[0], 403)
            self.assertGreater(a.metric("mesh_cert_seconds_left"), 3000)
            # Back: nothing to do until renewals; the agents did not enroll again.
            ctl.start()
            self.assertEqual(Client(self.port, host="api").echo("/back")[0], 200)
            wait_for(lambda: all(x["state"] == "SYNCED" for x in json.loads(
                ctl.meshctl("-o", "json", "status").stdout)["agents"]), timeout=15,
                what="both agents SYNCED again after the controller came back")
            self.assertNotIn("enrolling", a.logs())  # this run's log: it held its certificates
        finally:
            ctl.stop()

    # -- certificates over time --

    def test_rotation_under_load_fails_no_request(self):
        ttl = "20s"
        a, b, _ = self.pair(identity_a=self.identity(cert_ttl=ttl),
                            identity_b=self.identity(cert_ttl=ttl), access_log=False)
        self.rotate_under_load(a, b)

    def test_rotation_from_the_controller_under_load_fails_no_request(self):
        ctl = Controller({"trust_domain": TD, "cert_ttl": "20s"}).start()
        try:
            idn = self.controller_identity(ctl, uses=2)
            a, b, _ = self.pair(identity_a=dict(idn), identity_b=dict(idn), access_log=False)
            wait_for(lambda: Client(self.port, host="api").echo("/")[0] == 200, timeout=15,
                     what="a first call with the controller's certificates")
            self.rotate_under_load(a, b)
        finally:
            ctl.stop()

    def rotate_under_load(self, a, b):
        """25 s of calls, half on one kept-alive connection, half each on a new one, while
        20-second certificates renew: not one may fail."""
        first, first_b = a.metric("mesh_cert_issued_total"), b.metric("mesh_cert_issued_total")
        errors, done = [], time.time() + 25 * SLOW
        counts = [0, 0]

        def load(k, keep_alive):
            c = Client(self.port, host="api")
            while time.time() < done:
                try:
                    status = c.echo("/r")[0]
                    if status != 200:
                        errors.append(status)
                except Exception as e:  # any failure fails the test
                    errors.append(repr(e))
                counts[k] += 1
                if not keep_alive:  # a new connection, a new handshake, each time
                    c.close()
                    c = Client(self.port, host="api")
            c.close()

        threads = [threading.Thread(target=load, args=(0, True)),
                   threading.Thread(target=load, args=(1, False))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        # Each agent renewed its two certificates (node and service) at least twice.
        self.assertGreaterEqual(a.metric("mesh_cert_issued_total") - first, 4)
        self.assertGreaterEqual(b.metric("mesh_cert_issued_total") - first_b, 4)
        self.assertGreater(counts[1], 50)

    def test_expired_certificate_turns_readiness_false_until_renewed(self):
        ctl = Controller({"trust_domain": TD, "cert_ttl": "10s"}).start()
        try:
            # Two uses to enroll, two more: a node certificate that expired cannot sign in,
            # so the nodes enroll again once the controller is back.
            idn = self.controller_identity(ctl, uses=4)
            a, b, _ = self.pair(identity_a=dict(idn), identity_b=dict(idn), access_log=False)
            wait_for(lambda: a.get("/readyz")[0] == 200 and
                     a.metric("mesh_cert_seconds_left") > 0, timeout=10, what="A ready")
            ctl.stop()  # no renewals now: the 10-second certificates run out
            wait_for(lambda: a.get("/readyz")[0] == 503, timeout=15 * SLOW,
                     what="readiness false once a certificate in use expired")
            self.assertIn(b"a certificate in use has expired", a.get("/readyz")[2])
            self.assertLessEqual(a.metric("mesh_cert_seconds_left"), 0)
            self.assertIn("unreachable", a.json("/v1/identity").get("error", ""))
            ctl.start()  # back: renewed within the backoff, ready again
            wait_for(lambda: a.get("/readyz")[0] == 200, timeout=40 * SLOW,
                     what="readiness back after renewal")
        finally:
            ctl.stop()

    def test_restart_keeps_the_certificates_it_holds(self):
        a, b, _ = self.pair()
        before = {c["id"]: c["not_after"] for c in b.json("/v1/identity")["certificates"]}
        b.stop()
        b.start()
        after = {c["id"]: c["not_after"] for c in b.json("/v1/identity")["certificates"]}
        self.assertEqual(before, after)
        self.assertEqual(b.metric("mesh_cert_issued_total"), 0)
        wait_for(lambda: listening("127.0.0.2", self.b_inbound), what="B's mTLS listener")
        self.assertEqual(Client(self.port, host="api").echo("/")[0], 200)

    def test_files_mode_reloads_and_refuses_a_bad_set(self):
        d = os.path.join(self.tmp, "pki-files")
        os.makedirs(os.path.join(d, "shop"))

        def put(name, uri, target):
            crt, key = self.pki.leaf(name, [uri])
            for src, dst in ((crt, target + ".crt"), (key, target + ".key")):
                with open(src, "rb") as f:
                    data = f.read()
                with open(dst + ".tmp", "wb") as f:
                    f.write(data)
                os.rename(dst + ".tmp", dst)

        put("bnode", f"spiffe://{TD}/node/host-b", os.path.join(d, "node"))
        put("bapi", spiffe("shop", "api"), os.path.join(d, "shop", "api"))
        a, b, _ = self.pair(identity_b={"mode": "files", "cert_dir": d,
                                        "trust_bundle": self.pki.cert})
        c = Client(self.port, host="api")
        self.assertEqual(c.echo("/")[0], 200)
        first = b.json("/v1/identity")["certificates"]
        # A renewed certificate is picked up.
        time.sleep(1.1)  # a later notAfter, to the second
        put("bapi2", spiffe("shop", "api"), os.path.join(d, "shop", "api"))
        wait_for(lambda: b.json("/v1/identity")["certificates"] != first, timeout=10,
                 what="the new certificate in use")
        self.assertEqual(Client(self.port, host="api").echo("/")[0], 200)
        # A certificate for the wrong identity is refused; the previous set keeps serving.
        good = b.json("/v1/identity")["certificates"]
        put("wrong", spiffe("shop", "web"), os.path.join(d, "shop", "api"))
        wait_for(lambda: "is for " + spiffe("shop", "web") in b.logs(), timeout=10,
                 what="the refusal of the wrong certificate")
        self.assertEqual(b.json("/v1/identity")["certificates"], good)
        self.assertIn("error", b.json("/v1/identity"))
        self.assertEqual(Client(self.port, host="api").echo("/")[0], 200)


def listening(host, port):
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        return True
    except OSError:
        return False


if __name__ == "__main__":
    main()
