#!/usr/bin/env python3
"""Attack (issue #25): a peer presents a certificate from the mesh's CA whose keyUsage
extension is missing or not critical. The X509-SVID specification (section 4.3) says the
extension MUST be set on every SVID and MUST be critical; such a certificate is not an SVID
and the agent's mTLS port refuses it, saying why."""
import os
import shutil
import socket
import ssl
import tempfile

from backends import Backend
from meshtest import SLOW, BackendTest, free_port, main, wait_for
from pki import Pki

TD = "mesh.test"


def listening(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


class KeyUsageTest(BackendTest):
    backend_class = Backend

    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="mesh-keyusage-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.pki = Pki(self.tmp)

    def greeting(self, port, cert, key):
        """The workload's greeting through the agent's mTLS port, or None when refused."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_verify_locations(self.pki.cert)
        ctx.load_cert_chain(cert, key)
        raw = socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW)
        try:
            with ctx.wrap_socket(raw, server_hostname="api.shop") as s:
                data = s.recv(100)  # TLS 1.3: the server's verdict comes with the first read
                return data.decode().strip() or None
        except (ssl.SSLError, ConnectionError):
            return None

    def test_svids_without_a_critical_key_usage_are_refused(self):
        backend = self.backend("api-b")
        inbound = free_port()
        b = self.agent(name="host-b", config={
            "node": {"name": "host-b", "zone": "zone-a"}, "trust_domain": TD,
            "identity": {"mode": "standalone", "ca_cert": self.pki.cert, "ca_key": self.pki.key},
            "listeners": {"outbound_http": f"127.0.0.1:{free_port()}",
                          "inbound": f"127.0.0.1:{inbound}"}},
            services={"api.json": {"service": {"name": "api", "namespace": "shop",
                                               "protocol": "tcp", "port": backend.port}}})
        b.start()
        wait_for(lambda: listening(inbound), what="B's mTLS port")
        uri = [f"spiffe://{TD}/ns/shop/sa/probe"]
        good = self.pki.leaf("good", uri)
        self.assertEqual(self.greeting(inbound, *good), "api-b")  # the control
        plain = self.pki.leaf("plain-ku", uri, key_usage_critical=False)
        self.assertIsNone(self.greeting(inbound, *plain), "a non-critical keyUsage got in")
        wait_for(lambda: "keyUsage extension of an SVID must be critical" in b.logs(),
                 what="B's refusal")
        none = self.pki.leaf("no-ku", uri, key_usage=None)
        self.assertIsNone(self.greeting(inbound, *none), "an SVID without keyUsage got in")
        wait_for(lambda: "must have the keyUsage extension" in b.logs(), what="B's refusal")


if __name__ == "__main__":
    main()
