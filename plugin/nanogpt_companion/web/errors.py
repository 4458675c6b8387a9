"""JSON errors: every non-2xx answer is ``{"error": {"code", "message"}}``, never a stack trace or a key."""

from __future__ import annotations

import orjson
from aiohttp import web

from nanogpt_companion.nanogpt.errors import NanoGPTError

# How each upstream failure reaches the browser. 502/503/504 only where there is truly nothing to serve.
_UPSTREAM_STATUS = {
    "no_key": 400,
    "key_rejected": 401,
    "insufficient_balance": 402,
    "rate_limited": 429,
    "upstream_unavailable": 503,
    "upstream_malformed": 502,
}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}

    @classmethod
    def from_upstream(cls, exc: NanoGPTError) -> ApiError:
        headers = {}
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            headers["Retry-After"] = str(max(1, round(retry_after)))
        return cls(_UPSTREAM_STATUS.get(exc.code, 502), exc.code, str(exc), headers)


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    body = orjson.dumps({"error": {"code": code, "message": message}})
    return web.Response(status=status, body=body, content_type="application/json", headers=headers)


def json_response(data: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")
