#!/usr/bin/python3
"""The console in a real browser: headless Chromium driven by Selenium (Debian's chromium,
chromium-driver and python3-selenium, importable only under /usr/bin/python3, hence a
script of its own, started by test_console.py).

    console_browser.py URL TOKEN_FILE ARTIFACT_DIR CHROMIUM CHROMEDRIVER

Logs in with the admin token as a user would (typing it), waits for the graph, reads what
the DOM shows of every view, saves a screenshot of each into ARTIFACT_DIR and prints one
JSON document: {"graph": {"nodes": [...], "edges": [...]}, "agents": [...], "certs": [...],
"services": [...], "screenshots": [...], "console_errors": [...]}. Waits on conditions in
the page, not on time; exits 1 with what it saw when a wait runs out."""
import json
import os
import shutil
import sys
import tempfile

from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

WAIT = 60  # seconds, for a loaded machine; every wait ends as soon as its condition holds

EDGES_JS = """
return Array.from(document.querySelectorAll('#graph g.edge')).map(g => ({
  source: g.dataset.source, destination: g.dataset.destination,
  protocol: g.dataset.protocol, reporter: g.dataset.reporter,
  requests_per_s: parseFloat(g.dataset.requestsPerS),
  error_ratio: parseFloat(g.dataset.errorRatio),
  label: g.querySelector('text').textContent}));
"""
NODES_JS = """
return Array.from(document.querySelectorAll('#graph g.node')).map(g => ({
  id: g.dataset.id, health: g.dataset.health,
  label: Array.from(g.querySelectorAll('text')).map(t => t.textContent).join(' ')}));
"""
ROWS_JS = """
return Array.from(document.querySelectorAll(arguments[0] + ' tbody tr')).map(tr =>
  Array.from(tr.children).map(td => td.textContent));
"""


def main():
    url, token_file, out, chromium, chromedriver = sys.argv[1:6]
    os.makedirs(out, exist_ok=True)
    with open(token_file) as f:
        token = f.read().strip()
    profile = tempfile.mkdtemp(prefix="mesh-console-chromium-")
    opts = Options()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1400,900", f"--user-data-dir={profile}",
              # Nothing but the controller: no update checks, no sync, no metrics upload.
              "--no-first-run", "--disable-background-networking", "--disable-sync",
              "--disable-component-update", "--disable-default-apps"):
        opts.add_argument(a)
    opts.binary_location = chromium
    opts.accept_insecure_certs = True  # the controller's CA is the test's own
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(chromedriver), options=opts)
    result = {"screenshots": []}

    def shot(name):
        path = os.path.join(out, f"console-{name}.png")
        driver.save_screenshot(path)
        result["screenshots"].append(path)

    def wait(what, predicate):
        try:
            WebDriverWait(driver, WAIT, poll_frequency=0.2).until(lambda d: predicate())
        except TimeoutException:
            shot("timeout")
            result["timeout"] = what
            result["graph"] = {"nodes": driver.execute_script(NODES_JS),
                               "edges": driver.execute_script(EDGES_JS)}
            print(json.dumps(result))
            driver.quit()
            shutil.rmtree(profile, ignore_errors=True)
            sys.exit(1)

    try:
        driver.get(url)
        wait("the token form", lambda: driver.find_element(By.ID, "token").is_displayed())
        shot("login")
        driver.find_element(By.ID, "token").send_keys(token)
        driver.find_element(By.ID, "use-token").click()

        def graph_ready():
            edges = driver.execute_script(EDGES_JS)
            busy = {(e["source"], e["destination"]) for e in edges if e["requests_per_s"] > 0}
            failing = [e for e in edges if e["error_ratio"] > 0]
            return {("shop/web", "shop/api"), ("shop/api", "shop/db")} <= busy and failing

        wait("the graph with both edges busy and errors shown", graph_ready)
        result["graph"] = {"nodes": driver.execute_script(NODES_JS),
                           "edges": driver.execute_script(EDGES_JS)}
        shot("graph")
        for view, table in (("services", "#services-table"), ("agents", "#agents-table"),
                            ("certs", "#certs-table"), ("resources", "#resources-table")):
            driver.find_element(By.CSS_SELECTOR, f'#tabs button[data-view="{view}"]').click()
            if view != "resources":
                wait(f"rows in {table}",
                     lambda: len(driver.execute_script(ROWS_JS, table)) >= 3)
            result[view] = driver.execute_script(ROWS_JS, table)
            if view == "certs":
                result["cert_not_after"] = driver.execute_script(
                    "return Array.from(document.querySelectorAll('[data-not-after]'))"
                    ".map(td => parseInt(td.dataset.notAfter));")
            shot(view)
        result["console_errors"] = [e["message"] for e in driver.get_log("browser")
                                    if e["level"] in ("SEVERE", "WARNING")]
        result["requests"] = driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name);")
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
