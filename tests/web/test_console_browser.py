"""The console in a real browser: headless Chromium (Debian's ``chromium`` and ``chromium-driver``)
driven by Selenium against a real gateway on loopback. Sign in, create a key (shown once), edit,
revoke and reactivate it, see the usage chart draw the requests made with it, the upstreams and
refusals pages; the CSP header on the page, no console errors, the token in no URL, no cookie and
no web storage; a phone-width layout without horizontal scrolling; keyboard use; dark mode.

One browser and one gateway serve the module (``tests/web/console_support.py``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.select import Select

from gateway.web.console import CSP
from tests.web import ADMIN_TOKEN
from tests.web.console_support import (
    GatewayThread,
    assert_clean,
    find,
    go,
    in_dialog,
    row_of,
    running_browser,
    running_gateway,
    sign_in,
    status,
    wait,
)


@pytest.fixture(scope="module")
def gateway() -> Iterator[GatewayThread]:
    yield from running_gateway()


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    yield from running_browser()


def test_sign_in_create_edit_revoke_reactivate(browser: WebDriver, gateway: GatewayThread) -> None:
    sign_in(browser, gateway)
    find(browser, "#page details summary").click()
    form = find(browser, "#page details form")
    form.find_element(By.NAME, "owner").send_keys("acme")
    form.find_element(By.NAME, "name").send_keys('<img src=x onerror="alert(1)">')
    form.find_element(By.NAME, "dailyLimit").send_keys("50000")
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    shown = in_dialog(browser, "input.secret")
    key = shown.get_attribute("value") or ""
    assert key.startswith("sk_gw_")
    in_dialog(browser, "button").click()  # Copy (the clipboard may be refused when headless)
    in_dialog(browser, "button.primary").click()  # Done: the key leaves the page
    wait(lambda: not browser.find_elements(By.CSS_SELECTOR, "dialog"))
    assert key not in browser.page_source
    key_id = key.split("_")[2]
    row = row_of(browser, key_id)
    assert "ACTIVE" in row.text and "Tokens a day: 50,000" in row.text
    assert '<img src=x onerror="alert(1)">' in row.text  # the name, as text
    assert not browser.find_elements(By.CSS_SELECTOR, "#page img")
    assert gateway.chat(key) == 200

    row.find_element(By.XPATH, ".//button[text()='Edit']").click()
    rpm = in_dialog(browser, "input[name=rpmLimit]")
    rpm.send_keys("7")
    allowlist = in_dialog(browser, "input[name=ipWhitelist]")
    allowlist.send_keys("127.0.0.1, 10.0.0.0/8")
    in_dialog(browser, "button[type=submit]").click()
    wait(lambda: "Requests a minute: 7" in row_of(browser, key_id).text)
    assert "10.0.0.0/8" in row_of(browser, key_id).text

    row_of(browser, key_id).find_element(By.XPATH, ".//button[text()='Revoke']").click()
    in_dialog(browser, "input[name=reason]").send_keys("leaked")
    in_dialog(browser, "button[type=submit]").click()
    wait(lambda: "REVOKED" in row_of(browser, key_id).text)
    assert "leaked" in row_of(browser, key_id).text
    assert gateway.chat(key) == 401

    row_of(browser, key_id).find_element(By.XPATH, ".//button[text()='Reactivate']").click()
    wait(lambda: "ACTIVE" in row_of(browser, key_id).text)
    assert gateway.chat(key) == 200

    row_of(browser, key_id).find_element(By.XPATH, ".//button[text()='Regenerate']").click()
    in_dialog(browser, "button[type=submit]").click()
    fresh = in_dialog(browser, "input.secret").get_attribute("value") or ""
    assert fresh.startswith(f"sk_gw_{key_id}_") and fresh != key
    in_dialog(browser, "button.primary").click()
    assert gateway.chat(key) == 401 and gateway.chat(fresh) == 200

    events = assert_clean(browser)
    document = next(
        e["params"]["response"]
        for e in events
        if e["method"] == "Network.responseReceived"
        and e["params"]["response"]["url"].endswith("/console")
    )
    headers = {k.lower(): v for k, v in document["headers"].items()}
    assert headers["content-security-policy"] == CSP
    sent = [
        e["params"]["request"]
        for e in events
        if e["method"] == "Network.requestWillBeSent" and "/admin/" in e["params"]["request"]["url"]
    ]
    assert sent and all(r["headers"].get("Authorization") == f"Bearer {ADMIN_TOKEN}" for r in sent)


def test_the_usage_chart_draws_the_requests(browser: WebDriver, gateway: GatewayThread) -> None:
    sign_in(browser, gateway)
    created = gateway.run(gateway.server.runtime.lifecycle.create("charts", {"name": "c"}))
    key = created[1]
    for _ in range(4):
        assert gateway.chat(key) == 200
    go(browser, "usage", "#usage-results")
    owner = find(browser, "#page form input[name=owner]")
    owner.clear()
    owner.send_keys("charts")

    def drawn() -> bool:
        find(browser, "#page form button[type=submit]").click()
        wait(lambda: "Usage of charts" in status(browser))
        first = "#usage-results .charts > figure:first-child rect.bar"  # requests per day
        bars = browser.find_elements(By.CSS_SELECTOR, first)
        return len(bars) == 7 and bars[-1].get_attribute("data-value") == "4"

    wait(drawn, 10)
    chart = find(browser, "#usage-results figure svg")
    assert chart.get_attribute("aria-label") == "Requests per day: 4 in 7 days"
    figures = [f.text.split("\n")[0] for f in browser.find_elements(By.CSS_SELECTOR, "figure")]
    for title in ("Tokens per day", "Cost per day", "Latency per day", "Error rate per day"):
        assert title in figures
    assert "Requests by key" in figures and "Requests by model" in figures
    assert_clean(browser)


def test_upstreams_and_refusals(browser: WebDriver, gateway: GatewayThread) -> None:
    sign_in(browser, gateway)
    created = gateway.run(gateway.server.runtime.lifecycle.create("ops", {"name": "o"}))
    assert gateway.chat(created[1], model="dead-model") == 502
    assert gateway.chat("sk_gw_nope") == 401
    go(browser, "upstreams", "#upstreams-results table")
    table = find(browser, "#upstreams-results table").text
    assert "mock" in table and "healthy" in table
    assert "dead" in table and "ejected" in table

    go(browser, "refusals", "#refusals-results table")
    recent = browser.find_elements(By.CSS_SELECTOR, "#refusals-results table")[-1].text
    assert "upstream_unavailable" in recent and "invalid_api_key" in recent
    assert "ops" in recent  # the owner of the refused request
    assert_clean(browser)


def test_owners_and_their_plans(browser: WebDriver, gateway: GatewayThread) -> None:
    gateway.run(gateway.server.runtime.lifecycle.create("planned", {"name": "p"}))
    sign_in(browser, gateway)
    go(browser, "owners", "#page form.filters")
    find(browser, "#page form.filters input[name=owner]").send_keys("planned", Keys.ENTER)

    def row() -> WebElement | None:
        for tr in browser.find_elements(By.CSS_SELECTOR, "#page tbody tr"):
            if tr.find_element(By.CSS_SELECTOR, "td").text == "planned":
                return tr
        return None

    assert "1 active of 1" in wait(row).text and "free (default)" in wait(row).text
    plan = Select(wait(row).find_element(By.CSS_SELECTOR, "select"))
    plan.select_by_value("pro")
    wait(row).find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait(lambda: "planned is on plan pro" in status(browser))
    assert gateway.run(gateway.server.runtime.store.get_plan("planned")) == "pro"
    assert_clean(browser)


def test_keyboard_only(browser: WebDriver, gateway: GatewayThread) -> None:
    browser.get(gateway.console)
    wait(lambda: browser.switch_to.active_element.get_attribute("id") == "token")
    wait(lambda: find(browser, "#signin-button").is_enabled())
    browser.switch_to.active_element.send_keys(ADMIN_TOKEN, Keys.ENTER)
    wait(lambda: find(browser, "#nav").is_displayed())
    for _ in range(20):
        browser.switch_to.active_element.send_keys(Keys.TAB)
        if browser.switch_to.active_element.text == "Usage":
            break
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    wait(lambda: browser.current_url.endswith("#usage"))
    # the page follows the address on the hashchange event, a moment after the URL changed
    wait(lambda: find(browser, "#nav a[aria-current=page]").text == "Usage")
    assert find(browser, "#nav a[aria-current=page]").text == "Usage"
    assert_clean(browser)


def test_a_phone_never_scrolls_sideways(browser: WebDriver, gateway: GatewayThread) -> None:
    sign_in(browser, gateway)
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": 375, "height": 800, "deviceScaleFactor": 2, "mobile": True},
    )
    try:
        for page, ready in [
            ("keys", "#keys-results"),
            ("owners", "#page table"),
            ("usage", "#usage-results"),
            ("upstreams", "#upstreams-results table"),
            ("refusals", "#refusals-results"),
        ]:
            go(browser, page, ready)
            time.sleep(0.1)  # the layout settles
            wide, viewport = browser.execute_script(
                "return [document.documentElement.scrollWidth, window.innerWidth]"
            )
            assert wide <= viewport, (page, wide, viewport)
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    assert_clean(browser)


def test_dark_mode_follows_the_system(browser: WebDriver, gateway: GatewayThread) -> None:
    background = "return getComputedStyle(document.body).backgroundColor"
    browser.get(gateway.console)
    find(browser, "#token")
    light = browser.execute_script(background)
    browser.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
    )
    try:
        dark = browser.execute_script(background)
    finally:
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"features": []})
    assert light == "rgb(246, 247, 249)" and dark == "rgb(17, 20, 24)"
    assert_clean(browser)


def test_a_wrong_token_is_refused_and_kept_nowhere(
    browser: WebDriver, gateway: GatewayThread
) -> None:
    browser.get(gateway.console)
    find(browser, "#token").send_keys("not-the-token")
    wait(lambda: find(browser, "#signin-button").is_enabled())
    find(browser, "#signin-button").click()
    wait(lambda: "not the admin token" in find(browser, "#signin-error").text)
    assert find(browser, "#token").get_attribute("value") == ""
    assert not find(browser, "#nav").is_displayed()
    browser.get_log("browser")  # the 401 is logged by the browser as a failed load: expected
    browser.get_log("performance")


def test_the_browser_enforces_the_csp(browser: WebDriver, gateway: GatewayThread) -> None:
    """What the page must never do is refused by the browser and reported in its console, so
    ``assert_clean`` would see any violation of the console's own code."""
    browser.get(gateway.console)
    find(browser, "#token")
    browser.execute_script("document.body.setAttribute('style', 'color: red')")
    browser.execute_script(
        "const s = document.createElement('script'); s.textContent = 'window.ran = 1';"
        "document.body.append(s)"
    )
    assert browser.execute_script("return window.ran === undefined")
    errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert len(errors) == 2 and all("Content Security Policy" in e for e in errors), errors
    browser.get_log("performance")
