"""Issue 10 items 6, 8-11 and 16 through the running service: policies, Fix all, declines, re-checks, and
the words findings, journal entries and fix events use."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from nanogpt_companion.web import keys
from tests.doctor_service.conftest import (
    Companion,
    StartCompanion,
    journal,
    nanogpt_settings,
    one_user,
    open_tab,
    ppp_of,
    st_save,
    wait_until,
)
from tests.fakes.service_fixtures import REPO, free_port
from tests.fakes.st_fixtures import MakeSTInstall, UserSpec, build_st_install

NANO = "https://nano-gpt.com/api/v1"


async def report(companion: Companion, handle: str = "default-user", query: str = "") -> dict[str, Any]:
    resp = await companion.get(f"/api/doctor{query}", handle)
    assert resp.status == 200
    data: dict[str, Any] = await resp.json()
    return data


def by_rule(data: dict[str, Any], rule: str) -> list[dict[str, Any]]:
    return [f for f in data["findings"] if f["rule"] == rule]


async def fix(companion: Companion, body: dict[str, Any]) -> list[dict[str, Any]]:
    resp = await companion.post("/api/doctor/fix", json=body)
    assert resp.status == 200
    return list((await resp.json())["results"])


def custom(model: str = "", **oai: Any) -> dict[str, Any]:
    oai = {"custom_url": NANO, **oai}
    return nanogpt_settings("merge", chat_completion_source="custom", custom_model=model, **oai)


async def eventually(check: Callable[[], Awaitable[Any]], within: float = 10.0) -> Any:
    """Await ``check()`` until it returns something truthy; fail clearly if it never does."""
    async with asyncio.timeout(within):
        for delay in itertools.repeat(0.05):
            if result := await check():
                return result
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


# ---- item 8: off means off -----------------------------------------------------------------------------


async def test_an_off_rule_is_not_offered_not_in_fix_all_and_refused_by_id(
    make_st_install: MakeSTInstall, start_companion: StartCompanion
) -> None:
    st = one_user(make_st_install, custom(custom_url="http://nano-gpt.com/v1/chat/completions"))
    path = st.user().settings
    before = path.read_bytes()
    companion = await start_companion(st, doctor_policies={"endpoint.url": "off"})
    data = await report(companion)
    assert by_rule(data, "endpoint.url") == [] and data["muted"] == 1
    assert await fix(companion, {"all": True}) == []
    hidden = companion.client.app[keys.DOCTOR]._user_state("default-user").findings  # type: ignore[union-attr]
    [finding] = [f for f in hidden if f.rule == "endpoint.url"]
    [result] = await fix(companion, {"ids": [finding.id]})
    assert result["status"] == "declined" and "turned off" in result["message"]
    assert path.read_bytes() == before


def test_cli_fix_skips_an_off_rule(tmp_path: Path) -> None:
    st = build_st_install(tmp_path, users={"default-user": UserSpec(settings=nanogpt_settings(""))})
    before = st.user().settings.read_bytes()
    env = {k: v for k, v in os.environ.items() if not k.startswith("NANOGPT")}
    env["NANOGPT_COMPANION_PORT"] = str(free_port())  # no service: the direct path
    env["NANOGPT_COMPANION_DOCTOR_POLICIES"] = json.dumps({"ppp.nanogpt": "off"})
    done = subprocess.run(
        [sys.executable, "-m", "nanogpt_companion", "doctor", "--sillytavern", str(st.st_dir),
         "--state-dir", str(tmp_path / "state"), "--offline", "--fix", "--json"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)["default-user"]
    assert data["results"] == [] and data["muted"] == 1
    assert [f for f in data["findings"] if f["rule"] == "ppp.nanogpt"] == []
    assert st.user().settings.read_bytes() == before


# ---- item 9: Fix all fixes problems; cost-raising suggestions only one by one --------------------------


async def test_fix_all_fixes_problems_not_preferences_and_cost_is_never_automatic(
    make_st_install: MakeSTInstall, start_companion: StartCompanion, fake_nanogpt: Any
) -> None:
    big = next(m for m in fake_nanogpt.fake.models if (m.get("context_length") or 0) >= 100_000)
    settings = custom(
        big["id"],
        custom_url="http://nano-gpt.com/api/v1",  # a problem (error)
        enable_web_search=True,  # a cost-raising suggestion
        openai_max_context=1000,  # far below the model's: a cost-raising suggestion
    )
    st = one_user(make_st_install, settings)
    path = st.user().settings
    # Even set to auto, rules whose fixes raise the cost are not applied by themselves.
    companion = await start_companion(st, doctor_policies={"web_search": "auto", "context": "auto"})
    data = await report(companion)
    [url] = by_rule(data, "endpoint.url")
    [search] = by_rule(data, "web_search")
    [context] = by_rule(data, "context")
    assert url["fix_all"] and url["severity"] == "error"
    for suggestion in (search, context):
        assert suggestion["raises_cost"] and not suggestion["fix_all"] and suggestion["policy"] == "ask"
    assert await journal(companion) == []  # the start-up scan above applied nothing
    results = await fix(companion, {"all": True})
    assert [r["id"] for r in results] == [url["id"]] and results[0]["status"] == "applied"
    saved = json.loads(path.read_bytes())["oai_settings"]
    assert saved["enable_web_search"] is True and saved["openai_max_context"] == 1000
    # One by one it is the user's call.
    [one] = await fix(companion, {"ids": [context["id"]]})
    assert one["status"] == "applied"
    assert json.loads(path.read_bytes())["oai_settings"]["openai_max_context"] == big["context_length"]


def test_cli_fix_applies_problems_only(tmp_path: Path) -> None:
    """``doctor --fix`` does what Fix all does: the malformed address (a problem) is fixed; the ``:online``
    suffix for web search costs money per message, so it is left for its own Fix button."""
    settings = custom("openai/gpt-4o", custom_url="http://nano-gpt.com/api/v1", enable_web_search=True)
    st = build_st_install(tmp_path, users={"default-user": UserSpec(settings=settings)})
    env = {k: v for k, v in os.environ.items() if not k.startswith("NANOGPT")}
    env["NANOGPT_COMPANION_PORT"] = str(free_port())  # no service: the direct path
    args = ["--sillytavern", str(st.st_dir), "--state-dir", str(tmp_path / "state"), "--offline", "--json"]
    command = [sys.executable, "-m", "nanogpt_companion", "doctor", *args]
    checked = subprocess.run(
        command, capture_output=True, text=True, env=env, cwd=REPO, timeout=60, check=False
    )
    found = {f["rule"]: f for f in json.loads(checked.stdout)["default-user"]["findings"]}
    assert found["endpoint.url"]["fix_all"] and found["web_search"]["fixable"]
    assert found["web_search"]["raises_cost"] and not found["web_search"]["fix_all"]
    done = subprocess.run(
        [*command, "--fix"], capture_output=True, text=True, env=env, cwd=REPO, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)["default-user"]["results"]
    assert [r["id"] for r in results] == [found["endpoint.url"]["id"]] and results[0]["status"] == "applied"
    saved = json.loads(st.user().settings.read_bytes())["oai_settings"]
    assert saved["custom_url"] == NANO.replace("http://", "https://")
    assert saved["custom_model"] == "openai/gpt-4o" and saved["enable_web_search"] is True


# ---- item 10: an undo holds across model and source changes --------------------------------------------


async def test_undo_is_respected_when_only_the_model_or_source_changes(
    make_st_install: MakeSTInstall, start_companion: StartCompanion
) -> None:
    st = one_user(make_st_install, nanogpt_settings(""))
    path = st.user().settings
    companion = await start_companion(st)
    await wait_until(lambda: ppp_of(path) == "merge")
    entries = await eventually(lambda: journal(companion))
    undo = await companion.post("/api/doctor/undo", json={"journal_id": entries[0].id})
    assert (await undo.json())["status"] == "reverted" and ppp_of(path) == ""
    changes: list[dict[str, Any]] = [
        {"nanogpt_model": "openai/gpt-5.2"},
        {"chat_completion_source": "custom", "custom_url": NANO},
    ]
    for oai in changes:
        st_save(path, nanogpt_settings("", **oai))
        data = await report(companion, query="?refresh=1")  # re-reads the file and acts on auto findings
        [ppp] = by_rule(data, "ppp.nanogpt")
        assert ppp["declined"] and ppp["policy"] == "ask" and not ppp["fix_all"]
        assert ppp_of(path) == ""
    assert len(await journal(companion)) == 1


# ---- item 11: Re-check and catalogue refreshes ---------------------------------------------------------


async def test_a_catalogue_refresh_that_removes_the_model_rechecks_every_user_at_once(
    make_st_install: MakeSTInstall, start_companion: StartCompanion, fake_nanogpt: Any
) -> None:
    victim = fake_nanogpt.fake.ids("v1")[3]
    users = {h: UserSpec(settings=custom(victim)) for h in ("default-user", "bob")}
    st = make_st_install(users=users)
    companion = await start_companion(st)
    for handle in users:
        assert by_rule(await report(companion, handle), "model.gone") == []
    fake_nanogpt.fake.remove_model(victim)
    assert (await companion.post("/api/catalog/refresh")).status == 200
    # No settings change and no Re-check: both users' findings update by themselves.
    for handle in users:

        async def gone_for(handle: str = handle) -> list[dict[str, Any]]:
            return by_rule(await report(companion, handle), "model.gone")

        gone = await eventually(gone_for)
        assert gone[0]["details"]["kind"] == "removed"
        assert gone[0]["title"] == "Selected model was removed by NanoGPT"


async def test_recheck_rereads_the_catalogue_and_the_files(
    make_st_install: MakeSTInstall, start_companion: StartCompanion, fake_nanogpt: Any
) -> None:
    """Re-check (``?refresh=1``) reads NanoGPT's list and the user's files now; a plain report answers from
    the last scan (no watcher here, so nothing else could have picked the changes up)."""
    victim, other = fake_nanogpt.fake.ids("v1")[5:7]
    st = one_user(make_st_install, custom(victim))
    companion = await start_companion(st)
    assert by_rule(await report(companion), "model.gone") == []
    fake_nanogpt.fake.remove_model(victim)
    assert by_rule(await report(companion), "model.gone") == []  # the last scan's answer
    [gone] = by_rule(await report(companion, query="?refresh=1"), "model.gone")
    assert gone["details"]["kind"] == "removed"
    # The user picks another model in ST (saved while nothing watches): only a Re-check sees it.
    st_save(st.user().settings, custom(other))
    assert by_rule(await report(companion), "model.gone") == [gone]
    assert by_rule(await report(companion, query="?refresh=1"), "model.gone") == []


# ---- items 6 and 16: what the extension is told, in ST's words -----------------------------------------


async def test_findings_journal_and_fix_events_use_st_labels(
    make_st_install: MakeSTInstall, start_companion: StartCompanion
) -> None:
    st = one_user(make_st_install, nanogpt_settings("merge", function_calling=True))
    companion = await start_companion(st)
    data = await report(companion)
    [tools] = by_rule(data, "ppp.tools")
    change = (
        "Prompt Post-Processing: Merge consecutive roles (no tools) → Merge consecutive roles (with tools)"
    )
    assert tools["change"] == change
    # The extension's own error-signature path writes only what this ST knows, via this table.
    assert data["ppp"]["choices"]["semi"] == "semi_tools" and "semi_tools" in data["ppp"]["values"]
    assert data["ppp"]["labels"]["semi_tools"] == "Semi-strict (alternating roles; with tools)"
    tab = await open_tab(companion)
    try:
        [sent] = await fix(companion, {"ids": [tools["id"]]})
        assert sent["status"] == "sent_live"
        await wait_until(lambda: tab.named("fix"), 5)
        [event] = tab.named("fix")
        assert event["change"] == change
        resp = await companion.post(
            "/api/doctor/ack", json={"fix_id": event["fix_id"], "status": "applied", "message": "ok"}
        )
        assert (await resp.json())["journal_ids"]
    finally:
        await tab.close()
    entries = (await (await companion.get("/api/doctor/journal")).json())["entries"]
    assert entries[0]["change"] == change and entries[0]["mode"] == "live"


async def test_file_fix_and_undo_answers_name_the_change_as_st_does(
    make_st_install: MakeSTInstall, start_companion: StartCompanion
) -> None:
    """No tab open: the Fix button's and Undo's answers (what the extension toasts) use ST's labels too."""
    st = one_user(make_st_install, nanogpt_settings("merge", function_calling=True))
    companion = await start_companion(st)
    [tools] = by_rule(await report(companion), "ppp.tools")
    [done] = await fix(companion, {"ids": [tools["id"]]})
    assert done["status"] == "applied" and done["message"] == f"Fixed in settings.json: {tools['change']}"
    [entry] = await eventually(lambda: journal(companion))  # the row follows the file write
    undo = await companion.post("/api/doctor/undo", json={"journal_id": entry.id})
    back = "Prompt Post-Processing: Merge consecutive roles (with tools) → Merge consecutive roles (no tools)"
    assert await undo.json() == {"status": "reverted", "message": back}


async def test_a_live_undo_holds_while_the_tab_has_not_saved_it_yet(
    make_st_install: MakeSTInstall, start_companion: StartCompanion
) -> None:
    """Undo with a tab open is carried out by the tab; until ST saves, the file still holds the fix's value.
    A scan in that window must not take that for "the user chose something else" and drop the decline,
    or the fix would be re-applied the moment the undo lands."""
    st = one_user(make_st_install, nanogpt_settings("merge"))
    path = st.user().settings
    companion = await start_companion(st)
    tab = await open_tab(companion)
    try:
        st_save(path, nanogpt_settings(""))  # the user's "None", saved by ST
        await report(companion, query="?refresh=1")  # (no watcher here: the scan is asked for)
        [fix] = await eventually(lambda: _fix_events(tab, after=0))
        resp = await companion.post(
            "/api/doctor/ack", json={"fix_id": fix["fix_id"], "status": "applied", "message": "ok"}
        )
        [journal_id] = (await resp.json())["journal_ids"]
        st_save(path, nanogpt_settings("merge"))  # ST saves the fixed value
        await report(companion, query="?refresh=1")
        undo = await companion.post("/api/doctor/undo", json={"journal_id": journal_id})
        assert (await undo.json())["status"] == "sent_live"
        [reverse] = await eventually(lambda: _fix_events(tab, after=1))
        assert reverse["undo_of"] == journal_id
        # An unrelated save and a scan while the tab has not applied the undo yet.
        st_save(path, nanogpt_settings("merge", temp_openai=0.5))
        await report(companion, query="?refresh=1")
        assert await companion.client.app[keys.STORE].declined("default-user")
        resp = await companion.post(
            "/api/doctor/ack", json={"fix_id": reverse["fix_id"], "status": "applied", "message": "ok"}
        )
        st_save(path, nanogpt_settings("", temp_openai=0.5))  # ST saves the undone value
        data = await report(companion, query="?refresh=1")
        [ppp] = by_rule(data, "ppp.nanogpt")
        assert ppp["declined"] and ppp["policy"] == "ask"
        assert len(tab.named("fix")) == 2  # nothing re-sent
    finally:
        await tab.close()


async def _fix_events(tab: Any, *, after: int) -> list[dict[str, Any]]:
    return list(tab.named("fix")[after:])
