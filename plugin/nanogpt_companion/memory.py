"""The C allocator, tuned for a sidecar that idles for days between bursts (glibc only; a no-op elsewhere).

Why: most of what the service allocates and frees in a burst (a catalogue refresh parses a few MB of
upstream JSON; its snapshot is compressed for the store) is returned to the allocator, not to the OS.
Two glibc defaults then keep it resident for good:
- one malloc arena per thread that ever allocated (asyncio's worker threads, the store's thread): each
  keeps its own freed memory, and ``malloc_trim`` cannot shrink the top of a thread's arena. Measured:
  compressing the catalogue snapshot in a worker thread left ~12 MB behind with ten users. One arena
  for the process costs nothing here (the GIL serialises allocation-heavy work anyway).
- freed pages inside the heap stay mapped until ``malloc_trim`` hands them back.
- glibc raises its mmap threshold (up to 32 MB) each time it frees a large mapped block, after which
  every large temporary buffer (a model list's body, a snapshot's compressed copy) is carved from the
  heap, where the small objects made around it keep it from ever shrinking back. A fixed threshold
  keeps such buffers in mappings of their own, returned whole when freed (measured: ~0.7 MB less idle
  heap with ten users; the cost is a page-fault per page of each large buffer, microseconds).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value, kept fixed


def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None  # glibc only


_LIBC = _libc()
_MALLOC_TRIM: Callable[[int], int] | None = _LIBC.malloc_trim if _LIBC is not None else None


def tune_malloc_for_idle() -> bool:
    """One arena for every thread, and large buffers always in mappings of their own (see above). Call
    once, early (before worker threads start)."""
    if _LIBC is None:
        return False
    ok = bool(_LIBC.mallopt(M_ARENA_MAX, 1))
    if not ok:
        log.debug("mallopt(M_ARENA_MAX) refused; keeping glibc's per-thread arenas")
    if not _LIBC.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD):
        log.debug("mallopt(M_MMAP_THRESHOLD) refused; keeping glibc's sliding threshold")
        ok = False
    return ok


async def release_freed_memory() -> None:
    """Give freed memory back to the OS after a burst (a refresh).

    ``malloc_trim(0)`` returns whole free pages; it runs in a worker thread (ctypes releases the GIL) so
    the event loop never waits for it. No ``gc.collect()``: parsed JSON holds no reference cycles, and a
    full collection would stall every request for tens of milliseconds.
    """
    if _MALLOC_TRIM is not None:
        await asyncio.to_thread(_MALLOC_TRIM, 0)
