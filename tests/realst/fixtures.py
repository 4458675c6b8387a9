"""Pytest fixtures for real SillyTavern (listed in tests/conftest.py as a plugin module).

- ``realst_browser`` (module): Debian's Chromium.
- ``stack`` (session): the newest ST with the extension, the service and the fake NanoGPT; tests of
  everything that does not differ between versions use it. Session-wide: a test that stops the service
  or changes the fake must put them back.
- ``versioned_stack`` (session, parametrised over ``ST_VERSIONS``): the same for every supported version;
  the core journeys run on it (their ids end in ``[1.13.5]`` etc.).
- ``st_page`` (function): a fresh settings.json for ``default-user`` (the fixture real ST wrote after
  connecting to NanoGPT), a page of that ST opened and ready, and, when the test ends, a failure for any
  error toast or page error seen meanwhile (``expect_problems`` lets a test declare the ones it causes).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.realst.browser import CHROMIUM, STPage, launch_chromium
from tests.realst.stack import CLEAN_OAI, DEFAULT_USER, RealStack, real_stack
from tests.realst.versions import NEWEST, ST_VERSIONS

CONNECTED = '#ngc_status_pill[data-status="connected"]'


@pytest.fixture(scope="module")
def realst_browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail("/usr/bin/chromium is missing: ./scripts/test installs Debian's chromium package")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        try:
            yield browser
        finally:
            browser.close()


def _stack(tmp_path_factory: pytest.TempPathFactory, version: str) -> Iterator[RealStack]:
    with real_stack(tmp_path_factory.mktemp(f"st-{version}"), version) as stack:
        yield stack


# One ST per test module: modules written apart (journeys, spend, the formatting doctor...) each change the
# user's connection, key and chats, and must not inherit another module's state.
@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealStack]:
    yield from _stack(tmp_path_factory, NEWEST)


@pytest.fixture(scope="module", params=ST_VERSIONS)
def versioned_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RealStack]:
    yield from _stack(tmp_path_factory, str(request.param))


class ProblemGuard:
    """The problems a test expects to cause (e.g. a deliberately failing generation's error toast)."""

    def __init__(self) -> None:
        self.expected: list[re.Pattern[str]] = []

    def expect(self, pattern: str) -> None:
        self.expected.append(re.compile(pattern))

    def unexpected(self, problems: list[str]) -> list[str]:
        return [p for p in problems if not any(e.search(p) for e in self.expected)]


@pytest.fixture
def expect_problems() -> ProblemGuard:
    return ProblemGuard()


def open_st_page(browser: Any, stack: RealStack, **options: Any) -> STPage:
    return STPage.open(browser, stack.url, **options)


def check_page(page: STPage, guard: ProblemGuard | None = None) -> None:
    """Fail on every error toast or page error the page showed (except those the test declared)."""
    problems = page.problems()
    unexpected = guard.unexpected(problems) if guard else problems
    assert not unexpected, "SillyTavern showed errors during the test:\n" + "\n".join(unexpected)


@pytest.fixture
def st_page_for(realst_browser: Any, expect_problems: ProblemGuard) -> Iterator[Any]:
    """Factory: ``st_page_for(stack, width=..., seed=False)`` opens a page of that stack's ST; every page
    it opened is checked for problems and closed when the test ends."""
    opened: list[STPage] = []

    def open_for(stack: RealStack, *, seed: bool = True, connected: bool = True, **options: Any) -> STPage:
        if seed:
            stack.seed_user(DEFAULT_USER, oai=CLEAN_OAI)
        page = open_st_page(realst_browser, stack, **options)
        opened.append(page)
        if connected:
            page.page.wait_for_selector(CONNECTED, state="attached", timeout=60000)
        return page

    yield open_for
    failures: list[str] = []
    for page in opened:
        try:
            check_page(page, expect_problems)
        except AssertionError as exc:
            failures.append(str(exc))
        finally:
            page.close()
    if failures:
        pytest.fail("\n".join(failures), pytrace=False)


@pytest.fixture
def st_page(stack: RealStack, st_page_for: Any) -> STPage:
    page: STPage = st_page_for(stack)
    return page


@pytest.fixture
def versioned_page(versioned_stack: RealStack, st_page_for: Any) -> STPage:
    page: STPage = st_page_for(versioned_stack)
    return page
