"""Reply signatures -> causes and fixes for this connection and ST version (issue 16, doctor/symptoms.py).

Pure: settings dictionaries from the fixtures real ST wrote, no I/O. Each cause must be true for the
connection (no Prompt Post-Processing step where ST ignores it, no value the version does not know), and
a signature with no cause that fits yields nothing (the extension then shows no notice).
"""

from __future__ import annotations

from typing import Any

from nanogpt_companion.doctor.context import DoctorContext
from nanogpt_companion.doctor.symptoms import AUTO_PARSE_PATH, causes, with_tab_settings
from tests.doctor.helpers import custom_settings, entry, nanogpt_settings, set_version


def ctx(settings: dict[str, Any], **kw: Any) -> DoctorContext:
    return DoctorContext.build(settings, **kw)


def with_auto_parse(settings: dict[str, Any], on: bool) -> dict[str, Any]:
    settings.setdefault("power_user", {}).setdefault("reasoning", {})["auto_parse"] = on
    return settings


def ops(found: list[Any]) -> list[tuple[tuple[Any, ...], Any, Any]]:
    return [(op.path, op.old, op.value) for f in found for op in f.patch]


def test_reasoning_as_text_on_v1thinking_switches_to_the_standard_address_then_auto_parse() -> None:
    settings = with_auto_parse(
        custom_settings("https://nano-gpt.com/api/v1thinking", custom_model="m"), False
    )
    found = causes("reasoning_as_text", ctx(settings), "think-tag")
    assert ops(found) == [
        (
            ("oai_settings", "custom_url"),
            "https://nano-gpt.com/api/v1thinking",
            "https://nano-gpt.com/api/v1",
        ),
        (AUTO_PARSE_PATH, False, True),
    ]
    assert all(f.rule == "reply.reasoning_as_text" for f in found)


def test_reasoning_as_text_with_auto_parse_on_and_a_heading_are_advice_or_nothing() -> None:
    settings = with_auto_parse(nanogpt_settings(), True)
    assert causes("reasoning_as_text", ctx(settings), "think-tag") == []
    [advice] = causes("reasoning_as_text", ctx(settings), "thinking-heading")
    assert advice.patch == () and advice.details["cause"] == "heading"


def test_speaks_for_user_steps_ppp_up_through_the_version_gate() -> None:
    none_119 = set_version(nanogpt_settings(custom_prompt_post_processing=""), "1.19.0")
    assert ops(causes("speaks_for_user", ctx(none_119))) == [
        (("oai_settings", "custom_prompt_post_processing"), "", "merge")
    ]
    tools = set_version(
        nanogpt_settings(custom_prompt_post_processing="merge_tools", function_calling=True), "1.19.0"
    )
    assert ops(causes("speaks_for_user", ctx(tools)))[0][2] == "semi_tools"
    # 1.13.5's NanoGPT source sends no tools, so the step is the plain mode.
    tools_1135 = set_version(
        nanogpt_settings(custom_prompt_post_processing="merge", function_calling=True), "1.13.5"
    )
    assert ops(causes("speaks_for_user", ctx(tools_1135)))[0][2] == "semi"
    # ST before 1.13.0 ignores PPP for the NanoGPT source: advice, no patch.
    old = set_version(nanogpt_settings(custom_prompt_post_processing=""), "1.12.14")
    [advice] = causes("speaks_for_user", ctx(old))
    assert advice.patch == () and advice.details["cause"] == "ppp-ignored"
    # Already strict: no further step to offer, so no notice.
    strict = set_version(nanogpt_settings(custom_prompt_post_processing="strict"), "1.19.0")
    assert causes("speaks_for_user", ctx(strict)) == []


def test_role_error_takes_the_intent_the_extension_matched() -> None:
    settings = set_version(nanogpt_settings(custom_prompt_post_processing="merge"), "1.19.0")
    assert ops(causes("role_error", ctx(settings), "semi"))[0][2] == "semi"
    assert causes("role_error", ctx(settings), "nonsense") == []


def test_empty_and_cut_off_use_the_models_output_limit_from_the_catalogue() -> None:
    model = "vendor/small-writer"
    catalogue = {model: entry(model, max_output_tokens=1000)}
    over = nanogpt_settings(
        nanogpt_model=model, openai_max_tokens=4000, custom_prompt_post_processing="merge"
    )
    assert ops(causes("empty_reply", ctx(over, catalogue=catalogue), "empty")) == [
        (("oai_settings", "openai_max_tokens"), 4000, 1000)
    ]
    low = nanogpt_settings(nanogpt_model=model, openai_max_tokens=300)
    assert ops(causes("cut_off", ctx(low, catalogue=catalogue))) == [
        (("oai_settings", "openai_max_tokens"), 300, 600)
    ]
    at_limit = nanogpt_settings(nanogpt_model=model, openai_max_tokens=1000)
    [advice] = causes("cut_off", ctx(at_limit, catalogue=catalogue))
    assert advice.patch == () and advice.details["cause"] == "at-output-limit"
    # Unknown limit: twice the room.
    assert ops(causes("cut_off", ctx(low)))[0][2] == 600


def test_not_a_nanogpt_connection_has_no_causes() -> None:
    settings = nanogpt_settings(chat_completion_source="openai")
    for signature in ("reasoning_as_text", "speaks_for_user", "empty_reply", "cut_off", "reasoning_missing"):
        assert causes(signature, ctx(settings)) == []


def test_reasoning_missing_reuses_the_reasoning_rule() -> None:
    model = "vendor/thinker"
    catalogue = {model: entry(model, capabilities={"reasoning": True})}
    settings = set_version(nanogpt_settings(nanogpt_model=model, show_thoughts=False), "1.19.0")
    assert ops(causes("reasoning_missing", ctx(settings, catalogue=catalogue))) == [
        (("oai_settings", "show_thoughts"), False, True)
    ]


def test_tab_settings_override_the_file_only_for_known_keys() -> None:
    settings = nanogpt_settings(custom_prompt_post_processing="merge")
    merged = with_tab_settings(settings, {"custom_prompt_post_processing": "", "auto_parse": True, "x": 1})
    assert merged["oai_settings"]["custom_prompt_post_processing"] == ""
    assert merged["power_user"]["reasoning"]["auto_parse"] is True
    assert "x" not in merged
    assert settings["oai_settings"]["custom_prompt_post_processing"] == "merge"  # the input is untouched


def test_the_request_body_and_the_tab_settings_table_name_the_same_settings() -> None:
    from nanogpt_companion.doctor.symptoms import INVOLVED_PATHS
    from nanogpt_companion.web.bodies import InvolvedSettings

    assert set(InvolvedSettings.model_fields) == set(INVOLVED_PATHS)
