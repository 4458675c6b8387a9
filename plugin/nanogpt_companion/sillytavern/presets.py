"""Chat Completion presets (``OpenAI Settings/*.json``) and Connection Manager profiles.

Both can switch Prompt Post-Processing back when the user selects them (a preset with
``bind_preset_to_connection``, a profile with ``prompt-post-processing``), so the doctor inspects them as
well as ``settings.json``. Profiles live inside ``settings.json``, in
``extension_settings.connectionManager.profiles``; shapes vary with the ST version and hand edits, so
every accessor here tolerates missing or odd values instead of raising.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .dataroot import UserPaths
from .documents import is_companion_temp

logger = logging.getLogger(__name__)

PROFILE_PPP_KEY = "prompt-post-processing"
PROFILES_PATH: tuple[str, ...] = ("extension_settings", "connectionManager", "profiles")


def list_presets(user: UserPaths) -> list[Path]:
    """Preset files, sorted by name; hidden files (our temp files among them) are skipped."""
    try:
        entries = list(user.presets_dir.iterdir())
    except OSError:
        return []
    presets = [
        p
        for p in entries
        # is_companion_temp is implied by the leading dot; checked anyway in case the naming ever changes.
        if p.suffix == ".json"
        and not p.name.startswith(".")
        and not is_companion_temp(p.name)
        and p.is_file()
    ]
    return sorted(presets, key=lambda p: p.name)


def preset_name(path: Path) -> str:
    """The name ST shows for a preset: the file stem (``Default.json`` -> ``Default``)."""
    return path.stem


@dataclass(frozen=True)
class ConnectionProfile:
    """One Connection Manager profile; ``index`` is its position, for patch paths into settings.json."""

    index: int
    id: str | None
    name: str | None
    api: str | None
    preset: str | None
    ppp: str | None  # "prompt-post-processing"; None when the profile does not set it
    raw: Mapping[str, Any] = field(repr=False)

    @property
    def ppp_path(self) -> tuple[str | int, ...]:
        return (*PROFILES_PATH, self.index, PROFILE_PPP_KEY)


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _connection_manager(settings: Any) -> Mapping[str, Any]:
    if not isinstance(settings, Mapping):
        return {}
    ext = settings.get("extension_settings")
    if not isinstance(ext, Mapping):
        return {}
    cm = ext.get("connectionManager")
    return cm if isinstance(cm, Mapping) else {}


def connection_profiles(settings: Any) -> list[ConnectionProfile]:
    """Profiles from a parsed settings.json; entries that are not objects are skipped (indices kept)."""
    profiles = _connection_manager(settings).get("profiles")
    if not isinstance(profiles, list):
        return []
    out: list[ConnectionProfile] = []
    for index, raw in enumerate(profiles):
        if not isinstance(raw, Mapping):
            logger.debug("skipping connection profile #%d: not an object", index)
            continue
        out.append(
            ConnectionProfile(
                index=index,
                id=_str_or_none(raw.get("id")),
                name=_str_or_none(raw.get("name")),
                api=_str_or_none(raw.get("api")),
                preset=_str_or_none(raw.get("preset")),
                ppp=_str_or_none(raw.get(PROFILE_PPP_KEY)),
                raw=raw,
            )
        )
    return out


def selected_profile(settings: Any) -> ConnectionProfile | None:
    """The profile ST has selected (``connectionManager.selectedProfile`` holds its id)."""
    selected = _connection_manager(settings).get("selectedProfile")
    if not isinstance(selected, str) or not selected:
        return None
    for profile in connection_profiles(settings):
        if profile.id == selected:
            return profile
    return None
