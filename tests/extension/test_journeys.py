"""Issue 11's journeys in real SillyTavern, each from the click to ST ready (or plainly not ready, and why).

Every journey ends on ST's own state: settings.json as ST saved it, secrets.json and ST's own secret state
in the page, ST's connection status and model select, and where it says "ready to chat", a message typed
into ST's chat box that gets the fake NanoGPT's reply. Any error toast or page error fails the test
(``st_page_for``); screenshots of each end state go to tests/artifacts/.
"""

from __future__ import annotations

import re
from typing import Any

from nanogpt_companion.sillytavern.secrets_writer import COMPANION_LABEL
from tests.extension.st_ui import (
    connect_builtin,
    oai,
    open_drawer,
    open_top_drawer,
    reveal,
    send_message,
    wait_catalog,
)
from tests.fakes.nanogpt_upstream import INVALID_KEY, PAYG_KEY, SUBSCRIBER_KEY, key_id
from tests.realst.browser import STPage
from tests.realst.stack import CLEAN_OAI, RealStack, load_version_fixture

SUB_URL = "https://nano-gpt.com/api/subscription/v1"
V1_URL = "https://nano-gpt.com/api/v1"
REPORT = "#ngc_switch_report"


def _active_value(secrets: dict[str, Any], name: str) -> str | None:
    value = secrets.get(name)
    if isinstance(value, str):
        return value
    return next((e["value"] for e in value or [] if e.get("active")), None)


OTHER_KEY = "sk-or-FAKE-555555555555"  # a key for some other provider the user keeps in ST's Custom slot


def _only_nanogpt_key(stack: RealStack, *, other_custom: bool = True) -> bytes:
    """secrets.json as ST writes it for a user who set up only ST's built-in NanoGPT source (and, with
    ``other_custom``, once used the Custom source for another provider): NanoGPT's key is not in the
    Custom or Generic slot, which is why a switch used to end with "Missing key"."""
    data = load_version_fixture(stack.version, "secrets.json")
    data.pop("api_key_generic", None)
    data.pop("api_key_custom", None)
    for entry in data["api_key_nanogpt"]:
        entry["value"] = SUBSCRIBER_KEY
    if other_custom:
        data["api_key_custom"] = [
            {
                "id": "0b6c7c5e-0000-4000-8000-000000000001",
                "value": OTHER_KEY,
                "label": "OpenRouter",
                "active": True,
            }
        ]
    stack.write_secrets(data)
    return (stack.user_dir() / "secrets.json").read_bytes()


def _wait_endpoints(page: STPage) -> None:
    page.page.wait_for_selector('#ngc_endpoints button[data-ep="subscription"]')


def _show_report(page: STPage) -> None:
    open_drawer(page)
    page.show(REPORT)


def _switch(page: STPage, ep: str, mode: str = "chat", *, state: str = "ready") -> str:
    """Click an endpoint button in the drawer and wait for the switch's report; returns its text."""
    open_drawer(page)
    _wait_endpoints(page)
    page.page.click(f'#ngc_endpoints button[data-ep="{ep}"][data-mode="{mode}"]')
    # Any end state, so a switch that ended otherwise fails at once with the panel's own words.
    page.page.wait_for_selector(f"{REPORT} [data-state]", timeout=90000)
    text = page.page.text_content(REPORT) or ""
    ended = page.page.get_attribute(f"{REPORT} [data-state]", "data-state")
    assert ended == state, f"the switch ended {ended!r}, not {state!r}; the panel said: {text}"
    return text


def test_endpoint_switch_leaves_st_ready_to_chat_and_undo_puts_it_back(
    versioned_stack: RealStack, st_page_for: Any
) -> None:
    """Built-in NanoGPT -> "Subscription only": ST's Custom source gets the key (copied by the service into
    api_key_custom, which ST's page then shows as saved), the address, a model list from that address, the
    model the user had (it is a subscription model), a connected status, and chats. Undo puts it all back."""
    stack = versioned_stack
    model = stack.unused_model()
    stack.seed_user(oai={**CLEAN_OAI, "nanogpt_model": model})
    secrets_before = _only_nanogpt_key(stack)
    page: STPage = st_page_for(stack, seed=False)
    wait_catalog(page)
    text = _switch(page, "subscription")
    assert "Ready to chat" in text and model in text

    # ST's own state, in the page ...
    assert page.js("() => SillyTavern.getContext().mainApi") == "openai"
    assert oai(page, "chat_completion_source") == "custom"
    assert oai(page, "custom_url") == SUB_URL
    assert oai(page, "custom_model") == model
    assert page.js("() => SillyTavern.getContext().onlineStatus") != "no_connection"
    listed = page.js("[...document.querySelectorAll('#model_custom_select option')].map(o => o.value)")
    assert model in listed and len(listed) > 100
    # ST's page learnt that the Custom key exists (its placeholder names the active key's label).
    reveal(page, "#api_key_custom")
    assert COMPANION_LABEL in (page.page.get_attribute("#api_key_custom", "placeholder") or "")
    # ... on disk: the key in ST's Custom slot, the other provider's key kept, settings saved by ST.
    secrets = stack.read_secrets()
    assert _active_value(secrets, "api_key_custom") == SUBSCRIBER_KEY
    assert [e["value"] for e in secrets["api_key_custom"]] == [OTHER_KEY, SUBSCRIBER_KEY]
    saved = stack.wait_for_settings(
        lambda s: (
            s["oai_settings"]["chat_completion_source"] == "custom"
            and s["oai_settings"]["custom_url"] == SUB_URL
            and s["oai_settings"]["custom_model"] == model
        )
    )
    assert saved["main_api"] == "openai"
    _show_report(page)
    page.screenshot(f"journey-switch-ready-{stack.version}.png", full_page=False)

    # Ready to chat: a message typed into ST's box is answered through the subscription address.
    reply = send_message(page, "Hello?")
    assert reply == f"Hello from the fake NanoGPT ({model} on /api/subscription/v1)."
    sent = stack.fake.inference.records[-1]
    assert sent.base == "subscription/v1" and sent.key_id == key_id(SUBSCRIBER_KEY)

    # Undo: the built-in source again, and secrets.json byte for byte as before.
    open_drawer(page)
    page.page.click(f'{REPORT} button[data-act="undo-switch"]')
    page.page.wait_for_function(
        "() => SillyTavern.getContext().chatCompletionSettings.chat_completion_source === 'nanogpt'"
    )
    stack.wait_for_settings(lambda s: s["oai_settings"]["chat_completion_source"] == "nanogpt")
    page.page.wait_for_function(
        "(m) => SillyTavern.getContext().chatCompletionSettings.nanogpt_model === m", arg=model, timeout=30000
    )
    assert (stack.user_dir() / "secrets.json").read_bytes() == secrets_before


def test_text_completion_switch_sets_url_key_model_and_context(
    versioned_stack: RealStack, st_page_for: Any
) -> None:
    """Text Completion, Generic type: the NanoGPT address, the key in ST's Generic slot, a model from the
    list ST fetched, the context size from the catalogue (within ST's slider), connected, and a reply."""
    stack = versioned_stack
    model = stack.unused_model()
    stack.seed_user(oai={**CLEAN_OAI, "nanogpt_model": model})
    _only_nanogpt_key(stack, other_custom=False)
    page: STPage = st_page_for(stack, seed=False)
    wait_catalog(page)
    open_drawer(page)
    page.page.check("#ngc_set_context")
    text = _switch(page, "v1", "text")
    assert "Ready to chat" in text
    tc = page.js("() => SillyTavern.getContext().textCompletionSettings")
    assert page.js("() => SillyTavern.getContext().mainApi") == "textgenerationwebui"
    assert tc["type"] == "generic" and tc["server_urls"]["generic"] == V1_URL
    assert tc["generic_model"] == model
    assert _active_value(stack.read_secrets(), "api_key_generic") == SUBSCRIBER_KEY
    assert page.js("() => SillyTavern.getContext().onlineStatus") != "no_connection"
    assert model in page.js("[...document.querySelectorAll('#generic_model_fill option')].map(o => o.value)")
    # ST's Text Completion status names the list's first model; the report does not repeat another model.
    connected = (page.page.text_content(f'{REPORT} li[data-step="connected"]') or "").strip()
    assert connected.endswith("connected") or connected.endswith(f"({model})"), connected
    # Text Completion on a NanoGPT address counts as NanoGPT: the balance chip stays beside the chat box.
    page.page.wait_for_selector("#ngc_chat_balance")
    assert stack.service is not None
    _, catalog = stack.service.request("GET", "/api/catalog")
    context = next(m["context_length"] for m in catalog["models"] if m["id"] == model)
    slider_max = int(page.js("() => Number(document.querySelector('#max_context').max)"))
    expected = min(context or 0, slider_max) if context else None
    if expected:
        assert page.js("() => SillyTavern.getContext().maxContext") == expected
        if context > slider_max:  # the report says why it is less than the model's
            step = page.page.text_content(f'{REPORT} li[data-step="context"]') or ""
            assert "slider stops here" in step
    saved = stack.wait_for_settings(
        lambda s: (
            s["main_api"] == "textgenerationwebui"
            and s["textgenerationwebui_settings"]["generic_model"] == model
            and s["textgenerationwebui_settings"]["server_urls"]["generic"] == V1_URL
        )
    )
    if expected:
        assert saved["max_context"] == expected
    _show_report(page)
    page.screenshot(f"journey-text-completion-ready-{stack.version}.png", full_page=False)
    reply = send_message(page, "Hello?")
    assert reply.strip() == f"Hello from the fake NanoGPT ({model} on /api/v1)."
    sent = stack.fake.inference.records[-1]
    assert sent.kind == "text" and sent.base == "v1" and sent.key_id == key_id(SUBSCRIBER_KEY)


def test_switch_back_to_the_built_in_source(stack: RealStack, st_page_for: Any) -> None:
    """From Custom on a NanoGPT address back to ST's own NanoGPT source: its list fetched, the model kept
    (NanoGPT's v1 list for this key has it), connected, and a reply through /api/v1."""
    model = stack.unused_model()
    stack.seed_user(
        oai={
            **CLEAN_OAI,
            "chat_completion_source": "custom",
            "custom_url": SUB_URL,
            "custom_model": model,
            "nanogpt_model": "gpt-4o-mini",
        }
    )
    page: STPage = st_page_for(stack, seed=False)
    wait_catalog(page)
    text = _switch(page, "builtin")
    assert "Ready to chat" in text
    assert "Chat Completion Source: Custom (OpenAI-compatible) → NanoGPT" in text  # ST's own words
    assert oai(page, "chat_completion_source") == "nanogpt"
    assert oai(page, "nanogpt_model") == model
    assert page.page.eval_on_selector("#model_nanogpt_select", "el => el.value") == model
    stack.wait_for_settings(
        lambda s: (
            s["oai_settings"]["chat_completion_source"] == "nanogpt"
            and s["oai_settings"]["nanogpt_model"] == model
        )
    )
    _show_report(page)
    page.screenshot("journey-switch-builtin.png", full_page=False)
    assert send_message(page, "Hello?") == f"Hello from the fake NanoGPT ({model} on /api/v1)."


def test_a_switch_that_cannot_complete_says_what_and_why(stack: RealStack, st_page_for: Any) -> None:
    """No NanoGPT key anywhere in ST: the switch happens, but the panel says the key is missing, where to
    put it, and that ST is not ready; an address NanoGPT cannot serve for Text Completion changes nothing."""
    stack.seed_user(oai=CLEAN_OAI, key=None)
    page: STPage = st_page_for(stack, seed=False)
    wait_catalog(page)
    text = _switch(page, "subscription", state="incomplete")
    assert "not ready" in text and "No NanoGPT API key was found in SillyTavern" in text
    assert page.page.get_attribute(f'{REPORT} li[data-step="key"]', "data-ok") == "false"
    assert page.page.query_selector(f'{REPORT} button[data-act="retry-switch"]') is not None
    _show_report(page)
    page.screenshot("journey-switch-missing-key.png", full_page=False)
    # A Text Completion target NanoGPT cannot serve: refused before anything changes.
    before = page.js("() => SillyTavern.getContext().mainApi")
    assert page.slash("/nano-endpoint text:subscription") == ""
    page.page.wait_for_selector("#toast-container .toast-warning")
    warning = page.page.text_content("#toast-container .toast-warning") or ""
    assert "does not serve Text Completion" in warning and "text:v1" in warning
    assert page.js("() => SillyTavern.getContext().mainApi") == before
    open_drawer(page)
    assert "does not serve Text Completion" in (page.page.text_content(REPORT) or "")


def test_use_from_the_catalogue_sets_the_text_completion_model_and_context(
    stack: RealStack, st_page_for: Any
) -> None:
    """With Text Completion active, "Use" sets Text Completion's model (not the Custom source's) and, with
    "Set context size from the catalogue" on, its context slider."""
    assert stack.service is not None
    _, catalog = stack.service.request("GET", "/api/catalog?tier=subscription&sort=context")
    # A context ST's (unlocked) slider can take, and not the 8192 the user has: the change must show.
    target = next(
        m
        for m in catalog["models"]
        if m["context_length"] and 8192 < m["context_length"] <= 512 * 1024 and ":" not in m["id"]
    )
    custom_before = "custom/untouched-model"
    settings = stack.seed_user(
        oai={**CLEAN_OAI, "custom_model": custom_before}, main_api="textgenerationwebui"
    )
    settings["textgenerationwebui_settings"].update(
        type="generic", generic_model="", server_urls={"generic": V1_URL}
    )
    settings["power_user"]["max_context_unlocked"] = True  # "Unlocked" in AI Response Configuration
    settings["max_context"] = 8192
    stack.write_settings(settings)
    page: STPage = st_page_for(stack, seed=False)
    wait_catalog(page)
    open_drawer(page)
    page.page.check("#ngc_set_context")
    page.page.click("#ngc_browse")
    page.page.wait_for_selector("dialog.popup .ngc-catalog .ngc-model")
    page.page.fill('.ngc-catalog [data-f="q"]', target["id"])
    page.page.click(f'.ngc-catalog button[data-act="use"][data-id="{target["id"]}"]')
    page.page.wait_for_function(
        "(id) => SillyTavern.getContext().textCompletionSettings.generic_model === id", arg=target["id"]
    )
    assert page.page.input_value("#generic_model_textgenerationwebui") == target["id"]
    assert oai(page, "custom_model") == custom_before
    expected = target["context_length"]
    page.page.wait_for_function("(n) => SillyTavern.getContext().maxContext === n", arg=expected)
    _wait_toast(page, f"Context (tokens): 8,192 → {expected:,}", "toast-success")
    # The row of the model in use is marked, and first.
    first = page.page.query_selector(".ngc-catalog .ngc-model")
    assert first is not None and first.get_attribute("data-id") == target["id"]
    assert first.query_selector(".ngc-tag-current") is not None
    page.screenshot("journey-use-text-completion.png", full_page=False)
    page.page.keyboard.press("Escape")
    saved = stack.wait_for_settings(
        lambda s: (
            s["textgenerationwebui_settings"]["generic_model"] == target["id"]
            and s["max_context"] == expected
        )
    )
    assert saved["oai_settings"]["custom_model"] == custom_before


def test_typing_a_custom_model_id_sets_the_context_too(stack: RealStack, st_page_for: Any) -> None:
    """Typing into ST's "Enter a Model ID" field emits no model-changed event (public/scripts/openai.js), but
    the per-model follow-up (context size from the catalogue) runs for it as for a pick from the list."""
    assert stack.service is not None
    _, catalog = stack.service.request("GET", "/api/catalog?tier=subscription&sort=context")
    target = next(m for m in catalog["models"] if m["context_length"] and m["context_length"] > 32768)
    stack.seed_user(
        oai={**CLEAN_OAI, "chat_completion_source": "custom", "custom_url": SUB_URL, "custom_model": ""}
    )
    page: STPage = st_page_for(stack, seed=False)
    wait_catalog(page)
    open_drawer(page)
    page.page.check("#ngc_set_context")
    reveal(page, "#custom_model_id")
    page.page.fill("#custom_model_id", target["id"])
    page.page.wait_for_function(
        "(n) => SillyTavern.getContext().chatCompletionSettings.openai_max_context === n",
        arg=target["context_length"],
    )
    stack.wait_for_settings(
        lambda s: (
            s["oai_settings"]["custom_model"] == target["id"]
            and s["oai_settings"]["openai_max_context"] == target["context_length"]
        )
    )


def test_rejected_key_is_plain_and_recovers_when_the_key_changes(
    versioned_stack: RealStack, st_page_for: Any
) -> None:
    """NanoGPT refuses the key: the panel says so (when, what to do), claims no subscription, offers "Check
    again" (rate-limited, visibly); replacing the key in ST's secrets.json brings the balance back by
    itself, without a click."""
    stack = versioned_stack
    fake = stack.fake
    stack.seed_user(oai=CLEAN_OAI, key=INVALID_KEY)
    page: STPage = st_page_for(stack, seed=False)
    open_drawer(page)
    page.page.wait_for_selector('#ngc_key_state[data-key-status="rejected"]:not([hidden])', timeout=30000)
    state = page.page.text_content("#ngc_key_state") or ""
    assert "NanoGPT rejected your API key" in state and "checked" in state and "API Connections" in state
    assert page.page.text_content("#ngc_sub_state") == "unknown"
    assert page.page.text_content("#ngc_usd") == "—"
    assert page.page.is_hidden("#ngc_low_icon")  # no balance is not a low balance
    # The header pill (seen with the drawer closed) names the key problem, not a green "connected".
    assert page.page.get_attribute("#ngc_status_pill", "data-key") == "rejected"
    assert page.page.text_content("#ngc_status_pill") == "key rejected"
    # The endpoint panel recommends nothing on the strength of an unknown plan.
    page.page.wait_for_function(
        "() => (document.querySelector('#ngc_endpoints .ngc-rec-line')?.textContent ?? '')"
        ".includes('rejected')"
    )
    assert "active NanoGPT subscription" not in (page.page.text_content("#ngc_endpoints") or "")
    page.screenshot(f"journey-key-rejected-{stack.version}.png", full_page=False)

    # "Check again" asks NanoGPT now (once the rate limit allows), and says when it last did.
    button = '#ngc_key_state button[data-act="check-again"]'
    page.page.wait_for_selector("#ngc_refresh:not([disabled])", timeout=20000)
    tries = fake.count("/api/check-balance", key=INVALID_KEY)
    page.page.click(button)
    # Done when the spinner stops; the button then waits out the rate limit, saying so.
    page.page.wait_for_selector("#ngc_refresh[disabled]:not(.ngc-spinning)")
    assert "Can refresh again in" in (page.page.get_attribute("#ngc_refresh", "title") or "")
    assert fake.count("/api/check-balance", key=INVALID_KEY) == tries + 1

    # The user fixes the key in ST: secrets.json changes; the service notices and the panel recovers.
    good = load_version_fixture(stack.version, "secrets.json")
    for slot in ("api_key_nanogpt", "api_key_custom", "api_key_generic"):
        for entry in good.get(slot, []):
            entry["value"] = SUBSCRIBER_KEY
    stack.write_secrets(good)
    page.page.wait_for_function(
        "() => document.querySelector('#ngc_usd').textContent.startsWith('$')", timeout=30000
    )
    assert page.page.is_hidden("#ngc_key_state")
    assert page.page.text_content("#ngc_sub_state") == "active"
    assert page.page.text_content("#ngc_status_pill") == "connected"
    assert page.page.get_attribute("#ngc_status_pill", "data-key") is None
    page.screenshot(f"journey-key-recovered-{stack.version}.png", full_page=False)


def test_alerts_fired_while_st_was_closed_are_shown_once(stack: RealStack, st_page_for: Any) -> None:
    """A quota at 85 % and a balance under the threshold, found by a poll while no ST tab is open: the next
    page shows both alerts (kept by the service until then) and the low balance on the balance itself; the
    page after that does not show them again."""
    assert stack.service is not None
    account = stack.fake.accounts[SUBSCRIBER_KEY]
    saved = (account.usd_balance, account.usage_payload)
    usage = account.usage()
    week = usage["weeklyInputTokens"]
    week.update(used=0.85 * 60_000_000, remaining=0.15 * 60_000_000, percentUsed=0.85)
    # A window of its own, so earlier polls of this session's service never alerted for it.
    week["resetAt"] = int(week["resetAt"]) + 7 * 86_400_000
    account.usage_payload = usage
    account.usd_balance = "0.42"
    try:
        stack.seed_user(oai=CLEAN_OAI)
        status, snap = stack.service.request("GET", "/api/account?refresh=1")  # the service's own poll
        assert status == 200 and snap["low_balance"] is True
        _, inbox = stack.service.request("GET", "/api/alerts")
        assert {a["kind"] for a in inbox["alerts"]} >= {"quota_80", "low_balance"}

        page: STPage = st_page_for(stack, seed=False)
        page.page.wait_for_function(
            "() => [...document.querySelectorAll('#toast-container .toast')].length >= 2", timeout=20000
        )
        toasts = " ".join(
            t.text_content() or "" for t in page.page.query_selector_all("#toast-container .toast")
        )
        assert "Weekly input-token quota is 85% used" in toasts and "$0.42" in toasts
        page.page.wait_for_selector("#ngc_drawer_root[data-alerts-checked]", state="attached")
        open_drawer(page)
        page.page.wait_for_selector("#ngc_usd.ngc-low")
        assert page.page.is_visible("#ngc_low_icon")
        assert page.page.get_attribute("#ngc_chat_balance", "data-low") == "true"
        page.screenshot("journey-alerts-low-balance.png", full_page=False)
        _, inbox = stack.service.request("GET", "/api/alerts")
        assert inbox["alerts"] == []  # the tab said it showed them
        again: STPage = st_page_for(stack, seed=False)
        again.page.wait_for_selector("#ngc_drawer_root[data-alerts-checked]", state="attached")
        _, inbox = stack.service.request("GET", "/api/alerts")
        assert inbox["alerts"] == []
        assert not any(
            "quota" in (t.text_content() or "")
            for t in again.page.query_selector_all("#toast-container .toast")
        )
    finally:
        account.usd_balance, account.usage_payload = saved
        stack.service.request("GET", "/api/account?refresh=1")


def test_balance_refresh_is_visible_and_rate_limited(stack: RealStack, st_page_for: Any) -> None:
    """The refresh button asks NanoGPT now and shows when; it then waits out the rate limit (it cannot
    hammer NanoGPT); /nano-balance refreshes too and shows its result."""
    account = stack.fake.accounts[SUBSCRIBER_KEY]
    saved = account.usd_balance
    try:
        stack.seed_user(oai=CLEAN_OAI)
        page: STPage = st_page_for(stack, seed=False)
        open_drawer(page)
        page.page.wait_for_function("() => document.querySelector('#ngc_usd').textContent.startsWith('$')")
        page.page.wait_for_selector("#ngc_refresh:not([disabled])", timeout=20000)
        account.usd_balance = "77.70000000"
        calls = stack.fake.count("/api/check-balance", key=SUBSCRIBER_KEY)
        page.page.click("#ngc_refresh")
        page.page.wait_for_function("() => document.querySelector('#ngc_usd').textContent === '$77.70'")
        assert stack.fake.count("/api/check-balance", key=SUBSCRIBER_KEY) == calls + 1
        assert (page.page.text_content("#ngc_updated") or "").startswith("updated ")
        page.page.wait_for_selector("#ngc_refresh[disabled]:not(.ngc-spinning)")
        page.screenshot("journey-balance-refresh.png", full_page=False)
        # Pressing again during the wait sends nothing (the button is disabled; the command is served
        # from what was just fetched).
        assert "$77.70" in page.slash("/nano-balance")
        assert stack.fake.count("/api/check-balance", key=SUBSCRIBER_KEY) == calls + 1
        page.page.wait_for_selector("#ngc_refresh:not([disabled])", timeout=20000)
        account.usd_balance = "66.60000000"
        assert "$66.60" in page.slash("/nano-balance")  # the command refreshed
        page.page.wait_for_selector("#toast-container .toast-info")
        assert "$66.60" in (page.page.text_content("#toast-container") or "")
    finally:
        account.usd_balance = saved


def test_policy_per_rule_in_the_doctor_panel(stack: RealStack, st_page_for: Any) -> None:
    """Each rule has an automatic / ask / off control; turning a rule off hides its finding and says one
    finding is hidden; turning it back on shows it again. The service keeps the choice."""
    assert stack.service is not None
    stack.seed_user(oai={**CLEAN_OAI, "nanogpt_model": stack.unused_model(), "function_calling": True})
    page: STPage = st_page_for(stack, seed=False)
    open_drawer(page)
    finding = '#ngc_findings li[data-id^="ppp.tools"]'
    page.page.wait_for_selector(finding, timeout=20000)
    page.page.click("#ngc_policies > summary")
    select = '#ngc_policy_list select[data-rule="ppp.tools"]'
    page.page.wait_for_selector(select)
    labels = page.page.text_content("#ngc_policy_list") or ""
    assert "ppp.tools" not in labels  # rules by name, not by id
    page.page.select_option(select, "off")
    page.page.wait_for_selector(finding, state="detached", timeout=20000)
    page.page.wait_for_selector("#ngc_muted_note:not([hidden])")
    _, report = stack.service.request("GET", "/api/doctor")
    # The service leaves an "off" rule's findings out of the list and names them in muted_findings.
    assert not [f for f in report["findings"] if f["id"].startswith("ppp.tools")]
    title = next(f["title"] for f in report["muted_findings"] if f["id"].startswith("ppp.tools"))
    note = page.page.text_content("#ngc_muted_note") or ""
    assert "1 finding hidden" in note and title in note  # which finding is off, by name
    _, policies = stack.service.request("GET", "/api/doctor/policy")
    assert policies["policies"]["ppp.tools"] == "off"
    page.show("#ngc_policies")
    page.screenshot("journey-policies.png", full_page=False)
    page.page.select_option(select, "ask")
    page.page.wait_for_selector(finding, timeout=20000)
    _, policies = stack.service.request("GET", "/api/doctor/policy")
    assert policies["policies"]["ppp.tools"] == "ask"


def test_nanogpt_unreachable_with_no_catalogue_says_why_and_retries(
    stack: RealStack, st_page_for: Any
) -> None:
    """A key whose catalogue the service never fetched, and NanoGPT's model lists failing: the panel says
    NanoGPT cannot be reached and when it last synced (never), the browser says "no data" with a retry
    (not "no match"); once NanoGPT answers, Retry fills both; "no match" then is a different message."""
    fake = stack.fake
    stack.seed_user(oai=CLEAN_OAI, key=PAYG_KEY)  # another key: another, still empty, catalogue cache
    fake.faults.status(503, "/api/*models")
    try:
        page: STPage = st_page_for(stack, seed=False)
        open_drawer(page)
        page.page.wait_for_selector("#ngc_catalog_problem:not([hidden])", timeout=30000)
        problem = page.page.text_content("#ngc_catalog_problem") or ""
        assert "NanoGPT cannot be reached; last sync never" in problem
        page.page.click("#ngc_browse")
        page.page.wait_for_selector('dialog.popup .ngc-catalog [data-empty="no-data"]')
        empty = page.page.text_content(".ngc-catalog [data-empty]") or ""
        assert "No model matches" not in empty and "Last sync: never" in empty
        assert "NanoGPT" in empty  # the service's reason, e.g. that NanoGPT did not answer
        page.screenshot("journey-offline-no-catalogue.png", full_page=False)
        fake.faults.clear()
        page.page.click('.ngc-catalog [data-empty] button[data-act="retry"]')
        page.page.wait_for_selector(".ngc-catalog .ngc-model", timeout=30000)
        page.page.fill('.ngc-catalog [data-f="q"]', "zz-no-such-model-zz")
        page.page.wait_for_selector('.ngc-catalog [data-empty="no-match"]')
        assert "No model matches these filters" in (page.page.text_content(".ngc-catalog [data-empty]") or "")
        page.page.click('.ngc-catalog [data-empty] button[data-act="clear"]')
        page.page.wait_for_selector(".ngc-catalog .ngc-model")
        page.page.keyboard.press("Escape")
        assert page.page.is_hidden("#ngc_catalog_problem")
        assert "models · synced" in (page.page.text_content("#ngc_catalog_summary") or "")
    finally:
        fake.faults.clear()


def test_sync_shows_what_changed_marks_the_model_in_use_and_hides_junk(
    stack: RealStack, st_page_for: Any
) -> None:
    """After "Sync now" the panel lists the model added, the one removed (called out as the model in use)
    and the price change; the catalogue marks the model in use; entries without a usable id appear neither
    in the catalogue nor in ST's own model list."""
    fake = stack.fake
    in_use = stack.unused_model()
    repriced = stack.unused_model()
    old_price = dict(fake.model(repriced)["pricing"])
    template = dict(fake.model(in_use))
    added = dict(template, id="acme/brand-new-1", name="Acme Brand New 1")
    junk = [
        dict(template, id="junk id with spaces", name="Junk"),
        dict(template, id="", name="Nameless junk"),
    ]
    stack.seed_user(
        oai={**CLEAN_OAI, "chat_completion_source": "custom", "custom_url": SUB_URL, "custom_model": in_use}
    )
    page: STPage = st_page_for(stack, seed=False)
    wait_catalog(page)
    removed = fake.remove_model(in_use)
    try:
        fake.add_model(added)
        for entry in junk:
            fake.add_model(entry)
        fake.set_price(repriced, prompt=12.5, completion=25.0)
        open_drawer(page)
        page.page.click("#ngc_sync")
        page.page.wait_for_selector("#ngc_sync_changes:not([hidden])", timeout=30000)
        report = page.page.text_content("#ngc_sync_changes") or ""
        assert "Acme Brand New 1" in report
        assert f"{removed['name']}" in report and "(the model you use)" in report
        assert "$12.5/$25" in report
        assert "junk" not in report.lower()
        page.show("#ngc_sync_changes")
        page.screenshot("journey-sync-report.png", full_page=False)
        # The catalogue: junk left out, the model in use marked (it is still in use, though gone upstream:
        # the marker follows ST's setting, so put it back first).
        fake.add_model(removed)
        page.page.click("#ngc_sync")
        page.page.wait_for_function(
            "(name) => (document.querySelector('#ngc_sync_changes [data-group=\"added\"]')"
            "?.textContent ?? '').includes(name)",
            arg=removed["name"],
        )
        page.page.click("#ngc_browse")
        page.page.wait_for_selector("dialog.popup .ngc-catalog .ngc-model")
        first = page.page.query_selector(".ngc-catalog .ngc-model")
        assert first is not None and first.get_attribute("data-id") == in_use
        assert (first.text_content() or "").count("in use") == 1
        ids = page.js("[...document.querySelectorAll('.ngc-catalog .ngc-model')].map(r => r.dataset.id)")
        assert "acme/brand-new-1" in ids and "junk id with spaces" not in ids and "" not in ids
        page.page.keyboard.press("Escape")
        # ST's own Custom list (filled by ST's Connect from NanoGPT's raw list) hides the junk rows.
        reveal(page, "#model_custom_select")
        page.page.click("#api_button_openai")
        _wait_option(page, "#model_custom_select", "acme/brand-new-1")
        page.page.wait_for_function(
            "() => [...document.querySelectorAll('#model_custom_select option')]"
            ".filter(o => o.value === 'junk id with spaces').every(o => o.hidden && o.disabled)"
        )
        assert page.js(
            "() => [...document.querySelectorAll('#model_custom_select option')]"
            ".filter(o => !o.hidden)"
            ".every(o => o.value === '' ? o.textContent.trim() !== '' : !/\\s/.test(o.value))"
        )
    finally:
        if in_use not in fake.ids("v1"):
            fake.add_model(removed)
        for model_id in ("acme/brand-new-1", "junk id with spaces", ""):
            if model_id in {m["id"] for m in fake.models}:
                fake.remove_model(model_id)
        fake.set_price(repriced, prompt=old_price.get("prompt"), completion=old_price.get("completion"))
        assert stack.service is not None
        stack.service.request("POST", "/api/catalog/refresh")


_HAS_OPTION = "([sel, v]) => [...document.querySelectorAll(sel + ' option')].some(o => o.value === v)"
_HAS_TOAST = (
    "([cls, text]) => [...document.querySelectorAll('#toast-container .' + cls)]"
    ".some(t => t.textContent.includes(text))"
)


def _wait_option(page: STPage, select: str, value: str, timeout: float = 30000) -> None:
    try:
        page.page.wait_for_function(_HAS_OPTION, arg=[select, value], timeout=timeout)
    except Exception as exc:
        # Say what the extension reported about ST's list, not only that the option never came.
        report = page.js(
            "() => document.querySelector('#ngc_sync_changes')?.textContent ?? '(no sync report)'"
        )
        raise AssertionError(f"{value} never appeared in {select}; the panel said: {report}") from exc


def _wait_toast(page: STPage, text: str, cls: str = "toast") -> None:
    page.page.wait_for_function(_HAS_TOAST, arg=[cls, text])


def _warnings(page: STPage) -> str:
    return " ".join(
        t.text_content() or "" for t in page.page.query_selector_all("#toast-container .toast-warning")
    )


def test_slash_commands_show_results_and_refuse_bad_arguments(stack: RealStack, st_page_for: Any) -> None:
    """Each command shows its outcome as a toast and returns a pipeable value; a bad argument is refused
    with what is accepted, and nothing in ST changes."""
    model = stack.unused_model()
    stack.seed_user(
        oai={**CLEAN_OAI, "chat_completion_source": "custom", "custom_url": SUB_URL, "custom_model": model}
    )
    page: STPage = st_page_for(stack, seed=False)
    wait_catalog(page)
    before = page.js("() => JSON.stringify(SillyTavern.getContext().chatCompletionSettings)")
    refused = {
        "/nano-endpoint": "name an endpoint",
        "/nano-endpoint tier9": 'Unknown NanoGPT endpoint "tier9"',
        "/nano-endpoint text:paid": "does not serve Text Completion",
        "/nano-thinking maybe": 'use "on" or "off"',
        "/nano-fix no.such.finding": 'no open finding "no.such.finding"',
    }
    for command, message in refused.items():
        count = len(page.page.query_selector_all("#toast-container .toast-warning"))
        assert page.slash(command) == "", command
        page.page.wait_for_function(
            "(n) => document.querySelectorAll('#toast-container .toast-warning').length > n", arg=count
        )
        assert message in _warnings(page), command
    assert page.js("() => JSON.stringify(SillyTavern.getContext().chatCompletionSettings)") == before
    page.screenshot("journey-slash-refused.png", full_page=False)

    assert page.slash("/nano-sync").startswith("Catalogue synced")
    _wait_toast(page, "Catalogue synced", "toast-success")
    listed = page.slash("/nano-fix")
    page.page.wait_for_function(
        "() => [...document.querySelectorAll('#toast-container .toast')]"
        ".some(t => /findings|no problems/.test(t.textContent))"
    )
    assert isinstance(listed, str)
    assert stack.service is not None
    _, catalog = stack.service.request("GET", "/api/catalog")
    ids = {m["id"] for m in catalog["models"]}
    base = next(i for i in sorted(ids) if f"{i}:thinking" in ids)
    page.js("(id) => jQuery('#custom_model_id').val(id).trigger('input')", base)
    assert page.slash("/nano-thinking on") == f"{base}:thinking"
    _wait_toast(page, f"{base}:thinking", "toast-success")
    assert page.slash("/nano-thinking off | /echo") != ""
    assert oai(page, "custom_model") == base


def test_phone_endpoint_explanations_open_by_touch(stack: RealStack, st_page_for: Any) -> None:
    """At phone width the endpoint buttons show readable names with the id beneath, and each explanation
    is expandable text a tap opens (no hover tooltip needed)."""
    stack.seed_user(oai=CLEAN_OAI)
    page: STPage = st_page_for(stack, seed=False, width=390, height=844, touch=True)
    open_drawer(page)
    _wait_endpoints(page)
    button = '#ngc_endpoints button[data-ep="v1legacy"][data-mode="chat"]'
    assert page.page.text_content(f"{button} .ngc-ep-title") == "Legacy reasoning format"
    assert page.page.text_content(f"{button} .ngc-ep-id") == "v1legacy"
    assert page.page.get_attribute(button, "title") is None  # nothing hides behind a hover
    summary = '#ngc_endpoints details.ngc-ep-explain:has(code:text("v1legacy")) > summary'
    page.page.locator(summary).scroll_into_view_if_needed()  # a Playwright selector (:text), not CSS
    page.page.tap(summary)
    text = page.page.locator("#ngc_endpoints details.ngc-ep-explain[open] p")
    assert "reasoning_content" in (text.text_content() or "")
    box = page.page.locator(button).bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390
    page.screenshot("journey-phone-endpoints.png", full_page=False)


def test_badge_only_with_nanogpt_opens_the_drawer_and_balance_stays_in_view(
    stack: RealStack, st_page_for: Any
) -> None:
    """With another API the badge and the chat chip are absent; choosing NanoGPT in ST's own select adds
    them; the chip sits beside ST's chat box (desktop and phone) and a click opens this drawer."""
    stack.seed_user(oai={**CLEAN_OAI, "chat_completion_source": "openai"})
    page: STPage = st_page_for(stack, seed=False)
    page.page.wait_for_function("() => document.querySelector('#ngc_usd')?.textContent.startsWith('$')")
    assert page.page.query_selector("#ngc_badge") is None
    assert page.page.query_selector("#ngc_chat_balance") is None
    reveal(page, "#chat_completion_source")
    page.page.select_option("#chat_completion_source", "nanogpt")
    page.page.wait_for_selector("#ngc_chat_balance")
    assert page.page.query_selector("#ngc_badge") is not None
    chip = page.page.locator("#ngc_chat_balance")
    page.page.wait_for_function("() => document.querySelector('#ngc_chat_balance').textContent.includes('$')")
    # Beside ST's chat input, inside the send form, not covering the text box.
    form = page.page.locator("#send_form").bounding_box()
    chip_box = chip.bounding_box()
    area = page.page.locator("#send_textarea").bounding_box()
    assert form and chip_box and area
    assert form["y"] <= chip_box["y"] and chip_box["y"] + chip_box["height"] <= form["y"] + form["height"]
    assert chip_box["x"] + chip_box["width"] <= area["x"] + 1
    open_top_drawer(page, "ai")  # the drawer is closed: the chip opens it
    chip.click()
    page.page.wait_for_selector("#ngc_drawer_content", state="visible")
    assert page.page.is_visible("#rm_extensions_block")
    page.screenshot("journey-chat-chip-desktop.png", full_page=False)
    # The badge at the top of API Connections opens the drawer too (ST shows one top panel at a time).
    open_top_drawer(page, "api")
    page.page.wait_for_selector("#rm_extensions_block", state="hidden")
    page.page.click("#ngc_badge")
    page.page.wait_for_selector("#ngc_drawer_content", state="visible")
    assert page.page.is_visible("#rm_extensions_block")
    # Another API again: both go away.
    reveal(page, "#chat_completion_source")
    page.page.select_option("#chat_completion_source", "openai")
    page.page.wait_for_selector("#ngc_chat_balance", state="detached")
    assert page.page.query_selector("#ngc_badge") is None


def test_chat_chip_fits_st_on_a_phone(stack: RealStack, st_page_for: Any) -> None:
    stack.seed_user(oai=CLEAN_OAI)
    page: STPage = st_page_for(stack, seed=False, width=390, height=844)
    page.page.wait_for_function(
        "() => document.querySelector('#ngc_chat_balance')?.textContent.includes('$')"
    )
    chip = page.page.locator("#ngc_chat_balance").bounding_box()
    area = page.page.locator("#send_textarea").bounding_box()
    assert chip and area
    assert chip["x"] >= 0 and chip["x"] + chip["width"] <= area["x"] + 1
    assert area["width"] > 390 * 0.45  # the chat box keeps most of the width
    page.screenshot("journey-chat-chip-phone.png", full_page=False)


def _put_catalogue_back(stack: RealStack, removed: dict[str, Any], added_id: str) -> None:
    """Undo a test's catalogue change on the shared fake (and the service's copy) for the tests after it."""
    ids = {m["id"] for m in stack.fake.models}
    if removed["id"] not in ids:
        stack.fake.add_model(removed)
    if added_id in ids:
        stack.fake.remove_model(added_id)
    assert stack.service is not None
    stack.service.request("POST", "/api/catalog/refresh")


def _refresh_and_expect_sts_list_to_follow(
    stack: RealStack, page: STPage, source: str, model: str, gone: str, new_id: str
) -> None:
    """The service refreshes its catalogue (NanoGPT gained ``new_id`` and lost ``gone``): ST's own list for
    ``source`` ("nanogpt" or "custom") follows, ``model`` stays selected, and the panel says so."""
    assert stack.service is not None
    status, _ = stack.service.request("POST", "/api/catalog/refresh")  # the service's own refresh
    assert status == 200
    select = f"#model_{source}_select"
    _wait_option(page, select, new_id)
    assert gone not in page.js(
        "(sel) => [...document.querySelectorAll(sel + ' option')].map(o => o.value)", select
    )
    assert oai(page, f"{source}_model") == model
    assert page.page.eval_on_selector(select, "el => el.value") == model
    open_drawer(page)
    page.page.wait_for_selector('#ngc_sync_changes [data-group="st"]', timeout=20000)
    note = page.page.text_content('#ngc_sync_changes [data-group="st"]') or ""
    assert "model list refreshed: +1 new, −1 removed" in note and f"{model} stays selected" in note


def test_catalogue_change_refreshes_sts_own_list_when_idle(stack: RealStack, st_page_for: Any) -> None:
    """The service refreshes the catalogue by itself; ST's own NanoGPT list follows through ST's Connect
    (a new model appears, a removed one goes), the user's model stays selected, and the panel says what
    changed. When the model in use is removed, ST's list is not reloaded (ST would switch the model
    silently); the removed entries are disabled and the doctor's finding appears at once."""
    assert stack.service is not None
    fake = stack.fake
    model = stack.unused_model()
    gone = stack.unused_model()
    stack.seed_user(oai={**CLEAN_OAI, "nanogpt_model": model})
    page: STPage = st_page_for(stack, seed=False)
    wait_catalog(page)
    connect_builtin(page)
    page.page.wait_for_function(
        "(m) => document.querySelector('#model_nanogpt_select').value === m", arg=model
    )
    added = dict(fake.model(model), id="acme/fresh-model-2", name="Acme Fresh Model 2")
    removed = fake.remove_model(gone)
    fake.add_model(added)
    try:
        _refresh_and_expect_sts_list_to_follow(stack, page, "nanogpt", model, gone, "acme/fresh-model-2")
        stack.wait_for_settings(lambda s: s["oai_settings"]["nanogpt_model"] == model)
        page.show("#ngc_sync_changes")
        page.screenshot("journey-auto-sync.png", full_page=False)

        # Now NanoGPT drops the model in use.
        in_use = fake.remove_model(model)
        try:
            stack.service.request("POST", "/api/catalog/refresh")
            page.page.wait_for_function(
                "(m) => [...document.querySelectorAll('#model_nanogpt_select option')]"
                ".some(o => o.value === m && o.hasAttribute('data-ngc-removed'))",
                arg=model,
                timeout=30000,
            )
            assert oai(page, "nanogpt_model") == model  # not silently switched
            page.page.wait_for_selector('#ngc_findings li[data-id^="model.gone"]', timeout=20000)
            assert "no longer offers the model you use" in (page.page.text_content("#ngc_sync_changes") or "")
            page.show('#ngc_findings li[data-id^="model.gone"]')
            page.screenshot("journey-auto-sync-model-removed.png", full_page=False)
        finally:
            fake.add_model(in_use)
    finally:
        _put_catalogue_back(stack, removed, "acme/fresh-model-2")


def _name_words(model_id: str) -> set[str]:
    """The words of a model id after its vendor, numbers left out ("ArliAI/Derestricted-GLM-1.7":
    derestricted, glm): what makes two models of one vendor the same family."""
    return {w for w in re.split(r"[^a-z0-9]+", model_id.split("/", 1)[-1].lower()) if w and not w.isdigit()}


def test_switch_to_an_address_without_the_model_picks_one_and_says_so(
    stack: RealStack, st_page_for: Any
) -> None:
    """The model in use on the built-in source is not on the subscription list: the switch picks one that
    is (the same vendor's, for a subscriber), says which and why in the panel, and ST is ready to chat."""
    fake = stack.fake
    subscription = set(fake.ids("subscription"))
    vendor_of = {m: m.split("/", 1)[0] for m in fake.ids("v1") if "/" in m}
    paid = next(
        m
        for m in sorted(fake.ids("paid"))
        if ":" not in m
        and m in vendor_of
        and any(vendor_of.get(s) == vendor_of[m] and ":" not in s for s in subscription)
    )
    stack.seed_user(oai={**CLEAN_OAI, "nanogpt_model": paid})
    _only_nanogpt_key(stack, other_custom=False)
    page: STPage = st_page_for(stack, seed=False)
    wait_catalog(page)
    text = _switch(page, "subscription")
    assert "Ready to chat" in text
    chosen = oai(page, "custom_model")
    assert chosen != paid and chosen in subscription
    assert vendor_of.get(chosen) == vendor_of[paid]  # the closest: the same vendor's model ...
    words = _name_words(paid)
    if any(vendor_of.get(s) == vendor_of[paid] and words & _name_words(s) for s in subscription):
        assert words & _name_words(chosen), chosen  # ... of the same family when there is one
    step = page.page.text_content(f'{REPORT} li[data-step="model"]') or ""
    assert chosen in step and paid in step and "is not offered at this address" in step
    assert page.page.eval_on_selector("#model_custom_select", "el => el.value") == chosen
    stack.wait_for_settings(lambda s: s["oai_settings"]["custom_model"] == chosen)
    _show_report(page)
    page.screenshot("journey-switch-closest-model.png", full_page=False)
    assert send_message(page, "Hello?") == f"Hello from the fake NanoGPT ({chosen} on /api/subscription/v1)."


def test_catalogue_change_refreshes_the_custom_list_on_a_nanogpt_address(
    stack: RealStack, st_page_for: Any
) -> None:
    """Custom source on NanoGPT's subscription address: a catalogue change from the service refreshes ST's
    Custom list through ST's Connect (new model in, removed one out), the model stays selected and the
    panel says so; when NanoGPT drops the model in use, ST keeps it (no silent switch) and the doctor says
    so at once."""
    assert stack.service is not None
    fake = stack.fake
    model = stack.unused_model()
    gone = stack.unused_model()
    stack.seed_user(
        oai={**CLEAN_OAI, "chat_completion_source": "custom", "custom_url": SUB_URL, "custom_model": model}
    )
    page: STPage = st_page_for(stack, seed=False)
    wait_catalog(page)
    # A NanoGPT address in the Custom source counts as NanoGPT: the badge and the balance chip are there.
    page.page.wait_for_selector("#ngc_chat_balance")
    assert page.page.query_selector("#ngc_badge") is not None
    open_top_drawer(page, "api")
    page.page.click("#api_button_openai")
    _wait_option(page, "#model_custom_select", gone)
    added = dict(fake.model(model), id="acme/fresh-custom-3", name="Acme Fresh Custom 3")
    removed = fake.remove_model(gone)
    fake.add_model(added)
    try:
        _refresh_and_expect_sts_list_to_follow(stack, page, "custom", model, gone, "acme/fresh-custom-3")
        page.show("#ngc_sync_changes")
        page.screenshot("journey-auto-sync-custom.png", full_page=False)

        in_use = fake.remove_model(model)
        try:
            stack.service.request("POST", "/api/catalog/refresh")
            page.page.wait_for_selector('#ngc_findings li[data-id^="model.gone"]', timeout=30000)
            assert oai(page, "custom_model") == model  # ST keeps the id the user chose
            page.page.wait_for_function(
                "() => (document.querySelector('#ngc_sync_changes')?.textContent ?? '')"
                ".includes('messages with it will fail')"
            )
            assert "stays selected" not in (
                page.page.text_content('#ngc_sync_changes [data-group="st"]') or ""
            )
            page.show('#ngc_findings li[data-id^="model.gone"]')
            page.screenshot("journey-auto-sync-custom-model-removed.png", full_page=False)
            stack.wait_for_settings(lambda s: s["oai_settings"]["custom_model"] == model)
        finally:
            fake.add_model(in_use)
    finally:
        _put_catalogue_back(stack, removed, "acme/fresh-custom-3")
