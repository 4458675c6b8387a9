"""Issue 3, bad input through the service: every case gives a clear finding or error, no crash, and the
original file is left exactly as it was."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nanogpt_companion.sillytavern.stjson import dumps_st
from nanogpt_companion.web import keys
from tests.doctor_service.conftest import (
    Companion,
    StartCompanion,
    journal,
    nanogpt_settings,
    one_user,
    ppp_of,
    settle,
    st_bytes,
    wait_until,
)
from tests.doctor_service.test_flow import outside_span_equal
from tests.fakes.st_fixtures import MakeSTInstall, UserSpec
from tests.fixtures import ST_FIXTURES

KEY = b'"custom_prompt_post_processing": '


async def report(companion: Companion, handle: str = "default-user") -> dict[str, Any]:
    resp = await companion.get("/api/doctor", handle)
    assert resp.status == 200
    return dict(await resp.json())


async def fix_all(companion: Companion, handle: str = "default-user") -> list[dict[str, Any]]:
    resp = await companion.post("/api/doctor/fix", handle, json={"all": True})
    assert resp.status == 200
    return list((await resp.json())["results"])


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (st_bytes(nanogpt_settings(""))[:5000], "cut off"),
        (st_bytes(nanogpt_settings("")) + b"\n}garbage", "not valid JSON"),
        (b"", "empty"),
        (b"\xff\xfe{}", "not valid UTF-8"),
    ],
    ids=["truncated", "trailing-garbage", "empty", "not-utf8"],
)
async def test_unreadable_settings_are_reported_and_left_untouched(
    make_st_install: MakeSTInstall, start_companion: StartCompanion, content: bytes, reason: str
) -> None:
    st = one_user(make_st_install)
    path = st.user().settings
    path.write_bytes(content)
    companion = await start_companion(st)
    data = await report(companion)
    assert data["error"]["code"] == "settings_unreadable"
    assert reason in data["error"]["message"]
    assert data["findings"] == []
    assert await fix_all(companion) == []
    assert path.read_bytes() == content
    # Once ST saves a good file again the user is diagnosed and fixed as usual.
    path.write_bytes(st_bytes(nanogpt_settings("")))
    await companion.client.app[keys.DOCTOR].check_user("default-user")
    assert ppp_of(path) == "merge"
    assert (await report(companion))["error"] is None


async def test_missing_keys_and_the_first_run_seed_do_not_crash(
    make_st_install: MakeSTInstall, start_companion: StartCompanion
) -> None:
    st = make_st_install(
        users={
            "default-user": UserSpec(settings="settings.seed.default-content.json"),
            "bare": UserSpec(settings={"main_api": "openai"}),
            "half": UserSpec(
                settings={"main_api": "openai", "oai_settings": {"chat_completion_source": "nanogpt"}}
            ),
            "odd": UserSpec(settings={"oai_settings": [1, 2], "extension_settings": "x"}),
        }
    )
    before = {h: st.user(h).settings.read_bytes() for h in st.users}
    companion = await start_companion(st)
    for handle in st.users:
        data = await report(companion, handle)
        assert data["error"] is None, handle
        assert isinstance(data["findings"], list)
    # "half" is NanoGPT with no PPP key at all: the key is added, nothing else changes.
    await wait_until(lambda: "custom_prompt_post_processing" in st.user("half").settings.read_text())
    half = json.loads(st.user("half").settings.read_bytes())
    assert half == {
        "main_api": "openai",
        "oai_settings": {"chat_completion_source": "nanogpt", "custom_prompt_post_processing": "merge"},
    }
    for handle in ("default-user", "bare", "odd"):
        assert st.user(handle).settings.read_bytes() == before[handle]
    # Undo removes the added key again (it did not exist before). The journal row follows the file write.
    state = companion.client.app[keys.DOCTOR]._user_state("half")  # type: ignore[union-attr]
    await wait_until(lambda: not [f for f in state.findings if f.rule == "ppp.nanogpt"])
    [entry] = await journal(companion, "half")
    assert entry.existed is False
    resp = await companion.post("/api/doctor/undo", "half", json={"journal_id": entry.id})
    assert (await resp.json())["status"] == "reverted"
    assert st.user("half").settings.read_bytes() == before["half"]


async def test_a_10_mb_settings_file_is_patched_in_place(
    make_st_install: MakeSTInstall, start_companion: StartCompanion
) -> None:
    settings = nanogpt_settings("")
    # Big files in the wild come from extension data and long quick-reply sets: many small objects.
    # (Past 16 MB, or past what parsing may cost, the doctor declines: tests/hardening/test_hostile_files.py.)
    settings["extension_settings"]["bulk"] = [
        {"id": i, "text": f'line {i} ünïcødé "quoted" \\ {i * 1e-7}', "tags": [], "meta": {}}
        for i in range(55_000)
    ]
    st = one_user(make_st_install, settings)
    path = st.user().settings
    original = path.read_bytes()
    assert len(original) > 9 * 1024 * 1024
    await start_companion(st)
    await wait_until(lambda: KEY + b'"merge"' in path.read_bytes(), within=30)
    assert outside_span_equal(original, path.read_bytes(), KEY + b'""', KEY + b'"merge"')


async def test_symlinked_user_dirs_inside_the_root_are_followed_outside_refused(
    make_st_install: MakeSTInstall, start_companion: StartCompanion, tmp_path: Path
) -> None:
    st = one_user(make_st_install, nanogpt_settings("merge"))
    hidden = st.data_root / ".carol-home"
    hidden.mkdir()
    (hidden / "settings.json").write_bytes(st_bytes(nanogpt_settings("")))
    (st.data_root / "carol").symlink_to(hidden, target_is_directory=True)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    planted = st_bytes(nanogpt_settings(""))
    (outside / "settings.json").write_bytes(planted)
    (st.data_root / "mallory").symlink_to(outside, target_is_directory=True)

    companion = await start_companion(st)
    users = companion.client.app[keys.USERS]
    assert "carol" in users.handles() and "mallory" not in users.handles()
    await wait_until(lambda: ppp_of(hidden / "settings.json") == "merge")
    assert (st.data_root / "carol").is_symlink()
    await settle(0.3)
    assert (outside / "settings.json").read_bytes() == planted


async def test_odd_handle_names(make_st_install: MakeSTInstall, start_companion: StartCompanion) -> None:
    odd = ["名前", "with space", "-dash", "o'brien", "semi;colon", "x" * 200]
    st = make_st_install(users={h: UserSpec(settings=nanogpt_settings("")) for h in odd})
    bad = st.data_root / "tab\there"
    bad.mkdir()
    (bad / "settings.json").write_bytes(st_bytes(nanogpt_settings("")))
    companion = await start_companion(st)
    assert companion.client.app[keys.USERS].handles() == sorted(odd)
    for handle in odd:
        await wait_until(lambda h=handle: ppp_of(st.user(h).settings) == "merge")  # type: ignore[misc]
        assert (await report(companion, handle))["error"] is None
    assert ppp_of(bad / "settings.json") == ""  # a control character in the name: not a user


async def test_read_only_file_and_folder_are_left_alone_with_a_reason(
    make_st_install: MakeSTInstall, start_companion: StartCompanion
) -> None:
    st = make_st_install(
        users={
            "default-user": UserSpec(settings=nanogpt_settings("")),
            "ro-dir": UserSpec(settings=nanogpt_settings("")),
        }
    )
    ro_file = st.user().settings
    ro_dir = st.user("ro-dir").root
    content = ro_file.read_bytes()
    companion = await start_companion(st, doctor_policies={"ppp.nanogpt": "ask"})
    os.chmod(ro_file, 0o444)
    os.chmod(ro_dir, 0o555)
    try:
        [result] = await fix_all(companion)
        assert result["status"] == "failed" and "read-only" in result["message"]
        [result] = await fix_all(companion, "ro-dir")
        assert result["status"] == "failed" and "read-only" in result["message"]
        assert ro_file.read_bytes() == content
        assert st.user("ro-dir").settings.read_bytes() == content
        assert leftovers(ro_dir) == [] and leftovers(ro_file.parent) == []
        assert await journal(companion) == [] and await journal(companion, "ro-dir") == []
        # The findings stay, so the user can fix it by hand or after changing the permissions.
        assert [f["rule"] for f in (await report(companion))["findings"]].count("ppp.nanogpt") == 1
    finally:
        os.chmod(ro_dir, 0o755)
        os.chmod(ro_file, 0o644)


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real tmpfs, later shrunk so the temp file of the next write does not fit: a real ENOSPC."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; tests/sillytavern injects ENOSPC without it")
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=False)
    if done.returncode != 0:
        pytest.skip("mounting a tmpfs is not permitted here")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


async def test_disk_full_while_fixing(
    make_st_install: MakeSTInstall, start_companion: StartCompanion, small_tmpfs: Path
) -> None:
    st = make_st_install(
        users={"default-user": UserSpec(settings=nanogpt_settings(""))}, data_root=str(small_tmpfs)
    )
    path = st.user().settings
    content = path.read_bytes()
    companion = await start_companion(st, doctor_policies={"ppp.nanogpt": "ask"})
    await report(companion)  # token files written, first scan done
    stat = os.statvfs(small_tmpfs)
    used_kb = (stat.f_blocks - stat.f_bfree) * stat.f_frsize // 1024
    remount = ["mount", "-o", f"remount,size={used_kb + 8}k", str(small_tmpfs)]
    await asyncio.to_thread(subprocess.run, remount, check=True)
    [result] = await fix_all(companion)
    assert result["status"] == "failed"
    assert "not enough disk space" in result["message"]
    assert path.read_bytes() == content
    assert leftovers(path.parent) == []
    assert await journal(companion) == []
    data = await report(companion)
    assert data["error"] is None and any(f["rule"] == "ppp.nanogpt" for f in data["findings"])


def test_dumps_st_matches_the_fixture_layout() -> None:
    # Guard for the helpers above: building settings with dumps_st yields ST's own bytes.
    fixture = (ST_FIXTURES / "settings.nanogpt-source-selected.json").read_bytes()
    assert dumps_st(json.loads(fixture)).encode() == fixture
