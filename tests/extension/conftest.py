"""Browser tests of the extension, all in real SillyTavern (see tests/realst for the harness and its
fixtures): every test here is marked ``browser``, so ``-m "not browser"`` runs the rest of the suite."""

from __future__ import annotations

from pathlib import Path

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)
