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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .confine import confined
from .errors import ConcurrentModification, DocumentMissing, DocumentTooLarge, DocumentUnreadable, WriteFailed
from .stjson import loads_fast
from .swap import QUIET_PERIOD, ExchangeFn, exchange_files, replace_when_quiet, sha256_of_regular, swap_in

logger = logging.getLogger(__name__)

# settings.json: ST's are usually well under 1 MB; extensions that keep data in it reach a few MB. Past
# 16 MB, reading and patching it would take the service past its memory budget (200 MB peak).
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024
# What parsing a document may cost, estimated from its structure before parsing (see _parse_cost): a
# few MB of "[{},{},...]" become hundreds of MB of Python objects.
MAX_PARSE_BYTES = 96 * 1024 * 1024
# Documents above this size are parsed one at a time, process-wide: two users' 16 MB settings files
# parsed at once would double the service's memory high-water mark. Small files never wait.
LARGE_DOCUMENT_BYTES = 1024 * 1024
_LARGE_PARSE = threading.Lock()
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


_FILE_KINDS = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a device"),
    (stat.S_ISBLK, "a device"),
)


def _not_regular(path: Path, mode: int) -> DocumentUnreadable:
    if stat.S_ISDIR(mode):
        return DocumentUnreadable(path, f"{path.name} is a folder, not a file")
    kind = next((name for test, name in _FILE_KINDS if test(mode)), "not a regular file")
    return DocumentUnreadable(path, f"{path.name} is {kind}, not a regular file; it was not read")


_READ_FLAGS = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOCTTY", 0)


def open_regular(path: Path) -> int:
    """A read-only descriptor of ``path``, only if it is a regular file (symlinks followed).

    Why both checks: opening a FIFO blocks until a writer appears (a FIFO planted as ``secrets.json``
    froze the whole service), and a device may do anything on open. ``stat`` refuses those before any
    open; ``O_NONBLOCK`` makes the open itself safe if one was swapped in meanwhile, and ``fstat`` on the
    descriptor is the final word.
    """
    try:
        st = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        raise DocumentMissing(path) from None
    except OSError as exc:
        raise DocumentUnreadable(path, f"{path.name} cannot be read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(path, st.st_mode)
    try:
        fd = os.open(path, _READ_FLAGS)
    except (FileNotFoundError, NotADirectoryError):
        raise DocumentMissing(path) from None
    except PermissionError:
        raise DocumentUnreadable(path, f"{path.name} cannot be read: permission denied") from None
    except OSError as exc:
        raise DocumentUnreadable(path, f"{path.name} cannot be read: {exc.strerror or exc}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise _not_regular(path, mode)
    return fd


def _too_large(path: Path, size: float, max_bytes: int) -> DocumentTooLarge:
    return DocumentTooLarge(
        path,
        f"{path.name} is {size / 1_048_576:.1f} MB, more than the {max_bytes / 1_048_576:g} MB limit; "
        "it was not read",
    )


def _read_bytes(path: Path, max_bytes: int) -> bytes:
    fd = open_regular(path)
    try:
        with os.fdopen(fd, "rb", closefd=False) as fh:
            size = os.fstat(fd).st_size
            if size > max_bytes:
                raise _too_large(path, size, max_bytes)
            # Read one byte past the cap: the file may have grown since fstat.
            raw = fh.read(max_bytes + 1)
    except OSError as exc:
        raise DocumentUnreadable(path, f"{path.name} cannot be read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(raw) > max_bytes:
        raise DocumentTooLarge(path, f"{path.name} is larger than the {max_bytes / 1_048_576:g} MB limit")
    return raw


def _parse_cost(raw: bytes) -> int:
    """An upper estimate of the memory ``json`` parsing ``raw`` takes, from its structure alone.

    Measured on CPython 3.11 with orjson: about 90 bytes per object, 70 per list, 50 per element, plus
    the text itself twice (bytes and decoded strings). The factors below are rounded up from those.
    """
    return 2 * len(raw) + 80 * raw.count(b",") + 150 * raw.count(b"{") + 60 * raw.count(b"[")


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


def _parse(path: Path, raw: bytes, max_parse_bytes: int) -> Any:
    if len(raw) <= LARGE_DOCUMENT_BYTES:
        return parse_document_bytes(path, raw)
    cost = _parse_cost(raw)
    if cost > max_parse_bytes:
        raise DocumentTooLarge(
            path,
            f"{path.name} ({len(raw) / 1_048_576:.1f} MB) holds so many values that checking it would take "
            f"about {cost / 1_048_576:.0f} MB of memory, more than the {max_parse_bytes / 1_048_576:g} MB "
            "allowed; it was not read",
        )
    with _LARGE_PARSE:
        return parse_document_bytes(path, raw)


def read_document(
    path: Path,
    *,
    attempts: int = DEFAULT_ATTEMPTS,
    backoff: float = DEFAULT_BACKOFF,
    max_bytes: int = MAX_DOCUMENT_BYTES,
    max_parse_bytes: int = MAX_PARSE_BYTES,
    sleep: Callable[[float], None] = time.sleep,
) -> Document:
    """Read and parse a JSON file, retrying a parse failure (a writer may be half-way) with growing pauses.

    A missing, oversized or non-regular file (FIFO, device, socket) is reported at once: waiting would
    not change any of them. ``sleep`` is the pause between attempts (injectable so tests can change the
    file at a known point).
    """
    path = Path(path)
    last: DocumentUnreadable | None = None
    for attempt in range(max(1, attempts)):
        if attempt:
            sleep(backoff * attempt)
        raw = _read_bytes(path, max_bytes)
        try:
            data = _parse(path, raw, max_parse_bytes)
        except DocumentTooLarge:
            raise
        except DocumentUnreadable as exc:
            last = exc
            logger.debug("read of %s failed (attempt %d/%d): %s", path, attempt + 1, attempts, exc.reason)
            continue
        return Document(path=path, raw=raw, sha256=sha256_hex(raw), data=data)
    raise last if last is not None else OSError(f"could not read {path}")


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
    within: Path | None = None,
    exchange: ExchangeFn = exchange_files,
    quiet_period: float = QUIET_PERIOD,
    fault_hook: FaultHook | None = None,
) -> None:
    """Replace ``path`` with ``data`` so that any crash leaves the old or the new content, never a mix.

    ``expected_sha256``: compare-and-swap. Nothing is written unless the file still has this hash, and a
    save by another program that lands at the last moment is never destroyed: the new file is swapped
    in atomically and what came out is checked afterwards and put back when it is not what we read
    (``swap.swap_in``; where no atomic exchange exists, see ``swap.replace_when_quiet``).
    ``mode``: permission bits for the new file; default keeps the existing file's bits.
    ``respect_read_only``: a file or folder without the owner's write bit is treated as a user's "do not
    touch", even when we run as root and the OS would let us.
    ``within``: the folder the write must stay in once symlinks are resolved (``confine.confined``).
    ``fault_hook``: called at stages "tmp_written", "before_replace" and "swapped" (tests inject faults).
    """
    if within is not None:
        target = confined(Path(path), within, follow_final=follow_symlinks)
    else:
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
        if expected_sha256 is None:
            if fault_hook is not None:
                fault_hook("before_replace")
            os.replace(tmp, target)
            created = False
        else:
            # Cheap early exit for the common conflict; the swap below is what makes it safe.
            if sha256_of_regular(target) != expected_sha256:
                raise ConcurrentModification(target)
            if fault_hook is not None:
                fault_hook("before_replace")
            after_swap = (lambda: fault_hook("swapped")) if fault_hook is not None else None
            # After a swap, ``tmp`` holds the old file (or our own, after a conflict): removed below.
            if not swap_in(tmp, target, expected_sha256, exchange=exchange, after_swap=after_swap):
                replace_when_quiet(tmp, target, expected_sha256, quiet=quiet_period)
                created = False
    except OSError as exc:
        raise _write_failed(target, exc) from None
    finally:
        if created:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass  # kept aside under another name: swap._put_back gave up on a writer saving non-stop
            except OSError as exc:
                logger.warning("could not remove temp file %s: %s", tmp, exc.strerror)
    _fsync_dir(directory)


def write_new_file_atomic(path: Path, data: bytes, mode: int = 0o600, *, within: Path | None = None) -> None:
    """Atomically write one of our own files (e.g. the token file) with exact permission bits.

    A symlink at ``path`` is replaced, not followed: our files are never meant to point elsewhere, and
    following one would let a planted link redirect the write. ``within``: see ``replace_file_atomic``.
    """
    replace_file_atomic(
        path,
        data,
        expected_sha256=None,
        mode=mode,
        follow_symlinks=False,
        respect_read_only=False,
        within=within,
    )
