"""The catalogue service: a warm request vs. fetching NanoGPT's list directly (what a browser-only extension
would do on every page load), throughput on one core, idle memory with ten ST users, start-up.

Run: ``python -m bench.catalog [--quick]``. Figures are printed with a baseline measured in the same run
and end with a ``BENCH_JSON`` line. Nothing here is a test: the numbers are reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import subprocess
import sys
import tempfile
import time
import urllib.request

import aiohttp
import orjson
from tests.fakes.nanogpt_upstream import PAYG_KEY
from tests.fakes.service_fixtures import free_port

from bench.common import (
    Figure,
    Report,
    Stack,
    median,
    percentile,
    pin_self,
    python_start_seconds,
    rss_mb,
    run_load,
    stack,
)

UPSTREAM_LATENCY = 0.15
SERVICE_CPU = 0
N_USERS = 10
# What the extension asks for at each ST page load (gzip: every browser sends Accept-Encoding with it).
EXTENSION_PATH = "/api/catalog?fields=summary&include_routers=false"
GZIP = {"Accept-Encoding": "gzip, deflate, br, zstd"}
FULL_PATH = "/api/catalog"
IDENTITY = {"Accept-Encoding": "identity"}
# A bare aiohttp server returning fixed bytes: the ceiling any aiohttp service can reach on this core.
BARE_SERVER = """
import sys
from aiohttp import web
body = open(sys.argv[2], "rb").read()
headers = {"Content-Encoding": sys.argv[3]} if sys.argv[3] != "identity" else {}
async def h(request):
    return web.Response(body=body, content_type="application/json", headers=headers)
app = web.Application()
app.router.add_get("/api/catalog", h)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


async def _timed_gets(url: str, headers: dict[str, str], n: int) -> tuple[list[float], int]:
    """Median-able times of GET + decode + parse; the size is the body as sent (compressed if it was)."""
    times: list[float] = []
    size = 0
    async with aiohttp.ClientSession() as session:
        for _ in range(n):
            t0 = time.perf_counter()
            async with session.get(url, headers=headers) as resp:
                body = await resp.read()
                orjson.loads(body)
                size = int(resp.headers.get("Content-Length", len(body)))
            times.append(time.perf_counter() - t0)
    return times, size


async def _wire_body(url: str, headers: dict[str, str]) -> tuple[bytes, str]:
    """The body exactly as sent, and its content coding (for the bare server to serve the same)."""
    async with (
        aiohttp.ClientSession(auto_decompress=False) as session,
        session.get(url, headers=headers) as r,
    ):
        return await r.read(), r.headers.get("Content-Encoding", "identity")


def _wait_health(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as resp:
            if resp.status == 200:
                return
        time.sleep(0.01)
    raise RuntimeError(f"{url} never became ready")


async def _saturate(
    url: str, path: str, token: str, duration: float, headers: dict[str, str]
) -> tuple[float, float]:
    result = await run_load(
        url,
        tokens=[token],
        paths=[path],
        duration=duration,
        rate=1e6,
        sse_clients=0,
        concurrency=16,
        extra_headers=headers,
        auto_decompress=False,  # the load generator only counts answers; decoding is the client's cost
    )
    if result.errors:
        raise RuntimeError(f"errors under load: {result.errors[:5]}")
    return result.rate, percentile(result.latencies, 99) * 1000


async def _p99_at(url: str, path: str, token: str, rate: float, duration: float) -> tuple[float, float]:
    result = await run_load(
        url,
        tokens=[token],
        paths=[path],
        duration=duration,
        rate=rate,
        sse_clients=0,
        concurrency=64,
        extra_headers=GZIP,
        auto_decompress=False,
    )
    return result.rate, percentile(result.latencies, 99) * 1000


def _start_time(upstream_url: str, runs: int) -> float:
    """Seconds from exec to a 200 on /health, median of ``runs`` (no ST install: the pure service start)."""
    times = []
    for _ in range(runs):
        port = free_port()
        with tempfile.TemporaryDirectory() as state:
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "nanogpt_companion",
                    "serve",
                    "--port",
                    str(port),
                    "--upstream",
                    upstream_url,
                    "--state-dir",
                    state,
                    "--log-level",
                    "WARNING",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                _wait_health(f"http://127.0.0.1:{port}/health")
                times.append(time.perf_counter() - t0)
            finally:
                proc.terminate()
                proc.wait(10)
    return median(times)


async def _bare_rate(body: bytes, encoding: str, token: str, seconds: float) -> float:
    """Requests/s of a bare aiohttp server serving ``body`` on the service's core: the ceiling."""
    bare_port = free_port()
    with tempfile.NamedTemporaryFile(suffix=".body") as f:
        f.write(body)
        f.flush()
        bare = subprocess.Popen(  # noqa: ASYNC220 - spawning is instant; nothing else runs meanwhile
            [
                "taskset",
                "-c",
                str(SERVICE_CPU),
                sys.executable,
                "-c",
                BARE_SERVER,
                str(bare_port),
                f.name,
                encoding,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_health(f"http://127.0.0.1:{bare_port}/api/catalog")
            headers = GZIP if encoding != "identity" else IDENTITY
            rate, _ = await _saturate(
                f"http://127.0.0.1:{bare_port}", "/api/catalog", token, seconds, headers
            )
        finally:
            bare.terminate()
            bare.wait(10)
    return rate


async def _throughput(report: Report, st: Stack, token: str, seconds: float) -> None:
    auth = {"Authorization": f"Bearer {token}"}
    for label, path, headers in (
        ("the extension's list (fields=summary, gzip)", EXTENSION_PATH, GZIP),
        ("the full list, uncompressed", FULL_PATH, IDENTITY),
    ):
        body, encoding = await _wire_body(st.service.url + path, {**auth, **headers})
        rate, p99_sat = await _saturate(st.service.url, path, token, seconds, headers)
        bare_rate = await _bare_rate(body, encoding, token, seconds)
        report.add(
            Figure(
                f"GET {label}: throughput, one core (saturated)",
                rate,
                "req/s",
                target=">= 1500 req/s",
                met=rate >= 1500,
                baseline=bare_rate,
                baseline_name="bare aiohttp serving the same bytes",
                ratio=rate / bare_rate,
                note=f"{len(body):,} B per answer; p99 at saturation {p99_sat:.1f} ms",
            )
        )


async def _warm_like_the_extension(st: Stack, handles: list[str]) -> None:
    """Each user's page load: the catalogue list, account, history, endpoints, doctor."""
    async with aiohttp.ClientSession(st.service.url) as session:
        for handle in handles:
            auth = {"Authorization": f"Bearer {st.token(handle)}", **GZIP}
            for path in (EXTENSION_PATH, "/api/account", "/api/account/history?days=7", "/api/endpoints"):
                async with session.get(path, headers=auth) as resp:
                    await resp.read()
                    if resp.status != 200:
                        raise RuntimeError(f"{path} for {handle}: {resp.status}")
            async with session.get("/api/doctor", headers=auth) as resp:
                await resp.read()


async def _idle_rss(report: Report) -> None:
    with stack(n_users=N_USERS, watch=True) as st:
        handles = list(st.service.st.users)
        await _warm_like_the_extension(st, handles)
        await asyncio.sleep(3.0)  # the last refresh's memory is handed back, the pollers are idle
        idle = rss_mb(st.service.process.pid)
    bare_py = subprocess.Popen(  # noqa: ASYNC220 - spawning is instant; nothing else runs meanwhile
        [sys.executable, "-c", "import aiohttp, time; time.sleep(30)"]
    )
    try:
        await asyncio.sleep(1.0)
        baseline_rss = rss_mb(bare_py.pid)
    finally:
        bare_py.kill()
        bare_py.wait()
    report.add(
        Figure(
            f"idle RSS, 600 models, {N_USERS} ST users (own keys), catalogue cached, watching their files",
            idle,
            "MB",
            target="< 60 MB",
            met=idle < 60,
            baseline=baseline_rss,
            baseline_name="python with aiohttp imported",
            ratio=idle / baseline_rss,
            note="every other user subscribes; each user loaded ST once (catalogue, account, doctor)",
        )
    )


async def main(quick: bool) -> Report:
    report = Report("catalog")
    n_direct, n_service = (5, 50) if quick else (15, 300)
    load_seconds = 3.0 if quick else 10.0
    with stack(latency=UPSTREAM_LATENCY, pin_cpu=SERVICE_CPU) as st:
        pin_self({1} if SERVICE_CPU == 0 else {0})
        token = st.token("alice")  # pay-as-you-go: the full 600-model catalogue, as ST would list it
        auth = {"Authorization": f"Bearer {token}", **GZIP}
        catalog_url = st.service.url + EXTENSION_PATH
        await _timed_gets(catalog_url, auth, 3)  # warm: the one cold fetch pays the upstream latency
        direct, direct_size = await _timed_gets(
            st.upstream.base_url + "/v1/models?detailed=true",
            {"Authorization": f"Bearer {PAYG_KEY}"},
            n_direct,
        )
        served, served_size = await _timed_gets(catalog_url, auth, n_service)
        d_med, s_med = median(direct) * 1000, median(served) * 1000
        report.add(
            Figure(
                "catalogue at page load, median: GET + decode + parse of the extension's list, warm service",
                s_med,
                "ms",
                target=">= 50x faster than direct",
                met=d_med / s_med >= 50,
                baseline=d_med,
                baseline_name="direct upstream GET + parse, what a browser-only extension would do",
                ratio=d_med / s_med,
                note=f"bodies: service {served_size:,} B (gzip), upstream {direct_size:,} B",
            )
        )
        await _throughput(report, st, token, load_seconds)
        offered_rate, p99_1500 = await _p99_at(st.service.url, EXTENSION_PATH, token, 1500, load_seconds)
        report.add(
            Figure(
                "GET the extension's list: p99 at 1500 req/s offered",
                p99_1500,
                "ms",
                target="< 10 ms",
                met=p99_1500 < 10,
                note=f"achieved {offered_rate:.0f} req/s",
            )
        )
        start = _start_time(st.upstream.base_url, 3 if quick else 5)
        py = python_start_seconds()
        report.add(
            Figure(
                "start to /health ready",
                start * 1000,
                "ms",
                target="< 1000 ms",
                met=start < 1.0,
                baseline=py * 1000,
                baseline_name="python -c pass",
                ratio=start / py,
            )
        )
    await _idle_rss(report)
    report.notes.append(
        f"upstream latency {UPSTREAM_LATENCY * 1000:.0f} ms, 600 detailed models; service pinned to CPU "
        f"{SERVICE_CPU} (taskset), load generator on the other core; the load generator does not decode "
        "bodies (it counts answers)"
    )
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer samples, shorter load")
    args = parser.parse_args()
    asyncio.run(main(args.quick)).emit()
