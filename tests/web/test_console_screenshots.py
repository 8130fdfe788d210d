"""The console's screenshots in docs/images/, taken here so they follow the console: the keys,
usage and upstreams pages of a gateway that served some requests, in light and dark, at
1280 x 800 and at a phone's width. A screenshot is written to docs/images/ when it is missing
or when ``GATEWAY_SCREENSHOTS=1`` asks to refresh them (else to a temporary directory, so a
test run leaves the checkout as it was); the docs show every one of them."""

from __future__ import annotations

import pathlib
import re
from collections.abc import Iterator

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from tests.clients import TEST_KEY
from tests.web.console_shots import IMAGES, save, size, smaller
from tests.web.console_support import (
    GatewayThread,
    assert_clean,
    find,
    go,
    running_browser,
    running_gateway,
    sign_in,
    status,
    wait,
)

VIEWS = {"desktop": (1280, 800, False), "phone": (390, 844, True)}
THEMES = ("light", "dark")
PAGES = ("keys", "usage", "upstreams")
BACKGROUND = {"light": "rgb(246, 247, 249)", "dark": "rgb(17, 20, 24)"}
DOCS = IMAGES.parent / "console.md"


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayThread]:
    yield from running_gateway()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    yield from running_browser()


def name(page: str, view: str, theme: str) -> str:
    return f"console-{page}-{view}-{theme}.png"


def traffic(gateway: GatewayThread) -> None:
    """An owner with a few keys that served requests, one key revoked, one upstream down."""
    lifecycle = gateway.server.runtime.lifecycle
    limits = {"rpmLimit": 600, "dailyLimit": 2_000_000}
    for key_name, requests in (("production", 7), ("staging", 4), ("ci-runner", 2)):
        _, key = gateway.run(lifecycle.create("acme", {"name": key_name, **limits}))
        for _ in range(requests):
            assert gateway.chat(key) == 200
    record, key = gateway.run(lifecycle.create("acme", {"name": "old-laptop"}))
    assert gateway.chat(key, model="dead-model") == 502  # its upstream is down
    gateway.run(lifecycle.revoke("acme", record.id, "laptop retired"))


def show(browser: WebDriver, gateway: GatewayThread, page: str) -> None:
    """Open ``page`` with acme's data, and wait until it is drawn."""
    if page == "keys":
        go(browser, "keys", "#page form.filters input[name=owner]")
        owner = find(browser, "#page form.filters input[name=owner]")
        owner.clear()
        owner.send_keys("acme", Keys.ENTER)
        wait(lambda: len(browser.find_elements(By.CSS_SELECTOR, "#keys-results tbody tr")) == 4)
    elif page == "usage":
        go(browser, "usage", "#usage-results")
        owner = find(browser, "#page form input[name=owner]")
        owner.clear()
        owner.send_keys("acme")
        find(browser, "#page form button[type=submit]").click()
        wait(lambda: "Usage of acme" in status(browser))
        bars = "#usage-results .charts > figure:first-child rect.bar"  # requests per day
        today = lambda: browser.find_elements(By.CSS_SELECTOR, bars)[-1]  # noqa: E731
        wait(lambda: today().get_attribute("data-value") == "14")  # 13 answered, 1 failed
    else:
        assert gateway.chat(TEST_KEY, model="dead-model") == 502  # ejected now, for a while
        go(browser, "upstreams", "#upstreams-results table")
        wait(lambda: "ejected" in find(browser, "#upstreams-results table").text)
    browser.execute_script("window.scrollTo(0, 0); document.activeElement.blur()")


def test_screenshots_for_the_docs(
    browser: WebDriver, gateway: GatewayThread, tmp_path: pathlib.Path
) -> None:
    traffic(gateway)
    sign_in(browser, gateway)
    written = []
    try:
        for view, (width, height, mobile) in VIEWS.items():
            browser.execute_cdp_cmd(
                "Emulation.setDeviceMetricsOverride",
                {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
            )
            for theme in THEMES:
                browser.execute_cdp_cmd(
                    "Emulation.setEmulatedMedia",
                    {"features": [{"name": "prefers-color-scheme", "value": theme}]},
                )
                background = "return getComputedStyle(document.body).backgroundColor"
                assert browser.execute_script(background) == BACKGROUND[theme]
                for page in PAGES:
                    show(browser, gateway, page)
                    png = smaller(browser.get_screenshot_as_png())
                    assert size(png) == (width, height)
                    assert len(png) < 400_000  # small enough to commit
                    written.append(save(name(page, view, theme), png, tmp_path).name)
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    assert_clean(browser)
    shown = set(re.findall(r"images/(console-[\w-]+\.png)", DOCS.read_text(encoding="utf-8")))
    assert shown == set(written)  # the console's page shows every screenshot, and no other
