"""Bytes on the wire for the catalogue at each ST page load: the first load (empty browser cache), a reload
with nothing changed (the saved copy revalidated: 304) and a reload after the catalogue changed; direct to
the service and through the server plugin.

Run: ``python -m bench.wire``. Headless Chromium loads the ST stand-in page with the real extension, the
real service and the fake upstream (600 models); Chromium's DevTools protocol counts what crossed the socket
for the catalogue request (request line and headers, response headers and body as sent, CORS preflight
included when one was needed). The baseline is the same list fetched without the extension's cache and
validators, as every page load moved it before this change (the full list, uncompressed), measured in the
same run.

The plugin path runs the real plugin (``tests/st_server_plugin/harness.js``) behind the stand-in ST, which
has no compression middleware: real ST compresses the plugin's answer per request, so the stand-in's
"changed" figure through the plugin is the plain list; the real-ST figure comes with the real-ST harness.
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
from tests.extension.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.extension.standin_server import LoopThread, StandIn
from tests.fakes.service_fixtures import RunningService, running_stack
from tests.st_server_plugin.support import start_harness, stop_harness

from bench.common import Figure, Report

CATALOG = "/api/catalog?fields=summary"
UNCHANGED_TARGET = 1024
CHANGED_TARGET = 150 * 1024


@dataclass
class Exchange:
    """One request to the catalogue URL as Chromium saw it (a preflight is an exchange of its own)."""

    method: str
    sent: int = 0
    received_headers: int = 0
    received_body: int = 0
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)

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
        cdp = page.context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.on("Network.requestWillBeSent", self._sent)
        cdp.on("Network.requestWillBeSentExtraInfo", self._sent_headers)
        cdp.on("Network.responseReceivedExtraInfo", self._received_headers)
        cdp.on("Network.dataReceived", self._data)

    def _get(self, ev: dict[str, Any]) -> Exchange:
        return self._all.setdefault(ev["requestId"], Exchange(""))

    @property
    def exchanges(self) -> list[Exchange]:
        return [ex for rid, ex in self._all.items() if rid in self._catalog]

    def _sent(self, ev: dict[str, Any]) -> None:
        if CATALOG in ev["request"]["url"]:
            self._catalog.add(ev["requestId"])
            self._get(ev).method = ev["request"]["method"]

    def _sent_headers(self, ev: dict[str, Any]) -> None:
        ex = self._get(ev)
        # Request line + "Name: value\r\n" per header + the blank line (HTTP/1.1 on loopback).
        line = f"GET {CATALOG}&include_routers=false HTTP/1.1\r\n"
        ex.sent = len(line) + 2 + sum(len(k) + len(v) + 4 for k, v in ev["headers"].items())
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
        return sum(ex.total for ex in self.exchanges)

    def describe(self) -> str:
        return ", ".join(
            f"{ex.method or 'OPTIONS'} {ex.status}: {ex.sent} B sent, "
            f"{ex.received_headers} + {ex.received_body} B received"
            for ex in self.exchanges
        )


@contextmanager
def scene(plugin: bool) -> Iterator[tuple[RunningService, StandIn, str]]:
    with tempfile.TemporaryDirectory() as tmp, running_stack(Path(tmp) / "stack") as service:
        loop = LoopThread()
        node = start_harness(Path(tmp) / "node", service.data_root) if plugin else None
        token = json.loads(service.token_file("default-user").read_text())
        token["plugin"] = plugin  # the service sets this when it sees the plugin installed in ST
        standin = StandIn(
            data_root=service.data_root,
            upstream_models_url=f"{service.upstream.base_url}/v1/models?detailed=true",
            bootstrap_override=json.dumps(token).encode(),
            plugin_url=node.base if node is not None else None,
        )
        try:
            yield service, standin, loop.serve(standin.app(), service.st_port)
        finally:
            if node is not None:
                stop_harness(node)
            loop.close()


def page_load(context: Any, url: str) -> WireMeter:
    page = context.new_page()
    meter = WireMeter(page)
    with page.expect_response(lambda r: CATALOG in r.url and r.request.method == "GET", timeout=30000):
        page.goto(url + "/")
    page.wait_for_selector('#ngc_catalog_summary[data-source="service"]', state="attached", timeout=30000)
    page.close()
    return meter


def change_catalogue(service: RunningService, round_: int) -> None:
    fake = service.upstream.fake
    model_id = fake.ids("paid")[round_]
    service.upstream.call(lambda: fake.set_price(model_id, prompt=50.0 + round_))
    status, _ = service.request("POST", "/api/catalog/refresh")
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
    with scene(plugin) as (service, _standin, url):
        context = browser.new_context()
        try:
            first = page_load(context, url)
            reload = page_load(context, url)
            change_catalogue(service, 0)
            changed = page_load(context, url)
        finally:
            context.close()
        get = next(ex for ex in first.exchanges if ex.method == "GET")
        if plugin:
            base_url = url + "/api/plugins/nanogpt-companion"
            auth = {}
        else:
            base_url = service.url
            auth = {"Authorization": f"Bearer {service.token_for('default-user')}"}
        baseline = old_load_bytes(base_url, {"Accept-Encoding": "identity", **auth}, get.sent)
        return {"first": first, "reload": reload, "changed": changed, "baseline": baseline}


def main() -> Report:
    report = Report("wire")
    if not CHROMIUM.exists():
        sys.exit("/usr/bin/chromium is required")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            results = {
                "direct": measure(browser, plugin=False),
                "server plugin": measure(browser, plugin=True),
            }
        finally:
            browser.close()
    for path, m in results.items():
        where = "direct" if path == "direct" else "through the server plugin (stand-in ST, no compression)"
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
                    ratio=m["baseline"] / meter.total() if meter.total() else None,
                    note=meter.describe(),
                )
            )
    report.notes.append(
        "600 models, the extension's list request (fields=summary, routers left out); bytes are what "
        "Chromium sent and received for it (request line and headers, response headers, body as encoded)"
    )
    return report


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__).parse_args()
    main().emit()
