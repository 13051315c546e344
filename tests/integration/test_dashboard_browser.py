"""The dashboard in a real browser: headless Chromium (Debian's chromium and chromium-driver, through
Selenium) against a real server, showing real numbers and the current hour changing live."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import nats
import pytest
from redis.asyncio import Redis
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from contract.hours import HOUR_MS, hour_of, system_now_ms
from contract.settings import Settings
from deploy.servers import ROOT, free_port, wait_for_port
from projector.log.stream_config import ensure_stream
from tests.conftest import Server
from tests.helpers import eventually, isolated_settings, settings_env
from tests.integration.conftest import Projectors

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
if not (CHROMIUM and CHROMEDRIVER) and os.environ.get("CI"):
    raise RuntimeError("CI must have chromium and chromium-driver: .ci/run installs them with apt-get")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="apt-get install chromium chromium-driver"),
]
SCREENSHOT_TO = "HOURGLASS_SCREENSHOT"
"""Where the dashboard test saves its screenshot (`./just screenshot` names docs/dashboard.png); by default a
temporary directory, so a test run writes nothing inside the checkout."""


@pytest.fixture
def page_settings(nats_server: Server, redis_server: Server) -> Settings:
    return isolated_settings(nats_server.url, redis_server.url, http_port=free_port(), http_workers=1)


@contextlib.contextmanager
def running_server(settings: Settings, tmp_path: Path) -> Iterator[str]:
    """`python -m server` with these settings; yields its base URL."""
    env = settings_env(settings)
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "server"], env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_for_port("127.0.0.1", settings.http_port, 30, proc)
        yield f"http://127.0.0.1:{settings.http_port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def server(page_settings: Settings, tmp_path: Path) -> Iterator[str]:
    with running_server(page_settings, tmp_path) as base:
        yield base


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def cells(driver: webdriver.Chrome) -> dict[str, list[str]]:
    """The table, row label -> [unique users, clicks, impressions], read in one round trip."""
    rows = driver.execute_script(
        "return [...document.querySelectorAll('#rows tr')].map(tr => [...tr.cells].map(td => td.textContent))"
    )
    return {row[0]: row[1:] for row in rows if row}


def _answers(start: str, response: httpx.Response) -> bool:
    return response.text.startswith(start)


def heading(driver: webdriver.Chrome) -> str:
    return str(driver.execute_script("return document.getElementById('bucket-head').textContent"))


def switched(rows: int | None, driver: webdriver.Chrome) -> bool:
    """`rows` table rows, or (None) the daily view."""
    return len(cells(driver)) == rows if rows else "Day" in heading(driver)


def shows(row: str, values: list[str]) -> Callable[[webdriver.Chrome], bool]:
    return lambda driver: cells(driver).get(row) == values


async def until(
    driver: webdriver.Chrome, timeout: float, condition: Callable[[webdriver.Chrome], bool]
) -> None:
    wait = WebDriverWait(driver, timeout, poll_frequency=0.05)
    await asyncio.to_thread(wait.until, condition)


def label(hour: int) -> str:
    return time.strftime("%Y-%m-%d %H:00", time.gmtime(hour * 3600))


async def test_the_dashboard_shows_real_numbers_and_the_current_hour_live(
    page_settings: Settings, server: str, browser: webdriver.Chrome, redis: Redis, tmp_path: Path
) -> None:
    screenshot = Path(os.environ.get(SCREENSHOT_TO) or tmp_path / "dashboard.png")
    nc = await nats.connect(page_settings.nats_url)
    await ensure_stream(nc, page_settings)
    await nc.close()
    projectors = Projectors(page_settings, redis)
    await projectors.start()
    try:
        now = hour_of(system_now_ms())
        async with httpx.AsyncClient(base_url=server) as http:
            for hour, clicks in ((now, 3), (now - 1, 5), (now - 2, 2)):
                for i in range(clicks):
                    kind = "click" if i % 2 == 0 else "impression"
                    r = await http.post(
                        f"/analytics?timestamp={hour * HOUR_MS + 1}&user=u{hour % 7}-{i}&{kind}"
                    )
                    assert r.status_code == 204
            # Once projected (the page reads the range once, then follows only the current hour live).
            for hour, text in (
                (now, "3\nclicks,2\n"),
                (now - 1, "5\nclicks,3\n"),
                (now - 2, "2\nclicks,1\n"),
            ):
                await eventually(
                    functools.partial(http.get, f"/analytics?timestamp={hour * HOUR_MS}"),
                    functools.partial(_answers, f"unique_users,{text}impressions,"),
                )
            # Selenium blocks: it runs in a thread, so the projector on this loop keeps applying.
            await asyncio.to_thread(browser.get, server + "/")
            await until(browser, 20, shows(label(now - 1), ["5", "3", "2"]))
            table = await asyncio.to_thread(cells, browser)
            assert table[label(now)] == ["3", "2", "1"]
            assert table[label(now - 2)] == ["2", "1", "1"]
            # More events for the current hour: the page changes without a reload, within 2 s.
            for i in range(4):
                assert (
                    await http.post(f"/analytics?timestamp={now * HOUR_MS + 2}&user=late{i}&click")
                ).status_code == 204
            posted = time.monotonic()
            await until(browser, 2, shows(label(now), ["7", "6", "1"]))
            assert time.monotonic() - posted <= 2.0
            await asyncio.to_thread(browser.find_element(By.CSS_SELECTOR, "#clicks rect.current").click)
            assert "6 clicks" in browser.find_element(By.ID, "detail").text
            await asyncio.to_thread(browser.save_screenshot, str(screenshot))
            assert (await asyncio.to_thread(screenshot.stat)).st_size > 10_000
            # The switch: 7 days of hours, then 30 days by day (a row per UTC day, and the total).
            for button, rows in (("7 d", 168 + 1), ("30 d (daily)", None)):
                pick = f"//div[@class='ranges']/button[text()='{button}']"
                await asyncio.to_thread(browser.find_element(By.XPATH, pick).click)
                await until(browser, 10, functools.partial(switched, rows))
            days = await asyncio.to_thread(cells, browser)
            assert 30 <= len(days) - 1 <= 31
            # Today's row: every user above is distinct, so its union is the sum of its hours' users.
            totals = {now: (7, 6, 1), now - 1: (5, 3, 2), now - 2: (2, 1, 1)}
            today = [t for h, t in totals.items() if h // 24 == now // 24]
            expected = [str(sum(t[i] for t in today)) for i in range(3)]
            assert days[time.strftime("%Y-%m-%d", time.gmtime(now * 3600))] == expected
    finally:
        await projectors.stop_all()


@pytest.fixture
def guarded_server(nats_server: Server, redis_server: Server, tmp_path: Path) -> Iterator[str]:
    settings = isolated_settings(
        nats_server.url, redis_server.url, http_port=free_port(), http_workers=1, read_tokens="page-token"
    )
    with running_server(settings, tmp_path) as base:
        yield base


async def test_with_read_tokens_the_page_asks_for_one_once_and_then_reads(
    guarded_server: str, browser: webdriver.Chrome
) -> None:
    await asyncio.to_thread(browser.get, guarded_server + "/")
    alert = await asyncio.to_thread(WebDriverWait(browser, 10).until, expected_conditions.alert_is_present())
    assert "read token" in alert.text
    alert.send_keys("page-token")
    alert.accept()
    # The table fills (48 hourly rows and the total); the live stream, which needs the token too, connects.
    await until(browser, 10, lambda d: len(cells(d)) == 49)
    status = functools.partial(browser.execute_script, "return document.getElementById('status').textContent")
    await until(browser, 10, lambda _: status() == "live")
