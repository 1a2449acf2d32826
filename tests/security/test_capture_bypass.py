#!/usr/bin/env python3
"""Attacks on transparent capture (docs/capture.md), in the network namespaces of
tests/integration/test_capture.py: going around the capture rules by connecting to the
capture listeners themselves. A connection that nftables did not redirect has itself as its
original destination; the agent must refuse it, not hand it to a workload (a bypass of
strict inbound) nor pass it through to itself (a loop that eats file descriptors)."""
import unittest

from meshtest import main, wait_for
from test_capture import APP_PORT, B_IP_C, SKIP, CaptureNet


@unittest.skipIf(SKIP, SKIP or "")
class CaptureBypassTest(CaptureNet):
    def test_outsider_straight_to_the_inbound_capture_port(self):
        b = self.agent_b("permissive")  # permissive: a workload is there to be reached
        self.wait_listening(b, "capture_inbound")
        code, body = self.curl(self.ns_c, f"http://{B_IP_C}:15006/", user=None)
        self.assertNotEqual(code, 0, f"the inbound capture port served a direct call: {body}")
        wait_for(lambda: b.metric("mesh_capture_inbound_plaintext_total",
                                  result="refused") == 1, what="the refusal counted")
        self.assertEqual(b.metric("mesh_capture_inbound_plaintext_total", result="accepted"), 0)
        # Redirected, the same client does reach the workload: the refusal is the bypass's.
        code, _ = self.curl(self.ns_c, f"http://{B_IP_C}:{APP_PORT}/", user=None)
        self.assertEqual(code, 0)

    def test_local_process_straight_to_the_outbound_capture_port(self):
        a = self.agent_a()
        self.wait_listening(a, "capture_outbound")
        for _ in range(3):
            code, _ = self.curl(self.ns_a, "http://127.0.0.1:15002/")
            self.assertNotEqual(code, 0)
        wait_for(lambda: a.metric("mesh_capture_outbound_connections_total",
                                  result="refused") == 3, what="three refusals counted")
        self.assertEqual(a.metric("mesh_capture_outbound_connections_total",
                                  result="passthrough"), 0)
        self.assertEqual(a.metric("mesh_proxy_active_connections"), 0)


if __name__ == "__main__":
    main()
