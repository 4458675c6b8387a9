"""The catalogue kept in the browser between page loads and revalidated with If-None-Match (headless
Chromium, the stand-in page, the real service and the fake upstream)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.extension.conftest import Harness
from tests.extension.test_extension import connect_nanogpt_list, js, open_drawer, wait_connected

CATALOG_REQUEST = "/api/catalog?fields=summary"
FROM_CACHE = '#ngc_catalog_summary[data-source="cache"]'
FROM_SERVICE = '#ngc_catalog_summary[data-source="service"]'
READ_LOCALFORAGE = """async () => {
    const db = localforage.createInstance({ name: 'nanogpt-companion', storeName: 'catalog' });
    const owners = await db.getItem('owners');
    return { owners, record: owners ? await db.getItem('catalog:' + owners[0]) : null };
}"""
READ_INDEXEDDB = """() => new Promise((resolve, reject) => {
    const open = indexedDB.open('nanogpt-companion');
    open.onerror = () => reject(open.error);
    open.onsuccess = () => {
        const store = open.result.transaction('catalog').objectStore('catalog');
        const owners = store.get('owners');
        owners.onsuccess = () => {
            if (!owners.result) return resolve({ owners: null, record: null });
            const rec = store.get('catalog:' + owners.result[0]);
            rec.onsuccess = () => resolve({ owners: owners.result, record: rec.result });
        };
    };
})"""


class CatalogRequests:
    """Every GET of the catalogue list as it crossed the wire (Chromium's DevTools protocol: a 304 the
    browser's cache turned into a 200 for the page is still a 304 here); ``hold`` keeps the next one
    unanswered until ``release()`` (request interception: the browser's HTTP cache is off then)."""

    def __init__(self, page: Any, *, hold: bool = False) -> None:
        self.held: list[Any] = []
        self.hold = hold
        self._requests: dict[str, dict[str, Any]] = {}
        cdp = page.context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.on("Network.requestWillBeSentExtraInfo", self._sent)
        cdp.on("Network.responseReceivedExtraInfo", self._received)
        cdp.on("Network.requestWillBeSent", self._request)
        if hold:
            page.route("**/api/catalog?*", self._route)

    # The protocol's events for one request come in no fixed order: keep what each says by request id.
    def _entry(self, ev: dict[str, Any]) -> dict[str, Any]:
        return self._requests.setdefault(ev["requestId"], {"if_none_match": None})

    def _request(self, ev: dict[str, Any]) -> None:
        if CATALOG_REQUEST in ev["request"]["url"] and ev["request"]["method"] == "GET":
            self._entry(ev)["catalog"] = True

    def _sent(self, ev: dict[str, Any]) -> None:
        headers = {k.lower(): v for k, v in ev["headers"].items()}
        self._entry(ev)["if_none_match"] = headers.get("if-none-match")

    def _received(self, ev: dict[str, Any]) -> None:
        if ev.get("statusCode") == 204:
            return  # a CORS preflight
        headers = {k.lower(): v for k, v in ev["headers"].items()}
        self._entry(ev).update(
            status=ev["statusCode"], etag=headers.get("etag"), encoding=headers.get("content-encoding")
        )

    @property
    def seen(self) -> list[dict[str, Any]]:
        return [
            {k: v for k, v in e.items() if k != "catalog"}
            for e in self._requests.values()
            if e.get("catalog") and "status" in e
        ]

    def _route(self, route: Any) -> None:
        if self.hold and route.request.method == "GET":
            self.held.append(route)  # answered later, by release()
        else:
            route.continue_()

    def release(self) -> None:
        self.hold = False
        for route in self.held:
            route.continue_()
        self.held.clear()


@pytest.fixture
def context(browser: Any, harness: Harness) -> Iterator[Any]:
    """One browser profile for several page loads (the cache lives in its IndexedDB)."""
    harness.standin.bootstrap_override = None
    harness.reset_settings()
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield ctx
    finally:
        ctx.close()
        harness.standin.with_localforage = True


def load(context: Any, harness: Harness, *, hold: bool = False) -> tuple[Any, CatalogRequests]:
    """Open ST and wait until the catalogue request was answered; with ``hold``, only until it was sent
    (it stays unanswered until ``requests.release()``)."""
    page = context.new_page()
    requests = CatalogRequests(page, hold=hold)
    if hold:
        with page.expect_request(is_catalog_request, timeout=15000):
            page.goto(harness.st_url + "/")
    else:
        with page.expect_response(lambda r: is_catalog_request(r.request), timeout=15000):
            page.goto(harness.st_url + "/")
    return page, requests


def is_catalog_request(request: Any) -> bool:
    return CATALOG_REQUEST in request.url and request.method == "GET"


def enriched_labels(page: Any) -> int:
    return int(
        js(
            page,
            "[...document.querySelectorAll('#model_nanogpt_select option')]"
            ".filter(o => o.text.includes(' per 1M')).length",
        )
    )


@pytest.mark.parametrize("storage", ["localforage", "indexeddb"])
def test_reload_shows_the_saved_catalogue_at_once_then_gets_a_304(
    context: Any, harness: Harness, storage: str
) -> None:
    harness.standin.with_localforage = storage == "localforage"
    page, requests = load(context, harness)
    wait_connected(page)
    page.wait_for_selector(FROM_SERVICE, state="attached")
    first = requests.seen[-1]
    assert first["status"] == 200 and first["if_none_match"] is None
    assert first["encoding"] == "gzip"
    saved = js(page, READ_LOCALFORAGE if storage == "localforage" else READ_INDEXEDDB)
    assert saved["record"]["etag"] == first["etag"]
    assert len(saved["record"]["payload"]["models"]) > 500
    assert "description" not in saved["record"]["payload"]["models"][0]  # the list projection
    assert harness.service.token_for("default-user") not in json.dumps(
        saved
    )  # keyed by a hash, never the token
    page.close()

    # Next page load: the browser revalidates, the service answers 304, the saved copy stays.
    page, requests = load(context, harness)
    page.wait_for_selector(FROM_SERVICE, state="attached")
    again = requests.seen[-1]
    assert again == {"if_none_match": first["etag"], "status": 304, "etag": first["etag"], "encoding": None}
    assert "saved copy" not in page.text_content("#ngc_catalog_summary")
    page.close()

    # And when the service is slow to answer, ST's select is enriched from the saved copy meanwhile.
    page, requests = load(context, harness, hold=True)
    page.wait_for_selector(FROM_CACHE, state="attached")
    connect_nanogpt_list(page)
    page.wait_for_function(
        "[...document.querySelectorAll('#model_nanogpt_select option')].some(o => o.text.includes(' per 1M'))"
    )
    assert enriched_labels(page) > 400
    assert "saved copy" in page.text_content("#ngc_catalog_summary")
    assert len(requests.held) == 1 and requests.seen == []  # asked, not answered yet
    with page.expect_response(lambda r: is_catalog_request(r.request)):
        requests.release()
    page.wait_for_selector(FROM_SERVICE, state="attached")  # same ETag: confirmed, not re-read
    assert requests.seen[-1]["etag"] == first["etag"]
    assert "saved copy" not in page.text_content("#ngc_catalog_summary")
    page.close()


def test_changed_catalogue_replaces_the_saved_copy(context: Any, harness: Harness) -> None:
    page, requests = load(context, harness)
    page.wait_for_selector(FROM_SERVICE, state="attached")
    before = requests.seen[-1]["etag"]
    page.close()
    fake = harness.service.upstream.fake
    model_id = fake.ids("paid")[0]
    harness.service.upstream.call(lambda: fake.set_price(model_id, prompt=321.0))
    status, body = harness.service.request("POST", "/api/catalog/refresh")
    assert status == 200 and model_id in [c["id"] for c in body["diff"]["changed"]]

    page, requests = load(context, harness)
    page.wait_for_selector(FROM_SERVICE, state="attached")
    answer = requests.seen[-1]
    assert answer["if_none_match"] == before and answer["status"] == 200 and answer["etag"] != before
    saved = js(page, READ_LOCALFORAGE)
    assert saved["record"]["etag"] == answer["etag"]
    entry = next(m for m in saved["record"]["payload"]["models"] if m["id"] == model_id)
    assert entry["pricing"]["prompt"] == 321.0
    page.close()


def test_details_load_on_demand(context: Any, harness: Harness) -> None:
    page, _ = load(context, harness)
    page.wait_for_selector(FROM_SERVICE, state="attached")
    asked: list[str] = []
    page.on("request", lambda r: asked.append(r.url) if "/api/catalog/model" in r.url else None)
    open_drawer(page)
    page.click("#ngc_browse")
    page.wait_for_selector("dialog.popup .ngc-catalog .ngc-model")
    _, full = harness.service.request("GET", "/api/catalog?include_routers=false")
    described = next(m for m in full["models"] if m.get("description"))
    row = f'.ngc-catalog .ngc-model[data-id="{described["id"]}"]'
    page.fill('.ngc-catalog [data-f="q"]', described["id"])
    page.click(f'{row} button[data-act="info"]')
    page.wait_for_selector(f"{row} .ngc-model-description")
    assert page.text_content(f"{row} .ngc-model-description").strip() == described["description"].strip()
    assert page.get_attribute(f'{row} button[data-act="info"]', "aria-expanded") == "true"
    assert len(asked) == 1
    page.click(f'{row} button[data-act="info"]')  # closes; opening again needs no new request
    page.click(f'{row} button[data-act="info"]')
    page.wait_for_selector(f"{row} .ngc-model-description")
    assert len(asked) == 1
    page.close()


def test_no_storage_at_all_still_loads_the_catalogue(browser: Any, harness: Harness) -> None:
    harness.standin.with_localforage = False
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.add_init_script("Object.defineProperty(window, 'indexedDB', { value: undefined })")
    errors: list[str] = []
    try:
        for _ in range(2):
            page, requests = load(ctx, harness)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.wait_for_selector(FROM_SERVICE, state="attached")
            # Nothing saved: each page load waits for the service (the browser's own HTTP cache may still
            # turn the list into a 304), and nothing breaks.
            assert requests.seen[-1]["status"] in (200, 304)
            assert js(page, "document.querySelector('#ngc_catalog_summary').textContent").startswith(
                str(len(harness.service.request("GET", "/api/catalog?include_routers=false")[1]["models"]))
            )
            page.close()
        assert errors == []
    finally:
        ctx.close()
        harness.standin.with_localforage = True
