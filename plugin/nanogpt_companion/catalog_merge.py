"""Merging NanoGPT's tier lists into catalogue entries: one entry per model id, with the lists that have it.

Apart from the service (``catalog``) because the helper process that parses a round (``catalog_round``)
runs it too, and must not import the HTTP stack to do so.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from nanogpt_companion.domain import CatalogEntry, Pricing, SubscriptionCoverage, Tier
from nanogpt_companion.nanogpt.schemas import UpstreamModel

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
    merger = TierMerger()
    for tier, models in lists.items():
        merger.add(tier, models)
    return list(merger.entries())


class TierMerger:
    """``merge_tiers`` fed one list at a time, in any order, keeping only what the merge reads: each id's
    model from the first list in ``TIER_ORDER`` that has it, and which lists have it.

    Why: a round parses four lists (~1,800 models); holding them all until the merge raised the round's
    peak by a few MB of small objects, and the heap keeps a peak's arenas for good (a few long-lived
    objects made meanwhile pin them). Fed as each list is parsed, at most one list is alive beside the
    ~600 models kept.
    """

    def __init__(self) -> None:
        self._first: dict[str, tuple[int, UpstreamModel]] = {}
        self._tiers: dict[str, set[Tier]] = {}
        self.listed: set[Tier] = set()

    def add(self, tier: Tier, models: Iterable[UpstreamModel]) -> None:
        rank = TIER_ORDER.index(tier)
        self.listed.add(tier)
        for model in models:
            held = self._first.get(model.id)
            if held is None or rank < held[0]:
                self._first[model.id] = (rank, model)
            self._tiers.setdefault(model.id, set()).add(tier)

    def entries(self) -> Iterator[CatalogEntry]:
        """The merged entries, in id order, one at a time.

        Lazily: a refresh serialises each entry as it comes, so only one ``CatalogEntry`` (~3 KB of small
        objects) is alive at a time instead of 600."""
        first = {model_id: model for model_id, (_, model) in self._first.items()}
        tiers = {model_id: [t for t in TIER_ORDER if t in found] for model_id, found in self._tiers.items()}
        have_sub = Tier.SUBSCRIPTION in self.listed
        have_paid = Tier.PAID in self.listed
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


def upstream_from_entry(entry: CatalogEntry) -> UpstreamModel:
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
