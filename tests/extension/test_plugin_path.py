"""The extension in Chromium through ST's server plugin (issue 6): the same page, the same real service,
but every call goes page -> stand-in ST (same origin, ST's CSRF check) -> the real plugin in the Node
harness (``request.user`` set as ST does) -> the service on loopback.

The ST install here is set up with the real installer (``--server-plugin --enable-server-plugins``), so the
service writes ``"plugin": true`` into the token file and the harness runs the copy the installer placed
in ``<ST>/plugins/nanogpt-companion/``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.extension import test_extension as base
from tests.extension.conftest import CHROMIUM, CHROMIUM_ARGS, Harness, artifact, open_page
from tests.extension.standin_server import free_port
from tests.extension.test_catalog_cache import FROM_CACHE, FROM_SERVICE, load
from tests.fakes.service_fixtures import REPO, RunningService, running_stack
from tests.st_server_plugin.support import Harness as NodeHarness
from tests.st_server_plugin.support import start_harness, stop_harness

VIA_PLUGIN = '#ngc_status_pill[data-status="connected"][data-via="plugin"]'
PLUGIN_PREFIX = "/api/plugins/nanogpt-companion"


def install_plugin(st_dir: Path) -> str:
    """The README's command, as a user runs it."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "nanogpt_companion",
            "install-extension",
            "--sillytavern",
            str(st_dir),
            "--server-plugin",
            "--enable-server-plugins",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def service_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    """As the shared fixture, but with the extension and server plugin installed before the service starts."""
    with running_stack(
        tmp_path_factory.mktemp("plugin-stack"), prepare=lambda st: install_plugin(st.st_dir)
    ) as svc:
        yield svc


@pytest.fixture(scope="module")
def node_plugin(
    harness: Harness, service_stack: RunningService, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeHarness]:
    installed = service_stack.st_dir / "plugins" / "nanogpt-companion"
    node = start_harness(tmp_path_factory.mktemp("node"), service_stack.data_root, plugin_dir=installed)
    harness.standin.plugin_url = node.base
    try:
        yield node
    finally:
        harness.standin.plugin_url = None
        stop_harness(node)


@pytest.fixture(autouse=True)
def _through_plugin(node_plugin: NodeHarness, harness: Harness) -> Iterator[None]:
    """Every test here must have used the plugin, and the plugin must never print a token."""
    harness.standin.plugin_calls.clear()
    yield
    assert harness.standin.plugin_calls, "nothing went through the server plugin"
    out = node_plugin.output()
    for handle in ("default-user", "alice"):
        assert harness.service.token_for(handle) not in out


def plugin_paths(h: Harness) -> set[str]:
    return {p.removeprefix(PLUGIN_PREFIX) for _, p in h.standin.plugin_calls}


def direct_requests(page: Any, service_url: str) -> list[str]:
    """Requests the page sends to the service's loopback URL (recorded, then refused)."""
    seen: list[str] = []

    def refuse(route: Any) -> None:
        seen.append(route.request.url)
        route.abort("connectionrefused")

    page.context.route(f"{service_url}/**", refuse)
    return seen


# ----- set-up as the installer left it -----


def test_installer_marked_the_token_file_and_installed_the_plugin(harness: Harness) -> None:
    st_dir = harness.service.st_dir
    token = json.loads(harness.service.token_file("default-user").read_text())
    assert token["plugin"] is True
    assert (st_dir / "plugins/nanogpt-companion/index.js").is_file()
    assert "enableServerPlugins: true" in (st_dir / "config.yaml").read_text()
    # The autouse check wants one plugin call; the plugin's health through the stand-in is that call.
    status, _body = harness.loop.run(_get(harness.st_url + PLUGIN_PREFIX + "/health"))
    assert status == 200


async def _get(url: str) -> tuple[int, str]:
    from aiohttp import ClientSession

    async with ClientSession() as s, s.get(url) as r:
        return r.status, await r.text()


def test_writes_without_st_csrf_header_never_reach_the_plugin(harness: Harness) -> None:
    from aiohttp import ClientSession

    async def post() -> int:
        async with (
            ClientSession() as s,
            s.post(harness.st_url + PLUGIN_PREFIX + "/api/events/ticket", json={}) as r,
        ):
            return r.status

    before = harness.standin.csrf_rejections
    assert harness.loop.run(post()) == 403
    assert harness.standin.csrf_rejections == before + 1
    harness.loop.run(_get(harness.st_url + PLUGIN_PREFIX + "/health"))


# ----- the extension's features over the plugin path -----


def test_pill_names_the_plugin_path(page: Any, harness: Harness) -> None:
    page.wait_for_selector(VIA_PLUGIN, timeout=15000)
    assert page.text_content("#ngc_status_pill") == "connected via ST plugin"
    assert "server plugin" in (page.get_attribute("#ngc_status_pill", "title") or "")
    assert js(page, "nanogptCompanion.status()") == "connected"
    paths = plugin_paths(harness)
    # Health probe, SSE ticket (a POST: passed ST's CSRF check) and the event stream itself.
    assert {"/health", "/api/events/ticket"} <= paths
    assert "/api/events" in paths
    base.open_drawer(page)
    page.screenshot(path=artifact("drawer-via-plugin.png"), full_page=True)
    assert harness.console_errors() == []


def test_drawer_balance_and_quota_via_plugin(page: Any, harness: Harness) -> None:
    seen = direct_requests(page, harness.service.url)
    base.test_connected_drawer_shows_balance_quota_history_and_badge(page, harness)
    assert page.is_visible(VIA_PLUGIN)
    assert {"/api/account", "/api/account/history"} <= {p.split("?")[0] for p in plugin_paths(harness)}
    assert seen == []


def test_catalog_use_via_plugin(page: Any, harness: Harness) -> None:
    base.test_catalog_filter_and_use_selects_through_st_handler(page, harness)
    assert page.is_visible(VIA_PLUGIN)
    assert "/api/catalog" in {p.split("?")[0] for p in plugin_paths(harness)}


def test_saved_catalogue_is_revalidated_through_the_plugin(browser: Any, harness: Harness) -> None:
    """The plugin passes If-None-Match in and the ETag out, so a reload costs a 304 on this path too."""
    harness.reset_settings()
    context = browser.new_context()
    try:
        page, requests = load(context, harness)
        page.wait_for_selector(FROM_SERVICE, state="attached")
        assert page.is_visible(VIA_PLUGIN)
        first = requests.seen[-1]
        assert first["status"] == 200 and first["etag"]
        page.close()
        page, requests = load(context, harness)
        page.wait_for_selector(FROM_SERVICE, state="attached")
        assert requests.seen[-1]["if_none_match"] == first["etag"]
        assert requests.seen[-1]["status"] == 304
        assert page.query_selector(FROM_CACHE) is None
        assert "/api/catalog" in plugin_paths(harness)
    finally:
        context.close()


def test_live_fix_over_sse_and_undo_via_plugin(page: Any, harness: Harness) -> None:
    """The `fix` event arrives on the SSE stream the plugin pipes through; the ack and the undo are
    POSTs that pass ST's CSRF check."""
    base.test_live_fix_over_sse_changes_ppp_then_undo(page, harness)
    assert page.is_visible(VIA_PLUGIN)
    calls = harness.standin.plugin_calls
    assert ("POST", PLUGIN_PREFIX + "/api/doctor/ack") in calls
    assert ("POST", PLUGIN_PREFIX + "/api/doctor/undo") in calls


def test_fix_button_via_plugin(page: Any, harness: Harness) -> None:
    base.test_fix_button_asks_service_and_applies_live(page, harness)
    assert ("POST", PLUGIN_PREFIX + "/api/doctor/fix") in harness.standin.plugin_calls


def test_slash_commands_via_plugin(page: Any, harness: Harness) -> None:
    base.test_slash_commands_return_pipeable_values(page, harness)
    assert ("POST", PLUGIN_PREFIX + "/api/catalog/refresh") in harness.standin.plugin_calls


# ----- loopback out of reach -----


def test_direct_url_unreachable_falls_back_to_plugin(browser: Any, harness: Harness) -> None:
    """A token file without the plugin hint whose URL does not answer (as from a machine where the
    service's port is not the page's): the extension tries direct, then finds the plugin."""
    harness.reset_settings()
    token = harness.service.token_for("default-user")
    harness.standin.bootstrap_override = json.dumps(
        {"url": f"http://127.0.0.1:{free_port()}", "token": token, "version": "0.1.0", "api_version": 1}
    ).encode()
    page = open_page(browser, harness)
    try:
        page.wait_for_selector(VIA_PLUGIN, timeout=15000)
        base.open_drawer(page)
        page.wait_for_function("document.querySelector('#ngc_usd').textContent.startsWith('$')")
        # Only the browser's own line for the refused direct attempt; nothing from the extension.
        errors = harness.console_errors()
        assert [e for e in errors if not base.NETWORK_NOISE.match(e)] == []
        assert len(errors) <= 1
        assert page.query_selector_all("#toast-container .toast") == []
    finally:
        page.context.close()
        harness.standin.bootstrap_override = None


def test_opened_from_another_device(browser: Any, harness: Harness) -> None:
    """ST opened as http://st.lan:<port>/ (a LAN name, not loopback) with the service's loopback origin
    refused: the extension goes straight to the plugin and never tries 127.0.0.1."""
    # A model of its own: an undo in an earlier test declined the PPP fix for the fixture's model.
    _, cat = harness.service.request("GET", "/api/catalog?tier=v1")
    harness.reset_settings(nanogpt_model=cat["models"][11]["id"])
    harness.console.clear()
    harness.page_errors.clear()
    port = harness.st_url.rsplit(":", 1)[1]
    # A second Chromium from the same Playwright: the name must resolve from process start.
    args = [*CHROMIUM_ARGS, "--host-resolver-rules=MAP st.lan 127.0.0.1"]
    lan = browser.browser_type.launch(executable_path=str(CHROMIUM), args=args)
    try:
        page = lan.new_context(viewport={"width": 400, "height": 800}).new_page()
        page.on("console", lambda msg: harness.console.append(msg))  # noqa: PLW0108
        page.on("pageerror", lambda exc: harness.page_errors.append(str(exc)))
        seen = direct_requests(page, harness.service.url)
        page.goto(f"http://st.lan:{port}/")
        page.wait_for_selector(VIA_PLUGIN, timeout=15000)
        assert js(page, "location.hostname") == "st.lan"
        base.open_drawer(page)
        page.wait_for_function("document.querySelector('#ngc_usd').textContent.startsWith('$')")
        # The live-fix round trip works from "the phone" too.
        page.select_option("#custom_prompt_post_processing", "")
        page.wait_for_function(
            "document.querySelector('#custom_prompt_post_processing').value !== ''", timeout=15000
        )
        page.screenshot(path=artifact("drawer-remote-400px.png"), full_page=True)
        assert seen == []
        assert harness.console_errors() == []
    finally:
        lan.close()


def js(page: Any, expr: str, arg: Any = None) -> Any:
    return page.evaluate(expr, arg)


def test_service_down_behind_plugin_is_quiet_and_recovers_via_plugin(browser: Any, harness: Harness) -> None:
    """The plugin answers 503 (its token file points at a port where nothing listens): the pill says
    "service not running" without toasts or script errors, and once the service is reachable again the
    extension is back on the plugin path by itself (the plugin is not written off for minutes)."""
    token_file = harness.service.token_file("default-user")
    good = token_file.read_bytes()
    broken = json.loads(good)
    broken["url"] = f"http://127.0.0.1:{free_port()}"
    token_file.write_text(json.dumps(broken))
    harness.reset_settings()
    page = open_page(browser, harness)
    try:
        page.wait_for_selector('#ngc_status_pill[data-status="not_running"]', timeout=15000)
        assert ("GET", PLUGIN_PREFIX + "/health") in harness.standin.plugin_calls
        page.wait_for_timeout(1000)
        assert page.query_selector_all("#toast-container .toast") == []
        errors = harness.console_errors()
        assert [e for e in errors if not base.NETWORK_NOISE.match(e)] == []
        assert len(errors) <= 4
        token_file.write_bytes(good)
        # The next retry comes on the extension's backoff (1 s doubling, +-20 % jitter); by now it may be
        # 16 s or even 32 s away on a busy machine. Allow for that rather than race it.
        page.wait_for_selector(VIA_PLUGIN, timeout=45000)
    finally:
        page.context.close()
        if token_file.read_bytes() != good:
            token_file.write_bytes(good)
