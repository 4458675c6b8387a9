"""Bytes on the wire for the catalogue at each page load of real SillyTavern (newest): the first load (empty
browser profile), a reload with nothing changed (the saved copy revalidated: 304) and a reload after the
catalogue changed; direct to the service and through the server plugin (installed by our installer, loaded
by ST, behind ST's session and compression middleware).

Run: ``python -m bench.wire``. Headless Chromium, the real extension, the real service and the fake
upstream (600 models); Chromium's DevTools protocol counts what crossed the socket for the catalogue request
(request line and headers, response headers and body as sent, a CORS preflight when one was needed), plus
what the catalogue adds to the event stream's ``hello`` (its ``catalog_etag`` field, which lets a page that
holds the current list skip the request). The baseline is what a page load moved before this change: the
full list, uncompressed, no validator (the old extension's request), fetched from the service in the same
run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from playwright.sync_api import sync_playwright
from tests.realst.browser import CHROMIUM, PAGE_INIT_SCRIPT, launch_chromium
from tests.realst.stack import CLEAN_OAI, DEFAULT_USER, RealStack, real_stack
from tests.realst.versions import NEWEST

from bench.common import Figure, Report

CATALOG = "/api/catalog?fields=summary"
UNCHANGED_TARGET = 1024
CHANGED_TARGET = 150 * 1024


@dataclass
class Exchange:
    """One request to the catalogue URL as Chromium saw it (a preflight is an exchange of its own)."""

    method: str
    path: str = ""
    header_bytes: int = 0
    received_headers: int = 0
    received_body: int = 0
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def sent(self) -> int:
        """Request line + "Name: value\\r\\n" per header + the blank line (HTTP/1.1 on loopback)."""
        return len(f"{self.method or 'OPTIONS'} {self.path} HTTP/1.1\r\n") + self.header_bytes + 2

    @property
    def total(self) -> int:
        return self.sent + self.received_headers + self.received_body


class WireMeter:
    """Counts the bytes of every exchange with the catalogue URL through the DevTools protocol.

    Its events for one request arrive in no fixed order, so everything is kept by request id; statuses
    come from the "extra info" events, which are what crossed the socket (a 304 the browser's cache
    answers the page with as a 200 is a 304 there).
    """

    def __init__(self, page: Any) -> None:
        self._all: dict[str, Exchange] = {}
        self._catalog: set[str] = set()
        self.hello_bytes = 0  # the catalogue's share of the event stream's hello
        cdp = page.context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.on("Network.requestWillBeSent", self._sent)
        cdp.on("Network.requestWillBeSentExtraInfo", self._sent_headers)
        cdp.on("Network.responseReceivedExtraInfo", self._received_headers)
        cdp.on("Network.dataReceived", self._data)
        cdp.on("Network.eventSourceMessageReceived", self._event)

    def _event(self, ev: dict[str, Any]) -> None:
        if ev.get("eventName") == "hello":
            tag = json.loads(ev["data"]).get("catalog_etag")
            self.hello_bytes += len(b',"catalog_etag":' + json.dumps(tag).encode())

    def _get(self, ev: dict[str, Any]) -> Exchange:
        return self._all.setdefault(ev["requestId"], Exchange(""))

    @property
    def exchanges(self) -> list[Exchange]:
        return [ex for rid, ex in self._all.items() if rid in self._catalog]

    def _sent(self, ev: dict[str, Any]) -> None:
        if CATALOG in ev["request"]["url"]:
            self._catalog.add(ev["requestId"])
            ex = self._get(ev)
            ex.method = ev["request"]["method"]
            url = urlsplit(ev["request"]["url"])
            ex.path = url.path + ("?" + url.query if url.query else "")

    def _sent_headers(self, ev: dict[str, Any]) -> None:
        ex = self._get(ev)
        ex.header_bytes = sum(len(k) + len(v) + 4 for k, v in ev["headers"].items())
        ex.headers = {k.lower(): v for k, v in ev["headers"].items()}

    def _received_headers(self, ev: dict[str, Any]) -> None:
        ex = self._get(ev)
        ex.received_headers = len(ev.get("headersText") or "") or sum(
            len(k) + len(v) + 4 for k, v in ev["headers"].items()
        )
        ex.status = ev.get("statusCode")

    def _data(self, ev: dict[str, Any]) -> None:
        self._get(ev).received_body += ev.get("encodedDataLength", 0)

    def total(self) -> int:
        return sum(ex.total for ex in self.exchanges) + self.hello_bytes

    def describe(self) -> str:
        parts = [
            f"{ex.method or 'OPTIONS'} {ex.status}: {ex.sent} B sent, "
            f"{ex.received_headers} + {ex.received_body} B received"
            for ex in self.exchanges
        ] or ["no catalogue request"]
        return ", ".join([*parts, f"hello's catalog_etag {self.hello_bytes} B"])


@contextmanager
def scene(plugin: bool) -> Iterator[RealStack]:
    args = ("--server-plugin", "--enable-server-plugins", "--no-autostart") if plugin else ()
    with tempfile.TemporaryDirectory() as tmp, real_stack(Path(tmp), NEWEST, install_args=args) as stack:
        stack.seed_user(DEFAULT_USER, oai=CLEAN_OAI)
        yield stack


def page_load(context: Any, url: str, plugin: bool, *, asks: bool) -> WireMeter:
    """One page load, until the catalogue shown is the service's (fetched, or confirmed by the hello);
    ``asks``: whether the page is expected to request the list (a first load, a changed catalogue)."""
    page = context.new_page()
    meter = WireMeter(page)
    page.goto(url + "/")
    page.wait_for_selector('#ngc_catalog_summary[data-source="service"]', state="attached", timeout=60000)
    if bool(meter.exchanges) != asks or not meter.hello_bytes:
        raise RuntimeError(f"unexpected page load: {meter.describe()} (expected a request: {asks})")
    via = page.get_attribute("#ngc_status_pill", "data-via")
    if via != ("plugin" if plugin else "direct"):
        raise RuntimeError(f"the extension went {via}, not {'through the plugin' if plugin else 'direct'}")
    page.close()
    return meter


def change_catalogue(stack: RealStack, round_: int) -> None:
    assert stack.service is not None
    fake = stack.upstream.fake
    model_id = fake.ids("paid")[round_]
    stack.upstream.call(lambda: fake.set_price(model_id, prompt=50.0 + round_))
    status, _ = stack.service.request("POST", "/api/catalog/refresh")
    if status != 200:
        raise RuntimeError(f"refresh failed: {status}")


def old_load_bytes(url: str, headers: dict[str, str], request_bytes: int) -> int:
    """What a page load moved before this change: the full list, uncompressed, no validator (the old
    extension's ``GET /api/catalog?include_routers=false``), with the measured request's size."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request("GET", parts.path + "/api/catalog?include_routers=false", headers=headers)
        resp = conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"baseline request failed: {resp.status}")
        head = f"HTTP/1.1 {resp.status} {resp.reason}\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in resp.getheaders()
        )
        return request_bytes + len(head) + 2 + len(body)
    finally:
        conn.close()


def measure(browser: Any, plugin: bool) -> dict[str, Any]:
    with scene(plugin) as stack:
        assert stack.service is not None
        context = browser.new_context()
        context.add_init_script(PAGE_INIT_SCRIPT)
        try:
            first = page_load(context, stack.url, plugin, asks=True)
            reload = page_load(context, stack.url, plugin, asks=False)
            change_catalogue(stack, 0)
            changed = page_load(context, stack.url, plugin, asks=True)
        finally:
            context.close()
        get = next(ex for ex in first.exchanges if ex.method == "GET")
        auth = {
            "Authorization": f"Bearer {stack.service.token_for(DEFAULT_USER)}",
            "Accept-Encoding": "identity",
        }
        baseline = old_load_bytes(stack.service.url, auth, get.sent)
        return {"first": first, "reload": reload, "changed": changed, "baseline": baseline}


def main() -> Report:
    report = Report("wire")
    if not CHROMIUM.exists():
        sys.exit("/usr/bin/chromium is required")
    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            results = {
                "direct": measure(browser, plugin=False),
                "server plugin": measure(browser, plugin=True),
            }
        finally:
            browser.close()
    for path, m in results.items():
        where = "direct" if path == "direct" else "through the server plugin"
        for name, label, target in (
            ("first", "first page load, empty browser", None),
            ("reload", "reload, catalogue unchanged", UNCHANGED_TARGET),
            ("changed", "reload after the catalogue changed", CHANGED_TARGET),
        ):
            meter = m[name]
            report.add(
                Figure(
                    f"catalogue bytes on the wire, {label}, {where}",
                    meter.total() / 1024,
                    "KB",
                    target=f"< {target / 1024:g} KB" if target else "",
                    met=(meter.total() < target) if target else None,
                    baseline=m["baseline"] / 1024,
                    baseline_name="before: full list, uncompressed, no validator",
                    ratio=m["baseline"] / meter.total(),
                    note=meter.describe(),
                )
            )
    report.notes.append(
        "600 models, the extension's list request (fields=summary, routers left out); bytes are what "
        "Chromium sent and received for it (request line and headers, response headers, body as encoded), "
        "plus the catalog_etag field of the event stream's hello (the stream itself opens on every page "
        "load for balance, alerts and fixes, catalogue or not)"
    )
    return report


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__).parse_args()
    main().emit()
