"""The spend ledger service: generations reported by ST tabs, readings of each key's account, and the
attribution, budgets and views in between.

Design notes (the why):
- The extension reports a generation when it ends in ST (chat, character and group, model, source,
  endpoint, message id and ST's own token counts; never the text). The row is stored at once with a price
  estimate, so nothing is lost when the service stops before it is measured.
- What it really cost comes from the account: a reading after the generation compared with the one before
  (``attribution.py``). Readings come from ``AccountService`` (its routine polls, the user's refreshes, and
  the polls asked for here), so the companion never asks NanoGPT twice for the same thing.
- Polls asked for here are debounced and rate-limited per key: ``settle`` seconds after the last report of
  a burst (NanoGPT books a request as it ends, and a burst of generations becomes one poll), never sooner
  than ``min_interval`` after the key's previous poll, and ``subscriber_min_interval`` (60 s) for keys
  with an active subscription: NanoGPT caches the usage counters for about a minute (reference notes §6),
  so asking sooner would only read the same numbers. A steady stream of reports still gets a poll at
  least every interval (+ settle), so the ledger cannot be starved by a busy chat.
- Readings are per key, rows per user: several ST users may share one key, and their generations in one
  interval share its change (marked approximate). A change nothing reported explains is recorded as an
  ``outside`` row (another client on the key), split equally across the ST users of that key.
- A tab reports a generation's start too (``started``): a reading taken while a generation of that key
  is still running (or finished in ST but not reported yet: ST saves the chat and counts tokens first)
  may already include its cost, so that reading is held back, not attributed, and the next reading after
  its report measures the whole interval: the generations share it, marked approximate. Without the hold
  the first one would get both costs as "exact" and the late one would find no change. A start never
  followed by a report (the tab closed mid-generation) is forgotten after ``RUNNING_MAX`` seconds, and a
  reading is never held back more than that past the previous one.
- Rows still unmeasured after ``pending_timeout`` (NanoGPT unreachable, the key rejected) are settled as
  unmeasured: their estimate stands and the note says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from nanogpt_companion.account import AccountService
from nanogpt_companion.catalog import CatalogService
from nanogpt_companion.domain import AccountSnapshot, CatalogEntry, QuotaBucket, QuotaName
from nanogpt_companion.events import EventBus
from nanogpt_companion.keys import ResolvedKey
from nanogpt_companion.spend import budget, views
from nanogpt_companion.spend.attribution import Outside, attribute
from nanogpt_companion.spend.estimate import estimate, expected_channel
from nanogpt_companion.spend.export import to_csv
from nanogpt_companion.spend.ledger import SpendLedger, outside_generation
from nanogpt_companion.spend.records import (
    BudgetAlert,
    Estimate,
    Generation,
    QuotaUnit,
    Reading,
    SpendRow,
    SpendSettings,
)

log = logging.getLogger(__name__)

DEFAULT_SETTLE = 3.0
DEFAULT_MIN_INTERVAL = 15.0
DEFAULT_SUBSCRIBER_MIN_INTERVAL = 60.0
DEFAULT_MAX_ATTEMPTS = 2
DEFAULT_PENDING_TIMEOUT = 600.0
HOUSEKEEPING_INTERVAL = 3600.0
RUNNING_MAX = 600.0  # seconds a started generation holds readings back without its report
_FINISHED_KEPT = 256  # reported ids remembered per key, so a start arriving after its report is ignored
_DAY = 86400.0
# Quota windows in the order attribution prefers them: the weekly token counter moves with every
# subscription request; old plans count operations per day.
_BUCKETS: tuple[tuple[QuotaName, QuotaUnit], ...] = (
    ("weekly_input_tokens", "tokens"),
    ("daily_input_tokens", "tokens"),
    ("daily", "requests"),
    ("monthly", "requests"),
)
_MODEL_SUFFIXES = (":online",)  # web search on top of a model: priced as the model (plus search)


def reading_from(snapshot: AccountSnapshot) -> Reading:
    sub = snapshot.subscription
    subscribed = bool(sub and sub.active)
    bucket: tuple[str, QuotaBucket, QuotaUnit] | None = None
    if sub is not None and not sub.degraded:
        for name, unit in _BUCKETS:
            b = sub.buckets.get(name)
            if b is not None and b.used is not None:
                bucket = (name, b, unit)
                break
    return Reading(
        ts=snapshot.fetched_at or 0.0,
        usd=snapshot.balance.usd if snapshot.balance else None,
        bucket=bucket[0] if bucket else None,
        used=bucket[1].used if bucket else None,
        reset_at=bucket[1].reset_at if bucket else None,
        unit=bucket[2] if bucket else None,
        subscribed=subscribed,
    )


@dataclass
class _KeyState:
    """Scheduling state of one key (shared by every user of it)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    poll_user: str | None = None
    pending: bool = False
    first_report: float | None = None  # oldest report not yet covered by a poll
    last_report: float | None = None
    last_poll: float | None = None  # last poll or reading of this key, whoever asked
    subscribed: bool = False
    reading: Reading | None = None
    reading_loaded: bool = False
    running: dict[str, float] = field(default_factory=dict)  # client id -> when its start was reported
    finished: deque[str] = field(default_factory=lambda: deque(maxlen=_FINISHED_KEPT))

    def still_running(self, now: float) -> dict[str, float]:
        """The started generations not reported yet (forgetting those older than ``RUNNING_MAX``)."""
        for client_id in [c for c, t in self.running.items() if now - t >= RUNNING_MAX]:
            del self.running[client_id]
        return self.running


class SpendService:
    def __init__(
        self,
        *,
        ledger: SpendLedger,
        account: AccountService,
        catalog: CatalogService,
        bus: EventBus,
        key_for: Callable[[str], Awaitable[ResolvedKey]],
        users_of_key: Callable[[str], Sequence[str]],
        settle: float = DEFAULT_SETTLE,
        min_interval: float = DEFAULT_MIN_INTERVAL,
        subscriber_min_interval: float = DEFAULT_SUBSCRIBER_MIN_INTERVAL,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        pending_timeout: float = DEFAULT_PENDING_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._ledger = ledger
        self._account = account
        self._catalog = catalog
        self._bus = bus
        self._key_for = key_for
        self._users_of_key = users_of_key
        self._settle = max(0.0, settle)
        self._min_interval = max(0.0, min_interval)
        self._subscriber_min_interval = max(self._min_interval, subscriber_min_interval)
        self._max_attempts = max(1, max_attempts)
        self._pending_timeout = pending_timeout
        self._clock = clock
        self._keys: dict[str, _KeyState] = {}
        self._wake = asyncio.Event()
        self._polls: set[asyncio.Task[None]] = set()

    # ---- reports ---------------------------------------------------------------------------------

    async def started(self, user: str, client_id: str) -> int:
        """A tab sent a NanoGPT request (its report follows when it ends): readings of the key wait for
        that report. Returns how many generations of the key are running."""
        key = await self._key_for(user)
        if not key.present:
            return 0
        st = self._key(key.fingerprint)
        running = st.still_running(self._clock())
        if client_id not in st.finished:  # a start that arrived after its own report is stale
            running[client_id] = self._clock()
        return len(running)

    async def report(self, user: str, generation: Generation) -> SpendRow:
        """Record a generation ST finished (idempotent per ``client_id``) and schedule its measurement."""
        key = await self._key_for(user)
        fp = key.fingerprint
        now = self._clock()
        entry = await self._entry(key, generation.model)
        snapshot = self._account.cached(user)
        row = SpendRow(
            id=0,
            user=user,
            key_fingerprint=fp,
            ts=now,
            generation=generation,
            channel=expected_channel(entry, generation, snapshot),
            estimate=estimate(entry, generation),
        )
        if not key.present:
            row = row.settled(status="unmeasured", note="The companion knows no NanoGPT key for this user.")
        if key.present:
            st = self._key(fp)
            st.running.pop(generation.client_id, None)
            st.finished.append(generation.client_id)
        stored, inserted = await self._ledger.add(row)
        if not inserted:
            return stored
        if key.present:
            st = self._key(fp)
            st.pending, st.poll_user, st.last_report = True, user, now
            if st.first_report is None:
                st.first_report = now
            if snapshot is not None and snapshot.subscription is not None:
                st.subscribed = snapshot.subscription.active
            self._wake.set()
        self._bus.publish(
            user, "spend", {"reason": "reported", "rows": [stored.id], "chats": [generation.chat_id]}
        )
        await self._check_budgets(user)
        return stored

    async def _entry(self, key: ResolvedKey, model: str) -> CatalogEntry | None:
        try:
            snapshot = await self._catalog.stored(key)
        except Exception:  # the store is a convenience here: no catalogue means no estimate, not an error
            log.exception("could not read the stored catalogue for a spend estimate")
            return None
        if snapshot is None:
            return None
        for candidate in (model, *(model.removesuffix(s) for s in _MODEL_SUFFIXES if model.endswith(s))):
            entry = snapshot.by_id.get(candidate)
            if entry is not None:
                return entry
        return None

    # ---- readings --------------------------------------------------------------------------------

    async def on_reading(self, user: str, fingerprint: str, snapshot: AccountSnapshot) -> None:
        """A successful account poll (any origin): settle what the change since the last one explains.
        The app registers this with ``AccountService.add_reading_listener``."""
        if fingerprint == "anonymous" or snapshot.fetched_at is None:
            return
        reading = reading_from(snapshot)
        answered_at = self._clock()  # the poll's answer is in: generations reported until now may be in it
        st = self._key(fingerprint)
        async with st.lock:
            if not st.reading_loaded:
                st.reading = await self._ledger.last_reading(fingerprint)
                st.reading_loaded = True
            previous = st.reading
            if previous is not None and reading.ts <= previous.ts:
                return  # an older poll finishing late: the newer reading already covered it
            st.last_poll = max(st.last_poll or 0.0, reading.ts)
            st.subscribed = reading.subscribed
            running = [t for t in st.still_running(answered_at).values() if t < answered_at]
            if running and previous is not None and reading.ts - previous.ts < RUNNING_MAX:
                # A generation of this key may be in this reading but is not reported yet: keep the
                # previous reading as the baseline; the next one after its report covers both.
                log.debug("reading of %s held back: %d generation(s) running", fingerprint[:8], len(running))
                return
            pending = await self._ledger.pending(fingerprint) if st.pending or previous is None else []
            result = attribute(
                previous,
                reading,
                pending,
                interval=int(reading.ts * 1000),
                settle=self._settle,
                max_attempts=self._max_attempts,
                answered_at=answered_at,
            )
            await self._ledger.update(result.settled)
            outside_rows = await self._record_outside(fingerprint, reading, result.outside, user)
            await self._ledger.save_reading(fingerprint, reading)
            st.reading = reading
            st.pending = bool(await self._ledger.pending(fingerprint))
        touched: dict[str, list[SpendRow]] = {}
        for row in [*(r for r in result.settled if r.status != "pending"), *outside_rows]:
            touched.setdefault(row.user, []).append(row)
        for handle, rows in touched.items():
            chats = sorted({r.generation.chat_id for r in rows if r.generation.chat_id})
            self._bus.publish(
                handle, "spend", {"reason": "measured", "rows": [r.id for r in rows], "chats": chats}
            )
            await self._check_budgets(handle)

    async def _record_outside(
        self, fingerprint: str, reading: Reading, outside: Sequence[Outside], poller: str
    ) -> list[SpendRow]:
        if not outside:
            return []
        users = sorted(set(self._users_of_key(fingerprint))) or [poller]
        interval = int(reading.ts * 1000)
        rows: list[SpendRow] = []
        for change in outside:
            share = change.amount / len(users)
            for handle in users:
                row = SpendRow(
                    id=0,
                    user=handle,
                    key_fingerprint=fingerprint,
                    ts=reading.ts,
                    generation=outside_generation(interval, change.channel),
                    channel=change.channel,
                    estimate=Estimate(usd=None, quota=None),
                    status="measured",
                    measured_usd=share if change.channel == "usd" else None,
                    measured_quota=share if change.channel == "quota" else None,
                    quota_unit=change.unit,
                    approximate=len(users) > 1,
                    shared_with=len(users),
                    interval=interval,
                    note=(
                        "A change of the account no generation reported by SillyTavern explains "
                        "(another app on this key?)"
                        + (
                            f"; split across the {len(users)} SillyTavern users of this key."
                            if len(users) > 1
                            else "."
                        )
                    ),
                )
                stored, _ = await self._ledger.add(row)
                rows.append(stored)
        return rows

    # ---- scheduling ------------------------------------------------------------------------------

    def _key(self, fingerprint: str) -> _KeyState:
        st = self._keys.get(fingerprint)
        if st is None:
            st = self._keys[fingerprint] = _KeyState()
        return st

    def _due(self, st: _KeyState) -> float | None:
        """When this key should be polled for its pending rows (None: nothing to do)."""
        if not st.pending or st.poll_user is None:
            return None
        interval = self._subscriber_min_interval if st.subscribed else self._min_interval
        floor = (st.last_poll if st.last_poll is not None else -math.inf) + interval
        running = st.still_running(self._clock())
        if running:
            # Its report schedules the poll (a poll now would be held back); a start never reported
            # is given up on after RUNNING_MAX.
            return max(min(running.values()) + RUNNING_MAX, floor)
        if st.first_report is None or st.last_report is None:
            return floor  # rows left pending by earlier readings: keep the pace, no settle needed
        settle_at = st.last_report + self._settle
        cap = st.first_report + interval + self._settle
        return max(min(settle_at, cap), floor)

    async def start(self) -> None:
        """Pick up rows left pending by a previous run, so they are measured (or time out) now."""
        for row in await self._ledger.pending():
            st = self._key(row.key_fingerprint)
            st.pending, st.poll_user = True, row.user
            st.first_report = st.first_report or row.ts
            st.last_report = max(st.last_report or 0.0, row.ts)
        self._wake.set()

    async def run(self) -> None:
        """Poll keys when their pending rows are due; expire stale rows; apply retention hourly."""
        next_housekeeping = self._clock()
        while True:
            try:
                now = self._clock()
                if now >= next_housekeeping:
                    await self._housekeeping(now)
                    next_housekeeping = now + min(HOUSEKEEPING_INTERVAL, max(self._pending_timeout / 4, 1.0))
                dues = {fp: due for fp, st in self._keys.items() if (due := self._due(st)) is not None}
                for fp, due in dues.items():
                    if due <= now:
                        self._start_poll(fp)
                upcoming = [d for d in dues.values() if d > now]
                wait = min([*upcoming, next_housekeeping]) - now
                self._wake.clear()
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation that
                # arrives as its timeout fires, and this loop would then sleep on through the app's exit.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.01, wait)):
                        await self._wake.wait()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("spend scheduling round failed; trying again shortly")
                await asyncio.sleep(1.0)

    def _start_poll(self, fingerprint: str) -> None:
        st = self._keys[fingerprint]
        user = st.poll_user
        if user is None:
            return
        # Reports until now are covered by this poll; later ones (during it) start the next debounce.
        st.first_report = st.last_report = None
        st.last_poll = self._clock()

        async def poll() -> None:
            try:
                await self._account.poll(user)
            except Exception:
                log.exception("spend poll of %s's account failed", user)
            finally:
                self._wake.set()

        task = asyncio.create_task(poll(), name=f"spend-poll:{fingerprint}")
        self._polls.add(task)
        task.add_done_callback(self._polls.discard)

    async def _housekeeping(self, now: float) -> None:
        stale = [r for r in await self._ledger.pending() if now - r.ts >= self._pending_timeout]
        if stale:
            note = (
                "No reading of the account came in time (NanoGPT unreachable or rate-limited?); "
                "the estimate stands."
            )
            settled = [r.settled(status="unmeasured", note=note) for r in stale]
            await self._ledger.update(settled)
            for fp in {r.key_fingerprint for r in stale}:
                self._key(fp).pending = bool(await self._ledger.pending(fp))
            for handle in sorted({r.user for r in stale}):
                self._bus.publish(
                    handle,
                    "spend",
                    {"reason": "expired", "rows": [r.id for r in settled if r.user == handle], "chats": []},
                )
        for handle in await self._ledger.users():
            settings = await self._ledger.settings(handle)
            removed = await self._ledger.purge(handle, now - settings.retention_days * _DAY)
            if removed:
                log.info(
                    "removed %d spend rows of %s older than %d days", removed, handle, settings.retention_days
                )
                self._bus.publish(handle, "spend", {"reason": "purged", "rows": [], "chats": []})

    async def close(self) -> None:
        tasks = list(self._polls)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # ---- budgets ---------------------------------------------------------------------------------

    async def _check_budgets(self, user: str) -> None:
        settings = await self._ledger.settings(user)
        if settings.daily_budget_usd is None and settings.monthly_budget_usd is None:
            return
        tz = views.zone(settings.timezone)
        now = self._clock()
        month_rows = await self._ledger.rows(user, views.month_start(tz, now))
        day = views.totals(views.since(month_rows, views.day_start(tz, now)))
        month = views.totals(month_rows)
        today = views.local_date(tz, now)
        for state in budget.states(
            settings, day.usd, day.estimated_usd > 0, month.usd, month.estimated_usd > 0
        ):
            alert, shown = budget.alerts(state, today)
            if alert is None:
                continue
            for alert_id in shown:
                quiet = BudgetAlert(
                    id=alert_id, kind="budget_80", level="warning", message="(passed 100 % first)"
                )
                await self._ledger.alert_add(user, quiet, now, seen=True)
            if await self._ledger.alert_add(user, alert, now):
                self._bus.publish(user, "alert", {**alert.to_json(), "created_at": now})

    async def unseen_alerts(self, user: str) -> list[dict[str, Any]]:
        return await self._ledger.alerts_unseen(user)

    async def mark_alerts_seen(self, user: str, alert_ids: Sequence[str]) -> int:
        return await self._ledger.alerts_mark_seen(user, alert_ids, self._clock())

    # ---- settings --------------------------------------------------------------------------------

    async def settings(self, user: str) -> SpendSettings:
        return await self._ledger.settings(user)

    async def update_settings(self, user: str, changes: dict[str, Any]) -> SpendSettings:
        """Change some settings (validated at the edge); budgets are checked again at once."""
        settings = replace(await self._ledger.settings(user), **changes)
        await self._ledger.save_settings(user, settings)
        await self._check_budgets(user)
        return settings

    # ---- views -----------------------------------------------------------------------------------

    async def overview(self, user: str, *, chat_id: str | None = None, days: int = 30) -> dict[str, Any]:
        """Everything the drawer shows: today, this month, this chat, the per-day chart, top lists,
        budgets and the unseen budget alerts."""
        settings = await self._ledger.settings(user)
        tz = views.zone(settings.timezone)
        now = self._clock()
        rows = await self._ledger.rows(user, views.overview_start(tz, now, days))
        chat_rows = await self._ledger.rows(user, 0.0, chat_id=chat_id) if chat_id else None
        snapshot = self._account.cached(user)
        return views.overview(
            rows,
            settings=settings,
            now=now,
            days=days,
            chat_id=chat_id,
            chat_rows=chat_rows,
            quota_mode=bool(snapshot and snapshot.subscription and snapshot.subscription.active),
            quota=_quota_info(snapshot),
            alerts=await self._ledger.alerts_unseen(user),
        )

    async def recent(
        self, user: str, *, limit: int, chat_id: str | None = None, before_id: int | None = None
    ) -> list[SpendRow]:
        return await self._ledger.recent(user, limit=limit, chat_id=chat_id, before_id=before_id)

    async def export_csv(self, user: str, days: int) -> str:
        settings = await self._ledger.settings(user)
        rows = await self._ledger.rows(user, self._clock() - days * _DAY)
        return to_csv(rows, views.zone(settings.timezone))


def _quota_info(snapshot: AccountSnapshot | None) -> dict[str, Any] | None:
    """The subscription window the quota figures compare with (its limit makes a percentage)."""
    sub = snapshot.subscription if snapshot else None
    if sub is None or not sub.active:
        return None
    for name, unit in _BUCKETS:
        b = sub.buckets.get(name)
        if b is not None:
            return {"bucket": name, "unit": unit, "limit": b.limit, "used": b.used, "reset_at": b.reset_at}
    return None
