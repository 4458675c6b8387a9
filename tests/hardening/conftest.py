"""Hardening suites. ``--long`` (registered in tests/conftest.py) turns the short soaks into long ones."""

from __future__ import annotations

import pytest


@pytest.fixture
def long_run(request: pytest.FixtureRequest) -> bool:
    """True with ``pytest --long``; False (and no error) while the option is not registered yet."""
    return bool(request.config.getoption("--long", default=False))
