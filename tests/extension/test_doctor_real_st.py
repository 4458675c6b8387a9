"""The doctor's live fixes in real SillyTavern, decided as that version's code requires (issue 10).

Each test starts from the settings.json real ST wrote (``tests/fixtures/sillytavern/<version>/``), opens a
page of that ST with our extension, and checks what lands in ST's own controls and in the file ST saves.
Error toasts and page errors fail a test (``st_page_for``), except the one a test raises on purpose.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from tests.extension.st_ui import REPLY_DOCTOR_OFF, oai, open_drawer, reveal
from tests.realst.browser import STPage
from tests.realst.fixtures import ProblemGuard
from tests.realst.stack import RealStack, load_version_fixture
from tests.realst.versions import version_tuple

PPP_SELECT = "#custom_prompt_post_processing"


def seen_by_service(stack: RealStack) -> dict[str, Any]:
    """A Re-check: the service reads the files (and NanoGPT's list) now, as the drawer's button does."""
    assert stack.service is not None
    status, report = stack.service.request("GET", "/api/doctor?refresh=1")
    assert status == 200
    data: dict[str, Any] = report
    return data


def newest_journal_id(stack: RealStack) -> int:
    """The journal's newest row id (0 if empty): rows a test waits for must come after it, because other
    tests on the same ST stack journal the same settings."""
    assert stack.service is not None
    _, journal = stack.service.request("GET", "/api/doctor/journal?limit=1")
    return max((int(e["journal_id"]) for e in journal["entries"]), default=0)


def journalled(
    stack: RealStack, after: int, matches: Callable[[dict[str, Any]], bool], timeout: float = 20
) -> dict[str, Any]:
    """The newest journal row after ``after`` that ``matches`` accepts, once the service has written it.

    A live fix is journalled when the tab's ack reaches the service, and ST saves settings.json on its own
    timer: the file can show the fix before the row exists, so a test waits for the row itself.
    """
    assert stack.service is not None
    deadline = time.monotonic() + timeout
    entries: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        _, journal = stack.service.request("GET", "/api/doctor/journal?limit=5")
        entries = journal["entries"]
        found = next((e for e in entries if int(e["journal_id"]) > after and matches(e)), None)
        if found is not None:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no such journal row; newest rows: {entries}")


RECORD_TOASTS = """() => {
    window.__ngcToasts = [];
    new MutationObserver((changes) => {
        for (const c of changes) for (const n of c.addedNodes) {
            if (n.nodeType === 1 && n.matches('.toast')) window.__ngcToasts.push(n.textContent);
        }
    }).observe(document.body, { childList: true, subtree: true });
}"""


def wait_toast(page: STPage, text: str) -> None:
    """A toast with this text was shown (recorded as it appeared, so a short-lived one counts)."""
    page.page.wait_for_function(
        "(t) => window.__ngcToasts.some((s) => s.includes(t))", arg=text, timeout=20000
    )


def tools_in_builtin_source(version: str) -> bool:
    """ST sends tools to its NanoGPT source from 1.16.0 (public/scripts/tool-calling.js)."""
    return version_tuple(version) >= (1, 16, 0)


def test_automatic_ppp_fix_writes_what_this_version_does_with_tools(
    versioned_stack: RealStack, st_page_for: Any
) -> None:
    stack = versioned_stack
    stack.seed_user(oai={"custom_prompt_post_processing": "semi", "function_calling": True})
    page: STPage = st_page_for(stack, seed=False)
    seen_by_service(stack)  # "semi" is the user's current value: a later "None" is a new choice
    before = newest_journal_id(stack)
    page.js(RECORD_TOASTS)
    reveal(page, PPP_SELECT)
    page.page.select_option(PPP_SELECT, "")
    page.page.wait_for_function(f"document.querySelector('{PPP_SELECT}').value !== ''", timeout=20000)
    expected = "merge_tools" if tools_in_builtin_source(stack.version) else "merge"
    assert page.page.input_value(PPP_SELECT) == expected
    assert oai(page, "custom_prompt_post_processing") == expected
    stack.wait_for_settings(lambda s: s["oai_settings"]["custom_prompt_post_processing"] == expected)
    entry = journalled(
        stack, before, lambda e: e["path"] == ["oai_settings", "custom_prompt_post_processing"]
    )
    label = f"Merge consecutive roles ({'with' if expected == 'merge_tools' else 'no'} tools)"
    assert entry["mode"] == "live" and entry["change"] == f"Prompt Post-Processing: None → {label}"
    # The toasts name the change in ST's words too, the fix and its undo alike.
    wait_toast(page, f"Fixed: Prompt Post-Processing: None → {label}")
    open_drawer(page)
    page.page.click("#ngc_undo:not([disabled])")
    page.page.wait_for_function(f"document.querySelector('{PPP_SELECT}').value === ''")
    wait_toast(page, f"Undone: Prompt Post-Processing: {label} → None")
    stack.wait_for_settings(lambda s: s["oai_settings"]["custom_prompt_post_processing"] == "")


def test_error_signature_suggestion_passes_the_version_gate(
    versioned_stack: RealStack, st_page_for: Any, expect_problems: ProblemGuard
) -> None:
    """A failed generation's "roles must alternate": the extension offers the mode the service allows for
    this ST. With function calling on, 1.13.5's NanoGPT source sends no tools, so "semi" (the old extension
    offered "semi_tools" whatever the version); 1.18.0 and 1.19.0 get "semi_tools"."""
    stack = versioned_stack
    stack.seed_user(oai={"custom_prompt_post_processing": "merge_tools", "function_calling": True})
    page: STPage = st_page_for(stack, seed=False)
    report = seen_by_service(stack)
    expected = "semi_tools" if tools_in_builtin_source(stack.version) else "semi"
    assert report["ppp"]["choices"]["semi"] == expected
    open_drawer(page)
    page.page.click("#ngc_recheck")
    page.js(REPLY_DOCTOR_OFF)  # on, the notice in the chat answers instead (test_reply_doctor_real_st)
    expect_problems.expect("roles must alternate")
    page.js("() => toastr.error('Conversation roles must alternate user/assistant', 'Chat Completion API')")
    page.page.wait_for_selector('.ngc-suggestion button[data-fix="__suggestion__"]')
    assert report["ppp"]["labels"][expected] in page.page.text_content(".ngc-suggestion")
    page.page.click('.ngc-suggestion button[data-fix="__suggestion__"]')
    assert page.page.input_value(PPP_SELECT) == expected
    stack.wait_for_settings(lambda s: s["oai_settings"]["custom_prompt_post_processing"] == expected)


def test_text_completion_context_is_fixed_through_sts_slider(stack: RealStack, st_page_for: Any) -> None:
    """Text Completion's "Context (tokens)" is a top-level setting with a slider that stops at 8192 until
    "Unlocked" is ticked: the fix goes through that slider's handler and stays within it."""
    small = min(
        (m["context_length"], m["id"])
        for m in stack.fake.models
        if m.get("context_length") and m["id"] in set(stack.fake.ids("subscription")) and ":" not in m["id"]
    )
    settings = load_version_fixture(stack.version, "settings.textgen-nanogpt.json")
    settings["textgenerationwebui_settings"]["generic_model"] = small[1]
    settings["max_context"] = small[0] * 2
    stack.seed_user(settings=settings)
    page: STPage = st_page_for(stack, seed=False)
    report = seen_by_service(stack)
    [finding] = [f for f in report["findings"] if f["rule"] == "textgen.context"]
    target = min(small[0], 8192)
    assert finding["change"] == f"Context (tokens): {small[0] * 2:,} → {target:,}"
    before = newest_journal_id(stack)
    open_drawer(page)
    page.page.click(f'#ngc_findings li[data-id="{finding["id"]}"] button[data-fix]')
    page.page.wait_for_function("(v) => SillyTavern.getContext().maxContext === v", arg=target)
    assert page.page.input_value("#max_context") == str(target)
    stack.wait_for_settings(lambda s: s["max_context"] == target)
    entry = journalled(stack, before, lambda e: e["path"] == ["max_context"])
    assert entry["mode"] == "live" and entry["new_value"] == target
