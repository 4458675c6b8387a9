"""Where an ST install keeps its users' data, and which user folders exist.

Only ``config.yaml`` is consulted for the data root; ST's command-line flags and ``SILLYTAVERN_*``
environment overrides are invisible to us, so a user running ST that way passes ``--data-root``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigUnreadable

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8000
DEFAULT_DATA_ROOT = "./data"
TOKEN_FILE_NAME = "nanogpt-companion.json"  # noqa: S105 (a file name, not a secret)

# Global (not per-user) folders ST keeps in the data root; anything starting with "_" or "." is skipped
# as well, these are listed to document what is known to live there.
NON_USER_DIRS = frozenset({"_storage", "_cache", "_css", "_errors", "_uploads"})


@dataclass(frozen=True)
class STConfig:
    st_dir: Path
    data_root: Path
    port: int
    enable_server_plugins: bool
    listen: bool


def _as_bool(value: Any, default: bool) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return default


def read_st_config(st_dir: Path) -> STConfig:
    """``<st_dir>/config.yaml`` -> the few settings the companion needs; ST's defaults when it is absent.

    A config that exists but cannot be parsed raises ``ConfigUnreadable`` rather than falling back to
    defaults: ST itself would not start with it, and a guessed data root would point at the wrong files.
    """
    st_dir = Path(os.path.abspath(st_dir))
    cfg_path = st_dir / "config.yaml"
    raw: Any = {}
    try:
        text = cfg_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        logger.debug("%s has no config.yaml; using ST's defaults", st_dir)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigUnreadable(cfg_path, f"config.yaml cannot be read: {exc}") from None
    else:
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
            raise ConfigUnreadable(cfg_path, f"config.yaml is not valid YAML{where}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigUnreadable(cfg_path, "config.yaml does not contain a mapping of settings")

    data_root_value = raw.get("dataRoot")
    if not isinstance(data_root_value, str) or not data_root_value.strip():
        data_root_value = DEFAULT_DATA_ROOT
    # ST resolves dataRoot against its working directory, which its launch scripts set to the install dir.
    data_root = Path(os.path.abspath(st_dir / os.path.expanduser(data_root_value.strip())))

    port_value = raw.get("port", DEFAULT_PORT)
    try:
        port = int(port_value)
    except (TypeError, ValueError):
        port = DEFAULT_PORT
    if not 0 < port < 65536:
        logger.warning("config.yaml has an invalid port %r; assuming %d", port_value, DEFAULT_PORT)
        port = DEFAULT_PORT

    return STConfig(
        st_dir=st_dir,
        data_root=data_root,
        port=port,
        enable_server_plugins=_as_bool(raw.get("enableServerPlugins"), False),
        listen=_as_bool(raw.get("listen"), False),
    )


@dataclass(frozen=True)
class UserPaths:
    """One ST user's folder; ``root`` is ``<dataRoot>/<handle>`` as ST addresses it (not symlink-resolved)."""

    handle: str
    root: Path

    @property
    def settings(self) -> Path:
        return self.root / "settings.json"

    @property
    def secrets(self) -> Path:
        return self.root / "secrets.json"

    @property
    def presets_dir(self) -> Path:
        return self.root / "OpenAI Settings"

    def preset(self, name: str) -> Path:
        return self.presets_dir / f"{name}.json"

    @property
    def files_dir(self) -> Path:
        return self.root / "user" / "files"

    @property
    def token_file(self) -> Path:
        return self.files_dir / TOKEN_FILE_NAME

    @property
    def extensions_dir(self) -> Path:
        return self.root / "extensions"

    @property
    def backups_dir(self) -> Path:
        return self.root / "backups"


def is_safe_handle(name: str) -> bool:
    """A folder name we accept as a user handle.

    ST creates lowercase slugs, but folders made by hand or by older versions vary, so anything is
    accepted that cannot escape the data root or confuse paths and logs: no separators, no ``..``, no
    control characters, not hidden and not one of ST's ``_``-prefixed global folders.
    """
    if not name or name in (".", "..") or name.startswith((".", "_")):
        return False
    if any(c in name for c in ("/", "\\", "\x00")):
        return False
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        return False
    return name.strip() == name


@dataclass(frozen=True)
class UserProblem:
    """A folder in the data root that is not served, and why. ``cause`` is stable across scans, so a
    caller that rescans every few seconds can report each cause once."""

    cause: str
    message: str


def scan_users(data_root: Path) -> tuple[list[UserPaths], list[UserProblem]]:
    """Every ``<data_root>/<handle>/`` holding a ``settings.json``, sorted by handle, and the folders
    refused.

    Symlinked user folders are followed only when they resolve inside the data root, to a folder that is
    not another handle's folder: a link pointing elsewhere would let whoever can create it make us read
    and patch arbitrary files, and two handles for one folder would give two tokens (and two identities)
    for the same files. When a real folder and links to it compete,
    the real folder is served and the links are refused; when only links compete, none is served.
    """
    data_root = Path(os.path.abspath(data_root))
    try:
        resolved_root = data_root.resolve(strict=True)
    except OSError:
        return [], [UserProblem(f"missing:{data_root}", f"ST data root {data_root} does not exist")]
    problems: list[UserProblem] = []
    try:
        entries = sorted(os.scandir(data_root), key=lambda e: e.name)
    except OSError as exc:
        return [], [
            UserProblem(f"unlistable:{data_root}", f"cannot list ST data root {data_root}: {exc.strerror}")
        ]
    candidates: dict[Path, list[tuple[str, bool]]] = {}  # real folder -> (handle, is a link)
    for entry in entries:
        name = entry.name
        if name in NON_USER_DIRS or name.startswith(("_", ".")):
            continue
        if not is_safe_handle(name):
            problems.append(
                UserProblem(
                    f"name:{name!r}", f"ignoring folder with an unusable user name in {data_root}: {name!r}"
                )
            )
            continue
        try:
            if not entry.is_dir(follow_symlinks=True):
                continue
            link = entry.is_symlink()
            target = Path(entry.path).resolve(strict=True)
        except OSError:
            continue
        if link and (not target.is_relative_to(resolved_root) or target == resolved_root):
            problems.append(
                UserProblem(
                    f"link:{name}:{target}",
                    f"ignoring user folder {name!r}: it is a symlink to {target}, outside the data root",
                )
            )
            continue
        if not (data_root / name / "settings.json").is_file():
            continue
        candidates.setdefault(target, []).append((name, link))
    users: list[UserPaths] = []
    for target, handles in candidates.items():
        served = [name for name, link in handles if not link] if len(handles) > 1 else [handles[0][0]]
        if len(served) > 1:
            served = []  # two real folders cannot share a real path; bind mounts can: serve neither
        if len(handles) > 1:
            names = ", ".join(repr(name) for name, _ in handles)
            outcome = f"only {served[0]!r} is served" if served else "none of them is served"
            problems.append(
                UserProblem(
                    f"same:{target}:{','.join(sorted(name for name, _ in handles))}",
                    f"user folders {names} are the same folder ({target}); {outcome} until each user has "
                    "a folder of their own",
                )
            )
        users.extend(UserPaths(handle=name, root=data_root / name) for name in served)
    return sorted(users, key=lambda u: u.handle), problems


def discover_users(data_root: Path) -> list[UserPaths]:
    """``scan_users`` for one-off callers (the CLI): every problem is logged as a warning."""
    users, problems = scan_users(data_root)
    for problem in problems:
        logger.warning("%s", problem.message)
    return users


def find_user(data_root: Path, handle: str) -> UserPaths | None:
    for user in discover_users(data_root):
        if user.handle == handle:
            return user
    return None
