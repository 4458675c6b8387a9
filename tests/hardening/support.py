"""Shared helpers of the hardening suites: a fake upstream that records what it answered, RSS sampling,
and the list of fake keys every suite scans its output for.

Why a recording subclass: the fake's own log keeps what was *asked*; the Retry-After and rejected-key
rules are about what happened *after an answer*, so the suites need the status and time of each answer.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.fakes.nanogpt_upstream import (
    DEGRADED_KEY,
    INVALID_KEY,
    LEGACY_PLAN_KEY,
    PAYG_KEY,
    SUBSCRIBER_KEY,
    FakeNanoGPT,
    key_id,
)
from tests.fakes.service_fixtures import RunningService, UpstreamThread, start_fake_upstream

FAKE_KEYS: tuple[str, ...] = (SUBSCRIBER_KEY, PAYG_KEY, LEGACY_PLAN_KEY, DEGRADED_KEY, INVALID_KEY)
# The key-bearing part too: a leak that cut the "sk-nano-" prefix off must still be caught.
KEY_NEEDLES: tuple[bytes, ...] = tuple(k.encode() for k in FAKE_KEYS) + tuple(
    k.removeprefix("sk-nano-").encode() for k in FAKE_KEYS
)

ACCOUNT_PATHS = frozenset({"/api/check-balance", "/api/subscription/v1/usage"})


@dataclass(frozen=True)
class Answer:
    """One answer of the fake: when it was sent (monotonic), to whom (key id), and what it said."""

    at: float
    arrived: float
    path: str
    key_id: str | None
    status: int
    retry_after: float | None


class RecordingFake(FakeNanoGPT):
    """The fake upstream, plus a list of every answer it gave (status and time)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.answers: list[Answer] = []

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        arrived = time.monotonic()
        header = request.headers.get("Authorization", "")
        key = header[7:].strip() if header.lower().startswith("bearer ") else request.headers.get("x-api-key")
        status = 599  # what a reset/aborted answer is recorded as
        retry_after: float | None = None
        try:
            response = await super()._middleware(request, handler)
            status = response.status
            if response.headers.get("Retry-After"):
                retry_after = float(response.headers["Retry-After"])
            return response
        finally:
            self.answers.append(
                Answer(time.monotonic(), arrived, request.path, key_id(key), status, retry_after)
            )


def start_upstream(factory: Callable[[], FakeNanoGPT]) -> UpstreamThread:
    """Like ``start_fake_upstream`` but with any fake (built on the serving thread's loop)."""
    return start_fake_upstream(factory)


def rss_kib(pid: int) -> int:
    """Resident set size of a process from /proc (Linux); no psutil needed."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def find_keys(blob: bytes | str) -> list[str]:
    """Which fake keys (or their secret part) occur in ``blob``."""
    data = blob.encode() if isinstance(blob, str) else blob
    return [needle.decode() for needle in KEY_NEEDLES if needle in data]


class FixPoker:
    """Asks the service to fix everything, over and over, from a thread, while a race runs.

    Automatic fixes alone stop early on purpose: a bad value that keeps coming back is taken as the
    user's choice and only offered from then on. Explicit requests go through the same compare-and-swap
    write, so they keep the service writing into the writer's stream for the whole race.
    """

    def __init__(self, service: RunningService) -> None:
        self.service = service
        self.statuses: dict[str, int] = {}
        self.errors: list[str] = []  # a thread cannot fail the test itself; the test checks these
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fix-poker", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                status, body = self.service.request("POST", "/api/doctor/fix", body={"all": True})
            except OSError as exc:
                self.errors.append(f"request failed: {exc!r}")
                return
            if status != 200:
                self.errors.append(f"HTTP {status}: {body}")
                return
            for result in body["results"]:
                self.statuses[result["status"]] = self.statuses.get(result["status"], 0) + 1
            self._stop.wait(0.005)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


RACING_WRITER = Path(__file__).parents[1] / "fakes" / "racing_st_writer.py"


def race_writer(service: RunningService, target: Path, *writer_args: str) -> tuple[str, dict[str, int]]:
    """Run ``racing_st_writer.py *writer_args`` while a ``FixPoker`` asks for every fix, sampling that
    ``target`` is always a complete JSON document; returns the writer's output and the fix statuses."""
    writer = subprocess.Popen(
        [sys.executable, str(RACING_WRITER), *writer_args], stdout=subprocess.PIPE, text=True
    )
    poker = FixPoker(service)
    samples = 0
    try:
        while writer.poll() is None:
            json.loads(target.read_bytes())  # every sample is a complete JSON document
            samples += 1
            time.sleep(0.002)
    finally:
        poker.stop()
    assert poker.errors == []
    out, _ = writer.communicate(timeout=60)
    assert writer.returncode == 0
    assert samples > 50
    return out, poker.statuses


async def first_event_data(resp: Any) -> Any:
    """The ``data`` of the first event on an open SSE response (the ``hello``), then the response closes."""
    line = b""
    while b"data:" not in line:
        line = await resp.content.readline()
    resp.close()
    return json.loads(line.split(b"data: ", 1)[1])
