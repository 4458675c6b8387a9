"""scripts/start and scripts/test install only what is missing or changed (issue 12, items 2 and 8).

Each test runs the real scripts in a copy of the project whose .venv is a real virtual environment that
sees this test run's packages (no pip of its own, no network): a second start then must not need the
package index, and what the scripts print is what they install.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import time
import urllib.request
from contextlib import suppress
from pathlib import Path

import pytest

from tests.fakes.service_fixtures import REPO, UpstreamThread, free_port, start_fake_upstream
from tests.fakes.st_fixtures import build_st_install

STAMP = ".venv/.nanogpt-companion-installed"


def offline_env() -> dict[str, str]:
    """No package index reachable: pip's config files ignored, no index, and the URL a closed port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NANOGPT", "PIP_", "VIRTUAL_ENV"))}
    env.update(
        PIP_CONFIG_FILE=os.devnull,
        PIP_NO_INDEX="1",
        PIP_INDEX_URL=f"http://127.0.0.1:{free_port()}/simple/",
        PYTHONUNBUFFERED="1",
    )
    return env


def bash(project: Path, script: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-c", f"set -euo pipefail; source scripts/lib/setup.sh; {script}"],
        cwd=project, env=offline_env(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """The project's files, with a .venv that a previous ./scripts/start filled (its stamp included)."""
    dest = tmp_path / "project"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "node_modules")
    for name in ("scripts", "plugin", "st-extension"):
        shutil.copytree(REPO / name, dest / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, dest / name)
    venv = dest / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    purelib = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    # This run's packages (the companion, its dependencies, pip) without installing anything.
    ours = sysconfig.get_paths()["purelib"]
    (Path(purelib) / "test_run_packages.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    script = venv / "bin" / "nanogpt-companion"
    script.write_text(
        f"#!{venv}/bin/python\nimport sys\nfrom nanogpt_companion.cli import main\nsys.exit(main())\n"
    )
    script.chmod(0o755)
    fingerprint = bash(dest, "project_fingerprint")
    assert fingerprint.returncode == 0, fingerprint.stderr
    (dest / STAMP).write_text(f"{fingerprint.stdout.strip()} \n")
    return dest


def run_start(project: Path, st_dir: Path, upstream: UpstreamThread, state: Path) -> str:
    """./scripts/start until the service answers /health, then stop it as Ctrl+C would; its output."""
    port = free_port()
    log = state / "start.log"
    state.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["./scripts/start", str(st_dir), "--port", str(port), "--upstream", upstream.base_url,
             "--state-dir", str(state)],
            cwd=project, env=offline_env(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise AssertionError(f"scripts/start exited with {process.returncode}:\n{log.read_text()}")
            with suppress(OSError), urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                break
            time.sleep(0.05)
        else:
            raise AssertionError(f"the service did not come up:\n{log.read_text()}")
        process.send_signal(signal.SIGINT)
        assert process.wait(20) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    return log.read_text()


def test_second_start_needs_no_package_index(project: Path, tmp_path: Path) -> None:
    st = build_st_install(tmp_path / "st")
    upstream = start_fake_upstream(n_models=20)
    try:
        first = run_start(project, st.st_dir, upstream, tmp_path / "state")
        second = run_start(project, st.st_dir, upstream, tmp_path / "state")
    finally:
        upstream.stop()
    for output in (first, second):
        assert "Installing" not in output and "pip" not in output.lower(), output
        assert "NanoGPT Companion 0.1.0 on http://127.0.0.1:" in output
    assert "The extension is installed at" in first
    assert "is already up to date; nothing changed." in second


def test_changed_pyproject_tries_to_install_and_starts_anyway_offline(project: Path, tmp_path: Path) -> None:
    with (project / "pyproject.toml").open("a") as pyproject:
        pyproject.write("\n# a changed dependency would be here\n")
    st = build_st_install(tmp_path / "st")
    upstream = start_fake_upstream(n_models=20)
    try:
        output = run_start(project, st.st_dir, upstream, tmp_path / "state")
    finally:
        upstream.stop()
    assert (
        "Installing NanoGPT Companion and its Python dependencies into .venv (pyproject.toml changed)"
        in output
    )
    assert "warning: could not install the changed dependencies (no network?)" in output
    assert "NanoGPT Companion 0.1.0 on http://127.0.0.1:" in output


def test_test_setup_says_one_line_per_install_and_nothing_when_all_is_there(project: Path) -> None:
    wants_tests = bash(project, "ensure_project_installed test")
    assert wants_tests.returncode == 0, wants_tests.stderr
    assert wants_tests.stdout.splitlines() == [
        "Installing NanoGPT Companion with its [test] dependencies into .venv (new dependency group)"
    ]
    assert "warning: could not install the changed dependencies" in wants_tests.stderr  # offline here

    fingerprint = (project / STAMP).read_text().split()[0]
    (project / STAMP).write_text(f"{fingerprint} test\n")  # as after a successful install of the extras
    quiet = bash(
        project,
        "ensure_project_installed test; ensure_project_installed",
    )
    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")


def test_no_install_and_no_network_is_a_clear_error(project: Path) -> None:
    (project / STAMP).unlink()
    (project / ".venv" / "bin" / "nanogpt-companion").unlink()
    done = bash(project, "ensure_project_installed")
    assert done.returncode == 1
    assert done.stdout.splitlines() == [
        "Installing NanoGPT Companion and its Python dependencies into .venv (first install)"
    ]
    assert "error: could not install NanoGPT Companion and its Python dependencies" in done.stderr
