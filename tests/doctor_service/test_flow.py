"""Issue 3, flow: one auto fix taken down each path (file with no tab, live with a tab), never both."""

from __future__ import annotations

import json
from typing import Any

from nanogpt_companion.store import JournalEntry
from nanogpt_companion.web import keys
from tests.doctor_service.conftest import (
    PPP,
    StartCompanion,
    findings,
    journal,
    journalled,
    nanogpt_settings,
    one_user,
    open_tab,
    ppp_of,
    settle,
    st_bytes,
    st_save,
    wait_until,
    watch_healthy_user,
)
from tests.fakes.st_fixtures import MakeSTInstall


def ppp_findings(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [f for f in items if f["rule"] == "ppp.nanogpt"]


def outside_span_equal(before: bytes, after: bytes, old: bytes, new: bytes) -> bool:
    """``after`` is ``before`` with exactly one occurrence of ``old`` replaced by ``new``."""
    i = 0
    while True:
        i = before.find(old, i)
        if i < 0:
            return False
        if before[:i] + new + before[i + len(old) :] == after:
            return True
        i += 1


async def test_no_tab_patches_the_file_journals_it_and_undo_restores_every_byte(
    make_st_install: MakeSTInstall, start_companion: StartCompanion
) -> None:
    st = one_user(make_st_install)
    path = st.user().settings
    original = path.read_bytes()
    companion = await start_companion(st)

    # Start-up scans every user; the PPP fix is "auto" and no tab is open, so the file is patched.
    await wait_until(lambda: ppp_of(path) == "merge")
    # The fix is journalled and the file re-diagnosed after the write: wait for that scan's findings.
    doctor = companion.client.app[keys.DOCTOR]
    assert doctor is not None
    state = doctor._user_state("default-user")
    await wait_until(lambda: not [f for f in state.findings if f.rule == "ppp.nanogpt"])
    patched = path.read_bytes()
    key = b'"custom_prompt_post_processing": '
    assert outside_span_equal(original, patched, key + b'""', key + b'"merge"')

    entries = await journalled(companion, 1)
    assert [(e.rule, e.mode, e.key_path, e.old_value, e.new_value) for e in entries] == [
        ("ppp.nanogpt", "file", PPP, "", "merge")
    ]
    assert ppp_findings(await findings(companion)) == []

    resp = await companion.post("/api/doctor/undo", json={"journal_id": entries[0].id})
    assert (await resp.json())["status"] == "reverted"
    assert path.read_bytes() == original
    assert (await journal(companion))[0].undone_at is not None

    # Undo is a "no": the finding comes back as a suggestion, and is not re-applied on the next scan.
    again = ppp_findings(await findings(companion))
    assert len(again) == 1 and again[0]["policy"] == "ask" and again[0]["declined"] is True
    await doctor.check_user("default-user", force=True)
    assert path.read_bytes() == original
    assert len(await journal(companion)) == 1


async def test_open_tab_gets_a_fix_event_and_the_file_is_never_touched(
    make_st_install: MakeSTInstall, start_companion: StartCompanion
) -> None:
    companion, path = await watch_healthy_user(
        make_st_install, start_companion
    )  # healthy at start: nothing to do yet
    tab = await open_tab(companion)
    try:
        broken = st_bytes(nanogpt_settings(""))
        # ST (the tab) saves the bad value; the watcher sees it and sends the fix to the tab.
        st_save(path, broken)
        fix = (await wait_until(lambda: tab.named("fix")))[0]
        assert fix["rule"] == "ppp.nanogpt"
        assert fix["patch"] == [{"path": list(PPP), "value": "merge", "old": "", "existed": True}]
        assert fix["explanation"]
        await settle()
        assert path.read_bytes() == broken  # the tab owns the file; we did not write it
        assert await journal(companion) == []  # not journalled until the tab says it applied it
        assert len(tab.named("fix")) == 1

        # Asking again while the first is pending does not send a second copy.
        resp = await companion.post("/api/doctor/fix", json={"ids": [fix["finding_id"]]})
        assert [r["status"] for r in (await resp.json())["results"]] == ["sent_live"]
        assert len(tab.named("fix")) == 1

        resp = await companion.post(
            "/api/doctor/ack", json={"fix_id": fix["fix_id"], "status": "applied", "message": "ok"}
        )
        acked = await resp.json()
        entries = await journal(companion)
        assert [(e.rule, e.mode, e.new_value) for e in entries] == [("ppp.nanogpt", "live", "merge")]
        assert acked == {"ok": True, "journal_ids": [entries[0].id]}  # what the tab's Undo sends back
        # A second ack for the same fix is unknown: journalled once.
        resp = await companion.post(
            "/api/doctor/ack", json={"fix_id": fix["fix_id"], "status": "applied", "message": "ok"}
        )
        assert (await resp.json()) == {"ok": False, "journal_ids": []}
        assert len(await journal(companion)) == 1

        # The tab saves the fixed value, as ST does after applying it: no further fix goes anywhere.
        fixed = st_bytes(nanogpt_settings("merge"))
        st_save(path, fixed)
        await settle()
        assert len(tab.named("fix")) == 1
        assert path.read_bytes() == fixed
    finally:
        await tab.close()


async def test_tab_closing_before_the_ack_hands_the_fix_to_the_file_path_once(
    make_st_install: MakeSTInstall, start_companion: StartCompanion
) -> None:
    companion, path = await watch_healthy_user(make_st_install, start_companion)
    tab = await open_tab(companion)
    st_save(path, nanogpt_settings(""))
    fix = (await wait_until(lambda: tab.named("fix")))[0]
    assert ppp_of(path) == ""
    await tab.close()  # the tab went away without applying it

    await wait_until(lambda: ppp_of(path) == "merge")
    entries = await journalled(companion, 1)
    assert [(e.mode, e.new_value) for e in entries] == [("file", "merge")]
    # The late ack of the abandoned live fix must not journal a second application.
    resp = await companion.post(
        "/api/doctor/ack", json={"fix_id": fix["fix_id"], "status": "applied", "message": "late"}
    )
    assert (await resp.json()) == {"ok": False, "journal_ids": []}
    assert len(await journal(companion)) == 1
    assert json.loads(path.read_bytes())["oai_settings"]["custom_prompt_post_processing"] == "merge"


async def test_undoing_each_change_of_one_fix_with_a_tab_open_sends_each_reverse(
    start_companion: StartCompanion, make_st_install: MakeSTInstall
) -> None:
    """A fix that changed two keys is two journal entries; undoing both while the tab is open must send
    two reverse fixes, not drop the second as a duplicate of the first."""
    import time as _time

    companion = await start_companion(one_user(make_st_install, nanogpt_settings("merge")))
    store = companion.client.app[keys.STORE]
    ids = [
        await store.journal_add(
            JournalEntry(
                user="default-user",
                file="settings",
                key_path=("oai_settings", key),
                old_value=old,
                new_value=new,
                existed=True,
                rule="reasoning",
                finding_id="reasoning:abc",
                created_at=_time.time(),
                mode="live",
            )
        )
        for key, old, new in (("show_thoughts", False, True), ("reasoning_effort", "auto", "medium"))
    ]
    tab = await open_tab(companion)
    try:
        for journal_id in ids:
            resp = await companion.post("/api/doctor/undo", json={"journal_id": journal_id})
            assert (await resp.json())["status"] == "sent_live"
        fixes = await wait_until(lambda: len(tab.named("fix")) == 2 and tab.named("fix"), 5)
        assert [f["undo_of"] for f in fixes] == ids
        assert [f["patch"][0]["path"][1] for f in fixes] == ["show_thoughts", "reasoning_effort"]
        assert [f["patch"][0]["value"] for f in fixes] == [False, "auto"]
    finally:
        await tab.close()
