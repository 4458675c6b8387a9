"""The spend ledger on the real SQLite store: the migration of a database main wrote, and every query."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from nanogpt_companion.spend.ledger import SpendLedger
from nanogpt_companion.spend.records import BudgetAlert, Reading, SpendSettings
from nanogpt_companion.store import SCHEMA_VERSION, Store
from tests.fixtures import STORE_FIXTURES
from tests.spend.helpers import row


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[SpendLedger]:
    async with Store(tmp_path / "companion.sqlite3") as store:
        yield SpendLedger(store)


async def test_database_written_by_main_upgrades_and_keeps_everything(tmp_path: Path) -> None:
    path = tmp_path / "companion.sqlite3"
    shutil.copyfile(STORE_FIXTURES / "companion-v1.sqlite3", path)
    before = sqlite3.connect(path)
    assert before.execute("PRAGMA user_version").fetchone()[0] == 1
    old = {
        table: before.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall()
        for table in ("account_history", "catalog_snapshot", "fix_journal", "doctor_policy", "declined_fix")
    }
    before.close()
    async with Store(path) as store:
        assert await store.schema_version() == SCHEMA_VERSION == 4  # + key writes, spend, signatures
        assert await store.quick_check() == "ok"
        history = await store.account_history("default-user", 0)
        assert [(p.t, p.usd) for p in history] == [(1_790_000_000.0, 129.46956147), (1_790_000_300.0, 129.4)]
        assert (await store.journal_list("default-user"))[0].new_value == "merge"
        assert await store.get_policies("default-user") == {"context": "auto"}
        ledger = SpendLedger(store)
        stored, inserted = await ledger.add(row(user="default-user", ts=1_790_000_400.0))
        assert inserted and stored.id == 1
        assert [r.id for r in await ledger.rows("default-user", 0)] == [1]
    async with Store(path) as store:  # a second start migrates nothing and loses nothing
        assert await store.schema_version() == SCHEMA_VERSION
        assert len(await SpendLedger(store).rows("default-user", 0)) == 1
    after = sqlite3.connect(path)
    for table, rows in old.items():
        assert after.execute(f"SELECT * FROM {table} ORDER BY 1, 2").fetchall() == rows, table
    after.close()


async def test_rows_are_idempotent_per_user_and_client_id(ledger: SpendLedger) -> None:
    first = row(user="alice", ts=10.0)
    stored, inserted = await ledger.add(first)
    again, inserted_again = await ledger.add(first.settled(ts=99.0))
    assert inserted and not inserted_again and again.id == stored.id and again.ts == 10.0
    other_user, inserted_other = await ledger.add(first.settled(user="bob"))
    assert inserted_other and other_user.id != stored.id
    assert stored.generation == first.generation and stored.estimate == first.estimate


async def test_pending_update_rows_recent_and_purge(ledger: SpendLedger) -> None:
    rows = [(await ledger.add(row(user="alice", ts=float(t), chat=f"c{t % 2}")))[0] for t in range(1, 7)]
    await ledger.add(row(user="bob", ts=3.5))
    assert [r.id for r in await ledger.pending()] == [*(r.id for r in rows[:3]), 7, *(r.id for r in rows[3:])]
    measured = rows[0].settled(
        status="measured", measured_usd=0.25, approximate=True, shared_with=2, interval=9
    )
    await ledger.update([measured])
    assert (await ledger.rows("alice", 0))[0] == measured
    assert [r.ts for r in await ledger.pending("kfp")] == [2.0, 3.0, 3.5, 4.0, 5.0, 6.0]
    assert await ledger.pending("another-key") == []
    assert [r.ts for r in await ledger.rows("alice", 2.0, 5.0)] == [2.0, 3.0, 4.0]
    assert {r.generation.chat_id for r in await ledger.rows("alice", 0, chat_id="c1")} == {"c1"}
    page = await ledger.recent("alice", limit=4)
    assert [r.ts for r in page] == [6.0, 5.0, 4.0, 3.0]
    assert [r.ts for r in await ledger.recent("alice", limit=4, before_id=page[-1].id)] == [2.0, 1.0]
    assert await ledger.purge("alice", 3.0) == 1  # only the settled row; pending ones wait for a reading
    assert [r.ts for r in await ledger.rows("alice", 0)] == [2.0, 3.0, 4.0, 5.0, 6.0]
    assert await ledger.users() == ["alice", "bob"]


async def test_readings_settings_and_alerts(ledger: SpendLedger) -> None:
    assert await ledger.last_reading("k1") is None
    reading = Reading(ts=5.0, usd=1.5, bucket="weekly_input_tokens", used=10.0, reset_at=7, unit="tokens")
    await ledger.save_reading("k1", reading)
    await ledger.save_reading("k1", reading)
    assert await ledger.last_reading("k1") == reading
    assert await ledger.settings("alice") == SpendSettings()
    await ledger.save_settings("alice", SpendSettings(daily_budget_usd=2.0, timezone="Europe/Berlin"))
    assert (await ledger.settings("alice")).daily_budget_usd == 2.0
    assert await ledger.settings("bob") == SpendSettings()
    alert = BudgetAlert(id="budget_daily_80:2026-05-02:2", kind="budget_80", level="warning", message="m")
    assert await ledger.alert_add("alice", alert, 1.0)
    assert not await ledger.alert_add("alice", alert, 2.0)  # once per id
    quiet = BudgetAlert(id="budget_daily_80:2026-05-03:2", kind="budget_80", level="warning", message="q")
    assert await ledger.alert_add("alice", quiet, 3.0, seen=True)
    unseen = await ledger.alerts_unseen("alice")
    assert [a["id"] for a in unseen] == [alert.id] and unseen[0]["created_at"] == 1.0
    assert await ledger.alerts_unseen("bob") == []
    assert await ledger.alerts_mark_seen("alice", [alert.id, "nope"], 4.0) == 1
    assert await ledger.alerts_unseen("alice") == []
