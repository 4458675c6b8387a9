"""Issue 10: each rule decides as ST's code does in the user's version and source.

Every test here would have failed on the doctor before the fix it names: the facts come from the ST
release tarballs (file and line in plugin/nanogpt_companion/doctor/rules/README.md).
"""

from __future__ import annotations

import pytest

from nanogpt_companion.doctor.context import DoctorContext
from nanogpt_companion.doctor.rules.common import ppp_choices
from tests.doctor.helpers import (
    by_rule,
    catalogue,
    custom_settings,
    full_settings,
    nanogpt_settings,
    patch_values,
    run,
    set_version,
)

PPP = ("oai_settings", "custom_prompt_post_processing")


# ---- item 1: single and strict keep images since 1.12.8 ------------------------------------------------


@pytest.mark.parametrize("ppp", ["single", "strict", "strict_tools"])
@pytest.mark.parametrize("version", ["1.13.5", "1.18.0", "1.19.0"])
def test_single_and_strict_stay_with_inline_images_on_a_vision_model(ppp, version):
    cat = catalogue()
    settings = set_version(
        nanogpt_settings(
            custom_prompt_post_processing=ppp,
            nanogpt_model="openai/gpt-5.2",  # vision
            media_inlining=True,
            function_calling=ppp.endswith("_tools"),
        ),
        version,
    )
    findings = run(settings, catalogue=cat)
    assert by_rule(findings, "ppp.nanogpt") == [] and by_rule(findings, "ppp.tools") == []


# ---- item 2: the built-in source has tool calling only from 1.16.0 -------------------------------------


@pytest.mark.parametrize("version", ["1.13.5", "1.14.0", "1.15.2"])
def test_builtin_source_before_1_16_gets_no_tools_values(version):
    unset = set_version(nanogpt_settings(custom_prompt_post_processing="", function_calling=True), version)
    [f] = by_rule(run(unset), "ppp.nanogpt")
    # ST sends no tools to this source yet, so "merge" loses nothing: applied unasked, never merge_tools.
    assert patch_values(f) == {PPP: "merge"} and f.default_policy == "auto"
    assert "stop tool calls" not in f.explanation
    merge = set_version(
        nanogpt_settings(custom_prompt_post_processing="merge", function_calling=True), version
    )
    assert by_rule(run(merge), "ppp.tools") == []  # "removes tool calls" would be false here


def test_builtin_source_from_1_16_and_custom_source_prefer_tools():
    builtin = set_version(nanogpt_settings(custom_prompt_post_processing="", function_calling=True), "1.16.0")
    assert patch_values(by_rule(run(builtin), "ppp.nanogpt")[0]) == {PPP: "merge_tools"}
    custom = set_version(
        custom_settings(custom_prompt_post_processing="merge", function_calling=True), "1.13.5"
    )
    [f] = by_rule(run(custom), "ppp.tools")
    assert patch_values(f) == {PPP: "merge_tools"}


# ---- item 3: PPP only for Custom and OpenRouter before 1.13.0 ------------------------------------------


@pytest.mark.parametrize("version", ["1.12.8", "1.12.14"])
def test_builtin_source_before_1_13_gets_an_explanation_not_a_write(version):
    settings = set_version(nanogpt_settings(custom_prompt_post_processing=""), version)
    settings["extension_settings"]["connectionManager"]["profiles"] = [
        {"id": "p", "mode": "cc", "name": "Nano", "api": "nanogpt", "prompt-post-processing": "none"}
    ]
    shipped = {"chat_completion_source": "nanogpt", "custom_prompt_post_processing": ""}
    findings = run(settings, presets={"Mine": shipped})
    [f] = by_rule(findings, "ppp.nanogpt")
    assert not f.fixable and f.details["kind"] == "ignored" and "1.13.0" in f.explanation
    assert by_rule(findings, "preset.ppp") == [] and by_rule(findings, "profile.ppp") == []
    # The Custom source had PPP all along: there it is still written.
    custom = set_version(custom_settings(custom_prompt_post_processing=""), version)
    assert patch_values(by_rule(run(custom), "ppp.nanogpt")[0]) == {PPP: "merge"}


# ---- item 4: images on the built-in source go only to vision models ------------------------------------


def test_images_rule_tells_the_sources_apart():
    cat = catalogue()
    blind_builtin = nanogpt_settings(nanogpt_model="zai-org/glm-5.2", media_inlining=True)
    assert by_rule(run(blind_builtin, catalogue=cat), "images") == []  # ST sends it no images
    blind_custom = custom_settings(custom_model="zai-org/glm-5.2", media_inlining=True)
    [f] = by_rule(run(blind_custom, catalogue=cat), "images")
    assert f.severity == "warning" and "Custom source sends" in f.explanation


def test_images_labels_and_old_builtin_source():
    cat = catalogue()
    old = set_version(nanogpt_settings(nanogpt_model="openai/gpt-5.2"), "1.13.3")
    del old["oai_settings"]["media_inlining"]
    old["oai_settings"]["image_inlining"] = True
    [f] = by_rule(run(old, catalogue=cat), "images")
    # 1.13.3 has no NanoGPT case in isImageInliningSupported: images never reach the model.
    assert not f.fixable and "1.13.4" in f.explanation and '"Send inline images"' in f.explanation
    old["oai_settings"]["image_inlining"] = False
    assert by_rule(run(old, catalogue=cat), "images") == []  # turning it on would change nothing


# ---- item 5: reasoning per source and version ----------------------------------------------------------


def test_reasoning_on_builtin_source_before_1_13_5_is_explained_not_toggled():
    s = set_version(nanogpt_settings(nanogpt_model="zai-org/glm-5.2:thinking", show_thoughts=False), "1.13.4")
    [f] = by_rule(run(s, catalogue=catalogue()), "reasoning")
    assert not f.fixable and "1.13.5" in f.explanation and "Custom" in f.explanation
    s["oai_settings"]["show_thoughts"] = True
    assert len(by_rule(run(s, catalogue=catalogue()), "reasoning")) == 1  # still not shown: still said
    custom = set_version(
        custom_settings(custom_model="zai-org/glm-5.2:thinking", show_thoughts=False), "1.13.4"
    )
    [g] = by_rule(run(custom, catalogue=catalogue()), "reasoning")
    assert patch_values(g) == {("oai_settings", "show_thoughts"): True}  # Custom shows it since 1.12.13


def test_reasoning_on_custom_source_before_1_12_13():
    custom = set_version(
        custom_settings(custom_model="zai-org/glm-5.2:thinking", show_thoughts=True), "1.12.12"
    )
    [f] = by_rule(run(custom, catalogue=catalogue()), "reasoning")
    assert not f.fixable and "1.12.13" in f.explanation


# ---- item 12: removed, mistyped, or ST's placeholder ---------------------------------------------------


def test_placeholder_model_before_first_connect_is_not_reported():
    fresh = nanogpt_settings(nanogpt_model="gpt-4o-mini")  # ST's default; Connect replaces it
    assert by_rule(run(fresh, catalogue=catalogue()), "model.gone") == []


def test_removed_typo_and_unknown_models_are_told_apart():
    cat = catalogue()
    removed = nanogpt_settings(nanogpt_model="vendor/old-model")
    [r] = by_rule(run(removed, catalogue=cat, removed_models={"vendor/old-model": 1.8e9}), "model.gone")
    assert r.details["kind"] == "removed" and r.title == "Selected model was removed by NanoGPT"
    assert "2027-01-15" in r.explanation
    typo = nanogpt_settings(nanogpt_model="openai/gpt-5.3")
    [t] = by_rule(run(typo, catalogue=cat), "model.gone")
    assert t.details["kind"] == "typo"
    assert patch_values(t) == {("oai_settings", "nanogpt_model"): "openai/gpt-5.2"}
    unknown = nanogpt_settings(nanogpt_model="nobody/nothing")
    [u] = by_rule(run(unknown, catalogue=cat), "model.gone")
    assert u.details["kind"] == "unknown" and "mistyped" in u.explanation and not u.fixable


# ---- item 14: Text Completion --------------------------------------------------------------------------


def _textgen(model: str, url: str = "https://nano-gpt.com/api", max_context: int = 8192) -> dict:
    settings = full_settings()
    settings["main_api"] = "textgenerationwebui"
    settings["max_context"] = max_context
    tg = settings["textgenerationwebui_settings"]
    tg["type"] = "generic"
    tg["server_urls"] = {"generic": url}
    tg["generic_model"] = model
    return settings


@pytest.mark.parametrize(
    ("url", "posted"),
    [
        ("https://nano-gpt.com/api/subscription/v1", "https://nano-gpt.com/api/subscription/v1/completions"),
        ("https://nano-gpt.com/api/v1legacy", "https://nano-gpt.com/api/v1legacy/v1/completions"),
        ("https://nano-gpt.com/api/v1thinking", "https://nano-gpt.com/api/v1thinking/v1/completions"),
        ("https://nano-gpt.com/api/paid/v1", "https://nano-gpt.com/api/paid/v1/completions"),
    ],
)
def test_text_completion_address_without_completions(url, posted):
    [f] = by_rule(run(_textgen("ArliAI/Gemma-3-27B-ArliAI-RPMax-v3", url)), "textgen.endpoint")
    assert f.severity == "error" and posted in f.explanation
    assert patch_values(f) == {
        ("textgenerationwebui_settings", "server_urls", "generic"): "https://nano-gpt.com/api/v1"
    }


@pytest.mark.parametrize("url", ["https://nano-gpt.com/api", "https://nano-gpt.com/api/v1"])
def test_text_completion_standard_address_is_fine(url):
    assert by_rule(run(_textgen("x", url)), "textgen.endpoint") == []


def test_text_completion_context_against_the_model():
    model = "ArliAI/Gemma-3-27B-ArliAI-RPMax-v3"  # 32768
    [over] = by_rule(run(_textgen(model, max_context=65536), catalogue=catalogue()), "textgen.context")
    # Within the model's 32768 and what ST's locked slider takes (8192); unlocked, the model's own limit.
    assert over.severity == "warning" and patch_values(over) == {("max_context",): 8192}
    assert '"Context (tokens)"' in over.explanation
    over_unlocked = _textgen(model, max_context=65536)
    over_unlocked["power_user"]["max_context_unlocked"] = True
    [big] = by_rule(run(over_unlocked, catalogue=catalogue()), "textgen.context")
    assert patch_values(big) == {("max_context",): 32768}
    [low] = by_rule(run(_textgen(model, max_context=2048), catalogue=catalogue()), "textgen.context")
    # ST's slider takes at most 8192 until "Unlocked" is ticked (power-user.js MAX_CONTEXT_DEFAULT).
    assert low.severity == "info" and low.raises_cost and patch_values(low) == {("max_context",): 8192}
    unlocked = _textgen(model, max_context=2048)
    unlocked["power_user"]["max_context_unlocked"] = True
    [free] = by_rule(run(unlocked, catalogue=catalogue()), "textgen.context")
    assert patch_values(free) == {("max_context",): 32768}
    assert by_rule(run(_textgen(model, max_context=8192), catalogue=catalogue()), "textgen.context") == []
    assert by_rule(run(_textgen(model, max_context=30000), catalogue=catalogue()), "textgen.context") == []


def test_text_completion_explains_which_samplers_reach_nanogpt():
    [f] = by_rule(run(_textgen("openai/gpt-5.2"), catalogue=catalogue()), "textgen.nanogpt")
    assert "Min P" in f.explanation and "dropped" in f.explanation


# ---- item 16: ST's own words ---------------------------------------------------------------------------


def test_explanations_use_the_version_s_option_labels():
    new = set_version(custom_settings(custom_prompt_post_processing="", function_calling=True), "1.18.0")
    assert '"Merge consecutive roles (with tools)"' in by_rule(run(new), "ppp.nanogpt")[0].explanation
    old = set_version(custom_settings(custom_prompt_post_processing=""), "1.13.0")
    assert '"Merge consecutive roles" joins' in by_rule(run(old), "ppp.nanogpt")[0].explanation


# ---- item 6: what the extension may write --------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "source", "tools", "expected"),
    [
        ("1.19.0", "nanogpt", True, {"merge": "merge_tools", "semi": "semi_tools", "strict": "strict_tools"}),
        ("1.15.2", "nanogpt", True, {"merge": "merge", "semi": "semi", "single": "single"}),
        ("1.13.0", "custom", True, {"merge": "merge", "semi": "semi", "single": "single"}),
        ("1.12.8", "custom", False, {"merge": "merge", "semi": None, "strict": "strict", "single": None}),
        ("1.12.14", "nanogpt", False, {"merge": None, "semi": None, "strict": None, "single": None}),
    ],
)
def test_ppp_choices_for_the_extension_go_through_the_version_gate(version, source, tools, expected):
    settings = set_version(
        (custom_settings if source == "custom" else nanogpt_settings)(function_calling=tools),
        version,
    )
    choices = ppp_choices(DoctorContext.build(settings))
    assert {k: v for k, v in choices["choices"].items() if k in expected} == expected
    assert all(v is None or v in choices["values"] for v in choices["choices"].values())
    assert choices["applies"] is (version != "1.12.14")
    if version == "1.19.0":
        assert choices["labels"]["merge_tools"] == "Merge consecutive roles (with tools)"
