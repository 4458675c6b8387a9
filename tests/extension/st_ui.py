"""How a user reaches things in real SillyTavern's UI, for the browser tests.

ST keeps the API connection settings (``#rm_api_block``), the AI response settings (``#left-nav-panel``) and
the Extensions panel (``#rm_extensions_block``, where our drawer lives) in top-bar drawers that start
closed; a user clicks the top-bar icon first, then our drawer's header. These helpers do the same clicks.
"""

from __future__ import annotations

from typing import Any

from tests.realst.browser import STPage

CONNECTED = '#ngc_status_pill[data-status="connected"]'
_TOP_DRAWERS = {
    "api": ("#sys-settings-button", "#rm_api_block"),
    "ai": ("#ai-config-button", "#left-nav-panel"),
    "extensions": ("#extensions-settings-button", "#rm_extensions_block"),
}


def open_top_drawer(page: STPage, which: str) -> None:
    """Open one of ST's top-bar panels (ST closes the others when one opens, as for a user)."""
    button, content = _TOP_DRAWERS[which]
    if page.page.is_visible(content):
        return
    page.page.click(f"{button} .drawer-toggle")
    page.page.wait_for_selector(content, state="visible")


def open_drawer(page: STPage) -> None:
    """The Extensions panel, then our drawer in it."""
    open_top_drawer(page, "extensions")
    if not page.page.is_visible("#ngc_drawer_content"):
        page.page.click(".ngc-drawer .inline-drawer-header")
    page.page.wait_for_selector("#ngc_drawer_content", state="visible")


def wait_connected(page: STPage, timeout: float = 30000) -> None:
    page.page.wait_for_selector(CONNECTED, state="attached", timeout=timeout)


def wait_catalog(page: STPage) -> None:
    page.page.wait_for_function("document.querySelector('#ngc_catalog_summary')?.textContent.length > 0")


def oai(page: STPage, key: str) -> Any:
    return page.js("(k) => SillyTavern.getContext().chatCompletionSettings[k]", key)


def record_st_events(page: STPage, *names: str) -> None:
    """Start recording ST's own events (``eventSource``) into ``window.__ngcStEvents``."""
    page.js(
        """(names) => {
        const c = SillyTavern.getContext();
        window.__ngcStEvents = window.__ngcStEvents || [];
        for (const n of names) c.eventSource.on(n, (...a) => window.__ngcStEvents.push([n, a[0]]));
    }""",
        list(names),
    )


def st_events(page: STPage, name: str) -> list[Any]:
    return list(page.js("(n) => (window.__ngcStEvents || []).filter(e => e[0] === n).map(e => e[1])", name))
