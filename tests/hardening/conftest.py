"""Hardening suites. ``--long`` (registered in tests/conftest.py) turns the short soaks into long ones."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakes.service_fixtures import UpstreamThread, start_fake_upstream


@pytest.fixture
def long_run(request: pytest.FixtureRequest) -> bool:
    """True with ``pytest --long``; False (and no error) while the option is not registered yet."""
    return bool(request.config.getoption("--long", default=False))


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamThread]:
    """One fake NanoGPT for a module's real service processes."""
    thread = start_fake_upstream()
    try:
        yield thread
    finally:
        thread.stop()
