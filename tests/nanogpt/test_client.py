"""NanoGPTClient against the real fake upstream on loopback: tiers, parsing at size, every fault."""

from __future__ import annotations

import logging
import socket
import tracemalloc
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import aiohttp
import pytest

from nanogpt_companion.domain import Tier
from nanogpt_companion.nanogpt import (
    InsufficientBalanceError,
    KeyRejectedError,
    MalformedResponseError,
    NanoGPTClient,
    NanoGPTError,
    NoKeyError,
    RateLimitedError,
    UpstreamUnavailableError,
)
from tests.fakes.nanogpt_fixtures import (
    DEGRADED_KEY,
    INVALID_KEY,
    LEGACY_PLAN_KEY,
    PAYG_KEY,
    SUBSCRIBER_KEY,
    FakeNanoGPTServer,
)
from tests.fakes.nanogpt_upstream import is_included

V1 = "/api/v1/models"
BALANCE = "/api/check-balance"
USAGE = "/api/subscription/v1/usage"


# ---- tiers and visibility -------------------------------------------------------------------------------


async def test_every_tier_without_key(client: NanoGPTClient, fake_nanogpt: FakeNanoGPTServer) -> None:
    fake = fake_nanogpt.fake
    v1 = await client.models(Tier.V1, api_key=None)
    sub = await client.models(Tier.SUBSCRIPTION, api_key=None)
    paid = await client.models(Tier.PAID, api_key=None)

    v1_ids = {m.id for m in v1.models}
    sub_ids = {m.id for m in sub.models}
    paid_ids = {m.id for m in paid.models}
    assert len(v1.models) == 600
    assert v1_ids == {e["id"] for e in fake.models}
    assert sub_ids == {e["id"] for e in fake.models if is_included(e)}
    assert sub_ids.isdisjoint(paid_ids)
    assert sub_ids | paid_ids == v1_ids
    assert all(m.subscription_included is True for m in sub.models)
    assert v1.max_age == sub.max_age == paid.max_age == 300.0
    assert (v1.skipped, sub.skipped, paid.skipped) == ([], [], [])
    # Every list was asked for in detail, anonymously.
    assert [(r.path, r.query, r.auth) for r in fake.log] == [
        ("/api/v1/models", "detailed=true", "none"),
        ("/api/subscription/v1/models", "detailed=true", "none"),
        ("/api/paid/v1/models", "detailed=true", "none"),
    ]


async def test_v1_with_subscriber_key_is_cut_to_subscription(
    client: NanoGPTClient, fake_nanogpt: FakeNanoGPTServer
) -> None:
    subscriber_v1 = await client.models(Tier.V1, api_key=SUBSCRIBER_KEY)
    payg_v1 = await client.models(Tier.V1, api_key=PAYG_KEY)
    sub = await client.models(Tier.SUBSCRIPTION, api_key=SUBSCRIBER_KEY)

    assert {m.id for m in subscriber_v1.models} == {m.id for m in sub.models}
    assert len(payg_v1.models) == 600
    # The key travelled as a Bearer token; the log only keeps its last 4 characters.
    assert [(r.auth, r.key_id) for r in fake_nanogpt.fake.log] == [
        ("bearer", "1111"),
        ("bearer", "0000"),
        ("bearer", "1111"),
    ]


async def test_personalized_needs_a_key(client: NanoGPTClient, fake_nanogpt: FakeNanoGPTServer) -> None:
    fake = fake_nanogpt.fake
    with pytest.raises(NoKeyError) as no_key:
        await client.models(Tier.PERSONALIZED, api_key=None)
    assert no_key.value.code == "no_key"
    assert fake.count("/api/personalized/v1/models") == 0  # refused before sending

    with pytest.raises(KeyRejectedError) as rejected:
        await client.models(Tier.PERSONALIZED, api_key=INVALID_KEY)
    assert rejected.value.status == 401
    assert fake.count("/api/personalized/v1/models") == 1  # never retried

    fake.accounts[PAYG_KEY].visible_models = {"openai/gpt-5.2", "zai-org/glm-5.3"}
    mine = await client.models(Tier.PERSONALIZED, api_key=PAYG_KEY)
    assert {m.id for m in mine.models} == {"openai/gpt-5.2", "zai-org/glm-5.3"}
    assert mine.max_age is None  # personalized is not shared-cacheable


async def test_basic_list(client: NanoGPTClient, fake_nanogpt: FakeNanoGPTServer) -> None:
    result = await client.models(Tier.V1, api_key=None, detailed=False)
    assert len(result.models) == 600
    first = result.models[0]
    assert (first.id, first.owned_by, first.name, first.prompt_per_1m) == (
        "openai/gpt-5.2",
        "openai",
        None,
        None,
    )
    assert fake_nanogpt.fake.log[0].query == ""


# ---- detailed parsing at size ---------------------------------------------------------------------------


async def test_detailed_600_models_keep_every_quirk(client: NanoGPTClient) -> None:
    models = {m.id: m for m in (await client.models(Tier.V1, api_key=None)).models}
    assert len(models) == 600

    # cost_estimate in all three upstream types
    assert models["openai/gpt-5.2"].cost_estimate == "$$$"
    assert models["zai-org/glm-5.2"].cost_estimate == "0.0013"
    assert models["zai-org/glm-5.3"].cost_estimate == "cheap"
    # null context / output, partial and missing capabilities
    assert models["auto-model"].context_length is None
    assert models["alibaba/qwen3.6-flash"].max_output_tokens is None
    assert models["zai-org/glm-5.3"].capabilities == {"tool_calling": True}
    assert models["ArliAI/GLM-4.5-Air-Derestricted"].capabilities == {}
    # raw relative icon, unreliable owner, float noise kept, cache prices per 1K
    assert models["openai/gpt-5.2"].icon_url == "/icons/OpenAI.svg"
    assert models["deepseek/deepseek-v4-pro:thinking"].owned_by == "organization-owner"
    assert models["zai-org/glm-5.2"].prompt_per_1m == 0.42000000000000004
    assert models["alibaba/qwen3.6-flash"].cache_read_per_1k == 2e-05
    assert models["alibaba/qwen3.6-flash"].cache_write_per_1k == 0.00024
    assert models["zai-org/glm-5.3"].subscription_multiplier == 2.0
    assert models["deepseek/deepseek-v4-pro:thinking"].reasoning_efforts == ["none", "high", "max"]
    assert models["google/gemini-3-flash-preview-thinking"].input_modalities == [
        "text",
        "image",
        "audio",
        "video",
    ]

    # The generated part exercises the same quirks at scale.
    costs = {m.cost_estimate for m in models.values()}
    assert {"$", "$$", "cheap"} <= costs
    assert any(c is not None and c[0].isdigit() for c in costs)
    assert sum(m.context_length is None for m in models.values()) >= 5
    assert sum(not m.capabilities for m in models.values()) >= 10
    assert sum(m.cache_read_per_1k is not None for m in models.values()) >= 50
    assert any(i.endswith(":thinking:max") for i in models)
    assert any(i.endswith(":thinking:8192") for i in models)
    assert {"auto-model", "auto-model-premium"} <= models.keys()


async def test_one_bad_entry_is_skipped_with_one_warning(
    client: NanoGPTClient, fake_nanogpt: FakeNanoGPTServer, caplog: pytest.LogCaptureFixture
) -> None:
    fake = fake_nanogpt.fake
    fake.add_model({"id": 42, "name": "numeric id"})
    fake.add_model({"id": "", "name": "empty id"})
    fake.add_model(
        {"id": "ok/model", "context_length": "big", "capabilities": {"vision": "yes"}, "pricing": 7}
    )
    with caplog.at_level(logging.WARNING, logger="nanogpt_companion.nanogpt"):
        result = await client.models(Tier.V1, api_key=PAYG_KEY)
    ids = {m.id for m in result.models}
    assert "ok/model" in ids
    ok = next(m for m in result.models if m.id == "ok/model")
    assert (ok.context_length, ok.capabilities, ok.prompt_per_1m) == (None, {}, None)
    assert [s.reason for s in result.skipped] == ["missing or non-string id", "missing or non-string id"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "skipped 2" in warnings[0].getMessage()
    assert PAYG_KEY not in caplog.text


async def test_live_catalogue_changes_show_up(client: NanoGPTClient, fake_nanogpt: FakeNanoGPTServer) -> None:
    fake = fake_nanogpt.fake
    before = {m.id: m for m in (await client.models(Tier.V1, api_key=None)).models}
    fake.remove_model("openai/gpt-5.2")
    fake.set_price("zai-org/glm-5.3", prompt=0.7)
    fake.add_model({"id": "new/model", "name": "New", "pricing": {"prompt": 1, "completion": 2}})
    after = {m.id: m for m in (await client.models(Tier.V1, api_key=None)).models}
    assert set(after) - set(before) == {"new/model"}
    assert set(before) - set(after) == {"openai/gpt-5.2"}
    assert (before["zai-org/glm-5.3"].prompt_per_1m, after["zai-org/glm-5.3"].prompt_per_1m) == (0.6, 0.7)


# ---- balance and usage ----------------------------------------------------------------------------------


async def test_balance_strings_via_x_api_key(client: NanoGPTClient, fake_nanogpt: FakeNanoGPTServer) -> None:
    balance = await client.check_balance(SUBSCRIBER_KEY)
    assert (balance.usd, balance.xno) == (129.46956147, 26.71801147)
    payg = await client.check_balance(PAYG_KEY)
    assert (payg.usd, payg.xno) == (9.54827636, 0.0)
    assert [(r.method, r.path, r.auth) for r in fake_nanogpt.fake.log] == [("POST", BALANCE, "x-api-key")] * 2


async def test_usage_in_every_shape(client: NanoGPTClient) -> None:
    current = await client.subscription_usage(SUBSCRIBER_KEY)
    assert (current.shape, current.active, current.degraded) == ("current", True, False)
    assert set(current.buckets) == {"weekly_input_tokens", "daily_images"}  # dailyInputTokens is null
    assert current.buckets["weekly_input_tokens"].limit == 60_000_000

    legacy = await client.subscription_usage(LEGACY_PLAN_KEY)
    assert (legacy.shape, set(legacy.buckets)) == ("legacy", {"daily", "monthly"})
    assert legacy.buckets["daily"].limit == 5000

    degraded = await client.subscription_usage(DEGRADED_KEY)
    assert degraded.degraded is True
    assert degraded.buckets["weekly_input_tokens"].used is None

    inactive = await client.subscription_usage(PAYG_KEY)
    assert (inactive.active, inactive.state, inactive.buckets) == (False, "inactive", {})


async def test_usage_routing_advice(client: NanoGPTClient, fake_nanogpt: FakeNanoGPTServer) -> None:
    fake_nanogpt.fake.accounts[SUBSCRIBER_KEY].usage_payload = {
        "active": True,
        "state": "active",
        "allowOverage": True,
        "limits": {"weeklyInputTokens": 1000, "dailyInputTokens": None, "dailyImages": None},
        "weeklyInputTokens": {"used": 850, "remaining": 150, "resetAt": 1791763200000},
        "routing": {"recommendedMode": "paygo", "reason": "weekly quota nearly used"},
        "subscriptionQuotaAvailable": False,
    }
    state = await client.subscription_usage(SUBSCRIBER_KEY)
    assert state.buckets["weekly_input_tokens"].percent_used == pytest.approx(0.85)
    assert (state.recommended_mode, state.routing_reason, state.quota_available) == (
        "paygo",
        "weekly quota nearly used",
        False,
    )
    assert state.allow_overage is True
    assert fake_nanogpt.fake.log[0].auth == "bearer"


async def test_account_calls_need_a_key(client: NanoGPTClient, fake_nanogpt: FakeNanoGPTServer) -> None:
    with pytest.raises(NoKeyError):
        await client.check_balance("")
    with pytest.raises(NoKeyError):
        await client.subscription_usage("")
    assert fake_nanogpt.fake.log == []


# ---- faults ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
async def test_rejected_key_is_never_retried(
    status: int, client: NanoGPTClient, fake_nanogpt: FakeNanoGPTServer
) -> None:
    fake = fake_nanogpt.fake
    fake.faults.status(status)
    for call in (
        client.models(Tier.V1, api_key=SUBSCRIBER_KEY),
        client.check_balance(SUBSCRIBER_KEY),
        client.subscription_usage(SUBSCRIBER_KEY),
    ):
        with pytest.raises(KeyRejectedError) as caught:
            await call
        assert caught.value.status == status
        assert f"NanoGPT rejected the API key ({status})" in str(caught.value)
    assert (fake.count(V1), fake.count(BALANCE), fake.count(USAGE)) == (1, 1, 1)


async def test_unknown_key_on_balance_is_rejected_once(
    client: NanoGPTClient, fake_nanogpt: FakeNanoGPTServer
) -> None:
    with pytest.raises(KeyRejectedError) as caught:
        await client.check_balance(INVALID_KEY)
    assert 'NanoGPT said: "Invalid API key"' in str(caught.value)
    assert fake_nanogpt.fake.count(BALANCE) == 1


async def test_402(client: NanoGPTClient, fake_nanogpt: FakeNanoGPTServer) -> None:
    fake_nanogpt.fake.faults.status(402, BALANCE)
    with pytest.raises(InsufficientBalanceError) as caught:
        await client.check_balance(PAYG_KEY)
    assert caught.value.code == "insufficient_balance"
    assert "Insufficient balance" in str(caught.value)
    assert fake_nanogpt.fake.count(BALANCE) == 1


async def test_429_on_models_with_delta_seconds(
    client: NanoGPTClient, fake_nanogpt: FakeNanoGPTServer
) -> None:
    fake_nanogpt.fake.faults.status(429, "*/models", retry_after="7")
    with pytest.raises(RateLimitedError) as caught:
        await client.models(Tier.V1, api_key=None)
    assert caught.value.retry_after == 7.0
    assert 'NanoGPT said: "Rate limit exceeded"' in str(caught.value)  # the {"code","message"} body
    assert fake_nanogpt.fake.count(V1) == 1  # no sleeping, no retry


async def test_429_on_usage_with_http_date(client: NanoGPTClient, fake_nanogpt: FakeNanoGPTServer) -> None:
    when = datetime.now(UTC) + timedelta(seconds=120)
    fake_nanogpt.fake.faults.status(429, USAGE, retry_after=format_datetime(when, usegmt=True))
    with pytest.raises(RateLimitedError) as caught:
        await client.subscription_usage(SUBSCRIBER_KEY)
    assert caught.value.retry_after is not None
    assert 60 < caught.value.retry_after <= 121
    assert "Rate limit exceeded" in str(caught.value)  # the OpenAI-style body


async def test_429_without_retry_after(client: NanoGPTClient, fake_nanogpt: FakeNanoGPTServer) -> None:
    fake_nanogpt.fake.faults.status(429)
    with pytest.raises(RateLimitedError) as caught:
        await client.check_balance(SUBSCRIBER_KEY)
    assert caught.value.retry_after is None


@pytest.mark.parametrize("status", [500, 502, 503, 408])
async def test_server_errors_are_retried_up_to_the_cap(
    status: int, client: NanoGPTClient, fake_nanogpt: FakeNanoGPTServer
) -> None:
    fake_nanogpt.fake.faults.status(status)
    with pytest.raises(UpstreamUnavailableError) as caught:
        await client.models(Tier.SUBSCRIPTION, api_key=None)
    assert caught.value.status == status
    assert "tried 3 times" in str(caught.value)
    assert fake_nanogpt.fake.count("/api/subscription/v1/models") == 3  # 1 + retries=2


async def test_transient_503_recovers(client: NanoGPTClient, fake_nanogpt: FakeNanoGPTServer) -> None:
    fake_nanogpt.fake.faults.status(503, V1, times=2)
    result = await client.models(Tier.V1, api_key=None)
    assert len(result.models) == 600
    assert fake_nanogpt.fake.count(V1) == 3
    assert fake_nanogpt.fake.faults.items == []  # spent faults clear themselves


async def test_other_4xx_is_not_retried(client: NanoGPTClient, fake_nanogpt: FakeNanoGPTServer) -> None:
    fake_nanogpt.fake.faults.status(404)
    with pytest.raises(UpstreamUnavailableError) as caught:
        await client.models(Tier.V1, api_key=None)
    assert caught.value.status == 404
    assert fake_nanogpt.fake.count(V1) == 1


# A disconnect before any response line makes aiohttp itself resend an idempotent GET once (RFC 9112
# §9.3.1), so each of our 3 attempts reaches the server twice; mid-body resets are ours alone to retry.
@pytest.mark.parametrize(("after_bytes", "expected_requests"), [(0, 6), (2048, 3)])
async def test_connection_reset(
    after_bytes: int, expected_requests: int, client: NanoGPTClient, fake_nanogpt: FakeNanoGPTServer
) -> None:
    fake_nanogpt.fake.faults.reset(V1, after_bytes=after_bytes)
    with pytest.raises(UpstreamUnavailableError) as caught:
        await client.models(Tier.V1, api_key=None)
    assert caught.value.status is None
    assert "tried 3 times" in str(caught.value)
    assert fake_nanogpt.fake.count(V1) == expected_requests


async def test_reset_before_headers_on_post(client: NanoGPTClient, fake_nanogpt: FakeNanoGPTServer) -> None:
    fake_nanogpt.fake.faults.reset(BALANCE, after_bytes=0)
    with pytest.raises(UpstreamUnavailableError):
        await client.check_balance(SUBSCRIBER_KEY)
    assert fake_nanogpt.fake.count(BALANCE) == 3  # POST is not resent by aiohttp


async def test_reset_once_then_success(client: NanoGPTClient, fake_nanogpt: FakeNanoGPTServer) -> None:
    fake_nanogpt.fake.faults.reset(BALANCE, times=1)
    balance = await client.check_balance(SUBSCRIBER_KEY)
    assert balance.usd == 129.46956147
    assert fake_nanogpt.fake.count(BALANCE) == 2


async def test_truncated_json(client: NanoGPTClient, fake_nanogpt: FakeNanoGPTServer) -> None:
    fake_nanogpt.fake.faults.truncated(V1)
    with pytest.raises(MalformedResponseError) as caught:
        await client.models(Tier.V1, api_key=None)
    assert caught.value.code == "upstream_malformed"
    assert "truncated" in str(caught.value)
    assert fake_nanogpt.fake.count(V1) == 1  # a broken body is not a transient transport failure


async def test_invalid_json(client: NanoGPTClient, fake_nanogpt: FakeNanoGPTServer) -> None:
    fake_nanogpt.fake.faults.invalid_json(USAGE)
    with pytest.raises(MalformedResponseError) as caught:
        await client.subscription_usage(SUBSCRIBER_KEY)
    assert "not JSON" in str(caught.value)


async def test_20mb_body_is_refused_while_streaming(
    session: aiohttp.ClientSession, fake_nanogpt: FakeNanoGPTServer
) -> None:
    fake_nanogpt.fake.faults.huge_body(V1)  # chunked: no Content-Length to reject up front
    client = NanoGPTClient(session, fake_nanogpt.base_url, max_body_bytes=2 * 1024 * 1024, retries=0)
    tracemalloc.start()
    try:
        with pytest.raises(MalformedResponseError) as caught:
            await client.models(Tier.V1, api_key=None)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "too large" in str(caught.value)
    assert "2.0 MB" in str(caught.value)
    assert peak < 8 * 1024 * 1024  # never held anything near the 20 MB that was on offer


async def test_20mb_body_with_default_cap(client: NanoGPTClient, fake_nanogpt: FakeNanoGPTServer) -> None:
    fake_nanogpt.fake.faults.huge_body(V1)
    with pytest.raises(MalformedResponseError) as caught:
        await client.models(Tier.V1, api_key=None)
    assert "more than 8,388,608 bytes" in str(caught.value)
    assert fake_nanogpt.fake.count(V1) == 1


async def test_oversized_content_length_is_refused_up_front(
    client: NanoGPTClient, fake_nanogpt: FakeNanoGPTServer
) -> None:
    fake_nanogpt.fake.faults.huge_body(V1, declare_length=True)
    with pytest.raises(MalformedResponseError) as caught:
        await client.models(Tier.V1, api_key=None)
    assert "announced 20,971,520 bytes" in str(caught.value)


async def test_timeout_is_retried_then_unavailable(
    session: aiohttp.ClientSession, fake_nanogpt: FakeNanoGPTServer
) -> None:
    fake_nanogpt.fake.faults.latency(0.3, BALANCE)
    client = NanoGPTClient(
        session, fake_nanogpt.base_url, request_timeout=0.05, retries=1, backoff_base=0.001
    )
    with pytest.raises(UpstreamUnavailableError) as caught:
        await client.check_balance(SUBSCRIBER_KEY)
    assert "no answer within 0.05s" in str(caught.value)
    assert fake_nanogpt.fake.count(BALANCE) == 2


async def test_connection_refused(session: aiohttp.ClientSession) -> None:
    with socket.socket() as probe:  # a port that was free a moment ago and has no listener now
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = NanoGPTClient(session, f"http://127.0.0.1:{port}/api", retries=1, backoff_base=0.001)
    with pytest.raises(UpstreamUnavailableError) as caught:
        await client.models(Tier.V1, api_key=None)
    assert "could not connect" in str(caught.value)


# ---- secrecy --------------------------------------------------------------------------------------------


async def test_no_key_in_any_error_or_log(
    client: NanoGPTClient, fake_nanogpt: FakeNanoGPTServer, caplog: pytest.LogCaptureFixture
) -> None:
    fake = fake_nanogpt.fake
    faults = [
        lambda: fake.faults.status(401),
        lambda: fake.faults.status(402),
        lambda: fake.faults.status(500),
        fake.faults.reset,
        fake.faults.truncated,
        fake.faults.invalid_json,
        lambda: fake.faults.huge_body(declare_length=True),
        # Last: after a 429 the client holds every call with that key until Retry-After has passed.
        lambda: fake.faults.status(429, retry_after="3"),
    ]
    errors: list[NanoGPTError] = []
    caplog.set_level(logging.DEBUG)
    for switch_on in faults:
        fake.faults.clear()
        switch_on()
        for call in (
            lambda: client.models(Tier.V1, api_key=SUBSCRIBER_KEY),
            lambda: client.models(Tier.PERSONALIZED, api_key=SUBSCRIBER_KEY),
            lambda: client.check_balance(SUBSCRIBER_KEY),
            lambda: client.subscription_usage(SUBSCRIBER_KEY),
        ):
            with pytest.raises(NanoGPTError) as caught:
                await call()
            errors.append(caught.value)
    assert len(errors) == 32
    assert {e.code for e in errors} == {
        "key_rejected",
        "insufficient_balance",
        "rate_limited",
        "upstream_unavailable",
        "upstream_malformed",
    }
    for error in errors:
        for text in (str(error), repr(error), repr(error.args)):
            assert SUBSCRIBER_KEY not in text
            assert "111111111111" not in text
    assert caplog.records  # the client did log; none of it may carry the key
    assert "111111111111" not in caplog.text


async def test_a_429_holds_every_call_with_that_key_until_retry_after(
    client: NanoGPTClient, fake_nanogpt: FakeNanoGPTServer
) -> None:
    fake = fake_nanogpt.fake
    fake.faults.status(429, "/api/check-balance", retry_after="30", times=1)
    with pytest.raises(RateLimitedError):
        await client.check_balance(SUBSCRIBER_KEY)
    before = len(fake.log)
    for call in (
        lambda: client.subscription_usage(SUBSCRIBER_KEY),
        lambda: client.models(Tier.V1, api_key=SUBSCRIBER_KEY),
    ):
        with pytest.raises(RateLimitedError) as held:
            await call()
        assert held.value.retry_after is not None and 0 < held.value.retry_after <= 30
    assert len(fake.log) == before  # nothing reached NanoGPT before Retry-After
    await client.check_balance(PAYG_KEY)  # another key is not held
    assert len(fake.log) == before + 1
