"""Runs the plugin's `node --test` unit tests, so the whole suite stays one pytest command."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .support import node_binary


def test_node_unit_tests_pass() -> None:
    test_file = Path(__file__).with_name("plugin.test.js")
    result = subprocess.run(
        [node_binary(), "--test", str(test_file)], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout
    assert "# pass 6" in result.stdout
