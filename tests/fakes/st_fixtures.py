"""A real (file-system) SillyTavern install built from the shared fixtures, for tests.

Listed in tests/conftest.py as a plugin module. ``st_install`` is the common case (one user,
``default-user``, NanoGPT selected, multi-key secrets); ``make_st_install(**options)`` builds variants.
Nothing is mocked: tests get the same directory layout, config.yaml and JSON files ST would have, and
the global folders (``_storage``, ``_cache``) that discovery must skip.
"""

from __future__ import annotations

import itertools
import re
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from nanogpt_companion.sillytavern.dataroot import UserPaths
from nanogpt_companion.sillytavern.stjson import dumps_st
from tests.fixtures import ST_FIXTURES

FIXTURES = ST_FIXTURES
DEFAULT_SETTINGS = "settings.nanogpt-source-selected.json"
SecretsKind = Literal["multi", "flat", "none"]
SECRETS_FILES: dict[str, str] = {
    "multi": "secrets.multi-key.example.json",
    "flat": "secrets.legacy-flat.example.json",
}
# The active NanoGPT key in each secrets fixture (all FAKE values).
MULTI_KEY_ACTIVE = "sk-nano-FAKE-111111111111"
FLAT_KEY = "sk-nano-FAKE-000000000000"


def fixture_path(name: str) -> Path:
    return FIXTURES / name


@dataclass(frozen=True)
class UserSpec:
    """One user to create. ``settings``: a fixture file name or a dict (written with dumps_st);
    ``secrets``: a fixture kind or a dict; ``presets``: preset name -> fixture file name or dict."""

    settings: str | Mapping[str, Any] | None = DEFAULT_SETTINGS
    secrets: SecretsKind | Mapping[str, Any] = "multi"
    presets: Mapping[str, str | Mapping[str, Any]] = field(
        default_factory=lambda: {"Default": "openai-preset.Default.json"}
    )


@dataclass(frozen=True)
class STInstall:
    st_dir: Path
    data_root: Path
    users: dict[str, UserPaths]

    @property
    def config_path(self) -> Path:
        return self.st_dir / "config.yaml"

    def user(self, handle: str = "default-user") -> UserPaths:
        return self.users[handle]


def _write_json_or_copy(dest: Path, source: str | Mapping[str, Any]) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(source, str):
        # copyfile, not copy: the shared fixtures are read-only and their mode must not follow them.
        shutil.copyfile(fixture_path(source), dest)
    else:
        dest.write_text(dumps_st(dict(source)), encoding="utf-8")


def _config_text(data_root: str | None, port: int | None, extra: Mapping[str, str] | None) -> str:
    text = fixture_path("config.default.yaml").read_text(encoding="utf-8")
    replacements: dict[str, str] = dict(extra or {})
    if data_root is not None:
        replacements["dataRoot"] = data_root
    if port is not None:
        replacements["port"] = str(port)
    for key, value in replacements.items():
        text, count = re.subn(rf"(?m)^{re.escape(key)}:.*$", f"{key}: {value}", text, count=1)
        if not count:
            text += f"\n{key}: {value}\n"
    return text


def build_st_install(
    base: Path,
    *,
    users: Mapping[str, UserSpec] | list[str] | None = None,
    data_root: str | None = None,
    port: int | None = None,
    config: bool = True,
    config_extra: Mapping[str, str] | None = None,
    global_dirs: bool = True,
) -> STInstall:
    """Create ``<base>/SillyTavern`` with config.yaml and the users' folders.

    ``data_root``: the ``dataRoot`` written into config.yaml (relative to the ST dir, or absolute);
    ``config=False`` leaves config.yaml out (ST's defaults apply). ``users``: handle -> spec, or a list of
    handles that all get the default spec.
    """
    st_dir = base / "SillyTavern"
    st_dir.mkdir(parents=True)
    if config:
        (st_dir / "config.yaml").write_text(_config_text(data_root, port, config_extra), encoding="utf-8")
    root_value = data_root if (config and data_root is not None) else "./data"
    root = Path(root_value) if Path(root_value).is_absolute() else (st_dir / root_value)
    root = Path(str(root.resolve()))
    root.mkdir(parents=True, exist_ok=True)
    if global_dirs:
        for name in ("_storage", "_cache"):
            (root / name).mkdir(exist_ok=True)
        # A settings.json inside a global folder proves discovery skips it by name, not by content.
        shutil.copyfile(fixture_path(DEFAULT_SETTINGS), root / "_storage" / "settings.json")
        (root / "cookie-secret.txt").write_text("not-a-real-secret", encoding="utf-8")

    if users is None:
        users = {"default-user": UserSpec()}
    elif isinstance(users, list):
        users = {handle: UserSpec() for handle in users}
    made: dict[str, UserPaths] = {}
    for handle, spec in users.items():
        paths = UserPaths(handle=handle, root=root / handle)
        paths.root.mkdir(parents=True)
        if spec.settings is not None:
            _write_json_or_copy(paths.settings, spec.settings)
        if isinstance(spec.secrets, str):
            if spec.secrets != "none":
                _write_json_or_copy(paths.secrets, SECRETS_FILES[spec.secrets])
        else:
            _write_json_or_copy(paths.secrets, spec.secrets)
        for name, preset in spec.presets.items():
            _write_json_or_copy(paths.preset(name), preset)
        (paths.root / "backups").mkdir()
        made[handle] = paths
    return STInstall(st_dir=st_dir, data_root=root, users=made)


MakeSTInstall = Callable[..., STInstall]


@pytest.fixture
def make_st_install(tmp_path: Path) -> MakeSTInstall:
    """Factory: each call builds a separate install under the test's tmp_path (see build_st_install)."""
    counter = itertools.count()

    def make(**options: Any) -> STInstall:
        return build_st_install(tmp_path / f"st{next(counter)}", **options)

    return make


@pytest.fixture
def st_install(make_st_install: MakeSTInstall) -> STInstall:
    return make_st_install()


# The folders ST 1.19.0 creates in every user's folder (src/constants.js USER_DIRECTORY_TEMPLATE).
USER_FOLDERS = (
    "thumbnails/bg", "thumbnails/avatar", "thumbnails/persona", "worlds", "User Avatars", "user/images",
    "groups", "group chats", "chats", "characters", "backgrounds", "NovelAI Settings", "KoboldAI Settings",
    "OpenAI Settings", "TextGen Settings", "themes", "movingUI", "extensions", "instruct", "context",
    "QuickReplies", "assets", "user/workflows", "user/files", "vectors", "backups", "sysprompt", "reasoning",
)  # fmt: skip


def build_unstarted_st(base: Path) -> Path:
    """SillyTavern as unpacked and never started: its code's folders (built-in extensions under
    public/scripts/extensions/, no third-party/ yet, default/config.yaml), but no config.yaml and no data
    root, which ST creates on its first start."""
    st_dir = base / "SillyTavern"
    builtin = st_dir / "public" / "scripts" / "extensions" / "regex"
    builtin.mkdir(parents=True)
    (builtin / "manifest.json").write_text('{"display_name": "Regex"}\n', encoding="utf-8")
    (st_dir / "default").mkdir()
    shutil.copyfile(fixture_path("config.default.yaml"), st_dir / "default" / "config.yaml")
    return st_dir


def first_start(st_dir: Path, *handles: str) -> dict[str, UserPaths]:
    """What ST's first start (or an admin creating a user) leaves on disk, in ST's order: the data root and
    its global folders, each user's folders (users.js ensurePublicDirectoriesExist), then the user's
    settings.json from ST's default content (content-manager.js checkForNewContent)."""
    root = st_dir / "data"
    for name in ("_storage", "_cache", "_uploads"):
        (root / name).mkdir(parents=True, exist_ok=True)
    made: dict[str, UserPaths] = {}
    for handle in handles or ("default-user",):
        paths = UserPaths(handle=handle, root=root / handle)
        for folder in USER_FOLDERS:
            (paths.root / folder).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(fixture_path("settings.seed.default-content.json"), paths.settings)
        made[handle] = paths
    return made
