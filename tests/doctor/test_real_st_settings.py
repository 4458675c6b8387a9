"""The rules on the settings.json files real SillyTavern wrote, per supported version (issue 10).

The files come from ``tests/fixtures/sillytavern/<version>/`` (written by ST 1.13.5, 1.18.0 and 1.19.0 in
headless Chromium, ``python -m tests.realst.make_fixtures``), so the keys each version really writes
(``image_inlining`` vs ``media_inlining``, ``currentVersion``, the Text Completion layout) are what the rules
read. Models are the fake NanoGPT's, with its context sizes and capabilities.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

import pytest

from nanogpt_companion.doctor.context import DoctorContext
from nanogpt_companion.doctor.engine import diagnose
from nanogpt_companion.doctor.finding import Finding
from nanogpt_companion.domain import CatalogEntry
from tests.doctor.helpers import by_rule, patch_values
from tests.fakes.nanogpt_upstream import FakeNanoGPT
from tests.realst.stack import load_version_fixture
from tests.realst.versions import ST_VERSIONS, version_tuple

PPP = ("oai_settings", "custom_prompt_post_processing")


@cache
def fake_catalogue() -> dict[str, CatalogEntry]:
    fake = FakeNanoGPT()
    return {
        m["id"]: CatalogEntry(
            id=m["id"],
            name=m.get("name") or m["id"],
            vendor=m["id"].split("/", 1)[0],
            context_length=m.get("context_length"),
            capabilities={k: v for k, v in (m.get("capabilities") or {}).items() if isinstance(v, bool)},
        )
        for m in fake.models
    }


def written(version: str, name: str, **oai: Any) -> dict[str, Any]:
    data = copy.deepcopy(load_version_fixture(version, name))
    data["oai_settings"].update(oai)
    return data


def diagnose_file(settings: dict[str, Any]) -> list[Finding]:
    return diagnose(DoctorContext.build(settings, catalogue=fake_catalogue()))


@pytest.mark.parametrize("version", ST_VERSIONS)
def test_prompt_post_processing_on_the_file_st_wrote(version: str) -> None:
    settings = written(version, "settings.nanogpt.json")
    assert settings["currentVersion"] == version
    [unset] = by_rule(diagnose_file(settings), "ppp.nanogpt")
    assert patch_values(unset) == {PPP: "merge"} and unset.default_policy == "auto"
    # Function calling on: the built-in source sends tools only from 1.16.0 (tool-calling.js).
    tools = written(version, "settings.nanogpt.json", function_calling=True)
    [with_tools] = by_rule(diagnose_file(tools), "ppp.nanogpt")
    expected = "merge_tools" if version_tuple(version) >= (1, 16, 0) else "merge"
    assert patch_values(with_tools) == {PPP: expected} and with_tools.default_policy == "auto"
    # The Custom source has sent tools all along.
    custom = written(version, "settings.custom-nanogpt.json", function_calling=True)
    assert patch_values(by_rule(diagnose_file(custom), "ppp.nanogpt")[0]) == {PPP: "merge_tools"}


@pytest.mark.parametrize("version", ST_VERSIONS)
def test_single_user_message_with_images_is_left_alone(version: str) -> None:
    vision = next(i for i, e in fake_catalogue().items() if e.capabilities.get("vision") and ":" not in i)
    settings = written(
        version, "settings.nanogpt.json", custom_prompt_post_processing="single", nanogpt_model=vision
    )
    key = "media_inlining" if "media_inlining" in settings["oai_settings"] else "image_inlining"
    settings["oai_settings"][key] = True
    findings = diagnose_file(settings)
    assert by_rule(findings, "ppp.nanogpt") == [] and by_rule(findings, "ppp.tools") == []


@pytest.mark.parametrize("version", ST_VERSIONS)
def test_inline_images_named_and_judged_per_version_and_source(version: str) -> None:
    blind = next(i for i, e in fake_catalogue().items() if e.capabilities.get("vision") is False)
    custom = written(version, "settings.custom-nanogpt.json", custom_model=blind)
    key = "media_inlining" if "media_inlining" in custom["oai_settings"] else "image_inlining"
    assert (key == "image_inlining") is (version_tuple(version) < (1, 15, 0))  # what ST really wrote
    custom["oai_settings"][key] = True
    [f] = by_rule(diagnose_file(custom), "images")
    label = "Send inline media" if key == "media_inlining" else "Send inline images"
    assert f'"{label}"' in f.explanation and patch_values(f) == {("oai_settings", key): False}
    builtin = written(version, "settings.nanogpt.json", nanogpt_model=blind)
    builtin["oai_settings"][key] = True
    assert by_rule(diagnose_file(builtin), "images") == []  # ST sends no images to a model without vision


@pytest.mark.parametrize("version", ST_VERSIONS)
def test_text_completion_checks_on_the_file_st_wrote(version: str) -> None:
    settings = written(version, "settings.textgen-nanogpt.json")
    assert settings["main_api"] == "textgenerationwebui"
    findings = diagnose_file(settings)
    assert by_rule(findings, "textgen.endpoint") == []
    [model] = by_rule(findings, "textgen.nanogpt")  # a chat model; and what ST's Generic type sends
    assert "Min P" in model.explanation
    tg = settings["textgenerationwebui_settings"]
    tg["server_urls"]["generic"] = "https://nano-gpt.com/api/subscription/v1"
    [endpoint] = by_rule(diagnose_file(settings), "textgen.endpoint")
    assert endpoint.severity == "error"
    small = min(
        (e.context_length, i) for i, e in fake_catalogue().items() if e.context_length and ":" not in i
    )
    tg["generic_model"] = small[1]
    settings["max_context"] = small[0] * 2
    [context] = by_rule(diagnose_file(settings), "textgen.context")
    # As far down as the model needs and ST's slider (8192 while not "Unlocked") takes.
    assert patch_values(context) == {("max_context",): min(small[0], 8192)}


@pytest.mark.parametrize("version", ST_VERSIONS)
def test_model_gone_on_the_files_st_wrote(version: str) -> None:
    """Real ST's first save holds its placeholder ``gpt-4o-mini``; once connected, ST replaced it with a
    listed model (the fixture's). Placeholder: nothing; a listed model: nothing; then each kind of gone."""
    fresh = copy.deepcopy(load_version_fixture(version, "settings.first-save.json"))
    assert fresh["oai_settings"]["nanogpt_model"] == "gpt-4o-mini"  # what ST really writes on a fresh install
    fresh["main_api"] = "openai"
    fresh["oai_settings"]["chat_completion_source"] = "nanogpt"
    assert by_rule(diagnose_file(fresh), "model.gone") == []
    connected = written(version, "settings.nanogpt.json")
    model = connected["oai_settings"]["nanogpt_model"]
    # ST swapped its placeholder for the first model NanoGPT listed as soon as it connected.
    assert model != "gpt-4o-mini" and model in fake_catalogue()
    assert by_rule(diagnose_file(connected), "model.gone") == []
    without = {i: e for i, e in fake_catalogue().items() if i != model}
    kinds = {}
    for label, settings, removed in (
        ("removed", connected, {model: 1_700_000_000.0}),
        ("unknown", written(version, "settings.nanogpt.json", nanogpt_model="acme/zz-unlisted-9"), {}),
        ("typo", written(version, "settings.nanogpt.json", nanogpt_model=model.upper()), {}),
    ):
        catalogue = without if label != "typo" else fake_catalogue()
        ctx = DoctorContext.build(settings, catalogue=catalogue, removed_models=removed)
        [gone] = by_rule(diagnose(ctx), "model.gone")
        kinds[label] = (gone.details["kind"], gone.title)
    assert {label: kind for label, (kind, _) in kinds.items()} == {
        "removed": "removed",
        "unknown": "unknown",
        "typo": "typo",
    }
    assert len({title for _, title in kinds.values()}) == 3  # three different wordings


@pytest.mark.parametrize("version", ST_VERSIONS)
def test_web_search_reasoning_and_context_on_the_files_st_wrote(version: str) -> None:
    """Web search: the Custom source ignores the shared switch, so ``:online`` is offered (a cost); the
    NanoGPT source applies it itself. Reasoning: "Request model reasoning" off on a reasoning model is a
    one-by-one preference on both sources (all three versions show reasoning for both). Context: the NanoGPT
    source caps it itself (getNanoGptMaxContext); the Custom source does not, so too large is a problem."""
    catalogue = fake_catalogue()
    custom = written(version, "settings.custom-nanogpt.json", enable_web_search=True)
    model = custom["oai_settings"]["custom_model"]
    [search] = by_rule(diagnose_file(custom), "web_search")
    assert search.raises_cost and patch_values(search) == {
        ("oai_settings", "custom_model"): f"{model}:online"
    }
    assert "shared" in search.explanation
    assert (
        by_rule(
            diagnose_file(written(version, "settings.nanogpt.json", enable_web_search=True)), "web_search"
        )
        == []
    )
    thinker = next(i for i, e in catalogue.items() if e.capabilities.get("reasoning"))
    for name, key in (
        ("settings.nanogpt.json", "nanogpt_model"),
        ("settings.custom-nanogpt.json", "custom_model"),
    ):
        settings = written(version, name, show_thoughts=False, **{key: thinker})
        [reasoning] = by_rule(diagnose_file(settings), "reasoning")
        assert reasoning.severity == "info" and patch_values(reasoning) == {
            ("oai_settings", "show_thoughts"): True
        }
    limit = catalogue[model].context_length
    assert limit is not None
    too_big = written(version, "settings.custom-nanogpt.json", openai_max_context=limit * 2)
    [context] = by_rule(diagnose_file(too_big), "context")
    assert context.severity != "info" and patch_values(context) == {
        ("oai_settings", "openai_max_context"): limit
    }
    builtin = written(version, "settings.nanogpt.json", openai_max_context=limit * 2, nanogpt_model=model)
    assert by_rule(diagnose_file(builtin), "context") == []
