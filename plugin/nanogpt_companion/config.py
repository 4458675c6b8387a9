"""The service's configuration: one pydantic model, filled from flags, the environment and a TOML file.

Precedence is command-line flags > environment (``NANOGPT_COMPANION_*``, any letter case, plus the
conventional ``NANOGPT_API_KEY``) > a TOML file (``--config``) > defaults. Constructing ``Settings``
reads the environment under the given values, as a settings class should.

Why not pydantic-settings: it imports ~4 MB of code a sidecar never runs (dotenv, cloud secret stores,
a CLI parser, zipfile, importlib.metadata) for what is three dictionaries merged below.
"""

from __future__ import annotations

import json
import os
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

DEFAULT_PORT = 8719
DEFAULT_UPSTREAM = "https://nano-gpt.com/api"
APP_DIR_NAME = "nanogpt-companion"
ENV_PREFIX = "NANOGPT_COMPANION_"
# The key's environment names, first found wins (NANOGPT_API_KEY is the one NanoGPT's docs use).
KEY_ENV_NAMES = ("NANOGPT_API_KEY", "NANOGPT_COMPANION_API_KEY")
PolicyValue = Literal["auto", "ask", "off"]


def user_data_dir(app: str = APP_DIR_NAME) -> Path:
    """The platform's per-user data directory for ``app`` (what platformdirs' ``user_data_dir`` gives,
    without roaming or app-author folders): XDG on Linux and the BSDs, Application Support on macOS,
    LOCALAPPDATA on Windows."""
    home = Path.home()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(home / "AppData" / "Local")
        return Path(base) / app
    if sys.platform == "darwin":
        return home / "Library" / "Application Support" / app
    xdg = os.environ.get("XDG_DATA_HOME", "").strip()
    return (Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".local" / "share") / app


def default_state_dir() -> Path:
    return user_data_dir()


def environment_values(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The settings the environment gives: ``NANOGPT_COMPANION_<FIELD>`` in any letter case; JSON for
    ``doctor_policies``, comma-separated lists for ``allow_origins``/``allow_hosts``."""
    lowered = {k.lower(): v for k, v in (os.environ if environ is None else environ).items()}
    found: dict[str, Any] = {}
    for name in Settings.model_fields:
        if name == "config_file":
            continue  # only --config names the file
        names = KEY_ENV_NAMES if name == "api_key" else (ENV_PREFIX + name,)
        raw = next((lowered[n.lower()] for n in names if n.lower() in lowered), None)
        if raw is None:
            continue
        if name == "doctor_policies":
            try:
                found[name] = json.loads(raw)
            except ValueError:
                raise ValueError(
                    f'{ENV_PREFIX}DOCTOR_POLICIES is not JSON (e.g. \'{{"context": "auto"}}\')'
                ) from None
        else:
            found[name] = raw  # pydantic turns text into numbers, booleans and paths
    return found


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    host: str = Field("127.0.0.1", description="Address to bind. Keep 127.0.0.1 unless you know why not.")
    port: int = Field(DEFAULT_PORT, ge=0, le=65535, description="Port to bind.")
    upstream: str = Field(DEFAULT_UPSTREAM, description="NanoGPT API base URL (tests point it at a fake).")
    sillytavern: Path | None = Field(
        None, description="SillyTavern install dir; dataRoot read from config.yaml."
    )
    data_root: Path | None = Field(None, description="SillyTavern data root, when not using --sillytavern.")
    state_dir: Path = Field(default_factory=default_state_dir, description="Where the SQLite store lives.")
    db_path: Path | None = Field(None, description="SQLite file (default: <state_dir>/companion.sqlite3).")
    api_key: SecretStr | None = Field(
        None,
        description="NanoGPT key for single-user setups; otherwise read from each user's secrets.json.",
    )
    catalog_ttl: float = Field(300.0, ge=1.0, description="Seconds before the catalogue is refreshed.")
    account_poll_interval: float = Field(300.0, ge=5.0, description="Seconds between balance/quota polls.")
    low_balance_usd: float = Field(1.0, ge=0.0, description="Alert when the USD balance drops below this.")
    upstream_timeout: float = Field(30.0, gt=0, description="Per-request timeout towards NanoGPT, seconds.")
    max_upstream_body_mb: float = Field(
        8.0, gt=0, description="Refuse upstream bodies larger than this (MB)."
    )
    allow_origins: list[str] = Field(
        default_factory=list, description="Extra browser origins allowed by CORS (ST's own are automatic)."
    )
    allow_hosts: list[str] = Field(
        default_factory=list, description="Extra Host header names accepted (loopback names are automatic)."
    )
    st_port: int | None = Field(
        None, description="SillyTavern's port for CORS (default: from config.yaml or 8000)."
    )
    watch: bool = Field(True, description="Watch SillyTavern's settings files and run the doctor on change.")
    watch_debounce_ms: int = Field(
        50, ge=1, description="Debounce for file events (watchfiles default: 1600)."
    )
    doctor_policies: dict[str, PolicyValue] = Field(
        default_factory=dict, description="Per-rule policy override: auto | ask | off."
    )
    ppp_families_file: Path | None = Field(None, description="Extra per-model-family PPP rules (JSON).")
    log_level: str = Field("INFO", description="Python logging level.")
    config_file: Path | None = Field(None, exclude=True, description="TOML config file.")

    @model_validator(mode="before")
    @classmethod
    def _under_the_environment(cls, data: Any) -> Any:
        """Values given to the constructor win; the environment fills the rest."""
        if not isinstance(data, dict):
            return data
        return {**environment_values(), **data}

    @field_validator("upstream")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("allow_origins", "allow_hosts", mode="before")
    @classmethod
    def _split_csv(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @property
    def database_path(self) -> Path:
        return self.db_path or self.state_dir / "companion.sqlite3"

    @property
    def public_url(self) -> str:
        host = self.host
        if host in ("0.0.0.0", "::", ""):  # noqa: S104 - only formatting the URL the extension should use
            host = "127.0.0.1"
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}"


def load_settings(config_file: Path | None = None, **flags: Any) -> Settings:
    """Build settings from flags (``None`` values mean "not given"), the environment and a TOML file."""
    given = {k: v for k, v in flags.items() if v is not None and v != []}
    if config_file is None:
        return Settings(**given)
    if not config_file.is_file():
        raise ValueError(f"config file not found: {config_file}")
    with config_file.open("rb") as handle:
        toml = tomllib.load(handle)
    unknown = set(toml) - set(Settings.model_fields)
    if unknown:
        raise ValueError(f"unknown keys in {config_file}: {', '.join(sorted(unknown))}")
    # Flags beat the environment beats the file: the file's values only fill what the others left unset.
    settings = Settings(**given, config_file=config_file)
    explicit = settings.model_fields_set
    merged = {**{k: v for k, v in toml.items() if k not in explicit}, **given}
    return Settings(**merged, config_file=config_file)
