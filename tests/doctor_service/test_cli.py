"""Issue 3, CLI: ``nanogpt-companion doctor`` run as a user runs it, against a temporary ST install."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.doctor_service.conftest import nanogpt_settings, ppp_of, st_bytes
from tests.fakes.service_fixtures import REPO, free_port
from tests.fakes.st_fixtures import STInstall, UserSpec, build_st_install


def run_doctor(st: STInstall, state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NANOGPT")}
    # Nothing listens on this port, so --fix takes the direct path (not "through the running service").
    env["NANOGPT_COMPANION_PORT"] = str(free_port())
    return subprocess.run(
        [sys.executable, "-m", "nanogpt_companion", "doctor", "--sillytavern", str(st.st_dir),
         "--state-dir", str(state), "--offline", *args],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=60, check=False,
    )  # fmt: skip


def install(tmp_path: Path) -> STInstall:
    return build_st_install(
        tmp_path,
        users={
            "default-user": UserSpec(settings=nanogpt_settings("")),
            "healthy": UserSpec(settings=nanogpt_settings("merge")),
        },
    )


def test_table_lists_findings_with_explanations_and_exits_1(tmp_path: Path) -> None:
    st = install(tmp_path)
    before = st.user().settings.read_bytes()
    done = run_doctor(st, tmp_path / "state")
    assert done.returncode == 1, done.stderr
    out = done.stdout
    assert "== default-user (SillyTavern 1.18.0)" in out
    assert "[ppp.nanogpt, fixable, auto]" in out
    assert 'Prompt Post-Processing is set to "None"' in out
    assert "fix: Prompt Post-Processing: None → Merge consecutive roles (no tools)" in out
    assert "== healthy (SillyTavern 1.18.0)" in out
    assert st.user().settings.read_bytes() == before  # a check never writes


def test_json_shape_and_one_user(tmp_path: Path) -> None:
    st = install(tmp_path)
    done = run_doctor(st, tmp_path / "state", "--json", "--user", "default-user")
    assert done.returncode == 1, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    assert list(data) == ["default-user"]
    report = data["default-user"]
    assert {"findings", "st_version", "checked_at", "tab_open", "error"} <= set(report)
    assert report["st_version"] == "1.18.0" and report["error"] is None and report["tab_open"] is False
    [ppp] = [f for f in report["findings"] if f["rule"] == "ppp.nanogpt"]
    assert ppp["policy"] == "auto" and ppp["fixable"] is True and ppp["severity"] == "warning"
    assert ppp["patch"] == [
        {
            "path": ["oai_settings", "custom_prompt_post_processing"],
            "value": "merge",
            "old": "",
            "existed": True,
        }
    ]


def test_fix_patches_the_file_and_warns_about_open_tabs(tmp_path: Path) -> None:
    st = install(tmp_path)
    path = st.user().settings
    done = run_doctor(st, tmp_path / "state", "--fix", "--user", "default-user")
    assert done.returncode == 0, done.stderr
    assert "warning: fixing default-user's files directly" in done.stderr
    assert "ST will overwrite the fix" in done.stderr
    assert "-> ppp.nanogpt:" in done.stdout and "applied" in done.stdout
    assert ppp_of(path) == "merge"
    assert path.read_bytes() == st_bytes(nanogpt_settings("merge"))
    # Checking again: the problem is gone.
    again = run_doctor(st, tmp_path / "state", "--json", "--user", "default-user")
    findings = json.loads(again.stdout)["default-user"]["findings"]
    assert not [f for f in findings if f["rule"] == "ppp.nanogpt"]


def test_exit_codes_for_clean_and_wrong_input(tmp_path: Path) -> None:
    st = install(tmp_path)
    clean = run_doctor(st, tmp_path / "state", "--user", "healthy")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    unknown = run_doctor(st, tmp_path / "state", "--user", "nobody")
    assert unknown.returncode == 2
    assert "no SillyTavern user 'nobody'" in unknown.stderr and "default-user" in unknown.stderr
    missing = run_doctor(build_st_install(tmp_path / "x", users=[]), tmp_path / "state2", "--json")
    assert missing.returncode == 0 and json.loads(missing.stdout) == {}
    broken_dir = tmp_path / "nope"
    done = subprocess.run(
        [sys.executable, "-m", "nanogpt_companion", "doctor", "--sillytavern", str(broken_dir),
         "--state-dir", str(tmp_path / "s3"), "--offline"],
        capture_output=True, text=True, cwd=REPO, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "SillyTavern directory not found" in done.stderr


def test_unreadable_settings_are_reported_not_crashed_on(tmp_path: Path) -> None:
    st = install(tmp_path)
    st.user().settings.write_bytes(b'{"oai_settings": {"chat_')
    done = run_doctor(st, tmp_path / "state", "--user", "default-user")
    assert "could not check:" in done.stdout and "not valid JSON" in done.stdout
    assert "Traceback" not in done.stderr
    assert st.user().settings.read_bytes() == b'{"oai_settings": {"chat_'
