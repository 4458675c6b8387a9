"""Builders for doctor tests: real ST fixture files, modified in memory, and a small real-shaped catalogue."""

from __future__ import annotations

import copy
import json
from typing import Any

from nanogpt_companion.doctor.context import DoctorContext
from nanogpt_companion.doctor.engine import diagnose
from nanogpt_companion.doctor.finding import Finding
from nanogpt_companion.domain import AccountSnapshot, CatalogEntry, SubscriptionState
from tests.fixtures import FIXTURES as SHARED_FIXTURES

FIXTURES = SHARED_FIXTURES
ST = FIXTURES / "sillytavern"

_cache: dict[str, Any] = {}


def load_st(name: str) -> dict[str, Any]:
    """A deep copy of a fixture file, so each test may edit it freely."""
    if name not in _cache:
        _cache[name] = json.loads((ST / name).read_text(encoding="utf-8"))
    return copy.deepcopy(_cache[name])


def full_settings() -> dict[str, Any]:
    return load_st("settings.full-after-first-save.json")


def nanogpt_settings(**oai: Any) -> dict[str, Any]:
    """The fixture saved by ST 1.18.0 with the NanoGPT source selected, with ``oai`` keys overridden."""
    settings = load_st("settings.nanogpt-source-selected.json")
    settings["oai_settings"].update(oai)
    return settings


def custom_settings(url: str = "https://nano-gpt.com/api/v1", **oai: Any) -> dict[str, Any]:
    settings = nanogpt_settings(chat_completion_source="custom", custom_url=url, **oai)
    return settings


def set_version(settings: dict[str, Any], version: str | None) -> dict[str, Any]:
    if version is None:
        settings.pop("currentVersion", None)
    else:
        settings["currentVersion"] = version
    return settings


def entry(model_id: str, **kw: Any) -> CatalogEntry:
    vendor = model_id.split("/", 1)[0] if "/" in model_id else "unknown"
    return CatalogEntry(id=model_id, name=model_id, vendor=vendor, **kw)


def catalogue() -> dict[str, CatalogEntry]:
    """Ids and capability flags taken from fixtures/nanogpt/models.detailed.sample.json."""
    entries = [
        entry(
            "openai/gpt-5.2",
            context_length=400000,
            capabilities={"vision": True, "reasoning": False, "tool_calling": True},
        ),
        entry("openai/gpt-4o-mini", context_length=128000, capabilities={"vision": True, "reasoning": False}),
        entry(
            "anthropic/claude-opus-4.6",
            context_length=200000,
            capabilities={"vision": True, "reasoning": False},
            thinking_variants=[
                "anthropic/claude-opus-4.6:thinking",
                "anthropic/claude-opus-4.6:thinking:max",
            ],
        ),
        entry(
            "anthropic/claude-opus-4.6:thinking",
            context_length=200000,
            capabilities={"vision": True, "reasoning": True},
            thinking_base="anthropic/claude-opus-4.6",
        ),
        entry(
            "anthropic/claude-opus-4.6:thinking:max",
            context_length=200000,
            capabilities={"vision": True, "reasoning": True},
            thinking_base="anthropic/claude-opus-4.6",
        ),
        entry("zai-org/glm-5.2", context_length=1048576, capabilities={"vision": False, "reasoning": False}),
        entry(
            "zai-org/glm-5.2:thinking",
            context_length=1048576,
            capabilities={"vision": False, "reasoning": True},
            thinking_base="zai-org/glm-5.2",
        ),
        entry("zai-org/glm-5.3", context_length=1048576, capabilities={"tool_calling": True}),
        entry(
            "deepseek/deepseek-v4-pro:thinking",
            context_length=1000000,
            capabilities={"vision": False, "reasoning": True},
        ),
        entry(
            "google/gemini-3-flash-preview-thinking",
            context_length=1048576,
            capabilities={"vision": True, "reasoning": True},
        ),
        entry(
            "alibaba/qwen3.6-flash", context_length=262144, capabilities={"vision": False, "reasoning": True}
        ),
        entry(
            "ArliAI/Llama-3.3-70B-ArliAI-RPMax-v1.4",
            context_length=65536,
            capabilities={"vision": False, "reasoning": False},
        ),
        entry("ArliAI/Gemma-3-27B-ArliAI-RPMax-v3", context_length=32768, capabilities={"vision": False}),
        entry("meta-llama/llama-4-maverick", context_length=1048576, capabilities={"vision": True}),
        entry("auto-model", is_router=True),
    ]
    return {e.id: e for e in entries}


def subscriber(mode: str | None = "subscription") -> AccountSnapshot:
    return AccountSnapshot(
        key_status="ok",
        subscription=SubscriptionState(active=True, state="active", shape="current", recommended_mode=mode),
    )


def payg() -> AccountSnapshot:
    return AccountSnapshot(key_status="ok", subscription=SubscriptionState(active=False, state="inactive"))


def run(settings: dict[str, Any], **kw: Any) -> list[Finding]:
    return diagnose(DoctorContext.build(settings, **kw))


def by_rule(findings: list[Finding], rule: str) -> list[Finding]:
    return [f for f in findings if f.rule == rule]


def patch_values(finding: Finding) -> dict[tuple[str | int, ...], Any]:
    return {op.path: op.value for op in finding.patch}
