"""CatalogService against the real client and fake upstream, with a clock the test moves by hand."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from nanogpt_companion.catalog import (
    CatalogService,
    CatalogSnapshot,
    CatalogUnavailable,
    diff_catalogues,
    merge_tiers,
    thinking_base_of,
    vendor_of,
)
from nanogpt_companion.domain import Tier
from nanogpt_companion.keys import ResolvedKey
from nanogpt_companion.nanogpt.client import NanoGPTClient
from nanogpt_companion.nanogpt.errors import NanoGPTError
from nanogpt_companion.nanogpt.schemas import UpstreamModel
from nanogpt_companion.store import Store
from tests.fakes.nanogpt_fixtures import FakeNanoGPTServer
from tests.fakes.nanogpt_upstream import PAYG_KEY, SUBSCRIBER_KEY

TIER_PATHS = ("/api/v1/models", "/api/subscription/v1/models", "/api/paid/v1/models")


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = Store(tmp_path / "db.sqlite3")
    await store.open()
    yield store
    await store.close()


@pytest.fixture
async def client(fake_nanogpt: FakeNanoGPTServer) -> AsyncIterator[NanoGPTClient]:
    async with aiohttp.ClientSession() as session:
        yield NanoGPTClient(session, fake_nanogpt.base_url, retries=0, backoff_base=0.01)


def test_vendor_and_thinking_ids() -> None:
    assert vendor_of("anthropic/claude-opus-4.6") == "anthropic"
    assert vendor_of("TEE/deepseek/deepseek-r1") == "deepseek"
    assert vendor_of("gpt-4o-mini") == "openai"
    assert vendor_of("claude-3-haiku") == "anthropic"
    assert thinking_base_of("anthropic/claude-opus-4.6:thinking") == "anthropic/claude-opus-4.6"
    assert thinking_base_of("anthropic/claude-opus-4.6:thinking:max") == "anthropic/claude-opus-4.6"
    assert thinking_base_of("claude-sonnet-4:thinking:8192") == "claude-sonnet-4"
    assert thinking_base_of("google/gemini-3-flash-preview-thinking") == "google/gemini-3-flash-preview"
    assert thinking_base_of("zai-org/glm-5") is None


def test_merge_marks_tiers_subscription_and_variants() -> None:
    def m(model_id: str, **kw: object) -> UpstreamModel:
        return UpstreamModel(id=model_id, **kw)  # type: ignore[arg-type]

    base, think = m("v/model"), m("v/model:thinking", subscription_included=True)
    paid = m("v/paid", cache_read_per_1k=0.000078, prompt_per_1m=0.42000000000000004)
    entries = {
        e.id: e
        for e in merge_tiers(
            {Tier.V1: [base, think, paid], Tier.SUBSCRIPTION: [base, think], Tier.PAID: [paid]}
        )
    }
    assert entries["v/model"].tiers == [Tier.V1, Tier.SUBSCRIPTION]
    assert entries["v/model"].subscription.included is True
    assert entries["v/paid"].subscription.included is False
    assert entries["v/model:thinking"].thinking_base == "v/model"
    assert entries["v/model"].thinking_variants == ["v/model:thinking"]
    assert entries["v/paid"].pricing.cache_read == 0.078  # per 1K -> per 1M without new float noise
    assert (
        entries["v/paid"].pricing.prompt == 0.42000000000000004
    )  # upstream noise kept; rounding is display's job
    # Without the tier lists, the per-model flag is all there is; without it, unknown (not false).
    only_v1 = {e.id: e for e in merge_tiers({Tier.V1: [base, think]})}
    assert only_v1["v/model"].subscription.included is None
    assert only_v1["v/model:thinking"].subscription.included is True


async def test_fresh_within_ttl_then_stale_while_revalidate(
    client: NanoGPTClient, store: Store, fake_nanogpt: FakeNanoGPTServer
) -> None:
    clock = Clock()
    service = CatalogService(client, store, ttl=300, clock=clock)
    key = ResolvedKey(PAYG_KEY, "sillytavern")
    view = await service.get(key)
    assert not view.stale
    fake = fake_nanogpt.fake
    assert fake.count("/api/v1/models") == 1
    clock.now += 299
    await service.get(key)
    assert fake.count("/api/v1/models") == 1  # never faster than the upstream's s-maxage
    clock.now += 2
    fake.faults.latency(0.3)
    view = await service.get(key)  # expired: served at once, refreshed in the background
    assert view.stale
    assert fake.count("/api/v1/models") == 1 or fake.count("/api/v1/models") == 2
    for _ in range(100):
        if fake.count("/api/v1/models") == 2 and service.cached(key) is not view.snapshot:
            break
        await asyncio.sleep(0.02)
    assert fake.count("/api/v1/models") == 2
    assert service.cached(key) is not view.snapshot
    assert not (await service.get(key)).stale
    await service.close()


async def test_concurrent_cold_callers_share_one_round(client: NanoGPTClient, fake_nanogpt) -> None:
    service = CatalogService(client, None, ttl=300)
    fake_nanogpt.fake.faults.latency(0.1)
    key = ResolvedKey(SUBSCRIBER_KEY, "config")
    views = await asyncio.gather(*(service.get(key) for _ in range(100)))
    assert len({id(v.snapshot) for v in views}) == 1
    for path in (*TIER_PATHS, "/api/personalized/v1/models"):
        assert fake_nanogpt.fake.count(path) == 1
    await service.close()


async def test_keys_do_not_share_catalogues(client: NanoGPTClient, fake_nanogpt) -> None:
    service = CatalogService(client, None)
    sub = await service.get(ResolvedKey(SUBSCRIBER_KEY, "config"))
    payg = await service.get(ResolvedKey(PAYG_KEY, "config"))
    anon = await service.get(ResolvedKey.none())
    assert sub.snapshot is not payg.snapshot is not anon.snapshot
    assert sub.snapshot.tiers["v1"].count < payg.snapshot.tiers["v1"].count
    assert "personalized" not in anon.snapshot.tiers  # needs a key: not even asked
    await service.close()


async def test_failed_tier_keeps_last_good_memberships(
    client: NanoGPTClient, store: Store, fake_nanogpt
) -> None:
    clock = Clock()
    service = CatalogService(client, store, clock=clock)
    key = ResolvedKey(PAYG_KEY, "config")
    first = (await service.get(key)).snapshot
    fake_nanogpt.fake.faults.status(503, "/api/subscription/v1/models")
    clock.now += 400
    second, diff = await service.refresh(key)
    assert second.tiers["subscription"].ok is False
    assert diff.empty  # a passing fault does not flip every SUB badge
    assert [e.subscription.included for e in second.entries] == [
        e.subscription.included for e in first.entries
    ]
    view = await service.get(key)
    assert view.stale and view.error is not None and view.error.code == "upstream_unavailable"
    await service.close()


async def test_rate_limit_is_honoured(client: NanoGPTClient, fake_nanogpt) -> None:
    clock = Clock()
    service = CatalogService(client, None, clock=clock)
    key = ResolvedKey(PAYG_KEY, "config")
    await service.get(key)
    fake_nanogpt.fake.faults.status(429, "*/models", retry_after="1")
    clock.now += 400
    with pytest.raises(Exception) as raised:
        await service.refresh(key)
    assert getattr(raised.value, "code", None) == "rate_limited"
    fake_nanogpt.fake.faults.clear()
    before = fake_nanogpt.fake.count("/api/v1/models")
    clock.now += 0.5
    view = await service.get(key)  # still inside Retry-After: serve stale, do not ask
    assert view.stale
    with pytest.raises(Exception) as again:
        await service.refresh(key)
    assert getattr(again.value, "code", None) == "rate_limited"
    await asyncio.sleep(0.05)
    assert fake_nanogpt.fake.count("/api/v1/models") == before
    clock.now += 1
    await asyncio.sleep(1.05)  # the client keeps its own (monotonic) hold for the same key
    await service.refresh(key)
    assert fake_nanogpt.fake.count("/api/v1/models") == before + 1
    await service.close()


async def test_snapshot_survives_restart_through_the_store(
    client: NanoGPTClient, store: Store, fake_nanogpt
) -> None:
    key = ResolvedKey(PAYG_KEY, "config")
    first = CatalogService(client, store)
    snapshot = (await first.get(key)).snapshot
    await first.close()
    fake_nanogpt.fake.faults.status(500)
    second = CatalogService(client, store)
    view = await second.get(key)  # NanoGPT down at start: yesterday's catalogue beats nothing
    assert [e.id for e in view.snapshot.entries] == [e.id for e in snapshot.entries]
    assert view.snapshot.to_store() == snapshot.to_store()
    await second.close()


async def test_cold_and_down_raises_a_typed_error(client: NanoGPTClient, fake_nanogpt) -> None:
    fake_nanogpt.fake.faults.reset()
    service = CatalogService(client, None)
    with pytest.raises(CatalogUnavailable) as raised:
        await service.get(ResolvedKey.none())
    assert raised.value.error.code == "upstream_unavailable"


def test_diff_reports_prices_and_tiers() -> None:
    a = merge_tiers({Tier.V1: [UpstreamModel(id="x", prompt_per_1m=1.0)], Tier.PAID: [UpstreamModel(id="x")]})
    b = merge_tiers(
        {Tier.V1: [UpstreamModel(id="x", prompt_per_1m=2.0)], Tier.SUBSCRIPTION: [UpstreamModel(id="x")]}
    )
    diff = diff_catalogues(a, b)
    fields = diff.changed[0]["fields"]
    assert fields["pricing.prompt"] == [1.0, 2.0]
    assert fields["tiers"] == [["v1", "paid"], ["v1", "subscription"]]
    assert fields["subscription.included"] == [False, True]


def test_snapshot_serialises_each_entry_once() -> None:
    entries = merge_tiers({Tier.V1: [UpstreamModel(id=f"v/m{i}") for i in range(5)]})
    snapshot = CatalogSnapshot(entries, 1.0, {})
    assert snapshot.models_json(snapshot.entries) is snapshot.all_models_json
    subset = snapshot.models_json(entries[1:3])
    assert subset.count(b'"id"') == 2


async def test_offline_requests_get_the_cached_failure_until_the_scheduled_retry(
    client: NanoGPTClient, fake_nanogpt: FakeNanoGPTServer
) -> None:
    clock = Clock()
    service = CatalogService(client, None, ttl=300, clock=clock)  # retried every 60 s by the background loop
    key = ResolvedKey(PAYG_KEY, "config")
    fake = fake_nanogpt.fake
    fake.faults.reset(after_bytes=0)
    with pytest.raises(CatalogUnavailable):
        await service.get(key)
    attempts = fake.count("/api/v1/models")
    for _ in range(20):  # every one answered, none sent upstream
        with pytest.raises(CatalogUnavailable) as raised:
            await service.get(key)
        assert raised.value.error.code == "upstream_unavailable"
    assert fake.count("/api/v1/models") == attempts
    with pytest.raises(NanoGPTError):
        await service.refresh(key)  # "Sync now" always tries
    tried = fake.count("/api/v1/models")
    assert tried > attempts
    fake.faults.clear()
    clock.now += 59
    with pytest.raises(CatalogUnavailable):
        await service.get(key)  # the refresh above started the wait afresh
    assert fake.count("/api/v1/models") == tried
    clock.now += 2
    view = await service.get(key)  # the next scheduled retry is due: a request may make it
    assert not view.stale and fake.count("/api/v1/models") == tried + 1
    await service.close()


async def test_offline_stale_catalogue_is_not_revalidated_on_every_request(
    client: NanoGPTClient, fake_nanogpt: FakeNanoGPTServer
) -> None:
    clock = Clock()
    service = CatalogService(client, None, ttl=300, clock=clock)
    key = ResolvedKey(PAYG_KEY, "config")
    fake = fake_nanogpt.fake
    await service.get(key)
    fake.faults.reset(after_bytes=0)
    clock.now += 400
    view = await service.get(key)  # expired: served stale, revalidated in the background (which fails)
    assert view.stale
    await asyncio.gather(*service._background)  # the background round has finished
    attempts = fake.count("/api/v1/models")
    views = [await service.get(key) for _ in range(20)]
    assert all(v.stale and v.error is not None for v in views)
    assert not service._background  # no new round was started by those 20 requests
    assert fake.count("/api/v1/models") == attempts
    fake.faults.clear()
    clock.now += 61
    await service.get(key)  # due again: this request starts the retry
    await asyncio.gather(*service._background)
    assert fake.count("/api/v1/models") > attempts
    assert not (await service.get(key)).stale
    await service.close()
