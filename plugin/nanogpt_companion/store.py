"""The companion's embedded SQLite store: account history, catalogue snapshots, the fix journal, doctor
policies, declined fixes and the spend ledger (its queries live in ``spend/ledger.py``, on ``call``).

Why it is shaped this way:
- Users leave the service running for weeks and it can be killed at any moment, so the database runs in
  WAL mode with ``synchronous=NORMAL``: a committed transaction survives a process kill (only an OS crash
  may lose the last few), and readers never block the writer.
- ``sqlite3`` is blocking. Every call runs on one dedicated worker thread that owns the only connection, so
  the event loop never waits on disk and the connection is never shared across threads (which SQLite's
  Python binding forbids by default for good reason).
- A database that is not a database, or fails ``PRAGMA quick_check``, holds nothing worth crashing over
  (history and snapshots can be rebuilt; the journal is a convenience). It is moved aside, never deleted,
  so a user can still inspect it, and the service starts with a fresh file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

import orjson

from nanogpt_companion.config import user_data_dir

log = logging.getLogger(__name__)

T = TypeVar("T")

APP_DIR_NAME = "nanogpt-companion"
DB_FILE_NAME = "companion.sqlite3"
DEFAULT_CATALOG_KEEP = 5
CACHE_KIB = 256

JournalMode = Literal["file", "live"]


def default_db_path() -> Path:
    """Where the database lives unless configured: the platform's per-user data directory.

    Nothing is created here (callers may only want to print the path); ``Store.open`` creates the parent.
    """
    return user_data_dir(APP_DIR_NAME) / DB_FILE_NAME


class StoreError(Exception):
    """The store cannot serve a call (closed, or a database from a newer version of the companion)."""


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    """One balance/quota observation. Field names are the ``/api/account/history`` JSON contract."""

    t: float
    usd: float | None
    xno: float | None
    quota: dict[str, float] = field(default_factory=dict)  # bucket name -> fraction used

    def to_json(self) -> dict[str, Any]:
        return {"t": self.t, "usd": self.usd, "xno": self.xno, "quota": dict(self.quota)}


@dataclass(frozen=True, slots=True)
class JournalEntry:
    """One applied patch operation, with what is needed to put the old value back.

    ``file`` is ``"settings"`` or ``"preset:<stem>"``. ``existed`` False means the key was absent before
    the fix, so undo removes it rather than writing ``old_value`` (which is then ``None``).
    ``id`` and ``undone_at`` are filled in by the store; leave them unset when adding.
    """

    user: str
    file: str
    key_path: tuple[str | int, ...]
    old_value: Any
    new_value: Any
    existed: bool
    rule: str
    finding_id: str
    created_at: float
    mode: JournalMode
    id: int | None = None
    undone_at: float | None = None


@dataclass(frozen=True, slots=True)
class KeyWrite:
    """One key copied into an ST key slot by the endpoint switch; ``change`` is what undo needs."""

    id: int
    user: str
    slot: str
    change: dict[str, Any]
    created_at: float
    undone_at: float | None = None


# Each migration moves the schema from version N-1 to N (N = its 1-based position) in one transaction
# together with ``PRAGMA user_version``, so a crash mid-migration leaves the previous version intact.
# ``IF NOT EXISTS`` keeps a re-run harmless. Append new migrations; never edit a released one.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE IF NOT EXISTS account_history (
        id INTEGER PRIMARY KEY,
        user TEXT NOT NULL,
        ts REAL NOT NULL,
        usd REAL,
        xno REAL,
        quota TEXT NOT NULL
    );
    CREATE INDEX IF NOT EXISTS account_history_user_ts ON account_history (user, ts);

    CREATE TABLE IF NOT EXISTS catalog_snapshot (
        id INTEGER PRIMARY KEY,
        key_fingerprint TEXT NOT NULL,
        fetched_at REAL NOT NULL,
        payload BLOB NOT NULL
    );
    CREATE INDEX IF NOT EXISTS catalog_snapshot_key ON catalog_snapshot (key_fingerprint, id);

    CREATE TABLE IF NOT EXISTS fix_journal (
        id INTEGER PRIMARY KEY,
        user TEXT NOT NULL,
        file TEXT NOT NULL,
        key_path TEXT NOT NULL,
        old_value TEXT NOT NULL,
        new_value TEXT NOT NULL,
        existed INTEGER NOT NULL,
        rule TEXT NOT NULL,
        finding_id TEXT NOT NULL,
        created_at REAL NOT NULL,
        mode TEXT NOT NULL,
        undone_at REAL
    );
    CREATE INDEX IF NOT EXISTS fix_journal_user ON fix_journal (user, id);

    CREATE TABLE IF NOT EXISTS doctor_policy (
        user TEXT NOT NULL,
        rule TEXT NOT NULL,
        policy TEXT NOT NULL,
        PRIMARY KEY (user, rule)
    );

    CREATE TABLE IF NOT EXISTS declined_fix (
        user TEXT NOT NULL,
        finding_id TEXT NOT NULL,
        situation TEXT NOT NULL,
        declined_at REAL NOT NULL,
        PRIMARY KEY (user, finding_id)
    );
    """,
    # 2: the endpoint switch's key writes (ids and fingerprints only, never a key) and account alerts kept
    # until an ST tab has shown them.
    """
    CREATE TABLE IF NOT EXISTS key_write (
        id INTEGER PRIMARY KEY,
        user TEXT NOT NULL,
        slot TEXT NOT NULL,
        change TEXT NOT NULL,
        created_at REAL NOT NULL,
        undone_at REAL
    );
    CREATE INDEX IF NOT EXISTS key_write_user ON key_write (user, id);

    CREATE TABLE IF NOT EXISTS alert (
        user TEXT NOT NULL,
        id TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at REAL NOT NULL,
        seen_at REAL,
        PRIMARY KEY (user, id)
    );
    """,
    # 3: the spend ledger: one row per generation ST reported (and per change of the balance or quota
    # nothing reported explains), the last reading of each key's account, per-user budgets and settings,
    # and the budget alerts already raised (once each).
    """
    CREATE TABLE IF NOT EXISTS spend_generation (
        id INTEGER PRIMARY KEY,
        user TEXT NOT NULL,
        client_id TEXT NOT NULL,
        key_fingerprint TEXT NOT NULL,
        ts REAL NOT NULL,
        chat_id TEXT,
        character TEXT,
        character_id TEXT,
        group_id TEXT,
        group_name TEXT,
        model TEXT NOT NULL,
        source TEXT NOT NULL,
        endpoint TEXT,
        billing TEXT,
        kind TEXT,
        outcome TEXT NOT NULL,
        message_id INTEGER,
        prompt_tokens INTEGER,
        completion_tokens INTEGER,
        channel TEXT NOT NULL,
        estimate_usd REAL,
        estimate_quota REAL,
        per_request INTEGER NOT NULL DEFAULT 0,
        status TEXT NOT NULL,
        measured_usd REAL,
        measured_quota REAL,
        quota_unit TEXT,
        approximate INTEGER NOT NULL DEFAULT 0,
        shared_with INTEGER NOT NULL DEFAULT 0,
        interval INTEGER,
        note TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        UNIQUE (user, client_id)
    );
    CREATE INDEX IF NOT EXISTS spend_generation_user_ts ON spend_generation (user, ts);
    CREATE INDEX IF NOT EXISTS spend_generation_pending ON spend_generation (key_fingerprint, status);

    CREATE TABLE IF NOT EXISTS spend_reading (
        key_fingerprint TEXT PRIMARY KEY,
        reading TEXT NOT NULL
    );

    CREATE TABLE IF NOT EXISTS spend_settings (
        user TEXT PRIMARY KEY,
        settings TEXT NOT NULL
    );

    CREATE TABLE IF NOT EXISTS spend_alert (
        user TEXT NOT NULL,
        id TEXT NOT NULL,
        body TEXT NOT NULL,
        created_at REAL NOT NULL,
        seen_at REAL,
        PRIMARY KEY (user, id)
    );
    """,
    # 4: which reply signatures (the formatting doctor in the chat) each user's replies showed: a name and a
    # count, never text.
    """
    CREATE TABLE IF NOT EXISTS reply_signature (
        user TEXT NOT NULL,
        signature TEXT NOT NULL,
        count INTEGER NOT NULL,
        last_seen REAL NOT NULL,
        PRIMARY KEY (user, signature)
    );
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
# How long an alert is kept (shown or not); quota windows are a month at most.
ALERT_KEEP_SECONDS = 90 * 86_400

_JOURNAL_COLUMNS = (
    "id, user, file, key_path, old_value, new_value, existed, rule, finding_id, created_at, mode, undone_at"
)


def _dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


class Store:
    """Async facade over one SQLite file; see the module docstring for the threading and durability model."""

    def __init__(
        self,
        path: Path,
        *,
        catalog_keep: int = DEFAULT_CATALOG_KEEP,
        clock: Callable[[], float] | None = None,
        read_only: bool = False,
    ) -> None:
        """``read_only``: for commands that only report (``spend``): the file is opened as it is, never
        created, migrated or moved aside; a missing, damaged or too new file is a ``StoreError``."""
        self._path = Path(path)
        self._read_only = read_only
        self._catalog_keep = max(1, catalog_keep)
        self._clock = clock
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None  # touched only on the worker thread

    @property
    def path(self) -> Path:
        return self._path

    @property
    def is_open(self) -> bool:
        return self._executor is not None

    async def open(self) -> None:
        if self._executor is not None:
            return
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nanogpt-store")
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._open_sync)
        except BaseException:
            executor.shutdown(wait=True)
            raise
        self._executor = executor

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._close_sync)
        finally:
            executor.shutdown(wait=True)

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ---- account history -------------------------------------------------------------------------

    async def record_account(
        self, user: str, ts: float, usd: float | None, xno: float | None, quota: dict[str, float]
    ) -> bool:
        """Insert a history row unless it repeats the user's previous one. Returns whether it inserted.

        Rows only on change keep weeks of 5-minute polling down to the moments that matter for a chart.
        """
        quota_json = _dumps({str(k): float(v) for k, v in quota.items()})

        def run(conn: sqlite3.Connection) -> bool:
            last = conn.execute(
                "SELECT usd, xno, quota FROM account_history WHERE user = ? "
                "ORDER BY ts DESC, id DESC LIMIT 1",
                (user,),
            ).fetchone()
            if last is not None and (last[0], last[1], last[2]) == (usd, xno, quota_json):
                return False
            with conn:
                conn.execute(
                    "INSERT INTO account_history (user, ts, usd, xno, quota) VALUES (?, ?, ?, ?, ?)",
                    (user, ts, usd, xno, quota_json),
                )
            return True

        return await self._call(run)

    async def account_history(self, user: str, since_ts: float) -> list[HistoryPoint]:
        """Points at or after ``since_ts``, oldest first.

        Rows are written only on change, so the value in force when the window opens is usually older than
        the window. It is included as a first point re-dated to ``since_ts``; without it a balance that did
        not move all week would draw as an empty chart.
        """

        def run(conn: sqlite3.Connection) -> list[HistoryPoint]:
            before = conn.execute(
                "SELECT ts, usd, xno, quota FROM account_history WHERE user = ? AND ts < ? "
                "ORDER BY ts DESC, id DESC LIMIT 1",
                (user, since_ts),
            ).fetchone()
            rows = conn.execute(
                "SELECT ts, usd, xno, quota FROM account_history WHERE user = ? AND ts >= ? ORDER BY ts, id",
                (user, since_ts),
            ).fetchall()
            points = [HistoryPoint(r[0], r[1], r[2], orjson.loads(r[3])) for r in rows]
            if before is not None and (not points or points[0].t > since_ts):
                points.insert(0, HistoryPoint(since_ts, before[1], before[2], orjson.loads(before[3])))
            return points

        return await self._call(run)

    # ---- catalogue snapshots ---------------------------------------------------------------------

    async def save_catalog_snapshot(self, key_fingerprint: str, fetched_at: float, payload: bytes) -> None:
        """Keep a snapshot for diffing and cold starts; only the newest ``catalog_keep`` per key survive."""
        keep = self._catalog_keep

        def run(conn: sqlite3.Connection) -> None:
            with conn:
                conn.execute(
                    "INSERT INTO catalog_snapshot (key_fingerprint, fetched_at, payload) VALUES (?, ?, ?)",
                    (key_fingerprint, fetched_at, payload),
                )
                conn.execute(
                    "DELETE FROM catalog_snapshot WHERE key_fingerprint = ? AND id NOT IN ("
                    "SELECT id FROM catalog_snapshot WHERE key_fingerprint = ? ORDER BY id DESC LIMIT ?)",
                    (key_fingerprint, key_fingerprint, keep),
                )

        await self._call(run)

    async def last_catalog_snapshot(self, key_fingerprint: str) -> tuple[float, bytes] | None:
        def run(conn: sqlite3.Connection) -> tuple[float, bytes] | None:
            row = conn.execute(
                "SELECT fetched_at, payload FROM catalog_snapshot WHERE key_fingerprint = ? "
                "ORDER BY id DESC LIMIT 1",
                (key_fingerprint,),
            ).fetchone()
            return None if row is None else (float(row[0]), bytes(row[1]))

        return await self._call(run)

    async def catalog_snapshot_count(self, key_fingerprint: str) -> int:
        def run(conn: sqlite3.Connection) -> int:
            row = conn.execute(
                "SELECT COUNT(*) FROM catalog_snapshot WHERE key_fingerprint = ?", (key_fingerprint,)
            ).fetchone()
            return int(row[0])

        return await self._call(run)

    # ---- fix journal -----------------------------------------------------------------------------

    async def journal_add(self, entry: JournalEntry) -> int:
        """Record an applied fix; returns the journal id the undo route refers to."""
        params = (
            entry.user,
            entry.file,
            _dumps(list(entry.key_path)),
            _dumps(entry.old_value),
            _dumps(entry.new_value),
            int(entry.existed),
            entry.rule,
            entry.finding_id,
            entry.created_at,
            entry.mode,
        )

        def run(conn: sqlite3.Connection) -> int:
            with conn:
                cur = conn.execute(
                    "INSERT INTO fix_journal (user, file, key_path, old_value, new_value, existed, rule, "
                    "finding_id, created_at, mode) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    params,
                )
            if cur.lastrowid is None:  # pragma: no cover - sqlite always sets it after an INSERT
                raise StoreError("journal insert returned no id")
            return cur.lastrowid

        return await self._call(run)

    async def journal_get(self, journal_id: int) -> JournalEntry | None:
        def run(conn: sqlite3.Connection) -> JournalEntry | None:
            row = conn.execute(
                f"SELECT {_JOURNAL_COLUMNS} FROM fix_journal WHERE id = ?",  # noqa: S608 - constant columns
                (journal_id,),
            ).fetchone()
            return None if row is None else _journal_from_row(row)

        return await self._call(run)

    async def journal_list(self, user: str, limit: int = 50) -> list[JournalEntry]:
        """The user's most recent fixes, newest first."""

        def run(conn: sqlite3.Connection) -> list[JournalEntry]:
            rows = conn.execute(
                f"SELECT {_JOURNAL_COLUMNS} FROM fix_journal WHERE user = ? "  # noqa: S608 - constant columns
                "ORDER BY id DESC LIMIT ?",
                (user, max(0, limit)),
            ).fetchall()
            return [_journal_from_row(r) for r in rows]

        return await self._call(run)

    async def journal_mark_undone(self, journal_id: int, ts: float) -> bool:
        """Mark a fix as reverted. False when it does not exist or was already undone, so a double click
        on "undo" cannot revert twice."""

        def run(conn: sqlite3.Connection) -> bool:
            with conn:
                cur = conn.execute(
                    "UPDATE fix_journal SET undone_at = ? WHERE id = ? AND undone_at IS NULL",
                    (ts, journal_id),
                )
            return cur.rowcount == 1

        return await self._call(run)

    # ---- key writes (endpoint switch) ------------------------------------------------------------

    async def key_write_add(self, user: str, slot: str, change: dict[str, Any], ts: float) -> int:
        """Record a key copied into an ST key slot; ``change`` holds ids and fingerprints, never a key."""
        payload = _dumps(change)

        def run(conn: sqlite3.Connection) -> int:
            with conn:
                cur = conn.execute(
                    "INSERT INTO key_write (user, slot, change, created_at) VALUES (?, ?, ?, ?)",
                    (user, slot, payload, ts),
                )
            if cur.lastrowid is None:  # pragma: no cover - sqlite always sets it after an INSERT
                raise StoreError("key write insert returned no id")
            return cur.lastrowid

        return await self._call(run)

    async def key_write_get(self, user: str, write_id: int) -> KeyWrite | None:
        def run(conn: sqlite3.Connection) -> KeyWrite | None:
            row = conn.execute(
                "SELECT id, user, slot, change, created_at, undone_at FROM key_write "
                "WHERE id = ? AND user = ?",
                (write_id, user),
            ).fetchone()
            return None if row is None else _key_write_from_row(row)

        return await self._call(run)

    async def key_write_mark_undone(self, write_id: int, ts: float) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            with conn:
                cur = conn.execute(
                    "UPDATE key_write SET undone_at = ? WHERE id = ? AND undone_at IS NULL", (ts, write_id)
                )
            return cur.rowcount == 1

        return await self._call(run)

    # ---- alerts ----------------------------------------------------------------------------------

    async def alert_add(self, user: str, alert_id: str, body: dict[str, Any], ts: float) -> bool:
        """Keep an alert until a tab has shown it. False when this id was recorded before (once per id).

        Alerts older than ``ALERT_KEEP_SECONDS`` are dropped here, shown or not: their ids carry the quota
        window or the time they fired, so none of them can fire again, and news that old helps nobody.
        """
        payload = _dumps(body)

        def run(conn: sqlite3.Connection) -> bool:
            with conn:
                conn.execute(
                    "DELETE FROM alert WHERE user = ? AND created_at < ?", (user, ts - ALERT_KEEP_SECONDS)
                )
                cur = conn.execute(
                    "INSERT OR IGNORE INTO alert (user, id, body, created_at) VALUES (?, ?, ?, ?)",
                    (user, alert_id, payload, ts),
                )
            return cur.rowcount == 1

        return await self._call(run)

    async def alerts_unseen(self, user: str, limit: int = 50) -> list[dict[str, Any]]:
        """Alerts no tab has shown yet, oldest first."""

        def run(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                "SELECT body, created_at FROM alert WHERE user = ? AND seen_at IS NULL "
                "ORDER BY created_at, id LIMIT ?",
                (user, max(0, limit)),
            ).fetchall()
            return [{**orjson.loads(r[0]), "created_at": float(r[1])} for r in rows]

        return await self._call(run)

    async def alerts_mark_seen(self, user: str, alert_ids: list[str], ts: float) -> int:
        def run(conn: sqlite3.Connection) -> int:
            with conn:
                cur = conn.executemany(
                    "UPDATE alert SET seen_at = ? WHERE user = ? AND id = ? AND seen_at IS NULL",
                    [(ts, user, alert_id) for alert_id in alert_ids],
                )
            return max(0, cur.rowcount)

        return await self._call(run)

    # ---- doctor policies -------------------------------------------------------------------------

    async def get_policies(self, user: str) -> dict[str, str]:
        """Only the rules the user set explicitly; callers fall back to each rule's default policy."""

        def run(conn: sqlite3.Connection) -> dict[str, str]:
            rows = conn.execute("SELECT rule, policy FROM doctor_policy WHERE user = ?", (user,)).fetchall()
            return {str(r[0]): str(r[1]) for r in rows}

        return await self._call(run)

    async def set_policy(self, user: str, rule: str, policy: str) -> None:
        def run(conn: sqlite3.Connection) -> None:
            with conn:
                conn.execute(
                    "INSERT INTO doctor_policy (user, rule, policy) VALUES (?, ?, ?) "
                    "ON CONFLICT (user, rule) DO UPDATE SET policy = excluded.policy",
                    (user, rule, policy),
                )

        await self._call(run)

    # ---- declined fixes --------------------------------------------------------------------------

    async def decline(self, user: str, finding_id: str, situation: str) -> None:
        """Remember that the user said no to a fix, so the doctor stops applying it by itself.

        The doctor keys a decline on the setting's slot (``finding_id`` column) and stores the value the user
        kept as ``situation`` (doctor_policy.py); it ends once the setting holds another value.
        """
        ts = self._now()

        def run(conn: sqlite3.Connection) -> None:
            with conn:
                conn.execute(
                    "INSERT INTO declined_fix (user, finding_id, situation, declined_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (user, finding_id) DO UPDATE SET situation = excluded.situation, "
                    "declined_at = excluded.declined_at",
                    (user, finding_id, situation, ts),
                )

        await self._call(run)

    async def declined(self, user: str) -> dict[str, str]:
        def run(conn: sqlite3.Connection) -> dict[str, str]:
            rows = conn.execute(
                "SELECT finding_id, situation FROM declined_fix WHERE user = ?", (user,)
            ).fetchall()
            return {str(r[0]): str(r[1]) for r in rows}

        return await self._call(run)

    async def clear_declined(self, user: str, finding_id: str) -> bool:
        def run(conn: sqlite3.Connection) -> bool:
            with conn:
                cur = conn.execute(
                    "DELETE FROM declined_fix WHERE user = ? AND finding_id = ?", (user, finding_id)
                )
            return cur.rowcount > 0

        return await self._call(run)

    # ---- reply signatures (counts only, never text) ------------------------------------------------

    async def count_signature(self, user: str, signature: str) -> int:
        """One more reply showed ``signature``; returns how many have for this user."""
        now = self._now()

        def run(conn: sqlite3.Connection) -> int:
            with conn:
                conn.execute(
                    "INSERT INTO reply_signature (user, signature, count, last_seen) VALUES (?, ?, 1, ?) "
                    "ON CONFLICT (user, signature) DO UPDATE SET count = count + 1, "
                    "last_seen = excluded.last_seen",
                    (user, signature, now),
                )
                row = conn.execute(
                    "SELECT count FROM reply_signature WHERE user = ? AND signature = ?", (user, signature)
                ).fetchone()
            return int(row[0])

        return await self._call(run)

    async def signature_counts(self, user: str) -> dict[str, int]:
        def run(conn: sqlite3.Connection) -> dict[str, int]:
            rows = conn.execute("SELECT signature, count FROM reply_signature WHERE user = ?", (user,))
            return {str(name): int(count) for name, count in rows}

        return await self._call(run)

    # ---- maintenance -----------------------------------------------------------------------------

    async def schema_version(self) -> int:
        return await self._call(lambda conn: int(conn.execute("PRAGMA user_version").fetchone()[0]))

    async def quick_check(self) -> str:
        """``"ok"`` when SQLite finds the file sound; otherwise its first complaint."""
        return await self._call(lambda conn: str(conn.execute("PRAGMA quick_check").fetchone()[0]))

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the store's worker thread (for modules with their own tables, like the
        spend ledger); open transactions with ``with conn:`` as the methods here do."""
        return await self._call(fn)

    # ---- worker-thread internals -----------------------------------------------------------------

    def _now(self) -> float:
        if self._clock is not None:
            return self._clock()
        return datetime.now(UTC).timestamp()

    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        executor = self._executor
        if executor is None:
            raise StoreError("the store is not open")
        return await asyncio.get_running_loop().run_in_executor(executor, self._with_conn, fn)

    def _with_conn(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise StoreError("the store is not open")
        return fn(conn)

    def _open_sync(self) -> None:
        if self._read_only:
            self._conn = self._open_read_only()
            return
        self._path.parent.mkdir(parents=True, exist_ok=True)
        # Look at the header before SQLite does: opening a non-database lets SQLite discard the -wal beside
        # it, and whatever is in there should go aside with the main file untouched.
        if not _looks_like_sqlite(self._path):
            self._move_aside("file is not a database")
        try:
            conn = self._connect_and_check()
        except sqlite3.DatabaseError as exc:
            self._move_aside(str(exc))
            conn = self._connect_and_check()
        try:
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _open_read_only(self) -> sqlite3.Connection:
        if not self._path.is_file():
            raise StoreError(f"no database at {self._path}")
        conn = sqlite3.connect(f"{self._path.as_uri()}?mode=ro", uri=True, isolation_level=None, timeout=10.0)
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{self._path} has schema version {version}, newer than this companion understands "
                    f"({SCHEMA_VERSION})"
                )
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(f"{self._path} cannot be read: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect_and_check(self) -> sqlite3.Connection:
        # isolation_level=None: we open transactions ourselves (``with conn`` and migrations), so the module
        # never starts one behind our back around a PRAGMA or a read.
        conn = sqlite3.connect(self._path, isolation_level=None, timeout=10.0)
        try:
            conn.execute("PRAGMA journal_mode=WAL").fetchone()
            conn.execute("PRAGMA synchronous=NORMAL")
            # SQLite's default page cache is 2 MB per connection; our reads are small rows and one
            # compressed catalogue per key at start, so a quarter MB holds the hot pages of a sidecar.
            conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            conn.execute("PRAGMA foreign_keys=ON")
            result = conn.execute("PRAGMA quick_check").fetchone()
            if result is None or result[0] != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {result[0] if result else 'no result'}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _move_aside(self, reason: str) -> None:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        target = self._path.with_name(f"{self._path.name}.corrupt-{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = self._path.with_name(f"{self._path.name}.corrupt-{stamp}-{n}")
        self._path.replace(target)
        for suffix in ("-wal", "-shm"):
            side = self._path.with_name(self._path.name + suffix)
            if side.exists():
                side.replace(target.with_name(target.name + suffix))
        log.warning(
            "database %s is unreadable (%s); moved it to %s and started a fresh one",
            self._path,
            reason,
            target,
        )

    def _migrate(self, conn: sqlite3.Connection) -> None:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self._path} has schema version {version}, newer than this companion understands "
                f"({SCHEMA_VERSION}); upgrade the companion or point it at another database file"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            # executescript commits any open transaction first, so BEGIN..COMMIT inside it is the whole
            # migration; PRAGMA user_version is transactional and commits with it.
            conn.executescript(
                f"BEGIN IMMEDIATE;\n{MIGRATIONS[target - 1]}\nPRAGMA user_version = {target};\nCOMMIT;"
            )
            log.info("database %s migrated to schema version %d", self._path, target)

    def _close_sync(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("PRAGMA optimize")
            conn.close()


def _looks_like_sqlite(path: Path) -> bool:
    """True for a missing or empty file (SQLite initialises those) or one with SQLite's magic header."""
    try:
        with path.open("rb") as f:
            head = f.read(16)
    except FileNotFoundError:
        return True
    return head in (b"", b"SQLite format 3\x00")


def _key_write_from_row(row: tuple[Any, ...]) -> KeyWrite:
    return KeyWrite(
        id=int(row[0]),
        user=str(row[1]),
        slot=str(row[2]),
        change=orjson.loads(row[3]),
        created_at=float(row[4]),
        undone_at=None if row[5] is None else float(row[5]),
    )


def _journal_from_row(row: tuple[Any, ...]) -> JournalEntry:
    mode: JournalMode = "live" if row[10] == "live" else "file"
    return JournalEntry(
        id=int(row[0]),
        user=str(row[1]),
        file=str(row[2]),
        key_path=tuple(orjson.loads(row[3])),
        old_value=orjson.loads(row[4]),
        new_value=orjson.loads(row[5]),
        existed=bool(row[6]),
        rule=str(row[7]),
        finding_id=str(row[8]),
        created_at=float(row[9]),
        mode=mode,
        undone_at=None if row[11] is None else float(row[11]),
    )
