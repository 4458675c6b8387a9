"""Request bodies: pydantic models at the edge, and one way to read them with clear 4xx errors."""

from __future__ import annotations

from typing import Literal, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nanogpt_companion.web.errors import ApiError

ModelT = TypeVar("ModelT", bound=BaseModel)


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class FixRequest(Body):
    ids: list[str] | None = Field(None, max_length=200)
    all: bool = False


class UndoRequest(Body):
    journal_id: int = Field(ge=1)


class AckRequest(Body):
    fix_id: str = Field(min_length=1, max_length=64)
    status: Literal["applied", "failed"]
    message: str = Field("", max_length=2000)


class InvolvedSettings(Body):
    """The settings that decide a reply signature, as the tab has them now (doctor/symptoms.py
    ``INVOLVED_PATHS`` says where each lives in settings.json)."""

    main_api: str | None = Field(None, max_length=64)
    chat_completion_source: str | None = Field(None, max_length=64)
    custom_url: str | None = Field(None, max_length=2048)
    custom_model: str | None = Field(None, max_length=512)
    nanogpt_model: str | None = Field(None, max_length=512)
    custom_prompt_post_processing: str | None = Field(None, max_length=64)
    show_thoughts: bool | None = None
    function_calling: bool | None = None
    openai_max_tokens: int | None = Field(None, ge=0, le=10_000_000)
    auto_parse: bool | None = None


class SignatureRequest(Body):
    """A reply signature from the tab: a name, a fixed evidence label, the message's id in the chat and
    the settings involved (their current values in the tab). Never message text."""

    signature: Literal[
        "reasoning_as_text", "speaks_for_user", "empty_reply", "cut_off", "role_error", "reasoning_missing"
    ]
    evidence: str = Field("", max_length=40, pattern=r"^[a-z0-9_-]*$")
    message_id: int | None = Field(None, ge=0)
    settings: InvolvedSettings = Field(default_factory=InvolvedSettings)


class SignatureFixRequest(Body):
    id: str = Field(min_length=1, max_length=128)
    message_id: int | None = Field(None, ge=0)


class PolicyRequest(Body):
    rule: str = Field(min_length=1, max_length=64)
    policy: Literal["auto", "ask", "off"]


async def read_body(request: web.Request, model: type[ModelT]) -> ModelT:
    raw = await request.read()  # bounded by the app's client_max_size
    try:
        data = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError:
        raise ApiError(400, "bad_request", "The request body is not valid JSON.") from None
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise ApiError(400, "bad_request", f"Invalid {where}: {first.get('msg', 'invalid value')}.") from None
