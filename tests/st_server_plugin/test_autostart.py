"""Issue 12 item 4: starting ST (with the plugin) starts the service, and ST's shutdown stops it.

The harness plays ST's part exactly where it matters: it loads the plugin, awaits ``init()``, and on SIGTERM
awaits ``exit()`` before it ends (ST's ``exitProcess``, ``src/server-main.js``). The service is the real
one, started with the command line the installer records (``autostart.serve_command``), here pointed at the
fake upstream and a temporary state dir.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nanogpt_companion.autostart import serve_command
from nanogpt_companion.plugin_link import Autostart
from tests.fakes.service_fixtures import (
    UpstreamThread,
    build_stack_install,
    free_port,
    start_fake_upstream,
    start_service,
    wait_for,
)
from tests.fakes.st_fixtures import STInstall

from .support import (
    Harness,
    install_server_plugin,
    link_service,
    pid_alive,
    start_harness,
    started_pid,
    stop_harness,
)


def health(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            return int(resp.status)
    except OSError:
        return None


@dataclass
class Setup:
    st: STInstall
    upstream: UpstreamThread
    port: int
    state_dir: Path
    workdir: Path

    @property
    def log(self) -> Path:
        return self.state_dir / "service.log"

    def command(self) -> list[str]:
        """What install-extension records, plus what points this run at the fake and its own state."""
        return serve_command(
            self.st.st_dir,
            extra=[
                "--port",
                str(self.port),
                "--upstream",
                self.upstream.base_url,
                "--state-dir",
                str(self.state_dir),
            ],
        )

    def link(self, command: list[str] | None = None) -> None:
        autostart = Autostart(command=command or self.command(), log=str(self.log))
        link_service(self.st.st_dir, f"http://127.0.0.1:{self.port}", autostart=autostart)

    def start_st(self, name: str, **limits: int | str) -> Harness:
        return start_harness(
            self.workdir / name,
            self.st.data_root,
            st_dir=self.st.st_dir,
            plugin_dir=self.st.st_dir / "plugins" / "nanogpt-companion",
            env={k: v for k, v in os.environ.items() if not k.startswith("NANOGPT")},
            **limits,
        )


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    st = build_stack_install(tmp_path / "st", free_port())
    (st.st_dir / "plugins").mkdir(exist_ok=True)
    # Installed as a user does; each test then records its own start command in the link file.
    install_server_plugin(st.st_dir, "--no-autostart")
    upstream = start_fake_upstream()
    try:
        yield Setup(st, upstream, free_port(), tmp_path / "state", tmp_path)
    finally:
        upstream.stop()


def test_st_start_starts_the_service_and_st_stop_stops_it(setup: Setup) -> None:
    setup.link()
    st = setup.start_st("st")
    try:
        wait_for(lambda: health(setup.port) == 200, "the service started by the plugin")
        pid = started_pid(st.output())
        wait_for(lambda: "is up at" in st.output(), "the plugin to see the service answer its challenge")
        # The service is usable through the plugin for ST's users (it wrote their token files).
        wait_for(
            (setup.st.data_root / "alice" / "user/files/nanogpt-companion.json").exists,
            "alice's token file",
        )
        with urllib.request.urlopen(
            urllib.request.Request(f"{st.base}/api/account", headers={"X-Test-User": "alice"}), timeout=15
        ) as resp:
            assert resp.status == 200
    finally:
        stop_harness(st)
    # ST's shutdown awaited exit(): by the time it is gone, so is the service it started.
    assert st.process.returncode == 0
    assert not pid_alive(pid)
    assert health(setup.port) is None
    assert f"stopped the NanoGPT Companion service (pid {pid})" in st.output()
    log = setup.log.read_text()
    assert "started by SillyTavern's server plugin" in log
    assert "NanoGPT Companion" in log and "stopped" in log  # the service's own log lines, in the file


def test_a_running_service_is_used_not_duplicated_and_outlives_st(setup: Setup) -> None:
    setup.link()
    running = start_service(setup.st, setup.upstream, setup.state_dir, st_port=8000, port=setup.port)
    try:
        st = setup.start_st("st")
        try:
            wait_for(lambda: "already runs" in st.output(), "the plugin to find the running service")
        finally:
            stop_harness(st)
        assert "started the NanoGPT Companion service" not in st.output()
        # Not the plugin's to stop: the service is still there after ST is gone.
        assert running.process.poll() is None
        assert health(setup.port) == 200
    finally:
        running.stop()


def test_a_stranger_on_the_port_means_no_start(setup: Setup) -> None:
    setup.link()
    with socket.socket() as stranger:
        stranger.bind(("127.0.0.1", setup.port))
        stranger.listen()
        # It accepts and never answers: the plugin's challenge times out.
        st = setup.start_st("st", handshake_timeout_ms=300)
        try:
            wait_for(lambda: "something else answers" in st.output(), "the plugin to refuse the port")
        finally:
            stop_harness(st)
    assert "started the NanoGPT Companion service" not in st.output()
    assert not setup.log.exists()


def test_a_missing_command_is_reported_and_st_keeps_running(setup: Setup, tmp_path: Path) -> None:
    setup.link(command=[str(tmp_path / "no-such-venv" / "bin" / "nanogpt-companion"), "serve"])
    st = setup.start_st("st")
    try:
        wait_for(
            lambda: "could not start the NanoGPT Companion service (ENOENT)" in st.output(), "the report"
        )
        assert "install-extension" in st.output()
        with contextlib.suppress(OSError):
            urllib.request.urlopen(f"{st.base}/health", timeout=5)
        assert st.process.poll() is None
    finally:
        stop_harness(st)
    assert st.process.returncode == 0


def test_a_service_that_exits_at_once_is_reported_with_its_log(setup: Setup) -> None:
    setup.link(command=[*setup.command(), "--no-such-option"])
    st = setup.start_st("st")
    try:
        wait_for(lambda: "exited (code 2)" in st.output(), "the exit report")
        assert str(setup.log) in st.output()
        assert "--no-such-option" in setup.log.read_text()  # argparse's complaint, in the log file
    finally:
        stop_harness(st)


def test_a_service_that_ignores_sigterm_is_killed_on_st_exit(setup: Setup) -> None:
    stubborn = [
        sys.executable,
        "-c",
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
        " print('handler', 'set', flush=True); time.sleep(600)",
    ]
    setup.link(command=stubborn)
    st = setup.start_st("st", stop_timeout_ms=500)
    try:
        wait_for(lambda: setup.log.exists() and "handler set" in setup.log.read_text(), "the stub's set-up")
        pid = started_pid(st.output())
        assert pid_alive(pid)
    finally:
        stop_harness(st)
    assert "did not stop within 500 ms; killing it" in st.output()
    assert not pid_alive(pid)


def test_a_second_serve_says_the_service_already_runs(setup: Setup) -> None:
    """The port is the lock for every way of starting the service; the loser says so before doing anything."""
    running = start_service(setup.st, setup.upstream, setup.state_dir, st_port=8000, port=setup.port)
    try:
        second = subprocess.run(
            [*setup.command(), "--log-level", "DEBUG"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={k: v for k, v in os.environ.items() if not k.startswith("NANOGPT")},
        )
        assert second.returncode == 1
        assert f"already runs at http://127.0.0.1:{setup.port}" in second.stderr
        assert "serving SillyTavern user" not in second.stderr  # it stopped before scanning ST's users
        assert running.process.poll() is None
    finally:
        running.stop()
