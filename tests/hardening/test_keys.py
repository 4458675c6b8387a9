"""Issue 13 items 5, 6, 8 and issue 10 item 13: which keys are used, and that they never leak.

- A key rotated in ST (old entry ``active: false``) is never sent again: witnessed on the fake upstream,
  which records the key (id) of every request, over several background refresh rounds.
- Keys echoed in NanoGPT's 200 answers (model ids, names, usage fields; whole, or split by a space) are
  redacted before they reach any answer, event, log line or the SQLite file.
- The key of ST's Custom / Text Completion Generic slot is used when that slot's URL is NanoGPT's.
- One user cannot evict another's SSE tickets.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nanogpt_companion.keys import ResolvedKey
from nanogpt_companion.sillytavern.dataroot import UserPaths
from nanogpt_companion.user_keys import lookup_key
from nanogpt_companion.web.sse import MAX_TICKETS_PER_USER, TicketBook
from tests.doctor_service.conftest import nanogpt_settings, st_save, start_companion
from tests.fakes.nanogpt_upstream import (
    INVALID_KEY,
    PAYG_KEY,
    SUBSCRIBER_KEY,
    FakeNanoGPT,
    key_id,
    load_fixture,
)
from tests.fakes.service_fixtures import (
    RunningService,
    UpstreamThread,
    build_stack_install,
    free_port,
    start_service,
)
from tests.fakes.st_fixtures import MakeSTInstall, UserSpec, build_st_install
from tests.hardening.support import first_event_data
from tests.web.conftest import StartCompanion

__all__ = ["start_companion"]

MIN_RUN = 12


def key_runs(blob: bytes | str, key: str, n: int = MIN_RUN) -> list[str]:
    """Every ``n``-character run of ``key`` found in ``blob`` (what the redaction promises to remove)."""
    text = blob.decode("utf-8", "replace") if isinstance(blob, bytes) else blob
    return sorted({key[i : i + n] for i in range(len(key) - n + 1) if key[i : i + n] in text})


def requests_by_key(fake: FakeNanoGPT) -> list[tuple[str, str | None]]:
    return [(record.path, record.key_id) for record in list(fake.log)]


# ---- item 5: rotation ------------------------------------------------------------------------------------


def secrets_with(*entries: tuple[str, str, bool]) -> dict[str, Any]:
    return {
        "api_key_nanogpt": [
            {"id": sid, "value": value, "label": sid, "active": active} for sid, value, active in entries
        ]
    }


async def test_a_rotated_key_is_never_sent_again(tmp_path: Path, upstream: UpstreamThread) -> None:
    st_port = free_port()
    st = build_st_install(
        tmp_path,
        users={"default-user": UserSpec(secrets=secrets_with(("old", SUBSCRIBER_KEY, True)))},
        port=st_port,
    )
    env = {"NANOGPT_COMPANION_CATALOG_TTL": "1", "NANOGPT_COMPANION_ACCOUNT_POLL_INTERVAL": "5"}
    service = start_service(st, upstream, tmp_path / "state", st_port=st_port, env=env)
    old, new = key_id(SUBSCRIBER_KEY), key_id(PAYG_KEY)
    fake = upstream.fake
    try:
        for path in ("/api/catalog", "/api/account"):
            status, _ = await asyncio.to_thread(service.request, "GET", path)
            assert status == 200
        assert ("/api/check-balance", old) in requests_by_key(fake)

        # The user rotates the key in ST: the old entry stays, inactive; a new one is active.
        st_save(
            st.user().secrets,
            json.dumps(secrets_with(("old", SUBSCRIBER_KEY, False), ("new", PAYG_KEY, True))).encode(),
        )
        for _ in range(100):  # the service notices (the watcher looks again at once): the new key's account
            status, account = await asyncio.to_thread(service.request, "GET", "/api/account")
            if status == 200 and account["balance"]["usd"] == pytest.approx(9.54827636):
                break
            await asyncio.sleep(0.1)
        assert status == 200 and account["balance"]["usd"] == pytest.approx(9.54827636)
        status, _ = await asyncio.to_thread(service.request, "GET", "/api/catalog")
        assert status == 200
        log = requests_by_key(fake)
        first_new = log.index(next(r for r in log if r[1] == new))

        # Witness: three more background rounds of the catalogue ran (each fetches v1 once), all with the
        # new key; nothing went out with the old key since the new one was first used.
        def new_rounds() -> int:
            return sum(
                1
                for path, kid in requests_by_key(fake)[first_new:]
                if path == "/api/v1/models" and kid == new
            )

        for _ in range(300):
            if new_rounds() >= 4:
                break
            await asyncio.sleep(0.05)
        assert new_rounds() >= 4
        after = requests_by_key(fake)[first_new:]
        assert [r for r in after if r[1] == old] == []
        assert "dropped and no longer refreshed" in service.log_text()
    finally:
        service.stop()


# ---- item 8: redaction of 200 bodies ---------------------------------------------------------------------


def planted_model(model_id: str, key: str) -> dict[str, Any]:
    split = f"{key[:13]} {key[13:]}"  # a key split by a space: both halves are 12+ characters
    return {
        "id": model_id,
        "object": "model",
        "created": 1_760_000_000,
        "owned_by": key,
        "name": f"Echo {key}",
        "description": f"echoes the caller's key: {split}",
        "context_length": 131072,
        "capabilities": {key: True, "vision": False},
        "pricing": {"prompt": 1.0, "completion": 2.0, "currency": key, "unit": "per_million_tokens"},
        "icon_url": f"/icons/{key}.svg",
        "cost_estimate": key,
        "category": split,
        "reasoning_efforts": [key],
        "architecture": {"input_modalities": ["text", key]},
        "subscription": {"included": True, "inputTokenMultiplier": 1, "note": f"note {key}"},
    }


def planted_usage(key: str, reason: str | None = None) -> dict[str, Any]:
    usage: dict[str, Any] = load_fixture("subscription-usage.current.json")
    usage["state"] = "active"
    usage["period"] = {"currentPeriodEnd": key}
    usage["routing"] = {"recommendedMode": f"{key[:13]} {key[13:]}", "reason": reason or key}
    return usage


async def sse_events(
    service: RunningService, token: str, until: set[str], sink: list[bytes]
) -> dict[str, Any]:
    """Reads the stream until every event named in ``until`` has arrived; returns the last of each."""
    seen: dict[str, Any] = {}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
        session.get(service.url + "/api/events", headers={"Authorization": f"Bearer {token}"}) as resp,
    ):
        name = None
        while not until <= seen.keys():
            line = await resp.content.readline()
            sink.append(line)
            text = line.decode().rstrip("\n")
            if text.startswith("event: "):
                name = text[7:]
            elif text.startswith("data: ") and name:
                seen[name] = json.loads(text[6:])
    return seen


async def test_keys_echoed_in_200_answers_reach_no_output(tmp_path: Path, upstream: UpstreamThread) -> None:
    key = SUBSCRIBER_KEY
    fake = upstream.fake

    def plant_first() -> None:
        # Echoed to the caller presenting this key only; twice, so the duplicate is named in a log line.
        fake.echo_for(key, planted_model(f"evil/{key}", key), planted_model(f"evil/{key}", key))
        fake.accounts[key].usage_payload = planted_usage(key)

    upstream.call(plant_first)
    st_port = free_port()
    st = build_stack_install(tmp_path, st_port)
    # Refreshes back to back must each reach the fake (the default rate limit would serve the first).
    env = {"NANOGPT_COMPANION_ACCOUNT_REFRESH_INTERVAL": "0"}
    service = start_service(st, upstream, tmp_path / "state", st_port=st_port, env=env)
    token = service.token_for("default-user")
    outputs: list[bytes] = []
    try:
        status, catalog = await asyncio.to_thread(service.request, "GET", "/api/catalog")
        assert status == 200
        outputs.append(json.dumps(catalog).encode())
        # A model added later arrives through the refresh diff and the `catalog` event.
        # Split by "/" (an id with a space is junk NanoGPT never sends, and the catalogue drops it).
        upstream.call(fake.echo_for, key, planted_model(f"late/{key[:12]}/{key[12:]}", key))
        stream = asyncio.ensure_future(sse_events(service, token, {"catalog", "account"}, outputs))
        await asyncio.sleep(0.3)  # the stream is open before the refresh and the poll below
        # The account changes too, so the poll below publishes an `account` event.
        upstream.call(setattr, fake.accounts[key], "usage_payload", planted_usage(key, reason=f"now {key}"))
        for method, path in (
            ("POST", "/api/catalog/refresh"),
            ("GET", "/api/account?refresh=1"),
            ("GET", "/api/catalog?q=evil"),
            ("GET", "/api/catalog?tier=personalized&sort=newest"),
            ("GET", "/api/account"),
            ("GET", "/api/doctor"),
        ):
            status, body = await asyncio.to_thread(service.request, method, path)
            assert status == 200, (path, body)
            outputs.append(json.dumps(body).encode())
        events = await asyncio.wait_for(stream, 30)
        await asyncio.sleep(0.3)  # let the log catch up
        # The planted data flowed (redacted, not dropped) ...
        ids = [m["id"] for m in catalog["models"]]
        assert "evil/***" in ids
        evil = next(m for m in catalog["models"] if m["id"] == "evil/***")
        assert evil["name"] == "Echo ***" and evil["capabilities"] == {"***": True, "vision": False}
        assert "late/***/***" in events["catalog"]["diff"]["added"]
        assert events["account"]["subscription"]["routing_reason"] == "now ***"
        assert events["account"]["subscription"]["recommended_mode"] == "*** ***"
        assert "skipped 1 unusable entry" in service.log_text()
        # ... and no run of 12 characters of the key is anywhere: answers, events, log, SQLite.
        for blob in outputs:
            assert key_runs(blob, key) == []
        assert key_runs(service.log_text(), key) == []
        db_files = sorted(service.state_dir.glob("companion.sqlite3*"))
        assert db_files
        for db_file in db_files:
            assert key_runs(db_file.read_bytes(), key) == [], db_file.name
    finally:
        service.stop()


# ---- issue 10 item 13: the Custom and Text Completion key slots ------------------------------------------


def custom_settings(url: str) -> dict[str, Any]:
    return nanogpt_settings(
        "merge", chat_completion_source="custom", custom_url=url, custom_model="openai/gpt-5.2"
    )


def textgen_settings(url: str) -> dict[str, Any]:
    settings = nanogpt_settings("merge")
    settings["main_api"] = "textgenerationwebui"
    textgen = settings["textgenerationwebui_settings"]
    textgen["type"] = "generic"
    textgen["server_urls"] = {"generic": url}
    return settings


def one_secret(name: str, value: str) -> dict[str, Any]:
    return {name: [{"id": name, "value": value, "label": name, "active": True}]}


def custom_nanogpt_user() -> UserSpec:
    """The guide's Custom method: Chat Completion, Custom source on NanoGPT's URL, the key in its slot."""
    return UserSpec(
        settings=custom_settings("https://nano-gpt.com/api/v1"),
        secrets=one_secret("api_key_custom", PAYG_KEY),
    )


async def test_the_key_in_the_custom_or_generic_slot_is_used_when_its_url_is_nanogpts(
    make_st_install: MakeSTInstall, start_companion: StartCompanion
) -> None:
    st = make_st_install(
        users={
            "cara": custom_nanogpt_user(),
            "tex": UserSpec(
                settings=textgen_settings("https://nano-gpt.com/api"),
                secrets=one_secret("api_key_generic", PAYG_KEY),
            ),
            "ora": UserSpec(
                settings=custom_settings("https://openrouter.ai/api/v1"),
                secrets=one_secret("api_key_custom", INVALID_KEY),
            ),
        }
    )
    companion = await start_companion(st)
    fake = companion.upstream.fake
    for handle in ("cara", "tex"):
        account = await (await companion.get("/api/account", handle)).json()
        assert account["key_status"] == "ok" and account["balance"]["usd"] == pytest.approx(9.54827636), (
            handle
        )
        catalog = await (await companion.get("/api/catalog", handle)).json()
        assert catalog["tiers"]["personalized"]["ok"] is True, handle  # the list that needs the key
    # A Custom key for another provider is never sent to NanoGPT.
    account = await (await companion.get("/api/account", "ora")).json()
    assert account["key_status"] == "missing"
    await companion.get("/api/catalog", "ora")
    assert all(record.key_id != key_id(INVALID_KEY) for record in fake.log)
    assert fake.count("/api/personalized/v1/models", key=PAYG_KEY) >= 1


def write_user(tmp_path: Path, settings: dict[str, Any], secrets: dict[str, Any]) -> UserPaths:
    paths = UserPaths("u", tmp_path / "u")
    paths.root.mkdir(exist_ok=True)
    st_save(paths.settings, json.dumps(settings).encode())
    st_save(paths.secrets, json.dumps(secrets).encode())
    return paths


def test_key_order_configured_then_nanogpt_then_the_active_connections_slot(tmp_path: Path) -> None:
    both = {**one_secret("api_key_custom", PAYG_KEY), **one_secret("api_key_generic", SUBSCRIBER_KEY)}
    # Text Completion (Generic) is active and both URLs are NanoGPT's: the generic key.
    settings = textgen_settings("https://nano-gpt.com/api")
    settings["oai_settings"]["custom_url"] = "https://nano-gpt.com/api/v1"
    paths = write_user(tmp_path, settings, both)
    assert lookup_key(paths).key == ResolvedKey(SUBSCRIBER_KEY, "sillytavern")
    # Switching ST to Chat Completion / Custom switches the key (settings.json is looked at again).
    previous = lookup_key(paths)
    settings["main_api"] = "openai"
    settings["oai_settings"]["chat_completion_source"] = "custom"
    st_save(paths.settings, json.dumps(settings).encode())
    assert lookup_key(paths, previous).key == ResolvedKey(PAYG_KEY, "sillytavern")
    # Neither slot active (the built-in NanoGPT source): a slot pointing at NanoGPT still gives the key.
    settings["oai_settings"]["chat_completion_source"] = "nanogpt"
    settings["textgenerationwebui_settings"]["server_urls"] = {"generic": "http://127.0.0.1:5000"}
    st_save(paths.settings, json.dumps(settings).encode())
    assert lookup_key(paths).key == ResolvedKey(PAYG_KEY, "sillytavern")
    # api_key_nanogpt always wins over the slots.
    st_save(paths.secrets, json.dumps({**both, **one_secret("api_key_nanogpt", INVALID_KEY)}).encode())
    assert lookup_key(paths).key == ResolvedKey(INVALID_KEY, "sillytavern")
    # No slot points at NanoGPT: no key, whatever the slots hold.
    settings["oai_settings"]["custom_url"] = "https://api.openai.com/v1"
    st_save(paths.settings, json.dumps(settings).encode())
    st_save(paths.secrets, json.dumps(both).encode())
    assert not lookup_key(paths).key.present


async def test_the_configured_key_comes_first(
    make_st_install: MakeSTInstall, start_companion: StartCompanion
) -> None:
    st = make_st_install(
        users={
            "cara": custom_nanogpt_user(),
        }
    )
    companion = await start_companion(st, api_key=SUBSCRIBER_KEY)
    account = await (await companion.get("/api/account", "cara")).json()
    assert account["key_source"] == "config" and account["balance"]["usd"] == pytest.approx(129.46956147)


# ---- item 6: SSE tickets ---------------------------------------------------------------------------------


def test_one_user_cannot_evict_anothers_tickets() -> None:
    book = TicketBook()
    alice = book.issue("alice")
    for _ in range(5000):
        book.issue("mallory")
    assert len(book) == 1 + MAX_TICKETS_PER_USER  # bounded all the same
    assert book.redeem(alice) == "alice"
    # Mallory's own oldest tickets went; her newest work.
    mine = [book.issue("mallory") for _ in range(MAX_TICKETS_PER_USER + 1)]
    assert book.redeem(mine[0]) is None
    assert book.redeem(mine[-1]) == "mallory"


def test_tickets_expire_and_are_single_use() -> None:
    now = [0.0]
    book = TicketBook(clock=lambda: now[0])
    ticket = book.issue("alice")
    assert book.redeem(ticket) == "alice" and book.redeem(ticket) is None
    stale = book.issue("alice")
    now[0] += 61
    assert book.redeem(stale) is None and len(book) == 0


async def test_a_ticket_flood_by_one_user_leaves_anothers_stream_working(
    start_companion: StartCompanion,
) -> None:
    companion = await start_companion()
    resp = await companion.post("/api/events/ticket", "alice")
    ticket = (await resp.json())["ticket"]
    for _ in range(1100):  # more than the old global pool of 1,024
        assert (await companion.post("/api/events/ticket", "default-user")).status == 200
    resp = await companion.client.get(f"/api/events?ticket={ticket}")
    assert resp.status == 200
    assert (await first_event_data(resp))["user"] == "alice"
