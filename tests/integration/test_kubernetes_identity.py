#!/usr/bin/env python3
"""Identities from the Kubernetes registry (tests/fakes/fake_kube.py): a Service declares the
service account of its endpoints (annotation mesh-agent.io/service-account, default its
name), which callers then want; the agent watches the Pods of its own node only, never
issues an identity a pod does not have (a pod of another account is reported and counted, a
pod it does not know yet gets none), and knows this node's pods by IP. The fake refuses the
field selectors the real API server refuses."""
import json
import os
import ssl
import sys
import urllib.error
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "fakes"))

import test_kubernetes as tk  # noqa: E402
from fake_kube import pod_obj, service_obj, slice_obj  # noqa: E402
from meshtest import main, wait_for  # noqa: E402

TD = tk.TD

ANNOTATION = "mesh-agent.io/service-account"


def sa(ns, name):
    return f"spiffe://{TD}/ns/{ns}/sa/{name}"


class KubeIdentityTest(tk.KubeTest):
    def service(self, name, node, pods, annotation=None, ns="shop"):
        """A Service with one endpoint per (pod name, ip) on `node`."""
        self.kube.put("services", service_obj(
            ns, name, annotations={ANNOTATION: annotation} if annotation else None))
        self.kube.put("endpointslices", slice_obj(
            ns, f"{name}-abc", name, [(ip, node, "zone-1", None, pod) for pod, ip in pods]))

    def k8s_status(self, a):
        return next(r for r in a.json("/v1/status")["registries"] if r["name"] == "k8s")

    def standalone(self):
        return {"mode": "standalone", "ca_cert": self.pki.cert, "ca_key": self.pki.key}

    def test_service_annotation_declares_the_identity_callers_want(self):
        self.service("api", "node-b", [("api-pod-0", "10.0.1.1")], annotation="api-sa")
        self.service("db", "node-b", [("db-pod-0", "10.0.1.2")])
        self.service("bad", "node-b", [("bad-pod-0", "10.0.1.3")], annotation="Not_An_Account")
        a = self.kube_agent().start()
        wait_for(lambda: {"shop/api", "shop/db", "shop/bad"} <= set(a.services()),
                 what="the three services")
        self.assertEqual(a.json("/v1/services/shop/api")["identity"], sa("shop", "api-sa"))
        # Without the annotation, and with one that is no service account: the default
        # (the Service's name), which no JSON field repeats.
        self.assertNotIn("identity", a.json("/v1/services/shop/db"))
        self.assertNotIn("identity", a.json("/v1/services/shop/bad"))
        wait_for(lambda: "'Not_An_Account'" in a.logs(), what="the bad annotation reported")
        line = next(x for x in a.logs().splitlines() if "'Not_An_Account'" in x)
        self.assertIn(" warning ", line)
        self.assertIn("'shop/bad'", line)
        self.assertEqual(a.metric("mesh_k8s_bad_service_accounts_total", registry="k8s"), 1)
        # The annotation changes: callers want the new account.
        self.kube.put("services", service_obj("shop", "api", annotations={ANNOTATION: "api-v2"}))
        wait_for(lambda: a.json("/v1/services/shop/api").get("identity") == sa("shop", "api-v2"),
                 what="the new service account")

    def test_a_local_pod_of_another_account_is_reported_and_never_given_the_declared_id(self):
        # web declares 'web-sa' but its pod here runs as 'intruder'; api's pod is not known
        # yet (the Pod watch lags the slices).
        self.kube.put("pods", pod_obj("shop", "web-pod-0", "node-a", sa="intruder",
                                      ip="10.0.0.1"))
        self.service("web", "node-a", [("web-pod-0", "10.0.0.1")], annotation="web-sa")
        self.service("api", "node-a", [("api-pod-0", "10.0.0.2")])
        a = self.kube_agent(identity=self.standalone()).start()
        wait_for(lambda: [s["name"] for s in a.json("/v1/local")["services"]] == ["web"],
                 what="web as the only local service")
        self.assertEqual(a.json("/v1/local")["services"][0]["identity"], sa("shop", "intruder"))
        wait_for(lambda: "'shop/web'" in a.logs() and "'intruder'" in a.logs(),
                 what="the mismatch reported")
        line = next(x for x in a.logs().splitlines() if "'intruder'" in x)
        self.assertIn(" warning ", line)
        self.assertIn("'web-sa'", line)
        self.assertIn("'shop/web-pod-0'", line)
        self.assertEqual(a.metric("mesh_k8s_identity_mismatches_total", registry="k8s"), 1)
        self.assertIn("Pod 'shop/api-pod-0', gets no identity: its Pod is not known yet",
                      a.logs())
        # Its pod arrives: api is a local service with the pod's account, no mismatch.
        self.kube.put("pods", pod_obj("shop", "api-pod-0", "node-a", sa="api", ip="10.0.0.2"))
        wait_for(lambda: sorted(s["name"] for s in a.json("/v1/local")["services"]) ==
                 ["api", "web"], what="api as a local service")
        wait_for(lambda: sa("shop", "api") in
                 [c["id"] for c in a.json("/v1/identity")["certificates"]],
                 what="a certificate for api's pod")
        ids = [c["id"] for c in a.json("/v1/identity")["certificates"]]
        self.assertIn(sa("shop", "intruder"), ids)
        self.assertNotIn(sa("shop", "web-sa"), ids)
        self.assertNotIn(sa("shop", "default"), ids)
        self.assertEqual(a.metric("mesh_k8s_identity_mismatches_total", registry="k8s"), 1)

    def test_this_nodes_pods_are_known_by_ip(self):
        self.kube.put("pods", pod_obj("shop", "web-pod-0", "node-a", sa="web", ip="10.0.0.1"))
        self.kube.put("pods", pod_obj("shop", "elsewhere", "node-b", sa="db", ip="10.0.0.9"))
        self.kube.put("pods", pod_obj("shop", "job-done", "node-a", sa="job", ip="10.0.0.5",
                                      phase="Succeeded"))
        a = self.kube_agent().start()
        wait_for(lambda: self.k8s_status(a)["pods_by_ip"] == {
            "10.0.0.1": {"namespace": "shop", "name": "web-pod-0", "service_account": "web",
                         "identity": sa("shop", "web")}},
            what="this node's running pod by its IP")
        # A pod whose account the mesh cannot name is known, without an identity.
        self.kube.put("pods", pod_obj("shop", "odd", "node-a", sa="odd.account", ip="10.0.0.6"))
        wait_for(lambda: self.k8s_status(a)["pods_by_ip"].get("10.0.0.6") ==
                 {"namespace": "shop", "name": "odd", "service_account": None,
                  "identity": None},
                 what="the pod without an identity")
        self.kube.delete("pods", "shop", "web-pod-0")
        wait_for(lambda: "10.0.0.1" not in self.k8s_status(a)["pods_by_ip"],
                 what="the deleted pod forgotten")
        pods = [r for r in self.kube.requests if "/pods" in r[1]]
        self.assertTrue(pods)
        self.assertTrue(all(r[2].get("fieldSelector") == "spec.nodeName=node-a" for r in pods))

    def get(self, path):
        ctx = ssl.create_default_context(cafile=self.pki.cert)
        req = urllib.request.Request(f"https://127.0.0.1:{self.kube.port}{path}",
                                     headers={"Authorization": "Bearer token-1"})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    def test_fake_api_server_refuses_what_the_real_one_refuses(self):
        self.kube.put("pods", pod_obj("shop", "a", "node-a", ip="10.0.0.1"))
        self.kube.put("pods", pod_obj("shop", "b", "node-b", ip="10.0.0.2"))
        self.kube.put("services", service_obj("shop", "web"))
        status, body = self.get("/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a")
        self.assertEqual(status, 200)
        self.assertEqual([p["metadata"]["name"] for p in body["items"]], ["a"])
        status, body = self.get("/api/v1/pods?fieldSelector=spec.nodeName!%3Dnode-a,"
                                "status.phase%3DRunning")
        self.assertEqual([p["metadata"]["name"] for p in body["items"]], ["b"])
        for path, message in (
                ("/api/v1/services?fieldSelector=spec.nodeName%3Dnode-a",
                 "field label not supported: spec.nodeName"),
                ("/api/v1/pods?fieldSelector=spec.containers%3Dx",
                 "field label not supported: spec.containers"),
                ("/api/v1/pods?watch=1&fieldSelector=metadata.labels%3Dx",
                 "field label not supported: metadata.labels"),
                ("/api/v1/pods?fieldSelector=spec.nodeName",
                 "invalid selector: 'spec.nodeName'; can't understand 'spec.nodeName'")):
            status, body = self.get(path)
            self.assertEqual((status, body["reason"], body["message"]),
                             (400, "BadRequest", message), path)


def load_tests(loader, tests, pattern):
    """Only this file's tests: the class borrows test_kubernetes.py's setup, not its tests."""
    import unittest
    names = sorted(n for n in KubeIdentityTest.__dict__ if n.startswith("test_"))
    return unittest.TestSuite(KubeIdentityTest(n) for n in names)


if __name__ == "__main__":
    main()
