"""The provider-info and image-model cache: fresh for its TTL, one request for concurrent callers, the last
answer served (stale) when NanoGPT fails, bounded, and a caller giving up does not cancel the others."""

from __future__ import annotations

import asyncio

import pytest

from nanogpt_companion.nanogpt import NanoGPTClient
from nanogpt_companion.nanogpt.errors import NanoGPTError
from nanogpt_companion.providers import ProviderService
from tests.fakes.nanogpt_fixtures import FakeNanoGPTServer
from tests.fakes.nanogpt_providers import NO_SELECTION_MODEL, SELECTABLE_MODEL

PATH = "/api/models/deepseek/deepseek-v4-pro:thinking/providers"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_fresh_shared_then_stale_on_failure(
    client: NanoGPTClient, fake_nanogpt: FakeNanoGPTServer
) -> None:
    fake = fake_nanogpt.fake
    clock = Clock()
    service = ProviderService(client, ttl=300, clock=clock)
    results = await asyncio.gather(*(service.for_model(SELECTABLE_MODEL) for _ in range(10)))
    assert fake.count(PATH) == 1 and all(r == results[0] for r in results)
    info, stale = results[0]
    assert stale is False and info.provider("deepinfra") is not None
    assert info.provider("deepinfra").label == "DeepInfra"  # type: ignore[union-attr]
    assert fake.count("/api/models/providers") == 1  # the master list, for labels, also once

    clock.now += 299
    await service.for_model(SELECTABLE_MODEL)
    assert fake.count(PATH) == 1
    clock.now += 2
    fake.faults.add("status", route="/api/models/deepseek*", status=503)
    again, stale = await service.for_model(SELECTABLE_MODEL)
    assert stale is True and again.providers == info.providers
    assert fake.count(PATH) == 4  # one request and its two retries, then the last answer
    assert service.cached(SELECTABLE_MODEL) == again

    fake.faults.clear()
    fake.providers.set_available(SELECTABLE_MODEL, "deepinfra", False)
    fresh, stale = await service.for_model(SELECTABLE_MODEL)
    assert stale is False and fresh.provider("deepinfra").available is False  # type: ignore[union-attr]
    await service.close()


async def test_nothing_cached_and_nanogpt_down_is_an_error(
    client: NanoGPTClient, fake_nanogpt: FakeNanoGPTServer
) -> None:
    fake_nanogpt.fake.faults.add("status", route="/api/models/*", status=503)
    service = ProviderService(client)
    with pytest.raises(NanoGPTError):
        await service.for_model(NO_SELECTION_MODEL)
    # Labels are a nicety: no master list still gives provider info once NanoGPT answers again.
    fake_nanogpt.fake.faults.clear()
    info, _ = await service.for_model(NO_SELECTION_MODEL)
    assert info.supports_selection is False
    await service.close()


async def test_bounded_and_a_caller_giving_up_cancels_nothing(
    client: NanoGPTClient, fake_nanogpt: FakeNanoGPTServer
) -> None:
    fake = fake_nanogpt.fake
    service = ProviderService(client, max_models=2)
    ids = [e["id"] for e in fake.models[:3]]
    for model_id in ids:
        await service.for_model(model_id)
    assert service.cached(ids[0]) is None and service.cached(ids[2]) is not None

    fake.faults.add("latency", route="/api/models/*", latency=0.3)
    impatient = asyncio.create_task(asyncio.wait_for(service.for_model(SELECTABLE_MODEL), 0.05))
    patient = asyncio.create_task(service.for_model(SELECTABLE_MODEL))
    with pytest.raises(TimeoutError):
        await impatient
    info, _ = await patient
    assert info.supports_selection is True and fake.count(PATH) == 1
    await service.close()
