"""What the extension shows when the service is down, unreachable, rejects the token or is too old, in
real SillyTavern (newest). The service is really stopped and restarted at the same address; a stale or
foreign token file is what the browser gets from ST's ``/user/files/`` (routed in the page only)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aiohttp import web

from tests.extension.st_ui import CONNECTED, open_drawer
from tests.fakes.loop_thread import LoopThread
from tests.fakes.service_fixtures import free_port
from tests.realst.browser import STPage
from tests.realst.stack import RealStack

TOKEN_FILE_URL = "**/user/files/nanogpt-companion.json"
NETWORK_NOISE = re.compile(r"^Failed to load resource: ")


def _serve_token_file(body: bytes) -> Any:
    def before_load(page: Any) -> None:
        page.route(
            TOKEN_FILE_URL,
            lambda route: route.fulfill(status=200, body=body, content_type="application/json"),
        )

    return before_load


def _token_body(url: str, token: str, api_version: int = 1) -> bytes:
    return json.dumps({"url": url, "token": token, "version": "0.1.0", "api_version": api_version}).encode()


def test_service_not_running_is_quiet_then_recovers(stack: RealStack, st_page_for: Any) -> None:
    assert stack.service is not None
    port = stack.stop_service()
    try:
        page: STPage = st_page_for(stack, connected=False)
        console: list[str] = []
        page.page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
        page.page.wait_for_selector(
            '#ngc_status_pill[data-status="not_running"]', state="attached", timeout=30000
        )
        open_drawer(page)
        msg = page.page.text_content("#ngc_status_message") or ""
        assert "nanogpt-companion serve --sillytavern" in msg
        page.screenshot("state-service-down.png", full_page=False)
        assert page.page.query_selector_all("#toast-container .toast") == []
        # Only Chromium's own line per refused attempt, spaced out by the backoff (not a storm).
        assert [c for c in console if not NETWORK_NOISE.match(c)] == []
    finally:
        stack.start_service(port=port)
    # The service is back at the address the token file names: the extension reconnects by itself.
    page.page.wait_for_selector(CONNECTED, state="attached", timeout=60000)
    page.page.wait_for_function("document.querySelector('#ngc_usd').textContent.startsWith('$')")


@pytest.mark.parametrize(
    ("fault", "upstream", "label", "screenshot"),
    [
        ("reset", "unreachable", "NanoGPT unreachable", "state-nanogpt-unreachable.png"),
        ("invalid_json", "failing", "NanoGPT error", "state-nanogpt-error.png"),
    ],
    ids=["unreachable", "answering-garbage"],
)
def test_a_nanogpt_outage_is_named_in_the_pill_then_recovers(
    stack: RealStack, st_page_for: Any, fault: str, upstream: str, label: str, screenshot: str
) -> None:
    """The service runs but NanoGPT does not answer (the connection drops), or answers with something that
    is not its API (malformed JSON): the pill says which (not a green "connected" above last known values),
    the balance stays as last known; once NanoGPT answers a refresh brings "connected" back."""
    page: STPage = st_page_for(stack)
    page.page.wait_for_function("document.querySelector('#ngc_usd').textContent.startsWith('$')")
    usd = page.page.text_content("#ngc_usd")
    open_drawer(page)
    refresh = "#ngc_refresh:not([disabled])"
    if fault == "reset":
        stack.fake.faults.reset(after_bytes=0)  # every NanoGPT request: the connection drops
    else:
        stack.fake.faults.invalid_json()  # every NanoGPT request: a 200 whose body is not JSON
    try:
        page.page.wait_for_selector(refresh, timeout=30000)  # the manual refresh is rate-limited
        page.page.click("#ngc_refresh")
        page.page.wait_for_selector(
            CONNECTED + f'[data-upstream="{upstream}"]', state="attached", timeout=60000
        )
        assert page.page.text_content("#ngc_status_pill") == label
        assert "last known values" in (page.page.get_attribute("#ngc_status_pill", "title") or "")
        assert page.page.text_content("#ngc_usd") == usd
        assert "Showing last known values" in (page.page.text_content("#ngc_account_note") or "")
        page.screenshot(screenshot, full_page=False)
    finally:
        stack.fake.faults.clear()
    page.page.wait_for_selector(refresh, timeout=30000)
    page.page.click("#ngc_refresh")
    page.page.wait_for_selector(CONNECTED + ":not([data-upstream])", state="attached", timeout=60000)
    assert page.page.text_content("#ngc_status_pill") == "connected"


def test_no_token_file_means_not_running(stack: RealStack, st_page_for: Any) -> None:
    page: STPage = st_page_for(
        stack,
        connected=False,
        before_load=lambda p: p.route(
            TOKEN_FILE_URL, lambda route: route.fulfill(status=404, body="Not found")
        ),
    )
    page.page.wait_for_selector(
        '#ngc_status_pill[data-status="not_running"]', state="attached", timeout=30000
    )


def test_rejected_token_is_reported(stack: RealStack, st_page_for: Any) -> None:
    assert stack.service is not None
    body = _token_body(stack.service.url, "not-the-token-" + "x" * 29)
    page: STPage = st_page_for(stack, connected=False, before_load=_serve_token_file(body))
    page.page.wait_for_selector(
        '#ngc_status_pill[data-status="token_rejected"]', state="attached", timeout=30000
    )
    open_drawer(page)
    assert "rejected" in (page.page.text_content("#ngc_status_message") or "")


def test_old_service_is_reported(stack: RealStack, st_page_for: Any) -> None:
    """A service that speaks an older api_version than the extension needs."""

    async def health(_: web.Request) -> web.Response:
        resp = web.json_response({"status": "ok", "version": "0.0.1", "api_version": 0, "upstream": {}})
        resp.headers["Access-Control-Allow-Origin"] = stack.url
        return resp

    app = web.Application()
    app.router.add_get("/health", health)
    loop = LoopThread()
    try:
        url = loop.serve(app, free_port())
        page: STPage = st_page_for(
            stack, connected=False, before_load=_serve_token_file(_token_body(url, "t" * 43))
        )
        page.page.wait_for_selector(
            '#ngc_status_pill[data-status="too_old"]', state="attached", timeout=30000
        )
        open_drawer(page)
        assert "0.0.1" in (page.page.text_content("#ngc_status_message") or "")
    finally:
        loop.close()
