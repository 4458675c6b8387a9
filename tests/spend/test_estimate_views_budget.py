"""Price estimates, the expected counter, totals and per-day views in the user's zone, budgets, CSV (pure)."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from nanogpt_companion.domain import (
    AccountSnapshot,
    CatalogEntry,
    Pricing,
    SubscriptionCoverage,
    SubscriptionState,
    Tier,
)
from nanogpt_companion.spend import budget, views
from nanogpt_companion.spend.estimate import estimate, expected_channel
from nanogpt_companion.spend.export import COLUMNS, to_csv
from nanogpt_companion.spend.records import Generation, SpendRow, SpendSettings
from tests.spend.helpers import row


def entry(prompt=2.0, completion=8.0, per_request=None, included=None, multiplier=None) -> CatalogEntry:
    return CatalogEntry(
        id="v/m",
        name="M",
        vendor="v",
        tiers=[Tier.SUBSCRIPTION] if included else [Tier.PAID],
        pricing=Pricing(prompt=prompt, completion=completion, per_request=per_request),
        subscription=SubscriptionCoverage(included=included, input_multiplier=multiplier),
    )


def gen(prompt=1000, completion=500, **extra) -> Generation:
    return Generation(
        client_id="abcdefgh",
        model="v/m",
        source="nanogpt",
        prompt_tokens=prompt,
        completion_tokens=completion,
        **extra,
    )


def test_estimate_from_per_million_prices() -> None:
    e = estimate(entry(), gen())
    assert e.usd == pytest.approx(1000 * 2 / 1e6 + 500 * 8 / 1e6)
    assert e.quota is None and not e.per_request


def test_estimate_per_request_model() -> None:
    e = estimate(entry(prompt=None, completion=None, per_request=0.04), gen())
    assert e.usd is None  # a token price is unknown: the sum is unknown, not the request price alone
    e = estimate(entry(prompt=0.0, completion=0.0, per_request=0.04), gen())
    assert e.usd == pytest.approx(0.04) and e.per_request
    e = estimate(entry(prompt=1.0, completion=1.0, per_request=0.01), gen(prompt=0, completion=0))
    assert e.usd == pytest.approx(0.01)


def test_estimate_unknowns_stay_unknown() -> None:
    assert estimate(None, gen()).usd is None
    assert estimate(entry(), gen(prompt=None)).usd is None
    assert estimate(entry(completion=None), gen(completion=0)).usd == pytest.approx(0.002)


def test_quota_estimate_uses_the_multiplier() -> None:
    assert estimate(entry(included=True, multiplier=2), gen()).quota == 2000
    assert estimate(entry(included=True), gen()).quota == 1000
    assert estimate(entry(included=False), gen()).quota is None


def account(active=True, mode=None) -> AccountSnapshot:
    return AccountSnapshot(
        key_status="ok", subscription=SubscriptionState(active=active, recommended_mode=mode)
    )


@pytest.mark.parametrize(
    ("included", "snapshot", "extra", "channel"),
    [
        (True, account(), {}, "quota"),
        (True, account(), {"endpoint": "paid"}, "usd"),
        (True, account(), {"billing": "paygo"}, "usd"),
        (True, account(mode="paygo"), {}, "usd"),
        (True, account(active=False), {}, "usd"),
        (True, None, {}, "usd"),
        (False, account(), {}, "usd"),
        (True, account(), {"endpoint": "subscription"}, "quota"),
    ],
)
def test_expected_channel(included, snapshot, extra, channel) -> None:
    assert expected_channel(entry(included=included), gen(**extra), snapshot) == channel


BERLIN = ZoneInfo("Europe/Berlin")


def at(tz: ZoneInfo, *args: int) -> float:
    return datetime(*args, tzinfo=tz).timestamp()


def test_totals_tell_measured_from_estimated_and_outside() -> None:
    rows = [
        row(usd=0.5, status="measured", measured_usd=0.4),
        row(usd=0.3),  # pending: its estimate counts, flagged
        row(channel="quota", quota=900, status="measured", measured_quota=1000, quota_unit="tokens"),
        row(status="measured", measured_usd=0.1, approximate=True, shared_with=2),
    ]
    t = views.totals(rows)
    assert t.usd == pytest.approx(0.8) and t.measured_usd == pytest.approx(0.5)
    assert t.estimated_usd == pytest.approx(0.3) and t.quota == 1000
    assert t.pending == 1 and t.generations == 4 and t.approximate


def test_days_follow_the_users_zone_across_dst() -> None:
    # 2026-03-29: Berlin moves from +01:00 to +02:00. 23:30 UTC on the 28th is already the 29th there.
    rows = [
        row(ts=at(ZoneInfo("UTC"), 2026, 3, 28, 23, 30), status="measured", measured_usd=1.0, model="a"),
        row(ts=at(BERLIN, 2026, 3, 29, 23, 59), status="measured", measured_usd=2.0, model="b"),
        row(ts=at(BERLIN, 2026, 3, 30, 0, 0), status="measured", measured_usd=4.0, model="a"),
    ]
    now = at(BERLIN, 2026, 3, 30, 12, 0)
    series = views.daily(rows, BERLIN, now, days=3)
    assert [d["date"] for d in series["days"]] == ["2026-03-28", "2026-03-29", "2026-03-30"]
    assert [d["usd"] for d in series["days"]] == [0, 3.0, 4.0]
    assert series["days"][1]["usd_by_model"] == {"a": 1.0, "b": 2.0}
    assert series["models"] == ["a", "b"]
    assert views.day_start(BERLIN, now) == at(BERLIN, 2026, 3, 30)
    assert views.month_start(BERLIN, now) == at(BERLIN, 2026, 3, 1)


def test_daily_folds_small_models_into_other_and_keeps_outside_apart() -> None:
    now = at(BERLIN, 2026, 5, 2, 12)
    rows = [row(ts=now - i, status="measured", measured_usd=float(i), model=f"m{i}") for i in range(1, 9)]
    outside = row(ts=now, status="measured", measured_usd=0.5).settled(
        generation=Generation(client_id="outside:1:usd", model="", source="outside")
    )
    series = views.daily([*rows, outside], BERLIN, now, days=1, top_models=3)
    assert series["models"] == ["m8", "m7", "m6", "other", views.OUTSIDE_LABEL]
    assert series["days"][0]["usd_by_model"]["other"] == pytest.approx(15.0)
    assert series["days"][0]["usd"] == pytest.approx(36.5)


def chat_row(chat: str, usd: float, client_id: str, **generation: Any) -> SpendRow:
    """A measured generation in ``chat`` (model "m", ST's NanoGPT source) with these other report fields."""
    return row(chat=chat, status="measured", measured_usd=usd).settled(
        generation=Generation(client_id=client_id, model="m", source="nanogpt", chat_id=chat, **generation)
    )


def test_top_chats_characters_and_models() -> None:
    rows = [
        chat_row("c1", 1.0, "x1", character="Ann", character_id="a.png"),
        chat_row("c2", 3.0, "x2", group_id="g1", group_name="Party"),
    ]
    chats = views.top(rows, "chat")
    assert [c["key"] for c in chats] == ["c2", "c1"] and chats[0]["label"] == "Party: c2"
    assert [c["label"] for c in views.top(rows, "character")] == ["Party", "Ann"]
    # A reply in the group names the member who wrote it: it counts for that character, in the chat's group.
    by_member = chat_row(
        "c2", 2.5, "x3", character="Ann", character_id="a.png", group_id="g1", group_name="Party"
    )
    characters = views.top([*rows, by_member], "character")
    assert [(c["label"], c["usd"]) for c in characters] == [("Ann", pytest.approx(3.5)), ("Party", 3.0)]
    chats = views.top([*rows, by_member], "chat")
    assert [(c["label"], c["usd"]) for c in chats] == [("Party: c2", pytest.approx(5.5)), ("Ann: c1", 1.0)]
    assert views.top(rows, "model")[0]["usd"] == pytest.approx(4.0)


def test_a_group_chat_named_by_its_start_time_is_shown_as_that_local_time() -> None:
    chat = str(int(at(BERLIN, 2026, 5, 2, 21, 7) * 1000))  # what ST names a new group chat
    rows = [
        chat_row(chat, 1.0, "x1", group_id="g1", group_name="Party"),
        chat_row("Tavern night", 0.5, "x2", group_id="g1", group_name="Party"),  # renamed by the user
    ]
    labels = [c["label"] for c in views.top(rows, "chat", tz=BERLIN)]
    assert labels == ["Party: 2026-05-02 21:07", "Party: Tavern night"]
    assert views.top(rows, "chat")[0]["label"] == f"Party: {chat}"  # no zone given: the id as it is


def test_budget_warns_at_80_then_alerts_at_100_once_per_day() -> None:
    settings = SpendSettings(daily_budget_usd=5.0, monthly_budget_usd=50.0)
    day, month = budget.states(settings, 4.1, False, 4.1, False)
    alert, shown = budget.alerts(day, date(2026, 5, 2))
    assert alert is not None and alert.kind == "budget_80" and shown == []
    assert alert.id == "budget_daily_80:2026-05-02:5" and "$4.10 of your $5.00 daily" in alert.message
    assert budget.alerts(month, date(2026, 5, 2)) == (None, [])
    day, _ = budget.states(settings, 6.0, True, 6.0, True)
    alert, shown = budget.alerts(day, date(2026, 5, 2))
    assert alert is not None and alert.kind == "budget_100" and alert.level == "error"
    assert shown == ["budget_daily_80:2026-05-02:5"] and "about $6.00" in alert.message
    _, month = budget.states(SpendSettings(monthly_budget_usd=5.0), 0, False, 5.0, False)
    alert, _ = budget.alerts(month, date(2026, 5, 2))
    assert alert is not None and alert.id == "budget_monthly_100:2026-05:5"


def test_csv_has_every_row_and_defuses_formulas() -> None:
    rows = [
        row(ts=at(BERLIN, 2026, 5, 2, 10), status="measured", measured_usd=0.0123).settled(
            generation=Generation(
                client_id="x1", model="m", source="nanogpt", chat_id="=HYPERLINK(1)", character="@me"
            )
        ),
        row(ts=at(BERLIN, 2026, 5, 2, 11), usd=None),
    ]
    text = to_csv(rows, BERLIN)
    parsed = list(csv.DictReader(io.StringIO(text)))
    assert list(parsed[0]) == list(COLUMNS)
    assert parsed[0]["time"] == "2026-05-02T10:00:00+02:00"
    assert parsed[0]["chat_id"] == "'=HYPERLINK(1)" and parsed[0]["character"] == "'@me"
    assert parsed[0]["usd"] == "0.0123" and parsed[0]["status"] == "measured"
    assert parsed[1]["estimate_usd"] == "" and parsed[1]["status"] == "pending"
