"""Shared pytest wiring. Fixtures live in tests/fakes/, one module per component faked or built."""

import pytest

pytest_plugins = [
    "tests.fakes.nanogpt_fixtures",
    "tests.fakes.st_fixtures",
    "tests.fakes.service_fixtures",
    "tests.realst.fixtures",
]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--long",
        action="store_true",
        default=False,
        help="long hardening runs (10-minute chaos soak, 60 s load)",
    )
