"""What the console's browser tests share: a gateway and the bundled mock worker in a thread of
their own (Selenium's calls block), headless Chromium (Debian's ``chromium`` and
``chromium-driver``) driven by Selenium, and the helpers that find, wait and check. Skipped when
Chromium cannot be run here, failed instead when ``CI`` is set."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

import pytest

from gateway import mock_worker
from gateway.config.load import parse_text
from gateway.server import Server
from tests.conftest import gateway_yaml
from tests.web import ADMIN_TOKEN

try:
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.remote.webdriver import WebDriver
    from selenium.webdriver.remote.webelement import WebElement
except ImportError:  # pragma: no cover - the dev extras install it
    webdriver = None  # type: ignore[assignment]

T = TypeVar("T")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,800",
]


def _need_browser() -> None:
    missing = [
        name
        for name, found in (
            ("chromium", CHROMIUM),
            ("chromium-driver", DRIVER),
            ("selenium", webdriver),
        )
        if not found
    ]
    if missing:
        reason = f"{', '.join(missing)} missing; the test command installs them (apt, pip)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


class GatewayThread:
    """A gateway and the bundled mock worker in an event loop of their own thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server, self.mock = self.run(self._start())

    def run(self, coroutine: Any, timeout: float = 20) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        return future.result(timeout)

    async def _start(self) -> tuple[Server, Any]:
        runner, port = await mock_worker.start(mock_worker.MockOptions(), "127.0.0.1", 0)
        text = gateway_yaml(
            {"mock": f"http://127.0.0.1:{port}", "dead": "http://127.0.0.1:1"},
            {
                "mock-model": {
                    "upstreams": ["mock"],
                    "pricing": {"input_per_mtok": 3, "output_per_mtok": 15},
                },
                "dead-model": {"upstreams": ["dead"]},
            },
            extra="auth: {max_failures_per_minute: 1000}\nplans: {free: {}, pro: {}}\n",
            admin_token=ADMIN_TOKEN,
        )
        server = Server(parse_text(text, "console.yaml", env={}))
        await server.start()
        return server, runner

    async def _stop(self) -> None:
        await self.server.stop()
        await self.mock.cleanup()

    def stop(self) -> None:
        self.run(self._stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    @property
    def console(self) -> str:
        return f"http://127.0.0.1:{self.server.admin_port}/console"

    def chat(self, key: str, model: str = "mock-model") -> int:
        """One chat completion through the public listener; its status."""
        body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hello"}]})
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.server.port}/v1/chat/completions",
            data=body.encode(),
            headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as error:
            return int(error.code)


def running_gateway() -> Iterator[GatewayThread]:
    """A module fixture's body: a gateway in its thread, stopped after the module."""
    _need_browser()
    running = GatewayThread()
    yield running
    running.stop()


def running_browser() -> Iterator[WebDriver]:
    """A module fixture's body: headless Chromium, quit after the module."""
    _need_browser()
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager: never download anything
    # The driver's own debug lines carry what the page shows (the key shown once, read by the
    # test on purpose): they are the test client's, not the gateway's, and stay out of the
    # session's secrets watch.
    quiet = {name: logging.getLogger(name) for name in ("selenium", "urllib3")}
    levels = {name: log.level for name, log in quiet.items()}
    for log in quiet.values():
        log.setLevel(logging.WARNING)
    try:
        yield from _chromium()
    finally:
        for name, log in quiet.items():
            log.setLevel(levels[name])


def _chromium() -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="console-chromium-")
    for flag in [*FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    try:
        driver = webdriver.Chrome(options=options, service=Service(str(DRIVER)))
    except WebDriverException as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"Chromium does not start here: {exc.msg}")
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait(check: Callable[[], T], seconds: float = 5.0) -> T:
    """Poll ``check`` until it returns something truthy; fail past the deadline."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            found = check()
            if found:
                return found
        except WebDriverException:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"not true within {seconds} s: {getattr(check, '__name__', check)}")
        time.sleep(0.05)


def find(driver: WebDriver, css: str) -> WebElement:
    return wait(lambda: next(iter(driver.find_elements(By.CSS_SELECTOR, css)), None))


def sign_in(driver: WebDriver, gateway: GatewayThread) -> None:
    driver.get(gateway.console)
    token = find(driver, "#token")
    wait(lambda: find(driver, "#signin-button").is_enabled())
    token.send_keys(ADMIN_TOKEN)
    find(driver, "#signin-button").click()
    wait(lambda: driver.find_element(By.ID, "nav").is_displayed())


def go(driver: WebDriver, page: str, ready: str) -> None:
    find(driver, f'#nav a[data-page="{page}"]').click()
    find(driver, ready)


def status(driver: WebDriver) -> str:
    return str(find(driver, "#status").text)


def row_of(driver: WebDriver, key_id: str) -> WebElement:
    def found() -> WebElement | None:
        for row in driver.find_elements(By.CSS_SELECTOR, "#keys-results tbody tr"):
            if row.find_element(By.CSS_SELECTOR, "td").text == key_id:
                return row
        return None

    return wait(found)


def in_dialog(driver: WebDriver, css: str) -> WebElement:
    return find(driver, f"dialog[open] {css}")


def assert_clean(driver: WebDriver) -> list[dict[str, Any]]:
    """No error in the browser's console; the token in no URL the page loaded or visited, never
    in a cookie or web storage; returns the page's network events (the performance log)."""
    errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, errors
    events = [json.loads(e["message"])["message"] for e in driver.get_log("performance")]
    for event in events:
        if event["method"] == "Network.requestWillBeSent":
            request = event["params"]["request"]
            assert ADMIN_TOKEN not in request["url"], request["url"]
            assert "Cookie" not in request["headers"]
    assert ADMIN_TOKEN not in driver.current_url
    assert driver.get_cookies() == []
    stored = driver.execute_script("return localStorage.length + sessionStorage.length")
    assert stored == 0
    assert ADMIN_TOKEN not in driver.page_source  # nor left in the page
    return events
