"""The formatting doctor that reads the chat (issue 16), in real SillyTavern with the fake NanoGPT.

A malformed reply from the fake (``tests/fakes/reply_shapes.py``, or NanoGPT's own v1thinking address) shows
its signature in a notice under the message; Fix changes the setting through ST's own control (the doctor's
live fix, journalled), ST's Regenerate then gets a clean reply from the fake, and that reply raises no
notice. Clean replies, role-play with colons included, raise none. Every "no notice" is witnessed by the
extension's count of replies it has finished checking (``nanogptCompanion.repliesChecked()``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.extension.st_ui import ST_IDLE, connect_builtin, open_top_drawer, send_message, wait_online
from tests.fakes import reply_shapes
from tests.fakes.nanogpt_inference import Reply
from tests.realst.browser import STPage
from tests.realst.stack import RealStack, load_version_fixture

NOTICE = ".ngc-reply-notice"
REASONING = "I should greet them and stay in character."
CHECKED = "() => window.nanogptCompanion.repliesChecked()"


@contextmanager
def fake_replies(stack: RealStack, *, reply: Reply | None = None, shape: Any = None) -> Iterator[None]:
    """The session-wide fake answers this way for one test, then as before."""
    inference = stack.fake.inference
    saved = (inference.default, inference.shape)
    if reply is not None:
        inference.default = lambda model, base: reply
    inference.shape = shape
    try:
        yield
    finally:
        inference.default, inference.shape = saved


def connect_custom(page: STPage) -> None:
    """ST's Connect for the Custom source (ST shows its send button only once connected)."""
    open_top_drawer(page, "api")
    page.page.click("#api_button_openai")
    page.page.wait_for_function("document.querySelectorAll('#model_custom_select option').length > 100")
    wait_online(page)


def send_only(page: STPage, text: str) -> None:
    """Send as a user does, without waiting for a reply (there may be none: a refusal, an empty one)."""
    if page.js("() => SillyTavern.getContext().characterId") is None:
        page.js("async () => { await SillyTavern.getContext().selectCharacterById(0); }")
        page.page.wait_for_function("() => SillyTavern.getContext().chat.length > 0")
    page.page.wait_for_function(ST_IDLE)
    page.page.fill("#send_textarea", text)
    page.page.click("#send_but")


def checked(page: STPage) -> int:
    return int(page.js(CHECKED))


def wait_checked(page: STPage, count: int) -> None:
    page.page.wait_for_function(f"() => window.nanogptCompanion.repliesChecked() >= {count}", timeout=30000)


def last_notice(page: STPage) -> str:
    return f"#chat .mes.last_mes {NOTICE}"


def regenerated(page: STPage, before: int) -> dict[str, Any]:
    """Wait until the extension finished checking the regenerated reply; return that message."""
    wait_checked(page, before + 1)
    message: dict[str, Any] = page.js(
        "() => { const m = SillyTavern.getContext().chat.at(-1);"
        " return {mes: m.mes, reasoning: m.extra?.reasoning ?? ''}; }"
    )
    return message


def journal_rules(stack: RealStack) -> list[tuple[str, str]]:
    assert stack.service is not None
    _, data = stack.service.request("GET", "/api/doctor/journal?limit=5")
    return [(e["rule"], e["mode"]) for e in data["entries"]]


def test_reasoning_shown_as_text_on_v1thinking_is_fixed_and_the_regenerated_reply_is_clean(
    versioned_stack: RealStack, st_page_for: Any
) -> None:
    stack = versioned_stack
    settings = load_version_fixture(stack.version, "settings.custom-nanogpt.json")
    settings["oai_settings"].update(
        custom_url="https://nano-gpt.com/api/v1thinking",
        custom_prompt_post_processing="merge",
        show_thoughts=True,
    )
    stack.seed_user(settings=settings)
    with fake_replies(stack, reply=Reply("Hello, traveller.", reasoning=REASONING)):
        page: STPage = st_page_for(stack, seed=False)
        connect_custom(page)
        send_message(page, "Hello?")
        page.page.wait_for_selector(f'{last_notice(page)}[data-signature="reasoning_as_text"]', timeout=30000)
        assert page.js("() => SillyTavern.getContext().chat.at(-1).mes").startswith("<think>")
        notice = page.page.locator(last_notice(page))
        assert notice.get_attribute("data-cause") == "v1thinking"
        assert (
            "Custom Endpoint (Base URL): https://nano-gpt.com/api/v1thinking → https://nano-gpt.com/api/v1"
            in (notice.text_content() or "")
        )
        before = checked(page)
        notice.locator('button[data-act="fix"]').click()
        # ST's own control and the file ST saves hold the standard address; the fix is journalled as live.
        page.page.wait_for_function(
            "() => document.querySelector('#custom_api_url_text').value === 'https://nano-gpt.com/api/v1'"
        )
        stack.wait_for_settings(lambda s: s["oai_settings"]["custom_url"] == "https://nano-gpt.com/api/v1")
        # "then regenerate" is on by default: ST's Regenerate asks the fake again, on /api/v1 now.
        message = regenerated(page, before)
        assert message["mes"] == "Hello, traveller."
        assert message["reasoning"] == REASONING  # ST shows it in its reasoning box now
        assert stack.fake.inference.records[-1].base == "v1"
        assert page.page.locator(f"{last_notice(page)}[data-signature]").count() == 0
        assert ("reply.reasoning_as_text", "live") in journal_rules(stack)


def test_a_reply_speaking_for_the_user_gets_prompt_post_processing_through_sts_select(
    versioned_stack: RealStack, st_page_for: Any
) -> None:
    """PPP "None" sends the prompt with several system messages in a row; the fake then writes the user's
    line too. Fix sets "Merge consecutive roles" through ST's own select; the regenerated reply is clean.
    (The doctor's automatic PPP fix is turned off for this test, or it would fix "None" first.)"""
    stack = versioned_stack
    assert stack.service is not None
    status, _ = stack.service.request(
        "PUT", "/api/doctor/policy", body={"rule": "ppp.nanogpt", "policy": "off"}
    )
    assert status == 200
    try:
        stack.seed_user(oai={"custom_prompt_post_processing": "", "nanogpt_model": stack.unused_model()})
        page: STPage = st_page_for(stack, seed=False)
        connect_builtin(page)
        user = str(page.js("() => SillyTavern.getContext().name1"))
        with fake_replies(stack, shape=reply_shapes.speaks_for_user(user)):
            send_message(page, "Where are we?")
            page.page.wait_for_selector(
                f'{last_notice(page)}[data-signature="speaks_for_user"]', timeout=30000
            )
            assert f"**{user}:**" in page.js("() => SillyTavern.getContext().chat.at(-1).mes")
            assert stack.fake.inference.records[-1].roles[:2] == ("system", "system")
            notice = page.page.locator(last_notice(page))
            assert notice.get_attribute("data-cause") == "ppp-merge"
            before = checked(page)
            notice.locator('button[data-act="fix"]').click()
            page.page.wait_for_function(
                "() => document.querySelector('#custom_prompt_post_processing').value === 'merge'"
            )
            stack.wait_for_settings(lambda s: s["oai_settings"]["custom_prompt_post_processing"] == "merge")
            message = regenerated(page, before)
            assert f"{user}:" not in message["mes"]
            roles = stack.fake.inference.records[-1].roles
            assert all(a != b for a, b in itertools.pairwise(roles))
            assert page.page.locator(f"{last_notice(page)}[data-signature]").count() == 0
            assert ("reply.speaks_for_user", "live") in journal_rules(stack)
    finally:
        stack.service.request("PUT", "/api/doctor/policy", body={"rule": "ppp.nanogpt", "policy": "auto"})


def test_not_this_is_remembered_for_the_chat_and_its_settings(stack: RealStack, st_page_for: Any) -> None:
    settings = load_version_fixture(stack.version, "settings.custom-nanogpt.json")
    settings["oai_settings"].update(custom_prompt_post_processing="merge")
    stack.seed_user(settings=settings)
    with fake_replies(stack, shape=reply_shapes.think_in_content):
        page: STPage = st_page_for(stack, seed=False)
        connect_custom(page)
        send_message(page, "Hello?")
        page.page.wait_for_selector(f'{last_notice(page)}[data-signature="reasoning_as_text"]', timeout=30000)
        assert page.page.locator(last_notice(page)).get_attribute("data-cause") == "auto-parse"
        page.page.locator(f'{last_notice(page)} button[data-act="dismiss"]').click()
        assert page.page.locator(NOTICE).count() == 0
        before = checked(page)
        send_message(page, "Hello again?")
        wait_checked(page, before + 1)
        assert page.js("() => SillyTavern.getContext().chat.at(-1).mes").startswith("<think>")
        assert page.page.locator(NOTICE).count() == 0
        keys = page.js(
            "() => SillyTavern.getContext().extensionSettings.nanogpt_companion.dismissed_signatures"
        )
        assert len(keys) == 1 and "|reasoning_as_text|" in keys[0]


def test_clean_role_play_replies_raise_no_notice(stack: RealStack, st_page_for: Any) -> None:
    """A sample of the 200-reply corpus end to end (the whole corpus runs through the engine in
    tests/chat_doctor/test_engine.py): streamed, with colons, names, times and asterisks."""
    corpus = reply_shapes.clean_replies(200)[::20]
    queue = list(corpus)
    assert stack.service is not None
    _, counts_before = stack.service.request("GET", "/api/doctor/signature")
    with fake_replies(stack, reply=None, shape=lambda record, reply: Reply(queue.pop(0))):
        page: STPage = st_page_for(stack)
        connect_builtin(page)
        start = checked(page)
        for index, text in enumerate(corpus):
            shown = send_message(page, f"Tell me more ({index}).")
            # ST drops the character's own name before a line ("Seraphina: ..."); the rest is as sent.
            assert shown.replace("Seraphina: ", "").strip() == text.replace("Seraphina: ", "").strip()
            wait_checked(page, start + index + 1)
        assert page.page.locator(NOTICE).count() == 0
    _, counts_after = stack.service.request("GET", "/api/doctor/signature")
    assert counts_after == counts_before


def test_a_reply_cut_off_at_the_response_length_gets_more_room_through_sts_field(
    versioned_stack: RealStack, st_page_for: Any
) -> None:
    """The fake writes until ``max_tokens`` (finish_reason "length"); ST's reply stops mid-sentence at its
    "Max Response Length". Fix doubles it (within the model's output limit) through ST's own field, and the
    regenerated reply finishes."""
    stack = versioned_stack
    roomy = sorted(
        m["id"]
        for m in stack.fake.models
        if m["id"] in set(stack.fake.ids("subscription"))
        and ":" not in m["id"]
        and (m.get("max_output_tokens") or 0) >= 4000
    )
    stack.seed_user(
        oai={"custom_prompt_post_processing": "merge", "nanogpt_model": roomy[0], "openai_max_tokens": 300}
    )
    with fake_replies(stack, shape=reply_shapes.cut_off_at_max_tokens):
        page: STPage = st_page_for(stack, seed=False)
        connect_builtin(page)
        assert page.js("() => SillyTavern.getContext().chatCompletionSettings.nanogpt_model") == roomy[0]
        send_message(page, "Tell me a long story.")
        page.page.wait_for_selector(f'{last_notice(page)}[data-signature="cut_off"]', timeout=30000)
        notice = page.page.locator(last_notice(page))
        assert notice.get_attribute("data-cause") == "max-tokens"
        assert "Max Response Length (tokens): 300 → 600" in (notice.text_content() or "")
        before = checked(page)
        notice.locator('button[data-act="fix"]').click()
        page.page.wait_for_function("() => document.querySelector('#openai_max_tokens').value === '600'")
        stack.wait_for_settings(lambda s: s["oai_settings"]["openai_max_tokens"] == 600)
        message = regenerated(page, before)
        assert message["mes"].endswith(".")
        assert stack.fake.inference.records[-1].body["max_tokens"] == 600
        assert page.page.locator(f"{last_notice(page)}[data-signature]").count() == 0
        assert ("reply.cut_off", "live") in journal_rules(stack)


def test_a_role_order_refusal_gets_strict_prompt_post_processing_and_a_reply(
    versioned_stack: RealStack, st_page_for: Any, expect_problems: Any
) -> None:
    """The provider refuses a prompt whose first turn is not the user's (ST's chat opens with the
    character's greeting). ST shows its error toast; the notice at the end of the chat sets "Strict"
    through ST's select, and Regenerate then gets the reply."""
    stack = versioned_stack
    stack.seed_user(oai={"custom_prompt_post_processing": "merge", "nanogpt_model": stack.unused_model()})
    expect_problems.expect("first non-system message must be from the user")
    expect_problems.expect("Got response status 400")  # ST's own rejection of the failed generation
    with fake_replies(stack, shape=reply_shapes.user_first_required):
        page: STPage = st_page_for(stack, seed=False)
        connect_builtin(page)
        send_only(page, "Hello?")
        notice = page.page.locator(f'#chat > {NOTICE}[data-signature="role_error"]')
        notice.wait_for(timeout=30000)
        assert notice.get_attribute("data-cause") == "ppp-strict"
        # One answer, not two: the drawer's suggestion and its toast are decided once this notice is shown.
        assert page.page.locator(".ngc-suggestion").count() == 0
        assert "can fix this" not in (page.page.text_content("#toast-container") or "")
        assert page.js("() => SillyTavern.getContext().chat.at(-1).is_user") is True
        before = checked(page)
        notice.locator('button[data-act="fix"]').click()
        page.page.wait_for_function(
            "() => document.querySelector('#custom_prompt_post_processing').value === 'strict'"
        )
        stack.wait_for_settings(lambda s: s["oai_settings"]["custom_prompt_post_processing"] == "strict")
        message = regenerated(page, before)
        assert message["mes"].startswith("Hello from the fake NanoGPT")
        roles = [r for r in stack.fake.inference.records[-1].roles if r != "system"]
        assert roles[0] == "user"
        assert ("reply.role_error", "live") in journal_rules(stack)
        # The notice stays at the end of the chat with Undo: through the journal, back to the old mode.
        notice.locator('button[data-act="undo"]').click()
        page.page.wait_for_function(
            "() => document.querySelector('#custom_prompt_post_processing').value === 'merge'"
        )
        stack.wait_for_settings(lambda s: s["oai_settings"]["custom_prompt_post_processing"] == "merge")


def test_an_empty_reply_over_the_models_output_limit_gets_the_limit(
    stack: RealStack, st_page_for: Any
) -> None:
    """The fake answers nothing while ``max_tokens`` is above the model's output limit."""
    models = sorted(
        (m["max_output_tokens"], m["id"])
        for m in stack.fake.models
        if m["id"] in set(stack.fake.ids("subscription"))
        and ":" not in m["id"]
        and 1000 <= (m.get("max_output_tokens") or 0) <= 8000
        and (m.get("context_length") or 0) >= 64000
    )
    limit, model = models[0]
    # The context leaves room for the doubled response length, or ST refuses to send at all.
    oai = {"custom_prompt_post_processing": "merge", "nanogpt_model": model, "openai_max_tokens": limit * 2}
    stack.seed_user(oai={**oai, "openai_max_context": 64000})
    with fake_replies(stack, shape=reply_shapes.empty_over_output_limit(limit)):
        page: STPage = st_page_for(stack, seed=False)
        connect_builtin(page)
        start = checked(page)
        asked = len(stack.fake.inference.records)
        send_only(page, "Hello?")
        page.page.wait_for_selector(f'{NOTICE}[data-signature="empty_reply"]', timeout=30000)
        assert stack.fake.inference.records[asked].body["max_tokens"] == limit * 2
        notice = page.page.locator(f'{NOTICE}[data-signature="empty_reply"]')
        assert notice.get_attribute("data-cause") == "over-output-limit"
        assert checked(page) >= start + 1
        notice.locator('button[data-act="fix"]').click()
        page.page.wait_for_function(f"() => document.querySelector('#openai_max_tokens').value === '{limit}'")
        stack.wait_for_settings(lambda s: s["oai_settings"]["openai_max_tokens"] == limit)


def _reasoning_model(stack: RealStack) -> str:
    """A model the catalogue marks as a reasoning model (the extension only expects reasoning from one)."""
    model = next(m for m in sorted(stack.fake.ids("v1")) if m.endswith(":thinking"))
    assert stack.fake.model(model)["capabilities"]["reasoning"] is True
    return str(model)


def test_a_reasoning_model_without_reasoning_is_explained_on_v1thinking_and_not_questioned_on_v1(
    versioned_stack: RealStack, st_page_for: Any
) -> None:
    """ST asks to show thoughts, and a reasoning model sent none: on NanoGPT's v1thinking address the notice
    says why ST's reasoning box stays empty there (nothing to fix in ST: the address is the user's choice);
    on the standard address ST shows whatever reasoning comes, so no setting explains a reply without
    any and nothing is said (witness: the extension finished checking that reply)."""
    stack = versioned_stack
    model = _reasoning_model(stack)
    settings = load_version_fixture(stack.version, "settings.custom-nanogpt.json")
    settings["oai_settings"].update(
        custom_url="https://nano-gpt.com/api/v1thinking",
        custom_model=model,
        custom_prompt_post_processing="merge",
        show_thoughts=True,
    )
    stack.seed_user(settings=settings)
    with fake_replies(stack, reply=Reply("Hello, traveller.")):
        page: STPage = st_page_for(stack, seed=False)
        connect_custom(page)
        send_message(page, "Hello?")
        page.page.wait_for_selector(f'{last_notice(page)}[data-signature="reasoning_missing"]', timeout=30000)
        assert stack.fake.inference.records[-1].base == "v1thinking"
        assert page.js("() => SillyTavern.getContext().chat.at(-1).extra?.reasoning ?? ''") == ""
        notice = page.page.locator(last_notice(page))
        assert (notice.get_attribute("data-cause") or "").startswith("reasoning:")
        text = notice.text_content() or ""
        assert "has no effect on this address" in text and "standard address" in text
        assert notice.locator('button[data-act="fix"]').count() == 0  # no ST setting to change
        page.show(last_notice(page))
        page.screenshot(f"reply-doctor-reasoning-missing-{stack.version}.png", full_page=False)
        assert page.error_toasts() == []

        # The user moves to the standard address in ST's own field and connects again.
        open_top_drawer(page, "api")
        page.page.fill("#custom_api_url_text", "https://nano-gpt.com/api/v1")
        stack.wait_for_settings(lambda s: s["oai_settings"]["custom_url"] == "https://nano-gpt.com/api/v1")
        connect_custom(page)

    with fake_replies(stack, reply=Reply("Hello again, traveller.")):
        before = checked(page)
        send_message(page, "Hello again?")
        wait_checked(page, before + 1)
        assert stack.fake.inference.records[-1].base == "v1"
        assert page.js("() => SillyTavern.getContext().chat.at(-1).mes") == "Hello again, traveller."
        assert page.page.locator(f"{last_notice(page)}[data-signature]").count() == 0
