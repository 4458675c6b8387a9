"""How the service is started when nobody types the command: by ST's server plugin, or by the OS.

One command line for every way of starting it (``scripts/start``, the plugin's autostart, a user service),
so they all run the same installation against the same SillyTavern. The OS service definitions themselves
(systemd, launchd, Task Scheduler) live in ``user_service``.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from pathlib import Path
from typing import Any

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


def running_service(url: str, timeout: float = 1.0) -> dict[str, Any] | None:
    """The ``/health`` answer of a companion service already listening at ``url``, else None.

    ``serve`` asks before it starts anything: ST's plugin, a user service and a terminal may all try to start
    the service, and the port is the lock; the second one should say so plainly, not fail on bind after
    having opened the store and scanned ST's users.
    """
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as resp:  # noqa: S310 (our loopback URL)
            body = json.loads(resp.read(65536))
    except (OSError, ValueError):
        return None
    if isinstance(body, dict) and body.get("status") == "ok" and "api_version" in body:
        return body
    return None
