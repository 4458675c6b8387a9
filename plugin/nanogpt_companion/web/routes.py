"""The route table. Handlers live in ``web/handlers/``; the contract is docs/http-contract.md."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.typedefs import Handler

from nanogpt_companion.web import sse
from nanogpt_companion.web.handlers import (
    account,
    alerts,
    catalog,
    connection,
    doctor,
    endpoints,
    health,
    providers,
    spend,
)


def setup_routes(app: web.Application) -> None:
    router = app.router
    router.add_get("/health", health.health)
    router.add_get("/api/catalog", catalog.get_catalog)
    router.add_get("/api/catalog/model", catalog.get_catalog_model)
    router.add_post("/api/catalog/refresh", catalog.refresh_catalog)
    router.add_get("/api/endpoints", endpoints.get_endpoints)
    router.add_get("/api/account", account.get_account)
    router.add_get("/api/account/history", account.get_history)
    router.add_get("/api/doctor", doctor.get_findings)
    router.add_post("/api/doctor/fix", doctor.apply_fixes)
    router.add_post("/api/doctor/undo", doctor.undo_fix)
    router.add_post("/api/doctor/ack", doctor.acknowledge)
    router.add_get("/api/doctor/journal", doctor.get_journal)
    router.add_post("/api/doctor/signature", doctor.report_signature)
    router.add_post("/api/doctor/signature/fix", doctor.fix_signature)
    router.add_get("/api/doctor/signature", doctor.get_signature_counts)
    router.add_get("/api/doctor/policy", doctor.get_policies)
    router.add_put("/api/doctor/policy", doctor.set_policy)
    router.add_get("/api/connection/key", connection.get_key_state)
    router.add_post("/api/connection/key", connection.set_key)
    router.add_post("/api/connection/key/all", connection.set_key_everywhere)
    router.add_post("/api/connection/key/undo", connection.undo_key)
    router.add_get("/api/catalog/providers", providers.get_model_providers)
    router.add_get("/api/catalog/images", providers.get_image_models)
    router.add_get("/api/alerts", alerts.get_alerts)
    router.add_post("/api/alerts/seen", alerts.mark_seen)
    router.add_get("/api/spend", spend.get_overview)
    router.add_post("/api/spend/generations", spend.report_generation)
    router.add_post("/api/spend/generations/started", spend.generation_started)
    router.add_get("/api/spend/generations", spend.get_generations)
    router.add_get("/api/spend/export.csv", spend.export_csv)
    router.add_get("/api/spend/settings", spend.get_settings)
    router.add_put("/api/spend/settings", spend.put_settings)
    router.add_post("/api/spend/alerts/seen", spend.mark_alerts_seen)
    router.add_post("/api/events/ticket", sse.issue_ticket)
    router.add_get("/api/events", sse.event_stream)
    router.add_get("/api/openapi.json", _openapi_handler())


def _openapi_handler() -> Handler:
    """``GET /api/openapi.json``: the document shipped with the package (``openapi.shipped_openapi``),
    read on its first request and kept by this app (only tools ask for it)."""
    document: bytes | None = None

    async def serve_openapi(request: web.Request) -> web.Response:
        nonlocal document
        if document is None:
            from nanogpt_companion.web.openapi import SHIPPED  # noqa: PLC0415 - only tools ask for it

            document = await asyncio.to_thread(SHIPPED.read_bytes)
        return web.Response(body=document, content_type="application/json")

    return serve_openapi
