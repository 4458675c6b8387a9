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
    _wait_still(page)  # a panel still closing looks visible until its transition ends
    if not page.page.is_visible(content):
        page.page.click(f"{button} .drawer-toggle")
        page.page.wait_for_selector(content, state="visible")
    _wait_still(page)


# ST opens and closes its panels with jQuery animations (1.13.5) or CSS transitions on openDrawer /
# closedDrawer (newer; it closes the open panel, waits its animation time, then opens the next one).
# Endless animations (spinners) never end, so only finite ones count.
_STILL = """() => {
    if (window.jQuery && jQuery(':animated').length) return false;
    return document.getAnimations().every((a) => a.playState !== 'running'
        || a.effect?.getComputedTiming?.().endTime === Infinity);
}"""


def _wait_still(page: STPage) -> None:
    """Act only once nothing in ST's layout moves."""
    page.page.wait_for_function(_STILL)


_DRAWER_FOR = {content: which for which, (_button, content) in _TOP_DRAWERS.items()}


def reveal(page: STPage, selector: str) -> None:
    """Make an ST control visible the way a user would: open the top-bar panel that holds it, then every
    closed inline drawer (ST's collapsible sections) around it."""
    top = page.js(
        """(sel) => { const el = document.querySelector(sel);
        const d = el?.closest('.drawer-content'); return d ? '#' + d.id : null; }""",
        selector,
    )
    if top in _DRAWER_FOR:
        open_top_drawer(page, _DRAWER_FOR[top])
    for _ in range(5):
        if page.page.is_visible(selector):
            return
        toggled = page.js(
            """(sel) => { const el = document.querySelector(sel);
            for (let d = el?.closest('.inline-drawer'); d; d = d.parentElement?.closest('.inline-drawer')) {
                const content = d.querySelector(':scope > .inline-drawer-content');
                if (content && getComputedStyle(content).display === 'none') {
                    const toggle = ':scope > .inline-drawer-toggle, :scope > .inline-drawer-header';
                    d.querySelector(toggle)?.click();
                    return true;
                }
            }
            return false; }""",
            selector,
        )
        _wait_still(page)
        if not toggled:
            break
    page.page.wait_for_selector(selector, state="visible")


def open_drawer(page: STPage) -> None:
    """The Extensions panel, then our drawer in it."""
    open_top_drawer(page, "extensions")
    for _attempt in range(3):
        closed = page.js(
            "() => getComputedStyle(document.getElementById('ngc_drawer_content')).display === 'none'"
        )
        if closed:
            page.page.click(".ngc-drawer .inline-drawer-header")
        _wait_still(page)
        if page.page.is_visible("#ngc_drawer_content"):
            return
        # A click that landed while ST was still laying its panel out toggles nothing: look again.
        open_top_drawer(page, "extensions")
    page.page.wait_for_selector("#ngc_drawer_content", state="visible")
    _wait_still(page)


def wait_connected(page: STPage, timeout: float = 60000) -> None:
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


def connect_builtin(page: STPage) -> int:
    """Press ST's Connect (API Connections) and wait for ST's own fill of the NanoGPT model list."""
    open_top_drawer(page, "api")
    page.page.click("#api_button_openai")
    # ST asks NanoGPT (the fake, through ST's server) for the list; a loaded CI machine with two ST tabs
    # starting at once has needed more than 30 s.
    page.page.wait_for_function(
        "document.querySelectorAll('#model_nanogpt_select option').length > 100", timeout=60000
    )
    wait_online(page)
    return int(page.js("document.querySelectorAll('#model_nanogpt_select option').length"))


def wait_online(page: STPage, timeout: float = 30000) -> None:
    """ST's own connection status (the plug icon): anything but "no connection"."""
    page.page.wait_for_function(
        "() => SillyTavern.getContext().onlineStatus !== 'no_connection'", timeout=timeout
    )


# ST marks <body data-generating> from the moment a generation blocks the send button until it unblocks it
# (activateSendButtons, 1.13.5 to 1.19.0). The stop button hides a little earlier, so a message typed in that
# gap is silently dropped by ST (sendTextareaMessage returns while is_send_press is set): wait for the flag.
ST_IDLE = "() => !document.body.dataset.generating"

# ST's send button runs through a mutex (1.18+) that drops a click while the previous send is still
# finishing (saving the chat, its own listeners) although the button is back; the text stays in the box and a
# user presses send again. So does this: once a second, while our text is still in the box and ST is idle.
# Generate() empties the box in the step that blocks sending, so a click that was taken is never repeated.
_SEND_TAKEN = """([n, text]) => {
    const c = SillyTavern.getContext();
    if (c.chat.length > n) return true;
    const box = document.querySelector('#send_textarea');
    const now = Date.now();
    if (box.value === text && !document.body.dataset.generating && now - (window.__ngcLastSend ?? 0) > 1000) {
        window.__ngcLastSend = now;
        document.querySelector('#send_but').click();
    }
    return false;
}"""

_REPLY_DONE = """([n, replies]) => {
    const chat = SillyTavern.getContext().chat;
    const last = chat[chat.length - 1];
    const streaming = document.querySelector('#mes_stop')?.offsetParent !== null;
    return chat.length >= n + 1 + replies && !last.is_user && last.mes.length > 0 && !streaming
        && !document.body.dataset.generating;
}"""
_NOTHING_OPEN = "() => { const c = SillyTavern.getContext(); return c.characterId == null && !c.groupId; }"


def send_message(page: STPage, text: str, *, replies: int = 1, timeout: float = 30000) -> str:
    """Type into ST's chat box as a user does and return the last reply ST shows (a character is opened
    first when no chat is: ST's welcome screen has no chat to send in). ``replies``: how many replies the
    message gets (in a group chat, one per member who answers)."""
    if page.js(_NOTHING_OPEN):
        page.js("async () => { await SillyTavern.getContext().selectCharacterById(0); }")
        page.page.wait_for_function("() => SillyTavern.getContext().chat.length > 0")
    page.page.wait_for_function(ST_IDLE, timeout=timeout)
    before = int(page.js("() => SillyTavern.getContext().chat.length"))
    page.page.fill("#send_textarea", text)
    page.js("() => { window.__ngcLastSend = Date.now(); }")
    page.page.click("#send_but")
    page.page.wait_for_function(_SEND_TAKEN, arg=[before, text], polling=250, timeout=timeout)
    page.page.wait_for_function(_REPLY_DONE, arg=[before, replies], timeout=timeout)
    return str(page.js("() => SillyTavern.getContext().chat.at(-1).mes"))


# The formatting doctor in the chat, off for this tab (the extension reads its settings on every reply).
REPLY_DOCTOR_OFF = (
    "() => { SillyTavern.getContext().extensionSettings.nanogpt_companion.reply_doctor = false; }"
)
