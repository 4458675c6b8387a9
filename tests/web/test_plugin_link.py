"""The link file between ST's server plugin and the service (``plugin_link``): who writes it, what it holds,
and the service's proof on ``/health``. The plugin's side of the handshake is tested through the real plugin
in ``tests/st_server_plugin`` and ``tests/hardening/test_plugin_reaim.py``."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import stat
import sys
from pathlib import Path

import pytest

from nanogpt_companion.autostart import serve_command, service_log_path
from nanogpt_companion.cli import main as cli_main
from nanogpt_companion.installer import install_extension
from nanogpt_companion.plugin_link import (
    CHALLENGE_HEADER,
    LINK_FILE_NAME,
    PROOF_HEADER,
    PluginLink,
    link_path,
    proof,
    read_link,
)
from tests.fakes.st_fixtures import MakeSTInstall

from .conftest import StartCompanion, two_user_install

REPO = Path(__file__).resolve().parents[2]


def install_plugin(st_dir: Path, tmp_path: Path, **kwargs: object) -> list[str]:
    (st_dir / "plugins").mkdir(exist_ok=True)
    report = install_extension(
        st_dir,
        server_plugin=True,
        source_dir=REPO / "st-extension",
        plugin_source_dir=REPO / "plugin" / "st-server-plugin",
        state_dir=tmp_path / "state",
        **kwargs,  # type: ignore[arg-type]
    )
    return report.lines


def test_install_writes_the_link_beside_the_plugin(make_st_install: MakeSTInstall, tmp_path: Path) -> None:
    st = two_user_install(make_st_install)
    lines = install_plugin(st.st_dir, tmp_path)
    path = st.st_dir / "plugins" / LINK_FILE_NAME
    assert path == link_path(st.st_dir)
    # Beside the plugin folder, not in it (an update replaces the folder), and outside every user's folder.
    assert path.parent == (st.st_dir / "plugins" / "nanogpt-companion").parent
    assert not path.resolve().is_relative_to(st.data_root.resolve())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    assert data["version"] == 1
    assert data["url"] == "http://127.0.0.1:8719"
    assert len(data["secret"]) >= 43
    assert data["autostart"] == {
        "command": serve_command(st.st_dir),
        "log": str(service_log_path(tmp_path / "state")),
    }
    # The command is this installation's launcher, as scripts/start runs it, against this ST.
    assert data["autostart"]["command"][0].startswith(str(Path(sys.executable).parent))
    assert data["autostart"]["command"][-3:] == ["serve", "--sillytavern", str(st.st_dir)]
    assert any("SillyTavern will start the service" in line and "service.log" in line for line in lines)


def test_reinstall_keeps_secret_and_address_and_uninstall_removes_the_link(
    make_st_install: MakeSTInstall, tmp_path: Path
) -> None:
    st = two_user_install(make_st_install)
    install_plugin(st.st_dir, tmp_path)
    path = link_path(st.st_dir)
    first = read_link(path)
    assert first is not None
    # The service moved to another port meanwhile (it keeps the address current).
    path.write_text(json.dumps({**json.loads(path.read_text()), "url": "http://127.0.0.1:8720"}))
    lines = install_plugin(st.st_dir, tmp_path, autostart=False)
    second = read_link(path)
    assert second is not None
    assert (second.secret, second.url, second.autostart) == (first.secret, "http://127.0.0.1:8720", None)
    assert any("--no-autostart" in line for line in lines)

    lines = install_extension(st.st_dir, uninstall=True, server_plugin=True).lines
    assert not path.exists()
    assert any(LINK_FILE_NAME in line for line in lines)


def test_cli_no_autostart_flag(
    make_st_install: MakeSTInstall, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    st = two_user_install(make_st_install)
    (st.st_dir / "plugins").mkdir()
    code = cli_main(
        ["install-extension", "--sillytavern", str(st.st_dir), "--server-plugin", "--no-autostart"]
    )
    assert code == 0
    link = read_link(link_path(st.st_dir))
    assert link is not None and link.autostart is None
    assert "--no-autostart" in capsys.readouterr().out


@pytest.mark.parametrize("kind", ["symlink", "fifo", "garbage", "foreign_url", "weak_secret", "huge"])
def test_a_link_file_that_is_not_ours_is_not_used(tmp_path: Path, kind: str) -> None:
    path = tmp_path / LINK_FILE_NAME
    good = {"version": 1, "url": "http://127.0.0.1:8719", "secret": secrets.token_urlsafe(32)}
    if kind == "symlink":
        real = tmp_path / "real.json"
        real.write_text(json.dumps(good))
        path.symlink_to(real)
    elif kind == "fifo":
        os.mkfifo(path)  # opened without blocking: no writer, and it must not hang this test
    elif kind == "garbage":
        path.write_text("{not json")
    elif kind == "foreign_url":
        path.write_text(json.dumps({**good, "url": "http://10.0.0.5:8719"}))
    elif kind == "weak_secret":
        path.write_text(json.dumps({**good, "secret": "short"}))
    else:
        path.write_text(json.dumps({**good, "pad": "x" * 70_000}))
    assert read_link(path) is None


def test_the_service_creates_a_missing_link_and_keeps_its_address_current(tmp_path: Path) -> None:
    st_dir = tmp_path / "st"
    (st_dir / "plugins").mkdir(parents=True)
    link = PluginLink(st_dir, "http://127.0.0.1:9100")
    link.sync()
    assert not link_path(st_dir).exists(), "no plugin installed: nothing to link"
    assert link.proof_for("a" * 64) is None

    shutil.copytree(REPO / "plugin" / "st-server-plugin", st_dir / "plugins" / "nanogpt-companion")
    link.sync()  # a plugin copied by hand: the service creates the link with a fresh secret
    created = read_link(link_path(st_dir))
    assert created is not None and created.url == "http://127.0.0.1:9100" and created.autostart is None
    assert link.proof_for("a" * 64) == proof(created.secret, "a" * 64)

    moved = PluginLink(st_dir, "http://127.0.0.1:9200")
    moved.sync()
    after = read_link(link_path(st_dir))
    assert after is not None
    assert (after.url, after.secret) == ("http://127.0.0.1:9200", created.secret)
    for bad in ("", "A" * 64, "ab", "a" * 200):
        assert moved.proof_for(bad) is None


async def test_health_proves_the_service_only_when_challenged(
    start_companion: StartCompanion, make_st_install: MakeSTInstall, tmp_path: Path
) -> None:
    st = two_user_install(make_st_install)
    install_plugin(st.st_dir, tmp_path)
    companion = await start_companion(st)
    link = read_link(link_path(st.st_dir))
    assert link is not None
    # The service rewrote the installer's default address with the one it really listens on.
    assert link.url == companion.settings.public_url
    challenge = secrets.token_hex(32)
    for method in ("HEAD", "GET"):
        resp = await companion.client.request(method, "/health", headers={CHALLENGE_HEADER: challenge})
        assert resp.status == 200
        assert resp.headers[PROOF_HEADER] == proof(link.secret, challenge)
        assert resp.headers["Cache-Control"] == "no-store"
    plain = await companion.client.get("/health")
    assert PROOF_HEADER not in plain.headers
    assert (await plain.json())["service"] == "nanogpt-companion"
