"""The SQLite store on real files in a temp dir: every method, dedupe, migrations, corruption, SIGKILL."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from nanogpt_companion.store import (
    ALERT_KEEP_SECONDS,
    SCHEMA_VERSION,
    HistoryPoint,
    JournalEntry,
    Store,
    StoreError,
    default_db_path,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
async def store(tmp_path: Path):
    s = Store(tmp_path / "db" / "companion.sqlite3", catalog_keep=3, clock=lambda: 1234.0)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def _moved_aside(directory: Path) -> list[Path]:
    """Main files moved aside (their -wal/-shm companions are checked separately)."""
    return sorted(p for p in directory.glob("*.corrupt-*") if not p.name.endswith(("-wal", "-shm")))


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _read(path: Path) -> bytes:
    return path.read_bytes()


def _entry(user: str = "alice", **over: object) -> JournalEntry:
    base: dict[str, object] = {
        "user": user,
        "file": "settings",
        "key_path": ("oai_settings", "custom_prompt_post_processing"),
        "old_value": "",
        "new_value": "semi",
        "existed": True,
        "rule": "ppp",
        "finding_id": "ppp:abc123",
        "created_at": 100.0,
        "mode": "file",
    }
    base.update(over)
    return JournalEntry(**base)  # type: ignore[arg-type]


async def test_open_creates_parent_wal_and_schema(tmp_path: Path):
    path = tmp_path / "nested" / "dir" / "companion.sqlite3"
    async with Store(path) as s:
        assert s.path == path
        assert path.exists()
        assert await s.schema_version() == SCHEMA_VERSION
        assert await s.quick_check() == "ok"
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_all_calls_run_on_one_worker_thread(store: Store):
    seen: set[int] = set()

    async def probe() -> None:
        await store._call(lambda _conn: seen.add(threading.get_ident()))

    await asyncio.gather(*(probe() for _ in range(20)))
    assert len(seen) == 1
    assert threading.get_ident() not in seen


async def test_calls_after_close_raise(tmp_path: Path):
    s = Store(tmp_path / "x.sqlite3")
    await s.open()
    await s.close()
    await s.close()  # idempotent
    with pytest.raises(StoreError):
        await s.get_policies("alice")


@pytest.mark.skipif(sys.platform != "linux", reason="XDG_DATA_HOME is the Linux convention")
def test_default_db_path_is_under_user_data_dir_and_not_created(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    path = default_db_path()
    assert path == tmp_path / "xdg" / "nanogpt-companion" / "companion.sqlite3"
    assert not (tmp_path / "xdg").exists()


async def test_account_history_dedupes_and_filters(store: Store):
    q = {"weekly_input_tokens": 0.1}
    assert await store.record_account("alice", 10.0, 5.0, 1.0, q) is True
    assert await store.record_account("alice", 20.0, 5.0, 1.0, dict(q)) is False  # same values
    assert await store.record_account("alice", 30.0, 4.5, 1.0, q) is True  # usd changed
    assert await store.record_account("alice", 40.0, 4.5, 1.0, {"weekly_input_tokens": 0.2}) is True
    assert await store.record_account("alice", 50.0, 4.5, None, {"weekly_input_tokens": 0.2}) is True
    assert await store.record_account("alice", 60.0, 4.5, None, {"weekly_input_tokens": 0.2}) is False
    # another user's rows never dedupe against alice's
    assert await store.record_account("bob", 60.0, 4.5, None, {"weekly_input_tokens": 0.2}) is True

    points = await store.account_history("alice", 0.0)
    assert points == [
        HistoryPoint(10.0, 5.0, 1.0, {"weekly_input_tokens": 0.1}),
        HistoryPoint(30.0, 4.5, 1.0, {"weekly_input_tokens": 0.1}),
        HistoryPoint(40.0, 4.5, 1.0, {"weekly_input_tokens": 0.2}),
        HistoryPoint(50.0, 4.5, None, {"weekly_input_tokens": 0.2}),
    ]
    assert points[0].to_json() == {"t": 10.0, "usd": 5.0, "xno": 1.0, "quota": {"weekly_input_tokens": 0.1}}
    assert [p.t for p in await store.account_history("bob", 0.0)] == [60.0]
    assert await store.account_history("carol", 0.0) == []


async def test_account_history_window_starts_with_value_in_force(store: Store):
    await store.record_account("alice", 10.0, 5.0, None, {})
    await store.record_account("alice", 30.0, 4.0, None, {})
    # window opens at 20: the 5.0 seen at 10 was still in force, so it opens the chart at t=20
    assert await store.account_history("alice", 20.0) == [
        HistoryPoint(20.0, 5.0, None, {}),
        HistoryPoint(30.0, 4.0, None, {}),
    ]
    # nothing changed inside the window: still one point, the current value
    assert await store.account_history("alice", 100.0) == [HistoryPoint(100.0, 4.0, None, {})]
    # a row exactly at the window start needs no carried-in point
    assert [p.t for p in await store.account_history("alice", 30.0)] == [30.0]


async def test_catalog_snapshots_keep_last_n_per_key(store: Store):
    assert await store.last_catalog_snapshot("kA") is None
    for i in range(5):
        await store.save_catalog_snapshot("kA", float(i), f"payload-{i}".encode())
    await store.save_catalog_snapshot("kB", 9.0, b"other")
    assert await store.last_catalog_snapshot("kA") == (4.0, b"payload-4")
    assert await store.last_catalog_snapshot("kB") == (9.0, b"other")
    assert await store.catalog_snapshot_count("kA") == 3
    assert await store.catalog_snapshot_count("kB") == 1


async def test_journal_roundtrip_list_and_undo(store: Store):
    first = await store.journal_add(_entry())
    second = await store.journal_add(
        _entry(
            file="preset:Default",
            key_path=("prompts", 3, "content"),
            old_value=None,
            new_value={"a": [1, 2.5, None]},
            existed=False,
            mode="live",
            created_at=200.0,
        )
    )
    await store.journal_add(_entry(user="bob"))
    assert second > first

    got = await store.journal_get(second)
    assert got is not None
    assert got.id == second
    assert got.file == "preset:Default"
    assert got.key_path == ("prompts", 3, "content")
    assert got.old_value is None
    assert got.new_value == {"a": [1, 2.5, None]}
    assert got.existed is False
    assert got.mode == "live"
    assert got.created_at == 200.0
    assert got.undone_at is None
    assert await store.journal_get(99999) is None

    listed = await store.journal_list("alice", 10)
    assert [e.id for e in listed] == [second, first]  # newest first, bob's excluded
    assert [e.id for e in await store.journal_list("alice", 1)] == [second]

    assert await store.journal_mark_undone(first, 300.0) is True
    assert await store.journal_mark_undone(first, 400.0) is False  # no double undo
    assert await store.journal_mark_undone(12345, 400.0) is False
    undone = await store.journal_get(first)
    assert undone is not None
    assert undone.undone_at == 300.0
    assert undone.old_value == ""
    assert undone.existed is True


async def test_policies_per_user(store: Store):
    assert await store.get_policies("alice") == {}
    await store.set_policy("alice", "ppp", "auto")
    await store.set_policy("alice", "stream", "off")
    await store.set_policy("alice", "ppp", "ask")  # overwrite
    await store.set_policy("bob", "ppp", "off")
    assert await store.get_policies("alice") == {"ppp": "ask", "stream": "off"}
    assert await store.get_policies("bob") == {"ppp": "off"}


async def test_declined_fixes(store: Store):
    assert await store.declined("alice") == {}
    await store.decline("alice", "ppp:1", '"strict"')
    await store.decline("alice", "ppp:2", '"none"')
    await store.decline("alice", "ppp:1", '"merge"')  # the newer situation wins
    await store.decline("bob", "ppp:1", '"x"')
    assert await store.declined("alice") == {"ppp:1": '"merge"', "ppp:2": '"none"'}
    assert await store.clear_declined("alice", "ppp:1") is True
    assert await store.clear_declined("alice", "ppp:1") is False
    assert await store.declined("alice") == {"ppp:2": '"none"'}
    assert await store.declined("bob") == {"ppp:1": '"x"'}


async def test_reopen_keeps_data_and_migrations_are_idempotent(tmp_path: Path):
    path = tmp_path / "c.sqlite3"
    async with Store(path) as s:
        await s.set_policy("alice", "ppp", "auto")
        jid = await s.journal_add(_entry())
    for _ in range(2):
        async with Store(path) as s:
            assert await s.schema_version() == SCHEMA_VERSION
            assert await s.get_policies("alice") == {"ppp": "auto"}
            assert (await s.journal_get(jid)) is not None

    # a crash between creating tables and bumping the version must not break the next open
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA user_version = 0")
    async with Store(path) as s:
        assert await s.schema_version() == SCHEMA_VERSION
        assert await s.get_policies("alice") == {"ppp": "auto"}


async def test_newer_schema_is_refused_not_destroyed(tmp_path: Path):
    path = tmp_path / "c.sqlite3"
    with sqlite3.connect(path) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    s = Store(path)
    with pytest.raises(StoreError, match="newer"):
        await s.open()
    assert not s.is_open
    assert _moved_aside(tmp_path) == []


async def test_garbage_file_is_moved_aside_and_rebuilt(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    path = tmp_path / "companion.sqlite3"
    garbage = b"this is not a database, just some bytes " * 200
    _write(path, garbage)
    _write(Path(str(path) + "-wal"), b"junk wal")
    caplog.set_level(logging.WARNING, logger="nanogpt_companion.store")

    async with Store(path) as s:
        assert await s.quick_check() == "ok"
        assert await s.schema_version() == SCHEMA_VERSION
        assert await s.record_account("alice", 1.0, 2.0, None, {}) is True

    moved = _moved_aside(tmp_path)
    assert len(moved) == 1
    assert _read(moved[0]) == garbage
    assert _read(Path(str(moved[0]) + "-wal")) == b"junk wal"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert str(moved[0]) in warnings[0].getMessage()
    assert str(path) in warnings[0].getMessage()


async def test_damaged_pages_fail_quick_check_and_are_moved_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    path = tmp_path / "companion.sqlite3"
    async with Store(path) as s:
        for i in range(300):
            await s.record_account("alice", float(i), float(i), None, {"weekly_input_tokens": i / 1000})
    with sqlite3.connect(path) as raw:  # fold the WAL into the main file so the damage below is what is read
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(_read(path))
    page = int.from_bytes(data[16:18], "big")
    assert len(data) > 4 * page
    data[2 * page : 4 * page] = b"\xa5" * (2 * page)  # keep the header valid, wreck interior pages
    _write(path, bytes(data))
    caplog.set_level(logging.WARNING, logger="nanogpt_companion.store")

    async with Store(path) as s:
        assert await s.quick_check() == "ok"
        assert await s.account_history("alice", 0.0) == []
    assert len(_moved_aside(tmp_path)) == 1
    assert any("moved it to" in r.getMessage() for r in caplog.records)


_WRITER = """
import asyncio, sys
from pathlib import Path
from nanogpt_companion.store import Store

async def main() -> None:
    async with Store(Path(sys.argv[1])) as s:
        i = 0
        while True:
            i += 1
            await s.record_account("alice", float(i), float(i), None, {"daily": i / 10})
            print(i, flush=True)

asyncio.run(main())
"""


def test_sigkill_mid_write_loses_no_committed_row(tmp_path: Path):
    path = tmp_path / "companion.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(REPO / "plugin")}
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)], stdout=subprocess.PIPE, env=env, text=True
    )
    assert proc.stdout is not None
    committed = 0
    try:
        for line in proc.stdout:
            committed = int(line)
            if committed >= 300:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert committed >= 300

    async def check() -> None:
        async with Store(path) as s:
            assert await s.quick_check() == "ok"
            points = await s.account_history("alice", 0.0)
            seen = {int(p.t) for p in points}
            assert set(range(1, committed + 1)) <= seen
            assert all(p.usd == p.t and p.quota == {"daily": p.t / 10} for p in points)

    asyncio.run(check())
    assert _moved_aside(tmp_path) == []


async def test_alerts_kept_until_seen_across_a_restart_once_per_id_and_pruned(tmp_path: Path):
    path = tmp_path / "c.sqlite3"
    body = {"id": "quota_80:weekly:1", "kind": "quota_80", "level": "warning", "message": "85% used"}
    async with Store(path) as s:
        assert await s.alert_add("alice", body["id"], body, 1000.0) is True
        assert await s.alert_add("alice", body["id"], body, 1001.0) is False  # once per id
    async with Store(path) as s:  # the service restarted before any tab opened
        unseen = await s.alerts_unseen("alice")
        assert unseen == [{**body, "created_at": 1000.0}]
        assert await s.alerts_unseen("bob") == []
        assert await s.alerts_mark_seen("alice", [body["id"], "no-such-id"], 1002.0) == 1
        assert await s.alerts_unseen("alice") == []
        assert await s.alert_add("alice", body["id"], body, 1003.0) is False  # seen is not forgotten
        # Three months on, the old rows go; a new alert is kept as usual.
        later = 1000.0 + ALERT_KEEP_SECONDS + 1
        fresh = {**body, "id": "low_balance:9"}
        assert await s.alert_add("alice", fresh["id"], fresh, later) is True
        assert await s.alerts_unseen("alice") == [{**fresh, "created_at": later}]
        assert await s.alert_add("alice", body["id"], body, later) is True  # its row was pruned
