#!/usr/bin/env python3
"""`meshctl vm bootstrap` (issue 15): what a new VM needs, written by meshctl, is all an
agent needs to join. Two VMs on 127.0.0.2 and 127.0.0.3 are started from exactly the files
it wrote (with --root, so that the paths in agent.json point into the test's directory; the
test adds only the admin and listener addresses, which must not be the fixed defaults on a
shared machine). The VM with no service file calls the other VM's service through the
controller. The tarball lays the same files out under etc/mesh-agent/ with safe modes, and
bad input is refused before any token is spent."""
import json
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile

from controllertest import TD, Controller
from http_backend import HttpBackend
from httptest import Client
from meshtest import AGENT, BackendTest, free_port, main, wait_for

SHOP = f"spiffe://{TD}/ns/shop/*"
FILES = {"agent.json": 0o644, "join.token": 0o600, "controller-ca.crt": 0o644,
         "services.d/README": 0o644}


class VmBootstrapTest(BackendTest):
    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="mesh-vm-bootstrap-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.ctl = Controller({"report_interval": "1s"}).start()
        self.addCleanup(shutil.rmtree, self.ctl.tmp, True)
        self.addCleanup(self.ctl.stop)

    def bootstrap(self, *args):
        return self.ctl.meshctl("vm", "bootstrap", *args)

    def tokens(self):
        status, body = self.ctl.request("GET", "/v1/tokens", admin=True)
        self.assertEqual(status, 200, body)
        return body["tokens"]

    def validate(self, config):
        r = subprocess.run([AGENT, "validate", "--config", config], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def vm(self, name, ip, services=None):
        """Bootstraps node `name` into <root>/etc/mesh-agent and returns an agent that runs
        on those files."""
        root = os.path.join(self.tmp, name)
        conf = os.path.join(root, "etc", "mesh-agent")
        r = self.bootstrap("--node", name, "--services", SHOP, "--zone", "zone-a",
                           "--address", ip, "--root", root, "--out", conf)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("join token", r.stdout)
        for fname, mode in FILES.items():
            self.assertEqual(stat.S_IMODE(os.stat(os.path.join(conf, fname)).st_mode), mode,
                             fname)
        self.assertEqual(sorted(os.listdir(conf)), ["agent.json", "controller-ca.crt",
                                                    "join.token", "services.d"])
        config = os.path.join(conf, "agent.json")
        self.validate(config)
        with open(config) as f:
            doc = json.load(f)
        self.assertEqual(doc["node"], {"name": name, "zone": "zone-a", "address": ip})
        self.assertEqual(doc["trust_domain"], TD)
        self.assertEqual(doc["identity"], {
            "mode": "controller", "controller": f"https://127.0.0.1:{self.ctl.port}",
            "controller_ca": os.path.join(conf, "controller-ca.crt"),
            "join_token_file": os.path.join(conf, "join.token")})
        self.assertEqual([g["type"] for g in doc["registries"]], ["static", "controller"])
        self.assertEqual(doc["registries"][0]["directory"], os.path.join(conf, "services.d"))
        self.assertEqual(doc["state_dir"], os.path.join(root, "var", "lib", "mesh-agent"))
        with open(self.ctl.ca) as f, open(os.path.join(conf, "controller-ca.crt")) as g:
            self.assertEqual(f.read(), g.read())
        a = self.agent(name=name)
        a.config_path = config
        a.config = dict(doc)
        a.config.update({"admin": {"listen": f"127.0.0.1:{a.admin_port}"},
                         "listeners": {"outbound_http": f"{ip}:{free_port()}",
                                       "inbound": f"{ip}:{free_port()}"}})
        for fname, content in (services or {}).items():
            with open(os.path.join(conf, "services.d", fname), "w") as f:
                json.dump(content, f)
        return a

    def test_a_bootstrapped_vm_enrolls_and_calls_another_vm_with_no_file_naming_it(self):
        w = HttpBackend("api-on-vm-b").start()
        self.backends.append(w)
        b = self.vm("vm-b", "127.0.0.3", services={"api.json": {"service": {
            "name": "api", "namespace": "shop", "protocol": "http", "port": w.port}}})
        a = self.vm("vm-a", "127.0.0.2")
        b.start()
        a.start()
        self.assertEqual(os.listdir(os.path.join(self.tmp, "vm-a", "etc", "mesh-agent",
                                                 "services.d")), ["README"])
        out = a.config["listeners"]["outbound_http"].rpartition(":")
        port = int(out[2])

        def call():
            c = Client(port, host="api.shop")
            c.conn.host = out[0]
            try:
                return c.echo()
            except OSError:
                return None
            finally:
                c.close()

        got = wait_for(lambda: (lambda r: r if r and r[0] == 200 else None)(call()),
                       timeout=20, what="vm-a calling shop/api on vm-b through the controller")
        self.assertEqual(got[2]["backend"], "api-on-vm-b")
        # Both enrolled with their own single-use tokens, now spent.
        tokens = {t["node"]: t for t in self.tokens()}
        self.assertEqual(sorted(tokens), ["vm-a", "vm-b"])
        self.assertTrue(all(t["uses_left"] == 0 and t["services"] == [SHOP]
                            for t in tokens.values()), tokens)
        nodes = {n["node"]: n for n in self.ctl.request("GET", "/v1/agents", admin=True)[1]
                 ["agents"]}
        self.assertEqual(sorted(nodes), ["vm-a", "vm-b"])

    def test_the_tarball_installs_under_etc_mesh_agent_with_safe_modes(self):
        root = os.path.join(self.tmp, "root")
        tarball = os.path.join(self.tmp, "vm-c.tar.gz")
        r = self.bootstrap("--node", "vm-c", "--services", SHOP, "--uses", "3", "--ttl", "2h",
                           "--root", root, "--tarball", tarball, "-o", "json")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(stat.S_IMODE(os.stat(tarball).st_mode), 0o600)  # it holds the token
        doc = json.loads(r.stdout)
        self.assertEqual((doc["node"], doc["trust_domain"], doc["tarball"], doc["token"]["uses"]),
                         ("vm-c", TD, tarball, 3))
        self.assertNotIn(self.tokens()[0]["id"] + ".", r.stdout)
        want = {f"etc/mesh-agent/{n}": m for n, m in FILES.items()}
        want["etc/mesh-agent/services.d"] = 0o755
        self.assertEqual({f["path"].rstrip("/"): int(f["mode"], 8) for f in doc["files"]}, want)
        with tarfile.open(tarball, "r:gz") as t:
            members = {m.name.rstrip("/"): m for m in t.getmembers()}
            self.assertEqual({n: m.mode for n, m in members.items()}, want)
            for m in members.values():
                self.assertTrue(m.isfile() or m.isdir(), m.name)
                self.assertFalse(m.mode & 0o022, f"{m.name} writable by others")
                self.assertFalse(m.name.startswith("/") or ".." in m.name.split("/"), m.name)
                self.assertEqual((m.uid, m.gid), (0, 0), m.name)
            self.assertEqual(members["etc/mesh-agent/join.token"].uname, "mesh-agent")
            token = t.extractfile("etc/mesh-agent/join.token").read().decode().strip()
        self.assertTrue(token.startswith("mesh1."), token)
        # As on the VM: tar -C / -xzf (here -C root, the --root given).
        os.makedirs(root)
        subprocess.run(["tar", "-C", root, "-xzf", tarball], check=True)
        self.validate(os.path.join(root, "etc", "mesh-agent", "agent.json"))
        (tok,) = self.tokens()
        self.assertEqual((tok["node"], tok["uses"]), ("vm-c", 3))
        self.assertLessEqual(tok["expires_at"] - tok["created_at"], 7200)

    def test_bad_input_is_refused_before_a_token_is_made(self):
        out = os.path.join(self.tmp, "out")
        cases = [
            (["--node", "Bad_Node", "--services", SHOP, "--out", out], 2, "not a node name"),
            (["--node", "vm-*", "--services", SHOP, "--out", out], 2, "not a node name"),
            (["--services", SHOP, "--out", out], 2, "--node NAME is required"),
            (["--node", "vm-d", "--services", SHOP], 2, "--out DIR and --tarball FILE"),
            (["--node", "vm-d", "--out", out, "--tarball", out + ".tgz"], 2,
             "--out DIR and --tarball FILE"),
            (["--node", "vm-d", "--address", "vm-d.example", "--out", out], 2, "--address"),
            (["--node", "vm-d", "--root", "relative", "--out", out], 2, "absolute"),
            (["--node", "vm-d", "--controller-url", "http://x:1", "--out", out], 2, "https://"),
            (["--node", "vm-d", "--uses", "0", "--out", out], 2, "--uses"),
            (["--node", "vm-d", "--out", out, "stray"], 2, "unexpected 'stray'"),
            (["--node", "vm-d", "--out", out, "--bogus"], 2, "see meshctl vm bootstrap --help"),
            # The controller's own checks, as for `token create`: nothing is written.
            (["--node", "vm-d", "--services", f"spiffe://{TD}/*", "--out", out], 1,
             "refused the join token"),
            (["--node", "vm-d", "--services", SHOP, "--ttl", "1000d", "--out", out], 1,
             "ttl"),
        ]
        for args, code, what in cases:
            r = self.bootstrap(*args)
            self.assertEqual(r.returncode, code, (args, r.stdout, r.stderr))
            self.assertIn(what, r.stderr, args)
            self.assertEqual(r.stdout, "", args)
            self.assertFalse(os.path.exists(out), args)
        self.assertEqual(self.tokens(), [])

        # An unreachable controller: said so, with what to check; nothing written.
        r = self.ctl.meshctl("-s", f"https://127.0.0.1:{free_port()}", "vm", "bootstrap",
                             "--node", "vm-d", "--out", out)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("cannot reach the controller", r.stderr)
        self.assertIn("--server", r.stderr)
        self.assertFalse(os.path.exists(out))

        # Existing files stay unless --force; the refusal spends no token.
        r = self.bootstrap("--node", "vm-d", "--services", SHOP, "--out", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(out, "join.token")) as f:
            first = f.read()
        r = self.bootstrap("--node", "vm-d", "--services", SHOP, "--out", out)
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"'{out}/agent.json' exists; remove it or pass --force", r.stderr)
        self.assertIn(f"'{out}/join.token' exists", r.stderr)
        self.assertEqual(len(self.tokens()), 1)
        with open(os.path.join(out, "join.token")) as f:
            self.assertEqual(f.read(), first)
        r = self.bootstrap("--force", "--node", "vm-d", "--services", SHOP, "--out", out)
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(out, "join.token")) as f:
            self.assertNotEqual(f.read(), first)
        self.assertEqual(stat.S_IMODE(os.stat(os.path.join(out, "join.token")).st_mode), 0o600)
        self.assertEqual(len(self.tokens()), 2)
        tarball = os.path.join(self.tmp, "x.tgz")
        with open(tarball, "w") as f:
            f.write("mine")
        r = self.bootstrap("--node", "vm-d", "--services", SHOP, "--tarball", tarball)
        self.assertEqual(r.returncode, 1)
        self.assertIn("exists; remove it or pass --force", r.stderr)
        with open(tarball) as f:
            self.assertEqual(f.read(), "mine")
        self.assertEqual(len(self.tokens()), 2)
        self.assertEqual([n for n in os.listdir(self.tmp) if ".tmp." in n], [])


if __name__ == "__main__":
    main()
