"""The doctor panel against real SillyTavern (newest): a Fix button, a suggestion after a real failed
generation, re-checks on ST's own events, context size from the catalogue on the Custom source."""

from __future__ import annotations

from typing import Any

from tests.extension.st_ui import (
    REPLY_DOCTOR_OFF,
    connect_builtin,
    oai,
    open_drawer,
    reveal,
    wait_catalog,
)
from tests.realst.browser import STPage
from tests.realst.stack import CLEAN_OAI, RealStack

ROLES_ERROR = "Conversation roles must alternate user/assistant/user/assistant/..."


def test_fix_button_applies_the_with_tools_twin_live(stack: RealStack, st_page_for: Any) -> None:
    """An "ask" finding: function calling on with a no-tools PPP. Fix -> the service sends it live -> ST's
    select changes to the "with tools" twin (the built-in source has tool calling from 1.16.0)."""
    stack.seed_user(oai={**CLEAN_OAI, "nanogpt_model": stack.unused_model()})
    page: STPage = st_page_for(stack, seed=False)
    reveal(page, "#openai_function_calling")
    page.page.check("#openai_function_calling")
    reveal(page, "#custom_prompt_post_processing")
    page.page.select_option("#custom_prompt_post_processing", "merge")
    open_drawer(page)
    fix_btn = '#ngc_findings li[data-id^="ppp.tools"] button[data-fix]'
    page.page.wait_for_selector(fix_btn, timeout=20000)
    assert "tools" in (page.page.text_content('#ngc_findings li[data-id^="ppp.tools"]') or "").lower()
    page.page.locator(fix_btn).click()
    page.page.wait_for_function(
        "document.querySelector('#custom_prompt_post_processing').value === 'merge_tools'", timeout=20000
    )
    assert oai(page, "custom_prompt_post_processing") == "merge_tools"
    page.page.wait_for_function(
        "!document.querySelector('#ngc_findings li[data-id^=\"ppp.tools\"]')", timeout=20000
    )


def test_failed_generation_suggests_the_ppp_that_fixes_it(
    stack: RealStack, st_page: STPage, expect_problems: Any
) -> None:
    """NanoGPT relays a provider's "roles must alternate" refusal; ST shows it as an error toast; with the
    formatting doctor in the chat turned off (it answers this itself when on: test_reply_doctor_real_st), the
    doctor panel offers the PPP mode that ends it, and Fix applies it through ST's select."""
    page = st_page
    page.js(REPLY_DOCTOR_OFF)
    expect_problems.expect(r"error-toast: .*roles must alternate")
    # ST itself leaves the failed request's promise unhandled ("Got response status 400"), in every version.
    expect_problems.expect(r"(rejection|pageerror): Got response status 400")
    connect_builtin(page)
    stack.fake.inference.error = (400, ROLES_ERROR)
    try:
        if page.js("() => SillyTavern.getContext().characterId") is None:
            page.js("async () => { await SillyTavern.getContext().selectCharacterById(0); }")
        page.page.fill("#send_textarea", "Hello?")
        page.page.click("#send_but")
        page.page.wait_for_selector("#toast-container .toast-error", timeout=30000)
    finally:
        stack.fake.inference.error = None
    open_drawer(page)
    page.page.wait_for_selector('.ngc-suggestion button[data-fix="__suggestion__"]', timeout=15000)
    suggestion = page.page.text_content(".ngc-suggestion") or ""
    assert "Semi-strict" in suggestion or "semi" in suggestion
    page.page.click('.ngc-suggestion button[data-fix="__suggestion__"]')
    page.page.wait_for_function(
        "document.querySelector('#custom_prompt_post_processing').value.startsWith('semi')"
    )
    stack.wait_for_settings(lambda s: s["oai_settings"]["custom_prompt_post_processing"].startswith("semi"))


def _expect_recheck(page: STPage, action: Any) -> None:
    with page.page.expect_request(
        lambda r: r.url.endswith("/api/doctor") and r.method == "GET", timeout=15000
    ):
        action()


def test_sts_own_events_trigger_a_doctor_recheck(stack: RealStack, st_page: STPage) -> None:
    page = st_page
    wait_catalog(page)
    connect_builtin(page)
    # The user changes the model in ST's own select (CHATCOMPLETION_MODEL_CHANGED).
    other = next(
        o
        for o in page.js("[...document.querySelectorAll('#model_nanogpt_select option')].map(o => o.value)")
        if o != oai(page, "nanogpt_model")
    )
    _expect_recheck(
        page, lambda: page.js("(v) => jQuery('#model_nanogpt_select').val(v).trigger('change')", other)
    )
    # ... picks another Chat Completion preset (OAI_PRESET_CHANGED_AFTER).
    presets = page.js(
        "[...document.querySelectorAll('#settings_preset_openai option')].map(o => o.textContent)"
    )
    target = next(
        p for p in presets if p != page.js("jQuery('#settings_preset_openai option:selected').text()")
    )
    _expect_recheck(
        page,
        lambda: page.js(
            "(name) => { const v = [...document.querySelectorAll('#settings_preset_openai option')]"
            ".find(o => o.textContent === name).value;"
            " jQuery('#settings_preset_openai').val(v).trigger('change'); }",
            target,
        ),
    )
    # ... switches the source (CHATCOMPLETION_SOURCE_CHANGED).
    _expect_recheck(
        page, lambda: page.js("() => jQuery('#chat_completion_source').val('custom').trigger('change')")
    )
    # A Connection Manager profile loaded (CONNECTION_PROFILE_LOADED), as ST's extension emits it.
    _expect_recheck(
        page,
        lambda: page.js(
            "() => { const c = SillyTavern.getContext();"
            " c.eventSource.emit(c.eventTypes.CONNECTION_PROFILE_LOADED, 'x'); }"
        ),
    )


def test_custom_model_change_sets_context_from_catalogue(stack: RealStack, st_page: STPage) -> None:
    page = st_page
    assert stack.service is not None
    open_drawer(page)
    wait_catalog(page)
    page.page.check("#ngc_set_context")
    page.page.click('#ngc_endpoints button[data-ep="v1"][data-mode="chat"]')
    page.page.wait_for_function(
        "() => SillyTavern.getContext().chatCompletionSettings.chat_completion_source === 'custom'"
    )
    # The switch pressed Connect: ST filled the Custom source's model list from NanoGPT's URL.
    page.page.wait_for_function("document.querySelectorAll('#model_custom_select option').length > 100")
    listed = set(page.js("[...document.querySelectorAll('#model_custom_select option')].map(o => o.value)"))
    _, cat = stack.service.request("GET", "/api/catalog?sort=context")
    model = next(
        m
        for m in cat["models"]
        if m["id"] in listed
        and m.get("context_length")
        and m["context_length"] != oai(page, "openai_max_context")
    )
    # The user picks it in ST's list; ST's handler emits CHATCOMPLETION_MODEL_CHANGED (typing an id into
    # the text field does not: public/scripts/openai.js, #custom_model_id only saves).
    reveal(page, "#model_custom_select")
    page.js("(id) => jQuery('#model_custom_select').val(id).trigger('change')", model["id"])
    page.page.wait_for_function(
        "(n) => SillyTavern.getContext().chatCompletionSettings.openai_max_context === n",
        arg=model["context_length"],
        timeout=15000,
    )
    stack.wait_for_settings(lambda s: s["oai_settings"]["openai_max_context"] == model["context_length"])
