"""Issue 3, watcher: ST's rename-saves, our own writes, re-saves, reverts, presets, profiles, new users."""

from __future__ import annotations

import copy
import json
from typing import Any

from tests.doctor_service.conftest import (
    PPP,
    StartCompanion,
    findings,
    journal,
    nanogpt_settings,
    one_user,
    open_tab,
    ppp_of,
    settle,
    st_bytes,
    st_save,
    started,
    wait_until,
    watch_healthy_user,
)
from tests.fakes.st_fixtures import FIXTURES, MakeSTInstall, UserSpec


async def test_rename_save_is_fixed_once_and_our_write_does_not_start_a_new_round(
    make_st_install: MakeSTInstall, start_companion: StartCompanion
) -> None:
    companion, path = await watch_healthy_user(make_st_install, start_companion)
    assert await journal(companion) == []

    st_save(path, nanogpt_settings(""))
    await wait_until(lambda: ppp_of(path) == "merge")
    fixed = path.read_bytes()
    await settle()
    assert len(await journal(companion)) == 1  # our rename did not loop back into a second fix
    assert path.read_bytes() == fixed

    # ST re-saves the same (fixed) content a few times, as it does on every UI change: nothing fires.
    for _ in range(3):
        st_save(path, fixed)
    await settle()
    assert len(await journal(companion)) == 1
    assert path.read_bytes() == fixed


async def test_identical_re_saves_with_a_tab_open_send_one_fix_and_one_findings_event(
    make_st_install: MakeSTInstall, start_companion: StartCompanion
) -> None:
    companion, path = await watch_healthy_user(make_st_install, start_companion)
    tab = await open_tab(companion)
    try:
        broken = st_bytes(nanogpt_settings(""))
        st_save(path, broken)
        await wait_until(lambda: tab.named("fix"))
        await settle()
        findings_events = len(tab.named("findings"))
        for _ in range(3):
            st_save(path, broken)
            await settle(0.2)
        await settle()
        assert len(tab.named("fix")) == 1
        assert len(tab.named("findings")) == findings_events  # same bytes: not even re-diagnosed
        assert path.read_bytes() == broken
    finally:
        await tab.close()


async def test_a_user_who_puts_the_value_back_is_respected_until_the_situation_changes(
    make_st_install: MakeSTInstall, start_companion: StartCompanion
) -> None:
    companion, path = await watch_healthy_user(make_st_install, start_companion)

    st_save(path, nanogpt_settings(""))
    await wait_until(lambda: ppp_of(path) == "merge")
    # The user sets "None" again: a deliberate choice.
    reverted = st_bytes(nanogpt_settings(""))
    st_save(path, reverted)

    async def offered() -> list[dict[str, Any]]:
        return [f for f in await findings(companion) if f["rule"] == "ppp.nanogpt" and f["declined"]]

    for _ in range(200):
        if await offered():
            break
        await settle(0.05)
    [finding] = await offered()
    assert finding["policy"] == "ask"
    await settle()
    assert path.read_bytes() == reverted
    assert len(await journal(companion)) == 1

    # A re-save of the same choice, and unrelated edits, do not bring the auto fix back.
    other = nanogpt_settings("", temp_openai=0.5)
    st_save(path, other)
    await settle()
    assert ppp_of(path) == ""

    # Another model is another situation: the fix is automatic again.
    st_save(path, nanogpt_settings("", nanogpt_model="openai/gpt-5.2"))
    await wait_until(lambda: ppp_of(path) == "merge")
    # The journal row is written just after the file (a file fix is journalled once it is on disk).
    for _ in range(250):
        if len(await journal(companion)) == 2:
            break
        await settle(0.02)
    assert len(await journal(companion)) == 2


async def test_presets_and_connection_profiles_are_fixed_in_their_own_files(
    make_st_install: MakeSTInstall, start_companion: StartCompanion
) -> None:
    preset = json.loads((FIXTURES / "openai-preset.Default.json").read_text(encoding="utf-8"))
    settings = nanogpt_settings("merge")
    settings["extension_settings"]["connectionManager"]["profiles"] = [
        {
            "id": "p1",
            "mode": "cc",
            "name": "Nano none",
            "api": "nanogpt",
            "model": "openai/gpt-4o-mini",
            "prompt-post-processing": "merge",
        }
    ]
    st = make_st_install(users={"default-user": UserSpec(settings=settings, presets={"Default": preset})})
    paths = st.user()
    preset_path = paths.preset("Default")
    companion = await start_companion(st, watch=True)
    await started(companion)

    # The user saves a preset that carries "None" and a profile that switches PPP to "None".
    bad_preset = copy.deepcopy(preset)
    # Saved while connected to NanoGPT, so selecting it switches back to NanoGPT with PPP "None".
    bad_preset.update(chat_completion_source="nanogpt", nanogpt_model="openai/gpt-4o-mini")
    bad_preset["custom_prompt_post_processing"] = ""
    st_save(preset_path, bad_preset)
    settings["extension_settings"]["connectionManager"]["profiles"][0]["prompt-post-processing"] = "none"
    st_save(paths.settings, settings)

    async def by_rule() -> dict[str, dict[str, Any]]:
        return {f["rule"]: f for f in await findings(companion)}

    for _ in range(200):
        if {"preset.ppp", "profile.ppp"} <= set(await by_rule()):
            break
        await settle(0.05)
    found = await by_rule()
    assert found["preset.ppp"]["policy"] == found["profile.ppp"]["policy"] == "ask"
    await settle()
    assert json.loads(preset_path.read_bytes())["custom_prompt_post_processing"] == ""  # ask: untouched

    ids = [found["preset.ppp"]["id"], found["profile.ppp"]["id"]]
    before_settings = paths.settings.read_bytes()
    resp = await companion.post("/api/doctor/fix", json={"ids": ids})
    results = (await resp.json())["results"]
    assert [r["status"] for r in results] == ["applied", "applied"]
    assert json.loads(preset_path.read_bytes())["custom_prompt_post_processing"] == "merge"
    profile = json.loads(paths.settings.read_bytes())["extension_settings"]["connectionManager"]["profiles"][
        0
    ]
    assert profile["prompt-post-processing"] == "merge"
    # Only the profile's value changed in settings.json.
    old = b'"prompt-post-processing": "none"'
    assert paths.settings.read_bytes() == before_settings.replace(old, b'"prompt-post-processing": "merge"')
    files = {(e.file, e.rule) for e in await journal(companion)}
    assert files == {("preset:Default", "preset.ppp"), ("settings", "profile.ppp")}


async def test_a_user_created_at_run_time_is_watched_and_fixed(
    make_st_install: MakeSTInstall, start_companion: StartCompanion
) -> None:
    st = one_user(make_st_install, nanogpt_settings("merge"))
    companion = await start_companion(st, watch=True)
    await started(companion)
    await settle(0.3)  # the watcher is armed

    # ST creates the folder first, then copies the settings into it.
    new_dir = st.data_root / "bob.o'brien-2"
    new_dir.mkdir()
    await settle(0.2)
    st_save(new_dir / "settings.json", nanogpt_settings(""))
    await wait_until(lambda: ppp_of(new_dir / "settings.json") == "merge", within=6)
    assert [e.rule for e in await journal(companion, "bob.o'brien-2")] == ["ppp.nanogpt"]
    assert (new_dir / "user" / "files" / "nanogpt-companion.json").is_file()

    # And the new user's later saves are watched too.
    st_save(new_dir / "settings.json", nanogpt_settings("", nanogpt_model="openai/gpt-5.2"))
    await wait_until(lambda: ppp_of(new_dir / "settings.json") == "merge")


async def test_ask_waits_for_a_request_and_off_means_nothing_is_acted_on(
    make_st_install: MakeSTInstall, start_companion: StartCompanion
) -> None:
    companion, path = await watch_healthy_user(make_st_install, start_companion)

    resp = await companion.client.put(
        "/api/doctor/policy", json={"rule": "ppp.nanogpt", "policy": "ask"}, headers=companion.auth()
    )
    assert (await resp.json())["policies"]["ppp.nanogpt"] == "ask"
    broken = st_bytes(nanogpt_settings(""))
    st_save(path, broken)
    for _ in range(200):
        if [f for f in await findings(companion) if f["rule"] == "ppp.nanogpt"]:
            break
        await settle(0.05)
    [finding] = [f for f in await findings(companion) if f["rule"] == "ppp.nanogpt"]
    assert finding["policy"] == "ask"
    await settle()
    assert path.read_bytes() == broken
    resp = await companion.post("/api/doctor/fix", json={"ids": [finding["id"]]})
    assert [r["status"] for r in (await resp.json())["results"]] == ["applied"]
    assert ppp_of(path) == "merge"

    # "off" for this user: a new problem is reported but never acted on, not even on the other path.
    resp = await companion.client.put(
        "/api/doctor/policy", json={"rule": "ppp.nanogpt", "policy": "off"}, headers=companion.auth()
    )
    assert (await resp.json())["policies"]["ppp.nanogpt"] == "off"
    tab = await open_tab(companion)
    try:
        broken2 = st_bytes(nanogpt_settings("", nanogpt_model="openai/gpt-5.2"))
        st_save(path, broken2)
        await settle(1.0)
        assert path.read_bytes() == broken2
        assert tab.named("fix") == []
        assert len(await journal(companion)) == 1
    finally:
        await tab.close()
    # The other user's policy is their own.
    resp = await companion.get("/api/doctor/policy", "default-user")
    assert (await resp.json())["policies"]["ppp.nanogpt"] == "off"


async def test_policy_is_per_user(make_st_install: MakeSTInstall, start_companion: StartCompanion) -> None:
    st = make_st_install(
        users={
            "default-user": UserSpec(settings=nanogpt_settings("merge")),
            "alice": UserSpec(settings=nanogpt_settings("merge")),
        }
    )
    companion = await start_companion(st, watch=True)
    await started(companion, "alice")
    await started(companion, "default-user")
    resp = await companion.client.put(
        "/api/doctor/policy", json={"rule": "ppp.nanogpt", "policy": "off"}, headers=companion.auth("alice")
    )
    assert resp.status == 200
    alice, default = st.user("alice").settings, st.user("default-user").settings
    alice_broken = st_bytes(nanogpt_settings(""))
    st_save(alice, alice_broken)
    st_save(default, nanogpt_settings(""))
    await wait_until(lambda: ppp_of(default) == "merge")
    await settle()
    assert alice.read_bytes() == alice_broken
    assert PPP[1] in json.loads(alice.read_bytes())["oai_settings"]
