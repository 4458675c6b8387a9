from __future__ import annotations

import json

import pytest

from nanogpt_companion.doctor.context import DoctorContext
from nanogpt_companion.doctor.engine import RULES, diagnose
from nanogpt_companion.doctor.families import FamilyTableError, load_family_table
from tests.doctor.helpers import (
    by_rule,
    catalogue,
    custom_settings,
    full_settings,
    load_st,
    nanogpt_settings,
    patch_values,
    payg,
    run,
    set_version,
    subscriber,
)

PPP = ("oai_settings", "custom_prompt_post_processing")


def test_rules_metadata():
    ids = [r.id for r in RULES]
    assert ids == [
        "ppp.nanogpt",
        "ppp.tools",
        "endpoint.url",
        "endpoint.tier",
        "reasoning",
        "web_search",
        "images",
        "context",
        "model.gone",
        "textgen.endpoint",
        "textgen.context",
        "textgen.nanogpt",
        "preset.ppp",
        "profile.ppp",
        "st.exposed",
        "provider.choice",
        "provider.billing",
        "image.key",
        "keys.slots",
    ]
    assert {r.id: r.default_policy for r in RULES if r.default_policy == "auto"} == {"ppp.nanogpt": "auto"}


def test_openai_source_fixture_is_clean():
    assert run(full_settings(), catalogue=catalogue()) == []


# ---- ppp.nanogpt ---------------------------------------------------------------------------------------


def test_ppp_unset_becomes_merge_auto():
    [f] = by_rule(
        run(nanogpt_settings(custom_prompt_post_processing=""), catalogue=catalogue()), "ppp.nanogpt"
    )
    assert patch_values(f) == {PPP: "merge"}
    assert f.patch[0].old == "" and f.patch[0].existed and f.default_policy == "auto"


def test_ppp_missing_key_patch_says_it_did_not_exist():
    settings = nanogpt_settings()
    del settings["oai_settings"]["custom_prompt_post_processing"]
    [f] = by_rule(run(settings), "ppp.nanogpt")
    assert f.patch[0].existed is False and f.patch[0].value == "merge"


def test_ppp_unset_with_function_calling_uses_merge_tools():
    [f] = by_rule(
        run(nanogpt_settings(custom_prompt_post_processing="", function_calling=True)), "ppp.nanogpt"
    )
    assert patch_values(f) == {PPP: "merge_tools"}


@pytest.mark.parametrize("version", ["1.12.10", "1.13.0"])
def test_ppp_no_tools_value_before_1_13_1_and_asks(version):
    # The Custom source sends tools in every version, so "merge" would stop them: only a suggestion.
    settings = set_version(custom_settings(custom_prompt_post_processing="", function_calling=True), version)
    [f] = by_rule(run(settings), "ppp.nanogpt")
    assert patch_values(f) == {PPP: "merge"} and f.default_policy == "ask"


def test_ppp_not_for_other_sources_or_text_completion():
    assert by_rule(run(full_settings()), "ppp.nanogpt") == []
    settings = nanogpt_settings(custom_prompt_post_processing="")
    settings["main_api"] = "textgenerationwebui"
    assert run(settings) == []
    assert (
        by_rule(
            run(custom_settings("https://openrouter.ai/api/v1", custom_prompt_post_processing="")),
            "ppp.nanogpt",
        )
        == []
    )


def test_ppp_custom_source_with_nanogpt_url():
    settings = custom_settings(custom_prompt_post_processing="", custom_model="openai/gpt-5.2")
    [f] = by_rule(run(settings, catalogue=catalogue()), "ppp.nanogpt")
    assert patch_values(f) == {PPP: "merge"}


def test_family_override():
    settings = nanogpt_settings(
        custom_prompt_post_processing="", nanogpt_model="ArliAI/Gemma-3-27B-ArliAI-RPMax-v3"
    )
    [f] = by_rule(run(settings, catalogue=catalogue()), "ppp.nanogpt")
    assert patch_values(f) == {PPP: "semi"} and f.details["family"]["id"] == "gemma"
    # merge on a gemma model: suggested (ask), not automatic
    settings["oai_settings"]["custom_prompt_post_processing"] = "merge"
    [g] = by_rule(run(settings, catalogue=catalogue()), "ppp.nanogpt")
    assert patch_values(g) == {PPP: "semi"} and g.default_policy == "ask"


def test_user_family_table_extends_and_overrides(tmp_path):
    user = tmp_path / "families.json"
    user.write_text(
        json.dumps(
            {
                "version": 1,
                "families": [
                    {
                        "id": "glm",
                        "pattern": "glm-5",
                        "ppp": "strict",
                        "reason": "test: GLM wants user first",
                    },
                    {"id": "gemma", "pattern": "gemma", "ppp": "merge", "reason": "test: override built-in"},
                ],
            }
        )
    )
    table = load_family_table(user)
    assert table.match("zai-org/glm-5.2").entry.ppp == "strict"  # type: ignore[union-attr]
    assert table.match("ArliAI/Gemma-3-27B").origin == "user"  # type: ignore[union-attr]
    settings = nanogpt_settings(custom_prompt_post_processing="", nanogpt_model="zai-org/glm-5.2")
    [f] = by_rule(run(settings, catalogue=catalogue(), family_table=table), "ppp.nanogpt")
    assert patch_values(f) == {PPP: "strict"}
    settings["oai_settings"]["nanogpt_model"] = "openai/gpt-5.2"
    table2 = load_family_table(user)
    settings2 = nanogpt_settings(custom_prompt_post_processing="", nanogpt_model="openai/gpt-5.2")
    assert (
        by_rule(run(settings2, catalogue=catalogue(), family_table=table2), "ppp.nanogpt")[0].patch[0].value
        == "merge"
    )


def test_strict_family_is_kept_strict_with_inline_images(tmp_path):
    """Issue 10 item 1: images survive strict since ST 1.12.8, so a strict family stays strict."""
    user = tmp_path / "f.json"
    user.write_text(
        json.dumps({"families": [{"id": "x", "pattern": "gpt-5", "ppp": "strict", "reason": "r"}]})
    )
    settings = nanogpt_settings(
        custom_prompt_post_processing="", nanogpt_model="openai/gpt-5.2", media_inlining=True
    )
    [f] = by_rule(run(settings, catalogue=catalogue(), family_table=load_family_table(user)), "ppp.nanogpt")
    assert patch_values(f) == {PPP: "strict"}


@pytest.mark.parametrize(
    "content",
    [
        "{",
        '{"families": [{"id": "a", "pattern": "(", "ppp": "semi", "reason": "r"}]}',
        '{"families": [{"id": "a", "pattern": "x", "ppp": "semi_tools", "reason": "r"}]}',
        '{"families": [{"id": "a", "pattern": "x", "ppp": "semi", "reason": "r"},'
        '{"id": "a", "pattern": "y", "ppp": "semi", "reason": "r"}]}',
    ],
)
def test_invalid_family_file_is_a_clear_error(tmp_path, content):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(FamilyTableError, match=r"bad\.json"):
        load_family_table(bad)
    with pytest.raises(FamilyTableError, match="cannot read"):
        load_family_table(tmp_path / "missing.json")


# ---- ppp.tools -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("current", "expected"), [("merge", "merge_tools"), ("semi", "semi_tools")])
def test_ppp_tools(current, expected):
    settings = nanogpt_settings(custom_prompt_post_processing=current, function_calling=True)
    [f] = by_rule(run(settings), "ppp.tools")
    assert patch_values(f) == {PPP: expected}
    assert by_rule(run(settings), "ppp.nanogpt") == []


def test_ppp_tools_strict_keeps_strict_and_silent_on_old_st():
    settings = nanogpt_settings(custom_prompt_post_processing="strict", function_calling=True)
    [f] = by_rule(run(settings), "ppp.tools")
    assert patch_values(f) == {PPP: "strict_tools"}  # inline images on: still strict (issue 10 item 1)
    assert by_rule(run(set_version(settings, "1.13.0")), "ppp.tools") == []
    assert (
        by_rule(
            run(nanogpt_settings(custom_prompt_post_processing="merge_tools", function_calling=True)),
            "ppp.tools",
        )
        == []
    )


# ---- endpoint.url / endpoint.tier ------------------------------------------------------------------------


def test_endpoint_url_custom_and_textgen():
    settings = custom_settings("http://nano-gpt.com/v1/chat/completions")
    settings["textgenerationwebui_settings"]["server_urls"] = {
        "generic": "https://nano-gpt.com/api/v1/completions "
    }
    found = by_rule(run(settings), "endpoint.url")
    assert [patch_values(f) for f in found] == [
        {("oai_settings", "custom_url"): "https://nano-gpt.com/api/v1"},
        {("textgenerationwebui_settings", "server_urls", "generic"): "https://nano-gpt.com/api/v1"},
    ]
    assert found[0].severity == "error"
    assert by_rule(run(custom_settings()), "endpoint.url") == []


def test_endpoint_tier():
    v1 = custom_settings()
    [f] = by_rule(run(v1, account=subscriber()), "endpoint.tier")
    assert patch_values(f) == {("oai_settings", "custom_url"): "https://nano-gpt.com/api/subscription/v1"}
    assert by_rule(run(v1, account=subscriber("paygo")), "endpoint.tier") == []
    assert by_rule(run(v1, account=payg()), "endpoint.tier") == []
    sub = custom_settings("https://nano-gpt.com/api/subscription/v1")
    [g] = by_rule(run(sub, account=payg()), "endpoint.tier")
    assert g.patch[0].value == "https://nano-gpt.com/api/v1"
    assert by_rule(run(sub, account=None), "endpoint.tier") == []  # unknown account: leave it
    # Issue 10 item 5: no v1legacy for old ST (the Custom source reads both reasoning fields from 1.12.13).
    assert by_rule(run(set_version(custom_settings(), "1.13.4"), account=None), "endpoint.tier") == []
    [h] = by_rule(run(set_version(sub, "1.13.1"), account=payg()), "endpoint.tier")
    assert h.patch[0].value == "https://nano-gpt.com/api/v1"
    assert by_rule(run(nanogpt_settings(), account=subscriber()), "endpoint.tier") == []  # built-in source


# ---- reasoning / web_search / images / context ------------------------------------------------------------


def test_reasoning():
    s = nanogpt_settings(nanogpt_model="zai-org/glm-5.2:thinking", show_thoughts=False)
    [f] = by_rule(run(s, catalogue=catalogue()), "reasoning")
    assert patch_values(f) == {("oai_settings", "show_thoughts"): True}
    assert (
        by_rule(
            run(
                nanogpt_settings(nanogpt_model="zai-org/glm-5.2", show_thoughts=False), catalogue=catalogue()
            ),
            "reasoning",
        )
        == []
    )
    assert by_rule(run(s), "reasoning") == []  # no catalogue: silent
    thinking = custom_settings("https://nano-gpt.com/api/v1thinking", custom_model="zai-org/glm-5.2:thinking")
    [g] = by_rule(run(thinking, catalogue=catalogue()), "reasoning")
    assert g.severity == "info" and not g.fixable


def test_web_search():
    [f] = by_rule(run(custom_settings(enable_web_search=True, custom_model="openai/gpt-5.2")), "web_search")
    # Issue 10 item 7: the shared switch is never touched; the :online suffix is offered, with its cost.
    assert patch_values(f) == {("oai_settings", "custom_model"): "openai/gpt-5.2:online"}
    assert f.raises_cost and f.severity == "info"
    assert "shared with the built-in NanoGPT source" in f.explanation and "$0.006" in f.explanation
    online = custom_settings(enable_web_search=True, custom_model="openai/gpt-5.2:online")
    assert by_rule(run(online), "web_search") == []
    assert by_rule(run(nanogpt_settings(enable_web_search=True)), "web_search") == []
    assert by_rule(run(custom_settings(enable_web_search=False)), "web_search") == []


def test_images_both_directions_and_old_key():
    blind = custom_settings(custom_model="zai-org/glm-5.2", media_inlining=True)
    [f] = by_rule(run(blind, catalogue=catalogue()), "images")
    assert f.severity == "warning" and patch_values(f) == {("oai_settings", "media_inlining"): False}
    assert '"Send inline media"' in f.explanation
    seeing = nanogpt_settings(nanogpt_model="openai/gpt-5.2", media_inlining=False)
    [g] = by_rule(run(seeing, catalogue=catalogue()), "images")
    assert g.severity == "info" and g.patch[0].value is True and g.raises_cost
    old = set_version(custom_settings(custom_model="zai-org/glm-5.2"), "1.13.5")
    del old["oai_settings"]["media_inlining"]
    old["oai_settings"]["image_inlining"] = True
    [h] = by_rule(run(old, catalogue=catalogue()), "images")
    assert h.patch[0].path == ("oai_settings", "image_inlining")
    assert '"Send inline images"' in h.explanation
    assert (
        by_rule(run(nanogpt_settings(nanogpt_model="zai-org/glm-5.3"), catalogue=catalogue()), "images") == []
    )


def test_context():
    over = custom_settings(custom_model="ArliAI/Gemma-3-27B-ArliAI-RPMax-v3", openai_max_context=65536)
    [f] = by_rule(run(over, catalogue=catalogue()), "context")
    assert f.severity == "warning" and f.patch[0].value == 32768
    far = custom_settings(custom_model="openai/gpt-5.2", openai_max_context=4095)
    [g] = by_rule(run(far, catalogue=catalogue()), "context")
    assert g.severity == "info"
    ok = custom_settings(custom_model="ArliAI/Gemma-3-27B-ArliAI-RPMax-v3", openai_max_context=30000)
    assert by_rule(run(ok, catalogue=catalogue()), "context") == []
    assert by_rule(run(nanogpt_settings(openai_max_context=10**7), catalogue=catalogue()), "context") == []


# ---- model.gone / textgen.nanogpt ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "pick"),
    [
        ("gpt-5.2", "openai/gpt-5.2"),  # vendor prefix added
        ("OpenAI/GPT-5.2", "openai/gpt-5.2"),  # letter case
        ("deepseek/deepseek-v4-pro", "deepseek/deepseek-v4-pro:thinking"),  # only a thinking variant left
        ("anthropic/claude-opus-4.6:thinking:low", None),  # base and two variants: ambiguous
        ("totally/unknown", None),
    ],
)
def test_model_gone(model, pick):
    [f] = by_rule(run(nanogpt_settings(nanogpt_model=model), catalogue=catalogue()), "model.gone")
    assert f.details["clear_match"] == pick
    if pick is None:
        assert not f.fixable
    else:
        assert patch_values(f) == {("oai_settings", "nanogpt_model"): pick}


def test_model_gone_silent_when_present_or_unknown_catalogue():
    assert (
        by_rule(run(nanogpt_settings(nanogpt_model="openai/gpt-5.2"), catalogue=catalogue()), "model.gone")
        == []
    )
    assert (
        by_rule(
            run(nanogpt_settings(nanogpt_model="openai/gpt-5.2:online"), catalogue=catalogue()), "model.gone"
        )
        == []
    )
    assert by_rule(run(nanogpt_settings(nanogpt_model="gone/x")), "model.gone") == []
    [f] = by_rule(run(custom_settings(custom_model="gpt-4o-mini"), catalogue=catalogue()), "model.gone")
    assert f.severity == "error" and f.patch[0].path == ("oai_settings", "custom_model")


def _textgen(model: str, url: str = "https://nano-gpt.com/api") -> dict:
    settings = full_settings()
    settings["main_api"] = "textgenerationwebui"
    tg = settings["textgenerationwebui_settings"]
    tg["type"] = "generic"
    tg["server_urls"] = {"generic": url}
    tg["generic_model"] = model
    return settings


def test_textgen_nanogpt():
    [f] = by_rule(run(_textgen("openai/gpt-5.2"), catalogue=catalogue()), "textgen.nanogpt")
    assert f.details["text_completion_models"] == [
        "ArliAI/Gemma-3-27B-ArliAI-RPMax-v3",
        "ArliAI/Llama-3.3-70B-ArliAI-RPMax-v1.4",
    ]
    assert (
        by_rule(run(_textgen("ArliAI/Gemma-3-27B-ArliAI-RPMax-v3"), catalogue=catalogue()), "textgen.nanogpt")
        == []
    )
    assert (
        by_rule(
            run(_textgen("openai/gpt-5.2", "http://127.0.0.1:5000"), catalogue=catalogue()), "textgen.nanogpt"
        )
        == []
    )
    assert by_rule(run(_textgen("openai/gpt-5.2")), "textgen.nanogpt") == []


# ---- preset.ppp / profile.ppp --------------------------------------------------------------------------


def test_preset_ppp_only_when_bound_and_relevant():
    shipped = load_st("openai-preset.Default.json")
    saved = dict(shipped, chat_completion_source="nanogpt", custom_prompt_post_processing="")
    other = dict(shipped, chat_completion_source="openai", custom_prompt_post_processing="")
    presets = {"Default": shipped, "Mine": saved, "OpenAI": other}
    settings = nanogpt_settings(custom_prompt_post_processing="merge")
    [f] = by_rule(run(settings, presets=presets), "preset.ppp")
    assert f.target == "preset" and f.preset == "Mine"
    assert f.patch[0].path == ("custom_prompt_post_processing",) and f.patch[0].value == "merge"
    settings["oai_settings"]["bind_preset_to_connection"] = False
    assert by_rule(run(settings, presets=presets), "preset.ppp") == []


def test_profile_ppp():
    settings = nanogpt_settings(custom_prompt_post_processing="merge")
    settings["extension_settings"]["connectionManager"]["profiles"] = [
        {
            "id": "a",
            "mode": "cc",
            "name": "Nano",
            "api": "nanogpt",
            "model": "openai/gpt-5.2",
            "prompt-post-processing": "none",
            "exclude": [],
        },
        {"id": "b", "mode": "cc", "name": "OR", "api": "openrouter", "prompt-post-processing": "none"},
        {
            "id": "c",
            "mode": "cc",
            "name": "Custom nano",
            "api": "custom",
            "api-url": "https://nano-gpt.com/api/v1",
            "model": "x",
            "prompt-post-processing": "",
            "exclude": [],
        },
        {
            "id": "d",
            "mode": "cc",
            "name": "Excluded",
            "api": "nanogpt",
            "prompt-post-processing": "none",
            "exclude": ["prompt-post-processing"],
        },
        {"id": "e", "mode": "tc", "name": "TC", "api": "generic"},
    ]
    [f] = by_rule(run(settings), "profile.ppp")
    assert patch_values(f) == {
        ("extension_settings", "connectionManager", "profiles", 0, "prompt-post-processing"): "merge"
    }
    assert f.patch[0].old == "none" and f.details["profile"]["name"] == "Nano"


# ---- determinism / robustness ---------------------------------------------------------------------------


def test_ids_are_stable_and_situation_specific():
    s = nanogpt_settings(custom_prompt_post_processing="", nanogpt_model="gpt-5.2")
    first = run(s, catalogue=catalogue())
    second = run(
        nanogpt_settings(custom_prompt_post_processing="", nanogpt_model="gpt-5.2"), catalogue=catalogue()
    )
    assert [f.id for f in first] == [f.id for f in second] and len(first) >= 2
    other = run(
        nanogpt_settings(custom_prompt_post_processing="", nanogpt_model="gone/y"), catalogue=catalogue()
    )
    assert {f.id for f in by_rule(first, "model.gone")}.isdisjoint(
        {f.id for f in by_rule(other, "model.gone")}
    )


def test_flat_legacy_settings_layout():
    legacy = dict(nanogpt_settings(custom_prompt_post_processing="")["oai_settings"])
    legacy["main_api"] = "openai"
    [f] = by_rule(run(legacy), "ppp.nanogpt")
    assert f.patch[0].path == ("custom_prompt_post_processing",)


def test_bad_types_do_not_crash(caplog):
    s = nanogpt_settings(
        custom_prompt_post_processing=5,
        function_calling="yes",
        nanogpt_model=None,
        openai_max_context="big",
        media_inlining="on",
    )
    s["extension_settings"]["connectionManager"] = {"profiles": [None, 3, {"mode": "cc"}]}
    s["textgenerationwebui_settings"] = []
    diagnose(
        DoctorContext.build(s, catalogue=catalogue(), presets={"x": {"custom_prompt_post_processing": None}})
    )
    assert "failed" not in caplog.text
