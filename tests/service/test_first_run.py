"""First run: the companion installed and started before SillyTavern ever ran (issue 12, item 1).

The extension goes into ST's global third-party folder (ST serves it to every user, the ones it creates
later included), the service starts although ST has no data folder yet, and it picks up each user as ST
creates the folder, writing the token file the extension reads on its first page load.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.fakes.service_fixtures import REPO, free_port, start_fake_upstream, start_service, wait_for
from tests.fakes.st_fixtures import STInstall, build_unstarted_st, first_start


def install_extension(st_dir: Path) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NANOGPT")}
    done = subprocess.run(
        [sys.executable, "-m", "nanogpt_companion", "install-extension", "--sillytavern", str(st_dir)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=60, check=True,
    )  # fmt: skip
    return done.stdout


def test_service_picks_up_users_as_a_never_started_sillytavern_creates_them(tmp_path: Path) -> None:
    st_dir = build_unstarted_st(tmp_path)
    global_copy = st_dir / "public" / "scripts" / "extensions" / "third-party" / "nanogpt-companion"

    out = install_extension(st_dir)
    assert "installed for every user" in out and f"installed at {global_copy}." in out
    assert (global_copy / "manifest.json").exists() and not (st_dir / "data").exists()

    upstream = start_fake_upstream(n_models=50)
    try:
        st = STInstall(st_dir=st_dir, data_root=st_dir / "data", users={})
        st_port = free_port()
        service = start_service(
            st, upstream, tmp_path / "state", st_port=st_port, extra_args=["--log-level", "INFO"]
        )
        try:
            assert service.request("GET", "/health", handle=None)[0] == 200  # up, with no ST data at all

            users = first_start(st_dir)  # SillyTavern starts for the first time
            token_file = users["default-user"].token_file
            wait_for(token_file.exists, "default-user's token file")
            assert json.loads(token_file.read_text())["url"] == service.url
            status, report = service.request("GET", "/api/doctor", handle="default-user")
            assert status == 200 and report["error"] is None

            alice = first_start(st_dir, "alice")["alice"]  # an admin adds a user later
            wait_for(alice.token_file.exists, "alice's token file")
            assert service.request("GET", "/api/account", handle="alice")[0] == 200

            # Every later start finds the global copy and keeps it (no second, per-user copy to go stale).
            again = install_extension(st_dir)
            assert again.strip() == f"The extension at {global_copy} is already up to date; nothing changed."
            assert not (users["default-user"].extensions_dir / "nanogpt-companion").exists()
        finally:
            service.stop()
        log = service.log_text()
        assert log.count("does not exist yet") == 1  # said once, not at every rescan
        assert log.count("SillyTavern created its data folder") == 1
        assert [line for line in log.splitlines() if " WARNING " in line or " ERROR " in line] == []
    finally:
        upstream.stop()
