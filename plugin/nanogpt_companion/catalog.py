"""The tier-merged NanoGPT model catalogue: one entry per model id, cached per API key.

Why per key: with a subscriber's key NanoGPT cuts the canonical list down to subscription models, and
prices can be account-specific, so two keys may see different catalogues. Why the tier lists: the
canonical list alone cannot tell subscription from paid models for a subscriber (it is silently filtered),
while ``subscription`` and ``paid`` are disjoint by definition.

Freshness: NanoGPT serves the lists with ``s-maxage=300``; we never refresh a key faster than ``ttl``
unless asked, serve stale data while revalidating in the background, and let concurrent callers share one
upstream round (single flight).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import orjson

from nanogpt_companion.domain import (
    CatalogEntry,
    ErrorInfo,
    Pricing,
    SubscriptionCoverage,
    Tier,
)
from nanogpt_companion.keys import ResolvedKey
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
DIFF_FIELDS: tuple[str, ...] = (
    "pricing.prompt",
    "pricing.completion",
    "tiers",
    "subscription.included",
    "subscription.input_multiplier",
    "context_length",
)
SortKey = Literal["name", "price", "context", "newest"]
ANONYMOUS = ResolvedKey.none().fingerprint  # the slot of users without a key: no key is ever sent for it


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc (macOS, musl, Windows): nothing to do
    return trim


_MALLOC_TRIM = _load_malloc_trim()


async def release_freed_memory() -> None:
    """Give the memory of a parsed refresh back to the OS.

    A refresh parses a few MB of upstream JSON into short-lived objects; glibc keeps the freed pages
    for reuse, so a service that idles for days between refreshes would sit on them. ``malloc_trim(0)``
    (glibc only) returns what is free; it runs in a worker thread (ctypes releases the GIL) so the
    event loop never waits for it. No ``gc.collect()``: parsed JSON holds no reference cycles, and a
    full collection would stall every request for tens of milliseconds.
    """
    if _MALLOC_TRIM is not None:
        await asyncio.to_thread(_MALLOC_TRIM, 0)


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
    entries: dict[str, CatalogEntry] = {}
    for model_id, model in first.items():
        in_tiers = tiers[model_id]
        in_sub: bool | None = None
        if have_sub and Tier.SUBSCRIPTION in in_tiers:
            in_sub = True
        elif have_paid and Tier.PAID in in_tiers:
            in_sub = False
        elif have_sub and have_paid:
            in_sub = False  # in neither disjoint list: not covered as far as NanoGPT says
        entries[model_id] = _entry(model, in_tiers, in_sub)
    variants: dict[str, list[str]] = {}
    for model_id in list(entries):
        base = thinking_base_of(model_id)
        if base is not None and base in entries and base != model_id:
            variants.setdefault(base, []).append(model_id)
            entries[model_id] = entries[model_id].model_copy(update={"thinking_base": base})
    for base, ids in variants.items():
        entries[base] = entries[base].model_copy(update={"thinking_variants": sorted(ids)})
    return [entries[k] for k in sorted(entries, key=str.lower)]


def _field(entry: CatalogEntry, dotted: str) -> Any:
    value: Any = entry
    for part in dotted.split("."):
        value = getattr(value, part)
    if isinstance(value, list):
        return [str(v) for v in value]
    return value


@dataclass(frozen=True)
class CatalogDiff:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[dict[str, Any]] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def as_json(self) -> dict[str, Any]:
        return {"added": self.added, "removed": self.removed, "changed": self.changed}


def diff_catalogues(old: Iterable[CatalogEntry], new: Iterable[CatalogEntry]) -> CatalogDiff:
    before = {e.id: e for e in old}
    after = {e.id: e for e in new}
    changed: list[dict[str, Any]] = []
    for model_id in sorted(before.keys() & after.keys(), key=str.lower):
        fields = {}
        for name in DIFF_FIELDS:
            a, b = _field(before[model_id], name), _field(after[model_id], name)
            if a != b:
                fields[name] = [a, b]
        if fields:
            changed.append({"id": model_id, "fields": fields})
    return CatalogDiff(
        added=sorted(after.keys() - before.keys(), key=str.lower),
        removed=sorted(before.keys() - after.keys(), key=str.lower),
        changed=changed,
    )


@dataclass(frozen=True)
class TierStatus:
    ok: bool
    count: int
    error: ErrorInfo | None = None

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "count": self.count, "error": self.error.model_dump() if self.error else None}


class CatalogSnapshot:
    """An immutable catalogue with each entry serialised once, so requests only join bytes."""

    def __init__(self, entries: list[CatalogEntry], fetched_at: float, tiers: dict[str, TierStatus]) -> None:
        self.entries = entries
        self.by_id = {e.id: e for e in entries}
        self.fetched_at = fetched_at
        self.tiers = tiers
        self._index = {e.id: i for i, e in enumerate(entries)}
        # One buffer for the whole list plus each entry's span in it. (Keeping orjson's per-entry bytes
        # would cost several times their size: each carries its over-allocated output buffer.)
        parts = [orjson.dumps(e.model_dump(mode="json")) for e in entries]
        spans: list[tuple[int, int]] = []
        offset = 1
        for part in parts:
            spans.append((offset, offset + len(part)))
            offset += len(part) + 1
        self.all_models_json = b"[" + b",".join(parts) + b"]"
        self._spans = spans
        self._view = memoryview(self.all_models_json)
        self._bodies: dict[bytes, bytes] = {}

    def full_body(self, meta_json: bytes) -> bytes:
        """The unfiltered ``/api/catalog`` answer for this metadata, built once and then reused: the
        common request (the extension's load) costs no 800 KB copy, only a dict lookup."""
        body = self._bodies.get(meta_json)
        if body is None:
            if len(self._bodies) >= 8:  # meta only varies by stale/error; keep the few combinations
                self._bodies.clear()
            body = self._bodies[meta_json] = b'{"models":' + self.all_models_json + b"," + meta_json[1:]
        return body

    def entry_json(self, index: int) -> memoryview:
        start, end = self._spans[index]
        return self._view[start:end]

    def models_json(self, entries: Sequence[CatalogEntry]) -> bytes:
        if entries is self.entries:
            return self.all_models_json
        return b"[" + b",".join(self.entry_json(self._index[e.id]) for e in entries) + b"]"

    def to_store(self) -> bytes:
        tiers = {k: v.as_json() for k, v in self.tiers.items()}
        return b'{"tiers":' + orjson.dumps(tiers) + b',"models":' + self.all_models_json + b"}"

    @classmethod
    def from_store(cls, fetched_at: float, payload: bytes) -> CatalogSnapshot:
        raw = orjson.loads(payload)
        entries = [CatalogEntry.model_validate(item) for item in raw["models"]]
        tiers = {
            k: TierStatus(v["ok"], v["count"], ErrorInfo(**v["error"]) if v.get("error") else None)
            for k, v in raw.get("tiers", {}).items()
        }
        return cls(entries, fetched_at, tiers)


def filter_entries(
    entries: Sequence[CatalogEntry],
    *,
    tier: Tier | None = None,
    query: str | None = None,
    capabilities: Sequence[str] = (),
    sort: SortKey = "name",
    include_routers: bool = True,
) -> Sequence[CatalogEntry]:
    if tier is None and not query and not capabilities and sort == "name" and include_routers:
        return entries  # the common case keeps the identity so the pre-joined bytes are reused
    needle = (query or "").strip().lower()
    out = [
        e
        for e in entries
        if (tier is None or tier in e.tiers)
        and (not needle or needle in e.id.lower() or needle in e.name.lower() or needle in e.vendor)
        and all(e.capabilities.get(cap) is True for cap in capabilities)
        and (include_routers or not e.is_router)
    ]
    if sort == "price":
        out.sort(key=lambda e: (e.pricing.prompt is None, e.pricing.prompt or 0.0, e.id.lower()))
    elif sort == "context":
        out.sort(key=lambda e: (-(e.context_length or -1), e.id.lower()))
    elif sort == "newest":
        out.sort(key=lambda e: (-(e.created or 0), e.id.lower()))
    return out


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
    refreshing: asyncio.Task[tuple[CatalogSnapshot, CatalogDiff]] | None = None
    last_error: ErrorInfo | None = None
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
    ) -> None:
        self._client = client
        self._store = store
        self._ttl = ttl
        self._clock = clock
        self._on_refresh = on_refresh
        self._slots: dict[str, _Slot] = {}
        self._background: set[asyncio.Task[Any]] = set()
        self._upstream: tuple[bool, float] | None = None

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
            try:
                snapshot, _ = await self._refresh_shared(slot)
            except NanoGPTError as exc:
                raise CatalogUnavailable(exc) from exc
            return CatalogView(snapshot, stale=False, error=None)
        expired = now - slot.snapshot.fetched_at >= self._ttl
        if expired and slot.refreshing is None and now >= slot.not_before:
            self._start_background(slot)
        return CatalogView(slot.snapshot, stale=expired or slot.last_error is not None, error=slot.last_error)

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
            await asyncio.sleep(min(self._ttl, 60.0))
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
                due = slot.snapshot is None or now - slot.snapshot.fetched_at >= self._ttl
                if due and now - slot.last_used <= active_within and now >= slot.not_before:
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
        was_failing = slot.last_error is not None
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
        if errors:
            # One line per round; a warning only when the failure starts, so a service left running
            # through a long outage does not fill its log.
            failed = [name for name, st in status.items() if not st.ok]
            log.log(
                logging.INFO if was_failing else logging.WARNING,
                "could not fetch NanoGPT's %s model list%s: %s",
                ", ".join(failed),
                "s" if len(failed) > 1 else "",
                errors[0],
            )
        reached = len(errors) < len(tiers) or any(
            not isinstance(e, UpstreamUnavailableError | MalformedResponseError) for e in errors
        )
        self._upstream = (reached, self._clock())
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
            raise error
        if previous is not None:
            # A tier that failed this round keeps its memberships from the last good round, so a passing
            # fault does not flip every model's SUB badge.
            for tier in tiers:
                if tier not in lists and previous.tiers.get(tier.value, TierStatus(False, 0)).ok:
                    lists[tier] = _carry_over(previous, tier)
        now = self._clock()
        # Merging, then serialising, ~600 entries: each step is ~10 ms of CPU; let waiting requests in
        # between them rather than stalling the loop for the whole build.
        entries = merge_tiers(lists)
        await asyncio.sleep(0)
        snapshot = CatalogSnapshot(entries, now, status)
        await asyncio.sleep(0)
        diff = diff_catalogues(previous.entries if previous else [], entries)
        slot.snapshot = snapshot
        slot.last_error = ErrorInfo(code=errors[0].code, message=str(errors[0])) if errors else None
        if self._store is not None:
            try:
                await self._store.save_catalog_snapshot(slot.key.fingerprint, now, snapshot.to_store())
            except Exception:
                log.exception("could not save the catalogue snapshot")
        if self._on_refresh is not None and (previous is None or not diff.empty):
            self._on_refresh(slot.key.fingerprint, snapshot, diff)
        await release_freed_memory()
        log.info(
            "catalogue refreshed: %d models (%s)",
            len(entries),
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
                stored = CatalogSnapshot.from_store(*saved)
                redacted = KeyRedactor([slot.key.reveal()]).value(stored.entries)
                if redacted is not stored.entries:
                    stored = CatalogSnapshot(redacted, stored.fetched_at, stored.tiers)
                slot.snapshot = stored
                log.info("loaded a cached catalogue of %d models", len(slot.snapshot.entries))
        except Exception:
            log.warning("ignoring an unreadable cached catalogue snapshot", exc_info=True)


def _carry_over(previous: CatalogSnapshot, tier: Tier) -> list[UpstreamModel]:
    return [_upstream_from_entry(e) for e in previous.entries if tier in e.tiers]


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
