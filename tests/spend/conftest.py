"""The spend service on the real pieces: NanoGPTClient -> the fake NanoGPT on loopback, AccountService,
CatalogService, a SQLite store in a temp dir, the EventBus. ST's side is played by ``Chat``: it sends a
real chat completion to the fake (which charges the account) and then reports it as the extension would.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from nanogpt_companion.account import AccountService
from nanogpt_companion.catalog import CatalogService
from nanogpt_companion.events import Event, EventBus
from nanogpt_companion.keys import ResolvedKey
from nanogpt_companion.nanogpt.client import NanoGPTClient
from nanogpt_companion.spend.ledger import SpendLedger
from nanogpt_companion.spend.records import Generation, SpendRow
from nanogpt_companion.spend.service import SpendService
from nanogpt_companion.store import Store
from tests.fakes.nanogpt_fixtures import FakeNanoGPTServer
from tests.fakes.nanogpt_upstream import is_included

_ids = itertools.count(1)


class Keys:
    def __init__(self) -> None:
        self.by_user: dict[str, str] = {}

    async def __call__(self, user: str) -> ResolvedKey:
        value = self.by_user.get(user)
        return ResolvedKey(value, "sillytavern") if value else ResolvedKey.none()

    def users_of(self, fingerprint: str) -> list[str]:
        return sorted(
            u for u, k in self.by_user.items() if ResolvedKey(k, "sillytavern").fingerprint == fingerprint
        )


@dataclass
class SpendRig:
    fake_server: FakeNanoGPTServer
    session: aiohttp.ClientSession
    store: Store
    bus: EventBus
    keys: Keys
    account: AccountService
    catalog: CatalogService
    make: Callable[..., SpendService]
    _spend: SpendService | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)

    @property
    def spend(self) -> SpendService:
        """The service under test (default options unless the test called ``use`` first)."""
        return self._spend or self.use()

    def use(self, **options: Any) -> SpendService:
        """The service with these options, listening to its account's readings (as the app wires it)."""
        assert self._spend is None or "account" in options, "one spend service per account service"
        self._spend = self.make(**options)
        return self._spend

    @property
    def fake(self) -> Any:
        return self.fake_server.fake

    def paid_model(self, prompt: float = 10.0, completion: float = 30.0) -> str:
        """A model outside the subscription, priced so one generation costs cents."""
        model = next(m["id"] for m in self.fake.models if not is_included(m) and ":" not in m["id"])
        self.fake.set_price(model, prompt=prompt, completion=completion)
        return str(model)

    def included_model(self, multiplier: float = 2) -> str:
        return str(
            next(
                m["id"]
                for m in self.fake.models
                if is_included(m) and m["subscription"].get("inputTokenMultiplier") == multiplier
            )
        )

    async def generate(self, key: str, model: str, *, stream: bool = False, path: str = "v1") -> None:
        """What ST's request does: a real completion against the fake, which charges the account."""
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
        async with self.session.post(
            f"{self.fake_server.base_url}/{path}/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {key}"},
        ) as resp:
            assert resp.status == 200, await resp.text()
            await resp.read()

    async def report(self, user: str, model: str, *, chat: str = "chat-1", **extra: Any) -> SpendRow:
        reply = self.fake.inference.reply_for(model, "v1")
        generation = Generation(
            client_id=f"gen-{next(_ids):08d}",
            model=model,
            source="nanogpt",
            endpoint="v1",
            chat_id=chat,
            character="Seraphina",
            character_id="Seraphina.png",
            prompt_tokens=extra.pop("prompt_tokens", reply.prompt_tokens),
            completion_tokens=extra.pop("completion_tokens", reply.completion_tokens),
            **extra,
        )
        return await self.spend.report(user, generation)

    def balance_polls(self) -> int:
        return self.fake.count("/api/check-balance")

    def start(self, spend: SpendService | None = None) -> None:
        self.tasks.append(asyncio.create_task((spend or self.spend).run()))


class Events:
    """One user's bus subscription; ``next`` waits for the event the test needs."""

    def __init__(self, queue: asyncio.Queue[Event]) -> None:
        self.queue = queue
        self.seen: list[tuple[str, Any]] = []

    async def next(self, name: str, predicate: Callable[[Any], bool] = lambda _d: True) -> Any:
        """The next ``name`` event that satisfies ``predicate`` (fails after 10 s)."""
        async with asyncio.timeout(10):
            while True:
                event = await self.queue.get()
                data = orjson.loads(event.data_json)
                self.seen.append((event.name, data))
                if event.name == name and predicate(data):
                    return data


@pytest.fixture
async def rig(fake_nanogpt: FakeNanoGPTServer, tmp_path: Path) -> AsyncIterator[SpendRig]:
    async with aiohttp.ClientSession() as session, Store(tmp_path / "companion.sqlite3") as store:
        client = NanoGPTClient(session, fake_nanogpt.base_url, retries=0)
        bus = EventBus()
        keys = Keys()
        account = AccountService(client, store, bus, key_for=keys, poll_interval=300)
        catalog = CatalogService(client, store, ttl=300)

        def make(**options: Any) -> SpendService:
            defaults: dict[str, Any] = {
                "ledger": SpendLedger(store),
                "account": account,
                "catalog": catalog,
                "bus": bus,
                "key_for": keys,
                "users_of_key": keys.users_of,
                "settle": 0.05,
                "min_interval": 0.3,
                "subscriber_min_interval": 0.3,
                "max_attempts": 2,
            }
            merged = {**defaults, **options}
            spend = SpendService(**merged)
            merged["account"].add_reading_listener(spend.on_reading)
            return spend

        rig = SpendRig(fake_nanogpt, session, store, bus, keys, account, catalog, make)
        try:
            yield rig
        finally:
            for task in rig.tasks:
                task.cancel()
            await asyncio.gather(*rig.tasks, return_exceptions=True)
            if rig._spend is not None:
                await rig._spend.close()
            await account.close()
            await catalog.close()


@pytest.fixture
def events(rig: SpendRig) -> Callable[[str], Events]:
    opened: list[Any] = []

    def open_for(user: str) -> Events:
        manager = rig.bus.subscribe(user, is_extension=False)
        sub = manager.__enter__()
        opened.append(manager)
        return Events(sub.queue)

    yield open_for  # type: ignore[misc]
    for manager in opened:
        manager.__exit__(None, None, None)
