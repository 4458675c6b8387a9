"""The HTTP API end to end: real app, real fake upstream on loopback, real ST files."""

from __future__ import annotations

import asyncio
import json
import logging

import orjson
import pytest

from nanogpt_companion.config import Settings
from nanogpt_companion.web.app import init_app
from nanogpt_companion.web.openapi import SHIPPED, build_openapi
from tests.fakes.nanogpt_upstream import PAYG_KEY, SUBSCRIBER_KEY, is_included
from tests.web.conftest import ST_ORIGIN, Companion, StartCompanion

MODEL_PATHS = (
    "/api/v1/models",
    "/api/subscription/v1/models",
    "/api/paid/v1/models",
    "/api/personalized/v1/models",
)


async def json_of(response: object) -> dict:
    return await response.json()  # type: ignore[attr-defined, no-any-return]


async def test_health_needs_no_token_and_reports_no_user_data(companion: Companion) -> None:
    resp = await companion.client.get("/health")
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "ok"
    assert body["api_version"] == 1
    assert set(body) == {"status", "service", "version", "api_version", "upstream"}


@pytest.mark.parametrize(
    ("path", "method"),
    [
        ("/api/catalog", "GET"),
        ("/api/catalog/refresh", "POST"),
        ("/api/catalog/providers", "GET"),
        ("/api/catalog/images", "GET"),
        ("/api/connection/key/all", "POST"),
        ("/api/endpoints", "GET"),
        ("/api/account", "GET"),
        ("/api/account/history", "GET"),
        ("/api/doctor", "GET"),
        ("/api/doctor/fix", "POST"),
        ("/api/doctor/undo", "POST"),
        ("/api/events", "GET"),
        ("/api/events/ticket", "POST"),
        ("/api/openapi.json", "GET"),
        ("/api/no-such-route", "GET"),
    ],
)
async def test_every_api_route_needs_a_valid_token(companion: Companion, path: str, method: str) -> None:
    resp = await companion.client.request(method, path)
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "missing_token"
    resp = await companion.client.request(method, path, headers={"Authorization": "Bearer not-a-token"})
    assert resp.status == 401
    assert (await resp.json())["error"]["code"] == "invalid_token"


async def test_catalogue_merges_tiers_for_a_subscriber(companion: Companion) -> None:
    fake = companion.upstream.fake
    resp = await companion.get("/api/catalog")
    assert resp.status == 200
    body = await resp.json()
    models = {m["id"]: m for m in body["models"]}
    assert body["count"] == body["total"] == len(fake.models) == len(models)
    assert body["stale"] is False
    # With a subscriber key the canonical list is cut to subscription models; the tier lists still tell.
    assert body["tiers"]["v1"]["count"] == len(fake.ids("subscription"))
    assert body["tiers"]["subscription"]["count"] + body["tiers"]["paid"]["count"] == len(models)
    for entry in fake.models:
        model = models[entry["id"]]
        assert model["subscription"]["included"] is is_included(entry)
        assert ("subscription" in model["tiers"]) is is_included(entry)
        assert ("paid" in model["tiers"]) is not is_included(entry)
        assert "personalized" in model["tiers"]


async def test_catalogue_entries_are_normalised(companion: Companion) -> None:
    body = await json_of(await companion.get("/api/catalog"))
    models = {m["id"]: m for m in body["models"]}
    variants = [m for m in models.values() if m["thinking_base"]]
    assert variants, "the fake serves thinking variants"
    for variant in variants:
        base = models[variant["thinking_base"]]
        assert variant["id"] in base["thinking_variants"]
    assert any(m["is_router"] for m in models.values())
    for model in models.values():
        assert model["vendor"] and "/" not in model["vendor"]
        if model["icon_url"]:
            assert model["icon_url"].startswith("https://")
        assert all(isinstance(v, bool) for v in model["capabilities"].values())


async def test_catalogue_filters_and_sorts(companion: Companion) -> None:
    paid = await json_of(await companion.get("/api/catalog?tier=paid"))
    assert paid["count"] == len(companion.upstream.fake.ids("paid"))
    assert all("paid" in m["tiers"] for m in paid["models"])

    vision = await json_of(await companion.get("/api/catalog?capability=vision&capability=tool_calling"))
    assert vision["count"] > 0
    assert all(
        m["capabilities"].get("vision") and m["capabilities"].get("tool_calling") for m in vision["models"]
    )

    query = await json_of(await companion.get("/api/catalog?q=CLAUDE"))
    assert query["count"] > 0
    assert all("claude" in (m["id"] + m["name"] + m["vendor"]).lower() for m in query["models"])

    by_price = await json_of(await companion.get("/api/catalog?sort=price"))
    prices = [m["pricing"]["prompt"] for m in by_price["models"] if m["pricing"]["prompt"] is not None]
    assert prices == sorted(prices)
    by_context = await json_of(await companion.get("/api/catalog?sort=context"))
    contexts = [m["context_length"] for m in by_context["models"] if m["context_length"] is not None]
    assert contexts == sorted(contexts, reverse=True)

    no_routers = await json_of(await companion.get("/api/catalog?include_routers=false"))
    assert not any(m["is_router"] for m in no_routers["models"])

    for bad in ("sort=cheapest", "tier=gold"):
        resp = await companion.get(f"/api/catalog?{bad}")
        assert resp.status == 400
        assert (await resp.json())["error"]["code"] == "bad_request"


async def test_cold_cache_is_single_flight(aiohttp_client, fake_nanogpt, tmp_path) -> None:
    # Without an ST dir nothing fetches the catalogue at start-up, so the cache is truly cold.
    settings = Settings(upstream=fake_nanogpt.base_url, state_dir=tmp_path / "state", api_key=PAYG_KEY)
    client = await aiohttp_client(init_app(settings))
    token = json.loads((tmp_path / "state/local/user/files/nanogpt-companion.json").read_text())["token"]
    fake = fake_nanogpt.fake
    fake.faults.latency(0.2)  # keep the first round in flight while the others arrive
    headers = {"Authorization": f"Bearer {token}"}
    responses = await asyncio.gather(*(client.get("/api/catalog", headers=headers) for _ in range(100)))
    assert all(r.status == 200 for r in responses)
    for path in MODEL_PATHS:
        assert fake.count(path) == 1, path


async def test_users_are_isolated(companion: Companion) -> None:
    mine = await json_of(await companion.get("/api/account"))
    alices = await json_of(await companion.get("/api/account", handle="alice"))
    assert mine["balance"]["usd"] == pytest.approx(129.46956147)
    assert alices["balance"]["usd"] == pytest.approx(9.54827636)
    assert mine["subscription"]["active"] is True
    assert alices["subscription"]["active"] is False
    # A pay-as-you-go key sees the whole canonical list; the subscriber's is cut down by NanoGPT.
    my_catalog = await json_of(await companion.get("/api/catalog"))
    alice_catalog = await json_of(await companion.get("/api/catalog", handle="alice"))
    assert alice_catalog["tiers"]["v1"]["count"] == len(companion.upstream.fake.models)
    assert my_catalog["tiers"]["v1"]["count"] < alice_catalog["tiers"]["v1"]["count"]
    keys_seen = {record.key_id for record in companion.upstream.fake.log}
    assert {SUBSCRIBER_KEY[-4:], PAYG_KEY[-4:]} <= keys_seen


async def test_cors_allows_only_sillytaverns_origin(companion: Companion) -> None:
    resp = await companion.get("/api/account", headers={"Origin": ST_ORIGIN})
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == ST_ORIGIN
    preflight = await companion.client.options(
        "/api/doctor/fix",
        headers={
            "Origin": ST_ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status == 204
    assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
    evil = await companion.get("/api/account", headers={"Origin": "https://evil.example"})
    assert evil.status == 403
    assert (await evil.json())["error"]["code"] == "origin_not_allowed"
    assert "Access-Control-Allow-Origin" not in evil.headers


async def test_dns_rebinding_host_is_refused(companion: Companion) -> None:
    resp = await companion.get("/api/account", headers={"Host": "attacker.example:8719"})
    assert resp.status == 421
    assert (await resp.json())["error"]["code"] == "bad_host"
    resp = await companion.client.get("/health", headers={"Host": "attacker.example"})
    assert resp.status == 421


async def test_upstream_outage_serves_last_good_data_flagged_stale(companion: Companion) -> None:
    fresh = await json_of(await companion.get("/api/catalog"))
    companion.upstream.fake.faults.status(503)
    refresh = await companion.post("/api/catalog/refresh")
    assert refresh.status == 503
    assert (await refresh.json())["error"]["code"] == "upstream_unavailable"
    stale = await companion.get("/api/catalog")
    assert stale.status == 200
    body = await stale.json()
    assert body["stale"] is True
    assert body["error"]["code"] == "upstream_unavailable"
    assert body["count"] == fresh["count"]


async def test_cold_cache_with_upstream_down_is_a_clear_error(
    start_companion: StartCompanion, fake_nanogpt
) -> None:
    fake_nanogpt.fake.faults.status(500)
    companion = await start_companion()
    resp = await companion.get("/api/catalog")
    assert resp.status == 503
    error = (await resp.json())["error"]
    assert error["code"] == "upstream_unavailable"
    assert "Traceback" not in error["message"]


async def test_malformed_upstream_is_reported_not_crashed(
    start_companion: StartCompanion, fake_nanogpt
) -> None:
    fake_nanogpt.fake.faults.invalid_json("*/models")
    companion = await start_companion()
    resp = await companion.get("/api/catalog")
    assert resp.status == 502
    assert (await resp.json())["error"]["code"] == "upstream_malformed"
    companion.upstream.fake.faults.clear()
    assert (await companion.post("/api/catalog/refresh")).status == 200


async def test_refresh_returns_the_diff(companion: Companion) -> None:
    fake = companion.upstream.fake
    await companion.get("/api/catalog")
    victim = fake.ids("paid")[0]
    priced = fake.ids("paid")[1]
    fake.remove_model(victim)
    fake.set_price(priced, prompt=123.0)
    new = dict(fake.model(fake.ids("paid")[2]), id="acme/brand-new-model")
    fake.add_model(new)
    resp = await companion.post("/api/catalog/refresh")
    assert resp.status == 200
    diff = (await resp.json())["diff"]
    assert diff["added"] == ["acme/brand-new-model"]
    assert diff["removed"] == [victim]
    changed = {c["id"]: c["fields"] for c in diff["changed"]}
    assert changed[priced]["pricing.prompt"][1] == 123.0


async def test_rejected_key_shows_as_rejected_and_is_not_retried(
    start_companion: StartCompanion, fake_nanogpt
) -> None:
    fake = fake_nanogpt.fake
    fake.faults.status(401, "/api/check-balance")
    fake.faults.status(401, "/api/subscription/v1/usage")
    companion = await start_companion()
    body = await json_of(await companion.get("/api/account"))
    assert body["key_status"] == "rejected"

    def balance_calls() -> int:
        return sum(1 for r in fake.log if r.path == "/api/check-balance" and r.key_id == SUBSCRIBER_KEY[-4:])

    assert balance_calls() == 1
    await companion.get("/api/account")
    await companion.get("/api/account")
    assert balance_calls() == 1  # never hammer a rejected key (NanoGPT counts failures toward abuse limits)


async def test_no_key_still_serves_the_catalogue(start_companion: StartCompanion, make_st_install) -> None:
    from tests.fakes.st_fixtures import UserSpec

    st = make_st_install(users={"default-user": UserSpec(secrets="none")})
    companion = await start_companion(st)
    catalog = await companion.get("/api/catalog")
    assert catalog.status == 200
    assert (await catalog.json())["count"] == len(companion.upstream.fake.models)
    account = await json_of(await companion.get("/api/account"))
    assert account["key_status"] == "missing"
    assert companion.upstream.fake.count("/api/personalized/v1/models") == 0  # needs a key; not even tried


async def test_service_without_sillytavern_uses_a_local_token(aiohttp_client, fake_nanogpt, tmp_path) -> None:
    from nanogpt_companion.config import Settings
    from nanogpt_companion.web.app import init_app

    settings = Settings(upstream=fake_nanogpt.base_url, state_dir=tmp_path / "state", api_key=PAYG_KEY)
    client = await aiohttp_client(init_app(settings))
    token_file = tmp_path / "state" / "local" / "user" / "files" / "nanogpt-companion.json"
    token = json.loads(token_file.read_text())["token"]
    headers = {"Authorization": f"Bearer {token}"}
    account = await (await client.get("/api/account", headers=headers)).json()
    assert account["key_source"] == "config"
    assert account["balance"]["usd"] == pytest.approx(9.54827636)
    doctor = await (await client.get("/api/doctor", headers=headers)).json()
    assert doctor["error"]["code"] == "no_data_root"
    fix = await client.post("/api/doctor/fix", headers=headers, json={"all": True})
    assert fix.status == 409


async def test_endpoints_recommend_subscription_for_a_subscriber(companion: Companion) -> None:
    mine = await json_of(await companion.get("/api/endpoints"))
    assert [e["id"] for e in mine["endpoints"]] == [
        "v1",
        "subscription",
        "paid",
        "personalized",
        "v1legacy",
        "v1thinking",
    ]
    assert mine["recommended"] == "subscription"
    assert mine["reason"]
    alices = await json_of(await companion.get("/api/endpoints", handle="alice"))
    assert alices["recommended"] == "v1"


async def test_history_records_a_point_per_change(start_companion: StartCompanion) -> None:
    companion = await start_companion(account_refresh_interval=0)  # refreshes back to back
    await companion.get("/api/account")
    await companion.get("/api/account?refresh=1")  # same values: no new row
    account = companion.upstream.fake.accounts[SUBSCRIBER_KEY]
    account.usd_balance = "100.5"
    await companion.get("/api/account?refresh=1")
    points = (await json_of(await companion.get("/api/account/history?days=1")))["points"]
    assert [p["usd"] for p in points] == [pytest.approx(129.46956147), pytest.approx(100.5)]
    assert (await companion.get("/api/account/history?days=-1")).status == 400


async def test_bad_bodies_get_clear_errors(companion: Companion) -> None:
    resp = await companion.post(
        "/api/doctor/fix", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400
    assert (await resp.json())["error"]["code"] == "bad_request"
    resp = await companion.post("/api/doctor/fix", json={"ids": "x"})
    assert resp.status == 400
    huge = b'{"ids": ["' + b"a" * (200 * 1024) + b'"]}'
    resp = await companion.post("/api/doctor/fix", data=huge, headers={"Content-Type": "application/json"})
    assert resp.status == 413
    assert (await resp.json())["error"]["code"] == "payload_too_large"


def test_the_shipped_openapi_document_is_the_one_the_code_builds() -> None:
    assert SHIPPED.read_bytes() == build_openapi(), "write it anew: python -m nanogpt_companion.web.openapi"


async def test_openapi_describes_every_route(companion: Companion) -> None:
    resp = await companion.get("/api/openapi.json")
    doc = await resp.json()
    assert doc["openapi"].startswith("3.1")
    routes = {
        (r.method.lower(), r.resource.canonical)
        for r in companion.client.app.router.routes()
        if r.resource is not None and r.method != "HEAD"
    }
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert routes == documented


async def read_sse(
    resp: object, wanted: set[str], limit: float = 10, until: object = None
) -> dict[str, list[dict]]:
    """Read events until every name in ``wanted`` arrived (and ``until(events)`` holds, if given)."""
    events: dict[str, list[dict]] = {}
    name = None
    async with asyncio.timeout(limit):
        while not wanted <= set(events) or (until is not None and not until(events)):  # type: ignore[operator]
            line = (await resp.content.readline()).decode().rstrip("\n")  # type: ignore[attr-defined]
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: ") and name:
                events.setdefault(name, []).append(json.loads(line[6:]))
    return events


async def test_event_stream_with_ticket_delivers_catalog_events(companion: Companion) -> None:
    ticket = (await json_of(await companion.post("/api/events/ticket")))["ticket"]
    stream = await companion.client.get(f"/api/events?ticket={ticket}")
    assert stream.status == 200
    assert stream.headers["Content-Type"] == "text/event-stream"
    events = await read_sse(stream, {"hello"})
    assert events["hello"][0]["user"] == "default-user"
    await companion.get("/api/catalog")
    fake = companion.upstream.fake
    fake.add_model(dict(fake.model(fake.ids()[0]), id="acme/announced"))
    await companion.post("/api/catalog/refresh")
    events = await read_sse(
        stream,
        {"catalog"},
        until=lambda ev: any("acme/announced" in e["diff"]["added"] for e in ev["catalog"]),
    )
    announced = [e for e in events["catalog"] if "acme/announced" in e["diff"]["added"]]
    assert announced[-1]["diff"]["added"] == ["acme/announced"]
    stream.close()
    reused = await companion.client.get(f"/api/events?ticket={ticket}")
    assert reused.status == 401  # single use


async def test_keys_never_leak_into_responses_logs_or_events(
    start_companion: StartCompanion, caplog: pytest.LogCaptureFixture
) -> None:
    companion = await start_companion(account_refresh_interval=0)  # every refresh=1 below reaches the fake
    caplog.set_level(logging.DEBUG)
    seen: list[bytes] = []
    ticket = (await json_of(await companion.post("/api/events/ticket")))["ticket"]
    stream = await companion.client.get(f"/api/events?ticket={ticket}&client=extension")
    fake = companion.upstream.fake
    for handle in ("default-user", "alice"):
        for path in (
            "/api/catalog",
            "/api/account?refresh=1",
            "/api/account/history",
            "/api/endpoints",
            "/api/doctor",
            "/api/doctor/policy",
            "/api/openapi.json",
        ):
            seen.append(await (await companion.get(path, handle=handle)).read())
        seen.append(await (await companion.post("/api/catalog/refresh", handle=handle)).read())
    fake.faults.status(401)
    seen.append(await (await companion.get("/api/account?refresh=1")).read())
    seen.append(await (await companion.post("/api/catalog/refresh")).read())
    fake.faults.clear()
    seen.append(await (await companion.post("/api/doctor/fix", json={"all": True})).read())
    await asyncio.sleep(0.2)
    stream_bytes = b""
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            while True:
                chunk = await stream.content.read(65536)
                if not chunk:
                    break
                stream_bytes += chunk
    assert b"event: findings" in stream_bytes or b"event: fix" in stream_bytes
    everything = b"".join(seen) + stream_bytes + caplog.text.encode()
    for key in (SUBSCRIBER_KEY, PAYG_KEY):
        assert key.encode() not in everything
        assert key[8:].encode() not in everything  # not even without the sk-nano- prefix
    assert orjson.loads(seen[0])["count"] > 0  # the scan looked at real data


async def test_journal_lists_automatic_fixes_and_undo_goes_through_it(
    start_companion: StartCompanion, make_st_install
) -> None:
    from tests.fakes.st_fixtures import UserSpec, fixture_path

    settings = json.loads(fixture_path("settings.nanogpt-source-selected.json").read_text())
    settings["oai_settings"]["custom_prompt_post_processing"] = ""
    st = make_st_install(users={"default-user": UserSpec(settings=settings)})
    original = st.user().settings.read_bytes()
    companion = await start_companion(st)
    entries: list[dict] = []
    async with asyncio.timeout(15):
        while not entries:  # the start-up scan fixes PPP on disk by itself (no tab is open)
            entries = (await json_of(await companion.get("/api/doctor/journal")))["entries"]
            await asyncio.sleep(0.05)
    entry = entries[0]
    assert entry["rule"] == "ppp.nanogpt"
    assert entry["path"] == ["oai_settings", "custom_prompt_post_processing"]
    assert entry["old_value"] == "" and entry["mode"] == "file" and entry["undone_at"] is None
    assert (
        json.loads(st.user().settings.read_text())["oai_settings"]["custom_prompt_post_processing"]
        == (entry["new_value"])
    )
    undo = await json_of(await companion.post("/api/doctor/undo", json={"journal_id": entry["journal_id"]}))
    assert undo["status"] == "reverted"
    assert st.user().settings.read_bytes() == original
    after = (await json_of(await companion.get("/api/doctor/journal")))["entries"][0]
    assert after["undone_at"] is not None
    assert (await companion.get("/api/doctor/journal?limit=0")).status == 400
    # Undone means declined: the doctor offers it again but does not re-apply it by itself.
    report = await json_of(await companion.get("/api/doctor"))
    ppp = [f for f in report["findings"] if f["rule"] == "ppp.nanogpt"]
    assert ppp and ppp[0]["declined"] is True and ppp[0]["policy"] == "ask"
    assert st.user().settings.read_bytes() == original
