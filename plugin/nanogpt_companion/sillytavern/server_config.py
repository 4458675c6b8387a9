"""How reachable and how protected an ST server is, from its ``config.yaml`` and user records.

The settings and their meaning are ST's own (the same in 1.13.5, 1.18.0 and 1.19.0):

* ``listen`` (default false): false binds loopback only; true binds ``listenAddress`` (all interfaces by
  default), ``src/server-startup.js``.
* ``whitelistMode`` (default true) with ``whitelist`` (default ``::1``, ``127.0.0.1``): other client IPs get
  403 (``src/middleware/whitelist.js``).
* ``basicAuthMode`` with ``basicAuthUser``: a password for everyone, applied only when ``listen`` is on
  (``src/server-main.js``: ``if (cliArgs.listen && cliArgs.basicAuthMode)``); the sample credentials in
  ``default/config.yaml`` are ``user`` / ``password``.
* ``enableUserAccounts`` (default false): without it nobody logs in at all; with it, a user whose record has
  an empty ``password`` logs in without one (``DEFAULT_USER`` in ``src/constants.js`` has none). Records are
  node-persist files in ``<dataRoot>/_storage`` (``{"key": "user:<handle>", "value": {...}}``).
* ``hostWhitelist.enabled`` (default false) with ``hostWhitelist.hosts``: requests for other host names get
  403 (``src/middleware/hostWhitelist.js``), which is ST's defence against DNS rebinding.

ST's command-line flags and ``SILLYTAVERN_*`` environment variables override ``config.yaml`` and are invisible
from here, which the doctor's finding says.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

logger = logging.getLogger(__name__)

_MAX_CONFIG_BYTES = 1024 * 1024
_MAX_RECORD_BYTES = 64 * 1024
_MAX_RECORDS = 10_000
SAMPLE_BASIC_AUTH = ("user", "password")


_LOOPBACK_ENTRIES = frozenset({"127.0.0.1", "::1", "localhost", "127.0.0.0/8", "::1/128", "::ffff:127.0.0.1"})
_ANY_ENTRIES = frozenset({"*", "*.*.*.*", "0.0.0.0/0", "::/0", "0.0.0.0"})  # noqa: S104 (whitelist entries)


@dataclass(frozen=True)
class ServerExposure:
    config_path: Path
    plugin_installed: bool
    listen: bool
    whitelist_mode: bool
    whitelist: tuple[str, ...]
    basic_auth: bool
    basic_auth_sample_credentials: bool
    accounts_enabled: bool
    users_without_password: tuple[str, ...]
    host_whitelist: bool
    host_whitelist_hosts: tuple[str, ...]

    @property
    def ip_whitelist_effective(self) -> bool:
        """The IP whitelist is on and does not let every address in."""
        return self.whitelist_mode and not any(e.strip() in _ANY_ENTRIES for e in self.whitelist)

    @property
    def other_devices_allowed(self) -> bool:
        """Devices other than this machine get past the IP whitelist (when ST listens beyond loopback)."""
        return not self.ip_whitelist_effective or any(
            e.strip() not in _LOOPBACK_ENTRIES for e in self.whitelist
        )

    @property
    def password_protected(self) -> bool:
        """Everyone who connects must give a password."""
        if self.basic_auth:
            return not self.basic_auth_sample_credentials
        return self.accounts_enabled and not self.users_without_password


def _read_small(path: Path, limit: int) -> bytes | None:
    """A small regular file's bytes; None for anything else (a FIFO is never opened blocking)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > limit:
            return None
        return os.read(fd, limit + 1)
    except OSError:
        return None
    finally:
        os.close(fd)


def _flag(config: dict[str, Any], key: str, default: bool) -> bool:
    """ST reads these with ``toBoolean``: a real boolean or the strings true/false."""
    value = config.get(key, default)
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return default


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _strings(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value) if isinstance(value, list) else ()


def users_without_password(data_root: Path) -> tuple[str, ...]:
    """Handles of enabled ST accounts that log in without a password."""
    storage = data_root / "_storage"
    found: list[str] = []
    try:
        with os.scandir(storage) as listing:
            entries = sorted(listing, key=lambda e: e.name)[:_MAX_RECORDS]
    except OSError:
        return ()
    for entry in entries:
        raw = _read_small(Path(entry.path), _MAX_RECORD_BYTES)
        if raw is None:
            continue
        try:
            datum = json.loads(raw)
        except ValueError:
            continue
        key = datum.get("key") if isinstance(datum, dict) else None
        user = datum.get("value") if isinstance(datum, dict) else None
        if not (isinstance(key, str) and key.startswith("user:") and isinstance(user, dict)):
            continue
        if user.get("enabled", True) is not False and not user.get("password"):
            found.append(str(user.get("handle") or key.removeprefix("user:")))
    return tuple(sorted(found))


def read_server_exposure(st_dir: Path, data_root: Path | None) -> ServerExposure | None:
    """None when ``config.yaml`` is missing or unreadable (the finding would be a guess)."""
    config_path = st_dir / "config.yaml"
    raw = _read_small(config_path, _MAX_CONFIG_BYTES)
    if raw is None:
        return None
    try:
        config = yaml.safe_load(raw.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError):
        return None
    if not isinstance(config, dict):
        return None
    basic_user = _mapping(config.get("basicAuthUser"))
    hosts = _mapping(config.get("hostWhitelist"))
    accounts = _flag(config, "enableUserAccounts", False)
    return ServerExposure(
        config_path=config_path,
        plugin_installed=(st_dir / "plugins" / "nanogpt-companion").is_dir(),
        listen=_flag(config, "listen", False),
        whitelist_mode=_flag(config, "whitelistMode", True),
        whitelist=_strings(config.get("whitelist", ["::1", "127.0.0.1"])),
        basic_auth=_flag(config, "basicAuthMode", False),
        basic_auth_sample_credentials=(
            str(basic_user.get("username", "")),
            str(basic_user.get("password", "")),
        )
        == SAMPLE_BASIC_AUTH,
        accounts_enabled=accounts,
        users_without_password=users_without_password(data_root) if accounts and data_root else (),
        host_whitelist=_flag(hosts, "enabled", False),
        host_whitelist_hosts=_strings(hosts.get("hosts", [])),
    )
