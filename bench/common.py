"""Shared pieces of the benchmarks: the stack under test, a bounded load generator, figures, BENCH_JSON.

Every benchmark prints human-readable lines and ends with one ``BENCH_JSON {...}`` line that
``python -m bench`` collects into bench/RESULTS.md. The JSON is ``{"bench": name, "figures": [Figure]}``;
a figure carries its baseline measured in the same run, so the report never compares against numbers
from another machine or another day.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from tests.fakes.nanogpt_upstream import FakeAccount, FakeNanoGPT
from tests.fakes.service_fixtures import (
    RunningService,
    UpstreamThread,
    build_stack_install,
    free_port,
    start_fake_upstream,
    start_service,
)
from tests.fakes.st_fixtures import STInstall, UserSpec, build_st_install

log = logging.getLogger(__name__)

BENCH_MARK = "BENCH_JSON "


@dataclass
class Figure:
    """One measured figure. ``ratio`` is baseline/value for "lower is better", value/baseline otherwise."""

    name: str
    value: float
    unit: str
    target: str = ""
    met: bool | None = None
    baseline: float | None = None
    baseline_name: str = ""
    ratio: float | None = None
    note: str = ""


@dataclass
class Report:
    bench: str
    figures: list[Figure] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        base = (
            f" (baseline {figure.baseline_name}: {figure.baseline:.4g})"
            if figure.baseline is not None
            else ""
        )
        ratio = f" ratio {figure.ratio:.1f}x" if figure.ratio is not None else ""
        verdict = "" if figure.met is None else (" [target met]" if figure.met else " [TARGET MISSED]")
        target = f" target {figure.target}" if figure.target else ""
        print(f"{figure.name}: {figure.value:.4g} {figure.unit}{base}{ratio}{target}{verdict}", flush=True)
        return figure

    def emit(self) -> None:
        payload = {"bench": self.bench, "figures": [asdict(f) for f in self.figures], "notes": self.notes}
        print(BENCH_MARK + json.dumps(payload), flush=True)


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (no interpolation: a p99 is a latency some request really had)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(pct / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    ram_gb: float | None = None
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gb": ram_gb,
        "python": platform.python_version(),
        "platform": platform.platform(),
        # Benchmarks on a shared box are only as good as its quiet: record how busy it was.
        "load_avg_1m": round(os.getloadavg()[0], 2),
    }


# ---- the stack under test ------------------------------------------------------------------------------


@dataclass
class Stack:
    service: RunningService
    upstream: UpstreamThread

    def token(self, handle: str = "default-user") -> str:
        return self.service.token_for(handle)


def user_key(index: int) -> str:
    """The NanoGPT key of the ``index``-th user of a many-user stack (FAKE; the fake upstream knows it)."""
    return f"sk-nano-FAKE-{700000000000 + index}"


def build_many_users(base: Path, st_port: int, n_users: int) -> STInstall:
    """``n_users`` ST users, each with their own key (one ST install shared by a household or a team)."""
    users = {
        f"user{i:02d}": UserSpec(
            secrets={"api_key_nanogpt": [{"id": "k", "value": user_key(i), "label": "me", "active": True}]}
        )
        for i in range(n_users)
    }
    return build_st_install(base, users=users, port=st_port)


def many_user_accounts(n_users: int) -> list[FakeAccount]:
    """Every other user subscribes, the rest pay as they go: two distinct catalogues across the keys."""
    return [FakeAccount(user_key(i), subscriber=i % 2 == 0) for i in range(n_users)]


@contextlib.contextmanager
def stack(
    *,
    latency: float = 0.0,
    n_models: int = 600,
    n_users: int | None = None,
    pin_cpu: int | None = None,
    env: dict[str, str] | None = None,
    watch: bool = False,
) -> Iterator[Stack]:
    """Fake upstream (background thread) + the real service as a subprocess over a temp ST install.

    Without ``n_users`` the install has the two test users (``default-user`` subscriber, ``alice``
    pay-as-you-go); with it, ``user00``.. each with their own key (see ``build_many_users``). ``watch``
    runs the settings watcher as users run the service (off by default: most figures are about HTTP).
    ``pin_cpu`` runs the service under ``taskset -c N`` when taskset exists, so a one-core figure is one
    core and the load generator (this process) does not steal from it.
    """
    base = Path(tempfile.mkdtemp(prefix="nanogpt-bench-"))
    if n_users is None:
        upstream = start_fake_upstream(latency=latency, n_models=n_models)
    else:
        accounts = many_user_accounts(n_users)
        upstream = start_fake_upstream(
            lambda: FakeNanoGPT(latency=latency, n_models=n_models, accounts=accounts)
        )
    service: RunningService | None = None
    try:
        st_port = free_port()
        st = (
            build_stack_install(base, st_port)
            if n_users is None
            else build_many_users(base, st_port, n_users)
        )
        service = start_service(
            st, upstream, base / "state", st_port=st_port, env=env, extra_args=[] if watch else ["--no-watch"]
        )
        if pin_cpu is not None and shutil.which("taskset"):
            subprocess.run(
                ["taskset", "-pc", str(pin_cpu), str(service.process.pid)], check=True, capture_output=True
            )
        yield Stack(service, upstream)
    finally:
        if service is not None:
            service.stop()
        upstream.stop()
        shutil.rmtree(base, ignore_errors=True)


def pin_self(cpus: set[int]) -> None:
    """Keep the load generator off the service's core (best effort)."""
    with contextlib.suppress(AttributeError, OSError):
        os.sched_setaffinity(0, cpus)


# ---- a bounded load generator ----------------------------------------------------------------------------


@dataclass
class LoadResult:
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)  # seconds
    elapsed: float = 0.0
    events_published: list[float] = field(default_factory=list)  # fetched_at of each catalogue refresh
    events_received: list[list[float]] = field(default_factory=list)  # per SSE client
    sse_errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.requests / self.elapsed if self.elapsed else 0.0

    def missing_events(self) -> int:
        wanted = set(self.events_published)
        return sum(len(wanted - set(got)) for got in self.events_received)


async def _sse_client(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    got: list[float],
    errors: list[str],
    ready: asyncio.Event,
) -> None:
    try:
        async with session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=None)) as resp:
            if resp.status != 200:
                errors.append(f"SSE status {resp.status}")
                return
            event = ""
            async for raw in resp.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "catalog":
                    got.append(float(json.loads(line[6:])["fetched_at"]))
                elif line.startswith("data: ") and event == "hello":
                    ready.set()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        errors.append(f"SSE {type(exc).__name__}: {exc}")


async def run_load(
    base_url: str,
    *,
    tokens: list[str],
    paths: list[str],
    duration: float,
    rate: float = 2000.0,
    sse_clients: int = 200,
    concurrency: int = 64,
    publish_every: float = 1.0,
    publish: Callable[[], Awaitable[float | None]] | None = None,
    min_events: int = 0,
    extra_headers: dict[str, str] | None = None,
    auto_decompress: bool = True,
) -> LoadResult:
    """Hold ``sse_clients`` event streams (for ``tokens[0]``) open while sending up to ``rate`` requests/s.

    Requests are scheduled open-loop (a request is due every 1/rate s, at most ``concurrency`` in flight)
    so a slow service shows up as latency and a lower achieved rate, not as a silently gentler load.
    ``publish`` (called every ``publish_every`` s) makes the service emit one ``catalog`` event and returns
    its ``fetched_at``; every stream must receive every one of them. ``min_events``: keep the load on past
    ``duration`` until that many events were published (a slow machine refreshes the catalogue less often;
    a test that needs a witness waits for it instead of failing by being slow), up to ten times ``duration``.
    """
    result = LoadResult()
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(
        base_url, connector=connector, timeout=timeout, auto_decompress=auto_decompress
    ) as session:
        sse_headers = {"Authorization": f"Bearer {tokens[0]}"}
        readies = [asyncio.Event() for _ in range(sse_clients)]
        result.events_received = [[] for _ in range(sse_clients)]
        streams = [
            asyncio.create_task(
                _sse_client(
                    session,
                    "/api/events",
                    sse_headers,
                    result.events_received[i],
                    result.sse_errors,
                    readies[i],
                )
            )
            for i in range(sse_clients)
        ]
        await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 30)
        headers = [{"Authorization": f"Bearer {t}", **(extra_headers or {})} for t in tokens]
        slots = asyncio.Semaphore(concurrency)
        inflight: set[asyncio.Task[None]] = set()

        async def one(i: int) -> None:
            path = paths[i % len(paths)]
            t0 = time.perf_counter()
            try:
                async with session.get(path, headers=headers[i % len(headers)]) as resp:
                    await resp.read()
                    if resp.status != 200:
                        result.errors.append(f"{path}: {resp.status}")
            except Exception as exc:
                result.errors.append(f"{path}: {type(exc).__name__}")
            finally:
                result.latencies.append(time.perf_counter() - t0)
                result.requests += 1
                slots.release()

        start = time.monotonic()
        deadline = start + duration
        hard_stop = start + duration * 10

        def running(now: float) -> bool:
            if now < deadline:
                return True
            return publish is not None and len(result.events_published) < min_events and now < hard_stop

        async def publisher() -> None:
            assert publish is not None
            while running(time.monotonic() + publish_every):
                await asyncio.sleep(publish_every)
                fetched_at = await publish()
                if fetched_at is not None:
                    result.events_published.append(fetched_at)

        pub = asyncio.create_task(publisher()) if publish is not None else None
        i = 0
        while running(now := time.monotonic()):
            due = int((now - start) * rate)
            if i >= due:
                await asyncio.sleep(max(0.0, (i + 1) / rate - (now - start)))
                continue
            await slots.acquire()
            task = asyncio.create_task(one(i))
            inflight.add(task)
            task.add_done_callback(inflight.discard)
            i += 1
        if inflight:
            await asyncio.gather(*inflight)
        result.elapsed = time.monotonic() - start
        if pub is not None:
            await pub
        # The last event's delivery: wait until every stream has every event (or give up after 30 s, and
        # the caller's missing_events() says so).
        for _ in range(600):  # 30 s in 50 ms steps
            if all(len(got) >= len(result.events_published) for got in result.events_received):
                break
            await asyncio.sleep(0.05)
        for task in streams:
            task.cancel()
        await asyncio.gather(*streams, return_exceptions=True)
    return result


def make_publisher(st: Stack, token: str) -> Callable[[], Awaitable[float | None]]:
    """Change a price upstream, then ask the service to refresh: exactly one ``catalog`` event per call."""
    fake = st.upstream.fake
    model_id = fake.models[-1]["id"]
    counter = iter(range(1, 1_000_000))

    async def publish() -> float | None:
        price = 1.0 + next(counter) / 100
        st.upstream.call(lambda: fake.set_price(model_id, prompt=price))
        async with (
            aiohttp.ClientSession(st.service.url) as session,
            session.post("/api/catalog/refresh", headers={"Authorization": f"Bearer {token}"}) as resp,
        ):
            if resp.status != 200:
                return None
            data = await resp.json()
            return float(data["fetched_at"]) if data["diff"]["changed"] else None

    return publish


def python_start_seconds(runs: int = 5) -> float:
    """Median wall time of ``python -c pass``: the floor any Python service start-up sits on."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append(time.perf_counter() - t0)
    return median(times)
