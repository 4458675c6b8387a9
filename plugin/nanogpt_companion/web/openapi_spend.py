"""The spend routes' part of the OpenAPI document (kept beside the main one so each area owns its paths).

Request bodies come from the handlers' pydantic models; response shapes are written out here and checked
against real answers by schemathesis in the hardening suite.
"""

from __future__ import annotations

from typing import Any

from nanogpt_companion.web import openapi as base
from nanogpt_companion.web.handlers.spend import (
    MAX_DAYS,
    MAX_ROWS,
    AlertsSeen,
    GenerationReport,
    GenerationStart,
    SpendSettingsUpdate,
)

NUMBER = {"type": "number"}
NULLABLE_NUMBER = {"type": ["number", "null"]}
NULLABLE_STRING = {"type": ["string", "null"]}
NULLABLE_INTEGER = {"type": ["integer", "null"]}

SPEND_ROW: dict[str, Any] = {
    "type": "object",
    "description": "One generation (or an outside change of the account) and what it cost.",
    "properties": {
        "id": {"type": "integer"},
        "ts": NUMBER,
        "chat_id": NULLABLE_STRING,
        "character": NULLABLE_STRING,
        "character_id": NULLABLE_STRING,
        "group_id": NULLABLE_STRING,
        "group": NULLABLE_STRING,
        "model": NULLABLE_STRING,
        "source": {"type": "string"},
        "endpoint": NULLABLE_STRING,
        "billing": NULLABLE_STRING,
        "kind": NULLABLE_STRING,
        "outcome": {"type": "string"},
        "message_id": NULLABLE_INTEGER,
        "prompt_tokens": NULLABLE_INTEGER,
        "completion_tokens": NULLABLE_INTEGER,
        "channel": {"type": "string", "enum": ["usd", "quota"]},
        "status": {"type": "string", "enum": ["pending", "measured", "unmeasured"]},
        "usd": NUMBER,
        "measured_usd": NULLABLE_NUMBER,
        "estimate_usd": NULLABLE_NUMBER,
        "per_request": {"type": "boolean"},
        "quota": NUMBER,
        "measured_quota": NULLABLE_NUMBER,
        "estimate_quota": NULLABLE_NUMBER,
        "quota_unit": {"type": ["string", "null"], "enum": ["tokens", "requests", None]},
        "approximate": {"type": "boolean"},
        "shared_with": {"type": "integer"},
        "note": NULLABLE_STRING,
    },
    "additionalProperties": False,
}
SPEND_ROW["required"] = list(SPEND_ROW["properties"])

TOTALS_PROPERTIES: dict[str, Any] = {
    "usd": NUMBER,
    "measured_usd": NUMBER,
    "estimated_usd": NUMBER,
    "quota": NUMBER,
    "estimated_quota": NUMBER,
    "outside_usd": NUMBER,
    "outside_quota": NUMBER,
    "generations": {"type": "integer"},
    "pending": {"type": "integer"},
    "approximate": {"type": "boolean"},
}
TOTALS = {"type": "object", "properties": TOTALS_PROPERTIES, "required": list(TOTALS_PROPERTIES)}
TOP_ENTRY = {
    "type": "object",
    "properties": {"key": {"type": "string"}, "label": {"type": "string"}, **TOTALS_PROPERTIES},
    "required": ["key", "label", *TOTALS_PROPERTIES],
}
BUDGET = {
    "type": "object",
    "properties": {
        "budget_usd": NULLABLE_NUMBER,
        "spent_usd": NUMBER,
        "fraction": NULLABLE_NUMBER,
        "estimated": {"type": "boolean"},
    },
    "required": ["budget_usd", "spent_usd", "fraction", "estimated"],
}
SETTINGS = {
    "type": "object",
    "properties": {
        "daily_budget_usd": NULLABLE_NUMBER,
        "monthly_budget_usd": NULLABLE_NUMBER,
        "retention_days": {"type": "integer"},
        "timezone": {"type": "string"},
    },
    "required": ["daily_budget_usd", "monthly_budget_usd", "retention_days", "timezone"],
}
DAY = {
    "type": "object",
    "properties": {
        "date": {"type": "string", "format": "date"},
        "usd": NUMBER,
        "quota": NUMBER,
        "usd_by_model": {"type": "object", "additionalProperties": NUMBER},
        "quota_by_model": {"type": "object", "additionalProperties": NUMBER},
    },
    "required": ["date", "usd", "quota", "usd_by_model", "quota_by_model"],
}
BUDGET_ALERT = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "kind": {"type": "string", "enum": ["budget_80", "budget_100"]},
        "level": {"type": "string", "enum": ["warning", "error"]},
        "message": {"type": "string"},
        "created_at": NUMBER,
    },
    "required": ["id", "kind", "level", "message", "created_at"],
}
OVERVIEW = {
    "type": "object",
    "properties": {
        "mode": {"type": "string", "enum": ["usd", "quota"]},
        "timezone": {"type": "string"},
        "now": NUMBER,
        "chat_id": NULLABLE_STRING,
        "chat": {"anyOf": [TOTALS, {"type": "null"}]},
        "today": TOTALS,
        "month": TOTALS,
        "window": TOTALS,
        "days": {"type": "array", "items": DAY},
        "models": {"type": "array", "items": {"type": "string"}},
        "top_chats": {"type": "array", "items": TOP_ENTRY},
        "top_characters": {"type": "array", "items": TOP_ENTRY},
        "top_models": {"type": "array", "items": TOP_ENTRY},
        "budgets": {
            "type": "object",
            "properties": {"daily": BUDGET, "monthly": BUDGET},
            "required": ["daily", "monthly"],
        },
        "quota": {
            "anyOf": [
                {
                    "type": "object",
                    "properties": {
                        "bucket": {"type": "string"},
                        "unit": {"type": "string", "enum": ["tokens", "requests"]},
                        "limit": NULLABLE_NUMBER,
                        "used": NULLABLE_NUMBER,
                        "reset_at": NULLABLE_INTEGER,
                    },
                    "required": ["bucket", "unit", "limit", "used", "reset_at"],
                },
                {"type": "null"},
            ]
        },
        "settings": SETTINGS,
        "alerts": {"type": "array", "items": BUDGET_ALERT},
    },
    "required": [
        "mode",
        "timezone",
        "now",
        "chat_id",
        "chat",
        "today",
        "month",
        "window",
        "days",
        "models",
        "top_chats",
        "top_characters",
        "top_models",
        "budgets",
        "quota",
        "settings",
        "alerts",
    ],
}


def spend_schemas() -> dict[str, Any]:
    schemas = base._schemas(GenerationReport, GenerationStart, SpendSettingsUpdate, AlertsSeen)
    schemas["SpendRow"] = SPEND_ROW
    return schemas


def spend_paths() -> dict[str, Any]:
    op, json, query, ref = base._op, base._json, base._query, base._ref
    chat = query("chat_id", {"type": "string", "maxLength": 500}, "One chat (ST's chat id)")
    return {
        "/api/spend": {
            "get": op(
                "What NanoGPT cost: today, this month, this chat, per day by model, top chats, characters "
                "and models, budgets, and budget alerts no tab has shown yet",
                {"200": json(OVERVIEW)},
                params=[
                    chat,
                    query("days", {"type": "integer", "minimum": 1, "maximum": MAX_DAYS}, "Chart length"),
                ],
            )
        },
        "/api/spend/generations": {
            "post": op(
                "Report a NanoGPT generation that ended in SillyTavern (metadata and token counts, never "
                "text); it is measured against the next reading of the account",
                {"202": json(ref("SpendRow"), "Recorded (or already recorded under this id)")},
                body="GenerationReport",
            ),
            "get": op(
                "Ledger rows, newest first",
                {
                    "200": json(
                        {
                            "type": "object",
                            "properties": {"rows": {"type": "array", "items": ref("SpendRow")}},
                            "required": ["rows"],
                        }
                    )
                },
                params=[
                    chat,
                    query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_ROWS}, "How many"),
                    query("before", {"type": "integer", "minimum": 1}, "Rows older than this id"),
                ],
            ),
        },
        "/api/spend/generations/started": {
            "post": op(
                "A NanoGPT request left the tab; its report (same id) follows when it ends. Readings of the "
                "account taken meanwhile are held back, so the generation is measured with them",
                {
                    "202": json(
                        {
                            "type": "object",
                            "properties": {"running": {"type": "integer"}},
                            "required": ["running"],
                        },
                        "Noted (generations of this key running now)",
                    )
                },
                body="GenerationStart",
            )
        },
        "/api/spend/export.csv": {
            "get": op(
                "The ledger as CSV (times in the user's time zone)",
                {
                    "200": {
                        "description": "CSV, one line per row",
                        "content": {"text/csv": {"schema": {"type": "string"}}},
                    }
                },
                params=[query("days", {"type": "integer", "minimum": 1, "maximum": 3650}, "How far back")],
            )
        },
        "/api/spend/settings": {
            "get": op("Budgets, retention and time zone", {"200": json(SETTINGS)}),
            "put": op(
                "Change budgets (null clears one), retention or time zone",
                {"200": json(SETTINGS)},
                body="SpendSettingsUpdate",
            ),
        },
        "/api/spend/alerts/seen": {
            "post": op(
                "Mark budget alerts as shown",
                {
                    "200": json(
                        {
                            "type": "object",
                            "properties": {"marked": {"type": "integer"}},
                            "required": ["marked"],
                        }
                    )
                },
                body="AlertsSeen",
            )
        },
    }
