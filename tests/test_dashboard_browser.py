"""The dashboard in a real browser: headless Chromium (Debian's chromium + chromium-driver) via Selenium.

Against the live system: a real broker and Redis, a real worker process and a
real ``reelstream gateway`` process. The browser loads ``/``, picks a user, rates
the first movie of the list and waits until the list changed (the worker applied
the rating and the page re-read it). A screenshot is saved to
``var/artifacts/dashboard.png`` (path printed).
"""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from reelstream.settings import PROJECT_ROOT
from streams.producer import EventProducer
from tests.live_system import GatewayProcess, Live
from tests.stream_support import stats, wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
ARTIFACTS = PROJECT_ROOT / "var" / "artifacts"
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--window-size=1400,2300",
)  # fmt: skip


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    assert CHROMIUM.exists() and CHROMEDRIVER.exists(), "run scripts/setup.sh (installs chromium, chromium-driver)"
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in FLAGS:
        options.add_argument(flag)
    profile = tmp_path / "chromium-profile"
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def _css(driver: webdriver.Chrome, selector: str) -> list:
    return driver.find_elements(By.CSS_SELECTOR, selector)


def _text(driver: webdriver.Chrome, selector: str) -> str:
    found = _css(driver, selector)
    try:
        return found[0].text if found else ""
    except WebDriverException:  # re-rendered between find and read
        return ""


def _served(driver: webdriver.Chrome, variant: str) -> int:
    text = _text(driver, f"#arms-table tr[data-variant='{variant}'] td.served")
    return int(text.replace(",", "")) if text.replace(",", "").isdigit() else -1


#: A stand-in for ``var/reports/exploration.json`` (``reelstream explore-eval`` writes the real one).
EXPLORATION = {
    "created_at": "2026-12-02T00:00:00Z", "model_version": "m0001", "seed": 0,
    "arms": [
        {"arm": "exploit", "kind": "none", "scale": 0.0, "events": 8042, "hr": 0.164, "ndcg": 0.071,
         "coverage": 0.062, "novelty": 2.87, "diversity": 0.786},
        {"arm": "thompson x1", "kind": "thompson", "scale": 1.0, "events": 8042, "hr": 0.143, "ndcg": 0.060,
         "coverage": 0.2, "novelty": 3.5, "diversity": 0.8},
    ],
}  # fmt: skip


def test_rating_a_movie_in_the_dashboard_changes_the_list(live: Live, browser: webdriver.Chrome) -> None:
    live.worker("browser")
    movies = [int(m) for m in live.runtime.movie_ids[:60]]

    async def history() -> None:  # a few users with some history, so they are personalised and pickable
        async with EventProducer(live.settings) as producer:
            for i, mid in enumerate(movies[:40]):
                await producer.send(1 + i % 4, mid, 3.5 + (i % 3) * 0.5, known_movie=live.runtime.index_of.__contains__)

    asyncio.run(history())
    wait_for(lambda: stats(live.redis).get("events_applied", 0) >= 40, 60, "the history applied")
    (live.settings.reports_dir / "exploration.json").write_text(json.dumps(EXPLORATION))
    gateway = GatewayProcess(live.env, live.log_dir)
    try:
        gateway.wait_ready()
        # /lag answers a documented 503 until its first sample; Chromium logs any 503 as a console
        # error, so the page is opened once the sampler has a figure to show.
        wait_for(lambda: httpx.get(f"{gateway.url}/lag", timeout=2.0).status_code == 200, 30, "the first lag sample")
        browser.get(f"{gateway.url}/")
        wait_for(lambda: len(_css(browser, "#user-picks button.pick")) >= 4, 30, "users to pick from")
        first_pick = _css(browser, "#user-picks button.pick")[0].text
        wait_for(lambda: len(_css(browser, "#rec-list li.rec")) >= 5, 30, "a demo user's list without a click")
        assert _css(browser, "#user-input")[0].get_attribute("value") == first_pick
        # wide report tables scroll inside their card instead of overflowing it
        assert (
            browser.execute_script("return getComputedStyle(document.querySelector('#report-summary')).overflowX")
            == "auto"
        )
        next(b for b in _css(browser, "#user-picks button.pick") if b.text == "2").click()
        wait_for(lambda: _css(browser, "#rec-list")[0].get_attribute("data-user") == "2", 30, "user 2's list")
        wait_for(lambda: len(_css(browser, "#rec-list li.rec")) >= 5, 30, "the recommendation list")
        before_version = _css(browser, "#rec-list")[0].get_attribute("data-state-version")
        first = _css(browser, "#rec-list li.rec")[0]
        rated = first.get_attribute("data-movie-id")
        assert "because" in _text(browser, "#rec-list li.rec .rec-reasons") or _text(browser, ".rec-reasons")
        first.find_element(By.CSS_SELECTOR, ".rate-btn[data-rating='5']").click()

        def applied() -> bool:
            status = _css(browser, "#rate-status")[0]
            return "flash" in (status.get_attribute("class") or "")

        try:
            wait_for(applied, 20, "the list to change after the rating")
        except AssertionError:
            raise AssertionError(f"status: {_text(browser, '#rate-status')}\n{gateway.tail()}") from None
        elapsed_ms = int(_css(browser, "#rate-status")[0].get_attribute("data-elapsed-ms"))
        after_version = _css(browser, "#rec-list")[0].get_attribute("data-state-version")
        assert int(after_version) == int(before_version) + 1
        listed = {li.get_attribute("data-movie-id") for li in _css(browser, "#rec-list li.rec")}
        assert rated not in listed  # a rated movie is never recommended again (rule avoid.rated)
        print(f"\nrating -> list changed in the browser after {elapsed_ms} ms")

        # The monitoring panels fill from /lag and /freshness.
        wait_for(lambda: len(_css(browser, "#lag-table tbody tr")) >= live.settings.topic_partitions, 30, "lag rows")
        wait_for(lambda: "probe p50" in _text(browser, "#fresh-meta"), 30, "freshness figures")
        wait_for(lambda: "OK" in _text(browser, "#lag-verdict"), 30, "an OK lag verdict")
        wait_for(lambda: len(_css(browser, "#report-summary table")) >= 1, 30, "the report summary")
        # The arms panel: every variant with its lists served (user 2's list counted), the offline report.
        variant = httpx.get(f"{gateway.url}/recommendations/2", timeout=5.0).json()["variant"]
        wait_for(lambda: {r.get_attribute("data-variant") for r in _css(browser, "#arms-table tbody tr")}
                 == {"control", "diverse"}, 30, "the arms table")  # fmt: skip
        wait_for(lambda: _served(browser, variant) >= 2, 30, f"lists served by {variant}")
        # the served lists came back as impressions the worker counted: the measured columns show them
        wait_for(lambda: "% of" in _text(browser, f"#arms-table tr[data-variant='{variant}'] td.hit-rate"), 30,
                 f"{variant}'s lists attributed")  # fmt: skip
        offline = [r.get_attribute("data-arm") for r in _css(browser, "#arms-offline-table tr[data-arm]")]
        assert offline == [r["arm"] for r in EXPLORATION["arms"]]
        assert "(-0.021)" in _text(browser, "#arms-offline-table tr[data-arm='thompson x1']")  # HR vs exploit
        assert _text(browser, "#biz-gain").startswith("$")
        points = "return Math.min(...[...window.reelstream.series.lag.values()].map((a) => a.length))"
        wait_for(lambda: browser.execute_script(points) >= 5, 30, "five lag samples in the charts")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "dashboard.png"
        assert browser.save_screenshot(str(shot))
        print(f"screenshot: {shot}")
        logs = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"]
        assert not logs, f"browser console errors: {logs}"
    finally:
        gateway.stop()
