"""Reading ST's JSON files and replacing files atomically.

ST writes with ``write-file-atomic`` (temp file + rename), so a reader normally sees either the old or
the new file. Other tools (editors, sync clients, a user's script) do not, hence the short retry on a
parse failure before the file is declared unreadable. The write side mirrors ST: temp file in the same
directory, fsync, rename, fsync the directory, so a crash at any point leaves the old or the new file.
"""

from __future__ import annotations

import asyncio
import errno as errno_mod
import hashlib
import json
import logging
import os
import secrets
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConcurrentModification, DocumentMissing, DocumentTooLarge, DocumentUnreadable, WriteFailed
from .stjson import loads_fast

logger = logging.getLogger(__name__)

MAX_DOCUMENT_BYTES = 64 * 1024 * 1024
DEFAULT_ATTEMPTS = 5
# 0.05 + 0.1 + 0.15 + 0.2 = 0.5 s in total: long enough for a slow non-atomic writer to finish a
# settings-sized file, short enough that a genuinely broken file is reported promptly.
DEFAULT_BACKOFF = 0.05

# Temp files carry this marker so watchers (ours and the user's) can ignore them; they start with a dot
# so ST's own directory listings (presets, themes ...) skip them too.
TEMP_MARKER = ".nanogpt-companion."
TEMP_SUFFIX = ".tmp"

FaultHook = Callable[[str], None]
"""Called with a stage name ("tmp_written", "before_replace") during a write; tests use it to inject
faults at exact points, production passes nothing."""


def is_companion_temp(name: str) -> bool:
    return name.startswith(".") and TEMP_MARKER in name and name.endswith(TEMP_SUFFIX)


@dataclass(frozen=True)
class Document:
    """One JSON file as read: the bytes are kept so a later write can compare-and-swap on their hash and
    splice into the exact original text."""

    path: Path
    raw: bytes = field(repr=False)
    sha256: str
    data: Any = field(repr=False)

    @property
    def text(self) -> str:
        return self.raw.decode("utf-8")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _read_bytes(path: Path, max_bytes: int) -> bytes:
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > max_bytes:
                raise DocumentTooLarge(
                    path,
                    f"{path.name} is {size / 1_048_576:.1f} MB, more than the {max_bytes / 1_048_576:.0f} MB "
                    "limit; it was not read",
                )
            # Read one byte past the cap: the file may have grown since fstat.
            raw = fh.read(max_bytes + 1)
    except FileNotFoundError:
        raise DocumentMissing(path) from None
    except IsADirectoryError:
        raise DocumentUnreadable(path, f"{path.name} is a folder, not a file") from None
    except PermissionError:
        raise DocumentUnreadable(path, f"{path.name} cannot be read: permission denied") from None
    except OSError as exc:
        raise DocumentUnreadable(path, f"{path.name} cannot be read: {exc.strerror or exc}") from None
    if len(raw) > max_bytes:
        raise DocumentTooLarge(path, f"{path.name} is larger than the {max_bytes / 1_048_576:.0f} MB limit")
    return raw


def parse_document_bytes(path: Path, raw: bytes) -> Any:
    """Parse or raise ``DocumentUnreadable`` with a reason that points at the problem, not the content."""
    if not raw.strip():
        raise DocumentUnreadable(path, f"{path.name} is empty")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DocumentUnreadable(
            path, f"{path.name} is not valid UTF-8 text (byte {exc.start} of {len(raw)})"
        ) from None
    try:
        return loads_fast(raw)
    except json.JSONDecodeError as exc:
        unterminated = exc.msg.startswith("Unterminated string")
        msg = "Unterminated string starting here" if unterminated else exc.msg
        cut_off = unterminated or exc.pos >= len(text.rstrip())
        hint = " (the file looks cut off)" if cut_off else ""
        raise DocumentUnreadable(
            path, f"{path.name} is not valid JSON (line {exc.lineno}, column {exc.colno}): {msg}{hint}"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise DocumentUnreadable(path, f"{path.name} is not valid JSON: {exc}") from None


def read_document(
    path: Path,
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    backoff: float = DEFAULT_BACKOFF,
    max_bytes: int = MAX_DOCUMENT_BYTES,
    sleep: Callable[[float], None] = time.sleep,
) -> Document:
    """Read and parse a JSON file, retrying a parse failure (a writer may be half-way) with growing pauses.

    A missing or oversized file is reported at once: waiting would not change either. ``sleep`` is the
    pause between attempts (injectable so tests can change the file at a known point).
    """
    path = Path(path)
    last: DocumentUnreadable | None = None
    for attempt in range(max(1, attempts)):
        if attempt:
            sleep(backoff * attempt)
        raw = _read_bytes(path, max_bytes)
        try:
            data = parse_document_bytes(path, raw)
        except DocumentUnreadable as exc:
            last = exc
            logger.debug("read of %s failed (attempt %d/%d): %s", path, attempt + 1, attempts, exc.reason)
            continue
        return Document(path=path, raw=raw, sha256=sha256_hex(raw), data=data)
    assert last is not None
    raise last


async def read_document_async(path: Path, **kwargs: Any) -> Document:
    """``read_document`` off the event loop (it blocks on I/O and on the retry pauses)."""
    return await asyncio.to_thread(read_document, path, **kwargs)


def _write_failed(path: Path, exc: OSError) -> WriteFailed:
    name, folder = path.name, path.parent
    code = exc.errno
    if code == errno_mod.ENOSPC:
        reason = f"there is not enough disk space to save {name}"
    elif code == errno_mod.EDQUOT:
        reason = f"the disk quota is exceeded; {name} could not be saved"
    elif code == errno_mod.EROFS:
        reason = f"{folder} is on a read-only file system; {name} could not be saved"
    elif code in (errno_mod.EACCES, errno_mod.EPERM):
        reason = f"permission denied saving {name} in {folder}"
    else:
        reason = f"{name} could not be saved: {exc.strerror or exc.__class__.__name__}"
    return WriteFailed(path, reason + "; the file was left unchanged", code)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems refuse fsync on directories; the rename itself is done
        logger.debug("fsync of directory %s failed: %s", directory, exc.strerror)
    finally:
        os.close(fd)


def _temp_path(target: Path) -> Path:
    return target.with_name(f".{target.name}{TEMP_MARKER}{secrets.token_hex(6)}{TEMP_SUFFIX}")


def replace_file_atomic(
    path: Path,
    data: bytes,
    *,
    expected_sha256: str | None,
    mode: int | None = None,
    follow_symlinks: bool = True,
    respect_read_only: bool = True,
    fault_hook: FaultHook | None = None,
) -> None:
    """Replace ``path`` with ``data`` so that any crash leaves the old or the new content, never a mix.

    ``expected_sha256``: compare-and-swap. The file is re-read right before the rename and nothing is
    written when it no longer has this hash (the window left is the few microseconds between that read
    and ``rename``; without a lock shared with ST it cannot be closed, only made small).
    ``mode``: permission bits for the new file; default keeps the existing file's bits.
    ``respect_read_only``: a file or folder without the owner's write bit is treated as a user's "do not
    touch", even when we run as root and the OS would let us.
    """
    target = Path(os.path.realpath(path)) if follow_symlinks else Path(os.path.abspath(path))
    directory = target.parent
    try:
        existing = os.stat(target, follow_symlinks=False)
    except FileNotFoundError:
        existing = None
    except OSError as exc:
        raise _write_failed(target, exc) from None
    if expected_sha256 is not None and existing is None:
        raise ConcurrentModification(target)
    if respect_read_only:
        if existing is not None and stat.S_ISREG(existing.st_mode) and not existing.st_mode & stat.S_IWUSR:
            raise WriteFailed(target, f"{target.name} is read-only; it was left unchanged", errno_mod.EACCES)
        try:
            dir_mode = os.stat(directory).st_mode
        except OSError as exc:
            raise _write_failed(target, exc) from None
        if not dir_mode & stat.S_IWUSR:
            raise WriteFailed(
                target,
                f"the folder {directory} is read-only; {target.name} was left unchanged",
                errno_mod.EACCES,
            )
    if mode is None:
        keep = existing is not None and stat.S_ISREG(existing.st_mode)
        mode = stat.S_IMODE(existing.st_mode) if existing is not None and keep else 0o644

    tmp = _temp_path(target)
    created = False
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
        created = True
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fchmod(fd, mode)
            if existing is not None and os.geteuid() == 0 and existing.st_uid != 0:
                # Running as root for a user's ST: the replacement must stay theirs, or ST (running as
                # that user) could no longer rewrite its own settings.
                os.fchown(fd, existing.st_uid, existing.st_gid)
            os.fsync(fd)
        finally:
            os.close(fd)
        if fault_hook is not None:
            fault_hook("tmp_written")
        if expected_sha256 is not None:
            try:
                with open(target, "rb") as fh:
                    current = sha256_hex(fh.read())
            except FileNotFoundError:
                raise ConcurrentModification(target) from None
            if current != expected_sha256:
                raise ConcurrentModification(target)
        if fault_hook is not None:
            fault_hook("before_replace")
        os.replace(tmp, target)
        created = False
    except OSError as exc:
        raise _write_failed(target, exc) from None
    finally:
        if created:
            try:
                os.unlink(tmp)
            except OSError as exc:
                logger.warning("could not remove temp file %s: %s", tmp, exc.strerror)
    _fsync_dir(directory)


def write_new_file_atomic(path: Path, data: bytes, mode: int = 0o600) -> None:
    """Atomically write one of our own files (e.g. the token file) with exact permission bits.

    A symlink at ``path`` is replaced, not followed: our files are never meant to point elsewhere, and
    following one would let a planted link redirect the write.
    """
    replace_file_atomic(
        path, data, expected_sha256=None, mode=mode, follow_symlinks=False, respect_read_only=False
    )
