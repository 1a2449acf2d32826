#!/usr/bin/env python3
"""Kubernetes node mode of transparent capture (docs/capture.md, "Kubernetes node mode"), in
network namespaces the test makes: a "node" running the agent on its host network with the
fake Kubernetes API (tests/fakes/fake_kube.py) on its loopback, a "pod" of that node behind a
veth pair (its IP in the node's pod CIDR, its default route via the node), and a server
"host" the node reaches:

    pod 10.77.5.2 ---- 10.77.5.1  node  10.77.6.1 ---- 10.77.6.2 server (:8080)

The API serves Service shop/api with ClusterIP 10.96.0.10 port 80 (targetPort 8080, its
endpoint the server) and the pod, shop/client-0 of service account "client", on this node.
An unmodified client in the pod calls http://10.96.0.10/: nothing but the agent knows that
address (there is no kube-proxy), so reaching the server shows the pods chain redirected it
and the agent mapped the ClusterIP to the service. Needs root, `ip netns`, nft and curl;
skips with the reason otherwise."""
import json
import os
import subprocess
import sys
import tempfile
import shutil
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "fakes"))

import test_capture as tc  # noqa: E402
from meshtest import AgentTest, SLOW, main, wait_for  # noqa: E402
from pki import Pki  # noqa: E402

TD = "cluster.test"
POD_GW, POD_IP, POD_CIDR = "10.77.5.1", "10.77.5.2", "10.77.5.0/24"
NODE_IP, SERVER_IP = "10.77.6.1", "10.77.6.2"
CLUSTER_IP, SVC_PORT, APP_PORT, OTHER_PORT = "10.96.0.10", 80, 8080, 8081
LONELY_IP = "10.77.5.3"  # a second pod's address in the pod namespace
# IPv6 beside IPv4 (test_pod_calls_over_ipv6_as_itself): the pod is dual-stack.
POD_GW6, POD_IP6, POD_CIDR6 = "fd77:5::1", "fd77:5::2", "fd77:5::/64"
NODE_IP6, SERVER_IP6 = "fd77:6::1", "fd77:6::2"
MTLS_PORT = 15443

SKIP = tc.SKIP
if SKIP:
    print(f"test_capture_pods: skipped: {SKIP}", file=sys.stderr)

# The fake API server in the node's namespace: the objects, then "port N" once listening.
KUBE = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from fake_kube import FakeKube, pod_obj, service_obj, slice_obj
k = FakeKube(sys.argv[2], sys.argv[3], tokens={"token-1"}).start()
for kind, obj in json.loads(sys.argv[4]):
    k.put(kind, obj)
print("port", k.port, flush=True)
for line in sys.stdin:  # more objects, one [kind, object] per line
    kind, obj = json.loads(line)
    k.put(kind, obj)
    print("put", flush=True)
k.stop()
"""


@unittest.skipIf(SKIP, SKIP or "")
class CapturePodsTest(AgentTest):
    def setUp(self):
        super().setUp()
        tag = f"{os.getpid() % 100000}"
        self.ns_node, self.ns_pod, self.ns_srv = f"capN{tag}", f"capP{tag}", f"capS{tag}"
        self.addCleanup(self.delete_namespaces)
        for ns in (self.ns_node, self.ns_pod, self.ns_srv):
            tc.run("ip", "netns", "add", ns)
            tc.run("ip", "-n", ns, "link", "set", "lo", "up")
        # The pod's side is named as a CNI names it ("cali..."), for capture.pods.interfaces.
        self.link(self.ns_pod, POD_IP, self.ns_node, POD_GW, f"pe{tag}", f"cali{tag}")
        self.link(self.ns_srv, SERVER_IP, self.ns_node, NODE_IP, f"se{tag}", f"sn{tag}")
        tc.run("ip", "-n", self.ns_pod, "route", "add", "default", "via", POD_GW)
        self.tmp = tempfile.mkdtemp(prefix="mesh-capture-pods-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.pki = Pki(os.path.join(self.tmp, "pki"), name="kube-ca")
        self.srv_cert = self.pki.leaf("apiserver", [], sans=["IP:127.0.0.1"])
        self.sa = os.path.join(self.tmp, "serviceaccount")
        os.makedirs(self.sa)
        with open(os.path.join(self.sa, "token"), "w") as f:
            f.write("token-1")
        shutil.copy(self.pki.cert, os.path.join(self.sa, "ca.crt"))
        self.server = subprocess.Popen(
            ["ip", "netns", "exec", self.ns_srv, sys.executable, "-c",
             "import sys; sys.path.insert(0, sys.argv[1]); from http_backend import HttpBackend\n"
             "for name, port in (('api', sys.argv[2]), ('other', sys.argv[3])):\n"
             "    b = HttpBackend(name, port=int(port)); b.host = '0.0.0.0'; b.start()\n"
             "print('ready', flush=True); sys.stdin.read()", HERE, str(APP_PORT),
             str(OTHER_PORT)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.addCleanup(self.stop_proc, self.server)
        self.assertEqual(self.server.stdout.readline().strip(), "ready")

    def link(self, ns1, ip1, ns2, ip2, v1, v2):
        tc.run("ip", "link", "add", v1, "netns", ns1, "type", "veth", "peer", v2, "netns", ns2)
        tc.run("ip", "-n", ns1, "addr", "add", f"{ip1}/24", "dev", v1)
        tc.run("ip", "-n", ns2, "addr", "add", f"{ip2}/24", "dev", v2)
        tc.run("ip", "-n", ns1, "link", "set", v1, "up")
        tc.run("ip", "-n", ns2, "link", "set", v2, "up")

    def stop_proc(self, p):
        p.stdin.close()
        p.kill()
        p.wait()
        p.stdout.close()

    def delete_namespaces(self):
        for ns in (self.ns_node, self.ns_pod, self.ns_srv):
            for pid in tc.run("ip", "netns", "pids", ns, check=False).stdout.split():
                try:
                    os.kill(int(pid), 9)
                except (ProcessLookupError, ValueError):
                    pass
            tc.run("ip", "netns", "del", ns, check=False)

    def api_service(self):
        from fake_kube import service_obj
        return ("services", service_obj("shop", "api", ports=(("http", SVC_PORT, APP_PORT),),
                                        annotations={"mesh.io/protocol": "http"},
                                        cluster_ip=CLUSTER_IP))

    def client_pod(self):
        from fake_kube import pod_obj
        return ("pods", pod_obj("shop", "client-0", "node-a", sa="client", ip=POD_IP))

    def put(self, kind, obj):
        self.kube.stdin.write(json.dumps([kind, obj]) + "\n")
        self.kube.stdin.flush()
        self.assertEqual(self.kube.stdout.readline().strip(), "put")

    def start_kube(self, with_api_service=True, objects=None):
        from fake_kube import pod_obj, service_obj, slice_obj
        objects = objects or ([self.api_service()] if with_api_service else []) + [
            ("endpointslices", slice_obj("shop", "api-abc", "api",
                                         [(SERVER_IP, "node-b", "zone-1", None, "api-0")])),
            # A headless Service: no ClusterIP to capture.
            ("services", service_obj("shop", "db", cluster_ip="None")),
            ("endpointslices", slice_obj("shop", "db-abc", "db",
                                         [(SERVER_IP, "node-b", "zone-1", None, "db-0")],
                                         ports=(("http", OTHER_PORT, "http"),))),
        ] + ([self.client_pod()] if with_api_service else [])
        p = subprocess.Popen(
            ["ip", "netns", "exec", self.ns_node, sys.executable, "-c", KUBE,
             os.path.join(HERE, "..", "fakes"), self.srv_cert[0], self.srv_cert[1],
             json.dumps(objects)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.addCleanup(self.stop_proc, p)
        self.kube = p
        word, port = p.stdout.readline().split()
        self.assertEqual(word, "port")
        return int(port)

    def node_agent(self, pods, with_api_service=True, objects=None, mtls=None, ipv6=False,
                   server_ip=SERVER_IP):
        """mtls: the mesh CA (a Pki): standalone identity, and shop/api called over mTLS at
        the server host's agent (a static file gives its endpoint, server_ip, a mesh_port)."""
        port = self.start_kube(with_api_service, objects)
        a = tc.NsAgent(self.ns_node, name="node-a", config={
            "trust_domain": TD,
            "node": {"name": "node-a", "zone": "zone-1", "address": NODE_IP},
            "listeners": {"outbound_http": "127.0.0.1:15080",
                          "inbound": f"{NODE_IP}:{MTLS_PORT}"},
            "registries": [{"type": "kubernetes", "name": "k8s", "service_account_dir": self.sa,
                            "watch_timeout": "30s"}],
            "readiness": {"registry_sync_timeout": "5s"},
            "proxy": {"workers": 2, "access_log": "stdout"},
            "capture": {"enabled": True, "pods": pods, "ipv6": ipv6}},
            env={"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(port),
                 "NODE_NAME": "node-a"})
        if mtls:
            a.config["identity"] = {"mode": "standalone", "ca_cert": mtls.cert,
                                    "ca_key": mtls.key}
            a.config["registries"].append({"type": "static", "name": "files",
                                           "directory": a.services_dir, "poll_interval": "0"})
            a.write_service("api.json", {"service": {
                "name": "api", "namespace": "shop", "protocol": "http",
                "endpoints": [{"address": server_ip, "port": APP_PORT,
                               "mesh_port": MTLS_PORT}]}})
        self.agents.append(a)
        a.start()
        return a

    def server_agent(self, ca, inbound=f"{SERVER_IP}:{MTLS_PORT}", tcp_allow=None):
        """The server host's agent: shop/api's workload behind its inbound mTLS port; with
        tcp_allow (SPIFFE IDs), also TCP service shop/db (the "other" backend), which only
        those callers may reach."""
        b = tc.NsAgent(self.ns_srv, name="node-b", config={
            "trust_domain": TD, "identity": {"mode": "standalone", "ca_cert": ca.cert,
                                             "ca_key": ca.key},
            "node": {"name": "node-b", "zone": "zone-1", "address": SERVER_IP},
            "listeners": {"outbound_http": "127.0.0.1:15080", "inbound": inbound},
            "proxy": {"workers": 2, "access_log": "stdout"}},
            services={"api.json": {"service": {"name": "api", "namespace": "shop",
                                               "protocol": "http", "port": APP_PORT}}})
        if tcp_allow:
            b.write_service("db.json", {"service": {"name": "db", "namespace": "shop",
                                                    "protocol": "tcp", "port": OTHER_PORT}})
            b.write_resource("db.json", {"kind": "AuthorizationPolicy", "name": "db",
                                         "namespace": "shop",
                                         "spec": {"allow": [{"principals": tcp_allow}]}})
        self.agents.append(b)
        b.start()
        return b

    def curl(self, url, source=None):
        r = tc.run("ip", "netns", "exec", self.ns_pod, "curl", "-s", "-m", str(int(10 * SLOW)),
                   *(["--interface", source] if source else []), url, check=False)
        return r.returncode, r.stdout

    def k8s_ready(self, a):
        def known():
            code, _, body = a.get("/v1/services")
            names = {s["name"] for s in json.loads(body or b"{}").get("services", [])}
            return code == 200 and {"api", "db"} <= names
        wait_for(known, timeout=10 * SLOW, what="the Kubernetes services")

    def set_elements(self):
        """The dests4 set's elements as "ip . port" strings."""
        out = json.loads(tc.run("ip", "netns", "exec", self.ns_node, "nft", "-j", "list", "set",
                                "inet", "mesh_agent", "dests4").stdout)
        elems = next(i["set"] for i in out["nftables"] if "set" in i).get("elem", [])
        return {f"{e['concat'][0]} . {e['concat'][1]}" for e in elems}

    def check_call(self, a):
        self.k8s_ready(a)
        want = {f"{CLUSTER_IP} . {SVC_PORT}", f"{SERVER_IP} . {APP_PORT}"}
        wait_for(lambda: want <= self.set_elements(), timeout=10 * SLOW,
                 what="the ClusterIP and the endpoint in the captured set")
        # The headless Service has no ClusterIP: only its endpoint is captured.
        self.assertEqual(self.set_elements(), want | {f"{SERVER_IP} . {OTHER_PORT}"})
        code, body = self.curl(f"http://{CLUSTER_IP}:{SVC_PORT}/from-pod")
        self.assertEqual(code, 0, a.logs())
        echo = json.loads(body)
        self.assertEqual((echo["backend"], echo["target"]), ("api", "/from-pod"))
        self.assertEqual(a.metric("mesh_capture_outbound_connections_total", result="mesh"), 1)
        # The access log names the calling pod by the identity of its service account.
        wait_for(lambda: "/from-pod" in a.logs(), what="the access log line")
        line = [json.loads(x) for x in a.logs().splitlines()
                if x.startswith("{") and "/from-pod" in x][-1]
        self.assertEqual(line["downstream_identity"], f"spiffe://{TD}/ns/shop/sa/client")
        self.assertEqual(line["destination"], "shop/api")
        # The pod calling the server's own address (a mesh endpoint) is captured too.
        code, body = self.curl(f"http://{SERVER_IP}:{APP_PORT}/direct")
        self.assertEqual(code, 0, a.logs())
        self.assertEqual(a.metric("mesh_capture_outbound_connections_total", result="mesh"), 2)
        # Another port of that host is no mesh destination: not captured.
        code, body = self.curl(f"http://{SERVER_IP}:9/")
        self.assertNotEqual(code, 0)
        self.assertEqual(a.metric("mesh_capture_outbound_connections_total", result="mesh"), 2)
        self.assertEqual(a.metric("mesh_capture_outbound_connections_total",
                                  result="passthrough"), 0)
        # Both callers were named (without mTLS here: no identity to present).
        self.assertEqual(a.metric("mesh_capture_pod_callers_total", caller="named"), 2)
        self.assertEqual(a.metric("mesh_capture_pod_callers_total", caller="unknown"), 0)

    def test_pod_calls_a_cluster_ip_by_pod_cidr(self):
        a = self.node_agent({"cidrs": [POD_CIDR]})
        chains = {c["name"]: c for c in tc.mesh_items(self.ns_node)["chain"]}
        self.assertEqual(chains["pods"]["hook"], "prerouting")
        self.assertEqual(chains["pods"]["prio"], -110)
        self.check_call(a)

    def test_pod_calls_a_cluster_ip_by_interface(self):
        a = self.node_agent({"interfaces": ["cali*"]})
        self.check_call(a)
        # A clean stop removes the table (outbound fails open).
        a.stop()
        self.assertEqual(tc.mesh_items(self.ns_node)["table"], [])

    def test_a_service_after_its_slices_and_a_new_pod_are_followed(self):
        # The slices come first: the service is in the catalog, with no ClusterIP yet; the
        # calling pod is not there yet either.
        a = self.node_agent({"cidrs": [POD_CIDR]}, with_api_service=False)
        wait_for(lambda: f"{SERVER_IP} . {APP_PORT}" in self.set_elements(),
                 timeout=10 * SLOW, what="the endpoint in the captured set")
        self.assertNotIn(f"{CLUSTER_IP} . {SVC_PORT}", self.set_elements())
        # Its Service arrives, changing nothing of the service but its ClusterIP; the pod
        # starts (no service of this node changes with it).
        self.put(*self.api_service())
        self.put(*self.client_pod())
        self.check_call(a)

    def client_objects(self, pod=None):
        """Pod client-0 (account "client") as the endpoint on this node of Service
        shop/client: a local service, whose identity the agent holds a certificate for."""
        from fake_kube import service_obj, slice_obj
        return [self.api_service(),
                ("services", service_obj("shop", "client", ports=(("http", 80, APP_PORT),))),
                ("endpointslices", slice_obj("shop", "client-abc", "client",
                                             [(POD_IP, "node-a", "zone-1", None, "client-0")])),
                pod or self.client_pod()]

    def wait_held(self, a, spiffe_id):
        def held():
            return {c["id"] for c in a.json("/v1/identity").get("certificates", [])}
        wait_for(lambda: spiffe_id in held(), timeout=10 * SLOW,
                 what="the certificate of the calling pod's account")

    def call(self, a, server, url, path, source=None):
        """The pod calls url+path: the caller the server's agent names, and the XFCC the
        server saw."""
        code, body = self.curl(url + path, source)
        self.assertEqual(code, 0, a.logs() + server.logs())
        echo = json.loads(body)
        self.assertEqual((echo["backend"], echo["target"]), ("api", path))
        wait_for(lambda: path in server.logs(), what="the server agent's access log line")
        line = [json.loads(x) for x in server.logs().splitlines()
                if x.startswith("{") and path in x][-1]
        return line["downstream_identity"], echo["headers"].get("x-forwarded-client-cert", "")

    def test_pod_presents_its_own_identity_upstream(self):
        # Besides client-0, pod lonely-0 (account "lonely", at a second address of the pod
        # namespace) backs no service: the agent holds no certificate for it.
        from fake_kube import pod_obj
        tc.run("ip", "-n", self.ns_pod, "addr", "add", f"{LONELY_IP}/24", "dev",
               f"pe{os.getpid() % 100000}")
        ca = Pki(os.path.join(self.tmp, "mesh"), name="mesh-ca")
        server = self.server_agent(ca)
        a = self.node_agent({"cidrs": [POD_CIDR]}, mtls=ca, objects=self.client_objects() + [
            ("pods", pod_obj("shop", "lonely-0", "node-a", sa="lonely", ip=LONELY_IP))])
        client_id, lonely_id = (f"spiffe://{TD}/ns/shop/sa/{sa}" for sa in ("client", "lonely"))
        node_id = f"spiffe://{TD}/node/node-a"
        self.wait_held(a, client_id)
        wait_for(lambda: f"{CLUSTER_IP} . {SVC_PORT}" in self.set_elements(),
                 timeout=10 * SLOW, what="the ClusterIP in the captured set")

        def call(path, source=None):
            return self.call(a, server, f"http://{CLUSTER_IP}:{SVC_PORT}", path, source)

        # The server side sees the pod's own identity, in its access log and in XFCC.
        caller, xfcc = call("/as-client")
        self.assertEqual(caller, client_id)
        self.assertIn(f"URI={client_id}", xfcc)
        # A pod whose account has no certificate here: the node's identity, counted; the
        # first pod's pooled upstream connection is not lent to it.
        caller, xfcc = call("/as-lonely", LONELY_IP)
        self.assertEqual(caller, node_id)
        self.assertIn(f"URI={node_id}", xfcc)
        # And the first pod again: still itself.
        caller, _ = call("/as-client-again")
        self.assertEqual(caller, client_id)
        self.assertEqual(a.metric("mesh_capture_pod_callers_total", caller="named"), 3)
        self.assertEqual(a.metric("mesh_capture_pod_identity_total", presented="pod"), 2)
        self.assertEqual(a.metric("mesh_capture_pod_identity_total", presented="node"), 1)
        # The node's own access log names each calling pod.
        wait_for(lambda: "/as-lonely" in a.logs(), what="the node's access log line")
        line = [json.loads(x) for x in a.logs().splitlines()
                if x.startswith("{") and "/as-lonely" in x][-1]
        self.assertEqual(line["downstream_identity"], lonely_id)

    def test_host_process_is_not_named_as_a_host_network_pod(self):
        # A hostNetwork pod's podIP is the node's own address (status.hostIP): it must not
        # be indexed, and a process of the host, whose calls cross the output hook, is never
        # named by its source address, even when that address is some pod's.
        from fake_kube import pod_obj
        ca = Pki(os.path.join(self.tmp, "mesh"), name="mesh-ca")
        server = self.server_agent(ca)
        hostnet = pod_obj("shop", "hostnet-0", "node-a", sa="client", ip=NODE_IP,
                          host_network=True, host_ip=NODE_IP)
        a = self.node_agent({"cidrs": [POD_CIDR]}, mtls=ca, objects=self.client_objects() + [
            ("pods", hostnet)])
        client_id = f"spiffe://{TD}/ns/shop/sa/client"
        node_id = f"spiffe://{TD}/node/node-a"
        self.wait_held(a, client_id)
        wait_for(lambda: f"{CLUSTER_IP} . {SVC_PORT}" in self.set_elements(),
                 timeout=10 * SLOW, what="the ClusterIP in the captured set")
        pods = {}
        for r in a.json("/v1/status").get("registries", []):
            pods.update(r.get("pods_by_ip") or {})
        self.assertEqual(set(pods), {POD_IP})
        # The node has a route to the ClusterIP, as kube-proxy's nodes do; a host process
        # (not root: the agent runs as root here, so root is excluded) calls it from the
        # node's address.
        tc.run("ip", "-n", self.ns_node, "route", "add", CLUSTER_IP, "via", SERVER_IP)
        r = tc.run("ip", "netns", "exec", self.ns_node, "setpriv", f"--reuid={tc.NOBODY}",
                   f"--regid={tc.NOBODY}", "--clear-groups", "curl", "-s", "-m",
                   str(int(10 * SLOW)), "--interface", NODE_IP,
                   f"http://{CLUSTER_IP}:{SVC_PORT}/from-host", check=False)
        self.assertEqual(r.returncode, 0, a.logs() + server.logs())
        wait_for(lambda: "/from-host" in server.logs(), what="the server agent's access log")
        line = [json.loads(x) for x in server.logs().splitlines()
                if x.startswith("{") and "/from-host" in x][-1]
        self.assertEqual(line["downstream_identity"], node_id)
        self.assertEqual(a.metric("mesh_capture_pod_callers_total", caller="unknown"), 1)
        self.assertEqual(a.metric("mesh_capture_pod_callers_total", caller="named"), 0)

    def test_host_process_is_never_named_as_a_pod(self):
        # Even were the index wrong (a pod at the node's address), a call that crossed the
        # host's output hook is the host's: its redirect lands on a loopback address.
        from fake_kube import pod_obj
        ca = Pki(os.path.join(self.tmp, "mesh"), name="mesh-ca")
        server = self.server_agent(ca)
        # Not marked hostNetwork, and no hostIP: only the source_of check can tell.
        liar = pod_obj("shop", "liar-0", "node-a", sa="client", ip=NODE_IP)
        a = self.node_agent({"cidrs": [POD_CIDR]}, mtls=ca, objects=self.client_objects() + [
            ("pods", liar)])
        client_id = f"spiffe://{TD}/ns/shop/sa/client"
        self.wait_held(a, client_id)
        wait_for(lambda: f"{CLUSTER_IP} . {SVC_PORT}" in self.set_elements(),
                 timeout=10 * SLOW, what="the ClusterIP in the captured set")
        tc.run("ip", "-n", self.ns_node, "route", "add", CLUSTER_IP, "via", SERVER_IP)
        r = tc.run("ip", "netns", "exec", self.ns_node, "setpriv", f"--reuid={tc.NOBODY}",
                   f"--regid={tc.NOBODY}", "--clear-groups", "curl", "-s", "-m",
                   str(int(10 * SLOW)), "--interface", NODE_IP,
                   f"http://{CLUSTER_IP}:{SVC_PORT}/from-host", check=False)
        self.assertEqual(r.returncode, 0, a.logs() + server.logs())
        wait_for(lambda: "/from-host" in server.logs(), what="the server agent's access log")
        line = [json.loads(x) for x in server.logs().splitlines()
                if x.startswith("{") and "/from-host" in x][-1]
        self.assertEqual(line["downstream_identity"], f"spiffe://{TD}/node/node-a")
        self.assertEqual(a.metric("mesh_capture_pod_callers_total", caller="unknown"), 1)

    def test_pod_presents_its_own_identity_over_tcp(self):
        # Captured TCP (shop/db) presents the pod's identity too: the server side's
        # AuthorizationPolicy lets only client-0's account in; lonely-0 calls as the node.
        from fake_kube import pod_obj
        tc.run("ip", "-n", self.ns_pod, "addr", "add", f"{LONELY_IP}/24", "dev",
               f"pe{os.getpid() % 100000}")
        ca = Pki(os.path.join(self.tmp, "mesh"), name="mesh-ca")
        client_id = f"spiffe://{TD}/ns/shop/sa/client"
        server = self.server_agent(ca, tcp_allow=[client_id])
        a = self.node_agent({"cidrs": [POD_CIDR]}, mtls=ca, objects=self.client_objects() + [
            ("pods", pod_obj("shop", "lonely-0", "node-a", sa="lonely", ip=LONELY_IP))])
        a.write_service("db.json", {"service": {
            "name": "db", "namespace": "shop", "protocol": "tcp",
            "endpoints": [{"address": SERVER_IP, "port": OTHER_PORT, "mesh_port": MTLS_PORT}]}})
        self.wait_held(a, client_id)
        wait_for(lambda: f"{SERVER_IP} . {OTHER_PORT}" in self.set_elements(),
                 timeout=10 * SLOW, what="shop/db's endpoint in the captured set")
        code, body = self.curl(f"http://{SERVER_IP}:{OTHER_PORT}/tcp")
        self.assertEqual(code, 0, a.logs() + server.logs())
        self.assertEqual(json.loads(body)["backend"], "other")
        code, body = self.curl(f"http://{SERVER_IP}:{OTHER_PORT}/tcp-lonely", LONELY_IP)
        self.assertNotEqual(code, 0, f"the node's identity was let in: {body}")
        wait_for(lambda: f"denied spiffe://{TD}/node/node-a" in server.logs(),
                 what="the server agent's refusal of the node's identity")
        self.assertNotIn(f"denied {client_id}", server.logs())
        self.assertEqual(a.metric("mesh_capture_pod_identity_total", presented="pod"), 1)
        self.assertEqual(a.metric("mesh_capture_pod_identity_total", presented="node"), 1)

    def test_pod_calls_over_ipv6_as_itself(self):
        # A dual-stack pod (status.podIPs holds both) calls the server's IPv6 address, a mesh
        # endpoint: the pods chain redirects it (capture.ipv6), and the agent names the pod
        # by its IPv6 address as by its IPv4 one.
        tag = f"{os.getpid() % 100000}"
        for ns, ip, dev in ((self.ns_pod, POD_IP6, f"pe{tag}"), (self.ns_node, POD_GW6,
                                                                  f"cali{tag}"),
                            (self.ns_srv, SERVER_IP6, f"se{tag}"),
                            (self.ns_node, NODE_IP6, f"sn{tag}")):
            tc.run("ip", "-n", ns, "addr", "add", f"{ip}/64", "dev", dev, "nodad")
        tc.run("ip", "-n", self.ns_pod, "-6", "route", "add", "default", "via", POD_GW6)
        pod = self.client_pod()
        pod[1]["status"]["podIPs"] = [{"ip": POD_IP}, {"ip": POD_IP6}]
        ca = Pki(os.path.join(self.tmp, "mesh"), name="mesh-ca")
        server = self.server_agent(ca, inbound=f"[{SERVER_IP6}]:{MTLS_PORT}")
        a = self.node_agent({"cidrs": [POD_CIDR, POD_CIDR6]}, mtls=ca, ipv6=True,
                            server_ip=SERVER_IP6, objects=self.client_objects(pod))
        client_id = f"spiffe://{TD}/ns/shop/sa/client"
        self.wait_held(a, client_id)
        pods = {}
        for r in a.json("/v1/status").get("registries", []):
            pods.update(r.get("pods_by_ip") or {})
        self.assertEqual({ip: p["identity"] for ip, p in pods.items()},
                         {POD_IP: client_id, POD_IP6: client_id})
        caller, xfcc = self.call(a, server, f"http://[{SERVER_IP6}]:{APP_PORT}", "/v6")
        self.assertEqual(caller, client_id, a.logs())
        self.assertIn(f"URI={client_id}", xfcc)
        self.assertEqual(a.metric("mesh_capture_pod_callers_total", caller="named"), 1)
        self.assertEqual(a.metric("mesh_capture_pod_identity_total", presented="pod"), 1)


if __name__ == "__main__":
    main()
