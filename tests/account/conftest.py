"""Wiring for the account-service tests: the real NanoGPTClient pointed at the shared fake upstream
(``fake_nanogpt``, a loopback aiohttp server), a real SQLite store in a temp dir, a real EventBus, a key
resolver the test can switch per user, and a clock the test moves by hand."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from nanogpt_companion.events import EventBus
from nanogpt_companion.keys import ResolvedKey
from nanogpt_companion.nanogpt.client import NanoGPTClient
from nanogpt_companion.store import Store
from tests.fakes.nanogpt_fixtures import SUBSCRIBER_KEY, FakeNanoGPTServer


@pytest.fixture
async def client(fake_nanogpt: FakeNanoGPTServer, clock: Clock) -> AsyncIterator[NanoGPTClient]:
    async with aiohttp.ClientSession() as session:
        # One retry with a near-zero backoff: 5xx paths stay fast while still exercising the retry.
        # The client's own Retry-After hold follows the test's clock, like the service's.
        yield NanoGPTClient(
            session, fake_nanogpt.base_url, retries=1, backoff_base=0.001, backoff_cap=0.001, clock=clock
        )


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store(tmp_path / "companion.sqlite3") as s:
        yield s


@pytest.fixture
def bus() -> EventBus:
    return EventBus()


class Keys:
    """Per-user keys the test can swap, standing in for config/secrets.json resolution."""

    def __init__(self) -> None:
        self.by_user: dict[str, ResolvedKey] = {}

    def set(self, user: str, value: str | None) -> None:
        self.by_user[user] = ResolvedKey(value, "sillytavern") if value else ResolvedKey.none()

    async def __call__(self, user: str) -> ResolvedKey:
        return self.by_user.get(user, ResolvedKey.none())


@pytest.fixture
def keys() -> Keys:
    k = Keys()
    k.set("alice", SUBSCRIBER_KEY)
    return k


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()
