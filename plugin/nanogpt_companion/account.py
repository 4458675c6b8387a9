"""Balance and subscription usage per user: polled, cached, recorded, and turned into alerts.

Design notes (the why):
- NanoGPT counts authentication failures toward its abuse limits, so a rejected key is never sent again
  on its own: only a different key (a new fingerprint) or an explicit refresh by the user lifts the block.
- A 429 is honoured literally: nothing goes upstream for that key before ``Retry-After`` has passed, not
  even on an explicit refresh (hammering a rate limit only extends it).
- Upstream faults never surface as exceptions from ``get``/``refresh``: the last good data is served with
  ``stale=True`` and an ``error`` beside it, which is what the HTTP contract promises.
- Alerts fire once per occurrence of a condition, not once per poll: a low balance alerts when it drops
  under the threshold and re-arms only after it climbs back; quota alerts are keyed by bucket and reset
  window, so the next week's window may alert again. Alert state is in memory: after a restart a still
  true condition alerts once more, which is better than staying silent about it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from nanogpt_companion.domain import AccountSnapshot, Balance, ErrorInfo, QuotaBucket, SubscriptionState
from nanogpt_companion.events import EventBus
from nanogpt_companion.keys import ResolvedKey
from nanogpt_companion.nanogpt.errors import KeyRejectedError, NanoGPTError, RateLimitedError
from nanogpt_companion.store import HistoryPoint, Store, StoreError

log = logging.getLogger(__name__)

__all__ = ["AccountClient", "AccountService", "HistoryPoint"]

# NanoGPT sometimes answers 429 without Retry-After; a minute is long enough not to look abusive and
# short enough that the panel recovers on its own.
DEFAULT_RETRY_AFTER = 60.0
QUOTA_WARN = 0.8
QUOTA_FULL = 1.0
_DAY = 86400.0

AlertKind = Literal["low_balance", "quota_80", "quota_100", "routing_changed"]
AlertLevel = Literal["warning", "error", "info"]

_BUCKET_LABELS = {
    "weekly_input_tokens": "Weekly input-token",
    "daily_input_tokens": "Daily input-token",
    "daily_images": "Daily image",
    "daily": "Daily",
    "monthly": "Monthly",
}


class AccountClient(Protocol):
    """The part of :class:`nanogpt_companion.nanogpt.client.NanoGPTClient` this service needs."""

    async def check_balance(self, api_key: str) -> Balance: ...

    async def subscription_usage(self, api_key: str) -> SubscriptionState: ...


@dataclass
class _UserState:
    snapshot: AccountSnapshot | None = None
    snapshot_fp: str | None = None  # key fingerprint the current snapshot describes
    good_fp: str | None = None  # key fingerprint of the last fully successful poll
    rejected_fp: str | None = None  # never poll this key again unless asked explicitly
    retry_fp: str | None = None
    retry_at: float = 0.0
    last_attempt: float | None = None
    failing: bool = False  # the last poll failed (logged once when it starts, once when it ends)
    inflight: asyncio.Task[AccountSnapshot] | None = None
    inflight_explicit: bool = False
    low_balance_id: str | None = None  # id of the current low-balance occurrence, None when re-armed
    quota_fired: set[str] = field(default_factory=set)
    last_mode: str | None = None


class AccountService:
    def __init__(
        self,
        client: AccountClient,
        store: Store,
        bus: EventBus,
        *,
        key_for: Callable[[str], Awaitable[ResolvedKey]],
        poll_interval: float = 300,
        low_balance_usd: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._store = store
        self._bus = bus
        self._key_for = key_for
        self._interval = max(0.001, poll_interval)
        self._low_balance = low_balance_usd
        self._clock = clock
        self._users: dict[str, _UserState] = {}

    # ---- public API ------------------------------------------------------------------------------

    async def get(self, user: str) -> AccountSnapshot:
        """The cached snapshot; polls first when there is none yet or the user's key changed.

        When the cache is merely due it is served as is and a poll starts in the background
        (stale-while-revalidate), so a page load never waits on NanoGPT.
        """
        st = self._state(user)
        key = await self._key_for(user)
        if st.snapshot is None or st.snapshot_fp != _fp(key):
            return await self._single_flight(user, explicit=False)
        if self._due(st, self._clock()):
            self._start(user, explicit=False)
        return st.snapshot

    async def refresh(self, user: str) -> AccountSnapshot:
        """Poll now (the user asked). Concurrent callers share one poll; a rejected key is tried again."""
        return await self._single_flight(user, explicit=True)

    def cached(self, user: str) -> AccountSnapshot | None:
        """The last snapshot without polling (None before the first poll)."""
        st = self._users.get(user)
        return None if st is None else st.snapshot

    async def history(self, user: str, days: float) -> list[HistoryPoint]:
        since = self._clock() - max(0.0, days) * _DAY
        return await self._store.account_history(user, since)

    async def run(self, users: Callable[[], Iterable[str]]) -> None:
        """Poll every known user about every ``poll_interval`` until cancelled.

        It wakes four times per interval so a user polled on demand in between, or one who just appeared,
        is picked up within 1.25 intervals rather than two.
        """
        tick = self._interval / 4
        while True:
            try:
                now = self._clock()
                due = [u for u in dict.fromkeys(users()) if self._due(self._state(u), now)]
                if due:
                    await asyncio.gather(*(self._poll_logged(u) for u in due))
            except Exception:
                # The loop runs for weeks: one bad round (e.g. the user list failing) must not end it.
                log.exception("account poll round failed; trying again next round")
            await asyncio.sleep(tick)

    def retain(self, fingerprints: set[str]) -> None:
        """Keys not in ``fingerprints`` are gone from ST (rotated, removed): forget them.

        Polls are per user and always use the user's current key, so a gone key is never polled again;
        what is left to do is to drop what was learnt about it (rejected, rate-limited) and to make the
        user due at once, so the panel shows the new key's account in one round instead of five minutes.
        """
        for st in self._users.values():
            if st.snapshot_fp is not None and st.snapshot_fp not in fingerprints:
                st.last_attempt = None
            if st.rejected_fp not in fingerprints:
                st.rejected_fp = None
            if st.retry_fp not in fingerprints:
                st.retry_fp, st.retry_at = None, 0.0
            if st.good_fp not in fingerprints:
                st.good_fp = None

    async def close(self) -> None:
        """Cancel polls still in flight (background revalidations included); the app calls this on exit."""
        tasks = [st.inflight for st in self._users.values() if st.inflight is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    # ---- polling ---------------------------------------------------------------------------------

    def _state(self, user: str) -> _UserState:
        st = self._users.get(user)
        if st is None:
            st = self._users[user] = _UserState()
        return st

    def _due(self, st: _UserState, now: float) -> bool:
        return st.last_attempt is None or now - st.last_attempt >= self._interval

    def _start(self, user: str, *, explicit: bool) -> asyncio.Task[AccountSnapshot]:
        st = self._state(user)
        if st.inflight is None or st.inflight.done():
            task = asyncio.create_task(self._poll(user, explicit=explicit), name=f"account-poll:{user}")
            st.inflight, st.inflight_explicit = task, explicit
            task.add_done_callback(lambda t: self._finished(user, t))
        return st.inflight

    def _finished(self, user: str, task: asyncio.Task[AccountSnapshot]) -> None:
        st = self._users.get(user)
        if st is not None and st.inflight is task:
            st.inflight = None
        if not task.cancelled() and (exc := task.exception()) is not None:
            # Retrieved here so a background revalidation that failed is logged, not "never retrieved".
            log.error("account poll for %s failed: %s", user, type(exc).__name__)

    async def _single_flight(self, user: str, *, explicit: bool) -> AccountSnapshot:
        # shield: one caller going away (a closed HTTP request) must not cancel the poll others wait on.
        st = self._state(user)
        if explicit and st.rejected_fp is not None and st.inflight is not None and not st.inflight_explicit:
            # A routine poll in flight skips a rejected key; the user's explicit retry must not be
            # swallowed by it, so let it finish and then run the explicit one.
            await asyncio.shield(st.inflight)
        return await asyncio.shield(self._start(user, explicit=explicit))

    async def _poll_logged(self, user: str) -> None:
        try:
            await self._single_flight(user, explicit=False)
        except Exception as exc:
            log.error("background account poll for %s failed: %s", user, type(exc).__name__)

    async def _poll(self, user: str, *, explicit: bool) -> AccountSnapshot:
        st = self._state(user)
        key = await self._key_for(user)
        now = self._clock()
        fp = _fp(key)
        api_key = key.reveal()
        if api_key is None:
            st.last_attempt = now
            return self._settle(user, st, fp, AccountSnapshot(key_status="missing", key_source="none"))

        if st.rejected_fp == fp and not explicit and st.snapshot is not None and st.snapshot_fp == fp:
            return st.snapshot
        if st.retry_fp == fp and now < st.retry_at and st.snapshot is not None and st.snapshot_fp == fp:
            return st.snapshot

        st.last_attempt = now
        results = await asyncio.gather(
            self._client.check_balance(api_key),
            self._client.subscription_usage(api_key),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result  # cancellation and interpreter exits are not upstream faults
        balance, usage = results
        if isinstance(balance, Balance) and isinstance(usage, SubscriptionState):
            return await self._succeeded(user, st=st, key=key, now=now, balance=balance, usage=usage)
        errors = [r for r in results if isinstance(r, Exception)]
        return self._failed(user, st=st, key=key, now=now, errors=errors, balance=balance, usage=usage)

    async def _succeeded(
        self,
        user: str,
        *,
        st: _UserState,
        key: ResolvedKey,
        now: float,
        balance: Balance,
        usage: SubscriptionState,
    ) -> AccountSnapshot:
        fp = key.fingerprint
        if st.good_fp != fp:  # another key may be another account: its alerts start afresh
            st.low_balance_id, st.quota_fired, st.last_mode = None, set(), None
        if st.rejected_fp == fp:
            log.info("NanoGPT accepted key %s for %s again", fp, user)
        elif st.failing:
            log.info("account poll for %s works again", user)
        st.failing = False
        st.good_fp, st.rejected_fp, st.retry_fp, st.retry_at = fp, None, None, 0.0
        snapshot = AccountSnapshot(
            key_status="ok",
            key_source=key.source,
            balance=balance,
            subscription=usage,
            fetched_at=now,
        )
        quota: dict[str, float] = {
            name: b.percent_used for name, b in usage.buckets.items() if b.percent_used is not None
        }
        try:
            await self._store.record_account(user, now, balance.usd, balance.xno, quota)
        except (StoreError, sqlite3.Error) as exc:
            log.warning("could not record account history for %s: %s", user, exc)
        alerts = self._alerts(st, snapshot, now)
        result = self._settle(user, st, fp, snapshot)
        for alert in alerts:
            self._bus.publish(user, "alert", alert)
        return result

    def _failed(
        self,
        user: str,
        *,
        st: _UserState,
        key: ResolvedKey,
        now: float,
        errors: list[Exception],
        balance: Balance | BaseException,
        usage: SubscriptionState | BaseException,
    ) -> AccountSnapshot:
        fp = key.fingerprint
        rejected = next((e for e in errors if isinstance(e, KeyRejectedError)), None)
        if rejected is not None:
            if st.rejected_fp != fp:
                log.warning(
                    "NanoGPT rejected key %s for %s; it will not be sent again until the key changes "
                    "or the user refreshes",
                    fp,
                    user,
                )
            st.rejected_fp, st.good_fp = fp, None
            snapshot = AccountSnapshot(
                key_status="rejected", key_source=key.source, error=_error_info(rejected)
            )
            return self._settle(user, st, fp, snapshot)

        limited = next((e for e in errors if isinstance(e, RateLimitedError)), None)
        if limited is not None:
            wait = limited.retry_after if limited.retry_after is not None else DEFAULT_RETRY_AFTER
            st.retry_fp, st.retry_at = fp, now + max(0.0, wait)
            log.warning("NanoGPT rate-limited the account poll for %s; next try in %.0fs", user, wait)
            first: Exception = limited
        else:
            first = errors[0]
            if isinstance(first, NanoGPTError):
                # Once when polls start failing (an outage), not once per poll until it ends.
                log.log(
                    logging.DEBUG if st.failing else logging.WARNING,
                    "account poll for %s failed: %s (%s)%s",
                    user,
                    first.code,
                    first.message,
                    "" if st.failing else "; the last known values are shown meanwhile",
                )
            else:
                log.error("account poll for %s failed unexpectedly: %s", user, type(first).__name__)
        st.failing = True

        previous = st.snapshot if st.good_fp == fp and st.snapshot_fp == fp else None
        kept_balance = balance if isinstance(balance, Balance) else (previous.balance if previous else None)
        kept_usage = (
            usage if isinstance(usage, SubscriptionState) else (previous.subscription if previous else None)
        )
        snapshot = AccountSnapshot(
            key_status="ok" if previous is not None else "error",
            key_source=key.source,
            balance=kept_balance,
            subscription=kept_usage,
            fetched_at=previous.fetched_at if previous else None,
            stale=True,
            error=_error_info(first),
        )
        return self._settle(user, st, fp, snapshot)

    def _settle(self, user: str, st: _UserState, fp: str, snapshot: AccountSnapshot) -> AccountSnapshot:
        """Make ``snapshot`` current; tell open tabs only when something other than the poll time moved."""
        previous = st.snapshot
        st.snapshot, st.snapshot_fp = snapshot, fp
        if previous is None or _without_time(previous) != _without_time(snapshot):
            self._bus.publish(user, "account", snapshot.model_dump(mode="json"))
        return snapshot

    # ---- alerts ----------------------------------------------------------------------------------

    def _alerts(self, st: _UserState, snapshot: AccountSnapshot, now: float) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = []
        usd = snapshot.balance.usd if snapshot.balance else None
        if usd is not None:
            if usd < self._low_balance:
                if st.low_balance_id is None:
                    st.low_balance_id = f"low_balance:{int(now)}"
                    alerts.append(
                        _alert(
                            st.low_balance_id,
                            "low_balance",
                            "warning",
                            f"Your NanoGPT balance is ${usd:.2f}, below your ${self._low_balance:.2f} alert "
                            "threshold. Top up to keep pay-as-you-go models working.",
                        )
                    )
            else:
                st.low_balance_id = None

        sub = snapshot.subscription
        if sub is not None:
            current: set[str] = set()
            for name, bucket in sub.buckets.items():
                alerts.extend(self._quota_alerts(st, name, bucket, current))
            # Forget windows that have rolled over so the set stays as small as the bucket list.
            st.quota_fired &= current

            mode = sub.recommended_mode
            if mode is not None:
                if st.last_mode is not None and mode != st.last_mode:
                    reason = f" ({sub.routing_reason})" if sub.routing_reason else ""
                    alerts.append(
                        _alert(
                            f"routing_changed:{st.last_mode}->{mode}:{int(now)}",
                            "routing_changed",
                            "info" if mode == "subscription" else "warning",
                            f"NanoGPT now routes your requests as {mode} (was {st.last_mode}){reason}.",
                        )
                    )
                st.last_mode = mode
        return alerts

    def _quota_alerts(
        self, st: _UserState, name: str, bucket: QuotaBucket, current: set[str]
    ) -> list[dict[str, Any]]:
        window = "none" if bucket.reset_at is None else str(bucket.reset_at)
        warn_id, full_id = f"quota_80:{name}:{window}", f"quota_100:{name}:{window}"
        current.update((warn_id, full_id))
        used = bucket.percent_used
        if used is None:
            return []
        label = _BUCKET_LABELS.get(name, name)
        resets = _reset_text(bucket.reset_at)
        if used >= QUOTA_FULL:
            fire = full_id not in st.quota_fired
            # Crossing straight past 80 % into 100 % gives one alert, not two at once.
            st.quota_fired.update((warn_id, full_id))
            if fire:
                message = f"{label} quota is used up ({used:.0%}){resets}."
                return [_alert(full_id, "quota_100", "error", message)]
        elif used >= QUOTA_WARN and warn_id not in st.quota_fired:
            st.quota_fired.add(warn_id)
            return [_alert(warn_id, "quota_80", "warning", f"{label} quota is {used:.0%} used{resets}.")]
        return []


def _fp(key: ResolvedKey) -> str:
    return key.fingerprint if key.present else "anonymous"


def _without_time(snapshot: AccountSnapshot) -> AccountSnapshot:
    return snapshot.model_copy(update={"fetched_at": None})


def _error_info(exc: Exception) -> ErrorInfo:
    if isinstance(exc, NanoGPTError):
        return ErrorInfo(code=exc.code, message=exc.message)
    return ErrorInfo(code="internal", message="Reading the NanoGPT account failed unexpectedly.")


def _alert(alert_id: str, kind: AlertKind, level: AlertLevel, message: str) -> dict[str, Any]:
    return {"id": alert_id, "kind": kind, "level": level, "message": message}


def _reset_text(reset_at_ms: int | None) -> str:
    if reset_at_ms is None:
        return ""
    when = datetime.fromtimestamp(reset_at_ms / 1000, UTC)
    return f"; it resets {when:%Y-%m-%d %H:%M} UTC"
