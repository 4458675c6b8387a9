"""A contract-faithful stand-in for the companion service, for the extension's browser tests.

It is a real aiohttp server on loopback that speaks docs/http-contract.md: bearer tokens, CORS for ST's
origin only, JSON error bodies, single-use SSE tickets and the SSE event names. Its records are built with
the real contract models (``nanogpt_companion.domain`` / ``doctor.finding``) from the shared NanoGPT
fixtures, so a shape drift in the contract breaks these tests too.

Why a double and not the real service: the extension's tests must drive exact situations (a ``fix``
event for a given path, an alert, a bad token, an old ``api_version``) deterministically and within
seconds. The lead's ``service_stack`` fixture exercises the real service end to end; switching the
browser tests over is a matter of pointing ``StandIn.bootstrap`` at its token file.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from nanogpt_companion.doctor.finding import Finding, PatchOp, finding_id
from nanogpt_companion.domain import (
    AccountSnapshot,
    Balance,
    CatalogEntry,
    Pricing,
    QuotaBucket,
    SubscriptionCoverage,
    SubscriptionState,
    Tier,
)

FIXTURES = Path("/work/shared/fixtures")
HANDLE = "default-user"
BASE = "https://nano-gpt.com/api"
ENDPOINTS = [
    ("v1", f"{BASE}/v1", "Standard", "All models; subscription models use the subscription when active.", True),
    ("subscription", f"{BASE}/subscription/v1", "Subscription", "Only models the subscription covers.", True),
    ("paid", f"{BASE}/paid/v1", "Paid", "Only pay-as-you-go models.", True),
    ("personalized", f"{BASE}/personalized/v1", "Personalized", "The models you marked visible.", True),
    ("v1legacy", f"{BASE}/v1legacy", "Legacy reasoning", "Reasoning in reasoning_content (older clients).", False),
    ("v1thinking", f"{BASE}/v1thinking", "Thinking", "Reasoning folded into the content.", False),
]


def _num(v: Any) -> float | None:
    try:
        return None if v is None else float(v)
    except (TypeError, ValueError):
        return None


def entry_from_nanogpt(raw: dict[str, Any], ids: set[str]) -> CatalogEntry:
    """The fields the extension reads, mapped the way the service's catalogue does."""
    mid = str(raw["id"])
    sub = raw.get("subscription") or {}
    included = sub.get("included")
    tiers = [Tier.V1, Tier.SUBSCRIPTION if included else Tier.PAID]
    base = None
    for suffix in (":thinking:max", ":thinking", "-thinking"):
        if mid.endswith(suffix) and mid[: -len(suffix)] in ids:
            base = mid[: -len(suffix)]
    pricing = raw.get("pricing") or {}
    return CatalogEntry(
        id=mid,
        name=str(raw.get("name") or mid),
        vendor=mid.split("/")[0] if "/" in mid else str(raw.get("owned_by") or ""),
        created=raw.get("created"),
        context_length=raw.get("context_length"),
        max_output_tokens=raw.get("max_output_tokens"),
        capabilities={k: v for k, v in (raw.get("capabilities") or {}).items() if isinstance(v, bool)},
        tiers=tiers,
        pricing=Pricing(prompt=_num(pricing.get("prompt")), completion=_num(pricing.get("completion"))),
        subscription=SubscriptionCoverage(
            included=included, input_multiplier=_num(sub.get("inputTokenMultiplier")), note=sub.get("note")
        ),
        thinking_base=base,
        is_router=mid.startswith("auto-model"),
    )


def build_catalog(size: int = 600) -> list[CatalogEntry]:
    """The fixture models plus synthetic ones up to ``size`` (NanoGPT lists about 600 text models)."""
    raw = json.loads((FIXTURES / "nanogpt/models.detailed.sample.json").read_text())["data"]
    vendors = ["openai", "anthropic", "google", "meta-llama", "mistralai", "qwen", "deepseek", "zai-org", "TheDrummer"]
    i = 0
    while len(raw) < size:
        v = vendors[i % len(vendors)]
        sub = i % 3 == 0
        raw.append({
            "id": f"{v}/synthetic-model-{i:03d}",
            "name": f"Synthetic {v} {i:03d}",
            "created": 1_700_000_000 + i * 3600,
            "context_length": [8192, 32768, 131072, 200000, 1048576][i % 5],
            "capabilities": {"vision": i % 4 == 0, "reasoning": i % 5 == 0, "tool_calling": i % 2 == 0},
            "pricing": {"prompt": round(0.05 + (i % 40) * 0.25, 2), "completion": round(0.2 + (i % 40) * 0.9, 2)},
            "subscription": {"included": sub, "inputTokenMultiplier": 2 if sub and i % 9 == 0 else 1},
        })
        i += 1
    ids = {str(m["id"]) for m in raw}
    entries = [entry_from_nanogpt(m, ids) for m in raw]
    variants: dict[str, list[str]] = {}
    for e in entries:
        if e.thinking_base:
            variants.setdefault(e.thinking_base, []).append(e.id)
    return [e.model_copy(update={"thinking_variants": variants.get(e.id, [])}) for e in entries]


def build_account() -> AccountSnapshot:
    bal = json.loads((FIXTURES / "nanogpt/check-balance.json").read_text())
    use = json.loads((FIXTURES / "nanogpt/subscription-usage.current.json").read_text())
    limits = use["limits"]

    def bucket(raw: dict[str, Any] | None, limit: Any) -> QuotaBucket | None:
        if not raw:
            return None
        return QuotaBucket(
            used=raw["used"], remaining=raw["remaining"], limit=limit, percent_used=raw["percentUsed"],
            reset_at=raw["resetAt"],
        )

    buckets = {
        k: b
        for k, b in {
            "weekly_input_tokens": bucket(use.get("weeklyInputTokens"), limits.get("weeklyInputTokens")),
            "daily_input_tokens": bucket(use.get("dailyInputTokens"), limits.get("dailyInputTokens")),
            "daily_images": bucket(use.get("dailyImages"), limits.get("dailyImages")),
        }.items()
        if b is not None
    }
    return AccountSnapshot(
        key_status="ok",
        key_source="sillytavern",
        balance=Balance(usd=float(bal["usd_balance"]), xno=float(bal["nano_balance"])),
        subscription=SubscriptionState(
            active=use["active"], state=use["state"], shape="current", allow_overage=use["allowOverage"],
            period_end=use["period"]["currentPeriodEnd"], buckets=buckets,  # type: ignore[arg-type]
            recommended_mode="subscription", quota_available=True,
        ),
        fetched_at=time.time(),
    )


def ppp_finding(old: str, new: str) -> Finding:
    patch = (PatchOp(path=("oai_settings", "custom_prompt_post_processing"), value=new, old=old),)
    return Finding(
        id=finding_id("ppp_for_model", "settings", patch),
        rule="ppp_for_model",
        title=f"Prompt Post-Processing should be {new!r} for this model",
        explanation="This model's provider rejects prompts whose roles do not alternate.",
        severity="warning",
        patch=patch,
    )


@dataclass
class ServiceDouble:
    st_origin: str
    data_root: Path
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    api_version: int = 1
    catalog: list[CatalogEntry] = field(default_factory=build_catalog)
    account: AccountSnapshot = field(default_factory=build_account)
    findings: list[Finding] = field(default_factory=list)
    acks: list[dict[str, Any]] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    url: str = ""
    _tickets: set[str] = field(default_factory=set)
    _subs: list[asyncio.Queue[bytes | None]] = field(default_factory=list)
    _loop: asyncio.AbstractEventLoop | None = None
    _journal: dict[int, list[PatchOp]] = field(default_factory=dict)

    # ----- wiring -----

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._cors, self._auth])
        r = app.router
        r.add_get("/health", self._health)
        r.add_get("/api/catalog", self._catalog)
        r.add_post("/api/catalog/refresh", self._refresh)
        r.add_get("/api/endpoints", self._endpoints)
        r.add_get("/api/account", self._account)
        r.add_get("/api/account/history", self._history)
        r.add_get("/api/doctor", self._doctor)
        r.add_post("/api/doctor/fix", self._fix)
        r.add_post("/api/doctor/undo", self._undo)
        r.add_post("/api/doctor/ack", self._ack)
        r.add_post("/api/events/ticket", self._ticket)
        r.add_get("/api/events", self._events)
        return app

    def bootstrap_bytes(self, token: str | None = None) -> bytes:
        return json.dumps(
            {"url": self.url, "token": token or self.token, "version": "0.1.0", "api_version": self.api_version}
        ).encode()

    def write_bootstrap(self) -> Path:
        path = self.data_root / HANDLE / "user" / "files" / "nanogpt-companion.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(self.bootstrap_bytes())
        return path

    @property
    def tab_open(self) -> bool:
        return bool(self._subs)

    def publish(self, name: str, data: Any) -> None:
        """Thread-safe: tests call this from the pytest thread while the server runs in its own loop."""
        frame = f"event: {name}\ndata: {json.dumps(data)}\n\n".encode()
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._broadcast, frame)

    def _broadcast(self, frame: bytes | None) -> None:
        for q in list(self._subs):
            q.put_nowait(frame)

    def close_streams(self) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._broadcast, None)

    # ----- middlewares -----

    @web.middleware
    async def _cors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        origin = request.headers.get("Origin")
        allowed = origin == self.st_origin
        if request.method == "OPTIONS":
            if not allowed:
                return self._error(403, "origin_not_allowed", "This origin may not call the service.")
            resp: web.StreamResponse = web.Response(status=204)
            resp.headers["Access-Control-Allow-Methods"] = "GET, POST, PUT, OPTIONS"
            resp.headers["Access-Control-Allow-Headers"] = "Authorization, Content-Type"
            resp.headers["Access-Control-Max-Age"] = "600"
        else:
            try:
                resp = await handler(request)
            except web.HTTPException as exc:
                resp = self._error(exc.status, "not_found" if exc.status == 404 else "bad_request", exc.reason)
        if allowed:
            resp.headers["Access-Control-Allow-Origin"] = origin or ""
            resp.headers["Vary"] = "Origin"
        return resp

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append(f"{request.method} {request.path}")
        if request.path.startswith("/api/") and request.path != "/api/events":
            auth = request.headers.get("Authorization", "")
            if not auth.startswith("Bearer "):
                return self._error(401, "missing_token", "A bearer token is required.")
            if not secrets.compare_digest(auth[7:], self.token):
                return self._error(401, "invalid_token", "The token is not valid.")
        resp: web.StreamResponse = await handler(request)
        return resp

    @staticmethod
    def _error(status: int, code: str, message: str) -> web.Response:
        return web.json_response({"error": {"code": code, "message": message}}, status=status)

    # ----- routes -----

    async def _health(self, _: web.Request) -> web.Response:
        return web.json_response(
            {"status": "ok", "version": "0.1.0", "api_version": self.api_version,
             "upstream": {"reachable": True, "checked_at": time.time()}}
        )

    def _models(self, models: Iterable[CatalogEntry]) -> list[dict[str, Any]]:
        return [m.model_dump(mode="json") for m in models]

    async def _catalog(self, request: web.Request) -> web.Response:
        routers = request.query.get("include_routers") == "true"
        models = [m for m in self.catalog if routers or not m.is_router]
        return web.json_response({
            "models": self._models(models), "count": len(models), "total": len(self.catalog),
            "fetched_at": time.time(), "stale": False,
            "tiers": {t.value: {"ok": True, "count": len(models), "error": None} for t in Tier}, "error": None,
        })

    async def _refresh(self, _: web.Request) -> web.Response:
        new = self.catalog[0].model_copy(update={"id": "newvendor/brand-new-model", "name": "Brand New Model"})
        if all(m.id != new.id for m in self.catalog):
            self.catalog.append(new)
        diff = {"added": [new.id], "removed": [], "changed": []}
        self.publish("catalog", {"fetched_at": time.time(), "count": len(self.catalog), "diff": diff})
        return web.json_response({"fetched_at": time.time(), "count": len(self.catalog), "diff": diff})

    async def _endpoints(self, _: web.Request) -> web.Response:
        return web.json_response({
            "endpoints": [
                {"id": i, "url": u, "title": t, "description": d, "chat_completion": True, "text_completion": tc}
                for i, u, t, d, tc in ENDPOINTS
            ],
            "recommended": "subscription",
            "reason": "Your subscription is active and covers most models; this endpoint never bills your balance.",
        })

    async def _account(self, _: web.Request) -> web.Response:
        return web.json_response(self.account.model_dump(mode="json"))

    async def _history(self, _: web.Request) -> web.Response:
        now = time.time()
        usd = [140.0, 138.2, 137.9, 134.1, 133.0, 131.75, 129.47]
        return web.json_response({"points": [
            {"t": now - (len(usd) - 1 - i) * 86400, "usd": v, "xno": 26.7, "quota": {"weekly_input_tokens": 0.01 * i}}
            for i, v in enumerate(usd)
        ]})

    async def _doctor(self, _: web.Request) -> web.Response:
        return web.json_response({
            "findings": [f.model_dump(mode="json") | {"policy": "ask"} for f in self.findings],
            "st_version": "1.18.0", "checked_at": time.time(), "tab_open": self.tab_open, "error": None,
        })

    def fix_event(self, f: Finding) -> dict[str, Any]:
        return {
            "fix_id": f"fix-{secrets.token_hex(4)}", "finding_id": f.id, "rule": f.rule, "title": f.title,
            "explanation": f.explanation, "target": f.target, "preset": f.preset,
            "patch": [op.model_dump(mode="json") for op in f.patch],
        }

    async def _fix(self, request: web.Request) -> web.Response:
        body = await request.json()
        chosen = self.findings if body.get("all") else [f for f in self.findings if f.id in body.get("ids", [])]
        results = []
        for f in chosen:
            self.publish("fix", self.fix_event(f))
            results.append({"id": f.id, "status": "sent_live", "message": "sent to the open tab", "journal_id": None})
        for missing in set(body.get("ids", [])) - {f.id for f in chosen}:
            results.append({"id": missing, "status": "not_found", "message": "no such finding", "journal_id": None})
        return web.json_response({"results": results})

    async def _undo(self, request: web.Request) -> web.Response:
        body = await request.json()
        if int(body.get("journal_id", -1)) not in self._journal:
            return self._error(404, "not_found", "No such journal entry.")
        return web.json_response({"status": "reverted", "message": "reverted"})

    async def _ack(self, request: web.Request) -> web.Response:
        self.acks.append(await request.json())
        return web.json_response({"ok": True})

    async def _ticket(self, _: web.Request) -> web.Response:
        ticket = secrets.token_urlsafe(16)
        self._tickets.add(ticket)
        return web.json_response({"ticket": ticket, "expires_in": 60})

    async def _events(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if ticket not in self._tickets:
            return self._error(401, "invalid_token", "Unknown or used ticket.")
        self._tickets.discard(ticket)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        origin = request.headers.get("Origin")
        if origin == self.st_origin:
            resp.headers["Access-Control-Allow-Origin"] = origin
        await resp.prepare(request)
        hello = {"user": HANDLE, "version": "0.1.0", "api_version": self.api_version}
        await resp.write(f"event: hello\ndata: {json.dumps(hello)}\n\n".encode())
        q: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._subs.append(q)
        try:
            while True:
                frame = await q.get()
                if frame is None:
                    break
                await resp.write(frame)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self._subs.remove(q)
        return resp
