"""The spend ledger's SQL, on the companion's store (``Store.call`` runs it on the store's thread).

Rows are per user; every query filters by user, so one ST user never sees another's chats. Readings are
per key fingerprint (two users may share a key; the account's balance is the key's, not the user's).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, cast

import orjson

from nanogpt_companion.spend.records import (
    OUTSIDE_SOURCE,
    BudgetAlert,
    Channel,
    Estimate,
    Generation,
    QuotaUnit,
    Reading,
    SpendRow,
    SpendSettings,
    Status,
)
from nanogpt_companion.store import Store

_COLUMNS = (
    "id, user, client_id, key_fingerprint, ts, chat_id, character, character_id, group_id, group_name, "
    "model, source, endpoint, billing, kind, outcome, message_id, prompt_tokens, completion_tokens, "
    "channel, estimate_usd, estimate_quota, per_request, status, measured_usd, measured_quota, quota_unit, "
    "approximate, shared_with, interval, note, attempts"
)
_SETTLE_COLUMNS = (
    "channel",
    "status",
    "measured_usd",
    "measured_quota",
    "quota_unit",
    "approximate",
    "shared_with",
    "interval",
    "note",
    "attempts",
)
# What a new row is written with: what ST reported and the estimate, then the attribution fields an update
# rewrites (the same values ``_settle_values`` gives), so the two writes cannot disagree on them.
_REPORTED_COLUMNS = (
    "user, client_id, key_fingerprint, ts, chat_id, character, character_id, group_id, group_name, "
    "model, source, endpoint, billing, kind, outcome, message_id, prompt_tokens, completion_tokens, "
    "estimate_usd, estimate_quota, per_request"
)
_INSERT_COLUMNS = f"{_REPORTED_COLUMNS}, {', '.join(_SETTLE_COLUMNS)}"
_INSERT_COUNT = _INSERT_COLUMNS.count(",") + 1


def _row(r: Sequence[Any]) -> SpendRow:
    generation = Generation(
        client_id=str(r[2]),
        chat_id=r[5],
        character=r[6],
        character_id=r[7],
        group_id=r[8],
        group_name=r[9],
        model=str(r[10]),
        source=str(r[11]),
        endpoint=r[12],
        billing=r[13],
        kind=r[14],
        outcome=str(r[15]),
        message_id=r[16],
        prompt_tokens=r[17],
        completion_tokens=r[18],
    )
    return SpendRow(
        id=int(r[0]),
        user=str(r[1]),
        key_fingerprint=str(r[3]),
        ts=float(r[4]),
        generation=generation,
        channel=cast(Channel, r[19]),
        estimate=Estimate(usd=r[20], quota=r[21], per_request=bool(r[22])),
        status=cast(Status, r[23]),
        measured_usd=r[24],
        measured_quota=r[25],
        quota_unit=cast("QuotaUnit | None", r[26]),
        approximate=bool(r[27]),
        shared_with=int(r[28]),
        interval=r[29],
        note=r[30],
        attempts=int(r[31]),
    )


def _settle_values(row: SpendRow) -> tuple[Any, ...]:
    return (
        row.channel,
        row.status,
        row.measured_usd,
        row.measured_quota,
        row.quota_unit,
        int(row.approximate),
        row.shared_with,
        row.interval,
        row.note,
        row.attempts,
    )


class SpendLedger:
    def __init__(self, store: Store) -> None:
        self._store = store

    # ---- generations -----------------------------------------------------------------------------

    async def add(self, row: SpendRow) -> tuple[SpendRow, bool]:
        """Insert a row (its ``id`` is assigned here). A generation reported twice (same user and
        ``client_id``) is not inserted again: returns the stored row and False."""
        g = row.generation

        def run(conn: sqlite3.Connection) -> tuple[SpendRow, bool]:
            with conn:
                cur = conn.execute(
                    f"INSERT OR IGNORE INTO spend_generation ({_INSERT_COLUMNS}) "  # noqa: S608
                    f"VALUES ({', '.join('?' * _INSERT_COUNT)})",
                    (
                        row.user,
                        g.client_id,
                        row.key_fingerprint,
                        row.ts,
                        g.chat_id,
                        g.character,
                        g.character_id,
                        g.group_id,
                        g.group_name,
                        g.model,
                        g.source,
                        g.endpoint,
                        g.billing,
                        g.kind,
                        g.outcome,
                        g.message_id,
                        g.prompt_tokens,
                        g.completion_tokens,
                        row.estimate.usd,
                        row.estimate.quota,
                        int(row.estimate.per_request),
                        *_settle_values(row),
                    ),
                )
            inserted = cur.rowcount == 1
            stored = conn.execute(
                f"SELECT {_COLUMNS} FROM spend_generation WHERE user = ? AND client_id = ?",  # noqa: S608
                (row.user, g.client_id),
            ).fetchone()
            return _row(stored), inserted

        return await self._store.call(run)

    async def update(self, rows: Iterable[SpendRow]) -> None:
        """Write what attribution changed (status, measurements, flags) in one transaction."""
        values = [(*_settle_values(r), r.id) for r in rows]
        if not values:
            return
        assignments = ", ".join(f"{c} = ?" for c in _SETTLE_COLUMNS)

        def run(conn: sqlite3.Connection) -> None:
            with conn:
                conn.executemany(f"UPDATE spend_generation SET {assignments} WHERE id = ?", values)  # noqa: S608

        await self._store.call(run)

    async def pending(self, key_fingerprint: str | None = None) -> list[SpendRow]:
        """Unsettled rows, oldest first (of one key, or of every key)."""

        def run(conn: sqlite3.Connection) -> list[SpendRow]:
            if key_fingerprint is None:
                rows = conn.execute(
                    f"SELECT {_COLUMNS} FROM spend_generation WHERE status = 'pending' ORDER BY ts, id"  # noqa: S608
                ).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {_COLUMNS} FROM spend_generation "  # noqa: S608
                    "WHERE key_fingerprint = ? AND status = 'pending' ORDER BY ts, id",
                    (key_fingerprint,),
                ).fetchall()
            return [_row(r) for r in rows]

        return await self._store.call(run)

    async def rows(
        self, user: str, since: float, until: float | None = None, chat_id: str | None = None
    ) -> list[SpendRow]:
        """The user's rows with ``since <= ts < until``, oldest first."""
        query = f"SELECT {_COLUMNS} FROM spend_generation WHERE user = ? AND ts >= ?"  # noqa: S608
        params: list[Any] = [user, since]
        if until is not None:
            query += " AND ts < ?"
            params.append(until)
        if chat_id is not None:
            query += " AND chat_id = ?"
            params.append(chat_id)
        query += " ORDER BY ts, id"

        def run(conn: sqlite3.Connection) -> list[SpendRow]:
            return [_row(r) for r in conn.execute(query, params).fetchall()]

        return await self._store.call(run)

    async def recent(
        self, user: str, *, limit: int, chat_id: str | None = None, before_id: int | None = None
    ) -> list[SpendRow]:
        """The user's newest rows first (of one chat when given), ``limit`` at most."""
        query = f"SELECT {_COLUMNS} FROM spend_generation WHERE user = ?"  # noqa: S608
        params: list[Any] = [user]
        if chat_id is not None:
            query += " AND chat_id = ?"
            params.append(chat_id)
        if before_id is not None:
            query += " AND id < ?"
            params.append(before_id)
        query += " ORDER BY id DESC LIMIT ?"
        params.append(max(0, limit))

        def run(conn: sqlite3.Connection) -> list[SpendRow]:
            return [_row(r) for r in conn.execute(query, params).fetchall()]

        return await self._store.call(run)

    async def purge(self, user: str, before: float) -> int:
        """Delete the user's settled rows older than ``before`` (retention); returns how many."""

        def run(conn: sqlite3.Connection) -> int:
            with conn:
                cur = conn.execute(
                    "DELETE FROM spend_generation WHERE user = ? AND ts < ? AND status != 'pending'",
                    (user, before),
                )
            return cur.rowcount

        return await self._store.call(run)

    async def users(self) -> list[str]:
        """Every user with rows or settings."""

        def run(conn: sqlite3.Connection) -> list[str]:
            rows = conn.execute(
                "SELECT user FROM spend_generation UNION SELECT user FROM spend_settings ORDER BY 1"
            ).fetchall()
            return [str(r[0]) for r in rows]

        return await self._store.call(run)

    # ---- readings --------------------------------------------------------------------------------

    async def last_reading(self, key_fingerprint: str) -> Reading | None:
        def run(conn: sqlite3.Connection) -> Reading | None:
            row = conn.execute(
                "SELECT reading FROM spend_reading WHERE key_fingerprint = ?", (key_fingerprint,)
            ).fetchone()
            return None if row is None else Reading(**orjson.loads(row[0]))

        return await self._store.call(run)

    async def save_reading(self, key_fingerprint: str, reading: Reading) -> None:
        await self._upsert(
            "INSERT INTO spend_reading (key_fingerprint, reading) VALUES (?, ?) "
            "ON CONFLICT (key_fingerprint) DO UPDATE SET reading = excluded.reading",
            key_fingerprint,
            reading.to_json(),
        )

    async def _upsert(self, sql: str, key: str, value: dict[str, Any]) -> None:
        """One JSON document per key (a reading per key fingerprint, settings per user)."""
        payload = orjson.dumps(value).decode()

        def run(conn: sqlite3.Connection) -> None:
            with conn:
                conn.execute(sql, (key, payload))

        await self._store.call(run)

    # ---- settings --------------------------------------------------------------------------------

    async def settings(self, user: str) -> SpendSettings:
        def run(conn: sqlite3.Connection) -> SpendSettings:
            row = conn.execute("SELECT settings FROM spend_settings WHERE user = ?", (user,)).fetchone()
            if row is None:
                return SpendSettings()
            known = set(SpendSettings.__dataclass_fields__)
            stored = {k: v for k, v in orjson.loads(row[0]).items() if k in known}
            return SpendSettings(**stored)

        return await self._store.call(run)

    async def save_settings(self, user: str, settings: SpendSettings) -> None:
        await self._upsert(
            "INSERT INTO spend_settings (user, settings) VALUES (?, ?) "
            "ON CONFLICT (user) DO UPDATE SET settings = excluded.settings",
            user,
            settings.to_json(),
        )

    # ---- budget alerts ---------------------------------------------------------------------------

    async def alert_add(self, user: str, alert: BudgetAlert, ts: float, *, seen: bool = False) -> bool:
        """Keep a budget alert until a tab has shown it (``seen``: record it as shown already). False
        when this id was raised before: each alert id is raised once."""
        payload = orjson.dumps(alert.to_json()).decode()

        def run(conn: sqlite3.Connection) -> bool:
            with conn:
                cur = conn.execute(
                    "INSERT OR IGNORE INTO spend_alert (user, id, body, created_at, seen_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (user, alert.id, payload, ts, ts if seen else None),
                )
            return cur.rowcount == 1

        return await self._store.call(run)

    async def alerts_unseen(self, user: str) -> list[dict[str, Any]]:
        def run(conn: sqlite3.Connection) -> list[dict[str, Any]]:
            rows = conn.execute(
                "SELECT body, created_at FROM spend_alert WHERE user = ? AND seen_at IS NULL "
                "ORDER BY created_at, id LIMIT 50",
                (user,),
            ).fetchall()
            return [{**orjson.loads(r[0]), "created_at": float(r[1])} for r in rows]

        return await self._store.call(run)

    async def alerts_mark_seen(self, user: str, alert_ids: Sequence[str], ts: float) -> int:
        def run(conn: sqlite3.Connection) -> int:
            with conn:
                cur = conn.executemany(
                    "UPDATE spend_alert SET seen_at = ? WHERE user = ? AND id = ? AND seen_at IS NULL",
                    [(ts, user, alert_id) for alert_id in alert_ids],
                )
            return max(0, cur.rowcount)

        return await self._store.call(run)


def outside_generation(interval: int, channel: Channel) -> Generation:
    """The generation record of an ``outside`` row (nothing ST reported: no chat, no model)."""
    return Generation(
        client_id=f"outside:{interval}:{channel}", model="", source=OUTSIDE_SOURCE, kind="outside"
    )
