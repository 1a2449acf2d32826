#!/usr/bin/env python3
"""mesh-controller's /metrics after real actions (enrollments, signings and refusals, join
tokens, resource changes, reports, API latency by route), checked by promtool; and its
JSON logs, one object a line with the agent's fields."""
import json
import os
import re
import subprocess
import unittest

from controllertest import CONTROLLER, TD, Controller, csr
from meshtest import check_promtool, main


def spiffe(ns, name):
    return f"spiffe://{TD}/ns/{ns}/sa/{name}"


ROUTE = {"kind": "Route", "namespace": "shop", "name": "web",
         "spec": {"service": "web", "rules": [{"destinations": [{"service": "web"}]}]}}


class ControllerMetricsTest(unittest.TestCase):
    def setUp(self):
        self.c = Controller().start()
        self.dir = self.c.tmp

    def tearDown(self):
        self.c.stop()

    def scrape(self):
        status, _, data = self.c.exchange("GET", "/metrics")
        self.assertEqual(status, 200, data)
        return data

    def samples(self, body=None):
        """{(name, frozenset(labels)): value} of a /metrics page."""
        out = {}
        for line in (body or self.scrape()).decode().splitlines():
            if not line or line.startswith("#"):
                continue
            m = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)', line)
            self.assertIsNotNone(m, line)
            labels = frozenset(re.findall(r'([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            out[(m.group(1), labels)] = float(m.group(3))
        return out

    def value(self, s, name, **labels):
        return s.get((name, frozenset(labels.items())))

    def token(self, node="host-*", uses=1):
        s, body = self.c.request("POST", "/v1/tokens", {"services": [spiffe("shop", "*")],
                                                        "node": node, "uses": uses, "ttl": "1h"},
                                 admin=True)
        self.assertEqual(s, 201, body)
        return body

    def enroll(self, token, node):
        text, key = csr(self.dir, node)
        s, body = self.c.request("POST", "/v1/enroll", {"token": token, "node": node, "csr": text})
        self.assertEqual(s, 200, body)
        path = os.path.join(self.dir, f"{node}.crt")
        with open(path, "w") as f:
            f.write(body["certificate"])
        return path, key

    def test_metrics_follow_what_happens(self):
        before = self.samples()
        # Every fixed label set is there from the start, at 0.
        for state in ("synced", "stale", "offline"):
            self.assertEqual(self.value(before, "mesh_controller_agents", state=state), 0)
        for reason in ("invalid_request", "unauthenticated", "not_allowed", "invalid_csr",
                       "internal"):
            self.assertEqual(self.value(before, "mesh_controller_certificates_failed_total",
                                        reason=reason), 0)
        for state in ("usable", "used_up", "expired", "revoked"):
            self.assertEqual(self.value(before, "mesh_controller_join_tokens", state=state), 0)
        for kind in ("DestinationPolicy", "Route", "AuthorizationPolicy"):
            for op in ("apply", "delete"):
                self.assertEqual(self.value(before, "mesh_controller_resource_changes_total",
                                            kind=kind, operation=op), 0)

        # Join tokens: made, used, used up, revoked.
        t1 = self.token(uses=1)
        t2 = self.token(uses=2)
        t3 = self.token()
        s, _ = self.c.request("DELETE", f"/v1/tokens/{t3['id']}", admin=True)
        self.assertEqual(s, 200)
        cert_a, key_a = self.enroll(t1["token"], "host-a")
        cert_b, key_b = self.enroll(t2["token"], "host-b")
        self.enroll(t2["token"], "host-c")
        # Refused enrollments: a used-up token, a bad CSR.
        text, _ = csr(self.dir, "host-d")
        s, _ = self.c.request("POST", "/v1/enroll", {"token": t1["token"], "node": "host-d",
                                                     "csr": text})
        self.assertEqual(s, 401)
        t4 = self.token()
        s, _ = self.c.request("POST", "/v1/enroll", {"token": t4["token"], "node": "host-d",
                                                     "csr": "not a csr"})
        self.assertEqual(s, 400)
        # Signings: one issued, one not allowed, one bad CSR, one bad body, one without a
        # node certificate.
        text, _ = csr(self.dir, "web")
        s, _ = self.c.request("POST", "/v1/sign", {"identity": spiffe("shop", "web"), "csr": text},
                              cert=cert_a, key=key_a)
        self.assertEqual(s, 200)
        s, _ = self.c.request("POST", "/v1/sign", {"identity": spiffe("bank", "vault"),
                                                   "csr": text}, cert=cert_a, key=key_a)
        self.assertEqual(s, 403)
        s, _ = self.c.request("POST", "/v1/sign", {"identity": spiffe("shop", "web"),
                                                   "csr": "garbage"}, cert=cert_a, key=key_a)
        self.assertEqual(s, 400)
        s, _ = self.c.request("POST", "/v1/sign", {"identity": 5}, cert=cert_a, key=key_a)
        self.assertEqual(s, 400)
        s, _ = self.c.request("POST", "/v1/sign", {"identity": spiffe("shop", "web"), "csr": text})
        self.assertEqual(s, 401)
        # Resources: two applied, one deleted.
        s, body = self.c.request("PUT", "/v1/resources", ROUTE, admin=True)
        self.assertEqual(s, 200, body)
        s, body = self.c.request("PUT", "/v1/resources", dict(ROUTE, name="api"), admin=True)
        self.assertEqual(s, 200, body)
        s, body = self.c.request("DELETE", "/v1/resources/Route/shop/api", admin=True)
        self.assertEqual(s, 200, body)
        index = body["index"]
        # Reports: host-a current (synced), host-b behind the config (stale), host-c never
        # (offline).
        s, body = self.c.request("POST", "/v1/report", {"inbound_port": 15008,
                                                        "config_index": index},
                                 cert=cert_a, key=key_a)
        self.assertEqual(s, 200, body)
        s, body = self.c.request("POST", "/v1/report", {"inbound_port": 15008,
                                                        "config_index": index - 1},
                                 cert=cert_b, key=key_b)
        self.assertEqual(s, 200, body)
        # Requests the dispatcher does not know, and node names in paths: no series of their
        # own.
        for path in ("/nothing/here", "/v1/agents/host-zzz/reset", "/v1/tokens/abc"):
            self.c.exchange("POST", path)

        body = self.scrape()
        after = self.samples(body)
        v = lambda name, **labels: self.value(after, name, **labels)  # noqa: E731
        self.assertEqual(v("mesh_controller_agents", state="synced"), 1)
        self.assertEqual(v("mesh_controller_agents", state="stale"), 1)
        self.assertEqual(v("mesh_controller_agents", state="offline"), 1)
        self.assertEqual(v("mesh_controller_certificates_issued_total"), 4)  # 3 nodes + web
        failed = lambda reason: v("mesh_controller_certificates_failed_total",  # noqa: E731
                                  reason=reason)
        self.assertEqual(failed("unauthenticated"), 2)  # used-up token, no node certificate
        self.assertEqual(failed("invalid_csr"), 2)      # enroll and sign
        self.assertEqual(failed("not_allowed"), 1)
        self.assertEqual(failed("invalid_request"), 1)
        self.assertEqual(failed("internal"), 0)
        self.assertEqual(v("mesh_controller_join_token_uses_total"), 3)
        self.assertEqual(v("mesh_controller_join_tokens_created_total"), 4)
        self.assertEqual(v("mesh_controller_join_tokens_revoked_total"), 1)
        self.assertEqual(v("mesh_controller_join_tokens", state="used_up"), 2)
        self.assertEqual(v("mesh_controller_join_tokens", state="revoked"), 1)
        self.assertEqual(v("mesh_controller_join_tokens", state="usable"), 1)
        self.assertEqual(v("mesh_controller_resource_changes_total", kind="Route",
                           operation="apply"), 2)
        self.assertEqual(v("mesh_controller_resource_changes_total", kind="Route",
                           operation="delete"), 1)
        self.assertEqual(v("mesh_controller_resource_changes_total", kind="DestinationPolicy",
                           operation="apply"), 0)
        self.assertEqual(v("mesh_controller_resources", kind="Route"), 1)
        self.assertEqual(v("mesh_controller_resources_index"), index)

        # Latency by route: the route's template, never the path asked for.
        hist = "mesh_controller_http_request_duration_seconds"
        self.assertEqual(v(f"{hist}_count", endpoint="/v1/sign", method="POST"), 5)
        self.assertEqual(v(f"{hist}_count", endpoint="/v1/enroll", method="POST"), 5)
        self.assertEqual(v(f"{hist}_bucket", endpoint="/v1/sign", method="POST", le="+Inf"), 5)
        self.assertGreater(v(f"{hist}_sum", endpoint="/v1/sign", method="POST"), 0)
        self.assertEqual(v(f"{hist}_count", endpoint="/v1/agents/{node}/reset", method="POST"),
                         1)
        self.assertEqual(v(f"{hist}_count", endpoint="/v1/tokens/{id}", method="POST"), 1)
        self.assertEqual(v(f"{hist}_count", endpoint="other", method="POST"), 1)
        self.assertEqual(v(f"{hist}_count", endpoint="/v1/resources", method="PUT"), 2)
        self.assertEqual(v(f"{hist}_count", endpoint="/v1/resources/{kind}/{namespace}/{name}",
                           method="DELETE"), 1)
        # Buckets grow with their bound and end at the count.
        buckets = sorted((float(dict(labels)["le"]), val) for (name, labels), val in after.items()
                         if name == f"{hist}_bucket"
                         and dict(labels)["endpoint"] == "/v1/sign")
        self.assertEqual(buckets[-1], (float("inf"), 5))
        self.assertEqual([b[1] for b in buckets], sorted(b[1] for b in buckets))
        answers = "mesh_controller_http_responses_total"
        self.assertEqual(v(answers, endpoint="/v1/sign", method="POST", code="2xx"), 1)
        self.assertEqual(v(answers, endpoint="/v1/sign", method="POST", code="4xx"), 4)
        self.assertIsNone(v(answers, endpoint="/v1/sign", method="POST", code="5xx"))
        for (name, labels), _ in after.items():
            for k, val in labels:
                self.assertNotIn("host-", val, f"{name}: a node name in a label")
        check_promtool(self, body)

    def test_blocking_queries_have_their_own_route(self):
        cert, key = None, None
        t = self.token()
        cert, key = self.enroll(t["token"], "host-a")
        s, body = self.c.request("GET", "/v1/resources", cert=cert, key=key)
        self.assertEqual(s, 200, body)
        status, _, _ = self.c.exchange("GET", f"/v1/resources?index={body['index']}&wait=200ms",
                                       cert=cert, key=key)
        self.assertEqual(status, 200)
        s = self.samples()
        hist = "mesh_controller_http_request_duration_seconds"
        self.assertEqual(self.value(s, f"{hist}_count", endpoint="/v1/resources", method="GET"), 1)
        self.assertEqual(self.value(s, f"{hist}_count", endpoint="/v1/resources?index",
                                    method="GET"), 1)
        # It waited its 200 ms: not in the buckets below that.
        self.assertEqual(self.value(s, f"{hist}_bucket", endpoint="/v1/resources?index",
                                    method="GET", le="0.1"), 0)
        self.assertGreaterEqual(self.value(s, f"{hist}_sum", endpoint="/v1/resources?index",
                                           method="GET"), 0.2)


class ControllerJsonLogsTest(unittest.TestCase):
    def check_json_lines(self, c):
        lines = [l for l in c.logs().splitlines() if l.strip()]
        self.assertTrue(lines)
        entries = [json.loads(l) for l in lines]  # every line one JSON object
        for e in entries:
            self.assertIsInstance(e, dict)
            self.assertTrue(set(e) >= {"time", "level", "module", "msg"}, e)
            self.assertRegex(e["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
        self.assertTrue(any(e["msg"].startswith("mesh-controller ") and "listening" in e["msg"]
                            for e in entries), entries)
        return entries

    def test_json_logs_from_the_command_line(self):
        c = Controller()
        c.args = ["--log-format", "json"]
        c.start()
        # A refusal with a user's string in it stays one line of valid JSON.
        c.request("POST", "/v1/enroll", {"token": "x\n\"y", "node": "a", "csr": "z"})
        c.stop()
        entries = self.check_json_lines(c)
        self.assertTrue(any(e["level"] == "warning" for e in entries), entries)

    def test_json_logs_from_the_config(self):
        c = Controller({"log_format": "json"}).start()
        c.stop()
        self.check_json_lines(c)

    def test_text_logs_stay_text(self):
        c = Controller({"log_format": "text"}).start()
        c.stop()
        self.assertFalse(any(l.startswith("{") for l in c.logs().splitlines()))

    def test_bad_log_format_is_refused(self):
        r = subprocess.run([CONTROLLER, "--log-format", "xml"], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(r.returncode, 2)
        self.assertIn("invalid --log-format 'xml'", r.stderr)
        c = Controller({"log_format": "xml"})
        with open(c.config_path, "w") as f:
            json.dump(c.config, f)
        r = subprocess.run([CONTROLLER, "--config", c.config_path], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.returncode, 1)
        self.assertIn("log_format", r.stderr)


if __name__ == "__main__":
    main()
