"""Lenient parsing of NanoGPT payloads into typed records.

NanoGPT's model feed is only partly documented and changes without notice (see the fixtures README and
reference/nanogpt-api.md): prices carry float noise, ``cost_estimate`` has three types, capabilities are
partial, undocumented fields come and go. The rule here is therefore "keep what is usable, drop what is
not, never fail the whole list for one entry": every field is coerced on its own, a value of the wrong
type becomes ``None`` (the entry is kept), and only an entry without a usable ``id`` is skipped.
Only a body whose *top level* is unusable raises :class:`MalformedResponseError`.

The coercion is hand-written instead of pydantic field validation because pydantic's lax mode would
accept things we must not believe (``"true"`` as a capability, ``True`` as a context length); pydantic
still types and freezes the result, which is what the rest of the service consumes.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import from_json

from nanogpt_companion import domain
from nanogpt_companion.nanogpt.errors import MalformedResponseError


class UpstreamModel(BaseModel):
    """One entry of a NanoGPT model list, as NanoGPT described it (no merging, no derived fields).

    Units: ``prompt_per_1m``/``completion_per_1m`` are USD per 1M tokens (converted when the entry's
    ``unit`` says otherwise); the cache prices are kept *per 1K tokens* exactly as NanoGPT sends them,
    which the field names say, so the catalogue converts them once and on purpose.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    id: str
    name: str | None = None
    description: str | None = None
    created: int | None = None
    owned_by: str | None = None  # unreliable ("organization-owner"); take the vendor from the id
    context_length: int | None = None
    max_output_tokens: int | None = None
    capabilities: dict[str, bool] = Field(default_factory=dict)  # only stated flags; missing = unknown
    input_modalities: list[str] | None = None
    reasoning_efforts: list[str] | None = None
    prompt_per_1m: float | None = None
    completion_per_1m: float | None = None
    cache_read_per_1k: float | None = None
    cache_write_per_1k: float | None = None
    per_request: float | None = None  # USD charged per request on top of (or instead of) token prices
    currency: str | None = None
    icon_url: str | None = None  # raw, usually relative ("/icons/OpenAI.svg")
    cost_estimate: str | None = None
    category: str | None = None
    subscription_included: bool | None = None
    subscription_multiplier: float | None = None
    subscription_note: str | None = None


_UPSTREAM_FIELDS: Final[set[str]] = frozenset(UpstreamModel.model_fields)  # type: ignore[assignment]


class SkippedEntry(BaseModel):
    """A list entry we could not use, with why (for one summarising warning, never per entry)."""

    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    index: int
    id: str | None = None
    reason: str


class ParsedModelList(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    models: list[UpstreamModel]
    skipped: list[SkippedEntry]


# ---------------------------------------------------------------------------------------------------------
# Scalar coercion. Each returns None for anything it cannot trust; none of them can raise.

_MAX_INT: Final = 2**53  # beyond this a JSON number is not a real count or timestamp


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _nonempty_str(value: object) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _float(value: object) -> float | None:
    """A finite number; numeric strings accepted because NanoGPT sends some numbers as strings."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        result = float(value)
    elif isinstance(value, str):
        try:
            result = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    return result if math.isfinite(result) else None


def _int(value: object) -> int | None:
    """A non-negative whole number (counts, sizes, timestamps); integral floats accepted."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if 0 <= value <= _MAX_INT else None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value) if 0 <= value <= _MAX_INT else None
    return None


def _bool(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def _str_list(value: object) -> list[str] | None:
    if not isinstance(value, list):
        return None
    return [item for item in value if isinstance(item, str)]


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _cost_estimate(value: object) -> str | None:
    """``"$$"`` stays, a number becomes its text, ``{"cheap": true}`` becomes ``"cheap"``."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else None
    if isinstance(value, dict):
        for key, flag in value.items():
            if flag is True and isinstance(key, str) and key:
                return key
    return None


# Multipliers from a stated pricing unit to "per 1M tokens". A missing unit means per-1M, the documented
# default; an unknown unit makes the prices unknown rather than wrong by a factor of 1000.
_UNIT_TO_PER_1M: Final[dict[str, float]] = {
    "per_million_tokens": 1.0,
    "per_1m_tokens": 1.0,
    "per_thousand_tokens": 1000.0,
    "per_1k_tokens": 1000.0,
    "per_token": 1_000_000.0,
}


_PER_REQUEST_UNITS: Final[frozenset[str]] = frozenset({"per_request", "per_call", "request"})


def _per_request(pricing: Mapping[str, Any]) -> float | None:
    """A price per request: ``request``/``perRequest`` (USD), or the prompt price under a per-request
    unit. Such models cost the same for one token or a million, which a token estimate must not hide."""
    for name in ("request", "perRequest", "per_request"):
        value = _float(pricing.get(name))
        if value is not None and value > 0:
            return value
    if pricing.get("unit") in _PER_REQUEST_UNITS:
        return _float(pricing.get("prompt"))
    return None


def _prices(pricing: Mapping[str, Any]) -> tuple[float | None, float | None, str | None]:
    unit = pricing.get("unit")
    factor = 1.0 if unit is None else _UNIT_TO_PER_1M.get(unit, 0.0) if isinstance(unit, str) else 0.0
    prompt = _float(pricing.get("prompt"))
    completion = _float(pricing.get("completion"))
    if prompt is None and completion is None:
        # Provider-selection style: explicitly per 1K, whatever ``unit`` says.
        prompt_1k = _float(pricing.get("inputPer1kTokens"))
        completion_1k = _float(pricing.get("outputPer1kTokens"))
        prompt = None if prompt_1k is None else prompt_1k * 1000.0
        completion = None if completion_1k is None else completion_1k * 1000.0
    elif factor == 0.0:
        prompt = completion = None
    elif factor != 1.0:
        prompt = None if prompt is None else prompt * factor
        completion = None if completion is None else completion * factor
    return prompt, completion, _nonempty_str(pricing.get("currency"))


MAX_ID_LENGTH = 200


def _usable_id(model_id: str) -> bool:
    return len(model_id) <= MAX_ID_LENGTH and not any(c.isspace() or not c.isprintable() for c in model_id)


def parse_model_entry(raw: object) -> UpstreamModel | str:
    """One list entry -> a model, or the reason it was skipped. Never raises."""
    if not isinstance(raw, dict):
        return f"entry is {type(raw).__name__}, not an object"
    model_id = raw.get("id")
    if not isinstance(model_id, str) or not model_id.strip():
        return "missing or non-string id"
    if not _usable_id(model_id):
        # Junk rows (ids with spaces, line breaks or control characters, or absurdly long): no request can
        # name such a model, so a user could only pick it by mistake.
        return "unusable id"
    pricing = _mapping(raw.get("pricing"))
    prompt, completion, currency = _prices(pricing)
    subscription = _mapping(raw.get("subscription"))
    capabilities = {
        key: flag for key, flag in _mapping(raw.get("capabilities")).items() if isinstance(flag, bool)
    }
    return UpstreamModel.model_construct(
        # model_construct: every value above is already coerced to its field type, and validating 600
        # entries again on each refresh would only repeat that work. Every field is given, so every
        # entry shares one "fields set" (pydantic would otherwise build a 2 KB set per entry).
        _UPSTREAM_FIELDS,
        id=model_id,
        name=_nonempty_str(raw.get("name")),
        description=_str(raw.get("description")),
        created=_int(raw.get("created")),
        owned_by=_nonempty_str(raw.get("owned_by")),
        context_length=_int(raw.get("context_length")),
        max_output_tokens=_int(raw.get("max_output_tokens")),
        capabilities=capabilities,
        input_modalities=_str_list(_mapping(raw.get("architecture")).get("input_modalities")),
        reasoning_efforts=_str_list(raw.get("reasoning_efforts")),
        prompt_per_1m=prompt,
        completion_per_1m=completion,
        cache_read_per_1k=_float(pricing.get("cacheReadInputPer1kTokens")),
        cache_write_per_1k=_float(pricing.get("cacheWriteInputPer1kTokens")),
        per_request=_per_request(pricing),
        currency=currency,
        icon_url=_nonempty_str(raw.get("icon_url")),
        cost_estimate=_cost_estimate(raw.get("cost_estimate")),
        category=_nonempty_str(raw.get("category")),
        subscription_included=_bool(subscription.get("included")),
        subscription_multiplier=_float(subscription.get("inputTokenMultiplier")),
        subscription_note=_nonempty_str(subscription.get("note")),
    )


def _loads(raw: bytes, what: str) -> object:
    """Why pydantic-core's parser (jiter) and not orjson: orjson's reader takes a working buffer of about
    twelve times the document (measured: 10.7 MB at peak for a 0.75 MB model list), which glibc keeps in
    the heap after the first such list; jiter peaks at what it builds. Only keys are cached: a cache of
    values would keep thousands of model-list strings alive for the service's lifetime."""
    try:
        return from_json(raw, allow_inf_nan=False, cache_strings="keys")
    except ValueError as exc:
        hint = "it looks truncated" if raw.strip()[:1] in (b"{", b"[") else "it is not JSON"
        raise MalformedResponseError(
            f"NanoGPT sent an unreadable {what} ({len(raw)} bytes; {hint}: {exc}). "
            "This is usually temporary; try again in a minute."
        ) from None


def _object(raw: bytes, what: str) -> Mapping[str, Any]:
    data = _loads(raw, what)
    if not isinstance(data, dict):
        raise MalformedResponseError(
            f"NanoGPT sent a {what} in an unexpected shape (a JSON {type(data).__name__}, not an object)."
        )
    return data


class _ModelListBuilder:
    """Collects parsed entries; a repeated id keeps its first entry (the catalogue is keyed by id and a
    second copy can only disagree)."""

    def __init__(self) -> None:
        self.models: list[UpstreamModel] = []
        self.skipped: list[SkippedEntry] = []
        self._seen: set[str] = set()

    def add(self, index: int, entry: object) -> None:
        parsed = parse_model_entry(entry)
        if isinstance(parsed, str):
            raw_id = entry.get("id") if isinstance(entry, dict) else None
            shown = raw_id[:120] if isinstance(raw_id, str) and raw_id.strip() else None
            self.skipped.append(SkippedEntry(index=index, id=shown, reason=parsed))
        elif parsed.id in self._seen:
            self.skipped.append(SkippedEntry(index=index, id=parsed.id, reason="duplicate id"))
        else:
            self._seen.add(parsed.id)
            self.models.append(parsed)

    def result(self) -> ParsedModelList:
        return ParsedModelList(models=self.models, skipped=self.skipped)


def _model_list_entries(raw: bytes) -> list[Any]:
    data = _object(raw, "model list")
    entries = data.get("data")
    if not isinstance(entries, list):
        raise MalformedResponseError(
            "NanoGPT sent a model list without a 'data' array; the API may have changed."
        )
    return entries


def parse_model_list(raw: bytes) -> ParsedModelList:
    """``{"object": "list", "data": [...]}`` -> usable models plus the entries skipped and why."""
    builder = _ModelListBuilder()
    for index, entry in enumerate(_model_list_entries(raw)):
        builder.add(index, entry)
    return builder.result()


async def parse_model_list_async(raw: bytes, *, chunk: int = 50) -> ParsedModelList:
    """``parse_model_list`` for a server: yields to the event loop every ``chunk`` entries.

    A detailed list is ~600 entries and tens of ms of CPU; in one piece it would stall every request
    the service is answering meanwhile. Cooperative chunks bound that stall to about a millisecond.
    """
    builder = _ModelListBuilder()
    for index, entry in enumerate(_model_list_entries(raw)):
        builder.add(index, entry)
        if index % chunk == chunk - 1:
            await asyncio.sleep(0)
    return builder.result()


def parse_balance(raw: bytes) -> domain.Balance:
    """``{"usd_balance": "129.46956147", "nano_balance": "0", ...}``; numbers arrive as strings."""
    data = _object(raw, "balance")
    if "usd_balance" not in data and "nano_balance" not in data:
        raise MalformedResponseError("NanoGPT's balance answer has no usd_balance or nano_balance field.")
    return domain.Balance(usd=_float(data.get("usd_balance")), xno=_float(data.get("nano_balance")))


# Upstream bucket names -> our snake_case keys. Current plans count input tokens and images; legacy plans
# counted operations per day and month.
_CURRENT_BUCKETS: Final[dict[str, domain.QuotaName]] = {
    "weeklyInputTokens": "weekly_input_tokens",
    "dailyInputTokens": "daily_input_tokens",
    "dailyImages": "daily_images",
}
_LEGACY_BUCKETS: Final[dict[str, domain.QuotaName]] = {"daily": "daily", "monthly": "monthly"}


def _bucket(raw: Mapping[str, Any], limit: float | None) -> tuple[domain.QuotaBucket, bool]:
    used = _float(raw.get("used"))
    percent = _float(raw.get("percentUsed"))
    if percent is None and used is not None and limit:
        percent = used / limit
    bucket = domain.QuotaBucket(
        used=used,
        remaining=_float(raw.get("remaining")),
        limit=limit,
        percent_used=percent,
        reset_at=_int(raw.get("resetAt")),
    )
    return bucket, raw.get("degraded") is True


def parse_subscription_usage(raw: bytes) -> domain.SubscriptionState:
    """Every known shape of ``/subscription/v1/usage`` -> one normalised state.

    A bucket that is ``null`` (or absent) is a window the plan does not have, so it is left out rather
    than shown as zero. ``degraded`` means NanoGPT could not read its counters: the buckets are kept (they
    say which windows exist) but their numbers are unknown.
    """
    data = _object(raw, "subscription usage answer")
    limits = _mapping(data.get("limits"))
    names_present = set(data) | set(limits)
    shape: Literal["current", "legacy", "unknown"] = "unknown"
    mapping: dict[str, domain.QuotaName] = {}
    if names_present & _CURRENT_BUCKETS.keys():
        shape, mapping = "current", _CURRENT_BUCKETS
    elif names_present & _LEGACY_BUCKETS.keys():
        shape, mapping = "legacy", _LEGACY_BUCKETS
    buckets: dict[domain.QuotaName, domain.QuotaBucket] = {}
    degraded = data.get("degraded") is True
    for upstream_name, name in mapping.items():
        raw_bucket = data.get(upstream_name)
        if isinstance(raw_bucket, dict):
            bucket, bucket_degraded = _bucket(raw_bucket, _float(limits.get(upstream_name)))
            buckets[name] = bucket
            degraded = degraded or bucket_degraded

    state = _nonempty_str(data.get("state"))
    active = _bool(data.get("active"))
    if active is None:
        active = _bool(data.get("subscribed"))
    if active is None:
        active = state in ("active", "grace")

    routing = _mapping(data.get("routing"))

    def routed(key: str) -> object:
        return routing[key] if key in routing else data.get(key)

    return domain.SubscriptionState(
        active=active,
        state=state,
        shape=shape,
        degraded=degraded,
        allow_overage=_bool(data.get("allowOverage")),
        period_end=_nonempty_str(_mapping(data.get("period")).get("currentPeriodEnd")),
        buckets=buckets,
        recommended_mode=_nonempty_str(routed("recommendedMode")),
        routing_reason=_nonempty_str(routed("reason")),
        quota_available=_bool(routed("subscriptionQuotaAvailable")),
    )


# ---- provider selection and image models (reference/nanogpt-api.md section 2, 5.6) ----------------------


def _per_1m(per_1k: object) -> float | None:
    value = _float(per_1k)
    return None if value is None or value < 0 else round(value * 1000, 9)


def parse_model_providers(raw: bytes, model_id: str) -> domain.ModelProviders:
    """``{canonicalId, supportsProviderSelection, defaultPrice, providers: [{provider, available, ...}]}``.

    Entries without a provider name are dropped; ``available`` missing counts as available (ST 1.18.0
    src/endpoints/nanogpt.js L126 treats only ``available === false`` as unavailable).
    """
    data = _object(raw, "provider list")
    providers: list[domain.ProviderOption] = []
    seen: set[str] = set()
    raw_list = data.get("providers")
    for item in raw_list if isinstance(raw_list, list) else []:
        entry = _mapping(item)
        pid = _nonempty_str(entry.get("provider")) or _nonempty_str(entry.get("id"))
        if pid is None or pid.lower() in seen:
            continue
        seen.add(pid.lower())
        pricing = _mapping(entry.get("pricing"))
        providers.append(
            domain.ProviderOption(
                id=pid.strip(),
                label=_nonempty_str(entry.get("label")) or _nonempty_str(entry.get("name")),
                available=_bool(entry.get("available")) is not False,
                prompt=_per_1m(pricing.get("inputPer1kTokens")),
                completion=_per_1m(pricing.get("outputPer1kTokens")),
            )
        )
    default = _mapping(data.get("defaultPrice"))
    return domain.ModelProviders(
        model=_nonempty_str(data.get("canonicalId")) or model_id,
        supports_selection=_bool(data.get("supportsProviderSelection")) is True,
        providers=providers,
        default_prompt=_per_1m(default.get("inputPer1kTokens")),
        default_completion=_per_1m(default.get("outputPer1kTokens")),
    )


def parse_provider_names(raw: bytes) -> dict[str, str]:
    """The master list ``{providers: [{id, label}]}`` -> id -> label (unusable entries dropped)."""
    data = _object(raw, "provider list")
    names: dict[str, str] = {}
    raw_list = data.get("providers")
    for item in raw_list if isinstance(raw_list, list) else []:
        entry = _mapping(item)
        pid = _nonempty_str(entry.get("id"))
        if pid is not None:
            names[pid.strip()] = _nonempty_str(entry.get("label")) or pid.strip()
    return names


def _image_prices(value: object) -> dict[str, float]:
    single = _float(value)
    if single is not None:
        return {"": single} if single >= 0 else {}
    prices: dict[str, float] = {}
    for resolution, price in _mapping(value).items():
        number = _float(price)
        if isinstance(resolution, str) and number is not None and number >= 0:
            prices[resolution] = number
    return prices


def parse_image_models(raw: bytes) -> list[domain.ImageModel]:
    """The legacy ``/api/models`` answer's ``models.image`` map, read the way ST 1.18.0 reads it
    (src/endpoints/stable-diffusion.js L1413-1422): the id is ``model`` (else the map key), the name ``name``.
    """
    data = _object(raw, "model list")
    image = _mapping(data.get("models")).get("image")
    if not isinstance(image, dict):
        raise MalformedResponseError("NanoGPT's model list has no image models section.")
    models: list[domain.ImageModel] = []
    for map_key, item in image.items():
        entry = _mapping(item)
        model_id = _nonempty_str(entry.get("model")) or _nonempty_str(map_key)
        if model_id is None:
            continue
        subscription = _mapping(entry.get("subscription"))
        models.append(
            domain.ImageModel(
                id=model_id,
                name=_nonempty_str(entry.get("name")) or model_id,
                description=_nonempty_str(entry.get("description")),
                prices=_image_prices(entry.get("cost")),
                subscription_included=_bool(subscription.get("included")),
            )
        )
    models.sort(key=lambda m: m.name.lower())
    return models
