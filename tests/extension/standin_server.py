"""Serves the SillyTavern stand-in page the way ST serves an installed extension.

- ``/`` is the stand-in page, with the user's real ``settings.json`` (from the shared fixtures) inlined the
  way ST has its settings loaded before third-party extensions run.
- ``/scripts/extensions/third-party/nanogpt-companion/`` maps to ``st-extension/`` (ST's URL for both
  per-user and global third-party extensions).
- ``/user/files/<name>`` is served from ``<data root>/default-user/user/files/`` (ST serves a user's files
  only to that user; 404 when absent).
- ``/api/plugins/nanogpt-companion/...`` answers 404 like an ST without our server plugin, unless
  ``plugin_url`` is set: then, like ST with the plugin installed, it checks ST's CSRF header on writes and
  hands the request to the real plugin (running in ``tests/st_server_plugin/harness.js``) for the logged-in
  user, streaming the answer back (SSE included).

Also runs aiohttp apps on a background event loop so sync Playwright tests can drive a browser while the
servers answer.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import threading
import uuid
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web

from tests.fixtures import FIXTURES as SHARED_FIXTURES

REPO = Path(__file__).resolve().parents[2]
EXT_DIR = REPO / "st-extension"
HERE = Path(__file__).resolve().parent
STANDIN_DIR = HERE / "standin"
FIXTURES = SHARED_FIXTURES
HANDLE = "default-user"
CSRF_TOKEN = "standin-csrf"  # what the stand-in's getRequestHeaders() sends (st-standin.js)
# ST hands the plugin the browser's request as it came; these are the headers the extension's calls carry.
_FORWARD_REQUEST_HEADERS = {
    "accept",
    "accept-encoding",
    "content-type",
    "last-event-id",
    "cache-control",
    "if-none-match",
}
_FORWARD_RESPONSE_HEADERS = (
    "Content-Type",
    "Content-Encoding",
    "Cache-Control",
    "X-Accel-Buffering",
    "Retry-After",
    "ETag",
    "Vary",
)


def _lib_paths() -> dict[str, Path]:
    nm = HERE / "node_modules"
    jquery = nm / "jquery/dist/jquery.min.js"
    if not jquery.exists():
        jquery = Path("/usr/share/javascript/jquery/jquery.min.js")
    return {
        "jquery.js": jquery,
        "toastr.js": nm / "toastr/build/toastr.min.js",
        "toastr.css": nm / "toastr/build/toastr.min.css",
        # ST 1.18 ships select2 4.1.0-rc.0 (public/lib/select2.min.js) and wraps its model selects in it.
        "select2.js": nm / "select2/dist/js/select2.min.js",
        "select2.css": nm / "select2/dist/css/select2.min.css",
        # ST ships localforage 1.10 (public/lib.js) as a page global and in SillyTavern.libs.
        "localforage.js": nm / "localforage/dist/localforage.min.js",
    }


def libs_missing() -> list[str]:
    return [str(p) for p in _lib_paths().values() if not p.exists()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_data_root(root: Path, settings_fixture: str = "settings.nanogpt-source-selected.json") -> Path:
    """A real ST data root for one user, seeded from the shared fixtures."""
    user = root / HANDLE
    (user / "user" / "files").mkdir(parents=True, exist_ok=True)
    (user / "OpenAI Settings").mkdir(exist_ok=True)
    shutil.copy(FIXTURES / "sillytavern" / settings_fixture, user / "settings.json")
    shutil.copy(FIXTURES / "sillytavern/openai-preset.Default.json", user / "OpenAI Settings/Default.json")
    return root


@dataclass
class StandIn:
    data_root: Path
    models: list[dict[str, Any]] = field(default_factory=list)  # what ST's Connect would fetch from NanoGPT
    upstream_models_url: str | None = None  # ST's Connect fetches the list from NanoGPT (here: the fake)
    bootstrap_override: bytes | None = None
    settings_patch: dict[str, Any] = field(default_factory=dict)
    saves: int = 0
    plugin_url: str | None = None  # the plugin's mount point in the Node harness; None = not installed
    plugin_calls: list[tuple[str, str]] = field(default_factory=list)  # (method, path) that reached it
    csrf_rejections: int = 0
    with_localforage: bool = True  # False: a page without ST's localforage (the extension falls back)
    _client: ClientSession | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/lib/{name}", self._lib)
        app.router.add_get("/standin/models.json", self._models)
        app.router.add_static("/standin/", STANDIN_DIR)
        app.router.add_static("/scripts/extensions/third-party/nanogpt-companion/", EXT_DIR)
        app.router.add_get("/user/files/{name}", self._user_file)
        app.router.add_post("/api/settings/save", self._save_settings)
        app.router.add_route("*", "/api/plugins/{tail:.*}", self._no_plugin)
        return app

    async def _index(self, _: web.Request) -> web.Response:
        settings = json.loads((self.data_root / HANDLE / "settings.json").read_text())
        settings.setdefault("extension_settings", {})
        for key, value in self.settings_patch.items():
            root, _sep, leaf = key.partition(".")
            settings[root][leaf] = value
        html = (STANDIN_DIR / "index.html").read_text()
        if not self.with_localforage:
            html = html.replace('<script src="/lib/localforage.js"></script>', "")
        # "</" is escaped so a settings value can never close the inline script.
        payload = json.dumps(settings).replace("</", "<\\/")
        return web.Response(text=html.replace("/*__ST_SETTINGS__*/null", payload), content_type="text/html")

    async def _lib(self, request: web.Request) -> web.StreamResponse:
        path = _lib_paths().get(request.match_info["name"])
        if path is None or not path.exists():
            raise web.HTTPNotFound()
        return web.FileResponse(path)

    async def _models(self, _: web.Request) -> web.Response:
        if self.upstream_models_url:
            async with ClientSession() as session, session.get(self.upstream_models_url) as resp:
                return web.json_response(await resp.json())
        return web.json_response({"object": "list", "data": self.models})

    @property
    def settings_path(self) -> Path:
        return self.data_root / HANDLE / "settings.json"

    def read_settings(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.settings_path.read_text())
        return data

    def write_settings(self, settings: dict[str, Any]) -> None:
        """As ST's /api/settings/save: the whole object, 4-space JSON, written atomically (temp + rename)."""
        tmp = self.settings_path.with_name(f".settings.{uuid.uuid4().hex}.tmp")
        tmp.write_text(json.dumps(settings, indent=4, ensure_ascii=False))
        os.replace(tmp, self.settings_path)

    async def _save_settings(self, request: web.Request) -> web.Response:
        self.write_settings(await request.json())
        self.saves += 1
        return web.json_response({"result": "ok"})

    async def _user_file(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name == "nanogpt-companion.json" and self.bootstrap_override is not None:
            return web.Response(body=self.bootstrap_override, content_type="application/json")
        path = self.data_root / HANDLE / "user" / "files" / name
        if "/" in name or ".." in name or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Cache-Control": "no-cache"})

    async def _no_plugin(self, request: web.Request) -> web.StreamResponse:
        prefix = "/api/plugins/nanogpt-companion"
        if self.plugin_url is None or not (request.path == prefix or request.path.startswith(prefix + "/")):
            return web.Response(status=404, text="Not found")
        # ST's csrf-sync runs before every plugin route: writes without the session's token never arrive.
        if (
            request.method not in ("GET", "HEAD", "OPTIONS")
            and request.headers.get("X-CSRF-Token") != CSRF_TOKEN
        ):
            self.csrf_rejections += 1
            return web.Response(status=403, text="Invalid CSRF token")
        self.plugin_calls.append((request.method, request.path))
        if self._client is None:
            # No total timeout: SSE streams stay open for the life of the page.
            self._client = ClientSession(
                timeout=ClientTimeout(total=None, sock_connect=5), auto_decompress=False
            )
        headers = {k: v for k, v in request.headers.items() if k.lower() in _FORWARD_REQUEST_HEADERS}
        # The session decides the user; accounts are off in the stand-in, so that is always default-user.
        headers["X-Test-User"] = HANDLE
        body = await request.read()
        url = self.plugin_url + request.path_qs[len(prefix) :]
        async with self._client.request(request.method, url, headers=headers, data=body or None) as up:
            resp = web.StreamResponse(status=up.status)
            for name in _FORWARD_RESPONSE_HEADERS:
                if name in up.headers:
                    resp.headers[name] = up.headers[name]
            await resp.prepare(request)
            if up.status in (204, 304):  # no body, whatever framing headers say
                await resp.write_eof()
                return resp
            try:
                async for chunk in up.content.iter_any():
                    await resp.write(chunk)
                await resp.write_eof()
            except ConnectionError:
                # The page went away mid-stream (closed tab, reconnect): as in ST, the plugin's upstream
                # call ends with this connection.
                pass
            return resp

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None


class LoopThread:
    """An asyncio loop in a daemon thread that hosts aiohttp apps for the duration of a test module."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="ext-test-servers")
        self.thread.start()
        self.runners: list[web.AppRunner] = []

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return fut.result(timeout=30)

    def call(self, fn: Callable[[], Any]) -> Any:
        async def wrap() -> Any:
            return fn()

        return self.run(wrap())

    def serve(self, app: web.Application, port: int) -> str:
        async def start() -> None:
            runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
            await runner.setup()
            await web.TCPSite(runner, "127.0.0.1", port).start()
            self.runners.append(runner)

        self.run(start())
        return f"http://127.0.0.1:{port}"

    def close(self) -> None:
        async def stop() -> None:
            for r in reversed(self.runners):
                await r.cleanup()

        try:
            self.run(stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=5)
