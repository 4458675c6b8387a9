"""Issue 2's benchmark: the warm catalogue vs. what ST does on every Connect, throughput, RSS, start-up.

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
# A bare aiohttp server returning fixed bytes: the ceiling any aiohttp service can reach on this core.
BARE_SERVER = """
import sys
from aiohttp import web
body = b"x" * int(sys.argv[2])
async def h(request):
    return web.Response(body=body, content_type="application/json")
app = web.Application()
app.router.add_get("/api/catalog", h)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
"""


async def _timed_gets(url: str, headers: dict[str, str], n: int) -> tuple[list[float], int]:
    times: list[float] = []
    size = 0
    async with aiohttp.ClientSession() as session:
        for _ in range(n):
            t0 = time.perf_counter()
            async with session.get(url, headers=headers) as resp:
                body = await resp.read()
                orjson.loads(body)
            times.append(time.perf_counter() - t0)
            size = len(body)
    return times, size


def _wait_health(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as resp:
            if resp.status == 200:
                return
        time.sleep(0.01)
    raise RuntimeError(f"{url} never became ready")


async def _saturate(url: str, path: str, token: str, duration: float) -> tuple[float, float]:
    result = await run_load(
        url, tokens=[token], paths=[path], duration=duration, rate=1e6, sse_clients=0, concurrency=16
    )
    if result.errors:
        raise RuntimeError(f"errors under load: {result.errors[:5]}")
    return result.rate, percentile(result.latencies, 99) * 1000


async def _p99_at(url: str, path: str, token: str, rate: float, duration: float) -> tuple[float, float]:
    result = await run_load(
        url, tokens=[token], paths=[path], duration=duration, rate=rate, sse_clients=0, concurrency=64
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


async def main(quick: bool) -> Report:
    report = Report("catalog")
    n_direct, n_service = (5, 50) if quick else (15, 300)
    load_seconds = 3.0 if quick else 10.0
    with stack(latency=UPSTREAM_LATENCY, pin_cpu=SERVICE_CPU) as st:
        pin_self({1} if SERVICE_CPU == 0 else {0})
        token = st.token("alice")  # pay-as-you-go: the full 600-model catalogue, as ST would list it
        auth = {"Authorization": f"Bearer {token}"}
        catalog_url = st.service.url + "/api/catalog"
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
                "warm catalogue request, median",
                s_med,
                "ms",
                target=">= 50x faster than direct",
                met=d_med / s_med >= 50,
                baseline=d_med,
                baseline_name="direct upstream GET + parse (ST's Connect)",
                ratio=d_med / s_med,
                note=f"bodies: service {served_size} B, upstream {direct_size} B",
            )
        )

        rate, p99_sat = await _saturate(st.service.url, "/api/catalog", token, load_seconds)
        offered_rate, p99_1500 = await _p99_at(st.service.url, "/api/catalog", token, 1500, load_seconds)
        bare_port = free_port()
        bare = subprocess.Popen(  # noqa: ASYNC220 - spawning is instant; nothing else runs meanwhile
            [
                "taskset",
                "-c",
                str(SERVICE_CPU),
                sys.executable,
                "-c",
                BARE_SERVER,
                str(bare_port),
                str(served_size),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_health(f"http://127.0.0.1:{bare_port}/api/catalog")
            bare_rate, _ = await _saturate(
                f"http://127.0.0.1:{bare_port}", "/api/catalog", token, load_seconds
            )
        finally:
            bare.terminate()
            bare.wait(10)
        report.add(
            Figure(
                "GET /api/catalog throughput, one core (saturated)",
                rate,
                "req/s",
                target=">= 1500 req/s",
                met=rate >= 1500,
                baseline=bare_rate,
                baseline_name="bare aiohttp serving the same bytes",
                ratio=rate / bare_rate,
                note=f"p99 at saturation {p99_sat:.1f} ms",
            )
        )
        report.add(
            Figure(
                "GET /api/catalog p99 at 1500 req/s offered",
                p99_1500,
                "ms",
                target="< 10 ms",
                met=p99_1500 < 10,
                note=f"achieved {offered_rate:.0f} req/s",
            )
        )

        await asyncio.sleep(1.0)
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
                "idle RSS with the catalogue cached",
                idle,
                "MB",
                target="< 80 MB",
                met=idle < 80,
                baseline=baseline_rss,
                baseline_name="python with aiohttp imported",
                ratio=idle / baseline_rss,
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
    report.notes.append(
        f"upstream latency {UPSTREAM_LATENCY * 1000:.0f} ms, 600 detailed models; service pinned to CPU "
        f"{SERVICE_CPU} (taskset), load generator on the other core"
    )
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer samples, shorter load")
    args = parser.parse_args()
    asyncio.run(main(args.quick)).emit()
