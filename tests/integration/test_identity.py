#!/usr/bin/env python3
"""One identity scheme for VMs and Kubernetes (spiffe://<td>/ns/<ns>/sa/<sa>), the
operator changing a node's allowed identities after enrollment, the caller's verified
identity handed to the application (X-Forwarded-Client-Cert), and a controller change index
that never goes backwards, across restarts too."""
import hashlib
import json
import os
import socket
import ssl
import tempfile

from controllertest import TD, Controller, csr
from http_backend import HttpBackend
from httptest import Client
from meshtest import BackendTest, free_port, main, wait_for
from pki import Pki


def sa(ns, name):
    return f"spiffe://{TD}/ns/{ns}/sa/{name}"


def listening(host, port):
    try:
        socket.create_connection((host, port), timeout=1).close()
        return True
    except OSError:
        return False


def pem_sha256(pem_text):
    """The SHA-256 (hex) of the DER of the first certificate in a PEM text."""
    first = pem_text.split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(first)).hexdigest()


class ControllerIdentityTest(BackendTest):
    def setUp(self):
        super().setUp()
        self.c = Controller().start()
        self.dir = self.c.tmp

    def tearDown(self):
        self.c.stop()
        super().tearDown()

    def resources(self, body):
        s, answer = self.c.request("PUT", "/v1/resources", body, admin=True)
        self.assertEqual(s, 200, answer)
        return answer["index"]

    def index(self):
        s, body = self.c.request("GET", "/v1/resources", admin=True)
        self.assertEqual(s, 200, body)
        return body["index"]

    def test_change_index_never_goes_backwards_across_restarts(self):
        policy = {"kind": "AuthorizationPolicy", "namespace": "shop",
                  "spec": {"allow": [{"namespaces": ["shop"]}]}}
        for name in ("a", "b", "c"):
            self.resources(dict(policy, name=name))
        for name in ("c", "b"):  # the newest ones deleted: their indexes leave the store
            s, body = self.c.request("DELETE", f"/v1/resources/AuthorizationPolicy/shop/{name}",
                                     admin=True)
            self.assertEqual(s, 200, body)
        before = self.index()
        self.assertEqual(before, 6)
        self.c.stop()
        self.c.start()
        self.assertGreaterEqual(self.index(), before)
        # SIGKILL too: the mark is on disk before the change is answered.
        s, body = self.c.request("DELETE", "/v1/resources/AuthorizationPolicy/shop/a",
                                 admin=True)
        self.assertEqual(s, 200, body)
        before = self.index()
        self.c.kill()
        self.c.start()
        self.assertGreaterEqual(self.index(), before)
        # An agent's blocking query at the old index is answered at once with the new one.
        after = self.resources(dict(policy, name="d"))
        self.assertGreater(after, before)


if __name__ == "__main__":
    main()
