from __future__ import annotations

from aiohttp import web

from nanogpt_companion import API_VERSION, __version__
from nanogpt_companion.plugin_link import CHALLENGE_HEADER, PROOF_HEADER
from nanogpt_companion.web import keys
from nanogpt_companion.web.errors import json_response


async def health(request: web.Request) -> web.Response:
    """Liveness for the extension's status pill and for scripts. No user data, no auth.

    With a challenge header (ST's server plugin sends one on every new connection, as ``HEAD``) the answer
    also carries the proof that this is the service the plugin's link file names: an HMAC of the challenge
    under the secret in that file. Without the secret (no plugin installed) there is no proof header.
    """
    reachable, checked_at = request.app[keys.CATALOG].upstream_state()
    response = json_response(
        {
            "status": "ok",
            "service": "nanogpt-companion",
            "version": __version__,
            "api_version": API_VERSION,
            "upstream": {"reachable": reachable, "checked_at": checked_at},
        }
    )
    challenge = request.headers.get(CHALLENGE_HEADER)
    if challenge is not None:
        answer = request.app[keys.PLUGIN_LINK].proof_for(challenge)
        if answer is not None:
            response.headers[PROOF_HEADER] = answer
        response.headers["Cache-Control"] = "no-store"
    return response
