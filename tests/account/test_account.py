"""AccountService through the real NanoGPTClient against the shared fake NanoGPT upstream on loopback."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
import pytest

from nanogpt_companion.account import MIN_REFRESH_INTERVAL, AccountService
from nanogpt_companion.events import EventBus
from nanogpt_companion.nanogpt.client import NanoGPTClient
from nanogpt_companion.store import Store
from tests.fakes.nanogpt_fixtures import (
    INVALID_KEY,
    LEGACY_PLAN_KEY,
    PAYG_KEY,
    SUBSCRIBER_KEY,
    FakeNanoGPTServer,
)
from tests.fakes.nanogpt_upstream import FakeAccount, FakeNanoGPT, key_id

from .conftest import Clock, Keys

BALANCE = "/api/check-balance"
USAGE = "/api/subscription/v1/usage"
WEEK_1 = 1791763200000
WEEK_2 = WEEK_1 + 7 * 86400 * 1000
WEEK_3 = WEEK_2 + 7 * 86400 * 1000


@pytest.fixture
def fake(fake_nanogpt: FakeNanoGPTServer) -> FakeNanoGPT:
    return fake_nanogpt.fake


@pytest.fixture
def account(fake: FakeNanoGPT) -> FakeAccount:
    """Alice's account on the fake (a current-shape subscriber); tests edit it between polls."""
    return fake.accounts[SUBSCRIBER_KEY]


@pytest.fixture
def service(client: NanoGPTClient, store: Store, bus: EventBus, keys: Keys, clock: Clock) -> AccountService:
    return AccountService(
        client, store, bus, key_for=keys, poll_interval=300, low_balance_usd=1.0, clock=clock
    )


def set_usd(account: FakeAccount, usd: float) -> None:
    account.usd_balance = f"{usd:.8f}"


def set_usage(
    account: FakeAccount, *, weekly: float | None = None, reset_at: int = WEEK_1, mode: str | None = None
) -> None:
    payload = account.usage()
    if weekly is not None:
        payload["weeklyInputTokens"] = {
            "used": weekly * 60_000_000,
            "remaining": max(0.0, (1 - weekly) * 60_000_000),
            "percentUsed": weekly,
            "resetAt": reset_at,
        }
    if mode is not None:
        payload["routing"] = {"recommendedMode": mode, "reason": f"test says {mode}"}
    account.usage_payload = payload


def drain(queue: asyncio.Queue[Any]) -> list[tuple[str, Any]]:
    out = []
    while not queue.empty():
        event = queue.get_nowait()
        out.append((event.name, orjson.loads(event.data_json)))
    return out


def alerts(events: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    return [data for name, data in events if name == "alert"]


def keys_used(fake: FakeNanoGPT) -> list[str | None]:
    return [r.key_id for r in fake.log]


async def test_current_shape_snapshot_history_and_event(
    service: AccountService, fake: FakeNanoGPT, bus: EventBus, clock: Clock
):
    with bus.subscribe("alice", is_extension=False) as sub:
        snap = await service.get("alice")
        events = drain(sub.queue)
    assert snap.key_status == "ok"
    assert snap.key_source == "sillytavern"
    assert snap.stale is False
    assert snap.error is None
    assert snap.fetched_at == clock.now
    assert snap.balance is not None
    assert snap.balance.usd == pytest.approx(129.46956147)
    assert snap.balance.xno == pytest.approx(26.71801147)
    assert snap.subscription is not None
    assert snap.subscription.shape == "current"
    assert set(snap.subscription.buckets) == {"weekly_input_tokens", "daily_images"}
    assert [name for name, _ in events] == ["account"]
    assert events[0][1] == snap.model_dump(mode="json")
    # the cache answers the second get without going upstream
    assert await service.get("alice") == snap
    assert fake.count(BALANCE) == 1
    assert fake.count(USAGE) == 1
    history = await service.history("alice", 7)
    assert len(history) == 1
    assert history[0].usd == pytest.approx(129.46956147)
    assert history[0].quota == {
        "weekly_input_tokens": pytest.approx(0.010521466666666666),
        "daily_images": 0.0,
    }


async def test_legacy_shape(service: AccountService, keys: Keys):
    keys.set("alice", LEGACY_PLAN_KEY)
    snap = await service.get("alice")
    assert snap.subscription is not None
    assert snap.subscription.shape == "legacy"
    assert snap.subscription.buckets["daily"].percent_used == pytest.approx(0.001)
    assert snap.subscription.buckets["monthly"].used == 45
    assert (await service.history("alice", 1))[0].quota == {"daily": 0.001, "monthly": 0.00075}


async def test_payg_account_without_subscription(service: AccountService, keys: Keys):
    keys.set("alice", PAYG_KEY)
    snap = await service.get("alice")
    assert snap.key_status == "ok"
    assert snap.balance is not None
    assert snap.balance.usd == pytest.approx(9.54827636)
    assert snap.balance.xno == 0.0
    assert snap.subscription is not None
    assert snap.subscription.active is False
    assert snap.subscription.buckets == {}


async def test_no_key_makes_no_upstream_call(service: AccountService, fake: FakeNanoGPT, keys: Keys):
    keys.set("alice", None)
    snap = await service.get("alice")
    assert snap.key_status == "missing"
    assert snap.key_source == "none"
    assert snap.balance is None
    assert await service.refresh("alice") == snap
    assert fake.log == []


async def test_rejected_key_is_not_retried_until_key_changes_or_refresh(
    service: AccountService, fake: FakeNanoGPT, keys: Keys, clock: Clock
):
    keys.set("alice", INVALID_KEY)
    snap = await service.get("alice")
    assert snap.key_status == "rejected"
    assert snap.error is not None
    assert snap.error.code == "key_rejected"
    assert fake.count(BALANCE) == 1

    # polls that fall due (cache expiry, the background loop) must not send the rejected key again
    clock.advance(10_000)
    for _ in range(3):
        assert (await service.get("alice")).key_status == "rejected"
        await asyncio.sleep(0)
    run = asyncio.create_task(service.run(lambda: ["alice"]))
    await asyncio.sleep(0.05)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    await service.close()
    assert fake.count(BALANCE) == 1
    assert fake.count(USAGE) == 1

    # an explicit refresh tries again (the user may have fixed the key on NanoGPT's side)
    assert (await service.refresh("alice")).key_status == "rejected"
    assert fake.count(BALANCE) == 2

    # a different key is a new situation
    keys.set("alice", SUBSCRIBER_KEY)
    snap = await service.get("alice")
    assert snap.key_status == "ok"
    assert snap.error is None
    assert keys_used(fake)[-1] == key_id(SUBSCRIBER_KEY)


async def test_rate_limit_keeps_data_and_waits_for_retry_after(
    service: AccountService, fake: FakeNanoGPT, clock: Clock
):
    good = await service.get("alice")
    fake.faults.status(429, BALANCE, retry_after="120", times=1)
    clock.advance(301)
    limited = await service.refresh("alice")
    assert limited.stale is True
    assert limited.error is not None
    assert limited.error.code == "rate_limited"
    assert limited.balance == good.balance
    assert limited.subscription == good.subscription
    assert limited.fetched_at == good.fetched_at
    calls = len(fake.log)

    clock.advance(100)  # still inside Retry-After: not even an explicit refresh goes upstream
    assert await service.refresh("alice") == limited
    assert await service.get("alice") == limited
    assert len(fake.log) == calls

    clock.advance(21)
    fresh = await service.refresh("alice")
    assert fresh.stale is False
    assert fresh.error is None
    assert fresh.fetched_at == clock.now
    assert len(fake.log) == calls + 2


async def test_5xx_serves_last_good_data_as_stale(
    service: AccountService, fake: FakeNanoGPT, clock: Clock, bus: EventBus
):
    good = await service.get("alice")
    fake.faults.status(503, BALANCE)
    fake.faults.status(500, USAGE)
    clock.advance(301)
    with bus.subscribe("alice", is_extension=False) as sub:
        stale = await service.refresh("alice")
        events = drain(sub.queue)
    assert stale.key_status == "ok"
    assert stale.stale is True
    assert stale.error is not None
    assert stale.error.code == "upstream_unavailable"
    assert stale.balance == good.balance
    assert stale.subscription == good.subscription
    assert stale.fetched_at == good.fetched_at
    assert [name for name, _ in events] == ["account"]  # turning stale is news for the panel
    assert len(await service.history("alice", 1)) == 1

    fake.faults.clear()
    clock.advance(301)
    recovered = await service.refresh("alice")
    assert recovered.stale is False
    assert recovered.error is None


async def test_fault_without_previous_data_never_raises(service: AccountService, fake: FakeNanoGPT):
    fake.faults.invalid_json(BALANCE)
    fake.faults.reset(USAGE)
    snap = await service.get("alice")
    assert snap.key_status == "error"
    assert snap.stale is True
    assert snap.error is not None
    assert snap.error.code in {"upstream_malformed", "upstream_unavailable"}
    assert snap.balance is None
    assert snap.subscription is None
    assert await service.history("alice", 1) == []


async def test_partial_answer_keeps_new_half(service: AccountService, fake: FakeNanoGPT):
    fake.faults.truncated(USAGE)
    snap = await service.get("alice")
    assert snap.stale is True
    assert snap.error is not None
    assert snap.error.code == "upstream_malformed"
    assert snap.balance is not None  # the balance did answer
    assert snap.subscription is None
    assert await service.history("alice", 1) == []  # history only from complete polls


async def test_history_rows_only_on_change(service: AccountService, account: FakeAccount, clock: Clock):
    for _ in range(3):
        await service.refresh("alice")
        clock.advance(301)
    set_usd(account, 100.0)
    await service.refresh("alice")
    clock.advance(301)
    await service.refresh("alice")
    points = await service.history("alice", 1)
    assert [p.usd for p in points] == [pytest.approx(129.46956147), 100.0]


async def test_account_event_only_when_snapshot_changes(
    service: AccountService, account: FakeAccount, bus: EventBus, clock: Clock
):
    with bus.subscribe("alice", is_extension=False) as sub:
        await service.refresh("alice")
        clock.advance(301)
        await service.refresh("alice")  # same data, later fetched_at: no event
        set_usd(account, 42.0)
        clock.advance(301)
        await service.refresh("alice")
        events = drain(sub.queue)
    account_events = [data for name, data in events if name == "account"]
    assert len(account_events) == 2
    assert account_events[1]["balance"]["usd"] == 42.0


async def test_alerts_fire_once_per_occurrence(
    service: AccountService, account: FakeAccount, bus: EventBus, clock: Clock
):
    set_usage(account, mode="subscription")
    with bus.subscribe("alice", is_extension=False) as sub:

        async def poll() -> list[dict[str, Any]]:
            clock.advance(301)
            await service.refresh("alice")
            return alerts(drain(sub.queue))

        assert await poll() == []  # first sight of the routing mode is not a change

        set_usd(account, 0.5)
        low = await poll()
        assert [(a["kind"], a["level"]) for a in low] == [("low_balance", "warning")]
        assert "$0.50" in low[0]["message"]
        set_usd(account, 0.4)
        assert await poll() == []  # still the same occurrence
        set_usd(account, 5.0)
        assert await poll() == []
        set_usd(account, 0.3)
        again = await poll()
        assert [a["kind"] for a in again] == ["low_balance"]
        assert again[0]["id"] != low[0]["id"]
        set_usd(account, 50.0)
        assert await poll() == []

        set_usage(account, weekly=0.85)
        warn = await poll()
        assert [(a["kind"], a["level"]) for a in warn] == [("quota_80", "warning")]
        assert "Weekly input-token" in warn[0]["message"]
        assert "85%" in warn[0]["message"]
        set_usage(account, weekly=0.95)
        assert await poll() == []
        set_usage(account, weekly=1.0)
        full = await poll()
        assert [(a["kind"], a["level"]) for a in full] == [("quota_100", "error")]
        set_usage(account, weekly=1.3)
        assert await poll() == []

        # a new weekly window may alert again; jumping straight to 100 % gives one alert, not two
        set_usage(account, weekly=1.0, reset_at=WEEK_2)
        new_window = await poll()
        assert [a["kind"] for a in new_window] == ["quota_100"]
        set_usage(account, weekly=0.9, reset_at=WEEK_3)
        assert [a["kind"] for a in await poll()] == ["quota_80"]

        set_usage(account, mode="paygo")
        flip = await poll()
        assert [(a["kind"], a["level"]) for a in flip] == [("routing_changed", "warning")]
        assert "paygo" in flip[0]["message"]
        assert "subscription" in flip[0]["message"]
        assert await poll() == []
        set_usage(account, mode="subscription")
        back = await poll()
        assert [(a["kind"], a["level"]) for a in back] == [("routing_changed", "info")]

    fired = low + again + warn + full + new_window + flip + back
    ids = [a["id"] for a in fired]
    assert len(set(ids)) == len(ids)
    for alert in fired:
        assert set(alert) == {"id", "kind", "level", "message", "created_at"}


async def test_single_flight_concurrent_refreshes_share_one_poll(service: AccountService, fake: FakeNanoGPT):
    fake.latency = 0.05
    results = await asyncio.gather(*(service.refresh("alice") for _ in range(25)))
    assert fake.count(BALANCE) == 1
    assert fake.count(USAGE) == 1
    assert all(r == results[0] for r in results)
    assert results[0].key_status == "ok"


async def test_cancelled_caller_does_not_cancel_shared_poll(service: AccountService, fake: FakeNanoGPT):
    fake.latency = 0.05
    impatient = asyncio.create_task(service.refresh("alice"))
    patient = asyncio.create_task(service.refresh("alice"))
    await asyncio.sleep(0.01)
    impatient.cancel()
    snap = await patient
    assert snap.key_status == "ok"
    assert fake.count(BALANCE) == 1


async def test_due_cache_is_served_then_revalidated_in_background(
    service: AccountService, fake: FakeNanoGPT, account: FakeAccount, clock: Clock
):
    first = await service.get("alice")
    set_usd(account, 77.0)
    clock.advance(301)
    served = await service.get("alice")  # due: served from cache at once, poll started behind it
    assert served == first
    for _ in range(200):
        cached = service.cached("alice")
        if cached is not None and cached != first:
            break
        await asyncio.sleep(0.01)
    cached = service.cached("alice")
    assert cached is not None
    assert cached.balance is not None
    assert cached.balance.usd == 77.0
    assert fake.count(BALANCE) == 2


async def test_run_polls_every_user_until_cancelled(
    client: NanoGPTClient, store: Store, bus: EventBus, keys: Keys, fake: FakeNanoGPT
):
    keys.set("bob", PAYG_KEY)
    service = AccountService(client, store, bus, key_for=keys, poll_interval=0.02)
    task = asyncio.create_task(service.run(lambda: ["alice", "bob"]))
    alice, bob = key_id(SUBSCRIBER_KEY), key_id(PAYG_KEY)
    for _ in range(300):
        used = keys_used(fake)
        if used.count(alice) >= 4 and used.count(bob) >= 4:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await service.close()
    used = keys_used(fake)
    assert used.count(alice) >= 4
    assert used.count(bob) >= 4
    settled = len(fake.log)
    await asyncio.sleep(0.06)
    assert len(fake.log) == settled  # nothing keeps polling after cancellation


async def test_users_are_isolated(service: AccountService, keys: Keys, bus: EventBus):
    keys.set("bob", PAYG_KEY)
    with bus.subscribe("bob", is_extension=False) as bob_stream:
        alice = await service.get("alice")
        bob_events = drain(bob_stream.queue)
    assert bob_events == []  # alice's poll says nothing on bob's stream
    bob = await service.get("bob")
    assert alice.balance != bob.balance
    assert len(await service.history("bob", 1)) == 1
    assert (await service.history("alice", 1))[0].usd != (await service.history("bob", 1))[0].usd


async def test_key_never_appears_in_logs_events_or_snapshots(
    service: AccountService, fake: FakeNanoGPT, bus: EventBus, clock: Clock, keys: Keys, caplog
):
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    with bus.subscribe("alice", is_extension=False) as sub:
        await service.get("alice")
        # 500 twice: the client's one retry must also fail for the service to see the fault
        fake.faults.status(500, BALANCE, times=2)
        clock.advance(400)
        seen.append((await service.refresh("alice")).model_dump_json())
        fake.faults.status(429, BALANCE, retry_after="1", times=1)
        clock.advance(400)
        seen.append((await service.refresh("alice")).model_dump_json())
        keys.set("alice", INVALID_KEY)
        clock.advance(400)
        seen.append((await service.get("alice")).model_dump_json())
        seen.extend(orjson.dumps(data).decode() for _, data in drain(sub.queue))
    text = "\n".join([*seen, caplog.text])
    # the scenario really went through every failure
    assert "upstream_unavailable" in text
    assert "rate_limited" in text
    assert '"key_status":"rejected"' in text
    for secret in (SUBSCRIBER_KEY, INVALID_KEY):
        assert secret not in text
        assert secret.removeprefix("sk-nano-") not in text


async def test_explicit_refresh_is_not_swallowed_by_routine_poll_in_flight(
    service: AccountService, fake: FakeNanoGPT, keys: Keys, clock: Clock
):
    keys.set("alice", INVALID_KEY)
    assert (await service.get("alice")).key_status == "rejected"
    clock.advance(301)
    await service.get("alice")  # due: starts a routine background poll, which skips the rejected key
    await service.refresh("alice")  # issued while that poll is still in flight
    assert fake.count(BALANCE) == 2


async def test_run_survives_a_failing_round(
    client: NanoGPTClient, store: Store, bus: EventBus, keys: Keys, fake: FakeNanoGPT, caplog
):
    rounds = 0

    def users() -> list[str]:
        nonlocal rounds
        rounds += 1
        if rounds == 1:
            raise RuntimeError("user directory unreadable")
        return ["alice"]

    service = AccountService(client, store, bus, key_for=keys, poll_interval=0.02)
    task = asyncio.create_task(service.run(users))
    for _ in range(300):
        if fake.count(BALANCE):
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await service.close()
    assert fake.count(BALANCE) >= 1
    assert "account poll round failed" in caplog.text


async def test_refresh_is_rate_limited_but_never_blocks_a_new_key(
    service: AccountService, fake: FakeNanoGPT, keys: Keys, clock: Clock
):
    await service.refresh("alice")
    for _ in range(4):
        clock.advance(2)
        await service.refresh("alice")
    assert fake.count(BALANCE) == 1  # presses inside MIN_REFRESH_INTERVAL reach nobody
    assert service.next_refresh_at("alice") == pytest.approx(clock.now - 8 + MIN_REFRESH_INTERVAL)
    keys.set("alice", PAYG_KEY)  # a different key is polled at once, whatever the interval
    assert (await service.refresh("alice")).balance.usd == pytest.approx(9.54827636)  # type: ignore[union-attr]
    clock.advance(MIN_REFRESH_INTERVAL)
    await service.refresh("alice")
    assert fake.count(BALANCE) == 3
    assert service.next_refresh_at("alice") is not None


async def test_a_rejected_key_replaced_in_st_recovers_by_itself(
    service: AccountService, fake: FakeNanoGPT, keys: Keys, clock: Clock
):
    keys.set("alice", INVALID_KEY)
    rejected = await service.get("alice")
    assert rejected.key_status == "rejected" and rejected.checked_at == clock.now
    run = asyncio.create_task(service.run(lambda: ["alice"]))
    try:
        keys.set("alice", SUBSCRIBER_KEY)  # the user pastes a working key into ST
        for _ in range(500):
            if (snap := service.cached("alice")) is not None and snap.key_status == "ok":
                break
            await asyncio.sleep(0.01)
    finally:
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        await service.close()
    assert service.cached("alice").key_status == "ok"  # type: ignore[union-attr]
    assert keys_used(fake) == [key_id(INVALID_KEY)] * 2 + [key_id(SUBSCRIBER_KEY)] * 2


async def test_quota_at_85_percent_alerts_at_80_once_and_is_kept_for_a_tab(
    service: AccountService, account: FakeAccount, store: Store, bus: EventBus, clock: Clock
):
    set_usage(account, weekly=0.85)
    await service.get("alice")  # no tab is open: nobody receives the event
    unseen = await service.unseen_alerts("alice")
    assert [(a["kind"], a["level"]) for a in unseen] == [("quota_80", "warning")]
    assert "85% used" in unseen[0]["message"]
    with bus.subscribe("alice", is_extension=True) as sub:
        clock.advance(301)
        await service.refresh("alice")  # same window: the alert is not sent again
        assert alerts(drain(sub.queue)) == []
    assert await service.mark_alerts_seen("alice", [unseen[0]["id"]]) == 1
    assert await service.unseen_alerts("alice") == []


async def test_low_balance_is_on_the_snapshot(service: AccountService, account: FakeAccount):
    set_usd(account, 0.5)
    snap = await service.get("alice")
    assert snap.low_balance is True and snap.low_balance_usd == 1.0
