"""The doctor's view of a user's Chat Completion presets: re-read only when changed, never too large.

Why a cache: every settings save triggers a scan, and scans used to re-read every preset each time
(three 59 MB presets took the service to 797 MB). A preset is read again only when its file state
(modification and change time, size, inode) differs from the last read.

Why a cap: ST's own presets are a few kilobytes (the shipped ``Default.json`` is about 12 KB; large
community presets a few hundred). A file far beyond that is not a preset ST wrote: it is reported as a
finding that says so, and never parsed.

What is kept: a preset's top-level scalar settings only (source, model, URL, Prompt Post-Processing,
inlining ...), which is what selecting the preset switches and all the rules look at. Prompt lists and
other nested values are dropped after parsing, so thousands of presets cost little memory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nanogpt_companion.doctor.finding import Finding, finding_id
from nanogpt_companion.sillytavern.dataroot import UserPaths
from nanogpt_companion.sillytavern.documents import read_document
from nanogpt_companion.sillytavern.errors import DocumentMissing, DocumentTooLarge, STDataError
from nanogpt_companion.sillytavern.presets import list_presets

log = logging.getLogger(__name__)

PRESET_MAX_BYTES = 1024 * 1024
Signature = tuple[int, int, int, int]


@dataclass(frozen=True)
class _Read:
    signature: Signature
    sha256: str | None = None
    data: Mapping[str, Any] | None = None
    problem: Finding | None = None


@dataclass(frozen=True)
class PresetView:
    """What the doctor needs of one user's presets."""

    data: dict[str, Mapping[str, Any]] = field(default_factory=dict)  # stem -> top-level scalar settings
    versions: dict[str, str] = field(default_factory=dict)  # stem -> content hash (or why unreadable)
    problems: list[Finding] = field(default_factory=list)  # presets that could not be checked


def _signature(path: Path) -> Signature | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)


def _scalars(data: Any) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        return {}
    return {k: v for k, v in data.items() if not isinstance(v, dict | list)}


def _problem(stem: str, exc: STDataError) -> Finding:
    too_large = isinstance(exc, DocumentTooLarge)
    if too_large:
        explanation = (
            f"{exc.reason}. SillyTavern's own Chat Completion presets are a few kilobytes, so the doctor "
            "does not read one this large (it would cost the service a lot of memory). What selecting it "
            "would switch is not checked. If you did not make it this big, it may be damaged."
        )
    else:
        explanation = f"{exc.reason}. What selecting this preset would switch is not checked."
    return Finding(
        id=finding_id("preset.ppp", f"preset:{stem}", (), extra="too_large" if too_large else "unreadable"),
        rule="preset.ppp",
        title=f'Chat Completion preset "{stem}" was not checked',
        explanation=explanation,
        severity="warning" if too_large else "info",
        target="preset",
        preset=stem,
        details={"reason": "too_large" if too_large else "unreadable"},
    )


class PresetReader:
    """Reads presets for the doctor, one cache per user. ``reads`` counts files actually read.

    Blocking: call ``read`` from a worker thread. One user is read by one thread at a time (the doctor
    holds that user's lock); different users never share an entry.
    """

    def __init__(self, *, max_bytes: int = PRESET_MAX_BYTES) -> None:
        self._max_bytes = max_bytes
        self._cache: dict[str, dict[str, _Read]] = {}
        self.reads = 0

    def read(self, paths: UserPaths) -> PresetView:
        before = self._cache.get(paths.handle, {})
        now: dict[str, _Read] = {}
        for path in list_presets(paths):
            signature = _signature(path)
            if signature is None:
                continue  # deleted since listed
            cached = before.get(path.stem)
            entry = cached if cached and cached.signature == signature else self._read(path, signature)
            if entry is not None:
                now[path.stem] = entry
        self._cache[paths.handle] = now
        view = PresetView()
        for stem, entry in now.items():
            if entry.problem is not None:
                view.problems.append(entry.problem)
                view.versions[stem] = entry.problem.id
            elif entry.data is not None and entry.sha256 is not None:
                view.data[stem] = entry.data
                view.versions[stem] = entry.sha256
        return view

    def _read(self, path: Path, signature: Signature) -> _Read | None:
        self.reads += 1
        try:
            doc = read_document(path, max_bytes=self._max_bytes)
        except DocumentMissing:
            return None  # deleted since it was listed
        except STDataError as exc:
            log.info("not checking preset %s: %s", path.name, exc.reason)
            return _Read(signature, problem=_problem(path.stem, exc))
        return _Read(signature, doc.sha256, _scalars(doc.data))
