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
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

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
    CatalogEntry,
    ErrorInfo,
    Pricing,
    SubscriptionCoverage,
    Tier,
)
from nanogpt_companion.keys import ResolvedKey
from nanogpt_companion.memory import release_freed_memory
from nanogpt_companion.nanogpt.client import ModelListResult, NanoGPTClient
from nanogpt_companion.nanogpt.errors import (
    KeyRejectedError,
    MalformedResponseError,
    NanoGPTError,
    RateLimitedError,
    UpstreamUnavailableError,
)
from nanogpt_companion.nanogpt.redaction import KeyRedactor
from nanogpt_companion.nanogpt.schemas import UpstreamModel

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

ICON_HOST = "https://nano-gpt.com"
# Lists are merged in this order; the first list that has a model supplies its details.
TIER_ORDER: tuple[Tier, ...] = (Tier.V1, Tier.SUBSCRIPTION, Tier.PAID, Tier.PERSONALIZED)
_THINKING = re.compile(r"^(?P<base>.+?)(?::thinking(?::[A-Za-z0-9_-]+)?|-thinking)$")
_ROUTER = re.compile(
    r"^(auto-model.*|nano-gpt-help|nanogpt/coding-router.*|brave.*|claw-(low|medium|high)|hermes-(low|medium|high))$",
    re.IGNORECASE,
)
# Vendor from the id prefix (owned_by is unreliable, e.g. "organization-owner").
_ROUTING_PREFIXES = {"tee", "private"}
_BARE_ID_VENDORS = (
    ("gpt", "openai"),
    ("o1", "openai"),
    ("o3", "openai"),
    ("o4", "openai"),
    ("chatgpt", "openai"),
    ("claude", "anthropic"),
    ("gemini", "google"),
    ("gemma", "google"),
    ("deepseek", "deepseek"),
    ("grok", "x-ai"),
    ("llama", "meta-llama"),
    ("mistral", "mistralai"),
    ("qwen", "qwen"),
    ("glm", "zai-org"),
)
ANONYMOUS = ResolvedKey.none().fingerprint  # the slot of users without a key: no key is ever sent for it


ROUND_QUEUE_WAIT = 10.0  # seconds a refresh round waits for another key's before it runs alongside


def vendor_of(model_id: str) -> str:
    parts = [p for p in model_id.split("/") if p]
    if len(parts) > 1:
        if parts[0].lower() in _ROUTING_PREFIXES and len(parts) > 2:
            return parts[1].lower()
        return parts[0].lower()
    bare = model_id.lower()
    for prefix, vendor in _BARE_ID_VENDORS:
        if bare.startswith(prefix):
            return vendor
    return bare.split("-", 1)[0] or "other"


def thinking_base_of(model_id: str) -> str | None:
    match = _THINKING.match(model_id)
    return match.group("base") if match else None


def _per_million(per_1k: float | None) -> float | None:
    if per_1k is None:
        return None
    # Re-round to 12 significant digits so the unit conversion adds no float noise of its own.
    return float(f"{per_1k * 1000:.12g}")


def _entry(model: UpstreamModel, tiers: list[Tier], in_sub: bool | None) -> CatalogEntry:
    included = in_sub if in_sub is not None else model.subscription_included
    icon = model.icon_url
    if icon and icon.startswith("/"):
        icon = ICON_HOST + icon
    return CatalogEntry(
        id=model.id,
        name=model.name or model.id,
        vendor=vendor_of(model.id),
        description=model.description,
        created=model.created,
        context_length=model.context_length,
        max_output_tokens=model.max_output_tokens,
        capabilities=dict(model.capabilities),
        input_modalities=model.input_modalities,
        reasoning_efforts=model.reasoning_efforts,
        tiers=tiers,
        pricing=Pricing(
            prompt=model.prompt_per_1m,
            completion=model.completion_per_1m,
            cache_read=_per_million(model.cache_read_per_1k),
            cache_write=_per_million(model.cache_write_per_1k),
            per_request=model.per_request,
            currency=model.currency or "USD",
        ),
        subscription=SubscriptionCoverage(
            included=included,
            input_multiplier=model.subscription_multiplier,
            note=model.subscription_note,
        ),
        category=model.category,
        cost_estimate=model.cost_estimate,
        icon_url=icon,
        is_router=bool(_ROUTER.match(model.id)),
    )


def merge_tiers(lists: dict[Tier, Sequence[UpstreamModel]]) -> list[CatalogEntry]:
    """One entry per id, ``tiers`` = the lists it appeared in, thinking variants linked to their base."""
    return list(iter_merged(lists))


def iter_merged(lists: dict[Tier, Sequence[UpstreamModel]]) -> Iterator[CatalogEntry]:
    """``merge_tiers`` one entry at a time, in id order.

    Why lazily: a refresh serialises each entry as it comes, so only one ``CatalogEntry`` (~3 KB of small
    objects) is alive at a time instead of 600; all of them at once raised the round's peak by ~2 MB, and
    the heap keeps a peak's arenas for good (a few long-lived objects made meanwhile pin them)."""
    first: dict[str, UpstreamModel] = {}
    tiers: dict[str, list[Tier]] = {}
    for tier in TIER_ORDER:
        for model in lists.get(tier, ()):
            first.setdefault(model.id, model)
            seen = tiers.setdefault(model.id, [])
            if tier not in seen:
                seen.append(tier)
    have_sub = Tier.SUBSCRIPTION in lists
    have_paid = Tier.PAID in lists
    # The thinking links depend on ids only, so they are known before any entry is built.
    bases: dict[str, str] = {}
    variants: dict[str, list[str]] = {}
    for model_id in first:
        base = thinking_base_of(model_id)
        if base is not None and base in first and base != model_id:
            bases[model_id] = base
            variants.setdefault(base, []).append(model_id)
    for model_id in sorted(first, key=str.lower):
        in_tiers = tiers[model_id]
        in_sub: bool | None = None
        if have_sub and Tier.SUBSCRIPTION in in_tiers:
            in_sub = True
        elif have_paid and Tier.PAID in in_tiers:
            in_sub = False
        elif have_sub and have_paid:
            in_sub = False  # in neither disjoint list: not covered as far as NanoGPT says
        entry = _entry(first[model_id], in_tiers, in_sub)
        links: dict[str, Any] = {}
        if model_id in bases:
            links["thinking_base"] = bases[model_id]
        if model_id in variants:
            links["thinking_variants"] = sorted(variants[model_id])
        yield entry.model_copy(update=links) if links else entry


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
    ) -> None:
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

    async def _fetch_tier(self, tier: Tier, key: ResolvedKey, slot_key: ResolvedKey) -> ModelListResult:
        # The slot's key is redacted from the answer even when the list is fetched without it.
        return await self._client.models(tier, api_key=key.reveal(), redact=(slot_key.reveal(),))

    async def _do_refresh(self, slot: _Slot) -> tuple[CatalogSnapshot, CatalogDiff]:
        """One key's round, one round at a time: each holds its parsed upstream lists (a few MB of small
        objects) until it merges them, and ten keys refreshing together (ten ST users at start-up) left
        ~7 MB of freed-but-pinned heap behind for good. A round that waited ``ROUND_QUEUE_WAIT`` for a
        slow one (a hanging NanoGPT list) starts anyway: latency beats memory."""
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
        results = await asyncio.gather(
            *(self._fetch_tier(t, key, slot.key) for t in tiers), return_exceptions=True
        )
        lists: dict[Tier, Sequence[UpstreamModel]] = {}
        status: dict[str, TierStatus] = {}
        errors: list[NanoGPTError] = []
        previous = slot.snapshot
        for tier, result in zip(tiers, results, strict=True):
            if isinstance(result, ModelListResult):
                lists[tier] = result.models
                status[tier.value] = TierStatus(
                    True, len(result.models)
                )  # skipped entries: the client logs them
            elif isinstance(result, NanoGPTError):
                errors.append(result)
                status[tier.value] = TierStatus(False, 0, ErrorInfo(code=result.code, message=str(result)))
            elif isinstance(result, BaseException):
                raise result
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
            got_none = not any(t in lists for t in (Tier.V1, Tier.SUBSCRIPTION, Tier.PAID))
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
        if not any(t in lists for t in (Tier.V1, Tier.SUBSCRIPTION, Tier.PAID)):
            error = errors[0]
            slot.last_error = ErrorInfo(code=error.code, message=str(error))
            slot.failure, slot.retry_at = error, started + self._retry_interval
            if back_online:
                log.info("NanoGPT answers again, but its model lists still fail: %s", error)
            raise error
        slot.failure, slot.retry_at = None, 0.0
        if previous is not None:
            # A tier that failed this round keeps its memberships from the last good round, so a passing
            # fault does not flip every model's SUB badge.
            for tier in tiers:
                if tier not in lists and previous.tiers.get(tier.value, TierStatus(False, 0)).ok:
                    lists[tier] = _carry_over(previous, tier)
        now = self._clock()
        # Merging and serialising ~600 entries, one entry at a time (see ``iter_merged``): ~20 ms of CPU;
        # waiting requests get in before the entries are adopted.
        serialised = self._pool.serialise(iter_merged(lists))
        # The parsed upstream lists (a few MB of short-lived objects) go before the snapshot's long-lived
        # entries are made, so those do not end up scattered over the freed pages, pinning them.
        del lists, results, result
        await asyncio.sleep(0)
        snapshot = CatalogSnapshot(self._pool.adopt(serialised), now, status)
        await asyncio.sleep(0)
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
            if saved is not None:
                # Saved by an older version, perhaps before every field was redacted: redact again.
                slot.snapshot = CatalogSnapshot.from_store(
                    *saved, pool=self._pool, redact=KeyRedactor([slot.key.reveal()]).value
                )
                slot.checked_at = slot.snapshot.fetched_at
                log.info("loaded a cached catalogue of %d models", len(slot.snapshot.entries))
        except Exception:
            log.warning("ignoring an unreadable cached catalogue snapshot", exc_info=True)


def _carry_over(previous: CatalogSnapshot, tier: Tier) -> list[UpstreamModel]:
    return [_upstream_from_entry(e.entry()) for e in previous.entries if tier in e.tiers]


def _upstream_from_entry(entry: CatalogEntry) -> UpstreamModel:
    """Rebuild the upstream view of an entry so a carried-over tier merges like a fetched one."""
    cache_read = entry.pricing.cache_read / 1000 if entry.pricing.cache_read is not None else None
    cache_write = entry.pricing.cache_write / 1000 if entry.pricing.cache_write is not None else None
    return UpstreamModel(
        id=entry.id,
        name=entry.name,
        description=entry.description,
        created=entry.created,
        context_length=entry.context_length,
        max_output_tokens=entry.max_output_tokens,
        capabilities=dict(entry.capabilities),
        input_modalities=entry.input_modalities,
        reasoning_efforts=entry.reasoning_efforts,
        prompt_per_1m=entry.pricing.prompt,
        completion_per_1m=entry.pricing.completion,
        cache_read_per_1k=cache_read,
        cache_write_per_1k=cache_write,
        per_request=entry.pricing.per_request,
        currency=entry.pricing.currency,
        icon_url=entry.icon_url,
        cost_estimate=entry.cost_estimate,
        category=entry.category,
        subscription_included=entry.subscription.included,
        subscription_multiplier=entry.subscription.input_multiplier,
        subscription_note=entry.subscription.note,
    )
