"""The Kubernetes registry adapter against the strict fake API server
(tests/fakes/fake_kube.py): list then watch, pagination, 410 relists without a transient
removal, token rotation, API server restarts, endpoint conditions, node-local workloads,
RBAC and authentication failures, and merging with Consul."""
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fakes"))

from fake_consul import FakeConsul  # noqa: E402
from fake_kube import FakeKube, pod_obj, service_obj, slice_obj  # noqa: E402
from meshtest import LATITUDE, within, AGENT, AgentTest, SLOW, check_promtool, main, wait_for  # noqa: E402
from pki import Pki  # noqa: E402

TD = "cluster.test"


def endpoints(agent, name, ns="shop"):
    s = agent.services().get(f"{ns}/{name}")
    return sorted((e["address"], e["port"], e["health"]) for e in s["endpoints"]) if s else []


def ready(ip, port=8080):
    return (ip, port, "healthy")


class KubeTest(AgentTest):
    def setUp(self):
        super().setUp()
        self.tmp = self.agent(name="scratch").tmp
        self.pki = Pki(os.path.join(self.tmp, "pki"), name="kube-ca")
        self.srv = self.pki.leaf("apiserver", [], sans=["IP:127.0.0.1"])
        self.kube = FakeKube(self.srv[0], self.srv[1], tokens={"token-1"}).start()
        self.consuls = []
        # The service account directory as the kubelet mounts it: files behind "..data".
        self.sa = os.path.join(self.tmp, "serviceaccount")
        os.makedirs(self.sa)
        self.rotations = 0
        self.write_token("token-1")

    def tearDown(self):
        super().tearDown()
        self.kube.stop()
        for c in self.consuls:
            c.stop()

    def write_token(self, token):
        """Writes the token and the CA the way the kubelet does: a new timestamped directory,
        then an atomic swap of the ..data symlink."""
        self.rotations += 1
        d = os.path.join(self.sa, f"..2026_{self.rotations:04d}")
        os.makedirs(d)
        with open(os.path.join(d, "token"), "w") as f:
            f.write(token)
        with open(self.pki.cert) as src, open(os.path.join(d, "ca.crt"), "w") as dst:
            dst.write(src.read())
        tmp_link = os.path.join(self.sa, "..data_tmp")
        os.symlink(os.path.basename(d), tmp_link)
        os.rename(tmp_link, os.path.join(self.sa, "..data"))
        for name in ("token", "ca.crt"):
            p = os.path.join(self.sa, name)
            if not os.path.islink(p):
                os.symlink(os.path.join("..data", name), p)

    def kube_agent(self, services=None, identity=None, **reg):
        entry = {"type": "kubernetes", "name": "k8s", "service_account_dir": self.sa,
                 "watch_timeout": "30s"}
        entry.update(reg)
        entry = {k: v for k, v in entry.items() if v is not None}
        a = self.agent(services=services, name="host-a",
                       env={"KUBERNETES_SERVICE_HOST": "127.0.0.1",
                            "KUBERNETES_SERVICE_PORT": str(self.kube.port),
                            "NODE_NAME": "node-a"})
        a.config["registries"] = [entry]
        a.config["trust_domain"] = TD
        a.config["readiness"] = {"registry_sync_timeout": "5s"}
        if identity:
            a.config["identity"] = identity
        return a

    def add_service(self, name, ips, ns="shop", node="node-b", slice_name=None, cond=None):
        self.kube.put("services", service_obj(ns, name))
        self.kube.put("endpointslices", slice_obj(
            ns, slice_name or f"{name}-abc", name,
            [(ip, node, "zone-1", cond, f"{name}-pod-{i}") for i, ip in enumerate(ips)]))

    # -- discovery --

    def test_lists_500_services_and_applies_watch_events_within_100ms(self):
        services, slices = [], []
        for s in range(500):
            services.append(service_obj("shop", f"svc-{s:03d}"))
            slices.append(slice_obj("shop", f"svc-{s:03d}-x", f"svc-{s:03d}",
                                    [(f"10.{k + 1}.{s // 200}.{(s % 200) + 1}", "node-b",
                                      "zone-1", None, None) for k in range(4)]))
        self.kube.put_many("services", services)
        self.kube.put_many("endpointslices", slices)
        a = self.kube_agent(page_size=100).start()
        wait_for(lambda: len(a.services()) == 500, timeout=20, what="500 services listed")
        self.assertEqual(sum(len(s["endpoints"]) for s in a.services().values()), 2000)
        lists = [r for r in self.kube.requests if "endpointslices" in r[1] and "watch" not in r[2]]
        self.assertEqual(len(lists), 5, "five pages of 100")
        self.assertTrue(all(r[2].get("labelSelector") == "kubernetes.io/service-name"
                            for r in lists))
        self.assertEqual(a.metric("mesh_k8s_objects", registry="k8s", resource="endpointslices"),
                         500)
        # A watch event reaches the catalog at once, not at a relist (polled on the one
        # service: the whole listing's own cost is not what is measured; bench/k8s measures).
        wait_for(lambda: self.kube.open_watches == 3, what="the watches")

        def svc007():
            s = a.json("/v1/services/shop/svc-007")
            return sorted((e["address"], e["port"], e["health"]) for e in s["endpoints"])

        for i in range(5):
            t0 = time.monotonic()
            self.kube.put("endpointslices", slice_obj("shop", "svc-007-x", "svc-007",
                                                     [(f"10.9.9.{i + 1}", "node-b", "z", None,
                                                       None)]))
            wait_for(lambda: svc007() == [ready(f"10.9.9.{i + 1}")],
                     interval=0.002, what="the modified slice")
            within(self, t0, 0.5, "a watch event reaching the catalog")
        # Deleting the slice removes the service's endpoints; the Service stays, with none.
        self.kube.delete("endpointslices", "shop", "svc-007-x")
        wait_for(lambda: a.services()["shop/svc-007"]["endpoints"] == [], what="the deleted slice")
        self.kube.delete("services", "shop", "svc-007")
        wait_for(lambda: "shop/svc-007" not in a.services(), what="the deleted Service")

    def test_steady_churn_keeps_the_loop_responsive(self):
        # bench/k8s-churn in small: 4,000 Services of 4 endpoints, a few with a pod on this
        # node (as a DaemonSet agent sees them), 400 slice changes a second for 8 s. The cost
        # of an event must not grow with the catalog: the agent keeps up, answers its admin
        # API and pings the watchdog (every 1 s here) throughout. The bounds are loose for a
        # loaded machine; before the fix each event walked the whole catalog and the agent
        # fell behind, its admin API took seconds and the watchdog went unfed for as long.
        n, per, rate, seconds = 4000, 4, 400, 8

        def variant(s, b):
            eps = [(f"10.{s // 250}.{s % 250}.{e + (10 if b and e == s % per else 1)}",
                    "node-a" if s < 10 and e == 0 else f"node-{e}", "z", None,
                    f"svc-{s}-pod" if s < 10 and e == 0 else None) for e in range(per)]
            return slice_obj("shop", f"svc-{s}-x", f"svc-{s}", eps)

        self.kube.put_many("services", [service_obj("shop", f"svc-{s}") for s in range(n)])
        self.kube.put_many("endpointslices", [variant(s, False) for s in range(n)])
        self.kube.put_many("pods", [pod_obj("shop", f"svc-{s}-pod", "node-a", sa=f"sa-{s}")
                                    for s in range(10)])
        prepared = [(self.kube.prepare("endpointslices", variant(s, False)),
                     self.kube.prepare("endpointslices", variant(s, True))) for s in range(n)]
        flip = [False] * n
        events = []
        for i in range(rate * seconds):
            s = (i * 7919) % n
            flip[s] = not flip[s]
            events.append(prepared[s][flip[s]])
        a = self.kube_agent()
        a.env["WATCHDOG_USEC"] = "2000000"
        a.start()
        wait_for(lambda: len(a.services()) == n, timeout=60, what="every service listed")
        wait_for(lambda: self.kube.open_watches == 3, what="the watches")
        pings, probes, stop = [], [], threading.Event()

        def watchdog():
            while not stop.is_set():
                if a.notify._drain(0.1) and "WATCHDOG" in a.notify.messages[-1]:
                    pings.append(time.monotonic())

        def probe():
            while not stop.is_set():
                t = time.monotonic()
                try:
                    a.get("/healthz")
                except OSError:
                    pass  # counted at what it waited
                probes.append(time.monotonic() - t)
                time.sleep(0.05)

        def applied():
            return a.json("/v1/status")["registries"][0]["events"]["endpointslices"]

        threads = [threading.Thread(target=watchdog), threading.Thread(target=probe)]
        for t in threads:
            t.start()
        try:
            base = applied()
            start = time.monotonic()
            sent = 0
            while sent < len(events):
                due = min(len(events), int((time.monotonic() - start) * rate))
                self.kube.put_prepared(events[sent:due])
                sent = due
                time.sleep(0.02)
            end = time.monotonic()
            wait_for(lambda: applied() - base >= len(events), timeout=30 * SLOW,
                     what="every event applied")
            caught_up = time.monotonic() - end
        finally:
            stop.set()
            for t in threads:
                t.join()
        pings = [p for p in pings if p >= start]
        gaps = [b - a for a, b in zip(pings, pings[1:])] + [end - pings[-1] if pings else 99]
        print(f"churn: longest watchdog gap {max(gaps):.2f} s, slowest /healthz "
              f"{max(probes):.2f} s, caught up {caught_up:.2f} s after the last event",
              file=sys.stderr)
        self.assertLess(max(gaps), 2.5 * LATITUDE, f"watchdog pings stopped for {max(gaps):.1f} s")
        self.assertLess(max(probes), 1.0 * LATITUDE, f"/healthz took {max(probes):.1f} s")
        self.assertLess(caught_up, 5 * LATITUDE, f"{caught_up:.1f} s behind after the churn")
        self.assertEqual(a.metric("mesh_k8s_relists_total", registry="k8s",
                                  resource="endpointslices"), 0)
        for s in (0, 1, n // 2, n - 1):
            want = sorted((e["addresses"][0], 8080, "healthy")
                          for e in self.kube.objects["endpointslices"][f"shop/svc-{s}-x"]
                          ["endpoints"])
            self.assertEqual(endpoints(a, f"svc-{s}"), want)

    def test_410_mid_stream_relists_with_no_transient_removal(self):
        for s in range(40):
            self.add_service(f"svc-{s:02d}", [f"10.0.{s}.1", f"10.0.{s}.2"])
        a = self.kube_agent().start()
        wait_for(lambda: len(a.services()) == 40, what="40 services")
        seen, stop = [], threading.Event()

        def watch_catalog():
            while not stop.is_set():
                s = a.services()
                seen.append((len(s), sum(len(x["endpoints"]) for x in s.values())))

        t = threading.Thread(target=watch_catalog)
        t.start()
        try:
            time.sleep(0.2)
            self.kube.expire_watches()  # every watch gets ERROR 410 and ends
            self.add_service("svc-new", ["10.9.0.1"])  # a change made meanwhile
            wait_for(lambda: a.metric("mesh_k8s_relists_total", registry="k8s",
                                      resource="endpointslices") >= 1, what="a relist")
            wait_for(lambda: endpoints(a, "svc-new") == [ready("10.9.0.1")], timeout=10,
                     what="the change made during the relist")
            time.sleep(0.2)
        finally:
            stop.set()
            t.join()
        self.assertGreater(len(seen), 10)
        self.assertEqual(min(n for n, _ in seen), 40, "a service went missing during the relist")
        self.assertEqual(min(e for _, e in seen), 80, "an endpoint went missing")
        self.assertIn("is gone (410): listing again", a.logs())

    def test_partial_relist_never_withdraws_a_kept_endpoint(self):
        # web's endpoint 10.0.0.1 moves from slice web-a to web-z while the slices' watch is
        # cut off: the relist (a page per slice, slow) sees web-a empty first and web-z last.
        # Meanwhile the Services' watch delivers. The endpoint was never gone from the
        # server's state, so it must never be gone from the catalog.
        self.kube.put("services", service_obj("shop", "web"))
        self.kube.put("endpointslices", slice_obj("shop", "web-a", "web",
                                                  [("10.0.0.1", "node-b", "z", None, None)]))
        self.kube.put("endpointslices", slice_obj("shop", "web-b", "web",
                                                  [("10.0.0.2", "node-b", "z", None, None)]))
        for i in range(4):
            self.add_service(f"other-{i}", [f"10.1.0.{i + 1}"])
        a = self.kube_agent(page_size=1).start()
        wait_for(lambda: len(endpoints(a, "web")) == 2, what="web")
        wait_for(lambda: self.kube.open_watches == 3, what="the watches")
        seen, stop = [], threading.Event()

        def watch_catalog():
            while not stop.is_set():
                seen.append(endpoints(a, "web"))

        t = threading.Thread(target=watch_catalog)
        t.start()
        try:
            self.kube.list_delay = 0.3 * SLOW
            t0 = time.monotonic()
            self.kube.expire_watches("endpointslices")
            self.kube.put("endpointslices", slice_obj("shop", "web-z", "web",
                                                      [("10.0.0.1", "node-b", "z", None, None)]))
            self.kube.put("endpointslices", slice_obj("shop", "web-a", "web", []))
            deadline = time.monotonic() + 20 * SLOW
            n = 0
            # Seven slices, seven pages: web-a is the fifth, web-z the seventh.
            while len(self.kube.requests_since(t0, "endpointslices?limit=1")) < 7:
                # Another watch delivers while the pages come in.
                self.kube.put("services", service_obj("shop", f"other-{n % 4}",
                                                      annotations={"n": str(n)}))
                n += 1
                time.sleep(0.05)
                self.assertLess(time.monotonic(), deadline, "the relist did not end")
            self.kube.list_delay = 0
            wait_for(lambda: self.kube.open_watches == 3, what="watching again")
            time.sleep(0.2)
        finally:
            self.kube.list_delay = 0
            stop.set()
            t.join()
        self.assertGreater(n, 5, "the Services' watch delivered during the relist")
        missing = [s for s in seen if ready("10.0.0.1") not in s]
        self.assertEqual(missing, [], "the kept endpoint was withdrawn during the relist")
        self.assertEqual(endpoints(a, "web"), [ready("10.0.0.1"), ready("10.0.0.2")])

    def test_stream_cut_mid_object_and_api_server_restart_are_survived(self):
        self.add_service("web", ["10.0.0.1"])
        a = self.kube_agent().start()
        wait_for(lambda: endpoints(a, "web") == [ready("10.0.0.1")], what="web")
        time.sleep(0.2)
        self.kube.cut_streams()
        self.add_service("web", ["10.0.0.2"])
        wait_for(lambda: endpoints(a, "web") == [ready("10.0.0.2")], timeout=10,
                 what="a change after the stream was cut mid-object")
        self.assertIn("the stream broke", a.logs())
        # The API server goes away; a change happens meanwhile; it comes back.
        self.kube.stop()
        self.add_service("web", ["10.0.0.3"])
        time.sleep(1)
        self.assertEqual(endpoints(a, "web"), [ready("10.0.0.2")], "kept while the server is away")
        self.kube.start()
        wait_for(lambda: endpoints(a, "web") == [ready("10.0.0.3")], timeout=20,
                 what="the change made while the server was away")

    def test_endpoint_conditions_drive_health_and_drain(self):
        self.kube.put("services", service_obj("shop", "web"))
        self.kube.put("endpointslices", slice_obj("shop", "web-1", "web", [
            ("10.0.0.1", "node-b", "z", {"ready": True, "serving": True, "terminating": False},
             None),
            ("10.0.0.2", "node-b", "z", {"ready": False, "serving": True, "terminating": True},
             None),
            ("10.0.0.3", "node-b", "z", {"ready": False, "serving": False, "terminating": False},
             None)]))
        # A second slice of the same service merges with the first.
        self.kube.put("endpointslices", slice_obj("shop", "web-2", "web", [
            ("10.0.0.4", "node-c", "z2", {}, None)]))
        a = self.kube_agent().start()
        wait_for(lambda: len(endpoints(a, "web")) == 4, what="web's endpoints")
        self.assertEqual(endpoints(a, "web"), [
            ("10.0.0.1", 8080, "healthy"), ("10.0.0.2", 8080, "draining"),
            ("10.0.0.3", 8080, "unhealthy"), ("10.0.0.4", 8080, "healthy")])
        e = {x["address"]: x for x in a.services()["shop/web"]["endpoints"]}
        self.assertEqual((e["10.0.0.4"]["zone"], e["10.0.0.4"]["node"]), ("z2", "node-c"))
        self.assertEqual(a.services()["shop/web"]["protocol"], "http")  # the port's appProtocol

    def test_local_workloads_get_their_service_account_identity(self):
        self.kube.put("pods", pod_obj("shop", "web-pod-0", "node-a", sa="web-sa"))
        self.kube.put("pods", pod_obj("shop", "other", "node-b", sa="other-sa"))
        self.add_service("web", ["10.0.0.1"], node="node-a")
        self.add_service("db", ["10.0.0.2"], node="node-b")
        ca = self.pki
        a = self.kube_agent(identity={"mode": "standalone", "ca_cert": ca.cert,
                                      "ca_key": ca.key}).start()
        wait_for(lambda: [s["name"] for s in a.json("/v1/local")["services"]] == ["web"],
                 what="web as a local service")
        local = a.json("/v1/local")["services"][0]
        self.assertEqual(local["identity"], f"spiffe://{TD}/ns/shop/sa/web-sa")
        self.assertEqual(local["address"], "10.0.0.1:8080")
        wait_for(lambda: f"spiffe://{TD}/ns/shop/sa/web-sa" in
                 [c["id"] for c in a.json("/v1/identity")["certificates"]],
                 what="a certificate for the pod's service account")
        pods = [r for r in self.kube.requests if "/pods" in r[1]]
        self.assertTrue(all(r[2].get("fieldSelector") == "spec.nodeName=node-a" for r in pods))

    def test_watch_timeout_is_drawn_from_5_to_10_minutes_as_client_go_does(self):
        self.add_service("web", ["10.0.0.1"])
        a = self.kube_agent(watch_timeout=None).start()  # the default, 5m
        wait_for(lambda: len([r for r in self.kube.requests if r[2].get("watch") == "1"]) >= 3,
                 what="the three watches")
        timeouts = [int(r[2]["timeoutSeconds"]) for r in self.kube.requests
                    if r[2].get("watch") == "1"]
        self.assertTrue(all(300 <= t <= 600 for t in timeouts), timeouts)
        self.assertEqual(endpoints(a, "web"), [ready("10.0.0.1")])

    def test_in_cluster_without_a_node_name_is_a_startup_error(self):
        self.add_service("web", ["10.0.0.1"])
        a = self.kube_agent()
        del a.env["NODE_NAME"]
        del a.config["node"]["name"]  # the agent would stand in the pod's hostname
        a.write_config()
        r = subprocess.run([AGENT, "validate", "--config", a.config_path], capture_output=True,
                           text=True, env=a.env)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("in-cluster mode needs this node's name: set NODE_NAME", r.stderr)
        a.expected_exit = 1
        a.start(wait_ready=False)
        self.assertEqual(a.proc.wait(timeout=20 * SLOW), 1)
        self.assertIn("in-cluster mode needs this node's name", a.logs())
        # The registry's node_name (or NODE_NAME) is enough.
        b = self.kube_agent(node_name="node-a")
        del b.env["NODE_NAME"]
        del b.config["node"]["name"]
        b.start()
        self.assertEqual(b.json("/v1/status")["registries"][0]["node_name"], "node-a")

    def test_429_and_5xx_answers_honour_retry_after(self):
        self.add_service("web", ["10.0.0.1"])
        # The first request of each of the three reflectors: 429 with Retry-After: 2; their
        # second: 503 with Retry-After: 2. Without it, they come back after 0.5 s, then 1 s.
        self.kube.refuse_next(3, 429, retry_after=2)
        self.kube.refuse_next(3, 503, retry_after=2)
        t0 = time.monotonic()
        a = self.kube_agent().start()
        wait_for(lambda: endpoints(a, "web") == [ready("10.0.0.1")], timeout=30,
                 what="listing after the refusals")
        for plural in ("endpointslices", "services?", "pods?"):
            times = [r[0] for r in self.kube.requests_since(t0, plural)]
            self.assertGreaterEqual(len(times), 3, plural)
            gaps = [b - a for a, b in zip(times, times[1:3])]
            self.assertTrue(all(g >= 1.9 for g in gaps), f"{plural}: retried after {gaps} s")
        self.assertIn("the API server answered 429", a.logs())

    # -- credentials --

    def test_rotated_token_file_is_picked_up(self):
        self.add_service("web", ["10.0.0.1"])
        a = self.kube_agent().start()
        wait_for(lambda: endpoints(a, "web") == [ready("10.0.0.1")], what="web")
        # Every reflector's watch is open at the fake first: a request still on its way with
        # the old token when the fake stops taking it would be refused (a race of the test,
        # not of the agent, seen 1 in 3 under ASan).
        kinds = {r[1].split("?")[0] for r in self.kube.requests}
        wait_for(lambda: self.kube.open_watches == len(kinds), what="every watch open")
        # The kubelet rotates the token; the old one stops working at once.
        self.write_token("token-2")
        self.kube.tokens = {"token-2"}
        self.kube.cut_streams()  # new connections must carry the new token
        self.add_service("web", ["10.0.0.9"])
        wait_for(lambda: endpoints(a, "web") == [ready("10.0.0.9")], timeout=10,
                 what="the rotated token in use")

        def last_of_each_kind_authorized():
            last = {}
            for r in self.kube.requests:
                last[r[1].split("?")[0]] = r
            return len(last) == len(kinds) and all(r[3] for r in last.values())
        wait_for(last_of_each_kind_authorized, timeout=10,
                 what="every reflector's last request authorized with the new token")

    def test_wrong_token_gives_a_clear_error_and_backs_off(self):
        self.add_service("web", ["10.0.0.1"])
        self.write_token("wrong-token")
        a = self.kube_agent().start()
        wait_for(lambda: "401 Unauthorized" in a.logs(), what="the 401 reported")
        self.assertIn("the API server refused the token (in-cluster service account)", a.logs())
        t0 = time.monotonic()
        time.sleep(4)
        n = len(self.kube.requests_since(t0))
        # Three reflectors, each backing off from 0.5 s doubling: no tight loop.
        self.assertLessEqual(n, 3 * 5, f"{n} requests in 4 s")
        self.assertGreaterEqual(a.metric("mesh_k8s_errors_total", registry="k8s",
                                         kind="unauthorized"), 3)
        # Fixed: the next attempt reads the new token and lists.
        self.write_token("token-1")
        wait_for(lambda: endpoints(a, "web") == [ready("10.0.0.1")], timeout=20,
                 what="listing once the token is right")

    def test_forbidden_by_rbac_is_reported_with_the_servers_reason(self):
        self.kube.forbidden["token-1"] = {"pods"}
        self.add_service("web", ["10.0.0.1"])
        a = self.kube_agent().start(wait_ready=False)
        wait_for(lambda: "403 Forbidden" in a.logs(), what="the 403")
        self.assertIn('cannot list resource "pods"', a.logs())
        a.wait_ready()  # ready after the sync timeout, on what it has

    def test_kubeconfig_with_embedded_ca_and_token(self):
        import base64
        with open(self.pki.cert, "rb") as f:
            ca = base64.b64encode(f.read()).decode()
        kc = os.path.join(self.tmp, "kubeconfig")
        with open(kc, "w") as f:
            f.write(f"""apiVersion: v1
kind: Config
current-context: dev
clusters:
- name: fake
  cluster:
    server: {self.kube.url}/
    certificate-authority-data: {ca}
contexts:
- name: dev
  context: {{cluster: fake, user: agent}}
- name: other
  context: {{cluster: nowhere, user: agent}}
users:
- name: agent
  user:
    token: token-1
""")
        self.add_service("web", ["10.0.0.1"])
        a = self.kube_agent(kubeconfig=kc)
        a.env.pop("KUBERNETES_SERVICE_HOST")
        a.start()
        wait_for(lambda: endpoints(a, "web") == [ready("10.0.0.1")], what="web via kubeconfig")
        st = a.json("/v1/status")["registries"][0]
        self.assertEqual(st["credentials"], f"kubeconfig {kc}, context dev")
        # A context naming a cluster that is not in the file is a clear validation error.
        a.config["registries"][0]["context"] = "other"
        a.write_config()
        r = subprocess.run([AGENT, "validate", "--config", a.config_path], capture_output=True,
                           text=True, env={k: v for k, v in a.env.items()
                                           if k != "KUBERNETES_SERVICE_HOST"})
        self.assertEqual(r.returncode, 1)
        self.assertIn("the context's cluster has no https:// server ('nowhere')", r.stderr)

    def test_metrics_pass_promtool(self):
        self.add_service("web", ["10.0.0.1"])
        a = self.kube_agent().start()
        wait_for(lambda: endpoints(a, "web"), what="web")
        body = a.get("/metrics")[2]
        for needle in [b'mesh_k8s_objects{registry="k8s",resource="endpointslices"} 1',
                       b'mesh_k8s_errors_total{registry="k8s",kind="unauthorized"} 0',
                       b'mesh_k8s_apply_seconds_count{registry="k8s"}',
                       b'mesh_registry_synced{registry="k8s",type="kubernetes"} 1']:
            self.assertIn(needle, body)
        check_promtool(self, body)

    # -- merging --

    def test_kubernetes_and_consul_merge_by_the_catalog_rules(self):
        consul = FakeConsul().start()
        self.consuls.append(consul)
        consul.add_instance("web", "10.0.0.1", 8080, node="vm1", weights={"Passing": 9,
                                                                          "Warning": 1})
        consul.add_instance("web", "10.5.0.1", 8080, node="vm2")
        consul.add_instance("web", "10.0.0.2", 9090, node="vm3")  # a port Kubernetes denies
        self.add_service("web", ["10.0.0.1", "10.0.0.2"])
        a = self.kube_agent()
        a.config["registries"].append({"type": "consul", "name": "consul",
                                       "address": consul.address, "namespace": "shop",
                                       "register": False})
        a.start()
        wait_for(lambda: len(endpoints(a, "web")) == 3 and
                 len(a.services()["shop/web"]["registries"]) == 2, what="the union")
        s = a.services()["shop/web"]
        self.assertEqual(s["registries"], ["k8s", "consul"])
        e = {x["address"]: x for x in s["endpoints"]}
        # 10.0.0.1:8080 from both: one endpoint, Kubernetes' details (higher precedence).
        self.assertEqual(e["10.0.0.1"]["weight"], 1)
        self.assertEqual(e["10.0.0.1"]["labels"]["mesh/registry"], "k8s")
        self.assertEqual(e["10.5.0.1"]["labels"]["mesh/registry"], "consul")
        # Reported by both: tagged with both.
        self.assertEqual(e["10.0.0.1"]["registries"], ["k8s", "consul"])
        self.assertNotIn("registries", e["10.5.0.1"])
        # 10.0.0.2 at 8080 in Kubernetes and 9090 in Consul: a conflict, Kubernetes' stands.
        self.assertEqual((e["10.0.0.2"]["port"], e["10.0.0.2"]["labels"]["mesh/registry"]),
                         (8080, "k8s"))
        wait_for(lambda: "registries 'k8s' and 'consul' disagree on the port of endpoint "
                 "10.0.0.2: 8080 in 'k8s', 9090 in 'consul'; using 'k8s'" in a.logs(),
                 what="the conflict's warning")
        self.assertEqual(a.metric("mesh_catalog_conflicts_total", kind="port"), 1)
        self.assertEqual(a.metric("mesh_catalog_conflicts", kind="port"), 1)


if __name__ == "__main__":
    main()
