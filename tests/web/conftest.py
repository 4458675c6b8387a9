"""An in-process app (``init_app``) over a real temporary ST install and the fake upstream."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from nanogpt_companion.config import Settings
from nanogpt_companion.web.app import init_app
from tests.fakes.nanogpt_fixtures import FakeNanoGPTServer
from tests.fakes.nanogpt_upstream import PAYG_KEY
from tests.fakes.st_fixtures import MakeSTInstall, STInstall, UserSpec

ST_PORT = 8000
ST_ORIGIN = f"http://127.0.0.1:{ST_PORT}"


@dataclass
class Companion:
    client: TestClient[Any, Any]
    st: STInstall
    upstream: FakeNanoGPTServer
    settings: Settings

    def token(self, handle: str = "default-user") -> str:
        path = self.st.data_root / handle / "user" / "files" / "nanogpt-companion.json"
        return str(json.loads(path.read_text())["token"])

    def auth(self, handle: str = "default-user") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(handle)}"}

    async def get(self, path: str, handle: str = "default-user", **kwargs: Any) -> Any:
        return await self.client.get(
            path, headers={**self.auth(handle), **kwargs.pop("headers", {})}, **kwargs
        )

    async def post(self, path: str, handle: str = "default-user", **kwargs: Any) -> Any:
        return await self.client.post(
            path, headers={**self.auth(handle), **kwargs.pop("headers", {})}, **kwargs
        )


StartCompanion = Callable[..., Awaitable[Companion]]


def two_user_install(make_st_install: MakeSTInstall) -> STInstall:
    alice_secrets = {"api_key_nanogpt": [{"id": "a1", "value": PAYG_KEY, "label": "alice", "active": True}]}
    return make_st_install(
        users={"default-user": UserSpec(), "alice": UserSpec(secrets=alice_secrets)}, port=ST_PORT
    )


@pytest.fixture
async def start_companion(
    aiohttp_client: Any, fake_nanogpt: FakeNanoGPTServer, make_st_install: MakeSTInstall, tmp_path: Path
) -> StartCompanion:
    async def start(st: STInstall | None = None, **overrides: Any) -> Companion:
        st = st or two_user_install(make_st_install)
        options: dict[str, Any] = {
            "sillytavern": st.st_dir,
            "upstream": fake_nanogpt.base_url,
            "state_dir": tmp_path / "state",
            "watch": False,
        }
        options.update(overrides)
        settings = Settings(**options)
        client = await aiohttp_client(init_app(settings))
        return Companion(client, st, fake_nanogpt, settings)

    return start


@pytest.fixture
async def companion(start_companion: StartCompanion) -> Companion:
    return await start_companion()
