#!/usr/bin/env python3
"""An enrolled node inventing traffic (issue 18): the service graph is built from the nodes'
reports, so a compromised node could draw calls between other nodes' services, hide an
edge behind a fake one, or blame a service for errors it never had. A node's report counts
only its own side of each call: calls its proxy made for its local services (or for the
node itself, "unknown"), and calls into them; the rest is left out of the graph."""
import os
import unittest

from controllertest import TD, Controller, csr
from meshtest import main


def edge(reporter, src, dst, requests, errors=0):
    return {"reporter": reporter, "protocol": "http",
            "source_namespace": "unknown" if src == "unknown" else "shop",
            "source_workload": src, "destination_namespace": "shop",
            "destination_service": dst, "requests": requests, "errors": errors,
            "duration_us": 1000 * requests, "duration_buckets": [requests] + [0] * 19}


class GraphSpoofingTest(unittest.TestCase):
    def setUp(self):
        self.c = Controller({"report_interval": "1s"}).start()
        self.addCleanup(self.c.stop)

    def node(self, name):
        body = {"services": [f"spiffe://{TD}/ns/shop/*"], "node": name, "uses": 1}
        s, tok = self.c.request("POST", "/v1/tokens", body, admin=True)
        self.assertEqual(s, 201, tok)
        text, key = csr(self.c.tmp, name)
        s, doc = self.c.request("POST", "/v1/enroll", {"token": tok["token"], "node": name,
                                                        "csr": text})
        self.assertEqual(s, 200, doc)
        cert = os.path.join(self.c.tmp, f"{name}.crt")
        with open(cert, "w") as f:
            f.write(doc["certificate"])
        return cert, key

    def report(self, who, service, traffic):
        cert, key = who
        svc = [{"namespace": "shop", "name": service, "protocol": "http", "port": 8080,
                "labels": {}, "identity": f"spiffe://{TD}/ns/shop/sa/{service}",
                "health": "healthy"}]
        s, body = self.c.request("POST", "/v1/report", {"address": "", "inbound_port": 15008,
                                                        "services": svc, "traffic": traffic},
                                 cert=cert, key=key)
        self.assertEqual(s, 200, body)

    def test_a_node_reports_only_its_own_side_of_calls(self):
        evil = self.node("evil")
        # Its own: web calling api (as the caller), the node itself calling api.
        own = [edge("source", "web", "api", 0), edge("source", "unknown", "api", 0)]
        # Not its own: calls between billing and ledger, which run elsewhere, with errors.
        fake = [edge("source", "billing", "ledger", 0), edge("destination", "billing",
                                                            "ledger", 0)]
        self.report(evil, "web", own + fake)
        own = [edge("source", "web", "api", 100), edge("source", "unknown", "api", 10)]
        fake = [edge("source", "billing", "ledger", 500, 400),
                edge("destination", "billing", "ledger", 500, 400)]
        self.report(evil, "web", own + fake)
        s, g = self.c.request("GET", "/v1/graph", admin=True)
        self.assertEqual(s, 200, g)
        pairs = {(e["source"], e["destination"]) for e in g["edges"]}
        self.assertEqual(pairs, {("shop/web", "shop/api"), ("unknown/unknown", "shop/api")})
        self.assertNotIn("shop/ledger", {n["id"] for n in g["nodes"]})
        self.assertNotIn("shop/billing", {n["id"] for n in g["nodes"]})

    def test_unknown_source_in_another_namespace_blames_no_one(self):
        # "unknown" as source is the node itself (namespace "unknown"); named in namespace
        # "shop" it could be any caller, and its errors would land on the victim's signals.
        evil, victim = self.node("evil"), self.node("victim")

        def spoof(requests, errors):
            return {"reporter": "source", "protocol": "http", "source_namespace": "shop",
                    "source_workload": "unknown", "destination_namespace": "shop",
                    "destination_service": "ledger", "requests": requests, "errors": errors,
                    "duration_us": 1000 * requests,
                    "duration_buckets": [requests] + [0] * 19}
        self.report(victim, "ledger", [edge("destination", "web", "ledger", 0)])
        self.report(evil, "web", [spoof(0, 0)])
        self.report(victim, "ledger", [edge("destination", "web", "ledger", 100)])
        self.report(evil, "web", [spoof(1000, 900)])
        s, g = self.c.request("GET", "/v1/graph", admin=True)
        self.assertEqual(s, 200, g)
        ledger = next(n for n in g["nodes"] if n["id"] == "shop/ledger")
        self.assertEqual(ledger["error_ratio"], 0, ledger)
        self.assertNotIn(("shop/unknown", "shop/ledger"),
                         {(e["source"], e["destination"]) for e in g["edges"]})

    def test_a_node_that_leaves_leaves_the_graph(self):
        # Its traffic is forgotten when it leaves (memory stays bounded with node churn).
        web = self.node("web-host")
        self.report(web, "web", [edge("source", "web", "api", 0)])
        self.report(web, "web", [edge("source", "web", "api", 100)])
        s, g = self.c.request("GET", "/v1/graph", admin=True)
        self.assertEqual(s, 200, g)
        self.assertIn(("shop/web", "shop/api"),
                      {(e["source"], e["destination"]) for e in g["edges"]})
        s, body = self.c.request("POST", "/v1/leave", {}, cert=web[0], key=web[1])
        self.assertEqual(s, 200, body)
        s, g = self.c.request("GET", "/v1/graph", admin=True)
        self.assertEqual(s, 200, g)
        self.assertEqual(g["edges"], [], g)
        self.assertNotIn("shop/web", {n["id"] for n in g["nodes"]}, g)


if __name__ == "__main__":
    main()
