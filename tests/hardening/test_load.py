"""Issue 5 item 3, correctness half: 200 open event streams plus as many requests as the machine gives.

Asserts zero errors, every event delivered to every stream, and bounded memory; never latency (that is
bench/load.py's job, which prints the figures against the target).
"""

from __future__ import annotations

from bench.common import make_publisher, rss_mb, run_load, stack

SHORT_DURATION = 6.0
LONG_DURATION = 60.0
PATHS = [
    "/api/catalog?q=claude&sort=price",
    "/api/account",
    "/api/catalog?tier=subscription&capability=vision",
    "/api/account",
    "/api/catalog?q=deepseek",
]


async def test_sse_streams_and_request_load(long_run: bool) -> None:
    with stack() as st:
        tokens = [st.token("default-user"), st.token("alice")]
        pid = st.service.process.pid
        # Warm caches so the memory baseline is the steady state, not the empty process.
        warm = await run_load(
            st.service.url, tokens=tokens, paths=PATHS, duration=1.0, rate=200, sse_clients=10
        )
        assert warm.errors == []
        rss_before = rss_mb(pid)
        result = await run_load(
            st.service.url,
            tokens=tokens,
            paths=PATHS,
            duration=LONG_DURATION if long_run else SHORT_DURATION,
            rate=2000,
            sse_clients=200,
            publish=make_publisher(st, tokens[0]),
            publish_every=1.0,
            min_events=3,
        )
        rss_after = rss_mb(pid)
        assert st.service.process.poll() is None
    assert result.errors == [], result.errors[:10]
    assert result.sse_errors == [], result.sse_errors[:10]
    assert result.requests > 500, "the load generator barely ran"
    assert len(result.events_published) >= 3
    assert result.missing_events() == 0, "some SSE clients missed catalogue events"
    assert all(len(got) == len(result.events_published) for got in result.events_received)
    assert rss_after - rss_before < 40, f"RSS grew {rss_after - rss_before:.1f} MB under load"
