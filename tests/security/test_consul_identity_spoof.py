#!/usr/bin/env python3
"""A rogue registration in Consul: someone who may write Consul's catalog registers an
instance of shop/api whose "mesh-identity" the mesh would never give (another trust domain,
another namespace's account, a node's ID). Callers must leave it out, never fall back to the
default ID for it, and say so: a warning naming the service and the value, and
mesh_consul_refused_identities_total."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))

from meshtest import main, wait_for  # noqa: E402
from test_consul_identity import TD, ConsulIdentityTest, sa  # noqa: E402


class ConsulIdentitySpoofTest(ConsulIdentityTest):
    def test_an_identity_the_mesh_never_gives_leaves_the_instance_out(self):
        a, b, backend = self.hosts("api")
        wait_for(lambda: self.call() == 200, timeout=10, what="A's call to api")
        # Registered by someone else: another trust domain, then another namespace's account,
        # then a node ID. Each instance is left out, never called with the default ID.
        bad = ["spiffe://evil.example/ns/shop/sa/api", sa("bank", "api"),
               f"spiffe://{TD}/node/host-b"]
        for i, value in enumerate(bad):
            sid = self.fake.add_instance("api", f"127.0.0.{10 + i}", backend.port, node="rogue",
                                         meta={"mesh-namespace": "shop", "mesh-identity": value,
                                               "mesh-port": str(self.b_inbound)})
            wait_for(lambda: f"'{value}'" in a.logs(), timeout=10,
                     what=f"the refusal of {value} logged")
            line = next(x for x in a.logs().splitlines() if f"'{value}'" in x)
            self.assertIn(" warning ", line)
            self.assertIn("service 'api'", line)
            self.assertIn("mesh-identity", line)
            self.assertEqual(self.endpoints(a), ["127.0.0.2"])
            self.fake.remove_instance(sid, node="rogue")
        wait_for(lambda: a.metric("mesh_consul_refused_identities_total",
                                  registry="consul") >= len(bad), what="the refusals counted")
        self.assertEqual(self.endpoints(a), ["127.0.0.2"])
        self.assertNotIn("identity", a.json("/v1/services/shop/api"))
        self.assertEqual(self.call(), 200)


def load_tests(loader, tests, pattern):
    """Only this file's test: the class borrows test_consul_identity.py's hosts."""
    import unittest
    names = sorted(n for n in ConsulIdentitySpoofTest.__dict__ if n.startswith("test_"))
    return unittest.TestSuite(ConsulIdentitySpoofTest(n) for n in names)


if __name__ == "__main__":
    main()
