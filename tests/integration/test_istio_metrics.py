#!/usr/bin/env python3
"""Istio's standard metrics (docs/metrics.md) from two agents over mTLS with a real HTTP
backend: exact label sets on both reporters for a routed call, a denied call, a fault
injected, a call with no route, and a TCP connection; promtool accepts the page."""
import re
import socket
import tempfile

import test_mtls
from httptest import Client, HttpTest
from meshtest import SLOW, BackendTest, check_promtool, main, settled, wait_for
from pki import Pki

WEB = test_mtls.spiffe("shop", "web")
API = test_mtls.spiffe("shop", "api")
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def samples(agent, name):
    """[(labels dict, value)] of one family on agent's /metrics."""
    out = []
    for line in agent.get("/metrics")[2].decode().splitlines():
        m = SAMPLE.match(line)
        if m and m.group(1) == name:
            out.append((dict(LABEL.findall(m.group(2) or "")), float(m.group(3))))
    return out


def value(agent, name, **want):
    """The one sample of name whose labels include want (0 when none)."""
    got = [v for labels, v in samples(agent, name)
           if all(labels.get(k) == v for k, v in want.items())]
    assert len(got) <= 1, (name, want, got)
    return got[0] if got else 0


def dest(version="unknown", principal=API):
    return {"destination_workload": "api", "destination_workload_namespace": "shop",
            "destination_principal": principal, "destination_version": version,
            "destination_service": "api.shop", "destination_service_name": "api",
            "destination_service_namespace": "shop"}


SOURCE = {"source_workload": "web", "source_workload_namespace": "shop",
          "source_principal": WEB}


class IstioMetricsTest(BackendTest):
    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="mesh-pki-")
        self.pki = Pki(self.tmp)

    identity = test_mtls.MtlsTest.identity
    pair = test_mtls.MtlsTest.pair

    def http(self, **want):
        return dict(want, request_protocol="http", grpc_response_status="")

    def test_http_calls_on_both_reporters(self):
        a, b, _ = self.pair(authz={"deny": [{"principals": [WEB],
                                             "match": [{"path": {"prefix": "/admin"}}]}]})
        a.write_resource("route.json", {"kind": "Route", "name": "api", "namespace": "shop",
                                        "spec": {"rules": [
            {"match": [{"path": {"prefix": "/fault"}}], "destinations": [{"service": "api"}],
             "fault": {"abort": {"status": 418}}},
            {"destinations": [{"service": "api"}]}]}})
        c = Client(self.port, host="api")
        wait_for(lambda: c.request(path="/fault")[0] == 418, what="the route with the fault")
        routed_before = value(a, "istio_requests_total", reporter="source", response_code="200")
        self.assertEqual(c.echo("/hello")[0], 200)
        self.assertEqual(c.request(path="/admin/x")[0], 403)
        # Routed: counted by both, with both identities and mTLS on the destination side.
        src = self.http(reporter="source", response_code="200", response_flags="-",
                        connection_security_policy="unknown", **SOURCE, **dest())
        settled(self, lambda: value(a, "istio_requests_total", **src), routed_before + 1)
        dst = self.http(reporter="destination", response_code="200", response_flags="-",
                        connection_security_policy="mutual_tls", **SOURCE, **dest())
        self.assertGreaterEqual(value(b, "istio_requests_total", **dst), 1)
        # Every label of the standard set is there, and nothing else.
        labels = [l for l, _ in samples(b, "istio_requests_total")][0]
        self.assertEqual(set(labels), set(dst))
        # Denied by B's AuthorizationPolicy: 403 on both sides, no flag (as Envoy's RBAC).
        settled(self, lambda: value(b, "istio_requests_total", **dict(dst, response_code="403")), 1)
        settled(self, lambda: value(a, "istio_requests_total", **dict(src, response_code="403")), 1)
        # The fault: A answered it (FI); B never saw it.
        fi = value(a, "istio_requests_total", **dict(src, response_code="418",
                                                     response_flags="FI"))
        self.assertGreaterEqual(fi, 1)
        self.assertEqual(value(b, "istio_requests_total", response_code="418"), 0)
        # No route: an unknown Host on A's shared listener.
        p = int(a.config["listeners"]["outbound_http"].rsplit(":", 1)[1])
        nowhere = Client(p, host="nowhere")
        self.assertEqual(nowhere.request(path="/")[0], 404)
        nowhere.close()
        settled(self, lambda: value(
            a, "istio_requests_total", reporter="source", response_code="404",
            response_flags="NR", destination_service_name="unknown",
            destination_workload="unknown", source_workload="unknown",
            source_principal=f"spiffe://{test_mtls.TD}/node/host-a"), 1)
        # The duration and size histograms count the same requests.
        self.assertEqual(value(b, "istio_request_duration_milliseconds_count", **dst),
                         value(b, "istio_requests_total", **dst))
        self.assertEqual(value(b, "istio_response_bytes_count", **dst),
                         value(b, "istio_requests_total", **dst))
        self.assertEqual(value(b, "istio_request_duration_milliseconds_bucket",
                               **dict(dst, le="3.6e+06")),
                         value(b, "istio_requests_total", **dst))
        for agent in (a, b):
            check_promtool(self, agent.get("/metrics")[2])
        self.assertEqual(value(b, "mesh_metrics_series_dropped_total"), 0)

    def test_tcp_connection_on_both_reporters(self):
        a, b, _ = self.pair(protocol="tcp")
        # pair() probed A's port: wait until A has counted that connection's whole life, so
        # that the count below moves by ours only.
        wait_for(lambda: value(a, "istio_tcp_connections_opened_total", reporter="source") ==
                 value(a, "istio_tcp_connections_closed_total", reporter="source") >= 1,
                 what="the probe's connection counted")
        opened_a = value(a, "istio_tcp_connections_opened_total", reporter="source")
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5 * SLOW)
        f = s.makefile("rb")
        self.assertEqual(f.readline(), b"api-b\n")
        s.sendall(b"ping\n")
        self.assertEqual(f.readline(), b"ping\n")
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(f.read(), b"")  # the close came back through both agents
        f.close()
        s.close()
        tcp = {"request_protocol": "tcp", "response_flags": "-"}
        src = dict(tcp, reporter="source", connection_security_policy="unknown", **SOURCE,
                   **dest())
        dst = dict(tcp, reporter="destination", connection_security_policy="mutual_tls",
                   **SOURCE, **dest())
        self.assertEqual(value(a, "istio_tcp_connections_opened_total", **src), opened_a + 1)
        try:
            wait_for(lambda: value(b, "istio_tcp_connections_closed_total", **dst) >= 1 and
                     value(a, "istio_tcp_connections_closed_total", **src) >= opened_a + 1,
                     what="the closes counted")
        except AssertionError:
            raise AssertionError(f"{samples(a, 'istio_tcp_connections_closed_total')} "
                                 f"{samples(b, 'istio_tcp_connections_closed_total')}")
        self.assertGreaterEqual(value(b, "istio_tcp_received_bytes_total", **dst), 5)
        self.assertGreaterEqual(value(b, "istio_tcp_sent_bytes_total", **dst), 11)
        self.assertGreaterEqual(value(a, "istio_tcp_received_bytes_total", **src), 5)
        self.assertEqual(set(samples(b, "istio_tcp_connections_opened_total")[0][0]), set(dst))
        for agent in (a, b):
            check_promtool(self, agent.get("/metrics")[2])

    def test_tcp_connection_that_reaches_no_upstream_is_flagged(self):
        a, b, _ = self.pair(protocol="tcp")
        wait_for(lambda: value(a, "istio_tcp_connections_opened_total", reporter="source") ==
                 value(a, "istio_tcp_connections_closed_total", reporter="source") >= 1,
                 what="the probe's connection counted")
        b.stop()  # B's inbound is gone: every connect of A's to it is refused
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5 * SLOW)
        s.settimeout(10 * SLOW)
        try:
            self.assertEqual(s.recv(64), b"")  # closed (or reset) without a byte
        except ConnectionResetError:
            pass
        s.close()
        uf = dict(reporter="source", request_protocol="tcp", response_flags="UF", **SOURCE,
                  **dest())
        settled(self, lambda: value(a, "istio_tcp_connections_closed_total", **uf), 1)
        self.assertEqual(value(a, "istio_tcp_connections_opened_total", **uf), 1)
        self.assertEqual(value(a, "istio_tcp_sent_bytes_total", **uf), 0)
        # Opened and closed balance in every series: none counts the failed one twice.
        opened = {tuple(sorted(l.items())): v
                  for l, v in samples(a, "istio_tcp_connections_opened_total")}
        closed = {tuple(sorted(l.items())): v
                  for l, v in samples(a, "istio_tcp_connections_closed_total")}
        self.assertEqual(opened, closed)
        check_promtool(self, a.get("/metrics")[2])


class IstioCardinalityTest(HttpTest):
    def test_series_past_the_cap_are_counted_as_dropped(self):
        b = self.backend("b1")
        a = self.http_agent([b], config={"telemetry": {"max_series": 2}})
        c = self.client()
        for status in (200, 201, 202, 203, 202):
            self.assertEqual(c.request(path=f"/?status={status}")[0], status)
        settled(self, lambda: value(a, "mesh_metrics_series_dropped_total"), 3)
        got = {l["response_code"]: v for l, v in samples(a, "istio_requests_total")}
        self.assertEqual(got, {"200": 1, "201": 1})
        self.assertEqual(value(a, "mesh_metrics_series_max"), 2)
        # A reload raises the cap: new label sets are counted again.
        a.config["telemetry"] = {"max_series": 10}
        a.write_config()
        a.reload()
        wait_for(lambda: value(a, "mesh_metrics_series_max") == 10, what="the new cap")
        self.assertEqual(c.request(path="/?status=203")[0], 203)
        settled(self, lambda: value(a, "istio_requests_total", response_code="203"), 1)
        # A bad value is refused with the key named; the agent keeps its last good one.
        a.config["telemetry"] = {"max_series": 0}
        a.write_config()
        a.reload()
        wait_for(lambda: "telemetry.max_series" in a.logs(), what="the refusal")
        self.assertEqual(value(a, "mesh_metrics_series_max"), 10)


class RouteRuleNameTest(HttpTest):
    def test_named_rule_keeps_its_metrics_when_rules_are_inserted(self):
        b = self.backend("b1")
        main_rule = {"name": "main", "destinations": [{"service": "api"}]}
        a = self.http_agent([b], route={"rules": [main_rule]})
        c = self.client()
        for _ in range(3):
            self.assertEqual(c.request(path="/")[0], 200)
        def count(rule, code_class="2xx"):
            return a.metric("mesh_http_route_requests_total", route="default/api", rule=rule,
                            code_class=code_class)
        settled(self, lambda: count("main"), 3)
        # A rule inserted before it: "main" keeps its name, its counters and their history.
        a.write_resource("route.json", {"kind": "Route", "name": "api", "spec": {"rules": [
            {"name": "admin", "match": [{"path": {"prefix": "/admin"}}],
             "direct_response": {"status": 403, "body": "no"}}, main_rule]}})
        wait_for(lambda: c.request(path="/admin")[0] == 403, timeout=30, what="the new rule")
        before = count("main")  # the 3, and /admin polls the old rules sent there
        self.assertGreaterEqual(before, 3)
        self.assertEqual(c.request(path="/")[0], 200)
        settled(self, lambda: count("main"), before + 1)
        self.assertGreaterEqual(count("admin", "4xx"), 1)
        self.assertIsNone(count("0"))  # no series by position for named rules
        c.close()


if __name__ == "__main__":
    main()
