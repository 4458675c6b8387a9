"""The service's log reads like a good daemon's: state changes, not heartbeats (issue 12, item 7).

Each test counts log lines over a witnessed period: the saves it made were processed (the fix landed), the
requests it sent were answered, the scheduled rounds it waited for reached the fake NanoGPT.
"""

from __future__ import annotations

from pathlib import Path

from tests.doctor_service.conftest import nanogpt_settings, st_save
from tests.fakes.nanogpt_upstream import PAYG_KEY, SUBSCRIBER_KEY
from tests.fakes.service_fixtures import (
    RunningService,
    UpstreamThread,
    build_stack_install,
    free_port,
    start_fake_upstream,
    start_service,
    wait_for,
)

V1 = "/api/v1/models"
BALANCE = "/api/check-balance"


def lines(service: RunningService, needle: str) -> list[str]:
    return [line for line in service.log_text().splitlines() if needle in line]


def start(tmp_path: Path, upstream: UpstreamThread, **env: str) -> RunningService:
    st_port = free_port()
    st = build_stack_install(tmp_path, st_port)
    return start_service(
        st, upstream, tmp_path / "state", st_port=st_port, extra_args=["--log-level", "INFO"], env=env
    )


def test_st_saves_are_not_logged_by_watchfiles(tmp_path: Path) -> None:
    upstream = start_fake_upstream(n_models=50)
    try:
        service = start(tmp_path, upstream)
        try:
            settings = service.st.user().settings

            def checked_at() -> float | None:
                status, report = service.request("GET", "/api/doctor")
                assert status == 200
                return report["checked_at"]

            saves = 5
            for i in range(saves):
                before = wait_for(checked_at, "the doctor's first check")
                st_save(settings, nanogpt_settings("merge", temp_openai=0.5 + i / 10))
                # Witness: the doctor re-read this save (a changed file is re-checked, an identical one not).
                wait_for(lambda before=before: checked_at() != before, f"the doctor to check save {i + 1}")
            assert lines(service, "changes detected") == []
            assert lines(service, "watchfiles") == []
        finally:
            service.stop()
    finally:
        upstream.stop()


def test_offline_requests_use_the_cached_failure_until_the_next_retry(tmp_path: Path) -> None:
    """With NanoGPT down and nothing cached, the first request waits for one round of attempts; the next
    ones get the same failure at once instead of each starting a round. "Sync now" still forces one."""
    upstream = start_fake_upstream(n_models=50)
    upstream.call(lambda: upstream.fake.faults.reset(after_bytes=0))
    try:
        service = start(tmp_path, upstream)
        try:
            first, body = service.request("GET", "/api/catalog")
            assert first == 503 and body["error"]["code"] == "upstream_unavailable"
            # default-user's key only: alice's catalogue has its own round (started by her first check).
            attempts = upstream.fake.count(V1, key=SUBSCRIBER_KEY)
            assert attempts >= 1
            answered = [service.request("GET", "/api/catalog")[0] for _ in range(30)]
            assert answered == [503] * 30
            assert upstream.fake.count(V1, key=SUBSCRIBER_KEY) == attempts  # 30 served, none went upstream

            status, _ = service.request("POST", "/api/catalog/refresh")
            assert status == 503
            assert upstream.fake.count(V1, key=SUBSCRIBER_KEY) > attempts  # the explicit refresh did try
            assert len(lines(service, "could not fetch NanoGPT's")) == 1
        finally:
            service.stop()
    finally:
        upstream.stop()


def test_an_outage_is_logged_when_it_starts_and_when_it_ends(tmp_path: Path) -> None:
    upstream = start_fake_upstream(n_models=50)
    try:
        # The catalogue is retried every second and balances polled every 5 s: many rounds in a short test.
        service = start(
            tmp_path,
            upstream,
            NANOGPT_COMPANION_CATALOG_TTL="1",
            NANOGPT_COMPANION_ACCOUNT_POLL_INTERVAL="5",
        )
        try:
            assert service.request("GET", "/api/catalog")[0] == 200
            # Two users with two keys: two catalogues. Refreshes that change nothing are not logged at INFO.
            wait_for(lambda: len(lines(service, "catalogue refreshed")) == 2, "both users' first catalogue")
            info_before = len([line for line in service.log_text().splitlines() if " INFO " in line])
            upstream.call(lambda: upstream.fake.faults.reset(after_bytes=0))
            # Witness, per key: three more failed rounds of the catalogue and two of the account poll have
            # finished (each round is 3 attempts, and a key's next round starts only after its last ended).
            for key in (SUBSCRIBER_KEY, PAYG_KEY):
                models, balance = upstream.fake.count(V1, key=key), upstream.fake.count(BALANCE, key=key)
                wait_for(lambda k=key, n=models: upstream.fake.count(V1, key=k) > n + 9, "3 failed rounds")
                wait_for(
                    lambda k=key, n=balance: upstream.fake.count(BALANCE, key=k) > n + 6, "2 failed polls"
                )

            log = service.log_text().splitlines()
            assert len([line for line in log if "could not fetch NanoGPT's" in line]) == 1
            assert len([line for line in log if " INFO " in line]) == info_before  # no heartbeat while down
            for user in ("default-user", "alice"):
                assert len([line for line in log if f"account poll for {user} failed" in line]) == 1

            upstream.call(upstream.fake.faults.clear)
            wait_for(lambda: lines(service, "catalog: NanoGPT answers again"), "the recovery line")
            wait_for(lambda: len(lines(service, "works again")) == 2, "both users' account polls recovering")
            assert len(lines(service, "catalog: NanoGPT answers again")) == 1
        finally:
            service.stop()
    finally:
        upstream.stop()
