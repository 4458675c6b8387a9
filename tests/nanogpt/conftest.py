"""Shared pieces for the NanoGPT client tests: a real ClientSession and a client with tiny backoff."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from nanogpt_companion.nanogpt import NanoGPTClient
from tests.fakes.nanogpt_fixtures import FakeNanoGPTServer


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as client_session:
        yield client_session


@pytest.fixture
def client(session: aiohttp.ClientSession, fake_nanogpt: FakeNanoGPTServer) -> NanoGPTClient:
    # Tiny backoff keeps the retry tests fast; the retry *count* is what they assert.
    return NanoGPTClient(
        session, fake_nanogpt.base_url, request_timeout=5.0, retries=2, backoff_base=0.001, backoff_cap=0.004
    )
