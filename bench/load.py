"""Issue 5 item 3's figures: 200 open SSE streams + up to 2,000 catalogue/account requests/s for 60 s.

Run: ``python -m bench.load [--quick]``. Prints achieved rate, latency percentiles against the target
(p99 < 50 ms), errors, events delivered and RSS; ends with a ``BENCH_JSON`` line. The baseline is the
same request mix at a gentle 100 req/s with no streams open, measured in the same run.
"""

from __future__ import annotations

import argparse
import asyncio

from bench.common import Figure, Report, make_publisher, median, percentile, rss_mb, run_load, stack

TARGET_RATE = 2000.0
PATHS = [
    "/api/catalog?q=claude&sort=price",
    "/api/account",
    "/api/catalog?tier=subscription&capability=vision",
    "/api/account",
    "/api/catalog?q=deepseek",
]


async def main(quick: bool) -> Report:
    report = Report("load")
    duration = 10.0 if quick else 60.0
    with stack() as st:
        tokens = [st.token("default-user"), st.token("alice")]
        url = st.service.url
        await run_load(url, tokens=tokens, paths=PATHS, duration=1.0, rate=50, sse_clients=0)  # warm caches
        base = await run_load(url, tokens=tokens, paths=PATHS, duration=3.0, rate=100, sse_clients=0)
        rss_before = rss_mb(st.service.process.pid)
        result = await run_load(
            url,
            tokens=tokens,
            paths=PATHS,
            duration=duration,
            rate=TARGET_RATE,
            sse_clients=200,
            publish=make_publisher(st, tokens[0]),
            publish_every=2.0,
        )
        rss_after = rss_mb(st.service.process.pid)
    p50, p99 = percentile(result.latencies, 50) * 1000, percentile(result.latencies, 99) * 1000
    base_p99 = percentile(base.latencies, 99) * 1000
    report.add(
        Figure(
            "request rate with 200 SSE streams open",
            result.rate,
            "req/s",
            target=f">= {TARGET_RATE:.0f} req/s",
            met=result.rate >= TARGET_RATE * 0.98,
            note=f"{result.requests} requests in {result.elapsed:.1f} s",
        )
    )
    report.add(
        Figure(
            "p99 latency under load",
            p99,
            "ms",
            target="< 50 ms",
            met=p99 < 50,
            baseline=base_p99,
            baseline_name="p99 at 100 req/s, no streams",
            ratio=p99 / base_p99 if base_p99 else None,
            note=f"p50 {p50:.1f} ms, median at 100 req/s {median(base.latencies) * 1000:.1f} ms",
        )
    )
    report.add(
        Figure(
            "errors (HTTP + SSE)",
            len(result.errors) + len(result.sse_errors),
            "count",
            target="0",
            met=not result.errors and not result.sse_errors,
        )
    )
    delivered = sum(len(got) for got in result.events_received)
    wanted = len(result.events_published) * len(result.events_received)
    report.add(
        Figure(
            "SSE events delivered",
            delivered,
            "events",
            target=f"all {wanted}",
            met=result.missing_events() == 0,
            note=f"{len(result.events_published)} catalogue events x {len(result.events_received)} streams",
        )
    )
    report.add(
        Figure(
            "RSS growth during the run",
            rss_after - rss_before,
            "MB",
            target="bounded (< 40 MB)",
            met=rss_after - rss_before < 40,
            baseline=rss_before,
            baseline_name="RSS before the run",
        )
    )
    report.notes.append(
        "load generator and service share this machine's cores (loopback); the generator is a single "
        "asyncio process, so the achieved rate is the lower of what it and the service can do"
    )
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10 s instead of 60 s")
    args = parser.parse_args()
    asyncio.run(main(args.quick)).emit()
