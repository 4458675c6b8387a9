"""Routes for what the catalogue browser shows on demand: a model's providers, and NanoGPT's image models.

Provider info is asked per model only when the user opens that model (``providers.py`` explains why never
per catalogue row); both answers come from the shared, single-flight cache.
"""

from __future__ import annotations

from aiohttp import web

from nanogpt_companion.doctor.rules.providers import providers_lookup_id
from nanogpt_companion.nanogpt.errors import NanoGPTError
from nanogpt_companion.web import keys
from nanogpt_companion.web.errors import ApiError, json_response

MAX_MODEL_ID = 200


async def get_model_providers(request: web.Request) -> web.Response:
    model = (request.query.get("model") or "").strip()
    if not model:
        raise ApiError(400, "bad_request", "Say which model: ?model=<model id>.")
    if len(model) > MAX_MODEL_ID or any(ord(ch) < 32 for ch in model):
        raise ApiError(400, "bad_request", "That is not a model id.")
    service = request.app[keys.PROVIDERS]
    lookup = providers_lookup_id(model, await service.names())
    try:
        info, stale = await service.for_model(lookup)
    except NanoGPTError as exc:
        raise ApiError.from_upstream(exc) from None
    return json_response({**info.model_dump(mode="json"), "requested": model, "stale": stale})


async def get_image_models(request: web.Request) -> web.Response:
    user = request[keys.CURRENT_USER]
    key = await request.app[keys.USERS].key_for(user.handle)
    try:
        models, stale = await request.app[keys.PROVIDERS].image_models(key.reveal())
    except NanoGPTError as exc:
        raise ApiError.from_upstream(exc) from None
    return json_response(
        {"models": [m.model_dump(mode="json") for m in models], "count": len(models), "stale": stale}
    )
