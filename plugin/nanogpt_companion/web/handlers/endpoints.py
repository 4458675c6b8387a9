from __future__ import annotations

from aiohttp import web

from nanogpt_companion.nanogpt.endpoints import ENDPOINTS, recommend_endpoint
from nanogpt_companion.web import keys
from nanogpt_companion.web.errors import json_response


async def get_endpoints(request: web.Request) -> web.Response:
    """The six NanoGPT base URLs, what each is for, and which one fits this user (and why)."""
    user = request[keys.CURRENT_USER]
    account = await request.app[keys.ACCOUNT].get(user.handle)
    recommended, reason = recommend_endpoint(account)
    return json_response(
        {
            "endpoints": [
                {
                    "id": e.id,
                    "url": e.url,
                    "title": e.title,
                    "description": e.description,
                    "chat_completion": e.chat_completion,
                    "text_completion": e.text_completion,
                    "reasoning_field": e.reasoning_field,
                }
                for e in ENDPOINTS
            ],
            "recommended": recommended,
            "reason": reason,
        }
    )
