"""The catalogue kept in the browser between page loads and revalidated by the browser with the service's
ETag, in real SillyTavern (newest): several page loads in one browser profile, as a user reloading ST."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.extension.st_ui import connect_builtin, open_drawer
from tests.realst.browser import PAGE_INIT_SCRIPT, STPage
from tests.realst.fixtures import check_page
from tests.realst.stack import CLEAN_OAI, DEFAULT_USER, RealStack

CATALOG_REQUEST = "/api/catalog?fields=summary"
FROM_CACHE = '#ngc_catalog_summary[data-source="cache"]'
FROM_SERVICE = '#ngc_catalog_summary[data-source="service"]'
READ_LOCALFORAGE = """async () => {
    const db = SillyTavern.libs.localforage.createInstance(
        { name: 'nanogpt-companion', storeName: 'catalog' });
    const owners = await db.getItem('owners');
    return { owners, record: owners ? await db.getItem('catalog:' + owners[0]) : null };
}"""


def is_catalog_request(request: Any) -> bool:
    return CATALOG_REQUEST in request.url and request.method == "GET"


class CatalogRequests:
    """Every GET of the catalogue list as it crossed the wire (Chromium's DevTools protocol: a 304 the
    browser's cache turned into a 200 for the page is still a 304 here); ``hold`` keeps the requests
    unanswered until ``release()`` (request interception: the browser's HTTP cache is off then)."""

    def __init__(self, page: Any, *, hold: bool = False) -> None:
        self.held: list[Any] = []
        self.hold = hold
        self._requests: dict[str, dict[str, Any]] = {}
        cdp = page.context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.on("Network.requestWillBeSent", self._request)
        cdp.on("Network.requestWillBeSentExtraInfo", self._sent)
        cdp.on("Network.responseReceivedExtraInfo", self._received)
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


class Profile:
    """One browser profile (its IndexedDB and HTTP cache survive between the pages it opens)."""

    def __init__(self, browser: Any, stack: RealStack, *, init_script: str = "") -> None:
        self.stack = stack
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.context.add_init_script(PAGE_INIT_SCRIPT + init_script)
        self.pages: list[STPage] = []

    def load(self, *, hold: bool = False) -> tuple[STPage, CatalogRequests]:
        """Open ST and wait until the catalogue request was answered; with ``hold``, only until it was
        sent (it stays unanswered until ``requests.release()``)."""
        page = self.context.new_page()
        st_page = STPage(page, self.context, self.stack.url)
        page.on("pageerror", lambda exc: st_page.page_errors.append(str(exc)))
        self.pages.append(st_page)
        requests = CatalogRequests(page, hold=hold)
        if hold:
            with page.expect_request(is_catalog_request, timeout=60000):
                page.goto(self.stack.url + "/")
        else:
            with page.expect_response(lambda r: is_catalog_request(r.request), timeout=60000):
                page.goto(self.stack.url + "/")
        st_page.wait_app_ready()
        return st_page, requests

    def close(self) -> None:
        try:
            for page in self.pages:
                check_page(page)
        finally:
            self.context.close()


@pytest.fixture
def profile(realst_browser: Any, stack: RealStack) -> Iterator[Profile]:
    stack.seed_user(DEFAULT_USER, oai=CLEAN_OAI)
    p = Profile(realst_browser, stack)
    try:
        yield p
    finally:
        p.close()


def test_reload_shows_the_saved_catalogue_at_once_then_gets_a_304(profile: Profile, stack: RealStack) -> None:
    assert stack.service is not None
    page, requests = profile.load()
    page.page.wait_for_selector(FROM_SERVICE, state="attached", timeout=30000)
    first = requests.seen[-1]
    assert first["status"] == 200 and first["if_none_match"] is None
    assert first["encoding"] == "gzip"
    saved = page.js(READ_LOCALFORAGE)  # ST's own localforage holds it
    assert saved["record"]["etag"] == first["etag"]
    assert len(saved["record"]["payload"]["models"]) > 300
    assert "description" not in saved["record"]["payload"]["models"][0]  # the list projection
    assert stack.service.token_for(DEFAULT_USER) not in json.dumps(saved)  # keyed by a hash, not the token
    page.page.close()

    # Reload: the browser revalidates, the service answers 304, the saved copy stays.
    page, requests = profile.load()
    page.page.wait_for_selector(FROM_SERVICE, state="attached", timeout=30000)
    assert requests.seen[-1] == {
        "if_none_match": first["etag"],
        "status": 304,
        "etag": first["etag"],
        "encoding": None,
    }
    assert "saved copy" not in (page.page.text_content("#ngc_catalog_summary") or "")
    page.page.close()

    # The service is slow to answer: ST's own model select is enriched from the saved copy meanwhile.
    page, requests = profile.load(hold=True)
    page.page.wait_for_selector(FROM_CACHE, state="attached", timeout=30000)
    connect_builtin(page)
    page.page.wait_for_function(
        "[...document.querySelectorAll('#model_nanogpt_select option')]"
        ".filter(o => o.text.includes(' per 1M')).length > 100"
    )
    assert "saved copy" in (page.page.text_content("#ngc_catalog_summary") or "")
    assert len(requests.held) == 1 and requests.seen == []  # asked, not answered yet
    with page.page.expect_response(lambda r: is_catalog_request(r.request)):
        requests.release()
    page.page.wait_for_selector(FROM_SERVICE, state="attached")  # same ETag: confirmed, not re-read
    assert requests.seen[-1]["etag"] == first["etag"]


def test_changed_catalogue_replaces_the_saved_copy(profile: Profile, stack: RealStack) -> None:
    assert stack.service is not None
    page, requests = profile.load()
    page.page.wait_for_selector(FROM_SERVICE, state="attached", timeout=30000)
    before = requests.seen[-1]["etag"]
    page.page.close()
    fake = stack.upstream.fake
    model_id = fake.ids("paid")[0]
    old_price = fake.model(model_id)["pricing"]["prompt"]
    stack.upstream.call(lambda: fake.set_price(model_id, prompt=321.0))
    try:
        status, body = stack.service.request("POST", "/api/catalog/refresh")
        assert status == 200 and model_id in [c["id"] for c in body["diff"]["changed"]]
        page, requests = profile.load()
        page.page.wait_for_selector(FROM_SERVICE, state="attached", timeout=30000)
        answer = requests.seen[-1]
        assert answer["if_none_match"] == before and answer["status"] == 200 and answer["etag"] != before
        saved = page.js(READ_LOCALFORAGE)
        assert saved["record"]["etag"] == answer["etag"]
        entry = next(m for m in saved["record"]["payload"]["models"] if m["id"] == model_id)
        assert entry["pricing"]["prompt"] == 321.0
    finally:  # the stack is shared by the session: put the fake back
        stack.upstream.call(lambda: fake.set_price(model_id, prompt=old_price))
        stack.service.request("POST", "/api/catalog/refresh")


def test_storage_fallbacks(st_page: STPage) -> None:
    """The cache module in a real ST page: without localforage it uses IndexedDB itself; without either it
    keeps nothing and says so; it keeps the last few ST users' copies and never the token."""
    result = st_page.js(
        """async (base) => {
        const { CatalogCache, ownerKey, KEEP_OWNERS } = await import(base + 'catalog-cache.js');
        const idb = CatalogCache.open({ indexedDB: window.indexedDB });
        const none = CatalogCache.open({});
        const payload = { models: [{ id: 'v/m', name: 'M' }], fetched_at: 1 };
        const owners = Array.from({ length: KEEP_OWNERS + 2 },
            (_, i) => ownerKey('http://127.0.0.1:8719', 'tok' + i));
        for (const o of owners) await idb.save(o, '"tag-' + o + '"', payload);
        const kept = [];
        for (const o of owners) kept.push((await idb.load(o))?.etag ?? null);
        return {
            kinds: [idb.kind, none.kind, CatalogCache.open(globalThis).kind],
            kept,
            owners,
            noneSaved: await none.save(owners[0], '"x"', payload),
            noneLoaded: await none.load(owners[0]),
            stable: ownerKey('u', 'secret-token') === ownerKey('u', 'secret-token'),
            leaks: ownerKey('u', 'secret-token').includes('secret'),
            other: ownerKey('u', 'a') !== ownerKey('u', 'b'),
        };
    }""",
        "/scripts/extensions/third-party/nanogpt-companion/src/",
    )
    assert result["kinds"] == ["indexeddb", "none", "localforage"]
    owners = result["owners"]
    # The newest KEEP_OWNERS owners are kept, the oldest dropped.
    assert result["kept"][-4:] == [f'"tag-{o}"' for o in owners[-4:]]
    assert result["kept"][:2] == [None, None]
    assert result["noneSaved"] is False and result["noneLoaded"] is None
    assert result["stable"] and not result["leaks"] and result["other"]


def test_details_load_on_demand(profile: Profile, stack: RealStack) -> None:
    assert stack.service is not None
    _, full = stack.service.request("GET", "/api/catalog?include_routers=false")
    described = next(m for m in full["models"] if m.get("description") and not m.get("thinking_base"))
    page, _ = profile.load()
    page.page.wait_for_selector(FROM_SERVICE, state="attached", timeout=30000)
    asked: list[str] = []
    page.page.on("request", lambda r: asked.append(r.url) if "/api/catalog/model" in r.url else None)
    open_drawer(page)
    page.page.click("#ngc_browse")
    page.page.wait_for_selector("dialog.popup .ngc-catalog .ngc-model")
    page.page.fill('.ngc-catalog [data-f="q"]', described["id"])
    row = f'.ngc-catalog .ngc-model[data-id="{described["id"]}"]'
    page.page.click(f'{row} button[data-act="info"]')
    page.page.wait_for_selector(f"{row} .ngc-model-description")
    shown = page.page.text_content(f"{row} .ngc-model-description") or ""
    assert shown.strip() == described["description"].strip()
    assert page.page.get_attribute(f'{row} button[data-act="info"]', "aria-expanded") == "true"
    assert len(asked) == 1
    page.page.click(f'{row} button[data-act="info"]')  # closes; opening again needs no new request
    page.page.click(f'{row} button[data-act="info"]')
    page.page.wait_for_selector(f"{row} .ngc-model-description")
    assert len(asked) == 1
