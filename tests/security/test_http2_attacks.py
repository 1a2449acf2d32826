#!/usr/bin/env python3
"""Attacks on HTTP/2 from clients (docs/http2.md): rapid reset (CVE-2023-44487) and
MadeYouReset (CVE-2025-8671), header lists over the limit, more streams than
SETTINGS_MAX_CONCURRENT_STREAMS, streams left open or stalled, uploads that would starve the
connection's flow-control window. Each is answered as RFC 9113 says, and the agent keeps
serving. Raw frames with python3-h2 (h2client.py)."""
import json

from httptest import HttpTest
from meshtest import main
from test_http2 import curl_h2, h2client

ENHANCE_YOUR_CALM = 11
REFUSED_STREAM = 7


NO_ERROR = 0
CANCEL = 8

# Stream A's upstream waits far longer than any test runs; the rest is answered at once.
SLOW_ROUTE = {"rules": [
    {"match": [{"path": {"prefix": "/slow/"}}], "destinations": [{"service": "api"}],
     "timeout": "0s", "fault": {"delay": {"duration": "600s"}}},
    {"match": [{"path": {"prefix": "/deny"}}], "destinations": [{"service": "api"}],
     "fault": {"abort": {"status": 403}}},
    {"destinations": [{"service": "api"}]},
]}


class Http2AttackTest(HttpTest):
    def agent_with(self, route=None, **http):
        b = self.backend("b1")
        return self.http_agent([b], route=route, config={"proxy": {"http": http}})

    def test_rapid_reset_gets_goaway_and_the_agent_stays_up(self):
        # A window far longer than the attack takes, however loaded the machine.
        a = self.agent_with(http2_max_resets=50, http2_reset_window="60s")
        out = h2client(self, "rapid_reset", self.port, 2000)
        self.assertEqual(out["goaway"], ENHANCE_YOUR_CALM, out)
        self.assertTrue(out["closed"], "the connection stayed open after the GOAWAY")
        # Other clients are still served.
        status, _, body, _ = curl_h2(self, self.port, "/after")
        self.assertEqual((status, json.loads(body)["target"]), (200, "/after"))
        self.assertEqual(a.get("/healthz")[0], 200)
        self.assertEqual(a.metric("mesh_proxy_http2_calm_total"), 1)

    def test_oversized_header_list_is_refused_with_431(self):
        self.agent_with(http2_max_header_list_size=8192)
        out = h2client(self, "big_headers", self.port, 20000)
        self.assertEqual(out["big"]["status"], 431, out["big"]["headers"])
        # The connection and its other streams go on.
        self.assertEqual((out["after"]["status"], out["after"]["echo"]["target"]),
                         (200, "/after"))

    def test_a_target_the_translation_could_reroute_is_refused(self):
        # An unknown :scheme lifts nghttp2's check of :path, and an absolute :path would
        # become an absolute-form request line routed by its own host, not :authority.
        self.agent_with()
        out = h2client(self, "odd_targets", self.port)
        self.assertEqual(out["absolute"]["status"], 400, out["absolute"])
        self.assertEqual(out["scheme"]["status"], 400, out["scheme"])
        self.assertEqual((out["after"]["status"], out["after"]["echo"]["target"]),
                         (200, "/after"))

    def test_streams_over_the_limit_are_refused(self):
        self.agent_with(http2_max_concurrent_streams=2)
        out = h2client(self, "too_many_streams", self.port, 4)
        refused = [r for r in out["reset"] if r is not None]
        self.assertTrue(refused, out)
        self.assertEqual(set(refused), {REFUSED_STREAM}, out)
        served = [s for s in out["status"] if s is not None]
        self.assertEqual(served, [200] * len(served))
        self.assertLessEqual(len(refused), 2)

    def test_cancelled_uploads_give_back_their_connection_window(self):
        # Streams whose DATA is still unread when the client cancels them: those bytes must
        # open the connection's window again, or no stream can send DATA any more. (One
        # stream at a time: the connection's window is one stream's.)
        self.agent_with(route=SLOW_ROUTE, http2_max_concurrent_streams=1)
        out = h2client(self, "cancel_uploads", self.port)
        self.assertEqual(out["b"]["status"], 200, out)
        self.assertEqual(out["b"]["echo"]["body"], "b" * 1024)

    def test_server_side_resets_count_as_rapid_reset(self):
        # MadeYouReset (CVE-2025-8671): frames that make the server reset each stream, after
        # each has started its request, count like the client's own RST_STREAMs.
        a = self.agent_with(http2_max_resets=5, http2_reset_window="60s")
        out = h2client(self, "made_you_reset", self.port, 6)
        self.assertEqual(out["goaway"], ENHANCE_YOUR_CALM, out)
        self.assertTrue(out["closed"], "the connection stayed open after the GOAWAY")
        self.assertEqual(a.metric("mesh_proxy_http2_calm_total"), 1)
        status, _, body, _ = curl_h2(self, self.port, "/after")
        self.assertEqual((status, json.loads(body)["target"]), (200, "/after"))

    def test_answered_stream_whose_body_never_ends_is_reset(self):
        # Answered early (403) while the request's END_STREAM never comes: once its stream
        # connection is gone the stream ends with RST_STREAM(NO_ERROR) (RFC 9113 8.1).
        self.agent_with(route=SLOW_ROUTE, idle_timeout="1s")
        out = h2client(self, "no_end_stream", self.port, "/deny")
        self.assertEqual((out["status"], out["reset"]), (403, NO_ERROR), out)

    def test_stalled_response_on_a_zero_window_is_reset(self):
        # The client never opens its window: the body cannot go, the stream connection
        # closes after idle_timeout, the stream is reset after idle_timeout more without
        # progress, and the connection (no stream left) closes after idle_timeout.
        self.agent_with(idle_timeout="1s")
        out = h2client(self, "zero_window", self.port, "/z?size=50000")
        self.assertEqual((out["status"], out["reset"]), (200, CANCEL), out)
        self.assertTrue(out["closed"], out)

    def test_one_waiting_upload_does_not_stall_the_others(self):
        # Stream A's body waits for its (delayed) upstream; stream B's upload on the same
        # connection goes through meanwhile: the connection's window is not A's to fill.
        self.agent_with(route=SLOW_ROUTE)
        out = h2client(self, "waiting_upload", self.port)
        self.assertEqual(out["b"]["status"], 200, out)
        self.assertEqual(out["b"]["echo"]["body"], "b" * 1024)
        self.assertFalse(out["a_answered_when_b_done"], out)


if __name__ == "__main__":
    main()
