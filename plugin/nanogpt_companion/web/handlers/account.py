from __future__ import annotations

from aiohttp import web

from nanogpt_companion.web import keys
from nanogpt_companion.web.errors import ApiError, json_response

MAX_HISTORY_DAYS = 366


async def get_account(request: web.Request) -> web.Response:
    """Balance and subscription usage. ``?refresh=1`` polls NanoGPT now instead of serving the cache (at most
    once per ``MIN_REFRESH_INTERVAL``; ``next_refresh_at`` says when the next one will go out)."""
    user = request[keys.CURRENT_USER]
    service = request.app[keys.ACCOUNT]
    if request.query.get("refresh") in ("1", "true"):
        snapshot = await service.refresh(user.handle)
    else:
        snapshot = await service.get(user.handle)
    # When the next refresh the user asks for will reach NanoGPT (refreshes are rate-limited).
    body = {**snapshot.model_dump(mode="json"), "next_refresh_at": service.next_refresh_at(user.handle)}
    return json_response(body)


async def get_history(request: web.Request) -> web.Response:
    user = request[keys.CURRENT_USER]
    raw = request.query.get("days", "7")
    try:
        days = float(raw)
    except ValueError:
        raise ApiError(400, "bad_request", "days must be a number.") from None
    if not 0 < days <= MAX_HISTORY_DAYS:
        raise ApiError(400, "bad_request", f"days must be between 0 and {MAX_HISTORY_DAYS}.")
    points = await request.app[keys.ACCOUNT].history(user.handle, days)
    return json_response({"points": [p.to_json() for p in points]})
