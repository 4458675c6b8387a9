"""secrets.json (both formats, broken files), the token file, presets and Connection Manager profiles."""

from __future__ import annotations

import json
import logging
import os
import pickle
import stat
from pathlib import Path

import pytest

from nanogpt_companion.sillytavern.dataroot import UserPaths
from nanogpt_companion.sillytavern.presets import connection_profiles, list_presets, selected_profile
from nanogpt_companion.sillytavern.secrets import NanoKey, read_nanogpt_key, read_secret, secrets_format
from nanogpt_companion.sillytavern.stjson import dumps_st, loads_st
from nanogpt_companion.sillytavern.tokenfile import ensure_token_file, read_token
from tests.fakes.st_fixtures import FLAT_KEY, MULTI_KEY_ACTIVE, MakeSTInstall, STInstall, UserSpec

URL = "http://127.0.0.1:8719"

# --- secrets ---


def test_multi_key_format_uses_the_active_entry(st_install: STInstall) -> None:
    user = st_install.user()
    key = read_nanogpt_key(user)
    assert key is not None and key.reveal() == MULTI_KEY_ACTIVE
    assert key.label == "test key 2" and key.secret_id == "00e5e5d9-3152-4ff9-bebe-bd3a1a00699d"
    assert secrets_format(user.secrets) == "list"
    custom = read_secret(user.secrets, "api_key_custom")
    assert custom is not None and custom.reveal() == "sk-custom-FAKE-2222222"


def test_legacy_flat_format(make_st_install: MakeSTInstall) -> None:
    user = make_st_install(users={"old": UserSpec(secrets="flat")}).user("old")
    key = read_nanogpt_key(user)
    assert key is not None and key.reveal() == FLAT_KEY and key.secret_id is None
    assert secrets_format(user.secrets) == "flat"


def test_the_key_never_shows_in_repr_str_or_logs(
    st_install: STInstall, caplog: pytest.LogCaptureFixture
) -> None:
    key = read_nanogpt_key(st_install.user())
    assert key is not None
    for text in (repr(key), str(key), f"{key}", repr([key])):
        assert MULTI_KEY_ACTIVE not in text and key.fingerprint in text
    assert key.fingerprint.startswith("k") and len(key.fingerprint) == 17
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("test").info("using %s %r", key, key)
    assert MULTI_KEY_ACTIVE not in caplog.text
    with pytest.raises(TypeError):
        pickle.dumps(key)
    assert key == NanoKey(MULTI_KEY_ACTIVE) and key != NanoKey("other")


@pytest.mark.parametrize(
    ("content", "fmt"),
    [
        (None, None),  # no secrets.json
        ("", None),
        (
            '{\n    "api_key_nanogpt": [\n        {\n            "id": "x", "value": "sk-nano-FAKE-9',
            None,
        ),  # half-written
        ("not json", None),
        ("[1, 2]", None),
        ("{}", None),
        ('{"api_key_nanogpt": []}', "list"),  # all keys deleted
        (
            '{"api_key_nanogpt": [{"id": "a", "value": "sk-nano-FAKE-1", "active": false}]}',
            "list",
        ),  # none active
        ('{"api_key_nanogpt": "   "}', "flat"),
        ('{"api_key_nanogpt": {"value": "sk-nano-FAKE-1"}}', None),
        ('{"api_key_openai": "sk-x", "_migrated": []}', "list"),
    ],
)
def test_missing_or_broken_secrets_give_no_key(
    make_st_install: MakeSTInstall, caplog: pytest.LogCaptureFixture, content: str | None, fmt: str | None
) -> None:
    user = make_st_install(users={"u": UserSpec(secrets="none")}).user("u")
    if content is not None:
        user.secrets.write_text(content, encoding="utf-8")
    with caplog.at_level(logging.DEBUG, logger="nanogpt_companion"):
        assert read_nanogpt_key(user) is None
        assert secrets_format(user.secrets) == fmt
    assert "sk-nano-FAKE" not in caplog.text


# --- token file ---


def test_token_file_is_created_0600_and_stable(st_install: STInstall) -> None:
    user = st_install.user()
    assert not user.files_dir.exists()
    token = ensure_token_file(user, URL, "0.1.0", 1)
    assert len(token) == 43
    content = loads_st(user.token_file.read_text(encoding="utf-8"))
    assert content == {"url": URL, "token": token, "version": "0.1.0", "api_version": 1, "plugin": False}
    assert user.token_file.read_text(encoding="utf-8") == dumps_st(content)
    assert stat.S_IMODE(user.token_file.stat().st_mode) == 0o600
    inode = user.token_file.stat().st_ino
    # A restart with the same settings: same token, file untouched.
    assert ensure_token_file(user, URL, "0.1.0", 1) == token
    assert user.token_file.stat().st_ino == inode
    assert read_token(user) == token


def test_token_survives_a_changed_url_or_version(st_install: STInstall) -> None:
    user = st_install.user()
    token = ensure_token_file(user, URL, "0.1.0", 1)
    assert ensure_token_file(user, "http://127.0.0.1:9000", "0.2.0", 2) == token
    assert loads_st(user.token_file.read_text(encoding="utf-8"))["url"] == "http://127.0.0.1:9000"


def test_token_file_permissions_are_tightened(st_install: STInstall) -> None:
    user = st_install.user()
    token = ensure_token_file(user, URL, "0.1.0", 1)
    os.chmod(user.token_file, 0o644)
    assert ensure_token_file(user, URL, "0.1.0", 1) == token
    assert stat.S_IMODE(user.token_file.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "content",
    [
        "",
        "{broken",
        '{"token": "short"}',
        '{"token": 12345}',
        '{"token": "has spaces in it and is long enough to pass....."}',
        "[]",
    ],
)
def test_malformed_token_files_get_a_fresh_token(st_install: STInstall, content: str) -> None:
    user = st_install.user()
    user.files_dir.mkdir(parents=True)
    user.token_file.write_text(content, encoding="utf-8")
    token = ensure_token_file(user, URL, "0.1.0", 1)
    assert len(token) == 43 and token not in content
    assert read_token(user) == token


def test_two_users_get_different_tokens(make_st_install: MakeSTInstall) -> None:
    install = make_st_install(users=["a", "b"])
    assert ensure_token_file(install.user("a"), URL, "0.1.0", 1) != ensure_token_file(
        install.user("b"), URL, "0.1.0", 1
    )


# --- presets and profiles ---


def test_list_presets_skips_temp_and_non_json(st_install: STInstall) -> None:
    user = st_install.user()
    (user.presets_dir / "Zed.json").write_text("{}", encoding="utf-8")
    (user.presets_dir / ".Default.json.nanogpt-companion.abc123.tmp").write_text("{}", encoding="utf-8")
    (user.presets_dir / ".hidden.json").write_text("{}", encoding="utf-8")
    (user.presets_dir / "Default.json.123456").write_text("{}", encoding="utf-8")  # ST's own temp file
    (user.presets_dir / "notes.txt").write_text("x", encoding="utf-8")
    assert [p.name for p in list_presets(user)] == ["Default.json", "Zed.json"]


def test_list_presets_without_folder(tmp_path: Path) -> None:
    assert list_presets(UserPaths("x", tmp_path)) == []


def test_connection_profiles_from_settings(st_install: STInstall) -> None:
    settings = loads_st(st_install.user().settings.read_text(encoding="utf-8"))
    assert connection_profiles(settings) == []  # the fixture has none
    settings["extension_settings"]["connectionManager"] = {
        "selectedProfile": "p2",
        "profiles": [
            {"id": "p1", "name": "Nano", "api": "nanogpt", "preset": "Default", "prompt-post-processing": ""},
            "garbage",
            {"id": "p2", "name": 5, "mode": "cc", "prompt-post-processing": "merge"},
        ],
    }
    profiles = connection_profiles(settings)
    assert [(p.index, p.id, p.name, p.api, p.preset, p.ppp) for p in profiles] == [
        (0, "p1", "Nano", "nanogpt", "Default", ""),
        (2, "p2", None, None, None, "merge"),
    ]
    assert profiles[1].ppp_path == (
        "extension_settings",
        "connectionManager",
        "profiles",
        2,
        "prompt-post-processing",
    )
    chosen = selected_profile(settings)
    assert chosen is not None and chosen.id == "p2"


@pytest.mark.parametrize(
    "settings",
    [
        None,
        [],
        {},
        {"extension_settings": []},
        {"extension_settings": {"connectionManager": "x"}},
        {"extension_settings": {"connectionManager": {"profiles": {"a": 1}}}},
    ],
)
def test_odd_profile_shapes_are_tolerated(settings: object) -> None:
    assert connection_profiles(settings) == []
    assert selected_profile(settings) is None


def test_token_file_says_when_the_server_plugin_is_installed(tmp_path: Path) -> None:
    user = UserPaths("default-user", tmp_path / "default-user")
    user.root.mkdir()
    token = ensure_token_file(user, URL, "0.1.0", 1, plugin=True)
    content = json.loads(user.token_file.read_text(encoding="utf-8"))
    assert content["plugin"] is True
    assert ensure_token_file(user, URL, "0.1.0", 1) == token  # same token when the flag flips back
    assert json.loads(user.token_file.read_text(encoding="utf-8"))["plugin"] is False
