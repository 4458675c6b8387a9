"""The ST extension in headless Chromium: the real extension files, the ST stand-in page, the real
companion service and the fake NanoGPT upstream (``service_stack``)."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from aiohttp import web

from tests.extension.conftest import Harness, artifact, open_page
from tests.extension.standin_server import free_port

CONNECTED = '#ngc_status_pill[data-status="connected"]'
NETWORK_NOISE = re.compile(r"^Failed to load resource: ")


def wait_connected(page: Any) -> None:
    page.wait_for_selector(CONNECTED, timeout=15000)


def open_drawer(page: Any) -> None:
    if not page.is_visible("#ngc_drawer_content"):
        page.click(".ngc-drawer .inline-drawer-header")
    page.wait_for_selector("#ngc_drawer_content", state="visible")


def js(page: Any, expr: str, arg: Any = None) -> Any:
    return page.evaluate(expr, arg)


def slash(page: Any, command: str) -> str:
    result = js(
        page, "async (c) => (await SillyTavern.getContext().executeSlashCommandsWithOptions(c)).pipe", command
    )
    return str(result)


def bootstrap(url: str, token: str, api_version: int = 1) -> bytes:
    return json.dumps({"url": url, "token": token, "version": "0.1.0", "api_version": api_version}).encode()


def connect_nanogpt_list(page: Any) -> int:
    """Press ST's Connect and wait for ST's own fill of the NanoGPT select."""
    page.click("#api_button_openai")
    page.wait_for_function("document.querySelectorAll('#model_nanogpt_select option').length > 100")
    return int(js(page, "document.querySelectorAll('#model_nanogpt_select option').length"))


# ----- connection and status states -----


def test_connected_drawer_shows_balance_quota_history_and_badge(page: Any, harness: Harness) -> None:
    wait_connected(page)
    status, account = harness.service.request("GET", "/api/account")
    assert status == 200
    usd = account["balance"]["usd"]
    open_drawer(page)
    page.wait_for_function(f"document.querySelector('#ngc_usd').textContent === '${usd:.2f}'")
    assert page.text_content("#ngc_xno") == f"{account['balance']['xno']:.2f} XNO"
    assert page.text_content("#ngc_sub_state") == (
        "active" if account["subscription"]["active"] else "inactive"
    )
    # One bar per configured quota window, with the service's fraction as aria-valuenow.
    buckets = account["subscription"]["buckets"]
    bars = page.query_selector_all(".ngc-quota-row")
    assert {b.get_attribute("data-quota") for b in bars} == set(buckets)
    weekly = buckets["weekly_input_tokens"]
    bar = page.query_selector('[data-quota="weekly_input_tokens"] .ngc-bar')
    assert bar.get_attribute("aria-valuenow") == str(round(min(1, weekly["percent_used"]) * 100))
    # History: either a sparkline with one hover target per point or the explicit "not enough" note.
    _, hist = harness.service.request("GET", "/api/account/history?days=7")
    usable = [p for p in hist["points"] if p.get("usd") is not None]
    if len(usable) >= 2:
        assert len(page.query_selector_all("#ngc_history circle")) == len(usable)
    else:
        assert page.is_visible(".ngc-history-empty")
    badge = page.text_content("#ngc_badge")
    assert f"${usd:.2f}" in badge
    page.screenshot(path=artifact("drawer.png"), full_page=True)
    page.locator("#ngc_badge").screenshot(path=artifact("badge.png"))
    # Toggling the badge off removes it and persists the choice in ST's extension settings.
    page.uncheck("#ngc_show_badge")
    assert page.query_selector("#ngc_badge") is None
    assert js(page, "SillyTavern.getContext().extensionSettings.nanogpt_companion.show_badge") is False
    assert harness.console_errors() == []


def test_history_sparkline_hover_shows_value(page: Any, harness: Harness) -> None:
    """The sparkline draws one hover/focus target per point and shows its value (the stack's history may
    hold a single point, so the view is driven directly through its module here)."""
    wait_connected(page)
    open_drawer(page)
    points = [{"t": 1_790_000_000 + i * 86400, "usd": v} for i, v in enumerate([140.0, 135.5, 129.47])]
    # Drive the view through its module, as the app does after an account event.
    js(
        page,
        """async (p) => {
        const m = await import('/scripts/extensions/third-party/nanogpt-companion/src/account-view.js');
        const root = document.getElementById('ngc_drawer_root');
        const adapter = { t: (s) => s, missing: [], mountBadge: () => false, toast: () => {} };
        new m.AccountView({ root, adapter }).renderHistory(p);
    }""",
        points,
    )
    circles = page.query_selector_all("#ngc_history circle")
    assert len(circles) == 3
    circles[1].focus()
    assert page.text_content("#ngc_history_value").startswith("$135.50")


def test_service_not_running_is_quiet(browser: Any, harness: Harness) -> None:
    harness.reset_settings()
    harness.standin.bootstrap_override = bootstrap(f"http://127.0.0.1:{free_port()}", "x" * 43)
    page = open_page(browser, harness)
    try:
        page.wait_for_selector('#ngc_status_pill[data-status="not_running"]', timeout=15000)
        open_drawer(page)
        msg = page.text_content("#ngc_status_message")
        assert "nanogpt-companion serve --sillytavern <path to SillyTavern>" in msg
        page.wait_for_timeout(1500)
        # No toasts, no script errors; only the browser's own line for the refused connection attempts,
        # and those are spaced out by the backoff (not a storm).
        assert page.query_selector_all("#toast-container .toast") == []
        errors = harness.console_errors()
        assert [e for e in errors if not NETWORK_NOISE.match(e)] == []
        assert len(errors) <= 3
        assert page.text_content("#ngc_badge").strip().endswith("service not running")
        page.screenshot(path=artifact("drawer-service-down.png"), full_page=True)
        # The service comes up (its token file now points at it): the extension reconnects on its own.
        harness.standin.bootstrap_override = harness.service.token_file("default-user").read_bytes()
        # The next retry comes on the backoff (1 s doubling, +-20 % jitter): allow a late one.
        page.wait_for_selector(CONNECTED, timeout=45000)
        page.wait_for_function("document.querySelector('#ngc_usd').textContent.startsWith('$')")
        assert page.is_visible("#ngc_account")
    finally:
        page.context.close()
        harness.standin.bootstrap_override = None


def test_no_token_file_means_not_running(browser: Any, harness: Harness) -> None:
    harness.reset_settings()
    harness.standin.bootstrap_override = b"{}"
    page = open_page(browser, harness)
    try:
        page.wait_for_selector('#ngc_status_pill[data-status="not_running"]', timeout=15000)
        assert harness.page_errors == []
    finally:
        page.context.close()
        harness.standin.bootstrap_override = None


def test_bad_token_is_reported(browser: Any, harness: Harness) -> None:
    harness.reset_settings()
    harness.standin.bootstrap_override = bootstrap(harness.service.url, "not-the-token-" + "x" * 29)
    page = open_page(browser, harness)
    try:
        page.wait_for_selector('#ngc_status_pill[data-status="token_rejected"]', timeout=15000)
        open_drawer(page)
        assert "rejected" in page.text_content("#ngc_status_message")
        assert harness.page_errors == []
    finally:
        page.context.close()
        harness.standin.bootstrap_override = None


def test_old_service_is_reported(browser: Any, harness: Harness) -> None:
    """A service that speaks an older api_version than the extension needs."""

    async def health(_: web.Request) -> web.Response:
        resp = web.json_response({"status": "ok", "version": "0.0.1", "api_version": 0, "upstream": {}})
        resp.headers["Access-Control-Allow-Origin"] = harness.service.st_origin
        return resp

    app = web.Application()
    app.router.add_get("/health", health)
    url = harness.loop.serve(app, free_port())
    harness.reset_settings()
    harness.standin.bootstrap_override = bootstrap(url, "t" * 43)
    page = open_page(browser, harness)
    try:
        page.wait_for_selector('#ngc_status_pill[data-status="too_old"]', timeout=15000)
        open_drawer(page)
        assert "0.0.1" in page.text_content("#ngc_status_message")
    finally:
        page.context.close()
        harness.standin.bootstrap_override = None


# ----- catalogue -----


def test_catalog_filter_and_use_selects_through_st_handler(page: Any, harness: Harness) -> None:
    wait_connected(page)
    open_drawer(page)
    page.click("#ngc_browse")
    page.wait_for_selector("dialog.popup .ngc-catalog .ngc-model")
    total = len(page.query_selector_all(".ngc-catalog .ngc-model"))
    assert total > 300
    page.select_option('.ngc-catalog [data-f="tier"]', "subscription")
    rows = page.query_selector_all(".ngc-catalog .ngc-model")
    assert 0 < len(rows) < total
    assert all(r.query_selector(".ngc-tag-sub") for r in rows)
    page.check('.ngc-catalog [data-f="vision"]')
    vision_rows = page.query_selector_all(".ngc-catalog .ngc-model")
    assert 0 < len(vision_rows) <= len(rows)
    page.uncheck('.ngc-catalog [data-f="vision"]')
    page.select_option('.ngc-catalog [data-f="tier"]', "")
    page.fill('.ngc-catalog [data-f="q"]', "glm")
    ids = [r.get_attribute("data-id") for r in page.query_selector_all(".ngc-catalog .ngc-model")]
    assert ids and all(
        "glm" in i.lower() or "glm" in (page.text_content(f'.ngc-model[data-id="{i}"]') or "").lower()
        for i in ids
    )
    page.select_option('.ngc-catalog [data-f="sort"]', "price")
    page.screenshot(path=artifact("catalog-popup.png"))
    # A model ST's own list (NanoGPT's v1 list) has; the merged catalogue also holds tier-only models.
    st_ids = set(
        js(page, "fetch('/standin/models.json').then(r => r.json()).then(d => d.data.map(m => m.id))")
    )
    shown = [
        r.get_attribute("data-id")
        for r in page.query_selector_all(".ngc-catalog .ngc-model:not(.ngc-variant)")
    ]
    target = next(i for i in shown if i in st_ids)
    before = js(page, "window.stStandIn.handlerCalls['#model_nanogpt_select:change'] || 0")
    page.click(f'.ngc-catalog button[data-act="use"][data-id="{target}"]')
    # Built-in source with an empty list: the extension pressed Connect, ST filled the list, then the
    # option was chosen through ST's change handler, which updated oai_settings and emitted the event.
    page.wait_for_function(
        "(id) => SillyTavern.getContext().chatCompletionSettings.nanogpt_model === id", arg=target
    )
    assert js(page, "window.stStandIn.connectClicks.openai") >= 1
    assert js(page, "window.stStandIn.handlerCalls['#model_nanogpt_select:change']") > before
    assert page.eval_on_selector("#model_nanogpt_select", "el => el.value") == target
    events = js(
        page, "window.stStandIn.events.filter(e => e[0] === 'chatcompletion_model_changed').map(e => e[1])"
    )
    assert events[-1] == target
    assert harness.console_errors() == []


def test_thinking_variants_fold_under_base(page: Any) -> None:
    wait_connected(page)
    open_drawer(page)
    page.click("#ngc_browse")
    page.wait_for_selector("dialog.popup .ngc-catalog .ngc-model")
    toggle = page.query_selector('.ngc-catalog button[data-act="variants"]')
    assert toggle is not None, "the catalogue has thinking variants; they must be folded under a base"
    base = toggle.get_attribute("data-id")
    assert page.query_selector_all(".ngc-catalog .ngc-variant") == []
    toggle.click()
    variants = page.query_selector_all(".ngc-catalog .ngc-variant")
    assert variants
    assert all(
        v.get_attribute("data-id").startswith(base.split(":")[0].removesuffix("-thinking")) for v in variants
    )


# ----- ST's own select -----


def test_enrichment_of_600_option_select_keeps_values_and_is_idempotent(page: Any) -> None:
    wait_connected(page)
    page.wait_for_function("document.querySelector('#ngc_catalog_summary').textContent.length > 0")
    js(page, "SillyTavern.getContext().chatCompletionSettings.group_models = true")
    n = connect_nanogpt_list(page)
    assert n >= 500
    page.wait_for_function(
        "[...document.querySelectorAll('#model_nanogpt_select option')].some(o => o.text.includes(' per 1M'))"
    )
    snap = js(
        page,
        """() => [...document.querySelectorAll('#model_nanogpt_select option')].map(o => ({
        v: o.value, t: o.text,
        g: o.parentElement.tagName === 'OPTGROUP' ? o.parentElement.label : null }))""",
    )
    models = js(page, "fetch('/standin/models.json').then(r => r.json()).then(d => d.data.map(m => m.id))")
    assert {o["v"] for o in snap} == set(models), "option values must stay ST's model ids"
    assert all(o["g"] for o in snap), "ST's vendor optgroups must survive"
    enriched = [o for o in snap if " per 1M" in o["t"]]
    assert len(enriched) > len(snap) * 0.9
    assert any(" · SUB" in o["t"] for o in snap)
    # ST refills the select on every Connect: labels must not stack suffixes.
    chosen = json.dumps(enriched[0]["v"])
    js(page, f"SillyTavern.getContext().chatCompletionSettings.nanogpt_model = {chosen}")
    connect_nanogpt_list(page)
    page.wait_for_timeout(100)
    again = js(page, "[...document.querySelectorAll('#model_nanogpt_select option')].map(o => o.text)")
    assert again == [o["t"] for o in snap]
    assert all(t.count(" per 1M") <= 1 for t in again)
    # ST's select2 shows the selected option's cached text while closed; ST's fill caches it (its own
    # `.val().trigger('change')`) before the enrichment runs, so the cache must be brought in step.
    selected = js(page, "document.querySelector('#model_nanogpt_select').selectedOptions[0].text")
    assert " per 1M" in selected
    assert page.text_content("#select2-model_nanogpt_select-container") == selected
    # ST's /model-style searches go through select2's cache too: it must hold the enriched labels.
    cached = js(
        page,
        """() => { const u = jQuery.fn.select2.amd.require('select2/utils');
        return [...document.querySelectorAll('#model_nanogpt_select option')]
            .map(o => u.GetData(o, 'data')).filter(Boolean).map(d => d.text) }""",
    )
    assert cached and all(" per 1M" in t for t in cached if t)
    # "Only my subscription" hides the rest but never the selected option; turning it off restores all.
    open_drawer(page)
    page.check("#ngc_only_subscription")
    hidden = js(
        page, "[...document.querySelectorAll('#model_nanogpt_select option')].filter(o => o.hidden).length"
    )
    assert 0 < hidden < n
    assert js(page, "document.querySelector('#model_nanogpt_select').selectedOptions[0].hidden") is False
    # select2 ignores `hidden`: in ST's real dropdown the filtered rows must not be listed either.
    page.click("#model_nanogpt_select + .select2 .select2-selection")
    page.wait_for_selector("#select2-model_nanogpt_select-results")
    shown = js(
        page,
        """() => [...document.querySelectorAll('#select2-model_nanogpt_select-results li[role=option]')]
        .filter(li => li.offsetParent !== null).length""",
    )
    page.keyboard.press("Escape")
    assert 0 < shown <= n - hidden
    page.uncheck("#ngc_only_subscription")
    assert (
        js(
            page,
            "[...document.querySelectorAll('#model_nanogpt_select option')]"
            ".filter(o => o.hidden || o.disabled).length",
        )
        == 0
    )
    page.uncheck("#ngc_enrich_selects")
    plain = js(page, "[...document.querySelectorAll('#model_nanogpt_select option')].map(o => o.text)")
    assert not any(" per 1M" in t for t in plain)


# ----- endpoints -----


def test_endpoint_switch_custom_builtin_and_text(page: Any, harness: Harness) -> None:
    wait_connected(page)
    open_drawer(page)
    _, eps = harness.service.request("GET", "/api/endpoints")
    by_id = {e["id"]: e for e in eps["endpoints"]}
    page.wait_for_selector('#ngc_endpoints button[data-ep="paid"]')
    assert eps["recommended"] in page.text_content("#ngc_endpoints") or by_id[eps["recommended"]][
        "title"
    ] in page.text_content("#ngc_endpoints")
    page.click('#ngc_endpoints button[data-ep="paid"][data-mode="chat"]')
    st = js(page, "SillyTavern.getContext().chatCompletionSettings")
    assert st["chat_completion_source"] == "custom"
    assert st["custom_url"] == by_id["paid"]["url"]
    assert page.input_value("#custom_api_url_text") == by_id["paid"]["url"]
    calls = js(page, "window.stStandIn.handlerCalls")
    assert calls["#chat_completion_source:change"] >= 1 and calls["#custom_api_url_text:input"] >= 1
    assert js(page, "window.stStandIn.connectClicks.openai") >= 1
    assert (
        page.get_attribute('#ngc_endpoints button[data-ep="paid"][data-mode="chat"]', "aria-pressed")
        == "true"
    )
    page.click('#ngc_endpoints button[data-ep="builtin"]')
    assert js(page, "SillyTavern.getContext().chatCompletionSettings.chat_completion_source") == "nanogpt"
    text_ep = next(e for e in eps["endpoints"] if e.get("text_completion"))
    page.click(f'#ngc_endpoints button[data-ep="{text_ep["id"]}"][data-mode="text"]')
    assert page.input_value("#main_api") == "textgenerationwebui"
    tc = js(page, "SillyTavern.getContext().textCompletionSettings")
    assert tc["type"] == "generic" and tc["server_urls"]["generic"] == text_ep["url"]


# ----- doctor -----


def test_live_fix_over_sse_changes_ppp_then_undo(page: Any, harness: Harness) -> None:
    wait_connected(page)
    open_drawer(page)
    # The user picks "None": ST's handler saves settings.json; the service's watcher sees it, its doctor
    # finds PPP unset for NanoGPT (an auto fix) and, because this tab holds the event stream, sends a
    # `fix` event instead of writing the file. The extension applies it through ST's select handler.
    page.select_option("#custom_prompt_post_processing", "")
    page.wait_for_function(
        "document.querySelector('#custom_prompt_post_processing').value !== ''", timeout=15000
    )
    fixed = page.input_value("#custom_prompt_post_processing")
    assert js(page, "SillyTavern.getContext().chatCompletionSettings.custom_prompt_post_processing") == fixed
    assert js(page, "window.stStandIn.handlerCalls['#custom_prompt_post_processing:change']") >= 2
    # ST persisted the live fix (its save writes settings.json).
    page.wait_for_function("(v) => window.stStandIn.saves > 0", arg=fixed)
    # Undo is offered once the service acknowledged the fix (its journal ids make undo go through it).
    page.wait_for_selector("#ngc_undo:not([disabled])", timeout=10000)
    _, journal = harness.service.request("GET", "/api/doctor/journal?limit=1")
    live = journal["entries"][0]
    assert live["mode"] == "live" and live["new_value"] == fixed and live["undone_at"] is None
    page.wait_for_selector(f'#ngc_recent_fixes li[data-journal="{live["journal_id"]}"][data-mode="live"]')
    page.click("#ngc_undo")
    page.wait_for_function("document.querySelector('#custom_prompt_post_processing').value === ''")
    assert js(page, "SillyTavern.getContext().chatCompletionSettings.custom_prompt_post_processing") == ""
    # Undo went through the service (its journal says so), and the undo itself is not offered for undo.
    page.wait_for_selector(f'#ngc_recent_fixes li[data-journal="{live["journal_id"]}"]', state="detached")
    _, journal = harness.service.request("GET", "/api/doctor/journal?limit=5")
    assert next(e for e in journal["entries"] if e["journal_id"] == live["journal_id"])["undone_at"]
    assert page.is_disabled("#ngc_undo")
    assert harness.page_errors == []


def test_formatting_error_surfaces_matching_fix(page: Any) -> None:
    wait_connected(page)
    open_drawer(page)
    page.evaluate(
        "toastr.error('Conversation roles must alternate user/assistant/user/assistant/...',"
        " 'Chat Completion API')"
    )
    page.wait_for_selector('.ngc-suggestion button[data-fix="__suggestion__"]')
    # Named as ST names it, with the value the service allows for this ST (1.18, no function calling).
    assert "Semi-strict (alternating roles; no tools)" in page.text_content(".ngc-suggestion")
    page.click('.ngc-suggestion button[data-fix="__suggestion__"]')
    assert page.input_value("#custom_prompt_post_processing") == "semi"


@pytest.mark.parametrize(("version", "expected"), [("1.13.0", "semi"), ("1.12.14", None)])
def test_formatting_error_suggestion_passes_the_version_gate(
    browser: Any, harness: Harness, version: str, expected: str | None
) -> None:
    """Issue 10 item 6: the value comes from the service's table for this ST. With function calling on,
    1.13.0 has no "with tools" modes (and sends the NanoGPT source no tools): "semi", never "semi_tools".
    1.12.14 ignores PPP for the NanoGPT source: explained, with nothing to apply."""
    settings = harness.reset_settings(function_calling=True)
    settings["currentVersion"] = version
    harness.standin.write_settings(settings)
    _, report = harness.service.request("GET", "/api/doctor?refresh=1")
    assert report["st_version"] == version
    page = open_page(browser, harness)
    try:
        wait_connected(page)
        open_drawer(page)
        page.evaluate("toastr.error('Conversation roles must alternate user/assistant', 'Chat Completion')")
        suggestion = page.wait_for_selector(".ngc-suggestion")
        if expected is None:
            assert suggestion.query_selector("button") is None
            assert "does not apply Prompt Post-Processing" in suggestion.text_content()
        else:
            page.click('.ngc-suggestion button[data-fix="__suggestion__"]')
            assert page.input_value("#custom_prompt_post_processing") == expected
    finally:
        page.context.close()


# ----- slash commands -----


def test_slash_commands_return_pipeable_values(page: Any, harness: Harness) -> None:
    wait_connected(page)
    page.wait_for_function("document.querySelector('#ngc_catalog_summary').textContent.length > 0")
    names = js(page, "Object.keys(SillyTavern.getContext().SlashCommandParser.commands)")
    for n in ["nano-balance", "nano-models", "nano-sync", "nano-fix", "nano-endpoint", "nano-thinking"]:
        assert n in names
        assert (
            js(page, "(n) => SillyTavern.getContext().SlashCommandParser.commands[n].helpString.length", n)
            > 20
        )
    _, account = harness.service.request("GET", "/api/account")
    assert f"${account['balance']['usd']:.2f}" in slash(page, "/nano-balance")
    ids = slash(page, "/nano-models glm").splitlines()
    assert ids and all("glm" in i.lower() for i in ids)
    assert slash(page, "/nano-sync").startswith("Catalogue synced")
    _, eps = harness.service.request("GET", "/api/endpoints")
    paid = next(e["url"] for e in eps["endpoints"] if e["id"] == "paid")
    assert slash(page, "/nano-endpoint paid") == paid
    assert js(page, "SillyTavern.getContext().chatCompletionSettings.custom_url") == paid
    # Thinking on/off on the Custom source: pick a base model that has a variant.
    base = js(
        page,
        """async () => {
        const r = await fetch('/standin/models.json').then(r => r.json());
        const ids = new Set(r.data.map(m => m.id));
        return r.data.map(m => m.id).find(id => ids.has(id + ':thinking'));
    }""",
    )
    if base:
        js(page, "(id) => { const $ = jQuery; $('#custom_model_id').val(id).trigger('input'); }", base)
        assert slash(page, "/nano-thinking on") == f"{base}:thinking"
        assert slash(page, "/nano-thinking off") == base
    # Piping: the model list feeds the next command's argument.
    assert slash(page, "/nano-models glm | /ppp") != ""
    assert harness.page_errors == []


# ----- people -----


def test_phone_width_has_no_horizontal_overflow(browser: Any, harness: Harness) -> None:
    harness.reset_settings()
    page = open_page(browser, harness, width=400, height=800)
    try:
        wait_connected(page)
        open_drawer(page)
        page.wait_for_function("document.querySelector('#ngc_usd').textContent !== '—'")
        drawer_w = js(page, "document.getElementById('ngc_drawer_root').scrollWidth")
        host_w = js(page, "document.getElementById('extensions_settings').clientWidth")
        assert drawer_w <= host_w
        page.screenshot(path=artifact("drawer-400px.png"), full_page=True)
        page.click("#ngc_browse")
        page.wait_for_selector("dialog.popup .ngc-catalog .ngc-model")
        overflow = js(
            page,
            "(() => { const l = document.querySelector('.ngc-catalog-list');"
            " return l.scrollWidth - l.clientWidth; })()",
        )
        assert overflow <= 1
        page.screenshot(path=artifact("catalog-400px.png"))
        # Keyboard: the drawer header is focusable and toggles with Enter.
        assert harness.console_errors() == []
    finally:
        page.context.close()


@pytest.mark.parametrize("key", ["Enter", " "])
def test_drawer_header_is_keyboard_operable(page: Any, key: str) -> None:
    header = page.locator(".ngc-drawer .inline-drawer-header")
    header.focus()
    page.keyboard.press("Space" if key == " " else key)
    page.wait_for_selector("#ngc_drawer_content", state="visible")


# ----- modules in the page: pure helpers and the alert de-duplication -----

EXT = "/scripts/extensions/third-party/nanogpt-companion/src/"


def test_pure_helpers(page: Any) -> None:
    r = js(
        page,
        """async (base) => {
        const f = await import(base + 'format.js');
        const m = (o) => Object.assign({ id: 'x/a', name: 'A', vendor: 'x', capabilities: {}, tiers: ['v1'],
            pricing: {}, subscription: {} }, o);
        const models = [
            m({ id: 'x/cheap', pricing: { prompt: 0.1 }, capabilities: { vision: true },
                subscription: { included: true, input_multiplier: 2 }, context_length: 8000 }),
            m({ id: 'x/unknown', pricing: {}, context_length: null }),
            m({ id: 'x/dear', pricing: { prompt: 5 }, capabilities: { vision: false }, context_length: 200000,
                created: 5 }),
            m({ id: 'auto-model', is_router: true }),
        ];
        return {
            price: f.formatPrice(0.42000000000000004),
            tokens: [f.formatTokens(60000000), f.formatTokens(631288), f.formatTokens(1200000)],
            countdown: [f.formatCountdown(1000 + 3 * 86400e3 + 4 * 3600e3, 1000),
                        f.formatCountdown(5000, 9000)],
            vision: f.filterCatalog(models, { vision: true }).map(x => x.id),
            maxPrice: f.filterCatalog(models, { maxPrice: 1 }).map(x => x.id),
            minCtx: f.filterCatalog(models, { minContext: 100000 }).map(x => x.id),
            routers: f.filterCatalog(models, {}).length,
            byPrice: f.sortCatalog(f.filterCatalog(models, {}), 'price').map(x => x.id),
            byContext: f.sortCatalog(f.filterCatalog(models, {}), 'context').map(x => x.id),
            suffix: f.enrichmentSuffix(models[0]),
            fold: f.foldThinking([m({ id: 'b' }), m({ id: 'b:thinking', thinking_base: 'b' }),
                                  m({ id: 'o:thinking', thinking_base: 'o' })])
                .map(r => [r.entry.id, r.variants.map(v => v.id)]),
            errs: ['Conversation roles must alternate user/assistant',
                   'System message must be at the beginning.',
                   'The first message must use the user role', 'rate limited']
                .map(e => f.matchFormattingError(e)?.ppp ?? null),
            noTwin: typeof f.pppWithTools,
            nano: [f.isNanoGptUrl('https://nano-gpt.com/api/v1'), f.isNanoGptUrl('https://evil.com/nano-gpt.com')],
            spark: f.sparkline([1, null, 3], 100, 20, 0).points.map(p => [p.x, p.y]),
            backoff: [f.backoffDelay(0, 1000, 60000, () => 0.5), f.backoffDelay(30, 1000, 60000, () => 0.5)],
        };
    }""",
        EXT,
    )
    assert r["price"] == "$0.42"
    assert r["tokens"] == ["60M", "631k", "1.2M"]
    assert r["countdown"] == ["3d 4h", "now"]
    assert r["vision"] == ["x/cheap"]  # unknown flags never match
    assert r["maxPrice"] == ["x/cheap"]  # unknown prices never pass a price cap
    assert r["minCtx"] == ["x/dear"]
    assert r["routers"] == 3
    assert r["byPrice"] == ["x/cheap", "x/dear", "x/unknown"]  # unknown last
    assert r["byContext"] == ["x/dear", "x/cheap", "x/unknown"]
    assert r["suffix"] == " · $0.1/? per 1M · SUB x2"
    assert r["fold"] == [["b", ["b:thinking"]], ["o:thinking", []]]
    assert r["errs"] == ["semi", "semi", "strict", None]
    # The "with tools" choice is the service's (version-gated); the extension keeps no table of its own.
    assert r["noTwin"] == "undefined"
    assert r["nano"] == [True, False]
    assert r["spark"] == [[0, 20], [100, 0]]
    assert r["backoff"] == [1000, 60000]


def test_alerts_toast_once_each(page: Any) -> None:
    shown = js(
        page,
        """async (base) => {
        const { AccountView } = await import(base + 'account-view.js');
        const toasts = [];
        const adapter = { t: (s) => s, missing: [], mountBadge: () => false,
                          toast: (l, m) => toasts.push([l, m]) };
        const v = new AccountView({ root: document.getElementById('ngc_drawer_root'), adapter });
        const a = { id: 'low_balance:5', kind: 'low_balance', level: 'warning', message: 'Balance below $5' };
        const b = { id: 'quota_80:weekly', kind: 'quota_80', level: 'info',
                    message: 'Weekly quota 80% used' };
        [a, a, b, a, b].forEach((x) => v.showAlert(x));
        return toasts;
    }""",
        EXT,
    )
    assert shown == [["warning", "Balance below $5"], ["info", "Weekly quota 80% used"]]


def test_fix_button_asks_service_and_applies_live(page: Any, harness: Harness) -> None:
    """An "ask" finding: function calling on with a no-tools PPP. Fix -> the service sends it live ->
    ST's select changes to the "with tools" twin."""
    wait_connected(page)
    open_drawer(page)
    page.check("#openai_function_calling")
    page.select_option("#custom_prompt_post_processing", "merge")
    fix_btn = '#ngc_findings li[data-id^="ppp.tools"] button[data-fix]'
    page.wait_for_selector(fix_btn, timeout=15000)
    assert "tools" in page.text_content('#ngc_findings li[data-id^="ppp.tools"]').lower()
    # A locator re-finds the button if an SSE `findings` event re-rendered the list meanwhile.
    page.locator(fix_btn).click()
    page.wait_for_function(
        "document.querySelector('#custom_prompt_post_processing').value === 'merge_tools'", timeout=15000
    )
    assert (
        js(page, "SillyTavern.getContext().chatCompletionSettings.custom_prompt_post_processing")
        == "merge_tools"
    )
    # The finding goes away once ST saved and the service re-checked.
    page.wait_for_function(
        "!document.querySelector('#ngc_findings li[data-id^=\"ppp.tools\"]')", timeout=15000
    )
    assert harness.page_errors == []


@pytest.mark.parametrize(
    "event",
    [
        "oai_preset_changed_after",
        "connection_profile_loaded",
        "chatcompletion_model_changed",
        "chatcompletion_source_changed",
    ],
)
def test_st_events_trigger_a_doctor_recheck(page: Any, event: str) -> None:
    wait_connected(page)
    page.wait_for_function("document.querySelector('#ngc_catalog_summary').textContent.length > 0")
    with page.expect_request(lambda r: r.url.endswith("/api/doctor") and r.method == "GET", timeout=10000):
        js(page, "(e) => window.stStandIn.emit(e, 'nanogpt')", event)


def test_custom_model_change_sets_context_from_catalogue(page: Any, harness: Harness) -> None:
    wait_connected(page)
    open_drawer(page)
    page.wait_for_function("document.querySelector('#ngc_catalog_summary').textContent.length > 0")
    page.check("#ngc_set_context")
    page.click('#ngc_endpoints button[data-ep="v1"][data-mode="chat"]')
    _, cat = harness.service.request("GET", "/api/catalog?sort=context")
    model = next(m for m in cat["models"] if m.get("context_length"))
    # ST's Custom source: the user types a model id; ST emits the model-changed event.
    page.fill("#custom_model_id", model["id"])
    js(page, "(id) => window.stStandIn.emit('chatcompletion_model_changed', id)", model["id"])
    page.wait_for_function(
        "(n) => SillyTavern.getContext().chatCompletionSettings.openai_max_context === n",
        arg=model["context_length"],
    )
    assert page.input_value("#openai_max_context") == str(model["context_length"])
    assert js(page, "window.stStandIn.handlerCalls['#openai_max_context:input']") >= 1


def test_fix_written_while_no_tab_was_open_can_be_undone_from_recent_fixes(
    browser: Any, harness: Harness
) -> None:
    """No ST tab open: the service fixes settings.json itself and journals it. The next time ST is
    opened, the doctor panel lists that fix under "Recent fixes"; its Undo goes through the service,
    which (the tab being open now) sends the reverse as a live fix that ST's own handler applies."""
    harness.reset_settings(custom_prompt_post_processing="")
    deadline_polls = 300
    fixed = ""
    for _ in range(deadline_polls):
        fixed = harness.standin.read_settings()["oai_settings"]["custom_prompt_post_processing"]
        if fixed:
            break
        harness.loop.run(asyncio.sleep(0.05))
    assert fixed, "the service did not fix settings.json while no tab was open"
    _, journal = harness.service.request("GET", "/api/doctor/journal?limit=5")
    entry = journal["entries"][0]
    assert entry["mode"] == "file" and entry["new_value"] == fixed and entry["undone_at"] is None

    page = open_page(browser, harness)
    try:
        wait_connected(page)
        open_drawer(page)
        assert page.input_value("#custom_prompt_post_processing") == fixed
        row = page.wait_for_selector(f'#ngc_recent_fixes li[data-journal="{entry["journal_id"]}"]')
        assert row.get_attribute("data-mode") == "file"
        assert "closed" in row.text_content()
        # In ST's words (issue 10 item 16), not raw keys.
        assert "Prompt Post-Processing: None → Merge consecutive roles (no tools)" in row.text_content()
        page.screenshot(path=artifact("drawer-recent-fixes.png"), full_page=True)
        before = js(page, "window.stStandIn.handlerCalls['#custom_prompt_post_processing:change'] || 0")
        row.query_selector("button[data-undo]").click()
        page.wait_for_function("document.querySelector('#custom_prompt_post_processing').value === ''")
        assert js(page, "SillyTavern.getContext().chatCompletionSettings.custom_prompt_post_processing") == ""
        assert js(page, "window.stStandIn.handlerCalls['#custom_prompt_post_processing:change']") > before
        # The service marks the entry undone once the tab acknowledged; the row goes away.
        page.wait_for_selector(
            f'#ngc_recent_fixes li[data-journal="{entry["journal_id"]}"]', state="detached"
        )
        _, after = harness.service.request("GET", "/api/doctor/journal?limit=5")
        undone = next(e for e in after["entries"] if e["journal_id"] == entry["journal_id"])
        assert undone["undone_at"] is not None
        # Carrying out an undo is not itself something to undo, and it is announced as an undo.
        assert page.is_disabled("#ngc_undo")
        page.wait_for_selector("#toast-container .toast:has-text('Undone')")
        assert "Prompt Post-Processing: Merge consecutive roles (no tools) → None" in page.text_content(
            "#toast-container"
        )
        assert harness.page_errors == []
    finally:
        page.context.close()
