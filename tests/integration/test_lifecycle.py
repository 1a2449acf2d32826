"""systemd notify and watchdog, shutdown, the state dir and the last-known-good catalog."""
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import time

from meshtest import within, AGENT, SLOW, AgentTest, main, wait_for

API = {"service": {"name": "api", "endpoints": [{"address": "10.0.0.5", "port": 80}]}}


class LifecycleTest(AgentTest):
    def test_watchdog_pings(self):
        a = self.agent(env={"WATCHDOG_USEC": "200000"}).start()
        # Half of 200 ms: about 10 pings a second; allow for a slow machine.
        pings = a.notify.count("WATCHDOG", "1", window=1.0)
        self.assertGreaterEqual(pings, 6)
        self.assertLessEqual(pings, 14)
        self.assertIn("mesh_agent_watchdog_pings_total", a.get("/metrics")[2].decode())

    def test_watchdog_for_another_pid_is_ignored(self):
        a = self.agent(env={"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}).start()
        self.assertEqual(a.notify.count("WATCHDOG", "1", window=0.5), 0)

    def test_sigterm_drains_and_exits_zero(self):
        a = self.agent(services={"api.json": API}).start()
        # An idle keep-alive connection must not hold the shutdown up.
        conn = socket.create_connection(("127.0.0.1", a.admin_port))
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertIn(b"200 OK", conn.recv(4096))
        t0 = time.monotonic()
        self.assertEqual(a.stop(), 0)
        within(self, t0, 5, "the stop")
        self.assertEqual(conn.recv(4096), b"")  # closed by the agent
        conn.close()
        self.assertTrue(any(m.get("STOPPING") == "1" for m in a.notify.messages))
        self.assertIn("stopped", a.logs())

    def test_second_signal_after_the_data_plane_stopped(self):
        # A second SIGTERM may arrive once the workers are gone: it must not touch them.
        a = self.agent().start()
        a.signal(signal.SIGTERM)
        wait_for(lambda: "data plane stopped" in a.logs(), what="the data plane to stop")
        try:
            a.signal(signal.SIGTERM)
        except ProcessLookupError:
            pass
        self.assertEqual(a.stop(), 0)

    def test_sigint_too(self):
        a = self.agent().start()
        a.signal(signal.SIGINT)
        self.assertEqual(a.stop(), 0)

    def test_state_dir_and_lkg_survive_registry_loss(self):
        a = self.agent(services={"api.json": API}).start()
        self.assertEqual(a.stop(), 0)
        st = os.stat(a.state_dir)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o700)
        lkg = os.path.join(a.state_dir, "catalog.json")
        self.assertEqual(stat.S_IMODE(os.stat(lkg).st_mode), 0o600)
        with open(lkg) as f:
            doc = json.load(f)
        self.assertEqual(doc["format"], 1)
        self.assertEqual(doc["sources"]["files"][0]["name"], "api")
        self.assertEqual([p for p in os.listdir(a.state_dir) if ".tmp" in p], [])

        # The registry's source is gone: the agent serves its last view once the first sync
        # times out (and nothing before: the catalog is never emptied meanwhile).
        shutil.rmtree(a.services_dir)
        a.config["readiness"] = {"registry_sync_timeout": "500ms"}
        a.start()
        self.assertEqual(a.services()["default/api"]["endpoints"][0]["address"], "10.0.0.5")
        self.assertIn("loaded 1 services from the last-known-good catalog", a.logs())
        self.assertIn("cannot read the directory: No such file or directory", a.logs())
        self.assertEqual(a.get("/readyz")[0], 200)
        self.assertIn("registries not synced after 500 ms: 'files'; ready with the "
                      "last-known-good catalog", a.logs())

        # Once the source answers again, a full sync replaces the old view.
        os.makedirs(a.services_dir)
        a.write_service("other.json", {"service": {"name": "other", "endpoints": [
            {"address": "10.0.0.7", "port": 80}]}})
        a.reload()
        wait_for(lambda: sorted(a.services()) == ["default/other"], what="resync")

    def test_corrupt_lkg_is_ignored(self):
        a = self.agent(services={"api.json": API})
        os.makedirs(a.state_dir)
        with open(os.path.join(a.state_dir, "catalog.json"), "w") as f:
            f.write('{"format": 1, "sources": {"files": [{"name": "x"}]}}')
        a.start()
        self.assertIn("ignoring the last-known-good catalog", a.logs())
        self.assertIn("$.sources.files[0].namespace: required key is missing", a.logs())
        self.assertIn("default/api", a.services())

    def test_sync_timeout_still_becomes_ready(self):
        # A registry that cannot sync must not keep the agent from READY forever.
        a = self.agent(config={"readiness": {"registry_sync_timeout": "300ms"}})
        a.config["registries"][0]["directory"] = "/nonexistent/services.d"
        a.start()
        self.assertEqual(a.get("/readyz")[0], 200)

    def test_state_dir_unusable_fails_start(self):
        a = self.agent()
        blocker = os.path.join(a.tmp, "file")
        open(blocker, "w").close()
        a.config["state_dir"] = blocker + "/state"
        a.expected_exit = 1
        a.start(wait_ready=False)
        self.assertEqual(a.proc.wait(timeout=10 * SLOW), 1)
        self.assertIn("cannot create the state directory", a.logs())

    def test_admin_port_in_use_fails_start(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            a = self.agent()
            a.admin_port = s.getsockname()[1]
            a.config["admin"] = {"listen": f"127.0.0.1:{a.admin_port}"}
            a.expected_exit = 1
            a.start(wait_ready=False)
            self.assertEqual(a.proc.wait(timeout=10 * SLOW), 1)
        self.assertIn("cannot listen on", a.logs())

    def test_unix_socket_admin(self):
        a = self.agent()
        path = os.path.join(a.tmp, "admin.sock")
        a.config["admin"] = {"listen": f"unix:{path}"}
        a.start()
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(path)
            s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        self.assertTrue(data.startswith(b"HTTP/1.1 200 OK"), data)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o660)

    def test_json_logs(self):
        a = self.agent(args=["--log-format", "json"]).start()
        a.stop()
        lines = [json.loads(l) for l in a.logs().splitlines() if l.strip()]
        self.assertTrue(lines)
        for l in lines:
            self.assertEqual(set(l) >= {"time", "level", "module", "msg"}, True)
        self.assertTrue(any(l["msg"].startswith("ready:") for l in lines))


if __name__ == "__main__":
    main()
