"""The fake NanoGPT's provider-selection and image routes (reference/nanogpt-api.md, tables in 2.x and 5.6).

- ``GET /api/models/{canonicalId}/providers`` (the slash in the id URL-encoded; not under ``/api/v1``):
  ``{canonicalId, displayName, supportsProviderSelection, defaultPrice, providers: [{provider, available,
  pricing}]}``, prices per 1K tokens. Seeded with the three situations the doctor must tell apart: a model
  with selection (DeepSeek V4 Pro, one of its providers unavailable, as in ST issue #5615), one whose
  selection NanoGPT does not support (GPT 5.2), and every other known model without selection. An unknown
  id is a 404.
- ``GET /api/models/providers``: the master list ``{providers: [{id, label}]}``.
- ``GET /api/models`` (legacy, "Models (Old)"): ``{models: {text: {...}, image: {<id>: {model, name, cost,
  ...}}}}``; ST's Image Generation lists ``models.image`` from here (ST 1.18.0
  src/endpoints/stable-diffusion.js L1390-1425).
- ``POST /api/generate-image`` (``x-api-key``): ``{data: [{b64_json}]}``, what ST's
  ``/api/sd/nanogpt/generate`` forwards to (L1429-1466). Requests are recorded by key id, never by key.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

# A 1x1 PNG: what the fake "draws".
PIXEL_PNG = base64.b64encode(
    bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
    )
).decode()

# The master list: ids as NanoGPT names them (a subset of ST 1.18.0 public/scripts/textgen-models.js
# NANOGPT_PROVIDERS L116ff, plus "wafer", which only ST 1.19.0's static list knows).
MASTER_PROVIDERS: tuple[tuple[str, str], ...] = (
    ("akash", "Akash"),
    ("chutes", "Chutes"),
    ("deepinfra", "DeepInfra"),
    ("deepseek", "DeepSeek"),
    ("fireworks", "Fireworks"),
    ("novita", "Novita"),
    ("together", "Together"),
    ("wafer", "Wafer"),
    ("zai", "Z.AI"),
)

SELECTABLE_MODEL = "deepseek/deepseek-v4-pro:thinking"  # selection supported; "chutes" unavailable
UNAVAILABLE_PROVIDER = "chutes"
NO_SELECTION_MODEL = "openai/gpt-5.2"  # NanoGPT says it does not support provider selection


def _provider(pid: str, available: bool, prompt: float, completion: float) -> dict[str, Any]:
    return {
        "provider": pid,
        "available": available,
        "pricing": {"inputPer1kTokens": prompt, "outputPer1kTokens": completion},
    }


def default_provider_info() -> dict[str, dict[str, Any]]:
    return {
        SELECTABLE_MODEL: {
            "canonicalId": SELECTABLE_MODEL,
            "displayName": "DeepSeek V4 Pro (Thinking)",
            "supportsProviderSelection": True,
            "defaultPrice": {"inputPer1kTokens": 0.0004, "outputPer1kTokens": 0.0016},
            "providers": [
                _provider("deepinfra", True, 0.0004, 0.0016),
                _provider("fireworks", True, 0.0009, 0.0027),
                _provider(UNAVAILABLE_PROVIDER, False, 0.0003, 0.0012),
                _provider("wafer", True, 0.0005, 0.0015),
            ],
        },
        NO_SELECTION_MODEL: {
            "canonicalId": NO_SELECTION_MODEL,
            "displayName": "GPT 5.2",
            "supportsProviderSelection": False,
            "defaultPrice": {"inputPer1kTokens": 0.00125, "outputPer1kTokens": 0.01},
            "providers": [],
        },
    }


def default_image_models() -> dict[str, dict[str, Any]]:
    return {
        "flux-schnell": {
            "model": "flux-schnell",
            "name": "Flux Schnell",
            "description": "Fast, cheap drafts.",
            "cost": {"512x512": 0.0015, "1024x1024": 0.003},
            "subscription": {"included": True, "note": "Included in subscription"},
            "resolutions": [{"value": "1024x1024"}, {"value": "512x512"}],
        },
        "hidream": {
            "model": "hidream",
            "name": "HiDream I1",
            "description": "Detailed images.",
            "cost": {"1024x1024": 0.0306},
            "subscription": {"included": False},
        },
        "recraft-v3": {"model": "recraft-v3", "name": "Recraft V3", "cost": 0.04},
    }


@dataclass(frozen=True)
class ImageRequest:
    model: str
    prompt: str
    resolution: str | None
    key_id: str | None


@dataclass
class ProviderBehaviour:
    """What the provider and image routes answer; tests change it between requests."""

    info: dict[str, dict[str, Any]] = field(default_factory=default_provider_info)
    master: list[dict[str, str]] = field(
        default_factory=lambda: [{"id": pid, "label": label} for pid, label in MASTER_PROVIDERS]
    )
    image_models: dict[str, dict[str, Any]] = field(default_factory=default_image_models)
    image_requests: list[ImageRequest] = field(default_factory=list)
    provider_paths: list[str] = field(default_factory=list)  # raw (still encoded) paths asked for

    def set_available(self, model_id: str, provider: str, available: bool) -> None:
        for entry in self.info[model_id]["providers"]:
            if entry["provider"] == provider:
                entry["available"] = available


def add_provider_routes(
    app: web.Application,
    behaviour: ProviderBehaviour,
    *,
    known_model: Callable[[str], bool],
    text_models: Callable[[], list[dict[str, Any]]],
    authorised: Callable[[str | None], bool],
    key_id: Callable[[str | None], str | None],
) -> None:
    async def model_providers(request: web.Request) -> web.Response:
        model_id = request.match_info["model"]
        behaviour.provider_paths.append(request.raw_path)
        info = behaviour.info.get(model_id)
        if info is None:
            if not known_model(model_id):
                return _json({"error": {"message": "Model not found", "code": "model_not_found"}}, 404)
            info = {
                "canonicalId": model_id,
                "displayName": model_id,
                "supportsProviderSelection": False,
                "providers": [],
            }
        return _json(copy.deepcopy(info))

    async def master(_request: web.Request) -> web.Response:
        return _json({"providers": list(behaviour.master)})

    async def legacy_models(_request: web.Request) -> web.Response:
        text = {
            entry["id"]: {
                "name": entry.get("name") or entry["id"],
                "visible": True,
                "inputCost": (entry.get("pricing") or {}).get("prompt"),
                "outputCost": (entry.get("pricing") or {}).get("completion"),
                "maxInputTokens": entry.get("context_length"),
            }
            for entry in text_models()
        }
        return _json({"models": {"text": text, "image": copy.deepcopy(behaviour.image_models)}})

    async def generate_image(request: web.Request) -> web.Response:
        key = request.headers.get("x-api-key")
        if not authorised(key):
            return _json({"error": {"message": "Invalid API key", "code": "invalid_api_key"}}, 401)
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _json({"error": {"message": "Invalid JSON"}}, 400)
        model = str(body.get("model") or "")
        behaviour.image_requests.append(
            ImageRequest(model, str(body.get("prompt") or ""), body.get("resolution"), key_id(key))
        )
        if model not in behaviour.image_models:
            return _json({"error": {"message": f"Unknown image model {model}"}}, 400)
        return _json({"data": [{"b64_json": PIXEL_PNG}], "cost": 0.003, "remainingBalance": 1.0})

    app.router.add_get("/api/models/providers", master)
    app.router.add_get("/api/models/{model:.+}/providers", model_providers)
    app.router.add_get("/api/models", legacy_models)
    app.router.add_post("/api/generate-image", generate_image)


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")
