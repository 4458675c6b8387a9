"""Lenient parsing of NanoGPT payloads: the real fixture files, each quirk, and arbitrary JSON."""

from __future__ import annotations

import contextlib
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nanogpt_companion.nanogpt import (
    MalformedResponseError,
    parse_balance,
    parse_model_list,
    parse_subscription_usage,
)
from nanogpt_companion.nanogpt.client import parse_max_age, parse_retry_after
from nanogpt_companion.nanogpt.errors import redact
from nanogpt_companion.nanogpt.schemas import UpstreamModel, parse_model_entry
from tests.fakes.nanogpt_upstream import fixtures_dir


def fixture(name: str) -> bytes:
    return (fixtures_dir() / name).read_bytes()


def entry(**fields: Any) -> bytes:
    return orjson.dumps({"object": "list", "data": [{"id": "v/m", **fields}]})


# ---- model lists ----------------------------------------------------------------------------------------


def test_detailed_sample_fixture_parses_completely() -> None:
    parsed = parse_model_list(fixture("models.detailed.sample.json"))
    assert parsed.skipped == []
    assert len(parsed.models) == len(orjson.loads(fixture("models.detailed.sample.json"))["data"])
    opus = next(m for m in parsed.models if m.id == "anthropic/claude-opus-4.6")
    assert (opus.prompt_per_1m, opus.completion_per_1m, opus.cache_read_per_1k) == (5.0, 25.0, 0.0005)
    assert opus.subscription_included is False
    assert opus.subscription_multiplier is None
    maverick = next(m for m in parsed.models if m.id == "meta-llama/llama-4-maverick")
    assert maverick.capabilities == {
        "vision": True,
        "reasoning": False,
        "tool_calling": True,
    }  # extra field ignored
    router = next(m for m in parsed.models if m.id == "auto-model")
    assert (router.prompt_per_1m, router.subscription_included, router.capabilities) == (None, None, {})


def test_basic_fixture_parses() -> None:
    parsed = parse_model_list(fixture("models.basic.json"))
    assert [(m.id, m.owned_by, m.created) for m in parsed.models] == [
        ("openai/gpt-5.2", "openai", 1704067200),
        ("anthropic/claude-opus-4.6", "anthropic", 1704067200),
    ]


@pytest.mark.parametrize(
    ("cost", "expected"),
    [
        ("$$", "$$"),
        (0.0058, "0.0058"),
        (3, "3"),
        ({"cheap": True}, "cheap"),
        ({"cheap": False}, None),
        (True, None),
        ([], None),
        ("", None),
        (None, None),
    ],
)
def test_cost_estimate_normalised(cost: object, expected: str | None) -> None:
    assert parse_model_list(entry(cost_estimate=cost)).models[0].cost_estimate == expected


@pytest.mark.parametrize(
    ("pricing", "prompt", "completion"),
    [
        ({"prompt": 2.5, "completion": 10, "unit": "per_million_tokens"}, 2.5, 10.0),
        ({"prompt": 2.5, "completion": 10}, 2.5, 10.0),  # no unit: the documented per-1M default
        ({"prompt": 0.0025, "completion": 0.01, "unit": "per_1k_tokens"}, 2.5, 10.0),
        ({"prompt": 0.0025, "completion": 0.01, "unit": "per_thousand_tokens"}, 2.5, 10.0),
        ({"prompt": 0.0000025, "unit": "per_token"}, 2.5, None),
        (
            {"prompt": 2.5, "completion": 10, "unit": "per_fortnight"},
            None,
            None,
        ),  # unknown unit: unknown price
        ({"inputPer1kTokens": 0.0025, "outputPer1kTokens": 0.01}, 2.5, 10.0),
        ({"prompt": "1.5", "completion": "x"}, 1.5, None),
        ({"prompt": True, "completion": None}, None, None),
    ],
)
def test_price_units(pricing: dict[str, Any], prompt: float | None, completion: float | None) -> None:
    model = parse_model_list(entry(pricing=pricing)).models[0]
    if prompt is None:
        assert model.prompt_per_1m is None
    else:
        assert model.prompt_per_1m == pytest.approx(prompt)
    if completion is None:
        assert model.completion_per_1m is None
    else:
        assert model.completion_per_1m == pytest.approx(completion)


@pytest.mark.parametrize(
    ("pricing", "per_request", "prompt"),
    [
        ({"prompt": 1.0, "completion": 2.0, "request": 0.005, "unit": "per_million_tokens"}, 0.005, 1.0),
        ({"perRequest": "0.04"}, 0.04, None),
        ({"prompt": 0.02, "unit": "per_request"}, 0.02, None),  # the price is per request, not per token
        ({"prompt": 1.0, "request": 0}, None, 1.0),  # zero is "no per-request price"
        ({"prompt": 1.0, "request": "free"}, None, 1.0),
    ],
)
def test_per_request_prices(pricing: dict[str, Any], per_request: float | None, prompt: float | None) -> None:
    model = parse_model_list(entry(pricing=pricing)).models[0]
    assert model.per_request == per_request
    assert model.prompt_per_1m == prompt


def test_wrong_types_become_none_and_the_entry_stays() -> None:
    model = parse_model_list(
        entry(
            name=7,
            description=["x"],
            created="yesterday",
            owned_by=None,
            context_length=True,
            max_output_tokens=-1,
            capabilities={"vision": "true", "reasoning": True, "tool_calling": 1},
            architecture={"input_modalities": ["text", 3, None, "image"]},
            reasoning_efforts="high",
            pricing={"prompt": [1], "cacheReadInputPer1kTokens": "0.0001", "currency": 5},
            icon_url={"src": "/x.svg"},
            category=12,
            subscription={"included": "yes", "inputTokenMultiplier": "2", "note": 3},
        )
    ).models[0]
    assert model.model_dump() == {
        "id": "v/m",
        "name": None,
        "description": None,
        "created": None,
        "owned_by": None,
        "context_length": None,
        "max_output_tokens": None,
        "capabilities": {"reasoning": True},  # only real booleans are believed
        "input_modalities": ["text", "image"],
        "reasoning_efforts": None,
        "prompt_per_1m": None,
        "completion_per_1m": None,
        "cache_read_per_1k": 0.0001,
        "cache_write_per_1k": None,
        "per_request": None,
        "currency": None,
        "icon_url": None,
        "cost_estimate": None,
        "category": None,
        "subscription_included": None,
        "subscription_multiplier": 2.0,
        "subscription_note": None,
    }


def test_unusable_entries_are_skipped_with_reasons() -> None:
    raw = orjson.dumps(
        {
            "data": [
                {"id": "a/ok"},
                {"name": "no id"},
                "a string",
                {"id": "  "},
                {"id": "a/ok", "name": "dup"},
                None,
                {"id": "a/two words"},
                {"id": "a/tab\there"},
                {"id": "x" * 201},
            ]
        }
    )
    parsed = parse_model_list(raw)
    assert [m.id for m in parsed.models] == ["a/ok"]
    assert [(s.index, s.id, s.reason) for s in parsed.skipped] == [
        (1, None, "missing or non-string id"),
        (2, None, "entry is str, not an object"),
        (3, None, "missing or non-string id"),
        (4, "a/ok", "duplicate id"),
        (5, None, "entry is NoneType, not an object"),
        (6, "a/two words", "unusable id"),
        (7, "a/tab\there", "unusable id"),
        (8, "x" * 120, "unusable id"),
    ]


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b"[]", "a JSON list, not an object"),
        (b'"list"', "a JSON str"),
        (b'{"object": "list"}', "without a 'data' array"),
        (b'{"object": "list", "data": {"a": 1}}', "without a 'data' array"),
        (b'{"object": "list", "data": [{"id": "a"}', "looks truncated"),
        (b"<html>502</html>", "not JSON"),
        (b"", "not JSON"),
    ],
)
def test_unusable_model_list_bodies(raw: bytes, fragment: str) -> None:
    with pytest.raises(MalformedResponseError) as caught:
        parse_model_list(raw)
    assert fragment in str(caught.value)


# Any JSON value in any field (and anywhere in the list) must parse or be skipped, never raise.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=8,
)
FIELDS = [
    "id",
    "name",
    "description",
    "created",
    "owned_by",
    "context_length",
    "max_output_tokens",
    "capabilities",
    "architecture",
    "reasoning_efforts",
    "pricing",
    "icon_url",
    "cost_estimate",
    "category",
    "subscription",
]
field_maps = st.fixed_dictionaries(
    {},
    optional={name: json_values for name in FIELDS}
    | {
        "pricing": st.dictionaries(
            st.sampled_from(
                [
                    "prompt",
                    "completion",
                    "unit",
                    "currency",
                    "cacheReadInputPer1kTokens",
                    "cacheWriteInputPer1kTokens",
                    "inputPer1kTokens",
                    "outputPer1kTokens",
                ]
            ),
            json_values,
        ),
        "subscription": st.dictionaries(
            st.sampled_from(["included", "inputTokenMultiplier", "note"]), json_values
        ),
        "architecture": st.dictionaries(st.sampled_from(["input_modalities", "modality"]), json_values),
    },
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(field_maps | json_values, max_size=4))
def test_no_json_value_breaks_the_model_parser(entries: list[Any]) -> None:
    parsed = parse_model_list(orjson.dumps({"object": "list", "data": entries}))
    assert len(parsed.models) + len(parsed.skipped) == len(entries)
    for model in parsed.models:
        assert isinstance(model.id, str)
        assert all(isinstance(v, bool) for v in model.capabilities.values())


@settings(max_examples=80, deadline=None)
@given(json_values)
def test_any_top_level_json_is_parsed_or_malformed(value: Any) -> None:
    raw = orjson.dumps(value)
    for parse in (parse_model_list, parse_balance, parse_subscription_usage):
        with contextlib.suppress(MalformedResponseError):
            parse(raw)


@settings(max_examples=80, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            [
                "active",
                "state",
                "limits",
                "weeklyInputTokens",
                "dailyInputTokens",
                "dailyImages",
                "daily",
                "monthly",
                "period",
                "routing",
                "allowOverage",
                "degraded",
                "recommendedMode",
            ]
        ),
        json_values,
    )
)
def test_no_json_value_breaks_the_usage_parser(payload: dict[str, Any]) -> None:
    state = parse_subscription_usage(orjson.dumps(payload))
    assert isinstance(state.active, bool)


def test_non_finite_numbers_are_unknown() -> None:
    # orjson never produces NaN/inf, but the entry parser is also fed Python values directly.
    model = parse_model_entry({"id": "x", "created": float("nan"), "pricing": {"prompt": float("inf")}})
    assert isinstance(model, UpstreamModel)
    assert (model.created, model.prompt_per_1m) == (None, None)


# ---- balance --------------------------------------------------------------------------------------------


def test_balance_fixture_strings() -> None:
    balance = parse_balance(fixture("check-balance.json"))
    assert (balance.usd, balance.xno) == (129.46956147, 26.71801147)


@pytest.mark.parametrize(
    ("payload", "usd", "xno"),
    [
        ({"usd_balance": "0", "nano_balance": "0"}, 0.0, 0.0),
        ({"usd_balance": 12.5, "nano_balance": "1e-3"}, 12.5, 0.001),
        ({"usd_balance": "NaN", "nano_balance": "n/a"}, None, None),
        ({"usd_balance": " 9.54827636 "}, 9.54827636, None),
    ],
)
def test_balance_values(payload: dict[str, Any], usd: float | None, xno: float | None) -> None:
    balance = parse_balance(orjson.dumps(payload))
    assert (balance.usd, balance.xno) == (usd, xno)


@pytest.mark.parametrize("raw", [b"{}", b'{"error": "nope"}', b"[1]", b"nope"])
def test_balance_unusable(raw: bytes) -> None:
    with pytest.raises(MalformedResponseError):
        parse_balance(raw)


# ---- subscription usage ---------------------------------------------------------------------------------


def test_usage_current_fixture() -> None:
    state = parse_subscription_usage(fixture("subscription-usage.current.json"))
    assert (state.active, state.state, state.shape, state.degraded, state.allow_overage) == (
        True,
        "active",
        "current",
        False,
        False,
    )
    assert state.period_end == "2026-10-11T04:18:21.000Z"
    assert set(state.buckets) == {"weekly_input_tokens", "daily_images"}  # the null daily bucket is omitted
    weekly = state.buckets["weekly_input_tokens"]
    assert (weekly.used, weekly.remaining, weekly.limit, weekly.reset_at) == (
        631288,
        59368712,
        60000000,
        1791763200000,
    )
    assert weekly.percent_used == pytest.approx(0.010521466666666666)


def test_usage_legacy_fixture() -> None:
    state = parse_subscription_usage(fixture("subscription-usage.legacy.json"))
    assert (state.shape, state.active, state.period_end) == ("legacy", True, "2025-02-13T23:59:59.000Z")
    assert state.buckets["daily"].model_dump() == {
        "used": 5,
        "remaining": 4995,
        "limit": 5000,
        "percent_used": 0.001,
        "reset_at": 1738540800000,
    }
    assert state.buckets["monthly"].limit == 60000


def test_usage_degraded_fixture() -> None:
    state = parse_subscription_usage(fixture("subscription-usage.degraded.json"))
    assert state.degraded is True
    assert set(state.buckets) == {"weekly_input_tokens", "daily_images"}
    assert state.buckets["daily_images"].model_dump() == {
        "used": None,
        "remaining": None,
        "limit": 100,
        "percent_used": None,
        "reset_at": None,
    }


def test_usage_inactive_fixture() -> None:
    state = parse_subscription_usage(fixture("subscription-usage.inactive.json"))
    assert (state.active, state.state, state.buckets, state.period_end) == (False, "inactive", {}, None)


def test_usage_routing_at_top_level_and_computed_percent() -> None:
    state = parse_subscription_usage(
        orjson.dumps(
            {
                "state": "grace",
                "limits": {"dailyInputTokens": 200},
                "dailyInputTokens": {"used": 250, "remaining": 0},
                "recommendedMode": "subscription",
                "reason": "quota available",
                "subscriptionQuotaAvailable": True,
                "degraded": True,
            }
        )
    )
    assert state.active is True  # grace still routes through the subscription
    assert state.buckets["daily_input_tokens"].percent_used == 1.25  # may exceed 1
    assert (state.recommended_mode, state.routing_reason, state.quota_available, state.degraded) == (
        "subscription",
        "quota available",
        True,
        True,
    )


def test_usage_unknown_shape() -> None:
    state = parse_subscription_usage(b'{"active": false}')
    assert (state.shape, state.active, state.buckets) == ("unknown", False, {})


# ---- helpers --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("7", 7.0),
        (" 2.5 ", 2.5),
        ("-3", 0.0),
        ("soon", None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),  # in the past
    ],
)
def test_retry_after(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_retry_after_http_date_is_relative_to_now() -> None:
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480 - 30) == 30.0


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("s-maxage=300", 300.0),
        ("public, max-age=60, s-maxage=300", 300.0),
        ("max-age=60", 60.0),
        ("no-store", None),
        (None, None),
    ],
)
def test_max_age(header: str | None, expected: float | None) -> None:
    assert parse_max_age(header) == expected


def test_redact() -> None:
    legacy_uuid_key = "123e4567-e89b-12d3-a456-426614174000"
    text = f"Invalid API key sk-nano-1b2c3d4e-0000-1111-2222-333333333333 for {legacy_uuid_key}"
    assert redact(text) == "Invalid API key *** for ***"
    assert redact("your key hunter2 was wrong", "hunter2") == "your key *** was wrong"
    assert len(redact("x" * 500)) == 200
