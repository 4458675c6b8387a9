"""Totals, the per-day series and the top lists the drawer and the CLI show. Pure: rows in, JSON out.

"Today" and "this month" are the user's local calendar (the browser's time zone, kept in the user's spend
settings), so a budget resets at the user's midnight, not the server's. A total says how much of it is
estimated (generations not measured yet, or never measurable) and whether any part was split from a
shared change (``approximate``): the numbers never look more precise than they are.
"""

from __future__ import annotations

import bisect
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from nanogpt_companion.spend import budget
from nanogpt_companion.spend.records import SpendRow, SpendSettings

log = logging.getLogger(__name__)

OUTSIDE_LABEL = "Outside SillyTavern"
OTHER_MODELS = "other"
TopBy = Literal["chat", "character", "model"]


def zone(name: str | None) -> ZoneInfo:
    """The IANA zone, or UTC when the name is unknown here (an old tz database, a typo)."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        log.debug("unknown time zone %r; using UTC", name)
        return ZoneInfo("UTC")


def day_start(tz: ZoneInfo, ts: float) -> float:
    local = datetime.fromtimestamp(ts, tz)
    return datetime(local.year, local.month, local.day, tzinfo=tz).timestamp()


def month_start(tz: ZoneInfo, ts: float) -> float:
    local = datetime.fromtimestamp(ts, tz)
    return datetime(local.year, local.month, 1, tzinfo=tz).timestamp()


def local_date(tz: ZoneInfo, ts: float) -> date:
    return datetime.fromtimestamp(ts, tz).date()


@dataclass
class Totals:
    usd: float = 0.0  # best known: measured where measured, else the estimate
    measured_usd: float = 0.0
    estimated_usd: float = 0.0  # the part of ``usd`` that is an estimate
    quota: float = 0.0
    estimated_quota: float = 0.0
    outside_usd: float = 0.0  # changes nothing reported explains (another client on the key)
    outside_quota: float = 0.0
    generations: int = 0
    pending: int = 0
    approximate: bool = False

    def add(self, row: SpendRow) -> None:
        usd, quota = row.usd, row.quota
        self.usd += usd
        self.quota += quota
        if row.is_outside:
            self.outside_usd += usd
            self.outside_quota += quota
        else:
            self.generations += 1
        if row.estimated:
            self.estimated_usd += usd
            self.estimated_quota += quota
        elif row.measured_usd is not None:
            self.measured_usd += row.measured_usd
        self.pending += row.status == "pending"
        self.approximate |= row.approximate or (row.estimated and (usd > 0 or quota > 0))

    def to_json(self) -> dict[str, Any]:
        return {
            "usd": round(self.usd, 8),
            "measured_usd": round(self.measured_usd, 8),
            "estimated_usd": round(self.estimated_usd, 8),
            "quota": round(self.quota, 3),
            "estimated_quota": round(self.estimated_quota, 3),
            "outside_usd": round(self.outside_usd, 8),
            "outside_quota": round(self.outside_quota, 3),
            "generations": self.generations,
            "pending": self.pending,
            "approximate": self.approximate,
        }


def totals(rows: Iterable[SpendRow]) -> Totals:
    out = Totals()
    for row in rows:
        out.add(row)
    return out


def since(rows: Sequence[SpendRow], ts: float) -> list[SpendRow]:
    """The rows at or after ``ts`` (rows are sorted by time)."""
    return list(rows[bisect.bisect_left([r.ts for r in rows], ts) :])


def daily(
    rows: Sequence[SpendRow],
    tz: ZoneInfo,
    now: float,
    days: int,
    *,
    top_models: int = 6,
    quota_mode: bool = False,
) -> dict[str, Any]:
    """``days`` local days ending today: USD and quota per day, each split by model (the ``top_models``
    biggest over the window by name, the rest as "other"; outside changes as their own series). Models
    are ranked by quota used for subscribers (``quota_mode``), else by USD."""
    today = local_date(tz, now)
    dates = [today - timedelta(days=days - 1 - i) for i in range(days)]
    index = {d: i for i, d in enumerate(dates)}
    usd_by_model: dict[str, float] = defaultdict(float)
    quota_by_model: dict[str, float] = defaultdict(float)
    cells: list[dict[str, list[float]]] = [defaultdict(lambda: [0.0, 0.0]) for _ in dates]
    for row in rows:
        i = index.get(local_date(tz, row.ts))
        if i is None:
            continue
        model = OUTSIDE_LABEL if row.is_outside else (row.generation.model or "?")
        cell = cells[i][model]
        cell[0] += row.usd
        cell[1] += row.quota
        usd_by_model[model] += row.usd
        quota_by_model[model] += row.quota
    first, second = (quota_by_model, usd_by_model) if quota_mode else (usd_by_model, quota_by_model)
    ranked = sorted((m for m in usd_by_model if m != OUTSIDE_LABEL), key=lambda m: (-first[m], -second[m], m))
    named = set(ranked[:top_models])
    series = [*ranked[:top_models]]
    if len(ranked) > top_models:
        series.append(OTHER_MODELS)
    if OUTSIDE_LABEL in usd_by_model:
        series.append(OUTSIDE_LABEL)
    out_days = []
    for d, day_cells in zip(dates, cells, strict=True):
        usd: dict[str, float] = defaultdict(float)
        quota: dict[str, float] = defaultdict(float)
        for model, (u, q) in day_cells.items():
            name = model if model in named or model == OUTSIDE_LABEL else OTHER_MODELS
            usd[name] += u
            quota[name] += q
        out_days.append(
            {
                "date": d.isoformat(),
                "usd": round(sum(usd.values()), 8),
                "quota": round(sum(quota.values()), 3),
                "usd_by_model": {k: round(v, 8) for k, v in usd.items() if v},
                "quota_by_model": {k: round(v, 3) for k, v in quota.items() if v},
            }
        )
    return {"days": out_days, "models": series}


def top(
    rows: Iterable[SpendRow],
    by: TopBy,
    limit: int = 5,
    *,
    quota_mode: bool = False,
    tz: ZoneInfo | None = None,
) -> list[dict[str, Any]]:
    """The chats, characters (a group where no member is named) or models that cost the most (quota used,
    for subscribers). ``tz``: the user's zone, for the start time that names a group chat."""
    groups: dict[str, tuple[str, Totals]] = {}
    for row in rows:
        if row.is_outside:
            continue  # not a chat, a character or a model of this ST
        key, label = _group_key(row, by, tz)
        if key is None:
            continue
        entry = groups.get(key)
        if entry is None:
            entry = groups[key] = (label, Totals())
        entry[1].add(row)
    ranked = sorted(
        groups.items(),
        key=lambda kv: (-(kv[1][1].quota if quota_mode else kv[1][1].usd), -kv[1][1].usd, kv[0]),
    )
    return [{"key": key, "label": label, **t.to_json()} for key, (label, t) in ranked[:limit]]


def _group_key(row: SpendRow, by: TopBy, tz: ZoneInfo | None) -> tuple[str | None, str]:
    g = row.generation
    if by == "model":
        return g.model or None, g.model
    if by == "chat":
        if not g.chat_id:
            return None, ""
        who = g.group_name or g.character
        name = _group_chat_started(g.chat_id, tz) if g.group_id else None
        if who and name:
            return g.chat_id, f"{who}: {name}"
        return g.chat_id, f"{who}: {g.chat_id}" if who and not g.chat_id.startswith(who) else g.chat_id
    # A reply in a group chat counts for the member who wrote it (which character costs the most is the
    # question); the group stands in only when no member was named (older reports, a group-wide request).
    if g.character_id or g.character:
        return f"char:{g.character_id or g.character}", g.character or g.character_id or ""
    if g.group_id:
        return f"group:{g.group_id}", g.group_name or g.group_id
    return None, ""


def _group_chat_started(chat_id: str, tz: ZoneInfo | None) -> str | None:
    """ST names a new group chat by the time it began, in epoch milliseconds ("1795953662062"): shown as
    that local time. A renamed chat (any other name) keeps its name."""
    if tz is None or not (chat_id.isdigit() and 12 <= len(chat_id) <= 14):
        return None
    try:
        started = datetime.fromtimestamp(int(chat_id) / 1000, tz)
    except (OverflowError, OSError, ValueError):
        return None
    return started.strftime("%Y-%m-%d %H:%M")


def overview_start(tz: ZoneInfo, now: float, days: int) -> float:
    """The earliest row ``overview`` needs: the chart's first local day or the month's start."""
    first_day = local_date(tz, now) - timedelta(days=days - 1)
    window_start = datetime(first_day.year, first_day.month, first_day.day, tzinfo=tz).timestamp()
    return min(window_start, month_start(tz, now))


def overview(
    rows: Sequence[SpendRow],
    *,
    settings: SpendSettings,
    now: float,
    days: int,
    chat_id: str | None = None,
    chat_rows: Sequence[SpendRow] | None = None,
    quota_mode: bool = False,
    quota: dict[str, Any] | None = None,
    alerts: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """The drawer's (and ``nanogpt-companion spend``'s) picture of one user, from rows since
    ``overview_start``: today, this month, the chat, ``days`` of chart, top lists, budgets."""
    tz = zone(settings.timezone)
    first_day = local_date(tz, now) - timedelta(days=days - 1)
    window = since(rows, datetime(first_day.year, first_day.month, first_day.day, tzinfo=tz).timestamp())
    today = totals(since(rows, day_start(tz, now)))
    month = totals(since(rows, month_start(tz, now)))
    series = daily(window, tz, now, days, quota_mode=quota_mode)
    daily_budget, monthly_budget = budget.states(
        settings, today.usd, today.estimated_usd > 0, month.usd, month.estimated_usd > 0
    )
    return {
        "mode": "quota" if quota_mode else "usd",
        "timezone": tz.key,
        "now": now,
        "chat_id": chat_id,
        "chat": totals(chat_rows).to_json() if chat_rows is not None else None,
        "today": today.to_json(),
        "month": month.to_json(),
        "window": totals(window).to_json(),
        "days": series["days"],
        "models": series["models"],
        "top_chats": top(window, "chat", quota_mode=quota_mode, tz=tz),
        "top_characters": top(window, "character", quota_mode=quota_mode),
        "top_models": top(window, "model", quota_mode=quota_mode),
        "budgets": {"daily": daily_budget.to_json(), "monthly": monthly_budget.to_json()},
        "quota": quota,
        "settings": settings.to_json(),
        "alerts": list(alerts),
    }
