"""Packages and units: build the .deb and .rpm from this tree, check them with lintian and
rpm, check the units with systemd-analyze, then install the .deb on this machine, run the
agent the way its unit would, upgrade over itself, and purge."""
import atexit
import configparser
import glob
import grp
import json
import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
UNIT = os.path.join(SRC, "systemd", "mesh-agent.service")
CONTROLLER_UNIT = os.path.join(SRC, "systemd", "mesh-controller.service")
OUT = None  # the built packages


def build_packages():
    global OUT
    if OUT:
        return OUT
    tmp = tempfile.mkdtemp(prefix="mesh-packages-")
    atexit.register(shutil.rmtree, tmp, True)  # two build trees: nothing left in /tmp
    out = {}
    for family in ("deb", "rpm"):
        b = os.path.join(tmp, family)
        subprocess.run(["cmake", "-S", SRC, "-B", b, "-DCMAKE_BUILD_TYPE=RelWithDebInfo",
                        "-DCMAKE_INSTALL_PREFIX=/usr", "-DMESH_TESTS=OFF",
                        f"-DMESH_PACKAGE={family}"], check=True, capture_output=True)
        subprocess.run(["cmake", "--build", b, "-j2"], check=True, capture_output=True)
        r = subprocess.run(["cpack"], cwd=b, capture_output=True, text=True)
        if r.returncode != 0:
            raise AssertionError(f"cpack ({family}) failed:\n{r.stdout}\n{r.stderr}")
        out[family] = {os.path.basename(f).split("_" if family == "deb" else "-0")[0]: f
                       for f in glob.glob(os.path.join(b, f"*.{family}"))}
        if sorted(out[family]) != ["mesh-agent", "mesh-controller"]:
            raise AssertionError(f"cpack ({family}) made {sorted(out[family])}")
    OUT = out
    return out


def unit_service_section(path):
    """[Service] of a unit, keeping repeated keys (ExecReload=, SystemCallFilter=) as lists."""
    section, values = None, {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            if section == "Service":
                k, _, v = line.partition("=")
                values.setdefault(k, []).append(v)
    return values


class UnitTest(unittest.TestCase):
    def test_security_score(self):
        if not shutil.which("systemd-analyze"):
            raise unittest.SkipTest("systemd-analyze is not installed")
        for unit in (UNIT, CONTROLLER_UNIT):
            r = subprocess.run(["systemd-analyze", "security", "--offline=true", unit],
                               capture_output=True, text=True)
            m = re.search(r"Overall exposure level for \S+: ([\d.]+)", r.stdout + r.stderr)
            self.assertIsNotNone(m, r.stdout + r.stderr)
            score = float(m.group(1))
            print(f"systemd-analyze security --offline=true {os.path.basename(unit)}: {score}")
            self.assertLessEqual(score, 2.0)

    def test_controller_unit_settings(self):
        s = unit_service_section(CONTROLLER_UNIT)
        self.assertEqual(s["Type"], ["notify"])  # mesh-controller sends READY=1
        self.assertEqual(s["User"], ["mesh-controller"])
        self.assertEqual(s["Restart"], ["on-failure"])
        self.assertEqual(s["CapabilityBoundingSet"], [""])

    def test_unit_settings(self):
        s = unit_service_section(UNIT)
        self.assertEqual(s["Type"], ["notify"])
        self.assertEqual(s["User"], ["mesh-agent"])
        self.assertEqual(s["Restart"], ["on-failure"])
        self.assertIn("WatchdogSec", s)
        self.assertEqual(s["AmbientCapabilities"], ["CAP_NET_BIND_SERVICE"])
        self.assertEqual(s["CapabilityBoundingSet"], ["CAP_NET_BIND_SERVICE"])
        self.assertEqual(s["StateDirectoryMode"], ["0700"])
        self.assertTrue(s["ExecReload"][-1].startswith("/bin/kill -HUP"))
        self.assertIn("validate", s["ExecReload"][0])
        # Capture rules that fail open come out however the agent ended, SIGKILL included,
        # with the privileges nftables needs (docs/capture.md).
        self.assertEqual(s["ExecStopPost"], ["-+/usr/sbin/mesh-agent capture remove --stopping "
                                             "--config /etc/mesh-agent/agent.json"])
        self.assertGreaterEqual(int(s["LimitNOFILE"][0]), 65536)
        # Bounds the RSS creep of glibc's per-thread caches (issue 13; bench/rss-soak).
        self.assertIn("GLIBC_TUNABLES=glibc.malloc.tcache_count=0", s["Environment"])


class PackageTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        for tool in ("cpack", "dpkg-deb", "lintian", "rpm"):
            if not shutil.which(tool):
                raise unittest.SkipTest(f"{tool} is not installed (scripts/install-deps)")
        cls.pkgs = build_packages()

    def test_lintian_is_clean(self):
        # lintian leaves MLDBM files in its TMPDIR: give it one that goes.
        tmp = tempfile.TemporaryDirectory(prefix="mesh-lintian-")
        self.addCleanup(tmp.cleanup)
        for deb in self.pkgs["deb"].values():
            r = subprocess.run(["lintian", "--fail-on", "error,warning", "--pedantic", deb],
                               capture_output=True, text=True,
                               env=dict(os.environ, TMPDIR=tmp.name))
            tags = [l for l in r.stdout.splitlines() if re.match(r"^[EW]: ", l)]
            self.assertEqual(tags, [], deb)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_controller_packages(self):
        deb = self.pkgs["deb"]["mesh-controller"]
        listing = subprocess.run(["dpkg-deb", "-c", deb], capture_output=True, text=True,
                                 check=True).stdout
        for path in ("./usr/sbin/mesh-controller", "./usr/bin/meshctl",
                     "./lib/systemd/system/mesh-controller.service",
                     "./usr/lib/sysusers.d/mesh-controller.conf",
                     "./etc/mesh-controller/controller.json",
                     "./usr/share/man/man8/mesh-controller.8.gz",
                     "./usr/share/man/man1/meshctl.1.gz",
                     "./usr/share/doc/mesh-controller/copyright"):
            self.assertIn(path, listing)
        self.assertNotIn("/mesh-agent", listing)
        with tempfile.TemporaryDirectory() as d:
            subprocess.run(["dpkg-deb", "-e", deb, d], check=True)
            with open(os.path.join(d, "conffiles")) as f:
                self.assertEqual(f.read().split(), ["/etc/mesh-controller/controller.json"])
            with open(os.path.join(d, "postinst")) as f:
                postinst = f.read()
            self.assertIn("systemd-sysusers mesh-controller.conf", postinst)
            self.assertNotRegex(postinst, r"deb-systemd-invoke (start|restart)\b")
        rpm = self.pkgs["rpm"]["mesh-controller"]
        files = subprocess.run(["rpm", "-qpl", rpm], capture_output=True, text=True,
                               check=True).stdout.split()
        for path in ("/usr/sbin/mesh-controller", "/usr/bin/meshctl",
                     "/usr/lib/systemd/system/mesh-controller.service",
                     "/etc/mesh-controller/controller.json"):
            self.assertIn(path, files)
        self.assertNotIn("/usr/bin", files)
        flags = subprocess.run(["rpm", "-qp", "--queryformat",
                                "[%{FILENAMES} %{FILEFLAGS:fflags}\n]", rpm],
                               capture_output=True, text=True, check=True).stdout
        config = {l.split()[0]: l.split()[1] for l in flags.splitlines()
                  if len(l.split()) == 2 and "c" in l.split()[1]}
        self.assertEqual(config, {"/etc/mesh-controller/controller.json": "cn"})
        scripts = subprocess.run(["rpm", "-qp", "--scripts", rpm], capture_output=True,
                                 text=True, check=True).stdout
        self.assertIn("useradd --system --user-group --home-dir /var/lib/mesh-controller",
                      scripts)
        self.assertNotIn("mesh-agent", scripts)

    def test_deb_contents(self):
        listing = subprocess.run(["dpkg-deb", "-c", self.pkgs["deb"]["mesh-agent"]], capture_output=True,
                                 text=True, check=True).stdout
        for path in ("./usr/sbin/mesh-agent", "./lib/systemd/system/mesh-agent.service",
                     "./usr/lib/sysusers.d/mesh-agent.conf", "./etc/mesh-agent/agent.json",
                     "./usr/share/man/man8/mesh-agent.8.gz",
                     "./usr/share/doc/mesh-agent/copyright",
                     "./usr/share/doc/mesh-agent/changelog.gz"):
            self.assertIn(path, listing)
        info = subprocess.run(["dpkg-deb", "-f", self.pkgs["deb"]["mesh-agent"], "Depends"],
                              capture_output=True, text=True, check=True).stdout
        self.assertIn("libuv1", info)
        with tempfile.TemporaryDirectory() as d:
            subprocess.run(["dpkg-deb", "-e", self.pkgs["deb"]["mesh-agent"], d], check=True)
            with open(os.path.join(d, "conffiles")) as f:
                self.assertEqual(f.read().split(), ["/etc/mesh-agent/agent.json"])
            with open(os.path.join(d, "postinst")) as f:
                postinst = f.read()
            # Never enabled or started unasked.
            self.assertNotIn("deb-systemd-helper enable", postinst)
            self.assertNotRegex(postinst, r"deb-systemd-invoke (start|restart)\b")

    def test_dashboards_are_shipped(self):
        """The Grafana dashboards as packaging/dashboards/ has them, in both families: the
        data plane's with mesh-agent, the controller's with mesh-controller."""
        where = {"mesh-agent": ["mesh-overview.json", "mesh-service.json",
                                "mesh-workload.json", "mesh-agent.json"],
                 "mesh-controller": ["mesh-controller.json"]}
        for pkg, names in where.items():
            with tempfile.TemporaryDirectory() as d:
                subprocess.run(["dpkg-deb", "-x", self.pkgs["deb"][pkg], d], check=True)
                got = os.path.join(d, "usr", "share", pkg, "dashboards")
                self.assertEqual(sorted(os.listdir(got)), sorted(names), pkg)
                for name in names:
                    self.assertEqual(stat.S_IMODE(os.stat(os.path.join(got, name)).st_mode),
                                     0o644, name)
                    with open(os.path.join(got, name), "rb") as f, \
                            open(os.path.join(SRC, "packaging", "dashboards", name), "rb") as g:
                        self.assertEqual(f.read(), g.read(), f"{pkg}: {name}")
            files = subprocess.run(["rpm", "-qpl", self.pkgs["rpm"][pkg]], capture_output=True,
                                   text=True, check=True).stdout.split()
            self.assertEqual(sorted(f for f in files if "/dashboards/" in f),
                             sorted(f"/usr/share/{pkg}/dashboards/{n}" for n in names), pkg)

    def test_rpm(self):
        rpm = self.pkgs["rpm"]["mesh-agent"]
        files = subprocess.run(["rpm", "-qpl", rpm], capture_output=True, text=True,
                               check=True).stdout.split()
        for path in ("/usr/sbin/mesh-agent", "/usr/lib/systemd/system/mesh-agent.service",
                     "/usr/lib/sysusers.d/mesh-agent.conf", "/etc/mesh-agent/agent.json",
                     "/usr/share/man/man8/mesh-agent.8.gz"):
            self.assertIn(path, files)
        for owned in ("/usr/sbin", "/etc", "/usr/lib/systemd/system"):
            self.assertNotIn(owned, files)  # system directories belong to the system
        flags = subprocess.run(["rpm", "-qp", "--queryformat",
                                "[%{FILENAMES} %{FILEFLAGS:fflags}\n]", rpm],
                               capture_output=True, text=True, check=True).stdout
        config = {l.split()[0]: l.split()[1] for l in flags.splitlines()
                  if len(l.split()) == 2 and "c" in l.split()[1]}
        self.assertEqual(config, {"/etc/mesh-agent/agent.json": "cn"})  # %config(noreplace)
        scripts = subprocess.run(["rpm", "-qp", "--scripts", rpm], capture_output=True,
                                 text=True, check=True).stdout
        for part in ("preinstall scriptlet", "postinstall scriptlet", "preuninstall scriptlet",
                     "postuninstall scriptlet"):
            self.assertIn(part, scripts)
        post = scripts.split("postinstall scriptlet")[1].split("preuninstall scriptlet")[0]
        self.assertNotRegex(post, r"systemctl .*(enable|start)")
        self.assertIn("try-restart", scripts)
        self.assertIn('"$1" -eq 0', scripts)  # stop only on erase


class InstallTest(unittest.TestCase):
    """Installs the .deb on this machine: root only, and only where mesh-agent is absent."""

    @classmethod
    def setUpClass(cls):
        if os.geteuid() != 0:
            raise unittest.SkipTest("installing a package needs root")
        for tool in ("dpkg", "setpriv", "cpack", "lintian"):
            if not shutil.which(tool):
                raise unittest.SkipTest(f"{tool} is not installed")
        for pkg in ("mesh-agent", "mesh-controller"):
            st = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg],
                                capture_output=True, text=True)
            if "installed" in st.stdout:
                raise unittest.SkipTest(f"{pkg} is already installed here; not touching it")
        cls.user_existed = cls.controller_user_existed = True
        try:
            pwd.getpwnam("mesh-agent")
        except KeyError:
            cls.user_existed = False
        try:
            pwd.getpwnam("mesh-controller")
        except KeyError:
            cls.controller_user_existed = False
        cls.pkgs = build_packages()

    @classmethod
    def tearDownClass(cls):
        for pkg in ("mesh-agent", "mesh-controller"):
            subprocess.run(["dpkg", "--purge", pkg], capture_output=True)
        if not cls.user_existed:
            subprocess.run(["userdel", "mesh-agent"], capture_output=True)
            subprocess.run(["groupdel", "mesh-agent"], capture_output=True)
        if not cls.controller_user_existed:
            subprocess.run(["userdel", "mesh-controller"], capture_output=True)
            subprocess.run(["groupdel", "mesh-controller"], capture_output=True)

    def test_controller_install_run_purge(self):
        deb = self.pkgs["deb"]["mesh-controller"]
        self.dpkg("-i", deb)
        self.check_mode("/usr/sbin/mesh-controller", 0o755)
        self.check_mode("/usr/bin/meshctl", 0o755)
        self.check_mode("/etc/mesh-controller/controller.json", 0o644)
        pw = pwd.getpwnam("mesh-controller")
        self.assertEqual(pw.pw_dir, "/var/lib/mesh-controller")
        self.assertLess(pw.pw_uid, 1000)
        self.assertFalse(glob.glob("/etc/systemd/system/*.wants/mesh-controller.service"))
        r = subprocess.run(["systemd-analyze", "verify",
                            "/lib/systemd/system/mesh-controller.service"],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        proc, sock, unit, user, log = self.run_like_the_unit(
            "/lib/systemd/system/mesh-controller.service")
        try:
            self.wait_notify(sock, "READY", log=log)
            self.check_mode("/var/lib/mesh-controller/ca.key", 0o600, owner="mesh-controller")
            self.check_mode("/var/lib/mesh-controller/admin.token", 0o600,
                            owner="mesh-controller")
            # meshctl, as root, with its defaults: the state dir's CA and admin token.
            r = subprocess.run(["meshctl", "token", "create", "--node", "web-*", "--services",
                                "spiffe://mesh.local/ns/shop/*"], capture_output=True, text=True)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr + open(log).read())
            r = subprocess.run(["meshctl", "-o", "json", "token", "list"], capture_output=True,
                               text=True)
            self.assertEqual(len(json.loads(r.stdout)["tokens"]), 1)
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
            sock.close()
        self.assertEqual(code, 0, open(log).read())
        # Upgrade keeps an edited config; purge removes everything.
        with open("/etc/mesh-controller/controller.json") as f:
            cfg = json.load(f)
        cfg["log_level"] = "debug"
        with open("/etc/mesh-controller/controller.json", "w") as f:
            json.dump(cfg, f)
        self.dpkg("-i", deb)
        with open("/etc/mesh-controller/controller.json") as f:
            self.assertEqual(json.load(f)["log_level"], "debug")
        self.assertTrue(os.path.exists("/var/lib/mesh-controller/ca.key"))
        self.dpkg("--purge", "mesh-controller")
        for gone in ("/usr/sbin/mesh-controller", "/usr/bin/meshctl", "/etc/mesh-controller",
                     "/var/lib/mesh-controller", "/lib/systemd/system/mesh-controller.service"):
            self.assertFalse(os.path.exists(gone), f"{gone} is left after purge")

    def dpkg(self, *args):
        r = subprocess.run(["dpkg", *args], capture_output=True, text=True,
                           env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertNotIn("warning", (r.stdout + r.stderr).lower(), f"dpkg {' '.join(args)}")
        return r

    def check_mode(self, path, mode, owner="root", kind=stat.S_ISREG):
        st = os.stat(path)
        self.assertTrue(kind(st.st_mode), path)
        self.assertEqual(stat.S_IMODE(st.st_mode), mode, path)
        self.assertEqual(pwd.getpwuid(st.st_uid).pw_name, owner, path)

    def run_like_the_unit(self, unit="/lib/systemd/system/mesh-agent.service"):
        """systemd is not PID 1 here: start ExecStart as the unit's User, with its ambient
        capability, state and runtime directories and environment, and a NOTIFY_SOCKET."""
        s = unit_service_section(unit)
        user = s["User"][0]
        pw = pwd.getpwnam(user)
        dirs = [("/var/lib/" + s["StateDirectory"][0], 0o700)]
        if "RuntimeDirectory" in s:
            dirs.append(("/run/" + s["RuntimeDirectory"][0], 0o750))
        for d, mode in dirs:
            os.makedirs(d, exist_ok=True)
            os.chown(d, pw.pw_uid, pw.pw_gid)
            os.chmod(d, mode)
        tmp = tempfile.mkdtemp(prefix="mesh-notify-")
        self.addCleanup(shutil.rmtree, tmp, True)
        os.chmod(tmp, 0o755)
        path = os.path.join(tmp, "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        os.chmod(path, 0o777)
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "NOTIFY_SOCKET": path, "HOME": pw.pw_dir}
        for assignment in s.get("Environment", []):
            key, _, value = assignment.partition("=")
            env[key] = value
        if "WatchdogSec" in s:
            env["WATCHDOG_USEC"] = str(int(s["WatchdogSec"][0].rstrip("s")) * 1000000)
        caps = ",".join("+" + c.lower().replace("cap_", "")
                        for c in s.get("AmbientCapabilities", [""]) if c)
        cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--init-groups"]
        if caps:
            cmd += [f"--inh-caps={caps}", f"--ambient-caps={caps}"]
        cmd += ["--"] + s["ExecStart"][0].split()
        log = open(os.path.join(tmp, "agent.log"), "w")
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
        return proc, sock, s, user, os.path.join(tmp, "agent.log")

    def wait_notify(self, sock, key, timeout=15, log=None):
        """The next notification naming key; fails with the daemon's log (log: its path)."""
        sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                msg = sock.recv(4096).decode()
            except TimeoutError:
                break
            fields = dict(l.split("=", 1) for l in msg.splitlines() if "=" in l)
            if key in fields:
                return fields
        said = ""
        if log:
            with open(log) as f:
                said = f.read()
        raise AssertionError(f"no {key} from the daemon within {timeout} s; its log:\n{said}")

    def test_install_run_upgrade_purge(self):
        deb = self.pkgs["deb"]["mesh-agent"]
        self.dpkg("-i", deb)

        # Files, owners, modes, the user; nothing enabled or started.
        self.check_mode("/usr/sbin/mesh-agent", 0o755)
        self.check_mode("/etc/mesh-agent/agent.json", 0o644)
        self.check_mode("/etc/mesh-agent/services.d", 0o755, kind=stat.S_ISDIR)
        self.check_mode("/lib/systemd/system/mesh-agent.service", 0o644)
        self.check_mode("/usr/lib/sysusers.d/mesh-agent.conf", 0o644)
        pw = pwd.getpwnam("mesh-agent")
        self.assertEqual(pw.pw_dir, "/var/lib/mesh-agent")
        self.assertIn(pw.pw_shell, ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false"))
        self.assertLess(pw.pw_uid, 1000)  # a system user
        grp.getgrnam("mesh-agent")
        self.assertFalse(glob.glob("/etc/systemd/system/*.wants/mesh-agent.service"))
        r = subprocess.run(["systemd-analyze", "verify", "/lib/systemd/system/mesh-agent.service"],
                           capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

        # A service file, then the agent as its unit would run it.
        with open("/etc/mesh-agent/services.d/api.json", "w") as f:
            json.dump({"service": {"name": "api", "endpoints": [
                {"address": "10.0.0.5", "port": 80}]}}, f)
        proc, sock, unit, user, log = self.run_like_the_unit()
        try:
            ready = self.wait_notify(sock, "READY", log=log)
            self.assertIn("ready: 1 services", ready["STATUS"])
            self.wait_notify(sock, "WATCHDOG")
            with urllib.request.urlopen("http://127.0.0.1:15000/v1/services", timeout=5) as r:
                names = [s["name"] for s in json.load(r)["services"]]
            self.assertEqual(names, ["api"])
            st = os.stat("/var/lib/mesh-agent")
            self.assertEqual(pwd.getpwuid(st.st_uid).pw_name, "mesh-agent")
            # ExecReload: validate as the unit's user, then SIGHUP.
            val = subprocess.run(["setpriv", f"--reuid={user}", f"--regid={user}",
                                  "--init-groups", "--"] + unit["ExecReload"][0].split(),
                                 capture_output=True, text=True)
            self.assertEqual(val.returncode, 0, val.stdout + val.stderr)
            proc.send_signal(signal.SIGHUP)
            self.wait_notify(sock, "RELOADING")
            self.wait_notify(sock, "READY")
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=30)
            sock.close()
        self.assertEqual(code, 0, open(log).read())
        lkg = "/var/lib/mesh-agent/catalog.json"
        self.check_mode(lkg, 0o600, owner="mesh-agent")

        # Upgrade over itself: the edited config stays.
        with open("/etc/mesh-agent/agent.json") as f:
            cfg = json.load(f)
        cfg["log"] = {"level": "debug"}
        with open("/etc/mesh-agent/agent.json", "w") as f:
            json.dump(cfg, f)
        self.dpkg("-i", deb)
        with open("/etc/mesh-agent/agent.json") as f:
            self.assertEqual(json.load(f)["log"]["level"], "debug")
        self.assertTrue(os.path.exists(lkg))  # state survives an upgrade

        # What docs/install.md has an operator add for controller mode: the join token (a
        # secret) and the controller's CA.
        token = "/etc/mesh-agent/join.token"
        with open(token, "w") as f:
            f.write("mesh1.secret\n")
        os.chmod(token, 0o600)
        os.chown(token, pw.pw_uid, pw.pw_gid)
        with open("/etc/mesh-agent/controller-ca.crt", "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\n")

        # Remove keeps config and state; purge removes everything, without a warning.
        self.dpkg("--remove", "mesh-agent")
        self.assertFalse(os.path.exists("/usr/sbin/mesh-agent"))
        self.assertTrue(os.path.exists("/etc/mesh-agent/agent.json"))
        self.assertTrue(os.path.exists(token))
        self.assertTrue(os.path.exists(lkg))
        self.dpkg("--purge", "mesh-agent")
        for gone in ("/usr/sbin/mesh-agent", "/etc/mesh-agent", "/var/lib/mesh-agent",
                     "/run/mesh-agent", "/lib/systemd/system/mesh-agent.service",
                     "/usr/lib/sysusers.d/mesh-agent.conf", "/usr/share/doc/mesh-agent",
                     "/usr/share/man/man8/mesh-agent.8.gz"):
            self.assertFalse(os.path.exists(gone), f"{gone} is left after purge")
        st = subprocess.run(["dpkg-query", "-W", "-f=${Status}", "mesh-agent"],
                            capture_output=True, text=True)
        self.assertNotIn("installed", st.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
