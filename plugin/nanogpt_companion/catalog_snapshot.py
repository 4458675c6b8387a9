"""A catalogue snapshot as it is kept and served: JSON bytes per entry, shared across keys, and the
few fields that filters, sorts and diffs read.

Why not keep the pydantic ``CatalogEntry`` objects: 600 of them (with their nested models, dicts and
strings) cost ~3 MB per key, several times the JSON they serialise to, and a service with ten ST users
kept ten of them. A snapshot keeps each entry's JSON once (``full``) plus its list projection
(``summary``, what the extension shows) and a handful of scalars; a ``CatalogEntry`` is rebuilt from the
bytes when someone needs one (the doctor looks up a model or two per check).

Why a pool: keys see largely the same models (every subscriber the same list, every pay-as-you-go key
another), so an entry whose JSON is byte-identical across keys is stored once for all of them.

Bodies: a response is a deterministic function of the snapshot and the request's variant (fields,
filters, stale/error), so its ETag is a hash of those inputs, and each variant's body, plain or gzip,
is built once and reused until the snapshot is replaced.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from pydantic_core import from_json

from nanogpt_companion.domain import (
    CatalogEntry,
    CatalogSummary,
    CoverageSummary,
    ErrorInfo,
    PriceSummary,
    Tier,
)
from nanogpt_companion.nanogpt.redaction import KeyRedactor

SortKey = Literal["name", "price", "context", "newest"]
Fields = Literal["full", "summary"]
Encoding = Literal["identity", "gzip"]

# The list projection is defined by the pydantic record (so the OpenAPI schema and the bytes agree).
SUMMARY_KEYS: tuple[str, ...] = tuple(CatalogSummary.model_fields)
_PRICE_KEYS: tuple[str, ...] = tuple(PriceSummary.model_fields)
_COVERAGE_KEYS: tuple[str, ...] = tuple(CoverageSummary.model_fields)
# Diff field name -> PackedEntry attribute (the names are the contract of ``POST /api/catalog/refresh``).
DIFF_FIELDS: dict[str, str] = {
    "pricing.prompt": "prompt",
    "pricing.completion": "completion",
    "tiers": "tiers",
    "subscription.included": "included",
    "subscription.input_multiplier": "input_multiplier",
    "context_length": "context_length",
}
GZIP_LEVEL = 9  # once per refresh and variant, off the event loop: the smallest body is worth ~5 ms
MAX_CACHED_VARIANTS = 12  # per snapshot: the extension's one or two, plus a few CLI/script queries
MAX_CACHED_BYTES = 3 * 1024 * 1024  # per snapshot, plain and compressed bodies together
STORE_LEVEL = 6


REPACK_BELOW = 0.5  # a blob whose live share of bytes falls under this is copied anew without the dead part


def _entry_key(full: bytes | memoryview) -> bytes:
    """What the pool knows an entry by: a digest of its exact JSON (not the JSON itself, which would be a
    second copy of every entry)."""
    return hashlib.blake2b(full, digest_size=16).digest()


class Serialised:
    """Entries as JSON before they are pooled: one buffer, and each entry's span of it.

    One buffer rather than a bytes object per entry: 600 objects of 0.5-1.5 KB land wherever the heap has
    holes at the time, and those made amid a parse's temporaries kept the pages they sat on resident.
    """

    __slots__ = ("buffer", "spans")
    __hash__ = None  # type: ignore[assignment]  # mutable, compared by content

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.spans: list[tuple[int, int]] = []

    def add(self, full: bytes) -> None:
        at = len(self.buffer)
        self.buffer += full
        self.spans.append((at, len(self.buffer)))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Serialised) and (self.buffer, self.spans) == (other.buffer, other.spans)


def serialise(entries: Iterable[CatalogEntry]) -> Serialised:
    """Each entry's JSON as the catalogue keeps it (``CatalogEntry.model_dump(mode="json")``)."""
    out = Serialised()
    for entry in entries:
        out.add(orjson.dumps(entry.model_dump(mode="json")))
    return out


class _Blob:
    """The bytes of entries adopted together: every entry's JSON then its summary, back to back.

    Why one object per adoption rather than two bytes per entry: 1,800 separate allocations of 0.4-1.5 KB
    land wherever the heap has holes after a refresh, and keep those pages resident; one allocation does
    not. ``live`` counts the bytes of entries the pool still holds, so a blob mostly made of entries the
    catalogue dropped is repacked (``EntryPool.retain``).
    """

    __slots__ = ("data", "live")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.live = 0


_UNPLACED = _Blob(b"")  # an entry's blob until ``place`` (never counted: nothing is placed in it)


class PackedEntry:
    """One entry as kept: its JSON, its list projection and the scalars filters, sorts and diffs need."""

    __slots__ = (
        "_at",
        "_blob",
        "_end",
        "_split",
        "capabilities",
        "completion",
        "context_length",
        "created",
        "id",
        "included",
        "input_multiplier",
        "is_router",
        "key",
        "name",
        "prompt",
        "tiers",
        "vendor",
    )

    def __init__(self, data: dict[str, Any], key: bytes, interned: dict[Any, Any]) -> None:
        """From an entry's parsed JSON (``CatalogEntry.model_dump(mode="json")``); its bytes are placed by
        ``place`` once every entry of the adoption is known."""
        pricing, coverage = data["pricing"], data["subscription"]
        self._blob = _UNPLACED
        self._at = self._split = self._end = 0
        self.key = key
        self.id: str = data["id"]
        self.name: str = data["name"]
        # Small repeated values are shared, not stored 600 times per key.
        self.vendor: str = interned.setdefault(data["vendor"], data["vendor"])
        tiers = tuple(data["tiers"])
        self.tiers: tuple[str, ...] = interned.setdefault(tiers, tiers)
        caps = frozenset(name for name, on in data["capabilities"].items() if on is True)
        self.capabilities: frozenset[str] = interned.setdefault(caps, caps)
        self.is_router: bool = data["is_router"]
        self.prompt: float | None = pricing["prompt"]
        self.completion: float | None = pricing["completion"]
        self.context_length: int | None = data["context_length"]
        self.created: int | None = data["created"]
        self.included: bool | None = coverage["included"]
        self.input_multiplier: float | None = coverage["input_multiplier"]

    def place(self, blob: _Blob, at: int, split: int, end: int) -> None:
        self._blob, self._at, self._split, self._end = blob, at, split, end
        blob.live += end - at

    @property
    def full(self) -> bytes:
        """The entry's JSON (a copy: cheap, and only made when a body or a lookup needs it)."""
        return self._blob.data[self._at : self._split]

    @property
    def summary(self) -> bytes:
        """The list projection's JSON (``CatalogSummary``)."""
        return self._blob.data[self._split : self._end]

    @property
    def size(self) -> int:
        return self._end - self._at

    def entry(self) -> CatalogEntry:
        """The full record, rebuilt from the bytes (validated again: cheap, and never a partial record)."""
        return CatalogEntry.model_validate_json(self.full)

    def diff_value(self, name: str) -> Any:
        value = getattr(self, DIFF_FIELDS[name])
        return list(value) if isinstance(value, tuple) else value


def summary_json(data: dict[str, Any]) -> bytes:
    """An entry's list projection (``CatalogSummary``) from its parsed full JSON."""
    pricing, coverage = data["pricing"], data["subscription"]
    summary = {k: data[k] for k in SUMMARY_KEYS}
    summary["pricing"] = {k: pricing[k] for k in _PRICE_KEYS}
    summary["subscription"] = {k: coverage[k] for k in _COVERAGE_KEYS}
    return orjson.dumps(summary)


class EntryPool:
    """Entries shared by every snapshot of a service, keyed by a digest of their exact JSON.

    ``retain`` drops what no live snapshot uses any more; snapshots still referenced elsewhere (a
    request in flight) keep their own entries alive regardless.
    """

    def __init__(self) -> None:
        self._entries: dict[bytes, PackedEntry] = {}
        self._interned: dict[Any, Any] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def adopt(self, serialised: Serialised) -> list[PackedEntry]:
        """The pooled entry for each serialised one: the entry with exactly that JSON if the pool has it,
        else a new one; the new ones' bytes go into one blob."""
        view = memoryview(serialised.buffer)
        keys: list[bytes] = []
        fresh: dict[bytes, tuple[PackedEntry, memoryview, bytes]] = {}
        for at, end in serialised.spans:
            full = view[at:end]
            key = _entry_key(full)
            keys.append(key)
            if key in self._entries or key in fresh:
                continue
            data = orjson.loads(full)
            fresh[key] = (PackedEntry(data, key, self._interned), full, summary_json(data))
        if fresh:
            self._place(list(fresh.values()))
            for key, (entry, _, _) in fresh.items():
                self._entries[key] = entry
        return [self._entries[key] for key in keys]

    @staticmethod
    def _place(entries: Sequence[tuple[PackedEntry, bytes | memoryview, bytes]]) -> None:
        blob = _Blob(b"".join(part for _, full, summary in entries for part in (full, summary)))
        at = 0
        for entry, full, summary in entries:
            split = at + len(full)
            end = split + len(summary)
            entry.place(blob, at, split, end)
            at = end

    def pack(self, entry: CatalogEntry) -> PackedEntry:
        return self.adopt(serialise([entry]))[0]

    def retain(self, snapshots: Iterable[CatalogSnapshot]) -> None:
        live = {e.key: e for snapshot in snapshots for e in snapshot.entries}
        for gone in self._entries.keys() - live.keys():
            dropped = self._entries[gone]
            dropped._blob.live -= dropped.size
        self._entries = live
        self._interned = {}
        for e in live.values():
            for value in (e.vendor, e.tiers, e.capabilities):
                self._interned.setdefault(value, value)
        # A blob mostly of dropped entries is copied without them. Entries still held only by an older
        # snapshot (a request in flight) keep their old blob, which goes when they do.
        sparse = [e for e in live.values() if e._blob.live < REPACK_BELOW * len(e._blob.data)]
        if sparse:
            self._place([(e, e.full, e.summary) for e in sparse])


@dataclass(frozen=True)
class TierStatus:
    ok: bool
    count: int
    error: ErrorInfo | None = None

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "count": self.count, "error": self.error.model_dump() if self.error else None}


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


def diff_catalogues(old: Iterable[PackedEntry], new: Iterable[PackedEntry]) -> CatalogDiff:
    before = {e.id: e for e in old}
    after = {e.id: e for e in new}
    changed: list[dict[str, Any]] = []
    for model_id in sorted(before.keys() & after.keys(), key=str.lower):
        a_entry, b_entry = before[model_id], after[model_id]
        if a_entry is b_entry:  # pooled: the same bytes, nothing can differ
            continue
        fields = {}
        for name in DIFF_FIELDS:
            a, b = a_entry.diff_value(name), b_entry.diff_value(name)
            if a != b:
                fields[name] = [a, b]
        if fields:
            changed.append({"id": model_id, "fields": fields})
    return CatalogDiff(
        added=sorted(after.keys() - before.keys(), key=str.lower),
        removed=sorted(before.keys() - after.keys(), key=str.lower),
        changed=changed,
    )


def filter_entries(
    entries: Sequence[PackedEntry],
    *,
    tier: Tier | None = None,
    query: str | None = None,
    capabilities: Sequence[str] = (),
    sort: SortKey = "name",
    include_routers: bool = True,
) -> Sequence[PackedEntry]:
    if tier is None and not query and not capabilities and sort == "name" and include_routers:
        return entries  # the common case keeps the identity so the pre-joined bytes are reused
    needle = (query or "").strip().lower()
    out = [
        e
        for e in entries
        if (tier is None or tier in e.tiers)
        and (not needle or needle in e.id.lower() or needle in e.name.lower() or needle in e.vendor)
        and all(cap in e.capabilities for cap in capabilities)
        and (include_routers or not e.is_router)
    ]
    if sort == "price":
        out.sort(key=lambda e: (e.prompt is None, e.prompt or 0.0, e.id.lower()))
    elif sort == "context":
        out.sort(key=lambda e: (-(e.context_length or -1), e.id.lower()))
    elif sort == "newest":
        out.sort(key=lambda e: (-(e.created or 0), e.id.lower()))
    return out


@dataclass(frozen=True)
class Variant:
    """What a catalogue response depends on besides the snapshot: its ETag is a hash of these."""

    fields: Fields = "full"
    tier: Tier | None = None
    query: str = ""
    capabilities: tuple[str, ...] = ()
    sort: SortKey = "name"
    include_routers: bool = True
    stale: bool = False
    error: ErrorInfo | None = None

    def key(self) -> bytes:
        return orjson.dumps(
            [
                self.fields,
                self.tier,
                self.query.strip().lower(),
                sorted(set(self.capabilities)),
                self.sort,
                self.include_routers,
                self.stale,
                self.error.model_dump() if self.error else None,
            ]
        )


class Body:
    """One variant's answer: its ETag and its bytes, plain and gzip, each built at most once."""

    def __init__(self, tag: str, build: Any) -> None:
        self.tag = tag  # the opaque part of the ETag (quoted by ``etag``)
        self._build = build
        self.plain: bytes | None = None
        self.gzip: bytes | None = None
        self._gzipping: asyncio.Future[bytes] | None = None

    def etag(self, encoding: Encoding) -> str:
        # A representation per content coding (RFC 9110 8.8.3), matched on the shared part.
        return f'"{self.tag}.gz"' if encoding == "gzip" else f'"{self.tag}"'

    def matches(self, if_none_match: str) -> bool:
        """Weak comparison (If-None-Match), any of our codings of this representation."""
        for raw in if_none_match.split(","):
            candidate = raw.strip()
            if candidate == "*":
                return True
            if candidate.startswith("W/"):
                candidate = candidate[2:]
            opaque = candidate.strip('"')
            if opaque.endswith(".gz"):  # "." is not in the base64url alphabet of the tag
                opaque = opaque[:-3]
            if opaque == self.tag:
                return True
        return False

    def identity(self) -> bytes:
        if self.plain is None:
            self.plain = self._build()
        return self.plain

    async def gzipped(self) -> bytes:
        """Compressed in a worker thread (zlib releases the GIL), once: concurrent first requests wait
        for the same result instead of compressing it again."""
        if self.gzip is not None:
            return self.gzip
        if self._gzipping is None:
            plain = self.plain if self.plain is not None else self._build()
            self._gzipping = asyncio.ensure_future(asyncio.to_thread(_gzip, plain))
        try:
            result = await asyncio.shield(self._gzipping)
        except Exception:
            self._gzipping = None  # let a later request try again
            raise
        self.gzip = result
        return result

    @property
    def size(self) -> int:
        return len(self.plain or b"") + len(self.gzip or b"")


def _gzip(data: bytes) -> bytes:
    compressor = zlib.compressobj(GZIP_LEVEL, zlib.DEFLATED, 31)  # 31: gzip wrapper, no name, mtime 0
    return compressor.compress(data) + compressor.flush()


class LazyEntries(Mapping[str, CatalogEntry]):
    """``id -> CatalogEntry`` built on access from the kept bytes (for the doctor's rare lookups)."""

    def __init__(self, by_id: Mapping[str, PackedEntry]) -> None:
        self._by_id = by_id

    def __getitem__(self, model_id: str) -> CatalogEntry:
        return self._by_id[model_id].entry()

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, model_id: object) -> bool:
        return model_id in self._by_id


def _content_hash(entries: Iterable[PackedEntry], tiers: dict[str, TierStatus]) -> str:
    """Identifies the content (not the time it was fetched): a refresh that finds the same catalogue keeps
    the snapshot, so clients' cached copies and ETags stay valid."""
    digest = hashlib.blake2b(digest_size=16)
    digest.update(orjson.dumps({k: v.as_json() for k, v in tiers.items()}, option=orjson.OPT_SORT_KEYS))
    for e in entries:
        digest.update(e.key)  # a digest of the entry's exact JSON
    return digest.hexdigest()


class CatalogSnapshot:
    """An immutable catalogue: pooled entries, per-tier status, and the bodies built from them."""

    def __init__(
        self,
        entries: Sequence[PackedEntry],
        fetched_at: float,
        tiers: dict[str, TierStatus],
    ) -> None:
        self.entries: tuple[PackedEntry, ...] = tuple(entries)
        self.fetched_at = fetched_at
        self.tiers = tiers
        self.packed: dict[str, PackedEntry] = {e.id: e for e in self.entries}
        self.by_id: Mapping[str, CatalogEntry] = LazyEntries(self.packed)
        self.content_hash = _content_hash(self.entries, tiers)
        self._bodies: OrderedDict[bytes, Body] = OrderedDict()

    @classmethod
    def like(cls, other: CatalogSnapshot, fetched_at: float, tiers: dict[str, TierStatus]) -> CatalogSnapshot:
        """``other``'s entries fetched again (by another key that got the same lists, or by the same key):
        its entries and lookups are shared, not copied; they never change once made."""
        snapshot = cls.__new__(cls)
        snapshot.entries, snapshot.packed, snapshot.by_id = other.entries, other.packed, other.by_id
        snapshot.fetched_at = fetched_at
        snapshot.tiers = tiers
        snapshot.content_hash = (
            other.content_hash if tiers == other.tiers else _content_hash(other.entries, tiers)
        )
        snapshot._bodies = OrderedDict()
        return snapshot

    @classmethod
    def build(
        cls,
        entries: Iterable[CatalogEntry],
        fetched_at: float,
        tiers: dict[str, TierStatus],
        pool: EntryPool | None = None,
    ) -> CatalogSnapshot:
        pool = pool if pool is not None else EntryPool()
        return cls(pool.adopt(serialise(entries)), fetched_at, tiers)

    def shows(self, redactor: KeyRedactor) -> bool:
        """Whether any entry holds a run of the redactor's keys (searched in the blobs the entries sit in, so
        an entry of another snapshot sharing a blob may answer yes: never a wrong no)."""
        blobs = {id(e._blob): e._blob.data for e in self.entries}
        return any(redactor.found_in(data) for data in blobs.values())

    def same_content(self, other: CatalogSnapshot | None) -> bool:
        return other is not None and other.content_hash == self.content_hash

    def models_json(self, entries: Sequence[PackedEntry], fields: Fields = "full") -> bytes:
        parts = (e.summary for e in entries) if fields == "summary" else (e.full for e in entries)
        return b"[" + b",".join(parts) + b"]"

    def meta(self, count: int, stale: bool, error: ErrorInfo | None) -> dict[str, Any]:
        return {
            "count": count,
            "total": len(self.entries),
            "fetched_at": self.fetched_at,
            "stale": stale,
            "tiers": {name: status.as_json() for name, status in self.tiers.items()},
            "error": error.model_dump() if error else None,
        }

    def body(self, variant: Variant) -> Body:
        """The answer for this variant, from the cache when it was asked for before."""
        key = variant.key()
        cached = self._bodies.get(key)
        if cached is not None:
            self._bodies.move_to_end(key)
            return cached
        # Everything the bytes depend on: the content, the variant and the fetch time in the meta.
        seed = b"%s|%r|" % (self.content_hash.encode(), self.fetched_at)
        # 96 bits, base64url: plenty for a validator, and short (it crosses the wire twice per reload).
        tag = base64.urlsafe_b64encode(hashlib.blake2b(seed + key, digest_size=12).digest()).decode()

        def build() -> bytes:
            entries = filter_entries(
                self.entries,
                tier=variant.tier,
                query=variant.query,
                capabilities=variant.capabilities,
                sort=variant.sort,
                include_routers=variant.include_routers,
            )
            meta = orjson.dumps(self.meta(len(entries), variant.stale, variant.error))
            return b'{"models":' + self.models_json(entries, variant.fields) + b"," + meta[1:]

        made = Body(tag, build)
        self._bodies[key] = made
        self._trim_cache()
        return made

    def _trim_cache(self) -> None:
        while len(self._bodies) > MAX_CACHED_VARIANTS or (
            len(self._bodies) > 1 and sum(b.size for b in self._bodies.values()) > MAX_CACHED_BYTES
        ):
            self._bodies.popitem(last=False)

    def cached_bytes(self) -> int:
        return sum(b.size for b in self._bodies.values())

    def to_store(self) -> bytes:
        """The snapshot as the store keeps it: zlib-compressed JSON (an eighth of the bytes through
        SQLite's page cache and on disk). CPU-bound for ~10 ms: call it from a worker thread."""
        tiers = {k: v.as_json() for k, v in self.tiers.items()}
        plain = b'{"tiers":' + orjson.dumps(tiers) + b',"models":' + self.models_json(self.entries) + b"}"
        return zlib.compress(plain, STORE_LEVEL)


def read_stored(
    payload: bytes, redact: Callable[[CatalogEntry], CatalogEntry] | None = None
) -> tuple[Serialised, dict[str, TierStatus]]:
    """A stored snapshot's entries, validated again (a snapshot written by another version must not slip
    past the contract) and serialised anew, with its tiers' status."""
    # Plain JSON is what versions before compression stored.
    raw = from_json(payload if payload[:1] == b"{" else zlib.decompress(payload), cache_strings="keys")
    entries = (CatalogEntry.model_validate(item) for item in raw["models"])
    out = serialise(entries if redact is None else map(redact, entries))
    tiers = {
        k: TierStatus(v["ok"], v["count"], ErrorInfo(**v["error"]) if v.get("error") else None)
        for k, v in raw.get("tiers", {}).items()
    }
    return out, tiers
