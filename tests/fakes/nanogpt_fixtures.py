"""Pytest fixtures for the fake NanoGPT upstream (listed in tests/conftest.py as a plugin module).

``fake_nanogpt`` is a started loopback server; tests flip ``fake_nanogpt.fake.faults``, edit accounts or
mutate the catalogue between requests. The key constants match the ST secrets fixtures.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from tests.fakes.nanogpt_upstream import (
    DEGRADED_KEY,
    INVALID_KEY,
    LEGACY_FLAT_KEY,
    LEGACY_PLAN_KEY,
    PAYG_KEY,
    SUBSCRIBER_KEY,
    FakeNanoGPT,
)

__all__ = [
    "DEGRADED_KEY",
    "INVALID_KEY",
    "LEGACY_FLAT_KEY",
    "LEGACY_PLAN_KEY",
    "PAYG_KEY",
    "SUBSCRIBER_KEY",
    "FakeNanoGPTServer",
    "fake_nanogpt",
    "start_fake_nanogpt",
]


@dataclass(frozen=True)
class FakeNanoGPTServer:
    fake: FakeNanoGPT
    server: TestServer

    @property
    def base_url(self) -> str:
        """What the client/service takes as its upstream, e.g. ``http://127.0.0.1:PORT/api``."""
        return str(self.server.make_url("/api"))


AiohttpServer = Callable[..., Awaitable[TestServer]]


async def start_fake_nanogpt(aiohttp_server: AiohttpServer, **options: Any) -> FakeNanoGPTServer:
    """Start another fake (e.g. ``n_models=50`` or custom ``accounts``) on loopback."""
    fake = FakeNanoGPT(**options)
    server = await aiohttp_server(fake.app, host="127.0.0.1")
    return FakeNanoGPTServer(fake=fake, server=server)


@pytest.fixture
async def fake_nanogpt(aiohttp_server: AiohttpServer) -> FakeNanoGPTServer:
    """A fake NanoGPT with 600 generated models and the default accounts, listening on 127.0.0.1."""
    return await start_fake_nanogpt(aiohttp_server)
