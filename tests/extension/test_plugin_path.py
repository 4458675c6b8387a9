"""The extension through ST's server plugin in real SillyTavern (newest): the plugin installed by our
installer (``--server-plugin --enable-server-plugins``), loaded by ST's own plugin loader, behind ST's own
session, CSRF check and whitelist; every call goes page -> ST -> plugin -> service on loopback.

Which path a call took is read from the page's own requests (``/api/plugins/nanogpt-companion/...`` vs the
service's loopback URL).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.extension.st_ui import oai, open_drawer, reveal, wait_catalog
from tests.extension.test_catalog_cache import FROM_SERVICE, Profile
from tests.extension.test_core_journeys import choose_another_value_first
from tests.fakes.service_fixtures import free_port
from tests.realst.browser import CHROMIUM, CHROMIUM_ARGS, STPage
from tests.realst.stack import CLEAN_OAI, RealStack, real_stack
from tests.realst.versions import NEWEST

VIA_PLUGIN = '#ngc_status_pill[data-status="connected"][data-via="plugin"]'
PLUGIN_PREFIX = "/api/plugins/nanogpt-companion"
TOKEN_FILE_URL = "**/user/files/nanogpt-companion.json"


@pytest.fixture(scope="module")
def plugin_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealStack]:
    with real_stack(
        tmp_path_factory.mktemp("st-plugin"),
        NEWEST,
        # The service is started by the stack (pointed at the fake); ST's own start of it is tested in
        # tests/st_server_plugin/test_real_st.py.
        install_args=("--server-plugin", "--enable-server-plugins", "--no-autostart"),
        # A LAN name the user listed, as ST's own host warning tells them to (the plugin's DNS-rebinding
        # guard answers only loopback names, IP addresses and these).
        config={"hostWhitelist.hosts": ["st.lan"]},
    ) as stack:
        yield stack


class Traffic:
    """The page's requests: those through the plugin and those straight to the service."""

    def __init__(self, page: STPage, service_url: str) -> None:
        self.plugin: list[tuple[str, str]] = []
        self.direct: list[str] = []
        self._service_url = service_url
        page.page.on("request", self._on_request)

    def _on_request(self, request: Any) -> None:
        url: str = request.url
        if PLUGIN_PREFIX in url:
            path = url.split(PLUGIN_PREFIX, 1)[1].split("?", 1)[0]
            self.plugin.append((request.method, path))
        elif url.startswith(self._service_url):
            self.direct.append(url)

    def paths(self) -> set[str]:
        return {p for _, p in self.plugin}


def _open(plugin_stack: RealStack, st_page_for: Any, **options: Any) -> tuple[STPage, Traffic]:
    assert plugin_stack.service is not None
    service_url = plugin_stack.service.url
    box: dict[str, Traffic] = {}
    extra = options.pop("before_load", None)

    def before_load(p: Any) -> None:
        box["t"] = Traffic(STPage(p, p.context, plugin_stack.url), service_url)
        if extra is not None:
            extra(p)

    page: STPage = st_page_for(plugin_stack, connected=False, before_load=before_load, **options)
    return page, box["t"]


def test_installer_set_up_st_for_the_plugin(plugin_stack: RealStack) -> None:
    assert plugin_stack.service is not None
    token = json.loads(plugin_stack.service.token_file("default-user").read_text())
    assert token["plugin"] is True
    assert (plugin_stack.st.folder / "plugins/nanogpt-companion/index.js").is_file()
    assert "enableServerPlugins: true" in plugin_stack.st.config_path.read_text()
    # ST's own plugin loader mounted it: its health answers through ST.
    status, body = plugin_stack.st.client().request("GET", PLUGIN_PREFIX + "/health")
    assert status == 200 and body["status"] == "ok"


def test_writes_without_sts_csrf_token_never_reach_the_plugin(plugin_stack: RealStack) -> None:
    client = plugin_stack.st.client()
    status, _ = client.request("POST", PLUGIN_PREFIX + "/api/events/ticket", {}, csrf=False)
    assert status == 403
    status, body = client.request("POST", PLUGIN_PREFIX + "/api/events/ticket", {})
    assert status == 200 and body.get("ticket")


def test_the_extension_works_through_the_plugin(plugin_stack: RealStack, st_page_for: Any) -> None:
    """With the plugin installed (the token file says so), the page talks only to ST: balance, catalogue,
    the event stream, a live fix and its undo (POSTs through ST's CSRF check)."""
    plugin_stack.seed_user(oai={**CLEAN_OAI, "nanogpt_model": plugin_stack.unused_model()})
    page, traffic = _open(plugin_stack, st_page_for, seed=False)
    page.page.wait_for_selector(VIA_PLUGIN, state="attached", timeout=60000)
    assert page.page.text_content("#ngc_status_pill") == "connected via ST plugin"
    open_drawer(page)
    page.page.wait_for_function("document.querySelector('#ngc_usd').textContent.startsWith('$')")
    wait_catalog(page)
    assert {"/health", "/api/events/ticket", "/api/events", "/api/account", "/api/catalog"} <= traffic.paths()
    page.screenshot("drawer-via-plugin.png", full_page=False)
    # A live fix arrives on the stream the plugin pipes through; the ack and the undo are POSTs.
    reveal(page, "#custom_prompt_post_processing")
    page.page.select_option("#custom_prompt_post_processing", "")
    page.page.wait_for_function(
        "document.querySelector('#custom_prompt_post_processing').value !== ''", timeout=20000
    )
    open_drawer(page)
    page.page.wait_for_selector("#ngc_undo:not([disabled])", timeout=15000)
    page.page.click("#ngc_undo")
    page.page.wait_for_function("document.querySelector('#custom_prompt_post_processing').value === ''")
    assert ("POST", "/api/doctor/ack") in traffic.plugin
    assert ("POST", "/api/doctor/undo") in traffic.plugin
    assert page.slash("/nano-sync").startswith("Catalogue synced")
    assert ("POST", "/api/catalog/refresh") in traffic.plugin
    assert traffic.direct == []


def test_saved_catalogue_is_confirmed_through_the_plugin_without_a_request(
    plugin_stack: RealStack, realst_browser: Any
) -> None:
    """The plugin passes compression and the event stream through: the service's gzip list on a first load;
    on the reload the hello names the saved copy's ETag and no catalogue request crosses ST at all (the
    plugin's own pass-through of validators and 304s: tests/st_server_plugin/test_real_st.py)."""
    plugin_stack.seed_user(oai=CLEAN_OAI)
    profile = Profile(realst_browser, plugin_stack)
    try:
        page, requests = profile.load()
        page.page.wait_for_selector(VIA_PLUGIN, state="attached", timeout=60000)
        page.page.wait_for_selector(FROM_SERVICE, state="attached", timeout=60000)
        first = requests.seen[-1]
        assert first["status"] == 200 and first["encoding"] == "gzip" and first["etag"]
        page.page.close()
        page, requests = profile.load()
        page.page.wait_for_selector(VIA_PLUGIN, state="attached", timeout=60000)
        page.page.wait_for_selector(FROM_SERVICE, state="attached", timeout=60000)
        assert requests.asked == 0
    finally:
        profile.close()


def test_direct_url_unreachable_falls_back_to_plugin(plugin_stack: RealStack, st_page_for: Any) -> None:
    """A token file without the plugin hint whose URL does not answer: the extension tries direct once,
    then finds the plugin, without a toast or a script error."""
    assert plugin_stack.service is not None
    token = plugin_stack.service.token_for("default-user")
    body = json.dumps(
        {"url": f"http://127.0.0.1:{free_port()}", "token": token, "version": "0.1.0", "api_version": 1}
    ).encode()

    def stale_token_file(p: Any) -> None:
        p.route(
            TOKEN_FILE_URL,
            lambda route: route.fulfill(status=200, body=body, content_type="application/json"),
        )

    page, _traffic = _open(plugin_stack, st_page_for, before_load=stale_token_file)
    page.page.wait_for_selector(VIA_PLUGIN, state="attached", timeout=60000)
    open_drawer(page)
    page.page.wait_for_function("document.querySelector('#ngc_usd').textContent.startsWith('$')")
    assert page.page.query_selector_all("#toast-container .toast") == []


def test_opened_from_another_device(
    plugin_stack: RealStack, realst_browser: Any, expect_problems: Any
) -> None:
    """ST opened as http://st.lan:<port>/ (a LAN name in hostWhitelist.hosts, not loopback): the extension
    goes straight to the plugin and never tries the service's loopback URL."""
    assert plugin_stack.service is not None
    plugin_stack.seed_user(oai={**CLEAN_OAI, "nanogpt_model": plugin_stack.unused_model()})
    args = [*CHROMIUM_ARGS, "--host-resolver-rules=MAP st.lan 127.0.0.1, MAP other.lan 127.0.0.1"]
    lan = realst_browser.browser_type.launch(executable_path=str(CHROMIUM), args=args)
    try:
        page = STPage.open(
            lan, f"http://st.lan:{plugin_stack.st.port}", width=400, height=800, wait_ready=False
        )
        traffic = Traffic(page, plugin_stack.service.url)
        page.wait_app_ready()
        page.page.wait_for_selector(VIA_PLUGIN, state="attached", timeout=60000)
        assert page.js("location.hostname") == "st.lan"
        open_drawer(page)
        page.page.wait_for_function("document.querySelector('#ngc_usd').textContent.startsWith('$')")
        choose_another_value_first(plugin_stack, page)  # "None" put back after a fix would be respected
        reveal(page, "#custom_prompt_post_processing")
        page.page.select_option("#custom_prompt_post_processing", "")
        page.page.wait_for_function(
            "document.querySelector('#custom_prompt_post_processing').value !== ''", timeout=20000
        )
        assert oai(page, "custom_prompt_post_processing") != ""
        page.screenshot("drawer-remote-400px.png", full_page=False)
        assert traffic.direct == []
        assert page.problems() == []
        page.close()

        # A name nobody listed (what a DNS-rebinding page would use): the plugin refuses it, and the panel
        # says why and what to do instead of "service not running".
        seen: dict[str, Traffic] = {}
        service_url = plugin_stack.service.url
        page = STPage.open(
            lan,
            f"http://other.lan:{plugin_stack.st.port}",
            width=400,
            height=800,
            before_load=lambda p: seen.setdefault("t", Traffic(STPage(p, p.context, ""), service_url)),
        )
        traffic = seen["t"]
        open_drawer(page)
        message = page.page.wait_for_selector("#ngc_status_message:has-text('hostWhitelist.hosts')")
        assert "other.lan" in message.inner_text()
        assert page.js("document.querySelector('#ngc_status_pill').dataset.status") == "not_running"
        page.screenshot("drawer-remote-unlisted-name.png", full_page=False)
        assert traffic.direct == [] and ("GET", "/health") in traffic.plugin
        page.close()
    finally:
        lan.close()


def test_service_down_behind_plugin_is_quiet_and_recovers(plugin_stack: RealStack, st_page_for: Any) -> None:
    """The service stops: the plugin answers 503, the pill says "service not running" without toasts or
    script errors; once the service is back the extension returns to the plugin path by itself."""
    port = plugin_stack.stop_service()
    try:
        page, traffic = _open(plugin_stack, st_page_for)
        page.page.wait_for_selector(
            '#ngc_status_pill[data-status="not_running"]', state="attached", timeout=30000
        )
        assert ("GET", "/health") in traffic.plugin
        assert page.page.query_selector_all("#toast-container .toast") == []
    finally:
        plugin_stack.start_service(port=port)
    # The next retry comes on the extension's backoff (1 s doubling, capped); wait for it, not a time.
    page.page.wait_for_selector(VIA_PLUGIN, state="attached", timeout=90000)
