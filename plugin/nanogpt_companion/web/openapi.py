"""The OpenAPI 3.1 description of the HTTP API, built from the pydantic records on its first request.

Schemas come from the same models that produce the responses, so the document cannot drift from the
payloads (schemathesis checks responses against it in the hardening suite).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

from nanogpt_companion import __version__
from nanogpt_companion.doctor.finding import Finding
from nanogpt_companion.domain import (
    AccountSnapshot,
    CatalogEntry,
    CatalogSummary,
    ErrorInfo,
    ImageModel,
    ModelProviders,
)
from nanogpt_companion.web.bodies import (
    AckRequest,
    FixRequest,
    PolicyRequest,
    SignatureFixRequest,
    SignatureRequest,
    UndoRequest,
)
from nanogpt_companion.web.handlers.alerts import SeenRequest
from nanogpt_companion.web.handlers.connection import KeyAllRequest, KeyRequest, KeyUndoRequest

REF = "#/components/schemas/{model}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _schemas(*models: type[BaseModel]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for model in models:
        schema = model.model_json_schema(ref_template=REF, mode="serialization")
        out.update(schema.pop("$defs", {}))
        out[model.__name__] = schema
    return out


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERRORS = {
    "400": _json(_ref("ErrorBody"), "Bad request"),
    "401": _json(_ref("ErrorBody"), "Missing or invalid token"),
    "403": _json(_ref("ErrorBody"), "Origin not allowed"),
    "421": _json(_ref("ErrorBody"), "Host not allowed"),
}
UPSTREAM_ERRORS = {
    "402": _json(_ref("ErrorBody"), "Insufficient balance"),
    "429": _json(_ref("ErrorBody"), "Rate limited"),
    "502": _json(_ref("ErrorBody"), "NanoGPT sent a malformed answer and nothing is cached"),
    "503": _json(_ref("ErrorBody"), "NanoGPT unreachable and nothing is cached"),
}
NULLABLE_NUMBER = {"type": ["number", "null"]}
CATALOG_HEADERS = {
    "ETag": {"schema": {"type": "string"}, "description": "Strong validator of this representation"},
    "Vary": {"schema": {"type": "string"}, "description": "Accept-Encoding"},
}
TIER_STATUS = {
    "type": "object",
    "properties": {
        "ok": {"type": "boolean"},
        "count": {"type": "integer"},
        "error": {"anyOf": [_ref("ErrorInfo"), {"type": "null"}]},
    },
    "required": ["ok", "count", "error"],
}
DIFF = {
    "type": "object",
    "properties": {
        "added": {"type": "array", "items": {"type": "string"}},
        "removed": {"type": "array", "items": {"type": "string"}},
        "changed": {"type": "array", "items": {"type": "object"}},
    },
    "required": ["added", "removed", "changed"],
}
FIX_RESULT = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "status": {
            "type": "string",
            "enum": ["applied", "sent_live", "conflict", "failed", "not_found", "declined"],
        },
        "message": {"type": "string"},
        "journal_id": {"type": ["integer", "null"]},
    },
    "required": ["id", "status", "message", "journal_id"],
}
JOURNAL_ENTRY = {
    "type": "object",
    "properties": {
        "journal_id": {"type": "integer"},
        "rule": {"type": "string"},
        "finding_id": {"type": "string"},
        "file": {"type": "string"},
        "path": {"type": "array", "items": {"type": ["string", "integer"]}},
        "old_value": {},
        "new_value": {},
        "existed": {"type": "boolean"},
        "mode": {"type": "string", "enum": ["file", "live"]},
        "created_at": {"type": "number"},
        "undone_at": NULLABLE_NUMBER,
        "change": {"type": "string", "description": "The change in ST's own words: setting: old → new"},
    },
    "required": [
        "journal_id",
        "rule",
        "finding_id",
        "file",
        "path",
        "existed",
        "mode",
        "created_at",
        "undone_at",
    ],
}
POLICY_VALUE = {"type": "string", "enum": ["auto", "ask", "off"]}
POLICIES = {
    "type": "object",
    "properties": {
        "policies": {"type": "object", "additionalProperties": POLICY_VALUE},
        "rules": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "title": {"type": "string"},
                    "summary": {"type": "string"},
                    "default_policy": POLICY_VALUE,
                    "policy": POLICY_VALUE,
                },
                "required": ["id", "title", "summary", "default_policy", "policy"],
            },
        },
    },
    "required": ["policies", "rules"],
}
SLOT_NAMES = ["nanogpt", "custom", "generic"]
UNDO_OUTCOMES = ["reverted", "nothing_to_undo", "changed_since", "already_undone"]
KEY_WRITE = {
    "type": "object",
    "properties": {
        "status": {"type": "string", "enum": ["written", "unchanged"]},
        "slot": {"type": "string", "enum": SLOT_NAMES},
        "secret": {"type": "string", "enum": ["api_key_nanogpt", "api_key_custom", "api_key_generic"]},
        "write_id": {"type": ["integer", "null"]},
        "layout": {"type": "string", "enum": ["list", "flat"]},
        "label": {"type": "string"},
        "message": {"type": "string"},
    },
    "required": ["status", "slot", "secret", "write_id", "layout", "label", "message"],
}
KEY_STATE = {
    "type": "object",
    "properties": {
        "key": {
            "type": "object",
            "properties": {
                "present": {"type": "boolean"},
                "source": {"type": "string", "enum": ["config", "sillytavern", "none"]},
            },
            "required": ["present", "source"],
        },
        "slots": {
            "type": "object",
            "additionalProperties": {"type": "string", "enum": ["ours", "other", "empty", "unknown"]},
        },
        "needed": {
            "type": "object",
            "description": "Slot -> what in the user's settings reads it for NanoGPT",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        },
    },
    "required": ["key", "slots", "needed"],
}
KEY_WRITE_ALL = {
    "type": "object",
    "properties": {
        "results": {
            "type": "array",
            "items": {
                "oneOf": [
                    KEY_WRITE,
                    {
                        "type": "object",
                        "properties": {
                            "status": {"const": "refused"},
                            "slot": {"type": "string", "enum": SLOT_NAMES},
                            "code": {"type": "string"},
                            "message": {"type": "string"},
                        },
                        "required": ["status", "slot", "code", "message"],
                    },
                ]
            },
        }
    },
    "required": ["results"],
}
ALERT = {
    "type": "object",
    "properties": {
        "id": {"type": "string"},
        "kind": {"type": "string", "enum": ["low_balance", "quota_80", "quota_100", "routing_changed"]},
        "level": {"type": "string", "enum": ["warning", "error", "info"]},
        "message": {"type": "string"},
        "created_at": {"type": "number"},
    },
    "required": ["id", "kind", "level", "message", "created_at"],
}


def _op(
    summary: str,
    responses: dict[str, Any],
    *,
    params: list[Any] | None = None,
    body: str | None = None,
    auth: bool = True,
    upstream: bool = False,
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "responses": {**responses, **(ERRORS if auth else {})}}
    if upstream:
        op["responses"].update(UPSTREAM_ERRORS)
    if params:
        op["parameters"] = params
    if body:
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    if not auth:
        op["security"] = []
    return op


def _query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def build_openapi() -> bytes:
    schemas = _schemas(
        CatalogEntry,
        CatalogSummary,
        AccountSnapshot,
        Finding,
        ErrorInfo,
        FixRequest,
        UndoRequest,
        AckRequest,
        PolicyRequest,
        KeyRequest,
        KeyAllRequest,
        KeyUndoRequest,
        SeenRequest,
        ModelProviders,
        ImageModel,
        SignatureRequest,
        SignatureFixRequest,
    )
    model_providers = {
        **schemas["ModelProviders"],
        "properties": {
            **schemas["ModelProviders"].get("properties", {}),
            "requested": {"type": "string"},
            "stale": {"type": "boolean"},
        },
    }
    schemas["ErrorBody"] = {
        "type": "object",
        "properties": {"error": _ref("ErrorInfo")},
        "required": ["error"],
    }
    # Finding forbids extra keys (additionalProperties: false), so an allOf with the policy fields could
    # never validate: extend a copy of its schema instead.
    finding = schemas["Finding"]
    finding_with_policy = {
        **finding,
        "properties": {
            **finding.get("properties", {}),
            "policy": {"type": "string", "enum": ["auto", "ask", "off"]},
            "fixable": {"type": "boolean"},
            "declined": {"type": "boolean"},
            "fix_all": {"type": "boolean", "description": "In Fix all: a problem, not a preference"},
            "change": {"type": ["string", "null"], "description": "The fix in ST's own words"},
        },
    }
    signature_cause = {
        **finding,
        "properties": {
            **finding.get("properties", {}),
            "fixable": {"type": "boolean"},
            "change": {"type": ["string", "null"], "description": "The fix in ST's own words"},
        },
    }
    ppp_table = {
        "type": ["object", "null"],
        "description": "Prompt Post-Processing values this user's ST knows, ST's labels for them, and the "
        "value the doctor would write for each intent on the active connection (null: not expressible)",
        "properties": {
            "values": {"type": "array", "items": {"type": "string"}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "choices": {"type": "object", "additionalProperties": {"type": ["string", "null"]}},
            "applies": {"type": ["boolean", "null"]},
        },
    }
    snapshot = schemas["AccountSnapshot"]
    account_response = {
        **snapshot,
        "properties": {**snapshot.get("properties", {}), "next_refresh_at": NULLABLE_NUMBER},
    }
    catalog_response = {
        "type": "object",
        "properties": {
            "models": {
                "type": "array",
                "items": {"anyOf": [_ref("CatalogEntry"), _ref("CatalogSummary")]},
                "description": "CatalogEntry records, or CatalogSummary records with fields=summary",
            },
            "count": {"type": "integer"},
            "total": {"type": "integer"},
            "fetched_at": NULLABLE_NUMBER,
            "stale": {"type": "boolean"},
            "tiers": {"type": "object", "additionalProperties": TIER_STATUS},
            "error": {"anyOf": [_ref("ErrorInfo"), {"type": "null"}]},
        },
        "required": ["models", "count", "total", "fetched_at", "stale", "tiers", "error"],
    }
    paths: dict[str, Any] = {
        "/health": {
            "get": _op(
                "Liveness, version and upstream reachability (no auth, no user data). With a challenge "
                "header (ST's server plugin, on each new connection) the answer proves this is the service "
                "its link file names (docs/http-contract.md).",
                {
                    "200": {
                        **_json(
                            {
                                "type": "object",
                                "required": ["status", "service", "version", "api_version", "upstream"],
                            }
                        ),
                        "headers": {
                            "X-NanoGPT-Companion-Proof": {
                                "description": "hex HMAC-SHA256 of the challenge under the link secret",
                                "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                            }
                        },
                    }
                },
                params=[
                    {
                        "name": "X-NanoGPT-Companion-Challenge",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string", "pattern": "^[0-9a-f]{32,128}$"},
                        "description": "A fresh random challenge; the answer then carries the proof header",
                    }
                ],
                auth=False,
            )
        },
        "/api/catalog": {
            "get": _op(
                "The tier-merged NanoGPT catalogue for the caller, filterable. Carries a strong ETag "
                "(per snapshot and query); send it back in If-None-Match to get a 304 while nothing "
                "changed. Gzip when Accept-Encoding allows it (Vary: Accept-Encoding).",
                {
                    "200": _json(catalog_response) | {"headers": CATALOG_HEADERS},
                    "304": {"description": "Your copy is current", "headers": CATALOG_HEADERS},
                },
                params=[
                    _query(
                        "fields",
                        {"type": "string", "enum": ["full", "summary"]},
                        "full (default): CatalogEntry records; summary: what a list shows (CatalogSummary), "
                        "about a third of the bytes; the rest of an entry is at /api/catalog/model",
                    ),
                    _query(
                        "tier",
                        {"type": "string", "enum": ["v1", "subscription", "paid", "personalized"]},
                        "Only models in this list",
                    ),
                    _query("q", {"type": "string", "maxLength": 200}, "Substring of id, name or vendor"),
                    _query("capability", {"type": "string"}, "Require a capability flag (repeatable)"),
                    _query(
                        "sort", {"type": "string", "enum": ["name", "price", "context", "newest"]}, "Order"
                    ),
                    _query("include_routers", {"type": "boolean"}, "Include router/utility ids"),
                ],
                upstream=True,
            )
        },
        "/api/catalog/model": {
            "get": _op(
                "One catalogue entry in full (description, modalities, cache prices, icon)",
                {
                    "200": _json(_ref("CatalogEntry")),
                    "404": _json(_ref("ErrorBody"), "No such model in the caller's catalogue"),
                },
                params=[
                    {
                        "name": "id",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                        "description": "The model id, e.g. anthropic/claude-opus-4.6",
                    }
                ],
                upstream=True,
            )
        },
        "/api/catalog/providers": {
            "get": _op(
                "NanoGPT's providers for one model (availability, USD per 1M tokens), asked on demand, "
                "cached and shared; known=false when NanoGPT does not know the id",
                {"200": _json(model_providers), "400": _json(_ref("ErrorBody"), "No or bad model id")},
                params=[
                    {
                        "name": "model",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "string", "minLength": 1, "maxLength": 200},
                        "description": "A model id; request suffixes and a provider pin are ignored",
                    }
                ],
                upstream=True,
            )
        },
        "/api/catalog/images": {
            "get": _op(
                "NanoGPT's image models as SillyTavern's Image Generation lists them, with USD per image",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "models": {"type": "array", "items": _ref("ImageModel")},
                                "count": {"type": "integer"},
                                "stale": {"type": "boolean"},
                            },
                            "required": ["models", "count", "stale"],
                        }
                    )
                },
                upstream=True,
            )
        },
        "/api/catalog/refresh": {
            "post": _op(
                "Refresh the catalogue now and return what changed",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "fetched_at": {"type": "number"},
                                "count": {"type": "integer"},
                                "diff": DIFF,
                            },
                            "required": ["fetched_at", "count", "diff"],
                        }
                    )
                },
                upstream=True,
            )
        },
        "/api/endpoints": {
            "get": _op(
                "NanoGPT base URLs, what each is for, and the one recommended for the caller",
                {"200": _json({"type": "object", "required": ["endpoints", "recommended", "reason"]})},
            )
        },
        "/api/account": {
            "get": _op(
                "Balance and subscription usage (stale flag when the last poll failed); next_refresh_at says "
                "when a refresh the user asks for will reach NanoGPT again",
                {"200": _json(account_response)},
                params=[
                    _query(
                        "refresh",
                        {"type": "string", "enum": ["0", "1", "true", "false"]},
                        "Poll now (at most once per account_refresh_interval)",
                    )
                ],
            )
        },
        "/api/account/history": {
            "get": _op(
                "Balance and quota history points",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "points": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "t": {"type": "number"},
                                            "usd": NULLABLE_NUMBER,
                                            "xno": NULLABLE_NUMBER,
                                            "quota": {"type": "object"},
                                        },
                                        "required": ["t", "usd", "xno", "quota"],
                                    },
                                }
                            },
                            "required": ["points"],
                        }
                    )
                },
                params=[
                    _query("days", {"type": "number", "exclusiveMinimum": 0, "maximum": 366}, "How far back")
                ],
            )
        },
        "/api/doctor": {
            "get": _op(
                "Current findings for the caller's SillyTavern settings",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "findings": {"type": "array", "items": finding_with_policy},
                                "muted": {"type": "integer", "description": "Findings of rules set to off"},
                                "muted_findings": {
                                    "type": "array",
                                    "description": "Those findings by name (id, rule, title)",
                                    "items": {"type": "object"},
                                },
                                "st_version": {"type": ["string", "null"]},
                                "checked_at": NULLABLE_NUMBER,
                                "tab_open": {"type": "boolean"},
                                "error": {"anyOf": [_ref("ErrorInfo"), {"type": "null"}]},
                                "ppp": ppp_table,
                            },
                            "required": ["findings", "st_version", "checked_at", "tab_open", "error"],
                        }
                    )
                },
                params=[
                    _query(
                        "refresh",
                        {"type": "string", "enum": ["1", "true"]},
                        "Re-read NanoGPT's model list and the user's files first",
                    )
                ],
            )
        },
        "/api/doctor/fix": {
            "post": _op(
                "Apply findings by id (to the file, or live to the open ST tab)",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {"results": {"type": "array", "items": FIX_RESULT}},
                            "required": ["results"],
                        }
                    ),
                    "409": _json(_ref("ErrorBody"), "No SillyTavern directory"),
                },
                body="FixRequest",
            )
        },
        "/api/doctor/undo": {
            "post": _op(
                "Revert a journalled fix",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {"status": {"type": "string"}, "message": {"type": "string"}},
                            "required": ["status", "message"],
                        }
                    ),
                    "409": _json(_ref("ErrorBody"), "No SillyTavern directory"),
                },
                body="UndoRequest",
            )
        },
        "/api/doctor/ack": {
            "post": _op(
                "The extension reports a live fix as applied or failed",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "ok": {"type": "boolean"},
                                "journal_ids": {"type": "array", "items": {"type": "integer"}},
                            },
                            "required": ["ok", "journal_ids"],
                        }
                    ),
                    "409": _json(_ref("ErrorBody"), "No SillyTavern directory"),
                },
                body="AckRequest",
            )
        },
        "/api/doctor/signature": {
            "post": _op(
                "A reply in the tab showed a formatting signature: count it, answer with its causes here",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "signature": {"type": "string"},
                                "message_id": {"type": ["integer", "null"]},
                                "seen": {"type": "integer", "description": "Replies with it so far"},
                                "causes": {"type": "array", "items": signature_cause},
                            },
                            "required": ["signature", "message_id", "seen", "causes"],
                        }
                    ),
                    "409": _json(_ref("ErrorBody"), "No SillyTavern directory"),
                },
                body="SignatureRequest",
            ),
            "get": _op(
                "How many replies showed each signature, for the caller",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "counts": {"type": "object", "additionalProperties": {"type": "integer"}}
                            },
                            "required": ["counts"],
                        }
                    ),
                    "409": _json(_ref("ErrorBody"), "No SillyTavern directory"),
                },
            ),
        },
        "/api/doctor/signature/fix": {
            "post": _op(
                "Apply one cause offered for a reply signature (live to the open tab, else the file)",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {"result": FIX_RESULT, "message_id": {"type": ["integer", "null"]}},
                            "required": ["result", "message_id"],
                        }
                    ),
                    "409": _json(_ref("ErrorBody"), "No SillyTavern directory"),
                },
                body="SignatureFixRequest",
            )
        },
        "/api/doctor/journal": {
            "get": _op(
                "Recent fixes, newest first (what Undo can revert)",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {"entries": {"type": "array", "items": JOURNAL_ENTRY}},
                            "required": ["entries"],
                        }
                    ),
                    "409": _json(_ref("ErrorBody"), "No SillyTavern directory"),
                },
                params=[_query("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "How many")],
            )
        },
        "/api/doctor/policy": {
            "get": _op(
                "Effective auto/ask/off policy per rule",
                {"200": _json(POLICIES), "409": _json(_ref("ErrorBody"), "No SillyTavern directory")},
            ),
            "put": _op(
                "Set one rule's policy for the caller",
                {
                    "200": _json(POLICIES),
                    "404": _json(_ref("ErrorBody"), "Unknown rule"),
                    "409": _json(_ref("ErrorBody"), "No SillyTavern directory"),
                },
                body="PolicyRequest",
            ),
        },
        "/api/connection/key": {
            "get": _op(
                "Which SillyTavern key slots hold the caller's NanoGPT key (never a key itself)",
                {"200": _json(KEY_STATE), "409": _json(_ref("ErrorBody"), "No SillyTavern directory")},
            ),
            "post": _op(
                "Copy the caller's NanoGPT key from SillyTavern into the key slot a connection reads "
                "(api_key_custom, api_key_generic or api_key_nanogpt), made active; journalled for undo",
                {
                    "200": _json(KEY_WRITE),
                    "409": _json(
                        _ref("ErrorBody"),
                        "no_data_root, no_key, key_not_in_sillytavern, slot_taken (flat format holding "
                        "another key) or conflict (secrets.json kept changing)",
                    ),
                    "500": _json(_ref("ErrorBody"), "secrets.json could not be written (write_failed)"),
                },
                body="KeyRequest",
            ),
        },
        "/api/connection/key/all": {
            "post": _op(
                "Copy the caller's NanoGPT key into every key slot their set-up reads (or the slots given); "
                "one journalled write per slot, each undoable",
                {
                    "200": _json(KEY_WRITE_ALL),
                    "409": _json(
                        _ref("ErrorBody"),
                        "no_data_root, no_key, key_not_in_sillytavern or nothing_to_do (no slot reads a "
                        "NanoGPT key)",
                    ),
                },
                body="KeyAllRequest",
            )
        },
        "/api/connection/key/undo": {
            "post": _op(
                "Undo a key copy: remove the entry it added and re-activate the one active before",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "status": {
                                    "type": "string",
                                    "enum": UNDO_OUTCOMES,
                                },
                                "message": {"type": "string"},
                            },
                            "required": ["status", "message"],
                        }
                    ),
                    "404": _json(_ref("ErrorBody"), "No such key change for the caller"),
                    "409": _json(
                        _ref("ErrorBody"), "No SillyTavern directory, or secrets.json kept changing"
                    ),
                    "500": _json(_ref("ErrorBody"), "secrets.json could not be written"),
                },
                body="KeyUndoRequest",
            )
        },
        "/api/alerts": {
            "get": _op(
                "Account alerts no SillyTavern tab has shown yet, oldest first",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {"alerts": {"type": "array", "items": ALERT}},
                            "required": ["alerts"],
                        }
                    )
                },
            )
        },
        "/api/alerts/seen": {
            "post": _op(
                "Mark alerts as shown (they are not offered again)",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {"marked": {"type": "integer"}},
                            "required": ["marked"],
                        }
                    )
                },
                body="SeenRequest",
            )
        },
        "/api/events/ticket": {
            "post": _op(
                "A single-use ticket for EventSource (which cannot send headers)",
                {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {"ticket": {"type": "string"}, "expires_in": {"type": "integer"}},
                            "required": ["ticket", "expires_in"],
                        }
                    )
                },
            )
        },
        "/api/events": {
            "get": _op(
                "Server-sent events: hello, catalog, account, alert, findings, fix, spend",
                {
                    "200": {
                        "description": (
                            "An event stream. It starts with `hello`: {user, version, api_version, "
                            "catalog_etag}, where catalog_etag is the ETag (identity coding) that "
                            "GET /api/catalog?fields=summary&include_routers=false would carry now, or null "
                            "when the catalogue is not in memory; later changes come as `catalog` events."
                        ),
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    }
                },
                params=[
                    _query("ticket", {"type": "string"}, "From /api/events/ticket"),
                    _query("client", {"type": "string", "enum": ["extension"]}, "Marks an open ST tab"),
                ],
            )
        },
        "/api/openapi.json": {"get": _op("This document", {"200": _json({"type": "object"})})},
    }
    from nanogpt_companion.web.openapi_spend import spend_paths, spend_schemas  # noqa: PLC0415 - it uses ours

    schemas.update(spend_schemas())
    paths.update(spend_paths())
    document = {
        "openapi": "3.1.0",
        "info": {"title": "NanoGPT Companion", "version": __version__},
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }
    return orjson.dumps(document)


# The document as shipped with the package, which the service serves. Why a file rather than
# ``build_openapi()`` at runtime: the service runs with ``-OO`` (``launch.restart_without_docstrings``),
# which drops the records' docstrings their schemas take descriptions from; and building it left ~0.7 MB
# in the service. A test keeps the file equal to ``build_openapi()``; running this module writes it anew.
SHIPPED = Path(__file__).with_name("openapi.json")


if __name__ == "__main__":
    SHIPPED.write_bytes(build_openapi())
    print(f"wrote {SHIPPED}")
