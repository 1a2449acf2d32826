"""Every admin endpoint, and /metrics through promtool."""
import json
import os
import socket

from meshtest import AgentTest, check_promtool, free_port, main

# Not the demo's 19001: a fixed port collides with whatever else runs on the machine.
UPSTREAM_PORT = free_port()
WEB = {"service": {"name": "web", "port": 8080, "protocol": "http",
                   "upstreams": [{"service": "api", "bind_port": UPSTREAM_PORT}]}}
API = {"service": {"name": "api", "namespace": "shop", "endpoints": [
    {"address": "10.0.0.5", "port": 8080, "zone": "zone-a", "labels": {"version": "v1"}},
    {"address": "10.0.0.6", "port": 8080, "weight": 3, "health": "draining"}]}}


class AdminTest(AgentTest):
    def setUp(self):
        super().setUp()
        self.a = self.agent(services={"web.json": WEB, "api.json": API}).start()

    def test_ready_and_status_from_notify(self):
        _, ready = self.a.notify.wait("READY", "1")
        self.assertIn("ready: 2 services", ready["STATUS"])

    def test_healthz_readyz(self):
        self.assertEqual(self.a.get("/healthz")[0], 200)
        status, headers, body = self.a.get("/readyz")
        self.assertEqual((status, body), (200, b"ready\n"))
        self.assertEqual(headers["Cache-Control"], "no-store")

    def test_services(self):
        doc = self.a.json("/v1/services")
        self.assertGreaterEqual(doc["version"], 1)
        svcs = {f"{s['namespace']}/{s['name']}": s for s in doc["services"]}
        self.assertEqual(sorted(svcs), ["default/web", "shop/api"])
        api = svcs["shop/api"]
        self.assertEqual(api["registries"], ["files"])
        eps = {e["address"]: e for e in api["endpoints"]}
        self.assertEqual(eps["10.0.0.5"]["labels"], {"mesh/registry": "files", "version": "v1"})
        self.assertEqual(eps["10.0.0.5"]["zone"], "zone-a")
        self.assertEqual(eps["10.0.0.6"]["weight"], 3)
        self.assertEqual(eps["10.0.0.6"]["health"], "draining")
        web = svcs["default/web"]
        self.assertEqual(web["protocol"], "http")
        self.assertEqual(web["endpoints"][0]["node"], "agent")
        # One service, and a namespace filter.
        self.assertEqual(self.a.json("/v1/services/shop/api")["name"], "api")
        self.assertEqual(self.a.get("/v1/services/shop/nope")[0], 404)
        only = self.a.json("/v1/services?namespace=shop")["services"]
        self.assertEqual([s["name"] for s in only], ["api"])

    def test_local(self):
        local = self.a.json("/v1/local")["services"]
        self.assertEqual(len(local), 1)
        self.assertEqual(local[0]["name"], "web")
        self.assertEqual(local[0]["address"], "127.0.0.1:8080")
        self.assertEqual(local[0]["upstreams"], [{"service": "api", "namespace": "default",
                                                  "bind": f"127.0.0.1:{UPSTREAM_PORT}",
                                                  "protocol": "tcp"}])

    def test_config_is_effective(self):
        cfg = self.a.json("/v1/config")
        self.assertEqual(cfg["trust_domain"], "mesh.local")  # a default, filled in
        self.assertEqual(cfg["node"]["name"], "agent")
        self.assertEqual(cfg["registries"][0]["directory"], self.a.services_dir)
        self.assertEqual(cfg["registries"][0]["poll_interval"], "0s")
        self.assertEqual(cfg["shutdown"]["drain_timeout"], "15s")

    def test_status(self):
        st = self.a.json("/v1/status")
        self.assertTrue(st["ready"])
        self.assertEqual(st["node"], "agent")
        self.assertIsNone(st["reload"]["last_result"])
        reg = st["registries"][0]
        self.assertEqual((reg["name"], reg["type"], reg["synced"]), ("files", "static", True))
        self.assertEqual((reg["services"], reg["endpoints"], reg["files"]), (2, 3, 2))

    def test_errors_and_methods(self):
        status, _, body = self.a.get("/nope")
        self.assertEqual(status, 404)
        self.assertIn("error", json.loads(body))
        status, headers, _ = self.a.get("/v1/services", method="POST")
        self.assertEqual(status, 405)
        self.assertEqual(headers["Allow"], "GET, HEAD")
        status, headers, body = self.a.get("/v1/status", method="HEAD")
        self.assertEqual((status, body), (200, b""))
        self.assertGreater(int(headers["Content-Length"]), 10)

    def test_raw_malformed_request(self):
        with socket.create_connection(("127.0.0.1", self.a.admin_port)) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: "
                      b"chunked\r\n\r\n")
            reply = s.recv(4096)
        self.assertTrue(reply.startswith(b"HTTP/1.1 400 "), reply)
        metrics = self.a.get("/metrics")[2].decode()
        self.assertIn("mesh_admin_bad_requests_total 1", metrics)

    def test_metrics_pass_promtool(self):
        status, headers, body = self.a.get("/metrics")
        self.assertEqual(status, 200)
        self.assertTrue(headers["Content-Type"].startswith("text/plain; version=0.0.4"))
        text = body.decode()
        for needle in ['mesh_agent_build_info{version="', "mesh_agent_uptime_seconds ",
                       'mesh_agent_config_reloads_total{result="success"} 0',
                       'mesh_catalog_registry_services{registry="files",type="static"} 2',
                       'mesh_catalog_registry_endpoints{registry="files",type="static"} 3',
                       'mesh_registry_sync_errors_total{registry="files",type="static"} 0',
                       'mesh_registry_last_sync_timestamp_seconds{registry="files"',
                       'mesh_static_files{registry="files"} 2', "mesh_catalog_services 2"]:
            self.assertIn(needle, text)
        check_promtool(self, body)


if __name__ == "__main__":
    main()
