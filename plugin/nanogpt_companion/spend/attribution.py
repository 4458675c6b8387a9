"""Turn two readings of a key's account into what each generation in between cost. Pure: no I/O, no clock.

Between two readings the balance (and, for subscribers, the quota counter) moved by some amount; the
generations ST reported in that interval are the candidates. What can honestly be said:

- one candidate and a change: the change is its cost, measured;
- several candidates (overlapping generations, several tabs, several ST users on one key): the change is
  split in proportion to their price estimates (equally when an estimate is missing), each part marked
  ``approximate`` with ``shared_with`` = how many shared it; never a precision the readings do not have;
- a change and no candidate: another client used the key (or a generation was not reported): an
  ``outside`` entry, so it is not silently lost nor pinned on a chat;
- no change yet: NanoGPT may book a request a little later (and caches usage counters for a while), so a
  candidate waits for a few more readings before it is settled as unmeasured (its estimate stands), or as
  a measured 0 when its estimate is 0 (a free model);
- a change that cannot be a cost (the balance went up: a top-up or refund; the quota window reset): the
  candidates are settled as unmeasured with that reason.

A candidate expected on the quota may be billed to the balance instead (NanoGPT routing a subscriber to
pay-as-you-go) and vice versa: when only the other counter moved, it is attributed there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from nanogpt_companion.spend.records import Channel, QuotaUnit, Reading, SpendRow

USD_EPSILON = 5e-9  # NanoGPT's balance has 8 decimals
QUOTA_EPSILON = 0.5

Change = Literal["spent", "none", "rose", "reset", "unknown"]


@dataclass(frozen=True, slots=True)
class Outside:
    """A change between two readings that no reported generation explains."""

    channel: Channel
    amount: float
    unit: QuotaUnit | None = None


@dataclass(frozen=True, slots=True)
class Attribution:
    settled: list[SpendRow] = field(default_factory=list)  # rows this reading changed
    outside: list[Outside] = field(default_factory=list)


def usd_change(previous: Reading, reading: Reading) -> tuple[Change, float]:
    if previous.usd is None or reading.usd is None:
        return "unknown", 0.0
    spent = round(previous.usd - reading.usd, 9)
    if spent > USD_EPSILON:
        return "spent", spent
    if spent < -USD_EPSILON:
        return "rose", -spent
    return "none", 0.0


def quota_change(previous: Reading, reading: Reading) -> tuple[Change, float]:
    if previous.used is None or reading.used is None or previous.bucket != reading.bucket:
        return "unknown", 0.0
    if previous.reset_at != reading.reset_at or reading.used < previous.used - QUOTA_EPSILON:
        return "reset", 0.0
    used = reading.used - previous.used
    if used > QUOTA_EPSILON:
        return "spent", used
    return "none", 0.0


def attribute(
    previous: Reading | None,
    reading: Reading,
    pending: Sequence[SpendRow],
    *,
    interval: int,
    settle: float,
    max_attempts: int,
    answered_at: float | None = None,
) -> Attribution:
    """What ``reading`` (compared with ``previous``) says about the ``pending`` rows of this key.

    Candidates are the rows reported before the reading's answer came back (``answered_at``, default its
    start): NanoGPT may have booked a generation that ended while the request was on its way. A candidate
    younger than ``settle`` seconds does not count a reading without change against it (NanoGPT may not
    have booked it yet).
    """
    if previous is None:
        return Attribution()  # the first reading is a baseline: nothing to compare with
    cutoff = reading.ts if answered_at is None else max(reading.ts, answered_at)
    candidates = [r for r in pending if r.status == "pending" and r.ts <= cutoff]
    changes: dict[Channel, tuple[Change, float]] = {
        "usd": usd_change(previous, reading),
        "quota": quota_change(previous, reading),
    }
    settled: dict[int, SpendRow] = {}
    outside: list[Outside] = []
    for channel in ("usd", "quota"):
        kind, amount = changes[channel]
        if kind != "spent":
            continue
        open_rows = [r for r in candidates if r.id not in settled]
        targets = [r for r in open_rows if r.channel == channel]
        other: Channel = "quota" if channel == "usd" else "usd"
        if not targets and changes[other][0] != "spent":
            # Only this counter moved: the other channel's candidates were billed here instead.
            targets = open_rows
        unit = reading.unit if channel == "quota" else None
        if not targets:
            outside.append(Outside(channel, amount, unit))
            continue
        for row, part in zip(targets, _split(targets, channel, amount), strict=True):
            switched = row.channel != channel
            settled[row.id] = row.settled(
                status="measured",
                channel=channel,
                measured_usd=part if channel == "usd" else row.measured_usd,
                measured_quota=part if channel == "quota" else row.measured_quota,
                quota_unit=unit if channel == "quota" else row.quota_unit,
                approximate=len(targets) > 1,
                shared_with=len(targets),
                interval=interval,
                note=_switched_note(channel) if switched else None,
            )
    for row in candidates:
        if row.id in settled:
            continue
        kind, _ = changes[row.channel]
        result = _unchanged(row, kind, reading, interval=interval, settle=settle, max_attempts=max_attempts)
        if result is not None:
            settled[row.id] = result
    return Attribution(settled=list(settled.values()), outside=outside)


def _unchanged(
    row: SpendRow, kind: Change, reading: Reading, *, interval: int, settle: float, max_attempts: int
) -> SpendRow | None:
    """A candidate whose counter did not move (or moved in a way that is not a cost)."""
    if kind == "rose":
        return row.settled(
            status="unmeasured",
            interval=interval,
            note="The balance went up meanwhile (a top-up or refund?), so this cost cannot be measured.",
        )
    if kind == "reset":
        return row.settled(
            status="unmeasured",
            interval=interval,
            note="The quota window reset meanwhile, so this use cannot be measured.",
        )
    estimate = row.estimate.usd if row.channel == "usd" else row.estimate.quota
    if kind == "none" and estimate == 0:
        # Free by the price list and nothing moved: a measurement of 0, not a guess.
        return row.settled(
            status="measured",
            measured_usd=0.0 if row.channel == "usd" else row.measured_usd,
            measured_quota=0.0 if row.channel == "quota" else row.measured_quota,
            quota_unit=reading.unit if row.channel == "quota" else row.quota_unit,
            shared_with=1,
            interval=interval,
        )
    if reading.ts - row.ts < settle:
        return None  # too young to hold a reading without change against it
    attempts = row.attempts + 1
    if attempts < max_attempts:
        return row.settled(attempts=attempts)
    what = "balance" if row.channel == "usd" else "quota counter"
    reason = (
        f"NanoGPT's {what} did not change after this generation."
        if kind == "none"
        else f"NanoGPT did not report the {what}."
    )
    return row.settled(status="unmeasured", attempts=attempts, interval=interval, note=reason)


def _switched_note(channel: Channel) -> str:
    if channel == "usd":
        return "Billed to the balance, not the subscription (NanoGPT's routing or the model's coverage)."
    return "Counted on the subscription, not billed to the balance."


def _split(rows: Sequence[SpendRow], channel: Channel, amount: float) -> list[float]:
    """``amount`` in proportion to the rows' estimates (equal parts if any is missing); parts add up to
    ``amount`` exactly (the last part takes the rounding)."""
    if len(rows) == 1:
        return [amount]
    weights = [r.estimate.usd if channel == "usd" else r.estimate.quota for r in rows]
    if any(w is None or w <= 0 for w in weights):
        weights = [1.0] * len(rows)
    total = sum(w for w in weights if w is not None)
    parts = [round(amount * (w or 0.0) / total, 10) for w in weights[:-1]]
    parts.append(round(amount - sum(parts), 10))
    return parts
