"""The catalogue browser and the /nano-* slash commands in real SillyTavern (newest)."""

from __future__ import annotations

from typing import Any

from tests.extension.st_ui import oai, open_drawer, wait_catalog
from tests.realst.browser import STPage
from tests.realst.stack import RealStack


def _open_catalog(page: STPage) -> None:
    open_drawer(page)
    wait_catalog(page)
    page.page.click("#ngc_browse")
    page.page.wait_for_selector("dialog.popup .ngc-catalog .ngc-model")


def test_catalog_filters(st_page: STPage) -> None:
    page = st_page
    _open_catalog(page)
    p = page.page
    total = len(p.query_selector_all(".ngc-catalog .ngc-model"))
    assert total > 300
    p.select_option('.ngc-catalog [data-f="tier"]', "subscription")
    rows = p.query_selector_all(".ngc-catalog .ngc-model")
    assert 0 < len(rows) < total
    assert all(r.query_selector(".ngc-tag-sub") for r in rows)
    p.check('.ngc-catalog [data-f="vision"]')
    vision_rows = p.query_selector_all(".ngc-catalog .ngc-model")
    assert 0 < len(vision_rows) <= len(rows)
    p.uncheck('.ngc-catalog [data-f="vision"]')
    p.select_option('.ngc-catalog [data-f="tier"]', "")
    p.fill('.ngc-catalog [data-f="q"]', "glm")
    ids = [r.get_attribute("data-id") for r in p.query_selector_all(".ngc-catalog .ngc-model")]
    assert ids
    for model_id in ids:
        text = (p.text_content(f'.ngc-model[data-id="{model_id}"]') or "").lower()
        assert "glm" in model_id.lower() or "glm" in text
    p.select_option('.ngc-catalog [data-f="sort"]', "price")
    page.screenshot("catalog-popup.png", full_page=False)


def test_thinking_variants_fold_under_base(st_page: STPage) -> None:
    page = st_page
    _open_catalog(page)
    p = page.page
    toggle = p.query_selector('.ngc-catalog button[data-act="variants"]')
    assert toggle is not None, "the catalogue has thinking variants; they must be folded under a base"
    base = toggle.get_attribute("data-id") or ""
    assert p.query_selector_all(".ngc-catalog .ngc-variant") == []
    toggle.click()
    variants = p.query_selector_all(".ngc-catalog .ngc-variant")
    assert variants
    stem = base.split(":")[0].removesuffix("-thinking")
    assert all((v.get_attribute("data-id") or "").startswith(stem) for v in variants)


def test_slash_commands_return_pipeable_values(stack: RealStack, st_page: STPage) -> None:
    page = st_page
    assert stack.service is not None
    wait_catalog(page)
    names = page.js("Object.keys(SillyTavern.getContext().SlashCommandParser.commands)")
    for name in ["nano-balance", "nano-models", "nano-sync", "nano-fix", "nano-endpoint", "nano-thinking"]:
        assert name in names
        help_len = page.js(
            "(n) => SillyTavern.getContext().SlashCommandParser.commands[n].helpString.length", name
        )
        assert help_len > 20
    _, account = stack.service.request("GET", "/api/account")
    assert f"${account['balance']['usd']:.2f}" in page.slash("/nano-balance")
    ids = page.slash("/nano-models glm").splitlines()
    assert ids and all("glm" in i.lower() for i in ids)
    assert page.slash("/nano-sync").startswith("Catalogue synced")
    _, eps = stack.service.request("GET", "/api/endpoints")
    paid = next(e["url"] for e in eps["endpoints"] if e["id"] == "paid")
    assert page.slash("/nano-endpoint paid") == paid
    assert oai(page, "custom_url") == paid
    # Thinking on/off on the Custom source: a base model that has a ":thinking" variant.
    _, catalog = stack.service.request("GET", "/api/catalog")
    all_ids = {m["id"] for m in catalog["models"]}
    base = next(i for i in sorted(all_ids) if f"{i}:thinking" in all_ids)
    page.js("(id) => jQuery('#custom_model_id').val(id).trigger('input')", base)
    assert page.slash("/nano-thinking on") == f"{base}:thinking"
    assert page.slash("/nano-thinking off") == base
    # Piping: the model list feeds the next command's argument.
    assert page.slash("/nano-models glm | /echo") != ""


def test_commands_show_in_sts_help(st_page: STPage) -> None:
    """ST lists our commands with their help in its own /help slash (autocomplete source)."""
    page = st_page
    details: Any = page.js(
        "() => { const c = SillyTavern.getContext().SlashCommandParser.commands['nano-endpoint'];"
        " return { name: c.name, args: c.unnamedArgumentList.length }; }"
    )
    assert details == {"name": "nano-endpoint", "args": 1}
