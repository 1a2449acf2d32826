"""packaging/kubernetes checked offline: the manifests' fields have the API's types (a
schema from the API reference; kubectl's client-side dry run needs an API server for its
discovery, so it cannot run here), they hold together (selectors, probes, RBAC
scope, the ConfigMap's agent.json validated by the real mesh-agent), and the image recipe
runs the packaged binary as a non-root user."""
import json
import os
import shutil
import subprocess
import tempfile
import unittest

import yaml

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
DIR = os.path.join(ROOT, "packaging", "kubernetes")
MANIFEST = os.path.join(DIR, "mesh-agent.yaml")
AGENT = os.environ.get("MESH_AGENT_BIN", os.path.join(ROOT, "build", "agent", "mesh-agent"))


# Types of the fields the manifests use, from the Kubernetes API reference: a dict is an
# object (its keys the allowed fields), [t] a list of t, str/int/bool scalars, "int|str" an
# IntOrString, "map" a string map.
META = {"name": str, "namespace": str, "labels": "map", "annotations": "map"}
HEAD = {"apiVersion": str, "kind": str, "metadata": META}
PROBE = {"httpGet": {"host": str, "path": str, "port": "int|str", "scheme": str},
         "initialDelaySeconds": int, "periodSeconds": int, "timeoutSeconds": int,
         "failureThreshold": int, "successThreshold": int}
SECURITY = {"allowPrivilegeEscalation": bool, "readOnlyRootFilesystem": bool,
            "runAsNonRoot": bool, "runAsUser": int, "runAsGroup": int, "privileged": bool,
            "capabilities": {"add": [str], "drop": [str]}}
CONTAINER = {"name": str, "image": str, "command": [str], "args": [str],
             "env": [{"name": str, "value": str,
                      "valueFrom": {"fieldRef": {"fieldPath": str, "apiVersion": str}}}],
             "ports": [{"name": str, "containerPort": int, "protocol": str, "hostPort": int}],
             "resources": {"requests": "map", "limits": "map"},
             "readinessProbe": PROBE, "livenessProbe": PROBE, "startupProbe": PROBE,
             "securityContext": SECURITY,
             "volumeMounts": [{"name": str, "mountPath": str, "readOnly": bool}]}
POD = {"serviceAccountName": str, "hostNetwork": bool, "dnsPolicy": str,
       "priorityClassName": str, "terminationGracePeriodSeconds": int,
       "tolerations": [{"operator": str, "key": str, "effect": str, "value": str}],
       "securityContext": {"runAsNonRoot": bool, "runAsUser": int, "runAsGroup": int,
                           "fsGroup": int, "seccompProfile": {"type": str}},
       "initContainers": [CONTAINER], "containers": [CONTAINER],
       "volumes": [{"name": str, "configMap": {"name": str},
                    "hostPath": {"path": str, "type": str}}]}
SCHEMA = {
    "Namespace": HEAD,
    "ServiceAccount": HEAD,
    "ClusterRole": dict(HEAD, rules=[{"apiGroups": [str], "resources": [str],
                                      "verbs": [str]}]),
    "ClusterRoleBinding": dict(HEAD, roleRef={"apiGroup": str, "kind": str, "name": str},
                               subjects=[{"kind": str, "name": str, "namespace": str}]),
    "ConfigMap": dict(HEAD, data="map"),
    "DaemonSet": dict(HEAD, spec={
        "selector": {"matchLabels": "map"},
        "updateStrategy": {"type": str, "rollingUpdate": {"maxUnavailable": "int|str"}},
        "template": {"metadata": META, "spec": POD}}),
}


def check(value, schema, where, errors):
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            errors.append(f"{where}: expected an object")
            return
        for k, v in value.items():
            if k not in schema:
                errors.append(f"{where}.{k}: unknown field")
            else:
                check(v, schema[k], f"{where}.{k}", errors)
    elif isinstance(schema, list):
        if not isinstance(value, list):
            errors.append(f"{where}: expected a list")
            return
        for i, v in enumerate(value):
            check(v, schema[0], f"{where}[{i}]", errors)
    elif schema == "map":
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            errors.append(f"{where}: expected a map of strings")
    elif schema == "int|str":
        if not isinstance(value, (int, str)) or isinstance(value, bool):
            errors.append(f"{where}: expected an integer or a string")
    elif schema is int:
        if not isinstance(value, int) or isinstance(value, bool):
            errors.append(f"{where}: expected an integer")
    elif not isinstance(value, schema):
        errors.append(f"{where}: expected {schema.__name__}")


def docs():
    with open(MANIFEST) as f:
        return {d["kind"]: d for d in yaml.safe_load_all(f) if d}


class ManifestTest(unittest.TestCase):
    def setUp(self):
        self.d = docs()

    def test_every_object_is_there_with_its_api_version(self):
        want = {"Namespace": "v1", "ServiceAccount": "v1",
                "ClusterRole": "rbac.authorization.k8s.io/v1",
                "ClusterRoleBinding": "rbac.authorization.k8s.io/v1", "ConfigMap": "v1",
                "DaemonSet": "apps/v1"}
        self.assertEqual({k: v["apiVersion"] for k, v in self.d.items()}, want)

    def test_rbac_grants_only_reads_of_what_the_agent_watches(self):
        rules = self.d["ClusterRole"]["rules"]
        granted = {(g, r, v) for rule in rules for g in rule["apiGroups"]
                   for r in rule["resources"] for v in rule["verbs"]}
        want = {(g, r, v) for g, r in (("discovery.k8s.io", "endpointslices"), ("", "services"),
                                        ("", "pods"))
                for v in ("get", "list", "watch")}
        self.assertEqual(granted, want)
        b = self.d["ClusterRoleBinding"]
        self.assertEqual(b["roleRef"]["name"], self.d["ClusterRole"]["metadata"]["name"])
        sa = self.d["ServiceAccount"]["metadata"]
        self.assertEqual(b["subjects"], [{"kind": "ServiceAccount", "name": sa["name"],
                                          "namespace": sa["namespace"]}])

    def test_daemonset_shape(self):
        ds = self.d["DaemonSet"]
        spec, pod = ds["spec"], ds["spec"]["template"]["spec"]
        labels = ds["spec"]["template"]["metadata"]["labels"]
        for k, v in spec["selector"]["matchLabels"].items():
            self.assertEqual(labels.get(k), v, "the selector matches the template")
        self.assertEqual(spec["updateStrategy"]["type"], "RollingUpdate")
        self.assertTrue(pod["hostNetwork"])
        self.assertEqual(pod["dnsPolicy"], "ClusterFirstWithHostNet")
        self.assertEqual(pod["serviceAccountName"], self.d["ServiceAccount"]["metadata"]["name"])
        c = pod["containers"][0]
        env = {e["name"]: e for e in c["env"]}
        self.assertEqual(env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName")
        self.assertIn("memory", c["resources"]["requests"])
        self.assertIn("memory", c["resources"]["limits"])
        self.assertTrue(pod["securityContext"]["runAsNonRoot"])
        self.assertFalse(c["securityContext"]["allowPrivilegeEscalation"])
        # Capture (Kubernetes node mode) needs NET_ADMIN for nftables, and nothing else: no
        # DNS responder on port 53, so no NET_BIND_SERVICE.
        caps = c["securityContext"]["capabilities"]
        self.assertEqual((caps["drop"], caps["add"]), (["ALL"], ["NET_ADMIN"]))
        agent_cfg = json.loads(self.d["ConfigMap"]["data"]["agent.json"])
        self.assertTrue(agent_cfg["capture"]["enabled"])
        self.assertTrue(agent_cfg["capture"]["pods"])
        self.assertFalse(agent_cfg.get("dns_responder", {}).get("enabled", False))
        # The probes ask the admin API where agent.json puts it.
        cfg = json.loads(self.d["ConfigMap"]["data"]["agent.json"])
        host, port = cfg["admin"]["listen"].rsplit(":", 1)
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
            g = c[probe]["httpGet"]
            self.assertEqual((g["host"], str(g["port"]), g["path"]), (host, port, path))
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        self.assertEqual(mounts["state"], cfg["state_dir"])
        vols = {v["name"]: v for v in pod["volumes"]}
        self.assertEqual(vols["state"]["hostPath"]["path"], cfg["state_dir"])
        self.assertEqual(vols["config"]["configMap"]["name"],
                         self.d["ConfigMap"]["metadata"]["name"])

    def test_the_configmaps_agent_json_is_valid_for_the_agent(self):
        if not os.path.exists(AGENT):
            self.skipTest(f"no agent binary at {AGENT}")
        cfg = json.loads(self.d["ConfigMap"]["data"]["agent.json"])
        tmp = tempfile.mkdtemp()
        try:
            # As in the pod: the service account files mounted, NODE_NAME set.
            sa = os.path.join(tmp, "sa")
            os.makedirs(sa)
            for name in ("token", "ca.crt"):
                with open(os.path.join(sa, name), "w") as f:
                    f.write("x")
            cfg["registries"][0]["service_account_dir"] = sa
            cfg["state_dir"] = os.path.join(tmp, "state")
            path = os.path.join(tmp, "agent.json")
            with open(path, "w") as f:
                json.dump(cfg, f)
            env = dict(os.environ, KUBERNETES_SERVICE_HOST="10.96.0.1",
                       KUBERNETES_SERVICE_PORT="443", NODE_NAME="node-1")
            r = subprocess.run([AGENT, "validate", "--config", path], capture_output=True,
                               text=True, env=env)
            self.assertEqual(r.returncode, 0, r.stderr)
        finally:
            shutil.rmtree(tmp)

    def test_fields_have_the_apis_types_and_no_unknown_keys(self):
        """A schema check from the API reference (the fields these manifests use), strict
        about unknown keys as the API server's strict field validation is."""
        for kind, obj in self.d.items():
            errors = []
            check(obj, SCHEMA[kind], kind, errors)
            self.assertEqual(errors, [], kind)

    def test_image_recipe(self):
        with open(os.path.join(DIR, "Containerfile")) as f:
            text = f.read()
        self.assertIn("FROM debian:bookworm-slim", text)
        self.assertIn("build-deb/mesh-agent_", text, "the same package as on VMs")
        self.assertIn("USER 1337:1337", text)
        ds = self.d["DaemonSet"]["spec"]["template"]["spec"]
        self.assertEqual(ds["securityContext"]["runAsUser"], 1337)


if __name__ == "__main__":
    unittest.main(verbosity=2)
