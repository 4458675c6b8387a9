"""Attribution of a change between two readings to the generations reported in between (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nanogpt_companion.spend.attribution import attribute
from tests.spend.helpers import reading, row

SETTLE = 3.0


def run(previous, current, pending, *, max_attempts: int = 2):
    return attribute(previous, current, pending, interval=7, settle=SETTLE, max_attempts=max_attempts)


def test_first_reading_is_only_a_baseline() -> None:
    result = run(None, reading(110, usd=9.0), [row(ts=100)])
    assert result.settled == [] and result.outside == []


def test_one_generation_gets_the_whole_change_exactly() -> None:
    gen = row(ts=100, usd=0.011)
    result = run(reading(90, usd=10.0), reading(110, usd=9.987), [gen])
    (settled,) = result.settled
    assert settled.status == "measured"
    assert settled.measured_usd == pytest.approx(0.013)
    assert not settled.approximate and settled.shared_with == 1 and settled.interval == 7
    assert result.outside == []


def test_overlapping_generations_share_the_change_by_estimate() -> None:
    a, b = row(ts=100, usd=0.03), row(ts=101, usd=0.01)
    result = run(reading(90, usd=10.0), reading(110, usd=9.92), [a, b])
    by_id = {r.id: r for r in result.settled}
    assert by_id[a.id].measured_usd == pytest.approx(0.06)
    assert by_id[b.id].measured_usd == pytest.approx(0.02)
    assert all(r.approximate and r.shared_with == 2 for r in by_id.values())
    assert sum(r.measured_usd or 0 for r in by_id.values()) == pytest.approx(0.08, abs=1e-12)


def test_missing_estimate_means_equal_parts() -> None:
    a, b, c = row(ts=100, usd=0.03), row(ts=100, usd=None), row(ts=100, usd=0.01)
    result = run(reading(90, usd=1.0), reading(110, usd=0.97), [a, b, c])
    assert [r.measured_usd for r in result.settled] == pytest.approx([0.01, 0.01, 0.01])


def test_change_without_generation_is_outside() -> None:
    result = run(reading(90, usd=10.0), reading(110, usd=9.5), [])
    assert result.settled == []
    ((channel, amount),) = [(o.channel, o.amount) for o in result.outside]
    assert channel == "usd" and amount == pytest.approx(0.5)


def test_generation_reported_after_the_reading_waits_for_the_next() -> None:
    late = row(ts=120)
    result = run(reading(90, usd=10.0), reading(110, usd=9.9), [late])
    assert result.settled == []
    assert [o.amount for o in result.outside] == pytest.approx([0.1])


def test_no_change_yet_waits_then_settles_unmeasured() -> None:
    gen = row(ts=100, usd=0.02)
    young = run(reading(90), reading(101), [gen])
    assert young.settled == []  # reported a second ago: NanoGPT may not have booked it
    first = run(reading(90), reading(110), [gen])
    (waiting,) = first.settled
    assert waiting.status == "pending" and waiting.attempts == 1
    second = run(reading(110), reading(130), [waiting])
    (given_up,) = second.settled
    assert given_up.status == "unmeasured" and given_up.attempts == 2
    assert "did not change" in (given_up.note or "")
    assert given_up.usd == 0.02  # the estimate stands


def test_late_booking_is_measured_on_a_later_reading() -> None:
    gen = row(ts=100, usd=0.02)
    (waiting,) = run(reading(90, usd=5.0), reading(110, usd=5.0), [gen]).settled
    (measured,) = run(reading(110, usd=5.0), reading(130, usd=4.97), [waiting]).settled
    assert measured.status == "measured" and measured.measured_usd == pytest.approx(0.03)


def test_free_model_without_change_is_a_measured_zero() -> None:
    (free,) = run(reading(90), reading(91), [row(ts=90.5, usd=0.0)]).settled
    assert free.status == "measured" and free.measured_usd == 0.0


def test_top_up_makes_the_interval_unmeasurable() -> None:
    (gen,) = run(reading(90, usd=1.0), reading(110, usd=21.0), [row(ts=100)]).settled
    assert gen.status == "unmeasured" and "went up" in (gen.note or "")


def test_subscriber_quota_is_measured_in_tokens() -> None:
    gen = row(ts=100, channel="quota", usd=0.004, quota=1200)
    result = run(reading(90, usd=10.0, used=5000), reading(110, usd=10.0, used=6200), [gen])
    (settled,) = result.settled
    assert settled.measured_quota == 1200 and settled.quota_unit == "tokens"
    assert settled.measured_usd is None and settled.usd == 0.0 and settled.quota == 1200


def test_quota_window_reset_is_unmeasurable() -> None:
    gen = row(ts=100, channel="quota", quota=100)
    (settled,) = run(reading(90, used=5000, reset_at=1), reading(110, used=200, reset_at=2), [gen]).settled
    assert settled.status == "unmeasured" and "reset" in (settled.note or "")


def test_subscription_generation_billed_to_the_balance_moves_there() -> None:
    """NanoGPT routed a subscriber's request to pay-as-you-go: only the balance moved."""
    gen = row(ts=100, channel="quota", usd=0.02, quota=800)
    (settled,) = run(reading(90, usd=3.0, used=100), reading(110, usd=2.98, used=100), [gen]).settled
    assert settled.channel == "usd" and settled.measured_usd == pytest.approx(0.02)
    assert "Billed to the balance" in (settled.note or "")


def test_both_counters_move_each_to_its_own_generations() -> None:
    paid = row(ts=100, channel="usd", usd=0.05)
    sub = row(ts=101, channel="quota", quota=500)
    result = run(reading(90, usd=3.0, used=100), reading(110, usd=2.95, used=600), [paid, sub])
    by_id = {r.id: r for r in result.settled}
    assert by_id[paid.id].measured_usd == pytest.approx(0.05) and not by_id[paid.id].approximate
    assert by_id[sub.id].measured_quota == 500 and not by_id[sub.id].approximate
    assert result.outside == []


def test_balance_change_beside_a_quota_change_is_outside() -> None:
    sub = row(ts=100, channel="quota", quota=500)
    result = run(reading(90, usd=3.0, used=100), reading(110, usd=2.5, used=600), [sub])
    assert [r.measured_quota for r in result.settled] == [500]
    assert [(o.channel, round(o.amount, 6)) for o in result.outside] == [("usd", 0.5)]


@given(
    amount=st.decimals(min_value="0.00000001", max_value="50", places=8),
    estimates=st.lists(st.one_of(st.none(), st.floats(0.0, 10.0)), min_size=1, max_size=12),
)
def test_split_parts_always_add_up(amount, estimates) -> None:
    rows = [row(ts=100, usd=e) for e in estimates]
    result = run(reading(90, usd=100.0), reading(110, usd=float(100 - amount)), rows)
    parts = [r.measured_usd for r in result.settled]
    assert len(parts) == len(rows)
    assert all(p is not None and p >= -1e-9 for p in parts)
    assert sum(p or 0 for p in parts) == pytest.approx(float(amount), abs=1e-8)
    assert all(r.approximate == (len(rows) > 1) and r.shared_with == len(rows) for r in result.settled)


def test_generation_reported_while_the_poll_was_on_its_way_is_a_candidate() -> None:
    """The poll went out at 110 and came back at 111.5; a generation reported at 111 may be in its answer."""
    early, during = row(ts=100, usd=0.02), row(ts=111, usd=0.02)
    result = attribute(
        reading(90, usd=1.0),
        reading(110, usd=0.96),
        [early, during],
        interval=7,
        settle=SETTLE,
        max_attempts=2,
        answered_at=111.5,
    )
    assert [(r.id, r.approximate, r.shared_with) for r in result.settled] == [
        (early.id, True, 2),
        (during.id, True, 2),
    ]
    assert result.outside == []
