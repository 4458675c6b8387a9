"""Issue 16 through the running app: a reply signature reported by the tab is counted, answered with the
causes true for this user's settings, and its fix goes down the doctor's one path (the open tab's live
fix, journalled on its ack; the file when no tab is open), undoable like any other fix. Only a name, an
evidence label, a message id and the involved settings are accepted: message text is refused."""

from __future__ import annotations

from typing import Any

from tests.doctor_service.conftest import (
    Companion,
    StartCompanion,
    journalled,
    nanogpt_settings,
    one_user,
    open_tab,
    ppp_of,
    wait_until,
)
from tests.fakes.st_fixtures import MakeSTInstall


async def signature(companion: Companion, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    resp = await companion.post("/api/doctor/signature", json=body)
    data: dict[str, Any] = await resp.json()
    assert resp.status == status, data
    return data


async def test_a_signature_is_counted_and_its_fix_is_written_and_undone_without_a_tab(
    make_st_install: MakeSTInstall, start_companion: StartCompanion
) -> None:
    st = one_user(make_st_install, nanogpt_settings("merge"))
    companion = await start_companion(st)
    body = {"signature": "speaks_for_user", "evidence": "user-name-label", "message_id": 3, "settings": {}}
    data = await signature(companion, body)
    assert data["message_id"] == 3 and data["seen"] == 1
    [cause] = data["causes"]
    assert cause["rule"] == "reply.speaks_for_user" and cause["fixable"]
    assert cause["change"].startswith("Prompt Post-Processing: Merge consecutive roles")
    resp = await companion.post("/api/doctor/signature/fix", json={"id": cause["id"], "message_id": 3})
    result = (await resp.json())["result"]
    assert result["status"] == "applied", result
    assert ppp_of(st.user().settings) == cause["patch"][0]["value"]
    [entry] = await journalled(companion, 1)
    assert entry.rule == "reply.speaks_for_user" and entry.mode == "file"
    resp = await companion.post("/api/doctor/undo", json={"journal_id": entry.id})
    assert (await resp.json())["status"] == "reverted"
    assert ppp_of(st.user().settings) == "merge"
    assert (await signature(companion, body))["seen"] == 2
    resp = await companion.get("/api/doctor/signature")
    assert (await resp.json())["counts"] == {"speaks_for_user": 2}


async def test_with_a_tab_open_the_fix_is_a_live_fix_journalled_on_ack(
    make_st_install: MakeSTInstall, start_companion: StartCompanion
) -> None:
    st = one_user(make_st_install, nanogpt_settings("merge"))
    companion = await start_companion(st)
    tab = await open_tab(companion)
    before = st.user().settings.read_bytes()
    # The tab's value is newer than the file's: the cause starts from it.
    body = {
        "signature": "speaks_for_user",
        "evidence": "role-label",
        "settings": {"custom_prompt_post_processing": "semi"},
    }
    [cause] = (await signature(companion, body))["causes"]
    assert cause["patch"][0]["old"] == "semi" and cause["patch"][0]["value"] == "strict"
    resp = await companion.post("/api/doctor/signature/fix", json={"id": cause["id"]})
    assert (await resp.json())["result"]["status"] == "sent_live"
    [event] = await wait_until(lambda: tab.named("fix"), 5)
    assert event["rule"] == "reply.speaks_for_user"
    assert event["patch"][0]["path"] == ["oai_settings", "custom_prompt_post_processing"]
    assert st.user().settings.read_bytes() == before  # the tab owns the file while it is open
    resp = await companion.post("/api/doctor/ack", json={"fix_id": event["fix_id"], "status": "applied"})
    ack = await resp.json()
    assert ack["ok"] and len(ack["journal_ids"]) == 1
    [entry] = await journalled(companion, 1)
    assert entry.mode == "live" and entry.new_value == "strict"
    await tab.close()


async def test_message_text_and_unknown_settings_are_refused(
    make_st_install: MakeSTInstall, start_companion: StartCompanion
) -> None:
    companion = await start_companion(one_user(make_st_install, nanogpt_settings("merge")))
    await signature(companion, {"signature": "speaks_for_user", "text": "Alex: hello"}, 400)
    await signature(companion, {"signature": "speaks_for_user", "evidence": "Alex: hello"}, 400)
    await signature(companion, {"signature": "speaks_for_user", "settings": {"mes": "hello"}}, 400)
    await signature(companion, {"signature": "made_up"}, 400)
    resp = await companion.post("/api/doctor/signature/fix", json={"id": "reply.x:000000000000"})
    assert (await resp.json())["result"]["status"] == "not_found"
    resp = await companion.get("/api/doctor/signature")
    assert (await resp.json())["counts"] == {}  # refused requests are not counted
