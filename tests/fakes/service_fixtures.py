"""A real running companion service (the CLI, as users start it) in front of the fake NanoGPT upstream.

Used by the browser tests, the server-plugin tests and anything that must see the service the way the
extension does: a separate process, real sockets, real files. The fake upstream runs on its own event
loop in a background thread so tests can flip its faults directly (``stack.upstream.fake.faults``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from aiohttp import web

from tests.fakes.nanogpt_upstream import PAYG_KEY, FakeNanoGPT
from tests.fakes.st_fixtures import STInstall, UserSpec, build_st_install

REPO = Path(__file__).resolve().parents[2]
T = TypeVar("T")


GUARD = 180  # how long a wait may take before a test fails; never a measured duration


def wait_for(condition: Callable[[], T], what: str, timeout: float = GUARD) -> T:
    """Polls ``condition`` until it returns something true (the event the test needs) and returns it;
    fails after the guard, saying what never came."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class UpstreamThread:
    """The fake NanoGPT served from a background thread's event loop."""

    fake: FakeNanoGPT
    port: int
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    runner: web.AppRunner

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def call(self, fn: Any, *args: Any) -> Any:
        """Run ``fn(*args)`` on the fake's loop (for mutations that must not race a request)."""
        done = threading.Event()
        box: list[Any] = []

        def run() -> None:
            box.append(fn(*args))
            done.set()

        self.loop.call_soon_threadsafe(run)
        done.wait(5)
        return box[0] if box else None

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def start_fake_upstream(factory: Callable[[], FakeNanoGPT] | None = None, **options: Any) -> UpstreamThread:
    """Serve a fake (``FakeNanoGPT(**options)``, or ``factory()`` for a subclass) from its own thread."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    box: dict[str, Any] = {}

    def serve() -> None:
        asyncio.set_event_loop(loop)

        async def boot() -> None:
            fake = factory() if factory is not None else FakeNanoGPT(**options)
            runner = web.AppRunner(fake.app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            server = site._server
            assert server is not None
            sockets = getattr(server, "sockets", None) or []
            box.update(fake=fake, runner=runner, port=sockets[0].getsockname()[1])

        loop.run_until_complete(boot())
        ready.set()
        loop.run_forever()
        loop.close()

    thread = threading.Thread(target=serve, name="fake-nanogpt", daemon=True)
    thread.start()
    if not ready.wait(30):
        raise RuntimeError("the fake NanoGPT upstream did not start")
    return UpstreamThread(box["fake"], box["port"], loop, thread, box["runner"])


@dataclass
class RunningService:
    url: str
    port: int
    st: STInstall
    st_port: int
    state_dir: Path
    upstream: UpstreamThread
    process: subprocess.Popen[bytes]
    log_path: Path
    extra_args: list[str] | None = None
    env: dict[str, str] | None = None

    @property
    def st_dir(self) -> Path:
        return self.st.st_dir

    @property
    def data_root(self) -> Path:
        return self.st.data_root

    @property
    def st_origin(self) -> str:
        return f"http://127.0.0.1:{self.st_port}"

    def token_file(self, handle: str) -> Path:
        return self.data_root / handle / "user" / "files" / "nanogpt-companion.json"

    def token_for(self, handle: str) -> str:
        return str(json.loads(self.token_file(handle).read_text())["token"])

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def request(
        self,
        method: str,
        path: str,
        *,
        handle: str | None = "default-user",
        body: Any = None,
        timeout: float = 15,
    ) -> tuple[int, Any]:
        """A plain HTTP call (no aiohttp loop needed), authenticated as ``handle``."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if handle is not None:
            req.add_header("Authorization", f"Bearer {self.token_for(handle)}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def relaunch(self) -> None:
        """Start the service again after ``stop()``: same port, state, ST and options (a user restarting)."""
        again = start_service(
            self.st,
            self.upstream,
            self.state_dir,
            st_port=self.st_port,
            extra_args=self.extra_args,
            env=self.env,
            port=self.port,
        )
        self.process, self.log_path = again.process, again.log_path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_service(
    st: STInstall,
    upstream: UpstreamThread,
    state_dir: Path,
    *,
    st_port: int,
    extra_args: list[str] | None = None,
    env: dict[str, str] | None = None,
    port: int | None = None,
) -> RunningService:
    port = port or free_port()
    log_path = state_dir / f"service-{time.monotonic_ns()}.log"
    state_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "nanogpt_companion",
        "serve",
        "--sillytavern",
        str(st.st_dir),
        "--port",
        str(port),
        "--upstream",
        upstream.base_url,
        "--state-dir",
        str(state_dir),
        "--log-level",
        "DEBUG",
        *(extra_args or []),
    ]
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("NANOGPT")}
    full_env.update(env or {})
    full_env["PYTHONUNBUFFERED"] = "1"
    with log_path.open("ab") as log_file:  # appended: a restarted service keeps the earlier log
        process = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=full_env, cwd=REPO)
    service = RunningService(
        f"http://127.0.0.1:{port}", port, st, st_port, state_dir, upstream, process, log_path, extra_args, env
    )
    deadline = time.monotonic() + 90  # a loaded 2-core CI machine can take a while to import and bind
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the service exited with {process.returncode}:\n{service.log_text()}")
        with contextlib.suppress(OSError), urllib.request.urlopen(service.url + "/health", timeout=1) as resp:
            if resp.status == 200 and all(service.token_file(h).exists() for h in st.users):
                return service
        time.sleep(0.05)
    service.stop()
    raise RuntimeError(f"the service did not become ready:\n{service.log_text()}")


def build_stack_install(base: Path, st_port: int) -> STInstall:
    """Two ST users: ``default-user`` (subscriber key, multi-key secrets), ``alice`` (pay-as-you-go key)."""
    alice_secrets = {"api_key_nanogpt": [{"id": "a1", "value": PAYG_KEY, "label": "alice", "active": True}]}
    return build_st_install(
        base,
        users={"default-user": UserSpec(), "alice": UserSpec(secrets=alice_secrets)},
        port=st_port,
    )


@contextmanager
def running_stack(
    base: Path, *, prepare: Callable[[STInstall], None] | None = None
) -> Iterator[RunningService]:
    """The two-user ST install, the fake upstream and the real service, stopped on exit.

    ``prepare(st)`` runs after the install is built and before the service starts (install the plugin,
    plant hostile folders, ...).
    """
    st_port = free_port()
    st = build_stack_install(base, st_port)
    if prepare is not None:
        prepare(st)
    upstream = start_fake_upstream()
    try:
        service = start_service(st, upstream, base / "state", st_port=st_port)
        try:
            yield service
        finally:
            service.stop()
    finally:
        upstream.stop()


@pytest.fixture(scope="module")
def service_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningService]:
    """A real service process + fake upstream + a real temporary ST install, shared by a test module."""
    with running_stack(tmp_path_factory.mktemp("stack")) as service:
        yield service
