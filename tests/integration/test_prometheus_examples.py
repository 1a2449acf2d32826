#!/usr/bin/env python3
"""The Prometheus scrape configurations in examples/prometheus/: each passes `promtool check
config`, and its relabeling turns the targets a discovery would give into the ones meant
(`promtool check service-discovery`, which runs discovery and relabeling).

Debian's promtool is built without the Consul and Kubernetes discoveries. So the discovery
block of those examples is swapped for a file_sd_configs one listing the targets with the
meta labels Prometheus' Consul and Kubernetes discoveries set (their documentation's names:
__meta_consul_*, __meta_kubernetes_pod_*, __meta_kubernetes_endpoint_*), and the example's
own relabel_configs run over them. The unchanged file is checked too where promtool knows
the discovery, and skipped, saying so, where it does not."""
import json
import os
import shutil
import subprocess
import tempfile
import unittest

from meshtest import main

HERE = os.path.dirname(os.path.abspath(__file__))
EXAMPLES = os.path.join(HERE, "..", "..", "examples", "prometheus")
PROMTOOL = shutil.which("promtool")


def example(name):
    with open(os.path.join(EXAMPLES, name)) as f:
        return f.read()


def swap_discovery(text, sd_key, files_by_job):
    """The config with each job's `sd_key` block replaced by a file_sd_configs block reading
    files_by_job[job] (no file for the other jobs: no targets). The examples put the block at
    4 spaces, its body deeper."""
    out, job, skipping = [], None, False
    for line in text.splitlines():
        stripped = line.strip()
        if line.startswith("  - job_name:"):
            job = stripped.split(":", 1)[1].strip()
        if skipping:
            if line.startswith("      ") or not stripped:
                continue
            skipping = False
        if line == f"    {sd_key}:":
            out.append("    file_sd_configs:")
            path = files_by_job.get(job, "/nonexistent/no-targets.json")
            out.append(f"      - files: [{json.dumps(path)}]")
            skipping = True
            continue
        out.append(line)
    return "\n".join(out) + "\n"


@unittest.skipUnless(PROMTOOL, "promtool is not installed (scripts/install-deps installs it)")
class PrometheusExamplesTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="mesh-prom-examples-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def check_config(self, path):
        r = subprocess.run([PROMTOOL, "check", "config", path], capture_output=True, text=True,
                           timeout=60)
        return r.returncode, r.stdout + r.stderr

    def check_as_is(self, name, sd_key):
        code, out = self.check_config(os.path.join(EXAMPLES, name))
        if code and f"field {sd_key} not found" in out:
            self.skipTest(f"this promtool is built without {sd_key} (Debian's is): {name} is "
                          "checked with its discovery swapped for file_sd_configs instead")
        self.assertEqual(code, 0, out)
        self.assertIn("SUCCESS", out)

    def targets(self, config_text, job, groups=None):
        """Writes config (and groups, the file_sd targets of `job`), returns the relabeled
        targets' labels as promtool check service-discovery prints them."""
        files = {}
        if groups is not None:
            files[job] = os.path.join(self.tmp, f"{job}.json")
            with open(files[job], "w") as f:
                json.dump(groups, f)
        path = os.path.join(self.tmp, "prometheus.yml")
        with open(path, "w") as f:
            f.write(config_text(files) if callable(config_text) else config_text)
        code, out = self.check_config(path)
        self.assertEqual(code, 0, out)
        # promtool waits out --timeout whatever happens; file discovery answers at once.
        r = subprocess.run([PROMTOOL, "check", "service-discovery", "--timeout=3s", path, job],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        found = json.loads(r.stdout)
        return [t["labels"] for t in found if t.get("labels")]

    # static.yml

    def test_static(self):
        self.check_as_is("static.yml", "static_configs")
        agents = self.targets(example("static.yml"), "mesh-agent")
        self.assertEqual(sorted((t["__address__"], t["instance"], t["zone"]) for t in agents),
                         [("10.0.0.11:15000", "10.0.0.11", "zone-a"),
                          ("10.0.0.12:15000", "10.0.0.12", "zone-a"),
                          ("10.0.1.21:15000", "10.0.1.21", "zone-b")])
        for t in agents:
            self.assertEqual((t["__scheme__"], t["__metrics_path__"]), ("http", "/metrics"))
        ctl = self.targets(example("static.yml"), "mesh-controller")
        self.assertEqual([(t["__address__"], t["__scheme__"], t["__metrics_path__"])
                          for t in ctl], [("10.0.0.2:15443", "https", "/metrics")])

    # consul.yml

    def consul_group(self, service, node, address, port, health="passing"):
        return {"targets": [f"{address}:{port}"],
                "labels": {"__meta_consul_service": service, "__meta_consul_node": node,
                           "__meta_consul_address": address, "__meta_consul_dc": "dc1",
                           "__meta_consul_health": health, "__meta_consul_tags": ",mesh,",
                           "__meta_consul_service_address": address,
                           "__meta_consul_service_port": str(port),
                           "__meta_consul_service_id": service}}

    def test_consul(self):
        self.check_as_is("consul.yml", "consul_sd_configs")

    def test_consul_relabeling(self):
        text = lambda files: swap_discovery(example("consul.yml"),  # noqa: E731
                                            "consul_sd_configs", files)
        agents = self.targets(text, "mesh-agent", [
            self.consul_group("mesh-agent", "web-1", "10.0.0.11", 15000),
            self.consul_group("mesh-agent", "web-2", "10.0.0.12", 15000, health="critical"),
        ])
        self.assertEqual([(t["__address__"], t["instance"], t["datacenter"]) for t in agents],
                         [("10.0.0.11:15000", "web-1", "dc1")])  # the critical one is left out
        ctl = self.targets(text, "mesh-controller", [
            self.consul_group("mesh-controller", "ctl-1", "10.0.0.2", 15443)])
        self.assertEqual([(t["__address__"], t["__scheme__"], t["instance"]) for t in ctl],
                         [("10.0.0.2:15443", "https", "ctl-1")])

    # kubernetes.yml

    def pod_group(self, pod, node, ip, container, port_name, port, phase="Running",
                  app="mesh-agent"):
        """One target of Kubernetes' pod role: a container port of a pod."""
        return {"targets": [f"{ip}:{port}"],
                "labels": {"__meta_kubernetes_namespace": "mesh-system",
                           "__meta_kubernetes_pod_name": pod,
                           "__meta_kubernetes_pod_ip": ip,
                           "__meta_kubernetes_pod_host_ip": ip,
                           "__meta_kubernetes_pod_node_name": node,
                           "__meta_kubernetes_pod_phase": phase,
                           "__meta_kubernetes_pod_ready": "true",
                           "__meta_kubernetes_pod_label_app_kubernetes_io_name": app,
                           "__meta_kubernetes_pod_labelpresent_app_kubernetes_io_name": "true",
                           "__meta_kubernetes_pod_controller_kind": "DaemonSet",
                           "__meta_kubernetes_pod_controller_name": app,
                           "__meta_kubernetes_pod_container_name": container,
                           "__meta_kubernetes_pod_container_port_name": port_name,
                           "__meta_kubernetes_pod_container_port_number": str(port),
                           "__meta_kubernetes_pod_container_port_protocol": "TCP"}}

    def test_kubernetes(self):
        self.check_as_is("kubernetes.yml", "kubernetes_sd_configs")

    def test_kubernetes_relabeling(self):
        text = lambda files: swap_discovery(example("kubernetes.yml"),  # noqa: E731
                                            "kubernetes_sd_configs", files)
        # The DaemonSet's pods declare two ports each (packaging/kubernetes/mesh-agent.yaml):
        # one target per pod comes out, at the admin port, named by its node.
        groups = []
        for pod, node, ip in (("mesh-agent-x1", "node-1", "10.0.0.11"),
                              ("mesh-agent-x2", "node-2", "10.0.0.12")):
            groups.append(self.pod_group(pod, node, ip, "mesh-agent", "outbound-http", 15001))
            groups.append(self.pod_group(pod, node, ip, "mesh-agent", "mtls", 15008))
        groups.append(self.pod_group("mesh-agent-x3", "node-3", "10.0.0.13", "mesh-agent", "mtls",
                                     15008, phase="Pending"))
        groups.append(self.pod_group("other", "node-1", "10.0.0.11", "other", "mtls", 15008,
                                     app="other"))
        agents = self.targets(text, "mesh-agent", groups)
        self.assertEqual(sorted((t["__address__"], t["instance"], t["node"], t["pod"],
                                 t["namespace"], t["__scheme__"], t["__metrics_path__"])
                                for t in agents),
                         [("10.0.0.11:15000", "node-1", "node-1", "mesh-agent-x1", "mesh-system",
                           "http", "/metrics"),
                          ("10.0.0.12:15000", "node-2", "node-2", "mesh-agent-x2", "mesh-system",
                           "http", "/metrics")])
        ep = lambda service, port_name, port: {  # noqa: E731
            "targets": [f"10.1.0.5:{port}"],
            "labels": {"__meta_kubernetes_namespace": "mesh-system",
                       "__meta_kubernetes_service_name": service,
                       "__meta_kubernetes_endpoint_port_name": port_name,
                       "__meta_kubernetes_endpoint_ready": "true",
                       "__meta_kubernetes_pod_name": "mesh-controller-0"}}
        ctl = self.targets(text, "mesh-controller", [ep("mesh-controller", "https", 15443),
                                                     ep("mesh-controller", "other", 9999),
                                                     ep("something-else", "https", 443)])
        self.assertEqual([(t["__address__"], t["__scheme__"], t["pod"]) for t in ctl],
                         [("10.1.0.5:15443", "https", "mesh-controller-0")])


if __name__ == "__main__":
    main()
