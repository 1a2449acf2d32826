#!/usr/bin/env python3
"""Routes and resilience with real backends: every match and action, weighted subsets,
retries, timeouts, faults, rate limits, circuit breakers, outlier detection and HTTP
health checks."""
import math
import threading
import time

from httptest import HttpTest
from meshtest import LATITUDE, free_port, main, settled, wait_for, within

V1, V2 = {"version": "v1"}, {"version": "v2"}


def direct(body, status=200):
    return {"direct_response": {"status": status, "body": body}}


class RouteTest(HttpTest):
    def test_matches(self):
        b = self.backend("b1")
        rules = [
            {"match": [{"path": {"exact": "/exact"}}], **direct("exact")},
            {"match": [{"path": {"regex": "^/re/[0-9]+$"}}], **direct("regex")},
            {"match": [{"path": {"prefix": "/pre/"}, "methods": ["POST"]}], **direct("post")},
            {"match": [{"headers": {"X-User": {"exact": "ann"}}}], **direct("header")},
            {"match": [{"headers": {"x-flag": {"present": True}}}], **direct("present")},
            {"match": [{"query": {"v": {"prefix": "2"}}}], **direct("query")},
            {"match": [{"path": {"exact": "/either"}}, {"path": {"exact": "/or"}}],
             **direct("any")},
            {"match": [{"host": {"exact": "api.shop.example"}}], **direct("host")},
        ]
        self.http_agent([b], route={"rules": rules})
        c = self.client()
        cases = [
            (("GET", "/exact", {}), "exact"), (("GET", "/exact/no", {}), None),
            (("GET", "/re/42", {}), "regex"), (("GET", "/re/4x", {}), None),
            (("POST", "/pre/a", {}), "post"), (("GET", "/pre/a", {}), None),
            (("GET", "/x", {"X-User": "ann"}), "header"), (("GET", "/x", {"X-User": "bob"}), None),
            (("GET", "/x", {"X-Flag": ""}), "present"),
            (("GET", "/x?v=2.1", {}), "query"), (("GET", "/x?v=1", {}), None),
            (("GET", "/either", {}), "any"), (("GET", "/or", {}), "any"),
            (("GET", "/h", {"Host": "API.shop.example:8080"}), "host"),
            (("GET", "/h", {"Host": "api.shop.example.org"}), None),
        ]
        for (method, path, headers), want in cases:
            status, _, body = c.request(method, path, headers=headers,
                                        body=b"" if method == "POST" else None)
            got = body.decode() if b'"backend"' not in body else None
            self.assertEqual((status, got), (200, want), (method, path, headers))
        self.assertEqual(b.count(), 6)  # the unmatched ones went to the service
        c.close()

    def test_actions_redirect_direct_headers_rewrite(self):
        b = self.backend("b1")
        rules = [
            {"match": [{"path": {"prefix": "/old/"}}],
             "redirect": {"prefix": "/new/", "status": 301}},
            {"match": [{"path": {"exact": "/moved"}}],
             "redirect": {"scheme": "https", "host": "example.com", "path": "/there"}},
            {"match": [{"path": {"exact": "/teapot"}}],
             "direct_response": {"status": 418, "body": "short and stout",
                                 "content_type": "text/x-teapot"},
             "response_headers": {"set": {"x-pot": "1"}}},
            {"match": [{"path": {"prefix": "/v1/"}}], "rewrite": {"prefix": "/"},
             "destinations": [{"service": "api"}],
             "request_headers": {"set": {"x-set": "s", "x-replace": "new"},
                                 "add": {"x-add": "a"}, "remove": ["x-secret"]},
             "response_headers": {"set": {"x-backend": "hidden"}, "add": {"x-via": "mesh"},
                                  "remove": ["content-type"]}},
        ]
        self.http_agent([b], route={"rules": rules})
        c = self.client()
        status, h, _ = c.request("GET", "/old/page?q=1")
        self.assertEqual((status, h["location"]), (301, "http://api/new/page?q=1"))
        status, h, _ = c.request("GET", "/moved")
        self.assertEqual((status, h["location"]), (302, "https://example.com/there"))
        status, h, body = c.request("GET", "/teapot")
        self.assertEqual((status, body, h["content-type"], h["x-pot"]),
                         (418, b"short and stout", "text/x-teapot", "1"))
        status, h, echo = c.echo("/v1/items?id=3", headers={
            "X-Replace": "old", "X-Secret": "pw", "X-Keep": "k"})
        self.assertEqual(status, 200)
        self.assertEqual(echo["target"], "/items?id=3")
        sent = echo["headers"]
        self.assertEqual((sent["x-set"], sent["x-replace"], sent["x-add"], sent["x-keep"]),
                         ("s", "new", "a", "k"))
        self.assertNotIn("x-secret", sent)
        self.assertEqual((h["x-backend"], h["x-via"]), ("hidden", "mesh"))
        self.assertNotIn("content-type", h)
        self.assertEqual(b.count(), 1)
        c.close()

    def test_weighted_split_over_subsets(self):
        v1, v2 = self.backend("v1"), self.backend("v2")
        route = {"rules": [{"destinations": [{"service": "api", "subset": V1, "weight": 90},
                                             {"service": "api", "subset": V2, "weight": 10}]}]}
        a = self.http_agent([v1, v2], labels=[V1, V2], route=route)
        c = self.client()
        n = 2000
        for _ in range(n):
            self.assertEqual(c.request("GET", "/")[0], 200)
        c.close()
        share = v2.count() / n
        print(f"v2 share {share:.3f} over {n} requests (want 0.10 +- 0.03)")
        self.assertEqual(v1.count() + v2.count(), n)
        self.assertLess(abs(share - 0.10), 0.03)
        # Subsets have their own metrics.
        settled(self, lambda: a.metric("mesh_http_route_requests_total", route="default/api",
                                       rule="0", code_class="2xx"), n)
        self.assertEqual(a.metric("mesh_http_requests_total", destination="default/api{version=v2}",
                                  code_class="2xx"), v2.count())

    def test_subset_by_registry_label(self):
        """The catalog's mesh/registry label is not stored on endpoints, but subsets see it."""
        b = self.backend("b1")
        route = {"rules": [
            {"match": [{"path": {"exact": "/elsewhere"}}],
             "destinations": [{"service": "api", "subset": {"mesh/registry": "consul"}}]},
            {"destinations": [{"service": "api", "subset": {"mesh/registry": "files"}}]}]}
        self.http_agent([b], route=route)
        c = self.client()
        self.assertEqual(c.request("GET", "/")[0], 200)
        self.assertEqual(c.request("GET", "/elsewhere")[0], 503)
        c.close()
        self.assertEqual(b.count(), 1)

    def test_retries_make_a_flaky_backend_reliable(self):
        flaky = self.backend("flaky", seed=7)
        flaky.default_query = {"fail": "30"}
        route = {"rules": [{"destinations": [{"service": "api"}],
                            "retries": {"attempts": 6, "retry_on": ["5xx"],
                                        "backoff_base": "1ms", "backoff_max": "5ms"}}]}
        a = self.http_agent([flaky], route=route)
        c = self.client()
        n, ok = 2000, 0
        for _ in range(n):
            ok += c.request("GET", "/")[0] == 200
        c.close()
        print(f"{ok}/{n} succeeded; the backend answered {flaky.count()} tries")
        self.assertGreaterEqual(ok / n, 0.999)
        self.assertGreater(flaky.count(), n * 1.3)  # it really did fail, and was retried
        retries = a.metric("mesh_http_retries_total", destination="default/api")
        self.assertEqual(retries, flaky.count() - n)

    def test_retry_conditions(self):
        good, dead = self.backend("good"), self.backend("dead")
        dead.stop()
        route = {"rules": [
            {"match": [{"path": {"prefix": "/gw"}}], "destinations": [{"service": "api"}],
             "retries": {"attempts": 1, "retry_on": ["gateway-error"]}},
            {"match": [{"path": {"prefix": "/st"}}], "destinations": [{"service": "api"}],
             "retries": {"attempts": 2, "retry_on": ["retriable-status"], "statuses": [409]}},
            {"match": [{"path": {"prefix": "/post"}}], "destinations": [{"service": "api"}],
             "retries": {"attempts": 2, "retry_on": ["5xx"], "non_idempotent": True}},
            {"destinations": [{"service": "api"}], "retries": {"attempts": 2,
                                                                "retry_on": ["5xx", "reset"]}},
        ]}
        # One endpoint refuses connections: connect failures are retried elsewhere.
        a = self.http_agent([good, dead], route=route,
                            policy={"outlier_detection": {"enabled": False}})
        c = self.client()
        for _ in range(20):
            self.assertEqual(c.request("GET", "/")[0], 200)
        # Connect failures use tries too: the rest counts tries on the good endpoint alone.
        a.write_service("api.json", {"service": {"name": "api", "endpoints": [
            {"address": "127.0.0.1", "port": good.port}]}})
        wait_for(lambda: a.metric("mesh_proxy_endpoints", destination="default/api") == 1)
        # 500 is not a gateway error; 502-504 are.
        before = good.count()
        self.assertEqual(c.request("GET", "/gw?status=500")[0], 500)
        self.assertEqual(good.count() - before, 1)
        before = good.count()
        status, h, _ = c.request("GET", "/gw?status=503")
        self.assertEqual(status, 503)
        self.assertEqual(good.count() - before, 2)
        before = good.count()
        self.assertEqual(c.request("GET", "/st?status=409")[0], 409)
        self.assertEqual(good.count() - before, 3)
        # POST is retried only when allowed.
        before = good.count()
        self.assertEqual(c.request("POST", "/?status=500", body=b"x")[0], 500)
        self.assertEqual(good.count() - before, 1)
        before = good.count()
        self.assertEqual(c.request("POST", "/post?status=500", body=b"xyz")[0], 500)
        self.assertEqual(good.count() - before, 3)
        self.assertEqual(good.requests[-1][3], b"xyz")  # the body was sent again
        # A reset before the response is retried ("reset").
        before = good.count()
        status, h, _ = c.request("GET", "/?close=1")
        self.assertEqual(status, 503)
        self.assertIn("URX", h["x-mesh-response-flags"])
        self.assertEqual(good.count() - before, 3)
        c.close()

    def test_timeouts(self):
        slow, fast = self.backend("slow"), self.backend("fast")
        slow.default_query = {"delay": "10000"}  # a hang, next to the timeouts
        route = {"rules": [
            {"match": [{"path": {"prefix": "/total"}}], "destinations": [{"service": "api"}],
             "timeout": "300ms", "retries": {"attempts": 0}},
            {"destinations": [{"service": "api"}], "per_try_timeout": "150ms",
             "retries": {"attempts": 3, "retry_on": ["gateway-error"],
                         "backoff_base": "1ms", "backoff_max": "2ms"}},
        ]}
        a = self.http_agent([slow, fast], route=route,
                            policy={"load_balancer": "round_robin",
                                    "outlier_detection": {"enabled": False}})
        c = self.client()
        # Per-try timeouts move slow tries to the fast endpoint: everything succeeds.
        for _ in range(10):
            t = time.monotonic()
            status, _, echo = c.echo("/x")
            self.assertEqual((status, echo["backend"]), (200, "fast"))
            within(self, t, 0.7, "a request whose first try hung")
        self.assertGreater(a.metric("mesh_http_timeouts_total", destination="default/api"), 0)
        # The total timeout answers 504 when the slow endpoint gets it.
        got = set()
        for _ in range(4):
            t = time.monotonic()
            status, h, _ = c.request("GET", "/total?delay=10000")
            got.add(status)
            if status == 504:
                self.assertIn("UT", h["x-mesh-response-flags"])
                within(self, t, 0.7, "a request past its total timeout")
        self.assertEqual(got, {504})
        c.close()

    def test_faults(self):
        b = self.backend("b1")
        route = {"rules": [
            {"match": [{"path": {"prefix": "/abort"}}], "destinations": [{"service": "api"}],
             "fault": {"abort": {"status": 418}}},
            {"match": [{"path": {"prefix": "/half"}}], "destinations": [{"service": "api"}],
             "fault": {"abort": {"status": 503, "percent": 50}}},
            {"match": [{"path": {"prefix": "/delay"}}], "destinations": [{"service": "api"}],
             "fault": {"delay": {"duration": "300ms"}}},
            {"destinations": [{"service": "api"}],
             "fault": {"abort": {"header": "x-fault-abort"},
                       "delay": {"header": "x-fault-delay"}}},
        ]}
        a = self.http_agent([b], route=route)
        c = self.client()
        status, h, _ = c.request("GET", "/abort")
        self.assertEqual((status, h["x-mesh-response-flags"]), (418, "FI"))
        aborted = sum(c.request("GET", "/half")[0] == 503 for _ in range(400))
        print(f"/half: {aborted}/400 aborted (want about 200)")
        self.assertTrue(140 < aborted < 260, aborted)
        t = time.monotonic()
        self.assertEqual(c.request("GET", "/delay")[0], 200)
        self.assertGreaterEqual(time.monotonic() - t, 0.29)
        # Triggered by headers only.
        self.assertEqual(c.request("GET", "/x")[0], 200)
        self.assertEqual(c.request("GET", "/x", headers={"x-fault-abort": "502"})[0], 502)
        t = time.monotonic()
        self.assertEqual(c.request("GET", "/x", headers={"x-fault-delay": "250"})[0], 200)
        self.assertGreaterEqual(time.monotonic() - t, 0.24)
        c.close()
        self.assertEqual(a.metric("mesh_http_route_faults_total", route="default/api", rule="0",
                                  kind="abort"), 1)
        self.assertGreaterEqual(a.metric("mesh_http_faults_total", destination="default/api",
                                         kind="delay"), 2)

    def test_rate_limits(self):
        # Tokens come back while the requests run, so each count allows for the time they
        # took: the figures hold on a loaded machine as on a quiet one.
        b = self.backend("b1")
        route = {"rules": [{"match": [{"path": {"prefix": "/limited"}}],
                            "destinations": [{"service": "api"}],
                            "rate_limit": {"requests_per_second": 2, "burst": 5}},
                           {"destinations": [{"service": "api"}]}]}
        a = self.http_agent([b], route=route, policy={"rate_limit": {"requests_per_second": 5,
                                                                     "burst": 30}})
        c = self.client()

        def run(path, n):
            t0 = time.monotonic()
            got = [c.request("GET", path) for _ in range(n)]
            return got, time.monotonic() - t0

        got, took = run("/limited", 12)
        codes = [g[0] for g in got]
        self.assertGreaterEqual(codes.count(200), 5, codes)
        self.assertLessEqual(codes.count(200), 5 + math.ceil(took * 2), codes)
        self.assertEqual(codes[:5], [200] * 5, codes)
        limited = next(g for g in got if g[0] == 429)
        self.assertEqual(limited[1]["x-mesh-response-flags"], "RL")
        self.assertGreaterEqual(int(limited[1]["retry-after"]), 1)
        time.sleep(1.1)  # two tokens come back
        got, took = run("/limited", 3 + math.ceil(LATITUDE * 2))
        codes = [g[0] for g in got]
        self.assertEqual(codes[:2], [200, 200], codes)
        self.assertIn(429, codes)
        self.assertLessEqual(codes.count(200), 2 + 1 + math.ceil(took * 2), codes)
        # The destination's own bucket (30 burst, 5 a second) limits the rest; the route's
        # requests spent some of it.
        got, took = run("/other", 40)
        codes = [g[0] for g in got]
        self.assertIn(429, codes)
        self.assertLessEqual(codes.count(200), 30 + math.ceil(took * 5), codes)
        c.close()
        self.assertGreater(a.metric("mesh_http_rate_limited_total", destination="default/api"), 0)

    def test_circuit_breaker(self):
        b = self.backend("b1")
        a = self.http_agent([b], policy={"max_requests": 2})
        results = []
        lock = threading.Lock()

        def call():
            c = self.client()
            r = c.request("GET", "/?delay=500")
            c.close()
            with lock:
                results.append((r[0], r[1].get("x-mesh-response-flags")))

        threads = [threading.Thread(target=call) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(sorted(results).count((200, None)), 2, results)
        self.assertEqual(sorted(results).count((503, "UO")), 4, results)
        self.assertEqual(a.metric("mesh_http_overflows_total", destination="default/api"), 4)

    def test_outlier_detection_on_5xx(self):
        bad, good = self.backend("bad"), self.backend("good")
        bad.default_query = {"status": "500"}
        a = self.http_agent([bad, good], policy={
            "outlier_detection": {"consecutive_5xx": 3, "base_ejection_time": "30s"}})
        c = self.client()
        codes = [c.request("GET", "/")[0] for _ in range(20)]
        c.close()
        self.assertEqual(codes.count(500), 3, codes)  # then it was ejected
        self.assertTrue(all(x == 200 for x in codes[-10:]))
        self.assertEqual(a.metric("mesh_proxy_endpoints_ejected", destination="default/api"), 1)

    def test_http_health_check(self):
        sick, well = self.backend("sick"), self.backend("well")
        sick.health_status = 503
        a = self.http_agent([sick, well], policy={
            "health_check": {"interval": "200ms", "timeout": "100ms", "http_path": "/health",
                             "unhealthy_threshold": 1, "healthy_threshold": 1,
                             "expected_statuses": "200-299"}})
        wait_for(lambda: a.metric("mesh_proxy_endpoints_healthy", destination="default/api") == 1,
                 what="the sick endpoint marked unhealthy")
        health = [r for r in sick.requests if r[1] == "/health"]
        self.assertTrue(health)
        self.assertEqual(health[0][2]["host"], "api")
        c = self.client()
        self.assertTrue(all(c.echo("/")[2]["backend"] == "well" for _ in range(10)))
        sick.health_status = 200
        wait_for(lambda: a.metric("mesh_proxy_endpoints_healthy", destination="default/api") == 2,
                 what="healthy again")
        c.close()

    def test_authorization_policy_on_inbound(self):
        web = self.backend("web")
        port = free_port()
        svc = {"web.json": {"service": {"name": "web", "protocol": "http", "port": web.port,
                                        "inbound_port": port, "inbound_address": "127.0.0.1"}}}
        a = self.agent(services=svc)
        a.write_resource("authz.json", {"kind": "AuthorizationPolicy", "name": "web", "spec": {
            "deny": [{"match": [{"path": {"prefix": "/admin"}}]}],
            "allow": [{"match": [{"methods": ["GET", "HEAD"]}]},
                      {"match": [{"methods": ["POST"]}],
                       "principals": ["spiffe://cluster.local/ns/default/sa/admin"]}]}})
        a.start()
        wait_for(lambda: self.listening(port))
        c = self.client(port, host="web")
        self.assertEqual(c.echo("/x")[0], 200)
        status, h, _ = c.request("GET", "/admin/users")
        self.assertEqual((status, h["x-mesh-response-flags"]), (403, "RBAC"))
        # POST is allowed to one identity only; without mTLS a caller has none.
        self.assertEqual(c.request("POST", "/x", body=b"1")[0], 403)
        c.close()
        self.assertEqual(len(web.requests), 1)


if __name__ == "__main__":
    main()
