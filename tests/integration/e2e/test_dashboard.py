"""The web dashboard in a real headless Chromium, served by ``fleetctl dashboard`` against the nspawn cluster:
the machines are listed, a unit started with fleetctl shows as active without a reload, its page shows its
unit file, states and journal (over SSH, as ``fleetctl journal``), and a destroyed unit disappears.
Screenshots are saved under ``artifacts/dashboard/`` in the checkout (the path is printed)."""

from __future__ import annotations

import select
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from devcluster import firefox
from devcluster.browser import available, headless_chromium
from devcluster.nspawn import CHECKOUT
from tests.integration.e2e.harness import FIXTURES, FleetCluster, eventually

ARTIFACTS = CHECKOUT / "artifacts" / "dashboard"
LIVE = 2.0  # seconds a change may take to show in the page (the bound)
WAIT = 60.0


@pytest.fixture
def dashboard(fleet: FleetCluster) -> Iterator[str]:
    """``fleetctl dashboard`` on a free loopback port; its URL. Stopped with Ctrl-C (SIGINT, by PID)."""
    process = subprocess.Popen(
        [*fleet.base_argv(), "dashboard", "--address", "127.0.0.1:0", "--no-browser"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, cwd=FIXTURES,
        env=fleet.base_env or None,
    )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], WAIT)
        line = process.stdout.readline() if ready else ""
        assert line.startswith("Dashboard at http://127.0.0.1:"), f"fleetctl dashboard printed {line!r}"
        yield line.split()[2]
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
        assert process.returncode == 0, f"fleetctl dashboard exited {process.returncode}: {err}"
        assert "Dashboard stopped" in out
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    problem = available()
    assert not problem, problem
    with headless_chromium() as driver:
        yield driver


def screenshot(driver: WebDriver, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    assert driver.save_screenshot(str(path)), f"no screenshot written to {path}"
    print(f"dashboard screenshot: {path}")
    return path


def script(driver: WebDriver, code: str) -> object:
    return driver.execute_script(code)


def unit_active(driver: WebDriver, name: str) -> str | None:
    """The Active cell of the unit's row, None when the row is not in the page."""
    value = script(
        driver,
        f"var row = document.querySelector('#units tr[data-unit=\"{name}\"]');"
        " return row ? row.querySelector('td.active').textContent : null;",
    )
    return value if isinstance(value, str) else None


def within(probe_seconds: float, probe: object, what: str) -> float:
    """Poll ``probe`` (a callable) until true; the seconds it took (AssertionError past the bound)."""
    started = time.monotonic()
    eventually(probe, bool, probe_seconds, what)  # type: ignore[arg-type]
    return time.monotonic() - started


def test_the_dashboard_shows_the_cluster_live(
    fleet: FleetCluster, dashboard: str, browser: WebDriver
) -> None:
    browser.get(dashboard)
    machine_ids = {m.machine_id for m in fleet.machines}

    def listed() -> set[str]:
        rows = browser.find_elements(By.CSS_SELECTOR, "#machines tbody tr")
        return {row.get_attribute("data-machine") or "" for row in rows}

    eventually(listed, lambda ids: ids == machine_ids, WAIT, "the 3 machines in the page")
    assert browser.find_element(By.ID, "status").text == "Live"
    eventually(lambda: browser.find_elements(By.CSS_SELECTOR, "#machines .badge.leader"),
               lambda badges: len(badges) == 1, WAIT, "the engine leader marked")
    script(browser, "window.notReloaded = true;")

    fleet.ok("start", "hello.service")  # returns once systemd reports it active
    took = within(LIVE, lambda: (unit_active(browser, "hello.service") or "").startswith("active"),
                  "hello.service active in the page")
    print(f"hello.service showed as active {took:.2f}s after fleetctl start returned")
    assert script(browser, "return window.notReloaded === true && window.fleetDashboard.snapshots === 1")
    machine = script(browser, "return document.querySelector('#units tr[data-unit=\"hello.service\"] "
                              "td.machine').title")
    assert isinstance(machine, str) and machine.split()[0] in machine_ids
    screenshot(browser, "overview.png")

    # search from the keyboard: "/" focuses the labelled search box
    browser.find_element(By.TAG_NAME, "body").send_keys("/")
    search = browser.switch_to.active_element
    assert search.get_attribute("id") == "search"
    assert browser.find_element(By.CSS_SELECTOR, "label[for=search]").text == "Search"
    search.send_keys("no-such-unit")
    eventually(lambda: unit_active(browser, "hello.service"), lambda v: v is None, WAIT, "the row hidden")
    search.send_keys(Keys.ESCAPE)
    eventually(lambda: unit_active(browser, "hello.service"), lambda v: v is not None, WAIT, "the row back")

    # the unit page, opened from the keyboard
    link = browser.find_element(By.CSS_SELECTOR, "#units tr[data-unit='hello.service'] a")
    link.send_keys(Keys.ENTER)
    eventually(lambda: browser.find_element(By.ID, "unit-body").text, lambda t: "ExecStart=" in t, WAIT,
               "the unit file on the unit page")
    assert browser.switch_to.active_element.get_attribute("id") == "unit-title"
    eventually(lambda: browser.find_elements(By.CSS_SELECTOR, "#unit-states tbody tr"), lambda r: len(r) == 1,
               WAIT, "the unit's state on its machine")
    eventually(lambda: browser.find_element(By.ID, "unit-journal").text, lambda t: "Hello, World!" in t, WAIT,
               "the unit's journal read over SSH")
    screenshot(browser, "unit.png")
    browser.find_element(By.ID, "back").send_keys(Keys.ENTER)
    eventually(lambda: browser.find_element(By.ID, "overview").is_displayed(), bool, WAIT, "the overview")

    fleet.ok("destroy", "hello.service")
    took = within(LIVE, lambda: unit_active(browser, "hello.service") is None, "hello.service gone")
    print(f"hello.service disappeared {took:.2f}s after fleetctl destroy returned")
    assert script(browser, "return window.notReloaded === true")


def test_the_dashboard_is_live_in_firefox_too(fleet: FleetCluster, dashboard: str) -> None:
    """The same page in Firefox ESR (driven through Marionette, devcluster.firefox): the machines listed, a
    started unit active without a reload, a destroyed one gone."""
    problem = firefox.available()
    assert not problem, problem
    machine_ids = {m.machine_id for m in fleet.machines}
    with firefox.headless_firefox() as page:
        page.navigate(dashboard)

        def listed() -> set[str]:
            found = page.script(
                "return Array.from(document.querySelectorAll('#machines tbody tr'))"
                ".map(function (row) { return row.getAttribute('data-machine') || ''; });"
            )
            return set(found) if isinstance(found, list) else set()

        eventually(listed, lambda ids: ids == machine_ids, WAIT, "the 3 machines in Firefox")
        page.script("window.notReloaded = true;")
        row = (
            "var row = document.querySelector('#units tr[data-unit=\"hello.service\"]');"
            " return row ? row.querySelector('td.active').textContent : null;"
        )
        fleet.ok("start", "hello.service")
        took = within(LIVE, lambda: str(page.script(row) or "").startswith("active"),
                      "hello.service active in Firefox")
        print(f"Firefox: hello.service showed as active {took:.2f}s after fleetctl start returned")
        fleet.ok("destroy", "hello.service")
        within(LIVE, lambda: page.script(row) is None, "hello.service gone in Firefox")
        assert page.script("return window.notReloaded === true && window.fleetDashboard.snapshots === 1")
