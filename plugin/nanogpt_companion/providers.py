"""NanoGPT's provider-selection info and image models, fetched only for what a user actually uses.

Why not per catalogue row: provider info is one request per model (``/api/models/{id}/providers``), and the
catalogue has ~600 models; asking for all of them would be 600 requests per refresh. So it is asked for the
model a user has selected (the doctor) and for a model opened in the catalogue browser, and kept like the
catalogue: fresh for ``ttl`` (NanoGPT's ``s-maxage``, 300 s), concurrent callers share one request (single
flight), a failed refresh keeps serving the last answer (marked stale), and the cache is bounded.

Provider info and the image map do not depend on the caller's key (ST asks the provider endpoint without
one: 1.18.0 src/endpoints/nanogpt.js L112-118), so one cache serves every user.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from nanogpt_companion.domain import ImageModel, ModelProviders
from nanogpt_companion.nanogpt.client import NanoGPTClient
from nanogpt_companion.nanogpt.errors import NanoGPTError

log = logging.getLogger(__name__)

DEFAULT_TTL = 300.0
MAX_MODELS = 256  # distinct models kept; far more than one household opens in five minutes
T = TypeVar("T")


@dataclass
class Cached(Generic[T]):
    value: T
    fetched_at: float  # clock() time
    stale: bool = False


class _SingleFlightCache(Generic[T]):
    """Per-name TTL cache where concurrent misses share one fetch, and a failed refresh serves stale data."""

    def __init__(self, *, ttl: float, capacity: int, clock: Callable[[], float]) -> None:
        self._ttl = ttl
        self._capacity = capacity
        self._clock = clock
        self._entries: OrderedDict[str, Cached[T]] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[Cached[T]]] = {}

    def peek(self, name: str) -> Cached[T] | None:
        return self._entries.get(name)

    async def get(self, name: str, fetch: Callable[[], Awaitable[T]]) -> Cached[T]:
        cached = self._entries.get(name)
        if cached is not None and self._clock() - cached.fetched_at < self._ttl:
            self._entries.move_to_end(name)
            return cached
        task = self._inflight.get(name)
        if task is None:
            task = asyncio.create_task(self._fetch(name, fetch))
            self._inflight[name] = task
            task.add_done_callback(lambda _t: self._inflight.pop(name, None))
        # Shielded: one caller giving up (a timeout) must not cancel the request the others wait for.
        return await asyncio.shield(task)

    async def _fetch(self, name: str, fetch: Callable[[], Awaitable[T]]) -> Cached[T]:
        try:
            value = await fetch()
        except NanoGPTError:
            previous = self._entries.get(name)
            if previous is None:
                raise
            previous.stale = True
            return previous
        entry = Cached(value, self._clock())
        self._entries[name] = entry
        self._entries.move_to_end(name)
        while len(self._entries) > self._capacity:
            self._entries.popitem(last=False)
        return entry

    async def close(self) -> None:
        for task in list(self._inflight.values()):
            task.cancel()
        await asyncio.gather(*self._inflight.values(), return_exceptions=True)


class ProviderService:
    def __init__(
        self,
        client: NanoGPTClient,
        *,
        ttl: float = DEFAULT_TTL,
        max_models: int = MAX_MODELS,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._wall = wall_clock
        self._models: _SingleFlightCache[ModelProviders] = _SingleFlightCache(
            ttl=ttl, capacity=max_models, clock=clock
        )
        self._names: _SingleFlightCache[dict[str, str]] = _SingleFlightCache(ttl=ttl, capacity=1, clock=clock)
        self._images: _SingleFlightCache[list[ImageModel]] = _SingleFlightCache(
            ttl=ttl, capacity=1, clock=clock
        )

    async def for_model(self, model_id: str) -> tuple[ModelProviders, bool]:
        """(info with provider labels filled in, stale). Raises NanoGPTError when nothing is known."""
        cached = await self._models.get(model_id, lambda: self._fetch_model(model_id))
        return cached.value, cached.stale

    def cached(self, model_id: str) -> ModelProviders | None:
        entry = self._models.peek(model_id)
        return entry.value if entry is not None else None

    async def names(self) -> dict[str, str]:
        """NanoGPT's master provider list; empty when NanoGPT cannot be asked (labels are a nicety)."""
        try:
            return (await self._names.get("all", self._client.provider_names)).value
        except NanoGPTError as exc:
            log.info("NanoGPT's provider list is unavailable: %s", exc)
            return {}

    def cached_names(self) -> dict[str, str]:
        entry = self._names.peek("all")
        return entry.value if entry is not None else {}

    async def image_models(self, api_key: str | None) -> tuple[list[ImageModel], bool]:
        cached = await self._images.get("all", lambda: self._client.image_models(api_key=api_key))
        return cached.value, cached.stale

    async def _fetch_model(self, model_id: str) -> ModelProviders:
        info = await self._client.model_providers(model_id)
        names = await self.names()
        labelled = [
            option if option.label else option.model_copy(update={"label": names.get(option.id)})
            for option in info.providers
        ]
        return info.model_copy(update={"providers": labelled, "fetched_at": self._wall()})

    async def close(self) -> None:
        await self._models.close()
        await self._names.close()
        await self._images.close()
