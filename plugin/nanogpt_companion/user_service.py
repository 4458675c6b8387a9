"""``install-service``: run the companion as the user's own background service, started at log-in.

For set-ups without ST's server plugin (which starts the service with ST): a systemd user unit on Linux, a
LaunchAgent on macOS, a Task Scheduler task on Windows. Each is one file we write (and remove), plus the
platform's own command to load it. The commands go through a ``Runner`` so that tests (and machines where
``systemctl --user`` has no user bus, e.g. containers) get the exact commands printed instead of run.
"""

from __future__ import annotations

import os
import plistlib
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from xml.sax.saxutils import escape

from nanogpt_companion.sillytavern.documents import write_new_file_atomic

Platform = Literal["systemd", "launchd", "schtasks"]
UNIT_NAME = "nanogpt-companion.service"
AGENT_LABEL = "com.nanogpt-companion"
TASK_NAME = "NanoGPT Companion"
HEADER = (
    "Written by `nanogpt-companion install-service`; "
    "remove it with `nanogpt-companion install-service --uninstall`."
)


@dataclass(frozen=True)
class CommandResult:
    ok: bool
    output: str = ""


Runner = Callable[[Sequence[str]], CommandResult | None]
"""Runs a command; None means the command is not available here (then it is printed for the user)."""


@dataclass(frozen=True)
class ServicePlan:
    platform: Platform
    path: Path
    content: bytes
    load: tuple[tuple[str, ...], ...]
    unload: tuple[tuple[str, ...], ...]
    logs: str


@dataclass
class ServiceReport:
    lines: list[str] = field(default_factory=list)
    ok: bool = True


def current_platform() -> Platform:
    if sys.platform == "darwin":
        return "launchd"
    if os.name == "nt":
        return "schtasks"
    return "systemd"


def _systemd_word(arg: str) -> str:
    """One ExecStart word in systemd's syntax: ``%`` and ``$`` are expansions there, so they are doubled;
    anything with spaces, quotes or backslashes is double-quoted with C-style escapes."""
    text = arg.replace("%", "%%").replace("$", "$$")
    if text and not any(c.isspace() or c in "\"'\\;" for c in text):
        return text
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def systemd_unit(command: Sequence[str]) -> str:
    return "\n".join(
        [
            f"# {HEADER}",
            "[Unit]",
            "Description=NanoGPT Companion for SillyTavern",
            "After=network.target",
            "",
            "[Service]",
            "Type=simple",
            "ExecStart=" + " ".join(_systemd_word(arg) for arg in command),
            "Environment=PYTHONUNBUFFERED=1",
            "Restart=on-failure",
            "RestartSec=5",
            "",
            "[Install]",
            "WantedBy=default.target",
            "",
        ]
    )


def launch_agent(command: Sequence[str], log: Path) -> bytes:
    plist = {
        "Label": AGENT_LABEL,
        "Comment": HEADER,
        "ProgramArguments": list(command),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ProcessType": "Background",
        "EnvironmentVariables": {"PYTHONUNBUFFERED": "1"},
        "StandardOutPath": str(log),
        "StandardErrorPath": str(log),
    }
    return plistlib.dumps(plist)


def scheduled_task(command: Sequence[str], log: Path) -> bytes:
    """Task Scheduler XML (UTF-16, as ``schtasks /XML`` expects). The service runs windowless, so its log
    goes to a file (``--log-file``)."""
    program, *args = command
    args = [*args, "--log-file", str(log)]
    arguments = subprocess.list2cmdline(args)
    xml = f"""<?xml version="1.0" encoding="UTF-16"?>
<Task version="1.2" xmlns="http://schemas.microsoft.com/windows/2004/02/mit/task">
  <RegistrationInfo>
    <Description>NanoGPT Companion for SillyTavern. {escape(HEADER)}</Description>
  </RegistrationInfo>
  <Triggers><LogonTrigger><Enabled>true</Enabled></LogonTrigger></Triggers>
  <Principals>
    <Principal id="Author">
      <LogonType>InteractiveToken</LogonType><RunLevel>LeastPrivilege</RunLevel>
    </Principal>
  </Principals>
  <Settings>
    <MultipleInstancesPolicy>IgnoreNew</MultipleInstancesPolicy>
    <DisallowStartIfOnBatteries>false</DisallowStartIfOnBatteries>
    <StopIfGoingOnBatteries>false</StopIfGoingOnBatteries>
    <ExecutionTimeLimit>PT0S</ExecutionTimeLimit>
    <RestartOnFailure><Interval>PT1M</Interval><Count>3</Count></RestartOnFailure>
    <Hidden>true</Hidden>
  </Settings>
  <Actions Context="Author">
    <Exec><Command>{escape(program)}</Command><Arguments>{escape(arguments)}</Arguments></Exec>
  </Actions>
</Task>
"""
    return xml.encode("utf-16")


def windowless(command: Sequence[str]) -> list[str]:
    """On Windows, run the module with ``pythonw.exe`` (no console window at every log-in)."""
    pythonw = Path(sys.executable).with_name("pythonw.exe")
    interpreter = str(pythonw) if pythonw.is_file() else sys.executable
    serve_at = list(command).index("serve") if "serve" in command else len(command)
    return [interpreter, "-m", "nanogpt_companion", *list(command)[serve_at:]]


def plan_service(
    platform: Platform,
    command: Sequence[str],
    *,
    home: Path,
    log: Path,
    xdg_config_home: Path | None = None,
    uid: int = 0,
    state_dir: Path | None = None,
) -> ServicePlan:
    if platform == "systemd":
        unit_dir = (xdg_config_home or home / ".config") / "systemd" / "user"
        return ServicePlan(
            platform,
            unit_dir / UNIT_NAME,
            systemd_unit(command).encode(),
            load=(
                ("systemctl", "--user", "daemon-reload"),
                ("systemctl", "--user", "enable", "--now", UNIT_NAME),
            ),
            unload=(("systemctl", "--user", "disable", "--now", UNIT_NAME),),
            logs=f"journalctl --user -u {UNIT_NAME}",
        )
    if platform == "launchd":
        path = home / "Library" / "LaunchAgents" / f"{AGENT_LABEL}.plist"
        domain = f"gui/{uid}"
        return ServicePlan(
            platform,
            path,
            launch_agent(command, log),
            load=(("launchctl", "bootstrap", domain, str(path)),),
            unload=(("launchctl", "bootout", domain, str(path)),),
            logs=str(log),
        )
    path = (state_dir or log.parent) / "nanogpt-companion-task.xml"
    return ServicePlan(
        platform,
        path,
        scheduled_task(windowless(command), log),
        load=(
            ("schtasks", "/Create", "/TN", TASK_NAME, "/XML", str(path), "/F"),
            ("schtasks", "/Run", "/TN", TASK_NAME),
        ),
        unload=(("schtasks", "/End", "/TN", TASK_NAME), ("schtasks", "/Delete", "/TN", TASK_NAME, "/F")),
        logs=str(log),
    )


def _run_all(commands: Sequence[Sequence[str]], run: Runner, report: ServiceReport, *, must: bool) -> None:
    """Runs the commands in order; on the first that cannot run, prints it and the rest for the user."""
    for index, command in enumerate(commands):
        shown = shlex.join(command)
        result = run(command)
        if result is None:
            report.lines.append("Could not run it from here; run these yourself:")
            report.lines.extend(f"  {shlex.join(c)}" for c in commands[index:])
            return
        if result.ok:
            report.lines.append(f"Ran: {shown}")
            continue
        report.lines.append(
            f"Failed: {shown}" + (f"\n  {result.output.strip()}" if result.output.strip() else "")
        )
        if must:
            report.ok = False
            report.lines.append("Run the remaining commands yourself once that works:")
            report.lines.extend(f"  {shlex.join(c)}" for c in commands[index + 1 :])
            return


def install_service(plan: ServicePlan, run: Runner) -> ServiceReport:
    report = ServiceReport()
    existed = plan.path.exists()
    if existed and plan.platform != "systemd":
        # launchd and Task Scheduler keep the loaded copy: unload the old one so the new file takes effect.
        _run_all(plan.unload, run, ServiceReport(), must=False)
    plan.path.parent.mkdir(parents=True, exist_ok=True)
    write_new_file_atomic(plan.path, plan.content, mode=0o644)
    report.lines.append(f"{'Replaced' if existed else 'Wrote'} {plan.path}:")
    report.lines.append(_shown(plan))
    _run_all(plan.load, run, report, must=True)
    report.lines.append(f"Logs: {plan.logs}")
    return report


def uninstall_service(plan: ServicePlan, run: Runner) -> ServiceReport:
    report = ServiceReport()
    if not plan.path.exists():
        report.lines.append(f"No service is installed ({plan.path} does not exist); nothing to remove.")
        return report
    if (
        HEADER.encode() not in plan.path.read_bytes()
        and HEADER.encode("utf-16-le") not in plan.path.read_bytes()
    ):
        report.ok = False
        report.lines.append(f"{plan.path} was not written by nanogpt-companion; leaving it alone.")
        return report
    _run_all(plan.unload, run, report, must=False)
    plan.path.unlink()
    report.lines.append(f"Removed {plan.path}.")
    if plan.platform == "systemd":
        _run_all((("systemctl", "--user", "daemon-reload"),), run, report, must=False)
    return report


def _shown(plan: ServicePlan) -> str:
    text = plan.content.decode("utf-16") if plan.platform == "schtasks" else plan.content.decode()
    return "\n".join(f"  | {line}" for line in text.rstrip("\n").splitlines())


def system_runner(command: Sequence[str]) -> CommandResult | None:
    """Runs a platform command; None when it is not installed or (systemd) has no user session bus."""
    import shutil  # noqa: PLC0415 - only the CLI path needs it

    if shutil.which(command[0]) is None:
        return None
    try:
        done = subprocess.run(list(command), capture_output=True, text=True, timeout=60, check=False)  # noqa: S603
    except (OSError, subprocess.TimeoutExpired) as exc:
        return CommandResult(False, str(exc))
    output = (done.stdout + done.stderr).strip()
    if done.returncode != 0 and command[0] == "systemctl" and "bus" in output.lower():
        return None  # no user manager here (container, su without a login session)
    return CommandResult(done.returncode == 0, output)
