"""The tier-merged NanoGPT model catalogue: one entry per model id, cached per API key.

Why per key: with a subscriber's key NanoGPT cuts the canonical list down to subscription models, and
prices can be account-specific, so two keys may see different catalogues. Why the tier lists: the
canonical list alone cannot tell subscription from paid models for a subscriber (it is silently filtered),
while ``subscription`` and ``paid`` are disjoint by definition.

Freshness: NanoGPT serves the lists with ``s-maxage=300``; we never refresh a key faster than ``ttl``
unless asked, serve stale data while revalidating in the background, and let concurrent callers share one
upstream round (single flight).

Offline: after a round that got no list at all, nothing goes upstream for that key until the next scheduled
retry (``retry_interval``, the background loop's tick): requests in between get the cached failure (or the
stale catalogue) at once instead of waiting on another round of connection attempts. Only an explicit
refresh ("Sync now") tries sooner. The log says when lists start failing and when they come back, not
every round in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from nanogpt_companion.catalog_merge import merge_tiers
from nanogpt_companion.catalog_round import (
    HelperFailed,
    RoundInput,
    RoundOutput,
    StoredInput,
    build,
    build_round_in_helper,
)
from nanogpt_companion.catalog_snapshot import (
    DIFF_FIELDS,
    CatalogDiff,
    CatalogSnapshot,
    EntryPool,
    SortKey,
    TierStatus,
    diff_catalogues,
    filter_entries,
)
from nanogpt_companion.domain import (
    ErrorInfo,
    Tier,
)
from nanogpt_companion.keys import ResolvedKey
from nanogpt_companion.memory import release_freed_memory
from nanogpt_companion.nanogpt.client import NanoGPTClient, RawModelList, log_model_list
from nanogpt_companion.nanogpt.errors import (
    KeyRejectedError,
    MalformedResponseError,
    NanoGPTError,
    RateLimitedError,
    UpstreamUnavailableError,
)
from nanogpt_companion.nanogpt.redaction import KeyRedactor

__all__ = [
    "DIFF_FIELDS",
    "CatalogDiff",
    "CatalogService",
    "CatalogSnapshot",
    "CatalogUnavailable",
    "CatalogView",
    "SortKey",
    "TierStatus",
    "diff_catalogues",
    "filter_entries",
    "merge_tiers",
]

log = logging.getLogger(__name__)

ANONYMOUS = ResolvedKey.none().fingerprint  # the slot of users without a key: no key is ever sent for it


_NOT_LISTED = TierStatus(False, 0)  # a tier an older snapshot has no status for
ROUND_QUEUE_WAIT = 10.0  # seconds a refresh round waits for another key's before it runs alongside


@dataclass(frozen=True)
class CatalogView:
    """What a caller gets: a snapshot plus whether it is stale and why."""

    snapshot: CatalogSnapshot
    stale: bool
    error: ErrorInfo | None


@dataclass
class _Slot:
    key: ResolvedKey
    snapshot: CatalogSnapshot | None = None
    # When NanoGPT last confirmed the snapshot: a refresh that finds the same catalogue keeps the snapshot
    # (and its fetched_at, so clients' ETags stay valid) and only moves this.
    checked_at: float = 0.0
    refreshing: asyncio.Task[tuple[CatalogSnapshot, CatalogDiff]] | None = None
    last_error: ErrorInfo | None = None
    failure: NanoGPTError | None = None  # why the last round got no list at all (re-raised until retry_at)
    retry_at: float = 0.0  # after such a round: no automatic upstream attempt before this time
    # A failure of this key's lists that NanoGPT itself reported was logged as ongoing (WARNING, or a partial
    # recovery that named the lists still failing): the round that fetches every list again says so at INFO.
    failure_announced: bool = False
    not_before: float = 0.0
    last_used: float = 0.0
    loaded_from_store: bool = False
    # NanoGPT rejected this key: until it changes (a new slot) or the user refreshes, lists are fetched
    # without it. NanoGPT counts authentication failures toward abuse limits, so never resend it blindly.
    key_rejected: bool = False
    # No user has this key any more (rotated or removed in ST): never refreshed again (see ``retain``).
    dropped: bool = False
    # A digest of the lists the snapshot was built from (every list fetched, none failed): a round that
    # gets the same bytes, for this key or another, builds nothing (see ``_same_lists``).
    lists_digest: bytes | None = None
    # A digest of the stored snapshot the current one was read from (``_load_from_store``), until a round
    # replaces it: another key that saved the same bytes reads them once.
    stored_digest: bytes | None = None


class CatalogUnavailable(Exception):
    """No catalogue could be fetched and none was cached. Carries the upstream error."""

    def __init__(self, error: NanoGPTError) -> None:
        super().__init__(str(error))
        self.error = error


class SnapshotStore(Protocol):
    """The part of ``store.Store`` the catalogue needs (kept narrow so tests can use the real store)."""

    async def save_catalog_snapshot(
        self, key_fingerprint: str, fetched_at: float, payload: bytes
    ) -> None: ...
    async def last_catalog_snapshot(self, key_fingerprint: str) -> tuple[float, bytes] | None: ...


OnRefresh = Callable[[str, CatalogSnapshot, CatalogDiff], None]


class CatalogService:
    def __init__(
        self,
        client: NanoGPTClient,
        store: SnapshotStore | None,
        *,
        ttl: float = 300.0,
        clock: Callable[[], float] = time.time,
        on_refresh: OnRefresh | None = None,
        retry_interval: float | None = None,
        helper_python: str | None = sys.executable,
    ) -> None:
        """``helper_python``: the interpreter of the helper process that parses rounds (``catalog_round``);
        ``None`` parses them in a worker thread."""
        self._client = client
        self._store = store
        self._ttl = ttl
        # The background loop wakes this often; a failed key is retried on its next tick, not by requests.
        self._tick = min(ttl, 60.0)
        self._retry_interval = self._tick if retry_interval is None else retry_interval
        self._clock = clock
        self._on_refresh = on_refresh
        self._slots: dict[str, _Slot] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._upstream: tuple[bool, float] | None = None
        self._pool = EntryPool()  # entries shared by every key's snapshot
        # One refresh round at a time (see _do_refresh); a round that waited this long goes anyway.
        self._round = asyncio.Lock()
        self._round_queue_wait = ROUND_QUEUE_WAIT
        self._helper_python = helper_python

    def _slot(self, key: ResolvedKey) -> _Slot:
        slot = self._slots.get(key.fingerprint)
        if slot is None:
            slot = self._slots[key.fingerprint] = _Slot(key)
        slot.key = key
        slot.last_used = self._clock()
        return slot

    async def get(self, key: ResolvedKey) -> CatalogView:
        """The catalogue for this key: cached, stale-while-revalidate, one upstream round at a time."""
        slot = self._slot(key)
        if slot.snapshot is None and not slot.loaded_from_store:
            slot.loaded_from_store = True
            await self._load_from_store(slot)
        now = self._clock()
        if slot.snapshot is None:
            if slot.failure is not None and now < slot.retry_at and slot.refreshing is None:
                raise CatalogUnavailable(slot.failure)  # offline: the cached failure until the next retry
            try:
                snapshot, _ = await self._refresh_shared(slot)
            except NanoGPTError as exc:
                raise CatalogUnavailable(exc) from exc
            return CatalogView(snapshot, stale=False, error=None)
        expired = now - slot.checked_at >= self._ttl
        if expired and slot.refreshing is None and now >= max(slot.not_before, slot.retry_at):
            self._start_background(slot)
        return self._view(slot, slot.snapshot, now)

    def current(self, key: ResolvedKey) -> CatalogView | None:
        """What ``get`` answers now, when the catalogue is in memory; no I/O and no refresh started (the
        event stream's hello names it, so a client already holding that answer need not ask)."""
        slot = self._slots.get(key.fingerprint)
        if slot is None or slot.snapshot is None:
            return None
        now = self._clock()
        slot.last_used = now  # a page that kept its copy still uses the catalogue: keep it refreshed
        return self._view(slot, slot.snapshot, now)

    def _view(self, slot: _Slot, snapshot: CatalogSnapshot, now: float) -> CatalogView:
        """Stale: the last refresh failed, or NanoGPT has not confirmed the catalogue for longer than the
        background loop takes to refresh one in use (``ttl``, then up to a round to notice, and a round's
        grace to finish). Not merely past ``ttl``: that happens every few minutes on schedule, and "stale"
        then would tell pages the last refresh failed (and change the ETag, costing them the whole list)."""
        overdue = now - slot.checked_at >= self._ttl + 2 * self._tick
        return CatalogView(snapshot, stale=overdue or slot.last_error is not None, error=slot.last_error)

    async def refresh(self, key: ResolvedKey) -> tuple[CatalogSnapshot, CatalogDiff]:
        """Refresh now (the user asked). Shares a round already under way. Raises NanoGPTError."""
        slot = self._slot(key)
        if slot.snapshot is None and not slot.loaded_from_store:
            slot.loaded_from_store = True
            await self._load_from_store(slot)
        now = self._clock()
        if now < slot.not_before:
            raise RateLimitedError(
                "NanoGPT asked us to slow down; try again shortly.", retry_after=slot.not_before - now
            )
        slot.key_rejected = False  # the user asked: give the key one more chance
        return await self._refresh_shared(slot)

    async def stored(self, key: ResolvedKey) -> CatalogSnapshot | None:
        """The last catalogue known for this key (memory, else the store), without asking NanoGPT."""
        slot = self._slot(key)
        if slot.snapshot is None and not slot.loaded_from_store:
            slot.loaded_from_store = True
            await self._load_from_store(slot)
        return slot.snapshot

    def upstream_state(self) -> tuple[bool | None, float | None]:
        """Whether the last upstream round reached NanoGPT at all (an auth error still counts as reached)."""
        if self._upstream is None:
            return None, None
        return self._upstream

    def cached(self, key: ResolvedKey) -> CatalogSnapshot | None:
        """The snapshot in memory, without any I/O (for the doctor)."""
        slot = self._slots.get(key.fingerprint)
        return slot.snapshot if slot else None

    def retain(self, fingerprints: set[str]) -> None:
        """Forget the catalogues of keys not in ``fingerprints`` (the keys some user has right now).

        A key rotated or removed in ST must stop being sent at once, not after an hour of background
        refreshes; its cached lists go with it (a later user of the same key starts afresh).
        """
        for fingerprint in [fp for fp in self._slots if fp not in fingerprints and fp != ANONYMOUS]:
            slot = self._slots.pop(fingerprint)
            slot.dropped = True
            log.info(
                "no user has key %s any more; its catalogue is dropped and no longer refreshed", fingerprint
            )

    async def run(
        self, active_within: float = 3600.0, *, active_keys: Callable[[], Awaitable[set[str]]] | None = None
    ) -> None:
        """Keep recently used catalogues fresh so ``catalog`` events announce new models unprompted.

        ``active_keys``: the fingerprints of the keys users have now; checked before every round so a key
        removed while nothing watched the files is not refreshed again.
        """
        while True:
            await asyncio.sleep(self._tick)
            if active_keys is not None:
                try:
                    self.retain(await active_keys())
                except Exception:
                    log.exception("could not check which NanoGPT keys are still in use")
                    continue
            now = self._clock()
            for slot in list(self._slots.values()):
                if slot.dropped:
                    continue  # dropped by a key change while this round was running
                due = slot.snapshot is None or now - slot.checked_at >= self._ttl
                ready = now >= max(slot.not_before, slot.retry_at)
                if due and now - slot.last_used <= active_within and ready:
                    with contextlib.suppress(NanoGPTError):
                        await self._refresh_shared(slot)

    async def close(self) -> None:
        tasks = [t for t in self._background if not t.done()]
        tasks += [s.refreshing for s in self._slots.values() if s.refreshing and not s.refreshing.done()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _start_background(self, slot: _Slot) -> None:
        async def revalidate() -> None:
            with contextlib.suppress(NanoGPTError):
                await self._refresh_shared(slot)

        task = asyncio.create_task(revalidate(), name=f"catalog-revalidate-{slot.key.fingerprint}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _refresh_shared(self, slot: _Slot) -> tuple[CatalogSnapshot, CatalogDiff]:
        if slot.refreshing is None or slot.refreshing.done():
            slot.refreshing = asyncio.create_task(self._do_refresh(slot), name="catalog-refresh")
        task = slot.refreshing
        try:
            # shield: one caller giving up (client disconnect) must not cancel the round for the others
            return await asyncio.shield(task)
        finally:
            if task.done() and slot.refreshing is task:
                slot.refreshing = None

    async def _fetch_tier(self, tier: Tier, key: ResolvedKey) -> RawModelList:
        return await self._client.model_list_body(tier, api_key=key.reveal())

    async def _build_round(self, job: RoundInput | StoredInput) -> RoundOutput:
        """The lists parsed and merged in a helper process (see ``catalog_round``); in a worker thread when
        the helper cannot run, from then on."""
        if self._helper_python is not None:
            try:
                return await build_round_in_helper(job, python=self._helper_python)
            except HelperFailed as exc:
                self._helper_python = None
                log.warning(
                    "could not parse NanoGPT's model lists in a helper process (%s); parsing them in the "
                    "service from now on, which keeps a few MB more memory",
                    exc,
                )
        return await asyncio.to_thread(build, job)

    def _same_lists(self, slot: _Slot, digest: bytes | None) -> CatalogSnapshot | None:
        """A snapshot already built from exactly these lists: this key's own (NanoGPT's answer has not
        changed since the last round, the usual case) or another key's that saw the same bytes (every
        subscriber gets the same lists, and so does every pay-as-you-go key)."""
        if digest is None:
            return None
        if slot.lists_digest == digest and slot.snapshot is not None:
            return slot.snapshot
        return self._twin(slot, lambda other: other.lists_digest == digest)

    def _twin(self, slot: _Slot, same: Callable[[_Slot], bool]) -> CatalogSnapshot | None:
        """Another key's snapshot made from the same input, if this key may have it: only when none of
        this key's secrets could be in its entries (they were redacted of that key's, not this one's)."""
        redactor = KeyRedactor(_secrets(slot.key))
        for other in self._slots.values():
            if other is slot or other.snapshot is None or not same(other):
                continue
            if redactor and other.snapshot.shows(redactor):
                continue
            return other.snapshot
        return None

    async def _do_refresh(self, slot: _Slot) -> tuple[CatalogSnapshot, CatalogDiff]:
        """One key's round, one round at a time: each holds its four lists as NanoGPT sent them (~2 MB)
        and may run a helper process to parse them; ten keys refreshing together (ten ST users at
        start-up) would hold ten times that, and the rounds after the first find their lists already
        built by it (``_same_lists``). A round that waited ``ROUND_QUEUE_WAIT`` for a slow one (a hanging
        NanoGPT list) starts anyway: latency beats memory."""
        try:
            await asyncio.wait_for(self._round.acquire(), self._round_queue_wait)
        except TimeoutError:
            log.debug("catalogue round for %s starts alongside a slow one", slot.key.fingerprint)
            return await self._do_refresh_locked(slot)
        try:
            return await self._do_refresh_locked(slot)
        finally:
            self._round.release()

    async def _do_refresh_locked(self, slot: _Slot) -> tuple[CatalogSnapshot, CatalogDiff]:
        was_failing = slot.last_error is not None
        started = self._clock()
        key = ResolvedKey.none() if slot.key_rejected else slot.key
        tiers = [Tier.V1, Tier.SUBSCRIPTION, Tier.PAID] + ([Tier.PERSONALIZED] if key.present else [])
        raws = await asyncio.gather(*(self._fetch_tier(t, key) for t in tiers), return_exceptions=True)
        for raw in raws:  # a failed list is an outcome; anything else (a cancellation, a bug) ends the round
            if isinstance(raw, BaseException) and not isinstance(raw, NanoGPTError):
                raise raw
        digest = _lists_digest(key, tiers, raws)
        known = self._same_lists(slot, digest)
        previous = slot.snapshot
        # The same lists as a snapshot already has, or the lists parsed and merged (``catalog_round``).
        source: CatalogSnapshot | RoundOutput = (
            known
            if known is not None
            else await self._build_round(_round_input(key, slot.key, raws, previous, tiers))
        )
        # What is kept of each list: how many models it had, or why it failed.
        results: list[int | BaseException] = []
        for tier, raw in zip(tiers, raws, strict=True):
            if isinstance(source, CatalogSnapshot):
                results.append(source.tiers[tier.value].count)  # the same lists: the same counts
            elif not isinstance(raw, RawModelList):
                results.append(raw)
            else:
                outcome = source.outcomes[tier]
                if isinstance(outcome, int):
                    log_model_list(tier, outcome, source.skipped.get(tier, []), len(raw.body))
                    results.append(outcome)
                else:
                    results.append(MalformedResponseError(outcome))
        del raws, raw
        status: dict[str, TierStatus] = {}
        errors: list[NanoGPTError] = []
        for tier, result in zip(tiers, results, strict=True):
            if isinstance(result, int):
                status[tier.value] = TierStatus(True, result)
            elif isinstance(result, NanoGPTError):
                errors.append(result)
                status[tier.value] = TierStatus(False, 0, ErrorInfo(code=result.code, message=str(result)))
            elif isinstance(result, BaseException):
                raise result
        # Every round asks these three (see ``tiers``); without any of them there is no catalogue.
        got_none = not any(status[t.value].ok for t in (Tier.V1, Tier.SUBSCRIPTION, Tier.PAID))
        reached = len(errors) < len(tiers) or any(
            not isinstance(e, UpstreamUnavailableError | MalformedResponseError) for e in errors
        )
        was_reachable = self._upstream is None or self._upstream[0]
        self._upstream = (reached, self._clock())
        # The first round that reaches NanoGPT after an outage says so, once for the service, even when some
        # lists still fail in it (a round that straddles the end of the outage): that line is the recovery.
        back_online = not was_reachable and reached
        failed = [name for name, st in status.items() if not st.ok]
        if errors:
            # Said when it starts, not every round until it ends: an unreachable NanoGPT once for the whole
            # service (every key fails alike), a failure NanoGPT reported once per key. The rounds that keep
            # failing are logged at DEBUG only.
            starts = was_reachable if not reached else not was_failing
            if starts and not back_online:
                log.warning(
                    "could not fetch NanoGPT's %s model list%s: %s%s",
                    ", ".join(failed),
                    "s" if len(failed) > 1 else "",
                    errors[0],
                    f" (retrying every {self._retry_interval:.0f} s)" if got_none else "",
                )
            else:
                log.debug("NanoGPT's %s model lists still fail: %s", ", ".join(failed), errors[0])
            if reached and (starts or back_online):
                slot.failure_announced = True
        if any(isinstance(e, KeyRejectedError) for e in errors):
            slot.key_rejected = True
            log.warning("NanoGPT rejected the key; model lists are fetched without it until it changes")
        for error in errors:
            if isinstance(error, RateLimitedError):
                wait = error.retry_after if error.retry_after is not None else 60.0
                slot.not_before = max(slot.not_before, self._clock() + wait)
        if got_none:
            error = errors[0]
            slot.last_error = ErrorInfo(code=error.code, message=str(error))
            slot.failure, slot.retry_at = error, started + self._retry_interval
            if back_online:
                log.info("NanoGPT answers again, but its model lists still fail: %s", error)
            raise error
        slot.failure, slot.retry_at = None, 0.0
        now = self._clock()
        if isinstance(source, CatalogSnapshot):
            snapshot = CatalogSnapshot.like(source, now, status)
        else:
            serialised = source.entries
            del source
            await asyncio.sleep(0)  # waiting requests get in before the entries are adopted
            snapshot = CatalogSnapshot(self._pool.adopt(serialised), now, status)
            del serialised  # the JSON of the new entries, now in the pool's blob
            await asyncio.sleep(0)
        # Only a round whose every list was read stands for its bytes: a list that arrived but could not be
        # read must fail again, not pass as an empty list, if the same bytes come back.
        slot.lists_digest = digest if not errors else None
        slot.checked_at = now
        slot.last_error = ErrorInfo(code=errors[0].code, message=str(errors[0])) if errors else None
        # A refresh that changed nothing is a heartbeat: DEBUG. The first list, a change, the end of an
        # outage (once for the service) or of this key's own announced failures: INFO.
        recovered = was_failing and not errors and slot.failure_announced
        if not errors:
            slot.failure_announced = False
        news = (
            "NanoGPT answers again; "
            if back_online
            else "every model list fetched again; "
            if recovered
            else ""
        )
        still = f" ({', '.join(failed)} still failing: {errors[0]})" if errors and back_online else ""
        if previous is not None and snapshot.same_content(previous):
            # Nothing changed: keep the snapshot the clients have (same bytes, same ETags, no store write).
            await release_freed_memory()
            log.log(
                logging.INFO if back_online or recovered else logging.DEBUG,
                "%scatalogue checked: %d models, unchanged%s",
                news,
                len(previous.entries),
                still,
            )
            return previous, CatalogDiff()
        diff = diff_catalogues(previous.entries if previous else [], snapshot.entries)
        slot.snapshot = snapshot
        slot.stored_digest = None  # no longer the snapshot read from the store
        self._pool.retain(s.snapshot for s in self._slots.values() if s.snapshot is not None)
        if self._store is not None:
            try:
                payload = await asyncio.to_thread(snapshot.to_store)
                await self._store.save_catalog_snapshot(slot.key.fingerprint, now, payload)
            except Exception:
                log.exception("could not save the catalogue snapshot")
        if self._on_refresh is not None and (previous is None or not diff.empty):
            self._on_refresh(slot.key.fingerprint, snapshot, diff)
        await release_freed_memory()
        log.log(
            logging.INFO if previous is None or not diff.empty or back_online or recovered else logging.DEBUG,
            "%scatalogue refreshed: %d models (%s)",
            news,
            len(snapshot.entries),
            ", ".join(f"{k}={v.count if v.ok else 'error'}" for k, v in status.items()),
        )
        return snapshot, diff

    async def _load_from_store(self, slot: _Slot) -> None:
        if self._store is None:
            return
        try:
            saved = await self._store.last_catalog_snapshot(slot.key.fingerprint)
            if saved is None:
                return
            fetched_at, payload = saved
            digest = hashlib.blake2b(payload, digest_size=16).digest()
            twin = self._twin(slot, lambda other: other.stored_digest == digest)
            if twin is not None:  # another key saved the very same catalogue: read it once
                slot.snapshot = CatalogSnapshot.like(twin, fetched_at, twin.tiers)
            else:
                # Saved by an older version, perhaps before every field was redacted: redacted again.
                read = await self._build_round(StoredInput(payload, _secrets(slot.key)))
                entries = self._pool.adopt(read.entries)
                slot.snapshot = CatalogSnapshot(entries, fetched_at, read.tiers)
            slot.stored_digest = digest
            slot.checked_at = slot.snapshot.fetched_at
            log.info("loaded a cached catalogue of %d models", len(slot.snapshot.entries))
        except Exception:
            log.warning("ignoring an unreadable cached catalogue snapshot", exc_info=True)


def _round_input(
    key: ResolvedKey,
    slot_key: ResolvedKey,
    raws: Sequence[RawModelList | BaseException],
    previous: CatalogSnapshot | None,
    tiers: Sequence[Tier],
) -> RoundInput:
    carry = tuple(t for t in tiers if previous is not None and previous.tiers.get(t.value, _NOT_LISTED).ok)
    return RoundInput(
        lists={t: raw.body for t, raw in zip(tiers, raws, strict=True) if isinstance(raw, RawModelList)},
        # The slot's key is redacted from the answer even when the lists are fetched without it.
        redact=_secrets(key, slot_key),
        carry_tiers=carry,
        previous=previous.models_json(previous.entries) if previous is not None and carry else None,
    )


def _secrets(*keys: ResolvedKey) -> tuple[str, ...]:
    return tuple(secret for key in keys if (secret := key.reveal()))


def _lists_digest(
    key: ResolvedKey, tiers: Sequence[Tier], raws: Sequence[RawModelList | BaseException]
) -> bytes | None:
    """What a round's entries are a function of, when every list arrived: the lists' bytes and whether a
    key was sent (a list without one is not the same question). ``None`` when any list failed: the
    failed tier's memberships are then carried over from the last snapshot, so the bytes do not say it all."""
    digest = hashlib.blake2b(b"key" if key.present else b"anonymous", digest_size=16)
    for tier, raw in zip(tiers, raws, strict=True):
        if not isinstance(raw, RawModelList):
            return None
        digest.update(b"|%s|%d|" % (tier.value.encode(), len(raw.body)))
        digest.update(raw.body)
    return digest.digest()
