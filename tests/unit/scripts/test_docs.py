"""The documentation stays inside the repository and in the present tense, and states the
identity forms in one place (docs/identity.md) that the other pages link to."""
import glob
import os
import re
import unittest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
PAGES = sorted(glob.glob(os.path.join(ROOT, "*.md")) + glob.glob(os.path.join(ROOT, "docs", "*.md"))
               + glob.glob(os.path.join(ROOT, "*", "README.md"))
               + glob.glob(os.path.join(ROOT, "packaging", "*.[18]")))
LINK = re.compile(r"\]\(([^)\s]+)\)|^\s*\[[^\]]+\]:\s*(\S+)", re.M)
PATH = re.compile(r"(?<![\w/.])((?:\.\./)+[\w./-]+)")
# The generic forms of SPIFFE IDs ("<trust_domain>" and the like, not concrete examples).
ID_FORM = re.compile(r"spiffe://<[^>]+>/(ns|node)/")


def read(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def rel(path):
    return os.path.relpath(path, ROOT)


class DocsTest(unittest.TestCase):
    def test_pages_found(self):
        self.assertIn(os.path.join(ROOT, "README.md"), PAGES)
        self.assertGreater(len(PAGES), 10)

    def test_no_link_leaves_the_repository(self):
        problems = []
        for page in PAGES:
            text = read(page)
            for m in LINK.finditer(text):
                target = m.group(1) or m.group(2)
                if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
                    problems.append(f"{rel(page)}: links outside the repository: {target}")
                    continue
                if target.startswith("#"):
                    continue
                path = os.path.normpath(os.path.join(os.path.dirname(page), target.split("#")[0]))
                if not path.startswith(ROOT + os.sep):
                    problems.append(f"{rel(page)}: points outside the repository: {target}")
                elif not os.path.exists(path):
                    problems.append(f"{rel(page)}: links to a missing file: {target}")
            for m in PATH.finditer(text):
                path = os.path.normpath(os.path.join(os.path.dirname(page), m.group(1)))
                if not path.startswith(ROOT + os.sep):
                    problems.append(f"{rel(page)}: names a path outside the repository: "
                                    f"{m.group(1)}")
        self.assertEqual(problems, [])

    def test_present_tense(self):
        problems = []
        for page in PAGES:
            for n, line in enumerate(read(page).splitlines(), 1):
                if re.search(r"\b(will|shall)\b", line, re.I):
                    problems.append(f"{rel(page)}:{n}: {line.strip()}")
        self.assertEqual(problems, [], "the docs say what is, in the present tense")

    def test_identities_are_stated_in_one_place(self):
        identity = os.path.join(ROOT, "docs", "identity.md")
        text = read(identity)
        for form in ("/ns/<namespace>/svc/<name>", "/ns/<namespace>/sa/<service account>",
                     "/node/<node.name>"):
            self.assertIn(form, text)
        others = [f"{rel(p)}: {m.group(0)}" for p in PAGES if p != identity
                  for m in ID_FORM.finditer(read(p))]
        self.assertEqual(others, [], "identity forms belong in docs/identity.md; link to it")
        for page in ("kubernetes.md", "consul.md", "install.md", "config.md"):
            self.assertIn("identity.md#identities", read(os.path.join(ROOT, "docs", page)), page)


if __name__ == "__main__":
    unittest.main(verbosity=2)
