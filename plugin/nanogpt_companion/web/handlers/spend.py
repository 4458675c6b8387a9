"""What generations cost: reports from ST tabs, the drawer's overview, the ledger's rows, CSV, settings.

The bodies are validated here (pydantic, unknown fields refused): a tab reports metadata and token counts
of a generation, never its text, and every field has a bound so a broken or hostile page cannot bloat the
ledger.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from aiohttp import web
from pydantic import Field, field_validator

from nanogpt_companion.spend.records import OUTSIDE_SOURCE, Generation
from nanogpt_companion.web import keys
from nanogpt_companion.web.bodies import Body, read_body
from nanogpt_companion.web.errors import ApiError, json_response

MAX_DAYS = 366
MAX_ROWS = 500
MAX_BUDGET = 1_000_000.0


class GenerationReport(Body):
    id: str = Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    model: str = Field(min_length=1, max_length=200)
    source: str = Field(min_length=1, max_length=40)
    endpoint: str | None = Field(None, max_length=40)
    billing: Literal["paygo"] | None = None
    chat_id: str | None = Field(None, max_length=500)
    character: str | None = Field(None, max_length=200)
    character_id: str | None = Field(None, max_length=300)
    group_id: str | None = Field(None, max_length=200)
    group: str | None = Field(None, max_length=200)
    message_id: int | None = Field(None, ge=0, le=10_000_000)
    kind: str | None = Field(None, max_length=32)
    outcome: Literal["ok", "stopped", "error"] = "ok"
    prompt_tokens: int | None = Field(None, ge=0, le=100_000_000)
    completion_tokens: int | None = Field(None, ge=0, le=100_000_000)

    @field_validator("source")
    @classmethod
    def _not_reserved(cls, value: str) -> str:
        if value == OUTSIDE_SOURCE:
            raise ValueError(f'"{OUTSIDE_SOURCE}" is reserved for changes nothing reported explains')
        return value

    def generation(self) -> Generation:
        return Generation(
            client_id=self.id,
            model=self.model,
            source=self.source,
            endpoint=self.endpoint,
            billing=self.billing,
            chat_id=self.chat_id,
            character=self.character,
            character_id=self.character_id,
            group_id=self.group_id,
            group_name=self.group,
            message_id=self.message_id,
            kind=self.kind,
            outcome=self.outcome,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
        )


class GenerationStart(Body):
    """A tab sent a NanoGPT request; its ``GenerationReport`` (same ``id``) follows when it ends."""

    id: str = Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")


class SpendSettingsUpdate(Body):
    """Only the fields given change; ``null`` clears a budget."""

    daily_budget_usd: float | None = Field(None, gt=0, le=MAX_BUDGET)
    monthly_budget_usd: float | None = Field(None, gt=0, le=MAX_BUDGET)
    retention_days: int = Field(365, ge=1, le=3650)
    timezone: str = Field("UTC", min_length=1, max_length=64)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value


class AlertsSeen(Body):
    ids: list[str] = Field(min_length=1, max_length=200)


def _int_query(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, "bad_request", f"{name} must be a whole number.") from None
    if not low <= value <= high:
        raise ApiError(400, "bad_request", f"{name} must be between {low} and {high}.")
    return value


def _chat_query(request: web.Request) -> str | None:
    chat_id = request.query.get("chat_id") or None
    if chat_id is not None and len(chat_id) > 500:
        raise ApiError(400, "bad_request", "chat_id is too long.")
    return chat_id


async def report_generation(request: web.Request) -> web.Response:
    """A NanoGPT generation ended in ST: record it (estimate now, measurement after the next reading)."""
    user = request[keys.CURRENT_USER]
    body = await read_body(request, GenerationReport)
    row = await request.app[keys.SPEND].report(user.handle, body.generation())
    return json_response(row.to_json(), status=202)


async def generation_started(request: web.Request) -> web.Response:
    """A NanoGPT request left the tab: the account's readings wait for its report (service.py)."""
    user = request[keys.CURRENT_USER]
    body = await read_body(request, GenerationStart)
    running = await request.app[keys.SPEND].started(user.handle, body.id)
    return json_response({"running": running}, status=202)


async def get_overview(request: web.Request) -> web.Response:
    user = request[keys.CURRENT_USER]
    days = _int_query(request, "days", 30, 1, MAX_DAYS)
    overview = await request.app[keys.SPEND].overview(user.handle, chat_id=_chat_query(request), days=days)
    return json_response(overview)


async def get_generations(request: web.Request) -> web.Response:
    """Ledger rows, newest first (``before``: the id of the last row of the previous page)."""
    user = request[keys.CURRENT_USER]
    limit = _int_query(request, "limit", 50, 1, MAX_ROWS)
    before = request.query.get("before")
    before_id = _int_query(request, "before", 0, 1, 2**62) if before is not None else None
    rows = await request.app[keys.SPEND].recent(
        user.handle, limit=limit, chat_id=_chat_query(request), before_id=before_id
    )
    return json_response({"rows": [r.to_json() for r in rows]})


async def export_csv(request: web.Request) -> web.Response:
    user = request[keys.CURRENT_USER]
    days = _int_query(request, "days", MAX_DAYS, 1, 3650)
    text = await request.app[keys.SPEND].export_csv(user.handle, days)
    stamp = datetime.now(UTC).strftime("%Y%m%d")
    return web.Response(
        text=text,
        content_type="text/csv",
        charset="utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="nanogpt-spend-{stamp}.csv"',
            "Cache-Control": "no-store",
        },
    )


async def get_settings(request: web.Request) -> web.Response:
    user = request[keys.CURRENT_USER]
    settings = await request.app[keys.SPEND].settings(user.handle)
    return json_response(settings.to_json())


async def put_settings(request: web.Request) -> web.Response:
    user = request[keys.CURRENT_USER]
    body = await read_body(request, SpendSettingsUpdate)
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    settings = await request.app[keys.SPEND].update_settings(user.handle, changes)
    return json_response(settings.to_json())


async def mark_alerts_seen(request: web.Request) -> web.Response:
    user = request[keys.CURRENT_USER]
    body = await read_body(request, AlertsSeen)
    marked = await request.app[keys.SPEND].mark_alerts_seen(user.handle, body.ids)
    return json_response({"marked": marked})
