"""Helpers that run the real ST server plugin inside `harness.js` (a small stand-in for ST's express server).

The plugin is driven over real HTTP, and what it forwards lands on real aiohttp servers: a recorder that shows
exactly what arrived upstream (headers, body, timing of SSE chunks) and answers the plugin's challenge the way
the service does, and the real companion service. The link file the plugin reads is written with the
service's own code (``nanogpt_companion.plugin_link``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiohttp import web

from nanogpt_companion.plugin_link import (
    CHALLENGE_HEADER,
    PROOF_HEADER,
    Autostart,
    ServiceLink,
    link_path,
    new_secret,
    proof,
    write_link,
)
from tests.fakes.service_fixtures import RunningService, free_port, running_stack

REPO = Path(__file__).resolve().parents[2]
PLUGIN_DIR = REPO / "plugin" / "st-server-plugin"
HARNESS = Path(__file__).with_name("harness.js")
TOKEN_FILE = Path("user") / "files" / "nanogpt-companion.json"


def node_binary() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    return node


def write_token_file(data_root: Path, handle: str, url: str, token: str) -> Path:
    """Writes the file the service would write, by rename, as the service does."""
    target = data_root / handle / TOKEN_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".tmp")
    tmp.write_text(json.dumps({"url": url, "token": token, "version": "0.1.0", "api_version": 1}))
    os.replace(tmp, target)
    return target


def new_token() -> str:
    return secrets.token_urlsafe(32)


@dataclass
class Harness:
    url: str
    process: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    @property
    def base(self) -> str:
        return f"{self.url}/api/plugins/nanogpt-companion"

    def output(self) -> str:
        """Everything the plugin (and harness) printed so far: what would end up in ST's console."""
        return self.stdout_path.read_text(errors="replace") + self.stderr_path.read_text(errors="replace")


def start_harness(
    workdir: Path,
    data_root: Path,
    *,
    st_dir: Path | None = None,
    plugin_dir: Path = PLUGIN_DIR,
    env: dict[str, str] | None = None,
    **limits: int | str,
) -> Harness:
    """``plugin_dir``: the repo's copy by default; an installed copy (``<ST>/plugins/...``) to test what
    the installer put there. ``st_dir``: the ST folder the plugin runs in (default: the data root's parent,
    as with ST's default ``dataRoot: ./data``)."""
    workdir.mkdir(parents=True, exist_ok=True)
    stdout_path = workdir / "harness.stdout"
    stderr_path = workdir / "harness.stderr"
    st_dir = st_dir or data_root.parent
    args = [node_binary(), str(HARNESS), "--plugin", str(plugin_dir), "--data-root", str(data_root)]
    args += ["--st-dir", str(st_dir)]
    for key, value in limits.items():
        args += ["--" + key.replace("_", "-"), str(value)]
    full_env = {**os.environ, **(env or {})}
    with stdout_path.open("wb") as out, stderr_path.open("wb") as err:
        proc = subprocess.Popen(args, stdout=out, stderr=err, env=full_env)
    # Poll a file, not a pipe: a full pipe would block node.
    for _ in range(600):
        # The plugin may log before the harness listens (autostart), so look for the port line itself.
        lines = [line for line in stdout_path.read_text().splitlines() if line.startswith('{"port"')]
        if lines:
            port = json.loads(lines[0])["port"]
            return Harness(f"http://127.0.0.1:{port}", proc, stdout_path, stderr_path)
        if proc.poll() is not None:
            raise RuntimeError("harness exited: " + stderr_path.read_text())
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=0.05)
    proc.kill()
    raise RuntimeError("harness did not start: " + stderr_path.read_text())


def stop_harness(harness: Harness) -> None:
    """SIGTERM, as ST gets on shutdown: the harness awaits the plugin's exit() before it ends."""
    harness.process.terminate()
    try:
        harness.process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        harness.process.kill()
        harness.process.wait()


class TokenIssuer:
    """Writes token files and remembers every token issued, so tests can prove none of them ever leaked."""

    def __init__(self, data_root: Path) -> None:
        self.data_root = data_root
        self.issued: list[str] = []

    def __call__(self, handle: str, url: str) -> str:
        token = new_token()
        self.issued.append(token)
        write_token_file(self.data_root, handle, url, token)
        return token


def link_service(
    st_dir: Path, url: str, *, secret: str | None = None, autostart: Autostart | None = None
) -> str:
    """Writes ``<ST>/plugins/nanogpt-companion.service.json`` as the installer does; returns the secret."""
    secret = secret or new_secret()
    (st_dir / "plugins").mkdir(parents=True, exist_ok=True)
    write_link(link_path(st_dir), ServiceLink(url=url, secret=secret, autostart=autostart))
    return secret


def proving_health(
    secret: str, body: dict[str, object] | None = None
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A /health handler that answers as the service does: the proof header when challenged."""

    async def health(request: web.Request) -> web.Response:
        resp = web.json_response(body if body is not None else {"status": "ok"})
        challenge = request.headers.get(CHALLENGE_HEADER)
        if challenge is not None:
            resp.headers[PROOF_HEADER] = proof(secret, challenge)
        return resp

    return health


def install_server_plugin(st_dir: Path, *extra: str) -> str:
    """The README's command, as a user runs it (``extra``: e.g. ``--no-autostart``); returns its output."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "nanogpt_companion",
            "install-extension",
            "--sillytavern",
            str(st_dir),
            "--server-plugin",
            "--enable-server-plugins",
            *extra,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return proc.stdout + proc.stderr


# ----- a service route with validators and a body compressed once (as the service's catalogue) -----

CATALOG_BODY = json.dumps({"models": [{"id": f"model-{i}", "name": "x" * 40} for i in range(200)]}).encode()
# Compressed once (mtime fixed), as the service does per refresh: the plugin must pass these exact bytes.
CATALOG_GZIP = gzip.compress(CATALOG_BODY, mtime=0)
CATALOG_ETAG = '"catalog-1"'


def validated_route(seen: list[dict[str, object]]) -> Callable[[web.Request], Awaitable[web.Response]]:
    """An ETag, 304 on a match, gzip when accepted; records each request's headers in ``seen``."""

    async def validated(request: web.Request) -> web.Response:
        seen.append({"path": request.path, "headers": {k.lower(): v for k, v in request.headers.items()}})
        common = {"ETag": CATALOG_ETAG, "Vary": "Accept-Encoding", "Cache-Control": "no-cache"}
        if request.headers.get("If-None-Match") == CATALOG_ETAG:
            return web.Response(status=304, headers=common)
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            return web.Response(
                body=CATALOG_GZIP,
                headers={**common, "Content-Encoding": "gzip", "Content-Type": "application/json"},
            )
        return web.Response(body=CATALOG_BODY, headers={**common, "Content-Type": "application/json"})

    return validated


# ----- re-aim attempts (issue 13 item 3) -----

REAIM_ATTEMPTS = (
    "http://127.0.0.1:{port}",
    "http://localhost:{port}",
    "http://127.1:{port}",
    "http://0x7f000001:{port}",
    "http://[::1]:{port}",
    "http://127.0.0.2:{port}",
)


@dataclass
class Impostor:
    """Raw TCP listeners on one port at every loopback address available (127.0.0.1, 127.0.0.2, ::1), so
    every form of a re-aimed URL lands here; each connection is recorded with the first bytes it sent."""

    port: int = field(default_factory=free_port)
    addresses: list[str] = field(default_factory=list)
    connections: list[tuple[str, bytes]] = field(default_factory=list)
    servers: list[asyncio.Server] = field(default_factory=list)

    async def start(self) -> None:
        for address in ("127.0.0.1", "127.0.0.2", "::1"):
            try:
                server = await asyncio.start_server(self._accept(address), address, self.port)
            except OSError:
                continue  # e.g. no IPv6 here: then nothing can reach the impostor there either
            self.servers.append(server)
            self.addresses.append(address)

    def _accept(
        self, address: str
    ) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            data = b""
            with contextlib.suppress(TimeoutError, ConnectionError):
                data = await asyncio.wait_for(reader.read(65536), 1)
            self.connections.append((address, data))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            writer.close()

        return handle

    async def stop(self) -> None:
        for server in self.servers:
            server.close()
            await server.wait_closed()


# ----- waiting and processes -----


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def started_pid(console: str) -> int:
    """The pid in the plugin's "started the service" line of ST's (or the harness's) console."""
    match = re.search(r"started the NanoGPT Companion service \(pid (\d+)\)", console)
    assert match, console
    return int(match.group(1))


@contextlib.contextmanager
def plugin_stack(base: Path) -> Iterator[RunningService]:
    """The shared two-user stack with the extension and plugin installed (no autostart) before the
    service starts, so the service writes the link file and ``"plugin": true``."""
    with running_stack(base, prepare=lambda st: install_server_plugin(st.st_dir, "--no-autostart")) as svc:
        yield svc
