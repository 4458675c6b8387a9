"""Shared pytest wiring. Fixtures live in the modules under tests/fakes/, one per real component faked or built."""

pytest_plugins = [
    "tests.fakes.nanogpt_fixtures",
    "tests.fakes.st_fixtures",
    "tests.fakes.service_fixtures",
]
