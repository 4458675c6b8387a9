"""The spend routes in the real app over a real temporary ST install and the fake NanoGPT: validation,
per-user isolation, settings, CSV, and two data-root users sharing one key."""

from __future__ import annotations

import asyncio
import csv
import io
from decimal import Decimal
from typing import Any

import aiohttp
import pytest

from tests.fakes.nanogpt_upstream import PAYG_KEY, is_included
from tests.fakes.st_fixtures import MakeSTInstall, UserSpec

from .conftest import Companion, StartCompanion

SHARED_SECRETS = {"api_key_nanogpt": [{"id": "k1", "value": PAYG_KEY, "label": "shared", "active": True}]}


def report(n: int, model: str, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": f"tab-gen-{n:06d}",
        "model": model,
        "source": "nanogpt",
        "endpoint": "v1",
        "chat_id": "Seraphina - 2026-11-28@10h00m00s",
        "character": "Seraphina",
        "character_id": "default_Seraphina.png",
        "message_id": n,
        "kind": "normal",
        "prompt_tokens": 12,
        "completion_tokens": 9,
    }
    body.update(extra)
    return body


async def rows_of(companion: Companion, handle: str) -> list[dict[str, Any]]:
    resp = await companion.get("/api/spend/generations?limit=50", handle)
    assert resp.status == 200
    return list((await resp.json())["rows"])


async def wait_settled(companion: Companion, handle: str, ids: set[int]) -> list[dict[str, Any]]:
    """Until every row in ``ids`` is no longer pending (20 s at most)."""
    rows: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(20):
            while True:
                rows = await rows_of(companion, handle)
                settled = [r for r in rows if r["id"] in ids and r["status"] != "pending"]
                if len(settled) == len(ids):
                    return settled
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"rows {ids} of {handle} never settled: {rows}") from None


async def test_reports_are_validated_and_never_carry_text(companion: Companion) -> None:
    model = companion.upstream.fake.models[0]["id"]
    bad = [
        {**report(1, model), "mes": "the message text"},  # unknown fields are refused: no text gets in
        {**report(1, model), "id": "short"},
        {**report(1, model), "source": "outside"},
        {**report(1, model), "prompt_tokens": -1},
        {**report(1, model), "billing": "free"},
        {**report(1, model), "chat_id": "x" * 501},
    ]
    for body in bad:
        resp = await companion.post("/api/spend/generations", json=body)
        assert resp.status == 400, body
        assert (await resp.json())["error"]["code"] == "bad_request"
    resp = await companion.post("/api/spend/generations", json=report(1, model))
    assert resp.status == 202
    row = await resp.json()
    assert row["status"] in {"pending", "measured", "unmeasured"} and row["message_id"] == 1
    for path in ("/api/spend?days=0", "/api/spend/generations?limit=0", "/api/spend/export.csv?days=x"):
        assert (await companion.get(path)).status == 400
    no_token = await companion.client.get("/api/spend")
    assert no_token.status == 401


async def test_settings_round_trip_and_bounds(companion: Companion) -> None:
    resp = await companion.get("/api/spend/settings")
    assert await resp.json() == {
        "daily_budget_usd": None,
        "monthly_budget_usd": None,
        "retention_days": 365,
        "timezone": "UTC",
    }
    put = await companion.client.put(
        "/api/spend/settings",
        json={"daily_budget_usd": 2.5, "timezone": "Europe/Berlin"},
        headers=companion.auth(),
    )
    assert put.status == 200
    assert (await put.json())["daily_budget_usd"] == 2.5
    for body in ({"timezone": "Mars/Olympus"}, {"retention_days": 0}, {"daily_budget_usd": -1}, {"x": 1}):
        resp = await companion.client.put("/api/spend/settings", json=body, headers=companion.auth())
        assert resp.status == 400, body
    clear = await companion.client.put(
        "/api/spend/settings", json={"daily_budget_usd": None}, headers=companion.auth()
    )
    settings = await clear.json()
    assert settings["daily_budget_usd"] is None and settings["timezone"] == "Europe/Berlin"
    other = await (await companion.get("/api/spend/settings", "alice")).json()
    assert other["timezone"] == "UTC"  # per user


async def test_two_data_root_users_sharing_a_key(
    start_companion: StartCompanion, make_st_install: MakeSTInstall
) -> None:
    """Two ST users whose secrets hold the same NanoGPT key: generations of both in one interval share the
    measured change (approximate), each user sees only their own rows, and a change from another app on
    the key is recorded for both as outside use, split."""
    st = make_st_install(
        users={"default-user": UserSpec(secrets=SHARED_SECRETS), "alice": UserSpec(secrets=SHARED_SECRETS)}
    )
    companion = await start_companion(
        st, spend_poll_settle=0.2, spend_poll_min_interval=1.0, account_refresh_interval=0.0
    )
    fake = companion.upstream.fake
    model = next(m["id"] for m in fake.models if not is_included(m) and ":" not in m["id"])
    fake.set_price(model, prompt=10.0, completion=30.0)
    for handle in ("default-user", "alice"):
        assert (await companion.get("/api/account", handle)).status == 200  # first reading, keys known
        assert (await companion.get("/api/catalog", handle)).status == 200
    start = len(fake.charges)
    async with aiohttp.ClientSession() as session:

        async def generate() -> None:
            async with session.post(
                f"{companion.upstream.base_url}/v1/chat/completions",
                json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
                headers={"Authorization": f"Bearer {PAYG_KEY}"},
            ) as resp:
                assert resp.status == 200

        await asyncio.gather(generate(), generate())
        mine = await (await companion.post("/api/spend/generations", json=report(1, model))).json()
        hers = await (
            await companion.post(
                "/api/spend/generations", "alice", json=report(1, model, chat_id="alice-chat")
            )
        ).json()
        (a,) = await wait_settled(companion, "default-user", {mine["id"]})
        (b,) = await wait_settled(companion, "alice", {hers["id"]})
        spent = sum((c.usd for c in fake.charges[start:] if c.usd is not None), Decimal(0))
        assert a["approximate"] and b["approximate"] and a["shared_with"] == b["shared_with"] == 2
        assert a["measured_usd"] + b["measured_usd"] == pytest.approx(float(spent), abs=1e-9)
        assert [r["chat_id"] for r in await rows_of(companion, "alice")] == ["alice-chat"]

        start = len(fake.charges)
        await generate()  # another app on the same key; nobody reports it
        assert (await companion.get("/api/account?refresh=1", "alice")).status == 200
        (charge,) = [c.usd for c in fake.charges[start:]]
        outside = {}
        for handle in ("default-user", "alice"):
            rows = [r for r in await rows_of(companion, handle) if r["source"] == "outside"]
            assert len(rows) == 1 and rows[0]["chat_id"] is None and rows[0]["approximate"]
            outside[handle] = rows[0]["measured_usd"]
        assert sum(outside.values()) == pytest.approx(float(charge), abs=1e-9)

    overview = await (await companion.get("/api/spend?chat_id=alice-chat", "alice")).json()
    assert overview["chat"]["generations"] == 1 and overview["today"]["outside_usd"] == pytest.approx(
        outside["alice"]
    )
    csv_resp = await companion.get("/api/spend/export.csv", "alice")
    assert csv_resp.status == 200 and csv_resp.content_type == "text/csv"
    assert "attachment" in csv_resp.headers["Content-Disposition"]
    lines = list(csv.DictReader(io.StringIO(await csv_resp.text())))
    assert {line["user"] for line in lines} == {"alice"}
    assert sorted(line["source"] for line in lines) == ["nanogpt", "outside"]
    assert sum(float(line["usd"]) for line in lines) == pytest.approx(b["measured_usd"] + outside["alice"])
