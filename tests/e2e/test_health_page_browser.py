"""The sync-health page in a real headless Chromium (Debian's chromium + chromedriver, driven by Selenium).

The page is served by function_app.py's own handlers on the loopback host. Never skipped: without Chromium the
test fails and says how to install it (`./scripts/test` installs it with apt-get).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from sync_core.spotler.errors import SpotlerTransientError
from tests.e2e.conftest import Connector
from tests.e2e.support import api

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1100",
)
T = TypeVar("T")


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not os.access(path, os.X_OK)]
    if missing:
        pytest.fail(
            f"{', '.join(missing)} missing: the page's browser test needs Debian's chromium and chromium-driver "
            "(`./scripts/test` installs them; or `apt-get install chromium chromium-driver`)"
        )
    profile = tempfile.mkdtemp(prefix="sync-health-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


async def in_browser(step: Callable[[], T]) -> T:
    """Run a blocking browser step off the event loop, which keeps serving the page meanwhile."""
    return await asyncio.to_thread(step)


def person(n: int) -> dict[str, Any]:
    return {"firstname": f"Page{n}", "lastname": "Test", "emailaddress1": f"page{n}@example.nl"}


async def test_open_the_page_see_the_counts_press_replay_and_the_dead_letter_is_gone(
    connector: Connector, browser: WebDriver, tmp_path: Path
) -> None:
    dv, sp = connector.dataverse.sandbox, connector.spotler.store
    for n in range(3):
        dv.create("contact", person(n))
    await connector.deliver()
    sp.inject_fault("*", "error", status=503, times=None)
    failing = dv.create("contact", person(9))
    await connector.deliver()  # three deliveries, then a dead letter
    with pytest.raises(SpotlerTransientError):
        await connector.host.run_timer()  # Spotler is down: the pull fails, and its run is recorded as failed
    letters = (await api(connector, "GET", "deadletters")).json()["deadLetters"]
    assert [letter["recordId"] for letter in letters] == [failing]

    url = f"{connector.host.url}/api/ui?code=browser-test-key"
    await in_browser(lambda: browser.get(url))
    assert await in_browser(lambda: browser.title) == "Sync health · Dynamics 365 ⇄ Spotler Mail+"
    tiles = await in_browser(
        lambda: {
            tile.get_attribute("data-reason"): tile.find_element(By.TAG_NAME, "b").text
            for tile in browser.find_elements(By.CSS_SELECTOR, "#counts .tile")
        }
    )
    assert tiles == {"created": "3"}, "the failing record was never linked: it shows as a dead letter"
    rows = await in_browser(lambda: browser.find_elements(By.CSS_SELECTOR, "#dead-letters tbody tr"))
    assert len(rows) == 1
    row_text = await in_browser(lambda: rows[0].text)
    assert failing in row_text
    assert "RetryLater" in row_text
    pull = await in_browser(lambda: browser.find_element(By.CSS_SELECTOR, '.run[data-kind="pull"]').text)
    assert "failed" in pull
    screenshot = tmp_path / "sync-health.png"
    await in_browser(lambda: browser.save_screenshot(str(screenshot)))
    assert screenshot.stat().st_size > 10_000
    if target := os.environ.get("SYNC_HEALTH_SCREENSHOT"):
        shutil.copyfile(screenshot, target)

    sp.clear_faults()  # Spotler is back: the operator presses Replay
    button = await in_browser(lambda: browser.find_element(By.CSS_SELECTOR, "#dead-letters button"))
    await in_browser(button.click)
    await in_browser(lambda: WebDriverWait(browser, 20).until(lambda d: d.find_elements(By.ID, "no-dead-letters")))
    notice = await in_browser(lambda: browser.find_element(By.ID, "notice").text)
    assert notice == "The dead letter was replayed and applied."
    assert "code=browser-test-key" in await in_browser(lambda: browser.current_url), "the key stays on the page"
    tiles_after = await in_browser(
        lambda: {
            tile.get_attribute("data-reason"): tile.find_element(By.TAG_NAME, "b").text
            for tile in browser.find_elements(By.CSS_SELECTOR, "#counts .tile")
        }
    )
    assert tiles_after == {"created": "4"}
    assert (await api(connector, "GET", "deadletters")).json()["deadLetters"] == []
    assert sp.contact(failing) is not None
