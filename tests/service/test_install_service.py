"""``nanogpt-companion install-service`` (issue 12 item 4): the user service for set-ups without the plugin.

The Linux path runs the real CLI in a subprocess with a temporary ``XDG_CONFIG_HOME`` and ``HOME`` and a
``PATH`` that holds, instead of systemd's ``systemctl``, a small script that records how it was called (or
no ``systemctl`` at all). Nothing here talks to the real systemd. The macOS and Windows definitions are
checked by parsing what would be written.
"""

from __future__ import annotations

import os
import plistlib
import shlex
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

from nanogpt_companion.autostart import serve_command
from nanogpt_companion.user_service import (
    AGENT_LABEL,
    TASK_NAME,
    UNIT_NAME,
    plan_service,
    systemd_unit,
)

REPO = Path(__file__).resolve().parents[2]


@dataclass
class Env:
    home: Path
    xdg: Path
    bin: Path
    calls: Path
    st_dir: Path

    @property
    def unit(self) -> Path:
        return self.xdg / "systemd" / "user" / UNIT_NAME

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {
            "HOME": str(self.home),
            "XDG_CONFIG_HOME": str(self.xdg),
            "XDG_DATA_HOME": str(self.home / ".local/share"),
            "PATH": str(self.bin),
            "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
        }
        return subprocess.run(
            [sys.executable, "-m", "nanogpt_companion", "install-service", *args],
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=60,
            check=False,
        )

    def fake_systemctl(self, stderr: str = "", code: int = 0) -> None:
        script = self.bin / "systemctl"
        script.write_text(
            f'#!/bin/sh\necho "$@" >> {shlex.quote(str(self.calls))}\n'
            + (f"echo {shlex.quote(stderr)} >&2\n" if stderr else "")
            + f"exit {code}\n"
        )
        script.chmod(script.stat().st_mode | stat.S_IXUSR)

    def recorded(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []


@pytest.fixture
def env(tmp_path: Path) -> Env:
    st_dir = tmp_path / "Silly Tavern"  # a space, as in many real paths
    (st_dir / "data").mkdir(parents=True)
    e = Env(tmp_path / "home", tmp_path / "xdg", tmp_path / "bin", tmp_path / "calls.txt", st_dir)
    e.home.mkdir()
    e.bin.mkdir()
    return e


def test_linux_unit_is_installed_enabled_and_printed(env: Env) -> None:
    env.fake_systemctl()
    done = env.run("--sillytavern", str(env.st_dir))
    assert done.returncode == 0, done.stderr
    unit = env.unit.read_text()
    assert stat.S_IMODE(env.unit.stat().st_mode) == 0o644
    command = serve_command(env.st_dir)
    assert f'ExecStart={command[0]} serve --sillytavern "{env.st_dir}"' in unit
    assert "Restart=on-failure" in unit and "WantedBy=default.target" in unit
    # It printed exactly what it wrote, then what it ran.
    out = done.stdout
    assert f"Wrote {env.unit}:" in out
    for line in unit.rstrip("\n").splitlines():
        assert f"  | {line}" in out
    assert env.recorded() == ["--user daemon-reload", f"--user enable --now {UNIT_NAME}"]
    assert f"Ran: systemctl --user enable --now {UNIT_NAME}" in out
    assert f"journalctl --user -u {UNIT_NAME}" in out

    again = env.run("--sillytavern", str(env.st_dir))
    assert again.returncode == 0
    assert f"Replaced {env.unit}:" in again.stdout


def test_uninstall_disables_and_removes_only_our_unit(env: Env) -> None:
    env.fake_systemctl()
    assert env.run("--sillytavern", str(env.st_dir)).returncode == 0
    done = env.run("--uninstall")
    assert done.returncode == 0, done.stderr
    assert not env.unit.exists()
    assert env.recorded()[-2:] == [f"--user disable --now {UNIT_NAME}", "--user daemon-reload"]
    assert f"Removed {env.unit}." in done.stdout

    assert "nothing to remove" in env.run("--uninstall").stdout
    env.unit.parent.mkdir(parents=True, exist_ok=True)
    env.unit.write_text("[Service]\nExecStart=/usr/bin/someone-elses\n")
    refused = env.run("--uninstall")
    assert refused.returncode == 1
    assert "not written by nanogpt-companion" in refused.stdout
    assert env.unit.exists()


@pytest.mark.parametrize(
    "systemctl", ["missing", "no_user_bus"], ids=["no systemctl", "systemctl without a user session"]
)
def test_without_systemctl_user_the_commands_are_printed(env: Env, systemctl: str) -> None:
    if systemctl == "no_user_bus":
        env.fake_systemctl(stderr="Failed to connect to bus: No medium found", code=1)
    done = env.run("--sillytavern", str(env.st_dir))
    assert done.returncode == 0, done.stderr
    assert env.unit.is_file()
    assert "run these yourself:" in done.stdout
    assert "  systemctl --user daemon-reload" in done.stdout
    assert f"  systemctl --user enable --now {UNIT_NAME}" in done.stdout


def test_a_failing_systemctl_is_reported(env: Env) -> None:
    env.fake_systemctl(stderr="Unit file is masked.", code=1)
    done = env.run("--sillytavern", str(env.st_dir))
    assert done.returncode == 1
    assert "Failed: systemctl --user daemon-reload" in done.stdout
    assert "Unit file is masked." in done.stdout


def test_systemd_quoting_survives_awkward_paths() -> None:
    unit = systemd_unit(["/opt/my venv/bin/nanogpt-companion", "serve", "--config", '/c/100%"$HOME"\\x.toml'])
    line = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert line == (
        'ExecStart="/opt/my venv/bin/nanogpt-companion" serve --config "/c/100%%\\"$$HOME\\"\\\\x.toml"'
    )


def test_macos_launch_agent(tmp_path: Path) -> None:
    command = ["/u/.venv/bin/nanogpt-companion", "serve", "--sillytavern", "/u/ST"]
    log = tmp_path / "state" / "service.log"
    plan = plan_service("launchd", command, home=tmp_path, log=log, uid=501)
    assert plan.path == tmp_path / "Library/LaunchAgents" / f"{AGENT_LABEL}.plist"
    agent = plistlib.loads(plan.content)
    assert agent["ProgramArguments"] == command
    assert agent["RunAtLoad"] is True and agent["KeepAlive"] == {"SuccessfulExit": False}
    assert agent["StandardOutPath"] == agent["StandardErrorPath"] == str(log)
    assert plan.load == (("launchctl", "bootstrap", "gui/501", str(plan.path)),)
    assert plan.unload == (("launchctl", "bootout", "gui/501", str(plan.path)),)


def test_windows_scheduled_task(tmp_path: Path) -> None:
    command = [r"C:\u\.venv\Scripts\nanogpt-companion.exe", "serve", "--sillytavern", r"C:\Silly Tavern"]
    log = tmp_path / "service.log"
    plan = plan_service("schtasks", command, home=tmp_path, log=log, state_dir=tmp_path)
    assert plan.content.startswith(b"\xff\xfe")  # UTF-16 with BOM, as schtasks /XML reads it
    ns = {"t": "http://schemas.microsoft.com/windows/2004/02/mit/task"}
    root = ET.fromstring(plan.content.decode("utf-16").split("\n", 1)[1])
    assert "install-service --uninstall" in (
        root.findtext("t:RegistrationInfo/t:Description", namespaces=ns) or ""
    )
    assert root.find("t:Triggers/t:LogonTrigger", ns) is not None
    exec_ = root.find("t:Actions/t:Exec", ns)
    assert exec_ is not None
    arguments = exec_.findtext("t:Arguments", namespaces=ns) or ""
    assert arguments.startswith("-m nanogpt_companion serve --sillytavern ")
    assert '"C:\\Silly Tavern"' in arguments and f"--log-file {log}" in arguments
    assert plan.load[0] == ("schtasks", "/Create", "/TN", TASK_NAME, "/XML", str(plan.path), "/F")


def test_serve_log_file_option(tmp_path: Path) -> None:
    """The Windows task runs windowless, so the service writes its own log (``serve --log-file``)."""
    log = tmp_path / "logs" / "service.log"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "nanogpt_companion",
            "serve",
            "--sillytavern",
            str(tmp_path / "nope"),
            "--log-file",
            str(log),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "SillyTavern directory not found" in done.stderr
    assert log.parent.is_dir()
