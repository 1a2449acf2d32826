#!/usr/bin/env python3
"""Readiness with mTLS on: READY=1 and /readyz wait until the node and every local service
hold a certificate and the data plane serves with them (their SNI routes); the status
says what is awaited meanwhile."""
import os

from controllertest import Controller
from meshtest import AgentTest, main, wait_for

TD = "mesh.test"


class CertificateReadinessTest(AgentTest):
    def test_not_ready_until_the_certificates_are_in(self):
        ctl = Controller({"trust_domain": TD})
        ctl.start()
        try:
            r = ctl.meshctl("token", "create", "--services", f"spiffe://{TD}/ns/shop/*", "--node",
                            "host-*", "--uses", "1")
            self.assertEqual(r.returncode, 0, r.stderr)
            token = os.path.join(ctl.tmp, "join.token")
            with open(token, "w") as f:
                f.write(r.stdout.strip().splitlines()[-1] + "\n")
            ctl.stop()  # away at the agent's first start: no certificate to be had
            a = self.agent(name="host-a", config={
                "node": {"name": "host-a", "zone": "zone-a", "address": "127.0.0.1"},
                "trust_domain": TD,
                "identity": {"mode": "controller", "controller": f"https://127.0.0.1:{ctl.port}",
                             "controller_ca": ctl.ca, "join_token_file": token}},
                services={"api.json": {"service": {"name": "api", "namespace": "shop",
                                                   "port": 9}}})
            a.start(wait_ready=False)
            wait_for(lambda: "certificate" in a.get("/readyz")[2].decode(),
                     what="/readyz saying it waits for a certificate")
            self.assertEqual(a.get("/readyz")[0], 503)
            self.assertEqual(a.notify.count("READY", "1", window=1.0), 0, "READY=1 was sent")
            self.assertIn("waiting for the node's certificate", a.json("/v1/status")["status"])
            self.assertEqual(a.json("/v1/proxy")["listeners"], [
                l for l in a.json("/v1/proxy")["listeners"] if l["kind"] != "inbound_mtls"])
            ctl.start()  # back, the same CA: the node enrolls, then gets shop/api's
            a.wait_ready()
            ids = [c["id"] for c in a.json("/v1/identity")["certificates"]]
            self.assertIn(f"spiffe://{TD}/node/host-a", ids)
            self.assertIn(f"spiffe://{TD}/ns/shop/sa/api", ids)
            self.assertEqual(a.get("/readyz")[0], 200)
            kinds = {l["kind"]: l["state"] for l in a.json("/v1/proxy")["listeners"]}
            self.assertEqual(kinds.get("inbound_mtls"), "listening")
            self.assertIn("mtls_service", kinds)
        finally:
            ctl.stop()


if __name__ == "__main__":
    main()
