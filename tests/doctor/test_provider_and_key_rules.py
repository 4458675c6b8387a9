"""Provider selection (ST 1.18.0+), Image Generation's key and stale key slots: the pure rules.

Provider info is parsed from the fake upstream's own payloads (the shapes of nanogpt-api.md), so the rules
see exactly what the service would hand them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from nanogpt_companion.doctor.context import DoctorContext
from nanogpt_companion.doctor.engine import diagnose
from nanogpt_companion.doctor.finding import Finding
from nanogpt_companion.doctor.rules.keys import needed_key_slots
from nanogpt_companion.doctor.rules.providers import providers_lookup_id
from nanogpt_companion.domain import ModelProviders, SubscriptionCoverage
from nanogpt_companion.nanogpt.schemas import parse_model_providers
from tests.doctor.helpers import by_rule, catalogue, custom_settings, nanogpt_settings, payg, subscriber
from tests.fakes.nanogpt_providers import (
    MASTER_PROVIDERS,
    NO_SELECTION_MODEL,
    SELECTABLE_MODEL,
    UNAVAILABLE_PROVIDER,
    default_provider_info,
)

PROVIDER = ("oai_settings", "nanogpt_provider")
NAMES = dict(MASTER_PROVIDERS)


def info(model_id: str) -> ModelProviders:
    return parse_model_providers(orjson.dumps(default_provider_info()[model_id]), model_id)


def diagnose_with(settings: dict[str, Any], **extra: Any) -> list[Finding]:
    ctx = DoctorContext.build(
        settings, catalogue=extra.pop("catalogue", catalogue()), account=extra.pop("account", None)
    )
    return diagnose(dataclasses.replace(ctx, **extra))


def provider_ctx(provider: str, model: str = SELECTABLE_MODEL, **oai: Any) -> dict[str, Any]:
    return nanogpt_settings(nanogpt_model=model, nanogpt_provider=provider, **oai)


def all_info() -> dict[str, ModelProviders]:
    return {m: info(m) for m in (SELECTABLE_MODEL, NO_SELECTION_MODEL)}


def test_unavailable_provider_is_reported_with_available_choices_and_a_clear_fix() -> None:
    findings = by_rule(
        diagnose_with(provider_ctx(UNAVAILABLE_PROVIDER), providers=all_info(), provider_names=NAMES),
        "provider.choice",
    )
    assert len(findings) == 1
    finding = findings[0]
    assert finding.severity == "error" and finding.details["kind"] == "unavailable"
    assert [(op.path, op.value, op.old) for op in finding.patch] == [(PROVIDER, "", UNAVAILABLE_PROVIDER)]
    choices = finding.details["choices"]
    assert [c["id"] for c in choices] == ["deepinfra", "wafer", "fireworks"]  # available only, cheapest first
    assert choices[0]["label"] == "DeepInfra" and choices[0]["prompt"] == 0.4  # per 1M (NanoGPT: per 1K)
    assert "Chutes is currently unavailable" in finding.explanation and "DeepInfra" in finding.explanation


def test_provider_not_offered_and_model_without_selection() -> None:
    not_offered = by_rule(
        diagnose_with(provider_ctx("akash"), providers=all_info(), provider_names=NAMES), "provider.choice"
    )
    assert [f.details["kind"] for f in not_offered] == ["not_offered"]
    assert "#5615" in not_offered[0].explanation
    no_selection = by_rule(
        diagnose_with(
            provider_ctx("deepinfra", model=NO_SELECTION_MODEL), providers=all_info(), provider_names=NAMES
        ),
        "provider.choice",
    )
    assert [f.details["kind"] for f in no_selection] == ["no_selection"]
    assert no_selection[0].patch[0].value == ""


def test_an_available_provider_auto_and_unknown_info_are_quiet() -> None:
    assert not by_rule(diagnose_with(provider_ctx("deepinfra"), providers=all_info()), "provider.choice")
    assert not by_rule(diagnose_with(provider_ctx(""), providers=all_info()), "provider.choice")
    # No provider info (NanoGPT unreachable): no finding from a guess.
    assert not by_rule(diagnose_with(provider_ctx(UNAVAILABLE_PROVIDER)), "provider.choice")


def test_st_without_provider_selection_gets_nothing() -> None:
    settings = provider_ctx(UNAVAILABLE_PROVIDER)
    del settings["oai_settings"]["nanogpt_provider"]  # what 1.13.5 saves: the key does not exist
    del settings["oai_settings"]["nanogpt_payg_override"]
    findings = diagnose_with(settings, providers=all_info(), account=subscriber())
    assert not [f for f in findings if f.rule.startswith("provider.")]


def test_a_pin_in_the_model_id_that_contradicts_the_choice() -> None:
    model = "deepseek/deepseek-v4-pro:thinking:fireworks"
    assert providers_lookup_id(model, NAMES) == SELECTABLE_MODEL
    findings = by_rule(
        diagnose_with(provider_ctx("deepinfra", model=model), providers=all_info(), provider_names=NAMES),
        "provider.choice",
    )
    assert [f.details["kind"] for f in findings] == ["pin_conflict"]
    assert findings[0].details["pin"] == "fireworks"
    # The same pin as the choice is no conflict; a :thinking suffix is no pin.
    assert not by_rule(
        diagnose_with(provider_ctx("fireworks", model=model), providers=all_info(), provider_names=NAMES),
        "provider.choice",
    )
    assert providers_lookup_id("zai-org/glm-5.2:thinking:online", NAMES) == "zai-org/glm-5.2:thinking"


def test_billing_effect_is_stated_for_subscribers_only() -> None:
    settings = provider_ctx("deepinfra", nanogpt_payg_override=True)
    included = catalogue()
    included[SELECTABLE_MODEL] = included[SELECTABLE_MODEL].model_copy(
        update={"subscription": SubscriptionCoverage(included=True)}
    )
    findings = by_rule(
        diagnose_with(settings, catalogue=included, providers=all_info(), account=subscriber()),
        "provider.billing",
    )
    assert len(findings) == 1
    assert "included in your NanoGPT subscription" in findings[0].explanation
    assert "as pay-as-you-go, from your balance" in findings[0].explanation
    assert {op.path: op.value for op in findings[0].patch} == {
        PROVIDER: "",
        ("oai_settings", "nanogpt_payg_override"): False,
    }
    assert not by_rule(diagnose_with(settings, catalogue=included, account=payg()), "provider.billing")
    # Auto and no override: the subscription covers it; nothing to say. A paid model: nothing either.
    assert not by_rule(
        diagnose_with(provider_ctx(""), catalogue=included, account=subscriber()), "provider.billing"
    )
    assert not by_rule(diagnose_with(settings, account=subscriber()), "provider.billing")


def _image_settings(**sd: Any) -> dict[str, Any]:
    settings = custom_settings()
    settings["extension_settings"]["sd"].update(source="nanogpt", model="flux-schnell", **sd)
    return settings


def test_image_generation_without_the_built_in_key() -> None:
    settings = _image_settings()
    assert needed_key_slots(settings) == {
        "nanogpt": ["Image Generation"],
        "custom": ["Chat Completion (Custom source)"],
    }
    slots = {"nanogpt": "empty", "custom": "ours", "generic": "empty"}
    findings = diagnose_with(settings, key_slots=slots)
    image = by_rule(findings, "image.key")
    assert len(image) == 1 and image[0].severity == "error"
    assert image[0].details["action"] == {"kind": "install_key", "slots": ["nanogpt"]}
    assert not by_rule(findings, "keys.slots")  # the image case is explained once, by image.key
    assert not by_rule(diagnose_with(settings, key_slots={**slots, "nanogpt": "ours"}), "image.key")
    # Another image source, or an unknown key (config key): nothing.
    other = custom_settings()
    assert not by_rule(diagnose_with(other, key_slots=slots), "image.key")
    assert not by_rule(diagnose_with(settings, key_slots=None), "image.key")


def test_a_stale_key_in_one_slot_is_named_with_the_slots_that_hold_the_key() -> None:
    settings = custom_settings()
    settings["textgenerationwebui_settings"]["server_urls"]["generic"] = "https://nano-gpt.com/api/v1"
    slots = {"nanogpt": "ours", "custom": "other", "generic": "ours"}
    findings = by_rule(diagnose_with(settings, key_slots=slots), "keys.slots")
    assert len(findings) == 1
    finding = findings[0]
    assert finding.details["stale"] == ["custom"] and finding.details["missing"] == []
    assert finding.details["action"] == {"kind": "install_key", "slots": ["custom"]}
    assert "Custom (OpenAI-compatible)" in finding.explanation
    assert "Your key is in: Text Completion Generic." in finding.explanation
    # Every slot current: quiet.
    assert not by_rule(diagnose_with(settings, key_slots={**slots, "custom": "ours"}), "keys.slots")
    # A Custom slot whose URL is another provider's is not ours to judge.
    elsewhere = custom_settings(url="https://openrouter.ai/api/v1")
    assert not by_rule(diagnose_with(elsewhere, key_slots=slots), "keys.slots")
