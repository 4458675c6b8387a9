"""The extension's first impression in real SillyTavern, on every supported version."""

from __future__ import annotations

from tests.extension.st_ui import open_drawer
from tests.realst.browser import STPage
from tests.realst.stack import RealStack


def test_loads_connected_with_balance_and_no_error(
    versioned_stack: RealStack, versioned_page: STPage
) -> None:
    page = versioned_page
    status, account = versioned_stack.service.request("GET", "/api/account")  # type: ignore[union-attr]
    assert status == 200
    open_drawer(page)
    usd = account["balance"]["usd"]
    page.page.wait_for_function(f"document.querySelector('#ngc_usd')?.textContent === '${usd:.2f}'")
    page.screenshot(f"first-load-{versioned_stack.version}.png")
    assert (
        page.js("() => SillyTavern.getContext().chatCompletionSettings.chat_completion_source") == "nanogpt"
    )
