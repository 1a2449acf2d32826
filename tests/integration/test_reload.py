"""SIGHUP with a good and a bad config; live file changes."""
import json
import os
import socket
import tempfile
import time

from httptest import HttpTest
from meshtest import LATITUDE, within, AgentTest, main, wait_for
from pki import Pki

API = {"service": {"name": "api", "endpoints": [{"address": "10.0.0.5", "port": 80}]}}


class ReloadTest(AgentTest):
    def test_good_reload(self):
        a = self.agent(services={"api.json": API}).start()
        extra = os.path.join(a.tmp, "more")
        os.makedirs(extra)
        with open(os.path.join(extra, "db.json"), "w") as f:
            json.dump({"service": {"name": "db", "endpoints": [{"address": "10.0.1.1",
                                                                "port": 5432}]}}, f)
        a.config["registries"].append({"type": "static", "name": "more", "directory": extra})
        a.config["log"] = {"level": "debug"}
        a.write_config()
        reloading, ready = a.reload()
        self.assertGreater(int(reloading["MONOTONIC_USEC"]), 0)
        self.assertIn("config reloaded", ready["STATUS"])
        wait_for(lambda: "default/db" in a.services(), what="the new registry's service")
        self.assertIn("default/api", a.services())
        st = a.json("/v1/status")
        self.assertEqual((st["reload"]["succeeded"], st["reload"]["last_result"]), (1, "ok"))
        self.assertEqual([r["name"] for r in st["registries"]], ["files", "more"])
        self.assertEqual(a.json("/v1/config")["log"]["level"], "debug")
        # Remove the registry again: its services go.
        a.config["registries"].pop()
        a.write_config()
        a.reload()
        wait_for(lambda: "default/db" not in a.services(), what="the removed registry's service")
        metrics = a.get("/metrics")[2].decode()
        self.assertIn('mesh_agent_config_reloads_total{result="success"} 2', metrics)

    def test_bad_reload_keeps_old_config(self):
        a = self.agent(services={"api.json": API}).start()
        good = a.json("/v1/config")
        bad = dict(a.config)
        bad["log"] = {"level": "chatty"}
        bad["admin"] = {"listen": "127.0.0.1:99999"}
        a.write_config(bad)
        _, ready = a.reload()
        self.assertIn("reload FAILED", ready["STATUS"])
        self.assertIn("running the previous config", ready["STATUS"])
        # The log names file and path of both errors.
        log = wait_for(lambda: "$.admin.listen" in a.logs() and a.logs(), what="error log")
        self.assertIn(f"{a.config_path}: $.log.level:", log)
        self.assertIn("reload failed, keeping the previous config", log)
        st = a.json("/v1/status")
        self.assertEqual((st["reload"]["failed"], st["reload"]["last_result"]), (1, "failed"))
        self.assertIn("$.log.level", st["reload"]["last_error"])
        self.assertIn("reload FAILED", st["status"])
        self.assertEqual(a.json("/v1/config"), good)
        self.assertIn("default/api", a.services())
        self.assertEqual(a.get("/readyz")[0], 200)
        metrics = a.get("/metrics")[2].decode()
        self.assertIn('mesh_agent_config_reloads_total{result="failure"} 1', metrics)
        self.assertIn("mesh_agent_config_last_reload_successful 0", metrics)
        # Invalid JSON is a failed reload too; fixing it recovers.
        a.write_raw_config("{ not json")
        a.reload()
        self.assertIn("invalid JSON", a.json("/v1/status")["reload"]["last_error"])
        a.write_config()
        _, ready = a.reload()
        self.assertIn("config reloaded", ready["STATUS"])
        self.assertIn("mesh_agent_config_last_reload_successful 1", a.get("/metrics")[2].decode())

    def test_unreloadable_change_refused(self):
        a = self.agent().start()
        changed = dict(a.config)
        changed["state_dir"] = a.state_dir + "-other"
        changed["proxy"] = {"workers": 2, "http": {"idle_timeout": "5s"}}
        a.write_config(changed)
        _, ready = a.reload()
        self.assertIn("reload FAILED", ready["STATUS"])
        self.assertIn("state_dir, proxy.http cannot change on reload; restart the agent",
                      a.json("/v1/status")["reload"]["last_error"])

    def test_failed_reload_frees_what_it_prepared(self):
        # The new identity is set up before the admin address that fails: the reload gives
        # it back (under ASan a leak fails the agent's exit), and the old config runs on.
        a = self.agent().start()
        pki = Pki(tempfile.mkdtemp(prefix="mesh-pki-"))
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        self.addCleanup(taken.close)
        bad = json.loads(json.dumps(a.config))
        bad["identity"] = {"mode": "standalone", "ca_cert": pki.cert, "ca_key": pki.key}
        bad["admin"] = {"listen": "127.0.0.1:%d" % taken.getsockname()[1]}
        a.write_config(bad)
        _, ready = a.reload()
        self.assertIn("reload FAILED", ready["STATUS"])
        self.assertEqual(a.json("/v1/identity")["mode"], "none")
        self.assertEqual(a.stop(), 0)

    def test_admin_address_change_rebinds(self):
        a = self.agent().start()
        from meshtest import free_port
        new_port = free_port()
        a.config["admin"] = {"listen": f"127.0.0.1:{new_port}"}
        a.write_config()
        a.reload()
        old_port, a.admin_port = a.admin_port, new_port
        self.assertEqual(a.get("/healthz")[0], 200)
        a.admin_port = old_port
        wait_for(lambda: self._refused(a), what="the old admin port to close")
        a.admin_port = new_port

    @staticmethod
    def _refused(a):
        try:
            a.get("/healthz")
            return False
        except OSError:
            return True


class ReloadAccessLogTest(HttpTest):
    def test_failed_reload_keeps_the_access_log(self):
        # A reload whose later step fails (the new admin address is taken) leaves the
        # access log where it was: it is a part of the config that did not take effect.
        b = self.backend("b1")
        a = self.agent(services=self.services([b]))
        log, log2 = os.path.join(a.tmp, "access.log"), os.path.join(a.tmp, "access2.log")
        a.config["proxy"]["access_log"] = log
        a.start()
        wait_for(lambda: self.listening(self.port), what="the HTTP listener")
        c = self.client()
        self.assertEqual(c.echo("/before")[0], 200)
        c.close()
        wait_for(lambda: "/before" in self._read(log), what="the first request in the access log")
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        self.addCleanup(taken.close)
        bad = json.loads(json.dumps(a.config))
        bad["proxy"]["access_log"] = log2
        bad["admin"] = {"listen": "127.0.0.1:%d" % taken.getsockname()[1]}
        a.write_config(bad)
        _, ready = a.reload()
        self.assertIn("reload FAILED", ready["STATUS"])
        self.assertIn("admin API", a.json("/v1/status")["reload"]["last_error"])
        c = self.client()
        self.assertEqual(c.echo("/after")[0], 200)
        c.close()

        def written():
            return [p for p in (log, log2) if "/after" in self._read(p)]
        self.assertEqual(wait_for(written, what="the second request logged"), [log])

    @staticmethod
    def _read(path):
        try:
            with open(path) as f:
                return f.read()
        except FileNotFoundError:
            return ""


class FileWatchTest(AgentTest):
    def test_live_changes_apply_within_a_second(self):
        a = self.agent().start()
        self.assertEqual(a.services(), {})
        t0 = time.monotonic()
        a.write_service("api.json", API)
        wait_for(lambda: "default/api" in a.services(), timeout=LATITUDE, what="new file")
        within(self, t0, 1.0, "a new service file taking effect")

        changed = {"service": {"name": "api", "endpoints": [{"address": "10.0.0.9", "port": 81}]}}
        a.write_service("api.json", changed)
        wait_for(lambda: a.services()["default/api"]["endpoints"][0]["address"] == "10.0.0.9",
                 timeout=1.0, what="changed file")

        # A broken file keeps its last good version, and says so.
        a.write_service("api.json", '{"service": {"name": "api", "endpoints": [{"port": 1}]}}')
        st = wait_for(lambda: a.json("/v1/status")["registries"][0]["file_errors"] and
                      a.json("/v1/status"), timeout=1.0, what="file error")
        err = st["registries"][0]["file_errors"][0]
        self.assertEqual(err["file"], "api.json")
        self.assertTrue(err["serving_last_good"])
        self.assertIn("$.service.endpoints[0].address: required key is missing", err["error"])
        self.assertEqual(a.services()["default/api"]["endpoints"][0]["address"], "10.0.0.9")
        self.assertIn("keeping its last good version", a.logs())
        metrics = a.get("/metrics")[2].decode()
        self.assertIn('mesh_static_invalid_files{registry="files"} 1', metrics)
        self.assertRegex(metrics, r'mesh_registry_sync_errors_total\{registry="files",type="static"\} [1-9]')

        # Fixed again, then removed.
        a.write_service("api.json", API)
        wait_for(lambda: a.services()["default/api"]["endpoints"][0]["address"] == "10.0.0.5",
                 timeout=1.0, what="fixed file")
        a.remove_service("api.json")
        wait_for(lambda: "default/api" not in a.services(), timeout=1.0, what="removed file")

    def test_many_files_parse_in_parallel(self):
        # Over 64 changed files are parsed by several thread-pool jobs at once.
        services = {f"s{i:03d}.json": {"service": {"name": f"s{i:03d}", "endpoints": [
            {"address": f"10.1.{i // 200}.{i % 200 + 1}", "port": 80}]}} for i in range(300)}
        services["s150.json"] = '{"service": {"name": "s150", "port": "x"}}'
        a = self.agent(services=services).start()
        svcs = a.services()
        self.assertEqual(len(svcs), 299)
        self.assertNotIn("default/s150", svcs)
        self.assertEqual(svcs["default/s299"]["endpoints"][0]["address"], "10.1.1.100")
        errors = a.json("/v1/status")["registries"][0]["file_errors"]
        self.assertEqual([e["file"] for e in errors], ["s150.json"])
        self.assertFalse(errors[0]["serving_last_good"])

    def test_what_is_not_a_file_is_skipped(self):
        a = self.agent(services={"api.json": API}).start()
        os.symlink("/nonexistent/target.json", os.path.join(a.services_dir, "gone.json"))
        os.mkdir(os.path.join(a.services_dir, "dir.json"))  # not a file: skipped
        a.write_service("other.json", {"service": {"name": "other", "endpoints": [
            {"address": "10.0.0.9", "port": 1}]}})
        wait_for(lambda: "default/other" in a.services(), what="the other file")
        a.reload()
        a.reload()
        self.assertEqual(a.logs().count("dir.json"), 0)
        self.assertEqual(a.logs().count("gone.json"), 0)
        self.assertEqual(a.json("/v1/status")["registries"][0]["files"], 2)
        self.assertIn("default/api", a.services())

    def test_duplicates_across_files(self):
        a = self.agent(services={"a.json": API, "b.json": {"service": {
            "name": "api", "endpoints": [{"address": "10.9.9.9", "port": 1}]}}}).start()
        eps = a.services()["default/api"]["endpoints"]
        self.assertEqual([e["address"] for e in eps], ["10.0.0.5"])  # a.json sorts first
        self.assertIn("service 'default/api' is already defined in 'a.json'", a.logs())


if __name__ == "__main__":
    main()
