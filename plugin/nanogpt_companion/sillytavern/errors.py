"""Errors of the ST data layer, each carrying a plain-language reason a finding or the CLI can show as is.

Reasons never contain file contents: a settings file can hold personal text and ``secrets.json`` holds
API keys, so only names, positions and OS error descriptions go into messages.
"""

from __future__ import annotations

from pathlib import Path


class STDataError(Exception):
    """Base of everything this package raises about the user's ST files."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason


class DocumentMissing(STDataError):
    def __init__(self, path: Path) -> None:
        super().__init__(path, f"{path.name} does not exist")


class DocumentUnreadable(STDataError):
    """The file exists but is not a JSON document we can use (invalid, truncated, not UTF-8, unreadable)."""


class DocumentTooLarge(DocumentUnreadable):
    """Refused before reading: a settings file this big is almost certainly not ST's."""


class ConfigUnreadable(STDataError):
    """``config.yaml`` exists but cannot be parsed: guessing a data root would point us at the wrong files."""


class PatchError(STDataError):
    """The patch cannot be applied to this document (path through a non-container, failed self-check)."""


class ConcurrentModification(STDataError):
    """The file changed after we read it; nothing was written so the other writer's content survives."""

    def __init__(self, path: Path) -> None:
        super().__init__(
            path, f"{path.name} was changed by another program while we were fixing it; nothing was written"
        )


class WriteFailed(STDataError):
    """The replacement could not be written; the original file is untouched and no temp file is left."""

    def __init__(self, path: Path, reason: str, errno: int | None = None) -> None:
        super().__init__(path, reason)
        self.errno = errno


class UnsafeLink(WriteFailed):
    """The file, or a folder on its path, is a symlink leading out of the folder the write belongs in."""

    def __init__(self, path: Path, real: Path, folder: Path) -> None:
        super().__init__(
            path,
            f"{path.name} is reached through a link to {real}, outside {folder}; it was left unchanged "
            "(links leading out of a user's folder are never written through)",
        )
