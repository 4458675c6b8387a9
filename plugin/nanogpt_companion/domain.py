"""Typed records shared by the services, the doctor rules and the HTTP API.

They live here, below everything else, so that the pure doctor can reason about the catalogue and the
account without importing the services that produce them (the dependency arrows point one way).
Field names are the JSON contract with the ST extension: renaming one is an API change.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Tier(StrEnum):
    """A NanoGPT model list. A model's ``tiers`` say which lists it appeared in."""

    V1 = "v1"  # canonical list; with a subscriber's key it may be cut down to subscription models
    SUBSCRIPTION = "subscription"  # always only subscription-included models
    PAID = "paid"  # always only models outside the subscription
    PERSONALIZED = "personalized"  # the account's "visible" models; needs a key


class Record(BaseModel):
    """Base for contract records: immutable, unknown fields rejected (we produce these ourselves).

    ``defer_build``: a record's validator is built when it is first used, not at import. An idle service
    never uses many of the package's models (request bodies, provider lists, ...); building all of them
    up front cost ~0.9 MB of memory for good. Every model of the package is declared the same way.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)


class Pricing(Record):
    """USD per 1M tokens for every token field (cache prices are converted from NanoGPT's per-1K);
    ``per_request`` is USD per request, for models NanoGPT prices that way."""

    prompt: float | None = None
    completion: float | None = None
    cache_read: float | None = None
    cache_write: float | None = None
    per_request: float | None = None
    currency: str = "USD"


class SubscriptionCoverage(Record):
    """Whether a subscription covers the model and how heavily its input tokens count against quota."""

    included: bool | None = None  # None = unknown (no subscription list and no per-model flag)
    input_multiplier: float | None = None
    note: str | None = None


class CatalogEntry(Record):
    """One model id, merged across every tier list it appeared in."""

    id: str
    name: str
    vendor: str
    description: str | None = None
    created: int | None = None  # release date (unix seconds) as NanoGPT reports it
    context_length: int | None = None
    max_output_tokens: int | None = None
    # Only flags NanoGPT stated; a missing flag means unknown, never false.
    capabilities: dict[str, bool] = Field(default_factory=dict)
    input_modalities: list[str] | None = None
    reasoning_efforts: list[str] | None = None
    tiers: list[Tier] = Field(default_factory=list)
    pricing: Pricing = Field(default_factory=Pricing)
    subscription: SubscriptionCoverage = Field(default_factory=SubscriptionCoverage)
    category: str | None = None
    cost_estimate: str | None = None  # "$", "$$", "cheap" or a number rendered as text
    icon_url: str | None = None  # absolute
    # Thinking variants: a variant names its base; a base lists its variants (both ids in the catalogue).
    thinking_base: str | None = None
    thinking_variants: list[str] = Field(default_factory=list)
    is_router: bool = False  # auto-model*, nano-gpt-help and other selectors that are not real models


class PriceSummary(Record):
    """The prices the catalogue list shows (USD per 1M tokens)."""

    prompt: float | None = None
    completion: float | None = None


class CoverageSummary(Record):
    included: bool | None = None
    input_multiplier: float | None = None


class CatalogSummary(Record):
    """A catalogue entry as the list shows it (``GET /api/catalog?fields=summary``): what the extension's
    browser and select labels use, without descriptions, icons or cache prices (``/api/catalog/model``)."""

    id: str
    name: str
    vendor: str
    created: int | None = None
    context_length: int | None = None
    capabilities: dict[str, bool] = Field(default_factory=dict)
    tiers: list[Tier] = Field(default_factory=list)
    pricing: PriceSummary = Field(default_factory=PriceSummary)
    subscription: CoverageSummary = Field(default_factory=CoverageSummary)
    thinking_base: str | None = None
    thinking_variants: list[str] = Field(default_factory=list)
    is_router: bool = False


class QuotaBucket(Record):
    """One subscription window. ``percent_used`` is a fraction that may exceed 1."""

    used: float | None = None
    remaining: float | None = None
    limit: float | None = None
    percent_used: float | None = None
    reset_at: int | None = None  # epoch milliseconds


QuotaName = Literal["weekly_input_tokens", "daily_input_tokens", "daily_images", "daily", "monthly"]


class SubscriptionState(Record):
    active: bool = False
    state: str | None = None  # active | grace | inactive | ...
    shape: Literal["current", "legacy", "unknown"] = "unknown"
    degraded: bool = False  # NanoGPT could not look the counters up: show "unknown"
    allow_overage: bool | None = None
    period_end: str | None = None
    buckets: dict[QuotaName, QuotaBucket] = Field(default_factory=dict)  # configured windows only
    recommended_mode: str | None = None  # routing.recommendedMode: subscription | paygo | unavailable
    routing_reason: str | None = None
    quota_available: bool | None = None


class Balance(Record):
    usd: float | None = None
    xno: float | None = None


KeyStatus = Literal["ok", "missing", "rejected", "error"]


class ErrorInfo(Record):
    code: str
    message: str


class AccountSnapshot(Record):
    """A user's balance and subscription usage as last seen. ``stale`` when the last poll failed."""

    key_status: KeyStatus
    key_source: Literal["config", "sillytavern", "none"] = "none"
    balance: Balance | None = None
    subscription: SubscriptionState | None = None
    fetched_at: float | None = None  # unix seconds of the last successful poll
    stale: bool = False
    error: ErrorInfo | None = None
    checked_at: float | None = None  # unix seconds NanoGPT was last asked (answered or not)
    low_balance: bool | None = None  # USD balance under the user's alert threshold (None: no balance)
    low_balance_usd: float | None = None  # that threshold


class ProviderOption(Record):
    """One provider NanoGPT can route a model to. Prices are USD per 1M tokens (NanoGPT sends per 1K)."""

    id: str
    label: str | None = None  # from NanoGPT's master list when it names the provider
    available: bool = True
    prompt: float | None = None
    completion: float | None = None


class ModelProviders(Record):
    """NanoGPT's provider-selection answer for one model (``GET /api/models/{id}/providers``)."""

    model: str
    known: bool = True  # False: NanoGPT does not know the id (404)
    supports_selection: bool = False
    providers: list[ProviderOption] = Field(default_factory=list)
    default_prompt: float | None = None  # USD per 1M tokens without a provider choice
    default_completion: float | None = None
    fetched_at: float | None = None

    def provider(self, provider_id: str) -> ProviderOption | None:
        wanted = provider_id.strip().lower()
        return next((p for p in self.providers if p.id.lower() == wanted), None)

    @property
    def available(self) -> list[ProviderOption]:
        return [p for p in self.providers if p.available]


class ImageModel(Record):
    """One image model of NanoGPT's legacy ``/api/models`` image map (what ST's Image Generation lists)."""

    id: str
    name: str
    description: str | None = None
    # USD per image: by resolution ("1024x1024") when NanoGPT says so, else one price under "".
    prices: dict[str, float] = Field(default_factory=dict)
    subscription_included: bool | None = None
