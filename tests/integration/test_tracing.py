#!/usr/bin/env python3
"""Trace export (docs/tracing.md) against a collector that checks OTLP/JSON and Zipkin v2 field
by field (tests/fakes/fake_collector.py): one call through two agents over mTLS gives a
CLIENT span at the caller's agent and a SERVER span at the callee's, in one trace, the
server's parent being the client span; sampling follows the caller's flag and the ratio; a
collector that is down or slow costs counted drops, never unbounded memory, and is retried
once it is back."""
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fakes"))

from fake_collector import FakeCollector  # noqa: E402
from http_backend import HttpBackend  # noqa: E402
from httptest import Client, HttpTest  # noqa: E402
from meshtest import free_port, main, wait_for  # noqa: E402
from pki import Pki  # noqa: E402

TD = "mesh.test"
WEB = f"spiffe://{TD}/ns/shop/sa/web"


def by_id(spans):
    return {s["spanId"]: s for s in spans}


class TracingTest(HttpTest):
    def setUp(self):
        super().setUp()
        self.collector = FakeCollector().start()
        self.addCleanup(self.collector.stop)

    def tracing(self, **kw):
        t = {"otlp_endpoint": self.collector.otlp_url,
             "zipkin_endpoint": self.collector.zipkin_url, "flush_interval": "50ms"}
        t.update(kw)
        return t

    def pair(self, tracing_a, tracing_b):
        """Agent B hosts 'api' (a real backend) behind its mTLS listener; agent A hosts 'web',
        which calls api on self.port. Returns (a, b, backend)."""
        pki = Pki(tempfile.mkdtemp(prefix="mesh-pki-"))
        identity = {"mode": "standalone", "ca_cert": pki.cert, "ca_key": pki.key}
        backend = HttpBackend("api-b").start()
        self.backends.append(backend)
        inbound = free_port()
        b = self.agent(name="host-b", config={
            "trust_domain": TD, "identity": identity, "tracing": tracing_b,
            "node": {"name": "host-b", "zone": "zone-a", "address": "127.0.0.2"},
            "listeners": {"outbound_http": f"127.0.0.2:{free_port()}",
                          "inbound": f"127.0.0.2:{inbound}"}},
            services={"api.json": {"service": {"name": "api", "namespace": "shop",
                                               "protocol": "http", "port": backend.port}}})
        self.port = free_port()
        a = self.agent(name="host-a", config={
            "trust_domain": TD, "identity": identity, "tracing": tracing_a,
            "node": {"name": "host-a", "zone": "zone-a", "address": "127.0.0.1"},
            "listeners": {"outbound_http": f"127.0.0.1:{free_port()}",
                          "inbound": f"127.0.0.1:{free_port()}"}},
            services={
                "web.json": {"service": {"name": "web", "namespace": "shop", "port": free_port(),
                                         "upstreams": [{"service": "api", "bind_port": self.port,
                                                        "protocol": "http"}]}},
                "api.json": {"service": {"name": "api", "namespace": "shop", "protocol": "http",
                                         "endpoints": [{"address": "127.0.0.2",
                                                        "port": backend.port,
                                                        "mesh_port": inbound}]}}})
        b.start()
        a.start()
        wait_for(lambda: self.listening(self.port), what="A's upstream listener")
        wait_for(lambda: self.call("/ready")[0] == 200, timeout=10,
                 what="a first call through both agents")
        return a, b, backend

    def call(self, path, **kw):
        c = Client(self.port)
        try:
            return c.echo(path, **kw)
        finally:
            c.close()

    def spans_of(self, kind, trace_id, n):
        """Waits for n spans of trace_id in format `kind`; returns them."""
        def got():
            return [s for s in self.collector.spans(kind) if s["traceId"] == trace_id]
        wait_for(lambda: len(got()) >= n, timeout=10,
                 what=f"{n} {kind} spans of trace {trace_id}; rejected: {self.collector.rejected}")
        self.assertEqual(len(got()), n)
        return got()

    def test_one_call_gives_client_and_server_spans_in_both_formats(self):
        a, b, backend = self.pair(self.tracing(), self.tracing())
        status, _, echo = self.call("/hello/x?q=1", headers={"User-Agent": "trace-test/1"})
        self.assertEqual(status, 200)
        tp = echo["headers"]["traceparent"].split("-")
        trace_id, workload_parent, flags = tp[1], tp[2], tp[3]
        self.assertEqual(flags, "01")  # a new trace, sampled (ratio 1)
        otlp = self.spans_of("otlp", trace_id, 2)
        client = [s for s in otlp if s["kind"] == 3]
        server = [s for s in otlp if s["kind"] == 2]
        self.assertEqual((len(client), len(server)), (1, 1))
        client, server = client[0], server[0]
        # The caller's agent starts the trace; the callee's span is its child, and the
        # workload's traceparent names the server span.
        self.assertEqual(client["parentSpanId"], "")
        self.assertEqual(server["parentSpanId"], client["spanId"])
        self.assertEqual(workload_parent, server["spanId"])
        self.assertEqual(client["service"], "web.shop")
        self.assertEqual(server["service"], "api.shop")
        # One clock here: the callee's agent gets the request after the caller's. (Their
        # ends have no order: each ends when its own last write completes.)
        self.assertLessEqual(client["start_ns"], server["start_ns"])
        ca, sa = client["attributes"], server["attributes"]
        self.assertEqual(ca["http.request.method"], "GET")
        self.assertEqual(ca["server.address"], "api")
        self.assertEqual(ca["server.port"], 80)
        self.assertEqual(ca["url.full"], "http://api/hello/x?q=1")
        self.assertEqual(ca["http.response.status_code"], 200)
        self.assertEqual(ca["network.protocol.version"], "1.1")
        self.assertEqual(sa["http.request.method"], "GET")
        self.assertEqual(sa["url.path"], "/hello/x")
        self.assertEqual(sa["url.query"], "q=1")
        self.assertEqual(sa["url.scheme"], "https")
        self.assertEqual(sa["user_agent.original"], "trace-test/1")
        self.assertEqual(sa["http.response.status_code"], 200)
        self.assertEqual(sa["mesh.source.principal"], WEB)
        self.assertEqual((client["status"], server["status"]), (0, 0))
        # The same two spans as Zipkin v2, times in microseconds cut from the same nanoseconds.
        zipkin = by_id(self.spans_of("zipkin", trace_id, 2))
        zc, zs = zipkin[client["spanId"]], zipkin[server["spanId"]]
        self.assertEqual((zc["kind"], zs["kind"]), ("CLIENT", "SERVER"))
        self.assertEqual(zs["parentSpanId"], client["spanId"])
        self.assertEqual((zc["service"], zs["service"]), ("web.shop", "api.shop"))
        for z, o in ((zc, client), (zs, server)):
            self.assertEqual(z["timestamp"], o["start_ns"] // 1000)
            self.assertEqual(z["duration"],
                             max(1, o["end_ns"] // 1000 - o["start_ns"] // 1000))
            self.assertEqual(z["tags"]["http.response.status_code"], "200")
        self.assertEqual(zc["tags"]["url.full"], "http://api/hello/x?q=1")
        self.assertEqual(self.collector.rejected, [])
        self.assertGreaterEqual(a.metric("mesh_trace_spans_exported_total", exporter="otlp"), 1)
        self.assertGreaterEqual(b.metric("mesh_trace_spans_exported_total", exporter="zipkin"), 1)

    def test_caller_trace_is_continued_and_errors_marked(self):
        a, b, backend = self.pair(self.tracing(), self.tracing())
        trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
        status, _, _ = self.call("/err?status=503",
                                 headers={"traceparent": f"00-{trace_id}-{parent}-01",
                                          "Host": "[::1]:8080"})
        self.assertEqual(status, 503)
        otlp = self.spans_of("otlp", trace_id, 2)
        client = [s for s in otlp if s["kind"] == 3][0]
        server = [s for s in otlp if s["kind"] == 2][0]
        self.assertEqual(client["parentSpanId"], parent)
        self.assertEqual(server["parentSpanId"], client["spanId"])
        # A 5xx fails both spans; error.type is the status.
        self.assertEqual((client["status"], server["status"]), (2, 2))
        self.assertEqual(server["attributes"]["error.type"], "503")
        self.assertEqual(server["attributes"]["http.response.status_code"], 503)
        self.assertEqual(server["attributes"]["url.query"], "status=503")
        # Host "[::1]:8080": the address without brackets, the port apart, url.full whole.
        self.assertEqual(client["attributes"]["server.address"], "::1")
        self.assertEqual(client["attributes"]["server.port"], 8080)
        self.assertEqual(client["attributes"]["url.full"], "http://[::1]:8080/err?status=503")

    def test_ratio_zero_records_no_new_trace_but_follows_a_sampled_caller(self):
        a, b, backend = self.pair(self.tracing(sampling_ratio=0), self.tracing(sampling_ratio=0))
        c = Client(self.port)
        self.addCleanup(c.close)
        unsampled = []
        for i in range(5):
            status, _, echo = c.echo(f"/n/{i}")
            self.assertEqual(status, 200)
            tp = echo["headers"]["traceparent"].split("-")
            self.assertEqual(tp[3], "00")  # the decision goes on to the next hops
            unsampled.append(tp[1])
        trace_id = "0af7651916cd43dd8448eb211c80319c"
        status, _, echo = c.echo("/sampled",
                                 headers={"traceparent": f"00-{trace_id}-b7ad6b7169203331-01"})
        self.assertEqual(status, 200)
        self.assertTrue(echo["headers"]["traceparent"].endswith("-01"))
        # The sampled caller's trace arrives from both agents, and spans leave in order: the
        # earlier requests would have been sent with it or before it.
        self.spans_of("otlp", trace_id, 2)
        self.spans_of("zipkin", trace_id, 2)
        for kind in ("otlp", "zipkin"):
            got = {s["traceId"] for s in self.collector.spans(kind)}
            self.assertEqual(got & set(unsampled), set(), kind)
        # An unsampled caller is followed too: nothing recorded.
        trace2 = "1af7651916cd43dd8448eb211c80319c"
        c.echo("/not", headers={"traceparent": f"00-{trace2}-b7ad6b7169203331-00"})
        c.echo("/yes", headers={"traceparent": f"00-{trace_id[:-1]}d-b7ad6b7169203331-01"})
        self.spans_of("otlp", trace_id[:-1] + "d", 2)
        self.assertNotIn(trace2, {s["traceId"] for s in self.collector.spans("otlp")})

    def single(self, **tracing):
        backend = HttpBackend("api-1").start()
        self.backends.append(backend)
        return self.http_agent([backend], config={"tracing": self.tracing(**tracing)}), backend

    def test_collector_down_or_slow_drops_counted_then_retried(self):
        a, _ = self.single(queue_size=20, batch_size=5, max_backoff="200ms", timeout="300ms")
        c = self.client()
        self.addCleanup(c.close)
        self.collector.fail_status = 503
        for i in range(60):
            self.assertEqual(c.echo(f"/{i}")[0], 200)
        m = lambda name, **kw: a.metric(name, **kw) or 0  # noqa: E731
        # The queue stays at its size; what did not fit is dropped and counted.
        wait_for(lambda: m("mesh_trace_spans_dropped_total", queue="otlp") >= 40, timeout=10,
                 what="drops counted while the collector answers 503")
        self.assertEqual(m("mesh_trace_queue_spans", exporter="otlp"), 20)
        self.assertEqual(m("mesh_trace_queue_capacity", exporter="otlp"), 20)
        wait_for(lambda: m("mesh_trace_export_requests_total", exporter="otlp",
                           result="retry") >= 2, timeout=10, what="retries with backoff")
        self.assertEqual(m("mesh_trace_spans_exported_total", exporter="otlp"), 0)
        # Back: the queued spans go, in batches.
        self.collector.fail_status = 0
        wait_for(lambda: m("mesh_trace_spans_exported_total", exporter="otlp") == 20, timeout=10,
                 what="the queue exported once the collector is back")
        wait_for(lambda: m("mesh_trace_queue_spans", exporter="otlp") == 0, timeout=10,
                 what="an empty queue")
        self.assertEqual(len(self.collector.spans("otlp")), 20)
        # Slow: answers after the timeout count as retries, then go through.
        retries = m("mesh_trace_export_requests_total", exporter="otlp", result="retry")
        self.collector.delay = 1.0
        for i in range(5):
            c.echo(f"/slow/{i}")
        wait_for(lambda: m("mesh_trace_export_requests_total", exporter="otlp",
                           result="retry") > retries, timeout=10, what="a timed-out export")
        self.collector.delay = 0
        wait_for(lambda: m("mesh_trace_spans_exported_total", exporter="otlp") >= 25, timeout=15,
                 what="the slow batch exported after the collector sped up")
        self.assertEqual(m("mesh_trace_spans_failed_total", exporter="otlp"), 0)
        self.assertEqual(self.collector.rejected, [])

    def test_refused_batch_is_dropped_not_retried(self):
        # A Zipkin body sent where OTLP is expected: the collector refuses it (400) for good.
        a, _ = self.single(zipkin_endpoint=self.collector.otlp_url, otlp_endpoint="")
        c = self.client()
        self.addCleanup(c.close)
        c.echo("/x")
        m = lambda name, **kw: a.metric(name, **kw) or 0  # noqa: E731
        wait_for(lambda: m("mesh_trace_spans_failed_total", exporter="zipkin") == 1, timeout=10,
                 what="the refused span counted as failed")
        self.assertEqual(m("mesh_trace_export_requests_total", exporter="zipkin",
                           result="failed"), 1)
        self.assertEqual(m("mesh_trace_export_requests_total", exporter="zipkin",
                           result="retry"), 0)
        self.assertEqual(self.collector.rejected[0][1], 400)
        self.assertIn("warn", a.logs())

    def test_reload_turns_tracing_on_changes_the_ratio_and_turns_it_off(self):
        backend = HttpBackend("api-1").start()
        self.backends.append(backend)
        a = self.http_agent([backend])
        c = self.client()
        self.addCleanup(c.close)

        def trace_of(path, **kw):
            status, _, echo = c.echo(path, **kw)
            self.assertEqual(status, 200)
            return echo["headers"]["traceparent"].split("-")

        self.assertEqual(trace_of("/off")[3], "01")  # off: new traces keep the flag set
        self.assertIsNone(a.metric("mesh_trace_spans_recorded_total"))
        a.config["tracing"] = self.tracing()
        a.write_config()
        a.reload()
        tp = trace_of("/on")
        self.spans_of("otlp", tp[1], 1)
        # The ratio changes in place: new traces are no longer sampled, and say so.
        a.config["tracing"] = self.tracing(sampling_ratio=0)
        a.write_config()
        a.reload()
        self.assertEqual(trace_of("/ratio0")[3], "00")
        # Off again: no exporter, no families.
        del a.config["tracing"]
        a.write_config()
        a.reload()
        self.assertIsNone(a.metric("mesh_trace_spans_recorded_total"))
        trace_of("/off-again")
        a.config["tracing"] = self.tracing(zipkin_endpoint="")
        a.write_config()
        a.reload()
        tp = trace_of("/on-again")
        spans = self.spans_of("otlp", tp[1], 1)
        # Nothing recorded while it was off came out afterwards.
        self.assertEqual(len(self.collector.spans("otlp")), 2, spans)

    def test_local_answers_have_spans_named_by_the_node(self):
        a, _ = self.single()
        c = Client(self.shared_port, host="nowhere")
        self.addCleanup(c.close)
        trace_id = "5bf92f3577b34da6a3ce929d0e0e4736"
        status, _, _ = c.request(path="/x", headers={
            "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
        self.assertEqual(status, 404)
        span = self.spans_of("otlp", trace_id, 1)[0]
        # The shared listener: the node calls; no service answered, the agent did (NR).
        self.assertEqual(span["service"], a.config["node"]["name"])
        self.assertEqual(span["kind"], 3)
        self.assertEqual(span["status"], 2)
        self.assertEqual(span["attributes"]["http.response.status_code"], 404)
        self.assertEqual(span["attributes"]["mesh.response_flags"], "NR")

    def test_bad_config_is_refused_with_its_place(self):
        a = self.agent(config={"tracing": {"otlp_endpoint": "collector:4318",
                                           "sampling_ratio": 2}})
        a.expected_exit = 1
        a.start(wait_ready=False)
        a.proc.wait(timeout=10)
        log = a.logs()
        self.assertIn("$.tracing.otlp_endpoint", log)
        self.assertIn("$.tracing.sampling_ratio: expected a number from 0 to 1", log)


if __name__ == "__main__":
    main()
