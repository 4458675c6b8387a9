"""Shared pytest wiring. Fixtures live in tests/fakes/, one module per component faked or built."""

pytest_plugins = [
    "tests.fakes.nanogpt_fixtures",
    "tests.fakes.st_fixtures",
    "tests.fakes.service_fixtures",
]
