"""Browser harness: the real extension files in the SillyTavern stand-in page, driven by Debian's Chromium.

The page is served on the ST port the service was configured with (``service_stack.st_origin``), so the
service's CORS rules apply exactly as they would to a real ST tab. ``service_stack`` (tests/fakes) runs
the real service process in front of the fake NanoGPT upstream.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.extension.standin_server import FIXTURES, HANDLE, LoopThread, StandIn, libs_missing

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
SETTINGS_FIXTURE = FIXTURES / "sillytavern/settings.nanogpt-source-selected.json"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("/usr/bin/chromium is not installed (the test set-up installs Debian's chromium package)")
    missing = libs_missing()
    if missing:
        pytest.skip(f"stand-in libraries missing ({', '.join(missing)}): run `npm ci` in tests/extension")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


@dataclass
class Harness:
    standin: StandIn
    st_url: str
    service: Any
    loop: LoopThread
    console: list[Any] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def reset_settings(self, **oai: Any) -> dict[str, Any]:
        """A fresh settings.json (as ST last saved it), optionally with some oai_settings changed.

        The service is made to read the fresh file before any change (a Re-check): the doctor remembers
        a value a user kept after an undo until the setting holds another value, so without that a
        previous test's undo would still stand for the next test, as it would for a real user.
        """
        settings: dict[str, Any] = json.loads(SETTINGS_FIXTURE.read_text())
        self.standin.write_settings(settings)
        status, _ = self.service.request("GET", "/api/doctor?refresh=1")
        assert status == 200
        if oai:
            settings["oai_settings"].update(oai)
            self.standin.write_settings(settings)
        return settings

    def console_errors(self) -> list[str]:
        return [m.text for m in self.console if m.type == "error"] + self.page_errors


@pytest.fixture(scope="module")
def harness(service_stack: Any) -> Iterator[Harness]:
    loop = LoopThread()
    standin = StandIn(
        data_root=service_stack.data_root,
        upstream_models_url=f"{service_stack.upstream.base_url}/v1/models?detailed=true",
    )
    st_url = loop.serve(standin.app(), service_stack.st_port)
    try:
        yield Harness(standin, st_url, service_stack, loop)
    finally:
        loop.run(standin.close())
        loop.close()


def open_page(browser: Any, h: Harness, *, width: int = 1280, height: int = 900) -> Any:
    h.console.clear()
    h.page_errors.clear()
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    # A lambda, not the bound method: Playwright tags handlers with an attribute builtins cannot take.
    page.on("console", lambda msg: h.console.append(msg))  # noqa: PLW0108
    page.on("pageerror", lambda exc: h.page_errors.append(str(exc)))
    page.goto(h.st_url + "/")
    page.wait_for_selector("#ngc_status_pill")
    return page


@pytest.fixture
def page(browser: Any, harness: Harness) -> Iterator[Any]:
    harness.standin.bootstrap_override = None
    harness.reset_settings()
    p = open_page(browser, harness)
    try:
        yield p
    finally:
        p.context.close()


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name


def copy_user_file(h: Harness, src: Path) -> None:
    dest = h.standin.data_root / HANDLE / "user" / "files" / src.name
    shutil.copy(src, dest)
