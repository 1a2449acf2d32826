#!/usr/bin/env python3
"""Start-up failures tell the service manager why: STATUS= and ERRNO= (as `systemctl
status` shows them), and a log entry with the start-failed MESSAGE_ID."""
import errno
import json
import socket

from meshtest import AgentTest, free_port, main, wait_for

START_FAILED = "c829e23b1c3d493f83ab3d6efbc3354b"


class StartupTest(AgentTest):
    def failed_start(self, a):
        a.expected_exit = 1
        a.start(wait_ready=False)
        a.proc.wait(timeout=30)
        a.stop()
        return [m for m in a.notify.messages if "ERRNO" in m]

    def test_admin_port_taken(self):
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", free_port()))
        blocker.listen()
        port = blocker.getsockname()[1]
        try:
            a = self.agent(args=["--log-format", "json"])
            a.config["admin"]["listen"] = f"127.0.0.1:{port}"
            failed = self.failed_start(a)
        finally:
            blocker.close()
        self.assertEqual(len(failed), 1, a.notify.messages)
        self.assertEqual(failed[0]["ERRNO"], str(errno.EADDRINUSE))
        self.assertIn(f"cannot start: cannot listen on 127.0.0.1:{port} for the admin API",
                      failed[0]["STATUS"])
        self.assertIn("in use", failed[0]["STATUS"])
        entries = [json.loads(l) for l in a.logs().splitlines() if l.startswith("{")]
        ids = [e for e in entries if e.get("message_id") == START_FAILED]
        self.assertEqual(len(ids), 1, a.logs())
        self.assertIn("not starting", ids[0]["msg"])
        self.assertNotIn("READY", [k for m in a.notify.messages for k in m])

    def test_invalid_config(self):
        a = self.agent()
        a.config["admin"] = {"listen": "127.0.0.1:99999"}
        failed = self.failed_start(a)
        self.assertEqual(len(failed), 1, a.notify.messages)
        self.assertEqual(failed[0]["ERRNO"], str(errno.EINVAL))
        self.assertIn(f"cannot start: {a.config_path}: 1 error(s), the first: ",
                      failed[0]["STATUS"])
        self.assertIn("$.admin.listen", failed[0]["STATUS"])

    def test_missing_controller_ca(self):
        a = self.agent(config={"identity": {
            "mode": "controller", "controller": "https://127.0.0.1:9",
            "controller_ca": "/nonexistent/ca.crt", "join_token_file": "/nonexistent/token"}})
        failed = self.failed_start(a)
        self.assertEqual(failed[0]["ERRNO"], str(errno.ENOENT))
        self.assertIn('cannot set up identity (identity.mode "controller")', failed[0]["STATUS"])


if __name__ == "__main__":
    main()
