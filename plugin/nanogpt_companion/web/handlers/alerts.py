"""Account alerts kept until a tab has shown them: the unseen list, and marking them seen."""

from __future__ import annotations

from aiohttp import web
from pydantic import Field

from nanogpt_companion.web import keys
from nanogpt_companion.web.bodies import Body, read_body
from nanogpt_companion.web.errors import json_response


class SeenRequest(Body):
    ids: list[str] = Field(min_length=1, max_length=200)


async def get_alerts(request: web.Request) -> web.Response:
    """Alerts no ST tab has shown yet (oldest first), e.g. a low balance found while no tab was open."""
    user = request[keys.CURRENT_USER]
    return json_response({"alerts": await request.app[keys.ACCOUNT].unseen_alerts(user.handle)})


async def mark_seen(request: web.Request) -> web.Response:
    user = request[keys.CURRENT_USER]
    body = await read_body(request, SeenRequest)
    marked = await request.app[keys.ACCOUNT].mark_alerts_seen(user.handle, body.ids)
    return json_response({"marked": marked})
