"""The running service as users start it: restarted in place with ``-OO -P`` and parsing NanoGPT's lists in
a helper process (README, Performance: memory). Both are what the idle-memory figure rests on."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.fakes.service_fixtures import build_stack_install, free_port, start_fake_upstream, start_service


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the command line from /proc")
def test_the_service_runs_lean_and_parses_the_catalogue_in_a_helper(tmp_path: Path) -> None:
    upstream = start_fake_upstream(n_models=50)
    try:
        st_port = free_port()
        st = build_stack_install(tmp_path, st_port)
        service = start_service(st, upstream, tmp_path / "state", st_port=st_port)
        try:
            # The process we started is the service, now running its restarted command line.
            argv = Path(f"/proc/{service.process.pid}/cmdline").read_bytes().split(b"\0")
            assert argv[1:6] == [b"-OO", b"-P", b"-m", b"nanogpt_companion", b"serve"]
            status, body = service.request("GET", "/api/catalog")
            assert status == 200 and body["count"] == 50
            log = service.log_text()
            assert "catalogue refreshed" in log and "helper process" not in log
        finally:
            service.stop()
    finally:
        upstream.stop()
