"""A fake NanoGPT upstream: a real aiohttp app serving the endpoints the companion reads.

Every service test suite and the benchmarks talk to this instead of nano-gpt.com. It reproduces what
the reference notes and fixtures describe (reference/nanogpt-api.md, fixtures/nanogpt/README.md):
- the four model lists with their visibility rules (``v1`` without a key = everything; with a
  subscriber's key = only subscription models; ``personalized`` needs a valid key),
- a generated catalogue of realistic size built from the fixture entries, with every documented quirk,
- ``check-balance`` (POST, ``x-api-key``) and ``subscription/v1/usage`` in all four fixture shapes,
- switchable faults per route (latency, 401/402/429/5xx, resets, truncated/invalid JSON, a huge body),
- live catalogue mutation and a request log that records a key *id* (last 4 chars), never a key,
- accounts that pay for inference: every answered chat/text completion is charged when it ends, to the
  subscription (input tokens x the model's multiplier, or one operation on an old daily/monthly plan) when
  a subscriber uses an included model outside ``paid/v1`` without ``billing_mode: paygo``, else to the USD
  balance (tokens x the model's per-1M prices, plus a per-request price when the model has one); each
  charge is kept in ``charges`` so a test knows the truth the companion has to measure.

Run standalone for benchmarks and manual checks:
``python -m tests.fakes.nanogpt_upstream --port 8790 --latency 0.15 --models 600``.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import fnmatch
import logging
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any, ClassVar, Literal

import orjson
from aiohttp import web

from tests.fakes.nanogpt_inference import InferenceBehaviour, Reply, add_inference_routes
from tests.fakes.nanogpt_providers import ProviderBehaviour, add_provider_routes
from tests.fixtures import NANOGPT_FIXTURES

logger = logging.getLogger(__name__)

# Keys shared with the ST secrets fixtures (fixtures/sillytavern/secrets.*.json), so ST-file tests and
# the upstream agree about who is who. All values are FAKE.
SUBSCRIBER_KEY = "sk-nano-FAKE-111111111111"  # the active entry of secrets.multi-key.example.json
PAYG_KEY = "sk-nano-FAKE-000000000000"  # valid, no subscription; the inactive multi-key entry
LEGACY_FLAT_KEY = PAYG_KEY  # secrets.legacy-flat.example.json holds the same value
LEGACY_PLAN_KEY = "sk-nano-FAKE-333333333333"  # subscriber on an old daily/monthly plan
DEGRADED_KEY = "sk-nano-FAKE-444444444444"  # subscriber whose usage counters NanoGPT cannot read
INVALID_KEY = "sk-nano-FAKE-999999999999"  # looks right, NanoGPT does not know it

UsageShape = Literal["current", "legacy", "degraded", "inactive"]
FaultKind = Literal["latency", "status", "reset", "truncated", "invalid_json", "huge_body"]

ROUTER_IDS = (
    "auto-model-basic",
    "auto-model-standard",
    "auto-model-premium",
)  # "auto-model" is in the sample
HUGE_BODY_BYTES = 20 * 1024 * 1024
_CHUNK = 64 * 1024


def fixtures_dir() -> Path:
    """The NanoGPT payload fixtures (``tests/fixtures/nanogpt``, or ``$NANOGPT_COMPANION_FIXTURES``)."""
    return NANOGPT_FIXTURES


@cache
def _fixture_bytes(name: str) -> bytes:
    # Read-only file contents: caching them is safe and keeps 600-model generation per test cheap.
    return (fixtures_dir() / name).read_bytes()


def load_fixture(name: str) -> Any:
    """A fresh (mutable) copy of a fixture file's JSON."""
    return orjson.loads(_fixture_bytes(name))


# ---------------------------------------------------------------------------------------------------------
# Catalogue generation

_VENDORS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    # (id prefix, owned_by, icon, families)
    ("openai", "openai", "/icons/OpenAI.svg", ("gpt", "gpt-mini", "o", "gpt-oss")),
    ("anthropic", "anthropic", "/icons/Anthropic.svg", ("claude-sonnet", "claude-haiku", "claude-opus")),
    ("google", "google", "/icons/Google.svg", ("gemini-pro", "gemini-flash", "gemma")),
    ("deepseek", "deepseek", "/icons/DeepSeek.svg", ("deepseek-chat", "deepseek-r", "deepseek-v")),
    ("zai-org", "zhipu", "/icons/Zhipu.svg", ("glm", "glm-air")),
    ("alibaba", "qwen", "/icons/Qwen.svg", ("qwen", "qwen-coder", "qwen-flash")),
    ("meta-llama", "meta", "/icons/Meta.svg", ("llama", "llama-scout")),
    ("mistralai", "mistralai", "/icons/Mistral.svg", ("mistral-large", "mistral-small", "magistral")),
    ("moonshotai", "moonshot", "/icons/Moonshot.svg", ("kimi", "kimi-thinking-base")),
    ("x-ai", "xai", "/icons/xAI.svg", ("grok", "grok-mini")),
    ("ArliAI", "arliai", "/icons/ArliAI.svg", ("RPMax-Llama", "RPMax-Qwen", "Derestricted-GLM")),
    ("TheDrummer", "other", "/icons/TheDrummer.svg", ("Cydonia", "Behemoth", "Rocinante")),
    ("Sao10K", "other", "/icons/Sao10K.svg", ("Euryale", "Lunaris")),
    ("TEE", "other", "/icons/TEE.svg", ("deepseek", "glm", "qwen")),
    ("nousresearch", "nousresearch", "/icons/Nous.svg", ("hermes",)),
    ("minimax", "minimax", "/icons/MiniMax.svg", ("minimax-m",)),
)
_DESCRIPTION_TEXT = (
    "a capable general model with strong instruction following, long-context recall and tool use; "
    "tuned for roleplay, creative writing and multi-turn chat; supports structured output and function "
    "calling; well suited to agentic coding tasks, retrieval-augmented generation and summarisation of "
    "long documents; served through several providers with automatic failover and at-cost pricing"
)
_WORDS = _DESCRIPTION_TEXT.split()
_PRICE_STEPS = (0.07, 0.1, 0.14, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.1, 1.25, 1.75, 2.5, 3.0, 5.0, 15.0)
_CATEGORIES = ("flagship", "mini", "reasoning", "roleplay", "coding", None)
_CAPABILITY_NAMES = (
    "vision",
    "reasoning",
    "tool_calling",
    "parallel_tool_calls",
    "structured_output",
    "pdf_upload",
    "video_input",
)


def _description(rng: random.Random, name: str) -> str:
    words = rng.choices(_WORDS, k=rng.randint(40, 110))
    return f"{name}: " + " ".join(words).capitalize() + "."


def _generated_entry(
    rng: random.Random, model_id: str, name: str, vendor: tuple[str, str, str, Any]
) -> dict[str, Any]:
    _prefix, owned_by, icon, _families = vendor
    reasoning = ":thinking" in model_id or model_id.endswith("-thinking")
    prompt = rng.choice(_PRICE_STEPS) * rng.choice((1, 1, 1.1, 3, 0.7))  # products carry float noise
    completion = prompt * rng.choice((1, 2, 3, 4, 5, 8))
    pricing: dict[str, Any] = {"prompt": prompt, "completion": completion}
    if rng.random() < 0.4:
        pricing["cacheReadInputPer1kTokens"] = prompt / 1000 * 0.1
    if rng.random() < 0.15:
        pricing["cacheWriteInputPer1kTokens"] = prompt / 1000 * 1.25
    pricing.update(currency="USD", unit="per_million_tokens")
    entry: dict[str, Any] = {
        "id": model_id,
        "object": "model",
        "created": 1_700_000_000 + rng.randrange(0, 80_000_000),
        "owned_by": "organization-owner" if rng.random() < 0.05 else owned_by,
        "name": name,
        "description": _description(rng, name),
        "context_length": None
        if rng.random() < 0.05
        else rng.choice((32768, 65536, 131072, 200000, 1048576)),
        "max_output_tokens": None if rng.random() < 0.15 else rng.choice((4096, 8192, 16384, 32000, 65536)),
    }
    roll = rng.random()
    if roll < 0.6:
        entry["capabilities"] = {cap: rng.random() < 0.5 for cap in _CAPABILITY_NAMES} | {
            "reasoning": reasoning
        }
    elif roll < 0.9:
        entry["capabilities"] = {cap: rng.random() < 0.5 for cap in rng.sample(_CAPABILITY_NAMES, 3)}
    elif roll < 0.95:
        entry["capabilities"] = {}
    # else: no capabilities at all
    entry["pricing"] = pricing
    entry["icon_url"] = icon
    cost = rng.random()
    entry["cost_estimate"] = (
        rng.choice(("$", "$$", "$$$", "$$$$"))
        if cost < 0.6
        else round(rng.uniform(0.0001, 0.02), 4)
        if cost < 0.85
        else {"cheap": True}
    )
    category = rng.choice(_CATEGORIES)
    if category is not None:
        entry["category"] = "reasoning" if reasoning else category
    if rng.random() < 0.4:
        modalities = ["text", "image"] if entry.get("capabilities", {}).get("vision") else ["text"]
        entry["architecture"] = {
            "modality": "+".join(modalities) + "->text",
            "input_modalities": modalities,
            "output_modalities": ["text"],
        }
    if reasoning and rng.random() < 0.5:
        entry["reasoning_efforts"] = rng.choice((["none", "high", "max"], ["low", "medium", "high"]))
    if rng.random() < 0.3:
        entry["distillationPolicy"] = {
            "status": rng.choice(("allowed", "disallowed", "unknown")),
            "label": "License terms",
            "basis": "license",
        }
    if rng.random() < 0.1:
        entry["someFutureField"] = {"anything": [1, 2, 3], "nested": {"deep": True}}
    return entry


def _subscription(rng: random.Random, included: bool) -> dict[str, Any]:
    if not included:
        return (
            {"included": False}
            if rng.random() < 0.5
            else {"included": False, "note": "Not included in subscription"}
        )
    multiplier = rng.choice((1, 1, 1, 1, 2, 0.5))
    note = (
        "Included in subscription"
        if multiplier == 1
        else f"Included in subscription (uses {multiplier:g}x input tokens)"
    )
    return {"included": True, "inputTokenMultiplier": multiplier, "note": note}


def generate_models(n: int = 600, seed: int = 1) -> list[dict[str, Any]]:
    """A deterministic NanoGPT-like detailed catalogue of exactly ``n`` entries (``n`` >= 20).

    The fixture sample comes first verbatim (so every documented quirk is present), then the router ids,
    then generated vendor models; about a third of generated bases get thinking variants in the forms
    NanoGPT uses. About 45 % are subscription-included; a variant shares its base's inclusion.
    """
    rng = random.Random(seed)
    models: list[dict[str, Any]] = list(load_fixture("models.detailed.sample.json")["data"])
    template = next(entry for entry in models if entry["id"] == "auto-model")
    for router_id in ROUTER_IDS:
        router = copy.deepcopy(template)
        router.update(id=router_id, name=router_id.replace("-", " ").capitalize())
        models.append(router)
    seen = {entry["id"] for entry in models}
    models = models[:n]
    serial = 0
    while len(models) < n:
        serial += 1
        vendor = rng.choice(_VENDORS)
        prefix, _owned, _icon, families = vendor
        family = rng.choice(families)
        version = f"{rng.randint(1, 6)}.{rng.randint(0, 9)}"
        base_id = f"{prefix}/{family}-{version}" + rng.choice(
            ("", "", "-instruct", f"-{rng.choice((8, 32, 70, 235))}b")
        )
        if base_id in seen:
            base_id = f"{base_id}-r{serial}"
        name = base_id.split("/", 1)[1].replace("-", " ").title()
        included = rng.random() < 0.49
        group = [(base_id, name)]
        if rng.random() < 0.35:
            if prefix == "google":
                group.append((f"{base_id}-thinking", f"{name} Thinking"))  # legacy suffix form
            else:
                group.append((f"{base_id}:thinking", f"{name} Thinking"))
                if prefix == "anthropic":
                    group.append((f"{base_id}:thinking:8192", f"{name} Thinking (8K budget)"))
                if rng.random() < 0.4:
                    group.append((f"{base_id}:thinking:max", f"{name} Thinking (max)"))
        for model_id, model_name in group:
            if len(models) >= n or model_id in seen:
                continue
            entry = _generated_entry(rng, model_id, model_name, vendor)
            entry["subscription"] = _subscription(rng, included)
            models.append(entry)
            seen.add(model_id)
    return models


def is_included(entry: dict[str, Any]) -> bool:
    """NanoGPT's subscription set: entries whose ``subscription.included`` is true."""
    subscription = entry.get("subscription")
    return isinstance(subscription, dict) and subscription.get("included") is True


def basic_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """What the list returns without ``?detailed=true``."""
    return {key: entry.get(key) for key in ("id", "object", "created", "owned_by")}


# ---------------------------------------------------------------------------------------------------------
# Accounts, faults, request log


@dataclass
class FakeAccount:
    """One NanoGPT account the fake knows, addressed by its key."""

    key: str = field(repr=False)
    subscriber: bool = False
    usd_balance: str = "129.46956147"
    nano_balance: str = "26.71801147"
    usage_shape: UsageShape | None = None  # None: "current" for subscribers, else "inactive"
    usage_payload: dict[str, Any] | None = None  # served verbatim when set (e.g. a quota at 85 %)
    show_paid_models: bool = False  # NanoGPT's "Also show paid models" account setting
    visible_models: set[str] | None = None  # personalized list; None = NanoGPT's defaults (everything)
    # Fixed when the account is made: its quota windows reset at stable times, hours from now.
    reset_shift_from: float = field(default_factory=time.time, repr=False)
    # What inference has used of the subscription since the account was made, added to every usage answer.
    quota_tokens_spent: float = 0.0
    operations_spent: int = 0

    def usage(self) -> dict[str, Any]:
        if self.usage_payload is not None:
            payload = copy.deepcopy(self.usage_payload)
        else:
            shape = self.usage_shape or ("current" if self.subscriber else "inactive")
            payload = _resets_in_the_future(
                load_fixture(f"subscription-usage.{shape}.json"), self.reset_shift_from
            )
        return _with_spent(payload, self.quota_tokens_spent, self.operations_spent)

    def charge_usd(self, amount: Decimal) -> None:
        self.usd_balance = f"{Decimal(self.usd_balance) - amount:.8f}"

    def charge_subscription(self, input_tokens: float) -> None:
        self.quota_tokens_spent += input_tokens
        self.operations_spent += 1


def _with_spent(payload: dict[str, Any], tokens: float, operations: int) -> dict[str, Any]:
    """Add what inference used to the usage buckets: input tokens to the token windows, one operation per
    request to an old plan's daily/monthly counters; ``remaining`` and ``percentUsed`` follow."""
    limits = payload.get("limits") if isinstance(payload.get("limits"), dict) else {}
    for name, amount in (
        ("weeklyInputTokens", tokens),
        ("dailyInputTokens", tokens),
        ("daily", operations),
        ("monthly", operations),
    ):
        bucket = payload.get(name)
        if not isinstance(bucket, dict) or not amount or not isinstance(bucket.get("used"), int | float):
            continue
        limit = limits.get(name) if isinstance(limits, dict) else None
        if not isinstance(limit, int | float):
            limit = bucket["used"] + (bucket.get("remaining") or 0)
        bucket["used"] = bucket["used"] + amount
        bucket["remaining"] = max(0, limit - bucket["used"])
        bucket["percentUsed"] = bucket["used"] / limit if limit else 0
    return payload


def _resets_in_the_future(payload: dict[str, Any], now: float) -> dict[str, Any]:
    """The fixtures' windows were recorded months ago; a live account's windows always reset later.

    Shift every ``resetAt`` by the same amount so the earliest resets six hours from now and their
    spacing (daily vs weekly) is kept, as a real account would report them today.
    """
    buckets = [v for v in payload.values() if isinstance(v, dict) and isinstance(v.get("resetAt"), int)]
    if not buckets:
        return payload
    now_ms = int(now * 1000)
    shift = now_ms + 6 * 3_600_000 - min(b["resetAt"] for b in buckets)
    if shift > 0:
        for bucket in buckets:
            bucket["resetAt"] += shift
    return payload


def default_accounts() -> list[FakeAccount]:
    return [
        FakeAccount(SUBSCRIBER_KEY, subscriber=True),
        FakeAccount(PAYG_KEY, subscriber=False, usd_balance="9.54827636", nano_balance="0"),
        FakeAccount(LEGACY_PLAN_KEY, subscriber=True, usage_shape="legacy"),
        FakeAccount(DEGRADED_KEY, subscriber=True, usage_shape="degraded"),
    ]


def key_id(key: str | None) -> str | None:
    """What the request log keeps of a key: its last 4 characters."""
    return None if not key else key[-4:]


@dataclass(frozen=True)
class InferenceCharge:
    """What one answered request cost its account: USD, or subscription input tokens (never both)."""

    key_id: str | None
    model: str
    base: str
    usd: Decimal | None = None
    quota_tokens: float | None = None


def price_of(entry: dict[str, Any] | None, prompt_tokens: int, completion_tokens: int) -> Decimal:
    """USD for a request: tokens x per-1M prices, plus ``pricing.request`` (a per-request price) if set."""
    pricing = (entry or {}).get("pricing") or {}
    per_million = pricing.get("unit", "per_million_tokens") == "per_million_tokens"
    total = Decimal(0)
    for field_name, tokens in (("prompt", prompt_tokens), ("completion", completion_tokens)):
        price = pricing.get(field_name)
        if isinstance(price, int | float) and per_million:
            total += Decimal(str(price)) * tokens / Decimal(1_000_000)
    request_price = pricing.get("request")
    if isinstance(request_price, int | float):
        total += Decimal(str(request_price))
    return total


@dataclass
class Fault:
    """One switchable misbehaviour. ``route`` is an fnmatch pattern on the request path ("*" = all)."""

    kind: FaultKind
    route: str = "*"
    status: int = 500
    latency: float = 0.0
    retry_after: str | None = None
    times: int | None = None  # None = until cleared; n = the next n matching requests, then gone
    probability: float = 1.0
    size: int = HUGE_BODY_BYTES
    declare_length: bool = False  # huge_body: send Content-Length up front (else chunked)
    after_bytes: int = 1024  # reset: how much of the body goes out before the connection is cut
    hits: int = 0


class Faults:
    """The mutable fault switchboard of one fake. Tests flip faults on and off between requests."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self.items: list[Fault] = []

    def add(self, kind: FaultKind, route: str = "*", **options: Any) -> Fault:
        fault = Fault(kind=kind, route=route, **options)
        self.items.append(fault)
        return fault

    def latency(self, seconds: float, route: str = "*", **options: Any) -> Fault:
        return self.add("latency", route, latency=seconds, **options)

    def status(
        self, status: int, route: str = "*", *, retry_after: str | None = None, **options: Any
    ) -> Fault:
        return self.add("status", route, status=status, retry_after=retry_after, **options)

    def reset(self, route: str = "*", **options: Any) -> Fault:
        return self.add("reset", route, **options)

    def truncated(self, route: str = "*", **options: Any) -> Fault:
        return self.add("truncated", route, **options)

    def invalid_json(self, route: str = "*", **options: Any) -> Fault:
        return self.add("invalid_json", route, **options)

    def huge_body(self, route: str = "*", **options: Any) -> Fault:
        return self.add("huge_body", route, **options)

    def clear(self, route: str | None = None) -> None:
        self.items = [] if route is None else [f for f in self.items if f.route != route]

    def take(self, path: str) -> list[Fault]:
        """The faults that fire for this request; counts down ``times`` and drops spent faults."""
        fired: list[Fault] = []
        for fault in list(self.items):
            if not fnmatch.fnmatchcase(path, fault.route):
                continue
            if fault.probability < 1.0 and self._rng.random() >= fault.probability:
                continue
            fault.hits += 1
            fired.append(fault)
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self.items.remove(fault)
        return fired


@dataclass(frozen=True)
class RequestRecord:
    method: str
    path: str
    query: str
    key_id: str | None  # last 4 chars of the key presented, never the key
    auth: Literal["bearer", "x-api-key", "none"]


def _presented_key(request: web.Request) -> tuple[str | None, Literal["bearer", "x-api-key", "none"]]:
    authorization = request.headers.get("Authorization", "")
    if authorization.lower().startswith("bearer "):
        return authorization[7:].strip() or None, "bearer"
    api_key = request.headers.get("x-api-key")
    if api_key:
        return api_key.strip(), "x-api-key"
    return None, "none"


# ---------------------------------------------------------------------------------------------------------
# The app


def _json(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(payload), status=status, content_type="application/json", headers=headers
    )


_STATUS_BODIES: dict[int, Callable[[str], Any]] = {
    401: lambda _path: load_fixture("error.401.invalid-key.json"),
    403: lambda _path: {
        "error": {"message": "API key origin not allowed", "code": "api_key_origin_not_allowed"}
    },
    402: lambda _path: load_fixture("error.402.insufficient-balance.json"),
    429: lambda path: (
        load_fixture("error.429.models-rate-limited.json")
        if path.endswith("/models")
        else {
            "error": {
                "message": "Rate limit exceeded",
                "type": "rate_limit_error",
                "code": "rate_limit_exceeded",
            }
        }
    ),
}


def _generic_error_body(_path: str) -> Any:
    return {"error": {"message": "Internal server error", "type": "server_error"}}


class FakeNanoGPT:
    """The fake upstream. ``app`` is the aiohttp application (routes under ``/api``)."""

    MODEL_ROUTES: ClassVar[dict[str, str]] = {
        "/api/v1/models": "v1",
        "/api/subscription/v1/models": "subscription",
        "/api/paid/v1/models": "paid",
        "/api/personalized/v1/models": "personalized",
        # Not documented by NanoGPT; clients that use these bases (ST's Custom source, LiteLLM) ask them for
        # /models. Assumed to mirror v1 here, so ST's Custom source can list models on every base.
        "/api/v1legacy/models": "v1",
        "/api/v1thinking/models": "v1",
    }

    def __init__(
        self,
        *,
        models: Iterable[dict[str, Any]] | None = None,
        n_models: int = 600,
        seed: int = 1,
        accounts: Iterable[FakeAccount] | None = None,
        latency: float = 0.0,
        cache_control: str = "s-maxage=300",
    ) -> None:
        self._models: dict[str, dict[str, Any]] = {
            entry["id"]: entry
            for entry in (models if models is not None else generate_models(n_models, seed))
        }
        self.accounts: dict[str, FakeAccount] = {a.key: a for a in (accounts or default_accounts())}
        self.latency = latency  # added to every request (benchmarks use 0.15 s)
        self.cache_control = cache_control
        self.faults = Faults(random.Random(seed))
        self.log: list[RequestRecord] = []
        self.counts: Counter[str] = Counter()
        self._bodies: dict[tuple[str, bool], bytes] = {}  # pre-serialised lists; cleared on mutation
        self.echoes: dict[str, list[dict[str, Any]]] = {}  # key -> extra entries served to that key only
        self.app = web.Application(middlewares=[self._middleware])
        for path in self.MODEL_ROUTES:
            self.app.router.add_get(path, self._models_handler)
        self.app.router.add_post("/api/check-balance", self._balance_handler)
        self.app.router.add_get("/api/subscription/v1/usage", self._usage_handler)
        self.inference = InferenceBehaviour()
        add_inference_routes(
            self.app,
            self.inference,
            known_model=lambda model_id: model_id in self._models,
            authorised=lambda key: self._account(key) is not None,
            key_of=lambda request: _presented_key(request)[0],
            key_id=key_id,
            charge=self._charge,
        )
        self.providers = ProviderBehaviour()
        add_provider_routes(
            self.app,
            self.providers,
            known_model=lambda model_id: model_id in self._models,
            text_models=lambda: list(self._models.values()),
            authorised=lambda key: self._account(key) is not None,
            key_id=key_id,
        )
        self.charges: list[InferenceCharge] = []

    # ---- catalogue -----------------------------------------------------------------------------------

    @property
    def models(self) -> list[dict[str, Any]]:
        """The current catalogue (the live dicts; mutate through the methods below to drop caches)."""
        return list(self._models.values())

    def model(self, model_id: str) -> dict[str, Any]:
        return self._models[model_id]

    def ids(self, tier: str = "v1") -> list[str]:
        """The ids a tier serves to an anonymous caller (``personalized`` = all)."""
        return [entry["id"] for entry in self._select(tier)]

    def add_model(self, entry: dict[str, Any]) -> None:
        self._models[entry["id"]] = entry
        self._bodies.clear()

    def echo_for(self, key: str, *entries: dict[str, Any]) -> None:
        """Serve ``entries`` too, in every model list, but only to callers presenting ``key``: an
        upstream echoing the caller's own key back (duplicates allowed, they are appended as given)."""
        self.echoes.setdefault(key, []).extend(entries)

    def remove_model(self, model_id: str) -> dict[str, Any]:
        self._bodies.clear()
        return self._models.pop(model_id)

    def set_price(
        self, model_id: str, *, prompt: float | None = None, completion: float | None = None
    ) -> None:
        pricing = self._models[model_id].setdefault(
            "pricing", {"currency": "USD", "unit": "per_million_tokens"}
        )
        if prompt is not None:
            pricing["prompt"] = prompt
        if completion is not None:
            pricing["completion"] = completion
        self._bodies.clear()

    def set_included(self, model_id: str, included: bool) -> None:
        self._models[model_id]["subscription"] = (
            {"included": included, "inputTokenMultiplier": 1} if included else {"included": False}
        )
        self._bodies.clear()

    def _select(self, tier: str) -> list[dict[str, Any]]:
        if tier == "subscription":
            return [e for e in self._models.values() if is_included(e)]
        if tier == "paid":
            return [e for e in self._models.values() if not is_included(e)]
        return list(self._models.values())

    def _list_body(self, tier: str, detailed: bool) -> bytes:
        cached = self._bodies.get((tier, detailed))
        if cached is None:
            entries = self._select(tier)
            data = entries if detailed else [basic_entry(e) for e in entries]
            cached = orjson.dumps({"object": "list", "data": data})
            self._bodies[(tier, detailed)] = cached
        return cached

    # ---- request log ---------------------------------------------------------------------------------

    def count(self, path: str, *, key: str | None = None) -> int:
        """Requests seen for a path (e.g. "/api/v1/models"), faults included.

        With ``key``, only requests that presented that key (matched by its key id): per-key caches
        are single-flight per key, so several users legitimately fetch the same path once each.
        """
        if key is None:
            return self.counts[path]
        wanted = key_id(key)
        return sum(1 for record in self.log if record.path == path and record.key_id == wanted)

    def reset_log(self) -> None:
        self.log.clear()
        self.counts.clear()

    def _account(self, key: str | None) -> FakeAccount | None:
        return self.accounts.get(key) if key else None

    def _charge(self, key: str | None, model: str, base: str, billing_mode: str | None, reply: Reply) -> None:
        account = self._account(key)
        if account is None:
            return
        entry = self._models.get(model)
        covered = (
            account.subscriber
            and account.usage_shape != "inactive"
            and entry is not None
            and is_included(entry)
            and base != "paid/v1"
            and billing_mode != "paygo"
        )
        if covered:
            assert entry is not None
            multiplier = entry["subscription"].get("inputTokenMultiplier", 1)
            tokens = reply.prompt_tokens * float(multiplier)
            account.charge_subscription(tokens)
            self.charges.append(InferenceCharge(key_id(key), model, base, quota_tokens=tokens))
        else:
            usd = price_of(entry, reply.prompt_tokens, reply.completion_tokens)
            account.charge_usd(usd)
            self.charges.append(InferenceCharge(key_id(key), model, base, usd=usd))

    def spent(self, key: str) -> tuple[Decimal, float]:
        """Everything inference charged this key so far: (USD, subscription input tokens)."""
        wanted = key_id(key)
        mine = [c for c in self.charges if c.key_id == wanted]
        return (
            sum((c.usd for c in mine if c.usd is not None), Decimal(0)),
            sum(c.quota_tokens for c in mine if c.quota_tokens is not None),
        )

    # ---- handlers ------------------------------------------------------------------------------------

    async def _models_handler(self, request: web.Request) -> web.StreamResponse:
        tier = self.MODEL_ROUTES[request.path]
        detailed = request.query.get("detailed", "").lower() == "true"
        key, _scheme = _presented_key(request)
        account = self._account(key)
        headers = {"Cache-Control": self.cache_control}
        if tier == "personalized":
            if account is None:
                return _json(load_fixture("error.401.invalid-key.json"), status=401)
            entries = [
                e
                for e in self._models.values()
                if account.visible_models is None or e["id"] in account.visible_models
            ] + self.echoes.get(key or "", [])
            data = entries if detailed else [basic_entry(e) for e in entries]
            return web.Response(
                body=orjson.dumps({"object": "list", "data": data}),
                content_type="application/json",
                headers={"Cache-Control": "private, no-store"},
            )
        # Invalid or missing keys still get a list (NanoGPT docs); a subscriber's key cuts v1 down.
        if tier == "v1" and account is not None and account.subscriber and not account.show_paid_models:
            tier = "subscription"
        body = self._list_body(tier, detailed)
        if key in self.echoes:
            body = orjson.dumps({"object": "list", "data": orjson.loads(body)["data"] + self.echoes[key]})
        return web.Response(body=body, content_type="application/json", headers=headers)

    async def _balance_handler(self, request: web.Request) -> web.StreamResponse:
        # x-api-key is the only documented auth for check-balance; Bearer alone counts as unauthenticated.
        account = self._account(request.headers.get("x-api-key"))
        if account is None:
            return _json(load_fixture("error.401.invalid-key.json"), status=401)
        payload = load_fixture("check-balance.json")
        payload.update(usd_balance=account.usd_balance, nano_balance=account.nano_balance)
        return _json(payload)

    async def _usage_handler(self, request: web.Request) -> web.StreamResponse:
        key, _scheme = _presented_key(request)
        account = self._account(key)
        if account is None:
            return _json(load_fixture("error.401.invalid-key.json"), status=401)
        return _json(account.usage())

    # ---- middleware: log, latency, faults ------------------------------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        key, scheme = _presented_key(request)
        self.log.append(
            RequestRecord(request.method, request.path, request.query_string, key_id(key), scheme)
        )
        self.counts[request.path] += 1
        fired = self.faults.take(request.path)
        delay = self.latency + sum(f.latency for f in fired if f.kind == "latency")
        if delay > 0:
            await asyncio.sleep(delay)
        for fault in fired:
            if fault.kind != "latency":
                return await self._apply(fault, request, handler)
        return await handler(request)

    async def _apply(
        self,
        fault: Fault,
        request: web.Request,
        handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> web.StreamResponse:
        if fault.kind == "status":
            make_body = _STATUS_BODIES.get(fault.status, _generic_error_body)
            headers = {"Retry-After": fault.retry_after} if fault.retry_after is not None else None
            return _json(make_body(request.path), status=fault.status, headers=headers)
        if fault.kind == "invalid_json":
            return web.Response(
                body=b"<html><body>502 Bad Gateway</body></html>{", content_type="application/json"
            )
        if fault.kind == "truncated":
            response = await handler(request)
            body = (
                response.body
                if isinstance(response, web.Response) and isinstance(response.body, bytes)
                else b"{}"
            )
            return web.Response(
                body=body[: max(1, len(body) // 2)], status=response.status, content_type="application/json"
            )
        if fault.kind == "reset":
            return await self._reset(request, fault)
        return await self._huge(request, fault)

    async def _reset(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        """Cut the connection after ``after_bytes`` of a body that announced itself as much longer."""
        transport = request.transport
        response = web.StreamResponse(status=200)
        response.content_type = "application/json"
        if fault.after_bytes <= 0 or transport is None:
            if transport is not None:
                transport.close()
            return response
        response.content_length = fault.after_bytes * 4 + 16
        await response.prepare(request)
        await response.write(b'{"object": "list", "data": [' + b" " * fault.after_bytes)
        transport.close()
        return response

    async def _huge(self, request: web.Request, fault: Fault) -> web.StreamResponse:
        """Stream ``size`` bytes of (valid) JSON without ever holding them in memory."""
        response = web.StreamResponse(status=200)
        response.content_type = "application/json"
        head, tail = b'{"object": "list", "data": [', b"]}"
        if fault.declare_length:
            response.content_length = fault.size
        await response.prepare(request)
        filler = b" " * _CHUNK
        remaining = fault.size - len(head) - len(tail)
        try:
            await response.write(head)
            while remaining > 0:
                await response.write(filler[: min(_CHUNK, remaining)])
                remaining -= _CHUNK
            await response.write(tail)
        except (ConnectionError, RuntimeError):
            # The client gave up on the body (what a capped client should do); nothing left to send.
            logger.debug("huge body aborted by the client after %d bytes left", remaining)
        return response


# ---------------------------------------------------------------------------------------------------------
# Standalone


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake NanoGPT upstream (tests and benchmarks only).")
    parser.add_argument("--port", type=int, default=8790)
    parser.add_argument("--host", default="127.0.0.1", help="loopback only; the fake is not for networks")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    parser.add_argument("--models", type=int, default=600, help="catalogue size")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    fake = FakeNanoGPT(n_models=args.models, seed=args.seed, latency=args.latency)
    print(f"fake NanoGPT on http://{args.host}:{args.port}/api ({len(fake.models)} models)", flush=True)
    web.run_app(fake.app, host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
