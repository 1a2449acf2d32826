#!/usr/bin/env python3
"""Transparent capture (docs/capture.md) in network namespaces the test makes: host A (an
agent capturing outbound, an unmodified client running as another user) and host B (an
agent capturing inbound, a real HTTP server bound to 0.0.0.0) on one veth pair, and an
outsider C on a second veth pair to B:

    C 10.77.2.3 ---- 10.77.2.2  B  10.77.1.2 ---- 10.77.1.1 A

Needs root, `ip netns`, nft, curl and setpriv; skips with the reason otherwise."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import unittest

from meshtest import AGENT, Agent, AgentTest, SLOW, main, wait_for
from pki import Pki

HERE = os.path.dirname(os.path.abspath(__file__))
TD = "mesh.test"
A_IP, B_IP, B_IP_C, C_IP = "10.77.1.1", "10.77.1.2", "10.77.2.2", "10.77.2.3"
APP_PORT, PLAIN_PORT, MTLS_PORT = 8080, 8081, 15443
NOBODY = "65534"


def skip_reason():
    if os.geteuid() != 0:
        return "needs root (network namespaces and nftables)"
    for tool in ("ip", "nft", "curl", "setpriv"):
        if not shutil.which(tool):
            return f"'{tool}' is not installed"
    name = f"mesh-probe-{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if r.returncode != 0:
        return f"cannot make a network namespace: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    return None


SKIP = skip_reason()
if SKIP:
    print(f"test_capture: skipped: {SKIP}", file=sys.stderr)


def run(*cmd, check=True):
    r = subprocess.run(list(cmd), capture_output=True, text=True, timeout=60)
    if check and r.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)}: {r.returncode} {r.stderr}")
    return r


def ruleset(ns):
    return json.loads(run("ip", "netns", "exec", ns, "nft", "-j", "list", "ruleset").stdout)


def mesh_items(ns, table="mesh_agent"):
    """The tables, chains and rules of the capture table in ns, by kind."""
    out = {"table": [], "chain": [], "rule": [], "set": []}
    for item in ruleset(ns)["nftables"]:
        for kind in out:
            o = item.get(kind)
            if o and o.get("family") == "inet" and \
                    (o.get("name") if kind == "table" else o.get("table")) == table:
                out[kind].append(o)
    return out


class NsAgent(Agent):
    """An agent in a network namespace; its admin API is reached with curl from inside."""

    def __init__(self, ns, **kw):
        self.ns = ns
        super().__init__(**kw)

    def start(self, wait_ready=True):
        from meshtest import Notify
        self.write_config()
        self.notify = Notify(self.tmp)
        self.env["NOTIFY_SOCKET"] = self.notify.path
        self.log = open(self.log_path, "a")
        cmd = ["ip", "netns", "exec", self.ns, AGENT, "--config", self.config_path] + self.args
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        if wait_ready:
            self.wait_ready()
        return self

    def get(self, path, method="GET"):
        r = run("ip", "netns", "exec", self.ns, "curl", "-s", "-X", method, "-w", "\n%{http_code}",
                self.url(path), check=False)
        body, _, code = r.stdout.rpartition("\n")
        return int(code or 0), {}, body.encode()

    def cli(self, *args):
        return run("ip", "netns", "exec", self.ns, AGENT, "capture", *args, "--config",
                   self.config_path, check=False)


class CaptureNet(AgentTest):
    """The three hosts, the server and the agents' configs; no tests of its own (shared with
    tests/security/test_capture_bypass.py and test_capture_ipv6.py)."""

    SERVER_HOST = "0.0.0.0"  # where the server on B listens ("::": IPv6 and IPv4)

    def setUp(self):
        super().setUp()
        tag = f"{os.getpid() % 100000}"
        self.ns_a, self.ns_b, self.ns_c = f"capA{tag}", f"capB{tag}", f"capC{tag}"
        self.addCleanup(self.delete_namespaces)
        for ns in (self.ns_a, self.ns_b, self.ns_c):
            run("ip", "netns", "add", ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
        self.link(self.ns_a, A_IP, self.ns_b, B_IP, "ab")
        self.link(self.ns_c, C_IP, self.ns_b, B_IP_C, "cb")
        self.tmp = tempfile.mkdtemp(prefix="mesh-capture-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.pki = Pki(self.tmp)
        self.server = subprocess.Popen(
            ["ip", "netns", "exec", self.ns_b, sys.executable, "-c",
             "import sys; sys.path.insert(0, sys.argv[1]); from http_backend import HttpBackend\n"
             "for name, port in (('api-b', sys.argv[2]), ('plain-b', sys.argv[3])):\n"
             "    b = HttpBackend(name, port=int(port)); b.host = sys.argv[4]; b.start()\n"
             "print('ready', flush=True); sys.stdin.read()", HERE, str(APP_PORT),
             str(PLAIN_PORT), self.SERVER_HOST],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.addCleanup(self.stop_server)
        self.assertEqual(self.server.stdout.readline().strip(), "ready")

    def link(self, ns1, ip1, ns2, ip2, name):
        v1, v2 = f"{name}1{ns1[-5:]}"[:15], f"{name}2{ns1[-5:]}"[:15]
        run("ip", "link", "add", v1, "netns", ns1, "type", "veth", "peer", v2, "netns", ns2)
        run("ip", "-n", ns1, "addr", "add", f"{ip1}/24", "dev", v1)
        run("ip", "-n", ns2, "addr", "add", f"{ip2}/24", "dev", v2)
        run("ip", "-n", ns1, "link", "set", v1, "up")
        run("ip", "-n", ns2, "link", "set", v2, "up")

    def stop_server(self):
        self.server.stdin.close()
        self.server.kill()
        self.server.wait()
        self.server.stdout.close()

    def delete_namespaces(self):
        for ns in (self.ns_a, self.ns_b, self.ns_c):
            pids = run("ip", "netns", "pids", ns, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            run("ip", "netns", "del", ns, check=False)

    def identity(self):
        return {"mode": "standalone", "ca_cert": self.pki.cert, "ca_key": self.pki.key}

    def agent_b(self, mode="strict", start=True, expect_exit=0):
        b = NsAgent(self.ns_b, name="host-b", config={
            "trust_domain": TD, "identity": self.identity(),
            "node": {"name": "host-b", "zone": "zone-a", "address": B_IP},
            "listeners": {"outbound_http": "127.0.0.1:15080", "inbound": f"{B_IP}:{MTLS_PORT}"},
            "proxy": {"workers": 2, "access_log": "stdout"},
            "capture": {"enabled": True, "outbound": {"enabled": False},
                        "inbound": {"ports": [APP_PORT], "mode": mode}}},
            services={"api.json": {"service": {"name": "api", "namespace": "shop",
                                               "protocol": "http", "port": APP_PORT}}})
        b.expected_exit = expect_exit
        self.agents.append(b)
        if start:
            b.start(wait_ready=expect_exit == 0)
        return b

    def agent_a(self, start=True, capture=None):
        a = NsAgent(self.ns_a, name="host-a", config={
            "trust_domain": TD, "identity": self.identity(),
            "node": {"name": "host-a", "zone": "zone-a", "address": A_IP},
            "listeners": {"outbound_http": "127.0.0.1:15080", "inbound": f"{A_IP}:{MTLS_PORT}"},
            "capture": dict({"enabled": True}, **(capture or {}))},
            services={"api.json": {"service": {
                "name": "api", "namespace": "shop", "protocol": "http",
                "endpoints": [{"address": B_IP, "port": APP_PORT, "mesh_port": MTLS_PORT}]}}})
        self.agents.append(a)
        if start:
            a.start()
        return a

    def curl(self, ns, url, user=NOBODY):
        """An unmodified client, as another user than the agent's: (exit code, body)."""
        cmd = ["ip", "netns", "exec", ns]
        if user:
            cmd += ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups"]
        r = run(*cmd, "curl", "-s", "-m", str(int(10 * SLOW)), url, check=False)
        return r.returncode, r.stdout

    def wait_listening(self, agent, kind):
        def bound():
            ls = json.loads(agent.get("/v1/proxy")[2] or b"{}").get("listeners", [])
            return any(l["kind"] == kind and l["state"] == "listening" for l in ls)
        wait_for(bound, timeout=10 * SLOW, what=f"the {kind} listener")


@unittest.skipIf(SKIP, SKIP or "")
class CaptureTest(CaptureNet):
    def test_unmodified_client_reaches_the_server_over_mtls(self):
        b = self.agent_b()
        a = self.agent_a()
        self.wait_listening(a, "capture_outbound")
        code, body = self.curl(self.ns_a, f"http://{B_IP}:{APP_PORT}/hello")
        self.assertEqual(code, 0, a.logs())
        echo = json.loads(body)
        self.assertEqual(echo["backend"], "api-b")
        # It went through both agents over mTLS: B's access log names A's node identity,
        # and the server saw the caller's certificate forwarded.
        wait_for(lambda: "downstream_identity" in b.logs(), what="B's access log line")
        line = [json.loads(l) for l in b.logs().splitlines()
                if l.startswith("{") and '"downstream_identity"' in l][-1]
        self.assertEqual(line["downstream_identity"], f"spiffe://{TD}/node/host-a")
        self.assertEqual(a.metric("mesh_capture_outbound_connections_total", result="mesh"), 1)
        # Another port of that host is no mesh endpoint: not captured in "services" mode.
        code, body = self.curl(self.ns_a, f"http://{B_IP}:{PLAIN_PORT}/plain")
        self.assertEqual(code, 0)
        self.assertEqual(json.loads(body)["backend"], "plain-b")
        self.assertEqual(a.metric("mesh_capture_outbound_connections_total",
                                  result="passthrough"), 0)
        st = a.cli("status", "-o", "json")
        self.assertEqual(st.returncode, 0, st.stderr)
        status = json.loads(st.stdout)
        self.assertTrue(status["installed"])
        self.assertEqual([c["name"] for c in status["chains"]], ["outbound"])
        self.assertEqual(status["sets"]["dests4"], 1)

    def test_client_calls_a_mesh_name_and_reaches_the_server_over_mtls(self):
        # The unmodified client resolves api.shop with the host's resolver (`ip netns exec`
        # reads /etc/netns/<ns>/resolv.conf), whose name server is B's address: capture
        # hands the query to the agent's DNS responder, which answers with the service's
        # virtual IP, whose range capture redirects to the agent.
        etc = f"/etc/netns/{self.ns_a}"
        os.makedirs(etc, exist_ok=True)
        self.addCleanup(shutil.rmtree, etc, True)
        with open(f"{etc}/resolv.conf", "w") as f:
            f.write(f"nameserver {B_IP}\n")
        # A virtual IP must be routable for connect() to reach the nat hook; a real host's
        # default route does it (docs/capture.md).
        run("ip", "-n", self.ns_a, "route", "add", "default", "via", B_IP)
        b = self.agent_b()
        a = self.agent_a(start=False)
        a.config["dns_responder"] = {"enabled": True, "upstreams": [f"{B_IP}:53"]}
        a.config["capture"]["dns"] = True
        a.start()
        self.wait_listening(a, "capture_outbound")
        code, body = self.curl(self.ns_a, f"http://api.shop:{APP_PORT}/by-name")
        self.assertEqual(code, 0, a.logs())
        echo = json.loads(body)
        self.assertEqual((echo["backend"], echo["target"]), ("api-b", "/by-name"))
        wait_for(lambda: "/by-name" in b.logs(), what="B's access log line")
        line = [json.loads(l) for l in b.logs().splitlines()
                if l.startswith("{") and "/by-name" in l][-1]
        self.assertEqual(line["downstream_identity"], f"spiffe://{TD}/node/host-a")
        self.assertEqual(a.metric("mesh_capture_outbound_connections_total", result="mesh"), 1)
        self.assertGreaterEqual(a.metric("mesh_dns_responder_queries_total", kind="mesh"), 1)
        # The rules capture the whole virtual IP range, whatever the port.
        rules = json.dumps(mesh_items(self.ns_a)["rule"])
        self.assertIn("240.240.0.0", rules)

    def test_captured_http_follows_routes(self):
        # A Route on the calling host applies to captured calls as to explicit ones.
        self.agent_b()
        a = self.agent_a(start=False)
        a.write_resource("route.json", {"kind": "Route", "name": "api", "namespace": "shop",
                                        "spec": {"service": "api", "rules": [
                                            {"match": [{"path": {"exact": "/old"}}],
                                             "direct_response": {"status": 418,
                                                                 "body": "teapot\n"}},
                                            {"match": [{"path": {"prefix": "/v1/"}}],
                                             "rewrite": {"prefix": "/"},
                                             "destinations": [{"service": "api"}]}]}})
        a.start()
        self.wait_listening(a, "capture_outbound")
        code, body = self.curl(self.ns_a, f"http://{B_IP}:{APP_PORT}/old")
        self.assertEqual((code, body), (0, "teapot\n"), a.logs())
        code, body = self.curl(self.ns_a, f"http://{B_IP}:{APP_PORT}/v1/items")
        self.assertEqual(code, 0, a.logs())
        self.assertEqual(json.loads(body)["target"], "/items")

    def test_unknown_destination_passed_through_or_refused(self):
        # The server host's whole address is captured: its port 8081 is no mesh service.
        a = self.agent_a(capture={"outbound": {"include_cidrs": [f"{B_IP}/32"]}})
        self.wait_listening(a, "capture_outbound")
        code, body = self.curl(self.ns_a, f"http://{B_IP}:{PLAIN_PORT}/plain")
        self.assertEqual(code, 0, a.logs())
        self.assertEqual(json.loads(body)["backend"], "plain-b")
        self.assertEqual(a.metric("mesh_capture_outbound_connections_total",
                                  result="passthrough"), 1)
        self.assertEqual(a.stop(), 0)
        a = self.agent_a(capture={"outbound": {"include_cidrs": [f"{B_IP}/32"],
                                               "unknown_destination": "refuse"}})
        self.wait_listening(a, "capture_outbound")
        code, _ = self.curl(self.ns_a, f"http://{B_IP}:{PLAIN_PORT}/plain")
        self.assertNotEqual(code, 0)
        self.assertEqual(a.metric("mesh_capture_outbound_connections_total", result="refused"), 1)
        wait_for(lambda: "no mesh service there" in a.logs(), what="the refusal logged")

    def test_outsider_refused_under_strict(self):
        b = self.agent_b("strict")
        self.wait_listening(b, "capture_inbound")
        code, body = self.curl(self.ns_c, f"http://{B_IP_C}:{APP_PORT}/direct", user=None)
        self.assertNotEqual(code, 0, f"strict let plaintext through: {body}")
        wait_for(lambda: b.metric("mesh_capture_inbound_plaintext_total", result="refused") == 1,
                 what="the refusal counted")
        self.assertEqual(b.metric("mesh_capture_inbound_plaintext_total", result="accepted"), 0)

    def test_outsider_reaches_the_server_under_permissive(self):
        b = self.agent_b("permissive")
        self.wait_listening(b, "capture_inbound")
        code, body = self.curl(self.ns_c, f"http://{B_IP_C}:{APP_PORT}/direct", user=None)
        self.assertEqual(code, 0, b.logs())
        self.assertEqual(json.loads(body)["backend"], "api-b")
        self.assertEqual(b.metric("mesh_capture_inbound_plaintext_total", result="accepted"), 1)

    def test_sigkill_and_restart_leave_one_set_of_rules(self):
        a = self.agent_a()
        first = mesh_items(self.ns_a)
        self.assertEqual(len(first["table"]), 1)
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait()
        a.exits.append(0)  # killed on purpose
        a.close()
        # Nothing ran the systemd unit's ExecStopPost: the rules are still there.
        self.assertEqual(len(mesh_items(self.ns_a)["table"]), 1)
        a.start()
        again = mesh_items(self.ns_a)
        self.assertEqual(len(again["table"]), 1)
        self.assertEqual([c["name"] for c in again["chain"]], ["outbound"])
        self.assertEqual(len(again["rule"]), len(first["rule"]))
        self.assertEqual(len(again["set"]), len(first["set"]))
        self.wait_listening(a, "capture_outbound")
        b = self.agent_b()
        code, body = self.curl(self.ns_a, f"http://{B_IP}:{APP_PORT}/again")
        self.assertEqual(code, 0, a.logs() + b.logs())

    def test_conflicting_rule_refused_and_nothing_installed(self):
        run("ip", "netns", "exec", self.ns_b, "nft", "-f", "-", check=False)
        r = subprocess.run(["ip", "netns", "exec", self.ns_b, "nft", "-f", "-"], text=True,
                           capture_output=True, input=(
                               "table ip nat {\n chain PREROUTING {\n"
                               "  type nat hook prerouting priority -100; policy accept;\n"
                               f"  tcp dport {APP_PORT} redirect to :3128\n }}\n}}\n"))
        self.assertEqual(r.returncode, 0, r.stderr)
        b = self.agent_b(expect_exit=1)
        self.assertEqual(b.proc.wait(timeout=20 * SLOW), 1)
        self.assertIn("table ip nat chain PREROUTING rule handle", b.logs())
        self.assertIn("nothing is installed", b.logs())
        self.assertEqual(mesh_items(self.ns_b)["table"], [])
        # The operator's command says the same and installs nothing either.
        r = b.cli("install")
        self.assertEqual(r.returncode, 1)
        self.assertIn("(redirect) rewrites the destination of inbound TCP", r.stderr)
        self.assertEqual(mesh_items(self.ns_b)["table"], [])

    def test_stop_keeps_fail_closed_rules_and_remove_leaves_nothing(self):
        b = self.agent_b("strict")
        self.assertEqual(b.stop(), 0)
        # Strict inbound fails closed: its chain stays, the workload stays unreachable.
        self.assertEqual([c["name"] for c in mesh_items(self.ns_b)["chain"]], ["inbound"])
        code, _ = self.curl(self.ns_c, f"http://{B_IP_C}:{APP_PORT}/", user=None)
        self.assertNotEqual(code, 0)
        # What systemd's ExecStopPost runs keeps it too; the operator's remove does not.
        r = b.cli("remove", "--stopping")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(len(mesh_items(self.ns_b)["chain"]), 1)
        r = b.cli("remove")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(mesh_items(self.ns_b), {"table": [], "chain": [], "rule": [], "set": []})
        st = json.loads(b.cli("status", "-o", "json").stdout)
        self.assertFalse(st["installed"])
        code, body = self.curl(self.ns_c, f"http://{B_IP_C}:{APP_PORT}/", user=None)
        self.assertEqual(code, 0, "with the rules gone the workload answers directly")
        # An outbound-only agent fails open: a stop leaves nothing.
        a = self.agent_a()
        self.assertEqual(a.stop(), 0)
        self.assertEqual(mesh_items(self.ns_a)["table"], [])


NONL_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <sys/socket.h>
/* As systemd's RestrictAddressFamilies= without AF_NETLINK: socket() fails. */
int socket(int domain, int type, int protocol)
{
    static int (*real)(int, int, int);
    if (domain == AF_NETLINK) {
        errno = EAFNOSUPPORT;
        return -1;
    }
    if (!real)
        real = (int (*)(int, int, int))dlsym(RTLD_NEXT, "socket");
    return real(domain, type, protocol);
}
"""


class NoNetlinkTest(AgentTest):
    """libnftables ends the process (exit 3) when it cannot open its netlink socket; the
    shipped unit allows no AF_NETLINK. The agent must never let it."""

    def setUp(self):
        super().setUp()
        cc = shutil.which("cc") or shutil.which("gcc")
        if not cc:
            self.skipTest("no C compiler to build the socket() shim")
        self.tmp = tempfile.mkdtemp(prefix="mesh-nonl-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        src = os.path.join(self.tmp, "nonl.c")
        with open(src, "w") as f:
            f.write(NONL_C)
        self.so = os.path.join(self.tmp, "nonl.so")
        run(cc, "-shared", "-fPIC", "-o", self.so, src, "-ldl")
        asan = os.environ.get("ASAN_OPTIONS", "")
        self.env = {"LD_PRELOAD": self.so,
                    "ASAN_OPTIONS": (asan + ":" if asan else "") + "verify_asan_link_order=0"}

    def test_capture_off_starts_without_netlink(self):
        a = self.agent(env=self.env)
        a.start()  # READY=1: the leftover check did not end it
        self.assertFalse(a.json("/v1/config")["capture"]["enabled"])

    def test_capture_on_fails_clearly_without_netlink(self):
        a = self.agent(env=self.env, config={"capture": {"enabled": True}})
        a.expected_exit = 1
        a.start(wait_ready=False)
        self.assertEqual(a.proc.wait(timeout=20 * SLOW), 1)
        self.assertIn("cannot open a netlink socket", a.logs())
        r = subprocess.run([AGENT, "capture", "status", "--config", a.config_path],
                           capture_output=True, text=True, env=dict(os.environ, **self.env))
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("cannot open a netlink socket", r.stderr)


if __name__ == "__main__":
    main()
