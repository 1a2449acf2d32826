"""The security group's harness check: the integration harness is importable from here and
an agent started through it answers on its admin port. Attack tests build on the same."""
from meshtest import AgentTest, main


class HarnessTest(AgentTest):
    def test_agent_starts_and_answers(self):
        a = self.agent()
        a.start()
        self.assertEqual(a.get("/healthz")[0], 200)


if __name__ == "__main__":
    main()
