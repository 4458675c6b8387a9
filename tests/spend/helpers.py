"""Builders for ledger rows and readings in the pure spend tests."""

from __future__ import annotations

import itertools
from typing import Any

from nanogpt_companion.spend.records import Channel, Estimate, Generation, Reading, SpendRow

_ids = itertools.count(1)


def row(
    *,
    ts: float = 100.0,
    channel: Channel = "usd",
    usd: float | None = 0.01,
    quota: float | None = None,
    user: str = "alice",
    chat: str | None = "chat-1",
    model: str = "vendor/model",
    **changes: Any,
) -> SpendRow:
    n = next(_ids)
    generation = Generation(client_id=f"gen-{n:06d}", model=model, source="nanogpt", chat_id=chat)
    base = SpendRow(
        id=n,
        user=user,
        key_fingerprint="kfp",
        ts=ts,
        generation=generation,
        channel=channel,
        estimate=Estimate(usd=usd, quota=quota),
    )
    return base.settled(**changes) if changes else base


def reading(
    ts: float,
    usd: float | None = 10.0,
    used: float | None = None,
    *,
    reset_at: int | None = 1_000,
    bucket: str | None = "weekly_input_tokens",
) -> Reading:
    return Reading(
        ts=ts,
        usd=usd,
        bucket=bucket if used is not None else None,
        used=used,
        reset_at=reset_at if used is not None else None,
        unit="tokens" if used is not None else None,
        subscribed=used is not None,
    )
