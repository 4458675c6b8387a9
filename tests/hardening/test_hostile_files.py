"""Issue 13 items 1 and 7: special files and symlinks planted in the ST data root.

A FIFO at a user's ``secrets.json`` froze the whole event loop (the key lookup opened it on the loop); a
FIFO at ``settings.json`` blocked the watcher for every user. Links out of a user's folder were followed
on write, and ``data/mallory -> data/alice`` gave alice's token a stream as "mallory". The FIFO cases run
against the real service process, so a frozen service fails the test instead of freezing pytest; the
/health latency measured meanwhile is printed (``-s``) for the record.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import statistics
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from nanogpt_companion.sillytavern.documents import read_document
from nanogpt_companion.sillytavern.errors import DocumentUnreadable
from nanogpt_companion.sillytavern.secrets import read_nanogpt_key
from nanogpt_companion.user_keys import lookup_key
from nanogpt_companion.users import UserRegistry
from nanogpt_companion.watcher import SettingsWatcher
from nanogpt_companion.web import keys
from tests.doctor_service.conftest import (
    StartCompanion,
    nanogpt_settings,
    ppp_of,
    st_bytes,
    st_save,
    start_companion,
    wait_until,
)
from tests.fakes.service_fixtures import (
    RunningService,
    UpstreamThread,
    build_stack_install,
    free_port,
    start_service,
)
from tests.fakes.st_fixtures import MakeSTInstall, STInstall, UserSpec
from tests.fixtures import ST_FIXTURES
from tests.hardening.support import first_event_data

HEALTH_PROBES = 40
__all__ = ["start_companion"]  # the in-process app fixture, for the symlink cases


def plant_fifo(path: Path) -> None:
    """Replace ``path`` by a FIFO the way a hostile program would: made aside, renamed over it."""
    aside = path.with_name(f"{path.name}.fifo")
    os.mkfifo(aside)
    os.replace(aside, path)


def release_fifo(path: Path) -> None:
    """Open the FIFO for writing once, so a reader stuck in ``open`` (the old behaviour) returns."""
    with contextlib.suppress(OSError):
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))


async def health_latencies(service: RunningService, during: asyncio.Future[Any]) -> list[float]:
    """/health round trips (seconds) measured one after another until ``during`` is done (at least
    HEALTH_PROBES of them). A frozen service fails here (the client gives up after 10 s)."""
    latencies: list[float] = []
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        while len(latencies) < HEALTH_PROBES or not during.done():
            started = time.perf_counter()
            async with session.get(service.url + "/health") as resp:
                assert resp.status == 200
                await resp.read()
            latencies.append(time.perf_counter() - started)
            await asyncio.sleep(0.01)
    return latencies


def describe(latencies: list[float]) -> str:
    ms = sorted(x * 1000 for x in latencies)
    return f"n={len(ms)} median={statistics.median(ms):.1f} ms max={ms[-1]:.1f} ms"


async def api(service: RunningService, handle: str, path: str, method: str = "GET") -> tuple[int, Any]:
    return await asyncio.to_thread(service.request, method, path, handle=handle, timeout=10)


# ---- FIFOs -----------------------------------------------------------------------------------------------


async def test_special_files_are_refused_at_once_never_opened(tmp_path: Path) -> None:
    """Each read runs in a thread with a deadline: the old code blocked in ``open`` for ever."""
    fifo = tmp_path / "settings.json"
    os.mkfifo(fifo)
    sock_path = tmp_path / "secrets.json"
    link = tmp_path / "preset.json"
    link.symlink_to("/dev/zero")
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        try:
            for path, kind in ((fifo, "a named pipe"), (sock_path, "a socket"), (link, "a device")):
                with pytest.raises(DocumentUnreadable, match=f"is {kind}.*, not a regular file"):
                    await asyncio.wait_for(asyncio.to_thread(read_document, path), 10)
        finally:
            release_fifo(fifo)


async def test_a_fifo_as_secrets_json_freezes_nothing(tmp_path: Path, upstream: UpstreamThread) -> None:
    st_port = free_port()
    st = build_stack_install(tmp_path, st_port)
    service = start_service(st, upstream, tmp_path / "state", st_port=st_port)
    secrets = st.user("alice").secrets
    try:
        plant_fifo(secrets)

        async def alice_and_me() -> tuple[Any, Any, Any]:
            # Wait for the service to notice (the watcher looks again at once; a key lookup is reused
            # for at most a second anyway), each poll a real lookup through the refresh path.
            for _ in range(100):
                account = await api(service, "alice", "/api/account?refresh=1")
                if account[0] != 200 or account[1]["key_status"] == "missing":
                    break
                await asyncio.sleep(0.1)
            catalog = await api(service, "alice", "/api/catalog")
            mine = await api(service, "default-user", "/api/account")
            return account, catalog, mine

        work = asyncio.ensure_future(alice_and_me())
        latencies = await health_latencies(service, work)
        (status, account), (catalog_status, catalog), (my_status, mine) = await work
        print(f"\n/health while alice's secrets.json is a FIFO: {describe(latencies)}")
        # Alice has no usable key now: she is told so, and her catalogue still works without one.
        assert status == 200 and account["key_status"] == "missing"
        assert catalog_status == 200 and catalog["total"] > 100
        # Everyone else is untouched.
        assert my_status == 200 and mine["balance"]["usd"] == pytest.approx(129.46956147)
        assert service.process.poll() is None
    finally:
        release_fifo(secrets)
        service.stop()


async def test_a_fifo_as_settings_json_stops_no_one_else(tmp_path: Path, upstream: UpstreamThread) -> None:
    """Alice's settings.json becomes a FIFO; default-user's next bad save is still fixed by the watcher."""
    st_port = free_port()
    st = build_stack_install(tmp_path, st_port)
    mine = st.user("default-user").settings
    st_save(mine, nanogpt_settings("merge"))
    service = start_service(st, upstream, tmp_path / "state", st_port=st_port)
    alice = st.user("alice").settings
    try:
        status, _ = await api(service, "default-user", "/api/doctor")  # start-up scans done
        assert status == 200
        plant_fifo(alice)

        async def alice_then_me() -> None:
            # The service noticed alice's FIFO: her report says why it cannot check her (or, after a
            # rescan, she is no longer a user at all: her settings.json is not a file any more).
            for _ in range(200):
                status, report = await api(service, "alice", "/api/doctor")
                error = report.get("error") if status == 200 else None
                if status == 401 or (error and "named pipe" in error["message"]):
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the service never looked at alice's FIFO")
            # ... and a later bad save of default-user is still picked up and fixed (ppp.nanogpt is auto).
            st_save(mine, nanogpt_settings(""))
            for _ in range(200):
                if ppp_of(mine) == "merge":
                    return
                await asyncio.sleep(0.1)
            raise AssertionError("default-user's save was never fixed: the watcher is stuck")

        work = asyncio.ensure_future(alice_then_me())
        latencies = await health_latencies(service, work)
        await work
        print(f"\n/health while alice's settings.json is a FIFO: {describe(latencies)}")
        assert service.process.poll() is None
    finally:
        release_fifo(alice)
        service.stop()


def test_a_fifo_as_a_token_file_does_not_stop_start_up(tmp_path: Path, upstream: UpstreamThread) -> None:
    st_port = free_port()
    st = build_stack_install(tmp_path, st_port)
    token_file = st.user("alice").token_file
    token_file.parent.mkdir(parents=True)
    os.mkfifo(token_file)
    try:
        service = start_service(st, upstream, tmp_path / "state", st_port=st_port)
    finally:
        release_fifo(token_file)
    try:
        # The FIFO was replaced by a real token file (ours, so a planted one is not kept).
        assert token_file.is_file() and not token_file.is_fifo()
        status, body = service.request("GET", "/api/account", handle="alice")
        assert status == 200 and body["balance"]["usd"] == pytest.approx(9.54827636)
    finally:
        service.stop()


async def test_one_users_slow_check_does_not_hold_up_another(make_st_install: MakeSTInstall) -> None:
    """The watcher runs each user's check in that user's own task (a slow disk is simulated here by a
    doctor whose check of one user blocks until released)."""
    st = make_st_install(users=["slow", "fast"])
    users = UserRegistry(
        data_root=st.data_root, state_dir=st.st_dir / "state", public_url="x", config_key=None
    )
    users.refresh()
    release = asyncio.Event()
    checked: list[str] = []

    class Doctor:
        async def check_user(self, handle: str) -> None:
            if handle == "slow":
                await release.wait()
            checked.append(handle)

    watcher = SettingsWatcher(users, Doctor())  # type: ignore[arg-type]  # the doctor's one method used
    watcher.check_soon("slow")
    watcher.check_soon("fast")
    await wait_until(lambda: "fast" in checked, within=5)
    assert checked == ["fast"]  # done while slow is still stuck
    watcher.check_soon("slow")  # a change while slow's check runs: checked once more afterwards
    release.set()
    await wait_until(lambda: checked.count("slow") == 2, within=5)


def test_secrets_that_are_not_regular_files_mean_no_key(make_st_install: MakeSTInstall) -> None:
    st = make_st_install()
    plant_fifo(st.user().secrets)
    assert read_nanogpt_key(st.user()) is None
    assert not lookup_key(st.user()).key.present


# ---- symlinks --------------------------------------------------------------------------------------------


def outside_copy(tmp_path: Path, name: str, content: bytes) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_bytes(content)
    return path


async def fix_all(companion: Any, handle: str) -> list[dict[str, Any]]:
    resp = await companion.post("/api/doctor/fix", handle, json={"all": True})
    assert resp.status == 200
    return list((await resp.json())["results"])


async def test_settings_linked_outside_the_users_folder_are_never_written(
    make_st_install: MakeSTInstall, start_companion: StartCompanion, tmp_path: Path
) -> None:
    broken = st_bytes(nanogpt_settings(""))
    st = make_st_install(
        users={
            "bob": UserSpec(settings=None),
            "carol": UserSpec(settings=None),
            "alice": UserSpec(settings=nanogpt_settings("merge")),
        }
    )
    outside = outside_copy(tmp_path, "settings.json", broken)
    st.user("bob").settings.symlink_to(outside)
    # carol's settings.json is alice's: patching it would change another user's file.
    alice_settings = st.user("alice").settings
    st_save(alice_settings, broken)
    st.user("carol").settings.symlink_to(Path("..") / "alice" / "settings.json")
    companion = await start_companion(st, doctor_policies={"ppp.nanogpt": "ask"})
    for handle in ("bob", "carol"):
        results = await fix_all(companion, handle)
        assert results and all(r["status"] == "failed" for r in results), results
        assert all("outside" in r["message"] and "link" in r["message"] for r in results)
    assert outside.read_bytes() == broken
    assert alice_settings.read_bytes() == broken
    # Alice's own file, reached the normal way, is fixed as usual.
    results = await fix_all(companion, "alice")
    assert results and all(r["status"] == "applied" for r in results), results
    assert ppp_of(alice_settings) == "merge"


async def test_presets_linked_outside_are_never_written(
    make_st_install: MakeSTInstall, start_companion: StartCompanion, tmp_path: Path
) -> None:
    preset = json.loads((ST_FIXTURES / "openai-preset.Default.json").read_bytes())
    preset.update(
        chat_completion_source="nanogpt", nanogpt_model="openai/gpt-4o-mini", custom_prompt_post_processing=""
    )
    content = st_bytes(preset)
    st = make_st_install(
        users={
            "default-user": UserSpec(settings=nanogpt_settings("merge"), presets={}),
            "dana": UserSpec(settings=nanogpt_settings("merge"), presets={}),
        }
    )
    # default-user: one preset file is a link out; dana: the whole preset folder is.
    presets_dir = st.user().presets_dir
    presets_dir.mkdir(parents=True, exist_ok=True)
    (presets_dir / "Linked.json").symlink_to(outside_copy(tmp_path, "Linked.json", content))
    outside_dir = tmp_path / "outside-presets"
    outside_dir.mkdir()
    (outside_dir / "Folder.json").write_bytes(content)
    st.user("dana").presets_dir.symlink_to(outside_dir, target_is_directory=True)
    companion = await start_companion(st)
    for handle in ("default-user", "dana"):
        results = await fix_all(companion, handle)
        assert results and all(r["status"] == "failed" and "outside" in r["message"] for r in results), (
            results
        )
    assert (tmp_path / "outside" / "Linked.json").read_bytes() == content
    assert (outside_dir / "Folder.json").read_bytes() == content


def test_a_user_folder_linked_outside_gets_no_token_file_there(
    make_st_install: MakeSTInstall, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    st = make_st_install(users=["default-user", "erin"])
    outside = tmp_path / "outside-user-dir"
    outside.mkdir()
    (st.user("erin").root / "user").symlink_to(outside, target_is_directory=True)
    users = UserRegistry(
        data_root=st.data_root, state_dir=tmp_path / "state", public_url="x", config_key=None
    )
    with caplog.at_level(logging.WARNING):
        for _ in range(3):  # the service rescans every 10 s: the cause is reported once
            users.refresh()
    assert list(outside.iterdir()) == []
    assert users.handles() == ["default-user"]
    warnings = [r.getMessage() for r in caplog.records if "token file" in r.getMessage()]
    assert len(warnings) == 1 and "erin" in warnings[0] and "outside" in warnings[0]


def test_two_handles_for_one_folder_serve_only_the_real_one(
    make_st_install: MakeSTInstall, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    st = make_st_install(users=["alice"])
    (st.data_root / "mallory").symlink_to(st.user("alice").root, target_is_directory=True)
    (st.data_root / "x-one").symlink_to(st.data_root / ".shared", target_is_directory=True)
    (st.data_root / "x-two").symlink_to(st.data_root / ".shared", target_is_directory=True)
    (st.data_root / ".shared").mkdir()
    (st.data_root / ".shared" / "settings.json").write_bytes(st_bytes(nanogpt_settings("")))
    users = UserRegistry(
        data_root=st.data_root, state_dir=tmp_path / "state", public_url="x", config_key=None
    )
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            users.refresh()
    assert users.handles() == ["alice"]
    token = json.loads(st.user("alice").token_file.read_bytes())["token"]
    user = users.authenticate(token)
    assert user is not None and user.handle == "alice"
    same = [r.getMessage() for r in caplog.records if "same folder" in r.getMessage()]
    assert len(same) == 2, same  # one per cause, not one per rescan
    assert any("only 'alice' is served" in m for m in same)
    assert any("'x-one', 'x-two'" in m and "none of them" in m for m in same)


async def test_a_handle_that_is_another_users_folder_gets_no_stream(
    make_st_install: MakeSTInstall, start_companion: StartCompanion
) -> None:
    st: STInstall = make_st_install(users=["alice"])
    (st.data_root / "mallory").symlink_to(st.user("alice").root, target_is_directory=True)
    companion = await start_companion(st)
    assert companion.client.app[keys.USERS].handles() == ["alice"]
    resp = await companion.get("/api/events", "alice")
    assert resp.status == 200
    assert (await first_event_data(resp))["user"] == "alice"
