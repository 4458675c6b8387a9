"""Typed async client for the NanoGPT endpoints the companion reads (model lists, balance, usage).

Policy decisions that matter to callers:
- The ``aiohttp.ClientSession`` is injected: one per app, so connections are pooled across users and
  the app owns its lifetime. The client never creates or closes it.
- Retries only for failures that a later attempt can fix (5xx, 408, connection errors, timeouts), with
  capped exponential backoff and full jitter so many users' pollers do not retry in lock-step.
  401/403 are never retried because NanoGPT counts auth failures toward abuse limits; 429 is not slept
  on here either: the caller (catalogue/account poller) owns scheduling and gets ``retry_after``.
- Bodies are read in chunks under a byte cap, so a broken or hostile upstream cannot exhaust memory.
- Redirects are not followed: a redirect to another host would carry the ``x-api-key`` header with it.
- Keys go only into request headers. Log lines and exception messages are built from method, path,
  status and sizes.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import logging
import math
import random
import re
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDictProxy

from nanogpt_companion import domain
from nanogpt_companion.nanogpt.errors import (
    InsufficientBalanceError,
    KeyRejectedError,
    MalformedResponseError,
    NanoGPTError,
    NoKeyError,
    RateLimitedError,
    UpstreamUnavailableError,
    redact,
)
from nanogpt_companion.nanogpt.redaction import KeyRedactor
from nanogpt_companion.nanogpt.schemas import (
    SkippedEntry,
    UpstreamModel,
    parse_balance,
    parse_image_models,
    parse_model_list_async,
    parse_model_providers,
    parse_provider_names,
    parse_subscription_usage,
)

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://nano-gpt.com/api"

# Path of each tier's model list below the base URL (reference/nanogpt-api.md §3.1).
TIER_PATHS: Mapping[domain.Tier, str] = {
    domain.Tier.V1: "/v1/models",
    domain.Tier.SUBSCRIPTION: "/subscription/v1/models",
    domain.Tier.PAID: "/paid/v1/models",
    domain.Tier.PERSONALIZED: "/personalized/v1/models",
}

_CHUNK = 64 * 1024
_ERROR_BODY_CAP = 64 * 1024  # error bodies are only read for a message; never need more
_MAX_AGE = re.compile(r"(?:^|[,\s])(s-maxage|max-age)\s*=\s*\"?(\d+)", re.IGNORECASE)
_SKIPPED_IDS_SHOWN = 5


@dataclass(frozen=True)
class RawModelList:
    body: bytes
    max_age: float | None  # seconds, from Cache-Control s-maxage (preferred) or max-age


@dataclass(frozen=True)
class ModelListResult:
    models: list[UpstreamModel]
    skipped: list[SkippedEntry]
    max_age: float | None  # seconds, from Cache-Control s-maxage (preferred) or max-age


@dataclass(frozen=True)
class _Response:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now: delta-seconds or an HTTP-date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # obsolete date forms without a zone are GMT by definition
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def parse_max_age(cache_control: str | None) -> float | None:
    """Freshness from ``Cache-Control``; ``s-maxage`` wins because it is meant for shared caches like us."""
    if not cache_control:
        return None
    found = {name.lower(): float(seconds) for name, seconds in _MAX_AGE.findall(cache_control)}
    return found.get("s-maxage", found.get("max-age"))


def _error_message(body: bytes, secret: str | None) -> str | None:
    """The human text of an upstream error body, in any of NanoGPT's shapes, made safe to show.

    Shapes seen: ``{"error": {"message": ...}}`` (OpenAI style), ``{"code", "message"}`` (model lists'
    429), ``{"error": "text", ...}`` (402).
    """
    try:
        data: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    candidates = (
        error.get("message") if isinstance(error, dict) else None,
        error if isinstance(error, str) else None,
        data.get("message"),
    )
    for text in candidates:
        if isinstance(text, str) and text.strip():
            return redact(text, secret)
    return None


_DEFAULT_RATE_LIMIT_PAUSE = 60.0  # a 429 without Retry-After


def _key_slot(secret: str | None) -> str:
    """Rate-limit bookkeeping per key without keeping the key itself as a dict key."""
    return "anonymous" if not secret else hashlib.sha256(secret.encode()).hexdigest()[:16]


def log_model_list(tier: domain.Tier, models: int, skipped: Sequence[SkippedEntry], size: int) -> None:
    """What a parsed model list held: one warning for all its unusable entries, never one per entry."""
    if skipped:
        first = ", ".join(repr(entry.id) for entry in skipped[:_SKIPPED_IDS_SHOWN])
        logger.warning(
            "NanoGPT %s model list: skipped %d unusable entr%s (first: %s; reasons: %s)",
            tier,
            len(skipped),
            "y" if len(skipped) == 1 else "ies",
            first,
            "; ".join(sorted({entry.reason for entry in skipped})),
        )
    logger.debug("NanoGPT %s model list: %d models, %d bytes", tier, models, size)


class NanoGPTClient:
    """Async access to NanoGPT's model lists, balance and subscription usage."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str = DEFAULT_BASE_URL,
        *,
        request_timeout: float = 30.0,
        max_body_bytes: int = 8 * 1024 * 1024,
        retries: int = 2,
        backoff_base: float = 0.5,
        backoff_cap: float = 8.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session = session
        self._base = base_url.rstrip("/")
        self._timeout = request_timeout
        self._max_body = max_body_bytes
        self._retries = max(0, retries)
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._rng = random.Random()  # jitter only; not security-relevant  # noqa: S311
        # Per key: no request before this monotonic time. A 429 on one call must also stop the retries
        # of other calls already under way with the same key, or they would hit NanoGPT before Retry-After.
        self._not_before: dict[str, float] = {}
        self._clock = clock
        # Lists arrive concurrently but are parsed one at a time: each parse holds a whole decoded
        # JSON tree, and four of them alive at once would raise the process's memory high-water mark.
        self._parse_lock = asyncio.Lock()

    @property
    def base_url(self) -> str:
        return self._base

    def model_list_url(self, tier: domain.Tier) -> str:
        return self._base + TIER_PATHS[tier]

    async def models(
        self,
        tier: domain.Tier,
        *,
        api_key: str | None,
        detailed: bool = True,
        redact: tuple[str | None, ...] = (),
    ) -> ModelListResult:
        """One tier's model list. The key is optional except for ``personalized``.

        Sending the key matters even where it is optional: NanoGPT applies per-account pricing and, for
        a subscriber, cuts ``v1`` down to subscription models. Every string in the answer has the key
        (and the keys in ``redact``) redacted before it is returned (``redaction``).
        """
        raw = await self.model_list_body(tier, api_key=api_key, detailed=detailed)
        return await self.parse_models(tier, raw, redact=(api_key, *redact))

    async def model_list_body(
        self, tier: domain.Tier, *, api_key: str | None, detailed: bool = True
    ) -> RawModelList:
        """One tier's model list as NanoGPT sent it, unparsed: what ``models`` fetches.

        Apart from the parse so a caller can tell an unchanged list by its bytes and skip the parse (the
        catalogue does, every round)."""
        if tier is domain.Tier.PERSONALIZED and not api_key:
            raise NoKeyError(
                "The personalized model list needs a NanoGPT API key; none is configured for this user."
            )
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        params = {"detailed": "true"} if detailed else {}
        response = await self._send(
            "GET", TIER_PATHS[tier], headers=headers, params=params, secret=api_key, what=f"{tier} models"
        )
        return RawModelList(response.body, parse_max_age(response.headers.get("Cache-Control")))

    async def parse_models(
        self, tier: domain.Tier, raw: RawModelList, *, redact: tuple[str | None, ...]
    ) -> ModelListResult:
        """``raw`` parsed, with every string in it redacted of the keys in ``redact``."""
        async with self._parse_lock:
            parsed = await parse_model_list_async(raw.body)
        redactor = KeyRedactor(redact)
        models = [redactor.value(model) for model in parsed.models]
        skipped = [redactor.value(entry) for entry in parsed.skipped]
        log_model_list(tier, len(models), skipped, len(raw.body))
        return ModelListResult(models=models, skipped=skipped, max_age=raw.max_age)

    async def check_balance(self, api_key: str) -> domain.Balance:
        """USD and XNO balance (``POST /check-balance``; ``x-api-key`` is its only documented auth)."""
        self._require_key(api_key, "check the balance")
        response = await self._send(
            "POST", "/check-balance", headers={"x-api-key": api_key}, secret=api_key, what="balance"
        )
        return KeyRedactor([api_key]).value(parse_balance(response.body))

    async def subscription_usage(self, api_key: str) -> domain.SubscriptionState:
        """Subscription state and quota buckets, in whichever shape the account's plan reports."""
        self._require_key(api_key, "read subscription usage")
        response = await self._send(
            "GET",
            "/subscription/v1/usage",
            headers={"Authorization": f"Bearer {api_key}"},
            secret=api_key,
            what="subscription usage",
        )
        return KeyRedactor([api_key]).value(parse_subscription_usage(response.body))

    async def model_providers(self, model_id: str, *, api_key: str | None = None) -> domain.ModelProviders:
        """NanoGPT's provider-selection info for one model; ``known=False`` when NanoGPT does not know it.

        The id's slash is URL-encoded (``%2F``) and the path is not under ``/v1`` (ST 1.18.0
        src/endpoints/nanogpt.js L112-113 asks the same URL).
        """
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        path = "/models/" + urllib.parse.quote(model_id, safe="") + "/providers"
        try:
            response = await self._send("GET", path, headers=headers, secret=api_key, what="provider list")
        except UpstreamUnavailableError as exc:
            if exc.status == 404:
                return domain.ModelProviders(model=model_id, known=False)
            raise
        return KeyRedactor([api_key]).value(parse_model_providers(response.body, model_id))

    async def provider_names(self) -> dict[str, str]:
        """NanoGPT's master provider list, id -> label (``GET /models/providers``; no key needed)."""
        response = await self._send("GET", "/models/providers", headers={}, secret=None, what="provider list")
        return parse_provider_names(response.body)

    async def image_models(self, *, api_key: str | None = None) -> list[domain.ImageModel]:
        """The image models ST's Image Generation offers for NanoGPT: the legacy ``/models`` image map,
        asked with ``x-api-key`` as ST does (1.18.0 src/endpoints/stable-diffusion.js L1399-1405)."""
        headers = {"x-api-key": api_key} if api_key else {}
        response = await self._send(
            "GET", "/models", headers=headers, secret=api_key, what="image model list"
        )
        return [KeyRedactor([api_key]).value(model) for model in parse_image_models(response.body)]

    # -----------------------------------------------------------------------------------------------------

    @staticmethod
    def _require_key(api_key: str | None, purpose: str) -> None:
        if not api_key:
            raise NoKeyError(f"A NanoGPT API key is needed to {purpose}; none is configured for this user.")

    def _backoff(self, attempt: int) -> float:
        ceiling = min(self._backoff_cap, self._backoff_base * (2**attempt))
        return self._rng.uniform(0.0, ceiling)

    async def _send(
        self,
        method: str,
        path: str,
        *,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None = None,
        secret: str | None,
        what: str,
    ) -> _Response:
        """One logical request with retries; returns a 2xx response or raises a :class:`NanoGPTError`."""
        url = self._base + path
        last_problem = ""
        last_status: int | None = None
        attempts = self._retries + 1
        slot = _key_slot(secret)
        for attempt in range(attempts):
            if attempt:
                delay = self._backoff(attempt - 1)
                logger.debug("retrying %s %s in %.2fs (%s)", method, path, delay, last_problem)
                await asyncio.sleep(delay)
            wait = self._not_before.get(slot, 0.0) - self._clock()
            if wait > 0:
                raise RateLimitedError(
                    f"NanoGPT asked us to slow down; the {what} request waits {wait:.0f} s more.",
                    retry_after=wait,
                )
            try:
                response = await self._attempt(method, url, path, headers, params)
            except TimeoutError:
                last_problem = f"no answer within {self._timeout:g}s"
                continue
            except aiohttp.ClientPayloadError:
                last_problem = "the connection broke while the answer was being sent"
                continue
            except aiohttp.ClientConnectorError:
                last_problem = "could not connect"
                continue
            except (aiohttp.ClientConnectionError, aiohttp.ClientResponseError, OSError):
                # Resets, server disconnects, protocol errors: the transport failed, not NanoGPT's answer.
                last_problem = "the connection was reset"
                continue
            if 200 <= response.status < 300:
                return response
            if response.status == 408 or response.status >= 500:
                last_problem, last_status = f"HTTP {response.status}", response.status
                continue
            error = self._status_error(response, path, secret, what)
            if isinstance(error, RateLimitedError):
                pause = error.retry_after if error.retry_after is not None else _DEFAULT_RATE_LIMIT_PAUSE
                self._not_before[slot] = max(self._not_before.get(slot, 0.0), self._clock() + pause)
            raise error
        # Debug only: the caller (catalogue, account) reports the outcome once, in its own words.
        logger.debug(
            "NanoGPT %s unavailable after %d attempt%s: %s",
            what,
            attempts,
            "" if attempts == 1 else "s",
            last_problem,
        )
        raise UpstreamUnavailableError(
            f"NanoGPT is not answering the {what} request ({last_problem}; tried {attempts} "
            f"time{'' if attempts == 1 else 's'}). Check your internet connection; if it persists, "
            "NanoGPT may be down.",
            status=last_status,
        )

    async def _attempt(
        self,
        method: str,
        url: str,
        path: str,
        headers: Mapping[str, str],
        params: Mapping[str, str] | None,
    ) -> _Response:
        async with asyncio.timeout(self._timeout):
            async with self._session.request(
                method,
                url,
                headers={"Accept": "application/json", **headers},
                params=params,
                allow_redirects=False,
            ) as resp:
                cap = self._max_body if 200 <= resp.status < 300 else _ERROR_BODY_CAP
                body = await self._read_capped(resp, cap, path)
                return _Response(status=resp.status, headers=resp.headers, body=body)

    async def _read_capped(self, resp: aiohttp.ClientResponse, cap: int, path: str) -> bytes:
        declared = resp.content_length
        if declared is not None and declared > cap:
            if resp.status >= 300:
                resp.close()
                return b""  # an error body is only decoration; the status says enough
            resp.close()
            raise self._too_large(path, f"it announced {declared:,} bytes")
        buffer = bytearray()
        async for chunk in resp.content.iter_chunked(_CHUNK):
            buffer += chunk
            if len(buffer) > cap:
                resp.close()  # stop the transfer now instead of draining the rest into nowhere
                if resp.status >= 300:
                    return bytes(buffer[:cap])
                raise self._too_large(path, f"more than {cap:,} bytes arrived")
        return bytes(buffer)

    def _too_large(self, path: str, detail: str) -> MalformedResponseError:
        logger.warning("NanoGPT answer for %s is over the %d-byte cap (%s)", path, self._max_body, detail)
        return MalformedResponseError(
            f"NanoGPT's answer for {path} is too large ({detail}; the limit is "
            f"{self._max_body / (1024 * 1024):.1f} MB), so it was not read. This points to an upstream "
            "fault; try again later."
        )

    def _status_error(self, response: _Response, path: str, secret: str | None, what: str) -> NanoGPTError:
        status = response.status
        upstream = _error_message(response.body, secret)
        said = f' NanoGPT said: "{upstream}".' if upstream else ""
        logger.debug("NanoGPT %s request (%s) failed with HTTP %d", what, path, status)
        if status in (401, 403):
            return KeyRejectedError(
                f"NanoGPT rejected the API key ({status}) for the {what} request.{said} Check the key in "
                "SillyTavern's API connection settings (or NANOGPT_API_KEY); it was not retried, because "
                "NanoGPT counts failed logins toward its abuse limits.",
                status=status,
            )
        if status == 402:
            return InsufficientBalanceError(
                f"NanoGPT reports insufficient balance (402) for the {what} request.{said} Top up your "
                "NanoGPT balance.",
                status=status,
            )
        if status == 429:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            wait = f" Try again in {retry_after:.0f} s." if retry_after is not None else " Try again shortly."
            return RateLimitedError(
                f"NanoGPT is rate-limiting the {what} request (429).{said}{wait}",
                retry_after=retry_after,
            )
        return UpstreamUnavailableError(
            f"NanoGPT answered the {what} request with HTTP {status}.{said} The API may have changed or be "
            "misconfigured (check the upstream URL).",
            status=status,
        )
