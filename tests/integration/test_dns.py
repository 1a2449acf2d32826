#!/usr/bin/env python3
"""The agent's DNS responder (docs/dns.md), asked with dig (bind9-dnsutils) and raw
sockets, forwarding to the fake DNS server (tests/fakes/fake_dns.py):

- mesh names in every form answer with the service's virtual IPs over UDP and TCP, the
  same after a restart (state_dir/vips.json) and after the service leaves and comes back;
  another type is NODATA with an SOA; a name under svc.cluster.local that is no mesh
  service is forwarded;
- other names are forwarded and come back under the client's own ID;
- a big upstream answer is cut with TC over UDP and whole over TCP;
- an upstream that is down or silent gives SERVFAIL, quickly;
- malformed queries get FORMERR or nothing, and the agent keeps answering;
- a bad entry in vips.json is reported and that service alone gets a new address, the
  others keep theirs; a bad config is refused with its reason."""
import ipaddress
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fakes"))

from fake_dns import FakeDns  # noqa: E402
from meshtest import AGENT, AgentTest, check_promtool, free_port, main, wait_for, within  # noqa: E402,E501

DIG = shutil.which("dig")


def service(name, namespace="default"):
    return {"service": {"name": name, "namespace": namespace, "protocol": "http",
                        "endpoints": [{"address": "127.0.0.1", "port": 9}]}}


def query(name, qtype=1, qid=0x1234, flags=0x0100, opt=None):
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    msg = struct.pack("!HHHHHH", qid, flags, 1, 0, 0, 1 if opt else 0) + labels
    msg += struct.pack("!HH", qtype, 1)
    if opt:
        msg += b"\0" + struct.pack("!HHIH", 41, opt, 0, 0)
    return msg


def header(reply):
    qid, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", reply[:12])
    return {"id": qid, "qr": flags >> 15, "tc": (flags >> 9) & 1, "rcode": flags & 0xF,
            "qd": qd, "an": an, "ns": ns, "ar": ar}


class DnsTest(AgentTest):
    def setUp(self):
        super().setUp()
        if not DIG:
            raise unittest.SkipTest("dig is not installed (bind9-dnsutils; scripts/install-deps "
                                    "installs it)")
        self.upstream = FakeDns().start()
        self.addCleanup(self.upstream.stop)
        self.port = free_port()

    def start(self, extra=None, services=None, upstreams=None):
        cfg = {"enabled": True, "listen": f"127.0.0.1:{self.port}",
               "upstreams": upstreams or [self.upstream.server],
               "upstream_timeout": "300ms", "consul_domain": "consul", "ttl": "5s"}
        cfg.update(extra or {})
        if services is None:
            services = {"api.json": service("api", "shop"), "web.json": service("web")}
        a = self.agent(config={"dns_responder": cfg}, services=services)
        a.start()
        return a

    def dig(self, *args, tcp=False):
        cmd = [DIG, "@127.0.0.1", "-p", str(self.port), "+time=5", "+tries=1"]
        cmd += ["+tcp"] if tcp else ["+notcp"]
        r = subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=30)
        return r.stdout

    def short(self, name, qtype="A", tcp=False):
        return self.dig("+short", name, qtype, tcp=tcp).split()

    def udp(self, msg, timeout=5.0):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(timeout)
            s.sendto(msg, ("127.0.0.1", self.port))
            try:
                return s.recvfrom(65535)[0]
            except socket.timeout:
                return None

    def test_mesh_names_and_stable_vips(self):
        a = self.start()
        v4 = self.short("api.shop")
        self.assertEqual(len(v4), 1, v4)
        self.assertIn(ipaddress.ip_address(v4[0]), ipaddress.ip_network("240.240.0.0/16"))
        v6 = self.short("api.shop", "AAAA")
        self.assertEqual(len(v6), 1, v6)
        self.assertIn(ipaddress.ip_address(v6[0]), ipaddress.ip_network("2001:2::/48"))
        # Every form, either case, UDP and TCP: the same addresses.
        for name in ("api.shop.", "API.Shop.svc", "api.shop.svc.cluster.local"):
            for tcp in (False, True):
                self.assertEqual(self.short(name, tcp=tcp), v4, name)
                self.assertEqual(self.short(name, "AAAA", tcp=tcp), v6, name)
        web = self.short("web.service.consul")
        self.assertEqual(self.short("web.default"), web)
        self.assertNotEqual(web, v4)
        out = self.dig("api.shop", "A")
        self.assertIn("flags: qr aa rd ra", out)
        self.assertRegex(out, r"api\.shop\.\s+5\s+IN\s+A\s+" + v4[0].replace(".", r"\."))
        # Another type: NODATA with an SOA whose MINIMUM is the TTL.
        out = self.dig("api.shop", "MX")
        self.assertIn("status: NOERROR", out)
        self.assertIn("ANSWER: 0, AUTHORITY: 1", out)
        self.assertRegex(out, r"IN\s+SOA\s+ns\.mesh-agent\.invalid\. .* 5\n")
        # Not a mesh service, even under svc.cluster.local: forwarded.
        self.upstream.set("db.prod.svc.cluster.local", ["10.96.0.10"])
        self.assertEqual(self.short("db.prod.svc.cluster.local"), ["10.96.0.10"])
        out = self.dig("nope.shop.svc.cluster.local")
        self.assertIn("status: NXDOMAIN", out)
        self.assertGreaterEqual(self.upstream.queries("nope.shop.svc.cluster.local"), 1)
        self.assertEqual(self.upstream.queries("api.shop"), 0)

        # Saved in the state dir; the same after a restart.
        path = os.path.join(a.state_dir, "vips.json")
        wait_for(lambda: os.path.exists(path), what="vips.json written")
        with open(path) as f:
            saved = {s["service"]: s for s in json.load(f)["services"]}
        self.assertEqual(saved["shop/api"]["ipv4"], v4[0])
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        self.assertEqual(a.stop(), 0)
        # Moved in the file to an address the hash would not pick: what comes back after the
        # restart (and after the service leaves and returns) can only come from the file.
        moved = "240.240.200.200" if v4[0] != "240.240.200.200" else "240.240.200.201"
        with open(path) as f:
            doc = json.load(f)
        for s in doc["services"]:
            if s["service"] == "shop/api":
                s["ipv4"] = moved
        with open(path, "w") as f:
            json.dump(doc, f)
        v4 = [moved]
        # A new service first, so that allocation order differs from the first run.
        a.write_service("aaa.json", service("aaa", "shop"))
        a.start()
        self.assertEqual(self.short("api.shop"), v4)
        self.assertEqual(self.short("api.shop", "AAAA"), v6)
        self.assertEqual(self.short("web.default"), web)

        # A service that leaves is forwarded; back, it has its old address.
        a.remove_service("api.json")
        wait_for(lambda: "shop/api" not in a.services(), what="api removed")
        self.assertIn("status: NXDOMAIN", self.dig("api.shop"))
        a.write_service("api.json", service("api", "shop"))
        wait_for(lambda: self.short("api.shop") == v4, what="api back with its address")

        # Metrics by kind, and a page promtool accepts.
        self.assertGreaterEqual(a.metric("mesh_dns_responder_queries_total", kind="mesh"), 4)
        self.assertGreaterEqual(a.metric("mesh_dns_responder_queries_total", kind="forwarded"),
                                1)
        self.assertEqual(a.metric("mesh_dns_responder_vips"), 3)
        check_promtool(self, a.get("/metrics")[2])

    def test_reload(self):
        """Services that come and go on a reload get and lose names at once; a change of
        dns_responder is for a restart: the reload fails, naming it, and the old responder
        keeps answering."""
        a = self.start()
        vip = self.short("api.shop")
        a.write_service("new.json", service("new", "shop"))
        a.reload()
        wait_for(lambda: len(self.short("new.shop")) == 1, what="a new service's name")
        a.config["dns_responder"]["ttl"] = "9s"
        a.write_config()
        a.reload()
        wait_for(lambda: "dns_responder cannot change on reload" in a.logs(),
                 what="the reload refused")
        self.assertEqual(self.short("api.shop"), vip)
        self.assertRegex(self.dig("api.shop"), r"api\.shop\.\s+5\s+IN\s+A")

    def test_forwarding_keeps_the_client_id(self):
        self.start()
        self.upstream.set("www.example.test", ["192.0.2.7", "2001:db8::7"])
        self.assertEqual(self.short("www.example.test"), ["192.0.2.7"])
        self.assertEqual(self.short("www.example.test", "AAAA", tcp=True), ["2001:db8::7"])
        for qid in (0x0001, 0xabcd, 0xffff):
            r = self.udp(query("www.example.test", qid=qid))
            h = header(r)
            self.assertEqual((h["id"], h["qr"], h["rcode"], h["an"]), (qid, 1, 0, 1))
            self.assertEqual(r[-4:], bytes([192, 0, 2, 7]))
        # The upstream's own negative answer, unchanged.
        out = self.dig("missing.example.test")
        self.assertIn("status: NXDOMAIN", out)
        self.assertIn("hostmaster.example.test", out)

    def test_truncation_and_tcp(self):
        self.start()
        self.upstream.set_txt("big.example.test", ["t" * 200] * 12)
        # UDP without EDNS: at most 512 bytes, TC set; dig +ignore shows the cut answer.
        out = self.dig("+ignore", "+noedns", "big.example.test", "TXT")
        self.assertRegex(out, r"flags: qr[a-z ]* tc")
        r = self.udp(query("big.example.test", 16))
        self.assertLessEqual(len(r), 512)
        self.assertEqual(header(r)["tc"], 1)
        # The client's EDNS0 size is honored: 4096 holds the whole answer.
        r = self.udp(query("big.example.test", 16, opt=4096))
        self.assertEqual((header(r)["tc"], header(r)["an"]), (0, 12))
        r = self.udp(query("big.example.test", 16, opt=1232))
        self.assertEqual(header(r)["tc"], 1)
        self.assertLessEqual(len(r), 1232)
        # TCP: whole; and dig's default (UDP, then TCP on TC) gets all of it too.
        out = self.dig("big.example.test", "TXT", tcp=True)
        self.assertIn("ANSWER: 12,", out)
        self.assertNotRegex(out, r"flags: qr[a-z ]* tc")
        r = subprocess.run([DIG, "@127.0.0.1", "-p", str(self.port), "+noedns",
                            "big.example.test", "TXT"], capture_output=True, text=True,
                           timeout=30).stdout
        self.assertIn("Truncated, retrying in TCP mode", r)
        self.assertIn("ANSWER: 12,", r)
        # Several queries on one TCP connection, answered in order of readiness.
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as c:
            msgs = [query("api.shop", qid=1), query("big.example.test", 16, qid=2),
                    query("web.default", 28, qid=3)]
            c.sendall(b"".join(struct.pack("!H", len(m)) + m for m in msgs))
            got = {}
            for _ in msgs:
                n = struct.unpack("!H", c.recv(2, socket.MSG_WAITALL))[0]
                r = c.recv(n, socket.MSG_WAITALL)
                got[header(r)["id"]] = header(r)
            self.assertEqual(sorted(got), [1, 2, 3])
            self.assertEqual(got[2]["an"], 12)
            self.assertEqual(got[1]["an"], 1)

    def test_upstream_failure_is_servfail_quickly(self):
        a = self.start()
        # Silent upstream: two tries of 300 ms each, then SERVFAIL; mesh names still answer.
        self.upstream.fail("timeout")
        t0 = time.monotonic()
        out = self.dig("slow.example.test")
        within(self, t0, 3.0, "SERVFAIL from a silent upstream")
        self.assertIn("status: SERVFAIL", out)
        self.assertEqual(len(self.short("api.shop")), 1)
        # An upstream that says SERVFAIL or REFUSED: SERVFAIL too.
        self.upstream.fail("refused")
        self.assertIn("status: SERVFAIL", self.dig("refused.example.test"))
        self.upstream.fail(None)
        self.assertGreaterEqual(a.metric("mesh_dns_responder_queries_total", kind="failed"), 2)

    def test_upstream_down_is_servfail_quickly(self):
        closed = free_port()  # nothing listens: the upstream refuses at once
        self.start(upstreams=[f"127.0.0.1:{closed}"])
        t0 = time.monotonic()
        out = self.dig("anything.example.test", tcp=True)
        within(self, t0, 3.0, "SERVFAIL from a closed upstream")
        self.assertIn("status: SERVFAIL", out)

    def test_malformed_queries(self):
        a = self.start()
        # FORMERR with the client's ID for what has a header; nothing for the rest.
        r = self.udp(query("api.shop", qid=0x7777)[:-3])
        self.assertEqual((header(r)["id"], header(r)["rcode"], header(r)["qr"]), (0x7777, 1, 1))
        bad_pointer = struct.pack("!HHHHHH", 9, 0, 1, 0, 0, 0) + b"\xc0\x0c\0\1\0\1"
        self.assertEqual(header(self.udp(bad_pointer))["rcode"], 1)
        self.assertIsNone(self.udp(b"\x01\x02\x03", timeout=0.5))
        response = bytearray(query("api.shop"))
        response[2] |= 0x80
        self.assertIsNone(self.udp(bytes(response), timeout=0.5))
        notify = query("api.shop", flags=4 << 11)
        self.assertEqual(header(self.udp(notify))["rcode"], 4)
        # TCP: a length under a header's closes the connection.
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as c:
            c.sendall(b"\x00\x03abc")
            self.assertEqual(c.recv(10), b"")
        self.assertEqual(len(self.short("api.shop")), 1)
        self.assertGreaterEqual(a.metric("mesh_dns_responder_queries_total", kind="malformed"),
                                4)

    def test_corrupt_vips_file_is_rebuilt(self):
        a = self.agent(config={"dns_responder": {"enabled": True,
                                                 "listen": f"127.0.0.1:{self.port}",
                                                 "upstreams": [self.upstream.server]}},
                       services={"api.json": service("api", "shop")})
        os.makedirs(a.state_dir, mode=0o700)
        path = os.path.join(a.state_dir, "vips.json")
        # A bad entry next to a good one at an address the hash would not pick.
        with open(path, "w") as f:
            f.write('{"version": 1, "services": [{"service": "shop/api", "ipv4": "10.0.0.1"}, '
                    '{"service": "default/web", "ipv4": "240.240.77.77"}]}')
        a.write_service("web.json", service("web"))
        a.start()
        self.assertEqual(len(self.short("api.shop")), 1)
        self.assertEqual(self.short("web.default"), ["240.240.77.77"])
        self.assertIn("$.services[0]", a.logs())
        self.assertIn("configured IPv4 range", a.logs())
        self.assertIn("dropping the bad entries", a.logs())

        def rewritten():
            with open(path) as f:
                saved = {s["service"]: s for s in json.load(f)["services"]}
            return (saved["shop/api"]["ipv4"].startswith("240.240.")
                    and saved["default/web"]["ipv4"] == "240.240.77.77")
        wait_for(rewritten, what="vips.json rebuilt")

    def test_bad_config_is_refused(self):
        def validate(responder):
            cfg = {"enabled": True, "listen": f"127.0.0.1:{self.port}"}
            cfg.update(responder)
            a = self.agent(config={"dns_responder": cfg})
            a.write_config()
            r = subprocess.run([AGENT, "validate", "--config", a.config_path],
                               capture_output=True, text=True, timeout=30)
            self.assertNotEqual(r.returncode, 0)
            return r.stderr + r.stdout

        out = validate({"ipv4_range": "240.240.0.1/16", "ipv6_range": "2001:2::/130"})
        self.assertIn("$.dns_responder.ipv4_range", out)
        self.assertIn("host bits", out)
        self.assertIn("$.dns_responder.ipv6_range", out)
        out = validate({"upstreams": ["127.0.0.1:" + str(self.port), "not an ip"]})
        self.assertIn("$.dns_responder.upstreams[0]: '127.0.0.1:%d' reaches the responder's "
                      "own listen address" % self.port, out)
        self.assertIn("$.dns_responder.upstreams[1]", out)
        out = validate({"listen": "unix:/tmp/x.sock", "domains": ["Bad_Domain"]})
        self.assertIn("$.dns_responder.listen", out)

if __name__ == "__main__":
    main()
