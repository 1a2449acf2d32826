#!/usr/bin/env python3
"""Hosts that find each other through Consul (tests/fakes/fake_consul.py, one Consul client
agent per host sharing one catalog): what one host registers — its services' namespace and
labels in Service.Meta — another discovers, so a Route's subsets over `version` pick the same
endpoints as they would from service files."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fakes"))

from fake_consul import FakeConsul  # noqa: E402
from http_backend import HttpBackend  # noqa: E402
from httptest import HttpTest  # noqa: E402
from meshtest import free_port, main, wait_for  # noqa: E402

V1, V2 = {"version": "v1"}, {"version": "v2"}


def consul_registry(address, register):
    return {"type": "consul", "name": "consul", "address": address, "min_interval": "20ms",
            "register": register}


def labels_of(agent, key):
    s = agent.services().get(key)
    return sorted(tuple(sorted((k, v) for k, v in e["labels"].items() if k != "mesh/registry"))
                  for e in s["endpoints"]) if s else []


class ConsulMeshTest(HttpTest):
    def setUp(self):
        super().setUp()
        self.fake = FakeConsul(node="host-a").start()
        self.addCleanup(self.fake.stop)

    def backend_on(self, name, ip):
        """A backend on its own loopback address, as on a host of its own."""
        b = HttpBackend(name)
        b.host = ip
        self.backends.append(b.start())
        return b

    def host(self, name, backend, labels):
        """A host at the backend's address whose local service shop/api (the backend) is
        registered with its own Consul agent."""
        address = self.fake.add_agent(name, backend.host)
        a = self.agent(name=name, services={"api.json": {"service": {
            "name": "api", "namespace": "shop", "protocol": "http", "port": backend.port,
            "address": backend.host, "labels": labels}}})
        a.config["node"]["address"] = backend.host
        a.config["registries"].append(consul_registry(address, True))
        a.config["readiness"] = {"registry_sync_timeout": "3s"}
        return a.start()

    def test_canary_route_over_versions_registered_through_consul(self):
        v1, v2 = self.backend_on("v1", "127.0.0.2"), self.backend_on("v2", "127.0.0.3")
        b = self.host("host-b", v1, {"version": "v1", "app.kubernetes.io/part-of": "shop"})
        hc = self.host("host-c", v2, V2)
        # Host A has no file naming 'api': it knows it only from Consul.
        self.port = free_port()
        a = self.agent(name="host-a", services={"app.json": {"service": {
            "name": "app", "namespace": "shop", "port": free_port(), "upstreams": [
                {"service": "api", "bind_port": self.port, "protocol": "http"}]}}})
        a.config["registries"].append(consul_registry(self.fake.address, False))
        a.config["readiness"] = {"registry_sync_timeout": "3s"}
        a.write_resource("route.json", {"kind": "Route", "name": "api", "namespace": "shop",
                                        "spec": {"service": "api", "rules": [{"destinations": [
                                            {"service": "api", "subset": V1, "weight": 90},
                                            {"service": "api", "subset": V2, "weight": 10}]}]}})
        a.start()
        # The namespace and the labels travel in Service.Meta; a label Consul cannot carry
        # is named in a warning, not dropped in silence.
        meta = self.fake.agents["host-b"]["mesh-shop-api"]["Meta"]
        self.assertEqual((meta["mesh-namespace"], meta["version"]), ("shop", "v1"))
        self.assertNotIn("app.kubernetes.io/part-of", str(meta))
        wait_for(lambda: "'app.kubernetes.io/part-of'" in b.logs(), what="the warning")
        line = next(x for x in b.logs().splitlines() if "'app.kubernetes.io/part-of'" in x)
        self.assertIn(" warning ", line)
        self.assertIn("'shop/api'", line)
        wait_for(lambda: labels_of(a, "shop/api") == [(("version", "v1"),), (("version", "v2"),)],
                 timeout=10, what="shop/api's two versions from Consul")
        self.assertNotIn("default/api", a.services())
        wait_for(lambda: self.listening(self.port), what="the upstream listener")
        c = self.client()
        n = 2000
        for _ in range(n):
            self.assertEqual(c.request("GET", "/")[0], 200)
        c.close()
        share = v2.count() / n
        print(f"v2 share {share:.3f} over {n} requests (want 0.10 +- 0.03)")
        self.assertEqual(v1.count() + v2.count(), n)
        self.assertLess(abs(share - 0.10), 0.03)
        # On host C its own endpoint, from its file and from Consul, is one endpoint whose
        # labels agree: the Meta mapping gives back exactly what was registered. (On B they
        # differ by the label Consul could not carry.)
        wait_for(lambda: len(labels_of(hc, "shop/api")) == 2, timeout=10, what="C sees B")
        own = [e for e in hc.services()["shop/api"]["endpoints"] if e["address"] == "127.0.0.3"]
        self.assertEqual(len(own), 1)
        self.assertEqual(sorted(hc.services()["shop/api"]["registries"]), ["consul", "files"])
        self.assertEqual(hc.metric("mesh_catalog_conflicts_total", kind="labels"), 0)


if __name__ == "__main__":
    main()
