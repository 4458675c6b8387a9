"""Issue 5 item 5: the doctor's data-safety guarantees, extended from settings.json to the other files it
fixes: Chat Completion presets (``preset.ppp``) and Connection Manager profiles inside settings.json
(``profile.ppp``).

The settings.json race and crash tests live in tests/doctor_service/test_race_crash.py and the
settings.json full-disk test in tests/doctor_service/test_bad_input.py; these reuse their machinery for
the other targets, because a preset is patched through its own path (top-level key, another directory,
``preset:<name>`` journal entries) and a profile through a list index deep in settings.json.
"""

from __future__ import annotations

import asyncio
import copy
import json
import multiprocessing
import os
import random
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nanogpt_companion.sillytavern.documents import is_companion_temp, read_document
from nanogpt_companion.sillytavern.presets import list_presets
from nanogpt_companion.sillytavern.stjson import dumps_st
from nanogpt_companion.watcher import SettingsWatcher
from tests.doctor_service.conftest import nanogpt_settings, st_bytes
from tests.doctor_service.test_race_crash import wait_stable
from tests.fakes import crash_writer
from tests.fakes.racing_st_writer import PRESET_PPP, PROFILE_PPP, preset_variant, profile_variant
from tests.fakes.service_fixtures import (
    RunningService,
    UpstreamThread,
    free_port,
    start_service,
)
from tests.fakes.st_fixtures import FIXTURES, MakeSTInstall, STInstall, UserSpec, build_st_install
from tests.hardening.support import race_writer
from tests.web.conftest import Companion, StartCompanion, start_companion

__all__ = ["start_companion"]  # the in-process app fixture, used by the full-disk test

WRITES = 600  # per race; the settings.json race runs 1,000, these two together stay within seconds
CRASH_TRIALS = 100
SHIPPED_PRESET: dict[str, Any] = json.loads((FIXTURES / "openai-preset.Default.json").read_text("utf-8"))
# The service only fixes presets and profiles unasked when told to; the races need it to act on its own.
AUTO_ENV = {"NANOGPT_COMPANION_DOCTOR_POLICIES": json.dumps({"preset.ppp": "auto", "profile.ppp": "auto"})}


def nanogpt_preset(ppp: str) -> dict[str, Any]:
    """The shipped Default preset as saved while connected to NanoGPT with PPP ``ppp``."""
    preset = copy.deepcopy(SHIPPED_PRESET)
    preset.update(chat_completion_source="nanogpt", nanogpt_model="openai/gpt-4o-mini")
    preset[PRESET_PPP] = ppp
    return preset


def journal_rules(service: RunningService, handle: str = "default-user") -> dict[tuple[str, str], int]:
    """Journal rows per (file, rule), read straight from the service's SQLite file."""
    db = service.state_dir / "companion.sqlite3"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        rows = conn.execute(
            "SELECT file, rule, COUNT(*) FROM fix_journal WHERE user = ? GROUP BY file, rule", (handle,)
        ).fetchall()
    return {(str(file), str(rule)): int(count) for file, rule, count in rows}


def temps_in(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if is_companion_temp(p.name) or p.name.startswith("."))


def run_race(service: RunningService, target: Path, mode: str, seed: int) -> tuple[int, dict[str, int]]:
    """Run the writer against ``target`` while fixes are requested; returns the writer's last index and
    the statuses of those fixes."""
    out, statuses = race_writer(service, target, mode, str(target), str(WRITES), str(seed))
    return int(out.strip()), statuses


def assert_quiet(service: RunningService, before: dict[tuple[str, str], int]) -> None:
    """No fix loop: with the writer gone, nothing more is journalled and the service is healthy."""
    time.sleep(1.0)
    assert journal_rules(service) == before
    assert service.process.poll() is None
    assert "Traceback" not in service.log_text()


def test_a_racing_preset_writer_never_loses_its_last_save_and_fixes_do_not_loop(
    tmp_path: Path, upstream: UpstreamThread
) -> None:
    st_port = free_port()
    st = build_st_install(
        tmp_path,
        users={
            "default-user": UserSpec(settings=nanogpt_settings("merge"), presets={"Default": SHIPPED_PRESET})
        },
        port=st_port,
    )
    preset = st.user().preset("Default")
    service = start_service(st, upstream, tmp_path / "state", st_port=st_port, env=AUTO_ENV)
    try:
        last, statuses = run_race(service, preset, "preset", seed=23)

        final = wait_stable(preset)
        written = preset_variant(SHIPPED_PRESET, last)
        fixed = written.replace(f'"{PRESET_PPP}": ""'.encode(), f'"{PRESET_PPP}": "merge"'.encode())
        assert final in (written, fixed), "the writer's last save was lost or mangled"
        assert json.loads(final)["race_marker"] == last

        journalled = journal_rules(service)
        fixes = journalled.get(("preset:Default", "preset.ppp"), 0)
        broken_writes = sum(1 for i in range(WRITES) if i % 3 != 2)
        # The service really raced the writer (it wrote more than once; how often depends on the machine's
        # load, so the floor is a witness, not a rate), and every write is accounted for.
        assert statuses.get("applied", 0) >= 2, statuses
        assert 2 <= fixes <= broken_writes
        assert set(journalled) == {("preset:Default", "preset.ppp")}  # settings.json was never touched
        assert_quiet(service, journalled)
        assert temps_in(preset.parent) == []
        assert [p.name for p in list_presets(st.user())] == ["Default.json"]
    finally:
        service.stop()


def test_a_racing_profile_writer_never_loses_its_last_save_and_fixes_do_not_loop(
    tmp_path: Path, upstream: UpstreamThread
) -> None:
    st_port = free_port()
    base = nanogpt_settings("merge")
    st = build_st_install(tmp_path, users={"default-user": UserSpec(settings=base)}, port=st_port)
    settings = st.user().settings
    service = start_service(st, upstream, tmp_path / "state", st_port=st_port, env=AUTO_ENV)
    try:
        last, statuses = run_race(service, settings, "profile", seed=29)

        final = wait_stable(settings)
        written = profile_variant(base, last)
        fixed = written.replace(f'"{PROFILE_PPP}": "none"'.encode(), f'"{PROFILE_PPP}": "merge"'.encode())
        assert final in (written, fixed), "the writer's last save was lost or mangled"
        data = json.loads(final)
        assert data["race_marker"] == last
        # The main PPP was healthy all along; only the profile was ever the fix's business.
        assert data["oai_settings"]["custom_prompt_post_processing"] == "merge"

        journalled = journal_rules(service)
        fixes = journalled.get(("settings", "profile.ppp"), 0)
        broken_writes = sum(1 for i in range(WRITES) if i % 3 != 2)
        assert statuses.get("applied", 0) >= 2, statuses  # a witness of the race, as above
        assert 2 <= fixes <= broken_writes
        assert set(journalled) == {("settings", "profile.ppp")}
        assert_quiet(service, journalled)
        assert temps_in(settings.parent) == []
    finally:
        service.stop()


def test_sigkill_mid_preset_fix_leaves_the_old_or_the_new_preset_never_a_mix(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["tests.fakes.crash_writer"])
    st: STInstall = build_st_install(
        tmp_path,
        users={
            "default-user": UserSpec(
                settings=nanogpt_settings("merge"), presets={"Default": nanogpt_preset("")}
            )
        },
    )
    preset = st.user().preset("Default")
    settings_before = st.user().settings.read_bytes()
    versions = {dumps_st(nanogpt_preset(v)).encode("utf-8") for v in ("", "merge")}
    assert preset.read_bytes() in versions
    rng = random.Random(13)
    seen: set[bytes] = set()
    exitcode: int | None = None
    for _ in range(CRASH_TRIALS):
        exitcode = crash_writer.kill_mid_fix(ctx, preset, rng, (PRESET_PPP,))
        content = preset.read_bytes()
        assert content in versions, "a killed fix left a partial or mixed preset"
        seen.add(content)
        temps = [p for p in preset.parent.iterdir() if is_companion_temp(p.name)]
        # A temp file left behind is never listed as a preset nor watched as one.
        assert [p.name for p in list_presets(st.user())] == ["Default.json"]
        for temp in temps:
            assert not SettingsWatcher._relevant(temp)
            temp.unlink()
        read_document(preset)
    assert exitcode == -9
    assert seen == versions  # the kills landed on both sides of the rename, so both outcomes were tested
    assert st.user().settings.read_bytes() == settings_before  # a preset fix never touches settings.json


# ---- full disk -------------------------------------------------------------------------------------------


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real tmpfs, later shrunk so the temp file of the next write does not fit: a real ENOSPC."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; tests/sillytavern covers ENOSPC by injection without it")
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=False, capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here: {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


async def _doctor(companion: Companion, method: str, path: str, **kwargs: Any) -> Any:
    call = companion.post if method == "POST" else companion.get
    resp = await call(path, **kwargs)
    assert resp.status == 200
    return await resp.json()


async def test_disk_full_while_fixing_a_preset_fails_cleanly(
    make_st_install: MakeSTInstall, start_companion: StartCompanion, small_tmpfs: Path
) -> None:
    st = make_st_install(
        users={
            "default-user": UserSpec(
                settings=nanogpt_settings("merge"), presets={"Default": nanogpt_preset("")}
            )
        },
        data_root=str(small_tmpfs),
    )
    preset = st.user().preset("Default")
    content = preset.read_bytes()
    settings_content = st.user().settings.read_bytes()
    companion = await start_companion(st)  # preset.ppp stays "ask": the fix below is the only write
    report = await _doctor(companion, "GET", "/api/doctor")  # token files written, first scan done
    [finding] = [f for f in report["findings"] if f["rule"] == "preset.ppp"]

    # Shrink the file system to what is used plus less than one preset: the temp file cannot be written.
    stat = os.statvfs(small_tmpfs)
    used_kb = (stat.f_blocks - stat.f_bfree) * stat.f_frsize // 1024
    assert len(content) > 4 * 1024  # tmpfs counts whole 4 KiB pages: the temp file needs two
    remount = ["mount", "-o", f"remount,size={used_kb + 4}k", str(small_tmpfs)]
    await asyncio.to_thread(subprocess.run, remount, check=True)

    body = await _doctor(companion, "POST", "/api/doctor/fix", json={"ids": [finding["id"]]})
    [result] = body["results"]
    assert result["status"] == "failed"
    assert "not enough disk space" in result["message"]
    assert preset.read_bytes() == content
    assert st.user().settings.read_bytes() == settings_content
    assert temps_in(preset.parent) == [] and temps_in(st.user().root) == []
    journal = await _doctor(companion, "GET", "/api/doctor/journal")
    assert journal_entries(journal) == []
    # The finding is still offered, so the user can fix it once there is room again.
    after = await _doctor(companion, "GET", "/api/doctor")
    assert after["error"] is None and finding["id"] in [f["id"] for f in after["findings"]]

    # And once there is room, the very same fix goes through.
    grow = ["mount", "-o", "remount,size=2m", str(small_tmpfs)]
    await asyncio.to_thread(subprocess.run, grow, check=True)
    body = await _doctor(companion, "POST", "/api/doctor/fix", json={"ids": [finding["id"]]})
    assert [r["status"] for r in body["results"]] == ["applied"]
    assert json.loads(preset.read_bytes())[PRESET_PPP] == "merge"
    assert preset.read_bytes() == content.replace(
        f'"{PRESET_PPP}": ""'.encode(), f'"{PRESET_PPP}": "merge"'.encode()
    )


def journal_entries(body: Any) -> list[Any]:
    return list(body["entries"] if isinstance(body, dict) else body)


def test_helpers_write_what_st_writes() -> None:
    # Guard for the byte comparisons above: the race writer's json.dumps layout is ST's own for these files.
    assert (
        preset_variant(SHIPPED_PRESET, 0) == dumps_st(json.loads(preset_variant(SHIPPED_PRESET, 0))).encode()
    )
    base = nanogpt_settings("merge")
    assert profile_variant(base, 1) == dumps_st(json.loads(profile_variant(base, 1))).encode()
    assert st_bytes(base) == dumps_st(base).encode()
