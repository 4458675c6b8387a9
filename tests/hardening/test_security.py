"""Issue 5 item 4: hostile pages, other users, traversal, bad bodies and slow clients get nothing.

One real service process (two ST users, plus hostile folders in the data root) serves the whole module.
Every answer, SSE event and the service log are kept and scanned for the fake keys by the last test.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from tests.fakes.nanogpt_upstream import PAYG_KEY, SUBSCRIBER_KEY
from tests.fakes.service_fixtures import RunningService, running_stack
from tests.fakes.st_fixtures import STInstall
from tests.hardening.support import find_keys

OUTSIDE_MARKER = "outside-the-data-root"
API_ROUTES: tuple[tuple[str, str], ...] = (
    ("GET", "/api/catalog"),
    ("POST", "/api/catalog/refresh"),
    ("GET", "/api/endpoints"),
    ("GET", "/api/account"),
    ("GET", "/api/account/history"),
    ("GET", "/api/doctor"),
    ("POST", "/api/doctor/fix"),
    ("POST", "/api/doctor/undo"),
    ("POST", "/api/doctor/ack"),
    ("GET", "/api/doctor/policy"),
    ("PUT", "/api/doctor/policy"),
    ("GET", "/api/spend"),
    ("POST", "/api/spend/generations"),
    ("GET", "/api/spend/generations"),
    ("GET", "/api/spend/export.csv"),
    ("GET", "/api/spend/settings"),
    ("PUT", "/api/spend/settings"),
    ("POST", "/api/spend/alerts/seen"),
    ("POST", "/api/events/ticket"),
    ("GET", "/api/events"),
    ("GET", "/api/openapi.json"),
)


@dataclass
class Traffic:
    """Everything the service said to this module's clients (headers and bodies), for the final scan."""

    chunks: list[bytes] = field(default_factory=list)

    async def call(
        self,
        service: RunningService,
        method: str,
        path: str,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        data: bytes | None = None,
        json_body: Any = None,
    ) -> tuple[int, dict[str, str], bytes]:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        if json_body is not None:
            data = json.dumps(json_body).encode()
            sent.setdefault("Content-Type", "application/json")
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session,
            session.request(method, service.url + path, headers=sent, data=data) as resp,
        ):
            body = await resp.read()
            got = dict(resp.headers)
        self.chunks.append(json.dumps(got).encode() + b"\n" + body)
        return resp.status, got, body


def error_code(body: bytes) -> str:
    data = json.loads(body)
    assert set(data) == {"error"} and set(data["error"]) == {"code", "message"}, data
    return str(data["error"]["code"])


@pytest.fixture(scope="module")
def traffic() -> Traffic:
    return Traffic()


@pytest.fixture(scope="module")
def hostile_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    """The two-user stack, with folders in the data root that try to leave it or pass for users."""
    base = tmp_path_factory.mktemp("security")

    def plant(st: STInstall) -> None:
        outside = base / OUTSIDE_MARKER
        outside.mkdir()
        (outside / "settings.json").write_text("{}", encoding="utf-8")
        os.symlink(outside, st.data_root / "escape")  # a user folder that is a link out of the data root
        for name in ("..hidden", "...", " spaced", "_storage2"):
            (st.data_root / name).mkdir()
            (st.data_root / name / "settings.json").write_text("{}", encoding="utf-8")

    with running_stack(base, prepare=plant) as service:
        yield service


# ---- who may ask ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8719", "127.0.0.1.nip.io", "attacker:80"])
async def test_dns_rebinding_host_is_refused(
    hostile_stack: RunningService, traffic: Traffic, host: str
) -> None:
    token = hostile_stack.token_for("default-user")
    for path in ("/health", "/api/catalog", "/api/account"):
        status, _headers, body = await traffic.call(
            hostile_stack, "GET", path, token=token, headers={"Host": host}
        )
        assert status == 421, (path, body)
        assert error_code(body) == "bad_host"
        assert b"models" not in body and b"balance" not in body


async def test_loopback_host_names_are_accepted(hostile_stack: RunningService, traffic: Traffic) -> None:
    port = hostile_stack.port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}", "localhost"):
        status, _headers, _body = await traffic.call(hostile_stack, "GET", "/health", headers={"Host": host})
        assert status == 200, host


@pytest.mark.parametrize(
    "origin", ["https://evil.example", "http://localhost:9999", "null", "http://127.0.0.1.evil.example:8000"]
)
async def test_unlisted_origin_gets_no_data_and_no_cors(
    hostile_stack: RunningService, traffic: Traffic, origin: str
) -> None:
    token = hostile_stack.token_for("default-user")
    status, headers, body = await traffic.call(
        hostile_stack, "GET", "/api/account", token=token, headers={"Origin": origin}
    )
    assert status == 403
    assert error_code(body) == "origin_not_allowed"
    assert "Access-Control-Allow-Origin" not in headers
    status, headers, body = await traffic.call(
        hostile_stack,
        "OPTIONS",
        "/api/account",
        headers={"Origin": origin, "Access-Control-Request-Method": "GET"},
    )
    assert status == 403
    assert "Access-Control-Allow-Origin" not in headers


async def test_st_origin_is_allowed_with_cors(hostile_stack: RunningService, traffic: Traffic) -> None:
    origin = hostile_stack.st_origin
    status, headers, _body = await traffic.call(
        hostile_stack,
        "OPTIONS",
        "/api/account",
        headers={"Origin": origin, "Access-Control-Request-Method": "GET"},
    )
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == origin
    status, headers, _body = await traffic.call(
        hostile_stack,
        "GET",
        "/api/account",
        token=hostile_stack.token_for("default-user"),
        headers={"Origin": origin},
    )
    assert status == 200
    assert headers["Access-Control-Allow-Origin"] == origin


@pytest.mark.parametrize(("method", "path"), API_ROUTES)
async def test_every_api_route_needs_a_valid_token(
    hostile_stack: RunningService, traffic: Traffic, method: str, path: str
) -> None:
    cases: list[tuple[dict[str, str], str]] = [
        ({}, "missing_token"),
        ({"Authorization": "Bearer " + "x" * 43}, "invalid_token"),
        ({"Authorization": "Bearer"}, "missing_token"),
        ({"Authorization": "Basic " + hostile_stack.token_for("default-user")}, "missing_token"),
        ({"Authorization": "Bearer " + SUBSCRIBER_KEY}, "invalid_token"),  # the NanoGPT key is no token
    ]
    for headers, code in cases:
        status, _headers, body = await traffic.call(
            hostile_stack, method, path, headers=headers, json_body={} if method != "GET" else None
        )
        assert status == 401, (headers, body)
        assert error_code(body) == code
    # The token never works from the query string (URLs end up in logs and history).
    token = hostile_stack.token_for("default-user")
    status, _headers, _body = await traffic.call(
        hostile_stack, method, f"{path}?token={token}&ticket={token}"
    )
    assert status == 401


# ---- users stay apart -----------------------------------------------------------------------------------


async def test_each_token_reaches_only_its_own_users_data(
    hostile_stack: RunningService, traffic: Traffic
) -> None:
    me = hostile_stack.token_for("default-user")
    alice = hostile_stack.token_for("alice")
    assert me != alice
    _s, _h, mine = await traffic.call(hostile_stack, "GET", "/api/account", token=me)
    _s, _h, hers = await traffic.call(hostile_stack, "GET", "/api/account", token=alice)
    assert json.loads(mine)["balance"]["usd"] == pytest.approx(129.46956147)
    assert json.loads(hers)["balance"]["usd"] == pytest.approx(9.54827636)
    assert b"129.46" not in hers and b"9.548" not in mine
    # The subscriber's canonical list is cut down; alice (pay-as-you-go) sees everything.
    _s, _h, my_catalog = await traffic.call(hostile_stack, "GET", "/api/catalog", token=me)
    _s, _h, her_catalog = await traffic.call(hostile_stack, "GET", "/api/catalog", token=alice)
    assert json.loads(my_catalog)["tiers"]["v1"]["count"] < json.loads(her_catalog)["tiers"]["v1"]["count"]
    # Alice's event stream is hers, even when opened by ticket.
    status, _h, body = await traffic.call(hostile_stack, "POST", "/api/events/ticket", token=alice)
    assert status == 200
    ticket = json.loads(body)["ticket"]
    hello = await _first_sse_event(hostile_stack, f"/api/events?ticket={ticket}", traffic)
    assert hello == (
        "hello",
        {
            "user": "alice",
            "version": hello[1]["version"],
            "api_version": 1,
            "catalog_etag": hello[1]["catalog_etag"],
        },
    )
    # The catalogue version it names is alice's own list's, not another user's.
    extension_list = "/api/catalog?fields=summary&include_routers=false"
    plain = {"Accept-Encoding": "identity"}
    tags = []
    for token in (alice, me):
        _s, answered, _b = await traffic.call(
            hostile_stack, "GET", extension_list, token=token, headers=plain
        )
        tags.append({k.lower(): v for k, v in answered.items()}["etag"])
    assert hello[1]["catalog_etag"] == tags[0] != tags[1]
    # A ticket is single use.
    status, _h, body = await traffic.call(hostile_stack, "GET", f"/api/events?ticket={ticket}")
    assert status == 401 and error_code(body) == "invalid_token"


async def _first_sse_event(
    service: RunningService, path: str, traffic: Traffic, headers: dict[str, str] | None = None
) -> tuple[str, Any]:
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session,
        session.get(service.url + path, headers=headers) as resp,
    ):
        assert resp.status == 200
        raw = b""
        while b"\n\n" not in raw.split(b"event:", 1)[-1]:
            raw += await resp.content.readany()
    traffic.chunks.append(raw)
    block = raw[raw.index(b"event:") :].split(b"\n\n", 1)[0].decode()
    fields = dict(line.split(": ", 1) for line in block.splitlines())
    return fields["event"], json.loads(fields["data"])


# ---- traversal -----------------------------------------------------------------------------------------


def test_hostile_folders_get_no_token_and_links_out_are_not_followed(hostile_stack: RunningService) -> None:
    root = hostile_stack.data_root
    outside = root.parent / OUTSIDE_MARKER
    assert not (outside / "user").exists(), "the service wrote into a folder outside the data root"
    for name in ("escape", "..hidden", "...", " spaced", "_storage2"):
        assert not (root / name / "user" / "files" / "nanogpt-companion.json").exists(), name
    assert (root / "alice" / "user" / "files" / "nanogpt-companion.json").exists()


@pytest.mark.parametrize(
    "path",
    [
        "/api/../health",
        "/api/%2e%2e/%2e%2e/etc/passwd",
        "/api/catalog/..%2f..%2fsecrets.json",
        "/..%2fdefault-user%2fsecrets.json",
        "/default-user/secrets.json",
        "/api/doctor/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    ],
)
async def test_traversal_in_urls_reaches_no_file(
    hostile_stack: RunningService, traffic: Traffic, path: str
) -> None:
    token = hostile_stack.token_for("default-user")
    status, _headers, body = await traffic.call(hostile_stack, "GET", path, token=token)
    assert status in (200, 404, 405), (path, status)
    assert b"root:" not in body and b"api_key_nanogpt" not in body
    if status == 200:  # only a normalised route may answer (e.g. /api/../health is /health)
        assert json.loads(body).get("status") == "ok"


@pytest.mark.parametrize(
    "payload",
    [
        {"ids": ["../../../etc/passwd"]},
        {"ids": ["../alice/settings.json", "..\\..\\secrets.json"]},
        {"ids": ["ppp:preset:../../alice/OpenAI Settings/Default"]},
        {"ids": ["\u0000", "a" * 500]},
    ],
)
async def test_traversal_in_fix_ids_touches_nothing(
    hostile_stack: RunningService, traffic: Traffic, payload: dict[str, Any]
) -> None:
    alice_settings = hostile_stack.st.user("alice").settings
    before = alice_settings.read_bytes()
    status, _headers, body = await traffic.call(
        hostile_stack,
        "POST",
        "/api/doctor/fix",
        token=hostile_stack.token_for("default-user"),
        json_body=payload,
    )
    assert status in (200, 400), body
    if status == 200:
        assert {r["status"] for r in json.loads(body)["results"]} == {"not_found"}
    assert alice_settings.read_bytes() == before


async def test_traversal_in_policy_rule_names(hostile_stack: RunningService, traffic: Traffic) -> None:
    token = hostile_stack.token_for("default-user")
    for rule in ("../../etc/passwd", "..", "ppp/../../x"):
        status, _headers, body = await traffic.call(
            hostile_stack, "PUT", "/api/doctor/policy", token=token, json_body={"rule": rule, "policy": "off"}
        )
        assert status in (400, 404), body
        assert error_code(body) in ("bad_request", "not_found")


# ---- bodies --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "status", "code"),
    [
        (b"{" * 10, 400, "bad_request"),
        (b"\xff\xfe not json", 400, "bad_request"),
        (b"[1, 2, 3]", 400, "bad_request"),
        (b'{"ids": "not-a-list"}', 400, "bad_request"),
        (b'{"ids": ["x"], "extra": 1}', 400, "bad_request"),
        (b'{"ids": [' + b'"x",' * 300 + b'"x"]}', 400, "bad_request"),
        (b'{"ids": ["' + b"x" * (1024 * 1024) + b'"]}', 413, "payload_too_large"),
        (b"[" * 50_000 + b"]" * 50_000, 413, "payload_too_large"),
    ],
)
async def test_malformed_and_oversized_bodies(
    hostile_stack: RunningService, traffic: Traffic, data: bytes, status: int, code: str
) -> None:
    got, _headers, body = await traffic.call(
        hostile_stack,
        "POST",
        "/api/doctor/fix",
        token=hostile_stack.token_for("default-user"),
        headers={"Content-Type": "application/json"},
        data=data,
    )
    assert got == status, body[:200]
    assert error_code(body) == code
    assert b"Traceback" not in body


async def test_deeply_nested_json_within_the_size_limit(
    hostile_stack: RunningService, traffic: Traffic
) -> None:
    data = b'{"ids": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    got, _headers, body = await traffic.call(
        hostile_stack, "POST", "/api/doctor/fix", token=hostile_stack.token_for("default-user"), data=data
    )
    assert got == 400, body[:200]
    assert error_code(body) == "bad_request"


async def test_garbage_request_lines_do_not_hurt_the_service(hostile_stack: RunningService) -> None:
    for raw in (
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: " + b"a" * 20_000 + b"\r\n\r\n",
        b"\x00\x01\x02\r\n\r\n",
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", hostile_stack.port)
        writer.write(raw)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(4096), 10)
        writer.close()
        assert answer.startswith(b"HTTP/1.") and b" 200 " not in answer.split(b"\r\n", 1)[0], answer[:80]
    async with aiohttp.ClientSession() as session, session.get(hostile_stack.url + "/health") as resp:
        assert resp.status == 200


# ---- slow clients --------------------------------------------------------------------------------------


async def test_slowloris_does_not_starve_other_clients(hostile_stack: RunningService) -> None:
    """Many sockets dribbling headers byte by byte; /health still answers others promptly enough."""
    request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 4000
    writers: list[asyncio.StreamWriter] = []
    for _ in range(200):
        _reader, writer = await asyncio.open_connection("127.0.0.1", hostile_stack.port)
        writers.append(writer)

    async def dribble() -> None:
        for i in range(len(request)):
            for writer in writers:
                if not writer.is_closing():
                    writer.write(request[i : i + 1])
            await asyncio.sleep(0.01)

    task = asyncio.create_task(dribble())
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            for _ in range(20):
                async with session.get(hostile_stack.url + "/health") as resp:
                    assert resp.status == 200
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        for writer in writers:
            writer.close()
    assert hostile_stack.process.poll() is None


# ---- the scan ------------------------------------------------------------------------------------------


async def test_zz_no_key_in_any_answer_event_or_log(hostile_stack: RunningService, traffic: Traffic) -> None:
    """Last in the module: every answer above, a fresh pass over every route, SSE, and the whole log."""
    for handle in ("default-user", "alice"):
        token = hostile_stack.token_for(handle)
        await traffic.call(hostile_stack, "POST", "/api/catalog/refresh", token=token)
        for method, path in API_ROUTES:
            if path != "/api/events":
                await traffic.call(
                    hostile_stack, method, path, token=token, json_body={} if method != "GET" else None
                )
        await traffic.call(hostile_stack, "GET", "/api/account?refresh=1", token=token)
        await traffic.call(hostile_stack, "POST", "/api/doctor/fix", token=token, json_body={"all": True})
        await _first_sse_event(hostile_stack, "/api/events", traffic, {"Authorization": f"Bearer {token}"})
    await asyncio.sleep(0.2)  # let the log catch up with the last answers
    assert len(traffic.chunks) > 100
    leaks = [find_keys(chunk) for chunk in traffic.chunks]
    assert [leak for leak in leaks if leak] == []
    assert find_keys(hostile_stack.log_text()) == []
    assert PAYG_KEY not in hostile_stack.log_text()
