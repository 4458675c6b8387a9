from __future__ import annotations

from aiohttp import web

from nanogpt_companion import API_VERSION, __version__
from nanogpt_companion.web import keys
from nanogpt_companion.web.errors import json_response


async def health(request: web.Request) -> web.Response:
    """Liveness for the extension's status pill and for scripts. No user data, no auth."""
    reachable, checked_at = request.app[keys.CATALOG].upstream_state()
    return json_response(
        {
            "status": "ok",
            "version": __version__,
            "api_version": API_VERSION,
            "upstream": {"reachable": reachable, "checked_at": checked_at},
        }
    )
