"""What a chat cost, in real SillyTavern: generations ST sends to NanoGPT (the fake, which charges the
account per request) are noticed through ST's own events, reported by the extension (never their text),
measured by the service from the account's balance or quota, and shown in the drawer and by /nano-spend.

The service is restarted for this module with short spend poll intervals (the defaults wait 15 s, or 60 s
for subscribers, between reads of the balance) and put back afterwards.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.extension.st_ui import connect_builtin, oai, open_drawer, send_message
from tests.fakes.nanogpt_inference import Reply
from tests.fakes.nanogpt_upstream import PAYG_KEY, SUBSCRIBER_KEY, price_of
from tests.realst.browser import STPage
from tests.realst.fixtures import CONNECTED, check_page
from tests.realst.stack import CLEAN_OAI, DEFAULT_USER, RealStack, real_stack
from tests.realst.versions import NEWEST

FAST_SPEND = {
    "NANOGPT_COMPANION_SPEND_POLL_SETTLE": "0.5",
    "NANOGPT_COMPANION_SPEND_POLL_MIN_INTERVAL": "1",
    "NANOGPT_COMPANION_SPEND_POLL_SUBSCRIBER_INTERVAL": "1",
}


def _fast_service(stack: RealStack) -> Iterator[RealStack]:
    port = stack.stop_service()
    stack.start_service(env=FAST_SPEND, port=port)
    try:
        yield stack
    finally:
        stack.stop_service()
        stack.start_service(port=port)


@pytest.fixture(scope="module")
def spend_stack(stack: RealStack) -> Iterator[RealStack]:
    yield from _fast_service(stack)


@pytest.fixture(scope="module")
def versioned_spend_stack(versioned_stack: RealStack) -> Iterator[RealStack]:
    yield from _fast_service(versioned_stack)


@pytest.fixture
def priced() -> Iterator[Any]:
    """Give a model a price and a reply with many tokens, so one generation costs cents; put back after."""
    touched: list[tuple[Any, str, dict[str, Any], Reply | None]] = []

    def price(
        stack: RealStack, model: str, *, prompt: float, completion: float, tokens: tuple[int, int]
    ) -> Any:
        fake = stack.fake
        touched.append((fake, model, dict(fake.model(model)["pricing"]), fake.inference.replies.get(model)))
        stack.upstream.call(lambda: fake.set_price(model, prompt=prompt, completion=completion))
        reply = Reply(f"A priced answer from {model}.", prompt_tokens=tokens[0], completion_tokens=tokens[1])
        fake.inference.replies[model] = reply
        return fake.model(model)

    yield price
    for fake, model, pricing, reply in reversed(touched):
        fake.set_price(model, prompt=pricing.get("prompt"), completion=pricing.get("completion"))
        if reply is None:
            fake.inference.replies.pop(model, None)
        else:
            fake.inference.replies[model] = reply


def slow_replies(stack: RealStack, model: str) -> None:
    """Thirty words at 0.15 s each: a generation streams for seconds, so two sent one after the other
    really run at the same time, however loaded the machine (``priced`` puts the reply back)."""
    current = stack.fake.inference.reply_for(model, "v1")
    stack.fake.inference.replies[model] = Reply(
        "slow " * 30, prompt_tokens=current.prompt_tokens, completion_tokens=current.completion_tokens
    )
    stack.fake.inference.stream_chunk_delay = 0.15


def rows(stack: RealStack, *, chat_id: str | None = None, handle: str = DEFAULT_USER) -> list[dict[str, Any]]:
    assert stack.service is not None
    path = "/api/spend/generations?limit=50" + (f"&chat_id={quote(chat_id)}" if chat_id else "")
    status, body = stack.service.request("GET", path, handle=handle)
    assert status == 200, body
    return list(body["rows"])


def wait_rows(stack: RealStack, predicate: Any, *, timeout: float = 30, **query: Any) -> list[dict[str, Any]]:
    """Until the ledger's rows satisfy ``predicate`` (the service measures a row after its next reading)."""
    deadline = time.monotonic() + timeout
    last: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        last = rows(stack, **query)
        if predicate(last):
            return last
        time.sleep(0.1)
    raise AssertionError(f"the spend ledger never got there; last rows: {json.dumps(last, indent=1)}")


BUDGET_TOAST_SHOWN = "() => [...document.querySelectorAll('.toast')].some(t => /budget/.test(t.textContent))"


def charges_since(stack: RealStack, start: int) -> list[Any]:
    return list(stack.fake.charges[start:])


def chat_id(page: STPage) -> str:
    return str(page.js("() => SillyTavern.getContext().getCurrentChatId()"))


def test_each_generation_is_reported_and_measured(
    versioned_spend_stack: RealStack, st_page_for: Any, priced: Any
) -> None:
    """Pay-as-you-go key, ST's built-in NanoGPT source: two messages in two chats, each its own measured cost,
    with the chat, character, model, message id and ST's token counts; the reports carried none of the text.
    The drawer and /nano-spend tell this chat from today; the chat's list shows cost beside the estimate."""
    stack = versioned_spend_stack
    assert stack.service is not None
    stack.seed_user(oai=CLEAN_OAI, key=PAYG_KEY)
    page: STPage = st_page_for(stack, seed=False)
    reports: list[str] = []
    page.page.on(
        "request",
        lambda r: reports.append(r.post_data or "") if r.url.endswith("/api/spend/generations") else None,
    )
    connect_builtin(page)
    model = oai(page, "nanogpt_model")
    entry = priced(stack, model, prompt=20.0, completion=60.0, tokens=(1500, 400))
    before = len(rows(stack))
    page.js("async () => { await SillyTavern.getContext().selectCharacterById(0); }")
    page.page.wait_for_function("() => SillyTavern.getContext().chat.length > 0")
    chats: list[str] = []
    for n, text in enumerate(("What does a message cost?", "And one in a new chat?"), start=1):
        if n == 2:  # a second chat of the same character: "this chat" is no longer "today"
            old = chat_id(page)
            page.slash("/newchat")
            page.page.wait_for_function(
                "(old) => SillyTavern.getContext().getCurrentChatId() !== old", arg=old
            )
        chats.append(chat_id(page))
        start = len(stack.fake.charges)
        reply = send_message(page, text)
        assert reply == f"A priced answer from {model}."
        measured = wait_rows(stack, lambda r, n=n: len(r) >= before + n and r[0]["status"] == "measured")
        row = measured[0]
        (charge,) = charges_since(stack, start)
        assert charge.usd == price_of(entry, 1500, 400) and charge.model == model
        assert Decimal(str(row["measured_usd"])) == charge.usd
        assert not row["approximate"] and row["shared_with"] == 1 and row["channel"] == "usd"
        assert row["model"] == model and row["source"] == "nanogpt" and row["endpoint"] == "v1"
        assert row["chat_id"] == chats[-1] and row["character"]
        assert row["message_id"] == page.js("() => SillyTavern.getContext().chat.length - 1"), measured[:4]
        assert row["prompt_tokens"] > 0 and row["completion_tokens"] > 0  # ST's own tokenizer
        assert row["estimate_usd"] is not None
    assert len(set(chats)) == 2
    assert len(reports) >= 2 and all(json.loads(body)["model"] == model for body in reports)
    for body in reports:
        assert "What does a message cost?" not in body and "priced answer" not in body

    mine = rows(stack, chat_id=chats[-1])
    assert len(mine) == 1
    chat_total = mine[0]["measured_usd"]
    _, overview = stack.service.request("GET", "/api/spend")
    today, month = overview["today"]["usd"], overview["month"]["usd"]
    # Other tests of this session generate on the same key: their shares make a period approximate ("~").
    month_shown = ("~" if _approximate(overview["month"]) else "") + _cost(month)
    assert today >= 2 * chat_total > 0
    open_drawer(page)
    page.page.wait_for_function(
        "(t) => document.querySelector('#ngc_spend_chat')?.textContent === t", arg=_cost(chat_total)
    )
    assert page.page.text_content("#ngc_spend_today") == _cost(today)
    # The chat's generations: measured cost beside the price estimate.
    page.page.click("#ngc_spend_recent_box summary")
    item = page.page.wait_for_selector('#ngc_spend_recent li[data-status="measured"]')
    assert item is not None
    text = item.text_content() or ""
    assert _cost(chat_total) in text and f"estimate {_cost(mine[0]['estimate_usd'])}" in text, text

    # /nano-spend: named arguments first (ST's parser); the value pipes on, the toast only without quiet.
    assert page.slash("/nano-spend quiet=true chat") == str(round(chat_total, 8))
    assert page.slash("/nano-spend quiet=true today") == str(round(today, 8))
    assert page.slash("/nano-spend quiet=true") == str(round(today, 8))
    assert page.slash("/nano-spend quiet=true format=text month").startswith(f"This month: {month_shown}")
    assert json.loads(page.slash("/nano-spend quiet=true format=json chat"))["generations"] == 1
    assert not page.js(
        "() => [...document.querySelectorAll('.toast')].some(t => /NanoGPT gen/.test(t.textContent))"
    )
    assert page.slash("/nano-spend month | /pass") == str(round(month, 8))
    page.page.wait_for_selector(f".toast-info:has-text('This month: {month_shown}')")
    assert page.slash("/nano-spend yesterday") == ""
    page.page.wait_for_selector(".toast-warning:has-text('expected chat, today or month')")
    page.js("() => toastr.clear()")
    page.page.wait_for_function("() => !document.querySelector('.toast')")
    page.js("() => document.getElementById('ngc_spend').scrollIntoView()")
    page.screenshot(f"spend-drawer-{stack.version}.png", full_page=False)


def _approximate(totals: dict[str, Any]) -> bool:
    """The drawer's rule for a "~" (st-extension/src/spend-format.js isApproximate)."""
    return bool(
        totals.get("approximate")
        or (totals.get("estimated_usd") or 0) > 0
        or (totals.get("pending") or 0) > 0
    )


def _cost(usd: float) -> str:
    """The drawer's formatCost (spend-format.js)."""
    if usd == 0:
        return "$0"
    if usd >= 100:
        return f"${usd:.0f}"
    if usd >= 1:
        return f"${usd:.2f}"
    if usd >= 0.01:
        return f"${usd:.3f}"
    return f"${float(f'{usd:.2g}'):g}"


def test_overlapping_generations_in_two_tabs_share_the_change(
    spend_stack: RealStack, st_page_for: Any, priced: Any
) -> None:
    """Two tabs of one user, two chats, both streaming at once: one reading covers both generations,
    so each gets a share of the change, marked approximate, and the shares add up to what was charged."""
    stack = spend_stack
    stack.seed_user(oai=CLEAN_OAI, key=PAYG_KEY)
    first: STPage = st_page_for(stack, seed=False)
    second: STPage = st_page_for(stack, seed=False)
    for page in (first, second):
        connect_builtin(page)
    model = oai(first, "nanogpt_model")
    priced(stack, model, prompt=20.0, completion=60.0, tokens=(1500, 400))
    # One character (ST's default content has one), two chats: the second tab starts a new chat.
    for page in (first, second):
        page.js("async () => { await SillyTavern.getContext().selectCharacterById(0); }")
        page.page.wait_for_function("() => SillyTavern.getContext().chat.length > 0")
    second.slash("/newchat")
    second.page.wait_for_function(
        "(old) => SillyTavern.getContext().getCurrentChatId() !== old", arg=chat_id(first)
    )
    chats = {chat_id(first), chat_id(second)}
    assert len(chats) == 2
    slow_replies(stack, model)
    try:
        start = len(stack.fake.charges)
        for page in (first, second):
            page.page.fill("#send_textarea", "Both at once?")
        first.page.click("#send_but")
        second.page.click("#send_but")
        done = wait_rows(
            stack,
            lambda rs: sum(1 for r in rs if r["chat_id"] in chats and r["status"] == "measured") >= 2,
            timeout=60,
        )
    finally:
        stack.fake.inference.stream_chunk_delay = 0.0
    both = [r for r in done if r["chat_id"] in chats][:2]
    spent = sum((c.usd for c in charges_since(stack, start)), Decimal(0))
    assert all(r["approximate"] and r["shared_with"] == 2 for r in both), both
    assert sum(r["measured_usd"] for r in both) == pytest.approx(float(spent), abs=1e-9)
    open_drawer(first)
    first.page.wait_for_selector('.ngc-stat[data-stat="chat"][data-approx="true"]')


def test_subscriber_sees_quota_used_per_chat(spend_stack: RealStack, st_page_for: Any) -> None:
    stack = spend_stack
    stack.seed_user(oai=CLEAN_OAI, key=SUBSCRIBER_KEY)
    page: STPage = st_page_for(stack, seed=False)
    connect_builtin(page)
    model = oai(page, "nanogpt_model")
    multiplier = stack.fake.model(model)["subscription"]["inputTokenMultiplier"]
    reply = stack.fake.inference.reply_for(model, "v1")
    # A chat of its own: the default chat has pay-as-you-go spend of earlier tests of this stack.
    page.js("async () => { await SillyTavern.getContext().selectCharacterById(0); }")
    page.page.wait_for_function("() => SillyTavern.getContext().chat.length > 0")
    old_chat = chat_id(page)
    page.slash("/newchat")
    page.page.wait_for_function("(old) => SillyTavern.getContext().getCurrentChatId() !== old", arg=old_chat)
    start = len(stack.fake.charges)
    before = len(rows(stack))
    send_message(page, "Is this on my subscription?")
    row = wait_rows(stack, lambda r: len(r) > before and r[0]["status"] == "measured")[0]
    (charge,) = charges_since(stack, start)
    assert charge.usd is None and charge.quota_tokens == reply.prompt_tokens * multiplier
    assert row["channel"] == "quota" and row["measured_quota"] == charge.quota_tokens
    assert row["quota_unit"] == "tokens" and row["usd"] == 0
    open_drawer(page)
    page.page.wait_for_selector("#ngc_spend_mode:not([hidden])")
    page.page.wait_for_function(
        "() => / tokens/.test(document.querySelector('#ngc_spend_chat')?.textContent ?? '')"
    )
    shown = page.page.text_content("#ngc_spend_chat") or ""
    assert re.fullmatch(r"[\d.]+k? tokens \(.+%\)", shown), shown  # quota and its share, not dollars
    assert page.slash("/nano-spend quiet=true chat") == str(row["quota"]).removesuffix(".0")
    page.screenshot("spend-subscriber.png", full_page=False)


# A second character and a group of both, made through ST's own endpoints (so the files are what this ST
# writes), then opened as ST's group list does. "List" activation: every member answers each message, in
# order.
_OPEN_A_GROUP_CHAT = """async () => {
    const ctx = SillyTavern.getContext();
    const headers = ctx.getRequestHeaders();
    const made = await fetch('/api/characters/create', { method: 'POST', headers, body: JSON.stringify({
        ch_name: 'Ann', description: 'A cheerful bard.', first_mes: 'Ann tunes her lute.', personality: '',
        scenario: '', mes_example: '', creator_notes: '', system_prompt: '', post_history_instructions: '',
        tags: '', creator: '', character_version: '', talkativeness: 0.5, fav: false }) });
    if (!made.ok) throw new Error(`character not created: ${made.status}`);
    const ann = await made.text();
    await ctx.getCharacters();
    const seraphina = ctx.characters.find((c) => c.name === 'Seraphina').avatar;
    const response = await fetch('/api/groups/create', { method: 'POST', headers, body: JSON.stringify({
        name: 'Party', members: [seraphina, ann], avatar_url: 'img/ai4.png', activation_strategy: 1,
        generation_mode: 0 }) });
    if (!response.ok) throw new Error(`group not created: ${response.status}`);
    const group = await response.json();
    const groups = await import('/scripts/group-chats.js');
    await groups.getGroups();
    await groups.openGroupById(group.id);
    return String(group.id);
}"""
# Back to Seraphina's chat, then every "Party" group and "Ann" go, through ST's endpoints (also after a
# failure half-way): later tests of this ST open "the first character" and expect Seraphina.
_REMOVE_THE_GROUP = """async () => {
    const ctx = SillyTavern.getContext();
    await ctx.selectCharacterById(ctx.characters.findIndex((c) => c.name === 'Seraphina'));
    const headers = ctx.getRequestHeaders();
    const all = async () => (await fetch('/api/groups/all', { method: 'POST', headers })).json();
    for (const group of (await all()).filter((g) => g.name === 'Party')) {
        const body = JSON.stringify({ id: group.id });
        await fetch('/api/groups/delete', { method: 'POST', headers, body });
    }
    await ctx.getCharacters();
    for (const ann of ctx.characters.filter((c) => c.name === 'Ann')) {
        await fetch('/api/characters/delete', { method: 'POST', headers,
            body: JSON.stringify({ avatar_url: ann.avatar, delete_chats: true }) });
    }
    await ctx.getCharacters();
    return [...ctx.characters.map((c) => c.name), ...(await all()).map((g) => g.name)];
}"""


def test_a_group_chat_books_each_reply_to_the_member_who_wrote_it(
    versioned_spend_stack: RealStack, st_page_for: Any, priced: Any
) -> None:
    """In a group chat ST drafts each member in turn; each member's reply is its own generation, booked to
    that character and to the group, so "which character costs the most" counts group chats too."""
    stack = versioned_spend_stack
    assert stack.service is not None
    stack.seed_user(oai=CLEAN_OAI, key=PAYG_KEY)
    page: STPage = st_page_for(stack, seed=False)
    connect_builtin(page)
    priced(stack, oai(page, "nanogpt_model"), prompt=20.0, completion=60.0, tokens=(1500, 400))
    try:
        group_id = str(page.js(_OPEN_A_GROUP_CHAT))
        page.page.wait_for_function(
            "(id) => String(SillyTavern.getContext().groupId) === id"
            " && SillyTavern.getContext().chat.length > 0",
            arg=group_id,
        )
        send_message(page, "Who plays tonight?", replies=2, timeout=60000)
        speakers = page.js("() => SillyTavern.getContext().chat.slice(-2).map((m) => m.name)")
        assert sorted(speakers) == ["Ann", "Seraphina"]
        chat = chat_id(page)
        booked = wait_rows(
            stack, lambda r: len(r) == 2 and all(x["status"] == "measured" for x in r), chat_id=chat
        )
        assert sorted(x["character"] for x in booked) == ["Ann", "Seraphina"]
        assert all(x["group_id"] == group_id and x["group"] == "Party" for x in booked)
        # Each row names the message its member wrote.
        for row in booked:
            name = page.js("(i) => SillyTavern.getContext().chat[i].name", row["message_id"])
            assert name == row["character"]
        _, overview = stack.service.request("GET", "/api/spend")
        labels = [c["label"] for c in overview["top_characters"]]
        assert "Ann" in labels and "Party" not in labels, labels
        chats = {c["key"]: c["label"] for c in overview["top_chats"]}
        assert chats.get(chat, "").startswith("Party"), chats
        open_drawer(page)
        page.page.wait_for_function(
            "() => /Ann/.test(document.querySelector('#ngc_spend_top_characters')?.textContent ?? '')"
        )
        # The chat's generations say which member wrote each reply.
        page.page.click("#ngc_spend_recent_box summary")
        for row in booked:
            item = page.page.wait_for_selector(f'#ngc_spend_recent li[data-row="{row["id"]}"]')
            assert item is not None
            assert f"#{row['message_id']} {row['character']} · " in (item.text_content() or "")
        page.show("#ngc_spend_recent")
        page.screenshot(f"spend-group-chat-{stack.version}.png", full_page=False)
    finally:
        left = page.js(_REMOVE_THE_GROUP)
        assert "Ann" not in left and "Party" not in left and "Seraphina" in left, left


def test_budget_warning_then_alert_once_and_csv(
    spend_stack: RealStack, st_page_for: Any, priced: Any, expect_problems: Any
) -> None:
    """A daily budget set in the drawer: the warning at 80 % and the alert at 100 % come once each, as toasts
    like the other alerts, and are not shown again on the next page load. The CSV has every generation."""
    stack = spend_stack
    assert stack.service is not None
    expect_problems.expect(
        r"daily NanoGPT budget is used up"
    )  # the 100 % alert is an error toast, on purpose
    stack.seed_user(oai=CLEAN_OAI, key=PAYG_KEY)
    page: STPage = st_page_for(stack, seed=False)
    connect_builtin(page)
    model = oai(page, "nanogpt_model")
    entry = priced(stack, model, prompt=200.0, completion=0.0, tokens=(1000, 50))  # $0.20 a message
    per_message = float(price_of(entry, 1000, 50))
    _, overview = stack.service.request("GET", "/api/spend")
    today = overview["today"]["usd"]
    budget = round(today + per_message * 2.3, 4)  # 2 messages: 87 %, 3 messages: 130 %
    open_drawer(page)
    page.page.click("#ngc_spend_settings_box summary")
    page.page.fill("#ngc_budget_daily", str(budget))
    page.page.click("#ngc_spend_save")
    page.page.wait_for_function("() => document.querySelector('#ngc_spend_saved').textContent === 'Saved.'")
    assert stack.service.request("GET", "/api/spend/settings")[1]["daily_budget_usd"] == budget
    # Every toast shown from now on, kept (toastr removes each after a few seconds).
    page.js(
        """() => {
            window.__spendToasts = [];
            const seen = new WeakSet(); // a new container and its first toast are two records, one toast
            new MutationObserver((records) => {
                for (const r of records) for (const n of r.addedNodes) {
                    if (n.nodeType !== 1) continue;
                    for (const toast of n.matches('.toast') ? [n] : n.querySelectorAll('.toast')) {
                        if (seen.has(toast)) continue;
                        seen.add(toast);
                        window.__spendToasts.push(`${toast.className}|${toast.textContent}`);
                    }
                }
            }).observe(document.body, { childList: true, subtree: true });
        }"""
    )
    for n in range(3):
        before = len(rows(stack))
        send_message(page, f"Spend some more ({n}).")
        wait_rows(stack, lambda r, b=before: len(r) > b and r[0]["status"] == "measured")
        if n == 1:
            page.page.wait_for_selector(".toast-warning:has-text('NanoGPT budget')")
    # Account news is a warning toast, never ST's red "SillyTavern failed" (account-view.js showAlert).
    page.page.wait_for_selector(".toast-warning:has-text('daily NanoGPT budget is used up')")
    toasts = [t for t in page.js("() => window.__spendToasts") if "NanoGPT budget" in t]
    assert len(toasts) == 2 and all("toast-warning" in t for t in toasts), toasts
    assert "used up" in toasts[1], toasts
    open_drawer(page)
    page.page.wait_for_selector('#ngc_spend_budgets .ngc-bar[data-level="full"]')
    page.js("() => toastr.clear()")
    page.page.wait_for_function("() => !document.querySelector('.toast')")
    page.js("() => document.getElementById('ngc_spend').scrollIntoView()")
    page.screenshot("spend-budget.png", full_page=False)

    with page.page.expect_download() as download:
        page.page.click("#ngc_spend_export")
    text = Path(download.value.path()).read_text(encoding="utf-8")
    lines = list(csv.DictReader(io.StringIO(text)))
    ledger = rows(stack)
    assert len(lines) >= 3 and {line["user"] for line in lines} == {DEFAULT_USER}
    newest = max(lines, key=lambda line: float(line["ts"]))
    assert newest["model"] == model and float(newest["usd"]) == pytest.approx(ledger[0]["usd"])

    # Shown once: a new page load brings no budget toast back (the tab marked them seen).
    again: STPage = st_page_for(stack, seed=False)
    open_drawer(again)
    again.page.wait_for_function("() => document.querySelector('#ngc_spend_today')?.textContent !== '—'")
    _, after = stack.service.request("GET", "/api/spend")
    assert after["alerts"] == []
    assert not again.js(BUDGET_TOAST_SHOWN)
    stack.service.request("PUT", "/api/spend/settings", body={"daily_budget_usd": None})


def test_spend_section_on_a_phone(spend_stack: RealStack, st_page_for: Any) -> None:
    stack = spend_stack
    stack.seed_user(oai=CLEAN_OAI, key=PAYG_KEY)
    page: STPage = st_page_for(stack, seed=False, width=400, height=860)
    open_drawer(page)
    page.page.wait_for_function("() => document.querySelector('#ngc_spend_today')?.textContent !== '—'")
    page.js("() => document.getElementById('ngc_spend').scrollIntoView()")
    overflow = page.js(
        """() => [...document.querySelectorAll('#ngc_spend, #ngc_spend *')]
            .filter(el => el.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
            .map(el => el.id || el.className)"""
    )
    assert overflow == []
    page.screenshot("spend-phone.png", full_page=False)


def test_budget_alert_raised_while_no_tab_is_open_is_shown_on_the_next_visit(
    spend_stack: RealStack, realst_browser: Any, expect_problems: Any
) -> None:
    """A monthly budget crossed while no ST tab is open: the service keeps the alert, the next tab shows
    it like the other alerts and marks it seen, and the tab after that does not show it again."""
    stack = spend_stack
    assert stack.service is not None
    stack.seed_user(oai=CLEAN_OAI, key=PAYG_KEY)
    first = STPage.open(realst_browser, stack.url)
    try:
        first.page.wait_for_selector(CONNECTED, state="attached", timeout=30000)
        connect_builtin(first)
        before = len(rows(stack))
        send_message(first, "Something to put against a budget.")
        wait_rows(stack, lambda r: len(r) > before and r[0]["status"] == "measured")
        check_page(first, expect_problems)
    finally:
        first.close()
    _, overview = stack.service.request("GET", "/api/spend")
    month = overview["month"]["usd"]
    assert month > 0
    budget = round(month / 0.9, 6)  # 90 %: the warning
    status, _ = stack.service.request("PUT", "/api/spend/settings", body={"monthly_budget_usd": budget})
    assert status == 200
    _, waiting = stack.service.request("GET", "/api/spend")
    assert [(a["kind"], a["period"]) for a in waiting["alerts"]] == [("budget_80", "monthly")]
    try:
        for visit in range(2):
            page = STPage.open(realst_browser, stack.url)
            try:
                page.page.wait_for_selector(CONNECTED, state="attached", timeout=30000)
                if visit == 0:
                    page.page.wait_for_selector(".toast-warning:has-text('monthly NanoGPT budget')")
                    deadline = time.monotonic() + 15
                    while stack.service.request("GET", "/api/spend")[1]["alerts"]:
                        assert time.monotonic() < deadline, "the tab never marked the alert seen"
                        time.sleep(0.1)
                else:
                    open_drawer(page)
                    page.page.wait_for_function(
                        "() => document.querySelector('#ngc_spend_today')?.textContent !== '—'"
                    )
                    assert not page.js(BUDGET_TOAST_SHOWN)
                check_page(page, expect_problems)
            finally:
                page.close()
    finally:
        stack.service.request("PUT", "/api/spend/settings", body={"monthly_budget_usd": None})


EXT = "/scripts/extensions/third-party/nanogpt-companion/src/"


def test_pure_spend_helpers(spend_stack: RealStack, st_page_for: Any) -> None:
    """spend-format.js and the command's argument, imported from where real ST serves the extension."""
    page: STPage = st_page_for(spend_stack)
    r = page.js(
        """async (base) => {
        const f = await import(base + 'spend-format.js');
        const v = await import(base + 'spend-view.js');
        const sub = 'https://nano-gpt.com/api/subscription/v1';
        const text = { type: 'generic', server_urls: { generic: sub } };
        const bars = f.stackedBars(
            [{ date: 'a', usd_by_model: { m1: 1, m2: 3 } }, { date: 'b', usd_by_model: { m1: 2 } },
             { date: 'c' }],
            ['m1', 'm2'], { width: 100, height: 50, pad: 0 });
        return {
            cost: [0, 0.0042, 0.108, 2.5, 250].map(f.formatCost),
            quota: [f.formatQuota(12, { unit: 'tokens', limit: 60e6 }),
                    f.formatQuota(631288, { unit: 'tokens', limit: 60e6 }),
                    f.formatQuota(3, { unit: 'requests', limit: 10 }), f.formatQuota(1500, null)],
            total: [f.totalText({ usd: 0.5, quota: 0 }, 'usd'),
                    f.totalText({ usd: 0.5, quota: 2000 }, 'quota', null)],
            pipe: [f.pipeValue({ usd: 0.1 + 0.2, quota: 5 }, 'usd'),
                   f.pipeValue({ usd: 1, quota: 5 }, 'quota'), f.pipeValue(null, 'usd')],
            approx: [f.isApproximate({ approximate: false, estimated_usd: 0, pending: 0 }),
                     f.isApproximate({ pending: 1 })],
            endpoints: ['https://nano-gpt.com/api/v1', sub + '/chat/completions',
                        'https://nano-gpt.com/api/paid/v1/', 'https://example.com/api/v1'].map(f.endpointFromUrl),
            targets: [
                f.nanoGptTarget('chat', { chat_completion_source: 'nanogpt', model: 'm' }),
                f.nanoGptTarget('chat', { chat_completion_source: 'custom',
                                          custom_url: 'https://nano-gpt.com/api/paid/v1', model: 'm' }),
                f.nanoGptTarget('chat', { chat_completion_source: 'openai', model: 'gpt' }),
                f.nanoGptTarget('text', { model: 'm' }, text),
                f.nanoGptTarget('text', { model: 'm' }, { ...text, type: 'ooba' }),
            ],
            parts: [f.promptParts('chat', { messages: [{ content: 'a' },
                        { content: [{ text: 'b' }, { image_url: 'x' }] }, { content: '' }] }),
                    f.promptParts('text', { prompt: 'p' })],
            id: /^[A-Za-z0-9_.:-]{8,64}$/.test(f.generationId()),
            bars: bars.columns.map((c) => [c.date, c.total, c.segments.map((s) => [s.name, s.h])]),
            max: bars.max,
            periods: ['', 'chat', ' Month ', 'yesterday', 'chat quiet=true'].map(v.spendPeriod),
        };
    }""",
        EXT,
    )
    assert r["cost"] == ["$0", "$0.0042", "$0.108", "$2.50", "$250"]
    assert r["quota"] == ["12 tokens (<0.1%)", "631k tokens (1.1%)", "3 req (30%)", "1.5k tokens"]
    assert r["total"] == ["$0.500", "2k tokens + $0.500"]
    assert r["pipe"] == ["0.3", "5", "0"]
    assert r["approx"] == [False, True]
    assert r["endpoints"] == ["v1", "subscription", "paid", None]
    assert r["targets"] == [
        {"source": "nanogpt", "endpoint": "v1", "model": "m", "billing": None},
        {"source": "custom", "endpoint": "paid", "model": "m", "billing": None},
        None,
        {"source": "textgen", "endpoint": "subscription", "model": "m", "billing": None},
        None,
    ]
    assert r["parts"] == [["a", "b"], ["p"]]
    assert r["id"]
    assert r["max"] == 4
    assert r["bars"] == [["a", 4, [["m1", 12.5], ["m2", 37.5]]], ["b", 2, [["m1", 25]]], ["c", 0, []]]
    assert r["periods"] == ["today", "chat", "month", None, None]


ALICE, ALICE_PASSWORD = "alice", "alice-spends-too"


@pytest.fixture(scope="module")
def shared_key_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RealStack]:
    """The newest ST with user accounts on: default-user and alice (created by the admin through ST's
    API), both with the same pay-as-you-go key."""
    with real_stack(
        tmp_path_factory.mktemp("spend-shared"),
        NEWEST,
        users={DEFAULT_USER: {"oai": CLEAN_OAI, "key": PAYG_KEY}},
        config={"enableUserAccounts": True},
        service=False,
    ) as stack:
        admin = stack.st.client()
        admin.login(DEFAULT_USER)  # ST's default user is an admin without a password
        admin.create_user(ALICE, password=ALICE_PASSWORD)
        stack.seed_user(ALICE, oai=CLEAN_OAI, key=PAYG_KEY)
        stack.install_extension("--user", ALICE)
        stack.handles = [DEFAULT_USER, ALICE]
        stack.start_service(env=FAST_SPEND)
        yield stack


def logged_in_page(browser: Any, stack: RealStack, handle: str, password: str = "") -> STPage:
    """A tab of ``handle``: logged in through ST's own login API from its login page, then ST loaded."""
    page = STPage.open(browser, stack.url, path="/login", wait_ready=False)
    page.js(
        """async ([handle, password]) => {
            const { token } = await (await fetch('/csrf-token')).json();
            const res = await fetch('/api/users/login', {
                method: 'POST',
                body: JSON.stringify({ handle, password }),
                headers: { 'Content-Type': 'application/json', 'X-CSRF-Token': token },
            });
            if (!res.ok) throw new Error(`login as ${handle}: ${res.status}`);
        }""",
        [handle, password],
    )
    page.page.goto(stack.url + "/")
    page.wait_app_ready()
    page.page.wait_for_selector(CONNECTED, state="attached", timeout=30000)
    return page


def test_a_key_shared_by_two_st_users(shared_key_stack: RealStack, realst_browser: Any, priced: Any) -> None:
    """Two ST users on one key, each in their own tab, generating at the same time: one reading covers
    both, each user's row gets a share (approximate) and the shares add up to what was charged; each
    user's drawer, /nano-spend and CSV show their own share only."""
    stack = shared_key_stack
    assert stack.service is not None
    pages: dict[str, STPage] = {}
    try:
        pages[DEFAULT_USER] = logged_in_page(realst_browser, stack, DEFAULT_USER)
        pages[ALICE] = logged_in_page(realst_browser, stack, ALICE, ALICE_PASSWORD)
        for page in pages.values():
            connect_builtin(page)
        model = oai(pages[DEFAULT_USER], "nanogpt_model")
        assert oai(pages[ALICE], "nanogpt_model") == model
        priced(stack, model, prompt=20.0, completion=60.0, tokens=(1500, 400))
        for page in pages.values():
            page.js("async () => { await SillyTavern.getContext().selectCharacterById(0); }")
            page.page.wait_for_function("() => SillyTavern.getContext().chat.length > 0")
            page.page.fill("#send_textarea", "Whose money is this?")
        slow_replies(stack, model)
        try:
            start = len(stack.fake.charges)
            for page in pages.values():
                page.page.click("#send_but")
            mine = {
                handle: wait_rows(
                    stack,
                    lambda rs: len(rs) == 1 and rs[0]["status"] == "measured",
                    handle=handle,
                    timeout=60,
                )[0]
                for handle in pages
            }
        finally:
            stack.fake.inference.stream_chunk_delay = 0.0
        charged = sum((c.usd for c in charges_since(stack, start)), Decimal(0))
        assert len(charges_since(stack, start)) == 2
        assert all(r["approximate"] and r["shared_with"] == 2 for r in mine.values()), mine
        assert sum(r["measured_usd"] for r in mine.values()) == pytest.approx(float(charged), abs=1e-9)
        for handle, page in pages.items():
            share = mine[handle]["measured_usd"]
            assert page.slash("/nano-spend quiet=true chat") == str(round(share, 8))
            open_drawer(page)
            page.page.wait_for_selector('.ngc-stat[data-stat="today"][data-approx="true"]')
            assert page.page.text_content("#ngc_spend_today") == _cost(share)
            with page.page.expect_download() as download:
                page.page.click("#ngc_spend_export")
            text = Path(download.value.path()).read_text(encoding="utf-8")
            lines = list(csv.DictReader(io.StringIO(text)))
            assert [(line["user"], line["model"]) for line in lines] == [(handle, model)]
        pages[ALICE].screenshot("spend-shared-key-alice.png", full_page=False)
    finally:
        for page in pages.values():
            try:
                check_page(page)
            finally:
                page.close()
