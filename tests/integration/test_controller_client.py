#!/usr/bin/env python3
"""The agent's calls to the mesh-controller run on its event loop (libcurl's multi interface),
not on libuv's thread pool: the blocking query for resources, held open for up to 30 s, holds
no pool thread, so what uses the pool (service files, the last-known-good catalog) goes on
while it is pending; stopping the agent ends it at once and cleanly."""
import os
import shutil
import tempfile
import time

from controllertest import TD, Controller
from meshtest import AgentTest, free_port, main, wait_for, within


def spiffe(ns, name):
    return f"spiffe://{TD}/ns/{ns}/sa/{name}"


class ControllerClientTest(AgentTest):
    def setUp(self):
        super().setUp()
        self.tmp = tempfile.mkdtemp(prefix="mesh-ctlclient-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.ctl = Controller({"trust_domain": TD}).start()
        self.addCleanup(shutil.rmtree, self.ctl.tmp, True)
        self.addCleanup(self.ctl.stop)

    def agent_for(self, env=None):
        r = self.ctl.meshctl("token", "create", "--services", spiffe("shop", "*"), "--node",
                             "host-*", "--uses", "1")
        self.assertEqual(r.returncode, 0, r.stderr)
        token = os.path.join(self.tmp, "join.token")
        with open(token, "w") as f:
            f.write(r.stdout.strip().splitlines()[-1] + "\n")
        return self.agent(name="host-a", env=env, config={
            "node": {"name": "host-a", "zone": "zone-a"}, "trust_domain": TD,
            "identity": {"mode": "controller", "controller": f"https://127.0.0.1:{self.ctl.port}",
                         "controller_ca": self.ctl.ca, "join_token_file": token}},
            services={"api.json": {"service": {"name": "api", "namespace": "shop",
                                               "protocol": "tcp", "port": free_port()}}})

    def watch(self, a):
        return a.json("/v1/identity")["controller"]

    def blocking_query_pending(self, a):
        """Waits until a blocking query (one after the first answer) is in flight; returns
        how many queries the agent has started."""
        def pending():
            w = self.watch(a)
            return w["watching"] and w["index"] >= 1 and w["queries"] >= 2 and w["queries"]
        return wait_for(pending, timeout=20, what="a blocking query to the controller in flight")

    def test_stop_while_the_watch_is_in_flight_is_prompt_and_clean(self):
        a = self.agent_for()
        a.start()
        self.blocking_query_pending(a)
        t0 = time.monotonic()
        code = a.stop()
        within(self, t0, 1.0, "stopping with a blocking query in flight")
        self.assertEqual(code, 0, a.logs())  # under ASan, a leak would make it non-zero

    def test_the_watch_holds_no_thread_pool_thread(self):
        # One pool thread: the watch would hold it for the whole 30 s wait if it ran there.
        a = self.agent_for(env={"UV_THREADPOOL_SIZE": "1"})
        a.start()
        queries = self.blocking_query_pending(a)
        # A new service file: its read (json_dir) and the write of the last-known-good catalog
        # that follows both run on the pool.
        a.write_service("web.json", {"service": {"name": "web", "namespace": "shop",
                                                 "protocol": "tcp", "port": free_port()}})
        lkg = os.path.join(a.state_dir, "catalog.json")

        def kept():
            with open(lkg) as f:
                return '"web"' in f.read()
        wait_for(kept, timeout=60, what="the new service in the last-known-good catalog")
        w = self.watch(a)
        # The same blocking query is still pending: the pool did this work beside it.
        self.assertTrue(w["watching"], w)
        self.assertEqual(w["queries"], queries, "the pool work waited for the blocking query")


if __name__ == "__main__":
    main()
