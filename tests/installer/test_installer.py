"""install_extension against real temporary SillyTavern folders built from the shared fixtures."""

from __future__ import annotations

import difflib
import filecmp
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nanogpt_companion import __version__
from nanogpt_companion.installer import (
    FIRST_START_LINE,
    INSTALL_RECORD,
    RELOAD_LINE,
    InstallError,
    enable_server_plugins_in_config,
    find_extension_source,
    find_server_plugin_source,
    install_extension,
    st_data_root,
)
from tests.fakes.st_fixtures import build_unstarted_st, first_start
from tests.fixtures import ST_FIXTURES

FIXTURES = ST_FIXTURES
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def st_dir(tmp_path: Path) -> Path:
    """A SillyTavern folder as it looks after a first start: config.yaml plus two users' settings."""
    st = tmp_path / "SillyTavern"
    st.mkdir()
    shutil.copy(FIXTURES / "config.default.yaml", st / "config.yaml")
    for handle in ("default-user", "alice"):
        user = st / "data" / handle
        (user / "extensions").mkdir(parents=True)
        shutil.copy(FIXTURES / "settings.full-after-first-save.json", user / "settings.json")
    (st / "public" / "scripts" / "extensions" / "third-party").mkdir(parents=True)
    (st / "plugins").mkdir()
    (st / "plugins" / "package.json").write_text('{"type": "commonjs"}\n')
    return st


@pytest.fixture
def ext_source(tmp_path: Path) -> Path:
    """An extension source tree shaped like st-extension/ (manifest, entry, modules, template)."""
    src = tmp_path / "src-ext"
    (src / "src").mkdir(parents=True)
    manifest = {
        "display_name": "NanoGPT Companion",
        "loading_order": 100,
        "js": "index.js",
        "css": "style.css",
        "author": "test",
        "version": "0.1.0",
    }
    (src / "manifest.json").write_text(json.dumps(manifest, indent=4))
    (src / "index.js").write_text("import './src/client.js';\n")
    (src / "style.css").write_text(".nanogpt { color: var(--SmartThemeBodyColor); }\n")
    (src / "src" / "client.js").write_text("export const x = 1;\n")
    (src / "drawer.html").write_text("<div class='nanogpt'></div>\n")
    # Development clutter that must never be installed.
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "junk.pyc").write_bytes(b"\0")
    return src


def tree(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != INSTALL_RECORD
    }


def siblings_left_over(folder: Path) -> list[str]:
    return [p.name for p in folder.parent.iterdir() if p.name.startswith(f".{folder.name}.")]


def test_installs_into_the_default_users_extensions(st_dir: Path, ext_source: Path) -> None:
    report = install_extension(st_dir, source_dir=ext_source)
    target = st_dir / "data" / "default-user" / "extensions" / "nanogpt-companion"
    assert target.is_dir() and not target.is_symlink()
    assert tree(target) == {k: v for k, v in tree(ext_source).items() if "__pycache__" not in k}
    record = json.loads((target / INSTALL_RECORD).read_text())
    assert sorted(record["files"]) == [
        "drawer.html",
        "index.js",
        "manifest.json",
        "src/client.js",
        "style.css",
    ]
    assert report.component("extension").action == "installed"  # type: ignore[union-attr]
    assert report.lines[-1] == RELOAD_LINE
    assert str(target) in report.lines[0]
    assert siblings_left_over(target) == []
    assert not (st_dir / "data" / "alice" / "extensions" / "nanogpt-companion").exists()


def test_rerun_updates_in_place(st_dir: Path, ext_source: Path) -> None:
    install_extension(st_dir, source_dir=ext_source)
    target = st_dir / "data" / "default-user" / "extensions" / "nanogpt-companion"
    (target / "notes-by-user.txt").write_text("mine")
    (ext_source / "index.js").write_text("import './src/client.js'; // v2\n")
    (ext_source / "drawer.html").unlink()
    (ext_source / "src" / "new.js").write_text("export const y = 2;\n")

    report = install_extension(st_dir, source_dir=ext_source)

    assert report.component("extension").action == "updated"  # type: ignore[union-attr]
    assert (target / "index.js").read_text().endswith("// v2\n")
    assert not (target / "drawer.html").exists()
    assert (target / "src" / "new.js").exists()
    assert (target / "notes-by-user.txt").read_text() == "mine"
    assert report.component("extension").kept_files == ("notes-by-user.txt",)  # type: ignore[union-attr]
    assert siblings_left_over(target) == []
    # A third identical run changes nothing but the record.
    before = tree(target)
    install_extension(st_dir, source_dir=ext_source)
    assert tree(target) == before


def test_named_user_and_unknown_user(st_dir: Path, ext_source: Path) -> None:
    install_extension(st_dir, user="alice", source_dir=ext_source)
    assert (st_dir / "data" / "alice" / "extensions" / "nanogpt-companion" / "manifest.json").exists()
    assert not (st_dir / "data" / "default-user" / "extensions" / "nanogpt-companion").exists()
    with pytest.raises(InstallError, match="alice, default-user"):
        install_extension(st_dir, user="carol", source_dir=ext_source)
    with pytest.raises(InstallError):
        install_extension(st_dir, user="../alice", source_dir=ext_source)


def test_data_root_comes_from_config_yaml(st_dir: Path, ext_source: Path) -> None:
    config = st_dir / "config.yaml"
    config.write_text(config.read_text().replace("dataRoot: ./data", "dataRoot: ./elsewhere", 1))
    (st_dir / "elsewhere" / "default-user").mkdir(parents=True)
    assert st_data_root(st_dir) == st_dir.resolve() / "elsewhere"
    install_extension(st_dir, source_dir=ext_source)
    assert (st_dir / "elsewhere" / "default-user" / "extensions" / "nanogpt-companion" / "index.js").exists()
    assert not (st_dir / "data" / "default-user" / "extensions" / "nanogpt-companion").exists()


def test_global_install(st_dir: Path, ext_source: Path) -> None:
    report = install_extension(st_dir, global_install=True, source_dir=ext_source)
    target = st_dir / "public" / "scripts" / "extensions" / "third-party" / "nanogpt-companion"
    assert (target / "manifest.json").exists()
    assert report.component("extension").path == target  # type: ignore[union-attr]
    with pytest.raises(InstallError, match="either"):
        install_extension(st_dir, global_install=True, user="alice", source_dir=ext_source)
    install_extension(st_dir, global_install=True, uninstall=True)
    assert not target.exists()


def test_link_mode_and_switching_between_link_and_copy(st_dir: Path, ext_source: Path) -> None:
    target = st_dir / "data" / "default-user" / "extensions" / "nanogpt-companion"
    report = install_extension(st_dir, link=True, source_dir=ext_source)
    assert target.is_symlink() and target.resolve() == ext_source.resolve()
    assert "linked" in report.lines[0]
    # Edits in the checkout show up without reinstalling: that is the point of --link.
    (ext_source / "index.js").write_text("// live edit\n")
    assert (target / "index.js").read_text() == "// live edit\n"

    install_extension(st_dir, link=True, source_dir=ext_source)
    assert target.is_symlink()
    install_extension(st_dir, source_dir=ext_source)
    assert target.is_dir() and not target.is_symlink()
    assert (ext_source / "index.js").exists(), "replacing the link must not touch the checkout"
    install_extension(st_dir, link=True, source_dir=ext_source)
    assert target.is_symlink()

    install_extension(st_dir, uninstall=True)
    assert not target.exists() and not target.is_symlink()
    assert tree(ext_source)["index.js"] == b"// live edit\n"
    assert siblings_left_over(target) == []


def test_refuses_foreign_folders_unless_forced(st_dir: Path, ext_source: Path, tmp_path: Path) -> None:
    target = st_dir / "data" / "default-user" / "extensions" / "nanogpt-companion"
    target.mkdir()
    (target / "manifest.json").write_text(json.dumps({"display_name": "Someone Else"}))
    with pytest.raises(InstallError, match="not a NanoGPT Companion install"):
        install_extension(st_dir, source_dir=ext_source)
    with pytest.raises(InstallError):
        install_extension(st_dir, uninstall=True)
    assert json.loads((target / "manifest.json").read_text()) == {"display_name": "Someone Else"}

    report = install_extension(st_dir, source_dir=ext_source, force=True)
    assert report.component("extension").action == "updated"  # type: ignore[union-attr]
    assert json.loads((target / "manifest.json").read_text())["display_name"] == "NanoGPT Companion"

    other = tmp_path / "other-ext"
    other.mkdir()
    (other / "manifest.json").write_text(json.dumps({"display_name": "Other"}))
    shutil.rmtree(target)
    target.symlink_to(other)
    with pytest.raises(InstallError):
        install_extension(st_dir, source_dir=ext_source)
    assert target.resolve() == other.resolve()


def test_refuses_a_source_that_is_not_ours(st_dir: Path, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    (wrong / "manifest.json").write_text(json.dumps({"display_name": "Other"}))
    with pytest.raises(InstallError, match="refusing"):
        install_extension(st_dir, source_dir=wrong)


def test_uninstall_removes_exactly_what_was_installed(st_dir: Path, ext_source: Path) -> None:
    install_extension(st_dir, source_dir=ext_source)
    extensions = st_dir / "data" / "default-user" / "extensions"
    target = extensions / "nanogpt-companion"
    (extensions / "another-extension").mkdir()
    (extensions / "another-extension" / "manifest.json").write_text("{}")
    (target / "src" / "user-snippet.js").write_text("// user's own file")

    report = install_extension(st_dir, uninstall=True)

    assert report.component("extension").action == "uninstalled"  # type: ignore[union-attr]
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == [
        "src",
        "src/user-snippet.js",
    ]
    assert "user-snippet.js" in report.lines[0]
    assert (extensions / "another-extension" / "manifest.json").exists()
    assert report.lines[-1] == RELOAD_LINE

    (target / "src" / "user-snippet.js").unlink()
    install_extension(st_dir, source_dir=ext_source)
    install_extension(st_dir, uninstall=True)
    assert not target.exists()
    again = install_extension(st_dir, uninstall=True)
    assert again.component("extension").action == "absent"  # type: ignore[union-attr]


def test_server_plugin_install_explains_how_to_enable(st_dir: Path, ext_source: Path) -> None:
    config_before = (st_dir / "config.yaml").read_bytes()
    report = install_extension(st_dir, server_plugin=True, source_dir=ext_source)

    plugin = st_dir / "plugins" / "nanogpt-companion"
    assert tree(plugin) == tree(find_server_plugin_source())
    assert report.component("server-plugin").action == "installed"  # type: ignore[union-attr]
    assert report.server_plugins_enabled is False
    text = "\n".join(report.lines)
    assert "enableServerPlugins: true" in text
    assert "SILLYTAVERN_ENABLESERVERPLUGINS=true" in text
    assert "--enable-server-plugins" in text
    assert report.lines[-1] == RELOAD_LINE
    assert (st_dir / "config.yaml").read_bytes() == config_before
    assert list(st_dir.glob("config.yaml.bak-*")) == []


def test_installed_plugin_loads_the_way_st_loads_it(st_dir: Path, ext_source: Path) -> None:
    """ST requires the folder (package.json main) and checks info.id, init and exit."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    install_extension(st_dir, server_plugin=True, source_dir=ext_source)
    script = (
        "const p = require(process.argv[1]);"
        "console.log(JSON.stringify({id: p.info.id, init: typeof p.init, exit: typeof p.exit}));"
    )
    out = subprocess.run(
        [node, "-e", script, str(st_dir / "plugins" / "nanogpt-companion")],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert json.loads(out.stdout) == {"id": "nanogpt-companion", "init": "function", "exit": "function"}


def test_enable_server_plugins_edits_only_that_line(st_dir: Path, ext_source: Path) -> None:
    config = st_dir / "config.yaml"
    before_bytes = config.read_bytes()
    before = yaml.safe_load(before_bytes)

    report = install_extension(st_dir, server_plugin=True, enable_server_plugins=True, source_dir=ext_source)

    assert report.server_plugins_enabled is True and report.config_changed
    backups = list(st_dir.glob("config.yaml.bak-*"))
    assert backups == [report.config_backup]
    assert backups[0].read_bytes() == before_bytes
    after_bytes = config.read_bytes()
    diff = [
        line
        for line in difflib.unified_diff(
            before_bytes.decode().splitlines(), after_bytes.decode().splitlines(), lineterm="", n=0
        )
        if not line.startswith(("---", "+++", "@@"))
    ]
    assert diff == ["-enableServerPlugins: false", "+enableServerPlugins: true"]
    assert yaml.safe_load(after_bytes) == {**before, "enableServerPlugins": True}
    assert report.lines[-1] == RELOAD_LINE

    # Already on: nothing written, no new backup.
    again = install_extension(st_dir, server_plugin=True, enable_server_plugins=True, source_dir=ext_source)
    assert not again.config_changed
    assert config.read_bytes() == after_bytes
    assert list(st_dir.glob("config.yaml.bak-*")) == backups


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("enableServerPlugins: false # keep me\n", "enableServerPlugins: true # keep me\n"),
        ("enableServerPlugins:    no\n", "enableServerPlugins:    true\n"),
        ("enableServerPlugins: 'false'\n", "enableServerPlugins: true\n"),
        ("enableServerPlugins:\n", "enableServerPlugins: true\n"),
    ],
)
def test_config_value_forms(tmp_path: Path, line: str, expected: str) -> None:
    config = tmp_path / "config.yaml"
    head = "# top comment\ndataRoot: ./data\nnested:\n  enableServerPlugins: false\n"
    tail = "enableServerPluginsAutoUpdate: true\n"
    config.write_text(head + line + tail)
    assert enable_server_plugins_in_config(config) is not None
    assert config.read_text() == head + expected + tail


def test_config_key_missing_is_appended_and_crlf_kept(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    original = b"# comment\r\ndataRoot: ./data\r\nport: 8000"
    config.write_bytes(original)
    backup = enable_server_plugins_in_config(config)
    assert backup is not None and backup.read_bytes() == original
    assert config.read_bytes() == original + b"\r\nenableServerPlugins: true\r\n"


def test_config_edit_refused_when_it_would_change_more(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    # A duplicate key: editing one line could not produce the intended config, so nothing is written.
    original = "enableServerPlugins: false\nenableServerPlugins: false\n"
    config.write_text(original)
    with pytest.raises(InstallError, match="by hand"):
        enable_server_plugins_in_config(config)
    assert config.read_text() == original
    assert list(tmp_path.glob("config.yaml.bak-*")) == []


def test_enable_without_config_yaml_explains(st_dir: Path, ext_source: Path) -> None:
    (st_dir / "config.yaml").unlink()
    report = install_extension(st_dir, server_plugin=True, enable_server_plugins=True, source_dir=ext_source)
    assert report.server_plugins_enabled is False
    assert any("start SillyTavern once" in line for line in report.lines)
    assert not (st_dir / "config.yaml").exists()


def test_uninstall_with_server_plugin_removes_both(st_dir: Path, ext_source: Path) -> None:
    install_extension(st_dir, server_plugin=True, source_dir=ext_source)
    only_ext = install_extension(st_dir, uninstall=True)
    assert any("--server-plugin" in line for line in only_ext.lines)
    assert (st_dir / "plugins" / "nanogpt-companion" / "index.js").exists()
    install_extension(st_dir, server_plugin=True, source_dir=ext_source)
    report = install_extension(st_dir, uninstall=True, server_plugin=True)
    assert report.component("server-plugin").action == "uninstalled"  # type: ignore[union-attr]
    assert not (st_dir / "plugins" / "nanogpt-companion").exists()
    assert (st_dir / "plugins" / "package.json").exists()


def test_foreign_plugin_folder_is_refused_before_anything_changes(st_dir: Path, ext_source: Path) -> None:
    plugin = st_dir / "plugins" / "nanogpt-companion"
    plugin.mkdir()
    (plugin / "index.js").write_text("module.exports = {};\n")
    with pytest.raises(InstallError, match="server plugin"):
        install_extension(st_dir, server_plugin=True, source_dir=ext_source)
    assert not (st_dir / "data" / "default-user" / "extensions" / "nanogpt-companion").exists()
    assert (plugin / "index.js").read_text() == "module.exports = {};\n"


def test_not_a_sillytavern_folder(tmp_path: Path, ext_source: Path) -> None:
    with pytest.raises(InstallError, match="does not look like"):
        install_extension(tmp_path, source_dir=ext_source)
    with pytest.raises(InstallError, match="not a folder"):
        install_extension(tmp_path / "missing", source_dir=ext_source)


def test_default_sources_are_found_in_the_checkout() -> None:
    assert find_server_plugin_source() == REPO / "plugin" / "st-server-plugin"
    manifest = REPO / "st-extension" / "manifest.json"
    if manifest.exists() and json.loads(manifest.read_text()).get("display_name") == "NanoGPT Companion":
        assert find_extension_source() == REPO / "st-extension"
        assert filecmp.cmp(find_extension_source() / "manifest.json", manifest)
    else:
        with pytest.raises(InstallError, match="Cannot find"):
            find_extension_source()


# ------------------------------------------------------------------------ first run: ST never started yet


@pytest.fixture
def fresh_st(tmp_path: Path) -> Path:
    return build_unstarted_st(tmp_path / "fresh")


def global_copy(st: Path) -> Path:
    return st / "public" / "scripts" / "extensions" / "third-party" / "nanogpt-companion"


def user_copy(st: Path, handle: str = "default-user") -> Path:
    return st / "data" / handle / "extensions" / "nanogpt-companion"


def test_never_started_st_gets_the_extension_for_every_user(fresh_st: Path, ext_source: Path) -> None:
    report = install_extension(fresh_st, source_dir=ext_source)
    expected = {k: v for k, v in tree(ext_source).items() if "__pycache__" not in k}
    assert tree(global_copy(fresh_st)) == expected
    assert report.component("extension").action == "installed"  # type: ignore[union-attr]
    assert "every user" in report.lines[0]
    assert report.lines[-1] == FIRST_START_LINE and RELOAD_LINE not in report.lines
    assert not (fresh_st / "data").exists()  # ST's data root is ST's to create
    assert not (fresh_st / "config.yaml").exists()


def test_data_root_without_users_also_gets_a_global_install(fresh_st: Path, ext_source: Path) -> None:
    """ST 1.13.5 needs ./data to exist before its first start (it writes its cookie secret there first)."""
    (fresh_st / "data").mkdir()
    install_extension(fresh_st, source_dir=ext_source)
    assert (global_copy(fresh_st) / "manifest.json").exists()
    assert list((fresh_st / "data").iterdir()) == []


def test_after_first_start_the_existing_copy_is_updated_not_doubled(fresh_st: Path, ext_source: Path) -> None:
    install_extension(fresh_st, source_dir=ext_source)
    first_start(fresh_st, "default-user", "alice")

    again = install_extension(fresh_st, source_dir=ext_source)
    assert [c.path for c in again.components] == [global_copy(fresh_st)]
    assert not user_copy(fresh_st).exists()  # a user copy would shadow the global one in ST

    (ext_source / "index.js").write_text("// v2\n")
    updated = install_extension(fresh_st, source_dir=ext_source)
    assert [(c.path, c.action) for c in updated.components] == [(global_copy(fresh_st), "updated")]
    assert (global_copy(fresh_st) / "index.js").read_text() == "// v2\n"
    assert updated.lines[-1] == RELOAD_LINE


def test_every_default_copy_is_updated_when_both_exist(fresh_st: Path, ext_source: Path) -> None:
    """ST serves the user's copy over the global one, so updating only one of them could leave the user on
    the old files (1.19.0 src/users.js createExtensionsRouteHandler)."""
    install_extension(fresh_st, source_dir=ext_source)
    first_start(fresh_st)
    install_extension(fresh_st, user="default-user", source_dir=ext_source)
    (ext_source / "index.js").write_text("// v3\n")
    report = install_extension(fresh_st, source_dir=ext_source)
    assert {(c.path, c.action) for c in report.components} == {
        (user_copy(fresh_st), "updated"),
        (global_copy(fresh_st), "updated"),
    }
    removed = install_extension(fresh_st, uninstall=True)
    assert {c.path for c in removed.components if c.action == "uninstalled"} == {
        user_copy(fresh_st),
        global_copy(fresh_st),
    }
    assert not user_copy(fresh_st).exists() and not global_copy(fresh_st).exists()


def test_other_users_but_no_default_user_is_refused_with_choices(fresh_st: Path, ext_source: Path) -> None:
    first_start(fresh_st, "alice")
    with pytest.raises(InstallError, match=r"Known users: alice\. Pass --user HANDLE, or --global"):
        install_extension(fresh_st, source_dir=ext_source)
    assert not global_copy(fresh_st).exists()


def _stats(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        p.relative_to(folder).as_posix(): (p.stat().st_ino, p.stat().st_mtime_ns) for p in folder.rglob("*")
    }


def test_unchanged_rerun_says_so_and_touches_nothing(st_dir: Path, ext_source: Path) -> None:
    install_extension(st_dir, server_plugin=True, source_dir=ext_source)
    target = user_copy(st_dir)
    plugin = st_dir / "plugins" / "nanogpt-companion"
    before = (_stats(target), _stats(plugin), target.stat().st_ino)

    report = install_extension(st_dir, server_plugin=True, source_dir=ext_source)

    assert [c.action for c in report.components] == ["unchanged", "unchanged"]
    assert f"The extension at {target} is already up to date; nothing changed." in report.lines
    assert RELOAD_LINE not in report.lines
    assert not any("Restart SillyTavern" in line for line in report.lines)
    assert (_stats(target), _stats(plugin), target.stat().st_ino) == before
    # A changed byte is an update again.
    (ext_source / "style.css").write_text(".nanogpt { color: red; }\n")
    changed = install_extension(st_dir, source_dir=ext_source)
    assert changed.component("extension").action == "updated"  # type: ignore[union-attr]


def test_unchanged_link_and_a_damaged_copy(st_dir: Path, ext_source: Path) -> None:
    install_extension(st_dir, link=True, source_dir=ext_source)
    again = install_extension(st_dir, link=True, source_dir=ext_source)
    assert again.component("extension").action == "unchanged"  # type: ignore[union-attr]
    install_extension(st_dir, source_dir=ext_source)  # link -> copy is a change
    (user_copy(st_dir) / "index.js").unlink()  # a file we installed went missing: repair it
    report = install_extension(st_dir, source_dir=ext_source)
    assert report.component("extension").action == "updated"  # type: ignore[union-attr]
    assert (user_copy(st_dir) / "index.js").read_bytes() == (ext_source / "index.js").read_bytes()


def test_cli_says_already_up_to_date(st_dir: Path) -> None:
    def run() -> str:
        return subprocess.run(
            [sys.executable, "-m", "nanogpt_companion", "install-extension", "--sillytavern", str(st_dir)],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout  # fmt: skip

    first = run()
    assert "is installed at" in first and RELOAD_LINE in first
    second = run()
    assert second.strip() == f"The extension at {user_copy(st_dir)} is already up to date; nothing changed."


def test_manifest_declares_no_auto_update_for_a_copied_folder() -> None:
    """ST auto-updates a third-party extension whose manifest says ``auto_update`` by running git in its
    folder (1.13.5/1.18.0/1.19.0 public/scripts/extensions.js autoUpdateExtensions, on the first load after
    every ST version change; src/endpoints/extensions.js POST /update runs ``git fetch`` before checking
    that the folder is a repository), and a copied folder is none: ST then shows "Extension update failed:
    Internal Server Error". Our install is a copy updated by ``install-extension``, so it must not ask."""
    manifest = json.loads((REPO / "st-extension" / "manifest.json").read_text())
    assert manifest.get("auto_update", False) is False
    assert manifest["version"] == __version__  # what "Manage extensions" shows next to the name
