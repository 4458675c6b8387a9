"""Per-model-family Prompt Post-Processing overrides: a small, sourced data table users can extend.

Some model families ship chat templates that reject ST's default message layout (consecutive same-role
turns, system messages mid-chat). Which families those are changes faster than releases, so the list is
data (``data/ppp_families.json``) and a user can add or replace entries with their own JSON file.
Loading reads files; matching (``FamilyTable.match``) is pure and is what the rules call.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

logger = logging.getLogger(__name__)

# Base values only: the rules add the `_tools` variant when function calling is on and ST knows it.
FamilyPPP = Literal["merge", "semi", "strict", "single"]


class FamilyEntry(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    id: str = Field(min_length=1)
    pattern: str = Field(min_length=1)  # regular expression, searched case-insensitively in the model id
    ppp: FamilyPPP
    reason: str = Field(min_length=1)  # shown to the user: why this family needs this value
    source: str | None = None

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value


class FamilyFile(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", defer_build=True)

    version: Literal[1] = 1
    families: list[FamilyEntry]


class FamilyTableError(ValueError):
    """A family table file could not be used; the message names the file and what is wrong."""


@dataclass(frozen=True)
class FamilyMatch:
    entry: FamilyEntry
    origin: Literal["builtin", "user"]


@dataclass(frozen=True)
class FamilyTable:
    """Entries in match order: user entries first, so a user can override a built-in for a sub-family."""

    entries: tuple[FamilyMatch, ...] = ()

    def match(self, model_id: str) -> FamilyMatch | None:
        for candidate in self.entries:
            if re.search(candidate.entry.pattern, model_id, flags=re.IGNORECASE):
                return candidate
        return None


def _parse(raw: bytes, where: str) -> FamilyFile:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise FamilyTableError(f"{where} is not valid JSON: {exc}") from exc
    try:
        return FamilyFile.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or '(top level)'}: {error['msg']}"
            for error in exc.errors()
        )
        raise FamilyTableError(f"{where} is not a valid model-family table: {problems}") from exc


def _check_unique(parsed: FamilyFile, where: str) -> None:
    # Duplicate ids inside one file would make "replace by id" ambiguous.
    seen: set[str] = set()
    for entry in parsed.families:
        if entry.id in seen:
            raise FamilyTableError(f"{where} lists the family id {entry.id!r} twice")
        seen.add(entry.id)


def builtin_family_table() -> FamilyTable:
    raw = resources.files("nanogpt_companion.doctor").joinpath("data/ppp_families.json").read_bytes()
    parsed = _parse(raw, "built-in ppp_families.json")
    _check_unique(parsed, "built-in ppp_families.json")
    return FamilyTable(tuple(FamilyMatch(entry, "builtin") for entry in parsed.families))


def merge_family_tables(builtin: FamilyTable, user_entries: list[FamilyEntry]) -> FamilyTable:
    """User entries replace built-ins with the same id and are tried before the remaining built-ins."""
    user_ids = {entry.id for entry in user_entries}
    merged = [FamilyMatch(entry, "user") for entry in user_entries]
    merged.extend(match for match in builtin.entries if match.entry.id not in user_ids)
    return FamilyTable(tuple(merged))


def load_family_table(extra: Path | None = None) -> FamilyTable:
    """The built-in table, extended by the user's file ``extra`` (same format) when given.

    Raises FamilyTableError for a missing, unreadable or invalid user file: silently ignoring a user's
    override would make the doctor contradict what they configured.
    """
    builtin = builtin_family_table()
    if extra is None:
        return builtin
    try:
        raw = extra.read_bytes()
    except OSError as exc:
        raise FamilyTableError(f"cannot read model-family table {extra}: {exc.strerror or exc}") from exc
    parsed = _parse(raw, str(extra))
    _check_unique(parsed, str(extra))
    table = merge_family_tables(builtin, parsed.families)
    logger.info("model-family table: %d user entries from %s", len(parsed.families), extra)
    return table
