#!/usr/bin/env python3
"""One identity scheme for VMs and Kubernetes (spiffe://<td>/ns/<ns>/sa/<sa>), the
operator changing a node's allowed identities after enrollment, the caller's verified
identity handed to the application (X-Forwarded-Client-Cert), and a controller change index
that never goes backwards, across restarts too."""
import hashlib
import json
import os
import shutil
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

    def enroll(self, services, node="host-a"):
        s, tok = self.c.request("POST", "/v1/tokens", {"services": services, "node": node},
                                admin=True)
        self.assertEqual(s, 201, tok)
        text, key = csr(self.dir, node)
        s, body = self.c.request("POST", "/v1/enroll",
                                 {"token": tok["token"], "node": node, "csr": text})
        self.assertEqual(s, 200, body)
        cert = os.path.join(self.dir, f"{node}.crt")
        with open(cert, "w") as f:
            f.write(body["certificate"])
        return cert, key

    def sign(self, node_cert, identity):
        text, _ = csr(self.dir, "svc")
        return self.c.request("POST", "/v1/sign", {"identity": identity, "csr": text},
                              cert=node_cert[0], key=node_cert[1])

    def test_older_form_patterns_allow_the_current_form(self):
        # A token written for .../ns/shop/svc/* (before the scheme changed) lets its node
        # get .../ns/shop/sa/<name>, and nothing outside shop.
        node = self.enroll([f"spiffe://{TD}/ns/shop/svc/*"])
        self.assertEqual(self.sign(node, sa("shop", "api"))[0], 200)
        self.assertEqual(self.sign(node, sa("billing", "api"))[0], 403)

    def test_operator_changes_a_nodes_allowed_identities(self):
        node = self.enroll([sa("shop", "web")])
        self.assertEqual(self.sign(node, sa("shop", "web"))[0], 200)
        s, body = self.sign(node, sa("shop", "api"))
        self.assertEqual(s, 403, body)
        r = self.c.meshctl("node", "set-services", "host-a", sa("shop", "api"),
                           sa("billing", "*"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("host-a", r.stdout)
        # The next signing request sees the new list; the old entry is gone.
        self.assertEqual(self.sign(node, sa("shop", "api"))[0], 200)
        self.assertEqual(self.sign(node, sa("billing", "ledger"))[0], 200)
        self.assertEqual(self.sign(node, sa("shop", "web"))[0], 403)
        r = self.c.meshctl("-o", "json", "status")
        agent = [a for a in json.loads(r.stdout)["agents"] if a["node"] == "host-a"][0]
        self.assertEqual(agent["services"], [sa("shop", "api"), sa("billing", "*")])
        r = self.c.meshctl("-o", "json", "node", "set-services", "host-a", sa("shop", "web"))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["services"], [sa("shop", "web")])
        # Refused, as on a join token: node and controller identities, the whole domain.
        for bad, words in ((f"spiffe://{TD}/*", "whole trust domain"),
                           (f"spiffe://{TD}/node/host-b", "node identities"),
                           (f"spiffe://{TD}/mesh-*", "controller"),
                           ("spiffe://other.test/ns/shop/sa/web", f"under spiffe://{TD}/")):
            r = self.c.meshctl("node", "set-services", "host-a", bad)
            self.assertEqual(r.returncode, 1, (bad, r.stdout))
            self.assertIn(words, r.stderr)
        self.assertEqual(self.sign(node, sa("shop", "web"))[0], 200)  # left as it was
        r = self.c.meshctl("node", "set-services", "no-such-node", sa("shop", "web"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("no such node", r.stderr)
        r = self.c.meshctl("node", "set-services", "host-a")
        self.assertEqual(r.returncode, 2)  # usage: at least one pattern
        self.assertIn("set-services", r.stderr)
        r = self.c.meshctl("node", "set-services", "--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("PATTERN", r.stdout)


class VmIdentityTest(BackendTest):
    """Agent B hosts 'api' (a real backend); agent A hosts 'web', which calls api through
    both agents over mTLS. Identities come from a shared local CA (standalone mode)."""

    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="mesh-pki-")
        self.pki = Pki(self.tmp)

    def pair(self, web_extra=None, authz=None, api_extra=None, remote_extra=None,
             identity_b=None):
        backend = HttpBackend("api-b").start()
        self.backends.append(backend)
        idn = {"mode": "standalone", "ca_cert": self.pki.cert, "ca_key": self.pki.key}
        self.b_inbound = free_port()
        self.b_plain = free_port()
        b_cfg = {"trust_domain": TD, "identity": identity_b or idn,
                 "node": {"name": "host-b", "address": "127.0.0.2"},
                 "listeners": {"outbound_http": f"127.0.0.2:{free_port()}",
                               "inbound": f"127.0.0.2:{self.b_inbound}"}}
        api = {"name": "api", "namespace": "shop", "protocol": "http", "port": backend.port,
               "inbound_port": self.b_plain}
        api.update(api_extra or {})
        b = self.agent(name="host-b", config=b_cfg, services={"api.json": {"service": api}})
        if authz:
            b.write_resource("authz.json", {"kind": "AuthorizationPolicy", "name": "api",
                                            "namespace": "shop", "spec": authz})
        self.port = free_port()
        a_cfg = {"trust_domain": TD, "identity": idn,
                 "node": {"name": "host-a", "address": "127.0.0.1"},
                 "listeners": {"outbound_http": f"127.0.0.1:{free_port()}",
                               "inbound": f"127.0.0.1:{free_port()}"}}
        web = {"name": "web", "namespace": "shop", "port": free_port(),
               "upstreams": [{"service": "api", "bind_port": self.port, "protocol": "http"}]}
        web.update(web_extra or {})
        remote = {"name": "api", "namespace": "shop", "protocol": "http",
                  "endpoints": [{"address": "127.0.0.2", "port": backend.port,
                                 "mesh_port": self.b_inbound}]}
        remote.update(remote_extra or {})
        a = self.agent(name="host-a", config=a_cfg, services={
            "web.json": {"service": web}, "api.json": {"service": remote}})
        b.start()
        a.start()
        wait_for(lambda: listening("127.0.0.2", self.b_inbound), what="B's mTLS listener")
        wait_for(lambda: listening("127.0.0.1", self.port), what="A's upstream listener")
        return a, b, backend

    def cert_of(self, agent, identity):
        """The PEM of the certificate the agent holds for identity (its state dir)."""
        certs = os.path.join(agent.state_dir, "certs")
        for root, _, files in os.walk(certs):
            for f in files:
                if not f.endswith(".crt"):
                    continue
                with open(os.path.join(root, f)) as fh:
                    text = fh.read()
                der = ssl.PEM_cert_to_DER_cert(
                    text.split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n")
                if identity.encode() in der:
                    return text
        raise AssertionError(f"no certificate for {identity} in {certs}")

    def test_policy_names_a_vm_service_by_its_service_account(self):
        # 'web' runs as service account 'storefront': a policy names that, as it would
        # name a Kubernetes workload; any other caller is refused.
        a, b, backend = self.pair(web_extra={"service_account": "storefront"},
                                  authz={"allow": [{"principals": [sa("shop", "storefront")]}]})
        wait_for(lambda: self.call() == 200, timeout=10, what="web's call allowed by its SA")
        ids = [x["id"] for x in a.json("/v1/identity")["certificates"]]
        self.assertIn(sa("shop", "storefront"), ids)
        self.assertIn(sa("shop", "api"), [x["id"] for x in b.json("/v1/identity")["certificates"]])
        b.write_resource("authz.json", {"kind": "AuthorizationPolicy", "name": "api",
                                        "namespace": "shop",
                                        "spec": {"allow": [{"principals": [sa("shop", "web")]}]}})
        b.reload()
        wait_for(lambda: self.call() == 403, timeout=10,
                 what="the policy naming another service account refusing web")

    def call(self):
        c = Client(self.port, host="api")
        try:
            return c.echo("/")[0]
        finally:
            c.close()

    def test_caller_wants_the_service_account_its_service_file_names(self):
        # B's api runs as 'payments'; A's file for the remote api says so: A wants that ID.
        a, b, _ = self.pair(api_extra={"service_account": "payments"},
                            remote_extra={"service_account": "payments"})
        wait_for(lambda: self.call() == 200, timeout=10, what="a call to api as 'payments'")
        self.assertIn(sa("shop", "payments"), b.logs() + json.dumps(b.json("/v1/identity")))
        # Without it, A wants the default (the service's name) and refuses B's certificate.
        a.write_service("api.json", {"service": {
            "name": "api", "namespace": "shop", "protocol": "http",
            "endpoints": [{"address": "127.0.0.2", "port": self.backends[-1].port,
                           "mesh_port": self.b_inbound}]}})
        a.reload()
        wait_for(lambda: self.call() == 503, timeout=10,
                 what="A refusing an agent that presents another service account")
        wait_for(lambda: "not the expected SPIFFE ID" in a.logs(), what="the refusal logged")

    def test_older_form_certificates_and_policies_keep_working(self):
        # B is not upgraded yet: its PKI issued the older form, .../ns/shop/svc/api, and its
        # policy names callers in that form. A (upgraded) presents .../sa/web.
        d = os.path.join(self.tmp, "files")
        os.makedirs(os.path.join(d, "shop"))
        for name, uri, target in (("bnode", f"spiffe://{TD}/node/host-b", "node"),
                                  ("bapi", f"spiffe://{TD}/ns/shop/svc/api", "shop/api")):
            crt, key = self.pki.leaf(name, [uri])
            shutil.copy(crt, os.path.join(d, target + ".crt"))
            shutil.copy(key, os.path.join(d, target + ".key"))
        old_web = f"spiffe://{TD}/ns/shop/svc/web"
        a, b, _ = self.pair(identity_b={"mode": "files", "cert_dir": d,
                                        "trust_bundle": self.pki.cert},
                            authz={"allow": [{"principals": [old_web]}]})
        wait_for(lambda: self.call() == 200, timeout=10,
                 what="an upgraded caller and a not yet upgraded service")
        # A caller still presenting the older form meets a policy in the current form.
        b.write_resource("authz.json", {"kind": "AuthorizationPolicy", "name": "api",
                                        "namespace": "shop",
                                        "spec": {"allow": [{"principals": [sa("shop", "web")]}]}})
        b.reload()
        crt, key = self.pki.leaf("oldweb", [old_web])
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_verify_locations(self.pki.cert)
        ctx.load_cert_chain(crt, key)

        def old_caller():
            raw = socket.create_connection(("127.0.0.2", self.b_inbound), timeout=10)
            with ctx.wrap_socket(raw, server_hostname="api.shop") as s:
                s.sendall(b"GET / HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n")
                return s.recv(100).split(b" ")[1]

        wait_for(lambda: old_caller() == b"200", timeout=10, what="the older-form caller allowed")

    def test_service_account_must_be_a_dns_label(self):
        a = self.agent(name="host-a", config={"trust_domain": TD}, services={
            "web.json": {"service": {"name": "web", "namespace": "shop", "port": free_port(),
                                     "service_account": "Store_Front"}}})
        a.start(wait_ready=False)
        wait_for(lambda: "service_account" in a.logs(), timeout=10,
                 what="the bad service_account reported")
        self.assertIn("DNS label", a.logs())

    def test_backend_sees_the_callers_verified_identity(self):
        a, b, backend = self.pair()
        c = Client(self.port, host="api")
        self.addCleanup(c.close)
        status, _, echo = c.echo("/", headers={"X-Forwarded-Client-Cert": "URI=spiffe://"
                                               f"{TD}/ns/shop/sa/admin"})
        self.assertEqual(status, 200)
        xfcc = [v for k, v in echo["headers"].items() if k.lower() == "x-forwarded-client-cert"]
        web_hash = pem_sha256(self.cert_of(a, sa("shop", "web")))
        self.assertEqual(xfcc, [f"By={sa('shop', 'api')};Hash={web_hash};"
                                f"URI={sa('shop', 'web')}"])
        # The plain inbound listener: no verified caller, so no XFCC, and a forged one is
        # removed.
        plain = Client(self.b_plain, host="api")
        self.addCleanup(plain.close)
        status, _, echo = plain.echo("/", headers={"X-Forwarded-Client-Cert": "URI=forged"})
        self.assertEqual(status, 200)
        self.assertNotIn("x-forwarded-client-cert", {k.lower() for k in echo["headers"]})


if __name__ == "__main__":
    main()
