#!/usr/bin/env python3
"""Authorization bypasses by path (issue #13).

A `deny /admin` policy used to be checked against the path as it came, while nginx, the
workload behind it, normalizes before it picks a location: `//admin`, `/./admin`,
`/x/../admin`, `/%61dmin` and `/%2e/admin` were all `/admin` to nginx and not to the policy;
so was `/ADMIN` to a policy configured case-insensitive. Paths are now normalized (RFC 3986
and merged slashes, as Envoy's normalize_path and merge_slashes) before routing and
authorization, and the normalized path is what the workload gets."""
import json
import socket
import subprocess

from httptest import HttpTest
from meshtest import AGENT, SLOW, free_port, main, wait_for
from nginx_backend import Nginx, read_response

BYPASSES = ["//admin", "/./admin", "/x/../admin", "/%61dmin", "/%2e/admin", "/%2E%2e/admin",
            "///admin/x", "/public/..//admin", "/.%2e/admin"]
ESCAPED = ["/admin%2Fx", "/%2Fadmin", "/x/..%2Fadmin", "/x%5C..%5Cadmin", "/x\\..\\admin"]


def get(port, path, host="web"):
    s = socket.create_connection(("127.0.0.1", port), timeout=10 * SLOW)
    s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: " + host.encode() +
              b"\r\nConnection: close\r\n\r\n")
    status, _, body, _ = read_response(s)
    s.close()
    return status, body


class PathBypassTest(HttpTest):
    def setUp(self):
        super().setUp()
        self.nginx = Nginx().start()

    def tearDown(self):
        super().tearDown()
        self.nginx.stop()

    def guarded(self, match, http=None):
        """nginx behind an inbound listener whose policy denies `match`."""
        self.port = free_port()
        svc = {"web.json": {"service": {"name": "web", "protocol": "http",
                                        "port": self.nginx.port, "inbound_port": self.port,
                                        "inbound_address": "127.0.0.1"}}}
        config = {"proxy": {"workers": 1, "http": http}} if http else None
        a = self.agent(services=svc, config=config)
        a.write_resource("authz.json", {"kind": "AuthorizationPolicy", "name": "web", "spec": {
            "deny": [{"match": [{"path": match}]}]}})
        a.start()
        wait_for(lambda: self.listening(self.port), what="the inbound listener")
        return a

    def test_normalized_paths_cannot_pass_a_deny_rule(self):
        self.guarded({"prefix": "/admin"})
        got = {p: get(self.port, p) for p in BYPASSES}
        passed = {p: r for p, r in got.items() if r[0] != 403}
        self.assertEqual(passed, {}, "paths past `deny /admin`")
        self.assertEqual(self.nginx.sync(self.port), [])
        # Escaped slashes are refused by default (escaped_slashes: reject).
        got = {p: get(self.port, p)[0] for p in ESCAPED}
        self.assertEqual(got, {p: 400 for p in ESCAPED})
        self.assertEqual(self.nginx.sync(self.port), [])

    def test_the_upstream_gets_the_normalized_path(self):
        self.guarded({"prefix": "/admin"})
        for path, want in [("/a/./b/../c//d", "/a/c/d"), ("/%7Euser/%41", "/~user/A"),
                           ("/q/../p?x=/../admin&y=%2F", "/p?x=/../admin&y=%2F")]:
            status, body = get(self.port, path)
            self.assertEqual((status, body), (200, b"public GET " + want.encode() + b"\n"))

    def test_case_insensitive_rule_holds_for_every_case(self):
        self.guarded({"prefix": "/admin", "ignore_case": True})
        for path in ("/ADMIN", "/Admin/x", "/%41DMIN", "//aDmIn"):
            self.assertEqual(get(self.port, path)[0], 403, path)
        self.assertEqual(get(self.port, "/admi")[0], 200)
        self.assertEqual(self.nginx.sync(self.port), ["GET /admi 200"])

    def test_decode_and_merge_action(self):
        self.guarded({"prefix": "/admin"}, http={"escaped_slashes": "decode_and_merge"})
        for path in ESCAPED[1:]:
            self.assertEqual(get(self.port, path)[0], 403, path)
        self.assertEqual(get(self.port, "/p%2Fq")[1], b"public GET /p/q\n")

    def test_keep_action_forwards_escaped_slashes(self):
        self.guarded({"prefix": "/admin"}, http={"escaped_slashes": "keep"})
        status, body = get(self.port, "/p%2fq/%5c")
        self.assertEqual((status, body), (200, b"public GET /p%2Fq/%5C\n"))

    def test_config_is_validated(self):
        a = self.agent()
        a.config["proxy"] = {"http": {"escaped_slashes": "decode", "merge_slashes": "yes"}}
        a.write_config()
        r = subprocess.run([AGENT, "validate", "--config", a.config_path, "-o", "json"],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        text = json.dumps(json.loads(r.stdout))
        self.assertIn("$.proxy.http.escaped_slashes", text)
        self.assertIn("decode_and_merge", text)
        self.assertIn("$.proxy.http.merge_slashes", text)


if __name__ == "__main__":
    main()
