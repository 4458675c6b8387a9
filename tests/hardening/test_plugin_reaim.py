"""Issue 13 items 3 and 4: the ST server plugin cannot be re-aimed, and does not answer rebinding hosts.

Re-aiming: an ST user can upload their own ``user/files/nanogpt-companion.json`` through ST's files API. The
plugin used to take the service's ``url`` from it and forward the request (method, body, the user's token)
there. Each attempt below plants such a file aimed at an impostor that listens on every address the URL could
mean, and proves the impostor never even got a connection while the request went to the linked service.
Then the impostor takes the service's own address (listed in the link file, or the port after the service
stopped): the plugin must refuse to send it anything, because it cannot answer the challenge.

Rebinding: a page on ``rebind.attacker.example`` resolved to the ST server reaches the plugin with that Host;
the plugin refuses every Host that ST itself would not serve on purpose.

All through the real plugin in the Node harness (``tests/st_server_plugin``); the real-ST versions of these
attacks are in ``tests/realst``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from nanogpt_companion.plugin_link import CHALLENGE_HEADER, new_secret, proof
from tests.st_server_plugin.support import (
    REAIM_ATTEMPTS,
    Harness,
    Impostor,
    TokenIssuer,
    free_port,
    link_service,
    proving_health,
    start_harness,
    stop_harness,
)

GUARD = 10  # deadlock guard only; nothing asserts a duration


def seen_request(request: web.Request) -> dict[str, Any]:
    """What a test needs to know about a request that reached a server: never more than this."""
    return {
        "method": request.method,
        "path": request.path,
        "authorization": request.headers.get("Authorization"),
        "challenge": request.headers.get(CHALLENGE_HEADER),
    }


@dataclass
class LinkedService:
    """The service the link file names: proves itself, records each API request it gets."""

    secret: str = field(default_factory=new_secret)
    seen: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> web.Application:
        async def api(request: web.Request) -> web.Response:
            self.seen.append(seen_request(request))
            return web.json_response({"from": "linked service"})

        app = web.Application()
        app.router.add_get("/health", proving_health(self.secret))
        app.router.add_route("*", "/api/{tail:.*}", api)
        return app


@pytest.fixture(scope="module")
def st_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    st = tmp_path_factory.mktemp("reaim") / "SillyTavern"
    for handle in ("default-user", "alice"):
        (st / "data" / handle / "user" / "files").mkdir(parents=True)
    (st / "plugins").mkdir()
    return st


@pytest.fixture(scope="module")
def harness(st_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    """The plugin in an ST whose hostWhitelist (set through the environment, as ST allows) names one
    tunnel domain and one host; handshakes get a short timeout so a silent impostor fails fast."""
    env = {"SILLYTAVERN_HOSTWHITELIST_HOSTS": json.dumps(["st.example.com", ".trycloudflare.com"])}
    h = start_harness(
        tmp_path_factory.mktemp("reaim-harness"),
        st_dir / "data",
        st_dir=st_dir,
        env=env,
        handshake_timeout_ms=1000,
    )
    yield h
    stop_harness(h)


@pytest.fixture
async def linked(
    aiohttp_server: Callable[..., Awaitable[TestServer]], st_dir: Path
) -> AsyncIterator[tuple[LinkedService, TokenIssuer, int]]:
    service = LinkedService()
    server = await aiohttp_server(service.app(), host="127.0.0.1")
    link_service(st_dir, f"http://127.0.0.1:{server.port}", secret=service.secret)
    yield service, TokenIssuer(st_dir / "data"), server.port


@pytest.mark.parametrize("template", REAIM_ATTEMPTS)
async def test_uploaded_token_file_cannot_reaim_the_plugin(
    harness: Harness, linked: tuple[LinkedService, TokenIssuer, int], template: str
) -> None:
    service, issue_token, _ = linked
    impostor = Impostor()
    await impostor.start()
    try:
        # What an ST user can do: upload their own token file, with their real token and another URL.
        token = issue_token("alice", template.format(port=impostor.port))
        async with aiohttp.ClientSession() as s:
            for method in ("GET", "POST"):
                async with s.request(
                    method,
                    f"{harness.base}/api/doctor/fix",
                    json={"all": True} if method == "POST" else None,
                    headers={"X-Test-User": "alice"},
                ) as resp:
                    assert resp.status == 200
                    assert await resp.json() == {"from": "linked service"}
    finally:
        await impostor.stop()
    assert "127.0.0.1" in impostor.addresses
    assert impostor.connections == []
    # The witness that the plugin had its chance: both requests reached the linked service, with the token.
    assert [(r["method"], r["authorization"]) for r in service.seen] == [
        ("GET", f"Bearer {token}"),
        ("POST", f"Bearer {token}"),
    ]


@dataclass
class FakeService:
    """Something on the service's port that is not the service; ``mode`` says how it answers /health."""

    mode: str
    seen: list[dict[str, Any]] = field(default_factory=list)

    def app(self) -> web.Application:
        async def anything(request: web.Request) -> web.StreamResponse:
            self.seen.append(seen_request(request))
            challenge = request.headers.get(CHALLENGE_HEADER, "")
            headers: dict[str, str] = {}
            if self.mode == "echo":
                headers["X-NanoGPT-Companion-Proof"] = challenge
            elif self.mode == "wrong_secret":
                headers["X-NanoGPT-Companion-Proof"] = proof(new_secret(), challenge)
            elif self.mode == "error":
                return web.json_response({"status": "ok"}, status=500)
            elif self.mode == "silent":
                await asyncio.sleep(GUARD)
            return web.json_response({"status": "ok", "service": "nanogpt-companion"}, headers=headers)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", anything)
        return app


@pytest.mark.parametrize("mode", ["no_proof", "echo", "wrong_secret", "error", "silent"])
async def test_a_stranger_at_the_linked_address_gets_nothing(
    harness: Harness,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    st_dir: Path,
    mode: str,
) -> None:
    """The link file names the right port, but another process holds it: no request, no token reaches it."""
    fake = FakeService(mode)
    server = await aiohttp_server(fake.app(), host="127.0.0.1")
    link_service(st_dir, f"http://127.0.0.1:{server.port}")
    token = TokenIssuer(st_dir / "data")("alice", "http://127.0.0.1:1")
    async with aiohttp.ClientSession() as s:
        for path in ("/health", "/api/account"):
            async with s.get(f"{harness.base}{path}", headers={"X-Test-User": "alice"}) as resp:
                assert resp.status == 502
                assert (await resp.json())["error"]["code"] == "service_unverified"
    # It was asked (once per connection attempt) to prove itself, and that is all it ever saw.
    assert fake.seen, "the plugin never contacted the address in the link file"
    assert all(r["method"] == "HEAD" and r["path"] == "/health" and r["challenge"] for r in fake.seen)
    assert all(r["authorization"] is None for r in fake.seen)
    assert token not in harness.output()


async def test_port_taken_over_after_the_service_stopped_gets_nothing(harness: Harness, st_dir: Path) -> None:
    """Verification is per connection: pooled keep-alive sockets die with the service, and the stranger that
    binds the port next must prove itself again (and cannot)."""
    service = LinkedService()
    port = free_port()
    runner = web.AppRunner(service.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    link_service(st_dir, f"http://127.0.0.1:{port}", secret=service.secret)
    token = TokenIssuer(st_dir / "data")("alice", "http://127.0.0.1:1")
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{harness.base}/api/account", headers={"X-Test-User": "alice"}) as resp:
            assert resp.status == 200
        assert len(service.seen) == 1
        await runner.cleanup()

        fake = FakeService("no_proof")
        runner = web.AppRunner(fake.app())
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            async with s.get(f"{harness.base}/api/account", headers={"X-Test-User": "alice"}) as resp:
                assert resp.status == 502
                assert (await resp.json())["error"]["code"] == "service_unverified"
        finally:
            await runner.cleanup()
    assert fake.seen
    assert all(r["authorization"] is None and r["method"] == "HEAD" for r in fake.seen)
    assert token not in harness.output()


REBINDING_HOSTS = [
    "rebind.attacker.example:8000",
    "rebind.attacker.example",
    "st.example.com.attacker.example:8000",
    "evil-trycloudflare.com",
    "localhost.attacker.example",
    "127.0.0.1.nip.io:8000",
    "[::1",
    "127.0.0.1:80:80",
    "",
]
ALLOWED_HOSTS = [
    "localhost:8000",
    "LOCALHOST:8000",
    "st.localhost:8000",
    "127.0.0.1:8000",
    "192.168.1.20:8000",
    "[::1]:8000",
    "[fe80::1]",
    "st.example.com",
    "abc.trycloudflare.com",
    "trycloudflare.com:443",
]


@pytest.mark.parametrize("host", REBINDING_HOSTS)
async def test_rebinding_hosts_are_refused(
    harness: Harness, linked: tuple[LinkedService, TokenIssuer, int], host: str
) -> None:
    service, issue_token, _ = linked
    token = issue_token("alice", "http://127.0.0.1:1")
    async with aiohttp.ClientSession() as s:
        async with s.post(
            f"{harness.base}/api/doctor/fix",
            json={"all": True},
            headers={"Host": host, "X-Test-User": "alice"},
        ) as resp:
            assert resp.status == 421
            body = await resp.json()
        assert body["error"]["code"] == "bad_host"
        assert "hostWhitelist" in body["error"]["message"]
        # Witness: the same request under a loopback name goes through, so the refusal was the Host's.
        async with s.post(
            f"{harness.base}/api/doctor/fix",
            json={"all": True},
            headers={"Host": "127.0.0.1:8000", "X-Test-User": "alice"},
        ) as resp:
            assert resp.status == 200
    assert [r["authorization"] for r in service.seen] == [f"Bearer {token}"]


@pytest.mark.parametrize("host", ALLOWED_HOSTS)
async def test_hosts_st_serves_on_purpose_are_allowed(
    harness: Harness, linked: tuple[LinkedService, TokenIssuer, int], host: str
) -> None:
    service, issue_token, _ = linked
    issue_token("alice", "http://127.0.0.1:1")
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{harness.base}/api/account", headers={"Host": host, "X-Test-User": "alice"}) as resp,
    ):
        assert resp.status == 200
    assert len(service.seen) == 1
