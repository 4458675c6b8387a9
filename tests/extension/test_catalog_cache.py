"""The catalogue kept in the browser between page loads, confirmed by the ETag the service's event stream
names on connecting (no request while unchanged) or revalidated by the browser with it when it changed, in
real SillyTavern (newest): several page loads in one browser profile, as a user reloading ST."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.extension.st_ui import open_drawer, open_top_drawer
from tests.realst.browser import PAGE_INIT_SCRIPT, STPage
from tests.realst.fixtures import check_page
from tests.realst.stack import CLEAN_OAI, DEFAULT_USER, RealStack

CATALOG_REQUEST = "/api/catalog?fields=summary"
FROM_CACHE = '#ngc_catalog_summary[data-source="cache"]'
FROM_SERVICE = '#ngc_catalog_summary[data-source="service"]'
EVENT_TICKET = "**/api/events/ticket"  # held: the event stream (and so the page's data loading) waits
READ_LOCALFORAGE = """async () => {
    const db = SillyTavern.libs.localforage.createInstance(
        { name: 'nanogpt-companion', storeName: 'catalog' });
    const owners = await db.getItem('owners');
    return { owners, record: owners ? await db.getItem('catalog:' + owners[0]) : null };
}"""


class CatalogRequests:
    """Every GET of the catalogue list as it crossed the wire (Chromium's DevTools protocol: a 304 the
    browser's cache turned into a 200 for the page is still a 304 here); ``hold`` (a URL glob) keeps the
    requests to those URLs unanswered until ``release()`` (request interception: the browser's HTTP cache
    is off then)."""

    def __init__(self, page: Any, *, hold: str | None = None) -> None:
        self.held: list[Any] = []
        self.hold = hold is not None
        self.asked = 0  # catalogue requests the page sent (counted when sent, before any answer)
        self._requests: dict[str, dict[str, Any]] = {}
        cdp = page.context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.on("Network.requestWillBeSent", self._request)
        cdp.on("Network.requestWillBeSentExtraInfo", self._sent)
        cdp.on("Network.responseReceivedExtraInfo", self._received)
        if hold is not None:
            page.route(hold, self._route)

    # The protocol's events for one request come in no fixed order: keep what each says by request id.
    def _entry(self, ev: dict[str, Any]) -> dict[str, Any]:
        return self._requests.setdefault(ev["requestId"], {"if_none_match": None})

    def _request(self, ev: dict[str, Any]) -> None:
        if CATALOG_REQUEST in ev["request"]["url"] and ev["request"]["method"] == "GET":
            self._entry(ev)["catalog"] = True
            self.asked += 1

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
        if self.hold and route.request.method != "OPTIONS":
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

    def load(self, *, hold: str | None = None) -> tuple[STPage, CatalogRequests]:
        """Open ST and wait until it is ready; with ``hold`` (a URL glob), the first request to it was sent
        (it stays unanswered until ``requests.release()``)."""
        page = self.context.new_page()
        st_page = STPage(page, self.context, self.stack.url)
        page.on("pageerror", lambda exc: st_page.page_errors.append(str(exc)))
        self.pages.append(st_page)
        requests = CatalogRequests(page, hold=hold)
        if hold:
            with page.expect_request(hold, timeout=60000):
                page.goto(self.stack.url + "/")
        else:
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


def test_reload_shows_the_saved_catalogue_at_once_and_asks_nothing_while_unchanged(
    profile: Profile, stack: RealStack
) -> None:
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

    # Reload: the event stream's hello names the saved copy's ETag, so the copy is confirmed without a
    # catalogue request (not even a 304). The summary's source turns to "service" only once the page took
    # the hello: the page had its chance to ask.
    page, requests = profile.load()
    page.page.wait_for_selector(FROM_SERVICE, state="attached", timeout=30000)
    assert requests.asked == 0
    assert "saved copy" not in (page.page.text_content("#ngc_catalog_summary") or "")
    page.page.close()

    # The service is slow to answer (its event stream not open yet): ST's own model select is enriched from
    # the saved copy meanwhile. (The Custom source on a NanoGPT address: ST 1.18+ draws its built-in
    # NanoGPT rows itself, with prices, so the extension leaves those labels alone; see
    # st-extension/src/enrich-selects.js.)
    stack.seed_user(
        DEFAULT_USER,
        oai={
            **CLEAN_OAI,
            "chat_completion_source": "custom",
            "custom_url": "https://nano-gpt.com/api/subscription/v1",
            "custom_model": stack.unused_model(),
        },
    )
    page, requests = profile.load(hold=EVENT_TICKET)
    page.page.wait_for_selector(FROM_CACHE, state="attached", timeout=30000)
    open_top_drawer(page, "api")
    page.page.click("#api_button_openai")
    page.page.wait_for_function(
        "[...document.querySelectorAll('#model_custom_select option')]"
        ".filter(o => o.text.includes(' per 1M')).length > 100"
    )
    assert "saved copy" in (page.page.text_content("#ngc_catalog_summary") or "")
    assert len(requests.held) == 1  # the service is being asked, and has not answered
    requests.release()
    page.page.wait_for_selector(FROM_SERVICE, state="attached", timeout=30000)  # confirmed by the hello
    assert requests.asked == 0


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
    keeps nothing and says so; it keeps the last few ST users' copies and never the token; it tells a
    saved copy's ETag from the one the hello names."""
    result = st_page.js(
        """async (base) => {
        const { CatalogCache, ownerKey, KEEP_OWNERS, sameRepresentation } =
            await import(base + 'catalog-cache.js');
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
            // The hello names the identity tag; the saved copy carries the gzip one (or a weak form).
            same: [['"a"', '"a.gz"'], ['W/"a"', '"a"'], ['"a"', '"b.gz"'], [null, null], ['""', '""'],
                ['"a"', 7]].map(([x, y]) => sameRepresentation(x, y)),
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
    assert result["same"] == [True, True, False, False, False, False]


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
