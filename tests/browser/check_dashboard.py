#!/usr/bin/env python3
"""Drives the master's web dashboard in headless Chromium (Debian's chromium and chromium-driver,
through Selenium) and checks it against the JSON API of the same master.

Run by tests/tests/e2e_dashboard.rs with the test venv's python (scripts/setup-test-tools.sh):

    check_dashboard.py --url http://127.0.0.1:PORT --experiment EXP \
        --screenshot target/test-artifacts/dashboard/dashboard.png [--token-file DATA_DIR/token]

It checks the experiment row and the workers, the best-score chart, the chains chart, the
genealogy, the trial table (row count, total, sorting, filtering) against the API, and clicks
through to a trial's learning curve. With --token-file and a running experiment it also tries
Stop with a wrong token (the 401 must show and nothing change), then "Stop now" with the right
one (the page must show the experiment stopped without a reload). Screenshots go beside
--screenshot. Exits 0 when every check passed, 1 (naming the check) otherwise.
"""

import argparse
import base64
import json
import os
import sys
import tempfile
import time
import urllib.parse
import urllib.request

# Never let Selenium Manager look for (or download) a browser or a driver.
os.environ["SE_OFFLINE"] = "true"

from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import TimeoutException  # noqa: E402
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait  # noqa: E402


class CheckFailed(Exception):
    pass


def tid(name):
    return f'[data-testid="{name}"]'


class Dashboard:
    def __init__(self, args, driver):
        self.args = args
        self.url = args.url.rstrip("/")
        self.exp = args.experiment
        self.driver = driver
        self.shots = os.path.dirname(os.path.abspath(args.screenshot))
        self.checks = 0

    # ------------------------------------------------------------ helpers

    def api(self, path, **query):
        query = {k: v for k, v in query.items() if v is not None}
        url = self.url + "/api/v1" + path + ("?" + urllib.parse.urlencode(query) if query else "")
        with urllib.request.urlopen(url, timeout=10) as res:
            return json.load(res)

    def ok(self, what):
        self.checks += 1
        print(f"ok: {what}", flush=True)

    def wait(self, what, condition, timeout=None):
        """Waits until condition() returns a truthy value and returns it."""
        last = [None]

        def probe(_):
            try:
                return condition()
            except Exception as e:  # stale elements while the page redraws: try again
                last[0] = e
                return False

        try:
            return WebDriverWait(self.driver, timeout or self.args.timeout, poll_frequency=0.2).until(probe)
        except TimeoutException:
            detail = f" (last error: {last[0]})" if last[0] else ""
            raise CheckFailed(f"timed out waiting for {what}{detail}") from None

    def find(self, css):
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def one(self, css):
        found = self.find(css)
        return found[0] if found else None

    def go(self, hash_):
        self.driver.get(self.url + "/" + hash_)

    def screenshot(self, name):
        """Saves the whole page (not only the window) as PNG."""
        d = self.driver
        size = d.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 8000), "scale": 1}
        shot = d.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip})
        path = os.path.join(self.shots, name)
        with open(path, "wb") as f:
            f.write(base64.b64decode(shot["data"]))
        print(f"screenshot: {path}", flush=True)

    def text(self, css):
        el = self.one(css)
        return el.text if el else ""

    # ------------------------------------------------------------ checks

    def experiments_page(self):
        self.go("#/")
        row_css = f'{tid("experiment-row")}[data-id="{self.exp}"]'
        try:
            row = self.wait(f"the row of experiment {self.exp} on the experiments page", lambda: self.one(row_css))
        except CheckFailed:
            ids = [r.get_attribute("data-id") for r in self.find(tid("experiment-row"))]
            raise CheckFailed(f"no row for experiment {self.exp} on the experiments page; rows: {ids}") from None
        api_exp = self.api(f"/experiments/{self.exp}")
        self.wait(f"the row to show status {api_exp['status']}",
                  lambda: api_exp["status"] in self.one(row_css).find_element(By.CSS_SELECTOR, tid("experiment-status")).text)
        self.ok(f"experiment row {self.exp} ({row.find_element(By.CSS_SELECTOR, tid('experiment-link')).text}) shows status {api_exp['status']}")
        workers = self.api("/workers")["workers"]
        self.wait(f"{len(workers)} worker rows", lambda: len(self.find(tid("worker-row"))) == len(workers))
        self.ok(f"{len(workers)} workers listed")
        self.screenshot("experiments.png")
        self.one(row_css).find_element(By.CSS_SELECTOR, tid("experiment-link")).click()
        self.wait("the experiment page", lambda: self.one(tid("experiment-summary")) and self.exp in self.driver.current_url)
        self.ok("the experiment link opens the experiment page")

    def charts(self):
        def path_of(chart):
            p = self.one(f'{tid(chart)} path[data-testid="{chart}-line"]')
            return p if p is not None and len(p.get_attribute("d") or "") > 3 else None

        self.wait("a line in the best-score chart", lambda: path_of("best-chart"))
        self.ok("the best-score chart has a line")
        self.one(tid("best-x-time")).click()
        self.wait("the best-score chart against time", lambda: self.one(tid("best-x-time")).get_attribute("aria-pressed") == "true" and path_of("best-chart"))
        self.one(tid("best-x-trials")).click()
        self.ok("the best-score chart toggles between trials and time")
        history = self.api(f"/experiments/{self.exp}/chains")["history"]
        if history:
            self.wait("a line in the chains' temperature chart", lambda: path_of("chains-chart"))
            self.ok("the temperature chart has a line per chain")

    def genealogy(self):
        path = f"/experiments/{self.exp}/genealogy"
        if not self.api(path, limit=60)["nodes"]:
            raise CheckFailed("the genealogy API has no node: no trial finished?")
        # The experiment runs on while the page catches up: compare with the API as it is at
        # each try, not with one earlier answer (regression: a fixed count raced new results).
        api_nodes = {}

        def same_as_api():
            api_nodes["n"] = len(self.api(path, limit=60)["nodes"])
            return len(self.find(tid("genealogy-node"))) == api_nodes["n"]

        self.wait("the genealogy's nodes to match the API's", same_as_api)
        self.ok(f"the genealogy shows {api_nodes['n']} nodes")

    def live_updates(self):
        """On a running experiment: the page follows new trials without a reload and keeps the
        user's filter."""
        if self.api(f"/experiments/{self.exp}")["status"] != "running":
            return
        d = self.driver
        Select(self.one(tid("filter-objective"))).select_by_value("plain")
        self.wait("the objective filter in the URL", lambda: "objective=plain" in d.current_url)
        d.execute_script("window.__noReload = true")
        shown = self.wait("the trial total", lambda: self.one(tid("trials-range")).get_attribute("data-total"))
        before = int(shown)
        self.wait("a new trial to appear on the page by itself",
                  lambda: int(self.one(tid("trials-range")).get_attribute("data-total")) > before, timeout=max(120, self.args.timeout))
        if not d.execute_script("return window.__noReload === true"):
            raise CheckFailed("the page reloaded")
        if Select(self.one(tid("filter-objective"))).first_selected_option.get_attribute("value") != "plain":
            raise CheckFailed("the live update reset the objective filter")
        self.ok(f"the page followed the experiment live ({before} → {self.one(tid('trials-range')).get_attribute('data-total')} trials) and kept the filter")
        self.one(tid("filter-reset")).click()
        self.wait("the filters cleared", lambda: "objective=" not in d.current_url)

    def stop_actions(self):
        if not self.args.token_file:
            return
        if self.api(f"/experiments/{self.exp}")["status"] != "running":
            print("note: the experiment is no longer running; Stop/Resume not tried", flush=True)
            return
        token = open(self.args.token_file).read().strip()
        d = self.driver
        d.execute_script("localStorage.removeItem('explore.token')")
        self.wait("the Stop button", lambda: self.one(tid("stop"))).click()
        dialog = self.wait("the token dialog", lambda: self.one(tid("token-dialog")) if self.one(tid("token-dialog")).is_displayed() else None)
        dialog.find_element(By.CSS_SELECTOR, tid("token-input")).send_keys("not-the-token")
        dialog.find_element(By.CSS_SELECTOR, tid("token-ok")).click()
        msg = self.wait("the 401 message", lambda: "401" in self.text(tid("action-message")) and self.text(tid("action-message")))
        if self.api(f"/experiments/{self.exp}")["status"] != "running":
            raise CheckFailed("a Stop with a wrong token changed the experiment")
        self.ok(f"a wrong token shows the error ({msg!r}) and changes nothing")
        self.screenshot("unauthorized.png")

        self.wait("the Stop now button", lambda: self.one(tid("stop-now"))).click()
        self.wait("the confirmation", lambda: d.switch_to.alert).accept()
        dialog = self.wait("the token dialog again (the wrong token was forgotten)",
                           lambda: self.one(tid("token-dialog")) if self.one(tid("token-dialog")).is_displayed() else None)
        dialog.find_element(By.CSS_SELECTOR, tid("token-input")).send_keys(token)
        dialog.find_element(By.CSS_SELECTOR, tid("token-ok")).click()
        self.wait("the page to show the experiment stopped",
                  lambda: "stopped" in self.text(f'{tid("experiment-summary")} {tid("experiment-status")}') and self.one(tid("resume")))
        status = self.api(f"/experiments/{self.exp}")["status"]
        if status != "stopped":
            raise CheckFailed(f"after Stop now the API says {status}")
        self.ok("Stop now with the token stops the experiment; the page shows it and offers Resume")

        # The token is saved now: Resume and Stop now again without the dialog.
        self.one(tid("resume")).click()
        self.wait("the page to show the experiment running again",
                  lambda: "running" in self.text(f'{tid("experiment-summary")} {tid("experiment-status")}') and self.one(tid("stop-now")))
        if self.api(f"/experiments/{self.exp}")["status"] != "running":
            raise CheckFailed("Resume did not resume the experiment")
        self.ok("Resume with the saved token runs the experiment again")
        self.one(tid("stop-now")).click()
        self.wait("the confirmation", lambda: d.switch_to.alert).accept()
        self.wait("the experiment stopped again", lambda: self.one(tid("resume")))
        if self.api(f"/experiments/{self.exp}")["status"] != "stopped":
            raise CheckFailed("the second Stop now did not stop the experiment")
        self.ok("Stop now again, with the saved token and no dialog")

    def trial_table(self):
        def agree(**filters):
            total = self.api(f"/experiments/{self.exp}/trials", limit=1, **filters)["total"]
            rng = self.one(tid("trials-range"))
            shown = int(rng.get_attribute("data-total")) if rng else -1
            rows = len(self.find(tid("trial-row")))
            return (total, rows) if shown == total and rows == min(total, 50) else None

        total, rows = self.wait("the trial table to agree with the API", agree)
        if total == 0:
            raise CheckFailed("the experiment has no trial")
        self.ok(f"the trial table shows {rows} rows of {total} trials, as the API says")
        self.paging(total)

        self.one(tid("sort-score")).click()
        self.wait("the score column sorted descending",
                  lambda: self.one(tid("sort-score")).find_element(By.XPATH, "..").get_attribute("aria-sort") == "descending")
        best = self.api(f"/experiments/{self.exp}/trials", sort="score", order="desc", limit=1)["trials"][0]
        want = best["score"]

        def first_score_matches():
            row = self.one(tid("trial-row"))
            got = row.get_attribute("data-score") if row is not None else None
            if got is None or want is None:
                return got == "" and want is None
            return got != "" and abs(float(got) - want) < 1e-9

        self.wait(f"the first row to have the top score {want}", first_score_matches)
        self.ok("clicking the Score header sorts by score like the API")

        Select(self.one(tid("filter-status"))).select_by_value("completed")
        total_c, rows_c = self.wait("the completed filter to agree with the API", lambda: agree(status="completed"))
        if any(r.get_attribute("data-id") is None for r in self.find(tid("trial-row"))):
            raise CheckFailed("a trial row without its id")
        self.ok(f"filtering by status completed shows {total_c} trials, as the API says")
        if "status=completed" not in self.driver.current_url:
            raise CheckFailed("the filter is not kept in the URL")
        self.ok("the table's state is kept in the URL")
        self.screenshot(os.path.basename(self.args.screenshot))

    def paging(self, total):
        """Small pages (from the URL) and the Next button, against the API's pages."""
        size = 5 if total > 5 else 1
        if total <= size:
            return
        self.go(f"#/exp/{self.exp}?limit={size}")
        self.wait(f"pages of {size} rows", lambda: len(self.find(tid("trial-row"))) == size)
        self.one(tid("page-next")).click()
        want = [t["id"] for t in self.api(f"/experiments/{self.exp}/trials", offset=size, limit=size)["trials"]]
        self.wait("the second page to show the API's second page",
                  lambda: [r.get_attribute("data-id") for r in self.find(tid("trial-row"))] == want)
        if f"offset={size}" not in self.driver.current_url:
            raise CheckFailed("the page offset is not kept in the URL")
        self.ok(f"paging by {size}: the second page holds the API's trials {size + 1}-{size + len(want)}")
        self.go(f"#/exp/{self.exp}")
        self.wait("the default page", lambda: len(self.find(tid("trial-row"))) == min(total, 50))

    def trial_page(self):
        link = self.one(f'{tid("trial-row")} {tid("trial-link")}')
        if link is None:
            raise CheckFailed("no completed trial to open")
        trial_id = link.find_element(By.XPATH, "ancestor::tr").get_attribute("data-id")
        link.click()
        self.wait("the trial page", lambda: self.one(tid("trial-facts")) and trial_id in self.driver.current_url)
        trial = self.api(f"/trials/{trial_id}")
        epochs = trial["epochs"]
        if not epochs:
            raise CheckFailed(f"the API has no epoch for completed trial {trial_id}")
        self.wait("a line in the validation-accuracy curve",
                  lambda: len(self.one(f'{tid("curve-val")} path').get_attribute("d") or "") > 3)
        self.wait("a line in the training-loss curve", lambda: self.one(f'{tid("curve-loss")} path'))
        self.wait(f"{len(epochs)} epoch rows", lambda: len(self.find(tid("epoch-row"))) == len(epochs))
        self.ok(f"trial #{trial['seq']} shows its learning curve ({len(epochs)} epochs)")
        self.wait(f"{len(trial['lineage'])} lineage links", lambda: len(self.find(tid("lineage-item"))) == len(trial["lineage"]))
        if self.one(tid("hparams-table")) is None or "{" not in self.text(tid("genome-json")):
            raise CheckFailed("the trial page shows no hyperparameters or genome")
        self.ok(f"the trial page shows hyperparameters, genome and the lineage ({len(trial['lineage'])} ancestors)")
        self.screenshot("trial.png")
        self.one(f'.crumbs {tid("experiment-link")}').click()
        self.wait("the way back to the experiment", lambda: self.one(tid("experiment-summary")))
        self.ok("the trial page links back to its experiment")

    def unknown_trial(self):
        self.go("#/trial/trial-does-not-exist")
        self.wait("the not-found message", lambda: "404" in self.text(tid("load-error")))
        self.ok("an unknown trial shows the API's 404")

    def no_network(self):
        origin = self.url
        outside = self.driver.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith(arguments[0]))", origin)
        if outside:
            raise CheckFailed(f"the page loaded resources from elsewhere: {outside}")
        self.ok("nothing is loaded from outside the master")

    def console_errors(self):
        bad = []
        for entry in self.driver.get_log("browser"):
            msg = entry.get("message", "")
            if entry.get("level") == "SEVERE" and "status of 401" not in msg and "status of 404" not in msg:
                bad.append(msg)
        if bad:
            raise CheckFailed("errors in the browser console: " + "; ".join(bad))
        self.ok("no script errors in the browser console")

    def run(self):
        self.experiments_page()
        self.charts()
        self.genealogy()
        self.no_network()
        self.live_updates()
        self.stop_actions()
        self.trial_table()
        self.trial_page()
        self.unknown_trial()
        self.console_errors()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--url", required=True, help="the master's HTTP address, e.g. http://127.0.0.1:8080")
    p.add_argument("--experiment", required=True, help="the experiment id to check")
    p.add_argument("--screenshot", required=True, help="where to save the main screenshot (PNG); the others go beside it")
    p.add_argument("--token-file", help="the cluster token; with it, Stop/Stop now are tried on a running experiment")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    p.add_argument("--timeout", type=float, default=30, help="seconds to wait for each check")
    args = p.parse_args()
    os.makedirs(os.path.dirname(os.path.abspath(args.screenshot)), exist_ok=True)

    options = Options()
    options.binary_location = args.chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1400,1000", "--no-first-run", "--disable-extensions"):
        options.add_argument(flag)
    profile = tempfile.mkdtemp(prefix="explore-chromium-")
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=args.chromedriver), options=options)
    dash = Dashboard(args, driver)
    try:
        dash.run()
        print(f"dashboard checks passed ({dash.checks} checks)", flush=True)
        return 0
    except CheckFailed as e:
        print(f"FAILED: {e}", file=sys.stderr, flush=True)
        try:
            print("url: " + driver.current_url, file=sys.stderr)
            for entry in driver.get_log("browser"):
                print(f"console: {entry.get('level')} {entry.get('message')}", file=sys.stderr)
            dash.screenshot("failure.png")
        except Exception:
            pass
        return 1
    finally:
        driver.quit()


if __name__ == "__main__":
    sys.exit(main())
