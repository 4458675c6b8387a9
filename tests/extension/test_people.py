"""People, not selectors: a phone's width, the keyboard, a light theme, in real SillyTavern (newest)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.extension.st_ui import open_drawer, wait_catalog
from tests.realst.browser import STPage
from tests.realst.stack import RealStack

# A light theme as a user would import it (ST's theme JSON; ST ships only dark ones).
LIGHT_THEME = {
    "name": "NGC Light",
    "blur_strength": 0,
    "main_text_color": "rgba(20, 20, 20, 1)",
    "italics_text_color": "rgba(70, 70, 70, 1)",
    "underline_text_color": "rgba(40, 90, 160, 1)",
    "quote_text_color": "rgba(30, 110, 60, 1)",
    "blur_tint_color": "rgba(245, 245, 240, 1)",
    "chat_tint_color": "rgba(250, 250, 248, 1)",
    "user_mes_blur_tint_color": "rgba(235, 235, 230, 1)",
    "bot_mes_blur_tint_color": "rgba(240, 240, 236, 1)",
    "shadow_color": "rgba(0, 0, 0, 0.2)",
    "shadow_width": 1,
    "border_color": "rgba(180, 180, 180, 1)",
    "font_scale": 1,
}


def _luminance(rgb: str) -> float:
    parts = [float(x) for x in rgb[rgb.index("(") + 1 : rgb.index(")")].split(",")[:3]]
    return (0.2126 * parts[0] + 0.7152 * parts[1] + 0.0722 * parts[2]) / 255


def test_phone_width_has_no_horizontal_overflow(stack: RealStack, st_page_for: Any) -> None:
    page: STPage = st_page_for(stack, width=400, height=800)
    open_drawer(page)
    page.page.wait_for_function("document.querySelector('#ngc_usd').textContent !== '—'")
    drawer_w = page.js("document.getElementById('ngc_drawer_root').scrollWidth")
    host_w = page.js("document.getElementById('extensions_settings').clientWidth")
    assert drawer_w <= host_w
    page.screenshot("drawer-400px.png", full_page=False)
    wait_catalog(page)
    page.page.click("#ngc_browse")
    page.page.wait_for_selector("dialog.popup .ngc-catalog .ngc-model")
    overflow = page.js(
        "(() => { const l = document.querySelector('.ngc-catalog-list');"
        " return l.scrollWidth - l.clientWidth; })()"
    )
    assert overflow <= 1
    page.screenshot("catalog-400px.png", full_page=False)


@pytest.mark.parametrize("key", ["Enter", "Space"])
def test_drawer_header_is_keyboard_operable(st_page: STPage, key: str) -> None:
    page = st_page
    page.page.click("#extensions-settings-button .drawer-toggle")
    page.page.wait_for_selector("#rm_extensions_block", state="visible")
    header = page.page.locator(".ngc-drawer .inline-drawer-header")
    header.focus()
    page.page.keyboard.press(key)
    page.page.wait_for_selector("#ngc_drawer_content", state="visible")


def test_light_theme_keeps_the_drawer_readable(stack: RealStack, st_page_for: Any) -> None:
    themes = stack.user_dir() / "themes"
    themes.mkdir(exist_ok=True)
    (themes / "NGC Light.json").write_text(json.dumps(LIGHT_THEME, indent=4), encoding="utf-8")
    page: STPage = st_page_for(stack)
    try:
        page.page.click("#user-settings-button .drawer-toggle")
        page.page.wait_for_selector("#themes", state="visible")
        page.page.select_option("#themes", "NGC Light")
        page.page.wait_for_function(
            "getComputedStyle(document.body).getPropertyValue('--SmartThemeBodyColor').includes('20, 20, 20')"
        )
        open_drawer(page)
        page.page.wait_for_function("document.querySelector('#ngc_usd').textContent !== '—'")
        text = page.js("getComputedStyle(document.getElementById('ngc_usd')).color")
        body = page.js("getComputedStyle(document.body).color")
        assert text == body, "the drawer's text follows ST's theme colour"
        assert _luminance(text) < 0.3, f"dark text on a light theme, got {text}"
        page.screenshot("drawer-light-theme.png", full_page=False)
    finally:
        page.js("() => jQuery('#themes').val('Dark V 1.0').trigger('change')")
