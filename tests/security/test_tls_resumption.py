#!/usr/bin/env python3
"""Attack (issue #13): expired certificates kept working through TLS 1.3 resumption. With
the controller away and a 30 s certificate, new mTLS connections went on succeeding for
minutes past expiry, each resuming the session the previous one left.

Both directions are attacked here with certificates that live a few seconds:
- inbound: a client makes a session with an agent while its certificate is valid, then
  comes back after the certificate expired with the session's ticket;
- outbound: an agent made a session with a peer agent whose certificate has expired since;
  the next call must not resume it (and then fails on the expired certificate).
(tests/unit/proxy/test_tls.c also offers an old ticket from a client that ignores its
lifetime, which OpenSSL's own client will not do.)"""
import os
import shutil
import socket
import ssl
import tempfile
import threading
import time

from backends import Backend, greet
from meshtest import SLOW, BackendTest, free_port, main, wait_for
from pki import Pki
from servers import ThreadedServer

TD = "mesh.test"
LIFE = 10 * SLOW  # seconds the short-lived certificates are valid for


def spiffe(ns, name):
    return f"spiffe://{TD}/ns/{ns}/sa/{name}"


def listening(port, host="127.0.0.1"):
    try:
        socket.create_connection((host, port), timeout=0.5).close()
        return True
    except OSError:
        return False


class PeerAgent(ThreadedServer):
    """A peer agent's mTLS port as a plain TLS 1.3 server: presents an SVID for shop/api,
    wants a client certificate from the CA, greets, and resumes any session it is offered
    (as OpenSSL does by default). `handshakes` records (resumed, client certificate seen)."""

    def __init__(self, cert, key, ca):
        super().__init__()
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        self.ctx.load_cert_chain(cert, key)
        self.ctx.load_verify_locations(ca)
        self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.handshakes = []

    def _serve(self, c):
        try:
            c.settimeout(10 * SLOW)
            with self.ctx.wrap_socket(c, server_side=True) as s:
                with self.lock:
                    self.handshakes.append(s.session_reused)
                s.sendall(b"api-peer\n")
                while s.recv(4096):
                    pass
        except (OSError, ssl.SSLError):
            pass


class ResumptionTest(BackendTest):
    backend_class = Backend

    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="mesh-resumption-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.pki = Pki(self.tmp)

    def identity(self):
        return {"mode": "standalone", "ca_cert": self.pki.cert, "ca_key": self.pki.key}

    def wait_expired(self, not_after):
        wait_for(lambda: time.time() > not_after + 1, timeout=LIFE + 30, interval=0.2,
                 what="the short-lived certificate to expire")

    def call(self, port, ctx, session=None):
        """Connects to the agent's mTLS port with SNI api.shop; returns (greeting or None,
        session, resumed). None: refused, with or without an alert."""
        raw = socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW)
        try:
            with ctx.wrap_socket(raw, server_hostname="api.shop", session=session) as s:
                data = b""
                while not data.endswith(b"\n"):
                    chunk = s.recv(100)
                    if not chunk:
                        return None, None, s.session_reused
                    data += chunk
                return data.decode().strip(), s.session, s.session_reused
        except (ssl.SSLError, ConnectionError):
            return None, None, False

    def test_expired_client_certificate_does_not_resume_into_an_agent(self):
        backend = self.backend("api-b")
        inbound = free_port()
        b = self.agent(name="host-b", config={
            "node": {"name": "host-b", "zone": "zone-a"}, "trust_domain": TD,
            "identity": self.identity(),
            "listeners": {"outbound_http": f"127.0.0.1:{free_port()}",
                          "inbound": f"127.0.0.1:{inbound}"}},
            services={"api.json": {"service": {"name": "api", "namespace": "shop",
                                               "protocol": "tcp", "port": backend.port}}})
        b.start()
        wait_for(lambda: listening(inbound), what="B's mTLS port")
        not_after = time.time() + LIFE
        cert, key = self.pki.leaf("probe", [spiffe("shop", "probe")], valid_for=(-60, LIFE))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_verify_locations(self.pki.cert)
        ctx.load_cert_chain(cert, key)
        # While the certificate is valid: a session, and a resumption of it.
        greeting, session, _ = self.call(inbound, ctx)
        self.assertEqual(greeting, "api-b")
        greeting, session, resumed = self.call(inbound, ctx, session)
        self.assertEqual(greeting, "api-b")
        self.assertTrue(resumed, "resumption works while the certificate is valid")
        self.assertIsNotNone(session)
        self.wait_expired(not_after)
        # The attack: the session's ticket, after the certificate expired.
        greeting, _, resumed = self.call(inbound, ctx, session)
        self.assertFalse(resumed, "a session outlived the client certificate it was made with")
        self.assertIsNone(greeting, "an expired client certificate reached the workload")
        wait_for(lambda: "certificate has expired" in b.logs(), what="B's refusal in its log")

    def test_agent_does_not_resume_with_a_peer_whose_certificate_expired(self):
        not_after = time.time() + LIFE
        cert, key = self.pki.leaf("peer-api", [spiffe("shop", "api")], valid_for=(-60, LIFE))
        peer = PeerAgent(cert, key, self.pki.cert).start()
        self.addCleanup(peer.stop)
        port = free_port()
        a = self.agent(name="host-a", config={
            "node": {"name": "host-a", "zone": "zone-a"}, "trust_domain": TD,
            "identity": self.identity(),
            "listeners": {"outbound_http": f"127.0.0.1:{free_port()}",
                          "inbound": f"127.0.0.1:{free_port()}"}},
            services={
                "web.json": {"service": {"name": "web", "namespace": "shop", "port": free_port(),
                                         "upstreams": [{"service": "api", "bind_port": port,
                                                        "protocol": "tcp"}]}},
                "api.json": {"service": {"name": "api", "namespace": "shop", "protocol": "tcp",
                                         "endpoints": [{"address": "127.0.0.1",
                                                        "port": free_port(),
                                                        "mesh_port": peer.port}]}}})
        a.start()
        wait_for(lambda: listening(port), what="A's upstream listener")
        # While the peer's certificate is valid: full handshakes, then resumed ones (each
        # worker keeps its own sessions, so a few calls until both have one).
        for _ in range(12):
            self.assertEqual(greet(port, timeout=10 * SLOW), "api-peer")
        wait_for(lambda: len(peer.handshakes) >= 12, what="the peer's handshakes")
        self.assertIn(True, peer.handshakes, "A resumes while all is valid")
        self.wait_expired(not_after)
        # The peer's certificate expired: A must not resume, and the full handshake fails.
        before = len(peer.handshakes)
        for _ in range(6):
            self.assertIsNone(greet(port, timeout=10 * SLOW),
                              "A called a peer whose certificate has expired")
        self.assertNotIn(True, peer.handshakes[before:],
                         "A resumed a session past the peer certificate's notAfter")
        wait_for(lambda: "certificate has expired" in a.logs(), what="A's refusal in its log")


if __name__ == "__main__":
    main()
