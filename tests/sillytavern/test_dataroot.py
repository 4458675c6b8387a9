"""config.yaml reading and user discovery on real temporary ST installs."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from nanogpt_companion.sillytavern.dataroot import (
    UserPaths,
    discover_users,
    is_safe_handle,
    read_st_config,
)
from nanogpt_companion.sillytavern.errors import ConfigUnreadable
from tests.fakes.st_fixtures import DEFAULT_SETTINGS, MakeSTInstall, STInstall, UserSpec


def test_default_install(st_install: STInstall) -> None:
    cfg = read_st_config(st_install.st_dir)
    assert cfg.data_root == st_install.st_dir / "data" == st_install.data_root
    assert (cfg.port, cfg.enable_server_plugins, cfg.listen) == (8000, False, False)
    users = discover_users(cfg.data_root)
    assert [u.handle for u in users] == ["default-user"]
    user = users[0]
    assert user == st_install.user()
    assert user.settings.is_file() and user.secrets.is_file()
    assert user.presets_dir == user.root / "OpenAI Settings" and (user.presets_dir / "Default.json").is_file()
    assert user.token_file == user.root / "user" / "files" / "nanogpt-companion.json"
    assert user.extensions_dir == user.root / "extensions"


def test_changed_data_root_port_and_flags(make_st_install: MakeSTInstall) -> None:
    install = make_st_install(
        data_root="../stdata", port=8123, config_extra={"enableServerPlugins": "true", "listen": "true"}
    )
    cfg = read_st_config(install.st_dir)
    assert cfg.data_root == install.st_dir.parent / "stdata"
    assert (cfg.port, cfg.enable_server_plugins, cfg.listen) == (8123, True, True)
    assert [u.handle for u in discover_users(cfg.data_root)] == ["default-user"]


def test_absolute_data_root(make_st_install: MakeSTInstall, tmp_path: Path) -> None:
    install = make_st_install(data_root=str(tmp_path / "elsewhere"))
    assert read_st_config(install.st_dir).data_root == tmp_path / "elsewhere"


def test_missing_config_means_st_defaults(make_st_install: MakeSTInstall) -> None:
    install = make_st_install(config=False)
    cfg = read_st_config(install.st_dir)
    assert cfg.data_root == install.st_dir / "data" and cfg.port == 8000


def test_broken_config_is_an_error_not_a_guess(st_install: STInstall) -> None:
    st_install.config_path.write_text("dataRoot: [unclosed\nport: 1\n", encoding="utf-8")
    with pytest.raises(ConfigUnreadable, match=r"config\.yaml is not valid YAML \(line \d+, column \d+\)"):
        read_st_config(st_install.st_dir)


def test_discovery_skips_global_folders_and_non_users(make_st_install: MakeSTInstall) -> None:
    install = make_st_install(users=["zeta", "alpha", "default-user"])
    root = install.data_root
    # _storage already holds a settings.json (see the builder): skipped by name.
    for name in ("_css", "_errors", "_uploads", "_anything", ".hidden"):
        (root / name).mkdir()
        (root / name / "settings.json").write_text("{}", encoding="utf-8")
    (root / "no-settings").mkdir()  # a folder without settings.json is not a user (yet)
    (root / "file-not-dir").write_text("x", encoding="utf-8")
    assert [u.handle for u in discover_users(root)] == ["alpha", "default-user", "zeta"]


def test_new_user_appears_on_the_next_discovery(st_install: STInstall) -> None:
    assert len(discover_users(st_install.data_root)) == 1
    newcomer = st_install.data_root / "newcomer"
    newcomer.mkdir()
    (newcomer / "settings.json").write_text("{}", encoding="utf-8")
    assert [u.handle for u in discover_users(st_install.data_root)] == ["default-user", "newcomer"]


def test_odd_handle_names(make_st_install: MakeSTInstall, caplog: pytest.LogCaptureFixture) -> None:
    odd_ok = ["UPPER", "with space", "ünïcödé", "dots.in.name", "a..b"]
    install = make_st_install(users=["default-user", *odd_ok])
    root = install.data_root
    for bad in ("back\\slash", "new\nline", " leading", "tab\there"):
        (root / bad).mkdir()
        (root / bad / "settings.json").write_text("{}", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="nanogpt_companion.sillytavern.dataroot"):
        handles = [u.handle for u in discover_users(root)]
    assert handles == sorted(["default-user", *odd_ok])
    assert caplog.text.count("unusable user name") == 4


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("default-user", True),
        ("..", False),
        (".", False),
        ("a/b", False),
        ("a\x00b", False),
        ("_storage", False),
        ("", False),
        ("x\x7f", False),
        ("Ωmega", True),
    ],
)
def test_is_safe_handle(name: str, ok: bool) -> None:
    assert is_safe_handle(name) is ok


def test_symlinked_user_folders(
    make_st_install: MakeSTInstall, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    install = make_st_install(users=["default-user"])
    root = install.data_root
    # Inside the data root: followed (e.g. an alias kept by the user).
    inside = root / "_storage" / "moved-user"
    inside.mkdir()
    (inside / "settings.json").write_text("{}", encoding="utf-8")
    (root / "linked-inside").symlink_to(inside)
    # Outside the data root: refused, we would otherwise patch files anywhere on the disk.
    outside = tmp_path / "outside-user"
    outside.mkdir()
    (outside / "settings.json").write_text("{}", encoding="utf-8")
    (root / "linked-outside").symlink_to(outside)
    # Dangling: skipped quietly.
    (root / "dangling").symlink_to(tmp_path / "nowhere")
    with caplog.at_level(logging.WARNING, logger="nanogpt_companion.sillytavern.dataroot"):
        users = discover_users(root)
    assert [u.handle for u in users] == ["default-user", "linked-inside"]
    assert users[1] == UserPaths("linked-inside", root / "linked-inside")  # addressed as ST addresses it
    assert "linked-outside" in caplog.text and "outside the data root" in caplog.text


def test_missing_data_root_yields_no_users(tmp_path: Path) -> None:
    assert discover_users(tmp_path / "nope") == []


def test_builder_accepts_dict_settings(make_st_install: MakeSTInstall) -> None:
    install = make_st_install(users={"u": UserSpec(settings={"oai_settings": {"x": 1e-7}}, secrets="none")})
    user = install.user("u")
    assert (
        user.settings.read_text(encoding="utf-8") == '{\n    "oai_settings": {\n        "x": 1e-7\n    }\n}'
    )
    assert not user.secrets.exists()
    assert DEFAULT_SETTINGS.endswith(".json") and os.access(user.settings, os.W_OK)
