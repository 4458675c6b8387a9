"""The catalogue on the wire: ETag/304, gzip built once per snapshot, the summary list, one full entry."""

from __future__ import annotations

import gzip
from typing import Any

import orjson

from nanogpt_companion.domain import CatalogEntry, CatalogSummary
from tests.fakes.nanogpt_fixtures import FakeNanoGPTServer
from tests.fakes.nanogpt_upstream import SUBSCRIBER_KEY
from tests.web.conftest import ST_ORIGIN, Companion, StartCompanion
from tests.web.test_api import read_sse

SUMMARY = "/api/catalog?fields=summary&include_routers=false"  # what the extension asks for


async def raw_get(companion: Companion, path: str, **headers: str) -> tuple[int, Any, bytes]:
    """The answer as it is on the wire (no transparent decompression; plain unless asked otherwise)."""
    resp = await companion.get(
        path, headers={"Accept-Encoding": "identity", **headers}, auto_decompress=False
    )
    return resp.status, resp.headers, await resp.read()


async def test_unchanged_catalogue_answers_304_with_the_same_etag(companion: Companion) -> None:
    status, headers, body = await raw_get(companion, SUMMARY, **{"Accept-Encoding": "gzip"})
    assert status == 200
    etag = headers["ETag"]
    assert etag.startswith('"') and not etag.startswith("W/")  # strong
    assert headers["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in headers["Vary"]
    assert headers["Cache-Control"] == "private, no-cache"
    status, headers, body = await raw_get(
        companion, SUMMARY, **{"Accept-Encoding": "gzip", "If-None-Match": etag}
    )
    assert (status, body, headers["ETag"]) == (304, b"", etag)
    # A list of tags, a weak form of ours, or our tag from the other coding all match.
    for candidate in (f'"nope", {etag}', f"W/{etag}", etag.replace('.gz"', '"'), "*"):
        status, _, _ = await raw_get(companion, SUMMARY, **{"If-None-Match": candidate})
        assert status == 304, candidate
    status, _, _ = await raw_get(companion, SUMMARY, **{"If-None-Match": '"something-else"'})
    assert status == 200


async def test_refresh_that_changes_nothing_keeps_the_etag(companion: Companion) -> None:
    _, headers, _ = await raw_get(companion, SUMMARY)
    before = headers["ETag"]
    upstream_calls = companion.upstream.fake.count("/api/v1/models", key=SUBSCRIBER_KEY)
    refresh = await companion.post("/api/catalog/refresh")
    assert refresh.status == 200
    assert (await refresh.json())["diff"] == {"added": [], "removed": [], "changed": []}
    assert companion.upstream.fake.count("/api/v1/models", key=SUBSCRIBER_KEY) == upstream_calls + 1
    status, headers, _ = await raw_get(companion, SUMMARY, **{"If-None-Match": before})
    assert status == 304 and headers["ETag"] == before


async def test_refresh_that_changes_the_catalogue_changes_the_etag(companion: Companion) -> None:
    fake = companion.upstream.fake
    _, headers, old_body = await raw_get(companion, SUMMARY)
    before = headers["ETag"]
    model_id = fake.ids("paid")[0]
    fake.set_price(model_id, prompt=77.0)
    assert (await companion.post("/api/catalog/refresh")).status == 200
    status, headers, body = await raw_get(companion, SUMMARY, **{"If-None-Match": before})
    assert status == 200 and headers["ETag"] != before
    models = {m["id"]: m for m in orjson.loads(body)["models"]}
    assert models[model_id]["pricing"]["prompt"] == 77.0
    assert orjson.loads(old_body)["fetched_at"] < orjson.loads(body)["fetched_at"]
    status, _, _ = await raw_get(companion, SUMMARY, **{"If-None-Match": headers["ETag"]})
    assert status == 304


async def test_gzip_decodes_to_the_plain_json_for_every_variant(companion: Companion) -> None:
    for path in ("/api/catalog", SUMMARY, "/api/catalog?tier=paid&sort=price", "/api/catalog?q=claude"):
        _, plain_headers, plain = await raw_get(companion, path, **{"Accept-Encoding": "identity"})
        _, gz_headers, packed = await raw_get(companion, path, **{"Accept-Encoding": "gzip, deflate, br"})
        assert "Content-Encoding" not in plain_headers
        assert gz_headers["Content-Encoding"] == "gzip"
        assert gzip.decompress(packed) == plain, path
        assert len(packed) < len(plain) / 4, path
        # One representation per coding, sharing the validator of the content.
        assert gz_headers["ETag"] != plain_headers["ETag"]
        assert gz_headers["ETag"].rstrip('"').removesuffix(".gz") == plain_headers["ETag"].rstrip('"')


async def test_accept_encoding_is_negotiated_by_its_q_values(companion: Companion) -> None:
    for accept, coded in (
        ("gzip;q=0, deflate", False),
        ("*;q=0.5", True),
        ("*, gzip;q=0", False),
        ("br, x-gzip", True),
        ("", False),
    ):
        _, headers, _ = await raw_get(companion, SUMMARY, **{"Accept-Encoding": accept})
        assert (headers.get("Content-Encoding") == "gzip") is coded, accept


async def test_variants_have_their_own_etags(companion: Companion) -> None:
    tags = set()
    for path in (
        "/api/catalog",
        "/api/catalog?fields=summary",
        SUMMARY,
        "/api/catalog?tier=paid",
        "/api/catalog?q=claude",
        "/api/catalog?sort=price",
        "/api/catalog?capability=vision",
    ):
        _, headers, _ = await raw_get(companion, path, **{"Accept-Encoding": "identity"})
        tags.add(headers["ETag"])
    assert len(tags) == 7
    # The same query spelled differently is the same variant.
    _, a, _ = await raw_get(companion, "/api/catalog?q=Claude&capability=vision&capability=tool_calling")
    _, b, _ = await raw_get(companion, "/api/catalog?capability=tool_calling&capability=vision&q=claude")
    assert a["ETag"] == b["ETag"]
    # Another user's catalogue is another representation.
    resp = await companion.get(SUMMARY, handle="alice", headers={"Accept-Encoding": "identity"})
    assert resp.headers["ETag"] != (await raw_get(companion, SUMMARY))[1]["ETag"]


async def test_stale_data_is_a_new_representation(companion: Companion) -> None:
    _, headers, _ = await raw_get(companion, SUMMARY)
    fresh_tag = headers["ETag"]
    companion.upstream.fake.faults.status(503)
    assert (await companion.post("/api/catalog/refresh")).status == 503
    status, headers, body = await raw_get(companion, SUMMARY, **{"If-None-Match": fresh_tag})
    assert status == 200  # the cached copy says "fresh": it must be replaced by the stale-flagged one
    data = orjson.loads(body)
    assert data["stale"] is True and data["error"]["code"] == "upstream_unavailable"
    assert headers["ETag"] != fresh_tag


async def test_summary_is_the_documented_projection_of_the_full_list(companion: Companion) -> None:
    full = orjson.loads((await raw_get(companion, "/api/catalog?include_routers=false"))[2])
    summary = orjson.loads((await raw_get(companion, SUMMARY))[2])
    assert {k: v for k, v in full.items() if k != "models"} == {
        k: v for k, v in summary.items() if k != "models"
    }
    assert [m["id"] for m in summary["models"]] == [m["id"] for m in full["models"]]
    for small, whole in zip(summary["models"], full["models"], strict=True):
        CatalogSummary.model_validate(small)
        assert small == {
            **{k: whole[k] for k in CatalogSummary.model_fields if k not in ("pricing", "subscription")},
            "pricing": {k: whole["pricing"][k] for k in ("prompt", "completion")},
            "subscription": {k: whole["subscription"][k] for k in ("included", "input_multiplier")},
        }
    full_size = len((await raw_get(companion, "/api/catalog?include_routers=false"))[2])
    assert len((await raw_get(companion, SUMMARY))[2]) < full_size / 2


async def test_one_entry_in_full_on_demand(companion: Companion) -> None:
    full = orjson.loads((await raw_get(companion, "/api/catalog"))[2])["models"]
    wanted = next(m for m in full if "/" in m["id"] and m.get("description"))
    resp = await companion.get("/api/catalog/model", params={"id": wanted["id"]})
    assert resp.status == 200
    assert await resp.json() == wanted
    CatalogEntry.model_validate(wanted)
    missing = await companion.get("/api/catalog/model", params={"id": "acme/no-such-model"})
    assert missing.status == 404 and (await missing.json())["error"]["code"] == "not_found"
    assert (await companion.get("/api/catalog/model")).status == 400
    assert (await companion.get("/api/catalog?fields=everything")).status == 400


async def test_cors_lets_the_extension_revalidate(companion: Companion) -> None:
    preflight = await companion.client.options(
        "/api/catalog",
        headers={
            "Origin": ST_ORIGIN,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization, if-none-match",
        },
    )
    assert "If-None-Match" in preflight.headers["Access-Control-Allow-Headers"]
    assert preflight.headers["Access-Control-Max-Age"] == "7200"  # reused across page loads
    resp = await companion.get(SUMMARY, headers={"Origin": ST_ORIGIN})
    assert "ETag" in resp.headers["Access-Control-Expose-Headers"]
    # What only a preflight reads stays off the ordinary answers (a 304 is mostly headers).
    assert not {"Access-Control-Allow-Headers", "Access-Control-Max-Age"} & set(resp.headers)
    vary = {v.strip() for v in resp.headers["Vary"].split(",")}
    assert vary == {"Accept-Encoding", "Origin"}  # CORS must not overwrite the handler's Vary


async def hello_of(companion: Companion) -> dict[str, Any]:
    """The data of the `hello` event a newly opened event stream starts with."""
    ticket = (await (await companion.post("/api/events/ticket")).json())["ticket"]
    stream = await companion.client.get(f"/api/events?ticket={ticket}")
    try:
        return (await read_sse(stream, {"hello"}))["hello"][0]
    finally:
        stream.close()


async def test_the_event_streams_hello_names_the_etag_of_the_extensions_list(
    start_companion: StartCompanion, fake_nanogpt: FakeNanoGPTServer
) -> None:
    """A page holding that representation keeps it without a request (docs/http-contract.md)."""
    fake = fake_nanogpt.fake
    fake.faults.status(503, "*/models")
    companion = await start_companion()
    # No catalogue in memory: null at once (the hello never waits for NanoGPT), and the client asks.
    assert (await hello_of(companion))["catalog_etag"] is None
    fake.faults.clear()
    assert (await companion.post("/api/catalog/refresh")).status == 200
    _, plain, _ = await raw_get(companion, SUMMARY)
    _, coded, _ = await raw_get(companion, SUMMARY, **{"Accept-Encoding": "gzip"})
    current = (await hello_of(companion))["catalog_etag"]
    assert current == plain["ETag"] and coded["ETag"] == current[:-1] + '.gz"'
    # Another variant has its own tag: the hello names the extension's, not the full list's.
    _, full, _ = await raw_get(companion, "/api/catalog")
    assert full["ETag"] != current
    # A changed catalogue: a new tag, the one the list now carries.
    model_id = fake.ids("paid")[0]
    fake.set_price(model_id, prompt=55.0)
    assert (await companion.post("/api/catalog/refresh")).status == 200
    changed = (await hello_of(companion))["catalog_etag"]
    _, plain, _ = await raw_get(companion, SUMMARY)
    assert changed == plain["ETag"] != current
    # A failed refresh marks the list stale (its body says so): the hello follows, no copy is kept wrongly.
    fake.faults.status(503, "*/models")
    assert (await companion.post("/api/catalog/refresh")).status == 503
    stale = (await hello_of(companion))["catalog_etag"]
    status, plain, body = await raw_get(companion, SUMMARY)
    assert status == 200 and orjson.loads(body)["stale"] is True
    assert stale == plain["ETag"] != changed
