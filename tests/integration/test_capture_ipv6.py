#!/usr/bin/env python3
"""Transparent capture over IPv6 (docs/capture.md, `capture.ipv6`), in the network namespaces
of test_capture.py with IPv6 addresses on its veth pairs too (`nodad`: usable at once):

    C fd77:2::3 ---- fd77:2::2  B  fd77:1::2 ---- fd77:1::1 A

B's agent captures inbound (strict) and takes mTLS on its IPv6 address; A's agent captures
outbound, its service's endpoint being B's IPv6 address. Needs root, `ip netns`, nft, curl
and setpriv; skips with the reason otherwise."""
import json
import os
import shutil
import sys
import unittest

import test_capture as tc
from meshtest import main, wait_for

A6, B6, B6_C, C6 = "fd77:1::1", "fd77:1::2", "fd77:2::2", "fd77:2::3"

SKIP = tc.SKIP
if SKIP:
    print(f"test_capture_ipv6: skipped: {SKIP}", file=sys.stderr)


@unittest.skipIf(SKIP, SKIP or "")
class CaptureIpv6Test(tc.CaptureNet):
    SERVER_HOST = "::"

    def setUp(self):
        super().setUp()
        for ns, ip, dev in ((self.ns_a, A6, "ab1"), (self.ns_b, B6, "ab2"),
                            (self.ns_c, C6, "cb1"), (self.ns_b, B6_C, "cb2")):
            peer = self.ns_c if dev.startswith("cb") else self.ns_a
            tc.run("ip", "-n", ns, "addr", "add", f"{ip}/64", "dev",
                   f"{dev}{peer[-5:]}"[:15], "nodad")

    def agent_b6(self, mode="strict"):
        b = self.agent_b(mode, start=False)
        b.config["listeners"]["inbound"] = f"[{B6}]:{tc.MTLS_PORT}"
        b.config["capture"]["ipv6"] = True
        b.start()
        return b

    def agent_a6(self, **extra):
        a = self.agent_a(start=False)
        a.config["capture"]["ipv6"] = True
        a.config.update(extra)
        a.write_service("api.json", {"service": {
            "name": "api", "namespace": "shop", "protocol": "http",
            "endpoints": [{"address": B6, "port": tc.APP_PORT, "mesh_port": tc.MTLS_PORT}]}})
        return a

    def caller_at_b(self, b, path):
        wait_for(lambda: path in b.logs(), what="B's access log line")
        line = [json.loads(x) for x in b.logs().splitlines()
                if x.startswith("{") and path in x][-1]
        return line["downstream_identity"]

    def test_unmodified_client_reaches_the_server_over_mtls(self):
        b = self.agent_b6()
        a = self.agent_a6()
        a.start()
        self.wait_listening(a, "capture_outbound")
        sets = {s["name"]: s for s in tc.mesh_items(self.ns_a)["set"]}
        self.assertIn("dests6", sets)
        code, body = self.curl(self.ns_a, f"http://[{B6}]:{tc.APP_PORT}/v6")
        self.assertEqual(code, 0, a.logs() + b.logs())
        echo = json.loads(body)
        self.assertEqual((echo["backend"], echo["target"]), ("api-b", "/v6"))
        # Through both agents over mTLS: B names A's node as the caller, and the server saw
        # the caller's certificate forwarded.
        self.assertEqual(self.caller_at_b(b, "/v6"), f"spiffe://{tc.TD}/node/host-a")
        self.assertIn(f"URI=spiffe://{tc.TD}/node/host-a",
                      echo["headers"].get("x-forwarded-client-cert", ""))
        self.assertEqual(a.metric("mesh_capture_outbound_connections_total", result="mesh"), 1)
        # Another port of that host is no mesh endpoint: not captured.
        code, body = self.curl(self.ns_a, f"http://[{B6}]:{tc.PLAIN_PORT}/plain")
        self.assertEqual(code, 0)
        self.assertEqual(json.loads(body)["backend"], "plain-b")
        self.assertEqual(a.metric("mesh_capture_outbound_connections_total",
                                  result="passthrough"), 0)

    def test_client_calls_a_mesh_name_over_ipv6(self):
        # The responder answers AAAA with the service's IPv6 virtual IP, whose range is
        # captured with capture.ipv6; the query itself goes over IPv4 (capture.dns).
        etc = f"/etc/netns/{self.ns_a}"
        os.makedirs(etc, exist_ok=True)
        self.addCleanup(shutil.rmtree, etc, True)
        with open(f"{etc}/resolv.conf", "w") as f:
            f.write(f"nameserver {tc.B_IP}\n")
        # A virtual IP must be routable for connect() to reach the nat hook.
        tc.run("ip", "-n", self.ns_a, "-6", "route", "add", "default", "via", B6)
        b = self.agent_b6()
        a = self.agent_a6(dns_responder={"enabled": True, "upstreams": [f"{tc.B_IP}:53"]})
        a.config["capture"]["dns"] = True
        a.start()
        self.wait_listening(a, "capture_outbound")
        # As the client's user: the agent's (root here) is left out of capture.
        r = tc.run("ip", "netns", "exec", self.ns_a, "setpriv", f"--reuid={tc.NOBODY}",
                   f"--regid={tc.NOBODY}", "--clear-groups", "getent", "ahostsv6", "api.shop",
                   check=False)
        self.assertIn("2001:2:", r.stdout, a.logs())
        code, body = self.curl(self.ns_a, f"http://api.shop:{tc.APP_PORT}/by-name6")
        self.assertEqual(code, 0, a.logs() + b.logs())
        echo = json.loads(body)
        self.assertEqual((echo["backend"], echo["target"]), ("api-b", "/by-name6"))
        self.assertEqual(self.caller_at_b(b, "/by-name6"), f"spiffe://{tc.TD}/node/host-a")
        self.assertEqual(a.metric("mesh_capture_outbound_connections_total", result="mesh"), 1)

    def test_outsider_refused_under_strict(self):
        b = self.agent_b6("strict")
        self.wait_listening(b, "capture_inbound")
        code, body = self.curl(self.ns_c, f"http://[{B6_C}]:{tc.APP_PORT}/direct", user=None)
        self.assertNotEqual(code, 0, f"strict let plaintext through over IPv6: {body}")
        wait_for(lambda: b.metric("mesh_capture_inbound_plaintext_total", result="refused") == 1,
                 what="the refusal counted")
        self.assertEqual(b.metric("mesh_capture_inbound_plaintext_total", result="accepted"), 0)
        # Over IPv4 too, on the same agent.
        code, body = self.curl(self.ns_c, f"http://{tc.B_IP_C}:{tc.APP_PORT}/direct", user=None)
        self.assertNotEqual(code, 0, f"strict let plaintext through over IPv4: {body}")

    def test_outsider_reaches_the_server_under_permissive(self):
        b = self.agent_b6("permissive")
        self.wait_listening(b, "capture_inbound")
        code, body = self.curl(self.ns_c, f"http://[{B6_C}]:{tc.APP_PORT}/direct", user=None)
        self.assertEqual(code, 0, b.logs())
        self.assertEqual(json.loads(body)["backend"], "api-b")
        self.assertEqual(b.metric("mesh_capture_inbound_plaintext_total", result="accepted"), 1)


if __name__ == "__main__":
    main()
