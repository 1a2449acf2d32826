#!/usr/bin/env python3
"""Attacks on enrollment and join tokens (issue #13): a token holder taking over another
node's identity by enrolling under its name, tokens that allow any node name or identities
no workload should have, a garbage CSR spending a token use, guessing tokens at thousands
of tries a second, and CSRs with weak keys."""
import json
import math
import os
import subprocess
import time
import unittest

from controllertest import TD, Controller, csr
from meshtest import main, wait_for

ATTACKER = "127.0.0.2"


def spiffe(ns, name):
    return f"spiffe://{TD}/ns/{ns}/sa/{name}"


def keyed_csr(directory, name, *newkey):
    """A CSR for a key made with `openssl req -newkey ...`; returns its text."""
    key = os.path.join(directory, f"{name}.key")
    req = os.path.join(directory, f"{name}.csr")
    subprocess.run(["openssl", "req", *newkey, "-nodes", "-keyout", key, "-out", req,
                    "-subj", f"/O=test/CN={name}"], check=True, capture_output=True)
    with open(req) as f:
        return f.read()


class ControllerCase(unittest.TestCase):
    """A controller per test, and the calls an enrolling node makes."""
    config = {}

    def setUp(self):
        self.c = Controller(self.config).start()
        self.dir = self.c.tmp

    def tearDown(self):
        self.c.stop()

    def token(self, node="host-*", uses=5, services=(spiffe("shop", "*"),), **extra):
        body = {"services": list(services), "node": node, "uses": uses}
        body.update(extra)
        s, doc = self.c.request("POST", "/v1/tokens", body, admin=True)
        self.assertEqual(s, 201, doc)
        return doc

    def uses_left(self, token_id):
        s, doc = self.c.request("GET", "/v1/tokens", admin=True)
        return {t["id"]: t["uses_left"] for t in doc["tokens"]}[token_id]

    def enroll(self, token, node, cert=None, key=None, csr_text=None, source=None):
        """Returns (status, answer, cert path, key path)."""
        text, new_key = csr(self.dir, f"{node}-{time.monotonic_ns()}")
        s, body = self.c.request("POST", "/v1/enroll", {"token": token, "node": node,
                                                         "csr": csr_text or text},
                                 cert=cert, key=key, source=source)
        if s != 200:
            return s, body, None, None
        path = os.path.join(self.dir, f"{node}-{time.monotonic_ns()}.crt")
        with open(path, "w") as f:
            f.write(body["certificate"])
        return s, body, path, new_key

    def sign(self, cert, key, identity=None, csr_text=None):
        text = csr_text or csr(self.dir, f"svc-{time.monotonic_ns()}")[0]
        return self.c.request("POST", "/v1/sign", {"identity": identity or spiffe("shop", "web"),
                                                   "csr": text}, cert=cert, key=key)



class EnrollmentTest(ControllerCase):
    # -- identity takeover --

    def test_enrolling_as_an_enrolled_node_takes_nothing_over(self):
        tok = self.token(uses=5)
        s, _, cert_a, key_a = self.enroll(tok["token"], "host-a")
        self.assertEqual(s, 200)
        s, _, cert_b, key_b = self.enroll(tok["token"], "host-b")
        self.assertEqual(s, 200)
        # A token holder enrolls under host-a's name: refused, with or without another
        # node's certificate, and without spending a use.
        for cert, key in ((None, None), (cert_b, key_b)):
            s, body, _, _ = self.enroll(tok["token"], "host-a", cert=cert, key=key)
            self.assertEqual(s, 409, body)
            self.assertIn("host-a is already enrolled", body["error"])
        self.assertEqual(self.uses_left(tok["id"]), 3)
        # The real host-a still renews and signs with its certificate.
        self.assertEqual(self.sign(cert_a, key_a, f"spiffe://{TD}/node/host-a")[0], 200)
        self.assertEqual(self.sign(cert_a, key_a)[0], 200)
        s, doc = self.c.request("GET", "/v1/certs", admin=True)
        nodes = {c["identity"]: c["node"] for c in doc["certs"]}
        self.assertEqual(nodes[f"spiffe://{TD}/node/host-a"], "host-a")

    def test_a_node_enrolls_again_with_its_current_certificate(self):
        tok = self.token(uses=5)
        s, _, cert1, key1 = self.enroll(tok["token"], "host-a")
        self.assertEqual(s, 200)
        s, body, cert2, key2 = self.enroll(tok["token"], "host-a", cert=cert1, key=key1)
        self.assertEqual(s, 200, body)
        # Renewed three times since: the first certificate proves nothing any more.
        for i in range(3):
            s, doc = self.sign(cert2, key2, f"spiffe://{TD}/node/host-a")
            self.assertEqual(s, 200, doc)
        s, body, _, _ = self.enroll(tok["token"], "host-a", cert=cert1, key=key1)
        self.assertEqual(s, 409, body)
        self.assertEqual(self.sign(cert1, key1)[0], 403)

    def test_an_operator_reset_lets_a_new_host_take_the_name(self):
        tok = self.token(uses=5)
        s, _, old_cert, old_key = self.enroll(tok["token"], "host-a")
        self.assertEqual(s, 200)
        r = self.c.meshctl("node", "reset", "host-a")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(self.c.meshctl("node", "reset", "host-zz").returncode, 1)
        s, body, cert, key = self.enroll(tok["token"], "host-a")
        self.assertEqual(s, 200, body)
        # The old host's certificate no longer speaks for host-a.
        s, body = self.sign(old_cert, old_key)
        self.assertEqual(s, 403, body)
        self.assertEqual(self.sign(cert, key)[0], 200)
        self.assertIn("reset node host-a", self.c.logs())

    # -- token scope --

    def test_tokens_name_their_nodes_and_only_workload_identities(self):
        s, body = self.c.request("POST", "/v1/tokens", {"services": [spiffe("shop", "*")]},
                                 admin=True)
        self.assertEqual(s, 400)
        self.assertIn("node", body["error"])
        r = self.c.meshctl("token", "create", "--services", spiffe("shop", "*"))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("--node", r.stderr)
        for bad in (f"spiffe://{TD}/*", f"spiffe://{TD}/node/*", f"spiffe://{TD}/node/host-a",
                    f"spiffe://{TD}/mesh-controller", f"spiffe://{TD}/n*", f"spiffe://{TD}/*/x",
                    f"spiffe://{TD}/mesh-*"):
            s, body = self.c.request("POST", "/v1/tokens", {"node": "host-a",
                                                            "services": [bad]}, admin=True)
            self.assertEqual(s, 400, bad)
            self.assertIn("services[0]", body["error"])
        for good in (f"spiffe://{TD}/ns/*", spiffe("shop", "*"), f"spiffe://{TD}/ns/a/sa/b"):
            self.token(node="host-a", services=[good])

    def test_a_garbage_csr_spends_no_use(self):
        tok = self.token(node="host-a", uses=1)
        for garbage in ("garbage", "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n"
                        "-----END CERTIFICATE REQUEST-----\n"):
            s, body, _, _ = self.enroll(tok["token"], "host-a", csr_text=garbage)
            self.assertEqual(s, 400, body)
        self.assertEqual(self.uses_left(tok["id"]), 1)
        self.assertEqual(self.enroll(tok["token"], "host-a")[0], 200)
        self.assertEqual(self.uses_left(tok["id"]), 0)

    def test_weak_keys_are_refused(self):
        tok = self.token(uses=2)
        s, _, cert, key = self.enroll(tok["token"], "host-a")
        self.assertEqual(s, 200)
        weak = {"rsa1024": ("-newkey", "rsa:1024"),
                "secp256k1": ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp256k1"),
                "p521": ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-521"),
                "p224": ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-224")}
        for name, args in weak.items():
            text = keyed_csr(self.dir, name, *args)
            s, body = self.sign(cert, key, csr_text=text)
            self.assertEqual(s, 400, f"{name}: {body}")
            self.assertIn("key", body["error"])
            s, body, _, _ = self.enroll(tok["token"], "host-b", csr_text=text)
            self.assertEqual(s, 400, f"{name}: {body}")
        self.assertEqual(self.uses_left(tok["id"]), 1)
        strong = {"rsa2048": ("-newkey", "rsa:2048"),
                  "p384": ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384"),
                  "ed25519": ("-newkey", "ed25519")}
        for name, args in strong.items():
            s, body = self.sign(cert, key, csr_text=keyed_csr(self.dir, name, *args))
            self.assertEqual(s, 200, f"{name}: {body}")

    # -- guessing --

    def test_token_guessing_is_slowed_per_source(self):
        tok = self.token(node="host-*", uses=2)
        id_ = tok["token"].split(".")[1]
        text, _ = csr(self.dir, "guess")

        def guess(i):
            s, headers, _ = self.c.exchange("POST", "/v1/enroll", {
                "token": f"mesh1.{id_}.{i:064x}", "node": "host-a", "csr": text},
                source=ATTACKER)
            return s, int(headers.get("Retry-After", 0))

        statuses, retry_after = [], 0
        t0 = time.monotonic()
        for i in range(40):
            s, retry_after = guess(i)
            statuses.append(s)
        elapsed = time.monotonic() - t0
        tried = statuses.count(401)
        self.assertEqual(tried + statuses.count(429), 40, statuses)
        # 5 free failures, then blocks of 1 s, 2 s, 4 s...: at most this many in `elapsed`.
        self.assertLessEqual(tried, 6 + math.ceil(math.log2(elapsed + 1)) + 1,
                             f"{tried} guesses checked in {elapsed:.1f} s")
        self.assertIn(429, statuses)
        # The right token from the guessing source waits too (asked while a block has
        # surely more than a second to run), and another source is served.
        for i in range(40, 60):
            s, retry_after = guess(i)
            if s == 401 or retry_after >= 2:
                break
        s, body, _, _ = self.enroll(tok["token"], "host-a", source=ATTACKER)
        self.assertEqual(s, 429, body)
        s, body, _, _ = self.enroll(tok["token"], "host-a")
        self.assertEqual(s, 200, body)
        self.assertGreaterEqual(self.c.metric("mesh_controller_auth_failures_total",
                                              endpoint="enroll"), tried)
        self.assertGreaterEqual(self.c.metric("mesh_controller_auth_rate_limited_total"),
                                40 - tried)
        # Admin-token guessing is limited the same way.
        t1 = time.monotonic()
        codes = [self.c.request("GET", "/v1/tokens", token="0" * 64, source="127.0.0.3")[0]
                 for _ in range(20)]
        took = time.monotonic() - t1
        self.assertIn(429, codes)
        self.assertLessEqual(codes.count(401), 6 + math.ceil(math.log2(took + 1)) + 1)
        print(f"guessing: {tried} of 40 guesses checked in {elapsed:.2f} s")


class ExpiredProofTest(ControllerCase):
    """A node whose certificate expired (off longer than its lifetime) enrolls again with a
    new token use and that expired certificate as the proof it is the same host."""
    config = {"cert_ttl": "10s"}

    def test_an_expired_current_certificate_proves_the_node(self):
        tok = self.token(uses=3)
        s, body, cert, key = self.enroll(tok["token"], "host-a")
        self.assertEqual(s, 200)
        wait_for(lambda: time.time() > body["not_after"] + 1, timeout=20,
                 what="the node certificate's expiry")
        self.assertEqual(self.sign(cert, key)[0], 401)  # it authenticates nothing now
        s, body, _, _ = self.enroll(tok["token"], "host-a")
        self.assertEqual(s, 409, body)
        s, body, _, _ = self.enroll(tok["token"], "host-a", cert=cert, key=key)
        self.assertEqual(s, 200, body)


if __name__ == "__main__":
    main()
