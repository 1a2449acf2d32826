#!/usr/bin/env python3
"""mesh-controller over HTTPS: its CA, join tokens and enrollment, signing only what a node
is entitled to, meshctl, and storage that survives SIGKILL at any moment."""
import json
import os
import random
import ssl
import subprocess
import threading
import time
import unittest

from controllertest import MESHCTL, TD, Controller, csr
from meshtest import main, wait_for
from pki import Pki


def spiffe(ns, name):
    return f"spiffe://{TD}/ns/{ns}/sa/{name}"


class ControllerTest(unittest.TestCase):
    def setUp(self):
        self.c = Controller().start()
        self.dir = self.c.tmp

    def tearDown(self):
        self.c.stop()

    def token(self, services=(spiffe("shop", "*"),), node="host-*", uses=1, ttl="1h"):
        s, body = self.c.request("POST", "/v1/tokens", {"services": list(services), "node": node,
                                                        "uses": uses, "ttl": ttl}, admin=True)
        self.assertEqual(s, 201, body)
        return body

    def enroll(self, token, node="host-a"):
        text, key = csr(self.dir, node)
        s, body = self.c.request("POST", "/v1/enroll", {"token": token, "node": node, "csr": text})
        if s == 200:
            path = os.path.join(self.dir, f"{node}.crt")
            with open(path, "w") as f:
                f.write(body["certificate"])
            return s, body, path, key
        return s, body, None, None

    def svid_of(self, pem):
        p = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName,basicConstraints"],
                           input=pem, capture_output=True, text=True, check=True)
        return p.stdout

    def test_ca_and_secrets_are_made_once_and_kept_private(self):
        st = self.c.state_dir
        self.assertEqual(os.stat(os.path.join(st, "ca.key")).st_mode & 0o777, 0o600)
        self.assertEqual(os.stat(os.path.join(st, "admin.token")).st_mode & 0o777, 0o600)
        with open(self.c.ca) as f:
            ca = f.read()
        s, bundle = self.c.request("GET", "/v1/bundle")
        self.assertEqual((s, bundle), (200, ca))
        out = subprocess.run(["openssl", "x509", "-noout", "-text"], input=ca, text=True,
                             capture_output=True).stdout
        self.assertIn("CA:TRUE", out)
        self.assertIn("prime256v1", out)
        self.c.stop()
        self.c.start()
        with open(self.c.ca) as f:
            self.assertEqual(f.read(), ca)  # the same root after a restart

    def test_enrollment_and_signing(self):
        tok = self.token(uses=1)
        self.assertNotIn("hash", tok)
        s, body, cert, key = self.enroll(tok["token"])
        self.assertEqual(s, 200, body)
        self.assertIn(f"URI:spiffe://{TD}/node/host-a", self.svid_of(body["certificate"]))
        self.assertIn("CA:FALSE", self.svid_of(body["certificate"]))
        # The node signs in with its certificate for the services its token allowed.
        text, _ = csr(self.dir, "web")
        s, got = self.c.request("POST", "/v1/sign", {"identity": spiffe("shop", "web"),
                                                     "csr": text}, cert=cert, key=key)
        self.assertEqual(s, 200, got)
        self.assertIn("URI:" + spiffe("shop", "web"), self.svid_of(got["certificate"]))
        v = subprocess.run(["openssl", "verify", "-CAfile", self.c.ca], input=got["certificate"],
                           capture_output=True, text=True)
        self.assertEqual(v.returncode, 0, v.stderr)
        # A renewal of its own node identity is allowed too.
        text, _ = csr(self.dir, "renew")
        s, _ = self.c.request("POST", "/v1/sign", {"identity": f"spiffe://{TD}/node/host-a",
                                                   "csr": text}, cert=cert, key=key)
        self.assertEqual(s, 200)
        # Refused, each with its reason.
        s, got = self.c.request("POST", "/v1/sign", {"identity": spiffe("bank", "vault"),
                                                     "csr": text}, cert=cert, key=key)
        self.assertEqual(s, 403)
        self.assertIn("may not have identity " + spiffe("bank", "vault"), got["error"])
        s, got = self.c.request("POST", "/v1/sign", {"identity": f"spiffe://{TD}/node/host-b",
                                                     "csr": text}, cert=cert, key=key)
        self.assertEqual(s, 403)  # another node's identity
        s, got = self.c.request("POST", "/v1/sign", {"identity": spiffe("shop", "web"),
                                                     "csr": text})
        self.assertEqual(s, 401)
        self.assertIn("node certificate is required", got["error"])
        # A CSR that asks for another identity than the one named is refused.
        s, got = self.c.request("POST", "/v1/sign", {"identity": spiffe("shop", "web"),
                                                     "csr": "garbage"}, cert=cert, key=key)
        self.assertEqual(s, 400)
        # A certificate from another CA does not even get through the handshake.
        other = Pki(os.path.join(self.dir, "other"), name="other")
        ocert, okey = other.leaf("o", [f"spiffe://{TD}/node/host-a"])
        with self.assertRaises((ssl.SSLError, ConnectionError)):
            self.c.request("POST", "/v1/sign", {"identity": spiffe("shop", "web"), "csr": text},
                           cert=ocert, key=okey)
        # meshctl sees what was issued.
        r = self.c.meshctl("certs")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(spiffe("shop", "web"), r.stdout)
        self.assertIn("host-a", r.stdout)
        r = self.c.meshctl("-o", "json", "agents")
        self.assertEqual(json.loads(r.stdout)["agents"][0]["node"], "host-a")

    def test_bad_tokens_are_refused(self):
        tok = self.token(uses=1)
        id_, secret = tok["token"].split(".")[1:]
        forged = f"mesh1.{id_}.{'0' * 64}"
        s, body, _, _ = self.enroll(forged)
        self.assertEqual((s, body["error"]), (401, "unknown join token"))
        s, body, _, _ = self.enroll("not-a-token")
        self.assertEqual(s, 401)
        s, body, _, _ = self.enroll(tok["token"], node="db-1")  # the pattern is host-*
        self.assertEqual(s, 401)
        self.assertIn("is for nodes 'host-*', not 'db-1'", body["error"])
        self.assertEqual(self.enroll(tok["token"])[0], 200)
        s, body, _, _ = self.enroll(tok["token"], node="host-b")
        self.assertEqual(s, 401)
        self.assertIn("used up", body["error"])
        short = self.token(ttl="1s")
        time.sleep(1.2)
        s, body, _, _ = self.enroll(short["token"])
        self.assertIn("expired", body["error"])
        revoked = self.token()
        r = self.c.meshctl("token", "revoke", revoked["id"])
        self.assertEqual(r.returncode, 0, r.stderr)
        s, body, _, _ = self.enroll(revoked["token"])
        self.assertIn("revoked", body["error"])
        # The secret is stored hashed only.
        with open(os.path.join(self.c.state_dir, "tokens", revoked["id"] + ".json")) as f:
            self.assertNotIn(revoked["token"].split(".")[2], f.read())

    def test_meshctl(self):
        r = self.c.meshctl("token", "create", "--services", spiffe("shop", "*"), "--node",
                           "web-*", "--uses", "3", "--ttl", "2h")
        self.assertEqual(r.returncode, 0, r.stderr)
        token = r.stdout.strip().splitlines()[-1]
        self.assertTrue(token.startswith("mesh1."))
        r = self.c.meshctl("token", "list")
        self.assertRegex(r.stdout, r"web-\*\s+3/3\s+valid")
        r = self.c.meshctl("-o", "json", "token", "list")
        self.assertEqual(json.loads(r.stdout)["tokens"][0]["uses_left"], 3)
        self.assertEqual(self.c.meshctl("token", "revoke", "0000").returncode, 1)
        self.assertEqual(self.c.meshctl("frobnicate").returncode, 2)
        self.assertEqual(self.c.meshctl("token", "create").returncode, 2)  # no --services
        r = self.c.meshctl("token", "list", env={"MESH_CONTROLLER_TOKEN": "x"})
        self.assertEqual(r.returncode, 0)  # --token-file wins over the environment
        bad = os.path.join(self.dir, "bad.token")
        with open(bad, "w") as f:
            f.write("0" * 64)
        r = subprocess.run([MESHCTL, "-s",
                            f"https://127.0.0.1:{self.c.port}", "--ca", self.c.ca,
                            "--token-file", bad, "token", "list"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 1)
        self.assertIn("admin token is required", r.stderr)
        s, body = self.c.request("POST", "/v1/tokens", {"services": ["spiffe://other.td/x"],
                                                        "node": "web-*"}, admin=True)
        self.assertEqual(s, 400)
        self.assertIn("under spiffe://mesh.test/", body["error"])

    def test_storage_survives_sigkill(self):
        acked = []
        for round_ in range(6):
            stop = threading.Event()

            def create():
                while not stop.is_set():
                    try:
                        s, body = self.c.request("POST", "/v1/tokens",
                                                 {"services": [spiffe("shop", "*")],
                                                  "node": "host-*"}, admin=True)
                        if s == 201:
                            acked.append(body["id"])
                    except (OSError, ssl.SSLError, ValueError):
                        return

            threads = [threading.Thread(target=create) for _ in range(3)]
            for t in threads:
                t.start()
            time.sleep(0.2 + random.random() * 0.5)
            self.c.kill()  # SIGKILL mid-write, most likely
            stop.set()
            for t in threads:
                t.join()
            # Every object file parses; the controller starts and has every acknowledged one.
            tokens = os.path.join(self.c.state_dir, "tokens")
            for f in os.listdir(tokens):
                if f.endswith(".json"):
                    with open(os.path.join(tokens, f)) as fh:
                        json.load(fh)
            self.c.start()
            s, body = self.c.request("GET", "/v1/tokens", admin=True)
            have = {t["id"] for t in body["tokens"]}
            missing = set(acked) - have
            self.assertEqual(missing, set(), f"round {round_}: acknowledged tokens lost")
        self.assertGreater(len(acked), 20)


if __name__ == "__main__":
    main()
