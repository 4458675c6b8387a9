"""CatalogService against the real client and fake upstream, with a clock the test moves by hand."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest

from nanogpt_companion.catalog import (
    CatalogService,
    CatalogSnapshot,
    CatalogUnavailable,
    diff_catalogues,
)
from nanogpt_companion.catalog_merge import merge_tiers, thinking_base_of, vendor_of
from nanogpt_companion.catalog_snapshot import EntryPool
from nanogpt_companion.domain import CatalogSummary, Tier
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
    fake.set_price(fake.models[0]["id"], prompt=9.99)  # so the revalidated snapshot is a new one
    view = await service.get(key)  # expired: served at once, refreshed in the background
    # On schedule, not stale: "stale" tells pages the last refresh failed, and changes the list's ETag.
    assert not view.stale
    assert fake.count("/api/v1/models") == 1 or fake.count("/api/v1/models") == 2
    for _ in range(100):
        if fake.count("/api/v1/models") == 2 and service.cached(key) is not view.snapshot:
            break
        await asyncio.sleep(0.02)
    assert fake.count("/api/v1/models") == 2
    assert service.cached(key) is not view.snapshot
    assert not (await service.get(key)).stale
    await service.close()


async def test_stale_once_overdue_for_the_background_loop(client: NanoGPTClient, store: Store) -> None:
    """Past ``ttl`` plus the loop's round and a round's grace without NanoGPT's confirmation (nobody used the
    key for an hour, so the loop left it): stale until a refresh confirms it."""
    clock = Clock()
    service = CatalogService(client, store, ttl=300, clock=clock)  # the loop's round: 60 s
    key = ResolvedKey(PAYG_KEY, "sillytavern")
    assert not (await service.get(key)).stale
    clock.now += 300 + 2 * 60 - 1
    current = service.current(key)
    assert current is not None and not current.stale
    clock.now += 1
    current = service.current(key)
    assert current is not None and current.stale
    await service.refresh(key)
    current = service.current(key)
    assert current is not None and not current.stale
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
    assert [e.included for e in second.entries] == [e.included for e in first.entries]
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
    diff = diff_catalogues(
        CatalogSnapshot.build(a, 1.0, {}).entries, CatalogSnapshot.build(b, 1.0, {}).entries
    )
    fields = diff.changed[0]["fields"]
    assert fields["pricing.prompt"] == [1.0, 2.0]
    assert fields["tiers"] == [["v1", "paid"], ["v1", "subscription"]]
    assert fields["subscription.included"] == [False, True]


def test_snapshot_keeps_bytes_and_a_summary_per_entry() -> None:
    entries = merge_tiers(
        {
            Tier.V1: [
                UpstreamModel(id=f"v/m{i}", description="long " * 200, prompt_per_1m=float(i))
                for i in range(5)
            ]
        }
    )
    snapshot = CatalogSnapshot.build(entries, 1.0, {})
    full = orjson.loads(snapshot.models_json(snapshot.entries))
    assert full == [e.model_dump(mode="json") for e in entries]
    summary = orjson.loads(snapshot.models_json(snapshot.entries[1:3], "summary"))
    assert [s["id"] for s in summary] == ["v/m1", "v/m2"]
    for record, entry in zip(summary, entries[1:3], strict=True):
        assert list(record) == list(CatalogSummary.model_fields)  # exactly the documented keys
        assert CatalogSummary.model_validate(record).pricing.prompt == entry.pricing.prompt
        assert "description" not in record
    # The doctor still gets whole records, rebuilt from the bytes.
    assert snapshot.by_id["v/m3"] == entries[3]
    assert "v/nope" not in snapshot.by_id and len(snapshot.by_id) == 5


def test_identical_entries_are_stored_once_across_snapshots() -> None:
    pool = EntryPool()
    shared = [UpstreamModel(id=f"v/m{i}", prompt_per_1m=1.0) for i in range(4)]
    one = CatalogSnapshot.build(merge_tiers({Tier.V1: shared}), 1.0, {}, pool)
    other = CatalogSnapshot.build(
        merge_tiers({Tier.V1: [*shared[:3], UpstreamModel(id="v/m3", prompt_per_1m=2.0)]}), 2.0, {}, pool
    )
    assert [a is b for a, b in zip(one.entries, other.entries, strict=True)] == [True, True, True, False]
    assert one.content_hash != other.content_hash
    same = CatalogSnapshot.build(merge_tiers({Tier.V1: shared}), 3.0, {}, pool)
    assert same.same_content(one) and not same.same_content(other)
    pool.retain([other])  # nothing else alive: the pool forgets the entry only ``one`` had
    assert len(pool) == 4
    assert pool.pack(one.entries[3].entry()) is not one.entries[3]


async def test_unchanged_refresh_keeps_the_snapshot_and_its_etag(
    client: NanoGPTClient, store: Store, fake_nanogpt: FakeNanoGPTServer
) -> None:
    clock = Clock()
    published: list[str] = []
    service = CatalogService(
        client, store, ttl=300, clock=clock, on_refresh=lambda fp, snap, diff: published.append(fp)
    )
    key = ResolvedKey(PAYG_KEY, "sillytavern")
    first = (await service.get(key)).snapshot
    saved = await store.last_catalog_snapshot(key.fingerprint)
    clock.now += 400
    snapshot, diff = await service.refresh(key)
    assert snapshot is first and diff.empty
    assert fake_nanogpt.fake.count("/api/v1/models") == 2  # NanoGPT was asked again
    assert published == [key.fingerprint]  # only the first load was announced
    assert await store.last_catalog_snapshot(key.fingerprint) == saved  # nothing rewritten
    view = await service.get(key)
    assert view.snapshot is first and not view.stale  # confirmed just now, so fresh
    assert fake_nanogpt.fake.count("/api/v1/models") == 2
    fake_nanogpt.fake.set_price(fake_nanogpt.fake.ids("paid")[0], prompt=42.0)
    clock.now += 400
    changed, diff = await service.refresh(key)
    assert changed is not first and changed.content_hash != first.content_hash
    assert [c["id"] for c in diff.changed] == [fake_nanogpt.fake.ids("paid")[0]]
    await service.close()


class RecordingCatalog(CatalogService):
    """The real service, noting when each key's upstream calls start and end (the order is the witness)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.events: list[tuple[str, str]] = []
        self.personalized_asked = asyncio.Event()

    async def _fetch_tier(self, tier, key):
        self.events.append(("start", key.fingerprint))
        if tier is Tier.PERSONALIZED:
            self.personalized_asked.set()
        try:
            return await super()._fetch_tier(tier, key)
        finally:
            self.events.append(("end", key.fingerprint))


async def test_refresh_rounds_of_different_keys_do_not_overlap(client: NanoGPTClient, fake_nanogpt) -> None:
    fake_nanogpt.fake.faults.latency(0.05)
    service = RecordingCatalog(client, None)
    keys = [ResolvedKey(SUBSCRIBER_KEY, "config"), ResolvedKey(PAYG_KEY, "config"), ResolvedKey.none()]
    views = await asyncio.gather(*(service.get(k) for k in keys))
    assert all(v.snapshot.entries for v in views)
    owners = [fp for _, fp in service.events]
    # Each key's calls form one block: a round's parsed lists are gone before the next round starts.
    blocks = [fp for i, fp in enumerate(owners) if i == 0 or owners[i - 1] != fp]
    assert sorted(blocks) == sorted(k.fingerprint for k in keys)
    await service.close()


async def test_a_round_stuck_upstream_does_not_hold_the_others_back(
    client: NanoGPTClient, fake_nanogpt
) -> None:
    fake_nanogpt.fake.faults.latency(30, "/api/personalized/v1/models")  # only keyed rounds ask for it
    service = RecordingCatalog(client, None)
    service._round_queue_wait = 0.05
    stuck = asyncio.create_task(service.get(ResolvedKey(PAYG_KEY, "config")))
    await service.personalized_asked.wait()  # the keyed round is now waiting on NanoGPT
    anonymous = await service.get(ResolvedKey.none())  # queues briefly, then runs alongside
    assert anonymous.snapshot.entries
    assert not stuck.done()
    stuck.cancel()
    await asyncio.gather(stuck, return_exceptions=True)


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
    view = await service.get(key)  # expired: served at once, revalidated in the background (which fails)
    assert not view.stale  # not yet known to have failed
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


async def test_the_end_of_an_outage_is_logged_once_even_by_a_round_that_straddles_it(
    client: NanoGPTClient, fake_nanogpt: FakeNanoGPTServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The round that first reaches NanoGPT again says so at INFO, even when the fault cleared mid-round and
    one list still failed in it; the round that then fetches every list says that too; nothing else does."""
    caplog.set_level(logging.DEBUG, logger="nanogpt_companion.catalog")
    clock = Clock()
    service = CatalogService(client, None, ttl=300, clock=clock)
    payg, subscriber = ResolvedKey(PAYG_KEY, "config"), ResolvedKey(SUBSCRIBER_KEY, "config")
    fake = fake_nanogpt.fake
    await service.get(payg)
    await service.get(subscriber)

    def info(since: int) -> list[str]:
        return [r.getMessage() for r in caplog.records[since:] if r.levelno >= logging.INFO]

    fake.faults.reset(after_bytes=0)
    mark = len(caplog.records)
    for key in (payg, subscriber, payg):
        with pytest.raises(NanoGPTError):
            await service.refresh(key)
    outage = info(mark)
    assert len(outage) == 1 and outage[0].startswith("could not fetch NanoGPT's v1, subscription, paid")

    fake.faults.clear()
    fake.faults.reset("/api/paid/v1/models", after_bytes=0)  # the round straddles the end of the outage
    mark = len(caplog.records)
    await service.refresh(payg)
    await service.refresh(subscriber)  # reaches NanoGPT too, but the service already said it is back
    back = info(mark)
    assert len(back) == 1, back
    # The failed list keeps its last memberships, but its status is news: "refreshed", naming it.
    assert back[0].startswith("NanoGPT answers again; catalogue refreshed: 600 models")
    assert "paid=error" in back[0]

    fake.faults.clear()
    mark = len(caplog.records)
    await service.refresh(payg)
    await service.refresh(subscriber)
    await service.refresh(payg)  # a heartbeat: DEBUG
    recovered = info(mark)
    assert len(recovered) == 1, recovered
    assert recovered[0].startswith("every model list fetched again; catalogue refreshed: 600 models (v1=600")
    await service.close()
