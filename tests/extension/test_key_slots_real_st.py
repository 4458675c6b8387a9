"""Issue 10 item 13 in real SillyTavern (1.13.5, 1.18.0, 1.19.0): the key the NanoGPT guide's Custom and
Text Completion methods store is found, in the secret ST itself writes.

The key is written by ST's own frontend code (``writeSecret(SECRET_KEYS.CUSTOM | SECRET_KEYS.GENERIC, ...)``
from ``public/scripts/secrets.js`` of that version), so the secret's name and file format are whatever that
ST uses; the service must then show that key's balance. No ``api_key_nanogpt`` exists meanwhile.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from tests.fakes.nanogpt_upstream import PAYG_KEY
from tests.realst.browser import STPage
from tests.realst.stack import DEFAULT_USER, RealStack, load_version_fixture

PAYG_BALANCE = 9.54827636
WRITE_WITH_ST = """async ([slot, value]) => {
    const secrets = await import('/scripts/secrets.js');
    await secrets.writeSecret(secrets.SECRET_KEYS[slot], value);
    return secrets.SECRET_KEYS[slot];
}"""


def wait_account(stack: RealStack, within: float = 30) -> dict[str, Any]:
    assert stack.service is not None
    deadline = time.monotonic() + within
    account: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status, account = stack.service.request("GET", "/api/account?refresh=1")
        if status == 200 and account.get("key_status") == "ok":
            return account
        time.sleep(0.2)
    raise AssertionError(f"the service never found the key: {account}")


@pytest.mark.parametrize("slot", ["CUSTOM", "GENERIC"])
def test_the_guides_key_slots_are_found_in_what_st_writes(
    versioned_stack: RealStack, st_page_for: Any, slot: str
) -> None:
    stack = versioned_stack
    settings = load_version_fixture(stack.version, "settings.nanogpt.json")
    if slot == "CUSTOM":
        settings["oai_settings"].update(
            chat_completion_source="custom",
            custom_url="https://nano-gpt.com/api/v1",
            custom_model="openai/gpt-4o-mini",
            custom_prompt_post_processing="merge",
        )
    else:
        # Text Completion, Generic (OpenAI-compatible) type, as the guide's Text Completion method sets it.
        settings["oai_settings"]["custom_prompt_post_processing"] = "merge"
        settings["main_api"] = "textgenerationwebui"
        textgen = settings.setdefault("textgenerationwebui_settings", {})
        textgen["type"] = "generic"
        textgen["server_urls"] = {**textgen.get("server_urls", {}), "generic": "https://nano-gpt.com/api"}
    try:
        stack.seed_user(DEFAULT_USER, settings=settings, key=None)  # no api_key_nanogpt at all
        page: STPage = st_page_for(stack, seed=False)
        name = page.js(WRITE_WITH_ST, [slot, PAYG_KEY])
        assert name == {"CUSTOM": "api_key_custom", "GENERIC": "api_key_generic"}[slot]
        assert name in stack.read_secrets() and "api_key_nanogpt" not in stack.read_secrets()
        account = wait_account(stack)
        assert account["balance"]["usd"] == pytest.approx(PAYG_BALANCE)
        assert account["key_source"] == "sillytavern"
    finally:
        stack.seed_user(DEFAULT_USER)  # back to the built-in source and the subscriber key
