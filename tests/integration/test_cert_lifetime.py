#!/usr/bin/env python3
"""A certificate's life with a mesh-controller (issue #25): an agent restarted past half of
its node certificate's life renews with it instead of spending a join token use; only an
expired node certificate needs a new token, and the error says so; renewal that keeps
failing is warned about at 80 % of the life (log and metric); past notAfter the agent no
longer presents the certificate."""
import json
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time

from controllertest import TD, Controller
from meshtest import SLOW, AgentTest, free_port, main, wait_for


def spiffe(ns, name):
    return f"spiffe://{TD}/ns/{ns}/sa/{name}"


def cert_dates(path):
    """(notBefore, notAfter) of a PEM certificate as Unix times."""
    out = subprocess.run(["openssl", "x509", "-in", path, "-noout", "-startdate", "-enddate"],
                         capture_output=True, text=True, check=True).stdout
    dates = dict(line.split("=", 1) for line in out.splitlines())
    return tuple(ssl.cert_time_to_seconds(dates[k]) for k in ("notBefore", "notAfter"))


class CertLifetimeTest(AgentTest):
    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="mesh-certlife-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.ctls = []

    def tearDown(self):
        super().tearDown()
        for c in self.ctls:
            c.stop()
            shutil.rmtree(c.tmp, True)

    def controller(self, ttl):
        c = Controller({"trust_domain": TD, "cert_ttl": ttl}).start()
        self.ctls.append(c)
        return c

    def uses_left(self, ctl):
        return json.loads(ctl.meshctl("-o", "json", "token", "list").stdout)["tokens"][0][
            "uses_left"]

    def agent_for(self, ctl, uses):
        r = ctl.meshctl("token", "create", "--services", spiffe("shop", "*"), "--node",
                        "host-*", "--uses", str(uses))
        self.assertEqual(r.returncode, 0, r.stderr)
        token = os.path.join(self.tmp, "join.token")
        with open(token, "w") as f:
            f.write(r.stdout.strip().splitlines()[-1] + "\n")
        self.inbound = free_port()
        a = self.agent(name="host-a", config={
            "node": {"name": "host-a", "zone": "zone-a"}, "trust_domain": TD,
            "identity": {"mode": "controller", "controller": f"https://127.0.0.1:{ctl.port}",
                         "controller_ca": ctl.ca, "join_token_file": token},
            "listeners": {"outbound_http": f"127.0.0.1:{free_port()}",
                          "inbound": f"127.0.0.1:{self.inbound}"}},
            services={"api.json": {"service": {"name": "api", "namespace": "shop",
                                               "protocol": "tcp", "port": free_port()}}})
        return a

    def held(self, a):
        """{identity: not_after} of the certificates in use."""
        return {c["id"]: c["not_after"] for c in a.json("/v1/identity")["certificates"]}

    def node_cert(self, a):
        return os.path.join(a.state_dir, "certs", "node.crt")

    def test_restart_past_half_life_renews_with_the_node_certificate(self):
        ctl = self.controller("30s")
        a = self.agent_for(ctl, uses=2)
        a.start()
        node = f"spiffe://{TD}/node/host-a"
        wait_for(lambda: node in self.held(a), timeout=15, what="the node certificate")
        a.stop()
        self.assertEqual(self.uses_left(ctl), 1)
        before, not_after = cert_dates(self.node_cert(a))
        # Off until past the latest moment the renewal can be due (half, plus a twentieth).
        due = before + (not_after - before) * 0.6
        wait_for(lambda: time.time() > due, timeout=60, interval=0.2,
                 what="past half of the node certificate's life")
        self.assertLess(time.time(), not_after, "the machine was too slow for this test")
        a.start()
        wait_for(lambda: self.held(a).get(node, 0) > not_after, timeout=15 * SLOW,
                 what="the node certificate renewed after the restart")
        self.assertNotIn("enrolling", a.logs())
        self.assertEqual(self.uses_left(ctl), 1, "the restart spent a join token use")

    def test_expired_node_certificate_needs_a_new_token_and_says_so(self):
        ctl = self.controller("10s")
        a = self.agent_for(ctl, uses=1)
        a.start()
        node = f"spiffe://{TD}/node/host-a"
        wait_for(lambda: node in self.held(a), timeout=15, what="the node certificate")
        a.stop()
        _, not_after = cert_dates(self.node_cert(a))
        wait_for(lambda: time.time() > not_after + 1, timeout=60, interval=0.2,
                 what="the node certificate to expire")
        a.start(wait_ready=False)
        wait_for(lambda: a.json("/v1/identity").get("error"), timeout=15 * SLOW,
                 what="the failed enrollment")
        err = a.json("/v1/identity")["error"]
        self.assertIn("used up", err)
        self.assertIn("the node certificate expired at", err)
        self.assertIn("new join token", err)
        # The operator writes a new token: the node enrolls again under its own name, proving
        # it is that node with the expired certificate its state dir kept (no node reset).
        r = ctl.meshctl("token", "create", "--services", spiffe("shop", "*"), "--node",
                        "host-a", "--uses", "1")
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(a.config["identity"]["join_token_file"], "w") as f:
            f.write(r.stdout.strip().splitlines()[-1] + "\n")
        wait_for(lambda: self.held(a).get(node, 0) > not_after, timeout=20 * SLOW,
                 what="the node enrolled again with the new token")

    def test_failing_renewal_warns_at_80_percent_then_stops_presenting(self):
        ctl = self.controller("10s")
        a = self.agent_for(ctl, uses=1)
        a.start()
        wait_for(lambda: spiffe("shop", "api") in self.held(a), timeout=15,
                 what="the service certificate")
        ctl.stop()  # renewals fail from now on
        wait_for(lambda: "past 80% of its lifetime" in a.logs(), timeout=40 * SLOW,
                 what="the warning at 80 % of the life")
        self.assertIn("renewal keeps failing", a.logs())
        self.assertGreaterEqual(a.metric("mesh_cert_renewal_overdue"), 1)
        # The service's own certificate: the node's, issued a moment earlier, expires first.
        expired = f"the certificate of {spiffe('shop', 'api')} expired at"
        wait_for(lambda: expired in a.logs(), timeout=20 * SLOW,
                 what="the service certificate's expiry")
        self.assertIn("is no longer presented", a.logs())
        self.assertGreaterEqual(a.metric("mesh_cert_expired"), 1)
        # Inbound: the expired service certificate is not sent; the handshake is refused.
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        raw = socket.create_connection(("127.0.0.1", self.inbound), timeout=10 * SLOW)
        with self.assertRaises(ssl.SSLError):
            with ctx.wrap_socket(raw, server_hostname="api.shop") as s:
                s.recv(1)
        raw.close()
        wait_for(lambda: "not presenting it" in a.logs(), what="the refusal in the log")
        # Readiness is false while a certificate in use has expired.
        self.assertEqual(a.get("/readyz")[0], 503)


if __name__ == "__main__":
    main()
