"""The dashboard in a real browser: headless Chromium (Debian's chromium and chromium-driver, through
Selenium, in a half-hour time zone) against a real server, showing real numbers in the browser's zone and
in a picked one, its axes, its comparison with the previous period, its CSV, and the current hour live."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import math
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import date, datetime, timedelta
from datetime import time as clock
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from redis.asyncio import Redis
from selenium import webdriver
from selenium.common.exceptions import TimeoutException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from contract.hours import HOUR_MS, hour_of, system_now_ms
from deploy.servers import ROOT, wait_for_port
from deploy.settings import Settings
from tests.conftest import Server
from tests.helpers import clear_of_hour_end, eventually, isolated_settings, settings_env
from tests.integration.conftest import Projectors, make_stream
from tests.ports import free_port

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
BROWSER_ZONE = "Asia/Kolkata"
"""Chromium runs with TZ set to it (UTC+5:30: its local hours start at :30 UTC), so the page's default zone is
a half-hour one; Chromium names it by its older alias Asia/Calcutta."""
PICKED_ZONE = "America/St_Johns"
"""The zone the test picks in the page's picker (UTC-3:30, with daylight saving time)."""


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
async def projecting(page_settings: Settings, redis: Redis) -> AsyncIterator[Projectors]:
    """The page's stream, and a projector folding it while the test runs."""
    await make_stream(page_settings)
    started = Projectors(page_settings, redis)
    await started.start()
    yield started
    await started.stop_all()


@pytest.fixture
def downloads(tmp_path: Path) -> Path:
    folder = tmp_path / "downloads"
    folder.mkdir()
    return folder


@pytest.fixture
def browser(downloads: Path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,900"):
        options.add_argument(flag)
    service = Service(str(CHROMEDRIVER), env={**os.environ, "TZ": BROWSER_ZONE})
    driver = webdriver.Chrome(service=service, options=options)
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
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


def label(ms: int, zone: str = BROWSER_ZONE) -> str:
    """The table's label of the local hour holding the instant `ms`."""
    return datetime.fromtimestamp(ms / 1000, ZoneInfo(zone)).strftime("%Y-%m-%d %H:00")


async def test_the_dashboard_shows_real_numbers_and_the_current_hour_live(
    server: str, browser: webdriver.Chrome, projecting: Projectors, tmp_path: Path
) -> None:
    screenshot = Path(os.environ.get(SCREENSHOT_TO) or tmp_path / "dashboard.png")
    await clear_of_hour_end(margin_s=90)  # the page follows the browser's current hour; this test takes ~20 s
    now = hour_of(system_now_ms())
    async with httpx.AsyncClient(base_url=server) as http:
        for hour, clicks in ((now, 3), (now - 1, 5), (now - 2, 2)):
            for i in range(clicks):
                kind = "click" if i % 2 == 0 else "impression"
                r = await http.post(f"/analytics?timestamp={hour * HOUR_MS + 1}&user=u{hour % 7}-{i}&{kind}")
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
        # Each UTC hour's first millisecond is in a local hour of its own (Kolkata's start at :30 UTC).
        await until(browser, 20, shows(label((now - 1) * HOUR_MS + 1), ["5", "3", "2"]))
        table = await asyncio.to_thread(cells, browser)
        assert table[label(now * HOUR_MS + 1)] == ["3", "2", "1"]
        assert table[label((now - 2) * HOUR_MS + 1)] == ["2", "1", "1"]
        # More events for the current UTC hour: the page changes without a reload (its row is the last,
        # or the one before when the local hour that began at :30 UTC is already on).
        for i in range(4):
            assert (
                await http.post(f"/analytics?timestamp={now * HOUR_MS + 2}&user=late{i}&click")
            ).status_code == 204
        await until(browser, 20, shows(label(now * HOUR_MS + 1), ["7", "6", "1"]))
        bar = browser.execute_script(
            "return [...document.querySelectorAll('#clicks rect')]"
            ".find(r => r.querySelector('title').textContent.startsWith(arguments[0]))",
            label(now * HOUR_MS + 1),
        )
        await asyncio.to_thread(bar.click)
        assert "6 clicks" in browser.find_element(By.ID, "detail").text
        await asyncio.to_thread(browser.save_screenshot, str(screenshot))
        assert (await asyncio.to_thread(screenshot.stat)).st_size > 10_000
        # The switch: 7 days of hours, then 30 days by day (a row per local day, and the total).
        for button, rows in (("7 d", 168 + 1), ("30 d (daily)", None)):
            pick = f"//div[@class='ranges']/button[text()='{button}']"
            await asyncio.to_thread(browser.find_element(By.XPATH, pick).click)
            await until(browser, 10, functools.partial(switched, rows))
        days = await asyncio.to_thread(cells, browser)
        assert len(days) - 1 == 30
        # Today's row: every user above is distinct, so its union is the sum of its hours' users.
        totals = {now: (7, 6, 1), now - 1: (5, 3, 2), now - 2: (2, 1, 1)}
        today = label(system_now_ms())[:10]
        mine = [t for h, t in totals.items() if label(h * HOUR_MS + 1)[:10] == today]
        expected = [str(sum(t[i] for t in mine)) for i in range(3)]
        assert days[today] == expected


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


# What the page must show, folded here from the posted events in local buckets (zoneinfo), independently of
# the server's and the page's own arithmetic.
Event = tuple[int, str, str]
"""(timestamp ms, user, 'click' or 'impression')"""
MINUTE_MS = 60_000
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
NAMES = {"unique_users": "Unique users", "clicks": "Clicks", "impressions": "Impressions"}
TOTAL = "Total (uniques: the union over the range)"


def midnight(day: date, zone: str) -> int:
    return int(datetime.combine(day, clock(0), tzinfo=ZoneInfo(zone)).timestamp() * 1000)


def last_midnight(now_ms: int, zone: str) -> int:
    """The latest local midnight at least two minutes ago (so a minute after it is in the past too)."""
    return midnight(datetime.fromtimestamp((now_ms - 2 * MINUTE_MS) / 1000, ZoneInfo(zone)).date(), zone)


def buckets(now_ms: int, zone: str, granularity: str, n: int, back: int = 0) -> list[tuple[int, int, str]]:
    """(start, end, label) of the `n` local hours or days ending with the current one, `back` periods ago."""
    tz = ZoneInfo(zone)
    if granularity == "hour":
        local = datetime.fromtimestamp(now_ms / 1000, tz)
        end = now_ms - (local.minute * MINUTE_MS + local.second * 1000 + local.microsecond // 1000) + HOUR_MS
        end -= back * n * HOUR_MS
        starts = [end - (n - i) * HOUR_MS for i in range(n)]
        texts = [datetime.fromtimestamp(t / 1000, tz).strftime("%Y-%m-%d %H:%M") for t in starts]
        # A local hour that comes twice (when daylight saving time ends) also names its offset.
        shown = [
            x if texts.count(x) == 1 else f"{x} {utc_offset(t, tz)}"
            for t, x in zip(starts, texts, strict=True)
        ]
        return [(t, t + HOUR_MS, x) for t, x in zip(starts, shown, strict=True)]
    today = datetime.fromtimestamp(now_ms / 1000, tz).date() - timedelta(days=back * n)
    days = [today - timedelta(days=n - 1 - i) for i in range(n)]
    return [(midnight(d, zone), midnight(d + timedelta(days=1), zone), d.isoformat()) for d in days]


def utc_offset(ms: int, tz: ZoneInfo) -> str:
    """`UTC-03:30`, as the page writes an offset."""
    z = datetime.fromtimestamp(ms / 1000, tz).strftime("%z")
    return f"UTC{z[:3]}:{z[3:]}"


def fold(events: list[Event], start: int, end: int) -> tuple[int, int, int]:
    inside = [e for e in events if start <= e[0] < end]
    users = {user for _, user, _ in inside}
    return len(users), sum(k == "click" for *_, k in inside), sum(k == "impression" for *_, k in inside)


def round_ticks(top: int) -> list[int]:
    raw = max(1, top) / 4
    power = 10 ** math.floor(math.log10(raw))
    step = max(1, next(m * power for m in (1, 2, 5, 10) if m * power >= raw))
    last = max(step, math.ceil(top / step) * step)
    return list(range(0, int(last) + 1, int(step)))


def percent(now: int, then: int) -> str:
    if then == 0:
        return "±0.0%" if now == 0 else "n/a"
    r = math.floor((now - then) / then * 1000 + 0.5) / 10
    return ("+" if r > 0 else "-" if r < 0 else "±") + f"{abs(r):.1f}%"


def day_text(start: int, zone: str) -> str:
    local = datetime.fromtimestamp(start / 1000, ZoneInfo(zone))
    return f"{MONTHS[local.month - 1]} {local.day}"


def axis(rows: list[tuple[int, int, str]], zone: str, granularity: str, width: float) -> dict[str, list[str]]:
    """The x labels the page should draw (every k-th local hour or day, k by the bar width), as texts."""
    bar = (max(300, width) - 52 - 24) / len(rows)
    marks: list[str] = []
    dates: list[str] = []
    if granularity == "hour":
        k = next((s for s in (1, 2, 3, 4, 6, 12, 24) if s * bar >= 40), 24)
        for start, _, _ in rows:
            local = datetime.fromtimestamp(start / 1000, ZoneInfo(zone))
            if local.hour % k == 0:
                if local.hour == 0 or not marks:
                    dates.append(day_text(start, zone))
                marks.append(local.strftime("%H:%M"))
    else:
        k = next((s for s in (1, 2, 7, 14, 28) if s * bar >= 44), 28)
        marks = [
            day_text(start, zone) for i, (start, _, _) in enumerate(rows) if (len(rows) - 1 - i) % k == 0
        ]
    return {"x": marks, "dates": dates}


def expected_page(events: list[Event], zone: str, granularity: str, n: int, width: float) -> dict[str, Any]:
    now_ms = system_now_ms()
    rows = buckets(now_ms, zone, granularity, n)
    before = buckets(now_ms, zone, granularity, n, back=1)
    values = [fold(events, start, end) for start, end, _ in rows]
    total, previous = fold(events, rows[0][0], rows[-1][1]), fold(events, before[0][0], before[-1][1])
    unit = "Hour" if granularity == "hour" else "Day"
    compare = []
    for i, metric in enumerate(("unique_users", "clicks", "impressions")):
        diff = total[i] - previous[i]
        compare.append(
            [
                NAMES[metric],
                str(total[i]),
                str(previous[i]),
                f"{'+' if diff > 0 else ''}{diff}",
                percent(total[i], previous[i]),
            ]
        )
    return {
        "head": f"{unit} ({zone})",
        "rows": [[x, *map(str, v)] for (_, _, x), v in reversed(list(zip(rows, values, strict=True)))]
        + [[TOTAL, *map(str, total)]],
        "compare": compare,
        "period": f"This period: {rows[0][2]} to {rows[-1][2]}; the previous one: {before[0][2]} to "
        f"{before[-1][2]} ({zone}).",
        "y": {
            m: [f"{v:,}" for v in round_ticks(max(v[i] for v in values))]
            for i, m in ((2, "impressions"), (1, "clicks"), (0, "unique_users"))
        },
        **axis(rows, zone, granularity, width),
    }


PAGE = """
const texts = sel => [...document.querySelectorAll(sel)].map(e => e.textContent);
const y = {};
for (const m of ["clicks", "impressions", "unique_users"]) y[m] = texts(`#${m} text.y-tick`);
return {
  zone: document.getElementById("zone").value,
  width: document.getElementById("clicks").clientWidth,
  page: {
    head: document.getElementById("bucket-head").textContent,
    rows: [...document.querySelectorAll("#rows tr")].map(tr => [...tr.cells].map(td => td.textContent)),
    compare: [...document.querySelectorAll("#compare-rows tr")]
      .map(tr => [...tr.cells].map(td => td.textContent)),
    period: document.getElementById("period").textContent,
    y, x: texts("#clicks text.x-tick"), dates: texts("#clicks text.x-date"),
  },
};
"""


def page_state(driver: webdriver.Chrome) -> dict[str, Any]:
    return dict(driver.execute_script(PAGE))


def page_matches(events: list[Event], granularity: str, n: int, driver: webdriver.Chrome) -> bool:
    state = page_state(driver)
    return bool(state["page"] == expected_page(events, state["zone"], granularity, n, state["width"]))


async def shows_exactly(driver: webdriver.Chrome, events: list[Event], granularity: str, n: int) -> None:
    """Poll until the page shows what the events fold to in its zone (the period moves with the clock, so
    the expectation is computed afresh on every poll); on a timeout, the difference."""
    try:
        await until(driver, 15, functools.partial(page_matches, events, granularity, n))
    except TimeoutException:
        state = page_state(driver)
        assert state["page"] == expected_page(events, state["zone"], granularity, n, state["width"])


def csv_files(downloads: Path) -> list[Path]:
    return [f for f in downloads.iterdir() if f.suffix == ".csv"]


async def downloaded_csv(driver: webdriver.Chrome, downloads: Path) -> str:
    """Clicks the page's CSV button; the file the browser saved."""
    for old in await asyncio.to_thread(csv_files, downloads):
        await asyncio.to_thread(old.unlink)
    await asyncio.to_thread(driver.find_element(By.ID, "csv").click)
    await until(driver, 10, lambda _: bool(csv_files(downloads)))
    (csv,) = await asyncio.to_thread(csv_files, downloads)
    return (await asyncio.to_thread(csv.read_bytes)).decode()


def the_events(now_ms: int) -> list[Event]:
    """Events a minute either side of the local midnights of both zones, of the first local hour of the
    48-hour period and of the 30-day period, and in the 30 days before that; some users recur."""
    kolkata, st_johns = last_midnight(now_ms, BROWSER_ZONE), last_midnight(now_ms, PICKED_ZONE)
    period = buckets(now_ms, BROWSER_ZONE, "hour", 48)[0][0]
    month = buckets(now_ms, BROWSER_ZONE, "day", 30)[0][0]
    events: list[Event] = []
    for at, tag in ((kolkata, "k"), (st_johns, "s"), (period, "p"), (month, "m")):
        events += [
            (at - MINUTE_MS, f"{tag}1", "click"),
            (at - MINUTE_MS, f"{tag}2", "impression"),
            (at + MINUTE_MS, f"{tag}1", "click"),
            (at + MINUTE_MS, f"{tag}3", "click"),
            (at + MINUTE_MS, f"{tag}3", "impression"),
        ]
    events += [(now_ms - 40 * 24 * HOUR_MS, "k1", "click"), (now_ms - 41 * 24 * HOUR_MS, "old", "impression")]
    return events


async def test_in_a_half_hour_zone_the_page_shows_local_labels_numbers_comparison_and_csv(
    server: str, browser: webdriver.Chrome, projecting: Projectors, downloads: Path
) -> None:
    events = the_events(system_now_ms())
    async with httpx.AsyncClient(base_url=server) as http:
        for at, user, kind in events:
            assert (await http.post(f"/analytics?timestamp={at}&user={user}&{kind}")).status_code == 204
        lo, hi = min(e[0] for e in events), max(e[0] for e in events) + 1
        await eventually(
            functools.partial(
                http.get,
                f"/analytics?from={lo}&to={hi}&granularity=day",
                headers={"accept": "application/json"},
            ),
            lambda r: r.json()["total"]["clicks"] == sum(k == "click" for *_, k in events),
        )
    await asyncio.to_thread(browser.get, server + "/")
    # The browser's zone is the default, in its own spelling; every label and number is that zone's.
    zone = browser.execute_script("return document.getElementById('zone').value")
    assert zone in ("Asia/Kolkata", "Asia/Calcutta")
    await shows_exactly(browser, events, "hour", 48)
    table = page_state(browser)["page"]["rows"]
    csv = await downloaded_csv(browser, downloads)
    lines = [f"Hour ({zone}),Unique users,Clicks,Impressions"] + [",".join(r) for r in table]
    assert csv == "\r\n".join(lines) + "\r\n"
    # 30 days by local day, then a zone picked in the picker (by day, then by hour).
    pick = "//div[@class='ranges']/button[text()='30 d (daily)']"
    await asyncio.to_thread(browser.find_element(By.XPATH, pick).click)
    await shows_exactly(browser, events, "day", 30)
    browser.execute_script(
        "const s = document.getElementById('zone'); s.value = arguments[0];"
        "s.dispatchEvent(new Event('change'));",
        PICKED_ZONE,
    )
    await shows_exactly(browser, events, "day", 30)
    csv = await downloaded_csv(browser, downloads)
    assert csv.startswith(f"Day ({PICKED_ZONE}),Unique users,Clicks,Impressions\r\n")
    assert csv.endswith(f"{TOTAL},{','.join(page_state(browser)['page']['rows'][-1][1:])}\r\n")
    pick = "//div[@class='ranges']/button[text()='48 h']"
    await asyncio.to_thread(browser.find_element(By.XPATH, pick).click)
    await shows_exactly(browser, events, "hour", 48)


BY_ROWS = """
return [...document.querySelectorAll('#by-rows tr')].map(tr => [...tr.cells].map(td => td.textContent));
"""


def by_rows(driver: webdriver.Chrome) -> list[list[str]]:
    """The campaigns table: [campaign, unique users, clicks, impressions, CTR, clicks before, change]."""
    return list(driver.execute_script(BY_ROWS))


async def test_the_campaigns_table_shows_the_top_values_sorts_filters_the_charts_and_downloads(
    server: str, browser: webdriver.Chrome, projecting: Projectors, downloads: Path
) -> None:
    """In the 48 h view (the browser in Asia/Kolkata, whose hours start inside UTC hours), the campaigns
    of the UTC hours covering the period with their clicks in the previous period; a header sorts; a
    campaign filters the charts and tables (in UTC hours, and says so); its CSV as shown."""
    await clear_of_hour_end(margin_s=60)
    now = hour_of(system_now_ms()) * HOUR_MS + 1
    events = [
        *((now, f"s{i}", "click", "spring") for i in range(3)),
        (now, "s0", "impression", "spring"),
        (now - HOUR_MS, "s3", "click", "spring"),
        (now, "a0", "click", "autumn"),
        *((now, f"w{i}", "impression", "winter") for i in range(2)),
        *((now - HOUR_MS, f"n{i}", "impression", "") for i in range(2)),
        *((now - 50 * HOUR_MS, f"a{i}", "click", "autumn") for i in (1, 2)),  # the previous period
    ]
    async with httpx.AsyncClient(base_url=server) as http:
        for at, user, kind, campaign in events:
            extra = f"&campaign={campaign}" if campaign else ""
            assert (
                await http.post(f"/analytics?timestamp={at}&user={user}&{kind}{extra}")
            ).status_code == 204
        await eventually(
            functools.partial(http.get, f"/analytics?timestamp={now}"),
            functools.partial(_answers, "unique_users,6\nclicks,4\nimpressions,3\n"),
        )
        await eventually(
            functools.partial(http.get, f"/analytics?timestamp={now - 50 * HOUR_MS}"),
            functools.partial(_answers, "unique_users,2\nclicks,2\n"),
        )
    await asyncio.to_thread(browser.get, server + "/")
    want = [
        ["spring", "4", "4", "1", "400.00%", "0", "n/a"],
        ["autumn", "1", "1", "0", "", "2", "-50.0%"],
        ["winter", "2", "0", "2", "0.00%", "0", "±0.0%"],
        ["(none)", "2", "0", "2", "0.00%", "0", "±0.0%"],
        ["(other)", "0", "0", "0", "", "0", "±0.0%"],
        ["total", "9", "5", "5", "100.00%", "2", "+150.0%"],
    ]
    await until(browser, 20, lambda d: by_rows(d) == want)
    period = browser.find_element(By.ID, "by-period").text
    assert period.startswith("Top campaigns of the UTC hours")
    assert "by clicks" in period
    # Sorted by impressions: a click on the header reads the top again in that order.
    await asyncio.to_thread(browser.find_element(By.XPATH, "//button[@data-sort='impressions']").click)
    await until(browser, 10, lambda d: [r[0] for r in by_rows(d)][:3] == ["winter", "spring", "autumn"])
    for old in await asyncio.to_thread(csv_files, downloads):
        await asyncio.to_thread(old.unlink)
    await asyncio.to_thread(browser.find_element(By.ID, "by-csv").click)
    await until(browser, 10, lambda _: bool(csv_files(downloads)))
    (saved,) = await asyncio.to_thread(csv_files, downloads)
    lines = (await asyncio.to_thread(saved.read_bytes)).decode().split("\r\n")
    assert lines[0] == "Campaign,Unique users,Clicks,Impressions,CTR,Clicks before,Change %"
    assert lines[1:-1] == [",".join(r) for r in by_rows(browser)]
    # A campaign filters the charts and the rows table: Kolkata's hours are read in UTC for it.
    await asyncio.to_thread(browser.find_element(By.XPATH, "//td/button[text()='spring']").click)
    await until(browser, 10, lambda d: cells(d).get(TOTAL) == ["4", "4", "1"])
    assert heading(browser) == "Hour (UTC)"
    assert browser.find_element(By.ID, "filter").is_displayed()
    assert "Read in UTC" in browser.find_element(By.ID, "filter-note").text
    await asyncio.to_thread(browser.find_element(By.ID, "clear").click)
    await until(browser, 10, lambda d: cells(d).get(TOTAL) == ["9", "5", "5"])
