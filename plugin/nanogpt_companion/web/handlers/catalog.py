from __future__ import annotations

from typing import get_args

import orjson
from aiohttp import web

from nanogpt_companion.catalog import CatalogUnavailable, SortKey, filter_entries
from nanogpt_companion.domain import Tier
from nanogpt_companion.nanogpt.errors import NanoGPTError
from nanogpt_companion.web import keys
from nanogpt_companion.web.errors import ApiError, json_response

SORTS: tuple[str, ...] = get_args(SortKey)
MAX_QUERY_LEN = 200


def _tier(value: str | None) -> Tier | None:
    if not value:
        return None
    try:
        return Tier(value)
    except ValueError:
        allowed = ", ".join(t.value for t in Tier)
        raise ApiError(400, "bad_request", f"Unknown tier {value[:40]!r}; use one of: {allowed}.") from None


def _flag(value: str | None, default: bool) -> bool:
    if value is None:
        return default
    return value.lower() in ("1", "true", "yes", "on")


async def get_catalog(request: web.Request) -> web.Response:
    user = request[keys.CURRENT_USER]
    query = request.query
    sort = query.get("sort", "name")
    if sort not in SORTS:
        raise ApiError(400, "bad_request", f"Unknown sort {sort[:40]!r}; use one of: {', '.join(SORTS)}.")
    q = query.get("q")
    if q is not None and len(q) > MAX_QUERY_LEN:
        raise ApiError(400, "bad_request", "The search text is too long.")
    capabilities = [c for c in query.getall("capability", []) if c]
    key = await request.app[keys.USERS].key_for(user.handle)
    try:
        view = await request.app[keys.CATALOG].get(key)
    except CatalogUnavailable as exc:
        raise ApiError.from_upstream(exc.error) from None
    snapshot = view.snapshot
    entries = filter_entries(
        snapshot.entries,
        tier=_tier(query.get("tier")),
        query=q,
        capabilities=capabilities,
        sort=sort,  # type: ignore[arg-type]  # checked against SORTS above
        include_routers=_flag(query.get("include_routers"), True),
    )
    meta = orjson.dumps(
        {
            "count": len(entries),
            "total": len(snapshot.entries),
            "fetched_at": snapshot.fetched_at,
            "stale": view.stale,
            "tiers": {name: status.as_json() for name, status in snapshot.tiers.items()},
            "error": view.error.model_dump() if view.error else None,
        }
    )
    # The model list is joined from bytes serialised once per refresh; only the small tail is built here.
    if entries is snapshot.entries:
        body = snapshot.full_body(meta)
    else:
        body = b'{"models":' + snapshot.models_json(entries) + b"," + meta[1:]
    return web.Response(body=body, content_type="application/json")


async def refresh_catalog(request: web.Request) -> web.Response:
    user = request[keys.CURRENT_USER]
    key = await request.app[keys.USERS].key_for(user.handle)
    try:
        snapshot, diff = await request.app[keys.CATALOG].refresh(key)
    except NanoGPTError as exc:
        raise ApiError.from_upstream(exc) from None
    return json_response(
        {"fetched_at": snapshot.fetched_at, "count": len(snapshot.entries), "diff": diff.as_json()}
    )
