"""X-Forwarded-Client-Cert cannot be forged: a client's XFCC never reaches a workload. On
inbound mTLS the agent replaces it with the one made from its own handshake (Envoy's
SANITIZE_SET); on every other request it forwards (plain inbound, outbound) it removes it."""
import hashlib
import json
import os
import socket
import ssl
import tempfile

from http_backend import HttpBackend
from meshtest import SLOW, BackendTest, free_port, main, wait_for
from pki import Pki

TD = "mesh.test"
FORGED = [("X-Forwarded-Client-Cert", f"By=spiffe://{TD}/x;URI=spiffe://{TD}/ns/shop/sa/admin"),
          ("x-forwarded-client-cert", "Hash=00;URI=forged, URI=forged-too")]


def request(sock, host):
    head = [f"GET /xfcc HTTP/1.1", f"Host: {host}", "Connection: close"]
    head += [f"{k}: {v}" for k, v in FORGED]
    sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
    data = b""
    while True:
        d = sock.recv(65536)
        if not d:
            break
        data += d
    status = int(data.split(b" ", 2)[1])
    body = data.split(b"\r\n\r\n", 1)[1]
    return status, json.loads(body) if status == 200 else body


def listening(port, host="127.0.0.1"):
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


class XfccTest(BackendTest):
    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="mesh-xfcc-")
        self.pki = Pki(self.tmp)
        self.backend = HttpBackend("api").start()
        self.backends.append(self.backend)
        self.inbound, self.plain, self.out = free_port(), free_port(), free_port()
        cfg = {"trust_domain": TD,
               "identity": {"mode": "standalone", "ca_cert": self.pki.cert,
                            "ca_key": self.pki.key},
               "listeners": {"outbound_http": f"127.0.0.1:{free_port()}",
                             "inbound": f"127.0.0.1:{self.inbound}"}}
        self.a = self.agent(config=cfg, services={
            "api.json": {"service": {"name": "api", "namespace": "shop", "protocol": "http",
                                     "port": self.backend.port, "inbound_port": self.plain,
                                     "inbound_address": "127.0.0.1"}},
            "web.json": {"service": {"name": "web", "namespace": "shop", "port": free_port(),
                                     "upstreams": [{"service": "ext", "bind_port": self.out,
                                                    "protocol": "http"}]}},
            "ext.json": {"service": {"name": "ext", "namespace": "shop", "protocol": "http",
                                     "endpoints": [{"address": "127.0.0.1",
                                                    "port": self.backend.port}]}}})
        self.a.start()
        for port in (self.inbound, self.plain, self.out):
            wait_for(lambda: listening(port), what=f"the agent's listener on {port}")

    def xfcc(self, echo):
        return [v for k, v in echo["headers"].items() if k.lower() == "x-forwarded-client-cert"]

    def test_mtls_caller_gets_the_agents_xfcc_only(self):
        probe_id = f"spiffe://{TD}/ns/shop/sa/probe"
        cert, key = self.pki.leaf("probe", [probe_id])
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_verify_locations(self.pki.cert)
        ctx.load_cert_chain(cert, key)
        raw = socket.create_connection(("127.0.0.1", self.inbound), timeout=5 * SLOW)
        with ctx.wrap_socket(raw, server_hostname="api.shop") as s:
            by = [v for k, v in s.getpeercert()["subjectAltName"] if k == "URI"][0]
            status, echo = request(s, "api")
        self.assertEqual(status, 200, echo)
        with open(cert) as f:
            der = ssl.PEM_cert_to_DER_cert(f.read())
        want = f"By={by};Hash={hashlib.sha256(der).hexdigest()};URI={probe_id}"
        self.assertEqual(self.xfcc(echo), [want])

    def test_plain_inbound_removes_a_forged_xfcc(self):
        s = socket.create_connection(("127.0.0.1", self.plain), timeout=5 * SLOW)
        with s:
            status, echo = request(s, "api")
        self.assertEqual(status, 200, echo)
        self.assertEqual(self.xfcc(echo), [])

    def test_outbound_removes_a_forged_xfcc(self):
        s = socket.create_connection(("127.0.0.1", self.out), timeout=5 * SLOW)
        with s:
            status, echo = request(s, "ext")
        self.assertEqual(status, 200, echo)
        self.assertEqual(self.xfcc(echo), [])


if __name__ == "__main__":
    main()
