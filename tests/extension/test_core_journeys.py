"""The core journeys in real SillyTavern, on every supported version (ids end in the ST version).

Each starts from the settings.json that ST itself wrote after a user connected to NanoGPT with the built-in
source (``tests/fixtures/sillytavern/<version>/settings.nanogpt.json``), with our extension installed by our
installer, the service running and NanoGPT answered by the fake. Any error toast or page error during a test
fails it (``st_page_for``).
"""

from __future__ import annotations

from typing import Any

from tests.extension.st_ui import (
    connect_builtin,
    oai,
    open_drawer,
    open_top_drawer,
    record_st_events,
    reveal,
    send_message,
    st_events,
    wait_catalog,
)
from tests.realst.browser import STPage
from tests.realst.stack import CLEAN_OAI, RealStack
from tests.realst.versions import version_tuple

SELECT2_FROM = (1, 18, 0)  # ST wraps #model_nanogpt_select in select2 from 1.18.0 (public/scripts/openai.js)


def test_first_load_is_connected_shows_balance_and_st_chats(
    versioned_stack: RealStack, st_page_for: Any
) -> None:
    stack = versioned_stack
    page: STPage = st_page_for(stack)
    assert stack.service is not None
    status, account = stack.service.request("GET", "/api/account")
    assert status == 200
    open_drawer(page)
    usd = account["balance"]["usd"]
    page.page.wait_for_function(f"document.querySelector('#ngc_usd')?.textContent === '${usd:.2f}'")
    assert page.page.text_content("#ngc_sub_state") == "active"
    bars = {b.get_attribute("data-quota") for b in page.page.query_selector_all(".ngc-quota-row")}
    assert bars == set(account["subscription"]["buckets"])
    page.screenshot(f"core-first-load-{stack.version}.png", full_page=False)
    # The extension does not get in ST's way: ST connects to NanoGPT and a message gets its reply.
    connect_builtin(page)
    model = oai(page, "nanogpt_model")
    reply = send_message(page, "Hello?")
    assert reply == f"Hello from the fake NanoGPT ({model} on /api/v1)."
    sent = stack.fake.inference.records[-1]
    assert sent.model == model and sent.base == "v1" and sent.roles[-1] == "user"


def test_use_from_catalogue_selects_through_st(versioned_stack: RealStack, st_page_for: Any) -> None:
    stack = versioned_stack
    page: STPage = st_page_for(stack)
    open_drawer(page)
    wait_catalog(page)
    record_st_events(page, "chatcompletion_model_changed")
    page.page.click("#ngc_browse")
    page.page.wait_for_selector("dialog.popup .ngc-catalog .ngc-model")
    # A model NanoGPT's list for this key has (the subscriber's v1 list), not the current one.
    current = oai(page, "nanogpt_model")
    target = next(i for i in sorted(stack.fake.ids("subscription")) if i != current and ":" not in i)
    page.page.fill('.ngc-catalog [data-f="q"]', target)
    page.page.click(f'.ngc-catalog button[data-act="use"][data-id="{target}"]')
    # ST's list was empty (no Connect yet): the extension pressed Connect, ST filled the list from NanoGPT,
    # and the option was chosen through ST's own change handler, which saved it.
    page.page.wait_for_function(
        "(id) => SillyTavern.getContext().chatCompletionSettings.nanogpt_model === id", arg=target
    )
    assert page.page.eval_on_selector("#model_nanogpt_select", "el => el.value") == target
    assert target in st_events(page, "chatcompletion_model_changed")
    stack.wait_for_settings(lambda s: s["oai_settings"]["nanogpt_model"] == target)
    page.page.keyboard.press("Escape")


def test_enrichment_of_sts_own_model_select(versioned_stack: RealStack, st_page_for: Any) -> None:
    """ST 1.13.5 lists bare ids in a plain select: the extension adds price per 1M and SUB to each label.
    From 1.18.0 ST draws every row of its NanoGPT dropdown itself (select2 templateResult
    getNanoGptModelTemplate: price, context, icons, "Sub"), so the labels stay ST's: nothing is said twice."""
    stack = versioned_stack
    page: STPage = st_page_for(stack)
    wait_catalog(page)
    n = connect_builtin(page)
    listed = set(stack.fake.ids("subscription"))  # NanoGPT's v1 list for a subscriber's key
    if version_tuple(stack.version) >= SELECT2_FROM:
        page.page.wait_for_function(
            "() => document.querySelectorAll('#model_nanogpt_select option').length > 100"
        )
        snap = page.js(
            "[...document.querySelectorAll('#model_nanogpt_select option')]"
            ".map(o => ({v: o.value, t: o.text}))"
        )
        assert {o["v"] for o in snap} == listed and len(snap) == n
        assert not any(" per 1M" in o["t"] or " · SUB" in o["t"] for o in snap)
        # ST's own rows carry the price; ours would be a second copy.
        page.page.click("#select2-model_nanogpt_select-container")
        page.page.wait_for_selector(".select2-results__option")
        rows = page.js(
            "[...document.querySelectorAll('.select2-results__option')].slice(0, 20).map(r => r.textContent)"
        )
        assert any("Mtoken" in r for r in rows) and not any(" per 1M" in r for r in rows)
        page.page.keyboard.press("Escape")
        page.screenshot(f"core-enrichment-{stack.version}.png", full_page=False)
        return
    page.page.wait_for_function(
        "[...document.querySelectorAll('#model_nanogpt_select option')].some(o => o.text.includes(' per 1M'))"
    )
    snap = page.js(
        "() => [...document.querySelectorAll('#model_nanogpt_select option')]"
        ".map(o => ({v: o.value, t: o.text}))"
    )
    assert {o["v"] for o in snap} == listed, "option values must stay the ids ST got from NanoGPT"
    assert len(snap) == n
    enriched = [o for o in snap if " per 1M" in o["t"]]
    assert len(enriched) > len(snap) * 0.9
    # ST refills the select on every Connect: labels must not stack suffixes.
    connect_builtin(page)
    page.page.wait_for_function(
        "[...document.querySelectorAll('#model_nanogpt_select option')].some(o => o.text.includes(' per 1M'))"
    )
    again = page.js("[...document.querySelectorAll('#model_nanogpt_select option')].map(o => o.text)")
    assert sorted(again) == sorted(o["t"] for o in snap)
    assert all(t.count(" per 1M") <= 1 for t in again)
    selected = page.js("document.querySelector('#model_nanogpt_select').selectedOptions[0].text")
    assert " per 1M" in selected
    # Turning enrichment off gives ST's own labels back.
    open_drawer(page)
    page.page.uncheck("#ngc_enrich_selects")
    plain = page.js("[...document.querySelectorAll('#model_nanogpt_select option')].map(o => o.text)")
    assert not any(" per 1M" in t for t in plain)
    page.page.check("#ngc_enrich_selects")
    page.screenshot(f"core-enrichment-{stack.version}.png", full_page=False)


def choose_another_value_first(stack: RealStack, page: STPage | None = None) -> None:
    """The doctor respects a "None" the user puts back after one of its automatic fixes (issue 10 item 10),
    and the stack's start-up scan fixed "None" already. A user who picks another value in between has moved
    on: then "None" is a new choice again. Done here as a user would, and made seen by the service."""
    if page is None:
        stack.seed_user(oai={"custom_prompt_post_processing": "semi"})
    else:
        reveal(page, "#custom_prompt_post_processing")
        page.page.select_option("#custom_prompt_post_processing", "semi")
        stack.wait_for_settings(lambda s: s["oai_settings"]["custom_prompt_post_processing"] == "semi")
    assert stack.service is not None
    status, _ = stack.service.request("GET", "/api/doctor?refresh=1")
    assert status == 200


def test_live_fix_over_sse_then_undo(versioned_stack: RealStack, st_page_for: Any) -> None:
    stack = versioned_stack
    stack.seed_user(oai={**CLEAN_OAI, "nanogpt_model": stack.unused_model()})
    page: STPage = st_page_for(stack, seed=False)
    open_drawer(page)
    choose_another_value_first(stack, page)
    # The user picks "None" in ST's own select (API Connections): ST saves settings.json, the
    # service's watcher sees it, the doctor finds PPP unset for NanoGPT (an automatic fix) and, because
    # this tab holds the event stream, sends a `fix` event instead of writing the file; the extension
    # applies it through ST's own select handler, and ST saves it.
    reveal(page, "#custom_prompt_post_processing")
    page.page.select_option("#custom_prompt_post_processing", "")
    page.page.wait_for_function(
        "document.querySelector('#custom_prompt_post_processing').value !== ''", timeout=20000
    )
    fixed = page.page.input_value("#custom_prompt_post_processing")
    assert oai(page, "custom_prompt_post_processing") == fixed
    stack.wait_for_settings(lambda s: s["oai_settings"]["custom_prompt_post_processing"] == fixed)
    assert stack.service is not None
    open_drawer(page)
    page.page.wait_for_selector("#ngc_undo:not([disabled])", timeout=15000)
    _, journal = stack.service.request("GET", "/api/doctor/journal?limit=1")
    live = journal["entries"][0]
    assert live["mode"] == "live" and live["new_value"] == fixed and live["undone_at"] is None
    page.page.click("#ngc_undo")
    page.page.wait_for_function("document.querySelector('#custom_prompt_post_processing').value === ''")
    assert oai(page, "custom_prompt_post_processing") == ""
    page.page.wait_for_selector(
        f'#ngc_recent_fixes li[data-journal="{live["journal_id"]}"]', state="detached"
    )
    _, journal = stack.service.request("GET", "/api/doctor/journal?limit=5")
    assert next(e for e in journal["entries"] if e["journal_id"] == live["journal_id"])["undone_at"]
    stack.wait_for_settings(lambda s: s["oai_settings"]["custom_prompt_post_processing"] == "")


def test_fix_written_while_st_was_closed_is_undone_from_recent_fixes(
    versioned_stack: RealStack, st_page_for: Any
) -> None:
    """No ST tab open: the service fixes settings.json itself and journals it. The next page load shows the
    fix under "Recent fixes"; its Undo goes through the service, which (a tab being open now) sends the
    reverse as a live fix that ST's own handler applies."""
    stack = versioned_stack
    assert stack.service is not None
    choose_another_value_first(stack)  # a previous test's undo kept "None" on purpose
    stack.seed_user(oai={"custom_prompt_post_processing": ""})
    settings = stack.wait_for_settings(lambda s: s["oai_settings"]["custom_prompt_post_processing"] != "")
    fixed = settings["oai_settings"]["custom_prompt_post_processing"]
    _, journal = stack.service.request("GET", "/api/doctor/journal?limit=5")
    entry = journal["entries"][0]
    assert entry["mode"] == "file" and entry["new_value"] == fixed and entry["undone_at"] is None

    page: STPage = st_page_for(stack, seed=False)
    open_drawer(page)
    row = page.page.wait_for_selector(f'#ngc_recent_fixes li[data-journal="{entry["journal_id"]}"]')
    assert row.get_attribute("data-mode") == "file"
    # In ST's own words for this version (issue 10 item 16), not raw keys.
    assert "Prompt Post-Processing: None → Merge consecutive roles" in (row.text_content() or "")
    page.screenshot(f"core-recent-fixes-{stack.version}.png", full_page=False)
    record_st_events(page, "settings_updated")
    # A locator, not the handle: the list re-renders whenever a doctor report or journal update arrives.
    page.page.locator(f'#ngc_recent_fixes li[data-journal="{entry["journal_id"]}"] button[data-undo]').click()
    page.page.wait_for_function("document.querySelector('#custom_prompt_post_processing').value === ''")
    assert oai(page, "custom_prompt_post_processing") == ""
    page.page.wait_for_selector(
        f'#ngc_recent_fixes li[data-journal="{entry["journal_id"]}"]', state="detached"
    )
    _, after = stack.service.request("GET", "/api/doctor/journal?limit=5")
    assert (
        next(e for e in after["entries"] if e["journal_id"] == entry["journal_id"])["undone_at"] is not None
    )
    stack.wait_for_settings(lambda s: s["oai_settings"]["custom_prompt_post_processing"] == "")


def test_enrichment_of_sts_custom_source_select(versioned_stack: RealStack, st_page_for: Any) -> None:
    """The guide's second method: ST's Custom (OpenAI-compatible) source at NanoGPT's URL, with the key in
    the Custom key field (the settings and secrets ST wrote for that set-up). ST lists bare ids there."""
    stack = versioned_stack
    stack.seed_user(settings="settings.custom-nanogpt.json", oai=CLEAN_OAI)
    page: STPage = st_page_for(stack, seed=False)
    wait_catalog(page)
    open_top_drawer(page, "api")
    page.page.click("#api_button_openai")
    page.page.wait_for_function("document.querySelectorAll('#model_custom_select option').length > 100")
    page.page.wait_for_function(
        "[...document.querySelectorAll('#model_custom_select option')].some(o => o.text.includes(' per 1M'))"
    )
    options = page.js(
        "() => [...document.querySelectorAll('#model_custom_select option')]"
        ".map(o => ({v: o.value, t: o.text}))"
    )
    assert {o["v"] for o in options if o["v"]} == set(stack.fake.ids("subscription"))
    enriched = [o for o in options if " per 1M" in o["t"]]
    assert len(enriched) > len(options) * 0.9
    assert all(o["t"].startswith(o["v"]) for o in enriched), "ST's label (the id) stays first"
    page.screenshot(f"core-enrichment-custom-{stack.version}.png", full_page=False)
