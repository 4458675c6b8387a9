"""The ledger as CSV, for a spreadsheet: one line per row, times in the user's zone and as unix seconds.

Text that came from ST (chat ids, character names) may start with ``=``, ``+``, ``-`` or ``@``, which a
spreadsheet would run as a formula; such cells get a leading apostrophe (OWASP's CSV-injection advice).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable
from datetime import datetime
from zoneinfo import ZoneInfo

from nanogpt_companion.spend.records import SpendRow

COLUMNS = (
    "time",
    "ts",
    "user",
    "chat_id",
    "character",
    "group",
    "model",
    "source",
    "endpoint",
    "billing",
    "kind",
    "outcome",
    "message_id",
    "prompt_tokens",
    "completion_tokens",
    "channel",
    "status",
    "usd",
    "measured_usd",
    "estimate_usd",
    "per_request",
    "quota",
    "measured_quota",
    "estimate_quota",
    "quota_unit",
    "approximate",
    "shared_with",
    "note",
)
_TEXT = frozenset({"user", "chat_id", "character", "group", "model", "source", "endpoint", "kind", "note"})
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def to_csv(rows: Iterable[SpendRow], tz: ZoneInfo) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    for row in rows:
        data = row.to_json()
        data["time"] = datetime.fromtimestamp(row.ts, tz).isoformat(timespec="seconds")
        data["user"] = row.user
        writer.writerow([_cell(name, data.get(name)) for name in COLUMNS])
    return out.getvalue()


def _cell(name: str, value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.10f}".rstrip("0").rstrip(".") if value else "0"
    text = str(value)
    if name in _TEXT and text.startswith(_FORMULA_START):
        return "'" + text
    return text
