"""The mesh-agent command line: validate, help, version, exit codes."""
import json
import os
import shutil
import subprocess
import tempfile
import unittest

from meshtest import AGENT


def run(*args):
    return subprocess.run([AGENT, *args], capture_output=True, text=True, timeout=30)


class CliTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="mesh-cli-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.services = os.path.join(self.tmp, "services.d")
        os.makedirs(self.services)

    def write(self, name, content):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(content if isinstance(content, str) else json.dumps(content))
        return path

    def config(self, **extra):
        cfg = {"node": {"name": "n1"}, "state_dir": self.tmp,
               "registries": [{"type": "static", "directory": self.services}]}
        cfg.update(extra)
        return self.write("agent.json", cfg)

    def test_help_and_version(self):
        r = run("--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("Usage: mesh-agent", r.stdout)
        self.assertIn("validate", r.stdout)
        r = run("--version")
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"^mesh-agent \d+\.\d+\.\d+ \(commit \w+\)")

    def test_usage_errors_exit_2(self):
        for args in (["--bogus"], ["--log-level", "loud"], ["--log-format", "xml"], ["extra"],
                     ["validate", "more"], ["-o", "yaml", "validate"]):
            r = run(*args)
            self.assertEqual(r.returncode, 2, args)
            self.assertTrue(r.stderr, args)
            self.assertEqual(r.stdout, "", args)

    def test_validate_good(self):
        path = self.config()
        r = run("validate", "--config", path)
        self.assertEqual((r.returncode, r.stdout.strip()), (0, f"{path}: valid"))
        r = run("validate", "--config", path, "-o", "json")
        doc = json.loads(r.stdout)
        self.assertEqual((doc["valid"], doc["errors"], doc["error_count"]), (True, [], 0))

    def test_validate_five_mistakes(self):
        path = self.write("agent.json", """{
  "node": {"name": "Bad_Name"},
  "trust_domian": "mesh.local",
  "admin": {"listen": "127.0.0.1:70000"},
  "log": {"level": "loud"},
  "registries": [{"type": "static", "directory": 7}]
}""")
        r = run("validate", "--config", path)
        self.assertEqual(r.returncode, 1)
        lines = [l for l in r.stderr.splitlines() if l.startswith(path + ": $")]
        self.assertEqual(len(lines), 5, r.stderr)
        for p in ("$.node.name", "$.trust_domian", "$.admin.listen", "$.log.level",
                  "$.registries[0].directory"):
            self.assertTrue(any(f": {p}:" in l for l in lines), p)
        self.assertIn(f"{path}: 5 errors", r.stderr)
        doc = json.loads(run("validate", "-c", path, "-o", "json").stdout)
        self.assertEqual((doc["valid"], doc["error_count"], len(doc["errors"])), (False, 5, 5))

    def test_validate_checks_service_files(self):
        path = self.config()
        with open(os.path.join(self.services, "a.json"), "w") as f:
            f.write('{"service": {"name": "a", "port": 0}}')
        with open(os.path.join(self.services, "b.json"), "w") as f:
            f.write('{"service": {"name": "b", "port": 80}}')
        with open(os.path.join(self.services, "c.json"), "w") as f:
            f.write('{"service": {"name": "b", "port": 80}}')
        with open(os.path.join(self.services, "d.json"), "w") as f:
            f.write('{"service": {"name": "b", "port": 81}}')  # another instance: fine
        with open(os.path.join(self.services, "e.json"), "w") as f:
            f.write('{"service": {"name": "b", "endpoints": [{"address": "10.0.0.1", "port": 1}]}}')
        r = run("validate", "--config", path)
        self.assertEqual(r.returncode, 1)
        self.assertIn("a.json: $.service.port: expected an integer from 1 to 65535, got 0", r.stderr)
        self.assertIn("c.json: service 'default/b' at port 80 is already defined in 'b.json'",
                      r.stderr)
        self.assertNotIn("d.json", r.stderr)
        self.assertIn("e.json: service 'default/b' is already defined in 'b.json'", r.stderr)

    def test_validate_missing_file(self):
        r = run("validate", "--config", os.path.join(self.tmp, "none.json"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("cannot read: No such file or directory", r.stderr)

    def test_run_with_invalid_config_exits_1(self):
        path = self.write("agent.json", '{"node": {"name": "x"}, "admin": 5}')
        r = run("--config", path)
        self.assertEqual(r.returncode, 1)
        self.assertIn("$.admin: expected an object, got 5", r.stderr)
        self.assertIn("not starting", r.stderr)

    def make_ca(self, name="ca"):
        crt, key = os.path.join(self.tmp, name + ".crt"), os.path.join(self.tmp, name + ".key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=test CA", "-days",
                        "1", "-keyout", key, "-out", crt], check=True, capture_output=True)
        return crt, key

    def test_validate_reports_missing_controller_files(self):
        ca = os.path.join(self.tmp, "controller-ca.crt")
        token = os.path.join(self.tmp, "join.token")
        path = self.config(identity={"mode": "controller", "controller": "https://10.0.0.2:15443",
                                     "controller_ca": ca, "join_token_file": token})
        r = run("validate", "--config", path)
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn(f"{path}: $.identity.controller_ca: cannot read '{ca}': No such file",
                      r.stderr)
        self.assertIn(f"{path}: $.identity.join_token_file: cannot read '{token}': No such file",
                      r.stderr)
        self.assertIn(f"{path}: 2 errors", r.stderr)
        # Not a certificate, an empty token: still named.
        with open(ca, "w") as f:
            f.write("not a certificate\n")
        open(token, "w").close()
        r = run("validate", "--config", path)
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"$.identity.controller_ca: no PEM certificate in '{ca}'", r.stderr)
        self.assertIn(f"$.identity.join_token_file: '{token}' is empty", r.stderr)
        # The real files: valid.
        shutil.copy(self.make_ca()[0], ca)
        with open(token, "w") as f:
            f.write("mesh1.abc.def\n")
        r = run("validate", "--config", path)
        self.assertEqual(r.returncode, 0, r.stderr)
        # A node that holds its certificate has enrolled: the token may be gone.
        os.unlink(token)
        self.assertEqual(run("validate", "--config", path).returncode, 1)
        os.makedirs(os.path.join(self.tmp, "certs"))
        open(os.path.join(self.tmp, "certs", "node.crt"), "w").close()
        r = run("validate", "--config", path)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_validate_reports_missing_identity_files(self):
        crt, key = self.make_ca()
        path = self.config(identity={"mode": "standalone", "ca_cert": crt,
                                     "ca_key": os.path.join(self.tmp, "none.key")})
        r = run("validate", "--config", path)
        self.assertEqual(r.returncode, 1)
        self.assertIn("$.identity.ca_key: cannot read", r.stderr)
        path = self.config(identity={"mode": "standalone", "ca_cert": key, "ca_key": key})
        r = run("validate", "--config", path)
        self.assertIn("$.identity.ca_cert: no PEM certificate in", r.stderr)
        path = self.config(identity={"mode": "files", "cert_dir": crt, "trust_bundle": crt})
        r = run("validate", "--config", path)
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"$.identity.cert_dir: '{crt}' is not a directory", r.stderr)
        path = self.config(identity={"mode": "files", "cert_dir": self.tmp, "trust_bundle": crt})
        self.assertEqual(run("validate", "--config", path).returncode, 0)

    def test_examples_validate(self):
        """The examples as `make demo` runs them: the controller's CA and a join token next
        to them."""
        root = os.path.join(os.path.dirname(__file__), "..", "..", "examples")
        demo = os.path.join(self.tmp, "demo")
        shutil.copytree(root, demo)
        os.makedirs(os.path.join(demo, "controller"))
        shutil.copy(self.make_ca()[0], os.path.join(demo, "controller", "ca.crt"))
        with open(os.path.join(demo, "join.token"), "w") as f:
            f.write("mesh1.abc.def\n")
        for cfg in ("agent.json", "host-b/agent.json"):
            r = run("validate", "--config", os.path.join(demo, cfg))
            self.assertEqual(r.returncode, 0, r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
