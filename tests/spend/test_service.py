"""The spend service end to end against the fake NanoGPT: generations really charge the fake's accounts,
the service reads the accounts back through AccountService and attributes what moved."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import pytest

from nanogpt_companion.account import AccountService
from nanogpt_companion.keys import ResolvedKey
from nanogpt_companion.spend.records import Generation
from tests.fakes.nanogpt_fixtures import PAYG_KEY, SUBSCRIBER_KEY
from tests.fakes.nanogpt_inference import Reply

from .conftest import SpendRig


async def prepare(rig: SpendRig, user: str, key: str) -> None:
    """The user's key, its catalogue (the drawer loads it at page load) and a first reading (the
    service's routine poll at start): the baseline every later change is measured from."""
    assert rig.spend is not None  # listening before the first poll, as in the app
    rig.keys.by_user[user] = key
    await rig.catalog.get(ResolvedKey(key, "sillytavern"))
    await rig.account.poll(user)


def charges_since(rig: SpendRig, start: int) -> list[Decimal]:
    return [c.usd for c in rig.fake.charges[start:] if c.usd is not None]


async def test_sequential_generations_are_each_measured_exactly(rig: SpendRig, events) -> None:
    model = rig.paid_model()
    rig.fake.inference.replies[model] = Reply("ok", prompt_tokens=1200, completion_tokens=300)
    await prepare(rig, "alice", PAYG_KEY)
    rig.start()
    alice = events("alice")
    polls = rig.balance_polls()
    for n in range(2):
        start = len(rig.fake.charges)
        await rig.generate(PAYG_KEY, model)
        row = await rig.report("alice", model, chat="chat-a")
        assert row.status == "pending" and row.channel == "usd"
        assert row.estimate.usd == pytest.approx((1200 * 10 + 300 * 30) / 1e6)
        await alice.next("spend", lambda d, r=row: d["reason"] == "measured" and r.id in d["rows"])
        (measured,) = [r for r in await rig.spend.recent("alice", limit=5) if r.id == row.id]
        (charge,) = charges_since(rig, start)
        assert measured.status == "measured" and not measured.approximate and measured.shared_with == 1
        assert Decimal(str(measured.measured_usd)) == charge == Decimal("0.021")
        assert rig.balance_polls() == polls + n + 1  # one poll per generation, nothing more
    overview = await rig.spend.overview("alice", chat_id="chat-a")
    assert overview["chat"]["usd"] == pytest.approx(0.042) and overview["chat"]["generations"] == 2
    assert overview["today"]["measured_usd"] == pytest.approx(0.042)
    assert not overview["today"]["approximate"] and overview["mode"] == "usd"
    assert overview["top_chats"][0]["key"] == "chat-a"
    assert overview["days"][-1]["usd_by_model"] == {model: pytest.approx(0.042)}


async def test_overlapping_generations_share_one_reading(rig: SpendRig, events) -> None:
    model = rig.paid_model()
    rig.fake.inference.replies[model] = Reply("a b c d e f", prompt_tokens=1000, completion_tokens=100)
    rig.fake.inference.stream_chunk_delay = 0.05
    await prepare(rig, "alice", PAYG_KEY)
    rig.start()
    alice = events("alice")
    polls = rig.balance_polls()
    start = len(rig.fake.charges)
    await asyncio.gather(
        rig.generate(PAYG_KEY, model, stream=True), rig.generate(PAYG_KEY, model, stream=True)
    )
    a, b = await asyncio.gather(
        rig.report("alice", model, chat="tab-1", prompt_tokens=3000),
        rig.report("alice", model, chat="tab-2", prompt_tokens=1000),
    )
    await alice.next("spend", lambda d: d["reason"] == "measured" and {a.id, b.id} <= set(d["rows"]))
    rows = {r.id: r for r in await rig.spend.recent("alice", limit=5)}
    total = sum(charges_since(rig, start), Decimal(0))
    assert all(rows[i].approximate and rows[i].shared_with == 2 for i in (a.id, b.id))
    assert rows[a.id].measured_usd + rows[b.id].measured_usd == pytest.approx(float(total), abs=1e-9)
    # Split by the estimates ST's token counts give (3000 vs 1000 prompt tokens), not evenly.
    assert rows[a.id].measured_usd > rows[b.id].measured_usd
    assert rig.balance_polls() == polls + 1
    overview = await rig.spend.overview("alice")
    assert overview["today"]["approximate"]


async def test_a_burst_of_generations_is_one_poll_and_polls_keep_their_distance(
    rig: SpendRig, events
) -> None:
    model = rig.paid_model()
    spend = rig.use(settle=0.2, min_interval=1.0)
    await prepare(rig, "alice", PAYG_KEY)
    rig.start(spend)
    alice = events("alice")
    polls = rig.balance_polls()
    await asyncio.gather(*(rig.generate(PAYG_KEY, model) for _ in range(8)))
    burst = await asyncio.gather(*(rig.report("alice", model) for _ in range(8)))
    await alice.next("spend", lambda d: d["reason"] == "measured" and burst[-1].id in d["rows"])
    assert rig.balance_polls() == polls + 1
    # The next generation right after: its poll waits out the interval since the last one.
    await rig.generate(PAYG_KEY, model)
    late = await rig.report("alice", model)
    loop = asyncio.get_running_loop()
    asked = loop.time()
    await alice.next("spend", lambda d: d["reason"] == "measured" and late.id in d["rows"])
    assert rig.balance_polls() == polls + 2
    assert loop.time() - asked >= 0.5  # held back: the previous poll was under a second ago
    rows = await rig.spend.recent("alice", limit=20)
    assert {r.status for r in rows} == {"measured"}
    assert [r.shared_with for r in rows if r.id in {g.id for g in burst}] == [8] * 8


async def test_subscriber_quota_is_measured_in_tokens(rig: SpendRig, events) -> None:
    model = rig.included_model(multiplier=2)
    rig.fake.inference.replies[model] = Reply("ok", prompt_tokens=700, completion_tokens=50)
    await prepare(rig, "sub", SUBSCRIBER_KEY)
    rig.start()
    sub = events("sub")
    await rig.generate(SUBSCRIBER_KEY, model)
    row = await rig.report("sub", model, chat="quota-chat")
    assert row.channel == "quota" and row.estimate.quota == 1400
    await sub.next("spend", lambda d: d["reason"] == "measured" and row.id in d["rows"])
    (measured,) = [r for r in await rig.spend.recent("sub", limit=3) if r.id == row.id]
    assert measured.measured_quota == 1400 and measured.quota_unit == "tokens" and measured.usd == 0
    overview = await rig.spend.overview("sub", chat_id="quota-chat")
    assert overview["mode"] == "quota" and overview["chat"]["quota"] == 1400
    assert overview["quota"]["bucket"] == "weekly_input_tokens" and overview["quota"]["limit"] == 60_000_000


async def test_a_key_shared_by_two_users(rig: SpendRig, events) -> None:
    """Both users generate in one interval: the change is split across them, approximate. Then another
    app spends on the key: an outside row for each of them, split, approximate."""
    model = rig.paid_model()
    await prepare(rig, "alice", PAYG_KEY)
    await prepare(rig, "bob", PAYG_KEY)
    rig.start()
    alice, bob = events("alice"), events("bob")
    start = len(rig.fake.charges)
    await asyncio.gather(rig.generate(PAYG_KEY, model), rig.generate(PAYG_KEY, model))
    a, b = await asyncio.gather(rig.report("alice", model), rig.report("bob", model))
    await alice.next("spend", lambda d: d["reason"] == "measured" and a.id in d["rows"])
    await bob.next("spend", lambda d: d["reason"] == "measured" and b.id in d["rows"])
    ra = (await rig.spend.recent("alice", limit=1))[0]
    rb = (await rig.spend.recent("bob", limit=1))[0]
    assert ra.approximate and rb.approximate and ra.shared_with == rb.shared_with == 2
    assert ra.measured_usd + rb.measured_usd == pytest.approx(float(sum(charges_since(rig, start))), abs=1e-9)
    assert ra.generation.chat_id == "chat-1" and rb.user == "bob"

    start = len(rig.fake.charges)
    await rig.generate(PAYG_KEY, model)  # another app on the same key: nothing reports it
    await rig.account.poll("alice")
    (outside_a,) = [r for r in await rig.spend.recent("alice", limit=1) if r.is_outside]
    (outside_b,) = [r for r in await rig.spend.recent("bob", limit=1) if r.is_outside]
    (charge,) = charges_since(rig, start)
    assert outside_a.measured_usd + outside_b.measured_usd == pytest.approx(float(charge), abs=1e-9)
    assert (
        outside_a.approximate
        and outside_a.shared_with == 2
        and "2 SillyTavern users" in (outside_a.note or "")
    )
    assert (await rig.spend.overview("alice"))["today"]["outside_usd"] == pytest.approx(float(charge) / 2)


async def test_budget_warns_then_alerts_once(rig: SpendRig, events) -> None:
    model = rig.paid_model(prompt=100.0, completion=0.0)
    rig.fake.inference.replies[model] = Reply("ok", prompt_tokens=3000, completion_tokens=10)  # $0.30 each
    await prepare(rig, "alice", PAYG_KEY)
    await rig.spend.update_settings("alice", {"daily_budget_usd": 1.0, "timezone": "Europe/Berlin"})
    rig.start()
    alice = events("alice")
    for _ in range(3):  # $0.90: 90 %
        await rig.generate(PAYG_KEY, model)
        row = await rig.report("alice", model)
        await alice.next("spend", lambda d, r=row: d["reason"] == "measured" and r.id in d["rows"])
    warnings = [d for n, d in alice.seen if n == "alert"]
    assert [w["kind"] for w in warnings] == ["budget_80"] and warnings[0]["level"] == "warning"
    for _ in range(2):  # $1.50: 150 %, and once more past it
        await rig.generate(PAYG_KEY, model)
        row = await rig.report("alice", model)
        await alice.next("spend", lambda d, r=row: d["reason"] == "measured" and r.id in d["rows"])
    alerts = [d for n, d in alice.seen if n == "alert"]
    assert [a["kind"] for a in alerts] == ["budget_80", "budget_100"]
    assert alerts[1]["level"] == "error" and "used up" in alerts[1]["message"]
    unseen = await rig.spend.unseen_alerts("alice")
    assert [a["kind"] for a in unseen] == ["budget_80", "budget_100"]  # kept until a tab shows them
    await rig.spend.mark_alerts_seen("alice", [a["id"] for a in unseen])
    assert await rig.spend.unseen_alerts("alice") == []
    overview = await rig.spend.overview("alice")
    assert overview["budgets"]["daily"]["fraction"] == pytest.approx(1.5)
    # A higher budget is a new budget: it arms its own alerts.
    await rig.spend.update_settings("alice", {"daily_budget_usd": 1.8})
    assert [a["kind"] for a in await rig.spend.unseen_alerts("alice")] == ["budget_80"]


async def test_rows_left_pending_by_a_stop_are_measured_after_a_restart(rig: SpendRig, events) -> None:
    model = rig.paid_model()
    await prepare(rig, "alice", PAYG_KEY)
    start = len(rig.fake.charges)
    await rig.generate(PAYG_KEY, model)
    row = await rig.report("alice", model)  # the scheduler is not running: the service "stops" here
    await rig.spend.close()
    account = AccountService(rig.account._client, rig.store, rig.bus, key_for=rig.keys, poll_interval=300)
    again = rig.use(account=account)
    alice = events("alice")
    await again.start()
    rig.start(again)
    await alice.next("spend", lambda d: d["reason"] == "measured" and row.id in d["rows"])
    (measured,) = await again.recent("alice", limit=1)
    assert Decimal(str(measured.measured_usd)) == charges_since(rig, start)[0]
    await account.close()


async def test_unreachable_account_times_out_to_unmeasured(rig: SpendRig, events) -> None:
    model = rig.paid_model()
    spend = rig.use(pending_timeout=1.0)
    await prepare(rig, "alice", PAYG_KEY)
    rig.start(spend)
    alice = events("alice")
    rig.fake.faults.status(503, "/api/check-balance")
    await rig.generate(PAYG_KEY, model)
    row = await rig.report("alice", model)
    await alice.next("spend", lambda d: d["reason"] == "expired" and row.id in d["rows"])
    (expired,) = await spend.recent("alice", limit=1)
    assert expired.status == "unmeasured" and "came in time" in (expired.note or "")
    assert expired.usd == pytest.approx(expired.estimate.usd or 0)


async def test_a_report_twice_is_one_row_and_no_key_is_unmeasured(rig: SpendRig) -> None:
    model = rig.paid_model()
    await prepare(rig, "alice", PAYG_KEY)
    generation = Generation(client_id="same-id-123", model=model, source="nanogpt", prompt_tokens=5)
    first = await rig.spend.report("alice", generation)
    second = await rig.spend.report("alice", generation)
    assert first.id == second.id and len(await rig.spend.recent("alice", limit=5)) == 1
    nobody = await rig.spend.report(
        "nokey", Generation(client_id="other-id-12", model=model, source="custom")
    )
    assert nobody.status == "unmeasured" and "no NanoGPT key" in (nobody.note or "")


async def test_a_reading_while_a_started_generation_is_unreported_is_held_back(rig: SpendRig, events) -> None:
    """Two tabs: the first reports, the second's generation is charged but its report is late (ST saves
    the chat and counts tokens first). The reading taken in between already holds both costs, so it is
    held back, and the next reading after the late report splits the change between the two."""
    model = rig.paid_model()
    rig.fake.inference.replies[model] = Reply("ok", prompt_tokens=1200, completion_tokens=300)
    spend = rig.use(settle=0.05, min_interval=0.1)
    await prepare(rig, "alice", PAYG_KEY)
    rig.start(spend)
    alice = events("alice")
    start = len(rig.fake.charges)
    assert await spend.started("alice", "gen-late-00001") == 1
    await asyncio.gather(rig.generate(PAYG_KEY, model), rig.generate(PAYG_KEY, model))
    first = await rig.report("alice", model, chat="tab-1")
    # The poll the first report asked for happens; its reading includes the late generation's cost.
    polls = rig.balance_polls()
    await rig.account.poll("alice")
    assert rig.balance_polls() == polls + 1
    (row,) = [r for r in await spend.recent("alice", limit=5) if r.id == first.id]
    assert row.status == "pending"  # held back: not given both costs
    late = await spend.report(
        "alice",
        Generation(
            client_id="gen-late-00001",
            model=model,
            source="nanogpt",
            chat_id="tab-2",
            prompt_tokens=1200,
            completion_tokens=300,
        ),
    )
    await alice.next("spend", lambda d: d["reason"] == "measured" and {first.id, late.id} <= set(d["rows"]))
    rows = {r.id: r for r in await spend.recent("alice", limit=5)}
    total = sum(charges_since(rig, start), Decimal(0))
    assert all(rows[i].approximate and rows[i].shared_with == 2 for i in (first.id, late.id))
    assert rows[first.id].measured_usd + rows[late.id].measured_usd == pytest.approx(float(total), abs=1e-9)
    # A start that arrives after its own report is stale and holds nothing back.
    assert await spend.started("alice", "gen-late-00001") == 0


async def test_rows_older_than_the_users_retention_are_removed(rig: SpendRig, events) -> None:
    """Retention is per user (default 365 days): the hourly housekeeping removes settled rows older than
    it, keeps newer ones and other users' rows."""
    model = rig.paid_model()
    now = [time.time() - 3 * 86400]
    spend = rig.use(clock=lambda: now[0])
    rig.keys.by_user.pop("bob", None)  # no key: rows are settled (unmeasured) at once
    old_bob = await rig.report("bob", model)
    old_carol = await rig.report("carol", model)
    now[0] = time.time()
    new_bob = await rig.report("bob", model)
    assert (await spend.settings("bob")).retention_days == 365
    await spend.update_settings("bob", {"retention_days": 2})
    bob = events("bob")
    rig.start(spend)
    await bob.next("spend", lambda d: d["reason"] == "purged")
    assert [r.id for r in await spend.recent("bob", limit=10)] == [new_bob.id]
    assert [r.id for r in await spend.recent("carol", limit=10)] == [old_carol.id]
    assert old_bob.status == "unmeasured"
