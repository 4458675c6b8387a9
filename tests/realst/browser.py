"""Real ST pages in Debian's Chromium (Playwright, never a downloaded browser), watched for problems.

Every page gets, before any of ST's scripts run, a watcher for error toasts (toastr's ``.toast-error``) and
uncaught errors; ``STPage.problems()`` returns everything it saw since the page opened, so a test fails on a
red toast that flashed and vanished mid-test, not only on one still visible at the end.

``STPage.close()`` first holds back ST's debounced settings saves and waits for any save already sent, so the
next test can rewrite ``settings.json`` on disk without a late save from a closed tab overwriting it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

# Runs before ST's own scripts on every document: records error toasts and uncaught errors with a time.
PROBLEM_WATCHER = """
(() => {
    if (window.__ngcProblems) return;
    const problems = window.__ngcProblems = [];
    const record = (kind, text) => problems.push({ kind, text: String(text ?? '').trim(), at: Date.now() });
    window.addEventListener('error', (e) => record('error', e.message || e.error));
    window.addEventListener('unhandledrejection', (e) => record('rejection', e.reason?.message ?? e.reason));
    const seen = new WeakSet();
    const scan = (node) => {
        if (node.nodeType !== 1) return;
        const toasts = node.matches('.toast-error') ? [node] : node.querySelectorAll('.toast-error');
        for (const t of toasts) {
            if (seen.has(t)) continue;
            seen.add(t);
            record('error-toast', t.textContent);
        }
    };
    new MutationObserver((records) => {
        for (const r of records) for (const n of r.addedNodes) scan(n);
    }).observe(document, { childList: true, subtree: true });
})();
"""

APP_READY_FLAG = """
(() => {
    // Set window.__ngcAppReady when ST's APP_READY fires, so a test can wait for it with a timeout
    // (an evaluate() awaiting the event would hang forever on a page stuck behind a popup).
    const poll = () => {
        let c;
        try {
            c = window.SillyTavern?.getContext?.();
        } catch {
            // getContext() reads module bindings that are not initialised until ST's scripts have run.
        }
        const types = c?.eventTypes ?? c?.event_types;
        if (c?.eventSource && types?.APP_READY) {
            // APP_READY fires again for late listeners (ST's EventEmitter auto-fire list).
            c.eventSource.once(types.APP_READY, () => { window.__ngcAppReady = true; });
        } else {
            setTimeout(poll, 25);
        }
    };
    if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', poll);
    else poll();
})();
"""


# What every page of real ST needs from its first script on: the problem watcher and the APP_READY flag.
PAGE_INIT_SCRIPT = PROBLEM_WATCHER + APP_READY_FLAG


def launch_chromium(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


def artifact(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name


@dataclass
class STPage:
    """A page of real ST with its problem watcher; ``page`` is the Playwright page."""

    page: Any
    context: Any
    base_url: str
    page_errors: list[str] = field(default_factory=list)
    _saves_in_flight: int = 0

    @classmethod
    def open(
        cls,
        browser: Any,
        base_url: str,
        *,
        width: int = 1280,
        height: int = 900,
        path: str = "/",
        color_scheme: str | None = None,
        touch: bool = False,
        wait_ready: bool = True,
        before_load: Callable[[Any], None] | None = None,
    ) -> STPage:
        options: dict[str, Any] = {"viewport": {"width": width, "height": height}}
        if color_scheme:
            options["color_scheme"] = color_scheme
        if touch:  # a phone: taps instead of clicks (Playwright's Page.tap needs it)
            options["has_touch"] = True
            options["is_mobile"] = True
        context = browser.new_context(**options)
        context.add_init_script(PAGE_INIT_SCRIPT)
        page = context.new_page()
        st_page = cls(page, context, base_url)
        page.on("pageerror", lambda exc: st_page.page_errors.append(str(exc)))
        page.on("request", st_page._on_request)
        page.on("requestfinished", st_page._on_request_done)
        page.on("requestfailed", st_page._on_request_done)
        if before_load is not None:
            before_load(page)
        page.goto(base_url + path)
        if wait_ready:
            st_page.wait_app_ready()
        return st_page

    # ----- ST's state -----

    def wait_app_ready(self, timeout: float = 60_000) -> None:
        self.page.wait_for_function("() => window.__ngcAppReady === true", timeout=timeout)

    def js(self, expr: str, arg: Any = None) -> Any:
        return self.page.evaluate(expr, arg)

    def slash(self, command: str) -> str:
        result = self.js(
            "async (c) => (await SillyTavern.getContext().executeSlashCommandsWithOptions(c)).pipe", command
        )
        return str(result)

    def problems(self) -> list[str]:
        """Error toasts and uncaught errors since the page opened (and Playwright's own page errors)."""
        try:
            seen = self.js("() => (window.__ngcProblems ?? []).map(p => `${p.kind}: ${p.text}`)")
        except Exception:
            seen = []
        return [*seen, *(f"pageerror: {e}" for e in self.page_errors)]

    def error_toasts(self) -> list[str]:
        return [p for p in self.problems() if p.startswith("error-toast:")]

    def show(self, selector: str, timeout: float = 30_000) -> None:
        """Scroll the first match into view, for a screenshot. Found and scrolled in one page task, because
        the panel re-renders lists on each event (a located node can be replaced before Playwright scrolls
        it, which fails with "not attached to the DOM")."""
        self.page.wait_for_function(
            """(selector) => {
                const node = document.querySelector(selector);
                if (!node) return false;
                node.scrollIntoView({ block: 'nearest' });
                return true;
            }""",
            arg=selector,
            timeout=timeout,
        )

    def screenshot(self, name: str, *, full_page: bool = True) -> Path:
        path = artifact(name)
        self.page.screenshot(path=str(path), full_page=full_page)
        return path

    # ----- closing without a late save -----

    def _on_request(self, request: Any) -> None:
        if request.url.endswith("/api/settings/save"):
            self._saves_in_flight += 1

    def _on_request_done(self, request: Any) -> None:
        if request.url.endswith("/api/settings/save"):
            self._saves_in_flight -= 1

    def close(self, timeout: float = 15.0) -> None:
        """Hold back saves not yet sent, let the ones sent finish, then close the tab."""
        try:
            self.context.route("**/api/settings/save", lambda route: route.abort())
            deadline = time.monotonic() + timeout
            while self._saves_in_flight > 0 and time.monotonic() < deadline:
                self.page.wait_for_timeout(20)  # pumps Playwright's events; ends as soon as the save returns
        finally:
            self.context.close()
