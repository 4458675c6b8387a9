"""Issue 17 in real SillyTavern: Image Generation's NanoGPT key, and the provider choice (1.18.0+).

Image Generation (every version, 1.13.5 included): a user set NanoGPT up with the Custom source (the guide's
second method), so the key sits in ``api_key_custom``, written by ST's own ``writeSecret``; Image Generation
is set to NanoGPT and ST lists no image models (its ``/api/sd/nanogpt/*`` routes read ``api_key_nanogpt``
only). The doctor says so; one click puts the key there in that ST's format; ST's own image model list fills
and ST's own ``/api/sd/nanogpt/generate`` reaches NanoGPT (the fake) with that key.

Provider choice: on 1.18.0 and 1.19.0 a provider NanoGPT has marked unavailable for the model is reported,
an available one is chosen through ST's own list (only providers that ST version lists are offered), and
ST's next message carries it as ``X-Provider``. On 1.13.5 (no provider selection) nothing is reported and
nothing is written.
"""

from __future__ import annotations

from typing import Any

from tests.extension.st_ui import connect_builtin, open_drawer, send_message
from tests.fakes.nanogpt_providers import SELECTABLE_MODEL, UNAVAILABLE_PROVIDER
from tests.fakes.nanogpt_upstream import PAYG_KEY, SUBSCRIBER_KEY
from tests.realst.browser import STPage
from tests.realst.stack import DEFAULT_USER, RealStack, load_version_fixture
from tests.realst.versions import version_tuple

PROVIDER_SELECTION_FROM = (1, 18, 0)
STALE_KEY = "sk-nano-FAKE-555555555555"  # a rotated key
PROVIDERS_PATH = f"/api/models/{SELECTABLE_MODEL}/providers"
WRITE_CUSTOM_KEY_WITH_ST = """async (value) => {
    const secrets = await import('/scripts/secrets.js');
    await secrets.writeSecret(secrets.SECRET_KEYS.CUSTOM, value);
}"""
GENERATE_WITH_ST = """async (model) => {
    const res = await fetch('/api/sd/nanogpt/generate', {
        method: 'POST',
        headers: SillyTavern.getContext().getRequestHeaders(),
        body: JSON.stringify({ model, prompt: 'a lighthouse', negative_prompt: '', num_steps: 4, scale: 7,
            width: 1024, height: 1024, resolution: '1024x1024', showExplicitContent: true, nImages: 1 }),
    });
    return { status: res.status, body: res.ok ? await res.json() : await res.text() };
}"""


def _finding(stack: RealStack, rule: str) -> dict[str, Any] | None:
    assert stack.service is not None
    status, report = stack.service.request("GET", "/api/doctor")
    assert status == 200
    return next((f for f in report["findings"] if f["rule"] == rule), None)


def _image_user(stack: RealStack) -> None:
    settings = load_version_fixture(stack.version, "settings.nanogpt.json")
    settings["oai_settings"].update(
        chat_completion_source="custom",
        custom_url="https://nano-gpt.com/api/v1",
        custom_model="openai/gpt-4o-mini",
        custom_prompt_post_processing="merge",
    )
    settings.setdefault("extension_settings", {}).setdefault("sd", {}).update(source="nanogpt", model="")
    stack.seed_user(DEFAULT_USER, settings=settings, key=None)  # no api_key_nanogpt at all


def test_image_generation_gets_the_nanogpt_key_and_draws(
    versioned_stack: RealStack, st_page_for: Any
) -> None:
    stack = versioned_stack
    _image_user(stack)
    try:
        page: STPage = st_page_for(stack, seed=False, connected=False)
        page.js(WRITE_CUSTOM_KEY_WITH_ST, PAYG_KEY)  # ST's own writer, in this version's format
        page.page.wait_for_selector(
            '#ngc_status_pill[data-status="connected"]', state="attached", timeout=30000
        )
        # ST's own image model list is empty: the problem the user sees, without an explanation.
        assert page.js("() => document.querySelectorAll('#sd_model option').length") == 0
        open_drawer(page)
        item = '#ngc_findings li[data-id^="image.key"]'
        page.page.wait_for_selector(item, timeout=30000)
        finding = _finding(stack, "image.key")
        assert finding is not None and finding["details"]["action"]["slots"] == ["nanogpt"]

        custom_before = stack.read_secrets()["api_key_custom"]
        page.page.click(f"{item} button[data-key-slots]")
        # ST's own Image Generation now lists NanoGPT's image models (read through ST's server with the key).
        page.page.wait_for_function(
            "() => [...document.querySelectorAll('#sd_model option')].some(o => o.value === 'flux-schnell')",
            timeout=30000,
        )
        page.page.wait_for_selector(item, state="detached", timeout=30000)
        secrets = stack.read_secrets()
        nanogpt = secrets["api_key_nanogpt"]
        if isinstance(nanogpt, list):  # 1.13.1+: ST's list format, our entry active
            assert [e["value"] for e in nanogpt if e["active"]] == [PAYG_KEY]
        else:
            assert nanogpt == PAYG_KEY
        assert secrets["api_key_custom"] == custom_before  # the slot it came from is untouched
        assert _finding(stack, "image.key") is None

        result = page.js(GENERATE_WITH_ST, "flux-schnell")
        assert result["status"] == 200 and result["body"]["image"]
        sent = stack.fake.providers.image_requests[-1]
        assert (sent.model, sent.key_id, sent.resolution) == ("flux-schnell", PAYG_KEY[-4:], "1024x1024")
        page.screenshot(f"image-key-{stack.version}.png", full_page=False)
    finally:
        stack.seed_user(DEFAULT_USER)  # back to the built-in source and the subscriber key


def test_provider_choice_follows_nanogpts_answer(versioned_stack: RealStack, st_page_for: Any) -> None:
    stack = versioned_stack
    oai = {"custom_prompt_post_processing": "merge", "nanogpt_model": SELECTABLE_MODEL}
    has_selection = version_tuple(stack.version) >= PROVIDER_SELECTION_FROM
    if has_selection:
        oai["nanogpt_provider"] = UNAVAILABLE_PROVIDER
    stack.seed_user(DEFAULT_USER, oai=oai)
    try:
        page: STPage = st_page_for(stack, seed=False)
        open_drawer(page)
        if not has_selection:
            # 1.13.5: the doctor has had its scan (the drawer lists its findings) and says nothing about
            # providers; the file keeps having no provider key.
            page.page.wait_for_function("() => document.querySelector('#ngc_findings')?.children.length > 0")
            assert _finding(stack, "provider.choice") is None
            assert "nanogpt_provider" not in stack.read_settings()["oai_settings"]
            assert not page.js("() => !!document.querySelector('#nanogpt_provider')")
            return
        item = '#ngc_findings li[data-id^="provider.choice"]'
        page.page.wait_for_selector(item, timeout=30000)
        finding = _finding(stack, "provider.choice")
        assert finding is not None and finding["details"]["kind"] == "unavailable"
        offered = page.js(
            "(s) => [...document.querySelectorAll(s + ' select.ngc-provider-pick option')].map(o => o.value)",
            item,
        )
        # NanoGPT has deepinfra, wafer and fireworks available; ST 1.18.0's fixed list has no "wafer".
        expected = (
            ["deepinfra", "fireworks"] if stack.version == "1.18.0" else ["deepinfra", "wafer", "fireworks"]
        )
        assert offered == expected
        page.page.select_option(f"{item} select.ngc-provider-pick", "deepinfra")
        page.page.click(f"{item} button[data-pick-provider]")
        page.page.wait_for_function(
            "() => SillyTavern.getContext().chatCompletionSettings.nanogpt_provider === 'deepinfra'"
        )
        stack.wait_for_settings(lambda s: s["oai_settings"].get("nanogpt_provider") == "deepinfra")
        page.page.wait_for_selector(item, state="detached", timeout=30000)
        # ST sends the choice with the next message.
        connect_builtin(page)
        send_message(page, "Which provider?")
        sent = stack.fake.inference.records[-1]
        assert (sent.model, sent.provider) == (SELECTABLE_MODEL, "deepinfra")
    finally:
        stack.seed_user(DEFAULT_USER)


def test_catalogue_shows_a_models_providers_and_the_image_models(stack: RealStack, st_page: STPage) -> None:
    page = st_page
    open_drawer(page)
    page.page.wait_for_function("document.querySelector('#ngc_catalog_summary')?.textContent.length > 0")
    asked_before = stack.fake.count(PROVIDERS_PATH)
    page.page.click("#ngc_browse")
    page.page.wait_for_selector("dialog.popup .ngc-catalog .ngc-model")
    # Opening the browser asks NanoGPT about no model's providers (never per row).
    assert stack.fake.count(PROVIDERS_PATH) == asked_before
    page.page.fill('.ngc-catalog [data-f="q"]', SELECTABLE_MODEL)
    page.page.click(f'.ngc-catalog button[data-act="providers"][data-id="{SELECTABLE_MODEL}"]')
    box = f'.ngc-providers[data-providers-for="{SELECTABLE_MODEL}"]'
    page.page.wait_for_selector(f"{box} .ngc-provider")
    rows = page.js(
        "(s) => [...document.querySelectorAll(s + ' .ngc-provider')]"
        ".map(li => li.textContent.replace(/\\s+/g, ' ').trim())",
        box,
    )
    assert any(r.startswith("DeepInfra") and "available" in r for r in rows)
    assert any(r.startswith("Chutes") and "unavailable" in r for r in rows)
    page.page.click('.ngc-catalog button[data-act="images"]')
    page.page.wait_for_selector(".ngc-image-list .ngc-image-model")
    names = page.js("() => [...document.querySelectorAll('.ngc-image-model')].map(li => li.dataset.imageId)")
    assert names == ["flux-schnell", "hidream", "recraft-v3"]
    assert "1024x1024: $0.003" in (
        page.page.text_content('.ngc-image-model[data-image-id="flux-schnell"]') or ""
    )
    page.screenshot("catalogue-providers-images.png", full_page=False)
    page.page.keyboard.press("Escape")


def test_clear_the_choice_and_replace_a_stale_key(stack: RealStack, st_page_for: Any) -> None:
    """Newest ST: a provider chosen for a model without provider selection is cleared by Fix (through ST's
    own select), and a rotated key left in the Custom slot is replaced by one click."""
    model = "zai-org/glm-5.2"  # subscription-included; NanoGPT picks its provider itself
    stack.seed_user(
        DEFAULT_USER,
        oai={
            "custom_prompt_post_processing": "merge",
            "nanogpt_model": model,
            "nanogpt_provider": "deepinfra",
            "custom_url": "https://nano-gpt.com/api/v1",
        },
    )
    try:
        page: STPage = st_page_for(stack, seed=False)
        page.js(WRITE_CUSTOM_KEY_WITH_ST, STALE_KEY)  # the old key, still in the Custom slot
        open_drawer(page)
        choice = '#ngc_findings li[data-id^="provider.choice"]'
        slots = '#ngc_findings li[data-id^="keys.slots"]'
        page.page.wait_for_selector(choice, timeout=30000)
        page.page.wait_for_selector(slots, timeout=30000)
        assert _finding(stack, "provider.choice")["details"]["kind"] == "no_selection"  # type: ignore[index]
        billing = _finding(stack, "provider.billing")
        assert billing is not None and "pay-as-you-go" in billing["explanation"]
        assert _finding(stack, "keys.slots")["details"]["stale"] == ["custom"]  # type: ignore[index]

        page.page.click(f"{choice} button[data-fix]")
        page.page.wait_for_function(
            "() => SillyTavern.getContext().chatCompletionSettings.nanogpt_provider === ''"
        )
        assert page.js("() => document.querySelector('#nanogpt_provider').value") == ""
        stack.wait_for_settings(lambda s: s["oai_settings"].get("nanogpt_provider") == "")
        page.page.wait_for_selector(choice, state="detached", timeout=30000)

        page.page.click(f"{slots} button[data-key-slots]")
        page.page.wait_for_selector(slots, state="detached", timeout=30000)
        custom = stack.read_secrets()["api_key_custom"]
        assert [e["value"] for e in custom if e["active"]] == [SUBSCRIBER_KEY]
        assert STALE_KEY in [e["value"] for e in custom]  # kept, inactive: ST's key manager still lists it
    finally:
        stack.seed_user(DEFAULT_USER)
