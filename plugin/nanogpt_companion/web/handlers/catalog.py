from __future__ import annotations

from dataclasses import replace
from typing import get_args
from urllib.parse import parse_qsl

from aiohttp import web
from multidict import MultiDict, MultiMapping

from nanogpt_companion.catalog import CatalogUnavailable, CatalogView, SortKey
from nanogpt_companion.catalog_snapshot import Body, Fields, Variant
from nanogpt_companion.domain import Tier
from nanogpt_companion.nanogpt.errors import NanoGPTError
from nanogpt_companion.web import keys
from nanogpt_companion.web.errors import ApiError, json_response
from nanogpt_companion.web.negotiation import serve_body

SORTS: tuple[str, ...] = get_args(SortKey)
FIELDS: tuple[str, ...] = get_args(Fields)
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


def _requested(query: MultiMapping[str]) -> Variant:
    """The variant a query asks for (400 for a bad one), before the catalogue is looked at."""
    sort = query.get("sort", "name")
    if sort not in SORTS:
        raise ApiError(400, "bad_request", f"Unknown sort {sort[:40]!r}; use one of: {', '.join(SORTS)}.")
    fields = query.get("fields", "full")
    if fields not in FIELDS:
        raise ApiError(
            400, "bad_request", f"Unknown fields {fields[:40]!r}; use one of: {', '.join(FIELDS)}."
        )
    q = query.get("q")
    if q is not None and len(q) > MAX_QUERY_LEN:
        raise ApiError(400, "bad_request", "The search text is too long.")
    return Variant(
        fields=fields,  # type: ignore[arg-type]  # checked against FIELDS above
        tier=_tier(query.get("tier")),
        query=q or "",
        capabilities=tuple(c for c in query.getall("capability", []) if c),
        sort=sort,  # type: ignore[arg-type]  # checked against SORTS above
        include_routers=_flag(query.get("include_routers"), True),
    )


def _answer(requested: Variant, view: CatalogView) -> Body:
    """The body for that variant of this view (its staleness and error are part of what is answered)."""
    # Bodies are joined from bytes serialised once per refresh, and kept per variant with their gzip.
    return view.snapshot.body(replace(requested, stale=view.stale, error=view.error))


# The list the extension loads at every page load: the event stream's hello names its current ETag so an
# unchanged copy is kept without a request. Parsed as the route parses it, so the two cannot disagree.
EXTENSION_LIST = _requested(MultiDict(parse_qsl("fields=summary&include_routers=false")))


async def extension_list_etag(app: web.Application, handle: str) -> str | None:
    """The ETag (identity coding) the extension's list would carry now, or None when its catalogue is not
    in memory (the client then simply asks; this never waits for NanoGPT)."""
    key = await app[keys.USERS].key_for(handle)
    view = app[keys.CATALOG].current(key)
    if view is None:
        return None
    return _answer(EXTENSION_LIST, view).etag("identity")


async def get_catalog(request: web.Request) -> web.Response:
    user = request[keys.CURRENT_USER]
    requested = _requested(request.query)
    key = await request.app[keys.USERS].key_for(user.handle)
    try:
        view = await request.app[keys.CATALOG].get(key)
    except CatalogUnavailable as exc:
        raise ApiError.from_upstream(exc.error) from None
    return await serve_body(request, _answer(requested, view))


async def get_catalog_model(request: web.Request) -> web.Response:
    """One entry in full (description, modalities, cache prices...): what the list leaves out."""
    model_id = request.query.get("id", "")
    if not model_id or len(model_id) > MAX_QUERY_LEN:
        raise ApiError(400, "bad_request", "Give the model id as ?id=...")
    user = request[keys.CURRENT_USER]
    key = await request.app[keys.USERS].key_for(user.handle)
    try:
        view = await request.app[keys.CATALOG].get(key)
    except CatalogUnavailable as exc:
        raise ApiError.from_upstream(exc.error) from None
    entry = view.snapshot.packed.get(model_id)
    if entry is None:
        raise ApiError(404, "not_found", f"No model {model_id[:80]!r} in your NanoGPT catalogue.")
    return web.Response(body=entry.full, content_type="application/json")


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
