"""How the service is started when nobody types the command: by ST's server plugin, or by the OS.

One command line for every way of starting it (``scripts/start``, the plugin's autostart, a user service),
so they all run the same installation against the same SillyTavern. The OS service definitions themselves
(systemd, launchd, Task Scheduler) live in ``user_service``.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from nanogpt_companion.config import default_state_dir

LOG_FILE_NAME = "service.log"


def console_script() -> list[str]:
    """This installation's ``nanogpt-companion`` launcher (the venv's script, as ``scripts/start`` runs it).

    ``sys.executable`` is not resolved: in a venv it is a symlink, and resolving it would leave the venv.
    Without the script (a bare ``python -m`` checkout) the module form runs the same code.
    """
    scripts = Path(sys.executable).parent
    launcher = scripts / ("nanogpt-companion.exe" if os.name == "nt" else "nanogpt-companion")
    if launcher.is_file():
        return [str(launcher)]
    return [sys.executable, "-m", "nanogpt_companion"]


def serve_command(st_dir: Path | None, *, extra: list[str] | None = None) -> list[str]:
    command = [*console_script(), "serve"]
    if st_dir is not None:
        command += ["--sillytavern", str(Path(os.path.abspath(st_dir.expanduser())))]
    return command + (extra or [])


def service_log_path(state_dir: Path | None = None) -> Path:
    """Where a service started in the background writes its log: ``<state dir>/service.log``."""
    return (state_dir or default_state_dir()) / LOG_FILE_NAME
