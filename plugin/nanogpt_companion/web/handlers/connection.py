"""Routes of the endpoint switch's key step: ``/api/connection/key`` (state, copy) and its undo.

The extension switches ST's connection itself; these routes only move the user's NanoGPT key into the key
slot that connection reads (``key_slots.py``), so the key never passes through the browser.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from aiohttp import web
from pydantic import Field

from nanogpt_companion.key_slots import KeySlotError, KeySlotService
from nanogpt_companion.web import keys
from nanogpt_companion.web.bodies import Body, read_body
from nanogpt_companion.web.errors import ApiError, json_response


class KeyRequest(Body):
    slot: Literal["nanogpt", "custom", "generic"]


class KeyAllRequest(Body):
    # None: every slot the user's NanoGPT set-up reads (doctor/rules/keys.py needed_key_slots).
    slots: list[Literal["nanogpt", "custom", "generic"]] | None = Field(None, min_length=1, max_length=3)


class KeyUndoRequest(Body):
    write_id: int = Field(ge=1)


def _service(request: web.Request) -> KeySlotService:
    return request.app[keys.KEY_SLOTS]


@contextmanager
def _refusals_as_api_errors() -> Iterator[None]:
    """The key-slot service's refusals (no key, slot taken, write failed...) in the contract's error shape."""
    try:
        yield
    except KeySlotError as exc:
        raise ApiError(exc.status, exc.code, exc.message) from None


async def get_key_state(request: web.Request) -> web.Response:
    user = request[keys.CURRENT_USER]
    with _refusals_as_api_errors():
        return json_response(await _service(request).state(user.handle))


async def set_key(request: web.Request) -> web.Response:
    """Copy the user's NanoGPT key into ST's ``slot`` key (made active); the answer names the change's id."""
    user = request[keys.CURRENT_USER]
    body = await read_body(request, KeyRequest)
    with _refusals_as_api_errors():
        result = await _service(request).install(user.handle, body.slot)
    return json_response(result.as_json())


async def set_key_everywhere(request: web.Request) -> web.Response:
    """One action: the NanoGPT key into every slot the user's set-up reads; one result (and undo id) each."""
    user = request[keys.CURRENT_USER]
    body = await read_body(request, KeyAllRequest)
    with _refusals_as_api_errors():
        results = await _service(request).install_everywhere(user.handle, body.slots)
    return json_response({"results": results})


async def undo_key(request: web.Request) -> web.Response:
    user = request[keys.CURRENT_USER]
    body = await read_body(request, KeyUndoRequest)
    with _refusals_as_api_errors():
        return json_response(await _service(request).undo(user.handle, body.write_id))
