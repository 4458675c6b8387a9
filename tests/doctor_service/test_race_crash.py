"""Issue 3: a writer racing the real service, and the write path killed with SIGKILL mid-fix."""

from __future__ import annotations

import json
import multiprocessing
import random
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nanogpt_companion.sillytavern.dataroot import discover_users
from nanogpt_companion.sillytavern.documents import is_companion_temp, read_document
from nanogpt_companion.watcher import SettingsWatcher
from tests.doctor_service.conftest import nanogpt_settings, st_bytes
from tests.fakes import crash_writer
from tests.fakes.racing_st_writer import settings_variant as variant
from tests.fakes.service_fixtures import (
    RunningService,
    UpstreamThread,
    free_port,
    start_fake_upstream,
    start_service,
)
from tests.fakes.st_fixtures import STInstall, UserSpec, build_st_install

RACING_WRITER = Path(__file__).parents[1] / "fakes" / "racing_st_writer.py"
WRITES = 1000


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamThread]:
    thread = start_fake_upstream()
    try:
        yield thread
    finally:
        thread.stop()


def journal_count(service: RunningService, handle: str = "default-user") -> int:
    db = service.state_dir / "companion.sqlite3"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        row = conn.execute("SELECT COUNT(*) FROM fix_journal WHERE user = ?", (handle,)).fetchone()
    return int(row[0])


def wait_stable(path: Path, quiet: float = 1.0, within: float = 20.0) -> bytes:
    """The file's content once it has not changed for ``quiet`` seconds."""
    deadline = time.monotonic() + within
    last = path.read_bytes()
    since = time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = path.read_bytes()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return last
    raise AssertionError("the file never settled: a fix loop?")


def test_a_racing_writer_never_loses_its_last_write_and_fixes_do_not_loop(
    tmp_path: Path, upstream: UpstreamThread
) -> None:
    st_port = free_port()
    st = build_st_install(
        tmp_path, users={"default-user": UserSpec(settings=nanogpt_settings("merge"))}, port=st_port
    )
    settings = st.user().settings
    base = json.loads(settings.read_bytes())
    service = start_service(st, upstream, tmp_path / "state", st_port=st_port)
    try:
        writer = subprocess.Popen(
            [sys.executable, str(RACING_WRITER), "settings", str(settings), str(WRITES), "7"],
            stdout=subprocess.PIPE,
            text=True,
        )
        samples = 0
        while writer.poll() is None:
            json.loads(settings.read_bytes())  # every sample is a complete JSON document
            samples += 1
            time.sleep(0.001)
        out, _ = writer.communicate(timeout=60)
        assert writer.returncode == 0
        last = int(out.strip())
        assert samples > 50

        final = wait_stable(settings)
        written = variant(base, last)
        fixed = written.replace(
            b'"custom_prompt_post_processing": ""', b'"custom_prompt_post_processing": "merge"'
        )
        assert final in (written, fixed), "the writer's last save was lost or mangled"
        assert json.loads(final)["race_marker"] == last

        fixes = journal_count(service)
        broken_writes = sum(1 for i in range(WRITES) if i % 3 != 2)
        assert 1 <= fixes <= broken_writes
        # Quiet now: no further fixes without further writes (no loop on our own renames).
        time.sleep(1.0)
        assert journal_count(service) == fixes
        assert service.process.poll() is None
        assert "Traceback" not in service.log_text()
        leftovers = [p.name for p in settings.parent.iterdir() if is_companion_temp(p.name)]
        assert leftovers == []
    finally:
        service.stop()


def test_sigkill_mid_fix_leaves_the_old_or_the_new_file_never_a_mix(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["tests.fakes.crash_writer"])
    st: STInstall = build_st_install(
        tmp_path, users={"default-user": UserSpec(settings=nanogpt_settings(""))}
    )
    settings = st.user().settings
    versions = {st_bytes(nanogpt_settings("")), st_bytes(nanogpt_settings("merge"))}
    rng = random.Random(11)
    killed_with_temp = 0
    for _ in range(100):
        exitcode = crash_writer.kill_mid_fix(ctx, settings, rng)
        assert settings.read_bytes() in versions
        temps = [p for p in settings.parent.iterdir() if is_companion_temp(p.name)]
        killed_with_temp += bool(temps)
        # A temp file left behind is never taken for a user's settings or watched as one.
        assert [u.handle for u in discover_users(st.data_root)] == ["default-user"]
        for temp in temps:
            assert not SettingsWatcher._relevant(temp)
            temp.unlink()
        read_document(settings)
    assert exitcode == -9
