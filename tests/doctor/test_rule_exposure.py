"""``st.exposed`` (issue 13 item 4): an ST open to others while our server plugin is installed.

Each case is a real ST folder: ST's own ``default/config.yaml`` (1.18.0, committed as a fixture) with the
settings a user would change, user records in node-persist's format under ``<dataRoot>/_storage`` (the
format real ST writes is checked in the real-ST suite), and the plugin folder when installed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from nanogpt_companion.cli import main as cli_main
from nanogpt_companion.doctor.context import DoctorContext
from nanogpt_companion.doctor.engine import diagnose
from nanogpt_companion.doctor.finding import Finding
from nanogpt_companion.sillytavern.server_config import read_server_exposure
from tests.fixtures import ST_FIXTURES

REPO = Path(__file__).resolve().parents[2]


def make_st(
    tmp_path: Path,
    config: dict[str, Any] | None = None,
    *,
    users: dict[str, str] | None = None,
    plugin: bool = True,
) -> Path:
    """``config``: top-level keys to override in ST's default config; ``users``: handle -> password hash."""
    st = tmp_path / "SillyTavern"
    (st / "data" / "default-user").mkdir(parents=True)
    shutil.copy(ST_FIXTURES / "settings.full-after-first-save.json", st / "data/default-user/settings.json")
    text = (ST_FIXTURES / "config.default.yaml").read_text()
    data = yaml.safe_load(text)
    data.update(config or {})
    (st / "config.yaml").write_text(yaml.safe_dump(data))
    storage = st / "data" / "_storage"
    storage.mkdir()
    for handle, password in (users or {"default-user": ""}).items():
        key = f"user:{handle}"
        record = {"handle": handle, "name": handle, "password": password, "salt": "s" if password else ""}
        record |= {"admin": handle == "default-user", "enabled": True}
        datum = {"key": key, "value": record, "ttl": None}
        (storage / hashlib.sha256(key.encode()).hexdigest()).write_text(json.dumps(datum))
    (storage / hashlib.sha256(b"other").hexdigest()).write_text(json.dumps({"key": "other", "value": 1}))
    if plugin:
        shutil.copytree(REPO / "plugin" / "st-server-plugin", st / "plugins" / "nanogpt-companion")
    return st


def exposed(st: Path) -> list[Finding]:
    settings = json.loads((st / "data/default-user/settings.json").read_text())
    ctx = replace(DoctorContext.build(settings), st_server=read_server_exposure(st, st / "data"))
    return [f for f in diagnose(ctx) if f.rule == "st.exposed"]


LAN = {"whitelist": ["::1", "127.0.0.1", "192.168.1.0/24"]}
HOSTS = {"hostWhitelist": {"enabled": True, "scan": True, "hosts": ["st.example.com"]}}


@pytest.mark.parametrize(
    "config",
    [
        {},  # ST's defaults: loopback only
        {"listen": False, "whitelistMode": False},  # wide whitelist, but nothing listens beyond loopback
    ],
)
def test_loopback_only_is_not_reported(tmp_path: Path, config: dict[str, Any]) -> None:
    assert exposed(make_st(tmp_path, config)) == []


def test_without_the_plugin_nothing_is_reported(tmp_path: Path) -> None:
    assert exposed(make_st(tmp_path, {"listen": True, "whitelistMode": False}, plugin=False)) == []


def test_wide_open_is_an_error_that_names_every_fix(tmp_path: Path) -> None:
    st = make_st(tmp_path, {"listen": True, "whitelistMode": False})
    [finding] = exposed(st)
    assert finding.severity == "error"
    assert not finding.fixable  # ST's security settings are advice only; we never edit config.yaml
    text = finding.explanation
    assert str(st / "config.yaml") in text
    for fix in (
        "enableUserAccounts: true",
        "basicAuthMode: true",
        "whitelistMode: true",
        "hostWhitelist.enabled",
    ):
        assert fix in text
    assert finding.details["password"] is False and finding.details["whitelist"] is False


def test_listening_with_st_default_whitelist_only_lacks_the_host_whitelist(tmp_path: Path) -> None:
    """ST's default whitelist lets only this machine in, so no password is needed; rebinding still works."""
    [finding] = exposed(make_st(tmp_path, {"listen": True}))
    assert finding.severity == "warning"
    assert "hostWhitelist.enabled: true" in finding.explanation
    assert "password" not in finding.explanation.split("To fix")[0]


def test_users_without_password_are_named(tmp_path: Path) -> None:
    st = make_st(
        tmp_path,
        {"listen": True, "enableUserAccounts": True, **LAN, **HOSTS},
        users={"default-user": "", "alice": "hash-a", "bob": ""},
    )
    [finding] = exposed(st)
    assert finding.severity == "warning"
    assert "these ST users have no password: bob, default-user" in finding.explanation
    assert finding.details["users_without_password"] == ["bob", "default-user"]


def test_basic_auth_with_the_sample_credentials_is_no_password(tmp_path: Path) -> None:
    st = make_st(tmp_path, {"listen": True, "basicAuthMode": True, "whitelistMode": False, **HOSTS})
    [finding] = exposed(st)
    assert finding.severity == "error"
    assert "sample user name and password" in finding.explanation


@pytest.mark.parametrize(
    "config",
    [
        {"listen": True, "enableUserAccounts": True, **LAN, **HOSTS},
        {
            "listen": True,
            "basicAuthMode": True,
            "basicAuthUser": {"username": "me", "password": "s3cret"},
            **HOSTS,
        },
    ],
)
def test_a_protected_server_is_not_reported(tmp_path: Path, config: dict[str, Any]) -> None:
    assert exposed(make_st(tmp_path, config, users={"default-user": "hash-d", "alice": "hash-a"})) == []


def test_the_finding_id_follows_the_situation(tmp_path: Path) -> None:
    """Same set-up, same id (the UI matches findings by id); one protection added, a new id."""
    first = exposed(make_st(tmp_path / "a", {"listen": True, "whitelistMode": False}))
    again = exposed(make_st(tmp_path / "b", {"listen": True, "whitelistMode": False}))
    safer = exposed(make_st(tmp_path / "c", {"listen": True, "whitelistMode": False, **HOSTS}))
    assert first[0].id == again[0].id != safer[0].id


def test_the_doctor_command_reports_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    st = make_st(tmp_path, {"listen": True, "whitelistMode": False})
    code = cli_main(["doctor", "--sillytavern", str(st), "--offline", "--state-dir", str(tmp_path / "state")])
    out = capsys.readouterr().out
    assert code == 1
    assert "SillyTavern is open to others and the server plugin is installed" in out
    assert "st.exposed" in out
