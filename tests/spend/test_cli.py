"""``nanogpt-companion spend``: the summary, ``--json`` and ``--csv`` from the database, read-only."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from nanogpt_companion.spend.ledger import SpendLedger
from nanogpt_companion.spend.records import Generation, SpendSettings
from nanogpt_companion.store import Store
from tests.fixtures import STORE_FIXTURES
from tests.spend.helpers import row

REPO = Path(__file__).resolve().parents[2]


def spend_cli(state_dir: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NANOGPT")}
    return subprocess.run(
        [sys.executable, "-m", "nanogpt_companion", "spend", "--state-dir", str(state_dir), *args],
        capture_output=True,
        cwd=REPO,
        env=env,
        timeout=60,
        check=False,
    )


async def fill(state_dir: Path) -> None:
    now = time.time()
    async with Store(state_dir / "companion.sqlite3") as store:
        ledger = SpendLedger(store)
        await ledger.save_settings("alice", SpendSettings(daily_budget_usd=1.0, timezone="Europe/Berlin"))
        for i, (chat, usd) in enumerate(
            (("alice-chat-1", 0.25), ("alice-chat-2", 0.5), ("alice-chat-1", 0.25))
        ):
            generation = Generation(
                client_id=f"gen-{i:06d}",
                model="vendor/model",
                source="nanogpt",
                chat_id=chat,
                character="Ann",
            )
            await ledger.add(
                row(user="alice", ts=now - 3 + i, status="measured", measured_usd=usd).settled(
                    generation=generation
                )
            )
        await ledger.add(row(user="bob", ts=now - 1, chat="bob-chat", usd=0.125))  # pending: an estimate


def test_summary_json_and_csv_read_the_database_without_writing(tmp_path: Path) -> None:
    asyncio.run(fill(tmp_path))
    database = tmp_path / "companion.sqlite3"
    before = database.read_bytes()

    text = spend_cli(tmp_path)
    assert text.returncode == 0, text.stderr
    out = text.stdout.decode()
    assert "== alice (Europe/Berlin)" in out and "today       $1.0000" in out
    assert "daily budget  $1.00 of $1.00 (100%)" in out
    assert out.index("alice-chat-1") < out.index("alice-chat-2")  # $0.50 each, chat-1 first by name
    assert "== bob (UTC)" in out and "$0.1250 (estimated, approx.)" in out

    summary = json.loads(spend_cli(tmp_path, "--json", "--user", "alice").stdout)
    assert list(summary) == ["alice"]
    assert summary["alice"]["month"]["usd"] == 1.0 and summary["alice"]["month"]["generations"] == 3

    exported = spend_cli(tmp_path, "--csv", "--days", "1")
    assert exported.returncode == 0
    assert b"\r\n" in exported.stdout and b"\r\r\n" not in exported.stdout
    lines = list(csv.DictReader(io.StringIO(exported.stdout.decode())))
    assert [(line["user"], line["chat_id"]) for line in lines] == [
        ("alice", "alice-chat-1"),
        ("alice", "alice-chat-2"),
        ("alice", "alice-chat-1"),
        ("bob", "bob-chat"),
    ]
    assert lines[-1]["status"] == "pending" and lines[-1]["usd"] == "0.125"
    only_bob = spend_cli(tmp_path, "--csv", "--user", "bob").stdout.decode()
    assert "alice" not in only_bob and "bob-chat" in only_bob
    assert database.read_bytes() == before  # opened read-only: not a byte changed


def test_missing_or_old_database_is_said_plainly(tmp_path: Path) -> None:
    missing = spend_cli(tmp_path)
    assert missing.returncode == 1 and b"no spend recorded: no database at" in missing.stderr
    assert not (tmp_path / "companion.sqlite3").exists()  # never created by a report
    shutil.copyfile(STORE_FIXTURES / "companion-v1.sqlite3", tmp_path / "companion.sqlite3")
    before = (tmp_path / "companion.sqlite3").read_bytes()
    old = spend_cli(tmp_path, "--csv")
    assert old.returncode == 1 and b"the service has not run since the upgrade" in old.stderr
    assert (tmp_path / "companion.sqlite3").read_bytes() == before  # not migrated by a report
    bad = spend_cli(tmp_path, "--days", "0")
    assert bad.returncode == 2 and b"--days must be between" in bad.stderr
