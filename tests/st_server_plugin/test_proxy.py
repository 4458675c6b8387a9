"""The plugin's forwarding mechanics, observed from both ends: the browser side (the harness) and a recorder
upstream that reports exactly what arrived and proves itself as the service does. Runs without the companion
service."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from nanogpt_companion.plugin_link import CHALLENGE_HEADER, LINK_FILE_NAME, new_secret

from .support import (
    CATALOG_BODY,
    CATALOG_ETAG,
    CATALOG_GZIP,
    Harness,
    TokenIssuer,
    link_service,
    proving_health,
    validated_route,
)

# Deadlock guard only (a buffering proxy would hang forever); no test asserts how long anything took.
GUARD = 10


@dataclass
class Recorder:
    """State shared between the recorder's handlers and the test."""

    seen: list[dict[str, Any]] = field(default_factory=list)
    secret: str = field(default_factory=new_secret)
    challenges: int = 0
    release_second_event: asyncio.Event = field(default_factory=asyncio.Event)
    stream_client_gone: asyncio.Event = field(default_factory=asyncio.Event)
    release_slow: asyncio.Event = field(default_factory=asyncio.Event)


def recorder_app(rec: Recorder) -> web.Application:
    prove = proving_health(rec.secret)

    async def health(request: web.Request) -> web.Response:
        if CHALLENGE_HEADER in request.headers:
            rec.challenges += 1
        return await prove(request)

    async def sse_gated(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        await resp.write(b'event: one\ndata: {"n": 1}\n\n')
        # The second event is only sent after the test has received the first one through the plugin.
        await rec.release_second_event.wait()
        await resp.write(b'event: two\ndata: {"n": 2}\n\n')
        await resp.write_eof()
        return resp

    async def sse_forever(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        try:
            while request.transport is not None and not request.transport.is_closing():
                await resp.write(b": ping\n\n")
                await asyncio.sleep(0.02)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            rec.stream_client_gone.set()
        return resp

    async def slow(request: web.Request) -> web.Response:
        await rec.release_slow.wait()
        return web.json_response({"late": True})

    async def big(request: web.Request) -> web.Response:
        return web.json_response({"blob": "x" * 10_000})

    async def status(request: web.Request) -> web.Response:
        code = int(request.match_info["code"])
        return web.json_response({"error": {"code": "from_service", "message": "as sent"}}, status=code)

    async def text_error(request: web.Request) -> web.Response:
        return web.Response(status=500, text="Traceback (most recent call last): secret internals")

    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        record = {
            "method": request.method,
            "path": request.path,
            "raw_path": request.raw_path,
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body": body.decode("utf-8", "replace"),
        }
        rec.seen.append(record)
        return web.json_response(record, headers={"ETag": '"v1"', "Set-Cookie": "upstream=1"})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_get("/health", health)
    app.router.add_get("/api/validated", validated_route(rec.seen))
    app.router.add_get("/api/events", sse_gated)
    app.router.add_get("/api/forever", sse_forever)
    app.router.add_get("/api/slow", slow)
    app.router.add_get("/api/big", big)
    app.router.add_get("/api/status/{code}", status)
    app.router.add_get("/api/text-error", text_error)
    app.router.add_route("*", "/api/{tail:.*}", echo)
    return app


@pytest.fixture
async def recorder(
    aiohttp_server: Callable[..., Awaitable[TestServer]], issue_token: TokenIssuer
) -> AsyncIterator[tuple[Recorder, dict[str, str]]]:
    """A recorder upstream, the link file naming it, and fresh token files (a different token per user)."""
    rec = Recorder()
    server = await aiohttp_server(recorder_app(rec), host="127.0.0.1")
    url = f"http://127.0.0.1:{server.port}"
    link_service(issue_token.data_root.parent, url, secret=rec.secret)
    tokens = {handle: issue_token(handle, url) for handle in ("default-user", "alice")}
    yield rec, tokens
    rec.release_slow.set()
    rec.release_second_event.set()


async def get_json(session: aiohttp.ClientSession, method: str, url: str | URL, **kw: Any) -> tuple[int, Any]:
    async with session.request(method, url, **kw) as resp:
        return resp.status, await resp.json(content_type=None)


async def test_get_is_forwarded_with_path_query_and_bearer(
    harness: Harness, recorder: tuple[Recorder, dict[str, str]]
) -> None:
    _, tokens = recorder
    async with aiohttp.ClientSession() as s:
        status, body = await get_json(
            s,
            "GET",
            f"{harness.base}/api/catalog?tier=subscription&q=glm%204&capability=vision&capability=reasoning",
            headers={
                "Cookie": "session-abc=browser-secret",
                "X-CSRF-Token": "csrf-secret",
                "Origin": "http://phone.example:8000",
                "Authorization": "Bearer from-the-browser",
                "Accept": "application/json",
            },
        )
    assert status == 200
    assert body["method"] == "GET"
    assert (
        body["raw_path"] == "/api/catalog?tier=subscription&q=glm%204&capability=vision&capability=reasoning"
    )
    headers = body["headers"]
    assert headers["authorization"] == f"Bearer {tokens['default-user']}"
    assert headers["host"].startswith("127.0.0.1:")
    assert headers["accept"] == "application/json"
    for stripped in ("cookie", "x-csrf-token", "origin", "x-test-user"):
        assert stripped not in headers


async def test_health_route_is_forwarded(harness: Harness, recorder: tuple[Recorder, dict[str, str]]) -> None:
    async with aiohttp.ClientSession() as s:
        status, body = await get_json(s, "GET", f"{harness.base}/health")
    assert (status, body) == (200, {"status": "ok"})


async def test_json_body_is_reserialised_and_response_headers_filtered(
    harness: Harness, recorder: tuple[Recorder, dict[str, str]]
) -> None:
    payload = {"ids": ["ppp.strict", "ctx.size"], "nested": {"ünï": [1, 2.5, None, True]}}
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{harness.base}/api/doctor/fix", json=payload) as resp,
    ):
        assert resp.status == 200
        assert resp.headers["ETag"] == '"v1"'
        assert "Set-Cookie" not in resp.headers
        body = await resp.json()
    assert body["method"] == "POST"
    assert json.loads(body["body"]) == payload
    assert body["headers"]["content-type"].startswith("application/json")
    assert body["headers"]["content-length"] == str(len(body["body"].encode()))


async def test_raw_body_and_other_methods_pass_through(
    harness: Harness, recorder: tuple[Recorder, dict[str, str]]
) -> None:
    async with aiohttp.ClientSession() as s:
        status, body = await get_json(
            s,
            "PUT",
            f"{harness.base}/api/doctor/policy",
            data=b"rule=x",
            headers={"Content-Type": "text/plain"},
        )
        assert status == 200
        assert (body["method"], body["body"], body["headers"]["content-type"]) == (
            "PUT",
            "rule=x",
            "text/plain",
        )
        status, body = await get_json(s, "DELETE", f"{harness.base}/api/thing")
        assert (status, body["method"], body["body"]) == (200, "DELETE", "")


async def test_error_status_and_json_are_passed_through(
    harness: Harness, recorder: tuple[Recorder, dict[str, str]]
) -> None:
    async with aiohttp.ClientSession() as s:
        for code in (401, 403, 404, 409, 429, 502):
            status, body = await get_json(s, "GET", f"{harness.base}/api/status/{code}")
            assert status == code
            assert body == {"error": {"code": "from_service", "message": "as sent"}}


async def test_non_json_upstream_error_becomes_json_without_internals(
    harness: Harness, recorder: tuple[Recorder, dict[str, str]]
) -> None:
    async with aiohttp.ClientSession() as s:
        status, body = await get_json(s, "GET", f"{harness.base}/api/text-error")
    assert status == 502
    assert body["error"]["code"] == "bad_gateway"
    assert "Traceback" not in json.dumps(body)


async def test_users_only_reach_their_own_token(
    harness: Harness, recorder: tuple[Recorder, dict[str, str]]
) -> None:
    rec, tokens = recorder
    async with aiohttp.ClientSession() as s:
        _, as_alice = await get_json(
            s, "GET", f"{harness.base}/api/account", headers={"X-Test-User": "alice"}
        )
        _, as_default = await get_json(s, "GET", f"{harness.base}/api/account")
        # bob has a data folder but the service never wrote his token: he must not fall back to anyone else's.
        status, as_bob = await get_json(
            s, "GET", f"{harness.base}/api/account", headers={"X-Test-User": "bob"}
        )
    assert as_alice["headers"]["authorization"] == f"Bearer {tokens['alice']}"
    assert as_default["headers"]["authorization"] == f"Bearer {tokens['default-user']}"
    assert status == 503
    assert as_bob["error"]["code"] == "service_unavailable"
    assert len(rec.seen) == 2


async def test_token_file_changes_are_picked_up(
    harness: Harness, recorder: tuple[Recorder, dict[str, str]], issue_token: TokenIssuer
) -> None:
    _, tokens = recorder
    async with aiohttp.ClientSession() as s:
        _, first = await get_json(s, "GET", f"{harness.base}/api/account", headers={"X-Test-User": "alice"})
        url = f"http://127.0.0.1:{first['headers']['host'].split(':')[1]}"
        rotated = issue_token("alice", url)
        _, second = await get_json(s, "GET", f"{harness.base}/api/account", headers={"X-Test-User": "alice"})
    assert first["headers"]["authorization"] == f"Bearer {tokens['alice']}"
    assert second["headers"]["authorization"] == f"Bearer {rotated}"


async def read_event(resp: aiohttp.ClientResponse) -> str:
    """Reads one SSE event block (up to the blank line)."""
    lines: list[str] = []
    while True:
        raw = await resp.content.readline()
        if not raw:
            raise EOFError("stream ended")
        line = raw.decode().rstrip("\n")
        if line == "":
            if lines:
                return "\n".join(lines)
            continue
        lines.append(line)


async def test_sse_chunks_arrive_as_they_are_sent(
    harness: Harness, recorder: tuple[Recorder, dict[str, str]]
) -> None:
    rec, _ = recorder
    async with (
        aiohttp.ClientSession() as s,
        s.get(f"{harness.base}/api/events", headers={"Accept": "text/event-stream"}) as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert "no-transform" in resp.headers["Cache-Control"]
        # The upstream holds the second event back until we have seen the first one through the plugin,
        # so a buffering proxy would deadlock here (the guard turns that into a failure).
        first = await asyncio.wait_for(read_event(resp), GUARD)
        assert first == 'event: one\ndata: {"n": 1}'
        assert not rec.release_second_event.is_set()
        rec.release_second_event.set()
        second = await asyncio.wait_for(read_event(resp), GUARD)
        assert second == 'event: two\ndata: {"n": 2}'
        assert await asyncio.wait_for(resp.content.read(), GUARD) == b""


async def test_client_disconnect_aborts_the_upstream_stream(
    harness: Harness, recorder: tuple[Recorder, dict[str, str]]
) -> None:
    rec, _ = recorder
    async with aiohttp.ClientSession() as s:
        resp = await s.get(f"{harness.base}/api/forever")
        assert await asyncio.wait_for(resp.content.readline(), GUARD) == b": ping\n"
        assert not rec.stream_client_gone.is_set()
        resp.close()
    await asyncio.wait_for(rec.stream_client_gone.wait(), GUARD)


async def test_service_down_gives_503_with_start_command(harness: Harness, issue_token: TokenIssuer) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        free_port = sock.getsockname()[1]
    link_service(issue_token.data_root.parent, f"http://127.0.0.1:{free_port}")
    issue_token("alice", f"http://127.0.0.1:{free_port}")
    async with aiohttp.ClientSession() as s:
        status, body = await get_json(s, "GET", f"{harness.base}/health", headers={"X-Test-User": "alice"})
    assert status == 503
    assert body["error"]["code"] == "service_unavailable"
    assert "nanogpt-companion serve --sillytavern" in body["error"]["message"]


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.5:8719",
        "http://example.com:8719",
        "http://127.0.0.1.nip.io:8719",
        "https://127.0.0.1:8719",
        "http://user:pw@127.0.0.1:8719",
        "file:///etc/passwd",
        "not a url",
    ],
)
async def test_non_loopback_service_url_in_the_link_file_is_refused(
    harness: Harness, issue_token: TokenIssuer, url: str
) -> None:
    """Defence in depth: even the link file (no ST user can write it) never sends ST's server elsewhere."""
    link = issue_token.data_root.parent / "plugins" / LINK_FILE_NAME
    link.write_text(json.dumps({"version": 1, "url": url, "secret": new_secret()}))
    issue_token("alice", "http://127.0.0.1:1")
    async with aiohttp.ClientSession() as s:
        status, body = await get_json(
            s, "GET", f"{harness.base}/api/catalog", headers={"X-Test-User": "alice"}
        )
    assert status == 502
    assert body["error"]["code"] == "bad_service_url"


async def test_only_service_routes_are_reachable(
    harness: Harness, recorder: tuple[Recorder, dict[str, str]]
) -> None:
    rec, _ = recorder
    async with aiohttp.ClientSession() as s:
        status, body = await get_json(s, "GET", f"{harness.base}/admin")
        assert (status, body["error"]["code"]) == (404, "not_found")
        status, body = await get_json(s, "GET", URL(f"{harness.base}/api/%2e%2e/admin", encoded=True))
        assert (status, body["error"]["code"]) == (400, "bad_request")
    assert rec.seen == []


async def test_oversized_json_body_gets_413_and_is_not_forwarded(
    tight_harness: Harness, recorder: tuple[Recorder, dict[str, str]]
) -> None:
    rec, _ = recorder
    async with aiohttp.ClientSession() as s:
        status, body = await get_json(
            s, "POST", f"{tight_harness.base}/api/doctor/fix", json={"ids": ["x" * 4096]}
        )
        assert (status, body["error"]["code"]) == (413, "payload_too_large")
        status, body = await get_json(
            s,
            "POST",
            f"{tight_harness.base}/api/doctor/fix",
            data=b"y" * 5000,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert (status, body["error"]["code"]) == (413, "payload_too_large")
        # Under the cap the same route works, so the 413s above came from the cap.
        status, _ = await get_json(s, "POST", f"{tight_harness.base}/api/doctor/fix", json={"ids": ["x"]})
        assert status == 200
    assert len(rec.seen) == 1


async def test_oversized_body_gets_413_under_default_limit(
    harness: Harness, recorder: tuple[Recorder, dict[str, str]]
) -> None:
    rec, _ = recorder
    async with aiohttp.ClientSession() as s:
        status, body = await get_json(
            s, "POST", f"{harness.base}/api/doctor/fix", json={"x": "z" * (1024 * 1024)}
        )
    assert (status, body["error"]["code"]) == (413, "payload_too_large")
    assert rec.seen == []


async def test_slow_service_gives_504(
    tight_harness: Harness, recorder: tuple[Recorder, dict[str, str]]
) -> None:
    async with aiohttp.ClientSession() as s:
        status, body = await get_json(s, "GET", f"{tight_harness.base}/api/slow")
    assert (status, body["error"]["code"]) == (504, "gateway_timeout")


async def test_oversized_response_is_not_forwarded(
    tight_harness: Harness, recorder: tuple[Recorder, dict[str, str]]
) -> None:
    async with aiohttp.ClientSession() as s:
        status, body = await get_json(s, "GET", f"{tight_harness.base}/api/big")
    assert (status, body["error"]["code"]) == (502, "upstream_response_too_large")


async def test_no_token_ever_appears_in_plugin_output(
    harness: Harness,
    tight_harness: Harness,
    recorder: tuple[Recorder, dict[str, str]],
    issue_token: TokenIssuer,
) -> None:
    """Runs last in this module: by now every error path above has been taken and logged."""
    async with aiohttp.ClientSession() as s:
        status, _ = await get_json(
            s, "GET", f"{tight_harness.base}/api/slow", headers={"X-Test-User": "alice"}
        )
        assert status == 504
    tight_output = tight_harness.output()
    # The plugin does log its 5xx answers (so the scan below looks at real log lines) ...
    assert "gateway_timeout" in tight_output
    assert "service_unavailable" in harness.output()
    # ... but never a token, the auth header, or a query string (search terms are user data).
    assert len(issue_token.issued) > 10
    for output in (harness.output(), tight_output):
        for token in issue_token.issued:
            assert token not in output
        assert "Bearer" not in output
        assert "glm" not in output


async def test_validators_and_compression_pass_through_untouched(
    harness: Harness, recorder: tuple[Recorder, dict[str, str]]
) -> None:
    rec, _ = recorder
    url = f"{harness.base}/api/validated"
    async with aiohttp.ClientSession(auto_decompress=False) as s:
        async with s.get(url, headers={"Accept-Encoding": "gzip, br"}) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Encoding"] == "gzip"
            assert resp.headers["ETag"] == CATALOG_ETAG
            assert resp.headers["Vary"] == "Accept-Encoding"
            assert resp.headers["Content-Length"] == str(len(CATALOG_GZIP))
            # Byte for byte what the service compressed: never decompressed and recompressed on the way.
            assert await resp.read() == CATALOG_GZIP
        async with s.get(url, headers={"Accept-Encoding": "gzip", "If-None-Match": CATALOG_ETAG}) as resp:
            assert resp.status == 304
            assert resp.headers["ETag"] == CATALOG_ETAG
            assert resp.headers["Vary"] == "Accept-Encoding"
            assert await resp.read() == b""
        async with s.get(url, headers={"Accept-Encoding": "identity"}) as resp:
            assert resp.status == 200
            assert "Content-Encoding" not in resp.headers
            assert await resp.read() == CATALOG_BODY
        async with s.head(url, headers={"Accept-Encoding": "gzip"}) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Length"] == str(len(CATALOG_GZIP))
    sent = [r["headers"] for r in rec.seen if r["path"] == "/api/validated"]
    assert [h.get("accept-encoding") for h in sent] == ["gzip, br", "gzip", "identity", "gzip"]
    assert [h.get("if-none-match") for h in sent] == [None, CATALOG_ETAG, None, None]
