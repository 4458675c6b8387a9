"""The fake NanoGPT's inference routes: chat completions and text completions on every base URL.

Real SillyTavern sends messages through these in the journey tests ("after the click, can ST chat?"), so
they answer the way NanoGPT does for each base (docs: api-reference/miscellaneous/extended-thinking):
``/api/v1`` returns reasoning in ``reasoning``, ``/api/v1legacy`` in ``reasoning_content``, and
``/api/v1thinking`` folds it into the content as ``<think>...</think>``. Streaming follows OpenAI's SSE
chunk format. Every request is recorded (model, base, stream, message roles, billing headers, key id) so a
test can see what ST really sent after PPP and its own processing.

Each answered request is charged to its account when the answer is complete (``charge``), as NanoGPT books
a request once it has finished: the balance and the subscription usage the fake reports move with every
generation, which is what the companion's spend attribution measures.

Replies are deterministic: ``Reply(text, reasoning)`` chosen per model by ``InferenceBehaviour.replies``,
else a default that names the model and the base, so a test can tell which one answered. A test that
needs a malformed reply (reasoning as text, a reply that speaks for the user, an empty or cut-off reply, a
"roles must alternate" refusal) sets ``InferenceBehaviour.shape`` to one of ``tests/fakes/reply_shapes.py``;
a shape sees the request as NanoGPT would (roles, max_tokens) and answers malformed only while the request
still has the problem, so a regenerate after the user's fix gets a clean reply.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from aiohttp import web

# Base path (below /api) -> where reasoning goes in the answer.
INFERENCE_BASES: dict[str, str] = {
    "v1": "reasoning",
    "subscription/v1": "reasoning",
    "paid/v1": "reasoning",
    "personalized/v1": "reasoning",
    "v1legacy": "reasoning_content",
    "v1thinking": "content",
}


@dataclass(frozen=True)
class Reply:
    text: str
    reasoning: str | None = None
    prompt_tokens: int = 12
    completion_tokens: int = 9
    finish_reason: str = "stop"  # "length" when the reply stopped at max_tokens


@dataclass(frozen=True)
class InferenceRecord:
    base: str
    kind: str  # "chat" | "text"
    model: str
    stream: bool
    roles: tuple[str, ...]
    key_id: str | None
    provider: str | None  # X-Provider header
    billing_mode: str | None  # X-Billing-Mode header or billing_mode body field
    body: dict[str, Any]


@dataclass
class InferenceBehaviour:
    """What the inference routes answer; tests change it between requests."""

    replies: dict[str, Reply] = field(default_factory=dict)  # model id -> reply
    default: Callable[[str, str], Reply] = field(
        default=lambda model, base: Reply(f"Hello from the fake NanoGPT ({model} on /api/{base}).")
    )
    stream_chunk_delay: float = 0.0
    # (status, message): answer every inference request with this error, as NanoGPT relays a provider's
    # refusal (e.g. 400 "Conversation roles must alternate user/assistant/...").
    error: tuple[int, str] | None = None
    # Per request: a Reply to answer instead, an (status, message) error, or None for the usual reply.
    shape: Callable[[InferenceRecord, Reply], Reply | tuple[int, str] | None] | None = None
    records: list[InferenceRecord] = field(default_factory=list)

    def reply_for(self, model: str, base: str) -> Reply:
        return self.replies.get(model) or self.default(model, base)


class Charge(Protocol):
    def __call__(
        self, key: str | None, model: str, base: str, billing_mode: str | None, reply: Reply
    ) -> None: ...


def add_inference_routes(
    app: web.Application,
    behaviour: InferenceBehaviour,
    *,
    known_model: Callable[[str], bool],
    authorised: Callable[[str | None], bool],
    key_of: Callable[[web.Request], str | None],
    key_id: Callable[[str | None], str | None],
    charge: Charge | None = None,
) -> None:
    """``charge(key, model, base, billing_mode, reply)`` runs once per answered request, after the last
    byte of the answer (a stream the client abandons midway is still charged, as a provider would)."""

    async def chat(request: web.Request) -> web.StreamResponse:
        return await _answer(request, "chat")

    async def text(request: web.Request) -> web.StreamResponse:
        return await _answer(request, "text")

    async def _answer(request: web.Request, kind: str) -> web.StreamResponse:
        base = request.match_info["base"]
        key = key_of(request)
        if not authorised(key):
            return _error(401, "Invalid API key", "invalid_api_key")
        try:
            body = orjson.loads(await request.read())
        except orjson.JSONDecodeError:
            return _error(400, "Invalid JSON body", "invalid_request_error")
        if not isinstance(body, dict):
            return _error(400, "Invalid JSON body", "invalid_request_error")
        model = str(body.get("model") or "")
        bare_model = model.removesuffix(":online")
        if not known_model(bare_model):
            return _error(404, f"Model {model} not found", "model_not_found")
        messages = body.get("messages") if kind == "chat" else None
        roles = tuple(str(m.get("role")) for m in messages or [] if isinstance(m, dict))
        billing_mode = request.headers.get("X-Billing-Mode") or body.get("billing_mode")
        record = InferenceRecord(
            base=base,
            kind=kind,
            model=model,
            stream=bool(body.get("stream")),
            roles=roles,
            key_id=key_id(key),
            provider=request.headers.get("X-Provider"),
            billing_mode=billing_mode,
            body=body,
        )
        behaviour.records.append(record)
        if behaviour.error is not None:
            status, message = behaviour.error
            return _error(status, message, "invalid_request_error")
        reply = behaviour.reply_for(bare_model, base)
        if behaviour.shape is not None:
            shaped = behaviour.shape(record, reply)
            if isinstance(shaped, tuple):
                return _error(shaped[0], shaped[1], "invalid_request_error")
            if shaped is not None:
                reply = shaped
        reasoning_field = INFERENCE_BASES[base]
        mode = billing_mode if isinstance(billing_mode, str) else None
        try:
            if body.get("stream"):
                return await _stream(
                    request, kind, model, reply, reasoning_field, behaviour.stream_chunk_delay
                )
            return web.Response(
                body=orjson.dumps(_completion(kind, model, reply, reasoning_field)),
                content_type="application/json",
            )
        finally:
            if charge is not None:
                charge(key, bare_model, base, mode, reply)

    for base in INFERENCE_BASES:
        app.router.add_post(f"/api/{{base:{_pattern(base)}}}/chat/completions", chat)
        app.router.add_post(f"/api/{{base:{_pattern(base)}}}/completions", text)


def _pattern(base: str) -> str:
    return base.replace("/", r"\/")


def _error(status: int, message: str, code: str) -> web.Response:
    return web.Response(
        body=orjson.dumps({"error": {"message": message, "type": code, "code": code}}),
        status=status,
        content_type="application/json",
    )


def _content_with_reasoning(reply: Reply, reasoning_field: str) -> str:
    if reasoning_field == "content" and reply.reasoning:
        return f"<think>{reply.reasoning}</think>\n{reply.text}"
    return reply.text


def _completion(kind: str, model: str, reply: Reply, reasoning_field: str) -> dict[str, Any]:
    usage = {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
    }
    content = _content_with_reasoning(reply, reasoning_field)
    if kind == "text":
        choice: dict[str, Any] = {"index": 0, "text": content, "finish_reason": reply.finish_reason}
        return {
            "id": _id(),
            "object": "text_completion",
            "created": int(time.time()),
            "model": model,
            "choices": [choice],
            "usage": usage,
        }
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reply.reasoning and reasoning_field != "content":
        message[reasoning_field] = reply.reasoning
    return {
        "id": _id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason}],
        "usage": usage,
    }


async def _stream(
    request: web.Request, kind: str, model: str, reply: Reply, reasoning_field: str, delay: float
) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    ident, created = _id(), int(time.time())

    def chunk(delta: dict[str, Any] | str, finish: str | None = None) -> bytes:
        if kind == "text":
            choice: dict[str, Any] = {"index": 0, "text": delta, "finish_reason": finish}
            payload = {
                "id": ident,
                "object": "text_completion",
                "created": created,
                "model": model,
                "choices": [choice],
            }
        else:
            payload = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
        return b"data: " + orjson.dumps(payload) + b"\n\n"

    pieces: list[dict[str, Any] | str] = []
    if reply.reasoning and reasoning_field != "content" and kind == "chat":
        pieces += [{reasoning_field: word} for word in _words(reply.reasoning)]
    text = _content_with_reasoning(reply, reasoning_field)
    pieces += [word if kind == "text" else {"content": word} for word in _words(text)]
    for piece in pieces:
        await response.write(chunk(piece))
        if delay:
            await asyncio.sleep(delay)
    await response.write(chunk("" if kind == "text" else {}, reply.finish_reason))
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


def _words(text: str) -> list[str]:
    """Split keeping the spaces, so the chunks concatenate back to the text exactly."""
    out: list[str] = []
    current = ""
    for char in text:
        current += char
        if char == " ":
            out.append(current)
            current = ""
    if current:
        out.append(current)
    return out


def _id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]
