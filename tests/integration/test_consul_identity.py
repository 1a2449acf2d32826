#!/usr/bin/env python3
"""Identities through Consul (tests/fakes/fake_consul.py): the SPIFFE ID one host registers
in Service.Meta "mesh-identity" is the one another host, which knows the service only from
Consul, wants from it over mTLS; a value the mesh would never write (another trust domain,
another namespace, not a service account) leaves the instance out, named in a warning and
counted, and is never trusted (tests/security/test_consul_identity_spoof.py)."""
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fakes"))

from fake_consul import FakeConsul  # noqa: E402
from http_backend import HttpBackend  # noqa: E402
from httptest import Client  # noqa: E402
from meshtest import BackendTest, free_port, main, wait_for  # noqa: E402
from pki import Pki  # noqa: E402

TD = "mesh.test"


def sa(ns, name):
    return f"spiffe://{TD}/ns/{ns}/sa/{name}"


def consul_registry(address, register):
    return {"type": "consul", "name": "consul", "address": address, "min_interval": "20ms",
            "register": register}


class ConsulIdentityTest(BackendTest):
    def setUp(self):
        super().setUp()
        self.fake = FakeConsul(node="host-a").start()
        self.addCleanup(self.fake.stop)
        self.pki = Pki(tempfile.mkdtemp(prefix="mesh-pki-"))
        self.idn = {"mode": "standalone", "ca_cert": self.pki.cert, "ca_key": self.pki.key}

    def hosts(self, service_account, labels=None):
        """Host B runs shop/api as `service_account` and registers it with its Consul agent;
        host A calls api, which it knows only from Consul."""
        backend = HttpBackend("api-b").start()
        self.backends.append(backend)
        self.b_inbound = free_port()
        address = self.fake.add_agent("host-b", "127.0.0.2")
        b = self.agent(name="host-b", config={
            "trust_domain": TD, "identity": self.idn,
            "node": {"name": "host-b", "address": "127.0.0.2"},
            "listeners": {"outbound_http": f"127.0.0.2:{free_port()}",
                          "inbound": f"127.0.0.2:{self.b_inbound}"}},
            services={"api.json": {"service": {
                "name": "api", "namespace": "shop", "protocol": "http", "port": backend.port,
                "service_account": service_account, "labels": labels or {}}}})
        b.config["registries"].append(consul_registry(address, True))
        self.port = free_port()
        a = self.agent(name="host-a", config={
            "trust_domain": TD, "identity": self.idn,
            "node": {"name": "host-a", "address": "127.0.0.1"},
            "listeners": {"outbound_http": f"127.0.0.1:{free_port()}",
                          "inbound": f"127.0.0.1:{free_port()}"}},
            services={"web.json": {"service": {
                "name": "web", "namespace": "shop", "port": free_port(),
                "upstreams": [{"service": "api", "bind_port": self.port, "protocol": "http"}]}}})
        a.config["registries"].append(consul_registry(self.fake.address, False))
        for x in (a, b):
            x.config["readiness"] = {"registry_sync_timeout": "3s"}
        b.start()
        a.start()
        wait_for(lambda: self.listening("127.0.0.1", self.port), what="A's upstream listener")
        return a, b, backend

    @staticmethod
    def listening(host, port):
        import socket
        try:
            socket.create_connection((host, port), timeout=1).close()
            return True
        except OSError:
            return False

    def call(self):
        c = Client(self.port, host="api")
        try:
            return c.echo("/")[0]
        finally:
            c.close()

    def endpoints(self, agent):
        s = agent.services().get("shop/api")
        return sorted(e["address"] for e in s["endpoints"]) if s else []

    def test_caller_wants_the_identity_registered_in_consul(self):
        a, b, _ = self.hosts("payments")
        meta = self.fake.agents["host-b"]["mesh-shop-api"]["Meta"]
        self.assertEqual(meta["mesh-identity"], sa("shop", "payments"))
        # A has no file naming api: the ID it wants is the one Consul carries, not sa/api.
        wait_for(lambda: self.call() == 200, timeout=10, what="A's call to api as 'payments'")
        self.assertEqual(a.json("/v1/services/shop/api")["identity"], sa("shop", "payments"))
        self.assertEqual(a.metric("mesh_consul_refused_identities_total", registry="consul"), 0)

    def test_identity_and_labels_survive_a_restart_with_the_registries_down(self):
        a, b, _ = self.hosts("payments", labels={"version": "v1"})
        wait_for(lambda: self.call() == 200, timeout=10, what="A's call to api as 'payments'")
        lkg = os.path.join(a.state_dir, "catalog.json")

        def kept():
            try:
                with open(lkg) as f:
                    doc = json.load(f)
            except (OSError, ValueError):
                return False
            return any(s["name"] == "api" and s.get("identity") == sa("shop", "payments")
                       for s in doc["sources"].get("consul", []))

        wait_for(kept, what="api's identity in A's last-known-good catalog")
        # B's local services file is gone while B is down, and so is Consul for A. (A stops
        # first: B's clean stop deregisters api, which A would learn.)
        self.assertEqual(a.stop(), 0)
        self.assertEqual(b.stop(), 0)
        shutil.rmtree(b.services_dir)
        b.config["readiness"] = {"registry_sync_timeout": "500ms"}
        b.start()
        # B restored shop/api from its last-known-good local services: registered again
        # with its labels, which a Route's subsets pick, and its identity.
        wait_for(lambda: "mesh-shop-api" in self.fake.agents["host-b"], timeout=10,
                 what="B's api registered again")
        meta = self.fake.agents["host-b"]["mesh-shop-api"]["Meta"]
        self.assertEqual(meta.get("version"), "v1")
        self.assertEqual(meta["mesh-identity"], sa("shop", "payments"))
        self.fake.stop()
        a.config["readiness"] = {"registry_sync_timeout": "500ms"}
        a.start()
        svc = a.json("/v1/services/shop/api")
        self.assertEqual(svc["identity"], sa("shop", "payments"))
        self.assertEqual([e["labels"].get("version") for e in svc["endpoints"]], ["v1"])
        wait_for(lambda: self.listening("127.0.0.1", self.port), what="A's upstream listener")
        self.assertEqual(self.call(), 200)


if __name__ == "__main__":
    main()
