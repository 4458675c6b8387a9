"""A catalogue round: parsed in a helper process, skipped when NanoGPT's lists are unchanged or already
built for another key, and its entries kept in shared blobs.

The helper is a real child process of the test (``python -m nanogpt_companion.catalog_round``); the lists
come from the fake NanoGPT over loopback HTTP.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from nanogpt_companion.catalog import CatalogService
from nanogpt_companion.catalog_merge import TIER_ORDER, TierMerger, merge_tiers
from nanogpt_companion.catalog_round import (
    HelperFailed,
    RoundInput,
    build_round,
    build_round_in_helper,
)
from nanogpt_companion.catalog_snapshot import CatalogSnapshot, EntryPool
from nanogpt_companion.domain import Tier
from nanogpt_companion.keys import ResolvedKey
from nanogpt_companion.nanogpt.client import NanoGPTClient
from nanogpt_companion.nanogpt.schemas import UpstreamModel
from nanogpt_companion.store import Store
from tests.fakes.nanogpt_fixtures import FakeNanoGPTServer
from tests.fakes.nanogpt_upstream import PAYG_KEY, FakeAccount

OTHER_PAYG_KEY = "sk-nano-FAKE-b5c0e7d2-4a61-4f0b-9d3e-second-payg"


@pytest.fixture
async def client(fake_nanogpt: FakeNanoGPTServer) -> AsyncIterator[NanoGPTClient]:
    async with aiohttp.ClientSession() as session:
        yield NanoGPTClient(session, fake_nanogpt.base_url, retries=0, backoff_base=0.01)


async def lists_for(client: NanoGPTClient, key: str) -> dict[Tier, bytes]:
    return {tier: (await client.model_list_body(tier, api_key=key)).body for tier in TIER_ORDER}


def echoing(key: str) -> dict[str, Any]:
    """A list entry that carries ``key`` in its name and description (an upstream echoing a key)."""
    return {
        "id": "echo/model",
        "object": "model",
        "name": f"Echo {key}",
        "description": f"echoes {key}",
        "context_length": 8192,
        "pricing": {"prompt": 1.0, "completion": 2.0, "unit": "per_million_tokens"},
    }


async def test_the_helper_process_builds_the_round_the_service_would(
    client: NanoGPTClient, fake_nanogpt
) -> None:
    fake_nanogpt.fake.echo_for(PAYG_KEY, echoing(PAYG_KEY), {"id": "bad id with spaces"})
    lists = await lists_for(client, PAYG_KEY)
    previous = CatalogSnapshot.build(merge_tiers({Tier.PAID: [UpstreamModel(id="gone/model")]}), 1.0, {})
    job = RoundInput(
        lists={t: body for t, body in lists.items() if t is not Tier.SUBSCRIPTION},  # its fetch failed
        redact=(PAYG_KEY,),
        carry_tiers=(Tier.SUBSCRIPTION, Tier.PAID),
        previous=previous.models_json(previous.entries),
    )
    in_helper = await build_round_in_helper(job)
    assert in_helper == build_round(job)  # byte for byte
    assert in_helper.outcomes[Tier.V1] == len(fake_nanogpt.fake.ids("v1")) + 1
    assert [s.reason for s in in_helper.skipped[Tier.V1]] == ["unusable id"]
    entries = [orjson.loads(in_helper.entries.buffer[a:b]) for a, b in in_helper.entries.spans]
    assert [e["id"] for e in entries] == sorted((e["id"] for e in entries), key=str.lower)
    echo = next(e for e in entries if e["id"] == "echo/model")
    assert PAYG_KEY not in orjson.dumps(echo).decode() and "***" in echo["name"]
    # The subscription list did not arrive: nothing was carried for it (the last snapshot had none),
    # while "gone/model" is not carried for paid, which arrived.
    assert "gone/model" not in {e["id"] for e in entries}


async def test_a_list_that_cannot_be_read_fails_its_tier_and_keeps_its_memberships(
    client: NanoGPTClient,
) -> None:
    lists = await lists_for(client, PAYG_KEY)
    first = build_round(RoundInput(lists=lists, redact=(PAYG_KEY,)))
    pool = EntryPool()
    previous = CatalogSnapshot(
        pool.adopt(first.entries),
        1.0,
        {},
    )
    broken = {**lists, Tier.SUBSCRIPTION: lists[Tier.SUBSCRIPTION][:100]}  # cut short
    job = RoundInput(
        lists=broken,
        redact=(PAYG_KEY,),
        carry_tiers=tuple(TIER_ORDER),
        previous=previous.models_json(previous.entries),
    )
    again = await build_round_in_helper(job)
    outcome = again.outcomes[Tier.SUBSCRIPTION]
    assert isinstance(outcome, str) and "looks truncated" in outcome
    assert again.entries == first.entries  # the subscription badges came over from the last round


async def test_a_helper_that_cannot_run_says_why(client: NanoGPTClient, tmp_path) -> None:
    job = RoundInput(lists=await lists_for(client, PAYG_KEY), redact=(PAYG_KEY,))
    with pytest.raises(HelperFailed, match="could not start it"):
        await build_round_in_helper(job, python=str(tmp_path / "no-such-python"))
    with pytest.raises(HelperFailed, match="exited with 1"):
        await build_round_in_helper(job, python="false")


async def test_without_a_helper_the_service_parses_in_a_thread_and_says_so_once(
    client: NanoGPTClient, fake_nanogpt, caplog: pytest.LogCaptureFixture, tmp_path
) -> None:
    fake_nanogpt.fake.accounts[OTHER_PAYG_KEY] = FakeAccount(OTHER_PAYG_KEY)
    fake_nanogpt.fake.echo_for(OTHER_PAYG_KEY, echoing(OTHER_PAYG_KEY))  # other lists than PAYG_KEY's
    service = CatalogService(client, None, helper_python=str(tmp_path / "no-such-python"))
    with caplog.at_level(logging.WARNING, logger="nanogpt_companion.catalog"):
        first = await service.get(ResolvedKey(PAYG_KEY, "config"))
        second = await service.get(ResolvedKey(OTHER_PAYG_KEY, "config"))
    assert len(first.snapshot.entries) == len(fake_nanogpt.fake.ids("personalized"))
    assert len(second.snapshot.entries) == len(first.snapshot.entries) + 1
    warnings = [r.getMessage() for r in caplog.records if "helper process" in r.getMessage()]
    assert len(warnings) == 1 and "could not start it" in warnings[0]
    await service.close()


async def test_keys_that_get_the_same_lists_share_one_round(client: NanoGPTClient, fake_nanogpt) -> None:
    fake_nanogpt.fake.accounts[OTHER_PAYG_KEY] = FakeAccount(OTHER_PAYG_KEY)
    service = CatalogService(client, None)
    one = await service.get(ResolvedKey(PAYG_KEY, "config"))
    other = await service.get(ResolvedKey(OTHER_PAYG_KEY, "config"))
    # Built once: the second key's snapshot holds the very same entries (a round of its own would have
    # made new ones), under its own fetch time.
    assert other.snapshot is not one.snapshot
    assert other.snapshot.entries is one.snapshot.entries
    assert other.snapshot.content_hash == one.snapshot.content_hash
    await service.close()


async def test_entries_that_show_a_key_are_not_shared_with_that_key(
    client: NanoGPTClient, fake_nanogpt
) -> None:
    # Both keys get the very same bytes, which hold the second key: the first key's entries show it
    # (NanoGPT sent it to them), so the second key must get its own round, with its key masked.
    fake_nanogpt.fake.accounts[OTHER_PAYG_KEY] = FakeAccount(OTHER_PAYG_KEY)
    for key in (PAYG_KEY, OTHER_PAYG_KEY):
        fake_nanogpt.fake.echo_for(key, echoing(OTHER_PAYG_KEY))
    service = CatalogService(client, None)
    one = await service.get(ResolvedKey(PAYG_KEY, "config"))
    other = await service.get(ResolvedKey(OTHER_PAYG_KEY, "config"))
    assert other.snapshot.entries is not one.snapshot.entries
    assert OTHER_PAYG_KEY not in other.snapshot.packed["echo/model"].full.decode()
    await service.close()


def test_lists_merge_alike_in_any_order() -> None:
    lists = {
        Tier.V1: [UpstreamModel(id="a/x", name="from v1"), UpstreamModel(id="b/y")],
        Tier.SUBSCRIPTION: [UpstreamModel(id="a/x", name="from subscription")],
        Tier.PAID: [UpstreamModel(id="b/y", name="from paid"), UpstreamModel(id="c/z")],
    }
    reversed_order = TierMerger()
    for tier in reversed(list(lists)):
        reversed_order.add(tier, lists[tier])
    merged = list(reversed_order.entries())
    assert merged == merge_tiers(lists)
    assert [(e.id, e.name, e.tiers) for e in merged] == [
        ("a/x", "from v1", [Tier.V1, Tier.SUBSCRIPTION]),
        ("b/y", "b/y", [Tier.V1, Tier.PAID]),
        ("c/z", "c/z", [Tier.PAID]),
    ]


def test_a_blob_mostly_of_dropped_entries_is_repacked() -> None:
    pool = EntryPool()
    many = [UpstreamModel(id=f"v/m{i}", prompt_per_1m=1.0, description="d" * 500) for i in range(10)]
    old = CatalogSnapshot.build(merge_tiers({Tier.V1: many}), 1.0, {}, pool)
    kept = old.entries[:2]
    blob_before = kept[0]._blob
    new = CatalogSnapshot.build(merge_tiers({Tier.V1: many[:2]}), 2.0, {}, pool)
    assert new.entries == kept  # the same pooled entries
    pool.retain([new])  # 8 of 10 entries dropped: their blob is mostly dead bytes
    assert kept[0]._blob is not blob_before and kept[0]._blob is kept[1]._blob
    assert len(kept[0]._blob.data) == sum(e.size for e in kept)
    assert [orjson.loads(e.full)["id"] for e in kept] == ["v/m0", "v/m1"]
    assert kept[0].entry() == merge_tiers({Tier.V1: many[:2]})[0]


async def test_keys_that_saved_the_same_catalogue_read_it_once_after_a_restart(
    client: NanoGPTClient, fake_nanogpt, tmp_path
) -> None:
    fake_nanogpt.fake.accounts[OTHER_PAYG_KEY] = FakeAccount(OTHER_PAYG_KEY)
    store = Store(tmp_path / "db.sqlite3")
    await store.open()
    try:
        before = CatalogService(client, store)
        saved = [await before.get(ResolvedKey(k, "config")) for k in (PAYG_KEY, OTHER_PAYG_KEY)]
        await before.close()
        restarted = CatalogService(client, store)
        one, other = [await restarted.get(ResolvedKey(k, "config")) for k in (PAYG_KEY, OTHER_PAYG_KEY)]
        # Fresh from the store (no round yet), each with its own fetch time, and read once for both.
        assert [v.snapshot.fetched_at for v in (one, other)] == [v.snapshot.fetched_at for v in saved]
        assert other.snapshot.entries is one.snapshot.entries
        assert [e.full for e in one.snapshot.entries] == [e.full for e in saved[0].snapshot.entries]
        await restarted.close()
    finally:
        await store.close()


async def test_a_list_that_cannot_be_read_fails_again_when_the_same_bytes_come_back(
    client: NanoGPTClient, fake_nanogpt
) -> None:
    fake_nanogpt.fake.faults.invalid_json("/api/paid/v1/models")  # the same unreadable body every time
    service = CatalogService(client, None)
    key = ResolvedKey(PAYG_KEY, "config")
    for _ in range(2):  # the second round gets byte-identical lists: it must not take them as read
        snapshot, _diff = await service.refresh(key)
        assert snapshot.tiers["paid"].ok is False and snapshot.tiers["paid"].error is not None
        assert snapshot.tiers["paid"].error.code == "upstream_malformed"
    await service.close()
