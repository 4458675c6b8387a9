"""The fake NanoGPT itself: what later suites and benchmarks rely on (size, tiers, faults, log)."""

from __future__ import annotations

from decimal import Decimal

import aiohttp
import orjson

from tests.fakes.nanogpt_fixtures import INVALID_KEY, PAYG_KEY, SUBSCRIBER_KEY, FakeNanoGPTServer
from tests.fakes.nanogpt_inference import Reply
from tests.fakes.nanogpt_upstream import FakeNanoGPT, generate_models, is_included, price_of


def test_generated_catalogue_is_realistic_and_deterministic() -> None:
    models = generate_models(600, seed=1)
    body = orjson.dumps({"object": "list", "data": models})
    assert len(models) == len({m["id"] for m in models}) == 600
    assert 500_000 <= len(body) <= 1_200_000
    assert 0.38 <= sum(is_included(m) for m in models) / 600 <= 0.52
    assert orjson.dumps(generate_models(600, seed=1)) == orjson.dumps(models)
    assert orjson.dumps(generate_models(600, seed=2)) != orjson.dumps(models)
    assert len(generate_models(50, seed=3)) == 50

    ids = [m["id"] for m in models]
    for suffix in (":thinking", ":thinking:max", ":thinking:8192", "-thinking"):
        assert any(i.endswith(suffix) for i in ids), suffix
    assert {"auto-model", "auto-model-premium"} <= set(ids)
    generated = models[20:]  # past the verbatim fixture sample and the routers
    assert {type(m["cost_estimate"]) for m in generated} == {str, float, dict}
    assert any(m["context_length"] is None for m in generated)
    assert any("capabilities" not in m for m in generated)
    assert any(m["owned_by"] == "organization-owner" for m in generated)
    assert any("someFutureField" in m for m in generated)
    assert any("cacheReadInputPer1kTokens" in m["pricing"] for m in generated)
    assert any(len(repr(m["pricing"]["prompt"])) > 8 for m in generated)  # float noise
    assert all(m["icon_url"].startswith("/icons/") for m in generated)


async def test_routes_and_headers(fake_nanogpt: FakeNanoGPTServer) -> None:
    base = fake_nanogpt.base_url
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base}/v1/models?detailed=true") as resp:
            assert resp.status == 200
            assert resp.headers["Cache-Control"] == "s-maxage=300"
            detailed = await resp.read()
        async with session.get(f"{base}/v1/models") as resp:
            basic = orjson.loads(await resp.read())
        async with session.get(f"{base}/personalized/v1/models") as resp:
            assert resp.status == 401
        async with session.post(
            f"{base}/check-balance", headers={"Authorization": f"Bearer {SUBSCRIBER_KEY}"}
        ) as r:
            assert r.status == 401  # x-api-key is check-balance's only auth
        async with session.get(
            f"{base}/subscription/v1/usage", headers={"x-api-key": SUBSCRIBER_KEY}
        ) as resp:
            assert (await resp.json())["state"] == "active"
        async with session.get(f"{base}/subscription/v1/usage", headers={"x-api-key": INVALID_KEY}) as resp:
            assert resp.status == 401
    assert 500_000 <= len(detailed) <= 1_200_000
    assert set(basic["data"][0]) == {"id", "object", "created", "owned_by"}
    fake = fake_nanogpt.fake
    assert fake.count("/api/v1/models") == 2
    assert fake.count("/api/subscription/v1/usage", key=SUBSCRIBER_KEY) == 1
    assert fake.count("/api/subscription/v1/usage", key=INVALID_KEY) == 1
    assert fake.count("/api/v1/models", key=SUBSCRIBER_KEY) == 0
    assert [r.key_id for r in fake.log] == [None, None, None, "1111", "1111", "9999"]
    assert SUBSCRIBER_KEY not in repr(fake.log)


async def test_fault_switchboard(fake_nanogpt: FakeNanoGPTServer) -> None:
    fake = fake_nanogpt.fake
    url = f"{fake_nanogpt.base_url}/paid/v1/models"
    never = fake.faults.status(500, probability=0.0)
    once = fake.faults.status(503, "*/paid/*", times=1)
    other_route = fake.faults.status(401, "/api/check-balance")
    async with aiohttp.ClientSession() as session:
        statuses = []
        for _ in range(3):
            async with session.get(url) as resp:
                statuses.append(resp.status)
    assert statuses == [503, 200, 200]
    assert (never.hits, once.hits, other_route.hits) == (0, 1, 0)
    assert fake.faults.items == [never, other_route]
    fake.faults.clear()
    assert fake.faults.items == []


def test_mutations_invalidate_served_lists() -> None:
    fake = FakeNanoGPT(n_models=40, seed=5)
    paid_before = set(fake.ids("paid"))
    model_id = next(iter(paid_before))
    fake.set_included(model_id, True)
    assert model_id in fake.ids("subscription")
    assert model_id not in fake.ids("paid")
    fake.set_price(model_id, prompt=9.0)
    assert fake.model(model_id)["pricing"]["prompt"] == 9.0
    removed = fake.remove_model(model_id)
    assert removed["id"] == model_id
    assert model_id not in fake.ids("v1")


async def test_inference_moves_balance_and_usage(fake_nanogpt: FakeNanoGPTServer) -> None:
    """Pay-as-you-go keys pay tokens x price; a subscriber's included model uses input tokens x the
    multiplier of the quota (and no USD); the same subscriber pays USD on a paid model, on paid/v1 and with
    billing_mode paygo. Streams are charged too, once the answer is complete."""
    fake = fake_nanogpt.fake
    base = fake_nanogpt.base_url
    paid = next(m for m in fake.models if not is_included(m) and m.get("pricing", {}).get("prompt"))
    included = next(
        m for m in fake.models if is_included(m) and m["subscription"].get("inputTokenMultiplier") == 2
    )
    fake.set_price(paid["id"], prompt=10.0, completion=30.0)
    fake.inference.replies[paid["id"]] = Reply("paid", prompt_tokens=1000, completion_tokens=100)
    fake.inference.replies[included["id"]] = Reply("sub", prompt_tokens=500, completion_tokens=50)

    async def usage(key: str) -> float:
        async with session.get(f"{base}/subscription/v1/usage", headers={"x-api-key": key}) as resp:
            return float((await resp.json())["weeklyInputTokens"]["used"])

    async def usd(key: str) -> Decimal:
        async with session.post(f"{base}/check-balance", headers={"x-api-key": key}) as resp:
            return Decimal((await resp.json())["usd_balance"])

    async def chat(key: str, model: str, path: str = "v1", **extra: object) -> None:
        body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **extra}
        async with session.post(
            f"{base}/{path}/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"}
        ) as resp:
            assert resp.status == 200
            await resp.read()

    async with aiohttp.ClientSession() as session:
        payg_before = await usd(PAYG_KEY)
        await chat(PAYG_KEY, paid["id"])
        await chat(PAYG_KEY, paid["id"], stream=True)
        assert await usd(PAYG_KEY) == payg_before - 2 * Decimal("0.013")  # 1000 x $10/M + 100 x $30/M

        sub_usd, sub_used = await usd(SUBSCRIBER_KEY), await usage(SUBSCRIBER_KEY)
        await chat(SUBSCRIBER_KEY, included["id"], stream=True)
        assert await usage(SUBSCRIBER_KEY) == sub_used + 1000  # 500 input tokens x 2
        assert await usd(SUBSCRIBER_KEY) == sub_usd
        await chat(SUBSCRIBER_KEY, paid["id"])
        await chat(SUBSCRIBER_KEY, included["id"], path="paid/v1")
        await chat(SUBSCRIBER_KEY, included["id"], billing_mode="paygo")
        assert await usage(SUBSCRIBER_KEY) == sub_used + 1000
        included_price = price_of(included, 500, 50)
        assert await usd(SUBSCRIBER_KEY) == sub_usd - Decimal("0.013") - 2 * included_price
    assert fake.spent(SUBSCRIBER_KEY) == (Decimal("0.013") + 2 * included_price, 1000.0)
    assert fake.spent(PAYG_KEY) == (Decimal("0.026"), 0.0)


def test_per_request_price() -> None:
    entry = {"pricing": {"prompt": 1.0, "completion": 2.0, "request": 0.005, "unit": "per_million_tokens"}}
    assert price_of(entry, 1_000_000, 0) == Decimal("1.005")
    assert price_of({"pricing": {"request": 0.04}}, 10, 10) == Decimal("0.04")
    assert price_of(None, 10, 10) == 0
