"""The plugin in front of the real companion service (and the fake NanoGPT upstream behind it)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest

from tests.fakes.nanogpt_upstream import PAYG_KEY, SUBSCRIBER_KEY
from tests.fakes.service_fixtures import RunningService

from .support import Harness, plugin_stack, start_harness, stop_harness

GUARD = 15  # deadlock guard for stream reads, never a timing assertion


@pytest.fixture(scope="module")
def service_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    """The shared stack, with the plugin installed by the installer before the service starts."""
    with plugin_stack(tmp_path_factory.mktemp("plugin-stack")) as svc:
        yield svc


@pytest.fixture(scope="module")
def plugin(service_stack: RunningService, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """The installed plugin inside the ST stand-in, reading the link file and the token files the running
    service wrote."""
    h = start_harness(
        tmp_path_factory.mktemp("plugin-real"),
        service_stack.data_root,
        st_dir=service_stack.st_dir,
        plugin_dir=service_stack.st_dir / "plugins" / "nanogpt-companion",
    )
    yield h
    stop_harness(h)


async def hello_event(session: aiohttp.ClientSession, url: str, headers: dict[str, str]) -> dict[str, Any]:
    """Opens the event stream and returns the data of its `hello` event (the stream stays open meanwhile)."""
    async with session.get(url, headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        event, data = None, []
        while True:
            raw = await asyncio.wait_for(resp.content.readline(), GUARD)
            assert raw, "stream ended before hello"
            line = raw.decode().rstrip("\r\n")
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data.append(line.split(":", 1)[1].strip())
            elif line == "":
                if event == "hello":
                    return dict(json.loads("\n".join(data)))
                event, data = None, []


async def test_health_and_catalog_match_the_direct_service(
    plugin: Harness, service_stack: RunningService
) -> None:
    direct_status, direct_catalog = await asyncio.to_thread(service_stack.request, "GET", "/api/catalog")
    assert direct_status == 200
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{plugin.base}/health") as resp:
            assert resp.status == 200
            health = await resp.json()
        async with s.get(f"{plugin.base}/api/catalog") as resp:
            assert resp.status == 200
            catalog = await resp.json()
        async with s.get(f"{plugin.base}/api/catalog?sort=price&q=zzz-no-such-model") as resp:
            assert resp.status == 200
            filtered = await resp.json()
    assert health["status"] == "ok"
    assert catalog["count"] == direct_catalog["count"] > 0
    assert [m["id"] for m in catalog["models"]] == [m["id"] for m in direct_catalog["models"]]
    assert filtered["count"] == 0


async def test_each_st_user_reaches_only_their_own_account(
    plugin: Harness, service_stack: RunningService
) -> None:
    async with aiohttp.ClientSession() as s:
        alice = await hello_event(s, f"{plugin.base}/api/events", {"X-Test-User": "alice"})
        default = await hello_event(s, f"{plugin.base}/api/events", {})
        async with s.get(f"{plugin.base}/api/account", headers={"X-Test-User": "alice"}) as resp:
            alice_account = await resp.json()
        async with s.get(f"{plugin.base}/api/account") as resp:
            default_account = await resp.json()
    assert alice["user"] == "alice"
    assert default["user"] == "default-user"
    _, direct_alice = await asyncio.to_thread(service_stack.request, "GET", "/api/account", handle="alice")
    _, direct_default = await asyncio.to_thread(service_stack.request, "GET", "/api/account")
    # alice has a pay-as-you-go key and default-user a subscription: the snapshots differ, and each one
    # through the plugin is the one the service gives that user's own token.
    stable = ("key_status", "key_source", "balance", "subscription")
    assert [alice_account[k] for k in stable] != [default_account[k] for k in stable]
    for via_plugin, direct in ((alice_account, direct_alice), (default_account, direct_default)):
        assert [via_plugin[k] for k in stable] == [direct[k] for k in stable]


async def test_sse_through_the_plugin_with_a_ticket(plugin: Harness) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.post(f"{plugin.base}/api/events/ticket", headers={"X-Test-User": "alice"}) as resp:
            assert resp.status == 200
            ticket = (await resp.json())["ticket"]
        hello = await hello_event(
            s, f"{plugin.base}/api/events?ticket={ticket}&client=probe", {"X-Test-User": "alice"}
        )
    assert hello["user"] == "alice"


async def test_service_errors_pass_through_as_json(plugin: Harness) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.post(
            f"{plugin.base}/api/doctor/fix", data=b"[not json", headers={"Content-Type": "application/json"}
        ) as resp:
            # The stand-in, like ST's express.json(), rejects malformed JSON before the plugin sees it.
            assert resp.status == 400
        async with s.post(f"{plugin.base}/api/doctor/undo", json={"journal_id": "not-a-number"}) as resp:
            assert 400 <= resp.status < 500
            body = await resp.json()
            assert set(body["error"]) >= {"code", "message"}
        async with s.get(f"{plugin.base}/api/no-such-route") as resp:
            assert resp.status == 404
            assert (await resp.json())["error"]["code"] == "not_found"


async def test_no_token_or_key_in_plugin_output(plugin: Harness, service_stack: RunningService) -> None:
    async with aiohttp.ClientSession() as s:
        for handle in ("alice", "default-user"):
            async with s.get(f"{plugin.base}/api/account", headers={"X-Test-User": handle}) as resp:
                text = await resp.text()
                assert service_stack.token_for(handle) not in text
                assert PAYG_KEY not in text and SUBSCRIBER_KEY not in text
    output = plugin.output()
    for secret in (
        service_stack.token_for("alice"),
        service_stack.token_for("default-user"),
        PAYG_KEY,
        SUBSCRIBER_KEY,
    ):
        assert secret not in output
