"""Putting a patched file in place without ever destroying a save that ST made meanwhile.

Why not "compare, then rename": a rename replaces whatever is at the target at that instant. An ST save
landing between our compare and our rename is destroyed (a 60 s race lost 12 of 4,384 ST saves that
way). Linux's ``renameat2(RENAME_EXCHANGE)`` swaps two names atomically instead, so what was at the
target survives under our temp name: we compare it *after* the swap and, when it is not the document we
read, swap it back. ST only ever renames onto the target and never touches our temp name, so whatever
comes out of the target on a later swap is either the file we put there (nobody wrote: discard it) or an
ST save newer than everything we hold (put it back, and look again).

Elsewhere (macOS, Windows, file systems that refuse the flag) nothing atomic exists; there the file is
replaced only once it has been quiet for a while and still holds what we read, which narrows the window
to microseconds after a quiet second instead of closing it.
"""

from __future__ import annotations

import ctypes
import errno as errno_mod
import hashlib
import logging
import os
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path

from .errors import ConcurrentModification

logger = logging.getLogger(__name__)

ExchangeFn = Callable[[Path, Path], bool]
"""Swap the files at two paths atomically; False when this platform or file system cannot."""

QUIET_PERIOD = 1.0  # without an atomic exchange: the target must be this long unchanged before we replace it
MAX_QUIET_WAIT = 5.0  # ... and we wait at most this long for it to become quiet
RESTORE_ROUNDS = 100  # swaps back before giving up on a writer that saves faster than we can look

_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100
_UNSUPPORTED = frozenset({errno_mod.ENOSYS, errno_mod.EINVAL, errno_mod.ENOTSUP, errno_mod.EOPNOTSUPP})


def _load_renameat2() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn: Callable[..., int] = libc.renameat2  # glibc >= 2.28, musl >= 1.2.x
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]  # type: ignore[attr-defined]
    fn.restype = ctypes.c_int  # type: ignore[attr-defined]
    return fn


_RENAMEAT2 = _load_renameat2()


def exchange_files(a: Path, b: Path) -> bool:
    """``renameat2(a, b, RENAME_EXCHANGE)``; False when unsupported here, OSError for real failures."""
    if _RENAMEAT2 is None:
        return False
    if _RENAMEAT2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), str(b))


def sha256_of_regular(path: Path) -> str | None:
    """Hash of the file at ``path`` if it is a regular file (never blocks on a planted FIFO), else None."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        digest = hashlib.sha256()
        while chunk := os.read(fd, 1 << 20):
            digest.update(chunk)
        return digest.hexdigest()
    finally:
        os.close(fd)


def swap_in(
    tmp: Path,
    target: Path,
    expected_sha256: str,
    *,
    exchange: ExchangeFn,
    after_swap: Callable[[], None] | None = None,
) -> bool:
    """Put ``tmp`` at ``target`` only if ``target`` held ``expected_sha256``; never lose a concurrent save.

    Returns False when ``exchange`` is not available (the caller falls back). On success ``tmp`` holds
    the old file (the caller removes it). Raises ``ConcurrentModification`` after restoring the other
    writer's file; ``tmp`` then holds our patched file or an older save it superseded.
    """
    ours = os.lstat(tmp).st_ino
    try:
        if not exchange(tmp, target):
            return False
    except FileNotFoundError:
        raise ConcurrentModification(target) from None  # deleted since we read it
    if after_swap is not None:
        after_swap()
    if sha256_of_regular(tmp) == expected_sha256:
        return True
    _put_back(tmp, target, placed=ours, exchange=exchange)
    raise ConcurrentModification(target)


def _put_back(tmp: Path, target: Path, *, placed: int, exchange: ExchangeFn) -> None:
    """``tmp`` holds a save newer than the file at ``target`` (inode ``placed``, which we put there).

    Swap it in; if what comes out is not ``placed``, an even newer save arrived meanwhile: swap again.
    """
    for _ in range(RESTORE_ROUNDS):
        incoming = os.lstat(tmp).st_ino
        if not exchange(tmp, target):
            raise OSError(errno_mod.ENOTSUP, "the atomic exchange stopped working mid-restore", str(target))
        if os.lstat(tmp).st_ino == placed:
            return
        placed = incoming
    # A writer that saves faster than two syscalls: keep its latest save beside the target, visibly.
    keep = target.with_name(f"{target.name}.conflict-{int(time.time())}")
    os.rename(tmp, keep)
    logger.error("%s kept changing while a fix was undone; the other program's save is in %s", target, keep)


def replace_when_quiet(
    tmp: Path,
    target: Path,
    expected_sha256: str,
    *,
    quiet: float = QUIET_PERIOD,
    max_wait: float = MAX_QUIET_WAIT,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.time,
) -> None:
    """The fallback without an atomic exchange: replace only a file that has been quiet for ``quiet`` s.

    ST saves in bursts; a settings file untouched for a second is unlikely to be saved in the next
    microsecond. The content is checked again right before the rename.
    """
    deadline = clock() + max_wait
    while True:
        try:
            st = os.stat(target)
        except FileNotFoundError:
            raise ConcurrentModification(target) from None
        idle = clock() - max(st.st_mtime, st.st_ctime)
        if idle >= quiet:
            break
        if clock() + (quiet - idle) > deadline:
            raise ConcurrentModification(target)
        sleep(quiet - idle)
    if sha256_of_regular(target) != expected_sha256:
        raise ConcurrentModification(target)
    os.replace(tmp, target)
